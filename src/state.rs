//! The snapshot: everything the query path reads, immutable, swapped atomically.
//!
//! Readers `load()` it once per query without locks. The health engine builds a new one on every
//! change: the static zones with each service name's A/AAAA RRsets replaced by what health
//! selects, MX/SRV records pointing at dead targets left out, and the prebuilt answers rebuilt.
//! So the hot path always reads a prebuilt answer, health-driven or not.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::config::view::Views;
use crate::health::answer::{rotate, rotation_count, Selection, Step};
use crate::health::view::{BackendView, Publish, ServiceView, View};
use crate::query::fast::{tag, FastTable, UNTAGGED};
use crate::query::lookup::ZoneSet;
use crate::zone::{wire_lower, Node, RRset, Zone};

/// Most rotations kept per health-driven RRset.
const MAX_ROTATIONS: usize = 64;

/// Immutable serving state.
#[derive(Debug)]
pub struct Snapshot {
    /// Per view (config order; one without `[[view]]`): what its clients are answered.
    pub views: Vec<ViewSnap>,
    /// Who gets which view, and which zones each view serves.
    pub layout: Arc<Views>,
    /// The zones as loaded from their files (config order).
    pub static_zones: Arc<Vec<Zone>>,
    /// What health selected per service name and zone.
    pub services: Vec<ServiceView>,
    /// Per relay (config order), per backend (the relay's order): what the relay may do with it.
    /// Empty before health runs: every backend then counts as usable.
    pub relays: Vec<Vec<BackendView>>,
    /// When this snapshot was built.
    pub built_at: SystemTime,
    /// Per view: what its prebuilt answers are built over, from `static_zones`. Built once
    /// per zone load and shared by the snapshots health publishes from then on.
    bases: Arc<Vec<ViewBase>>,
}

/// Lowercase wire name → the names whose answers include its records: owners of a CNAME, MX,
/// SRV or NS pointing at it (a CNAME answer holds the target's RRset; MX, SRV and NS answers
/// hold the target's addresses).
type Referrers = FxHashMap<Box<[u8]>, Vec<Box<[u8]>>>;

/// One view's prebuilt answers for the zones as loaded, and who depends on whom in them.
#[derive(Debug)]
struct ViewBase {
    fast: Arc<FastTable>,
    referrers: Referrers,
}

/// What one view's clients are answered.
#[derive(Debug, Default)]
pub struct ViewSnap {
    /// The view's zones as answered (health applied), for the general lookup path.
    pub zones: ZoneSet,
    /// Prebuilt responses, for the hot path.
    pub fast: FastTable,
    /// Per zone of `zones` (its order): the index of the static zone it derives from.
    pub sources: Vec<usize>,
}

impl Snapshot {
    /// A snapshot of static zones in one view, with no health applied.
    pub fn new(zones: Vec<Zone>) -> Self {
        let layout = Views::single(zones.len());
        Self::build(
            Arc::new(zones),
            Arc::new(layout),
            Vec::new(),
            Vec::new(),
            |_, _| None,
            None,
        )
    }

