//! mailns as the primary of a real Knot DNS secondary on loopback: AXFR of the zone file's
//! static truth (a service name keeps its full address set while mailns answers only the healthy
//! servers), NOTIFY after a reload with a new serial, an allow-list, AXFR over UDP refused, and
//! TSIG (HMAC-SHA256) on a 20,000-record zone that needs many messages.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use mailns::sim::{self, Proto, Sim};

const KEY_NAME: &str = "transfer-key";
/// 32 bytes, base64.
const SECRET: &str = "bWFpbG5zLXRlc3QtdHNpZy1zZWNyZXQtMzItYnl0ZXM=";

/// A Knot secondary of `zone`, transferring from `primary`, with or without the TSIG key.
struct Knot {
    _child: ChildGuard,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Knot {
    fn start(port: u16, zone: &str, primary: SocketAddr, tsig: bool) -> Self {
        let knotd = require_tool("knotd");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let key = if tsig {
            format!("key:\n  - id: {KEY_NAME}\n    algorithm: hmac-sha256\n    secret: {SECRET}\n")
        } else {
            String::new()
        };
        let use_key = if tsig {
            format!("    key: {KEY_NAME}\n")
        } else {
            String::new()
        };
        let conf = format!(
            "server:\n  rundir: \"{d}\"\n  listen: 127.0.0.1@{port}\n  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\n\
             log:\n  - target: stderr\n    any: info\n\
             database:\n  storage: \"{d}/db\"\n\
             {key}\
             remote:\n  - id: primary\n    address: {ip}@{pport}\n{use_key}\
             acl:\n  - id: notify_from_primary\n    address: 127.0.0.1\n    action: notify\n{use_key}\
             template:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    semantic-checks: off\n\
             zone:\n  - domain: {zone}\n    master: primary\n    acl: notify_from_primary\n",
            ip = primary.ip(),
            pport = primary.port(),
        );
        let path = dir.path().join("knot.conf");
        std::fs::write(&path, conf).unwrap();
        let child = ChildGuard(
            Command::new(knotd)
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("knot.log")).unwrap())
                .spawn()
                .expect("start knotd"),
        );
        Self {
            _child: child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knot.log")).unwrap_or_default()
    }

    /// The serial Knot serves for `zone`, if it has the zone.
    fn serial(&self, zone: &str) -> Option<u32> {
        let m = udp_raw(self.addr, &query(zone, RecordType::SOA, None))?;
        let m = hickory_proto::op::Message::from_vec(&m).ok()?;
        m.answers.iter().find_map(|r| match &r.data {
            hickory_proto::rr::RData::SOA(s) => Some(s.serial),
            _ => None,
        })
    }
}

/// `kdig` output lines of an AXFR from `server`, and whether it succeeded.
fn kdig_axfr(server: SocketAddr, zone: &str, extra: &[&str]) -> (bool, Vec<String>, String) {
    let out = Command::new(require_tool("kdig"))
        .args([
            format!("@{}", server.ip()),
            "-p".into(),
            server.port().to_string(),
            "AXFR".into(),
            zone.into(),
            "+noall".into(),
            "+answer".into(),
        ])
        .args(extra)
        .output()
        .expect("kdig");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let records: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(String::from)
        .collect();
    let ok = !text.contains("failed") && !err.contains("failed") && !records.is_empty();
    (ok, records, format!("{text}{err}"))
}

/// Each test runs in a network namespace of its own: Knot listens on a port number chosen
/// before it starts, which nothing else on the machine may take in between.
#[test]
fn knot_transfers_the_static_truth_and_follows_notify() {
    in_netns(static_truth_and_notify);
}

#[test]
fn tsig_transfer_of_a_large_zone_and_signed_notify() {
    in_netns(tsig_large_zone);
}

