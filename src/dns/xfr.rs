//! Zone transfers (AXFR, and IXFR answered with the full zone) over TCP, split into as many
//! messages as needed (RFC 5936), optionally TSIG-signed (RFC 8945), from an allow-list.
//!
//! A transfer carries the zone file's static truth: service names carry their full address set,
//! so a secondary is the plain round-robin layer under mailns's health-driven answers.

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{make_tsig_record, TSIG};
use hickory_proto::rr::{Record, RecordType, TSigner};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use ipnet::IpNet;
use tracing::{debug, info};

use crate::config::ZoneConfig;
use crate::zone::{wire_lower, Zone};

/// Records per message are added until this many uncompressed bytes (compression makes the
/// message smaller); well under the 65,535-byte TCP message limit.
const MESSAGE_BUDGET: usize = 16 * 1024;
/// Allowed clock skew of a signed request (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;

/// Who may transfer one zone.
#[derive(Clone)]
struct ZonePolicy {
    origin: Box<[u8]>,
    allow: Vec<IpNet>,
    key: Option<TSigner>,
}

/// Transfer permissions of every zone, from the config (swapped on reload).
#[derive(Clone, Default)]
pub struct TransferPolicy {
    zones: Vec<ZonePolicy>,
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
    pub fn new(zones: &[ZoneConfig]) -> Self {
        Self {
            zones: zones
                .iter()
                .map(|z| ZonePolicy {
                    origin: wire_lower(&z.origin),
                    allow: z.allow_transfer.clone(),
                    key: z.transfer_key.as_ref().and_then(|k| {
                        TSigner::new(k.secret.clone(), k.algorithm.clone(), k.name.clone(), FUDGE)
                            .ok()
                    }),
                })
                .collect(),
        }
    }

    /// The signer for zone `origin`'s messages (NOTIFY), if it has a key.
    pub fn signer(&self, origin: &[u8]) -> Option<&TSigner> {
        self.zones
            .iter()
            .find(|z| *z.origin == *origin)
            .and_then(|z| z.key.as_ref())
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
    let (Some(zone), Some(pol)) = (
        zones.iter().find(|z| z.origin_wire == origin),
        policy.zones.iter().find(|p| p.origin == origin),
    ) else {
        return vec![error(id, Some(&q), ResponseCode::NotAuth)];
    };
    // Access: the address must be listed, if there is a list; the signature must verify, if
    // there is a key; with neither, transfers are off.
    let by_address = pol.allow.iter().any(|n| n.contains(&peer));
    if !by_address && (pol.key.is_none() || !pol.allow.is_empty()) {
        info!(%peer, zone = %zone.origin, "transfer refused: address not allowed");
        return vec![error(id, Some(&q), ResponseCode::Refused)];
    }
    let mut signing = None;
    if let Some(signer) = &pol.key {
        if req.signature.is_none() {
            info!(%peer, zone = %zone.origin, "transfer refused: not signed with the zone's key");
            return vec![error(id, Some(&q), ResponseCode::Refused)];
        }
        match signer.verify_message_byte(packet, None, true) {
            Ok((mac, _, valid)) if valid.contains(&now) => signing = Some((signer, mac)),
            Ok(_) => {
                info!(%peer, zone = %zone.origin, "transfer refused: TSIG time outside the fudge");
                return vec![error(id, Some(&q), ResponseCode::NotAuth)];
            }
            Err(e) => {
                info!(%peer, zone = %zone.origin, error = %e, "transfer refused: TSIG does not verify");
                return vec![error(id, Some(&q), ResponseCode::NotAuth)];
            }
        }
    }
    let mut messages = build(zone, id, &q);
    if let Some((signer, mac)) = signing {
        sign_all(&mut messages, signer, &mac, now);
    }
    info!(%peer, zone = %zone.origin, serial = zone.serial(), messages = messages.len(), signed = pol.key.is_some(), "zone transferred");
    messages
}

/// The zone's records as transfer messages: SOA, every other record, SOA.
fn build(zone: &Zone, id: u16, q: &Query) -> Vec<Vec<u8>> {
    let mut records: Vec<&Record> = vec![&zone.soa];
    for node in zone.nodes.values() {
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
    p.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

/// Signs each message (RFC 8945 §5.3.1): the first over the request's MAC, the message and the
/// full TSIG variables; each later one over the previous MAC, the message and the timers.
fn sign_all(messages: &mut [Vec<u8>], signer: &TSigner, request_mac: &[u8], now: u64) {
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
            signer.encode_response_tbs(&prev, msg, &stub).ok()
        } else {
            let mut t = Vec::with_capacity(prev.len() + msg.len() + 10);
            t.extend_from_slice(&(prev.len() as u16).to_be_bytes());
            t.extend_from_slice(&prev);
            t.extend_from_slice(msg);
            t.extend_from_slice(&((now >> 32) as u16).to_be_bytes());
            t.extend_from_slice(&(now as u32).to_be_bytes());
            t.extend_from_slice(&signer.fudge().to_be_bytes());
            Some(t)
        };
        let Some(mac) = tbs.and_then(|t| signer.sign(&t).ok()) else {
            continue;
        };
        let record = make_tsig_record(signer.signer_name().clone(), stub.set_mac(mac.clone()));
        let mut rr = Vec::new();
        if record.emit(&mut BinEncoder::new(&mut rr)).is_err() {
            continue;
        }
        let Some(count) = msg.get_mut(10..12) else {
            continue;
        };
        let arcount = u16::from_be_bytes([count[0], count[1]]).saturating_add(1);
        count.copy_from_slice(&arcount.to_be_bytes());
        msg.extend_from_slice(&rr);
        prev = mac;
    }
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
        crate::zone::load_zone(&p, &Name::from_ascii("z.test.").unwrap())
            .unwrap()
            .0
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
                allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
                key,
            }],
        }
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
        let stale = answer(zs, &p, &request(Some(&key()), now - 1000), ip, now);
        assert_eq!(rcode(&stale[0]), ResponseCode::NotAuth);
        let req = request(Some(&key()), now);
        let ok = answer(zs, &p, &req, ip, now);
        assert_eq!(rcode(&ok[0]), ResponseCode::NoError);
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
