//! Engine.IO v4 sessions: handshake, long-polling, WebSocket, the polling→websocket upgrade,
//! heartbeat and close. Packets for a session are encoded once (`Queued`) and either written to its
//! WebSocket or buffered for the next poll.

use crate::engine::id_map::IdMap;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;

use super::{AppEvent, ConnId, ConnRole, Engine, Output, Request, WsMessage};
use crate::buf::Chunk;
use crate::proto::eio::{self as codec, ErrorCode, Handshake, Packet};
use crate::proto::http::{self, RequestHead, Response};
use crate::proto::ws;

pub use crate::proto::eio::Data;

use super::timers::TimerKey;

/// A session's identity for the application: unique for the life of the server (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Why a session closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close packet.
    ClientClose,
    /// The transport went away (socket closed, aborted poll).
    TransportClose,
    /// No pong within `pingTimeout` of a ping.
    PingTimeout,
    /// The client broke the protocol (bad packet, second concurrent poll, ...).
    ProtocolError,
    /// The session's outbound buffer passed its cap (a client that does not read).
    BufferFull,
    /// The application closed it.
    ServerClose,
    /// The server is shutting down.
    ServerShutdown,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::ClientClose => "client close",
            CloseReason::TransportClose => "transport close",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::BufferFull => "buffer full",
            CloseReason::ServerClose => "server close",
            CloseReason::ServerShutdown => "server shutdown",
        })
    }
}

/// Which layer owns a session's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// Raw Engine.IO: messages go to the application.
    Raw,
    /// Socket.IO: messages go to the Socket.IO layer.
    SocketIo,
}

/// One encoded Engine.IO packet, ready for either transport. Shared, so a broadcast is encoded once.
#[derive(Clone, Debug)]
pub(crate) enum Queued {
    /// The text form (`4hello`, `2`, `6`): a WebSocket text frame or a polling segment as is.
    Text(Arc<[u8]>),
    /// A binary message: a WebSocket binary frame as is, or `b<base64>` in a polling payload.
    Binary(Arc<[u8]>),
    /// A text packet with its complete WebSocket frame built once: a broadcast's recipients on
    /// WebSocket all queue the very same bytes (one chunk, one iovec each).
    Framed { text: Arc<[u8]>, frame: Arc<[u8]> },
}

impl Queued {
    pub(crate) fn message(data: &Data) -> Queued {
        match data {
            Data::Text(t) => {
                let mut v = Vec::with_capacity(t.len() + 1);
                v.push(b'4');
                v.extend_from_slice(t.as_bytes());
                Queued::Text(v.into())
            }
            Data::Binary(b) => Queued::Binary(b.as_slice().into()),
        }
    }

    fn control(text: &'static str) -> Queued {
        Queued::Text(Arc::from(text.as_bytes()))
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Queued::Text(b) | Queued::Binary(b) => b.len(),
            Queued::Framed { text, .. } => text.len(),
        }
    }

    /// Appends this packet to a polling payload.
    fn append_to_payload(&self, out: &mut Vec<u8>) {
        if !out.is_empty() {
            out.push(codec::RECORD_SEPARATOR);
        }
        match self {
            Queued::Text(b) | Queued::Framed { text: b, .. } => out.extend_from_slice(b),
            Queued::Binary(b) => {
                out.push(b'b');
                let enc = base64::engine::general_purpose::STANDARD.encode(b);
                out.extend_from_slice(enc.as_bytes());
            }
        }
    }

    /// A text packet with its WebSocket frame (header and payload in one shared buffer).
    pub(crate) fn framed(text: Arc<[u8]>) -> Queued {
        let frame = ws::frame(ws::OPCODE_TEXT, &text).into();
        Queued::Framed { text, frame }
    }

    /// The whole WebSocket frame of a packet as one chunk.
    fn whole_frame(&self) -> Chunk {
        let (opcode, bytes) = match self {
            Queued::Framed { frame, .. } => return Chunk::Shared(frame.clone()),
            Queued::Text(b) => (ws::OPCODE_TEXT, b),
            Queued::Binary(b) => (ws::OPCODE_BINARY, b),
        };
        Chunk::Owned(ws::frame(opcode, bytes))
    }

    /// The WebSocket frame: one shared chunk when pre-framed, else an inline header and the
    /// shared payload.
    pub(super) fn ws_chunks(&self) -> (Chunk, Option<Chunk>) {
        let (opcode, bytes) = match self {
            Queued::Framed { frame, .. } => return (Chunk::Shared(frame.clone()), None),
            Queued::Text(b) => (ws::OPCODE_TEXT, b),
            Queued::Binary(b) => (ws::OPCODE_BINARY, b),
        };
        let (h, n) = ws::frame_header(opcode, bytes.len());
        (
            Chunk::inline(h.get(..n).unwrap_or(&[])),
            Some(Chunk::Shared(bytes.clone())),
        )
    }
}

