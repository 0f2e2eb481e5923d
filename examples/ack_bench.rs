//! Benchmark of the ack path: Socket.IO clients emit with an ack, the server's handler answers
//! it; how many round trips per second, and the server's CPU per ack.
//!
//! A measurement, never a test: it prints numbers and asserts none.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tidings::{Config, Server};
use tungstenite::{Message, WebSocket};

#[path = "tools/flags.rs"]
mod flags;

const USAGE: &str = "\
ack_bench: measures acks per second on an in-process tidings server on 127.0.0.1 (an ephemeral
port): C client threads, each with one Socket.IO connection keeping W emits-with-ack in flight,
for S seconds; the server's handler answers every ack at once.

Usage: ack_bench --clients C --window W --seconds S

  --clients C    client connections, one thread each (1-256). Required.
  --window W     emits in flight per connection (1-1000). Required.
  --seconds S    how long to run (1-600). Required.
  -h, --help     print this text and exit

Prints `ACKS clients=C window=W acks_per_s=… cpu_us_per_ack=…` (the CPU of the whole process,
clients included, from /proc/self/stat: an upper bound for the server's share).

Example:
  cargo run --release --example ack_bench -- --clients 8 --window 32 --seconds 5
";

fn parse() -> Result<Option<(usize, usize, u64)>, String> {
    let Some(pairs) = flags::pairs()? else {
        return Ok(None);
    };
    let (mut c, mut w, mut s) = (None, None, None);
    for (flag, v) in pairs {
        let num = |max| flags::number(&flag, &v, max);
        match flag.as_str() {
            "--clients" => c = Some(num(256)? as usize),
            "--window" => w = Some(num(1000)? as usize),
            "--seconds" => s = Some(num(600)?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Some((
        c.ok_or("--clients is required")?,
        w.ok_or("--window is required")?,
        s.ok_or("--seconds is required")?,
    )))
}

/// User plus system CPU time of this process, in microseconds.
fn cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of stat (utime, stime), here at 11 and 12 after the command name.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks * 10_000
}

fn client(addr: SocketAddr, window: usize, stop: Arc<AtomicBool>, acks: Arc<AtomicU64>) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _): (WebSocket<TcpStream>, _) =
        tungstenite::client(url.as_str(), stream).expect("handshake");
    let read_text = |ws: &mut WebSocket<TcpStream>| loop {
        match ws.read().expect("read") {
            Message::Text(t) if t.as_str() == "2" => ws.send(Message::text("3")).expect("pong"),
            Message::Text(t) => return t.to_string(),
            _ => {}
        }
    };
    let _open = read_text(&mut ws);
    ws.send(Message::text("40")).expect("connect");
    let _connected = read_text(&mut ws);
    let mut next_id: u64 = 0;
    let mut in_flight = 0usize;
    while !stop.load(Ordering::Relaxed) {
        while in_flight < window {
            ws.write(Message::text(format!("42{next_id}[\"ask\",1]")))
                .expect("write");
            next_id += 1;
            in_flight += 1;
        }
        ws.flush().expect("flush");
        let answer = read_text(&mut ws);
        if answer.starts_with("43") {
            in_flight -= 1;
            acks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn main() {
    let (clients, window, seconds) = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            std::process::exit(if std::env::args().len() > 1 { 0 } else { 2 });
        }
        Err(e) => {
            eprintln!("ack_bench: {e}; see --help");
            std::process::exit(2);
        }
    };
    let server = Server::builder(Config {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    })
    .allow_anonymous()
    .on_event("/", "ask", |_, ev| {
        if let Some(ack) = ev.ack {
            let _ = ack.send(vec![json!("ok")]);
        }
    })
    .start()
    .expect("server starts");
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, acks) = (stop.clone(), acks.clone());
            std::thread::spawn(move || client(addr, window, stop, acks))
        })
        .collect();
    // Warm up, then measure.
    std::thread::sleep(Duration::from_millis(500));
    let (a0, c0, t0) = (acks.load(Ordering::Relaxed), cpu_us(), Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    let (a1, c1, took) = (acks.load(Ordering::Relaxed), cpu_us(), t0.elapsed());
    stop.store(true, Ordering::Relaxed);
    let n = a1 - a0;
    println!(
        "ACKS clients={clients} window={window} acks_per_s={:.0} cpu_us_per_ack={:.2}",
        n as f64 / took.as_secs_f64(),
        (c1 - c0) as f64 / n.max(1) as f64
    );
    for t in threads {
        let _ = t.join();
    }
}
