//! DNS Cookies (RFC 7873) with interoperable server cookies (RFC 9018): version 1, a timestamp,
//! and SipHash-2-4 over the client cookie, the header, the timestamp and the client's address.
//!
//! A server cookie proves that the client received an earlier answer at its address, so a
//! query carrying a valid one cannot come from a spoofed source: response rate limiting lets it
//! through. The secret is shared by configuration, so every mailns node of a namespace accepts
//! the others' cookies, and a previous secret is accepted during a rotation. Pure: no I/O, no
//! clock; the caller passes the time.

use std::net::IpAddr;

use siphasher::sip::SipHasher24;

/// EDNS option code of COOKIE.
pub const OPTION_CODE: u16 = 10;
/// Client cookie length.
pub const CLIENT_LEN: usize = 8;
/// Length of the server cookies mailns makes (RFC 9018 §4.2).
pub const SERVER_LEN: usize = 16;
/// Length of the COOKIE option mailns sends: code, length, client and server cookie.
pub const OPTION_LEN: usize = 4 + CLIENT_LEN + SERVER_LEN;
/// A server cookie older than this is not accepted (RFC 9018 §4.3).
const MAX_AGE: u32 = 3600;
/// A server cookie this far in the future is not accepted (clock skew between nodes).
const MAX_AHEAD: u32 = 300;
/// A valid server cookie older than this is replaced by a fresh one in the answer.
const REFRESH_AGE: u32 = 1800;

/// The COOKIE option of a query, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Received {
    /// No COOKIE option.
    #[default]
    Absent,
    /// A COOKIE option of a length RFC 7873 §4 does not allow: the query gets FORMERR.
    Malformed,
    /// A client cookie, and a server cookie of `server_len` bytes (0: none) in `server`.
    Present {
        /// The client cookie.
        client: [u8; CLIENT_LEN],
        /// The server cookie's bytes (the first `server_len`).
        server: [u8; 32],
        /// The server cookie's length: 0, or 8 to 32.
        server_len: u8,
    },
}

impl Received {
    /// Reads a COOKIE option's data.
    pub fn parse(data: &[u8]) -> Self {
        let Some((client, server)) = data.split_first_chunk::<CLIENT_LEN>() else {
            return Self::Malformed;
        };
        if !(server.is_empty() || (8..=32).contains(&server.len())) {
            return Self::Malformed;
        }
        let mut s = [0u8; 32];
        if let Some(dst) = s.get_mut(..server.len()) {
            dst.copy_from_slice(server);
        }
        Self::Present {
            client: *client,
            server: s,
            server_len: server.len() as u8,
        }
    }
}

/// A server secret: the SipHash-2-4 key.
pub type Secret = [u8; 16];

/// The server's cookie secrets: the current one makes cookies; the previous one, during a
/// rotation, is still accepted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    /// Makes and verifies cookies.
    pub current: Secret,
    /// Verifies cookies made before a rotation.
    pub previous: Option<Secret>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        f.debug_struct("Secrets")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

/// What the server makes of a query's cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No cookie: answered as usual, rate limited.
    None,
    /// Malformed option: FORMERR.
    Malformed,
    /// A client cookie with no valid server cookie: answered with a fresh server cookie, rate
    /// limited (a limited reply becomes BADCOOKIE, so the client retries with its cookie).
    ClientOnly,
    /// A valid server cookie: the source is proven, never rate limited.
    Valid,
}

/// The option a response carries: the client cookie and the server cookie to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The COOKIE option, code and length included.
    pub option: [u8; OPTION_LEN],
}

/// RFC 9018's cookie for `client` at `ip`, stamped `now` (Unix seconds, serial arithmetic).
pub fn make(secret: &Secret, client: &[u8; CLIENT_LEN], ip: IpAddr, now: u32) -> [u8; SERVER_LEN] {
    let mut cookie = [0u8; SERVER_LEN];
    cookie[0] = 1; // version; three reserved bytes stay zero
    cookie[4..8].copy_from_slice(&now.to_be_bytes());
    let hash = hash(secret, client, &cookie[..8], ip);
    cookie[8..].copy_from_slice(&hash);
    cookie
}

