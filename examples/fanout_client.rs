//! Load client of the peer benchmark (`scripts/bench-peers.sh`, which compares tidings with the
//! official Node socket.io server and socketioxide): N raw Socket.IO connections over WebSocket
//! (or N SSE streams) on one mio thread, one control connection that asks the server for
//! `bench:burst` runs, and the numbers: deliveries per second, delivery latency (p50 / p99 / max,
//! from the `t` the server stamps into each `tick`, same machine clock), the first delivery of a
//! run (from the server's first send, the smallest `t`, to the first receipt), lost messages, and
//! — given the server's pid — its RSS growth per idle connection and its CPU time per delivered
//! message (from `/proc/<pid>/status` and `/proc/<pid>/stat`). Then, with `--acks`, an ack phase:
//! some receivers emit `bench:ack` with an ack, a window of them in flight each, while all stay
//! connected; acks per second and server CPU per ack.
//!
//! ```text
//! fanout_client --port P --clients N [--proto sio|sse] [--server-pid PID] [--label NAME]
//!               [--hold SECS] [--run NAME:COUNT:SIZE:RATE]... [--acks SENDERS:WINDOW:SECS]
//!               [--deadline SECS] [--listen-only] [--redis-port P]
//! ```
//!
//! Cluster runs (`scripts/bench-cluster.sh`): one process per node, all with the same `--run`s;
//! only one of them asks for the bursts, the others (`--listen-only`) open no control connection
//! and just receive and count each run's ticks (a run starts at its first tick). `--redis-port`
//! adds what Redis received and sent (and its CPU time) over each run, from its `INFO`.
//!
//! `--port` and `--clients` are required; `--help` prints every flag with its meaning and default.
//! Works against any server with the `bench:burst {count, size, rate}` and `bench:ack` contract
//! (see `examples/bench_server.rs`). Prints `IDLE ...`, `RESULT ...` and `ACKS ...` lines of
//! `key=value` pairs for the script. A run named `warmup` is executed but not reported. 127.0.0.1 only; every phase is
//! bounded in time and the whole process by `--deadline` (default 300 s).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// A server frame larger than this is treated as a protocol error (ticks are ~100 bytes).
const MAX_FRAME: u64 = 16 << 20;
/// A response head larger than this is treated as a protocol error.
const MAX_HEAD: usize = 16 * 1024;
/// Handshakes in flight at once (keeps the servers' listen backlogs from overflowing).
const PARALLEL_CONNECTS: usize = 128;
/// Attempts per receiver before it is given up.
const CONNECT_ATTEMPTS: u32 = 5;
/// A run ends when nothing has arrived for this long after its last scheduled send.
const QUIET: Duration = Duration::from_secs(5);
/// The same for `--listen-only`: shorter than the asking client's pause between runs, so that a
/// listener that lost ticks is waiting for the next run before its first tick comes.
const LISTEN_QUIET: Duration = Duration::from_millis(500);
/// The asking client's pause between runs.
const PAUSE: Duration = Duration::from_secs(1);
/// Most latency samples kept per run (4 bytes each).
const MAX_SAMPLES: usize = 20_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    Sio,
    Sse,
}

/// `--acks SENDERS:WINDOW:SECS`: the ack phase.
#[derive(Clone, Copy, Debug)]
struct AckSpec {
    senders: usize,
    window: usize,
    secs: u64,
}

/// Longest ack phase, in seconds; most emits one sender keeps in flight.
const MAX_ACK_SECS: u64 = 600;
const MAX_ACK_WINDOW: u64 = 1000;
/// Ack traffic before the ack phase is measured, and the longest wait for the last answers.
const ACK_WARMUP: Duration = Duration::from_secs(1);
const ACK_DRAIN: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
struct Run {
    name: String,
    count: u64,
    size: u64,
    rate: u64,
}

/// Most receivers (each one is a file descriptor here and one on the server).
const MAX_CLIENTS: usize = 19_000;
/// Longest `--hold` and `--deadline`: one hour.
const MAX_SECS: u64 = 3600;

const USAGE: &str = "\
fanout_client: the load client of scripts/bench-peers.sh. Opens N receivers (Socket.IO over
WebSocket, or SSE streams) to a server with the `bench:burst {count, size, rate}` contract (see
examples/bench_server.rs), holds them idle, then asks for each --run over one extra Socket.IO
control connection and measures deliveries/s, latency (p50/p99/max from the `t` stamped into each
`tick`), the first delivery, losses and, with --server-pid, the server's RSS per idle connection
and CPU per message; then, with --acks, ack round trips per second (and CPU per ack).
Connects to 127.0.0.1 only; the host cannot be changed.

