//! Server configuration: every limit in one place, validated once when the server starts.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Cross-origin settings. Off by default: no `Access-Control-*` header is ever written unless the
/// request's `Origin` is in `allowed_origins` (compared exactly, so nothing unvalidated is reflected).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cors {
    /// Exact origins, e.g. `http://localhost:8080`. Empty: CORS off.
    pub allowed_origins: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (cookies, `withCredentials`).
    pub allow_credentials: bool,
}

/// Everything that can be tuned. `Config::default()` uses socket.io's defaults where they exist.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen. Default `127.0.0.1:3000`.
    pub bind: SocketAddr,
    /// Path of the raw Engine.IO endpoint (`/engine.io/`), or `None` for no raw endpoint.
    pub engineio_path: Option<String>,
    /// Engine.IO `pingInterval` (25 s).
    pub ping_interval: Duration,
    /// Engine.IO `pingTimeout` (20 s), counted from when a ping is queued.
    pub ping_timeout: Duration,
    /// Engine.IO `maxPayload` in bytes (1 000 000): polling bodies and WebSocket messages and frames.
    pub max_payload: usize,
    /// How long a polling→websocket upgrade may take before the probe transport is dropped (10 s).
    pub upgrade_timeout: Duration,
    /// Most bytes buffered for one connection or polling session before it is closed (1 MiB + max_payload).
    pub max_outbound_bytes: usize,
    /// Most open TCP connections (10 000). Further connections wait in the listen backlog.
    pub max_connections: usize,
    /// Most bytes of an HTTP request head (8 KiB).
    pub max_head_bytes: usize,
    /// Most headers in a request (64).
    pub max_headers: usize,
    /// A request head (and its body) must arrive within this time (10 s): slowloris defence.
    pub request_timeout: Duration,
    /// An idle keep-alive HTTP connection is closed after this time (60 s).
    pub keep_alive_timeout: Duration,
    /// Cross-origin settings.
    pub cors: Cors,
    /// Path of the Socket.IO endpoint (`/socket.io/`), or `None` for none.
    pub socketio_path: Option<String>,
    /// Socket.IO namespaces besides `/` that clients may join.
    pub namespaces: Vec<String>,
    /// A Socket.IO client must join a namespace within this time (45 s, socket.io's `connectTimeout`).
    pub connect_timeout: Duration,
    /// Most acks a socket may owe the server at once (256).
    pub max_pending_acks: usize,
    /// Path of the SSE endpoint (`/events`), or `None` for none.
    pub sse_path: Option<String>,
    /// A comment line keeps idle SSE streams (and proxies) alive this often (15 s).
    pub sse_heartbeat: Duration,
    /// The reconnection delay sent to SSE clients (`retry:`), plus up to 1 s of jitter (3 s).
    pub sse_retry: Duration,
    /// SSE resume history: most events (10 000), bytes (8 MiB) and age (5 min) kept.
    pub sse_history_events: usize,
    pub sse_history_bytes: usize,
    pub sse_history_age: Duration,
    /// Static pages served as they are (a demo page, a health check).
    pub pages: Vec<Page>,
    /// Most rooms one user may be in (1 024), and most (user, room) memberships in all (1 000 000):
    /// `join_room` past either is refused with an error.
    pub max_rooms_per_user: usize,
    pub max_room_memberships: usize,
}

/// A static page: served on GET/HEAD of exactly `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub path: String,
    pub content_type: &'static str,
    pub body: std::borrow::Cow<'static, str>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 3000)),
            engineio_path: None,
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            upgrade_timeout: Duration::from_millis(10_000),
            max_outbound_bytes: (1 << 20) + 1_000_000,
            max_connections: 10_000,
            max_head_bytes: 8 * 1024,
            max_headers: 64,
            request_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            cors: Cors::default(),
            socketio_path: Some("/socket.io/".into()),
            namespaces: Vec::new(),
            connect_timeout: Duration::from_secs(45),
            max_pending_acks: 256,
            sse_path: Some("/events".into()),
            sse_heartbeat: Duration::from_secs(15),
            sse_retry: Duration::from_secs(3),
            sse_history_events: 10_000,
            sse_history_bytes: 8 << 20,
            sse_history_age: Duration::from_secs(300),
            pages: Vec::new(),
            max_rooms_per_user: 1024,
            max_room_memberships: 1_000_000,
        }
    }
}

/// A configuration value that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

fn valid_path(p: &str) -> bool {
    p.starts_with('/') && p.len() <= 256 && p.bytes().all(|b| b.is_ascii_graphic() && b != b'?')
}

impl Config {
    /// Checks every value once, so the loop never meets an impossible setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_string()));
        for p in [&self.engineio_path, &self.socketio_path, &self.sse_path]
            .into_iter()
            .flatten()
        {
            if !valid_path(p) {
                return err(
                    "endpoint paths must start with '/' and be printable ASCII without '?'",
                );
            }
        }
        for n in &self.namespaces {
            if !n.starts_with('/')
                || n.len() > 256
                || n.bytes().any(|b| b.is_ascii_control() || b == b',')
            {
                return err("namespaces must start with '/', be at most 256 bytes, without ',' or control characters");
            }
        }
        for page in &self.pages {
            if !valid_path(&page.path) {
                return err("page paths must start with '/' and be printable ASCII without '?'");
            }
        }
        if self.connect_timeout.is_zero() || self.sse_heartbeat < Duration::from_millis(10) {
            return err("connect_timeout must be non-zero and sse_heartbeat at least 10 ms");
        }
        if self.max_pending_acks == 0 {
            return err("max_pending_acks must be at least 1");
        }
        if self.max_rooms_per_user == 0 || self.max_room_memberships == 0 {
            return err("max_rooms_per_user and max_room_memberships must be at least 1");
        }
        if self.ping_interval < Duration::from_millis(10)
            || self.ping_timeout < Duration::from_millis(10)
        {
            return err("ping_interval and ping_timeout must be at least 10 ms");
        }
        if self.ping_interval > Duration::from_secs(3600)
            || self.ping_timeout > Duration::from_secs(3600)
        {
            return err("ping_interval and ping_timeout must be at most one hour");
        }
        if self.max_payload < 64 || self.max_payload > (1 << 30) {
            return err("max_payload must be between 64 bytes and 1 GiB");
        }
        if self.max_outbound_bytes < self.max_payload {
            return err("max_outbound_bytes must be at least max_payload");
        }
        if self.max_connections == 0 {
            return err("max_connections must be at least 1");
        }
        if self.max_head_bytes < 256 || self.max_headers < 4 {
            return err("max_head_bytes must be at least 256 and max_headers at least 4");
        }
        if self.request_timeout.is_zero()
            || self.keep_alive_timeout.is_zero()
            || self.upgrade_timeout.is_zero()
        {
            return err("timeouts must be non-zero");
        }
        for o in &self.cors.allowed_origins {
            if o.is_empty() || o.len() > 256 || !o.bytes().all(|b| b.is_ascii_graphic()) {
                return err("cors.allowed_origins entries must be non-empty printable ASCII");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_values_are_refused() {
        assert!(Config::default().validate().is_ok());
        let bad = Config {
            max_payload: 1,
            ..Config::default()
        };
        assert!(bad.validate().is_err());
        let bad = Config {
            engineio_path: Some("engine.io".into()),
            ..Config::default()
        };
        assert!(bad.validate().is_err());
        let bad = Config {
            cors: Cors {
                allowed_origins: vec!["http://a\r\nb".into()],
                allow_credentials: false,
            },
            ..Config::default()
        };
        assert!(bad.validate().is_err());
    }
}
