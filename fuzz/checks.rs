//! Per-target checks shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`, via
//! `#[path = "../checks.rs"] mod checks;`) and by the corpus replay under plain `cargo test`
//! (`tests/fuzz_corpus.rs`). One function per target; each takes the raw input bytes and panics
//! only when a codec breaks one of its promises: a panic inside a codec, a round trip that does not
//! come back, or a bound that does not hold.
//!
//! Inputs are interpreted so that corpus files stay readable: text targets read the bytes as UTF-8
//! (lossily), the reassembler reads one message per line, the SSE target splits its input on 0xFF.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::Value;
use tidings::proto::{eio, http, sio, sse};

/// A target's check: panics when a codec breaks a promise on `data`.
pub type Check = fn(&[u8]);

/// Every target by name, as in `fuzz/fuzz_targets/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("http_head", http_head),
    ("query", query),
    ("eio_packet", eio_packet),
    ("eio_payload", eio_payload),
    ("sio_packet", sio_packet),
    ("sio_reassembler", sio_reassembler),
    ("sse_roundtrip", sse_roundtrip),
    ("engine", engine),
    ("request_reader", request_reader),
    ("ws_frames", ws_frames),
    ("cluster_wire", cluster_wire),
    #[cfg(feature = "redis")]
    ("adapter_wire", adapter_wire),
];

/// The targets that need a cargo feature of tidings, so that a replay built without it can tell
/// a missing check from a skipped one.
pub const FEATURE_TARGETS: &[(&str, &str)] = &[("adapter_wire", "redis")];

/// The Node socket.io Redis adapter's messages (the `redis` feature): decoding any bytes never
/// panics, what decodes round-trips, built broadcasts round-trip.
#[cfg(feature = "redis")]
pub fn adapter_wire(data: &[u8]) {
    tidings::fuzzing::adapter_wire(data);
}

/// The cluster's Redis messages: decoding any bytes never panics, what decodes encodes back to
/// the same bytes, built messages round-trip (the check lives in `tidings::fuzzing`).
pub fn cluster_wire(data: &[u8]) {
    tidings::fuzzing::cluster_wire(data);
}

/// `FrameBoundaries` (which tells io whether a WebSocket connection is between two messages):
/// any bytes in two chunkings give the same state; and on a stream of well-formed client frames
/// built from the input, its answer after every frame is the model's (a message ends with a data
/// frame that has FIN; control frames between fragments change nothing).
pub fn ws_frames(data: &[u8]) {
    use tidings::proto::ws::{frame_header, FrameBoundaries};
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    // Raw bytes: whatever they are, feeding them whole or byte by byte ends in the same state.
    let chunk = usize::from(first % 16) + 1;
    let mut whole = FrameBoundaries::default();
    let largest_whole = whole.feed(rest);
    let mut pieces = FrameBoundaries::default();
    let mut largest_pieces = 0;
    for c in rest.chunks(chunk) {
        largest_pieces = largest_pieces.max(pieces.feed(c));
    }
    assert_eq!(whole, pieces, "chunking changed the state");
    assert_eq!(largest_whole, largest_pieces);
    // Frames: two input bytes each (FIN and opcode; a length class), masked as a client's.
    let mut stream = Vec::new();
    let mut ends = Vec::new();
    let mut fragmented = false;
    for spec in rest.chunks_exact(2).take(64) {
        let fin = spec[0] & 0x80 != 0;
        let opcode = [0x0, 0x1, 0x2, 0x8, 0x9, 0xA][usize::from(spec[0] & 0x7f) % 6];
        let len = match spec[1] {
            0..=199 => usize::from(spec[1]) % 126,
            200..=249 => 126 + usize::from(spec[1]) * 3,
            _ => 65_536 + usize::from(spec[1]),
        };
        let (mut h, n) = frame_header(opcode, len);
        if !fin {
            h[0] &= 0x7f;
        }
        h[1] |= 0x80;
        stream.extend_from_slice(&h[..n]);
        stream.extend_from_slice(&[9, 8, 7, 6]);
        stream.resize(stream.len() + len, 0x55);
        if opcode < 0x8 {
            fragmented = !fin;
        }
        ends.push((stream.len(), !fragmented, len as u64));
    }
    let mut t = FrameBoundaries::default();
    let mut at = 0;
    for (end, between, len) in ends {
        let piece = &stream[at..end];
        // The frame in two parts: the largest length is reported once its header is complete.
        let cut = (piece.len() / 2).max(1).min(piece.len());
        let a = t.feed(&piece[..cut]);
        assert!(!t.between_messages() || cut == piece.len());
        let b = t.feed(&piece[cut..]);
        assert_eq!(a.max(b), len, "the frame's length");
        assert_eq!(
            t.between_messages(),
            between,
            "after the frame ending at {end}"
        );
        at = end;
    }
}

