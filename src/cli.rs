//! The command line, defined once: the binary parses it, and `mailns manual` renders its man
//! pages and shell completions from the same definitions (clap_mangen, clap_complete), so they
//! never drift from `--help`.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::DEFAULT_PATH;

#[derive(Parser)]
#[command(
    name = "mailns",
    version,
    about = "Authoritative, health-driven DNS for an Exchange mail namespace"
)]
/// `mailns` and its global options.
pub struct Cli {
    /// Log lines: `human` (the default) or `json` (one object per line, for log shippers).
    /// RUST_LOG filters either (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Text for people.
    Human,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Serve DNS for the configured zones.
    Run {
        /// Config file.
        #[arg(long, short, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Start three simulated Exchange servers on loopback and serve the bundled demo config:
    /// DNS on 127.0.0.1:5353, the dashboard on http://127.0.0.1:8053/.
    #[cfg(feature = "demo")]
    Demo,
    /// Validate the config and every zone it names; bind nothing. Exit 1 on any error.
    Check {
        /// Config file.
        #[arg(long, short, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Talk to a running mailns through its admin API (address and token from the config; the
    /// token may also come from MAILNS_TOKEN, never from the command line).
    Ctl {
        /// Config file: gives admin.listen and admin.token_file (only `[admin]` is read).
        #[arg(long, short, default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// The admin listener, instead of the config's admin.listen.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// The action.
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Write the man pages (mailns.1, mailns-run.1, ...) and the bash, zsh and fish completions
    /// into a folder (what packaging installs).
    #[command(hide = true)]
    Manual {
        /// The folder to write into (created if missing).
        out: PathBuf,
    },
}

/// What `mailns ctl` does.
#[derive(Subcommand)]
pub enum CtlAction {
    /// Servers x checks, service names and their answers, relays, reload state.
    Status {
        /// Print the API's JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Take a server out of new answers and new relayed sessions (probes go on).
    Drain {
        /// The [[server]] name.
        server: String,
        /// Return only when its relayed sessions reach 0, printing each new count.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits ("10m", "90s").
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Put a server back in service.
    Ready {
        /// The [[server]] name.
        server: String,
    },
    /// Take a server out of everything and close its relayed sessions.
    Maint {
        /// The [[server]] name.
        server: String,
    },
    /// Reload the config and zones; prints the path:line error of a failed reload.
    Reload,
    /// The last transitions (health, admin), newest first.
    Transitions {
        /// Only this server's.
        server: Option<String>,
    },
    /// One server's last transitions, newest first.
    History {
        /// The [[server]] name.
        server: String,
    },
}

/// Writes the man pages of `mailns` and each visible subcommand, and the shell completions,
/// into `out`; the files written.
///
/// # Errors
/// A file that cannot be written.
pub fn manual(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    use clap_complete::Shell;
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    let cmd = Cli::command();
    let mut page = |name: String, c: clap::Command| -> std::io::Result<()> {
        let path = out.join(format!("{name}.1"));
        let mut text = Vec::new();
        clap_mangen::Man::new(c.name(name.clone())).render(&mut text)?;
        std::fs::write(&path, text)?;
        written.push(path);
        Ok(())
    };
    page("mailns".into(), cmd.clone())?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page(format!("mailns-{}", sub.get_name()), sub.clone())?;
        for inner in sub.get_subcommands() {
            page(
                format!("mailns-{}-{}", sub.get_name(), inner.get_name()),
                inner.clone(),
            )?;
        }
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut c = Cli::command();
        written.push(clap_complete::generate_to(shell, &mut c, "mailns", out)?);
    }
    Ok(written)
}
