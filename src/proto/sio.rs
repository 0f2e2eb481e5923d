//! Socket.IO v5 packet codec and binary-attachment reassembler.
//!
//! A Socket.IO packet travels inside an Engine.IO MESSAGE: the text part is one Engine.IO text
//! message, each binary attachment one Engine.IO binary message that follows it. The text format
//! (protocol v5, "Packet encoding"):
//!
//! ```text
//! <packet type>[<# of binary attachments>-][<namespace>,][<acknowledgment id>][JSON-stringified payload without binary]
//! ```
//!
//! The decoder is written for a server reading packets from untrusted clients: every field is
//! scanned with a fixed bound before anything is allocated, the payload shape is checked per kind,
//! and binary placeholders are checked against the announced attachment count as soon as the text
//! part arrives, so a bad packet fails before any binary is buffered.
//!
//! Placeholders (`{"_placeholder":true,"num":n}`) are left in place in [`Packet::data`]; the
//! attachments are in [`Packet::attachments`], index `n` for placeholder `n`. We require that the
//! placeholders of a packet reference each attachment **exactly once**: a missing index would make
//! us buffer bytes nobody asked for, and a duplicate would let a client make the application copy
//! one attachment many times. The reference encoder always emits each index once, so no real
//! client is affected.

use std::fmt;

use serde_json::Value;

use super::push_decimal;

/// Event names that an application may not receive from (or send to) a client, because the
/// Socket.IO libraries give them a special meaning.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The key that marks a binary placeholder object.
const PLACEHOLDER_KEY: &str = "_placeholder";
/// The key that holds a placeholder's attachment index.
const PLACEHOLDER_NUM: &str = "num";
/// Most digits scanned for an attachment count; 20 digits already exceed any sane limit.
const MAX_COUNT_DIGITS: usize = 20;
/// Most digits scanned for an ack id: `u64::MAX` has 20 digits; a 21st means it cannot fit.
const MAX_ID_DIGITS: usize = 20;

/// Socket.IO packet type, the first character of the text part (`0`..`6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// `0`: connect to a namespace (client: optional auth object; server: `{"sid":..}`).
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event, `["name", args..]`.
    Event,
    /// `3`: the answer to an event that carried an ack id.
    Ack,
    /// `4`: a refused namespace connect.
    ConnectError,
    /// `5`: an event followed by binary attachments.
    BinaryEvent,
    /// `6`: an ack followed by binary attachments.
    BinaryAck,
}

impl PacketKind {
    /// The kind for a wire digit (`b'0'`..=`b'6'`).
    pub fn from_digit(b: u8) -> Option<Self> {
        Some(match b {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    /// The wire digit for this kind.
    pub fn as_char(self) -> char {
        char::from(self.digit())
    }

    /// The wire digit as a byte.
    fn digit(self) -> u8 {
        match self {
            Self::Connect => b'0',
            Self::Disconnect => b'1',
            Self::Event => b'2',
            Self::Ack => b'3',
            Self::ConnectError => b'4',
            Self::BinaryEvent => b'5',
            Self::BinaryAck => b'6',
        }
    }

    /// True for the kinds whose header carries an attachment count.
    pub fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }

    /// True for the kinds that may carry an ack id.
    fn takes_id(self) -> bool {
        matches!(
            self,
            Self::Event | Self::Ack | Self::BinaryEvent | Self::BinaryAck
        )
    }
}

/// One Socket.IO packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// Packet type.
    pub kind: PacketKind,
    /// Namespace, `"/"` when absent on the wire.
    pub nsp: String,
    /// Ack id.
    pub id: Option<u64>,
    /// JSON payload, with binary placeholders left in place.
    pub data: Option<Value>,
    /// Binary attachments, index `n` for placeholder `n` (Binary* packets only).
    pub attachments: Vec<Vec<u8>>,
}

impl Packet {
    /// A packet with no id, no data and no attachments.
    pub fn new(kind: PacketKind, nsp: impl Into<String>) -> Self {
        Self {
            kind,
            nsp: nsp.into(),
            id: None,
            data: None,
            attachments: Vec::new(),
        }
    }

    /// CONNECT, e.g. the server's `{"sid":..}` answer.
    pub fn connect(nsp: impl Into<String>, data: Option<Value>) -> Self {
        Self {
            data,
            ..Self::new(PacketKind::Connect, nsp)
        }
    }

    /// CONNECT_ERROR with the `{"message":..}` object the v5 clients expect.
    pub fn connect_error(nsp: impl Into<String>, message: &str) -> Self {
        let mut obj = serde_json::Map::new();
        obj.insert("message".to_owned(), Value::String(message.to_owned()));
        Self {
            data: Some(Value::Object(obj)),
            ..Self::new(PacketKind::ConnectError, nsp)
        }
    }

    /// DISCONNECT.
    pub fn disconnect(nsp: impl Into<String>) -> Self {
        Self::new(PacketKind::Disconnect, nsp)
    }

    /// EVENT `[event, args..]`, asking for an ack when `id` is set.
    pub fn event(
        nsp: impl Into<String>,
        event: &str,
        args: impl IntoIterator<Item = Value>,
        id: Option<u64>,
    ) -> Self {
        let mut arr = vec![Value::String(event.to_owned())];
        arr.extend(args);
        Self {
            id,
            data: Some(Value::Array(arr)),
            ..Self::new(PacketKind::Event, nsp)
        }
    }

    /// ACK `[args..]` for ack id `id`.
    pub fn ack(nsp: impl Into<String>, id: u64, args: Vec<Value>) -> Self {
        Self {
            id: Some(id),
            data: Some(Value::Array(args)),
            ..Self::new(PacketKind::Ack, nsp)
        }
    }

    /// The kind written on the wire. Like the reference encoder, an EVENT or ACK that carries
    /// attachments goes out as BINARY_EVENT / BINARY_ACK so that no data is lost.
    pub fn wire_kind(&self) -> PacketKind {
        match self.kind {
            PacketKind::Event if !self.attachments.is_empty() => PacketKind::BinaryEvent,
            PacketKind::Ack if !self.attachments.is_empty() => PacketKind::BinaryAck,
            k => k,
        }
    }
}

/// Bounds applied while decoding client packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most binary attachments in one packet (socket.io's `maxAttachments`, default 10).
    pub max_attachments: usize,
    /// Longest namespace in bytes, including the leading `/` (default 256).
    pub max_nsp_len: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_attachments: 10,
            max_nsp_len: 256,
        }
    }
}

