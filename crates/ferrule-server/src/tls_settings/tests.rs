//! Loading the files: each way they can be wrong names the file at fault.

use super::{CertReqs, TlsError, TlsFiles, TlsSettings};
use std::path::{Path, PathBuf};

/// A self-signed `localhost` certificate and its key, and a second, unrelated key.
fn write_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let paths = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("other.pem"),
    );
    std::fs::write(&paths.0, cert.pem()).unwrap();
    std::fs::write(&paths.1, key.serialize_pem()).unwrap();
    std::fs::write(&paths.2, other.serialize_pem()).unwrap();
    paths
}

fn files(certfile: &Path, keyfile: &Path) -> TlsFiles {
    TlsFiles {
        certfile: certfile.to_path_buf(),
        keyfile: keyfile.to_path_buf(),
        ..TlsFiles::default()
    }
}

#[test]
fn each_bad_file_is_named() {
    let dir = std::env::temp_dir().join(format!("ferrule-tls-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key, other) = write_files(&dir);
    let missing = dir.join("missing.pem");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a PEM file\n").unwrap();

    assert!(TlsSettings::load(&files(&cert, &key)).is_ok());
    let cases: Vec<(TlsFiles, &Path, &str)> = vec![
        (files(&missing, &key), &missing, "cannot read"),
        (files(&cert, &missing), &missing, "cannot read"),
        (files(&empty, &key), &empty, "no PEM certificate"),
        (files(&cert, &empty), &empty, "no PEM private key"),
        // A key that is not the certificate's: the key file is at fault.
        (files(&cert, &other), &other, "key"),
        // The certificate where the key should be.
        (files(&cert, &cert), &cert, "no PEM private key"),
    ];
    for (f, at_fault, words) in cases {
        let line = TlsSettings::load(&f).unwrap_err().to_string();
        assert!(line.contains(&at_fault.display().to_string()), "{line}");
        assert!(line.contains(words), "{line}");
    }
    let no_ca = TlsFiles {
        cert_reqs: CertReqs::Required,
        ..files(&cert, &key)
    };
    assert!(matches!(TlsSettings::load(&no_ca), Err(TlsError::NoCa)));
    let with_ca = TlsFiles {
        cert_reqs: CertReqs::Optional,
        ca_certs: Some(cert.clone()),
        ..files(&cert, &key)
    };
    assert!(TlsSettings::load(&with_ca).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cert_reqs_are_gunicorns_integers() {
    assert_eq!(CertReqs::from_int(0), Some(CertReqs::None));
    assert_eq!(CertReqs::from_int(1), Some(CertReqs::Optional));
    assert_eq!(CertReqs::from_int(2), Some(CertReqs::Required));
    assert_eq!(CertReqs::from_int(3), None);
    assert_eq!(CertReqs::from_int(-1), None);
}
