//! The threads of a cluster node and the only code that talks to Redis: the publisher (one
//! connection, pipelined script calls, retries) and the subscriber (the bus and this node's
//! reply channel on one connection, plus one connection for reads: the snapshot at start and
//! the catch-up after a broken link).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Client, Connection, Value as RValue};

use super::wire::{self, Bus, Reply};
use super::{complete, parse_user_field, Done, Job, Op, SessionOp, Shared};
use crate::engine::session_log::RecordedSession;
use crate::engine::{
    hand_off, AckReply, Command, Identity, Payload, ReachMerge, ReachReply, RoomLimit,
};
use crate::error::BroadcastError;
use crate::server::Handle;

const SCRIPT: &str = include_str!("publish.lua");
const SESSION_SCRIPT: &str = include_str!("session.lua");
const CLAIM_SCRIPT: &str = include_str!("claim.lua");
/// How often a node with socket records says it is alive.
const ALIVE_EVERY: Duration = Duration::from_secs(1);
/// A node silent for this long is dead to a claim, even if its reply channel looks open.
const SILENT_DEAD: Duration = Duration::from_secs(10);
/// The publish script's first lines alone: a cluster without an epoch gets one (from Redis's
/// clock, so never one given out before) with an empty sequence, log and rooms.
const NEW_EPOCH: &str = "if redis.call('EXISTS', KEYS[1]) == 0 then \
    local t = redis.call('TIME') \
    redis.call('SET', KEYS[1], t[1] .. string.format('%06d', tonumber(t[2]))) \
    redis.call('SET', KEYS[2], '0') \
    redis.call('DEL', KEYS[3], KEYS[4], KEYS[5]) \
    end return 0";
/// Jobs sent in one pipeline (one round trip).
const BATCH: usize = 512;
/// How often the subscriber looks up from the socket (stop flag, request deadlines).
const TICK: Duration = Duration::from_millis(250);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a stopping publisher keeps sending what it had accepted.
const DRAIN: Duration = Duration::from_secs(2);

fn connect(client: &Client, timeout: Duration) -> redis::RedisResult<Connection> {
    let c = client.get_connection_with_timeout(timeout)?;
    c.set_read_timeout(Some(timeout))?;
    c.set_write_timeout(Some(timeout))?;
    Ok(c)
}

/// Starts both threads; returns once the subscriber has loaded the snapshot (or failed to).
pub(super) fn start(
    shared: Arc<Shared>,
    handle: Handle,
    jobs: Receiver<Job>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let client = Client::open(shared.cfg.url.as_str())
        .map_err(|e| format!("cluster: bad Redis URL: {e}"))?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let subscriber = {
        let (shared, handle, client) = (shared.clone(), handle.clone(), client.clone());
        std::thread::Builder::new()
            .name("tidings-cluster-sub".into())
            .spawn(move || Subscriber::new(shared, handle, client).run(ready_tx))
            .map_err(|e| format!("cluster: cannot start a thread: {e}"))?
    };
    let wait = shared.cfg.io_timeout * 4 + Duration::from_secs(1);
    match ready_rx.recv_timeout(wait) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = subscriber.join();
            return Err(e);
        }
        Err(_) => {
            shared.stop.store(true, Ordering::Release);
            let _ = subscriber.join();
            return Err("cluster: Redis did not answer in time".into());
        }
    }
    let mut publisher = Publisher {
        shared: shared.clone(),
        handle,
        client,
        conn: None,
        sha: String::new(),
        session_sha: String::new(),
        claim_sha: String::new(),
        alive_at: None,
        counter: 0,
        waiting: VecDeque::new(),
    };
    if let Err(e) = publisher.connect() {
        shared.stop.store(true, Ordering::Release);
        let _ = subscriber.join();
        return Err(format!("cluster: cannot reach Redis: {e}"));
    }
    let publisher = std::thread::Builder::new()
        .name("tidings-cluster-pub".into())
        .spawn(move || publisher.run(jobs))
        .map_err(|e| format!("cluster: cannot start a thread: {e}"))?;
    Ok(vec![subscriber, publisher])
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A job with its place in this node's publish order (0: not a publish).
struct Attempt {
    counter: u64,
    job: Job,
}

