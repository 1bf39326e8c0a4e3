//! `mailns check`: every broken zone or config names the file, the line and what is wrong, exits 1,
//! and binds nothing; good files pass with exit 0.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

use std::path::Path;
use std::process::Command;

/// Lines 1-5 of every test zone: a valid apex.
const HEAD: &str = "$ORIGIN z.test.\n$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 60\n@ NS ns1\nns1 A 127.0.0.1\n";

/// Writes `zone` (and `extra` files) beside a config naming it, runs `mailns check`.
fn check(zone: &str, extra: &[(&str, &str)]) -> (i32, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("z.zone"), zone).unwrap();
    for (name, text) in extra {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let cfg = dir.path().join("mailns.toml");
    std::fs::write(&cfg, "[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n").unwrap();
    run_check(&cfg, dir)
}

fn run_check(cfg: &Path, dir: tempfile::TempDir) -> (i32, String, tempfile::TempDir) {
    let out = Command::new(env!("CARGO_BIN_EXE_mailns"))
        .args(["check", "--config"])
        .arg(cfg)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        dir,
    )
}

/// Asserts `mailns check` fails with exactly `file:line: message` among its lines.
fn expect(zone: &str, extra: &[(&str, &str)], file: &str, line: Option<usize>, message: &str) {
    let (code, out, dir) = check(zone, extra);
    assert_eq!(code, 1, "exit code; output:\n{out}");
    let path = dir.path().join(file);
    let want = match line {
        Some(l) => format!("{}:{l}: {message}", path.display()),
        None => format!("{}: {message}", path.display()),
    };
    assert!(
        out.lines()
            .any(|l| l == want
                || (message.ends_with('…') && l.starts_with(want.trim_end_matches('…')))),
        "expected line:\n{want}\ngot:\n{out}"
    );
}

macro_rules! broken {
    ($name:ident, $zone:expr, $line:expr, $msg:expr) => {
        #[test]
        fn $name() {
            expect(&$zone, &[], "z.zone", $line, $msg);
        }
    };
}

broken!(
    record_without_type,
    format!("{HEAD}www 3600 IN\n"),
    Some(6),
    "record for www.z.test. has no type (expected e.g. A, MX, TXT after the owner, TTL and class)"
);
broken!(
    bad_ipv4,
    format!("{HEAD}www A 127.0.0.300\n"),
    Some(6),
    "invalid IPv4 address '127.0.0.300'"
);
broken!(
    ipv4_in_aaaa,
    format!("{HEAD}www AAAA 127.0.0.1\n"),
    Some(6),
    "invalid IPv6 address '127.0.0.1'"
);
broken!(
    unknown_type,
    format!("{HEAD}www FOO bar\n"),
    Some(6),
    "unknown record type 'FOO'"
);
broken!(
    cname_and_other_data,
    format!("{HEAD}www CNAME ns1\nwww A 127.0.0.2\n"),
    Some(6),
    "www.z.test. has a CNAME and other data (A); a CNAME must stand alone (RFC 1034 §3.6.2)"
);
broken!(
    mx_target_is_cname,
    format!("{HEAD}@ MX 10 alias\nalias CNAME ns1\n"),
    Some(6),
    "MX target alias.z.test. is a CNAME; it must be a name with A/AAAA records (RFC 2181 §10.3)"
);
broken!(
    srv_target_is_cname,
    format!("{HEAD}alias CNAME ns1\n_autodiscover._tcp SRV 0 0 443 alias\n"),
    Some(7),
    "SRV target alias.z.test. is a CNAME; it must be a name with A/AAAA records (RFC 2181 §10.3)"
);
broken!(
    missing_soa,
    "$ORIGIN z.test.\n$TTL 300\n@ NS ns1\nns1 A 127.0.0.1\n",
    None,
    "zone z.test. has no SOA record at its apex"
);
broken!(
    missing_apex_ns,
    "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\nns1 A 127.0.0.1\n",
    None,
    "zone z.test. has no NS records at its apex"
);
broken!(
    owner_outside_zone,
    format!("{HEAD}www.other.test. A 127.0.0.1\n"),
    Some(6),
    "owner www.other.test. is outside the zone z.test."
);
broken!(
    unclosed_parenthesis,
    format!("{HEAD}www TXT ( \"a\"\n\"b\"\n"),
    Some(6),
    "'(' is never closed"
);
broken!(
    unterminated_quote,
    format!("{HEAD}www TXT \"abc\nx A 127.0.0.1\n"),
    Some(6),
    "unterminated quoted string"
);
broken!(
    bad_ttl,
    format!("{HEAD}www 12x A 127.0.0.1\n"),
    Some(6),
    "invalid TTL '12x': a TTL is a number of seconds, or a duration such as 1h30m or 2d"
);
broken!(
    ttl_too_large,
    format!("{HEAD}www 4294967295 A 127.0.0.1\n"),
    Some(6),
    "TTL 4294967295 is larger than 2147483647 (RFC 2181 §8)"
);
broken!(
    other_class,
    format!("{HEAD}www CH A 127.0.0.1\n"),
    Some(6),
    "class CH is not supported; mailns serves class IN only"
);
broken!(delegation_without_glue, format!("{HEAD}sub NS ns.sub\n"), Some(6),
    "delegation sub.z.test.: name server ns.sub.z.test. is inside the delegated zone but has no glue A/AAAA record");
