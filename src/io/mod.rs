//! The only module with sockets, mio and the clock. One thread runs `EventLoop::run`: it accepts,
//! reads, parses HTTP heads, feeds WebSocket bytes to tungstenite, hands complete inputs to the
//! engine with `Instant::now()`, and writes what the engine queued. It never blocks on one client.

mod conn;
pub(crate) mod request_reader;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::buf::Chunk;
use crate::config::Config;
use crate::engine::{AppEvents, Command, ConnId, Engine, Output, Request};
use conn::{Conn, Mode, ReadOutcome};

const LISTENER: Token = Token(usize::MAX);
pub(crate) const WAKER: Token = Token(usize::MAX - 1);
/// Bytes read from one connection per readiness turn before others get a go (fairness).
const READ_BUDGET: usize = 256 * 1024;
/// How long accepting pauses after "too many open files" and the like, so the loop never spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a connection may take to drain its last bytes after we decided to close it.
const LINGER: Duration = Duration::from_secs(5);
/// Application events waiting for the dispatcher beyond which the loop stops reading client input
/// (backpressure: a slow handler slows the clients down instead of growing memory).
const APP_BACKLOG_HIGH: usize = 16 * 1024;
/// Chunks queued by commands in one turn before the loop stops to write them, at first: a burst
/// of broadcasts starts reaching clients after this many, not after the whole batch is queued.
const WRITE_BUDGET_FIRST: usize = 8 * 1024;
/// A turn that spends its budget starts a burst: while it lasts, each turn may queue this many,
/// so each write carries every chunk a turn queued for its connection (what makes bursts cheap:
/// a loopback write costs about the same whatever it carries), and memory stays bounded by what
/// one turn may queue. Straight to it, not doubling: 100 broadcasts to 10 000 connections on one
/// loop took 90 000 writes when the budget doubled, 60 000 this way.
const WRITE_BUDGET_MAX: usize = 256 * 1024;
/// The first broadcast of a turn on a loop that is not in a burst writes to this many of its
/// connections at once, as the engine hands over their outputs (it hands a large audience over
/// in two parts, the first one small), instead of at the turn's end: the first clients hear of a
/// burst within microseconds. Each of them is written once this turn anyway, so no write is
/// added; the others still coalesce everything the turn queues for them into one write.
const EAGER_WRITES: usize = 64;
/// Application events handed to the dispatcher in one go at most (a long turn lets it start).
const APP_BATCH_MAX: usize = 256;
/// While paused, how often the loop looks whether the dispatcher caught up.
const BACKLOG_RECHECK: Duration = Duration::from_millis(5);

/// Messages from the handle (and the other loops) to a loop.
pub(crate) enum LoopCommand {
    Engine(Command),
    /// Commands queued by one thread, in order, sent as one (a dispatcher batch's handlers).
    Engines(Vec<Command>),
    /// Close everything within the given time and stop.
    Shutdown(Duration),
    /// A connection for this loop: freshly accepted by the accepting loop, or moved here with
    /// the request it carries because that request is for a session of this loop.
    Adopt(Box<Arrival>),
    /// A connection closed somewhere while the server was at `max_connections`: accept again.
    ResumeAccept,
}

impl std::fmt::Debug for LoopCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoopCommand::Engine(c) => write!(f, "Engine({c:?})"),
            LoopCommand::Engines(c) => write!(f, "Engines({c:?})"),
            LoopCommand::Shutdown(d) => write!(f, "Shutdown({d:?})"),
            LoopCommand::Adopt(_) => f.write_str("Adopt"),
            LoopCommand::ResumeAccept => f.write_str("ResumeAccept"),
        }
    }
}

/// A connection handed from one loop to another.
pub(crate) enum Arrival {
    Accepted {
        stream: TcpStream,
        remote: Option<std::net::SocketAddr>,
    },
    Moved {
        conn: Box<Conn>,
        request: Request,
    },
}

/// Every loop's command channel and waker: how the handle reaches a loop, and how a loop hands
/// a connection to another.
pub(crate) struct Loops {
    senders: Vec<Sender<LoopCommand>>,
    wakers: Vec<Arc<LoopWaker>>,
}

impl Loops {
    pub(crate) fn new(senders: Vec<Sender<LoopCommand>>, wakers: Vec<Arc<LoopWaker>>) -> Loops {
        Loops { senders, wakers }
    }

    pub(crate) fn len(&self) -> usize {
        self.senders.len()
    }

