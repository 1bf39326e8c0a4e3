//! The authoritative DNS server: one request handler shared by UDP and TCP, fed from the current
//! [`Snapshot`](crate::state::Snapshot).
//!
//! hickory-proto supplies the wire types, the record encoder and the zone-file record parser.
//! The serving path (transports, lookup, negative answers, truncation) is mailns's own, because
//! each piece of hickory-server's is on the design's list of gaps: a task per UDP packet, O(zone)
//! negative lookups, the wrong negative-answer TTL, AA=1 referrals without glue, OPT dropped on
//! truncation, an uncapped EDNS payload and no TCP connection limit.

pub mod fast;
pub mod lookup;
pub mod tcp;
pub mod udp;
pub mod wire;

use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::state::Snapshot;
use wire::{Parsed, Query};

/// Which transport a query came over: it sets the size limit and ANY handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: responses fit the client's payload (at most 1232), ANY is minimal.
    Udp,
    /// TCP: up to 65535 bytes, ANY is complete.
    Tcp,
}

/// Counters read by the dashboard and metrics (relaxed atomics; exactness is not needed).
#[derive(Debug, Default)]
pub struct Stats {
    /// Queries answered from the prebuilt table.
    pub fast: AtomicU64,
    /// Queries answered by the general path.
    pub slow: AtomicU64,
    /// Packets dropped without an answer.
    pub dropped: AtomicU64,
    /// FORMERR answers.
    pub formerr: AtomicU64,
}

