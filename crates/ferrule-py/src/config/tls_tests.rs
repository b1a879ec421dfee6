//! The TLS settings beside the certificate, as the front end passes them: typed once.

use super::defaults::tests::{config, default_settings};
use ferrule_server::{openssl_name, Bind, BindTls, Endpoint};
use pyo3::prelude::*;

#[test]
fn ciphers_are_typed_once_and_a_bad_list_is_one_line() {
    Python::initialize();
    Python::attach(|py| {
        let d = default_settings(py);
        assert_eq!(config(&d).unwrap().server.ciphers, None);
        d.set_item("ciphers", "ECDHE+AESGCM:!aECDSA").unwrap();
        let suites = config(&d).unwrap().server.ciphers.unwrap();
        let names: Vec<&str> = suites.into_iter().filter_map(openssl_name).collect();
        assert_eq!(
            names,
            [
                "TLS_AES_256_GCM_SHA384",
                "TLS_CHACHA20_POLY1305_SHA256",
                "TLS_AES_128_GCM_SHA256",
                "ECDHE-RSA-AES256-GCM-SHA384",
                "ECDHE-RSA-AES128-GCM-SHA256",
            ]
        );
        for bad in ["RC4:3DES", "", "HIGH:@NOPE"] {
            d.set_item("ciphers", bad).unwrap();
            let e = config(&d).err().unwrap_or_default();
            assert!(
                e.starts_with(&format!("ciphers {bad:?}: ")) && !e.contains('\n'),
                "{e}"
            );
        }
    });
}

#[test]
fn bind_schemes_reach_the_server_config_and_the_workers() {
    Python::initialize();
    Python::attach(|py| {
        let d = default_settings(py);
        d.set_item(
            "bind",
            vec![
                "127.0.0.1:9000",
                "http://127.0.0.1:9001",
                "http+unix:/tmp/h.sock",
            ],
        )
        .unwrap();
        let cfg = config(&d).unwrap();
        let tls: Vec<BindTls> = cfg.server.binds.iter().map(|e| e.tls).collect();
        assert_eq!(tls, [BindTls::WithCertfile, BindTls::Plain, BindTls::Plain]);
        // A worker serving its master's sockets keeps each one's scheme.
        let inherited = cfg.inherit(vec![5, 6, 7, 8]).unwrap().server.binds;
        let want: Vec<Endpoint> = [
            (5, BindTls::WithCertfile),
            (6, BindTls::Plain),
            (7, BindTls::Plain),
            (8, BindTls::WithCertfile),
        ]
        .into_iter()
        .map(|(fd, tls)| Endpoint {
            bind: Bind::Fd(fd),
            tls,
        })
        .collect();
        assert_eq!(inherited, want);
        // Until the TLS transport lands there is no certificate to serve https with.
        d.set_item("bind", vec!["127.0.0.1:9000", "https://127.0.0.1:9443"])
            .unwrap();
        let e = config(&d).err().unwrap_or_default();
        assert!(
            e.starts_with("bind \"https://127.0.0.1:9443\": https needs --certfile"),
            "{e}"
        );
    });
}
