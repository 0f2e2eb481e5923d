//! The unified broadcast API: a [`NotificationService`] hands out a provider per transport, each
//! provider pushes to a user, a tenant, everyone or a room, and the Socket.IO provider adds acks
//! and room membership.
//!
//! | the pattern's name (TypeScript) | tidings |
//! |---|---|
//! | `notificationService.getRealtimeProvider('socket' \| 'sse')` | [`NotificationService::provider`] with [`Transport`] (parses from `"socket"` / `"sse"` / `"both"`) |
//! | `provider.getBroadcast().toUser / toTenant / toAll / toRoom` | [`RealtimeBroadcast`] |
//! | `provider.isBidirectional()` | [`RealtimeProvider::is_bidirectional`] |
//! | `provider.getSocketIOFeatures()` | [`RealtimeProvider::socketio_features`] |
//! | `features.toUserWithAck / joinRoom / leaveRoom / getUserRooms` | [`SocketIoFeatures`] |
//! | `broadcastToUser / broadcastToTenant / broadcastToRoom` | the same on [`NotificationService`] |
//!
//! Where tidings is stricter than a naive implementation, on purpose: rooms are real on SSE too
//! (a room event never falls back to "everyone"); a user is named with its tenant
//! ([`Identity`]), so the same user id in two tenants are two users; every call validates its
//! input and returns a typed [`BroadcastError`] instead of failing silently.

use std::fmt;
use std::str::FromStr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::Value;

use crate::engine::fanout::Routed;
use crate::engine::{AckReply, AckResult, Command, Identity, Reach, Target, Transports};
use crate::error::BroadcastError;
use crate::server::{answer_channel, Answer, Handle};
use crate::validate::{validate_event, validate_room, validate_tenant, validate_user};

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

/// An unknown transport name (the text, cut to 32 characters).
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

    /// `"sse"`, `"socket"` (also `"socketio"`, `"socket.io"`), `"both"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sse" => Ok(Transport::Sse),
            "socket" | "socketio" | "socket.io" => Ok(Transport::SocketIo),
            "both" => Ok(Transport::Both),
            _ => Err(UnknownTransport(s.chars().take(32).collect())),
        }
    }
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

/// The reach of a send queued with `send_counted_deferred`, to be read once the loop has sent it.
#[derive(Debug)]
pub struct PendingReach {
    rx: Answer<Reach>,
    /// One answer per event loop.
    parts: usize,
}

impl PendingReach {
    /// Waits until every loop has queued the event; how many connections it reached.
    pub fn wait(self) -> Result<Reach, BroadcastError> {
        let mut total = Reach::default();
        for _ in 0..self.parts {
            let r = self.rx.recv().map_err(|_| BroadcastError::ServerClosed)?;
            total.sse += r.sse;
            total.socketio += r.socketio;
        }
        Ok(total)
    }
}

/// A callback for the outcomes of `to_user_with_ack_callback` (run on the dispatcher thread).
pub type AckCallback = Box<dyn FnOnce(AckOutcomes) + Send>;

/// Push to a user, a tenant, everyone, or a room. Object-safe, so code that broadcasts can take
/// a `&dyn RealtimeBroadcast` and be tested with [`crate::testing::RecordingBroadcast`]. Every
/// method may be called from any thread and returns once the broadcast is validated, encoded and
/// handed to the loop; it does not wait for the bytes to be written.
///
/// `data` is JSON: an SSE client reads it from `event.data` with `JSON.parse`, a Socket.IO client
/// receives it as the event's one argument (so a string arrives as `"text"` on SSE, quoted).
pub trait RealtimeBroadcast: Send + Sync {
    /// Every connection of one user (all its tabs and devices) on this provider's transports.
    fn to_user(&self, user: &Identity, event: &str, data: &Value) -> Result<(), BroadcastError>;
    /// Every connection of every user of one tenant. Anonymous connections are in no tenant.
    fn to_tenant(&self, tenant: &str, event: &str, data: &Value) -> Result<(), BroadcastError>;
    /// Every connection, of every tenant, anonymous ones included.
    fn to_all(&self, event: &str, data: &Value) -> Result<(), BroadcastError>;
    /// The room's audience on this provider's transports, and nobody else: every connection of
    /// the users joined with `join_room`, plus the Socket.IO sockets joined with
    /// [`crate::Socket::join`] (main namespace).
    fn to_room(&self, room: &str, event: &str, data: &Value) -> Result<(), BroadcastError>;
}

