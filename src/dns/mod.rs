//! The authoritative DNS server: one request handler shared by UDP and TCP, fed from the current
//! [`Snapshot`](crate::state::Snapshot).
//!
//! hickory-proto supplies the wire types, the record encoder and the zone-file record parser.
//! The serving path (transports, lookup, negative answers, truncation) is mailns's own, because
//! each piece of hickory-server's is on the design's list of gaps: a task per UDP packet, O(zone)
//! negative lookups, the wrong negative-answer TTL, AA=1 referrals without glue, OPT dropped on
//! truncation, an uncapped EDNS payload and no TCP connection limit.

pub mod notify;
pub mod rrl;
pub mod tcp;
pub mod udp;
pub mod xfr;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::health::answer::Step;
use crate::query::fast::{tag, UNTAGGED};
use crate::query::wire::{self, Parsed, Query};
use crate::query::{cookie, ecs, lookup};
use crate::state::{Snapshot, ViewSnap};

/// Which transport a query came over: it sets the size limit and ANY handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: responses fit the client's payload (at most 1232), ANY is minimal.
    Udp,
    /// TCP: up to 65535 bytes, ANY is complete.
    Tcp,
}

/// Rcode slots counted: 0..=15 from the header, 16 for BADVERS and 17 for BADCOOKIE (extended
/// rcodes).
pub const RCODES: usize = 18;
/// The counter slot of BADVERS.
pub const SLOT_BADVERS: usize = 16;
/// The counter slot of BADCOOKIE.
pub const SLOT_BADCOOKIE: usize = 17;
/// Service names whose answers are counted per fallback step (the first this many registered).
pub const SERVICE_SLOTS: usize = 64;
const TAGS: usize = SERVICE_SLOTS * 2 * Step::ALL.len();

/// Stands for a counter that does not exist (an index out of range) in [`Stats::sum`]: always 0.
pub static UNCOUNTED: AtomicU64 = AtomicU64::new(0);

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
    /// Packets dropped without an answer (malformed, or themselves responses).
    pub dropped: AtomicU64,
    /// Responses rate limiting dropped.
    pub rrl_dropped: AtomicU64,
    /// Responses rate limiting sent truncated (or as BADCOOKIE) instead.
    pub rrl_slipped: AtomicU64,
    /// Queries with a valid server cookie (never rate limited).
    pub cookies_valid: AtomicU64,
    /// Queries with a client cookie only (or a server cookie that did not verify).
    pub cookies_new: AtomicU64,
    /// Times a worker panicked and was started again.
    pub restarts: AtomicU64,
    /// TCP connections closed at once: every slot taken by a busy connection.
    pub tcp_refused: AtomicU64,
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
            rrl_dropped: AtomicU64::new(0),
            rrl_slipped: AtomicU64::new(0),
            cookies_valid: AtomicU64::new(0),
            cookies_new: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            tcp_refused: AtomicU64::new(0),
            tagged: (0..TAGS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Counters read by the dashboard and metrics: one [`Counters`] per worker (relaxed atomics;
/// exactness across workers is not needed), plus the registry of counted service names.
#[derive(Debug)]
pub struct Stats {
    shards: Box<[Counters]>,
    /// (View, service name) in slot order; a slot, once given, keeps its name for the
    /// process's life, so counters stay monotonic across health changes and reloads. The view
    /// is "" without `[[view]]`.
    names: Mutex<Vec<(String, String)>>,
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
    #[allow(
        clippy::indexing_slicing,
        reason = "k < n, and new() makes at least one shard"
    )]
    pub fn shard(&self, i: usize) -> &Counters {
        let n = self.shards.len();
        let k = if n <= 1 {
            0
        } else if i == usize::MAX {
            n - 1
        } else {
            i % (n - 1)
        };
        &self.shards[k]
    }

    /// The slot of service `name` in `view`, registering it; None once every slot is taken.
    pub fn slot_of(&self, view: &str, name: &str) -> Option<u16> {
        let mut names = self
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = names.iter().position(|(v, n)| v == view && n == name) {
            return Some(i as u16);
        }
        if names.len() >= SERVICE_SLOTS {
            return None;
        }
        names.push((view.to_string(), name.to_string()));
        Some((names.len() - 1) as u16)
    }

    /// Sum of one counter over every worker.
    pub fn sum(&self, f: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|c| f(c).load(Ordering::Relaxed))
            .sum()
    }

    /// Every non-zero service-answer count: (view, name, is AAAA, step, count).
    pub fn service_answers(&self) -> Vec<(String, String, bool, Step, u64)> {
        let names = self
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut out = Vec::new();
        for (slot, (view, name)) in names.iter().enumerate() {
            for v6 in [false, true] {
                for step in Step::ALL {
                    let t = usize::from(tag(slot as u16, v6, step));
                    let n = self.sum(|c| c.tagged.get(t).unwrap_or(&UNCOUNTED));
                    if n > 0 {
                        out.push((view.clone(), name.clone(), v6, step, n));
                    }
                }
            }
        }
        out
    }

    /// A/AAAA answers per (view label, service name), summed over families and steps.
    pub fn service_totals(&self) -> Vec<(String, String, u64)> {
        let mut out: Vec<(String, String, u64)> = Vec::new();
        for (view, name, _, _, n) in self.service_answers() {
            match out.iter_mut().find(|(v, s, _)| *v == view && *s == name) {
                Some(row) => row.2 += n,
                None => out.push((view, name, n)),
            }
        }
        out
    }
}

