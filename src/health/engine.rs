//! The health engine: one task per distinct probe, one sentinel per checked (address, port), and
//! one loop that turns results into a new snapshot whenever a pair flips.
//!
//! - Probes are deduplicated: two checks with the same dialogue on the same address and port are
//!   one probe. Each probe task owns its pair's state machine and its schedule: at once at start
//!   (the start-up round), then at a random phase within the interval (no synchronized bursts),
//!   then every interval; every fast interval while a flip is pending; every sentinel interval
//!   after a sentinel closed, until the state settles. A slow probe delays only itself.
//! - A reload keeps every probe it does not change running: its task is rebound to the new
//!   engine (results, sentinel, TLS settings), so the probe in flight and the schedule carry on
//!   and a reload never delays detection. Only changed or removed probes stop.
//! - One sentinel per checked port ([`super::sentinel`]) wakes its probes when the server
//!   closes the connection it holds.
//!
//! Its parts each have their file: what is probed ([`super::plan`]), what is reported
//! ([`super::report`]), when a probe runs next ([`super::schedule`]), the relay backend rule
//! ([`super::backends`]) and what it hands on ([`super::view`]).

#![allow(
    clippy::indexing_slicing,
    reason = "pairs, probes and services are numbered when the engine is built, from the same lists that size every vector indexed here"
)]

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::answer::{select, Member, Selection, Step};
use super::backends::backend_view;
use super::cluster::{self, Votes};
use super::plan::Plan;
use super::probe::{self, ProbeResult, TlsConfigs};
use super::report::{same_probe, ProbeReport, ProbeSpec, Transition};
use super::schedule::{next_probe, Misses, Pace};
use super::sentinel::{miss_every, Sentinels, Silence};
use super::view::{BackendView, Publish, ServiceView, View};
use super::{PairState, Status, Thresholds};
use crate::config::cluster::Policy;
use crate::config::relay::RelayDef;
use crate::config::{AdminState, CheckKind, Config, HealthConfig};
use crate::tls::TlsError;
use crate::zone::Zone;

/// Transitions kept for the dashboard.
pub const TRANSITIONS_KEPT: usize = 100;

/// A change of a server's admin state, sent by the admin API; `done` fires once the snapshot
/// that applies it is published.
#[derive(Debug)]
pub struct AdminCmd {
    /// The server's name.
    pub server: String,
    /// Its new state.
    pub state: AdminState,
    /// Who asked (the admin API client's address), for the transitions list.
    pub by: String,
    /// Fires after publishing.
    pub done: oneshot::Sender<()>,
}

/// A health-driven name's family in one zone: (name, zone index, is IPv6).
type StepKey = (String, usize, bool);

/// Where engines publish: one per process, kept across reloads (each reload starts a new engine
/// that carries the old one's probe states over).
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Where every new view goes (the runtime's: it builds the serving snapshot).
    pub sink: Arc<dyn Publish>,
    /// The latest probe reports (dashboard, metrics, carry-over on reload).
    pub reports: Arc<watch::Sender<Arc<Vec<ProbeReport>>>>,
    /// Counts the snapshots published: relays watch it to close connections to servers that
    /// went into maintenance (or down, with `on_server_down = "close"`).
    pub published: Arc<watch::Sender<u64>>,
    /// Turns true once every probe has a first result.
    pub first_round: Arc<watch::Sender<bool>>,
    /// The health config in force, runtime admin states applied.
    pub health: Arc<arc_swap::ArcSwap<HealthConfig>>,
    /// The last [`TRANSITIONS_KEPT`] transitions, newest last.
    pub transitions: Arc<Mutex<VecDeque<Transition>>>,
    /// The peers' latest raw check states (`[cluster]`; the cluster poller sends them).
    pub votes: Arc<watch::Sender<Arc<Votes>>>,
    /// Transitions recorded since start, by kind (for `/metrics`).
    pub transition_counts: Arc<Mutex<std::collections::BTreeMap<&'static str, u64>>>,
    /// The step each (service name, zone, is IPv6) answered with at the last publish, kept
    /// across reloads so that a reload does not log a step change that did not happen.
    steps: Arc<Mutex<HashMap<StepKey, Step>>>,
}

