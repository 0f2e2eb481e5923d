//! The server the interop tests (tests/interop/*.test.mjs) drive with real clients: official
//! `socket.io-client`, `engine.io-client`, `eventsource`, and Chromium.
//!
//! Authentication (test-only, never do this in production): Socket.IO's CONNECT payload or the SSE
//! query carries `user` and `tenant`; `token: "bad"` is rejected (401, or `connect_error` with the
//! message "invalid token"), `token: "forbidden"` gets 403 on SSE. No `user`: anonymous.
//!
//! Client events: `echo` (emits `echo` back, binary included), `echo-ack` (acks with the args),
//! `ask` `{event, data, timeoutMs}` (the server emits `event` to this socket with an ack and reports
//! the outcome as `ask-result`), `emit-me {event, data, volatile}` (the server emits `event` to
//! this socket, volatile when asked, then acks), `disconnect-me`, `drop-me` (closes the
//! connection: the client reconnects), `join-socket-room` / `to-socket-room` (per-socket rooms).
//!
//! Control events (`ctl:*`, answered by ack) let a test broadcast through the unified API:
//! `ctl:broadcast {transport, target:{kind,user,tenant,room}, event, data, volatile}`, `ctl:join`,
//! `ctl:leave`, `ctl:rooms {user, tenant}` (the rooms, or `{ok: false, error}`), `ctl:ack-user
//! {user, tenant, event, data, timeoutMs}`, `ctl:stats` (this server's counts; `clusterConnected`:
//! `null` alone, else whether its link to Redis is up; `clusterReconnects` and `clusterDropped`
//! from `Metrics`), `ctl:drop-sse {user, tenant}` (closes those SSE streams from the server side;
//! the clients reconnect with `Last-Event-ID`), `ctl:socket-log {sid}` (what the server saw of
//! that socket: `{connects: [recovered, ...], disconnects: [reason, ...]}`), `ctl:config` (this
//! server's `{recoveryWindowMs, historyEvents}`). Namespace `/custom` emits `hello-custom` on
//! connect.
//!
//! Listens on 127.0.0.1:$PORT (default 3000). With `RECOVERY_PORT` set, a second server with the
//! same handlers listens on 127.0.0.1:$RECOVERY_PORT with connection state recovery on (every
//! event without ack then carries its offset as a last argument): window `RECOVERY_WINDOW_MS`
//! (default 3000), history `RECOVERY_HISTORY_EVENTS` events (default 64).
//!
//! Cluster (the `redis` feature): with `REDIS_URL` set (`redis://127.0.0.1:6379/`), the server on
//! $PORT is a node of the cluster on that Redis, prefix `REDIS_PREFIX` (default `tidings`): start
//! several with the same `REDIS_URL` and a `ctl:*` call on one reaches the clients of all
//! (tests/interop/cluster.test.mjs). The recovery servers of such nodes are a cluster of their
//! own (prefix `<REDIS_PREFIX>-recovery`): a socket of one recovers on another, even when its
//! node was killed. (scripts/interop.sh runs the shared servers without `REDIS_URL`.) A build
//! without the feature refuses to start when `REDIS_URL` is set (it would silently not cluster).
//! Note that `ctl:stats`, `ctl:drop-sse` and `ctl:socket-log` read this node only.
//!
//! A node of a Node.js socket.io cluster (the `redis` feature): with `SIO_ADAPTER_URL` set (and
//! `SIO_ADAPTER_KEY`, default `socket.io`), the server on $PORT joins the Node servers that use
//! `@socket.io/redis-adapter` on that Redis, for `/` and `/custom`
//! (tests/interop/adapter.test.mjs); their `serverSideEmit`s are answered with
//! `{from: "tidings", args}` and listed by `ctl:server-side-log` (`[[event, ...args], ...]`),
//! `ctl:stats` says `adapterConnected`, and `ctl:cluster {op, nsp, rooms, except, join, close,
//! event, args, timeoutMs}` makes one request of `Handle::socketio_cluster` (op `fetch`, `join`,
//! `leave`, `disconnect`, `server-side-emit`, `server-side-emit-ack`, `emit-with-ack`) and
//! answers `{ok: true, result}` (fetch: `[{id, rooms, data}]`; the acks: the answers) or
//! `{ok: false, error}`.
//!
//! `INTEROP_LOG=warn` (or `error`, `info`, `debug`, `trace`) prints the library's log records on
//! stderr.
//!
//! Run: `cargo run --example interop` (add `RECOVERY_PORT=3001` for both); a node of a cluster:
//! `REDIS_URL=redis://127.0.0.1:6379/ PORT=3000 cargo run --features redis --example interop`.

