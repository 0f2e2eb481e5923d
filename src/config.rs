//! Server configuration: every limit in one place, validated once when the server starts.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Cross-origin (CORS) settings.
///
/// CORS is closed by default: no origin is allowed, and no `Access-Control-*` header is ever
/// written. A browser page on another origin can use the endpoints only once its exact origin is
/// listed; the request's `Origin` is compared exactly, so nothing unvalidated is reflected.
///
/// Allowing one origin:
///
/// ```
/// use tidings::{Config, Cors};
///
/// let config = Config {
///     cors: Cors {
///         allowed_origins: vec!["https://app.example.com".into()],
///         allow_credentials: false,
///     },
///     ..Config::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cors {
    /// Origins allowed to make cross-origin requests, written exactly as browsers send them
    /// (`https://app.example.com`, no trailing slash). Default: empty, CORS off.
    pub allowed_origins: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true`, so cookies reach the server
    /// (`withCredentials`). Default: `false`.
    pub allow_credentials: bool,
}

/// Everything that can be tuned. `Config::default()` uses socket.io's defaults where they exist;
/// [`Config::validate`] checks the values when the server starts.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on. Default: `127.0.0.1:3000`.
    pub bind: SocketAddr,
    /// Path of the raw Engine.IO endpoint (e.g. `/engine.io/`), for clients that speak Engine.IO
    /// without Socket.IO. Default: `None`, no such endpoint.
    pub engineio_path: Option<String>,
    /// Engine.IO `pingInterval`: how often the server pings each session to detect dead ones.
    /// Default: 25 s.
    pub ping_interval: Duration,
    /// Engine.IO `pingTimeout`: how long a session may leave a ping unanswered, counted from when
    /// the ping is queued, before it is closed. Default: 20 s.
    pub ping_timeout: Duration,
    /// Engine.IO `maxPayload`: the most bytes accepted in one polling body, one WebSocket message
    /// or frame, and the binary attachments held for one Socket.IO packet. Default: 1 000 000.
    pub max_payload: usize,
    /// How long a polling→WebSocket upgrade may take before the probing WebSocket is dropped
    /// (the session stays on polling). Default: 10 s.
    pub upgrade_timeout: Duration,
    /// Most bytes waiting to be sent to one connection or polling session; a client that reads
    /// too slowly to stay under it is disconnected. Default: 1 MiB + 1 000 000.
    pub max_outbound_bytes: usize,
    /// Most open TCP connections, and most Engine.IO sessions. Further connections wait in the
    /// listen backlog; further handshakes get `503`. Default: 10 000.
    pub max_connections: usize,
    /// Most bytes of an HTTP request head. Default: 8 KiB.
    pub max_head_bytes: usize,
    /// Most header fields in an HTTP request. Default: 64.
    pub max_headers: usize,
    /// Time within which a request head (and its body) must arrive, so slow clients cannot hold
    /// connections open (slowloris). Default: 10 s.
    pub request_timeout: Duration,
    /// How long an idle keep-alive HTTP connection stays open. Default: 60 s.
    pub keep_alive_timeout: Duration,
    /// Cross-origin settings. Default: closed, no origin allowed (see [`Cors`]).
    pub cors: Cors,
    /// Path of the Socket.IO endpoint. Default: `Some("/socket.io/")`; `None` turns Socket.IO off.
    pub socketio_path: Option<String>,
    /// Socket.IO namespaces besides `/` that clients may join; others are refused.
    /// Default: empty, only `/`.
    pub namespaces: Vec<String>,
    /// Time a Socket.IO client has to join a namespace after its Engine.IO handshake
    /// (socket.io's `connectTimeout`). Default: 45 s.
    pub connect_timeout: Duration,
    /// Most acknowledgements one socket may owe the server at once; past it, an emit with ack
    /// reports the socket as overloaded. Default: 256.
    pub max_pending_acks: usize,
    /// Path of the Server-Sent Events endpoint. Default: `Some("/events")`; `None` turns SSE off.
    pub sse_path: Option<String>,
    /// How often a comment line is sent on an idle SSE stream, so the client and proxies keep it
    /// open. Default: 15 s.
    pub sse_heartbeat: Duration,
    /// Reconnection delay sent to SSE clients (`retry:`), plus up to 1 s of random jitter so a
    /// restart does not bring every client back at once. Default: 3 s.
    pub sse_retry: Duration,
    /// Most events kept in the history that SSE resume (`Last-Event-ID`) and Socket.IO
    /// connection state recovery replay from. Default: 10 000.
    pub sse_history_events: usize,
    /// Most bytes of events kept in that history (every wire form counts). Default: 8 MiB.
    pub sse_history_bytes: usize,
    /// Oldest event kept in that history. Default: 5 minutes.
    pub sse_history_age: Duration,
    /// Fixed pages to serve (a demo page, a health check). Default: none.
    pub pages: Vec<Page>,
    /// Most rooms one user may be in; `join_room` past it is refused with an error.
    /// Default: 1 024.
    pub max_rooms_per_user: usize,
    /// Most (user, room) memberships over all users; `join_room` past it is refused with an
    /// error. Default: 1 000 000.
    pub max_room_memberships: usize,
    /// Most bytes of a request body under an application route
    /// ([`crate::ServerBuilder::route`]); a larger declared `Content-Length` is refused with
    /// `413` before the body is read. Default: 1 000 000.
    pub max_request_body: usize,
    /// Socket.IO connection state recovery (socket.io 4.6+ clients): a client that lost its
    /// connection gets, on reconnecting within the window, the same socket id, its rooms, and
    /// every event it missed, from the same history that backs SSE resume. Default: `None`, off
    /// (as in socket.io): with it on, every event without an ack carries its offset as one more,
    /// last argument, which the client's listeners see too.
    pub connection_state_recovery: Option<Recovery>,
    /// A connection whose outbound queue holds more than this many bytes drops volatile events
    /// (`volatile()` sends) instead of queueing them. Default: 64 KiB; at most
    /// `max_outbound_bytes`.
    pub volatile_low_water: usize,
    /// Event loops, each on its own thread with its own connections: a new connection goes to
    /// the next loop in turn, and every API promise (audiences, rooms, acks, one history for
    /// resume and recovery, handler order per socket) holds across them as within one. From 1
    /// to 64. Default: the `TIDINGS_EVENT_LOOPS` environment variable when it holds such a
    /// number, else one per core the process may use, at most 8.
    pub event_loops: usize,
}

/// How Socket.IO connection state recovery behaves (see `Config::connection_state_recovery`).
///
/// ```
/// use std::time::Duration;
/// use tidings::{Config, Recovery};
///
/// let config = Config {
///     connection_state_recovery: Some(Recovery {
///         max_disconnection_duration: Duration::from_secs(30),
///         ..Recovery::default()
///     }),
///     ..Config::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// How long a disconnected session waits for its client. Default: 2 minutes.
    pub max_disconnection_duration: Duration,
    /// Restore without asking the authentication hook again. Default: `false`: the hook runs on
    /// every reconnect, and a session is restored only when the hook says the same identity
    /// again (otherwise the client gets a fresh session), so a stolen or guessed session id never
    /// opens someone else's session. socket.io's `skipMiddlewares` restores on the id alone.
    /// (An anonymous socket has no identity to compare: its 120-bit random id alone decides.)
    pub skip_authentication: bool,
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery {
            max_disconnection_duration: Duration::from_secs(120),
            skip_authentication: false,
        }
    }
}

