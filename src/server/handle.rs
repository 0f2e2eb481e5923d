//! [`Handle`]: how any application thread reaches the loop (a command channel and a waker).

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::engine::fanout::{self, Routed};
use crate::engine::hub::Hub;
use crate::engine::{Command, Data, SessionId, Stats, StreamId};
use crate::error::{BroadcastError, ServerClosed};
use crate::io::{LoopCommand, Loops};

thread_local! {
    /// Set on the dispatcher thread while it runs a batch of handlers.
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// What the handlers of one dispatcher batch queued for the loops, sent and woken once after
/// the batch instead of once per command: a loop that sleeps would otherwise wake, write one ack
/// and sleep again, for every ack (two context switches and a syscall each), and each command
/// would be a channel send of its own.
struct Held {
    loops: Arc<Loops>,
    /// The commands for each loop, in the order the handlers queued them.
    commands: Vec<Vec<Command>>,
    /// One bit per loop with commands (loops ≤ 64).
    touched: u64,
    /// When the oldest held command was queued.
    since: Option<Instant>,
}

/// What [`wake_loops`] did.
struct Woken {
    /// Every loop that slept could be woken.
    ok: bool,
    /// At least one of them may be waiting for a core: it slept, or was woken and has not run
    /// yet, or is in a turn but not in a burst (see `LoopWaker::wake`).
    may_wait: bool,
}

/// Wakes every loop in `touched` (one bit each) that sleeps.
fn wake_loops(loops: &Loops, touched: u64) -> Woken {
    let mut woken = Woken {
        ok: true,
        may_wait: false,
    };
    for to in 0..loops.len().min(64) {
        if touched & (1u64 << to) != 0 {
            match loops.wake(to) {
                Ok(may_wait) => woken.may_wait |= may_wait,
                Err(_) => woken.ok = false,
            }
        }
    }
    woken
}

/// Whether this thread holds the commands it queues for `loops` (not while it is releasing
/// them: a command dropped there, by a loop that has stopped, may run code that sends).
fn holds_commands_for(loops: &Arc<Loops>) -> bool {
    HELD.with(|held| {
        held.try_borrow()
            .is_ok_and(|h| h.as_ref().is_some_and(|h| Arc::ptr_eq(&h.loops, loops)))
    })
}

/// Holds `cmd` for loop `to` (on a thread that [`holds_commands_for`] these loops).
fn hold_command(to: usize, cmd: Command) {
    HELD.with(|held| {
        if let Some(h) = held.borrow_mut().as_mut() {
            if h.touched == 0 {
                h.since = Some(Instant::now());
            }
            h.touched |= 1u64 << (to % 64);
            if let Some(queue) = h.commands.get_mut(to) {
                queue.push(cmd);
            }
        }
    })
}

/// From now on this thread holds the commands it queues for `loops` (the dispatcher, between
/// [`release_held_commands`] calls).
pub(super) fn start_holding_commands(loops: Arc<Loops>) {
    let commands = (0..loops.len()).map(|_| Vec::new()).collect();
    HELD.with(|held| {
        *held.borrow_mut() = Some(Held {
            loops,
            commands,
            touched: 0,
            since: None,
        })
    });
}

/// Sends the commands this thread held, one batch per loop, and wakes those loops (it goes on
/// holding). Called at the end of each dispatcher batch, by every wait on an [`Answer`] (a
/// handler asking for `user_rooms` must not wait for a loop its `join` has not reached), and
/// before a command that does not go through the hold. Elsewhere: a no-op. A loop that has
/// stopped drops what it is sent: the server is shutting down.
pub(super) fn release_held_commands() {
    HELD.with(|held| {
        let Ok(mut held) = held.try_borrow_mut() else {
            return; // already releasing, further up this thread's stack
        };
        let Some(h) = held.as_mut() else {
            return;
        };
        h.since = None;
        let touched = std::mem::take(&mut h.touched);
        if touched == 0 {
            return;
        }
        for (to, queue) in h.commands.iter_mut().enumerate() {
            let cmd = match queue.len() {
                0 => continue,
                1 => queue.pop().map(LoopCommand::Engine),
                _ => Some(LoopCommand::Engines(std::mem::take(queue))),
            };
            if let Some(cmd) = cmd {
                let _ = h.loops.queue(to, cmd);
            }
        }
        // The dispatcher blocks on its queue right after a batch: no yield needed here.
        let _ = wake_loops(&h.loops, touched);
    });
}

/// Like [`release_held_commands`], if the oldest held command is older than `max` (between two
/// handlers of a long batch, so held commands wait a bounded time).
pub(super) fn release_held_commands_older_than(max: Duration) {
    let due = HELD.with(|held| {
        held.borrow()
            .as_ref()
            .and_then(|h| h.since)
            .is_some_and(|t| t.elapsed() >= max)
    });
    if due {
        release_held_commands();
    }
}

/// A channel for an answer that the sending thread will wait for (a loop's, or the cluster
/// link's): see [`Answer`].
pub(crate) fn answer_channel<T>() -> (mpsc::Sender<T>, Answer<T>) {
    let (tx, rx) = mpsc::channel();
    (tx, Answer(rx))
}

/// Where an answer comes. Every wait for it first sends what this thread holds
/// ([`release_held_commands`]): the answer may need a command still held here (a handler that
/// waited for `user_rooms` with its `join` held would wait for ever), so no wait can forget to.
#[derive(Debug)]
pub(crate) struct Answer<T>(mpsc::Receiver<T>);

impl<T> Answer<T> {
    pub(crate) fn recv(&self) -> Result<T, mpsc::RecvError> {
        release_held_commands();
        self.0.recv()
    }

    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Result<T, mpsc::RecvTimeoutError> {
        release_held_commands();
        self.0.recv_timeout(timeout)
    }
}

/// A cheap, cloneable handle to a running server, usable from any thread.
#[derive(Clone)]
pub struct Handle {
    pub(super) loops: Arc<Loops>,
    pub(super) hub: Arc<Hub>,
    pub(super) cfg: Arc<Config>,
    pub(super) max_payload: usize,
    pub(super) counters: Arc<crate::metrics::Counters>,
    pub(super) backlog: Arc<AtomicUsize>,
    /// The cluster link when the server joined one (`ServerBuilder::cluster`); the handle the
    /// link itself holds has none (it delivers locally what it hears).
    #[cfg(feature = "redis")]
    pub(super) cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The link to a Node.js socket.io cluster (`ServerBuilder::socketio_adapter`).
    #[cfg(feature = "redis")]
    pub(super) adapter: Option<Arc<crate::cluster::Adapter>>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handle")
    }
}

