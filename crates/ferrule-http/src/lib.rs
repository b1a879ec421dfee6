//! Sans-IO HTTP/1.x for ferrule: bytes in, parsed heads and body data out;
//! response heads and chunks serialised into caller-owned buffers.
//!
//! Nothing here touches a socket, a clock (time is passed in) or Python, so every
//! rule is checked by table tests, the gunicorn corpus and the fuzz targets alone.
#![forbid(unsafe_code)]

mod body;
mod chars;
mod checked;
mod client_addr;
mod config;
mod date;
mod error;
mod forwarded;
mod framing;
mod fuzz;
mod head;
#[cfg(test)]
mod mutate;
pub mod percent;
mod proxy;
mod response;
mod span;
mod target;
mod uwsgi;

pub use body::{BodyDecoder, Step};
pub use checked::CheckedField;
pub use client_addr::{
    field_values, parse_forwarded, parse_x_forwarded_for, rightmost_untrusted, vouched_hop,
    ForwardedElement, ForwardedError, Node, Proto,
};
pub use config::{HeaderMap, ParserConfig, MAX_REQUEST_LINE};
pub use date::DateCache;
pub use error::ParseError;
pub use forwarded::{
    scan_forwarding, secure_scheme, ForwardingScan, SchemeHeaders, SECURE_SCHEME_HEADERS,
};
pub use framing::{BodyKind, Framing};
pub use fuzz::fuzz_forwarded;
pub use fuzz::fuzz_one;
pub use fuzz::fuzz_proxy;
pub use fuzz::fuzz_uwsgi;
pub use head::{empty_lines, parse_head, parse_head_after, parse_head_into, Head};
pub use proxy::{parse_proxy, proxy_signature, ProxyError, ProxyHeader, ProxyMode};
pub use response::{
    choose_framing, classify_field, error_response, finish_head, parse_status, reason_phrase,
    write_chunk, write_field, write_status_line, FieldKind, ResponseError, ResponseFraming,
    LAST_CHUNK,
};
pub use span::{Header, Span};
pub use target::{Target, TargetForm, Version};
pub use uwsgi::{
    finish_uwsgi_head, is_var_of_field, parse_uwsgi, parse_uwsgi_into, uwsgi_client,
    uwsgi_error_response, uwsgi_head, uwsgi_packet, uwsgi_response_framing, uwsgi_vars,
    Inconsistency, UwsgiError, UwsgiHead, UwsgiPacket, UWSGI_HEADER_LEN,
};
