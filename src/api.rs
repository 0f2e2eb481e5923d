//! The unified broadcast API of the pattern (`seed/unified-realtime-pattern.md`), in Rust.
//!
//! | pattern | tidings |
//! |---|---|
//! | `notificationService.getRealtimeProvider('socket' \| 'sse')` | [`NotificationService::provider`] with [`Transport`] (parses from `"socket"` / `"sse"`) |
//! | `provider.getBroadcast().toUser / toTenant / toAll / toRoom` | [`RealtimeBroadcast`] |
//! | `provider.isBidirectional()` | [`RealtimeProvider::is_bidirectional`] |
//! | `provider.getSocketIOFeatures()` | [`RealtimeProvider::socketio_features`] |
//! | `features.toUserWithAck / joinRoom / leaveRoom / getUserRooms` | [`SocketIoFeatures`] |
//! | `broadcastToUser / broadcastToTenant / broadcastToRoom` | the same on [`NotificationService`] |
//!
//! Departures from the seed, on purpose: rooms are real on SSE too (the seed's fallback of
//! `toRoom` to `toAll` would leak events); a user is named with its tenant ([`Identity`]), so the
//! same user id in two tenants are two users; every call validates its input and returns a typed
//! error instead of failing silently.

use std::fmt;
use std::str::FromStr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::Value;

use crate::engine::{AckReply, AckResult, Command, Identity, RoomLimit, Target, Transports};
use crate::server::{Handle, ServerClosed};

/// Longest user id, tenant id, room name or event name, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// Socket.IO event names a server may not emit (the client reserves them).
pub const RESERVED_EVENT_NAMES: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Which transport(s) a provider reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Server-Sent Events (browser `EventSource`): one-way.
    Sse,
    /// Socket.IO: two-way, with acks.
    SocketIo,
    /// Both at once: a user with a tab on SSE and a phone on Socket.IO gets the event on both.
    Both,
}

impl Transport {
    fn transports(self) -> Transports {
        match self {
            Transport::Sse => Transports::Sse,
            Transport::SocketIo => Transports::SocketIo,
            Transport::Both => Transports::Both,
        }
    }
}

/// An unknown transport name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownTransport(pub String);

impl fmt::Display for UnknownTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown transport {:?} (expected \"sse\", \"socket\" or \"both\")",
            self.0
        )
    }
}

impl std::error::Error for UnknownTransport {}

impl FromStr for Transport {
    type Err = UnknownTransport;

