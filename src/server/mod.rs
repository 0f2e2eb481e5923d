//! The thin thread-safe layer: start a server, get a `Clone + Send + Sync` [`Handle`] whose
//! methods send commands to the loop thread and wake it, and shut it down.
//!
//! - `handle.rs`: [`Handle`], what any thread uses to reach the loop;
//! - `socket.rs`: [`Socket`], [`Event`], [`AckResponder`], what handlers get;
//! - `builder.rs`: [`ServerBuilder`], the authentication hook and handlers;
//! - `dispatch.rs`: the dispatcher thread that runs them.

mod builder;
mod dispatch;
mod handle;
mod route;
mod socket;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use builder::{AuthRequest, ServerBuilder};
pub use handle::Handle;
pub(crate) use handle::{answer_channel, Answer};
pub use route::{HttpRequest, HttpResponse, Responder};
pub use socket::{AckResponder, ConnectDecision, Event, Socket};

use crate::config::{Config, ConfigError};
use crate::engine::hub::Hub;
use crate::engine::{new_epoch, CloseReason, Data, Engine, SessionId};
use crate::io::{EventLoop, LoopCommand, Loops};
use builder::Handlers;

/// How the server joins a cluster (nothing without the `redis` feature).
#[cfg(feature = "redis")]
type ClusterSettings = crate::cluster::ClusterConfig;
#[cfg(not(feature = "redis"))]
type ClusterSettings = std::convert::Infallible;
/// How the server joins a Node.js socket.io cluster, with the application's answer to its
/// server-side emits.
#[cfg(feature = "redis")]
type AdapterSettings = (
    crate::cluster::SocketIoAdapterConfig,
    Option<crate::cluster::ServerSideEmitHandler>,
);
#[cfg(not(feature = "redis"))]
type AdapterSettings = std::convert::Infallible;
use dispatch::{dispatch, os_random};

/// What a raw Engine.IO session (`Config::engineio_path`) does, for `on_engineio` or
/// [`Server::take_events`]. Socket.IO and SSE have handlers of their own.
#[derive(Debug)]
pub enum EngineIoEvent {
    /// A session opened.
    Open {
        /// The session, for [`Handle::eio_send`] and [`Handle::eio_close`].
        session: SessionId,
        /// The Engine.IO session id the client was given.
        sid: Arc<str>,
        /// The peer's address.
        remote: Option<SocketAddr>,
    },
    /// The client sent a message.
    Message {
        /// The session.
        session: SessionId,
        /// Text or binary, as the client sent it.
        data: Data,
    },
    /// The session closed.
    Close {
        /// The session.
        session: SessionId,
        /// Why.
        reason: CloseReason,
    },
}