/// What only a two-way transport can do: acks, and the user's room membership.
pub trait SocketIoFeatures: RealtimeBroadcast {
    /// Sends to each of the user's Socket.IO connections and waits (at most `timeout`) for one
    /// outcome per connection. Blocks the calling thread: do not call it from a handler (use
    /// [`SocketIoFeatures::to_user_with_ack_callback`] there).
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
    /// `leave_room`. Returns once the membership is in place.
    fn join_room(&self, user: &Identity, room: &str) -> Result<(), BroadcastError>;
    /// The user leaves `room` (sockets it joined with `Socket::join` stay until they leave).
    fn leave_room(&self, user: &Identity, room: &str) -> Result<(), BroadcastError>;
    /// The rooms the user was joined to with `join_room` (sorted), including every `join_room`
    /// that has returned. Rooms that only a socket joined with `Socket::join` are not listed.
    fn user_rooms(&self, user: &Identity) -> Result<Vec<String>, BroadcastError>;
}

/// A transport as the application sees it.
pub trait RealtimeProvider: Send + Sync {
    /// The four pushes, on this provider's transports.
    fn broadcast(&self) -> &dyn RealtimeBroadcast;
    /// `true` for Socket.IO (and both): clients can talk back and answer acks.
    fn is_bidirectional(&self) -> bool;
    /// Socket.IO's extras, or `None` for SSE.
    fn socketio_features(&self) -> Option<&dyn SocketIoFeatures>;
    /// Which transport(s) this provider reaches.
    fn transport(&self) -> Transport;
}

/// The provider of one transport (or both), over a server [`Handle`].
#[derive(Clone, Debug)]
pub struct TransportProvider {
    handle: Handle,
    transport: Transport,
    volatile: bool,
}

impl TransportProvider {
    /// A provider for `transport` on the server behind `handle`.
    pub fn new(handle: Handle, transport: Transport) -> TransportProvider {
        TransportProvider {
            handle,
            transport,
            volatile: false,
        }
    }

    /// The same provider, but its broadcasts are volatile (socket.io's `io.volatile.emit`):
    /// dropped for a connection whose queue is past `Config::volatile_low_water` instead of
    /// queued, never kept for SSE resume or Socket.IO recovery (no id, no offset). For events
    /// that are stale when late: positions, typing indicators, live counters.
    pub fn volatile(&self) -> TransportProvider {
        TransportProvider {
            volatile: true,
            ..self.clone()
        }
    }

    /// Validates, serialises once, and hands the broadcast to the loop.
    fn send(
        &self,
        target: Target,
        event: &str,
        data: &Value,
        reply: Option<mpsc::Sender<Reach>>,
    ) -> Result<usize, BroadcastError> {
        let reply = reply.map(crate::engine::ReachReply::Channel);
        match &target {
            Target::User(user) => validate_user(user)?,
            Target::Tenant(tenant) => validate_tenant(tenant)?,
            Target::Room(room) => validate_room(room)?,
            Target::All => {}
        }
        validate_event(event)?;
        let json = data.to_string();
        // The largest wire form is the Socket.IO packet: `42["event",data]`.
        let size = json.len() + event.len() + 8;
        let max = self.handle.max_payload();
        if size > max {
            return Err(BroadcastError::PayloadTooLarge { size, max });
        }
        let routed = self.handle.submit(Command::Broadcast {
            target,
            transports: self.transport.transports(),
            event: Arc::from(event),
            data: Arc::from(json),
            volatile: self.volatile,
            reply,
        })?;
        Ok(match routed {
            Routed::Loops(n) => n,
            Routed::Answered => 0,
        })
    }

    /// Broadcasts, then waits until the loop has queued the event and says how many connections
    /// it reached on this provider's transports.
    pub fn send_counted(
        &self,
        target: &Target,
        event: &str,
        data: &Value,
    ) -> Result<Reach, BroadcastError> {
        self.send_counted_deferred(target, event, data)?.wait()
    }

    /// Broadcasts without waiting; the count can be read later from the [`PendingReach`] (so
    /// several sends can be queued before waiting for the first count).
    pub fn send_counted_deferred(
        &self,
        target: &Target,
        event: &str,
        data: &Value,
    ) -> Result<PendingReach, BroadcastError> {
        let (tx, rx) = answer_channel();
        let parts = self.send(target.clone(), event, data, Some(tx))?;
        Ok(PendingReach { rx, parts })
    }

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
        self.handle.submit(Command::UserAck {
            user: user.clone(),
            event: event.to_string(),
            data: data.clone(),
            timeout,
            reply,
        })?;
        Ok(())
    }
}

