//! [`ServerBuilder`]: the authentication hook and the handlers, registered before start.

use crate::engine::id_map::NameMap;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::config::Config;
use crate::engine::{DisconnectReason, Identity, Rejection, RequestInfo, StreamId};
use crate::server::{
    ConnectDecision, EngineIoEvent, Event, Handle, HttpRequest, Responder, Server, Socket,
    StartError,
};

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
type EioHandler = Arc<dyn Fn(&Handle, EngineIoEvent) + Send + Sync>;
type SseOpenHandler = Arc<dyn Fn(StreamId, Option<&Identity>) + Send + Sync>;
type SseCloseHandler = Arc<dyn Fn(StreamId) + Send + Sync>;
type DeferredAuthHook = Arc<dyn Fn(&AuthRequest<'_>, ConnectDecision) + Send + Sync>;
pub(super) type RouteHandler = Arc<dyn Fn(HttpRequest, Responder) + Send + Sync>;

#[derive(Default, Clone)]
pub(super) struct Handlers {
    pub(super) auth: Option<AuthHook>,
    pub(super) connect: HashMap<String, ConnectHandler>,
    /// Namespace → event name → handler (looked up by `&str`, no key built per event).
    pub(super) events: NameMap<NameMap<EventHandler>>,
    pub(super) disconnect: HashMap<String, DisconnectHandler>,
    pub(super) eio: Option<EioHandler>,
    pub(super) sse_open: Option<SseOpenHandler>,
    pub(super) sse_close: Option<SseCloseHandler>,
    pub(super) auth_deferred: Option<DeferredAuthHook>,
    pub(super) any_event: NameMap<EventHandler>,
    pub(super) routes: HashMap<String, RouteHandler>,
}

/// Configures handlers, then starts the server.
pub struct ServerBuilder {
    pub(super) config: Config,
    pub(super) handlers: Handlers,
    #[cfg(feature = "redis")]
    pub(super) cluster: Option<crate::cluster::ClusterConfig>,
    #[cfg(feature = "redis")]
    pub(super) adapter: Option<crate::cluster::SocketIoAdapterConfig>,
    #[cfg(feature = "redis")]
    pub(super) on_server_side_emit: Option<crate::cluster::ServerSideEmitHandler>,
}

impl ServerBuilder {
    /// Decides who each connection is (Socket.IO CONNECT and SSE requests). `Ok(None)` accepts an
    /// anonymous connection (it receives only `to_all`). Without a hook every connection is refused.
    pub fn authenticate(
        mut self,
        hook: impl Fn(&AuthRequest<'_>) -> Result<Option<Identity>, Rejection> + Send + Sync + 'static,
    ) -> Self {
        self.handlers.auth = Some(Arc::new(hook));
        self.handlers.auth_deferred = None;
        self
    }

    /// Like [`ServerBuilder::authenticate`], for a decision that takes time (asking another
    /// service): the hook gets a [`ConnectDecision`] to answer with later, from any thread, and
    /// returns at once so other handlers are not held up. A decision dropped unanswered refuses
    /// the connection. Replaces `authenticate` (the one registered last wins).
    pub fn authenticate_deferred(
        mut self,
        hook: impl Fn(&AuthRequest<'_>, ConnectDecision) + Send + Sync + 'static,
    ) -> Self {
        self.handlers.auth = None;
        self.handlers.auth_deferred = Some(Arc::new(hook));
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
    ///
    /// Handlers run one after another on the dispatcher thread, in the order their events came
    /// in, and must not block. What a handler sends (acks, emits, joins) is handed to the loops,
    /// in order, as one batch per loop per batch of handlers: never later than 200 µs after it
    /// was sent while further handlers run, and before the handler waits for a loop itself
    /// (`user_rooms`, `stats`…).
    pub fn on_event(
        mut self,
        namespace: &str,
        event: &str,
        handler: impl Fn(&Socket, Event) + Send + Sync + 'static,
    ) -> Self {
        self.register_namespace(namespace);
        self.handlers
            .events
            .entry(namespace.to_string())
            .or_default()
            .insert(event.to_string(), Arc::new(handler));
        self
    }

    /// Called for every client event in `namespace` that no [`ServerBuilder::on_event`] handler
    /// names (a catch-all, e.g. to forward events elsewhere).
    pub fn on_any_event(
        mut self,
        namespace: &str,
        handler: impl Fn(&Socket, Event) + Send + Sync + 'static,
    ) -> Self {
        self.register_namespace(namespace);
        self.handlers
            .any_event
            .insert(namespace.to_string(), Arc::new(handler));
        self
    }

    /// Answers HTTP requests whose path is under `prefix` on tidings' own port: `/api` takes
    /// `/api` and `/api/…` (not `/apix`), `/` takes every path nothing else serves. The
    /// Socket.IO, SSE and Engine.IO endpoints and [`crate::Page`]s come first; the longest prefix
    /// wins.
    ///
    /// The handler runs on the dispatcher thread, like every handler: it must not block. It gets
    /// the [`HttpRequest`] (head and body, within the same limits as every request; the body at
    /// most `Config::max_request_body`) and a [`Responder`] to answer with, now or later from any
    /// thread. Unanswered after `Config::request_timeout` the client gets `503`; a responder
    /// dropped unanswered answers `500`. CORS follows `Config::cors`, preflights included.
    pub fn route(
        mut self,
        prefix: &str,
        handler: impl Fn(HttpRequest, Responder) + Send + Sync + 'static,
    ) -> Self {
        self.handlers
            .routes
            .insert(prefix.to_string(), Arc::new(handler));
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
        handler: impl Fn(&Handle, EngineIoEvent) + Send + Sync + 'static,
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

    /// Called when an SSE stream ends (the client left, a slow consumer was closed, or
    /// [`Handle::sse_close`]).
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
        #[cfg(feature = "redis")]
        {
            let adapter = self.adapter.map(|a| (a, self.on_server_side_emit));
            Server::start_with(self.config, self.handlers, self.cluster, adapter)
        }
        #[cfg(not(feature = "redis"))]
        Server::start_with(self.config, self.handlers, None, None)
    }

    /// Joins a Node.js socket.io cluster: the Node servers on the same Redis with
    /// `@socket.io/redis-adapter` 8.x (same `key`), and the services that publish with
    /// `@socket.io/redis-emitter`. Their broadcasts reach this server's Socket.IO clients in
    /// their rooms, this server's Socket.IO broadcasts reach theirs, and their `fetchSockets`,
    /// `socketsJoin`, `socketsLeave`, `disconnectSockets`, `allRooms`, `serverSideEmit` and
    /// broadcasts with acks include this server's sockets. A tidings user or tenant is the room
    /// [`crate::user_room`] / [`crate::tenant_room`] there. Not together with
    /// [`ServerBuilder::cluster`]; `start` fails unless Redis answers then.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tidings::{Config, Server, SocketIoAdapterConfig};
    /// let server = Server::builder(Config::default())
    ///     .allow_anonymous()
    ///     .socketio_adapter(SocketIoAdapterConfig::new("redis://127.0.0.1:6379/"))
    ///     .start()?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub fn socketio_adapter(mut self, adapter: crate::cluster::SocketIoAdapterConfig) -> Self {
        self.adapter = Some(adapter);
        self
    }

    /// What this server answers to a Node server's `serverSideEmit(event, ...args)` (with
    /// [`ServerBuilder::socketio_adapter`]): called on the adapter's thread with the event and
    /// its arguments; `Some(value)` answers an emit with an ack (`serverSideEmitWithAck`).
    #[cfg(feature = "redis")]
    pub fn on_server_side_emit(
        mut self,
        handler: impl Fn(&str, &[Value]) -> Option<Value> + Send + Sync + 'static,
    ) -> Self {
        self.on_server_side_emit = Some(Arc::new(handler));
        self
    }

    /// Joins the cluster of every server that uses the same Redis (and prefix): broadcasts,
    /// user rooms and the history are the cluster's, so a client may connect to, and resume on,
    /// any node. `start` fails unless Redis answers then; later outages are survived (see
    /// [`crate::ClusterConfig`] and [`crate::BroadcastError::ClusterUnavailable`]).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tidings::{ClusterConfig, Config, Server};
    /// let server = Server::builder(Config::default())
    ///     .allow_anonymous()
    ///     .cluster(ClusterConfig::new("redis://127.0.0.1:6379/"))
    ///     .start()?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub fn cluster(mut self, cluster: crate::cluster::ClusterConfig) -> Self {
        self.cluster = Some(cluster);
        self
    }
}