Usage: fanout_client --port P --clients N [--proto sio|sse] [--server-pid PID] [--label NAME]
                     [--hold SECS] [--run NAME:COUNT:SIZE:RATE]... [--acks SENDERS:WINDOW:SECS]
                     [--deadline SECS] [--listen-only] [--redis-port P]

  --port P          TCP port of the server on 127.0.0.1 (1-65535). Required.
  --clients N       receivers to open (1-19000). Required.
  --proto PROTO     what the receivers are (default: sio):
                      sio  Socket.IO over WebSocket on /socket.io/, CONNECT to /
                      sse  SSE streams on /events
                    (the control connection is always Socket.IO)
  --server-pid PID  the server's process id: read its RSS (VmRSS, VmHWM) and CPU time from
                    /proc/PID to report bytes per idle connection and CPU per delivery
                    (default: none, those figures are left out)
  --label NAME      name of the server in the output lines (default: server)
  --hold SECS       how long the receivers stay idle before the server's RSS is read
                    (0-3600; default: 3)
  --run NAME:COUNT:SIZE:RATE
                    one `bench:burst` run, repeatable, done in order: COUNT broadcasts of a
                    `tick` padded with SIZE bytes, RATE broadcasts per second (0: full speed).
                    A run named `warmup` is done but not reported. (default: no run; only the
                    connect and idle phases)
  --acks SENDERS:WINDOW:SECS
                    after the runs, the ack phase (sio only): the first SENDERS receivers (1-19000)
                    each keep WINDOW (1-1000) `bench:ack` emits with an ack in flight, a new one
                    per answer, for SECS seconds (1-600) after a 1 s warm-up, while every receiver
                    stays connected; the servers answer with the emit's argument (the id), which
                    is checked. Then up to 5 s for the answers still due. (default: no ack phase)
  --deadline SECS   bound on the whole process, in seconds (1-3600; default: 300)
  --listen-only     no control connection, no `bench:burst` of its own: for each --run, wait
                    (up to the deadline) for the first tick of a burst that another client asks
                    for (a cluster: its receivers are on another node of the same cluster), then
                    count the run as usual; it ends after 0.5 s without a tick (not 5 s), and the
                    next run's wait begins at once. Server CPU is read from the start of the wait.
                    (default: off, this client asks for every run)
  --redis-port P    a Redis on 127.0.0.1:P: RESULT gets the bytes it received and sent
                    (total_net_input_bytes, total_net_output_bytes), its CPU time and the
                    connections it accepted over the run (to 1 s after it), from INFO, less what
                    the INFO calls themselves cost (default: none)
  -h, --help        print this text and exit

Prints `IDLE key=value...` after the idle phase (with --server-pid), one `RESULT key=value...`
line per reported run and one `ACKS key=value...` line for the ack phase. In RESULT, first_ms runs
from the server's first send (the smallest `t` of the run's ticks) to the first receipt by any
receiver, first_req_ms from the client's request to that receipt. In ACKS, lost counts emits never
answered (dropped connections included), mismatched answers with an unknown id or another argument.
RESULT also has start_us (the request's wall clock, µs since the epoch; --listen-only: the server's
first send) and last_us (the last receipt), so that the runs of several clients can be added up,
and tick_bytes (the mean size of a received tick: Socket.IO packet, or SSE data line).
Exit status: 0 done, 1 the control connection failed, 2 bad arguments.

Example (the benchmark server, then 1000 Socket.IO receivers, one burst, one paced run and
64 of them keeping 16 acks in flight for 5 s):
  PORT=3000 cargo run --release --example bench_server
  cargo run --release --example fanout_client -- --proto sio --port 3000 --clients 1000 \\
      --run warmup:20:64:0 --run burst:1000:64:0 --run paced:200:64:20 --acks 64:16:5
";

