// The README's quick start as a program: `cargo run --example quickstart` (PORT overrides 3000),
// then connect a client as shown in the README's client guide, with token `t-alice` or `t-bob`.
// `tests/readme_example.rs` runs `start` with real clients and checks that the README shows it
// verbatim (the lines between the `README` markers).

use std::time::Duration;

use tidings::{AckOutcomes, BroadcastError, Transport};

// README: begin
use std::collections::HashMap;

use serde_json::json;
use tidings::{Config, Identity, NotificationService, Rejection, Server};

/// Starts a chat server: token authentication, one room, an ack, and a service to push from.
pub fn start(config: Config) -> Result<(Server, NotificationService), Box<dyn std::error::Error>> {
    // Who is each connection? Here a fixed table of tokens; a real application looks the token
    // up in its session store or verifies a signed one. Socket.IO clients send it in their
    // `auth` payload; a browser EventSource cannot set headers, so SSE takes a cookie or the query.
    let tokens = HashMap::from([("t-alice", "alice"), ("t-bob", "bob"), ("t-carol", "carol")]);
    let server = Server::builder(config)
        .authenticate(move |req| {
            let token = req
                .auth
                .and_then(|auth| auth.get("token"))
                .and_then(|t| t.as_str())
                .map(str::to_string)
                .or_else(|| req.info.cookie("token"))
                .or_else(|| req.info.query("token"));
            match token.as_deref().and_then(|t| tokens.get(t)) {
                Some(user) => Ok(Some(Identity::new("acme", *user))),
                None => Err(Rejection::unauthorized("log in first")),
            }
        })
        // What a member says reaches the whole room: Socket.IO and SSE connections alike.
        .on_event("/", "chat", |socket, ev| {
            let _ = socket.to_room("lobby", "chat", ev.args);
        })
        // The client asks with an ack; the handler answers it.
        .on_event("/", "whoami", |socket, ev| {
            let user = socket.identity().map(|i| i.user.clone());
            if let Some(ack) = ev.ack {
                let _ = ack.send(vec![json!({ "user": user })]);
            }
        })
        .start()?;
    let service = NotificationService::new(server.handle());
    // Rooms belong to users: every connection alice or bob has now or opens later is in it.
    service.join_room(&Identity::new("acme", "alice"), "lobby")?;
    service.join_room(&Identity::new("acme", "bob"), "lobby")?;
    Ok((server, service))
}
// README: end

// README: push begin
/// What the application does from any thread: push to a user, a tenant, a room; ask with an ack.
pub fn push(service: &NotificationService) -> Result<(), BroadcastError> {
    let alice = Identity::new("acme", "alice");
    let hello = json!({"subject": "Hello"});
    service.broadcast_to_user(Transport::Both, &alice, "notification", &hello)?;
    service.broadcast_to_tenant(
        Transport::Sse,
        "acme",
        "maintenance",
        &json!({"in": "5 min"}),
    )?;
    service.broadcast_to_room("lobby", "chat", &json!("the server says hi"))?;
    if let Some(features) = service.provider(Transport::SocketIo).socketio_features() {
        // One outcome per Socket.IO connection of alice: Ok(reply), Timeout or Disconnected.
        let asked = features.to_user_with_ack(
            &alice,
            "are-you-there",
            &json!({}),
            Duration::from_secs(5),
        )?;
        match asked {
            AckOutcomes::NoRecipients => println!("alice has no Socket.IO connection"),
            AckOutcomes::Outcomes(list) => println!("alice answered: {list:?}"),
        }
    }
    Ok(())
}
// README: push end

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 3000,
    };
    let config = Config {
        bind: ([127, 0, 0, 1], port).into(),
        ..Config::default()
    };
    let (server, service) = start(config)?;
    let addr = server.local_addr();
    println!("quickstart on http://{addr}/socket.io/ (Socket.IO) and http://{addr}/events (SSE)");
    println!("tokens: t-alice, t-bob (both in the lobby), t-carol");
    loop {
        std::thread::sleep(Duration::from_secs(10));
        push(&service)?;
    }
}
