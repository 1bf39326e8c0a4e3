//! The command line: `--help` of mailns and of every subcommand, and the man pages and shell
//! completions `mailns manual` renders from the same definitions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

use std::process::Command;

fn mailns(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mailns"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

#[test]
fn help_of_every_subcommand() {
    let (ok, top) = mailns(&["--help"]);
    assert!(ok, "{top}");
    for sub in ["run", "check", "ctl", "demo"] {
        assert!(top.contains(sub), "{sub} missing from:\n{top}");
    }
    assert!(
        !top.contains("manual"),
        "the packaging helper stays hidden:\n{top}"
    );
    for (args, want) in [
        (&["run", "--help"][..], "--config"),
        (&["check", "--help"], "Validate the config"),
        (&["ctl", "--help"], "--admin"),
        (&["ctl", "status", "--help"], "--json"),
        (&["ctl", "drain", "--help"], "--wait"),
        (&["ctl", "drain", "--help"], "--timeout"),
        (&["ctl", "reload", "--help"], "path:line"),
        (&["ctl", "history", "--help"], "SERVER"),
    ] {
        let (ok, text) = mailns(args);
        assert!(
            ok && text.contains(want),
            "{args:?}: {want:?} missing from:\n{text}"
        );
    }
    let (ok, version) = mailns(&["--version"]);
    assert!(ok && version.starts_with("mailns "), "{version}");
}

#[test]
fn man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, listed) = mailns(&["manual", dir.path().to_str().unwrap()]);
    assert!(ok, "{listed}");
    for page in [
        "mailns.1",
        "mailns-run.1",
        "mailns-check.1",
        "mailns-ctl.1",
        "mailns-ctl-drain.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        let name = page.trim_end_matches(".1");
        assert!(text.contains(&format!(".TH {name} 1")), "{page}:\n{text}");
        assert!(text.contains(".SH SYNOPSIS"), "{page}");
    }
    let drain = std::fs::read_to_string(dir.path().join("mailns-ctl-drain.1")).unwrap();
    assert!(drain.contains("relayed sessions"), "{drain}");
    // The bash completion is a script bash accepts, and knows the subcommands.
    let bash = dir.path().join("mailns.bash");
    let text = std::fs::read_to_string(&bash).unwrap();
    assert!(text.contains("ctl") && text.contains("drain"), "{text}");
    assert!(Command::new("bash")
        .arg("-n")
        .arg(&bash)
        .status()
        .unwrap()
        .success());
    for f in ["_mailns", "mailns.fish"] {
        assert!(
            std::fs::read_to_string(dir.path().join(f))
                .unwrap()
                .contains("ctl"),
            "{f}"
        );
    }
}
