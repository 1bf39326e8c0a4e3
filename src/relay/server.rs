//! Relay listeners: accept, admit (allow-list, limits), pick a backend among the usable ones,
//! connect (trying the next on failure before the client notices), then pump bytes.
//!
//! With no usable backend the client's connection is closed at once, so it moves on to its next
//! address instead of hanging.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, field, info, info_span, warn, Instrument, Span};

use super::copy::{self, Bytes};
use super::pick::{self, Candidate};
use super::sni;
use crate::config::relay::{RelayDef, RelayKind};
use crate::health::view::BackendView;
use crate::state::Store;
use crate::tls::front::Front;
use crate::tls::TlsError;

/// Counters of one backend of one relay.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Open relayed connections.
    pub active: AtomicU64,
    /// The most connections open at once since start (HAProxy's "max sessions").
    pub peak: AtomicU64,
    /// Relayed connections since start.
    pub total: AtomicU64,
    /// Failed connect attempts.
    pub failed_connects: AtomicU64,
    /// Bytes each way.
    pub bytes: Bytes,
}

/// Counters of one relay.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Per backend, in config order.
    pub servers: Vec<ServerStats>,
    /// Clients refused: not allowed, over a limit, or no usable backend.
    pub refused: AtomicU64,
}

/// A relay that cannot be set up: its TLS front, or transparent connections without the
/// capability.
#[derive(Debug, thiserror::Error)]
#[error("relay '{relay}': {source}")]
pub struct RelayError {
    /// The relay's name.
    pub relay: String,
    /// What is wrong.
    pub source: Box<RelaySetupError>,
}

/// What stops a relay from being set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelaySetupError {
    /// Its certificates or CA file.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// `transparent = true`, but the kernel refuses IP_TRANSPARENT.
    #[error("{}: {source}", super::transparent::NEEDS_CAP)]
    Transparent {
        /// The kernel's refusal.
        source: io::Error,
    },
}

/// A relay's shared state.
#[derive(Debug)]
pub struct Relay {
    /// Its settings, as validated.
    pub def: RelayDef,
    /// Its position among the configured relays (index into the snapshot's relay views); a
    /// reload that removes an earlier relay moves it.
    index: AtomicUsize,
    /// Connections, bytes and refusals, for the dashboard and the metrics.
    pub stats: RelayStats,
    turn: AtomicU64,
    /// TLS termination (offload, re-encrypt); None: passthrough.
    pub front: Option<Front>,
    /// Per backend: cancelled (and replaced) to close its open connections.
    closers: Vec<ArcSwap<CancellationToken>>,
    permits: Arc<Semaphore>,
    /// SMTP refusal dialogues (554, then QUIT answered) at once.
    refusals: Arc<Semaphore>,
    per_client: Mutex<HashMap<ipnet::IpNet, usize>>,
}

impl Relay {
    /// A relay for `def`, the `index`-th of the config.
    ///
    /// # Errors
    /// TLS termination whose certificates or CA file cannot be loaded, or transparent
    /// connections the kernel refuses.
    pub fn new(def: RelayDef, index: usize, default_name: &str) -> Result<Arc<Self>, RelayError> {
        let front = match &def.tls {
            Some(tls) => Some(Front::new(tls, default_name).map_err(|e| RelayError {
                relay: def.name.clone(),
                source: Box::new(e.into()),
            })?),
            None => None,
        };
        if def.transparent {
            super::transparent::available_for(&def).map_err(|source| RelayError {
                relay: def.name.clone(),
                source: Box::new(RelaySetupError::Transparent { source }),
            })?;
        }
        let stats = RelayStats {
            servers: def.servers.iter().map(|_| ServerStats::default()).collect(),
            refused: AtomicU64::new(0),
        };
        Ok(Arc::new(Self {
            front,
            permits: Arc::new(Semaphore::new(def.max_connections)),
            refusals: Arc::new(Semaphore::new(super::refuse::AT_ONCE)),
            closers: def
                .servers
                .iter()
                .map(|_| ArcSwap::from_pointee(CancellationToken::new()))
                .collect(),
            def,
            index: AtomicUsize::new(index),
            stats,
            turn: AtomicU64::new(0),
            per_client: Mutex::new(HashMap::new()),
        }))
    }

