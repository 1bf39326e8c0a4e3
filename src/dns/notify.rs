//! NOTIFY (RFC 1996): tell secondaries a zone's serial changed, so they transfer it at once
//! instead of at their next refresh.
//!
//! Sent over UDP to each configured secondary when mailns starts and after a reload that changed
//! the serial, retried with a doubling wait (1, 2, 4, 8, 16 s) until the secondary acknowledges.
//! Signed with the zone's transfer key when it has one.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, Record, RecordType, TSigner};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Attempts per secondary.
const ATTEMPTS: u32 = 5;

/// Notifies every target of `soa`'s zone, each in its own task, until acknowledged, out of
/// attempts, or `token` is cancelled.
pub fn spawn(
    soa: &Record,
    targets: &[SocketAddr],
    signer: Option<TSigner>,
    token: &CancellationToken,
) {
    for &target in targets {
        let (soa, signer, token) = (soa.clone(), signer.clone(), token.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = notify_one(soa, target, signer) => {}
                () = token.cancelled() => {}
            }
        });
    }
}

/// The NOTIFY message for `soa`'s zone: the question is (apex, SOA), the answer the new SOA;
/// with the request's MAC when it is signed (the acknowledgement must be signed over it).
fn message(soa: &Record, id: u16, signer: Option<&TSigner>) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    m.add_query(Query::query(soa.name.clone(), RecordType::SOA));
    m.answers.push(soa.clone());
    let mut mac = None;
    if let Some(s) = signer {
        let (sig, _) = s.sign_message(&m, unix_now()).ok()?;
        mac = Some(sig.data.mac.clone());
        m.signature = Some(sig);
    }
    Some((m.to_vec().ok()?, mac))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// True when `reply` acknowledges NOTIFY `id`: a NOTIFY response with that ID and, when the
/// NOTIFY was signed, a TSIG that verifies over the request's MAC, signed within the fudge. An
/// unsigned or forged acknowledgement is not one: the retries go on.
pub fn acknowledges(
    reply: &[u8],
    id: u16,
    signer: Option<&TSigner>,
    request_mac: Option<&[u8]>,
) -> bool {
    let Ok(m) = Message::from_vec(reply) else {
        return false;
    };
    if m.metadata.id != id
        || m.metadata.message_type != MessageType::Response
        || m.metadata.op_code != OpCode::Notify
    {
        return false;
    }
    match (signer, request_mac) {
        (Some(s), Some(mac)) => s
            .verify_message_byte(reply, Some(mac), true)
            .is_ok_and(|(_, at, _)| unix_now().abs_diff(at) <= u64::from(s.fudge())),
        _ => true,
    }
}

async fn notify_one(soa: Record, target: SocketAddr, signer: Option<TSigner>) {
    let zone: Name = soa.name.clone();
    let bind = if target.is_ipv4() {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(error) => {
            warn!(%zone, %target, %error, "notify: cannot open a socket");
            return;
        }
    };
    let id: u16 = rand::random();
    let Some((packet, request_mac)) = message(&soa, id, signer.as_ref()) else {
        warn!(%zone, %target, "notify: cannot encode the message");
        return;
    };
    let mut buf = vec![0u8; 4096];
    for attempt in 0..ATTEMPTS {
        if let Err(error) = sock.send_to(&packet, target).await {
            warn!(%zone, %target, %error, "notify: send failed");
        }
        let wait = Duration::from_secs(1 << attempt);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let got = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await;
            let Ok(Ok((n, from))) = got else { break };
            if from != target {
                continue;
            }
            let reply = buf.get(..n).unwrap_or_default();
            if acknowledges(reply, id, signer.as_ref(), request_mac.as_deref()) {
                info!(%zone, %target, serial = serial_of(&soa), "notify acknowledged");
                return;
            }
        }
    }
    warn!(%zone, %target, attempts = ATTEMPTS, "notify not acknowledged; the secondary will pick the change up at its next refresh");
}

fn serial_of(soa: &Record) -> u32 {
    crate::zone::soa_of(soa).map_or(0, |s| s.serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soa() -> Record {
        Record::from_rdata(
            Name::from_ascii("z.test.").unwrap(),
            60,
            hickory_proto::rr::RData::SOA(hickory_proto::rr::rdata::SOA::new(
                Name::from_ascii("ns.z.test.").unwrap(),
                Name::from_ascii("h.z.test.").unwrap(),
                42,
                1,
                2,
                3,
                4,
            )),
        )
    }

    #[test]
    fn signed_notifies_need_signed_acknowledgements() {
        use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
        let key = |secret: u8| {
            TSigner::new(
                vec![secret; 32],
                TsigAlgorithm::HmacSha256,
                Name::from_ascii("k.").unwrap(),
                300,
            )
            .unwrap()
        };
        let soa = soa();
        let (_, mac) = message(&soa, 9, Some(&key(1))).unwrap();
        let mac = mac.unwrap();
        let ack = Message::new(9, MessageType::Response, OpCode::Notify);
        let unsigned = ack.to_vec().unwrap();
        assert!(
            !acknowledges(&unsigned, 9, Some(&key(1)), Some(&mac)),
            "unsigned"
        );
        let signed_by = |k: &TSigner| {
            let tbs_stub = hickory_proto::rr::rdata::tsig::TSIG::new(
                k.algorithm().clone(),
                unix_now(),
                300,
                Vec::new(),
                9,
                None,
                Vec::new(),
            );
            let mut bytes = ack.to_vec().unwrap();
            let tbs = k.encode_response_tbs(&mac, &bytes, &tbs_stub).unwrap();
            let record = hickory_proto::rr::rdata::tsig::make_tsig_record(
                k.signer_name().clone(),
                tbs_stub.set_mac(k.sign(&tbs).unwrap()),
            );
            let mut rr = Vec::new();
            hickory_proto::serialize::binary::BinEncodable::emit(
                &record,
                &mut hickory_proto::serialize::binary::BinEncoder::new(&mut rr),
            )
            .unwrap();
            bytes[11] += 1;
            bytes.extend_from_slice(&rr);
            bytes
        };
        assert!(
            !acknowledges(&signed_by(&key(2)), 9, Some(&key(1)), Some(&mac)),
            "forged"
        );
        assert!(acknowledges(
            &signed_by(&key(1)),
            9,
            Some(&key(1)),
            Some(&mac)
        ));
        assert!(
            !acknowledges(&signed_by(&key(1)), 10, Some(&key(1)), Some(&mac)),
            "other id"
        );
        assert!(
            acknowledges(&unsigned, 9, None, None),
            "unsigned zones take any ack"
        );
    }

    #[tokio::test]
    async fn retries_until_acknowledged() {
        let secondary = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = secondary.local_addr().unwrap();
        let soa = soa();
        let task = tokio::spawn(notify_one(soa, target, None));
        let mut buf = vec![0u8; 4096];
        // Ignore the first attempt; acknowledge the retry.
        let (n, _) = secondary.recv_from(&mut buf).await.unwrap();
        let first = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(first.metadata.op_code, OpCode::Notify);
        assert!(first.metadata.authoritative);
        assert_eq!(first.queries[0].query_type(), RecordType::SOA);
        let (n, from) = secondary.recv_from(&mut buf).await.unwrap();
        let retry = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(retry.metadata.id, first.metadata.id);
        let mut ack = Message::new(retry.metadata.id, MessageType::Response, OpCode::Notify);
        ack.metadata.authoritative = true;
        secondary
            .send_to(&ack.to_vec().unwrap(), from)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops once acknowledged")
            .unwrap();
    }
}
