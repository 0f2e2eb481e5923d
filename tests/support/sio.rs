//! A Socket.IO v5 client over a WebSocket-only Engine.IO v4 session.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidings::proto::sio::{self, DecodeLimits, Packet, PacketKind};

use super::http::ReadErr;
use super::ws::{Frame, WsClient};
use super::WAIT;

/// What a Socket.IO client saw next.
#[derive(Debug)]
pub enum SioEvent {
    /// A complete Socket.IO packet (binary attachments included).
    Packet(Packet),
    /// The connection ended: a WebSocket close frame (with its code) or EOF (`None`).
    Closed(Option<u16>),
    Timeout,
}

/// A Socket.IO v5 client over a WebSocket-only Engine.IO v4 session. It answers pings.
pub struct SioClient {
    pub ws: WsClient,
    /// The Engine.IO handshake (`0{...}`).
    pub handshake: Value,
    pending: Option<(Packet, usize)>,
    pub pings_answered: usize,
}

impl SioClient {
    /// Opens the Engine.IO session (no namespace joined yet).
    pub fn open(addr: SocketAddr) -> SioClient {
        let mut ws = WsClient::connect(addr, "/socket.io/?EIO=4&transport=websocket");
        let open = ws.read_frame(Instant::now() + WAIT).expect("open packet");
        let Frame::Text(t) = open else {
            panic!("expected the Engine.IO open packet, got {open:?}")
        };
        let json = t.strip_prefix('0').expect("open packet starts with 0");
        let handshake: Value = serde_json::from_str(json).expect("handshake JSON");
        SioClient {
            ws,
            handshake,
            pending: None,
            pings_answered: 0,
        }
    }

    /// Opens a session and joins `/` with `auth`; returns the answer (CONNECT or CONNECT_ERROR).
    pub fn connect_with(addr: SocketAddr, auth: Option<Value>) -> (SioClient, Packet) {
        let mut c = SioClient::open(addr);
        let text = match auth {
            Some(a) => format!("40{a}"),
            None => "40".to_string(),
        };
        c.ws.send_text(&text).expect("send CONNECT");
        let p = c.expect_packet();
        (c, p)
    }

    /// Joins `/` as `tenant`/`user`; panics unless the server accepts.
    pub fn connect_as(addr: SocketAddr, tenant: &str, user: &str) -> SioClient {
        let (c, p) = SioClient::connect_with(addr, Some(json!({"tenant": tenant, "user": user})));
        assert_eq!(p.kind, PacketKind::Connect, "connect refused: {p:?}");
        assert!(
            p.data.as_ref().and_then(|d| d.get("sid")).is_some(),
            "CONNECT answer without sid: {p:?}"
        );
        c
    }

    /// The next packet / close / timeout. Pings are answered on the way.
    pub fn recv(&mut self, timeout: Duration) -> SioEvent {
        let deadline = Instant::now() + timeout;
        for _ in 0..100_000 {
            let frame = match self.ws.read_frame(deadline) {
                Ok(f) => f,
                Err(ReadErr::Timeout) => return SioEvent::Timeout,
                Err(ReadErr::Closed) => return SioEvent::Closed(None),
                Err(ReadErr::Io(e)) => panic!("read failed: {e}"),
            };
            match frame {
                Frame::Text(t) => {
                    let (Some(kind), Some(rest)) = (t.get(..1), t.get(1..)) else {
                        panic!("unexpected Engine.IO text {t:?}");
                    };
                    match kind {
                        "2" => {
                            let pong = format!("3{rest}");
                            let _ = self.ws.send_text(&pong);
                            self.pings_answered += 1;
                        }
                        "4" => {
                            assert!(self.pending.is_none(), "text while attachments expected");
                            let (p, n) = sio::decode_text(rest, &DecodeLimits::default())
                                .unwrap_or_else(|e| panic!("bad packet from server {t:?}: {e}"));
                            if n == 0 {
                                return SioEvent::Packet(p);
                            }
                            self.pending = Some((p, n));
                        }
                        "1" => return SioEvent::Closed(None),
                        "6" | "3" => {}
                        _ => panic!("unexpected Engine.IO packet {t:?}"),
                    }
                }
                Frame::Binary(b) => {
                    let Some((mut p, n)) = self.pending.take() else {
                        panic!("binary frame without a pending packet");
                    };
                    p.attachments.push(b);
                    if p.attachments.len() == n {
                        return SioEvent::Packet(p);
                    }
                    self.pending = Some((p, n));
                }
                Frame::Close(code) => {
                    let _ = self.ws.send_close(code.unwrap_or(1000));
                    return SioEvent::Closed(code);
                }
                Frame::Ping(p) => {
                    let _ = self.ws.send_frame(0xA, &p);
                }
                Frame::Pong(_) => {}
            }
        }
        SioEvent::Timeout
    }

