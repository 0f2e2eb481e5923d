//! HTTP/1.1 request heads in, responses out.
//!
//! This file never sees a socket: the io layer appends bytes to a buffer, asks
//! [`HeadScanner`] whether a complete head has arrived, then parses it once with
//! [`parse_request_head`]. Everything here is bounded by [`HeadLimits`] and returns
//! a typed [`HeadError`] on hostile input instead of panicking.
//!
//! Also here: query-string and cookie parsing, the checks that decide whether a
//! value may be reflected into a response header, response encoding, and the
//! WebSocket accept key (RFC 6455 §4.2.2).

use std::fmt;

use base64::Engine as _;
use sha1::Digest as _;

/// Caps on a request head. The defaults (8 KiB, 64 headers) are generous for
/// browsers and Socket.IO clients and small enough that a slowloris client or a
/// 2000-header request costs us little.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Most bytes a head may take, request line and blank line included.
    pub max_head_bytes: usize,
    /// Most header fields a head may carry.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_head_bytes: 8192,
            max_headers: 64,
        }
    }
}

/// Why a request head was refused. [`HeadError::status`] gives the response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeadError {
    /// The head is longer than `max_head_bytes`.
    TooLarge,
    /// The head has more than `max_headers` fields.
    TooManyHeaders,
    /// Not an HTTP/1.x request head (bad token, bad line ending, non-UTF-8 value...).
    Malformed,
    /// A version other than HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion,
    /// Content-Length is not a plain decimal, or several differing values were sent.
    BadContentLength,
    /// Transfer-Encoding was sent: we do not accept chunked request bodies.
    UnsupportedTransferEncoding,
}

impl HeadError {
    /// The status code to answer with before closing the connection.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::UnsupportedVersion => 505,
            HeadError::UnsupportedTransferEncoding => 501,
            HeadError::Malformed | HeadError::BadContentLength => 400,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            HeadError::TooLarge => "request head too large",
            HeadError::TooManyHeaders => "too many request header fields",
            HeadError::Malformed => "malformed request head",
            HeadError::UnsupportedVersion => "unsupported HTTP version",
            HeadError::BadContentLength => "invalid Content-Length",
            HeadError::UnsupportedTransferEncoding => "Transfer-Encoding not supported",
        };
        f.write_str(s)
    }
}

impl std::error::Error for HeadError {}

/// Where the scanner is inside the head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ScanState {
    /// Before the request line. httparse skips empty lines here (RFC 9112 §2.2:
    /// "a server that is expecting to receive and parse a request-line SHOULD
    /// ignore at least one empty line (CRLF) received prior to the request-line"),
    /// so a blank line here does not end the head.
    #[default]
    Leading,
    /// Inside a line.
    Line,
    /// Just after a LF.
    Lf,
    /// After LF CR: one more LF ends the head.
    LfCr,
    /// The head ends at `scanned`.
    Done,
}

/// Incremental end-of-head finder.
///
/// Re-parsing a growing buffer on every read is quadratic for a head trickled one
/// byte at a time, so this only looks at bytes it has not seen yet: a head costs
/// linear work in total however it is split. The buffer passed to
/// [`find_head_end`](Self::find_head_end) must start at the head and only grow
/// between calls; call [`reset`](Self::reset) after consuming a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadScanner {
    /// Bytes of the buffer already examined.
    scanned: usize,
    state: ScanState,
    /// Total bytes examined since creation, to prove linear work in tests.
    #[cfg(test)]
    inspected: usize,
}

impl HeadScanner {
    /// A scanner at the start of a head.
    pub fn new() -> Self {
        Self::default()
    }

    /// `Ok(Some(n))`: the head is `buf[..n]`, blank line included. `Ok(None)`: need
    /// more bytes. `Err(TooLarge)` once `buf.len()` exceeds `max_head_bytes`
    /// without a complete head. Accepts "\r\n\r\n" and bare "\n\n" (and the mixed
    /// forms), as httparse does.
    ///
    /// If `buf` is shorter than what was already scanned, the caller has replaced
    /// the buffer without [`reset`](Self::reset); the scan starts over.
    pub fn find_head_end(
        &mut self,
        buf: &[u8],
        limits: &HeadLimits,
    ) -> Result<Option<usize>, HeadError> {
        if buf.len() < self.scanned {
            self.reset();
        }
        if self.state == ScanState::Done {
            return Ok(Some(self.scanned));
        }
        // Never look past the limit: a 20 MB buffer costs max_head_bytes of work.
        let limit = buf.len().min(limits.max_head_bytes);
        let start = self.scanned;
        let mut pos = start;
        let mut found = false;
        while pos < limit {
            if self.state == ScanState::Line {
                // Skip the rest of the line in one go.
                let rest = buf.get(pos..limit).unwrap_or_default();
                match rest.iter().position(|&b| b == b'\n') {
                    Some(k) => {
                        pos += k + 1;
                        self.state = ScanState::Lf;
                    }
                    None => pos = limit,
                }
                continue;
            }
            let Some(&b) = buf.get(pos) else { break };
            pos += 1;
            self.state = match (self.state, b) {
                (ScanState::Leading, b'\r' | b'\n') => ScanState::Leading,
                (ScanState::Lf | ScanState::LfCr, b'\n') => {
                    found = true;
                    ScanState::Done
                }
                (ScanState::Lf, b'\r') => ScanState::LfCr,
                _ => ScanState::Line,
            };
            if found {
                break;
            }
        }
        self.scanned = pos;
        #[cfg(test)]
        {
            self.inspected += pos - start;
        }
        if found {
            Ok(Some(pos))
        } else if buf.len() > limits.max_head_bytes {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        }
    }

    /// Start over for the next request on a keep-alive connection.
    pub fn reset(&mut self) {
        self.scanned = 0;
        self.state = ScanState::Leading;
    }

    /// Bytes already examined: the next call resumes here.
    pub fn scanned(&self) -> usize {
        self.scanned
    }
}

