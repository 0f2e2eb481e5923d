//! Engine.IO v4 packets and HTTP long-polling payloads.
//!
//! Wire forms (protocol document `engine.io-protocol/v4-current.md`):
//! - WebSocket: one packet per frame. A text frame is `<type digit>[<data>]`; "Binary payloads are
//!   sent as is, without modification" — a binary frame is always a message.
//! - Polling: packets joined by the record separator `\x1e`; "Binary payloads MUST be
//!   base64-encoded and prefixed with a `b` character".
//!
//! The protocol "assumes the record separator is not used in the data": a text packet containing
//! `0x1e` is fine in a WebSocket frame but would split in two inside a polling payload (the
//! reference parser has the same limitation). Socket.IO packets are JSON, whose serialisers escape
//! control characters (`\u001e`), so only raw Engine.IO text can hit this; see
//! [`Packet::is_payload_safe`].

use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT, URL_SAFE_NO_PAD};
use base64::Engine as _;
use std::fmt;

/// Separates packets in a polling payload ("the record separator character").
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// Prefix of a base64-encoded binary message inside a polling payload.
const BINARY_PREFIX: u8 = b'b';

/// The seven packet types, encoded as the ASCII digits `'0'..='6'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// `0`: the server's handshake.
    Open,
    /// `1`: the transport is closing.
    Close,
    /// `2`: heartbeat request (the server pings in v4), or the upgrade probe.
    Ping,
    /// `3`: heartbeat answer, or the upgrade probe's answer.
    Pong,
    /// `4`: application data.
    Message,
    /// `5`: the client switches to the probed WebSocket.
    Upgrade,
    /// `6`: does nothing; ends a pending poll during an upgrade.
    Noop,
}

impl PacketType {
    /// The ASCII digit that starts the packet's text form.
    pub fn as_byte(self) -> u8 {
        match self {
            PacketType::Open => b'0',
            PacketType::Close => b'1',
            PacketType::Ping => b'2',
            PacketType::Pong => b'3',
            PacketType::Message => b'4',
            PacketType::Upgrade => b'5',
            PacketType::Noop => b'6',
        }
    }

    /// The type for a leading byte, or `None` for anything outside `'0'..='6'`.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'0' => PacketType::Open,
            b'1' => PacketType::Close,
            b'2' => PacketType::Ping,
            b'3' => PacketType::Pong,
            b'4' => PacketType::Message,
            b'5' => PacketType::Upgrade,
            b'6' => PacketType::Noop,
            _ => return None,
        })
    }
}

/// The payload of a message packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// UTF-8 text.
    Text(String),
    /// Raw bytes.
    Binary(Vec<u8>),
}

/// One Engine.IO packet.
///
/// Ping/Pong carry optional text ("probe" during the upgrade); an empty string means none.
/// Close, Upgrade and Noop carry nothing: like the reference parser, decoding accepts and drops
/// any trailing data on them, since no peer gives it meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Handshake; the data is the JSON from [`Handshake::to_json`].
    Open(String),
    /// Closes the session.
    Close,
    /// Heartbeat or upgrade probe, with its optional text.
    Ping(String),
    /// Answer to a [`Packet::Ping`], echoing its text.
    Pong(String),
    /// Application data.
    Message(Data),
    /// Completes a polling→WebSocket upgrade.
    Upgrade,
    /// A packet with no effect.
    Noop,
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Open(_) => PacketType::Open,
            Packet::Close => PacketType::Close,
            Packet::Ping(_) => PacketType::Ping,
            Packet::Pong(_) => PacketType::Pong,
            Packet::Message(_) => PacketType::Message,
            Packet::Upgrade => PacketType::Upgrade,
            Packet::Noop => PacketType::Noop,
        }
    }

    /// Text form used in WebSocket text frames and inside polling payloads: type digit + data.
    /// `None` for a binary message, which has no typed text form (WebSocket sends it as a binary
    /// frame, polling as `b<base64>` — see [`encode_ws_frame`] and [`encode_segment`]).
    pub fn encode_text(&self) -> Option<String> {
        let data = self.text_data()?;
        let mut s = String::with_capacity(1 + data.len());
        s.push(char::from(self.packet_type().as_byte()));
        s.push_str(data);
        Some(s)
    }

    /// Whether this packet survives a polling payload unchanged: its encoded segment contains no
    /// `0x1e` (base64 never does; only text data can).
    pub fn is_payload_safe(&self) -> bool {
        self.text_data()
            .is_none_or(|d| !d.as_bytes().contains(&RECORD_SEPARATOR))
    }

    /// The text after the type digit; `None` only for a binary message.
    fn text_data(&self) -> Option<&str> {
        match self {
            Packet::Open(s) | Packet::Ping(s) | Packet::Pong(s) => Some(s),
            Packet::Message(Data::Text(s)) => Some(s),
            Packet::Message(Data::Binary(_)) => None,
            Packet::Close | Packet::Upgrade | Packet::Noop => Some(""),
        }
    }
}