    /// Queues a command for loop `to`, without waking it (see [`Loops::wake`]).
    pub(crate) fn queue(&self, to: usize, cmd: LoopCommand) -> io::Result<()> {
        self.senders
            .get(to)
            .ok_or_else(|| io::Error::other("no such loop"))?
            .send(cmd)
            .map_err(|_| io::Error::other("the loop has stopped"))
    }

    /// Wakes loop `to` if it sleeps: `true` if it may be waiting for a core (see
    /// [`LoopWaker::wake`]).
    pub(crate) fn wake(&self, to: usize) -> io::Result<bool> {
        match self.wakers.get(to) {
            Some(w) => w.wake(),
            None => Ok(false),
        }
    }

    /// Queues and wakes.
    pub(crate) fn send(&self, to: usize, cmd: LoopCommand) -> io::Result<()> {
        self.queue(to, cmd)?;
        self.wake(to).map(|_| ())
    }
}

/// Emptied event batches, given back by the dispatcher for the loops to fill again: a batch is
/// a large allocation, and one per turn freed on another thread costs the allocator more than
/// the events themselves.
#[derive(Default)]
pub(crate) struct BatchPool(Mutex<Vec<AppEvents>>);

impl BatchPool {
    /// Most batches kept (more than the loops can have out at once is never needed).
    const KEPT: usize = 64;

    fn take(&self) -> AppEvents {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// An emptied batch, for reuse.
    pub(crate) fn give_back(&self, mut batch: AppEvents) {
        batch.clear();
        if batch.capacity() == 0 || batch.capacity() > APP_BATCH_MAX * 2 {
            return;
        }
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < Self::KEPT {
            kept.push(batch);
        }
    }
}

/// Connections the loop must read without waiting for a readiness event: with edge-triggered
/// readiness, a socket left with unread bytes reports nothing more until new bytes arrive.
#[derive(Default)]
struct Unread {
    /// Stopped at their read budget, or with a pipelined request behind a finished one.
    again: Vec<ConnId>,
    /// Readable while the dispatcher was too far behind (`APP_BACKLOG_HIGH`): left unread.
    set_aside: Vec<ConnId>,
}

impl Unread {
    fn read_again(&mut self, id: ConnId) {
        self.again.push(id);
    }

    fn set_aside(&mut self, id: ConnId) {
        self.set_aside.push(id);
    }

    /// Whether the loop has reading to do now, so must not sleep. Connections set aside count as
    /// soon as the backlog is down: nothing else would bring them back.
    fn is_due(&self, paused: bool) -> bool {
        !paused && (!self.again.is_empty() || !self.set_aside.is_empty())
    }

    /// The connections to read this turn, each once (none while paused: they wait, set aside).
    fn take_due(&mut self, paused: bool) -> Vec<ConnId> {
        if paused {
            self.set_aside.append(&mut self.again);
            return Vec::new();
        }
        let mut due = std::mem::take(&mut self.again);
        due.append(&mut self.set_aside);
        due.sort_unstable();
        due.dedup();
        due
    }
}

/// Slot table of connections; a token is `generation << 32 | index`, so a reused slot never gets a
/// stale event or output.
struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

fn conn_id(index: u32, generation: u32) -> ConnId {
    (u64::from(generation) << 32) | u64::from(index)
}

fn split_id(id: ConnId) -> (usize, u32) {
    ((id & 0xffff_ffff) as usize, (id >> 32) as u32)
}

impl Slab {
    fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        let (i, g) = split_id(id);
        let slot = self.slots.get_mut(i)?;
        if slot.generation != g {
            return None;
        }
        slot.conn.as_mut()
    }

    fn vacant_id(&mut self) -> Option<ConnId> {
        if let Some(i) = self.free.last() {
            let slot = self.slots.get(*i as usize)?;
            return Some(conn_id(*i, slot.generation));
        }
        let i = u32::try_from(self.slots.len()).ok()?;
        if i >= 0x7fff_ffff {
            return None;
        }
        if self.slots.len() == self.slots.capacity() {
            // A quarter more, not twice as many: a slot is ~180 bytes and the table never
            // shrinks, so doubling could leave almost half of it empty for good.
            self.slots.reserve_exact((self.slots.len() / 4).max(64));
        }
        self.slots.push(Slot {
            generation: 0,
            conn: None,
        });
        self.free.push(i);
        Some(conn_id(i, 0))
    }

    fn insert(&mut self, conn: Conn) {
        let (i, _) = split_id(conn.id);
        if let Some(slot) = self.slots.get_mut(i) {
            self.free.retain(|f| *f as usize != i);
            slot.conn = Some(conn);
            self.live += 1;
        }
    }

    fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let (i, g) = split_id(id);
        let slot = self.slots.get_mut(i)?;
        if slot.generation != g {
            return None;
        }
        let conn = slot.conn.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(i as u32);
        self.live -= 1;
        Some(conn)
    }

    fn ids(&self) -> Vec<ConnId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.conn.is_some())
            .map(|(i, s)| conn_id(i as u32, s.generation))
            .collect()
    }
}

/// The event loop. Built on the caller's thread (so bind errors surface there), run on its own.
pub(crate) struct EventLoop {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab,
    engine: Engine,
    cfg: Arc<Config>,
    commands: Receiver<LoopCommand>,
    app_events: Sender<AppEvents>,
    /// Application events of this turn, sent to the dispatcher together: one wake-up of it per
    /// turn, not one per event.
    app_batch: AppEvents,
    batches: Arc<BatchPool>,
    /// Per-connection deadlines (request read, keep-alive idle, linger), lazily invalidated.
    deadlines: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// Connections to read without waiting for a readiness event.
    unread: Unread,
    /// Connections with queued bytes to try writing.
    dirty: Vec<ConnId>,
    /// The list `dirty` was last turn, kept with its capacity (no large allocation per turn).
    dirty_spare: Vec<ConnId>,
    /// Application events sent to the dispatcher and not yet handled (it decrements).
    app_backlog: Arc<AtomicUsize>,
    /// The command queue was not drained in the last turn (bounded per turn).
    more_commands: bool,
    /// Chunks queued this turn, and how many this turn may queue (see `WRITE_BUDGET_FIRST`).
    writes_this_turn: usize,
    /// Connections the output being applied may still write to at once (see `EAGER_WRITES`).
    eager_writes: usize,
    write_budget: usize,
    /// Socket reads land here, for every connection (none keeps a read buffer of its own).
    scratch: Vec<u8>,
    /// A WebSocket reader between connections (see `conn::WsReader`).
    ws_spare: Option<conn::WsContext>,
    accept_paused_until: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    /// Shared with the engine and the handle.
    counters: Arc<crate::metrics::Counters>,
    /// Shared with the handles: tells them whether a command needs a wake-up.
    waker: Arc<LoopWaker>,
    /// A command taken from the queue by the last look before sleeping.
    stashed: Option<LoopCommand>,
    /// Which loop this is, and every loop (set before the loop runs).
    index: usize,
    loops: Option<Arc<Loops>>,
    /// Open connections over every loop (`max_connections` is for the server).
    live_total: Arc<AtomicUsize>,
    /// The loop the next accepted connection goes to (round robin, accepting loop only).
    next_loop: usize,
}

/// Wakes the loop, but only when it sleeps (or is about to): a command sent while the loop is
/// busy costs no syscall, the loop picks it up before it sleeps again.
pub(crate) struct LoopWaker {
    waker: Waker,
    /// [`LoopWaker::RUNNING`], [`LoopWaker::SLEEPING`] or [`LoopWaker::WOKEN`].
    state: AtomicU8,
    /// The loop is writing a burst (its write budget has grown): it has all the work it can do,
    /// and a command sent now waits its turn without help.
    bursting: AtomicBool,
}

impl LoopWaker {
    /// In a turn: commands are seen before the loop sleeps again.
    const RUNNING: u8 = 0;
    /// About to poll, or polling: a command needs a wake-up.
    const SLEEPING: u8 = 1;
    /// Woken, and not yet back from its poll (it may be waiting for a core).
    const WOKEN: u8 = 2;

    /// Called after a command was queued. The loop sets `SLEEPING` *before* it looks at the
    /// queue one last time and polls: either it sees the command, or the state says so and this
    /// wakes it (sequentially consistent on both sides, so no wake-up is lost). `true` if the
    /// command may wait for a core: the loop slept, or was woken and has not run since, or is in
    /// a turn but not in a burst.
    pub(crate) fn wake(&self) -> io::Result<bool> {
        let (sleeping, woken) = (LoopWaker::SLEEPING, LoopWaker::WOKEN);
        match self
            .state
            .compare_exchange(sleeping, woken, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => {
                self.waker.wake()?;
                Ok(true)
            }
            // In a turn, but maybe not on a core: preempted by the thread that sends this (a
            // handler run on the dispatcher, an application thread, on the same core).
            Err(state) => Ok(state == woken || !self.bursting.load(Ordering::Relaxed)),
        }
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::SeqCst);
    }
}

