//! A tidings server as a node of a Node.js socket.io cluster (`@socket.io/redis-adapter` 8.x
//! on the same Redis, and `@socket.io/redis-emitter`): the threads that speak its format.
//!
//! - The subscriber pattern-subscribes each namespace's broadcast channels and subscribes its
//!   request and response channels, as every Node server does (so Node counts this node when it
//!   asks how many servers must answer). A broadcast is handed to every loop, which delivers it
//!   to the sockets its rooms select; requests go to the worker.
//! - The worker answers requests (`fetchSockets`, `allRooms`, `socketsJoin`, `socketsLeave`,
//!   `disconnectSockets`, `serverSideEmit`, broadcasts with acks), asking every loop.
//! - The publisher sends this node's Socket.IO broadcasts in the same format, so Node's clients
//!   get them (pub/sub, as the Node adapter: a publish that cannot be made is dropped, counted
//!   in `Metrics::cluster_dropped`).
//!
//! Foreign or malformed messages on those channels are ignored with a log line and counted in
//! `Metrics::cluster_foreign`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Client, Connection};
use serde_json::Value;

use super::adapter_wire::{
    self as aw, AdapterLimits, BroadcastFlags, BroadcastMessage, BroadcastOpts, ChannelKind,
    RemoteSocket, Request, Response,
};
use crate::engine::adapter::{AdapterAction, AdapterSocket, QueryAnswer, Selection};
use crate::engine::{AckMerge, AckOutcome, AckReply, Command, Target, Transports};
use crate::proto::sio::{Packet, PacketKind};
use crate::server::{answer_channel, Answer, Handle};

/// How a server joins a Node.js socket.io cluster ([`crate::ServerBuilder::socketio_adapter`]).
#[derive(Clone, Debug)]
pub struct SocketIoAdapterConfig {
    /// The cluster's Redis server, as `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// The adapter's `key` option: the prefix of its channels. Default: `"socket.io"`.
    pub key: String,
    /// The namespaces whose traffic is shared with the cluster. Default: `["/"]`.
    pub namespaces: Vec<String>,
    /// How long a broadcast with acks from Node waits for this node's clients when Node did
    /// not say (its `timeout` flag); Node's own `requestsTimeout` is 5 s. Default: 5 s.
    pub request_timeout: Duration,
    /// Connecting, and each Redis read or write. Default: 2 s.
    pub io_timeout: Duration,
    /// Publishes waiting for the publisher thread; past it a publish is dropped and counted.
    /// Default: 65 536.
    pub queue: usize,
}

impl SocketIoAdapterConfig {
    /// The defaults, on the Redis server at `url`.
    pub fn new(url: impl Into<String>) -> SocketIoAdapterConfig {
        SocketIoAdapterConfig {
            url: url.into(),
            key: aw::DEFAULT_KEY.to_string(),
            namespaces: vec!["/".to_string()],
            request_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(2),
            queue: 65_536,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.key.is_empty() || self.key.len() > 128 || self.key.contains('#') {
            return Err("adapter key must be 1-128 bytes without '#'".into());
        }
        if self.namespaces.is_empty() {
            return Err("adapter namespaces must name at least one".into());
        }
        for nsp in &self.namespaces {
            if !nsp.starts_with('/') || nsp.contains('#') || nsp.len() > 256 {
                return Err(format!(
                    "adapter namespace {nsp:?} must start with '/' and have no '#'"
                ));
            }
        }
        if self.queue == 0 || self.io_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err("adapter queue and timeouts must be above zero".into());
        }
        Ok(())
    }
}

/// What the application answers to a Node server's `serverSideEmit`: called with the event
/// name and its arguments; `Some(value)` is this node's answer to an emit with an ack (Node
/// waits for one answer per other server; `None`: no answer, as a Node server without a
/// listener).
pub type ServerSideEmitHandler = Arc<dyn Fn(&str, &[Value]) -> Option<Value> + Send + Sync>;

/// Ack broadcasts from Node handled at once (each waits for its clients on a thread).
const MAX_ACK_BROADCASTS: usize = 64;
/// Requests waiting for the worker; past it a request is dropped (Node times it out).
const REQUEST_QUEUE: usize = 1024;
const TICK: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// One publish.
struct Publish {
    channel: String,
    body: Vec<u8>,
}

struct Shared {
    cfg: SocketIoAdapterConfig,
    uid: String,
    limits: AdapterLimits,
    handle: Handle,
    stop: AtomicBool,
    connected: AtomicBool,
    publishes: SyncSender<Publish>,
    on_server_side_emit: Option<ServerSideEmitHandler>,
    ack_broadcasts: AtomicUsize,
    /// This node's requests waiting for answers, by request id.
    waiting: Mutex<std::collections::HashMap<String, mpsc::Sender<Response>>>,
    next_request: std::sync::atomic::AtomicU64,
    requests_conn: Mutex<Option<Connection>>,
}

/// A running link to a Node.js socket.io cluster.
pub(crate) struct Adapter {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Adapter({})", self.shared.uid)
    }
}

