//! The tidings demo: one page (`examples/demo/index.html`, served at `/`) with an SSE panel, a
//! Socket.IO panel (a tiny Socket.IO client written in plain JS inside the page) and a control
//! form that drives the unified API ([`NotificationService`]) through `demo:*` events.
//!
//! Run: `cargo run --example demo`, then open the printed URL (`PORT` overrides 3000). The page
//! suggests a second tab in another tenant (`/?user=bob&tenant=globex`): send to a user, a tenant,
//! a room or everyone and watch who receives what, and how many connections each send reached.
//!
//! Control events (sent by the page's Socket.IO panel, each answered by ack with
//! `{"ok": true, "result": ...}` or `{"ok": false, "error": {"kind", "message"}}`):
//! - `demo:send {transport, kind: user|tenant|all|room, user, tenant, room, event, data}` →
//!   `{sse, socketio, total}`: the connections the send reached ([`NotificationService::send_counted`]);
//! - `demo:join` / `demo:leave {user, tenant, room}` → `{rooms}`: the user's rooms afterwards;
//!   `demo:rooms {user, tenant}` → the user's rooms;
//! - `demo:ask {user, tenant, event, data}`: `to_user_with_ack`, 5 s timeout, one outcome per socket;
//! - `demo:stats {}` → the presence below, now.
//!
//! Connection state recovery is on (60 s): each panel's "go offline" closes its connection, and
//! "back online" shows what came back (Socket.IO: the session recovered and the missed events
//! replayed; SSE: the stream resumed from its last id).
//!
//! Presence: whenever a connection opens or closes, every Socket.IO socket gets
//! `demo:presence {sse, socketio, online: [{who, sse, socketio}]}`: the open SSE streams and
//! Socket.IO sockets ([`tidings::Handle::stats`]) and who holds them.
//!
//! DEMO ONLY: anyone can drive the controls and claim to be anyone (see `authenticate` below).
//! A real application authenticates with a session cookie or a signed token and checks that the
//! caller may send what it asks to send.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use tidings::{
    AckOutcome, AckOutcomes, BroadcastError, Config, Handle, Identity, NotificationService, Page,
    Recovery, Server, SocketId, StreamId, Target, Transport,
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

/// What the demo server keeps: the service, the handle (for stats) and who is connected.
struct App {
    service: NotificationService,
    handle: Handle,
    online: Arc<Mutex<Online>>,
}

/// Who holds each open connection (from the open / close hooks; `None`: anonymous).
#[derive(Default)]
struct Online {
    sse: BTreeMap<StreamId, Option<Identity>>,
    sio: BTreeMap<SocketId, Option<Identity>>,
}

/// `alice@acme`, `alice` (default tenant) or `anonymous`.
fn who(identity: Option<&Identity>) -> String {
    match identity {
        None => "anonymous".into(),
        Some(i) if i.tenant.is_empty() => i.user.clone(),
        Some(i) => format!("{}@{}", i.user, i.tenant),
    }
}

/// The presence the page shows: connections per transport, and who holds them.
fn presence(app: &App) -> Value {
    let mut people: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut sse, mut socketio) = (0, 0);
    if let Ok(online) = app.online.lock() {
        for i in online.sse.values() {
            people.entry(who(i.as_ref())).or_default().0 += 1;
        }
        for i in online.sio.values() {
            people.entry(who(i.as_ref())).or_default().1 += 1;
        }
        (sse, socketio) = (online.sse.len(), online.sio.len());
    }
    // The engine's own counters, when it answers: they are the truth (the map follows the hooks).
    if let Ok(stats) = app.handle.stats() {
        (sse, socketio) = (stats.sse_streams, stats.sio_sockets);
    }
    let online: Vec<Value> = people
        .into_iter()
        .map(|(who, (sse, socketio))| json!({"who": who, "sse": sse, "socketio": socketio}))
        .collect();
    json!({"sse": sse, "socketio": socketio, "online": online})
}

type Cell = Arc<OnceLock<App>>;

/// Tells every Socket.IO socket who is connected now (called on each open and close).
fn push_presence(cell: &Cell) {
    if let Some(app) = cell.get() {
        // Volatile: a presence is stale once the next one is out, so it is never replayed.
        let _ = app
            .service
            .volatile()
            .provider(Transport::SocketIo)
            .broadcast()
            .to_all("demo:presence", &presence(app));
    }
}

