//! Start-up and shutdown: load everything, bind every listener, serve until SIGINT/SIGTERM.
//!
//! Loading and validation happen before any socket is bound, so a broken config fails fast with
//! its diagnostics and nothing half-started.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::app::{Command, Live, Loaded};
use crate::config::Config;
use crate::diag::Diagnostic;
use crate::dns::{self, xfr::TransferPolicy, Stats};
use crate::health::engine::{CheckTlsError, Outputs};
use crate::listeners::{ListenError, Listeners, Pending};
use crate::state::{Publisher, Snapshot, Store};
use crate::tls::TlsError;
use crate::zone::{serial_after, Zone};

/// Why `run` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The config or a zone is broken.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
    /// The health engine could not start (an https check's CA file, say).
    #[error(transparent)]
    Health(#[from] CheckTlsError),
    /// A listener could not be bound, or a relay's certificates could not be loaded.
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// Why a reload failed; the running config keeps serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The config or a zone is broken: the `path:line: message` lines of its errors.
    #[error("{}", .0.iter().filter(|d| d.is_error()).map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
    /// The admin state file cannot be read.
    #[error("{0}")]
    Overrides(Diagnostic),
    /// An https check's TLS settings cannot be loaded.
    #[error(transparent)]
    Health(#[from] CheckTlsError),
    /// A listener cannot be bound, a relay's front cannot be set up, or a DNS setting needs a
    /// restart.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// A certificate of a relay in force cannot be read again.
    #[error("{}: relay '{relay}': certificate reload failed: {source}; the running config and certificates are unchanged", path.display())]
    Certificates {
        /// The config file.
        path: std::path::PathBuf,
        /// The relay whose certificate failed.
        relay: String,
        /// What is wrong with the file.
        source: Box<TlsError>,
    },
    /// The process is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

/// Loads the config's zones into a snapshot, logging warnings. `previous` are the zones served
/// so far (on reload): `serial = "auto"` zones keep their serial while their content is
/// unchanged and move past it when it changes; other zones get a warning when their content
/// changed but their serial did not increase (secondaries would keep the old data).
///
/// # Errors
/// The diagnostics of a broken zone.
pub fn load_snapshot(config: &Config, previous: &[Zone]) -> Result<Snapshot, Vec<Diagnostic>> {
    let (mut zones, warnings) = config.load_zones()?;
    for w in config.warnings.iter().chain(&warnings) {
        warn!("{w}");
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    for (z, zc) in zones.iter_mut().zip(&config.zones) {
        // The same zone entry: a split-horizon config has one origin in several files.
        let old = previous
            .iter()
            .find(|o| o.origin == z.origin && o.file == z.file);
        let same = old.is_some_and(|o| o.content_digest() == z.content_digest());
        if zc.serial_auto {
            let serial = match old {
                Some(o) if same => o.serial(),
                Some(o) if !serial_after(now, o.serial()) => o.serial().wrapping_add(1),
                _ => now,
            };
            z.set_serial(serial);
        } else if let Some(o) = old {
            if !same && !serial_after(z.serial(), o.serial()) {
                warn!(
                    "{}: zone {}: the content changed but serial {} is not above {}; secondaries will keep the old data (raise the serial, or set serial = \"auto\")",
                    z.file.display(),
                    z.origin,
                    z.serial(),
                    o.serial()
                );
            }
        }
        info!(zone = %z.origin, serial = z.serial(), records = z.record_count, "zone loaded");
    }
    Ok(Snapshot::build(
        Arc::new(zones),
        Arc::new(config.views.clone()),
        Vec::new(),
        Vec::new(),
        |_, _| None,
        None,
    ))
}

/// Sends NOTIFY for every zone of `config` with secondaries whose serial differs from
/// `previous` (all of them at start).
fn notify_changed(
    config: &Config,
    zones: &[Zone],
    previous: &[Zone],
    transfers: &TransferPolicy,
    token: &CancellationToken,
) {
    // Zones are in config order: one entry per (origin, view set).
    for (i, (zc, z)) in config.zones.iter().zip(zones).enumerate() {
        if zc.notify.is_empty() {
            continue;
        }
        let unchanged = previous
            .iter()
            .any(|o| o.origin == z.origin && o.file == z.file && o.serial() == z.serial());
        if !unchanged {
            let signer = transfers.signer(i).cloned();
            dns::notify::spawn(&z.soa, &zc.notify, signer, token);
        }
    }
}

/// Serves `config` until `token` is cancelled; `demo` holds the demo's simulated servers.
///
/// # Errors
/// A broken config or zone, or a listener that cannot be bound.
pub async fn run(
    config: Config,
    token: CancellationToken,
    demo: Option<Arc<dyn crate::app::Demo>>,
) -> Result<(), RunError> {
    let Assembled {
        live,
        listeners,
        pending,
        commands,
    } = assemble(&config, &token, demo)?;
    serve(&live, &config, listeners, pending).await;
    let tasks = spawn_control(&live, &config, commands);
    announce_ready(&live, &config).await;
    token.cancelled().await;
    shut_down(&live, tasks).await;
    Ok(())
}

/// Loads everything and binds every listener, serving nothing yet: a broken config or a bad
/// address fails start-up with nothing half-started. The health engine is started, so the
/// first snapshot (admin states applied) is in place before any relay accepts.
fn assemble(
    config: &Config,
    token: &CancellationToken,
    demo: Option<Arc<dyn crate::app::Demo>>,
) -> Result<Assembled, RunError> {
    let started = SystemTime::now();
    let snap = load_snapshot(config, &[]).map_err(RunError::Invalid)?;
    // The health engine publishes over these very Arcs, sharing this snapshot's prebuilt answers.
    let loaded = (snap.static_zones.clone(), snap.layout.clone());
    let store: Store = Arc::new(ArcSwap::from_pointee(snap));
    // Admin states set through the API win over the config's, across restarts.
    let mut serving = config.clone();
    apply_overrides(&mut serving).map_err(|e| RunError::Invalid(vec![e]))?;
    let tls = crate::health::engine::tls_configs(&serving.health)?;
    // One counter shard per UDP worker, one for DNS over TCP.
    let stats = Arc::new(Stats::new(
        config.dns.listen.len() * config.dns.udp_workers + 1,
    ));
    let transfers = Arc::new(ArcSwap::from_pointee(TransferPolicy::new(
        &config.zones,
        &config.views,
    )));
    let cookie_fallback: crate::query::cookie::Secret = rand::random();
    if config.dns.cookies.enabled && config.dns.cookies.secret.is_none() {
        info!("dns.cookies: no secret_file; using a random secret (nodes of one namespace should share one)");
    }
    let edge = Arc::new(ArcSwap::from_pointee(dns::Edge::new(
        &config.dns,
        None,
        cookie_fallback,
    )));
    let shared = crate::listeners::Shared {
        store: store.clone(),
        stats: stats.clone(),
        transfers: transfers.clone(),
        edge: edge.clone(),
        token: token.clone(),
    };
    // Relays: one current-thread runtime per core, all accepting from one listening socket per
    // relay address; a connection never leaves the thread that accepted it (no work stealing,
    // no cross-thread wake-ups).
    let listeners = Listeners::new(shared, config);
    let pending = listeners.prepare(config, true)?;
    if config.admin.token.is_none() {
        info!(
            "admin: no token_file configured; admin actions are disabled, read-only endpoints work"
        );
    }
    // The engine publishes every snapshot from now on (health, and relay backends' admin state,
    // drain or maint, checks or not). Service names are answered from the zone's full set until
    // each member has a result.
    let slots = stats.clone();
    let publisher = Publisher::new(store.clone(), move |view, name| {
        slots.slot_of(view, &name.to_string())
    });
    let publisher = Arc::new(publisher);
    let out = Outputs::new(publisher.clone(), serving.health.clone());
    let handle = crate::health::engine::start(
        &serving,
        loaded,
        &out,
        &[],
        Vec::new(),
        tls,
        token.child_token(),
    );
    let (commands, command_rx) = mpsc::channel(4);
    let live = Arc::new(Live {
        started,
        store,
        dns: stats,
        out,
        publisher,
        relays: listeners.current.clone(),
        engine: tokio::sync::Mutex::new(Some(handle)),
        ready: AtomicBool::new(false),
        loaded: ArcSwap::from_pointee(Loaded {
            config: Arc::new(config.clone()),
            at: SystemTime::now(),
            reloads: 0,
            last_error: None,
        }),
        admin_lock: tokio::sync::Mutex::new(()),
        token: token.clone(),
        exited: CancellationToken::new(),
        demo,
        transfers,
        edge,
        cookie_fallback,
        listeners: tokio::sync::Mutex::new(None),
        history: std::sync::Mutex::default(),
        commands,
    });
    Ok(Assembled {
        live,
        listeners,
        pending,
        commands: command_rx,
    })
}

/// Everything loaded and bound, nothing served yet.
struct Assembled {
    live: Arc<Live>,
    listeners: Listeners,
    /// The bound sockets `Listeners::apply` starts serving.
    pending: Pending,
    /// The admin listener's commands, served once serving starts.
    commands: mpsc::Receiver<Command>,
}

/// Starts serving on every bound listener, and the relays' watchers: closing connections to
/// servers that went into maintenance, and reloading changed certificates.
async fn serve(live: &Arc<Live>, config: &Config, mut listeners: Listeners, pending: Pending) {
    listeners.apply(config, pending, admin_starter(live));
    tokio::spawn(crate::relay::server::watch_closes(
        listeners.current.clone(),
        live.store.clone(),
        live.out.published.subscribe(),
        live.token.clone(),
    ));
    tokio::spawn(crate::relay::server::watch_certificates(
        listeners.current.clone(),
        std::time::Duration::from_secs(2),
        live.token.clone(),
    ));
    *live.listeners.lock().await = Some(listeners);
}

/// The tasks that change what is served: the admin listener's commands, SIGHUP and (with
/// `[process] watch`) the file watcher.
fn spawn_control(
    live: &Arc<Live>,
    config: &Config,
    commands: mpsc::Receiver<Command>,
) -> tokio::task::JoinSet<()> {
    let token = &live.token;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(serve_commands(live.clone(), token.clone(), commands));
    tasks.spawn(crate::admin::history::run(live.clone(), token.clone()));
    tasks.spawn(crate::cluster::run(live.clone(), token.clone()));
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => {
            tasks.spawn(reload_on_hangup(live.clone(), token.clone(), hup));
        }
        Err(error) => warn!(%error, "no SIGHUP handler; reload through the admin API only"),
    }
    if config.process.watch {
        info!("watching the config, zone and certificate files for changes");
        let files = watched_files(config);
        let seen = stamps(&files);
        tasks.spawn(watch_files(live.clone(), token.clone(), files, seen));
    }
    tasks
}

/// Waits for the first probe round (at most `startup_timeout`), then announces readiness: the
/// ready flag, secondaries' NOTIFY, the demo banner and systemd.
async fn announce_ready(live: &Arc<Live>, config: &Config) {
    let mut first_round = live.out.first_round.subscribe();
    let bound = config.health.startup_timeout;
    if tokio::time::timeout(bound, first_round.wait_for(|done| *done))
        .await
        .is_err()
    {
        warn!(
            ?bound,
            "health: first probe round not complete; unknown pairs answer the zone's full set"
        );
    }
    live.ready.store(true, Ordering::Relaxed);
    info!("mailns ready");
    notify_changed(
        config,
        &live.store.load().static_zones,
        &[],
        &live.transfers.load(),
        &live.token,
    );
    if let Some(demo) = &live.demo {
        eprintln!("{}", demo.banner(config));
    }
    notify_systemd(&[sd_notify::NotifyState::Ready]);
}

/// Stops the engine and the control tasks, then waits for every listener's task and relay
/// thread to finish (relays drain their connections within the shutdown grace).
async fn shut_down(live: &Live, mut tasks: tokio::task::JoinSet<()>) {
    info!("shutting down");
    live.ready.store(false, Ordering::Relaxed);
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    // The admin listener ends last, when everything else has.
    let _exit = live.exited.clone().drop_guard();
    if let Some(h) = live.engine.lock().await.take() {
        h.stop().await;
    }
    while tasks.join_next().await.is_some() {}
    let Some(mut listeners) = live.listeners.lock().await.take() else {
        return;
    };
    while listeners.tasks.join_next().await.is_some() {}
    let threads = std::mem::take(&mut listeners.threads_handles);
    tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await
    .ok();
}

/// Starts the admin listener's server on a listener the [`Listeners`] bound.
///
/// A reload that moves the listener stops it at once; shutdown does not: the admin listener
/// serves until shutdown is complete, so the dashboard and `/readyz` show it going on ("shutting
/// down, N relayed sessions left") while DNS has already stopped (resolvers turn to the other
/// name servers of the zone at once).
fn admin_starter(live: &Arc<Live>) -> impl FnOnce(TcpListener, CancellationToken) {
    let live = live.clone();
    move |listener, token| {
        let stop = CancellationToken::new();
        let (until, live2) = (stop.clone(), live.clone());
        tokio::spawn(async move {
            token.cancelled().await;
            if live2.shutting_down() {
                live2.exited.cancelled().await;
            }
            until.cancel();
        });
        tokio::spawn(crate::admin::serve(listener, live, stop));
    }
}

/// Applies the admin state file to `config`'s servers.
///
/// # Errors
/// A state file that cannot be read or is malformed.
fn apply_overrides(config: &mut Config) -> Result<(), Diagnostic> {
    let file = &config.admin.state_file;
    let overrides =
        crate::admin::persist::load(file).map_err(|e| Diagnostic::error(file, None, e))?;
    for name in crate::admin::persist::apply(&mut config.health, &overrides) {
        warn!(server = %name, file = %file.display(), "admin state file names a server the config does not have; ignored");
    }
    Ok(())
}

/// The files a config reads: itself, its zones, the admin token, certificates and CA files.
fn watched_files(config: &Config) -> Vec<std::path::PathBuf> {
    let mut files = vec![config.path.clone()];
    files.extend(config.zones.iter().map(|z| z.file.clone()));
    files.extend(config.admin.token_file.clone());
    for r in &config.relays {
        if let Some(t) = &r.tls {
            for (cert, key) in &t.certificates {
                files.extend([cert.clone(), key.clone()]);
            }
            files.extend(t.backend.ca_file.clone());
        }
    }
    files
}

/// A fingerprint of each file (None for a missing one): modification time, size and a hash of
/// the content. The content is what decides: an edit that keeps the size can land within one
/// tick of a coarse file-system clock and leave the modification time as it was.
fn stamps(files: &[std::path::PathBuf]) -> Vec<Option<(SystemTime, u64, u64)>> {
    use std::hash::{Hash, Hasher};
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok()?;
            let body = std::fs::read(f).ok()?;
            let mut h = rustc_hash::FxHasher::default();
            body.hash(&mut h);
            Some((meta.modified().ok()?, meta.len(), h.finish()))
        })
        .collect()
}

