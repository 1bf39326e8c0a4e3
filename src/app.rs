//! The application's state: what one running mailns holds from start to shutdown.
//!
//! The runtime builds it ([`crate::runtime::run`]) and applies reloads to it; the admin listener
//! reads it for the dashboard, status and metrics, and asks for reloads through
//! [`Live::commands`]. Keeping it here, below both, is what lets neither import the other.

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dns::Stats;
use crate::health::engine::{Handle, Outputs};
use crate::relay::server::Relay;
use crate::state::{Publisher, Store};

/// The config in force and how it got there.
#[derive(Debug)]
pub struct Loaded {
    /// The config (runtime admin states are in the engine's outputs, not here).
    pub config: Arc<Config>,
    /// When it was loaded.
    pub at: SystemTime,
    /// Successful reloads since start.
    pub reloads: u64,
    /// The last reload's error, until a reload succeeds.
    pub last_error: Option<(SystemTime, String)>,
}

/// The running application: what the admin listener reads, and what reloads replace.
#[derive(Debug)]
pub struct Live {
    /// When the process started.
    pub started: SystemTime,
    /// The serving snapshot.
    pub store: Store,
    /// DNS counters.
    pub dns: Arc<Stats>,
    /// The health engine's outputs.
    pub out: Outputs,
    /// Builds the serving snapshots from the engine's views (`out.sink`): a reload stages its
    /// loaded snapshot here.
    pub publisher: Arc<Publisher>,
    /// The relays in config order (a reload replaces the list).
    pub relays: Arc<ArcSwap<Vec<Arc<Relay>>>>,
    /// The engine in force (replaced by reloads).
    pub engine: tokio::sync::Mutex<Option<Handle>>,
    /// First probe round done and listeners bound.
    pub ready: AtomicBool,
    /// The config in force.
    pub loaded: ArcSwap<Loaded>,
    /// Serializes admin-state writes and reloads.
    pub admin_lock: tokio::sync::Mutex<()>,
    /// The process's shutdown token (engines run on child tokens).
    pub token: CancellationToken,
    /// Cancelled once shutdown is complete (every relayed session ended or the grace passed):
    /// the admin listener stays up until then, so the dashboard, `/livez` and `/readyz` tell
    /// the admin what the node is waiting for.
    pub exited: CancellationToken,
    /// `mailns demo`'s simulated servers (fail/heal from the dashboard).
    pub demo: Option<Arc<dyn Demo>>,
    /// Who may transfer which zone (swapped on reload).
    pub transfers: Arc<ArcSwap<crate::dns::xfr::TransferPolicy>>,
    /// DNS rate limiting and cookies (swapped on reload).
    pub edge: Arc<ArcSwap<crate::dns::Edge>>,
    /// The cookie secret used when the config names none (one per process).
    pub cookie_fallback: crate::query::cookie::Secret,
    /// Every listener (None once shutting down).
    pub listeners: tokio::sync::Mutex<Option<crate::listeners::Listeners>>,
    /// The last hour of samples for the dashboard's graphs (the admin module's sampler fills
    /// it every five seconds).
    pub history: std::sync::Mutex<crate::history::History>,
    /// Where the admin listener sends what it cannot do itself (reloads): the runtime serves
    /// them, so the admin server needs no knowledge of how a reload is done.
    pub commands: mpsc::Sender<Command>,
}

/// A request to the runtime.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// Reload the config, its zones and certificates; `done` gets the outcome (the
    /// `path:line: message` lines of what is wrong, on failure).
    Reload {
        /// Gets the outcome once the reload is complete or has failed.
        done: oneshot::Sender<Result<(), String>>,
        /// Who asked (the admin client's address), for the transitions list.
        by: String,
    },
}

/// `mailns demo`'s simulated servers, as the application sees them. The simulator itself is in
/// the `demo` feature (`crate::demo`, `crate::sim`); the runtime and the admin listener know it
/// only through this trait, so a production build (`--no-default-features`) carries neither.
pub trait Demo: Send + Sync + std::fmt::Debug {
    /// The servers as the dashboard shows them.
    fn view(&self) -> Vec<DemoView>;
    /// Applies `action` to server `name`; false if there is no such server. Blocks briefly
    /// (a failed server's ports are closed when this returns).
    ///
    /// # Errors
    /// A port could not be opened again.
    fn act(&self, name: &str, action: DemoAction) -> Result<bool, String>;
    /// What to try, printed once the demo is ready.
    fn banner(&self, config: &Config) -> String;
}

/// What the dashboard shows of a simulated server.
#[derive(Debug, Serialize)]
pub struct DemoView {
    /// Its name (cas01..cas03).
    pub name: String,
    /// Its loopback address.
    pub address: IpAddr,
    /// Its ports are open.
    pub running: bool,
    /// `/owa/healthcheck.htm` answers 503.
    pub owa_failing: bool,
}

/// A demo action from the dashboard's buttons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoAction {
    /// Close every port (the server died).
    Fail,
    /// Open them again, all pages healthy.
    Heal,
    /// OWA's health page answers 503; everything else stays up.
    FailOwa,
}

impl Live {
    /// True once shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Relayed sessions open now, over every relay.
    pub fn sessions(&self) -> u64 {
        self.relays
            .load()
            .iter()
            .flat_map(|r| &r.stats.servers)
            .map(|s| s.active.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}

impl DemoAction {
    /// Parses "fail", "heal", "fail-owa".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fail" => Some(Self::Fail),
            "heal" => Some(Self::Heal),
            "fail-owa" => Some(Self::FailOwa),
            _ => None,
        }
    }

    /// Its name in the API path.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Heal => "heal",
            Self::FailOwa => "fail-owa",
        }
    }
}