/// Why a packet or payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// An empty frame or an empty payload segment: a packet needs at least its type digit.
    Empty,
    /// The first byte is not a packet type digit `'0'..='6'` (for a text frame, not `b` either).
    UnknownType(u8),
    /// A `b` segment whose data is not standard base64.
    InvalidBase64,
    /// A polling body that is not UTF-8 ("The character encoding is UTF-8").
    InvalidUtf8,
    /// A polling body with more packets than the caller allows.
    TooManyPackets,
    /// A `b<base64>` binary message where only a typed text packet may appear: the `b` form exists
    /// only inside polling payloads; over WebSocket binary data travels in binary frames.
    BinaryNotMessage,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => f.write_str("empty engine.io packet"),
            DecodeError::UnknownType(b) => {
                write!(f, "unknown engine.io packet type byte 0x{b:02x}")
            }
            DecodeError::InvalidBase64 => f.write_str("invalid base64 in binary engine.io packet"),
            DecodeError::InvalidUtf8 => f.write_str("engine.io payload is not valid UTF-8"),
            DecodeError::TooManyPackets => f.write_str("too many packets in engine.io payload"),
            DecodeError::BinaryNotMessage => {
                f.write_str("base64 binary packet outside a polling payload")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decode one packet from a WebSocket text frame or one polling text segment (without the `b`
/// binary form, which [`decode_segment`] handles).
///
/// `"4hello"` → `Message(Text("hello"))`, `"2probe"` → `Ping("probe")`, `""` → `Empty`,
/// `"9"`/`"abc"` → `UnknownType`, `"bAQID"` → `BinaryNotMessage`.
pub fn decode_text_packet(s: &str) -> Result<Packet, DecodeError> {
    let Some(&first) = s.as_bytes().first() else {
        return Err(DecodeError::Empty);
    };
    let Some(kind) = PacketType::from_byte(first) else {
        return Err(if first == BINARY_PREFIX {
            DecodeError::BinaryNotMessage
        } else {
            DecodeError::UnknownType(first)
        });
    };
    // The type digit is one ASCII byte, so byte 1 is a char boundary.
    let data = s.split_at_checked(1).map_or("", |(_, rest)| rest);
    Ok(match kind {
        PacketType::Open => Packet::Open(data.to_owned()),
        PacketType::Close => Packet::Close,
        PacketType::Ping => Packet::Ping(data.to_owned()),
        PacketType::Pong => Packet::Pong(data.to_owned()),
        PacketType::Message => Packet::Message(Data::Text(data.to_owned())),
        PacketType::Upgrade => Packet::Upgrade,
        PacketType::Noop => Packet::Noop,
    })
}

/// Decode one polling segment: `b<base64>` is a binary message, anything else a typed text
/// packet. A bare `b` is an empty binary message, as in the reference parser.
pub fn decode_segment(s: &str) -> Result<Packet, DecodeError> {
    match s.as_bytes().split_first() {
        Some((&BINARY_PREFIX, b64)) => decode_base64(b64).map(|b| Packet::Message(Data::Binary(b))),
        _ => decode_text_packet(s),
    }
}

/// Standard alphabet; padding optional (Node's `Buffer.toString("base64")` pads, other clients
/// may not). Unlike Node we reject stray characters instead of skipping them.
fn decode_base64(b64: &[u8]) -> Result<Vec<u8>, DecodeError> {
    STANDARD_PAD_INDIFFERENT
        .decode(b64)
        .map_err(|_| DecodeError::InvalidBase64)
}

/// A WebSocket binary frame: "Binary payloads are sent as is, without modification" — the whole
/// frame is a binary message.
pub fn decode_ws_binary(b: &[u8]) -> Packet {
    Packet::Message(Data::Binary(b.to_vec()))
}

/// The WebSocket frame for a packet: `Text` for a text frame, `Binary` for a binary frame.
pub fn encode_ws_frame(packet: &Packet) -> Data {
    match packet {
        Packet::Message(Data::Binary(b)) => Data::Binary(b.clone()),
        other => Data::Text(other.encode_text().unwrap_or_default()),
    }
}

/// The polling-segment encoding of a packet (`4hello` or `bAQID`).
pub fn encode_segment(packet: &Packet) -> Vec<u8> {
    let mut out = Vec::new();
    write_segment(&mut out, packet);
    out
}

/// Append one packet to a payload being built (adds the separator if `out` is non-empty).
pub fn append_to_payload(out: &mut Vec<u8>, packet: &Packet) {
    if !out.is_empty() {
        out.push(RECORD_SEPARATOR);
    }
    write_segment(out, packet);
}

/// Append an already-encoded segment (from [`encode_segment`]) so a broadcast is encoded once and
/// its bytes joined into many payloads. Adds the separator if `out` is non-empty.
pub fn append_segment(out: &mut Vec<u8>, segment: &[u8]) {
    if !out.is_empty() {
        out.push(RECORD_SEPARATOR);
    }
    out.extend_from_slice(segment);
}

/// Join packets into one polling payload. An empty slice gives an empty body, which is not a
/// valid payload: callers send at least one packet.
pub fn encode_payload(packets: &[Packet]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        append_to_payload(&mut out, p);
    }
    out
}

fn write_segment(out: &mut Vec<u8>, packet: &Packet) {
    match packet {
        Packet::Message(Data::Binary(b)) => {
            out.push(BINARY_PREFIX);
            // Padded, as Node's `Buffer.toString("base64")` writes it.
            let mut s = String::new();
            STANDARD.encode_string(b, &mut s);
            out.extend_from_slice(s.as_bytes());
        }
        other => {
            out.push(other.packet_type().as_byte());
            out.extend_from_slice(other.text_data().unwrap_or_default().as_bytes());
        }
    }
}

/// Decode a polling POST body into its packets.
///
/// The body must be UTF-8 (a binary `Content-Type` body is the caller's concern: the reference v4
/// server rejects it). Work is bounded by `max_packets`: the body is split lazily and decoding stops
/// at the first bad segment or once more than `max_packets` segments appear, so `"\x1e"` × 10^6
/// fails at once with `Empty`. An empty body or empty segment is `Empty` (the reference parser
/// yields an error packet for it).
pub fn decode_payload(body: &[u8], max_packets: usize) -> Result<Vec<Packet>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::InvalidUtf8)?;
    let mut packets = Vec::new();
    for (i, segment) in text.split(char::from(RECORD_SEPARATOR)).enumerate() {
        if i >= max_packets {
            return Err(DecodeError::TooManyPackets);
        }
        packets.push(decode_segment(segment)?);
    }
    Ok(packets)
}

