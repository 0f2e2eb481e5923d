//! A minimal WebSocket client (RFC 6455): handshake by hand, masked frames out, unmasked and
//! checked frames in.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use super::http::{ReadErr, Wire};
use super::{MAX_BODY, WAIT};

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Close(Option<u16>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

/// A minimal WebSocket client: handshake by hand, masked frames out, unmasked frames in.
pub struct WsClient {
    pub wire: Wire,
    mask: u32,
}

pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// RFC 6455 §1.3: the accept value for the sample nonce above (a constant, so the check does not
/// trust the server's own computation).
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// One client frame with a raw first byte (FIN, RSV and opcode bits as given), the honest length
/// and the payload masked with `key`.
pub fn masked_frame(first: u8, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(first);
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
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

impl WsClient {
    /// Opens a WebSocket on `target`; panics unless the server answers 101 with the right accept.
    pub fn connect(addr: SocketAddr, target: &str) -> WsClient {
        let mut wire = Wire::connect(addr);
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        wire.send(req.as_bytes()).expect("send handshake");
        let head = wire
            .read_head(Instant::now() + WAIT)
            .expect("handshake answer");
        assert_eq!(head.status, 101, "WebSocket handshake refused: {head:?}");
        assert_eq!(head.header("sec-websocket-accept"), Some(WS_ACCEPT));
        WsClient {
            wire,
            mask: 0x9e37_79b9,
        }
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift: any key will do, but not a constant one.
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        self.mask.to_be_bytes()
    }

    /// Encodes one masked client frame (a new key per frame).
    pub fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let fin_bit = if fin { 0x80 } else { 0 };
        let key = self.next_mask();
        masked_frame(fin_bit | (opcode & 0x0f), key, payload)
    }

    pub fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let f = self.frame(true, opcode, payload);
        self.wire.send(&f)
    }

    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send_frame(0x1, text.as_bytes())
    }

    pub fn send_binary(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.send_frame(0x2, bytes)
    }

    pub fn send_close(&mut self, code: u16) -> io::Result<()> {
        self.send_frame(0x8, &code.to_be_bytes())
    }

    /// The server closes: a close frame with `code`, nothing after it, then EOF.
    pub fn expect_close(&mut self, code: u16) {
        assert_eq!(self.expect_frame(), Frame::Close(Some(code)));
        assert!(self.wire.buf.is_empty(), "nothing after the close frame");
        assert!(self.wire.is_closed(), "EOF after the close frame");
    }

    /// The next frame, which must arrive within [`WAIT`].
    pub fn expect_frame(&mut self) -> Frame {
        self.read_frame(Instant::now() + WAIT)
            .unwrap_or_else(|e| panic!("no frame within {WAIT:?}: {e:?}"))
    }

    /// The next frame, which must be a text frame arriving within [`WAIT`].
    pub fn expect_text(&mut self) -> String {
        match self.expect_frame() {
            Frame::Text(t) => t,
            f => panic!("expected a text frame, got {f:?}"),
        }
    }

    /// Reads one server frame (server frames are final and unmasked).
    pub fn read_frame(&mut self, deadline: Instant) -> Result<Frame, ReadErr> {
        let w = &mut self.wire;
        w.fill(2, deadline)?;
        let (b0, b1) = (w.buf[0], w.buf[1]);
        assert_eq!(b1 & 0x80, 0, "the server masked a frame");
        assert_eq!(b0 & 0x70, 0, "the server set RSV bits");
        assert_ne!(b0 & 0x80, 0, "the server fragmented a frame");
        let (len, header) = match b1 & 0x7f {
            126 => {
                w.fill(4, deadline)?;
                (usize::from(u16::from_be_bytes([w.buf[2], w.buf[3]])), 4)
            }
            127 => {
                w.fill(10, deadline)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(&w.buf[2..10]);
                (usize::try_from(u64::from_be_bytes(b)).expect("length"), 10)
            }
            n => (usize::from(n), 2),
        };
        assert!(len <= MAX_BODY, "frame of {len} bytes");
        w.fill(header + len, deadline)?;
        let frame = w.take(header + len);
        let payload = frame[header..].to_vec();
        Ok(match b0 & 0x0f {
            0x1 => Frame::Text(String::from_utf8(payload).expect("UTF-8 text frame")),
            0x2 => Frame::Binary(payload),
            0x8 => Frame::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            0x9 => Frame::Ping(payload),
            0xA => Frame::Pong(payload),
            op => panic!("unexpected opcode {op:#x}"),
        })
    }
}