impl Handle {
    /// Sends a loop command to every loop (after what this thread holds, so in order).
    pub(crate) fn send_all(&self, cmd: impl Fn() -> LoopCommand) {
        release_held_commands();
        for to in 0..self.loops.len() {
            let _ = self.loops.send(to, cmd());
        }
    }

    /// Routes an engine command to its loop(s) (see `engine::fanout`); how many loops got it.
    pub(crate) fn command_routed(&self, cmd: Command) -> Result<Routed, ServerClosed> {
        if holds_commands_for(&self.loops) {
            return Ok(fanout::route(
                &self.hub,
                &self.cfg,
                &Instant::now,
                cmd,
                &mut hold_command,
            ));
        }
        let mut failed = false;
        // Loops ≤ 64: one bit each, woken once the hub is unlocked.
        let mut touched = 0u64;
        let routed = fanout::route(&self.hub, &self.cfg, &Instant::now, cmd, &mut |to, c| {
            if self.loops.queue(to, LoopCommand::Engine(c)).is_err() {
                failed = true;
            }
            touched |= 1u64 << (to % 64);
        });
        let woken = wake_loops(&self.loops, touched);
        failed |= !woken.ok;
        if woken.may_wait {
            // A loop outside a burst has work now. Where it shares a core with this thread (one
            // core, or every core busy) it would wait for this thread's time slice to end, and a
            // burst of broadcasts could be queued whole before its first write: giving the core
            // up lets it start at once. None while the loop is in a burst (it has all it can
            // do), and the call returns at once where the loop has a core of its own.
            std::thread::yield_now();
        }
        if failed {
            return Err(ServerClosed);
        }
        Ok(routed)
    }

