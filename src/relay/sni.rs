//! SNI routing for TLS passthrough: the server name is read from the client's ClientHello, the
//! pool is chosen by it, and the ClientHello bytes are then sent on to the backend unchanged.
//! TLS is never terminated, so certificates, client certificates and channel binding (Extended
//! Protection for Authentication) stay end to end.

use std::io;
use std::time::Duration;

use tls_parser::{
    parse_tls_extensions, parse_tls_plaintext, SNIType, TlsExtension, TlsMessage,
    TlsMessageHandshake,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::relay::Route;

/// A TLS record header: content type, version, length.
const HEADER: usize = 5;
/// The largest plaintext record (2^14) plus slack for a padded or oversized ClientHello.
const MAX_RECORD: usize = 16_384 + 2_048;

/// The route for `name`: an exact name wins over a wildcard, the longest wildcard over shorter
/// ones, and the first route over later ones. None: the relay's default pool.
pub fn route<'a>(routes: &'a [Route], name: &str) -> Option<&'a Route> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let mut best: Option<(usize, &Route)> = None; // (specificity, route)
    for r in routes {
        for pattern in &r.names {
            let score = if *pattern == name {
                usize::MAX
            } else if let Some(suffix) = pattern.strip_prefix("*.") {
                let below = name
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.'));
                if !below {
                    continue;
                }
                suffix.len()
            } else {
                continue;
            };
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, r));
            }
        }
    }
    best.map(|(_, r)| r)
}

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed to know.
    Incomplete,
    /// Not a TLS ClientHello (or one mailns cannot read): use the default pool.
    NotTls,
    /// A ClientHello, with the server name if it sent one.
    Tls(Option<String>),
}

/// Reads the server name from `bytes`, the start of a connection. Pure.
pub fn parse(bytes: &[u8]) -> Hello {
    match bytes.first() {
        None => return Hello::Incomplete,
        Some(&kind) if kind != 0x16 => return Hello::NotTls,
        Some(_) => {}
    }
    let Some(head) = bytes.first_chunk::<HEADER>() else {
        return Hello::Incomplete;
    };
    let len = usize::from(u16::from_be_bytes([head[3], head[4]]));
    if HEADER + len > MAX_RECORD {
        return Hello::NotTls;
    }
    let Some(first_record) = bytes.get(..HEADER + len) else {
        return Hello::Incomplete;
    };
    let Ok((_, record)) = parse_tls_plaintext(first_record) else {
        return Hello::NotTls; // a ClientHello split over several records, say
    };
    for msg in record.msg {
        if let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) = msg {
            let name = hello
                .ext
                .and_then(|e| parse_tls_extensions(e).ok())
                .and_then(|(_, exts)| {
                    exts.into_iter().find_map(|x| match x {
                        TlsExtension::SNI(names) => names
                            .into_iter()
                            .find(|(t, _)| *t == SNIType::HostName)
                            .and_then(|(_, n)| std::str::from_utf8(n).ok())
                            // RFC 6066 §3: a HostName is never empty; an empty one is no name.
                            .filter(|n| !n.is_empty())
                            .map(str::to_owned),
                        _ => None,
                    })
                });
            return Hello::Tls(name);
        }
    }
    Hello::NotTls
}

/// Reads the client's first record (within `limit`), returning the bytes read, which the caller
/// must send on first, and the server name. A client that sends nothing in time, or no TLS, gets
/// the default pool.
pub async fn read_hello(
    client: &mut TcpStream,
    limit: Duration,
) -> io::Result<(Vec<u8>, Option<String>)> {
    let mut buf = Vec::with_capacity(2048);
    let read = async {
        loop {
            match parse(&buf) {
                Hello::Incomplete => {}
                Hello::NotTls => return Ok::<_, io::Error>(None),
                Hello::Tls(name) => return Ok(name),
            }
            // Straight into the heap buffer: a stack array here would sit in every relayed
            // connection's task (a future is as large as its largest state), idle or not.
            buf.reserve(4096);
            if client.read_buf(&mut buf).await? == 0 {
                return Ok(None);
            }
        }
    };
    let name = timeout(limit, read).await.unwrap_or(Ok(None))?;
    Ok((buf, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Vec<Route> {
        vec![
            Route {
                names: vec![
                    "owa.mail.example.test".into(),
                    "*.legacy.example.test".into(),
                ],
                servers: vec![0],
            },
            Route {
                names: vec!["*.example.test".into()],
                servers: vec![1],
            },
        ]
    }

    #[test]
    fn exact_beats_wildcard_and_longer_wildcard_beats_shorter() {
        let r = routes();
        assert_eq!(route(&r, "OWA.mail.example.test.").unwrap().servers, [0]);
        assert_eq!(route(&r, "a.b.legacy.example.test").unwrap().servers, [0]);
        assert_eq!(route(&r, "ews.mail.example.test").unwrap().servers, [1]);
        assert!(
            route(&r, "example.test").is_none(),
            "a wildcard needs a label"
        );
        assert!(route(&r, "badexample.test").is_none());
        assert!(route(&r, "other.test").is_none());
    }

    /// A real ClientHello, as rustls writes it.
    fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut conn = rustls::ClientConnection::new(
            std::sync::Arc::new(cfg),
            name.to_owned().try_into().unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_the_name_from_a_client_hello_in_pieces() {
        let hello = client_hello("owa.mail.example.test");
        for cut in [0, 1, 4, 5, 40, hello.len() - 1] {
            assert_eq!(parse(&hello[..cut]), Hello::Incomplete, "cut at {cut}");
        }
        assert_eq!(
            parse(&hello),
            Hello::Tls(Some("owa.mail.example.test".into()))
        );
        // An address as the name: rustls sends no SNI.
        assert_eq!(parse(&client_hello("127.0.0.1")), Hello::Tls(None));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(parse(&[0x16, 3, 1, 0xff, 0xff]), Hello::NotTls, "too long");
        let mut bad = hello.clone();
        bad[5] = 2; // a ServerHello type: not what a client sends first
        assert_eq!(parse(&bad), Hello::NotTls);
    }
}
