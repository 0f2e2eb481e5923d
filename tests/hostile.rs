//! Hostile input over real sockets (DESIGN §7, HTTP / WebSocket / Engine.IO items). Each test
//! asserts the exact outcome (a status code, a close frame, a closed connection) and then that a
//! well-behaved session on the same server still works. Every loop is bounded in count, every
//! socket read has a timeout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tidings::{AppEvent, CloseReason, Config, Data, Handle, Server, SessionId};

/// How long any single read may block before the test fails.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for an application event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Server with an echo thread
// ---------------------------------------------------------------------------------------------

fn config() -> Config {
    Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        engineio_path: Some("/engine.io/".into()),
        ..Config::default()
    }
}

struct TestServer {
    server: Option<Server>,
    addr: SocketAddr,
    handle: Handle,
    events: Receiver<AppEvent>,
    echo: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts `cfg`; a thread echoes every raw Engine.IO message back to its session (text as
    /// text, binary as binary) and forwards every event to `events`. The echo is sent before the
    /// event is forwarded, so a test that saw the event can order later commands after it.
    fn start(cfg: Config) -> TestServer {
        let server = Server::start(cfg).unwrap();
        let addr = server.local_addr();
        let handle = server.handle();
        let rx = server.take_events().unwrap();
        let (tx, events) = mpsc::channel();
        let h = handle.clone();
        let echo = std::thread::spawn(move || {
            // Ends when the server shuts down (the sender side is dropped).
            for ev in rx {
                if let AppEvent::EioMessage { session, data } = &ev {
                    let _ = h.eio_send(*session, data.clone());
                }
                if tx.send(ev).is_err() {
                    return;
                }
            }
        });
        TestServer {
            server: Some(server),
            addr,
            handle,
            events,
            echo: Some(echo),
        }
    }

    /// The next event that `pick` accepts (others are skipped), or a failure after the timeout.
    fn wait<T>(&self, what: &str, mut pick: impl FnMut(&AppEvent) -> Option<T>) -> T {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(ev) => {
                    if let Some(t) = pick(&ev) {
                        return t;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("timed out waiting for {what}"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("server gone while waiting for {what}")
                }
            }
        }
    }

    fn wait_open(&self, sid: &str) -> SessionId {
        self.wait("EioOpen", |e| match e {
            AppEvent::EioOpen {
                session, sid: s, ..
            } if s.as_ref() == sid => Some(*session),
            _ => None,
        })
    }

    fn wait_close(&self, session: SessionId) -> CloseReason {
        self.wait("EioClose", |e| match e {
            AppEvent::EioClose { session: s, reason } if *s == session => Some(*reason),
            _ => None,
        })
    }

    fn wait_message(&self, session: SessionId) -> Data {
        self.wait("EioMessage", |e| match e {
            AppEvent::EioMessage { session: s, data } if *s == session => Some(data.clone()),
            _ => None,
        })
    }

    /// A round trip through the loop's command queue: every command sent before it (from any
    /// thread that happens-before this call) has been applied when it returns.
    fn sync(&self) {
        self.handle.stats().unwrap();
    }

    fn shutdown(self) {
        let _ = self.shutdown_collect();
    }

    /// Shuts down (which must return Ok and join the threads), then returns the events that had
    /// not been consumed.
    fn shutdown_collect(mut self) -> Vec<AppEvent> {
        let server = self.server.take().unwrap();
        server.shutdown(Duration::from_secs(2)).unwrap();
        // The echo thread ends once the server's event stream ends.
        self.echo.take().unwrap().join().unwrap();
        self.events.try_iter().collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.shutdown(Duration::from_millis(200));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny blocking HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads from `stream` into `buf` until `done(buf)` says where the unit ends. Panics on timeout or
/// on EOF before the end.
fn read_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut done: impl FnMut(&[u8]) -> Option<usize>,
) -> Vec<u8> {
    let mut chunk = [0u8; 16 * 1024];
    for _ in 0..100_000 {
        if let Some(n) = done(buf) {
            return buf.drain(..n).collect();
        }
        match stream.read(&mut chunk) {
            Ok(0) => panic!(
                "EOF after {} bytes: {:?}",
                buf.len(),
                String::from_utf8_lossy(buf)
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed: {e}"),
        }
    }
    panic!("read_until: too many reads");
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn parse_head(head: &[u8]) -> (u16, Vec<(String, String)>) {
    let mut hs = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut hs);
    assert!(r.parse(head).unwrap().is_complete());
    let headers = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    (r.code.unwrap(), headers)
}

struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    fn new(addr: SocketAddr) -> Http {
        Http {
            stream: connect(addr),
            buf: Vec::new(),
        }
    }

    fn send(&mut self, method: &str, target: &str, body: &[u8]) {
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n");
        if method == "POST" {
            req.push_str("Content-Type: text/plain;charset=UTF-8\r\n");
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).unwrap();
    }

    fn read_response(&mut self) -> Resp {
        let head = read_until(&mut self.stream, &mut self.buf, head_end);
        let (status, headers) = parse_head(&head);
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let body = read_until(&mut self.stream, &mut self.buf, |b| {
            (b.len() >= len).then_some(len)
        });
        Resp {
            status,
            headers,
            body,
        }
    }

    fn request(&mut self, method: &str, target: &str, body: &[u8]) -> Resp {
        self.send(method, target, body);
        self.read_response()
    }
}

/// Reads until EOF (true) or timeout (false); bytes read are discarded.
fn read_eof(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    for _ in 0..100_000 {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true, // reset
        }
    }
    false
}

fn poll_url(sid: &str) -> String {
    format!("/engine.io/?EIO=4&transport=polling&sid={sid}")
}

/// Parks a long-poll GET for `sid` on a fresh connection and returns that connection. Ordering on
/// a real loop: the new connection first completes a request (so the loop has registered and
/// drained it), then writes its GET; a round trip on `other` after that proves the GET was read,
/// because the loop handles every ready connection of a turn before it writes any answer.
fn parked_get(addr: SocketAddr, sid: &str, other: &mut Http) -> Http {
    let mut g = Http::new(addr);
    assert_eq!(g.request("POST", &poll_url(sid), b"6").text(), "ok");
    g.send("GET", &poll_url(sid), b"");
    assert_eq!(other.request("POST", &poll_url(sid), b"6").text(), "ok");
    g
}

/// A polling handshake; returns the connection, the sid and the open packet's JSON.
fn polling_handshake(addr: SocketAddr) -> (Http, String, serde_json::Value) {
    let mut c = Http::new(addr);
    let r = c.request("GET", "/engine.io/?EIO=4&transport=polling", b"");
    assert_eq!(r.status, 200);
    let body = r.text();
    assert!(body.starts_with('0'), "{body}");
    let open: serde_json::Value = serde_json::from_str(&body[1..]).unwrap();
    let sid = open["sid"].as_str().unwrap().to_string();
    (c, sid, open)
}

// ---------------------------------------------------------------------------------------------
// A minimal WebSocket client (RFC 6455): masked frames out, unmasked frames in
// ---------------------------------------------------------------------------------------------

const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

struct Ws {
    stream: TcpStream,
    buf: Vec<u8>,
    mask: u32,
}

#[derive(Debug, PartialEq, Eq)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Close(Option<u16>),
    Other(u8, Vec<u8>),
}

