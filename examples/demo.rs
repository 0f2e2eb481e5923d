//! The tidings demo: one page (`examples/demo/index.html`, served at `/`) with an SSE panel, a
//! Socket.IO panel (a tiny Socket.IO client written in plain JS inside the page) and a control
//! form that drives the unified API ([`NotificationService`]) through `demo:*` events.
//!
//! Run: `cargo run --example demo`, then open the printed URL (`PORT` overrides 3000). Open it in
//! two tabs as different users (`/?user=bob&tenant=acme`) to see who receives what.
//!
//! Control events (sent by the page's Socket.IO panel, each answered by ack with
//! `{"ok": true, ...}` or `{"ok": false, "error": {"kind", "message"}}`):
//! - `demo:send {transport, kind: user|tenant|all|room, user, tenant, room, event, data}`
//! - `demo:join` / `demo:leave {user, tenant, room}`, `demo:rooms {user, tenant}`
//! - `demo:ask {user, tenant, event, data}`: `to_user_with_ack`, 5 s timeout, one outcome per socket.
//!
//! DEMO ONLY: anyone can drive the controls and claim to be anyone (see `authenticate` below).
//! A real application authenticates with a session cookie or a signed token and checks that the
//! caller may send what it asks to send.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use tidings::{
    AckOutcome, AckOutcomes, BroadcastError, Config, Identity, NotificationService, Page, Server,
    Transport,
};

/// The page, compiled into the binary: nothing is read from disk or the network at run time.
const INDEX_HTML: &str = include_str!("demo/index.html");

fn str_field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// `{user, tenant}` of a request or CONNECT payload (tenant may be empty: the default tenant).
fn identity_of(v: &Value) -> Identity {
    Identity::new(str_field(v, "tenant"), str_field(v, "user"))
}

/// The typed error, as the page shows it: the variant's name (from `Debug`, so a variant added
/// later shows up too) and its message.
fn error_json(e: &BroadcastError) -> Value {
    let debug = format!("{e:?}");
    let kind: String = debug
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    json!({"ok": false, "error": {"kind": kind, "message": e.to_string()}})
}

fn reply(result: Result<Value, BroadcastError>) -> Value {
    match result {
        Ok(v) => json!({"ok": true, "result": v}),
        Err(e) => error_json(&e),
    }
}

/// `demo:send`: the seed's four pushes, through the unified API.
fn send(service: &NotificationService, req: &Value) -> Result<Value, BroadcastError> {
    let transport: Transport = str_field(req, "transport")
        .parse()
        .unwrap_or(Transport::Both);
    let event = str_field(req, "event");
    let data = req.get("data").cloned().unwrap_or(Value::Null);
    match str_field(req, "kind") {
        "user" => service.broadcast_to_user(transport, &identity_of(req), event, &data),
        "tenant" => service.broadcast_to_tenant(transport, str_field(req, "tenant"), event, &data),
        // Rooms are real on every transport: a non-member never receives a room event.
        "room" if transport == Transport::Both => {
            service.broadcast_to_room(str_field(req, "room"), event, &data)
        }
        "room" => {
            service
                .provider(transport)
                .broadcast()
                .to_room(str_field(req, "room"), event, &data)
        }
        _ => service.provider(transport).broadcast().to_all(event, &data),
    }?;
    Ok(Value::Null)
}

fn outcome_json(o: &AckOutcome) -> Value {
    match o {
        AckOutcome::Ok { args, .. } => json!({"kind": "ok", "args": args}),
        AckOutcome::Timeout => json!({"kind": "timeout"}),
        AckOutcome::Disconnected => json!({"kind": "disconnected"}),
        AckOutcome::Overloaded => json!({"kind": "overloaded"}),
    }
}

type Service = Arc<OnceLock<NotificationService>>;

/// Registers a `demo:*` control event: parse the request, call the API, answer the ack.
fn control(
    builder: tidings::ServerBuilder,
    event: &str,
    service: &Service,
    call: fn(&NotificationService, &Value) -> Result<Value, BroadcastError>,
) -> tidings::ServerBuilder {
    let service = service.clone();
    builder.on_event("/", event, move |_, ev| {
        let req = ev.args.first().cloned().unwrap_or(Value::Null);
        let result = match service.get() {
            Some(s) => call(s, &req),
            None => Err(BroadcastError::ServerClosed),
        };
        if let Some(ack) = ev.ack {
            let _ = ack.send(vec![reply(result)]);
        }
    })
}

