//! Zone transfers (AXFR, and IXFR answered with the full zone) over TCP, split into as many
//! messages as needed (RFC 5936), optionally TSIG-signed (RFC 8945), from an allow-list.
//!
//! A transfer carries the zone file's static truth: service names carry their full address set,
//! so a secondary is the plain round-robin layer under mailns's health-driven answers.
//!
//! With split horizon a zone name can have one entry per view. A secondary gets the entry of
//! the view its TSIG key selects (a view's `match_keys`, as BIND's `match-clients { key ...; }`),
//! else of the view its address matches; a key-selected entry must itself require that key, so
//! naming a key is never enough without its secret.

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{make_tsig_record, TsigError, TSIG};
use hickory_proto::rr::{Name, Record, RecordType, TSigner};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use ipnet::IpNet;
use tracing::{debug, info};

use crate::config::ZoneConfig;
use crate::zone::{wire_lower, Zone};

/// Records per message are added until this many uncompressed bytes (compression makes the
/// message smaller); well under the 65,535-byte TCP message limit.
const MESSAGE_BUDGET: usize = 16 * 1024;
/// Allowed clock skew of a signed request (RFC 8945 recommends 300 s).
pub(crate) const FUDGE: u16 = 300;

/// The signer (and verifier) of `key`, None for a key the TSIG code cannot use.
pub(crate) fn signer_of(key: &crate::config::TsigKey) -> Option<TSigner> {
    TSigner::new(
        key.secret.clone(),
        key.algorithm.clone(),
        key.name.clone(),
        FUDGE,
    )
    .ok()
}

/// Who may transfer one zone.
#[derive(Clone)]
struct ZonePolicy {
    origin: Box<[u8]>,
    /// The zone's file: a snapshot and a policy of different configs (a reload between their
    /// swaps) never pair one view's policy with another's zone.
    file: std::path::PathBuf,
    allow: Vec<IpNet>,
    key: Option<TSigner>,
}

/// Transfer permissions of every zone entry (config order), from the config (swapped on
/// reload).
#[derive(Default)]
pub struct TransferPolicy {
    zones: Vec<ZonePolicy>,
    views: crate::config::view::Views,
    replays: Replays,
}

impl std::fmt::Debug for TransferPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferPolicy")
            .field("zones", &self.zones.len())
            .finish()
    }
}

impl TransferPolicy {
    /// The policy of `zones`. A key the TSIG code cannot use is left out, so such a zone
    /// refuses signed transfers rather than accepting unsigned ones.
    pub fn new(zones: &[ZoneConfig], views: &crate::config::view::Views) -> Self {
        Self {
            views: views.clone(),
            zones: zones
                .iter()
                .map(|z| ZonePolicy {
                    origin: wire_lower(&z.origin),
                    file: z.file.clone(),
                    allow: z.allow_transfer.clone(),
                    key: z.transfer_key.as_ref().and_then(signer_of),
                })
                .collect(),
            replays: Replays::default(),
        }
    }

    /// The signer for the messages (NOTIFY) of zone entry `index`, if it has a key.
    pub fn signer(&self, index: usize) -> Option<&TSigner> {
        self.zones.get(index).and_then(|z| z.key.as_ref())
    }

    /// The zone entry for `origin` a request from `peer`, signed with `key`, gets; and whether
    /// its key chose it.
    fn entry(&self, origin: &[u8], peer: IpAddr, key: Option<&Name>) -> Option<(usize, bool)> {
        let by_key = key.and_then(|k| self.views.by_key(k)).map(|(v, _)| v);
        let view = by_key.or_else(|| self.views.by_source(peer))?;
        let i = self.zones.iter().enumerate().position(|(i, z)| {
            *z.origin == *origin
                && self
                    .views
                    .zone_views
                    .get(i)
                    .is_some_and(|vs| vs.contains(&view))
        })?;
        Some((i, by_key.is_some()))
    }
}

