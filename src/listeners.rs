//! Every listening socket (DNS, relays, port 80, admin) and how a reload changes them.
//!
//! Listeners are keyed by their configured address. A reload keeps the socket of every address
//! the new config still names (no rebind, no refused connection, no lost query), binds the new
//! ones before anything changes (a bind error fails the reload with nothing changed), and closes
//! the ones no longer named. A relay whose settings changed keeps its sockets: its accept loops
//! read the relay from a swappable slot, so new connections follow the new settings while open
//! ones finish under the old.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::redirect::RedirectConfig;
use crate::config::relay::RelayDef;
use crate::config::Config;
use crate::dns::{self, tcp::TcpOptions, xfr::TransferPolicy, Stats};
use crate::limits::Caps;
use crate::relay::server::{Relay, RelayError};
use crate::state::Store;

/// What listeners serve from.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The serving snapshot.
    pub store: Store,
    /// DNS counters.
    pub stats: Arc<Stats>,
    /// Transfer permissions.
    pub transfers: Arc<ArcSwap<TransferPolicy>>,
    /// Rate limiting and cookies.
    pub edge: Arc<ArcSwap<dns::Edge>>,
    /// The process's shutdown token; every listener runs on a child of it.
    pub token: CancellationToken,
}

/// A relay listener handed to a relay thread.
#[derive(Debug)]
struct Spawn {
    listener: std::net::TcpListener,
    slot: usize,
    relay: Arc<ArcSwap<Relay>>,
    token: CancellationToken,
}

/// One relay's listeners: (configured address, bound address, token) per listen address.
#[derive(Debug)]
struct RelayEntry {
    slot: Arc<ArcSwap<Relay>>,
    listeners: Vec<(SocketAddr, SocketAddr, CancellationToken)>,
}

/// Every listener in force.
#[derive(Debug)]
pub struct Listeners {
    shared: Shared,
    dns_settings: DnsRestartSettings,
    dns: Vec<(SocketAddr, CancellationToken)>,
    next_shard: usize,
    redirect: Vec<(SocketAddr, CancellationToken)>,
    /// The port 80 settings (swapped on reload).
    pub redirect_config: Arc<ArcSwap<RedirectConfig>>,
    admin: Option<(SocketAddr, CancellationToken)>,
    relays: Vec<(String, RelayEntry)>,
    threads: Vec<mpsc::UnboundedSender<Spawn>>,
    /// The relays in config order (views, dashboard, certificate reloads).
    pub current: Arc<ArcSwap<Vec<Arc<Relay>>>>,
    /// Every relay that may still hold connections (drained at shutdown).
    pub all: Arc<Mutex<Vec<Arc<Relay>>>>,
    /// DNS worker and relay threads, joined at shutdown.
    pub threads_handles: Vec<std::thread::JoinHandle<()>>,
    /// Tasks (DNS over TCP, redirect) that end with the process token.
    pub tasks: tokio::task::JoinSet<()>,
}

/// Sockets bound for a reload, not yet serving.
#[derive(Debug, Default)]
pub struct Pending {
    dns: Vec<(SocketAddr, Vec<std::net::UdpSocket>, TcpListener)>,
    redirect: Vec<(SocketAddr, TcpListener)>,
    admin: Option<(SocketAddr, TcpListener)>,
    /// Per relay of the new config, in order: the relay to serve (new or kept), and its new
    /// listeners (configured address, bound address, one socket per relay thread).
    relays: Vec<(Arc<Relay>, RelayListeners)>,
}

/// New relay listeners: (configured address, bound address, one socket per relay thread).
type RelayListeners = Vec<(SocketAddr, SocketAddr, Vec<std::net::TcpListener>)>;

/// The bind failure of a listener.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {addr}: {source}")]
pub struct BindError {
    /// The configured address that could not be bound.
    pub addr: SocketAddr,
    /// What the kernel said.
    pub source: std::io::Error,
}

/// Why the listeners of a config cannot be put in force; nothing has changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// A DNS setting only a restart applies changed (see [`DnsRestartSettings`]).
    #[error("{}: changes to dns.udp_workers, the dns.tcp_* settings or the client prefixes need a restart; the running config is unchanged", path.display())]
    NeedsRestart {
        /// The config file.
        path: std::path::PathBuf,
    },
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A relay's TLS front could not be set up.
    #[error(transparent)]
    Relay(#[from] RelayError),
}

