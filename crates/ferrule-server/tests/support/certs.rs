//! Certificates for the TLS tests over sockets, made here (rcgen): a CA, a `localhost`
//! leaf and a client certificate it signed, written to a fresh directory removed on
//! drop. Included by `tests/socket/tls.rs` and `tests/tls_room.rs`.

use ferrule_server::TlsFiles;
use rustls::pki_types::CertificateDer;
use std::path::PathBuf;
use std::sync::Arc;

/// A CA, and a `localhost` certificate and key it signed, written to a fresh directory.
pub(crate) struct Certs {
    pub dir: PathBuf,
    pub ca: CertificateDer<'static>,
    /// The CA and the leaf as PEM, for a certificate file written otherwise.
    ca_pem: String,
    leaf_pem: String,
    /// A client certificate the CA signed, and its key (PKCS#8 DER).
    pub client_cert: CertificateDer<'static>,
    pub client_key: Vec<u8>,
}

impl Certs {
    pub(crate) fn new(name: &str) -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = std::env::temp_dir().join(format!("ferrule-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .signed_by(&client_key, &ca, &ca_key)
            .unwrap();
        Certs {
            dir,
            ca: ca.der().clone(),
            ca_pem: ca.pem(),
            leaf_pem: leaf.pem(),
            client_cert: client.der().clone(),
            client_key: client_key.serialize_der(),
        }
    }

    /// The certificate file becomes the leaf then the CA `copies` times: a server flight
    /// as long as wanted.
    pub(crate) fn with_long_chain(self, copies: usize) -> Certs {
        let chain = self.leaf_pem.clone() + &self.ca_pem.repeat(copies);
        std::fs::write(self.dir.join("cert.pem"), chain).unwrap();
        self
    }

    pub(crate) fn files(&self) -> TlsFiles {
        TlsFiles {
            certfile: self.dir.join("cert.pem"),
            keyfile: self.dir.join("key.pem"),
            ..TlsFiles::default()
        }
    }

    /// A client that trusts the CA and offers ALPN `http/1.1`.
    pub(crate) fn client(&self) -> Arc<rustls::ClientConfig> {
        self.client_with(false)
    }

    /// The same, sending the client certificate when `mine`.
    pub(crate) fn client_with(&self, mine: bool) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut cfg = match mine {
            false => builder.with_no_client_auth(),
            true => {
                let key = rustls::pki_types::PrivatePkcs8KeyDer::from(self.client_key.clone());
                builder
                    .with_client_auth_cert(vec![self.client_cert.clone()], key.into())
                    .unwrap()
            }
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
