//! The health part of the config: `[health]` defaults, `[[check]]` probe definitions,
//! `[[server]]` metadata (name, site, weight, admin state) and `[[service]]` names whose answers
//! follow health.
//!
//! A service's members are the A/AAAA records its zone gives the name (the zone stays the source
//! of truth); `[[server]]` only attaches a name, site, weight and admin state to an address.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::Name;
use serde::Deserialize;
use toml::Spanned;

use crate::diag::{line_of, Diagnostic};
use crate::tls::client::TlsCheck;

// === raw ===

/// `[health]`: defaults for every check, and engine settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    /// Probe interval ("2s").
    interval: Option<Spanned<String>>,
    /// Probe timeout ("1.5s").
    timeout: Option<Spanned<String>>,
    /// Successes to come up.
    rise: Option<Spanned<u32>>,
    /// Failures to go down.
    fall: Option<Spanned<u32>>,
    /// Re-probe interval while a pair is changing state ("0.5s").
    fast_interval: Option<Spanned<String>>,
    /// Bound on the start-up probe round ("3s").
    startup_timeout: Option<Spanned<String>>,
    /// Keep one idle connection per checked port to learn of a dead server at once.
    sentinels: Option<bool>,
    /// Re-probe interval after a sentinel closes, until the state settles ("0.1s").
    sentinel_reprobe: Option<Spanned<String>>,
    /// Interval between heartbeats on a sentinel connection ("500ms"; "0s": none, idle sentinels).
    heartbeat: Option<Spanned<String>>,
    /// Name sent in the SMTP check's EHLO.
    ehlo_name: Option<String>,
}

/// `[[check]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    name: Spanned<String>,
    /// tcp, banner, imap, pop3, smtp, http, https.
    kind: Spanned<String>,
    port: Option<Spanned<u16>>,
    /// http(s): request path.
    path: Option<String>,
    /// http(s): Host header and TLS SNI.
    host: Option<String>,
    /// http(s): expected status.
    expect_status: Option<u16>,
    /// http(s): substring the body must contain; banner: the line prefix expected.
    expect: Option<String>,
    /// banner: what to send before closing ("QUIT\r\n").
    send: Option<String>,
    /// smtp: optional MAIL FROM step expecting 250.
    mail_from: Option<String>,
    /// https: verify the server certificate.
    tls_verify: Option<bool>,
    /// https: PEM file of CA certificates to verify against (default: the system bundle).
    ca_file: Option<String>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
    fast_interval: Option<Spanned<String>>,
}

/// `[[server]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    name: Spanned<String>,
    addresses: Vec<Spanned<String>>,
    /// Addresses answered for this server but never probed (a NAT in front of it).
    #[serde(default)]
    public_addresses: Vec<Spanned<String>>,
    site: Option<String>,
    weight: Option<u32>,
    state: Option<Spanned<String>>,
}

/// `[[service]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    name: Spanned<String>,
    checks: Spanned<Vec<String>>,
    ttl: Option<u32>,
    max_answers: Option<usize>,
    site: Option<String>,
    other_sites: Option<Spanned<String>>,
    failover_delay: Option<Spanned<String>>,
    fallback: Option<Spanned<Vec<String>>>,
    relay_addresses: Option<Vec<Spanned<String>>>,
}

// === validated ===

/// What a check says to the server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// Connect only.
    Tcp,
    /// Expect a greeting line with this prefix, then send `send` and close.
    Banner {
        /// Expected prefix ("* OK", "+OK").
        expect: String,
        /// Sent before closing ("a1 LOGOUT\r\n", "QUIT\r\n").
        send: String,
    },
    /// 2xx banner, EHLO, 250, optional MAIL FROM → 250, QUIT.
    Smtp {
        /// EHLO argument.
        ehlo: String,
        /// Optional MAIL FROM address.
        mail_from: Option<String>,
    },
    /// HTTP or HTTPS GET.
    Http {
        /// Request path.
        path: String,
        /// Host header (and SNI); None only when no zone is configured (then the address).
        host: Option<String>,
        /// Expected status.
        expect_status: u16,
        /// Substring the body must contain.
        expect_body: Option<String>,
        /// TLS settings, for https.
        tls: Option<TlsCheck>,
    },
}

/// Timing and thresholds of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timing {
    /// Interval between probes.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Successes to come up.
    pub rise: u32,
    /// Failures to go down.
    pub fall: u32,
    /// Interval while changing state.
    pub fast_interval: Duration,
}