/// The DNS settings only a restart applies: the UDP workers and their counter shards are
/// started once, and the TCP servers take their limits when they start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRestartSettings {
    udp_workers: usize,
    tcp_idle_timeout: std::time::Duration,
    tcp_io_timeout: std::time::Duration,
    tcp_max_connections: usize,
    tcp_max_per_client: usize,
    client_prefixes: (u8, u8),
}

impl DnsRestartSettings {
    fn of(config: &Config) -> Self {
        let d = &config.dns;
        Self {
            udp_workers: d.udp_workers,
            tcp_idle_timeout: d.tcp_idle_timeout,
            tcp_io_timeout: d.tcp_io_timeout,
            tcp_max_connections: d.tcp_max_connections,
            tcp_max_per_client: d.tcp_max_per_client,
            client_prefixes: d.client_prefixes,
        }
    }
}

impl Listeners {
    /// Starts the relay threads (one current-thread runtime per core; a connection never
    /// leaves the thread that accepted it) with no listener yet.
    #[allow(
        clippy::expect_used,
        reason = "at start-up: without its relay threads and their runtimes mailns cannot serve, so it does not start"
    )]
    pub fn new(shared: Shared, config: &Config) -> Self {
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let all: Arc<Mutex<Vec<Arc<Relay>>>> = Arc::default();
        let mut threads = Vec::new();
        let mut handles = Vec::new();
        let grace = config.process.shutdown_grace;
        for w in 0..workers {
            let (tx, rx) = mpsc::unbounded_channel();
            threads.push(tx);
            let (store, token, all) = (shared.store.clone(), shared.token.clone(), all.clone());
            let t = std::thread::Builder::new()
                .name(format!("relay-{w}"))
                .spawn(move || relay_thread(rx, store, token, all, grace, w == 0))
                .expect("spawning a thread must not fail at start-up");
            handles.push(t);
        }
        Self {
            shared,
            dns_settings: DnsRestartSettings::of(config),
            dns: Vec::new(),
            next_shard: 0,
            redirect: Vec::new(),
            redirect_config: Arc::new(ArcSwap::from_pointee(config.redirect.clone())),
            admin: None,
            relays: Vec::new(),
            threads,
            current: Arc::new(ArcSwap::from_pointee(Vec::new())),
            all,
            threads_handles: handles,
            tasks: tokio::task::JoinSet::new(),
        }
    }

    /// Binds what `config` names and is not bound yet; builds the relays that are new or
    /// changed. Nothing changes until [`Listeners::apply`].
    ///
    /// # Errors
    /// A listener that cannot be bound, relay certificates that cannot be loaded, or a change to
    /// the DNS settings that only a restart applies.
    pub fn prepare(&self, config: &Config, first: bool) -> Result<Pending, ListenError> {
        if !first && DnsRestartSettings::of(config) != self.dns_settings {
            return Err(ListenError::NeedsRestart {
                path: config.path.clone(),
            });
        }
        let mut p = Pending::default();
        for &addr in &config.dns.listen {
            if !self.dns.iter().any(|(a, _)| *a == addr) {
                let (socks, tcp) = bind_dns(addr, config.dns.udp_workers)?;
                p.dns.push((addr, socks, tcp));
            }
        }
        for &addr in &config.redirect.listen {
            if !self.redirect.iter().any(|(a, _)| *a == addr) {
                let l = reuseport_listener(addr)
                    .and_then(TcpListener::from_std)
                    .map_err(|source| BindError { addr, source })?;
                p.redirect.push((addr, l));
            }
        }
        if self.admin.as_ref().map(|(a, _)| *a) != Some(config.admin.listen) {
            let addr = config.admin.listen;
            // No SO_REUSEPORT: a second instance on the same port must fail, not share it.
            let l = tcp_listener(addr).map_err(|source| BindError { addr, source })?;
            p.admin = Some((addr, l));
        }
        let default_name = config
            .zones
            .first()
            .map_or_else(String::new, |z| z.origin.to_string());
        for (index, def) in config.relays.iter().enumerate() {
            let old = self.relays.iter().find(|(n, _)| *n == def.name);
            let relay = match old {
                // Same settings: the relay in force carries on (certificate files are reloaded
                // separately).
                Some((_, e)) if e.slot.load().def == *def => e.slot.load_full(),
                _ => Relay::new(def.clone(), index, &default_name)?,
            };
            let mut fresh = Vec::new();
            for &addr in &def.listen {
                let kept = old.is_some_and(|(_, e)| e.listeners.iter().any(|(a, _, _)| *a == addr));
                if !kept {
                    let (bound, socks) = bind_relay(addr, self.threads.len())?;
                    fresh.push((addr, bound, socks));
                }
            }
            p.relays.push((relay, fresh));
        }
        Ok(p)
    }

    /// Puts `pending` in force: serves the new sockets, swaps changed relays into their slots,
    /// and closes what the config no longer names. `admin` starts an admin listener.
    pub fn apply(
        &mut self,
        config: &Config,
        pending: Pending,
        admin: impl FnOnce(TcpListener, CancellationToken),
    ) {
        self.apply_dns(config, pending.dns);
        self.apply_redirect(config, pending.redirect);
        self.apply_admin(pending.admin, admin);
        self.apply_relays(config, pending.relays);
    }

    /// DNS: closes the addresses the config dropped, serves the new ones (UDP workers and TCP).
    fn apply_dns(
        &mut self,
        config: &Config,
        pending: Vec<(SocketAddr, Vec<std::net::UdpSocket>, TcpListener)>,
    ) {
        let root = self.shared.token.clone();
        let keep: Vec<SocketAddr> = config.dns.listen.clone();
        self.dns.retain(|(a, t)| {
            let k = keep.contains(a);
            if !k {
                info!(addr = %a, "closing DNS listener");
                t.cancel();
            }
            k
        });
        for (addr, socks, listener) in pending {
            let tcp_addr = listener.local_addr().unwrap_or(addr);
            info!(local_addr = %tcp_addr, "listening for DNS/TCP");
            info!(local_addr = %tcp_addr, workers = socks.len(), "listening for DNS/UDP");
            let token = root.child_token();
            let n = socks.len();
            let udp = dns::udp::Sources {
                store: self.shared.store.clone(),
                edge: self.shared.edge.clone(),
                stats: self.shared.stats.clone(),
            };
            match dns::udp::serve(socks, &udp, self.next_shard, token.clone()) {
                Ok(threads) => self.threads_handles.extend(threads),
                Err(error) => tracing::error!(%error, "cannot start DNS/UDP worker threads"),
            }
            self.next_shard += n;
            let d = &config.dns;
            let opts = TcpOptions {
                idle_timeout: d.tcp_idle_timeout,
                io_timeout: d.tcp_io_timeout,
                caps: Caps {
                    total: d.tcp_max_connections,
                    per_client: d.tcp_max_per_client,
                    ipv4_prefix: d.client_prefixes.0,
                    ipv6_prefix: d.client_prefixes.1,
                },
                // The last shard is DNS over TCP's.
                shard: usize::MAX,
            };
            let tcp = dns::tcp::Sources {
                store: self.shared.store.clone(),
                stats: self.shared.stats.clone(),
                transfers: self.shared.transfers.clone(),
                edge: self.shared.edge.clone(),
            };
            self.tasks
                .spawn(dns::tcp::serve(listener, tcp, opts, token.clone()));
            self.dns.push((addr, token));
        }
    }

    /// Port 80: the new settings for every listener, closes dropped addresses, serves new ones.
    fn apply_redirect(&mut self, config: &Config, pending: Vec<(SocketAddr, TcpListener)>) {
        let root = self.shared.token.clone();
        self.redirect_config
            .store(Arc::new(config.redirect.clone()));
        let keep = config.redirect.listen.clone();
        self.redirect.retain(|(a, t)| {
            let k = keep.contains(a);
            if !k {
                t.cancel();
            }
            k
        });
        for (addr, listener) in pending {
            info!(local_addr = %listener.local_addr().unwrap_or(addr), "listening for redirect");
            let token = root.child_token();
            self.tasks.spawn(crate::redirect::serve(
                listener,
                self.redirect_config.clone(),
                token.clone(),
            ));
            self.redirect.push((addr, token));
        }
    }

    /// Admin: a new listener replaces the old one.
    fn apply_admin(
        &mut self,
        pending: Option<(SocketAddr, TcpListener)>,
        admin: impl FnOnce(TcpListener, CancellationToken),
    ) {
        let root = self.shared.token.clone();
        if let Some((addr, listener)) = pending {
            info!(local_addr = %listener.local_addr().unwrap_or(addr), "listening for admin");
            if let Some((_, old)) = self.admin.take() {
                old.cancel();
            }
            let token = root.child_token();
            admin(listener, token.clone());
            self.admin = Some((addr, token));
        }
    }

    /// The entry of relay `def` serving `relay`: the old one (its slot swapped to `relay` if the
    /// settings changed) or a new one.
    fn entry_for(&mut self, def: &RelayDef, relay: &Arc<Relay>) -> RelayEntry {
        let old = self
            .relays
            .iter()
            .position(|(n, _)| *n == def.name)
            .map(|i| self.relays.remove(i).1);
        match old {
            Some(e) => {
                if !Arc::ptr_eq(&e.slot.load_full(), relay) {
                    info!(relay = %def.name, "relay settings changed; new connections use them");
                    self.all
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(relay.clone());
                    e.slot.store(relay.clone());
                }
                e
            }
            None => {
                self.all
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(relay.clone());
                RelayEntry {
                    slot: Arc::new(ArcSwap::new(relay.clone())),
                    listeners: Vec::new(),
                }
            }
        }
    }

    /// Relays: the new order, kept or swapped relays, new listeners; then closes the rest.
    fn apply_relays(&mut self, config: &Config, pending: Vec<(Arc<Relay>, RelayListeners)>) {
        let root = self.shared.token.clone();
        let local = local_addresses();
        let mut entries: Vec<(String, RelayEntry)> = Vec::new();
        let mut current = Vec::new();
        for (index, ((relay, fresh), def)) in pending.into_iter().zip(&config.relays).enumerate() {
            relay.set_index(index);
            current.push(relay.clone());
            let mut entry = self.entry_for(def, &relay);
            // Listeners the relay no longer names.
            entry.listeners.retain(|(a, bound, t)| {
                let k = def.listen.contains(a);
                if !k {
                    info!(relay = %def.name, local_addr = %bound, "closing relay listener");
                    t.cancel();
                }
                k
            });
            for (addr, bound, socks) in fresh {
                // A VIP held by the other node of a pair is bound all the same (IP_FREEBIND).
                let on_this_host = is_here(bound.ip(), local.as_deref());
                info!(relay = %def.name, local_addr = %bound, on_this_host, "listening for relay");
                let token = root.child_token();
                let slot_index = def.listen.iter().position(|a| *a == addr).unwrap_or(0);
                for (tx, listener) in self.threads.iter().zip(socks) {
                    let _ = tx.send(Spawn {
                        listener,
                        slot: slot_index,
                        relay: entry.slot.clone(),
                        token: token.clone(),
                    });
                }
                entry.listeners.push((addr, bound, token));
            }
            entries.push((def.name.clone(), entry));
        }
        // Relays the config no longer has: stop accepting; open connections finish.
        for (name, e) in self.relays.drain(..) {
            info!(relay = %name, "relay removed; its open connections finish");
            for (_, _, t) in e.listeners {
                t.cancel();
            }
        }
        self.relays = entries;
        self.current.store(Arc::new(current));
    }
}

