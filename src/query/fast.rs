//! Pre-encoded responses for every name the zones hold, rebuilt once per snapshot.
//!
//! A response depends on the query only through its ID, RD/CD bits, the question's letter case
//! and EDNS. So each (name, type) answer is encoded once with a lowercased question, with and
//! without OPT; per query the server copies it and patches the ID, the flags and the client's own
//! question bytes (same length, so compression pointers stay valid). The NODATA answer of a name
//! is the same for every type it lacks, so one entry serves them all; a name a zone lacks gets
//! the zone's prebuilt NXDOMAIN answer ([`Negative`]).

use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use rustc_hash::FxHashMap;

use super::lookup::{resolve, ZoneSet};
use super::negative::Negative;
use super::wire::{self, Edns, Query};
use crate::health::answer::Step;
use crate::zone::Node;

/// Tag of a prebuilt answer that is not a service name's A/AAAA.
pub const UNTAGGED: u16 = u16::MAX;

/// The counter tag of a service name's answer: slot, family and fallback step. The DNS counters
/// decode it; the table only carries it, so the hot path counts without a name lookup.
pub fn tag(slot: u16, v6: bool, step: Step) -> u16 {
    (slot * 2 + u16::from(v6)) * Step::ALL.len() as u16 + step.index() as u16
}

/// Above this many prebuilt responses, further names are answered by the general path.
const MAX_ENTRIES: usize = 1_000_000;

/// One response, without OPT, and with it where that is more than [`OPT`] appended.
#[derive(Debug)]
pub struct Prebuilt {
    plain: Box<[u8]>,
    /// None: the EDNS response is `plain` with [`OPT`] appended and ARCOUNT one more, as it is
    /// for every response the table holds today. Keeping one copy, not two, halves the table.
    edns: Option<Box<[u8]>>,
}

/// The OPT record of a prebuilt EDNS response: root owner, type 41, our payload size, no
/// extended RCODE, version 0, no flags (DO is set per query), no options.
const OPT: [u8; 11] = {
    let p = wire::MAX_UDP_PAYLOAD.to_be_bytes();
    [0, 0, 41, p[0], p[1], 0, 0, 0, 0, 0, 0]
};

impl Prebuilt {
    /// Writes the response (with OPT or not) into `out`; false where it is longer than `limit`.
    fn write(&self, edns: bool, limit: usize, out: &mut Vec<u8>) -> bool {
        let (bytes, opt): (&[u8], &[u8]) = match (edns, &self.edns) {
            (false, _) => (&self.plain, &[]),
            (true, Some(with)) => (with, &[]),
            (true, None) => (&self.plain, &OPT),
        };
        if bytes.len() + opt.len() > limit {
            return false;
        }
        out.clear();
        out.extend_from_slice(bytes);
        if !opt.is_empty() {
            out.extend_from_slice(opt);
            if let Some(arcount) = out.get_mut(10..12).and_then(|s| s.first_chunk_mut::<2>()) {
                *arcount = u16::from_be_bytes(*arcount).wrapping_add(1).to_be_bytes();
            }
        }
        true
    }
}

#[derive(Debug, Default)]
struct Entry {
    /// Per type, one response per rotation of a health-driven answer (one for static data), and
    /// the counter tag of a service name's A/AAAA answer ([`UNTAGGED`] otherwise).
    by_type: Vec<(RecordType, Vec<Prebuilt>, u16)>,
    /// For every type not in `by_type` (NODATA), where that does not depend on the type.
    other: Option<Prebuilt>,
}

impl Entry {
    /// Its number of prebuilt responses.
    fn len(&self) -> usize {
        self.by_type.iter().map(|(_, v, _)| v.len()).sum::<usize>()
            + usize::from(self.other.is_some())
    }
}

/// The table: lowercase wire name → prebuilt responses.
#[derive(Debug, Default)]
pub struct FastTable {
    names: FxHashMap<Box<[u8]>, Entry>,
    /// The table this one lies over: a name `names` lacks is looked up there. A health change
    /// rebuilds only the names whose answers it can change, over the table of the zones as
    /// loaded, instead of every name of the zone.
    base: Option<Arc<FastTable>>,
    /// Per zone of the zones the table was built from (their order), its NXDOMAIN answer.
    negatives: Vec<Option<Negative>>,
    /// Number of prebuilt responses (the base's included).
    pub len: usize,
}

impl FastTable {
    /// Builds the table for every name in `zones` that is not at or below a zone cut; `tag`
    /// gives the counter tag of a (lowercase wire name, type).
    pub fn build(zones: &ZoneSet, tag: impl Fn(&[u8], RecordType) -> u16) -> Self {
        let mut table = Self {
            negatives: negatives(zones),
            ..Self::default()
        };
        for zone in &zones.zones {
            for (wire, node) in zone.iter_nodes() {
                if table.len >= MAX_ENTRIES {
                    return table;
                }
                if let Some(e) = entry(zones, wire, node, &tag) {
                    table.len += e.len();
                    table.names.insert(wire.clone(), e);
                }
            }
        }
        table
    }