impl Adapter {
    /// Connects (Redis must answer now), subscribes and starts the threads.
    pub(crate) fn start(
        cfg: SocketIoAdapterConfig,
        uid: String,
        handle: Handle,
        on_server_side_emit: Option<ServerSideEmitHandler>,
    ) -> Result<Arc<Adapter>, String> {
        cfg.validate()?;
        let client = Client::open(cfg.url.as_str())
            .map_err(|e| format!("socket.io adapter: bad Redis URL: {e}"))?;
        let (publishes, publish_rx) = mpsc::sync_channel(cfg.queue);
        let (requests, request_rx) = mpsc::sync_channel(REQUEST_QUEUE);
        let shared = Arc::new(Shared {
            cfg,
            uid,
            limits: AdapterLimits::default(),
            handle,
            stop: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            publishes,
            on_server_side_emit,
            ack_broadcasts: AtomicUsize::new(0),
            waiting: Mutex::new(std::collections::HashMap::new()),
            next_request: std::sync::atomic::AtomicU64::new(1),
            requests_conn: Mutex::new(None),
        });
        let first = connect(&client, shared.cfg.io_timeout)
            .map_err(|e| format!("socket.io adapter: cannot reach Redis: {e}"))?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| format!("socket.io adapter: cannot start a thread: {e}"))
        };
        let mut threads = Vec::new();
        {
            let (shared, client) = (shared.clone(), client.clone());
            threads.push(spawn(
                "tidings-sio-sub",
                Box::new(move || subscriber(shared, client, requests, ready_tx)),
            )?);
        }
        let wait = shared.cfg.io_timeout * 4 + Duration::from_secs(1);
        match ready_rx.recv_timeout(wait) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.stop.store(true, Ordering::Release);
                return Err(e);
            }
            Err(_) => {
                shared.stop.store(true, Ordering::Release);
                return Err("socket.io adapter: Redis did not answer in time".into());
            }
        }
        {
            let shared = shared.clone();
            threads.push(spawn(
                "tidings-sio-pub",
                Box::new(move || publisher(shared, client, Some(first), publish_rx)),
            )?);
        }
        {
            let shared = shared.clone();
            threads.push(spawn(
                "tidings-sio-work",
                Box::new(move || worker(shared, request_rx)),
            )?);
        }
        Ok(Arc::new(Adapter {
            shared,
            threads: Mutex::new(threads),
        }))
    }

    /// Whether the subscriber's link to Redis is up now.
    pub(crate) fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Stops the threads.
    pub(crate) fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// The cluster's part of a broadcast of the application: what reaches Socket.IO clients
    /// goes to the Node servers too (this node's own loops get it the usual way).
    pub(crate) fn publish_command(&self, cmd: &Command) {
        let (nsp, room, event, args, volatile) = match cmd {
            Command::Broadcast {
                target,
                transports,
                event,
                data,
                volatile,
                ..
            } if *transports != Transports::Sse => {
                let room = match target {
                    Target::All => None,
                    Target::Room(r) => Some(r.clone()),
                    Target::User(u) => Some(crate::engine::adapter::user_room(u)),
                    Target::Tenant(t) => Some(crate::engine::adapter::tenant_room(t)),
                };
                // The data is JSON already (checked by the API).
                let Ok(arg) = serde_json::from_str::<Value>(data) else {
                    return;
                };
                ("/", room, event.as_ref(), vec![arg], *volatile)
            }
            Command::SioEmitToRoom {
                nsp,
                room,
                event,
                args,
                volatile,
            } => (
                nsp.as_str(),
                Some(room.clone()),
                event.as_str(),
                args.clone(),
                *volatile,
            ),
            _ => return,
        };
        if !self.shared.cfg.namespaces.iter().any(|n| n == nsp) {
            return;
        }
        let packet = Packet::event(nsp, event, args, None);
        let rooms: Vec<String> = room.into_iter().collect();
        let channel = match rooms.as_slice() {
            // "The adapter publishes to the room channel when exactly one room is targeted."
            [one] => aw::room_channel(&self.shared.cfg.key, nsp, one),
            _ => aw::broadcast_channel(&self.shared.cfg.key, nsp),
        };
        let msg = BroadcastMessage {
            uid: self.shared.uid.clone(),
            packet,
            opts: BroadcastOpts {
                rooms,
                except: Vec::new(),
                flags: BroadcastFlags {
                    volatile: volatile.then_some(true),
                    ..BroadcastFlags::default()
                },
            },
        };
        self.shared.publish(channel, aw::encode_broadcast(&msg));
    }
}

impl Shared {
    fn publish(&self, channel: String, body: Vec<u8>) {
        match self.publishes.try_send(Publish { channel, body }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.handle.counters().cluster_dropped();
                log::warn!("socket.io adapter: a publish was dropped (queue full or closed)");
            }
        }
    }

    fn foreign(&self, what: &str) {
        self.handle.counters().cluster_foreign();
        log::warn!("socket.io adapter: ignored {what}");
    }

    fn namespace_of<'a>(&'a self, channel: &str) -> Option<(&'a str, ChannelKindOwned)> {
        for nsp in &self.cfg.namespaces {
            if let Some(kind) = aw::parse_channel(&self.cfg.key, nsp, channel) {
                return Some((nsp.as_str(), ChannelKindOwned::from(kind)));
            }
        }
        None
    }

    /// Sends `cmd()` to every loop.
    fn to_loops(&self, cmd: impl Fn() -> Command) -> usize {
        self.handle.to_every_loop(cmd);
        self.handle.loop_count()
    }

    /// A broadcast of the Node cluster, to the sockets it selects on every loop; with an ack,
    /// each loop adds its sockets' answers to the merge and its count of them to the channel.
    fn broadcast_to_loops(
        &self,
        nsp: &str,
        select: Selection,
        packet: Packet,
        volatile: bool,
        ack: Option<(Duration, Arc<AckMerge>)>,
        count: Option<mpsc::Sender<usize>>,
    ) {
        let select = Arc::new(select);
        let packet = Arc::new(packet);
        let nsp: Arc<str> = Arc::from(nsp);
        self.to_loops(|| Command::AdapterBroadcast {
            nsp: nsp.clone(),
            select: select.clone(),
            packet: packet.clone(),
            volatile,
            ack: ack
                .as_ref()
                .map(|(timeout, merge)| (*timeout, AckReply::Merge(merge.clone()))),
            count: count.clone(),
        });
    }

    /// Hands every loop its part of a request; where their answers come, and how many.
    fn ask_loops(
        &self,
        nsp: &str,
        select: Selection,
        action: AdapterAction,
    ) -> (Answer<QueryAnswer>, usize) {
        let (tx, rx) = answer_channel();
        let nsp: Arc<str> = Arc::from(nsp);
        let select = Arc::new(select);
        let loops = self.to_loops(|| Command::AdapterQuery {
            nsp: nsp.clone(),
            select: select.clone(),
            action: action.clone(),
            reply: tx.clone(),
        });
        (rx, loops)
    }

    /// Asks every loop; their answers, as many as came within the I/O timeout.
    fn query(&self, nsp: &str, select: Selection, action: AdapterAction) -> Vec<QueryAnswer> {
        let (rx, loops) = self.ask_loops(nsp, select, action);
        collect(self, &rx, loops)
    }

    /// Where the responses to this node's request `request_id` will come.
    fn expect_responses(&self, request_id: &str) -> Answer<Response> {
        let (tx, rx) = answer_channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request_id.to_string(), tx);
        rx
    }

    fn respond(&self, nsp: &str, response: &Response) {
        let channel = aw::response_channel(&self.cfg.key, nsp);
        self.publish(channel, aw::encode_response(response));
    }
}

