//! The HTTPS front: TLS offload and re-encrypt through the real binary, with curl and openssl as
//! clients and simulated IIS servers (plain and TLS) on distinct loopback addresses.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use std::time::{Duration, Instant};

use common::*;
use mailns::sim;
use sim::{Proto, Sim};

const ZONE: &str = "$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 127.0.0.53\n";
const OK: &str = "200 OK<br/>cas.mail.example.test";

/// A self-signed certificate for `names`, written as `<stem>.pem` and `<stem>.key` in `dir`.
fn cert(dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let (c, k) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&c, ck.cert.pem()).unwrap();
    std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
    (c, k)
}

/// mailns with its config (`tail` after a zone) in `dir`, next to the certificates.
fn start(dir: tempfile::TempDir, tail: &str) -> Mailns {
    std::fs::write(dir.path().join("z.zone"), ZONE).unwrap();
    let config = format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n\n[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n\n{tail}"
    );
    Mailns::start_config(dir, &config)
}

/// Config for server cas01 at `backend` behind an offload relay "https" with the certificate
/// stems `certs` (`<stem>.pem`, `<stem>.key`) and `extra` relay keys.
fn offload(backend: SocketAddr, certs: &[&str], extra: &str) -> String {
    let certs: Vec<String> = certs
        .iter()
        .map(|c| format!("{{ cert = \"{c}.pem\", key = \"{c}.key\" }}"))
        .collect();
    format!(
        "[[server]]\nname = \"cas01\"\naddresses = [\"{}\"]\n\n\
         [[relay]]\nname = \"https\"\nlisten = [\"127.0.0.1:0\"]\nservers = [\"cas01\"]\nbackend_port = {}\n\
         tls = \"offload\"\ncertificates = [{}]\n{extra}",
        backend.ip(),
        backend.port(),
        certs.join(", ")
    )
}