broken!(data_below_delegation, format!("{HEAD}sub NS ns.other.test.\nwww.sub TXT \"x\"\n"), Some(7),
    "TXT record at www.sub.z.test. is at or below the delegation to sub.z.test. and would never be served");
broken!(
    soa_not_at_apex,
    format!("{HEAD}www SOA ns1 h 1 2 3 4 5\n"),
    Some(6),
    "SOA record at www.z.test. is not at the zone apex z.test."
);
broken!(
    unsupported_directive,
    format!("{HEAD}$GENERATE 1-10 host$ A 127.0.0.$\n"),
    Some(6),
    "unsupported directive $GENERATE"
);
broken!(
    blank_owner_first,
    "  A 127.0.0.1\n",
    Some(1),
    "record has no owner name and no previous record to take it from"
);
broken!(
    no_ttl_anywhere,
    "$ORIGIN z.test.\n@ SOA ns1 h 1 2 3 4 5\n",
    Some(2),
    "record has no TTL and none is set before it: add a $TTL line or a TTL to the record"
);
broken!(
    bad_mx_data,
    format!("{HEAD}@ MX ten mx\n"),
    Some(6),
    "invalid MX record data: …"
);
broken!(
    a_with_two_addresses,
    format!("{HEAD}www A 127.0.0.1 127.0.0.2\n"),
    Some(6),
    "A record takes exactly one address, found 2"
);
broken!(
    record_without_data,
    format!("{HEAD}www TXT\n"),
    Some(6),
    "TXT record for www.z.test. has no data"
);
broken!(
    two_cnames,
    format!("{HEAD}www CNAME a\nwww CNAME b\na A 127.0.0.1\nb A 127.0.0.2\n"),
    Some(7),
    "www.z.test. has more than one CNAME record"
);

#[test]
fn missing_include_names_the_including_line() {
    let (code, out, dir) = check(&format!("{HEAD}$INCLUDE nothere.inc\n"), &[]);
    assert_eq!(code, 1);
    let want = format!(
        "{}:6: cannot read included file {}: ",
        dir.path().join("z.zone").display(),
        dir.path().join("nothere.inc").display()
    );
    assert!(
        out.lines().any(|l| l.starts_with(&want)),
        "want {want}\ngot {out}"
    );
}

#[test]
fn error_in_an_include_names_the_included_file() {
    expect(
        &format!("{HEAD}$INCLUDE hosts.inc\n"),
        &[("hosts.inc", "a A 127.0.0.1\n\nb A 127.0.0.256\n")],
        "hosts.inc",
        Some(3),
        "invalid IPv4 address '127.0.0.256'",
    );
}