/// A validated check.
#[derive(Debug, Clone)]
pub struct CheckDef {
    /// The name services and relays refer to it by.
    pub name: String,
    /// The dialogue it runs (TCP connect, banner, SMTP, HTTP(S)).
    pub kind: CheckKind,
    /// Port probed.
    pub port: u16,
    /// Interval, timeout and rise/fall thresholds (`[health]`'s, unless the check says).
    pub timing: Timing,
}

/// Admin state of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// In service.
    #[default]
    Ready,
    /// Out of DNS answers and new relay connections; still probed.
    Drain,
    /// Out of everything.
    Maint,
}

impl AdminState {
    /// Parses "ready", "drain", "maint".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ready" => Some(Self::Ready),
            "drain" => Some(Self::Drain),
            "maint" | "maintenance" => Some(Self::Maint),
            _ => None,
        }
    }

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Drain => "drain",
            Self::Maint => "maint",
        }
    }
}

/// A validated server.
#[derive(Debug, Clone)]
pub struct ServerDef {
    /// The name the dashboard, metrics and the admin API use.
    pub name: String,
    /// Its addresses: a zone record at one of them is this server; they are probed.
    pub addresses: Vec<IpAddr>,
    /// Addresses that reach it through a NAT or proxy (what external views answer). A zone
    /// record at one is this server too, with its health; they are never probed, because from
    /// mailns's side of the NAT they may not lead anywhere.
    pub public_addresses: Vec<IpAddr>,
    /// Its site, if any.
    pub site: Option<String>,
    /// Relative share of first places in rotated answers (1..=16).
    pub weight: u32,
    /// Admin state from the config.
    pub admin: AdminState,
}

/// How other sites are used when a service prefers one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherSites {
    /// Answered only when the preferred site has no healthy member (after `failover_delay`).
    Failover,
    /// Always answered, after the preferred site's members.
    Include,
}

/// One step of the all-down chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Healthy members of other sites (after the failover delay).
    OtherSites,
    /// The configured relay addresses.
    Relay,
    /// The zone's full set (fail open).
    Zone,
    /// No addresses (NODATA).
    Empty,
    /// SERVFAIL.
    Servfail,
}

impl Fallback {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "other-sites" => Self::OtherSites,
            "relay" => Self::Relay,
            "zone" => Self::Zone,
            "empty" => Self::Empty,
            "servfail" => Self::Servfail,
            _ => return None,
        })
    }

    /// Name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OtherSites => "other-sites",
            Self::Relay => "relay",
            Self::Zone => "zone",
            Self::Empty => "empty",
            Self::Servfail => "servfail",
        }
    }
}

/// A validated service name.
#[derive(Debug, Clone)]
pub struct ServiceDef {
    /// The owner name, lowercase FQDN.
    pub name: Name,
    /// Checks every member must pass.
    pub checks: Vec<String>,
    /// Answer TTL (never above the zone record's).
    pub ttl: u32,
    /// Addresses per answer at most.
    pub max_answers: usize,
    /// Preferred site.
    pub site: Option<String>,
    /// What other sites are for.
    pub other_sites: OtherSites,
    /// How long the preferred site must be entirely down before other sites are answered.
    pub failover_delay: Duration,
    /// The all-down chain.
    pub fallback: Vec<Fallback>,
    /// Addresses for the `relay` step.
    pub relay_addresses: Vec<IpAddr>,
}

/// The default heartbeat interval: detection within interval + timeout (≤ 2 s at the default
/// timing), at two small requests per second per checked port.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);

/// The validated health config.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// Bound on the start-up probe round.
    pub startup_timeout: Duration,
    /// Sentinel connections on.
    pub sentinels: bool,
    /// Re-probe interval after a sentinel closes.
    pub sentinel_reprobe: Duration,
    /// Interval between heartbeats on a sentinel connection; zero: idle sentinels.
    pub heartbeat: Duration,
    /// Checks by name.
    pub checks: Vec<CheckDef>,
    /// Names, sites, weights and admin states attached to addresses.
    pub servers: Vec<ServerDef>,
    /// Service names.
    pub services: Vec<ServiceDef>,
}

impl HealthConfig {
    /// The check named `name`.
    pub fn check(&self, name: &str) -> Option<&CheckDef> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The server owning `addr`, one of its addresses or public addresses.
    pub fn server_of(&self, addr: IpAddr) -> Option<&ServerDef> {
        self.servers
            .iter()
            .find(|s| s.addresses.contains(&addr) || s.public_addresses.contains(&addr))
    }

