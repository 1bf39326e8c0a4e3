//! Every TLS setting and config mailns makes, in one place:
//! - here: certificates for the HTTPS front (`tls = "offload"` or `"reencrypt"`), PEM chain and
//!   key files, several picked by the client's SNI with the first as the default, and the
//!   server config over them;
//! - [`client`]: the client configs of https checks and of re-encryption to the backends;
//! - [`front`]: a relay's TLS front (acceptor, backend connector, certificate reload).
//!
//! The certificate set sits behind an `ArcSwap`, so a reload swaps it for new handshakes while
//! established connections keep the keys they negotiated. This module depends on nothing else
//! in the crate: the config's TLS settings are its types.

pub mod client;
pub mod front;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::pki_types::pem;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// What is wrong with a certificate, key or CA file, naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A chain file that is not PEM.
    #[error("{}: not a PEM certificate chain: {source}", path.display())]
    NotPem {
        /// The chain file.
        path: PathBuf,
        /// The PEM parser's complaint.
        source: pem::Error,
    },
    /// A chain file with no certificate.
    #[error("{}: no certificate in the file", path.display())]
    NoCertificate {
        /// The chain file.
        path: PathBuf,
    },
    /// A leaf certificate that does not parse as X.509.
    #[error("{}: the first certificate does not parse: {reason}", path.display())]
    BadCertificate {
        /// The chain file.
        path: PathBuf,
        /// The X.509 parser's complaint.
        reason: String,
    },
    /// A key file with no PEM private key.
    #[error("{}: no PEM private key: {source}", path.display())]
    NoKey {
        /// The key file.
        path: PathBuf,
        /// The PEM parser's complaint.
        source: pem::Error,
    },
    /// A private key rustls cannot sign with.
    #[error("{}: unusable private key: {source}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// rustls's complaint.
        source: rustls::Error,
    },
    /// A key that is not the certificate's.
    #[error("{} and {}: the key does not belong to the certificate: {source}", cert.display(), key.display())]
    KeyMismatch {
        /// The chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's complaint.
        source: rustls::Error,
    },
    /// A CA file could not be read.
    #[error("cannot read CA file {}: {source}", path.display())]
    ReadCa {
        /// The CA file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A CA file with no usable certificate.
    #[error("no CA certificate in {}", path.display())]
    NoCa {
        /// The CA file.
        path: PathBuf,
    },
    /// rustls refused a config (the provider lacks the default protocol versions).
    #[error("{0}")]
    Config(#[from] rustls::Error),
}

/// One loaded certificate.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// The chain and signing key.
    pub key: Arc<CertifiedKey>,
    /// Lowercase DNS names from the leaf's subjectAltName (`*.x` wildcards kept as written).
    pub names: Vec<String>,
    /// The leaf's notAfter, as Unix seconds.
    pub not_after: i64,
    /// The chain file, for messages and the dashboard.
    pub file: PathBuf,
}

impl LoadedCert {
    /// Whole days until the leaf expires (negative once expired).
    pub fn days_left(&self) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        (self.not_after - now).div_euclid(86_400)
    }
}

/// Loads a PEM chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 or SEC1: RSA and
/// ECDSA keys).
///
/// # Errors
/// A message naming the file and what is wrong with it.
pub fn load(cert: &Path, key: &Path) -> Result<LoadedCert, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::NotPem {
            path: cert.to_path_buf(),
            source,
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    };
    let (_, x509) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::BadCertificate {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    let (not_after, names) = facts(&x509);
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::NoKey {
        path: key.to_path_buf(),
        source,
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|source| TlsError::BadKey {
            path: key.to_path_buf(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|source| TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
        not_after,
        file: cert.to_path_buf(),
    })
}

/// Certificates by name, and the default.
#[derive(Debug)]
pub struct CertSet {
    /// In config order; the first is the default.
    pub certs: Vec<LoadedCert>,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>, // suffix after "*."
}

impl CertSet {
    /// A set from `certs` (at least one). A name on several certificates goes to the first.
    pub fn new(certs: Vec<LoadedCert>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()).or_insert(i),
                    None => exact.entry(n.clone()).or_insert(i),
                };
            }
        }
        Self {
            certs,
            exact,
            wildcard,
        }
    }

    /// The certificate for `sni`: an exact name, else a wildcard one label up, else the default.
    pub fn pick(&self, sni: Option<&str>) -> Option<&LoadedCert> {
        let i = sni
            .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
            .and_then(|s| {
                self.exact.get(&s).copied().or_else(|| {
                    s.split_once('.')
                        .and_then(|(_, parent)| self.wildcard.get(parent).copied())
                })
            })
            .unwrap_or(0);
        self.certs.get(i)
    }
}

/// rustls's certificate resolver over a swappable set.
#[derive(Debug)]
pub struct Resolver(pub ArcSwap<CertSet>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0
            .load()
            .pick(hello.server_name())
            .map(|c| c.key.clone())
    }
}

/// A TLS 1.2/1.3 server config on `resolver`, rustls's safe defaults, the aws-lc-rs provider.
/// Only `http/1.1` is offered in ALPN: mailns relays the decrypted bytes without parsing them,
/// so the backend must speak what the client was promised, and an IIS port 80 does HTTP/1.1.
///
/// # Errors
/// Only if the provider lacks the default protocol versions.
pub fn server_config(resolver: Arc<Resolver>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A leaf certificate's notAfter (Unix seconds) and DNS names; None when it does not parse.
pub fn leaf_facts(der: &[u8]) -> Option<(i64, Vec<String>)> {
    let (_, x509) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(facts(&x509))
}

fn facts(x509: &x509_parser::certificate::X509Certificate<'_>) -> (i64, Vec<String>) {
    let not_after = x509.validity().not_after.timestamp();
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    (not_after, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str], dir: &Path, file: &str) -> LoadedCert {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let (c, k) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
        load(&c, &k).unwrap()
    }

    #[test]
    fn picks_exact_then_wildcard_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let set = CertSet::new(vec![
            cert(&["mail.z.test"], dir.path(), "a"),
            cert(&["owa.z.test", "*.legacy.z.test"], dir.path(), "b"),
        ]);
        let file = |sni| set.pick(sni).unwrap().file.file_name().unwrap().to_owned();
        assert_eq!(file(Some("OWA.z.test.")), "b.pem");
        assert_eq!(file(Some("x.legacy.z.test")), "b.pem");
        assert_eq!(file(Some("a.b.legacy.z.test")), "a.pem", "one label only");
        assert_eq!(file(Some("other.z.test")), "a.pem");
        assert_eq!(file(None), "a.pem");
        assert!(set.certs[0].days_left() > 300);
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = cert(&["a.z.test"], dir.path(), "a");
        let _ = cert(&["b.z.test"], dir.path(), "b");
        let err = load(&dir.path().join("a.pem"), &dir.path().join("b.key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not belong"), "{err}");
        let err = load(&dir.path().join("nope.pem"), &dir.path().join("a.key"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read ") && err.contains("nope.pem"),
            "{err}"
        );
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        let err = load(&dir.path().join("empty.pem"), &dir.path().join("a.key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no certificate"), "{err}");
        assert_eq!(a.names, ["a.z.test"]);
    }
}