fn hash(secret: &Secret, client: &[u8; CLIENT_LEN], head: &[u8], ip: IpAddr) -> [u8; 8] {
    use std::hash::Hasher;
    let mut h = SipHasher24::new_with_key(secret);
    h.write(client);
    h.write(head);
    match ip {
        IpAddr::V4(v4) => h.write(&v4.octets()),
        IpAddr::V6(v6) => h.write(&v6.octets()),
    }
    // The reference SipHash writes its result little-endian (RFC 9018 Appendix A's vectors).
    h.finish().to_le_bytes()
}

/// Judges `received` from `ip` at `now` and gives the option to answer with.
pub fn judge(
    secrets: &Secrets,
    received: &Received,
    ip: IpAddr,
    now: u32,
) -> (Verdict, Option<Reply>) {
    let (client, server) = match received {
        Received::Absent => return (Verdict::None, None),
        Received::Malformed => return (Verdict::Malformed, None),
        Received::Present {
            client,
            server,
            server_len,
        } => (
            client,
            server.get(..usize::from(*server_len)).unwrap_or(&[]),
        ),
    };
    let valid_stamp = valid(secrets, client, server, ip, now);
    let keep = valid_stamp.filter(|&stamp| now.wrapping_sub(stamp) < REFRESH_AGE || stamp > now);
    let cookie = match (keep, server.try_into()) {
        (Some(_), Ok(same)) => same,
        _ => make(&secrets.current, client, ip, now),
    };
    let mut option = [0u8; OPTION_LEN];
    option[..2].copy_from_slice(&OPTION_CODE.to_be_bytes());
    option[2..4].copy_from_slice(&((CLIENT_LEN + SERVER_LEN) as u16).to_be_bytes());
    option[4..4 + CLIENT_LEN].copy_from_slice(client);
    option[4 + CLIENT_LEN..].copy_from_slice(&cookie);
    let verdict = if valid_stamp.is_some() {
        Verdict::Valid
    } else {
        Verdict::ClientOnly
    };
    (verdict, Some(Reply { option }))
}

