//! The snapshot: everything the query path reads, immutable, swapped atomically.
//!
//! Readers `load()` it once per query without locks; a reload (or, later, a health change)
//! builds a new one and stores it.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::dns::fast::FastTable;
use crate::dns::lookup::ZoneSet;
use crate::zone::Zone;

/// Immutable serving state.
#[derive(Debug)]
pub struct Snapshot {
    /// The zones, for the general lookup path.
    pub zones: ZoneSet,
    /// Prebuilt responses, for the hot path.
    pub fast: FastTable,
    /// When this snapshot was built.
    pub built_at: SystemTime,
}

impl Snapshot {
    /// Builds a snapshot (and its prebuilt responses) from loaded zones.
    pub fn new(zones: Vec<Zone>) -> Self {
        let zones = ZoneSet::new(zones);
        let fast = FastTable::build(&zones);
        Self {
            zones,
            fast,
            built_at: SystemTime::now(),
        }
    }
}

/// The shared, swappable snapshot.
pub type Store = Arc<ArcSwap<Snapshot>>;
