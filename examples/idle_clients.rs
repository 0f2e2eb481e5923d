//! Opens many idle connections to a tidings server and holds them, to measure what an idle
//! connection costs the server (`scripts/measure-memory.sh` reads the server's RSS around it).
//!
//! `cargo run --release --example idle_clients -- <ws|sio|sse|poll-none> <count> <port> <hold-seconds>`
//!
//! - `ws`: Engine.IO WebSocket sessions on `/engine.io/` (raw),
//! - `sio`: Socket.IO sockets (WebSocket + CONNECT to `/` with `{"user": "u<i>"}`),
//! - `sse`: SSE streams on `/events?user=u<i>`.
//!
//! With `IDLE_TOKENS=<file>` (one token per line), Socket.IO connection `i` sends
//! `{"token": <line i>}` instead (for a gateway that verifies JWTs; `scripts/gateway-bench.sh`).
//!
//! 127.0.0.1 only; bounded by `count` and `hold-seconds`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A masked client text frame (RFC 6455 §5.3: client frames must be masked).
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = vec![0x81u8];
    // CONNECT payloads are small: a 7-bit or 16-bit length (longer ones are cut at 64 KiB).
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    let payload = payload.get(..usize::from(len)).unwrap_or(payload);
    if len < 126 {
        f.push(0x80 | len as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&len.to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    f
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("sio").to_string();
    let count: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let port: u16 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3000);
    let hold: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let tokens: Vec<String> = match std::env::var("IDLE_TOKENS") {
        Ok(path) => std::fs::read_to_string(path)?
            .lines()
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    };
    let started = Instant::now();
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let req = match mode.as_str() {
            "sse" => format!("GET /events?user=u{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"),
            path => {
                let p = if path == "ws" { "/engine.io/" } else { "/socket.io/" };
                format!(
                    "GET {p}?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                )
            }
        };
        s.write_all(req.as_bytes())?;
        // Wait for the response head (and the open packet) so the connection is fully set up.
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(format!("connection {i} closed by the server").into());
        }
        if mode == "sio" {
            let connect = match tokens.get(i) {
                Some(t) => format!("40{{\"token\":\"{t}\"}}"),
                None => format!("40{{\"user\":\"u{i}\"}}"),
            };
            s.write_all(&masked_text(connect.as_bytes()))?;
        }
        conns.push(s);
    }
    println!(
        "{} {mode} connections open in {:?}; holding {hold} s",
        conns.len(),
        started.elapsed()
    );
    std::thread::sleep(Duration::from_secs(hold));
    Ok(())
}
