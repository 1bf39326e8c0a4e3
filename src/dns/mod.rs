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
pub mod notify;
pub mod tcp;
pub mod udp;
pub mod wire;
pub mod xfr;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::answer::Step;
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

/// Rcode slots counted: 0..=15 from the header, 16 for BADVERS (an extended rcode).
pub const RCODES: usize = 17;
/// Service names whose answers are counted per fallback step (the first this many registered).
pub const SERVICE_SLOTS: usize = 64;
/// Tag of a prebuilt answer that is not a service name's A/AAAA.
pub const UNTAGGED: u16 = u16::MAX;
const TAGS: usize = SERVICE_SLOTS * 2 * Step::ALL.len();

/// The counters of one worker, on their own cache lines: UDP workers never share a counter, so
/// counting costs an uncontended add per query.
#[derive(Debug)]
#[repr(align(128))]
pub struct Counters {
    /// Responses by rcode (see [`RCODES`]).
    pub rcodes: [AtomicU64; RCODES],
    /// Queries answered from the prebuilt table.
    pub fast: AtomicU64,
    /// Queries answered by the general path.
    pub slow: AtomicU64,
    /// Packets dropped without an answer.
    pub dropped: AtomicU64,
    /// Service-name A/AAAA answers by tag (slot, family, fallback step).
    pub tagged: Box<[AtomicU64]>,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            rcodes: Default::default(),
            fast: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            tagged: (0..TAGS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Counters read by the dashboard and metrics: one [`Counters`] per worker (relaxed atomics;
/// exactness across workers is not needed), plus the registry of counted service names.
#[derive(Debug)]
pub struct Stats {
    shards: Box<[Counters]>,
    /// Service names in slot order; a slot, once given, keeps its name for the process's life,
    /// so counters stay monotonic across health changes and reloads.
    names: Mutex<Vec<String>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new(1)
    }
}

impl Stats {
    /// Counters for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self {
            shards: (0..workers.max(1)).map(|_| Counters::default()).collect(),
            names: Mutex::new(Vec::new()),
        }
    }

    /// The counters of UDP worker `i`, or of DNS over TCP for `usize::MAX` (the last shard).
    /// Workers added by a reload share shards round the ring.
    pub fn shard(&self, i: usize) -> &Counters {
        let n = self.shards.len();
        if n == 1 {
            &self.shards[0]
        } else if i == usize::MAX {
            &self.shards[n - 1]
        } else {
            &self.shards[i % (n - 1)]
        }
    }

    /// The slot of service `name`, registering it; None once every slot is taken.
    pub fn slot_of(&self, name: &str) -> Option<u16> {
        let mut names = self
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = names.iter().position(|n| n == name) {
            return Some(i as u16);
        }
        if names.len() >= SERVICE_SLOTS {
            return None;
        }
        names.push(name.to_string());
        Some((names.len() - 1) as u16)
    }

    /// Sum of one counter over every worker.
    pub fn sum(&self, f: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|c| f(c).load(Ordering::Relaxed))
            .sum()
    }

    /// Every non-zero service-answer count: (name, is AAAA, step, count).
    pub fn service_answers(&self) -> Vec<(String, bool, Step, u64)> {
        let names = self
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut out = Vec::new();
        for (slot, name) in names.iter().enumerate() {
            for v6 in [false, true] {
                for step in Step::ALL {
                    let t = usize::from(tag(slot as u16, v6, step));
                    let n = self.sum(|c| &c.tagged[t]);
                    if n > 0 {
                        out.push((name.clone(), v6, step, n));
                    }
                }
            }
        }
        out
    }
}

/// The counter tag of a service name's answer: slot, family and fallback step.
pub fn tag(slot: u16, v6: bool, step: Step) -> u16 {
    (slot * 2 + u16::from(v6)) * Step::ALL.len() as u16 + step.index() as u16
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
    stats: &Counters,
) -> bool {
    handle_parsed(snap, wire::parse(packet), transport, rotation, out, stats)
}

/// True for a zone transfer request (AXFR or IXFR), which DNS over TCP answers with
/// [`xfr::answer`] instead.
pub fn is_transfer(parsed: &Parsed<'_>) -> bool {
    matches!(parsed, Parsed::Query(q) if q.opcode() == 0 && matches!(q.qtype, RecordType::AXFR | RecordType::IXFR))
}

/// [`handle`] for a message already parsed (DNS over TCP parses once to spot transfers).
pub fn handle_parsed(
    snap: &Snapshot,
    parsed: Parsed<'_>,
    transport: Transport,
    rotation: usize,
    out: &mut Vec<u8>,
    stats: &Counters,
) -> bool {
    let q = match parsed {
        Parsed::Query(q) => q,
        Parsed::Error {
            id,
            flags_hi,
            rcode,
        } => {
            wire::encode_error(out, id, flags_hi, rcode, None);
            count_rcode(stats, out, false);
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
    if q.opcode() == 0 && q.edns.is_none_or(|e| e.version == 0) {
        if let Some(t) = snap.fast.answer(&q, limit, rotation, out) {
            stats.fast.fetch_add(1, Ordering::Relaxed);
            if t != UNTAGGED {
                if let Some(c) = stats.tagged.get(usize::from(t)) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
            count_rcode(stats, out, false);
            return true;
        }
    }
    stats.slow.fetch_add(1, Ordering::Relaxed);
    answer_slow(snap, &q, transport, limit, rotation, out);
    count_rcode(stats, out, q.edns.is_some_and(|e| e.version != 0));
    true
}

/// Counts the response in `out` by rcode (its header's four bits, or BADVERS).
#[inline]
fn count_rcode(stats: &Counters, out: &[u8], badvers: bool) {
    let i = if badvers {
        16
    } else {
        out.get(3).map_or(2, |b| usize::from(b & 0x0f))
    };
    stats.rcodes[i].fetch_add(1, Ordering::Relaxed);
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
            Stats::default().shard(0)
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
                    let used_fast = snap.fast.answer(&q, 1232, 0, &mut fast).is_some();
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
        let stats = Counters::default();
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
        assert_eq!(stats.rcodes[0].load(Ordering::Relaxed), 1, "one NOERROR");
        assert_eq!(stats.rcodes[3].load(Ordering::Relaxed), 1, "one NXDOMAIN");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any bytes: no panic; an answer, when given, parses and echoes the ID.
        #[test]
        fn arbitrary_packets_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..300)) {
            let snap = snapshot("z.test", ZONE);
            let mut out = Vec::new();
            for transport in [Transport::Udp, Transport::Tcp] {
                if handle(&snap, &packet, transport, 0, &mut out, Stats::default().shard(0)) {
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
            if handle(&snap, &p, Transport::Udp, 0, &mut out, Stats::default().shard(0)) {
                prop_assert!(Message::from_vec(&out).is_ok(), "undecodable answer to {:?}", p);
            }
        }
    }
}