/// Answers a transfer request from `peer` at Unix time `now`: the messages to send, in order.
pub fn answer(
    zones: &[Zone],
    policy: &TransferPolicy,
    packet: &[u8],
    peer: IpAddr,
    now: u64,
) -> Vec<Vec<u8>> {
    let Ok(req) = Message::from_vec(packet) else {
        return vec![error(packet_id(packet), None, ResponseCode::FormErr)];
    };
    let Some(q) = req.queries.first().cloned() else {
        return vec![error(req.metadata.id, None, ResponseCode::FormErr)];
    };
    let id = req.metadata.id;
    let origin = wire_lower(q.name());
    let key = req.signature.as_deref().map(|t| t.name.to_lowercase());
    let Some((index, by_key)) = policy.entry(&origin, peer, key.as_ref()) else {
        return vec![error(id, Some(&q), ResponseCode::NotAuth)];
    };
    let (Some(zone), Some(pol)) = (zones.get(index), policy.zones.get(index)) else {
        return vec![error(id, Some(&q), ResponseCode::NotAuth)];
    };
    if zone.file != pol.file || zone.origin_wire != origin {
        // A reload is between swapping the zones and the policy: the secondary retries.
        return vec![error(id, Some(&q), ResponseCode::ServFail)];
    }
    // A key picked the view: the entry must require that very key, so the signature is checked.
    if by_key && pol.key.as_ref().map(|k| k.signer_name().to_lowercase()) != key {
        info!(%peer, zone = %zone.origin, "transfer refused: the key's view serves this zone without that transfer_key");
        return vec![error(id, Some(&q), ResponseCode::Refused)];
    }
    // Access: the address must be listed, if there is a list; the signature must verify, if
    // there is a key; with neither, transfers are off.
    let by_address = pol.allow.iter().any(|n| n.contains(&peer));
    if !by_address && (pol.key.is_none() || !pol.allow.is_empty()) {
        info!(%peer, zone = %zone.origin, "transfer refused: address not allowed");
        return vec![error(id, Some(&q), ResponseCode::Refused)];
    }
    let mut signing = None;
    if let Some(signer) = &pol.key {
        let Some(tsig) = req.signature.as_deref() else {
            info!(%peer, zone = %zone.origin, "transfer refused: not signed with the zone's key");
            return vec![error(id, Some(&q), ResponseCode::Refused)];
        };
        match check_tsig(signer, tsig, packet, now, &policy.replays) {
            Ok(mac) => signing = Some((signer, mac)),
            Err(refusal) => {
                info!(%peer, zone = %zone.origin, error = ?refusal.error, "transfer refused: TSIG {}", refusal.why);
                return vec![tsig_error(id, &q, tsig, &refusal, signer, now)];
            }
        }
    }
    let mut messages = build(zone, id, &q);
    if let Some((signer, mac)) = signing {
        if let Err(e) = sign_all(&mut messages, signer, &mac, now) {
            tracing::error!(%peer, zone = %zone.origin, error = %e, "transfer not sent: signing failed");
            return vec![error(id, Some(&q), ResponseCode::ServFail)];
        }
    }
    info!(%peer, zone = %zone.origin, serial = zone.serial(), messages = messages.len(), signed = pol.key.is_some(), "zone transferred");
    messages
}

/// Why a signed request is refused: its TSIG error, and whether the error answer is signed
/// (only BADTIME's is: the MAC verified, so the client can trust the server's clock in it).
#[derive(Debug)]
struct Refusal {
    error: TsigError,
    why: &'static str,
    /// The request's MAC, when it verified.
    request_mac: Option<Vec<u8>>,
}

/// Verifies a request's TSIG (RFC 8945 §5.2): the key, the MAC, then the time, within the
/// request's fudge and never more than mailns's own [`FUDGE`] (a client cannot widen the window
/// by asking), and not a replay of a request already seen inside that window. The request's
/// MAC on success.
fn check_tsig(
    signer: &TSigner,
    tsig: &Record<TSIG>,
    packet: &[u8],
    now: u64,
    replays: &Replays,
) -> Result<Vec<u8>, Refusal> {
    let refuse = |error, why, request_mac| Refusal {
        error,
        why,
        request_mac,
    };
    if tsig.name != *signer.signer_name() || tsig.data.algorithm != *signer.algorithm() {
        return Err(refuse(TsigError::BadKey, "key is not the zone's", None));
    }
    let (mac, signed_at) = match signer.verify_message_byte(packet, None, true) {
        Ok((mac, signed_at, _)) => (mac, signed_at),
        Err(_) => return Err(refuse(TsigError::BadSig, "does not verify", None)),
    };
    let fudge = u64::from(tsig.data.fudge.min(FUDGE));
    if now.abs_diff(signed_at) > fudge {
        return Err(refuse(
            TsigError::BadTime,
            "time is outside the fudge",
            Some(mac),
        ));
    }
    if !replays.first_sight(&mac, signed_at, now) {
        return Err(refuse(
            TsigError::BadTime,
            "request was seen before (a replay)",
            Some(mac),
        ));
    }
    Ok(mac)
}

