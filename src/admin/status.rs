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
use crate::health::answer::{rotate, Reason, Selection, Step, Why};
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
    /// First probe round done and listeners bound (false again once shutdown begins).
    pub ready: bool,
    /// Shutdown has begun: DNS and new relay connections have stopped, open relayed sessions
    /// get the grace period.
    pub shutting_down: bool,
    /// Relayed sessions open now.
    pub sessions: u64,
    /// Some health-driven name is degraded: a member is out of its answer because it fails a
    /// check the name needs, or a fallback step answers it. Drain and maintenance alone do not
    /// count (an admin chose them).
    pub degraded: bool,
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
    /// `[cluster]`: the peers and whether this node decides alone (absent without peers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterDoc>,
    /// `mailns demo` only: the simulated servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demo: Option<Vec<crate::app::DemoView>>,
}

/// The cluster's state as this node sees it.
#[derive(Debug, Serialize)]
pub struct ClusterDoc {
    /// quorum, all or any.
    pub policy: &'static str,
    /// No peer answers: this node decides on its own checks alone.
    pub alone: bool,
    /// Checks whose decided state differs from this node's own (the peers outvoted it).
    pub outvoted: usize,
    /// Each peer, in config order.
    pub peers: Vec<PeerDoc>,
}

/// One peer.
#[derive(Debug, Serialize)]
pub struct PeerDoc {
    /// Its admin API, as configured.
    pub url: String,
    /// Its last poll answered.
    pub reachable: bool,
    /// Why not.
    pub error: Option<String>,
    /// When it last answered (since this node started polling it).
    pub last_ok: Option<String>,
}

/// Config state.
#[derive(Debug, Serialize)]
pub struct ConfigDoc {
    /// The config file.
    pub file: String,
    /// Zone files.
    pub zone_files: Vec<String>,
    /// The zones as served now: origin, SOA serial, records.
    pub zones: Vec<ZoneDoc>,
    /// When the config in force was loaded.
    pub loaded_at: String,
    /// Reloads that succeeded since start.
    pub reloads: u64,
    /// The last reload's error, while no later reload succeeded.
    pub last_reload_error: Option<ReloadErrorDoc>,
    /// Admin actions are enabled (a token file is configured).
    pub admin_actions: bool,
}

/// One zone as served.
#[derive(Debug, Serialize)]
pub struct ZoneDoc {
    /// Its apex.
    pub origin: String,
    /// Its file.
    pub file: String,
    /// The SOA serial served (and transferred to secondaries).
    pub serial: u32,
    /// Records in the file.
    pub records: usize,
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
    /// Overall: maint, drain, down (every check with a result fails), partial (some checks
    /// fail, others pass: see `services`), unknown, or up.
    pub state: &'static str,
    /// Per health-driven name it is a member of: whether it is in that name's answer.
    pub services: Vec<ServerServiceDoc>,
    /// One row per (address, check).
    pub checks: Vec<CheckDoc>,
}

/// A server's state for one health-driven name.
#[derive(Debug, Serialize)]
pub struct ServerServiceDoc {
    /// The service name.
    pub service: String,
    /// up (passes every check the name needs), down (fails one), unknown, drain or maint.
    pub state: &'static str,
    /// The checks of the name it fails.
    pub failing: Vec<String>,
    /// Its address is in the name's answer now (a fallback step may answer a failing server).
    pub answered: bool,
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
    /// up, down or unknown: what this node's own probes say.
    pub status: &'static str,
    /// What answers and relays use: `status`, or with `[cluster]` peers the nodes' decision
    /// by the cluster policy (`status` down and `decided` up: only this node sees it down).
    pub decided: &'static str,
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
    /// The last result in short, as HAProxy shows it (`L7OK 200`, `L4CON`, `L4TOUT`, `L7STS 503`).
    pub code: Option<String>,
    /// Times it went down since start.
    pub down_count: u64,
    /// Seconds spent down since start, the current down period included.
    pub downtime_s: u64,
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
    /// A/AAAA answers DNS gave for it since start (every view of its zone, every step).
    pub answers: u64,
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
    /// A fallback step is in force: the answer is not "the healthy members" (health not known
    /// yet, a failover pending, other sites, the relay addresses, the zone's full set, nothing).
    pub fallback: bool,
    /// Some member is out of the answer for a health reason (it fails a check the name needs),
    /// or a fallback step is in force. Drained and maintenance members do not make a name
    /// degraded: an admin took them out.
    pub degraded: bool,
    /// The step in force and its effect, in words.
    pub explain: String,
    /// Members whose address is in the answer set.
    pub answered: usize,
    /// Members: the zone's addresses for the name.
    pub total: usize,
    /// The first rotation of the answer.
    pub answer: Vec<IpAddr>,
    /// Each member, and why it is or is not answered.
    pub members: Vec<MemberDoc>,
}