#[test]
fn include_with_origin_does_not_leak_its_origin() {
    let zone = format!("{HEAD}$INCLUDE sub.inc sub.z.test.\nafter A 127.0.0.9\n");
    let (code, out, _dir) = check(
        &zone,
        &[("sub.inc", "$ORIGIN deeper.sub.z.test.\nx A 127.0.0.8\n")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("zone z.test. serial 1: 5 records, ok"),
        "{out}"
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let (code, out, dir) = check(&format!("{HEAD}a A 1.2.3\nb AAAA zz\nc BOGUS x\n"), &[]);
    assert_eq!(code, 1);
    let p = dir.path().join("z.zone").display().to_string();
    for l in [6, 7, 8] {
        assert!(
            out.contains(&format!("{p}:{l}: ")),
            "line {l} missing:\n{out}"
        );
    }
}

#[test]
fn a_good_zone_passes_with_warnings_only() {
    let zone = format!("{HEAD}@ MX 10 mx\nwww 60 A 127.0.0.2\nwww 120 A 127.0.0.3\n");
    let (code, out, dir) = check(&zone, &[]);
    assert_eq!(code, 0, "{out}");
    let p = dir.path().join("z.zone").display().to_string();
    assert!(
        out.contains(&format!(
            "{p}:6: warning: MX target mx.z.test. is in this zone but has no A or AAAA record"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{p}:8: warning: TTL 120 differs from the TTL 60")),
        "{out}"
    );
}

#[test]
fn shipped_default_config_passes() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mailns.toml");
    let (code, out, _d) = run_check(&cfg, tempfile::tempdir().unwrap());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("zone mail.example.test. serial"), "{out}");
}

fn config_error(config: &str, line: Option<usize>, message: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("z.zone"), HEAD).unwrap();
    let cfg = dir.path().join("mailns.toml");
    std::fs::write(&cfg, config).unwrap();
    let (code, out, dir) = run_check(&cfg, dir);
    assert_eq!(code, 1, "{out}");
    let p = dir.path().join("mailns.toml").display().to_string();
    let message = message.replace("DIR", &dir.path().display().to_string());
    let want = match line {
        Some(l) => format!("{p}:{l}: {message}"),
        None => format!("{p}: {message}"),
    };
    assert!(
        out.lines().any(|l| l.starts_with(&want)),
        "want {want}\ngot {out}"
    );
}

#[test]
fn config_unknown_key_is_rejected_in_every_table() {
    config_error(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\nlisten_udp = 1\n",
        Some(3),
        "[dns]: unknown field `listen_udp`",
    );
    config_error(
        "[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\nrefresh = 1\n",
        Some(4),
        "[zone]: unknown field `refresh`",
    );
    config_error("[dsn]\n", Some(1), "unknown field `dsn`");
}

#[test]
fn config_values_are_validated_with_lines() {
    config_error(
        "[dns]\nlisten = [\"127.0.0.1\"]\n[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n",
        Some(2),
        "dns.listen: '127.0.0.1' is not an address:port",
    );
    config_error(
        "[dns]\ntcp_idle_timeout = \"soon\"\n[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n",
        Some(2),
        "dns.tcp_idle_timeout: 'soon' is not a positive duration",
    );
    config_error("[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n[[zone]]\nname = \"Z.test.\"\nfile = \"z.zone\"\n", Some(5),
        "zone z.test. is configured twice");
    config_error(
        "[[zone]]\nname = \"z.test\"\nfile = \"gone.zone\"\n",
        Some(3),
        "zone z.test.: file ",
    );
    config_error(
        "[dns]\n",
        None,
        "no [[zone]] configured: there is nothing to serve",
    );
    config_error(
        "[[zone]]\nname = \"z.test\"\nfile = 7\n",
        Some(3),
        "zone.file: expected a string in double quotes, found integer `7`",
    );
}

#[test]
fn run_with_a_broken_zone_fails_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("z.zone"), format!("{HEAD}www A nope\n")).unwrap();
    let cfg = dir.path().join("mailns.toml");
    std::fs::write(
        &cfg,
        "[dns]\nlisten = [\"127.0.0.1:0\"]\n[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mailns"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:6: invalid IPv4 address 'nope'",
            dir.path().join("z.zone").display()
        )),
        "{err}"
    );
    assert!(!err.contains("listening"), "{err}");
}

