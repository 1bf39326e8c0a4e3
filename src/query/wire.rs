//! DNS messages on the wire: a zero-allocation parser for the queries real clients send, and the
//! response encoder (EDNS payload capped at 1232, OPT kept on truncated replies, the client's
//! question bytes echoed so 0x20 letter case survives).
//!
//! The parser takes the common shape (one question, no answer or authority records, at most an
//! OPT record) without allocating; anything else goes through hickory-proto's full `Message`
//! decoder, and what that rejects is answered FORMERR.

use std::borrow::Cow;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use super::lookup::Answer;
use super::{cookie, ecs};

/// The UDP payload mailns uses at most, whatever the client offers (DNS flag day 2020).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// The UDP payload without EDNS (RFC 1035 §4.2.1).
pub const PLAIN_UDP_PAYLOAD: u16 = 512;
/// Length of the OPT record mailns sends: root name, type, class, TTL, empty RDATA.
pub const OPT_LEN: usize = 11;

const HEADER_LEN: usize = 12;
const QR: u8 = 0x80;
const AA: u8 = 0x04;
const TC: u8 = 0x02;
pub(crate) const RD: u8 = 0x01;
pub(crate) const CD: u8 = 0x10;

/// EDNS(0) parameters of a query (RFC 6891).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size.
    pub payload: u16,
    /// EDNS version.
    pub version: u8,
    /// DNSSEC OK (RFC 3225): echoed in the response's OPT.
    pub dnssec_ok: bool,
}

/// A parsed query. `question` borrows the received bytes.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// Message ID.
    pub id: u16,
    /// The third header byte (QR, opcode, AA, TC, RD) as received.
    pub flags_hi: u8,
    /// The fourth header byte (RA, Z, AD, CD, rcode) as received.
    pub flags_lo: u8,
    /// The question section as received: name, type, class.
    pub question: &'a [u8],
    /// Length of the question name in `question`.
    pub qname_len: usize,
    /// The question name, lowercased, in wire form.
    pub qname_lower: [u8; 256],
    /// Query type.
    pub qtype: RecordType,
    /// Query class (1 = IN).
    pub qclass: u16,
    /// EDNS, if the query had an OPT record.
    pub edns: Option<Edns>,
    /// The COOKIE option of the OPT record, if any.
    pub cookie: cookie::Received,
    /// The client subnet (ECS) option of the OPT record, if any.
    pub ecs: ecs::Received,
    /// The TSIG key name a signed query names (lowercase), not yet verified.
    pub signed_by: Option<hickory_proto::rr::Name>,
    /// The whole message as received (a signature is verified over it).
    pub packet: &'a [u8],
}

/// The question section asking (`wire`, `qtype`, IN): what a prebuilt answer is encoded for.
pub fn question_of(wire: &[u8], qtype: RecordType) -> Vec<u8> {
    let mut question = Vec::with_capacity(wire.len() + 4);
    question.extend_from_slice(wire);
    question.extend_from_slice(&u16::from(qtype).to_be_bytes());
    question.extend_from_slice(&1u16.to_be_bytes());
    question
}

impl<'a> Query<'a> {
    /// The query a prebuilt answer is encoded for: ID 0, no flags, no EDNS, `question` (from
    /// [`question_of`]) naming the lowercase `wire`. None if `wire` is longer than a name.
    pub fn template(question: &'a [u8], wire: &[u8], qtype: RecordType) -> Option<Self> {
        let mut q = Query {
            id: 0,
            flags_hi: 0,
            flags_lo: 0,
            question,
            qname_len: wire.len(),
            qname_lower: [0; 256],
            qtype,
            qclass: 1,
            edns: None,
            cookie: cookie::Received::Absent,
            ecs: ecs::Received::Absent,
            signed_by: None,
            packet: &[],
        };
        q.qname_lower.get_mut(..wire.len())?.copy_from_slice(wire);
        Some(q)
    }
}

