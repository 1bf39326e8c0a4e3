//! `/api/v1/status`: everything the dashboard shows, as one JSON document (schema in the README).
//!
//! Built on request from the live sources (the snapshot, the engine's reports and transitions,
//! relay counters, certificates); nothing here is on a query path.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::app::{Live, Loaded};
use crate::config::relay::RelayKind;
use crate::config::{AdminState, CheckKind, HealthConfig};
use crate::health::answer::{rotate, Selection, Step};
use crate::health::report::ProbeReport;
use crate::health::Status;
use crate::relay::server::Relay;
use crate::state::Snapshot;
use crate::tls::front::TlsMode;

/// `/api/v1/status`: the whole state the dashboard draws, as one JSON document.
#[derive(Debug, Serialize)]
pub struct StatusDoc {
    /// mailns's version.
    pub version: &'static str,
    /// When this document was built.
    pub now: String,
    /// When the process started.
    pub started_at: String,
    /// First probe round done and listeners bound.
    pub ready: bool,
    /// The config in force and the last reload.
    pub config: ConfigDoc,
    /// Servers, problems first.
    pub servers: Vec<ServerDoc>,
    /// The views (split horizon): who gets which zones. One, "default", without `[[view]]`.
    pub views: Vec<ViewDoc>,
    /// Health-driven names and what they answer now, one entry per name and zone (so per view).
    pub services: Vec<ServiceDoc>,
    /// Relays and their backends.
    pub relays: Vec<RelayDoc>,
    /// Certificates: the relays' own and those backends presented to https checks, soonest first.
    pub certificates: Vec<CertDoc>,
    /// The last 100 transitions, newest first.
    pub transitions: Vec<TransitionDoc>,
    /// DNS counters.
    pub dns: DnsDoc,
    /// `mailns demo` only: the simulated servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demo: Option<Vec<crate::app::DemoView>>,
}

/// Config state.
#[derive(Debug, Serialize)]
pub struct ConfigDoc {
    /// The config file.
    pub file: String,
    /// Zone files.
    pub zone_files: Vec<String>,
    /// When the config in force was loaded.
    pub loaded_at: String,
    /// Reloads that succeeded since start.
    pub reloads: u64,
    /// The last reload's error, while no later reload succeeded.
    pub last_reload_error: Option<ReloadErrorDoc>,
    /// Admin actions are enabled (a token file is configured).
    pub admin_actions: bool,
}

/// A failed reload.
#[derive(Debug, Serialize)]
pub struct ReloadErrorDoc {
    /// When the reload failed (RFC 3339, UTC).
    pub at: String,
    /// `path:line: message` lines.
    pub message: String,
}

/// One server (a `[[server]]`, or a checked address no `[[server]]` names).
#[derive(Debug, Serialize)]
pub struct ServerDoc {
    /// The `[[server]]` name, or the address of a checked address no `[[server]]` names.
    pub name: String,
    /// The addresses its checks probe (the zone's A/AAAA records of its service names).
    pub addresses: Vec<IpAddr>,
    /// Its public (NAT) addresses: answered where a zone lists them, with this server's health.
    pub public_addresses: Vec<IpAddr>,
    /// Its site, for site-aware answers (None: no site).
    pub site: Option<String>,
    /// Named by a `[[server]]` (admin actions apply only to those).
    pub configured: bool,
    /// ready, drain or maint.
    pub admin: AdminState,
    /// Overall: maint, drain, down (a check fails), unknown, or up.
    pub state: &'static str,
    /// One row per (address, check).
    pub checks: Vec<CheckDoc>,
}

/// One (address, check) pair.
#[derive(Debug, Serialize)]
pub struct CheckDoc {
    /// The check's name.
    pub check: String,
    /// The probed address.
    pub address: IpAddr,
    /// The probed port.
    pub port: u16,
    /// tcp, banner, smtp, http or https.
    pub kind: &'static str,
    /// up, down or unknown.
    pub status: &'static str,
    /// When the status last changed.
    pub since: Option<String>,
    /// When the last probe finished.
    pub last_probe: Option<String>,
    /// The last probe's duration.
    pub latency_ms: Option<f64>,
    /// The last probe's error.
    pub error: Option<String>,
    /// Consecutive successes toward `rise` (while down).
    pub successes: u32,
    /// Consecutive failures toward `fall` (while up).
    pub failures: u32,
    /// Successes that bring it up.
    pub rise: u32,
    /// Failures that take it down.
    pub fall: u32,
}

