//! ns1 and ns2 from the same git repository: two mailns processes with the same config, probing
//! the same simulated servers independently, give the same answer sets and the same source-hash
//! relay picks, before and after a server dies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mailns::sim::{self, Proto, Sim};

/// Which server each of `n` clients reaches through `relay`.
fn picks(relay: SocketAddr, n: u32) -> BTreeMap<IpAddr, String> {
    (0..n)
        .map(|i| {
            let c = client(i);
            (c, hello(relay, c).expect("relayed").0)
        })
        .collect()
}

#[test]
fn two_instances_answer_and_pick_alike() {
    let rt = sim::runtime();
    let net = 175u8;
    let ip = |h: u8| IpAddr::from([127, net, 0, h]);
    let (mut http, mut echo): (Vec<Arc<Sim>>, Vec<Arc<Sim>>) = (vec![], vec![]);
    for h in 1..=3u8 {
        let port = |v: &Vec<Arc<Sim>>| v.first().map_or(0, |s| s.addr.port());
        http.push(Sim::start(&rt, ip(h), port(&http), Proto::Http));
        echo.push(Sim::start(
            &rt,
            ip(h),
            port(&echo),
            Proto::Echo(format!("cas0{h}")),
        ));
    }
    let zone = format!(
        "$TTL 300\n@ SOA ns1 h 1 3600 900 1209600 60\n@ NS ns1\nns1 A 127.0.0.53\n\
         owa 60 A {}\nowa 60 A {}\nowa 60 A {}\n",
        ip(1),
        ip(2),
        ip(3)
    );
    let servers: String = (1..=3u8)
        .map(|h| {
            format!(
                "[[server]]\nname = \"cas0{h}\"\naddresses = [\"{}\"]\n",
                ip(h)
            )
        })
        .collect();
    // One config text for both, as from one repository.
    let config = format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n\n[health]\ninterval = \"1s\"\ntimeout = \"400ms\"\nfast_interval = \"250ms\"\n\n\
         [[zone]]\nname = \"mail.test\"\nfile = \"mail.test.zone\"\n\n\
         [[check]]\nname = \"owa\"\nkind = \"http\"\nport = {}\npath = \"/owa/healthcheck.htm\"\n\n{servers}\n\
         [[service]]\nname = \"owa.mail.test\"\nchecks = [\"owa\"]\n\n\
         [[relay]]\nname = \"rpc\"\nlisten = [\"127.0.0.1:0\"]\nservers = [\"cas01\", \"cas02\", \"cas03\"]\nbackend_port = {}\nchecks = [\"owa\"]\nhash_key = \"contoso-mail\"\n",
        http[0].addr.port(),
        echo[0].addr.port()
    );
    let start = || {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mail.test.zone"), &zone).unwrap();
        Mailns::start_config(dir, &config)
    };
    let (ns1, ns2) = (start(), start());
    let all: Vec<String> = (1..=3).map(|h| ip(h).to_string()).collect();
    assert_eq!(a_set(ns1.addr, "owa.mail.test."), all);
    assert_eq!(a_set(ns2.addr, "owa.mail.test."), all);
    let (r1, r2) = (ns1.relay("rpc")[0], ns2.relay("rpc")[0]);
    let before = picks(r1, 300);
    assert_eq!(
        before,
        picks(r2, 300),
        "same source-hash picks on both nodes"
    );
    let mut spread: BTreeMap<&String, u32> = BTreeMap::new();
    for s in before.values() {
        *spread.entry(s).or_default() += 1;
    }
    assert_eq!(spread.len(), 3, "every server gets clients: {spread:?}");

    // cas02 dies: both drop it from DNS and move the same clients to the same servers.
    http[1].kill();
    echo[1].kill();
    let without = vec![ip(1).to_string(), ip(3).to_string()];
    wait_for(Duration::from_secs(5), "both drop cas02", || {
        a_set(ns1.addr, "owa.mail.test.") == without && a_set(ns2.addr, "owa.mail.test.") == without
    });
    let after = picks(r1, 300);
    assert_eq!(after, picks(r2, 300), "same picks after the failure");
    for (c, s) in &before {
        if s != "cas02" {
            assert_eq!(&after[c], s, "only cas02's clients move");
        }
    }
}