impl Query<'_> {
    /// The lowercase wire-form question name.
    pub fn qname(&self) -> &[u8] {
        self.qname_lower.get(..self.qname_len).unwrap_or(&[])
    }

    /// RD from the query.
    pub fn rd(&self) -> bool {
        self.flags_hi & RD != 0
    }

    /// The opcode (QUERY 0, NOTIFY 4; others are answered NOTIMP).
    pub fn opcode(&self) -> u8 {
        (self.flags_hi >> 3) & 0x0f
    }

    /// The largest UDP response this client can take: min(its EDNS payload, 1232), at least 512.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => e.payload.clamp(PLAIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD) as usize,
            None => PLAIN_UDP_PAYLOAD as usize,
        }
    }
}

/// What to do with a packet.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A query to answer.
    Query(Box<Query<'a>>),
    /// Answer with this rcode and no question (the header could be read, the rest not).
    Error {
        /// ID to echo.
        id: u16,
        /// Third header byte of the query.
        flags_hi: u8,
        /// Response code.
        rcode: ResponseCode,
    },
    /// Not worth an answer: too short to carry an ID, or itself a response.
    Drop,
}

/// Parses a query packet.
pub fn parse(packet: &[u8]) -> Parsed<'_> {
    let Some(head) = packet.first_chunk::<HEADER_LEN>() else {
        return Parsed::Drop;
    };
    if head[2] & QR != 0 {
        return Parsed::Drop;
    }
    let id = u16::from_be_bytes([head[0], head[1]]);
    let flags_hi = head[2];
    let formerr = Parsed::Error {
        id,
        flags_hi,
        rcode: ResponseCode::FormErr,
    };
    let [qd, an, ns, ar] = [
        [head[4], head[5]],
        [head[6], head[7]],
        [head[8], head[9]],
        [head[10], head[11]],
    ]
    .map(u16::from_be_bytes);
    if qd != 1 {
        return formerr;
    }
    let mut q = Box::new(Query {
        id,
        flags_hi,
        flags_lo: head[3],
        question: &[],
        qname_len: 0,
        qname_lower: [0; 256],
        qtype: RecordType::A,
        qclass: 1,
        edns: None,
        cookie: cookie::Received::Absent,
        ecs: ecs::Received::Absent,
        signed_by: None,
        packet,
    });
    // Question name: labels only (a compression pointer in a lone question can point nowhere).
    let mut i = 12;
    loop {
        let Some(&len) = packet.get(i) else {
            return formerr;
        };
        if len & 0xc0 != 0 || q.qname_len + len as usize + 1 > 255 {
            return formerr;
        }
        let Some(label) = packet.get(i..i + 1 + len as usize) else {
            return formerr;
        };
        // In bounds: the check above keeps the name within 255 of the buffer's 256 bytes.
        let Some(out) = q
            .qname_lower
            .get_mut(q.qname_len..q.qname_len + label.len())
        else {
            return formerr;
        };
        out.copy_from_slice(label);
        out.make_ascii_lowercase();
        if let Some(first) = out.first_mut() {
            *first = len;
        }
        q.qname_len += label.len();
        i += label.len();
        if len == 0 {
            break;
        }
    }
    let (Some(tc), Some(question)) = (
        packet.get(i..).and_then(<[u8]>::first_chunk::<4>),
        packet.get(HEADER_LEN..i + 4),
    ) else {
        return formerr;
    };
    q.qtype = RecordType::from(u16::from_be_bytes([tc[0], tc[1]]));
    q.qclass = u16::from_be_bytes([tc[2], tc[3]]);
    q.question = question;
    i += 4;

    if an == 0 && ns == 0 && ar == 0 && i == packet.len() {
        return Parsed::Query(q);
    }
    if an == 0 && ns == 0 && ar == 1 {
        if let Some(opt) = packet.get(i..).and_then(parse_opt) {
            q.edns = Some(opt.edns);
            q.cookie = opt.cookie;
            q.ecs = opt.ecs;
            return Parsed::Query(q);
        }
    }
    // Anything else: the full decoder decides (and rejects two OPT records, RFC 6891 §6.1.1).
    match Message::from_vec(packet) {
        Ok(m) => {
            let opts = m
                .additionals
                .iter()
                .filter(|r| r.record_type() == RecordType::OPT)
                .count();
            if opts > 1 {
                return formerr;
            }
            q.edns = m.edns.as_ref().map(|e| Edns {
                payload: e.max_payload(),
                version: e.version(),
                dnssec_ok: e.flags().dnssec_ok,
            });
            let option = m
                .edns
                .as_ref()
                .and_then(|e| e.option(hickory_proto::rr::rdata::opt::EdnsCode::Cookie));
            q.cookie = match option {
                Some(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(_, data)) => {
                    cookie::Received::parse(data)
                }
                Some(_) => cookie::Received::Malformed,
                None => cookie::Received::Absent,
            };
            q.ecs = subnet_of(m.edns.as_ref());
            q.signed_by = m.signature.as_deref().map(|t| t.name.to_lowercase());
            Parsed::Query(q)
        }
        Err(_) => formerr,
    }
}