/// `ChannelKind` without the borrow.
enum ChannelKindOwned {
    Broadcast,
    Room,
    Request,
    Response,
}

impl From<ChannelKind<'_>> for ChannelKindOwned {
    fn from(k: ChannelKind<'_>) -> Self {
        match k {
            ChannelKind::Broadcast => ChannelKindOwned::Broadcast,
            ChannelKind::Room(_) => ChannelKindOwned::Room,
            ChannelKind::Request => ChannelKindOwned::Request,
            ChannelKind::Response(_) => ChannelKindOwned::Response,
        }
    }
}

fn connect(client: &Client, timeout: Duration) -> redis::RedisResult<Connection> {
    let c = client.get_connection_with_timeout(timeout)?;
    c.set_read_timeout(Some(timeout))?;
    c.set_write_timeout(Some(timeout))?;
    Ok(c)
}

/// What the worker does for a request, after the subscriber handed the loops their part (in
/// the order the requests and broadcasts came, so a broadcast after a join reaches the joined).
enum Job {
    /// Collects every loop's answer, then publishes what `then` says.
    Answer {
        nsp: String,
        answers: Answer<QueryAnswer>,
        loops: usize,
        then: Then,
    },
    /// The application's answer to a server-side emit.
    ServerSideEmit {
        nsp: String,
        request_id: Option<String>,
        event: String,
        args: Vec<Value>,
    },
}

/// The response a request's answers make.
enum Then {
    Sockets(String),
    AllRooms(String),
    Fetch(String),
    /// A join, leave or disconnect of one socket by id: `{requestId}` when it was here.
    Done(String),
}

fn subscriber(
    shared: Arc<Shared>,
    client: Client,
    requests: SyncSender<Job>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    while !shared.stop.load(Ordering::Acquire) {
        let started = Instant::now();
        match subscribe_session(&shared, &client, &requests, &mut ready) {
            Ok(()) => return,
            Err(e) => {
                shared.connected.store(false, Ordering::Release);
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(format!("socket.io adapter: cannot subscribe: {e}")));
                    return;
                }
                log::warn!("socket.io adapter: subscriber lost Redis: {e}");
            }
        }
        if started.elapsed() > BACKOFF_MAX * 4 {
            backoff = Duration::from_millis(100);
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn subscribe_session(
    shared: &Arc<Shared>,
    client: &Client,
    requests: &SyncSender<Job>,
    ready: &mut Option<mpsc::Sender<Result<(), String>>>,
) -> redis::RedisResult<()> {
    let key = &shared.cfg.key;
    let mut conn = connect(client, shared.cfg.io_timeout)?;
    let mut pubsub = conn.as_pubsub();
    for nsp in &shared.cfg.namespaces {
        pubsub.psubscribe(aw::broadcast_pattern(key, nsp))?;
        pubsub.subscribe(&[
            aw::request_channel(key, nsp),
            aw::response_channel(key, nsp),
            aw::specific_response_channel(key, nsp, &shared.uid),
        ])?;
    }
    shared.connected.store(true, Ordering::Release);
    if let Some(r) = ready.take() {
        let _ = r.send(Ok(()));
    } else {
        shared.handle.counters().cluster_reconnected();
        log::info!("socket.io adapter: subscriber reconnected to Redis");
    }
    pubsub.set_read_timeout(Some(TICK))?;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let msg = match pubsub.get_message() {
            Ok(m) => m,
            Err(e) if e.is_timeout() => continue,
            Err(e) => return Err(e),
        };
        let channel = msg.get_channel_name().to_string();
        let payload = msg.get_payload_bytes();
        match shared.namespace_of(&channel) {
            Some((nsp, ChannelKindOwned::Broadcast | ChannelKindOwned::Room)) => {
                on_broadcast(shared, nsp, payload);
            }
            Some((nsp, ChannelKindOwned::Request)) => {
                match aw::decode_request(payload, &shared.limits) {
                    Ok(request) => {
                        if let Some(job) = dispatch(shared, nsp, request) {
                            if requests.try_send(job).is_err() {
                                log::warn!(
                                    "socket.io adapter: a request was dropped (worker busy)"
                                );
                            }
                        }
                    }
                    Err(e) => shared.foreign(&format!("a request on {channel}: {e}")),
                }
            }
            Some((_, ChannelKindOwned::Response)) => shared.on_response(payload),
            None => shared.foreign(&format!("a message on {channel}")),
        }
    }
}

