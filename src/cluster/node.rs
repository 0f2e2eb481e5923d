//! The node side of a cluster: its settings, the handle's part (what is published, what waits
//! for replies) and what the publisher and subscriber threads share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::link;
use super::wire::{self, BroadcastMsg, Bus};
use crate::engine::fanout::Routed;
use crate::engine::session_log::{RecordedSession, SessionWrite};
use crate::engine::{
    room_args, AckCallback as EngineAckCallback, AckReply, AckResult, AppEvent, AppEvents, Command,
    Handoff, HandoffAnswer, Identity, Reach, ReachReply, Target, Transports,
};
use crate::error::BroadcastError;
use crate::server::Handle;

/// How a server joins a cluster ([`crate::ServerBuilder::cluster`]).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The Redis server, as `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// The prefix of every key and channel (nodes with the same prefix on the same Redis are one
    /// cluster). Default: `"tidings"`.
    pub prefix: String,
    /// Sends waiting for the publisher thread; past it a send is refused. Default: 65 536.
    pub queue: usize,
    /// How long a send accepted before the link to Redis broke is retried before it is given
    /// up (and counted in `Metrics::cluster_dropped`). Default: 10 s.
    pub retry_for: Duration,
    /// How long `join_room`, `leave_room` and `user_rooms` wait for Redis. Default: 5 s.
    pub request_timeout: Duration,
    /// Connecting, and each Redis read or write. Default: 2 s.
    pub io_timeout: Duration,
    /// How long a node that shuts down keeps its closed Socket.IO sockets (with recovery on) for
    /// the nodes their clients reconnect through, which take them over with everything they
    /// missed (a rolling deploy loses no session). It stops as soon as none is left. Default:
    /// 10 s; zero: not at all (those clients get fresh sessions).
    pub handoff_grace: Duration,
}

impl ClusterConfig {
    /// The defaults, on the Redis server at `url`.
    pub fn new(url: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            url: url.into(),
            prefix: "tidings".to_string(),
            queue: 65_536,
            retry_for: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(2),
            handoff_grace: Duration::from_secs(10),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= 64
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'#');
        if !prefix_ok {
            return Err(
                "cluster prefix must be 1-64 printable ASCII characters without '#'".into(),
            );
        }
        if self.queue == 0 {
            return Err("cluster queue must hold at least one send".into());
        }
        if self.io_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err("cluster timeouts must be above zero".into());
        }
        Ok(())
    }
}

/// Keys and channels of one cluster.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    pub(crate) epoch: String,
    pub(crate) seq: String,
    pub(crate) log: String,
    pub(crate) rooms: String,
    pub(crate) memberships: String,
    pub(crate) bus: String,
    /// The nodes that keep socket records, with when each last said it is alive.
    pub(crate) nodes: String,
    pub(crate) prefix: String,
}

impl Names {
    fn new(prefix: &str) -> Names {
        Names {
            epoch: format!("{prefix}:epoch"),
            seq: format!("{prefix}:seq"),
            log: format!("{prefix}:log"),
            rooms: format!("{prefix}:rooms"),
            memberships: format!("{prefix}:memberships"),
            bus: format!("{prefix}#bus"),
            nodes: format!("{prefix}:nodes"),
            prefix: prefix.to_string(),
        }
    }

    /// A node's reply channel.
    pub(crate) fn node(&self, node: u64) -> String {
        format!("{}#node#{node:016x}", self.prefix)
    }

    /// A node's last published counter (the script drops what it already published).
    pub(crate) fn dedup(&self, node: u64) -> String {
        format!("{}:dedup:{node:016x}", self.prefix)
    }

    /// A node's records of its recoverable sockets (`claim.lua` builds the same name).
    pub(crate) fn sessions(&self, node: u64) -> String {
        format!("{}:sess:{node:016x}", self.prefix)
    }

    /// The events a node emitted to one socket alone (`claim.lua` builds the same name).
    pub(crate) fn emits(&self, node: u64, pid: &str) -> String {
        format!("{}:emits:{node:016x}:{pid}", self.prefix)
    }
}

/// A socket's field in its node's records: its `pid` and who it was, so that a claim under
/// another identity finds nothing (and takes nothing away).
pub(crate) fn session_field(pid: &str, user: Option<&Identity>) -> String {
    match user {
        Some(u) => format!("{pid}|{}", user_field(u)),
        None => format!("{pid}|"),
    }
}

