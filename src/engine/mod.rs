//! The sans-IO engine: Engine.IO sessions (and, on top, Socket.IO sockets and SSE streams) as state
//! machines. It takes inputs stamped with `now` and produces outputs (bytes for a connection,
//! closes, application events) and its next deadline. No sockets, no clock, no threads: scenario
//! tests drive it with a simulated clock.

pub(crate) mod adapter;
mod eio;
pub(crate) mod fanout;
mod history;
pub(crate) mod hub;
pub(crate) mod id_map;
pub(crate) mod index;
mod recovery;
mod route;
pub(crate) mod session_log;
mod sio;
mod sse;
pub(crate) mod timers;

use crate::engine::id_map::IdMap;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::buf::Chunk;
use crate::config::Config;
use crate::proto::http::{self, RequestHead, Response};

pub use eio::{CloseReason, Data, SessionId};
use hub::{Hub, Prepared};
use index::{Audience, Index};
pub use index::{Identity, RecipientKind, RoomLimit};
#[cfg_attr(not(feature = "redis"), allow(unused_imports))]
pub(crate) use recovery::{hand_off, Handoff, HandoffAnswer};
pub(crate) use route::json_error;
#[cfg_attr(not(feature = "redis"), allow(unused_imports))]
pub(crate) use sio::AckMerge;
pub use sio::{
    AckCallback, AckOutcome, AckReply, AckResult, DisconnectReason, Rejection, SocketId,
};
pub use sse::{StreamId, RESET_EVENT};
use timers::{TimerKey, Timers};

use serde_json::Value;

/// The io layer's name for a TCP connection. Opaque here; io makes it unique over the connection's
/// lifetime (slot index plus generation), so a late output for a closed connection is harmless.
pub(crate) type ConnId = u64;

/// Fills a buffer with cryptographically secure random bytes (session ids). An input, so that the
/// engine stays deterministic under test.
pub(crate) type RandomSource = Box<dyn FnMut(&mut [u8]) + Send>;

/// A complete HTTP request as io read it: the head and a body of exactly Content-Length bytes.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) head: RequestHead,
    pub(crate) body: Vec<u8>,
    pub(crate) remote: Option<SocketAddr>,
}

/// The request that opened a connection, as the authentication hook sees it: headers, cookies,
/// query and remote address.
///
/// A Socket.IO session keeps it for the CONNECTs to come, so it is packed: the path, the query and
/// every header name and value in one string, with where each ends.
#[derive(Debug)]
pub struct RequestInfo {
    /// The path, the query, then each header's name and value, one after another.
    text: Box<str>,
    /// Where in `text` the path ends, the query ends, then each header name and value ends.
    ends: Box<[u32]>,
    remote: Option<SocketAddr>,
}

impl RequestInfo {
    /// Builds one (for tests of authentication hooks).
    pub fn new(head: RequestHead, remote: Option<SocketAddr>) -> RequestInfo {
        let mut text = String::with_capacity(
            head.path.len()
                + head.query.len()
                + head
                    .headers
                    .iter()
                    .map(|(n, v)| n.len() + v.len())
                    .sum::<usize>(),
        );
        let mut ends = Vec::with_capacity(2 + 2 * head.headers.len());
        let mut add = |s: &str| {
            text.push_str(s);
            // A head is bounded by `max_head_bytes`; past 4 GiB the lookups find nothing.
            ends.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
        };
        add(&head.path);
        add(&head.query);
        for (name, value) in &head.headers {
            add(name);
            add(value);
        }
        RequestInfo {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            remote,
        }
    }

    /// Piece `i` of `text` (see `ends`).
    fn piece(&self, i: usize) -> Option<&str> {
        let start = match i.checked_sub(1) {
            Some(prev) => *self.ends.get(prev)? as usize,
            None => 0,
        };
        let end = *self.ends.get(i)? as usize;
        self.text.get(start..end)
    }

    /// Every header, in order: (name in lower case, value).
    fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let count = self.ends.len().saturating_sub(2) / 2;
        (0..count).filter_map(|h| Some((self.piece(2 + 2 * h)?, self.piece(3 + 2 * h)?)))
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.piece(0).unwrap_or_default()
    }

    /// The first value of a header (name in lower case).
    pub fn header(&self, lower_name: &str) -> Option<&str> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(lower_name))
            .map(|(_, v)| v)
    }

    /// A cookie's value.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, h)| crate::proto::http::parse_cookies(h).into_iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// A query parameter, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        crate::proto::http::parse_query(self.piece(1).unwrap_or_default())
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The peer's address.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }
}

/// A WebSocket message from a client (tungstenite has already checked framing, masking, UTF-8 and
/// size limits), borrowed from where io read it: the engine copies only what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WsMessage<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// What the engine asks io to do.
#[derive(Debug)]
pub(crate) enum Output {
    /// Queue bytes on a connection.
    Write { conn: ConnId, chunk: Chunk },
    /// Queue bytes unless the connection's queue is past `volatile_low_water` (a volatile emit,
    /// dropped first under back-pressure).
    WriteVolatile { conn: ConnId, chunk: Chunk },
    /// The response to the request being served on `conn` is complete. io reads the next request
    /// (keep-alive) or closes once the bytes are written.
    ResponseDone { conn: ConnId, keep_alive: bool },
    /// From now on `conn` speaks WebSocket (the 101 response has been queued).
    StartWebSocket { conn: ConnId },
    /// From now on `conn` carries an endless response (SSE): no more requests are read from it.
    StartStream { conn: ConnId },
    /// Close `conn` once its queued bytes are written.
    Close { conn: ConnId },
    /// Something for the application.
    App(AppEvent),
    /// The request on `conn` belongs to a session of loop `to`: move the connection there, with
    /// the request (it is answered there, and the connection stays there).
    Forward {
        conn: ConnId,
        to: usize,
        request: Box<Request>,
    },
}

