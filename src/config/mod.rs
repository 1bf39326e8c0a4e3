//! Configuration: raw serde types (unknown keys rejected) validated into typed values.
//!
//! Every problem is reported as `path:line: message`, the line taken from the TOML span of the
//! offending key, so `mailns check` points an admin at what to fix. Paths inside the file are
//! relative to the file's folder, so a config works from any working directory.

use std::collections::HashSet;
use std::fs;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::Name;
use serde::Deserialize;
use toml::Spanned;

use crate::diag::{line_of, Diagnostic};
use crate::zone::{load_zone, Zone};

pub mod admin;
pub mod cluster;
pub mod edge;
pub mod health;
pub mod redirect;
pub mod relay;
mod toml_error;
pub mod view;

pub use health::{
    AdminState, CheckDef, CheckKind, Fallback, HealthConfig, OtherSites, ServerDef, ServiceDef,
    Timing,
};

/// The default config path, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/mailns.toml";

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// The DNS server.
    #[serde(default)]
    dns: RawDns,
    /// Zones served, one `[[zone]]` table each.
    #[serde(default, rename = "zone")]
    zones: Vec<RawZone>,
    /// Health engine defaults.
    #[serde(default)]
    health: health::RawHealth,
    /// Probe definitions.
    #[serde(default, rename = "check")]
    checks: Vec<health::RawCheck>,
    /// Server metadata.
    #[serde(default, rename = "server")]
    servers: Vec<health::RawServer>,
    /// Health-driven names.
    #[serde(default, rename = "service")]
    services: Vec<health::RawService>,
    /// TCP relays.
    #[serde(default, rename = "relay")]
    relays: Vec<relay::RawRelay>,
    /// The port 80 listener.
    #[serde(default)]
    redirect: redirect::RawRedirect,
    /// The dashboard, API and metrics listener.
    #[serde(default)]
    admin: admin::RawAdmin,
    /// The other nodes whose checks count here.
    #[serde(default)]
    cluster: cluster::RawCluster,
    /// Process life: shutdown grace, reload on file changes.
    #[serde(default)]
    process: RawProcess,
    /// TSIG keys for zone transfers.
    #[serde(default, rename = "tsig_key")]
    tsig_keys: Vec<RawTsigKey>,
    /// Split horizon: which clients get which zones.
    #[serde(default, rename = "view")]
    views: Vec<view::RawView>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTsigKey {
    /// The key's name, as the secondary knows it.
    name: Spanned<String>,
    /// hmac-sha256 (default), hmac-sha384 or hmac-sha512.
    algorithm: Option<Spanned<String>>,
    /// The secret, base64.
    secret: Option<Spanned<String>>,
    /// A file holding the secret, base64 (instead of `secret`).
    secret_file: Option<Spanned<String>>,
}

/// A TSIG key.
#[derive(Clone)]
pub struct TsigKey {
    /// Its name, lowercase, fully qualified.
    pub name: Name,
    /// The MAC algorithm (hmac-sha256 and friends).
    pub algorithm: hickory_proto::rr::rdata::tsig::TsigAlgorithm,
    /// The shared secret, decoded from base64.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    /// How long open relay connections may finish after SIGTERM ("30s").
    shutdown_grace: Option<Spanned<String>>,
    /// Reload when the config, a zone or a certificate file changes.
    #[serde(default)]
    watch: bool,
}

/// Process life settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    /// How long open relay connections may finish after SIGTERM before they are closed.
    pub shutdown_grace: Duration,
    /// Reload when the config, a zone or a certificate file changes.
    pub watch: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    /// Addresses to serve DNS on, UDP and TCP each.
    #[serde(default = "default_listen")]
    listen: Vec<Spanned<String>>,
    /// UDP worker threads per address (one reader, the rest help under load); 0 = one per CPU.
    #[serde(default)]
    udp_workers: usize,
    /// TCP connections idle this long are closed ("10s", "1m").
    tcp_idle_timeout: Option<Spanned<String>>,
    /// Open TCP connections at most.
    #[serde(default = "default_tcp_max")]
    tcp_max_connections: usize,
    /// Open TCP connections per client prefix at most.
    tcp_max_per_client: Option<Spanned<usize>>,
    /// Time a TCP client has for the rest of a message, and to take each answer.
    tcp_io_timeout: Option<Spanned<String>>,
    /// The prefix length that makes one IPv4 client (rate limits, connection caps).
    client_ipv4_prefix: Option<Spanned<u8>>,
    /// The prefix length that makes one IPv6 client.
    client_ipv6_prefix: Option<Spanned<u8>>,
    /// Response rate limiting.
    #[serde(default)]
    rrl: edge::RawRrl,
    /// DNS cookies.
    #[serde(default)]
    cookies: edge::RawCookies,
}

