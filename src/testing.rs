//! Test doubles for the broadcast traits, so code that broadcasts can be unit-tested without a
//! server or network.
//!
//! Write the application code against [`RealtimeBroadcast`] (or [`RealtimeProvider`] /
//! [`SocketIoFeatures`]); in tests pass a [`RecordingBroadcast`] and assert on the [`Call`]s it
//! recorded.
//!
//! ```
//! use serde_json::json;
//! use tidings::testing::{Call, RecordingBroadcast};
//! use tidings::{BroadcastError, Identity, RealtimeBroadcast};
//!
//! // Application code: tell a user their order shipped.
//! fn order_shipped(
//!     b: &dyn RealtimeBroadcast,
//!     user: &Identity,
//!     order: u64,
//! ) -> Result<(), BroadcastError> {
//!     b.to_user(user, "order-shipped", &json!({ "order": order }))
//! }
//!
//! // Its unit test.
//! let rec = RecordingBroadcast::new();
//! let alice = Identity::new("acme", "alice");
//! order_shipped(&rec, &alice, 42).unwrap();
//! assert_eq!(
//!     rec.calls(),
//!     vec![Call::ToUser {
//!         user: alice,
//!         event: "order-shipped".into(),
//!         data: json!({ "order": 42 }),
//!     }]
//! );
//! ```

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::api::{
    AckCallback, AckOutcomes, RealtimeBroadcast, RealtimeProvider, SocketIoFeatures, Transport,
};
use crate::engine::Identity;
use crate::error::BroadcastError;
use crate::validate::{validate_event, validate_room, validate_tenant, validate_user};

/// One call recorded by [`RecordingBroadcast`], with its arguments. Only calls that passed
/// validation are recorded.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// [`RealtimeBroadcast::to_user`].
    ToUser {
        /// The recipient.
        user: Identity,
        /// The event name.
        event: String,
        /// The event's data.
        data: Value,
    },
    /// [`RealtimeBroadcast::to_tenant`].
    ToTenant {
        /// The recipient tenant.
        tenant: String,
        /// The event name.
        event: String,
        /// The event's data.
        data: Value,
    },
    /// [`RealtimeBroadcast::to_all`].
    ToAll {
        /// The event name.
        event: String,
        /// The event's data.
        data: Value,
    },
    /// [`RealtimeBroadcast::to_room`].
    ToRoom {
        /// The recipient room.
        room: String,
        /// The event name.
        event: String,
        /// The event's data.
        data: Value,
    },
    /// [`SocketIoFeatures::to_user_with_ack`] (also recorded for
    /// [`SocketIoFeatures::to_user_with_ack_callback`]).
    ToUserWithAck {
        /// The recipient.
        user: Identity,
        /// The event name.
        event: String,
        /// The event's data.
        data: Value,
        /// How long the caller would wait for acknowledgements.
        timeout: Duration,
    },
    /// [`SocketIoFeatures::join_room`].
    JoinRoom {
        /// The user joining.
        user: Identity,
        /// The room joined.
        room: String,
    },
    /// [`SocketIoFeatures::leave_room`].
    LeaveRoom {
        /// The user leaving.
        user: Identity,
        /// The room left.
        room: String,
    },
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    rooms: HashMap<Identity, BTreeSet<String>>,
    acks: HashMap<Identity, AckOutcomes>,
}

/// Records every call, validates input exactly like the real providers, keeps room membership in
/// memory, and answers acks with outcomes the test scripted (`NoRecipients` by default).
pub struct RecordingBroadcast {
    transport: Transport,
    state: Mutex<State>,
}

impl Default for RecordingBroadcast {
    fn default() -> Self {
        RecordingBroadcast::new()
    }
}

impl RecordingBroadcast {
    /// A bidirectional (Socket.IO) double.
    pub fn new() -> RecordingBroadcast {
        RecordingBroadcast::for_transport(Transport::SocketIo)
    }

