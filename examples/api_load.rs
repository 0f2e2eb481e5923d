//! Load client for the gateway's publish API (`scripts/gateway-bench.sh`): `threads` keep-alive
//! connections POST sends (or batches of sends) to users `u0..u<users>` for `seconds`, and the
//! requests per second, sends per second, deliveries and latency percentiles are printed as one
//! `RESULT key=value ...` line.
//!
//! ```text
//! api_load --port P [--key K] [--threads 4] [--seconds 10] [--batch 1] [--users 10000]
//! ```
//!
//! `--batch 1` posts `/api/v1/send`; more posts `/api/v1/batch` with that many sends. 127.0.0.1
//! only; bounded by `--seconds` (and every read by a 10 s timeout).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    port: u16,
    key: String,
    threads: usize,
    seconds: u64,
    batch: usize,
    users: usize,
}

fn parse() -> Args {
    let mut a = Args {
        port: 0,
        key: String::new(),
        threads: 4,
        seconds: 10,
        batch: 1,
        users: 10_000,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < args.len() {
        let v = args[i + 1].clone();
        match args[i].as_str() {
            "--port" => a.port = v.parse().expect("--port"),
            "--key" => a.key = v,
            "--threads" => a.threads = v.parse().expect("--threads"),
            "--seconds" => a.seconds = v.parse().expect("--seconds"),
            "--batch" => a.batch = v.parse().expect("--batch"),
            "--users" => a.users = v.parse().expect("--users"),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    assert!(a.port != 0, "--port is required");
    assert!(a.threads >= 1 && a.batch >= 1 && a.users >= 1 && a.seconds <= 600);
    a
}

/// Reads one response; returns its status and body.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, Vec<u8>) {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head[9..12].parse().expect("status");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).expect("read body");
                assert!(n > 0, "closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return (status, body);
        }
        let n = s.read(&mut chunk).expect("read head");
        assert!(n > 0, "closed before the response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn main() {
    let a = Arc::new(parse());
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..a.threads)
        .map(|t| {
            let a = a.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", a.port)).expect("connect");
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let (mut requests, mut errors, mut delivered) = (0u64, 0u64, 0u64);
                let mut latencies = Vec::new();
                let mut buf = Vec::new();
                let mut n = t;
                while Instant::now() < deadline {
                    let mut sends = Vec::with_capacity(a.batch);
                    for _ in 0..a.batch {
                        n = (n + 7919) % a.users;
                        sends.push(format!(
                            r#"{{"to":{{"user":"u{n}"}},"event":"note","data":{{"n":{n},"text":"hello from the bench"}}}}"#
                        ));
                    }
                    let (path, body) = if a.batch == 1 {
                        ("/api/v1/send", sends.pop().unwrap())
                    } else {
                        ("/api/v1/batch", format!(r#"{{"sends":[{}]}}"#, sends.join(",")))
                    };
                    let auth = if a.key.is_empty() {
                        String::new()
                    } else {
                        format!("Authorization: Bearer {}\r\n", a.key)
                    };
                    let req = format!(
                        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let t0 = Instant::now();
                    s.write_all(req.as_bytes()).expect("write");
                    let (status, body) = read_response(&mut s, &mut buf);
                    latencies.push(t0.elapsed().as_micros() as u32);
                    requests += 1;
                    if status != 200 {
                        errors += 1;
                        continue;
                    }
                    // Count deliveries: every `"total":N` in the answer.
                    let text = String::from_utf8_lossy(&body);
                    for part in text.split("\"total\":").skip(1) {
                        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
                        delivered += digits.parse::<u64>().unwrap_or(0);
                    }
                }
                (requests, errors, delivered, latencies)
            })
        })
        .collect();
    let (mut requests, mut errors, mut delivered, mut lat) = (0u64, 0u64, 0u64, Vec::new());
    for w in workers {
        let (r, e, d, l) = w.join().expect("worker");
        requests += r;
        errors += e;
        delivered += d;
        lat.extend(l);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "RESULT batch={} threads={} requests={requests} errors={errors} seconds={secs:.2} requests_per_s={:.0} sends_per_s={:.0} deliveries={delivered} p50_us={} p99_us={}",
        a.batch,
        a.threads,
        requests as f64 / secs,
        (requests - errors) as f64 * a.batch as f64 / secs,
        pct(0.5),
        pct(0.99)
    );
}