/// Application events handed to the dispatcher together.
pub(crate) type AppEvents = Vec<AppEvent>;

/// Events delivered to the application (off the io thread).
#[derive(Debug)]
pub(crate) enum AppEvent {
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
    /// A Socket.IO client asks to join a namespace: answer with `Command::SioConnectDecision`.
    SioConnectRequest {
        request: u64,
        nsp: Arc<str>,
        auth: Value,
        info: Arc<RequestInfo>,
    },
    /// A Socket.IO socket is connected.
    SioConnected {
        socket: SocketId,
        nsp: Arc<str>,
        sid: Arc<str>,
        identity: Option<Identity>,
        auth: Value,
        /// Restored by connection state recovery (same id, rooms, missed events replayed).
        recovered: bool,
    },
    /// A client event; `ack` is set when the client asked for an acknowledgement.
    SioEvent {
        socket: SocketId,
        nsp: Arc<str>,
        event: String,
        args: Vec<Value>,
        attachments: Vec<Vec<u8>>,
        ack: Option<u64>,
    },
    /// A socket left.
    SioDisconnected {
        socket: SocketId,
        nsp: Arc<str>,
        reason: DisconnectReason,
    },
    /// The outcomes of an ack request whose reply is a callback.
    AckComplete {
        callback: AckCallback,
        results: Vec<AckResult>,
    },
    /// An SSE request: answer with `Command::SseDecision`.
    SseConnectRequest {
        request: u64,
        info: Arc<RequestInfo>,
    },
    /// An SSE stream opened.
    SseOpened {
        stream: StreamId,
        identity: Option<Identity>,
    },
    /// An SSE stream ended.
    SseClosed { stream: StreamId },
    /// A request under an application route: answer with `Command::HttpRespond`.
    HttpRequest {
        request: u64,
        prefix: Arc<str>,
        head: RequestHead,
        body: Vec<u8>,
        remote: Option<SocketAddr>,
    },
}

/// Which transports a broadcast reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transports {
    Sse,
    SocketIo,
    Both,
}

impl Transports {
    pub(crate) fn kinds(self) -> &'static [RecipientKind] {
        match self {
            Transports::Sse => &[RecipientKind::Sse],
            Transports::SocketIo => &[RecipientKind::SocketIo],
            Transports::Both => &[RecipientKind::Sse, RecipientKind::SocketIo],
        }
    }
}

/// A broadcast's audience, as the application names it (for
/// [`crate::NotificationService::send_counted`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every connection of one user.
    User(Identity),
    /// Every connection of every user of one tenant.
    Tenant(String),
    /// The room's audience: its users' connections and its joined sockets.
    Room(String),
    /// Every connection.
    All,
}

/// What the application asks the engine to do (through the handle's channel).
#[derive(Debug)]
pub(crate) enum Command {
    /// Send a message on a raw Engine.IO session.
    EioSend {
        session: SessionId,
        data: Data,
    },
    /// Close a raw Engine.IO session.
    EioClose {
        session: SessionId,
    },
    /// The answer to `AppEvent::SioConnectRequest`.
    SioConnectDecision {
        request: u64,
        decision: Result<Option<Identity>, Rejection>,
    },
    /// The same with the answer of the cluster's other nodes to the `pid` the CONNECT presented.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    SioConnectHandoff {
        request: u64,
        decision: Result<Option<Identity>, Rejection>,
        handoff: Option<Box<recovery::Handoff>>,
        /// Or, when the node that had it died, the record it kept in the cluster.
        recorded: Option<Box<session_log::RecordedSession>>,
    },
    /// Emit to one socket, optionally with an ack.
    SioEmit {
        socket: SocketId,
        event: String,
        args: Vec<Value>,
        attachments: Vec<Vec<u8>>,
        ack: Option<(std::time::Duration, AckReply)>,
        /// Dropped first under back-pressure, never replayed (ignored with an ack).
        volatile: bool,
        /// The sequence number the sender took for it (recovery on: it may be replayed), so that
        /// every loop sees sequence numbers in order; `None`: the loop takes one if it needs it.
        seq: Option<u64>,
    },
    /// Answer a client's ack request.
    SioAck {
        socket: SocketId,
        id: u64,
        args: Vec<Value>,
        attachments: Vec<Vec<u8>>,
    },
    /// Disconnect one socket from its namespace.
    SioDisconnect {
        socket: SocketId,
    },
    /// Close the whole connection under a socket (every namespace; the client will reconnect).
    SioCloseConnection {
        socket: SocketId,
    },

    /// Per-socket room membership (in the socket's namespace). `in_main`: the socket is of `/`
    /// (its rooms are unified rooms). `hub_added`: the sender already wrote the membership into
    /// the hub (recovery on), so a join the loop refuses must take it out again.
    SioJoin {
        socket: SocketId,
        room: String,
        in_main: bool,
        hub_added: bool,
    },
    SioLeave {
        socket: SocketId,
        room: String,
        in_main: bool,
    },
    /// `Socket::to_room`: in the main namespace the unified room audience (users joined with
    /// `join_room` on every transport, plus joined sockets); elsewhere the namespace's sockets.
    SioEmitToRoom {
        nsp: String,
        room: String,
        event: String,
        args: Vec<Value>,
        volatile: bool,
    },
    /// The answer to `AppEvent::SseConnectRequest`.
    SseDecision {
        request: u64,
        decision: Result<Option<Identity>, Rejection>,
    },
    /// Send one event to one SSE stream.
    SseSend {
        stream: StreamId,
        event: Option<String>,
        data: String,
    },
    /// End an SSE stream.
    SseClose {
        stream: StreamId,
    },
    /// The unified broadcast: `data` is JSON text, validated by the caller. `reply`, when set,
    /// hears how many connections it reached.
    Broadcast {
        target: Target,
        transports: Transports,
        event: Arc<str>,
        data: Arc<str>,
        /// Dropped first under back-pressure, never replayed.
        volatile: bool,
        reply: Option<ReachReply>,
    },
    /// A broadcast made ready once (sequence number, history, bytes) for every loop: deliver it
    /// to this loop's connections. `reply`, when set, hears this loop's reach.
    Deliver {
        prepared: Arc<Prepared>,
        reply: Option<ReachReply>,
    },
    /// A broadcast of the Node.js socket.io cluster this node is in, to this loop's sockets of
    /// `nsp` that `select` selects (sent to every loop); with `ack`, each socket's answer;
    /// `count` hears how many sockets it went to.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    AdapterBroadcast {
        nsp: Arc<str>,
        select: Arc<adapter::Selection>,
        packet: Arc<crate::proto::sio::Packet>,
        volatile: bool,
        ack: Option<(std::time::Duration, AckReply)>,
        count: Option<std::sync::mpsc::Sender<usize>>,
    },
    /// A request of that cluster on this loop's sockets of `nsp` (sent to every loop).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    AdapterQuery {
        nsp: Arc<str>,
        select: Arc<adapter::Selection>,
        action: adapter::AdapterAction,
        reply: adapter::QueryReply,
    },
    /// `to_user_with_ack`: every Socket.IO connection of the user, one outcome each.
    UserAck {
        user: Identity,
        event: String,
        data: Value,
        timeout: std::time::Duration,
        reply: AckReply,
    },
    /// User-level rooms, answering whether the join was within the limits.
    JoinRoomReply {
        user: Identity,
        room: String,
        reply: std::sync::mpsc::Sender<Result<(), RoomLimit>>,
    },
    /// A user joined (`joined`) or left a room in the hub (which checked the limits and holds
    /// the membership): this loop's copy follows, so its connections of the user hear the room.
    RoomCopy {
        user: Identity,
        room: String,
        joined: bool,
    },
    /// User-level rooms without an answer, on an engine alone (tests drive it with it).
    #[cfg(test)]
    JoinRoom {
        user: Identity,
        room: String,
    },
    LeaveRoom {
        user: Identity,
        room: String,
    },
    /// Reads a user's rooms; the answer goes to the channel.
    UserRooms {
        user: Identity,
        reply: std::sync::mpsc::Sender<Vec<String>>,
    },
    /// A cluster's sequence starts again (Redis lost the history, a new epoch began): nothing
    /// seen before may hold back what comes next.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    ResetSequence,
    /// Reads engine counters; the answer goes to the channel.
    Stats {
        reply: std::sync::mpsc::Sender<Stats>,
    },
    /// The answer to `AppEvent::HttpRequest`.
    HttpRespond {
        request: u64,
        response: Response,
    },
}

