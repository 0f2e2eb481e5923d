//! Opens many idle connections to a tidings server on 127.0.0.1 and holds them, to measure what an
//! idle connection costs the server (`scripts/measure-memory.sh` reads the server's RSS around it).
//!
//! ```text
//! idle_clients --port P --count N [--mode ws|sio|sse] [--hold SECS] [--tokens FILE]
//! ```
//!
//! `--port` and `--count` are required; `--help` prints every flag with its meaning and default.
//! Modes:
//! - `sio`: Socket.IO sockets (WebSocket + CONNECT to `/` with `{"user": "u<i>"}`),
//! - `sse`: SSE streams on `/events?user=u<i>`,
//! - `ws`: raw Engine.IO WebSocket sessions on `/engine.io/` (only on a server with
//!   `Config::engineio_path` set, such as `examples/interop.rs`).
//!
//! Example: `PORT=3000 cargo run --release --example demo` in one shell, then
//! `cargo run --release --example idle_clients -- --mode sio --port 3000 --count 1000 --hold 10`.
//!
//! 127.0.0.1 only; bounded by `--count`, `--hold` and a 5 s timeout on every connect and read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Most connections one run may open (file descriptors run out long before on most machines).
const MAX_COUNT: usize = 100_000;
/// Longest hold: one day.
const MAX_HOLD_SECS: u64 = 86_400;
/// Timeout of every connect and every read of a response.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

const USAGE: &str = "\
idle_clients: opens N idle connections to a tidings server and holds them, to measure what an
idle connection costs the server (read the server's RSS before and while they are held, as
scripts/measure-memory.sh does). Connects to 127.0.0.1 only; the host cannot be changed.

Usage: idle_clients --port P --count N [--mode ws|sio|sse] [--hold SECS] [--tokens FILE]

  --port P       TCP port of the server on 127.0.0.1 (1-65535). Required.
  --count N      connections to open, one after another (1-100000). Required.
  --mode MODE    what every connection is (default: sio):
                   sio  Socket.IO over WebSocket on /socket.io/, CONNECT to / with
                        {\"user\": \"u<i>\"}
                   sse  an SSE stream on /events?user=u<i>
                   ws   a raw Engine.IO WebSocket session on /engine.io/ (only on servers with
                        Config::engineio_path set, e.g. examples/interop.rs)
  --hold SECS    how long to hold them open once all are open, in seconds (0-86400;
                 default: 10)
  --tokens FILE  sio only: one token per line; connection i sends {\"token\": <line i>} in its
                 CONNECT instead (for a server that verifies JWTs, e.g. tidings-gateway; see
                 scripts/gateway-bench.sh). Default: none
  -h, --help     print this text and exit

Prints one line `N MODE connections open in T; holding SECS s` once every connection is open,
then exits after the hold. Exit status: 0 done, 1 a connection failed, 2 bad arguments.

Example (the demo server, then 1000 Socket.IO clients held for 10 s):
  PORT=3000 cargo run --release --example demo
  cargo run --release --example idle_clients -- --mode sio --port 3000 --count 1000 --hold 10
";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Ws,
    Sio,
    Sse,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Ws => "ws",
            Mode::Sio => "sio",
            Mode::Sse => "sse",
        }
    }
}

struct Args {
    mode: Mode,
    port: u16,
    count: usize,
    hold: Duration,
    /// CONNECT tokens, one per connection (`--tokens`).
    tokens: Vec<String>,
}

/// What the command line asks for: a run, or the usage text.
enum Parsed {
    Run(Args),
    Help,
}

/// An unsigned number in `lo..=hi`, or a one-line message naming `what`.
fn number(what: &str, v: &str, lo: u64, hi: u64) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(format!("{what} {v:?}: expected a number {lo}-{hi}")),
    }
}

