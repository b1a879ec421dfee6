//! The `SSL_*` keys of a TLS request, as Apache mod_ssl and nginx give them to apps.
//!
//! Their values are nearly always one of a few words (`TLSv1.3`, a suite's OpenSSL
//! name, `NONE`), so those are Python strings made once ([`TlsWords`]): a keep-alive
//! request over TLS then makes no string for them (measured under callgrind: about
//! 1,000 instructions a request when each was decoded anew).

use ferrule_server::{client_cert, Exchange};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// The values the `SSL_*` keys and `HTTPS` take, each made once.
pub(super) struct TlsWords {
    words: Vec<(&'static str, Py<PyString>)>,
}

impl TlsWords {
    pub(super) fn new(py: Python<'_>) -> TlsWords {
        let fixed = ["on", "TLSv1.3", "TLSv1.2", "NONE", "SUCCESS"];
        let words = fixed
            .into_iter()
            .chain(ferrule_server::openssl_names())
            .map(|w| (w, PyString::intern(py, w).unbind()))
            .collect();
        TlsWords { words }
    }

    /// The string made once for `value`, or a new one for a value not foreseen.
    fn get<'py>(&self, py: Python<'py>, value: &str) -> Bound<'py, PyString> {
        match self.words.iter().find(|(w, _)| *w == value) {
            Some((_, s)) => s.bind(py).clone(),
            None => PyString::new(py, value),
        }
    }

    /// Sets the session's keys in `env` (their names pushed on `keys`, the request's
    /// extras); `https`: also `HTTPS=on` (a plain bind beside, so not in the template).
    pub(super) fn set_keys<'py>(
        &self,
        py: Python<'py>,
        env: &Bound<'py, PyDict>,
        ex: &Exchange,
        keys: &mut Vec<Py<PyString>>,
        https: bool,
    ) -> PyResult<()> {
        let Some(facts) = ex.tls() else {
            return Ok(());
        };
        let mut set = |key: &Bound<'py, PyString>, value: Bound<'py, PyString>| -> PyResult<()> {
            env.set_item(key, value)?;
            keys.push(key.clone().unbind());
            Ok(())
        };
        if https {
            set(intern!(py, "HTTPS"), self.get(py, "on"))?;
        }
        set(intern!(py, "SSL_PROTOCOL"), self.get(py, facts.protocol()))?;
        set(intern!(py, "SSL_CIPHER"), self.get(py, &facts.cipher()))?;
        let cert = facts.client_cert();
        set(
            intern!(py, "SSL_CLIENT_VERIFY"),
            self.get(py, client_cert::verify(cert)),
        )?;
        if let Some(cert) = cert {
            // Different for each client: made per request.
            let (subject, issuer) = client_cert::subject_and_issuer(cert);
            set(intern!(py, "SSL_CLIENT_S_DN"), PyString::new(py, &subject))?;
            set(intern!(py, "SSL_CLIENT_I_DN"), PyString::new(py, &issuer))?;
            set(
                intern!(py, "SSL_CLIENT_CERT"),
                PyString::new(py, &client_cert::pem(cert)),
            )?;
        }
        Ok(())
    }
}