/// The edge policy in force: response rate limiting and DNS cookies (swapped on reload; the
/// rate limiter's table is kept across reloads that leave its settings alone).
#[derive(Debug, Default)]
pub struct Edge {
    /// Rate limiting of UDP responses; None: off.
    pub rrl: Option<Arc<rrl::Limiter>>,
    /// Cookie secrets; None: cookies off (COOKIE options are ignored, as before RFC 7873).
    pub cookies: Option<cookie::Secrets>,
}

impl Edge {
    /// The edge of `dns`. The rate limiter of `previous` is kept when its settings are
    /// unchanged, so a reload does not hand every client a fresh burst; `fallback` is the cookie
    /// secret when the config names none (made once per process, so reloads keep cookies valid).
    pub fn new(
        dns: &crate::config::DnsConfig,
        previous: Option<&Edge>,
        fallback: cookie::Secret,
    ) -> Self {
        let rrl = dns.rrl.as_ref().map(|settings| {
            previous
                .and_then(|p| p.rrl.as_ref())
                .filter(|l| l.settings() == settings)
                .cloned()
                .unwrap_or_else(|| Arc::new(rrl::Limiter::new(settings.clone())))
        });
        let cookies = dns.cookies.enabled.then(|| cookie::Secrets {
            current: dns.cookies.secret.unwrap_or(fallback),
            previous: dns.cookies.previous,
        });
        Self { rrl, cookies }
    }
}

/// Where a query came from, and when.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// The client's address, v4-mapped IPv6 addresses folded to IPv4.
    pub ip: IpAddr,
    /// UDP or TCP: decides the size limit and whether rate limiting applies.
    pub transport: Transport,
    /// Unix time in seconds (cookie timestamps).
    pub unix: u32,
    /// Nanoseconds on a monotonic clock (rate limiting).
    pub mono: u64,
}

/// What one worker (a UDP thread, or a TCP connection) carries from query to query.
#[derive(Debug)]
pub struct Worker<'a> {
    /// This worker's counter shard.
    pub stats: &'a Counters,
    /// Picks the rotation of health-driven answers; advanced per query.
    pub rotation: usize,
    /// Rate-limited responses so far (every `slip`-th is slipped).
    pub slips: u32,
}

impl<'a> Worker<'a> {
    /// A worker counting into `stats`.
    pub fn new(stats: &'a Counters) -> Self {
        Self {
            stats,
            rotation: 0,
            slips: 0,
        }
    }
}

/// Answers one DNS message. Writes the response into `out` and returns true, or returns false
/// when the packet gets no answer at all (malformed beyond an answer, or rate limited).
pub fn handle(
    snap: &Snapshot,
    edge: &Edge,
    origin: &Origin,
    packet: &[u8],
    worker: &mut Worker<'_>,
    out: &mut Vec<u8>,
) -> bool {
    handle_parsed(snap, edge, origin, wire::parse(packet), worker, out)
}