impl EventLoop {
    /// Loop `index`; the one given the listener accepts for all of them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: Arc<Config>,
        listener: Option<std::net::TcpListener>,
        engine: Engine,
        commands: Receiver<LoopCommand>,
        app_events: Sender<AppEvents>,
        batches: Arc<BatchPool>,
        app_backlog: Arc<AtomicUsize>,
        index: usize,
        live_total: Arc<AtomicUsize>,
    ) -> io::Result<(EventLoop, Arc<LoopWaker>)> {
        let counters = engine.counters();
        let poll = Poll::new()?;
        let waker = Arc::new(LoopWaker {
            waker: Waker::new(poll.registry(), WAKER)?,
            state: AtomicU8::new(LoopWaker::RUNNING),
            bursting: AtomicBool::new(false),
        });
        let listener = match listener {
            Some(listener) => {
                listener.set_nonblocking(true)?;
                let mut listener = TcpListener::from_std(listener);
                poll.registry()
                    .register(&mut listener, LISTENER, Interest::READABLE)?;
                Some(listener)
            }
            None => None,
        };
        Ok((
            EventLoop {
                poll,
                listener,
                conns: Slab {
                    slots: Vec::new(),
                    free: Vec::new(),
                    live: 0,
                },
                engine,
                cfg,
                commands,
                app_events,
                app_batch: Vec::new(),
                batches,
                deadlines: BinaryHeap::new(),
                unread: Unread::default(),
                dirty: Vec::new(),
                dirty_spare: Vec::new(),
                app_backlog,
                more_commands: false,
                writes_this_turn: 0,
                eager_writes: 0,
                write_budget: WRITE_BUDGET_FIRST,
                counters,
                scratch: vec![0u8; 64 * 1024],
                ws_spare: None,
                accept_paused_until: None,
                shutdown_deadline: None,
                waker: waker.clone(),
                stashed: None,
                index,
                loops: None,
                live_total,
                next_loop: index,
            },
            waker,
        ))
    }

    /// Every loop of the server (this one included), for handing connections over.
    pub(crate) fn set_loops(&mut self, loops: Arc<Loops>) {
        self.loops = Some(loops);
    }

    /// Runs until shutdown. Returns an error only if the poller itself fails.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.live == 0 || now >= deadline {
                    return Ok(());
                }
            }
            let paused = self.app_backlog.load(Ordering::Relaxed) > APP_BACKLOG_HIGH;
            let mut timeout = self.next_wakeup().map(|t| t.saturating_duration_since(now));
            if self.unread.is_due(paused) || self.more_commands {
                timeout = Some(Duration::ZERO);
            } else if paused {
                timeout = Some(timeout.map_or(BACKLOG_RECHECK, |t| t.min(BACKLOG_RECHECK)));
            }
            if timeout != Some(Duration::ZERO) {
                // About to sleep: from now on a handle must wake us; one last look at the queue
                // catches a command sent before the flag was up.
                self.waker.set(LoopWaker::SLEEPING);
                if self.stashed.is_none() {
                    match self.commands.try_recv() {
                        Ok(cmd) => self.stashed = Some(cmd),
                        Err(TryRecvError::Empty) => {}
                        // Handled by `drain_commands`, which sees it again.
                        Err(TryRecvError::Disconnected) => self.more_commands = true,
                    }
                }
                if self.stashed.is_some() || self.more_commands {
                    self.waker.set(LoopWaker::RUNNING);
                    timeout = Some(Duration::ZERO);
                }
            }
            let polled = self.poll.poll(&mut events, timeout);
            // Awake: commands sent from now on are picked up without a wake-up.
            self.waker.set(LoopWaker::RUNNING);
            match polled {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("poll failed, the event loop stops: {e}");
                    return Err(e);
                }
            }
            let now = Instant::now();
            let paused = self.app_backlog.load(Ordering::Relaxed) > APP_BACKLOG_HIGH;
            for id in self.unread.take_due(paused) {
                self.on_readable(now, id, false);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => {}
                    Token(t) => {
                        let id = t as ConnId;
                        if event.is_writable() {
                            self.mark_dirty(id);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            if paused {
                                self.unread.set_aside(id);
                            } else {
                                let fin = event.is_read_closed() || event.is_error();
                                self.on_readable(now, id, !fin);
                            }
                        }
                    }
                }
            }
            self.drain_commands(now);
            self.engine.handle_timeout(now);
            self.apply_outputs(now);
            self.fire_deadlines(now);
            if self.accept_paused_until.is_some_and(|t| t <= now) {
                self.accept_paused_until = None;
                self.accept(now);
            }
            self.flush_dirty(now);
            self.send_app_events();
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let mut next = self.engine.next_deadline();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        consider(self.deadlines.peek().map(|Reverse((t, _))| *t));
        consider(self.accept_paused_until);
        consider(self.shutdown_deadline);
        next
    }

    fn drain_commands(&mut self, now: Instant) {
        self.more_commands = false;
        self.writes_this_turn = 0;
        let mut eager_spent = false;
        // Bounded per turn, in commands and in what they queue, so a flood of commands can
        // neither starve the sockets nor delay the first write of a burst.
        for _ in 0..4096 {
            if self.writes_this_turn > self.write_budget {
                // A burst: write what is queued now, take the largest share from the next turn.
                self.write_budget = WRITE_BUDGET_MAX;
                self.waker.bursting.store(true, Ordering::Relaxed);
                break;
            }
            let next = match self.stashed.take() {
                Some(cmd) => Ok(cmd),
                None => self.commands.try_recv(),
            };
            match next {
                Ok(LoopCommand::Engine(cmd)) => self.take_command(now, cmd, &mut eager_spent),
                Ok(LoopCommand::Engines(cmds)) => {
                    for cmd in cmds {
                        self.take_command(now, cmd, &mut eager_spent);
                    }
                }
                Ok(LoopCommand::Shutdown(grace)) => self.begin_shutdown(now, grace),
                Ok(LoopCommand::Adopt(arrival)) => self.adopt(now, *arrival),
                Ok(LoopCommand::ResumeAccept) => self.accept(now),
                Err(TryRecvError::Empty) => {
                    // Caught up: the next burst starts small again.
                    self.write_budget = WRITE_BUDGET_FIRST;
                    self.waker.bursting.store(false, Ordering::Relaxed);
                    return;
                }
                Err(TryRecvError::Disconnected) => {
                    // Every handle is gone: nobody can ask us to stop any more, so stop now.
                    if self.shutdown_deadline.is_none() {
                        self.begin_shutdown(now, Duration::from_secs(1));
                    }
                    return;
                }
            }
        }
        self.more_commands = true;
    }

    /// One engine command and what it outputs. The first broadcast of a turn that is not in a
    /// burst writes its first connections at once (see `EAGER_WRITES`).
    fn take_command(&mut self, now: Instant, cmd: Command, eager_spent: &mut bool) {
        if !*eager_spent
            && self.write_budget == WRITE_BUDGET_FIRST
            && matches!(cmd, Command::Deliver { .. })
        {
            *eager_spent = true;
            self.eager_writes = EAGER_WRITES;
        }
        self.engine.handle_command(now, cmd);
        self.apply_outputs(now);
        self.eager_writes = 0;
    }

    fn begin_shutdown(&mut self, now: Instant, grace: Duration) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(now + grace);
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.engine.shutdown(now);
        self.apply_outputs(now);
        for id in self.conns.ids() {
            if let Some(c) = self.conns.get_mut(id) {
                c.close_after_flush = true;
                self.mark_dirty(id);
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            if self.live_total.load(Ordering::Acquire) >= self.cfg.max_connections {
                // Leave the rest in the backlog; retried when a connection closes.
                return;
            }
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, remote)) => {
                    self.counters.accepted();
                    self.live_total.fetch_add(1, Ordering::AcqRel);
                    self.hand_out(now, stream, Some(remote));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_resource_exhaustion(&e) => {
                    log::warn!("accept failed ({e}); pausing accepts for {ACCEPT_BACKOFF:?}");
                    // EMFILE / ENFILE / ENOBUFS / ENOMEM: the pending connection stays in the
                    // backlog and the listener would report readable forever; back off instead of
                    // spinning at 100% CPU.
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
                // ECONNABORTED and friends concern one connection only.
                Err(e) => {
                    log::debug!("accept failed: {e}");
                    continue;
                }
            }
        }
    }

    /// An accepted connection goes to the next loop in turn (this one, or another through its
    /// channel).
    fn hand_out(&mut self, now: Instant, stream: TcpStream, remote: Option<std::net::SocketAddr>) {
        let count = self.loops.as_ref().map_or(1, |l| l.len()).max(1);
        let to = self.next_loop % count;
        self.next_loop = (to + 1) % count;
        if to == self.index {
            return self.register(now, stream, remote);
        }
        let Some(loops) = self.loops.clone() else {
            return self.register(now, stream, remote);
        };
        let arrival = Box::new(Arrival::Accepted { stream, remote });
        if loops.send(to, LoopCommand::Adopt(arrival)).is_err() {
            // That loop has stopped (shutdown): the connection is dropped.
            self.live_total.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// A connection from another loop.
    fn adopt(&mut self, now: Instant, arrival: Arrival) {
        match arrival {
            Arrival::Accepted { stream, remote } => self.register(now, stream, remote),
            Arrival::Moved { mut conn, request } => {
                let Some(id) = self.conns.vacant_id() else {
                    self.live_total.fetch_sub(1, Ordering::AcqRel);
                    return;
                };
                if self
                    .poll
                    .registry()
                    .register(
                        &mut conn.stream,
                        Token(id as usize),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .is_err()
                {
                    self.live_total.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
                conn.id = id;
                conn.queued_dirty = false;
                let deadline = conn.deadline;
                let queued = !conn.out.is_empty();
                self.conns.insert(*conn);
                if let Some(at) = deadline {
                    self.deadlines.push(Reverse((at, id)));
                }
                if queued {
                    self.mark_dirty(id);
                }
                self.engine.handle_request(now, id, request);
                self.apply_outputs(now);
            }
        }
    }

    /// The engine says the request on `conn` is for loop `to`'s session: the connection moves
    /// there with it (its queued bytes and any pipelined input go along).
    fn forward(&mut self, conn: ConnId, to: usize, request: Request) {
        let Some(loops) = self.loops.clone() else {
            return;
        };
        let Some(mut c) = self.conns.remove(conn) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        let arrival = Box::new(Arrival::Moved {
            conn: Box::new(c),
            request,
        });
        if loops.send(to, LoopCommand::Adopt(arrival)).is_err() {
            self.live_total.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn register(
        &mut self,
        now: Instant,
        mut stream: TcpStream,
        remote: Option<std::net::SocketAddr>,
    ) {
        let Some(id) = self.conns.vacant_id() else {
            self.live_total.fetch_sub(1, Ordering::AcqRel);
            return;
        };
        let _ = stream.set_nodelay(true);
        if self
            .poll
            .registry()
            .register(
                &mut stream,
                Token(id as usize),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.live_total.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let mut conn = Conn::new(id, stream, remote, &self.cfg);
        let deadline = now + self.cfg.request_timeout;
        conn.deadline = Some(deadline);
        self.deadlines.push(Reverse((deadline, id)));
        self.conns.insert(conn);
    }

    /// `short_read_ends`: this comes with a readable event that reported no FIN, so a read that
    /// leaves the buffer part empty drained the socket (see `conn::drained`).
    fn on_readable(&mut self, now: Instant, id: ConnId, short_read_ends: bool) {
        let mut budget = READ_BUDGET;
        // Each pass reads and handles at most one request / a batch of WebSocket messages; the
        // engine's outputs are applied between passes (they may switch the connection's mode).
        for _ in 0..64 {
            let Some(conn) = self.conns.get_mut(id) else {
                return;
            };
            let outcome = conn.read(
                &mut self.scratch,
                &mut self.ws_spare,
                &mut budget,
                short_read_ends,
                &mut self.engine,
                now,
                &self.cfg,
            );
            let (read, written) = conn.take_io_counts();
            self.counters.bytes_in(read);
            self.counters.bytes_out(written);
            // Reading may queue bytes of its own (`100 Continue`, WebSocket pongs): write them
            // this turn, without counting on a writable event to come with the readable one.
            let queued = !conn.out.is_empty();
            self.apply_outputs(now);
            if queued {
                self.mark_dirty(id);
            }
            match outcome {
                ReadOutcome::Blocked => return,
                ReadOutcome::Continue => continue,
                ReadOutcome::BudgetSpent => {
                    self.unread.read_again(id);
                    return;
                }
                ReadOutcome::Close => {
                    self.close_now(now, id);
                    return;
                }
                ReadOutcome::CloseAfterFlush => {
                    if let Some(c) = self.conns.get_mut(id) {
                        c.close_after_flush = true;
                        self.arm_deadline(id, now + LINGER);
                    }
                    self.mark_dirty(id);
                    return;
                }
            }
        }
        self.unread.read_again(id);
    }

    fn arm_deadline(&mut self, id: ConnId, at: Instant) {
        if let Some(c) = self.conns.get_mut(id) {
            c.deadline = Some(at);
            self.deadlines.push(Reverse((at, id)));
        }
    }

    fn fire_deadlines(&mut self, now: Instant) {
        while let Some(Reverse((t, id))) = self.deadlines.peek().copied() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            let Some(c) = self.conns.get_mut(id) else {
                continue;
            };
            if c.deadline != Some(t) {
                continue;
            }
            // Request too slow (slowloris), idle keep-alive, or a peer that will not drain.
            let answer_408 = c.is_mid_request();
            if answer_408 {
                let resp = crate::proto::http::Response::new(408)
                    .with_body("text/plain; charset=utf-8", "Request Timeout");
                c.out.push(Chunk::Owned(resp.encode(false)));
                c.close_after_flush = true;
                c.deadline = Some(now + LINGER);
                self.deadlines.push(Reverse((now + LINGER, id)));
                self.mark_dirty(id);
            } else {
                self.close_now(now, id);
            }
        }
    }

    /// Applies everything the engine asked for.
    fn apply_outputs(&mut self, now: Instant) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Write { conn, chunk } => {
                    self.writes_this_turn += 1;
                    let cap = self.cfg.max_outbound_bytes;
                    let Some(c) = self.conns.get_mut(conn) else {
                        continue;
                    };
                    let idle = c.out.is_empty() && !c.queued_dirty && !c.close_after_flush;
                    c.out.push(chunk);
                    let mut failed = false;
                    if idle && self.eager_writes > 0 {
                        // Written at once (see `EAGER_WRITES`); later bytes for this connection
                        // this turn wait for the turn's end, coalesced, as everything else.
                        self.eager_writes -= 1;
                        failed = c.write_queued().is_err();
                        if self.eager_writes == EAGER_WRITES - 1 {
                            // The first bytes of a broadcast are out. A reader on this machine
                            // (a local proxy, a client on loopback) that shares this core would
                            // otherwise wait for the whole turn, milliseconds at 10 000
                            // connections: give it the core once. A syscall per broadcast that
                            // starts a turn, and none in a burst.
                            std::thread::yield_now();
                        }
                    }
                    // Over the cap, first give the socket a chance: a burst queued within one turn
                    // must not cost a client that reads. Still over after the socket took what it
                    // could: a client that does not read; close it (others are unaffected; SSE
                    // clients resume with Last-Event-ID).
                    let over = !failed
                        && c.out.queued_bytes() > cap
                        && (c.write_queued().is_err() || c.out.queued_bytes() > cap);
                    let (read, written) = c.take_io_counts();
                    self.counters.bytes_in(read);
                    self.counters.bytes_out(written);
                    if failed {
                        self.close_now(now, conn);
                    } else if over {
                        self.counters.slow_consumer_closed();
                        log::debug!(
                            "connection {conn:#x}: outbound queue over {cap} bytes, closing"
                        );
                        self.close_now(now, conn);
                    } else {
                        self.mark_dirty(conn);
                    }
                }
                Output::WriteVolatile { conn, chunk } => {
                    let Some(c) = self.conns.get_mut(conn) else {
                        continue;
                    };
                    // Past the low-water mark a volatile event is dropped, never queued: it must
                    // not push a slow reader towards the cap that closes it.
                    if c.out.queued_bytes() > self.cfg.volatile_low_water {
                        continue;
                    }
                    self.writes_this_turn += 1;
                    c.out.push(chunk);
                    self.mark_dirty(conn);
                }
                Output::ResponseDone { conn, keep_alive } => {
                    let Some(c) = self.conns.get_mut(conn) else {
                        continue;
                    };
                    if keep_alive {
                        c.response_done();
                        let at = now + self.cfg.keep_alive_timeout;
                        self.arm_deadline(conn, at);
                        // Pipelined bytes may already hold the next request.
                        self.unread.read_again(conn);
                    } else {
                        c.close_after_flush = true;
                        self.arm_deadline(conn, now + LINGER);
                    }
                    self.mark_dirty(conn);
                }
                Output::StartWebSocket { conn } => {
                    if let Some(c) = self.conns.get_mut(conn) {
                        c.start_websocket(&self.cfg);
                        c.deadline = None;
                        self.unread.read_again(conn);
                    }
                }
                Output::StartStream { conn } => {
                    if let Some(c) = self.conns.get_mut(conn) {
                        c.mode = Mode::Streaming;
                        c.deadline = None;
                    }
                }
                Output::Close { conn } => {
                    if let Some(c) = self.conns.get_mut(conn) {
                        c.close_after_flush = true;
                        c.mode = Mode::Closing;
                        self.arm_deadline(conn, now + LINGER);
                        self.mark_dirty(conn);
                    }
                }
                Output::App(ev) => {
                    self.app_batch.push(ev);
                    if self.app_batch.len() >= APP_BATCH_MAX {
                        self.send_app_events();
                    }
                }
                Output::Forward { conn, to, request } => self.forward(conn, to, *request),
            }
        }
    }

    /// Hands this turn's application events to the dispatcher.
    fn send_app_events(&mut self) {
        if self.app_batch.is_empty() {
            return;
        }
        let next = self.batches.take();
        let batch = std::mem::replace(&mut self.app_batch, next);
        let count = batch.len();
        // Counted before they are sent: the dispatcher takes one off per event it takes, and must
        // never see the count below zero (it would wrap, and every loop would read "far behind"
        // and stop reading).
        self.app_backlog.fetch_add(count, Ordering::Relaxed);
        if self.app_events.send(batch).is_err() {
            self.app_backlog.fetch_sub(count, Ordering::Relaxed);
        }
    }

    /// Notes that a connection has bytes to write (once per connection per turn).
    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id) {
            if !c.queued_dirty {
                c.queued_dirty = true;
                self.dirty.push(id);
            }
        }
    }

    fn flush_dirty(&mut self, now: Instant) {
        // Writing may close connections, which may produce more engine outputs and more dirty ids.
        for _ in 0..8 {
            if self.dirty.is_empty() {
                return;
            }
            let mut dirty =
                std::mem::replace(&mut self.dirty, std::mem::take(&mut self.dirty_spare));
            for id in dirty.drain(..) {
                self.flush(now, id);
            }
            self.dirty_spare = dirty;
            self.apply_outputs(now);
        }
    }

    fn flush(&mut self, now: Instant, id: ConnId) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        c.queued_dirty = false;
        let result = c.write_queued();
        let (read, written) = c.take_io_counts();
        self.counters.bytes_in(read);
        self.counters.bytes_out(written);
        match result {
            Ok(()) => {
                if c.out.is_empty() && c.close_after_flush {
                    let _ = c.stream.flush();
                    let _ = c.stream.shutdown(std::net::Shutdown::Write);
                    self.close_now(now, id);
                }
            }
            Err(_) => self.close_now(now, id),
        }
    }

    /// Drops a connection at once and tells the engine.
    fn close_now(&mut self, now: Instant, id: ConnId) {
        let Some(mut c) = self.conns.remove(id) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        drop(c);
        let was = self.live_total.fetch_sub(1, Ordering::AcqRel);
        self.engine.handle_conn_closed(now, id);
        self.apply_outputs(now);
        if was == self.cfg.max_connections && self.shutdown_deadline.is_none() {
            // The accepting loop left connections in the backlog: there is room again.
            if self.listener.is_some() {
                self.accept(now);
            } else if let Some(loops) = &self.loops {
                let _ = loops.send(0, LoopCommand::ResumeAccept);
            }
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{LoopWaker, Unread};
    use std::sync::atomic::{AtomicBool, AtomicU8};
    use std::time::Duration;

    /// A sender is told to give its core up exactly when the loop may be waiting for one, and
    /// the loop is woken (its poll returns) only when it sleeps.
    #[test]
    fn a_sender_yields_to_a_loop_that_is_not_in_a_burst_and_wakes_only_a_sleeping_one() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = LoopWaker {
            waker: mio::Waker::new(poll.registry(), mio::Token(0)).unwrap(),
            state: AtomicU8::new(LoopWaker::RUNNING),
            bursting: AtomicBool::new(false),
        };
        let mut events = mio::Events::with_capacity(4);
        let mut woken = |poll: &mut mio::Poll| {
            poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
            !events.is_empty()
        };
        // In a turn, not bursting: yield (it may be preempted by the sender), no wake-up.
        assert!(waker.wake().unwrap());
        assert!(!woken(&mut poll));
        // In a burst: it has all it can do; neither.
        waker
            .bursting
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(!waker.wake().unwrap());
        assert!(!woken(&mut poll));
        // Asleep: woken once; a second sender finds it woken and not yet back, and yields too.
        waker.set(LoopWaker::SLEEPING);
        assert!(waker.wake().unwrap());
        assert!(waker.wake().unwrap());
        assert!(woken(&mut poll));
        assert!(!woken(&mut poll));
        // Back in a turn (still bursting).
        waker.set(LoopWaker::RUNNING);
        assert!(!waker.wake().unwrap());
    }

    #[test]
    fn connections_set_aside_while_paused_are_due_once_the_backlog_is_down() {
        let mut unread = Unread::default();
        unread.read_again(3);
        unread.set_aside(7);
        // Paused: nothing is read and nothing is lost.
        assert!(!unread.is_due(true));
        assert!(unread.take_due(true).is_empty());
        // The backlog went down while no socket reported anything: the loop must not sleep.
        assert!(unread.is_due(false));
        assert_eq!(unread.take_due(false), vec![3, 7]);
        assert!(!unread.is_due(false));
    }

    #[test]
    fn a_connection_listed_twice_is_read_once() {
        let mut unread = Unread::default();
        unread.read_again(5);
        unread.set_aside(5);
        unread.read_again(2);
        assert_eq!(unread.take_due(false), vec![2, 5]);
        assert!(unread.take_due(false).is_empty());
    }
}
