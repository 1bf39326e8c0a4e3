//! When a probe runs next: the scheduler rule, pure (time and the random phase come in as
//! arguments), so it is unit-tested without sleeping.
//!
//! Intervals count from the start of a probe, so a probe that timed out is followed by the
//! fast re-probe at once: the worst case for a silent server is interval + fall × timeout.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Timing;

/// Why a probe runs when it does, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pace {
    /// The start-up round's probe has run: the next lands at a random phase of the interval,
    /// so probes started together do not stay in step (no synchronized bursts).
    First,
    /// A sentinel closed and the pair's state is not settled: re-probe at the sentinel interval.
    Burst,
    /// A flip is pending (rise or fall under way): the fast interval.
    Changing,
    /// Settled: the check's interval.
    Steady,
}

impl Pace {
    /// The pace after a probe: `first` for the start-up round's, `burst` while a sentinel's
    /// wake-up holds, `changing` while the pair's state machine counts towards a flip.
    pub(super) fn of(first: bool, burst: bool, changing: bool) -> Self {
        if first {
            Self::First
        } else if burst {
            Self::Burst
        } else if changing {
            Self::Changing
        } else {
            Self::Steady
        }
    }
}

/// When the next probe starts, for a probe that started at `started`. `phase` (0.05 to 1) is
/// the random share of the interval the start-up round's successor waits; `reprobe` is the
/// sentinel interval.
pub(super) fn next_probe(
    started: Instant,
    pace: Pace,
    timing: &Timing,
    reprobe: Duration,
    phase: f64,
) -> Instant {
    match pace {
        Pace::First => {
            // clamp keeps a NaN, and Duration::mul_f64 panics on one.
            let phase = if phase.is_nan() {
                0.05
            } else {
                phase.clamp(0.05, 1.0)
            };
            started + timing.interval.mul_f64(phase)
        }
        Pace::Burst => started + reprobe,
        Pace::Changing => started + timing.fast_interval,
        Pace::Steady => started + timing.interval,
    }
}

/// One probe's count of a silent port's misses: one failure per `every` of silence, from when
/// the held connection's heartbeat went unanswered. A probe that started after the silence
/// began and passed dismisses it: the server answers, only the held connection is stuck.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Misses {
    since: Option<Instant>,
    counted: u32,
    dismissed: bool,
}

impl Misses {
    /// The port's silence changed to `since`; a new silence starts a new count.
    pub(super) fn silent_since(&mut self, since: Option<Instant>) {
        if since != self.since {
            *self = Self {
                since,
                ..Self::default()
            };
        }
    }

    /// When the next miss is due (None: not silent, or dismissed).
    pub(super) fn next(&self, every: Duration) -> Option<Instant> {
        let since = self.since.filter(|_| !self.dismissed)?;
        Some(since + every.saturating_mul(self.counted.saturating_add(1)))
    }

    /// Counts the miss that was due; returns how long the port has been silent.
    pub(super) fn miss(&mut self, now: Instant) -> Duration {
        self.counted = self.counted.saturating_add(1);
        self.since
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }

    /// A probe that started at `started` passed.
    pub(super) fn passed(&mut self, started: Instant) {
        if self.since.is_some_and(|s| started >= s) {
            self.dismissed = true;
        }
    }

    /// Misses counted in this silence.
    pub(super) fn counted(&self) -> u32 {
        self.counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(1500),
            rise: 2,
            fall: 2,
            fast_interval: Duration::from_millis(500),
        }
    }

    #[test]
    fn precedence_is_first_then_burst_then_changing() {
        assert_eq!(Pace::of(true, true, true), Pace::First);
        assert_eq!(Pace::of(false, true, true), Pace::Burst);
        assert_eq!(Pace::of(false, true, false), Pace::Burst);
        assert_eq!(Pace::of(false, false, true), Pace::Changing);
        assert_eq!(Pace::of(false, false, false), Pace::Steady);
    }

    #[test]
    fn each_pace_waits_its_interval_from_the_probe_start() {
        let t = timing();
        let at = Instant::now();
        let reprobe = Duration::from_millis(100);
        let after = |pace| next_probe(at, pace, &t, reprobe, 0.5) - at;
        assert_eq!(after(Pace::Burst), reprobe);
        assert_eq!(after(Pace::Changing), t.fast_interval);
        assert_eq!(after(Pace::Steady), t.interval);
        assert_eq!(
            after(Pace::First),
            Duration::from_secs(1),
            "half the interval"
        );
    }

    #[test]
    fn silence_counts_one_miss_per_period_until_answered_or_dismissed() {
        let every = Duration::from_millis(750);
        let t0 = Instant::now();
        let mut m = Misses::default();
        assert_eq!(m.next(every), None, "not silent");
        m.silent_since(Some(t0));
        assert_eq!(m.next(every), Some(t0 + every));
        assert_eq!(m.miss(t0 + every), every);
        assert_eq!(m.next(every), Some(t0 + every * 2));
        m.silent_since(Some(t0));
        assert_eq!(m.counted(), 1, "the same silence keeps its count");
        // A probe started before the silence proves nothing; one started after does.
        m.passed(t0 - Duration::from_millis(1));
        assert!(m.next(every).is_some());
        m.passed(t0 + Duration::from_millis(100));
        assert_eq!(m.next(every), None, "dismissed");
        // A new silence counts afresh; an answer ends it.
        let t1 = t0 + Duration::from_secs(5);
        m.silent_since(Some(t1));
        assert_eq!((m.counted(), m.next(every)), (0, Some(t1 + every)));
        m.silent_since(None);
        assert_eq!(m.next(every), None);
    }

    #[test]
    fn a_silence_reported_late_is_due_at_once() {
        // The kernel gave up after the user timeout: the silence began that long ago.
        let every = Duration::from_millis(750);
        let now = Instant::now() + Duration::from_secs(10);
        let mut m = Misses::default();
        m.silent_since(Some(now - Duration::from_millis(1500)));
        let mut due = 0;
        while m.next(every).is_some_and(|t| t <= now) {
            m.miss(now);
            due += 1;
        }
        assert_eq!(due, 2, "fall misses at once");
    }

    #[test]
    fn the_first_phase_stays_inside_the_interval() {
        let t = timing();
        let at = Instant::now();
        for phase in [-1.0, 0.0, 0.05, 0.999, 1.0, 7.0, f64::NAN] {
            let wait = next_probe(at, Pace::First, &t, Duration::ZERO, phase) - at;
            assert!(wait >= t.interval.mul_f64(0.05), "{phase}: {wait:?}");
            assert!(wait <= t.interval, "{phase}: {wait:?}");
        }
    }
}
