//! The NXDOMAIN answer of each zone, prebuilt, for names the zone does not hold.
//!
//! Every NXDOMAIN answer of a zone is the same message but for the question: header, question,
//! and the zone's negative SOA in authority. So it is encoded once, with the apex as the
//! question, and per query the server writes the client's question and that tail. A longer
//! question moves everything after it by the same number of bytes, so each compression pointer
//! of the tail (into the question's apex, or into the tail itself) moves by that much; the
//! template records where they are. Random names under a zone (a resolver's typo, or a
//! random-subdomain flood) so cost a copy, not a lookup plus an encoding with compression.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::lookup::Answer;
use super::wire::{self, Edns, Query};
use crate::zone::Zone;

/// Largest offset a compression pointer can carry (14 bits).
const MAX_POINTER: u16 = 0x3fff;

/// A zone's NXDOMAIN answer, less the question.
#[derive(Debug)]
pub struct Negative {
    /// Header bytes 2 and 3 (QR, AA, rcode), RD and CD still to be copied from the query.
    flags: [u8; 2],
    /// The authority section as encoded after a question naming the apex.
    tail: Box<[u8]>,
    /// Offsets in `tail` of its compression pointers.
    pointers: Box<[usize]>,
    /// Length of the apex's wire form, the template's question name.
    apex_len: usize,
}

impl Negative {
    /// The template of `zone`'s NXDOMAIN answer; None if the encoder cannot write its SOA or
    /// its tail cannot be read back (then the general path answers, as before).
    pub fn build(zone: &Zone) -> Option<Self> {
        let apex = &zone.origin_wire;
        let question = wire::question_of(apex, RecordType::A);
        let q = Query::template(&question, apex, RecordType::A)?;
        let ans = Answer {
            rcode: ResponseCode::NXDomain,
            authoritative: true,
            authority: vec![std::borrow::Cow::Borrowed(&zone.negative_soa)],
            ..Answer::default()
        };
        let mut out = Vec::new();
        wire::encode_answer(&mut out, &q, ans.rcode, &ans, usize::from(u16::MAX)).ok()?;
        let flags = *out.get(2..4)?.first_chunk::<2>()?;
        let tail: Box<[u8]> = out.get(12 + question.len()..)?.into();
        let pointers = soa_pointers(&tail)?.into_boxed_slice();
        Some(Self {
            flags,
            tail,
            pointers,
            apex_len: apex.len(),
        })
    }

    /// Writes the answer to `q` (whose name lies in this zone and does not exist) into `out`;
    /// false where it is longer than `limit` or a pointer would not fit 14 bits.
    pub fn write(&self, q: &Query<'_>, limit: usize, out: &mut Vec<u8>) -> bool {
        let Some(shift) = q
            .qname_len
            .checked_sub(self.apex_len)
            .and_then(|s| u16::try_from(s).ok())
        else {
            return false;
        };
        let opt = if q.edns.is_some() { wire::OPT_LEN } else { 0 };
        if 12 + q.question.len() + self.tail.len() + opt > limit {
            return false;
        }
        out.clear();
        let [hi, lo] = self.flags;
        let (hi, lo) = (hi | (q.flags_hi & wire::RD), lo | (q.flags_lo & wire::CD));
        let counts = [1, 0, 1, u16::from(q.edns.is_some())];
        out.extend_from_slice(&wire::header_bytes(q.id, hi, lo, counts));
        out.extend_from_slice(q.question);
        let start = out.len();
        out.extend_from_slice(&self.tail);
        for &p in self.pointers.iter() {
            let Some(b) = out
                .get_mut(start + p..)
                .and_then(<[u8]>::first_chunk_mut::<2>)
            else {
                return false;
            };
            let target = (u16::from_be_bytes(*b) & MAX_POINTER).saturating_add(shift);
            if target > MAX_POINTER {
                return false;
            }
            *b = (0xc000 | target).to_be_bytes();
        }
        if let Some(Edns { dnssec_ok, .. }) = q.edns {
            wire::push_opt(out, ResponseCode::NXDomain, dnssec_ok);
        }
        true
    }
}