    /// The address probed for `addr`: itself, or for a server's public address the server's
    /// first address of the same family (else its first address), whose health it shares.
    pub fn probed_address(&self, addr: IpAddr) -> IpAddr {
        let Some(s) = self
            .servers
            .iter()
            .find(|s| s.public_addresses.contains(&addr))
        else {
            return addr;
        };
        s.addresses
            .iter()
            .find(|a| a.is_ipv4() == addr.is_ipv4())
            .or_else(|| s.addresses.first())
            .copied()
            .unwrap_or(addr)
    }
}

/// Validation context: the file, its text and where problems go.
/// The longest duration any key takes: every timer adds its duration to a clock, and a
/// year is more than any timeout, interval or delay needs.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

pub(super) struct Cx<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    pub(super) diags: &'a mut Vec<Diagnostic>,
}

impl Cx<'_> {
    fn err(&mut self, span: Option<Range<usize>>, msg: String) {
        let line = span.map(|s| line_of(self.text, s.start));
        self.diags.push(Diagnostic::error(self.path, line, msg));
    }

    /// An error at `span`.
    pub(super) fn error(&mut self, span: Option<Range<usize>>, msg: String) {
        self.err(span, msg);
    }

    /// A warning at `span`.
    pub(super) fn warn(&mut self, span: Option<Range<usize>>, msg: String) {
        let line = span.map(|s| line_of(self.text, s.start));
        self.diags.push(Diagnostic::warning(self.path, line, msg));
    }

    pub(super) fn duration(
        &mut self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        match v {
            None => default,
            Some(s) => match humantime::parse_duration(s.get_ref()) {
                Ok(d) if !d.is_zero() && d <= MAX_DURATION => d,
                _ => {
                    self.err(
                        Some(s.span()),
                        format!(
                            "{key}: '{}' is not a positive duration of at most a year (e.g. \"2s\", \"500ms\")",
                            s.get_ref()
                        ),
                    );
                    default
                }
            },
        }
    }
}

/// `health.heartbeat`: zero turns heartbeats off; otherwise 50 ms to a minute, since a faster
/// heartbeat only loads the servers and a slower one detects nothing a probe would not.
fn heartbeat(cx: &mut Cx, v: &Option<Spanned<String>>) -> Duration {
    let Some(s) = v else {
        return DEFAULT_HEARTBEAT;
    };
    match humantime::parse_duration(s.get_ref().trim()) {
        Ok(d) if d.is_zero() => d,
        Ok(d) if (Duration::from_millis(50)..=Duration::from_secs(60)).contains(&d) => d,
        _ => {
            cx.err(
                Some(s.span()),
                format!(
                    "health.heartbeat: '{}' is not \"0s\" (no heartbeats) or a duration from 50ms to 60s (e.g. \"500ms\")",
                    s.get_ref()
                ),
            );
            DEFAULT_HEARTBEAT
        }
    }
}

/// Validates the health tables. `zones` are the configured origins (service names must lie in one).
pub(super) fn validate(
    cx: &mut Cx<'_>,
    raw: RawHealth,
    checks: Vec<RawCheck>,
    servers: Vec<RawServer>,
    services: Vec<RawService>,
    zones: &[Name],
) -> HealthConfig {
    let defaults = Defaults {
        timing: default_timing(cx, &raw),
        ehlo: raw
            .ehlo_name
            .clone()
            .unwrap_or_else(|| "mailns.invalid".to_string()),
        base: cx.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        // Host and SNI default to the namespace (the first zone's name), as a client reaching
        // the server through the load-balanced name would send.
        host: zones
            .first()
            .map(|z| z.to_ascii().trim_end_matches('.').to_string()),
    };
    let checks = validate_checks(cx, checks, &defaults);
    let servers = validate_servers(cx, servers);
    let services = validate_services(cx, services, &checks, &servers, zones);
    HealthConfig {
        startup_timeout: cx.duration(
            &raw.startup_timeout,
            "health.startup_timeout",
            Duration::from_secs(3),
        ),
        sentinels: raw.sentinels.unwrap_or(true),
        sentinel_reprobe: cx.duration(
            &raw.sentinel_reprobe,
            "health.sentinel_reprobe",
            Duration::from_millis(100),
        ),
        heartbeat: heartbeat(cx, &raw.heartbeat),
        checks,
        servers,
        services,
    }
}