#[test]
fn health_tables_are_validated_with_lines() {
    let base = "[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n";
    config_error(
        &format!("{base}[[check]]\nname = \"c\"\nkind = \"ftp\"\nport = 21\n"),
        Some(6),
        "check 'c': unknown kind 'ftp' (tcp, banner, imap, pop3, smtp, http, https)",
    );
    config_error(
        &format!("{base}[[check]]\nname = \"c\"\nkind = \"tcp\"\n"),
        Some(6),
        "check 'c': a tcp check needs a port",
    );
    config_error(
        &format!("{base}[[check]]\nname = \"c\"\nkind = \"smtp\"\npath = \"/x\"\n"),
        Some(6),
        "check 'c': path, host and expect_status apply to http and https checks only",
    );
    config_error(
        &format!("{base}[[service]]\nname = \"owa.z.test\"\nchecks = [\"nope\"]\n"),
        Some(6),
        "service owa.z.test.: unknown check 'nope'",
    );
    config_error(
        &format!("{base}[[service]]\nname = \"owa.other.test\"\nchecks = []\n"),
        Some(5),
        "service owa.other.test. is in none of the configured zones",
    );
    config_error(&format!("{base}[[service]]\nname = \"owa.z.test\"\nchecks = []\nfallback = [\"zone\", \"pray\"]\n"), Some(7),
        "service owa.z.test.: unknown fallback step 'pray' (other-sites, relay, zone, empty, servfail)");
    config_error(
        &format!("{base}[[service]]\nname = \"owa.z.test\"\nchecks = []\nfallback = [\"relay\"]\n"),
        Some(7),
        "service owa.z.test.: fallback 'relay' needs relay_addresses",
    );
    config_error(&format!("{base}[[server]]\nname = \"a\"\naddresses = [\"127.0.1.1\"]\n[[server]]\nname = \"b\"\naddresses = [\"127.0.1.1\"]\n"), Some(9),
        "server 'b': address 127.0.1.1 already belongs to server 'a'");
    config_error(
        &format!("{base}[[server]]\nname = \"a\"\naddresses = [\"cas01\"]\n"),
        Some(6),
        "server 'a': 'cas01' is not an IP address",
    );
    config_error(
        &format!("{base}[[server]]\nname = \"a\"\naddresses = []\nstate = \"off\"\n"),
        Some(7),
        "server 'a': state 'off' is not ready, drain or maint",
    );
    config_error(
        &format!("{base}[[service]]\nname = \"owa.z.test\"\nchecks = []\nsite = \"dc9\"\n"),
        Some(5),
        "service owa.z.test.: no server is in site 'dc9'",
    );
    config_error(
        &format!("{base}[health]\ninterval = \"often\"\n"),
        Some(5),
        "health.interval: 'often' is not a positive duration",
    );
}

#[test]
fn a_service_without_addresses_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("z.zone"), HEAD).unwrap();
    let cfg = dir.path().join("mailns.toml");
    std::fs::write(&cfg, "[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n[[service]]\nname = \"owa.z.test\"\nchecks = []\n").unwrap();
    let (code, out, dir) = run_check(&cfg, dir);
    assert_eq!(code, 0, "{out}");
    let want = format!(
        "{}: warning: service owa.z.test. has no A or AAAA records in its zone: there is nothing to check or answer",
        dir.path().join("mailns.toml").display()
    );
    assert!(out.lines().any(|l| l == want), "want {want}\ngot {out}");
}