    /// Builds a snapshot: `services` applied to `static_zones`, then each view's zones and
    /// prebuilt answers. A service name's prebuilt A/AAAA answers carry its counter slot
    /// (`slot_of(view, name)`, None: not counted per step), so the hot path counts them without
    /// a lookup. A zone in several views is derived once and shared by each.
    ///
    /// The prebuilt answers of the names health cannot change come from `previous` when it
    /// was built from the same zones and views (a health change), else they are built here (a
    /// start or a reload).
    pub fn build(
        static_zones: Arc<Vec<Zone>>,
        layout: Arc<Views>,
        services: Vec<ServiceView>,
        relays: Vec<Vec<BackendView>>,
        slot_of: impl Fn(&str, &Name) -> Option<u16>,
        previous: Option<&Snapshot>,
    ) -> Self {
        let bases = match previous {
            Some(p)
                if Arc::ptr_eq(&p.static_zones, &static_zones)
                    && Arc::ptr_eq(&p.layout, &layout) =>
            {
                Arc::clone(&p.bases)
            }
            _ => Arc::new(
                (0..layout.defs.len())
                    .map(|v| ViewBase::build(&static_zones, &layout, v))
                    .collect(),
            ),
        };
        let derived: Vec<Zone> = static_zones
            .iter()
            .enumerate()
            .map(|(i, z)| derive(z, services.iter().filter(|v| v.zone == i)))
            .collect();
        let views = layout
            .defs
            .iter()
            .enumerate()
            .map(|(v, def)| {
                let label = if layout.implicit {
                    ""
                } else {
                    def.name.as_str()
                };
                let base = bases.get(v);
                build_view(&derived, &layout, v, base, &services, |n| slot_of(label, n))
            })
            .collect();
        Self {
            views,
            layout,
            static_zones,
            services,
            relays,
            built_at: SystemTime::now(),
            bases,
        }
    }

    /// The view a client at `ip` gets (None: no view matches it).
    pub fn view_of(&self, ip: IpAddr) -> Option<&ViewSnap> {
        self.views.get(self.layout.by_source(ip)?)
    }

    /// The first view: the only one of a config without `[[view]]`.
    pub fn first(&self) -> Option<&ViewSnap> {
        self.views.first()
    }
}

impl ViewSnap {
    /// The static zone (index) that answers `qname` (lowercase wire form) in this view.
    pub fn source_of(&self, qname: &[u8]) -> Option<usize> {
        let origin = self.zones.origin_of(qname)?;
        let i = self
            .zones
            .zones
            .iter()
            .position(|z| *z.origin_wire == *origin)?;
        self.sources.get(i).copied()
    }
}

/// View `v`'s zones (from the derived ones) and prebuilt answers, service names tagged.
fn build_view(
    derived: &[Zone],
    layout: &Views,
    v: usize,
    base: Option<&ViewBase>,
    services: &[ServiceView],
    slot_of: impl Fn(&Name) -> Option<u16>,
) -> ViewSnap {
    let sources = view_sources(layout, v);
    let zones = zone_set(derived, &sources);
    let tags = service_tags(services, &sources, slot_of);
    let tag = |wire: &[u8], t| tags.get(&(Box::from(wire), t)).copied().unwrap_or(UNTAGGED);
    let fast = match base {
        Some(base) => {
            let changed = changed_names(&zones, &base.referrers);
            FastTable::over(
                Arc::clone(&base.fast),
                &zones,
                changed.iter().map(|w| &**w),
                tag,
            )
        }
        None => FastTable::build(&zones, tag),
    };
    ViewSnap {
        zones,
        fast,
        sources,
    }
}

/// The counter tags of the service names' A/AAAA answers in a view serving `sources`.
fn service_tags(
    services: &[ServiceView],
    sources: &[usize],
    slot_of: impl Fn(&Name) -> Option<u16>,
) -> FxHashMap<(Box<[u8]>, RecordType), u16> {
    services
        .iter()
        .filter(|s| sources.contains(&s.zone))
        .filter_map(|s| Some((s, slot_of(&s.name)?)))
        .flat_map(|(s, slot)| {
            let wire = wire_lower(&s.name);
            [
                (RecordType::A, &s.a, false),
                (RecordType::AAAA, &s.aaaa, true),
            ]
            .into_iter()
            .filter_map(move |(t, sel, v6)| {
                let tag = tag(slot, v6, sel.as_ref()?.step);
                Some(((wire.clone(), t), tag))
            })
        })
        .collect()
}

/// The zones (indexes) view `v` serves.
fn view_sources(layout: &Views, v: usize) -> Vec<usize> {
    layout
        .zone_views
        .iter()
        .enumerate()
        .filter(|(_, vs)| vs.contains(&v))
        .map(|(i, _)| i)
        .collect()
}

