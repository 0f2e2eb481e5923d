//! The sans-IO engine: Engine.IO sessions (and, on top, Socket.IO sockets and SSE streams) as state
//! machines. It takes inputs stamped with `now` and produces outputs (bytes for a connection,
//! closes, application events) and its next deadline. No sockets, no clock, no threads: scenario
//! tests drive it with a simulated clock.

mod eio;
pub(crate) mod timers;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::buf::Chunk;
use crate::config::Config;
use crate::proto::http::{self, RequestHead, Response};

pub use eio::{CloseReason, Data, SessionId};
use timers::{TimerKey, Timers};

/// The io layer's name for a TCP connection. Opaque here; io makes it unique over the connection's
/// lifetime (slot index plus generation), so a late output for a closed connection is harmless.
pub type ConnId = u64;

/// Fills a buffer with cryptographically secure random bytes (session ids). An input, so that the
/// engine stays deterministic under test.
pub type RandomSource = Box<dyn FnMut(&mut [u8]) + Send>;

/// A complete HTTP request as io read it: the head and a body of exactly Content-Length bytes.
#[derive(Debug)]
pub struct Request {
    pub head: RequestHead,
    pub body: Vec<u8>,
    pub remote: Option<SocketAddr>,
}

/// A WebSocket message from a client (tungstenite has already checked framing, masking, UTF-8 and
/// size limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    Text(String),
    Binary(Vec<u8>),
}

/// What the engine asks io to do.
#[derive(Debug)]
pub enum Output {
    /// Queue bytes on a connection.
    Write { conn: ConnId, chunk: Chunk },
    /// The response to the request being served on `conn` is complete. io reads the next request
    /// (keep-alive) or closes once the bytes are written.
    ResponseDone { conn: ConnId, keep_alive: bool },
    /// From now on `conn` speaks WebSocket (the 101 response has been queued).
    StartWebSocket { conn: ConnId },
    /// Close `conn` once its queued bytes are written.
    Close { conn: ConnId },
    /// Something for the application.
    App(AppEvent),
}

/// Events delivered to the application (off the io thread).
#[derive(Debug, Clone, PartialEq)]
pub enum AppEvent {
    /// A raw Engine.IO session opened.
    EioOpen {
        session: SessionId,
        sid: Arc<str>,
        remote: Option<SocketAddr>,
    },
    /// A raw Engine.IO session sent a message.
    EioMessage { session: SessionId, data: Data },
    /// A raw Engine.IO session closed.
    EioClose {
        session: SessionId,
        reason: CloseReason,
    },
}

/// What the application asks the engine to do (through the handle's channel).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Send a message on a raw Engine.IO session.
    EioSend { session: SessionId, data: Data },
    /// Close a raw Engine.IO session.
    EioClose { session: SessionId },
}

/// What a connection is currently used for, as far as the engine is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnRole {
    /// A long-polling GET parked until the session has something to send.
    PollGet(u64),
    /// The WebSocket transport of a session.
    Ws(u64),
    /// A WebSocket being probed during a polling→websocket upgrade.
    Probe(u64),
}

/// The engine. See the module docs.
pub struct Engine {
    cfg: Arc<Config>,
    random: RandomSource,
    outputs: VecDeque<Output>,
    timers: Timers,
    roles: HashMap<ConnId, ConnRole>,
    eio: eio::Sessions,
}