impl Ws {
    fn connect(addr: SocketAddr, target: &str) -> Ws {
        let mut stream = connect(addr);
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let head = read_until(&mut stream, &mut buf, head_end);
        let (status, headers) = parse_head(&head);
        assert_eq!(status, 101, "{}", String::from_utf8_lossy(&head));
        let accept = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|(_, v)| v.as_str());
        assert_eq!(accept, Some(WS_ACCEPT));
        Ws {
            stream,
            buf,
            mask: 0x1234_5678,
        }
    }

    /// One final frame, masked (a new key per frame).
    fn encode(&mut self, opcode: u8, payload: &[u8]) -> Vec<u8> {
        self.mask = self.mask.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let key = self.mask.to_be_bytes();
        let mut f = vec![0x80 | opcode];
        let n = payload.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let f = self.encode(opcode, payload);
        self.stream.write_all(&f).unwrap();
    }

    fn send_text(&mut self, s: &str) {
        self.send_frame(1, s.as_bytes());
    }

    fn send_binary(&mut self, b: &[u8]) {
        self.send_frame(2, b);
    }

    fn read_frame(&mut self) -> Frame {
        let frame = read_until(&mut self.stream, &mut self.buf, |b| {
            if b.len() < 2 {
                return None;
            }
            let (len, hl) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => return None,
                n => (n as usize, 2),
            };
            (b.len() >= hl + len).then_some(hl + len)
        });
        assert_eq!(frame[0] & 0xf0, 0x80, "server frames are final, RSV clear");
        assert_eq!(frame[1] & 0x80, 0, "server frames are not masked");
        let hl = match frame[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let payload = frame[hl..].to_vec();
        match frame[0] & 0x0f {
            1 => Frame::Text(String::from_utf8(payload).unwrap()),
            2 => Frame::Binary(payload),
            8 => Frame::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            op => Frame::Other(op, payload),
        }
    }

    fn read_text(&mut self) -> String {
        match self.read_frame() {
            Frame::Text(t) => t,
            f => panic!("expected a text frame, got {f:?}"),
        }
    }

    /// The server closes: a close frame with `code`, then EOF.
    fn expect_close(&mut self, code: u16) {
        assert_eq!(self.read_frame(), Frame::Close(Some(code)));
        assert!(self.buf.is_empty(), "nothing after the close frame");
        assert!(read_eof(&mut self.stream), "EOF after the close frame");
    }
}