    /// A double that behaves like the provider of `transport` (`Sse`: no Socket.IO features).
    pub fn for_transport(transport: Transport) -> RecordingBroadcast {
        RecordingBroadcast {
            transport,
            state: Mutex::new(State::default()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.with(|s| s.calls.clone())
    }

    /// Forgets the recorded calls (room membership stays).
    pub fn clear(&self) {
        self.with(|s| s.calls.clear())
    }

    /// What `to_user_with_ack` returns for `user` from now on.
    pub fn script_ack(&self, user: &Identity, outcomes: AckOutcomes) {
        self.with(|s| s.acks.insert(user.clone(), outcomes));
    }

    fn record(&self, call: Call) {
        self.with(|s| s.calls.push(call))
    }
}

impl RealtimeBroadcast for RecordingBroadcast {
    fn to_user(&self, user: &Identity, event: &str, data: &Value) -> Result<(), BroadcastError> {
        validate_user(user)?;
        validate_event(event)?;
        self.record(Call::ToUser {
            user: user.clone(),
            event: event.into(),
            data: data.clone(),
        });
        Ok(())
    }

    fn to_tenant(&self, tenant: &str, event: &str, data: &Value) -> Result<(), BroadcastError> {
        validate_tenant(tenant)?;
        validate_event(event)?;
        self.record(Call::ToTenant {
            tenant: tenant.into(),
            event: event.into(),
            data: data.clone(),
        });
        Ok(())
    }

    fn to_all(&self, event: &str, data: &Value) -> Result<(), BroadcastError> {
        validate_event(event)?;
        self.record(Call::ToAll {
            event: event.into(),
            data: data.clone(),
        });
        Ok(())
    }

    fn to_room(&self, room: &str, event: &str, data: &Value) -> Result<(), BroadcastError> {
        validate_room(room)?;
        validate_event(event)?;
        self.record(Call::ToRoom {
            room: room.into(),
            event: event.into(),
            data: data.clone(),
        });
        Ok(())
    }
}

impl SocketIoFeatures for RecordingBroadcast {
    fn to_user_with_ack(
        &self,
        user: &Identity,
        event: &str,
        data: &Value,
        timeout: Duration,
    ) -> Result<AckOutcomes, BroadcastError> {
        validate_user(user)?;
        validate_event(event)?;
        self.record(Call::ToUserWithAck {
            user: user.clone(),
            event: event.into(),
            data: data.clone(),
            timeout,
        });
        Ok(self.with(|s| {
            s.acks
                .get(user)
                .cloned()
                .unwrap_or(AckOutcomes::NoRecipients)
        }))
    }

    fn to_user_with_ack_callback(
        &self,
        user: &Identity,
        event: &str,
        data: &Value,
        timeout: Duration,
        callback: AckCallback,
    ) -> Result<(), BroadcastError> {
        let outcomes = self.to_user_with_ack(user, event, data, timeout)?;
        callback(outcomes);
        Ok(())
    }

    fn join_room(&self, user: &Identity, room: &str) -> Result<(), BroadcastError> {
        validate_user(user)?;
        validate_room(room)?;
        self.with(|s| {
            s.rooms.entry(user.clone()).or_default().insert(room.into());
            s.calls.push(Call::JoinRoom {
                user: user.clone(),
                room: room.into(),
            });
        });
        Ok(())
    }

    fn leave_room(&self, user: &Identity, room: &str) -> Result<(), BroadcastError> {
        validate_user(user)?;
        validate_room(room)?;
        self.with(|s| {
            if let Some(r) = s.rooms.get_mut(user) {
                r.remove(room);
            }
            s.calls.push(Call::LeaveRoom {
                user: user.clone(),
                room: room.into(),
            });
        });
        Ok(())
    }

    fn user_rooms(&self, user: &Identity) -> Result<Vec<String>, BroadcastError> {
        validate_user(user)?;
        Ok(self.with(|s| {
            s.rooms
                .get(user)
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default()
        }))
    }
}

impl RealtimeProvider for RecordingBroadcast {
    fn broadcast(&self) -> &dyn RealtimeBroadcast {
        self
    }

    fn is_bidirectional(&self) -> bool {
        self.transport != Transport::Sse
    }

    fn socketio_features(&self) -> Option<&dyn SocketIoFeatures> {
        match self.transport {
            Transport::Sse => None,
            _ => Some(self),
        }
    }

    fn transport(&self) -> Transport {
        self.transport
    }
}
