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
    rise: Option<u32>,
    /// Failures to go down.
    fall: Option<u32>,
    /// Re-probe interval while a pair is changing state ("0.5s").
    fast_interval: Option<Spanned<String>>,
    /// Bound on the start-up probe round ("3s").
    startup_timeout: Option<Spanned<String>>,
    /// Keep one idle connection per checked port to learn of a dead server at once.
    sentinels: Option<bool>,
    /// Re-probe interval after a sentinel closes, until the state settles ("0.1s").
    sentinel_reprobe: Option<Spanned<String>>,
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
    port: Option<u16>,
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
    rise: Option<u32>,
    fall: Option<u32>,
    fast_interval: Option<Spanned<String>>,
}

/// `[[server]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    name: Spanned<String>,
    addresses: Vec<Spanned<String>>,
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

/// TLS settings of an https check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsCheck {
    /// Verify the chain and the name.
    pub verify: bool,
    /// CA bundle (None: the system bundle).
    pub ca_file: Option<PathBuf>,
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
    /// Its name.
    pub name: String,
    /// The dialogue.
    pub kind: CheckKind,
    /// Port probed.
    pub port: u16,
    /// Timing.
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
    /// Its name.
    pub name: String,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
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

/// The validated health config.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// Bound on the start-up probe round.
    pub startup_timeout: Duration,
    /// Sentinel connections on.
    pub sentinels: bool,
    /// Re-probe interval after a sentinel closes.
    pub sentinel_reprobe: Duration,
    /// Checks by name.
    pub checks: Vec<CheckDef>,
    /// Servers.
    pub servers: Vec<ServerDef>,
    /// Service names.
    pub services: Vec<ServiceDef>,
}

