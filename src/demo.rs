//! `mailns demo`: three simulated Exchange servers on loopback and the bundled demo config
//! (`config/demo/`), served by the real runtime, with fail/heal buttons on the dashboard.
//!
//! The bundled files are built into the binary and written to a fresh folder per run, so the
//! demo works from any directory and its admin state file never lands in the source tree.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::app::{Demo, DemoAction as Action, DemoView};
use crate::config::Config;
use crate::sim::{self, Proto, Sim};

/// The demo config.
pub const CONFIG: &str = include_str!("../config/demo/mailns.toml");
/// The demo zone.
pub const ZONE: &str = include_str!("../config/demo/mail.example.test.zone");
/// The demo's admin token (loopback only; printed at start).
pub const TOKEN: &str = "demo-token";

/// Ports the simulated servers listen on (the demo config checks and relays to these).
const HTTPS_PORT: u16 = 8443;
const SMTP_PORT: u16 = 2525;
const IMAP_PORT: u16 = 1143;

/// One simulated Client Access server.
#[derive(Debug)]
pub struct DemoServer {
    /// cas01..cas03.
    pub name: String,
    /// 127.0.1.1..3.
    pub ip: IpAddr,
    https: Arc<Sim>,
    smtp: Arc<Sim>,
    imap: Arc<Sim>,
}

/// The simulated servers.
#[derive(Debug)]
pub struct Farm {
    /// cas01..cas03.
    pub servers: Vec<DemoServer>,
}

impl Farm {
    /// Starts cas01..03 on 127.0.1.1..3 on `rt`.
    ///
    /// # Errors
    /// A port is taken (another demo running?).
    pub fn start(rt: &tokio::runtime::Handle) -> Result<Self, String> {
        let names = [
            "owa.mail.example.test",
            "autodiscover.mail.example.test",
            "outlook.mail.example.test",
            "mail.example.test",
        ];
        let tls = sim::tls_server(&names);
        let mut servers = Vec::new();
        for h in 1..=3u8 {
            let ip = IpAddr::from([127, 0, 1, h]);
            let start = |port, proto| {
                Sim::try_start(rt, ip, port, proto)
                    .map_err(|e| format!("demo server {ip}:{port}: {e}"))
            };
            let server = DemoServer {
                name: format!("cas0{h}"),
                ip,
                https: start(HTTPS_PORT, Proto::Https(tls.clone()))?,
                smtp: start(SMTP_PORT, Proto::SmtpStarttls(tls.clone()))?,
                imap: start(IMAP_PORT, Proto::Imap)?,
            };
            // Each names itself in its banners and pages: a client sees which one it reached.
            for sim in [&server.https, &server.smtp, &server.imap] {
                *sim.behaviour
                    .name
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(server.name.clone());
            }
            servers.push(server);
        }
        Ok(Self { servers })
    }
}

impl Demo for Farm {
    fn view(&self) -> Vec<DemoView> {
        self.servers
            .iter()
            .map(|s| DemoView {
                name: s.name.clone(),
                address: s.ip,
                running: s.https.is_up(),
                owa_failing: s
                    .https
                    .behaviour
                    .failing
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .any(|p| p == OWA_PAGE),
            })
            .collect()
    }

    fn act(&self, name: &str, action: Action) -> Result<bool, String> {
        let Some(s) = self.servers.iter().find(|s| s.name == name) else {
            return Ok(false);
        };
        let sims = [&s.https, &s.smtp, &s.imap];
        match action {
            Action::Fail => sims.iter().for_each(|x| x.kill()),
            Action::Heal => {
                s.https.fail_path(OWA_PAGE, false);
                for x in sims {
                    x.try_revive().map_err(|e| format!("{}: {e}", x.addr))?;
                }
            }
            Action::FailOwa => s.https.fail_path(OWA_PAGE, true),
        }
        Ok(true)
    }

    fn banner(&self, config: &Config) -> String {
        banner(config)
    }
}

const OWA_PAGE: &str = "/owa/healthcheck.htm";

/// Writes the bundled config, zone and token into `dir`; returns the config's path.
///
/// # Errors
/// The folder is not writable.
pub fn write_files(dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(dir.join("mail.example.test.zone"), ZONE)?;
    let token = dir.join("admin.token");
    std::fs::write(&token, format!("{TOKEN}\n"))?;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))?;
    let config = dir.join("mailns.toml");
    std::fs::write(&config, CONFIG)?;
    Ok(config)
}

/// What to try, printed once the demo is ready.
fn banner(config: &Config) -> String {
    let Some(dns) = config.dns.listen.first() else {
        return String::new();
    };
    let relay = |name: &str| {
        config
            .relays
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.listen.first())
            .map_or_else(|| "-".to_string(), ToString::to_string)
    };
    let redirect = config
        .redirect
        .listen
        .first()
        .map_or_else(|| "-".to_string(), ToString::to_string);
    let https = relay("https");
    let (https_ip, https_port) = https.rsplit_once(':').unwrap_or(("127.0.0.1", "443"));
    let (ip, port, admin) = (dns.ip(), dns.port(), config.admin.listen);
    let smtp = relay("smtp-vip");
    let imap = relay("imap");
    [
        String::new(),
        "mailns demo: three simulated Exchange servers, cas01-03 on 127.0.1.1-3.".into(),
        format!("  config        {}", config.path.display()),
        format!("  DNS           {dns} (zone mail.example.test)"),
        format!("  dashboard     http://{admin}/   (admin token: {TOKEN})"),
        format!(
            "  relays        HTTPS {https}   SMTP VIP {smtp}   IMAP {imap}   port-80 redirect {redirect}"
        ),
        String::new(),
        "Try (each simulated server names itself, so you see which one a relay picked):".into(),
        format!("  dig @{ip} -p {port} owa.mail.example.test +short     # the healthy servers, rotated"),
        format!("  dig @{ip} -p {port} mail.example.test MX +short"),
        format!(
            "  curl -sk --resolve owa.mail.example.test:{https_port}:{https_ip} https://owa.mail.example.test:{https_port}/owa/healthcheck.htm; echo"
        ),
        format!("  swaks --server {smtp} --to user@example.test --from app@example.test"),
        format!("  swaks --server {smtp} --to user@example.test --from app@example.test --tls     # STARTTLS, passed through untouched"),
        format!("  curl -sv imap://{imap}/ -X CAPABILITY 2>&1 | grep '^<'     # the IMAP greeting and capabilities"),
        format!("  curl -si -H 'Host: mail.example.test' http://{redirect}/ | head -3"),
        format!(
            "Then fail a server on the dashboard (or: curl -X POST http://{admin}/api/v1/demo/servers/cas02/fail)"
        ),
        "and dig again: cas02 leaves every name within seconds; 'heal' brings it back.".into(),
    ]
    .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_config_validates() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_files(dir.path()).unwrap();
        let config = Config::load(&path).unwrap();
        let (zones, _) = config.load_zones().unwrap();
        assert_eq!(zones[0].origin.to_string(), "mail.example.test.");
        assert_eq!(config.admin.token.as_deref(), Some(TOKEN));
        assert!(banner(&config).contains("127.0.0.1:5353"));
    }
}
