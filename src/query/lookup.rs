//! The pure authoritative decision: which zone, which records, which rcode. No I/O.
//!
//! Every lookup walks the query name's ancestors from the apex down as tail slices of its
//! lowercase wire form: O(labels) hash probes for hits and misses alike (RFC 1034 §4.3.2 with
//! RFC 4592 wildcards, RFC 6604 CNAME chains, RFC 2308 negative answers).

use std::borrow::Cow;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rustc_hash::FxHashMap;

use crate::zone::{label_starts, wire_lower, Node, Zone};

/// The longest CNAME chain followed inside a zone before answering with what was found.
const MAX_CHAIN: usize = 8;

/// Every zone served, found by the longest matching origin.
#[derive(Debug, Default)]
pub struct ZoneSet {
    /// The zones answered from, health applied.
    pub zones: Vec<Zone>,
    by_origin: FxHashMap<Box<[u8]>, usize>,
}

impl ZoneSet {
    /// Indexes `zones` by origin.
    pub fn new(zones: Vec<Zone>) -> Self {
        let by_origin = zones
            .iter()
            .enumerate()
            .map(|(i, z)| (z.origin_wire.clone(), i))
            .collect();
        Self { zones, by_origin }
    }

    /// The most specific zone containing `wire` (a lowercase wire-form name).
    pub fn find(&self, wire: &[u8], starts: &[usize]) -> Option<&Zone> {
        starts
            .iter()
            .find_map(|&s| wire.get(s..).and_then(|suffix| self.by_origin.get(suffix)))
            .and_then(|&i| self.zones.get(i))
    }

    /// The origin (lowercase wire form) of the most specific zone containing `wire`, found
    /// without allocating: rate limiting keys negative answers by it.
    pub fn origin_of(&self, wire: &[u8]) -> Option<&[u8]> {
        self.index_of(wire)
            .and_then(|i| self.zones.get(i))
            .map(|z| &*z.origin_wire)
    }

    /// The index in `zones` of the most specific zone containing `wire`, found without
    /// allocating.
    pub fn index_of(&self, wire: &[u8]) -> Option<usize> {
        let mut rest = wire;
        loop {
            if let Some(&i) = self.by_origin.get(rest) {
                return Some(i);
            }
            rest = rest.get(1 + usize::from(next_label(rest)?)..)?;
        }
    }

    /// The index in `zones` of the zone that answers `wire` NXDOMAIN whatever the type: no node
    /// of that name, no wildcard at its closest encloser, no cut above it. Found without
    /// allocating, for the prebuilt negative answers; None for every other outcome, which
    /// [`resolve`] decides.
    pub fn nxdomain_zone(&self, wire: &[u8]) -> Option<usize> {
        let i = self.index_of(wire)?;
        let zone = self.zones.get(i)?;
        let apex_len = zone.origin_wire.len();
        // A node's ancestors up to the apex are nodes too, so walking up from the name, the
        // first that exists is the closest encloser (RFC 4592 §3.3.1).
        let mut at = 0;
        while zone.node(wire.get(at..)?).is_none() {
            if wire.len() - at <= apex_len {
                return None; // the apex itself is missing: only a broken invariant
            }
            at += 1 + usize::from(next_label(wire.get(at..)?)?);
        }
        if at == 0 {
            return None; // the name exists
        }
        let mut source = [0u8; WILDCARD_LEN];
        if zone
            .node(wildcard_of(wire.get(at..)?, &mut source)?)
            .is_some()
        {
            return None;
        }
        // A cut at the encloser or between it and the apex makes it a referral.
        while wire.len() - at > apex_len {
            let suffix = wire.get(at..)?;
            if zone.node(suffix)?.cut {
                return None;
            }
            at += 1 + usize::from(next_label(suffix)?);
        }
        Some(i)
    }
}

/// Room for the wildcard source of any encloser: `*.` and a name of at most 255 bytes.
const WILDCARD_LEN: usize = 2 + 255;

/// The wildcard source `*.encloser` (RFC 4592 §2.1.1), written into `buf` without allocating.
fn wildcard_of<'b>(encloser: &[u8], buf: &'b mut [u8; WILDCARD_LEN]) -> Option<&'b [u8]> {
    let len = 2 + encloser.len();
    buf.get_mut(..2)?.copy_from_slice(&[1, b'*']);
    buf.get_mut(2..len)?.copy_from_slice(encloser);
    buf.get(..len)
}