struct Args {
    proto: Proto,
    port: u16,
    clients: usize,
    server_pid: Option<u32>,
    label: String,
    hold: Duration,
    runs: Vec<Run>,
    acks: Option<AckSpec>,
    deadline: Duration,
    listen_only: bool,
    redis_port: Option<u16>,
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

/// `NAME:COUNT:SIZE:RATE`.
fn parse_run(v: &str) -> Result<Run, String> {
    let bad = || format!("--run {v:?}: expected NAME:COUNT:SIZE:RATE, e.g. burst:1000:64:0");
    let mut p = v.split(':');
    let (Some(name), Some(count), Some(size), Some(rate), None) =
        (p.next(), p.next(), p.next(), p.next(), p.next())
    else {
        return Err(bad());
    };
    if name.is_empty() {
        return Err(bad());
    }
    // The same bounds as examples/bench_server.rs enforces.
    Ok(Run {
        name: name.to_string(),
        count: number("--run COUNT", count, 0, 10_000_000)?,
        size: number("--run SIZE", size, 0, 1_000_000)?,
        rate: number("--run RATE", rate, 0, 1_000_000)?,
    })
}

/// `SENDERS:WINDOW:SECS`.
fn parse_acks(v: &str) -> Result<AckSpec, String> {
    let bad = || format!("--acks {v:?}: expected SENDERS:WINDOW:SECS, e.g. 256:16:10");
    let mut p = v.split(':');
    let (Some(senders), Some(window), Some(secs), None) = (p.next(), p.next(), p.next(), p.next())
    else {
        return Err(bad());
    };
    Ok(AckSpec {
        senders: number("--acks SENDERS", senders, 1, MAX_CLIENTS as u64)? as usize,
        window: number("--acks WINDOW", window, 1, MAX_ACK_WINDOW)? as usize,
        secs: number("--acks SECS", secs, 1, MAX_ACK_SECS)?,
    })
}

/// `Err` is a one-line message about the first bad argument.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut port: Option<u16> = None;
    let mut clients: Option<usize> = None;
    let mut a = Args {
        proto: Proto::Sio,
        port: 0,
        clients: 0,
        server_pid: None,
        label: "server".into(),
        hold: Duration::from_secs(3),
        runs: Vec::new(),
        acks: None,
        deadline: Duration::from_secs(300),
        listen_only: false,
        redis_port: None,
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(Parsed::Help);
        }
        if flag == "--listen-only" {
            a.listen_only = true;
            continue;
        }
        let known = [
            "--proto",
            "--port",
            "--clients",
            "--server-pid",
            "--label",
            "--hold",
            "--deadline",
            "--run",
            "--acks",
            "--redis-port",
        ];
        if !known.contains(&flag.as_str()) {
            return Err(format!("unknown argument {flag:?}"));
        }
        let val = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--proto" => {
                a.proto = match val.as_str() {
                    "sio" => Proto::Sio,
                    "sse" => Proto::Sse,
                    _ => return Err(format!("--proto {val:?}: expected sio or sse")),
                }
            }
            "--port" => {
                let p = number("--port", &val, 1, u64::from(u16::MAX))?;
                port = u16::try_from(p).ok();
            }
            "--clients" => {
                let n = number("--clients", &val, 1, MAX_CLIENTS as u64)?;
                clients = usize::try_from(n).ok();
            }
            "--server-pid" => {
                let p = number("--server-pid", &val, 1, u64::from(u32::MAX))?;
                a.server_pid = u32::try_from(p).ok();
            }
            "--label" => {
                if val.is_empty() || val.contains(char::is_whitespace) {
                    return Err(format!("--label {val:?}: expected a name without spaces"));
                }
                a.label = val;
            }
            "--hold" => a.hold = Duration::from_secs(number("--hold", &val, 0, MAX_SECS)?),
            "--deadline" => {
                a.deadline = Duration::from_secs(number("--deadline", &val, 1, MAX_SECS)?)
            }
            "--acks" => a.acks = Some(parse_acks(&val)?),
            "--redis-port" => {
                let p = number("--redis-port", &val, 1, u64::from(u16::MAX))?;
                a.redis_port = u16::try_from(p).ok();
            }
            _ => a.runs.push(parse_run(&val)?),
        }
    }
    if a.acks.is_some() && a.proto != Proto::Sio {
        return Err("--acks needs Socket.IO receivers (--proto sio)".into());
    }
    match (port, clients) {
        (Some(port), Some(clients)) => Ok(Parsed::Run(Args { port, clients, ..a })),
        (None, _) => Err("--port is required".into()),
        (_, None) => Err("--clients is required".into()),
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// utime + stime of a process, in seconds (USER_HZ is 100 on Linux).
fn proc_cpu_secs(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// A `/proc/<pid>/status` number: `VmRSS` (now) or `VmHWM` (peak since the process began) in
/// KiB, or `Threads`.
fn proc_status_kib(pid: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The machine's 1-minute load average, as `/proc/loadavg` prints it.
fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `"t":<digits>` anywhere in a tick's JSON (key order differs between servers).
fn tick_time(payload: &[u8]) -> Option<u64> {
    let at = find(payload, b"\"t\":")? + 4;
    let mut v: u64 = 0;
    let mut any = false;
    for &b in payload.get(at..)? {
        if !b.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        any = true;
    }
    any.then_some(v)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// TCP connect in progress.
    Connecting,
    /// Request sent, waiting for the response head.
    Head,
    /// WebSocket frames (Socket.IO).
    Ws,
    /// SSE event stream.
    Sse,
    Closed,
}

struct Conn {
    stream: Option<TcpStream>,
    kind: Proto,
    control: bool,
    state: State,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    frag: Vec<u8>,
    /// Socket.IO: CONNECT answered; SSE: 200 head received.
    ready: bool,
    /// The control connection got the ack of its last `bench:burst`.
    acked: bool,
    attempts: u32,
    received: u64,
    /// Ack phase: ids of this receiver's `bench:ack` emits not answered yet, and the next id.
    ack_pending: Vec<u64>,
    ack_next: u64,
}

/// The ack phase: how many emits each sender keeps in flight, and what came back.
#[derive(Default)]
struct AckTally {
    /// Refill the window on every answer (off while draining).
    sending: bool,
    window: usize,
    /// Answers to an emit in flight that echo its argument.
    done: u64,
    /// Answers with an unknown id or another argument.
    mismatched: u64,
}

/// What the parsers report to the client while a run is measured.
#[derive(Default)]
struct Tally {
    measuring: bool,
    /// Wall clock (µs since the epoch) when the run was asked for: ticks stamped earlier are
    /// stragglers of a previous run and do not count as its first send.
    since_us: u64,
    received: u64,
    lat_us: Vec<u32>,
    first_recv: Option<Instant>,
    last_recv: Option<Instant>,
    /// The earliest `t` of the run's ticks: when the server sent its first broadcast.
    first_send_us: Option<u64>,
    /// Wall clock when the first of the run's ticks reached any receiver.
    first_recv_us: Option<u64>,
    /// Wall clock of the last receipt.
    last_recv_us: u64,
    /// Bytes of the ticks received (Socket.IO packets, or SSE data lines).
    tick_bytes: u64,
    unparsed: u64,
}

impl Tally {
    fn tick(&mut self, payload: &[u8], now_us: u64, now: Instant) {
        if !self.measuring {
            return;
        }
        self.received += 1;
        self.first_recv.get_or_insert(now);
        self.last_recv = Some(now);
        self.last_recv_us = now_us;
        self.tick_bytes += payload.len() as u64;
        match tick_time(payload) {
            Some(t) => {
                if t >= self.since_us {
                    self.first_send_us = Some(self.first_send_us.map_or(t, |f| f.min(t)));
                    self.first_recv_us.get_or_insert(now_us);
                }
                if self.lat_us.len() < MAX_SAMPLES {
                    let d = now_us.saturating_sub(t);
                    self.lat_us.push(u32::try_from(d).unwrap_or(u32::MAX));
                }
            }
            None => self.unparsed += 1,
        }
    }
}

struct Client {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    scratch: Vec<u8>,
    addr: SocketAddr,
    port: u16,
    tally: Tally,
    acks: AckTally,
    mask_state: u32,
    deadline: Instant,
    /// Connections whose read budget ran out with bytes possibly left (edge-triggered).
    again: Vec<usize>,
    /// The last poll's events, kept for the next (no list allocated per poll).
    ready: Vec<Ready>,
}

/// One connection's readiness from a poll.
#[derive(Clone, Copy)]
struct Ready {
    conn: usize,
    readable: bool,
    ends: bool,
    writable: bool,
}

fn masked_frame(opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

impl Conn {
    fn new(kind: Proto, control: bool) -> Conn {
        Conn {
            stream: None,
            kind,
            control,
            state: State::Closed,
            inbuf: Vec::new(),
            out: Vec::new(),
            frag: Vec::new(),
            ready: false,
            acked: false,
            attempts: 0,
            received: 0,
            ack_pending: Vec::new(),
            ack_next: 0,
        }
    }

    fn alive(&self) -> bool {
        self.state != State::Closed
    }
}

impl Client {
    fn new(port: u16, deadline: Instant) -> io::Result<Client> {
        Ok(Client {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            conns: Vec::new(),
            scratch: vec![0u8; 256 * 1024],
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            port,
            tally: Tally::default(),
            acks: AckTally::default(),
            mask_state: 0x9e37_79b9,
            deadline,
            again: Vec::new(),
            ready: Vec::new(),
        })
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift32: masks need not be secret here, only present (RFC 6455 §5.3).
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.to_le_bytes()
    }

    fn add(&mut self, kind: Proto, control: bool) -> usize {
        self.conns.push(Conn::new(kind, control));
        self.conns.len() - 1
    }

    /// (Re)opens connection `i`.
    fn open(&mut self, i: usize) {
        let addr = self.addr;
        let port = self.port;
        let c = &mut self.conns[i];
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.attempts += 1;
        c.inbuf.clear();
        c.out.clear();
        c.frag.clear();
        c.ready = false;
        let mut stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(_) => {
                c.state = State::Closed;
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        if self
            .poll
            .registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            c.state = State::Closed;
            return;
        }
        let req = match c.kind {
            Proto::Sse => format!(
                "GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
            ),
            Proto::Sio => format!(
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                 Upgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
        };
        c.out.extend_from_slice(req.as_bytes());
        c.stream = Some(stream);
        c.state = State::Connecting;
    }

    fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.state = State::Closed;
    }

    fn send_text(&mut self, i: usize, text: &str) {
        self.queue_text(i, text);
        self.flush(i);
    }

    /// Queues a text frame; the next `flush` writes it.
    fn queue_text(&mut self, i: usize, text: &str) {
        let mask = self.next_mask();
        masked_frame(0x1, text.as_bytes(), mask, &mut self.conns[i].out);
    }

    /// Ack phase: tops receiver `i` up to the window of `bench:ack` emits in flight (queued, not
    /// flushed).
    fn emit_acks(&mut self, i: usize) {
        while self.acks.sending && self.conns[i].ack_pending.len() < self.acks.window {
            let id = self.conns[i].ack_next;
            self.conns[i].ack_next += 1;
            self.conns[i].ack_pending.push(id);
            self.queue_text(i, &format!("42{id}[\"bench:ack\",{id}]"));
        }
    }

    /// An ACK packet for receiver `i`, `rest` after its `43`: `<id>[<id>]` from the servers'
    /// `bench:ack` handlers, which answer with the argument they got.
    fn on_ack(&mut self, i: usize, rest: &[u8]) {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let id = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|d| d.parse::<u64>().ok());
        let echoed = rest[digits..]
            .strip_prefix(b"[")
            .and_then(|a| a.strip_suffix(b"]"))
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|a| a.parse::<u64>().ok());
        let pending = &mut self.conns[i].ack_pending;
        match id.and_then(|id| pending.iter().position(|&p| p == id)) {
            Some(at) => {
                pending.swap_remove(at);
                if echoed == id {
                    self.acks.done += 1;
                } else {
                    self.acks.mismatched += 1;
                }
            }
            None => self.acks.mismatched += 1,
        }
        self.emit_acks(i);
    }

    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.state == State::Connecting || c.out.is_empty() {
            return;
        }
        let Some(s) = c.stream.as_mut() else { return };
        let mut written = 0;
        let mut failed = false;
        while written < c.out.len() {
            match s.write(&c.out[written..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        c.out.drain(..written);
        if failed {
            self.close(i);
        }
    }

    /// One poll turn of at most `timeout`.
    fn pump(&mut self, timeout: Duration) {
        let mut timeout = timeout.min(self.deadline.saturating_duration_since(Instant::now()));
        if !self.again.is_empty() {
            timeout = Duration::ZERO;
        }
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                eprintln!("fanout_client: poll failed: {e}");
                std::process::exit(2);
            }
        }
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        ready.extend(self.events.iter().map(|e| Ready {
            conn: e.token().0,
            readable: e.is_readable() || e.is_read_closed() || e.is_error(),
            // The peer's FIN (or an error) came with this event: read on to the end, since
            // nothing more will be raised for it.
            ends: e.is_read_closed() || e.is_error(),
            writable: e.is_writable(),
        }));
        for i in std::mem::take(&mut self.again) {
            if i < self.conns.len() && self.conns[i].alive() {
                self.on_readable(i, true);
            }
        }
        for &Ready {
            conn: i,
            readable,
            ends,
            writable,
        } in &ready
        {
            if i >= self.conns.len() || !self.conns[i].alive() {
                continue;
            }
            if self.conns[i].state == State::Connecting {
                let Some(s) = self.conns[i].stream.as_ref() else {
                    continue;
                };
                match (s.take_error(), s.peer_addr()) {
                    (Ok(None), Ok(_)) => self.conns[i].state = State::Head,
                    (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => continue,
                    _ => {
                        self.close(i);
                        continue;
                    }
                }
                self.flush(i);
            } else if writable {
                self.flush(i);
            }
            if readable {
                self.on_readable(i, ends);
            }
        }
        self.ready = ready;
    }

    /// Reads connection `i`. A read that does not fill the scratch buffer took all the socket
    /// had, and bytes arriving later raise a new (edge-triggered) event, so it ends the pass
    /// without a second read to hear "would block" (halving the client's reads per tick, which
    /// matters where it shares a core with the server); `to_end` (a FIN or error was reported, or
    /// a budget ran out before) reads on until the socket says so.
    fn on_readable(&mut self, i: usize, to_end: bool) {
        // Bounded per turn so one busy connection cannot starve the rest.
        for _ in 0..64 {
            let Some(s) = self.conns[i].stream.as_mut() else {
                return;
            };
            match s.read(&mut self.scratch) {
                Ok(0) => {
                    self.close(i);
                    return;
                }
                Ok(n) => {
                    let (now, now_us) = (Instant::now(), now_us());
                    self.conns[i].inbuf.extend_from_slice(&self.scratch[..n]);
                    if !self.process(i, now, now_us) {
                        self.close(i);
                        return;
                    }
                    // What the frames just read asked to send (ack refills), in one write.
                    self.flush(i);
                    if !to_end && n < self.scratch.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(i);
                    return;
                }
            }
        }
        // Budget spent with bytes possibly left: edge-triggered, so come back on the next pump.
        self.again.push(i);
    }

    /// Parses what connection `i` has buffered. `false`: protocol error or closed by the peer.
    fn process(&mut self, i: usize, now: Instant, now_us: u64) -> bool {
        let mut inbuf = std::mem::take(&mut self.conns[i].inbuf);
        let mut pos = 0;
        let mut ok = true;
        if self.conns[i].state == State::Head {
            match find(&inbuf, b"\r\n\r\n") {
                None => {
                    self.conns[i].inbuf = inbuf;
                    return self.conns[i].inbuf.len() <= MAX_HEAD;
                }
                Some(end) => {
                    let (want, next) = match self.conns[i].kind {
                        Proto::Sio => (&b"HTTP/1.1 101"[..], State::Ws),
                        Proto::Sse => (&b"HTTP/1.1 200"[..], State::Sse),
                    };
                    if !inbuf.starts_with(want) {
                        return false;
                    }
                    self.conns[i].state = next;
                    if next == State::Sse {
                        self.conns[i].ready = true;
                    }
                    pos = end + 4;
                }
            }
        }
        match self.conns[i].state {
            State::Ws => {
                while let Some(buf) = inbuf.get(pos..) {
                    if buf.len() < 2 {
                        break;
                    }
                    let (b0, b1) = (buf[0], buf[1]);
                    let (fin, op, masked) = (b0 & 0x80 != 0, b0 & 0x0f, b1 & 0x80 != 0);
                    let mut len = u64::from(b1 & 0x7f);
                    let mut hdr = 2usize;
                    if len == 126 {
                        if buf.len() < 4 {
                            break;
                        }
                        len = u64::from(u16::from_be_bytes([buf[2], buf[3]]));
                        hdr = 4;
                    } else if len == 127 {
                        if buf.len() < 10 {
                            break;
                        }
                        len = u64::from_be_bytes(buf[2..10].try_into().unwrap());
                        hdr = 10;
                    }
                    if len > MAX_FRAME {
                        ok = false;
                        break;
                    }
                    let mask_at = hdr;
                    if masked {
                        hdr += 4;
                    }
                    let total = hdr + len as usize;
                    if buf.len() < total {
                        break;
                    }
                    // Servers do not mask (RFC 6455 §5.1), but unmask if one does.
                    let unmasked: Vec<u8>;
                    let data: &[u8] = if masked {
                        let m = &buf[mask_at..mask_at + 4];
                        unmasked = buf[hdr..total]
                            .iter()
                            .zip(m.iter().cycle())
                            .map(|(b, k)| b ^ k)
                            .collect();
                        &unmasked
                    } else {
                        &buf[hdr..total]
                    };
                    if !self.on_frame(i, fin, op, data, now, now_us) {
                        ok = false;
                        break;
                    }
                    pos += total;
                }
            }
            State::Sse => {
                while let Some(nl) = inbuf
                    .get(pos..)
                    .and_then(|b| b.iter().position(|&c| c == b'\n'))
                {
                    let line = &inbuf[pos..pos + nl];
                    if line.starts_with(b"data:") && !self.conns[i].control {
                        self.conns[i].received += 1;
                        self.tally.tick(line, now_us, now);
                    }
                    pos += nl + 1;
                }
                if inbuf.len() - pos > MAX_FRAME as usize {
                    ok = false;
                }
            }
            _ => {}
        }
        inbuf.drain(..pos.min(inbuf.len()));
        self.conns[i].inbuf = inbuf;
        ok && self.conns[i].alive()
    }

    fn on_frame(
        &mut self,
        i: usize,
        fin: bool,
        op: u8,
        data: &[u8],
        now: Instant,
        now_us: u64,
    ) -> bool {
        match op {
            0x0..=0x2 => {
                if !fin || op == 0x0 {
                    self.conns[i].frag.extend_from_slice(data);
                    if self.conns[i].frag.len() as u64 > MAX_FRAME {
                        return false;
                    }
                    if !fin {
                        return true;
                    }
                    let whole = std::mem::take(&mut self.conns[i].frag);
                    return self.on_message(i, &whole, now, now_us);
                }
                self.on_message(i, data, now, now_us)
            }
            0x8 => false,
            0x9 => {
                let mask = self.next_mask();
                masked_frame(0xA, data, mask, &mut self.conns[i].out);
                self.flush(i);
                true
            }
            _ => true,
        }
    }

    /// An Engine.IO packet (and the Socket.IO packet inside a message).
    fn on_message(&mut self, i: usize, m: &[u8], now: Instant, now_us: u64) -> bool {
        match m.first() {
            // open: join the main namespace.
            Some(b'0') => {
                self.send_text(i, "40");
                true
            }
            Some(b'2') => {
                self.send_text(i, "3");
                true
            }
            Some(b'4') => match m.get(1) {
                Some(b'0') => {
                    self.conns[i].ready = true;
                    true
                }
                Some(b'2') => {
                    if m.starts_with(b"42[\"tick\",") && !self.conns[i].control {
                        self.conns[i].received += 1;
                        self.tally.tick(m, now_us, now);
                    }
                    true
                }
                Some(b'3') => {
                    if self.conns[i].control {
                        self.conns[i].acked = true;
                    } else {
                        self.on_ack(i, &m[2..]);
                    }
                    true
                }
                // 41 disconnect, 44 connect error.
                _ => false,
            },
            Some(b'1') => false,
            _ => true,
        }
    }
}

fn pct(sorted: &[u32], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = (sorted.len() * p / 100).min(sorted.len() - 1);
    f64::from(sorted[idx]) / 1000.0
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() {
        eprint!("{USAGE}");
        std::process::exit(2);
    }
    let args = match parse_args(argv) {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("fanout_client: {e}; see --help");
            std::process::exit(2);
        }
    };
    let start = Instant::now();
    let deadline = start + args.deadline;
    let mut cl = match Client::new(args.port, deadline) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fanout_client: {e}");
            std::process::exit(2);
        }
    };
    let pid = args.server_pid.map(|p| p.to_string());
    let server_rss = || pid.as_deref().and_then(|p| proc_status_kib(p, "VmRSS:"));
    let server_hwm = || pid.as_deref().and_then(|p| proc_status_kib(p, "VmHWM:"));
    let server_cpu = || pid.as_deref().and_then(proc_cpu_secs);
    let self_cpu = || proc_cpu_secs("self");
    let label = &args.label;
    let proto = match args.proto {
        Proto::Sio => "sio",
        Proto::Sse => "sse",
    };

    // Phase 1: connect the receivers, a bounded number of handshakes at a time.
    let rss_before = server_rss();
    let connect_start = Instant::now();
    let connect_deadline = (connect_start + Duration::from_secs(120)).min(deadline);
    let mut started = 0usize;
    loop {
        let now = Instant::now();
        if now >= connect_deadline {
            break;
        }
        let mut in_flight = 0;
        let mut ready = 0;
        let mut given_up = 0;
        for c in &cl.conns {
            if c.ready && c.alive() {
                ready += 1;
            } else if c.alive() {
                in_flight += 1;
            } else if c.attempts >= CONNECT_ATTEMPTS {
                given_up += 1;
            }
        }
        if ready + given_up >= args.clients {
            break;
        }
        // Retry receivers that failed before they were ready.
        let retry: Vec<usize> = (0..cl.conns.len())
            .filter(|&i| {
                let c = &cl.conns[i];
                !c.alive() && !c.ready && c.attempts < CONNECT_ATTEMPTS
            })
            .collect();
        let mut budget = PARALLEL_CONNECTS.saturating_sub(in_flight);
        for i in retry {
            if budget == 0 {
                break;
            }
            cl.open(i);
            budget -= 1;
        }
        while budget > 0 && started < args.clients {
            let i = cl.add(args.proto, false);
            cl.open(i);
            started += 1;
            budget -= 1;
        }
        cl.pump(Duration::from_millis(5));
    }
    let connected = cl.conns.iter().filter(|c| c.ready && c.alive()).count();
    println!(
        "{label}: {connected}/{} {proto} receivers connected in {:.2?}",
        args.clients,
        connect_start.elapsed()
    );

    // Phase 2: hold them idle, then read the server's RSS.
    let hold_end = Instant::now() + args.hold;
    while Instant::now() < hold_end.min(deadline) {
        cl.pump(Duration::from_millis(50));
    }
    let rss_after = server_rss();
    let idle_alive = cl.conns.iter().filter(|c| c.ready && c.alive()).count();
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        let per = if idle_alive > 0 {
            (a.saturating_sub(b) * 1024) as f64 / idle_alive as f64
        } else {
            f64::NAN
        };
        let threads = pid
            .as_deref()
            .and_then(|p| proc_status_kib(p, "Threads:"))
            .map_or("?".into(), |t| t.to_string());
        println!(
            "IDLE label={label} proto={proto} clients={idle_alive} rss_before_kib={b} \
             rss_after_kib={a} bytes_per_conn={per:.0} threads={threads} load1={}",
            load1()
        );
    }

    // Phase 3: the control connection (always Socket.IO), unless another client asks for the
    // runs.
    let ctl = if args.listen_only {
        None
    } else {
        let ctl = cl.add(Proto::Sio, true);
        cl.open(ctl);
        let ctl_deadline = (Instant::now() + Duration::from_secs(20)).min(deadline);
        while !(cl.conns[ctl].ready && cl.conns[ctl].alive()) && Instant::now() < ctl_deadline {
            if !cl.conns[ctl].alive() && cl.conns[ctl].attempts < CONNECT_ATTEMPTS {
                cl.open(ctl);
            }
            cl.pump(Duration::from_millis(10));
        }
        if !cl.conns[ctl].ready {
            eprintln!("fanout_client: the control connection did not connect");
            std::process::exit(1);
        }
        Some(ctl)
    };
    let redis = args.redis_port.map(RedisStats::new);

    // Phase 4: the runs, one after another.
    for run in &args.runs {
        let receivers: Vec<usize> = (0..cl.conns.len())
            .filter(|&i| !cl.conns[i].control && cl.conns[i].ready && cl.conns[i].alive())
            .collect();
        for &i in &receivers {
            cl.conns[i].received = 0;
        }
        let expected = receivers.len() as u64 * run.count;
        cl.tally = Tally {
            measuring: true,
            since_us: now_us(),
            lat_us: Vec::with_capacity((expected as usize).min(MAX_SAMPLES)),
            ..Tally::default()
        };
        let redis_a = redis.as_ref().and_then(RedisStats::before);
        let (cpu_a, self_a) = (server_cpu(), self_cpu());
        let t0 = match ctl {
            Some(ctl) => {
                cl.conns[ctl].acked = false;
                let t0 = Instant::now();
                cl.send_text(
                    ctl,
                    &format!(
                        "420[\"bench:burst\",{{\"count\":{},\"size\":{},\"rate\":{}}}]",
                        run.count, run.size, run.rate
                    ),
                );
                t0
            }
            // Listening: the run starts with its first tick, whoever asked for it.
            None => {
                while cl.tally.received == 0 && Instant::now() < deadline {
                    cl.pump(Duration::from_millis(20));
                }
                cl.tally.first_recv.unwrap_or_else(Instant::now)
            }
        };
        let send_span = if run.rate > 0 {
            Duration::from_secs_f64(run.count as f64 / run.rate as f64)
        } else {
            Duration::ZERO
        };
        let run_deadline = (t0 + send_span + Duration::from_secs(120)).min(deadline);
        let quiet = if ctl.is_some() { QUIET } else { LISTEN_QUIET };
        loop {
            let now = Instant::now();
            if cl.tally.received >= expected || now >= run_deadline {
                break;
            }
            let last = cl.tally.last_recv.unwrap_or(t0).max(t0 + send_span);
            if now.duration_since(last.min(now)) > quiet {
                break;
            }
            if ctl.is_some_and(|c| !cl.conns[c].alive()) {
                eprintln!("fanout_client: the control connection closed");
                break;
            }
            cl.pump(Duration::from_millis(20));
        }
        let (cpu_b, self_b) = (server_cpu(), self_cpu());
        let hwm = server_hwm();
        let dropped = receivers.iter().filter(|&&i| !cl.conns[i].alive()).count();
        let received = cl.tally.received;
        // From the request (listening: from the server's first send) to the last receipt.
        let start_us = match ctl {
            Some(_) => cl.tally.since_us,
            None => cl.tally.first_send_us.unwrap_or(cl.tally.since_us),
        };
        let last_us = cl.tally.last_recv_us;
        let span = match ctl {
            Some(_) => cl
                .tally
                .last_recv
                .map_or(Duration::ZERO, |l| l.duration_since(t0)),
            None => Duration::from_micros(last_us.saturating_sub(start_us)),
        };
        let tick_bytes = if received > 0 {
            cl.tally.tick_bytes as f64 / received as f64
        } else {
            f64::NAN
        };
        // From the server's first send (the `t` of its first tick) to the first receipt anywhere;
        // `first_req_ms` counts from the client's request instead (adds the request's trip and
        // the server's way to its first broadcast).
        let first_ms = match (cl.tally.first_send_us, cl.tally.first_recv_us) {
            // Signed: a server whose clock is off shows as a negative time, not as zero.
            (Some(s), Some(r)) => (r as f64 - s as f64) / 1000.0,
            _ => f64::NAN,
        };
        let first_req_ms = cl
            .tally
            .first_recv
            .map_or(f64::NAN, |f| f.duration_since(t0).as_secs_f64() * 1000.0);
        let peak_growth_kib = match (hwm, rss_before) {
            (Some(h), Some(b)) => h.saturating_sub(b).to_string(),
            _ => "?".into(),
        };
        let load = load1();
        let mut lat = std::mem::take(&mut cl.tally.lat_us);
        cl.tally.measuring = false;
        lat.sort_unstable();
        let per_sec = if span.as_secs_f64() > 0.0 {
            received as f64 / span.as_secs_f64()
        } else {
            0.0
        };
        let cpu = cpu_delta(cpu_a, cpu_b);
        let client_cpu = cpu_delta(self_a, self_b);
        let cpu_us_per_msg = us_per(cpu, received as u64);
        let acked = ctl.map_or("none", |c| if cl.conns[c].acked { "true" } else { "false" });
        // Let the server settle between runs (and answer its pings meanwhile); what Redis did is
        // read after it, so that the last publishes to every node are in. A listener goes
        // straight on to wait for the next run.
        let pause = if ctl.is_some() { PAUSE } else { Duration::ZERO };
        let pause = (Instant::now() + pause).min(deadline);
        while Instant::now() < pause {
            cl.pump(Duration::from_millis(20));
        }
        let redis_fields = match (&redis, redis_a) {
            (Some(r), Some(a)) => match r.after(&a) {
                Some(d) => format!(
                    " redis_in_bytes={} redis_out_bytes={} redis_cpu_s={:.3} redis_conns={}",
                    d.input, d.output, d.cpu, d.conns
                ),
                None => " redis_in_bytes=? redis_out_bytes=? redis_cpu_s=? redis_conns=?".into(),
            },
            (Some(_), None) => {
                " redis_in_bytes=? redis_out_bytes=? redis_cpu_s=? redis_conns=?".into()
            }
            _ => String::new(),
        };
        if run.name != "warmup" {
            println!(
                "RESULT label={label} proto={proto} run={} clients={} count={} size={} rate={} \
                 expected={expected} received={received} lost={} dropped_conns={dropped} \
                 secs={:.3} per_sec={per_sec:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} \
                 server_cpu_s={cpu:.2} cpu_us_per_msg={cpu_us_per_msg:.3} client_cpu_s={client_cpu:.2} \
                 first_ms={first_ms:.2} first_req_ms={first_req_ms:.2} peak_rss_growth_kib={peak_growth_kib} load1={load} \
                 acked={acked} unparsed={} start_us={start_us} last_us={last_us} \
                 tick_bytes={tick_bytes:.1}{redis_fields}",
                run.name,
                receivers.len(),
                run.count,
                run.size,
                run.rate,
                expected.saturating_sub(received),
                span.as_secs_f64(),
                pct(&lat, 50),
                pct(&lat, 99),
                lat.last().map_or(f64::NAN, |m| f64::from(*m) / 1000.0),
                cl.tally.unparsed,
            );
        }
    }

    // Phase 5: acks. The first SENDERS receivers keep WINDOW `bench:ack` emits in flight each
    // (a new one per answer) while every receiver stays connected; measured after a warm-up.
    if let Some(spec) = args.acks {
        let receivers: Vec<usize> = (0..cl.conns.len())
            .filter(|&i| !cl.conns[i].control && cl.conns[i].ready && cl.conns[i].alive())
            .collect();
        let senders: Vec<usize> = receivers.iter().copied().take(spec.senders).collect();
        cl.acks = AckTally {
            sending: true,
            window: spec.window,
            ..AckTally::default()
        };
        for &i in &senders {
            cl.emit_acks(i);
            cl.flush(i);
        }
        let warm_end = (Instant::now() + ACK_WARMUP).min(deadline);
        while Instant::now() < warm_end {
            cl.pump(Duration::from_millis(20));
        }
        let (done_a, cpu_a, self_a, t0) = (cl.acks.done, server_cpu(), self_cpu(), Instant::now());
        let end = (t0 + Duration::from_secs(spec.secs)).min(deadline);
        while Instant::now() < end {
            cl.pump(Duration::from_millis(20));
        }
        let (done_b, cpu_b, self_b, took) = (cl.acks.done, server_cpu(), self_cpu(), t0.elapsed());
        // Drain: no new emits; wait for the answers still due.
        cl.acks.sending = false;
        let in_flight = |cl: &Client| {
            senders
                .iter()
                .map(|&i| cl.conns[i].ack_pending.len())
                .sum::<usize>()
        };
        let drain_end = (Instant::now() + ACK_DRAIN).min(deadline);
        while in_flight(&cl) > 0 && Instant::now() < drain_end {
            cl.pump(Duration::from_millis(20));
        }
        let acks = done_b - done_a;
        let per_sec = acks as f64 / took.as_secs_f64();
        let cpu = cpu_delta(cpu_a, cpu_b);
        let client_cpu = cpu_delta(self_a, self_b);
        let cpu_us_per_ack = us_per(cpu, acks);
        let dropped = receivers.iter().filter(|&&i| !cl.conns[i].alive()).count();
        println!(
            "ACKS label={label} proto={proto} clients={} senders={} window={} secs={:.3} \
             acks={acks} per_sec={per_sec:.0} server_cpu_s={cpu:.2} cpu_us_per_ack={cpu_us_per_ack:.3} \
             client_cpu_s={client_cpu:.2} lost={} mismatched={} dropped_conns={dropped} load1={}",
            receivers.len(),
            senders.len(),
            spec.window,
            took.as_secs_f64(),
            in_flight(&cl),
            cl.acks.mismatched,
            load1(),
        );
    }
}

