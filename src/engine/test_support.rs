//! Helpers shared by the engine scenario tests (`tests` and the `tests_sio_*`, `tests_sse`,
//! `tests_unified`, `tests_index_model` modules): requests built with our own HTTP parser, the
//! server's WebSocket frames decoded and checked independently of the engine's encoder, and the
//! Socket.IO / SSE harness [`H`].
//!
//! [`H`] plays the io layer on a simulated clock: it builds requests with our own HTTP parser,
//! feeds WebSocket messages, collects every write per connection, decodes the (unmasked) server
//! WebSocket frames itself, parses SSE streams with [`SseParser`], and closes a connection (telling
//! the engine) when the engine asks for it, as io does once the queued bytes are written.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;
use crate::proto::http::{parse_request_head, HeadLimits};
use crate::proto::sse::{ParsedEvent, SseParser};
use serde_json::json;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// RFC 6455 §1.3's sample nonce.
pub(super) const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// RFC 6455 §1.3: the accept value for the sample nonce above.
pub(super) const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A valid WebSocket upgrade request head for `target`.
pub(super) fn ws_upgrade_head(target: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A request with the head `raw` (which must be exactly one complete head), no body and no
/// remote address.
pub(super) fn request(raw: &str) -> Request {
    // Generous limits: the io layer enforces the real ones before the engine sees a request.
    let limits = HeadLimits {
        max_head_bytes: 1 << 21,
        max_headers: 64,
    };
    let (head, n) = parse_request_head(raw.as_bytes(), &limits).unwrap();
    assert_eq!(n, raw.len(), "test built a bad head");
    Request {
        head,
        body: Vec::new(),
        remote: None,
    }
}

/// A server-to-client WebSocket frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Frame {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame with this code (our server never sends a reason).
    Close(u16),
}

/// Parses one complete server frame (RFC 6455 §5.2), checking what a server must do: FIN set,
/// RSV clear, no mask, minimal length encoding. `None` if `b` holds no complete frame.
pub(super) fn parse_frame(b: &[u8]) -> Option<(Frame, usize)> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    assert_eq!(b0 & 0xF0, 0x80, "server frames are final, RSV bits clear");
    assert_eq!(b1 & 0x80, 0, "server frames are unmasked");
    let (len, hl) = match b1 & 0x7F {
        126 => {
            let n = usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]));
            assert!(n >= 126, "minimal length encoding");
            (n, 4)
        }
        127 => {
            let n = u64::from_be_bytes(b.get(2..10)?.try_into().unwrap()) as usize;
            assert!(n > 0xFFFF, "minimal length encoding");
            (n, 10)
        }
        n => (usize::from(n), 2),
    };
    let payload = b.get(hl..hl + len)?;
    let f = match b0 & 0x0F {
        0x1 => Frame::Text(String::from_utf8(payload.to_vec()).unwrap()),
        0x2 => Frame::Binary(payload.to_vec()),
        0x8 => {
            assert_eq!(payload.len(), 2, "a close frame is its code alone");
            Frame::Close(u16::from_be_bytes([payload[0], payload[1]]))
        }
        op => panic!("unexpected opcode {op}"),
    };
    Some((f, hl + len))
}

/// Splits server-to-client WebSocket bytes into frames; they must end on a frame boundary.
pub(super) fn parse_frames(mut b: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some((f, n)) = parse_frame(b) {
        frames.push(f);
        b = &b[n..];
    }
    assert!(b.is_empty(), "a partial frame was written");
    frames
}

// ---------------------------------------------------------------------------------------------
// The Socket.IO / SSE harness
// ---------------------------------------------------------------------------------------------

pub(super) const SIO_WS: &str = "/socket.io/?EIO=4&transport=websocket";

pub(super) fn test_config() -> Config {
    Config {
        // Far away, so that no ping frame interleaves with what a scenario asserts.
        ping_interval: Duration::from_secs(3600),
        ping_timeout: Duration::from_secs(3600),
        namespaces: vec!["/admin".into()],
        ..Config::default()
    }
}