impl Default for RawDns {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            udp_workers: 0,
            tcp_idle_timeout: None,
            tcp_max_connections: default_tcp_max(),
            tcp_max_per_client: None,
            tcp_io_timeout: None,
            client_ipv4_prefix: None,
            client_ipv6_prefix: None,
            rrl: edge::RawRrl::default(),
            cookies: edge::RawCookies::default(),
        }
    }
}

fn default_listen() -> Vec<Spanned<String>> {
    Vec::new()
}

fn default_tcp_max() -> usize {
    1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    /// The zone's origin, e.g. "mail.example.test".
    name: Spanned<String>,
    /// The master file, relative to the config file's folder.
    file: Spanned<String>,
    /// Addresses or networks allowed to transfer the zone (AXFR/IXFR over TCP).
    #[serde(default)]
    allow_transfer: Vec<Spanned<String>>,
    /// A `[[tsig_key]]` every transfer must be signed with.
    transfer_key: Option<Spanned<String>>,
    /// Secondaries sent a NOTIFY when the zone's serial changes ("127.0.0.1:53").
    #[serde(default)]
    notify: Vec<Spanned<String>>,
    /// "auto": the SOA serial is derived from the load time, and increases whenever the
    /// zone's content changes.
    serial: Option<Spanned<String>>,
    /// The `[[view]]`s it is served in (every view when left out).
    views: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `dns.listen`: each address once (127.0.0.1:5353 when the list is empty).
fn dns_listen(cx: &mut health::Cx<'_>, raw: Vec<Spanned<String>>) -> Vec<SocketAddr> {
    let raw = if raw.is_empty() {
        vec![Spanned::new(0..0, "127.0.0.1:5353".to_string())]
    } else {
        raw
    };
    let mut listen = Vec::new();
    for l in raw {
        match l.get_ref().parse::<SocketAddr>() {
            Ok(a) if listen.contains(&a) => {
                cx.error(Some(l.span()), format!("dns.listen: {a} is listed twice"));
            }
            Ok(a) => {
                if a.port() == 0 {
                    cx.warn(
                        Some(l.span()),
                        format!("dns.listen: {a} has port 0: the kernel picks a free port at each start, which no resolver and no NS record can follow; use 53 (or a fixed port a forwarder points at)"),
                    );
                }
                listen.push(a);
            }
            Err(_) => cx.error(
                Some(l.span()),
                format!("dns.listen: '{}' is not an address:port (e.g. \"127.0.0.1:5353\" or \"[::1]:53\")", l.get_ref()),
            ),
        }
    }
    listen
}

/// `dns.tcp_idle_timeout` (10 s by default).
fn tcp_idle_timeout(cx: &mut health::Cx<'_>, raw: Option<&Spanned<String>>) -> Duration {
    let default = Duration::from_secs(10);
    let Some(s) = raw else {
        return default;
    };
    match humantime::parse_duration(s.get_ref()) {
        Ok(d) if !d.is_zero() && d <= health::MAX_DURATION => d,
        _ => {
            cx.error(
                Some(s.span()),
                format!("dns.tcp_idle_timeout: '{}' is not a positive duration of at most a year (e.g. \"10s\")", s.get_ref()),
            );
            default
        }
    }
}

/// The `[[zone]]` tables: each origin once per view.
fn validate_zones(
    cx: &mut health::Cx<'_>,
    base: &Path,
    raw: Vec<RawZone>,
    keys: &[TsigKey],
    views: &mut view::Views,
) -> Vec<ZoneConfig> {
    let mut zones: Vec<ZoneConfig> = Vec::new();
    for z in raw {
        let origin = match fqdn_lower(z.name.get_ref()) {
            Ok(n) => n,
            Err(e) => {
                cx.error(
                    Some(z.name.span()),
                    format!("zone name '{}' is not a domain name: {e}", z.name.get_ref()),
                );
                continue;
            }
        };
        let in_views = zone_views(cx, &z, &origin, views);
        let twice = zones
            .iter()
            .zip(&views.zone_views)
            .find(|(o, vs)| o.origin == origin && vs.iter().any(|v| in_views.contains(v)));
        if let Some((_, vs)) = twice {
            let both = vs.iter().find(|v| in_views.contains(v));
            let name = both
                .and_then(|&v| views.defs.get(v))
                .map(|d| d.name.clone());
            let msg = match name {
                Some(n) if !views.implicit => {
                    format!("zone {origin} is configured twice in view '{n}'")
                }
                _ => format!("zone {origin} is configured twice"),
            };
            cx.error(Some(z.name.span()), msg);
            continue;
        }
        zones.push(validate_zone(cx, base, &z, origin, keys));
        views.zone_views.push(in_views);
    }
    partial_zones(cx, &zones, views);
    zones
}

/// A zone's `views`: names of `[[view]]`s (every view when left out).
fn zone_views(
    cx: &mut health::Cx<'_>,
    z: &RawZone,
    origin: &Name,
    views: &view::Views,
) -> Vec<usize> {
    let all = || (0..views.defs.len()).collect();
    let Some(list) = &z.views else {
        return all();
    };
    if views.implicit {
        cx.error(
            Some(list.span()),
            format!("zone {origin}: views: the config defines no [[view]]; leave views out, or add the views"),
        );
        return all();
    }
    if list.get_ref().is_empty() {
        cx.error(
            Some(list.span()),
            format!("zone {origin}: views is empty: leave it out to serve the zone in every view"),
        );
    }
    let mut out = Vec::new();
    for v in list.get_ref() {
        match views.defs.iter().position(|d| d.name == *v.get_ref()) {
            Some(i) if !out.contains(&i) => out.push(i),
            Some(_) => {}
            None => {
                let known: Vec<&str> = views.defs.iter().map(|d| d.name.as_str()).collect();
                cx.error(
                    Some(v.span()),
                    format!(
                        "zone {origin}: views: there is no [[view]] named '{}' (known: {})",
                        v.get_ref(),
                        known.join(", ")
                    ),
                );
            }
        }
    }
    out
}

/// Warns of a zone name served in some views but not in others: clients of those get REFUSED
/// (or the parent zone's answer) for it, which split horizon rarely means.
fn partial_zones(cx: &mut health::Cx<'_>, zones: &[ZoneConfig], views: &view::Views) {
    let mut warned: HashSet<&Name> = HashSet::new();
    for z in zones {
        if !warned.insert(&z.origin) {
            continue;
        }
        let mut served: Vec<usize> = zones
            .iter()
            .zip(&views.zone_views)
            .filter(|(o, _)| o.origin == z.origin)
            .flat_map(|(_, vs)| vs.iter().copied())
            .collect();
        served.sort_unstable();
        served.dedup();
        let missing: Vec<&str> = views
            .defs
            .iter()
            .enumerate()
            .filter(|(i, _)| !served.contains(i))
            .map(|(_, d)| d.name.as_str())
            .collect();
        if !missing.is_empty() {
            cx.warn(
                None,
                format!(
                    "zone {} is not served in view(s) {}: their clients get REFUSED for it (or a parent zone's answer)",
                    z.origin,
                    missing.join(", ")
                ),
            );
        }
    }
}

/// One `[[zone]]` whose origin is valid and new: its file, transfers, NOTIFY and serial.
fn validate_zone(
    cx: &mut health::Cx<'_>,
    base: &Path,
    z: &RawZone,
    origin: Name,
    keys: &[TsigKey],
) -> ZoneConfig {
    let mut allow_transfer = Vec::new();
    for a in &z.allow_transfer {
        let s = a.get_ref();
        let net = s
            .parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match net {
            Ok(n) => allow_transfer.push(n),
            Err(_) => cx.error(
                Some(a.span()),
                format!("zone {origin}: allow_transfer: '{s}' is not an address or network (e.g. \"127.0.0.1\", \"127.0.0.0/8\")"),
            ),
        }
    }
    let transfer_key = z.transfer_key.as_ref().and_then(|k| {
        let want = fqdn_lower(k.get_ref()).ok();
        let found = keys.iter().find(|x| Some(&x.name) == want.as_ref());
        if found.is_none() {
            cx.error(
                Some(k.span()),
                format!(
                    "zone {origin}: transfer_key '{}' is not a [[tsig_key]]",
                    k.get_ref()
                ),
            );
        }
        found.cloned()
    });
    let mut notify = Vec::new();
    for n in &z.notify {
        let s = n.get_ref();
        let addr = s.parse::<SocketAddr>().or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        });
        match addr {
            Ok(a) => notify.push(a),
            Err(_) => cx.error(
                Some(n.span()),
                format!("zone {origin}: notify: '{s}' is not an address or address:port"),
            ),
        }
    }
    let serial_auto = match &z.serial {
        None => false,
        Some(s) if s.get_ref() == "auto" => true,
        Some(s) => {
            cx.error(
                Some(s.span()),
                format!("zone {origin}: serial: '{}' is not \"auto\" (leave it out to use the zone file's)", s.get_ref()),
            );
            false
        }
    };
    ZoneConfig {
        file: base.join(z.file.get_ref()),
        line: line_of(cx.text, z.file.span().start),
        origin,
        allow_transfer,
        transfer_key,
        notify,
        serial_auto,
    }
}