struct Publisher {
    shared: Arc<Shared>,
    handle: Handle,
    client: Client,
    conn: Option<Connection>,
    sha: String,
    session_sha: String,
    claim_sha: String,
    /// When this node last said it is alive (socket records only).
    alive_at: Option<Instant>,
    /// The last counter given to a publish; the script drops a counter it has seen, so a batch
    /// sent again after a broken link is published once.
    counter: u64,
    /// Taken from the queue, not yet answered by Redis (in order).
    waiting: VecDeque<Attempt>,
}

impl Publisher {
    fn connect(&mut self) -> redis::RedisResult<()> {
        let mut conn = connect(&self.client, self.shared.cfg.io_timeout)?;
        let load = |conn: &mut Connection, script: &str| -> redis::RedisResult<String> {
            redis::cmd("SCRIPT").arg("LOAD").arg(script).query(conn)
        };
        self.sha = load(&mut conn, SCRIPT)?;
        if self.shared.records.is_some() {
            self.session_sha = load(&mut conn, SESSION_SCRIPT)?;
            self.claim_sha = load(&mut conn, CLAIM_SCRIPT)?;
        }
        self.conn = Some(conn);
        self.shared.connected.store(true, Ordering::Release);
        Ok(())
    }

    fn run(mut self, jobs: Receiver<Job>) {
        let mut backoff = BACKOFF_FIRST;
        while !self.shared.stop.load(Ordering::Acquire) {
            if self.conn.is_none() {
                self.give_up_old();
                if self.connect().is_err() {
                    self.pull(&jobs, None);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
                self.handle.counters().cluster_reconnected();
                log::info!("cluster: publisher reconnected to Redis");
                backoff = BACKOFF_FIRST;
            }
            if self.waiting.is_empty() && !self.pull(&jobs, Some(TICK)) {
                break;
            }
            self.say_alive();
            if !self.waiting.is_empty() {
                self.send_batch();
            }
        }
        // Stopping (a deploy, a shutdown): what was accepted before still goes out, within a
        // bound.
        let deadline = Instant::now() + DRAIN;
        while self.conn.is_some() && Instant::now() < deadline {
            self.pull(&jobs, None);
            if self.waiting.is_empty() {
                break;
            }
            self.send_batch();
        }
    }

    /// Moves queued jobs into `waiting` (up to a batch), waiting at most `wait` for the first.
    /// `false`: the queue is closed and everything was sent.
    fn pull(&mut self, jobs: &Receiver<Job>, wait: Option<Duration>) -> bool {
        if let (Some(wait), true) = (wait, self.waiting.is_empty()) {
            match jobs.recv_timeout(wait) {
                Ok(job) => self.push(job),
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
        while self.waiting.len() < BATCH {
            match jobs.try_recv() {
                Ok(job) => self.push(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return !self.waiting.is_empty(),
            }
        }
        true
    }

    /// With socket records: once in a while, this node's records are kept for longer and the
    /// other nodes see it alive; the records of lost sockets are deleted.
    fn say_alive(&mut self) {
        if self.shared.records.is_none() {
            return;
        }
        if self.alive_at.is_some_and(|t| t.elapsed() < ALIVE_EVERY) {
            return;
        }
        self.alive_at = Some(Instant::now());
        let mut purges = Vec::new();
        self.shared.lost().retain(|pid, lost| {
            if !lost.purged {
                lost.purged = true;
                purges.push((pid.clone(), lost.field.clone()));
            }
            !lost.forgotten
        });
        for (pid, field) in purges {
            self.push_attempt(Job::Session {
                pid,
                field,
                op: SessionOp::Forget,
                queued: Instant::now(),
                purge: true,
            });
        }
        self.push_attempt(Job::Session {
            pid: String::new(),
            field: String::new(),
            op: SessionOp::Alive,
            queued: Instant::now(),
            purge: true,
        });
    }

    fn push_attempt(&mut self, job: Job) {
        self.waiting.push_back(Attempt { counter: 0, job });
    }

    fn push(&mut self, job: Job) {
        // Queued before the link broke and still waiting past the retry window: given up.
        let queued = match &job {
            Job::Publish { queued, .. } | Job::Session { queued, .. } => Some(*queued),
            _ => None,
        };
        if queued.is_some_and(|q| q.elapsed() > self.shared.cfg.retry_for) {
            return self.fail(job, "Redis was unreachable for longer than retry_for");
        }
        // A socket whose records have a hole: nothing more is written for it (its records are
        // deleted); once it is gone, neither is anything left to do.
        if let Job::Session {
            pid,
            op,
            purge: false,
            ..
        } = &job
        {
            let mut lost = self.shared.lost();
            if lost.contains_key(pid) {
                if !matches!(op, SessionOp::Forget) {
                    return;
                }
                lost.remove(pid);
            }
        }
        let counter = match job {
            Job::Publish { .. } => {
                self.counter += 1;
                self.counter
            }
            _ => 0,
        };
        self.waiting.push_back(Attempt { counter, job });
    }

    /// Jobs that waited past `retry_for` while Redis was away are failed and counted.
    fn give_up_old(&mut self) {
        let limit = self.shared.cfg.retry_for;
        while let Some(front) = self.waiting.front() {
            let old = match &front.job {
                Job::Publish { queued, .. } | Job::Session { queued, .. } => {
                    queued.elapsed() > limit
                }
                _ => true,
            };
            if !old {
                break;
            }
            if let Some(a) = self.waiting.pop_front() {
                self.fail(a.job, "Redis was unreachable for longer than retry_for");
            }
        }
    }

    fn fail(&self, job: Job, why: &str) {
        let err = || BroadcastError::ClusterUnavailable(why.to_string());
        match job {
            Job::Publish { done, .. } => {
                self.handle.counters().cluster_dropped();
                log::warn!("cluster: a publish was given up: {why}");
                match done {
                    Done::Room(tx) => {
                        let _ = tx.send(Err(err()));
                    }
                    // The request ends at its deadline with the replies it has (none).
                    Done::Request(_) | Done::Nothing => {}
                }
            }
            Job::Rooms { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Job::Reply { .. } => {}
            Job::Session { pid, field, op, .. } => {
                if !matches!(op, SessionOp::Alive) {
                    log::warn!("cluster: socket {pid} cannot be recovered on another node: {why}");
                    self.shared
                        .mark_lost(&pid, &field, matches!(op, SessionOp::Forget));
                }
            }
            Job::Claim { reply, .. } => reply(None),
        }
    }

    fn command(&self, a: &Attempt, now: u64) -> redis::Cmd {
        let n = &self.shared.names;
        let cfg = self.handle.config();
        match &a.job {
            Job::Publish { op, body, .. } => {
                let (name, field, room) = match op {
                    Op::Keep => ("keep", "", ""),
                    Op::Pass => ("pass", "", ""),
                    Op::Join { field, room } => ("join", field.as_str(), room.as_str()),
                    Op::Leave { field, room } => ("leave", field.as_str(), room.as_str()),
                };
                let mut c = redis::cmd("EVALSHA");
                c.arg(&self.sha)
                    .arg(7)
                    .arg(&n.epoch)
                    .arg(&n.seq)
                    .arg(&n.log)
                    .arg(n.dedup(self.shared.node))
                    .arg(&n.rooms)
                    .arg(&n.memberships)
                    .arg(&n.bus)
                    .arg(0)
                    .arg(a.counter)
                    .arg(name)
                    .arg(body.as_slice())
                    .arg(cfg.sse_history_events.max(1))
                    .arg(now)
                    .arg(field)
                    .arg(room)
                    .arg(cfg.max_rooms_per_user)
                    .arg(cfg.max_room_memberships);
                c
            }
            Job::Rooms { field, .. } => {
                let mut c = redis::cmd("HGET");
                c.arg(&n.rooms).arg(field);
                c
            }
            Job::Reply { node, body } => {
                let mut c = redis::cmd("PUBLISH");
                c.arg(n.node(*node)).arg(body.as_slice());
                c
            }
            Job::Session { pid, field, op, .. } => {
                let (keep, kept) = self.shared.records.unwrap_or_default();
                let node = self.shared.node;
                let value: &[u8] = match op {
                    SessionOp::Record(v) | SessionOp::Emit(v) => v,
                    SessionOp::Forget | SessionOp::Alive => b"",
                };
                let mut c = redis::cmd("EVALSHA");
                c.arg(&self.session_sha)
                    .arg(3)
                    .arg(n.sessions(node))
                    .arg(n.emits(node, pid))
                    .arg(&n.nodes)
                    .arg(op.name())
                    .arg(field)
                    .arg(value)
                    .arg(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX))
                    .arg(kept)
                    .arg(format!("{node:016x}"))
                    .arg(now);
                c
            }
            Job::Claim { field, pid, .. } => {
                let mut c = redis::cmd("EVALSHA");
                c.arg(&self.claim_sha)
                    .arg(1)
                    .arg(&n.nodes)
                    .arg(&n.prefix)
                    .arg(field)
                    .arg(pid)
                    .arg(now)
                    .arg(u64::try_from(SILENT_DEAD.as_millis()).unwrap_or(u64::MAX))
                    .arg(format!("{:016x}", self.shared.node));
                c
            }
        }
    }

    fn send_batch(&mut self) {
        // redis-rs refuses an empty pipeline (and that is no broken link).
        if self.waiting.is_empty() {
            return;
        }
        let now = now_ms();
        let mut pipe = redis::pipe();
        for a in &self.waiting {
            pipe.add_command(self.command(a, now));
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        // Each reply on its own: one command's error must not hide the others' results.
        let sent = pipe
            .ignore_errors()
            .query::<Vec<redis::RedisResult<RValue>>>(conn);
        match sent {
            Ok(results) => {
                let batch: Vec<Attempt> = self.waiting.drain(..).collect();
                let mut again = Vec::new();
                for (a, r) in batch.into_iter().zip(
                    results
                        .into_iter()
                        .map(Some)
                        .chain(std::iter::repeat_with(|| None)),
                ) {
                    match r {
                        Some(Ok(v)) => self.answered(a.job, v),
                        Some(Err(e)) if e.code() == Some("NOSCRIPT") => again.push(a),
                        Some(Err(e)) => {
                            log::warn!("cluster: Redis refused a command: {e}");
                            self.fail(a.job, "Redis refused the command");
                        }
                        None => again.push(a),
                    }
                }
                if !again.is_empty() {
                    // The script went missing (Redis restarted under a live link): load it again.
                    for a in again.into_iter().rev() {
                        self.waiting.push_front(a);
                    }
                    self.conn = None;
                    self.shared.connected.store(false, Ordering::Release);
                }
            }
            Err(e) => {
                log::warn!("cluster: the link to Redis broke: {e}");
                self.conn = None;
                self.shared.connected.store(false, Ordering::Release);
            }
        }
    }

    fn answered(&self, job: Job, v: RValue) {
        match job {
            Job::Publish { done, .. } => {
                let (status, limit, receivers) = script_result(&v);
                // "dup": Redis took it on an earlier try whose answer the broken link lost.
                if status == "ok" || status == "dup" {
                    self.handle.counters().cluster_published();
                }
                match done {
                    Done::Nothing => {}
                    Done::Room(tx) => {
                        let r = match status.as_str() {
                            "user" => Err(BroadcastError::TooManyRooms(RoomLimit::PerUser(limit))),
                            "total" => Err(BroadcastError::TooManyRooms(RoomLimit::Total(limit))),
                            _ => Ok(()),
                        };
                        let _ = tx.send(r);
                    }
                    Done::Request(id) => {
                        if status == "ok" {
                            let finished = self.shared.requests().expect(id, receivers);
                            if let Some(p) = finished {
                                complete(&self.handle, &self.shared, p);
                            }
                        }
                    }
                }
            }
            Job::Session { .. } => {}
            Job::Claim { reply, .. } => reply(self.claimed(v)),
            Job::Rooms { reply, .. } => {
                let rooms = match v {
                    RValue::BulkString(b) => String::from_utf8_lossy(&b)
                        .split('\n')
                        .filter(|r| !r.is_empty())
                        .map(str::to_string)
                        .collect(),
                    _ => Vec::new(),
                };
                let _ = reply.send(Ok(rooms));
            }
            Job::Reply { .. } => {}
        }
    }
}

impl Publisher {
    /// `claim.lua`'s answer: the record and its emits, or nothing (also for anything that does
    /// not decode: a fresh session, never a partial replay).
    fn claimed(&self, v: RValue) -> Option<RecordedSession> {
        let RValue::Array(items) = v else {
            return None;
        };
        let mut items = items.into_iter();
        let (Some(RValue::BulkString(record)), Some(RValue::Array(list))) =
            (items.next(), items.next())
        else {
            return None;
        };
        let decoded = wire::decode_record(&record).and_then(|record| {
            let emits = list
                .iter()
                .map(|e| match e {
                    RValue::BulkString(b) => wire::decode_emit(b),
                    _ => Err(wire::WireError("an emit is not a string")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((record, emits))
        });
        match decoded {
            Ok((record, emits)) => {
                let kept = self.shared.records.map_or(0, |(_, kept)| kept);
                Some(RecordedSession {
                    record,
                    emits_full: emits.len() >= kept,
                    emits,
                    offset: None,
                })
            }
            Err(e) => {
                log::warn!("cluster: a dead node's socket record does not decode: {e}");
                None
            }
        }
    }
}

/// `{status, epoch, seq-or-limit, receivers}` of the script.
fn script_result(v: &RValue) -> (String, usize, usize) {
    let RValue::Array(items) = v else {
        return (String::new(), 0, 0);
    };
    let text = |i: usize| match items.get(i) {
        Some(RValue::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(RValue::SimpleString(s)) => s.clone(),
        Some(RValue::Int(n)) => n.to_string(),
        _ => String::new(),
    };
    let number = |i: usize| text(i).parse::<usize>().unwrap_or(0);
    (text(0), number(2), number(3))
}

/// What the subscriber knows of the cluster's sequence.
struct Subscriber {
    shared: Arc<Shared>,
    handle: Handle,
    client: Client,
    /// The epoch this node follows (`None` before the first snapshot).
    epoch: Option<u64>,
    /// The last cluster sequence number delivered here.
    applied: u64,
    /// When request deadlines were last looked at.
    swept: Instant,
}

/// The cluster at one instant: epoch, sequence, rooms hash, the log's newest entries.
type Snapshot = (Option<String>, Option<u64>, Vec<(String, String)>, RValue);

/// One message of the log: its number and bytes.
type LogEntry = (u64, u64, Vec<u8>);

impl Subscriber {
    fn new(shared: Arc<Shared>, handle: Handle, client: Client) -> Self {
        Subscriber {
            shared,
            handle,
            client,
            epoch: None,
            applied: 0,
            swept: Instant::now(),
        }
    }

    fn run(mut self, ready: mpsc::Sender<Result<(), String>>) {
        let mut ready = Some(ready);
        let mut backoff = BACKOFF_FIRST;
        while !self.shared.stop.load(Ordering::Acquire) {
            let started = Instant::now();
            let outcome = self.session(&mut ready);
            if started.elapsed() > BACKOFF_MAX * 4 {
                // It had been up a while: this is a new outage, start the backoff again.
                backoff = BACKOFF_FIRST;
            }
            match outcome {
                Ok(()) => return,
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(format!("cluster: cannot reach Redis: {e}")));
                        return;
                    }
                    log::warn!("cluster: subscriber lost Redis: {e}");
                }
            }
            self.sweep();
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection's life: subscribe, catch up, then deliver what comes. `Ok`: stopping.
    fn session(
        &mut self,
        ready: &mut Option<mpsc::Sender<Result<(), String>>>,
    ) -> redis::RedisResult<()> {
        let timeout = self.shared.cfg.io_timeout;
        let mut reads = connect(&self.client, timeout)?;
        let mut conn = connect(&self.client, timeout)?;
        let bus = self.shared.names.bus.clone();
        let mine = self.shared.names.node(self.shared.node);
        let mut pubsub = conn.as_pubsub();
        // Subscribed before the snapshot is read: nothing published in between is missed (what
        // both bring is told apart by its number).
        pubsub.subscribe(&[bus.as_str(), mine.as_str()])?;
        self.sync(&mut reads)?;
        if let Some(r) = ready.take() {
            let _ = r.send(Ok(()));
        } else {
            self.handle.counters().cluster_reconnected();
            log::info!("cluster: subscriber reconnected to Redis");
        }
        pubsub.set_read_timeout(Some(TICK))?;
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            self.sweep();
            let msg = match pubsub.get_message() {
                Ok(m) => m,
                Err(e) if e.is_timeout() => continue,
                Err(e) => return Err(e),
            };
            let payload = msg.get_payload_bytes();
            if msg.get_channel_name() == mine {
                self.on_reply(payload);
            } else {
                self.on_bus(payload, &mut reads)?;
            }
        }
    }

    /// Request deadlines (looked at every `TICK` at most, not per message).
    fn sweep(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.swept) < TICK {
            return;
        }
        self.swept = now;
        let expired = self.shared.requests().expired(now);
        for p in expired {
            log::warn!(
                "cluster: a request ended with {} of {:?} replies",
                p.got,
                p.expected
            );
            complete(&self.handle, &self.shared, p);
        }
    }

    fn on_reply(&self, payload: &[u8]) {
        match wire::decode_reply(payload) {
            Ok(reply) => {
                let id = match &reply {
                    Reply::Acks { request, .. }
                    | Reply::Reach { request, .. }
                    | Reply::Handoff { request, .. } => *request,
                };
                let finished = self.shared.requests().reply(id, reply);
                if let Some(p) = finished {
                    complete(&self.handle, &self.shared, p);
                }
            }
            Err(e) => {
                self.handle.counters().cluster_foreign();
                log::warn!("cluster: ignored a reply that is not ours: {e}");
            }
        }
    }

    fn on_bus(&mut self, payload: &[u8], reads: &mut Connection) -> redis::RedisResult<()> {
        let (epoch, seq, body) = match wire::split_header(payload) {
            Ok(h) => h,
            Err(e) => {
                self.handle.counters().cluster_foreign();
                log::warn!("cluster: ignored a bus message that is not ours: {e}");
                return Ok(());
            }
        };
        if seq == 0 {
            // Not numbered (volatile, requests): delivered as it comes, whatever the epoch.
            self.deliver(0, body, Instant::now());
            return Ok(());
        }
        if Some(epoch) != self.epoch || seq > self.applied + 1 {
            // A new epoch, or messages missed: read what the log has first.
            self.sync(reads)?;
        }
        if Some(epoch) == self.epoch && seq == self.applied + 1 {
            // A body that is not ours does not take the number: the real message of that number
            // (or the log, at the next gap) still comes.
            if self.deliver(seq, body, Instant::now()) {
                self.applied = seq;
            }
        }
        Ok(())
    }

    /// Reads the cluster's state at one instant (epoch, sequence, rooms, the log after what this
    /// node applied) and brings this node to it: a new epoch empties the history; the rooms are
    /// replaced by Redis's; what the log has after `applied` is delivered in order, and what it
    /// no longer has marks a hole in the history (a client that missed it gets a reset). Only
    /// what is new is read, so a number far ahead (a gap, or a message that is not ours) costs
    /// what the gap holds, not the whole log.
    fn sync(&mut self, reads: &mut Connection) -> redis::RedisResult<()> {
        let n = self.shared.names.clone();
        let _: () = redis::cmd("EVAL")
            .arg(NEW_EPOCH)
            .arg(6)
            .arg(&n.epoch)
            .arg(&n.seq)
            .arg(&n.log)
            .arg(&n.rooms)
            .arg(&n.memberships)
            .arg(n.dedup(self.shared.node))
            .query(reads)?;
        let snapshot = |reads: &mut Connection, from: u64| -> redis::RedisResult<Snapshot> {
            // The log holds at most about `sse_history_events` entries (capped on every add).
            redis::pipe()
                .atomic()
                .cmd("GET")
                .arg(&n.epoch)
                .cmd("GET")
                .arg(&n.seq)
                .cmd("HGETALL")
                .arg(&n.rooms)
                .cmd("XRANGE")
                .arg(&n.log)
                .arg(format!("{from}-0"))
                .arg("+")
                .query(reads)
        };
        let (mut epoch, mut seq, mut rooms, mut log) = snapshot(reads, self.applied + 1)?;
        let parse =
            |e: &Option<String>| e.as_ref().and_then(|e| e.parse::<u64>().ok()).unwrap_or(0);
        if self.epoch.is_some() && self.epoch != Some(parse(&epoch)) && self.applied > 0 {
            // A new epoch numbers from 1 again: read its whole log.
            (epoch, seq, rooms, log) = snapshot(reads, 1)?;
        }
        let epoch = parse(&epoch);
        let seq = seq.unwrap_or(0);
        let hub = self.handle.hub();
        if self.epoch != Some(epoch) {
            if self.epoch.is_some() {
                log::warn!("cluster: Redis lost the history (a new epoch): ids given out before get a reset");
                {
                    let mut state = hub.lock();
                    state.history = Default::default();
                    state.seq = 0;
                    state.quiet_seq = 0;
                    hub.set_epoch(epoch);
                }
                let _ = self.handle.command_routed(Command::ResetSequence);
            } else {
                hub.set_epoch(epoch);
            }
            self.epoch = Some(epoch);
            self.applied = 0;
        }
        self.replace_rooms(rooms);
        let entries = log_entries(&log);
        let first = entries.first().map_or(seq + 1, |e| e.0);
        if first > self.applied + 1 && seq > self.applied {
            // What came between is gone from the log: nobody can resume across it here.
            let mut state = hub.lock();
            let up_to = hub.cluster_seq(first - 1);
            state.history.mark_hole(up_to);
            state.seq = state.seq.max(up_to);
        }
        let now = now_ms();
        for (s, at, msg) in entries {
            if s <= self.applied || s > seq {
                continue;
            }
            match wire::split_header(&msg) {
                Ok((e, s2, body)) if e == epoch && s2 == s => {
                    let age = Duration::from_millis(now.saturating_sub(at));
                    self.apply_aged(s, body, age);
                }
                _ => log::warn!("cluster: ignored a log entry that is not ours"),
            }
            self.applied = s;
        }
        self.applied = self.applied.max(seq);
        let mut state = hub.lock();
        state.seq = state.seq.max(hub.cluster_seq(seq));
        Ok(())
    }

    /// The hub's user rooms become Redis's; every loop hears the differences.
    fn replace_rooms(&self, rooms: Vec<(String, String)>) {
        let mut wanted: BTreeSet<(Identity, String)> = BTreeSet::new();
        for (field, list) in rooms {
            let Some(user) = parse_user_field(&field) else {
                continue;
            };
            for room in list.split('\n').filter(|r| !r.is_empty()) {
                wanted.insert((user.clone(), room.to_string()));
            }
        }
        let hub = self.handle.hub();
        let mut state = hub.lock();
        let have: BTreeSet<(Identity, String)> =
            state.rooms.user_memberships().into_iter().collect();
        let mut copies = Vec::new();
        for (user, room) in have.difference(&wanted) {
            state.rooms.leave(user, room);
            copies.push((user.clone(), room.clone(), false));
        }
        for (user, room) in wanted.difference(&have) {
            let _ = state.rooms.join(user, room, usize::MAX, usize::MAX);
            copies.push((user.clone(), room.clone(), true));
        }
        for (user, room, joined) in copies {
            self.handle.to_every_loop(|| Command::RoomCopy {
                user: user.clone(),
                room: room.clone(),
                joined,
            });
        }
        drop(state);
    }

    fn apply_aged(&self, seq: u64, body: &[u8], age: Duration) {
        let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        self.deliver(seq, body, at);
    }

    /// A reply to another node's request, queued for the publisher.
    fn reply(&self, node: u64, reply: &Reply) {
        let body = wire::encode_reply(reply);
        let _ = self.shared.jobs.try_send(Job::Reply { node, body });
    }

    /// Delivers one bus message to this node's connections; `false`: not ours, ignored.
    fn deliver(&self, seq: u64, body: &[u8], at: Instant) -> bool {
        let msg = match wire::decode_bus(body) {
            Ok(m) => m,
            Err(e) => {
                self.handle.counters().cluster_foreign();
                log::warn!("cluster: ignored a bus message that is not ours: {e}");
                return false;
            }
        };
        // Only broadcasts are numbered; anything else with a number is not ours.
        if seq > 0 && !matches!(msg, Bus::Broadcast(_)) {
            self.handle.counters().cluster_foreign();
            log::warn!("cluster: ignored a numbered bus message that is not a broadcast");
            return false;
        }
        match msg {
            Bus::Broadcast(b) => {
                let loops = self.handle.event_loops();
                let reply = b.counted.map(|(origin, request)| {
                    let jobs = self.shared.jobs.clone();
                    ReachReply::Merge(ReachMerge::new(
                        loops,
                        Box::new(move |reach| {
                            let body = wire::encode_reply(&Reply::Reach { request, reach });
                            let _ = jobs.try_send(Job::Reply { node: origin, body });
                        }),
                    ))
                });
                let numbered = (seq > 0 && !b.volatile).then(|| self.handle.hub().cluster_seq(seq));
                let payload = Payload {
                    event: &b.event,
                    sse_data: &b.sse_data,
                    sio_args: &b.sio_args,
                };
                let volatile = b.volatile || seq == 0;
                self.handle.deliver_numbered(
                    at,
                    &b.target,
                    b.transports,
                    payload,
                    volatile,
                    numbered,
                    reply,
                );
            }
            Bus::Room { user, room, joined } => {
                let hub = self.handle.hub();
                let mut state = hub.lock();
                let changed = if joined {
                    state
                        .rooms
                        .join(&user, &room, usize::MAX, usize::MAX)
                        .unwrap_or(false)
                } else {
                    state.rooms.leave(&user, &room)
                };
                if changed {
                    self.handle.to_every_loop(|| Command::RoomCopy {
                        user: user.clone(),
                        room: room.clone(),
                        joined,
                    });
                }
                drop(state);
            }
            Bus::AckRequest {
                origin,
                request,
                timeout_ms,
                user,
                event,
                data,
            } => {
                // Nobody of that user here: the answer is known without waking a loop.
                let key = crate::engine::index::Index::user_key(&user);
                if !self.handle.hub().lock().present.has_user(&key) {
                    let results = Vec::new();
                    self.reply(origin, &Reply::Acks { request, results });
                    return true;
                }
                let data = serde_json::from_str(&data).unwrap_or(serde_json::Value::Null);
                let jobs = self.shared.jobs.clone();
                let reply = AckReply::Callback(Box::new(move |results| {
                    let body = wire::encode_reply(&Reply::Acks { request, results });
                    let _ = jobs.try_send(Job::Reply { node: origin, body });
                }));
                let _ = self.handle.command_routed(Command::UserAck {
                    user,
                    event,
                    data,
                    timeout: Duration::from_millis(timeout_ms),
                    reply,
                });
            }
            Bus::Claim {
                origin,
                request,
                pid,
                offset,
                user,
            } => {
                let answer = hand_off(
                    self.handle.hub(),
                    self.handle.config(),
                    Instant::now(),
                    &pid,
                    offset.as_deref(),
                    user.as_ref(),
                );
                self.reply(origin, &Reply::Handoff { request, answer });
            }
            Bus::NspRoom {
                nsp,
                room,
                event,
                args,
                volatile,
            } => {
                let args = match serde_json::from_str(&args) {
                    Ok(serde_json::Value::Array(a)) => a,
                    _ => return false,
                };
                let _ = self.handle.command_routed(Command::SioEmitToRoom {
                    nsp,
                    room,
                    event,
                    args,
                    volatile,
                });
            }
        }
        true
    }
}

/// `XRANGE` entries as `(seq, ms, message)`.
fn log_entries(v: &RValue) -> Vec<LogEntry> {
    let RValue::Array(entries) = v else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let RValue::Array(parts) = e else { continue };
        let (Some(RValue::BulkString(id)), Some(RValue::Array(fields))) =
            (parts.first(), parts.get(1))
        else {
            continue;
        };
        let Some(seq) = std::str::from_utf8(id)
            .ok()
            .and_then(|id| id.split('-').next())
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let mut map: HashMap<&[u8], &[u8]> = HashMap::new();
        let mut it = fields.iter();
        while let (Some(RValue::BulkString(k)), Some(RValue::BulkString(val))) =
            (it.next(), it.next())
        {
            map.insert(k.as_slice(), val.as_slice());
        }
        let at = map
            .get(&b"t"[..])
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if let Some(m) = map.get(&b"m"[..]) {
            out.push((seq, at, m.to_vec()));
        }
    }
    out
}
