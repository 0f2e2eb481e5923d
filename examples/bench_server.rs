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

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tidings::{Config, NotificationService, Server, Transport};

/// Bounds on one request, so a stray client cannot make the server loop for ever.
const MAX_COUNT: u64 = 10_000_000;
const MAX_RATE: u64 = 1_000_000;
/// `max_payload`: a larger pad could not be sent anyway.
const MAX_SIZE: u64 = 1_000_000;

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
        if let Err(e) = broadcast.to_all("tick", &data) {
            eprintln!("bench_server: broadcast {i} failed: {e}");
            return;
        }
    }
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
    let server = Server::builder(config)
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
