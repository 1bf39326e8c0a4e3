//! `/metrics`: the Prometheus text exposition (format 0.0.4, which `promtool check metrics` and
//! every Prometheus version read), encoded by the `prometheus` crate from families built at scrape
//! time. Nothing is counted twice: the query path and relays keep their own atomics, the engine
//! its reports, and a scrape reads them.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

use crate::app::{Live, Loaded};
use crate::config::{AdminState, HealthConfig};
use crate::dns::Stats;
use crate::health::report::{ProbeReport, LATENCY_BOUNDS};
use crate::health::Status;
use crate::relay::server::Relay;
use crate::state::Snapshot;

type Labels = Vec<(&'static str, String)>;

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encodes the exposition for `live`.
pub fn encode(live: &Arc<Live>) -> String {
    // The encoder refuses a family without samples (no certificates yet, say): leave those out.
    let families: Vec<MetricFamily> = collect(live)
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    let mut out = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&families, &mut out) {
        tracing::warn!(%error, "metrics encoding failed");
    }
    String::from_utf8(out).unwrap_or_default()
}

fn metric(labels: Labels) -> Metric {
    let mut m = Metric::default();
    m.set_label(
        labels
            .into_iter()
            .map(|(k, v)| {
                let mut p = LabelPair::default();
                p.set_name(k.to_string());
                p.set_value(v);
                p
            })
            .collect(),
    );
    m
}

fn family(name: &str, help: &str, ty: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(ty);
    f.set_metric(metrics);
    f
}

/// Pushes a family of one sample per row; `set` stores a row's value in its metric.
fn push_family<V>(
    out: &mut Vec<MetricFamily>,
    (name, help, ty): (&str, &str, MetricType),
    rows: impl IntoIterator<Item = (Labels, V)>,
    set: impl Fn(&mut Metric, V),
) {
    let metrics = rows
        .into_iter()
        .map(|(labels, v)| {
            let mut m = metric(labels);
            set(&mut m, v);
            m
        })
        .collect();
    out.push(family(name, help, ty, metrics));
}

fn gauges(
    out: &mut Vec<MetricFamily>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, f64)>,
) {
    push_family(out, (name, help, MetricType::GAUGE), rows, |m, v| {
        let mut g = Gauge::default();
        g.set_value(v);
        m.set_gauge(g);
    });
}

fn counters(
    out: &mut Vec<MetricFamily>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) {
    push_family(out, (name, help, MetricType::COUNTER), rows, |m, v| {
        let mut c = Counter::default();
        c.set_value(v as f64);
        m.set_counter(c);
    });
}

/// Every family, read from the live sources.
fn collect(live: &Live) -> Vec<MetricFamily> {
    let reports = live.out.reports.borrow().clone();
    let health = live.out.health.load_full();
    let relays = live.relays.load_full();
    let mut out = Vec::new();
    process_families(&mut out, live);
    health_families(&mut out, &reports, &health);
    let snap = live.store.load_full();
    dns_families(&mut out, &live.dns, &snap);
    relay_families(&mut out, &relays, &snap);
    member_families(&mut out, &snap, &reports, &health);
    certificate_family(&mut out, &relays, &reports, &health);
    config_families(&mut out, &live.loaded.load_full());
    let kinds = live
        .out
        .transition_counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    counters(
        &mut out,
        "mailns_transitions_total",
        "Entries of the dashboard's transitions list, by kind: check, service (a name entering or leaving a fallback step), admin, reload, demo, startup.",
        kinds
            .into_iter()
            .map(|(kind, n)| (vec![("kind", kind.to_string())], n)),
    );
    out
}

/// The server's name for `addr`, or the address when no `[[server]]` has it.
fn server_name(health: &HealthConfig, addr: IpAddr) -> String {
    health
        .server_of(addr)
        .map_or_else(|| addr.to_string(), |s| s.name.clone())
}