/// A WebSocket session opened directly; returns the client, the sid and the open JSON.
fn ws_handshake(addr: SocketAddr) -> (Ws, String, serde_json::Value) {
    let mut ws = Ws::connect(addr, "/engine.io/?EIO=4&transport=websocket");
    let open = ws.read_text();
    assert!(open.starts_with('0'), "{open}");
    let open: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    let sid = open["sid"].as_str().unwrap().to_string();
    (ws, sid, open)
}

// ---------------------------------------------------------------------------------------------
// Hostile helpers
// ---------------------------------------------------------------------------------------------

/// `request_timeout` is short so slowloris cases finish quickly; heads may be large enough that
/// 2000 headers trip the header *count* limit, not the byte limit.
fn hostile_config() -> Config {
    Config {
        request_timeout: Duration::from_millis(300),
        max_head_bytes: 64 * 1024,
        ..config()
    }
}

/// Reads until the server closes (EOF or reset) or the read timeout passes. Returns the bytes and
/// whether the connection was closed.
fn read_to_close(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    for _ in 0..100_000 {
        match stream.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (out, false)
            }
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// The status of the one response in `bytes` (which must hold a complete head).
fn status_of(bytes: &[u8]) -> u16 {
    let end = head_end(bytes)
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(bytes)));
    parse_head(&bytes[..end]).0
}

/// Writes `bytes`, ignoring a failure (the server may already have closed).
fn write_lenient(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}

/// A well-behaved client still gets service: a polling echo and a WebSocket echo.
fn assert_healthy(srv: &TestServer) {
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    assert_eq!(c.request("POST", &poll_url(&sid), b"4alive").text(), "ok");
    assert_eq!(srv.wait_message(session), Data::Text("alive".into()));
    srv.sync();
    assert_eq!(c.request("GET", &poll_url(&sid), b"").text(), "4alive");
    let (mut ws, wsid, _) = ws_handshake(srv.addr);
    srv.wait_open(&wsid);
    ws.send_text("4alive");
    assert_eq!(ws.read_text(), "4alive");
    ws.send_binary(&[1, 2, 3]);
    assert_eq!(ws.read_frame(), Frame::Binary(vec![1, 2, 3]));
}

/// Opens a WebSocket session, writes `bytes` raw, and expects a close frame with `code`, EOF, and
/// the session closed as `reason`.
fn ws_hostile(srv: &TestServer, bytes: &[u8], code: u16, reason: CloseReason) {
    let (mut ws, sid, _) = ws_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    write_lenient(&mut ws.stream, bytes);
    ws.expect_close(code);
    assert_eq!(srv.wait_close(session), reason);
}

