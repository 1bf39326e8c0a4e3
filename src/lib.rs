//! mailns: authoritative, health-driven DNS and relays for an Exchange mail namespace.
//!
//! Mail admins delegate their namespace to mailns and keep its zone files in git. It answers
//! DNS from those files, answers the client-access names with only the servers that pass that
//! service's health check, relays what DNS cannot carry, and shows its state.
//!
//! # Layout
//! Listed from the bottom of the module graph up: a module uses only modules above it in this
//! list (`tests/module_graph.rs` fails on a cycle; ARCHITECTURE.md draws the graph).
//!
//! Foundations, no I/O:
//! - [`diag`]: one problem in a config or zone file, printed as `path:line: message`.
//! - [`addr`]: client addresses as allow-lists and limits compare them; clocks for the hot path.
//! - [`tls`]: certificates and rustls configs: the HTTPS front's certificate set, the https
//!   checks' and re-encryption's client configs, a relay's TLS front.
//! - [`zone`]: RFC 1035 master files → validated in-memory zones.
//! - [`config`]: the TOML file, validated into typed values (a file per table: `health`,
//!   `relay`, `redirect`, `edge`, `admin`), with `path:line` errors.
//! - [`health`]: the probes (TCP, banners, EHLO, HTTPS health pages, certificates), the
//!   rise/fall state per (server, check), the engine that schedules them, and
//!   [`health::answer`], the policy choosing each service name's addresses. It hands its
//!   decisions on as [`health::view::View`]s and knows nothing of who serves them.
//! - [`query`]: the pure query core: wire codec, lookup, prebuilt answers, DNS cookies.
//! - [`state`]: the immutable [`state::Snapshot`] every query and relay reads lock-free, built
//!   from health's views.
//!
//! Servers:
//! - [`limits`]: connection slots per listener (a cap in total and per client).
//! - [`httpconn`]: one HTTP/1 connection as every mailns HTTP listener serves it (HTTPS too).
//! - [`httpclient`]: one HTTP/1.1 request to an admin listener (`mailns ctl`, cluster peers).
//! - [`redirect`]: the port 80 listener (to https://, and Outlook's autodiscover redirect).
//! - [`dns`]: the UDP and TCP servers, response rate limiting, counters, zone transfers, NOTIFY.
//! - [`relay`]: the TCP relays (RPC with source-hash persistence, HTTPS front, SMTP relay VIP).
//! - [`listeners`]: every listening socket, and how a reload changes them.
//!
//! Application:
//! - [`app`]: the running application's state ([`app::Live`]) and the commands the admin
//!   listener sends the runtime.
//! - [`admin`]: the dashboard, the JSON status, Prometheus metrics, the token-guarded actions.
//! - [`cluster`]: asks the `[cluster]` peers for their raw check states (the health engine
//!   decides with them).
//! - [`runtime`]: start-up, reloads, signals, file watching, shutdown.
//! - `demo`, `sim` (feature `demo`, on by default): `mailns demo`'s simulated Exchange servers,
//!   which the tests use too. A production build leaves them out (`--no-default-features`).

// No panic reachable from input: the lints that say so (indexing, unwrap, expect, panic) are
// denied for every target in Cargo.toml's `[lints.clippy]`.

pub mod addr;
pub mod admin;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod ctl;
#[cfg(feature = "demo")]
pub mod demo;
pub mod diag;
pub mod dns;
pub mod health;
pub mod history;
pub mod httpclient;
pub mod httpconn;
pub mod limits;
pub mod listeners;
pub mod query;
pub mod redirect;
pub mod relay;
pub mod runtime;
#[cfg(feature = "demo")]
pub mod sim;
pub mod state;
pub mod tls;
pub mod zone;
