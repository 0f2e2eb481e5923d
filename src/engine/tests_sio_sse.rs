//! Socket.IO and SSE engine scenarios on a simulated clock.
//!
//! A small harness plays the io layer: it builds requests with our own HTTP parser, feeds WebSocket
//! messages, collects every write per connection, decodes the (unmasked) server WebSocket frames
//! itself, parses SSE streams with [`SseParser`], and closes a connection (telling the engine) when
//! the engine asks for it, as io does once the queued bytes are written.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::test_support::{parse_frames, request, ws_upgrade_head, Frame, WS_ACCEPT};
use super::*;
use crate::proto::sio::placeholder;
use crate::proto::sse::{ParsedEvent, SseParser};
use proptest::prelude::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const SIO_WS: &str = "/socket.io/?EIO=4&transport=websocket";

fn test_config() -> Config {
    Config {
        // Far away, so that no ping frame interleaves with what a scenario asserts.
        ping_interval: Duration::from_secs(3600),
        ping_timeout: Duration::from_secs(3600),
        namespaces: vec!["/admin".into()],
        ..Config::default()
    }
}

/// The simulated io layer around one engine.
struct H {
    e: Engine,
    now: Instant,
    next_conn: ConnId,
    /// Every byte written per connection.
    out: HashMap<ConnId, Vec<u8>>,
    /// Every write, in order, with its chunk (to check that broadcasts share one allocation).
    log: Vec<(ConnId, Chunk)>,
    /// WebSocket connections: offset of the next unread frame.
    ws_pos: HashMap<ConnId, usize>,
    /// SSE streams: offset of the next unparsed byte and the stream's parser.
    sse: HashMap<ConnId, (usize, SseParser)>,
    closed: BTreeSet<ConnId>,
    done: HashMap<ConnId, bool>,
    /// Connections written to since the last `take_fresh`.
    fresh: BTreeSet<ConnId>,
    app: VecDeque<AppEvent>,
}

impl H {
    fn new() -> H {
        H::with(test_config())
    }