impl RealtimeBroadcast for TransportProvider {
    fn to_user(&self, user: &Identity, event: &str, data: &Value) -> Result<(), BroadcastError> {
        self.send(Target::User(user.clone()), event, data, None)
            .map(|_| ())
    }

    fn to_tenant(&self, tenant: &str, event: &str, data: &Value) -> Result<(), BroadcastError> {
        self.send(Target::Tenant(tenant.to_string()), event, data, None)
            .map(|_| ())
    }

    fn to_all(&self, event: &str, data: &Value) -> Result<(), BroadcastError> {
        self.send(Target::All, event, data, None).map(|_| ())
    }

    fn to_room(&self, room: &str, event: &str, data: &Value) -> Result<(), BroadcastError> {
        self.send(Target::Room(room.to_string()), event, data, None)
            .map(|_| ())
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
        let (tx, rx) = answer_channel();
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
        join_room(&self.handle, user, room)
    }

    fn leave_room(&self, user: &Identity, room: &str) -> Result<(), BroadcastError> {
        leave_room(&self.handle, user, room)
    }

    fn user_rooms(&self, user: &Identity) -> Result<Vec<String>, BroadcastError> {
        user_rooms(&self.handle, user)
    }
}

fn join_room(handle: &Handle, user: &Identity, room: &str) -> Result<(), BroadcastError> {
    validate_user(user)?;
    validate_room(room)?;
    #[cfg(feature = "redis")]
    if let Some(cluster) = handle.cluster() {
        return cluster.room(user, room, true);
    }
    let (tx, rx) = answer_channel();
    handle.command(Command::JoinRoomReply {
        user: user.clone(),
        room: room.to_string(),
        reply: tx,
    })?;
    rx.recv()
        .map_err(|_| BroadcastError::ServerClosed)?
        .map_err(BroadcastError::TooManyRooms)
}

fn leave_room(handle: &Handle, user: &Identity, room: &str) -> Result<(), BroadcastError> {
    validate_user(user)?;
    validate_room(room)?;
    #[cfg(feature = "redis")]
    if let Some(cluster) = handle.cluster() {
        return cluster.room(user, room, false);
    }
    handle.command(Command::LeaveRoom {
        user: user.clone(),
        room: room.to_string(),
    })?;
    Ok(())
}

fn user_rooms(handle: &Handle, user: &Identity) -> Result<Vec<String>, BroadcastError> {
    validate_user(user)?;
    #[cfg(feature = "redis")]
    if let Some(cluster) = handle.cluster() {
        return cluster.user_rooms(user);
    }
    let (tx, rx) = answer_channel();
    // The hub holds every join that returned before this call.
    handle.command(Command::UserRooms {
        user: user.clone(),
        reply: tx,
    })?;
    rx.recv().map_err(|_| BroadcastError::ServerClosed)
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

/// The entry point: a provider per transport, the three shortcuts, and the user's rooms.
///
/// ```no_run
/// use serde_json::json;
/// use tidings::{Config, Identity, NotificationService, Server, Target, Transport};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = Server::builder(Config::default()).allow_anonymous().start()?;
/// let service = NotificationService::new(server.handle());
/// let alice = Identity::new("acme", "alice");
///
/// // Through a provider (what code that should not care about the transport takes)…
/// service.provider(Transport::Sse).broadcast().to_user(&alice, "notification", &json!({"n": 1}))?;
/// // …or with the shortcuts.
/// service.broadcast_to_tenant(Transport::Both, "acme", "maintenance", &json!({"in": "5 min"}))?;
///
/// // Rooms belong to users: alice's connections now and later are in the room.
/// service.join_room(&alice, "support-chat")?;
/// assert_eq!(service.user_rooms(&alice)?, vec!["support-chat".to_string()]);
/// let reach = service.send_counted(
///     Transport::Both,
///     &Target::Room("support-chat".into()),
///     "message",
///     &json!({"text": "Welcome!"}),
/// )?;
/// println!("{} SSE streams, {} Socket.IO sockets", reach.sse, reach.socketio);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct NotificationService {
    sse: TransportProvider,
    socket: TransportProvider,
    both: TransportProvider,
}