/// A write of a node's socket records (see `session.lua`).
#[derive(Debug)]
pub(crate) enum SessionOp {
    Record(Vec<u8>),
    Emit(Vec<u8>),
    Forget,
    /// The node is alive: its records are kept for another while.
    Alive,
}

impl SessionOp {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            SessionOp::Record(_) => "record",
            SessionOp::Emit(_) => "emit",
            SessionOp::Forget => "forget",
            SessionOp::Alive => "alive",
        }
    }
}

/// A socket whose records could not all be written: nothing more is written for it, and what
/// was is deleted (a record with a hole would give a replay with a hole).
#[derive(Debug)]
pub(crate) struct Lost {
    pub(crate) field: String,
    /// The socket is gone too: once deleted, nothing is left to do.
    pub(crate) forgotten: bool,
    /// The delete is queued.
    pub(crate) purged: bool,
}

/// What a claim of a dead node's socket leads to.
pub(crate) type ClaimDone = Box<dyn FnOnce(Option<RecordedSession>) + Send>;

/// A user as a field of the rooms hash: unambiguous for any tenant and user text.
pub(crate) fn user_field(user: &Identity) -> String {
    format!("{}:{}{}", user.tenant.len(), user.tenant, user.user)
}

/// The inverse of `user_field`.
pub(crate) fn parse_user_field(field: &str) -> Option<Identity> {
    let (len, rest) = field.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let tenant = rest.get(..len)?;
    let user = rest.get(len..)?;
    Some(Identity::new(tenant, user))
}

/// What the script does with a message.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// Numbered and kept in the history.
    Keep,
    /// Published only (volatile broadcasts, ack requests, other namespaces).
    Pass,
    /// A user joins a room (checked against the limits).
    Join { field: String, room: String },
    /// A user leaves a room.
    Leave { field: String, room: String },
}

/// What the sender of a publish hears back.
pub(crate) enum Done {
    Nothing,
    /// `join_room` / `leave_room`.
    Room(mpsc::Sender<Result<(), BroadcastError>>),
    /// A request that every node answers: the number of subscribers is the number of replies.
    Request(u64),
}

/// A job for the publisher thread.
pub(crate) enum Job {
    Publish {
        op: Op,
        body: Vec<u8>,
        done: Done,
        queued: Instant,
    },
    /// `user_rooms`: read from Redis, so any node reads every write that returned.
    Rooms {
        field: String,
        reply: mpsc::Sender<Result<Vec<String>, BroadcastError>>,
    },
    /// A reply to another node's request (not retried: the asker stops waiting at its deadline).
    Reply { node: u64, body: Vec<u8> },
    /// A write of this node's socket records (retried like a publish).
    Session {
        pid: String,
        field: String,
        op: SessionOp,
        queued: Instant,
        /// A delete of a lost socket's records, which no loss filter holds back.
        purge: bool,
    },
    /// Takes a dead node's record of a socket, if one is there.
    Claim {
        field: String,
        pid: String,
        reply: ClaimDone,
    },
}

/// A request waiting for every node's reply.
pub(crate) struct Pending {
    pub(crate) expected: Option<usize>,
    pub(crate) got: usize,
    pub(crate) deadline: Instant,
    pub(crate) acc: Acc,
}

pub(crate) enum Acc {
    Acks {
        results: Vec<AckResult>,
        reply: AckReply,
    },
    Reach {
        total: Reach,
        reply: ReachReply,
    },
    /// A claim of a waiting socket: the node that had it answers `Found`.
    Handoff {
        found: Option<Box<Handoff>>,
        /// Whether a node had it but could not fill the gap (then nobody has it any more).
        expired: bool,
        done: HandoffDone,
    },
}

/// What a claim leads to: the engine's decision command, with the socket when it was found
/// (and whether a node had it but could not fill the gap).
pub(crate) type HandoffDone = Box<dyn FnOnce(Option<Box<Handoff>>, bool) + Send>;

/// Requests of this node waiting for replies, by id.
#[derive(Default)]
pub(crate) struct Requests {
    map: HashMap<u64, Pending>,
}