/// The data of the OPEN packet that answers a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The session id the client sends back on every polling request.
    pub sid: String,
    /// `["websocket"]` on a polling handshake, empty on a WebSocket one.
    pub upgrades: Vec<String>,
    /// `pingInterval`: how often the server pings, in milliseconds.
    pub ping_interval_ms: u64,
    /// `pingTimeout`: how long the server waits for a pong, in milliseconds.
    pub ping_timeout_ms: u64,
    /// `maxPayload`: the most bytes the server accepts in one polling body.
    pub max_payload: u64,
}

impl Handshake {
    /// `{"sid":..,"upgrades":[..],"pingInterval":..,"pingTimeout":..,"maxPayload":..}`, keys in
    /// this order, no spaces — as the reference server writes it.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(112 + self.sid.len());
        s.push_str("{\"sid\":");
        push_json_string(&mut s, &self.sid);
        s.push_str(",\"upgrades\":[");
        for (i, u) in self.upgrades.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            push_json_string(&mut s, u);
        }
        s.push_str("],\"pingInterval\":");
        s.push_str(&self.ping_interval_ms.to_string());
        s.push_str(",\"pingTimeout\":");
        s.push_str(&self.ping_timeout_ms.to_string());
        s.push_str(",\"maxPayload\":");
        s.push_str(&self.max_payload.to_string());
        s.push('}');
        s
    }

    /// The OPEN packet carrying this handshake.
    pub fn to_packet(&self) -> Packet {
        Packet::Open(self.to_json())
    }
}

