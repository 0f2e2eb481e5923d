//! Engine scenario tests on a simulated clock.
//!
//! No sockets and no real time: every input carries `t0 + n ms`, session ids come from a counter,
//! and each test asserts the exact bytes and events the engine asks io to produce.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::test_support::{parse_frames, request, ws_upgrade_head, Frame, WS_ACCEPT, WS_KEY};
use super::{
    AppEvent, CloseReason, Command, ConnId, Data, Engine, Output, RandomSource, Request, SessionId,
    WsMessage,
};
use crate::config::Config;
use crate::proto::eio::sid_from_random;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Deterministic "randomness": successive bytes 0, 1, 2, ... (the engine takes 8 for its epoch,
/// then 15 per session id).
fn counter_random() -> RandomSource {
    let mut n: u8 = 0;
    Box::new(move |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            *b = n;
            n = n.wrapping_add(1);
        }
    })
}

/// The sid the counter source yields for the `i`-th session (0-based).
fn expected_sid(i: u8) -> String {
    let mut bytes = [0u8; 15];
    for (k, b) in bytes.iter_mut().enumerate() {
        *b = 8 + 15 * i + k as u8;
    }
    sid_from_random(&bytes)
}

fn config() -> Config {
    Config {
        engineio_path: Some("/engine.io/".into()),
        ping_interval: ms(300),
        ping_timeout: ms(200),
        upgrade_timeout: ms(1000),
        max_payload: 1_000_000,
        ..Config::default()
    }
}

/// A quiet heartbeat, for scenarios about something else.
fn config_slow_ping() -> Config {
    Config {
        ping_interval: ms(25_000),
        ping_timeout: ms(20_000),
        ..config()
    }
}

struct H {
    eng: Engine,
    t0: Instant,
    next_conn: ConnId,
}

impl H {
    fn new(cfg: Config) -> H {
        H {
            eng: Engine::new(Arc::new(cfg), counter_random()),
            t0: Instant::now(),
            next_conn: 100,
        }
    }

    fn at(&self, n: u64) -> Instant {
        self.t0 + ms(n)
    }

    fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    fn drain(&mut self) -> Out {
        let mut v = Vec::new();
        // Bounded: an engine that produced outputs forever would be a bug in itself.
        for _ in 0..1_000_000 {
            match self.eng.poll_output() {
                Some(o) => v.push(o),
                None => return Out(v),
            }
        }
        panic!("the engine produced more than a million outputs");
    }

    /// Feeds a raw request head (plus body) to the engine and returns its outputs.
    fn raw(&mut self, t: u64, conn: ConnId, head: &str, body: &[u8]) -> Out {
        let req = Request {
            body: body.to_vec(),
            remote: Some(([127, 0, 0, 1], 5555).into()),
            ..request(head)
        };
        assert_eq!(head.len(), head_len(&req.head), "test built a bad head");
        self.eng.handle_request(self.at(t), conn, req);
        self.drain()
    }

    fn get(&mut self, t: u64, conn: ConnId, target: &str) -> Out {
        let head = format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.raw(t, conn, &head, b"")
    }

    fn post_typed(&mut self, t: u64, conn: ConnId, target: &str, ctype: &str, body: &[u8]) -> Out {
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: test\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.raw(t, conn, &head, body)
    }

    fn post(&mut self, t: u64, conn: ConnId, target: &str, body: &[u8]) -> Out {
        self.post_typed(t, conn, target, "text/plain;charset=UTF-8", body)
    }

    fn ws_get(&mut self, t: u64, conn: ConnId, target: &str) -> Out {
        self.raw(t, conn, &ws_upgrade_head(target), b"")
    }

    fn ws(&mut self, t: u64, conn: ConnId, text: &str) -> Out {
        self.eng
            .handle_ws_message(self.at(t), conn, WsMessage::Text(text));
        self.drain()
    }

    fn ws_bin(&mut self, t: u64, conn: ConnId, b: &[u8]) -> Out {
        self.eng
            .handle_ws_message(self.at(t), conn, WsMessage::Binary(b));
        self.drain()
    }

    fn tick(&mut self, t: u64) -> Out {
        self.eng.handle_timeout(self.at(t));
        self.drain()
    }

    fn closed(&mut self, t: u64, conn: ConnId) -> Out {
        self.eng.handle_conn_closed(self.at(t), conn);
        self.drain()
    }

    fn send(&mut self, t: u64, session: SessionId, data: Data) -> Out {
        self.eng
            .handle_command(self.at(t), Command::EioSend { session, data });
        self.drain()
    }

    fn text(&mut self, t: u64, session: SessionId, s: &str) -> Out {
        self.send(t, session, Data::Text(s.to_string()))
    }

    /// A polling handshake at `t`: returns the session, its sid and the handshake's outputs.
    fn open_polling(&mut self, t: u64) -> (SessionId, String, Out) {
        let c = self.conn();
        let out = self.get(t, c, "/engine.io/?EIO=4&transport=polling");
        let (session, sid) = out.opened();
        assert_eq!(out.response(c).status, 200, "handshake failed");
        (session, sid, out)
    }

    /// A WebSocket handshake at `t`: returns the session, sid and its connection.
    fn open_ws(&mut self, t: u64) -> (SessionId, String, ConnId) {
        let c = self.conn();
        let out = self.ws_get(t, c, "/engine.io/?EIO=4&transport=websocket");
        assert!(out.started_ws(c));
        let (session, sid) = out.opened();
        (session, sid, c)
    }
}

fn head_len(head: &crate::proto::http::RequestHead) -> usize {
    // Recompute what the test wrote (request line + headers + blank line) to catch a test bug that
    // leaves bytes after the head.
    let target = if head.query.is_empty() {
        head.path.clone()
    } else {
        format!("{}?{}", head.path, head.query)
    };
    let method = match head.method {
        crate::proto::http::Method::Get => "GET",
        crate::proto::http::Method::Post => "POST",
        crate::proto::http::Method::Options => "OPTIONS",
        crate::proto::http::Method::Head => "HEAD",
        crate::proto::http::Method::Put => "PUT",
        _ => "?",
    };
    let mut n = method.len() + 1 + target.len() + " HTTP/1.x\r\n".len();
    for (k, v) in &head.headers {
        n += k.len() + 2 + v.len() + 2;
    }
    n + 2
}

