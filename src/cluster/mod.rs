//! A cluster of tidings nodes through Redis (the `redis` feature): every node delivers every
//! broadcast to its own connections, user rooms are stored in Redis, and one ordered history
//! lets a client resume on any node.
//!
//! How it works:
//! - A broadcast goes through one Lua script on Redis, which takes the next sequence number,
//!   appends the message to a capped stream (the history) and publishes it on the bus channel,
//!   all at once: a message is stored before it is sent, the numbers have no gaps, and every node
//!   sees the messages in the order of their numbers. `join_room` and `leave_room` go through
//!   the same script (checked against the limits, stored in a hash, published in the same
//!   order); a node that missed some reads the hash again.
//! - Every node (the sender too) delivers what it hears on the bus to its own connections,
//!   encoded once per node, through the same path as a broadcast within one process: so the
//!   audience, the SSE ids and the Socket.IO offsets are the same on every node.
//! - Each node keeps the history in memory as well (filled from Redis at start, then from the
//!   bus). A node that missed messages (its link to Redis broke) reads them from the stream and
//!   delivers them, late but in order, before anything newer.
//! - `to_user_with_ack` and `send_counted` ask every node through the bus; each replies on the
//!   asker's own channel, and the asker knows how many replies to wait for from the number of
//!   subscribers Redis published the request to.
//! - With connection state recovery on, a socket that waits on a node that shuts down is handed
//!   to the node its client comes back through (a claim over the bus). For a node that dies
//!   without a word, each node also keeps a record of its recoverable sockets in Redis as they
//!   change (`session.lua`: ids, identity, `Socket::join` rooms with when they were joined and
//!   left, the events emitted to the socket alone) and says it is alive once a second; a claim
//!   that no live node answers takes the record of a dead node (`claim.lua`), and the engine
//!   replays from its own history what reached the socket there, merged with those emits.
//! - Sends are queued to one publisher thread that pipelines them; a send refused because Redis
//!   is unreachable returns [`crate::BroadcastError::ClusterUnavailable`]; a send already queued
//!   when the link breaks is retried (the script drops duplicates) for `retry_for`, then given up
//!   and counted.
//!
//! Layers: `wire` is the pure codec; `link` holds the threads and the only Redis calls.
//! `adapter_wire` is the pure codec of the Node socket.io Redis adapter's format, and `adapter`
//! the threads of a node of a Node.js socket.io cluster (`ServerBuilder::socketio_adapter`).

#[cfg(feature = "redis")]
mod adapter;
#[cfg(feature = "redis")]
pub(crate) mod adapter_wire;
#[cfg(feature = "redis")]
mod link;
#[cfg(feature = "redis")]
mod node;
// The codec is pure and always built, so the fuzz target and its corpus replay need no feature.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) mod wire;

#[cfg(feature = "redis")]
pub(crate) use adapter::Adapter;
#[cfg(feature = "redis")]
pub use adapter::{
    RemoteSocketInfo, ServerSideEmitHandler, SocketIoAdapterConfig, SocketIoCluster, SocketSelector,
};
#[cfg(feature = "redis")]
pub use node::ClusterConfig;
#[cfg(feature = "redis")]
pub(crate) use node::*;
