//! `[[relay]]`: TCP listeners forwarding to healthy servers.
//!
//! A relay with several listeners is a group: one health state for all of them (a server failing
//! any of the relay's checks is out of every port) and, with `source-hash`, one pick per client
//! across all of them (Exchange 2010 RPC: 135 and the two static ports must reach one server).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::health::{Cx, HealthConfig, TlsCheck};

// The value types a relay's settings are made of live here, with the settings: config depends
// on nothing above it, and the relay code imports them from here.

/// Timeouts of one relayed connection.
#[derive(Debug, Clone, Copy)]
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
    backend_port: Option<u16>,
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

/// Who terminates TLS on an HTTPS relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Nobody in between: bytes pass untouched (the default, and Exchange's recommendation).
    Passthrough,
    /// mailns terminates TLS and relays plain HTTP to the backend.
    Offload,
    /// mailns terminates TLS and opens TLS to the backend.
    Reencrypt,
}

/// TLS termination settings of a relay (`offload` or `reencrypt`).
#[derive(Debug, Clone)]
pub struct FrontTls {
    /// Offload or re-encrypt.
    pub mode: TlsMode,
    /// (chain, key) PEM files; the first is the default certificate.
    pub certificates: Vec<(PathBuf, PathBuf)>,
    /// A client must finish its handshake within this.
    pub handshake_timeout: Duration,
    /// Re-encrypt: how the backend's certificate is checked.
    pub backend: TlsCheck,
    /// Re-encrypt: the name sent to and verified for the backend (None: the client's SNI, else
    /// the first zone's name).
    pub backend_sni: Option<String>,
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
#[derive(Debug, Clone)]
pub struct RelayDef {
    /// Its name.
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
    /// Open connections to a server that fails a check: kept or closed. (A server in `maint` has
    /// its connections closed either way; `drain` keeps them.)
    pub on_server_down: OnServerDown,
    /// TLS termination (None: passthrough).
    pub tls: Option<FrontTls>,
}

fn euid_is_root() -> bool {
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
        let at = Some(r.name.span());
        if out.iter().any(|x| x.name == name) {
            cx.error(at.clone(), format!("relay '{name}' is defined twice"));
            continue;
        }
        let kind = match r.kind.as_ref().map(|k| k.get_ref().as_str()) {
            None | Some("tcp") => RelayKind::Tcp,
            Some("smtp") => RelayKind::Smtp,
            Some(other) => {
                cx.error(
                    r.kind.as_ref().map(Spanned::span),
                    format!("relay '{name}': unknown kind '{other}' (tcp, smtp)"),
                );
                continue;
            }
        };
        let mut listen = Vec::new();
        for l in r.listen.get_ref() {
            match l.parse::<SocketAddr>() {
                Ok(a) => {
                    let clash = out
                        .iter()
                        .find(|x| x.listen.iter().any(|y| overlaps(*y, a)));
                    if let Some(other) = clash {
                        cx.error(
                            Some(r.listen.span()),
                            format!(
                                "relay '{name}': {a} overlaps a listener of relay '{}'",
                                other.name
                            ),
                        );
                    } else if dns.iter().any(|d| overlaps(*d, a) && a.port() != 0) {
                        cx.error(
                            Some(r.listen.span()),
                            format!(
                                "relay '{name}': {a} overlaps the DNS listener (DNS also uses TCP)"
                            ),
                        );
                    } else if listen.iter().any(|y| overlaps(*y, a)) {
                        cx.error(
                            Some(r.listen.span()),
                            format!("relay '{name}': {a} is listed twice"),
                        );
                    } else {
                        if a.port() != 0 && a.port() < 1024 && !root {
                            cx.warn(
                                Some(r.listen.span()),
                                format!("relay '{name}': port {} needs root or CAP_NET_BIND_SERVICE (see the systemd unit)", a.port()),
                            );
                        }
                        listen.push(a);
                    }
                }
                Err(_) => cx.error(
                    Some(r.listen.span()),
                    format!("relay '{name}': '{l}' is not an address:port"),
                ),
            }
        }
        if listen.is_empty() {
            cx.error(
                Some(r.listen.span()),
                format!("relay '{name}' has no listen address"),
            );
        }
        let mut servers: Vec<(String, IpAddr, u32)> = Vec::new();
        // The index of server `s` in `servers`, added on first use.
        let mut index_of = |cx: &mut Cx<'_>, s: &String, span: std::ops::Range<usize>| {
            if let Some(i) = servers.iter().position(|x| &x.0 == s) {
                return Some(i);
            }
            match health.servers.iter().find(|x| &x.name == s) {
                Some(def) => match def.addresses.first() {
                    Some(&ip) => {
                        servers.push((def.name.clone(), ip, def.weight));
                        Some(servers.len() - 1)
                    }
                    None => {
                        cx.error(
                            Some(span),
                            format!("relay '{name}': server '{s}' has no address"),
                        );
                        None
                    }
                },
                None => {
                    cx.error(
                        Some(span),
                        format!(
                            "relay '{name}': unknown server '{s}' (define it in a [[server]] table)"
                        ),
                    );
                    None
                }
            }
        };
        let mut default_pool = Vec::new();
        if let Some(list) = &r.servers {
            for s in list.get_ref() {
                if let Some(i) = index_of(cx, s, list.span()) {
                    default_pool.push(i);
                }
            }
        }
        let mut routes = Vec::new();
        for rt in &r.route {
            let mut pool = Vec::new();
            for s in rt.servers.get_ref() {
                if let Some(i) = index_of(cx, s, rt.servers.span()) {
                    pool.push(i);
                }
            }
            let mut names = Vec::new();
            for n in rt.sni.get_ref() {
                let n = n.trim_end_matches('.').to_ascii_lowercase();
                let bare = n.strip_prefix("*.").unwrap_or(&n);
                if bare.is_empty()
                    || bare.contains('*')
                    || !bare.split('.').all(|l| {
                        !l.is_empty()
                            && l.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    })
                {
                    cx.error(
                        Some(rt.sni.span()),
                        format!("relay '{name}': '{n}' is not a host name or *.suffix"),
                    );
                    continue;
                }
                names.push(n);
            }
            if names.is_empty() || pool.is_empty() {
                cx.error(
                    Some(rt.sni.span()),
                    format!("relay '{name}': a route needs sni names and servers"),
                );
            }
            routes.push(Route {
                names,
                servers: pool,
            });
        }
        if servers.is_empty() {
            cx.error(at.clone(), format!("relay '{name}' has no servers"));
        }
        if !routes.is_empty() && kind == RelayKind::Smtp {
            cx.error(
                at.clone(),
                format!("relay '{name}': SNI routes need TLS from the first byte; an SMTP relay has none"),
            );
        }
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
        let balance = match r.balance.as_ref().map(|b| b.get_ref().as_str()) {
            None | Some("source-hash") => Balance::SourceHash,
            Some("round-robin") => Balance::RoundRobin,
            Some("least-connections") => Balance::LeastConnections,
            Some(o) => {
                cx.error(r.balance.as_ref().map(Spanned::span), format!("relay '{name}': unknown balance '{o}' (source-hash, round-robin, least-connections)"));
                Balance::SourceHash
            }
        };
        let mut allow = Vec::new();
        for a in r.allow.iter().flat_map(|a| a.get_ref()) {
            let net = a
                .parse::<IpNet>()
                .or_else(|_| a.parse::<IpAddr>().map(IpNet::from));
            match net {
                Ok(n) => allow.push(n),
                Err(_) => cx.error(
                    r.allow.as_ref().map(Spanned::span),
                    format!("relay '{name}': '{a}' is not an address or CIDR"),
                ),
            }
        }
        if kind == RelayKind::Smtp && allow.is_empty() {
            cx.error(
                at.clone(),
                format!("relay '{name}': an SMTP relay needs `allow` (client addresses or CIDRs); without it the VIP would be an open relay"),
            );
        }
        // Offload speaks plain HTTP to the backend: port 80 unless told otherwise.
        let offload = r.tls.as_ref().is_some_and(|t| t.get_ref() == "offload");
        let backend_port = r.backend_port.or(offload.then_some(80));
        let backend_ports: Vec<Option<u16>> = match &r.backend_ports {
            Some(p) if p.get_ref().len() == listen.len() => {
                p.get_ref().iter().map(|&x| Some(x)).collect()
            }
            Some(p) => {
                cx.error(
                    Some(p.span()),
                    format!("relay '{name}': backend_ports needs one port per listen address"),
                );
                vec![backend_port; listen.len()]
            }
            None => vec![backend_port; listen.len()],
        };
        let on_server_down = match r.on_server_down.as_ref().map(|o| o.get_ref().as_str()) {
            None | Some("keep") => OnServerDown::Keep,
            Some("close") => OnServerDown::Close,
            Some(o) => {
                cx.error(
                    r.on_server_down.as_ref().map(Spanned::span),
                    format!("relay '{name}': unknown on_server_down '{o}' (keep, close)"),
                );
                OnServerDown::Keep
            }
        };
        let tls = front_tls(cx, &r, &name, kind);
        let dur = |cx: &mut Cx<'_>, v: &Option<Spanned<String>>, key: &str, d: Duration| {
            cx.duration(v, &format!("relay.{key}"), d)
        };
        out.push(RelayDef {
            name,
            kind,
            listen,
            servers,
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
            on_server_down,
            tls,
        });
    }
    out
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

