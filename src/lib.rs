//! mailns: authoritative, health-driven DNS (and, later, relays) for an Exchange mail namespace.
//!
//! # Layout
//! - [`config`]: the TOML file, validated into typed values with `path:line` errors.
//! - [`zone`]: RFC 1035 master files → validated in-memory zones.
//! - [`dns`]: the pure lookup core, the wire codec, prebuilt answers, UDP and TCP servers.
//! - [`state`]: the immutable [`state::Snapshot`] every query reads lock-free.
//! - [`runtime`]: start-up, signals, shutdown.
//! - [`diag`]: diagnostics shared by config and zone loading.

// No panic reachable from input: nearly every module reads bytes, files or requests someone else
// wrote, so indexing, unwrap and expect are denied crate-wide (tests excepted, see clippy.toml);
// an `allow` names the local invariant that makes a site safe.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

pub mod addr;
pub mod admin;
pub mod config;
pub mod demo;
pub mod diag;
pub mod dns;
pub mod health;
pub mod httpconn;
pub mod limits;
pub mod listeners;
pub mod redirect;
pub mod relay;
pub mod runtime;
pub mod sim;
pub mod state;
pub mod tls;
pub mod zone;
