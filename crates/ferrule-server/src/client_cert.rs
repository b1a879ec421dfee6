//! What a TLS request tells the app about its session, as Apache mod_ssl and nginx
//! name it: `SSL_PROTOCOL`, `SSL_CIPHER`, `SSL_CLIENT_VERIFY`, and the client
//! certificate's subject and issuer (`SSL_CLIENT_S_DN`, `SSL_CLIENT_I_DN`, RFC 2253
//! strings, most specific first) and PEM (`SSL_CLIENT_CERT`).
//!
//! The names are read from the certificate's DER with a small walker of the few
//! structures needed (rustls already verified the certificate, so a malformed one
//! does not get here; should one, its names are empty rather than an error).

use base64::Engine;
use rustls::pki_types::CertificateDer;
use rustls::ServerConnection;
use std::borrow::Cow;

/// The session facts of one TLS connection (`Exchange::tls`).
pub struct TlsFacts<'a> {
    session: &'a ServerConnection,
}

impl<'a> TlsFacts<'a> {
    pub(crate) fn new(session: &'a ServerConnection) -> TlsFacts<'a> {
        TlsFacts { session }
    }

    /// `TLSv1.3` or `TLSv1.2` (OpenSSL's names, which both servers use).
    pub fn protocol(&self) -> &'static str {
        match self.session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        }
    }

    /// The suite's name as OpenSSL writes it, which nginx's `$ssl_cipher` and Apache's
    /// `SSL_CIPHER` show (`TLS_AES_128_GCM_SHA256`, `ECDHE-RSA-AES128-GCM-SHA256`);
    /// the IANA name for a suite OpenSSL has no name for.
    pub fn cipher(&self) -> Cow<'static, str> {
        let Some(suite) = self.session.negotiated_cipher_suite() else {
            return Cow::Borrowed("");
        };
        if let Some(name) = crate::tls_ciphers::openssl_name(suite) {
            return Cow::Borrowed(name);
        }
        let name = format!("{:?}", suite.suite());
        // rustls marks the TLS 1.3 suites `TLS13_`; IANA (and OpenSSL) write `TLS_`.
        Cow::Owned(match name.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => name,
        })
    }

    /// The client's certificate, verified against `--ca-certs` (rustls refuses the
    /// handshake otherwise); `None` when the client sent none.
    pub fn client_cert(&self) -> Option<&'a CertificateDer<'static>> {
        self.session.peer_certificates().and_then(|c| c.first())
    }
}

/// `SSL_CLIENT_VERIFY`: `SUCCESS` with a (verified) certificate, else `NONE`.
pub fn verify(cert: Option<&CertificateDer<'_>>) -> &'static str {
    match cert {
        Some(_) => "SUCCESS",
        None => "NONE",
    }
}

/// The certificate as PEM (`SSL_CLIENT_CERT`).
pub fn pem(cert: &CertificateDer<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The subject and issuer names, RFC 2253 strings (empty when unreadable).
pub fn subject_and_issuer(cert: &CertificateDer<'_>) -> (String, String) {
    names(cert.as_ref()).unwrap_or_default()
}

/// One DER element: its tag, its content and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        n => {
            let count = usize::from(n & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[count..])
        }
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Certificate → tbsCertificate → (subject, issuer).
fn names(der: &[u8]) -> Option<(String, String)> {
    let (_, cert, _) = element(der)?;
    let (_, tbs, _) = element(cert)?;
    let mut rest = tbs;
    // version [0], explicit and optional
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    let (_, _serial, rest) = element(rest)?;
    let (_, _signature, rest) = element(rest)?;
    let (_, issuer, rest) = element(rest)?;
    let (_, _validity, rest) = element(rest)?;
    let (_, subject, _) = element(rest)?;
    Some((rfc2253(subject)?, rfc2253(issuer)?))
}

/// A Name's content (a sequence of sets of attribute-value pairs) as RFC 2253: the
/// last RDN first, pairs of one RDN joined by `+`.
fn rfc2253(mut name: &[u8]) -> Option<String> {
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (_, mut set, rest) = element(name)?;
        name = rest;
        let mut pairs = Vec::new();
        while !set.is_empty() {
            let (_, pair, rest) = element(set)?;
            set = rest;
            let (_, oid, value) = element(pair)?;
            let (tag, text, _) = element(value)?;
            let text = match string(tag, text) {
                Some(t) => escape(&t),
                None => format!("#{}", hex(value)),
            };
            pairs.push(format!("{}={text}", attribute(oid)));
        }
        rdns.push(pairs.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// The short names RFC 2253 and OpenSSL give the usual attributes; others dotted.
fn attribute(oid: &[u8]) -> String {
    let dotted = dotted(oid);
    let short = match dotted.as_str() {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.5" => "serialNumber",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return dotted,
    };
    short.to_string()
}

fn dotted(oid: &[u8]) -> String {
    let mut parts: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for &b in oid {
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() {
                let first = (acc / 40).min(2);
                parts.push(first);
                parts.push(acc - first * 40);
            } else {
                parts.push(acc);
            }
            acc = 0;
        }
    }
    parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// The directory string types: UTF8, Printable, IA5, Teletex (read as Latin-1),
/// BMP (UTF-16BE).
fn string(tag: u8, bytes: &[u8]) -> Option<String> {
    match tag {
        0x0c | 0x13 | 0x16 => std::str::from_utf8(bytes).ok().map(str::to_string),
        0x14 => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        0x1e => {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// RFC 2253 §2.4: `,+"\<>;` escaped anywhere, `#` or a space first, a space last.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