/// How a connection frames requests from the bytes it reads (the library's own checks: two
/// chunkings agree, bodies have their declared length).
pub fn request_reader(data: &[u8]) {
    tidings::fuzzing::request_reader(data);
}

/// The whole engine: operation sequences on a simulated clock, with its invariants checked by
/// the library's own driver (no write after close, no delivery outside the audience, everything
/// drained at the end).
pub fn engine(data: &[u8]) {
    tidings::fuzzing::engine(data);
}

// ---------------------------------------------------------------------------------------------
// HTTP heads
// ---------------------------------------------------------------------------------------------

/// `HeadScanner` fed the input in several chunkings must agree with one scan of the whole input;
/// where it finds a head end, `parse_request_head` must take exactly that many bytes (the io layer
/// drains the scanner's count, so a disagreement would mis-frame the body).
pub fn http_head(data: &[u8]) {
    let limits = [
        http::HeadLimits::default(),
        http::HeadLimits {
            max_head_bytes: 96,
            max_headers: 3,
        },
    ];
    for l in &limits {
        head_with_limits(data, l);
    }
}

fn head_with_limits(data: &[u8], limits: &http::HeadLimits) {
    let whole = http::HeadScanner::new().find_head_end(data, limits);
    // A chunk size the fuzzer can steer through the content, besides the fixed ones.
    let derived = 1 + data.iter().fold(0usize, |a, &b| {
        a.wrapping_mul(31).wrapping_add(usize::from(b))
    }) % 97;
    for step in [1, 2, 7, derived] {
        assert_eq!(
            scan_in_steps(data, limits, step),
            whole,
            "chunks of {step} bytes disagree with a single scan"
        );
    }
    let parsed_whole = http::parse_request_head(data, limits);
    match whole {
        Ok(Some(end)) => {
            assert!(end >= 1 && end <= data.len() && end <= limits.max_head_bytes);
            let parsed = http::parse_request_head(&data[..end], limits);
            if let Ok((head, consumed)) = &parsed {
                assert_eq!(
                    *consumed, end,
                    "httparse and HeadScanner disagree on where the head ends"
                );
                check_head(head, limits);
            }
            assert_eq!(
                parsed_whole, parsed,
                "bytes after the head changed the parse"
            );
        }
        Ok(None) => {
            assert!(data.len() <= limits.max_head_bytes);
            assert!(
                parsed_whole.is_err(),
                "httparse found a complete head that HeadScanner did not: {parsed_whole:?}"
            );
        }
        Err(e) => {
            assert_eq!(e, http::HeadError::TooLarge);
            assert!(data.len() > limits.max_head_bytes);
            assert!(
                parsed_whole.is_err(),
                "httparse found a complete head beyond the scanner's limit: {parsed_whole:?}"
            );
        }
    }
}

/// Feeds growing prefixes of `data`, `step` bytes more each time, as the io layer does on reads.
fn scan_in_steps(
    data: &[u8],
    limits: &http::HeadLimits,
    step: usize,
) -> Result<Option<usize>, http::HeadError> {
    let mut scanner = http::HeadScanner::new();
    let mut k = 0;
    loop {
        k = (k + step).min(data.len());
        let r = scanner.find_head_end(&data[..k], limits);
        if let Ok(Some(end)) = r {
            // Once found, the answer is sticky however the buffer grows.
            assert_eq!(scanner.find_head_end(data, limits), Ok(Some(end)));
            assert_eq!(scanner.scanned(), end);
        }
        if !matches!(r, Ok(None)) || k == data.len() {
            return r;
        }
    }
}

fn check_head(head: &http::RequestHead, limits: &http::HeadLimits) {
    assert!(head.headers.len() <= limits.max_headers);
    assert!(head.minor_version <= 1);
    assert!(!head.path.contains('?'));
    for (name, value) in &head.headers {
        assert!(!name.is_empty());
        assert!(!name.bytes().any(|b| b.is_ascii_uppercase()));
        assert!(!value.starts_with([' ', '\t']) && !value.ends_with([' ', '\t']));
        check_reflection(value);
    }
    let _ = head.header("host");
    let _ = head.keep_alive();
    if head.is_websocket_upgrade() {
        assert_eq!(head.method, http::Method::Get);
        assert_eq!(head.minor_version, 1);
    }
    if let Ok(Some(n)) = head.content_length() {
        assert!(head.header("transfer-encoding").is_none());
        assert!(head.header("content-length").is_some());
        let _ = n;
    }
    for name in ["transport", "EIO", "sid", "__proto__"] {
        if let Some(v) = head.query_param(name) {
            assert!(v.len() <= head.query.len());
        }
    }
    if let Some(v) = head.cookie("io") {
        assert!(!v.contains(';'));
    }
}