use std::time::Duration;

use serde_json::{json, Value};
use tidings::{
    AckOutcome, AckOutcomes, Config, Identity, NotificationService, Recovery, Rejection, Server,
    Transport,
};

fn identity_from(v: Option<&Value>) -> Option<Identity> {
    let v = v?;
    let user = v.get("user")?.as_str()?;
    let tenant = v.get("tenant").and_then(Value::as_str).unwrap_or("");
    Some(Identity::new(tenant, user))
}

fn outcome_json(o: &AckOutcome) -> Value {
    match o {
        AckOutcome::Ok { args, .. } => json!({"kind": "ok", "args": args}),
        AckOutcome::Timeout => json!({"kind": "timeout"}),
        AckOutcome::Disconnected => json!({"kind": "disconnected"}),
        AckOutcome::Overloaded => json!({"kind": "overloaded"}),
    }
}

fn str_field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, Box<dyn std::error::Error>>
where
    T::Err: std::error::Error + 'static,
{
    match std::env::var(name) {
        Ok(v) => Ok(v.parse()?),
        Err(_) => Ok(default),
    }
}

/// The cluster a server joins (`ServerBuilder::cluster`); without the `redis` feature there is
/// none to join.
#[cfg(feature = "redis")]
type Cluster = tidings::ClusterConfig;
#[cfg(not(feature = "redis"))]
type Cluster = std::convert::Infallible;

/// The cluster of `REDIS_URL` (prefix `REDIS_PREFIX` when set), `None` when `REDIS_URL` is unset.
#[cfg(feature = "redis")]
fn cluster_from_env() -> Option<Cluster> {
    let url = std::env::var("REDIS_URL").ok()?;
    let mut cluster = tidings::ClusterConfig::new(url);
    if let Ok(prefix) = std::env::var("REDIS_PREFIX") {
        cluster.prefix = prefix;
    }
    Some(cluster)
}

/// The Node.js socket.io cluster of `SIO_ADAPTER_URL` (channel key `SIO_ADAPTER_KEY`, default
/// `socket.io`), for namespaces `/` and `/custom`; `None` when it is unset.
#[cfg(feature = "redis")]
fn adapter_from_env() -> Option<tidings::SocketIoAdapterConfig> {
    let url = std::env::var("SIO_ADAPTER_URL").ok()?;
    let mut adapter = tidings::SocketIoAdapterConfig::new(url);
    if let Ok(key) = std::env::var("SIO_ADAPTER_KEY") {
        adapter.key = key;
    }
    adapter.namespaces = vec!["/".into(), "/custom".into()];
    Some(adapter)
}