/// serde_json does the escaping, so an odd sid can never break the JSON.
fn push_json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::String(s.to_owned()).to_string());
}

/// Engine.IO error answers to HTTP requests, with the reference server's codes and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `transport` is missing or not `polling`/`websocket`.
    UnknownTransport = 0,
    /// `sid` names no live session.
    UnknownSid = 1,
    /// A handshake with a method other than GET.
    BadHandshakeMethod = 2,
    /// Anything else malformed.
    BadRequest = 3,
    /// The connection is refused (403).
    Forbidden = 4,
    /// `EIO` is not `4`.
    UnsupportedProtocolVersion = 5,
}

impl ErrorCode {
    /// The numeric code sent in the JSON body.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The reference server's message for this code.
    pub fn message(&self) -> &'static str {
        match self {
            ErrorCode::UnknownTransport => "Transport unknown",
            ErrorCode::UnknownSid => "Session ID unknown",
            ErrorCode::BadHandshakeMethod => "Bad handshake method",
            ErrorCode::BadRequest => "Bad request",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    /// The response body, `{"code":N,"message":"..."}` (sent with `Content-Type: application/json`).
    pub fn json(&self) -> String {
        format!(
            "{{\"code\":{},\"message\":\"{}\"}}",
            self.code(),
            self.message()
        )
    }

    /// HTTP status of the error answer: the reference server uses 403 for `Forbidden`, else 400.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Forbidden => 403,
            _ => 400,
        }
    }
}