/// One view.
#[derive(Debug, Serialize)]
pub struct ViewDoc {
    /// Its name.
    pub name: String,
    /// Client prefixes it matches (first view that matches wins).
    #[serde(rename = "match")]
    pub matches: Vec<String>,
    /// Queries from `ecs_from` are matched on their client subnet.
    pub match_ecs: bool,
    /// Resolvers whose client subnet is trusted.
    pub ecs_from: Vec<String>,
    /// TSIG keys that select it for transfers.
    pub match_keys: Vec<String>,
    /// Its zone files.
    pub zone_files: Vec<String>,
}

/// One health-driven name in one zone.
#[derive(Debug, Serialize)]
pub struct ServiceDoc {
    /// The health-driven name, fully qualified.
    pub name: String,
    /// The views whose clients get this answer.
    pub views: Vec<String>,
    /// The zone file its members come from.
    pub zone_file: String,
    /// TTL of its answers.
    pub ttl: u32,
    /// A records.
    pub a: Option<AnswerDoc>,
    /// AAAA records.
    pub aaaa: Option<AnswerDoc>,
}

/// What one family of a name answers now.
#[derive(Debug, Serialize)]
pub struct AnswerDoc {
    /// The fallback step in force.
    pub step: &'static str,
    /// True unless every address is answered because it is healthy.
    pub degraded: bool,
    /// The first rotation of the answer.
    pub answer: Vec<IpAddr>,
}

/// One relay.
#[derive(Debug, Serialize)]
pub struct RelayDoc {
    /// The `[[relay]]` name.
    pub name: String,
    /// tcp or smtp.
    pub kind: &'static str,
    /// passthrough, offload or reencrypt.
    pub tls: &'static str,
    /// The addresses it accepts on.
    pub listen: Vec<String>,
    /// Clients refused (allow-list, limits, no usable backend).
    pub refused: u64,
    /// Its servers, in the relay's order, with their counters.
    pub servers: Vec<BackendDoc>,
}

/// One relay backend.
#[derive(Debug, Serialize)]
pub struct BackendDoc {
    /// The `[[server]]` name.
    pub name: String,
    /// The address the relay connects to.
    pub address: IpAddr,
    /// Takes new connections.
    pub usable: bool,
    /// Open connections.
    pub active: u64,
    /// Connections since start.
    pub total: u64,
    /// Failed connect attempts.
    pub failed_connects: u64,
    /// Bytes client → server.
    pub bytes_up: u64,
    /// Bytes server → client.
    pub bytes_down: u64,
}

/// One certificate.
#[derive(Debug, Serialize)]
pub struct CertDoc {
    /// "relay <name>" or "check <check> on <server> (<address>:<port>)".
    pub source: String,
    /// Its names (relay certificates; empty for backend certificates).
    pub names: Vec<String>,
    /// Its notAfter.
    pub not_after: String,
    /// Days left (negative: expired).
    pub days_left: i64,
}

/// One transition.
#[derive(Debug, Serialize)]
pub struct TransitionDoc {
    /// When the change happened (RFC 3339, UTC).
    pub at: String,
    /// The server's name (its address when no `[[server]]` names it).
    pub server: String,
    /// The checks, or "admin".
    pub what: String,
    /// Previous state.
    pub from: &'static str,
    /// New state.
    pub to: &'static str,
    /// The failing probe's error.
    pub detail: String,
}

/// DNS counters.
#[derive(Debug, Serialize)]
pub struct DnsDoc {
    /// Responses by rcode name.
    pub responses: std::collections::BTreeMap<String, u64>,
    /// Packets dropped without an answer.
    pub dropped: u64,
    /// Response rate limiting.
    pub rrl: RrlDoc,
    /// DNS cookies.
    pub cookies: CookiesDoc,
    /// DNS/TCP connections closed at once (every slot busy).
    pub tcp_refused: u64,
    /// UDP workers restarted after a panic.
    pub worker_restarts: u64,
}