/// Build, runtime and readiness.
fn process_families(out: &mut Vec<MetricFamily>, live: &Live) {
    gauges(
        out,
        "mailns_build_info",
        "mailns's version (value 1).",
        [(
            vec![("version", env!("CARGO_PKG_VERSION").to_string())],
            1.0,
        )],
    );
    // A task that never ends (a probe, a relayed stream, a DNS/TCP connection) shows here
    // as growth; the chaos run checks it stays flat.
    let tasks = tokio::runtime::Handle::try_current().map_or(0, |h| h.metrics().num_alive_tasks());
    gauges(
        out,
        "mailns_runtime_alive_tasks",
        "Tasks alive in mailns's async runtime.",
        [(vec![], tasks as f64)],
    );
    let loaded = live.loaded.load();
    if !loaded.config.cluster.peers.is_empty() {
        let votes = live.out.votes.borrow().clone();
        gauges(
            out,
            "mailns_cluster_peer_up",
            "1 when the [cluster] peer answered its last poll (its checks count here).",
            votes.peers.iter().map(|p| {
                (
                    vec![("peer", p.url.clone())],
                    f64::from(u8::from(p.reachable)),
                )
            }),
        );
        gauges(
            out,
            "mailns_cluster_alone",
            "1 when no [cluster] peer answers and this node decides on its own checks alone.",
            [(vec![], f64::from(u8::from(votes.alone())))],
        );
        let reports = live.out.reports.borrow().clone();
        gauges(
            out,
            "mailns_cluster_outvoted_probes",
            "Probes whose state in answers differs from this node's own result (the peers outvoted it).",
            [(vec![], super::status::outvoted(&reports) as f64)],
        );
    }
    gauges(
        out,
        "mailns_ready",
        "1 once the first probe round is done and every listener is bound.",
        [(
            vec![],
            f64::from(u8::from(live.ready.load(Ordering::Relaxed))),
        )],
    );
}