/// Answers one DNS message. Writes the response into `out` and returns true, or returns false
/// when the packet gets no answer at all. `rotation` (a per-worker counter) picks the rotation of
/// health-driven answers.
pub fn handle(
    snap: &Snapshot,
    packet: &[u8],
    transport: Transport,
    rotation: usize,
    out: &mut Vec<u8>,
    stats: &Stats,
) -> bool {
    let q = match wire::parse(packet) {
        Parsed::Query(q) => q,
        Parsed::Error {
            id,
            flags_hi,
            rcode,
        } => {
            stats.formerr.fetch_add(1, Ordering::Relaxed);
            wire::encode_error(out, id, flags_hi, rcode, None);
            return true;
        }
        Parsed::Drop => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
    };
    let limit = match transport {
        Transport::Udp => q.udp_limit(),
        Transport::Tcp => usize::from(u16::MAX),
    };
    if q.opcode() == 0
        && q.edns.is_none_or(|e| e.version == 0)
        && snap.fast.answer(&q, limit, rotation, out)
    {
        stats.fast.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    stats.slow.fetch_add(1, Ordering::Relaxed);
    answer_slow(snap, &q, transport, limit, rotation, out);
    true
}

fn answer_slow(
    snap: &Snapshot,
    q: &Query<'_>,
    transport: Transport,
    limit: usize,
    rotation: usize,
    out: &mut Vec<u8>,
) {
    let refuse =
        |out: &mut Vec<u8>, rcode| wire::encode_error(out, q.id, q.flags_hi, rcode, q.edns);
    if q.opcode() != 0 {
        return refuse(out, ResponseCode::NotImp);
    }
    if let Some(e) = q.edns {
        if e.version != 0 {
            return refuse(out, ResponseCode::BADVERS);
        }
    }
    if q.qclass != 1 {
        return refuse(out, ResponseCode::Refused);
    }
    match q.qtype {
        // Zone transfers are not served yet; meta types are not questions.
        RecordType::AXFR | RecordType::IXFR => return refuse(out, ResponseCode::Refused),
        RecordType::OPT | RecordType::TSIG => return refuse(out, ResponseCode::FormErr),
        _ => {}
    }
    let ans = lookup::resolve(
        &snap.zones,
        q.qname(),
        q.qtype,
        transport == Transport::Udp,
        rotation,
    );
    if ans.rcode == ResponseCode::Refused && !ans.authoritative {
        return refuse(out, ResponseCode::Refused);
    }
    if wire::encode_answer(out, q, ans.rcode, &ans, limit).is_err() {
        refuse(out, ResponseCode::ServFail);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery};
    use hickory_proto::rr::Name;
    use proptest::prelude::*;

    use super::*;
    use crate::zone::load_zone;

    /// A snapshot of `zone` (text) loaded as `origin`.
    pub(crate) fn snapshot(origin: &str, zone: &str) -> Snapshot {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(zone.as_bytes()).unwrap();
        let (z, _) = load_zone(f.path(), &Name::from_ascii(origin).unwrap()).unwrap();
        Snapshot::new(vec![z])
    }

    pub(crate) const ZONE: &str = "$ORIGIN z.test.\n$TTL 300\n@ SOA ns h 1 2 3 4 60\n@ NS ns\nns A 127.0.0.1\n\
        @ MX 10 mx\nmx A 127.0.0.2\nowa 30 A 127.0.1.1\nowa 30 A 127.0.1.2\na CNAME b\nb CNAME a\n*.w TXT \"w\"\n";

    pub(crate) fn ask(
        snap: &Snapshot,
        name: &str,
        t: RecordType,
        edns: bool,
        transport: Transport,
    ) -> Message {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), t));
        if edns {
            m.edns = Some(Edns::new());
        }
        let mut out = Vec::new();
        assert!(handle(
            snap,
            &m.to_vec().unwrap(),
            transport,
            0,
            &mut out,
            &Stats::default()
        ));
        Message::from_vec(&out).unwrap()
    }

    #[test]
    fn fast_and_general_paths_give_the_same_bytes() {
        let snap = snapshot("z.test", ZONE);
        for name in [
            "owa.z.test.",
            "z.test.",
            "mx.z.test.",
            "ns.z.test.",
            "nope.z.test.",
            "x.w.z.test.",
        ] {
            for t in [
                RecordType::A,
                RecordType::MX,
                RecordType::NS,
                RecordType::TXT,
                RecordType::SOA,
            ] {
                for edns in [false, true] {
                    let mut m = Message::new(9, MessageType::Query, OpCode::Query);
                    m.metadata.recursion_desired = true;
                    m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), t));
                    if edns {
                        m.edns = Some(Edns::new());
                    }
                    let packet = m.to_vec().unwrap();
                    let Parsed::Query(q) = wire::parse(&packet) else {
                        panic!("parse")
                    };
                    let mut fast = Vec::new();
                    let used_fast = snap.fast.answer(&q, 1232, 0, &mut fast);
                    let mut slow = Vec::new();
                    answer_slow(&snap, &q, Transport::Udp, 1232, 0, &mut slow);
                    if used_fast {
                        assert_eq!(fast, slow, "{name} {t} edns={edns}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_cname_loop_ends() {
        let snap = snapshot("z.test", ZONE);
        let m = ask(&snap, "a.z.test.", RecordType::A, false, Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 2);
    }

    #[test]
    fn stats_count_fast_and_slow_paths() {
        let snap = snapshot("z.test", ZONE);
        let stats = Stats::default();
        let mut out = Vec::new();
        for name in ["owa.z.test.", "nope.z.test."] {
            let mut m = Message::new(1, MessageType::Query, OpCode::Query);
            m.add_query(HQuery::query(
                Name::from_ascii(name).unwrap(),
                RecordType::A,
            ));
            handle(
                &snap,
                &m.to_vec().unwrap(),
                Transport::Udp,
                0,
                &mut out,
                &stats,
            );
        }
        assert_eq!(stats.fast.load(Ordering::Relaxed), 1, "owa: prebuilt");
        assert_eq!(
            stats.slow.load(Ordering::Relaxed),
            1,
            "nope: NXDOMAIN, general path"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any bytes: no panic; an answer, when given, parses and echoes the ID.
        #[test]
        fn arbitrary_packets_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..300)) {
            let snap = snapshot("z.test", ZONE);
            let mut out = Vec::new();
            for transport in [Transport::Udp, Transport::Tcp] {
                if handle(&snap, &packet, transport, 0, &mut out, &Stats::default()) {
                    prop_assert_eq!(&out[..2], &packet[..2]);
                    prop_assert!(out.len() >= 12);
                    if transport == Transport::Udp {
                        prop_assert!(out.len() <= 1232);
                    }
                }
            }
        }

        /// A valid query mangled at one byte: still no panic, and every answer decodes.
        #[test]
        fn mangled_queries_get_decodable_answers(at in 0usize..40, byte in any::<u8>(), t in 0u16..300) {
            let snap = snapshot("z.test", ZONE);
            let mut m = Message::new(3, MessageType::Query, OpCode::Query);
            m.add_query(HQuery::query(Name::from_ascii("owa.z.test.").unwrap(), RecordType::from(t)));
            m.edns = Some(Edns::new());
            let mut p = m.to_vec().unwrap();
            let at = at % p.len();
            p[at] = byte;
            let mut out = Vec::new();
            if handle(&snap, &p, Transport::Udp, 0, &mut out, &Stats::default()) {
                prop_assert!(Message::from_vec(&out).is_ok(), "undecodable answer to {:?}", p);
            }
        }
    }
}