/// What a `[[check]]` takes from `[health]` and the rest of the config when it does not say.
struct Defaults {
    timing: Timing,
    ehlo: String,
    /// The config's folder: a relative `ca_file` is read from there.
    base: PathBuf,
    /// The namespace (first zone) without its final dot: the HTTP checks' Host and SNI.
    host: Option<String>,
}

/// `[health]`'s timing, which every check inherits.
fn default_timing(cx: &mut Cx<'_>, raw: &RawHealth) -> Timing {
    Timing {
        interval: cx.duration(&raw.interval, "health.interval", Duration::from_secs(2)),
        timeout: cx.duration(&raw.timeout, "health.timeout", Duration::from_millis(1500)),
        rise: threshold(cx, raw.rise.as_ref(), "health.rise", 2),
        fall: threshold(cx, raw.fall.as_ref(), "health.fall", 2),
        fast_interval: cx.duration(
            &raw.fast_interval,
            "health.fast_interval",
            Duration::from_millis(500),
        ),
    }
}

/// A rise or fall count: at least 1 (0 would flip a server on no evidence at all).
fn threshold(cx: &mut Cx<'_>, raw: Option<&Spanned<u32>>, key: &str, default: u32) -> u32 {
    match raw {
        None => default,
        Some(v) if *v.get_ref() == 0 => {
            cx.err(
                Some(v.span()),
                format!("{key} = 0: at least 1 result is needed to change a state; use 1 or more (default {default})"),
            );
            default
        }
        Some(v) => *v.get_ref(),
    }
}

/// The `[[check]]` tables, each name once; a broken check is reported and left out.
fn validate_checks(cx: &mut Cx<'_>, checks: Vec<RawCheck>, defaults: &Defaults) -> Vec<CheckDef> {
    let mut out: Vec<CheckDef> = Vec::new();
    for c in checks {
        let name = c.name.get_ref().clone();
        if name.trim().is_empty() {
            cx.err(
                Some(c.name.span()),
                "check name is empty: services and relays refer to a check by its name (e.g. \"owa\")".into(),
            );
            continue;
        }
        if out.iter().any(|x| x.name == name) {
            cx.err(
                Some(c.name.span()),
                format!("check '{name}' is defined twice"),
            );
            continue;
        }
        if let Some(check) = validate_check(cx, &c, name, defaults) {
            out.push(check);
        }
    }
    out
}

/// One `[[check]]`: its dialogue, port and timing.
fn validate_check(
    cx: &mut Cx<'_>,
    c: &RawCheck,
    name: String,
    defaults: &Defaults,
) -> Option<CheckDef> {
    let kind_s = c.kind.get_ref().as_str();
    let (kind, default_port) = check_kind(cx, c, &name, defaults)?;
    let http_only = c.path.is_some() || c.host.is_some() || c.expect_status.is_some();
    if http_only && !matches!(kind, CheckKind::Http { .. }) {
        cx.err(
            Some(c.kind.span()),
            format!(
                "check '{name}': path, host and expect_status apply to http and https checks only"
            ),
        );
    }
    let Some(port) = c.port.as_ref().map(|p| *p.get_ref()).or(default_port) else {
        cx.err(
            Some(c.kind.span()),
            format!("check '{name}': a {kind_s} check needs a port"),
        );
        return None;
    };
    if port == 0 {
        cx.err(
            c.port.as_ref().map(Spanned::span),
            format!("check '{name}': port 0 is no port to probe; use 1 to 65535"),
        );
    }
    let inherited = &defaults.timing;
    let timing = Timing {
        interval: cx.duration(&c.interval, "check.interval", inherited.interval),
        timeout: cx.duration(&c.timeout, "check.timeout", inherited.timeout),
        rise: c
            .rise
            .as_ref()
            .map_or(inherited.rise, |r| threshold(cx, Some(r), "check.rise", 2)),
        fall: c
            .fall
            .as_ref()
            .map_or(inherited.fall, |f| threshold(cx, Some(f), "check.fall", 2)),
        fast_interval: cx.duration(
            &c.fast_interval,
            "check.fast_interval",
            inherited.fast_interval,
        ),
    };
    if timing.timeout > timing.interval {
        cx.warn(
            c.timeout.as_ref().or(c.interval.as_ref()).map(Spanned::span).or(Some(c.name.span())),
            format!(
                "check '{name}': timeout {} is longer than interval {}: a probe still waiting holds up the next one, so a dead server is found later than the interval says",
                humantime::format_duration(timing.timeout),
                humantime::format_duration(timing.interval)
            ),
        );
    }
    Some(CheckDef {
        name,
        kind,
        port,
        timing,
    })
}