impl Outputs {
    /// Fresh outputs publishing to `sink`.
    pub fn new(sink: Arc<dyn Publish>, health: HealthConfig) -> Self {
        Self {
            sink,
            reports: Arc::new(watch::channel(Arc::new(Vec::new())).0),
            published: Arc::new(watch::channel(0).0),
            first_round: Arc::new(watch::channel(false).0),
            health: Arc::new(arc_swap::ArcSwap::from_pointee(health)),
            transitions: Arc::new(Mutex::new(VecDeque::new())),
            votes: Arc::new(watch::channel(Arc::new(Votes::default())).0),
            transition_counts: Arc::default(),
            steps: Arc::default(),
        }
    }

    /// Appends a transition, dropping the oldest past [`TRANSITIONS_KEPT`].
    pub fn record(&self, t: Transition) {
        let mut list = self
            .transitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if list.len() == TRANSITIONS_KEPT {
            list.pop_front();
        }
        *self
            .transition_counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(t.kind)
            .or_default() += 1;
        list.push_back(t);
    }

    /// Remembers that `key` now answers with `step`; returns the step before, when it differs.
    fn step_changed(&self, key: StepKey, step: Step) -> Option<Step> {
        let mut steps = self
            .steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = steps.insert(key, step);
        before.filter(|b| *b != step)
    }
}

/// A probe's news for the engine.
#[derive(Debug)]
struct Event {
    idx: usize,
    state: PairState,
    result: ProbeResult,
    flipped: Option<Status>,
    /// A miss of a silent held connection, not a probe: no latency, and the last probe's
    /// certificate stays known.
    heartbeat: bool,
}

/// Where a probe task sends its results and what it probes with. A reload that keeps a probe
/// rebinds its task to the new engine instead of restarting it, so the probe in flight and the
/// schedule carry on: restarting lost the probe in flight and so delayed detection by up to a
/// timeout for every reload inside a fall.
#[derive(Debug, Clone)]
struct Binding {
    /// The probe's index in the engine's plan.
    idx: usize,
    tx: mpsc::Sender<Event>,
    /// Woken by the sentinel of the probe's port.
    wake: Arc<Notify>,
    /// Since when the held connection of the probe's port has been silent.
    silence: Silence,
    tls: Option<TlsConfigs>,
    reprobe: Duration,
}

/// A running probe task, as the engine that owns it holds it.
#[derive(Debug)]
pub struct Prober {
    spec: ProbeSpec,
    bind: watch::Sender<Binding>,
    token: CancellationToken,
}

/// What the runtime holds of a running engine.
#[derive(Debug)]
pub struct Handle {
    /// Admin state changes.
    pub admin: mpsc::Sender<AdminCmd>,
    /// Stops the aggregator and the sentinels.
    token: CancellationToken,
    /// The aggregator's task, awaited when the engine stops.
    task: tokio::task::JoinHandle<()>,
    probers: Vec<Prober>,
}

impl Handle {
    /// Stops the engine, its probes included, and waits until its aggregator has returned.
    pub async fn stop(self) {
        for p in self.retire().await {
            p.token.cancel();
        }
    }

    /// Stops the aggregator and the sentinels, keeping the probe tasks for the next engine to
    /// rebind. When this returns the aggregator has applied every result it accepted and
    /// published its last reports and snapshot; results made after it stopped wait for a new
    /// binding. The caller hands the probers to `start` (which stops those it does not keep).
    pub async fn retire(self) -> Vec<Prober> {
        self.token.cancel();
        let _ = self.task.await;
        self.probers
    }
}

/// The TLS client configs of a config's https checks, by check name.
pub type TlsMap = HashMap<String, TlsConfigs>;

/// An https check whose TLS settings cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[error("check '{check}': {source}")]
pub struct CheckTlsError {
    /// The check's name.
    pub check: String,
    /// What is wrong (a missing or empty CA file).
    pub source: Box<TlsError>,
}

/// Builds the TLS client configs of every https check: the part of starting an engine that can
/// fail, done before a reload stops the engine in force.
///
/// # Errors
/// An https check whose TLS settings cannot be loaded (a missing CA file).
pub fn tls_configs(health: &HealthConfig) -> Result<TlsMap, CheckTlsError> {
    let mut tls = TlsMap::new();
    for c in &health.checks {
        if let CheckKind::Http { tls: Some(t), .. } = &c.kind {
            let cfg = crate::tls::client::config(t).map_err(|e| CheckTlsError {
                check: c.name.clone(),
                source: Box::new(e),
            })?;
            tls.insert(c.name.clone(), cfg);
        }
    }
    Ok(tls)
}