/// `[process] watch = true`: reloads when a file the config reads changes. Polled (every
/// second, reading the files: a mail namespace's zones are small): it works the same on every
/// file system and through `git checkout`, which replaces files. A change is acted on once the
/// files have stayed the same for half a second, so an editor's or git's several writes make
/// one reload.
///
/// `seen` are the files' stamps when the config was loaded, taken before this task is spawned:
/// a task first polled after an early edit must not take the edited files as the baseline.
async fn watch_files(
    live: Arc<Live>,
    token: CancellationToken,
    mut files: Vec<std::path::PathBuf>,
    mut seen: Vec<Option<(SystemTime, u64, u64)>>,
) {
    let poll = std::time::Duration::from_secs(1);
    let settle = std::time::Duration::from_millis(500);
    loop {
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = token.cancelled() => return,
        }
        let mut now = stamps(&files);
        if now == seen {
            continue;
        }
        // Debounce: wait until nothing changes for `settle`.
        loop {
            tokio::select! {
                () = tokio::time::sleep(settle) => {}
                () = token.cancelled() => return,
            }
            let later = stamps(&files);
            if later == now {
                break;
            }
            now = later;
        }
        info!("watched files changed: reloading");
        // The baseline is what the files were before the reload read them, not after: a file
        // written while the reload runs is then seen as changed on the next poll, not lost.
        let before: std::collections::HashMap<_, _> = files.iter().cloned().zip(now).collect();
        let _ = reload(&live, "file watch").await;
        // The new config may read other files; a failed reload keeps watching the same ones.
        files = watched_files(&live.loaded.load().config);
        let fresh = stamps(&files);
        seen = files
            .iter()
            .zip(fresh)
            .map(|(f, stamp)| before.get(f).cloned().unwrap_or(stamp))
            .collect();
    }
}