/// One member of a health-driven name.
#[derive(Debug, Serialize)]
pub struct MemberDoc {
    /// The zone's address.
    pub address: IpAddr,
    /// Its `[[server]]` (the address when none names it).
    pub server: String,
    /// Its address is in the answer set.
    pub answered: bool,
    /// healthy, rotating, failing, drain, maint, other-site or unknown.
    pub reason: &'static str,
    /// The reason in words: which checks fail, what the step does with it.
    pub detail: String,
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
    /// Why it does not take new connections (or why it does without a check result).
    pub reason: String,
    /// Its server's weight.
    pub weight: u32,
    /// Open connections.
    pub active: u64,
    /// The most connections open at once since start.
    pub max_active: u64,
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
    /// Its DNS names (subjectAltName).
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
    /// The checks, "admin", a service name and family ("owa.mail.test. A"), "config", "demo".
    pub what: String,
    /// check, service, admin, reload, demo or startup.
    pub kind: &'static str,
    /// Who made the change (the admin client's address, SIGHUP, file watch); empty for mailns's
    /// own decisions.
    pub by: String,
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
        "partial" => 1,
        "maint" => 2,
        "drain" => 3,
        "unknown" => 4,
        _ => 5,
    }
}

/// Time `r` has spent down since start, the current down period included.
fn downtime(r: &ProbeReport) -> std::time::Duration {
    let current = match (r.state.status, r.since) {
        (Status::Down, Some(t)) => t.elapsed().unwrap_or_default(),
        _ => std::time::Duration::ZERO,
    };
    r.downtime + current
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
                decided: r.decided.as_str(),
                since: r.since.map(time),
                last_probe: r.last_at.map(time),
                latency_ms: r
                    .last
                    .as_ref()
                    .map(|l| (l.latency.as_secs_f64() * 1e5).round() / 100.0),
                error: r.last.as_ref().and_then(|l| l.error.clone()),
                code: r.last.as_ref().map(|l| l.code.clone()),
                down_count: r.downs,
                downtime_s: downtime(r).as_secs(),
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
    let services = service_docs(&snap, &health, &live.dns.service_totals());
    let mut servers = server_docs(&health, &reports);
    for s in &mut servers {
        s.services = server_services(s, &snap, &health);
    }
    let degraded = services
        .iter()
        .flat_map(|v| [&v.a, &v.aaaa])
        .flatten()
        .any(|a| a.degraded);
    StatusDoc {
        degraded,
        version: env!("CARGO_PKG_VERSION"),
        now: time(SystemTime::now()),
        started_at: time(live.started),
        ready: live.ready.load(Ordering::Relaxed),
        shutting_down: live.shutting_down(),
        sessions: live.sessions(),
        config: config_doc(&live.loaded.load_full(), &snap),
        servers,
        views: view_docs(&snap),
        services,
        relays: relay_docs(&relays, &snap, &reports, &health),
        certificates: certificate_docs(&relays, &reports, &health),
        transitions: transition_docs(live),
        dns: dns_doc(live),
        cluster: cluster_doc(live, &reports),
        demo: live.demo.as_ref().map(|f| f.view()),
    }
}

/// The peers' state; None without `[cluster]` peers.
fn cluster_doc(live: &Live, reports: &[ProbeReport]) -> Option<ClusterDoc> {
    let loaded = live.loaded.load();
    let cfg = &loaded.config.cluster;
    if cfg.peers.is_empty() {
        return None;
    }
    let votes = live.out.votes.borrow().clone();
    Some(ClusterDoc {
        policy: cfg.policy.as_str(),
        alone: votes.alone(),
        outvoted: outvoted(reports),
        peers: votes
            .peers
            .iter()
            .map(|p| PeerDoc {
                url: p.url.clone(),
                reachable: p.reachable,
                error: p.error.clone(),
                last_ok: p.last_ok.map(time),
            })
            .collect(),
    })
}