/// The length of the first label of `wire`; None at the root (or an empty slice).
fn next_label(wire: &[u8]) -> Option<u8> {
    wire.first().copied().filter(|&len| len != 0)
}

/// What to answer: sections and flags, before encoding.
#[derive(Debug, Default)]
pub struct Answer<'z> {
    /// Response code.
    pub rcode: ResponseCode,
    /// AA: true inside our zones, false for referrals and refusals.
    pub authoritative: bool,
    /// Answer section.
    pub answers: Vec<Cow<'z, Record>>,
    /// Authority section (SOA for negative answers, NS for referrals).
    pub authority: Vec<Cow<'z, Record>>,
    /// Additional section (addresses of MX/SRV/NS targets, glue).
    pub additional: Vec<Cow<'z, Record>>,
    /// The additional records are glue a referral needs: if they don't fit, set TC.
    pub additional_required: bool,
}

/// How a name resolves inside one zone.
enum Find<'z> {
    /// The name exists (possibly as an empty non-terminal).
    Exact(&'z Node),
    /// The name does not exist but a wildcard covers it.
    Wildcard(&'z Node),
    /// The name is at or below a zone cut.
    Cut(&'z Node),
    /// The name does not exist.
    NxDomain,
}

/// Answers `qname`/`qtype` from `zones`. `qwire` is the lowercase wire form of `qname`.
/// `minimal_any` answers ANY with one RRset (RFC 8482; used over UDP). `rotation` picks which
/// rotation of a health-driven RRset is answered.
pub fn resolve<'z>(
    zones: &'z ZoneSet,
    qwire: &[u8],
    qtype: RecordType,
    minimal_any: bool,
    rotation: usize,
) -> Answer<'z> {
    let mut starts = Vec::with_capacity(16);
    label_starts(qwire, &mut starts);
    let Some(zone) = zones.find(qwire, &starts) else {
        return Answer {
            rcode: ResponseCode::Refused,
            ..Answer::default()
        };
    };
    let mut ans = Answer {
        authoritative: true,
        ..Answer::default()
    };
    let mut owned: Cow<'_, [u8]> = Cow::Borrowed(qwire);
    for hop in 0..=MAX_CHAIN {
        if hop > 0 {
            label_starts(&owned, &mut starts);
        }
        let Some(found) = find(zone, &owned, &starts, qtype) else {
            // Only a broken invariant gets here (the name lies inside the zone): fail this
            // query, not the worker.
            ans.rcode = ResponseCode::ServFail;
            return ans;
        };
        let (node, wildcard) = match found {
            Find::Cut(cut) => {
                if hop == 0 {
                    ans.authoritative = false;
                }
                referral(zone, cut, &mut ans);
                return ans;
            }
            Find::NxDomain => {
                ans.rcode = ResponseCode::NXDomain;
                ans.authority.push(Cow::Borrowed(&zone.negative_soa));
                return ans;
            }
            Find::Exact(n) => (n, false),
            Find::Wildcard(n) => (n, true),
        };
        // Records of a wildcard are synthesized with the query name as owner (RFC 4592 §3.3.1).
        let owner = match wildcard.then(|| crate::zone::name_from_wire(&owned)) {
            Some(None) => {
                ans.rcode = ResponseCode::ServFail; // only a broken invariant: a query name that parsed
                return ans;
            }
            other => other.flatten(),
        };
        let take = |r: &'z Record| -> Cow<'z, Record> {
            match &owner {
                Some(name) => {
                    let mut r = r.clone();
                    r.name = name.clone();
                    Cow::Owned(r)
                }
                None => Cow::Borrowed(r),
            }
        };

        if qtype == RecordType::ANY {
            let sets = if minimal_any {
                node.rrsets.get(..1).unwrap_or_default()
            } else {
                node.rrsets.as_slice()
            };
            if sets.is_empty() {
                nodata(zone, &mut ans);
            }
            for set in sets {
                ans.answers.extend(set.records.iter().map(take));
            }
            return ans;
        }
        if node.servfail.contains(&qtype) {
            ans.rcode = ResponseCode::ServFail;
            return ans;
        }
        if let Some(set) = node.rrset(qtype) {
            ans.answers.extend(set.rotated(rotation).iter().map(take));
            add_target_addresses(zone, &set.records, &mut ans);
            return ans;
        }
        if qtype != RecordType::CNAME {
            if let Some(r) = node
                .rrset(RecordType::CNAME)
                .and_then(|cname| cname.records.first())
            {
                ans.answers.push(take(r));
                let RData::CNAME(target) = &r.data else {
                    return ans;
                };
                if !zone.origin.zone_of(&target.0) || hop == MAX_CHAIN {
                    return ans; // out of zone: the resolver follows it from here
                }
                let next = wire_lower(&target.0);
                // Every name before the CNAME just pushed: seeing the target again closes a loop.
                if ans.answers.iter().rev().skip(1).any(|a| a.name == target.0) {
                    return ans; // a loop: stop where it closes
                }
                owned = Cow::Owned(next.into_vec());
                continue;
            }
        }
        nodata(zone, &mut ans);
        return ans;
    }
    ans
}