#[test]
fn relays_are_validated_with_lines() {
    let base = "[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n[[server]]\nname = \"cas01\"\naddresses = [\"127.0.1.1\"]\n";
    config_error(&format!("{base}[[relay]]\nname = \"vip\"\nkind = \"smtp\"\nlisten = [\"127.0.0.1:2525\"]\nservers = [\"cas01\"]\n"), Some(8),
        "relay 'vip': an SMTP relay needs `allow` (client addresses or CIDRs); without it the VIP would be an open relay");
    config_error(&format!("{base}[[relay]]\nname = \"a\"\nlisten = [\"127.0.0.1:4000\"]\nservers = [\"cas01\"]\n[[relay]]\nname = \"b\"\nlisten = [\"0.0.0.0:4000\"]\nservers = [\"cas01\"]\n"), Some(13),
        "relay 'b': 0.0.0.0:4000 overlaps a listener of relay 'a'");
    config_error(
        &format!(
            "{base}[[relay]]\nname = \"a\"\nlisten = [\"127.0.0.1:4000\"]\nservers = [\"cas09\"]\n"
        ),
        Some(10),
        "relay 'a': unknown server 'cas09' (define it in a [[server]] table)",
    );
    config_error(&format!("{base}[[relay]]\nname = \"a\"\nlisten = [\"127.0.0.1:4000\"]\nservers = [\"cas01\"]\nchecks = [\"nope\"]\n"), Some(11),
        "relay 'a': unknown check 'nope'");
    config_error(
        &format!(
            "{base}[[relay]]\nname = \"a\"\nlisten = [\"127.0.0.1:5353\"]\nservers = [\"cas01\"]\n"
        ),
        Some(9),
        "relay 'a': 127.0.0.1:5353 overlaps the DNS listener (DNS also uses TCP)",
    );
    config_error(&format!("{base}[[relay]]\nname = \"a\"\nlisten = [\"127.0.0.1:4000\"]\nservers = [\"cas01\"]\nbalance = \"random\"\n"), Some(11),
        "relay 'a': unknown balance 'random' (source-hash, round-robin, least-connections)");
    config_error(&format!("{base}[[relay]]\nname = \"a\"\nlisten = [\"127.0.0.1:4000\", \"127.0.0.1:4001\"]\nbackend_ports = [135]\nservers = [\"cas01\"]\n"), Some(10),
        "relay 'a': backend_ports needs one port per listen address");
    config_error(&format!("{base}[[relay]]\nname = \"a\"\nlisten = [\"127.0.0.1:4000\"]\nservers = [\"cas01\"]\non_server_down = \"drop\"\n"), Some(11),
        "relay 'a': unknown on_server_down 'drop' (keep, close)");
    config_error(&format!("{base}[[relay]]\nname = \"a\"\nlisten = [\"127.0.0.1:4000\"]\nservers = [\"cas01\"]\n[[relay.route]]\nsni = [\"owa.*.test\"]\nservers = [\"cas01\"]\n"), Some(12),
        "relay 'a': 'owa.*.test' is not a host name or *.suffix");
    config_error(&format!("{base}[[relay]]\nname = \"a\"\nlisten = [\"127.0.0.1:4000\"]\n[[relay.route]]\nsni = [\"owa.z.test\"]\nservers = [\"cas07\"]\n"), Some(12),
        "relay 'a': unknown server 'cas07' (define it in a [[server]] table)");
    config_error(&format!("{base}[[relay]]\nname = \"a\"\nlisten = [\"127.0.0.1:4000\"]\nservers = [\"cas01\"]\ntls = \"terminate\"\n"), Some(11),
        "relay 'a': unknown tls 'terminate' (passthrough, offload, reencrypt)");
    config_error(&format!("{base}[[relay]]\nname = \"a\"\nlisten = [\"127.0.0.1:4000\"]\nservers = [\"cas01\"]\ntls = \"offload\"\n"), Some(11),
        "relay 'a': tls = \"offload\" needs certificates = [{ cert = \"chain.pem\", key = \"key.pem\" }]");
    config_error(&format!("{base}[[relay]]\nname = \"a\"\nlisten = [\"127.0.0.1:4000\"]\nservers = [\"cas01\"]\ntls = \"offload\"\ncertificates = [{{ cert = \"missing.pem\", key = \"missing.key\" }}]\n"), Some(12),
        "relay 'a': cannot read DIR/missing.pem: No such file or directory (os error 2)");
}

