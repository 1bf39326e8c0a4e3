//! `[[relay]]`: TCP listeners forwarding to healthy servers.
//!
//! A relay with several listeners is a group: one health state for all of them (a server failing
//! any of the relay's checks is out of every port) and, with `source-hash`, one pick per client
//! across all of them (Exchange 2010 RPC: 135 and the two static ports must reach one server).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::health::{Cx, HealthConfig};
use crate::tls::client::TlsCheck;
use crate::tls::front::{FrontTls, TlsMode};

// The value types a relay's settings are made of live here, with the settings: config depends
// on nothing above it, and the relay code imports them from here.

/// Timeouts of one relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// No bytes in either direction for this long: close.
    pub idle: Duration,
    /// One side has closed: the other gets this long to finish.
    pub half_closed: Duration,
}

/// How a relay balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Keyed hash of the client address (persistence; relayd's algorithm).
    SourceHash,
    /// In turn.
    RoundRobin,
    /// Fewest active connections.
    LeastConnections,
}

/// An SNI route: names (exact, or `*.suffix` for one or more labels) and the relay's backend
/// indices that serve them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Lowercase names; `*.example.test` matches any name below `example.test`.
    pub names: Vec<String>,
    /// Indices into the relay's `servers`.
    pub servers: Vec<usize>,
}

/// `[[relay]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelay {
    name: Spanned<String>,
    kind: Option<Spanned<String>>,
    listen: Spanned<Vec<String>>,
    servers: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    route: Vec<RawRoute>,
    sni_timeout: Option<Spanned<String>>,
    backend_port: Option<Spanned<u16>>,
    backend_ports: Option<Spanned<Vec<u16>>>,
    checks: Option<Spanned<Vec<String>>>,
    balance: Option<Spanned<String>>,
    hash_key: Option<String>,
    connect_timeout: Option<Spanned<String>>,
    retries: Option<u32>,
    idle_timeout: Option<Spanned<String>>,
    half_close_timeout: Option<Spanned<String>>,
    max_connections: Option<usize>,
    max_per_client: Option<usize>,
    allow: Option<Spanned<Vec<String>>>,
    proxy_protocol: Option<bool>,
    transparent: Option<Spanned<bool>>,
    on_server_down: Option<Spanned<String>>,
    tls: Option<Spanned<String>>,
    certificates: Option<Spanned<Vec<RawCert>>>,
    handshake_timeout: Option<Spanned<String>>,
    backend_tls_verify: Option<bool>,
    backend_ca_file: Option<String>,
    backend_sni: Option<String>,
}

/// `certificates = [{ cert = "...", key = "..." }]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCert {
    cert: String,
    key: String,
}

/// `[[relay.route]]`: TLS server names and the servers for them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    sni: Spanned<Vec<String>>,
    servers: Spanned<Vec<String>>,
}

/// What a relay speaks to clients before relaying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKind {
    /// Plain TCP (RPC, IMAP, POP3, HTTPS passthrough...).
    Tcp,
    /// The SMTP relay VIP: clients outside `allow` get a 554 reply.
    Smtp,
}

/// What happens to open connections when their server fails a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnServerDown {
    /// They stay (the default): a failed health check is not proof that an established session
    /// is broken, and cutting thousands of Outlook sessions at once causes a reconnect storm.
    Keep,
    /// They are closed, so clients reconnect to a healthy server at once instead of waiting for
    /// their own timeouts.
    Close,
}