/// Why a packet was rejected. Every variant means "close the connection" for a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The text part is empty.
    Empty,
    /// The first character is not a packet type `0`..`6`.
    UnknownKind,
    /// A binary packet lacks a well-formed `<n>-` attachment count.
    BadAttachmentCount,
    /// The attachment count exceeds [`DecodeLimits::max_attachments`].
    TooManyAttachments,
    /// The namespace is too long, unterminated or contains control characters.
    BadNamespace,
    /// The ack id overflows u64, is missing where required, or appears where none is allowed.
    BadAckId,
    /// The payload is not one JSON value (or is nested too deeply).
    InvalidJson,
    /// The payload has the wrong shape for the packet kind.
    InvalidPayload,
    /// The first element of an event is not a string.
    BadEventName,
    /// The event name is one of [`RESERVED_EVENTS`].
    ReservedEventName,
    /// A placeholder is malformed, out of range, duplicated, missing or in a non-binary packet.
    BadPlaceholder,
    /// A binary message arrived when no attachment was expected.
    UnexpectedBinary,
    /// A text message arrived while attachments were still expected.
    UnexpectedText,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty socket.io packet",
            Self::UnknownKind => "unknown socket.io packet type",
            Self::BadAttachmentCount => "malformed binary attachment count",
            Self::TooManyAttachments => "too many binary attachments",
            Self::BadNamespace => "invalid namespace",
            Self::BadAckId => "invalid ack id",
            Self::InvalidJson => "invalid JSON payload",
            Self::InvalidPayload => "payload has the wrong shape for the packet type",
            Self::BadEventName => "event name is not a string",
            Self::ReservedEventName => "event name is reserved",
            Self::BadPlaceholder => "invalid binary placeholder",
            Self::UnexpectedBinary => "binary message without a pending binary packet",
            Self::UnexpectedText => "text message while binary attachments are expected",
        })
    }
}

impl std::error::Error for DecodeError {}

/// Encode a packet: the text part and the attachments (the binary parts, in order).
///
/// The namespace is written only when it is not `"/"` (an empty namespace is also taken as `"/"`).
/// The encoder trusts the packet; call [`validate`] first for data that did not come from
/// [`decode_text`]. Attachments of kinds that cannot carry them (CONNECT, DISCONNECT,
/// CONNECT_ERROR) are not sent.
pub fn encode(packet: &Packet) -> (String, &[Vec<u8>]) {
    let attachments: &[Vec<u8>] = if packet.wire_kind().is_binary() {
        &packet.attachments
    } else {
        &[]
    };
    (encode_text(packet), attachments)
}

/// Encode the text part only, so a broadcast can be encoded once and shared.
pub fn encode_text(packet: &Packet) -> String {
    let mut out = String::with_capacity(16 + packet.nsp.len());
    encode_text_into(packet, &mut out);
    out
}

/// Append the text part to `out` (e.g. after an Engine.IO `4` prefix, saving a copy): the bytes
/// of [`encode_text_to`].
pub fn encode_text_into(packet: &Packet, out: &mut String) {
    let mut bytes = std::mem::take(out).into_bytes();
    encode_text_to(packet, &mut bytes);
    // UTF-8 in, UTF-8 out: a `str` namespace and serde_json's output.
    *out = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
}

/// Append the text part to a byte buffer, the payload serialised straight into it (no
/// formatter in between). The one encoder of the text part: the others write its bytes.
pub fn encode_text_to(packet: &Packet, out: &mut Vec<u8>) {
    let head = TextHead {
        kind: packet.wire_kind(),
        attachments: packet.attachments.len(),
        nsp: &packet.nsp,
        id: packet.id,
    };
    head.write_to(out);
    // Serialising a `Value` into a Vec cannot fail.
    if let Some(data) = &packet.data {
        let _ = serde_json::to_writer(out, data);
    }
}

/// Append the text part of an ACK (`3[nsp,]id[args...]`) to `out`: the bytes [`encode_text_to`]
/// writes for `Packet::ack(nsp, id, args)`, without building the packet.
pub fn encode_ack_into(nsp: &str, id: u64, args: &[Value], out: &mut Vec<u8>) {
    let head = TextHead {
        kind: PacketKind::Ack,
        attachments: 0,
        nsp,
        id: Some(id),
    };
    head.write_to(out);
    // Serialising a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(out, args);
}

/// `<kind>[<attachments>-][<nsp>,][<id>]`: what comes before the payload.
struct TextHead<'a> {
    kind: PacketKind,
    attachments: usize,
    nsp: &'a str,
    id: Option<u64>,
}

impl TextHead<'_> {
    /// Appends the head's bytes. Pushed, not formatted: this runs for every packet sent, and the
    /// formatter's machinery cost more than the rest of an ack's head.
    fn write_to(&self, out: &mut Vec<u8>) {
        out.push(self.kind.digit());
        if self.kind.is_binary() {
            push_decimal(out, self.attachments as u64);
            out.push(b'-');
        }
        if !self.nsp.is_empty() && self.nsp != "/" {
            out.extend_from_slice(self.nsp.as_bytes());
            out.push(b',');
        }
        if let Some(id) = self.id {
            push_decimal(out, id);
        }
    }
}

/// Decode the text part of a packet; returns the packet and the number of attachments that must
/// follow (0 for non-binary kinds). For Binary* kinds `attachments` is empty: feed the following
/// binary messages to a [`Reassembler`] (or use one from the start).
pub fn decode_text(s: &str, limits: &DecodeLimits) -> Result<(Packet, usize), DecodeError> {
    let bytes = s.as_bytes();
    let first = *bytes.first().ok_or(DecodeError::Empty)?;
    let kind = PacketKind::from_digit(first).ok_or(DecodeError::UnknownKind)?;
    let mut pos = 1;

    // "<packet type>[<# of binary attachments>-]"
    let mut expected = 0;
    if kind.is_binary() {
        let (n, digits) = scan_decimal(bytes.get(pos..).unwrap_or_default(), MAX_COUNT_DIGITS);
        if digits == 0 {
            return Err(DecodeError::BadAttachmentCount);
        }
        pos += digits;
        match bytes.get(pos) {
            Some(b'-') => pos += 1,
            // More digits than we scan: far beyond any limit.
            Some(b) if b.is_ascii_digit() => return Err(DecodeError::TooManyAttachments),
            _ => return Err(DecodeError::BadAttachmentCount),
        }
        expected = match n {
            Some(n) if n <= limits.max_attachments as u64 => {
                usize::try_from(n).map_err(|_| DecodeError::TooManyAttachments)?
            }
            _ => return Err(DecodeError::TooManyAttachments),
        };
    }

    // "[<namespace>,]": starts with '/', ends at ',' (or at the end, as the reference parser
    // accepts). Scan at most max_nsp_len + 1 bytes so a 1 MB name costs nothing.
    let nsp = if bytes.get(pos) == Some(&b'/') {
        let window = bytes.get(pos..).unwrap_or_default();
        let limit = limits.max_nsp_len.saturating_add(1);
        let (len, consumed) = match window.iter().take(limit).position(|&b| b == b',') {
            Some(comma) => (comma, comma + 1),
            None if window.len() < limit => (window.len(), window.len()),
            None => return Err(DecodeError::BadNamespace),
        };
        let nsp = s.get(pos..pos + len).ok_or(DecodeError::BadNamespace)?;
        check_nsp(nsp, limits)?;
        pos += consumed;
        nsp.to_owned()
    } else {
        "/".to_owned()
    };

    // "[<acknowledgment id>]": no payload starts with a digit, so digits here are the id.
    let mut id = None;
    let (n, digits) = scan_decimal(bytes.get(pos..).unwrap_or_default(), MAX_ID_DIGITS);
    if digits > 0 {
        pos += digits;
        let more = bytes.get(pos).is_some_and(u8::is_ascii_digit);
        match n {
            Some(n) if !more && kind.takes_id() => id = Some(n),
            _ => return Err(DecodeError::BadAckId),
        }
    }

    // "[JSON-stringified payload without binary]": serde_json rejects trailing garbage and keeps
    // its recursion limit (128), so deep nesting is an error, not a stack overflow.
    let rest = s.get(pos..).ok_or(DecodeError::InvalidJson)?;
    let data = if rest.is_empty() {
        None
    } else {
        Some(serde_json::from_str::<Value>(rest).map_err(|_| DecodeError::InvalidJson)?)
    };

    check_body(kind, id, data.as_ref(), expected)?;
    let packet = Packet {
        kind,
        nsp,
        id,
        data,
        attachments: Vec::new(),
    };
    Ok((packet, expected))
}

