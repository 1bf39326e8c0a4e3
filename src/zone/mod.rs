//! Zones: loading RFC 1035 master files with line-numbered diagnostics, validating what would
//! break clients, and the in-memory form the DNS core answers from.
//!
//! The in-memory form is keyed by the lowercase wire form of each owner name, so the DNS core can
//! look up every ancestor of a query name as a tail slice of one buffer: no allocation and
//! O(labels) per lookup, where hickory's in-memory store scans the whole zone on a miss.

mod lex;
mod load;
mod text;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hickory_proto::rr::{rdata::SOA, Name, RData, Record, RecordType};
use rustc_hash::FxHashMap;

pub use load::{load_zone, load_zone_from};
pub(crate) use validate::name_from_wire;

/// One RRset: every record of one type at one owner, with one TTL.
#[derive(Debug, Clone)]
pub struct RRset {
    /// The records' type.
    pub rtype: RecordType,
    /// The records, in zone-file order, duplicates removed.
    pub records: Vec<Record>,
    /// Line of the first record, for diagnostics.
    pub line: usize,
    /// File of the first record, for diagnostics (one allocation per file, not per RRset).
    pub file: Arc<Path>,
    /// For health-driven answers: every rotation of the answer (rotation 0 is `records`); empty
    /// for static RRsets, which are answered as written.
    pub rotations: Vec<Vec<Record>>,
}

impl RRset {
    /// The records of answer number `rotation`.
    pub fn rotated(&self, rotation: usize) -> &[Record] {
        if self.rotations.is_empty() {
            &self.records
        } else {
            rotation
                .checked_rem(self.rotations.len())
                .and_then(|r| self.rotations.get(r))
                .map_or(self.records.as_slice(), Vec::as_slice)
        }
    }
}

/// One owner name and what it holds; empty non-terminals are nodes with no RRsets.
#[derive(Debug, Clone)]
pub struct Node {
    /// The owner name, lowercase, fully qualified.
    pub name: Name,
    /// Its RRsets, one per type.
    pub rrsets: Vec<RRset>,
    /// True where NS records sit below the apex: a zone cut, answered with a referral.
    pub cut: bool,
    /// Types answered SERVFAIL (a service name's all-down policy).
    pub servfail: Vec<RecordType>,
}

impl Node {
    /// The RRset of `rtype`, if any.
    pub fn rrset(&self, rtype: RecordType) -> Option<&RRset> {
        self.rrsets.iter().find(|s| s.rtype == rtype)
    }
}

/// A loaded, validated zone.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The apex, lowercase, fully qualified.
    pub origin: Name,
    /// The apex in lowercase wire form.
    pub origin_wire: Box<[u8]>,
    /// Every node as loaded, by lowercase wire-form name, ancestors up to the apex included.
    /// Shared: a snapshot's derived zone and every view holding it point at the same map.
    pub nodes: Arc<FxHashMap<Box<[u8]>, Node>>,
    /// The nodes health changed (service names, MX/SRV owners with records left out), which
    /// stand in for those of `nodes`; empty in a zone as loaded. A health change so copies a
    /// few nodes, not the zone.
    pub overlay: Arc<FxHashMap<Box<[u8]>, Node>>,
    /// The SOA record as written.
    pub soa: Record,
    /// The SOA for negative answers: TTL = min(SOA TTL, MINIMUM) (RFC 2308 §3).
    pub negative_soa: Record,
    /// The zone file.
    pub file: PathBuf,
    /// Number of records.
    pub record_count: usize,
}

impl Zone {
    /// The node at `name` (lowercase wire form).
    pub fn node(&self, wire: &[u8]) -> Option<&Node> {
        // A zone as loaded has no overlay: one lookup, not two, on the general query path.
        if self.overlay.is_empty() {
            return self.nodes.get(wire);
        }
        self.overlay.get(wire).or_else(|| self.nodes.get(wire))
    }

    /// Every node as answered (the overlay's in place of those it stands in for).
    pub fn iter_nodes(&self) -> impl Iterator<Item = (&Box<[u8]>, &Node)> {
        self.overlay.iter().chain(
            self.nodes
                .iter()
                .filter(|(wire, _)| !self.overlay.contains_key(*wire)),
        )
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        soa_of(&self.soa).map_or(0, |s| s.serial)
    }

    /// Sets the SOA serial everywhere the SOA appears (`serial = "auto"`).
    pub fn set_serial(&mut self, serial: u32) {
        let with = |r: &mut Record| {
            if let RData::SOA(soa) = &mut r.data {
                soa.serial = serial;
            }
        };
        with(&mut self.soa);
        with(&mut self.negative_soa);
        if let Some(apex) = Arc::make_mut(&mut self.nodes).get_mut(&self.origin_wire) {
            for set in apex
                .rrsets
                .iter_mut()
                .filter(|s| s.rtype == RecordType::SOA)
            {
                set.records.iter_mut().for_each(with);
            }
        }
    }

    /// A digest of the zone's content with the SOA serial left out: equal digests mean a
    /// secondary holds the same data whatever the serials say.
    ///
    /// Each record is hashed in wire form (owner, type, TTL, data), and the hashes are summed,
    /// so the order the map yields them in does not count and nothing is sorted or formatted:
    /// a reload digests the old and the new zone, 100,000 records each.
    pub fn content_digest(&self) -> u64 {
        use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
        use std::hash::{Hash, Hasher};
        let mut buf = Vec::with_capacity(512);
        let mut sum = 0u64;
        for (_, node) in self.iter_nodes() {
            for r in node.rrsets.iter().flat_map(|set| set.records.iter()) {
                buf.clear();
                let mut enc = BinEncoder::new(&mut buf);
                let emitted = r.name.emit(&mut enc).and_then(|()| match &r.data {
                    RData::SOA(soa) => {
                        let mut soa = soa.clone();
                        soa.serial = 0;
                        soa.emit(&mut enc)
                    }
                    data => data.emit(&mut enc),
                });
                // Fixed keys: the same content gives the same digest in every process.
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (u16::from(r.record_type()), r.ttl).hash(&mut h);
                // Data that does not encode (none that loads) is hashed as its text.
                match emitted {
                    Ok(()) => buf.hash(&mut h),
                    Err(_) => r.data.to_string().hash(&mut h),
                }
                sum = sum.wrapping_add(h.finish());
            }
        }
        sum
    }
}

/// Serial arithmetic (RFC 1982): true when `a` is after `b`.
pub fn serial_after(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

/// The SOA data of a record, if it is one.
pub(crate) fn soa_of(r: &Record) -> Option<&SOA> {
    match &r.data {
        RData::SOA(soa) => Some(soa),
        _ => None,
    }
}

/// The lowercase wire form of `name` (labels with length bytes, then the root's 0).
pub fn wire_lower(name: &Name) -> Box<[u8]> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out.into_boxed_slice()
}

/// Start offsets of each label in a wire-form name, the full name first; the root's empty suffix
/// (offset of the final 0) is last.
pub fn label_starts(wire: &[u8], out: &mut Vec<usize>) {
    out.clear();
    let mut i = 0;
    while let Some(&len) = wire.get(i) {
        out.push(i);
        if len == 0 {
            break;
        }
        i += len as usize + 1;
    }
}