/// A parsed HTTP response as the engine wrote it.
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

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

fn parse_response(bytes: &[u8]) -> (Resp, usize) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let n = match r.parse(bytes).unwrap() {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            panic!("incomplete response: {:?}", String::from_utf8_lossy(bytes))
        }
    };
    let status = r.code.unwrap();
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8(h.value.to_vec()).unwrap(),
            )
        })
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>().unwrap());
    let body_len = len.unwrap_or_default();
    let body = bytes[n..n + body_len].to_vec();
    (
        Resp {
            status,
            headers,
            body,
        },
        n + body_len,
    )
}

fn text_frame(s: &str) -> Frame {
    Frame::Text(s.to_string())
}

/// The outputs of one input.
#[derive(Debug)]
struct Out(Vec<Output>);

impl Out {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn bytes(&self, conn: ConnId) -> Vec<u8> {
        let mut v = Vec::new();
        for o in &self.0 {
            if let Output::Write { conn: c, chunk } = o {
                if *c == conn {
                    v.extend_from_slice(chunk.as_slice());
                }
            }
        }
        v
    }

    fn touches(&self, conn: ConnId) -> bool {
        self.0.iter().any(|o| match o {
            Output::Write { conn: c, .. }
            | Output::WriteVolatile { conn: c, .. }
            | Output::ResponseDone { conn: c, .. }
            | Output::StartWebSocket { conn: c }
            | Output::StartStream { conn: c }
            | Output::Close { conn: c }
            | Output::Forward { conn: c, .. } => *c == conn,
            Output::App(_) => false,
        })
    }

    /// The one complete response written to `conn` (asserts there is exactly one, and that
    /// `ResponseDone` follows it).
    fn response(&self, conn: ConnId) -> Resp {
        let bytes = self.bytes(conn);
        let (r, n) = parse_response(&bytes);
        assert_eq!(n, bytes.len(), "exactly one response on conn {conn}");
        if r.status != 101 {
            assert!(self.done(conn).is_some(), "ResponseDone after the response");
        }
        r
    }

    fn done(&self, conn: ConnId) -> Option<bool> {
        self.0.iter().find_map(|o| match o {
            Output::ResponseDone {
                conn: c,
                keep_alive,
            } if *c == conn => Some(*keep_alive),
            _ => None,
        })
    }

    fn close_out(&self, conn: ConnId) -> bool {
        self.0
            .iter()
            .any(|o| matches!(o, Output::Close { conn: c } if *c == conn))
    }

    fn started_ws(&self, conn: ConnId) -> bool {
        self.0
            .iter()
            .any(|o| matches!(o, Output::StartWebSocket { conn: c } if *c == conn))
    }

    /// The WebSocket frames written to `conn` (after the 101 head, if it is among the bytes).
    fn frames(&self, conn: ConnId) -> Vec<Frame> {
        let bytes = self.bytes(conn);
        let mut b = bytes.as_slice();
        if b.starts_with(b"HTTP/1.1 101") {
            let end = b.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            b = &b[end..];
        }
        parse_frames(b)
    }

    fn apps(&self) -> Vec<&AppEvent> {
        self.0
            .iter()
            .filter_map(|o| match o {
                Output::App(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn opened(&self) -> (SessionId, String) {
        let v: Vec<_> = self
            .apps()
            .into_iter()
            .filter_map(|e| match e {
                AppEvent::EioOpen { session, sid, .. } => Some((*session, sid.to_string())),
                _ => None,
            })
            .collect();
        assert_eq!(v.len(), 1, "one EioOpen: {:?}", self.0);
        v.into_iter().next().unwrap()
    }

    fn messages(&self) -> Vec<(SessionId, Data)> {
        self.apps()
            .into_iter()
            .filter_map(|e| match e {
                AppEvent::EioMessage { session, data } => Some((*session, data.clone())),
                _ => None,
            })
            .collect()
    }

    fn closes(&self) -> Vec<(SessionId, CloseReason)> {
        self.apps()
            .into_iter()
            .filter_map(|e| match e {
                AppEvent::EioClose { session, reason } => Some((*session, *reason)),
                _ => None,
            })
            .collect()
    }
}

fn poll_url(sid: &str) -> String {
    format!("/engine.io/?EIO=4&transport=polling&sid={sid}")
}

fn ws_url(sid: &str) -> String {
    format!("/engine.io/?EIO=4&transport=websocket&sid={sid}")
}

fn error_json(code: u8, message: &str) -> String {
    format!("{{\"code\":{code},\"message\":\"{message}\"}}")
}

// ---------------------------------------------------------------------------------------------
// Handshakes and request errors
// ---------------------------------------------------------------------------------------------

#[test]
fn polling_handshake_exact_open_packet() {
    let mut h = H::new(config());
    let c = h.conn();
    let out = h.get(0, c, "/engine.io/?EIO=4&transport=polling");
    let r = out.response(c);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=UTF-8"));
    assert_eq!(r.header("connection"), Some("keep-alive"));
    let sid = expected_sid(0);
    assert_eq!(sid.len(), 20);
    assert_eq!(
        r.text(),
        format!(
            "0{{\"sid\":\"{sid}\",\"upgrades\":[\"websocket\"],\"pingInterval\":300,\
             \"pingTimeout\":200,\"maxPayload\":1000000}}"
        )
    );
    assert_eq!(out.done(c), Some(true));
    let (session, got_sid) = out.opened();
    assert_eq!(got_sid, sid);
    match out.apps()[0] {
        AppEvent::EioOpen { remote, .. } => {
            assert_eq!(*remote, Some(([127, 0, 0, 1], 5555).into()))
        }
        e => panic!("unexpected {e:?}"),
    }
    assert_eq!(h.eng.session_count(), 1);
    // The first ping is due exactly one interval after the handshake.
    assert_eq!(h.eng.next_deadline(), Some(h.at(300)));

    // A second handshake gets the next sid and a different session.
    let (s2, sid2, _) = h.open_polling(1);
    assert_eq!(sid2, expected_sid(1));
    assert_ne!(s2, session);
    assert_eq!(h.eng.session_count(), 2);
}

#[test]
fn handshake_without_trailing_slash_and_http10_close() {
    let mut h = H::new(config());
    let c = h.conn();
    let out = h.raw(
        0,
        c,
        "GET /engine.io?EIO=4&transport=polling HTTP/1.0\r\nHost: t\r\n\r\n",
        b"",
    );
    let r = out.response(c);
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("0{\"sid\":"));
    // HTTP/1.0 without keep-alive: the connection closes after the answer.
    assert_eq!(out.done(c), Some(false));
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn websocket_handshake_101_and_empty_upgrades() {
    let mut h = H::new(config());
    let c = h.conn();
    let out = h.ws_get(0, c, "/engine.io/?EIO=4&transport=websocket");
    let bytes = out.bytes(c);
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{text}"
    );
    let (r, _) = parse_response(&bytes);
    assert_eq!(r.status, 101);
    assert_eq!(r.header("sec-websocket-accept"), Some(WS_ACCEPT));
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert!(out.started_ws(c));
    assert_eq!(out.done(c), None, "a 101 is not a finished response");
    let sid = expected_sid(0);
    assert_eq!(
        out.frames(c),
        vec![text_frame(&format!(
            "0{{\"sid\":\"{sid}\",\"upgrades\":[],\"pingInterval\":300,\"pingTimeout\":200,\
             \"maxPayload\":1000000}}"
        ))]
    );
    let (_, got) = out.opened();
    assert_eq!(got, sid);
    assert_eq!(h.eng.next_deadline(), Some(h.at(300)));
}

#[test]
fn websocket_handshake_with_bad_headers_is_400() {
    let mut h = H::new(config());
    // Version 8 is not RFC 6455.
    let c = h.conn();
    let head = format!(
        "GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"
    );
    let out = h.raw(0, c, &head, b"");
    assert_eq!(out.response(c).status, 400);
    assert!(!out.started_ws(c));
    // transport=websocket without Upgrade headers.
    let c = h.conn();
    let out = h.get(0, c, "/engine.io/?EIO=4&transport=websocket");
    let r = out.response(c);
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), error_json(3, "Bad request"));
    // An Upgrade on the polling transport.
    let c = h.conn();
    let out = h.ws_get(0, c, "/engine.io/?EIO=4&transport=polling");
    assert_eq!(out.response(c).status, 400);
    assert!(!out.started_ws(c));
    assert_eq!(h.eng.session_count(), 0);
}

#[test]
fn wrong_protocol_version() {
    let mut h = H::new(config());
    for q in [
        "EIO=3&transport=polling",
        "transport=polling",
        "EIO=5&transport=polling",
        "EIO=04&transport=polling",
    ] {
        let c = h.conn();
        let out = h.get(0, c, &format!("/engine.io/?{q}"));
        let r = out.response(c);
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.text(),
            error_json(5, "Unsupported protocol version"),
            "{q}"
        );
        assert!(out.apps().is_empty());
    }
    assert_eq!(h.eng.session_count(), 0);
}