/// Starts the engine for `config` over `loaded`, the zones and views as loaded (the `Arc`s of
/// the snapshot that loaded them), publishing into `out`. The same `Arc`s, not copies: the
/// snapshots it publishes then share that snapshot's prebuilt answers instead of building them
/// again. Probes identical
/// to one in `carry` (a previous engine's reports) start from its state, so a reload shows no
/// "unknown" flash for servers it did not change. It stops when `token` is cancelled.
pub fn start(
    config: &Config,
    loaded: (Arc<Vec<Zone>>, Arc<crate::config::view::Views>),
    out: &Outputs,
    carry: &[ProbeReport],
    probers: Vec<Prober>,
    tls: TlsMap,
    token: CancellationToken,
) -> Handle {
    let health = config.health.clone();
    let (static_zones, layout) = loaded;
    let plan = Plan::new(&health, &config.relays, &static_zones);
    let (tx, rx) = mpsc::channel(1024);
    let (admin_tx, admin_rx) = mpsc::channel(16);
    // The aggregator and the sentinels stop with this engine; probe tasks may outlive it.
    let aggregator = token.child_token();
    let initial = carried_over(&plan, carry);
    let all_known = initial.iter().all(|r| r.state.status != Status::Unknown);
    out.first_round.send_if_modified(|done| {
        let was = *done;
        *done |= all_known;
        was != *done
    });
    out.reports.send_replace(Arc::new(initial.clone()));

    // Sentinels: one per (address, port), waking every probe on it.
    let tls_of = |spec: &ProbeSpec| spec.checks.iter().find_map(|c| tls.get(c)).cloned();
    let sentinels = Sentinels::start(
        &plan,
        health.sentinels,
        health.heartbeat,
        &tls_of,
        &aggregator,
    );

    // A probe the previous engine ran too keeps its task (rebound here); the rest start.
    let bindings = plan.probes.iter().enumerate().map(|(idx, spec)| Binding {
        idx,
        tx: tx.clone(),
        wake: sentinels.wake[idx].clone(),
        silence: sentinels.silence[idx].clone(),
        tls: tls_of(spec),
        reprobe: health.sentinel_reprobe,
    });
    let kept = bind_probes(&plan, &initial, bindings, probers, &token);
    drop(tx);

    // Sentinels of carried-over pairs that are up connect at once.
    for (r, sa) in initial.iter().zip(&sentinels.of) {
        if r.state.status == Status::Up {
            if let Some(tx) = sentinels.up.get(sa) {
                let _ = tx.send(true);
            }
        }
    }
    out.health.store(Arc::new(health.clone()));
    let mut engine = Aggregator {
        health,
        relays: config.relays.clone(),
        plan,
        static_zones,
        layout,
        out: out.clone(),
        reports: initial,
        down_since: HashMap::new(),
        sentinel_up: sentinels.up,
        sentinel_of: sentinels.of,
        folded: 0,
        policy: config.cluster.policy,
        votes: out.votes.borrow().clone(),
    };
    engine.decide_all();
    // The first snapshot (admin state applied, health unknown or carried over) is in place
    // before `start` returns, so no relay connection or DNS answer ever sees a `drain`/`maint`
    // server as ready.
    let wake_at = engine.publish();
    let votes = out.votes.subscribe();
    let task = tokio::spawn(engine.run(rx, admin_rx, votes, wake_at, aggregator.clone()));
    Handle {
        admin: admin_tx,
        token: aggregator,
        task,
        probers: kept,
    }
}

/// The reports the engine starts from: a probe identical to one of `carry` (the previous
/// engine's) keeps its state, result and counters; the rest start unknown.
fn carried_over(plan: &Plan, carry: &[ProbeReport]) -> Vec<ProbeReport> {
    plan.probes
        .iter()
        .map(|s| {
            carry.iter().find(|r| same_probe(&r.spec, s)).map_or_else(
                || ProbeReport::new(s.clone()),
                |r| ProbeReport {
                    spec: s.clone(),
                    ..r.clone()
                },
            )
        })
        .collect()
}

