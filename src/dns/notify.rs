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

/// The NOTIFY message for `soa`'s zone: the question is (apex, SOA), the answer the new SOA.
fn message(soa: &Record, id: u16, signer: Option<&TSigner>) -> Option<Vec<u8>> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    m.add_query(Query::query(soa.name.clone(), RecordType::SOA));
    m.answers.push(soa.clone());
    if let Some(s) = signer {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (sig, _) = s.sign_message(&m, now).ok()?;
        m.signature = Some(sig);
    }
    m.to_vec().ok()
}

async fn notify_one(soa: Record, target: SocketAddr, signer: Option<TSigner>) {
    let zone: Name = soa.name.clone();
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(error) => {
            warn!(%zone, %target, %error, "notify: cannot open a socket");
            return;
        }
    };
    let id: u16 = rand::random();
    let Some(packet) = message(&soa, id, signer.as_ref()) else {
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
            let acked = Message::from_vec(&buf[..n]).is_ok_and(|m| {
                m.metadata.id == id
                    && m.metadata.message_type == MessageType::Response
                    && m.metadata.op_code == OpCode::Notify
            });
            if acked {
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

    #[tokio::test]
    async fn retries_until_acknowledged() {
        let secondary = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = secondary.local_addr().unwrap();
        let soa = Record::from_rdata(
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
        );
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