/// What an OPT record says.
struct Opt {
    edns: Edns,
    cookie: cookie::Received,
    ecs: ecs::Received,
}

/// A lone OPT record filling exactly `rest`, or None; with its COOKIE option (the first) and
/// its ECS option (two are malformed).
fn parse_opt(rest: &[u8]) -> Option<Opt> {
    let fixed: &[u8; OPT_LEN] = rest.get(..OPT_LEN)?.try_into().ok()?;
    if fixed[0] != 0 || fixed[1..3] != [0, 41] {
        return None;
    }
    let payload = u16::from_be_bytes([fixed[3], fixed[4]]);
    let version = fixed[6];
    let dnssec_ok = fixed[7] & 0x80 != 0;
    let rdlen = u16::from_be_bytes([fixed[9], fixed[10]]) as usize;
    let mut opts = rest.get(OPT_LEN..)?;
    if opts.len() != rdlen {
        return None;
    }
    let mut found = cookie::Received::Absent;
    let mut subnet = ecs::Received::Absent;
    while !opts.is_empty() {
        let head: &[u8; 4] = opts.get(..4)?.try_into().ok()?;
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let data = opts.get(4..4 + len)?;
        if code == cookie::OPTION_CODE && found == cookie::Received::Absent {
            found = cookie::Received::parse(data);
        }
        if code == ecs::OPTION_CODE {
            subnet = subnet.and(data);
        }
        opts = opts.get(4 + len..)?;
    }
    Some(Opt {
        edns: Edns {
            payload,
            version,
            dnssec_ok,
        },
        cookie: found,
        ecs: subnet,
    })
}

/// The ECS option hickory's decoder found, judged by the same rules as the fast parser's.
fn subnet_of(edns: Option<&hickory_proto::op::Edns>) -> ecs::Received {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match edns.and_then(|e| e.option(EdnsCode::Subnet)) {
        None => ecs::Received::Absent,
        Some(EdnsOption::Subnet(cs)) => Vec::<u8>::try_from(cs)
            .map_or(ecs::Received::Malformed, |data| ecs::Received::parse(&data)),
        Some(EdnsOption::Unknown(_, data)) => ecs::Received::parse(data),
        Some(_) => ecs::Received::Malformed,
    }
}

/// The big-endian u16 at `at` in `bytes`, if it is there.
pub fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    bytes
        .get(at..)
        .and_then(<[u8]>::first_chunk::<2>)
        .map(|b| u16::from_be_bytes(*b))
}

/// Writes the 12-byte header.
fn header(out: &mut Vec<u8>, id: u16, hi: u8, lo: u8, counts: [u16; 4]) {
    out.extend_from_slice(&header_bytes(id, hi, lo, counts));
}

/// The 12 header bytes.
pub(crate) fn header_bytes(id: u16, hi: u8, lo: u8, counts: [u16; 4]) -> [u8; HEADER_LEN] {
    let [i0, i1] = id.to_be_bytes();
    let [[q0, q1], [a0, a1], [n0, n1], [r0, r1]] = counts.map(u16::to_be_bytes);
    [i0, i1, hi, lo, q0, q1, a0, a1, n0, n1, r0, r1]
}

