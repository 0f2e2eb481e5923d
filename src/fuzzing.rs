//! Structured fuzzing of the whole engine, for `cargo fuzz` and the corpus replay under
//! `cargo test`. Not an API: hidden from the docs, not covered by semver.
//!
//! [`engine`] reads its input as a sequence of operations, on one engine or on two joined as
//! loops (one hub, commands routed as the server routes them, forwarded polling requests moving
//! their connection), with broadcasts to more than two connections handed over in two parts or
//! not (the first byte says which) — connections opened on every
//! transport, client messages (valid, hostile and raw), closes, application decisions and
//! commands, and time steps on a simulated clock — and checks after each one:
//! - nothing is written to a connection after it closed;
//! - a broadcast reaches only connections in its audience (each broadcast's event name is
//!   unique, so any connection whose bytes carry it received it);
//! - the index is consistent;
//!
//! and at the end, once every connection has closed and the clock has run past every deadline,
//! that the engine is empty again: no sessions, sockets, streams, pending acks or recipients.
// A fuzz driver: panicking on a broken invariant is its job, and its inputs are its own.
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, Recovery};
use crate::engine::{
    AckReply, AppEvent, Command, ConnId, Engine, Identity, Output, RandomSource, Request, Target,
    Transports, WsMessage,
};
use crate::proto::http::{parse_request_head, HeadLimits};

/// The identities connections may be given (two tenants share a user id on purpose).
const USERS: [(&str, &str); 4] = [("t0", "u0"), ("t0", "u1"), ("t1", "u0"), ("t1", "u2")];
const ROOMS: [&str; 3] = ["r0", "r1", "r2"];

/// Client messages worth trying, valid and hostile, besides raw bytes from the input.
/// `PID` stands for a CONNECT presenting a recovery `pid` some connection was given.
const MESSAGES: [&str; 25] = [
    "40",
    "PID",
    "40/admin,",
    "40{\"token\":1}",
    "41",
    "42[\"hello\",1]",
    "421[\"ask\",{}]",
    "430[\"answer\"]",
    "431[]",
    "451-[\"b\",{\"_placeholder\":true,\"num\":0}]",
    "451-[\"b\",{\"_placeholder\":true,\"num\":\"splice\"}]",
    "45999999999-[\"x\"]",
    "42[{\"toString\":\"x\"}]",
    "42[null,\"x\"]",
    "42[\"connect\"]",
    "4abc",
    "42abc[]",
    "2",
    "3",
    "2probe",
    "5",
    "6",
    "1",
    "9",
    "",
];

struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        let b = self.byte()?;
        items.get(usize::from(b) % items.len().max(1)).copied()
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = usize::from(self.byte().unwrap_or(0)) % (max + 1);
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head.to_vec()
    }
}

type SocketId = crate::engine::SocketId;
type Rooms = BTreeSet<&'static str>;

/// What the driver knows about a connection.
#[derive(Default)]
struct ConnModel {
    /// The identity its Socket.IO socket of `/` or its SSE stream was accepted with.
    identity: Option<Option<Identity>>,
    /// Its socket of `/`, once connected.
    socket: Option<SocketId>,
    /// Bytes written to it.
    written: Vec<u8>,
    /// How much of `written` the audience check has looked at.
    checked: usize,
    closed: bool,
}

/// A broadcast, with the membership the model knew when it was sent.
struct Sent {
    event: String,
    target: Target,
    user_rooms: BTreeMap<Identity, Rooms>,
    socket_rooms: BTreeMap<SocketId, Rooms>,
}

struct Driver {
    /// One engine per simulated loop, sharing a hub; commands reach them through `fanout`.
    engines: Vec<Engine>,
    cfg: Arc<Config>,
    hub: Arc<crate::engine::hub::Hub>,
    /// Which loop each connection is on (a forwarded polling request moves it).
    conn_loop: BTreeMap<ConnId, usize>,
    now: Instant,
    next_conn: ConnId,
    conns: BTreeMap<ConnId, ConnModel>,
    /// Pending application decisions: (is SSE, request id, the connection that asked).
    pending: Vec<(bool, u64, Option<ConnId>)>,
    /// The connection the current step acts on (application events are caused by it).
    acting: Option<ConnId>,
    user_rooms: BTreeMap<Identity, Rooms>,
    /// Rooms each socket of `/` joined itself (kept while it is parked: it may come back).
    socket_rooms: BTreeMap<SocketId, Rooms>,
    sent: Vec<Sent>,
    events: u64,
    /// How often an output was taken while a broadcast's second part was still waiting.
    outputs_between_parts: usize,
}

