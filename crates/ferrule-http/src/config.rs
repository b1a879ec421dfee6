//! Parser switches and limits, with gunicorn's names and defaults.

/// What to do with header names that contain `_` (gunicorn's `--header-map`).
///
/// `Content_Length` and `Content-Length` both become `HTTP_CONTENT_LENGTH` in a WSGI
/// environ, so a proxy that only understands one of them can be fooled by the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderMap {
    /// Silently leave such headers out of the request (the default).
    #[default]
    Drop,
    /// Reject the request with 400.
    Refuse,
    /// Keep them, mapped like their dashed twin.
    Dangerous,
}

impl HeaderMap {
    /// The setting's value that selects it (`drop`, `refuse`, `dangerous`).
    pub fn name(self) -> &'static str {
        match self {
            HeaderMap::Drop => "drop",
            HeaderMap::Refuse => "refuse",
            HeaderMap::Dangerous => "dangerous",
        }
    }
}

impl std::str::FromStr for HeaderMap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "drop" => Ok(HeaderMap::Drop),
            "refuse" => Ok(HeaderMap::Refuse),
            "dangerous" => Ok(HeaderMap::Dangerous),
            other => Err(format!(
                "header-map must be one of drop, refuse, dangerous (got {other:?})"
            )),
        }
    }
}

/// Largest request line accepted whatever the setting (gunicorn's MAX_REQUEST_LINE).
pub const MAX_REQUEST_LINE: usize = 8190;
/// What `limit_request_line = 0` means: large, but still bounded so a head always ends.
pub const UNLIMITED_REQUEST_LINE: usize = 1 << 20;
/// Largest header field count accepted whatever the setting.
pub const MAX_HEADERS: usize = 32768;
/// Default and ceiling-free fallback for a header field's size.
pub const DEFAULT_FIELD_SIZE: usize = 8190;

/// Everything the parser needs to know, parsed once from the command line. Its
/// `Default` is where the defaults are written (the front end reads them from there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParserConfig {
    /// Longest request line in bytes, CRLF excluded; values above [`MAX_REQUEST_LINE`]
    /// are clamped to it and 0 means "unlimited" (bounded at [`UNLIMITED_REQUEST_LINE`]).
    pub limit_request_line: usize,
    /// Most header fields in one request.
    pub limit_request_fields: usize,
    /// Longest header field line in bytes, CRLF included (folded lines add up).
    pub limit_request_field_size: usize,
    /// Largest request body in bytes; 0 means no limit.
    pub limit_request_body: u64,
    pub header_map: HeaderMap,
    pub permit_obsolete_folding: bool,
    pub strip_header_spaces: bool,
    pub casefold_http_method: bool,
    pub permit_unconventional_http_method: bool,
    /// Serve HTTP/1.1 requests without Host, as gunicorn does (RFC 9112 §3.2: 400).
    pub permit_missing_host: bool,
}

impl Default for ParserConfig {
    fn default() -> Self {
        ParserConfig {
            limit_request_line: 4094,
            limit_request_fields: 100,
            limit_request_field_size: DEFAULT_FIELD_SIZE,
            limit_request_body: 0,
            header_map: HeaderMap::Drop,
            permit_obsolete_folding: false,
            strip_header_spaces: false,
            casefold_http_method: false,
            permit_unconventional_http_method: false,
            permit_missing_host: false,
        }
    }
}

impl ParserConfig {
    /// The request-line limit in force, with gunicorn's clamping.
    pub fn request_line_limit(&self) -> usize {
        match self.limit_request_line {
            0 => UNLIMITED_REQUEST_LINE,
            n => n.min(MAX_REQUEST_LINE),
        }
    }

    /// The field-count limit in force (clamped to 32768).
    pub fn fields_limit(&self) -> usize {
        self.limit_request_fields.min(MAX_HEADERS)
    }

    /// The field-size limit in force (0 means the 8190 default, not unlimited).
    pub fn field_size_limit(&self) -> usize {
        match self.limit_request_field_size {
            0 => DEFAULT_FIELD_SIZE,
            n => n,
        }
    }
}