impl NotificationService {
    /// The service of the server behind `handle` (cheap: clone it freely).
    pub fn new(handle: Handle) -> NotificationService {
        NotificationService {
            sse: TransportProvider::new(handle.clone(), Transport::Sse),
            socket: TransportProvider::new(handle.clone(), Transport::SocketIo),
            both: TransportProvider::new(handle, Transport::Both),
        }
    }

    /// The same service with volatile broadcasts (see [`TransportProvider::volatile`]); rooms
    /// and acks are unchanged (acks are never volatile).
    pub fn volatile(&self) -> NotificationService {
        NotificationService {
            sse: self.sse.volatile(),
            socket: self.socket.volatile(),
            both: self.both.volatile(),
        }
    }

    /// The provider of one transport; `Transport::Both` reaches both.
    pub fn provider(&self, transport: Transport) -> &dyn RealtimeProvider {
        self.provider_of(transport)
    }

    fn provider_of(&self, transport: Transport) -> &TransportProvider {
        match transport {
            Transport::Sse => &self.sse,
            Transport::SocketIo => &self.socket,
            Transport::Both => &self.both,
        }
    }

    /// Every connection of `user` on `transport`.
    pub fn broadcast_to_user(
        &self,
        transport: Transport,
        user: &Identity,
        event: &str,
        data: &Value,
    ) -> Result<(), BroadcastError> {
        self.provider_of(transport).to_user(user, event, data)
    }

    /// Every connection of every user of `tenant` on `transport`.
    pub fn broadcast_to_tenant(
        &self,
        transport: Transport,
        tenant: &str,
        event: &str,
        data: &Value,
    ) -> Result<(), BroadcastError> {
        self.provider_of(transport).to_tenant(tenant, event, data)
    }

    /// The room's whole audience on every transport (see [`RealtimeBroadcast::to_room`]).
    pub fn broadcast_to_room(
        &self,
        room: &str,
        event: &str,
        data: &Value,
    ) -> Result<(), BroadcastError> {
        self.both.to_room(room, event, data)
    }

    /// Any broadcast, waiting until the loop has queued it: says how many connections it reached
    /// per transport (`Reach::total() == 0`: nobody was there, e.g. an empty room). Slower than
    /// the fire-and-forget calls (a round trip to the loop); meant for feedback, not hot paths.
    pub fn send_counted(
        &self,
        transport: Transport,
        target: &Target,
        event: &str,
        data: &Value,
    ) -> Result<Reach, BroadcastError> {
        self.provider_of(transport)
            .send_counted(target, event, data)
    }

    /// [`NotificationService::send_counted`] without the wait: queue several sends, then read
    /// each one's reach (one round trip to the loop for the lot instead of one per send).
    pub fn send_counted_deferred(
        &self,
        transport: Transport,
        target: &Target,
        event: &str,
        data: &Value,
    ) -> Result<PendingReach, BroadcastError> {
        self.provider_of(transport)
            .send_counted_deferred(target, event, data)
    }

    /// The user joins `room` on every transport, now and after reconnects, until
    /// [`NotificationService::leave_room`]. The same as [`SocketIoFeatures::join_room`]: rooms
    /// are not a Socket.IO-only feature.
    pub fn join_room(&self, user: &Identity, room: &str) -> Result<(), BroadcastError> {
        join_room(self.both.handle(), user, room)
    }

    /// The user leaves `room`.
    pub fn leave_room(&self, user: &Identity, room: &str) -> Result<(), BroadcastError> {
        leave_room(self.both.handle(), user, room)
    }

    /// The rooms the user was joined to with `join_room`, sorted (read-your-writes).
    pub fn user_rooms(&self, user: &Identity) -> Result<Vec<String>, BroadcastError> {
        user_rooms(self.both.handle(), user)
    }
}

impl TransportProvider {
    fn handle(&self) -> &Handle {
        &self.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_parses_its_names() {
        assert_eq!("sse".parse::<Transport>(), Ok(Transport::Sse));
        assert_eq!("socket".parse::<Transport>(), Ok(Transport::SocketIo));
        assert_eq!("socket.io".parse::<Transport>(), Ok(Transport::SocketIo));
        assert_eq!("both".parse::<Transport>(), Ok(Transport::Both));
        assert!("SSE ".parse::<Transport>().is_err());
        assert!("".parse::<Transport>().is_err());
    }
}