/// A check's dialogue from its `kind`, and the kind's usual port (None: the check must say).
fn check_kind(
    cx: &mut Cx<'_>,
    c: &RawCheck,
    name: &str,
    defaults: &Defaults,
) -> Option<(CheckKind, Option<u16>)> {
    let banner = |expect: &str, send: &str| CheckKind::Banner {
        expect: c.expect.clone().unwrap_or_else(|| expect.into()),
        send: c.send.clone().unwrap_or_else(|| send.into()),
    };
    match c.kind.get_ref().as_str() {
        "tcp" => Some((CheckKind::Tcp, None)),
        "imap" => Some((banner("* OK", "a1 LOGOUT\r\n"), Some(143))),
        "pop3" => Some((banner("+OK", "QUIT\r\n"), Some(110))),
        "banner" => {
            if c.expect.is_none() {
                cx.err(
                    Some(c.kind.span()),
                    format!(
                        "check '{name}': a banner check needs `expect` (the greeting's prefix)"
                    ),
                );
                return None;
            }
            Some((banner("", ""), None))
        }
        "smtp" => Some((
            CheckKind::Smtp {
                ehlo: defaults.ehlo.clone(),
                mail_from: c.mail_from.clone(),
            },
            Some(25),
        )),
        "http" => Some((http_kind(cx, c, name, defaults, false), Some(80))),
        "https" => Some((http_kind(cx, c, name, defaults, true), Some(443))),
        other => {
            cx.err(
                Some(c.kind.span()),
                format!("check '{name}': unknown kind '{other}' (tcp, banner, imap, pop3, smtp, http, https)"),
            );
            None
        }
    }
}

/// An http or https check's request and what it expects back.
fn http_kind(
    cx: &mut Cx<'_>,
    c: &RawCheck,
    name: &str,
    defaults: &Defaults,
    https: bool,
) -> CheckKind {
    let tls = https.then(|| TlsCheck {
        verify: c.tls_verify.unwrap_or(true),
        ca_file: c.ca_file.as_ref().map(|f| defaults.base.join(f)),
    });
    let path = c.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        cx.err(
            Some(c.kind.span()),
            format!("check '{name}': path must start with '/'"),
        );
    }
    CheckKind::Http {
        path,
        host: c.host.clone().or_else(|| defaults.host.clone()),
        expect_status: c.expect_status.unwrap_or(200),
        expect_body: c.expect.clone(),
        tls,
    }
}

/// The `[[server]]` tables: each name once, each address owned by one server.
fn validate_servers(cx: &mut Cx<'_>, servers: Vec<RawServer>) -> Vec<ServerDef> {
    let mut out: Vec<ServerDef> = Vec::new();
    let mut owner: HashMap<IpAddr, String> = HashMap::new();
    for s in servers {
        let name = s.name.get_ref().clone();
        if out.iter().any(|x| x.name == name) {
            cx.err(
                Some(s.name.span()),
                format!("server '{name}' is defined twice"),
            );
            continue;
        }
        let addresses = server_addresses(cx, &s.addresses, &name, &mut owner);
        let public_addresses = server_addresses(cx, &s.public_addresses, &name, &mut owner);
        if addresses.is_empty() && !public_addresses.is_empty() {
            cx.err(
                Some(s.name.span()),
                format!("server '{name}': public_addresses need at least one address to probe (addresses)"),
            );
        }
        let admin = match &s.state {
            None => AdminState::Ready,
            Some(st) => AdminState::parse(st.get_ref()).unwrap_or_else(|| {
                cx.err(
                    Some(st.span()),
                    format!(
                        "server '{name}': state '{}' is not ready, drain or maint",
                        st.get_ref()
                    ),
                );
                AdminState::Ready
            }),
        };
        out.push(ServerDef {
            name,
            addresses,
            public_addresses,
            site: s.site,
            weight: s.weight.unwrap_or(1).clamp(1, 16),
            admin,
        });
    }
    out
}

/// A server's addresses; `owner` records which server each address belongs to so far.
fn server_addresses(
    cx: &mut Cx<'_>,
    raw: &[Spanned<String>],
    name: &str,
    owner: &mut HashMap<IpAddr, String>,
) -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    for a in raw {
        match a.get_ref().parse::<IpAddr>() {
            Ok(ip) => {
                if let Some(other) = owner.insert(ip, name.to_string()) {
                    cx.err(
                        Some(a.span()),
                        format!(
                            "server '{name}': address {ip} already belongs to server '{other}'"
                        ),
                    );
                }
                addresses.push(ip);
            }
            Err(_) => cx.err(
                Some(a.span()),
                format!("server '{name}': '{}' is not an IP address", a.get_ref()),
            ),
        }
    }
    addresses
}

