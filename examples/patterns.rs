//! The unified-notification pattern, in four examples, against a real server on 127.0.0.1 (an
//! ephemeral port). Run: `cargo run --example patterns`.
//!
//! The pattern lets application code send real-time events without caring how each client is
//! connected. A `NotificationService` hands out one provider per transport — Server-Sent Events
//! (one-way, browser `EventSource`), Socket.IO (two-way), or both at once — and every provider
//! offers the same broadcast calls:
//!
//! - `toUser` (here `to_user`): every connection of one user;
//! - `toTenant` (`to_tenant`): every user of one tenant (customer organisation);
//! - `toAll` (`to_all`): everybody;
//! - `toRoom` (`to_room`): the users who joined a named room.
//!
//! A provider says whether it is bidirectional. Only a provider that reaches Socket.IO has the
//! extras, which need a channel back from the client: `toUserWithAck` (`to_user_with_ack`: send and wait for
//! each connection's answer), `joinRoom` / `leaveRoom` (`join_room` / `leave_room`) and
//! `getUserRooms` (`user_rooms`). The service also has one-call shortcuts: `broadcast_to_user`
//! and `broadcast_to_tenant` take the transport, `broadcast_to_room` reaches the room's members on
//! every transport.
//!
//! The examples: (1) notify one user, (2) announce to a tenant, (3) a room-based chat, (4) use the
//! Socket.IO extras only when the provider has them, falling back to a plain broadcast otherwise.

use std::time::Duration;

use serde_json::json;
use tidings::{AckOutcomes, Config, Identity, NotificationService, Server, Transport};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder(Config {
        bind: ([127, 0, 0, 1], 0).into(),
        ..Config::default()
    })
    .allow_anonymous()
    .start()?;
    let notification_service = NotificationService::new(server.handle());
    let user_id = Identity::new("acme", "user-1");
    let tenant_id = "acme";

    // Example 1: Send Notification to User (works for both SSE and Socket.IO).
    notification_service.broadcast_to_user(
        "socket".parse()?,
        &user_id,
        "notification",
        &json!({"subject": "New message", "body": "You have a new message", "channel": "SOCKET"}),
    )?;
    println!("example 1: notification sent to {user_id:?} over Socket.IO");

    // Example 2: Broadcast to All Users in Tenant.
    notification_service.broadcast_to_tenant(
        Transport::Sse,
        tenant_id,
        "announcement",
        &json!({"title": "System Update", "message": "Scheduled maintenance at 2 AM"}),
    )?;
    println!("example 2: announcement sent to tenant {tenant_id:?} over SSE");

    // Example 3: Socket.IO Room-based Chat (rooms are real on SSE too: members only).
    let user_id1 = Identity::new("acme", "user-1");
    let user_id2 = Identity::new("acme", "user-2");
    let socket_provider = notification_service.provider(Transport::SocketIo);
    if let Some(features) = socket_provider.socketio_features() {
        features.join_room(&user_id1, "chat-room")?;
        features.join_room(&user_id2, "chat-room")?;
        println!(
            "example 3: user-1 is in {:?}",
            features.user_rooms(&user_id1)?
        );
    }
    notification_service.broadcast_to_room(
        "chat-room",
        "message",
        &json!({"from": "admin", "text": "Welcome to the chat!"}),
    )?;

    // Example 4: Check Provider Capabilities.
    let provider = notification_service.provider(Transport::SocketIo);
    if provider.is_bidirectional() {
        if let Some(features) = provider.socketio_features() {
            match features.to_user_with_ack(&user_id, "ping", &json!({}), Duration::from_secs(2))? {
                AckOutcomes::NoRecipients => {
                    println!("example 4: {user_id:?} has no Socket.IO connection")
                }
                AckOutcomes::Outcomes(list) => println!("example 4: pong received: {list:?}"),
            }
        }
    } else {
        provider
            .broadcast()
            .to_user(&user_id, "notification", &json!({"subject": "Hello"}))?;
    }
    server.shutdown(Duration::from_secs(1))?;
    Ok(())
}