/// A validated relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayDef {
    /// The name the dashboard, metrics and logs use; unique among relays.
    pub name: String,
    /// Plain TCP or SMTP VIP.
    pub kind: RelayKind,
    /// Listening addresses.
    pub listen: Vec<SocketAddr>,
    /// Backends: (server name, address, weight): the `servers` list, then servers named only in
    /// routes. Health views and counters follow this order.
    pub servers: Vec<(String, IpAddr, u32)>,
    /// Indices into `servers` for clients no SNI route matches (the `servers` list).
    pub default_pool: Vec<usize>,
    /// SNI routes (empty: the ClientHello is not read at all).
    pub routes: Vec<Route>,
    /// How long to wait for a ClientHello when routing by SNI.
    pub sni_timeout: Duration,
    /// Backend port per listener, in `listen` order (None: the port the client connected to).
    pub backend_ports: Vec<Option<u16>>,
    /// Checks every backend must pass.
    pub checks: Vec<String>,
    /// Balance mode.
    pub balance: Balance,
    /// Source-hash key (same on every mailns node).
    pub hash_key: Vec<u8>,
    /// Backend connect timeout.
    pub connect_timeout: Duration,
    /// Further backends tried after a failed connect.
    pub retries: u32,
    /// Idle and half-closed timeouts.
    pub timeouts: Timeouts,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections per client address at most.
    pub max_per_client: usize,
    /// Client allow-list (empty: everyone, except for SMTP relays, where it is required).
    pub allow: Vec<IpNet>,
    /// Send a PROXY protocol v2 header to backends.
    pub proxy_protocol: bool,
    /// Connect to servers from the client's own address (IP_TRANSPARENT), so Exchange sees and
    /// logs each application's address.
    pub transparent: bool,
    /// Open connections to a server that fails a check: kept or closed. (A server in `maint` has
    /// its connections closed either way; `drain` keeps them.)
    pub on_server_down: OnServerDown,
    /// TLS termination (None: passthrough).
    pub tls: Option<FrontTls>,
}

/// mailns runs as root: ports below 1024 need no capability.
pub(super) fn euid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Validates the relays against the servers and checks; `dns` are the DNS listeners.
pub(super) fn validate(
    cx: &mut Cx<'_>,
    raw: Vec<RawRelay>,
    health: &HealthConfig,
    dns: &[SocketAddr],
) -> Vec<RelayDef> {
    let mut out: Vec<RelayDef> = Vec::new();
    let root = euid_is_root();
    for r in raw {
        let name = r.name.get_ref().clone();
        if out.iter().any(|x| x.name == name) {
            cx.error(
                Some(r.name.span()),
                format!("relay '{name}' is defined twice"),
            );
            continue;
        }
        let Some(kind) = relay_kind(cx, &r, &name) else {
            continue;
        };
        let taken = Taken {
            relays: &out,
            dns,
            root,
        };
        let listen = listen_addresses(cx, &r, &name, &taken);
        let def = validate_relay(cx, r, name, kind, listen, health);
        out.push(def);
    }
    out
}

/// What a relay's listeners must not overlap, and whether low ports can be bound.
struct Taken<'a> {
    /// The relays validated so far.
    relays: &'a [RelayDef],
    /// The DNS listeners (DNS uses TCP too).
    dns: &'a [SocketAddr],
    /// mailns runs as root (ports below 1024 need no capability).
    root: bool,
}

/// One relay whose name is new and whose kind is known, with its validated listen addresses.
fn validate_relay(
    cx: &mut Cx<'_>,
    r: RawRelay,
    name: String,
    kind: RelayKind,
    listen: Vec<SocketAddr>,
    health: &HealthConfig,
) -> RelayDef {
    let at = Some(r.name.span());
    let mut pools = Pools::default();
    let default_pool = match &r.servers {
        Some(list) => pools.indices(cx, health, &name, list.get_ref(), list.span()),
        None => Vec::new(),
    };
    let routes: Vec<Route> = r
        .route
        .iter()
        .map(|rt| route(cx, rt, &name, health, &mut pools))
        .collect();
    if pools.servers.is_empty() {
        cx.error(at.clone(), format!("relay '{name}' has no servers"));
    }
    if !routes.is_empty() && kind == RelayKind::Smtp {
        cx.error(
            at.clone(),
            format!(
                "relay '{name}': SNI routes need TLS from the first byte; an SMTP relay has none"
            ),
        );
    }
    let checks = relay_checks(cx, &r, &name, health);
    let balance = balance(cx, &r, &name);
    let allow = allow_list(cx, &r, &name);
    // A list given but broken is already reported; only a missing (or empty) one is this.
    let none_given = r.allow.as_ref().is_none_or(|a| a.get_ref().is_empty());
    if kind == RelayKind::Smtp && none_given {
        cx.error(
            at,
            format!("relay '{name}': an SMTP relay needs `allow` (client addresses or CIDRs); without it the VIP would be an open relay"),
        );
    }
    let transparent = transparent(cx, &r, &name, &listen, &pools.servers);
    let backend_ports = backend_ports(cx, &r, &name, listen.len());
    let on_server_down = on_server_down(cx, &r, &name);
    let tls = front_tls(cx, &r, &name, kind);
    let dur = |cx: &mut Cx<'_>, v: &Option<Spanned<String>>, key: &str, d: Duration| {
        cx.duration(v, &format!("relay.{key}"), d)
    };
    RelayDef {
        kind,
        listen,
        servers: pools.servers,
        default_pool,
        routes,
        sni_timeout: dur(cx, &r.sni_timeout, "sni_timeout", Duration::from_secs(5)),
        backend_ports,
        checks,
        balance,
        hash_key: r.hash_key.unwrap_or_else(|| "mailns".into()).into_bytes(),
        connect_timeout: dur(
            cx,
            &r.connect_timeout,
            "connect_timeout",
            Duration::from_secs(1),
        ),
        retries: r.retries.unwrap_or(2),
        timeouts: Timeouts {
            idle: dur(
                cx,
                &r.idle_timeout,
                "idle_timeout",
                Duration::from_secs(3600),
            ),
            half_closed: dur(
                cx,
                &r.half_close_timeout,
                "half_close_timeout",
                Duration::from_secs(60),
            ),
        },
        max_connections: r.max_connections.unwrap_or(10_000).max(1),
        max_per_client: r.max_per_client.unwrap_or(1_000).max(1),
        allow,
        proxy_protocol: r.proxy_protocol.unwrap_or(false),
        transparent,
        on_server_down,
        tls,
        name,
    }
}

