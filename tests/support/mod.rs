//! Small blocking clients for the loopback tests: HTTP, SSE, WebSocket and Socket.IO over
//! WebSocket, all over `std::net::TcpStream` on 127.0.0.1. Every read has a deadline, every loop a
//! bound, so a server bug shows up as a failed assertion, never as a hung test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidings::proto::sio::{self, DecodeLimits, Packet, PacketKind};
use tidings::proto::sse::{ParsedEvent, SseParser};
use tidings::{AuthRequest, Config, Identity, Rejection};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be convinced that something does *not* happen.
pub const QUIET: Duration = Duration::from_millis(300);
/// Largest frame / response body the clients accept (a bound, not a protocol limit).
const MAX_BODY: usize = 32 << 20;

/// A configuration for tests: an ephemeral port and short timeouts.
pub fn test_config() -> Config {
    Config {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        ping_interval: Duration::from_millis(500),
        ping_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        keep_alive_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        upgrade_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

/// The authentication hook of the tests.
///
/// SSE: query `user` (and `tenant`, default `acme`); no `user` is anonymous. Socket.IO: the same
/// fields in the CONNECT payload. User `deny401` is refused as unauthorized, `deny403` as
/// forbidden (Socket.IO rejections carry `data: {"code": 401|403}`).
pub fn auth_hook(req: &AuthRequest<'_>) -> Result<Option<Identity>, Rejection> {
    let (user, tenant) = match req.auth {
        Some(auth) => (
            auth.get("user").and_then(Value::as_str).map(str::to_string),
            auth.get("tenant")
                .and_then(Value::as_str)
                .map(str::to_string),
        ),
        None => (req.info.query("user"), req.info.query("tenant")),
    };
    let Some(user) = user else {
        return Ok(None);
    };
    match user.as_str() {
        "deny401" => Err(Rejection::unauthorized("no valid token").with_data(json!({"code": 401}))),
        "deny403" => Err(Rejection::forbidden("not your stream").with_data(json!({"code": 403}))),
        _ => Ok(Some(Identity::new(
            tenant.unwrap_or_else(|| "acme".into()),
            user,
        ))),
    }
}

/// Why a read ended without data.
#[derive(Debug)]
pub enum ReadErr {
    Timeout,
    /// The peer closed (EOF or reset).
    Closed,
    Io(io::Error),
}

/// A TCP stream with an inbound buffer and deadline-bounded reads.
pub struct Wire {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Wire {
    pub fn connect(addr: SocketAddr) -> Wire {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_write_timeout(Some(WAIT)).expect("write timeout");
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads whatever arrives next (appended to `buf`), waiting at most until `deadline`.
    pub fn read_some(&mut self, deadline: Instant) -> Result<usize, ReadErr> {
        let mut chunk = [0u8; 64 * 1024];
        // Bounded: each pass waits at most 50 ms, and the deadline ends the loop.
        for _ in 0..100_000 {
            let now = Instant::now();
            if now >= deadline {
                return Err(ReadErr::Timeout);
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            self.stream
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
                .map_err(ReadErr::Io)?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadErr::Closed),
                Ok(n) => {
                    if self.buf.len() + n > MAX_BODY {
                        return Err(ReadErr::Io(io::Error::other("client buffer limit")));
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Err(ReadErr::Closed)
                }
                Err(e) => return Err(ReadErr::Io(e)),
            }
        }
        Err(ReadErr::Timeout)
    }

    /// Makes `buf` hold at least `n` bytes.
    pub fn fill(&mut self, n: usize, deadline: Instant) -> Result<(), ReadErr> {
        while self.buf.len() < n {
            self.read_some(deadline)?;
        }
        Ok(())
    }

    /// Takes the first `n` bytes of `buf` (after `fill`).
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        self.buf.drain(..n).collect()
    }

    /// Reads an HTTP response head; the bytes after it stay in `buf`.
    pub fn read_head(&mut self, deadline: Instant) -> Result<ResponseHead, ReadErr> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = self.take(end + 4);
                return Ok(ResponseHead::parse(&head));
            }
            if self.buf.len() > 64 * 1024 {
                return Err(ReadErr::Io(io::Error::other("response head too long")));
            }
            self.read_some(deadline)?;
        }
    }

    /// Reads until the peer closes; `true` if it did before the deadline.
    pub fn wait_eof(&mut self, deadline: Instant) -> bool {
        loop {
            match self.read_some(deadline) {
                Ok(_) => {
                    // Keep memory bounded while draining.
                    if self.buf.len() > (1 << 20) {
                        self.buf.clear();
                    }
                }
                Err(ReadErr::Closed) => return true,
                Err(_) => return false,
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    fn parse(bytes: &[u8]) -> ResponseHead {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let status = resp.parse(bytes).expect("valid response head");
        assert!(status.is_complete(), "incomplete response head");
        ResponseHead {
            status: resp.code.expect("status code"),
            headers: resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
        }
    }

    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }
}

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub head: ResponseHead,
    pub body: Vec<u8>,
    /// The server closed the connection after the response (within the wait).
    pub closed: bool,
}

impl HttpResponse {
    pub fn status(&self) -> u16 {
        self.head.status
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads a response with a Content-Length body (or a body up to EOF), then notes whether the
/// server closed the connection.
pub fn read_response(wire: &mut Wire, deadline: Instant) -> Result<HttpResponse, ReadErr> {
    let head = wire.read_head(deadline)?;
    let body = match head.content_length() {
        Some(n) => {
            assert!(n <= MAX_BODY, "response body too large");
            wire.fill(n, deadline)?;
            wire.take(n)
        }
        None => {
            wire.wait_eof(deadline);
            std::mem::take(&mut wire.buf)
        }
    };
    let wants_close = head
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let closed = if wants_close {
        wire.wait_eof(deadline)
    } else {
        false
    };
    Ok(HttpResponse { head, body, closed })
}

/// Sends raw request bytes on a new connection and reads one response.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> Result<HttpResponse, ReadErr> {
    let mut wire = Wire::connect(addr);
    wire.send(request).map_err(ReadErr::Io)?;
    read_response(&mut wire, Instant::now() + WAIT)
}

/// A `GET target` with extra header lines, on a new connection, `Connection: close`.
pub fn http_get(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, ReadErr> {
    http_raw(addr, &get_request(target, headers, true))
}

pub fn get_request(target: &str, headers: &[(&str, &str)], close: bool) -> Vec<u8> {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if close {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

// ------------------------------------------------------------------------------------------------
// SSE

/// An open SSE stream, parsed with the crate's WHATWG parser.
pub struct SseStream {
    pub wire: Wire,
    pub head: ResponseHead,
    pub parser: SseParser,
    queue: VecDeque<ParsedEvent>,
    pub closed: bool,
}

/// Opens `GET target` as an SSE stream: `Ok` on a 200 `text/event-stream` answer, `Err` with the
/// whole response otherwise.
pub fn sse_open(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<SseStream, HttpResponse> {
    let mut hs = vec![("Accept", "text/event-stream")];
    hs.extend_from_slice(headers);
    sse_open_raw(addr, &get_request(target, &hs, false))
}

/// Like [`sse_open`] with raw request bytes.
pub fn sse_open_raw(addr: SocketAddr, request: &[u8]) -> Result<SseStream, HttpResponse> {
    let mut wire = Wire::connect(addr);
    wire.send(request).expect("send request");
    let deadline = Instant::now() + WAIT;
    let head = wire.read_head(deadline).expect("response head");
    let is_stream = head.status == 200
        && head
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_stream {
        let body = match head.content_length() {
            Some(n) => {
                wire.fill(n, deadline).expect("response body");
                wire.take(n)
            }
            None => Vec::new(),
        };
        let closed = wire.wait_eof(deadline);
        return Err(HttpResponse { head, body, closed });
    }
    let mut parser = SseParser::new();
    let rest = std::mem::take(&mut wire.buf);
    let queue: VecDeque<ParsedEvent> = parser.feed(&rest).into();
    Ok(SseStream {
        wire,
        head,
        parser,
        queue,
        closed: false,
    })
}

impl SseStream {
    /// Reads more of the stream, waiting at most until `deadline`; `false` on timeout or close.
    fn pump(&mut self, deadline: Instant) -> bool {
        if self.closed {
            return false;
        }
        match self.wire.read_some(deadline) {
            Ok(_) => {
                let bytes = std::mem::take(&mut self.wire.buf);
                self.queue.extend(self.parser.feed(&bytes));
                assert_eq!(self.parser.error(), None, "SSE parser gave up");
                true
            }
            Err(ReadErr::Closed) => {
                self.closed = true;
                false
            }
            Err(ReadErr::Timeout) => false,
            Err(ReadErr::Io(e)) => panic!("SSE read failed: {e}"),
        }
    }

    /// The next event, or `None` after `timeout` (or when the stream ended).
    pub fn next_event(&mut self, timeout: Duration) -> Option<ParsedEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if !self.pump(deadline) {
                return self.queue.pop_front();
            }
        }
    }

    /// The next event, which must arrive within [`WAIT`].
    pub fn expect_event(&mut self) -> ParsedEvent {
        match self.next_event(WAIT) {
            Some(e) => e,
            None => panic!("no SSE event within {WAIT:?} (closed: {})", self.closed),
        }
    }

    /// Events up to and including the first of type `event` (bounded by count and time).
    pub fn events_until(&mut self, event: &str, max: usize) -> Vec<ParsedEvent> {
        let mut out = Vec::new();
        for _ in 0..max {
            let e = self.expect_event();
            let done = e.event == event;
            out.push(e);
            if done {
                return out;
            }
        }
        panic!("no {event:?} event among the first {max}")
    }

    /// Reads until the server ends the stream; `true` if it did within `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.closed && Instant::now() < deadline {
            self.pump(deadline);
        }
        self.closed
    }

    /// Waits until the parser has seen a `retry` field.
    pub fn wait_retry(&mut self) -> Option<u64> {
        let deadline = Instant::now() + WAIT;
        while self.parser.retry().is_none() && Instant::now() < deadline {
            if !self.pump(deadline) && self.closed {
                break;
            }
        }
        self.parser.retry()
    }

    /// Waits until at least `n` comment lines arrived.
    pub fn wait_comments(&mut self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.parser.comments_seen() < n && Instant::now() < deadline {
            if !self.pump(deadline) && self.closed {
                break;
            }
        }
        self.parser.comments_seen()
    }
}

/// Splits our SSE id `<epoch>:<seq>`.
pub fn split_id(id: &str) -> (u64, u64) {
    let (e, s) = id.split_once(':').expect("id is epoch:seq");
    (e.parse().expect("epoch"), s.parse().expect("seq"))
}

// ------------------------------------------------------------------------------------------------
// WebSocket

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Close(Option<u16>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

/// A minimal WebSocket client: handshake by hand, masked frames out, unmasked frames in.
pub struct WsClient {
    pub wire: Wire,
    mask: u32,
}

pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

impl WsClient {
    /// Opens a WebSocket on `target`; panics unless the server answers 101 with the right accept.
    pub fn connect(addr: SocketAddr, target: &str) -> WsClient {
        let mut wire = Wire::connect(addr);
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        wire.send(req.as_bytes()).expect("send handshake");
        let head = wire
            .read_head(Instant::now() + WAIT)
            .expect("handshake answer");
        assert_eq!(head.status, 101, "WebSocket handshake refused: {head:?}");
        let accept = tidings::proto::http::websocket_accept_key(WS_KEY);
        assert_eq!(head.header("sec-websocket-accept"), Some(accept.as_str()));
        WsClient {
            wire,
            mask: 0x9e37_79b9,
        }
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift: any key will do, but not a constant one.
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        self.mask.to_be_bytes()
    }

    /// Encodes one masked client frame.
    pub fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = self.next_mask();
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    pub fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let f = self.frame(true, opcode, payload);
        self.wire.send(&f)
    }

    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send_frame(0x1, text.as_bytes())
    }

    pub fn send_binary(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.send_frame(0x2, bytes)
    }

    pub fn send_close(&mut self, code: u16) -> io::Result<()> {
        self.send_frame(0x8, &code.to_be_bytes())
    }

    /// Reads one server frame (server frames are final and unmasked).
    pub fn read_frame(&mut self, deadline: Instant) -> Result<Frame, ReadErr> {
        let w = &mut self.wire;
        w.fill(2, deadline)?;
        let (b0, b1) = (w.buf[0], w.buf[1]);
        assert_eq!(b1 & 0x80, 0, "the server masked a frame");
        assert_eq!(b0 & 0x70, 0, "the server set RSV bits");
        assert_ne!(b0 & 0x80, 0, "the server fragmented a frame");
        let (len, header) = match b1 & 0x7f {
            126 => {
                w.fill(4, deadline)?;
                (usize::from(u16::from_be_bytes([w.buf[2], w.buf[3]])), 4)
            }
            127 => {
                w.fill(10, deadline)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(&w.buf[2..10]);
                (usize::try_from(u64::from_be_bytes(b)).expect("length"), 10)
            }
            n => (usize::from(n), 2),
        };
        assert!(len <= MAX_BODY, "frame of {len} bytes");
        w.fill(header + len, deadline)?;
        let frame = w.take(header + len);
        let payload = frame[header..].to_vec();
        Ok(match b0 & 0x0f {
            0x1 => Frame::Text(String::from_utf8(payload).expect("UTF-8 text frame")),
            0x2 => Frame::Binary(payload),
            0x8 => Frame::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            0x9 => Frame::Ping(payload),
            0xA => Frame::Pong(payload),
            op => panic!("unexpected opcode {op:#x}"),
        })
    }
}

// ------------------------------------------------------------------------------------------------
// Socket.IO over WebSocket

/// What a Socket.IO client saw next.
#[derive(Debug)]
pub enum SioEvent {
    /// A complete Socket.IO packet (binary attachments included).
    Packet(Packet),
    /// The connection ended: a WebSocket close frame (with its code) or EOF (`None`).
    Closed(Option<u16>),
    Timeout,
}

/// A Socket.IO v5 client over a WebSocket-only Engine.IO v4 session. It answers pings.
pub struct SioClient {
    pub ws: WsClient,
    /// The Engine.IO handshake (`0{...}`).
    pub handshake: Value,
    pending: Option<(Packet, usize)>,
    pub pings_answered: usize,
}

impl SioClient {
    /// Opens the Engine.IO session (no namespace joined yet).
    pub fn open(addr: SocketAddr) -> SioClient {
        let mut ws = WsClient::connect(addr, "/socket.io/?EIO=4&transport=websocket");
        let open = ws.read_frame(Instant::now() + WAIT).expect("open packet");
        let Frame::Text(t) = open else {
            panic!("expected the Engine.IO open packet, got {open:?}")
        };
        let json = t.strip_prefix('0').expect("open packet starts with 0");
        let handshake: Value = serde_json::from_str(json).expect("handshake JSON");
        SioClient {
            ws,
            handshake,
            pending: None,
            pings_answered: 0,
        }
    }

    /// Opens a session and joins `/` with `auth`; returns the answer (CONNECT or CONNECT_ERROR).
    pub fn connect_with(addr: SocketAddr, auth: Option<Value>) -> (SioClient, Packet) {
        let mut c = SioClient::open(addr);
        let text = match auth {
            Some(a) => format!("40{a}"),
            None => "40".to_string(),
        };
        c.ws.send_text(&text).expect("send CONNECT");
        let p = c.expect_packet();
        (c, p)
    }

    /// Joins `/` as `tenant`/`user`; panics unless the server accepts.
    pub fn connect_as(addr: SocketAddr, tenant: &str, user: &str) -> SioClient {
        let (c, p) = SioClient::connect_with(addr, Some(json!({"tenant": tenant, "user": user})));
        assert_eq!(p.kind, PacketKind::Connect, "connect refused: {p:?}");
        assert!(
            p.data.as_ref().and_then(|d| d.get("sid")).is_some(),
            "CONNECT answer without sid: {p:?}"
        );
        c
    }

    /// The next packet / close / timeout. Pings are answered on the way.
    pub fn recv(&mut self, timeout: Duration) -> SioEvent {
        let deadline = Instant::now() + timeout;
        for _ in 0..100_000 {
            let frame = match self.ws.read_frame(deadline) {
                Ok(f) => f,
                Err(ReadErr::Timeout) => return SioEvent::Timeout,
                Err(ReadErr::Closed) => return SioEvent::Closed(None),
                Err(ReadErr::Io(e)) => panic!("read failed: {e}"),
            };
            match frame {
                Frame::Text(t) => {
                    let (Some(kind), Some(rest)) = (t.get(..1), t.get(1..)) else {
                        panic!("unexpected Engine.IO text {t:?}");
                    };
                    match kind {
                        "2" => {
                            let pong = format!("3{rest}");
                            let _ = self.ws.send_text(&pong);
                            self.pings_answered += 1;
                        }
                        "4" => {
                            assert!(self.pending.is_none(), "text while attachments expected");
                            let (p, n) = sio::decode_text(rest, &DecodeLimits::default())
                                .unwrap_or_else(|e| panic!("bad packet from server {t:?}: {e}"));
                            if n == 0 {
                                return SioEvent::Packet(p);
                            }
                            self.pending = Some((p, n));
                        }
                        "1" => return SioEvent::Closed(None),
                        "6" | "3" => {}
                        _ => panic!("unexpected Engine.IO packet {t:?}"),
                    }
                }
                Frame::Binary(b) => {
                    let Some((mut p, n)) = self.pending.take() else {
                        panic!("binary frame without a pending packet");
                    };
                    p.attachments.push(b);
                    if p.attachments.len() == n {
                        return SioEvent::Packet(p);
                    }
                    self.pending = Some((p, n));
                }
                Frame::Close(code) => {
                    let _ = self.ws.send_close(code.unwrap_or(1000));
                    return SioEvent::Closed(code);
                }
                Frame::Ping(p) => {
                    let _ = self.ws.send_frame(0xA, &p);
                }
                Frame::Pong(_) => {}
            }
        }
        SioEvent::Timeout
    }

    /// The next packet within [`WAIT`]; panics on close or timeout.
    pub fn expect_packet(&mut self) -> Packet {
        match self.recv(WAIT) {
            SioEvent::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// The next EVENT (skipping nothing): its name and arguments.
    pub fn expect_event(&mut self) -> (String, Vec<Value>, Packet) {
        let p = self.expect_packet();
        assert!(
            matches!(p.kind, PacketKind::Event | PacketKind::BinaryEvent),
            "expected an event, got {p:?}"
        );
        let mut items = match p.data.clone() {
            Some(Value::Array(a)) => a,
            other => panic!("event payload {other:?}"),
        };
        let name = match items.remove(0) {
            Value::String(s) => s,
            other => panic!("event name {other:?}"),
        };
        (name, items, p)
    }

    /// Asserts that nothing but pings arrives for `quiet`.
    pub fn expect_silence(&mut self, quiet: Duration) {
        match self.recv(quiet) {
            SioEvent::Timeout => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Reads until the server closes; returns the close frame's code (`None`: EOF without a close
    /// frame). Panics if the server neither closes nor ends within [`WAIT`], or sends more than
    /// `max_packets` packets first.
    pub fn expect_closed(&mut self, max_packets: usize) -> Option<u16> {
        for _ in 0..=max_packets {
            match self.recv(WAIT) {
                SioEvent::Packet(_) => {}
                SioEvent::Closed(code) => {
                    // After the close frame, the server ends the TCP connection.
                    if code.is_some() {
                        assert!(
                            self.ws.wire.wait_eof(Instant::now() + WAIT),
                            "no EOF after the close frame"
                        );
                    }
                    return code;
                }
                SioEvent::Timeout => panic!("the server did not close the connection"),
            }
        }
        panic!("more than {max_packets} packets before the close")
    }

    /// Sends a Socket.IO packet's text part as is (`"2[\"x\"]"` → Engine.IO `42["x"]`).
    pub fn send_raw(&mut self, sio_text: &str) -> io::Result<()> {
        self.ws.send_text(&format!("4{sio_text}"))
    }

    /// Sends a packet and its attachments.
    pub fn send_packet(&mut self, p: &Packet) {
        let (text, attachments) = sio::encode(p);
        self.send_raw(&text).expect("send packet");
        for a in attachments {
            self.ws.send_binary(a).expect("send attachment");
        }
    }

    pub fn emit(&mut self, event: &str, args: Vec<Value>) {
        self.send_packet(&Packet::event("/", event, args, None));
    }

    pub fn emit_with_ack(&mut self, id: u64, event: &str, args: Vec<Value>) {
        self.send_packet(&Packet::event("/", event, args, Some(id)));
    }

    pub fn emit_binary(&mut self, event: &str, args: Vec<Value>, attachments: Vec<Vec<u8>>) {
        let mut p = Packet::event("/", event, args, None);
        p.attachments = attachments;
        self.send_packet(&p);
    }

    pub fn ack(&mut self, id: u64, args: Vec<Value>) {
        self.send_packet(&Packet::ack("/", id, args));
    }
}
