//! Differential test: the same zone file served by Knot DNS (started here on a loopback port) and
//! by mailns must give the same rcode, AA and TC flags, the same answer RRsets, the same authority
//! section for negative answers and referrals (SOA TTL included), and the same addresses in the
//! additional section, for every query of a corpus of several hundred.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use common::knot::{outcome, Knot};
use common::*;
use hickory_proto::rr::RecordType;

fn start_knot(origin: &str, files: &[&str]) -> Knot {
    let src = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(data_dir().join(f), src.path().join(f)).unwrap();
    }
    Knot::start(src.path(), &[(origin.to_string(), files[0].to_string())])
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

/// The zone and query on which Knot 3.2 spins and stops answering (found by the differential
/// fuzz, tests/differential_gen.rs): mailns answers it whole, with the MX RRset and whole
/// additional RRsets only.
#[test]
fn mailns_answers_the_query_knot_32_hangs_on() {
    let mailns = Mailns::start("z19.Diff.test", "knot32_mx_hang.zone", &[]);
    for payload in [Some(1232), Some(65535), None] {
        let m = udp(mailns.addr, "Mail.z19.Diff.test.", RecordType::MX, payload);
        assert_eq!(
            m.metadata.response_code,
            hickory_proto::op::ResponseCode::NoError
        );
        if !m.metadata.truncation {
            assert_eq!(m.answers.len(), 37, "payload {payload:?}");
        }
    }
    let m = tcp(
        mailns.addr,
        "Mail.z19.Diff.test.",
        RecordType::MX,
        Some(1232),
    );
    assert_eq!(m.answers.len(), 37);
}
