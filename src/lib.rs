//! tidings: one broadcast API over Server-Sent Events and Socket.IO, on a hand-rolled mio event
//! loop.
//!
//! Layers, with one-way dependencies: [`proto`] (pure codecs) → `engine` (sans-IO state machines,
//! time is an input) → `io` (the only place with sockets, mio and the clock) → [`Server`] /
//! [`Handle`] (a thread-safe handle that reaches the loop through a channel and a `mio::Waker`).
//!
//! ```no_run
//! use serde_json::json;
//! use tidings::{Config, Identity, NotificationService, Rejection, Server, Transport};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder(Config::default())
//!     // Who is this connection? Headers, cookies, query, and Socket.IO's CONNECT payload.
//!     .authenticate(|req| {
//!         let user = req.info.cookie("user").ok_or(Rejection::unauthorized("log in"))?;
//!         Ok(Some(Identity::new("acme", user)))
//!     })
//!     .on_event("/", "chat", |socket, ev| {
//!         let _ = socket.to_room("lobby", "chat", ev.args);
//!     })
//!     .start()?;
//! let service = NotificationService::new(server.handle());
//! let alice = Identity::new("acme", "alice");
//! service.broadcast_to_user(Transport::Both, &alice, "notification", &json!({"subject": "Hello"}))?;
//! if let Some(f) = service.provider(Transport::SocketIo).socketio_features() {
//!     f.join_room(&alice, "support-chat")?; // every transport, now and after reconnects
//! }
//! service.broadcast_to_room("support-chat", "message", &json!({"text": "Welcome!"}))?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod api;
pub(crate) mod buf;
mod config;
mod engine;
mod error;
mod io;
#[doc(hidden)]
pub mod proto;
mod server;
pub mod testing;
pub mod validate;

pub use api::{
    AckCallback, AckOutcomes, NotificationService, RealtimeBroadcast, RealtimeProvider,
    SocketIoFeatures, Transport, TransportProvider, UnknownTransport,
};
pub use config::{Config, ConfigError, Cors, Page};
pub use engine::{
    AckOutcome, AckResult, AppEvent, CloseReason, Data, DisconnectReason, Identity, Reach,
    Rejection, RequestInfo, RoomLimit, SessionId, SocketId, Stats, StreamId, Target, RESET_EVENT,
};
pub use error::{BroadcastError, ServerClosed};
pub use proto::sio::placeholder;
pub use server::{
    AckResponder, AuthRequest, Event, Handle, Server, ServerBuilder, Socket, StartError,
};