/// `transparent`: a connection keeps the client's address, so the listeners and servers must
/// be of one family; a PROXY header on top would say what the server already sees.
fn transparent(
    cx: &mut Cx<'_>,
    r: &RawRelay,
    name: &str,
    listen: &[SocketAddr],
    servers: &[(String, IpAddr, u32)],
) -> bool {
    let Some(t) = &r.transparent else {
        return false;
    };
    if !*t.get_ref() {
        return false;
    }
    let at = Some(t.span());
    let mixed = listen
        .iter()
        .flat_map(|l| servers.iter().map(move |s| (l, s)))
        .find(|(l, s)| l.is_ipv6() != s.1.is_ipv6());
    if let Some((l, (server, ip, _))) = mixed {
        cx.error(
            at.clone(),
            format!("relay '{name}': transparent = true connects from the client's address, so a client of {l} cannot reach server '{server}' at {ip} (another address family); give the relay listeners and servers of one family"),
        );
    }
    if r.proxy_protocol == Some(true) {
        cx.warn(
            at,
            format!("relay '{name}': transparent = true already gives the server the client's address; the PROXY header on top is redundant"),
        );
    }
    true
}

/// A relay's `kind` (tcp by default); None, reported, for an unknown one.
fn relay_kind(cx: &mut Cx<'_>, r: &RawRelay, name: &str) -> Option<RelayKind> {
    match r.kind.as_ref().map(|k| k.get_ref().as_str()) {
        None | Some("tcp") => Some(RelayKind::Tcp),
        Some("smtp") => Some(RelayKind::Smtp),
        Some(other) => {
            cx.error(
                r.kind.as_ref().map(Spanned::span),
                format!("relay '{name}': unknown kind '{other}' (tcp, smtp)"),
            );
            None
        }
    }
}

/// A relay's listen addresses: each once, overlapping no other relay's and no DNS listener.
fn listen_addresses(
    cx: &mut Cx<'_>,
    r: &RawRelay,
    name: &str,
    taken: &Taken<'_>,
) -> Vec<SocketAddr> {
    let span = Some(r.listen.span());
    let mut listen = Vec::new();
    for l in r.listen.get_ref() {
        let Ok(a) = l.parse::<SocketAddr>() else {
            cx.error(
                span.clone(),
                format!("relay '{name}': '{l}' is not an address:port"),
            );
            continue;
        };
        let clash = taken
            .relays
            .iter()
            .find(|x| x.listen.iter().any(|y| overlaps(*y, a)));
        if let Some(other) = clash {
            cx.error(
                span.clone(),
                format!(
                    "relay '{name}': {a} overlaps a listener of relay '{}'",
                    other.name
                ),
            );
        } else if taken.dns.iter().any(|d| overlaps(*d, a) && a.port() != 0) {
            cx.error(
                span.clone(),
                format!("relay '{name}': {a} overlaps the DNS listener (DNS also uses TCP)"),
            );
        } else if listen.iter().any(|y| overlaps(*y, a)) {
            cx.error(span.clone(), format!("relay '{name}': {a} is listed twice"));
        } else {
            if a.port() != 0 && a.port() < 1024 && !taken.root {
                cx.warn(
                    span.clone(),
                    format!("relay '{name}': port {} needs root or CAP_NET_BIND_SERVICE (see the systemd unit)", a.port()),
                );
            }
            listen.push(a);
        }
    }
    if listen.is_empty() {
        cx.error(span, format!("relay '{name}' has no listen address"));
    }
    listen
}