/// The timestamp of `server` if it is a valid version-1 cookie for `client` at `ip` under one
/// of the secrets and not expired.
fn valid(
    secrets: &Secrets,
    client: &[u8; CLIENT_LEN],
    server: &[u8],
    ip: IpAddr,
    now: u32,
) -> Option<u32> {
    let server: &[u8; SERVER_LEN] = server.try_into().ok()?;
    if server[..4] != [1, 0, 0, 0] {
        return None;
    }
    let stamp = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
    // Serial number arithmetic (RFC 1982): the clock may wrap in 2106.
    let age = now.wrapping_sub(stamp);
    let ahead = stamp.wrapping_sub(now);
    if age > MAX_AGE && ahead > MAX_AHEAD {
        return None;
    }
    let matches = |s: &Secret| constant_time_eq(&hash(s, client, &server[..8], ip), &server[8..]);
    (matches(&secrets.current) || secrets.previous.as_ref().is_some_and(matches)).then_some(stamp)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
    }

    fn secrets(current: &str, previous: Option<&str>) -> Secrets {
        Secrets {
            current: hex(current).try_into().unwrap(),
            previous: previous.map(|p| hex(p).try_into().unwrap()),
        }
    }

    /// RFC 9018 Appendix A.1 to A.3: the cookies BIND, Knot and PowerDNS
    /// make, so two implementations sharing a secret accept each other's cookies. The addresses
    /// are the RFC's documentation addresses, used only as hash input.
    #[test]
    fn rfc9018_test_vectors() {
        let s = secrets("e5e973e5a6b2a43f48e7dc849e37bfcf", None);
        let client: [u8; 8] = hex("2464c4abcf10c957").try_into().unwrap();
        // The RFC's client addresses, written as octets: hash input only, nothing is sent there.
        let ip = IpAddr::from([198, 51, 100, 100]);
        assert_eq!(
            make(&s.current, &client, ip, 1_559_731_985).to_vec(),
            hex("010000005cf79f111f8130c3eee29480")
        );
        // A.2: the same client 40 minutes later gets a renewed cookie.
        assert_eq!(
            make(&s.current, &client, ip, 1_559_734_385).to_vec(),
            hex("010000005cf7a871d4a564a1442aca77")
        );
        // A.3: another client.
        let client: [u8; 8] = hex("fc93fc62807ddb86").try_into().unwrap();
        let ip = IpAddr::from([203, 0, 113, 203]);
        assert_eq!(
            make(&s.current, &client, ip, 1_559_734_700).to_vec(),
            hex("010000005cf7a9acf73a7810aca2381e")
        );
    }

    fn present(client: [u8; 8], server: &[u8]) -> Received {
        let mut data = client.to_vec();
        data.extend_from_slice(server);
        Received::parse(&data)
    }

    #[test]
    fn option_lengths() {
        assert_eq!(Received::parse(&[1; 7]), Received::Malformed);
        assert_eq!(
            Received::parse(&[1; 12]),
            Received::Malformed,
            "server cookie of 4"
        );
        assert_eq!(Received::parse(&[1; 41]), Received::Malformed);
        assert!(matches!(
            Received::parse(&[1; 8]),
            Received::Present { server_len: 0, .. }
        ));
        assert!(matches!(
            Received::parse(&[1; 40]),
            Received::Present { server_len: 32, .. }
        ));
    }

    #[test]
    fn a_round_trip_a_rotation_and_expiry() {
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let s = secrets("00112233445566778899aabbccddeeff", None);
        let client = [7u8; 8];
        let now = 1_800_000_000;
        let (v, reply) = judge(&s, &present(client, &[]), ip, now);
        assert_eq!(v, Verdict::ClientOnly);
        let server = reply.unwrap().option[12..].to_vec();
        // Sent back: valid, echoed unchanged while young.
        let (v, again) = judge(&s, &present(client, &server), ip, now + 10);
        assert_eq!(v, Verdict::Valid);
        assert_eq!(again.unwrap().option[12..], server[..]);
        // From another address, or with another client cookie: not valid.
        let other: IpAddr = "127.0.0.10".parse().unwrap();
        assert_eq!(
            judge(&s, &present(client, &server), other, now).0,
            Verdict::ClientOnly
        );
        assert_eq!(
            judge(&s, &present([8; 8], &server), ip, now).0,
            Verdict::ClientOnly
        );
        // Older than half an hour: still valid, but refreshed.
        let (v, fresh) = judge(&s, &present(client, &server), ip, now + 2000);
        assert_eq!(v, Verdict::Valid);
        assert_ne!(fresh.unwrap().option[12..], server[..]);
        // Older than an hour: expired.
        assert_eq!(
            judge(&s, &present(client, &server), ip, now + 3700).0,
            Verdict::ClientOnly
        );
        // Rotated: the old secret is still accepted as previous, and new cookies use the new one.
        let rotated = secrets(
            "ffeeddccbbaa99887766554433221100",
            Some("00112233445566778899aabbccddeeff"),
        );
        let (v, renewed) = judge(&rotated, &present(client, &server), ip, now + 10);
        assert_eq!(v, Verdict::Valid);
        assert_eq!(renewed.unwrap().option[12..], server[..]);
        let dropped = secrets("ffeeddccbbaa99887766554433221100", None);
        assert_eq!(
            judge(&dropped, &present(client, &server), ip, now).0,
            Verdict::ClientOnly
        );
        // A 16-byte cookie of another version: not ours.
        let mut v2 = server.clone();
        v2[0] = 2;
        assert_eq!(
            judge(&s, &present(client, &v2), ip, now).0,
            Verdict::ClientOnly
        );
    }
}