    /// Closes the open connections of every backend whose view says so. New connections get a
    /// fresh token, so a server back from maintenance serves again.
    #[allow(
        clippy::indexing_slicing,
        reason = "a server index comes from def.servers, and new() makes stats.servers and closers one per server"
    )]
    pub fn apply(&self, views: &[BackendView]) {
        for (i, v) in views.iter().enumerate() {
            if !v.close {
                continue;
            }
            let Some(closer) = self.closers.get(i) else {
                continue;
            };
            let open = self.stats.servers[i].active.load(Ordering::Relaxed);
            let old = closer.swap(Arc::new(CancellationToken::new()));
            if !old.is_cancelled() && open > 0 {
                info!(relay = %self.def.name, server = %self.def.servers[i].0, open, "closing relayed connections of a server that is down or in maintenance");
            }
            old.cancel();
        }
    }

    /// Its position among the configured relays.
    pub fn index(&self) -> usize {
        self.index.load(Ordering::Relaxed)
    }

    /// Moves it to position `index` (a reload reordered the relays).
    pub fn set_index(&self, index: usize) {
        self.index.store(index, Ordering::Relaxed);
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.def.allow.is_empty() || self.def.allow.iter().any(|n| n.contains(&ip))
    }
}

/// Accepts on `listener` (the `slot`-th listen address of the relay in `relay`, which a reload
/// may replace) until `token` is cancelled; open connections finish on their own.
pub async fn serve(
    listener: TcpListener,
    slot: usize,
    relay: Arc<ArcSwap<Relay>>,
    store: Store,
    token: CancellationToken,
) {
    let Ok(bound) = listener.local_addr() else {
        warn!(relay = %relay.load().def.name, "relay listener has no local address");
        return;
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = token.cancelled() => break,
        };
        let (client, peer) = match accepted {
            Ok((c, p)) => (c, crate::addr::canonical_socket(p)),
            Err(error) => {
                warn!(relay = %relay.load().def.name, %error, "relay accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        // The relay in force now: a reload that changes it keeps this listener.
        let relay = relay.load_full();
        let store = store.clone();
        // The port backends are reached on when the relay keeps the client's port (no
        // `backend_port`): the listener's.
        let port = relay
            .def
            .backend_ports
            .get(slot)
            .copied()
            .flatten()
            .unwrap_or(bound.port());
        // Detached: on shutdown, accepting stops and open connections get the grace period
        // (`drain`) on this thread's runtime.
        tokio::spawn(connection(client, peer, bound, port, relay, store));
    }
}

/// One relayed connection: set up (admission, SNI or TLS, backend connect), then pump.
///
/// Shaped for what an idle connection holds (thousands of Outlook connections idle for long):
/// - the set-up runs boxed: its state (TLS handshake, connect attempts, their timers) is freed
///   once the backend answers, so the task keeps only what the pump needs;
/// - this and [`relay_bytes`] are plain fns returning async blocks: an async fn keeps its
///   arguments twice (as passed, and moved into locals), as would a spawned block calling it.
///
/// Measured with `bench/relay.py --parts idle`: 3.0 kB of mailns's own memory per idle relayed
/// connection, where one inline async fn held 5.6 kB (`BENCHMARKS.md`).
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice"
)]
fn connection(
    client: TcpStream,
    peer: SocketAddr,
    bound: SocketAddr,
    port: u16,
    relay: Arc<Relay>,
    store: Store,
) -> impl std::future::Future<Output = ()> + 'static {
    // Every event of the connection carries the relay, the client and (once picked) the server.
    let span = info_span!("relay", relay = %relay.def.name, %peer, server = field::Empty);
    async move {
        let ended = match Box::pin(establish(client, peer, bound, port, &relay, &store)).await {
            Ok(Some(est)) => relay_bytes(est, &relay).await,
            Ok(None) => Ok(()),
            Err(error) => Err(error),
        };
        if let Err(error) = ended {
            debug!(%error, "relay connection ended");
        }
    }
    .instrument(span)
}