/// `[process]`: the shutdown grace (30 s by default) and file watching.
fn process_config(cx: &mut health::Cx<'_>, raw: &RawProcess) -> ProcessConfig {
    let default = Duration::from_secs(30);
    let shutdown_grace = match &raw.shutdown_grace {
        None => default,
        Some(s) => match humantime::parse_duration(s.get_ref()) {
            Ok(d) if d <= health::MAX_DURATION => d,
            _ => {
                cx.error(
                    Some(s.span()),
                    format!(
                        "process.shutdown_grace: '{}' is not a duration of at most a year (e.g. \"30s\", \"0s\")",
                        s.get_ref()
                    ),
                );
                default
            }
        },
    };
    ProcessConfig {
        shutdown_grace,
        watch: raw.watch,
    }
}

/// A configured domain name: fully qualified, lowercase (how every table compares names).
pub(crate) fn fqdn_lower(s: &str) -> Result<Name, hickory_proto::ProtoError> {
    let mut n = Name::from_ascii(s)?;
    n.set_fqdn(true);
    Ok(n.to_lowercase())
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file.
    pub path: PathBuf,
    /// DNS server settings.
    pub dns: DnsConfig,
    /// Zones to serve.
    pub zones: Vec<ZoneConfig>,
    /// The views and which zones each serves (one implicit view without `[[view]]`).
    pub views: view::Views,
    /// Health checks and health-driven names.
    pub health: HealthConfig,
    /// TCP relays.
    pub relays: Vec<relay::RelayDef>,
    /// The port 80 listener (http to https, Outlook's autodiscover redirect).
    pub redirect: redirect::RedirectConfig,
    /// The dashboard, API and metrics listener.
    pub admin: admin::AdminConfig,
    /// The other nodes whose raw check results count in this node's health.
    pub cluster: cluster::ClusterConfig,
    /// Process life.
    pub process: ProcessConfig,
    /// Warnings found while validating (printed by `check`, logged by `run`).
    pub warnings: Vec<Diagnostic>,
}

