//! Reload against the real binary: 100 reloads (two valid configs alternating, with broken ones
//! between) while queries run over UDP and TCP lose nothing and every answer belongs to one of
//! the two configs; and `[process] watch = true` reloading on a file change, debounced.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};

const TOKEN: &str = "reload-test-token";

fn zone(serial: u32, v: &str) -> String {
    format!("$TTL 60\n@ SOA ns1 h {serial} 2 3 4 5\n@ NS ns1\nns1 A 127.0.0.53\nv A {v}\n")
}

fn config(zone_file: &str, extra: &str) -> String {
    format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 2\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n\n{extra}\n\
         [[zone]]\nname = \"z.test\"\nfile = \"{zone_file}\"\n"
    )
}

fn start(extra: &str) -> Mailns {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.zone"), zone(1, "127.0.0.1")).unwrap();
    std::fs::write(dir.path().join("b.zone"), zone(2, "127.0.0.2")).unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::set_permissions(
        dir.path().join("token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    Mailns::start_config(dir, &config("a.zone", extra))
}

fn reload(admin: SocketAddr) -> u16 {
    let out = Command::new(require_tool("curl"))
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            &format!("http://{admin}/api/v1/reload"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap()
}

/// The address `v.z.test` answers with, from one response.
fn v_of(raw: &[u8]) -> Option<String> {
    let m = Message::from_vec(raw).ok()?;
    m.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0.to_string()),
        _ => None,
    })
}

/// One query over TCP on a fresh connection.
fn tcp_query(addr: SocketAddr) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let q = query("v.z.test.", RecordType::A, None);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

#[test]
fn a_hundred_reloads_under_queries_lose_nothing() {
    let s = start("");
    let path = s.dir.path().join("mailns.toml");
    let stop = Arc::new(AtomicBool::new(false));
    let addr = s.addr;
    // Two clients, UDP and TCP, each asking until told to stop (bounded by the reloads).
    let clients: Vec<_> = [false, true]
        .into_iter()
        .map(|tcp| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut n, mut lost, mut seen) = (0u32, 0u32, std::collections::BTreeMap::new());
                while !stop.load(Ordering::Relaxed) {
                    let raw = if tcp {
                        tcp_query(addr)
                    } else {
                        udp_raw(addr, &query("v.z.test.", RecordType::A, None))
                    };
                    n += 1;
                    match raw.as_deref().and_then(v_of) {
                        Some(v) => *seen.entry(v).or_insert(0u32) += 1,
                        None => lost += 1,
                    }
                }
                (n, lost, seen)
            })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::new();
    for i in 0..100u32 {
        let text = match i % 10 {
            // Broken: a syntax error, a missing zone file, a broken zone.
            3 => "[dns\n".to_string(),
            6 => config("missing.zone", ""),
            9 => {
                std::fs::write(s.dir.path().join("c.zone"), "$TTL 60\n@ SOA ns1\n").unwrap();
                config("c.zone", "")
            }
            _ if i % 2 == 0 => config("b.zone", ""),
            _ => config("a.zone", ""),
        };
        std::fs::write(&path, text).unwrap();
        let code = reload(s.admin);
        *codes.entry(code).or_insert(0) += 1;
        let want = if matches!(i % 10, 3 | 6 | 9) {
            422
        } else {
            200
        };
        assert_eq!(code, want, "reload {i}");
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (n, lost, seen) = c.join().unwrap();
        eprintln!("{n} queries, {lost} lost, answers {seen:?}");
        assert_eq!(lost, 0, "no query lost or failed");
        assert!(
            seen.keys().all(|v| v == "127.0.0.1" || v == "127.0.0.2"),
            "every answer from one of the configs: {seen:?}"
        );
        total += n;
    }
    assert!(total > 200, "the clients ran throughout: {total}");
    assert_eq!(codes.get(&200), Some(&70));
    assert_eq!(codes.get(&422), Some(&30));
}

#[test]
fn watch_reloads_when_a_zone_file_changes() {
    let s = start("[process]\nwatch = true\n");
    let zone_file = s.dir.path().join("a.zone");
    let v = |s: &Mailns| v_of(&udp_raw(s.addr, &query("v.z.test.", RecordType::A, None)).unwrap());
    assert_eq!(v(&s).as_deref(), Some("127.0.0.1"));
    std::fs::write(&zone_file, zone(3, "127.0.0.3")).unwrap();
    let start = std::time::Instant::now();
    while v(&s).as_deref() != Some("127.0.0.3") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the change was not served; status: {:#}",
            status_json(&s)["config"]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = start.elapsed();
    eprintln!("served {t:?} after the write");
    // A broken write keeps the old data and shows the error; fixing it clears the error.
    std::fs::write(&zone_file, "$TTL 60\n@ SOA ns1\n").unwrap();
    wait_for(Duration::from_secs(5), "the error is shown", || {
        !status_json(&s)["config"]["last_reload_error"].is_null()
    });
    assert_eq!(v(&s).as_deref(), Some("127.0.0.3"));
    std::fs::write(&zone_file, zone(4, "127.0.0.4")).unwrap();
    wait_for(Duration::from_secs(5), "fixed and served", || {
        v(&s).as_deref() == Some("127.0.0.4")
            && status_json(&s)["config"]["last_reload_error"].is_null()
    });
}

/// Waits until, for each pattern (all of its parts in one log line), a line was logged; returns
/// each line's `local_addr=` value, in pattern order.
fn logged_addrs(s: &Mailns, patterns: &[&[&str]]) -> Vec<SocketAddr> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut found: Vec<Option<SocketAddr>> = vec![None; patterns.len()];
    while found.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = s
            .log
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no log lines for {patterns:?}: found {found:?}"));
        for (i, p) in patterns.iter().enumerate() {
            if found[i].is_none() && p.iter().all(|n| line.contains(n)) {
                found[i] = line
                    .split("local_addr=")
                    .nth(1)
                    .and_then(|x| x.split_whitespace().next())
                    .and_then(|x| x.parse().ok());
            }
        }
    }
    found.into_iter().flatten().collect()
}