/// Where a broadcast's reach goes (one answer per loop).
#[derive(Clone)]
pub(crate) enum ReachReply {
    /// The sender waits on the channel (and sums one answer per loop).
    Channel(std::sync::mpsc::Sender<Reach>),
    /// Summed over `parts` loops, then handed on once (a cluster node replies to the origin).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Merge(Arc<ReachMerge>),
}

impl ReachReply {
    pub(crate) fn send(&self, reach: Reach) {
        match self {
            ReachReply::Channel(tx) => {
                let _ = tx.send(reach);
            }
            ReachReply::Merge(m) => m.add(reach),
        }
    }
}

impl fmt::Debug for ReachReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReachReply::Channel(_) => "ReachReply::Channel",
            ReachReply::Merge(_) => "ReachReply::Merge",
        })
    }
}

/// The reach of a broadcast that several loops answer, summed for one completion.
pub(crate) struct ReachMerge {
    state: std::sync::Mutex<(usize, Reach, Option<ReachDone>)>,
}

type ReachDone = Box<dyn FnOnce(Reach) + Send>;

impl ReachMerge {
    /// A sum of `parts` answers, then `done` (run by whoever adds the last part).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn new(parts: usize, done: ReachDone) -> Arc<ReachMerge> {
        Arc::new(ReachMerge {
            state: std::sync::Mutex::new((parts, Reach::default(), Some(done))),
        })
    }

    fn add(&self, reach: Reach) {
        let done = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.0 = s.0.saturating_sub(1);
            s.1.sse += reach.sse;
            s.1.socketio += reach.socketio;
            if s.0 > 0 {
                return;
            }
            s.2.take().map(|d| (d, s.1))
        };
        if let Some((done, total)) = done {
            done(total);
        }
    }
}

/// How many connections a broadcast reached, per transport (Socket.IO: sockets of the main
/// namespace; SSE: streams).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Reach {
    /// SSE streams the event was written to.
    pub sse: usize,
    /// Socket.IO sockets the event was sent to.
    pub socketio: usize,
}

impl Reach {
    /// Connections reached on both transports.
    pub fn total(&self) -> usize {
        self.sse + self.socketio
    }
}

/// Counters, for tests and monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Engine.IO sessions (Socket.IO connections and raw Engine.IO ones).
    pub eio_sessions: usize,
    /// Socket.IO sockets, every namespace.
    pub sio_sockets: usize,
    /// Open SSE streams.
    pub sse_streams: usize,
    /// Acks waiting for an answer, plus ack requests waiting for their outcomes.
    pub pending_acks: usize,
    /// Connections a broadcast can reach (SSE streams and sockets of the main namespace).
    pub index_recipients: usize,
    /// Users with a connection or a room.
    pub index_users: usize,
    /// Tenants with a connection.
    pub index_tenants: usize,
    /// Rooms with a member.
    pub index_rooms: usize,
    /// Events kept for SSE resume and Socket.IO recovery.
    pub sse_history: usize,
    /// Timer entries (sessions, acks, heartbeats).
    pub timer_entries: usize,
    /// Socket.IO sockets waiting for their client to recover them.
    pub parked_sockets: usize,
}

