//! Benchmark of Socket.IO connection state recovery: what a session waiting for its client costs
//! the server, and how fast a recovered session gets its missed events.
//!
//! A measurement, never a test: it prints numbers and asserts none.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidings::{Config, Identity, NotificationService, Recovery, Server, Transport};
use tungstenite::{Message, WebSocket};

#[path = "tools/flags.rs"]
mod flags;

const USAGE: &str = "\
recovery_bench: measures Socket.IO connection state recovery on an in-process tidings server on
127.0.0.1 (an ephemeral port): the memory a parked session (waiting for its client) costs, and
the replay rate of a recovered session.

Usage: recovery_bench --sessions N --events M

  --sessions N   sessions to park for the memory figure (1-100000). Required.
  --events M     events sent to one user while its session is parked, then replayed
                 (1-1000000; at most the history's 10 000 events by default, so more than that
                 gives a fresh session and is reported as such). Required.
  -h, --help     print this text and exit

Memory: two child processes each open N Socket.IO sessions and close their connections, one
with recovery off and one with it on (then the N sessions wait, parked); the difference of their
RSS growth, divided by N, is what a waiting session costs.

Example:
  cargo run --release --example recovery_bench -- --sessions 10000 --events 10000
";

struct Args {
    sessions: usize,
    events: usize,
    phase: Option<bool>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let Some(pairs) = flags::pairs()? else {
        return Ok(None);
    };
    let (mut sessions, mut events, mut phase) = (None, None, None);
    for (flag, value) in pairs {
        let num = |max| flags::number(&flag, &value, max).map(|n| n as usize);
        match flag.as_str() {
            "--sessions" => sessions = Some(num(100_000)?),
            "--events" => events = Some(num(1_000_000)?),
            // Internal: a child process measuring one side of the memory figure.
            "--phase" => phase = Some(value == "on"),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Some(Args {
        sessions: sessions.ok_or("--sessions is required")?,
        events: events.ok_or("--events is required")?,
        phase,
    }))
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn server(recovery: bool) -> Server {
    let config = Config {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        max_connections: 200_000,
        connection_state_recovery: recovery.then(|| Recovery {
            max_disconnection_duration: Duration::from_secs(600),
            ..Recovery::default()
        }),
        ..Config::default()
    };
    Server::builder(config)
        .authenticate(|req| {
            let user = req.auth.and_then(|a| a.get("user")).and_then(Value::as_str);
            Ok(user.map(|u| Identity::new("bench", u)))
        })
        .start()
        .expect("server starts")
}

/// A Socket.IO client over a blocking WebSocket.
struct Client {
    ws: WebSocket<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr, auth: &Value) -> (Client, Value) {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("websocket handshake");
        let mut c = Client { ws };
        let open = c.text();
        assert!(open.starts_with('0'), "{open}");
        c.ws.send(Message::text(format!("40{auth}"))).expect("send");
        let reply = c.text();
        let body: Value =
            serde_json::from_str(reply.strip_prefix("40").expect("CONNECT")).expect("CONNECT JSON");
        (c, body)
    }

    /// The next text message; pings are answered on the way.
    fn text(&mut self) -> String {
        loop {
            match self.ws.read().expect("read") {
                Message::Text(t) if t.as_str() == "2" => {
                    self.ws.send(Message::text("3")).expect("pong");
                }
                Message::Text(t) => return t.to_string(),
                _ => {}
            }
        }
    }

    /// Drops the TCP connection without a Socket.IO disconnect (a phone losing its network).
    fn kill(self) {
        let mut stream = self.ws.into_inner();
        let _ = stream.flush();
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    }
}

/// One side of the memory figure: RSS growth after N sessions opened and their connections lost.
fn phase(recovery: bool, n: usize) {
    let server = server(recovery);
    let addr = server.local_addr();
    let handle = server.handle();
    let before = rss_kib();
    for i in 0..n {
        let (c, _) = Client::connect(addr, &json!({ "user": format!("u{i}") }));
        c.kill();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while handle.stats().map(|s| s.sio_sockets).unwrap_or(0) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let stats = handle.stats().expect("stats");
    println!(
        "PHASE recovery={recovery} growth_kib={} parked={}",
        rss_kib().saturating_sub(before),
        stats.parked_sockets
    );
}

fn memory(n: usize) -> Option<(f64, u64, u64)> {
    let exe = std::env::current_exe().ok()?;
    let mut growth = [0u64; 2];
    for (k, side) in ["off", "on"].iter().enumerate() {
        let out = std::process::Command::new(&exe)
            .args([
                "--sessions",
                &n.to_string(),
                "--events",
                "1",
                "--phase",
                side,
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        growth[k] = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("growth_kib="))
            .and_then(|v| v.parse().ok())?;
    }
    let per = (growth[1] as f64 - growth[0] as f64) * 1024.0 / n as f64;
    Some((per, growth[0], growth[1]))
}

/// Replay rate: one parked session, M events to its user during the gap, then the reconnect.
fn replay(m: usize) {
    let server = server(true);
    let addr = server.local_addr();
    let service = NotificationService::new(server.handle());
    let (mut c, body) = Client::connect(addr, &json!({"user": "phone"}));
    let pid = body["pid"].as_str().expect("pid").to_string();
    let sid = body["sid"].as_str().expect("sid").to_string();
    let phone = Identity::new("bench", "phone");
    service
        .broadcast_to_user(Transport::SocketIo, &phone, "tick", &json!(0))
        .expect("send");
    let first = c.text();
    let v: Value = serde_json::from_str(first.strip_prefix("42").expect("event")).expect("JSON");
    let offset = v[2].as_str().expect("offset").to_string();
    c.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server
        .handle()
        .stats()
        .map(|s| s.parked_sockets)
        .unwrap_or(0)
        == 0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let payload = json!({"seq": 1, "at": "2026-12-02T00:00:00Z", "text": "a missed event"});
    for _ in 0..m {
        service
            .broadcast_to_user(Transport::SocketIo, &phone, "tick", &payload)
            .expect("send");
    }
    let started = Instant::now();
    let (mut c, body) = Client::connect(
        addr,
        &json!({"user": "phone", "pid": pid, "offset": offset}),
    );
    if body["sid"].as_str() != Some(sid.as_str()) {
        println!("REPLAY events={m} fresh-session (the gap is larger than the history)");
        return;
    }
    for _ in 0..m {
        c.text();
    }
    let took = started.elapsed();
    println!(
        "REPLAY events={m} took_ms={:.1} events_per_s={:.0}",
        took.as_secs_f64() * 1000.0,
        m as f64 / took.as_secs_f64()
    );
}

fn main() {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            std::process::exit(if std::env::args().len() > 1 { 0 } else { 2 });
        }
        Err(e) => {
            eprintln!("recovery_bench: {e}; see --help");
            std::process::exit(2);
        }
    };
    if let Some(on) = args.phase {
        return phase(on, args.sessions);
    }
    match memory(args.sessions) {
        Some((per, off, on)) => println!(
            "MEMORY sessions={} growth_off_kib={off} growth_on_kib={on} per_parked_session_bytes={per:.0}",
            args.sessions
        ),
        None => println!("MEMORY could not run the child processes"),
    }
    replay(args.events);
}
