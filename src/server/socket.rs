//! What handlers get: a [`Socket`] to emit to, join rooms with and disconnect, and the client's
//! [`Event`] with its [`AckResponder`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::engine::{AckOutcome, AckReply, AckResult, Command, Identity, Rejection, SocketId};
use crate::error::{BroadcastError, ServerClosed};
use crate::server::Handle;
use crate::validate::{validate_event, validate_room};

/// A Socket.IO socket, as handlers see it: emit to it, join rooms, disconnect it.
#[derive(Clone)]
pub struct Socket {
    pub(super) id: SocketId,
    pub(super) sid: Arc<str>,
    pub(super) recovered: bool,
    /// Emits through this value are volatile (see [`Socket::volatile`]).
    pub(super) volatile: bool,
    pub(super) nsp: Arc<str>,
    pub(super) identity: Option<Identity>,
    /// Shared by every socket of the server.
    pub(super) handle: Arc<Handle>,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("sid", &self.sid)
            .field("nsp", &self.nsp)
            .field("identity", &self.identity)
            .finish()
    }
}

impl Socket {
    /// This server's name for the socket (unique while the server runs; a key for your maps).
    pub fn id(&self) -> SocketId {
        self.id
    }

    /// The Socket.IO id the client sees as `socket.id`.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// `true` when connection state recovery restored this socket: the same id and rooms as
    /// before the client lost its connection, and every event it missed sent again (the client
    /// sees `socket.recovered === true`). A handler can skip what it does for a new socket.
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    /// The same socket, but its emits (`emit`, `emit_binary`, `to_room`) are volatile, as in
    /// socket.io's `socket.volatile.emit`: dropped rather than queued when the connection's
    /// queue is past `Config::volatile_low_water`, never kept for recovery, never given an
    /// offset. For events that are stale when late (positions, typing indicators). An emit with
    /// binary attachments is never dropped; acks are never volatile.
    pub fn volatile(&self) -> Socket {
        Socket {
            volatile: true,
            ..self.clone()
        }
    }

    /// The namespace (`/` for the main one).
    pub fn namespace(&self) -> &str {
        &self.nsp
    }

    /// Who the authentication hook said this is (`None`: anonymous).
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// The server's handle (to reach other connections from a handler).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Emits `event` with `args` to this socket: the client's `socket.on(event, (...args) => …)`.
    pub fn emit(&self, event: &str, args: Vec<Value>) -> Result<(), BroadcastError> {
        self.emit_binary(event, args, Vec::new())
    }