/// True for a zone transfer request (AXFR or IXFR), which DNS over TCP answers with
/// [`xfr::answer`] instead.
pub fn is_transfer(parsed: &Parsed<'_>) -> bool {
    matches!(parsed, Parsed::Query(q) if q.opcode() == 0 && matches!(q.qtype, RecordType::AXFR | RecordType::IXFR))
}

/// [`handle`] for a message already parsed (DNS over TCP parses once to spot transfers).
///
/// The steps: judge the cookie; choose the view (source address, or a trusted resolver's
/// client subnet); answer (from the view's prebuilt table where it can, leaving room for the
/// options); let rate limiting send, slip or drop the response; add the cookie and ECS options.
pub fn handle_parsed(
    snap: &Snapshot,
    edge: &Edge,
    origin: &Origin,
    parsed: Parsed<'_>,
    worker: &mut Worker<'_>,
    out: &mut Vec<u8>,
) -> bool {
    let stats = worker.stats;
    let q = match parsed {
        Parsed::Query(q) => q,
        Parsed::Error {
            id,
            flags_hi,
            rcode,
        } => {
            wire::encode_error(out, id, flags_hi, &[], rcode, None);
            let view = snap.view_of(origin.ip);
            if rate_limit(view, edge, origin, None, worker, out) == rrl::Decision::Drop {
                return false;
            }
            count_rcode(stats, out, None);
            return true;
        }
        Parsed::Drop => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
    };
    let (verdict, cookie) = match &edge.cookies {
        Some(secrets) if q.edns.is_some() => {
            cookie::judge(secrets, &q.cookie, origin.ip, origin.unix)
        }
        _ => (cookie::Verdict::None, None),
    };
    match verdict {
        cookie::Verdict::Valid => stats.cookies_valid.fetch_add(1, Ordering::Relaxed),
        cookie::Verdict::ClientOnly => stats.cookies_new.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    let horizon = choose_view(snap, origin, &q);
    let options = Options {
        cookie: cookie.as_ref().map(|c| &c.option[..]),
        ecs: horizon.ecs.as_deref(),
    };
    let malformed = verdict == cookie::Verdict::Malformed || horizon.malformed;
    let extended = match horizon.view {
        // RFC 7873 §5.2.2, RFC 7871 §7.1.2.
        _ if malformed => {
            wire::encode_error(
                out,
                q.id,
                q.flags_hi,
                q.question,
                ResponseCode::FormErr,
                q.edns,
            );
            None
        }
        Some(view) => answer(view, &q, origin.transport, options.len(), worker, out),
        None => {
            wire::encode_error(
                out,
                q.id,
                q.flags_hi,
                q.question,
                ResponseCode::Refused,
                q.edns,
            );
            None
        }
    };
    if verdict != cookie::Verdict::Valid {
        match rate_limit(horizon.view, edge, origin, Some(&q), worker, out) {
            rrl::Decision::Send => {}
            rrl::Decision::Drop => return false,
            rrl::Decision::Slip if verdict == cookie::Verdict::ClientOnly => {
                // The client can prove its address: tell it so (RFC 7873 §5.2.3).
                let badcookie = ResponseCode::BADCOOKIE;
                wire::encode_error(out, q.id, q.flags_hi, q.question, badcookie, q.edns);
                options.append(out);
                count_rcode(stats, out, Some(SLOT_BADCOOKIE));
                return true;
            }
            rrl::Decision::Slip => wire::truncate(out, q.question.len(), q.edns.is_some()),
        }
    }
    options.append(out);
    count_rcode(stats, out, extended);
    true
}

/// The EDNS options a response carries.
struct Options<'a> {
    /// The COOKIE option, code and length included.
    cookie: Option<&'a [u8]>,
    /// The ECS option, code and length included.
    ecs: Option<&'a [u8]>,
}

impl Options<'_> {
    /// Their length together: the room the answer leaves for them.
    fn len(&self) -> usize {
        self.cookie.map_or(0, <[u8]>::len) + self.ecs.map_or(0, <[u8]>::len)
    }

    /// Appends them to the OPT record that ends `out` (a response without OPT takes none).
    fn append(&self, out: &mut Vec<u8>) {
        match (self.cookie, self.ecs) {
            (None, None) => {}
            (Some(one), None) | (None, Some(one)) => {
                wire::append_option(out, one);
            }
            (Some(c), Some(e)) => {
                wire::append_option(out, &[c, e].concat());
            }
        }
    }
}