impl Requests {
    /// Counts one node's reply in; the finished request, if that was the last.
    pub(crate) fn reply(&mut self, id: u64, reply: wire::Reply) -> Option<Pending> {
        let p = self.map.get_mut(&id)?;
        p.got += 1;
        match (&mut p.acc, reply) {
            (Acc::Acks { results, .. }, wire::Reply::Acks { results: mut r, .. }) => {
                results.append(&mut r);
            }
            (Acc::Reach { total, .. }, wire::Reply::Reach { reach, .. }) => {
                total.sse += reach.sse;
                total.socketio += reach.socketio;
            }
            (Acc::Handoff { found, expired, .. }, wire::Reply::Handoff { answer, .. }) => {
                match answer {
                    HandoffAnswer::Found(h) if found.is_none() => *found = Some(h),
                    HandoffAnswer::Found(_) => {
                        log::warn!("cluster: two nodes handed over the same socket");
                    }
                    HandoffAnswer::Expired => *expired = true,
                    HandoffAnswer::NotHere => {}
                }
            }
            _ => log::warn!("cluster: a reply of the wrong kind for request {id}"),
        }
        self.finished(id)
    }

    /// Redis published the request to `n` subscribers.
    pub(crate) fn expect(&mut self, id: u64, n: usize) -> Option<Pending> {
        self.map.get_mut(&id)?.expected = Some(n);
        self.finished(id)
    }

    fn finished(&mut self, id: u64) -> Option<Pending> {
        let p = self.map.get(&id)?;
        match p.expected {
            Some(n) if p.got >= n => self.map.remove(&id),
            _ => None,
        }
    }

    /// The requests past their deadline (a node died before replying, or the publish failed).
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<Pending> {
        let ids: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.map.remove(&id))
            .collect()
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<Pending> {
        self.map.remove(&id)
    }
}

/// What the handle, the publisher and the subscriber share.
pub(crate) struct Shared {
    pub(crate) node: u64,
    pub(crate) names: Names,
    pub(crate) cfg: ClusterConfig,
    /// The publisher's link to Redis is up (sends are refused while it is not).
    pub(crate) connected: AtomicBool,
    pub(crate) stop: AtomicBool,
    pub(crate) requests: Mutex<Requests>,
    pub(crate) next_request: AtomicU64,
    pub(crate) jobs: SyncSender<Job>,
    /// For ack callbacks, which run on the dispatcher thread.
    pub(crate) app_events: Mutex<Option<mpsc::Sender<AppEvents>>>,
    /// With recovery on: how long this node's socket records outlive its last sign of life
    /// (the longest a client may stay away, plus a margin), and how many emits a socket keeps.
    pub(crate) records: Option<(Duration, usize)>,
    /// Sockets whose records could not all be written, by `pid`.
    pub(crate) lost: Mutex<HashMap<String, Lost>>,
}

impl Shared {
    pub(crate) fn requests(&self) -> std::sync::MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lost(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lost>> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `pid`'s records have a hole (`forgotten`: the socket is gone as well).
    pub(crate) fn mark_lost(&self, pid: &str, field: &str, forgotten: bool) {
        let mut lost = self.lost();
        let e = lost.entry(pid.to_string()).or_insert_with(|| Lost {
            field: field.to_string(),
            forgotten: false,
            purged: false,
        });
        e.forgotten |= forgotten;
        e.purged = false;
    }

    /// The session log's sink: called under the hub lock, so it only queues (a full queue
    /// makes that socket's records lost, never a wait).
    fn session_write(&self, w: SessionWrite) {
        if self.records.is_none() {
            return;
        }
        let (pid, field, op) = match w {
            SessionWrite::Record(rec) => {
                let field = session_field(&rec.pid, rec.identity.as_ref());
                let bytes = wire::encode_record(&rec);
                (rec.pid, field, SessionOp::Record(bytes))
            }
            SessionWrite::Emit {
                pid,
                identity,
                seq,
                text,
                attachments,
            } => {
                let field = session_field(&pid, identity.as_ref());
                let bytes = wire::encode_emit(seq, &text, &attachments);
                (pid, field, SessionOp::Emit(bytes))
            }
            SessionWrite::Forget { pid, identity } => {
                let field = session_field(&pid, identity.as_ref());
                (pid, field, SessionOp::Forget)
            }
        };
        let forget = matches!(op, SessionOp::Forget);
        let job = Job::Session {
            pid,
            field,
            op,
            queued: Instant::now(),
            purge: false,
        };
        if let Err(e) = self.jobs.try_send(job) {
            if let Job::Session { pid, field, .. } = refused(e) {
                log::warn!("cluster: the publish queue is full; socket {pid} cannot be recovered on another node");
                self.mark_lost(&pid, &field, forget);
            }
        }
    }
}

/// Hands a finished request its answer.
pub(crate) fn complete(handle: &Handle, shared: &Shared, p: Pending) {
    match p.acc {
        Acc::Reach { total, reply } => reply.send(total),
        Acc::Handoff {
            found,
            expired,
            done,
        } => done(found, expired),
        Acc::Acks { mut results, reply } => {
            results.sort_by_key(|r| r.socket);
            match reply {
                AckReply::Channel(tx) => {
                    let _ = tx.send(results);
                }
                AckReply::Callback(callback) => {
                    let events = shared
                        .app_events
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    if let Some(events) = events {
                        handle.backlog_add();
                        let callback = EngineAckCallback(callback);
                        if events
                            .send(vec![AppEvent::AckComplete { callback, results }])
                            .is_err()
                        {
                            handle.backlog_sub();
                        }
                    }
                }
                AckReply::Merge(_) => {}
            }
        }
    }
}

/// What `Cluster::submit` did with a command.
pub(crate) enum Submitted {
    /// Published (or refused): the caller's answer.
    Done(Result<Routed, BroadcastError>),
    /// Not a cluster command: the caller routes it locally.
    Local(Box<Command>),
}

/// A running cluster link: the publisher and subscriber threads of this node.
pub(crate) struct Cluster {
    pub(crate) shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster({:016x})", self.shared.node)
    }
}

