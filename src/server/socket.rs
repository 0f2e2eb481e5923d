//! What handlers get: a [`Socket`] to emit to, join rooms with and disconnect, and the client's
//! [`Event`] with its [`AckResponder`].

use std::fmt;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::Value;

use crate::engine::{AckOutcome, AckReply, AckResult, Command, Identity, SocketId};
use crate::error::{BroadcastError, ServerClosed};
use crate::server::Handle;
use crate::validate::{validate_event, validate_room};

/// A Socket.IO socket, as handlers see it: emit to it, join rooms, disconnect it.
#[derive(Clone)]
pub struct Socket {
    pub(super) id: SocketId,
    pub(super) nsp: Arc<str>,
    pub(super) identity: Option<Identity>,
    pub(super) handle: Handle,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("nsp", &self.nsp)
            .field("identity", &self.identity)
            .finish()
    }
}

impl Socket {
    pub fn id(&self) -> SocketId {
        self.id
    }

    /// The namespace (`/` for the main one).
    pub fn namespace(&self) -> &str {
        &self.nsp
    }

    /// Who the authentication hook said this is (`None`: anonymous).
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Emits `event` with `args` to this socket.
    pub fn emit(&self, event: &str, args: Vec<Value>) -> Result<(), BroadcastError> {
        self.emit_binary(event, args, Vec::new())
    }

    /// Emits with binary attachments; `args` refer to them with `tidings::proto::sio::placeholder(n)`.
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
        let (tx, rx) = mpsc::channel();
        self.handle.command(Command::SioEmit {
            socket: self.id,
            event: event.to_string(),
            args,
            attachments: Vec::new(),
            ack: Some((timeout, AckReply::Channel(tx))),
        })?;
        let mut results = rx.recv().map_err(|_| BroadcastError::ServerClosed)?;
        Ok(results
            .pop()
            .map_or(AckOutcome::Disconnected, |r| r.outcome))
    }

    /// Joins a per-socket room of this namespace (socket.io's `socket.join`).
    pub fn join(&self, room: &str) -> Result<(), BroadcastError> {
        validate_room(room)?;
        self.handle
            .command(Command::SioJoin {
                socket: self.id,
                room: room.to_string(),
            })
            .map_err(BroadcastError::from)
    }

    pub fn leave(&self, room: &str) -> Result<(), BroadcastError> {
        validate_room(room)?;
        self.handle
            .command(Command::SioLeave {
                socket: self.id,
                room: room.to_string(),
            })
            .map_err(BroadcastError::from)
    }

    /// Emits to every socket in a room of this socket's namespace.
    pub fn to_room(&self, room: &str, event: &str, args: Vec<Value>) -> Result<(), BroadcastError> {
        validate_room(room)?;
        validate_event(event)?;
        self.handle
            .command(Command::SioEmitToRoom {
                nsp: self.nsp.to_string(),
                room: room.to_string(),
                event: event.to_string(),
                args,
            })
            .map_err(BroadcastError::from)
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
    pub name: String,
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
    pub(super) handle: Handle,
}

impl AckResponder {
    pub fn send(self, args: Vec<Value>) -> Result<(), ServerClosed> {
        self.send_binary(args, Vec::new())
    }

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