/// `Err` is a one-line message about the first bad argument.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut mode = Mode::Sio;
    let mut port: Option<u16> = None;
    let mut count: Option<usize> = None;
    let mut hold = Duration::from_secs(10);
    let mut tokens = Vec::new();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(Parsed::Help);
        }
        if !matches!(
            flag.as_str(),
            "--mode" | "--port" | "--count" | "--hold" | "--tokens"
        ) {
            return Err(format!("unknown argument {flag:?}"));
        }
        let val = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--mode" => {
                mode = match val.as_str() {
                    "ws" => Mode::Ws,
                    "sio" => Mode::Sio,
                    "sse" => Mode::Sse,
                    _ => return Err(format!("--mode {val:?}: expected ws, sio or sse")),
                }
            }
            "--port" => {
                let p = number("--port", &val, 1, u64::from(u16::MAX))?;
                port = u16::try_from(p).ok();
            }
            "--tokens" => {
                tokens = std::fs::read_to_string(&val)
                    .map_err(|e| format!("--tokens {val:?}: {e}"))?
                    .lines()
                    .map(str::to_string)
                    .collect();
            }
            "--count" => {
                let n = number("--count", &val, 1, MAX_COUNT as u64)?;
                count = usize::try_from(n).ok();
            }
            _ => hold = Duration::from_secs(number("--hold", &val, 0, MAX_HOLD_SECS)?),
        }
    }
    match (port, count) {
        (Some(port), Some(count)) => Ok(Parsed::Run(Args {
            mode,
            port,
            count,
            hold,
            tokens,
        })),
        (None, _) => Err("--port is required".into()),
        (_, None) => Err("--count is required".into()),
    }
}

/// A masked client text frame (RFC 6455 §5.3: client frames must be masked); `payload` is under
/// 64 KiB (a 7-bit or 16-bit length; longer payloads are cut there).
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    let payload = payload.get(..usize::from(len)).unwrap_or(payload);
    let mut f = vec![0x81u8];
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

/// Opens connection number `i` and waits for the server's response head.
fn open(args: &Args, i: usize) -> Result<TcpStream, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("connection {i}: connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| format!("connection {i}: {e}"))?;
    let (req, want) = match args.mode {
        Mode::Sse => (
            format!(
                "GET /events?user=u{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
            ),
            "HTTP/1.1 200",
        ),
        Mode::Ws | Mode::Sio => {
            let p = if args.mode == Mode::Ws {
                "/engine.io/"
            } else {
                "/socket.io/"
            };
            (
                format!(
                    "GET {p}?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ),
                "HTTP/1.1 101",
            )
        }
    };
    s.write_all(req.as_bytes())
        .map_err(|e| format!("connection {i}: {e}"))?;
    // Wait for the response head (and the open packet) so the connection is fully set up.
    let mut buf = [0u8; 1024];
    let n = s
        .read(&mut buf)
        .map_err(|e| format!("connection {i}: no response: {e}"))?;
    let got = buf.get(..n).unwrap_or_default();
    if n == 0 {
        return Err(format!("connection {i} closed by the server"));
    }
    if !got.starts_with(want.as_bytes()) {
        let line = String::from_utf8_lossy(got);
        let line = line.lines().next().unwrap_or_default();
        let hint = if args.mode == Mode::Ws {
            " (--mode ws needs a server with Config::engineio_path, e.g. examples/interop.rs)"
        } else {
            ""
        };
        return Err(format!(
            "connection {i}: expected {want}, got {line:?}{hint}"
        ));
    }
    if args.mode == Mode::Sio {
        let connect = match args.tokens.get(i) {
            Some(t) => format!("40{{\"token\":\"{t}\"}}"),
            None => format!("40{{\"user\":\"u{i}\"}}"),
        };
        s.write_all(&masked_text(connect.as_bytes()))
            .map_err(|e| format!("connection {i}: {e}"))?;
    }
    Ok(s)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    }
    let args = match parse_args(argv) {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("idle_clients: {e}; see --help");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let mut conns = Vec::with_capacity(args.count);
    for i in 0..args.count {
        match open(&args, i) {
            Ok(s) => conns.push(s),
            Err(e) => {
                eprintln!("idle_clients: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "{} {} connections open in {:?}; holding {} s",
        conns.len(),
        args.mode.name(),
        started.elapsed(),
        args.hold.as_secs()
    );
    std::thread::sleep(args.hold);
    ExitCode::SUCCESS
}
