//! Application routes: [`ServerBuilder::route`](crate::ServerBuilder::route) hands requests under
//! a path prefix to a handler, which answers through a [`Responder`] — at once, or later from any
//! thread.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;

use crate::engine::{json_error, Command};
use crate::error::ServerClosed;
use crate::proto::http::{self, Method, RequestHead, Response};
use crate::server::Handle;

/// An HTTP request under an application route. The head went through the same parser and limits
/// as every request (`max_head_bytes`, `max_headers`, `request_timeout`); the body is exactly
/// `Content-Length` bytes, at most `Config::max_request_body` (no chunked bodies).
#[derive(Clone, Debug)]
pub struct HttpRequest {
    /// The method (`Method::Other` for a token tidings does not name).
    pub method: Method,
    /// The path, before `?`, as sent (not percent-decoded).
    pub path: String,
    /// The raw query, after `?` ("" when there is none).
    pub query: String,
    /// The headers, names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// The route prefix the path matched.
    pub prefix: Arc<str>,
}

impl HttpRequest {
    pub(crate) fn from_parts(
        prefix: Arc<str>,
        head: RequestHead,
        body: Vec<u8>,
        remote: Option<SocketAddr>,
    ) -> HttpRequest {
        HttpRequest {
            method: head.method,
            path: head.path,
            query: head.query,
            headers: head.headers,
            body,
            remote,
            prefix,
        }
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter, percent-decoded (the first one of that name).
    pub fn query_param(&self, name: &str) -> Option<String> {
        http::parse_query(&self.query)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Every query parameter, percent-decoded, in order.
    pub fn query_params(&self) -> Vec<(String, String)> {
        http::parse_query(&self.query)
    }

    /// A cookie's value.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .flat_map(|(_, v)| http::parse_cookies(v))
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer_token(&self) -> Option<&str> {
        let v = self.header("authorization")?;
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    }

    /// The path after the route prefix, starting with `/` (`""` when the path is the prefix).
    pub fn subpath(&self) -> &str {
        let base = self.prefix.strip_suffix('/').unwrap_or(&self.prefix);
        self.path.strip_prefix(base).unwrap_or("")
    }
}

/// The answer to an [`HttpRequest`]. `Content-Length` and `Connection` are set by tidings; a
/// header whose name is not a token or whose value has CR, LF or NUL is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    inner: Response,
}

impl HttpResponse {
    /// An empty response with this status (outside 100..=999 it is sent as 500).
    pub fn new(status: u16) -> HttpResponse {
        HttpResponse {
            inner: Response::new(status),
        }
    }

    /// A JSON body (`application/json`).
    pub fn json(status: u16, body: &Value) -> HttpResponse {
        HttpResponse::new(status).body("application/json", body.to_string())
    }

    /// A plain-text body (`text/plain; charset=utf-8`).
    pub fn text(status: u16, body: impl Into<String>) -> HttpResponse {
        HttpResponse::new(status).body("text/plain; charset=utf-8", body.into())
    }

    /// The JSON error body tidings itself answers with: `{"error": {"code", "message"}}`.
    pub fn error(status: u16, code: &str, message: &str) -> HttpResponse {
        HttpResponse {
            inner: json_error(status, code, message),
        }
    }

    /// Adds a header (dropped if unsafe, see the type's docs).
    pub fn header(mut self, name: &str, value: &str) -> HttpResponse {
        if !self.inner.header(name, value) {
            log::warn!("route response: header {name:?} refused (not a token or unsafe value)");
        }
        self
    }

    /// Sets the body and its `Content-Type`.
    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> HttpResponse {
        self.inner = self.inner.with_body(content_type, body);
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.inner.status
    }
}

/// Answers one [`HttpRequest`], once, from any thread. Dropped unanswered, it answers `500`; an
/// answer later than `Config::request_timeout` is dropped (the client already got `503`).
pub struct Responder {
    request: u64,
    handle: Option<Handle>,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("request", &self.request)
            .finish()
    }
}

impl Responder {
    pub(crate) fn new(request: u64, handle: Handle) -> Responder {
        Responder {
            request,
            handle: Some(handle),
        }
    }

    /// Sends the answer.
    pub fn send(mut self, response: HttpResponse) -> Result<(), ServerClosed> {
        match self.handle.take() {
            Some(handle) => handle.command(Command::HttpRespond {
                request: self.request,
                response: response.inner,
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = handle.command(Command::HttpRespond {
                request: self.request,
                response: json_error(500, "unanswered", "the application dropped the request"),
            });
        }
    }
}
