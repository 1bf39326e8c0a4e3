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
