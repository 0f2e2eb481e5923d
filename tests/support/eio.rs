//! A raw Engine.IO server whose messages an echo thread answers, and the polling / WebSocket
//! handshakes against it (`eio_loopback`, `hostile`).

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tidings::{CloseReason, Config, Data, EngineIoEvent, Handle, Server, SessionId};

use super::http::Http;
use super::ws::WsClient;
use super::WAIT;

/// The raw Engine.IO endpoint on `/engine.io/`, an ephemeral port and otherwise the defaults (the
/// tests check the default handshake values).
pub fn eio_config() -> Config {
    Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        engineio_path: Some("/engine.io/".into()),
        ..Config::default()
    }
}

pub struct TestServer {
    server: Option<Server>,
    pub addr: SocketAddr,
    pub handle: Handle,
    events: Receiver<EngineIoEvent>,
    echo: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts `cfg`; a thread echoes every raw Engine.IO message back to its session (text as
    /// text, binary as binary) and forwards every event to `events`. The echo is sent before the
    /// event is forwarded, so a test that saw the event can order later commands after it.
    pub fn start(cfg: Config) -> TestServer {
        let server = Server::start(cfg).unwrap();
        let addr = server.local_addr();
        let handle = server.handle();
        let rx = server.take_events().unwrap();
        let (tx, events) = mpsc::channel();
        let h = handle.clone();
        let echo = std::thread::spawn(move || {
            // Ends when the server shuts down (the sender side is dropped).
            for ev in rx {
                if let EngineIoEvent::Message { session, data } = &ev {
                    let _ = h.eio_send(*session, data.clone());
                }
                if tx.send(ev).is_err() {
                    return;
                }
            }
        });
        TestServer {
            server: Some(server),
            addr,
            handle,
            events,
            echo: Some(echo),
        }
    }

    /// The next event that `pick` accepts (others are skipped), or a failure after [`WAIT`].
    pub fn wait<T>(&self, what: &str, mut pick: impl FnMut(&EngineIoEvent) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(ev) => {
                    if let Some(t) = pick(&ev) {
                        return t;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("timed out waiting for {what}"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("server gone while waiting for {what}")
                }
            }
        }
    }

    pub fn wait_open(&self, sid: &str) -> SessionId {
        self.wait("EioOpen", |e| match e {
            EngineIoEvent::Open {
                session, sid: s, ..
            } if s.as_ref() == sid => Some(*session),
            _ => None,
        })
    }

    pub fn wait_close(&self, session: SessionId) -> CloseReason {
        self.wait("EioClose", |e| match e {
            EngineIoEvent::Close { session: s, reason } if *s == session => Some(*reason),
            _ => None,
        })
    }

    pub fn wait_message(&self, session: SessionId) -> Data {
        self.wait("EioMessage", |e| match e {
            EngineIoEvent::Message { session: s, data } if *s == session => Some(data.clone()),
            _ => None,
        })
    }

    /// A round trip through the loop's command queue: every command sent before it (from any
    /// thread that happens-before this call) has been applied when it returns.
    pub fn sync(&self) {
        self.handle.stats().unwrap();
    }

    pub fn shutdown(self) {
        let _ = self.shutdown_collect();
    }

    /// Shuts down (which must return Ok and join the threads), then returns the events that had
    /// not been consumed.
    pub fn shutdown_collect(mut self) -> Vec<EngineIoEvent> {
        let server = self.server.take().unwrap();
        server.shutdown(Duration::from_secs(2)).unwrap();
        // The echo thread ends once the server's event stream ends.
        self.echo.take().unwrap().join().unwrap();
        self.events.try_iter().collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.shutdown(Duration::from_millis(200));
        }
    }
}

pub fn poll_url(sid: &str) -> String {
    format!("/engine.io/?EIO=4&transport=polling&sid={sid}")
}

/// Parks a long-poll GET for `sid` on a fresh connection and returns that connection. Ordering on
/// a real loop: the new connection first completes a request (so the loop has registered and
/// drained it), then writes its GET; a round trip on `other` after that proves the GET was read,
/// because the loop handles every ready connection of a turn before it writes any answer.
pub fn parked_get(addr: SocketAddr, sid: &str, other: &mut Http) -> Http {
    let mut g = Http::new(addr);
    assert_eq!(g.request("POST", &poll_url(sid), b"6").text(), "ok");
    g.send("GET", &poll_url(sid), b"");
    assert_eq!(other.request("POST", &poll_url(sid), b"6").text(), "ok");
    g
}

/// A polling handshake; returns the connection, the sid and the open packet's JSON.
pub fn polling_handshake(addr: SocketAddr) -> (Http, String, Value) {
    let mut c = Http::new(addr);
    let r = c.request("GET", "/engine.io/?EIO=4&transport=polling", b"");
    assert_eq!(r.status(), 200);
    let body = r.text();
    assert!(body.starts_with('0'), "{body}");
    let open: Value = serde_json::from_str(&body[1..]).unwrap();
    let sid = open["sid"].as_str().unwrap().to_string();
    (c, sid, open)
}

/// A WebSocket session opened directly; returns the client, the sid and the open JSON.
pub fn ws_handshake(addr: SocketAddr) -> (WsClient, String, Value) {
    let mut ws = WsClient::connect(addr, "/engine.io/?EIO=4&transport=websocket");
    let open = ws.expect_text();
    assert!(open.starts_with('0'), "{open}");
    let open: Value = serde_json::from_str(&open[1..]).unwrap();
    let sid = open["sid"].as_str().unwrap().to_string();
    (ws, sid, open)
}