/// A relayed connection whose backend is connected: what the pump phase keeps.
struct Established<'r> {
    client: Client,
    upstream: TcpStream,
    /// The backend, as an index into the relay's servers.
    server: usize,
    /// The name the client asked for (TLS), for re-encryption.
    sni: Option<String>,
    /// Cancelled to close the connection (maintenance, or a server down with
    /// `on_server_down = "close"`).
    stop: Arc<CancellationToken>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _client_slot: ClientSlot<'r>,
}

/// Admits the client (allow-list, limits), reads the SNI or completes the TLS handshake, and
/// connects to a backend. None: the connection was refused or dropped, and has been dealt with.
#[allow(
    clippy::indexing_slicing,
    reason = "a server index comes from def.servers, and new() makes stats.servers and closers one per server"
)]
async fn establish<'r>(
    client: TcpStream,
    peer: SocketAddr,
    bound: SocketAddr,
    port: u16,
    relay: &'r Relay,
    store: &Store,
) -> io::Result<Option<Established<'r>>> {
    let def = &relay.def;
    let Some((client, permit, client_slot)) = admit(relay, client, peer).await else {
        relay.stats.refused.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    };
    let Some((client, prefix, sni)) = hello(relay, client).await? else {
        return Ok(None);
    };
    let route = sni.as_deref().and_then(|n| sni::route(&def.routes, n));
    if !def.routes.is_empty() {
        debug!(sni = ?sni, routed = route.is_some(), "client hello");
    }
    let pool = route.map_or(&def.default_pool, |r| &r.servers);
    let Some((i, mut upstream)) = connect_first(relay, store, pool, peer.ip(), port).await else {
        // Refuse at once: the client tries its next address.
        relay.stats.refused.fetch_add(1, Ordering::Relaxed);
        debug!("no usable backend; closing");
        return Ok(None);
    };
    Span::current().record("server", def.servers[i].0.as_str());
    preamble(relay, &client, &mut upstream, peer, bound, &prefix).await?;
    // Closed early if the server goes into maintenance (or down, with on_server_down = close).
    // The token is taken before the snapshot is read again, so a close published in between
    // is seen one way or the other.
    let stop = relay.closers[i].load_full();
    if store
        .load()
        .relays
        .get(relay.index())
        .and_then(|v| v.get(i))
        .is_some_and(|v| v.close)
    {
        return Ok(None);
    }
    Ok(Some(Established {
        client,
        upstream,
        server: i,
        sni,
        stop,
        _permit: permit,
        _client_slot: client_slot,
    }))
}

/// Admission: the allow-list (an SMTP client outside it gets a 554 first), the relay's
/// connection cap and the per-client cap. None: refused.
async fn admit(
    relay: &Relay,
    mut client: TcpStream,
    peer: SocketAddr,
) -> Option<(TcpStream, tokio::sync::OwnedSemaphorePermit, ClientSlot<'_>)> {
    if !relay.allowed(peer.ip()) {
        if relay.def.kind == RelayKind::Smtp {
            let line = format!(
                "554 5.7.1 <{}> is not allowed to relay through this address\r\n",
                peer.ip()
            );
            match relay.refusals.clone().try_acquire_owned() {
                Ok(_permit) => super::refuse::dialogue(client, line.as_bytes()).await,
                Err(_) => {
                    let _ = client.write_all(line.as_bytes()).await;
                    let _ = client.shutdown().await;
                }
            }
        }
        debug!("client not in the allow-list");
        return None;
    }
    let permit = relay.permits.clone().try_acquire_owned().ok()?;
    let slot = ClientSlot::take(relay, peer.ip())?;
    Some((client, permit, slot))
}

