//! WebSocket frame headers for server-to-client frames. Reading client frames is tungstenite's job;
//! writing is ours, so that one encoded broadcast is shared by every recipient (a server frame is
//! unmasked, so its bytes are the same for everybody).

/// Opcode of a text frame (RFC 6455 §5.2).
pub const OPCODE_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OPCODE_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OPCODE_CLOSE: u8 = 0x8;

/// The header of one final, unmasked frame carrying `len` payload bytes. At most 10 bytes.
///
/// RFC 6455 §5.2: "The length of the "Payload data", in bytes: if 0-125, that is the payload
/// length. If 126, the following 2 bytes interpreted as a 16-bit unsigned integer are the payload
/// length. If 127, the following 8 bytes interpreted as a 64-bit unsigned integer [...]".
pub fn frame_header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | (opcode & 0x0f);
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if len <= usize::from(u16::MAX) {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// A complete close frame with status `code` and no reason.
pub fn close_frame(code: u16) -> [u8; 4] {
    let c = code.to_be_bytes();
    [0x80 | OPCODE_CLOSE, 2, c[0], c[1]]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn header_vectors() {
        // RFC 6455 §5.7: a single-frame unmasked text message "Hello" is 0x81 0x05 ...
        let (h, n) = frame_header(OPCODE_TEXT, 5);
        assert_eq!(&h[..n], &[0x81, 0x05]);
        let (h, n) = frame_header(OPCODE_BINARY, 256);
        assert_eq!(&h[..n], &[0x82, 0x7E, 0x01, 0x00]);
        let (h, n) = frame_header(OPCODE_BINARY, 65536);
        assert_eq!(&h[..n], &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
        let (h, n) = frame_header(OPCODE_TEXT, 125);
        assert_eq!(&h[..n], &[0x81, 125]);
        let (h, n) = frame_header(OPCODE_TEXT, 126);
        assert_eq!(&h[..n], &[0x81, 126, 0, 126]);
        assert_eq!(close_frame(1000), [0x88, 2, 0x03, 0xE8]);
    }
}