/// Binds each probe of `plan` to its binding: a task in `probers` (the previous engine's) that
/// runs the same probe is rebound and kept, so its probe in flight and its schedule carry on;
/// the other probes get a new task (starting from `initial`'s state). Probers left over stop.
fn bind_probes(
    plan: &Plan,
    initial: &[ProbeReport],
    bindings: impl Iterator<Item = Binding>,
    mut probers: Vec<Prober>,
    token: &CancellationToken,
) -> Vec<Prober> {
    let mut kept = Vec::with_capacity(plan.probes.len());
    for ((spec, binding), report) in plan.probes.iter().zip(bindings).zip(initial) {
        let old = probers.iter().position(|p| same_probe(&p.spec, spec));
        if let Some(i) = old {
            let p = probers.swap_remove(i);
            p.bind.send_replace(binding);
            kept.push(p);
            continue;
        }
        let (bind, rx) = watch::channel(binding);
        let prober = Prober {
            spec: spec.clone(),
            bind,
            token: token.child_token(),
        };
        // Every event of the probe's task (and of its probes) carries what it probes.
        let span = info_span!("probe", addr = %spec.addr, port = spec.port, checks = ?spec.checks);
        let task = probe_task(spec.clone(), report.state, rx, prober.token.clone());
        tokio::spawn(task.instrument(span));
        kept.push(prober);
    }
    for gone in probers {
        gone.token.cancel();
    }
    kept
}

/// A probe in flight: when it started, and its result to come.
type InFlight = (
    Instant,
    std::pin::Pin<Box<dyn std::future::Future<Output = ProbeResult> + Send>>,
);

/// One probe's loop: probe when due or woken, count the misses of a silent held connection,
/// decide the pair's state, report to whichever engine it is bound to.
async fn probe_task(
    spec: ProbeSpec,
    initial: PairState,
    mut bind: watch::Receiver<Binding>,
    token: CancellationToken,
) {
    let t = Thresholds {
        rise: spec.timing.rise,
        fall: spec.timing.fall,
    };
    let every = miss_every(&spec.timing);
    let mut state = initial;
    let mut burst = false;
    // The first probe is made at once; the second at a random phase within the interval (no
    // synchronized bursts), and later ones keep to that phase.
    let mut first = true;
    let mut next = Instant::now();
    let mut inflight: Option<InFlight> = None;
    let mut misses = Misses::default();
    let (mut wake, mut silence) = {
        let b = bind.borrow();
        (b.wake.clone(), b.silence.clone())
    };
    let mut silence_live = true;
    loop {
        let miss_at = misses.next(every);
        let event = tokio::select! {
            () = sleep_until(next), if inflight.is_none() => {
                inflight = Some(launch(&spec, &bind));
                continue;
            }
            () = wake.notified() => {
                burst = true;
                if inflight.is_none() {
                    inflight = Some(launch(&spec, &bind));
                }
                continue;
            }
            (started, result) = landed(&mut inflight) => {
                let flipped = state.observe(result.ok, t);
                if result.ok {
                    misses.passed(started);
                }
                if burst && !state.changing() {
                    burst = false;
                }
                let pace = Pace::of(first, burst, state.changing());
                first = false;
                let phase = rand::random_range(0.05..1.0);
                let reprobe = bind.borrow().reprobe;
                next = next_probe(started, pace, &spec.timing, reprobe, phase);
                Event { idx: 0, state, result, flipped, heartbeat: false }
            }
            () = sleep_until(miss_at.unwrap_or(next)), if miss_at.is_some() => {
                let silent = misses.miss(Instant::now());
                if misses.counted() == 1 {
                    // The first miss wakes the probe, as a sentinel close does.
                    burst = true;
                    if inflight.is_none() {
                        inflight = Some(launch(&spec, &bind));
                    }
                }
                let flipped = state.observe(false, t);
                let result = ProbeResult {
                    ok: false,
                    latency: silent,
                    error: Some(format!(
                        "held connection silent for {} ms (heartbeat unanswered)",
                        silent.as_millis()
                    )),
                    cert: None,
                    code: "L7TOUT heartbeat".into(),
                };
                Event { idx: 0, state, result, flipped, heartbeat: true }
            }
            changed = silence.changed(), if silence_live => {
                match changed {
                    Ok(()) => misses.silent_since(*silence.borrow_and_update()),
                    // The engine stopped; the next one rebinds this task.
                    Err(_) => silence_live = false,
                }
                continue;
            }
            changed = bind.changed() => {
                // Rebound to a new engine: wait on its sentinel from now on.
                if changed.is_err() {
                    return;
                }
                let b = bind.borrow_and_update();
                (wake, silence) = (b.wake.clone(), b.silence.clone());
                silence_live = true;
                misses.silent_since(*silence.borrow());
                continue;
            }
            () = token.cancelled() => return,
        };
        if !report(event, &mut bind, &token).await {
            return;
        }
    }
}

