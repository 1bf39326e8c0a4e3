//! Client addresses as every allow-list and limit compares them.
//!
//! A dual-stack socket, or a relay in front, can show an IPv4 client as `::ffff:a.b.c.d`. Every
//! address read from a socket is folded to its IPv4 form first, so an IPv4 allow-list entry, a
//! per-client cap and a rate-limit prefix treat the client the same over either socket.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Instant;

/// `ip` with a v4-mapped IPv6 address (`::ffff:0:0/96`) folded to IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `addr` with its address folded by [`canonical`].
pub fn canonical_socket(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(addr.ip()), addr.port())
}

/// Nanoseconds since the first call, on the monotonic clock: a plain number that per-client
/// tables can store in an atomic word.
pub fn mono_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Unix time in seconds, as a u32 in serial arithmetic (cookie timestamps).
pub fn unix_seconds() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_addresses_fold() {
        let mapped: IpAddr = "::ffff:198.18.0.7".parse().unwrap();
        assert_eq!(canonical(mapped), "198.18.0.7".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        // ::1 and the IPv4-compatible form are not v4-mapped.
        let lo: IpAddr = "::1".parse().unwrap();
        assert_eq!(canonical(lo), lo);
        let sa: SocketAddr = "[::ffff:127.0.0.1]:53".parse().unwrap();
        assert_eq!(canonical_socket(sa), "127.0.0.1:53".parse().unwrap());
    }
}