/// The view a query gets, and the ECS option its answer echoes.
struct Horizon<'s> {
    /// None: no view matches the client (REFUSED).
    view: Option<&'s ViewSnap>,
    /// The answer's ECS option, for a query that carried one.
    ecs: Option<Vec<u8>>,
    /// The query's ECS option is malformed (FORMERR).
    malformed: bool,
}

/// Chooses the view of `q` from `origin`: a verified signature with a view's `match_keys` key
/// first, else the source address. With ECS, a trusted resolver's subnet decides and the
/// answer's scope is the prefix inside which every client gets the same view; 0 when the name's
/// answer is the same in every view (the same zone entry answers it everywhere), and 0 for ECS
/// nobody trusts (RFC 7871 §7.2.1: the answer did not depend on it).
fn choose_view<'s>(snap: &'s Snapshot, origin: &Origin, q: &Query<'_>) -> Horizon<'s> {
    let keyed = view_by_key(snap, q, origin.unix);
    let by_source = || match keyed {
        Some(v) => snap.views.get(v),
        None => snap.view_of(origin.ip),
    };
    let subnet = match q.ecs {
        ecs::Received::Absent => {
            return Horizon {
                view: by_source(),
                ecs: None,
                malformed: false,
            }
        }
        ecs::Received::Malformed => {
            return Horizon {
                view: by_source(),
                ecs: None,
                malformed: true,
            }
        }
        ecs::Received::Present(s) => s,
    };
    let choice = match keyed {
        // A verified key decides; the subnet does not matter.
        Some(v) => crate::config::view::Choice {
            view: Some(v),
            scope: 0,
        },
        None => snap.layout.by_subnet(origin.ip, subnet.addr, subnet.source),
    };
    let scope = if choice.scope > 0 && answered_alike(snap, q.qname()) {
        0
    } else {
        choice.scope
    };
    let mut option = Vec::with_capacity(ecs::MAX_OPTION_LEN);
    subnet.write_option(scope, &mut option);
    Horizon {
        view: choice.view.and_then(|v| snap.views.get(v)),
        ecs: Some(option),
        malformed: false,
    }
}

fn view_by_key(snap: &Snapshot, q: &Query<'_>, now: u32) -> Option<usize> {
    let name = q.signed_by.as_ref()?;
    let (view, key) = snap.layout.by_key(name)?;
    let signer = xfr::signer_of(key)?;
    let (_, signed_at, _) = signer.verify_message_byte(q.packet, None, true).ok()?;
    (u64::from(now).abs_diff(signed_at) <= u64::from(xfr::FUDGE)).then_some(view)
}

/// True when every view answers `qname` from the same zone entry (or none has a zone for it),
/// so the answer does not depend on the client.
fn answered_alike(snap: &Snapshot, qname: &[u8]) -> bool {
    let mut sources = snap.views.iter().map(|v| v.source_of(qname));
    let first = sources.next().flatten();
    sources.all(|s| s == first)
}