    /// `"sse"`, `"socket"` (the seed's name; also `"socketio"`, `"socket.io"`), `"both"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sse" => Ok(Transport::Sse),
            "socket" | "socketio" | "socket.io" => Ok(Transport::SocketIo),
            "both" => Ok(Transport::Both),
            _ => Err(UnknownTransport(s.chars().take(32).collect())),
        }
    }
}

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
    PayloadTooLarge { size: usize, max: usize },
    /// The server has shut down.
    ServerClosed,
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
            BroadcastError::TooManyRooms(RoomLimit::PerUser(n)) => {
                write!(f, "the user is already in {n} rooms")
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

/// Checks an id: 1 to 256 bytes, no control characters (so no CR, LF or NUL can reach a wire
/// format, and no separator tricks matter: ids are never concatenated into keys).
fn check_id(kind: &str, s: &str, allow_empty: bool) -> Result<(), String> {
    if s.is_empty() && !allow_empty {
        return Err(format!("{kind} is empty"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(format!("{kind} is {} bytes, over {MAX_ID_LEN}", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{kind} contains a control character"));
    }
    Ok(())
}

/// A user: a non-empty user id and a tenant (may be empty: the default tenant).
pub fn validate_user(user: &Identity) -> Result<(), BroadcastError> {
    check_id("user id", &user.user, false).map_err(BroadcastError::InvalidUser)?;
    check_id("tenant id", &user.tenant, true).map_err(BroadcastError::InvalidUser)
}

pub fn validate_tenant(tenant: &str) -> Result<(), BroadcastError> {
    check_id("tenant id", tenant, true).map_err(BroadcastError::InvalidTenant)
}

pub fn validate_room(room: &str) -> Result<(), BroadcastError> {
    check_id("room", room, false).map_err(BroadcastError::InvalidRoom)
}

/// An event name: an id (see above) that Socket.IO clients do not reserve.
pub fn validate_event(event: &str) -> Result<(), BroadcastError> {
    check_id("event name", event, false).map_err(BroadcastError::InvalidEvent)?;
    if RESERVED_EVENT_NAMES.contains(&event) {
        return Err(BroadcastError::InvalidEvent(format!(
            "{event:?} is reserved by Socket.IO"
        )));
    }
    Ok(())
}

/// What `to_user_with_ack` yields.
#[derive(Clone, Debug, PartialEq)]
pub enum AckOutcomes {
    /// The user has no Socket.IO connection: nothing was sent.
    NoRecipients,
    /// One outcome per Socket.IO connection of the user.
    Outcomes(Vec<AckResult>),
}

impl AckOutcomes {
    fn from_results(results: Vec<AckResult>) -> AckOutcomes {
        if results.is_empty() {
            AckOutcomes::NoRecipients
        } else {
            AckOutcomes::Outcomes(results)
        }
    }
}

/// A callback for the outcomes of `to_user_with_ack_callback` (run on the dispatcher thread).
pub type AckCallback = Box<dyn FnOnce(AckOutcomes) + Send>;

/// Push to a user, a tenant, everyone, or a room. Object-safe; every method may be called from
/// any thread and returns once the broadcast is validated, encoded and handed to the loop.
pub trait RealtimeBroadcast: Send + Sync {
    fn to_user(&self, user: &Identity, event: &str, data: &Value) -> Result<(), BroadcastError>;
    fn to_tenant(&self, tenant: &str, event: &str, data: &Value) -> Result<(), BroadcastError>;
    fn to_all(&self, event: &str, data: &Value) -> Result<(), BroadcastError>;
    /// Reaches the members of `room` on this provider's transports, and nobody else.
    fn to_room(&self, room: &str, event: &str, data: &Value) -> Result<(), BroadcastError>;
}

/// What only a two-way transport can do.
pub trait SocketIoFeatures: RealtimeBroadcast {
    /// Sends to each of the user's Socket.IO connections and waits (at most `timeout`) for one
    /// outcome per connection. Blocks the calling thread: do not call it from a handler.
    fn to_user_with_ack(
        &self,
        user: &Identity,
        event: &str,
        data: &Value,
        timeout: Duration,
    ) -> Result<AckOutcomes, BroadcastError>;
    /// The same, calling `callback` (on the dispatcher thread) instead of blocking.
    fn to_user_with_ack_callback(
        &self,
        user: &Identity,
        event: &str,
        data: &Value,
        timeout: Duration,
        callback: AckCallback,
    ) -> Result<(), BroadcastError>;
    /// The user joins `room` on every transport, now and on connections it opens later, until
    /// `leave_room`.
    fn join_room(&self, user: &Identity, room: &str) -> Result<(), BroadcastError>;
    fn leave_room(&self, user: &Identity, room: &str) -> Result<(), BroadcastError>;
    /// The user's rooms, including every `join_room` that has returned.
    fn user_rooms(&self, user: &Identity) -> Result<Vec<String>, BroadcastError>;
}

/// A transport as the application sees it.
pub trait RealtimeProvider: Send + Sync {
    fn broadcast(&self) -> &dyn RealtimeBroadcast;
    /// `true` for Socket.IO (and both): clients can talk back and answer acks.
    fn is_bidirectional(&self) -> bool;
    /// Socket.IO's extras, or `None` for SSE.
    fn socketio_features(&self) -> Option<&dyn SocketIoFeatures>;
    fn transport(&self) -> Transport;
}

/// The provider of one transport (or both), over a server [`Handle`].
#[derive(Clone, Debug)]
pub struct TransportProvider {
    handle: Handle,
    transport: Transport,
}

impl TransportProvider {
    pub fn new(handle: Handle, transport: Transport) -> TransportProvider {
        TransportProvider { handle, transport }
    }

    fn send(&self, target: Target, event: &str, data: &Value) -> Result<(), BroadcastError> {
        validate_event(event)?;
        let json = data.to_string();
        // The largest wire form is the Socket.IO packet: `42["event",data]`.
        let size = json.len() + event.len() + 8;
        let max = self.handle.max_payload();
        if size > max {
            return Err(BroadcastError::PayloadTooLarge { size, max });
        }
        self.handle.command(Command::Broadcast {
            target,
            transports: self.transport.transports(),
            event: Arc::from(event),
            data: Arc::from(json),
        })?;
        Ok(())
    }
}

impl RealtimeBroadcast for TransportProvider {
    fn to_user(&self, user: &Identity, event: &str, data: &Value) -> Result<(), BroadcastError> {
        validate_user(user)?;
        self.send(Target::User(user.clone()), event, data)
    }

    fn to_tenant(&self, tenant: &str, event: &str, data: &Value) -> Result<(), BroadcastError> {
        validate_tenant(tenant)?;
        self.send(Target::Tenant(tenant.to_string()), event, data)
    }

    fn to_all(&self, event: &str, data: &Value) -> Result<(), BroadcastError> {
        self.send(Target::All, event, data)
    }

    fn to_room(&self, room: &str, event: &str, data: &Value) -> Result<(), BroadcastError> {
        validate_room(room)?;
        self.send(Target::Room(room.to_string()), event, data)
    }
}

impl TransportProvider {
    fn ack_command(
        &self,
        user: &Identity,
        event: &str,
        data: &Value,
        timeout: Duration,
        reply: AckReply,
    ) -> Result<(), BroadcastError> {
        validate_user(user)?;
        validate_event(event)?;
        let size = data.to_string().len() + event.len() + 32;
        let max = self.handle.max_payload();
        if size > max {
            return Err(BroadcastError::PayloadTooLarge { size, max });
        }
        self.handle.command(Command::UserAck {
            user: user.clone(),
            event: event.to_string(),
            data: data.clone(),
            timeout,
            reply,
        })?;
        Ok(())
    }
}

impl SocketIoFeatures for TransportProvider {
    fn to_user_with_ack(
        &self,
        user: &Identity,
        event: &str,
        data: &Value,
        timeout: Duration,
    ) -> Result<AckOutcomes, BroadcastError> {
        let (tx, rx) = mpsc::channel();
        self.ack_command(user, event, data, timeout, AckReply::Channel(tx))?;
        // The engine always answers: at the latest when the timeout fires (or when it shuts
        // down and drops the sender).
        let results = rx.recv().map_err(|_| BroadcastError::ServerClosed)?;
        Ok(AckOutcomes::from_results(results))
    }

    fn to_user_with_ack_callback(
        &self,
        user: &Identity,
        event: &str,
        data: &Value,
        timeout: Duration,
        callback: AckCallback,
    ) -> Result<(), BroadcastError> {
        let cb = move |results: Vec<AckResult>| callback(AckOutcomes::from_results(results));
        self.ack_command(user, event, data, timeout, AckReply::Callback(Box::new(cb)))
    }

    fn join_room(&self, user: &Identity, room: &str) -> Result<(), BroadcastError> {
        validate_user(user)?;
        validate_room(room)?;
        let (tx, rx) = mpsc::channel();
        self.handle.command(Command::JoinRoomReply {
            user: user.clone(),
            room: room.to_string(),
            reply: tx,
        })?;
        rx.recv()
            .map_err(|_| BroadcastError::ServerClosed)?
            .map_err(BroadcastError::TooManyRooms)
    }

    fn leave_room(&self, user: &Identity, room: &str) -> Result<(), BroadcastError> {
        validate_user(user)?;
        validate_room(room)?;
        self.handle.command(Command::LeaveRoom {
            user: user.clone(),
            room: room.to_string(),
        })?;
        Ok(())
    }

    fn user_rooms(&self, user: &Identity) -> Result<Vec<String>, BroadcastError> {
        validate_user(user)?;
        let (tx, rx) = mpsc::channel();
        // Commands are applied in order, so every join that returned before this call is seen.
        self.handle.command(Command::UserRooms {
            user: user.clone(),
            reply: tx,
        })?;
        rx.recv().map_err(|_| BroadcastError::ServerClosed)
    }
}

impl RealtimeProvider for TransportProvider {
    fn broadcast(&self) -> &dyn RealtimeBroadcast {
        self
    }

    fn is_bidirectional(&self) -> bool {
        self.transport != Transport::Sse
    }

    fn socketio_features(&self) -> Option<&dyn SocketIoFeatures> {
        match self.transport {
            Transport::Sse => None,
            Transport::SocketIo | Transport::Both => Some(self),
        }
    }

    fn transport(&self) -> Transport {
        self.transport
    }
}

/// The pattern's entry point: a provider per transport, and the three shortcuts.
#[derive(Clone, Debug)]
pub struct NotificationService {
    sse: TransportProvider,
    socket: TransportProvider,
    both: TransportProvider,
}

impl NotificationService {
    pub fn new(handle: Handle) -> NotificationService {
        NotificationService {
            sse: TransportProvider::new(handle.clone(), Transport::Sse),
            socket: TransportProvider::new(handle.clone(), Transport::SocketIo),
            both: TransportProvider::new(handle, Transport::Both),
        }
    }

    /// The seed's `getRealtimeProvider('socket' | 'sse')`; `Transport::Both` reaches both.
    pub fn provider(&self, transport: Transport) -> &dyn RealtimeProvider {
        match transport {
            Transport::Sse => &self.sse,
            Transport::SocketIo => &self.socket,
            Transport::Both => &self.both,
        }
    }

    pub fn broadcast_to_user(
        &self,
        transport: Transport,
        user: &Identity,
        event: &str,
        data: &Value,
    ) -> Result<(), BroadcastError> {
        self.provider(transport)
            .broadcast()
            .to_user(user, event, data)
    }

    pub fn broadcast_to_tenant(
        &self,
        transport: Transport,
        tenant: &str,
        event: &str,
        data: &Value,
    ) -> Result<(), BroadcastError> {
        self.provider(transport)
            .broadcast()
            .to_tenant(tenant, event, data)
    }

    /// Reaches the room's members on every transport.
    pub fn broadcast_to_room(
        &self,
        room: &str,
        event: &str,
        data: &Value,
    ) -> Result<(), BroadcastError> {
        self.both.to_room(room, event, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_parses_the_seed_names() {
        assert_eq!("sse".parse::<Transport>(), Ok(Transport::Sse));
        assert_eq!("socket".parse::<Transport>(), Ok(Transport::SocketIo));
        assert_eq!("both".parse::<Transport>(), Ok(Transport::Both));
        assert!("SSE ".parse::<Transport>().is_err());
        assert!("".parse::<Transport>().is_err());
    }

    #[test]
    fn ids_are_validated() {
        assert!(validate_user(&Identity::new("t", "u")).is_ok());
        assert!(validate_user(&Identity::user("u")).is_ok());
        assert!(matches!(
            validate_user(&Identity::new("t", "")),
            Err(BroadcastError::InvalidUser(_))
        ));
        assert!(validate_user(&Identity::new("t\n", "u")).is_err());
        assert!(validate_user(&Identity::new("t", "a".repeat(257))).is_err());
        assert!(validate_user(&Identity::new("t", "a".repeat(256))).is_ok());
        assert!(validate_room("r:with:colons and spaces").is_ok());
        assert!(validate_room("").is_err());
        assert!(validate_room("a\0b").is_err());
        assert!(validate_event("notification").is_ok());
        assert!(validate_event("connect").is_err());
        assert!(validate_event("a\r\nid: 9").is_err());
        assert!(validate_tenant("").is_ok());
    }
}