/// `ctl:cluster {op, nsp, rooms, except, ...}`: one request of `Handle::socketio_cluster` over
/// every server of the Node cluster; `{ok: true, result}` or `{ok: false, error}`.
#[cfg(feature = "redis")]
fn cluster_request(cluster: &tidings::SocketIoCluster, req: &Value) -> Value {
    let strings = |key: &str| -> Vec<String> {
        req.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut sel =
        tidings::SocketSelector::of(req.get("nsp").and_then(Value::as_str).unwrap_or("/"));
    for r in strings("rooms") {
        sel = sel.in_room(r);
    }
    for r in strings("except") {
        sel = sel.except(r);
    }
    let event = req.get("event").and_then(Value::as_str).unwrap_or("");
    let args = req
        .get("args")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let timeout =
        Duration::from_millis(req.get("timeoutMs").and_then(Value::as_u64).unwrap_or(3000));
    let rooms_arg = strings("join");
    let rooms_arg: Vec<&str> = rooms_arg.iter().map(String::as_str).collect();
    let result = match req.get("op").and_then(Value::as_str).unwrap_or("") {
        "fetch" => cluster.fetch_sockets(&sel).map(|sockets| {
            Value::Array(
                sockets
                    .into_iter()
                    .map(|s| json!({"id": s.id, "rooms": s.rooms, "data": s.data}))
                    .collect(),
            )
        }),
        "join" => cluster.sockets_join(&sel, &rooms_arg).map(|()| Value::Null),
        "leave" => cluster
            .sockets_leave(&sel, &rooms_arg)
            .map(|()| Value::Null),
        "disconnect" => {
            let close = req.get("close").and_then(Value::as_bool).unwrap_or(false);
            cluster
                .disconnect_sockets(&sel, close)
                .map(|()| Value::Null)
        }
        "server-side-emit" => cluster.server_side_emit(event, args).map(|()| Value::Null),
        "server-side-emit-ack" => cluster
            .server_side_emit_with_ack(event, args, timeout)
            .map(Value::Array),
        "emit-with-ack" => cluster
            .emit_with_ack(&sel, event, args, timeout)
            .map(Value::Array),
        other => return json!({"ok": false, "error": format!("unknown op {other:?}")}),
    };
    match result {
        Ok(result) => json!({"ok": true, "result": result}),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    }
}

/// The recovery server's cluster, when the main server is a node: the same Redis, prefix
/// `<prefix>-recovery` (the recovery servers of all the nodes are a cluster of their own).
#[cfg(feature = "redis")]
fn recovery_cluster_of(cluster: Option<&Cluster>) -> Option<Cluster> {
    let mut c = cluster?.clone();
    c.prefix = format!("{}-recovery", c.prefix);
    Some(c)
}

#[cfg(not(feature = "redis"))]
fn recovery_cluster_of(_: Option<&Cluster>) -> Option<Cluster> {
    None
}

/// Without the `redis` feature: `REDIS_URL` set is an error (exit status 2), not a standalone
/// server that looks like a node.
#[cfg(not(feature = "redis"))]
fn cluster_from_env() -> Option<Cluster> {
    if std::env::var_os("REDIS_URL").is_some() {
        eprintln!(
            "interop: REDIS_URL is set but this build has no cluster support; \
             build with `--features redis` (or unset REDIS_URL)"
        );
        std::process::exit(2);
    }
    None
}

/// The configuration of one interop server on 127.0.0.1:`port`.
fn config_for(port: u16) -> Config {
    Config {
        bind: ([127, 0, 0, 1], port).into(),
        engineio_path: Some("/engine.io/".into()),
        ping_interval: Duration::from_millis(500),
        ping_timeout: Duration::from_millis(500),
        sse_heartbeat: Duration::from_millis(500),
        sse_retry: Duration::from_millis(200),
        cors: tidings::Cors {
            allowed_origins: vec![
                format!("http://127.0.0.1:{port}"),
                format!("http://localhost:{port}"),
            ],
            allow_credentials: true,
        },
        ..Config::default()
    }
}

/// The library's log records on stderr, from `INTEROP_LOG` (`error`, `warn`, `info`, `debug`,
/// `trace`) up; nothing when it is unset.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        eprintln!("{} {}: {}", record.level(), record.target(), record.args());
    }

    fn flush(&self) {}
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(level) = std::env::var("INTEROP_LOG") {
        if log::set_logger(&StderrLog).is_ok() {
            let level: log::LevelFilter = level
                .parse()
                .map_err(|_| format!("INTEROP_LOG={level:?}: not a log level"))?;
            log::set_max_level(level);
        }
    }
    let port: u16 = env_or("PORT", 3000)?;
    let cluster = cluster_from_env();
    let recovery_cluster = recovery_cluster_of(cluster.as_ref());
    let clustered = cluster.is_some();
    let server = start(config_for(port), cluster, true)?;
    if clustered {
        eprintln!(
            "interop server on http://{} (a cluster node)",
            server.local_addr()
        );
    } else {
        eprintln!("interop server on http://{}", server.local_addr());
    }
    // The recovery server: the same handlers, connection state recovery on, a short window and a
    // small history (so a test can outlive the one and overflow the other).
    let _recovery = match std::env::var("RECOVERY_PORT") {
        Ok(p) => {
            let window = Duration::from_millis(env_or("RECOVERY_WINDOW_MS", 3000)?);
            let config = Config {
                connection_state_recovery: Some(Recovery {
                    max_disconnection_duration: window,
                    ..Recovery::default()
                }),
                sse_history_events: env_or("RECOVERY_HISTORY_EVENTS", 64)?,
                ..config_for(p.parse()?)
            };
            let server = start(config, recovery_cluster, false)?;
            eprintln!(
                "interop recovery server on http://{} (window {window:?})",
                server.local_addr()
            );
            Some(server)
        }
        Err(_) => None,
    };
    loop {
        std::thread::park();
    }
}

