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
//! Cluster (the `redis` feature): with `REDIS_URL` set (`redis://127.0.0.1:6379/`) the demo is a
//! node of the cluster on that Redis, prefix `REDIS_PREFIX` (default `tidings`). Start two on other
//! ports (`REDIS_URL=redis://127.0.0.1:6379/ PORT=3001 cargo run --features redis --example demo`)
//! and open a tab on each: sends, rooms and the counts are the cluster's, and an SSE panel
//! resumes on either node; the presence lists this node's connections only, and a Socket.IO
//! session recovers only on the node that held it. A build without the feature refuses to start
//! when `REDIS_URL` is set.
//!
//! The server side lives in `demo/app.rs`, shared with the gateway's `--demo`
//! (`cargo run --features gateway --bin tidings-gateway -- --demo`).
//!
//! DEMO ONLY: anyone can drive the controls and claim to be anyone (see `claimed_identity`).
//! A real application authenticates with a session cookie or a signed token and checks that the
//! caller may send what it asks to send.

#[path = "demo/app.rs"]
mod app;

use tidings::{Config, Server, ServerBuilder};

/// Joins the cluster of `REDIS_URL` (prefix `REDIS_PREFIX` when set) if it is set; the prefix
/// joined.
#[cfg(feature = "redis")]
fn join_cluster(builder: ServerBuilder) -> (ServerBuilder, Option<String>) {
    let Ok(url) = std::env::var("REDIS_URL") else {
        return (builder, None);
    };
    let mut cluster = tidings::ClusterConfig::new(url);
    if let Ok(prefix) = std::env::var("REDIS_PREFIX") {
        cluster.prefix = prefix;
    }
    let prefix = cluster.prefix.clone();
    (builder.cluster(cluster), Some(prefix))
}

/// Without the `redis` feature: `REDIS_URL` set is an error (exit status 2), not a standalone
/// server that looks like a node.
#[cfg(not(feature = "redis"))]
fn join_cluster(builder: ServerBuilder) -> (ServerBuilder, Option<String>) {
    if std::env::var_os("REDIS_URL").is_some() {
        eprintln!(
            "demo: REDIS_URL is set but this build has no cluster support; \
             build with `--features redis` (or unset REDIS_URL)"
        );
        std::process::exit(2);
    }
    (builder, None)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 3000,
    };
    let config = Config {
        bind: ([127, 0, 0, 1], port).into(),
        pages: vec![app::page()],
        // Connection state recovery, so the page's "go offline" shows it (see `app::recovery`).
        connection_state_recovery: Some(app::recovery()),
        ..Config::default()
    };
    let builder = Server::builder(config).authenticate(|req| Ok(app::claimed_identity(req)));
    let (builder, demo) = app::install(builder);
    let (builder, cluster) = join_cluster(builder);
    let server = builder.start()?;
    demo.start(server.handle());
    match cluster {
        Some(prefix) => println!(
            "tidings demo on http://{}/ (a node of cluster '{prefix}')",
            server.local_addr()
        ),
        None => println!("tidings demo on http://{}/", server.local_addr()),
    }
    loop {
        std::thread::park();
    }
}