/// Health, per (server, address, check), and each server's admin state.
fn health_families(out: &mut Vec<MetricFamily>, reports: &[ProbeReport], health: &HealthConfig) {
    let pair_rows = || {
        reports.iter().flat_map(|r| {
            r.spec.checks.iter().map(move |c| {
                let labels: Labels = vec![
                    ("server", server_name(health, r.spec.addr)),
                    ("address", r.spec.addr.to_string()),
                    ("port", r.spec.port.to_string()),
                    ("check", c.clone()),
                ];
                (labels, r)
            })
        })
    };
    gauges(
        out,
        "mailns_check_up",
        "1 while the (server, check) pair passes, 0 while it fails or has no result yet.",
        pair_rows().map(|(l, r)| (l, f64::from(u8::from(r.state.status == Status::Up)))),
    );
    gauges(
        out,
        "mailns_check_known",
        "1 once the pair has a first result.",
        pair_rows().map(|(l, r)| (l, f64::from(u8::from(r.state.status != Status::Unknown)))),
    );
    counters(
        out,
        "mailns_check_state_changes_total",
        "Status changes of the pair (its first result included).",
        pair_rows().map(|(l, r)| (l, r.changes)),
    );
    push_family(
        out,
        (
            "mailns_check_duration_seconds",
            "Probe durations of the pair.",
            MetricType::HISTOGRAM,
        ),
        pair_rows(),
        |m, r| {
            let mut cumulative = 0;
            let buckets = LATENCY_BOUNDS
                .iter()
                .zip(&r.latency.counts)
                .map(|(bound, n)| {
                    cumulative += n;
                    let mut b = Bucket::default();
                    b.set_upper_bound(*bound);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect();
            let mut h = Histogram::default();
            h.set_sample_count(r.latency.count());
            h.set_sample_sum(r.latency.sum);
            h.set_bucket(buckets);
            m.set_histogram(h);
        },
    );
    gauges(
        out,
        "mailns_server_admin_state",
        "1 for the server's admin state (ready, drain, maint), 0 for the others.",
        health.servers.iter().flat_map(|s| {
            [AdminState::Ready, AdminState::Drain, AdminState::Maint].map(|st| {
                (
                    vec![
                        ("server", s.name.clone()),
                        ("state", st.as_str().to_string()),
                    ],
                    f64::from(u8::from(s.admin == st)),
                )
            })
        }),
    );
}

/// DNS: responses, drops, rate limiting, cookies, and the health-driven names' steps.
fn dns_families(out: &mut Vec<MetricFamily>, dns: &Stats, snap: &Snapshot) {
    counters(
        out,
        "mailns_dns_responses_total",
        "DNS responses sent, by rcode.",
        (0..crate::dns::RCODES).filter_map(|i| {
            let n = dns.sum(|c| c.rcodes.get(i).unwrap_or(&crate::dns::UNCOUNTED));
            (n > 0).then(|| (vec![("rcode", super::status::rcode_name(i))], n))
        }),
    );
    counters(
        out,
        "mailns_dns_dropped_total",
        "DNS packets dropped without an answer.",
        [(vec![], dns.sum(|c| &c.dropped))],
    );
    counters(
        out,
        "mailns_dns_rrl_limited_total",
        "DNS responses over the rate limit, by what was sent instead (dropped: nothing; slipped: a truncated reply or BADCOOKIE).",
        [
            (vec![("action", "dropped".to_string())], dns.sum(|c| &c.rrl_dropped)),
            (vec![("action", "slipped".to_string())], dns.sum(|c| &c.rrl_slipped)),
        ],
    );
    counters(
        out,
        "mailns_dns_cookies_total",
        "DNS queries with a cookie: valid (a server cookie that verifies: never rate limited) or new (a client cookie only).",
        [
            (vec![("cookie", "valid".to_string())], dns.sum(|c| &c.cookies_valid)),
            (vec![("cookie", "new".to_string())], dns.sum(|c| &c.cookies_new)),
        ],
    );
    counters(
        out,
        "mailns_dns_tcp_refused_total",
        "DNS/TCP connections closed at once because every slot was held by a busy connection.",
        [(vec![], dns.sum(|c| &c.tcp_refused))],
    );
    counters(
        out,
        "mailns_dns_worker_restarts_total",
        "DNS/UDP workers started again after a panic.",
        [(vec![], dns.sum(|c| &c.restarts))],
    );
    counters(
        out,
        "mailns_dns_service_answers_total",
        "A/AAAA answers for health-driven names, by the fallback step in force.",
        dns.service_answers()
            .into_iter()
            .map(|(view, name, v6, step, n)| {
                let mut labels = vec![
                    ("service", name),
                    ("type", if v6 { "AAAA" } else { "A" }.to_string()),
                    ("step", step.as_str().to_string()),
                ];
                // Only a split-horizon config has views to tell apart.
                if !view.is_empty() {
                    labels.push(("view", view));
                }
                (labels, n)
            }),
    );
    gauges(
        out,
        "mailns_service_step",
        "1 for the fallback step each health-driven name answers with now.",
        snap.services.iter().flat_map(|v| {
            let views = view_labels(snap, v.zone);
            let rows: Vec<(&str, &crate::health::answer::Selection)> =
                [("A", &v.a), ("AAAA", &v.aaaa)]
                    .into_iter()
                    .filter_map(|(t, sel)| Some((t, sel.as_ref()?)))
                    .collect();
            views
                .into_iter()
                .flat_map(|view| {
                    rows.iter().map(move |(t, sel)| {
                        let mut labels = vec![
                            ("service", v.name.to_string()),
                            ("type", t.to_string()),
                            ("step", sel.step.as_str().to_string()),
                        ];
                        if let Some(view) = &view {
                            labels.push(("view", view.clone()));
                        }
                        (labels, 1.0)
                    })
                })
                .collect::<Vec<_>>()
        }),
    );
}

/// The `view` label values of zone `zone`'s rows: one None without `[[view]]` (no label), else
/// each view the zone is in.
fn view_labels(snap: &Snapshot, zone: usize) -> Vec<Option<String>> {
    if snap.layout.implicit {
        vec![None]
    } else {
        snap.layout
            .names_of_zone(zone)
            .into_iter()
            .map(Some)
            .collect()
    }
}

/// Per health-driven name (and view): its members, and how many fail a check it needs. A name
/// with a failing member is degraded: the others carry its share (the alert rules watch it).
fn member_families(
    out: &mut Vec<MetricFamily>,
    snap: &Snapshot,
    reports: &[ProbeReport],
    health: &HealthConfig,
) {
    let mut members = Vec::new();
    let mut failing = Vec::new();
    for v in &snap.services {
        let Some(svc) = health.services.iter().find(|s| s.name == v.name) else {
            continue;
        };
        let wire = crate::zone::wire_lower(&v.name);
        let Some(node) = snap.static_zones.get(v.zone).and_then(|z| z.node(&wire)) else {
            continue;
        };
        let fails = |addr: IpAddr| {
            let probed = health.probed_address(addr);
            reports.iter().any(|r| {
                r.spec.addr == probed
                    && r.state.status == Status::Down
                    && r.spec.checks.iter().any(|c| svc.checks.contains(c))
            })
        };
        let views = view_labels(snap, v.zone);
        for (t, rtype) in [
            ("A", hickory_proto::rr::RecordType::A),
            ("AAAA", hickory_proto::rr::RecordType::AAAA),
        ] {
            let Some(set) = node.rrset(rtype) else {
                continue;
            };
            let addrs: Vec<IpAddr> = set
                .records
                .iter()
                .filter_map(|r| r.data.ip_addr())
                .collect();
            let down = addrs.iter().filter(|a| fails(**a)).count();
            for view in &views {
                let mut labels: Labels =
                    vec![("service", v.name.to_string()), ("type", t.to_string())];
                if let Some(view) = view {
                    labels.push(("view", view.clone()));
                }
                members.push((labels.clone(), addrs.len() as f64));
                failing.push((labels, down as f64));
            }
        }
    }
    gauges(
        out,
        "mailns_service_members",
        "Members (the zone's addresses) of each health-driven name.",
        members,
    );
    gauges(
        out,
        "mailns_service_members_failing",
        "Members of each health-driven name that fail a check the name needs (out of its answers).",
        failing,
    );
}

/// Relays, per backend and per relay.
fn relay_families(out: &mut Vec<MetricFamily>, relays: &[Arc<Relay>], snap: &Snapshot) {
    let backend_rows =
        || {
            relays.iter().flat_map(|r| {
                r.def.servers.iter().zip(r.stats.servers.iter()).map(
                    move |((name, addr, _), stats)| {
                        let labels: Labels = vec![
                            ("relay", r.def.name.clone()),
                            ("server", name.clone()),
                            ("address", addr.to_string()),
                        ];
                        (labels, stats)
                    },
                )
            })
        };
    // Whether each backend takes new connections: a relay whose backends are all 0 refuses
    // every client (the alert rules watch for it).
    let usable = relays.iter().flat_map(|r| {
        let views = snap.relays.get(r.index());
        r.def
            .servers
            .iter()
            .enumerate()
            .map(move |(i, (name, addr, _))| {
                let view = views.and_then(|v| v.get(i)).copied().unwrap_or_default();
                let labels: Labels = vec![
                    ("relay", r.def.name.clone()),
                    ("server", name.clone()),
                    ("address", addr.to_string()),
                ];
                (labels, if view.usable { 1.0 } else { 0.0 })
            })
    });
    gauges(
        out,
        "mailns_relay_backend_usable",
        "1 while the backend takes new relayed connections (passes the relay's checks, ready).",
        usable,
    );
    gauges(
        out,
        "mailns_relay_connections_active",
        "Open relayed connections per backend.",
        backend_rows().map(|(l, s)| (l, s.active.load(Ordering::Relaxed) as f64)),
    );
    counters(
        out,
        "mailns_relay_connections_total",
        "Relayed connections per backend.",
        backend_rows().map(|(l, s)| (l, s.total.load(Ordering::Relaxed))),
    );
    counters(
        out,
        "mailns_relay_connect_failures_total",
        "Failed connect attempts per backend.",
        backend_rows().map(|(l, s)| (l, s.failed_connects.load(Ordering::Relaxed))),
    );
    counters(
        out,
        "mailns_relay_bytes_total",
        "Bytes relayed per backend and direction (up: client to server).",
        backend_rows().flat_map(|(l, s)| {
            let mut up = l.clone();
            up.push(("direction", "up".into()));
            let mut down = l;
            down.push(("direction", "down".into()));
            [
                (up, s.bytes.up.load(Ordering::Relaxed)),
                (down, s.bytes.down.load(Ordering::Relaxed)),
            ]
        }),
    );
    counters(
        out,
        "mailns_relay_refused_total",
        "Clients refused per relay (allow-list, limits, no usable backend).",
        relays.iter().map(|r| {
            (
                vec![("relay", r.def.name.clone())],
                r.stats.refused.load(Ordering::Relaxed),
            )
        }),
    );
}

/// Certificates: the relays' own and those backends presented to https checks.
fn certificate_family(
    out: &mut Vec<MetricFamily>,
    relays: &[Arc<Relay>],
    reports: &[ProbeReport],
    health: &HealthConfig,
) {
    // Labels: source (relay or check), name (the certificate's first DNS name), and where it
    // was seen: file for a relay's own, server and address for a backend's.
    let mut certs: Vec<(Labels, f64)> = Vec::new();
    for r in relays.iter() {
        if let Some(front) = &r.front {
            for c in &front.resolver.0.load().certs {
                certs.push((
                    vec![
                        ("source", "relay".to_string()),
                        ("relay", r.def.name.clone()),
                        ("name", c.names.first().cloned().unwrap_or_default()),
                        ("file", c.file.display().to_string()),
                    ],
                    c.not_after as f64,
                ));
            }
        }
    }
    for r in reports.iter() {
        if let Some(cert) = r.last.as_ref().and_then(|l| l.cert.as_ref()) {
            certs.push((
                vec![
                    ("source", "check".to_string()),
                    ("check", r.spec.checks.join(",")),
                    ("name", cert.names.first().cloned().unwrap_or_default()),
                    ("server", server_name(health, r.spec.addr)),
                    ("address", format!("{}:{}", r.spec.addr, r.spec.port)),
                ],
                cert.not_after as f64,
            ));
        }
    }
    gauges(
        out,
        "mailns_certificate_expiry_timestamp_seconds",
        "notAfter of each certificate, in Unix seconds.",
        certs,
    );
}

/// The config in force: whether the last reload worked, and when it was loaded.
fn config_families(out: &mut Vec<MetricFamily>, loaded: &Loaded) {
    gauges(
        out,
        "mailns_config_last_reload_successful",
        "0 while the last reload failed (the previous config keeps serving).",
        [(vec![], f64::from(u8::from(loaded.last_error.is_none())))],
    );
    gauges(
        out,
        "mailns_config_loaded_timestamp_seconds",
        "When the config in force was loaded, in Unix seconds.",
        [(
            vec![],
            loaded
                .at
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64().floor()),
        )],
    );
}
