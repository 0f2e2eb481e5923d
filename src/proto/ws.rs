//! WebSocket frame headers for server-to-client frames. Reading client frames is tungstenite's job;
//! writing is ours, so that one encoded broadcast is shared by every recipient (a server frame is
//! unmasked, so its bytes are the same for everybody). [`FrameBoundaries`] follows where the client's
//! frames end, so that a connection between messages needs no read state at all.

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

/// One final, unmasked frame: header and `payload` in one buffer.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let (h, n) = frame_header(opcode, payload.len());
    let mut frame = Vec::with_capacity(n + payload.len());
    frame.extend_from_slice(h.get(..n).unwrap_or(&[]));
    frame.extend_from_slice(payload);
    frame
}

/// A complete close frame with status `code` and no reason.
pub fn close_frame(code: u16) -> [u8; 4] {
    let c = code.to_be_bytes();
    [0x80 | OPCODE_CLOSE, 2, c[0], c[1]]
}

/// Follows the frame boundaries of a client's byte stream without keeping its bytes: after any
/// prefix of the stream it tells whether that prefix ends exactly between two messages (no frame
/// and no fragmented message begun). Only the header fields that delimit frames are read (RFC 6455
/// §5.2: FIN, opcode, MASK, payload length; §5.4: a message is fragmented until a frame with FIN).
/// Validating frames stays tungstenite's job: on a stream it refuses, the answer here is
/// meaningless, and the connection is closed anyway.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameBoundaries {
    /// The header bytes of the current frame received so far (a header has 2 to 14 bytes).
    header: [u8; 14],
    have: u8,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// A data frame without FIN was seen and no final continuation frame yet.
    fragmented: bool,
}

/// The length of the header that begins with `h`, once `h` holds its first two bytes.
fn header_len(h: &[u8]) -> Option<usize> {
    let b1 = *h.get(1)?;
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    Some(2 + ext + mask)
}

impl FrameBoundaries {
    /// Follows `bytes`, the next bytes of the stream. Returns the largest payload length among the
    /// frames whose header ended in them (0 if none).
    pub fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut largest = 0;
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
                self.remaining -= n as u64;
                bytes = bytes.get(n..).unwrap_or(&[]);
                continue;
            }
            let (Some(&b), Some(slot)) =
                (bytes.first(), self.header.get_mut(usize::from(self.have)))
            else {
                return largest;
            };
            *slot = b;
            self.have += 1;
            bytes = bytes.get(1..).unwrap_or(&[]);
            let h = self.header.get(..usize::from(self.have)).unwrap_or(&[]);
            if header_len(h) == Some(h.len()) {
                let len = self.complete_header();
                largest = largest.max(len);
            }
        }
        largest
    }

    /// The current header is complete: note the frame's length and the message's state.
    fn complete_header(&mut self) -> u64 {
        let [b0, b1, ext @ ..] = self.header;
        let len = match b1 & 0x7f {
            126 => u64::from(u16::from_be_bytes([ext[0], ext[1]])),
            127 => u64::from_be_bytes([
                ext[0], ext[1], ext[2], ext[3], ext[4], ext[5], ext[6], ext[7],
            ]),
            n => u64::from(n),
        };
        // Data frames (text, binary, continuation) start, continue or end a message; control
        // frames may come between the fragments of one and change nothing.
        if b0 & 0x0f < 0x8 {
            self.fragmented = b0 & 0x80 == 0;
        }
        self.have = 0;
        self.remaining = len;
        len
    }

    /// Whether the bytes so far end exactly between two messages.
    pub fn between_messages(&self) -> bool {
        self.have == 0 && self.remaining == 0 && !self.fragmented
    }
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

    /// A masked client frame: FIN as given, `opcode`, `len` payload bytes.
    fn client_frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let (mut h, n) = frame_header(opcode, len);
        if !fin {
            h[0] &= 0x7f;
        }
        h[1] |= 0x80;
        let mut f = h[..n].to_vec();
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.resize(f.len() + len, b'x');
        f
    }

    #[test]
    fn boundaries_of_every_prefix() {
        // Two messages: a text frame of 300 bytes (16-bit length), then a fragmented binary
        // message (70 000 bytes, 64-bit length, then an empty final continuation) with a ping
        // between its fragments; then a 5-byte text frame.
        let parts = [
            (client_frame(true, OPCODE_TEXT, 300), true),
            (client_frame(false, OPCODE_BINARY, 70_000), false),
            (client_frame(true, 0x9, 3), false),
            (client_frame(true, 0x0, 0), true),
            (client_frame(true, OPCODE_TEXT, 5), true),
        ];
        let mut stream = Vec::new();
        let mut ends = Vec::new(); // (offset where a frame ends, between messages there)
        for (f, between) in &parts {
            stream.extend_from_slice(f);
            ends.push((stream.len(), *between));
        }
        // Byte by byte: the answer after each prefix.
        let mut t = FrameBoundaries::default();
        assert!(t.between_messages());
        for i in 0..stream.len() {
            t.feed(&stream[i..i + 1]);
            let want = ends.iter().any(|&(end, between)| end == i + 1 && between);
            assert_eq!(t.between_messages(), want, "after {} bytes", i + 1);
        }
        // In uneven chunks: the same answers at the chunk ends, and the largest frame.
        for chunk in [1, 7, 1000, 100_000] {
            let mut t = FrameBoundaries::default();
            let mut largest = 0;
            for (k, c) in stream.chunks(chunk).enumerate() {
                largest = largest.max(t.feed(c));
                let end = (k * chunk + c.len()).min(stream.len());
                let want = ends.iter().any(|&(e, between)| e == end && between);
                assert_eq!(t.between_messages(), want, "chunk {chunk}, end {end}");
            }
            assert_eq!(largest, 70_000);
        }
    }
}