    pub(crate) fn command(&self, cmd: Command) -> Result<(), ServerClosed> {
        #[cfg(feature = "redis")]
        let Some(cmd) = self.claim_remote(cmd) else {
            return Ok(());
        };
        self.command_routed(cmd).map(|_| ())
    }

    /// A cluster node accepting a CONNECT whose `pid` no loop here knows: the other nodes are
    /// asked for the socket first, and the decision goes to the engine with their answer.
    /// `None`: taken care of.
    #[cfg(feature = "redis")]
    fn claim_remote(&self, cmd: Command) -> Option<Command> {
        let Some(cluster) = &self.cluster else {
            return Some(cmd);
        };
        let Command::SioConnectDecision { request, decision } = cmd else {
            return Some(cmd);
        };
        let claim = self.hub.take_remote_claim(request);
        match (claim, decision) {
            (Some((pid, offset)), Ok(user)) if cluster.connected() => {
                cluster.claim(self, request, pid, offset, user);
                None
            }
            (_, decision) => Some(Command::SioConnectDecision { request, decision }),
        }
    }

    /// Routes a command of the broadcast API: through the cluster when there is one (every node
    /// must see it), else like `command_routed`.
    pub(crate) fn submit(&self, cmd: Command) -> Result<Routed, BroadcastError> {
        #[cfg(feature = "redis")]
        if let Some(adapter) = &self.adapter {
            adapter.publish_command(&cmd);
        }
        #[cfg(feature = "redis")]
        let cmd = match &self.cluster {
            Some(cluster) => match cluster.submit(cmd) {
                crate::cluster::Submitted::Done(done) => return done,
                crate::cluster::Submitted::Local(local) => *local,
            },
            None => cmd,
        };
        Ok(self.command_routed(cmd)?)
    }