/// Check that a packet would be accepted by [`decode_text`] after encoding: use it on packets built
/// from application data before [`encode`] (e.g. to refuse a reserved event name).
pub fn validate(packet: &Packet, limits: &DecodeLimits) -> Result<(), DecodeError> {
    let kind = packet.wire_kind();
    let n = packet.attachments.len();
    if !kind.is_binary() && n > 0 {
        return Err(DecodeError::BadAttachmentCount);
    }
    if n > limits.max_attachments {
        return Err(DecodeError::TooManyAttachments);
    }
    if packet.nsp != "/" {
        if !packet.nsp.starts_with('/') || packet.nsp.contains(',') {
            return Err(DecodeError::BadNamespace);
        }
        check_nsp(&packet.nsp, limits)?;
    }
    check_body(kind, packet.id, packet.data.as_ref(), n)
}

/// The event name of an EVENT / BINARY_EVENT: the first element of its array.
pub fn event_name(packet: &Packet) -> Option<&str> {
    if !matches!(packet.kind, PacketKind::Event | PacketKind::BinaryEvent) {
        return None;
    }
    packet.data.as_ref()?.as_array()?.first()?.as_str()
}

/// The placeholder object for attachment `num`, for building binary packets.
pub fn placeholder(num: usize) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert(PLACEHOLDER_KEY.to_owned(), Value::Bool(true));
    obj.insert(PLACEHOLDER_NUM.to_owned(), Value::from(num));
    Value::Object(obj)
}

/// Read up to `max` leading ASCII digits; returns the value (None on u64 overflow) and the number
/// of digits read. Work is bounded by `max` whatever the input length.
fn scan_decimal(bytes: &[u8], max: usize) -> (Option<u64>, usize) {
    let mut value = Some(0u64);
    let mut digits = 0;
    for &b in bytes.iter().take(max) {
        if !b.is_ascii_digit() {
            break;
        }
        value = value
            .and_then(|v| v.checked_mul(10))
            .and_then(|v| v.checked_add(u64::from(b - b'0')));
        digits += 1;
    }
    (value, digits)
}

/// Namespace length and characters. Control characters are refused because a namespace is echoed
/// back (e.g. in CONNECT_ERROR) and `\x1e` would split an HTTP long-polling payload.
fn check_nsp(nsp: &str, limits: &DecodeLimits) -> Result<(), DecodeError> {
    if nsp.len() > limits.max_nsp_len || nsp.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(DecodeError::BadNamespace);
    }
    Ok(())
}

/// Shape of id and payload for `kind`, then the placeholders against `attachments`.
fn check_body(
    kind: PacketKind,
    id: Option<u64>,
    data: Option<&Value>,
    attachments: usize,
) -> Result<(), DecodeError> {
    if id.is_some() && !kind.takes_id() {
        return Err(DecodeError::BadAckId);
    }
    match kind {
        // CONNECT: payload absent or an object (the auth payload / the `{"sid":..}` answer).
        PacketKind::Connect => match data {
            None | Some(Value::Object(_)) => {}
            Some(_) => return Err(DecodeError::InvalidPayload),
        },
        PacketKind::Disconnect => {
            if data.is_some() {
                return Err(DecodeError::InvalidPayload);
            }
        }
        // "The payload is mandatory and MUST be a non-empty array. If that's not the case, then
        // the receiver MUST close the connection."
        PacketKind::Event | PacketKind::BinaryEvent => {
            let first = match data {
                Some(Value::Array(a)) => a.first().ok_or(DecodeError::InvalidPayload)?,
                _ => return Err(DecodeError::InvalidPayload),
            };
            let name = first.as_str().ok_or(DecodeError::BadEventName)?;
            if RESERVED_EVENTS.contains(&name) {
                return Err(DecodeError::ReservedEventName);
            }
        }
        // "The receiver MUST respond with an `ACK` packet with the same event ID."
        // "The payload is mandatory and MUST be an array (possibly empty)."
        PacketKind::Ack | PacketKind::BinaryAck => {
            if id.is_none() {
                return Err(DecodeError::BadAckId);
            }
            if !matches!(data, Some(Value::Array(_))) {
                return Err(DecodeError::InvalidPayload);
            }
        }
        // v5: "the payload `CONNECT_ERROR` packet is now an object instead of a plain string";
        // older servers sent a string, which the reference parser still accepts.
        PacketKind::ConnectError => match data {
            Some(Value::Object(_) | Value::String(_)) => {}
            _ => return Err(DecodeError::InvalidPayload),
        },
    }
    match data {
        Some(v) => check_placeholders(v, attachments),
        None if attachments == 0 => Ok(()),
        None => Err(DecodeError::BadPlaceholder),
    }
}

