//! The thin thread-safe layer: start a server, get a `Clone + Send + Sync` handle whose methods
//! send commands to the loop thread and wake it, and shut it down.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::Waker;

use crate::api::{validate_event, validate_room, BroadcastError};
use crate::config::{Config, ConfigError};
use serde_json::Value;

use crate::engine::{
    AckOutcome, AckReply, AckResult, AppEvent, Command, Data, DisconnectReason, Engine, Identity,
    RandomSource, Rejection, RequestInfo, SessionId, SocketId, Stats, StreamId,
};
use crate::io::{EventLoop, LoopCommand};

/// Why a server could not start.
#[derive(Debug)]
pub enum StartError {
    Config(ConfigError),
    Io(std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Io(e) => write!(f, "cannot start server: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        StartError::Config(e)
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Io(e)
    }
}

/// The loop thread is gone (the server was shut down): the command was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerClosed;

impl fmt::Display for ServerClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the server has shut down")
    }
}

impl std::error::Error for ServerClosed {}

/// A cheap, cloneable handle to a running server, usable from any thread.
#[derive(Clone)]
pub struct Handle {
    commands: Sender<LoopCommand>,
    waker: Arc<Waker>,
    max_payload: usize,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handle")
    }
}

impl Handle {
    pub(crate) fn send(&self, cmd: LoopCommand) -> Result<(), ServerClosed> {
        self.commands.send(cmd).map_err(|_| ServerClosed)?;
        self.waker.wake().map_err(|_| ServerClosed)
    }

    pub(crate) fn command(&self, cmd: Command) -> Result<(), ServerClosed> {
        self.send(LoopCommand::Engine(cmd))
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

    /// Engine counters (sessions, sockets, streams, pending acks, index sizes).
    pub fn stats(&self) -> Result<Stats, ServerClosed> {
        let (tx, rx) = mpsc::channel();
        self.command(Command::Stats { reply: tx })?;
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| ServerClosed)
    }
}

/// What an authentication hook is asked about.
#[derive(Debug)]
pub struct AuthRequest<'a> {
    /// `Some(namespace)` for a Socket.IO CONNECT, `None` for an SSE request.
    pub namespace: Option<&'a str>,
    /// The HTTP request that opened the connection.
    pub info: &'a RequestInfo,
    /// The Socket.IO CONNECT payload (`{}` when the client sent none); `None` for SSE.
    pub auth: Option<&'a Value>,
}

type AuthHook = Arc<dyn Fn(&AuthRequest<'_>) -> Result<Option<Identity>, Rejection> + Send + Sync>;
type ConnectHandler = Arc<dyn Fn(&Socket, &Value) + Send + Sync>;
type EventHandler = Arc<dyn Fn(&Socket, Event) + Send + Sync>;
type DisconnectHandler = Arc<dyn Fn(&Socket, DisconnectReason) + Send + Sync>;
type EioHandler = Arc<dyn Fn(&Handle, AppEvent) + Send + Sync>;
type SseOpenHandler = Arc<dyn Fn(StreamId, Option<&Identity>) + Send + Sync>;
type SseCloseHandler = Arc<dyn Fn(StreamId) + Send + Sync>;

/// A Socket.IO socket, as handlers see it: emit to it, join rooms, disconnect it.
#[derive(Clone)]
pub struct Socket {
    id: SocketId,
    nsp: Arc<str>,
    identity: Option<Identity>,
    handle: Handle,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("nsp", &self.nsp)
            .field("identity", &self.identity)
            .finish()
    }
}

impl Socket {
    pub fn id(&self) -> SocketId {
        self.id
    }

    /// The namespace (`/` for the main one).
    pub fn namespace(&self) -> &str {
        &self.nsp
    }

    /// Who the authentication hook said this is (`None`: anonymous).
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Emits `event` with `args` to this socket.
    pub fn emit(&self, event: &str, args: Vec<Value>) -> Result<(), BroadcastError> {
        self.emit_binary(event, args, Vec::new())
    }