/// A session id: 20 URL-safe characters from 15 random bytes (base64 URL_SAFE_NO_PAD). The caller
/// supplies the randomness so this stays pure and testable.
pub fn sid_from_random(bytes: &[u8; 15]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;

    fn text(s: &str) -> Packet {
        Packet::Message(Data::Text(s.to_owned()))
    }

    fn bin(b: &[u8]) -> Packet {
        Packet::Message(Data::Binary(b.to_vec()))
    }

    // ---- vectors from v4-current.md ----

    #[test]
    fn doc_payload_text_and_ping() {
        let body = b"4hello\x1e2\x1e4world";
        let packets = vec![text("hello"), Packet::Ping(String::new()), text("world")];
        assert_eq!(decode_payload(body, 16).unwrap(), packets);
        assert_eq!(encode_payload(&packets), body.to_vec());
    }

    #[test]
    fn doc_payload_with_binary() {
        let body = b"4hello\x1ebAQIDBA==";
        let packets = vec![text("hello"), bin(&[1, 2, 3, 4])];
        assert_eq!(decode_payload(body, 16).unwrap(), packets);
        assert_eq!(encode_payload(&packets), body.to_vec());
        assert_eq!(encode_segment(&bin(&[1, 2, 3, 4])), b"bAQIDBA==".to_vec());
    }

    #[test]
    fn doc_euro_is_utf8_not_counted() {
        // "For example, `€` was encoded to `2:4€`" in v3; v4 has no length prefix.
        let p = text("€");
        assert_eq!(p.encode_text().unwrap().as_bytes(), b"4\xe2\x82\xac");
        assert_eq!(
            encode_payload(std::slice::from_ref(&p)),
            b"4\xe2\x82\xac".to_vec()
        );
        assert_eq!(decode_text_packet("4€").unwrap(), p);
        assert_eq!(decode_payload("4€".as_bytes(), 1).unwrap(), vec![p]);
    }

    #[test]
    fn doc_websocket_hello() {
        assert_eq!(decode_text_packet("4hello").unwrap(), text("hello"));
        assert_eq!(text("hello").encode_text().unwrap(), "4hello");
        assert_eq!(encode_ws_frame(&text("hello")), Data::Text("4hello".into()));
    }

    #[test]
    fn doc_websocket_binary_as_is() {
        assert_eq!(decode_ws_binary(&[1, 2, 3, 4]), bin(&[1, 2, 3, 4]));
        assert_eq!(
            encode_ws_frame(&bin(&[1, 2, 3, 4])),
            Data::Binary(vec![1, 2, 3, 4])
        );
        assert_eq!(bin(&[1]).encode_text(), None);
    }

    #[test]
    fn doc_upgrade_and_heartbeat() {
        let cases: [(&str, Packet); 7] = [
            ("2probe", Packet::Ping("probe".into())),
            ("3probe", Packet::Pong("probe".into())),
            ("5", Packet::Upgrade),
            ("6", Packet::Noop),
            ("2", Packet::Ping(String::new())),
            ("3", Packet::Pong(String::new())),
            ("1", Packet::Close),
        ];
        for (wire, p) in cases {
            assert_eq!(decode_text_packet(wire).unwrap(), p, "{wire}");
            assert_eq!(p.encode_text().unwrap(), wire);
            assert_eq!(encode_segment(&p), wire.as_bytes().to_vec());
        }
    }

    #[test]
    fn doc_handshake() {
        let h = Handshake {
            sid: "lv_VI97HAXpY6yYWAAAC".into(),
            upgrades: vec!["websocket".into()],
            ping_interval_ms: 25000,
            ping_timeout_ms: 20000,
            max_payload: 1_000_000,
        };
        let json = r#"{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(h.to_json(), json);
        let open = h.to_packet().encode_text().unwrap();
        assert_eq!(open, format!("0{json}"));
        assert_eq!(
            decode_text_packet(&open).unwrap(),
            Packet::Open(json.into())
        );
    }

    #[test]
    fn handshake_websocket_has_no_upgrades() {
        let h = Handshake {
            sid: "a".into(),
            upgrades: vec![],
            ping_interval_ms: 300,
            ping_timeout_ms: 200,
            max_payload: 1_000_000,
        };
        assert_eq!(
            h.to_json(),
            r#"{"sid":"a","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#
        );
    }

    #[test]
    fn handshake_escapes_hostile_sid() {
        let h = Handshake {
            sid: "a\"b\\c\n\u{1e}".into(),
            upgrades: vec!["web\"socket".into()],
            ping_interval_ms: 1,
            ping_timeout_ms: 2,
            max_payload: 3,
        };
        let v: serde_json::Value = serde_json::from_str(&h.to_json()).unwrap();
        assert_eq!(v["sid"], "a\"b\\c\n\u{1e}");
        assert_eq!(v["upgrades"][0], "web\"socket");
        assert!(!h.to_json().as_bytes().contains(&RECORD_SEPARATOR));
    }

    #[test]
    fn error_codes_match_reference() {
        let all = [
            (
                ErrorCode::UnknownTransport,
                r#"{"code":0,"message":"Transport unknown"}"#,
            ),
            (
                ErrorCode::UnknownSid,
                r#"{"code":1,"message":"Session ID unknown"}"#,
            ),
            (
                ErrorCode::BadHandshakeMethod,
                r#"{"code":2,"message":"Bad handshake method"}"#,
            ),
            (
                ErrorCode::BadRequest,
                r#"{"code":3,"message":"Bad request"}"#,
            ),
            (ErrorCode::Forbidden, r#"{"code":4,"message":"Forbidden"}"#),
            (
                ErrorCode::UnsupportedProtocolVersion,
                r#"{"code":5,"message":"Unsupported protocol version"}"#,
            ),
        ];
        for (code, json) in all {
            assert_eq!(code.json(), json);
            let v: serde_json::Value = serde_json::from_str(&code.json()).unwrap();
            assert_eq!(v["message"], code.message());
        }
        assert_eq!(ErrorCode::Forbidden.http_status(), 403);
        assert_eq!(ErrorCode::UnknownSid.http_status(), 400);
    }

    #[test]
    fn sid_is_20_url_safe_chars() {
        assert_eq!(sid_from_random(&[0; 15]), "AAAAAAAAAAAAAAAAAAAA");
        assert_eq!(sid_from_random(&[0xff; 15]), "____________________");
        assert_eq!(sid_from_random(&[0xfb; 15]), "-_v7-_v7-_v7-_v7-_v7");
    }

    // ---- hostile input ----

    #[test]
    fn hostile_text_frames() {
        assert_eq!(decode_text_packet(""), Err(DecodeError::Empty));
        assert_eq!(
            decode_text_packet("abc"),
            Err(DecodeError::UnknownType(b'a'))
        );
        assert_eq!(decode_text_packet("9"), Err(DecodeError::UnknownType(b'9')));
        assert_eq!(
            decode_text_packet("7x"),
            Err(DecodeError::UnknownType(b'7'))
        );
        assert_eq!(decode_text_packet("€"), Err(DecodeError::UnknownType(0xe2)));
        assert_eq!(
            decode_text_packet("\u{1e}4a"),
            Err(DecodeError::UnknownType(0x1e))
        );
        // Polling-only binary form is refused in a WebSocket text frame.
        assert_eq!(
            decode_text_packet("bAQIDBA=="),
            Err(DecodeError::BinaryNotMessage)
        );
        assert_eq!(decode_text_packet("b"), Err(DecodeError::BinaryNotMessage));
        // A text frame is one packet: 0x1e inside it is data.
        assert_eq!(decode_text_packet("4a\u{1e}b").unwrap(), text("a\u{1e}b"));
    }

    #[test]
    fn data_on_dataless_types_is_dropped() {
        assert_eq!(decode_text_packet("1bye").unwrap(), Packet::Close);
        assert_eq!(decode_text_packet("5x").unwrap(), Packet::Upgrade);
        assert_eq!(decode_text_packet("6x").unwrap(), Packet::Noop);
    }

    #[test]
    fn separator_flood_fails_fast() {
        let body = vec![RECORD_SEPARATOR; 1_000_000];
        assert_eq!(decode_payload(&body, 100), Err(DecodeError::Empty));
        let mut body = Vec::new();
        for _ in 0..1_000_000 {
            append_to_payload(&mut body, &Packet::Noop);
        }
        assert_eq!(decode_payload(&body, 100), Err(DecodeError::TooManyPackets));
        assert_eq!(
            decode_payload(b"6\x1e6", 1),
            Err(DecodeError::TooManyPackets)
        );
        assert_eq!(decode_payload(b"6\x1e6", 2).unwrap().len(), 2);
    }

    #[test]
    fn empty_segments_are_errors() {
        assert_eq!(decode_payload(b"", 10), Err(DecodeError::Empty));
        assert_eq!(decode_payload(b"\x1e4a", 10), Err(DecodeError::Empty));
        assert_eq!(decode_payload(b"4a\x1e", 10), Err(DecodeError::Empty));
        assert_eq!(decode_payload(b"4a\x1e\x1e4b", 10), Err(DecodeError::Empty));
    }

    #[test]
    fn binary_segments() {
        // The reference decodes a bare "b" as an empty buffer.
        assert_eq!(decode_payload(b"b", 10).unwrap(), vec![bin(&[])]);
        assert_eq!(encode_segment(&bin(&[])), b"b".to_vec());
        // Unpadded (and, like Node, short-padded) input is accepted too.
        for ok in [&b"bAQIDBA"[..], b"bAQIDBA="] {
            assert_eq!(decode_payload(ok, 10).unwrap(), vec![bin(&[1, 2, 3, 4])]);
        }
        for bad in [
            &b"b!!!"[..],
            b"bAQIDBA===",
            b"bA",
            b"bAQ ID",
            b"bAQ\nID",
            b"b-_-_",
            b"bAQID\x1eb!",
        ] {
            assert_eq!(
                decode_payload(bad, 10),
                Err(DecodeError::InvalidBase64),
                "{bad:?}"
            );
        }
        assert_eq!(
            decode_payload(b"4ok\x1eb!!!", 10),
            Err(DecodeError::InvalidBase64)
        );
    }

    #[test]
    fn non_utf8_body() {
        assert_eq!(decode_payload(b"4\xff", 10), Err(DecodeError::InvalidUtf8));
        assert_eq!(
            decode_payload(b"4\xe2\x82", 10),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            decode_payload(b"4ok\x1e4\xc0\x80", 10),
            Err(DecodeError::InvalidUtf8)
        );
    }

    #[test]
    fn hostile_payload_types() {
        assert_eq!(
            decode_payload(b"abc", 10),
            Err(DecodeError::UnknownType(b'a'))
        );
        assert_eq!(
            decode_payload(b"4a\x1e9", 10),
            Err(DecodeError::UnknownType(b'9'))
        );
    }

    #[test]
    fn very_long_payloads() {
        let big = "x".repeat(1_000_000);
        let p = text(&big);
        let body = encode_payload(std::slice::from_ref(&p));
        assert_eq!(body.len(), 1_000_001);
        assert_eq!(decode_payload(&body, 1).unwrap(), vec![p]);

        let blob: Vec<u8> = (0..=255u8).cycle().take(750_000).collect();
        let body = encode_payload(&[bin(&blob)]);
        assert_eq!(body.len(), 1_000_001);
        assert_eq!(decode_payload(&body, 1).unwrap(), vec![bin(&blob)]);

        let many = vec![Packet::Ping(String::new()); 100_000];
        let body = encode_payload(&many);
        assert_eq!(decode_payload(&body, 100_000).unwrap(), many);
    }

    #[test]
    fn separator_in_text_does_not_survive_polling() {
        // The record separator inside text data splits the packet: "a\x1e4b" arrives as two.
        let p = text("a\u{1e}4b");
        assert!(!p.is_payload_safe());
        assert!(bin(&[0x1e]).is_payload_safe());
        assert_eq!(
            decode_payload(&encode_payload(std::slice::from_ref(&p)), 10).unwrap(),
            vec![text("a"), text("b")]
        );
    }

    #[test]
    fn append_segment_shares_encoded_bytes() {
        let seg = encode_segment(&text("hi"));
        let mut a = Vec::new();
        append_segment(&mut a, &seg);
        append_to_payload(&mut a, &Packet::Ping(String::new()));
        append_segment(&mut a, &encode_segment(&bin(&[1, 2, 3, 4])));
        assert_eq!(a, b"4hi\x1e2\x1ebAQIDBA==".to_vec());
    }

    #[test]
    fn packet_type_bytes() {
        for b in 0..=255u8 {
            match PacketType::from_byte(b) {
                Some(t) => assert_eq!(t.as_byte(), b),
                None => assert!(!(b'0'..=b'6').contains(&b)),
            }
        }
    }

    #[test]
    fn errors_display() {
        assert!(DecodeError::UnknownType(b'9').to_string().contains("0x39"));
        let e: Box<dyn std::error::Error> = Box::new(DecodeError::Empty);
        assert!(!e.to_string().is_empty());
    }

    // ---- properties ----

    fn arb_text_packet(s: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = Packet> {
        prop_oneof![
            s.clone().prop_map(Packet::Open),
            Just(Packet::Close),
            s.clone().prop_map(Packet::Ping),
            s.clone().prop_map(Packet::Pong),
            s.prop_map(|t| Packet::Message(Data::Text(t))),
            Just(Packet::Upgrade),
            Just(Packet::Noop),
        ]
    }

    fn arb_packet(s: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = Packet> {
        prop_oneof![
            4 => arb_text_packet(s),
            1 => proptest::collection::vec(any::<u8>(), 0..64)
                .prop_map(|b| Packet::Message(Data::Binary(b))),
        ]
    }

    /// Any text without the record separator ("this assumes the record separator is not used").
    fn payload_text() -> impl Strategy<Value = String> + Clone {
        any::<String>().prop_map(|s| s.replace('\u{1e}', ""))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn text_packet_round_trip(p in arb_text_packet(any::<String>())) {
            let s = p.encode_text().unwrap();
            prop_assert_eq!(decode_text_packet(&s).unwrap(), p);
        }

        #[test]
        fn ws_frame_round_trip(p in arb_packet(any::<String>())) {
            let back = match encode_ws_frame(&p) {
                Data::Text(s) => decode_text_packet(&s).unwrap(),
                Data::Binary(b) => decode_ws_binary(&b),
            };
            prop_assert_eq!(back, p);
        }

        #[test]
        fn payload_round_trip(ps in proptest::collection::vec(arb_packet(payload_text()), 1..8)) {
            prop_assert!(ps.iter().all(Packet::is_payload_safe));
            let body = encode_payload(&ps);
            prop_assert_eq!(decode_payload(&body, ps.len()).unwrap(), ps.clone());
            if ps.len() > 1 {
                prop_assert_eq!(decode_payload(&body, ps.len() - 1), Err(DecodeError::TooManyPackets));
            }
            // Segment-wise joining gives the same bytes.
            let mut joined = Vec::new();
            for p in &ps {
                append_segment(&mut joined, &encode_segment(p));
            }
            prop_assert_eq!(joined, body);
        }

        #[test]
        fn decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_payload(&body, 8);
            if let Ok(s) = std::str::from_utf8(&body) {
                let _ = decode_text_packet(s);
                let _ = decode_segment(s);
            }
        }

        #[test]
        fn handshake_is_valid_json(sid in any::<String>(), ups in proptest::collection::vec(any::<String>(), 0..3),
                                   a in any::<u64>(), b in any::<u64>(), c in any::<u64>()) {
            let h = Handshake { sid: sid.clone(), upgrades: ups.clone(), ping_interval_ms: a, ping_timeout_ms: b, max_payload: c };
            let json = h.to_json();
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&v["sid"], &serde_json::Value::String(sid));
            prop_assert_eq!(v["upgrades"].as_array().unwrap().len(), ups.len());
            prop_assert_eq!(v["pingInterval"].as_u64(), Some(a));
            prop_assert_eq!(v["pingTimeout"].as_u64(), Some(b));
            prop_assert_eq!(v["maxPayload"].as_u64(), Some(c));
            prop_assert!(json.starts_with(r#"{"sid":"#), "bad prefix");
        }

        #[test]
        fn sid_shape(bytes in any::<[u8; 15]>()) {
            let sid = sid_from_random(&bytes);
            prop_assert_eq!(sid.len(), 20);
            prop_assert!(sid.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        }
    }
}
