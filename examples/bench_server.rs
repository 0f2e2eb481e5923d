//! The tidings side of the peer benchmark (`scripts/bench-peers.sh`, which compares tidings with
//! the official Node socket.io server and socketioxide): the same small contract as
//! `benches/peers/node/server.mjs` and `benches/peers/socketioxide/src/main.rs`.
//!
//! - Socket.IO on `/socket.io/`, SSE on `/events`, every connection anonymous (so it receives
//!   `to_all` and nothing else).
//! - Client event `bench:burst {count, size, rate}`: broadcast `count` `tick` events with
//!   `{i, t, pad}` to everyone on both transports, where `t` is the server's send time in µs since
//!   the UNIX epoch (client and server share the machine's clock) and `pad` is `"x"` × `size`.
//!   `rate` 0 sends at full speed, otherwise `rate` broadcasts per second. The ack (if asked for)
//!   answers `{"ok": true}` at once: the work happens on a burst thread, never in the handler
//!   (handlers share one dispatcher thread).
//! - Client event `bench:ack ARGS...` with an ack: the handler answers at once with the same
//!   arguments (the ack round trip of the benchmark's ack phase).
//!
//! Listens on 127.0.0.1:$PORT (default 3000). The script runs it with `TIDINGS_EVENT_LOOPS` (1 or
//! 2) in its environment, the number of event loops; this file does not read it (it goes to the
//! server as it stands). Run: `cargo run --release --example bench_server`.
//!
//! Cluster mode (`scripts/bench-cluster.sh`): with `REDIS_URL` set (e.g. `redis://127.0.0.1:6379/`)
//! the server joins the cluster of the nodes on that Redis (`ServerBuilder::cluster`, prefix
//! `REDIS_PREFIX`, default `tidings`). Needs the `redis` feature (`cargo run --release --features
//! redis --example bench_server`); without it, a set `REDIS_URL` is an error. A burst asked of any
//! node then reaches the clients of every node: the burst thread broadcasts through the node's
//! `NotificationService`, which in a cluster publishes through Redis, and every node (this one
//! too) delivers what comes over the bus. `t` is still stamped before the broadcast call, so a
//! latency counts the way through Redis; a broadcast refused because the publish queue is full
//! (`ClusterUnavailable`) is tried again (the burst waits for Redis instead of dropping ticks),
//! for at most `RETRY_FOR`.

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tidings::{BroadcastError, Config, NotificationService, Server, ServerBuilder, Transport};

/// Bounds on one request, so a stray client cannot make the server loop for ever.
const MAX_COUNT: u64 = 10_000_000;
const MAX_RATE: u64 = 1_000_000;
/// `max_payload`: a larger pad could not be sent anyway.
const MAX_SIZE: u64 = 1_000_000;
/// How long one broadcast is tried again while the cluster refuses it (full queue, Redis away).
const RETRY_FOR: Duration = Duration::from_secs(10);

struct Burst {
    count: u64,
    size: usize,
    rate: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn field(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// Sends one burst. Paced bursts aim at `start + i / rate` (no drift: a late tick does not push
/// the next ones back).
fn run_burst(service: &NotificationService, b: &Burst) {
    let pad = "x".repeat(b.size);
    let start = Instant::now();
    let broadcast = service.provider(Transport::Both).broadcast();
    for i in 0..b.count {
        if let Some(ns) = i.saturating_mul(1_000_000_000).checked_div(b.rate) {
            let due = start + Duration::from_nanos(ns);
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        let data = json!({"i": i, "t": now_us(), "pad": pad});
        let first_try = Instant::now();
        loop {
            match broadcast.to_all("tick", &data) {
                Ok(_) => break,
                // Cluster mode: the publish queue is full (the burst outruns Redis) or Redis is
                // away for a moment; wait for it, as a paced sender would.
                Err(BroadcastError::ClusterUnavailable(_)) if first_try.elapsed() < RETRY_FOR => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => {
                    eprintln!("bench_server: broadcast {i} failed: {e}");
                    return;
                }
            }
        }
    }
}

/// The cluster to join: `REDIS_URL` (and `REDIS_PREFIX`) when set.
#[cfg(feature = "redis")]
fn join_cluster(builder: ServerBuilder) -> Result<ServerBuilder, Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var("REDIS_URL") else {
        return Ok(builder);
    };
    let mut cluster = tidings::ClusterConfig::new(url.clone());
    if let Ok(prefix) = std::env::var("REDIS_PREFIX") {
        cluster.prefix = prefix;
    }
    println!(
        "bench_server: cluster node on {url} (prefix {})",
        cluster.prefix
    );
    Ok(builder.cluster(cluster))
}

/// Without the `redis` feature a set `REDIS_URL` cannot be honoured: an error, not a quiet
/// standalone server (the cluster benchmark would measure the wrong thing).
#[cfg(not(feature = "redis"))]
fn join_cluster(builder: ServerBuilder) -> Result<ServerBuilder, Box<dyn std::error::Error>> {
    if std::env::var_os("REDIS_URL").is_some() {
        return Err(
            "REDIS_URL is set but bench_server was built without the `redis` feature \
                    (build it with --features redis)"
                .into(),
        );
    }
    Ok(builder)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 3000,
    };
    let config = Config {
        bind: ([127, 0, 0, 1], port).into(),
        // 10 000 receivers + the control connection, under the ~20 000 fd limit.
        max_connections: 19_000,
        ..Config::default()
    };
    let (jobs, job_rx) = mpsc::channel::<Burst>();
    let server = join_cluster(Server::builder(config))?
        .allow_anonymous()
        .on_event("/", "bench:burst", move |_, ev| {
            let req = ev.args.first().cloned().unwrap_or(Value::Null);
            let burst = Burst {
                count: field(&req, "count").min(MAX_COUNT),
                size: usize::try_from(field(&req, "size").min(MAX_SIZE)).unwrap_or(0),
                rate: field(&req, "rate").min(MAX_RATE),
            };
            let accepted = jobs.send(burst).is_ok();
            if let Some(ack) = ev.ack {
                let _ = ack.send(vec![json!({ "ok": accepted })]);
            }
        })
        .on_event("/", "bench:ack", |_, ev| {
            if let Some(ack) = ev.ack {
                let _ = ack.send(ev.args);
            }
        })
        .start()?;
    let service = NotificationService::new(server.handle());
    // Bursts run one after another on their own thread; it ends when the handler (and with it
    // the sender) is dropped at shutdown.
    std::thread::Builder::new()
        .name("bench-burst".into())
        .spawn(move || {
            for b in job_rx {
                run_burst(&service, &b);
            }
        })?;
    println!("bench_server listening on {}", server.local_addr());
    loop {
        std::thread::park();
    }
}
