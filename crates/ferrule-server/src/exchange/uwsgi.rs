//! The head of an answer to a uwsgi request, as nginx's uwsgi module and Apache's
//! `mod_proxy_uwsgi` read it: a status line, the app's fields, `Content-Length` when
//! the server knows the body's size, the blank line. The body is never chunked (nginx
//! copies a uwsgi body as it comes): without a length it ends with the connection,
//! which a uwsgi connection does after its one request anyway.
//!
//! No `Date` or `Server` of ferrule's: nginx passes an upstream's `Date` and `Server`
//! on to its client for uwsgi (it hides them for `proxy_pass` only), which would
//! replace its own `Server` (and `server_tokens`), and Apache adds both itself. An
//! app's own fields pass through. No `Connection` field either.

use super::Exchange;
use crate::error::Error;
use ferrule_http::{finish_uwsgi_head, uwsgi_response_framing, write_field, ResponseFraming};

impl Exchange {
    /// `end_head` for a uwsgi request; `declared` is the app's Content-Length.
    #[inline(never)]
    pub(super) fn end_uwsgi_head(
        &mut self,
        code: u16,
        declared: Option<u64>,
        known_len: Option<u64>,
    ) -> Result<(), Error> {
        let head_req = self.method() == b"HEAD";
        let framing = match uwsgi_response_framing(head_req, code, declared, known_len) {
            // A HEAD answer states the length the GET's body would have, as over HTTP.
            ResponseFraming::Length(n) if head_req => {
                if declared.is_none() {
                    write_field(
                        &mut self.out,
                        b"Content-Length",
                        itoa::Buffer::new().format(n).as_bytes(),
                    );
                }
                ResponseFraming::NoBody
            }
            f => f,
        };
        finish_uwsgi_head(&mut self.out, framing, declared.is_some());
        self.head_ended(code, framing, declared.is_some());
        Ok(())
    }
}
