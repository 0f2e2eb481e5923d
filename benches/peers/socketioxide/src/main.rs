//! socketioxide as a peer of `scripts/bench-peers.sh` (fan-out, latency and memory of tidings next
//! to its peers): the same contract as `examples/bench_server.rs`. Socket.IO on `/socket.io/` over
//! axum, 127.0.0.1:$PORT, default settings except `max_buffer_size` (see below).
//!
//! `WORKERS` (default: the machine's cores): 1 runs everything on one thread (tokio's
//! `current_thread` runtime: accept loop, connections, bursts), N > 1 a `multi_thread` runtime
//! with N workers (the accept loop runs on them too).
//!
//! Client event `bench:burst {count, size, rate}`: broadcast `count` `tick` events to every socket
//! with `{i, t, pad}` — `t` the send time in µs since the UNIX epoch, `pad` "x" × size. rate 0:
//! back to back; otherwise `rate` broadcasts per second aimed at start + i/rate (no drift). The
//! work runs on its own task (one burst after another), never in the handler; the ack answers
//! `{"ok": true}` at once.
//!
//! Client event `bench:ack ARG` with an ack: the handler answers at once with `ARG` (socketioxide
//! handlers are async: each event is a spawned task).
//!
//! Cluster mode (`scripts/bench-cluster.sh`): built with the `redis` feature (socketioxide-redis,
//! the Redis adapter) and run with `REDIS_URL` set, the server shares its broadcasts with every
//! other node on that Redis (RESP3 is asked for: `?protocol=resp3` is added to the URL unless it
//! names a protocol). A set `REDIS_URL` without the feature is an error.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::layer::SocketIoLayer;
use socketioxide::SocketIo;
use tokio::sync::mpsc;

const MAX_COUNT: u64 = 10_000_000;
const MAX_RATE: u64 = 1_000_000;
const MAX_SIZE: u64 = 1_000_000;
/// socketioxide queues at most `max_buffer_size` packets per socket and fails the emit for a socket
/// whose queue is full (default 128): a full-speed burst of 1 000 broadcasts would lose most of
/// them. Raised so the burst is queued, as tidings (bytes cap) and node (unbounded) do.
const MAX_BUFFER: usize = 16_384;

#[derive(Deserialize, Default)]
struct Burst {
    #[serde(default)]
    count: u64,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    rate: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn run_burst<A: Adapter>(io: &SocketIo<A>, b: Burst) {
    let pad = "x".repeat(b.size.min(MAX_SIZE) as usize);
    let (count, rate) = (b.count.min(MAX_COUNT), b.rate.min(MAX_RATE));
    let start = tokio::time::Instant::now();
    let mut failed = 0u64;
    for i in 0..count {
        if let Some(ns) = i.saturating_mul(1_000_000_000).checked_div(rate) {
            let due = start + Duration::from_nanos(ns);
            tokio::time::sleep_until(due).await;
        }
        let data = json!({"i": i, "t": now_us(), "pad": pad});
        if io.emit("tick", &data).await.is_err() {
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("socketioxide peer: {failed} of {count} broadcasts failed for some sockets");
    }
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), AnyError> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 3000,
    };
    let workers: usize = match std::env::var("WORKERS") {
        Ok(w) => w
            .parse()
            .ok()
            .filter(|&w| (1..=256).contains(&w))
            .ok_or(format!("WORKERS {w:?}: expected 1 to 256"))?,
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    println!("socketioxide peer: {workers} worker thread(s)");
    // Spawned, so that on a multi-thread runtime the accept loop runs on a worker too.
    rt.block_on(async move { tokio::spawn(serve(port)).await? })
}

type Jobs = mpsc::UnboundedSender<Burst>;

/// The bursts, one after another on their own task.
fn burst_task<A: Adapter>(io: &SocketIo<A>) -> Jobs {
    let (jobs, mut job_rx) = mpsc::unbounded_channel::<Burst>();
    let io = io.clone();
    tokio::spawn(async move {
        while let Some(b) = job_rx.recv().await {
            run_burst(&io, b).await;
        }
    });
    jobs
}

/// The contract's two events on a new socket.
fn on_connect<A: Adapter>(s: SocketRef<A>, jobs: Jobs) {
    s.on(
        "bench:burst",
        async move |Data(req): Data<Burst>, ack: AckSender<A>| {
            let ok = jobs.send(req).is_ok();
            let _ = ack.send(&json!({ "ok": ok }));
        },
    );
    s.on(
        "bench:ack",
        async |Data(arg): Data<Value>, ack: AckSender<A>| {
            let _ = ack.send(&arg);
        },
    );
}

async fn serve(port: u16) -> Result<(), AnyError> {
    #[cfg(feature = "redis")]
    if let Ok(url) = std::env::var("REDIS_URL") {
        use socketioxide_redis::drivers::redis::redis_client;
        use socketioxide_redis::{RedisAdapter, RedisAdapterCtr};
        let url = if url.contains("protocol=") {
            url
        } else {
            format!(
                "{url}{}protocol=resp3",
                if url.contains('?') { '&' } else { '?' }
            )
        };
        let client = redis_client::Client::open(url.as_str())?;
        let adapter = RedisAdapterCtr::new_with_redis(&client).await?;
        let (layer, io) = SocketIo::builder()
            .max_buffer_size(MAX_BUFFER)
            .with_adapter::<RedisAdapter<_>>(adapter)
            .build_layer();
        let jobs = burst_task(&io);
        io.ns("/", async move |s: SocketRef<RedisAdapter<_>>| {
            on_connect(s, jobs.clone())
        })
        .await?;
        println!("socketioxide peer: cluster node on {url}");
        return listen(port, layer).await;
    }
    #[cfg(not(feature = "redis"))]
    if std::env::var_os("REDIS_URL").is_some() {
        return Err("REDIS_URL is set but the peer was built without the `redis` feature".into());
    }
    let (layer, io) = SocketIo::builder()
        .max_buffer_size(MAX_BUFFER)
        .build_layer();
    let jobs = burst_task(&io);
    io.ns("/", async move |s: SocketRef| on_connect(s, jobs.clone()));
    listen(port, layer).await
}

async fn listen<A: Adapter>(port: u16, layer: SocketIoLayer<A>) -> Result<(), AnyError> {
    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("socketioxide peer listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
