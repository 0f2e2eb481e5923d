//! Helpers shared by the engine scenario tests (`tests`, `tests_sio_sse`): requests built with our
//! own HTTP parser, and the server's WebSocket frames decoded and checked independently of the
//! engine's encoder.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::Request;
use crate::proto::http::{parse_request_head, HeadLimits};

/// RFC 6455 §1.3's sample nonce.
pub(super) const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// RFC 6455 §1.3: the accept value for the sample nonce above.
pub(super) const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A valid WebSocket upgrade request head for `target`.
pub(super) fn ws_upgrade_head(target: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A request with the head `raw` (which must be exactly one complete head), no body and no
/// remote address.
pub(super) fn request(raw: &str) -> Request {
    // Generous limits: the io layer enforces the real ones before the engine sees a request.
    let limits = HeadLimits {
        max_head_bytes: 1 << 21,
        max_headers: 64,
    };
    let (head, n) = parse_request_head(raw.as_bytes(), &limits).unwrap();
    assert_eq!(n, raw.len(), "test built a bad head");
    Request {
        head,
        body: Vec::new(),
        remote: None,
    }
}

/// A server-to-client WebSocket frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Frame {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame with this code (our server never sends a reason).
    Close(u16),
}

/// Parses one complete server frame (RFC 6455 §5.2), checking what a server must do: FIN set,
/// RSV clear, no mask, minimal length encoding. `None` if `b` holds no complete frame.
pub(super) fn parse_frame(b: &[u8]) -> Option<(Frame, usize)> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    assert_eq!(b0 & 0xF0, 0x80, "server frames are final, RSV bits clear");
    assert_eq!(b1 & 0x80, 0, "server frames are unmasked");
    let (len, hl) = match b1 & 0x7F {
        126 => {
            let n = usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]));
            assert!(n >= 126, "minimal length encoding");
            (n, 4)
        }
        127 => {
            let n = u64::from_be_bytes(b.get(2..10)?.try_into().unwrap()) as usize;
            assert!(n > 0xFFFF, "minimal length encoding");
            (n, 10)
        }
        n => (usize::from(n), 2),
    };
    let payload = b.get(hl..hl + len)?;
    let f = match b0 & 0x0F {
        0x1 => Frame::Text(String::from_utf8(payload.to_vec()).unwrap()),
        0x2 => Frame::Binary(payload.to_vec()),
        0x8 => {
            assert_eq!(payload.len(), 2, "a close frame is its code alone");
            Frame::Close(u16::from_be_bytes([payload[0], payload[1]]))
        }
        op => panic!("unexpected opcode {op}"),
    };
    Some((f, hl + len))
}

/// Splits server-to-client WebSocket bytes into frames; they must end on a frame boundary.
pub(super) fn parse_frames(mut b: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some((f, n)) = parse_frame(b) {
        frames.push(f);
        b = &b[n..];
    }
    assert!(b.is_empty(), "a partial frame was written");
    frames
}