    /// Emits with binary attachments; `args` refer to them with [`crate::placeholder`]`(n)`, and
    /// the client receives each as a `Buffer` / `ArrayBuffer` in its place.
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
                volatile: self.volatile,
                seq: None,
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
                volatile: false,
                seq: None,
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
        let (tx, rx) = crate::server::answer_channel();
        self.handle.command(Command::SioEmit {
            socket: self.id,
            event: event.to_string(),
            args,
            attachments: Vec::new(),
            ack: Some((timeout, AckReply::Channel(tx))),
            volatile: false,
            seq: None,
        })?;
        let mut results = rx.recv().map_err(|_| BroadcastError::ServerClosed)?;
        Ok(results
            .pop()
            .map_or(AckOutcome::Disconnected, |r| r.outcome))
    }

    /// Joins `room` until [`Socket::leave`] or the socket's end (socket.io's `socket.join`).
    ///
    /// In the main namespace this is the same room as [`crate::SocketIoFeatures::join_room`]'s:
    /// a room's audience is its users' connections plus its joined sockets. Use `join_room` for
    /// a membership that should outlive this connection; other namespaces have rooms of their
    /// own sockets only. Past `max_rooms_per_user` rooms for this socket the join is dropped
    /// (and logged).
    pub fn join(&self, room: &str) -> Result<(), BroadcastError> {
        validate_room(room)?;
        self.handle
            .command(Command::SioJoin {
                socket: self.id,
                room: room.to_string(),
                in_main: self.nsp.as_ref() == "/",
                hub_added: false,
            })
            .map_err(BroadcastError::from)
    }

    /// Leaves a room joined with [`Socket::join`] (a `join_room` membership of the user stays).
    pub fn leave(&self, room: &str) -> Result<(), BroadcastError> {
        validate_room(room)?;
        self.handle
            .command(Command::SioLeave {
                socket: self.id,
                room: room.to_string(),
                in_main: self.nsp.as_ref() == "/",
            })
            .map_err(BroadcastError::from)
    }

    /// Emits to the room's whole audience, this socket included if it is in the room.
    ///
    /// In the main namespace that is the audience of every `to_room` (users joined with
    /// `join_room` on both transports, plus sockets joined with [`Socket::join`]): Socket.IO
    /// clients get `args`; SSE streams get the single argument as `data` (the JSON array of
    /// `args` when there are zero or several). In other namespaces: the namespace's sockets in
    /// the room. Unlike socket.io's `socket.to(room)`, the sender is not left out.
    pub fn to_room(&self, room: &str, event: &str, args: Vec<Value>) -> Result<(), BroadcastError> {
        validate_room(room)?;
        validate_event(event)?;
        self.handle
            .submit(Command::SioEmitToRoom {
                nsp: self.nsp.to_string(),
                room: room.to_string(),
                event: event.to_string(),
                args,
                volatile: self.volatile,
            })
            .map(|_| ())
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
    /// The event name the client emitted.
    pub name: String,
    /// Its arguments, JSON as the client sent them (the ack callback is not among them).
    pub args: Vec<Value>,
    /// Binary attachments; `args` hold `{"_placeholder":true,"num":n}` where they belong.
    pub attachments: Vec<Vec<u8>>,
    /// Present when the client asked for an acknowledgement.
    pub ack: Option<AckResponder>,
}

/// Answers a client's ack request, once.
#[derive(Debug)]
pub struct AckResponder {
    pub(super) socket: SocketId,
    pub(super) id: u64,
    pub(super) handle: Arc<Handle>,
}

impl AckResponder {
    /// Answers: the client's ack callback is called with `args`.
    pub fn send(self, args: Vec<Value>) -> Result<(), ServerClosed> {
        self.send_binary(args, Vec::new())
    }

    /// Answers with binary attachments (referred to by [`crate::placeholder`] in `args`).
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

/// Which of the two pending connection kinds a [`ConnectDecision`] answers.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pending {
    SocketIo(u64),
    Sse(u64),
}

/// The answer to one connection's authentication, for
/// [`crate::ServerBuilder::authenticate_deferred`]: decide once, from any thread. Dropped
/// undecided, it refuses the connection ("internal error").
pub struct ConnectDecision {
    pub(super) pending: Pending,
    pub(super) handle: Option<Handle>,
}

impl fmt::Debug for ConnectDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectDecision")
            .field("pending", &self.pending)
            .finish()
    }
}

impl ConnectDecision {
    /// Accepts the connection as `identity` (`None`: anonymous) or refuses it.
    pub fn decide(
        mut self,
        decision: Result<Option<Identity>, Rejection>,
    ) -> Result<(), ServerClosed> {
        match self.handle.take() {
            Some(handle) => handle.command(self.pending.command(decision)),
            None => Ok(()),
        }
    }
}

impl Pending {
    fn command(self, decision: Result<Option<Identity>, Rejection>) -> Command {
        match self {
            Pending::SocketIo(request) => Command::SioConnectDecision { request, decision },
            Pending::Sse(request) => Command::SseDecision { request, decision },
        }
    }
}

impl Drop for ConnectDecision {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let refused = Err(Rejection::unauthorized("internal error"));
            let _ = handle.command(self.pending.command(refused));
        }
    }
}
