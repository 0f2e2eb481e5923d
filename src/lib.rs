//! tidings: one broadcast API over Server-Sent Events and Socket.IO, on a hand-rolled mio event
//! loop.
//!
//! Layers, with one-way dependencies: [`proto`] (pure codecs) → `engine` (sans-IO state machines,
//! time is an input) → `io` (the only place with sockets, mio and the clock) → [`Server`] /
//! [`Handle`] (a thread-safe handle that reaches the loop through a channel and a `mio::Waker`).
#![forbid(unsafe_code)]

pub mod api;
pub mod buf;
pub mod config;
pub mod engine;
mod io;
pub mod proto;
mod server;
pub mod testing;

pub use api::{
    AckOutcomes, BroadcastError, NotificationService, RealtimeBroadcast, RealtimeProvider,
    SocketIoFeatures, Transport, TransportProvider,
};
pub use config::{Config, ConfigError, Cors, Page};
pub use engine::{
    AckOutcome, AckResult, AppEvent, CloseReason, Data, DisconnectReason, Identity, Rejection,
    RequestInfo, RoomLimit, SessionId, SocketId, Stats, StreamId, Target, Transports, RESET_EVENT,
};
pub use server::{
    AckResponder, AuthRequest, Event, Handle, Server, ServerBuilder, ServerClosed, Socket,
    StartError,
};
