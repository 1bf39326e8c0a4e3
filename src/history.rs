//! The last hour in memory: one sample every [`BUCKET`], [`KEPT`] samples, for the dashboard's
//! graphs and `GET /api/v1/history`.
//!
//! Plain data, no I/O and no clock: the admin module's sampler reads the live state and pushes
//! a sample with its time; this keeps series aligned on one time axis, turns counters into
//! per-second rates, and drops a series once every point it holds is empty (a name a reload
//! removed). A Prometheus server keeps more and longer; this is what an admin sees with nothing
//! else set up.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

/// Time between samples.
pub const BUCKET: Duration = Duration::from_secs(5);
/// Samples kept: one hour.
pub const KEPT: usize = 720;

/// What a series shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A server's state for one check: up, down, unknown, drain or maint.
    CheckState,
    /// A health-driven name's A/AAAA answers per second.
    ServiceAnswers,
    /// The fallback step a health-driven name answers with.
    ServiceStep,
    /// New relayed connections per second.
    RelayConnections,
    /// Relayed connections open.
    RelayActive,
    /// DNS responses per second, by rcode.
    DnsResponses,
}

/// Which series: its kind, its subject (server, service name, relay, "dns") and its label
/// (check, view, rcode; empty where there is none).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// What it shows.
    pub kind: Kind,
    /// Whose it is.
    pub subject: String,
    /// Which part of it.
    pub label: String,
}

impl Key {
    /// A key.
    pub fn new(kind: Kind, subject: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            kind,
            subject: subject.into(),
            label: label.into(),
        }
    }
}

/// One reading of a sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A state at the sample's time.
    State(&'static str),
    /// A value at the sample's time.
    Gauge(f64),
    /// A counter's total since start: the series shows its rate since the previous sample.
    Counter(u64),
}

/// One point of a series.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Point {
    /// A state.
    State(&'static str),
    /// A number (a gauge, or a counter's rate per second).
    Number(f64),
}

/// The kept samples.
#[derive(Debug, Default)]
pub struct History {
    /// Sample times, Unix seconds, oldest first.
    times: VecDeque<i64>,
    /// Per series, one point per time (None: no reading then).
    series: BTreeMap<Key, VecDeque<Option<Point>>>,
    /// Each counter's total at the previous sample, and that sample's time.
    totals: HashMap<Key, (u64, i64)>,
}

/// `GET /api/v1/history`.
#[derive(Debug, Serialize)]
pub struct HistoryDoc {
    /// Seconds between samples.
    pub bucket_seconds: u64,
    /// Sample times, Unix seconds, oldest first.
    pub times: Vec<i64>,
    /// Every series, in key order; `points` aligns with `times` (null: no reading).
    pub series: Vec<SeriesDoc>,
}

/// One series in [`HistoryDoc`].
#[derive(Debug, Serialize)]
pub struct SeriesDoc {
    /// What it shows.
    pub kind: Kind,
    /// Whose it is: a server, a service name, a relay, or "dns".
    pub subject: String,
    /// Which part: the check, the view, the rcode (empty where there is none).
    pub label: String,
    /// One point per sample time.
    pub points: Vec<Option<Point>>,
}

impl History {
    /// Adds the sample taken at `at` (Unix seconds), dropping the oldest past [`KEPT`].
    pub fn push(&mut self, at: i64, readings: Vec<(Key, Reading)>) {
        if self.times.len() == KEPT {
            self.times.pop_front();
            for points in self.series.values_mut() {
                points.pop_front();
            }
        }
        self.times.push_back(at);
        let len = self.times.len();
        let mut read = std::collections::HashSet::new();
        for (key, reading) in readings {
            let point = self.point(&key, reading, at);
            let points = self.series.entry(key.clone()).or_default();
            points.resize(len - 1, None);
            points.push_back(point);
            read.insert(key);
        }
        for points in self.series.values_mut() {
            points.resize(len, None);
        }
        // A series no sample reads any more leaves once it has no point left.
        self.series
            .retain(|k, p| read.contains(k) || p.iter().any(Option::is_some));
        let series = &self.series;
        self.totals.retain(|k, _| series.contains_key(k));
    }