/// A fixed body served at a path: a `GET` of exactly `path` returns it, for a demo page, a health
/// check, anything that needs no handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The exact request path, e.g. `/health`; no query string.
    pub path: String,
    /// The `Content-Type` sent with the body, e.g. `text/html; charset=utf-8`.
    pub content_type: &'static str,
    /// The body, sent as it is.
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
            max_request_body: 1_000_000,
            connection_state_recovery: None,
            volatile_low_water: 64 * 1024,
            event_loops: default_event_loops(),
        }
    }
}

/// `TIDINGS_EVENT_LOOPS` if set to a number from 1 to 64, else the cores this process may use,
/// at most 8 (past that, one broadcast's sweep is short enough that more loops mostly add
/// cross-loop traffic).
fn default_event_loops() -> usize {
    if let Some(n) = std::env::var("TIDINGS_EVENT_LOOPS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
    {
        return n;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
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
        if self.volatile_low_water > self.max_outbound_bytes {
            return err("volatile_low_water must be at most max_outbound_bytes");
        }
        if let Some(r) = &self.connection_state_recovery {
            if r.max_disconnection_duration.is_zero()
                || r.max_disconnection_duration > Duration::from_secs(24 * 3600)
            {
                return err("max_disconnection_duration must be between 1 ms and 24 h");
            }
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
        if self.max_request_body > (1 << 30) {
            return err("max_request_body must be at most 1 GiB");
        }
        if self.max_outbound_bytes < self.max_payload {
            return err("max_outbound_bytes must be at least max_payload");
        }
        if self.max_connections == 0 {
            return err("max_connections must be at least 1");
        }
        if !(1..=64).contains(&self.event_loops) {
            return err("event_loops must be between 1 and 64");
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