    /// The cluster link, if the server joined one.
    #[cfg(feature = "redis")]
    pub(crate) fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        self.cluster.as_deref()
    }

    /// Whether this server is a node of a cluster (`ServerBuilder::cluster`) whose link to Redis
    /// is up now: `None` alone, `Some(false)` while Redis is unreachable (broadcasts are then
    /// refused with `BroadcastError::ClusterUnavailable`).
    pub fn cluster_connected(&self) -> Option<bool> {
        #[cfg(feature = "redis")]
        if let Some(c) = &self.cluster {
            return Some(c.connected());
        }
        None
    }

    /// How many event loops the server runs.
    #[cfg(feature = "redis")]
    pub(crate) fn loop_count(&self) -> usize {
        self.loops.len()
    }

    /// Whether this server is a node of a Node.js socket.io cluster
    /// (`ServerBuilder::socketio_adapter`) whose link to Redis is up now: `None` when it is not
    /// one.
    pub fn adapter_connected(&self) -> Option<bool> {
        #[cfg(feature = "redis")]
        if let Some(a) = &self.adapter {
            return Some(a.connected());
        }
        None
    }

    /// The Node.js socket.io cluster this server is a node of (`ServerBuilder::socketio_adapter`):
    /// `fetchSockets`, `socketsJoin`, `socketsLeave`, `disconnectSockets` and `serverSideEmit`
    /// over every server. `None` when it is not one.
    #[cfg(feature = "redis")]
    pub fn socketio_cluster(&self) -> Option<crate::cluster::SocketIoCluster> {
        self.adapter
            .clone()
            .map(crate::cluster::SocketIoCluster::new)
    }

    /// Sends one command to every loop, woken once each.
    #[cfg(feature = "redis")]
    pub(crate) fn to_every_loop(&self, cmd: impl Fn() -> Command) {
        release_held_commands();
        for to in 0..self.loops.len() {
            let _ = self.loops.queue(to, LoopCommand::Engine(cmd()));
            let _ = self.loops.wake(to);
        }
    }

    /// A broadcast a cluster numbered (or a volatile one), to this node's loops.
    #[cfg(feature = "redis")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn deliver_numbered(
        &self,
        at: Instant,
        target: &crate::engine::Target,
        transports: crate::engine::Transports,
        payload: crate::engine::Payload<'_>,
        volatile: bool,
        numbered: Option<u64>,
        reply: Option<crate::engine::ReachReply>,
    ) {
        release_held_commands();
        let loops = self.loops.len();
        fanout::broadcast(
            &self.hub,
            &self.cfg,
            at,
            target,
            transports,
            payload,
            volatile,
            numbered,
            reply,
            &mut |to, c| {
                let _ = self.loops.queue(to, LoopCommand::Engine(c));
            },
        );
        for to in 0..loops {
            let _ = self.loops.wake(to);
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    #[cfg(feature = "redis")]
    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    /// An application event is queued for the dispatcher from outside a loop.
    #[cfg(feature = "redis")]
    pub(crate) fn backlog_add(&self) {
        self.backlog.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(feature = "redis")]
    pub(crate) fn backlog_sub(&self) {
        self.backlog.fetch_sub(1, Ordering::Relaxed);
    }

    /// How many event loops the server runs.
    pub fn event_loops(&self) -> usize {
        self.loops.len()
    }

    /// The configured `max_payload`: the largest message the server sends or accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Sends a message on a raw Engine.IO session. Unknown or closed sessions are ignored.
    pub fn eio_send(&self, session: SessionId, data: Data) -> Result<(), ServerClosed> {
        self.command(Command::EioSend { session, data })
    }

    /// Closes a raw Engine.IO session.
    pub fn eio_close(&self, session: SessionId) -> Result<(), ServerClosed> {
        self.command(Command::EioClose { session })
    }

    /// Sends an event to one SSE stream (not kept for resume: use a broadcast for that). An event
    /// name with CR, LF or NUL, or data over `max_payload`, is refused and nothing is sent.
    pub fn sse_send(
        &self,
        stream: StreamId,
        event: Option<&str>,
        data: &str,
    ) -> Result<(), BroadcastError> {
        if let Some(name) = event {
            crate::proto::sse::validate_event_name(name)
                .map_err(|e| BroadcastError::InvalidEvent(e.to_string()))?;
        }
        if data.len() > self.max_payload {
            return Err(BroadcastError::PayloadTooLarge {
                size: data.len(),
                max: self.max_payload,
            });
        }
        self.command(Command::SseSend {
            stream,
            event: event.map(str::to_string),
            data: data.to_string(),
        })?;
        Ok(())
    }

    /// Ends an SSE stream.
    pub fn sse_close(&self, stream: StreamId) -> Result<(), ServerClosed> {
        self.command(Command::SseClose { stream })
    }

    /// Totals since start (bytes, deliveries, client events, slow-consumer closes, route
    /// requests) and the dispatcher's backlog. Reads atomics: no round trip to the loop.
    pub fn metrics(&self) -> crate::Metrics {
        self.counters.snapshot(self.backlog.load(Ordering::Relaxed))
    }

    pub(crate) fn counters(&self) -> &crate::metrics::Counters {
        &self.counters
    }

    /// Engine counters (sessions, sockets, streams, pending acks, index sizes), summed over the
    /// event loops (a user with connections on two loops counts on both; the history and the
    /// parked sockets, which the loops share, count once).
    pub fn stats(&self) -> Result<Stats, ServerClosed> {
        let (tx, rx) = answer_channel();
        let parts = match self.command_routed(Command::Stats { reply: tx })? {
            Routed::Loops(n) => n,
            Routed::Answered => 0,
        };
        let mut total = Stats::default();
        for _ in 0..parts {
            let s = rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| ServerClosed)?;
            total.eio_sessions += s.eio_sessions;
            total.sio_sockets += s.sio_sockets;
            total.sse_streams += s.sse_streams;
            total.pending_acks += s.pending_acks;
            total.index_recipients += s.index_recipients;
            total.index_users += s.index_users;
            total.index_tenants += s.index_tenants;
            total.index_rooms += s.index_rooms;
            total.timer_entries += s.timer_entries;
            total.sse_history = total.sse_history.max(s.sse_history);
            total.parked_sockets = total.parked_sockets.max(s.parked_sockets);
        }
        Ok(total)
    }
}