    /// Emits with binary attachments; `args` refer to them with `tidings::proto::sio::placeholder(n)`.
    pub fn emit_binary(
        &self,
        event: &str,
        args: Vec<Value>,
        attachments: Vec<Vec<u8>>,
    ) -> Result<(), BroadcastError> {
        validate_event(event)?;
        self.handle
            .command(Command::SioEmit {
                socket: self.id,
                event: event.to_string(),
                args,
                attachments,
                ack: None,
            })
            .map_err(BroadcastError::from)
    }

    /// Emits and calls `callback` (on the dispatcher thread) with the client's answer, a timeout
    /// or the disconnect.
    pub fn emit_with_ack(
        &self,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
        callback: impl FnOnce(AckOutcome) + Send + 'static,
    ) -> Result<(), BroadcastError> {
        validate_event(event)?;
        let cb = move |mut results: Vec<AckResult>| {
            let outcome = results
                .pop()
                .map_or(AckOutcome::Disconnected, |r| r.outcome);
            callback(outcome)
        };
        self.handle
            .command(Command::SioEmit {
                socket: self.id,
                event: event.to_string(),
                args,
                attachments: Vec::new(),
                ack: Some((timeout, AckReply::Callback(Box::new(cb)))),
            })
            .map_err(BroadcastError::from)
    }

    /// Emits and blocks the calling thread until the answer, the timeout or the disconnect. Do not
    /// call this from a handler (it would hold up the other handlers meanwhile).
    pub fn emit_with_ack_wait(
        &self,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<AckOutcome, BroadcastError> {
        validate_event(event)?;
        let (tx, rx) = mpsc::channel();
        self.handle.command(Command::SioEmit {
            socket: self.id,
            event: event.to_string(),
            args,
            attachments: Vec::new(),
            ack: Some((timeout, AckReply::Channel(tx))),
        })?;
        let mut results = rx.recv().map_err(|_| BroadcastError::ServerClosed)?;
        Ok(results
            .pop()
            .map_or(AckOutcome::Disconnected, |r| r.outcome))
    }

    /// Joins a per-socket room of this namespace (socket.io's `socket.join`).
    pub fn join(&self, room: &str) -> Result<(), BroadcastError> {
        validate_room(room)?;
        self.handle
            .command(Command::SioJoin {
                socket: self.id,
                room: room.to_string(),
            })
            .map_err(BroadcastError::from)
    }

    pub fn leave(&self, room: &str) -> Result<(), BroadcastError> {
        validate_room(room)?;
        self.handle
            .command(Command::SioLeave {
                socket: self.id,
                room: room.to_string(),
            })
            .map_err(BroadcastError::from)
    }

    /// Emits to every socket in a room of this socket's namespace.
    pub fn to_room(&self, room: &str, event: &str, args: Vec<Value>) -> Result<(), BroadcastError> {
        validate_room(room)?;
        validate_event(event)?;
        self.handle
            .command(Command::SioEmitToRoom {
                nsp: self.nsp.to_string(),
                room: room.to_string(),
                event: event.to_string(),
                args,
                attachments: Vec::new(),
            })
            .map_err(BroadcastError::from)
    }

    /// Closes the connection under this socket (all its namespaces); the client reconnects.
    pub fn close_connection(&self) -> Result<(), ServerClosed> {
        self.handle
            .command(Command::SioCloseConnection { socket: self.id })
    }

    /// Disconnects this socket from its namespace ("io server disconnect").
    pub fn disconnect(&self) -> Result<(), ServerClosed> {
        self.handle
            .command(Command::SioDisconnect { socket: self.id })
    }
}

/// A client event, as handlers see it.
#[derive(Debug)]
pub struct Event {
    pub name: String,
    pub args: Vec<Value>,
    /// Binary attachments; `args` hold `{"_placeholder":true,"num":n}` where they belong.
    pub attachments: Vec<Vec<u8>>,
    /// Present when the client asked for an acknowledgement.
    pub ack: Option<AckResponder>,
}

/// Answers a client's ack request, once.
#[derive(Debug)]
pub struct AckResponder {
    socket: SocketId,
    id: u64,
    handle: Handle,
}

impl AckResponder {
    pub fn send(self, args: Vec<Value>) -> Result<(), ServerClosed> {
        self.send_binary(args, Vec::new())
    }

