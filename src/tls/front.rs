//! A relay's TLS front (`tls = "offload"` or `"reencrypt"`): the acceptor over the certificate
//! set, the connector to the backends when re-encrypting, and the certificate files' reload
//! (a broken file keeps the old set).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::client::TlsCheck;
use super::{load, server_config, CertSet, LoadedCert, Resolver, TlsError};

/// Who terminates TLS on an HTTPS relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Nobody in between: bytes pass untouched (the default, and Exchange's recommendation).
    Passthrough,
    /// mailns terminates TLS and relays plain HTTP to the backend.
    Offload,
    /// mailns terminates TLS and opens TLS to the backend.
    Reencrypt,
}

/// TLS termination settings of a relay (`offload` or `reencrypt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontTls {
    /// Offload or re-encrypt.
    pub mode: TlsMode,
    /// (chain, key) PEM files; the first is the default certificate.
    pub certificates: Vec<(PathBuf, PathBuf)>,
    /// A client must finish its handshake within this.
    pub handshake_timeout: Duration,
    /// Re-encrypt: how the backend's certificate is checked.
    pub backend: TlsCheck,
    /// Re-encrypt: the name sent to and verified for the backend (None: the client's SNI, else
    /// the first zone's name).
    pub backend_sni: Option<String>,
}

/// What a relay that terminates TLS holds.
pub struct Front {
    /// Accepts clients' TLS with the resolver's certificates.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The certificates, swappable for reloads; their expiry is shown on the dashboard.
    pub resolver: Arc<Resolver>,
    /// Re-encrypt: TLS to the backends.
    pub connector: Option<tokio_rustls::TlsConnector>,
    /// Re-encrypt: the name sent to and verified for the backend (None: the client's SNI).
    pub backend_sni: Option<String>,
    /// Re-encrypt: the backend name when neither the config nor the client gives one.
    pub default_name: String,
    /// A client must finish its handshake within this.
    pub handshake_timeout: Duration,
    /// (chain, key) files and their modification times at the last load.
    files: Vec<(PathBuf, PathBuf)>,
    stamps: Mutex<Vec<Option<std::time::SystemTime>>>,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("reencrypt", &self.connector.is_some())
            .finish_non_exhaustive()
    }
}

impl Front {
    /// Loads the certificates and TLS configs of `tls`; `default_name` is the backend name
    /// when neither the config nor the client gives one.
    ///
    /// # Errors
    /// An unreadable certificate, key or CA file.
    pub fn new(tls: &FrontTls, default_name: &str) -> Result<Self, TlsError> {
        let certs = tls
            .certificates
            .iter()
            .map(|(c, k)| load(c, k))
            .collect::<Result<Vec<_>, _>>()?;
        let resolver = Arc::new(Resolver(ArcSwap::from_pointee(CertSet::new(certs))));
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(resolver.clone())?);
        let connector = match tls.mode {
            TlsMode::Reencrypt => Some(tokio_rustls::TlsConnector::from(super::client::config(
                &tls.backend,
            )?)),
            _ => None,
        };
        let files = tls.certificates.clone();
        let stamps = Mutex::new(stamps_of(&files));
        Ok(Self {
            files,
            stamps,
            acceptor,
            resolver,
            connector,
            backend_sni: tls.backend_sni.clone(),
            default_name: default_name.trim_end_matches('.').to_string(),
            handshake_timeout: tls.handshake_timeout,
        })
    }
}

fn stamps_of(files: &[(PathBuf, PathBuf)]) -> Vec<Option<std::time::SystemTime>> {
    files
        .iter()
        .flat_map(|(c, k)| [c, k])
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

impl Front {
    /// Loads the certificate files again without putting them in force: a reload checks them
    /// before anything changes.
    ///
    /// # Errors
    /// An unreadable or invalid certificate or key, naming the file.
    pub fn load_files(&self) -> Result<Vec<LoadedCert>, TlsError> {
        self.files.iter().map(|(c, k)| load(c, k)).collect()
    }

    /// Puts certificates from [`Front::load_files`] in force.
    pub fn install(&self, certs: Vec<LoadedCert>) {
        *self
            .stamps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = stamps_of(&self.files);
        self.resolver.0.store(Arc::new(CertSet::new(certs)));
    }

    /// Loads the certificate files again if one changed (or `force`), swapping the set for new
    /// handshakes; established connections keep theirs. A broken file keeps the old set.
    /// Returns None when nothing changed.
    pub fn reload(&self, force: bool) -> Option<Result<usize, TlsError>> {
        let now = stamps_of(&self.files);
        {
            let mut seen = self
                .stamps
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !force && *seen == now {
                return None;
            }
            *seen = now;
        }
        let loaded = self
            .files
            .iter()
            .map(|(c, k)| load(c, k))
            .collect::<Result<Vec<_>, _>>();
        Some(loaded.map(|certs| {
            let n = certs.len();
            self.resolver.0.store(Arc::new(CertSet::new(certs)));
            n
        }))
    }
}