    /// The next packet within [`WAIT`]; panics on close or timeout.
    pub fn expect_packet(&mut self) -> Packet {
        match self.recv(WAIT) {
            SioEvent::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// The next EVENT (skipping nothing): its name and arguments.
    pub fn expect_event(&mut self) -> (String, Vec<Value>, Packet) {
        let p = self.expect_packet();
        assert!(
            matches!(p.kind, PacketKind::Event | PacketKind::BinaryEvent),
            "expected an event, got {p:?}"
        );
        let mut items = match p.data.clone() {
            Some(Value::Array(a)) => a,
            other => panic!("event payload {other:?}"),
        };
        let name = match items.remove(0) {
            Value::String(s) => s,
            other => panic!("event name {other:?}"),
        };
        (name, items, p)
    }

    /// The next EVENT's name and first argument (`null` without one).
    pub fn expect_event_arg(&mut self) -> (String, Value) {
        let (name, args, _) = self.expect_event();
        (name, args.into_iter().next().unwrap_or(Value::Null))
    }

    /// Asserts that nothing but pings arrives for `quiet`.
    pub fn expect_silence(&mut self, quiet: Duration) {
        match self.recv(quiet) {
            SioEvent::Timeout => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Reads until the server closes; returns the close frame's code (`None`: EOF without a close
    /// frame). Panics if the server neither closes nor ends within [`WAIT`], or sends more than
    /// `max_packets` packets first.
    pub fn expect_closed(&mut self, max_packets: usize) -> Option<u16> {
        for _ in 0..=max_packets {
            match self.recv(WAIT) {
                SioEvent::Packet(_) => {}
                SioEvent::Closed(code) => {
                    // After the close frame, the server ends the TCP connection.
                    if code.is_some() {
                        assert!(
                            self.ws.wire.wait_eof(Instant::now() + WAIT),
                            "no EOF after the close frame"
                        );
                    }
                    return code;
                }
                SioEvent::Timeout => panic!("the server did not close the connection"),
            }
        }
        panic!("more than {max_packets} packets before the close")
    }

    /// Sends a Socket.IO packet's text part as is (`"2[\"x\"]"` → Engine.IO `42["x"]`).
    pub fn send_raw(&mut self, sio_text: &str) -> io::Result<()> {
        self.ws.send_text(&format!("4{sio_text}"))
    }

    /// Sends a packet and its attachments.
    pub fn send_packet(&mut self, p: &Packet) {
        let (text, attachments) = sio::encode(p);
        self.send_raw(&text).expect("send packet");
        for a in attachments {
            self.ws.send_binary(a).expect("send attachment");
        }
    }

    pub fn emit(&mut self, event: &str, args: Vec<Value>) {
        self.send_packet(&Packet::event("/", event, args, None));
    }

    pub fn emit_with_ack(&mut self, id: u64, event: &str, args: Vec<Value>) {
        self.send_packet(&Packet::event("/", event, args, Some(id)));
    }

    pub fn emit_binary(&mut self, event: &str, args: Vec<Value>, attachments: Vec<Vec<u8>>) {
        let mut p = Packet::event("/", event, args, None);
        p.attachments = attachments;
        self.send_packet(&p);
    }

    pub fn ack(&mut self, id: u64, args: Vec<Value>) {
        self.send_packet(&Packet::ack("/", id, args));
    }
}