/// A Node server's (or an emitter's) broadcast: to every loop, for the sockets it selects.
fn on_broadcast(shared: &Shared, nsp: &str, payload: &[u8]) {
    let msg = match aw::decode_broadcast(payload, &shared.limits) {
        Ok(m) => m,
        Err(e) => return shared.foreign(&format!("a broadcast: {e}")),
    };
    // "The receiver ignores its own uid."
    if msg.uid == shared.uid {
        return;
    }
    let Some(packet) = checked_event(shared, nsp, msg.packet) else {
        return;
    };
    let volatile = msg.opts.flags.volatile == Some(true);
    let sel = select(msg.opts.rooms, msg.opts.except);
    shared.broadcast_to_loops(nsp, sel, packet, volatile, None, None);
}

/// The packet of a broadcast, if it is an event of `nsp` our clients may get.
fn checked_event(shared: &Shared, nsp: &str, mut packet: Packet) -> Option<Packet> {
    if packet.nsp != nsp {
        shared.foreign("a broadcast for another namespace than its channel's");
        return None;
    }
    let limits = crate::proto::sio::DecodeLimits::default();
    let ok = matches!(packet.kind, PacketKind::Event | PacketKind::BinaryEvent)
        && crate::proto::sio::validate(&packet, &limits).is_ok()
        && crate::proto::sio::event_name(&packet)
            .is_some_and(|e| crate::validate::validate_event(e).is_ok());
    if !ok {
        shared.foreign("a broadcast that is not an event clients may get");
        return None;
    }
    packet.id = None;
    Some(packet)
}

