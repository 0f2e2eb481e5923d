//! A real `redis-server` for the cluster tests, on a free 127.0.0.1 port, with its data in a
//! temporary directory (append-only file, fsync on every write, so a kill loses nothing and a
//! restart brings the history back). The tests kill and restart it; `Drop` kills it.
//!
//! The binary is `redis-server` on the PATH (Debian's package; `.ci/run` installs it), or
//! `REDIS_SERVER` when set. A missing binary fails the test with a message saying so.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

impl RedisServer {
    /// Starts a fresh server (empty data).
    pub fn start() -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "tidings-redis-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut r = RedisServer {
            port: free_port(),
            dir,
            child: None,
        };
        r.spawn();
        r
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(binary())
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args([
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): install Debian's redis-server (apt-get install \
                     redis-server) or set REDIS_SERVER",
                    binary()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Answers `PING` now.
    pub fn ping(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// SIGKILL: gone at once, nothing flushed that was not already.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts again on the same port with no data (a Redis without persistence that restarted).
    pub fn restart_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).expect("a temporary directory");
        self.spawn();
    }

    /// Runs one command through `redis-cli`-free RESP (for tests that look inside Redis):
    /// the raw reply bytes.
    pub fn command(&self, args: &[&str]) -> Vec<u8> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).expect("redis");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) if !out.is_empty() => break,
                Err(_) => {}
            }
        }
        out
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A parsed RESP reply (what the tests read back from Redis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The text of a bulk or simple string (`None` for nil and the other kinds).
    pub fn text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The items of an array (empty for nil and the other kinds).
    pub fn items(&self) -> Vec<Resp> {
        match self {
            Resp::Array(Some(items)) => items.clone(),
            _ => Vec::new(),
        }
    }
}

/// One RESP value at the start of `buf` and the bytes it took; `None`: incomplete.
fn parse_resp(buf: &[u8]) -> Option<(Resp, usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..end]).expect("RESP line");
    let after = end + 2;
    match buf.first()? {
        b'+' => Some((Resp::Simple(line.to_string()), after)),
        b'-' => Some((Resp::Error(line.to_string()), after)),
        b':' => Some((Resp::Int(line.parse().expect("RESP integer")), after)),
        b'$' => {
            let n: i64 = line.parse().expect("RESP length");
            if n < 0 {
                return Some((Resp::Bulk(None), after));
            }
            let n = n as usize;
            if buf.len() < after + n + 2 {
                return None;
            }
            Some((
                Resp::Bulk(Some(buf[after..after + n].to_vec())),
                after + n + 2,
            ))
        }
        b'*' => {
            let n: i64 = line.parse().expect("RESP length");
            if n < 0 {
                return Some((Resp::Array(None), after));
            }
            let mut items = Vec::new();
            let mut at = after;
            for _ in 0..n {
                let (item, used) = parse_resp(&buf[at..])?;
                items.push(item);
                at += used;
            }
            Some((Resp::Array(Some(items)), at))
        }
        other => panic!("not a RESP reply: {other:#x}"),
    }
}

impl RedisServer {
    /// Runs one command with binary-safe arguments; its parsed reply (within 2 s).
    pub fn call(&self, args: &[&[u8]]) -> Resp {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).expect("redis");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        s.write_all(&req).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some((reply, _)) = parse_resp(&out) {
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "no full reply from Redis to {:?}",
                args.first().map(|a| String::from_utf8_lossy(a))
            );
            match s.read(&mut buf) {
                Ok(0) => panic!("Redis closed the connection"),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    }

    /// `GET key` as text.
    pub fn get(&self, key: &str) -> Option<String> {
        self.call(&[b"GET", key.as_bytes()]).text()
    }

    /// `PUBLISH channel payload`: how many subscribers got it.
    pub fn publish(&self, channel: &str, payload: &[u8]) -> i64 {
        match self.call(&[b"PUBLISH", channel.as_bytes(), payload]) {
            Resp::Int(n) => n,
            other => panic!("PUBLISH answered {other:?}"),
        }
    }

    /// `PUBSUB CHANNELS pattern`, sorted.
    pub fn channels(&self, pattern: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .call(&[b"PUBSUB", b"CHANNELS", pattern.as_bytes()])
            .items()
            .iter()
            .filter_map(Resp::text)
            .collect();
        names.sort();
        names
    }
}