/// The servers a relay's pools name, each once, in the order first named.
#[derive(Default)]
struct Pools {
    /// (name, first address, weight).
    servers: Vec<(String, IpAddr, u32)>,
}

impl Pools {
    /// The indices of `names` in [`Pools::servers`], each added on first use; an unknown or
    /// address-less server is reported and left out.
    fn indices(
        &mut self,
        cx: &mut Cx<'_>,
        health: &HealthConfig,
        relay: &str,
        names: &[String],
        span: std::ops::Range<usize>,
    ) -> Vec<usize> {
        names
            .iter()
            .filter_map(|s| self.index_of(cx, health, relay, s, span.clone()))
            .collect()
    }

    fn index_of(
        &mut self,
        cx: &mut Cx<'_>,
        health: &HealthConfig,
        relay: &str,
        s: &str,
        span: std::ops::Range<usize>,
    ) -> Option<usize> {
        if let Some(i) = self.servers.iter().position(|x| x.0 == s) {
            return Some(i);
        }
        let Some(def) = health.servers.iter().find(|x| x.name == s) else {
            cx.error(
                Some(span),
                format!("relay '{relay}': unknown server '{s}' (define it in a [[server]] table)"),
            );
            return None;
        };
        let Some(&ip) = def.addresses.first() else {
            cx.error(
                Some(span),
                format!("relay '{relay}': server '{s}' has no address"),
            );
            return None;
        };
        self.servers.push((def.name.clone(), ip, def.weight));
        Some(self.servers.len() - 1)
    }
}

/// One `[[relay.route]]`: SNI names (a host name or `*.suffix`) and the servers they go to.
fn route(
    cx: &mut Cx<'_>,
    rt: &RawRoute,
    relay: &str,
    health: &HealthConfig,
    pools: &mut Pools,
) -> Route {
    let pool = pools.indices(cx, health, relay, rt.servers.get_ref(), rt.servers.span());
    let mut names = Vec::new();
    for n in rt.sni.get_ref() {
        let n = n.trim_end_matches('.').to_ascii_lowercase();
        if !is_sni_pattern(&n) {
            cx.error(
                Some(rt.sni.span()),
                format!("relay '{relay}': '{n}' is not a host name or *.suffix"),
            );
            continue;
        }
        names.push(n);
    }
    if names.is_empty() || pool.is_empty() {
        cx.error(
            Some(rt.sni.span()),
            format!("relay '{relay}': a route needs sni names and servers"),
        );
    }
    Route {
        names,
        servers: pool,
    }
}

