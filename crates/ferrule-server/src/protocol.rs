//! Which protocol a listener speaks, and what a protocol can hand the app besides
//! an HTTP/1 head. A seam below the exchange and the drivers (`driver.rs`): the
//! Python bridge asks an exchange which protocol carried it
//! (`Exchange::protocol`) and for the variables it brought ready-made
//! (`Exchange::ready_vars`), and knows no driver.

use ferrule_http::Head;

/// A listener's protocol: which driver serves its connections (`driver::serve`).
/// Every bind speaks `--protocol` (gunicorn's meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.0 and 1.1 (`driver/http1.rs`): the environ is derived from the head.
    #[default]
    Http1,
    /// uwsgi from a front server (nginx `uwsgi_pass`, Apache `mod_proxy_uwsgi`;
    /// `driver/uwsgi.rs`): one request per connection, its environ ready-made.
    Uwsgi,
}

impl Protocol {
    /// The `--protocol` value that selects it (gunicorn's names).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http",
            Protocol::Uwsgi => "uwsgi",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    /// `--protocol`'s values, gunicorn's names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "http" => Ok(Protocol::Http1),
            "uwsgi" => Ok(Protocol::Uwsgi),
            other => Err(format!("protocol must be http or uwsgi (got {other:?})")),
        }
    }
}

/// The name/value byte pairs a protocol delivered ready-made (uwsgi's packet:
/// PATH_INFO already decoded, SERVER_NAME, REMOTE_ADDR, HTTP_* from the front
/// server), in the order they came. A view of the request's head, whose fields are
/// the packet's variables (`ferrule_http::uwsgi_head`): nothing is copied.
#[derive(Clone, Copy)]
pub struct ReadyVars<'a> {
    head: &'a Head,
    buf: &'a [u8],
}

impl<'a> ReadyVars<'a> {
    pub(crate) fn new(head: &'a Head, buf: &'a [u8]) -> Self {
        ReadyVars { head, buf }
    }

    /// The variables, name and value, in the order they came.
    pub fn iter(self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let (head, buf) = (self.head, self.buf);
        head.headers
            .iter()
            .map(move |h| (head.get(buf, h.name), head.get(buf, h.value)))
    }

    pub fn len(&self) -> usize {
        self.head.headers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.head.headers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::{Protocol, ReadyVars};
    use ferrule_http::{parse_uwsgi, uwsgi_head, ParserConfig};

    #[test]
    fn variables_come_back_in_order() {
        let vars: &[(&[u8], &[u8])] = &[
            (b"REQUEST_METHOD", b"GET"),
            (b"SERVER_PROTOCOL", b"HTTP/1.1"),
            (b"PATH_INFO", b"/a b"),
            (b"EMPTY", b""),
        ];
        let mut buf = vec![0, 0, 0, 0];
        for (k, v) in vars {
            for f in [*k, *v] {
                buf.extend_from_slice(&(f.len() as u16).to_le_bytes());
                buf.extend_from_slice(f);
            }
        }
        let size = (buf.len() - 4) as u16;
        buf[1..3].copy_from_slice(&size.to_le_bytes());
        let packet = parse_uwsgi(&buf).unwrap().unwrap();
        let head = uwsgi_head(&buf, &packet, &ParserConfig::default(), Vec::new()).unwrap();
        let ready = ReadyVars::new(&head.head, &buf);
        assert_eq!(ready.iter().collect::<Vec<_>>(), vars);
        assert_eq!((ready.len(), ready.is_empty()), (4, false));
    }

    #[test]
    fn protocol_values_are_gunicorns() {
        assert_eq!("http".parse(), Ok(Protocol::Http1));
        assert_eq!("uwsgi".parse(), Ok(Protocol::Uwsgi));
        for p in [Protocol::Http1, Protocol::Uwsgi] {
            assert_eq!(p.name().parse(), Ok(p));
        }
        for bad in ["HTTP", "uWSGI", "h2", ""] {
            assert!(bad.parse::<Protocol>().is_err(), "{bad:?}");
        }
    }
}
