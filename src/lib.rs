//! One broadcast API over **Server-Sent Events** and **Socket.IO**, on a small event loop of its
//! own. The application says "send event E with data D to user U / tenant T / everyone / room
//! R", and every connection that should get it does — a browser `EventSource`, a
//! `socket.io-client` on a phone, both. Socket.IO clients also talk back: events, acks in both
//! directions, rooms.
//!
//! # Quick start
//!
//! Start a [`Server`] with an authentication hook (who is each connection?) and handlers for
//! client events, then push from any thread through a [`NotificationService`]:
//!
//! ```no_run
//! use serde_json::json;
//! use tidings::{Config, Identity, NotificationService, Rejection, Server, Transport};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder(Config::default()) // 127.0.0.1:3000; see `Config`
//!     // Socket.IO clients send a token in their `auth` payload; an EventSource in a cookie.
//!     .authenticate(|req| {
//!         let token = req.auth.and_then(|a| a.get("token")).and_then(|t| t.as_str());
//!         let token = token.map(str::to_string).or_else(|| req.info.cookie("token"));
//!         match token.as_deref() {
//!             Some("t-alice") => Ok(Some(Identity::new("acme", "alice"))),
//!             _ => Err(Rejection::unauthorized("log in first")),
//!         }
//!     })
//!     // A chat line reaches the whole room, on both transports.
//!     .on_event("/", "chat", |socket, ev| {
//!         let _ = socket.to_room("lobby", "chat", ev.args);
//!     })
//!     .start()?;
//! let service = NotificationService::new(server.handle());
//! let alice = Identity::new("acme", "alice");
//! service.join_room(&alice, "lobby")?; // alice's connections, now and after reconnects
//! service.broadcast_to_user(Transport::Both, &alice, "notification", &json!({"subject": "Hi"}))?;
//! # Ok(())
//! # }
//! ```
//!
//! [`client_guide`] says how browsers, Node and curl connect, where identity comes from on each
//! transport, CORS, what the data looks like, and how resume works.
//!
//! # The API
//!
//! - [`NotificationService`]: a provider per [`Transport`] ([`RealtimeProvider`], whose
//!   [`RealtimeBroadcast`] has `to_user`, `to_tenant`, `to_all`, `to_room`, and whose
//!   [`SocketIoFeatures`] add acks and rooms), the `broadcast_to_*` shortcuts, `join_room`,
//!   `leave_room`, `user_rooms` and [`NotificationService::send_counted`].
//! - [`ServerBuilder`]: the authentication hook ([`AuthRequest`] → [`Identity`] or
//!   [`Rejection`]) and handlers, which run on one dispatcher thread and get a [`Socket`] and an
//!   [`Event`] (with its [`AckResponder`]).
//! - [`ServerBuilder::route`]: the application's own HTTP requests on the same port (its page, a
//!   small REST API), answered through a [`Responder`] from any thread, under the same limits.
//! - [`Handle`]: the thread-safe handle behind it all ([`Handle::metrics`] for monitoring);
//!   [`Config`]: every limit, validated at start.
//! - [`testing::RecordingBroadcast`]: the traits' test double; [`validate`]: the rules for names.
//!
//! # Semantics
//!
//! - **One room model.** In the main namespace a room's audience is every connection (both
//!   transports) of the users joined with `join_room`, plus the sockets joined with
//!   [`Socket::join`]; every `to_room` reaches exactly that audience, each connection once. A
//!   user's membership survives reconnects; a socket's ends with it. Rooms never fall back to
//!   "everyone".
//! - **Tenants are their own key**: the same user id in two tenants are two users.
//! - **Acks** yield one [`AckOutcome`] per Socket.IO connection, or [`AckOutcomes::NoRecipients`].
//! - **Resume**: SSE clients (`Last-Event-ID`) and, with [`Config::connection_state_recovery`],
//!   Socket.IO clients get what they missed from one bounded history — or, when the gap cannot be
//!   filled, a [`RESET_EVENT`] / a fresh session. Volatile sends are never replayed.
//! - **Every call validates** its input: a [`BroadcastError`], and nothing sent.
//! - **Every core**: [`Config::event_loops`] loops (default: one per core, at most 8), each with
//!   its own connections and no lock per delivery. All of the above holds across them as within
//!   one: a broadcast is encoded once and handed to every loop in one order; rooms, acks and the
//!   history are the server's, not a loop's; a polling session works whichever connection (and
//!   loop) carries each request; a client recovers or resumes through any loop.
//! - **Several nodes** (the `redis` feature): `ServerBuilder::cluster` joins every server on the
//!   same Redis into one service — broadcasts, user rooms, acks and counts are the cluster's, one
//!   ordered history in Redis lets an SSE client resume on any node, and a waiting Socket.IO
//!   socket recovers on any node, even when its own node was killed. While Redis is
//!   unreachable a node keeps serving its connections and refuses broadcasts with
//!   [`BroadcastError::ClusterUnavailable`].
//! - **Next to Node.js socket.io servers** (the `redis` feature):
//!   `ServerBuilder::socketio_adapter` makes the server a node of a socket.io cluster that uses
//!   `@socket.io/redis-adapter` (and `@socket.io/redis-emitter`): shared rooms and broadcasts,
//!   and `fetchSockets`, `socketsJoin`, `serverSideEmit` and broadcasts with acks in both
//!   directions; tidings users and tenants are the rooms [`user_room`] and [`tenant_room`].
//!
//! # Layout
//!
//! Layers with one-way dependencies: `proto` (pure codecs: bytes in, values out, no clock, no
//! sockets) → `engine` (sans-IO state machines: Engine.IO sessions, Socket.IO sockets, SSE
//! streams, the index of users, tenants and rooms, acks; time is an input, so tests drive it on
//! a simulated clock; the hub the loops share and the routing of commands to loops are sans-IO
//! too) → `io` (the mio loops: the only place with sockets and the clock) →
//! `server` and `api` (the thread-safe handle, the dispatcher thread that runs handlers, the
//! provider traits). [`validate`] and the errors sit below `server` and `api`. `cluster` (the
//! `redis` feature) is the codecs of its messages (its own, and the Node adapter's) and the
//! threads per node, the only code that talks to Redis; what they hear goes to the loops
//! through the same sans-IO routing.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod api;
pub(crate) mod buf;
mod cluster;
mod config;
mod engine;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod io;
mod metrics;
#[doc(hidden)]
pub mod proto;
mod server;
pub mod testing;
pub mod validate;