/// The simulated io layer around one engine.
pub(super) struct H {
    pub(super) e: Engine,
    now: Instant,
    next_conn: ConnId,
    /// Every byte written per connection.
    pub(super) out: HashMap<ConnId, Vec<u8>>,
    /// Every write, in order, with its chunk (to check that broadcasts share one allocation).
    pub(super) log: Vec<(ConnId, Chunk)>,
    /// WebSocket connections: offset of the next unread frame.
    ws_pos: HashMap<ConnId, usize>,
    /// SSE streams: offset of the next unparsed byte and the stream's parser.
    pub(super) sse: HashMap<ConnId, (usize, SseParser)>,
    closed: BTreeSet<ConnId>,
    pub(super) done: HashMap<ConnId, bool>,
    /// Connections written to since the last `take_fresh`.
    fresh: BTreeSet<ConnId>,
    pub(super) app: VecDeque<AppEvent>,
    /// Connections whose io queue is past the low-water mark: volatile writes are dropped.
    pub(super) backlogged: BTreeSet<ConnId>,
    /// Volatile writes io would have dropped (`backlogged`) and those it would have queued.
    pub(super) volatile_dropped: usize,
    pub(super) volatile_written: usize,
}

impl H {
    pub(super) fn new() -> H {
        H::with(test_config())
    }