    pub fn send_binary(
        self,
        args: Vec<Value>,
        attachments: Vec<Vec<u8>>,
    ) -> Result<(), ServerClosed> {
        self.handle.command(Command::SioAck {
            socket: self.socket,
            id: self.id,
            args,
            attachments,
        })
    }
}

#[derive(Default, Clone)]
struct Handlers {
    auth: Option<AuthHook>,
    connect: HashMap<String, ConnectHandler>,
    events: HashMap<(String, String), EventHandler>,
    disconnect: HashMap<String, DisconnectHandler>,
    eio: Option<EioHandler>,
    sse_open: Option<SseOpenHandler>,
    sse_close: Option<SseCloseHandler>,
}

/// Configures handlers, then starts the server.
pub struct ServerBuilder {
    config: Config,
    handlers: Handlers,
}

impl ServerBuilder {
    /// Decides who each connection is (Socket.IO CONNECT and SSE requests). `Ok(None)` accepts an
    /// anonymous connection (it receives only `to_all`). Without a hook every connection is refused.
    pub fn authenticate(
        mut self,
        hook: impl Fn(&AuthRequest<'_>) -> Result<Option<Identity>, Rejection> + Send + Sync + 'static,
    ) -> Self {
        self.handlers.auth = Some(Arc::new(hook));
        self
    }

    /// Accepts every connection as anonymous (for demos and tests).
    pub fn allow_anonymous(self) -> Self {
        self.authenticate(|_| Ok(None))
    }

    /// Called when a socket connects to `namespace`, with its CONNECT payload.
    pub fn on_connect(
        mut self,
        namespace: &str,
        handler: impl Fn(&Socket, &Value) + Send + Sync + 'static,
    ) -> Self {
        self.register_namespace(namespace);
        self.handlers
            .connect
            .insert(namespace.to_string(), Arc::new(handler));
        self
    }

    /// Called for client event `event` in `namespace`.
    pub fn on_event(
        mut self,
        namespace: &str,
        event: &str,
        handler: impl Fn(&Socket, Event) + Send + Sync + 'static,
    ) -> Self {
        self.register_namespace(namespace);
        self.handlers.events.insert(
            (namespace.to_string(), event.to_string()),
            Arc::new(handler),
        );
        self
    }

    /// Called when a socket of `namespace` leaves, with the reason.
    pub fn on_disconnect(
        mut self,
        namespace: &str,
        handler: impl Fn(&Socket, DisconnectReason) + Send + Sync + 'static,
    ) -> Self {
        self.register_namespace(namespace);
        self.handlers
            .disconnect
            .insert(namespace.to_string(), Arc::new(handler));
        self
    }

    /// Raw Engine.IO events (`EioOpen`, `EioMessage`, `EioClose`). Without a handler they go to
    /// `Server::take_events`.
    pub fn on_engineio(
        mut self,
        handler: impl Fn(&Handle, AppEvent) + Send + Sync + 'static,
    ) -> Self {
        self.handlers.eio = Some(Arc::new(handler));
        self
    }

    /// Called when an SSE stream opens / closes.
    pub fn on_sse_open(
        mut self,
        handler: impl Fn(StreamId, Option<&Identity>) + Send + Sync + 'static,
    ) -> Self {
        self.handlers.sse_open = Some(Arc::new(handler));
        self
    }

    pub fn on_sse_close(mut self, handler: impl Fn(StreamId) + Send + Sync + 'static) -> Self {
        self.handlers.sse_close = Some(Arc::new(handler));
        self
    }

    fn register_namespace(&mut self, namespace: &str) {
        if namespace != "/" && !self.config.namespaces.iter().any(|n| n == namespace) {
            self.config.namespaces.push(namespace.to_string());
        }
    }

    /// Validates the configuration, binds, starts the loop and dispatcher threads.
    pub fn start(self) -> Result<Server, StartError> {
        Server::start_with(self.config, self.handlers)
    }
}

/// A running server: the loop thread, the dispatcher thread (handlers run there, never on the io
/// thread) and a handle.
pub struct Server {
    handle: Handle,
    local_addr: SocketAddr,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    dispatcher: Option<JoinHandle<()>>,
    events: Mutex<Option<Receiver<AppEvent>>>,
}

impl Server {
    /// Starts a server without handlers (raw Engine.IO events go to `take_events`; Socket.IO and
    /// SSE connections are refused: use `Server::builder` to authenticate them).
    pub fn start(config: Config) -> Result<Server, StartError> {
        Server::start_with(config, Handlers::default())
    }

