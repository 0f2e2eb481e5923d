//! The demo's server side, shared by `examples/demo.rs` and the gateway's `--demo`: the page
//! (`index.html`, compiled in), the demo's claimed identities, live presence, and the `demo:*`
//! control events that drive the unified API (see `examples/demo.rs` for what each does).
//!
//! DEMO ONLY: anyone can drive the controls and claim to be anyone. A real application
//! authenticates with a session cookie or a signed token and checks that the caller may send
//! what it asks to send.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use tidings::{
    AckOutcome, AckOutcomes, AuthRequest, BroadcastError, Handle, Identity, NotificationService,
    Page, Recovery, ServerBuilder, SocketId, StreamId, Target, Transport,
};

/// The page, compiled into the binary: nothing is read from disk or the network at run time.
const INDEX_HTML: &str = include_str!("index.html");

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
    builder: ServerBuilder,
    event: &str,
    cell: &Cell,
    call: fn(&App, &Value) -> Result<Value, BroadcastError>,
) -> ServerBuilder {
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

/// The demo page, served at `/`.
pub fn page() -> Page {
    Page {
        path: "/".into(),
        content_type: "text/html; charset=utf-8",
        body: Cow::Borrowed(INDEX_HTML),
    }
}

/// The connection state recovery the page's "go offline" shows: a socket that lost its
/// connection waits 60 s (the page says so) and, back in time, gets what it missed.
pub fn recovery() -> Recovery {
    Recovery {
        max_disconnection_duration: Duration::from_secs(60),
        ..Recovery::default()
    }
}

/// DEMO ONLY: the identity a connection claims — SSE in the query (`/events?user=&tenant=`, since
/// EventSource cannot set headers), Socket.IO in its CONNECT payload. Nothing is verified. No
/// user: anonymous (receives only `to_all`).
pub fn claimed_identity(req: &AuthRequest<'_>) -> Option<Identity> {
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
    user.filter(|u| !u.is_empty())
        .map(|u| Identity::new(tenant, u))
}

/// The demo, once its handlers are registered: [`Demo::start`] hands it the running server.
pub struct Demo {
    cell: Cell,
    online: Arc<Mutex<Online>>,
}

impl Demo {
    /// Connects the handlers to the running server behind `handle`.
    pub fn start(&self, handle: Handle) {
        let _ = self.cell.set(App {
            service: NotificationService::new(handle.clone()),
            handle,
            online: self.online.clone(),
        });
    }
}

/// Registers the demo's presence hooks and `demo:*` control events (the authentication hook is
/// the caller's: [`claimed_identity`] for the demo alone). Uses the `on_connect`,
/// `on_disconnect`, `on_sse_open` and `on_sse_close` hooks of `/`.
pub fn install(builder: ServerBuilder) -> (ServerBuilder, Demo) {
    // The service needs the running server's handle; handlers reach it through this cell.
    let cell: Cell = Arc::default();
    let online: Arc<Mutex<Online>> = Arc::default();

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
    let builder = builder
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
        });
    (builder, Demo { cell, online })
}