#[test]
fn admin_table_is_validated_with_lines() {
    let zone = "[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n";
    config_error(
        &format!("{zone}[admin]\nlisten = \"0.0.0.0:8053\"\n"),
        Some(5),
        "admin.listen: 0.0.0.0:8053 is not a loopback address; set admin.token_file first",
    );
    config_error(
        &format!("{zone}[admin]\nlisten = \"localhost\"\n"),
        Some(5),
        "admin.listen: 'localhost' is not an address:port",
    );
    config_error(
        &format!("{zone}[admin]\ntoken_file = \"missing-token\"\n"),
        Some(5),
        "admin.token_file: cannot read DIR/missing-token",
    );
    config_error(
        &format!("[dns]\nlisten = [\"127.0.0.1:8053\"]\n{zone}"),
        None,
        "admin.listen: 127.0.0.1:8053 overlaps the DNS or redirect listener",
    );
    config_error(
        &format!("{zone}[admin]\nlisten = \"127.0.0.1:0\"\nstate = 1\n"),
        Some(6),
        "[admin]: unknown field `state`",
    );
}

#[test]
fn transfer_settings_are_validated_with_lines() {
    let zone = "[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n";
    config_error(
        &format!("{zone}allow_transfer = [\"127.0.0.1\", \"secondary\"]\n"),
        Some(4),
        "zone z.test.: allow_transfer: 'secondary' is not an address or network",
    );
    config_error(
        &format!("{zone}transfer_key = \"nokey\"\n"),
        Some(4),
        "zone z.test.: transfer_key 'nokey' is not a [[tsig_key]]",
    );
    config_error(
        &format!("{zone}notify = [\"ns2\"]\n"),
        Some(4),
        "zone z.test.: notify: 'ns2' is not an address or address:port",
    );
    config_error(
        &format!("{zone}serial = \"now\"\n"),
        Some(4),
        "zone z.test.: serial: 'now' is not \"auto\"",
    );
    config_error(
        &format!("[[tsig_key]]\nname = \"k\"\nsecret = \"not base64!\"\n{zone}"),
        Some(3),
        "tsig_key 'k.': the secret is not base64",
    );
    config_error(
        &format!("[[tsig_key]]\nname = \"k\"\nsecret = \"c2hvcnQ=\"\n{zone}"),
        Some(3),
        "tsig_key 'k.': the secret is shorter than 16 bytes",
    );
    config_error(
        &format!(
            "[[tsig_key]]\nname = \"k\"\nalgorithm = \"hmac-md5\"\nsecret = \"c2hvcnQ=\"\n{zone}"
        ),
        Some(3),
        "tsig_key 'k.': algorithm 'hmac-md5' is not hmac-sha256, hmac-sha384 or hmac-sha512",
    );
    config_error(
        &format!("[[tsig_key]]\nname = \"k\"\n{zone}"),
        Some(2),
        "tsig_key 'k.': set exactly one of secret and secret_file",
    );
}

