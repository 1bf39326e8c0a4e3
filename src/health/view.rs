//! What the health engine hands on: per service name the addresses to answer, per relay backend
//! what a relay may do with it.
//!
//! The engine knows nothing of who serves its decisions: it gives each new [`View`] to a
//! [`Publish`] implementation, which the runtime supplies (it builds the serving snapshot and
//! gives each service name its DNS counter slot). So health sits below the DNS and relay servers
//! in the module graph, and its engine can be tested with a sink that keeps the views.

use std::sync::Arc;

use hickory_proto::rr::Name;

use super::answer::Selection;
use crate::config::view::Views;
use crate::zone::Zone;

/// What health selected for one service name.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// The service name whose A/AAAA RRsets health drives.
    pub name: Name,
    /// The zone (index in the loaded zones) whose records these are: in a split-horizon config
    /// one service name has a view per zone that holds it.
    pub zone: usize,
    /// Selection for A (None: the zone has no A records for it).
    pub a: Option<Selection>,
    /// Selection for AAAA (None: the zone has no AAAA records for it).
    pub aaaa: Option<Selection>,
    /// The service's TTL: answers use the lower of it and the zone's.
    pub ttl: u32,
    /// Addresses per answer at most (the service's `max_answers`).
    pub cap: usize,
}

impl ServiceView {
    /// True when some address of the name is answered because it is (or may be) healthy.
    pub fn has_healthy(&self) -> bool {
        [&self.a, &self.aaaa]
            .into_iter()
            .flatten()
            .any(Selection::has_healthy)
    }
}

/// One relay backend as health and admin state leave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendView {
    /// Takes new connections: passes the relay's checks (or has no result yet) and is `ready`.
    pub usable: bool,
    /// Its open relayed connections must be closed: it is in `maint`, or it failed a check and
    /// the relay says `on_server_down = "close"`.
    pub close: bool,
}

impl Default for BackendView {
    fn default() -> Self {
        Self {
            usable: true,
            close: false,
        }
    }
}

/// One decision of the engine, whole: it replaces the previous one.
#[derive(Debug, Clone)]
pub struct View {
    /// The zones as loaded from their files, which the service views apply to.
    pub static_zones: Arc<Vec<Zone>>,
    /// Which zones each DNS view serves.
    pub layout: Arc<Views>,
    /// Per service (config order): what health selected.
    pub services: Vec<ServiceView>,
    /// Per relay (config order), per backend (the relay's order): what the relay may do.
    pub relays: Vec<Vec<BackendView>>,
}

/// Whoever serves the engine's decisions. `publish` is called from the engine's loop on every
/// change and must not block: it builds and swaps in what the servers read.
pub trait Publish: Send + Sync + std::fmt::Debug {
    /// Puts `view` in force.
    fn publish(&self, view: View);
}