    pub(super) fn with(cfg: Config) -> H {
        cfg.validate().unwrap();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let random: RandomSource = Box::new(move |buf: &mut [u8]| {
            for b in buf.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = (state >> 24) as u8;
            }
        });
        H {
            e: Engine::new(Arc::new(cfg), random),
            now: Instant::now(),
            next_conn: 100,
            out: HashMap::new(),
            log: Vec::new(),
            ws_pos: HashMap::new(),
            sse: HashMap::new(),
            closed: BTreeSet::new(),
            done: HashMap::new(),
            fresh: BTreeSet::new(),
            app: VecDeque::new(),
            backlogged: BTreeSet::new(),
            volatile_dropped: 0,
            volatile_written: 0,
        }
    }

    /// The engine of a cluster node (its own hub, one loop) with `epoch`, the cluster's.
    pub(super) fn cluster_node(cfg: Config, epoch: u64) -> H {
        let mut h = H::with(cfg.clone());
        let mut state: u64 = 0x2545_F491_4F6C_DD1D ^ epoch;
        let random: RandomSource = Box::new(move |buf: &mut [u8]| {
            for b in buf.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = (state >> 24) as u8;
            }
        });
        let hub = Arc::new(hub::Hub::new_cluster_node(epoch, 1));
        h.e = Engine::on_hub(Arc::new(cfg), random, hub, 0);
        h
    }

    pub(super) fn now(&self) -> Instant {
        self.now
    }

    fn new_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    /// Drains the engine's outputs, closing connections as io would.
    fn pump(&mut self) {
        loop {
            let mut gone = Vec::new();
            while let Some(o) = self.e.poll_output() {
                let o = match o {
                    // What io does: drop past the low-water mark, else queue like any write.
                    Output::WriteVolatile { conn, chunk } => {
                        if self.backlogged.contains(&conn) {
                            self.volatile_dropped += 1;
                            continue;
                        }
                        self.volatile_written += 1;
                        Output::Write { conn, chunk }
                    }
                    o => o,
                };
                match o {
                    Output::WriteVolatile { .. } => {}
                    Output::Write { conn, chunk } => {
                        assert!(!self.closed.contains(&conn), "write after close on {conn}");
                        self.out
                            .entry(conn)
                            .or_default()
                            .extend_from_slice(chunk.as_slice());
                        self.fresh.insert(conn);
                        self.log.push((conn, chunk));
                    }
                    Output::ResponseDone { conn, keep_alive } => {
                        self.done.insert(conn, keep_alive);
                        if !keep_alive {
                            self.closed.insert(conn);
                            gone.push(conn);
                        }
                    }
                    Output::StartWebSocket { conn } => {
                        let n = self.out.get(&conn).map_or(0, Vec::len);
                        self.ws_pos.insert(conn, n);
                    }
                    Output::StartStream { conn } => {
                        let buf = self.out.get(&conn).map(Vec::as_slice).unwrap_or(&[]);
                        let body = buf
                            .windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .expect("a response head before StartStream")
                            + 4;
                        self.sse.insert(conn, (body, SseParser::new()));
                    }
                    Output::Close { conn } => {
                        if self.closed.insert(conn) {
                            gone.push(conn);
                        }
                    }
                    Output::App(ev) => self.app.push_back(ev),
                    Output::Forward { conn, .. } => {
                        panic!("connection {conn} forwarded to another loop by an engine alone")
                    }
                }
            }
            if gone.is_empty() {
                break;
            }
            for conn in gone {
                // io closes the socket once its queued bytes are written, then tells the engine.
                self.e.handle_conn_closed(self.now, conn);
            }
        }
    }

    pub(super) fn cmd(&mut self, c: Command) {
        self.e.handle_command(self.now, c);
        self.pump();
    }

    /// Moves the clock to `now + d`, firing every deadline on the way at its own instant.
    pub(super) fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        let mut turns = 0;
        while let Some(t) = self.e.next_deadline() {
            if t > target {
                break;
            }
            turns += 1;
            assert!(turns < 10_000, "timers keep firing");
            self.now = self.now.max(t);
            self.e.handle_timeout(self.now);
            self.pump();
        }
        self.now = target;
        self.e.handle_timeout(self.now);
        self.pump();
    }

    /// The peer goes away.
    pub(super) fn close(&mut self, conn: ConnId) {
        assert!(self.closed.insert(conn), "conn {conn} already closed");
        self.e.handle_conn_closed(self.now, conn);
        self.pump();
    }

    pub(super) fn is_closed(&self, conn: ConnId) -> bool {
        self.closed.contains(&conn)
    }

    pub(super) fn send(&mut self, conn: ConnId, text: &str) {
        self.e
            .handle_ws_message(self.now, conn, WsMessage::Text(text));
        self.pump();
    }

    pub(super) fn send_bin(&mut self, conn: ConnId, b: &[u8]) {
        self.e
            .handle_ws_message(self.now, conn, WsMessage::Binary(b));
        self.pump();
    }

    /// New WebSocket frames on `conn` since the last call.
    pub(super) fn frames(&mut self, conn: ConnId) -> Vec<Frame> {
        let buf = self.out.get(&conn).map(Vec::as_slice).unwrap_or(&[]);
        let pos = self.ws_pos.get_mut(&conn).expect("not a WebSocket");
        let frames = parse_frames(&buf[*pos..]);
        *pos = buf.len();
        frames
    }

    /// The next WebSocket frame on `conn`, which must be text; later ones stay unread.
    pub(super) fn next_text(&mut self, conn: ConnId) -> String {
        let buf = self.out.get(&conn).map(Vec::as_slice).unwrap_or(&[]);
        let pos = self.ws_pos.get_mut(&conn).expect("not a WebSocket");
        let (frame, n) = parse_frame(&buf[*pos..]).expect("a frame");
        *pos += n;
        match frame {
            Frame::Text(t) => t,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// New frames, all of which must be text.
    pub(super) fn texts(&mut self, conn: ConnId) -> Vec<String> {
        self.frames(conn)
            .into_iter()
            .map(|f| match f {
                Frame::Text(t) => t,
                other => panic!("expected a text frame, got {other:?}"),
            })
            .collect()
    }

    /// New SSE bytes on `conn` (also fed to its parser).
    pub(super) fn sse_raw(&mut self, conn: ConnId) -> (Vec<u8>, Vec<ParsedEvent>) {
        let buf = self.out.get(&conn).map(Vec::as_slice).unwrap_or(&[]);
        let (pos, parser) = self.sse.get_mut(&conn).expect("not an SSE stream");
        let new = buf[*pos..].to_vec();
        *pos = buf.len();
        let evs = parser.feed(&new);
        assert_eq!(parser.error(), None);
        (new, evs)
    }

    /// New SSE events on `conn`, as an `EventSource` would fire them.
    pub(super) fn sse_events(&mut self, conn: ConnId) -> Vec<ParsedEvent> {
        self.sse_raw(conn).1
    }

    pub(super) fn take_fresh(&mut self) -> BTreeSet<ConnId> {
        std::mem::take(&mut self.fresh)
    }

    pub(super) fn expect_app(&mut self) -> AppEvent {
        self.app.pop_front().expect("an application event")
    }

    /// The first event queued after position `from` (earlier ones stay for the test to check).
    fn app_after(&mut self, from: usize) -> AppEvent {
        self.app.remove(from).expect("an application event")
    }

    pub(super) fn no_app(&mut self) {
        assert!(self.app.is_empty(), "unexpected app events: {:?}", self.app);
    }

    /// A WebSocket handshake on `target`; returns the conn and the Engine.IO sid.
    pub(super) fn ws_open(&mut self, target: &str) -> (ConnId, String) {
        let conn = self.new_conn();
        self.e
            .handle_request(self.now, conn, request(&ws_upgrade_head(target)));
        self.pump();
        assert!(self.ws_pos.contains_key(&conn), "no WebSocket started");
        let head = String::from_utf8_lossy(&self.out[&conn]).to_string();
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{head}"
        );
        // RFC 6455 §1.3's own example key and accept value.
        assert!(head.contains(&format!("Sec-WebSocket-Accept: {WS_ACCEPT}\r\n")));
        let t = self.texts(conn);
        assert_eq!(t.len(), 1, "{t:?}");
        let open: Value = serde_json::from_str(t[0].strip_prefix('0').unwrap()).unwrap();
        assert_eq!(open["upgrades"], json!([]));
        (conn, open["sid"].as_str().unwrap().to_string())
    }

    /// Joins `nsp` on an open Socket.IO connection, accepted with `identity`.
    pub(super) fn sio_join(
        &mut self,
        conn: ConnId,
        nsp: &str,
        identity: Option<Identity>,
    ) -> SocketId {
        let prefix = if nsp == "/" {
            "40".to_string()
        } else {
            format!("40{nsp},")
        };
        let from = self.app.len();
        self.send(conn, &prefix);
        let request = match self.app_after(from) {
            AppEvent::SioConnectRequest {
                request, nsp: n, ..
            } => {
                assert_eq!(&*n, nsp);
                request
            }
            other => panic!("expected SioConnectRequest, got {other:?}"),
        };
        self.cmd(Command::SioConnectDecision {
            request,
            decision: Ok(identity.clone()),
        });
        let t = self.texts(conn);
        assert_eq!(t.len(), 1, "{t:?}");
        let body: Value = serde_json::from_str(t[0].strip_prefix(&prefix).unwrap()).unwrap();
        let sid = body["sid"].as_str().unwrap().to_string();
        assert_eq!(t[0], format!("{prefix}{{\"sid\":\"{sid}\"}}"));
        match self.app_after(from) {
            AppEvent::SioConnected {
                socket,
                nsp: n,
                sid: s,
                identity: i,
                ..
            } => {
                assert_eq!(&*n, nsp);
                assert_eq!(&*s, sid);
                assert_eq!(i, identity);
                socket
            }
            other => panic!("expected SioConnected, got {other:?}"),
        }
    }

    /// A Socket.IO client over WebSocket connected to `/`.
    pub(super) fn sio_connect(&mut self, identity: Option<Identity>) -> (ConnId, SocketId) {
        let (conn, _) = self.ws_open(SIO_WS);
        let socket = self.sio_join(conn, "/", identity);
        (conn, socket)
    }

    /// A plain HTTP request (a polling GET or POST) on a new connection; returns the conn and
    /// every byte written to it so far.
    pub(super) fn http(&mut self, raw_head: &str, body: &[u8]) -> (ConnId, String) {
        let conn = self.new_conn();
        let mut req = request(raw_head);
        req.body = body.to_vec();
        self.e.handle_request(self.now, conn, req);
        self.pump();
        let out = String::from_utf8_lossy(self.out.get(&conn).map_or(&[][..], |v| v)).into_owned();
        (conn, out)
    }

    /// Everything written to `conn` so far, as text.
    pub(super) fn written(&self, conn: ConnId) -> String {
        String::from_utf8_lossy(self.out.get(&conn).map_or(&[][..], |v| v)).into_owned()
    }

    /// A GET on the SSE path; returns the conn, the request id and the request info.
    pub(super) fn sse_get(
        &mut self,
        target: &str,
        headers: &str,
    ) -> (ConnId, u64, Arc<RequestInfo>) {
        let conn = self.new_conn();
        let raw = format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{headers}\r\n"
        );
        let from = self.app.len();
        self.e.handle_request(self.now, conn, request(&raw));
        self.pump();
        match self.app_after(from) {
            AppEvent::SseConnectRequest { request, info } => (conn, request, info),
            other => panic!("expected SseConnectRequest, got {other:?}"),
        }
    }

    pub(super) fn sse_accept(
        &mut self,
        conn: ConnId,
        request: u64,
        identity: Option<Identity>,
    ) -> StreamId {
        let from = self.app.len();
        self.cmd(Command::SseDecision {
            request,
            decision: Ok(identity.clone()),
        });
        assert!(self.sse.contains_key(&conn), "no StartStream");
        match self.app_after(from) {
            AppEvent::SseOpened {
                stream,
                identity: i,
            } => {
                assert_eq!(i, identity);
                stream
            }
            other => panic!("expected SseOpened, got {other:?}"),
        }
    }

    /// An accepted SSE stream, resuming from `last_id` if given.
    pub(super) fn sse_open(
        &mut self,
        identity: Option<Identity>,
        last_id: Option<&str>,
    ) -> (ConnId, StreamId) {
        let headers = last_id
            .map(|l| format!("Last-Event-ID: {l}\r\n"))
            .unwrap_or_default();
        let (conn, request, _) = self.sse_get("/events", &headers);
        let stream = self.sse_accept(conn, request, identity);
        (conn, stream)
    }

    pub(super) fn bcast(
        &mut self,
        target: Target,
        transports: Transports,
        event: &str,
        data: &str,
    ) {
        self.cmd(Command::Broadcast {
            target,
            transports,
            event: Arc::from(event),
            data: Arc::from(data),
            volatile: false,
            reply: None,
        });
    }

    /// The SSE id of broadcast number `seq`.
    pub(super) fn id(&self, seq: u64) -> String {
        format!("{}:{}", self.e.hub.epoch(), seq)
    }

    pub(super) fn emit_ack(&mut self, socket: SocketId, event: &str, timeout: Duration) -> AckRx {
        let (tx, rx) = mpsc::channel();
        self.cmd(Command::SioEmit {
            socket,
            event: event.to_string(),
            args: vec![json!(1)],
            attachments: Vec::new(),
            ack: Some((timeout, AckReply::Channel(tx))),
            volatile: false,
            seq: None,
        });
        rx
    }
}

pub(super) type AckRx = mpsc::Receiver<Vec<AckResult>>;

pub(super) fn ok(args: Vec<Value>) -> AckOutcome {
    AckOutcome::Ok {
        args,
        attachments: Vec::new(),
    }
}

pub(super) fn one(socket: SocketId, outcome: AckOutcome) -> Vec<AckResult> {
    vec![AckResult { socket, outcome }]
}

/// A `SioEvent` as (socket, nsp, event, args, attachments, ack).
pub(super) type EventParts = (
    SocketId,
    String,
    String,
    Vec<Value>,
    Vec<Vec<u8>>,
    Option<u64>,
);

pub(super) fn sio_event(ev: AppEvent) -> EventParts {
    match ev {
        AppEvent::SioEvent {
            socket,
            nsp,
            event,
            args,
            attachments,
            ack,
        } => (socket, nsp.to_string(), event, args, attachments, ack),
        other => panic!("expected SioEvent, got {other:?}"),
    }
}

pub(super) fn data_of(evs: &[ParsedEvent]) -> Vec<&str> {
    evs.iter().map(|e| e.data.as_str()).collect()
}