/// Starts one probe of `spec` with the binding's TLS settings.
fn launch(spec: &ProbeSpec, bind: &watch::Receiver<Binding>) -> InFlight {
    let tls = bind.borrow().tls.clone();
    let (kind, addr, port, limit) = (spec.kind.clone(), spec.addr, spec.port, spec.timing.timeout);
    let started = Instant::now();
    let run = async move { probe::run(&kind, addr, port, limit, tls.as_ref()).await };
    (started, Box::pin(run))
}

/// The result of the probe in flight, when it lands (never, with none in flight).
async fn landed(inflight: &mut Option<InFlight>) -> (Instant, ProbeResult) {
    match inflight {
        Some((started, run)) => {
            let result = run.await;
            let started = *started;
            *inflight = None;
            (started, result)
        }
        None => std::future::pending().await,
    }
}

/// Sends `event` to the engine the task is bound to. An engine that stopped (a reload) refuses
/// it; it then goes to the next engine once that one rebinds the task, so no result (and no
/// flip) is lost across a reload. False when the task is to end.
async fn report(
    mut event: Event,
    bind: &mut watch::Receiver<Binding>,
    token: &CancellationToken,
) -> bool {
    loop {
        let (idx, tx) = {
            let b = bind.borrow_and_update();
            (b.idx, b.tx.clone())
        };
        event.idx = idx;
        match tx.send(event).await {
            Ok(()) => return true,
            Err(mpsc::error::SendError(back)) => event = back,
        }
        tokio::select! {
            changed = bind.changed() => {
                if changed.is_err() {
                    return false;
                }
            }
            () = token.cancelled() => return false,
        }
    }
}

struct Aggregator {
    health: HealthConfig,
    relays: Vec<RelayDef>,
    plan: Plan,
    static_zones: Arc<Vec<Zone>>,
    layout: Arc<crate::config::view::Views>,
    out: Outputs,
    reports: Vec<ProbeReport>,
    /// Per (service, zone, is IPv6): since when its preferred members have all been down.
    down_since: HashMap<(usize, usize, bool), Instant>,
    sentinel_up: HashMap<SocketAddr, watch::Sender<bool>>,
    sentinel_of: Vec<SocketAddr>,
    /// Pairs that went from unknown to up since the last round completed: the first round's
    /// flood becomes one transition entry.
    folded: usize,
    /// How the peers' votes combine with this node's (`[cluster] policy`).
    policy: Policy,
    /// The peers' latest votes (none without `[cluster]`).
    votes: Arc<Votes>,
}