/// A broadcast's content in each wire form's terms.
#[derive(Clone, Copy)]
pub(crate) struct Payload<'a> {
    pub(crate) event: &'a str,
    /// The SSE `data`: one JSON value.
    pub(crate) sse_data: &'a str,
    /// The Socket.IO event's arguments: JSON values joined by commas (empty: none).
    pub(crate) sio_args: &'a str,
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
    /// An SSE request waiting for the application's decision.
    SsePending(u64),
    /// An open SSE stream.
    Sse(u64),
    /// A request under an application route, waiting for the application's answer.
    Route(u64),
}

/// A broadcast to more connections than twice this is handed to io in two parts: outputs for its
/// first recipients, then (at the next `poll_output`) for the rest. io can write to the first
/// ones before the rest are resolved into outputs: the first client of a burst to 10 000 hears
/// of it after 64 outputs, not 10 000. Every other entry point finishes the second part first,
/// so nothing can come between the two.
const DELIVER_FIRST: usize = 64;

/// The largest encoding buffer an engine keeps for the next packet (a larger one, grown by a
/// rare large packet, is freed).
const ENCODE_SCRATCH_KEPT: usize = 4096;

/// The second part of a broadcast's delivery, waiting for `poll_output`.
struct Delivering {
    now: Instant,
    prepared: Arc<Prepared>,
    recipients: Vec<(u64, RecipientKind)>,
    /// Recipients before this one have their outputs.
    next: usize,
    /// A broadcast to everyone resolves only its first part at once: the rest is everyone
    /// resolved at the second part, but these (sorted), who have theirs.
    resolve_rest: Option<Vec<u64>>,
    reach: Reach,
    reply: Option<ReachReply>,
}

/// The engine. See the module docs.
pub(crate) struct Engine {
    cfg: Arc<Config>,
    random: RandomSource,
    outputs: VecDeque<Output>,
    timers: Timers,
    roles: IdMap<ConnRole>,
    eio: eio::Sessions,
    sio: sio::Sio,
    sse: sse::Sse,
    /// What the loops share: sequence, history, user rooms, parked sockets.
    hub: Arc<Hub>,
    /// Which loop this engine is (ids it makes are `counter * loops + loop_index`).
    loop_index: usize,
    /// The highest sequence number delivered here: a resume replays from the history up to it,
    /// the broadcasts after it are still on their way to this loop.
    delivered_seq: u64,
    index: Index,
    /// Source of recipient ids (sockets and streams share it, so ids never collide).
    next_recipient: u64,
    scratch_recipients: Vec<(u64, RecipientKind)>,
    /// Where a packet for one recipient is encoded before its frame is built (kept between
    /// packets, up to [`ENCODE_SCRATCH_KEPT`] bytes).
    encode_scratch: Vec<u8>,
    /// A broadcast whose first recipients were given outputs; the rest come at the next
    /// `poll_output` (see [`DELIVER_FIRST`]).
    delivering: Option<Box<Delivering>>,
    /// How many recipients a first part has: [`DELIVER_FIRST`], smaller in the fuzz target so
    /// that its few connections go through two parts too.
    deliver_first: usize,
    /// Application routes and their requests waiting for an answer.
    routes: route::Routes,
    /// Counters shared with io and the handle (deliveries).
    counters: Arc<crate::metrics::Counters>,
}

impl Engine {
    /// An engine alone (one loop, a hub of its own).
    #[cfg(test)]
    pub fn new(cfg: Arc<Config>, mut random: RandomSource) -> Engine {
        let hub = Arc::new(Hub::new(new_epoch(&mut random), 1));
        Engine::on_hub(cfg, random, hub, 0)
    }

    /// Engine `loop_index` of the loops that share `hub`.
    pub fn on_hub(
        cfg: Arc<Config>,
        random: RandomSource,
        hub: Arc<Hub>,
        loop_index: usize,
    ) -> Engine {
        Engine {
            cfg,
            random,
            outputs: VecDeque::new(),
            timers: Timers::default(),
            roles: IdMap::default(),
            eio: eio::Sessions::default(),
            sio: sio::Sio::default(),
            sse: sse::Sse::default(),
            hub,
            loop_index,
            delivered_seq: 0,
            index: Index::default(),
            next_recipient: 1,
            scratch_recipients: Vec::new(),
            encode_scratch: Vec::new(),
            deliver_first: DELIVER_FIRST,
            delivering: None,
            routes: route::Routes::default(),
            counters: Arc::default(),
        }
    }

    /// Uses `counters` (shared by every loop of a server) instead of its own.
    pub(crate) fn set_counters(&mut self, counters: Arc<crate::metrics::Counters>) {
        self.counters = counters;
    }

    /// A fresh id of this loop from `counter`: `counter * loops + loop_index`, so the id says
    /// which loop it lives on (with one loop, ids are the counter itself).
    fn take_id(counter: &mut u64, loops: usize, loop_index: usize) -> u64 {
        let id = counter
            .saturating_mul(loops as u64)
            .saturating_add(loop_index as u64);
        *counter += 1;
        id
    }

    /// A recipient joins the index (and, in a cluster, the node's presence).
    fn index_add(&mut self, id: u64, kind: RecipientKind, identity: Option<&Identity>) {
        if let (true, Some(i)) = (self.hub.is_cluster(), identity) {
            self.hub.lock().present.add(&Index::user_key(i));
        }
        self.index.add(id, kind, identity);
    }