/// curl through `vip` as `name`, trusting `ca`: (body, stderr).
fn curl(vip: SocketAddr, name: &str, ca: &Path, paths: &[&str]) -> (String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{name}:{}:127.0.0.1", vip.port())]);
    for p in paths {
        cmd.arg(format!("https://{name}:{}{p}", vip.port()));
    }
    let out = cmd.output().expect("curl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn offload_picks_the_certificate_by_sni_and_pins_one_backend_connection_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let (owa, _) = cert(dir.path(), "owa", &["owa.z.test", "*.owa.z.test"]);
    let (mail, _) = cert(dir.path(), "mail", &["mail.z.test"]);
    let rt = sim::runtime();
    let backend = Sim::start(&rt, "127.163.0.1".parse().unwrap(), 0, Proto::Http);
    let s = start(dir, &offload(backend.addr, &["owa", "mail"], ""));
    let vip = s.relay("https")[0];
    assert!(
        s.startup_log.join("\n").contains("Extended Protection"),
        "offload warns about Extended Protection at start-up"
    );
    let (body, err) = curl(vip, "owa.z.test", &owa, &["/owa/healthcheck.htm"]);
    assert_eq!(body, OK, "{err}");
    let (body, err) = curl(vip, "mail.z.test", &mail, &["/owa/healthcheck.htm"]);
    assert_eq!(body, OK, "SNI mail.z.test gets the mail certificate: {err}");
    let (body, _) = curl(vip, "mail.z.test", &owa, &["/owa/healthcheck.htm"]);
    assert!(body.is_empty(), "not the owa certificate for mail.z.test");
    let (body, err) = curl(vip, "x.owa.z.test", &owa, &["/owa/healthcheck.htm"]);
    assert_eq!(body, OK, "wildcard: {err}");

    // Pinning: three requests on one client connection reach the backend on one connection;
    // two clients make two.
    let b = &backend.behaviour;
    let (a0, h0) = (
        b.accepted.load(Ordering::Relaxed),
        b.hits.load(Ordering::Relaxed),
    );
    let (body, err) = curl(
        vip,
        "owa.z.test",
        &owa,
        &[
            "/owa/healthcheck.htm",
            "/ews/healthcheck.htm",
            "/mapi/healthcheck.htm",
        ],
    );
    assert_eq!(body, OK.repeat(3), "{err}");
    assert_eq!(b.hits.load(Ordering::Relaxed) - h0, 3);
    assert_eq!(
        b.accepted.load(Ordering::Relaxed) - a0,
        1,
        "one backend connection"
    );
    curl(vip, "owa.z.test", &owa, &["/owa/healthcheck.htm"]);
    curl(vip, "owa.z.test", &owa, &["/owa/healthcheck.htm"]);
    assert_eq!(
        b.accepted.load(Ordering::Relaxed) - a0,
        3,
        "one per client connection"
    );

    // The dashboard's certificate list carries the relay's own certificates.
    let doc = status_json(&s);
    let certs = doc["certificates"].as_array().unwrap();
    for name in ["owa.z.test", "mail.z.test"] {
        let c = certs
            .iter()
            .find(|c| c["names"].as_array().unwrap().iter().any(|n| n == name))
            .unwrap_or_else(|| panic!("{name} in {certs:#?}"));
        assert!(
            c["source"].as_str().unwrap().starts_with("relay https"),
            "{c}"
        );
        assert!(c["days_left"].as_i64().unwrap() > 300, "{c}");
    }
    assert_eq!(doc["relays"][0]["tls"], "offload");
}

#[test]
fn reencrypt_verifies_the_backend_certificate_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let (front, _) = cert(dir.path(), "front", &["owa.z.test"]);
    cert(dir.path(), "other", &["owa.z.test"]);
    let rt = sim::runtime();
    let (backend_cfg, backend_pem) = sim::tls_server_with_pem(&["owa.z.test"]);
    std::fs::write(dir.path().join("backend-ca.pem"), backend_pem).unwrap();
    let backend = Sim::start(
        &rt,
        "127.164.0.1".parse().unwrap(),
        0,
        Proto::Https(backend_cfg),
    );
    // A second server whose certificate is for another name.
    let (misnamed_cfg, misnamed_pem) = sim::tls_server_with_pem(&["cas02.internal.test"]);
    std::fs::write(dir.path().join("misnamed-ca.pem"), misnamed_pem).unwrap();
    let _misnamed = Sim::start(
        &rt,
        "127.164.0.2".parse().unwrap(),
        backend.addr.port(),
        Proto::Https(misnamed_cfg),
    );
    // A third whose certificate expired.
    let (expired_cfg, expired_pem) = sim::tls_server_expired(&["owa.z.test"]);
    std::fs::write(dir.path().join("expired-ca.pem"), expired_pem).unwrap();
    let _expired = Sim::start(
        &rt,
        "127.164.0.3".parse().unwrap(),
        backend.addr.port(),
        Proto::Https(expired_cfg),
    );
    let relay = |name: &str, server: &str, extra: &str| {
        format!(
            "[[relay]]\nname = \"{name}\"\nlisten = [\"127.0.0.1:0\"]\nservers = [\"{server}\"]\nbackend_port = {}\n\
             tls = \"reencrypt\"\ncertificates = [{{ cert = \"front.pem\", key = \"front.key\" }}]\n{extra}\n",
            backend.addr.port()
        )
    };
    let s = start(
        dir,
        &format!(
            "[[server]]\nname = \"cas01\"\naddresses = [\"127.164.0.1\"]\n\n\
             [[server]]\nname = \"cas02\"\naddresses = [\"127.164.0.2\"]\n\n\
             [[server]]\nname = \"cas03\"\naddresses = [\"127.164.0.3\"]\n\n{}{}{}{}{}",
            relay("good", "cas01", "backend_ca_file = \"backend-ca.pem\""),
            relay("wrong", "cas01", "backend_ca_file = \"other.pem\""),
            relay("noverify", "cas01", "backend_tls_verify = false"),
            relay("misnamed", "cas02", "backend_ca_file = \"misnamed-ca.pem\""),
            relay("expired", "cas03", "backend_ca_file = \"expired-ca.pem\"")
        ),
    );
    let (body, err) = curl(
        s.relay("good")[0],
        "owa.z.test",
        &front,
        &["/owa/healthcheck.htm"],
    );
    assert_eq!(body, OK, "{err}");
    let hits = backend.behaviour.hits.load(Ordering::Relaxed);
    let (body, _) = curl(
        s.relay("wrong")[0],
        "owa.z.test",
        &front,
        &["/owa/healthcheck.htm"],
    );
    assert!(
        body.is_empty(),
        "a backend certificate from another CA is refused"
    );
    assert_eq!(
        backend.behaviour.hits.load(Ordering::Relaxed),
        hits,
        "no request reached it"
    );
    let (body, err) = curl(
        s.relay("noverify")[0],
        "owa.z.test",
        &front,
        &["/owa/healthcheck.htm"],
    );
    assert_eq!(body, OK, "verification off: {err}");
    let (body, _) = curl(
        s.relay("misnamed")[0],
        "owa.z.test",
        &front,
        &["/owa/healthcheck.htm"],
    );
    assert!(
        body.is_empty(),
        "a trusted certificate for another name is refused"
    );
    let (body, _) = curl(
        s.relay("expired")[0],
        "owa.z.test",
        &front,
        &["/owa/healthcheck.htm"],
    );
    assert!(body.is_empty(), "an expired certificate is refused");
}

