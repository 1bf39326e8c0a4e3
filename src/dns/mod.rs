//! The authoritative DNS server: one request handler shared by UDP and TCP, fed from the current
//! [`Snapshot`](crate::state::Snapshot).
//!
//! hickory-proto supplies the wire types, the record encoder and the zone-file record parser.
//! The serving path (transports, lookup, negative answers, truncation) is mailns's own, because
//! each piece of hickory-server's is on the design's list of gaps: a task per UDP packet, O(zone)
//! negative lookups, the wrong negative-answer TTL, AA=1 referrals without glue, OPT dropped on
//! truncation, an uncapped EDNS payload and no TCP connection limit.

pub mod fast;
pub mod lookup;
pub mod tcp;
pub mod udp;
pub mod wire;

use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::state::Snapshot;
use wire::{Parsed, Query};

/// Which transport a query came over: it sets the size limit and ANY handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: responses fit the client's payload (at most 1232), ANY is minimal.
    Udp,
    /// TCP: up to 65535 bytes, ANY is complete.
    Tcp,
}

/// Counters read by the dashboard and metrics (relaxed atomics; exactness is not needed).
#[derive(Debug, Default)]
pub struct Stats {
    /// Queries answered from the prebuilt table.
    pub fast: AtomicU64,
    /// Queries answered by the general path.
    pub slow: AtomicU64,
    /// Packets dropped without an answer.
    pub dropped: AtomicU64,
    /// FORMERR answers.
    pub formerr: AtomicU64,
}

/// Answers one DNS message. Writes the response into `out` and returns true, or returns false
/// when the packet gets no answer at all.
pub fn handle(
    snap: &Snapshot,
    packet: &[u8],
    transport: Transport,
    out: &mut Vec<u8>,
    stats: &Stats,
) -> bool {
    let q = match wire::parse(packet) {
        Parsed::Query(q) => q,
        Parsed::Error {
            id,
            flags_hi,
            rcode,
        } => {
            stats.formerr.fetch_add(1, Ordering::Relaxed);
            wire::encode_error(out, id, flags_hi, rcode, None);
            return true;
        }
        Parsed::Drop => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
    };
    let limit = match transport {
        Transport::Udp => q.udp_limit(),
        Transport::Tcp => usize::from(u16::MAX),
    };
    if q.opcode() == 0 && q.edns.is_none_or(|e| e.version == 0) && snap.fast.answer(&q, limit, out)
    {
        stats.fast.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    stats.slow.fetch_add(1, Ordering::Relaxed);
    answer_slow(snap, &q, transport, limit, out);
    true
}

fn answer_slow(
    snap: &Snapshot,
    q: &Query<'_>,
    transport: Transport,
    limit: usize,
    out: &mut Vec<u8>,
) {
    let refuse =
        |out: &mut Vec<u8>, rcode| wire::encode_error(out, q.id, q.flags_hi, rcode, q.edns);
    if q.opcode() != 0 {
        return refuse(out, ResponseCode::NotImp);
    }
    if let Some(e) = q.edns {
        if e.version != 0 {
            return refuse(out, ResponseCode::BADVERS);
        }
    }
    if q.qclass != 1 {
        return refuse(out, ResponseCode::Refused);
    }
    match q.qtype {
        // Zone transfers are not served yet; meta types are not questions.
        RecordType::AXFR | RecordType::IXFR => return refuse(out, ResponseCode::Refused),
        RecordType::OPT | RecordType::TSIG => return refuse(out, ResponseCode::FormErr),
        _ => {}
    }
    let ans = lookup::resolve(&snap.zones, q.qname(), q.qtype, transport == Transport::Udp);
    if ans.rcode == ResponseCode::Refused && !ans.authoritative {
        return refuse(out, ResponseCode::Refused);
    }
    if wire::encode_answer(out, q, ans.rcode, &ans, limit).is_err() {
        refuse(out, ResponseCode::ServFail);
    }
}