/// Why a server could not start.
#[derive(Debug)]
pub enum StartError {
    /// A `Config` value cannot work (the message says which).
    Config(ConfigError),
    /// Binding the address or starting a thread failed.
    Io(std::io::Error),
    /// Joining the cluster failed: Redis did not answer, or the cluster settings are wrong.
    Cluster(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Io(e) => write!(f, "cannot start server: {e}"),
            StartError::Cluster(e) => write!(f, "cannot join the cluster: {e}"),
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

/// A running server: its event loop threads (`Config::event_loops`), the dispatcher thread
/// (handlers run there, never on an io thread) and a handle.
pub struct Server {
    handle: Handle,
    local_addr: SocketAddr,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
    dispatcher: Option<JoinHandle<()>>,
    events: Mutex<Option<Receiver<EngineIoEvent>>>,
}

impl Server {
    /// Starts a server without handlers (raw Engine.IO events go to `take_events`; Socket.IO and
    /// SSE connections are refused: use `Server::builder` to authenticate them).
    pub fn start(config: Config) -> Result<Server, StartError> {
        Server::start_with(config, Handlers::default(), None, None)
    }

    /// A builder, to register the authentication hook and handlers.
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder {
            config,
            handlers: Handlers::default(),
            #[cfg(feature = "redis")]
            cluster: None,
            #[cfg(feature = "redis")]
            adapter: None,
            #[cfg(feature = "redis")]
            on_server_side_emit: None,
        }
    }

    fn start_with(
        config: Config,
        handlers: Handlers,
        cluster: Option<ClusterSettings>,
        adapter: Option<AdapterSettings>,
    ) -> Result<Server, StartError> {
        config.validate()?;
        if cluster.is_some() && adapter.is_some() {
            // Each would carry the Socket.IO broadcasts to the other tidings nodes: twice.
            return Err(StartError::Cluster(
                "a server joins a tidings cluster or a Node.js socket.io cluster, not both".into(),
            ));
        }
        for prefix in handlers.routes.keys() {
            let valid = prefix.starts_with('/')
                && prefix.len() <= 256
                && prefix.bytes().all(|b| b.is_ascii_graphic() && b != b'?');
            if !valid {
                return Err(StartError::Config(ConfigError(format!(
                    "route prefix {prefix:?} must start with '/' and be printable ASCII without '?'"
                ))));
            }
        }
        let max_payload = config.max_payload;
        let loop_count = config.event_loops;
        let cfg = Arc::new(config);
        let listener = std::net::TcpListener::bind(cfg.bind)?;
        let local_addr = listener.local_addr()?;
        let mut listener = Some(listener);
        let (ev_tx, ev_rx) = mpsc::channel();
        let epoch = new_epoch(&mut os_random()?);
        let hub = Arc::new(match &cluster {
            Some(_) => Hub::new_cluster_node(epoch, loop_count),
            None => Hub::new(epoch, loop_count),
        });
        let counters = Arc::new(crate::metrics::Counters::default());
        let backlog = Arc::new(AtomicUsize::new(0));
        let batches = Arc::new(crate::io::BatchPool::default());
        let live_total = Arc::new(AtomicUsize::new(0));
        let routes: Vec<String> = handlers.routes.keys().cloned().collect();
        let mut event_loops = Vec::with_capacity(loop_count);
        let mut senders = Vec::with_capacity(loop_count);
        let mut wakers = Vec::with_capacity(loop_count);
        for index in 0..loop_count {
            let (cmd_tx, cmd_rx) = mpsc::channel();
            #[allow(unused_mut)]
            let mut engine = Engine::on_hub(cfg.clone(), os_random()?, hub.clone(), index);
            #[cfg(feature = "redis")]
            if adapter.is_some() {
                engine.index_socket_ids();
            }
            engine.set_routes(routes.clone());
            engine.set_counters(counters.clone());
            let (event_loop, waker) = EventLoop::new(
                cfg.clone(),
                listener.take(),
                engine,
                cmd_rx,
                ev_tx.clone(),
                batches.clone(),
                backlog.clone(),
                index,
                live_total.clone(),
            )?;
            event_loops.push(event_loop);
            senders.push(cmd_tx);
            wakers.push(waker);
        }
        let loops = Arc::new(Loops::new(senders, wakers));
        #[allow(unused_mut)]
        let mut handle = Handle {
            loops: loops.clone(),
            hub,
            cfg: cfg.clone(),
            max_payload,
            counters,
            backlog: backlog.clone(),
            #[cfg(feature = "redis")]
            cluster: None,
            #[cfg(feature = "redis")]
            adapter: None,
        };
        // Before the loops run: the snapshot of the cluster (rooms, history) is queued to them
        // first, so the first connection already sees it.
        #[cfg(feature = "redis")]
        if let Some(settings) = cluster {
            let node = crate::engine::new_epoch(&mut os_random()?);
            let link =
                crate::cluster::Cluster::start(settings, node, handle.clone(), ev_tx.clone())
                    .map_err(StartError::Cluster)?;
            handle.cluster = Some(link);
        }
        #[cfg(feature = "redis")]
        if let Some((settings, on_server_side_emit)) = adapter {
            let uid = format!(
                "tidings-{:012x}",
                crate::engine::new_epoch(&mut os_random()?)
            );
            let link =
                crate::cluster::Adapter::start(settings, uid, handle.clone(), on_server_side_emit)
                    .map_err(StartError::Cluster)?;
            handle.adapter = Some(link);
        }
        #[cfg(not(feature = "redis"))]
        let _ = (cluster, adapter);
        drop(ev_tx);
        let (raw_tx, raw_rx) = mpsc::channel();
        let dispatcher = {
            let handle = handle.clone();
            std::thread::Builder::new()
                .name("tidings-dispatch".into())
                .spawn(move || dispatch(ev_rx, batches, handle, handlers, raw_tx, backlog))?
        };
        log::info!("tidings listening on {local_addr} with {loop_count} event loop(s)");
        let mut threads = Vec::with_capacity(loop_count);
        for (index, mut event_loop) in event_loops.into_iter().enumerate() {
            event_loop.set_loops(loops.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tidings-loop-{index}"))
                    .spawn(move || event_loop.run())?,
            );
        }
        Ok(Server {
            handle,
            local_addr,
            threads,
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
    pub fn take_events(&self) -> Option<Receiver<EngineIoEvent>> {
        self.events.lock().ok().and_then(|mut e| e.take())
    }

    /// Closes every connection (within `grace`) and joins the threads. A cluster node then keeps
    /// its closed Socket.IO sockets (with recovery on) until other nodes have taken them over, at
    /// most `ClusterConfig::handoff_grace`.
    pub fn shutdown(mut self, grace: Duration) -> std::io::Result<()> {
        self.stop(grace)
    }

    fn stop(&mut self, grace: Duration) -> std::io::Result<()> {
        self.handle.send_all(|| LoopCommand::Shutdown(grace));
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a loop thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        // A cluster node's closed sockets wait in its hub: the link stays up (keeping the history
        // and answering claims) until other nodes have taken them all, or `handoff_grace` ends.
        #[cfg(feature = "redis")]
        if let Some(c) = self.handle.cluster.take() {
            c.hand_on(self.handle.hub());
            c.stop();
        }
        #[cfg(feature = "redis")]
        if let Some(a) = self.handle.adapter.take() {
            a.stop();
        }
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