#[derive(Debug)]
enum Transport {
    Polling,
    WebSocket(ConnId),
}

#[derive(Debug)]
struct Upgrade {
    conn: ConnId,
    probed: bool,
    deadline: Instant,
}

#[derive(Debug)]
struct PendingGet {
    conn: ConnId,
    keep_alive: bool,
    cors_origin: Option<String>,
}

#[derive(Debug)]
struct Session {
    sid: Arc<str>,
    endpoint: Endpoint,
    transport: Transport,
    // Boxed, both: a session has one for a moment (a long-poll GET, an upgrade), and every
    // session would pay for their room.
    pending_get: Option<Box<PendingGet>>,
    upgrade: Option<Box<Upgrade>>,
    buffer: VecDeque<Queued>,
    buffer_bytes: usize,
    next_ping: Instant,
    pong_deadline: Option<Instant>,
    /// Socket.IO: the client must connect to a namespace before this instant.
    attach_deadline: Option<Instant>,
    timer_armed: Option<Instant>,
}

impl Session {
    fn next_deadline(&self) -> Option<Instant> {
        let heartbeat = match self.pong_deadline {
            Some(d) => d,
            None => self.next_ping,
        };
        let mut next = heartbeat;
        if let Some(u) = &self.upgrade {
            next = next.min(u.deadline);
        }
        if let Some(a) = self.attach_deadline {
            next = next.min(a);
        }
        Some(next)
    }
}

/// Every Engine.IO session, by key and by sid.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    by_key: IdMap<Session>,
    by_sid: HashMap<Arc<str>, u64>,
    next_key: u64,
    /// Sids just closed over polling with no poll pending (by the client's close request or by
    /// the server), oldest first: a GET that raced with the close is answered as if it had been
    /// pending (see `client_closed_set`), instead of an error. Used once.
    client_closed: VecDeque<(Instant, Arc<str>)>,
    /// The packet a racing poll of each gets: a noop after the client's own close, the close
    /// packet after the server's (so the client hears "transport close", not an error).
    client_closed_set: HashMap<Arc<str>, &'static str>,
}

/// How long a client-closed sid still answers one racing poll.
const CLIENT_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

impl Sessions {
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    pub(crate) fn keys(&self) -> Vec<u64> {
        self.by_key.keys().copied().collect()
    }

    pub(crate) fn endpoint_of(&self, key: u64) -> Option<Endpoint> {
        self.by_key.get(&key).map(|s| s.endpoint)
    }
}

/// The query parameters Engine.IO looks at.
struct EioQuery {
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

fn eio_query(head: &RequestHead) -> EioQuery {
    let mut q = EioQuery {
        eio: None,
        transport: None,
        sid: None,
    };
    for (k, v) in http::parse_query(&head.query) {
        let slot = match k.as_str() {
            "EIO" => &mut q.eio,
            "transport" => &mut q.transport,
            "sid" => &mut q.sid,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v);
        }
    }
    q
}

impl Engine {
    fn eio_error(&mut self, conn: ConnId, head: &RequestHead, code: ErrorCode) {
        let status = if code == ErrorCode::Forbidden {
            403
        } else {
            400
        };
        let resp = Response::new(status).with_body("application/json", code.json());
        self.respond(conn, head, resp);
    }