    /// A table over `base` (built from zones that differ from `zones` only at `names`): the
    /// entries of `names` built from `zones`, every other name answered as `base` answers it.
    /// A name that has no entry here (gone, or below a cut) hides the base's.
    pub fn over<'n>(
        base: Arc<FastTable>,
        zones: &ZoneSet,
        names: impl Iterator<Item = &'n [u8]>,
        tag: impl Fn(&[u8], RecordType) -> u16,
    ) -> Self {
        let mut table = Self {
            len: base.len,
            negatives: negatives(zones),
            ..Self::default()
        };
        for wire in names {
            // As `build` does: the last zone holding the name (outside a cut) gives its entry.
            let e = zones
                .zones
                .iter()
                .rev()
                .find_map(|z| z.node(wire).and_then(|node| entry(zones, wire, node, &tag)))
                .unwrap_or_default();
            let hidden = base.names.get(wire).map_or(0, Entry::len);
            table.len = (table.len + e.len()).saturating_sub(hidden);
            table.names.insert(Box::from(wire), e);
        }
        table.base = Some(base);
        table
    }

    /// The response for `q`, written into `out`, if the table has it and it fits `limit`; then
    /// its counter tag. `rotation` picks among the rotations of a health-driven answer;
    /// `zones` are the zones the table was built from, which tell a name they lack.
    #[inline]
    pub fn answer(
        &self,
        zones: &ZoneSet,
        q: &Query<'_>,
        limit: usize,
        rotation: usize,
        out: &mut Vec<u8>,
    ) -> Option<u16> {
        if q.qclass != 1 || is_special(q.qtype) {
            return None;
        }
        let found = match self.names.get(q.qname()) {
            Some(e) => Some(e),
            None => self.base.as_ref().and_then(|b| b.names.get(q.qname())),
        };
        let Some(entry) = found else {
            return self.negative(zones, q, limit, out);
        };
        let (pre, tag) = match entry.by_type.iter().find(|(t, _, _)| *t == q.qtype) {
            Some((_, v, tag)) => (v.get(rotation.checked_rem(v.len())?)?, *tag),
            None => (entry.other.as_ref()?, UNTAGGED),
        };
        if !pre.write(q.edns.is_some(), limit, out) {
            return None;
        }
        // Every prebuilt answer holds a header and a question as long as the client's (the same
        // name, type and class); a None here only sends the query down the general path.
        let head = out.first_chunk_mut::<12>()?;
        [head[0], head[1]] = q.id.to_be_bytes();
        head[2] |= q.flags_hi & wire::RD;
        head[3] |= q.flags_lo & wire::CD;
        out.get_mut(12..12 + q.question.len())?
            .copy_from_slice(q.question);
        if q.edns.is_some_and(|e| e.dnssec_ok) {
            // The DO bit: the high bit of the OPT record's TTL, 4 bytes from the end.
            let at = out.len().checked_sub(4)?;
            *out.get_mut(at)? |= 0x80;
        }
        Some(tag)
    }
}

impl FastTable {
    /// The NXDOMAIN answer to `q`, if its name is one a zone lacks and the answer fits `limit`.
    fn negative(
        &self,
        zones: &ZoneSet,
        q: &Query<'_>,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Option<u16> {
        let zone = zones.nxdomain_zone(q.qname())?;
        let negative = self.negatives.get(zone)?.as_ref()?;
        negative.write(q, limit, out).then_some(UNTAGGED)
    }
}

/// Per zone of `zones`, its prebuilt NXDOMAIN answer.
fn negatives(zones: &ZoneSet) -> Vec<Option<Negative>> {
    zones.zones.iter().map(Negative::build).collect()
}

/// The entry of `wire` (its node `node`); None below a cut.
fn entry(
    zones: &ZoneSet,
    wire: &[u8],
    node: &Node,
    tag: &impl Fn(&[u8], RecordType) -> u16,
) -> Option<Entry> {
    if node.cut {
        return None;
    }
    let mut e = Entry::default();
    // SERVFAIL markers get their own entries: the generic NODATA entry must not answer a type
    // whose policy is SERVFAIL.
    let mut types: Vec<RecordType> = node.rrsets.iter().map(|s| s.rtype).collect();
    types.extend(node.servfail.iter().copied());
    let is_cname = node.rrset(RecordType::CNAME).is_some();
    if is_cname {
        types.extend([RecordType::A, RecordType::AAAA]);
    }
    for t in types {
        let v = variants(zones, wire, t, node.rrset(t), is_cname);
        if !v.is_empty() {
            e.by_type.push((t, v, tag(wire, t)));
        }
    }
    if !is_cname {
        e.other = prebuild(zones, wire, RecordType::NULL, 0);
    }
    Some(e)
}

/// Types never answered from the table: meta queries and ANY (which differs by transport).
fn is_special(t: RecordType) -> bool {
    matches!(
        t,
        RecordType::ANY | RecordType::AXFR | RecordType::IXFR | RecordType::OPT | RecordType::TSIG
    ) || matches!(t, RecordType::Unknown(128..=255))
}