#[test]
fn a_slow_handshake_is_dropped_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    cert(dir.path(), "owa", &["owa.z.test"]);
    let rt = sim::runtime();
    let backend = Sim::start(&rt, "127.165.0.1".parse().unwrap(), 0, Proto::Http);
    let s = start(
        dir,
        &offload(backend.addr, &["owa"], "handshake_timeout = \"1s\"\n"),
    );
    let vip = s.relay("https")[0];
    // A TLS record header, then one byte a second: never a complete ClientHello.
    let mut c = TcpStream::connect(vip).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t0 = Instant::now();
    let hello = [
        0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let mut closed = false;
    for b in hello {
        if c.write_all(&[b]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 16];
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            match c.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            break;
        }
    }
    let took = t0.elapsed();
    assert!(closed, "the relay dropped the slow client");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "at the 1 s handshake timeout: {took:?}"
    );
}

#[test]
fn port_80_redirects_to_https_and_answers_outlooks_autodiscover_redirect() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        dir,
        "[redirect]\nlisten = [\"127.0.0.1:0\"]\nroot = \"/owa\"\nautodiscover_host = \"autodiscover.mail.example.test\"\naccepted_domains = [\"contoso.test\", \"fabrikam.test\"]\n",
    );
    let web = s.redirects[0];
    let get = |method: &str, host: &str, path: &str| -> String {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %header{location}",
            ])
            .args(["-X", method, "-H", &format!("Host: {host}")])
            .arg(format!("http://{web}{path}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        get("GET", "mail.example.test", "/"),
        "301 https://mail.example.test/owa"
    );
    assert_eq!(
        get("GET", "mail.example.test", "/ecp/?x=1"),
        "301 https://mail.example.test/ecp/?x=1"
    );
    let ad = "302 https://autodiscover.mail.example.test/Autodiscover/Autodiscover.xml";
    assert_eq!(
        get(
            "GET",
            "autodiscover.contoso.test",
            "/autodiscover/autodiscover.xml"
        ),
        ad
    );
    assert_eq!(
        get(
            "GET",
            "AUTODISCOVER.fabrikam.test",
            "/AutoDiscover/AutoDiscover.xml"
        ),
        ad
    );
    assert_eq!(
        get(
            "GET",
            "autodiscover.other.test",
            "/autodiscover/autodiscover.xml"
        ),
        "301 https://autodiscover.other.test/autodiscover/autodiscover.xml",
        "not an accepted domain"
    );
    assert_eq!(get("POST", "mail.example.test", "/owa"), "405 ");
    // A malformed request line: 400, and the connection closes.
    let mut c = TcpStream::connect(web).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"NOT A REQUEST\r\n\r\n").unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
}