/// Redis's own figures, from `INFO` on a fresh connection each time: bytes received and sent
/// (`total_net_input_bytes`, `total_net_output_bytes`), CPU seconds (`used_cpu_sys` +
/// `used_cpu_user`) and connections accepted (`total_connections_received`).
struct RedisStats {
    port: u16,
}

/// One `INFO` reading.
#[derive(Clone, Copy)]
struct Info {
    input: u64,
    output: u64,
    cpu: f64,
    conns: u64,
}

/// The reading before a run, and what one `INFO` exchange adds to the byte counts by itself.
#[derive(Clone, Copy)]
struct RedisReading {
    at: Info,
    cost_in: u64,
    cost_out: u64,
}

/// What Redis did over a run.
struct RedisDelta {
    input: u64,
    output: u64,
    cpu: f64,
    /// Connections opened by others than this client.
    conns: u64,
}

impl RedisStats {
    fn new(port: u16) -> RedisStats {
        RedisStats { port }
    }

    /// The figures now.
    fn read(&self) -> Option<Info> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let t = Duration::from_secs(2);
        let mut s = std::net::TcpStream::connect_timeout(&addr, t).ok()?;
        s.set_read_timeout(Some(t)).ok()?;
        s.set_write_timeout(Some(t)).ok()?;
        s.write_all(b"*1\r\n$4\r\nINFO\r\n").ok()?;
        // A bulk string: `$<len>\r\n<text>\r\n`.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let body = loop {
            let n = s.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let Some(eol) = find(&buf, b"\r\n") else {
                continue;
            };
            let len: usize = std::str::from_utf8(buf.get(1..eol)?).ok()?.parse().ok()?;
            if buf.first() != Some(&b'$') {
                return None;
            }
            if buf.len() >= eol + 2 + len {
                break String::from_utf8_lossy(&buf[eol + 2..eol + 2 + len]).into_owned();
            }
            if buf.len() > 1 << 20 {
                return None;
            }
        };
        let field = |k: &str| {
            body.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
                .map(str::trim)
        };
        let input = field("total_net_input_bytes")?.parse().ok()?;
        let output = field("total_net_output_bytes")?.parse().ok()?;
        let cpu = field("used_cpu_sys")?.parse::<f64>().ok()?
            + field("used_cpu_user")?.parse::<f64>().ok()?;
        let conns = field("total_connections_received")?.parse().ok()?;
        Some(Info {
            input,
            output,
            cpu,
            conns,
        })
    }

    /// The reading before a run: two back to back, whose difference is the cost of one `INFO`
    /// exchange (its reply is counted after the figures it carries, the next request before).
    fn before(&self) -> Option<RedisReading> {
        let first = self.read()?;
        let at = self.read()?;
        Some(RedisReading {
            at,
            cost_in: at.input.saturating_sub(first.input),
            cost_out: at.output.saturating_sub(first.output),
        })
    }

    /// What Redis did since `a`, less one `INFO` exchange (and its connection).
    fn after(&self, a: &RedisReading) -> Option<RedisDelta> {
        let now = self.read()?;
        Some(RedisDelta {
            input: now
                .input
                .saturating_sub(a.at.input)
                .saturating_sub(a.cost_in),
            output: now
                .output
                .saturating_sub(a.at.output)
                .saturating_sub(a.cost_out),
            cpu: now.cpu - a.at.cpu,
            conns: now.conns.saturating_sub(a.at.conns).saturating_sub(1),
        })
    }
}

/// CPU seconds between two readings (NaN when either is missing).
fn cpu_delta(a: Option<f64>, b: Option<f64>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    }
}

/// CPU seconds spread over `n` items, in µs each (NaN for none).
fn us_per(cpu: f64, n: u64) -> f64 {
    if n > 0 {
        cpu * 1e6 / n as f64
    } else {
        f64::NAN
    }
}