/// A request value we might reflect (Origin) must never smuggle a line break into our response.
fn check_reflection(value: &str) {
    if http::is_valid_origin(value) {
        assert!(http::is_safe_header_value(value));
        assert!(value == "null" || value.contains("://"));
    }
    let safe = http::is_safe_header_value(value);
    assert!(!safe || !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0));
    let mut resp = http::Response::new(200);
    assert_eq!(resp.header("Access-Control-Allow-Origin", value), safe);
    let wire = resp.encode(true);
    // Status line, the header if accepted, Content-Length, Connection, blank line.
    let expected_lines = if safe { 5 } else { 4 };
    assert_eq!(
        wire.windows(2).filter(|w| w == b"\r\n").count(),
        expected_lines
    );
    assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), expected_lines);
}

// ---------------------------------------------------------------------------------------------
// Query strings, percent-decoding, cookies
// ---------------------------------------------------------------------------------------------

const MAX_PAIRS: usize = 64;

pub fn query(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let s: &str = &s;

    // parse_query: at most 64 pairs, one per non-empty '&' segment, and decoding only shrinks.
    let pairs = http::parse_query(s);
    let segments: Vec<&str> = s.split('&').filter(|x| !x.is_empty()).collect();
    assert_eq!(pairs.len(), segments.len().min(MAX_PAIRS));
    for ((name, value), seg) in pairs.iter().zip(&segments) {
        assert!(name.len() + value.len() <= seg.len());
        if !seg.contains(['%', '+']) {
            let (n, v) = seg.split_once('=').unwrap_or((seg, ""));
            assert_eq!((name.as_str(), value.as_str()), (n, v));
        }
    }

    // percent_decode: never grows, identity without '%', inverse of percent-encoding.
    let decoded = http::percent_decode(s);
    assert!(decoded.len() <= s.len());
    if !s.contains('%') {
        assert_eq!(decoded, s);
    }
    assert_eq!(http::percent_decode(&percent_encode(s, false)), s);
    assert_eq!(http::percent_decode(&percent_encode(s, true)), s);

    // Form round trip: pairs built from the input's lines come back from parse_query (first 64).
    let built: Vec<(String, String)> = s
        .split('\n')
        .take(MAX_PAIRS + 6)
        .map(|line| {
            let mid = line.char_indices().nth(line.chars().count() / 2);
            let (n, v) = line.split_at(mid.map_or(line.len(), |(i, _)| i));
            (n.to_owned(), v.to_owned())
        })
        .collect();
    let raw: Vec<String> = built
        .iter()
        .map(|(n, v)| format!("{}={}", form_encode(n), form_encode(v)))
        .collect();
    let parsed = http::parse_query(&raw.join("&"));
    assert_eq!(parsed.as_slice(), &built[..built.len().min(MAX_PAIRS)]);

    // parse_cookies: bounded, names non-empty and trimmed, no separators inside.
    let cookies = http::parse_cookies(s);
    assert!(cookies.len() <= MAX_PAIRS);
    for (name, value) in &cookies {
        assert!(!name.is_empty());
        assert!(!name.contains([';', '=']));
        assert!(!name.starts_with([' ', '\t']) && !name.ends_with([' ', '\t']));
        assert!(!value.contains(';'));
    }

    // Cookie round trip: a Cookie field written from the input's lines parses back.
    let jar: Vec<(String, String)> = s
        .split('\n')
        .take(MAX_PAIRS + 6)
        .enumerate()
        .map(|(i, line)| {
            let name: String = line.chars().filter(char::is_ascii_alphanumeric).collect();
            let name = if name.is_empty() {
                format!("c{i}")
            } else {
                name
            };
            (name, line.replace(';', ""))
        })
        .collect();
    let header: Vec<String> = jar
        .iter()
        .map(|(n, v)| {
            // Quote a value that would otherwise be trimmed or unwrapped.
            if v.starts_with(['"', ' ', '\t']) || v.ends_with([' ', '\t']) {
                format!("{n}=\"{v}\"")
            } else {
                format!("{n}={v}")
            }
        })
        .collect();
    let parsed = http::parse_cookies(&header.join("; "));
    assert_eq!(parsed.as_slice(), &jar[..jar.len().min(MAX_PAIRS)]);
}