/// The name the client asked for, which picks the pool: read from the ClientHello
/// (passthrough, whose bytes, returned, then go to the backend first) or from the handshake
/// mailns completes itself (offload, re-encrypt). None: the handshake failed or timed out.
async fn hello(
    relay: &Relay,
    mut client: TcpStream,
) -> io::Result<Option<(Client, Vec<u8>, Option<String>)>> {
    let Some(front) = &relay.front else {
        if relay.def.routes.is_empty() {
            return Ok(Some((Client::Plain(client), Vec::new(), None)));
        }
        let (prefix, name) = sni::read_hello(&mut client, relay.def.sni_timeout).await?;
        return Ok(Some((Client::Plain(client), prefix, name)));
    };
    let limit = front.handshake_timeout;
    match timeout(limit, front.acceptor.accept(client)).await {
        Ok(Ok(tls)) => {
            let name = tls.get_ref().1.server_name().map(str::to_owned);
            Ok(Some((Client::Tls(Box::new(tls)), Vec::new(), name)))
        }
        Ok(Err(error)) => {
            debug!(%error, "TLS handshake failed");
            Ok(None)
        }
        Err(_) => {
            debug!(?limit, "TLS handshake timed out");
            Ok(None)
        }
    }
}

/// What the backend gets before the client's bytes: the PROXY v2 header (with
/// `proxy_protocol`), then the ClientHello bytes a passthrough relay read.
async fn preamble(
    relay: &Relay,
    client: &Client,
    upstream: &mut TcpStream,
    peer: SocketAddr,
    bound: SocketAddr,
    prefix: &[u8],
) -> io::Result<()> {
    if relay.def.proxy_protocol {
        // The address the client connected to: the listener's, unless it is a wildcard.
        let local = if bound.ip().is_unspecified() {
            client.tcp().local_addr().ok()
        } else {
            Some(bound)
        };
        if let Some(local) = local {
            let header = ppp::v2::Builder::with_addresses(
                ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                ppp::v2::Protocol::Stream,
                (peer, local),
            )
            .build()
            .map_err(|e| io::Error::other(e.to_string()))?;
            upstream.write_all(&header).await?;
        }
    }
    if !prefix.is_empty() {
        upstream.write_all(prefix).await?;
    }
    Ok(())
}

/// The pump phase: bytes both ways until the connection ends, counted against its server.
///
/// A plain fn returning an async block, not an async fn: an async fn copies its arguments into
/// locals, a second copy that every idle connection's task would hold.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice"
)]
#[allow(
    clippy::indexing_slicing,
    reason = "a server index comes from def.servers, and new() makes stats.servers and closers one per server"
)]
fn relay_bytes<'r>(
    est: Established<'r>,
    relay: &'r Relay,
) -> impl std::future::Future<Output = io::Result<()>> + 'r {
    async move {
        // Named, so that the block takes them: it captures only the fields it uses, and would
        // otherwise leave the permit and the client slot behind, released at once.
        let _held = (&est._permit, &est._client_slot);
        let def = &relay.def;
        // Fields are used in place, not destructured: locals moved out of `est` would be a
        // second copy in the task.
        let stop = &est.stop;
        let stats = &relay.stats.servers[est.server];
        let open = stats.active.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak.fetch_max(open, Ordering::Relaxed);
        stats.total.fetch_add(1, Ordering::Relaxed);
        let end = match (est.client, &relay.front) {
            (Client::Plain(client), _) => {
                copy::pump(client, est.upstream, def.timeouts, &stats.bytes, stop).await
            }
            (Client::Tls(tls), Some(front)) => match &front.connector {
                // Offload. Boxed too: inline, a larger TLS pump would size every connection's task.
                None => {
                    let pump = copy::pump_io(tls, est.upstream, def.timeouts, &stats.bytes, stop);
                    Box::pin(pump).await
                }
                // Re-encrypt, boxed: the backend's TLS state is large (1.1 kB for the handshake's
                // result alone), and inline it would sit in every relayed connection's task.
                Some(connector) => {
                    let backend = Backend {
                        upstream: est.upstream,
                        sni: est.sni,
                        stats,
                        stop,
                    };
                    Box::pin(reencrypt(tls, backend, relay, front, connector)).await
                }
            },
            (Client::Tls(_), None) => unreachable!("a TLS client needs the relay's front"),
        };
        stats.active.fetch_sub(1, Ordering::Relaxed);
        debug!(?end, "relay connection closed");
        Ok(())
    }
}