/// Tells systemd (`Type=notify`) about readiness, reloads and stopping; a no-op elsewhere.
fn notify_systemd(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(state) {
        debug!(%error, "sd_notify failed");
    }
}

/// Serves the admin listener's commands, one at a time, until shutdown.
async fn serve_commands(
    live: Arc<Live>,
    token: CancellationToken,
    mut commands: mpsc::Receiver<Command>,
) {
    loop {
        let command = tokio::select! {
            c = commands.recv() => c,
            () = token.cancelled() => return,
        };
        match command {
            Some(Command::Reload { done, by }) => {
                let _ = done.send(reload(&live, &by).await.map_err(|e| e.to_string()));
            }
            None => return,
        }
    }
}

/// Reloads on SIGHUP.
///
/// `hup` is installed before "ready" is announced: SIGHUP's default action ends the process, so a
/// `systemctl reload` right after start must already find the handler.
async fn reload_on_hangup(
    live: Arc<Live>,
    token: CancellationToken,
    mut hup: tokio::signal::unix::Signal,
) {
    loop {
        tokio::select! {
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                let _ = reload(&live, "SIGHUP").await;
            }
            () = token.cancelled() => return,
        }
    }
}

/// Reloads the config, its zones and every relay's certificates. The new config is validated
/// completely before anything changes; if anything is wrong the old one keeps serving and the
/// error is kept for the dashboard until a reload succeeds. Health state carries over for probes
/// the change did not touch.
///
/// Listeners follow the config (see [`crate::listeners`]): unchanged ones keep their sockets,
/// new ones are bound first, removed ones close. Changes to the DNS worker settings still need a
/// restart and fail the reload.
///
/// # Errors
/// The `path:line: message` lines of what is wrong.
/// `by` says who asked (the admin client's address, SIGHUP, the file watch) in the
/// transitions list.
async fn reload(live: &Arc<Live>, by: &str) -> Result<(), ReloadError> {
    let _guard = live.admin_lock.lock().await;
    let number = live.loaded.load().reloads + 1;
    // Every event of the reload (engine, listeners, certificates) carries its number.
    let result = reload_now(live)
        .instrument(info_span!("reload", number))
        .await;
    live.out.record(crate::health::report::Transition {
        at: SystemTime::now(),
        server: String::new(),
        what: "config".into(),
        kind: "reload",
        by: by.to_string(),
        from: "loaded",
        to: if result.is_ok() { "reloaded" } else { "failed" },
        detail: match &result {
            Ok(()) => format!("reload {number} in force"),
            Err(e) => e.to_string().lines().next().unwrap_or_default().to_string(),
        },
    });
    result
}