/// The offsets of the compression pointers in `tail`, which is one SOA record: in its owner,
/// MNAME and RNAME. None where it is not exactly that record.
fn soa_pointers(tail: &[u8]) -> Option<Vec<usize>> {
    let mut pointers = Vec::new();
    let at = name_pointer(tail, 0, &mut pointers)?;
    if wire::u16_at(tail, at)? != u16::from(RecordType::SOA) {
        return None;
    }
    let end = at + 10 + usize::from(wire::u16_at(tail, at + 8)?);
    let mname_end = name_pointer(tail, at + 10, &mut pointers)?;
    let rname_end = name_pointer(tail, mname_end, &mut pointers)?;
    // The five 32-bit counters follow the names.
    (rname_end + 20 == end && end == tail.len()).then_some(pointers)
}

/// Reads the name at `at`; pushes the offset of the pointer that ends it, if one does. The
/// offset just past the name.
fn name_pointer(bytes: &[u8], mut at: usize, pointers: &mut Vec<usize>) -> Option<usize> {
    loop {
        let len = *bytes.get(at)?;
        match len {
            0 => return Some(at + 1),
            0xc0..=0xff => {
                bytes.get(at + 1)?;
                pointers.push(at);
                return Some(at + 2);
            }
            1..=63 => at += 1 + usize::from(len),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, MessageType, OpCode, Query as HQuery};
    use hickory_proto::rr::Name;

    use super::*;
    use crate::dns::tests::{snapshot, ZONE};
    use crate::query::lookup::resolve;
    use crate::query::wire::Parsed;

    /// The query for `name` with RD, CD, and EDNS with DO where asked.
    fn packet(name: &str, edns: bool) -> Vec<u8> {
        let mut m = Message::new(0xbeef, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.checking_disabled = true;
        m.add_query(HQuery::query(
            Name::from_ascii(name).unwrap(),
            RecordType::TXT,
        ));
        if edns {
            let mut e = hickory_proto::op::Edns::new();
            e.set_dnssec_ok(true);
            m.edns = Some(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn the_prebuilt_answer_says_what_the_encoder_says_for_any_name_length() {
        let snap = snapshot("z.test", ZONE);
        let zones = &snap.views[0].zones;
        let negative = Negative::build(&zones.zones[0]).unwrap();
        assert_eq!(
            negative.pointers.len(),
            3,
            "owner, MNAME and RNAME point back"
        );
        // From two labels under the apex to a name of 252 characters, mixed case.
        for labels in 0..=40 {
            let name = format!("NoPe.{}Z.test.", "aBcDe.".repeat(labels));
            for edns in [false, true] {
                let bytes = packet(&name, edns);
                let Parsed::Query(q) = wire::parse(&bytes) else {
                    panic!("{name}")
                };
                let mut out = Vec::new();
                assert!(negative.write(&q, 65535, &mut out), "{name}");
                let ans = resolve(zones, q.qname(), q.qtype, true, 0);
                let mut general = Vec::new();
                wire::encode_answer(&mut general, &q, ans.rcode, &ans, 65535).unwrap();
                let (p, g) = (
                    Message::from_vec(&out).unwrap(),
                    Message::from_vec(&general).unwrap(),
                );
                assert_eq!(p, g, "{name} edns={edns}");
                assert_eq!(p.metadata.response_code, ResponseCode::NXDomain);
                assert!(p.metadata.recursion_desired && p.metadata.checking_disabled);
                assert_eq!(
                    p.edns.as_ref().map(|e| e.flags().dnssec_ok),
                    edns.then_some(true)
                );
                assert_eq!(&out[12..12 + q.question.len()], q.question, "case echoed");
                assert!(
                    !negative.write(&q, out.len() - 1, &mut out),
                    "over the limit"
                );
            }
        }
    }

    #[test]
    fn names_end_in_a_pointer_or_the_root() {
        let mut p = Vec::new();
        assert_eq!(name_pointer(&[2, b'n', b's', 0xc0, 12], 0, &mut p), Some(5));
        assert_eq!(p, [3]);
        assert_eq!(name_pointer(&[1, b'h', 0], 0, &mut p), Some(3));
        assert_eq!(p, [3], "no pointer");
        assert_eq!(
            name_pointer(&[3, b'a'], 0, &mut p),
            None,
            "runs off the end"
        );
        assert_eq!(
            name_pointer(&[0x40], 0, &mut p),
            None,
            "an extended label type"
        );
    }
}