/// Response rate limiting in `/api/v1/status`.
#[derive(Debug, serde::Serialize)]
pub struct RrlDoc {
    /// Rate limiting is configured (`[dns.rrl]`).
    pub enabled: bool,
    /// Responses a second per bucket.
    pub rate: u32,
    /// Every `slip`-th limited response is sent truncated.
    pub slip: u32,
    /// Responses dropped.
    pub dropped: u64,
    /// Responses sent truncated (or as BADCOOKIE) instead.
    pub slipped: u64,
}

/// DNS cookies in `/api/v1/status`.
#[derive(Debug, serde::Serialize)]
pub struct CookiesDoc {
    /// DNS cookies are answered (`[dns.cookies]`).
    pub enabled: bool,
    /// Queries with a valid server cookie.
    pub valid: u64,
    /// Queries with a client cookie only (or a stale server cookie).
    pub new: u64,
}

/// RFC 3339 time in UTC, seconds.
pub fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn unix(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64)
}

/// The mnemonic of rcode counter slot `i` (RFC 1035, 2136, 6891), as dig prints it.
pub fn rcode_name(i: usize) -> String {
    const NAMES: [&str; 11] = [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
        "NXRRSET", "NOTAUTH", "NOTZONE",
    ];
    match i {
        crate::dns::SLOT_BADVERS => "BADVERS".into(),
        crate::dns::SLOT_BADCOOKIE => "BADCOOKIE".into(),
        i => NAMES
            .get(i)
            .map_or_else(|| format!("RCODE{i}"), |n| (*n).to_string()),
    }
}

fn kind_name(k: &CheckKind) -> &'static str {
    match k {
        CheckKind::Tcp => "tcp",
        CheckKind::Banner { .. } => "banner",
        CheckKind::Smtp { .. } => "smtp",
        CheckKind::Http { tls: None, .. } => "http",
        CheckKind::Http { tls: Some(_), .. } => "https",
    }
}

/// Problems first: down, then maint/drain, then unknown, then up.
fn rank(state: &str) -> u8 {
    match state {
        "down" => 0,
        "maint" => 1,
        "drain" => 2,
        "unknown" => 3,
        _ => 4,
    }
}

fn check_rows(reports: &[ProbeReport], addrs: &[IpAddr]) -> Vec<CheckDoc> {
    let mut rows = Vec::new();
    for r in reports.iter().filter(|r| addrs.contains(&r.spec.addr)) {
        for check in &r.spec.checks {
            rows.push(CheckDoc {
                check: check.clone(),
                address: r.spec.addr,
                port: r.spec.port,
                kind: kind_name(&r.spec.kind),
                status: r.state.status.as_str(),
                since: r.since.map(time),
                last_probe: r.last_at.map(time),
                latency_ms: r
                    .last
                    .as_ref()
                    .map(|l| (l.latency.as_secs_f64() * 1e5).round() / 100.0),
                error: r.last.as_ref().and_then(|l| l.error.clone()),
                successes: r.state.successes,
                failures: r.state.failures,
                rise: r.spec.timing.rise,
                fall: r.spec.timing.fall,
            });
        }
    }
    rows.sort_by(|a, b| (a.check.as_str(), a.address).cmp(&(b.check.as_str(), b.address)));
    rows
}

/// Builds the document.
pub fn build(live: &Live) -> StatusDoc {
    let reports = live.out.reports.borrow().clone();
    let health = live.out.health.load_full();
    let snap = live.store.load_full();
    let relays = live.relays.load_full();
    StatusDoc {
        version: env!("CARGO_PKG_VERSION"),
        now: time(SystemTime::now()),
        started_at: time(live.started),
        ready: live.ready.load(Ordering::Relaxed),
        config: config_doc(&live.loaded.load_full()),
        servers: server_docs(&health, &reports),
        views: view_docs(&snap),
        services: service_docs(&snap),
        relays: relay_docs(&relays, &snap),
        certificates: certificate_docs(&relays, &reports, &health),
        transitions: transition_docs(live),
        dns: dns_doc(live),
        demo: live.demo.as_ref().map(|f| f.view()),
    }
}

/// The config in force, and how the last reload went.
fn config_doc(loaded: &Loaded) -> ConfigDoc {
    ConfigDoc {
        file: loaded.config.path.display().to_string(),
        zone_files: loaded
            .config
            .zones
            .iter()
            .map(|z| z.file.display().to_string())
            .collect(),
        loaded_at: time(loaded.at),
        reloads: loaded.reloads,
        last_reload_error: loaded.last_error.as_ref().map(|(at, m)| ReloadErrorDoc {
            at: time(*at),
            message: m.clone(),
        }),
        admin_actions: loaded.config.admin.token.is_some(),
    }
}