/// How clients connect: URLs, identity, CORS, data, resume, and copy-paste snippets.
#[doc = include_str!("client_guide.md")]
pub mod client_guide {}

pub use api::{
    AckCallback, AckOutcomes, NotificationService, PendingReach, RealtimeBroadcast,
    RealtimeProvider, SocketIoFeatures, Transport, TransportProvider, UnknownTransport,
};
#[cfg(feature = "redis")]
pub use cluster::{
    ClusterConfig, RemoteSocketInfo, ServerSideEmitHandler, SocketIoAdapterConfig, SocketIoCluster,
    SocketSelector,
};
pub use config::{Config, ConfigError, Cors, Page, Recovery};
pub use engine::adapter::{tenant_room, user_room};
pub use engine::{
    AckOutcome, AckResult, CloseReason, Data, DisconnectReason, Identity, Reach, Rejection,
    RequestInfo, RoomLimit, SessionId, SocketId, Stats, StreamId, Target, RESET_EVENT,
};
pub use error::{BroadcastError, ServerClosed};
pub use metrics::Metrics;
pub use proto::http::Method;
pub use proto::sio::placeholder;
pub use server::{
    AckResponder, AuthRequest, ConnectDecision, EngineIoEvent, Event, Handle, HttpRequest,
    HttpResponse, Responder, Server, ServerBuilder, Socket, StartError,
};