fn publisher(
    shared: Arc<Shared>,
    client: Client,
    mut conn: Option<Connection>,
    publishes: Receiver<Publish>,
) {
    let mut backoff = Duration::from_millis(100);
    while !shared.stop.load(Ordering::Acquire) {
        let first = match publishes.recv_timeout(TICK) {
            Ok(p) => p,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < 512 {
            match publishes.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            match connect(&client, shared.cfg.io_timeout) {
                Ok(c) => {
                    conn = Some(c);
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    log::warn!("socket.io adapter: publisher cannot reach Redis: {e}");
                    for _ in &batch {
                        shared.handle.counters().cluster_dropped();
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        let mut pipe = redis::pipe();
        for p in &batch {
            pipe.cmd("PUBLISH")
                .arg(&p.channel)
                .arg(p.body.as_slice())
                .ignore();
        }
        if let Err(e) = pipe.query::<()>(c) {
            // Pub/sub, as Node's adapter: what did not go out is not retried.
            log::warn!("socket.io adapter: the link to Redis broke: {e}");
            for _ in &batch {
                shared.handle.counters().cluster_dropped();
            }
            conn = None;
        }
    }
}

fn worker(shared: Arc<Shared>, requests: Receiver<Job>) {
    while !shared.stop.load(Ordering::Acquire) {
        match requests.recv_timeout(TICK) {
            Ok(job) => work(&shared, job),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The loops' answers to a request, as many as came within the I/O timeout.
fn collect(shared: &Shared, answers: &Answer<QueryAnswer>, loops: usize) -> Vec<QueryAnswer> {
    // Called from a handler too (a local query): waiting on an `Answer` wakes the loops it asked.
    let deadline = Instant::now() + shared.cfg.io_timeout;
    let mut out = Vec::with_capacity(loops);
    while out.len() < loops {
        let left = deadline.saturating_duration_since(Instant::now());
        match answers.recv_timeout(left) {
            Ok(a) => out.push(a),
            Err(_) => break,
        }
    }
    out
}

fn work(shared: &Shared, job: Job) {
    match job {
        Job::Answer {
            nsp,
            answers,
            loops,
            then,
        } => {
            let answers = collect(shared, &answers, loops);
            let response = match then {
                Then::Sockets(request_id) => Response::Sockets {
                    request_id,
                    sockets: sockets_of(answers).into_iter().map(|s| s.sid).collect(),
                },
                Then::AllRooms(request_id) => {
                    let mut rooms = BTreeSet::new();
                    for a in answers {
                        rooms.extend(a.rooms);
                    }
                    Response::AllRooms {
                        request_id,
                        rooms: rooms.into_iter().collect(),
                    }
                }
                Then::Fetch(request_id) => Response::FetchSockets {
                    request_id,
                    sockets: sockets_of(answers).into_iter().map(remote_socket).collect(),
                },
                Then::Done(request_id) => {
                    if answers.iter().all(|a| a.selected == 0) {
                        return;
                    }
                    Response::Done { request_id }
                }
            };
            shared.respond(&nsp, &response);
        }
        Job::ServerSideEmit {
            nsp,
            request_id,
            event,
            args,
        } => {
            let Some(handler) = shared.on_server_side_emit.clone() else {
                return;
            };
            let answer = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handler(&event, &args)
            })) {
                Ok(a) => a,
                Err(_) => {
                    log::error!("socket.io adapter: the serverSideEmit handler panicked");
                    None
                }
            };
            if let (Some(request_id), Some(data)) = (request_id, answer) {
                shared.respond(
                    &nsp,
                    &Response::ServerSideEmit {
                        request_id,
                        data: Some(data),
                    },
                );
            }
        }
    }
}

/// The sockets in `rooms` and in none of `except` (every socket of the namespace when `rooms`
/// is empty).
fn select(rooms: Vec<String>, except: Vec<String>) -> Selection {
    Selection { rooms, except }
}

fn by_sid(sid: String) -> Selection {
    Selection {
        rooms: vec![sid],
        except: Vec::new(),
    }
}

fn sockets_of(answers: Vec<QueryAnswer>) -> Vec<AdapterSocket> {
    answers.into_iter().flat_map(|a| a.sockets).collect()
}

/// A socket as Node's `fetchSockets` gives it: its handshake as far as tidings keeps it, and
/// as `data` the identity the authentication hook gave it.
fn remote_socket(s: AdapterSocket) -> RemoteSocket {
    let handshake = serde_json::json!({
        "headers": {},
        "time": "",
        "address": s.address.unwrap_or_default(),
        "xdomain": false,
        "secure": false,
        "issued": 0,
        "url": s.url,
        "query": {},
        "auth": {},
    });
    RemoteSocket {
        id: s.sid,
        handshake,
        rooms: s.rooms,
        data: s
            .identity
            .map(|i| serde_json::json!({"user": i.user, "tenant": i.tenant})),
    }
}

/// A request of the Node cluster, on the subscriber's thread: the loops get their part now
/// (in order with the broadcasts), and the worker what is left to do.
fn dispatch(shared: &Arc<Shared>, nsp: &str, request: Request) -> Option<Job> {
    // This node's own request: it did its part before it asked ("a node ignores the requests
    // it made", as the Node adapter does by request id).
    let own = match &request {
        Request::Sockets { uid, .. }
        | Request::AllRooms { uid, .. }
        | Request::Fetch { uid, .. }
        | Request::ServerSideEmit { uid, .. }
        | Request::Broadcast { uid, .. } => *uid == shared.uid,
        Request::Join { uid, .. }
        | Request::Leave { uid, .. }
        | Request::Disconnect { uid, .. } => uid.as_deref() == Some(shared.uid.as_str()),
        _ => false,
    };
    if own {
        return None;
    }
    let ask = |sel: Selection, action: AdapterAction, then: Option<Then>| {
        let (rx, loops) = shared.ask_loops(nsp, sel, action);
        then.map(|then| Job::Answer {
            nsp: nsp.to_string(),
            answers: rx,
            loops,
            then,
        })
    };
    match request {
        Request::Sockets {
            request_id, rooms, ..
        } => {
            let sel = Selection {
                rooms,
                except: Vec::new(),
            };
            ask(sel, AdapterAction::List, Some(Then::Sockets(request_id)))
        }
        Request::AllRooms { request_id, .. } => ask(
            Selection::default(),
            AdapterAction::Rooms,
            Some(Then::AllRooms(request_id)),
        ),
        Request::Fetch {
            request_id, opts, ..
        } => ask(
            select(opts.rooms, opts.except),
            AdapterAction::List,
            Some(Then::Fetch(request_id)),
        ),
        Request::Join { opts, rooms, .. } => {
            let rooms = app_rooms(shared, rooms);
            ask(
                select(opts.rooms, opts.except),
                AdapterAction::Join(rooms),
                None,
            )
        }
        Request::Leave { opts, rooms, .. } => {
            let rooms = app_rooms(shared, rooms);
            ask(
                select(opts.rooms, opts.except),
                AdapterAction::Leave(rooms),
                None,
            )
        }
        Request::Disconnect { opts, close, .. } => ask(
            select(opts.rooms, opts.except),
            AdapterAction::Disconnect { close },
            None,
        ),
        Request::SocketJoin {
            request_id,
            sid,
            room,
            ..
        } => {
            let rooms = app_rooms(shared, vec![room]);
            ask(
                by_sid(sid),
                AdapterAction::Join(rooms),
                Some(Then::Done(request_id)),
            )
        }
        Request::SocketLeave {
            request_id,
            sid,
            room,
            ..
        } => ask(
            by_sid(sid),
            AdapterAction::Leave(vec![room]),
            Some(Then::Done(request_id)),
        ),
        Request::SocketDisconnect {
            request_id,
            sid,
            close,
            ..
        } => ask(
            by_sid(sid),
            AdapterAction::Disconnect { close },
            Some(Then::Done(request_id)),
        ),
        Request::ServerSideEmit {
            request_id, data, ..
        } => {
            let Some((Value::String(event), args)) = data.split_first() else {
                shared.foreign("a serverSideEmit without an event name");
                return None;
            };
            Some(Job::ServerSideEmit {
                nsp: nsp.to_string(),
                request_id,
                event: event.clone(),
                args: args.to_vec(),
            })
        }
        Request::Broadcast {
            request_id,
            packet,
            opts,
            ..
        } => {
            ack_broadcast(shared, nsp, request_id, packet, opts);
            None
        }
    }
}

/// Rooms a Node server asks tidings sockets to join: not the reserved ones (membership of those
/// is the identity's, given by the authentication hook).
fn app_rooms(shared: &Shared, rooms: Vec<String>) -> Vec<String> {
    rooms
        .into_iter()
        .filter(|r| {
            let ok = crate::validate::validate_room(r).is_ok();
            if !ok {
                shared.foreign(&format!("a join of room {r:?}"));
            }
            ok
        })
        .collect()
}

/// A Node server's broadcast with acks (`io.timeout(t).emitWithAck`): this node's sockets get it
/// with an ack id each; the asker hears how many, then each client's answer.
fn ack_broadcast(
    shared: &Arc<Shared>,
    nsp: &str,
    request_id: String,
    packet: Packet,
    opts: BroadcastOpts,
) {
    let Some(packet) = checked_event(shared, nsp, packet) else {
        return;
    };
    if shared.ack_broadcasts.fetch_add(1, Ordering::AcqRel) >= MAX_ACK_BROADCASTS {
        shared.ack_broadcasts.fetch_sub(1, Ordering::AcqRel);
        log::warn!(
            "socket.io adapter: too many broadcasts with acks at once; one is answered with no client"
        );
        let count = Response::BroadcastClientCount {
            request_id,
            client_count: 0,
        };
        return shared.respond(nsp, &count);
    }
    let timeout = opts
        .flags
        .timeout
        .map_or(shared.cfg.request_timeout, Duration::from_millis);
    // The loops get it now, in order with the broadcasts; a thread waits for the answers.
    let loops = shared.handle.loop_count();
    let (results_tx, results_rx) = mpsc::channel();
    let merge = AckMerge::new(loops, AckReply::Channel(results_tx));
    let (count_tx, count_rx) = mpsc::channel();
    let sel = select(opts.rooms, opts.except);
    let ack = Some((timeout, merge));
    shared.broadcast_to_loops(nsp, sel, packet, false, ack, Some(count_tx));
    let waiting = AckWait {
        nsp: nsp.to_string(),
        request_id,
        loops,
        counts: count_rx,
        results: results_rx,
        timeout,
    };
    let spawned = std::thread::Builder::new()
        .name("tidings-sio-ack".into())
        .spawn({
            let shared = shared.clone();
            move || {
                waiting.answer(&shared);
                shared.ack_broadcasts.fetch_sub(1, Ordering::AcqRel);
            }
        });
    if spawned.is_err() {
        shared.ack_broadcasts.fetch_sub(1, Ordering::AcqRel);
        log::warn!("socket.io adapter: cannot start a thread for a broadcast with acks");
    }
}

/// A broadcast with acks the loops are delivering: what the asker hears of it.
struct AckWait {
    nsp: String,
    request_id: String,
    loops: usize,
    counts: Receiver<usize>,
    results: Receiver<Vec<crate::engine::AckResult>>,
    timeout: Duration,
}

impl AckWait {
    fn answer(self, shared: &Shared) {
        let deadline = Instant::now() + shared.cfg.io_timeout;
        let mut client_count = 0u64;
        for _ in 0..self.loops {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.counts.recv_timeout(left) {
                Ok(n) => client_count += n as u64,
                Err(_) => break,
            }
        }
        shared.respond(
            &self.nsp,
            &Response::BroadcastClientCount {
                request_id: self.request_id.clone(),
                client_count,
            },
        );
        let results = self
            .results
            .recv_timeout(self.timeout + shared.cfg.io_timeout)
            .unwrap_or_default();
        for r in results {
            if let AckOutcome::Ok { args, attachments } = r.outcome {
                // "The adapter forwards the client's first ack argument."
                shared.respond(
                    &self.nsp,
                    &Response::BroadcastAck {
                        request_id: self.request_id.clone(),
                        packet: args.into_iter().next(),
                        attachments,
                    },
                );
            }
        }
    }
}

/// Which sockets of a namespace a cluster-wide request is for, as socket.io's
/// `io.of(nsp).in(rooms).except(rooms)`: those in any of the rooms (all when none is given) and
/// in none of the excepted ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketSelector {
    nsp: String,
    rooms: Vec<String>,
    except: Vec<String>,
}

impl SocketSelector {
    /// Every socket of namespace `nsp`.
    pub fn of(nsp: impl Into<String>) -> SocketSelector {
        SocketSelector {
            nsp: nsp.into(),
            rooms: Vec::new(),
            except: Vec::new(),
        }
    }

    /// Only the sockets in `room` (or in any of the rooms given so far).
    pub fn in_room(mut self, room: impl Into<String>) -> SocketSelector {
        self.rooms.push(room.into());
        self
    }

    /// Not the sockets in `room`.
    pub fn except(mut self, room: impl Into<String>) -> SocketSelector {
        self.except.push(room.into());
        self
    }

    fn opts(&self) -> aw::RoomsOpts {
        aw::RoomsOpts {
            rooms: self.rooms.clone(),
            except: self.except.clone(),
        }
    }

    fn selection(&self) -> Selection {
        Selection {
            rooms: self.rooms.clone(),
            except: self.except.clone(),
        }
    }
}

/// A socket of some server of the cluster, as `fetchSockets` gives it.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteSocketInfo {
    /// Its socket id.
    pub id: String,
    /// Its rooms (its id among them).
    pub rooms: Vec<String>,
    /// Its `socket.data` (a tidings socket's: `{user, tenant}`); `None` when it has none.
    pub data: Option<Value>,
    /// Its handshake, as its server gave it.
    pub handshake: Value,
}

impl From<RemoteSocket> for RemoteSocketInfo {
    fn from(s: RemoteSocket) -> Self {
        RemoteSocketInfo {
            id: s.id,
            rooms: s.rooms,
            data: s.data,
            handshake: s.handshake,
        }
    }
}

/// The Node.js socket.io cluster this server is a node of ([`crate::Handle::socketio_cluster`]):
/// the requests of socket.io's server API that span every server — this one included.
#[derive(Clone)]
pub struct SocketIoCluster {
    adapter: Arc<Adapter>,
}

impl std::fmt::Debug for SocketIoCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SocketIoCluster({})", self.adapter.shared.uid)
    }
}

fn unavailable(why: impl Into<String>) -> crate::BroadcastError {
    crate::BroadcastError::ClusterUnavailable(why.into())
}

impl SocketIoCluster {
    pub(crate) fn new(adapter: Arc<Adapter>) -> SocketIoCluster {
        SocketIoCluster { adapter }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.adapter.shared
    }

    fn check(&self, sel: &SocketSelector) -> Result<(), crate::BroadcastError> {
        if !self.shared().cfg.namespaces.contains(&sel.nsp) {
            return Err(crate::BroadcastError::InvalidRoom(format!(
                "namespace {:?} is not shared with the cluster",
                sel.nsp
            )));
        }
        // A selector may name the reserved rooms of users and tenants.
        for r in sel.rooms.iter().chain(&sel.except) {
            let reserved = r.starts_with(crate::engine::adapter::RESERVED_ROOM_PREFIX);
            if !reserved {
                crate::validate::validate_room(r)?;
            }
        }
        Ok(())
    }

    /// `fetchSockets`: the sockets `sel` selects on every server (this one's first).
    pub fn fetch_sockets(
        &self,
        sel: &SocketSelector,
    ) -> Result<Vec<RemoteSocketInfo>, crate::BroadcastError> {
        self.check(sel)?;
        let shared = self.shared();
        let local = sockets_of(shared.query(&sel.nsp, sel.selection(), AdapterAction::List));
        let mut out: Vec<RemoteSocketInfo> = local
            .into_iter()
            .map(|s| RemoteSocketInfo::from(remote_socket(s)))
            .collect();
        let request_id = shared.new_request_id();
        let request = Request::Fetch {
            uid: shared.uid.clone(),
            request_id: request_id.clone(),
            opts: sel.opts(),
        };
        let responses = shared.ask(&sel.nsp, &request_id, &request)?;
        for r in responses {
            if let Response::FetchSockets { sockets, .. } = r {
                out.extend(sockets.into_iter().map(RemoteSocketInfo::from));
            }
        }
        Ok(out)
    }

    /// `socketsJoin`: the sockets `sel` selects on every server join `rooms`.
    pub fn sockets_join(
        &self,
        sel: &SocketSelector,
        rooms: &[&str],
    ) -> Result<(), crate::BroadcastError> {
        self.change_rooms(sel, rooms, true)
    }

    /// `socketsLeave`: they leave `rooms`.
    pub fn sockets_leave(
        &self,
        sel: &SocketSelector,
        rooms: &[&str],
    ) -> Result<(), crate::BroadcastError> {
        self.change_rooms(sel, rooms, false)
    }

    fn change_rooms(
        &self,
        sel: &SocketSelector,
        rooms: &[&str],
        join: bool,
    ) -> Result<(), crate::BroadcastError> {
        self.check(sel)?;
        for r in rooms {
            crate::validate::validate_room(r)?;
        }
        let rooms: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
        let (action, request) = if join {
            let request = Request::Join {
                uid: Some(self.shared().uid.clone()),
                opts: sel.opts(),
                rooms: rooms.clone(),
            };
            (AdapterAction::Join(rooms), request)
        } else {
            let request = Request::Leave {
                uid: Some(self.shared().uid.clone()),
                opts: sel.opts(),
                rooms: rooms.clone(),
            };
            (AdapterAction::Leave(rooms), request)
        };
        // This server's sockets first: when it returns, they are in (or out of) the rooms.
        self.shared().query(&sel.nsp, sel.selection(), action);
        self.shared().tell(&sel.nsp, &request)
    }

    /// `disconnectSockets`: they are disconnected (`close`: their whole connection).
    pub fn disconnect_sockets(
        &self,
        sel: &SocketSelector,
        close: bool,
    ) -> Result<(), crate::BroadcastError> {
        self.check(sel)?;
        self.shared().query(
            &sel.nsp,
            sel.selection(),
            AdapterAction::Disconnect { close },
        );
        let request = Request::Disconnect {
            uid: Some(self.shared().uid.clone()),
            opts: sel.opts(),
            close,
        };
        self.shared().tell(&sel.nsp, &request)
    }

    /// `io.timeout(timeout).emitWithAck(event, ...args)` on the sockets `sel` selects on every
    /// server: each client's answer (its first argument), this server's first. Past `timeout`
    /// with answers missing, an error (as in socket.io).
    pub fn emit_with_ack(
        &self,
        sel: &SocketSelector,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Vec<Value>, crate::BroadcastError> {
        self.check(sel)?;
        crate::validate::validate_event(event)?;
        let shared = self.shared();
        let deadline = Instant::now() + timeout;
        let packet = Packet::event(sel.nsp.as_str(), event, args, None);
        // This server's part.
        let loops = shared.handle.loop_count();
        let (local_tx, local_rx) = answer_channel();
        let merge = AckMerge::new(loops, AckReply::Channel(local_tx));
        let ack = Some((timeout, merge));
        shared.broadcast_to_loops(&sel.nsp, sel.selection(), packet.clone(), false, ack, None);
        // The others': each says how many clients it reached, then each client's answer.
        let request_id = shared.new_request_id();
        let request = Request::Broadcast {
            uid: shared.uid.clone(),
            request_id: request_id.clone(),
            packet,
            opts: BroadcastOpts {
                rooms: sel.rooms.clone(),
                except: sel.except.clone(),
                flags: BroadcastFlags {
                    timeout: u64::try_from(timeout.as_millis()).ok(),
                    ..BroadcastFlags::default()
                },
            },
        };
        let rx = shared.expect_responses(&request_id);
        let servers = shared.publish_request(&sel.nsp, &request);
        let servers = match servers {
            Ok(n) => n.saturating_sub(1),
            Err(e) => {
                shared.forget_request(&request_id);
                return Err(e);
            }
        };
        let (mut counted, mut expected, mut remote) = (0usize, 0usize, Vec::new());
        while counted < servers || remote.len() < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Response::BroadcastClientCount { client_count, .. }) => {
                    counted += 1;
                    expected += usize::try_from(client_count).unwrap_or(usize::MAX);
                }
                Ok(Response::BroadcastAck { packet, .. }) => {
                    remote.push(packet.unwrap_or(Value::Null));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        shared.forget_request(&request_id);
        let left = deadline.saturating_duration_since(Instant::now()) + shared.cfg.io_timeout;
        let local = local_rx.recv_timeout(left).unwrap_or_default();
        let local_total = local.len();
        let mut out: Vec<Value> = local
            .into_iter()
            .filter_map(|r| match r.outcome {
                AckOutcome::Ok { args, .. } => Some(args.into_iter().next().unwrap_or(Value::Null)),
                _ => None,
            })
            .collect();
        let local_missing = local_total - out.len();
        let complete = counted >= servers && remote.len() >= expected && local_missing == 0;
        out.extend(remote);
        if !complete {
            return Err(unavailable(format!(
                "operation has timed out with {} answers",
                out.len()
            )));
        }
        Ok(out)
    }

    /// `serverSideEmit(event, ...args)` to every other server of namespace `/`.
    pub fn server_side_emit(
        &self,
        event: &str,
        args: Vec<Value>,
    ) -> Result<(), crate::BroadcastError> {
        crate::validate::validate_event(event)?;
        let mut data = vec![Value::String(event.to_string())];
        data.extend(args);
        let request = Request::ServerSideEmit {
            uid: self.shared().uid.clone(),
            request_id: None,
            data,
        };
        self.shared().tell("/", &request)
    }

    /// `serverSideEmitWithAck`: every other server's answer, within `timeout` (past it, an
    /// error, as in socket.io).
    pub fn server_side_emit_with_ack(
        &self,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Vec<Value>, crate::BroadcastError> {
        crate::validate::validate_event(event)?;
        let shared = self.shared();
        let mut data = vec![Value::String(event.to_string())];
        data.extend(args);
        let request_id = shared.new_request_id();
        let request = Request::ServerSideEmit {
            uid: shared.uid.clone(),
            request_id: Some(request_id.clone()),
            data,
        };
        let responses = shared.ask_within("/", &request_id, &request, timeout)?;
        Ok(responses
            .into_iter()
            .filter_map(|r| match r {
                Response::ServerSideEmit { data, .. } => Some(data.unwrap_or(Value::Null)),
                _ => None,
            })
            .collect())
    }
}

impl Shared {
    fn new_request_id(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.uid)
    }

    /// A Redis connection for requests made by the application (its own, so a request never
    /// waits behind the publisher's queue).
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, crate::BroadcastError> {
        let mut guard = self.requests_conn.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let client =
                Client::open(self.cfg.url.as_str()).map_err(|e| unavailable(e.to_string()))?;
            let conn =
                connect(&client, self.cfg.io_timeout).map_err(|e| unavailable(e.to_string()))?;
            *guard = Some(conn);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(unavailable("no Redis connection"));
        };
        match f(conn) {
            Ok(v) => Ok(v),
            Err(e) => {
                *guard = None;
                Err(unavailable(format!("Redis: {e}")))
            }
        }
    }

    /// Publishes a request nobody answers.
    fn tell(&self, nsp: &str, request: &Request) -> Result<(), crate::BroadcastError> {
        let channel = aw::request_channel(&self.cfg.key, nsp);
        let body = aw::encode_request(request);
        self.with_conn(|c| {
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(body)
                .query::<i64>(c)
        })?;
        Ok(())
    }

    fn ask(
        &self,
        nsp: &str,
        request_id: &str,
        request: &Request,
    ) -> Result<Vec<Response>, crate::BroadcastError> {
        self.ask_within(nsp, request_id, request, self.cfg.request_timeout)
    }

    /// Publishes a request every other server answers, and waits (at most `timeout`) for their
    /// answers: as many as Redis counts subscribers of the request channel, less this one.
    fn ask_within(
        &self,
        nsp: &str,
        request_id: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Vec<Response>, crate::BroadcastError> {
        let rx = self.expect_responses(request_id);
        let servers = match self.publish_request(nsp, request) {
            Ok(n) => n,
            Err(e) => {
                self.forget_request(request_id);
                return Err(e);
            }
        };
        let expected = servers.saturating_sub(1);
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(expected);
        while out.len() < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(r) => out.push(r),
                Err(_) => break,
            }
        }
        self.forget_request(request_id);
        if out.len() < expected {
            return Err(unavailable(format!(
                "timeout reached: only {} responses received out of {expected}",
                out.len()
            )));
        }
        Ok(out)
    }

    /// Publishes a request; how many servers listen on the request channel (this one too).
    fn publish_request(
        &self,
        nsp: &str,
        request: &Request,
    ) -> Result<usize, crate::BroadcastError> {
        let channel = aw::request_channel(&self.cfg.key, nsp);
        let body = aw::encode_request(request);
        // "The adapter asks Redis how many servers listen on the request channel."
        let servers = self.with_conn(|c| {
            let (_, servers): (String, i64) =
                redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query(c)?;
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(body)
                .query::<i64>(c)?;
            Ok(servers)
        })?;
        Ok(usize::try_from(servers).unwrap_or(0))
    }

    fn forget_request(&self, request_id: &str) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(request_id);
    }

    /// A response on the response channel, for the request of this node that waits for it.
    fn on_response(&self, payload: &[u8]) {
        let Ok(response) = aw::decode_response(payload, &self.limits) else {
            return;
        };
        let id = match &response {
            Response::Sockets { request_id, .. }
            | Response::FetchSockets { request_id, .. }
            | Response::AllRooms { request_id, .. }
            | Response::Done { request_id }
            | Response::ServerSideEmit { request_id, .. }
            | Response::BroadcastClientCount { request_id, .. }
            | Response::BroadcastAck { request_id, .. } => request_id.clone(),
        };
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = waiting.get(&id) {
            // An empty fetch answer reads as a SOCKETS answer: no sockets either way.
            let response = match response {
                Response::Sockets {
                    request_id,
                    sockets,
                } if sockets.is_empty() => Response::FetchSockets {
                    request_id,
                    sockets: Vec::new(),
                },
                other => other,
            };
            let _ = tx.send(response);
        }
    }
}