/// A split-horizon config with what `mailns check` must point out: a client range no view
/// matches, a view that repeats another's clients, a zone missing from one view, and a NAT
/// address no server claims. Warnings only: the config is valid.
#[test]
fn split_horizon_mistakes_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let zone = |addr: &str| {
        format!("$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 127.0.0.1\nowa A {addr}\n")
    };
    std::fs::write(dir.path().join("in.zone"), zone("127.0.2.1")).unwrap();
    std::fs::write(dir.path().join("out.zone"), zone("127.0.9.7")).unwrap();
    let cfg = dir.path().join("mailns.toml");
    std::fs::write(
        &cfg,
        "[[view]]\nname = \"internal\"\nmatch = [\"127.0.8.0/24\"]\n\
         [[view]]\nname = \"lab\"\nmatch = [\"127.0.8.0/24\"]\n\
         [[view]]\nname = \"external\"\nmatch = [\"127.0.0.0/8\", \"::/0\"]\n\
         [[zone]]\nname = \"z.test\"\nfile = \"in.zone\"\nviews = [\"internal\"]\n\
         [[zone]]\nname = \"z.test\"\nfile = \"out.zone\"\nviews = [\"external\"]\n\
         [[check]]\nname = \"owa\"\nkind = \"tcp\"\nport = 443\n\
         [[server]]\nname = \"cas01\"\naddresses = [\"127.0.2.1\"]\npublic_addresses = [\"127.0.9.1\"]\n\
         [[service]]\nname = \"owa.z.test\"\nchecks = [\"owa\"]\n",
    )
    .unwrap();
    let (code, out, _dir) = run_check(&cfg, dir);
    assert_eq!(code, 0, "{out}");
    for want in [
        "mailns.toml:5: warning: view 'lab' matches exactly the clients view 'internal' matches",
        "warning: views: no view matches clients in 0.0.0.0/2",
        "warning: zone z.test. is not served in view(s) lab",
        "out.zone:5: warning: service owa.z.test.: 127.0.9.7 is no [[server]]'s address or public address",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

/// `mailns check` on `config` (and `zone` as z.zone): its exit code and the error lines (not
/// warnings, not the per-zone "ok" line), each without the folder.
fn errors_of(config: &str, zone: &str) -> (i32, Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("z.zone"), zone).unwrap();
    let cfg = dir.path().join("mailns.toml");
    std::fs::write(&cfg, config).unwrap();
    let (code, out, dir) = run_check(&cfg, dir);
    let prefix = format!("{}/", dir.path().display());
    let out = out.replace(&prefix, "");
    let errors = out
        .lines()
        .filter(|l| !l.contains(": warning: ") && !l.ends_with(", ok"))
        .map(String::from)
        .collect();
    (code, errors, out)
}