/// A masked frame with a raw first byte (FIN/RSV/opcode) and an honest length.
fn raw_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![first];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n <= 0xffff {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

#[test]
fn huge_header_is_431_and_closed() {
    let srv = TestServer::start(hostile_config());
    let mut s = connect(srv.addr);
    write_lenient(
        &mut s,
        b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nX-Big: ",
    );
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    let mut write_failed = false;
    // 20 MB at most, in 64 KiB chunks; stop at the first error (the server closed on us).
    while sent < 20 << 20 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => {
                write_failed = true;
                break;
            }
        }
    }
    assert!(
        write_failed,
        "the server read a 20 MB head without closing ({sent} bytes sent)"
    );
    let (bytes, closed) = read_to_close(&mut s);
    assert!(closed);
    assert_eq!(status_of(&bytes), 431);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn trickled_head_completes() {
    // A head arriving one byte at a time is served normally (and costs linear work).
    let srv = TestServer::start(config());
    let mut s = connect(srv.addr);
    let mut req =
        String::from("GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: localhost\r\n");
    while req.len() < 280 {
        req.push_str("X-Pad: abcdefghijklmnop\r\n");
    }
    req.push_str("\r\n");
    let n = req.len();
    assert!((280..340).contains(&n));
    for b in req.as_bytes() {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut buf = Vec::new();
    let head = read_until(&mut s, &mut buf, head_end);
    assert_eq!(parse_head(&head).0, 200);
    let body = read_until(&mut s, &mut buf, |b| b.contains(&b'}').then_some(b.len()));
    assert!(
        body.starts_with(b"0{\"sid\":"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn two_thousand_headers_is_431() {
    let srv = TestServer::start(hostile_config());
    let mut req = String::from("GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n");
    for i in 0..2000 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    assert!(
        req.len() < 64 * 1024,
        "under the byte limit: the count limit must refuse it"
    );
    let mut s = connect(srv.addr);
    write_lenient(&mut s, req.as_bytes());
    let (bytes, closed) = read_to_close(&mut s);
    assert!(closed);
    assert_eq!(status_of(&bytes), 431);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_transport_without_upgrade_is_400() {
    let srv = TestServer::start(hostile_config());
    let mut c = Http::new(srv.addr);
    let r = c.request("GET", "/engine.io/?EIO=4&transport=websocket", b"");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), r#"{"code":3,"message":"Bad request"}"#);
    // The same with the sid of a live polling session: refused, the session is untouched.
    let (mut p, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let r = c.request(
        "GET",
        &format!("/engine.io/?EIO=4&transport=websocket&sid={sid}"),
        b"",
    );
    assert_eq!(r.status, 400);
    assert_eq!(p.request("POST", &poll_url(&sid), b"4still").text(), "ok");
    assert_eq!(srv.wait_message(session), Data::Text("still".into()));
    // transport=__proto__ is just an unknown transport.
    let r = c.request("GET", "/engine.io/?EIO=4&transport=__proto__", b"");
    assert_eq!(r.text(), r#"{"code":0,"message":"Transport unknown"}"#);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn silent_connection_is_closed_after_request_timeout() {
    let srv = TestServer::start(hostile_config());
    let mut s = connect(srv.addr);
    let (bytes, closed) = read_to_close(&mut s);
    assert!(closed, "a connection that never sends a byte is closed");
    assert!(
        bytes.is_empty(),
        "closed without a response: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn lying_content_length_is_408() {
    let srv = TestServer::start(hostile_config());
    let (_c, sid, _) = polling_handshake(srv.addr);
    srv.wait_open(&sid);
    let mut s = connect(srv.addr);
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n4only ten",
        poll_url(&sid)
    );
    write_lenient(&mut s, req.as_bytes());
    let (bytes, closed) = read_to_close(&mut s);
    assert!(closed);
    assert_eq!(status_of(&bytes), 408);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn absent_content_length_is_an_empty_body() {
    let srv = TestServer::start(hostile_config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    c.stream
        .write_all(format!("POST {} HTTP/1.1\r\nHost: x\r\n\r\n", poll_url(&sid)).as_bytes())
        .unwrap();
    let r = c.read_response();
    assert_eq!(r.status, 400);
    assert_eq!(srv.wait_close(session), CloseReason::ProtocolError);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn content_length_over_max_payload_is_413() {
    let srv = TestServer::start(hostile_config());
    let (_c, sid, _) = polling_handshake(srv.addr);
    srv.wait_open(&sid);
    let mut s = connect(srv.addr);
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000001\r\n\r\n4abc",
        poll_url(&sid)
    );
    write_lenient(&mut s, req.as_bytes());
    let (bytes, closed) = read_to_close(&mut s);
    assert!(closed);
    assert_eq!(status_of(&bytes), 413);
    let huge =
        "POST /engine.io/ HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n";
    let mut s = connect(srv.addr);
    write_lenient(&mut s, huge.as_bytes());
    let (bytes, closed) = read_to_close(&mut s);
    assert!(closed);
    assert_eq!(status_of(&bytes), 400);
    assert_healthy(&srv);
    srv.shutdown();
}

// ---------------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------------

#[test]
fn websocket_rsv_bits_close_1002() {
    let srv = TestServer::start(hostile_config());
    ws_hostile(
        &srv,
        &raw_frame(0xC1, b"4hello"),
        1002,
        CloseReason::TransportClose,
    );
    ws_hostile(
        &srv,
        &raw_frame(0x91, b"4hello"),
        1002,
        CloseReason::TransportClose,
    );
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_unmasked_frame_closes_1002() {
    let srv = TestServer::start(hostile_config());
    ws_hostile(&srv, b"\x81\x064hello", 1002, CloseReason::TransportClose);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_oversized_control_frame_closes_1002() {
    let srv = TestServer::start(hostile_config());
    // RFC 6455 §5.5: "All control frames MUST have a payload length of 125 bytes or less".
    ws_hostile(
        &srv,
        &raw_frame(0x89, &[b'p'; 126]),
        1002,
        CloseReason::TransportClose,
    );
    // A fragmented control frame is refused too.
    ws_hostile(
        &srv,
        &raw_frame(0x09, b"ping"),
        1002,
        CloseReason::TransportClose,
    );
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_invalid_utf8_closes_1007() {
    let srv = TestServer::start(hostile_config());
    ws_hostile(
        &srv,
        &raw_frame(0x81, b"4\xff\xfe"),
        1007,
        CloseReason::TransportClose,
    );
    // Split across fragments, each half invalid alone.
    let mut two = raw_frame(0x01, b"4\xc3");
    two.extend_from_slice(&raw_frame(0x80, b"\x28"));
    ws_hostile(&srv, &two, 1007, CloseReason::TransportClose);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_length_2_pow_63_closes_1009() {
    let srv = TestServer::start(hostile_config());
    let mut f = vec![0x82, 0x80 | 127];
    f.extend_from_slice(&(1u64 << 63).to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    ws_hostile(&srv, &f, 1009, CloseReason::TransportClose);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_message_over_max_payload_closes_1009() {
    let srv = TestServer::start(Config {
        max_payload: 1000,
        ..hostile_config()
    });
    // One frame of max_payload + 1 bytes.
    ws_hostile(
        &srv,
        &raw_frame(0x82, &[7u8; 1001]),
        1009,
        CloseReason::TransportClose,
    );
    // Fragments that are each small but add up to more.
    let mut frags = raw_frame(0x02, &[7u8; 600]);
    frags.extend_from_slice(&raw_frame(0x80, &[7u8; 600]));
    ws_hostile(&srv, &frags, 1009, CloseReason::TransportClose);
    // Exactly max_payload is fine.
    let (mut ws, sid, _) = ws_handshake(srv.addr);
    srv.wait_open(&sid);
    ws.send_binary(&[7u8; 1000]);
    assert_eq!(ws.read_frame(), Frame::Binary(vec![7u8; 1000]));
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_engine_io_garbage_closes() {
    let srv = TestServer::start(hostile_config());
    for bad in ["abc", "9", "", "0{}", "bAQID"] {
        ws_hostile(
            &srv,
            &raw_frame(0x81, bad.as_bytes()),
            1000,
            CloseReason::ProtocolError,
        );
    }
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_client_that_never_reads_is_closed_at_the_cap() {
    // The echo of every message goes back to a client that never reads: the server's queue for it
    // grows until max_outbound_bytes, then the connection is closed. Others are unaffected.
    let srv = TestServer::start(Config {
        max_outbound_bytes: 2 << 20,
        ..hostile_config()
    });
    let (mut ws, sid, _) = ws_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let msg = format!("4{}", "x".repeat(64 * 1024));
    let frame = ws.encode(1, msg.as_bytes());
    let mut write_failed = false;
    // At most 128 MB; kernel buffers hold a few MB, the server queue 2 MiB.
    for _ in 0..2000 {
        if ws.stream.write_all(&frame).is_err() {
            write_failed = true;
            break;
        }
    }
    assert!(
        write_failed,
        "the server never closed a client that does not read"
    );
    assert_eq!(srv.wait_close(session), CloseReason::TransportClose);
    assert_eq!(srv.handle.stats().unwrap().eio_sessions, 0);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_ping_flood_from_a_client_that_never_reads_is_closed() {
    // DESIGN §7: "ping floods from a client that never reads". Every ping makes the server queue a
    // pong for a client that never takes it: the queue must hit its cap and the connection close.
    let srv = TestServer::start(Config {
        max_outbound_bytes: 1 << 20,
        max_payload: 64 * 1024,
        ..hostile_config()
    });
    let (mut ws, sid, _) = ws_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let mut batch = Vec::new();
    for _ in 0..1000 {
        batch.extend_from_slice(&ws.encode(9, &[b'p'; 125]));
    }
    let mut write_failed = false;
    // 400 batches of 1000 pings: 52 MB of pings, 51 MB of pongs owed.
    for _ in 0..400 {
        if ws.stream.write_all(&batch).is_err() {
            write_failed = true;
            break;
        }
    }
    assert!(
        write_failed,
        "the server kept queueing pongs for a client that never reads"
    );
    assert_eq!(srv.wait_close(session), CloseReason::TransportClose);
    assert_healthy(&srv);
    srv.shutdown();
}

// ---------------------------------------------------------------------------------------------
// Engine.IO
// ---------------------------------------------------------------------------------------------

#[test]
fn record_separator_flood_is_400() {
    let srv = TestServer::start(hostile_config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let body = vec![0x1e; 1_000_000];
    let r = c.request("POST", &poll_url(&sid), &body);
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), r#"{"code":3,"message":"Bad request"}"#);
    assert_eq!(srv.wait_close(session), CloseReason::ProtocolError);
    let r = c.request("GET", &poll_url(&sid), b"");
    assert_eq!(r.text(), r#"{"code":1,"message":"Session ID unknown"}"#);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn bare_b_is_an_empty_binary_message() {
    let srv = TestServer::start(hostile_config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    assert_eq!(c.request("POST", &poll_url(&sid), b"b").text(), "ok");
    assert_eq!(srv.wait_message(session), Data::Binary(vec![]));
    srv.sync();
    assert_eq!(c.request("GET", &poll_url(&sid), b"").text(), "b");
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn invalid_base64_and_garbage_packets_close_the_session() {
    let srv = TestServer::start(hostile_config());
    for bad in [&b"b!!!!"[..], b"bAQID=x", b"abc", b"9", b"4ok\x1e", b"\xff"] {
        let (mut c, sid, _) = polling_handshake(srv.addr);
        let session = srv.wait_open(&sid);
        let r = c.request("POST", &poll_url(&sid), bad);
        assert_eq!(r.status, 400, "{bad:?}");
        assert_eq!(
            srv.wait_close(session),
            CloseReason::ProtocolError,
            "{bad:?}"
        );
        let r = c.request("GET", &poll_url(&sid), b"");
        assert_eq!(r.text(), r#"{"code":1,"message":"Session ID unknown"}"#);
    }
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn binary_content_type_post_is_refused() {
    let srv = TestServer::start(hostile_config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 6\r\n\r\n4hello",
        poll_url(&sid)
    );
    c.stream.write_all(req.as_bytes()).unwrap();
    assert_eq!(c.read_response().status, 400);
    assert_eq!(srv.wait_close(session), CloseReason::ProtocolError);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn two_concurrent_polls() {
    let srv = TestServer::start(hostile_config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let mut g1 = parked_get(srv.addr, &sid, &mut c);
    let mut g2 = Http::new(srv.addr);
    let r2 = g2.request("GET", &poll_url(&sid), b"");
    assert_eq!(r2.status, 400);
    assert_eq!(r2.text(), r#"{"code":3,"message":"Bad request"}"#);
    let r1 = g1.read_response();
    assert_eq!((r1.status, r1.text()), (200, "1".to_string()));
    assert_eq!(srv.wait_close(session), CloseReason::ProtocolError);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn pong_flood_over_polling_and_websocket() {
    let srv = TestServer::start(hostile_config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let body = vec!["3"; 100_000].join("\x1e");
    for _ in 0..5 {
        assert_eq!(
            c.request("POST", &poll_url(&sid), body.as_bytes()).text(),
            "ok"
        );
    }
    let (mut ws, wsid, _) = ws_handshake(srv.addr);
    srv.wait_open(&wsid);
    let mut batch = Vec::new();
    for _ in 0..20_000 {
        batch.extend_from_slice(&ws.encode(1, b"3"));
    }
    ws.stream.write_all(&batch).unwrap();
    ws.send_text("4after");
    assert_eq!(ws.read_text(), "4after");
    let stats = srv.handle.stats().unwrap();
    assert_eq!(stats.eio_sessions, 2);
    assert!(stats.timer_entries <= 4, "{stats:?}");
    assert_eq!(c.request("POST", &poll_url(&sid), b"4x").text(), "ok");
    assert_eq!(srv.wait_message(session), Data::Text("x".into()));
    assert_healthy(&srv);
    srv.shutdown();
}