fn request(raw: &str, body: Vec<u8>) -> Option<Request> {
    let limits = HeadLimits {
        max_head_bytes: 1 << 16,
        max_headers: 64,
    };
    let (head, _) = parse_request_head(raw.as_bytes(), &limits).ok()?;
    Some(Request {
        head,
        body,
        remote: None,
    })
}

fn ws_head(target: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: f\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

impl Driver {
    fn new(recovery: bool, loops: usize) -> Driver {
        let random = |seed: u64| -> RandomSource {
            let mut state: u64 = 0x2545_F491_4F6C_DD1D ^ seed;
            Box::new(move |buf: &mut [u8]| {
                for b in buf.iter_mut() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    *b = state as u8;
                }
            })
        };
        let cfg = Config {
            namespaces: vec!["/admin".into()],
            ping_interval: Duration::from_millis(500),
            ping_timeout: Duration::from_millis(300),
            connect_timeout: Duration::from_secs(2),
            sse_history_events: 8,
            max_pending_acks: 4,
            max_rooms_per_user: 2,
            connection_state_recovery: recovery.then(|| Recovery {
                max_disconnection_duration: Duration::from_secs(3),
                ..Recovery::default()
            }),
            ..Config::default()
        };
        let cfg = Arc::new(cfg);
        let hub = Arc::new(crate::engine::hub::Hub::new(1, loops));
        Driver {
            engines: (0..loops)
                .map(|i| Engine::on_hub(cfg.clone(), random(i as u64), hub.clone(), i))
                .collect(),
            cfg,
            hub,
            conn_loop: BTreeMap::new(),
            now: Instant::now(),
            next_conn: 1,
            conns: BTreeMap::new(),
            pending: Vec::new(),
            acting: None,
            user_rooms: BTreeMap::new(),
            socket_rooms: BTreeMap::new(),
            sent: Vec::new(),
            events: 0,
            outputs_between_parts: 0,
        }
    }

    fn new_conn(&mut self) -> ConnId {
        let c = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(c, ConnModel::default());
        // New connections go to the loops in turn, as the accepting loop hands them out.
        self.conn_loop.insert(c, (c as usize) % self.engines.len());
        c
    }

    /// The engine of the loop `conn` is on.
    fn on(&mut self, conn: ConnId) -> &mut Engine {
        let lp = self.conn_loop.get(&conn).copied().unwrap_or(0);
        &mut self.engines[lp]
    }

    /// An application command, routed as the server's handle routes it; every loop then takes
    /// what it was sent.
    fn command(&mut self, cmd: Command) {
        let mut queues: Vec<Vec<Command>> = self.engines.iter().map(|_| Vec::new()).collect();
        let now = self.now;
        crate::engine::fanout::route(&self.hub, &self.cfg, &|| now, cmd, &mut |to, c| {
            queues[to].push(c)
        });
        for (lp, q) in queues.into_iter().enumerate() {
            for c in q {
                self.engines[lp].handle_command(self.now, c);
            }
        }
        self.pump();
    }

    /// Drains the engines, as io would, checking that no closed connection is written to.
    fn pump(&mut self) {
        for _ in 0..1_000_000 {
            if self.engines.iter().any(Engine::delivering_in_parts) {
                self.outputs_between_parts += 1;
            }
            let Some((lp, out)) = (0..self.engines.len())
                .find_map(|lp| self.engines[lp].poll_output().map(|o| (lp, o)))
            else {
                return;
            };
            match out {
                Output::Write { conn, chunk } | Output::WriteVolatile { conn, chunk } => {
                    assert_eq!(
                        self.conn_loop.get(&conn),
                        Some(&lp),
                        "a write from a loop the connection is not on"
                    );
                    let c = self.conns.entry(conn).or_default();
                    assert!(!c.closed, "a write to closed connection {conn}");
                    c.written.extend_from_slice(chunk.as_slice());
                }
                Output::Close { conn } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        if !c.closed {
                            c.closed = true;
                            self.engines[lp].handle_conn_closed(self.now, conn);
                        }
                    }
                }
                Output::ResponseDone { conn, keep_alive } => {
                    if !keep_alive {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            if !c.closed {
                                c.closed = true;
                                self.engines[lp].handle_conn_closed(self.now, conn);
                            }
                        }
                    }
                }
                Output::StartWebSocket { .. } | Output::StartStream { .. } => {}
                Output::App(ev) => self.app(ev),
                Output::Forward { conn, to, request } => {
                    // io moves the connection to that loop with its request.
                    assert!(
                        to < self.engines.len() && to != lp,
                        "forwarded to loop {to}"
                    );
                    self.conn_loop.insert(conn, to);
                    self.engines[to].handle_request(self.now, conn, *request);
                }
            }
        }
        panic!("the engines produced more than a million outputs in one step");
    }

    fn app(&mut self, ev: AppEvent) {
        let acting = self.acting;
        match ev {
            AppEvent::SioConnectRequest { request, .. } => {
                self.pending.push((false, request, acting));
            }
            AppEvent::SseConnectRequest { request, .. } => {
                self.pending.push((true, request, acting));
            }
            AppEvent::SioConnected {
                socket,
                nsp,
                identity,
                recovered,
                ..
            } if nsp.as_ref() == "/" => {
                if !recovered {
                    self.socket_rooms.remove(&socket);
                }
                if let Some(m) = acting.and_then(|c| self.conns.get_mut(&c)) {
                    m.identity = Some(identity);
                    m.socket = Some(socket);
                }
            }
            AppEvent::SseOpened { identity, .. } => {
                if let Some(m) = acting.and_then(|c| self.conns.get_mut(&c)) {
                    m.identity = Some(identity);
                }
            }
            _ => {}
        }
    }

    /// Every recovery `pid` the server gave out so far (from the CONNECT replies written).
    fn pids(&self) -> Vec<String> {
        const KEY: &str = "\"pid\":\"";
        let mut out = Vec::new();
        for m in self.conns.values() {
            let text = String::from_utf8_lossy(&m.written);
            for (i, _) in text.match_indices(KEY) {
                let rest = text.get(i + KEY.len()..).unwrap_or("");
                if let Some(end) = rest.find('"') {
                    out.push(rest.get(..end).unwrap_or("").to_string());
                }
            }
        }
        out
    }

    fn live_conn(&mut self, inp: &mut Input<'_>) -> Option<ConnId> {
        let live: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, m)| !m.closed)
            .map(|(c, _)| *c)
            .collect();
        inp.pick(&live)
    }

    fn identity(inp: &mut Input<'_>) -> Option<Identity> {
        let i = usize::from(inp.byte().unwrap_or(0));
        USERS
            .get(i % (USERS.len() + 1))
            .map(|(t, u)| Identity::new(*t, *u))
    }

    fn step(&mut self, op: u8, inp: &mut Input<'_>) {
        self.acting = None;
        match op % 14 {
            0 => {
                let conn = self.new_conn();
                self.acting = Some(conn);
                if let Some(r) = request(&ws_head("/socket.io/?EIO=4&transport=websocket"), vec![])
                {
                    let now = self.now;
                    self.on(conn).handle_request(now, conn, r);
                }
            }
            1 => {
                let conn = self.new_conn();
                self.acting = Some(conn);
                let last = match inp.byte().unwrap_or(0) % 3 {
                    0 => String::new(),
                    1 => format!("Last-Event-ID: x:{}\r\n", inp.byte().unwrap_or(0)),
                    _ => "Last-Event-ID: garbage\r\n".into(),
                };
                let raw = format!("GET /events HTTP/1.1\r\nHost: f\r\n{last}\r\n");
                if let Some(r) = request(&raw, vec![]) {
                    let now = self.now;
                    self.on(conn).handle_request(now, conn, r);
                }
            }
            2 => {
                // A polling request: handshake, or GET/POST on some session id.
                let conn = self.new_conn();
                let body = inp.bytes(64);
                let raw = match inp.byte().unwrap_or(0) % 3 {
                    0 => "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: f\r\n\r\n"
                        .to_string(),
                    1 => {
                        "GET /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\nHost: f\r\n\r\n"
                            .to_string()
                    }
                    _ => format!(
                        "POST /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\nHost: f\r\n\
                         Content-Length: {}\r\n\r\n",
                        body.len()
                    ),
                };
                if let Some(r) = request(&raw, body) {
                    let now = self.now;
                    self.on(conn).handle_request(now, conn, r);
                }
            }
            3 => {
                if let Some(conn) = self.live_conn(inp) {
                    self.acting = Some(conn);
                    let text = inp.pick(&MESSAGES).unwrap_or("");
                    let text = if text == "PID" {
                        let pids = self.pids();
                        let i = usize::from(inp.byte().unwrap_or(0));
                        match pids.get(i % pids.len().max(1)) {
                            Some(pid) => format!("40{{\"pid\":\"{pid}\"}}"),
                            None => "40".to_string(),
                        }
                    } else {
                        text.to_string()
                    };
                    let now = self.now;
                    self.on(conn)
                        .handle_ws_message(now, conn, WsMessage::Text(&text));
                }
            }
            4 => {
                if let Some(conn) = self.live_conn(inp) {
                    self.acting = Some(conn);
                    let raw = inp.bytes(48);
                    let text;
                    let msg = if inp.byte().unwrap_or(0) % 2 == 0 {
                        WsMessage::Binary(&raw)
                    } else {
                        text = String::from_utf8_lossy(&raw).into_owned();
                        WsMessage::Text(&text)
                    };
                    let now = self.now;
                    self.on(conn).handle_ws_message(now, conn, msg);
                }
            }
            5 => {
                if let Some(conn) = self.live_conn(inp) {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.closed = true;
                    }
                    let now = self.now;
                    self.on(conn).handle_conn_closed(now, conn);
                }
            }
            6 => {
                let ms = u64::from(inp.byte().unwrap_or(0)) * 16;
                self.advance(Duration::from_millis(ms));
            }
            7 => {
                // An application decision for a pending connect.
                if self.pending.is_empty() {
                    return;
                }
                let i = usize::from(inp.byte().unwrap_or(0)) % self.pending.len();
                let (sse, request, conn) = self.pending.remove(i);
                self.acting = conn;
                let decision = if inp.byte().unwrap_or(0) % 4 != 0 {
                    Ok(Self::identity(inp))
                } else {
                    Err(crate::engine::Rejection::unauthorized("no"))
                };
                let cmd = if sse {
                    Command::SseDecision { request, decision }
                } else {
                    Command::SioConnectDecision { request, decision }
                };
                self.command(cmd);
                self.pump();
            }
            8 => {
                self.events += 1;
                let event = format!("ev{}x", self.events);
                let target = match inp.byte().unwrap_or(0) % 4 {
                    0 => Target::User(Self::identity(inp).unwrap_or(Identity::new("t0", "u0"))),
                    1 => Target::Tenant(
                        ["t0", "t1", "t9"][usize::from(inp.byte().unwrap_or(0)) % 3].into(),
                    ),
                    2 => Target::Room(inp.pick(&ROOMS).unwrap_or("r0").into()),
                    _ => Target::All,
                };
                let transports = [Transports::Sse, Transports::SocketIo, Transports::Both]
                    [usize::from(inp.byte().unwrap_or(0)) % 3];
                let volatile = inp.byte().unwrap_or(0) % 4 == 0;
                self.sent.push(Sent {
                    event: event.clone(),
                    target: target.clone(),
                    user_rooms: self.user_rooms.clone(),
                    socket_rooms: self.socket_rooms.clone(),
                });
                self.command(Command::Broadcast {
                    target,
                    transports,
                    event: Arc::from(event.as_str()),
                    data: Arc::from("1"),
                    volatile,
                    reply: None,
                });
            }
            9 => {
                let Some(user) = Self::identity(inp) else {
                    return;
                };
                let room = inp.pick(&ROOMS).unwrap_or("r0");
                let join = inp.byte().unwrap_or(0) % 2 == 0;
                if join {
                    let (tx, rx) = std::sync::mpsc::channel();
                    self.command(Command::JoinRoomReply {
                        user: user.clone(),
                        room: room.into(),
                        reply: tx,
                    });
                    if rx.try_recv().is_ok_and(|r| r.is_ok()) {
                        self.user_rooms.entry(user).or_default().insert(room);
                    }
                } else {
                    self.command(Command::LeaveRoom {
                        user: user.clone(),
                        room: room.into(),
                    });
                    if let Some(rs) = self.user_rooms.get_mut(&user) {
                        rs.remove(room);
                    }
                }
            }
            10 => {
                // A socket joins or leaves a room itself.
                let Some(conn) = self.live_conn(inp) else {
                    return;
                };
                let room = inp.pick(&ROOMS).unwrap_or("r0");
                let join = inp.byte().unwrap_or(0) % 2 == 0;
                let Some(socket) = self.conns.get(&conn).and_then(|m| m.socket) else {
                    return;
                };
                // Past the per-socket limit a join is dropped: the model only adds accepted ones.
                let rooms = self.socket_rooms.entry(socket).or_default();
                let cmd = if join {
                    if rooms.len() < 2 {
                        rooms.insert(room);
                    }
                    Command::SioJoin {
                        socket,
                        room: room.into(),
                        in_main: true,
                        hub_added: false,
                    }
                } else {
                    rooms.remove(room);
                    Command::SioLeave {
                        socket,
                        room: room.into(),
                        in_main: true,
                    }
                };
                self.command(cmd);
            }
            11 => {
                // Ask a user with an ack (callback form: its outcome comes back as an app event).
                let user = Self::identity(inp).unwrap_or(Identity::new("t0", "u0"));
                let ms = u64::from(inp.byte().unwrap_or(0)) * 8;
                self.command(Command::UserAck {
                    user,
                    event: "question".into(),
                    data: serde_json::Value::Null,
                    timeout: Duration::from_millis(ms),
                    reply: AckReply::Callback(Box::new(|_| {})),
                });
            }
            12 => {
                // A client answers one of the server's ack requests (or an unknown one).
                let Some(conn) = self.live_conn(inp) else {
                    return;
                };
                let id = u64::from(inp.byte().unwrap_or(0)) % 8;
                let text = format!("43{id}[true]");
                let now = self.now;
                self.on(conn)
                    .handle_ws_message(now, conn, WsMessage::Text(&text));
            }
            _ => {
                // A server-side disconnect or close of a socket.
                let Some(conn) = self.live_conn(inp) else {
                    return;
                };
                let Some(socket) = self.conns.get(&conn).and_then(|m| m.socket) else {
                    return;
                };
                let cmd = if inp.byte().unwrap_or(0) % 2 == 0 {
                    Command::SioDisconnect { socket }
                } else {
                    Command::SioCloseConnection { socket }
                };
                self.command(cmd);
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        for _ in 0..10_000 {
            let next = self.engines.iter().filter_map(Engine::next_deadline).min();
            match next {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    for e in &mut self.engines {
                        e.handle_timeout(self.now);
                    }
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = target;
        for e in &mut self.engines {
            e.handle_timeout(self.now);
        }
        self.pump();
    }

    /// What was written since the last check reached only connections of its audience: who the
    /// connection is now (a step changes it at most once, before anything it receives), against
    /// the membership of when the broadcast was sent (a replay to a recovered socket is judged by
    /// then).
    fn check_audiences(&mut self) {
        for (c, m) in self.conns.iter_mut() {
            let new = m.written.get(m.checked..).unwrap_or(&[]);
            m.checked = m.written.len();
            for sent in &self.sent {
                let needle = sent.event.as_bytes();
                if !new.windows(needle.len()).any(|w| w == needle) {
                    continue;
                }
                let who = m.identity.clone().flatten();
                let allowed = match &sent.target {
                    Target::All => m.identity.is_some(),
                    Target::User(u) => who.as_ref() == Some(u),
                    Target::Tenant(t) => who.as_ref().is_some_and(|w| &w.tenant == t),
                    Target::Room(r) => {
                        m.socket
                            .and_then(|s| sent.socket_rooms.get(&s))
                            .is_some_and(|rs| rs.contains(r.as_str()))
                            || who.as_ref().is_some_and(|w| {
                                sent.user_rooms
                                    .get(w)
                                    .is_some_and(|rs| rs.contains(r.as_str()))
                            })
                    }
                };
                assert!(
                    allowed,
                    "{} ({:?}) reached connection {c} ({:?}), outside its audience",
                    sent.event, sent.target, m.identity
                );
            }
        }
    }
}

/// The connection-level target: the request framing `io` applies to what it reads (heads,
/// bodies of exactly Content-Length bytes, pipelining, `Expect: 100-continue`, limits), fed in
/// two chunkings that must agree. No socket needed.
pub fn request_reader(data: &[u8]) {
    crate::io::request_reader::fuzz_request_reader(data);
}

/// The cluster's messages on Redis (`src/cluster/wire.rs`): any bytes decode without a panic,
/// what decodes has one wire form, and messages built from the input round-trip.
pub fn cluster_wire(data: &[u8]) {
    crate::cluster::wire::fuzz_check(data);
}

/// The Node socket.io Redis adapter's format (`src/cluster/adapter_wire.rs`): any bytes decode
/// without a panic under the broadcast, request and response decoders, and what decodes
/// round-trips (the `redis` feature: the codec uses its msgpack crate).
#[cfg(feature = "redis")]
pub fn adapter_wire(data: &[u8]) {
    crate::cluster::adapter_wire::fuzz_check(data);
}

/// The structured engine target: see the module docs. Panics on a broken invariant.
pub fn engine(data: &[u8]) {
    run(data);
}

/// What a run of the target did, so tests can tell an input that exercises something from one
/// that does nothing.
#[derive(Debug, PartialEq, Eq)]
struct Ran {
    /// Broadcasts that reached at least one connection.
    delivered: usize,
    /// Outputs taken while a broadcast's second part waited (it was delivered in two parts).
    between_parts: usize,
}

fn run(data: &[u8]) -> Ran {
    let mut inp = Input { data };
    // The first byte: recovery on (bit 0), two loops instead of one (bit 1), a broadcast to more
    // than two connections handed over in two parts, the first of one recipient (bit 2).
    let first = inp.byte().unwrap_or(0);
    let mut d = Driver::new(first & 1 == 1, 1 + usize::from(first >> 1 & 1));
    if first & 4 != 0 {
        for e in &mut d.engines {
            e.set_deliver_first(1);
        }
    }
    for _ in 0..512 {
        let Some(op) = inp.byte() else {
            break;
        };
        d.step(op, &mut inp);
        d.pump();
        d.acting = None;
        d.check_audiences();
        for e in &d.engines {
            if let Err(e) = e.check_index() {
                panic!("index invariant: {e}");
            }
        }
    }
    d.check_audiences();
    let delivered = d
        .sent
        .iter()
        .filter(|sent| {
            d.conns.values().any(|m| {
                m.written
                    .windows(sent.event.len())
                    .any(|w| w == sent.event.as_bytes())
            })
        })
        .count();
    // Everything closes; the clock runs past every deadline: the engine is empty again.
    let open: Vec<ConnId> = d
        .conns
        .iter()
        .filter(|(_, m)| !m.closed)
        .map(|(c, _)| *c)
        .collect();
    for c in open {
        if let Some(m) = d.conns.get_mut(&c) {
            m.closed = true;
        }
        let now = d.now;
        d.on(c).handle_conn_closed(now, c);
        d.pump();
    }
    for (user, rooms) in std::mem::take(&mut d.user_rooms) {
        for room in rooms {
            d.command(Command::LeaveRoom {
                user: user.clone(),
                room: room.into(),
            });
        }
    }
    d.advance(Duration::from_secs(3600));
    let all: Vec<crate::engine::Stats> = d.engines.iter().map(Engine::stats).collect();
    let s = crate::engine::Stats {
        eio_sessions: all.iter().map(|s| s.eio_sessions).sum(),
        sio_sockets: all.iter().map(|s| s.sio_sockets).sum(),
        sse_streams: all.iter().map(|s| s.sse_streams).sum(),
        pending_acks: all.iter().map(|s| s.pending_acks).sum(),
        index_recipients: all.iter().map(|s| s.index_recipients).sum(),
        index_users: all.iter().map(|s| s.index_users).sum(),
        index_tenants: all.iter().map(|s| s.index_tenants).sum(),
        index_rooms: all.iter().map(|s| s.index_rooms).sum(),
        parked_sockets: all.iter().map(|s| s.parked_sockets).max().unwrap_or(0),
        ..crate::engine::Stats::default()
    };
    assert_eq!(
        (s.eio_sessions, s.sio_sockets, s.sse_streams, s.pending_acks),
        (0, 0, 0, 0),
        "left behind after everything closed: {s:?}"
    );
    assert_eq!(
        (
            s.index_recipients,
            s.index_users,
            s.index_tenants,
            s.index_rooms,
            s.parked_sockets
        ),
        (0, 0, 0, 0, 0),
        "index left behind: {s:?}"
    );
    Ran {
        delivered,
        between_parts: d.outputs_between_parts,
    }
}

/// A hand-written input: two Socket.IO clients and an SSE stream of three users, joins, and a
/// broadcast of every kind. Also the first file of the corpus.
pub fn sample_input() -> Vec<u8> {
    let mut v = vec![1u8]; // recovery on
    for user in [0u8, 1, 2] {
        v.extend([0, 3, user, 0]); // open a WebSocket (the n-th live one); send "40" on it
        v.extend([7, 0, 1, user]); // accept as USERS[user]
    }
    v.extend([1, 0, 7, 0, 1, 0]); // an SSE stream, accepted as USERS[0]
    v.extend([9, 1, 0, 0]); // USERS[1] joins r0
    v.extend([10, 0, 1, 0]); // the first connection's socket joins r1
                             // A broadcast of each kind, both transports, not volatile: to USERS[1], to tenant t0, to
                             // r0, to everyone.
    v.extend([8, 0, 1, 2, 1, 8, 1, 0, 2, 1, 8, 2, 0, 2, 1, 8, 3, 2, 1]);
    v.extend([5, 1, 6, 10]); // the second connection closes (parked); time passes
    v.extend([8, 0, 1, 2, 1]); // a broadcast to USERS[1] during the gap
    v.extend([0, 3, 3, 1, 1]); // a new WebSocket (the 4th live connection) presents the 2nd pid
    v.extend([7, 0, 1, 1]); // accepted as USERS[1]: recovered, the gap replayed
    v
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[test]
    fn the_sample_input_delivers_and_recovers() {
        // Four broadcasts, and the one of the gap, which only a recovery delivers.
        assert_eq!(super::run(&super::sample_input()).delivered, 5);
        // Without recovery the gap's broadcast reaches nobody.
        let mut no_recovery = super::sample_input();
        no_recovery[0] = 0;
        assert_eq!(super::run(&no_recovery).delivered, 4);
        let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/engine/sample");
        assert_eq!(std::fs::read(corpus).ok(), Some(super::sample_input()));
    }

    #[test]
    fn the_sample_input_on_two_loops_recovers_across_them() {
        // Connections alternate between the loops: the socket parks on one and its client comes
        // back through the other; the gap's broadcast is replayed all the same.
        let mut two = super::sample_input();
        two[0] = 3;
        assert_eq!(super::run(&two).delivered, 5);
        let corpus = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/engine/sample_two_loops"
        );
        assert_eq!(std::fs::read(corpus).ok(), Some(two));
    }

    #[test]
    fn the_sample_input_in_parts_of_one_delivers_the_same() {
        // On one loop the broadcast to everyone (three sockets and a stream) goes in two parts,
        // with outputs taken between them; the same broadcasts arrive. On two loops each has
        // two of them, one part each.
        let mut parts = super::sample_input();
        parts[0] = 1 | 4;
        let ran = super::run(&parts);
        assert_eq!(ran.delivered, 5);
        assert!(ran.between_parts > 0, "{ran:?}");
        let corpus = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/engine/sample_in_parts"
        );
        assert_eq!(std::fs::read(corpus).ok(), Some(parts.clone()));
        parts[0] = 3 | 4;
        assert_eq!(super::run(&parts).delivered, 5);
        // Without bit 2 no broadcast is large enough for two parts.
        assert_eq!(super::run(&super::sample_input()).between_parts, 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        /// Random operation sequences keep every invariant of the engine target.
        #[test]
        fn random_operations_keep_the_engine_invariants_proptest(
            data in proptest::collection::vec(any::<u8>(), 0..2048)
        ) {
            super::engine(&data);
        }
    }
}