/// How long a CONNECT waits for the other nodes' answers to its claim (they answer within a
/// round trip through Redis; this bounds a node that died before answering).
const CLAIM_WAIT: Duration = Duration::from_secs(2);

/// How much longer than `max_disconnection_duration` a socket's records outlive its node's last
/// sign of life (a client that lost its connection may take a ping timeout to notice).
const RECORD_MARGIN: Duration = Duration::from_secs(120);

/// The job a full or closed queue gave back.
fn refused(e: TrySendError<Job>) -> Job {
    match e {
        TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
    }
}

fn unavailable(why: &str) -> BroadcastError {
    BroadcastError::ClusterUnavailable(why.to_string())
}

impl Cluster {
    /// Connects (Redis must answer now), loads the memberships and the history into the hub,
    /// subscribes, and starts the threads. `handle` is the node's local handle (no cluster).
    pub(crate) fn start(
        cfg: ClusterConfig,
        node: u64,
        handle: Handle,
        app_events: mpsc::Sender<AppEvents>,
    ) -> Result<Arc<Cluster>, String> {
        cfg.validate()?;
        let records = handle.config().connection_state_recovery.as_ref().map(|r| {
            (
                r.max_disconnection_duration + RECORD_MARGIN,
                handle.config().sse_history_events.max(1),
            )
        });
        let (jobs, job_rx): (SyncSender<Job>, Receiver<Job>) = mpsc::sync_channel(cfg.queue);
        let shared = Arc::new(Shared {
            node,
            names: Names::new(&cfg.prefix),
            cfg,
            connected: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            requests: Mutex::new(Requests::default()),
            next_request: AtomicU64::new(1),
            jobs,
            app_events: Mutex::new(Some(app_events)),
            records,
            lost: Mutex::new(HashMap::new()),
        });
        if records.is_some() {
            let weak = Arc::downgrade(&shared);
            handle.hub().lock().sessions.set_sink(Box::new(move |w| {
                if let Some(shared) = weak.upgrade() {
                    shared.session_write(w);
                }
            }));
        }
        let threads = link::start(shared.clone(), handle, job_rx)?;
        Ok(Arc::new(Cluster {
            shared,
            threads: Mutex::new(threads),
        }))
    }

    /// The node's loops have closed: waits (at most `handoff_grace`) until the sockets waiting
    /// in its hub have been taken over by other nodes, while the link keeps answering claims.
    pub(crate) fn hand_on(&self, hub: &crate::engine::hub::Hub) {
        let deadline = Instant::now() + self.shared.cfg.handoff_grace;
        while hub.lock().parked.len() > 0 && Instant::now() < deadline && self.connected() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the threads (the server is shutting down); requests still waiting for replies are
    /// dropped, so their callers hear `ServerClosed` at once instead of at their deadline.
    pub(crate) fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared
            .app_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        let waiting = std::mem::take(&mut self.shared.requests().map);
        drop(waiting);
    }

