//! The health engine: probes every (server, check) pair the way an Exchange load balancer does,
//! keeps a rise/fall state per pair, and publishes a new snapshot on every change. [`answer`] is
//! its policy: which addresses a service name answers with, given the pairs' states.

pub mod answer;
pub mod engine;
pub mod probe;
pub mod state;

pub use state::{PairState, Status, Thresholds};