/// Every `[[server]]`, then the checked addresses no `[[server]]` names; worst state first.
fn server_docs(health: &HealthConfig, reports: &[ProbeReport]) -> Vec<ServerDoc> {
    let mut servers: Vec<ServerDoc> = Vec::new();
    let mut named: Vec<IpAddr> = Vec::new();
    for s in &health.servers {
        named.extend(&s.addresses);
        let mut doc = server_doc(
            true,
            s.name.clone(),
            s.addresses.clone(),
            s.site.clone(),
            s.admin,
            check_rows(reports, &s.addresses),
        );
        doc.public_addresses = s.public_addresses.clone();
        servers.push(doc);
    }
    let mut loose: Vec<IpAddr> = reports
        .iter()
        .map(|r| r.spec.addr)
        .filter(|a| !named.contains(a))
        .collect();
    loose.sort();
    loose.dedup();
    for a in loose {
        servers.push(server_doc(
            false,
            a.to_string(),
            vec![a],
            None,
            AdminState::Ready,
            check_rows(reports, &[a]),
        ));
    }
    servers.sort_by(|a, b| (rank(a.state), &a.name).cmp(&(rank(b.state), &b.name)));
    servers
}

/// Each view, with its zone files.
fn view_docs(snap: &Snapshot) -> Vec<ViewDoc> {
    let list = |nets: &[ipnet::IpNet]| nets.iter().map(ToString::to_string).collect();
    snap.layout
        .defs
        .iter()
        .enumerate()
        .map(|(i, d)| ViewDoc {
            name: d.name.clone(),
            matches: list(&d.matches),
            match_ecs: d.match_ecs,
            ecs_from: list(&d.ecs_from),
            match_keys: d.keys.iter().map(|k| k.name.to_string()).collect(),
            zone_files: snap
                .layout
                .zone_views
                .iter()
                .zip(snap.static_zones.iter())
                .filter(|(vs, _)| vs.contains(&i))
                .map(|(_, z)| z.file.display().to_string())
                .collect(),
        })
        .collect()
}

/// Each health-driven name: the step in force and the first rotation's answer.
fn service_docs(snap: &Snapshot) -> Vec<ServiceDoc> {
    snap.services
        .iter()
        .map(|v| {
            let doc = |sel: &Option<Selection>| {
                sel.as_ref().map(|s| AnswerDoc {
                    step: s.step.as_str(),
                    degraded: s.step != Step::Healthy,
                    answer: rotate(&s.tiers, 0, v.cap),
                })
            };
            ServiceDoc {
                name: v.name.to_string(),
                views: snap.layout.names_of_zone(v.zone),
                zone_file: snap
                    .static_zones
                    .get(v.zone)
                    .map(|z| z.file.display().to_string())
                    .unwrap_or_default(),
                ttl: v.ttl,
                a: doc(&v.a),
                aaaa: doc(&v.aaaa),
            }
        })
        .collect()
}

