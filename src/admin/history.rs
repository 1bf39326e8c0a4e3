//! The sampler behind the dashboard's graphs: every [`BUCKET`] it reads the live state (probe
//! reports, the snapshot, DNS and relay counters) into one [`crate::history`] sample.
//!
//! Nothing here is on a query path: a sample reads the same atomics and snapshot `/metrics`
//! reads, once every five seconds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::app::Live;
use crate::config::{AdminState, HealthConfig};
use crate::health::answer::Step;
use crate::health::report::ProbeReport;
use crate::health::Status;
use crate::history::{Key, Kind, Reading, BUCKET};
use crate::state::Snapshot;

/// Samples into `live.history` until `token` is cancelled; the first sample is taken at once.
pub async fn run(live: Arc<Live>, token: CancellationToken) {
    let mut tick = tokio::time::interval(BUCKET);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = token.cancelled() => return,
        }
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let readings = sample(&live);
        live.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(at, readings);
    }
}

/// One reading of everything the graphs show.
fn sample(live: &Live) -> Vec<(Key, Reading)> {
    let reports = live.out.reports.borrow().clone();
    let health = live.out.health.load_full();
    let snap = live.store.load_full();
    let mut out = check_states(&reports, &health);
    out.extend(service_readings(live, &snap));
    for r in live.relays.load().iter() {
        let sum = |f: &dyn Fn(&crate::relay::server::ServerStats) -> u64| {
            r.stats.servers.iter().map(f).sum::<u64>()
        };
        let name = r.def.name.clone();
        // Per backend too: the dashboard's session rate per relay server, as HAProxy's.
        for ((server, _, _), st) in r.def.servers.iter().zip(&r.stats.servers) {
            out.push((
                Key::new(Kind::RelayConnections, name.clone(), server.clone()),
                Reading::Counter(st.total.load(Ordering::Relaxed)),
            ));
        }
        out.push((
            Key::new(Kind::RelayConnections, name.clone(), ""),
            Reading::Counter(sum(&|s| s.total.load(Ordering::Relaxed))),
        ));
        out.push((
            Key::new(Kind::RelayActive, name, ""),
            Reading::Gauge(sum(&|s| s.active.load(Ordering::Relaxed)) as f64),
        ));
    }
    for i in 0..crate::dns::RCODES {
        let n = live
            .dns
            .sum(|c| c.rcodes.get(i).unwrap_or(&crate::dns::UNCOUNTED));
        out.push((
            Key::new(Kind::DnsResponses, "dns", super::status::rcode_name(i)),
            Reading::Counter(n),
        ));
    }
    // An rcode never answered stays out of the graphs: its series would be zeros.
    let answered: Vec<String> = out
        .iter()
        .filter(|(k, r)| k.kind == Kind::DnsResponses && *r != Reading::Counter(0))
        .map(|(k, _)| k.label.clone())
        .collect();
    out.retain(|(k, _)| k.kind != Kind::DnsResponses || answered.contains(&k.label));
    out
}

/// Per server and check: up, down or unknown, or the server's admin state (drain, maint) while
/// it is not `ready`. A server with several addresses shows the worst of them.
fn check_states(reports: &[ProbeReport], health: &HealthConfig) -> Vec<(Key, Reading)> {
    let mut out: Vec<(Key, Reading)> = Vec::new();
    for r in reports {
        let server = health.server_of(r.spec.addr);
        let name = server.map_or_else(|| r.spec.addr.to_string(), |s| s.name.clone());
        let state = match server.map_or(AdminState::Ready, |s| s.admin) {
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
            AdminState::Ready => r.state.status.as_str(),
        };
        for check in &r.spec.checks {
            let key = Key::new(Kind::CheckState, name.clone(), check.clone());
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, Reading::State(s))) if *s != Status::Down.as_str() => {
                    if state == Status::Down.as_str() || *s == Status::Up.as_str() {
                        *s = state;
                    }
                }
                Some(_) => {}
                None => out.push((key, Reading::State(state))),
            }
        }
    }
    out
}

/// Per health-driven name (and view, with `[[view]]`): answers since start, and the step in
/// force (the worst of its families).
fn service_readings(live: &Live, snap: &Snapshot) -> Vec<(Key, Reading)> {
    let totals = live.dns.service_totals();
    let mut out: Vec<(Key, Reading)> = Vec::new();
    for v in &snap.services {
        let name = v.name.to_string();
        let step = [&v.a, &v.aaaa]
            .into_iter()
            .flatten()
            .map(|s| s.step)
            .max_by_key(|s| worse(*s))
            .unwrap_or(Step::Unknown);
        let views = if snap.layout.implicit {
            vec![String::new()]
        } else {
            snap.layout.names_of_zone(v.zone)
        };
        for view in views {
            let total = totals
                .iter()
                .find(|(v, n, _)| *n == name && *v == view)
                .map_or(0, |(_, _, t)| *t);
            out.push((
                Key::new(Kind::ServiceAnswers, name.clone(), view.clone()),
                Reading::Counter(total),
            ));
            out.push((
                Key::new(Kind::ServiceStep, name.clone(), view),
                Reading::State(step.as_str()),
            ));
        }
    }
    out
}

/// How far a step is from "healthy": the graphs show the worst family's.
fn worse(step: Step) -> u8 {
    match step {
        Step::Healthy => 0,
        Step::Unknown => 1,
        Step::FailoverPending => 2,
        Step::OtherSites => 3,
        Step::Relay => 4,
        Step::Zone => 5,
        Step::Empty => 6,
        Step::Servfail => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_shows_its_worst_address_and_its_admin_state() {
        let cfg = crate::config::testing::valid(
            "[[check]]\nname = \"owa\"\nkind = \"tcp\"\nport = 443\n\n\
             [[server]]\nname = \"ex01\"\naddresses = [\"127.0.1.1\", \"127.0.1.2\"]\n",
        );
        let mut health = cfg.health.clone();
        let check = &health.checks[0];
        let report = |last: u8, status: Status| {
            let mut r = ProbeReport::new(crate::health::report::ProbeSpec {
                addr: std::net::IpAddr::from([127, 0, 1, last]),
                port: 443,
                kind: check.kind.clone(),
                timing: check.timing,
                checks: vec!["owa".into()],
            });
            r.state.status = status;
            r
        };
        let (up, down) = (report(1, Status::Up), report(2, Status::Down));
        let states = check_states(&[up.clone(), down], &health);
        assert_eq!(
            states,
            vec![(
                Key::new(Kind::CheckState, "ex01", "owa"),
                Reading::State("down")
            )]
        );
        health.servers[0].admin = AdminState::Drain;
        let states = check_states(&[up], &health);
        assert_eq!(states[0].1, Reading::State("drain"));
    }
}