/// MACs of signed requests seen inside the fudge window: a request sent again inside it is a
/// replay (RFC 8945 §5.2.3 asks servers to guard against them). Bounded: entries older than the
/// window are forgotten, and at most [`MAX_REPLAYS`] are kept.
#[derive(Debug, Default)]
pub struct Replays(std::sync::Mutex<std::collections::VecDeque<(u64, Vec<u8>)>>);

/// Signed requests remembered at most.
const MAX_REPLAYS: usize = 4096;

impl Replays {
    /// Records `mac` (signed at `signed_at`); false if it was already seen.
    fn first_sight(&self, mac: &[u8], signed_at: u64, now: u64) -> bool {
        let mut seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let horizon = now.saturating_sub(2 * u64::from(FUDGE));
        seen.retain(|(t, _)| *t >= horizon);
        if seen.iter().any(|(_, m)| m == mac) {
            return false;
        }
        if seen.len() >= MAX_REPLAYS {
            seen.pop_front();
        }
        seen.push_back((signed_at, mac.to_vec()));
        true
    }
}

/// NOTAUTH with the TSIG error record (RFC 8945 §5.3.2): BADKEY and BADSIG unsigned (empty
/// MAC), BADTIME signed over the request's MAC, carrying the server's time in Other Data.
fn tsig_error(
    id: u16,
    q: &Query,
    request: &Record<TSIG>,
    refusal: &Refusal,
    signer: &TSigner,
    now: u64,
) -> Vec<u8> {
    let mut msg = error(id, Some(q), ResponseCode::NotAuth);
    let other = if refusal.error == TsigError::BadTime {
        now.to_be_bytes()
            .get(2..)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let stub = TSIG::new(
        request.data.algorithm.clone(),
        request.data.time,
        request.data.fudge,
        Vec::new(),
        id,
        Some(refusal.error),
        other,
    );
    let mac = match &refusal.request_mac {
        Some(req_mac) => signer
            .encode_response_tbs(req_mac, &msg, &stub)
            .ok()
            .and_then(|tbs| signer.sign(&tbs).ok())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let record = make_tsig_record(request.name.clone(), stub.set_mac(mac));
    append_record(&mut msg, &record);
    msg
}

/// Appends `record` to the additional section of the encoded message `msg`.
fn append_record(msg: &mut Vec<u8>, record: &Record<TSIG>) -> bool {
    let mut rr = Vec::new();
    if record.emit(&mut BinEncoder::new(&mut rr)).is_err() {
        return false;
    }
    let Some(count) = msg
        .get_mut(10..12)
        .and_then(|c| <&mut [u8; 2]>::try_from(c).ok())
    else {
        return false;
    };
    let arcount = u16::from_be_bytes([count[0], count[1]]).saturating_add(1);
    count.copy_from_slice(&arcount.to_be_bytes());
    msg.extend_from_slice(&rr);
    true
}

/// The zone's records as transfer messages: SOA, every other record, SOA.
fn build(zone: &Zone, id: u16, q: &Query) -> Vec<Vec<u8>> {
    let mut records: Vec<&Record> = vec![&zone.soa];
    for (_, node) in zone.iter_nodes() {
        for set in &node.rrsets {
            if set.rtype != RecordType::SOA {
                records.extend(&set.records);
            }
        }
    }
    records.push(&zone.soa);
    let mut out = Vec::new();
    let mut msg = response(id, Some(q));
    let mut size = 0;
    for r in records {
        let len = r.to_bytes().map_or(512, |b| b.len());
        if !msg.answers.is_empty() && size + len > MESSAGE_BUDGET {
            out.push(encode(&msg));
            // RFC 5936 §2.2: the question is in the first message only.
            msg = response(id, None);
            size = 0;
        }
        msg.answers.push(r.clone());
        size += len;
    }
    out.push(encode(&msg));
    debug!(zone = %zone.origin, messages = out.len(), "transfer built");
    out
}

fn response(id: u16, q: Option<&Query>) -> Message {
    let mut m = Message::new(id, MessageType::Response, OpCode::Query);
    m.metadata.authoritative = true;
    if let Some(q) = q {
        m.add_query(q.clone());
    }
    m
}

fn encode(m: &Message) -> Vec<u8> {
    m.to_vec().unwrap_or_default()
}

fn error(id: u16, q: Option<&Query>, rcode: ResponseCode) -> Vec<u8> {
    let mut m = response(id, q);
    m.metadata.authoritative = false;
    m.metadata.response_code = rcode;
    encode(&m)
}

fn packet_id(p: &[u8]) -> u16 {
    crate::query::wire::u16_at(p, 0).unwrap_or(0)
}

/// Why a transfer's messages could not be signed: the transfer is then not sent at all.
#[derive(Debug, thiserror::Error)]
enum SignError {
    /// The first message's to-be-signed data could not be encoded.
    #[error("TSIG encoding: {0}")]
    Tbs(#[from] hickory_proto::ProtoError),
    /// The MAC could not be computed.
    #[error("TSIG signing: {0}")]
    Mac(#[from] hickory_proto::dnssec::DnsSecError),
    /// The signed message did not fit (or was empty).
    #[error("message {0} could not be encoded")]
    Encode(usize),
}

/// Signs each message (RFC 8945 §5.3.1): the first over the request's MAC, the message and the
/// full TSIG variables; each later one over the previous MAC, the message and the timers.
///
/// # Errors
/// A message that could not be signed: the transfer must not go out partly unsigned.
fn sign_all(
    messages: &mut [Vec<u8>],
    signer: &TSigner,
    request_mac: &[u8],
    now: u64,
) -> Result<(), SignError> {
    let mut prev = request_mac.to_vec();
    for (i, msg) in messages.iter_mut().enumerate() {
        let id = packet_id(msg);
        let stub = TSIG::new(
            signer.algorithm().clone(),
            now,
            signer.fudge(),
            Vec::new(),
            id,
            None,
            Vec::new(),
        );
        let tbs = if i == 0 {
            signer.encode_response_tbs(&prev, msg, &stub)?
        } else {
            let mut t = Vec::with_capacity(prev.len() + msg.len() + 10);
            t.extend_from_slice(&(prev.len() as u16).to_be_bytes());
            t.extend_from_slice(&prev);
            t.extend_from_slice(msg);
            t.extend_from_slice(&((now >> 32) as u16).to_be_bytes());
            t.extend_from_slice(&(now as u32).to_be_bytes());
            t.extend_from_slice(&signer.fudge().to_be_bytes());
            t
        };
        let mac = signer.sign(&tbs)?;
        let record = make_tsig_record(signer.signer_name().clone(), stub.set_mac(mac.clone()));
        if msg.is_empty() || !append_record(msg, &record) {
            return Err(SignError::Encode(i));
        }
        prev = mac;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
    use hickory_proto::rr::Name;

    use super::*;

    fn zone(extra: usize) -> Zone {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("z.zone");
        let mut f = std::fs::File::create(&p).unwrap();
        writeln!(f, "$TTL 60\n@ SOA ns h 7 2 3 4 5\n@ NS ns\nns A 127.0.0.1").unwrap();
        for i in 0..extra {
            writeln!(f, "h{i} A 127.0.{}.{}", i / 250, i % 250 + 1).unwrap();
        }
        drop(f);
        let mut z = crate::zone::load_zone(&p, &Name::from_ascii("z.test.").unwrap())
            .unwrap()
            .0;
        // Every test zone is the policy's zone entry (see `policy`).
        z.file = "/z.zone".into();
        z
    }

    fn request(key: Option<&TSigner>, now: u64) -> Vec<u8> {
        let mut m = Message::new(77, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("z.test.").unwrap(),
            RecordType::AXFR,
        ));
        if let Some(k) = key {
            let (sig, _) = k.sign_message(&m, now).unwrap();
            m.signature = Some(sig);
        }
        m.to_vec().unwrap()
    }

    fn policy(allow: &[&str], key: Option<TSigner>) -> TransferPolicy {
        TransferPolicy {
            zones: vec![ZonePolicy {
                origin: wire_lower(&Name::from_ascii("z.test.").unwrap()),
                file: "/z.zone".into(),
                allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
                key,
            }],
            views: crate::config::view::Views::single(1),
            replays: Replays::default(),
        }
    }

    fn tsig_error_of(m: &[u8]) -> Option<TsigError> {
        Message::from_vec(m).unwrap().signature?.data.error
    }

    fn rcode(m: &[u8]) -> ResponseCode {
        Message::from_vec(m).unwrap().metadata.response_code
    }

    #[test]
    fn a_large_zone_is_split_and_starts_and_ends_with_the_soa() {
        let z = zone(20_000);
        let msgs = answer(
            &[z],
            &policy(&["127.0.0.0/8"], None),
            &request(None, 0),
            "127.0.0.9".parse().unwrap(),
            0,
        );
        assert!(msgs.len() > 10, "{} messages", msgs.len());
        let mut all = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            assert!(m.len() < 65_535);
            let parsed = Message::from_vec(m).unwrap();
            assert_eq!(parsed.metadata.id, 77);
            assert_eq!(parsed.queries.len(), usize::from(i == 0));
            all.extend(parsed.answers);
        }
        assert_eq!(all.len(), 20_000 + 2 + 2, "SOA, NS, A, 20,000 hosts, SOA");
        assert_eq!(all.first().unwrap().record_type(), RecordType::SOA);
        assert_eq!(all.last().unwrap().record_type(), RecordType::SOA);
    }

    #[test]
    fn access_rules() {
        let z = zone(3);
        let key = || {
            TSigner::new(
                vec![7; 32],
                TsigAlgorithm::HmacSha256,
                Name::from_ascii("k.").unwrap(),
                300,
            )
            .unwrap()
        };
        let other = TSigner::new(
            vec![8; 32],
            TsigAlgorithm::HmacSha256,
            Name::from_ascii("k.").unwrap(),
            300,
        )
        .unwrap();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let now = 1_800_000_000;
        let zs = std::slice::from_ref(&z);
        // Nothing configured: refused.
        let r = answer(zs, &policy(&[], None), &request(None, now), ip, now);
        assert_eq!(rcode(&r[0]), ResponseCode::Refused);
        // Address not listed.
        let r = answer(
            zs,
            &policy(&["127.0.0.1/32"], None),
            &request(None, now),
            ip,
            now,
        );
        assert_eq!(rcode(&r[0]), ResponseCode::Refused);
        // Key required: unsigned refused, wrong key or stale time NOTAUTH, right key signed back.
        let p = policy(&[], Some(key()));
        assert_eq!(
            rcode(&answer(zs, &p, &request(None, now), ip, now)[0]),
            ResponseCode::Refused
        );
        let wrong = answer(zs, &p, &request(Some(&other), now), ip, now);
        assert_eq!(rcode(&wrong[0]), ResponseCode::NotAuth);
        assert_eq!(tsig_error_of(&wrong[0]), Some(TsigError::BadSig));
        let stale_req = request(Some(&key()), now - 1000);
        let stale = answer(zs, &p, &stale_req, ip, now);
        assert_eq!(rcode(&stale[0]), ResponseCode::NotAuth);
        assert_eq!(tsig_error_of(&stale[0]), Some(TsigError::BadTime));
        // BADTIME is signed over the request's MAC and carries the server's time.
        let (stale_mac, _, _) = key().verify_message_byte(&stale_req, None, true).unwrap();
        key()
            .verify_message_byte(&stale[0], Some(&stale_mac), true)
            .expect("BADTIME answer verifies");
        let m = Message::from_vec(&stale[0]).unwrap();
        let other_data = &m.signature.as_ref().unwrap().data.other;
        assert_eq!(other_data.len(), 6);
        assert_eq!(
            u64::from_be_bytes([
                0,
                0,
                other_data[0],
                other_data[1],
                other_data[2],
                other_data[3],
                other_data[4],
                other_data[5]
            ]),
            now
        );
        // A client's own large fudge does not widen the window past 300 s.
        let wide = TSigner::new(
            vec![7; 32],
            TsigAlgorithm::HmacSha256,
            Name::from_ascii("k.").unwrap(),
            65_535,
        )
        .unwrap();
        let r = answer(zs, &p, &request(Some(&wide), now - 1000), ip, now);
        assert_eq!(tsig_error_of(&r[0]), Some(TsigError::BadTime));
        // Another key name: BADKEY.
        let stranger = TSigner::new(
            vec![7; 32],
            TsigAlgorithm::HmacSha256,
            Name::from_ascii("other.").unwrap(),
            300,
        )
        .unwrap();
        let r = answer(zs, &p, &request(Some(&stranger), now), ip, now);
        assert_eq!(tsig_error_of(&r[0]), Some(TsigError::BadKey));
        let req = request(Some(&key()), now);
        let ok = answer(zs, &p, &req, ip, now);
        assert_eq!(rcode(&ok[0]), ResponseCode::NoError);
        // The same signed request again: a replay.
        let replay = answer(zs, &p, &req, ip, now + 1);
        assert_eq!(tsig_error_of(&replay[0]), Some(TsigError::BadTime));
        // The response verifies against the request's MAC.
        let (req_mac, _, _) = key().verify_message_byte(&req, None, true).unwrap();
        let (mac, _, _) = key()
            .verify_message_byte(&ok[0], Some(&req_mac), true)
            .expect("signed response verifies");
        assert!(!mac.is_empty());
        // A zone with both a list and a key: an unlisted address is refused, signed or not.
        let both = policy(&["127.0.0.1/32"], Some(key()));
        let r = answer(zs, &both, &request(Some(&key()), now), ip, now);
        assert_eq!(rcode(&r[0]), ResponseCode::Refused);
    }
}
