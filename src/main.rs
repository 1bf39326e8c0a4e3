//! The `mailns` binary: parse arguments, set up logging, load and validate, then serve.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use mailns::cli::{Cli, Command, CtlAction, LogFormat};
use mailns::config::Config;
use mailns::runtime;

/// Exit code for a broken config or zone (sysexits EX_CONFIG).
const EX_CONFIG: u8 = 78;
/// Exit code for a failure to start serving (sysexits EX_OSERR).
const EX_OSERR: u8 = 71;

/// mimalloc instead of glibc's malloc: loading a zone and building its prebuilt answers makes
/// and frees millions of small allocations, and glibc spent a quarter of a 100,000-record
/// start in `unlink_chunk` alone (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Human => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Ctl {
            config,
            admin,
            action,
        } => ctl(&config, admin, action),
        Command::Manual { out } => match mailns::cli::manual(&out) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mailns manual: {}: {e}", out.display());
                ExitCode::from(EX_OSERR)
            }
        },
        Command::Run { config } => run(&config, false),
        #[cfg(feature = "demo")]
        Command::Demo => demo(),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let diags = match Config::load(path) {
        Err(d) => d,
        Ok(config) => match config.load_zones() {
            Ok((zones, warnings)) => {
                let host = mailns::listeners::host_problems(&config);
                for w in config.warnings.iter().chain(&warnings).chain(&host) {
                    println!("{w}");
                }
                for z in &zones {
                    println!(
                        "{}: zone {} serial {}: {} records, ok",
                        z.file.display(),
                        z.origin,
                        z.serial(),
                        z.record_count
                    );
                }
                return ExitCode::SUCCESS;
            }
            Err(d) => d,
        },
    };
    for d in &diags {
        println!("{d}");
    }
    if diags.iter().any(|d| d.is_error()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Exit codes of `ctl` (sysexits): not running, no permission, still busy after `--wait`.
const EX_UNAVAILABLE: u8 = 69;
const EX_NOPERM: u8 = 77;
const EX_TEMPFAIL: u8 = 75;

/// `mailns ctl`: finds the admin API, runs one action, prints what it says.
fn ctl(path: &std::path::Path, admin: Option<std::net::SocketAddr>, action: CtlAction) -> ExitCode {
    use mailns::ctl::{self, CtlError, Target};
    let env_token = std::env::var("MAILNS_TOKEN").ok().filter(|t| !t.is_empty());
    let target = match (admin, ctl::target_of_config(path)) {
        (Some(addr), from_file) => {
            let from_file = from_file.ok();
            Target {
                addr,
                tls: from_file.as_ref().is_some_and(|t| t.tls),
                token: env_token.or_else(|| from_file.and_then(|t| t.token)),
            }
        }
        (None, Ok(t)) => Target {
            addr: t.addr,
            tls: t.tls,
            token: env_token.or(t.token),
        },
        (None, Err(e)) => {
            eprintln!("mailns ctl: {e}; pass --admin ADDR to name the admin listener");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailns ctl: cannot start the runtime: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    let outcome = rt.block_on(async {
        match action {
            CtlAction::Status { json } => {
                let doc = ctl::status(&target).await?;
                if json {
                    println!("{doc:#}");
                } else {
                    print!("{}", ctl::render_status(&doc));
                }
            }
            CtlAction::Drain {
                server,
                wait,
                timeout,
            } => {
                let wait = wait.then_some(timeout);
                ctl::set_state(&target, &server, "drain", wait, |n| {
                    if wait.is_some() {
                        println!("{server}: {n} relayed session(s) open");
                    }
                })
                .await?;
                println!("{server}: drain");
            }
            CtlAction::Ready { server } => {
                ctl::set_state(&target, &server, "ready", None, |_| {}).await?;
                println!("{server}: ready");
            }
            CtlAction::Maint { server } => {
                ctl::set_state(&target, &server, "maint", None, |_| {}).await?;
                println!("{server}: maint");
            }
            CtlAction::Reload => {
                ctl::reload(&target).await?;
                println!("reloaded");
            }
            CtlAction::Transitions { server } => {
                let doc = ctl::status(&target).await?;
                print!("{}", ctl::render_transitions(&doc, server.as_deref()));
            }
            CtlAction::History { server } => {
                let doc = ctl::status(&target).await?;
                print!("{}", ctl::render_transitions(&doc, Some(&server)));
            }
        }
        Ok::<(), CtlError>(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailns ctl: {e}");
            ExitCode::from(match e {
                CtlError::NotRunning { .. } | CtlError::NotMailns { .. } => EX_UNAVAILABLE,
                CtlError::Unauthorized => EX_NOPERM,
                CtlError::StillActive { .. } => EX_TEMPFAIL,
                CtlError::Api { .. } => 1,
            })
        }
    }
}

#[cfg(feature = "demo")]
fn demo() -> ExitCode {
    // The bundled files go to a folder of this run (removed at exit).
    let dir = match tempfile::Builder::new().prefix("mailns-demo-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("mailns demo: cannot create a working folder: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    let path = match mailns::demo::write_files(dir.path()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mailns demo: cannot write the demo files: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    run(&path, true)
}

/// Serves the config at `path`; with `demo`, the simulated servers run beside it.
fn run(path: &std::path::Path, demo: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(diags) => {
            for d in diags {
                eprintln!("{d}");
            }
            return ExitCode::from(EX_CONFIG);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailns: cannot start the runtime: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    rt.block_on(async {
        let token = CancellationToken::new();
        let signal_token = token.clone();
        let signalled = runtime::shutdown_signal();
        tokio::spawn(async move {
            signalled.await;
            signal_token.cancel();
        });
        let farm = if demo {
            match start_farm() {
                Ok(f) => Some(f),
                Err(e) => {
                    eprintln!("mailns demo: {e}");
                    return ExitCode::from(EX_OSERR);
                }
            }
        } else {
            None
        };
        match runtime::run(config, token, farm).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(runtime::RunError::Invalid(diags)) => {
                for d in diags {
                    eprintln!("{d}");
                }
                ExitCode::from(EX_CONFIG)
            }
            Err(e) => {
                eprintln!("mailns: {e}");
                ExitCode::from(EX_OSERR)
            }
        }
    })
}

/// Starts the demo's simulated servers on this runtime.
#[cfg(feature = "demo")]
fn start_farm() -> Result<std::sync::Arc<dyn mailns::app::Demo>, String> {
    let farm = mailns::demo::Farm::start(&tokio::runtime::Handle::current())?;
    Ok(std::sync::Arc::new(farm))
}

/// Built without the `demo` feature: there is no simulator to start.
#[cfg(not(feature = "demo"))]
fn start_farm() -> Result<std::sync::Arc<dyn mailns::app::Demo>, String> {
    Err("this build has no demo (built without the `demo` feature)".into())
}