/// The backend side of a relayed connection, as re-encryption needs it.
struct Backend<'a> {
    upstream: TcpStream,
    /// The name the client asked for.
    sni: Option<String>,
    stats: &'a ServerStats,
    stop: &'a CancellationToken,
}

/// Re-encrypt: TLS to the backend (the configured name, else the client's, else the relay's
/// default), then bytes both ways.
async fn reencrypt(
    tls: Box<tokio_rustls::server::TlsStream<TcpStream>>,
    backend: Backend<'_>,
    relay: &Relay,
    front: &Front,
    connector: &tokio_rustls::TlsConnector,
) -> copy::End {
    let def = &relay.def;
    let name = front
        .backend_sni
        .clone()
        .or(backend.sni)
        .unwrap_or_else(|| front.default_name.clone());
    let server_name = match ServerName::try_from(name) {
        Ok(n) => n,
        Err(error) => {
            warn!(%error, "no usable TLS server name for the backend");
            return copy::End::Error;
        }
    };
    let stats = backend.stats;
    match timeout(
        def.connect_timeout,
        connector.connect(server_name, backend.upstream),
    )
    .await
    {
        Ok(Ok(up)) => copy::pump_io(tls, up, def.timeouts, &stats.bytes, backend.stop).await,
        Ok(Err(error)) => {
            warn!(%error, "TLS to the backend failed");
            stats.failed_connects.fetch_add(1, Ordering::Relaxed);
            copy::End::Error
        }
        Err(_) => {
            warn!("TLS to the backend timed out");
            stats.failed_connects.fetch_add(1, Ordering::Relaxed);
            copy::End::Error
        }
    }
}

/// Applies every published snapshot's close flags to `relays` until `token` is cancelled.
pub async fn watch_closes(
    relays: Arc<ArcSwap<Vec<Arc<Relay>>>>,
    store: Store,
    mut published: tokio::sync::watch::Receiver<u64>,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            r = published.changed() => if r.is_err() { return },
            () = token.cancelled() => return,
        }
        let snap = store.load();
        for r in relays.load().iter() {
            if let Some(views) = snap.relays.get(r.index()) {
                r.apply(views);
            }
        }
    }
}

/// Relayed connections open across `relays`.
fn open_connections(relays: &[Arc<Relay>]) -> u64 {
    relays
        .iter()
        .flat_map(|r| &r.stats.servers)
        .map(|s| s.active.load(Ordering::Relaxed))
        .sum()
}