/// Answers `q` from `view` into `out`, `room` bytes under the transport's limit left for the
/// options. The counter slot of an extended rcode, if the answer has one.
fn answer(
    view: &ViewSnap,
    q: &Query<'_>,
    transport: Transport,
    room: usize,
    worker: &mut Worker<'_>,
    out: &mut Vec<u8>,
) -> Option<usize> {
    let stats = worker.stats;
    worker.rotation = worker.rotation.wrapping_add(1);
    let rotation = worker.rotation;
    let limit = match transport {
        Transport::Udp => q.udp_limit(),
        Transport::Tcp => usize::from(u16::MAX),
    }
    .saturating_sub(room);
    if q.opcode() == 0 && q.edns.is_none_or(|e| e.version == 0) {
        if let Some(t) = view.fast.answer(&view.zones, q, limit, rotation, out) {
            stats.fast.fetch_add(1, Ordering::Relaxed);
            if t != UNTAGGED {
                if let Some(c) = stats.tagged.get(usize::from(t)) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
            return None;
        }
    }
    stats.slow.fetch_add(1, Ordering::Relaxed);
    answer_slow(&view.zones, q, transport, limit, rotation, out);
    q.edns
        .is_some_and(|e| e.version != 0)
        .then_some(SLOT_BADVERS)
}

/// Rate limiting's decision on the response in `out` (answers over TCP, to exempt sources and
/// with rate limiting off always go out). The response's class: the query name for answers
/// and referrals, the zone (of the client's view) for NXDOMAIN and NODATA, one class for every
/// error.
fn rate_limit(
    view: Option<&ViewSnap>,
    edge: &Edge,
    origin: &Origin,
    q: Option<&Query<'_>>,
    worker: &mut Worker<'_>,
    out: &[u8],
) -> rrl::Decision {
    let Some(limiter) = &edge.rrl else {
        return rrl::Decision::Send;
    };
    if origin.transport == Transport::Tcp || limiter.exempt(origin.ip) {
        return rrl::Decision::Send;
    }
    let rcode = out.get(3).map_or(2, |b| b & 0x0f);
    let answers = wire::u16_at(out, 6).unwrap_or(0);
    let authoritative = out.get(2).is_some_and(|b| b & 0x04 != 0);
    let zone_of = |q: &Query<'_>| {
        view.and_then(|v| v.zones.origin_of(q.qname()))
            .unwrap_or(&[])
    };
    let class = match (q, rcode) {
        (Some(q), 0) if answers > 0 || !authoritative => rrl::Class::Answer(q.qname()),
        (Some(q), 0 | 3) => rrl::Class::Negative(zone_of(q)),
        _ => rrl::Class::Error,
    };
    let decision = limiter.decide(origin.ip, class, origin.mono, &mut worker.slips);
    let counter = match decision {
        rrl::Decision::Send => return decision,
        rrl::Decision::Slip => &worker.stats.rrl_slipped,
        rrl::Decision::Drop => &worker.stats.rrl_dropped,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    decision
}

/// Counts the response in `out` by rcode (its header's four bits, or an extended rcode's slot).
#[inline]
fn count_rcode(stats: &Counters, out: &[u8], extended: Option<usize>) {
    let i = extended.unwrap_or_else(|| out.get(3).map_or(2, |b| usize::from(b & 0x0f)));
    if let Some(c) = stats.rcodes.get(i) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn answer_slow(
    zones: &lookup::ZoneSet,
    q: &Query<'_>,
    transport: Transport,
    limit: usize,
    rotation: usize,
    out: &mut Vec<u8>,
) {
    let refuse = |out: &mut Vec<u8>, rcode| {
        wire::encode_error(out, q.id, q.flags_hi, q.question, rcode, q.edns);
    };
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
        zones,
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

    /// [`handle`] with no rate limiting or cookies, from 127.0.0.1 over `transport`.
    pub(crate) fn plain(
        snap: &Snapshot,
        packet: &[u8],
        transport: Transport,
        out: &mut Vec<u8>,
        stats: &Counters,
    ) -> bool {
        let origin = Origin {
            ip: IpAddr::from([127, 0, 0, 1]),
            transport,
            unix: 0,
            mono: 0,
        };
        handle(
            snap,
            &Edge::default(),
            &origin,
            packet,
            &mut Worker::new(stats),
            out,
        )
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
        assert!(plain(
            snap,
            &m.to_vec().unwrap(),
            transport,
            &mut out,
            Stats::default().shard(0)
        ));
        Message::from_vec(&out).unwrap()
    }

    /// Two views: z.test has a file per view, shared.test is in both. (source, query) pairs get
    /// their view's answer, and ECS answers carry the scope the views give them.
    #[test]
    fn views_and_client_subnet() {
        use crate::config::view::{ViewDef, Views};
        let load = |origin: &str, body: &str| {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            write!(
                f,
                "$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 127.0.0.1\n{body}"
            )
            .unwrap();
            load_zone(f.path(), &Name::from_ascii(origin).unwrap())
                .unwrap()
                .0
        };
        let zones = vec![
            load("z.test.", "owa A 127.0.2.1\n"),
            load("z.test.", "owa A 127.0.9.1\n"),
            load("shared.test.", "www A 127.0.3.1\n"),
        ];
        let net = |s: &str| s.parse().unwrap();
        let mut layout = Views::new(
            vec![
                ViewDef {
                    name: "internal".into(),
                    matches: vec![net("127.0.8.0/24")],
                    match_ecs: true,
                    ecs_from: vec![net("127.0.8.53/32")],
                    keys: Vec::new(),
                },
                ViewDef {
                    name: "external".into(),
                    matches: vec![net("127.0.0.0/8")],
                    match_ecs: false,
                    ecs_from: Vec::new(),
                    keys: Vec::new(),
                },
            ],
            false,
        );
        layout.zone_views = vec![vec![0], vec![1], vec![0, 1]];
        let snap = Snapshot::build(
            Arc::new(zones),
            Arc::new(layout),
            Vec::new(),
            Vec::new(),
            |_, _| None,
            None,
        );
        let stats = Counters::default();
        // Answers `name` from `from`, with the ECS option `ecs` (its data) if given.
        let ask = |from: &str, name: &str, ecs: Option<&[u8]>| {
            let mut m = Message::new(7, MessageType::Query, OpCode::Query);
            m.add_query(HQuery::query(
                Name::from_ascii(name).unwrap(),
                RecordType::A,
            ));
            m.edns = Some(Edns::new());
            let mut packet = m.to_vec().unwrap();
            if let Some(data) = ecs {
                let mut opt = vec![0, 8, 0, data.len() as u8];
                opt.extend_from_slice(data);
                assert!(wire::append_option(&mut packet, &opt));
            }
            let origin = Origin {
                ip: from.parse().unwrap(),
                transport: Transport::Udp,
                unix: 0,
                mono: 0,
            };
            let mut out = Vec::new();
            let mut worker = Worker::new(&stats);
            assert!(handle(
                &snap,
                &Edge::default(),
                &origin,
                &packet,
                &mut worker,
                &mut out
            ));
            out
        };
        let address = |out: &[u8]| {
            Message::from_vec(out)
                .unwrap()
                .answers
                .iter()
                .find_map(|r| r.data.ip_addr())
                .map(|ip| ip.to_string())
        };
        let rcode = |out: &[u8]| Message::from_vec(out).unwrap().metadata.response_code;
        // The ECS option ends the response (no cookie here): its SCOPE byte is 4 from the end
        // for a /24 of IPv4 (three address bytes).
        let scope = |out: &[u8]| out[out.len() - 4];

        assert_eq!(
            address(&ask("127.0.8.9", "owa.z.test.", None)).unwrap(),
            "127.0.2.1"
        );
        assert_eq!(
            address(&ask("127.0.0.1", "owa.z.test.", None)).unwrap(),
            "127.0.9.1"
        );
        let nobody = ask("::2", "owa.z.test.", None);
        assert_eq!(
            rcode(&nobody),
            ResponseCode::Refused,
            "no view matches IPv6 clients"
        );

        let internal_ecs: &[u8] = &[0, 1, 24, 0, 127, 0, 8];
        let trusted = ask("127.0.8.53", "owa.z.test.", Some(internal_ecs));
        assert_eq!(address(&trusted).unwrap(), "127.0.2.1");
        assert_eq!(scope(&trusted), 24);
        let away = ask("127.0.8.53", "owa.z.test.", Some(&[0, 1, 24, 0, 127, 0, 5]));
        assert_eq!(address(&away).unwrap(), "127.0.9.1");
        assert_eq!(scope(&away), 21);
        let forged = ask("127.0.0.1", "owa.z.test.", Some(internal_ecs));
        assert_eq!(
            address(&forged).unwrap(),
            "127.0.9.1",
            "ECS from outside is ignored"
        );
        assert_eq!(scope(&forged), 0);
        // The shared zone answers alike in both views: scope 0, whatever the subnet.
        let shared = ask("127.0.8.53", "www.shared.test.", Some(internal_ecs));
        assert_eq!(address(&shared).unwrap(), "127.0.3.1");
        assert_eq!(scope(&shared), 0);
        // Malformed: a bit set past the /23.
        let bad = ask("127.0.8.53", "owa.z.test.", Some(&[0, 1, 23, 0, 127, 0, 9]));
        assert_eq!(rcode(&bad), ResponseCode::FormErr);
        assert!(
            stats.fast.load(Ordering::Relaxed) >= 5,
            "views answer from their prebuilt tables"
        );
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
            "NoPe.Z.TeSt.",
            "a.b.nope.z.test.",
            "x.ns.z.test.",
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
                    let view = &snap.views[0];
                    let used_fast = view.fast.answer(&view.zones, &q, 1232, 0, &mut fast);
                    let mut slow = Vec::new();
                    answer_slow(&view.zones, &q, Transport::Udp, 1232, 0, &mut slow);
                    let nx = name.to_ascii_lowercase().contains("nope") || name.starts_with("x.ns");
                    assert_eq!(
                        used_fast.is_some(),
                        !name.starts_with("x.w"),
                        "{name} {t}: all but the wildcard's answers are prebuilt"
                    );
                    if used_fast.is_none() {
                        continue;
                    }
                    if name != "x.ns.z.test." {
                        assert_eq!(fast, slow, "{name} {t} edns={edns}");
                    }
                    // Below ns, the general encoder points the SOA's MNAME at the question's
                    // "ns.z.test"; the prebuilt answer spells "ns" and points at the apex.
                    // Both say the same.
                    let (f, s) = (
                        Message::from_vec(&fast).unwrap(),
                        Message::from_vec(&slow).unwrap(),
                    );
                    assert_eq!(f, s, "{name} {t} edns={edns}");
                    assert_eq!(
                        f.metadata.response_code == ResponseCode::NXDomain,
                        nx,
                        "{name} {t}"
                    );
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
        for name in ["owa.z.test.", "nope.z.test.", "x.w.z.test."] {
            let mut m = Message::new(1, MessageType::Query, OpCode::Query);
            m.add_query(HQuery::query(
                Name::from_ascii(name).unwrap(),
                RecordType::A,
            ));
            plain(
                &snap,
                &m.to_vec().unwrap(),
                Transport::Udp,
                &mut out,
                &stats,
            );
        }
        assert_eq!(
            stats.fast.load(Ordering::Relaxed),
            2,
            "owa and nope's NXDOMAIN: prebuilt"
        );
        assert_eq!(
            stats.slow.load(Ordering::Relaxed),
            1,
            "a wildcard's answer: general path"
        );
        assert_eq!(stats.rcodes[0].load(Ordering::Relaxed), 2, "two NOERROR");
        assert_eq!(stats.rcodes[3].load(Ordering::Relaxed), 1, "one NXDOMAIN");
    }

    fn query_bytes(name: &str, cookie: Option<&[u8]>) -> Vec<u8> {
        let mut m = Message::new(5, MessageType::Query, OpCode::Query);
        m.add_query(HQuery::query(
            Name::from_ascii(name).unwrap(),
            RecordType::A,
        ));
        let mut e = Edns::new();
        if let Some(c) = cookie {
            e.options_mut()
                .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                    10,
                    c.to_vec(),
                ));
        }
        m.edns = Some(e);
        m.to_vec().unwrap()
    }

    fn edge(rate: u32, slip: u32) -> Edge {
        let mut dns = crate::config::Config::parse(
            std::path::Path::new("m.toml"),
            "[[zone]]\nname = \"z.test\"\nfile = \"z\"\n",
        )
        .unwrap()
        .dns;
        let rrl = dns.rrl.as_mut().unwrap();
        rrl.rate = rate;
        rrl.slip = slip;
        Edge::new(&dns, None, [9; 16])
    }

    fn from(ip: &str) -> Origin {
        Origin {
            ip: ip.parse().unwrap(),
            transport: Transport::Udp,
            unix: 1_800_000_000,
            mono: 1_000_000_000,
        }
    }

    /// The COOKIE option of a response: (client, server).
    fn cookie_of(m: &Message) -> Option<Vec<u8>> {
        m.edns
            .as_ref()?
            .options()
            .as_ref()
            .iter()
            .find_map(|(_, o)| match o {
                hickory_proto::rr::rdata::opt::EdnsOption::Unknown(10, d) => Some(d.clone()),
                _ => None,
            })
    }

    #[test]
    fn refusals_echo_the_question() {
        let snap = snapshot("z.test", ZONE);
        let m = ask(
            &snap,
            "elsewhere.example.",
            RecordType::A,
            true,
            Transport::Udp,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert_eq!(m.queries.len(), 1, "QUERY: 1");
        assert_eq!(m.queries[0].name().to_ascii(), "elsewhere.example.");
    }

    #[test]
    fn rate_limiting_slips_and_drops_but_spares_cookies_tcp_and_loopback() {
        let snap = snapshot("z.test", ZONE);
        let edge = edge(10, 2);
        let stats = Counters::default();
        let mut w = Worker::new(&stats);
        let mut out = Vec::new();
        let q = query_bytes("owa.z.test.", None);
        let (mut full, mut tc, mut none) = (0, 0, 0);
        for _ in 0..100 {
            if !handle(&snap, &edge, &from("198.18.0.1"), &q, &mut w, &mut out) {
                none += 1;
                continue;
            }
            let m = Message::from_vec(&out).unwrap();
            if m.metadata.truncation {
                assert!(m.answers.is_empty() && m.edns.is_some());
                tc += 1;
            } else {
                full += 1;
            }
        }
        assert_eq!((full, tc, none), (10, 45, 45));
        assert_eq!(stats.rrl_dropped.load(Ordering::Relaxed), 45);
        assert_eq!(stats.rrl_slipped.load(Ordering::Relaxed), 45);
        // Over TCP, or from loopback: answered in full.
        let mut tcp = from("198.18.0.1");
        tcp.transport = Transport::Tcp;
        assert!(handle(&snap, &edge, &tcp, &q, &mut w, &mut out));
        assert!(!Message::from_vec(&out).unwrap().metadata.truncation);
        for _ in 0..50 {
            assert!(handle(
                &snap,
                &edge,
                &from("127.0.0.1"),
                &q,
                &mut w,
                &mut out
            ));
        }
        // A client cookie alone: limited, and the slipped replies are BADCOOKIE with a cookie.
        let cq = query_bytes("owa.z.test.", Some(&[1, 2, 3, 4, 5, 6, 7, 8]));
        let mut server = None;
        let mut badcookie = 0;
        for _ in 0..10 {
            if handle(&snap, &edge, &from("198.18.0.1"), &cq, &mut w, &mut out) {
                let m = Message::from_vec(&out).unwrap();
                let c = cookie_of(&m).expect("a cookie in every reply");
                assert_eq!(c.len(), 24);
                assert_eq!(&c[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
                if m.metadata.response_code == ResponseCode::BADCOOKIE {
                    badcookie += 1;
                }
                server = Some(c);
            }
        }
        assert!(badcookie > 0);
        // With the server cookie back: never limited.
        let vq = query_bytes("owa.z.test.", server.as_deref());
        for _ in 0..100 {
            assert!(handle(
                &snap,
                &edge,
                &from("198.18.0.1"),
                &vq,
                &mut w,
                &mut out
            ));
            let m = Message::from_vec(&out).unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert_eq!(m.answers.len(), 2);
        }
        assert_eq!(stats.cookies_valid.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn cookies_on_the_fast_and_general_paths_and_malformed_ones() {
        let snap = snapshot("z.test", ZONE);
        let edge = edge(1000, 2);
        let stats = Counters::default();
        let mut w = Worker::new(&stats);
        let mut out = Vec::new();
        for name in ["owa.z.test.", "nope.z.test.", "z.test."] {
            let q = query_bytes(name, Some(&[7; 8]));
            assert!(handle(
                &snap,
                &edge,
                &from("198.18.0.2"),
                &q,
                &mut w,
                &mut out
            ));
            let m = Message::from_vec(&out).unwrap();
            assert_eq!(cookie_of(&m).unwrap().len(), 24, "{name}");
        }
        let bad = query_bytes("owa.z.test.", Some(&[7; 5]));
        assert!(handle(
            &snap,
            &edge,
            &from("198.18.0.2"),
            &bad,
            &mut w,
            &mut out
        ));
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(m.queries.len(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any bytes: no panic; an answer, when given, parses and echoes the ID.
        #[test]
        fn arbitrary_packets_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..300)) {
            let snap = snapshot("z.test", ZONE);
            let mut out = Vec::new();
            for transport in [Transport::Udp, Transport::Tcp] {
                if plain(&snap, &packet, transport, &mut out, Stats::default().shard(0)) {
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
            if plain(&snap, &p, Transport::Udp, &mut out, Stats::default().shard(0)) {
                prop_assert!(Message::from_vec(&out).is_ok(), "undecodable answer to {:?}", p);
            }
        }
    }
}
