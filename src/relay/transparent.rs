//! Transparent relaying (`transparent = true`): the relay connects to the server from the
//! client's own address, so Exchange's receive connectors (which decide who may relay by the
//! client's address) and its message tracking see each application, not mailns.
//!
//! The outgoing socket gets `IP_TRANSPARENT`, which lets it bind an address that is not this
//! host's; the kernel allows that only with CAP_NET_ADMIN (or CAP_NET_RAW). The server's
//! replies are addressed to the client, so they must be routed back through mailns and
//! delivered to the local socket (a floating gateway on the server side, plus
//! `ip rule ... lookup 100` and `ip route add local 0.0.0.0/0 dev lo table 100`);
//! `config/examples/ha-pair/README.md` gives the commands. Without that return path the server's SYN-ACK goes to the client directly and
//! every connect times out.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Socket, Type};
use tokio::net::TcpSocket;

/// What an admin reads when the capability is missing.
pub const NEEDS_CAP: &str = "transparent = true needs CAP_NET_ADMIN to connect from the client's address (IP_TRANSPARENT); under systemd, install /usr/share/doc/mailns/examples/transparent.conf as /etc/systemd/system/mailns.service.d/transparent.conf, or set transparent = false";

/// Whether this process may open transparent sockets of `addr`'s family: sets IP_TRANSPARENT
/// on a throwaway socket, as every relayed connection will.
///
/// # Errors
/// The kernel's refusal (EPERM without CAP_NET_ADMIN or CAP_NET_RAW).
pub fn available(ipv6: bool) -> io::Result<()> {
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::STREAM, None)?;
    set_transparent(&s, ipv6)
}

/// Whether the kernel allows `def`'s transparent connections (its servers' family).
///
/// # Errors
/// As [`available`].
pub fn available_for(def: &crate::config::relay::RelayDef) -> io::Result<()> {
    available(def.servers.iter().any(|s| s.1.is_ipv6()))
}

/// A TCP socket bound to `from` (any port), ready to connect to `to` as if it were the client.
/// TCP_NODELAY and SO_KEEPALIVE are set, as on plain backend connections.
///
/// # Errors
/// No capability, or `from` and `to` of different families.
pub fn socket(from: IpAddr, to: SocketAddr) -> io::Result<TcpSocket> {
    if from.is_ipv6() != to.is_ipv6() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a transparent connection from {from} to {to} cannot change address family"),
        ));
    }
    let s = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    set_transparent(&s, to.is_ipv6())?;
    s.set_tcp_nodelay(true)?;
    s.set_keepalive(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    Ok(TcpSocket::from_std_stream(s.into()))
}

fn set_transparent(s: &Socket, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        s.set_ip_transparent_v6(true)
    } else {
        s.set_ip_transparent_v4(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_must_match() {
        let e = socket("127.0.0.1".parse().unwrap(), "[::1]:25".parse().unwrap()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    /// As root (CI), a transparent socket connects from an address it chose: the server sees
    /// that address, not the one routing would pick. Without the capability the probe says so.
    #[tokio::test]
    async fn the_server_sees_the_chosen_source() {
        match available(false) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::PermissionDenied),
            Ok(()) => {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let to = l.local_addr().unwrap();
                let from: IpAddr = "127.0.0.77".parse().unwrap();
                let s = socket(from, to).unwrap();
                let (conn, accepted) = tokio::join!(s.connect(to), l.accept());
                conn.unwrap();
                assert_eq!(accepted.unwrap().1.ip(), from);
            }
        }
    }
}