/// The `[redirect]` table: its listeners must not collide with the relays' or DNS's.
pub(super) fn validate_redirect(
    cx: &mut Cx<'_>,
    raw: crate::redirect::RawRedirect,
    relays: &[RelayDef],
    dns: &[SocketAddr],
) -> crate::redirect::RedirectConfig {
    let mut listen = Vec::new();
    for l in &raw.listen {
        match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => {
                if let Some(r) = relays
                    .iter()
                    .find(|r| r.listen.iter().any(|y| overlaps(*y, a)))
                {
                    cx.error(
                        Some(l.span()),
                        format!(
                            "redirect.listen: {a} overlaps a listener of relay '{}'",
                            r.name
                        ),
                    );
                } else if dns.iter().any(|d| overlaps(*d, a)) {
                    cx.error(
                        Some(l.span()),
                        format!("redirect.listen: {a} overlaps the DNS listener"),
                    );
                } else {
                    if a.port() != 0 && a.port() < 1024 && !euid_is_root() {
                        cx.warn(
                            Some(l.span()),
                            format!(
                                "redirect.listen: port {} needs root or CAP_NET_BIND_SERVICE",
                                a.port()
                            ),
                        );
                    }
                    listen.push(a);
                }
            }
            Err(_) => cx.error(
                Some(l.span()),
                format!("redirect.listen: '{}' is not an address:port", l.get_ref()),
            ),
        }
    }
    let lower = |s: &String| s.trim_end_matches('.').to_ascii_lowercase();
    if raw.root.as_ref().is_some_and(|r| !r.starts_with('/')) {
        cx.error(
            None,
            "redirect.root must start with '/' (e.g. \"/owa\")".into(),
        );
    }
    if !raw.accepted_domains.is_empty() && raw.autodiscover_host.is_none() {
        cx.error(
            None,
            "redirect: accepted_domains needs autodiscover_host (where Outlook is sent)".into(),
        );
    }
    crate::redirect::RedirectConfig {
        listen,
        host: raw.host.as_ref().map(lower),
        root: raw.root.clone(),
        autodiscover_host: raw.autodiscover_host.as_ref().map(lower),
        accepted_domains: raw.accepted_domains.iter().map(lower).collect(),
    }
}

/// True when two listeners would collide (same port, same or wildcard address).
pub(super) fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
