//! TLS settings: the certificate files gunicorn names (`--certfile`, `--keyfile`,
//! `--ca-certs`, `--cert-reqs`, `--ciphers`) read once into the `rustls` server
//! configuration every TLS connection shares.
//!
//! Built once, in the master before it forks (the files are read there, so a bad file
//! is one line and exit 3, never a worker crash loop), and again in each worker from
//! the same paths. Only TLS 1.2 and 1.3 are offered, with ALPN `http/1.1`; the
//! cryptography is rustls' `ring` provider. Session tickets come from
//! [`crate::tls_tickets`] and TLS 1.2 session IDs are kept by [`crate::tls_sessions`],
//! both shared by the workers of one master.

use crate::tls_sessions::SharedSessions;
use crate::tls_tickets::SharedTickets;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, SupportedCipherSuite};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// gunicorn's `--cert-reqs` (Python's `ssl.CERT_*` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertReqs {
    /// 0: no client certificate is asked for.
    #[default]
    None,
    /// 1: asked for; a client without one is served, one with a bad one refused.
    Optional,
    /// 2: a client without a certificate from `--ca-certs` is refused.
    Required,
}

impl CertReqs {
    pub fn from_int(n: i64) -> Option<CertReqs> {
        match n {
            0 => Some(CertReqs::None),
            1 => Some(CertReqs::Optional),
            2 => Some(CertReqs::Required),
            _ => None,
        }
    }
}

/// What the operator named: the input of [`TlsSettings::load`].
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// The leaf certificate followed by its chain (PEM).
    pub certfile: PathBuf,
    /// Its private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM.
    pub keyfile: PathBuf,
    /// The CAs that sign client certificates (PEM); needed when `cert_reqs` asks for one.
    pub ca_certs: Option<PathBuf>,
    pub cert_reqs: CertReqs,
    /// `--ciphers` mapped to rustls' suites; `None`: rustls' defaults (every TLS 1.3
    /// suite and the ECDHE AEAD TLS 1.2 ones).
    pub ciphers: Option<Vec<SupportedCipherSuite>>,
}

/// Why the TLS settings cannot be used, naming the file at fault.
#[derive(Debug)]
pub enum TlsError {
    /// The file cannot be read.
    Read(PathBuf, io::Error),
    /// The file was read and holds no usable item of that kind (`what`).
    Empty(PathBuf, &'static str),
    /// rustls refused the certificate, key or CA set (for example a key that does
    /// not match the certificate); the path is the file the error is about.
    Refused(PathBuf, rustls::Error),
    /// A client verifier could not be built from `--ca-certs`.
    Verifier(PathBuf, rustls::server::VerifierBuilderError),
    /// `--cert-reqs` asks for client certificates and no `--ca-certs` says whose.
    NoCa,
    /// The system's random source failed while making the session-ticket secret.
    TicketSecret(::ring::error::Unspecified),
    /// The memory the workers share TLS 1.2 sessions in could not be mapped.
    SessionTable(io::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            TlsError::Empty(p, what) => write!(f, "{}: no {what} in it", p.display()),
            TlsError::Refused(p, e) => write!(f, "{}: {e}", p.display()),
            TlsError::Verifier(p, e) => write!(f, "{}: {e}", p.display()),
            TlsError::NoCa => f.write_str("--cert-reqs 1 or 2 needs --ca-certs (the client CAs)"),
            TlsError::SessionTable(e) => write!(f, "cannot map the TLS session table: {e}"),
            TlsError::TicketSecret(_) => f.write_str(
                "cannot make the session-ticket secret: the system random source failed",
            ),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read(_, e) => Some(e),
            TlsError::Refused(_, e) => Some(e),
            TlsError::Verifier(_, e) => Some(e),
            TlsError::SessionTable(e) => Some(e),
            // ring's `Unspecified` says nothing more than the message does.
            TlsError::Empty(..) | TlsError::NoCa | TlsError::TicketSecret(_) => None,
        }
    }
}

/// The loaded TLS configuration, shared by every TLS connection of a process.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub(crate) config: Arc<rustls::ServerConfig>,
}