    /// What `reading` shows at `at`: a counter's rate needs its previous total (the first
    /// reading of a counter, or one that went backwards after a restart of its source, has no
    /// rate).
    fn point(&mut self, key: &Key, reading: Reading, at: i64) -> Option<Point> {
        match reading {
            Reading::State(s) => Some(Point::State(s)),
            Reading::Gauge(v) => Some(Point::Number(v)),
            Reading::Counter(total) => {
                let before = self.totals.insert(key.clone(), (total, at));
                let (prev, t0) = before?;
                let dt = at - t0;
                (total >= prev && dt > 0).then(|| {
                    let rate = (total - prev) as f64 / dt as f64;
                    Point::Number((rate * 100.0).round() / 100.0)
                })
            }
        }
    }

    /// The kept samples as a document.
    pub fn doc(&self) -> HistoryDoc {
        HistoryDoc {
            bucket_seconds: BUCKET.as_secs(),
            times: self.times.iter().copied().collect(),
            series: self
                .series
                .iter()
                .map(|(k, p)| SeriesDoc {
                    kind: k.kind,
                    subject: k.subject.clone(),
                    label: k.label.clone(),
                    points: p.iter().cloned().collect(),
                })
                .collect(),
        }
    }

    /// Number of samples kept.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// True before the first sample.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_become_rates_and_series_align() {
        let mut h = History::default();
        let answers = Key::new(Kind::ServiceAnswers, "owa.mail.test.", "");
        let ex1 = Key::new(Kind::CheckState, "ex01", "owa");
        h.push(
            0,
            vec![
                (answers.clone(), Reading::Counter(100)),
                (ex1.clone(), Reading::State("up")),
            ],
        );
        h.push(
            5,
            vec![
                (answers.clone(), Reading::Counter(150)),
                (ex1.clone(), Reading::State("down")),
            ],
        );
        // A series that appears later is padded at the front.
        let relay = Key::new(Kind::RelayActive, "smtp", "");
        h.push(
            10,
            vec![
                (answers.clone(), Reading::Counter(150)),
                (relay.clone(), Reading::Gauge(3.0)),
            ],
        );
        let doc = h.doc();
        assert_eq!(doc.times, vec![0, 5, 10]);
        let of = |k: &Key| {
            doc.series
                .iter()
                .find(|s| s.kind == k.kind && s.subject == k.subject)
                .unwrap()
                .points
                .clone()
        };
        assert_eq!(
            of(&answers),
            vec![None, Some(Point::Number(10.0)), Some(Point::Number(0.0))]
        );
        assert_eq!(
            of(&ex1),
            vec![Some(Point::State("up")), Some(Point::State("down")), None]
        );
        assert_eq!(of(&relay), vec![None, None, Some(Point::Number(3.0))]);
    }

    #[test]
    fn keeps_an_hour_and_forgets_series_that_went_away() {
        let mut h = History::default();
        let gone = Key::new(Kind::RelayActive, "old", "");
        let kept = Key::new(Kind::RelayActive, "new", "");
        h.push(0, vec![(gone.clone(), Reading::Gauge(1.0))]);
        for i in 1..=KEPT as i64 {
            h.push(i * 5, vec![(kept.clone(), Reading::Gauge(2.0))]);
        }
        assert_eq!(h.len(), KEPT);
        let doc = h.doc();
        assert_eq!(doc.series.len(), 1, "the old relay's series is gone");
        assert_eq!(doc.series[0].subject, "new");
        assert_eq!(doc.times.first(), Some(&5));
    }

    #[test]
    fn a_counter_that_goes_back_has_no_rate() {
        let mut h = History::default();
        let k = Key::new(Kind::DnsResponses, "dns", "NOERROR");
        h.push(0, vec![(k.clone(), Reading::Counter(10))]);
        h.push(5, vec![(k.clone(), Reading::Counter(4))]);
        h.push(10, vec![(k.clone(), Reading::Counter(9))]);
        let p = &h.doc().series[0].points;
        assert_eq!(p, &vec![None, None, Some(Point::Number(1.0))]);
    }
}
