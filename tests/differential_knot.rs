//! Differential test: the same zone file served by Knot DNS (started here on a loopback port) and
//! by mailns must give the same rcode, AA and TC flags, the same answer RRsets, the same authority
//! section for negative answers and referrals (SOA TTL included), and the same addresses in the
//! additional section, for every query of a corpus of several hundred.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::{Record, RecordType};

struct Knot {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_knot(origin: &str, files: &[&str]) -> Knot {
    let knotd = require_tool("knotd");
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(data_dir().join(f), dir.path().join(f)).unwrap();
    }
    let port = free_port();
    let d = dir.path().display();
    let conf = format!(
        "server:\n  rundir: \"{d}\"\n  listen: 127.0.0.1@{port}\n  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\n\
         log:\n  - target: stderr\n    any: warning\n\
         database:\n  storage: \"{d}/db\"\n\
         template:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\n    semantic-checks: off\n\
         zone:\n  - domain: {origin}\n    file: \"{}\"\n",
        files[0]
    );
    let conf_path = dir.path().join("knot.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(knotd)
        .arg("-c")
        .arg(&conf_path)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start knotd");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let knot = Knot {
        child,
        addr,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(raw) = udp_raw(addr, &query(&format!("{origin}."), RecordType::SOA, None)) {
            if Message::from_vec(&raw).is_ok_and(|m| !m.answers.is_empty()) {
                return knot;
            }
        }
        assert!(
            Instant::now() < deadline,
            "knotd did not start serving {origin}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A record as text, lowercased: names compare case-insensitively, and both servers compress
/// rdata names into the client's question, whose letter case varies.
fn norm(r: &Record) -> String {
    format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data).to_ascii_lowercase()
}

/// What must be equal between the two servers.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    rcode: u16,
    aa: bool,
    tc: bool,
    answer: BTreeSet<String>,
    /// Compared for negative answers and referrals only.
    authority: Option<BTreeSet<String>>,
    additional_addresses: BTreeSet<String>,
    has_opt: bool,
}

fn outcome(raw: &[u8]) -> Outcome {
    let m = Message::from_vec(raw).expect("parsable response");
    let tc = m.metadata.truncation;
    let negative = m.answers.is_empty();
    Outcome {
        rcode: u16::from(m.metadata.response_code),
        aa: m.metadata.authoritative,
        tc,
        // A truncated reply's sections are not compared (servers may send a partial set).
        answer: if tc {
            BTreeSet::new()
        } else {
            m.answers.iter().map(norm).collect()
        },
        authority: (negative && !tc).then(|| m.authorities.iter().map(norm).collect()),
        additional_addresses: if tc {
            BTreeSet::new()
        } else {
            m.additionals
                .iter()
                .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                .map(norm)
                .collect()
        },
        has_opt: m.edns.is_some(),
    }
}

/// Query names with their letter case varied deterministically.
fn case_variant(name: &str, seed: usize) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if (i + seed).is_multiple_of(3) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

#[test]
fn mailns_answers_like_knot() {
    let origin = "mail.contoso.test";
    let files = ["contoso.zone", "big.inc"];
    let knot = start_knot(origin, &files);
    let mailns = Mailns::start(origin, files[0], &files[1..]);

    let labels = [
        "",
        "owa",
        "autodiscover",
        "webmail",
        "legacy",
        "ext",
        "dangling",
        "nothere",
        "anything.wild",
        "a.b.wild",
        "sub.wild",
        "x.sub.wild",
        "wild",
        "*.wild",
        "foo.cn",
        "cn",
        "ent",
        "c.ent",
        "b.c.ent",
        "a.b.c.ent",
        "z.a.b.c.ent",
        "host1",
        "info",
        "deleg",
        "www.deleg",
        "ns1.deleg",
        "big",
        "mid",
        "nx",
        "nx.owa",
        "_autodiscover._tcp",
        "_tcp",
        "_sip._tls",
        "_25._tcp.mx1",
        "_tcp.mx1",
        "mx1",
        "mx2",
        "ns1",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::MX,
        RecordType::TXT,
        RecordType::SRV,
        RecordType::NS,
        RecordType::SOA,
        RecordType::CAA,
        RecordType::PTR,
        RecordType::TLSA,
        RecordType::CNAME,
        RecordType::DS,
    ];
    let mut corpus: Vec<(String, RecordType, Option<u16>)> = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        let name = if l.is_empty() {
            format!("{origin}.")
        } else {
            format!("{l}.{origin}.")
        };
        for (j, t) in types.iter().enumerate() {
            let edns = if (i + j) % 2 == 0 { Some(1232) } else { None };
            corpus.push((name.clone(), *t, edns));
            if (i * 7 + j) % 5 == 0 {
                corpus.push((case_variant(&name, i + j), *t, edns.xor(Some(4096))));
            }
        }
    }
    // Out-of-zone and parent names.
    for n in [
        "example.com.",
        "contoso.test.",
        "test.",
        "xmail.contoso.test.",
    ] {
        corpus.push((n.to_string(), RecordType::A, None));
        corpus.push((n.to_string(), RecordType::SOA, Some(1232)));
    }
    assert!(corpus.len() >= 200, "corpus has {} queries", corpus.len());

    let mut failures = Vec::new();
    let mut tc_seen = 0;
    for (name, rtype, edns) in &corpus {
        let q = query(name, *rtype, *edns);
        let (Some(k), Some(m)) = (udp_raw(knot.addr, &q), udp_raw(mailns.addr, &q)) else {
            failures.push(format!("{name} {rtype} {edns:?}: no answer from one side"));
            continue;
        };
        let (ko, mo) = (outcome(&k), outcome(&m));
        if ko != mo {
            failures.push(format!(
                "{name} {rtype} edns={edns:?}\n  knot:   {ko:?}\n  mailns: {mo:?}"
            ));
        }
        if ko.tc {
            tc_seen += 1;
            let (kt, mt) = (
                outcome(&tcp_raw(knot.addr, &q)),
                outcome(&tcp_raw(mailns.addr, &q)),
            );
            if kt != mt {
                failures.push(format!(
                    "TCP {name} {rtype}\n  knot:   {kt:?}\n  mailns: {mt:?}"
                ));
            }
        }
    }
    assert!(tc_seen >= 2, "the corpus exercises truncation");
    assert!(
        failures.is_empty(),
        "{} of {} queries differ:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}
