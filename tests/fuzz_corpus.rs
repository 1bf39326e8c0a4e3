//! Replays every committed fuzz input (`fuzz/corpus/<target>/` and the crashes kept in
//! `fuzz/regressions/<target>/`) through the fuzz targets' own bodies, on the stable toolchain:
//! CI keeps every past crash fixed without running the fuzzer. See FUZZING.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

use std::path::Path;

#[path = "../fuzz/src/lib.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    reason = "the fuzz targets' library, compiled into this test: not all of it is used here"
)]
mod targets;

/// Runs `body` on every input of `target`; a failure names the file.
fn replay(target: &str, body: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    let mut failed = Vec::new();
    for dir in [root.join("corpus"), root.join("regressions")] {
        let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if std::panic::catch_unwind(|| body(&data)).is_err() {
                failed.push(file.display().to_string());
            }
            count += 1;
        }
    }
    assert!(count > 0, "no committed inputs for {target}");
    assert!(
        failed.is_empty(),
        "{target}: {} of {count} inputs fail: {failed:#?}",
        failed.len()
    );
}

#[test]
fn dns_udp() {
    replay("dns_udp", targets::dns_udp);
}

#[test]
fn dns_tcp() {
    replay("dns_tcp", targets::dns_tcp);
}

#[test]
fn xfr() {
    replay("xfr", targets::xfr);
}

#[test]
fn notify() {
    replay("notify", targets::notify);
}

#[test]
fn sni() {
    replay("sni", targets::sni);
}

#[test]
fn redirect() {
    replay("redirect", targets::redirect);
}

#[test]
fn config() {
    replay("config", targets::config);
}

#[test]
fn zone_file() {
    replay("zone_file", targets::zone_file);
}

#[test]
fn admin_route() {
    replay("admin_route", targets::admin_route);
}