fn echo_once(
    c: &mut std::net::TcpStream,
    r: &mut std::io::BufReader<std::net::TcpStream>,
) -> String {
    use std::io::{BufRead, Write};
    c.write_all(b"ping\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line
}

#[test]
fn listeners_follow_the_config_on_reload() {
    use mailns::sim::{self, Proto, Sim};
    let rt = sim::runtime();
    let net = 176u8;
    let ex1 = Sim::start(&rt, [127, net, 0, 1].into(), 0, Proto::Echo("ex01".into()));
    let ex2 = Sim::start(
        &rt,
        [127, net, 0, 2].into(),
        ex1.addr.port(),
        Proto::Echo("ex02".into()),
    );
    let servers = format!(
        "[[server]]\nname = \"ex01\"\naddresses = [\"127.{net}.0.1\"]\n[[server]]\nname = \"ex02\"\naddresses = [\"127.{net}.0.2\"]\n"
    );
    let relay = |name: &str, server: &str| {
        format!(
            "[[relay]]\nname = \"{name}\"\nlisten = [\"127.0.0.1:0\"]\nservers = [\"{server}\"]\nbackend_port = {}\n",
            ex1.addr.port()
        )
    };
    let cfg = |dns: &str, extra: &str| {
        format!(
            "[dns]\nlisten = [{dns}]\nudp_workers = 2\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n\n\
             [[zone]]\nname = \"z.test\"\nfile = \"a.zone\"\n\n{servers}\n{extra}"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.zone"), zone(1, "127.0.0.1")).unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::set_permissions(
        dir.path().join("token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let s = Mailns::start_config(dir, &cfg("\"127.0.0.1:0\"", &relay("a", "ex01")));
    let path = s.dir.path().join("mailns.toml");
    let a = s.relay("a")[0];
    let (mut c1, mut r1) = {
        let (id, c) = hello(a, "127.0.0.1".parse().unwrap()).expect("relayed");
        assert_eq!(id, "ex01");
        let r = std::io::BufReader::new(c.try_clone().unwrap());
        (c, r)
    };

    // Add a DNS listener, a relay and the port-80 listener; point relay a at ex02.
    std::fs::write(
        &path,
        cfg(
            "\"127.0.0.1:0\", \"127.0.0.2:0\"",
            &format!(
                "{}{}[redirect]\nlisten = [\"127.0.0.1:0\"]\n",
                relay("a", "ex02"),
                relay("b", "ex01")
            ),
        ),
    )
    .unwrap();
    assert_eq!(reload(s.admin), 200);
    let found = logged_addrs(
        &s,
        &[
            &["listening for DNS/TCP", "127.0.0.2:"],
            &["listening for relay", "relay=b"],
            &["listening for redirect"],
        ],
    );
    let (dns2, b, redirect) = (found[0], found[1], found[2]);
    let v = |addr| v_of(&udp_raw(addr, &query("v.z.test.", RecordType::A, None)).unwrap());
    assert_eq!(
        v(s.addr).as_deref(),
        Some("127.0.0.1"),
        "the first socket kept"
    );
    assert_eq!(
        v(dns2).as_deref(),
        Some("127.0.0.1"),
        "the new listener answers"
    );
    assert_eq!(
        hello(a, "127.0.0.1".parse().unwrap()).unwrap().0,
        "ex02",
        "same socket, new settings"
    );
    assert_eq!(hello(b, "127.0.0.1".parse().unwrap()).unwrap().0, "ex01");
    assert_eq!(
        http_get(redirect, "/").0,
        301,
        "the redirect listener answers"
    );
    assert_eq!(
        echo_once(&mut c1, &mut r1),
        "ping\n",
        "the open connection is untouched"
    );

    // A listener that cannot be bound fails the reload and changes nothing.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let before = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        before.replace(
            "[redirect]\nlisten = [\"127.0.0.1:0\"]",
            &format!(
                "[redirect]\nlisten = [\"127.0.0.1:0\", \"{}\"]",
                taken.local_addr().unwrap()
            ),
        ),
    )
    .unwrap();
    assert_eq!(reload(s.admin), 422);
    let err = status_json(&s)["config"]["last_reload_error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot bind"), "{err}");
    assert_eq!(hello(b, "127.0.0.1".parse().unwrap()).unwrap().0, "ex01");

    // Remove the second DNS listener, relay b and port 80: they close; the rest stays.
    std::fs::write(&path, cfg("\"127.0.0.1:0\"", &relay("a", "ex02"))).unwrap();
    assert_eq!(reload(s.admin), 200);
    wait_for(Duration::from_secs(3), "removed listeners close", || {
        std::net::TcpStream::connect_timeout(&b, Duration::from_millis(200)).is_err()
            && std::net::TcpStream::connect_timeout(&redirect, Duration::from_millis(200)).is_err()
            && std::net::TcpStream::connect_timeout(&dns2, Duration::from_millis(200)).is_err()
    });
    assert_eq!(v(s.addr).as_deref(), Some("127.0.0.1"));
    assert_eq!(hello(a, "127.0.0.1".parse().unwrap()).unwrap().0, "ex02");
    assert_eq!(echo_once(&mut c1, &mut r1), "ping\n", "still untouched");
    let relays = status_json(&s)["relays"].as_array().unwrap().len();
    assert_eq!(relays, 1);
    drop(ex2);
}