/// Each mistake is one error (no follow-on errors) that names the file, the line, the key or
/// field, the value and what is allowed.
#[test]
fn each_mistake_is_one_error_that_names_key_value_and_range() {
    let zone_cfg = "[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n";
    let one = |config: &str, zone: &str, want: &str| {
        let (code, errors, out) = errors_of(config, zone);
        assert_eq!(code, 1, "{out}");
        assert_eq!(errors, vec![want.to_string()], "{out}");
    };
    let check = |extra: &str| {
        format!("{zone_cfg}[[check]]\nname = \"owa\"\nkind = \"https\"\n{extra}\n[[service]]\nname = \"owa.z.test\"\nchecks = [\"owa\"]\n")
    };
    one(
        &check("port = 0\n"),
        HEAD,
        "mailns.toml:7: check 'owa': port 0 is no port to probe; use 1 to 65535",
    );
    one(
        &check("port = 70000\n"),
        HEAD,
        "mailns.toml:7: check.port: expected a port number from 1 to 65535, found integer `70000`",
    );
    one(
        &format!("[health]\nrise = 0\n{zone_cfg}"),
        HEAD,
        "mailns.toml:2: health.rise = 0: at least 1 result is needed to change a state; use 1 or more (default 2)",
    );
    one(
        &check("fall = 0\n"),
        HEAD,
        "mailns.toml:7: check.fall = 0: at least 1 result is needed to change a state; use 1 or more (default 2)",
    );
    one(
        &format!("[health]\nrise = \"two\"\n{zone_cfg}"),
        HEAD,
        "mailns.toml:2: health.rise: expected a whole number, 1 or more, found string \"two\"",
    );
    one(
        &format!(
            "{zone_cfg}[[server]]\nname = \"ex01\"\naddresses = [\"127.0.1.1\"]\nweight = -1\n"
        ),
        HEAD,
        "mailns.toml:7: server.weight: expected a whole number from 1 to 16, found integer `-1`",
    );
    one(
        &format!("{zone_cfg}[[check]]\nname = \"\"\nkind = \"tcp\"\nport = 1\n"),
        HEAD,
        "mailns.toml:5: check name is empty: services and relays refer to a check by its name (e.g. \"owa\")",
    );
    let relay = |extra: &str| {
        format!("{zone_cfg}[[server]]\nname = \"ex01\"\naddresses = [\"127.0.1.1\"]\n[[relay]]\nname = \"vip\"\nkind = \"smtp\"\nlisten = [\"127.0.0.1:2525\"]\nservers = [\"ex01\"]\n{extra}")
    };
    one(
        &relay("backend_port = 0\nallow = [\"127.0.0.1\"]\n"),
        HEAD,
        "mailns.toml:12: relay 'vip': backend port 0 is no port to connect to; use 1 to 65535, or leave backend_port out to use the port the client connected to",
    );
    one(
        &relay("allow = [\"127.0.0.1/33\"]\n"),
        HEAD,
        "mailns.toml:12: relay 'vip': allow: '127.0.0.1/33' is not an address or a CIDR (such as 127.0.0.1 or 198.18.0.0/15; an IPv4 prefix is at most /32, an IPv6 one /128)",
    );
    one(
        &format!("[dns]\nlisten = [\"127.0.0.1:70000\"]\n{zone_cfg}"),
        HEAD,
        "mailns.toml:2: dns.listen: '127.0.0.1:70000' is not an address:port (e.g. \"127.0.0.1:5353\" or \"[::1]:53\")",
    );
    // Zone files.
    one(
        zone_cfg,
        &HEAD.replace("$TTL 300", "$TTL 3x0"),
        "z.zone:2: invalid TTL '3x0': a TTL is a number of seconds, or a duration such as 1h30m or 2d",
    );
    one(
        zone_cfg,
        &format!("{HEAD}owa 127.0.0.9\n"),
        "z.zone:6: record for owa.z.test. has no type: '127.0.0.9' is an address, so the type is missing before it (write e.g. 'owa A 127.0.0.9')",
    );
    one(
        zone_cfg,
        &format!("{HEAD}öwa A 127.0.0.9\n"),
        "z.zone:6: the name 'öwa' is not ASCII; resolvers ask for internationalized names in their IDNA form (RFC 5891): write its A-label 'xn--wa-eka'",
    );
    one(
        zone_cfg,
        &format!("{HEAD}sub NS ns.sub\nns.sub A 127.0.0.9\nwww.sub A 127.0.0.10\n"),
        "z.zone:8: A record at www.sub.z.test. is below the delegation to sub.z.test., and no NS record names www.sub.z.test., so it is not glue: it would never be served (move it above the delegation, or into the delegated zone)",
    );
    one(
        zone_cfg,
        &format!("{HEAD}@ MX 70000 mx\nmx A 127.0.0.9\n"),
        "z.zone:6: invalid MX record data: MX preference must be a number from 0 to 65535, found '70000'",
    );
}

/// What is legal but probably wrong is a warning: `mailns check` passes and says why.
#[test]
fn likely_mistakes_are_warnings() {
    let zone_cfg = "[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n";
    let (code, errors, out) = errors_of(
        &format!("[dns]\nlisten = [\"127.0.0.1:0\"]\n{zone_cfg}[[check]]\nname = \"owa\"\nkind = \"tcp\"\nport = 443\ninterval = \"2s\"\ntimeout = \"5s\"\n"),
        HEAD,
    );
    assert_eq!((code, errors.len()), (0, 0), "{out}");
    assert!(
        out.contains("mailns.toml:2: warning: dns.listen: 127.0.0.1:0 has port 0"),
        "{out}"
    );
    assert!(
        out.contains("mailns.toml:11: warning: check 'owa': timeout 5s is longer than interval 2s"),
        "{out}"
    );
}
