//! The snapshot: everything the query path reads, immutable, swapped atomically.
//!
//! Readers `load()` it once per query without locks. The health engine builds a new one on every
//! change: the static zones with each service name's A/AAAA RRsets replaced by what health
//! selects, MX/SRV records pointing at dead targets left out, and the prebuilt answers rebuilt.
//! So the hot path always reads a prebuilt answer, health-driven or not.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

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
        )
    }

    /// Builds a snapshot: `services` applied to `static_zones`, then each view's zones and
    /// prebuilt answers. A service name's prebuilt A/AAAA answers carry its counter slot
    /// (`slot_of(view, name)`, None: not counted per step), so the hot path counts them without
    /// a lookup. A zone in several views is derived once and copied into each.
    pub fn build(
        static_zones: Arc<Vec<Zone>>,
        layout: Arc<Views>,
        services: Vec<ServiceView>,
        relays: Vec<Vec<BackendView>>,
        slot_of: impl Fn(&str, &Name) -> Option<u16>,
    ) -> Self {
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
                build_view(&derived, &layout, v, &services, |n| slot_of(label, n))
            })
            .collect();
        Self {
            views,
            layout,
            static_zones,
            services,
            relays,
            built_at: SystemTime::now(),
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
    services: &[ServiceView],
    slot_of: impl Fn(&Name) -> Option<u16>,
) -> ViewSnap {
    let sources: Vec<usize> = layout
        .zone_views
        .iter()
        .enumerate()
        .filter(|(_, vs)| vs.contains(&v))
        .map(|(i, _)| i)
        .collect();
    let zones = ZoneSet::new(
        sources
            .iter()
            .filter_map(|&i| derived.get(i).cloned())
            .collect(),
    );
    let tags: rustc_hash::FxHashMap<(Box<[u8]>, RecordType), u16> = services
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
        .collect();
    let fast = FastTable::build(&zones, |wire, t| {
        tags.get(&(Box::from(wire), t)).copied().unwrap_or(UNTAGGED)
    });
    ViewSnap {
        zones,
        fast,
        sources,
    }
}

/// The shared, swappable snapshot.
pub type Store = Arc<ArcSwap<Snapshot>>;

/// Puts the health engine's views in force: each becomes the snapshot in the store.
pub struct Publisher {
    store: Store,
    slot_of: SlotOf,
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
        }
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publish for Publisher {
    fn publish(&self, view: View) {
        let snap = Snapshot::build(
            view.static_zones,
            view.layout,
            view.services,
            view.relays,
            &self.slot_of,
        );
        self.store.store(Arc::new(snap));
    }
}

/// `zone` as answered under `views` (those of its service names).
fn derive<'v>(zone: &Zone, views: impl Iterator<Item = &'v ServiceView>) -> Zone {
    let mine: Vec<&ServiceView> = views.collect();
    if mine.is_empty() {
        return zone.clone();
    }
    let mut z = zone.clone();
    for v in &mine {
        let Some(node) = z.nodes.get_mut(&wire_lower(&v.name)) else {
            continue;
        };
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
    for node in z.nodes.values_mut() {
        for set in &mut node.rrsets {
            if !matches!(set.rtype, RecordType::MX | RecordType::SRV) {
                continue;
            }
            let keep: Vec<Record> = set
                .records
                .iter()
                .filter(|r| match &r.data {
                    RData::MX(mx) => healthy(&mx.exchange),
                    RData::SRV(srv) => healthy(&srv.target),
                    _ => true,
                })
                .cloned()
                .collect();
            if !keep.is_empty() {
                set.records = keep;
            }
        }
    }
    z
}

/// Replaces `node`'s `rtype` RRset with the selection's rotations.
fn apply(node: &mut Node, rtype: RecordType, sel: &Selection, ttl: u32, cap: usize) {
    let old = node.rrset(rtype);
    let ttl = old
        .and_then(|s| s.records.first())
        .map_or(ttl, |r| r.ttl.min(ttl));
    let (line, file) = old.map_or((0, Default::default()), |s| (s.line, s.file.clone()));
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