/// After accepting has stopped (shutdown): lets open connections finish for up to `grace`, then
/// closes the rest. Every relay thread runs it, since each one's connections live on its own
/// runtime; `log` picks the one that reports.
pub async fn drain(relays: &[Arc<Relay>], grace: std::time::Duration, log: bool) {
    let deadline = tokio::time::Instant::now() + grace;
    let open = open_connections(relays);
    if open == 0 {
        return;
    }
    if log {
        info!(
            open,
            ?grace,
            "shutdown: waiting for relayed connections to finish"
        );
    }
    while open_connections(relays) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let left = open_connections(relays);
    if left == 0 {
        return;
    }
    if log {
        info!(
            left,
            "shutdown: grace period over; closing relayed connections"
        );
    }
    for r in relays {
        for c in &r.closers {
            c.load().cancel();
        }
    }
    // Closing is immediate once each connection's task runs; bound the wait anyway.
    let bound = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while open_connections(relays) > 0 && tokio::time::Instant::now() < bound {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Picks among `pool` (indices into the relay's servers) and connects, trying the next
/// candidate on failure. A function of its own so that the candidate lists are freed before the
/// connection's long life.
#[allow(
    clippy::indexing_slicing,
    reason = "a server index comes from def.servers, and new() makes stats.servers and closers one per server"
)]
async fn connect_first(
    relay: &Relay,
    store: &Store,
    pool: &[usize],
    client: IpAddr,
    port: u16,
) -> Option<(usize, TcpStream)> {
    let def = &relay.def;
    // Candidates from the current snapshot (no view yet: all usable).
    let candidates: Vec<Candidate> = {
        let snap = store.load();
        let views = snap.relays.get(relay.index());
        pool.iter()
            .map(|&i| Candidate {
                weight: def.servers[i].2,
                usable: views.and_then(|v| v.get(i)).is_none_or(|v| v.usable),
                active: relay.stats.servers[i].active.load(Ordering::Relaxed),
            })
            .collect()
    };
    let turn = relay.turn.fetch_add(1, Ordering::Relaxed);
    let order = pick::order(def.balance, &candidates, client, &def.hash_key, turn);
    for i in order
        .iter()
        .take(def.retries as usize + 1)
        .map(|&k| pool[k])
    {
        let addr = SocketAddr::new(def.servers[i].1, port);
        let from = def.transparent.then_some(client);
        match timeout(def.connect_timeout, connect(addr, from)).await {
            Ok(Ok(s)) => return Some((i, s)),
            Ok(Err(error)) => {
                debug!(%addr, %error, "relay upstream connect failed")
            }
            Err(_) => debug!(%addr, "relay upstream connect timed out"),
        }
        relay.stats.servers[i]
            .failed_connects
            .fetch_add(1, Ordering::Relaxed);
    }
    None
}

/// Connects to a backend with TCP_NODELAY and SO_KEEPALIVE set (the client's socket inherits both
/// from the listener), from the client's address when `from` is given (a transparent relay).
async fn connect(addr: SocketAddr, from: Option<IpAddr>) -> io::Result<TcpStream> {
    if let Some(from) = from {
        return super::transparent::socket(from, addr)?.connect(addr).await;
    }
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_nodelay(true)?;
    s.set_keepalive(true)?;
    s.connect(addr).await
}

/// The client's side of a relayed connection.
enum Client {
    /// TCP as accepted (passthrough).
    Plain(TcpStream),
    /// TLS terminated by mailns.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Client {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(t) => t.get_ref().0,
        }
    }
}

/// Reloads the relays' certificates when their files change (checked every `every`), until
/// `token` is cancelled. SIGHUP reloads them with everything else (`runtime::reload`).
pub async fn watch_certificates(
    relays: Arc<ArcSwap<Vec<Arc<Relay>>>>,
    every: std::time::Duration,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = token.cancelled() => return,
        };
        for r in relays.load().iter() {
            let Some(front) = &r.front else { continue };
            match front.reload(false) {
                None => {}
                Some(Ok(n)) => {
                    info!(relay = %r.def.name, certificates = n, "certificates reloaded")
                }
                Some(Err(error)) => {
                    warn!(relay = %r.def.name, %error, "certificate reload failed; the previous certificates stay in use")
                }
            }
        }
    }
}

/// One open connection counted against its client; released on drop. A client is an IPv4
/// address, or an IPv6 /64 (one host holds a whole /64, so counting its addresses would give
/// it 2^64 allowances).
struct ClientSlot<'a> {
    relay: &'a Relay,
    ip: ipnet::IpNet,
}

/// Who a relay's per-client limit counts.
const RELAY_CLIENT: crate::limits::Caps = crate::limits::Caps {
    total: usize::MAX,
    per_client: usize::MAX,
    ipv4_prefix: 32,
    ipv6_prefix: 64,
};

impl<'a> ClientSlot<'a> {
    fn take(relay: &'a Relay, ip: IpAddr) -> Option<Self> {
        let ip = RELAY_CLIENT.client(ip);
        let mut map = relay
            .per_client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= relay.def.max_per_client {
            return None;
        }
        *n += 1;
        Some(Self { relay, ip })
    }
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        let mut map = self
            .relay
            .per_client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}