/// Every placeholder must be `{"_placeholder":true,"num":n}` with `n` an integer in
/// `0..attachments`, and each index must appear exactly once. Iterative, so a deep value built by
/// an application cannot overflow the stack; scalars are looked at where they lie and the first
/// containers wait on the stack frame, so a flat payload (most are) costs no allocation.
fn check_placeholders(data: &Value, attachments: usize) -> Result<(), DecodeError> {
    let mut seen = vec![false; attachments];
    let mut found = 0usize;
    let mut todo = Containers::default();
    todo.push(data);
    while let Some(v) = todo.pop() {
        match v {
            Value::Array(a) => a.iter().for_each(|c| todo.push(c)),
            Value::Object(o) => {
                if o.get(PLACEHOLDER_KEY) == Some(&Value::Bool(true)) {
                    if o.len() != 2 {
                        return Err(DecodeError::BadPlaceholder);
                    }
                    let slot = o
                        .get(PLACEHOLDER_NUM)
                        .and_then(Value::as_u64)
                        .and_then(|n| usize::try_from(n).ok())
                        .and_then(|n| seen.get_mut(n))
                        .ok_or(DecodeError::BadPlaceholder)?;
                    if *slot {
                        return Err(DecodeError::BadPlaceholder);
                    }
                    *slot = true;
                    found += 1;
                } else {
                    o.values().for_each(|c| todo.push(c));
                }
            }
            _ => {}
        }
    }
    if found == attachments {
        Ok(())
    } else {
        Err(DecodeError::BadPlaceholder)
    }
}

/// The arrays and objects [`check_placeholders`] has still to look into: the first few in place,
/// the rest in a vector. Scalars are never kept (they hold no placeholder).
#[derive(Default)]
struct Containers<'a> {
    near: [Option<&'a Value>; 8],
    near_len: usize,
    far: Vec<&'a Value>,
}

impl<'a> Containers<'a> {
    fn push(&mut self, v: &'a Value) {
        if !matches!(v, Value::Array(_) | Value::Object(_)) {
            return;
        }
        match self.near.get_mut(self.near_len) {
            Some(slot) => {
                *slot = Some(v);
                self.near_len += 1;
            }
            None => self.far.push(v),
        }
    }

    fn pop(&mut self) -> Option<&'a Value> {
        if let Some(v) = self.far.pop() {
            return Some(v);
        }
        self.near_len = self.near_len.checked_sub(1)?;
        self.near.get_mut(self.near_len)?.take()
    }
}

/// Where the reassembler is.
#[derive(Debug, Clone, PartialEq)]
enum State {
    Idle,
    /// Boxed: every Socket.IO session has a reassembler, and few ever hold a packet.
    Expecting {
        packet: Box<Packet>,
        remaining: usize,
    },
}

/// Turns the Engine.IO messages of one connection into complete Socket.IO packets: a Binary*
/// header is held until its attachments have arrived.
///
/// On any error the pending packet is dropped and the reassembler is idle again; a server closes
/// the connection anyway.
#[derive(Debug, Clone, PartialEq)]
pub struct Reassembler {
    limits: DecodeLimits,
    state: State,
    buffered: usize,
}

impl Reassembler {
    /// An idle reassembler applying `limits` to every text part.
    pub fn new(limits: DecodeLimits) -> Self {
        Self {
            limits,
            state: State::Idle,
            buffered: 0,
        }
    }

    /// Feed one Engine.IO text message. `Ok(Some(packet))` when it is complete (non-binary packets
    /// and binary ones announcing 0 attachments complete at once), `Ok(None)` when attachments
    /// must follow.
    pub fn push_text(&mut self, s: &str) -> Result<Option<Packet>, DecodeError> {
        if !self.is_idle() {
            self.reset();
            return Err(DecodeError::UnexpectedText);
        }
        let (mut packet, expected) = decode_text(s, &self.limits)?;
        if expected == 0 {
            return Ok(Some(packet));
        }
        packet.attachments = Vec::with_capacity(expected);
        self.buffered = s.len();
        self.state = State::Expecting {
            packet: Box::new(packet),
            remaining: expected,
        };
        Ok(None)
    }

