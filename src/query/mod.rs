//! The pure query core: a DNS message in, the answer's bytes out, with no I/O and no clock.
//!
//! [`wire`] parses a request and encodes answers and errors (truncation at the transport's
//! limit included), [`lookup`] resolves a question against the zones, [`fast`] holds the
//! answers prebuilt for the hot path ([`negative`] the NXDOMAIN ones), and [`cookie`] makes and checks DNS cookies, [`ecs`] reads and writes the client subnet option. The serving
//! snapshot builds its tables from here, and the DNS servers answer through it; it sits below
//! both, so neither has to know the other to share the codec.

pub mod cookie;
pub mod ecs;
pub mod fast;
pub mod lookup;
pub mod negative;
pub mod wire;