fn static_truth_and_notify() {
    let rt = sim::runtime();
    let net = 174u8;
    let http: Vec<Arc<Sim>> = (1..=3u8).fold(Vec::new(), |mut v, h| {
        let port = v.first().map_or(0, |s: &Arc<Sim>| s.addr.port());
        v.push(Sim::start(&rt, [127, net, 0, h].into(), port, Proto::Http));
        v
    });
    let zone = |serial: u32, extra: &str| {
        format!(
            "$ORIGIN mail.test.\n$TTL 300\n@ SOA ns1 h {serial} 3600 900 1209600 60\n@ NS ns1\nns1 A 127.0.0.53\n\
             owa 60 A 127.{net}.0.1\nowa 60 A 127.{net}.0.2\nowa 60 A 127.{net}.0.3\n{extra}"
        )
    };
    let knot_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mail.test.zone"), zone(1, "")).unwrap();
    let s = Mailns::start_config(
        dir,
        &format!(
            "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n\n[health]\ninterval = \"1s\"\ntimeout = \"400ms\"\nfast_interval = \"250ms\"\n\n\
             [[zone]]\nname = \"mail.test\"\nfile = \"mail.test.zone\"\nallow_transfer = [\"127.0.0.1\"]\nnotify = [\"127.0.0.1:{knot_port}\"]\n\n\
             [[check]]\nname = \"owa\"\nkind = \"http\"\nport = {}\npath = \"/owa/healthcheck.htm\"\n\n\
             [[service]]\nname = \"owa.mail.test\"\nchecks = [\"owa\"]\n",
            http[0].addr.port()
        ),
    );
    // ex02 is down: mailns answers two servers.
    http[1].kill();
    let all = vec![
        format!("127.{net}.0.1"),
        format!("127.{net}.0.2"),
        format!("127.{net}.0.3"),
    ];
    let healthy = vec![all[0].clone(), all[2].clone()];
    wait_for(
        Duration::from_secs(5),
        "mailns drops the dead server",
        || a_set(s.addr, "owa.mail.test.") == healthy,
    );

    let knot = Knot::start(knot_port, "mail.test", s.addr, false);
    wait_for(Duration::from_secs(15), "knot transfers serial 1", || {
        knot.serial("mail.test.") == Some(1)
    });
    // The secondary serves the file's truth: every server, the plain round-robin layer.
    assert_eq!(a_set(knot.addr, "owa.mail.test."), all, "{}", knot.log());

    // A change with a higher serial, then a reload: NOTIFY brings it to Knot at once (its
    // refresh timer is an hour).
    let zone_file = s.dir.path().join("mail.test.zone");
    std::fs::write(&zone_file, zone(2, "new A 127.0.0.99\n")).unwrap();
    s.signal("HUP");
    let t = wait_for(Duration::from_secs(10), "knot picks up serial 2", || {
        knot.serial("mail.test.") == Some(2)
    });
    eprintln!("serial 2 on the secondary {t:?} after the reload");
    assert_eq!(a_set(knot.addr, "new.mail.test."), ["127.0.0.99"]);

    // AXFR over UDP is refused; an address outside the allow-list is refused.
    let m = udp(s.addr, "mail.test.", RecordType::AXFR, None);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let (ok, _, out) = kdig_axfr(s.addr, "mail.test", &["-b", "127.0.0.2"]);
    assert!(!ok && out.contains("REFUSED"), "{out}");
    let (ok, records, out) = kdig_axfr(s.addr, "mail.test", &[]);
    assert!(ok, "{out}");
    assert_eq!(
        records.len(),
        1 + 1 + 1 + 3 + 1 + 1,
        "SOA NS ns1 owa×3 new SOA: {out}"
    );
}

fn tsig_large_zone() {
    let mut zone = String::from(
        "$ORIGIN big.test.\n$TTL 300\n@ SOA ns1 h 10 3600 900 1209600 60\n@ NS ns1\nns1 A 127.0.0.53\n",
    );
    for i in 0..20_000u32 {
        zone += &format!(
            "h{i} A 127.{}.{}.{}\n",
            1 + i / 62_500,
            (i / 250) % 250,
            i % 250 + 1
        );
    }
    let knot_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.test.zone"), &zone).unwrap();
    let s = Mailns::start_config(
        dir,
        &format!(
            "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n\n\
             [[tsig_key]]\nname = \"{KEY_NAME}\"\nsecret = \"{SECRET}\"\n\n\
             [[zone]]\nname = \"big.test\"\nfile = \"big.test.zone\"\ntransfer_key = \"{KEY_NAME}\"\nnotify = [\"127.0.0.1:{knot_port}\"]\n"
        ),
    );
    // Without the key: refused. With it: all 20,003 records plus the closing SOA, in many
    // messages, every one verified by kdig.
    let (ok, _, out) = kdig_axfr(s.addr, "big.test", &[]);
    assert!(!ok && out.contains("REFUSED"), "{out}");
    let key = format!("hmac-sha256:{KEY_NAME}:{SECRET}");
    let wrong = format!(
        "hmac-sha256:{KEY_NAME}:{}",
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
    );
    let (ok, _, out) = kdig_axfr(s.addr, "big.test", &["-y", &wrong]);
    assert!(!ok, "a wrong secret fails: {out}");
    let (ok, records, out) = kdig_axfr(s.addr, "big.test", &["-y", &key]);
    assert!(ok, "{out}");
    assert_eq!(
        records.len(),
        20_000 + 3 + 1,
        "{}",
        out.lines().last().unwrap_or("")
    );

    // Knot with the key transfers it, and takes a signed NOTIFY after a reload.
    let knot = Knot::start(knot_port, "big.test", s.addr, true);
    wait_for(Duration::from_secs(30), "knot transfers serial 10", || {
        knot.serial("big.test.") == Some(10)
    });
    assert_eq!(
        a_set(knot.addr, "h19999.big.test."),
        ["127.1.79.250"],
        "{}",
        knot.log()
    );
    let zone_file = s.dir.path().join("big.test.zone");
    std::fs::write(
        &zone_file,
        zone.replace(" 10 3600 ", " 11 3600 ") + "late A 127.0.0.98\n",
    )
    .unwrap();
    s.signal("HUP");
    wait_for(Duration::from_secs(15), "knot picks up serial 11", || {
        knot.serial("big.test.") == Some(11)
    });
    assert_eq!(
        a_set(knot.addr, "late.big.test."),
        ["127.0.0.98"],
        "{}",
        knot.log()
    );
}