#[test]
fn certificates_reload_without_dropping_established_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (chain, _) = cert(dir.path(), "owa", &["owa.z.test"]);
    let old_ca = dir.path().join("old-ca.pem");
    std::fs::copy(&chain, &old_ca).unwrap();
    let rt = sim::runtime();
    let backend = Sim::start(
        &rt,
        "127.166.0.1".parse().unwrap(),
        0,
        Proto::Echo("cas01".into()),
    );
    let s = start(dir, &offload(backend.addr, &["owa"], ""));
    let vip = s.relay("https")[0];
    // A long-lived session over the old certificate (rustls as the client).
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&old_ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), "owa.z.test".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(vip).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let line = |tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>| {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while tls.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
            out.push(b[0]);
        }
        String::from_utf8(out).unwrap()
    };
    assert_eq!(line(&mut tls), "cas01");
    tls.write_all(b"before\n").unwrap();
    assert_eq!(line(&mut tls), "before");

    // New certificate files: new handshakes get them (the files are watched).
    let (new_chain, _) = cert(s.dir.path(), "owa", &["owa.z.test"]);
    let verifies = |ca: &Path| openssl_verifies(vip, Some("owa.z.test"), ca).0;
    wait_for(
        Duration::from_secs(10),
        "new handshakes see the new certificate",
        || verifies(&new_chain),
    );
    assert!(
        !verifies(&old_ca),
        "the old certificate is no longer served"
    );
    // The session from before the reload goes on.
    tls.write_all(b"after\n").unwrap();
    assert_eq!(line(&mut tls), "after");
}

/// A real ClientHello for `name` (rustls's first flight).
fn client_hello(name: &str) -> Vec<u8> {
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(cfg), name.to_string().try_into().unwrap()).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// Closes `c` with a reset (SO_LINGER 0), as a client that crashed or was killed.
fn reset(c: TcpStream) {
    let s = socket2::Socket::from(c);
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// Clients that reset in the middle of the handshake, before the ClientHello is whole and after
/// the server's first flight, leave nothing behind: mailns stays up, the next client completes
/// its handshake, and no relayed connection stays open.
#[test]
fn clients_that_reset_mid_handshake_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (owa, _) = cert(dir.path(), "owa", &["owa.z.test"]);
    let rt = sim::runtime();
    let backend = Sim::start(&rt, "127.166.0.1".parse().unwrap(), 0, Proto::Http);
    let mut s = start(dir, &offload(backend.addr, &["owa"], ""));
    let vip = s.relay("https")[0];
    let hello = client_hello("owa.z.test");
    for i in 0..100 {
        let mut c = TcpStream::connect(vip).unwrap();
        if i % 2 == 0 {
            // Half a ClientHello, then the reset.
            c.write_all(&hello[..hello.len() / 2]).unwrap();
        } else {
            // The whole ClientHello, the start of the server's answer, then the reset.
            c.write_all(&hello).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 64];
            assert!(
                c.read(&mut buf).unwrap() > 0,
                "the server answered the hello"
            );
        }
        reset(c);
    }
    assert!(s.alive(), "mailns survived 100 resets mid-handshake");
    let (body, err) = curl(vip, "owa.z.test", &owa, &["/owa/healthcheck.htm"]);
    assert_eq!(body, OK, "a client after the resets: {err}");
    wait_for(
        Duration::from_secs(5),
        "no relayed connection left open",
        || {
            let (_, m) = http_get(s.admin, "/metrics");
            m.lines()
                .filter(|l| l.starts_with("mailns_relay_connections_active"))
                .all(|l| l.ends_with(" 0"))
        },
    );
}