impl PartialEq for TlsSettings {
    /// The same loaded configuration (two loads of the same files are not compared).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl TlsSettings {
    /// Reads the files and builds the rustls configuration.
    pub fn load(files: &TlsFiles) -> Result<TlsSettings, TlsError> {
        let mut provider = ring::default_provider();
        if let Some(suites) = &files.ciphers {
            provider.cipher_suites = suites.clone();
        }
        let provider = Arc::new(provider);
        let chain = certificates(&files.certfile)?;
        let key = private_key(&files.keyfile)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Refused(files.certfile.clone(), e))?;
        let builder = match files.cert_reqs {
            CertReqs::None => builder.with_no_client_auth(),
            reqs => {
                let ca = files.ca_certs.as_ref().ok_or(TlsError::NoCa)?;
                builder.with_client_cert_verifier(client_verifier(ca, reqs, provider)?)
            }
        };
        // `with_single_cert` checks that the key is the certificate's.
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            let at_fault = match e {
                rustls::Error::InconsistentKeys(_) => &files.keyfile,
                _ => &files.certfile,
            };
            TlsError::Refused(at_fault.clone(), e)
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Tickets (TLS 1.3, and TLS 1.2 clients that offer the extension) resume on
        // every worker: keys from a secret the master made before forking.
        // Both find only the sessions made under these very files and settings.
        let identity = identity(files)?;
        config.ticketer = Arc::new(SharedTickets::new(identity).map_err(TlsError::TicketSecret)?);
        // TLS 1.2 clients that offer no ticket resume by session ID: kept in memory
        // the master mapped before forking, so any worker finds them.
        config.session_storage =
            Arc::new(SharedSessions::new(identity).map_err(TlsError::SessionTable)?);
        Ok(TlsSettings {
            config: Arc::new(config),
        })
    }
}

/// A digest of what a resumed session vouches for: the certificate, key and client-CA
/// files' bytes and what is asked of clients. A HUP that changes any of them gives new
/// workers another digest, and the sessions made before stop resuming.
fn identity(files: &TlsFiles) -> Result<[u8; 32], TlsError> {
    let mut digest = ::ring::digest::Context::new(&::ring::digest::SHA256);
    for path in [
        Some(&files.certfile),
        Some(&files.keyfile),
        files.ca_certs.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let bytes = std::fs::read(path).map_err(|e| TlsError::Read(path.clone(), e))?;
        digest.update(&(bytes.len() as u64).to_le_bytes());
        digest.update(&bytes);
    }
    digest.update(match files.cert_reqs {
        CertReqs::None => b"0",
        CertReqs::Optional => b"1",
        CertReqs::Required => b"2",
    });
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.finish().as_ref());
    Ok(out)
}

fn open(path: &Path) -> Result<io::BufReader<std::fs::File>, TlsError> {
    std::fs::File::open(path)
        .map(io::BufReader::new)
        .map_err(|e| TlsError::Read(path.to_path_buf(), e))
}

/// Every certificate of a PEM file, in order (the leaf first, then its chain).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Read(path.to_path_buf(), e))?;
    if certs.is_empty() {
        return Err(TlsError::Empty(path.to_path_buf(), "PEM certificate"));
    }
    Ok(certs)
}

/// The first private key of a PEM file, whichever of PKCS#8, PKCS#1 and SEC1.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|e| TlsError::Read(path.to_path_buf(), e))?
        .ok_or_else(|| TlsError::Empty(path.to_path_buf(), "PEM private key"))
}

/// `WebPkiClientVerifier` over the CAs of `--ca-certs`; `Optional` also serves a
/// client that sends no certificate (one that sends a bad one is still refused).
fn client_verifier(
    path: &Path,
    reqs: CertReqs,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Refused(path.to_path_buf(), e))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match reqs {
        CertReqs::Optional => builder.allow_unauthenticated(),
        _ => builder,
    };
    builder
        .build()
        .map_err(|e| TlsError::Verifier(path.to_path_buf(), e))
}

#[cfg(test)]
mod tests;