    /// A builder, to register the authentication hook and handlers.
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder {
            config,
            handlers: Handlers::default(),
        }
    }

    fn start_with(config: Config, handlers: Handlers) -> Result<Server, StartError> {
        config.validate()?;
        let random = os_random()?;
        let max_payload = config.max_payload;
        let cfg = Arc::new(config);
        let listener = std::net::TcpListener::bind(cfg.bind)?;
        let local_addr = listener.local_addr()?;
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (ev_tx, ev_rx) = mpsc::channel();
        let engine = Engine::new(cfg.clone(), random);
        let backlog = Arc::new(AtomicUsize::new(0));
        let (event_loop, waker) =
            EventLoop::new(cfg, listener, engine, cmd_rx, ev_tx, backlog.clone())?;
        let handle = Handle {
            commands: cmd_tx,
            waker,
            max_payload,
        };
        let (raw_tx, raw_rx) = mpsc::channel();
        let dispatcher = {
            let handle = handle.clone();
            std::thread::Builder::new()
                .name("tidings-dispatch".into())
                .spawn(move || dispatch(ev_rx, handle, handlers, raw_tx, backlog))?
        };
        log::info!("tidings listening on {local_addr}");
        let thread = std::thread::Builder::new()
            .name("tidings-loop".into())
            .spawn(move || event_loop.run())?;
        Ok(Server {
            handle,
            local_addr,
            thread: Some(thread),
            dispatcher: Some(dispatcher),
            events: Mutex::new(Some(raw_rx)),
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle for any thread.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Raw Engine.IO events when no `on_engineio` handler is set. Can be taken once.
    pub fn take_events(&self) -> Option<Receiver<AppEvent>> {
        self.events.lock().ok().and_then(|mut e| e.take())
    }

    /// Closes every connection (within `grace`) and joins the threads.
    pub fn shutdown(mut self, grace: Duration) -> std::io::Result<()> {
        self.stop(grace)
    }

    fn stop(&mut self, grace: Duration) -> std::io::Result<()> {
        let _ = self.handle.send(LoopCommand::Shutdown(grace));
        let result = match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the loop thread panicked"))),
            None => Ok(()),
        };
        // The loop dropped its event sender: the dispatcher drains what is left and ends.
        if let Some(d) = self.dispatcher.take() {
            let _ = d.join();
        }
        result
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(1));
    }
}

/// The dispatcher thread: runs the application's hooks and handlers, in event order.
fn dispatch(
    events: Receiver<AppEvent>,
    handle: Handle,
    handlers: Handlers,
    raw: Sender<AppEvent>,
    backlog: Arc<AtomicUsize>,
) {
    let mut sockets: HashMap<SocketId, Socket> = HashMap::new();
    for event in events {
        backlog.fetch_sub(1, Ordering::Relaxed);
        // A panicking handler must not take the dispatcher (and with it every other connection's
        // handlers) down: it is caught, and an authentication hook that panics rejects.
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            dispatch_one(event, &handle, &handlers, &raw, &mut sockets)
        }));
        if outcome.is_err() {
            log::error!("an application handler panicked; the dispatcher goes on");
        }
    }
}