/// [`reload`], with the admin lock held.
async fn reload_now(live: &Arc<Live>) -> Result<(), ReloadError> {
    // systemd 253+ wants the monotonic time with RELOADING=1.
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => notify_systemd(&[sd_notify::NotifyState::Reloading, now]),
        Err(_) => notify_systemd(&[sd_notify::NotifyState::Reloading]),
    }
    let result = prepare_reload(live).await;
    notify_systemd(&[sd_notify::NotifyState::Ready]);
    let now = SystemTime::now();
    let old = live.loaded.load_full();
    match result {
        Ok(config) => {
            live.loaded.store(Arc::new(Loaded {
                config: Arc::new(config),
                at: now,
                reloads: old.reloads + 1,
                last_error: None,
            }));
            info!("reload complete");
            Ok(())
        }
        Err(error) => {
            let message = error.to_string();
            for line in message.lines() {
                warn!("reload failed: {line}");
            }
            live.loaded.store(Arc::new(Loaded {
                config: old.config.clone(),
                at: old.at,
                reloads: old.reloads,
                last_error: Some((now, message)),
            }));
            Err(error)
        }
    }
}

/// Loads and validates the new config and zones, then replaces the engine.
async fn prepare_reload(live: &Arc<Live>) -> Result<Config, ReloadError> {
    let old = live.loaded.load_full();
    let new = Config::load(&old.config.path).map_err(ReloadError::Invalid)?;
    let previous = live.store.load().static_zones.clone();
    let snap = load_snapshot(&new, &previous).map_err(ReloadError::Invalid)?;
    let mut serving = new.clone();
    apply_overrides(&mut serving).map_err(ReloadError::Overrides)?;
    let tls = crate::health::engine::tls_configs(&serving.health)?;
    // Bind what is new before anything changes: a bind error leaves everything as it was.
    let mut listeners = live.listeners.lock().await;
    let Some(ls) = listeners.as_mut() else {
        return Err(ReloadError::ShuttingDown);
    };
    // Certificates of the relays in force are read again (new and changed relays read theirs
    // in `prepare`); one that fails fails the reload before anything changes.
    let mut certificates = Vec::new();
    for r in live.relays.load().iter() {
        if let Some(front) = &r.front {
            let certs = front.load_files().map_err(|e| ReloadError::Certificates {
                path: new.path.clone(),
                relay: r.def.name.clone(),
                source: Box::new(e),
            })?;
            certificates.push((r.clone(), certs));
        }
    }
    let pending = ls.prepare(&new, false)?;
    let mut engine = live.engine.lock().await;
    // The old engine's probe tasks carry on under the new one where the probe is unchanged.
    let probers = match engine.take() {
        Some(h) => h.retire().await,
        None => Vec::new(),
    };
    let carry = live.out.reports.borrow().clone();
    let zones = snap.static_zones.clone();
    let loaded = (zones.clone(), snap.layout.clone());
    live.publisher.stage(snap);
    *engine = Some(crate::health::engine::start(
        &serving,
        loaded,
        &live.out,
        &carry,
        probers,
        tls,
        live.token.child_token(),
    ));
    drop(engine);
    // The new engine's snapshot orders relay views as the new config does: reindex now.
    ls.apply(&new, pending, admin_starter(live));
    drop(listeners);
    for (relay, certs) in certificates {
        let n = certs.len();
        if let Some(front) = &relay.front {
            front.install(certs);
            info!(relay = %relay.def.name, certificates = n, "certificates reloaded");
        }
    }
    let policy = TransferPolicy::new(&new.zones, &new.views);
    notify_changed(&new, &zones, &previous, &policy, &live.token);
    live.transfers.store(Arc::new(policy));
    let edge = dns::Edge::new(&new.dns, Some(&live.edge.load()), live.cookie_fallback);
    live.edge.store(Arc::new(edge));
    Ok(new)
}