impl HealthConfig {
    /// The check named `name`.
    pub fn check(&self, name: &str) -> Option<&CheckDef> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The server owning `addr`.
    pub fn server_of(&self, addr: IpAddr) -> Option<&ServerDef> {
        self.servers.iter().find(|s| s.addresses.contains(&addr))
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

/// Validates the health tables. `zones` are the configured origins (service names must lie in one).
pub(super) fn validate(
    cx: &mut Cx<'_>,
    raw: RawHealth,
    checks: Vec<RawCheck>,
    servers: Vec<RawServer>,
    services: Vec<RawService>,
    zones: &[Name],
) -> HealthConfig {
    let base = cx.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let defaults = Timing {
        interval: cx.duration(&raw.interval, "health.interval", Duration::from_secs(2)),
        timeout: cx.duration(&raw.timeout, "health.timeout", Duration::from_millis(1500)),
        rise: raw.rise.unwrap_or(2).max(1),
        fall: raw.fall.unwrap_or(2).max(1),
        fast_interval: cx.duration(
            &raw.fast_interval,
            "health.fast_interval",
            Duration::from_millis(500),
        ),
    };
    let ehlo = raw
        .ehlo_name
        .unwrap_or_else(|| "mailns.invalid".to_string());

    let mut out_checks: Vec<CheckDef> = Vec::new();
    for c in checks {
        let name = c.name.get_ref().clone();
        if out_checks.iter().any(|x| x.name == name) {
            cx.err(
                Some(c.name.span()),
                format!("check '{name}' is defined twice"),
            );
            continue;
        }
        let kind_s = c.kind.get_ref().as_str();
        let http_only = c.path.is_some() || c.host.is_some() || c.expect_status.is_some();
        let (kind, default_port) = match kind_s {
            "tcp" => (CheckKind::Tcp, None),
            "imap" => (
                CheckKind::Banner {
                    expect: c.expect.clone().unwrap_or_else(|| "* OK".into()),
                    send: c.send.clone().unwrap_or_else(|| "a1 LOGOUT\r\n".into()),
                },
                Some(143),
            ),
            "pop3" => (
                CheckKind::Banner {
                    expect: c.expect.clone().unwrap_or_else(|| "+OK".into()),
                    send: c.send.clone().unwrap_or_else(|| "QUIT\r\n".into()),
                },
                Some(110),
            ),
            "banner" => {
                let Some(expect) = c.expect.clone() else {
                    cx.err(
                        Some(c.kind.span()),
                        format!(
                            "check '{name}': a banner check needs `expect` (the greeting's prefix)"
                        ),
                    );
                    continue;
                };
                (
                    CheckKind::Banner {
                        expect,
                        send: c.send.clone().unwrap_or_default(),
                    },
                    None,
                )
            }
            "smtp" => (
                CheckKind::Smtp {
                    ehlo: ehlo.clone(),
                    mail_from: c.mail_from.clone(),
                },
                Some(25),
            ),
            "http" | "https" => {
                let tls = (kind_s == "https").then(|| TlsCheck {
                    verify: c.tls_verify.unwrap_or(true),
                    ca_file: c.ca_file.as_ref().map(|f| base.join(f)),
                });
                let path = c.path.clone().unwrap_or_else(|| "/".into());
                if !path.starts_with('/') {
                    cx.err(
                        Some(c.kind.span()),
                        format!("check '{name}': path must start with '/'"),
                    );
                }
                // Host and SNI default to the namespace (the first zone's name), as a client
                // reaching the server through the load-balanced name would send.
                let host = c.host.clone().or_else(|| {
                    zones
                        .first()
                        .map(|z| z.to_ascii().trim_end_matches('.').to_string())
                });
                (
                    CheckKind::Http {
                        path,
                        host,
                        expect_status: c.expect_status.unwrap_or(200),
                        expect_body: c.expect.clone(),
                        tls,
                    },
                    Some(if kind_s == "https" { 443 } else { 80 }),
                )
            }
            other => {
                cx.err(
                    Some(c.kind.span()),
                    format!("check '{name}': unknown kind '{other}' (tcp, banner, imap, pop3, smtp, http, https)"),
                );
                continue;
            }
        };
        if http_only && !matches!(kind, CheckKind::Http { .. }) {
            cx.err(Some(c.kind.span()), format!("check '{name}': path, host and expect_status apply to http and https checks only"));
        }
        let Some(port) = c.port.or(default_port) else {
            cx.err(
                Some(c.kind.span()),
                format!("check '{name}': a {kind_s} check needs a port"),
            );
            continue;
        };
        let timing = Timing {
            interval: cx.duration(&c.interval, "check.interval", defaults.interval),
            timeout: cx.duration(&c.timeout, "check.timeout", defaults.timeout),
            rise: c.rise.unwrap_or(defaults.rise).max(1),
            fall: c.fall.unwrap_or(defaults.fall).max(1),
            fast_interval: cx.duration(
                &c.fast_interval,
                "check.fast_interval",
                defaults.fast_interval,
            ),
        };
        out_checks.push(CheckDef {
            name,
            kind,
            port,
            timing,
        });
    }

    let mut out_servers: Vec<ServerDef> = Vec::new();
    let mut owner: HashMap<IpAddr, String> = HashMap::new();
    for s in servers {
        let name = s.name.get_ref().clone();
        if out_servers.iter().any(|x| x.name == name) {
            cx.err(
                Some(s.name.span()),
                format!("server '{name}' is defined twice"),
            );
            continue;
        }
        let mut addresses = Vec::new();
        for a in &s.addresses {
            match a.get_ref().parse::<IpAddr>() {
                Ok(ip) => {
                    if let Some(other) = owner.insert(ip, name.clone()) {
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
        out_servers.push(ServerDef {
            name,
            addresses,
            site: s.site,
            weight: s.weight.unwrap_or(1).clamp(1, 16),
            admin,
        });
    }
    let sites: HashSet<&str> = out_servers
        .iter()
        .filter_map(|s| s.site.as_deref())
        .collect();

    let mut out_services: Vec<ServiceDef> = Vec::new();
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
        if out_services.iter().any(|x| x.name == name) {
            cx.err(span.clone(), format!("service {name} is defined twice"));
            continue;
        }
        for c in s.checks.get_ref() {
            if !out_checks.iter().any(|x| &x.name == c) {
                cx.err(
                    Some(s.checks.span()),
                    format!("service {name}: unknown check '{c}'"),
                );
            }
        }
        if let Some(site) = &s.site {
            if !sites.contains(site.as_str()) {
                cx.err(
                    span.clone(),
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
        let mut relay_addresses = Vec::new();
        for a in s.relay_addresses.iter().flatten() {
            match a.get_ref().parse::<IpAddr>() {
                Ok(ip) => relay_addresses.push(ip),
                Err(_) => cx.err(
                    Some(a.span()),
                    format!(
                        "service {name}: relay address '{}' is not an IP address",
                        a.get_ref()
                    ),
                ),
            }
        }
        let fallback = match &s.fallback {
            None => vec![Fallback::OtherSites, Fallback::Relay, Fallback::Zone],
            Some(f) => {
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
                if v.contains(&Fallback::Relay)
                    && relay_addresses.is_empty()
                    && s.fallback.is_some()
                {
                    cx.err(
                        Some(f.span()),
                        format!("service {name}: fallback 'relay' needs relay_addresses"),
                    );
                }
                v
            }
        };
        let ttl = s.ttl.unwrap_or(30);
        let max_answers = s.max_answers.unwrap_or(8).max(1);
        let failover_delay = match &s.failover_delay {
            None => Duration::ZERO,
            Some(d) => match humantime::parse_duration(d.get_ref()) {
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
            },
        };
        out_services.push(ServiceDef {
            name,
            checks: s.checks.into_inner(),
            ttl,
            max_answers,
            site: s.site,
            other_sites,
            failover_delay,
            fallback,
            relay_addresses,
        });
    }
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
        checks: out_checks,
        servers: out_servers,
        services: out_services,
    }
}