fn nodata<'z>(zone: &'z Zone, ans: &mut Answer<'z>) {
    ans.authority.push(Cow::Borrowed(&zone.negative_soa));
}

/// How `wire` resolves in `zone`, which contains it (None only if it does not).
fn find<'z>(zone: &'z Zone, wire: &[u8], starts: &[usize], qtype: RecordType) -> Option<Find<'z>> {
    let apex_len = zone.origin_wire.len();
    // Index in `starts` of the apex; labels before it are walked from the apex down.
    let apex = starts
        .iter()
        .position(|&s| wire.len().saturating_sub(s) == apex_len)?;
    let suffix = |j: usize| starts.get(j).and_then(|&s| wire.get(s..));
    for j in (0..apex).rev() {
        match zone.node(suffix(j)?) {
            Some(node) if node.cut && !(j == 0 && qtype == RecordType::DS) => {
                return Some(Find::Cut(node))
            }
            Some(_) => {}
            None => {
                // starts[j + 1] is the closest encloser (RFC 4592 §3.3.1).
                let mut source = [0u8; WILDCARD_LEN];
                return Some(match zone.node(wildcard_of(suffix(j + 1)?, &mut source)?) {
                    Some(node) => Find::Wildcard(node),
                    None => Find::NxDomain,
                });
            }
        }
    }
    zone.node(wire).map(Find::Exact)
}

/// A referral: the cut's NS records in authority, their addresses as glue.
fn referral<'z>(zone: &'z Zone, cut: &'z Node, ans: &mut Answer<'z>) {
    let Some(ns) = cut.rrset(RecordType::NS) else {
        return;
    };
    ans.authority.extend(ns.records.iter().map(Cow::Borrowed));
    add_target_addresses(zone, &ns.records, ans);
    ans.additional_required = true;
}

