//! Knot DNS as a reference server, and what the differential tests compare between it and
//! mailns.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{Record, RecordType};

use super::{free_port, query, require_tool, udp_raw};

/// A knotd serving zones from a folder on 127.0.0.1; killed when dropped.
pub struct Knot {
    child: Child,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Knot {
    /// Starts knotd on `zones` (origin, file name) whose files are in `src`, copied with every
    /// other file there (`$INCLUDE`s); returns once every zone answers its SOA.
    pub fn start(src: &Path, zones: &[(String, String)]) -> Self {
        let knotd = require_tool("knotd");
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(src).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        let port = free_port();
        let d = dir.path().display();
        let mut conf = format!(
            "server:\n  rundir: \"{d}\"\n  listen: 127.0.0.1@{port}\n  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\n\
             log:\n  - target: stderr\n    any: warning\n\
             database:\n  storage: \"{d}/db\"\n\
             template:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\n    semantic-checks: off\n\
             zone:\n"
        );
        for (origin, file) in zones {
            conf.push_str(&format!("  - domain: \"{origin}\"\n    file: \"{file}\"\n"));
        }
        let conf_path = dir.path().join("knot.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(knotd)
            .arg("-c")
            .arg(&conf_path)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start knotd");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let knot = Knot {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        for (origin, _) in zones {
            let apex = format!("{}.", origin.trim_end_matches('.'));
            loop {
                if let Some(raw) = udp_raw(addr, &query(&apex, RecordType::SOA, None)) {
                    if Message::from_vec(&raw).is_ok_and(|m| !m.answers.is_empty()) {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "knotd did not start serving {origin}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        knot
    }
}

/// A record as text, lowercased: names compare case-insensitively, and both servers compress
/// rdata names into the client's question, whose letter case varies.
pub fn norm(r: &Record) -> String {
    format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data).to_ascii_lowercase()
}

/// What must be equal between the two servers.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub rcode: u16,
    pub aa: bool,
    pub tc: bool,
    pub answer: BTreeSet<String>,
    /// Compared for negative answers and referrals only.
    pub authority: Option<BTreeSet<String>>,
    pub additional_addresses: BTreeSet<String>,
    pub has_opt: bool,
    /// The DO bit echoed in the reply's OPT (RFC 3225).
    pub dnssec_ok: bool,
}

/// The comparable parts of a raw reply.
pub fn outcome(raw: &[u8]) -> Outcome {
    let m = Message::from_vec(raw).expect("parsable response");
    let tc = m.metadata.truncation;
    let negative = m.answers.is_empty();
    Outcome {
        rcode: u16::from(m.metadata.response_code),
        aa: m.metadata.authoritative,
        tc,
        // A truncated reply's sections are not compared (servers may send a partial set).
        answer: if tc {
            BTreeSet::new()
        } else {
            m.answers.iter().map(norm).collect()
        },
        authority: (negative && !tc).then(|| m.authorities.iter().map(norm).collect()),
        additional_addresses: if tc {
            BTreeSet::new()
        } else {
            m.additionals
                .iter()
                .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                .map(norm)
                .collect()
        },
        has_opt: m.edns.is_some(),
        dnssec_ok: m.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
    }
}
