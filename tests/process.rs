//! Process life against the real binary: SIGTERM stops accepting at once, lets open relayed
//! connections finish within the grace period, closes the rest when it ends, and exits 0; logs
//! come as JSON lines with `--log-format json`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;
use mailns::sim;
use sim::{Proto, Sim};

const ZONE: &str = "$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 127.0.0.53\n";

/// What a test holds: mailns, its relay address, and the simulated server with its runtime.
type Setup = (
    Mailns,
    SocketAddr,
    (std::sync::Arc<Sim>, std::sync::Arc<tokio::runtime::Runtime>),
);

/// mailns with one relay to an id-echo server on `net`, and `grace`.
fn start(net: u8, grace: &str) -> Setup {
    let rt = sim::runtime();
    let backend = Sim::start(
        &rt,
        format!("127.{net}.0.1").parse().unwrap(),
        0,
        Proto::Echo("ex01".into()),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("z.zone"), ZONE).unwrap();
    let s = Mailns::start_config(
        dir,
        &format!(
            "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n\n[process]\nshutdown_grace = \"{grace}\"\n\n\
             [[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n\n\
             [[server]]\nname = \"ex01\"\naddresses = [\"127.{net}.0.1\"]\n\n\
             [[relay]]\nname = \"echo\"\nlisten = [\"127.0.0.1:0\"]\nservers = [\"ex01\"]\nbackend_port = {}\n",
            backend.addr.port()
        ),
    );
    let relay = s.relay("echo")[0];
    (s, relay, (backend, rt))
}

fn open(relay: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let c = TcpStream::connect(relay).expect("relay accepts");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut id = String::new();
    r.read_line(&mut id).unwrap();
    assert_eq!(id.trim(), "ex01");
    (c, r)
}

#[test]
fn sigterm_stops_accepting_and_lets_open_connections_finish() {
    let (mut s, relay, _rt) = start(172, "20s");
    let (mut c, mut r) = open(relay);
    s.signal("TERM");
    wait_for(
        Duration::from_secs(5),
        "the relay refuses new connections",
        || TcpStream::connect_timeout(&relay, Duration::from_millis(200)).is_err(),
    );
    // The open connection still relays both ways.
    c.write_all(b"still here\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "still here\n");
    assert!(s.alive(), "waits for the open connection");
    // While it waits, the admin listener says what for; DNS has stopped (the zone's other name
    // servers answer at once).
    assert_eq!(http_get(s.admin, "/livez"), (200, "ok\n".into()));
    assert_eq!(
        http_get(s.admin, "/readyz"),
        (503, "shutting down, 1 relayed sessions left\n".into())
    );
    let doc = status_json(&s);
    assert_eq!(
        (doc["shutting_down"].as_bool(), doc["sessions"].as_u64()),
        (Some(true), Some(1))
    );
    assert!(
        udp_raw(s.addr, &query("z.test.", RecordType::SOA, None)).is_none(),
        "DNS stopped at once"
    );
    // Once the client is done, mailns exits at once, well inside the grace period.
    let closed = Instant::now();
    drop(r);
    c.shutdown(std::net::Shutdown::Both).unwrap();
    let status = s.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status}");
    assert!(
        closed.elapsed() < Duration::from_secs(5),
        "{:?}",
        closed.elapsed()
    );
}

#[test]
fn the_grace_period_ends_with_held_connections_closed() {
    let (mut s, relay, _rt) = start(173, "1s");
    let (_c, mut r) = open(relay);
    let term = Instant::now();
    s.signal("TERM");
    // The client sees the relay close its connection when the grace period ends.
    let mut rest = Vec::new();
    let n = r.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0);
    let waited = term.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    let status = s.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(status.success(), "{status}");
}

/// A config serving one zone on ephemeral ports, written into `dir`; its path.
fn minimal_config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    std::fs::write(dir.path().join("z.zone"), ZONE).unwrap();
    let cfg = dir.path().join("mailns.toml");
    std::fs::write(
        &cfg,
        "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    cfg
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = minimal_config(&dir);
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_mailns"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{v}");
        seen.push(v["message"].as_str().unwrap_or_default().to_string());
        if v["message"] == "mailns ready" {
            break;
        }
        if v["message"] == "listening for DNS/TCP" {
            assert!(
                v["local_addr"].as_str().unwrap().starts_with("127.0.0.1:"),
                "{v}"
            );
        }
    }
    assert!(
        seen.iter().any(|m| m == "listening for DNS/TCP"),
        "{seen:?}"
    );
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let cfg = minimal_config(&dir);
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_mailns"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &sock_path)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let next = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    assert_eq!(next(), "READY=1\n");
    let pid = child.0.id().to_string();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next(), "READY=1\n");
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert_eq!(next(), "STOPPING=1\n");
    assert!(child.0.wait().unwrap().success());
}
