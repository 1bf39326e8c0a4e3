//! The health engine: probes every (server, check) pair the way an Exchange load balancer does,
//! keeps a rise/fall state per pair, and publishes a new snapshot on every change. [`answer`] is
//! its policy: which addresses a service name answers with, given the pairs' states.

pub mod answer;
mod backends;
pub mod cluster;
pub mod engine;
mod heartbeat;
pub mod plan;
pub mod probe;
pub mod report;
mod schedule;
mod sentinel;
pub mod state;
pub mod view;

pub use state::{PairState, Status, Thresholds};