impl Engine {
    pub fn new(cfg: Arc<Config>, random: RandomSource) -> Engine {
        Engine {
            cfg,
            random,
            outputs: VecDeque::new(),
            timers: Timers::default(),
            roles: HashMap::new(),
            eio: eio::Sessions::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The next output, if any. Call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When `handle_timeout` should be called next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Open Engine.IO sessions (for tests and metrics).
    pub fn session_count(&self) -> usize {
        self.eio.len()
    }

    /// Pending timer entries (for tests: proves floods do not grow the heap).
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    /// A complete HTTP request arrived on `conn` (WebSocket upgrade requests included).
    pub fn handle_request(&mut self, now: Instant, conn: ConnId, req: Request) {
        let path = req.head.path.as_str();
        let is_eio = self
            .cfg
            .engineio_path
            .as_deref()
            .is_some_and(|p| path_matches(p, path));
        if is_eio {
            if req.head.method == http::Method::Options {
                self.preflight(conn, &req.head);
            } else {
                self.eio_request(now, conn, req);
            }
            return;
        }
        let resp = Response::new(404).with_body("text/plain; charset=utf-8", "Not Found");
        self.respond(conn, &req.head, resp);
    }

    /// A WebSocket message arrived on `conn`.
    pub fn handle_ws_message(&mut self, now: Instant, conn: ConnId, msg: WsMessage) {
        match self.roles.get(&conn).copied() {
            Some(ConnRole::Ws(key)) => self.eio_ws_message(now, key, msg),
            Some(ConnRole::Probe(key)) => self.eio_probe_message(now, key, conn, msg),
            Some(ConnRole::PollGet(_)) | None => self.push(Output::Close { conn }),
        }
    }

    /// `conn` is gone (peer closed, error, queue cap, shutdown). Nothing more is written to it.
    pub fn handle_conn_closed(&mut self, now: Instant, conn: ConnId) {
        let Some(role) = self.roles.remove(&conn) else {
            return;
        };
        match role {
            // "an aborted GET closes the session" (DESIGN §5): the client is gone or misbehaving.
            ConnRole::PollGet(key) => {
                self.eio_forget_get(key, conn);
                self.eio_close(now, key, CloseReason::TransportClose);
            }
            ConnRole::Ws(key) => self.eio_close(now, key, CloseReason::TransportClose),
            ConnRole::Probe(key) => self.eio_cancel_upgrade(key, conn),
        }
    }

    /// A command from the application.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::EioSend { session, data } => {
                if self.eio.endpoint_of(session.0) == Some(eio::Endpoint::Raw) {
                    self.eio_send(now, session.0, eio::Queued::message(&data));
                }
            }
            Command::EioClose { session } => {
                if self.eio.endpoint_of(session.0) == Some(eio::Endpoint::Raw) {
                    self.eio_close(now, session.0, CloseReason::ServerClose);
                }
            }
        }
    }

    /// Fires every deadline due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Bounded: each iteration pops one entry and pushes at most one later entry.
        let mut budget = self.timers.len().saturating_add(16);
        while budget > 0 {
            budget -= 1;
            let Some((at, key)) = self.timers.pop_due(now) else {
                break;
            };
            match key {
                TimerKey::EioSession(k) => self.eio_timer(now, k, at),
            }
        }
    }

    /// Closes everything (graceful shutdown): sessions are closed with `ServerShutdown`.
    pub fn shutdown(&mut self, now: Instant) {
        for key in self.eio.keys() {
            self.eio_close(now, key, CloseReason::ServerShutdown);
        }
    }

    fn push(&mut self, out: Output) {
        self.outputs.push_back(out);
    }

    fn random_bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        (self.random)(&mut b);
        b
    }

    /// Queues a complete response, adding CORS headers when the request's origin is allowed.
    fn respond(&mut self, conn: ConnId, head: &RequestHead, mut resp: Response) {
        self.add_cors(head, &mut resp);
        let keep_alive = head.keep_alive();
        self.push(Output::Write {
            conn,
            chunk: Chunk::Owned(resp.encode(keep_alive)),
        });
        self.push(Output::ResponseDone { conn, keep_alive });
    }

    /// The allowed origin that `head` carries, if any: the value written back is the configured
    /// string, never the request's bytes.
    fn allowed_origin(&self, head: &RequestHead) -> Option<String> {
        let origin = head.header("origin")?;
        self.cfg
            .cors
            .allowed_origins
            .iter()
            .find(|o| o.as_str() == origin)
            .cloned()
    }

    fn add_cors(&self, head: &RequestHead, resp: &mut Response) {
        if let Some(origin) = self.allowed_origin(head) {
            apply_cors(resp, &origin, self.cfg.cors.allow_credentials);
        }
    }

    fn preflight(&mut self, conn: ConnId, head: &RequestHead) {
        let mut resp = Response::new(204);
        if self.allowed_origin(head).is_some() {
            resp.header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
            if let Some(h) = head.header("access-control-request-headers") {
                if is_token_list(h) {
                    resp.header("Access-Control-Allow-Headers", h);
                }
            }
            resp.header("Access-Control-Max-Age", "600");
        }
        self.respond(conn, head, resp);
    }
}

pub(crate) fn apply_cors(resp: &mut Response, origin: &str, credentials: bool) {
    resp.header("Access-Control-Allow-Origin", origin);
    resp.header("Vary", "Origin");
    if credentials {
        resp.header("Access-Control-Allow-Credentials", "true");
    }
}

/// `/engine.io/` also answers `/engine.io` (clients differ on the trailing slash).
fn path_matches(configured: &str, path: &str) -> bool {
    path == configured
        || (configured.ends_with('/')
            && path.len() + 1 == configured.len()
            && configured.starts_with(path))
}

/// A comma-separated list of header-name tokens, as `Access-Control-Request-Headers` carries.
fn is_token_list(v: &str) -> bool {
    v.len() <= 512
        && v.split(',').all(|t| {
            let t = t.trim();
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests;