    /// Feed one Engine.IO binary message. `Ok(Some(packet))` when it was the last attachment.
    pub fn push_binary(&mut self, b: Vec<u8>) -> Result<Option<Packet>, DecodeError> {
        let State::Expecting { packet, remaining } = &mut self.state else {
            return Err(DecodeError::UnexpectedBinary);
        };
        self.buffered = self.buffered.saturating_add(b.len());
        packet.attachments.push(b);
        *remaining = remaining.saturating_sub(1);
        if *remaining > 0 {
            return Ok(None);
        }
        self.buffered = 0;
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Expecting { packet, .. } => Ok(Some(*packet)),
            State::Idle => Err(DecodeError::UnexpectedBinary),
        }
    }

    /// True when no attachment is expected.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Attachments still expected for the pending packet (0 when idle).
    pub fn expected_attachments(&self) -> usize {
        match &self.state {
            State::Idle => 0,
            State::Expecting { remaining, .. } => *remaining,
        }
    }

    /// Bytes held while waiting for attachments: the text part's length plus the attachments
    /// received so far, so the caller can bound memory per connection.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Drop any pending packet (e.g. when the connection closes).
    pub fn reset(&mut self) {
        self.state = State::Idle;
        self.buffered = 0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn lim() -> DecodeLimits {
        DecodeLimits::default()
    }

    fn dec(s: &str) -> Result<(Packet, usize), DecodeError> {
        decode_text(s, &lim())
    }

    fn err(s: &str) -> DecodeError {
        dec(s).unwrap_err()
    }

    fn pkt(kind: PacketKind, nsp: &str, id: Option<u64>, data: Option<Value>) -> Packet {
        Packet {
            kind,
            nsp: nsp.to_owned(),
            id,
            data,
            attachments: Vec::new(),
        }
    }

    /// Text vector both ways: encode gives `wire`, decode gives the packet (without attachments)
    /// and the attachment count.
    fn both_ways(p: &Packet, wire: &str) {
        let (text, att) = encode(p);
        assert_eq!(text, wire);
        assert_eq!(att, p.attachments.as_slice());
        let (d, n) = dec(wire).unwrap();
        assert_eq!(n, p.attachments.len());
        assert_eq!(
            d,
            Packet {
                attachments: Vec::new(),
                ..p.clone()
            }
        );
        let mut r = Reassembler::new(lim());
        let mut out = r.push_text(wire).unwrap();
        for a in &p.attachments {
            assert!(out.is_none());
            out = r.push_binary(a.clone()).unwrap();
        }
        assert_eq!(out.as_ref(), Some(p));
        assert!(r.is_idle());
        assert_eq!(r.buffered_bytes(), 0);
    }

    // ---- vectors from docs/socket.io-protocol/v5-current.md ----

    #[test]
    fn doc_connect() {
        use PacketKind::*;
        both_ways(&pkt(Connect, "/", None, None), "0");
        both_ways(
            &pkt(
                Connect,
                "/admin",
                None,
                Some(json!({"sid": "oSO0OpakMV_3jnilAAAA"})),
            ),
            r#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#,
        );
        both_ways(
            &pkt(Connect, "/admin", None, Some(json!({"token": "123"}))),
            r#"0/admin,{"token":"123"}"#,
        );
        both_ways(&pkt(Connect, "/admin", None, None), "0/admin,");
        both_ways(
            &Packet::connect("/", Some(json!({"sid": "wZX3oN0bSVIhsaknAAAI"}))),
            r#"0{"sid":"wZX3oN0bSVIhsaknAAAI"}"#,
        );
        both_ways(
            &pkt(
                Connect,
                "/admin",
                None,
                Some(json!({"sid": "-G5j-67EZFp-q59rADQM"})),
            ),
            r#"0/admin,{"sid":"-G5j-67EZFp-q59rADQM"}"#,
        );
    }

    #[test]
    fn doc_connect_error() {
        both_ways(
            &Packet::connect_error("/", "Not authorized"),
            r#"4{"message":"Not authorized"}"#,
        );
        both_ways(
            &Packet::connect_error("/random", "Invalid namespace"),
            r#"4/random,{"message":"Invalid namespace"}"#,
        );
        // Pre-v5 string payload is still accepted.
        both_ways(
            &pkt(PacketKind::ConnectError, "/", None, Some(json!("nope"))),
            r#"4"nope""#,
        );
    }

    #[test]
    fn doc_events() {
        both_ways(&Packet::event("/", "foo", [], None), r#"2["foo"]"#);
        both_ways(
            &Packet::event("/admin", "bar", [], None),
            r#"2/admin,["bar"]"#,
        );
        both_ways(
            &Packet::event("/", "hey", [json!("Jude")], None),
            r#"2["hey","Jude"]"#,
        );
        both_ways(
            &Packet::event("/", "hello", [json!(1)], None),
            r#"2["hello",1]"#,
        );
        both_ways(&Packet::event("/", "hello", [], None), r#"2["hello"]"#);
        both_ways(&Packet::event("/", "world", [], None), r#"2["world"]"#);
    }

    #[test]
    fn doc_acks() {
        both_ways(&Packet::event("/", "foo", [], Some(12)), r#"212["foo"]"#);
        both_ways(&Packet::ack("/", 12, vec![]), "312[]");
        both_ways(
            &Packet::event("/admin", "foo", [], Some(13)),
            r#"2/admin,13["foo"]"#,
        );
        both_ways(
            &Packet::ack("/admin", 13, vec![json!("bar")]),
            r#"3/admin,13["bar"]"#,
        );
        both_ways(
            &Packet::event("/admin", "bar", [], Some(12)),
            r#"2/admin,12["bar"]"#,
        );
        both_ways(
            &Packet::event("/admin", "tellme", [], Some(1)),
            r#"2/admin,1["tellme"]"#,
        );
        both_ways(&Packet::ack("/", 14, vec![json!("bar")]), r#"314["bar"]"#);
    }

    #[test]
    fn doc_disconnect() {
        both_ways(&Packet::disconnect("/"), "1");
        both_ways(&Packet::disconnect("/admin"), "1/admin,");
    }

    #[test]
    fn doc_binary() {
        let p = Packet {
            kind: PacketKind::BinaryEvent,
            nsp: "/".into(),
            id: None,
            data: Some(json!(["baz", placeholder(0)])),
            attachments: vec![vec![1, 2, 3, 4]],
        };
        both_ways(&p, r#"51-["baz",{"_placeholder":true,"num":0}]"#);

        let p = Packet {
            kind: PacketKind::BinaryEvent,
            nsp: "/admin".into(),
            id: None,
            data: Some(json!(["baz", placeholder(0), placeholder(1)])),
            attachments: vec![vec![1, 2], vec![3, 4]],
        };
        both_ways(
            &p,
            r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        );

        let p = Packet {
            kind: PacketKind::BinaryAck,
            nsp: "/".into(),
            id: Some(15),
            data: Some(json!(["bar", placeholder(0)])),
            attachments: vec![vec![1, 2, 3, 4]],
        };
        both_ways(&p, r#"61-15["bar",{"_placeholder":true,"num":0}]"#);

        let p = Packet {
            kind: PacketKind::BinaryAck,
            nsp: "/admin".into(),
            id: Some(1),
            data: Some(json!([placeholder(0)])),
            attachments: vec![vec![0xde, 0xad]],
        };
        both_ways(&p, r#"61-/admin,1[{"_placeholder":true,"num":0}]"#);

        let p = Packet {
            kind: PacketKind::BinaryEvent,
            nsp: "/".into(),
            id: None,
            data: Some(json!(["hello", placeholder(0)])),
            attachments: vec![vec![9]],
        };
        both_ways(&p, r#"51-["hello",{"_placeholder":true,"num":0}]"#);

        // Zero attachments: labelled binary, completes at once.
        let p = pkt(PacketKind::BinaryEvent, "/", None, Some(json!(["x"])));
        both_ways(&p, r#"50-["x"]"#);
    }

    #[test]
    fn reassembler_sequence() {
        let mut r = Reassembler::new(lim());
        let head =
            r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        assert_eq!(r.push_text(head).unwrap(), None);
        assert!(!r.is_idle());
        assert_eq!(r.expected_attachments(), 2);
        assert_eq!(r.buffered_bytes(), head.len());
        assert_eq!(r.push_binary(vec![1, 2]).unwrap(), None);
        assert_eq!(r.buffered_bytes(), head.len() + 2);
        assert_eq!(r.expected_attachments(), 1);
        // A text message now is a protocol error; the pending packet is dropped.
        let mut r2 = r.clone();
        assert_eq!(r2.push_text(r#"2["x"]"#), Err(DecodeError::UnexpectedText));
        assert!(r2.is_idle());
        assert_eq!(r2.buffered_bytes(), 0);

        let p = r.push_binary(vec![3, 4]).unwrap().unwrap();
        assert_eq!(p.attachments, vec![vec![1, 2], vec![3, 4]]);
        assert_eq!(event_name(&p), Some("baz"));
        assert!(r.is_idle());
        assert_eq!(r.push_binary(vec![5]), Err(DecodeError::UnexpectedBinary));
        // Non-binary packets complete at once and leave it idle.
        let p = r.push_text(r#"2["foo"]"#).unwrap().unwrap();
        assert_eq!(p, Packet::event("/", "foo", [], None));
        assert!(r.is_idle());
        // A bad header never leaves it waiting.
        assert_eq!(
            r.push_text(r#"51-["a",{"_placeholder":true,"num":1}]"#),
            Err(DecodeError::BadPlaceholder)
        );
        assert!(r.is_idle());
    }

    /// An ack encoded from its parts is byte for byte the packet's encoding.
    #[test]
    fn an_ack_from_its_parts_is_the_acks_encoding() {
        let cases = [
            ("/", 0, vec![]),
            (
                "/admin",
                u64::MAX,
                vec![json!("ok"), json!({"n": [1, 2.5, null]})],
            ),
            ("/", 7, vec![json!("é \"quoted\" \n"), json!(true)]),
        ];
        for (nsp, id, args) in cases {
            let mut from_parts = Vec::new();
            encode_ack_into(nsp, id, &args, &mut from_parts);
            let packet = Packet::ack(nsp, id, args);
            assert_eq!(String::from_utf8(from_parts).unwrap(), encode_text(&packet));
        }
    }

    #[test]
    fn ids_and_counts_are_written_as_decimal_formats_them() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
            let mut ack = Vec::new();
            encode_ack_into("/", n, &[json!(1)], &mut ack);
            assert_eq!(ack, format!("3{n}[1]").into_bytes());
        }
    }

    /// Every kind encodes to its exact bytes, as bytes and as text.
    #[test]
    fn every_kind_encodes_to_its_exact_bytes() {
        let mut binary = Packet::event("/x", "up", [placeholder(0), json!("é")], Some(9));
        binary.attachments.push(vec![7]);
        let packets = [
            Packet::connect("/", None),
            Packet::connect("/admin", Some(json!({"sid": "abc"}))),
            Packet::disconnect("/chat"),
            Packet::event("/", "news", [json!({"a": [1, "\u{1e}"]})], None),
            Packet::ack("/admin", 3, vec![json!(null)]),
            binary,
            Packet::connect_error("/", "not allowed"),
        ];
        let wire = [
            "0",
            r#"0/admin,{"sid":"abc"}"#,
            "1/chat,",
            r#"2["news",{"a":[1,"\u001e"]}]"#,
            "3/admin,3[null]",
            r#"51-/x,9["up",{"_placeholder":true,"num":0},"é"]"#,
            r#"4{"message":"not allowed"}"#,
        ];
        for (p, wire) in packets.iter().zip(wire) {
            let mut bytes = Vec::new();
            encode_text_to(p, &mut bytes);
            assert_eq!(String::from_utf8(bytes).unwrap(), wire, "{p:?}");
            assert_eq!(encode_text(p), wire, "{p:?}");
        }
    }

    #[test]
    fn wire_kind_promotion_and_event_name() {
        let mut p = Packet::event("/", "up", [placeholder(0)], None);
        p.attachments.push(vec![7]);
        assert_eq!(p.wire_kind(), PacketKind::BinaryEvent);
        let (text, att) = encode(&p);
        assert_eq!(text, r#"51-["up",{"_placeholder":true,"num":0}]"#);
        assert_eq!(att, &[vec![7u8]]);
        assert!(validate(&p, &lim()).is_ok());
        // Kinds that cannot carry binary never send it.
        let mut c = Packet::connect("/", None);
        c.attachments.push(vec![1]);
        assert_eq!(encode(&c), ("0".to_owned(), &[][..]));
        assert_eq!(validate(&c, &lim()), Err(DecodeError::BadAttachmentCount));
        assert_eq!(event_name(&Packet::ack("/", 1, vec![json!("x")])), None);
        assert_eq!(event_name(&Packet::event("/", "e", [], None)), Some("e"));
        // encode_text_into appends after an Engine.IO prefix.
        let mut s = String::from("4");
        encode_text_into(&Packet::event("/", "foo", [], None), &mut s);
        assert_eq!(s, r#"42["foo"]"#);
    }

    #[test]
    fn validate_outbound() {
        let l = lim();
        assert!(validate(&Packet::event("/", "ok", [], Some(1)), &l).is_ok());
        assert_eq!(
            validate(&Packet::event("/", "disconnect", [], None), &l),
            Err(DecodeError::ReservedEventName)
        );
        assert_eq!(
            validate(&Packet::event("admin", "x", [], None), &l),
            Err(DecodeError::BadNamespace)
        );
        assert_eq!(
            validate(&Packet::event("/a,b", "x", [], None), &l),
            Err(DecodeError::BadNamespace)
        );
        assert_eq!(
            validate(&Packet::event("", "x", [], None), &l),
            Err(DecodeError::BadNamespace)
        );
        let mut c = Packet::connect("/", None);
        c.id = Some(3);
        assert_eq!(validate(&c, &l), Err(DecodeError::BadAckId));
        let mut b = Packet::event("/", "x", [], None);
        b.attachments = vec![vec![]; 11];
        assert_eq!(validate(&b, &l), Err(DecodeError::TooManyAttachments));
        // A deep value built by an application does not overflow our walk.
        let mut deep = json!(1);
        for _ in 0..10_000 {
            deep = Value::Array(vec![deep]);
        }
        assert!(check_placeholders(&deep, 0).is_ok());
        // Many containers side by side (past the ones kept in place): every placeholder is
        // still seen, wherever it sits, and a duplicate among them still refused.
        let many = |nums: &[usize]| {
            let items = nums
                .iter()
                .map(|&n| json!([{"k": [{"_placeholder": true, "num": n}]}]));
            Value::Array(items.collect())
        };
        let all: Vec<usize> = (0..20).rev().collect();
        assert!(check_placeholders(&many(&all), 20).is_ok());
        let mut twice = all.clone();
        twice[19] = 3;
        assert_eq!(
            check_placeholders(&many(&twice), 20),
            Err(DecodeError::BadPlaceholder)
        );
        // serde_json drops values recursively; unwind it by hand so the test thread is safe.
        let mut cur = deep;
        while let Value::Array(mut a) = cur {
            cur = a.pop().unwrap_or(Value::Null);
        }
    }

    // ---- hostile inputs and shape rules ----

    #[test]
    fn kinds_and_empty() {
        use DecodeError::*;
        assert_eq!(err(""), Empty);
        assert_eq!(err("7"), UnknownKind);
        assert_eq!(err("abc"), UnknownKind);
        assert_eq!(err("é"), UnknownKind);
        assert_eq!(err("\u{1e}"), UnknownKind);
        assert_eq!(err("-1"), UnknownKind);
    }

    #[test]
    fn attachment_counts() {
        use DecodeError::*;
        assert_eq!(err(r#"5999999999-["a"]"#), TooManyAttachments);
        assert_eq!(err(r#"511-["a"]"#), TooManyAttachments);
        assert_eq!(err(r#"599999999999999999999999-["a"]"#), TooManyAttachments);
        let huge = format!("5{}-[\"a\"]", "9".repeat(10_000));
        assert_eq!(err(&huge), TooManyAttachments);
        assert_eq!(err(r#"5-["a"]"#), BadAttachmentCount);
        assert_eq!(err(r#"5["a"]"#), BadAttachmentCount);
        assert_eq!(err(r#"51["a"]"#), BadAttachmentCount);
        assert_eq!(err(r#"5a-["a"]"#), BadAttachmentCount);
        assert_eq!(err("5"), BadAttachmentCount);
        assert_eq!(err("61"), BadAttachmentCount);
        assert_eq!(err(r#"5+1-["a"]"#), BadAttachmentCount);
        // Ten is allowed, and the limit is configurable.
        let ten: Vec<Value> = (0..10).map(placeholder).collect();
        let s = format!("510-{}", json!(["a", ten]));
        assert_eq!(dec(&s).unwrap().1, 10);
        let tight = DecodeLimits {
            max_attachments: 1,
            ..lim()
        };
        assert_eq!(decode_text(&s, &tight), Err(TooManyAttachments));
    }

    #[test]
    fn placeholders() {
        use DecodeError::*;
        let cases = [
            r#"51-["hello",{"_placeholder":true,"num":"splice"}]"#,
            r#"51-["hello",{"_placeholder":true,"num":-1}]"#,
            r#"51-["hello",{"_placeholder":true,"num":1.5}]"#,
            r#"51-["hello",{"_placeholder":true,"num":0.0}]"#,
            r#"51-["hello",{"_placeholder":true,"num":1}]"#,
            r#"51-["hello",{"_placeholder":true,"num":18446744073709551615}]"#,
            r#"51-["hello",{"_placeholder":true,"num":1e0}]"#,
            r#"51-["hello",{"_placeholder":true}]"#,
            r#"51-["hello",{"_placeholder":true,"num":null}]"#,
            r#"51-["hello",{"_placeholder":true,"num":0,"x":1}]"#,
            // missing index 1, duplicate index 0
            r#"52-["hello",{"_placeholder":true,"num":0}]"#,
            r#"52-["hello",{"_placeholder":true,"num":0},{"_placeholder":true,"num":0}]"#,
            // no placeholder at all, or no payload
            r#"51-["hello"]"#,
            r#"61-1[]"#,
            // placeholders in packets that carry no binary
            r#"2["hello",{"_placeholder":true,"num":0}]"#,
            r#"50-["hello",{"_placeholder":true,"num":0}]"#,
            r#"0{"a":{"_placeholder":true,"num":0}}"#,
        ];
        for c in cases {
            assert_eq!(err(c), BadPlaceholder, "{c}");
        }
        // serde_json refuses out-of-range numbers before we look.
        assert_eq!(
            err(r#"51-["hello",{"_placeholder":true,"num":1e400}]"#),
            InvalidJson
        );
        // Nested placeholders, any order, are fine.
        let (p, n) =
            dec(r#"52-["h",{"k":[{"_placeholder":true,"num":1}]},{"_placeholder":true,"num":0}]"#)
                .unwrap();
        assert_eq!(n, 2);
        assert_eq!(p.kind, PacketKind::BinaryEvent);
        // A "_placeholder" that is not `true` is ordinary data.
        assert!(dec(r#"2["h",{"_placeholder":"true","num":"splice"}]"#).is_ok());
    }

    #[test]
    fn event_shapes() {
        use DecodeError::*;
        assert_eq!(err(r#"2[{"toString":"x"}]"#), BadEventName);
        assert_eq!(err(r#"2[null,"x"]"#), BadEventName);
        assert_eq!(err(r#"2[1,"x"]"#), BadEventName);
        assert_eq!(err(r#"2[["x"]]"#), BadEventName);
        assert_eq!(err("2[]"), InvalidPayload);
        assert_eq!(err("2{}"), InvalidPayload);
        assert_eq!(err(r#"2"x""#), InvalidPayload);
        assert_eq!(err("2"), InvalidPayload);
        assert_eq!(err("2null"), InvalidPayload);
        assert_eq!(err("2/admin,"), InvalidPayload);
        assert_eq!(err("50-[]"), InvalidPayload);
        for name in RESERVED_EVENTS {
            assert_eq!(err(&format!("2[\"{name}\"]")), ReservedEventName, "{name}");
            assert_eq!(
                err(&format!("50-[\"{name}\"]")),
                ReservedEventName,
                "{name}"
            );
        }
        // Not reserved in v5 (socket.io 4 servers accept it from clients).
        assert!(dec(r#"2["error"]"#).is_ok());
        assert!(dec(r#"2["Connect"]"#).is_ok());
        assert!(dec(r#"2[""]"#).is_ok());
        // Malformed packets from the conformance suite (after the Engine.IO `4`).
        assert_eq!(err("abc"), UnknownKind);
        assert_eq!(err("2{}"), InvalidPayload);
        assert_eq!(err(r#"2abc["a"]"#), InvalidJson);
    }

    #[test]
    fn other_shapes() {
        use DecodeError::*;
        assert_eq!(err("0[]"), InvalidPayload);
        assert_eq!(err(r#"0"x""#), InvalidPayload);
        assert_eq!(err("0null"), InvalidPayload);
        assert_eq!(err("1{}"), InvalidPayload);
        assert_eq!(err("1/admin,[]"), InvalidPayload);
        assert_eq!(err("4"), InvalidPayload);
        assert_eq!(err("4[]"), InvalidPayload);
        assert_eq!(err("41"), BadAckId);
        assert_eq!(err("3[]"), BadAckId);
        assert_eq!(err("3/a,[]"), BadAckId);
        assert_eq!(err("31"), InvalidPayload);
        assert_eq!(err("31{}"), InvalidPayload);
        assert_eq!(err("61-"), BadAckId);
        assert_eq!(err("012"), BadAckId);
        assert_eq!(err("0/admin,5{}"), BadAckId);
        assert_eq!(err("15"), BadAckId);
        // JSON errors: trailing garbage, two values, unterminated.
        assert_eq!(err(r#"2["a"]x"#), InvalidJson);
        assert_eq!(err(r#"2["a"]["b"]"#), InvalidJson);
        assert_eq!(err(r#"2["a""#), InvalidJson);
        assert_eq!(err(r#"0{"a":1}}"#), InvalidJson);
        assert_eq!(err("2\u{0}"), InvalidJson);
        // Surrounding JSON whitespace is accepted, as JSON.parse does.
        assert!(dec("2 [\"a\"] ").is_ok());
    }

    #[test]
    fn ack_ids() {
        use DecodeError::*;
        let (p, _) = dec(&format!("3{}[]", u64::MAX)).unwrap();
        assert_eq!(p.id, Some(u64::MAX));
        assert_eq!(err("318446744073709551616[]"), BadAckId);
        assert_eq!(err("399999999999999999999[]"), BadAckId);
        assert_eq!(err("3100000000000000000000[]"), BadAckId);
        let huge = format!("3{}[]", "1".repeat(10_000));
        assert_eq!(err(&huge), BadAckId);
        let huge = format!("2/a,{}[\"x\"]", "9".repeat(10_000));
        assert_eq!(err(&huge), BadAckId);
        // Leading zeros are read as decimal, as the reference parser does.
        assert_eq!(dec("3007[]").unwrap().0.id, Some(7));
        assert_eq!(dec("30[]").unwrap().0.id, Some(0));
    }

    #[test]
    fn namespaces() {
        use DecodeError::*;
        // The reference parser also ends a namespace at the end of the string.
        assert_eq!(dec("0/admin").unwrap().0.nsp, "/admin");
        assert_eq!(dec("0/,").unwrap().0.nsp, "/");
        assert_eq!(dec("1/").unwrap().0.nsp, "/");
        assert_eq!(dec("0/ünï,").unwrap().0.nsp, "/ünï");
        assert_eq!(err("0/a\u{1e}b,"), BadNamespace);
        assert_eq!(err("0/a\nb,"), BadNamespace);
        assert_eq!(err("0/a\u{7f},"), BadNamespace);

        let max = format!("0/{},", "n".repeat(255));
        assert_eq!(dec(&max).unwrap().0.nsp.len(), 256);
        let over = format!("0/{},", "n".repeat(256));
        assert_eq!(err(&over), BadNamespace);
        let over_unterminated = format!("0/{}", "n".repeat(256));
        assert_eq!(err(&over_unterminated), BadNamespace);
        let mb = format!("2/{},[\"x\"]", "n".repeat(1 << 20));
        assert_eq!(err(&mb), BadNamespace);
        let mb_open = format!("0/{}", "n".repeat(1 << 20));
        assert_eq!(err(&mb_open), BadNamespace);
        // Multibyte characters near the limit are counted in bytes and never split.
        let multi = format!("0/{},", "é".repeat(200));
        assert_eq!(err(&multi), BadNamespace);
    }

    #[test]
    fn deep_json() {
        let deep = format!("2[\"a\",{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(err(&deep), DecodeError::InvalidJson);
        let deep = format!("0{}", "{\"a\":".repeat(100_000));
        assert_eq!(err(&deep), DecodeError::InvalidJson);
        // Within serde_json's limit: accepted.
        let ok = format!("2[\"a\",{}{}]", "[".repeat(100), "]".repeat(100));
        assert!(dec(&ok).is_ok());
    }

    #[test]
    fn display_and_error() {
        let e: Box<dyn std::error::Error> = Box::new(DecodeError::BadPlaceholder);
        assert_eq!(e.to_string(), "invalid binary placeholder");
        assert_eq!(DecodeError::Empty.to_string(), "empty socket.io packet");
    }

    // ---- property tests ----

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // Dyadic fractions print and parse exactly.
            (-1_000_000i32..1_000_000, 0u32..8)
                .prop_map(|(m, e)| Value::from(f64::from(m) / f64::from(1u32 << e))),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_nsp() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("/".to_owned()),
            "[^,\\p{Cc}]{0,40}".prop_map(|s| format!("/{s}")),
        ]
        .prop_filter("fits the limit", |s| s.len() <= 256)
    }

    fn arb_event_name() -> impl Strategy<Value = String> {
        any::<String>().prop_filter("not reserved", |s| !RESERVED_EVENTS.contains(&s.as_str()))
    }

    /// Insert placeholders 0..n at arbitrary spots of `args`, some wrapped in an object.
    fn with_placeholders(
        mut args: Vec<Value>,
        spots: &[(prop::sample::Index, bool)],
    ) -> Vec<Value> {
        for (num, (at, wrap)) in spots.iter().enumerate() {
            let ph = if *wrap {
                json!({ "file": placeholder(num) })
            } else {
                placeholder(num)
            };
            let i = at.index(args.len() + 1);
            args.insert(i, ph);
        }
        args
    }

    fn arb_packet() -> impl Strategy<Value = Packet> {
        let args = prop::collection::vec(arb_json(), 0..4);
        let spots = prop::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 0..=10);
        let bins = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 10);
        (
            0u8..7,
            arb_nsp(),
            any::<u64>(),
            any::<bool>(),
            arb_event_name(),
            args,
            spots,
            bins,
            arb_json(),
        )
            .prop_map(|(k, nsp, id, has_id, name, args, spots, bins, extra)| {
                let kind = PacketKind::from_digit(b'0' + k).unwrap();
                let mut p = Packet::new(kind, nsp);
                match kind {
                    PacketKind::Connect => {
                        if has_id {
                            p.data = Some(json!({ "token": extra, "n": id }));
                        }
                    }
                    PacketKind::Disconnect => {}
                    PacketKind::ConnectError => {
                        p.data = Some(if has_id {
                            json!({ "message": name, "data": extra })
                        } else {
                            Value::String(name)
                        });
                    }
                    PacketKind::Event | PacketKind::Ack => {
                        p.id = (has_id || kind == PacketKind::Ack).then_some(id);
                        let mut arr = args;
                        if kind == PacketKind::Event {
                            arr.insert(0, Value::String(name));
                        }
                        p.data = Some(Value::Array(arr));
                    }
                    PacketKind::BinaryEvent | PacketKind::BinaryAck => {
                        p.id = (has_id || kind == PacketKind::BinaryAck).then_some(id);
                        let mut arr = with_placeholders(args, &spots);
                        if kind == PacketKind::BinaryEvent {
                            arr.insert(0, Value::String(name));
                        }
                        p.data = Some(Value::Array(arr));
                        p.attachments = bins.into_iter().take(spots.len()).collect();
                    }
                }
                p
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn round_trip(p in arb_packet()) {
            prop_assert_eq!(validate(&p, &lim()), Ok(()));
            let (text, att) = encode(&p);
            let (d, n) = dec(&text).unwrap();
            prop_assert_eq!(n, att.len());
            prop_assert_eq!(&d.data, &p.data);
            let mut r = Reassembler::new(lim());
            let mut out = r.push_text(&text).unwrap();
            let mut held = text.len();
            for a in att {
                prop_assert!(out.is_none());
                prop_assert_eq!(r.buffered_bytes(), held);
                held += a.len();
                out = r.push_binary(a.clone()).unwrap();
            }
            prop_assert_eq!(out, Some(p));
            prop_assert!(r.is_idle());
        }

        #[test]
        fn decode_never_panics(s in any::<String>()) {
            let _ = dec(&s);
            let _ = Reassembler::new(lim()).push_text(&s);
        }

        #[test]
        fn decode_never_panics_protocolish(
            s in "[0-6]{1,2}[0-9\\-/,\\[\\]{}\":_a-z\u{1e}é ]{0,40}"
        ) {
            if let Ok((p, n)) = dec(&s) {
                // Whatever decodes re-encodes to something that decodes to the same packet.
                let mut p2 = p.clone();
                p2.attachments = vec![Vec::new(); n];
                prop_assert_eq!(validate(&p2, &lim()), Ok(()));
                let again = dec(&encode_text(&p2)).unwrap();
                prop_assert_eq!(again, (p, n));
            }
        }
    }
}
