//! EDNS Client Subnet (RFC 7871): the option a query carries, validated as §6 and §7.1.2 ask,
//! and the option its answer echoes with the scope the views give it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The option code of ECS.
pub const OPTION_CODE: u16 = 8;
/// The longest ECS option mailns sends: code, length, family, two prefix lengths, 16 bytes.
pub const MAX_OPTION_LEN: usize = 4 + 4 + 16;

/// The ECS option of a query, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Received {
    /// No ECS option.
    #[default]
    Absent,
    /// An option RFC 7871 says to answer FORMERR: an unknown family, a source prefix longer than
    /// the family's addresses, too few or too many address bytes, bits set past the prefix, or
    /// a second ECS option.
    Malformed,
    /// A well-formed option.
    Present(Subnet),
}

/// A client subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The address, zero past `source` bits.
    pub addr: IpAddr,
    /// SOURCE PREFIX-LENGTH.
    pub source: u8,
}

impl Received {
    /// Reads an ECS option's data (FAMILY, SOURCE, SCOPE, ADDRESS).
    pub fn parse(data: &[u8]) -> Self {
        let Some((head, address)) = data.split_first_chunk::<4>() else {
            return Self::Malformed;
        };
        let family = u16::from_be_bytes([head[0], head[1]]);
        let source = head[2];
        let bits: u8 = match family {
            1 => 32,
            2 => 128,
            _ => return Self::Malformed,
        };
        if source > bits || address.len() != usize::from(source).div_ceil(8) {
            return Self::Malformed;
        }
        let mut bytes = [0u8; 16];
        if let Some(dst) = bytes.get_mut(..address.len()) {
            dst.copy_from_slice(address);
        }
        let whole = u128::from_be_bytes(bytes);
        let kept = if source == 0 {
            0
        } else {
            whole & (u128::MAX << (128 - u32::from(source)))
        };
        if kept != whole {
            return Self::Malformed;
        }
        let addr = if family == 1 {
            let [a, b, c, d, ..] = bytes;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        } else {
            IpAddr::V6(Ipv6Addr::from(bytes))
        };
        Self::Present(Subnet { addr, source })
    }

    /// This option, and a second one in the same query: two are malformed.
    pub fn and(self, next: &[u8]) -> Self {
        match self {
            Self::Absent => Self::parse(next),
            _ => Self::Malformed,
        }
    }
}

impl Subnet {
    /// The answer's option (code and length included) into `out`: the query's family, source
    /// prefix and address, with `scope` (RFC 7871 §7.2.1).
    pub fn write_option(&self, scope: u8, out: &mut Vec<u8>) {
        let (family, octets): (u16, [u8; 16]) = match self.addr {
            IpAddr::V4(a) => {
                let mut b = [0u8; 16];
                if let Some(dst) = b.get_mut(..4) {
                    dst.copy_from_slice(&a.octets());
                }
                (1, b)
            }
            IpAddr::V6(a) => (2, a.octets()),
        };
        let n = usize::from(self.source).div_ceil(8);
        let len = u16::try_from(4 + n).unwrap_or(4);
        out.extend_from_slice(&OPTION_CODE.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&family.to_be_bytes());
        out.extend_from_slice(&[self.source, scope]);
        out.extend_from_slice(octets.get(..n).unwrap_or(&[]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(data: &[u8]) -> Subnet {
        match Received::parse(data) {
            Received::Present(s) => s,
            other => panic!("{data:?}: {other:?}"),
        }
    }

    #[test]
    fn well_formed_options() {
        let s = present(&[0, 1, 24, 0, 127, 0, 8]);
        assert_eq!(s.addr, "127.0.8.0".parse::<IpAddr>().unwrap());
        assert_eq!(s.source, 24);
        assert_eq!(present(&[0, 1, 0, 0]).source, 0);
        let v6 = present(&[0, 2, 56, 0, 0x20, 1, 0xd, 0xb8, 0, 0, 0]);
        assert_eq!(v6.addr, "2001:db8::".parse::<IpAddr>().unwrap());
        assert_eq!(present(&[0, 1, 25, 0, 127, 0, 8, 128]).source, 25);
    }

    #[test]
    fn malformed_options() {
        for bad in [
            &[0u8, 1, 24][..],             // short
            &[0, 3, 0, 0],                 // family
            &[0, 1, 33, 0, 1, 2, 3, 4, 5], // source too long
            &[0, 1, 24, 0, 127, 0],        // too few bytes
            &[0, 1, 24, 0, 127, 0, 8, 0],  // too many
            &[0, 1, 23, 0, 127, 0, 9],     // a bit set past /23
            &[0, 2, 129, 0],               // IPv6 source too long
        ] {
            assert_eq!(Received::parse(bad), Received::Malformed, "{bad:?}");
        }
        assert_eq!(
            Received::parse(&[0, 1, 0, 0]).and(&[0, 1, 0, 0]),
            Received::Malformed,
            "a second ECS option"
        );
    }

    #[test]
    fn the_answer_echoes_with_its_scope() {
        let s = present(&[0, 1, 24, 0, 127, 0, 8]);
        let mut out = Vec::new();
        s.write_option(24, &mut out);
        assert_eq!(out, [0, 8, 0, 7, 0, 1, 24, 24, 127, 0, 8]);
        assert!(out.len() <= MAX_OPTION_LEN);
    }
}