fn zone_set(zones: &[Zone], sources: &[usize]) -> ZoneSet {
    ZoneSet::new(
        sources
            .iter()
            .filter_map(|&i| zones.get(i).cloned())
            .collect(),
    )
}

impl ViewBase {
    /// View `v`'s base, from the zones as loaded.
    fn build(static_zones: &[Zone], layout: &Views, v: usize) -> Self {
        let zones = zone_set(static_zones, &view_sources(layout, v));
        let mut referrers: Referrers = FxHashMap::default();
        for zone in &zones.zones {
            for (wire, node) in zone.iter_nodes() {
                for r in node.rrsets.iter().flat_map(|s| &s.records) {
                    let target = match &r.data {
                        RData::CNAME(c) => &c.0,
                        RData::MX(mx) => &mx.exchange,
                        RData::SRV(srv) => &srv.target,
                        RData::NS(ns) => &ns.0,
                        _ => continue,
                    };
                    referrers
                        .entry(wire_lower(target))
                        .or_default()
                        .push(wire.clone());
                }
            }
        }
        Self {
            fast: Arc::new(FastTable::build(&zones, |_, _| UNTAGGED)),
            referrers,
        }
    }
}

/// The names whose prebuilt answers differ from the base's: those in an overlay, and every
/// name whose answer includes one of them, through any number of CNAME, MX, SRV or NS steps
/// (more than needed at times; never fewer).
fn changed_names(zones: &ZoneSet, referrers: &Referrers) -> FxHashSet<Box<[u8]>> {
    let mut changed: FxHashSet<Box<[u8]>> = FxHashSet::default();
    let mut todo: Vec<Box<[u8]>> = zones
        .zones
        .iter()
        .flat_map(|z| z.overlay.keys().cloned())
        .collect();
    while let Some(wire) = todo.pop() {
        if let Some(rs) = referrers.get(&wire) {
            todo.extend(rs.iter().filter(|r| !changed.contains(*r)).cloned());
        }
        changed.insert(wire);
    }
    changed
}

/// The shared, swappable snapshot.
pub type Store = Arc<ArcSwap<Snapshot>>;

/// Puts the health engine's views in force: each becomes the snapshot in the store.
pub struct Publisher {
    store: Store,
    slot_of: SlotOf,
    /// A reload's loaded snapshot, not served (it lacks health): the first publish over its
    /// zones shares its prebuilt answers instead of building them again (see [`Self::stage`]).
    staged: ArcSwapOption<Snapshot>,
}

/// Gives a (view, service name) its counter slot (the DNS counters register them as they
/// come; the view is "" without `[[view]]`).
type SlotOf = Box<dyn Fn(&str, &Name) -> Option<u16> + Send + Sync>;

impl Publisher {
    /// Publishes into `store`, tagging service names' answers with `slot_of`'s slots.
    pub fn new(
        store: Store,
        slot_of: impl Fn(&str, &Name) -> Option<u16> + Send + Sync + 'static,
    ) -> Self {
        Self {
            store,
            slot_of: Box::new(slot_of),
            staged: ArcSwapOption::empty(),
        }
    }