/// The Socket.IO provider's extras (always present for `Transport::SocketIo`).
fn features(
    service: &NotificationService,
) -> Result<&dyn tidings::SocketIoFeatures, BroadcastError> {
    service
        .provider(Transport::SocketIo)
        .socketio_features()
        .ok_or(BroadcastError::ServerClosed)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 3000,
    };
    let config = Config {
        bind: ([127, 0, 0, 1], port).into(),
        pages: vec![Page {
            path: "/".into(),
            content_type: "text/html; charset=utf-8",
            body: Cow::Borrowed(INDEX_HTML),
        }],
        ..Config::default()
    };
    // The service needs the running server's handle; handlers reach it through this cell.
    let service: Service = Arc::default();

    let builder = Server::builder(config)
        // DEMO ONLY: the connection says who it is — SSE in the query (`/events?user=&tenant=`,
        // since EventSource cannot set headers), Socket.IO in its CONNECT payload. Nothing is
        // verified. No user: anonymous (receives only `to_all`).
        .authenticate(|req| {
            let (user, tenant) = match req.auth {
                Some(auth) => (
                    auth.get("user").and_then(Value::as_str).map(str::to_string),
                    str_field(auth, "tenant").to_string(),
                ),
                None => (
                    req.info.query("user"),
                    req.info.query("tenant").unwrap_or_default(),
                ),
            };
            Ok(user
                .filter(|u| !u.is_empty())
                .map(|u| Identity::new(tenant, u)))
        });
    let builder = control(builder, "demo:send", &service, send);
    let builder = control(builder, "demo:join", &service, |s, req| {
        features(s)?.join_room(&identity_of(req), str_field(req, "room"))?;
        Ok(Value::Null)
    });
    let builder = control(builder, "demo:leave", &service, |s, req| {
        features(s)?.leave_room(&identity_of(req), str_field(req, "room"))?;
        Ok(Value::Null)
    });
    let builder = control(builder, "demo:rooms", &service, |s, req| {
        Ok(json!(features(s)?.user_rooms(&identity_of(req))?))
    });
    let ask_service = service.clone();
    let server = builder
        // `to_user_with_ack` with a callback: handlers must not block (the blocking form would
        // hold up every other handler until the browsers answer).
        .on_event("/", "demo:ask", move |_, ev| {
            let req = ev.args.first().cloned().unwrap_or(Value::Null);
            // The responder goes to the callback, or answers the typed error if the call is
            // refused (then the callback never runs).
            let slot = Arc::new(Mutex::new(ev.ack));
            let answer = |slot: &Mutex<Option<tidings::AckResponder>>, v: Value| {
                if let Some(ack) = slot.lock().ok().and_then(|mut a| a.take()) {
                    let _ = ack.send(vec![v]);
                }
            };
            let cb_slot = slot.clone();
            let result = ask_service
                .get()
                .ok_or(BroadcastError::ServerClosed)
                .and_then(features)
                .and_then(|f| {
                    f.to_user_with_ack_callback(
                        &identity_of(&req),
                        str_field(&req, "event"),
                        &req.get("data").cloned().unwrap_or(Value::Null),
                        Duration::from_secs(5),
                        Box::new(move |outcomes| {
                            let v = match outcomes {
                                AckOutcomes::NoRecipients => json!("no Socket.IO connection"),
                                AckOutcomes::Outcomes(list) => json!(list
                                    .iter()
                                    .map(|r| outcome_json(&r.outcome))
                                    .collect::<Vec<_>>()),
                            };
                            answer(&cb_slot, json!({"ok": true, "result": v}));
                        }),
                    )
                });
            if let Err(e) = result {
                answer(&slot, error_json(&e));
            }
        })
        .start()?;
    let _ = service.set(NotificationService::new(server.handle()));
    println!("tidings demo on http://{}/", server.local_addr());
    loop {
        std::thread::park();
    }
}