/// DNS server settings.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Addresses to serve on (UDP and TCP).
    pub listen: Vec<SocketAddr>,
    /// UDP worker threads.
    pub udp_workers: usize,
    /// TCP idle timeout.
    pub tcp_idle_timeout: Duration,
    /// TCP connection cap.
    pub tcp_max_connections: usize,
    /// TCP connection cap per client prefix.
    pub tcp_max_per_client: usize,
    /// TCP I/O timeout: the rest of a message, and each answer's write.
    pub tcp_io_timeout: Duration,
    /// Prefix lengths (IPv4, IPv6) that make one client.
    pub client_prefixes: (u8, u8),
    /// Response rate limiting; None: off.
    pub rrl: Option<edge::RrlConfig>,
    /// DNS cookies.
    pub cookies: edge::CookieConfig,
}

/// One zone to serve.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// Origin, lowercase, fully qualified.
    pub origin: Name,
    /// Master file (resolved against the config's folder).
    pub file: PathBuf,
    /// Line of the `file` key, for errors about the file as a whole.
    pub line: usize,
    /// Who may transfer it (empty: nobody, unless `transfer_key` is set).
    pub allow_transfer: Vec<ipnet::IpNet>,
    /// The key transfers must be signed with.
    pub transfer_key: Option<TsigKey>,
    /// Secondaries to NOTIFY.
    pub notify: Vec<SocketAddr>,
    /// The serial follows load time and content (`serial = "auto"`).
    pub serial_auto: bool,
}

impl Config {
    /// Reads and validates the config at `path` (zones are not loaded; see [`Config::load_zones`]).
    ///
    /// # Errors
    /// Every problem found, as diagnostics.
    pub fn load(path: &Path) -> Result<Self, Vec<Diagnostic>> {
        let text = fs::read_to_string(path).map_err(|e| {
            vec![Diagnostic::error(
                path,
                None,
                format!("cannot read config file: {e}"),
            )]
        })?;
        Self::parse(path, &text)
    }