/// %XX for every byte outside the unreserved set; `all` escapes every byte (hex case varies).
fn percent_encode(s: &str, all: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for (i, b) in s.bytes().enumerate() {
        if !all && (b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
            out.push(char::from(b));
        } else if i % 2 == 0 {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// application/x-www-form-urlencoded: space as '+', everything else outside unreserved as %XX.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b == b' ' {
            out.push('+');
        } else if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Engine.IO packets and payloads
// ---------------------------------------------------------------------------------------------

pub fn eio_packet(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let s: &str = &s;

    match eio::decode_text_packet(s) {
        Ok(p) => {
            let text = p
                .encode_text()
                .expect("a decoded text packet has a text form");
            assert_eq!(eio::decode_text_packet(&text), Ok(p.clone()));
            if matches!(
                p,
                eio::Packet::Close | eio::Packet::Upgrade | eio::Packet::Noop
            ) {
                // Trailing data on these is dropped.
                assert_eq!(text.len(), 1);
                assert!(s.starts_with(&text));
            } else {
                assert_eq!(text, s);
            }
            assert_eq!(eio::encode_ws_frame(&p), eio::Data::Text(text));
        }
        Err(eio::DecodeError::Empty) => assert!(s.is_empty()),
        Err(eio::DecodeError::UnknownType(b)) => {
            assert_eq!(s.as_bytes().first(), Some(&b));
            assert!(!(b'0'..=b'6').contains(&b) && b != b'b');
        }
        Err(eio::DecodeError::BinaryNotMessage) => assert!(s.starts_with('b')),
        Err(e) => panic!("decode_text_packet failed with {e:?}"),
    }

    let seg = eio::decode_segment(s);
    if !s.starts_with('b') {
        assert_eq!(seg, eio::decode_text_packet(s));
    }
    match seg {
        Ok(p) => segment_roundtrip(&p),
        Err(e) => assert!(s.starts_with('b') || e != eio::DecodeError::InvalidBase64),
    }

    // The input's bytes as a binary message survive both wire forms.
    let bin = eio::Packet::Message(eio::Data::Binary(data.to_vec()));
    segment_roundtrip(&bin);
    assert_eq!(eio::decode_ws_binary(data), bin);
    assert_eq!(eio::encode_ws_frame(&bin), eio::Data::Binary(data.to_vec()));
    assert_eq!(bin.encode_text(), None);

    // The input's text in every packet that carries text.
    for p in [
        eio::Packet::Open(s.to_owned()),
        eio::Packet::Ping(s.to_owned()),
        eio::Packet::Pong(s.to_owned()),
        eio::Packet::Message(eio::Data::Text(s.to_owned())),
    ] {
        let text = p.encode_text().unwrap();
        assert_eq!(eio::decode_text_packet(&text), Ok(p.clone()));
        segment_roundtrip(&p);
    }

    // A hostile sid can never break the handshake JSON.
    let hs = eio::Handshake {
        sid: s.to_owned(),
        upgrades: vec![s.to_owned(), "websocket".to_owned()],
        ping_interval_ms: data.len() as u64,
        ping_timeout_ms: u64::MAX,
        max_payload: 0,
    };
    let json: Value = serde_json::from_str(&hs.to_json()).expect("handshake is JSON");
    assert_eq!(json["sid"], Value::String(s.to_owned()));
    assert_eq!(json["upgrades"][0], Value::String(s.to_owned()));
    assert_eq!(json["pingTimeout"], Value::from(u64::MAX));
    assert_eq!(json.as_object().unwrap().len(), 5);

    let mut random = [0u8; 15];
    for (slot, b) in random.iter_mut().zip(data) {
        *slot = *b;
    }
    let sid = eio::sid_from_random(&random);
    assert_eq!(sid.len(), 20);
    assert!(sid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
}

/// encode_segment → decode_segment gives the packet back; the segment has a 0x1e only when the
/// packet says it is not payload-safe.
fn segment_roundtrip(p: &eio::Packet) {
    let seg = eio::encode_segment(p);
    let text = std::str::from_utf8(&seg).expect("segments are UTF-8");
    assert_eq!(eio::decode_segment(text), Ok(p.clone()));
    assert_eq!(p.is_payload_safe(), !seg.contains(&eio::RECORD_SEPARATOR));
    if p.is_payload_safe() {
        let body = eio::encode_payload(std::slice::from_ref(p));
        assert_eq!(eio::decode_payload(&body, 1), Ok(vec![p.clone()]));
    }
}

pub fn eio_payload(data: &[u8]) {
    const MAX: usize = 16;
    let limited = eio::decode_payload(data, MAX);
    let unlimited = eio::decode_payload(data, usize::MAX);
    let separators = data.iter().filter(|&&b| b == eio::RECORD_SEPARATOR).count();
    match &limited {
        Ok(packets) => {
            assert_eq!(packets.len(), separators + 1);
            assert!(packets.len() <= MAX);
            assert_eq!(&unlimited, &limited);
            // Each packet is its segment decoded alone.
            let text = std::str::from_utf8(data).unwrap();
            for (p, seg) in packets.iter().zip(text.split('\x1e')) {
                assert_eq!(eio::decode_segment(seg).as_ref(), Ok(p));
            }
            let body = eio::encode_payload(packets);
            assert_eq!(eio::decode_payload(&body, MAX).as_ref(), Ok(packets));
            // Joining pre-encoded segments (encode once, share) gives the same body.
            let mut joined = Vec::new();
            for p in packets {
                eio::append_segment(&mut joined, &eio::encode_segment(p));
            }
            assert_eq!(joined, body);
        }
        Err(eio::DecodeError::TooManyPackets) => {
            assert!(separators >= MAX);
            // Work stopped at the cap: the first MAX segments were fine.
            let text = std::str::from_utf8(data).unwrap();
            for seg in text.split('\x1e').take(MAX) {
                assert!(eio::decode_segment(seg).is_ok());
            }
        }
        Err(eio::DecodeError::InvalidUtf8) => {
            assert!(std::str::from_utf8(data).is_err());
            assert_eq!(&unlimited, &limited);
        }
        Err(e) => {
            assert_ne!(*e, eio::DecodeError::BinaryNotMessage);
            assert_eq!(&unlimited, &limited);
        }
    }
    assert!(eio::decode_payload(data, 0).is_err());

    // A payload built from the input's lines: text and binary messages, pings, in turn.
    let s = String::from_utf8_lossy(data);
    let packets: Vec<eio::Packet> = s
        .split('\n')
        .take(32)
        .enumerate()
        .map(|(i, line)| match i % 3 {
            0 => eio::Packet::Message(eio::Data::Text(line.replace('\x1e', ""))),
            1 => eio::Packet::Message(eio::Data::Binary(line.as_bytes().to_vec())),
            _ => eio::Packet::Ping(line.replace('\x1e', "")),
        })
        .collect();
    let body = eio::encode_payload(&packets);
    assert_eq!(
        eio::decode_payload(&body, packets.len()),
        Ok(packets.clone())
    );
    if packets.len() > 1 {
        assert_eq!(
            eio::decode_payload(&body, packets.len() - 1),
            Err(eio::DecodeError::TooManyPackets)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Socket.IO packets and reassembly
// ---------------------------------------------------------------------------------------------

pub fn sio_packet(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let s: &str = &s;
    let limits = sio::DecodeLimits::default();
    if let Ok((p, n)) = sio::decode_text(s, &limits) {
        check_decoded(&p, n, &limits);
        // Fill in n attachments; the whole packet must validate, encode and come back.
        let mut full = p.clone();
        full.attachments = (0..n).map(|i| vec![i as u8; i]).collect();
        assert_eq!(sio::validate(&full, &limits), Ok(()));
        let (text, atts) = sio::encode(&full);
        assert_eq!(atts.len(), n);
        let (again, n2) = sio::decode_text(&text, &limits).expect("re-encoded packet decodes");
        assert_eq!(n2, n);
        assert_packet_eq(&again, &p);
        // The same through a reassembler, attachments included.
        let mut r = sio::Reassembler::new(limits);
        let mut done = r.push_text(&text).unwrap();
        for a in atts {
            assert!(done.is_none());
            done = r.push_binary(a.clone()).unwrap();
        }
        assert_packet_eq(&done.expect("complete after the last attachment"), &full);
        assert!(r.is_idle());
    }
    // Tighter limits only ever refuse more.
    let tight = sio::DecodeLimits {
        max_attachments: 1,
        max_nsp_len: 4,
    };
    if let Ok((p, n)) = sio::decode_text(s, &tight) {
        check_decoded(&p, n, &tight);
        assert!(sio::decode_text(s, &limits).is_ok());
    }
    built_packets(s, &limits);
}

fn check_decoded(p: &sio::Packet, n: usize, limits: &sio::DecodeLimits) {
    assert!(n <= limits.max_attachments);
    if !p.kind.is_binary() {
        assert_eq!(n, 0);
    }
    assert!(p.attachments.is_empty());
    assert!(p.nsp.starts_with('/') && p.nsp.len() <= limits.max_nsp_len);
    assert!(!p.nsp.bytes().any(|b| b < 0x20 || b == 0x7f));
    match p.kind {
        sio::PacketKind::Event | sio::PacketKind::BinaryEvent => {
            let name = sio::event_name(p).expect("an event has a string name");
            assert!(!sio::RESERVED_EVENTS.contains(&name));
        }
        sio::PacketKind::Ack | sio::PacketKind::BinaryAck => {
            assert!(p.id.is_some());
            assert!(p.data.as_ref().is_some_and(Value::is_array));
        }
        sio::PacketKind::Connect | sio::PacketKind::Disconnect | sio::PacketKind::ConnectError => {
            assert!(p.id.is_none());
        }
    }
}

/// Packets an application could build from the input's lines: valid ones round-trip, and
/// `validate` agrees with what the decoder would accept.
fn built_packets(s: &str, limits: &sio::DecodeLimits) {
    let mut lines = s.split('\n');
    let nsp_part = lines.next().unwrap_or_default();
    let name = lines.next().unwrap_or("event");
    let args: Vec<String> = lines.take(12).map(str::to_owned).collect();
    let nsp = if nsp_part.is_empty() {
        "/".to_owned()
    } else {
        format!("/{nsp_part}")
    };
    let id = (s.len() % 3 != 0).then_some(s.len() as u64 * 7919);
    let mut packets = vec![
        sio::Packet::event(&nsp, name, args.iter().cloned().map(Value::String), id),
        sio::Packet::ack(
            &nsp,
            s.len() as u64,
            args.iter().cloned().map(Value::String).collect(),
        ),
        sio::Packet::connect(&nsp, Some(serde_json::json!({ "token": s }))),
        sio::Packet::connect(&nsp, None),
        sio::Packet::connect_error(&nsp, s),
        sio::Packet::disconnect(&nsp),
    ];
    // A binary event: one placeholder and one attachment per argument.
    let mut bin = sio::Packet::event(&nsp, name, (0..args.len()).map(sio::placeholder), id);
    bin.attachments = args.iter().map(|a| a.as_bytes().to_vec()).collect();
    packets.push(bin);
    for p in packets {
        let valid = sio::validate(&p, limits);
        let (text, atts) = sio::encode(&p);
        let decoded = sio::decode_text(&text, limits);
        match valid {
            Ok(()) => {
                let (mut back, n) = decoded.expect("a validated packet decodes");
                assert_eq!(n, atts.len());
                back.attachments = atts.to_vec();
                let mut expect = p.clone();
                expect.kind = p.wire_kind();
                assert_packet_eq(&back, &expect);
            }
            Err(_) => {
                // What validate refuses never decodes to the same packet.
                if let Ok((back, _)) = decoded {
                    assert!(back.nsp != p.nsp || back.kind != p.wire_kind() || back.data != p.data);
                }
            }
        }
    }
}

/// Packet equality, exact, floats included: tidings enables serde_json's `float_roundtrip`, so a
/// relayed number keeps its last bit (corpus file `sio_packet/float_not_roundtrip`:
/// `2["f",1223456345678901234567823456789078901234567890]` changed in its last bit without it).
fn assert_packet_eq(a: &sio::Packet, b: &sio::Packet) {
    assert_eq!(a.kind, b.kind);
    assert_eq!(a.nsp, b.nsp);
    assert_eq!(a.id, b.id);
    assert_eq!(a.attachments, b.attachments);
    match (&a.data, &b.data) {
        (Some(x), Some(y)) => assert!(json_eq(x, y), "{x} != {y}"),
        (None, None) => {}
        (x, y) => panic!("data differs: {x:?} != {y:?}"),
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    // Iterative so that a deep value cannot overflow the stack.
    let mut stack = vec![(a, b)];
    while let Some((a, b)) = stack.pop() {
        match (a, b) {
            (Value::Array(x), Value::Array(y)) => {
                if x.len() != y.len() {
                    return false;
                }
                stack.extend(x.iter().zip(y));
            }
            (Value::Object(x), Value::Object(y)) => {
                if x.len() != y.len() {
                    return false;
                }
                for (k, v) in x {
                    let Some(w) = y.get(k) else { return false };
                    stack.push((v, w));
                }
            }
            (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
                let (Some(x), Some(y)) = (x.as_f64(), y.as_f64()) else {
                    return false;
                };
                if x.to_bits() != y.to_bits() {
                    return false;
                }
            }
            (x, y) => {
                if x != y {
                    return false;
                }
            }
        }
    }
    true
}

/// One Engine.IO message per line: `B<bytes>` is a binary message, `T<text>` or any other line a
/// text message. The reassembler is checked against a model of what it should do.
pub fn sio_reassembler(data: &[u8]) {
    let limits = sio::DecodeLimits::default();
    let mut r = sio::Reassembler::new(limits);
    // The packet being completed, the attachments announced, those received, the text length.
    let mut pending: Option<(sio::Packet, usize, Vec<Vec<u8>>, usize)> = None;
    for line in data.split(|&b| b == b'\n').take(512) {
        match line.split_first() {
            Some((b'B', body)) => {
                let got = r.push_binary(body.to_vec());
                let Some((packet, expected, mut received, text_len)) = pending.take() else {
                    assert_eq!(got, Err(sio::DecodeError::UnexpectedBinary));
                    assert!(r.is_idle());
                    continue;
                };
                received.push(body.to_vec());
                if received.len() == expected {
                    let done = got.unwrap().expect("last attachment completes the packet");
                    let mut want = packet;
                    want.attachments = received;
                    assert_eq!(done, want);
                    assert!(r.is_idle());
                    assert_eq!(r.buffered_bytes(), 0);
                    assert_eq!(r.expected_attachments(), 0);
                    reassembled_roundtrip(&done, &limits);
                } else {
                    assert_eq!(got, Ok(None));
                    assert_eq!(r.expected_attachments(), expected - received.len());
                    let held: usize = received.iter().map(Vec::len).sum();
                    assert_eq!(r.buffered_bytes(), text_len + held);
                    pending = Some((packet, expected, received, text_len));
                }
            }
            other => {
                let raw = match other {
                    Some((b'T', body)) => body,
                    _ => line,
                };
                let text = String::from_utf8_lossy(raw);
                let got = r.push_text(&text);
                if pending.take().is_some() {
                    assert_eq!(got, Err(sio::DecodeError::UnexpectedText));
                    assert!(r.is_idle());
                    assert_eq!(r.buffered_bytes(), 0);
                    continue;
                }
                match sio::decode_text(&text, &limits) {
                    Err(e) => {
                        assert_eq!(got, Err(e));
                        assert!(r.is_idle());
                    }
                    Ok((p, 0)) => {
                        assert_eq!(got, Ok(Some(p.clone())));
                        assert!(r.is_idle());
                        reassembled_roundtrip(&p, &limits);
                    }
                    Ok((p, n)) => {
                        assert_eq!(got, Ok(None));
                        assert!(!r.is_idle());
                        assert_eq!(r.expected_attachments(), n);
                        assert_eq!(r.buffered_bytes(), text.len());
                        pending = Some((p, n, Vec::new(), text.len()));
                    }
                }
            }
        }
    }
    r.reset();
    assert!(r.is_idle());
    assert_eq!(r.buffered_bytes(), 0);
}

/// A packet the reassembler produced, encoded again and fed to a fresh one, comes back.
fn reassembled_roundtrip(p: &sio::Packet, limits: &sio::DecodeLimits) {
    assert_eq!(sio::validate(p, limits), Ok(()));
    let (text, atts) = sio::encode(p);
    let mut r = sio::Reassembler::new(*limits);
    let mut done = r.push_text(&text).unwrap();
    for a in atts {
        done = r.push_binary(a.clone()).unwrap();
    }
    assert_packet_eq(&done.expect("complete"), p);
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events
// ---------------------------------------------------------------------------------------------

/// Input: `event 0xFF id 0xFF data` (fewer parts: `data`, or `event 0xFF data`). An empty event
/// part means no `event:` field; a present id part, even empty, is an `id:` field.
pub fn sse_roundtrip(data: &[u8]) {
    let parts: Vec<String> = data
        .splitn(3, |&b| b == 0xff)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let (event, id, body) = match parts.as_slice() {
        [body] => (None, None, body.as_str()),
        [event, body] => (Some(event.as_str()), None, body.as_str()),
        [event, id, body, ..] => (Some(event.as_str()), Some(id.as_str()), body.as_str()),
        [] => (None, None, ""),
    };
    let event = event.filter(|e| !e.is_empty());

    let mut out = b"untouched".to_vec();
    let result = sse::encode_event(&mut out, event, id, body);
    let expected_ok = event.is_none_or(|e| sse::validate_event_name(e).is_ok())
        && id.is_none_or(|i| sse::validate_id(i).is_ok());
    assert_eq!(result.is_ok(), expected_ok, "{result:?}");
    if let Some(e) = event {
        if e.contains(['\r', '\n', '\0']) {
            assert!(
                result.is_err(),
                "a line break in an event name was accepted"
            );
        }
    }
    if let Some(i) = id {
        if i.contains(['\r', '\n', '\0']) {
            assert!(result.is_err(), "a line break in an id was accepted");
        }
    }
    let Some(wire) = out.strip_prefix(b"untouched".as_slice()) else {
        panic!("encode_event changed bytes already in the buffer");
    };
    if result.is_err() {
        assert!(wire.is_empty(), "nothing is written when validation fails");
    } else {
        // Every line is one of our three fields; nothing can start a `retry:`.
        let text = std::str::from_utf8(wire).unwrap();
        assert!(text.ends_with("\n\n"));
        assert!(!text.contains('\r'));
        for line in text.trim_end_matches('\n').split('\n') {
            assert!(
                line.starts_with("data: ")
                    || line.starts_with("event: ")
                    || line.starts_with("id: "),
                "unexpected line {line:?}"
            );
        }
        let want = sse::ParsedEvent {
            event: event.unwrap_or("message").to_owned(),
            data: sse::normalize_newlines(body),
            last_event_id: id.unwrap_or("").to_owned(),
        };
        // Any chunking gives the same single event.
        let mid = wire.len() / 2;
        let chunkings: [Vec<&[u8]>; 3] = [
            vec![wire],
            vec![&wire[..mid], &wire[mid..]],
            wire.chunks(1).collect(),
        ];
        for chunks in chunkings {
            let mut parser = sse::SseParser::new();
            let mut events = Vec::new();
            for c in chunks {
                events.extend(parser.feed(c));
            }
            assert_eq!(events, vec![want.clone()]);
            assert_eq!(parser.retry(), None);
            assert_eq!(parser.error(), None);
        }
    }

    let normalized = sse::normalize_newlines(body);
    assert!(!normalized.contains('\r'));
    assert_eq!(sse::normalize_newlines(&normalized), normalized);

    // Comments never dispatch and count one per line; retry comes only from encode_retry.
    let mut stream = Vec::new();
    sse::encode_comment(&mut stream, body);
    let ms = data
        .iter()
        .fold(0u64, |a, &b| a.wrapping_mul(257).wrapping_add(u64::from(b)));
    sse::encode_retry(&mut stream, ms);
    let mut parser = sse::SseParser::new();
    assert!(parser.feed(&stream).is_empty());
    assert_eq!(parser.comments_seen(), normalized.split('\n').count());
    assert_eq!(parser.retry(), Some(ms));

    // The raw input as a stream: bounded by the byte budget, same events however it is split.
    let budget = 64;
    let mut whole = sse::SseParser::with_max_event_bytes(budget);
    let events = whole.feed(data);
    for e in &events {
        assert!(e.data.len() <= budget);
    }
    let mut bytewise = sse::SseParser::with_max_event_bytes(budget);
    let split: Vec<sse::ParsedEvent> = data.chunks(1).flat_map(|c| bytewise.feed(c)).collect();
    assert_eq!(split, events);
    assert_eq!(bytewise.error(), whole.error());
    assert_eq!(bytewise.last_event_id(), whole.last_event_id());

    // Last-Event-ID: only the exact `<epoch>:<seq>` we write parses, and it re-encodes as sent.
    for candidate in std::iter::once(String::from_utf8_lossy(data).as_ref())
        .chain(parts.iter().map(String::as_str))
    {
        match sse::parse_last_event_id(candidate) {
            Ok(eid) => {
                assert_eq!(eid.encode(), candidate);
                assert!(sse::validate_id(&eid.encode()).is_ok());
            }
            Err(sse::LastEventIdError::TooLong) => {
                assert!(candidate.len() > sse::MAX_LAST_EVENT_ID_LEN);
            }
            Err(sse::LastEventIdError::Malformed) => {}
        }
    }
    let mut words = data
        .chunks(8)
        .map(|c| c.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)));
    let eid = sse::EventId {
        epoch: words.next().unwrap_or(0),
        seq: words.next().unwrap_or(u64::MAX),
    };
    assert_eq!(sse::parse_last_event_id(&eid.encode()), Ok(eid));
}
