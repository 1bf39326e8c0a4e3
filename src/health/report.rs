//! What the health engine reports of each probe: its spec, state, last result and latency
//! histogram, and the transitions list the dashboard shows. Plain data: the engine fills it,
//! the admin listener and the metrics read it, a reload carries it over.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use super::probe::ProbeResult;
use super::PairState;
use crate::config::{CheckKind, Timing};

/// One distinct probe.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// Target address.
    pub addr: IpAddr,
    /// Target port.
    pub port: u16,
    /// The dialogue: every check the probe serves has this one.
    pub kind: CheckKind,
    /// Timing of the first check that uses it.
    pub timing: Timing,
    /// Names of the checks it serves.
    pub checks: Vec<String>,
}

/// The latest of one probe, as the engine knows it.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// What is probed.
    pub spec: ProbeSpec,
    /// Its rise/fall state machine: what this node sees.
    pub state: PairState,
    /// The state answers and relays use: `state` combined with the peers' votes by the
    /// cluster policy (the same as `state.status` without `[cluster]`).
    pub decided: super::Status,
    /// Its last result.
    pub last: Option<ProbeResult>,
    /// When its last result came in.
    pub last_at: Option<SystemTime>,
    /// When its status last changed.
    pub since: Option<SystemTime>,
    /// Status changes since start (the first result included).
    pub changes: u64,
    /// Times it went down since start.
    pub downs: u64,
    /// Time spent down since start, not counting a down period still going on.
    pub downtime: Duration,
    /// Probe latencies.
    pub latency: Latency,
}

impl ProbeReport {
    /// A probe with no result yet.
    pub fn new(spec: ProbeSpec) -> Self {
        Self {
            spec,
            state: PairState::default(),
            decided: super::Status::Unknown,
            last: None,
            last_at: None,
            since: None,
            changes: 0,
            downs: 0,
            downtime: Duration::ZERO,
            latency: Latency::default(),
        }
    }
}

/// Upper bounds (seconds) of the probe latency histogram's buckets: a loopback probe takes well
/// under a millisecond, a slow IIS application pool seconds.
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A probe latency histogram: counts per bucket (non-cumulative; the last is +Inf) and the sum.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Count per bucket of [`LATENCY_BOUNDS`], then one past the last bound.
    pub counts: [u64; LATENCY_BOUNDS.len() + 1],
    /// Sum of the observations, in seconds.
    pub sum: f64,
}

impl Latency {
    /// Counts one probe that took `d`.
    pub(super) fn observe(&mut self, d: Duration) {
        let v = d.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        if let Some(n) = self.counts.get_mut(i) {
            *n += 1;
        }
        self.sum += v;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// One entry of the recent-transitions list.
#[derive(Debug, Clone)]
pub struct Transition {
    /// When the change happened.
    pub at: SystemTime,
    /// The server's name (its address when no `[[server]]` names it); empty when the change is
    /// not one server's.
    pub server: String,
    /// What changed: the checks of a probe, "admin", a service name and family, a demo action.
    pub what: String,
    /// check (a probe's state), service (the step a name answers with), admin, reload, demo, or
    /// startup (the first probe round, folded into one entry).
    pub kind: &'static str,
    /// Who made the change: the admin API client's address; empty for mailns's own decisions.
    pub by: String,
    /// Previous state.
    pub from: &'static str,
    /// New state.
    pub to: &'static str,
    /// The failing probe's error, if any.
    pub detail: String,
}

/// Two probes ask the same thing of the same port, so one's state holds for the other.
pub(super) fn same_probe(a: &ProbeSpec, b: &ProbeSpec) -> bool {
    a.addr == b.addr && a.port == b.port && a.kind == b.kind && a.timing == b.timing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_histogram_buckets() {
        let mut l = Latency::default();
        l.observe(Duration::from_micros(300));
        l.observe(Duration::from_millis(3));
        l.observe(Duration::from_secs(9));
        assert_eq!(l.counts[0], 1, "≤ 0.5 ms");
        assert_eq!(l.counts[3], 1, "≤ 5 ms");
        assert_eq!(l.counts[LATENCY_BOUNDS.len()], 1, "+Inf");
        assert_eq!(l.count(), 3);
    }
}