    /// Validates config text as if read from `path`.
    ///
    /// # Errors
    /// Every problem found, as diagnostics.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Vec<Diagnostic>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| s.start);
            let line = at.map(|a| line_of(text, a));
            vec![Diagnostic::error(
                path,
                line,
                toml_error::explain(text, e.message(), at),
            )]
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut diags = Vec::new();
        let mut cx = health::Cx {
            path,
            text,
            diags: &mut diags,
        };
        let listen = dns_listen(&mut cx, raw.dns.listen);
        let tcp_idle_timeout = tcp_idle_timeout(&mut cx, raw.dns.tcp_idle_timeout.as_ref());
        if raw.dns.tcp_max_connections == 0 {
            cx.error(None, "dns.tcp_max_connections must be at least 1".into());
        }
        let udp_workers = match raw.dns.udp_workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let keys = Self::tsig_keys(path, text, base, raw.tsig_keys, &mut *cx.diags);
        let mut views = view::validate(&mut cx, raw.views, &keys);
        let zones = validate_zones(&mut cx, base, raw.zones, &keys, &mut views);
        let origins: Vec<Name> = zones.iter().map(|z| z.origin.clone()).collect();
        let health = health::validate(
            &mut cx,
            raw.health,
            raw.checks,
            raw.servers,
            raw.services,
            &origins,
        );
        let relays = relay::validate(&mut cx, raw.relays, &health, &listen);
        let redirect = redirect::validate(&mut cx, raw.redirect, &relays, &listen);
        let admin = admin::validate(&mut cx, raw.admin, &relays, &listen, &redirect.listen);
        let cluster = cluster::validate(&mut cx, raw.cluster, admin.token.is_some(), base);
        let dns_edge = edge::dns_edge(
            &mut cx,
            edge::RawDnsEdge {
                tcp_max_per_client: raw.dns.tcp_max_per_client,
                tcp_io_timeout: raw.dns.tcp_io_timeout,
                client_ipv4_prefix: raw.dns.client_ipv4_prefix,
                client_ipv6_prefix: raw.dns.client_ipv6_prefix,
                rrl: raw.dns.rrl,
                cookies: raw.dns.cookies,
            },
            raw.dns.tcp_max_connections.max(1),
            base,
        );
        let process = process_config(&mut cx, &raw.process);
        if zones.is_empty() {
            cx.error(
                None,
                "no [[zone]] configured: there is nothing to serve".into(),
            );
        }
        if diags.iter().any(Diagnostic::is_error) {
            return Err(diags);
        }
        Ok(Self {
            path: path.to_path_buf(),
            dns: DnsConfig {
                listen,
                udp_workers,
                tcp_idle_timeout,
                tcp_max_connections: raw.dns.tcp_max_connections,
                tcp_max_per_client: dns_edge.tcp_max_per_client,
                tcp_io_timeout: dns_edge.tcp_io_timeout,
                client_prefixes: dns_edge.client_prefixes,
                rrl: dns_edge.rrl,
                cookies: dns_edge.cookies,
            },
            zones,
            views,
            health,
            relays,
            redirect,
            admin,
            cluster,
            process,
            warnings: diags,
        })
    }

    /// Validates the `[[tsig_key]]` tables.
    fn tsig_keys(
        path: &Path,
        text: &str,
        base: &Path,
        raw: Vec<RawTsigKey>,
        diags: &mut Vec<Diagnostic>,
    ) -> Vec<TsigKey> {
        use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
        let at = |span: Range<usize>| Some(line_of(text, span.start));
        let mut keys: Vec<TsigKey> = Vec::new();
        for k in raw {
            let name = match fqdn_lower(k.name.get_ref()) {
                Ok(n) => n,
                Err(e) => {
                    diags.push(Diagnostic::error(
                        path,
                        at(k.name.span()),
                        format!(
                            "tsig_key name '{}' is not a domain name: {e}",
                            k.name.get_ref()
                        ),
                    ));
                    continue;
                }
            };
            if keys.iter().any(|x| x.name == name) {
                diags.push(Diagnostic::error(
                    path,
                    at(k.name.span()),
                    format!("tsig_key '{name}' is defined twice"),
                ));
                continue;
            }
            let algorithm = match k
                .algorithm
                .as_ref()
                .map(|a| a.get_ref().to_ascii_lowercase())
            {
                None => TsigAlgorithm::HmacSha256,
                Some(a) if a == "hmac-sha256" => TsigAlgorithm::HmacSha256,
                Some(a) if a == "hmac-sha384" => TsigAlgorithm::HmacSha384,
                Some(a) if a == "hmac-sha512" => TsigAlgorithm::HmacSha512,
                Some(a) => {
                    let span = k.algorithm.as_ref().map(Spanned::span).unwrap_or(0..0);
                    diags.push(Diagnostic::error(path, at(span), format!("tsig_key '{name}': algorithm '{a}' is not hmac-sha256, hmac-sha384 or hmac-sha512")));
                    continue;
                }
            };
            let (encoded, span) = match (&k.secret, &k.secret_file) {
                (Some(s), None) => (s.get_ref().clone(), s.span()),
                (None, Some(f)) => match edge::read_secret(&base.join(f.get_ref())) {
                    Ok(t) => (t.trim().to_string(), f.span()),
                    Err(e) => {
                        diags.push(Diagnostic::error(
                            path,
                            at(f.span()),
                            format!("tsig_key '{name}': secret_file: {e}"),
                        ));
                        continue;
                    }
                },
                _ => {
                    diags.push(Diagnostic::error(
                        path,
                        at(k.name.span()),
                        format!("tsig_key '{name}': set exactly one of secret and secret_file"),
                    ));
                    continue;
                }
            };
            match data_encoding::BASE64.decode(encoded.trim().as_bytes()) {
                Ok(secret) if secret.len() >= 16 => keys.push(TsigKey {
                    name,
                    algorithm,
                    secret,
                }),
                Ok(_) => diags.push(Diagnostic::error(
                    path,
                    at(span),
                    format!("tsig_key '{name}': the secret is shorter than 16 bytes"),
                )),
                Err(e) => diags.push(Diagnostic::error(
                    path,
                    at(span),
                    format!("tsig_key '{name}': the secret is not base64: {e}"),
                )),
            }
        }
        keys
    }

    /// Loads every zone the config names.
    ///
    /// # Errors
    /// Every problem in every zone (warnings included); `Ok` carries the warnings.
    pub fn load_zones(&self) -> Result<(Vec<Zone>, Vec<Diagnostic>), Vec<Diagnostic>> {
        let mut zones = Vec::new();
        let mut diags = Vec::new();
        let mut failed = false;
        for zc in &self.zones {
            if !zc.file.is_file() {
                failed = true;
                diags.push(Diagnostic::error(
                    &self.path,
                    Some(zc.line),
                    format!(
                        "zone {}: file {} does not exist",
                        zc.origin,
                        zc.file.display()
                    ),
                ));
                continue;
            }
            match load_zone(&zc.file, &zc.origin) {
                Ok((z, w)) => {
                    zones.push(z);
                    diags.extend(w);
                }
                Err(d) => {
                    failed = true;
                    diags.extend(d);
                }
            }
        }
        if failed {
            return Err(diags);
        }
        diags.extend(self.check_services(&zones));
        Ok((zones, diags))
    }

    /// Warnings about service names the zones give nothing to check, and, in a split-horizon
    /// config, about service addresses no `[[server]]` owns (a NAT address nobody claims is
    /// probed as it is, from the wrong side of the NAT).
    fn check_services(&self, zones: &[Zone]) -> Vec<Diagnostic> {
        use hickory_proto::rr::RecordType;
        let split = !self.views.implicit
            || self
                .health
                .servers
                .iter()
                .any(|s| !s.public_addresses.is_empty());
        let mut out = Vec::new();
        for svc in &self.health.services {
            let wire = crate::zone::wire_lower(&svc.name);
            let nodes: Vec<(usize, &crate::zone::Node)> = zones
                .iter()
                .enumerate()
                .filter_map(|(i, z)| Some((i, z.node(&wire)?)))
                .collect();
            let has_addr = nodes.iter().any(|(_, n)| {
                n.rrset(RecordType::A).is_some() || n.rrset(RecordType::AAAA).is_some()
            });
            if !has_addr {
                out.push(Diagnostic::warning(
                    &self.path,
                    None,
                    format!(
                        "service {} has no A or AAAA records in its zone: there is nothing to check or answer",
                        svc.name
                    ),
                ));
            }
            if !split {
                continue;
            }
            for (_, node) in nodes {
                for set in &node.rrsets {
                    for ip in set.records.iter().filter_map(|r| r.data.ip_addr()) {
                        if self.health.server_of(ip).is_none() {
                            out.push(Diagnostic::warning(
                                &set.file,
                                Some(set.line),
                                format!("service {}: {ip} is no [[server]]'s address or public address: it is probed as it is, and no server's health or admin state applies (list it in a server's public_addresses if it is a NAT address)", svc.name),
                            ));
                        }
                    }
                }
            }
        }
        out
    }
}