/// One relay thread: serves the listeners it is sent until the process token is cancelled,
/// then lets open connections finish for the grace period.
#[allow(
    clippy::expect_used,
    reason = "at start-up: without its relay threads and their runtimes mailns cannot serve, so it does not start"
)]
fn relay_thread(
    mut rx: mpsc::UnboundedReceiver<Spawn>,
    store: Store,
    token: CancellationToken,
    all: Arc<Mutex<Vec<Arc<Relay>>>>,
    grace: std::time::Duration,
    log: bool,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    rt.block_on(async move {
        let mut set = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                s = rx.recv() => {
                    let Some(s) = s else { break };
                    let Ok(listener) = TcpListener::from_std(s.listener) else { continue };
                    set.spawn(crate::relay::server::serve(listener, s.slot, s.relay, store.clone(), s.token));
                }
                () = token.cancelled() => break,
            }
        }
        while set.join_next().await.is_some() {}
        let relays = all
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        crate::relay::server::drain(&relays, grace, log).await;
    });
}

/// Binds one relay address and gives each relay thread a descriptor of that one socket: one
/// accept queue that every thread takes from, not one per thread. With a queue per thread
/// (SO_REUSEPORT), the kernel hashes each connection to a thread, and it waits there while that
/// thread is busy or descheduled even if the other is idle. Measured side by side at 2,000 new
/// connections/s (`examples/connlat.rs`, 6 rounds): p99 1.35 ms against 2.0 ms (median), at
/// about 4 % more CPU per connection under saturation, when both threads wake for a connection.
/// Returns the bound address and the descriptors.
fn bind_relay(
    addr: SocketAddr,
    threads: usize,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>), BindError> {
    let first = reuseport_listener(addr).map_err(|source| BindError { addr, source })?;
    let bound = first.local_addr().unwrap_or(addr);
    let mut socks = Vec::with_capacity(threads.max(1));
    for _ in 1..threads.max(1) {
        socks.push(
            first
                .try_clone()
                .map_err(|source| BindError { addr, source })?,
        );
    }
    socks.push(first);
    Ok((bound, socks))
}