    /// A recipient leaves the index (and the node's presence).
    fn index_remove(&mut self, id: u64) {
        if self.hub.is_cluster() {
            if let Some(k) = self.index.user_of(id).cloned() {
                self.hub.lock().present.remove(&k);
            }
        }
        self.index.remove(id);
    }

    /// This loop is part of a node of a Node.js socket.io cluster: it keeps its sockets' ids,
    /// which that cluster's messages name.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn index_socket_ids(&mut self) {
        self.sio.by_sid.get_or_insert_with(HashMap::new);
    }

    /// A fresh recipient id (socket or stream).
    fn new_recipient_id(&mut self) -> u64 {
        Self::take_id(&mut self.next_recipient, self.hub.loops, self.loop_index)
    }

    /// The index's own consistency check (for the engine fuzz target).
    pub(crate) fn check_index(&self) -> Result<(), String> {
        self.index.check_invariants()
    }

    /// Counters for tests and monitoring.
    pub fn stats(&self) -> Stats {
        let (r, u, t, rooms) = self.index.sizes();
        let (history, parked) = {
            let state = self.hub.lock();
            (state.history.len(), state.parked.len())
        };
        Stats {
            eio_sessions: self.eio.len(),
            sio_sockets: self.sio.socket_count(),
            sse_streams: self.sse.stream_count(),
            pending_acks: self.sio.pending_ack_count(),
            index_recipients: r,
            index_users: u,
            index_tenants: t,
            index_rooms: rooms,
            sse_history: history,
            timer_entries: self.timers.len(),
            parked_sockets: parked,
        }
    }

    /// The counters this engine (and the io loop and handle around it) add to.
    pub fn counters(&self) -> Arc<crate::metrics::Counters> {
        self.counters.clone()
    }

    /// The next output, if any. Call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(out) = self.outputs.pop_front() {
            return Some(out);
        }
        if self.delivering.is_some() {
            self.finish_delivery();
            return self.outputs.pop_front();
        }
        None
    }

    /// When `handle_timeout` should be called next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Open Engine.IO sessions.
    #[cfg(test)]
    pub fn session_count(&self) -> usize {
        self.eio.len()
    }

    /// Pending timer entries (proves floods do not grow the heap).
    #[cfg(test)]
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    /// A complete HTTP request arrived on `conn` (WebSocket upgrade requests included).
    pub fn handle_request(&mut self, now: Instant, conn: ConnId, req: Request) {
        self.finish_delivery();
        let path = req.head.path.as_str();
        let matches = |p: &Option<String>| p.as_deref().is_some_and(|p| path_matches(p, path));
        let endpoint = if matches(&self.cfg.engineio_path) {
            Some(eio::Endpoint::Raw)
        } else if matches(&self.cfg.socketio_path) {
            Some(eio::Endpoint::SocketIo)
        } else {
            None
        };
        if let Some(endpoint) = endpoint {
            if req.head.method == http::Method::Options {
                self.preflight(conn, &req.head);
            } else {
                self.eio_request(now, conn, req, endpoint);
            }
            return;
        }
        if self.cfg.sse_path.as_deref() == Some(path) {
            match req.head.method {
                http::Method::Get => self.sse_request(conn, req),
                http::Method::Options => self.preflight(conn, &req.head),
                _ => {
                    let resp = Response::new(405)
                        .with_header("Allow", "GET, OPTIONS")
                        .with_body("text/plain; charset=utf-8", "Method Not Allowed");
                    self.respond(conn, &req.head, resp);
                }
            }
            return;
        }
        if let Some(page) = self.cfg.pages.iter().find(|p| p.path == path) {
            let resp = if req.head.method == http::Method::Get {
                Response::new(200)
                    .with_header("Cache-Control", "no-cache")
                    .with_body(page.content_type, page.body.as_bytes())
            } else {
                Response::new(405)
                    .with_header("Allow", "GET")
                    .with_body("text/plain; charset=utf-8", "Method Not Allowed")
            };
            self.respond(conn, &req.head, resp);
            return;
        }
        let Some(req) = self.route_request(now, conn, req) else {
            return;
        };
        let resp = Response::new(404).with_body("text/plain; charset=utf-8", "Not Found");
        self.respond(conn, &req.head, resp);
    }

    /// A WebSocket message arrived on `conn`.
    pub fn handle_ws_message(&mut self, now: Instant, conn: ConnId, msg: WsMessage<'_>) {
        self.finish_delivery();
        match self.roles.get(&conn).copied() {
            Some(ConnRole::Ws(key)) => self.eio_ws_message(now, key, msg),
            Some(ConnRole::Probe(key)) => self.eio_probe_message(now, key, conn, msg),
            Some(_) | None => self.push(Output::Close { conn }),
        }
    }

    /// `conn` is gone (peer closed, error, queue cap, shutdown). Nothing more is written to it.
    pub fn handle_conn_closed(&mut self, now: Instant, conn: ConnId) {
        self.finish_delivery();
        let Some(role) = self.roles.remove(&conn) else {
            return;
        };
        match role {
            // An aborted GET closes the session (the official Engine.IO suite checks it): the client
            // is gone or misbehaving.
            ConnRole::PollGet(key) => {
                self.eio_forget_get(key, conn);
                self.eio_close(now, key, CloseReason::TransportClose);
            }
            ConnRole::Ws(key) => self.eio_close(now, key, CloseReason::TransportClose),
            ConnRole::Probe(key) => self.eio_cancel_upgrade(key, conn),
            ConnRole::SsePending(request) => {
                self.sse_forget_pending(request);
            }
            ConnRole::Sse(stream) => {
                self.roles.insert(conn, ConnRole::Sse(stream));
                self.sse_stream_gone(now, stream);
            }
            ConnRole::Route(request) => self.route_conn_closed(request),
        }
    }

    /// A command from the application.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        self.finish_delivery();
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
            Command::SioConnectHandoff {
                request,
                decision,
                handoff,
                recorded,
            } => self.sio_connect_decision(now, request, decision, handoff, recorded),
            Command::SioConnectDecision { request, decision } => {
                self.sio_connect_decision(now, request, decision, None, None)
            }
            Command::SioEmit {
                socket,
                event,
                args,
                attachments,
                ack,
                volatile,
                seq,
            } => {
                let kind = match ack {
                    Some((timeout, reply)) => sio::EmitKind::WithAck(timeout, reply),
                    None if volatile => sio::EmitKind::Volatile,
                    None => sio::EmitKind::Plain(seq),
                };
                self.sio_emit(now, socket.0, &event, args, attachments, kind)
            }
            Command::SioAck {
                socket,
                id,
                args,
                attachments,
            } => self.sio_ack(now, socket.0, id, args, attachments),
            Command::SioDisconnect { socket } => self.sio_disconnect(now, socket.0),
            Command::SioCloseConnection { socket } => {
                if let Some(session) = self.sio.session_of(socket.0) {
                    self.eio_close(now, session, CloseReason::ServerClose);
                }
            }
            Command::SioJoin {
                socket,
                room,
                in_main: _,
                hub_added,
            } => self.sio_join(socket.0, &room, hub_added),
            Command::SioLeave { socket, room, .. } => self.sio_leave(socket.0, &room),
            Command::SioEmitToRoom {
                nsp,
                room,
                event,
                args,
                volatile,
            } => {
                if nsp == "/" {
                    self.emit_args_to_room(now, &room, &event, &args, volatile);
                } else {
                    self.sio_emit_to_socket_room(now, &nsp, &room, &event, args, volatile);
                }
            }
            Command::AdapterBroadcast {
                nsp,
                select,
                packet,
                volatile,
                ack,
                count,
            } => {
                let n = self.adapter_broadcast(now, &nsp, &select, &packet, volatile, ack);
                if let Some(count) = count {
                    let _ = count.send(n);
                }
            }
            Command::AdapterQuery {
                nsp,
                select,
                action,
                reply,
            } => self.adapter_query(now, &nsp, &select, &action, reply),
            Command::SseDecision { request, decision } => self.sse_decision(now, request, decision),
            Command::SseSend {
                stream,
                event,
                data,
            } => self.sse_send(stream.0, event.as_deref(), &data),
            Command::SseClose { stream } => self.sse_close(now, stream.0),
            Command::Broadcast {
                target,
                transports,
                event,
                data,
                volatile,
                reply,
            } => self.broadcast(now, &target, transports, &event, &data, volatile, reply),
            Command::Deliver { prepared, reply } => self.deliver_in_parts(now, prepared, reply),
            Command::UserAck {
                user,
                event,
                data,
                timeout,
                reply,
            } => self.user_ack(now, &user, &event, data, timeout, reply),
            Command::RoomCopy { user, room, joined } => {
                // The hub checked the limits; this copy only follows it.
                if joined {
                    let _ = self.index.join(&user, &room, usize::MAX, usize::MAX);
                } else {
                    self.index.leave(&user, &room);
                }
            }
            #[cfg(test)]
            Command::JoinRoom { user, room } => {
                let joined = self.hub.lock().rooms.join(
                    &user,
                    &room,
                    self.cfg.max_rooms_per_user,
                    self.cfg.max_room_memberships,
                );
                if joined.is_ok() {
                    let _ = self.index.join(&user, &room, usize::MAX, usize::MAX);
                }
            }
            Command::JoinRoomReply { user, room, reply } => {
                let r = self.hub.lock().rooms.join(
                    &user,
                    &room,
                    self.cfg.max_rooms_per_user,
                    self.cfg.max_room_memberships,
                );
                if r.is_ok() {
                    let _ = self.index.join(&user, &room, usize::MAX, usize::MAX);
                }
                let _ = reply.send(r.map(|_| ()));
            }
            Command::LeaveRoom { user, room } => {
                self.hub.lock().rooms.leave(&user, &room);
                self.index.leave(&user, &room);
            }
            Command::UserRooms { user, reply } => {
                let _ = reply.send(self.hub.lock().rooms.rooms_of(&user));
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Command::ResetSequence => {
                self.delivered_seq = 0;
                self.sse.reset_floors();
                self.sio.reset_floors();
            }
            Command::HttpRespond { request, response } => self.route_respond(request, response),
        }
    }

    /// The unified broadcast of one engine alone: made ready on the hub (sequence number,
    /// history, bytes), then delivered here; `reply` gets how many connections it reached. (A
    /// server prepares once and hands the result to every loop: see `fanout`.)
    #[allow(clippy::too_many_arguments)]
    fn broadcast(
        &mut self,
        now: Instant,
        target: &Target,
        transports: Transports,
        event: &str,
        data: &str,
        volatile: bool,
        reply: Option<ReachReply>,
    ) {
        let payload = Payload {
            event,
            sse_data: data,
            sio_args: data,
        };
        self.prepare_and_deliver(now, target, transports, payload, volatile, reply)
    }

    /// `Socket::to_room` in the main namespace: the same audience as a unified room broadcast.
    fn emit_args_to_room(
        &mut self,
        now: Instant,
        room: &str,
        event: &str,
        args: &[Value],
        volatile: bool,
    ) {
        let (sio_args, sse_data) = room_args(args);
        let target = Target::Room(room.to_string());
        let payload = Payload {
            event,
            sse_data: &sse_data,
            sio_args: &sio_args,
        };
        self.prepare_and_deliver(now, &target, Transports::Both, payload, volatile, None)
    }

    fn prepare_and_deliver(
        &mut self,
        now: Instant,
        target: &Target,
        transports: Transports,
        payload: Payload<'_>,
        volatile: bool,
        reply: Option<ReachReply>,
    ) {
        let hub = self.hub.clone();
        let prepared = {
            let mut state = hub.lock();
            hub.prepare(
                &mut state,
                &self.cfg,
                now,
                audience_of(target),
                transports,
                payload,
                volatile,
                None,
            )
        };
        self.deliver_in_parts(now, Arc::new(prepared), reply);
    }

    /// A delivery is whole: the recipient list goes back for reuse, the reach is counted and
    /// answered.
    fn delivered(
        &mut self,
        mut recipients: Vec<(u64, RecipientKind)>,
        reach: Reach,
        reply: Option<ReachReply>,
    ) {
        recipients.clear();
        self.scratch_recipients = recipients;
        self.counters.delivered(reach);
        if let Some(reply) = reply {
            reply.send(reach);
        }
    }

    /// Writes a prepared broadcast to this loop's connections in its audience (the bytes are
    /// shared), to a large audience in two parts (see [`DELIVER_FIRST`]); `reply` gets the reach
    /// once all of it is out.
    fn deliver_in_parts(
        &mut self,
        now: Instant,
        prepared: Arc<Prepared>,
        reply: Option<ReachReply>,
    ) {
        let mut recipients = std::mem::take(&mut self.scratch_recipients);
        let kinds = prepared.transports.kinds();
        let first = self.deliver_first;
        // To everyone, the commonest large audience: no need to walk all of it before the
        // first write (at most one more than fits in one part tells whether it is one part).
        let everyone = matches!(prepared.audience, Audience::All);
        if everyone {
            self.index
                .resolve_all_first(kinds, &mut recipients, 2 * first + 1);
        } else {
            self.index
                .resolve(&prepared.audience, kinds, &mut recipients);
        }
        self.delivered_seq = self.delivered_seq.max(prepared.seq.unwrap_or(0));
        let mut reach = Reach::default();
        if recipients.len() <= 2 * first {
            self.deliver_to(now, &prepared, &recipients, &mut reach);
            return self.delivered(recipients, reach, reply);
        }
        self.deliver_to(
            now,
            &prepared,
            recipients.get(..first).unwrap_or(&[]),
            &mut reach,
        );
        let resolve_rest = everyone.then(|| {
            let mut done: Vec<u64> = recipients.iter().take(first).map(|(rid, _)| *rid).collect();
            done.sort_unstable();
            done
        });
        self.delivering = Some(Box::new(Delivering {
            now,
            prepared,
            recipients,
            next: first,
            resolve_rest,
            reach,
            reply,
        }));
    }

    /// Hands a large audience over in parts of `first` recipients instead of [`DELIVER_FIRST`]
    /// (at least 1): the fuzz target's few connections then go through two parts as well.
    pub(crate) fn set_deliver_first(&mut self, first: usize) {
        self.deliver_first = first.max(1);
    }

    /// Whether the second part of a delivery is waiting for the next `poll_output`.
    pub(crate) fn delivering_in_parts(&self) -> bool {
        self.delivering.is_some()
    }

    /// The second part of a delivery in two parts, if one is waiting.
    fn finish_delivery(&mut self) {
        let Some(mut d) = self.delivering.take() else {
            return;
        };
        let mut recipients = std::mem::take(&mut d.recipients);
        if let Some(done) = d.resolve_rest.take() {
            // Resolved now rather than walked in the same order as the first part: the first
            // part may have closed a session (a full polling buffer), which changes the index.
            self.index.resolve(
                &d.prepared.audience,
                d.prepared.transports.kinds(),
                &mut recipients,
            );
            recipients.retain(|(rid, _)| done.binary_search(rid).is_err());
            d.next = 0;
        }
        self.deliver_to(
            d.now,
            &d.prepared,
            recipients.get(d.next..).unwrap_or(&[]),
            &mut d.reach,
        );
        self.delivered(recipients, d.reach, d.reply);
    }

    /// Outputs for `recipients` of a prepared broadcast (those in its audience, on this loop). A
    /// connection that resumed past this broadcast's sequence number (its floor) already has it.
    fn deliver_to(
        &mut self,
        now: Instant,
        p: &Prepared,
        recipients: &[(u64, RecipientKind)],
        reach: &mut Reach,
    ) {
        let seq = p.seq.unwrap_or(0);
        for (rid, kind) in recipients {
            match kind {
                RecipientKind::Sse => {
                    let Some(frame) = &p.sse_frame else {
                        continue;
                    };
                    let Some((conn, floor)) = self.sse.target_of(*rid) else {
                        continue;
                    };
                    if p.seq.is_some() && seq <= floor {
                        continue;
                    }
                    reach.sse += 1;
                    let chunk = Chunk::Shared(frame.clone());
                    self.push(if p.volatile {
                        Output::WriteVolatile { conn, chunk }
                    } else {
                        Output::Write { conn, chunk }
                    });
                }
                RecipientKind::SocketIo => {
                    let Some(packet) = &p.sio_packet else {
                        continue;
                    };
                    let Some((session, floor)) = self.sio.target_of(*rid) else {
                        continue;
                    };
                    if p.seq.is_some() && seq <= floor {
                        continue;
                    }
                    reach.socketio += 1;
                    if p.volatile {
                        self.sio_send_volatile(now, session, packet);
                    } else {
                        self.sio_send(now, session, packet);
                    }
                }
            }
        }
    }

    pub(crate) fn history_limits(&self) -> history::Limits {
        hub::history_limits(&self.cfg)
    }

    /// `to_user_with_ack`: one ack per Socket.IO socket of the user (main namespace).
    fn user_ack(
        &mut self,
        now: Instant,
        user: &Identity,
        event: &str,
        data: Value,
        timeout: std::time::Duration,
        reply: AckReply,
    ) {
        let mut recipients = Vec::new();
        self.index.resolve(
            &Audience::User(Index::user_key(user)),
            &[RecipientKind::SocketIo],
            &mut recipients,
        );
        if recipients.is_empty() {
            return self.deliver_ack_reply(reply, Vec::new());
        }
        let collector = self.new_collector(now + timeout, reply);
        for (socket, _) in recipients {
            let mut packet = crate::proto::sio::Packet::event("/", event, [data.clone()], None);
            self.emit_with_ack_to(now, socket, &mut packet, collector);
        }
        self.finish_collector_if_done(collector);
    }

    /// Fires every deadline due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.finish_delivery();
        // Bounded: each iteration pops one entry and pushes at most one later entry.
        let mut budget = self.timers.len().saturating_add(16);
        while budget > 0 {
            budget -= 1;
            let Some((at, key)) = self.timers.pop_due(now) else {
                break;
            };
            match key {
                TimerKey::EioSession(k) => self.eio_timer(now, k, at),
                TimerKey::Ack(c) => self.ack_timer(now, c, at),
                TimerKey::SseHeartbeat => self.sse_heartbeat(now, at),
                TimerKey::Route(id) => self.route_timer(id, at),
                TimerKey::Recovery => self.recovery_timer(now, at),
            }
        }
    }

    /// Closes everything (graceful shutdown): sessions are closed with `ServerShutdown`; SSE
    /// streams get a last `retry:` hint (the configured delay plus up to 1 s of jitter, so the
    /// clients do not all come back at once) before they end.
    pub fn shutdown(&mut self, now: Instant) {
        self.finish_delivery();
        for key in self.eio.keys() {
            self.eio_close(now, key, CloseReason::ServerShutdown);
        }
        let retry = self.cfg.sse_retry.as_millis() as u64;
        for stream in self.sse_stream_ids() {
            let jitter = u64::from(u16::from_le_bytes(self.random_bytes::<2>())) % 1000;
            if let Some(conn) = self.sse.conn_of(stream) {
                let mut hint = Vec::new();
                crate::proto::sse::encode_retry(&mut hint, retry + jitter);
                self.push(Output::Write {
                    conn,
                    chunk: Chunk::Owned(hint),
                });
            }
            self.sse_close(now, stream);
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

/// A fresh epoch: it tells a restarted server's ids from the previous run's; random, so a client
/// cannot guess it and it never repeats.
pub(crate) fn new_epoch(random: &mut RandomSource) -> u64 {
    let mut e = [0u8; 8];
    random(&mut e);
    u64::from_le_bytes(e) >> 12
}

/// A broadcast's audience in the index's terms.
pub(crate) fn audience_of(target: &Target) -> Audience {
    match target {
        Target::User(i) => Audience::User(Index::user_key(i)),
        Target::Tenant(t) => Audience::Tenant(Arc::from(t.as_str())),
        Target::Room(r) => Audience::Room(Arc::from(r.as_str())),
        Target::All => Audience::All,
    }
}

/// `Socket::to_room`'s arguments in each wire form: Socket.IO clients get every argument; SSE
/// streams get the single argument as `data` (or, with zero or several, their JSON array).
pub(crate) fn room_args(args: &[Value]) -> (String, String) {
    let sio_args = args
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let sse_data = match args {
        [one] => one.to_string(),
        _ => Value::Array(args.to_vec()).to_string(),
    };
    (sio_args, sse_data)
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
mod test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cluster;
#[cfg(test)]
mod tests_index_model;
#[cfg(test)]
mod tests_loops;
#[cfg(test)]
mod tests_recovery;
#[cfg(test)]
mod tests_sio_connect;
#[cfg(test)]
mod tests_sio_events;
#[cfg(test)]
mod tests_sio_hostile;
#[cfg(test)]
mod tests_sse;
#[cfg(test)]
mod tests_unified;

#[cfg(test)]
mod tests_request_info {
    #![allow(clippy::unwrap_used)]
    use super::RequestInfo;
    use crate::proto::http::{parse_request_head, HeadLimits};

    #[test]
    fn packed_info_answers_as_the_head() {
        let raw = b"GET /socket.io/?EIO=4&transport=websocket&t=a%20b HTTP/1.1\r\nHost: x\r\n\
                    Cookie: a=1; sid=abc\r\nX-Empty:\r\nAuthorization: Bearer t\r\n\
                    cookie: later=2\r\nX-Dup: one\r\nX-Dup: two\r\n\r\n";
        let limits = HeadLimits {
            max_head_bytes: 8192,
            max_headers: 64,
        };
        let (head, _) = parse_request_head(raw, &limits).unwrap();
        let remote = Some(([127, 0, 0, 1], 9).into());
        let info = RequestInfo::new(head.clone(), remote);
        assert_eq!(info.path(), head.path);
        assert_eq!(info.remote(), remote);
        for name in [
            "host",
            "cookie",
            "x-empty",
            "authorization",
            "x-dup",
            "absent",
            "",
        ] {
            assert_eq!(info.header(name), head.header(name), "{name}");
        }
        assert_eq!(info.header("X-Dup"), Some("one"));
        for name in ["a", "sid", "later", "absent"] {
            assert_eq!(info.cookie(name), head.cookie(name), "{name}");
        }
        assert_eq!(info.cookie("later").as_deref(), Some("2"));
        for name in ["EIO", "transport", "t", "absent"] {
            assert_eq!(info.query(name), head.query_param(name), "{name}");
        }
        assert_eq!(info.query("t").as_deref(), Some("a b"));
    }
}