/// A lowercase host name, or `*.` and one: labels of letters, digits, `-` and `_`.
fn is_sni_pattern(n: &str) -> bool {
    let bare = n.strip_prefix("*.").unwrap_or(n);
    !bare.is_empty()
        && !bare.contains('*')
        && bare.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A relay's `checks`, each one defined.
fn relay_checks(cx: &mut Cx<'_>, r: &RawRelay, name: &str, health: &HealthConfig) -> Vec<String> {
    let checks = r
        .checks
        .as_ref()
        .map(|c| c.get_ref().clone())
        .unwrap_or_default();
    for c in &checks {
        if health.check(c).is_none() {
            cx.error(
                r.checks.as_ref().map(Spanned::span),
                format!("relay '{name}': unknown check '{c}'"),
            );
        }
    }
    checks
}

/// A relay's `balance` (source-hash by default).
fn balance(cx: &mut Cx<'_>, r: &RawRelay, name: &str) -> Balance {
    match r.balance.as_ref().map(|b| b.get_ref().as_str()) {
        None | Some("source-hash") => Balance::SourceHash,
        Some("round-robin") => Balance::RoundRobin,
        Some("least-connections") => Balance::LeastConnections,
        Some(o) => {
            cx.error(r.balance.as_ref().map(Spanned::span), format!("relay '{name}': unknown balance '{o}' (source-hash, round-robin, least-connections)"));
            Balance::SourceHash
        }
    }
}

/// A relay's client allow-list: addresses and CIDRs.
fn allow_list(cx: &mut Cx<'_>, r: &RawRelay, name: &str) -> Vec<IpNet> {
    let mut allow = Vec::new();
    for a in r.allow.iter().flat_map(|a| a.get_ref()) {
        let net = a
            .parse::<IpNet>()
            .or_else(|_| a.parse::<IpAddr>().map(IpNet::from));
        match net {
            Ok(n) => allow.push(n),
            Err(_) => cx.error(
                r.allow.as_ref().map(Spanned::span),
                format!("relay '{name}': allow: '{a}' is not an address or a CIDR (such as 127.0.0.1 or 198.18.0.0/15; an IPv4 prefix is at most /32, an IPv6 one /128)"),
            ),
        }
    }
    allow
}

/// The backend port per listen address (None: the client's destination port).
fn backend_ports(cx: &mut Cx<'_>, r: &RawRelay, name: &str, listeners: usize) -> Vec<Option<u16>> {
    // Offload speaks plain HTTP to the backend: port 80 unless told otherwise.
    let offload = r.tls.as_ref().is_some_and(|t| t.get_ref() == "offload");
    let zero = r
        .backend_port
        .as_ref()
        .filter(|p| *p.get_ref() == 0)
        .map(Spanned::span);
    let zeros = r
        .backend_ports
        .as_ref()
        .filter(|p| p.get_ref().contains(&0))
        .map(Spanned::span);
    if let Some(at) = zero.or(zeros) {
        cx.error(
            Some(at),
            format!("relay '{name}': backend port 0 is no port to connect to; use 1 to 65535, or leave backend_port out to use the port the client connected to"),
        );
    }
    let backend_port = r
        .backend_port
        .as_ref()
        .map(|p| *p.get_ref())
        .or(offload.then_some(80));
    match &r.backend_ports {
        Some(p) if p.get_ref().len() == listeners => p.get_ref().iter().map(|&x| Some(x)).collect(),
        Some(p) => {
            cx.error(
                Some(p.span()),
                format!("relay '{name}': backend_ports needs one port per listen address"),
            );
            vec![backend_port; listeners]
        }
        None => vec![backend_port; listeners],
    }
}

/// What happens to open connections to a server that fails a check (kept by default).
fn on_server_down(cx: &mut Cx<'_>, r: &RawRelay, name: &str) -> OnServerDown {
    match r.on_server_down.as_ref().map(|o| o.get_ref().as_str()) {
        None | Some("keep") => OnServerDown::Keep,
        Some("close") => OnServerDown::Close,
        Some(o) => {
            cx.error(
                r.on_server_down.as_ref().map(Spanned::span),
                format!("relay '{name}': unknown on_server_down '{o}' (keep, close)"),
            );
            OnServerDown::Keep
        }
    }
}

/// The `tls` settings of relay `name`; certificates are loaded here so `mailns check` reports
/// unreadable, mismatched or expiring ones.
fn front_tls(cx: &mut Cx<'_>, r: &RawRelay, name: &str, kind: RelayKind) -> Option<FrontTls> {
    let mode = match r.tls.as_ref().map(|t| t.get_ref().as_str()) {
        None | Some("passthrough") => TlsMode::Passthrough,
        Some("offload") => TlsMode::Offload,
        Some("reencrypt") => TlsMode::Reencrypt,
        Some(o) => {
            cx.error(
                r.tls.as_ref().map(Spanned::span),
                format!("relay '{name}': unknown tls '{o}' (passthrough, offload, reencrypt)"),
            );
            return None;
        }
    };
    let at = r.tls.as_ref().map(Spanned::span);
    if mode == TlsMode::Passthrough {
        if let Some(c) = &r.certificates {
            cx.error(
                Some(c.span()),
                format!("relay '{name}': certificates need tls = \"offload\" or \"reencrypt\" (passthrough leaves TLS to the servers)"),
            );
        }
        return None;
    }
    if kind == RelayKind::Smtp {
        cx.error(
            at,
            format!(
                "relay '{name}': an SMTP relay passes STARTTLS through; tls must be passthrough"
            ),
        );
        return None;
    }
    let base = cx.path.parent().unwrap_or(std::path::Path::new("."));
    let mut certificates = Vec::new();
    let span = r.certificates.as_ref().map(Spanned::span).or(at.clone());
    for c in r.certificates.iter().flat_map(|c| c.get_ref()) {
        let (cert, key) = (base.join(&c.cert), base.join(&c.key));
        match crate::tls::load(&cert, &key) {
            Ok(loaded) => {
                let days = loaded.days_left();
                if days < 0 {
                    cx.error(
                        span.clone(),
                        format!(
                            "relay '{name}': certificate {} expired {} days ago",
                            cert.display(),
                            -days
                        ),
                    );
                } else if days < 30 {
                    cx.warn(
                        span.clone(),
                        format!(
                            "relay '{name}': certificate {} expires in {days} days",
                            cert.display()
                        ),
                    );
                }
            }
            Err(e) => cx.error(span.clone(), format!("relay '{name}': {e}")),
        }
        certificates.push((cert, key));
    }
    if certificates.is_empty() {
        cx.error(
            at.clone(),
            format!("relay '{name}': tls = \"{}\" needs certificates = [{{ cert = \"chain.pem\", key = \"key.pem\" }}]", r.tls.as_ref().map_or("", |t| t.get_ref().as_str())),
        );
    }
    if mode == TlsMode::Offload {
        cx.warn(
            at.clone(),
            format!("relay '{name}': TLS offload breaks Extended Protection, which Exchange 2019 CU14+ and Subscription Edition enable by default; turn it off on the servers or use reencrypt/passthrough"),
        );
    }
    let handshake_timeout = cx.duration(
        &r.handshake_timeout,
        "relay.handshake_timeout",
        Duration::from_secs(10),
    );
    Some(FrontTls {
        mode,
        certificates,
        handshake_timeout,
        backend: TlsCheck {
            verify: r.backend_tls_verify.unwrap_or(true),
            ca_file: r.backend_ca_file.as_ref().map(|f| base.join(f)),
        },
        backend_sni: r.backend_sni.clone(),
    })
}

/// True when two listeners would collide (same port, same or wildcard address).
pub(super) fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::testing::{errors, has, valid};

    const SERVERS: &str = concat!(
        "[[server]]\nname = \"ex1\"\naddresses = [\"127.0.1.1\"]\n",
        "[[server]]\nname = \"ex2\"\naddresses = [\"127.0.1.2\"]\nweight = 3\n",
    );

    #[test]
    fn transparent_needs_one_family_and_makes_a_proxy_header_redundant() {
        let relay = |listen: &str, extra: &str| {
            format!(
                "{SERVERS}[[relay]]\nname = \"smtp\"\nkind = \"smtp\"\nlisten = [\"{listen}\"]\nservers = [\"ex1\"]\nallow = [\"127.0.0.0/8\"]\ntransparent = true\n{extra}"
            )
        };
        let c = valid(&relay("127.0.0.30:25", "proxy_protocol = true\n"));
        assert!(c.relays[0].transparent);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.line == Some(17) && w.message.contains("redundant")),
            "{:?}",
            c.warnings
        );
        let e = errors(&relay("[::1]:2525", ""));
        assert!(
            has(
                &e,
                17,
                "cannot reach server 'ex1' at 127.0.1.1 (another address family)"
            ),
            "{e:?}"
        );
        assert!(!valid(&format!("{SERVERS}[[relay]]\nname = \"r\"\nlisten = [\"127.0.0.30:135\"]\nservers = [\"ex1\"]\n")).relays[0].transparent);
    }

    #[test]
    fn a_relay_and_its_defaults() {
        let c = valid(&format!(
            "{SERVERS}{}",
            concat!(
                "[[relay]]\nname = \"rpc\"\nlisten = [\"127.0.0.1:6135\", \"127.0.0.1:6136\"]\n",
                "servers = [\"ex1\", \"ex2\"]\nbackend_ports = [135, 6001]\n",
                "[[relay.route]]\nsni = [\"OWA.z.test.\", \"*.z.test\"]\nservers = [\"ex2\"]\n",
            )
        ));
        let r = &c.relays[0];
        assert_eq!(r.kind, RelayKind::Tcp);
        assert_eq!(r.listen.len(), 2);
        assert_eq!(
            r.servers,
            [
                ("ex1".to_string(), "127.0.1.1".parse().unwrap(), 1),
                ("ex2".to_string(), "127.0.1.2".parse().unwrap(), 3)
            ]
        );
        assert_eq!(r.default_pool, [0, 1]);
        assert_eq!(
            r.routes,
            [Route {
                names: vec!["owa.z.test".into(), "*.z.test".into()],
                servers: vec![1]
            }],
            "a server named twice is one server"
        );
        assert_eq!(r.backend_ports, [Some(135), Some(6001)]);
        assert_eq!(r.balance, Balance::SourceHash);
        assert_eq!(r.retries, 2);
        assert_eq!(r.connect_timeout, Duration::from_secs(1));
        assert_eq!(
            r.timeouts,
            Timeouts {
                idle: Duration::from_secs(3600),
                half_closed: Duration::from_secs(60)
            }
        );
        assert_eq!(r.on_server_down, OnServerDown::Keep);
        assert_eq!(r.hash_key, b"mailns");
        assert!(r.tls.is_none() && r.allow.is_empty() && !r.proxy_protocol);
    }

    #[test]
    fn relay_errors_name_the_line() {
        let e = errors(&format!(
            "{SERVERS}{}",
            concat!(
                "[[relay]]\nname = \"smtp\"\nkind = \"smtp\"\nlisten = [\"127.0.0.1:5353\"]\n",
                "servers = [\"ex1\", \"ghost\"]\nbalance = \"random\"\non_server_down = \"explode\"\n",
                "backend_ports = [1, 2]\n",
                "[[relay.route]]\nsni = [\"bad name!\"]\nservers = [\"ex1\"]\n",
                "[[relay]]\nname = \"smtp\"\nlisten = [\"127.0.0.1:6000\"]\nservers = [\"ex1\"]\n",
                "[[relay]]\nname = \"x\"\nkind = \"udp\"\nlisten = [\"127.0.0.1:6001\"]\n",
            )
        ));
        // SERVERS takes lines 4 to 10; the first relay starts at line 11.
        assert!(
            has(&e, 14, "127.0.0.1:5353 overlaps the DNS listener"),
            "{e:?}"
        );
        assert!(has(&e, 14, "relay 'smtp' has no listen address"), "{e:?}");
        assert!(has(&e, 15, "unknown server 'ghost'"), "{e:?}");
        assert!(has(&e, 16, "unknown balance 'random'"), "{e:?}");
        assert!(has(&e, 17, "unknown on_server_down 'explode'"), "{e:?}");
        assert!(
            has(&e, 18, "backend_ports needs one port per listen address"),
            "{e:?}"
        );
        assert!(has(&e, 12, "an SMTP relay needs `allow`"), "{e:?}");
        assert!(
            has(&e, 12, "SNI routes need TLS from the first byte"),
            "{e:?}"
        );
        assert!(
            has(&e, 20, "'bad name!' is not a host name or *.suffix"),
            "{e:?}"
        );
        assert!(has(&e, 23, "relay 'smtp' is defined twice"), "{e:?}");
        assert!(has(&e, 28, "unknown kind 'udp' (tcp, smtp)"), "{e:?}");
    }

    #[test]
    fn sni_patterns() {
        for ok in ["owa.z.test", "*.z.test", "a_b-c.test", "test"] {
            assert!(is_sni_pattern(ok), "{ok}");
        }
        for bad in [
            "", "*.", "*", "a.*.test", "a..test", "a b.test", "ä.test", "**.test",
        ] {
            assert!(!is_sni_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn listeners_overlap_on_the_same_port_unless_the_addresses_differ() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(sa("127.0.0.1:80"), sa("127.0.0.1:80")));
        assert!(overlaps(sa("[::]:80"), sa("[::1]:80")));
        assert!(overlaps(sa("127.0.0.1:80"), sa("[::]:80")));
        assert!(!overlaps(sa("127.0.0.1:80"), sa("127.0.0.2:80")));
        assert!(!overlaps(sa("127.0.0.1:80"), sa("127.0.0.1:81")));
        assert!(
            !overlaps(sa("127.0.0.1:0"), sa("127.0.0.1:0")),
            "port 0 is any port"
        );
    }
}