/// In-zone A/AAAA records of MX, SRV and NS targets (RFC 1035 §3.3.9, RFC 2782, RFC 1034 §4.3.2),
/// glue below cuts included.
fn add_target_addresses<'z>(zone: &'z Zone, records: &'z [Record], ans: &mut Answer<'z>) {
    let mut seen: Vec<&Name> = Vec::new();
    for r in records {
        let target = match &r.data {
            RData::MX(mx) => &mx.exchange,
            RData::SRV(srv) => &srv.target,
            RData::NS(ns) => &ns.0,
            _ => return,
        };
        if seen.contains(&target) || !zone.origin.zone_of(target) {
            continue;
        }
        seen.push(target);
        if let Some(node) = zone.node(&wire_lower(target)) {
            for t in [RecordType::A, RecordType::AAAA] {
                if let Some(set) = node.rrset(t) {
                    ans.additional.extend(set.records.iter().map(Cow::Borrowed));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::Name;

    use super::*;
    use crate::dns::tests::{snapshot, ZONE};
    use crate::zone::wire_lower;

    /// The zones of `files` (origin, zone text), in that order.
    fn zone_set(files: &[(&str, &[u8])]) -> ZoneSet {
        use std::io::Write;
        let zones = files
            .iter()
            .map(|(origin, text)| {
                let mut f = tempfile::NamedTempFile::new().unwrap();
                f.write_all(text).unwrap();
                let origin = Name::from_ascii(origin).unwrap();
                crate::zone::load_zone(f.path(), &origin).unwrap().0
            })
            .collect();
        ZoneSet::new(zones)
    }

    fn resolve_name<'z>(
        zones: &'z ZoneSet,
        name: &str,
        t: RecordType,
        minimal: bool,
    ) -> Answer<'z> {
        let wire = wire_lower(&Name::from_ascii(name).unwrap());
        // Leak the wire name for the test: Answer borrows only the zones.
        resolve(zones, Box::leak(wire), t, minimal, 0)
    }

    #[test]
    fn hits_misses_and_refusals() {
        let snap = snapshot("z.test", ZONE);
        let z = &snap.views[0].zones;
        let a = resolve_name(z, "OWA.z.test.", RecordType::A, true);
        assert_eq!(
            (a.rcode, a.authoritative, a.answers.len()),
            (ResponseCode::NoError, true, 2)
        );
        let nx = resolve_name(z, "x.owa.z.test.", RecordType::A, true);
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        assert_eq!(nx.authority[0].ttl, 60, "min(SOA TTL 300, MINIMUM 60)");
        let out = resolve_name(z, "other.test.", RecordType::A, true);
        assert_eq!(
            (out.rcode, out.authoritative),
            (ResponseCode::Refused, false)
        );
    }

    #[test]
    fn mx_answers_carry_target_addresses() {
        let snap = snapshot("z.test", ZONE);
        let mx = resolve_name(&snap.views[0].zones, "z.test.", RecordType::MX, true);
        assert_eq!(mx.additional.len(), 1);
        assert_eq!(mx.additional[0].data.to_string(), "127.0.0.2");
    }

    #[test]
    fn wildcard_synthesis_renames_the_owner() {
        let snap = snapshot("z.test", ZONE);
        let w = resolve_name(&snap.views[0].zones, "a.b.w.z.test.", RecordType::TXT, true);
        assert_eq!(w.answers.len(), 1);
        assert_eq!(w.answers[0].name.to_string(), "a.b.w.z.test.");
        let ent = resolve_name(&snap.views[0].zones, "w.z.test.", RecordType::TXT, true);
        assert!(ent.answers.is_empty());
        assert_eq!(
            ent.rcode,
            ResponseCode::NoError,
            "w is an empty non-terminal"
        );
    }

    #[test]
    fn any_is_minimal_only_when_asked() {
        let snap = snapshot("z.test", ZONE);
        assert_eq!(
            resolve_name(&snap.views[0].zones, "z.test.", RecordType::ANY, true)
                .answers
                .len(),
            1
        );
        assert!(
            resolve_name(&snap.views[0].zones, "z.test.", RecordType::ANY, false)
                .answers
                .len()
                >= 3
        );
    }

    #[test]
    fn nxdomain_is_told_without_a_lookup_exactly_when_the_lookup_says_so() {
        let zones = zone_set(&[
            (
                "t.test",
                b"$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 127.0.0.1\nsub NS ns.sub\n\
                  ns.sub A 127.0.0.9\n*.w TXT w\na.b.c A 127.0.0.2\nchild NS ns\n",
            ),
            (
                "child.t.test",
                b"$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 127.0.0.3\n",
            ),
        ]);
        // Every name of up to three labels from these over each apex, and outside both.
        let labels = ["ns", "sub", "w", "x", "a", "b", "c", "child", "*"];
        let mut names = vec![String::new()];
        let mut level = names.clone();
        for _ in 0..3 {
            level = level
                .iter()
                .flat_map(|n| labels.iter().map(move |l| format!("{l}.{n}")))
                .collect();
            names.extend(level.iter().cloned());
        }
        assert_eq!(names.len(), 1 + 9 + 81 + 729);
        let mut nx = 0;
        for prefix in &names {
            for apex in ["t.test.", "child.t.test.", "other.test."] {
                let name = format!("{prefix}{apex}");
                let wire = wire_lower(&Name::from_ascii(&name).unwrap());
                let told = zones.nxdomain_zone(&wire);
                let resolved = resolve(&zones, &wire, RecordType::A, true, 0);
                let is_nx = resolved.rcode == ResponseCode::NXDomain;
                assert_eq!(told.is_some(), is_nx, "{name}");
                if let Some(i) = told {
                    let soa = &resolved.authority[0];
                    assert_eq!(soa.name, zones.zones[i].origin, "{name}: the zone's SOA");
                    nx += 1;
                }
            }
        }
        assert!(nx > 500, "{nx} NXDOMAIN names told");
    }

    #[test]
    fn the_most_specific_zone_wins() {
        let zones = zone_set(&[
            (
                "t.test",
                b"$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 127.0.0.1\nsub NS ns.elsewhere.test.\n",
            ),
            (
                "sub.t.test",
                b"$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 127.0.0.2\nwww A 127.0.0.3\n",
            ),
        ]);
        let r = resolve_name(&zones, "www.sub.t.test.", RecordType::A, true);
        assert!(r.authoritative, "served from the child zone, not referred");
        assert_eq!(r.answers[0].data.to_string(), "127.0.0.3");
    }
}