/// Most rotations prebuilt when following a CNAME into a health-driven name.
const MAX_CHAIN_ROTATIONS: usize = 64;

/// Every distinct response for (`wire`, `t`): one per rotation of a health-driven RRset, and for a
/// CNAME (whose target may rotate) until the responses repeat.
fn variants(
    zones: &ZoneSet,
    wire: &[u8],
    t: RecordType,
    set: Option<&crate::zone::RRset>,
    is_cname: bool,
) -> Vec<Prebuilt> {
    let n = set.map_or(0, |s| s.rotations.len());
    if n > 0 {
        return (0..n).filter_map(|r| prebuild(zones, wire, t, r)).collect();
    }
    let Some(first) = prebuild(zones, wire, t, 0) else {
        return Vec::new();
    };
    let mut out = vec![first];
    if is_cname {
        for r in 1..MAX_CHAIN_ROTATIONS {
            match prebuild(zones, wire, t, r) {
                Some(p) if out.first().is_some_and(|f| f.plain != p.plain) => out.push(p),
                _ => break,
            }
        }
    }
    out
}

fn prebuild(zones: &ZoneSet, wire: &[u8], qtype: RecordType, rotation: usize) -> Option<Prebuilt> {
    let question = wire::question_of(wire, qtype);
    let mut q = Query::template(&question, wire, qtype)?;
    let ans = resolve(zones, wire, qtype, true, rotation);
    if ans.rcode == ResponseCode::Refused {
        return None;
    }
    let mut plain = Vec::new();
    wire::encode_answer(&mut plain, &q, ans.rcode, &ans, usize::from(u16::MAX)).ok()?;
    q.edns = Some(Edns {
        payload: wire::MAX_UDP_PAYLOAD,
        version: 0,
        dnssec_ok: false,
    });
    let mut edns = Vec::new();
    wire::encode_answer(&mut edns, &q, ans.rcode, &ans, usize::from(u16::MAX)).ok()?;
    let plain = Prebuilt {
        plain: plain.into(),
        edns: None,
    };
    let mut derived = Vec::new();
    let same = plain.write(true, usize::MAX, &mut derived) && derived == edns;
    Some(Prebuilt {
        edns: (!same).then(|| edns.into()),
        ..plain
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use hickory_proto::rr::Name;

    use super::*;
    use crate::dns::tests::ZONE;
    use crate::zone::load_zone;

    /// Every response of a zone's table is kept once (the EDNS one is derived), and the derived
    /// EDNS response is the one the encoder writes, for each name and type.
    #[test]
    fn the_edns_responses_are_derived_and_equal_the_encoders() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(ZONE.as_bytes()).unwrap();
        let (zone, _) = load_zone(f.path(), &Name::from_ascii("z.test.").unwrap()).unwrap();
        let zones = ZoneSet::new(vec![zone]);
        let table = FastTable::build(&zones, |_, _| UNTAGGED);
        let mut checked = 0;
        for (wire, entry) in &table.names {
            let types = entry.by_type.iter().map(|(t, v, _)| (*t, v.len()));
            for (t, rotations) in types.chain([(RecordType::NULL, 1)]) {
                for r in 0..rotations {
                    let Some(pre) = prebuild(&zones, wire, t, r) else {
                        continue;
                    };
                    assert!(pre.edns.is_none(), "{wire:?} {t}: kept twice");
                    let mut q = query(wire, t);
                    q.edns = Some(Edns {
                        payload: wire::MAX_UDP_PAYLOAD,
                        version: 0,
                        dnssec_ok: false,
                    });
                    let ans = resolve(&zones, wire, t, true, r);
                    let mut encoded = Vec::new();
                    wire::encode_answer(&mut encoded, &q, ans.rcode, &ans, 65535).unwrap();
                    let mut derived = Vec::new();
                    assert!(pre.write(true, 65535, &mut derived));
                    assert_eq!(derived, encoded, "{wire:?} {t}");
                    assert!(!pre.write(true, derived.len() - 1, &mut derived));
                    checked += 1;
                }
            }
        }
        assert!(checked > 10, "{checked}");
    }

    fn query(wire: &[u8], t: RecordType) -> Query<'static> {
        let mut question = wire.to_vec();
        question.extend_from_slice(&u16::from(t).to_be_bytes());
        question.extend_from_slice(&1u16.to_be_bytes());
        let mut q = Query {
            id: 0,
            flags_hi: 0,
            flags_lo: 0,
            question: Vec::leak(question),
            qname_len: wire.len(),
            qname_lower: [0; 256],
            qtype: t,
            qclass: 1,
            edns: None,
            cookie: crate::query::cookie::Received::Absent,
            ecs: crate::query::ecs::Received::Absent,
            signed_by: None,
            packet: &[],
        };
        q.qname_lower[..wire.len()].copy_from_slice(wire);
        q
    }
}
