//! The health state of one (server, check) pair: a pure state machine with hysteresis.
//!
//! The first result decides at once (so the start-up round resolves every pair); after that a pair
//! flips only after `rise` consecutive successes (down → up) or `fall` consecutive failures
//! (up → down). While a flip is pending the scheduler re-probes at the fast interval.

/// What is known of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// No result yet.
    Unknown,
    /// The pair passes its check (rise results in a row).
    Up,
    /// The pair fails its check (fall results in a row).
    Down,
}

impl Status {
    /// Lowercase name, as shown on the dashboard and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// Hysteresis thresholds (both at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive successes that bring a down pair up.
    pub rise: u32,
    /// Consecutive failures that take an up pair down.
    pub fall: u32,
}

/// One pair's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairState {
    /// Current status.
    pub status: Status,
    /// Consecutive successes counted toward rising (while down).
    pub successes: u32,
    /// Consecutive failures counted toward falling (while up).
    pub failures: u32,
}

impl Default for PairState {
    fn default() -> Self {
        Self {
            status: Status::Unknown,
            successes: 0,
            failures: 0,
        }
    }
}

impl PairState {
    /// Applies one probe result; returns the new status if it changed.
    pub fn observe(&mut self, ok: bool, t: Thresholds) -> Option<Status> {
        let before = self.status;
        match (self.status, ok) {
            (Status::Unknown, true) => self.set(Status::Up),
            (Status::Unknown, false) => self.set(Status::Down),
            (Status::Up, true) => self.failures = 0,
            (Status::Up, false) => {
                self.failures += 1;
                if self.failures >= t.fall.max(1) {
                    self.set(Status::Down);
                }
            }
            (Status::Down, false) => self.successes = 0,
            (Status::Down, true) => {
                self.successes += 1;
                if self.successes >= t.rise.max(1) {
                    self.set(Status::Up);
                }
            }
        }
        (self.status != before).then_some(self.status)
    }

    /// True while a flip is pending: the scheduler probes at the fast interval.
    pub fn changing(&self) -> bool {
        self.successes > 0 || self.failures > 0
    }

    fn set(&mut self, s: Status) {
        self.status = s;
        self.successes = 0;
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const T: Thresholds = Thresholds { rise: 2, fall: 3 };

    #[test]
    fn first_result_decides_then_hysteresis() {
        let mut s = PairState::default();
        assert_eq!(s.observe(true, T), Some(Status::Up));
        assert_eq!(s.observe(false, T), None);
        assert!(s.changing());
        assert_eq!(s.observe(false, T), None);
        assert_eq!(s.observe(false, T), Some(Status::Down));
        assert!(!s.changing());
        assert_eq!(s.observe(true, T), None);
        assert_eq!(s.observe(true, T), Some(Status::Up));
    }

    #[test]
    fn an_interrupted_streak_starts_over() {
        let mut s = PairState::default();
        s.observe(true, T);
        s.observe(false, T);
        s.observe(false, T);
        s.observe(true, T);
        assert_eq!(s.failures, 0);
        assert_eq!(s.observe(false, T), None);
        assert_eq!(s.status, Status::Up);
    }

    proptest! {
        /// A flip to down always follows exactly `fall` consecutive failures, and a flip to up
        /// exactly `rise` consecutive successes (after the first result).
        #[test]
        fn flips_need_full_streaks(results in proptest::collection::vec(any::<bool>(), 1..200), rise in 1u32..5, fall in 1u32..5) {
            let t = Thresholds { rise, fall };
            let mut s = PairState::default();
            let mut streak_ok = 0u32;
            let mut streak_fail = 0u32;
            for (i, &ok) in results.iter().enumerate() {
                if ok { streak_ok += 1; streak_fail = 0; } else { streak_fail += 1; streak_ok = 0; }
                let before = s.status;
                let flip = s.observe(ok, t);
                match flip {
                    Some(Status::Down) if i > 0 => {
                        prop_assert_eq!(before, Status::Up);
                        prop_assert!(streak_fail >= fall);
                    }
                    Some(Status::Up) if i > 0 => {
                        prop_assert_eq!(before, Status::Down);
                        prop_assert!(streak_ok >= rise);
                    }
                    Some(_) => prop_assert_eq!(i, 0),
                    None => {}
                }
                if flip.is_some() { streak_ok = 0; streak_fail = 0; }
                prop_assert_ne!(s.status, Status::Unknown);
            }
        }

        /// An alternating (flapping) server never flips once it is decided, if rise and fall are
        /// both above 1.
        #[test]
        fn flapping_does_not_flap_the_state(start in any::<bool>(), n in 2usize..100, rise in 2u32..5, fall in 2u32..5) {
            let t = Thresholds { rise, fall };
            let mut s = PairState::default();
            s.observe(start, t);
            let decided = s.status;
            for i in 0..n {
                prop_assert_eq!(s.observe((i % 2 == 0) != start, t), None);
            }
            prop_assert_eq!(s.status, decided);
        }
    }
}