/// `demo:send`: one push through the unified API, answered with the connections it reached.
fn send(app: &App, req: &Value) -> Result<Value, BroadcastError> {
    let transport: Transport = str_field(req, "transport")
        .parse()
        .unwrap_or(Transport::Both);
    let target = match str_field(req, "kind") {
        "user" => Target::User(identity_of(req)),
        "tenant" => Target::Tenant(str_field(req, "tenant").to_string()),
        // Rooms are real on every transport: a non-member never receives a room event.
        "room" => Target::Room(str_field(req, "room").to_string()),
        _ => Target::All,
    };
    let data = req.get("data").cloned().unwrap_or(Value::Null);
    let reach = app
        .service
        .send_counted(transport, &target, str_field(req, "event"), &data)?;
    Ok(json!({"sse": reach.sse, "socketio": reach.socketio, "total": reach.total()}))
}

/// `demo:join` / `demo:leave`: the membership change, answered with the user's rooms afterwards.
fn membership(app: &App, req: &Value, join: bool) -> Result<Value, BroadcastError> {
    let user = identity_of(req);
    let room = str_field(req, "room");
    if join {
        app.service.join_room(&user, room)?;
    } else {
        app.service.leave_room(&user, room)?;
    }
    Ok(json!({"rooms": app.service.user_rooms(&user)?}))
}

fn outcome_json(o: &AckOutcome) -> Value {
    match o {
        AckOutcome::Ok { args, .. } => json!({"kind": "ok", "args": args}),
        AckOutcome::Timeout => json!({"kind": "timeout"}),
        AckOutcome::Disconnected => json!({"kind": "disconnected"}),
        AckOutcome::Overloaded => json!({"kind": "overloaded"}),
    }
}

/// Registers a `demo:*` control event: parse the request, call the API, answer the ack.
fn control(
    builder: tidings::ServerBuilder,
    event: &str,
    cell: &Cell,
    call: fn(&App, &Value) -> Result<Value, BroadcastError>,
) -> tidings::ServerBuilder {
    let cell = cell.clone();
    builder.on_event("/", event, move |_, ev| {
        let req = ev.args.first().cloned().unwrap_or(Value::Null);
        let result = match cell.get() {
            Some(app) => call(app, &req),
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
        // Connection state recovery, so the page's "go offline" shows it: a socket that lost its
        // connection waits 60 s (the page says so) and, back in time, gets what it missed.
        connection_state_recovery: Some(Recovery {
            max_disconnection_duration: Duration::from_secs(60),
            ..Recovery::default()
        }),
        ..Config::default()
    };
    // The service needs the running server's handle; handlers reach it through this cell.
    let cell: Cell = Arc::default();
    let online: Arc<Mutex<Online>> = Arc::default();

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

    // Presence: keep who holds each connection, and tell everyone on each change. The hooks run
    // on the dispatcher thread, one at a time and in event order, so the pushes are in order too.
    let (on, c) = (online.clone(), cell.clone());
    let builder = builder.on_sse_open(move |stream, identity| {
        if let Ok(mut o) = on.lock() {
            o.sse.insert(stream, identity.cloned());
        }
        push_presence(&c);
    });
    let (on, c) = (online.clone(), cell.clone());
    let builder = builder.on_sse_close(move |stream| {
        if let Ok(mut o) = on.lock() {
            o.sse.remove(&stream);
        }
        push_presence(&c);
    });
    let (on, c) = (online.clone(), cell.clone());
    let builder = builder.on_connect("/", move |socket, _| {
        if let Ok(mut o) = on.lock() {
            o.sio.insert(socket.id(), socket.identity().cloned());
        }
        push_presence(&c);
    });
    let (on, c) = (online.clone(), cell.clone());
    let builder = builder.on_disconnect("/", move |socket, _| {
        if let Ok(mut o) = on.lock() {
            o.sio.remove(&socket.id());
        }
        push_presence(&c);
    });

    let builder = control(builder, "demo:send", &cell, send);
    let builder = control(builder, "demo:join", &cell, |app, req| {
        membership(app, req, true)
    });
    let builder = control(builder, "demo:leave", &cell, |app, req| {
        membership(app, req, false)
    });
    let builder = control(builder, "demo:rooms", &cell, |app, req| {
        Ok(json!(app.service.user_rooms(&identity_of(req))?))
    });
    let builder = control(builder, "demo:stats", &cell, |app, _| Ok(presence(app)));
    let ask_cell = cell.clone();
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
            let result = ask_cell
                .get()
                .ok_or(BroadcastError::ServerClosed)
                .and_then(|app| features(&app.service))
                .and_then(|f| {
                    f.to_user_with_ack_callback(
                        &identity_of(&req),
                        str_field(&req, "event"),
                        &req.get("data").cloned().unwrap_or(Value::Null),
                        Duration::from_secs(5),
                        Box::new(move |outcomes| {
                            let v = match outcomes {
                                AckOutcomes::NoRecipients => json!([]),
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
    let handle = server.handle();
    let _ = cell.set(App {
        service: NotificationService::new(handle.clone()),
        handle,
        online,
    });
    println!("tidings demo on http://{}/", server.local_addr());
    loop {
        std::thread::park();
    }
}