/// Request method. Methods are case-sensitive (RFC 9110 §9.1), so `get` is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `OPTIONS` (CORS preflight)
    Options,
    /// `HEAD`
    Head,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `PATCH`
    Patch,
    /// Any other token, `get` included.
    Other,
}

impl Method {
    /// Maps a method token as sent on the request line.
    pub fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "OPTIONS" => Method::Options,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// A parsed request head. Owns its strings so the read buffer can be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// Request target before '?', raw (not percent-decoded).
    pub path: String,
    /// Raw text after the first '?', "" if none.
    pub query: String,
    /// 0 or 1 (HTTP/1.0 or HTTP/1.1).
    pub minor_version: u8,
    /// Names lower-cased; values as sent, trimmed of spaces and tabs.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// First value of the named header (name compared case-insensitively).
    pub fn header(&self, lower_name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(lower_name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the named header, in order.
    pub fn header_all<'a>(&'a self, lower_name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(lower_name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-list header (over all its fields) contains `token`, ignoring case.
    fn has_token(&self, lower_name: &str, token: &str) -> bool {
        self.header_all(lower_name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case(token))
    }

    /// The declared body length. `None` if absent.
    ///
    /// RFC 9112 §6.1: "A server MAY reject a request that contains both
    /// Content-Length and Transfer-Encoding or process such a request in
    /// accordance with the Transfer-Encoding alone." We accept no request
    /// bodies with Transfer-Encoding at all: refusing is safer than guessing.
    ///
    /// RFC 9112 §6.3: "If a message is received without Transfer-Encoding and
    /// with an invalid Content-Length header field, then the message framing is
    /// invalid and the recipient MUST treat it as an unrecoverable error".
    /// Repeated identical values ("42, 42" or two fields of 42) are accepted, as
    /// RFC 9110 §8.6 allows.
    pub fn content_length(&self) -> Result<Option<u64>, HeadError> {
        if self.header("transfer-encoding").is_some() {
            return Err(HeadError::UnsupportedTransferEncoding);
        }
        let mut found: Option<u64> = None;
        for member in self.header_all("content-length").flat_map(|v| v.split(',')) {
            let member = member.trim_matches([' ', '\t']);
            // u64::from_str accepts a leading '+': require 1*DIGIT ourselves.
            if member.is_empty() || !member.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::BadContentLength);
            }
            let n: u64 = member.parse().map_err(|_| HeadError::BadContentLength)?;
            match found {
                Some(prev) if prev != n => return Err(HeadError::BadContentLength),
                _ => found = Some(n),
            }
        }
        Ok(found)
    }

    /// HTTP/1.1: persistent unless `Connection: close`; HTTP/1.0: only with
    /// `Connection: keep-alive` (RFC 9112 §9.3).
    pub fn keep_alive(&self) -> bool {
        if self.has_token("connection", "close") {
            return false;
        }
        self.minor_version >= 1 || self.has_token("connection", "keep-alive")
    }

    /// RFC 6455 §4.1: the opening handshake "MUST be a valid HTTP request" with
    /// "method GET", "HTTP version ... at least 1.1", an `Upgrade` field that
    /// includes "websocket" and a `Connection` field that includes "Upgrade"
    /// (tokens, case-insensitive).
    pub fn is_websocket_upgrade(&self) -> bool {
        self.method == Method::Get
            && self.minor_version >= 1
            && self.has_token("upgrade", "websocket")
            && self.has_token("connection", "upgrade")
    }

    /// First query parameter with this (decoded) name, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        parse_query(&self.query)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// First cookie with this name, over all `Cookie` fields.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.header_all("cookie")
            .flat_map(|h| parse_cookies(h).into_iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

/// Parses a complete head (`buf` holds the head and possibly body bytes after
/// it) and returns it with the number of bytes it took.
pub fn parse_request_head(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<(RequestHead, usize), HeadError> {
    let window = buf.get(..limits.max_head_bytes).unwrap_or(buf);
    // Each field needs at least 3 bytes ("a:\n"), so a window of w bytes holds
    // fewer than w/3 + 1 of them: sizing the array by that bounds the allocation
    // even when max_headers is huge, without changing which heads are refused.
    let slots = limits.max_headers.min(window.len() / 3 + 1);
    let mut slots = vec![httparse::EMPTY_HEADER; slots];
    let mut req = httparse::Request::new(&mut slots);
    let consumed = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head_bytes => {
            return Err(HeadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        // httparse accepts only HTTP/1.0 and HTTP/1.1 and reports anything else
        // on the request line's version (HTTP/2.0, HTTP/3) as a Version error.
        Err(httparse::Error::Version) => return Err(HeadError::UnsupportedVersion),
        Err(_) => return Err(HeadError::Malformed),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        // httparse lets obs-text (0x80-0xFF) through; we only keep UTF-8 text.
        let value = std::str::from_utf8(h.value).map_err(|_| HeadError::Malformed)?;
        headers.push((
            h.name.to_ascii_lowercase(),
            value.trim_matches([' ', '\t']).to_owned(),
        ));
    }
    Ok((
        RequestHead {
            method: Method::from_token(method),
            path: path.to_owned(),
            query: query.to_owned(),
            minor_version: version,
            headers,
        },
        consumed,
    ))
}

/// Most pairs taken from one query string or Cookie field; the rest is ignored.
const MAX_PAIRS: usize = 64;

/// application/x-www-form-urlencoded parsing (WHATWG URL §5.1): split on '&',
/// then on the first '='; '+' is a space; %XX decoded; a bad escape stays
/// literal; invalid UTF-8 is replaced. Empty segments are skipped. At most 64
/// pairs.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|seg| !seg.is_empty())
        .take(MAX_PAIRS)
        .map(|seg| {
            let (name, value) = seg.split_once('=').unwrap_or((seg, ""));
            (decode(name, true), decode(value, true))
        })
        .collect()
}

/// Percent-decodes (RFC 3986 §2.1) without treating '+' as a space. Invalid
/// escapes stay literal; invalid UTF-8 is replaced with U+FFFD.
pub fn percent_decode(s: &str) -> String {
    decode(s, false)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode(s: &str, plus_is_space: bool) -> String {
    if !s.bytes().any(|b| b == b'%' || (plus_is_space && b == b'+')) {
        return s.to_owned();
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let mut peek = bytes.clone();
                match (peek.next().and_then(hex_val), peek.next().and_then(hex_val)) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        bytes = peek;
                    }
                    _ => out.push(b'%'),
                }
            }
            _ => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one `Cookie` field (RFC 6265 §4.2.1: `cookie-pair *( ";" SP
/// cookie-pair )`), leniently as browsers do: pieces without '=' or with an
/// empty name are ignored (§5.2), a DQUOTE-wrapped value is unwrapped, values
/// are not decoded. At most 64 pairs.
pub fn parse_cookies(header: &str) -> Vec<(String, String)> {
    header
        .split(';')
        .filter_map(|piece| {
            let (name, value) = piece.split_once('=')?;
            let name = name.trim_matches([' ', '\t']);
            if name.is_empty() {
                return None;
            }
            let value = value.trim_matches([' ', '\t']);
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            Some((name.to_owned(), value.to_owned()))
        })
        .take(MAX_PAIRS)
        .collect()
}

/// Longest header value we will write.
const MAX_HEADER_VALUE: usize = 4096;

/// Whether a value may be written into a response header: no CR, LF, NUL or
/// other control character except HTAB (RFC 9110 §5.5: "Field values
/// containing CR, LF, or NUL characters are invalid and dangerous"), at most
/// 4096 bytes. Reflecting a CR/LF would let a client inject headers.
pub fn is_safe_header_value(v: &str) -> bool {
    v.len() <= MAX_HEADER_VALUE && v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Whether an `Origin` value may be reflected (CORS). RFC 6454 §7.1:
/// `origin = "null" / scheme "://" host [ ":" port ]`. Strict: ASCII letters,
/// digits, '.', '-' in scheme and host, an IPv6 literal in brackets, a port of
/// 1-5 digits, no path, at most 256 bytes.
pub fn is_valid_origin(v: &str) -> bool {
    if v == "null" {
        return true;
    }
    if v.len() > 256 {
        return false;
    }
    let Some((scheme, authority)) = v.split_once("://") else {
        return false;
    };
    let mut sb = scheme.bytes();
    let scheme_ok = sb.next().is_some_and(|b| b.is_ascii_alphabetic())
        && sb.all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !scheme_ok {
        return false;
    }
    let port = if let Some(rest) = authority.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        let v6_ok = v6.contains(':')
            && v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !v6_ok {
            return false;
        }
        if after.is_empty() {
            None
        } else {
            match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            }
        }
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !host_ok {
            return false;
        }
        port
    };
    match port {
        None => true,
        Some(p) => (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// RFC 9110 §5.6.2: `token = 1*tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// A response to encode. Headers can only be added through
/// [`header`](Self::header), which validates them, so nothing unvalidated is
/// ever written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, e.g. `200`.
    pub status: u16,
    headers: Vec<(String, String)>,
    /// The body; `Content-Length` is derived from it.
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response. A status outside 100..=999 is written as 500.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header. Refuses (returns false, adds nothing) if the name is not
    /// a token, the value is not [`is_safe_header_value`], or the name is
    /// Content-Length: [`encode`](Self::encode) always computes that from the
    /// body, so a caller can never make it lie.
    pub fn header(&mut self, name: &str, value: &str) -> bool {
        if !is_token(name)
            || !is_safe_header_value(value)
            || name.eq_ignore_ascii_case("content-length")
        {
            return false;
        }
        self.headers.push((name.to_owned(), value.to_owned()));
        true
    }

    /// Builder form of [`header`](Self::header); a refused header is dropped.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.header(name, value);
        self
    }

    /// Sets the body and its Content-Type (replacing any Content-Type set before).
    pub fn with_body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
        self.header("Content-Type", content_type);
        self.body = body.into();
        self
    }

    /// Headers added so far, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    fn status_line(&self, out: &mut Vec<u8>) {
        let status = if (100..=999).contains(&self.status) {
            self.status
        } else {
            500
        };
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason_phrase(status).as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    fn write_header(out: &mut Vec<u8>, name: &str, value: &str) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Status line, the caller's headers (except Connection), Content-Length,
    /// `Connection: keep-alive` or `close`, blank line, body.
    ///
    /// RFC 9110 §8.6: "A server MUST NOT send a Content-Length header field in
    /// any response with a status code of 1xx (Informational) or 204 (No
    /// Content)" — those get neither Content-Length nor a body.
    pub fn encode(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.body.len());
        self.status_line(&mut out);
        for (n, v) in &self.headers {
            if !n.eq_ignore_ascii_case("connection") {
                Self::write_header(&mut out, n, v);
            }
        }
        let bodyless = self.status < 200 || self.status == 204;
        if !bodyless {
            Self::write_header(&mut out, "Content-Length", &self.body.len().to_string());
        }
        let conn = if keep_alive { "keep-alive" } else { "close" };
        Self::write_header(&mut out, "Connection", conn);
        out.extend_from_slice(b"\r\n");
        if !bodyless {
            out.extend_from_slice(&self.body);
        }
        out
    }

    /// Only the head, without Content-Length or body: for text/event-stream
    /// responses that stream until the connection closes, and for 101 Switching
    /// Protocols. Adds no Connection header unless the caller set one.
    pub fn encode_head_streaming(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.status_line(&mut out);
        for (n, v) in &self.headers {
            Self::write_header(&mut out, n, v);
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// Reason phrases from RFC 9110 §15 for the codes we send; "Unknown" otherwise
/// (clients ignore the phrase).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// RFC 6455 §4.2.2: the `Sec-WebSocket-Accept` value is "the base64-encoded
/// SHA-1 of the concatenation of the |Sec-WebSocket-Key| (as a string, not
/// base64-decoded) with the string "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"".
pub fn websocket_accept_key(client_key: &str) -> String {
    let mut h = sha1::Sha1::new();
    h.update(client_key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<(RequestHead, usize), HeadError> {
        parse_request_head(s.as_bytes(), &HeadLimits::default())
    }

    fn head(s: &str) -> RequestHead {
        parse(s).unwrap().0
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn get_with_query() {
        let raw = "GET /socket.io/?EIO=4&transport=polling&t=N8hyd6w HTTP/1.1\r\n\
                   Host: localhost:3000\r\n\
                   Accept: */*\r\n\
                   X-Empty:\r\n\
                   \r\n";
        let (h, n) = parse(raw).unwrap();
        assert_eq!(n, raw.len());
        assert_eq!(
            h,
            RequestHead {
                method: Method::Get,
                path: "/socket.io/".into(),
                query: "EIO=4&transport=polling&t=N8hyd6w".into(),
                minor_version: 1,
                headers: pairs(&[
                    ("host", "localhost:3000"),
                    ("accept", "*/*"),
                    ("x-empty", "")
                ]),
            }
        );
        assert_eq!(h.query_param("EIO").as_deref(), Some("4"));
        assert_eq!(h.query_param("transport").as_deref(), Some("polling"));
        assert_eq!(h.query_param("sid"), None);
        assert_eq!(h.header("host"), Some("localhost:3000"));
        assert_eq!(h.header("HOST"), Some("localhost:3000"));
        assert_eq!(h.content_length(), Ok(None));
    }

    #[test]
    fn post_with_body_after_head() {
        let raw = "POST /engine.io/?EIO=4&transport=polling&sid=abc HTTP/1.1\r\n\
                   Content-Type: text/plain;charset=UTF-8\r\n\
                   Content-Length: 6\r\n\r\n4hello";
        let (h, n) = parse(raw).unwrap();
        assert_eq!(h.method, Method::Post);
        assert_eq!(&raw[n..], "4hello");
        assert_eq!(h.content_length(), Ok(Some(6)));
        assert_eq!(h.query_param("sid").as_deref(), Some("abc"));
    }

    #[test]
    fn methods() {
        for (m, want) in [
            ("GET", Method::Get),
            ("POST", Method::Post),
            ("OPTIONS", Method::Options),
            ("HEAD", Method::Head),
            ("PUT", Method::Put),
            ("DELETE", Method::Delete),
            ("PATCH", Method::Patch),
            ("get", Method::Other),
            ("BREW", Method::Other),
        ] {
            assert_eq!(head(&format!("{m} / HTTP/1.1\r\n\r\n")).method, want, "{m}");
        }
    }

    #[test]
    fn keep_alive_rules() {
        for (version, conn, want) in [
            ("1.1", None, true),
            ("1.1", Some("close"), false),
            ("1.1", Some("Close"), false),
            ("1.1", Some("keep-alive"), true),
            ("1.1", Some("Upgrade, CLOSE"), false),
            ("1.0", None, false),
            ("1.0", Some("keep-alive"), true),
            ("1.0", Some("Keep-Alive"), true),
            ("1.0", Some("foo ,\tkeep-alive"), true),
            ("1.0", Some("keep-alive, close"), false),
            ("1.0", Some("keep-alivex"), false),
        ] {
            let c = conn
                .map(|c| format!("Connection: {c}\r\n"))
                .unwrap_or_default();
            let h = head(&format!("GET / HTTP/{version}\r\n{c}\r\n"));
            assert_eq!(h.keep_alive(), want, "{version} {conn:?}");
        }
    }

    #[test]
    fn content_length_rules() {
        for (fields, want) in [
            (&[][..], Ok(None)),
            (&["0"][..], Ok(Some(0))),
            (&["42"][..], Ok(Some(42))),
            (&["007"][..], Ok(Some(7))),
            (&["42, 42"][..], Ok(Some(42))),
            (&["42", "42"][..], Ok(Some(42))),
            (&["18446744073709551615"][..], Ok(Some(u64::MAX))),
            (
                &["18446744073709551616"][..],
                Err(HeadError::BadContentLength),
            ),
            (&["42", "43"][..], Err(HeadError::BadContentLength)),
            (&["42, 43"][..], Err(HeadError::BadContentLength)),
            (&["+42"][..], Err(HeadError::BadContentLength)),
            (&["-1"][..], Err(HeadError::BadContentLength)),
            (&["4 2"][..], Err(HeadError::BadContentLength)),
            (&["0x10"][..], Err(HeadError::BadContentLength)),
            (&["abc"][..], Err(HeadError::BadContentLength)),
            (&[""][..], Err(HeadError::BadContentLength)),
            (&["42,"][..], Err(HeadError::BadContentLength)),
        ] {
            let mut raw = String::from("POST / HTTP/1.1\r\n");
            for f in fields {
                raw.push_str(&format!("Content-Length: {f}\r\n"));
            }
            raw.push_str("\r\n");
            assert_eq!(head(&raw).content_length(), want, "{fields:?}");
        }
    }

    #[test]
    fn transfer_encoding_refused() {
        for te in ["chunked", "gzip, chunked", "identity", ""] {
            let h = head(&format!(
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: {te}\r\n\r\n"
            ));
            assert_eq!(
                h.content_length(),
                Err(HeadError::UnsupportedTransferEncoding)
            );
        }
        assert_eq!(HeadError::UnsupportedTransferEncoding.status(), 501);
    }

    #[test]
    fn websocket_upgrade_detection() {
        let ws = |extra: &str| {
            head(&format!(
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n{extra}\r\n"
            ))
            .is_websocket_upgrade()
        };
        assert!(ws("Connection: Upgrade\r\nUpgrade: websocket\r\n"));
        assert!(ws(
            "Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n"
        ));
        assert!(ws(
            "Connection: keep-alive\r\nConnection: upgrade\r\nUpgrade: h2c, websocket\r\n"
        ));
        assert!(!ws(""));
        assert!(!ws("Upgrade: websocket\r\n"));
        assert!(!ws("Connection: Upgrade\r\n"));
        assert!(!ws("Connection: Upgraded\r\nUpgrade: websocket\r\n"));
        assert!(!ws("Connection: Upgrade\r\nUpgrade: websockets\r\n"));
        let post = head("POST / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(!post.is_websocket_upgrade());
        let old = head("GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(!old.is_websocket_upgrade());
    }

    #[test]
    fn too_many_headers() {
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for i in 0..2000 {
            raw.push_str(&format!("x-{i}: y\r\n"));
        }
        raw.push_str("\r\n");
        let big = HeadLimits {
            max_head_bytes: 1 << 20,
            max_headers: 64,
        };
        let mut s = HeadScanner::new();
        assert_eq!(s.find_head_end(raw.as_bytes(), &big), Ok(Some(raw.len())));
        assert_eq!(
            parse_request_head(raw.as_bytes(), &big),
            Err(HeadError::TooManyHeaders)
        );
        // With the default limits the scanner's byte cap trips first; the parser
        // meets header 65 inside the first 8 KiB.
        let mut s = HeadScanner::new();
        assert_eq!(
            s.find_head_end(raw.as_bytes(), &HeadLimits::default()),
            Err(HeadError::TooLarge)
        );
        assert_eq!(parse(&raw), Err(HeadError::TooManyHeaders));
        // Exactly max_headers is fine.
        let limits = HeadLimits {
            max_head_bytes: 1 << 20,
            max_headers: 3,
        };
        let ok = "GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
        assert_eq!(
            parse_request_head(ok.as_bytes(), &limits)
                .unwrap()
                .0
                .headers
                .len(),
            3
        );
        let bad = "GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n";
        assert_eq!(
            parse_request_head(bad.as_bytes(), &limits),
            Err(HeadError::TooManyHeaders)
        );
        assert_eq!(HeadError::TooManyHeaders.status(), 431);
    }

    #[test]
    fn huge_max_headers_does_not_allocate_huge() {
        let limits = HeadLimits {
            max_head_bytes: 8192,
            max_headers: usize::MAX,
        };
        let (h, _) = parse_request_head(b"GET / HTTP/1.1\r\na:\n\n", &limits).unwrap();
        assert_eq!(h.headers, pairs(&[("a", "")]));
    }

    #[test]
    fn twenty_megabyte_head_is_refused_after_max_bytes() {
        let limits = HeadLimits::default();
        let mut buf = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        buf.resize(20 << 20, b'a');
        let mut s = HeadScanner::new();
        // Fed in growing chunks, the scanner errs as soon as len > max.
        assert_eq!(
            s.find_head_end(&buf[..limits.max_head_bytes], &limits),
            Ok(None)
        );
        assert_eq!(
            s.find_head_end(&buf[..limits.max_head_bytes + 1], &limits),
            Err(HeadError::TooLarge)
        );
        // And never looks past the limit, even given all 20 MB at once.
        assert_eq!(s.find_head_end(&buf, &limits), Err(HeadError::TooLarge));
        assert_eq!(s.inspected, limits.max_head_bytes);
        let mut fresh = HeadScanner::new();
        assert_eq!(fresh.find_head_end(&buf, &limits), Err(HeadError::TooLarge));
        assert_eq!(fresh.inspected, limits.max_head_bytes);
        assert_eq!(parse_request_head(&buf, &limits), Err(HeadError::TooLarge));
        assert_eq!(HeadError::TooLarge.status(), 431);
    }

    #[test]
    fn head_exactly_at_limit_then_pipelined_bytes() {
        let raw = b"GET / HTTP/1.1\r\n\r\n";
        let limits = HeadLimits {
            max_head_bytes: raw.len(),
            max_headers: 4,
        };
        let mut buf = raw.to_vec();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let mut s = HeadScanner::new();
        assert_eq!(s.find_head_end(&buf, &limits), Ok(Some(raw.len())));
        assert_eq!(parse_request_head(&buf, &limits).unwrap().1, raw.len());
        let tight = HeadLimits {
            max_head_bytes: raw.len() - 1,
            max_headers: 4,
        };
        let mut s = HeadScanner::new();
        assert_eq!(s.find_head_end(&buf, &tight), Err(HeadError::TooLarge));
        assert_eq!(parse_request_head(&buf, &tight), Err(HeadError::TooLarge));
    }

    #[test]
    fn trickled_one_byte_at_a_time_is_linear() {
        let mut raw = String::from("GET /x?y=z HTTP/1.1\r\n");
        for i in 0..60 {
            raw.push_str(&format!("x-h{i}: {}\r\n", "v".repeat(40)));
        }
        raw.push_str("\r\n");
        let bytes = raw.as_bytes();
        let limits = HeadLimits::default();
        let mut s = HeadScanner::new();
        for len in 0..bytes.len() {
            assert_eq!(s.find_head_end(&bytes[..len], &limits), Ok(None));
            // Resumes from where it stopped: everything seen, nothing seen twice.
            assert_eq!(s.scanned(), len);
            assert_eq!(s.inspected, len);
        }
        assert_eq!(s.find_head_end(bytes, &limits), Ok(Some(bytes.len())));
        assert_eq!(s.inspected, bytes.len());
        // Asking again costs nothing and gives the same answer.
        assert_eq!(s.find_head_end(bytes, &limits), Ok(Some(bytes.len())));
        assert_eq!(s.inspected, bytes.len());
        assert_eq!(parse(&raw).unwrap().0.headers.len(), 60);
    }

    #[test]
    fn scanner_terminators() {
        let limits = HeadLimits::default();
        for (raw, want) in [
            ("GET / HTTP/1.1\r\n\r\n", Some(18)),
            ("GET / HTTP/1.1\n\n", Some(16)),
            ("GET / HTTP/1.1\r\n\n", Some(17)),
            ("GET / HTTP/1.1\na: b\n\r\n", Some(22)),
            ("GET / HTTP/1.1\r\n\r\nrest", Some(18)),
            ("GET / HTTP/1.1\r\n\r", None),
            ("GET / HTTP/1.1\r\n", None),
            ("GET / HTTP/1.1\r\r", None),
            // Leading empty lines are skipped, as httparse does.
            ("\r\n\r\nGET / HTTP/1.1\r\n\r\n", Some(22)),
            ("\n\nGET / HTTP/1.1\n\n", Some(18)),
            ("\r\n\r\n", None),
            ("", None),
        ] {
            let mut s = HeadScanner::new();
            assert_eq!(
                s.find_head_end(raw.as_bytes(), &limits),
                Ok(want),
                "{raw:?}"
            );
            if let Some(n) = want {
                let (h, m) = parse(raw).unwrap();
                assert_eq!(m, n, "{raw:?}");
                assert_eq!(h.path, "/");
            }
        }
        let h = head("GET /a HTTP/1.1\nHost: x\nCookie: a=b\n\n");
        assert_eq!(h.header("host"), Some("x"));
        assert_eq!(h.cookie("a").as_deref(), Some("b"));
    }

    #[test]
    fn scanner_reset_for_keep_alive() {
        let limits = HeadLimits::default();
        let mut s = HeadScanner::new();
        let a = b"GET /a HTTP/1.1\r\n\r\n";
        assert_eq!(s.find_head_end(a, &limits), Ok(Some(a.len())));
        s.reset();
        assert_eq!(s.find_head_end(b"GET /b", &limits), Ok(None));
        assert_eq!(
            s.find_head_end(b"GET /b HTTP/1.1\n\n", &limits),
            Ok(Some(17))
        );
        // A buffer shorter than what was scanned restarts the scan.
        assert_eq!(s.find_head_end(b"GET", &limits), Ok(None));
        assert_eq!(s.scanned(), 3);
    }

    #[test]
    fn bad_heads() {
        for (raw, want) in [
            ("GET / HTTP/2.0\r\n\r\n", HeadError::UnsupportedVersion),
            ("GET / HTTP/1.2\r\n\r\n", HeadError::UnsupportedVersion),
            ("GET / HTTP/3\r\n\r\n", HeadError::UnsupportedVersion),
            ("GET /\r\n\r\n", HeadError::Malformed),
            ("GET  / HTTP/1.1\r\n\r\n", HeadError::Malformed),
            (
                "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
                HeadError::Malformed,
            ),
            ("GET / HTTP/1.1\r\n: x\r\n\r\n", HeadError::Malformed),
            ("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", HeadError::Malformed),
            ("GET / HTTP/1.1\r\nA: b\0c\r\n\r\n", HeadError::Malformed),
            ("GET / HTTP/1.1\r\nA: b\r\n", HeadError::Malformed),
            ("\r\n\r\n", HeadError::Malformed),
            ("", HeadError::Malformed),
        ] {
            assert_eq!(parse(raw), Err(want), "{raw:?}");
        }
        assert_eq!(HeadError::UnsupportedVersion.status(), 505);
        assert_eq!(HeadError::Malformed.status(), 400);
        assert_eq!(HeadError::BadContentLength.status(), 400);
        // obs-text that is not UTF-8.
        let raw = b"GET / HTTP/1.1\r\nX: \xff\xfe\r\n\r\n";
        assert_eq!(
            parse_request_head(raw, &HeadLimits::default()),
            Err(HeadError::Malformed)
        );
        // obs-text that is UTF-8 is kept.
        let h = head("GET / HTTP/1.1\r\nX:  caf\u{e9} \t\r\n\r\n");
        assert_eq!(h.header("x"), Some("caf\u{e9}"));
        assert_eq!(HeadError::Malformed.to_string(), "malformed request head");
    }

    #[test]
    fn http10_and_target_forms() {
        let h = head("GET /a/b?c=d?e HTTP/1.0\r\n\r\n");
        assert_eq!(h.minor_version, 0);
        assert_eq!(h.path, "/a/b");
        assert_eq!(h.query, "c=d?e");
        let h = head("GET /%2e%2e/x? HTTP/1.1\r\n\r\n");
        assert_eq!(h.path, "/%2e%2e/x");
        assert_eq!(h.query, "");
    }

    #[test]
    fn query_decoding() {
        for (raw, want) in [
            ("transport=__proto__", &[("transport", "__proto__")][..]),
            (
                "__proto__=x&constructor=y",
                &[("__proto__", "x"), ("constructor", "y")][..],
            ),
            ("a=%ZZ&b=%4", &[("a", "%ZZ"), ("b", "%4")][..]),
            ("a=%", &[("a", "%")][..]),
            ("a=1&a=2", &[("a", "1"), ("a", "2")][..]),
            ("q=a+b%2Bc", &[("q", "a b+c")][..]),
            ("a+b=c%20d", &[("a b", "c d")][..]),
            ("k=%41%42%43", &[("k", "ABC")][..]),
            ("k=%e2%82%ac", &[("k", "\u{20ac}")][..]),
            ("k=%ff", &[("k", "\u{fffd}")][..]),
            ("k=a=b", &[("k", "a=b")][..]),
            ("flag&x=", &[("flag", ""), ("x", "")][..]),
            ("&&a=1&&", &[("a", "1")][..]),
            ("=v", &[("", "v")][..]),
            ("", &[][..]),
        ] {
            assert_eq!(parse_query(raw), pairs(want), "{raw:?}");
        }
        let h = head("GET /?a=1&a=2&b=%2Fx HTTP/1.1\r\n\r\n");
        assert_eq!(h.query_param("a").as_deref(), Some("1"));
        assert_eq!(h.query_param("b").as_deref(), Some("/x"));
        assert_eq!(percent_decode("a+b%20c"), "a+b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%%41"), "%A");
    }

    #[test]
    fn query_is_bounded() {
        let raw = "a=1&".repeat(10_000);
        assert_eq!(parse_query(&raw).len(), 64);
        let raw = "a&".repeat(100);
        assert_eq!(parse_query(&raw).len(), 64);
    }

    #[test]
    fn cookies() {
        for (raw, want) in [
            ("a=b; c=d", &[("a", "b"), ("c", "d")][..]),
            ("a=b;c=d", &[("a", "b"), ("c", "d")][..]),
            ("sid=\"quoted value\"", &[("sid", "quoted value")][..]),
            ("x=\"", &[("x", "\"")][..]),
            ("x=\"\"", &[("x", "")][..]),
            ("tok=a=b=c", &[("tok", "a=b=c")][..]),
            ("noequals; a=1", &[("a", "1")][..]),
            ("=v; ;; a=", &[("a", "")][..]),
            ("v=%41", &[("v", "%41")][..]),
            ("", &[][..]),
        ] {
            assert_eq!(parse_cookies(raw), pairs(want), "{raw:?}");
        }
        assert_eq!(parse_cookies(&"a=1; ".repeat(1000)).len(), 64);
        let h = head("GET / HTTP/1.1\r\nCookie: a=1; b=2\r\nCookie: c=\"3\"; a=4\r\n\r\n");
        assert_eq!(h.cookie("a").as_deref(), Some("1"));
        assert_eq!(h.cookie("c").as_deref(), Some("3"));
        assert_eq!(h.cookie("d"), None);
    }

    #[test]
    fn header_value_safety() {
        assert!(is_safe_header_value("https://example.com"));
        assert!(is_safe_header_value("a\tb"));
        assert!(is_safe_header_value(""));
        assert!(is_safe_header_value("caf\u{e9}"));
        assert!(is_safe_header_value(&"a".repeat(4096)));
        assert!(!is_safe_header_value(&"a".repeat(4097)));
        for bad in [
            "a\rb",
            "a\nb",
            "a\r\nSet-Cookie: x=y",
            "a\0b",
            "\x1b[31m",
            "\x7f",
            "\x0b",
        ] {
            assert!(!is_safe_header_value(bad), "{bad:?}");
        }
    }

    #[test]
    fn origin_validation() {
        for ok in [
            "null",
            "http://localhost",
            "http://localhost:3000",
            "https://app.example.com",
            "https://my-app.example.co.uk:443",
            "http://127.0.0.1:8080",
            "http://[::1]:3000",
            "http://[::ffff:127.0.0.1]",
            "chrome-extension://abcdefghijklmnop",
        ] {
            assert!(is_valid_origin(ok), "{ok:?}");
        }
        for bad in [
            "",
            "Null",
            "localhost",
            "http://",
            "http:///",
            "http://example.com/",
            "http://example.com/path",
            "http://exa mple.com",
            "http://example.com\r\nSet-Cookie: a=b",
            "http://example.com\0",
            "http://user@example.com",
            "http://example.com:",
            "http://example.com:123456",
            "http://example.com:80a",
            "http://example.com:80:81",
            "http://[::1",
            "http://[]",
            "http://[zz::1]",
            "http://[::1]x",
            "1http://a",
            "ht_tp://a",
            "://a",
            "http://ex\u{e4}mple.com",
        ] {
            assert!(!is_valid_origin(bad), "{bad:?}");
        }
        let long = format!("https://{}.com", "a".repeat(250));
        assert!(!is_valid_origin(&long));
    }

    #[test]
    fn response_encoding_exact() {
        let r = Response::new(200)
            .with_header("Access-Control-Allow-Origin", "http://localhost:3000")
            .with_body("text/plain; charset=UTF-8", "ok");
        assert_eq!(
            String::from_utf8(r.encode(true)).unwrap(),
            "HTTP/1.1 200 OK\r\n\
             Access-Control-Allow-Origin: http://localhost:3000\r\n\
             Content-Type: text/plain; charset=UTF-8\r\n\
             Content-Length: 2\r\n\
             Connection: keep-alive\r\n\
             \r\n\
             ok"
        );
        assert_eq!(
            Response::new(404).encode(false),
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            Response::new(204).with_body("text/plain", "x").encode(true),
            b"HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n\r\n"
        );
        // A caller-set Connection is replaced by the keep_alive argument.
        assert_eq!(
            Response::new(400)
                .with_header("Connection", "keep-alive")
                .encode(false),
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            Response::new(1000).encode(false),
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            Response::new(299).encode(false),
            b"HTTP/1.1 299 Unknown\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn streaming_heads_exact() {
        let sse = Response::new(200)
            .with_header("Content-Type", "text/event-stream")
            .with_header("Cache-Control", "no-cache")
            .with_body("text/event-stream", "ignored");
        assert_eq!(
            sse.encode_head_streaming(),
            b"HTTP/1.1 200 OK\r\nCache-Control: no-cache\r\nContent-Type: text/event-stream\r\n\r\n"
        );
        let up = Response::new(101)
            .with_header("Upgrade", "websocket")
            .with_header("Connection", "Upgrade")
            .with_header(
                "Sec-WebSocket-Accept",
                &websocket_accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            );
        assert_eq!(
            up.encode_head_streaming(),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn response_refuses_unsafe_headers() {
        let mut r = Response::new(200);
        assert!(r.header("X-Ok", "fine"));
        assert!(!r.header("X-Bad", "a\r\nSet-Cookie: pwned=1"));
        assert!(!r.header("X-Bad", "a\nb"));
        assert!(!r.header("X-Bad", "a\0b"));
        assert!(!r.header("Bad Name", "x"));
        assert!(!r.header("Bad:Name", "x"));
        assert!(!r.header("", "x"));
        assert!(!r.header("X-\u{e9}", "x"));
        assert!(!r.header("Content-Length", "999"));
        assert!(!r.header("content-length", "0"));
        assert_eq!(r.headers(), &pairs(&[("X-Ok", "fine")])[..]);
        let r = Response::new(200).with_body("text/plain\r\nX: y", "b");
        assert!(r.headers().is_empty());
        assert_eq!(r.body, b"b");
    }

    #[test]
    fn reason_phrases() {
        for code in [
            101, 200, 204, 400, 401, 403, 404, 405, 408, 413, 414, 429, 431, 500, 501, 503, 505,
        ] {
            assert_ne!(reason_phrase(code), "Unknown", "{code}");
        }
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(418), "Unknown");
    }

    #[test]
    fn accept_key_rfc6455_vector() {
        assert_eq!(
            websocket_accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    fn percent_encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    /// Pieces that make random bytes look like heads often enough to matter.
    fn head_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"GET ".to_vec()),
            Just(b"POST /".to_vec()),
            Just(b" HTTP/1.1".to_vec()),
            Just(b" HTTP/1.0".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"a: b".to_vec()),
            Just(b"Content-Length: 5".to_vec()),
            Just(b":".to_vec()),
            Just(b" ".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn parse_query_never_panics(s in any::<String>()) {
            let v = parse_query(&s);
            prop_assert!(v.len() <= 64);
            let _ = parse_cookies(&s);
            let _ = is_valid_origin(&s);
            let _ = is_safe_header_value(&s);
        }

        #[test]
        fn percent_round_trip(s in any::<String>()) {
            prop_assert_eq!(percent_decode(&percent_encode(&s)), s.clone());
            let q = format!("{}={}", percent_encode(&s), percent_encode(&s));
            if !s.is_empty() {
                prop_assert_eq!(parse_query(&q), vec![(s.clone(), s)]);
            }
        }

        #[test]
        fn scanner_and_parser_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512),
                                          max in 0usize..600, hdrs in 0usize..8) {
            let limits = HeadLimits { max_head_bytes: max, max_headers: hdrs };
            let mut s = HeadScanner::new();
            if let Ok(Some(n)) = s.find_head_end(&buf, &limits) {
                prop_assert!(n <= max && n <= buf.len());
            }
            if let Ok((h, n)) = parse_request_head(&buf, &limits) {
                prop_assert!(n <= max);
                let _ = (h.content_length(), h.keep_alive(), h.is_websocket_upgrade(),
                         h.query_param("a"), h.cookie("a"));
            }
        }

        /// The scanner and httparse agree on where a head ends.
        #[test]
        fn scanner_agrees_with_httparse(buf in head_bytes(), split in any::<prop::sample::Index>()) {
            let limits = HeadLimits { max_head_bytes: 1 << 16, max_headers: 1 << 10 };
            // Trickle in two parts to exercise resumption.
            let cut = split.index(buf.len() + 1);
            let mut s = HeadScanner::new();
            let first = s.find_head_end(&buf[..cut], &limits).unwrap();
            let scanned = match first {
                Some(n) => Some(n),
                None => s.find_head_end(&buf, &limits).unwrap(),
            };
            let mut fresh = HeadScanner::new();
            prop_assert_eq!(fresh.find_head_end(&buf, &limits).unwrap(), scanned);
            let mut slots = vec![httparse::EMPTY_HEADER; 1 << 10];
            let parsed = httparse::Request::new(&mut slots).parse(&buf);
            match parsed {
                Ok(httparse::Status::Complete(m)) => prop_assert_eq!(scanned, Some(m)),
                Ok(httparse::Status::Partial) => prop_assert_eq!(scanned, None),
                Err(_) => {}
            }
            if let Some(n) = scanned {
                match parse_request_head(&buf[..n], &limits) {
                    Ok((_, m)) => prop_assert_eq!(m, n),
                    Err(e) => prop_assert_ne!(e, HeadError::TooLarge),
                }
            }
        }

        /// decode(encode(x)) == x for request heads built from valid parts.
        #[test]
        fn request_head_round_trip(
            m in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH", "BREW"]),
            path in "/[A-Za-z0-9/%._~-]{0,20}",
            query in "[A-Za-z0-9=&%+._~-]{0,20}",
            minor in 0u8..2,
            headers in proptest::collection::vec((token(), "[ -~]{0,20}"), 0..10),
            lf_only in any::<bool>(),
        ) {
            let nl = if lf_only { "\n" } else { "\r\n" };
            let target = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
            let mut raw = format!("{m} {target} HTTP/1.{minor}{nl}");
            for (n, v) in &headers {
                raw.push_str(&format!("{n}: {v}{nl}"));
            }
            raw.push_str(nl);
            let limits = HeadLimits::default();
            let mut s = HeadScanner::new();
            prop_assert_eq!(s.find_head_end(raw.as_bytes(), &limits), Ok(Some(raw.len())));
            let (h, n) = parse_request_head(raw.as_bytes(), &limits).unwrap();
            prop_assert_eq!(n, raw.len());
            let want = RequestHead {
                method: Method::from_token(m),
                path,
                query,
                minor_version: minor,
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_ascii_lowercase(), v.trim_matches([' ', '\t']).to_owned()))
                    .collect(),
            };
            prop_assert_eq!(h, want);
        }

        /// An encoded response parses back with httparse to the same parts.
        #[test]
        fn response_round_trip(
            status in 200u16..600,
            headers in proptest::collection::vec((token(), "[!-~]([ -~]{0,18}[!-~])?"), 0..8),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            keep in any::<bool>(),
        ) {
            prop_assume!(status != 204);
            let mut r = Response::new(status);
            r.body = body.clone();
            for (n, v) in &headers {
                r.header(n, v);
            }
            let bytes = r.encode(keep);
            let mut slots = vec![httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut slots);
            let n = match resp.parse(&bytes).unwrap() {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => unreachable!(),
            };
            prop_assert_eq!(resp.code, Some(status));
            prop_assert_eq!(&bytes[n..], &body[..]);
            let got: Vec<(String, String)> = resp.headers.iter()
                .map(|h| (h.name.to_owned(), String::from_utf8(h.value.to_vec()).unwrap()))
                .collect();
            let mut want: Vec<(String, String)> = r.headers().iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("connection"))
                .cloned()
                .collect();
            want.push(("Content-Length".into(), body.len().to_string()));
            want.push(("Connection".into(), if keep { "keep-alive" } else { "close" }.into()));
            prop_assert_eq!(got, want);
        }
    }
}