/// Helpers for the per-table unit tests: a config of one zone plus the table under test.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use super::Config;
    use crate::diag::Diagnostic;

    /// The zone every test config has (its file is never read: `parse` loads no zones).
    pub(crate) const ZONE: &str = "[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n";

    /// `ZONE` then `rest`, validated as `/cfg/m.toml`.
    pub(crate) fn parse(rest: &str) -> Result<Config, Vec<Diagnostic>> {
        Config::parse(Path::new("/cfg/m.toml"), &format!("{ZONE}{rest}"))
    }

    /// The config, which must be valid.
    pub(crate) fn valid(rest: &str) -> Config {
        match parse(rest) {
            Ok(c) => c,
            Err(d) => panic!("expected a valid config, got {d:#?}"),
        }
    }

    /// The errors of an invalid config, as (line, message).
    pub(crate) fn errors(rest: &str) -> Vec<(Option<usize>, String)> {
        match parse(rest) {
            Ok(c) => panic!("expected errors, got a valid config: {c:#?}"),
            Err(d) => d
                .into_iter()
                .filter(Diagnostic::is_error)
                .map(|d| (d.line, d.message))
                .collect(),
        }
    }

    /// True when one error is at `line` and contains `text`.
    pub(crate) fn has(errors: &[(Option<usize>, String)], line: usize, text: &str) -> bool {
        errors
            .iter()
            .any(|(l, m)| *l == Some(line) && m.contains(text))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::testing::{errors, has, valid, ZONE};
    use super::Config;

    #[test]
    fn dns_defaults() {
        let c = valid("");
        let local: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        assert_eq!(c.dns.listen, [local]);
        assert_eq!(c.dns.tcp_idle_timeout, Duration::from_secs(10));
        assert!(c.dns.udp_workers >= 1, "0 means one per CPU");
        assert_eq!(c.process.shutdown_grace, Duration::from_secs(30));
        assert!(!c.process.watch);
    }

    #[test]
    fn dns_listen_errors_name_the_line() {
        let e = errors(
            "[dns]\nlisten = [\"127.0.0.1:5300\", \"127.0.0.1:5300\", \"nowhere\"]\ntcp_idle_timeout = \"0s\"\ntcp_max_connections = 0\n",
        );
        assert!(
            has(&e, 5, "dns.listen: 127.0.0.1:5300 is listed twice"),
            "{e:?}"
        );
        assert!(has(&e, 5, "'nowhere' is not an address:port"), "{e:?}");
        assert!(
            has(
                &e,
                6,
                "dns.tcp_idle_timeout: '0s' is not a positive duration"
            ),
            "{e:?}"
        );
        assert!(e
            .iter()
            .any(|(_, m)| m.contains("tcp_max_connections must be at least 1")));
    }

    #[test]
    fn zone_table() {
        let c = valid(
            "allow_transfer = [\"127.0.0.2\", \"127.0.1.0/24\"]\nnotify = [\"127.0.0.3\", \"127.0.0.4:5300\"]\nserial = \"auto\"\n",
        );
        let z = &c.zones[0];
        assert_eq!(z.origin.to_ascii(), "z.test.");
        assert_eq!(
            z.file,
            std::path::Path::new("/cfg/z.zone"),
            "relative to the config"
        );
        assert_eq!(z.line, 3, "the line of `file`");
        assert_eq!(z.allow_transfer.len(), 2);
        assert_eq!(
            z.notify[0],
            "127.0.0.3:53".parse::<SocketAddr>().unwrap(),
            "port 53 by default"
        );
        assert_eq!(z.notify[1].port(), 5300);
        assert!(z.serial_auto);
    }

    #[test]
    fn zone_errors() {
        let e = errors(
            "allow_transfer = [\"everyone\"]\ntransfer_key = \"k\"\nnotify = [\"x\"]\nserial = \"1\"\n[[zone]]\nname = \"Z.test.\"\nfile = \"again.zone\"\n",
        );
        assert!(
            has(
                &e,
                4,
                "allow_transfer: 'everyone' is not an address or network"
            ),
            "{e:?}"
        );
        assert!(
            has(&e, 5, "transfer_key 'k' is not a [[tsig_key]]"),
            "{e:?}"
        );
        assert!(has(&e, 6, "notify: 'x' is not an address"), "{e:?}");
        assert!(has(&e, 7, "serial: '1' is not \"auto\""), "{e:?}");
        assert!(has(&e, 9, "zone z.test. is configured twice"), "{e:?}");
    }

    #[test]
    fn no_zone_and_bad_grace() {
        let e = match Config::parse(
            std::path::Path::new("/cfg/m.toml"),
            "[process]\nshutdown_grace = \"forever\"\n",
        ) {
            Err(d) => d,
            Ok(_) => panic!("valid"),
        };
        let text: Vec<String> = e.iter().map(|d| d.message.clone()).collect();
        assert!(
            text.iter().any(|m| m.contains("no [[zone]] configured")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|m| m.contains("process.shutdown_grace: 'forever'")),
            "{text:?}"
        );
        assert!(ZONE.starts_with("[[zone]]"));
    }

    const SPLIT: &str = "[[view]]\nname = \"internal\"\nmatch = [\"127.0.8.0/24\", \"::1\"]\nmatch_ecs = true\necs_from = [\"127.0.8.53\"]\n\
        [[view]]\nname = \"external\"\nmatch = [\"0.0.0.0/0\", \"::/0\"]\n";

    fn split(zones: &str) -> Result<Config, Vec<crate::diag::Diagnostic>> {
        Config::parse(
            std::path::Path::new("/cfg/m.toml"),
            &format!("{SPLIT}{zones}"),
        )
    }

    #[test]
    fn zones_per_view() {
        let c = split(
            "[[zone]]\nname = \"z.test\"\nfile = \"in.zone\"\nviews = [\"internal\"]\n\
             [[zone]]\nname = \"z.test\"\nfile = \"out.zone\"\nviews = [\"external\"]\n\
             [[zone]]\nname = \"shared.test\"\nfile = \"s.zone\"\n",
        )
        .unwrap();
        assert_eq!(c.views.zone_views, [vec![0], vec![1], vec![0, 1]]);
        assert!(!c.views.implicit);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // Without views: one implicit view with every zone, as before.
        let plain = valid("");
        assert!(plain.views.implicit);
        assert_eq!(plain.views.zone_views, [vec![0]]);
    }

    #[test]
    fn view_errors_name_the_line() {
        let e = match split(
            "[[view]]\nname = \"internal\"\nmatch = [\"nowhere\"]\nmatch_ecs = true\n\
             [[zone]]\nname = \"z.test\"\nfile = \"a.zone\"\nviews = [\"internal\", \"dmz\"]\n\
             [[zone]]\nname = \"z.test\"\nfile = \"b.zone\"\n",
        ) {
            Err(d) => d,
            Ok(c) => panic!("valid: {c:?}"),
        };
        let text: Vec<String> = e.iter().map(ToString::to_string).collect();
        let has = |line: usize, what: &str| {
            e.iter()
                .any(|d| d.line == Some(line) && d.message.contains(what))
        };
        assert!(has(10, "view 'internal' is defined twice"), "{text:#?}");
        assert!(
            has(16, "no [[view]] named 'dmz' (known: internal, external)"),
            "{text:#?}"
        );
        assert!(
            has(18, "zone z.test. is configured twice in view 'internal'"),
            "{text:#?}"
        );
        let e = errors("[[view]]\nname = \"v\"\nmatch = [\"127.0.0.0/33\"]\nmatch_ecs = true\n");
        assert!(
            has_text(&e, 6, "match: '127.0.0.0/33' is not an address or prefix"),
            "{e:?}"
        );
        assert!(has_text(&e, 7, "match_ecs needs ecs_from"), "{e:?}");
        let e = errors("views = [\"internal\"]\n");
        assert!(has_text(&e, 4, "the config defines no [[view]]"), "{e:?}");
    }

    fn has_text(e: &[(Option<usize>, String)], line: usize, text: &str) -> bool {
        has(e, line, text)
    }

    #[test]
    fn view_warnings() {
        let c = Config::parse(
            std::path::Path::new("/cfg/m.toml"),
            "[[view]]\nname = \"a\"\nmatch = [\"127.0.8.0/24\"]\n\
             [[view]]\nname = \"b\"\nmatch = [\"127.0.8.0/24\"]\n\
             [[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\nviews = [\"a\"]\n",
        )
        .unwrap();
        let w: Vec<&str> = c.warnings.iter().map(|d| d.message.as_str()).collect();
        let has = |what: &str| w.iter().any(|m| m.contains(what));
        assert!(
            has("view 'b' matches exactly the clients view 'a' matches"),
            "{w:#?}"
        );
        assert!(has("no view matches clients in 0.0.0.0/2"), "{w:#?}");
        assert!(has("no view matches clients in ::/0"), "{w:#?}");
        assert!(has("zone z.test. is not served in view(s) b"), "{w:#?}");
    }
}