/// The `[[service]]` tables: names inside a configured zone, each once, naming known checks
/// and sites.
fn validate_services(
    cx: &mut Cx<'_>,
    services: Vec<RawService>,
    checks: &[CheckDef],
    servers: &[ServerDef],
    zones: &[Name],
) -> Vec<ServiceDef> {
    let sites: HashSet<&str> = servers.iter().filter_map(|s| s.site.as_deref()).collect();
    let mut out: Vec<ServiceDef> = Vec::new();
    for s in services {
        let span = Some(s.name.span());
        let name = match super::fqdn_lower(s.name.get_ref()) {
            Ok(n) => n,
            Err(e) => {
                cx.err(
                    span.clone(),
                    format!("service '{}' is not a domain name: {e}", s.name.get_ref()),
                );
                continue;
            }
        };
        if !zones.iter().any(|z| z.zone_of(&name)) {
            cx.err(
                span.clone(),
                format!("service {name} is in none of the configured zones"),
            );
        }
        if out.iter().any(|x| x.name == name) {
            cx.err(span, format!("service {name} is defined twice"));
            continue;
        }
        out.push(validate_service(cx, s, name, checks, &sites));
    }
    out
}

/// One `[[service]]` whose name is valid and new: its checks, site, fallback chain and policy.
fn validate_service(
    cx: &mut Cx<'_>,
    s: RawService,
    name: Name,
    checks: &[CheckDef],
    sites: &HashSet<&str>,
) -> ServiceDef {
    for c in s.checks.get_ref() {
        if !checks.iter().any(|x| &x.name == c) {
            cx.err(
                Some(s.checks.span()),
                format!("service {name}: unknown check '{c}'"),
            );
        }
    }
    if let Some(site) = &s.site {
        if !sites.contains(site.as_str()) {
            cx.err(
                Some(s.name.span()),
                format!("service {name}: no server is in site '{site}'"),
            );
        }
    }
    let other_sites = match s.other_sites.as_ref().map(|o| o.get_ref().as_str()) {
        None | Some("failover") => OtherSites::Failover,
        Some("include") => OtherSites::Include,
        Some(o) => {
            cx.err(
                s.other_sites.as_ref().map(Spanned::span),
                format!("service {name}: other_sites '{o}' is not failover or include"),
            );
            OtherSites::Failover
        }
    };
    let relay_addresses = relay_addresses(cx, &s, &name);
    let fallback = fallback_chain(cx, &s, &name, &relay_addresses);
    let failover_delay = failover_delay(cx, &s, &name);
    ServiceDef {
        name,
        checks: s.checks.into_inner(),
        ttl: s.ttl.unwrap_or(30),
        max_answers: s.max_answers.unwrap_or(8).max(1),
        site: s.site,
        other_sites,
        failover_delay,
        fallback,
        relay_addresses,
    }
}

/// A service's `relay_addresses` (answered by the `relay` fallback step).
fn relay_addresses(cx: &mut Cx<'_>, s: &RawService, name: &Name) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for a in s.relay_addresses.iter().flatten() {
        match a.get_ref().parse::<IpAddr>() {
            Ok(ip) => out.push(ip),
            Err(_) => cx.err(
                Some(a.span()),
                format!(
                    "service {name}: relay address '{}' is not an IP address",
                    a.get_ref()
                ),
            ),
        }
    }
    out
}

/// A service's fallback chain: the config's steps, or other-sites, relay, zone.
fn fallback_chain(
    cx: &mut Cx<'_>,
    s: &RawService,
    name: &Name,
    relay_addresses: &[IpAddr],
) -> Vec<Fallback> {
    let Some(f) = &s.fallback else {
        return vec![Fallback::OtherSites, Fallback::Relay, Fallback::Zone];
    };
    let mut v = Vec::new();
    for step in f.get_ref() {
        match Fallback::parse(step) {
            Some(x) => v.push(x),
            None => cx.err(
                Some(f.span()),
                format!("service {name}: unknown fallback step '{step}' (other-sites, relay, zone, empty, servfail)"),
            ),
        }
    }
    if v.contains(&Fallback::Relay) && relay_addresses.is_empty() {
        cx.err(
            Some(f.span()),
            format!("service {name}: fallback 'relay' needs relay_addresses"),
        );
    }
    v
}