/// Each relay, with its backends' counters and whether they take new connections.
fn relay_docs(relays: &[Arc<Relay>], snap: &Snapshot) -> Vec<RelayDoc> {
    relays
        .iter()
        .map(|r| {
            let views = snap.relays.get(r.index());
            RelayDoc {
                name: r.def.name.clone(),
                kind: match r.def.kind {
                    RelayKind::Tcp => "tcp",
                    RelayKind::Smtp => "smtp",
                },
                tls: match r.def.tls.as_ref().map(|t| t.mode) {
                    None | Some(TlsMode::Passthrough) => "passthrough",
                    Some(TlsMode::Offload) => "offload",
                    Some(TlsMode::Reencrypt) => "reencrypt",
                },
                listen: r.def.listen.iter().map(ToString::to_string).collect(),
                refused: r.stats.refused.load(Ordering::Relaxed),
                servers: r
                    .def
                    .servers
                    .iter()
                    .zip(r.stats.servers.iter())
                    .enumerate()
                    .map(|(i, ((name, addr, _), st))| BackendDoc {
                        name: name.clone(),
                        address: *addr,
                        usable: views
                            .and_then(|v| v.get(i))
                            .copied()
                            .unwrap_or_default()
                            .usable,
                        active: st.active.load(Ordering::Relaxed),
                        total: st.total.load(Ordering::Relaxed),
                        failed_connects: st.failed_connects.load(Ordering::Relaxed),
                        bytes_up: st.bytes.up.load(Ordering::Relaxed),
                        bytes_down: st.bytes.down.load(Ordering::Relaxed),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The relays' certificates and those backends presented to https checks, soonest expiry first.
fn certificate_docs(
    relays: &[Arc<Relay>],
    reports: &[ProbeReport],
    health: &HealthConfig,
) -> Vec<CertDoc> {
    let mut certificates = Vec::new();
    for r in relays {
        let Some(front) = &r.front else {
            continue;
        };
        for c in &front.resolver.0.load().certs {
            certificates.push(CertDoc {
                source: format!("relay {} ({})", r.def.name, c.file.display()),
                names: c.names.clone(),
                not_after: time(unix(c.not_after)),
                days_left: c.days_left(),
            });
        }
    }
    for r in reports {
        let Some(not_after) = r.last.as_ref().and_then(|l| l.cert_not_after) else {
            continue;
        };
        let server = health
            .server_of(r.spec.addr)
            .map_or_else(|| r.spec.addr.to_string(), |s| s.name.clone());
        certificates.push(CertDoc {
            source: format!(
                "check {} on {server} ({}:{})",
                r.spec.checks.join(", "),
                r.spec.addr,
                r.spec.port
            ),
            names: Vec::new(),
            not_after: time(unix(not_after)),
            days_left: r
                .last
                .as_ref()
                .and_then(|l| l.cert_days_left())
                .unwrap_or(0),
        });
    }
    certificates.sort_by_key(|c| c.days_left);
    certificates
}

/// The kept transitions, newest first.
fn transition_docs(live: &Live) -> Vec<TransitionDoc> {
    live.out
        .transitions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .rev()
        .map(|t| TransitionDoc {
            at: time(t.at),
            server: t.server.clone(),
            what: t.what.clone(),
            from: t.from,
            to: t.to,
            detail: t.detail.clone(),
        })
        .collect()
}

/// DNS counters: responses by rcode, drops, rate limiting, cookies.
fn dns_doc(live: &Live) -> DnsDoc {
    let dns = &live.dns;
    let mut responses = std::collections::BTreeMap::new();
    for i in 0..crate::dns::RCODES {
        let n = dns.sum(|c| c.rcodes.get(i).unwrap_or(&crate::dns::UNCOUNTED));
        if n > 0 {
            responses.insert(rcode_name(i), n);
        }
    }
    let edge = live.edge.load();
    let settings = edge.rrl.as_ref().map(|l| l.settings().clone());
    DnsDoc {
        responses,
        dropped: dns.sum(|c| &c.dropped),
        rrl: RrlDoc {
            enabled: settings.is_some(),
            rate: settings.as_ref().map_or(0, |s| s.rate),
            slip: settings.as_ref().map_or(0, |s| s.slip),
            dropped: dns.sum(|c| &c.rrl_dropped),
            slipped: dns.sum(|c| &c.rrl_slipped),
        },
        cookies: CookiesDoc {
            enabled: edge.cookies.is_some(),
            valid: dns.sum(|c| &c.cookies_valid),
            new: dns.sum(|c| &c.cookies_new),
        },
        tcp_refused: dns.sum(|c| &c.tcp_refused),
        worker_restarts: dns.sum(|c| &c.restarts),
    }
}

fn server_doc(
    configured: bool,
    name: String,
    addresses: Vec<IpAddr>,
    site: Option<String>,
    admin: AdminState,
    checks: Vec<CheckDoc>,
) -> ServerDoc {
    let state = match admin {
        AdminState::Maint => "maint",
        AdminState::Drain => "drain",
        AdminState::Ready => {
            if checks.iter().any(|c| c.status == Status::Down.as_str()) {
                "down"
            } else if !checks.is_empty() && checks.iter().all(|c| c.status == "up") {
                "up"
            } else {
                "unknown"
            }
        }
    };
    ServerDoc {
        name,
        addresses,
        public_addresses: Vec::new(),
        site,
        configured,
        admin,
        state,
        checks,
    }
}
