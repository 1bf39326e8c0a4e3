//! Answers on the wire, from the real binary, checked with a raw socket + hickory's parser, with
//! hickory's client, and with dig/kdig.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};

const Z: &str = "mail.contoso.test";

fn start() -> Mailns {
    Mailns::start(Z, "contoso.zone", &["big.inc"])
}

fn n(label: &str) -> String {
    if label.is_empty() {
        format!("{Z}.")
    } else {
        format!("{label}.{Z}.")
    }
}

fn rdatas(rs: &[Record], t: RecordType) -> Vec<String> {
    let mut v: Vec<String> = rs
        .iter()
        .filter(|r| r.record_type() == t)
        .map(|r| r.data.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn answers_every_record_type() {
    let s = start();
    let a = udp(s.addr, &n("owa"), RecordType::A, Some(1232));
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(a.metadata.authoritative);
    assert!(!a.metadata.recursion_available);
    assert_eq!(
        rdatas(&a.answers, RecordType::A),
        ["127.0.1.1", "127.0.1.2", "127.0.1.3"]
    );
    assert!(a.answers.iter().all(|r| r.ttl == 30));

    let aaaa = udp(s.addr, &n("owa"), RecordType::AAAA, None);
    assert_eq!(rdatas(&aaaa.answers, RecordType::AAAA), ["::1"]);

    let mx = udp(s.addr, &n(""), RecordType::MX, Some(1232));
    assert_eq!(
        rdatas(&mx.answers, RecordType::MX),
        [
            "10 mx1.mail.contoso.test.",
            "20 mx2.mail.contoso.test.",
            "30 mx.elsewhere.test."
        ]
    );
    // Additional: in-zone addresses of the MX targets, nothing for the out-of-zone one.
    assert_eq!(
        rdatas(&mx.additionals, RecordType::A),
        ["127.0.2.1", "127.0.2.2"]
    );
    assert_eq!(rdatas(&mx.additionals, RecordType::AAAA), ["::1"]);

    let srv = udp(
        s.addr,
        &n("_autodiscover._tcp"),
        RecordType::SRV,
        Some(1232),
    );
    assert_eq!(
        rdatas(&srv.answers, RecordType::SRV),
        ["0 0 443 autodiscover.mail.contoso.test."]
    );
    assert_eq!(
        rdatas(&srv.additionals, RecordType::A),
        ["127.0.1.1", "127.0.1.2"]
    );

    let txt = udp(s.addr, &n("info"), RecordType::TXT, None);
    let RData::TXT(t) = &txt.answers[0].data else {
        panic!("TXT expected")
    };
    let strings: Vec<String> = t
        .txt_data
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(strings, ["first string", "second; with a semicolon"]);

    let ns = udp(s.addr, &n(""), RecordType::NS, Some(1232));
    assert_eq!(
        rdatas(&ns.answers, RecordType::NS),
        ["ns1.mail.contoso.test.", "ns2.elsewhere.test."]
    );
    assert_eq!(rdatas(&ns.additionals, RecordType::A), ["127.0.0.53"]);

    let soa = udp(s.addr, &n(""), RecordType::SOA, None);
    assert_eq!(
        rdatas(&soa.answers, RecordType::SOA),
        ["ns1.mail.contoso.test. hostmaster.mail.contoso.test. 2026112101 7200 3600 1209600 300"]
    );
    assert_eq!(soa.answers[0].ttl, 3600);

    let caa = udp(s.addr, &n(""), RecordType::CAA, None);
    assert_eq!(caa.answers.len(), 1);
    assert!(
        caa.answers[0].data.to_string().contains("ca.example.test"),
        "{:?}",
        caa.answers
    );

    let ptr = udp(s.addr, &n("host1"), RecordType::PTR, None);
    assert_eq!(
        rdatas(&ptr.answers, RecordType::PTR),
        ["owa.mail.contoso.test."]
    );

    let tlsa = udp(s.addr, &n("_25._tcp.mx1"), RecordType::TLSA, None);
    assert_eq!(tlsa.answers.len(), 1);
    let RData::TLSA(t) = &tlsa.answers[0].data else {
        panic!("TLSA expected")
    };
    assert_eq!(t.cert_data[0], 0x01);
    assert_eq!(t.cert_data.len(), 32);

    let cname = udp(s.addr, &n("webmail"), RecordType::CNAME, None);
    assert_eq!(
        rdatas(&cname.answers, RecordType::CNAME),
        ["owa.mail.contoso.test."]
    );
    assert_eq!(cname.answers.len(), 1, "a CNAME query is not followed");
}

#[test]
fn cname_chains_are_followed_inside_the_zone() {
    let s = start();
    let a = udp(s.addr, &n("legacy"), RecordType::A, None);
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    let owners: Vec<String> = a.answers.iter().map(|r| r.name.to_string()).collect();
    assert_eq!(owners[0], n("legacy"));
    assert_eq!(owners[1], n("webmail"));
    assert_eq!(
        rdatas(&a.answers, RecordType::A),
        ["127.0.1.1", "127.0.1.2", "127.0.1.3"]
    );

    // Out of zone: the CNAME alone, the resolver goes on.
    let ext = udp(s.addr, &n("ext"), RecordType::A, None);
    assert_eq!(ext.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        rdatas(&ext.answers, RecordType::CNAME),
        ["www.elsewhere.test."]
    );
    assert_eq!(ext.answers.len(), 1);

    // Dangling in-zone target: NXDOMAIN with the CNAME and the SOA (RFC 6604).
    let d = udp(s.addr, &n("dangling"), RecordType::A, None);
    assert_eq!(d.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        rdatas(&d.answers, RecordType::CNAME),
        ["nothere.mail.contoso.test."]
    );
    assert_eq!(d.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn negative_answers_carry_the_soa_with_the_rfc2308_ttl() {
    let s = start();
    for (name, rtype, rcode) in [
        (n("nx"), RecordType::A, ResponseCode::NXDomain),
        (n("nx.owa"), RecordType::A, ResponseCode::NXDomain),
        (n("owa"), RecordType::MX, ResponseCode::NoError),
        (n("c.ent"), RecordType::A, ResponseCode::NoError), // empty non-terminal
        (n("ent"), RecordType::TXT, ResponseCode::NoError),
    ] {
        for edns in [None, Some(1232)] {
            let m = udp(s.addr, &name, rtype, edns);
            assert_eq!(m.metadata.response_code, rcode, "{name} {rtype}");
            assert!(m.metadata.authoritative, "{name} {rtype}");
            assert!(m.answers.is_empty(), "{name} {rtype}");
            assert_eq!(m.authorities.len(), 1, "{name} {rtype}");
            let soa = &m.authorities[0];
            assert_eq!(soa.record_type(), RecordType::SOA);
            assert_eq!(soa.name.to_string(), n(""));
            // SOA TTL 3600, MINIMUM 300: negative answers are cached min(3600, 300).
            assert_eq!(soa.ttl, 300, "{name} {rtype}");
        }
    }
}

#[test]
fn wildcards_follow_rfc4592() {
    let s = start();
    let m = udp(s.addr, &n("anything.wild"), RecordType::A, None);
    assert_eq!(rdatas(&m.answers, RecordType::A), ["127.0.3.1"]);
    assert_eq!(
        m.answers[0].name.to_string(),
        n("anything.wild"),
        "owner is the query name"
    );
    let deep = udp(s.addr, &n("a.b.wild"), RecordType::TXT, None);
    assert_eq!(rdatas(&deep.answers, RecordType::TXT), ["wildcard"]);
    // The wildcard has no MX: NODATA.
    let nodata = udp(s.addr, &n("x.wild"), RecordType::MX, None);
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    // An existing name is never covered by the wildcard beside it ...
    let sub = udp(s.addr, &n("sub.wild"), RecordType::TXT, None);
    assert!(sub.answers.is_empty());
    assert_eq!(sub.metadata.response_code, ResponseCode::NoError);
    // ... nor are names below it (closest encloser sub.wild has no wildcard child).
    let below = udp(s.addr, &n("x.sub.wild"), RecordType::A, None);
    assert_eq!(below.metadata.response_code, ResponseCode::NXDomain);
    // A wildcard CNAME is synthesized and followed.
    let cn = udp(s.addr, &n("foo.cn"), RecordType::A, None);
    assert_eq!(cn.answers[0].name.to_string(), n("foo.cn"));
    assert_eq!(
        rdatas(&cn.answers, RecordType::A),
        ["127.0.1.1", "127.0.1.2", "127.0.1.3"]
    );
}

#[test]
fn out_of_zone_is_refused_without_recursion() {
    let s = start();
    for name in ["example.com.", "contoso.test.", "test.", "."] {
        let mut q = Message::from_vec(&query(name, RecordType::A, None)).unwrap();
        q.metadata.recursion_desired = true;
        let raw = udp_raw(s.addr, &q.to_vec().unwrap()).expect("answer");
        let m = Message::from_vec(&raw).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
        assert!(!m.metadata.authoritative, "{name}");
        assert!(!m.metadata.recursion_available, "{name}");
        assert!(m.metadata.recursion_desired, "RD is copied");
        assert!(m.answers.is_empty());
    }
}

#[test]
fn referrals_have_aa_clear_and_glue() {
    let s = start();
    for name in [n("www.deleg"), n("deleg"), n("ns1.deleg")] {
        for t in [RecordType::A, RecordType::NS] {
            let m = udp(s.addr, &name, t, Some(1232));
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{name} {t}"
            );
            assert!(
                !m.metadata.authoritative,
                "{name} {t}: referral must have AA=0"
            );
            assert!(m.answers.is_empty(), "{name} {t}");
            assert_eq!(
                rdatas(&m.authorities, RecordType::NS),
                ["ns.elsewhere.test.", "ns1.deleg.mail.contoso.test."]
            );
            assert_eq!(rdatas(&m.additionals, RecordType::A), ["127.0.5.1"], "glue");
        }
    }
    // DS at the cut belongs to the parent side: authoritative NODATA.
    let ds = udp(s.addr, &n("deleg"), RecordType::DS, None);
    assert!(ds.metadata.authoritative);
    assert_eq!(ds.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn edns_payload_is_capped_and_truncation_keeps_opt() {
    let s = start();
    // 40 A records (~690 bytes): too big for 512 without EDNS ...
    let plain = udp(s.addr, &n("mid"), RecordType::A, None);
    assert!(plain.metadata.truncation);
    assert!(plain.edns.is_none());
    // ... fine with EDNS.
    let e = udp(s.addr, &n("mid"), RecordType::A, Some(1232));
    assert!(!e.metadata.truncation);
    assert_eq!(e.answers.len(), 40);
    assert_eq!(e.edns.as_ref().unwrap().max_payload(), 1232);
    // 120 records (~1.9 kB): the client offers 4096, mailns uses at most 1232: TC, OPT kept.
    let raw = udp_raw(s.addr, &query(&n("big"), RecordType::A, Some(4096))).unwrap();
    assert!(raw.len() <= 1232, "{} bytes", raw.len());
    let big = Message::from_vec(&raw).unwrap();
    assert!(big.metadata.truncation);
    let opt = big
        .edns
        .as_ref()
        .expect("OPT on a truncated reply (RFC 6891 §7)");
    assert_eq!(opt.max_payload(), 1232);
    // The client retries over TCP and gets everything.
    let full = tcp(s.addr, &n("big"), RecordType::A, Some(4096));
    assert!(!full.metadata.truncation);
    assert_eq!(full.answers.len(), 120);
    // A client offering less than 512 is treated as 512.
    let small = udp_raw(s.addr, &query(&n("owa"), RecordType::A, Some(100))).unwrap();
    assert!(!Message::from_vec(&small).unwrap().metadata.truncation);
}

#[test]
fn any_is_minimal_over_udp_and_complete_over_tcp() {
    let s = start();
    let u = udp(s.addr, &n(""), RecordType::ANY, Some(1232));
    let types: std::collections::BTreeSet<_> = u.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(
        types.len(),
        1,
        "RFC 8482: one RRset over UDP, got {types:?}"
    );
    let t = tcp(s.addr, &n(""), RecordType::ANY, None);
    let types: std::collections::BTreeSet<_> = t.answers.iter().map(|r| r.record_type()).collect();
    for want in [
        RecordType::SOA,
        RecordType::NS,
        RecordType::MX,
        RecordType::TXT,
        RecordType::CAA,
    ] {
        assert!(types.contains(&want), "{want} missing from {types:?}");
    }
}

#[test]
fn question_case_is_echoed_as_received() {
    let s = start();
    let q = query("OwA.MaIl.CoNtOsO.TeSt.", RecordType::A, None);
    for raw in [udp_raw(s.addr, &q).unwrap(), tcp_raw(s.addr, &q)] {
        assert_eq!(
            &raw[12..12 + q.len() - 12],
            &q[12..],
            "question bytes echoed"
        );
        let m = Message::from_vec(&raw).unwrap();
        assert_eq!(m.answers.len(), 3);
        assert_eq!(m.answers[0].name.to_ascii(), "OwA.MaIl.CoNtOsO.TeSt.");
    }
    let nx = query("NoPe.MAIL.contoso.test.", RecordType::A, Some(1232));
    let raw = udp_raw(s.addr, &nx).unwrap();
    let qlen = nx.len() - 12 - 11; // minus header and OPT
    assert_eq!(&raw[12..12 + qlen], &nx[12..12 + qlen]);
}

#[test]
fn opcodes_malformed_packets_and_badvers() {
    let s = start();
    let ok = query(&n("owa"), RecordType::A, None);
    // NOTIFY (4), STATUS (2), UPDATE (5), unassigned (3): NOTIMP.
    for opcode in [2u8, 3, 4, 5] {
        let mut p = ok.clone();
        p[2] = (p[2] & 0x87) | (opcode << 3);
        let m = Message::from_vec(&udp_raw(s.addr, &p).unwrap()).unwrap();
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NotImp,
            "opcode {opcode}"
        );
    }
    // Two questions: FORMERR.
    let mut two = ok.clone();
    two[5] = 2;
    two.extend_from_slice(&ok[12..]);
    let m = Message::from_vec(&udp_raw(s.addr, &two).unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Cut short inside the question: FORMERR, same ID.
    let short = &ok[..ok.len() - 3];
    let raw = udp_raw(s.addr, short).expect("an answer");
    assert_eq!(&raw[..2], &ok[..2]);
    assert_eq!(
        Message::from_vec(&raw).unwrap().metadata.response_code,
        ResponseCode::FormErr
    );
    // A response (QR=1) and a runt packet get no answer.
    let mut resp = ok.clone();
    resp[2] |= 0x80;
    assert!(udp_raw(s.addr, &resp).is_none());
    assert!(udp_raw(s.addr, &[1, 2, 3]).is_none());
    // EDNS version 1: BADVERS (extended rcode 16), with OPT.
    let mut v1 = query(&n("owa"), RecordType::A, Some(1232));
    let opt = v1.len() - 11;
    v1[opt + 6] = 1;
    let m = Message::from_vec(&udp_raw(s.addr, &v1).unwrap()).unwrap();
    // 16 is BADVERS with OPT (hickory names the number BADSIG, its TSIG meaning).
    assert_eq!(u16::from(m.metadata.response_code), 16);
    assert!(m.edns.is_some());
    // 2,000 random and mangled packets: the server stays up and keeps answering.
    let mut seed = 0x2545_f491_u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..2000 {
        let mut p = if i % 2 == 0 {
            ok.clone()
        } else {
            vec![0u8; (rnd() % 80) as usize]
        };
        for _ in 0..(1 + rnd() % 6) {
            if !p.is_empty() {
                let at = (rnd() as usize) % p.len();
                p[at] = rnd() as u8;
            }
        }
        sock.send_to(&p, s.addr).unwrap();
    }
    let m = udp(s.addr, &n("owa"), RecordType::A, None);
    assert_eq!(m.answers.len(), 3);
    let m = tcp(s.addr, &n("owa"), RecordType::A, None);
    assert_eq!(m.answers.len(), 3);
}

#[test]
fn tcp_pipelining_idle_timeout_and_connection_limit() {
    let s = start();
    // Two queries in one write: two answers, in order.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let q1 = query(&n("owa"), RecordType::A, None);
    let q2 = query(&n("nx"), RecordType::A, None);
    let mut both = Vec::new();
    for q in [&q1, &q2] {
        both.extend_from_slice(&(q.len() as u16).to_be_bytes());
        both.extend_from_slice(q);
    }
    c.write_all(&both).unwrap();
    for (q, rcode) in [(&q1, ResponseCode::NoError), (&q2, ResponseCode::NXDomain)] {
        let mut len = [0u8; 2];
        c.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf[..2], &q[..2]);
        assert_eq!(
            Message::from_vec(&buf).unwrap().metadata.response_code,
            rcode
        );
    }
    // Idle timeout (2 s in the test config): the server closes the connection.
    let started = Instant::now();
    let mut b = [0u8; 1];
    assert_eq!(c.read(&mut b).unwrap_or(0), 0);
    assert!(started.elapsed() < Duration::from_secs(5));

    // The limit is 8. Idle connections make room: a 9th evicts the one idle the longest.
    let ask = |c: &mut TcpStream| -> bool {
        let mut f = (q1.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(&q1);
        let _ = c.write_all(&f);
        let mut len = [0u8; 2];
        if c.read_exact(&mut len).is_err() {
            return false;
        }
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        c.read_exact(&mut buf).is_ok()
    };
    let connect = || {
        let c = TcpStream::connect(s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c
    };
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..8 {
        let mut h = connect();
        assert!(ask(&mut h), "each of the 8 is answered");
        idle.push(h);
    }
    let mut ninth = connect();
    assert!(ask(&mut ninth), "the 9th is served");
    assert_eq!(
        idle[0].read(&mut b).unwrap_or(0),
        0,
        "the longest idle was closed for it"
    );
    idle.push(ninth);
    // The server marks a connection idle (evictable) just after writing its answer, so the
    // client can hold the ninth's answer a moment before the ninth counts as idle. Were a busy
    // newcomer to arrive in that moment, it would find no idle one to evict and be refused,
    // and the one meant to be refused would take the ninth's slot. Nothing outside shows the
    // mark, so the test gives the server that moment.
    std::thread::sleep(Duration::from_millis(200));

    // Busy connections (in the middle of a message) are not evicted: with 8 of them, one more
    // is closed at once; each busy one is closed by the server after the I/O timeout (1 s).
    let busy: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut c = connect();
            c.write_all(&[0, 12, 1, 2]).unwrap();
            c
        })
        .collect();
    // Connected right behind the busy ones (the accept loop admits in connect order), well
    // inside their 1 s: a slow box must not let a busy one time out and free a slot first.
    let mut refused = connect();
    let started = Instant::now();
    let _ = refused.write_all(&[0, 12]);
    assert_eq!(
        refused.read(&mut b).unwrap_or(0),
        0,
        "all busy: closed at once"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    for c in &mut idle[1..] {
        assert_eq!(
            c.read(&mut b).unwrap_or(0),
            0,
            "idle ones make room for busy ones"
        );
    }
    for mut c in busy {
        assert_eq!(
            c.read(&mut b).unwrap_or(0),
            0,
            "a stalled message is cut off"
        );
    }
    // The freed slots are taken by new connections.
    wait_for(Duration::from_secs(5), "a freed slot is reused", || {
        ask(&mut connect())
    });
}

#[test]
fn dig_and_kdig_see_the_same_answers() {
    let s = start();
    let short = dig(s.addr, &["+norec", "+short", &n("owa"), "A"]);
    let mut got: Vec<&str> = short.lines().collect();
    got.sort();
    assert_eq!(got, ["127.0.1.1", "127.0.1.2", "127.0.1.3"]);

    let full = dig(s.addr, &["+norec", &n("nx"), "A"]);
    assert!(full.contains("status: NXDOMAIN"), "{full}");
    assert!(full.contains("flags: qr aa;"), "{full}");
    assert!(full.contains("udp: 1232"), "{full}");

    // dig retries over TCP on TC and gets all 120 records.
    let big = dig(s.addr, &["+norec", "+short", &n("big"), "A"]);
    assert_eq!(big.lines().count(), 120, "{big}");
    let tcp = dig(s.addr, &["+norec", "+tcp", "+short", &n(""), "MX"]);
    assert_eq!(tcp.lines().count(), 3, "{tcp}");

    let k = kdig(s.addr, &["+norec", &n("_autodiscover._tcp"), "SRV"]);
    assert!(k.contains("status: NOERROR"), "{k}");
    assert!(k.contains("Flags: qr aa;"), "{k}");
    assert!(k.contains("0 0 443 autodiscover.mail.contoso.test."), "{k}");
    let k = kdig(s.addr, &["+norec", "+tcp", "example.com", "A"]);
    assert!(k.contains("status: REFUSED"), "{k}");
}

#[test]
fn hickory_client_queries() {
    use hickory_net::client::{Client, ClientHandle};
    use hickory_net::runtime::TokioRuntimeProvider;
    use hickory_net::udp::UdpClientStream;
    use hickory_proto::rr::DNSClass;

    let s = start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = UdpClientStream::builder(s.addr, TokioRuntimeProvider::default()).build();
        let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
        tokio::spawn(bg);
        let r = client
            .query(name(&n("autodiscover")), DNSClass::IN, RecordType::A)
            .await
            .unwrap();
        assert_eq!(
            rdatas(&r.answers, RecordType::A),
            ["127.0.1.1", "127.0.1.2"]
        );
        let r = client
            .query(name(&n("")), DNSClass::IN, RecordType::MX)
            .await
            .unwrap();
        assert_eq!(r.answers.len(), 3);
        let r = client
            .query(name(&n("missing")), DNSClass::IN, RecordType::A)
            .await
            .unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    });
}

#[test]
fn no_log_line_per_query() {
    let s = start();
    for _ in 0..50 {
        udp(s.addr, &n("owa"), RecordType::A, None);
        udp(s.addr, &n("nx"), RecordType::A, None);
    }
    let lines: Vec<String> = s.log.try_iter().collect();
    assert!(lines.is_empty(), "unexpected log lines: {lines:?}");
}

#[test]
fn several_zones_ipv6_and_a_clean_exit_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["contoso.zone", "big.inc"] {
        std::fs::copy(data_dir().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("second.zone"),
        "$TTL 60\n@ SOA ns1 h 7 2 3 4 5\n@ NS ns1\nns1 A 127.0.0.53\nowa A 127.0.9.1\n",
    )
    .unwrap();
    let config = "[dns]\nlisten = [\"127.0.0.1:0\", \"[::1]:0\"]\nudp_workers = 1\n\n\
        [[zone]]\nname = \"mail.contoso.test\"\nfile = \"contoso.zone\"\n\n\
        [[zone]]\nname = \"mail.fabrikam.test\"\nfile = \"second.zone\"\n";
    let s = Mailns::start_config(dir, config);
    assert_eq!(s.addrs.len(), 2);
    let v6 = s.addrs[1];
    assert!(v6.is_ipv6());
    for addr in [s.addr, v6] {
        let a = udp(addr, "owa.mail.fabrikam.test.", RecordType::A, None);
        assert_eq!(rdatas(&a.answers, RecordType::A), ["127.0.9.1"]);
        let b = tcp(addr, &n("owa"), RecordType::A, None);
        assert_eq!(b.answers.len(), 3);
        let soa = udp(addr, "mail.fabrikam.test.", RecordType::SOA, None);
        assert!(
            soa.answers[0].data.to_string().contains(" 7 "),
            "{:?}",
            soa.answers
        );
    }
    let started = Instant::now();
    let status = s.stop();
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