/// How long a service waits before failing over to other sites (none by default).
fn failover_delay(cx: &mut Cx<'_>, s: &RawService, name: &Name) -> Duration {
    let Some(d) = &s.failover_delay else {
        return Duration::ZERO;
    };
    match humantime::parse_duration(d.get_ref()) {
        Ok(v) if v <= MAX_DURATION => v,
        _ => {
            cx.err(
                Some(d.span()),
                format!(
                    "service {name}: failover_delay '{}' is not a duration of at most a year",
                    d.get_ref()
                ),
            );
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::testing::{errors, has, valid};

    #[test]
    fn checks_inherit_health_and_take_their_kind_defaults() {
        let c = valid(concat!(
            "[health]\ninterval = \"5s\"\nrise = 3\n",
            "[[check]]\nname = \"owa\"\nkind = \"https\"\npath = \"/owa/healthcheck.htm\"\n",
            "[[check]]\nname = \"imap\"\nkind = \"imap\"\nfall = 4\n",
            "[[check]]\nname = \"smtp\"\nkind = \"smtp\"\n",
        ));
        let h = &c.health;
        let owa = h.check("owa").unwrap();
        assert_eq!(owa.port, 443);
        assert_eq!(owa.timing.interval, Duration::from_secs(5), "from [health]");
        assert_eq!(owa.timing.rise, 3);
        assert_eq!(
            owa.timing.timeout,
            Duration::from_millis(1500),
            "the default"
        );
        let CheckKind::Http {
            host, tls, path, ..
        } = &owa.kind
        else {
            panic!("{:?}", owa.kind)
        };
        assert_eq!(host.as_deref(), Some("z.test"), "the namespace");
        assert_eq!(path, "/owa/healthcheck.htm");
        assert!(
            tls.as_ref().is_some_and(|t| t.verify),
            "verified by default"
        );
        let imap = h.check("imap").unwrap();
        assert_eq!(imap.port, 143);
        assert_eq!(imap.timing.fall, 4);
        assert_eq!(
            imap.kind,
            CheckKind::Banner {
                expect: "* OK".into(),
                send: "a1 LOGOUT\r\n".into()
            }
        );
        let smtp = h.check("smtp").unwrap();
        assert_eq!(smtp.port, 25);
        assert!(matches!(&smtp.kind, CheckKind::Smtp { ehlo, .. } if ehlo == "mailns.invalid"));
        assert!(h.sentinels, "on by default");
        assert_eq!(h.startup_timeout, Duration::from_secs(3));
    }

    #[test]
    fn heartbeat_is_on_by_default_and_off_with_zero() {
        assert_eq!(valid("").health.heartbeat, DEFAULT_HEARTBEAT);
        let off = valid("[health]\nheartbeat = \"0s\"\n");
        assert!(off.health.heartbeat.is_zero());
        let e = errors("[health]\nheartbeat = \"10ms\"\n");
        assert!(
            has(&e, 5, "health.heartbeat: '10ms' is not \"0s\" (no heartbeats) or a duration from 50ms to 60s"),
            "{e:?}"
        );
        let e = errors("[health]\nheartbeat = \"often\"\n");
        assert!(has(&e, 5, "health.heartbeat: 'often'"), "{e:?}");
    }

    #[test]
    fn check_errors_name_the_line() {
        let e = errors(concat!(
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\nport = 1\n",
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\nport = 1\n",
            "[[check]]\nname = \"p\"\nkind = \"tcp\"\n",
            "[[check]]\nname = \"b\"\nkind = \"banner\"\nport = 1\n",
            "[[check]]\nname = \"c\"\nkind = \"ping\"\n",
            "[[check]]\nname = \"d\"\nkind = \"tcp\"\nport = 1\npath = \"/x\"\n",
            "[[check]]\nname = \"e\"\nkind = \"http\"\npath = \"x\"\ninterval = \"soon\"\n",
        ));
        assert!(has(&e, 9, "check 'a' is defined twice"), "{e:?}");
        assert!(has(&e, 14, "check 'p': a tcp check needs a port"), "{e:?}");
        assert!(has(&e, 17, "a banner check needs `expect`"), "{e:?}");
        assert!(has(&e, 21, "unknown kind 'ping' (tcp, banner"), "{e:?}");
        assert!(has(&e, 24, "apply to http and https checks only"), "{e:?}");
        assert!(has(&e, 29, "check 'e': path must start with '/'"), "{e:?}");
        assert!(
            has(&e, 31, "check.interval: 'soon' is not a positive duration"),
            "{e:?}"
        );
    }

    #[test]
    fn servers() {
        let c = valid(concat!(
            "[[server]]\nname = \"ex1\"\naddresses = [\"127.0.1.1\", \"::1\"]\nsite = \"a\"\nweight = 40\nstate = \"drain\"\n",
            "[[server]]\nname = \"ex2\"\naddresses = [\"127.0.1.2\"]\n",
        ));
        let ex1 = &c.health.servers[0];
        assert_eq!(ex1.addresses.len(), 2);
        assert_eq!(ex1.weight, 16, "capped");
        assert_eq!(ex1.admin, AdminState::Drain);
        let ex2 = &c.health.servers[1];
        assert_eq!((ex2.weight, ex2.admin), (1, AdminState::Ready));
        assert_eq!(
            c.health
                .server_of("127.0.1.2".parse().unwrap())
                .map(|s| s.name.as_str()),
            Some("ex2")
        );
    }

    #[test]
    fn server_errors() {
        let e = errors(concat!(
            "[[server]]\nname = \"ex1\"\naddresses = [\"127.0.1.1\"]\n",
            "[[server]]\nname = \"ex2\"\naddresses = [\"127.0.1.1\", \"cas\"]\nstate = \"off\"\n",
            "[[server]]\nname = \"ex1\"\naddresses = []\n",
        ));
        assert!(
            has(&e, 9, "address 127.0.1.1 already belongs to server 'ex1'"),
            "{e:?}"
        );
        assert!(has(&e, 9, "'cas' is not an IP address"), "{e:?}");
        assert!(
            has(&e, 10, "state 'off' is not ready, drain or maint"),
            "{e:?}"
        );
        assert!(has(&e, 12, "server 'ex1' is defined twice"), "{e:?}");
    }

    #[test]
    fn services() {
        let c = valid(concat!(
            "[[check]]\nname = \"owa\"\nkind = \"tcp\"\nport = 443\n",
            "[[service]]\nname = \"OWA.z.test\"\nchecks = [\"owa\"]\n",
            "[[service]]\nname = \"mail.z.test\"\nchecks = []\nfallback = [\"relay\", \"servfail\"]\n",
            "relay_addresses = [\"127.0.2.1\"]\nfailover_delay = \"30s\"\nother_sites = \"include\"\n",
        ));
        let owa = &c.health.services[0];
        assert_eq!(
            owa.name.to_ascii(),
            "owa.z.test.",
            "lowercase, fully qualified"
        );
        assert_eq!((owa.ttl, owa.max_answers), (30, 8));
        assert_eq!(
            owa.fallback,
            [Fallback::OtherSites, Fallback::Relay, Fallback::Zone]
        );
        assert_eq!(owa.failover_delay, Duration::ZERO);
        let mail = &c.health.services[1];
        assert_eq!(mail.fallback, [Fallback::Relay, Fallback::Servfail]);
        assert_eq!(mail.failover_delay, Duration::from_secs(30));
        assert_eq!(mail.other_sites, OtherSites::Include);
        assert_eq!(mail.relay_addresses.len(), 1);
    }

    #[test]
    fn service_errors() {
        let e = errors(concat!(
            "[[service]]\nname = \"owa.elsewhere.test\"\nchecks = [\"nope\"]\nsite = \"moon\"\n",
            "[[service]]\nname = \"a.z.test\"\nchecks = []\nfallback = [\"relay\", \"pray\"]\n",
            "failover_delay = \"later\"\nother_sites = \"never\"\n",
            "[[service]]\nname = \"A.z.test\"\nchecks = []\n",
        ));
        assert!(has(&e, 5, "is in none of the configured zones"), "{e:?}");
        assert!(has(&e, 6, "unknown check 'nope'"), "{e:?}");
        assert!(has(&e, 5, "no server is in site 'moon'"), "{e:?}");
        assert!(has(&e, 11, "unknown fallback step 'pray'"), "{e:?}");
        assert!(
            has(&e, 11, "fallback 'relay' needs relay_addresses"),
            "{e:?}"
        );
        assert!(
            has(&e, 12, "failover_delay 'later' is not a duration"),
            "{e:?}"
        );
        assert!(
            has(&e, 13, "other_sites 'never' is not failover or include"),
            "{e:?}"
        );
        assert!(has(&e, 15, "service a.z.test. is defined twice"), "{e:?}");
    }
}
