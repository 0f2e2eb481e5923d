//! Engine.IO over real sockets on 127.0.0.1: a blocking HTTP client and a minimal WebSocket client
//! (written here, independent of the server's code) against a `Server` whose events an echo thread
//! answers. Every read has a timeout and every loop is bounded.
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

    /// True once the server has closed the connection (EOF or reset), within the read timeout.
    fn is_closed(&mut self) -> bool {
        read_eof(&mut self.stream)
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
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn polling_session_echo_and_keep_alive() {
    let srv = TestServer::start(config());
    let (mut c, sid, open) = polling_handshake(srv.addr);
    assert_eq!(
        open,
        serde_json::json!({
            "sid": sid, "upgrades": ["websocket"], "pingInterval": 25000,
            "pingTimeout": 20000, "maxPayload": 1000000
        })
    );
    let session = srv.wait_open(&sid);
    // Keep-alive: POST and then GET on the handshake's own TCP connection.
    let r = c.request("POST", &poll_url(&sid), "4héllo\x1ebAAEC/w==".as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert_eq!(srv.wait_message(session), Data::Text("héllo".into()));
    assert_eq!(srv.wait_message(session), Data::Binary(vec![0, 1, 2, 255]));
    // Both echoes are queued before the GET (the echo thread sends before forwarding the event).
    srv.sync();
    let r = c.request("GET", &poll_url(&sid), b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "4héllo\x1ebAAEC/w==".as_bytes());
    // A parked GET on a second connection is answered by the echo of a later POST.
    let mut g = Http::new(srv.addr);
    g.send("GET", &poll_url(&sid), b"");
    let r = c.request("POST", &poll_url(&sid), b"4again");
    assert_eq!(r.text(), "ok");
    assert_eq!(g.read_response().text(), "4again");
    // A larger binary message round-trips through base64.
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let mut body = b"b".to_vec();
    body.extend_from_slice(
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &big).as_bytes(),
    );
    assert_eq!(c.request("POST", &poll_url(&sid), &body).text(), "ok");
    assert_eq!(srv.wait_message(session), Data::Text("again".into()));
    assert_eq!(srv.wait_message(session), Data::Binary(big.clone()));
    srv.sync();
    assert_eq!(c.request("GET", &poll_url(&sid), b"").body, body);
    srv.shutdown();
}

#[test]
fn websocket_session_text_and_binary() {
    let srv = TestServer::start(config());
    let (mut ws, sid, open) = ws_handshake(srv.addr);
    assert_eq!(
        open,
        serde_json::json!({
            "sid": sid, "upgrades": [], "pingInterval": 25000,
            "pingTimeout": 20000, "maxPayload": 1000000
        })
    );
    let session = srv.wait_open(&sid);
    ws.send_text("4hello");
    assert_eq!(ws.read_text(), "4hello");
    ws.send_binary(&[0, 1, 2, 3, 255]);
    assert_eq!(ws.read_frame(), Frame::Binary(vec![0, 1, 2, 3, 255]));
    // 16-bit and 64-bit frame lengths.
    let mid = "m".repeat(40_000);
    ws.send_text(&format!("4{mid}"));
    assert_eq!(ws.read_text(), format!("4{mid}"));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    ws.send_binary(&big);
    assert_eq!(ws.read_frame(), Frame::Binary(big));
    assert_eq!(srv.wait_message(session), Data::Text("hello".into()));
    // Server-initiated message.
    srv.handle
        .eio_send(session, Data::Text("from server".into()))
        .unwrap();
    assert_eq!(ws.read_text(), "4from server");
    // Client close.
    ws.send_text("1");
    assert_eq!(srv.wait_close(session), CloseReason::ClientClose);
    ws.expect_close(1000);
    srv.shutdown();
}

#[test]
fn upgrade_polling_to_websocket() {
    let srv = TestServer::start(config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    // A poll parked before the upgrade.
    let mut g = Http::new(srv.addr);
    g.send("GET", &poll_url(&sid), b"");
    let mut ws = Ws::connect(
        srv.addr,
        &format!("/engine.io/?EIO=4&transport=websocket&sid={sid}"),
    );
    ws.send_text("2probe");
    assert_eq!(ws.read_text(), "3probe");
    // The parked poll is released with a noop.
    assert_eq!(g.read_response().text(), "6");
    // Messages sent while the upgrade is in progress: one from the application, one echoed from a
    // POST over polling. Both must arrive over the WebSocket after `5`.
    srv.handle
        .eio_send(session, Data::Text("during".into()))
        .unwrap();
    assert_eq!(c.request("POST", &poll_url(&sid), b"4posted").text(), "ok");
    assert_eq!(srv.wait_message(session), Data::Text("posted".into()));
    srv.sync();
    // A poll during the upgrade gets a noop, never the buffered messages.
    assert_eq!(c.request("GET", &poll_url(&sid), b"").text(), "6");
    ws.send_text("5");
    assert_eq!(ws.read_text(), "4during");
    assert_eq!(ws.read_text(), "4posted");
    ws.send_text("4over ws");
    assert_eq!(ws.read_text(), "4over ws");
    ws.send_binary(&[9, 8, 7]);
    assert_eq!(ws.read_frame(), Frame::Binary(vec![9, 8, 7]));
    // Polling is refused now; the session stays.
    let r = c.request("GET", &poll_url(&sid), b"");
    assert_eq!(r.status, 400);
    ws.send_text("4still");
    assert_eq!(ws.read_text(), "4still");
    // Server close over the upgraded transport.
    srv.handle.eio_close(session).unwrap();
    ws.expect_close(1000);
    assert_eq!(srv.wait_close(session), CloseReason::ServerClose);
    srv.shutdown();
}

#[test]
fn heartbeat_timeout_closes_both_transports() {
    let srv = TestServer::start(Config {
        // A generous timeout: a loaded machine must not turn a prompt pong into a timeout.
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(1000),
        ..config()
    });
    // WebSocket: answer the first ping, ignore the second.
    let (mut ws, sid, open) = ws_handshake(srv.addr);
    assert_eq!(open["pingInterval"], 100);
    let session = srv.wait_open(&sid);
    assert_eq!(ws.read_text(), "2");
    ws.send_text("3");
    assert_eq!(ws.read_text(), "2");
    assert_eq!(srv.wait_close(session), CloseReason::PingTimeout);
    ws.expect_close(1000);

    // Polling: a client that never polls again.
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    assert_eq!(srv.wait_close(session), CloseReason::PingTimeout);
    let r = c.request("GET", &poll_url(&sid), b"");
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), r#"{"code":1,"message":"Session ID unknown"}"#);

    // Polling, answering pings: stays alive across several intervals.
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    for _ in 0..5 {
        let r = c.request("GET", &poll_url(&sid), b"");
        assert_eq!(r.text(), "2");
        assert_eq!(c.request("POST", &poll_url(&sid), b"3").text(), "ok");
    }
    let stats = srv.handle.stats().unwrap();
    assert_eq!(stats.eio_sessions, 1);
    drop(c);
    assert_eq!(srv.wait_close(session), CloseReason::PingTimeout);
    srv.shutdown();
}

#[test]
fn close_from_each_side() {
    let srv = TestServer::start(config());
    // Client close over polling, with a parked poll.
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let mut g = parked_get(srv.addr, &sid, &mut c);
    assert_eq!(c.request("POST", &poll_url(&sid), b"1").text(), "ok");
    assert_eq!(g.read_response().text(), "6");
    assert_eq!(srv.wait_close(session), CloseReason::ClientClose);
    let r = c.request("GET", &poll_url(&sid), b"");
    assert_eq!(r.text(), r#"{"code":1,"message":"Session ID unknown"}"#);

    // Server close over polling: the parked poll carries the close packet.
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let mut g = parked_get(srv.addr, &sid, &mut c);
    srv.handle.eio_close(session).unwrap();
    assert_eq!(g.read_response().text(), "1");
    assert_eq!(srv.wait_close(session), CloseReason::ServerClose);

    // Server close over WebSocket.
    let (mut ws, sid, _) = ws_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    srv.handle.eio_close(session).unwrap();
    ws.expect_close(1000);
    assert_eq!(srv.wait_close(session), CloseReason::ServerClose);

    // The client drops its WebSocket without a word.
    let (ws, sid, _) = ws_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    drop(ws);
    assert_eq!(srv.wait_close(session), CloseReason::TransportClose);

    // An aborted poll closes the session.
    let (_c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let mut g = Http::new(srv.addr);
    g.send("GET", &poll_url(&sid), b"");
    drop(g);
    assert_eq!(srv.wait_close(session), CloseReason::TransportClose);
    assert_eq!(srv.handle.stats().unwrap().eio_sessions, 0);
    srv.shutdown();
}

#[test]
fn keep_alive_many_requests_on_one_connection() {
    let srv = TestServer::start(config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    for i in 0..20 {
        let r = c.request("POST", &poll_url(&sid), format!("4n{i}").as_bytes());
        assert_eq!((r.status, r.text()), (200, "ok".to_string()));
        assert_eq!(srv.wait_message(session), Data::Text(format!("n{i}")));
        srv.sync();
        let r = c.request("GET", &poll_url(&sid), b"");
        assert_eq!(r.text(), format!("4n{i}"));
    }
    // Pipelined: two requests written at once, answered in order.
    let mut both = Vec::new();
    both.extend_from_slice(
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n4p",
            poll_url(&sid)
        )
        .as_bytes(),
    );
    both.extend_from_slice(
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n4q",
            poll_url(&sid)
        )
        .as_bytes(),
    );
    c.stream.write_all(&both).unwrap();
    assert_eq!(c.read_response().text(), "ok");
    assert_eq!(c.read_response().text(), "ok");
    assert_eq!(srv.wait_message(session), Data::Text("p".into()));
    assert_eq!(srv.wait_message(session), Data::Text("q".into()));
    // `Connection: close` is honoured.
    c.stream
        .write_all(
            b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());
    srv.shutdown();
}

#[test]
fn shutdown_closes_everything_and_joins() {
    let srv = TestServer::start(config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let polling = srv.wait_open(&sid);
    let mut g = parked_get(srv.addr, &sid, &mut c);
    let (mut ws, wsid, _) = ws_handshake(srv.addr);
    let websocket = srv.wait_open(&wsid);
    // An idle keep-alive connection and one that never sent anything.
    let mut idle = connect(srv.addr);
    let addr = srv.addr;
    let handle = srv.handle.clone();
    let events = srv.shutdown_collect();
    // Every session was closed with ServerShutdown, and the event stream ended.
    let mut closes = Vec::new();
    for ev in events {
        if let AppEvent::EioClose { session, reason } = ev {
            closes.push((session, reason));
        }
    }
    closes.sort_by_key(|(s, _)| *s);
    let mut expect = vec![
        (polling, CloseReason::ServerShutdown),
        (websocket, CloseReason::ServerShutdown),
    ];
    expect.sort_by_key(|(s, _)| *s);
    assert_eq!(closes, expect);
    // The parked poll got the close packet, the WebSocket a close frame, and all are closed.
    assert_eq!(g.read_response().text(), "1");
    assert!(g.is_closed());
    ws.expect_close(1000);
    assert!(c.is_closed());
    assert!(read_eof(&mut idle));
    // Nobody listens any more; the handle reports the server gone.
    assert!(TcpStream::connect(addr).is_err());
    assert!(handle.stats().is_err());
}