    /// An HTTP request on the Engine.IO path.
    pub(super) fn eio_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        req: Request,
        endpoint: Endpoint,
    ) {
        let q = eio_query(&req.head);
        let transport = q.transport.as_deref();
        let is_ws = match transport {
            Some("polling") => false,
            Some("websocket") => true,
            _ => return self.eio_error(conn, &req.head, ErrorCode::UnknownTransport),
        };
        if q.eio.as_deref() != Some("4") {
            return self.eio_error(conn, &req.head, ErrorCode::UnsupportedProtocolVersion);
        }
        let upgrade = req.head.is_websocket_upgrade();
        if is_ws != upgrade {
            // `transport=websocket` without an Upgrade header, or an Upgrade on the polling transport.
            return self.eio_error(conn, &req.head, ErrorCode::BadRequest);
        }
        match q.sid {
            None => {
                if req.head.method != http::Method::Get {
                    return self.eio_error(conn, &req.head, ErrorCode::BadHandshakeMethod);
                }
                self.eio_handshake(now, conn, req, is_ws, endpoint);
            }
            Some(sid) => {
                let key = self
                    .eio
                    .by_sid
                    .get(sid.as_str())
                    .copied()
                    .filter(|k| self.eio.endpoint_of(*k) == Some(endpoint));
                // A session whose pong deadline has passed is gone, even if its timer has not
                // fired yet in this turn of the loop.
                if let Some(k) = key {
                    let expired = self
                        .eio
                        .by_key
                        .get(&k)
                        .and_then(|s| s.pong_deadline)
                        .is_some_and(|d| d <= now);
                    if expired {
                        self.eio_close(now, k, CloseReason::PingTimeout);
                    }
                }
                let key = key.filter(|k| self.eio.by_key.contains_key(k));
                if key.is_none() {
                    if let Some(to) = self.loop_of_sid(&sid) {
                        return self.push(Output::Forward {
                            conn,
                            to,
                            request: Box::new(req),
                        });
                    }
                }
                let Some(key) = key else {
                    let racing = (!is_ws && req.head.method == http::Method::Get)
                        .then(|| self.eio_take_client_closed(now, &sid))
                        .flatten();
                    if let Some(answer) = racing {
                        let mut body = Vec::new();
                        Queued::control(answer).append_to_payload(&mut body);
                        let resp = Response::new(200).with_body("text/plain; charset=UTF-8", body);
                        return self.respond(conn, &req.head, resp);
                    }
                    return self.eio_error(conn, &req.head, ErrorCode::UnknownSid);
                };
                if is_ws {
                    self.eio_start_upgrade(now, key, conn, &req.head);
                } else {
                    match req.head.method {
                        http::Method::Get => self.eio_poll_get(now, key, conn, &req.head),
                        http::Method::Post => self.eio_poll_post(now, key, conn, req),
                        _ => self.eio_error(conn, &req.head, ErrorCode::BadRequest),
                    }
                }
            }
        }
    }

    /// The other loop whose session `sid` is, if it names one (see `eio_handshake`).
    fn loop_of_sid(&self, sid: &str) -> Option<usize> {
        if self.hub.loops <= 1 || sid.len() != 20 {
            return None;
        }
        let first = *sid.as_bytes().first()?;
        let index = match first {
            b'A'..=b'Z' => first - b'A',
            b'a'..=b'z' => first - b'a' + 26,
            b'0'..=b'9' => first - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as usize;
        (index < self.hub.loops && index != self.loop_index).then_some(index)
    }

    /// Checks the WebSocket handshake headers and queues the 101 answer. `false`: a 400 was sent.
    fn accept_websocket(&mut self, conn: ConnId, head: &RequestHead) -> bool {
        let key = head
            .header("sec-websocket-key")
            .filter(|k| k.len() <= 64 && !k.is_empty());
        let version_ok = head.header("sec-websocket-version") == Some("13");
        let Some(key) = key.filter(|_| version_ok && head.method == http::Method::Get) else {
            self.eio_error(conn, head, ErrorCode::BadRequest);
            return false;
        };
        let mut resp = Response::new(101);
        resp.header("Upgrade", "websocket");
        resp.header("Connection", "Upgrade");
        resp.header("Sec-WebSocket-Accept", &http::websocket_accept_key(key));
        self.push(Output::Write {
            conn,
            chunk: Chunk::Owned(resp.encode_head_streaming()),
        });
        self.push(Output::StartWebSocket { conn });
        true
    }

    fn eio_handshake(
        &mut self,
        now: Instant,
        conn: ConnId,
        req: Request,
        is_ws: bool,
        endpoint: Endpoint,
    ) {
        if self.eio.len() >= self.cfg.max_connections {
            let resp =
                Response::new(503).with_body("text/plain; charset=utf-8", "Too many sessions");
            return self.respond(conn, &req.head, resp);
        }
        if is_ws && !self.accept_websocket(conn, &req.head) {
            return;
        }
        let sid: Arc<str> = loop {
            let mut bytes = self.random_bytes::<15>();
            if self.hub.loops > 1 {
                // The first character names the loop, so a request of this session that
                // arrives on another loop's connection finds its way here.
                bytes[0] = (bytes[0] & 0x03) | ((self.loop_index as u8) << 2);
            }
            let sid: Arc<str> = codec::sid_from_random(&bytes).into();
            if !self.eio.by_sid.contains_key(&sid) {
                break sid;
            }
        };
        let key = Self::take_id(&mut self.eio.next_key, self.hub.loops, self.loop_index);
        let handshake = Handshake {
            sid: sid.to_string(),
            upgrades: if is_ws {
                vec![]
            } else {
                vec!["websocket".to_string()]
            },
            ping_interval_ms: self.cfg.ping_interval.as_millis() as u64,
            ping_timeout_ms: self.cfg.ping_timeout.as_millis() as u64,
            max_payload: self.cfg.max_payload as u64,
        };
        let open = Queued::Text(format!("0{}", handshake.to_json()).into_bytes().into());
        let session = Session {
            sid: sid.clone(),
            endpoint,
            transport: if is_ws {
                Transport::WebSocket(conn)
            } else {
                Transport::Polling
            },
            pending_get: None,
            upgrade: None,
            buffer: VecDeque::new(),
            buffer_bytes: 0,
            next_ping: now + self.cfg.ping_interval,
            pong_deadline: None,
            attach_deadline: (endpoint == Endpoint::SocketIo)
                .then(|| now + self.cfg.connect_timeout),
            timer_armed: None,
        };
        self.eio.by_key.insert(key, session);
        self.eio.by_sid.insert(sid.clone(), key);
        if is_ws {
            self.roles.insert(conn, ConnRole::Ws(key));
            self.eio_send(now, key, open);
        } else {
            let mut body = Vec::new();
            open.append_to_payload(&mut body);
            let resp = Response::new(200).with_body("text/plain; charset=UTF-8", body);
            self.respond(conn, &req.head, resp);
        }
        self.eio_reschedule(key);
        match endpoint {
            Endpoint::Raw => self.push(Output::App(AppEvent::EioOpen {
                session: SessionId(key),
                sid,
                remote: req.remote,
            })),
            Endpoint::SocketIo => {
                let info = Arc::new(super::RequestInfo::new(req.head, req.remote));
                self.sio_open(key, info);
            }
        }
    }

    fn eio_poll_get(&mut self, now: Instant, key: u64, conn: ConnId, head: &RequestHead) {
        let cors_origin = self.allowed_origin(head);
        let Some(s) = self.eio.by_key.get_mut(&key) else {
            return;
        };
        if !matches!(s.transport, Transport::Polling) {
            return self.eio_error(conn, head, ErrorCode::BadRequest);
        }
        if let Some(previous) = s.pending_get.take() {
            // A second concurrent GET: refused, and the session is closed, answering the pending
            // poll with a close packet (as the reference server does).
            s.pending_get = Some(previous);
            self.eio_error(conn, head, ErrorCode::BadRequest);
            return self.eio_close(now, key, CloseReason::ProtocolError);
        }
        s.pending_get = Some(Box::new(PendingGet {
            conn,
            keep_alive: head.keep_alive(),
            cors_origin,
        }));
        self.roles.insert(conn, ConnRole::PollGet(key));
        self.eio_flush_poll(key);
    }

    /// Answers the pending GET if there is something to send.
    fn eio_flush_poll(&mut self, key: u64) {
        let Some(s) = self.eio.by_key.get_mut(&key) else {
            return;
        };
        let probed = s.upgrade.as_ref().is_some_and(|u| u.probed);
        if s.pending_get.is_none() || (s.buffer.is_empty() && !probed) {
            return;
        }
        let Some(get) = s.pending_get.take() else {
            return;
        };
        let mut body = Vec::new();
        if probed {
            // During an upgrade the pending poll is answered with a noop so the client can switch;
            // buffered packets wait for the new transport.
            Queued::control("6").append_to_payload(&mut body);
        } else {
            for p in s.buffer.drain(..) {
                p.append_to_payload(&mut body);
            }
            s.buffer_bytes = 0;
            s.buffer = VecDeque::new();
        }
        self.roles.remove(&get.conn);
        self.poll_response(*get, body);
    }

    fn poll_response(&mut self, get: PendingGet, body: Vec<u8>) {
        let mut resp = Response::new(200).with_body("text/plain; charset=UTF-8", body);
        if let Some(origin) = &get.cors_origin {
            super::apply_cors(&mut resp, origin, self.cfg.cors.allow_credentials);
        }
        self.push(Output::Write {
            conn: get.conn,
            chunk: Chunk::Owned(resp.encode(get.keep_alive)),
        });
        self.push(Output::ResponseDone {
            conn: get.conn,
            keep_alive: get.keep_alive,
        });
    }

    fn eio_poll_post(&mut self, now: Instant, key: u64, conn: ConnId, req: Request) {
        let on_polling = self
            .eio
            .by_key
            .get(&key)
            .is_some_and(|s| matches!(s.transport, Transport::Polling));
        if !on_polling {
            return self.eio_error(conn, &req.head, ErrorCode::BadRequest);
        }
        // Engine.IO v4 payloads are text; binary travels base64-encoded inside them. The reference
        // server refuses an `application/octet-stream` body on v4 ("invalid content").
        let binary_body = req
            .head
            .header("content-type")
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/octet-stream"));
        let max_packets = self.cfg.max_payload;
        let packets = if binary_body {
            None
        } else {
            codec::decode_payload(&req.body, max_packets).ok()
        };
        let Some(packets) = packets else {
            self.eio_error(conn, &req.head, ErrorCode::BadRequest);
            return self.eio_close(now, key, CloseReason::ProtocolError);
        };
        let resp = Response::new(200).with_body("text/html; charset=UTF-8", "ok");
        self.respond(conn, &req.head, resp);
        for p in packets {
            if !self.eio.by_key.contains_key(&key) {
                break;
            }
            self.eio_packet(now, key, p);
        }
    }

    /// A packet from the client on the session's current transport.
    fn eio_packet(&mut self, now: Instant, key: u64, packet: Packet) {
        match packet {
            Packet::Message(data) => self.eio_deliver(now, key, data),
            Packet::Pong(_) => {
                if let Some(s) = self.eio.by_key.get_mut(&key) {
                    s.pong_deadline = None;
                    s.next_ping = now + self.cfg.ping_interval;
                }
                self.eio_reschedule(key);
            }
            Packet::Close => self.eio_close(now, key, CloseReason::ClientClose),
            Packet::Noop => {}
            // v4: "the server sends pings"; a ping from the client (outside the upgrade probe), an
            // open or an upgrade on the established transport is a protocol error.
            Packet::Ping(_) | Packet::Open(_) | Packet::Upgrade => {
                self.eio_close(now, key, CloseReason::ProtocolError)
            }
        }
    }

    fn eio_deliver(&mut self, now: Instant, key: u64, data: Data) {
        let Some(s) = self.eio.by_key.get(&key) else {
            return;
        };
        match s.endpoint {
            Endpoint::Raw => self.push(Output::App(AppEvent::EioMessage {
                session: SessionId(key),
                data,
            })),
            Endpoint::SocketIo => self.sio_message(now, key, data),
        }
    }

    fn eio_expire_client_closed(&mut self, now: Instant) {
        let e = &mut self.eio;
        while let Some((t, sid)) = e.client_closed.front() {
            if now.saturating_duration_since(*t) <= CLIENT_CLOSE_GRACE {
                break;
            }
            e.client_closed_set.remove(sid);
            e.client_closed.pop_front();
        }
    }

    /// `true` (once) if `sid` was closed by its client within the grace period.
    fn eio_take_client_closed(&mut self, now: Instant, sid: &str) -> Option<&'static str> {
        self.eio_expire_client_closed(now);
        self.eio.client_closed_set.remove(sid)
    }

    /// A Socket.IO namespace connected: the connect deadline no longer applies.
    pub(super) fn eio_clear_attach_deadline(&mut self, key: u64) {
        if let Some(s) = self.eio.by_key.get_mut(&key) {
            s.attach_deadline = None;
        }
    }

    pub(super) fn eio_ws_message(&mut self, now: Instant, key: u64, msg: WsMessage<'_>) {
        let packet = match msg {
            WsMessage::Text(t) => {
                // By far the commonest input: a message ("4…") on a Socket.IO session, read
                // where it lies instead of copied into a packet first.
                if let Some(payload) = t.strip_prefix('4') {
                    if self.eio.endpoint_of(key) == Some(Endpoint::SocketIo) {
                        return self.sio_text(now, key, payload);
                    }
                }
                codec::decode_text_packet(t)
            }
            WsMessage::Binary(b) => Ok(codec::decode_ws_binary(b)),
        };
        match packet {
            Ok(p) => self.eio_packet(now, key, p),
            Err(_) => self.eio_close(now, key, CloseReason::ProtocolError),
        }
    }

    /// A WebSocket request with the sid of a polling session: the start of an upgrade.
    fn eio_start_upgrade(&mut self, now: Instant, key: u64, conn: ConnId, head: &RequestHead) {
        let ok = self
            .eio
            .by_key
            .get(&key)
            .is_some_and(|s| matches!(s.transport, Transport::Polling) && s.upgrade.is_none());
        if !ok {
            // Already upgraded (or upgrading): the reference server completes the WebSocket
            // handshake and closes the new socket at once, leaving the session untouched.
            if self.accept_websocket(conn, head) {
                self.push(Output::Write {
                    conn,
                    chunk: Chunk::inline(&ws::close_frame(1000)),
                });
                self.push(Output::Close { conn });
            }
            return;
        }
        if !self.accept_websocket(conn, head) {
            return;
        }
        if let Some(s) = self.eio.by_key.get_mut(&key) {
            s.upgrade = Some(Box::new(Upgrade {
                conn,
                probed: false,
                deadline: now + self.cfg.upgrade_timeout,
            }));
        }
        self.roles.insert(conn, ConnRole::Probe(key));
        self.eio_reschedule(key);
    }

    /// A message on the probe WebSocket: `2probe` → `3probe`, then `5` completes the upgrade.
    pub(super) fn eio_probe_message(
        &mut self,
        now: Instant,
        key: u64,
        conn: ConnId,
        msg: WsMessage<'_>,
    ) {
        let packet = match msg {
            WsMessage::Text(t) => codec::decode_text_packet(t).ok(),
            WsMessage::Binary(_) => None,
        };
        let probed = self
            .eio
            .by_key
            .get(&key)
            .and_then(|s| s.upgrade.as_ref())
            .is_some_and(|u| u.probed);
        match packet {
            Some(Packet::Ping(d)) if d == "probe" && !probed => {
                self.ws_write(conn, &Queued::control("3probe"));
                if let Some(u) = self
                    .eio
                    .by_key
                    .get_mut(&key)
                    .and_then(|s| s.upgrade.as_mut())
                {
                    u.probed = true;
                }
                self.eio_flush_poll(key);
            }
            Some(Packet::Upgrade) if probed => self.eio_finish_upgrade(now, key, conn),
            _ => {
                // Anything else during the upgrade: drop the probe, keep the session on polling.
                self.roles.remove(&conn);
                self.push(Output::Close { conn });
                self.eio_cancel_upgrade(key, conn);
            }
        }
    }

    fn eio_finish_upgrade(&mut self, now: Instant, key: u64, conn: ConnId) {
        let Some(s) = self.eio.by_key.get_mut(&key) else {
            return;
        };
        s.upgrade = None;
        s.transport = Transport::WebSocket(conn);
        let pending = s.pending_get.take();
        let buffered: Vec<Queued> = s.buffer.drain(..).collect();
        s.buffer = VecDeque::new();
        s.buffer_bytes = 0;
        self.roles.insert(conn, ConnRole::Ws(key));
        if let Some(get) = pending {
            self.roles.remove(&get.conn);
            let mut body = Vec::new();
            Queued::control("6").append_to_payload(&mut body);
            self.poll_response(*get, body);
        }
        for p in buffered {
            self.eio_send(now, key, p);
        }
        self.eio_reschedule(key);
    }

    pub(super) fn eio_cancel_upgrade(&mut self, key: u64, conn: ConnId) {
        if let Some(s) = self.eio.by_key.get_mut(&key) {
            if s.upgrade.as_ref().is_some_and(|u| u.conn == conn) {
                s.upgrade = None;
            }
        }
        // The buffer may now go out on the poll that the probe had been holding back.
        self.eio_flush_poll(key);
    }

    pub(super) fn eio_forget_get(&mut self, key: u64, conn: ConnId) {
        if let Some(s) = self.eio.by_key.get_mut(&key) {
            if s.pending_get.as_ref().is_some_and(|g| g.conn == conn) {
                s.pending_get = None;
            }
        }
    }

    fn ws_write(&mut self, conn: ConnId, packet: &Queued) {
        let (first, second) = packet.ws_chunks();
        self.push(Output::Write { conn, chunk: first });
        if let Some(chunk) = second {
            self.push(Output::Write { conn, chunk });
        }
    }

    /// Sends a packet that may be dropped (a volatile emit): on a polling session when its buffer
    /// is past `volatile_low_water`, on a WebSocket when io finds the connection's queue past it.
    /// Always one chunk on a WebSocket, so io drops all of it or none.
    pub(crate) fn eio_send_volatile(&mut self, now: Instant, key: u64, packet: Queued) {
        let Some(s) = self.eio.by_key.get(&key) else {
            return;
        };
        match s.transport {
            Transport::WebSocket(conn) => {
                let chunk = packet.whole_frame();
                self.push(Output::WriteVolatile { conn, chunk });
            }
            Transport::Polling => {
                if s.buffer_bytes > self.cfg.volatile_low_water {
                    return;
                }
                self.eio_send(now, key, packet);
            }
        }
    }

    /// The WebSocket a session is on, if it is on one (not polling, not mid-upgrade).
    pub(crate) fn eio_websocket_of(&self, key: u64) -> Option<ConnId> {
        match self.eio.by_key.get(&key)?.transport {
            Transport::WebSocket(conn) => Some(conn),
            Transport::Polling => None,
        }
    }

    /// Sends one packet on the session's transport, or buffers it for the next poll.
    pub(crate) fn eio_send(&mut self, now: Instant, key: u64, packet: Queued) {
        let Some(s) = self.eio.by_key.get_mut(&key) else {
            return;
        };
        match s.transport {
            Transport::WebSocket(conn) => self.ws_write(conn, &packet),
            Transport::Polling => {
                s.buffer_bytes += packet.len() + 1;
                s.buffer.push_back(packet);
                if s.buffer_bytes > self.cfg.max_outbound_bytes {
                    return self.eio_close(now, key, CloseReason::BufferFull);
                }
                self.eio_flush_poll(key);
            }
        }
    }

    /// Closes a session: answers a pending poll with a close packet, closes its sockets, tells the
    /// owner. Idempotent.
    pub(crate) fn eio_close(&mut self, now: Instant, key: u64, reason: CloseReason) {
        let Some(s) = self.eio.by_key.remove(&key) else {
            return;
        };
        log::debug!("engine.io session {} closed: {reason}", s.sid);
        self.eio.by_sid.remove(&s.sid);
        let racing_answer = match reason {
            CloseReason::ClientClose => Some("6"),
            // The server closed it while the client's next poll may be on its way (with several
            // loops, possibly moving between them).
            CloseReason::ServerClose => Some("1"),
            _ => None,
        };
        if let Some(answer) = racing_answer
            .filter(|_| s.pending_get.is_none() && matches!(s.transport, Transport::Polling))
        {
            self.eio_expire_client_closed(now);
            self.eio.client_closed.push_back((now, s.sid.clone()));
            self.eio.client_closed_set.insert(s.sid.clone(), answer);
        }
        if let Some(get) = s.pending_get {
            if self.roles.remove(&get.conn).is_some() {
                // The client asked to close: its pending poll ends cleanly with a noop (as the
                // reference server does). Otherwise the poll carries the close packet.
                let last = if reason == CloseReason::ClientClose {
                    "6"
                } else {
                    "1"
                };
                let mut body = Vec::new();
                Queued::control(last).append_to_payload(&mut body);
                self.poll_response(*get, body);
            }
        }
        if let Some(u) = s.upgrade {
            self.roles.remove(&u.conn);
            self.push(Output::Close { conn: u.conn });
        }
        if let Transport::WebSocket(conn) = s.transport {
            if self.roles.remove(&conn).is_some() {
                self.push(Output::Write {
                    conn,
                    chunk: Chunk::inline(&ws::close_frame(1000)),
                });
                self.push(Output::Close { conn });
            }
        }
        match s.endpoint {
            Endpoint::Raw => self.push(Output::App(AppEvent::EioClose {
                session: SessionId(key),
                reason,
            })),
            Endpoint::SocketIo => self.sio_session_closed(now, key, reason),
        }
    }

    pub(super) fn eio_reschedule(&mut self, key: u64) {
        if let Some(s) = self.eio.by_key.get_mut(&key) {
            let at = s.next_deadline();
            self.timers
                .schedule(TimerKey::EioSession(key), at, &mut s.timer_armed);
        }
    }

    /// A session's timer entry fired: ping, pong timeout or upgrade timeout.
    pub(super) fn eio_timer(&mut self, now: Instant, key: u64, at: Instant) {
        let Some(s) = self.eio.by_key.get_mut(&key) else {
            return;
        };
        if s.timer_armed != Some(at) {
            return; // stale entry: a newer, earlier one was pushed and has already fired
        }
        s.timer_armed = None;
        if s.pong_deadline.is_some_and(|d| d <= now) {
            return self.eio_close(now, key, CloseReason::PingTimeout);
        }
        if s.attach_deadline.is_some_and(|d| d <= now) {
            // Socket.IO `connectTimeout`: no namespace joined in time.
            return self.eio_close(now, key, CloseReason::ProtocolError);
        }
        if let Some(u) = &s.upgrade {
            if u.deadline <= now {
                let conn = u.conn;
                self.roles.remove(&conn);
                self.push(Output::Close { conn });
                self.eio_cancel_upgrade(key, conn);
            }
        }
        let Some(s) = self.eio.by_key.get_mut(&key) else {
            return;
        };
        if s.pong_deadline.is_none() && s.next_ping <= now {
            // The client is told "pingInterval + pingTimeout" in the handshake and closes by that
            // rule itself: the pong deadline counts from when the ping was due, not from when a
            // late timer (a busy loop, a loaded machine) got round to sending it.
            s.pong_deadline = Some(s.next_ping + self.cfg.ping_timeout);
            self.eio_send(now, key, Queued::control("2"));
        }
        self.eio_reschedule(key);
    }
}