/// Appends mailns's OPT record: payload 1232, the extended rcode bits, DO echoed.
pub fn push_opt(out: &mut Vec<u8>, rcode: ResponseCode, dnssec_ok: bool) {
    let ext = (u16::from(rcode) >> 4) as u8;
    out.extend_from_slice(&[0, 0, 41]);
    out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
    out.extend_from_slice(&[ext, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
}

/// A response with no records (but OPT if the query had one): FORMERR, NOTIMP, REFUSED...
/// `question` is the client's question section, echoed (empty where it could not be read).
pub fn encode_error(
    out: &mut Vec<u8>,
    id: u16,
    flags_hi: u8,
    question: &[u8],
    rcode: ResponseCode,
    edns: Option<Edns>,
) {
    out.clear();
    let hi = QR | (flags_hi & (0x78 | RD));
    let lo = (u16::from(rcode) & 0x0f) as u8;
    let qd = u16::from(!question.is_empty());
    header(out, id, hi, lo, [qd, 0, 0, u16::from(edns.is_some())]);
    out.extend_from_slice(question);
    if let Some(e) = edns {
        push_opt(out, rcode, e.dnssec_ok);
    }
}

/// Turns the response in `out` to a query with a `question_len`-byte question into its
/// truncated form: same header, TC=1, the question and the OPT record, no other record. This is
/// the reply rate limiting slips out: small, and it sends a real client to TCP.
pub fn truncate(out: &mut Vec<u8>, question_len: usize, edns: bool) {
    let end = HEADER_LEN + question_len;
    if out.len() < end {
        return;
    }
    let opt: Option<[u8; OPT_LEN]> = edns
        .then(|| out.len().checked_sub(OPT_LEN).and_then(|at| out.get(at..)))
        .flatten()
        .and_then(|b| b.try_into().ok())
        .filter(|o: &[u8; OPT_LEN]| o[..3] == [0, 0, 41]);
    out.truncate(end);
    if let Some(flags) = out.get_mut(2) {
        *flags |= TC;
    }
    let ar = u16::from(opt.is_some()).to_be_bytes();
    if let Some(counts) = out.get_mut(6..12) {
        counts.copy_from_slice(&[0, 0, 0, 0, ar[0], ar[1]]);
    }
    if let Some(opt) = opt {
        out.extend_from_slice(&opt);
    }
}

/// Appends an EDNS option (code and length included) to the OPT record that ends `out`, as
/// every response mailns encodes for an EDNS query does. False, and `out` unchanged, if `out`
/// does not end with an empty OPT record.
pub fn append_option(out: &mut Vec<u8>, option: &[u8]) -> bool {
    let Some(at) = out.len().checked_sub(OPT_LEN) else {
        return false;
    };
    let ends_with_opt = out
        .get(at..)
        .and_then(|o| <&[u8; OPT_LEN]>::try_from(o).ok())
        .is_some_and(|o| [o[0], o[1], o[2], o[9], o[10]] == [0, 0, 41, 0, 0]);
    let Ok(rdlen) = u16::try_from(option.len()) else {
        return false;
    };
    if !ends_with_opt {
        return false;
    }
    out.extend_from_slice(option);
    if let Some(len) = out.get_mut(at + 9..at + 11) {
        len.copy_from_slice(&rdlen.to_be_bytes());
    }
    true
}

/// Encodes `ans` for `q` into `out`, fitting `limit` bytes: additional records are dropped first
/// (unless they are required glue), and if the answer itself does not fit the reply is sent with
/// TC=1, empty sections and, where the query had EDNS, the OPT record (RFC 6891 §7).
///
/// # Errors
/// Only if hickory cannot encode a record from the zone; the caller answers SERVFAIL.
pub fn encode_answer(
    out: &mut Vec<u8>,
    q: &Query<'_>,
    rcode: ResponseCode,
    ans: &Answer<'_>,
    limit: usize,
) -> Result<(), hickory_proto::ProtoError> {
    out.clear();
    header(out, q.id, 0, 0, [1, 0, 0, 0]);
    let qlen = q.question.len();
    out.extend_from_slice(q.qname());
    out.extend_from_slice(q.question.get(q.qname_len..).unwrap_or(&[]));
    let q_end = out.len();
    let mut ends: Vec<usize> =
        Vec::with_capacity(ans.answers.len() + ans.authority.len() + ans.additional.len());
    {
        let mut enc = BinEncoder::with_offset(out, q_end as u32);
        // Register the question name's suffixes for compression, as if hickory had written it.
        let mut i = 12;
        let name_end = 12 + q.qname_len - 1;
        while let Some(&len) = q.qname_lower.get(i - 12).filter(|_| i < name_end) {
            enc.store_label_pointer(i, name_end);
            i += 1 + len as usize;
        }
        let all = ans
            .answers
            .iter()
            .chain(&ans.authority)
            .chain(&ans.additional);
        for r in all {
            emit_record(&mut enc, r)?;
            ends.push(enc.offset());
        }
    }
    let opt_len = if q.edns.is_some() { OPT_LEN } else { 0 };
    let (na, nn) = (ans.answers.len(), ans.authority.len());
    let required = if ans.additional_required {
        ends.len()
    } else {
        na + nn
    };
    // How many records fit; an additional RRset goes whole or not at all.
    let fit = ends.iter().take_while(|&&e| e + opt_len <= limit).count();
    let fit = match fit.checked_sub(na + nn) {
        Some(in_additional) => na + nn + whole_rrsets(&ans.additional, in_additional),
        None => fit,
    };
    let (kept, truncated) = if fit >= required {
        (fit, false)
    } else {
        (0, true)
    };
    let end = kept
        .checked_sub(1)
        .and_then(|k| ends.get(k))
        .map_or(q_end, |&e| e);
    out.truncate(end);
    let counts = [
        1,
        kept.min(na) as u16,
        kept.saturating_sub(na).min(nn) as u16,
        (kept.saturating_sub(na + nn) + usize::from(opt_len > 0)) as u16,
    ];
    let mut hi = QR | (q.flags_hi & RD);
    if ans.authoritative {
        hi |= AA;
    }
    if truncated {
        hi |= TC;
    }
    let lo = (q.flags_lo & CD) | (u16::from(rcode) & 0x0f) as u8;
    if let Some(head) = out.first_chunk_mut::<HEADER_LEN>() {
        *head = header_bytes(q.id, hi, lo, counts);
    }
    if let Some(e) = q.edns {
        push_opt(out, rcode, e.dnssec_ok);
    }
    // The client's own question bytes: same length as the lowercased ones, so every compression
    // pointer into them stays valid, and the client sees its letter case echoed.
    if let Some(question) = out.get_mut(HEADER_LEN..HEADER_LEN + qlen) {
        question.copy_from_slice(q.question);
    }
    Ok(())
}

/// How many of the first `fit` records of `records` end on an RRset boundary: a reply never
/// carries part of an additional RRset without TC, which a resolver could cache as the whole
/// set (RFC 2181 §5; Knot and BIND leave such an RRset out). Found by the differential fuzz.
fn whole_rrsets(records: &[Cow<'_, Record>], fit: usize) -> usize {
    let mut fit = fit.min(records.len());
    let same = |a: &Record, b: &Record| a.record_type() == b.record_type() && a.name == b.name;
    while fit > 0 && fit < records.len() {
        match (records.get(fit - 1), records.get(fit)) {
            (Some(last), Some(next)) if same(last, next) => fit -= 1,
            _ => break,
        }
    }
    fit
}

fn emit_record(enc: &mut BinEncoder<'_>, r: &Record) -> Result<(), hickory_proto::ProtoError> {
    r.emit(enc)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::rdata::{A, AAAA};
    use hickory_proto::rr::{Name, RData};

    use super::*;

    fn rec(name: &str, data: RData) -> Cow<'static, Record> {
        Cow::Owned(Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            60,
            data,
        ))
    }

    #[test]
    fn additional_rrsets_are_cut_whole() {
        let a = |n, i| rec(n, RData::A(A(Ipv4Addr::new(127, 0, 0, i))));
        let aaaa = |n| rec(n, RData::AAAA(AAAA(std::net::Ipv6Addr::LOCALHOST)));
        let set = [a("x.", 1), a("x.", 2), aaaa("x."), a("y.", 1), a("y.", 2)];
        assert_eq!(whole_rrsets(&set, 5), 5);
        assert_eq!(whole_rrsets(&set, 4), 3, "y's A set would be split");
        assert_eq!(whole_rrsets(&set, 3), 3);
        assert_eq!(whole_rrsets(&set, 2), 2, "x's A set ends at 2");
        assert_eq!(whole_rrsets(&set, 1), 0);
        assert_eq!(whole_rrsets(&set, 0), 0);
        assert_eq!(whole_rrsets(&set, 9), 5);
    }
}