    /// Hands over a loaded snapshot whose zones the next views will carry (a reload's). The
    /// serving snapshot still holds the old zones, so without this the first publish would
    /// build every name's prebuilt answers again: at 100,000 records, a third of a second.
    pub fn stage(&self, loaded: Snapshot) {
        self.staged.store(Some(Arc::new(loaded)));
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publish for Publisher {
    fn publish(&self, view: View) {
        let staged = self.staged.load();
        let previous = match staged.as_ref() {
            Some(s) if Arc::ptr_eq(&s.static_zones, &view.static_zones) => Arc::clone(s),
            _ => self.store.load_full(),
        };
        let snap = Snapshot::build(
            view.static_zones,
            view.layout,
            view.services,
            view.relays,
            &self.slot_of,
            Some(&previous),
        );
        self.store.store(Arc::new(snap));
    }
}

/// `zone` as answered under `views` (those of its service names): the nodes health changes,
/// copied into the zone's overlay, over the loaded nodes it shares. Every service name's node
/// goes into the overlay, changed or not, so the overlay's names are those whose prebuilt
/// answers must be built again ([`build_view`]).
fn derive<'v>(zone: &Zone, views: impl Iterator<Item = &'v ServiceView>) -> Zone {
    let mine: Vec<&ServiceView> = views.collect();
    if mine.is_empty() {
        return zone.clone();
    }
    let mut overlay: FxHashMap<Box<[u8]>, Node> = FxHashMap::default();
    for v in &mine {
        let wire = wire_lower(&v.name);
        let Some(node) = zone.node(&wire) else {
            continue;
        };
        let node = overlay.entry(wire).or_insert_with(|| node.clone());
        for (rtype, sel) in [(RecordType::A, &v.a), (RecordType::AAAA, &v.aaaa)] {
            if let Some(sel) = sel {
                apply(node, rtype, sel, v.ttl, v.cap);
            }
        }
    }
    // MX and SRV: leave out records whose target is a service name with nothing healthy, as long
    // as one target is healthy (or not health-driven at all).
    let healthy = |target: &Name| {
        mine.iter()
            .find(|v| v.name == *target)
            .is_none_or(|v| v.has_healthy())
    };
    let up = |r: &Record| match &r.data {
        RData::MX(mx) => healthy(&mx.exchange),
        RData::SRV(srv) => healthy(&srv.target),
        _ => true,
    };
    // Copied only where a record goes: most MX and SRV sets of a big zone stay as they are.
    let kept = |set: &RRset| -> Option<Vec<Record>> {
        if !matches!(set.rtype, RecordType::MX | RecordType::SRV) || set.records.iter().all(up) {
            return None;
        }
        let keep: Vec<Record> = set.records.iter().filter(|r| up(r)).cloned().collect();
        (!keep.is_empty()).then_some(keep)
    };
    for (wire, node) in zone.iter_nodes() {
        for set in &node.rrsets {
            let Some(keep) = kept(set) else { continue };
            // By type: a service name's node in the overlay has its RRsets in another order.
            let copy = overlay.entry(wire.clone()).or_insert_with(|| node.clone());
            if let Some(s) = copy.rrsets.iter_mut().find(|s| s.rtype == set.rtype) {
                s.records = keep;
            }
        }
    }
    let mut z = zone.clone();
    z.overlay = Arc::new(overlay);
    z
}

/// Replaces `node`'s `rtype` RRset with the selection's rotations.
fn apply(node: &mut Node, rtype: RecordType, sel: &Selection, ttl: u32, cap: usize) {
    let old = node.rrset(rtype);
    let ttl = old
        .and_then(|s| s.records.first())
        .map_or(ttl, |r| r.ttl.min(ttl));
    let (line, file) = old.map_or((0, Arc::from(std::path::Path::new(""))), |s| {
        (s.line, s.file.clone())
    });
    node.rrsets.retain(|s| s.rtype != rtype);
    node.servfail.retain(|t| *t != rtype);
    match sel.step {
        Step::Servfail => node.servfail.push(rtype),
        Step::Empty => {}
        _ => {
            let n = rotation_count(&sel.tiers).min(MAX_ROTATIONS);
            let rotations: Vec<Vec<Record>> = (0..n)
                .map(|r| {
                    rotate(&sel.tiers, r, cap)
                        .into_iter()
                        .filter(|ip| ip.is_ipv4() == (rtype == RecordType::A))
                        .map(|ip| address_record(&node.name, ttl, ip))
                        .collect()
                })
                .collect();
            let Some(first) = rotations.first().filter(|r| !r.is_empty()) else {
                return;
            };
            node.rrsets.push(RRset {
                rtype,
                records: first.clone(),
                line,
                file,
                rotations: if n > 1 { rotations } else { Vec::new() },
            });
        }
    }
}

fn address_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v) => RData::A(A(v)),
        IpAddr::V6(v) => RData::AAAA(AAAA(v)),
    };
    Record::from_rdata(name.clone(), ttl, data)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::str::FromStr;

    use hickory_proto::op::{Message, Query};

    use super::*;
    use crate::health::answer::Selection;
    use crate::query::wire::{parse, Parsed};
    use crate::zone::load_zone;

    /// Service names behind CNAMEs (one chained), MX and SRV targets, NS glue, a wildcard, and
    /// names nothing health-driven touches.
    const ZONE: &str = "$ORIGIN z.test.\n$TTL 300\n@ SOA ns h 1 2 3 4 60\n@ NS ns\nns A 127.0.0.1\n\
        @ MX 10 mail\n@ MX 20 mx2\nmail A 127.0.2.1\nmail A 127.0.2.2\nmx2 A 127.0.2.3\n\
        owa 30 A 127.0.1.1\nowa 30 A 127.0.1.2\nowa 30 A 127.0.1.3\nowa 30 AAAA ::1\n\
        autodiscover 30 A 127.0.1.1\nautodiscover 30 A 127.0.1.2\n\
        _autodiscover._tcp SRV 0 0 443 autodiscover\nalias CNAME owa\nalias2 CNAME alias\n\
        child NS ns.child\nns.child A 127.0.3.1\n*.w TXT \"w\"\nplain A 127.0.4.1\nplain TXT \"p\"\n\
        outlook A 127.0.1.1\n";

    fn sel(step: Step, ips: &[&str]) -> Selection {
        Selection {
            step,
            tiers: vec![ips.iter().map(|ip| (ip.parse().unwrap(), 1)).collect()],
            preferred_down: false,
            wake_at: None,
            why: Vec::new(),
        }
    }

    fn service(name: &str, a: Option<Selection>) -> ServiceView {
        ServiceView {
            name: Name::from_ascii(name).unwrap(),
            zone: 0,
            a,
            aaaa: None,
            ttl: 20,
            cap: 8,
        }
    }

    fn services() -> Vec<ServiceView> {
        vec![
            service(
                "owa.z.test.",
                Some(sel(Step::Healthy, &["127.0.1.1", "127.0.1.3"])),
            ),
            service("mail.z.test.", Some(sel(Step::Empty, &[]))),
            service(
                "autodiscover.z.test.",
                Some(sel(Step::OtherSites, &["127.0.1.2"])),
            ),
            service("outlook.z.test.", Some(sel(Step::Servfail, &[]))),
        ]
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    /// A health change built over the snapshot of the zones as loaded answers every name and
    /// type from its prebuilt table exactly as a snapshot built from scratch does, and the
    /// names health cannot change come from the shared table.
    #[test]
    fn a_health_change_over_the_loaded_zones_answers_as_a_full_build() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(ZONE.as_bytes()).unwrap();
        let (zone, _) = load_zone(f.path(), &Name::from_ascii("z.test.").unwrap()).unwrap();
        let names: Vec<Name> = zone.iter_nodes().map(|(_, n)| n.name.clone()).collect();
        let zones = Arc::new(vec![zone]);
        let layout = Arc::new(Views::single(1));
        let slot = |_: &str, n: &Name| Some(n.num_labels() as u16);
        let loaded = Snapshot::build(
            zones.clone(),
            layout.clone(),
            Vec::new(),
            Vec::new(),
            slot,
            None,
        );
        let over = Snapshot::build(
            zones.clone(),
            layout.clone(),
            services(),
            Vec::new(),
            slot,
            Some(&loaded),
        );
        assert!(
            Arc::ptr_eq(&over.bases, &loaded.bases),
            "the base is shared"
        );
        // The reference: every name's answers built from the derived zones, no base.
        let tags = service_tags(&over.services, &[0], |n| slot("", n));
        let full = FastTable::build(&over.views[0].zones, |w, t| {
            tags.get(&(Box::from(w), t)).copied().unwrap_or(UNTAGGED)
        });
        let extra = ["x.w.z.test.", "nx.z.test.", "a.owa.z.test."].map(String::from);
        let mut compared = 0;
        for name in names.iter().map(ToString::to_string).chain(extra) {
            for t in ["A", "AAAA", "MX", "SRV", "CNAME", "TXT", "NS", "SOA", "CAA"] {
                let packet = query(&name, RecordType::from_str(t).unwrap());
                let Parsed::Query(q) = parse(&packet) else {
                    panic!("{name} {t}");
                };
                for rotation in 0..4 {
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    let x =
                        over.views[0]
                            .fast
                            .answer(&over.views[0].zones, &q, 1232, rotation, &mut a);
                    let y = full.answer(&over.views[0].zones, &q, 1232, rotation, &mut b);
                    assert_eq!((x, &a), (y, &b), "{name} {t} rotation {rotation}");
                    compared += usize::from(x.is_some());
                }
            }
        }
        assert!(compared > 100, "{compared} prebuilt answers compared");
        // What is built again: the service names, the apex (its MX left mail out), and the
        // names whose answers hold them (CNAME, chained CNAME, SRV).
        let changed = changed_names(&over.views[0].zones, &loaded.bases[0].referrers);
        let mut expected: Vec<Box<[u8]>> = [
            "owa",
            "mail",
            "autodiscover",
            "outlook",
            "@",
            "alias",
            "alias2",
            "_autodiscover._tcp",
        ]
        .iter()
        .map(|l| match *l {
            "@" => wire_lower(&Name::from_ascii("z.test.").unwrap()),
            l => wire_lower(&Name::from_ascii(format!("{l}.z.test.")).unwrap()),
        })
        .collect();
        let mut changed: Vec<Box<[u8]>> = changed.into_iter().collect();
        expected.sort();
        changed.sort();
        assert_eq!(changed, expected);
    }

    /// A reload's first publish shares the staged (loaded, unserved) snapshot's prebuilt
    /// answers, though the serving snapshot still holds the old zones; a view over other
    /// zones does not.
    #[test]
    fn a_publish_over_staged_zones_shares_their_prebuilt_answers() {
        let load = |text: &str| {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(text.as_bytes()).unwrap();
            let (zone, _) = load_zone(f.path(), &Name::from_ascii("z.test.").unwrap()).unwrap();
            Arc::new(vec![zone])
        };
        let layout = Arc::new(Views::single(1));
        let build = |zones: &Arc<Vec<Zone>>| {
            Snapshot::build(
                zones.clone(),
                layout.clone(),
                Vec::new(),
                Vec::new(),
                |_, _| None,
                None,
            )
        };
        let (old, new) = (load(ZONE), load(ZONE));
        let store: Store = Arc::new(ArcSwap::from_pointee(build(&old)));
        let publisher = Publisher::new(store.clone(), |_, _| None);
        let staged = build(&new);
        let staged_bases = staged.bases.clone();
        publisher.stage(staged);
        let view = |zones: &Arc<Vec<Zone>>| View {
            static_zones: zones.clone(),
            layout: layout.clone(),
            services: services(),
            relays: Vec::new(),
        };
        publisher.publish(view(&new));
        assert!(Arc::ptr_eq(&store.load().bases, &staged_bases));
        // The old zones again (a failed engine start would publish them): built, not shared.
        publisher.publish(view(&old));
        assert!(!Arc::ptr_eq(&store.load().bases, &staged_bases));
        assert!(Arc::ptr_eq(&store.load().static_zones, &old));
    }
}