impl Aggregator {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Event>,
        mut admin: mpsc::Receiver<AdminCmd>,
        mut votes: watch::Receiver<Arc<Votes>>,
        mut wake_at: Option<Instant>,
        token: CancellationToken,
    ) {
        loop {
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { return };
                    self.absorb(Some(ev), &mut rx, &mut wake_at);
                    // Only after the snapshot built from these results is published.
                    self.round_complete();
                }
                cmd = admin.recv() => {
                    let Some(cmd) = cmd else { continue };
                    self.set_admin(&cmd.server, cmd.state, &cmd.by);
                    wake_at = self.publish();
                    let _ = cmd.done.send(());
                }
                changed = votes.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    self.votes = votes.borrow_and_update().clone();
                    // Polls come every second; only a changed decision is worth publishing.
                    if self.decide_all() {
                        wake_at = self.publish();
                        self.out.reports.send_replace(Arc::new(self.reports.clone()));
                    }
                }
                () = sleep_until(wake_at.unwrap_or(far)) => wake_at = self.publish(),
                () = token.cancelled() => {
                    // Results already accepted are applied and published before the engine
                    // ends (the next one starts from these reports); later ones are refused
                    // and wait for the next engine.
                    rx.close();
                    self.absorb(None, &mut rx, &mut wake_at);
                    return;
                }
            }
        }
    }

    /// Sets a server's admin state (a no-op for an unknown name: the API checked it).
    fn set_admin(&mut self, server: &str, state: AdminState, by: &str) {
        let Some(s) = self.health.servers.iter_mut().find(|s| s.name == server) else {
            return;
        };
        let from = s.admin;
        s.admin = state;
        self.out.health.store(Arc::new(self.health.clone()));
        if from != state {
            info!(
                server,
                from = from.as_str(),
                to = state.as_str(),
                by,
                "admin: server state changed"
            );
            self.out.record(Transition {
                at: SystemTime::now(),
                server: server.to_string(),
                what: "admin".into(),
                kind: "admin",
                by: by.to_string(),
                from: from.as_str(),
                to: state.as_str(),
                detail: String::new(),
            });
        }
    }

    /// Once every probe has a result: says so (the first time), and records the pairs that came
    /// up from unknown as one transition entry, not one per pair.
    fn round_complete(&mut self) {
        if self
            .reports
            .iter()
            .any(|r| r.state.status == Status::Unknown)
        {
            return;
        }
        let first = !*self.out.first_round.borrow();
        if first {
            info!(
                probes = self.reports.len(),
                "health: first probe round complete"
            );
            self.out.first_round.send_replace(true);
        }
        if self.folded > 0 {
            let down = self
                .reports
                .iter()
                .filter(|r| r.state.status == Status::Down)
                .count();
            self.out.record(Transition {
                at: SystemTime::now(),
                server: String::new(),
                what: if first {
                    "first probe round"
                } else {
                    "new probes' first round"
                }
                .into(),
                kind: "startup",
                by: String::new(),
                from: Status::Unknown.as_str(),
                to: if down > 0 {
                    "partial"
                } else {
                    Status::Up.as_str()
                },
                detail: format!(
                    "{} of {} probes up, {down} down (each down one is listed on its own)",
                    self.reports.len() - down,
                    self.reports.len()
                ),
            });
            self.folded = 0;
        }
    }

    /// Applies `first` and every result queued behind it, then publishes once: the snapshot if a
    /// status changed (`wake_at` becoming its next wake-up), the reports always.
    fn absorb(
        &mut self,
        first: Option<Event>,
        rx: &mut mpsc::Receiver<Event>,
        wake_at: &mut Option<Instant>,
    ) {
        let mut changed = first.is_some_and(|ev| self.apply(ev));
        while let Ok(ev) = rx.try_recv() {
            changed |= self.apply(ev);
        }
        changed |= self.decide_all();
        if changed {
            *wake_at = self.publish();
        }
        self.out
            .reports
            .send_replace(Arc::new(self.reports.clone()));
    }

    /// Records an event; true if a status changed.
    fn apply(&mut self, ev: Event) -> bool {
        let now = SystemTime::now();
        let r = &mut self.reports[ev.idx];
        let before = r.state.status;
        r.state = ev.state;
        let mut result = ev.result;
        // A heartbeat or a probe that did not reach the TLS handshake keeps the certificate
        // seen last: a dead server's certificate still expires, and stays listed.
        if result.cert.is_none() {
            result.cert = r.last.as_ref().and_then(|l| l.cert.clone());
        }
        if !ev.heartbeat {
            r.latency.observe(result.latency);
        }
        r.last = Some(result);
        r.last_at = Some(now);
        if let Some(s) = ev.flipped {
            if before == Status::Down {
                let down_for = r.since.and_then(|t| now.duration_since(t).ok());
                r.downtime += down_for.unwrap_or_default();
            }
            if s == Status::Down {
                r.downs += 1;
            }
            r.since = Some(now);
            r.changes += 1;
            let spec = &r.spec;
            let error = r
                .last
                .as_ref()
                .and_then(|l| l.error.clone())
                .unwrap_or_default();
            info!(addr = %spec.addr, port = spec.port, checks = ?spec.checks, status = s.as_str(), %error, "health: pair changed state");
            let server = self
                .health
                .server_of(spec.addr)
                .map_or_else(|| spec.addr.to_string(), |s| s.name.clone());
            if before == Status::Unknown && s == Status::Up {
                self.folded += 1;
            } else {
                self.out.record(Transition {
                    at: now,
                    server,
                    what: spec.checks.join(", "),
                    kind: "check",
                    by: String::new(),
                    from: before.as_str(),
                    to: s.as_str(),
                    detail: error,
                });
            }
            if let Some(tx) = self.sentinel_up.get(&self.sentinel_of[ev.idx]) {
                let any_up =
                    self.reports.iter().zip(&self.sentinel_of).any(|(r, sa)| {
                        *sa == self.sentinel_of[ev.idx] && r.state.status == Status::Up
                    });
                let _ = tx.send(any_up);
            }
            return true;
        }
        false
    }

    /// Sets each probe's decided state from its own state and the peers' votes (`[cluster]`);
    /// true if one changed. A decision that differs from this node's own view is logged and
    /// listed, so the dashboard shows why a server this node sees down is still answered.
    fn decide_all(&mut self) -> bool {
        let mut changed = false;
        for r in &mut self.reports {
            // Without peers (no `[cluster]`, the usual case) the own state is the decision.
            if self.votes.peers.is_empty() {
                changed |= std::mem::replace(&mut r.decided, r.state.status) != r.state.status;
                continue;
            }
            let keys: Vec<(IpAddr, String)> = r
                .spec
                .checks
                .iter()
                .map(|c| (r.spec.addr, c.clone()))
                .collect();
            let peers: Vec<Status> = self.votes.on(&keys).collect();
            let decided = cluster::decide(self.policy, r.state.status, peers.iter().copied());
            if decided == r.decided {
                continue;
            }
            changed = true;
            let before = std::mem::replace(&mut r.decided, decided);
            if peers.is_empty() || before == Status::Unknown && decided == r.state.status {
                continue;
            }
            let down = peers.iter().filter(|s| **s == Status::Down).count();
            let detail = format!(
                "policy {}: here {}, {} of {} peers down",
                self.policy.as_str(),
                r.state.status.as_str(),
                down,
                peers.len()
            );
            info!(addr = %r.spec.addr, checks = ?r.spec.checks, from = before.as_str(), to = decided.as_str(), %detail, "health: cluster decision changed");
            let server = self
                .health
                .server_of(r.spec.addr)
                .map_or_else(|| r.spec.addr.to_string(), |s| s.name.clone());
            self.out.record(Transition {
                at: SystemTime::now(),
                server,
                what: r.spec.checks.join(", "),
                kind: "cluster",
                by: String::new(),
                from: before.as_str(),
                to: decided.as_str(),
                detail,
            });
        }
        changed
    }

    /// Combined health of `addr` for `checks` (Up if all are Up, Down if any is Down), with the
    /// checks that are Down. A public address has its server's health.
    fn member_health(&self, addr: IpAddr, checks: &[String]) -> (Status, Vec<String>) {
        let addr = self.health.probed_address(addr);
        let mut all_up = true;
        let mut failing = Vec::new();
        for c in checks {
            match self
                .plan
                .pairs
                .get(&(addr, c.clone()))
                .map(|&i| self.reports[i].decided)
            {
                Some(Status::Down) => failing.push(c.clone()),
                Some(Status::Up) => {}
                _ => all_up = false,
            }
        }
        let status = if !failing.is_empty() {
            Status::Down
        } else if all_up {
            Status::Up
        } else {
            Status::Unknown
        };
        (status, failing)
    }

    /// The members of one family of a service, with their combined health.
    fn members(&self, svc_idx: usize, addrs: &[IpAddr]) -> Vec<Member> {
        let svc = &self.health.services[svc_idx];
        addrs
            .iter()
            .map(|&addr| {
                let server = self.health.server_of(addr);
                let (health, failing) = self.member_health(addr, &svc.checks);
                Member {
                    addr,
                    site: server.and_then(|s| s.site.clone()),
                    weight: server.map_or(1, |s| s.weight),
                    admin: server.map_or_else(Default::default, |s| s.admin),
                    health,
                    failing,
                }
            })
            .collect()
    }

    /// Logs (at WARN) and records a name entering or leaving a fallback step. Moving between
    /// `unknown` and `healthy` is the normal start and is not recorded.
    fn note_step(&self, v: &ServiceView, v6: bool, sel: &Selection) {
        let name = v.name.to_string();
        let Some(before) = self.out.step_changed((name.clone(), v.zone, v6), sel.step) else {
            return;
        };
        let plain = |s: Step| matches!(s, Step::Unknown | Step::Healthy);
        if plain(before) && plain(sel.step) {
            return;
        }
        let family = if v6 { "AAAA" } else { "A" };
        let answered = sel.why.iter().filter(|(_, w)| w.answered).count();
        let detail = format!(
            "{} of {} members answered{}",
            answered,
            sel.why.len(),
            if plain(sel.step) {
                ": back on healthy members"
            } else {
                ""
            }
        );
        if plain(sel.step) {
            warn!(service = %name, family, from = before.as_str(), to = sel.step.as_str(), "health: name left its fallback step");
        } else {
            warn!(service = %name, family, from = before.as_str(), to = sel.step.as_str(), answered, members = sel.why.len(), "health: name answers from a fallback step");
        }
        self.out.record(Transition {
            at: SystemTime::now(),
            server: String::new(),
            what: format!("{name} {family}"),
            kind: "service",
            by: String::new(),
            from: before.as_str(),
            to: sel.step.as_str(),
            detail,
        });
    }

    /// Builds and stores a new snapshot; returns when it must be rebuilt by itself.
    fn publish(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let mut views = Vec::new();
        let mut wake: Option<Instant> = None;
        for sp in self.plan.services.clone() {
            let mut sels = [None, None];
            for (k, addrs) in [&sp.v4, &sp.v6].into_iter().enumerate() {
                if addrs.is_empty() {
                    continue;
                }
                let members = self.members(sp.idx, addrs);
                let key = (sp.idx, sp.zone, k == 1);
                let since = self.down_since.get(&key).copied();
                let sel = select(&self.health.services[sp.idx], &members, since, now);
                if sel.preferred_down {
                    self.down_since.entry(key).or_insert(now);
                } else {
                    self.down_since.remove(&key);
                }
                if let Some(w) = sel.wake_at {
                    wake = Some(wake.map_or(w, |x: Instant| x.min(w)));
                }
                sels[k] = Some(sel);
            }
            let svc = &self.health.services[sp.idx];
            let [a, aaaa] = sels;
            views.push(ServiceView {
                name: svc.name.clone(),
                zone: sp.zone,
                a,
                aaaa,
                ttl: svc.ttl,
                cap: svc.max_answers,
            });
        }
        for v in &views {
            for (v6, sel) in [(false, &v.a), (true, &v.aaaa)] {
                let Some(sel) = sel else { continue };
                debug!(service = %v.name, step = sel.step.as_str(), "health: answer");
                self.note_step(v, v6, sel);
            }
        }
        // Relays: each backend by the relay backend rule.
        let relays: Vec<Vec<BackendView>> = self
            .relays
            .iter()
            .map(|r| {
                r.servers
                    .iter()
                    .map(|(_, addr, _)| {
                        let admin = self
                            .health
                            .server_of(*addr)
                            .map_or(AdminState::Ready, |s| s.admin);
                        let failing = r.checks.iter().any(|c| {
                            self.plan
                                .pairs
                                .get(&(*addr, c.clone()))
                                .map(|&i| self.reports[i].decided)
                                == Some(Status::Down)
                        });
                        backend_view(admin, failing, r.on_server_down)
                    })
                    .collect()
            })
            .collect();
        self.out.sink.publish(View {
            static_zones: self.static_zones.clone(),
            layout: self.layout.clone(),
            services: views,
            relays,
        });
        self.out.published.send_modify(|n| *n += 1);
        wake
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that drops every view.
    #[derive(Debug)]
    struct Discard;

    impl Publish for Discard {
        fn publish(&self, _: View) {}
    }

    #[test]
    fn transitions_keep_the_last_hundred() {
        let health = crate::config::testing::valid("").health;
        let out = Outputs::new(Arc::new(Discard), health);
        for i in 0..150 {
            out.record(Transition {
                at: SystemTime::now(),
                server: format!("ex{i}"),
                what: "owa".into(),
                kind: "check",
                by: String::new(),
                from: "up",
                to: "down",
                detail: String::new(),
            });
        }
        let list = out.transitions.lock().unwrap();
        assert_eq!(list.len(), TRANSITIONS_KEPT);
        assert_eq!(list.front().unwrap().server, "ex50");
        assert_eq!(list.back().unwrap().server, "ex149");
    }
}
