//! Names and PEM of certificates made here (rcgen), as mod_ssl and nginx write them.

use super::{escape, pem, subject_and_issuer, verify};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::CertificateDer;

fn name(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (t, v) in parts {
        dn.push(t.clone(), *v);
    }
    dn
}

#[test]
fn subject_and_issuer_are_rfc_2253_most_specific_first() {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name = name(&[
        (DnType::CountryName, "DE"),
        (DnType::OrganizationName, "Acme, Inc."),
        (DnType::CommonName, "Acme CA"),
    ]);
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = name(&[
        (DnType::OrganizationalUnitName, "Ops"),
        (DnType::CommonName, "#client <one>"),
    ]);
    let leaf = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (subject, issuer) = subject_and_issuer(leaf.der());
    assert_eq!(subject, r"CN=\#client \<one\>,OU=Ops");
    assert_eq!(issuer, r"CN=Acme CA,O=Acme\, Inc.,C=DE");
}

#[test]
fn a_certificate_that_cannot_be_read_has_empty_names() {
    let junk = CertificateDer::from(vec![0x30, 0x82, 0xff]);
    assert_eq!(subject_and_issuer(&junk), (String::new(), String::new()));
}

#[test]
fn pem_is_64_columns_between_the_markers() {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["x".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    // rcgen's own PEM is the reference.
    assert_eq!(pem(cert.der()), cert.pem().replace("\r\n", "\n"));
}

#[test]
fn verify_and_escape() {
    assert_eq!(verify(None), "NONE");
    let der = CertificateDer::from(vec![0u8]);
    assert_eq!(verify(Some(&der)), "SUCCESS");
    for (raw, want) in [
        ("plain", "plain"),
        (" lead", r"\ lead"),
        ("trail ", r"trail\ "),
        ("a+b;c\"d\\e", r#"a\+b\;c\"d\\e"#),
        ("x#y", "x#y"),
    ] {
        assert_eq!(escape(raw), want, "{raw}");
    }
}