/// Probes whose decided state is not what this node's own probes say.
pub fn outvoted(reports: &[ProbeReport]) -> usize {
    reports
        .iter()
        .filter(|r| r.state.status != Status::Unknown && r.decided != r.state.status)
        .count()
}

/// The config in force, and how the last reload went.
fn config_doc(loaded: &Loaded, snap: &Snapshot) -> ConfigDoc {
    ConfigDoc {
        file: loaded.config.path.display().to_string(),
        zone_files: loaded
            .config
            .zones
            .iter()
            .map(|z| z.file.display().to_string())
            .collect(),
        zones: snap
            .static_zones
            .iter()
            .map(|z| ZoneDoc {
                origin: z.origin.to_string(),
                file: z.file.display().to_string(),
                serial: z.serial(),
                records: z.record_count,
            })
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

/// Server `s`'s state per health-driven name it is a member of (worst over families and
/// zones), in service-name order.
fn server_services(s: &ServerDoc, snap: &Snapshot, health: &HealthConfig) -> Vec<ServerServiceDoc> {
    let mut out: Vec<ServerServiceDoc> = Vec::new();
    for v in &snap.services {
        let whys = [&v.a, &v.aaaa]
            .into_iter()
            .flatten()
            .flat_map(|sel| &sel.why)
            .filter(|(addr, _)| {
                health
                    .server_of(*addr)
                    .map_or_else(|| addr.to_string(), |d| d.name.clone())
                    == s.name
            });
        for (_, why) in whys {
            let (state, failing) = match &why.reason {
                Reason::Healthy | Reason::Rotating | Reason::OtherSite => ("up", Vec::new()),
                Reason::Failing(c) => ("down", c.clone()),
                Reason::Unknown => ("unknown", Vec::new()),
                Reason::Drain => ("drain", Vec::new()),
                Reason::Maint => ("maint", Vec::new()),
            };
            let name = v.name.to_string();
            match out.iter_mut().find(|d| d.service == name) {
                Some(d) => {
                    if rank(state) < rank(d.state) {
                        d.state = state;
                    }
                    for c in failing {
                        if !d.failing.contains(&c) {
                            d.failing.push(c);
                        }
                    }
                    d.answered |= why.answered;
                }
                None => out.push(ServerServiceDoc {
                    service: name,
                    state,
                    failing,
                    answered: why.answered,
                }),
            }
        }
    }
    out.sort_by(|a, b| a.service.cmp(&b.service));
    out
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

/// Each health-driven name: the step in force, the first rotation's answer, and why each
/// member is in it or not.
fn service_docs(
    snap: &Snapshot,
    health: &HealthConfig,
    answers: &[(String, String, u64)],
) -> Vec<ServiceDoc> {
    snap.services
        .iter()
        .map(|v| {
            let def = health.services.iter().find(|s| s.name == v.name);
            let site = def.and_then(|d| d.site.as_deref());
            let name = v.name.to_string();
            let views = snap.layout.names_of_zone(v.zone);
            let label = |view: &str| snap.layout.implicit || views.iter().any(|x| x == view);
            ServiceDoc {
                answers: answers
                    .iter()
                    .filter(|(view, n, _)| *n == name && label(view))
                    .map(|(_, _, c)| c)
                    .sum(),
                views,
                zone_file: snap
                    .static_zones
                    .get(v.zone)
                    .map(|z| z.file.display().to_string())
                    .unwrap_or_default(),
                ttl: v.ttl,
                a: v.a.as_ref().map(|s| answer_doc(s, v.cap, site, health)),
                aaaa: v.aaaa.as_ref().map(|s| answer_doc(s, v.cap, site, health)),
                name,
            }
        })
        .collect()
}

/// One family's answer, explained.
fn answer_doc(sel: &Selection, cap: usize, site: Option<&str>, health: &HealthConfig) -> AnswerDoc {
    let members: Vec<MemberDoc> = sel
        .why
        .iter()
        .map(|(addr, why)| MemberDoc {
            address: *addr,
            server: health
                .server_of(*addr)
                .map_or_else(|| addr.to_string(), |s| s.name.clone()),
            answered: why.answered,
            reason: reason_name(&why.reason),
            detail: member_detail(why, sel.step, cap),
        })
        .collect();
    let fallback = !matches!(sel.step, Step::Healthy);
    AnswerDoc {
        step: sel.step.as_str(),
        fallback,
        degraded: fallback
            || sel
                .why
                .iter()
                .any(|(_, w)| matches!(w.reason, Reason::Failing(_))),
        explain: explain_step(sel, site),
        answered: members.iter().filter(|m| m.answered).count(),
        total: members.len(),
        answer: rotate(&sel.tiers, 0, cap),
        members,
    }
}

fn reason_name(r: &Reason) -> &'static str {
    match r {
        Reason::Healthy => "healthy",
        Reason::Rotating => "rotating",
        Reason::Failing(_) => "failing",
        Reason::Drain => "drain",
        Reason::Maint => "maint",
        Reason::OtherSite => "other-site",
        Reason::Unknown => "unknown",
    }
}

/// One member's state and what the step in force does with it, in words.
fn member_detail(why: &Why, step: Step, cap: usize) -> String {
    let state = match &why.reason {
        Reason::Healthy => return "passes every check the name needs".into(),
        Reason::Rotating => {
            return format!(
                "healthy; more addresses qualify than max_answers = {cap}, so it is in some responses and not in others"
            )
        }
        Reason::Failing(checks) => format!("fails {}", checks.join(", ")),
        Reason::Drain => "drained (admin)".into(),
        Reason::Maint => "in maintenance (admin)".into(),
        Reason::OtherSite => "healthy, in another site".into(),
        Reason::Unknown => "no check result yet".into(),
    };
    let effect = match (why.answered, step) {
        (false, Step::Relay) => "left out: the relay addresses are answered instead",
        (false, Step::Empty | Step::Servfail) => "left out",
        (false, _) => "left out of the answer",
        (true, Step::Zone) => "answered anyway: the name fails open to the zone's full set",
        (true, Step::Unknown) => "answered: the first probe round is not done for every member",
        (true, Step::FailoverPending) => "answered until the failover delay ends",
        (true, _) => "answered by the step in force",
    };
    format!("{state}; {effect}")
}

/// The step in force and its effect, in words, for the dashboard and the API.
pub fn explain_step(sel: &Selection, site: Option<&str>) -> String {
    let count = |f: &dyn Fn(&Reason) -> bool| sel.why.iter().filter(|(_, w)| f(&w.reason)).count();
    let failing = count(&|r| matches!(r, Reason::Failing(_)));
    let drained = count(&|r| matches!(r, Reason::Drain));
    let total = sel.why.len();
    let answered = sel.why.iter().filter(|(_, w)| w.answered).count();
    let site_words = site.map_or(String::new(), |s| format!(" of site {s}"));
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    match sel.step {
        Step::Healthy => {
            let mut out = format!(
                "answering {answered} of {total}: the members{site_words} that pass every check the name needs"
            );
            let mut out_of = Vec::new();
            if failing > 0 {
                out_of.push(format!("{} failing a check", plural(failing, "member", "members")));
            }
            if drained > 0 {
                out_of.push(format!("{drained} drained"));
            }
            let maint = count(&|r| matches!(r, Reason::Maint));
            if maint > 0 {
                out_of.push(format!("{maint} in maintenance"));
            }
            let other = count(&|r| matches!(r, Reason::OtherSite));
            if other > 0 {
                out_of.push(format!("{other} in other sites"));
            }
            if !out_of.is_empty() {
                out += &format!("; left out: {}", out_of.join(", "));
            }
            out
        }
        Step::Unknown => format!(
            "the first probe round is not done for every member: answering the zone's full set ({answered} of {total}), as a plain round robin would"
        ),
        Step::FailoverPending => format!(
            "no member{site_words} passes its checks; the other sites take over when the failover delay ends; until then the {answered} member(s){site_words} are answered"
        ),
        Step::OtherSites => format!(
            "no member{site_words} passes its checks: answering the {answered} healthy member(s) of the other sites"
        ),
        Step::Relay => format!(
            "no member passes its checks: answering the relay addresses instead of the {total} member(s)"
        ),
        Step::Zone => {
            let mut including = Vec::new();
            if failing > 0 {
                including.push(format!("{} failing its checks", plural(failing, "member", "members")));
            }
            if drained > 0 {
                including.push(format!("{drained} drained"));
            }
            let including = if including.is_empty() {
                String::new()
            } else {
                format!(", including {}", including.join(" and "))
            };
            format!(
                "FAILING OPEN: no member passes its checks, so the zone's full set is answered ({answered} of {total}{including}); clients may reach a broken server"
            )
        }
        Step::Empty => format!(
            "no member passes its checks: answering no addresses (NOERROR, empty), as configured; {total} member(s) left out"
        ),
        Step::Servfail => format!(
            "no member passes its checks: answering SERVFAIL, as configured; {total} member(s) left out"
        ),
    }
}

/// Each relay, with its backends' counters and whether they take new connections.
fn relay_docs(
    relays: &[Arc<Relay>],
    snap: &Snapshot,
    reports: &[ProbeReport],
    health: &HealthConfig,
) -> Vec<RelayDoc> {
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
                    .map(|(i, ((name, addr, _), st))| {
                        let usable = views
                            .and_then(|v| v.get(i))
                            .copied()
                            .unwrap_or_default()
                            .usable;
                        BackendDoc {
                            name: name.clone(),
                            address: *addr,
                            usable,
                            reason: backend_reason(usable, *addr, &r.def.checks, reports, health),
                            weight: health.server_of(*addr).map_or(1, |s| s.weight),
                            active: st.active.load(Ordering::Relaxed),
                            max_active: st.peak.load(Ordering::Relaxed),
                            total: st.total.load(Ordering::Relaxed),
                            failed_connects: st.failed_connects.load(Ordering::Relaxed),
                            bytes_up: st.bytes.up.load(Ordering::Relaxed),
                            bytes_down: st.bytes.down.load(Ordering::Relaxed),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Why a relay backend does or does not take new connections, in words.
fn backend_reason(
    usable: bool,
    addr: IpAddr,
    checks: &[String],
    reports: &[ProbeReport],
    health: &HealthConfig,
) -> String {
    let admin = health
        .server_of(addr)
        .map_or(AdminState::Ready, |s| s.admin);
    let of = |c: &String| {
        reports
            .iter()
            .find(|r| r.spec.addr == addr && r.spec.checks.contains(c))
    };
    let failing: Vec<String> = checks
        .iter()
        .filter_map(|c| {
            let r = of(c)?;
            (r.state.status == Status::Down).then(|| {
                let why = r
                    .last
                    .as_ref()
                    .and_then(|l| l.error.clone())
                    .unwrap_or_default();
                format!("check {c} fails: {why}")
            })
        })
        .collect();
    let unknown = checks
        .iter()
        .any(|c| of(c).is_none_or(|r| r.state.status == Status::Unknown));
    match (usable, admin) {
        (_, AdminState::Maint) => "in maintenance (admin): its connections are closed".into(),
        (_, AdminState::Drain) => {
            "drained (admin): open connections stay, new ones go elsewhere".into()
        }
        (false, _) if !failing.is_empty() => failing.join("; "),
        (false, _) => "not usable".into(),
        (true, _) if checks.is_empty() => "no checks configured: always used".into(),
        (true, _) if unknown => "no check result yet: used until a check fails".into(),
        (true, _) => format!("passes {}", checks.join(", ")),
    }
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
        let Some(cert) = r.last.as_ref().and_then(|l| l.cert.as_ref()) else {
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
            names: cert.names.clone(),
            not_after: time(unix(cert.not_after)),
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
            kind: t.kind,
            by: t.by.clone(),
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
            let down = checks.iter().any(|c| c.status == Status::Down.as_str());
            let up = checks.iter().any(|c| c.status == Status::Up.as_str());
            if down && up {
                "partial"
            } else if down {
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
        services: Vec::new(),
        checks,
    }
}