/// Resolves when SIGINT or SIGTERM arrives.
///
/// The handlers are installed when this is called (inside the runtime), not when the future is
/// first polled: a SIGTERM right after start must stop mailns cleanly, not by the default action.
#[allow(
    clippy::expect_used,
    reason = "at start-up only: without signal handlers mailns cannot stop cleanly, so it does not start"
)]
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler must not fail");
    let mut int =
        signal(SignalKind::interrupt()).expect("installing a SIGINT handler must not fail");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_serials_follow_content_not_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let zone = dir.path().join("z.zone");
        std::fs::write(
            &zone,
            "$TTL 60\n@ SOA ns h 7 2 3 4 5\n@ NS ns\nns A 127.0.0.1\n",
        )
        .unwrap();
        let path = dir.path().join("m.toml");
        let text = "[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\nserial = \"auto\"\n";
        let config = Config::parse(&path, text).unwrap();
        let first = load_snapshot(&config, &[]).unwrap();
        let s1 = first.static_zones[0].serial();
        assert!(s1 > 1_700_000_000, "derived from the load time: {s1}");
        assert_eq!(
            first.views[0].zones.zones[0].serial(),
            s1,
            "answers carry it too"
        );
        // Same content: same serial, however often it is reloaded.
        let again = load_snapshot(&config, &first.static_zones).unwrap();
        assert_eq!(again.static_zones[0].serial(), s1);
        // Changed content: a higher serial, even within the same second.
        std::fs::write(
            &zone,
            "$TTL 60\n@ SOA ns h 7 2 3 4 5\n@ NS ns\nns A 127.0.0.1\nnew A 127.0.0.2\n",
        )
        .unwrap();
        let changed = load_snapshot(&config, &again.static_zones).unwrap();
        assert!(serial_after(changed.static_zones[0].serial(), s1));
    }
}