/// Starts a server on `config` with every handler of the interop tests, a node of `cluster` when
/// given.
fn start(
    config: Config,
    cluster: Option<Cluster>,
    main: bool,
) -> Result<Server, Box<dyn std::error::Error>> {
    #[cfg(feature = "redis")]
    let server_side_log: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
    #[cfg(not(feature = "redis"))]
    let _ = main;
    // What `ctl:config` tells the tests about this server.
    let described = json!({
        "recoveryWindowMs": config
            .connection_state_recovery
            .as_ref()
            .map(|r| r.max_disconnection_duration.as_millis() as u64),
        "historyEvents": config.sse_history_events,
    });
    // The service is created from the handle after start; handlers reach it through this cell.
    let service: std::sync::Arc<std::sync::OnceLock<NotificationService>> = Default::default();
    let svc = |s: &std::sync::Arc<std::sync::OnceLock<NotificationService>>| s.get().cloned();

    let s1 = service.clone();
    let s2 = service.clone();
    let s3 = service.clone();
    let s4 = service.clone();
    let s5 = service.clone();
    // Open SSE streams and who they belong to, so a test can drop them from the server side.
    type Streams = std::sync::Arc<std::sync::Mutex<Vec<(tidings::StreamId, Option<Identity>)>>>;
    let streams: Streams = Default::default();
    let (st1, st2, st3) = (streams.clone(), streams.clone(), streams.clone());
    // What the server saw of each main-namespace socket, by `socket.id`: `Socket::recovered()` of
    // every connect and the reason of every disconnect (`ctl:socket-log`).
    type SocketLog = std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, (Vec<bool>, Vec<String>)>>,
    >;
    let socket_log: SocketLog = Default::default();
    let (sl1, sl2, sl3) = (socket_log.clone(), socket_log.clone(), socket_log.clone());
    let builder = Server::builder(config)
        .authenticate(|req| {
            let token = match req.auth {
                Some(auth) => auth.get("token").and_then(Value::as_str).map(str::to_string),
                None => req.info.query("token"),
            };
            match token.as_deref() {
                Some("bad") => return Err(Rejection::unauthorized("invalid token").with_data(json!({"reason": "bad"}))),
                Some("forbidden") => return Err(Rejection::forbidden("forbidden")),
                _ => {}
            }
            Ok(match req.auth {
                Some(auth) => identity_from(Some(auth)),
                None => req.info.query("user").map(|u| Identity::new(req.info.query("tenant").unwrap_or_default(), u)),
            })
        })
        .on_engineio(|handle, event| {
            if let tidings::EngineIoEvent::Message { session, data } = event {
                let _ = handle.eio_send(session, data);
            }
        })
        .on_sse_open(move |stream, identity| {
            if let Ok(mut s) = st1.lock() {
                s.push((stream, identity.cloned()));
            }
        })
        .on_sse_close(move |stream| {
            if let Ok(mut s) = st2.lock() {
                s.retain(|(id, _)| *id != stream);
            }
        })
        .on_event("/", "ctl:drop-sse", move |socket, ev| {
            // Closes every SSE stream of `{user, tenant}` (all streams without a user).
            let req = ev.args.first().cloned().unwrap_or(Value::Null);
            let who = req.get("user").and_then(Value::as_str).map(|u| Identity::new(str_field(&req, "tenant"), u));
            let victims: Vec<tidings::StreamId> = st3
                .lock()
                .map(|s| s.iter().filter(|(_, i)| who.is_none() || i.as_ref() == who.as_ref()).map(|(id, _)| *id).collect())
                .unwrap_or_default();
            for v in &victims {
                let _ = socket.handle().sse_close(*v);
            }
            if let Some(ack) = ev.ack {
                let _ = ack.send(vec![json!({"dropped": victims.len()})]);
            }
        })
        .on_connect("/", move |socket, _| {
            if let Ok(mut log) = sl1.lock() {
                if log.len() >= 10_000 {
                    log.clear(); // bounded: the tests look at their own sockets only
                }
                log.entry(socket.sid().to_string()).or_default().0.push(socket.recovered());
            }
        })
        .on_disconnect("/", move |socket, reason| {
            if let Ok(mut log) = sl2.lock() {
                log.entry(socket.sid().to_string()).or_default().1.push(reason.to_string());
            }
        })
        .on_event("/", "ctl:socket-log", move |_, ev| {
            let req = ev.args.first().cloned().unwrap_or(Value::Null);
            let entry = sl3.lock().ok().and_then(|log| log.get(str_field(&req, "sid")).cloned());
            let (connects, disconnects) = entry.unwrap_or_default();
            if let Some(ack) = ev.ack {
                let _ = ack.send(vec![json!({"connects": connects, "disconnects": disconnects})]);
            }
        })
        .on_event("/", "ctl:config", move |_, ev| {
            if let Some(ack) = ev.ack {
                let _ = ack.send(vec![described.clone()]);
            }
        })
        .on_connect("/custom", |socket, _| {
            let _ = socket.emit("hello-custom", vec![json!(socket.namespace())]);
        })
        .on_event("/", "echo", |socket, ev| {
            let _ = socket.emit_binary("echo", ev.args, ev.attachments);
        })
        .on_event("/", "echo-ack", |_, ev| {
            if let Some(ack) = ev.ack {
                let _ = ack.send_binary(ev.args, ev.attachments);
            }
        })
        .on_event("/", "ask", |socket, ev| {
            let req = ev.args.first().cloned().unwrap_or(Value::Null);
            let event = str_field(&req, "event").to_string();
            let data = req.get("data").cloned().unwrap_or(Value::Null);
            let timeout = Duration::from_millis(req.get("timeoutMs").and_then(Value::as_u64).unwrap_or(1000));
            let reporter = socket.clone();
            let _ = socket.emit_with_ack(&event, vec![data], timeout, move |outcome| {
                let _ = reporter.emit("ask-result", vec![outcome_json(&outcome)]);
            });
        })
        .on_event("/", "emit-me", |socket, ev| {
            // `{event, data, volatile}`: the server emits `event` to this very socket, volatile
            // (`Socket::volatile`) when asked.
            let req = ev.args.first().cloned().unwrap_or(Value::Null);
            let data = req.get("data").cloned().unwrap_or(Value::Null);
            let s = if req.get("volatile").and_then(Value::as_bool) == Some(true) {
                socket.volatile()
            } else {
                socket.clone()
            };
            let _ = s.emit(str_field(&req, "event"), vec![data]);
            if let Some(ack) = ev.ack {
                let _ = ack.send(vec![json!(true)]); // after the emit, on the same connection
            }
        })
        .on_event("/", "disconnect-me", |socket, _| {
            let _ = socket.disconnect();
        })
        .on_event("/", "drop-me", |socket, _| {
            let _ = socket.close_connection();
        })
        .on_event("/", "join-socket-room", |socket, ev| {
            let room = ev.args.first().and_then(Value::as_str).unwrap_or("").to_string();
            let _ = socket.join(&room);
            if let Some(ack) = ev.ack {
                let _ = ack.send(vec![json!(true)]);
            }
        })
        .on_event("/", "to-socket-room", |socket, ev| {
            let room = ev.args.first().and_then(Value::as_str).unwrap_or("").to_string();
            let data = ev.args.get(1).cloned().unwrap_or(Value::Null);
            let _ = socket.to_room(&room, "room-message", vec![data]);
        })
        .on_event("/", "ctl:broadcast", move |_, ev| {
            let Some(mut service) = svc(&s1) else { return };
            let req = ev.args.first().cloned().unwrap_or(Value::Null);
            if req.get("volatile").and_then(Value::as_bool) == Some(true) {
                service = service.volatile();
            }
            let transport: Transport = str_field(&req, "transport").parse().unwrap_or(Transport::Both);
            let target = req.get("target").cloned().unwrap_or(Value::Null);
            let event = str_field(&req, "event");
            let data = req.get("data").cloned().unwrap_or(Value::Null);
            let b = service.provider(transport).broadcast();
            let result = match str_field(&target, "kind") {
                "user" => b.to_user(&Identity::new(str_field(&target, "tenant"), str_field(&target, "user")), event, &data),
                "tenant" => b.to_tenant(str_field(&target, "tenant"), event, &data),
                "room" => b.to_room(str_field(&target, "room"), event, &data),
                _ => b.to_all(event, &data),
            };
            if let Some(ack) = ev.ack {
                let reply = match result {
                    Ok(()) => json!({"ok": true}),
                    Err(e) => json!({"ok": false, "error": e.to_string()}),
                };
                let _ = ack.send(vec![reply]);
            }
        })
        .on_event("/", "ctl:join", move |_, ev| {
            let Some(service) = svc(&s2) else { return };
            let req = ev.args.first().cloned().unwrap_or(Value::Null);
            let user = Identity::new(str_field(&req, "tenant"), str_field(&req, "user"));
            let f = service.provider(Transport::SocketIo).socketio_features();
            let r = f.map(|f| f.join_room(&user, str_field(&req, "room")));
            if let Some(ack) = ev.ack {
                let _ = ack.send(vec![json!({"ok": matches!(r, Some(Ok(())))})]);
            }
        })
        .on_event("/", "ctl:leave", move |_, ev| {
            let Some(service) = svc(&s3) else { return };
            let req = ev.args.first().cloned().unwrap_or(Value::Null);
            let user = Identity::new(str_field(&req, "tenant"), str_field(&req, "user"));
            let f = service.provider(Transport::SocketIo).socketio_features();
            let r = f.map(|f| f.leave_room(&user, str_field(&req, "room")));
            if let Some(ack) = ev.ack {
                let _ = ack.send(vec![json!({"ok": matches!(r, Some(Ok(())))})]);
            }
        })
        .on_event("/", "ctl:rooms", move |_, ev| {
            let Some(service) = svc(&s4) else { return };
            let req = ev.args.first().cloned().unwrap_or(Value::Null);
            let user = Identity::new(str_field(&req, "tenant"), str_field(&req, "user"));
            // The rooms, or `{ok: false, error}` when they could not be read (a cluster node
            // whose Redis is unreachable): never an empty list that only looks like an answer.
            let rooms = service.provider(Transport::SocketIo).socketio_features().map(|f| f.user_rooms(&user));
            let reply = match rooms {
                Some(Ok(rooms)) => json!(rooms),
                Some(Err(e)) => json!({"ok": false, "error": e.to_string()}),
                None => json!({"ok": false, "error": "no Socket.IO features"}),
            };
            if let Some(ack) = ev.ack {
                let _ = ack.send(vec![reply]);
            }
        })
        .on_event("/", "ctl:ack-user", move |_, ev| {
            let Some(service) = svc(&s5) else { return };
            let req = ev.args.first().cloned().unwrap_or(Value::Null);
            let user = Identity::new(str_field(&req, "tenant"), str_field(&req, "user"));
            let event = str_field(&req, "event").to_string();
            let data = req.get("data").cloned().unwrap_or(Value::Null);
            let timeout = Duration::from_millis(req.get("timeoutMs").and_then(Value::as_u64).unwrap_or(1000));
            let Some(ack) = ev.ack else { return };
            let Some(features) = service.provider(Transport::SocketIo).socketio_features() else { return };
            let _ = features.to_user_with_ack_callback(
                &user,
                &event,
                &data,
                timeout,
                Box::new(move |outcomes| {
                    let v = match outcomes {
                        AckOutcomes::NoRecipients => json!({"noRecipients": true}),
                        AckOutcomes::Outcomes(list) => {
                            json!({"outcomes": list.iter().map(|r| outcome_json(&r.outcome)).collect::<Vec<_>>()})
                        }
                    };
                    let _ = ack.send(vec![v]);
                }),
            );
        })
        .on_event("/", "ctl:stats", |socket, ev| {
            let stats = socket.handle().stats().ok();
            let metrics = socket.handle().metrics();
            if let Some(ack) = ev.ack {
                let v = match stats {
                    Some(s) => json!({
                        "eioSessions": s.eio_sessions, "sioSockets": s.sio_sockets, "sseStreams": s.sse_streams,
                        "pendingAcks": s.pending_acks, "indexRecipients": s.index_recipients,
                        "indexUsers": s.index_users, "indexRooms": s.index_rooms, "sseHistory": s.sse_history,
                        "clusterConnected": socket.handle().cluster_connected(),
                        "adapterConnected": socket.handle().adapter_connected(),
                        "clusterReconnects": metrics.cluster_reconnects, "clusterDropped": metrics.cluster_dropped,
                    }),
                    None => Value::Null,
                };
                let _ = ack.send(vec![v]);
            }
        });
    #[cfg(feature = "redis")]
    let builder = match cluster {
        Some(cluster) => builder.cluster(cluster),
        None => builder,
    };
    // A node of a Node.js socket.io cluster (`SIO_ADAPTER_URL`, main server only): what Node
    // servers `serverSideEmit` is kept for `ctl:server-side-log` and answered with
    // `{from: "tidings", args}`.
    #[cfg(feature = "redis")]
    let builder = match adapter_from_env().filter(|_| main) {
        Some(adapter) => {
            let log = server_side_log.clone();
            let seen = log.clone();
            builder
                .socketio_adapter(adapter)
                .on_server_side_emit(move |event, args| {
                    let mut entry = vec![json!(event)];
                    entry.extend(args.iter().cloned());
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Value::Array(entry));
                    Some(json!({"from": "tidings", "args": args}))
                })
                .on_event("/", "ctl:server-side-log", move |_, ev| {
                    let entries = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if let Some(ack) = ev.ack {
                        let _ = ack.send(vec![Value::Array(entries)]);
                    }
                })
                .on_event("/", "ctl:cluster", |socket, ev| {
                    // The requests wait for the other servers: off the dispatcher thread.
                    let Some(cluster) = socket.handle().socketio_cluster() else {
                        return;
                    };
                    let req = ev.args.first().cloned().unwrap_or(Value::Null);
                    std::thread::spawn(move || {
                        let reply = cluster_request(&cluster, &req);
                        if let Some(ack) = ev.ack {
                            let _ = ack.send(vec![reply]);
                        }
                    });
                })
        }
        None => builder,
    };
    #[cfg(not(feature = "redis"))]
    let builder = match cluster {
        Some(never) => match never {},
        None => builder,
    };
    let server = builder.start()?;
    let _ = service.set(NotificationService::new(server.handle()));
    Ok(server)
}