#[test]
fn unknown_transport_including_proto() {
    let mut h = H::new(config());
    for q in [
        "EIO=4&transport=__proto__",
        "EIO=4&transport=constructor",
        "EIO=4&transport=flashsocket",
        "EIO=4&transport=",
        "EIO=4",
        "EIO=4&transport=Polling",
    ] {
        let c = h.conn();
        let out = h.get(0, c, &format!("/engine.io/?{q}"));
        let r = out.response(c);
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.text(), error_json(0, "Transport unknown"), "{q}");
    }
    assert_eq!(h.eng.session_count(), 0);
}

#[test]
fn unknown_sid() {
    let mut h = H::new(config());
    let (_, sid, _) = h.open_polling(0);
    for bad in ["nope", "", "__proto__", &sid[..19]] {
        let c = h.conn();
        let out = h.get(1, c, &poll_url(bad));
        let r = out.response(c);
        assert_eq!(r.status, 400);
        assert_eq!(r.text(), error_json(1, "Session ID unknown"), "{bad:?}");
        let c = h.conn();
        let out = h.post(1, c, &poll_url(bad), b"4x");
        assert_eq!(out.response(c).text(), error_json(1, "Session ID unknown"));
        assert!(out.messages().is_empty());
    }
    // The real session is untouched.
    assert_eq!(h.eng.session_count(), 1);
}

#[test]
fn post_handshake_is_bad_handshake_method() {
    let mut h = H::new(config());
    let c = h.conn();
    let out = h.post(0, c, "/engine.io/?EIO=4&transport=polling", b"4hello");
    let r = out.response(c);
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), error_json(2, "Bad handshake method"));
    assert!(out.apps().is_empty());
    assert_eq!(h.eng.session_count(), 0);
}