    fn with(cfg: Config) -> H {
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
        }
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
                match o {
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

    fn cmd(&mut self, c: Command) {
        self.e.handle_command(self.now, c);
        self.pump();
    }

    /// Moves the clock to `now + d`, firing every deadline on the way at its own instant.
    fn advance(&mut self, d: Duration) {
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
    fn close(&mut self, conn: ConnId) {
        assert!(self.closed.insert(conn), "conn {conn} already closed");
        self.e.handle_conn_closed(self.now, conn);
        self.pump();
    }

    fn is_closed(&self, conn: ConnId) -> bool {
        self.closed.contains(&conn)
    }

    fn send(&mut self, conn: ConnId, text: &str) {
        self.e
            .handle_ws_message(self.now, conn, WsMessage::Text(text.to_string()));
        self.pump();
    }

    fn send_bin(&mut self, conn: ConnId, b: &[u8]) {
        self.e
            .handle_ws_message(self.now, conn, WsMessage::Binary(b.to_vec()));
        self.pump();
    }

    /// New WebSocket frames on `conn` since the last call.
    fn frames(&mut self, conn: ConnId) -> Vec<Frame> {
        let buf = self.out.get(&conn).map(Vec::as_slice).unwrap_or(&[]);
        let pos = self.ws_pos.get_mut(&conn).expect("not a WebSocket");
        let frames = parse_frames(&buf[*pos..]);
        *pos = buf.len();
        frames
    }

    /// New frames, all of which must be text.
    fn texts(&mut self, conn: ConnId) -> Vec<String> {
        self.frames(conn)
            .into_iter()
            .map(|f| match f {
                Frame::Text(t) => t,
                other => panic!("expected a text frame, got {other:?}"),
            })
            .collect()
    }

    /// New SSE bytes on `conn` (also fed to its parser).
    fn sse_raw(&mut self, conn: ConnId) -> (Vec<u8>, Vec<ParsedEvent>) {
        let buf = self.out.get(&conn).map(Vec::as_slice).unwrap_or(&[]);
        let (pos, parser) = self.sse.get_mut(&conn).expect("not an SSE stream");
        let new = buf[*pos..].to_vec();
        *pos = buf.len();
        let evs = parser.feed(&new);
        assert_eq!(parser.error(), None);
        (new, evs)
    }

    /// New SSE events on `conn`, as an `EventSource` would fire them.
    fn sse_events(&mut self, conn: ConnId) -> Vec<ParsedEvent> {
        self.sse_raw(conn).1
    }

    fn take_fresh(&mut self) -> BTreeSet<ConnId> {
        std::mem::take(&mut self.fresh)
    }

    fn expect_app(&mut self) -> AppEvent {
        self.app.pop_front().expect("an application event")
    }

    /// The first event queued after position `from` (earlier ones stay for the test to check).
    fn app_after(&mut self, from: usize) -> AppEvent {
        self.app.remove(from).expect("an application event")
    }

    fn no_app(&mut self) {
        assert!(self.app.is_empty(), "unexpected app events: {:?}", self.app);
    }

    /// A WebSocket handshake on `target`; returns the conn and the Engine.IO sid.
    fn ws_open(&mut self, target: &str) -> (ConnId, String) {
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
    fn sio_join(&mut self, conn: ConnId, nsp: &str, identity: Option<Identity>) -> SocketId {
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
    fn sio_connect(&mut self, identity: Option<Identity>) -> (ConnId, SocketId) {
        let (conn, _) = self.ws_open(SIO_WS);
        let socket = self.sio_join(conn, "/", identity);
        (conn, socket)
    }

    /// A GET on the SSE path; returns the conn, the request id and the request info.
    fn sse_get(&mut self, target: &str, headers: &str) -> (ConnId, u64, Arc<RequestInfo>) {
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

    fn sse_accept(&mut self, conn: ConnId, request: u64, identity: Option<Identity>) -> StreamId {
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
    fn sse_open(
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

    fn bcast(&mut self, target: Target, transports: Transports, event: &str, data: &str) {
        self.cmd(Command::Broadcast {
            target,
            transports,
            event: Arc::from(event),
            data: Arc::from(data),
            reply: None,
        });
    }

    /// The SSE id of broadcast number `seq`.
    fn id(&self, seq: u64) -> String {
        format!("{}:{}", self.e.epoch, seq)
    }

    fn emit_ack(&mut self, socket: SocketId, event: &str, timeout: Duration) -> AckRx {
        let (tx, rx) = mpsc::channel();
        self.cmd(Command::SioEmit {
            socket,
            event: event.to_string(),
            args: vec![json!(1)],
            attachments: Vec::new(),
            ack: Some((timeout, AckReply::Channel(tx))),
        });
        rx
    }
}

type AckRx = mpsc::Receiver<Vec<AckResult>>;

fn ok(args: Vec<Value>) -> AckOutcome {
    AckOutcome::Ok {
        args,
        attachments: Vec::new(),
    }
}

fn one(socket: SocketId, outcome: AckOutcome) -> Vec<AckResult> {
    vec![AckResult { socket, outcome }]
}

/// A `SioEvent` as (socket, nsp, event, args, attachments, ack).
type EventParts = (
    SocketId,
    String,
    String,
    Vec<Value>,
    Vec<Vec<u8>>,
    Option<u64>,
);

fn sio_event(ev: AppEvent) -> EventParts {
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

fn data_of(evs: &[ParsedEvent]) -> Vec<&str> {
    evs.iter().map(|e| e.data.as_str()).collect()
}

// ---------------------------------------------------------------------------------------------
// Socket.IO
// ---------------------------------------------------------------------------------------------

#[test]
fn sio_connect_accepted_sends_sid_and_reports_identity() {
    let mut h = H::new();
    let (conn, eio_sid) = h.ws_open(SIO_WS);
    h.no_app();
    h.send(conn, "40");
    let (request, info) = match h.expect_app() {
        AppEvent::SioConnectRequest {
            request,
            nsp,
            auth,
            info,
        } => {
            assert_eq!(&*nsp, "/");
            // No CONNECT payload: the application sees `{}`, as socket.io's `handshake.auth`.
            assert_eq!(auth, json!({}));
            (request, info)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(info.path(), "/socket.io/");
    assert_eq!(info.query("EIO").as_deref(), Some("4"));
    h.no_app();
    let alice = Identity::new("acme", "alice");
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Ok(Some(alice.clone())),
    });
    let t = h.texts(conn);
    assert_eq!(t.len(), 1);
    let body: Value = serde_json::from_str(t[0].strip_prefix("40").unwrap()).unwrap();
    let sid = body["sid"].as_str().unwrap().to_string();
    assert_eq!(t[0], format!("40{{\"sid\":\"{sid}\"}}"));
    assert_eq!(sid.len(), 20);
    assert!(sid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_ne!(sid, eio_sid, "the Socket.IO id is not the Engine.IO id");
    let socket = match h.expect_app() {
        AppEvent::SioConnected {
            socket,
            nsp,
            sid: s,
            identity,
            auth,
        } => {
            assert_eq!(&*nsp, "/");
            assert_eq!(&*s, sid);
            assert_eq!(identity, Some(alice.clone()));
            assert_eq!(auth, json!({}));
            socket
        }
        other => panic!("{other:?}"),
    };
    h.no_app();
    let st = h.e.stats();
    assert_eq!(
        (
            st.sio_sockets,
            st.index_recipients,
            st.index_users,
            st.index_tenants
        ),
        (1, 1, 1, 1)
    );
    // A second CONNECT to the same namespace is ignored.
    h.send(conn, "40");
    h.no_app();
    assert!(h.frames(conn).is_empty());
    // The identity is indexed: a user broadcast reaches the socket.
    h.bcast(Target::User(alice), Transports::Both, "hello", r#"{"a":1}"#);
    assert_eq!(h.texts(conn), vec![r#"42["hello",{"a":1}]"#]);
    // And the socket can be addressed directly.
    h.cmd(Command::SioEmit {
        socket,
        event: "direct".into(),
        args: vec![json!("x"), json!(null)],
        attachments: Vec::new(),
        ack: None,
    });
    assert_eq!(h.texts(conn), vec![r#"42["direct","x",null]"#]);
}

#[test]
fn sio_connect_with_auth_to_custom_namespace() {
    let mut h = H::new();
    let (conn, _) = h.ws_open(SIO_WS);
    h.send(conn, r#"40/admin,{"token":"abc"}"#);
    let request = match h.expect_app() {
        AppEvent::SioConnectRequest {
            request, nsp, auth, ..
        } => {
            assert_eq!(&*nsp, "/admin");
            assert_eq!(auth, json!({"token": "abc"}));
            request
        }
        other => panic!("{other:?}"),
    };
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Ok(Some(Identity::user("root"))),
    });
    let t = h.texts(conn);
    assert_eq!(t.len(), 1);
    assert!(t[0].starts_with("40/admin,{\"sid\":\""), "{}", t[0]);
    match h.expect_app() {
        AppEvent::SioConnected { nsp, auth, .. } => {
            assert_eq!(&*nsp, "/admin");
            assert_eq!(auth, json!({"token": "abc"}));
        }
        other => panic!("{other:?}"),
    }
    // Only main-namespace sockets are broadcast recipients.
    let st = h.e.stats();
    assert_eq!((st.sio_sockets, st.index_recipients), (1, 0));
    h.bcast(Target::All, Transports::Both, "x", "1");
    assert!(h.frames(conn).is_empty());
}

#[test]
fn sio_connect_rejected_sends_connect_error_and_client_may_retry() {
    let mut h = H::new();
    let (conn, _) = h.ws_open(SIO_WS);
    h.send(conn, r#"40{"token":"bad"}"#);
    let AppEvent::SioConnectRequest { request, .. } = h.expect_app() else {
        panic!()
    };
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Err(Rejection::unauthorized("bad token").with_data(json!({"code": 42}))),
    });
    let t = h.texts(conn);
    assert_eq!(t.len(), 1);
    let body: Value = serde_json::from_str(t[0].strip_prefix("44").unwrap()).unwrap();
    assert_eq!(body, json!({"message": "bad token", "data": {"code": 42}}));
    h.no_app();
    assert!(!h.is_closed(conn));
    assert_eq!(h.e.stats().sio_sockets, 0);
    assert_eq!(h.e.stats().index_recipients, 0);
    // Without data: exactly `{"message":..}`.
    h.send(conn, "40/admin,");
    let AppEvent::SioConnectRequest { request, .. } = h.expect_app() else {
        panic!()
    };
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Err(Rejection::forbidden("nope")),
    });
    assert_eq!(h.texts(conn), vec![r#"44/admin,{"message":"nope"}"#]);
    // A decision for an already decided request does nothing.
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Ok(None),
    });
    assert!(h.frames(conn).is_empty());
    h.no_app();
    // The client may try again on the same connection.
    let s = h.sio_join(conn, "/", Some(Identity::user("bob")));
    assert_eq!(h.e.stats().sio_sockets, 1);
    h.send(conn, r#"42["after"]"#);
    assert_eq!(sio_event(h.expect_app()).0, s);
}

#[test]
fn sio_unknown_namespace_gets_invalid_namespace() {
    let mut h = H::new();
    let (conn, _) = h.ws_open(SIO_WS);
    h.send(conn, "40/random,");
    assert_eq!(
        h.texts(conn),
        vec![r#"44/random,{"message":"Invalid namespace"}"#]
    );
    h.no_app();
    assert!(!h.is_closed(conn));
    // Without the trailing comma, the same answer.
    h.send(conn, "40/random");
    assert_eq!(
        h.texts(conn),
        vec![r#"44/random,{"message":"Invalid namespace"}"#]
    );
    h.no_app();
    // The main namespace still works.
    h.sio_join(conn, "/", None);
}

#[test]
fn sio_connect_timeout_closes_sessions_without_a_namespace() {
    let cfg = Config {
        connect_timeout: Duration::from_secs(5),
        ..test_config()
    };
    let mut h = H::with(cfg);
    let (idle, _) = h.ws_open(SIO_WS);
    let (pending, _) = h.ws_open(SIO_WS);
    h.send(pending, "40");
    let AppEvent::SioConnectRequest { request, .. } = h.expect_app() else {
        panic!()
    };
    let (joined, _) = h.sio_connect(None);
    h.advance(Duration::from_millis(4999));
    assert!(!h.is_closed(idle) && !h.is_closed(pending) && !h.is_closed(joined));
    h.advance(Duration::from_millis(1));
    assert!(h.is_closed(idle) && h.is_closed(pending));
    assert_eq!(h.frames(idle), vec![Frame::Close(1000)]);
    assert_eq!(h.frames(pending), vec![Frame::Close(1000)]);
    assert!(!h.is_closed(joined));
    assert_eq!(h.e.stats().eio_sessions, 1);
    h.no_app();
    // A late decision for the closed session does nothing.
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Ok(None),
    });
    h.no_app();
    assert_eq!(h.e.stats().sio_sockets, 1);
    // Much later, the connected session is still there.
    h.advance(Duration::from_secs(60));
    assert!(!h.is_closed(joined));
}

#[test]
fn sio_events_reach_the_app_with_args_ack_and_attachments() {
    let mut h = H::new();
    let (conn, s) = h.sio_connect(Some(Identity::user("alice")));
    let a = h.sio_join(conn, "/admin", Some(Identity::user("alice")));

    h.send(conn, r#"42["chat","hi",{"a":[1,2]}]"#);
    assert_eq!(
        sio_event(h.expect_app()),
        (
            s,
            "/".into(),
            "chat".into(),
            vec![json!("hi"), json!({"a": [1, 2]})],
            vec![],
            None
        )
    );
    h.send(conn, r#"4217["question",1]"#);
    assert_eq!(
        sio_event(h.expect_app()),
        (
            s,
            "/".into(),
            "question".into(),
            vec![json!(1)],
            vec![],
            Some(17)
        )
    );
    // Binary: the text part waits for its attachment.
    h.send(
        conn,
        r#"451-["upload",{"_placeholder":true,"num":0},"name"]"#,
    );
    h.no_app();
    h.send_bin(conn, &[1, 2, 3]);
    assert_eq!(
        sio_event(h.expect_app()),
        (
            s,
            "/".into(),
            "upload".into(),
            vec![placeholder(0), json!("name")],
            vec![vec![1, 2, 3]],
            None
        )
    );
    // Two attachments, a namespace and an ack id; an empty attachment is fine.
    h.send(
        conn,
        r#"452-/admin,9["two",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]"#,
    );
    h.send_bin(conn, &[0xA]);
    h.no_app();
    h.send_bin(conn, &[]);
    assert_eq!(
        sio_event(h.expect_app()),
        (
            a,
            "/admin".into(),
            "two".into(),
            vec![placeholder(1), placeholder(0)],
            vec![vec![0xA], vec![]],
            Some(9)
        )
    );
    // An event for a namespace the client has not joined is ignored, not fatal.
    h.send(conn, r#"42/other,["x"]"#);
    h.no_app();
    assert!(!h.is_closed(conn));
    assert!(h.frames(conn).is_empty());
}

#[test]
fn sio_app_answers_client_acks_text_and_binary() {
    let mut h = H::new();
    let (conn, s) = h.sio_connect(None);
    let a = h.sio_join(conn, "/admin", None);
    h.cmd(Command::SioAck {
        socket: s,
        id: 17,
        args: vec![json!("ok"), json!(2)],
        attachments: vec![],
    });
    assert_eq!(h.texts(conn), vec![r#"4317["ok",2]"#]);
    h.cmd(Command::SioAck {
        socket: s,
        id: 0,
        args: vec![],
        attachments: vec![],
    });
    assert_eq!(h.texts(conn), vec!["430[]"]);
    h.cmd(Command::SioAck {
        socket: s,
        id: 18,
        args: vec![placeholder(0)],
        attachments: vec![vec![9, 9]],
    });
    assert_eq!(
        h.frames(conn),
        vec![
            Frame::Text(r#"461-18[{"_placeholder":true,"num":0}]"#.into()),
            Frame::Binary(vec![9, 9])
        ]
    );
    h.cmd(Command::SioAck {
        socket: a,
        id: 9,
        args: vec![json!("adm")],
        attachments: vec![],
    });
    assert_eq!(h.texts(conn), vec![r#"43/admin,9["adm"]"#]);
    // Server emit with an attachment goes out as BINARY_EVENT.
    h.cmd(Command::SioEmit {
        socket: s,
        event: "file".into(),
        args: vec![json!("f"), placeholder(0)],
        attachments: vec![vec![0, 255]],
        ack: None,
    });
    assert_eq!(
        h.frames(conn),
        vec![
            Frame::Text(r#"451-["file","f",{"_placeholder":true,"num":0}]"#.into()),
            Frame::Binary(vec![0, 255])
        ]
    );
    h.cmd(Command::SioEmit {
        socket: a,
        event: "adm".into(),
        args: vec![],
        attachments: vec![],
        ack: None,
    });
    assert_eq!(h.texts(conn), vec![r#"42/admin,["adm"]"#]);
    // An ack for a socket that is gone is dropped.
    h.cmd(Command::SioAck {
        socket: SocketId(999_999),
        id: 1,
        args: vec![],
        attachments: vec![],
    });
    assert!(h.frames(conn).is_empty());
}

#[test]
fn sio_server_ack_reply_is_ok_and_table_empties() {
    let mut h = H::new();
    let (conn, s) = h.sio_connect(None);
    let rx = h.emit_ack(s, "q", Duration::from_secs(5));
    assert_eq!(h.texts(conn), vec![r#"420["q",1]"#]);
    assert!(h.e.stats().pending_acks > 0);
    assert!(rx.try_recv().is_err());
    h.send(conn, r#"430["a",{"b":2}]"#);
    assert_eq!(
        rx.try_recv().unwrap(),
        one(s, ok(vec![json!("a"), json!({"b": 2})]))
    );
    assert_eq!(h.e.stats().pending_acks, 0);
    h.no_app();
    // A binary reply.
    let rx = h.emit_ack(s, "q", Duration::from_secs(5));
    assert_eq!(h.texts(conn), vec![r#"421["q",1]"#]);
    h.send(conn, r#"461-1[{"_placeholder":true,"num":0}]"#);
    assert!(rx.try_recv().is_err());
    h.send_bin(conn, &[7]);
    assert_eq!(
        rx.try_recv().unwrap(),
        one(
            s,
            AckOutcome::Ok {
                args: vec![placeholder(0)],
                attachments: vec![vec![7]],
            }
        )
    );
    assert_eq!(h.e.stats().pending_acks, 0);
    // The callback form reaches the application as AckComplete.
    let (tx, rx2) = mpsc::channel();
    h.cmd(Command::SioEmit {
        socket: s,
        event: "cb".into(),
        args: vec![],
        attachments: vec![],
        ack: Some((
            Duration::from_secs(5),
            AckReply::Callback(Box::new(move |r| tx.send(r).unwrap())),
        )),
    });
    assert_eq!(h.texts(conn), vec![r#"422["cb"]"#]);
    h.send(conn, "432[true]");
    match h.expect_app() {
        AppEvent::AckComplete { callback, results } => {
            assert_eq!(results, one(s, ok(vec![json!(true)])));
            (callback.0)(results);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rx2.try_recv().unwrap(), one(s, ok(vec![json!(true)])));
    assert_eq!(h.e.stats().pending_acks, 0);
    // In a custom namespace, ids are per socket and carry the namespace.
    let a = h.sio_join(conn, "/admin", None);
    let rx = h.emit_ack(a, "q", Duration::from_secs(5));
    assert_eq!(h.texts(conn), vec![r#"42/admin,0["q",1]"#]);
    h.send(conn, "430[]");
    assert!(
        rx.try_recv().is_err(),
        "an answer on `/` is not an answer on /admin"
    );
    h.send(conn, r#"43/admin,0["x"]"#);
    assert_eq!(rx.try_recv().unwrap(), one(a, ok(vec![json!("x")])));
    assert_eq!(h.e.stats().pending_acks, 0);
}

#[test]
fn sio_server_ack_times_out_and_table_empties() {
    let mut h = H::new();
    let (conn, s) = h.sio_connect(None);
    let rx = h.emit_ack(s, "q", Duration::from_secs(5));
    assert_eq!(h.texts(conn), vec![r#"420["q",1]"#]);
    h.advance(Duration::from_millis(4999));
    assert!(rx.try_recv().is_err());
    h.advance(Duration::from_millis(1));
    assert_eq!(rx.try_recv().unwrap(), one(s, AckOutcome::Timeout));
    assert_eq!(h.e.stats().pending_acks, 0);
    // A late answer is ignored and harmless.
    h.send(conn, r#"430["late"]"#);
    h.no_app();
    assert!(!h.is_closed(conn));
    assert!(rx.try_recv().is_err());
    h.send(conn, r#"42["alive"]"#);
    assert_eq!(sio_event(h.expect_app()).2, "alive");
}

#[test]
fn sio_server_ack_disconnect_mid_wait() {
    // Transport closed.
    let mut h = H::new();
    let (conn, s) = h.sio_connect(None);
    let rx = h.emit_ack(s, "q", Duration::from_secs(5));
    h.close(conn);
    assert_eq!(rx.try_recv().unwrap(), one(s, AckOutcome::Disconnected));
    assert_eq!(h.e.stats().pending_acks, 0);
    match h.expect_app() {
        AppEvent::SioDisconnected { socket, reason, .. } => {
            assert_eq!(socket, s);
            assert_eq!(reason, DisconnectReason::TransportClose);
        }
        other => panic!("{other:?}"),
    }
    // Later emits to the gone socket: Disconnected at once.
    let rx = h.emit_ack(s, "q", Duration::from_secs(5));
    assert_eq!(rx.try_recv().unwrap(), one(s, AckOutcome::Disconnected));
    h.advance(Duration::from_secs(10));
    assert!(rx.try_recv().is_err(), "exactly one answer");
    assert_eq!(h.e.stats().pending_acks, 0);

    // Client leaves the namespace.
    let (conn, s) = h.sio_connect(None);
    let rx = h.emit_ack(s, "q", Duration::from_secs(5));
    assert_eq!(h.texts(conn), vec![r#"420["q",1]"#]);
    h.send(conn, "41");
    assert_eq!(rx.try_recv().unwrap(), one(s, AckOutcome::Disconnected));
    // Server disconnects the socket.
    let s2 = h.sio_join(conn, "/", None);
    let rx = h.emit_ack(s2, "q", Duration::from_secs(5));
    assert_eq!(
        h.texts(conn),
        vec![r#"420["q",1]"#],
        "a new socket, new ack ids"
    );
    h.cmd(Command::SioDisconnect { socket: s2 });
    assert_eq!(rx.try_recv().unwrap(), one(s2, AckOutcome::Disconnected));
    assert_eq!(h.e.stats().pending_acks, 0);
    h.advance(Duration::from_secs(10));
    assert!(rx.try_recv().is_err());
}

#[test]
fn sio_acks_for_unknown_or_answered_ids_are_ignored() {
    let mut h = H::new();
    let (conn, s) = h.sio_connect(None);
    let a = h.sio_join(conn, "/admin", None);
    h.app.clear();
    let rx = h.emit_ack(s, "q", Duration::from_secs(5));
    h.texts(conn);
    // Unknown id, and the right id on the wrong namespace: ignored.
    h.send(conn, "4399[]");
    h.send(conn, "43/admin,0[]");
    h.send(conn, "4318446744073709551615[]");
    assert!(rx.try_recv().is_err());
    assert!(h.e.stats().pending_acks > 0);
    h.send(conn, "430[1]");
    assert_eq!(rx.try_recv().unwrap(), one(s, ok(vec![json!(1)])));
    // Already answered: ignored.
    h.send(conn, "430[2]");
    assert!(rx.try_recv().is_err());
    h.no_app();
    assert!(!h.is_closed(conn));
    assert_eq!(h.e.stats().pending_acks, 0);
    h.send(conn, r#"42/admin,["still"]"#);
    assert_eq!(sio_event(h.expect_app()).0, a);
    assert!(h.frames(conn).is_empty());
}

#[test]
fn sio_pending_ack_cap_overloads() {
    let cfg = Config {
        max_pending_acks: 2,
        ..test_config()
    };
    let mut h = H::with(cfg);
    let (conn, s) = h.sio_connect(None);
    let rx0 = h.emit_ack(s, "q", Duration::from_secs(5));
    let rx1 = h.emit_ack(s, "q", Duration::from_secs(5));
    let rx2 = h.emit_ack(s, "q", Duration::from_secs(5));
    assert_eq!(rx2.try_recv().unwrap(), one(s, AckOutcome::Overloaded));
    // Nothing was sent for the refused one.
    assert_eq!(h.texts(conn), vec![r#"420["q",1]"#, r#"421["q",1]"#]);
    // UserAck is capped the same way.
    let (conn_b, sb) = h.sio_connect(Some(Identity::user("u")));
    let _b0 = h.emit_ack(sb, "q", Duration::from_secs(5));
    let _b1 = h.emit_ack(sb, "q", Duration::from_secs(5));
    h.texts(conn_b);
    let (tx, rxu) = mpsc::channel();
    h.cmd(Command::UserAck {
        user: Identity::user("u"),
        event: "ua".into(),
        data: json!(0),
        timeout: Duration::from_secs(5),
        reply: AckReply::Channel(tx),
    });
    assert_eq!(rxu.try_recv().unwrap(), one(sb, AckOutcome::Overloaded));
    assert!(h.texts(conn_b).is_empty());
    // Answering one frees a slot.
    h.send(conn, "431[]");
    assert_eq!(rx1.try_recv().unwrap(), one(s, ok(vec![])));
    let rx3 = h.emit_ack(s, "q", Duration::from_secs(5));
    assert_eq!(h.texts(conn), vec![r#"422["q",1]"#]);
    h.advance(Duration::from_secs(5));
    assert_eq!(rx0.try_recv().unwrap(), one(s, AckOutcome::Timeout));
    assert_eq!(rx3.try_recv().unwrap(), one(s, AckOutcome::Timeout));
    assert_eq!(h.e.stats().pending_acks, 0);
}

#[test]
fn sio_client_disconnect_of_one_namespace_keeps_the_other() {
    let mut h = H::new();
    let (conn, s) = h.sio_connect(Some(Identity::user("alice")));
    let a = h.sio_join(conn, "/admin", Some(Identity::user("alice")));
    h.send(conn, "41/admin,");
    match h.expect_app() {
        AppEvent::SioDisconnected {
            socket,
            nsp,
            reason,
        } => {
            assert_eq!((socket, &*nsp), (a, "/admin"));
            assert_eq!(reason, DisconnectReason::ClientDisconnect);
        }
        other => panic!("{other:?}"),
    }
    h.no_app();
    assert!(!h.is_closed(conn));
    assert!(h.frames(conn).is_empty());
    assert_eq!(h.e.stats().sio_sockets, 1);
    h.send(conn, r#"42/admin,["gone"]"#);
    h.no_app();
    h.send(conn, r#"42["here"]"#);
    assert_eq!(sio_event(h.expect_app()).0, s);
    h.bcast(
        Target::User(Identity::user("alice")),
        Transports::Both,
        "b",
        "1",
    );
    assert_eq!(h.texts(conn), vec![r#"42["b",1]"#]);
    // And /admin can be joined again.
    let a2 = h.sio_join(conn, "/admin", None);
    assert_ne!(a2, a);
    // Leaving `/` keeps /admin and removes the index entry.
    h.send(conn, "41");
    assert!(matches!(
        h.expect_app(),
        AppEvent::SioDisconnected { socket, .. } if socket == s
    ));
    assert_eq!(h.e.stats().index_recipients, 0);
    h.send(conn, r#"42/admin,["x"]"#);
    assert_eq!(sio_event(h.expect_app()).0, a2);
}

#[test]
fn sio_server_disconnect_sends_41() {
    let mut h = H::new();
    let (conn, s) = h.sio_connect(Some(Identity::user("alice")));
    let a = h.sio_join(conn, "/admin", None);
    h.cmd(Command::SioDisconnect { socket: a });
    assert_eq!(h.texts(conn), vec!["41/admin,"]);
    match h.expect_app() {
        AppEvent::SioDisconnected { socket, reason, .. } => {
            assert_eq!(socket, a);
            assert_eq!(reason, DisconnectReason::ServerDisconnect);
        }
        other => panic!("{other:?}"),
    }
    h.cmd(Command::SioDisconnect { socket: s });
    assert_eq!(h.texts(conn), vec!["41"]);
    assert!(matches!(
        h.expect_app(),
        AppEvent::SioDisconnected { socket, reason: DisconnectReason::ServerDisconnect, .. } if socket == s
    ));
    // Idempotent.
    h.cmd(Command::SioDisconnect { socket: s });
    assert!(h.frames(conn).is_empty());
    h.no_app();
    let st = h.e.stats();
    assert_eq!(
        (st.sio_sockets, st.index_recipients, st.index_users),
        (0, 0, 0)
    );
    assert_eq!(st.eio_sessions, 1);
    h.bcast(Target::All, Transports::Both, "x", "1");
    assert!(h.frames(conn).is_empty());
    // Events for the left namespaces are ignored.
    h.send(conn, r#"42["x"]"#);
    h.no_app();
}

#[test]
fn sio_socket_rooms_reach_members_only() {
    let mut h = H::new();
    let (c1, s1) = h.sio_connect(None);
    let (c2, s2) = h.sio_connect(None);
    let (c3, _) = h.sio_connect(None);
    let a3 = h.sio_join(c3, "/admin", None);
    h.cmd(Command::SioJoin {
        socket: s1,
        room: "r".into(),
    });
    h.cmd(Command::SioJoin {
        socket: s1,
        room: "r".into(),
    });
    h.cmd(Command::SioJoin {
        socket: a3,
        room: "r".into(),
    });
    let emit = |nsp: &str, room: &str| Command::SioEmitToRoom {
        nsp: nsp.into(),
        room: room.into(),
        event: "ev".into(),
        args: vec![json!(1)],
    };
    h.take_fresh();
    h.cmd(emit("/", "r"));
    assert_eq!(h.take_fresh(), BTreeSet::from([c1]));
    assert_eq!(
        h.texts(c1),
        vec![r#"42["ev",1]"#],
        "once, though joined twice"
    );
    h.cmd(emit("/admin", "r"));
    assert_eq!(h.take_fresh(), BTreeSet::from([c3]));
    assert_eq!(h.texts(c3), vec![r#"42/admin,["ev",1]"#]);
    // One room model: in the main namespace a unified room broadcast reaches joined sockets too.
    h.bcast(Target::Room("r".into()), Transports::Both, "x", "1");
    assert_eq!(h.take_fresh(), BTreeSet::from([c1]));
    assert_eq!(h.texts(c1), vec![r#"42["x",1]"#]);
    // Leaving.
    h.cmd(Command::SioLeave {
        socket: s1,
        room: "r".into(),
    });
    h.cmd(emit("/", "r"));
    assert!(h.take_fresh().is_empty());
    // A member that disconnects is forgotten.
    h.cmd(Command::SioJoin {
        socket: s2,
        room: "q".into(),
    });
    h.close(c2);
    h.app.clear();
    h.take_fresh();
    h.cmd(emit("/", "q"));
    assert!(h.take_fresh().is_empty());
    h.cmd(Command::SioJoin {
        socket: s2,
        room: "q".into(),
    });
    h.cmd(emit("/", "q"));
    assert!(h.take_fresh().is_empty());
}

/// What a hostile client sends.
#[derive(Clone, Debug)]
enum Msg {
    T(String),
    B(Vec<u8>),
}

fn hostile_cases() -> Vec<(&'static str, Vec<Msg>)> {
    let t = |s: &str| Msg::T(s.to_string());
    let ph = |n: usize| format!(r#"{{"_placeholder":true,"num":{n}}}"#);
    let eleven: Vec<String> = (0..11).map(ph).collect();
    vec![
        (
            "placeholder num splice",
            vec![
                t(r#"451-["hello",{"_placeholder":true,"num":"splice"}]"#),
                Msg::B(vec![1]),
            ],
        ),
        (
            "placeholder num out of range",
            vec![
                t(r#"451-["hello",{"_placeholder":true,"num":1}]"#),
                Msg::B(vec![1]),
            ],
        ),
        (
            "placeholder num negative",
            vec![
                t(r#"451-["hello",{"_placeholder":true,"num":-1}]"#),
                Msg::B(vec![1]),
            ],
        ),
        (
            "placeholder num not an integer",
            vec![
                t(r#"451-["hello",{"_placeholder":true,"num":0.5}]"#),
                Msg::B(vec![1]),
            ],
        ),
        (
            "placeholder duplicated",
            vec![
                t(&format!(r#"452-["hello",{},{}]"#, ph(0), ph(0))),
                Msg::B(vec![1]),
                Msg::B(vec![2]),
            ],
        ),
        (
            "attachment count 999999999",
            vec![t(r#"45999999999-["hello"]"#)],
        ),
        (
            "attachment count 11",
            vec![t(&format!(r#"4511-["hello",{}]"#, eleven.join(",")))],
        ),
        ("event name object", vec![t(r#"42[{"toString":"x"}]"#)]),
        ("event name null", vec![t(r#"42[null,"x"]"#)]),
        ("event name number", vec![t("42[1]")]),
        ("reserved connect", vec![t(r#"42["connect"]"#)]),
        ("reserved connect_error", vec![t(r#"42["connect_error"]"#)]),
        ("reserved disconnect", vec![t(r#"42["disconnect"]"#)]),
        ("reserved disconnecting", vec![t(r#"42["disconnecting"]"#)]),
        ("reserved newListener", vec![t(r#"42["newListener"]"#)]),
        (
            "reserved removeListener",
            vec![t(r#"42["removeListener"]"#)],
        ),
        (
            "ack id beyond u64",
            vec![t(r#"4218446744073709551616["x"]"#)],
        ),
        (
            "ack id of 10000 digits",
            vec![t(&format!(r#"42{}["x"]"#, "1".repeat(10_000)))],
        ),
        (
            "ack reply id beyond u64",
            vec![t("4318446744073709551616[]")],
        ),
        (
            "1 MB namespace",
            vec![t(&format!("40/{},", "a".repeat(1_000_000)))],
        ),
        (
            "JSON nested 100000 deep",
            vec![t(&format!(
                r#"42["x",{}{}]"#,
                "[".repeat(100_000),
                "]".repeat(100_000)
            ))],
        ),
        ("event payload not an array", vec![t("42{}")]),
        ("event payload empty array", vec![t("42[]")]),
        ("event without payload", vec![t("42")]),
        ("garbage after type", vec![t(r#"42abc["x"]"#)]),
        ("socket.io type abc", vec![t("4abc")]),
        ("socket.io type 9", vec![t("49")]),
        ("engine.io abc", vec![t("abc")]),
        ("engine.io 9", vec![t("9")]),
        ("empty message", vec![t("")]),
        ("record separator", vec![t("\u{1e}")]),
        (
            "binary without a pending packet",
            vec![Msg::B(vec![1, 2, 3])],
        ),
        (
            "text while an attachment is expected",
            vec![
                t(r#"451-["x",{"_placeholder":true,"num":0}]"#),
                t(r#"42["y"]"#),
            ],
        ),
        ("client CONNECT_ERROR", vec![t(r#"44{"message":"x"}"#)]),
        ("ack without id", vec![t("43[]")]),
        ("ack payload not an array", vec![t(r#"430{"a":1}"#)]),
        ("disconnect with payload", vec![t(r#"41["x"]"#)]),
        (
            "connect with a string payload",
            vec![t(r#"40/admin,"str""#)],
        ),
        ("connect with an id", vec![t("401{}")]),
        ("namespace with control char", vec![t("40/a\u{1}b,")]),
    ]
}

#[test]
fn sio_hostile_inputs_close_only_the_offending_session() {
    for (name, msgs) in hostile_cases() {
        let mut h = H::new();
        let (good, gs) = h.sio_connect(Some(Identity::user("bob")));
        let (bad, bs) = h.sio_connect(Some(Identity::user("mallory")));
        h.app.clear();
        for m in &msgs {
            if h.is_closed(bad) {
                break;
            }
            match m {
                Msg::T(s) => h.send(bad, s),
                Msg::B(b) => h.send_bin(bad, b),
            }
        }
        assert!(h.is_closed(bad), "{name}: offender not closed");
        let frames = h.frames(bad);
        assert_eq!(
            frames.last(),
            Some(&Frame::Close(1000)),
            "{name}: {frames:?}"
        );
        let evs: Vec<AppEvent> = h.app.drain(..).collect();
        assert_eq!(evs.len(), 1, "{name}: {evs:?}");
        match &evs[0] {
            AppEvent::SioDisconnected {
                socket,
                nsp,
                reason,
            } => {
                assert_eq!((*socket, &**nsp), (bs, "/"), "{name}");
                assert_eq!(*reason, DisconnectReason::ParseError, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        let st = h.e.stats();
        assert_eq!((st.eio_sessions, st.sio_sockets), (1, 1), "{name}");
        assert_eq!(st.index_recipients, 1, "{name}");
        // The bystander is untouched.
        assert!(!h.is_closed(good), "{name}");
        assert!(h.frames(good).is_empty(), "{name}");
        h.send(good, r#"42["still",1]"#);
        let ev = sio_event(h.expect_app());
        assert_eq!((ev.0, ev.2.as_str()), (gs, "still"), "{name}");
        h.bcast(Target::All, Transports::Both, "n", "1");
        assert_eq!(h.texts(good), vec![r#"42["n",1]"#], "{name}");
        // Nothing more for the closed conn (pump asserts no write after close).
        h.send(bad, r#"42["x"]"#);
        h.no_app();
    }
}

// ---------------------------------------------------------------------------------------------
// Unified broadcast, rooms, tenants, acks
// ---------------------------------------------------------------------------------------------

#[test]
fn unified_room_joined_before_connect_survives_reconnect() {
    let mut h = H::new();
    let alice = Identity::new("t", "alice");
    let bob = Identity::new("t", "bob");
    h.cmd(Command::JoinRoom {
        user: alice.clone(),
        room: "vip".into(),
    });
    let (tx, rx) = mpsc::channel();
    h.cmd(Command::UserRooms {
        user: alice.clone(),
        reply: tx,
    });
    assert_eq!(rx.try_recv().unwrap(), vec!["vip".to_string()]);
    let (a_sio, _) = h.sio_connect(Some(alice.clone()));
    let (a_sse, _) = h.sse_open(Some(alice.clone()), None);
    let (b_sio, _) = h.sio_connect(Some(bob.clone()));
    let (b_sse, _) = h.sse_open(Some(bob.clone()), None);
    let (n_sio, _) = h.sio_connect(None);
    let (n_sse, _) = h.sse_open(None, None);
    h.app.clear();
    h.take_fresh();
    h.bcast(Target::Room("vip".into()), Transports::Both, "v", "1");
    assert_eq!(h.take_fresh(), BTreeSet::from([a_sio, a_sse]));
    assert_eq!(h.texts(a_sio), vec![r#"42["v",1]"#]);
    assert_eq!(data_of(&h.sse_events(a_sse)), vec!["1"]);
    for c in [b_sse, n_sse] {
        assert!(h.sse_events(c).is_empty());
    }
    for c in [b_sio, n_sio] {
        assert!(h.frames(c).is_empty());
    }
    // Reconnect on both transports: membership stays with the user.
    h.close(a_sio);
    h.close(a_sse);
    let (a_sio, _) = h.sio_connect(Some(alice.clone()));
    let (a_sse, _) = h.sse_open(Some(alice.clone()), None);
    h.app.clear();
    h.take_fresh();
    h.bcast(Target::Room("vip".into()), Transports::Both, "v", "2");
    assert_eq!(h.take_fresh(), BTreeSet::from([a_sio, a_sse]));
    assert_eq!(h.texts(a_sio), vec![r#"42["v",2]"#]);
    // Ids of different kinds never collide.
    h.bcast(Target::Room("alice".into()), Transports::Both, "v", "3");
    h.bcast(Target::Tenant("alice".into()), Transports::Both, "v", "3");
    h.bcast(Target::Tenant("vip".into()), Transports::Both, "v", "3");
    h.bcast(
        Target::User(Identity::new("t", "vip")),
        Transports::Both,
        "v",
        "3",
    );
    h.bcast(
        Target::User(Identity::new("vip", "alice")),
        Transports::Both,
        "v",
        "3",
    );
    assert!(h.take_fresh().is_empty());
    // Leaving stops delivery; an empty room is forgotten.
    h.cmd(Command::LeaveRoom {
        user: alice.clone(),
        room: "vip".into(),
    });
    h.bcast(Target::Room("vip".into()), Transports::Both, "v", "4");
    assert!(h.take_fresh().is_empty());
    assert_eq!(h.e.stats().index_rooms, 0);
}

#[test]
fn unified_same_user_id_in_two_tenants_never_crosses() {
    let mut h = H::new();
    let u1 = Identity::new("t1", "u");
    let u2 = Identity::new("t2", "u");
    let u0 = Identity::user("u");
    let mut conns = BTreeMap::new();
    for who in [&u1, &u2, &u0] {
        let (w, _) = h.sio_connect(Some(who.clone()));
        let (s, _) = h.sse_open(Some(who.clone()), None);
        conns.insert(who.tenant.clone(), BTreeSet::from([w, s]));
    }
    h.app.clear();
    let st = h.e.stats();
    assert_eq!((st.index_users, st.index_tenants), (3, 3));
    h.take_fresh();
    h.bcast(Target::User(u1.clone()), Transports::Both, "e", "1");
    assert_eq!(h.take_fresh(), conns["t1"]);
    h.bcast(Target::User(u2.clone()), Transports::Both, "e", "2");
    assert_eq!(h.take_fresh(), conns["t2"]);
    h.bcast(Target::Tenant("t1".into()), Transports::Both, "e", "3");
    assert_eq!(h.take_fresh(), conns["t1"]);
    h.bcast(Target::Tenant("t2".into()), Transports::Both, "e", "4");
    assert_eq!(h.take_fresh(), conns["t2"]);
    h.bcast(Target::Tenant(String::new()), Transports::Both, "e", "5");
    assert_eq!(h.take_fresh(), conns[""]);
    h.bcast(Target::Tenant("t3".into()), Transports::Both, "e", "6");
    assert!(h.take_fresh().is_empty());
    h.cmd(Command::JoinRoom {
        user: u1.clone(),
        room: "r".into(),
    });
    h.bcast(Target::Room("r".into()), Transports::Both, "e", "7");
    assert_eq!(h.take_fresh(), conns["t1"]);
    let (tx, rx) = mpsc::channel();
    h.cmd(Command::UserRooms {
        user: u2.clone(),
        reply: tx,
    });
    assert!(rx.try_recv().unwrap().is_empty());
    h.bcast(Target::All, Transports::Both, "e", "8");
    assert_eq!(h.take_fresh().len(), 6);
    // UserAck in one tenant reaches only that tenant's socket.
    let (tx, _rx) = mpsc::channel();
    h.cmd(Command::UserAck {
        user: u2.clone(),
        event: "q".into(),
        data: json!(1),
        timeout: Duration::from_secs(5),
        reply: AckReply::Channel(tx),
    });
    let fresh = h.take_fresh();
    assert_eq!(fresh.len(), 1);
    assert!(conns["t2"].is_superset(&fresh));
}

#[test]
fn unified_user_ack_outcomes_ok_timeout_disconnected() {
    let mut h = H::new();
    let alice = Identity::new("t", "alice");
    let (ca, sa) = h.sio_connect(Some(alice.clone()));
    let (cb, sb) = h.sio_connect(Some(alice.clone()));
    let (cc, sc) = h.sio_connect(Some(alice.clone()));
    let (sse, _) = h.sse_open(Some(alice.clone()), None);
    let (other, _) = h.sio_connect(Some(Identity::new("t", "bob")));
    h.app.clear();
    h.take_fresh();
    let (tx, rx) = mpsc::channel();
    h.cmd(Command::UserAck {
        user: alice.clone(),
        event: "q".into(),
        data: json!({"n": 1}),
        timeout: Duration::from_secs(5),
        reply: AckReply::Channel(tx),
    });
    assert_eq!(h.take_fresh(), BTreeSet::from([ca, cb, cc]));
    for c in [ca, cb, cc] {
        assert_eq!(h.texts(c), vec![r#"420["q",{"n":1}]"#]);
    }
    assert!(h.sse_events(sse).is_empty());
    assert!(h.frames(other).is_empty());
    h.send(ca, r#"430["yes"]"#);
    h.close(cc);
    assert!(rx.try_recv().is_err(), "one socket is still silent");
    assert!(h.e.stats().pending_acks > 0);
    h.advance(Duration::from_secs(5));
    assert_eq!(
        rx.try_recv().unwrap(),
        vec![
            AckResult {
                socket: sa,
                outcome: ok(vec![json!("yes")]),
            },
            AckResult {
                socket: sb,
                outcome: AckOutcome::Timeout,
            },
            AckResult {
                socket: sc,
                outcome: AckOutcome::Disconnected,
            },
        ]
    );
    assert_eq!(h.e.stats().pending_acks, 0);
    h.send(cb, r#"430["late"]"#);
    assert!(rx.try_recv().is_err());
    assert!(!h.is_closed(cb));
    // Everyone answers: the result comes at once, before the timeout.
    let (tx, rx) = mpsc::channel();
    h.cmd(Command::UserAck {
        user: alice.clone(),
        event: "q".into(),
        data: json!(null),
        timeout: Duration::from_secs(5),
        reply: AckReply::Channel(tx),
    });
    assert_eq!(h.texts(ca), vec![r#"421["q",null]"#]);
    assert_eq!(h.texts(cb), vec![r#"421["q",null]"#]);
    h.send(cb, "431[2]");
    assert!(rx.try_recv().is_err());
    h.send(ca, "431[1]");
    assert_eq!(
        rx.try_recv().unwrap(),
        vec![
            AckResult {
                socket: sa,
                outcome: ok(vec![json!(1)]),
            },
            AckResult {
                socket: sb,
                outcome: ok(vec![json!(2)]),
            },
        ]
    );
    assert_eq!(h.e.stats().pending_acks, 0);
}

#[test]
fn unified_user_ack_without_sockets_answers_at_once() {
    let mut h = H::new();
    let alice = Identity::new("t", "alice");
    // An SSE stream does not count, nor does a socket in another namespace.
    let (_sse, _) = h.sse_open(Some(alice.clone()), None);
    let (conn, _) = h.ws_open(SIO_WS);
    h.sio_join(conn, "/admin", Some(alice.clone()));
    let (tx, rx) = mpsc::channel();
    h.cmd(Command::UserAck {
        user: alice.clone(),
        event: "q".into(),
        data: json!(1),
        timeout: Duration::from_secs(5),
        reply: AckReply::Channel(tx),
    });
    assert_eq!(rx.try_recv().unwrap(), Vec::<AckResult>::new());
    assert_eq!(h.e.stats().pending_acks, 0);
    assert!(h.frames(conn).is_empty());
    // Callback form: AckComplete with no results, at once.
    h.app.clear();
    h.cmd(Command::UserAck {
        user: Identity::user("nobody"),
        event: "q".into(),
        data: json!(1),
        timeout: Duration::from_secs(5),
        reply: AckReply::Callback(Box::new(|_| {})),
    });
    match h.expect_app() {
        AppEvent::AckComplete { results, .. } => assert!(results.is_empty()),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.e.stats().pending_acks, 0);
}

#[test]
fn unified_transport_filter_keeps_sse_and_socketio_apart() {
    let mut h = H::new();
    let alice = Identity::new("t", "alice");
    let (w, _) = h.sio_connect(Some(alice.clone()));
    let (s, _) = h.sse_open(Some(alice.clone()), None);
    h.take_fresh();
    for target in [
        Target::User(alice.clone()),
        Target::Tenant("t".into()),
        Target::All,
    ] {
        h.bcast(target.clone(), Transports::Sse, "e", "1");
        assert_eq!(h.take_fresh(), BTreeSet::from([s]), "{target:?}");
        h.bcast(target.clone(), Transports::SocketIo, "e", "2");
        assert_eq!(h.take_fresh(), BTreeSet::from([w]), "{target:?}");
        h.bcast(target.clone(), Transports::Both, "e", "3");
        assert_eq!(h.take_fresh(), BTreeSet::from([s, w]), "{target:?}");
    }
    h.cmd(Command::JoinRoom {
        user: alice.clone(),
        room: "r".into(),
    });
    h.bcast(Target::Room("r".into()), Transports::Sse, "e", "1");
    assert_eq!(h.take_fresh(), BTreeSet::from([s]));
    h.bcast(Target::Room("r".into()), Transports::SocketIo, "e", "2");
    assert_eq!(h.take_fresh(), BTreeSet::from([w]));
    assert_eq!(
        h.texts(w),
        vec![
            r#"42["e",2]"#,
            r#"42["e",3]"#,
            r#"42["e",2]"#,
            r#"42["e",3]"#,
            r#"42["e",2]"#,
            r#"42["e",3]"#,
            r#"42["e",2]"#
        ]
    );
    assert_eq!(
        data_of(&h.sse_events(s)),
        vec!["1", "3", "1", "3", "1", "3", "1"]
    );
}

#[test]
fn unified_broadcast_is_encoded_once() {
    let mut h = H::new();
    let (s1, _) = h.sse_open(Some(Identity::user("a")), None);
    let (s2, _) = h.sse_open(None, None);
    let (w1, _) = h.sio_connect(Some(Identity::user("c")));
    let (w2, _) = h.sio_connect(None);
    let start = h.log.len();
    h.bcast(Target::All, Transports::Both, "news", r#"{"n":1}"#);
    let writes = &h.log[start..];
    let of = |c: ConnId| -> Vec<&Chunk> {
        writes
            .iter()
            .filter(|(w, _)| *w == c)
            .map(|(_, ch)| ch)
            .collect()
    };
    let shared = |ch: &Chunk| -> Arc<[u8]> {
        match ch {
            Chunk::Shared(a) => a.clone(),
            other => panic!("expected a shared chunk, got {other:?}"),
        }
    };
    let (a1, a2) = (of(s1), of(s2));
    assert_eq!((a1.len(), a2.len()), (1, 1));
    let (f1, f2) = (shared(a1[0]), shared(a2[0]));
    assert!(Arc::ptr_eq(&f1, &f2), "one SSE frame for every stream");
    assert_eq!(
        &*f1,
        format!("event: news\nid: {}\ndata: {{\"n\":1}}\n\n", h.id(1)).as_bytes()
    );
    let (b1, b2) = (of(w1), of(w2));
    assert_eq!((b1.len(), b2.len()), (1, 1), "one chunk: the whole frame");
    let (p1, p2) = (shared(b1[0]), shared(b2[0]));
    assert!(
        Arc::ptr_eq(&p1, &p2),
        "one WebSocket frame for every socket"
    );
    let payload = br#"42["news",{"n":1}]"#;
    assert_eq!(&p1[..2], &[0x81, payload.len() as u8]);
    assert_eq!(&p1[2..], payload);
    // Replaying it shares the same bytes too.
    h.close(s2);
    let start = h.log.len();
    let (s3, _) = h.sse_open(None, Some(&h.id(0)));
    let replay: Vec<&Chunk> = h.log[start..]
        .iter()
        .filter(|(c, _)| *c == s3)
        .map(|(_, ch)| ch)
        .collect();
    assert!(replay
        .iter()
        .any(|ch| matches!(ch, Chunk::Shared(a) if Arc::ptr_eq(a, &f1))));
}

// ---------------------------------------------------------------------------------------------
// SSE
// ---------------------------------------------------------------------------------------------

#[test]
fn sse_rejected_gets_401_or_403_and_no_stream() {
    for (rejection, status) in [
        (Rejection::unauthorized("no token"), "401 Unauthorized"),
        (Rejection::forbidden("no token"), "403 Forbidden"),
    ] {
        let mut h = H::new();
        let (conn, request, info) =
            h.sse_get("/events?token=bad", "Cookie: session=abc; theme=dark\r\n");
        assert_eq!(info.path(), "/events");
        assert_eq!(info.query("token").as_deref(), Some("bad"));
        assert_eq!(info.cookie("session").as_deref(), Some("abc"));
        assert!(!h.out.contains_key(&conn), "nothing before the decision");
        h.cmd(Command::SseDecision {
            request,
            decision: Err(rejection),
        });
        let resp = String::from_utf8(h.out[&conn].clone()).unwrap();
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{resp}"
        );
        assert!(resp.contains("Connection: close\r\n"));
        assert!(resp.ends_with("\r\n\r\nno token"));
        assert!(!resp.contains("text/event-stream"));
        assert_eq!(h.done.get(&conn), Some(&false));
        assert!(!h.sse.contains_key(&conn), "no StartStream");
        assert!(h.is_closed(conn));
        h.no_app();
        let st = h.e.stats();
        assert_eq!((st.sse_streams, st.index_recipients), (0, 0));
        h.take_fresh();
        h.bcast(Target::All, Transports::Both, "x", "1");
        assert!(h.take_fresh().is_empty());
    }
    // A client that leaves before the decision: the decision is dropped.
    let mut h = H::new();
    let (conn, request, _) = h.sse_get("/events", "");
    h.close(conn);
    h.cmd(Command::SseDecision {
        request,
        decision: Ok(Some(Identity::user("a"))),
    });
    assert!(!h.out.contains_key(&conn));
    h.no_app();
    assert_eq!(h.e.stats().sse_streams, 0);
}

#[test]
fn sse_accepted_stream_head_retry_and_ids() {
    let mut h = H::new();
    let (conn, request, _) = h.sse_get("/events", "");
    let alice = Identity::new("t", "alice");
    let stream = h.sse_accept(conn, request, Some(alice.clone()));
    let raw = String::from_utf8(h.out[&conn].clone()).unwrap();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
                Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n";
    assert!(raw.starts_with(head), "{raw}");
    let retry = raw[head.len()..]
        .strip_prefix("retry: ")
        .and_then(|r| r.strip_suffix("\n\n"))
        .unwrap();
    let retry: u64 = retry.parse().unwrap();
    assert!((3000..4000).contains(&retry), "retry {retry}");
    assert!(h.sse_events(conn).is_empty());
    assert_eq!(h.sse[&conn].1.retry(), Some(retry));
    let st = h.e.stats();
    assert_eq!((st.sse_streams, st.index_recipients), (1, 1));
    let _ = stream;
    h.bcast(
        Target::User(alice.clone()),
        Transports::Both,
        "a",
        r#"{"x":1}"#,
    );
    h.bcast(Target::Tenant("t".into()), Transports::Both, "b", "2");
    h.bcast(Target::All, Transports::Sse, "c", "[1,\r2,\r\n3,\n4]");
    let evs = h.sse_events(conn);
    assert_eq!(
        evs,
        vec![
            ParsedEvent {
                event: "a".into(),
                data: r#"{"x":1}"#.into(),
                last_event_id: h.id(1),
            },
            ParsedEvent {
                event: "b".into(),
                data: "2".into(),
                last_event_id: h.id(2),
            },
            ParsedEvent {
                event: "c".into(),
                data: "[1,\n2,\n3,\n4]".into(),
                last_event_id: h.id(3),
            },
        ]
    );
    // Exact bytes of the last one: data split on CR, CRLF and LF.
    let expect = format!(
        "event: c\nid: {}\ndata: [1,\ndata: 2,\ndata: 3,\ndata: 4]\n\n",
        h.id(3)
    );
    assert!(String::from_utf8(h.out[&conn].clone())
        .unwrap()
        .ends_with(&expect));
    // An event name with a line break is never written raw.
    h.bcast(Target::All, Transports::Sse, "bad\nname", "1");
    h.bcast(Target::All, Transports::Sse, "bad\rname", "1");
    h.bcast(Target::All, Transports::Sse, "bad\0name", "1");
    let (bytes, evs) = h.sse_raw(conn);
    assert!(bytes.is_empty() && evs.is_empty());
    // The epoch is the same for every id, the sequence counts broadcasts.
    let id = crate::proto::sse::parse_last_event_id(&h.id(3)).unwrap();
    assert_eq!(id.epoch, h.e.epoch);
}

#[test]
fn sse_resume_replays_exactly_the_missed_events_for_this_user() {
    let mut h = H::new();
    let alice = Identity::new("t1", "alice");
    let bob = Identity::new("t1", "bob");
    h.cmd(Command::JoinRoom {
        user: alice.clone(),
        room: "r2".into(),
    });
    h.cmd(Command::JoinRoom {
        user: bob.clone(),
        room: "r".into(),
    });
    let (bob_conn, _) = h.sse_open(Some(bob.clone()), None);
    let (a, _) = h.sse_open(Some(alice.clone()), None);
    h.bcast(Target::User(alice.clone()), Transports::Both, "e", "1");
    let evs = h.sse_events(a);
    assert_eq!(data_of(&evs), vec!["1"]);
    let last = evs[0].last_event_id.clone();
    assert_eq!(last, h.id(1));
    h.close(a);
    let b = Transports::Both;
    h.bcast(Target::User(alice.clone()), b, "e", "2");
    h.bcast(Target::User(bob.clone()), b, "e", "3");
    h.bcast(Target::Tenant("t2".into()), b, "e", "4");
    h.bcast(Target::Tenant("t1".into()), b, "e", "5");
    h.bcast(Target::Room("r".into()), b, "e", "6");
    h.bcast(Target::Room("r2".into()), b, "e", "7");
    h.bcast(Target::All, b, "e", "8");
    h.bcast(Target::User(alice.clone()), Transports::SocketIo, "e", "9");
    h.bcast(Target::User(Identity::new("t2", "alice")), b, "e", "10");
    h.bcast(Target::User(Identity::user("alice")), b, "e", "11");
    h.bcast(Target::User(alice.clone()), Transports::Sse, "e", "12");
    assert_eq!(
        data_of(&h.sse_events(bob_conn)),
        vec!["3", "5", "6", "8"],
        "the connected bystander got its own"
    );
    let (a, _) = h.sse_open(Some(alice.clone()), Some(&last));
    let evs = h.sse_events(a);
    assert_eq!(data_of(&evs), vec!["2", "5", "7", "8", "12"]);
    let ids: Vec<String> = evs.iter().map(|e| e.last_event_id.clone()).collect();
    assert_eq!(ids, vec![h.id(2), h.id(5), h.id(7), h.id(8), h.id(12)]);
    assert!(evs.iter().all(|e| e.event == "e"));
    // Live events continue after the replay.
    h.bcast(Target::User(alice.clone()), b, "e", "13");
    let evs = h.sse_events(a);
    assert_eq!(data_of(&evs), vec!["13"]);
    assert_eq!(evs[0].last_event_id, h.id(13));
    // Resuming from the newest id replays nothing; the query form works as the header does.
    let q = format!("/events?lastEventId={}", h.id(13));
    let (c, request, _) = h.sse_get(&q, "");
    h.sse_accept(c, request, Some(alice.clone()));
    assert!(h.sse_events(c).is_empty());
    let q = format!("/events?lastEventId={}", h.id(11));
    let (c, request, _) = h.sse_get(&q, "");
    h.sse_accept(c, request, Some(alice.clone()));
    assert_eq!(data_of(&h.sse_events(c)), vec!["12", "13"]);
    // Another user presenting alice's id gets only what was addressed to them.
    let (c, _) = h.sse_open(Some(Identity::new("t2", "eve")), Some(&last));
    assert_eq!(data_of(&h.sse_events(c)), vec!["4", "8"]);
    // An anonymous stream gets only `to_all`.
    let (c, _) = h.sse_open(None, Some(&last));
    assert_eq!(data_of(&h.sse_events(c)), vec!["8"]);
}

#[test]
fn sse_hostile_last_event_id_gets_a_reset() {
    let mut h = H::new();
    for n in 1..=3 {
        h.bcast(Target::All, Transports::Both, "e", &n.to_string());
    }
    let epoch = h.e.epoch;
    let cases: Vec<(String, bool, &str)> = vec![
        (format!("{}:1", epoch + 1), true, "unknown-epoch"),
        (format!("{}:1", epoch ^ 1), true, "unknown-epoch"),
        ("abc".into(), true, "invalid-id"),
        ("1".repeat(10_000), true, "invalid-id"),
        (format!("{epoch}:01"), true, "invalid-id"),
        (format!("{epoch}:4"), true, "invalid-id"),
        (format!("{epoch}:{}", u64::MAX), true, "invalid-id"),
        (format!("{epoch}:1:2"), true, "invalid-id"),
        (format!("{epoch}:1%0D%0Aevent:%20x"), false, "invalid-id"),
        (format!("{epoch}:1%0A"), false, "invalid-id"),
        (format!("{epoch}:1%00"), false, "invalid-id"),
        ("%E2%80%A8".into(), false, "invalid-id"),
    ];
    for (id, as_header, reason) in cases {
        let (conn, request, _) = if as_header {
            h.sse_get("/events", &format!("Last-Event-ID: {id}\r\n"))
        } else {
            h.sse_get(&format!("/events?lastEventId={id}"), "")
        };
        h.sse_accept(conn, request, Some(Identity::user("a")));
        let evs = h.sse_events(conn);
        assert_eq!(
            evs,
            vec![ParsedEvent {
                event: RESET_EVENT.into(),
                data: format!("{{\"reason\":\"{reason}\"}}"),
                last_event_id: h.id(3),
            }],
            "Last-Event-ID {:?}",
            id.get(..40)
        );
        h.close(conn);
    }
    // The valid id gets a replay, not a reset.
    let (conn, _) = h.sse_open(Some(Identity::user("a")), Some(&h.id(1)));
    assert_eq!(data_of(&h.sse_events(conn)), vec!["2", "3"]);
}

#[test]
fn sse_history_expires_by_count() {
    let cfg = Config {
        sse_history_events: 3,
        ..test_config()
    };
    let mut h = H::with(cfg);
    let alice = Identity::user("alice");
    for n in 1..=6 {
        h.bcast(Target::All, Transports::Both, "e", &n.to_string());
    }
    assert_eq!(h.e.stats().sse_history, 3);
    let reset = |h: &mut H, conn| {
        let evs = h.sse_events(conn);
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert_eq!(evs[0].event, RESET_EVENT);
        assert_eq!(evs[0].data, r#"{"reason":"expired"}"#);
    };
    for stale in [1, 2] {
        let (c, _) = h.sse_open(Some(alice.clone()), Some(&h.id(stale)));
        reset(&mut h, c);
    }
    // From the newest evicted id, everything after it is still there.
    let (c, _) = h.sse_open(Some(alice.clone()), Some(&h.id(3)));
    assert_eq!(data_of(&h.sse_events(c)), vec!["4", "5", "6"]);
    let (c, _) = h.sse_open(Some(alice.clone()), Some(&h.id(5)));
    assert_eq!(data_of(&h.sse_events(c)), vec!["6"]);
    // No history at all: any gap is a reset.
    let cfg = Config {
        sse_history_events: 0,
        ..test_config()
    };
    let mut h = H::with(cfg);
    h.bcast(Target::All, Transports::Both, "e", "1");
    h.bcast(Target::All, Transports::Both, "e", "2");
    let (c, _) = h.sse_open(Some(alice.clone()), Some(&h.id(1)));
    reset(&mut h, c);
    let (c, _) = h.sse_open(Some(alice.clone()), Some(&h.id(2)));
    assert!(h.sse_events(c).is_empty());
}

fn age_config() -> Config {
    Config {
        sse_history_age: Duration::from_secs(60),
        ..test_config()
    }
}

#[test]
fn sse_history_expires_by_age_while_streams_are_open() {
    let mut h = H::with(age_config());
    let alice = Identity::user("alice");
    let (_bystander, _) = h.sse_open(None, None);
    let (a, _) = h.sse_open(Some(alice.clone()), None);
    h.bcast(Target::All, Transports::Both, "e", "1");
    let last = h.sse_events(a)[0].last_event_id.clone();
    h.close(a);
    h.advance(Duration::from_secs(1));
    h.bcast(Target::User(alice.clone()), Transports::Both, "e", "2");
    // Within the age: replayed.
    h.advance(Duration::from_secs(30));
    let (a, _) = h.sse_open(Some(alice.clone()), Some(&last));
    assert_eq!(data_of(&h.sse_events(a)), vec!["2"]);
    h.close(a);
    // Past the age: reset.
    h.advance(Duration::from_secs(60));
    assert_eq!(h.e.stats().sse_history, 0);
    let (a, _) = h.sse_open(Some(alice.clone()), Some(&last));
    let evs = h.sse_events(a);
    assert_eq!(data_of(&evs), vec![r#"{"reason":"expired"}"#]);
    assert_eq!(evs[0].event, RESET_EVENT);
}

#[test]
fn sse_history_expires_by_age_with_no_stream_open() {
    let mut h = H::with(age_config());
    let alice = Identity::user("alice");
    let (a, _) = h.sse_open(Some(alice.clone()), None);
    h.bcast(Target::All, Transports::Both, "e", "1");
    let last = h.sse_events(a)[0].last_event_id.clone();
    h.close(a);
    h.advance(Duration::from_secs(1));
    h.bcast(Target::User(alice.clone()), Transports::Both, "e", "2");
    h.advance(Duration::from_secs(120));
    let (a, _) = h.sse_open(Some(alice.clone()), Some(&last));
    let evs = h.sse_events(a);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].event, RESET_EVENT);
    assert_eq!(evs[0].data, r#"{"reason":"expired"}"#);
}

#[test]
fn sse_heartbeat_comment_every_interval() {
    let mut h = H::new();
    let (a, _) = h.sse_open(None, None);
    assert!(h.sse_raw(a).0.starts_with(b"retry: "));
    h.advance(Duration::from_millis(14_999));
    assert!(h.sse_raw(a).0.is_empty());
    h.advance(Duration::from_millis(1));
    let (bytes, evs) = h.sse_raw(a);
    assert_eq!(bytes, b":\n\n");
    assert!(evs.is_empty());
    assert_eq!(h.sse[&a].1.comments_seen(), 1);
    // A second stream shares the next beat's bytes.
    let (b, _) = h.sse_open(None, None);
    h.sse_raw(b);
    let start = h.log.len();
    h.advance(Duration::from_secs(15));
    assert_eq!(h.sse_raw(a).0, b":\n\n");
    assert_eq!(h.sse_raw(b).0, b":\n\n");
    let beats: Vec<&Chunk> = h.log[start..].iter().map(|(_, c)| c).collect();
    assert_eq!(beats.len(), 2);
    match (beats[0], beats[1]) {
        (Chunk::Shared(x), Chunk::Shared(y)) => assert!(Arc::ptr_eq(x, y)),
        other => panic!("{other:?}"),
    }
    // Socket.IO connections get no SSE heartbeat.
    let (w, _) = h.sio_connect(None);
    h.advance(Duration::from_secs(15));
    assert!(h.frames(w).is_empty());
    // With every stream closed, the timer goes quiet.
    h.close(a);
    h.close(b);
    h.take_fresh();
    h.advance(Duration::from_secs(45));
    assert!(h.take_fresh().is_empty());
    assert_eq!(h.e.stats().sse_streams, 0);
}

#[test]
fn sse_room_replay_follows_membership_at_send_time() {
    let mut h = H::new();
    let alice = Identity::new("t", "alice");
    let bob = Identity::new("t", "bob");
    let carol = Identity::new("t", "carol");
    h.cmd(Command::JoinRoom {
        user: alice.clone(),
        room: "r".into(),
    });
    h.cmd(Command::JoinRoom {
        user: carol.clone(),
        room: "r".into(),
    });
    h.cmd(Command::LeaveRoom {
        user: carol.clone(),
        room: "r".into(),
    });
    h.bcast(Target::All, Transports::Both, "e", "1");
    let last = h.id(1);
    h.bcast(Target::Room("r".into()), Transports::Both, "e", "2");
    h.cmd(Command::JoinRoom {
        user: bob.clone(),
        room: "r".into(),
    });
    h.bcast(Target::Room("r".into()), Transports::Both, "e", "3");
    h.cmd(Command::LeaveRoom {
        user: alice.clone(),
        room: "r".into(),
    });
    for (who, want) in [
        (&alice, vec!["2", "3"]),
        (&bob, vec!["3"]),
        (&carol, vec![]),
    ] {
        let (c, _) = h.sse_open(Some(who.clone()), Some(&last));
        assert_eq!(data_of(&h.sse_events(c)), want, "{who:?}");
    }
}

#[test]
fn sse_send_and_close() {
    let mut h = H::new();
    let alice = Identity::user("alice");
    let (a, stream) = h.sse_open(Some(alice.clone()), None);
    assert!(h.sse_raw(a).0.starts_with(b"retry: "));
    h.cmd(Command::SseSend {
        stream,
        event: Some("hello".into()),
        data: "a\nb".into(),
    });
    assert_eq!(h.sse_raw(a).0, b"event: hello\ndata: a\ndata: b\n\n");
    h.cmd(Command::SseSend {
        stream,
        event: None,
        data: "x\r\ny".into(),
    });
    let (bytes, evs) = h.sse_raw(a);
    assert_eq!(bytes, b"data: x\ndata: y\n\n");
    assert_eq!(evs[0].event, "message");
    // Names that would break the framing are refused, not written.
    for bad in ["x\ny", "x\ry", "x\0y", ""] {
        h.cmd(Command::SseSend {
            stream,
            event: Some(bad.into()),
            data: "1".into(),
        });
    }
    assert!(h.sse_raw(a).0.is_empty());
    // `retry` never comes from data.
    h.cmd(Command::SseSend {
        stream,
        event: None,
        data: "1\nretry: 1\n\nid: 9".into(),
    });
    let (_, evs) = h.sse_raw(a);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].data, "1\nretry: 1\n\nid: 9");
    assert!(h.sse[&a].1.retry().unwrap() >= 3000);
    // A direct send is not kept for replay.
    h.cmd(Command::SseClose { stream });
    assert!(h.is_closed(a));
    match h.expect_app() {
        AppEvent::SseClosed { stream: s } => assert_eq!(s, stream),
        other => panic!("{other:?}"),
    }
    let st = h.e.stats();
    assert_eq!(
        (st.sse_streams, st.index_recipients, st.sse_history),
        (0, 0, 0)
    );
    h.cmd(Command::SseSend {
        stream,
        event: None,
        data: "after".into(),
    });
    h.cmd(Command::SseClose { stream });
    h.no_app();
    h.take_fresh();
    h.bcast(Target::User(alice.clone()), Transports::Both, "e", "1");
    assert!(h.take_fresh().is_empty());
    let (b, _) = h.sse_open(Some(alice.clone()), Some(&h.id(0)));
    assert_eq!(data_of(&h.sse_events(b)), vec!["1"]);
}

// ---------------------------------------------------------------------------------------------
// Index property test
// ---------------------------------------------------------------------------------------------

const USERS: [&str; 3] = ["u0", "u1", "u2"];
const TENANTS: [&str; 2] = ["t0", "t1"];
const ROOMS: [&str; 3] = ["r0", "r1", "r9"];

#[derive(Clone, Debug)]
enum Op {
    Connect {
        sse: bool,
        who: Option<(usize, usize)>,
    },
    Disconnect(usize),
    ServerClose(usize),
    ClientLeave(usize),
    Reconnect(usize),
    Join(usize, usize, usize),
    Leave(usize, usize, usize),
    Broadcast {
        kind: usize,
        a: usize,
        t: usize,
        tr: usize,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), proptest::option::of((0..3usize, 0..2usize)))
            .prop_map(|(sse, who)| Op::Connect { sse, who }),
        1 => any::<usize>().prop_map(Op::Disconnect),
        1 => any::<usize>().prop_map(Op::ServerClose),
        1 => any::<usize>().prop_map(Op::ClientLeave),
        1 => any::<usize>().prop_map(Op::Reconnect),
        2 => (0..3usize, 0..2usize, 0..2usize).prop_map(|(u, t, r)| Op::Join(u, t, r)),
        1 => (0..3usize, 0..2usize, 0..3usize).prop_map(|(u, t, r)| Op::Leave(u, t, r)),
        4 => (0..4usize, 0..3usize, 0..2usize, 0..3usize)
            .prop_map(|(kind, a, t, tr)| Op::Broadcast { kind, a, t, tr }),
    ]
}

fn ident(u: usize, t: usize) -> Identity {
    Identity::new(TENANTS[t], USERS[u])
}

struct Live {
    conn: ConnId,
    sse: bool,
    who: Option<Identity>,
    stream: Option<StreamId>,
    socket: Option<SocketId>,
}

fn connect(h: &mut H, sse: bool, who: Option<Identity>) -> Live {
    let l = if sse {
        let (conn, s) = h.sse_open(who.clone(), None);
        Live {
            conn,
            sse,
            who,
            stream: Some(s),
            socket: None,
        }
    } else {
        let (conn, s) = h.sio_connect(who.clone());
        Live {
            conn,
            sse,
            who,
            stream: None,
            socket: Some(s),
        }
    };
    h.app.clear();
    l
}

fn model_reaches(
    l: &Live,
    target: &Target,
    tr: Transports,
    rooms: &BTreeMap<Identity, BTreeSet<String>>,
) -> bool {
    let kind_ok = match tr {
        Transports::Sse => l.sse,
        Transports::SocketIo => !l.sse,
        Transports::Both => true,
    };
    kind_ok
        && match target {
            Target::All => true,
            Target::User(i) => l.who.as_ref() == Some(i),
            Target::Tenant(t) => l.who.as_ref().is_some_and(|w| &w.tenant == t),
            Target::Room(r) => l
                .who
                .as_ref()
                .is_some_and(|w| rooms.get(w).is_some_and(|s| s.contains(r))),
        }
}

fn run_index_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut h = H::new();
    let mut live: Vec<Live> = Vec::new();
    // Socket.IO connections whose socket left `/` (the connection stays open).
    let mut idle: Vec<ConnId> = Vec::new();
    let mut rooms: BTreeMap<Identity, BTreeSet<String>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Connect { sse, who } => {
                let l = connect(&mut h, sse, who.map(|(u, t)| ident(u, t)));
                live.push(l);
            }
            Op::Disconnect(i) | Op::ClientLeave(i) | Op::ServerClose(i) | Op::Reconnect(i)
                if live.is_empty() =>
            {
                let _ = i;
            }
            Op::Disconnect(i) => {
                let l = live.remove(i % live.len());
                h.close(l.conn);
            }
            Op::Reconnect(i) => {
                let l = live.remove(i % live.len());
                h.close(l.conn);
                let n = connect(&mut h, l.sse, l.who);
                live.push(n);
            }
            Op::ClientLeave(i) => {
                let l = live.remove(i % live.len());
                if l.sse {
                    h.close(l.conn);
                } else {
                    h.send(l.conn, "41");
                    idle.push(l.conn);
                }
            }
            Op::ServerClose(i) => {
                let l = live.remove(i % live.len());
                match (l.stream, l.socket) {
                    (Some(stream), _) => {
                        h.cmd(Command::SseClose { stream });
                        prop_assert!(h.is_closed(l.conn));
                    }
                    (None, Some(socket)) => {
                        h.cmd(Command::SioDisconnect { socket });
                        idle.push(l.conn);
                    }
                    (None, None) => unreachable!(),
                }
            }
            Op::Join(u, t, r) => {
                h.cmd(Command::JoinRoom {
                    user: ident(u, t),
                    room: ROOMS[r].into(),
                });
                rooms
                    .entry(ident(u, t))
                    .or_default()
                    .insert(ROOMS[r].into());
            }
            Op::Leave(u, t, r) => {
                h.cmd(Command::LeaveRoom {
                    user: ident(u, t),
                    room: ROOMS[r].into(),
                });
                if let Some(s) = rooms.get_mut(&ident(u, t)) {
                    s.remove(ROOMS[r]);
                    if s.is_empty() {
                        rooms.remove(&ident(u, t));
                    }
                }
            }
            Op::Broadcast { kind, a, t, tr } => {
                let target = match kind {
                    0 => Target::User(ident(a, t)),
                    1 => Target::Tenant(["t0", "t1", "t9"][a].into()),
                    2 => Target::Room(ROOMS[a].into()),
                    _ => Target::All,
                };
                let tr = [Transports::Sse, Transports::SocketIo, Transports::Both][tr];
                let want: BTreeSet<ConnId> = live
                    .iter()
                    .filter(|l| model_reaches(l, &target, tr, &rooms))
                    .map(|l| l.conn)
                    .collect();
                h.take_fresh();
                h.bcast(target.clone(), tr, "e", "1");
                let got = h.take_fresh();
                prop_assert_eq!(got, want, "{:?} {:?}", target, tr);
            }
        }
        h.app.clear();
        let inv = h.e.index.check_invariants();
        prop_assert!(inv.is_ok(), "{:?}", inv);
        let users: BTreeSet<&Identity> = live
            .iter()
            .filter_map(|l| l.who.as_ref())
            .chain(rooms.keys())
            .collect();
        let tenants: BTreeSet<&str> = live
            .iter()
            .filter_map(|l| l.who.as_ref().map(|w| w.tenant.as_str()))
            .collect();
        let room_names: BTreeSet<&String> = rooms.values().flatten().collect();
        let st = h.e.stats();
        prop_assert_eq!(st.index_recipients, live.len());
        prop_assert_eq!(st.index_users, users.len());
        prop_assert_eq!(st.index_tenants, tenants.len());
        prop_assert_eq!(st.index_rooms, room_names.len());
        prop_assert_eq!(st.sse_streams, live.iter().filter(|l| l.sse).count());
        prop_assert_eq!(st.sio_sockets, live.iter().filter(|l| !l.sse).count());
    }
    for l in std::mem::take(&mut live) {
        h.close(l.conn);
    }
    for c in idle {
        h.close(c);
    }
    for (who, rs) in std::mem::take(&mut rooms) {
        for r in rs {
            h.cmd(Command::LeaveRoom {
                user: who.clone(),
                room: r,
            });
        }
    }
    let inv = h.e.index.check_invariants();
    prop_assert!(inv.is_ok(), "{:?}", inv);
    let st = h.e.stats();
    prop_assert_eq!(
        (
            st.index_recipients,
            st.index_users,
            st.index_tenants,
            st.index_rooms
        ),
        (0, 0, 0, 0)
    );
    prop_assert_eq!(
        (
            st.eio_sessions,
            st.sio_sockets,
            st.sse_streams,
            st.pending_acks
        ),
        (0, 0, 0, 0)
    );
    Ok(())
}

proptest! {
    // No regression file: this module owns no file outside itself.
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn index_matches_a_simple_model(ops in proptest::collection::vec(op_strategy(), 1..48)) {
        run_index_ops(ops)?;
    }
}