    fn queue(&self, job: Job) -> Result<(), BroadcastError> {
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(BroadcastError::ServerClosed);
        }
        if !self.shared.connected.load(Ordering::Acquire) {
            return Err(unavailable("Redis is unreachable"));
        }
        match self.shared.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(unavailable("the publish queue is full")),
            Err(TrySendError::Disconnected(_)) => Err(BroadcastError::ServerClosed),
        }
    }

    fn request(&self, acc: Acc, wait: Duration) -> u64 {
        let id = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        self.shared.requests().map.insert(
            id,
            Pending {
                expected: None,
                got: 0,
                deadline: Instant::now() + wait,
                acc,
            },
        );
        id
    }

    fn publish(&self, op: Op, msg: &Bus, done: Done) -> Result<(), BroadcastError> {
        let request = match &done {
            Done::Request(id) => Some(*id),
            _ => None,
        };
        let queued = self.queue(Job::Publish {
            op,
            body: wire::encode_bus(msg),
            done,
            queued: Instant::now(),
        });
        if queued.is_err() {
            if let Some(id) = request {
                self.shared.requests().remove(id);
            }
        }
        queued
    }

    /// The cluster's part of `Handle::submit`: the commands every node must see.
    pub(crate) fn submit(&self, cmd: Command) -> Submitted {
        match cmd {
            Command::Broadcast {
                target,
                transports,
                event,
                data,
                volatile,
                reply,
            } => {
                let counted = reply.map(|reply| {
                    let acc = Acc::Reach {
                        total: Reach::default(),
                        reply,
                    };
                    (
                        self.shared.node,
                        self.request(acc, self.shared.cfg.request_timeout),
                    )
                });
                let msg = Bus::Broadcast(BroadcastMsg {
                    target,
                    transports,
                    volatile,
                    event: event.to_string(),
                    sio_args: data.to_string(),
                    sse_data: data.to_string(),
                    counted,
                });
                let op = if volatile { Op::Pass } else { Op::Keep };
                let done = match counted {
                    Some((_, id)) => Done::Request(id),
                    None => Done::Nothing,
                };
                Submitted::Done(self.publish(op, &msg, done).map(|()| Routed::Loops(1)))
            }
            Command::SioEmitToRoom {
                nsp,
                room,
                event,
                args,
                volatile,
            } => {
                let (msg, op) = if nsp == "/" {
                    let (sio_args, sse_data) = room_args(&args);
                    let msg = Bus::Broadcast(BroadcastMsg {
                        target: Target::Room(room),
                        transports: Transports::Both,
                        volatile,
                        event,
                        sio_args,
                        sse_data,
                        counted: None,
                    });
                    (msg, if volatile { Op::Pass } else { Op::Keep })
                } else {
                    let args = serde_json::Value::Array(args).to_string();
                    let msg = Bus::NspRoom {
                        nsp,
                        room,
                        event,
                        args,
                        volatile,
                    };
                    (msg, Op::Pass)
                };
                Submitted::Done(
                    self.publish(op, &msg, Done::Nothing)
                        .map(|()| Routed::Loops(1)),
                )
            }
            Command::UserAck {
                user,
                event,
                data,
                timeout,
                reply,
            } => {
                // Each node times its own sockets out at `timeout`; the replies then need a round
                // trip through Redis.
                let wait = timeout + self.shared.cfg.request_timeout;
                let acc = Acc::Acks {
                    results: Vec::new(),
                    reply,
                };
                let id = self.request(acc, wait);
                let msg = Bus::AckRequest {
                    origin: self.shared.node,
                    request: id,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    user,
                    event,
                    data: data.to_string(),
                };
                Submitted::Done(
                    self.publish(Op::Pass, &msg, Done::Request(id))
                        .map(|()| Routed::Loops(1)),
                )
            }
            other => Submitted::Local(Box::new(other)),
        }
    }

    /// An accepting CONNECT decision for a client that presented a `pid` unknown on this node:
    /// asks the other nodes for the socket first (at most `CLAIM_WAIT`), then hands the engine
    /// the decision with what was found (nothing when Redis is unreachable: a fresh session).
    /// `handle` is the node's local handle.
    pub(crate) fn claim(
        &self,
        handle: &Handle,
        request: u64,
        pid: String,
        offset: Option<String>,
        user: Option<Identity>,
    ) {
        let decision = Ok(user.clone());
        let local = handle.clone();
        let shared = self.shared.clone();
        let (claimed_pid, claimed_offset, claimed_user) =
            (pid.clone(), offset.clone(), user.clone());
        let done: HandoffDone = Box::new(move |handoff, expired| {
            // No live node has it: maybe a dead one left its record.
            if handoff.is_none() && !expired && shared.records.is_some() {
                let field = session_field(&claimed_pid, claimed_user.as_ref());
                let reply: ClaimDone = Box::new(move |recorded| {
                    let recorded = recorded.map(|mut r| {
                        r.offset = claimed_offset;
                        Box::new(r)
                    });
                    let _ = local.command_routed(Command::SioConnectHandoff {
                        request,
                        decision,
                        handoff: None,
                        recorded,
                    });
                });
                let job = Job::Claim {
                    field,
                    pid: claimed_pid,
                    reply,
                };
                if let Err(e) = shared.jobs.try_send(job) {
                    if let Job::Claim { reply, .. } = refused(e) {
                        reply(None);
                    }
                }
                return;
            }
            let _ = local.command_routed(Command::SioConnectHandoff {
                request,
                decision,
                handoff,
                recorded: None,
            });
        });
        let acc = Acc::Handoff {
            found: None,
            expired: false,
            done,
        };
        let id = self.request(acc, CLAIM_WAIT);
        let msg = Bus::Claim {
            origin: self.shared.node,
            request: id,
            pid,
            offset,
            user,
        };
        let queued = self.queue(Job::Publish {
            op: Op::Pass,
            body: wire::encode_bus(&msg),
            done: Done::Request(id),
            queued: Instant::now(),
        });
        if queued.is_err() {
            let p = self.shared.requests().remove(id);
            if let Some(p) = p {
                complete(handle, &self.shared, p);
            }
        }
    }

    /// `join_room` (`joined`) or `leave_room`, once Redis stored it.
    pub(crate) fn room(
        &self,
        user: &Identity,
        room: &str,
        joined: bool,
    ) -> Result<(), BroadcastError> {
        let (tx, rx) = crate::server::answer_channel();
        let field = user_field(user);
        let op = if joined {
            Op::Join {
                field,
                room: room.to_string(),
            }
        } else {
            Op::Leave {
                field,
                room: room.to_string(),
            }
        };
        let msg = Bus::Room {
            user: user.clone(),
            room: room.to_string(),
            joined,
        };
        self.publish(op, &msg, Done::Room(tx))?;
        rx.recv_timeout(self.shared.cfg.request_timeout)
            .map_err(|_| unavailable("Redis did not answer in time"))?
    }

    /// `user_rooms`, read from Redis.
    pub(crate) fn user_rooms(&self, user: &Identity) -> Result<Vec<String>, BroadcastError> {
        let (tx, rx) = crate::server::answer_channel();
        self.queue(Job::Rooms {
            field: user_field(user),
            reply: tx,
        })?;
        rx.recv_timeout(self.shared.cfg.request_timeout)
            .map_err(|_| unavailable("Redis did not answer in time"))?
    }

    /// Whether the link to Redis is up now.
    pub(crate) fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_fields_are_unambiguous() {
        for (t, u) in [
            ("", "alice"),
            ("acme", "bob"),
            ("a:b", "c"),
            ("12", ":3"),
            ("", ""),
        ] {
            let i = Identity::new(t, u);
            assert_eq!(parse_user_field(&user_field(&i)), Some(i));
        }
        assert_ne!(
            user_field(&Identity::new("ab", "c")),
            user_field(&Identity::new("a", "bc"))
        );
        for bad in ["", "x", "5:ab", "-1:a", ":a"] {
            assert_eq!(parse_user_field(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_request_finishes_with_its_last_reply_whichever_comes_first() {
        let (tx, rx) = mpsc::channel();
        let mut r = Requests::default();
        let reach = |n| wire::Reply::Reach {
            request: 1,
            reach: Reach {
                sse: n,
                socketio: 1,
            },
        };
        for expect_first in [true, false] {
            r.map.insert(
                1,
                Pending {
                    expected: None,
                    got: 0,
                    deadline: Instant::now() + Duration::from_secs(60),
                    acc: Acc::Reach {
                        total: Reach::default(),
                        reply: ReachReply::Channel(tx.clone()),
                    },
                },
            );
            if expect_first {
                assert!(r.expect(1, 2).is_none());
                assert!(r.reply(1, reach(1)).is_none());
            } else {
                assert!(r.reply(1, reach(1)).is_none());
                assert!(r.reply(1, reach(2)).is_none());
                let p = r.expect(1, 2);
                assert!(p.is_some());
                continue;
            }
            let p = r.reply(1, reach(2));
            let total = match p {
                Some(Pending {
                    acc: Acc::Reach { total, .. },
                    ..
                }) => Some(total),
                _ => None,
            };
            assert_eq!(
                total,
                Some(Reach {
                    sse: 3,
                    socketio: 2
                })
            );
        }
        assert!(r.map.is_empty());
        drop(rx);
    }
}