#[test]
fn other_paths_and_session_limit() {
    let mut h = H::new(Config {
        max_connections: 1,
        ..config()
    });
    let c = h.conn();
    let out = h.get(0, c, "/engine.io/x?EIO=4&transport=polling");
    assert_eq!(out.response(c).status, 404);
    let (_, _, _) = h.open_polling(0);
    let c = h.conn();
    let out = h.get(0, c, "/engine.io/?EIO=4&transport=polling");
    assert_eq!(out.response(c).status, 503);
    assert!(out.apps().is_empty());
    assert_eq!(h.eng.session_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Heartbeat
// ---------------------------------------------------------------------------------------------

#[test]
fn heartbeat_polling_ping_pong_and_timeout() {
    let mut h = H::new(config());
    let (session, sid, _) = h.open_polling(0);
    // A GET parks: nothing to send yet.
    let g1 = h.conn();
    assert!(h.get(10, g1, &poll_url(&sid)).is_empty());
    assert!(h.tick(299).is_empty());
    // Exactly one interval after the handshake: the ping answers the parked poll.
    let out = h.tick(300);
    assert_eq!(out.response(g1).text(), "2");
    assert_eq!(out.done(g1), Some(true));
    // The pong resets the heartbeat: next ping one interval after the pong.
    let p = h.conn();
    let out = h.post(350, p, &poll_url(&sid), b"3");
    assert_eq!(out.response(p).text(), "ok");
    let g2 = h.conn();
    assert!(h.get(360, g2, &poll_url(&sid)).is_empty());
    assert!(h.tick(500).is_empty(), "no timeout: the pong came in time");
    assert!(h.tick(649).is_empty());
    let out = h.tick(650);
    assert_eq!(out.response(g2).text(), "2");
    // No pong this time: closed exactly ping_timeout after the ping was queued.
    let g3 = h.conn();
    assert!(h.get(700, g3, &poll_url(&sid)).is_empty());
    assert!(h.tick(849).is_empty());
    let out = h.tick(850);
    assert_eq!(out.closes(), vec![(session, CloseReason::PingTimeout)]);
    // The parked poll learns about it.
    assert_eq!(out.response(g3).text(), "1");
    assert_eq!(h.eng.session_count(), 0);
    let c = h.conn();
    let out = h.get(900, c, &poll_url(&sid));
    assert_eq!(out.response(c).text(), error_json(1, "Session ID unknown"));
}

#[test]
fn pong_timeout_counts_from_when_the_ping_was_queued() {
    // The ping is queued at 300 but only fetched at 450: the deadline is still 300 + 200.
    let mut h = H::new(config());
    let (session, sid, _) = h.open_polling(0);
    assert!(
        h.tick(300).is_empty(),
        "no poll parked: the ping waits in the buffer"
    );
    let g = h.conn();
    let out = h.get(450, g, &poll_url(&sid));
    assert_eq!(out.response(g).text(), "2");
    assert!(h.tick(499).is_empty());
    let out = h.tick(500);
    assert_eq!(out.closes(), vec![(session, CloseReason::PingTimeout)]);

    // Same, but the pong arrives at 499: alive, next ping at 799.
    let mut h = H::new(config());
    let (_, sid, _) = h.open_polling(0);
    assert!(h.tick(300).is_empty());
    let g = h.conn();
    assert_eq!(h.get(450, g, &poll_url(&sid)).response(g).text(), "2");
    let p = h.conn();
    assert_eq!(
        h.post(499, p, &poll_url(&sid), b"3").response(p).text(),
        "ok"
    );
    assert!(h.tick(500).closes().is_empty());
    assert_eq!(h.eng.session_count(), 1);
    let g = h.conn();
    assert!(h.get(510, g, &poll_url(&sid)).is_empty());
    assert!(h.tick(798).is_empty());
    assert_eq!(h.tick(799).response(g).text(), "2");
}

#[test]
fn pong_deadline_counts_from_when_the_ping_was_due_not_when_the_timer_fired() {
    // The ping is due at 300, but the loop only gets round to it at 420 (a busy machine): the
    // session still closes at 300 + 200 = 500, the pingInterval + pingTimeout the client was told.
    let mut h = H::new(config());
    let (session, _, c) = h.open_ws(0);
    assert!(h.tick(299).is_empty());
    assert_eq!(h.tick(420).frames(c), vec![text_frame("2")]);
    assert!(h.tick(499).is_empty());
    let out = h.tick(500);
    assert_eq!(out.closes(), vec![(session, CloseReason::PingTimeout)]);

    // A pong in time still resets it: the next ping is due one interval after the pong.
    let mut h = H::new(config());
    let (session, _, c) = h.open_ws(0);
    assert_eq!(h.tick(420).frames(c), vec![text_frame("2")]);
    assert!(h.ws(490, c, "3").is_empty());
    assert!(h.tick(500).closes().is_empty());
    assert!(h.tick(789).is_empty());
    assert_eq!(h.tick(790).frames(c), vec![text_frame("2")]);
    assert!(h.tick(989).is_empty());
    assert_eq!(
        h.tick(990).closes(),
        vec![(session, CloseReason::PingTimeout)]
    );

    // A timer so late that the deadline has already passed: the client has given up by its own
    // clock (pingInterval + pingTimeout since the last ping), so the session closes in that turn.
    let mut h = H::new(config());
    let (session, _, c) = h.open_ws(0);
    let out = h.tick(600);
    assert_eq!(out.frames(c), vec![text_frame("2"), Frame::Close(1000)]);
    assert_eq!(out.closes(), vec![(session, CloseReason::PingTimeout)]);
}

#[test]
fn heartbeat_over_websocket() {
    let mut h = H::new(config());
    let (session, _, c) = h.open_ws(0);
    assert!(h.tick(299).is_empty());
    assert_eq!(h.tick(300).frames(c), vec![text_frame("2")]);
    assert!(h.ws(400, c, "3").is_empty());
    assert!(h.tick(699).is_empty());
    assert_eq!(h.tick(700).frames(c), vec![text_frame("2")]);
    assert!(h.tick(899).is_empty());
    let out = h.tick(900);
    assert_eq!(out.closes(), vec![(session, CloseReason::PingTimeout)]);
    // The WebSocket gets a close frame (1000) and is closed.
    assert_eq!(out.frames(c), vec![Frame::Close(1000)]);
    assert!(out.close_out(c));
    // A late message on the dead connection only closes it again.
    let out = h.ws(901, c, "4late");
    assert!(out.messages().is_empty());
    assert!(out.close_out(c));
}

#[test]
fn pong_flood_does_not_grow_timers() {
    // Over WebSocket: 10 000 pongs, one per millisecond, over ten seconds.
    let mut h = H::new(config());
    let (session, _, c) = h.open_ws(0);
    let base = h.eng.timer_entries();
    assert!(base <= 1, "{base}");
    for i in 1..=10_000u64 {
        let out = h.ws(i, c, "3");
        assert!(out.is_empty());
        h.tick(i);
        assert!(
            h.eng.timer_entries() <= 2,
            "{} entries after {i} pongs",
            h.eng.timer_entries()
        );
    }
    assert_eq!(h.eng.session_count(), 1);
    // The session still works: with the pongs gone, a ping follows one interval later.
    assert_eq!(h.tick(10_300).frames(c), vec![text_frame("2")]);
    let _ = session;

    // Over polling: one POST of 5000 pongs, many times.
    let mut h = H::new(config());
    let (_, sid, _) = h.open_polling(0);
    let body: Vec<u8> = vec!["3"; 5000].join("\x1e").into_bytes();
    for i in 1..=200u64 {
        let p = h.conn();
        let out = h.post(i, p, &poll_url(&sid), &body);
        assert_eq!(out.response(p).text(), "ok");
        h.tick(i);
        assert!(h.eng.timer_entries() <= 2);
    }
    assert_eq!(h.eng.session_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Messages, polling
// ---------------------------------------------------------------------------------------------

#[test]
fn polling_messages_both_ways() {
    let mut h = H::new(config_slow_ping());
    let (session, sid, _) = h.open_polling(0);
    // Queued before the GET: every packet goes out in one payload, in order.
    assert!(h.text(1, session, "héllo").is_empty());
    assert!(h
        .send(2, session, Data::Binary(vec![0, 1, 2, 255]))
        .is_empty());
    assert!(h.text(3, session, "").is_empty());
    let g = h.conn();
    let out = h.get(4, g, &poll_url(&sid));
    let r = out.response(g);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=UTF-8"));
    assert_eq!(r.body, "4héllo\x1ebAAEC/w==\x1e4".as_bytes());
    // Buffer drained: the next GET parks and is answered by the next send.
    let g = h.conn();
    assert!(h.get(5, g, &poll_url(&sid)).is_empty());
    let out = h.send(6, session, Data::Binary(vec![]));
    assert_eq!(out.response(g).text(), "b");

    // Client → server: text, binary (padded and unpadded base64), noop.
    let p = h.conn();
    let out = h.post(
        7,
        p,
        &poll_url(&sid),
        b"4hello\x1ebAQID\x1e6\x1ebAQI=\x1ebAQI\x1e4",
    );
    let r = out.response(p);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=UTF-8"));
    assert_eq!(r.text(), "ok");
    assert_eq!(
        out.messages(),
        vec![
            (session, Data::Text("hello".into())),
            (session, Data::Binary(vec![1, 2, 3])),
            (session, Data::Binary(vec![1, 2])),
            (session, Data::Binary(vec![1, 2])),
            (session, Data::Text(String::new())),
        ]
    );
    // A bare `b` is an empty binary message, as in the reference parser.
    let p = h.conn();
    let out = h.post(8, p, &poll_url(&sid), b"b");
    assert_eq!(out.response(p).text(), "ok");
    assert_eq!(out.messages(), vec![(session, Data::Binary(vec![]))]);
    assert_eq!(h.eng.session_count(), 1);
}

#[test]
fn malformed_post_bodies_close_the_session() {
    for body in [
        &b"abc"[..],
        b"9",
        b"",
        b"4ok\x1e",
        b"\x1e\x1e\x1e",
        b"b!!!!",
        b"bAQID*",
        b"\xff\xfe",
        b"0{}",
        b"5",
        b"2",
    ] {
        let mut h = H::new(config_slow_ping());
        let (session, sid, _) = h.open_polling(0);
        let g = h.conn();
        assert!(h.get(1, g, &poll_url(&sid)).is_empty());
        let p = h.conn();
        let out = h.post(2, p, &poll_url(&sid), body);
        let closes = out.closes();
        assert_eq!(
            closes,
            vec![(session, CloseReason::ProtocolError)],
            "body {body:?}"
        );
        // Undecodable bodies get a 400; well-formed but illegal packets (open, upgrade, ping) are
        // acknowledged and then close the session.
        let status = out.response(p).status;
        assert!(status == 400 || status == 200, "body {body:?}: {status}");
        if std::str::from_utf8(body).is_err() || body.is_empty() || body.starts_with(b"a") {
            assert_eq!(status, 400, "body {body:?}");
        }
        assert_eq!(
            out.response(g).text(),
            "1",
            "the parked poll gets a close packet"
        );
        assert_eq!(h.eng.session_count(), 0);
    }
}

#[test]
fn record_separator_flood_fails_fast() {
    let mut h = H::new(config_slow_ping());
    let (session, sid, _) = h.open_polling(0);
    let body = vec![0x1e; 1_000_000];
    let p = h.conn();
    let out = h.post(1, p, &poll_url(&sid), &body);
    assert_eq!(out.response(p).status, 400);
    assert_eq!(out.closes(), vec![(session, CloseReason::ProtocolError)]);
    assert!(out.messages().is_empty());
}

#[test]
fn octet_stream_post_is_refused() {
    let mut h = H::new(config_slow_ping());
    let (session, sid, _) = h.open_polling(0);
    let p = h.conn();
    let out = h.post_typed(1, p, &poll_url(&sid), "application/octet-stream", b"4hello");
    let r = out.response(p);
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), error_json(3, "Bad request"));
    assert!(out.messages().is_empty());
    assert_eq!(out.closes(), vec![(session, CloseReason::ProtocolError)]);
}

#[test]
fn duplicate_get_closes_the_session() {
    let mut h = H::new(config_slow_ping());
    let (session, sid, _) = h.open_polling(0);
    let g1 = h.conn();
    assert!(h.get(1, g1, &poll_url(&sid)).is_empty());
    let g2 = h.conn();
    let out = h.get(2, g2, &poll_url(&sid));
    let r2 = out.response(g2);
    assert_eq!(r2.status, 400);
    assert_eq!(r2.text(), error_json(3, "Bad request"));
    let r1 = out.response(g1);
    assert_eq!(r1.status, 200);
    assert_eq!(r1.text(), "1");
    assert_eq!(out.closes(), vec![(session, CloseReason::ProtocolError)]);
    assert_eq!(h.eng.session_count(), 0);
    // The io layer later reports both connections closed: nothing more happens.
    assert!(h.closed(3, g1).is_empty());
    assert!(h.closed(3, g2).is_empty());
}

#[test]
fn aborted_get_closes_the_session() {
    let mut h = H::new(config_slow_ping());
    let (session, sid, _) = h.open_polling(0);
    let g = h.conn();
    assert!(h.get(1, g, &poll_url(&sid)).is_empty());
    let out = h.closed(2, g);
    assert_eq!(out.closes(), vec![(session, CloseReason::TransportClose)]);
    assert!(!out.touches(g), "nothing is written to a closed connection");
    assert_eq!(h.eng.session_count(), 0);
    // A closed connection that served an answered poll does not affect a session.
    let (_, sid, _) = h.open_polling(3);
    let g = h.conn();
    assert!(h.get(4, g, &poll_url(&sid)).is_empty());
    let p = h.conn();
    let out = h.post(5, p, &poll_url(&sid), b"6");
    assert_eq!(out.response(p).text(), "ok");
    assert!(h.closed(6, p).is_empty());
    assert_eq!(h.eng.session_count(), 1);
}

#[test]
fn client_close_via_post() {
    let mut h = H::new(config_slow_ping());
    let (session, sid, _) = h.open_polling(0);
    let g = h.conn();
    assert!(h.get(1, g, &poll_url(&sid)).is_empty());
    let p = h.conn();
    let out = h.post(2, p, &poll_url(&sid), b"1");
    assert_eq!(out.response(p).text(), "ok");
    // The parked poll ends cleanly with a noop (as the reference server does).
    assert_eq!(out.response(g).text(), "6");
    assert_eq!(out.closes(), vec![(session, CloseReason::ClientClose)]);
    assert_eq!(h.eng.session_count(), 0);
    // Packets after the close in the same payload are ignored.
    let (session, sid, _) = h.open_polling(3);
    let p = h.conn();
    let out = h.post(4, p, &poll_url(&sid), b"4a\x1e1\x1e4b");
    assert_eq!(out.messages(), vec![(session, Data::Text("a".into()))]);
    assert_eq!(out.closes(), vec![(session, CloseReason::ClientClose)]);
}

#[test]
fn a_poll_racing_the_clients_close_gets_one_noop_then_400() {
    // The client sends GET and POST `1` at once; the POST happens to be handled first.
    let mut h = H::new(config_slow_ping());
    let (_, sid, _) = h.open_polling(0);
    let p = h.conn();
    assert_eq!(h.post(1, p, &poll_url(&sid), b"1").response(p).text(), "ok");
    let g = h.conn();
    let racing = h.get(2, g, &poll_url(&sid)).response(g);
    assert_eq!((racing.status, racing.text()), (200, "6"));
    // Only once: the session is gone.
    let g2 = h.conn();
    assert_eq!(h.get(3, g2, &poll_url(&sid)).response(g2).status, 400);
    // And only within the grace period.
    let (_, sid, _) = h.open_polling(10);
    let p = h.conn();
    h.post(11, p, &poll_url(&sid), b"1");
    let g = h.conn();
    assert_eq!(h.get(11 + 1500, g, &poll_url(&sid)).response(g).status, 400);
}

#[test]
fn a_poll_racing_the_servers_close_gets_the_close_packet_once() {
    // The server closes a polling session while the client's next poll is on its way (with
    // several loops it may be moving between them): the poll hears the close, not an error.
    let mut h = H::new(config_slow_ping());
    let (session, sid, _) = h.open_polling(0);
    h.eng.handle_command(h.at(1), Command::EioClose { session });
    let g = h.conn();
    let racing = h.get(2, g, &poll_url(&sid)).response(g);
    assert_eq!((racing.status, racing.text()), (200, "1"));
    let g2 = h.conn();
    assert_eq!(h.get(3, g2, &poll_url(&sid)).response(g2).status, 400);
}

#[test]
fn server_close_and_shutdown() {
    let mut h = H::new(config_slow_ping());
    let (session, sid, _) = h.open_polling(0);
    let g = h.conn();
    assert!(h.get(1, g, &poll_url(&sid)).is_empty());
    h.eng.handle_command(h.at(2), Command::EioClose { session });
    let out = h.drain();
    assert_eq!(out.response(g).text(), "1");
    assert_eq!(out.closes(), vec![(session, CloseReason::ServerClose)]);
    // Commands for a closed session are ignored.
    assert!(h.text(3, session, "x").is_empty());

    let (s1, sid1, _) = h.open_polling(4);
    let (s2, _, w) = h.open_ws(5);
    let g = h.conn();
    assert!(h.get(6, g, &poll_url(&sid1)).is_empty());
    h.eng.shutdown(h.at(7));
    let out = h.drain();
    let mut closes = out.closes();
    closes.sort_by_key(|(s, _)| *s);
    assert_eq!(
        closes,
        vec![
            (s1, CloseReason::ServerShutdown),
            (s2, CloseReason::ServerShutdown)
        ]
    );
    assert_eq!(out.response(g).text(), "1");
    assert_eq!(out.frames(w), vec![Frame::Close(1000)]);
    assert!(out.close_out(w));
    assert_eq!(h.eng.session_count(), 0);
}

#[test]
fn buffer_cap_closes_with_buffer_full() {
    let mut h = H::new(Config {
        max_payload: 1000,
        max_outbound_bytes: 2000,
        ..config_slow_ping()
    });
    let (session, _, _) = h.open_polling(0);
    let msg = "x".repeat(500);
    // Each message costs 502 bytes in the buffer ("4", the text, a separator).
    for i in 1..=3 {
        let out = h.text(i, session, &msg);
        assert!(out.closes().is_empty(), "message {i}");
    }
    assert_eq!(h.eng.session_count(), 1);
    let out = h.text(4, session, &msg);
    assert_eq!(out.closes(), vec![(session, CloseReason::BufferFull)]);
    assert_eq!(h.eng.session_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// WebSocket sessions
// ---------------------------------------------------------------------------------------------

#[test]
fn websocket_messages_both_ways() {
    let mut h = H::new(config_slow_ping());
    let (session, _, c) = h.open_ws(0);
    let out = h.ws(1, c, "4hello");
    assert_eq!(out.messages(), vec![(session, Data::Text("hello".into()))]);
    let out = h.ws_bin(2, c, &[1, 2, 3]);
    assert_eq!(out.messages(), vec![(session, Data::Binary(vec![1, 2, 3]))]);
    assert!(h.ws(3, c, "6").is_empty());
    // Server → client: exact frame bytes.
    let out = h.text(4, session, "hello");
    assert_eq!(out.bytes(c), b"\x81\x064hello");
    let out = h.send(5, session, Data::Binary(vec![1, 2, 3]));
    assert_eq!(out.bytes(c), [0x82, 3, 1, 2, 3]);
    let big = "y".repeat(300);
    let out = h.text(6, session, &big);
    let mut expect = vec![0x81, 126, 1, 45, b'4'];
    expect.extend_from_slice(big.as_bytes());
    assert_eq!(out.bytes(c), expect);
    // Client close.
    let out = h.ws(7, c, "1");
    assert_eq!(out.closes(), vec![(session, CloseReason::ClientClose)]);
    assert!(out.close_out(c));
    assert_eq!(h.eng.session_count(), 0);
}

#[test]
fn websocket_malformed_packets_close() {
    for bad in ["abc", "9", "", "2", "0{}", "5", "bAQID"] {
        let mut h = H::new(config_slow_ping());
        let (session, _, c) = h.open_ws(0);
        let out = h.ws(1, c, bad);
        assert_eq!(
            out.closes(),
            vec![(session, CloseReason::ProtocolError)],
            "{bad:?}"
        );
        assert!(out.close_out(c), "{bad:?}");
        assert!(out.messages().is_empty());
    }
}

#[test]
fn websocket_transport_gone_closes_session() {
    let mut h = H::new(config_slow_ping());
    let (session, _, c) = h.open_ws(0);
    let out = h.closed(1, c);
    assert_eq!(out.closes(), vec![(session, CloseReason::TransportClose)]);
    assert!(!out.touches(c));
    assert!(h.closed(2, c).is_empty(), "idempotent");
}

// ---------------------------------------------------------------------------------------------
// Upgrade
// ---------------------------------------------------------------------------------------------

#[test]
fn upgrade_with_packets_in_flight() {
    let mut h = H::new(config());
    let (session, sid, _) = h.open_polling(0);
    let g1 = h.conn();
    assert!(h.get(10, g1, &poll_url(&sid)).is_empty());
    // The probe WebSocket connects: 101, nothing else yet, the parked poll stays parked.
    let w = h.conn();
    let out = h.ws_get(20, w, &ws_url(&sid));
    assert_eq!(out.response(w).status, 101);
    assert!(out.started_ws(w));
    assert!(!out.touches(g1));
    assert!(out.apps().is_empty());
    // Still polling: a message answers the parked poll.
    let out = h.text(30, session, "m1");
    assert_eq!(out.response(g1).text(), "4m1");
    let g2 = h.conn();
    assert!(h.get(40, g2, &poll_url(&sid)).is_empty());
    // The probe: `2probe` → `3probe`, and the parked poll is answered with a noop.
    let out = h.ws(50, w, "2probe");
    assert_eq!(out.frames(w), vec![text_frame("3probe")]);
    assert_eq!(out.response(g2).text(), "6");
    // Messages sent during the probe wait for the new transport.
    assert!(h.text(60, session, "m2").is_empty());
    assert!(h.send(61, session, Data::Binary(vec![1, 2, 3])).is_empty());
    // A poll during the upgrade gets a noop at once, never the buffered messages.
    let g3 = h.conn();
    assert_eq!(h.get(70, g3, &poll_url(&sid)).response(g3).text(), "6");
    // Client messages over polling are still accepted during the probe.
    let p = h.conn();
    let out = h.post(75, p, &poll_url(&sid), b"4up");
    assert_eq!(out.messages(), vec![(session, Data::Text("up".into()))]);
    // `5` completes it: the buffered packets arrive on the WebSocket, in order, none lost.
    let out = h.ws(80, w, "5");
    assert_eq!(
        out.frames(w),
        vec![text_frame("4m2"), Frame::Binary(vec![1, 2, 3])]
    );
    assert!(out.closes().is_empty());
    let out = h.text(90, session, "m4");
    assert_eq!(out.frames(w), vec![text_frame("4m4")]);
    // Polling is over for this session: a GET or POST is refused, the session stays.
    let g4 = h.conn();
    let out = h.get(100, g4, &poll_url(&sid));
    assert_eq!(out.response(g4).text(), error_json(3, "Bad request"));
    let p = h.conn();
    assert_eq!(
        h.post(101, p, &poll_url(&sid), b"4x").response(p).status,
        400
    );
    assert_eq!(h.eng.session_count(), 1);
    // Messages now come over the WebSocket; the heartbeat continues there.
    let out = h.ws(110, w, "4over ws");
    assert_eq!(
        out.messages(),
        vec![(session, Data::Text("over ws".into()))]
    );
    assert_eq!(h.tick(300).frames(w), vec![text_frame("2")]);
    // A second WebSocket for the upgraded sid is accepted, then closed; the session is untouched.
    let w2 = h.conn();
    let out = h.ws_get(310, w2, &ws_url(&sid));
    assert!(out.started_ws(w2));
    assert_eq!(out.frames(w2), vec![Frame::Close(1000)]);
    assert!(out.close_out(w2));
    assert!(!out.touches(w));
    assert_eq!(h.eng.session_count(), 1);
}

#[test]
fn upgrade_timeout_keeps_the_session_on_polling() {
    let mut h = H::new(config_slow_ping());
    let (session, sid, _) = h.open_polling(0);
    let w = h.conn();
    assert_eq!(h.ws_get(10, w, &ws_url(&sid)).response(w).status, 101);
    assert_eq!(h.ws(20, w, "2probe").frames(w), vec![text_frame("3probe")]);
    assert!(h.text(30, session, "x").is_empty());
    assert!(h.tick(1009).is_empty());
    // upgrade_timeout after the WebSocket request: the probe is dropped.
    let out = h.tick(1010);
    assert!(out.close_out(w));
    assert!(out.closes().is_empty(), "the session lives on");
    // Polling delivers what was buffered during the probe.
    let g = h.conn();
    assert_eq!(h.get(1020, g, &poll_url(&sid)).response(g).text(), "4x");
    // The dead probe can no longer complete the upgrade.
    let out = h.ws(1030, w, "5");
    assert!(out.close_out(w));
    assert!(out.closes().is_empty());
    let g = h.conn();
    assert!(h.get(1040, g, &poll_url(&sid)).is_empty(), "still polling");
    assert_eq!(h.text(1050, session, "y").response(g).text(), "4y");
    // A new upgrade can start.
    let w2 = h.conn();
    assert_eq!(h.ws_get(1060, w2, &ws_url(&sid)).response(w2).status, 101);
    assert_eq!(
        h.ws(1061, w2, "2probe").frames(w2),
        vec![text_frame("3probe")]
    );
    assert!(h.ws(1062, w2, "5").is_empty());
    assert_eq!(
        h.text(1063, session, "z").frames(w2),
        vec![text_frame("4z")]
    );
}

#[test]
fn upgrade_timeout_with_a_parked_poll_flushes_the_buffer() {
    let mut h = H::new(config_slow_ping());
    let (session, sid, _) = h.open_polling(0);
    let w = h.conn();
    assert_eq!(h.ws_get(10, w, &ws_url(&sid)).response(w).status, 101);
    // No probe at all; a poll parks and a message is queued.
    let g = h.conn();
    assert!(h.get(20, g, &poll_url(&sid)).is_empty());
    assert_eq!(h.text(30, session, "a").response(g).text(), "4a");
    let g = h.conn();
    assert!(h.get(40, g, &poll_url(&sid)).is_empty());
    let out = h.tick(1010);
    assert!(out.close_out(w));
    assert!(!out.touches(g));
    assert_eq!(h.text(1020, session, "b").response(g).text(), "4b");
}

#[test]
fn bad_probe_or_probe_conn_closed_keeps_polling() {
    for bad in ["2wrong", "4hello", "5", "3probe"] {
        let mut h = H::new(config_slow_ping());
        let (session, sid, _) = h.open_polling(0);
        let w = h.conn();
        assert_eq!(h.ws_get(1, w, &ws_url(&sid)).response(w).status, 101);
        let out = h.ws(2, w, bad);
        assert!(out.close_out(w), "{bad}");
        assert!(out.closes().is_empty(), "{bad}");
        assert!(out.messages().is_empty(), "{bad}");
        let g = h.conn();
        assert!(h.get(3, g, &poll_url(&sid)).is_empty());
        assert_eq!(h.text(4, session, "still").response(g).text(), "4still");
    }
    // The probe connection drops after `3probe`: the session stays on polling, buffer intact.
    let mut h = H::new(config_slow_ping());
    let (session, sid, _) = h.open_polling(0);
    let w = h.conn();
    h.ws_get(1, w, &ws_url(&sid));
    h.ws(2, w, "2probe");
    assert!(h.text(3, session, "kept").is_empty());
    let out = h.closed(4, w);
    assert!(out.closes().is_empty());
    let g = h.conn();
    assert_eq!(h.get(5, g, &poll_url(&sid)).response(g).text(), "4kept");
    assert_eq!(h.eng.session_count(), 1);
}

#[test]
fn session_close_during_upgrade_closes_the_probe() {
    let mut h = H::new(config_slow_ping());
    let (session, sid, _) = h.open_polling(0);
    let w = h.conn();
    h.ws_get(1, w, &ws_url(&sid));
    h.ws(2, w, "2probe");
    let p = h.conn();
    let out = h.post(3, p, &poll_url(&sid), b"1");
    assert_eq!(out.closes(), vec![(session, CloseReason::ClientClose)]);
    assert!(out.close_out(w));
    assert_eq!(h.eng.session_count(), 0);
    let out = h.ws(4, w, "5");
    assert!(out.closes().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Hostile sequences
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any POST body: either `ok` (and the session lives, unless it said close) or a 400 with the
    /// session closed; never a panic, never more messages than segments.
    #[test]
    fn any_post_body_is_answered(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut h = H::new(config_slow_ping());
        let (session, sid, _) = h.open_polling(0);
        let p = h.conn();
        let out = h.post(1, p, &poll_url(&sid), &body);
        let r = out.response(p);
        let segments = body.split(|b| *b == 0x1e).count();
        prop_assert!(out.messages().len() <= segments);
        match r.status {
            200 => prop_assert_eq!(r.text(), "ok"),
            400 => prop_assert_eq!(out.closes(), vec![(session, CloseReason::ProtocolError)]),
            s => prop_assert!(false, "status {}", s),
        }
    }

    /// Text and binary messages round-trip through a polling payload unchanged.
    #[test]
    fn polling_payload_round_trip(
        msgs in proptest::collection::vec(
            prop_oneof![
                "[^\u{1e}]{0,20}".prop_map(Data::Text),
                proptest::collection::vec(any::<u8>(), 0..20).prop_map(Data::Binary),
            ],
            1..8,
        )
    ) {
        let mut h = H::new(config_slow_ping());
        let (session, sid, _) = h.open_polling(0);
        for m in &msgs {
            h.send(1, session, m.clone());
        }
        let g = h.conn();
        let body = h.get(2, g, &poll_url(&sid)).response(g).body;
        let decoded = crate::proto::eio::decode_payload(&body, 100).unwrap();
        let expect: Vec<_> = msgs.into_iter().map(crate::proto::eio::Packet::Message).collect();
        prop_assert_eq!(decoded, expect);
    }

    /// Random interleavings of inputs on one session never panic, and the session count and the
    /// timer heap stay bounded.
    #[test]
    fn random_inputs_keep_invariants(ops in proptest::collection::vec(0u8..12, 1..60)) {
        let mut h = H::new(config());
        let (session, sid, _) = h.open_polling(0);
        let mut t = 0;
        let mut ws: Option<ConnId> = None;
        let mut gets = Vec::new();
        for op in ops {
            t += 37;
            match op {
                0 => { let g = h.conn(); h.get(t, g, &poll_url(&sid)); gets.push(g); }
                1 => { let p = h.conn(); h.post(t, p, &poll_url(&sid), b"3"); }
                2 => { let p = h.conn(); h.post(t, p, &poll_url(&sid), b"4hi"); }
                3 => { h.text(t, session, "x"); }
                4 => { let w = h.conn(); h.ws_get(t, w, &ws_url(&sid)); ws = Some(w); }
                5 => { if let Some(w) = ws { h.ws(t, w, "2probe"); } }
                6 => { if let Some(w) = ws { h.ws(t, w, "5"); } }
                7 => { if let Some(w) = ws { h.ws(t, w, "3"); } }
                8 => { if let Some(g) = gets.pop() { h.closed(t, g); } }
                9 => { if let Some(w) = ws { h.closed(t, w); } }
                10 => { h.tick(t); }
                _ => { t += 500; h.tick(t); }
            }
            prop_assert!(h.eng.session_count() <= 1);
            prop_assert!(h.eng.timer_entries() <= 4, "{} timers", h.eng.timer_entries());
        }
    }
}
