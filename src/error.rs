//! The errors of the API calls: what was refused and why. Nothing was sent when a call fails.

use std::fmt;

use crate::engine::RoomLimit;

/// The loop thread is gone (the server was shut down): the command was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerClosed;

impl fmt::Display for ServerClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the server has shut down")
    }
}

impl std::error::Error for ServerClosed {}

/// Why a broadcast call was refused. Nothing was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BroadcastError {
    /// A user id (or its tenant) is empty, too long or has control characters.
    InvalidUser(String),
    /// A tenant id is too long or has control characters.
    InvalidTenant(String),
    /// A room name is empty, too long or has control characters.
    InvalidRoom(String),
    /// An event name is empty, too long, has control characters, or is reserved by Socket.IO.
    InvalidEvent(String),
    /// `join_room` past `max_rooms_per_user` or `max_room_memberships`.
    TooManyRooms(RoomLimit),
    /// The encoded payload is larger than the server's `max_payload`.
    PayloadTooLarge {
        /// The size of the largest wire form of this message, in bytes.
        size: usize,
        /// The server's `max_payload`.
        max: usize,
    },
    /// The server has shut down.
    ServerClosed,
    /// A cluster node cannot reach Redis now (or its publish queue is full): nothing was sent,
    /// on this node or any other. Retry later; `Handle::cluster_connected` says when the link is
    /// back.
    ClusterUnavailable(String),
}

impl fmt::Display for BroadcastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BroadcastError::InvalidUser(m) => write!(f, "invalid user: {m}"),
            BroadcastError::InvalidTenant(m) => write!(f, "invalid tenant: {m}"),
            BroadcastError::InvalidRoom(m) => write!(f, "invalid room: {m}"),
            BroadcastError::InvalidEvent(m) => write!(f, "invalid event name: {m}"),
            BroadcastError::PayloadTooLarge { size, max } => {
                write!(f, "payload of {size} bytes is over the {max}-byte limit")
            }
            BroadcastError::ServerClosed => f.write_str("the server has shut down"),
            BroadcastError::ClusterUnavailable(why) => write!(f, "cluster unavailable: {why}"),
            BroadcastError::TooManyRooms(RoomLimit::PerUser(n)) => {
                write!(f, "the user is already in {n} rooms")
            }
            BroadcastError::TooManyRooms(RoomLimit::PerSocket(n)) => {
                write!(f, "the socket is already in {n} rooms")
            }
            BroadcastError::TooManyRooms(RoomLimit::Total(n)) => {
                write!(f, "the server already holds {n} room memberships")
            }
        }
    }
}

impl std::error::Error for BroadcastError {}

impl From<ServerClosed> for BroadcastError {
    fn from(_: ServerClosed) -> Self {
        BroadcastError::ServerClosed
    }
}