/// A non-blocking TCP listener with SO_REUSEPORT (and SO_REUSEADDR), ready for tokio.
///
/// TCP_NODELAY and SO_KEEPALIVE are set here because Linux copies them to every accepted socket:
/// two system calls saved per relayed connection. IP_FREEBIND lets it bind a VIP that this node
/// does not hold yet: on the backup of a keepalived pair the relay is already listening when the
/// address moves over, with no notify script and no `net.ipv4.ip_nonlocal_bind`.
pub fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_tcp_nodelay(true)?;
    s.set_keepalive(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        s.set_freebind_v6(true)?;
    } else {
        s.set_freebind_v4(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(4096)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// A plain TCP listener (DNS, admin): SO_REUSEADDR, no SO_REUSEPORT, so a second instance on
/// the same port fails instead of sharing it. An IPv6 socket is IPv6-only, as the UDP ones are,
/// so `0.0.0.0:53` and `[::]:53` bind side by side and IPv4 clients arrive as IPv4.
fn tcp_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // SO_REUSEADDR: a restart binds again despite connections in TIME_WAIT.
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    TcpListener::from_std(s.into())
}

/// Binds the UDP sockets and the TCP listener of one DNS address on the same port. With port 0,
/// UDP picks the port and TCP may find it taken (by any TCP socket on that address, an outgoing
/// connection included): then both are dropped and another port is tried.
pub fn bind_dns(
    addr: SocketAddr,
    workers: usize,
) -> Result<(Vec<std::net::UdpSocket>, TcpListener), BindError> {
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last = BindError {
        addr,
        source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
    };
    for _ in 0..attempts {
        let socks = dns::udp::bind(addr, workers).map_err(|source| BindError { addr, source })?;
        let port = socks
            .first()
            .and_then(|s| s.local_addr().ok())
            .map_or(addr.port(), |a| a.port());
        let tcp_addr = SocketAddr::new(addr.ip(), port);
        let bound = tcp_listener(tcp_addr);
        match bound {
            Ok(listener) => return Ok((socks, listener)),
            Err(source) => {
                last = BindError {
                    addr: tcp_addr,
                    source,
                }
            }
        }
    }
    Err(last)
}

/// What `mailns check` says of this host for `config`: relay and port 80 addresses that are not
/// on it (bound anyway, see [`reuseport_listener`]: fine for a VIP, a typo otherwise), and
/// transparent relays that the kernel would refuse (no CAP_NET_ADMIN).
pub fn host_problems(config: &Config) -> Vec<crate::diag::Diagnostic> {
    use crate::diag::Diagnostic;
    let local = local_addresses();
    let mut out = Vec::new();
    let path = &config.path;
    let not_here = |what: &str, addr: &SocketAddr| {
        format!("{what} listens on {addr}, which is not an address of this host now; it is bound anyway (IP_FREEBIND) and serves once the address arrives (a VIP that keepalived moves here); if it is not a VIP, check the address")
    };
    let listeners = config
        .relays
        .iter()
        .map(|r| (format!("relay '{}'", r.name), &r.listen))
        .chain(std::iter::once((
            "the port 80 redirect".to_string(),
            &config.redirect.listen,
        )));
    for (what, addrs) in listeners {
        for a in addrs.iter().filter(|a| !is_here(a.ip(), local.as_deref())) {
            out.push(Diagnostic::warning(path, None, not_here(&what, a)));
        }
    }
    for r in config.relays.iter().filter(|r| r.transparent) {
        if let Err(e) = crate::relay::transparent::available_for(r) {
            out.push(Diagnostic::warning(
                path,
                None,
                format!(
                    "relay '{}': {} ({e}); `mailns run` refuses to start it as this user",
                    r.name,
                    crate::relay::transparent::NEEDS_CAP
                ),
            ));
        }
    }
    out
}

/// The addresses of this host's interfaces (None: they cannot be read, so nothing is flagged).
fn local_addresses() -> Option<Vec<std::net::IpAddr>> {
    let list = nix::ifaddrs::getifaddrs().ok()?;
    Some(
        list.filter_map(|i| {
            let a = i.address?;
            a.as_sockaddr_in()
                .map(|v4| std::net::IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
        })
        .collect(),
    )
}

/// True when `ip` is the wildcard, on loopback (all of 127/8 is), or an interface's address.
fn is_here(ip: std::net::IpAddr, local: Option<&[std::net::IpAddr]>) -> bool {
    ip.is_unspecified() || ip.is_loopback() || local.is_none_or(|l| l.contains(&ip))
}
