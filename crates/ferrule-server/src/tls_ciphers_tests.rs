use super::{cipher_suites, openssl_name};

const T13: &str = "TLS_AES_256_GCM_SHA384 TLS_CHACHA20_POLY1305_SHA256 TLS_AES_128_GCM_SHA256";
const E256: &str = "ECDHE-ECDSA-AES256-GCM-SHA384";
const R256: &str = "ECDHE-RSA-AES256-GCM-SHA384";
const ECHA: &str = "ECDHE-ECDSA-CHACHA20-POLY1305";
const RCHA: &str = "ECDHE-RSA-CHACHA20-POLY1305";
const E128: &str = "ECDHE-ECDSA-AES128-GCM-SHA256";
const R128: &str = "ECDHE-RSA-AES128-GCM-SHA256";

/// The OpenSSL names of what `list` selects, space-separated.
fn names(list: &str) -> String {
    let suites = cipher_suites(list).unwrap_or_else(|e| panic!("{list:?}: {e}"));
    suites
        .into_iter()
        .map(|s| openssl_name(s).unwrap_or("?"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// TLS 1.3's suites (kept, first) and then these TLS 1.2 ones.
fn kept(tls12: &[&str]) -> String {
    std::iter::once(T13)
        .chain(tls12.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn real_configs() {
    let all = kept(&[E256, R256, ECHA, RCHA, E128, R128]);
    let table: &[(&str, String)] = &[
        // Mozilla SSL Configuration Generator, "intermediate" (v5.7): the DHE ones are
        // not in rustls and drop out; the order is the list's.
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
             ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
             DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305",
            kept(&[E128, R128, E256, R256, ECHA, RCHA]),
        ),
        // Mozilla "modern": TLS 1.3 only (its `ciphersuites`), in its order.
        (
            "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
            "TLS_AES_128_GCM_SHA256 TLS_AES_256_GCM_SHA384 TLS_CHACHA20_POLY1305_SHA256".into(),
        ),
        // Mozilla "old": CBC, RSA key exchange and 3DES drop out.
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:\
             ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES128-SHA:AES128-GCM-SHA256:AES128-SHA:DES-CBC3-SHA",
            kept(&[E128, R128, ECHA]),
        ),
        // nginx's default ssl_ciphers, in countless Ansible roles.
        ("HIGH:!aNULL:!MD5", all.clone()),
        ("DEFAULT", all.clone()),
        ("ALL:@STRENGTH", all.clone()),
        // Python's old restricted server list, as Django deployment guides copied it.
        (
            "ECDH+AESGCM:ECDH+CHACHA20:DH+AESGCM:DH+CHACHA20:ECDH+AES256:DH+AES256:ECDH+AES128:\
             DH+AES:RSA+AESGCM:RSA+AES:!aNULL:!MD5:!DSS",
            kept(&[E256, R256, E128, R128, ECHA, RCHA]),
        ),
        ("ECDHE+AESGCM:!aNULL", kept(&[E256, R256, E128, R128])),
        ("TLSv1.2", all.clone()),
        ("EECDH+AESGCM:EDH+AESGCM", kept(&[E256, R256, E128, R128])),
        // gunicorn 19's default: rustls' own list.
        ("TLSv1", all.clone()),
        // IANA names, and rustls' TLS13_ spelling.
        (
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS13_AES_128_GCM_SHA256",
            format!("{R128} TLS_AES_128_GCM_SHA256"),
        ),
        ("ecdhe-rsa-aes128-gcm-sha256", kept(&[R128])),
    ];
    for (list, want) in table {
        assert_eq!(names(list), *want, "{list:?}");
    }
}

#[test]
fn operators() {
    let table: &[(&str, String)] = &[
        // `-` removes, a later element adds back at the end; `!` removes for good.
        (
            "ALL:-ECDSA:ECDSA",
            kept(&[R256, RCHA, R128, E256, ECHA, E128]),
        ),
        ("ALL:!ECDSA:ECDSA", kept(&[R256, RCHA, R128])),
        ("!aECDSA:HIGH", kept(&[R256, RCHA, R128])),
        // `+` moves to the end, keeping the rest's order.
        ("ALL:+CHACHA20", kept(&[E256, R256, E128, R128, ECHA, RCHA])),
        ("ALL:+aRSA", kept(&[E256, ECHA, E128, R256, RCHA, R128])),
        // Adding what is there already does not move it.
        ("AES128:ALL", kept(&[E128, R128, E256, R256, ECHA, RCHA])),
        // @STRENGTH is a stable sort by key length.
        (
            "AES128:CHACHA20:AES256:@STRENGTH",
            kept(&[ECHA, RCHA, E256, R256, E128, R128]),
        ),
        (
            "HIGH:@SECLEVEL=2",
            kept(&[E256, R256, ECHA, RCHA, E128, R128]),
        ),
        // "RSA" is RSA key exchange in OpenSSL: !RSA leaves ECDHE-RSA alone.
        ("HIGH:!RSA", kept(&[E256, R256, ECHA, RCHA, E128, R128])),
        // SHA256/SHA384 are the MACs of CBC suites; AEAD suites have none.
        (
            "HIGH:!SHA256:!SHA384:!SHA1",
            kept(&[E256, R256, ECHA, RCHA, E128, R128]),
        ),
        // Naming a TLS 1.3 suite sets TLS 1.3's list too.
        (
            "TLSv1.3:AESGCM",
            format!("{T13} {E256} {R256} {E128} {R128}"),
        ),
        (
            "TLSv1.3:!TLS_CHACHA20_POLY1305_SHA256",
            "TLS_AES_256_GCM_SHA384 TLS_AES_128_GCM_SHA256".into(),
        ),
        // Separators: colon, comma, space; empty elements are skipped.
        ("AES256 , CHACHA20::", kept(&[E256, R256, ECHA, RCHA])),
    ];
    for (list, want) in table {
        assert_eq!(names(list), *want, "{list:?}");
    }
}

#[test]
fn refused() {
    for list in [
        "",
        "  ",
        "RC4:3DES",
        "DHE-RSA-AES128-GCM-SHA256",
        "ECDHE+SHA384",
        // HAProxy's docs' style with a MAC word: AEAD suites have no SHA384 MAC.
        "ECDHE+aRSA+AES256+GCM+SHA384",
        "AES128-SHA:AES256-SHA",
        "MEDIUM:LOW",
        "HIGH:!HIGH",
        "!ALL:HIGH",
        "-ALL",
        "nonsense",
        "+",
        "!",
    ] {
        let e = cipher_suites(list).expect_err(list);
        assert!(e.starts_with("ciphers ") && !e.contains('\n'), "{e}");
        assert!(e.contains("ECDHE-RSA-AES128-GCM-SHA256"), "{e}");
    }
    let e = cipher_suites("HIGH:@FOO").expect_err("@FOO");
    assert!(e.contains("@FOO") && !e.contains('\n'), "{e}");
}
