//! The one error type of the server layer; it keeps its cause.

use ferrule_http::{ParseError, ResponseError};
use std::fmt;
use std::io;

/// What can end a request or a connection early.
#[derive(Debug)]
pub enum Error {
    /// The client sent something the HTTP layer rejects.
    Parse(ParseError),
    /// The client was too slow: reading the head, the body, or accepting the response.
    Timeout(Phase),
    /// The client went away (reset, broken pipe, or EOF where data was due).
    Disconnected,
    /// The app's status or headers were refused.
    Response(ResponseError),
    /// The app used the response API out of order (e.g. body before head).
    Protocol(&'static str),
    /// Any other socket or file error.
    Io(io::Error),
    /// The request ran past `--timeout` and the server answered it 500 itself.
    Overdue,
}

/// Which wait timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Head,
    Body,
    Send,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Parse(e) => write!(f, "{e}"),
            Error::Timeout(p) => write!(
                f,
                "client timed out while {}",
                match p {
                    Phase::Head => "sending the request head",
                    Phase::Body => "sending the request body",
                    Phase::Send => "receiving the response",
                }
            ),
            Error::Disconnected => f.write_str("client disconnected"),
            Error::Response(e) => write!(f, "invalid response from the app: {e}"),
            Error::Protocol(what) => f.write_str(what),
            Error::Io(e) => write!(f, "{e}"),
            Error::Overdue => f.write_str("answered 500 after running past --timeout"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Parse(e) => Some(e),
            Error::Response(e) => Some(e),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ParseError> for Error {
    fn from(e: ParseError) -> Self {
        Error::Parse(e)
    }
}

impl From<ResponseError> for Error {
    fn from(e: ResponseError) -> Self {
        Error::Response(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof => Error::Disconnected,
            _ => Error::Io(e),
        }
    }
}

impl Error {
    /// The status to answer with if nothing has been sent yet; `None` means just close.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Parse(ParseError::NoMoreData) => None,
            Error::Parse(e) => Some(e.status()),
            Error::Timeout(Phase::Head | Phase::Body) => Some(408),
            Error::Response(_) | Error::Protocol(_) | Error::Io(_) => Some(500),
            Error::Timeout(Phase::Send) | Error::Disconnected | Error::Overdue => None,
        }
    }
}