fn dispatch_one(
    event: AppEvent,
    handle: &Handle,
    handlers: &Handlers,
    raw: &Sender<AppEvent>,
    sockets: &mut HashMap<SocketId, Socket>,
) {
    let decide = |namespace: Option<&str>, info: &RequestInfo, auth: Option<&Value>| {
        let hook = handlers.auth.as_ref()?;
        catch_unwind(AssertUnwindSafe(|| {
            hook(&AuthRequest {
                namespace,
                info,
                auth,
            })
        }))
        .ok()
    };
    let refused = || Rejection::unauthorized("authentication is not configured");
    {
        match event {
            AppEvent::SioConnectRequest {
                request,
                nsp,
                auth,
                info,
            } => {
                let decision = match &handlers.auth {
                    None => Err(refused()),
                    Some(_) => decide(Some(&nsp), &info, Some(&auth))
                        .unwrap_or_else(|| Err(Rejection::unauthorized("internal error"))),
                };
                let _ = handle.command(Command::SioConnectDecision { request, decision });
            }
            AppEvent::SseConnectRequest { request, info } => {
                let decision = match &handlers.auth {
                    None => Err(refused()),
                    Some(_) => decide(None, &info, None)
                        .unwrap_or_else(|| Err(Rejection::unauthorized("internal error"))),
                };
                let _ = handle.command(Command::SseDecision { request, decision });
            }
            AppEvent::SioConnected {
                socket,
                nsp,
                identity,
                auth,
                ..
            } => {
                let s = Socket {
                    id: socket,
                    nsp: nsp.clone(),
                    identity,
                    handle: handle.clone(),
                };
                if let Some(h) = handlers.connect.get(nsp.as_ref()) {
                    h(&s, &auth);
                }
                sockets.insert(socket, s);
            }
            AppEvent::SioEvent {
                socket,
                nsp,
                event,
                args,
                attachments,
                ack,
            } => {
                let Some(s) = sockets.get(&socket) else {
                    return;
                };
                let key = (nsp.to_string(), event);
                if let Some(h) = handlers.events.get(&key) {
                    let ev = Event {
                        name: key.1.clone(),
                        args,
                        attachments,
                        ack: ack.map(|id| AckResponder {
                            socket,
                            id,
                            handle: handle.clone(),
                        }),
                    };
                    h(s, ev);
                }
            }
            AppEvent::SioDisconnected {
                socket,
                nsp,
                reason,
            } => {
                if let Some(s) = sockets.remove(&socket) {
                    if let Some(h) = handlers.disconnect.get(nsp.as_ref()) {
                        h(&s, reason);
                    }
                }
            }
            AppEvent::AckComplete { callback, results } => (callback.0)(results),
            AppEvent::SseOpened { stream, identity } => {
                if let Some(h) = &handlers.sse_open {
                    h(stream, identity.as_ref());
                }
            }
            AppEvent::SseClosed { stream } => {
                if let Some(h) = &handlers.sse_close {
                    h(stream);
                }
            }
            ev @ (AppEvent::EioOpen { .. }
            | AppEvent::EioMessage { .. }
            | AppEvent::EioClose { .. }) => match &handlers.eio {
                Some(h) => h(handle, ev),
                None => {
                    let _ = raw.send(ev);
                }
            },
        }
    }
}

/// Session ids come from the operating system's CSPRNG, read in blocks to keep syscalls rare.
fn os_random() -> std::io::Result<RandomSource> {
    let mut file = std::fs::File::open("/dev/urandom")?;
    let mut pool = [0u8; 4096];
    file.read_exact(&mut pool)?;
    let mut used = 0usize;
    Ok(Box::new(move |out: &mut [u8]| {
        for b in out.iter_mut() {
            if used >= pool.len() {
                if file.read_exact(&mut pool).is_err() {
                    // /dev/urandom does not fail once opened; if it ever did, refuse to hand out
                    // predictable ids by mixing in the clock (still unique, never reused).
                    let t = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0);
                    for (i, p) in pool.iter_mut().enumerate() {
                        *p ^= (t >> ((i % 16) * 8)) as u8;
                    }
                }
                used = 0;
            }
            *b = pool.get(used).copied().unwrap_or(0);
            used += 1;
        }
    }))
}
