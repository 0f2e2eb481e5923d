//! Server-Sent Events: the encoder we put on the wire, the `Last-Event-ID` parser for resume, and a
//! WHATWG-conformant event-stream parser (WHATWG HTML §9.2.5 "Parsing an event stream", §9.2.6
//! "Interpreting an event stream") for tests — ours and applications'.
//!
//! What SSE cannot carry: a bare CR or a CRLF in `data`. Every CR, LF and CRLF ends a line on the
//! wire, and a client rebuilds `data` by joining lines with LF, so the client sees each of them as
//! LF ([`normalize_newlines`] computes exactly what it will see). Event names and ids cannot
//! contain line breaks at all, so [`encode_event`] rejects them rather than writing them raw.

use std::fmt;

use super::push_decimal;

/// Longest event name an application may use, in bytes.
pub const MAX_EVENT_NAME_LEN: usize = 256;
/// Longest id an application may use, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Longest `Last-Event-ID` we look at. Ours are at most 41 bytes (`u64:u64`).
pub const MAX_LAST_EVENT_ID_LEN: usize = 64;
/// Default cap on what one [`SseParser`] buffers for a single event (line + data + type + id).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Why an event could not be encoded, or why the parser gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseError {
    /// The event name contains CR, LF or NUL.
    EventNameHasLineBreak,
    /// The id contains CR, LF or NUL.
    IdHasLineBreak,
    /// The event name is empty (it would silently become "message" on the client).
    EventNameEmpty,
    /// The event name or id is longer than 256 bytes.
    TooLong,
    /// [`SseParser`]: one event needed more than its configured byte budget; parsing stopped.
    EventTooLarge,
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SseError::EventNameHasLineBreak => "SSE event name contains CR, LF or NUL",
            SseError::IdHasLineBreak => "SSE id contains CR, LF or NUL",
            SseError::EventNameEmpty => "SSE event name is empty",
            SseError::TooLong => "SSE event name or id is longer than 256 bytes",
            SseError::EventTooLarge => "SSE event exceeds the parser's byte budget",
        })
    }
}

impl std::error::Error for SseError {}

/// CR and LF end a line anywhere in the stream; NUL makes a client ignore an `id` field
/// ("If the field value does not contain U+0000 NULL, then set the last event ID buffer").
fn has_forbidden_char(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// Validate an application-supplied event name: no CR, LF, NUL; non-empty; at most 256 bytes.
pub fn validate_event_name(name: &str) -> Result<(), SseError> {
    if name.is_empty() {
        return Err(SseError::EventNameEmpty);
    }
    if name.len() > MAX_EVENT_NAME_LEN {
        return Err(SseError::TooLong);
    }
    if has_forbidden_char(name) {
        return Err(SseError::EventNameHasLineBreak);
    }
    Ok(())
}

/// Validate an application-supplied id: no CR, LF, NUL; at most 256 bytes. An empty id is allowed:
/// on the wire it resets the client's last event id, which is a meaningful thing to send.
pub fn validate_id(id: &str) -> Result<(), SseError> {
    if id.len() > MAX_ID_LEN {
        return Err(SseError::TooLong);
    }
    if has_forbidden_char(id) {
        return Err(SseError::IdHasLineBreak);
    }
    Ok(())
}

/// Calls `f` with each line of `s`, splitting on CRLF, lone CR and lone LF (the three line ends of
/// §9.2.5). Text ending in a line break yields a final empty line, so nothing is lost.
fn for_each_line(s: &str, mut f: impl FnMut(&str)) {
    let mut rest = s;
    while let Some(i) = rest.find(['\r', '\n']) {
        let Some((line, tail)) = rest.split_at_checked(i) else {
            break;
        };
        f(line);
        // CR and LF are one byte each, so `get(1..)` is on a char boundary.
        rest = match tail.strip_prefix("\r\n") {
            Some(t) => t,
            None => tail.get(1..).unwrap_or(""),
        };
    }
    f(rest);
}

/// Append one event: optional `event: <name>`, optional `id: <id>`, one `data: <line>` per line of
/// `data` (split on CR, LF and CRLF), then a blank line. Nothing is written when validation fails.
///
/// Always `"field: "` with one space: the parser strips exactly one leading space, so a value that
/// itself begins with a space survives. Empty `data` is written as `data: \n`: the data buffer is
/// then "\n", which is not empty, so the event IS dispatched, with data "" ("If the data buffer is
/// an empty string, ... return" only skips events that had no `data` line at all).
///
/// Never writes `retry:`; that comes only from [`encode_retry`], never from application data.
pub fn encode_event(
    out: &mut Vec<u8>,
    event: Option<&str>,
    id: Option<&str>,
    data: &str,
) -> Result<(), SseError> {
    if let Some(name) = event {
        validate_event_name(name)?;
    }
    if let Some(id) = id {
        validate_id(id)?;
    }
    out.reserve(data.len() + 16 + event.map_or(0, |e| e.len() + 8) + id.map_or(0, |i| i.len() + 5));
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    for_each_line(data, |line| {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    });
    out.push(b'\n');
    Ok(())
}

/// Append a comment block (a heartbeat): `: <text>\n` per line of `text`, then a blank line.
/// Every line gets its own `:` so a line break in `text` can never start a field. The blank line
/// dispatches nothing: we only write whole events, so no data is pending when a comment goes out.
pub fn encode_comment(out: &mut Vec<u8>, text: &str) {
    out.reserve(text.len() + 4);
    for_each_line(text, |line| {
        out.push(b':');
        if !line.is_empty() {
            out.push(b' ');
            out.extend_from_slice(line.as_bytes());
        }
        out.push(b'\n');
    });
    out.push(b'\n');
}

/// Append `retry: <ms>\n\n`, setting the client's reconnection time.
pub fn encode_retry(out: &mut Vec<u8>, ms: u64) {
    out.extend_from_slice(b"retry: ");
    push_decimal(out, ms);
    out.extend_from_slice(b"\n\n");
}

/// What a client's `data` is for `data` sent through [`encode_event`]: CRLF and lone CR become LF.
pub fn normalize_newlines(data: &str) -> String {
    let mut s = String::with_capacity(data.len());
    for_each_line(data, |line| {
        s.push_str(line);
        s.push('\n');
    });
    s.pop();
    s
}

/// Our event ids: `<epoch>:<seq>`, both decimal `u64`. The epoch changes when the server's history
/// restarts, so an id from another epoch can be told apart from a gap in this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    /// Which run of the server's history the event belongs to.
    pub epoch: u64,
    /// Broadcast sequence number within the epoch: later events have larger numbers.
    pub seq: u64,
}

impl EventId {
    /// The wire form, `<epoch>:<seq>`; always passes [`validate_id`].
    pub fn encode(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seq)
    }
}

/// Why a client-supplied `Last-Event-ID` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastEventIdError {
    /// Longer than 64 bytes; not looked at further.
    TooLong,
    /// Not of the form `<epoch>:<seq>` that [`EventId::encode`] writes.
    Malformed,
}

impl fmt::Display for LastEventIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LastEventIdError::TooLong => "Last-Event-ID is longer than 64 bytes",
            LastEventIdError::Malformed => "Last-Event-ID is not <epoch>:<seq>",
        })
    }
}

impl std::error::Error for LastEventIdError {}

/// One canonical decimal u64: ASCII digits only, no sign, no spaces, no leading zero (so that
/// only the exact string we sent parses, and `parse(s).encode() == s`).
fn parse_canonical_u64(s: &str) -> Result<u64, LastEventIdError> {
    let canonical = match s.as_bytes() {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        bytes => bytes.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return Err(LastEventIdError::Malformed);
    }
    // Only overflow can fail here.
    s.parse::<u64>().map_err(|_| LastEventIdError::Malformed)
}

/// Parse a client-supplied `Last-Event-ID` (header or query). The length is checked before any
/// other work; anything but `<epoch>:<seq>` as we write it (CR/LF, spaces, signs, leading zeros,
/// empty parts, a third part, overflow) is `Malformed`.
pub fn parse_last_event_id(s: &str) -> Result<EventId, LastEventIdError> {
    if s.len() > MAX_LAST_EVENT_ID_LEN {
        return Err(LastEventIdError::TooLong);
    }
    let (epoch, seq) = s.split_once(':').ok_or(LastEventIdError::Malformed)?;
    Ok(EventId {
        epoch: parse_canonical_u64(epoch)?,
        seq: parse_canonical_u64(seq)?,
    })
}

/// One event as an `EventSource` would fire it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    /// The event type; "message" when the stream named none.
    pub event: String,
    /// The data lines joined with LF.
    pub data: String,
    /// The stream's last event id at dispatch (it persists across events until an `id` changes it).
    pub last_event_id: String,
}

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// A WHATWG event-stream parser: feed bytes in any chunking, get the events a browser would fire.
///
/// Works on bytes and decodes each finished line with UTF-8 replacement, which gives the same text
/// as decoding the whole stream first (CR, LF and ':' never occur inside a multi-byte sequence).
/// Memory is bounded: comment lines are skipped without buffering, and an event that needs more
/// than `max_event_bytes` stops the parser ([`SseParser::error`]). Work is linear in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseParser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    data: String,
    event_type: String,
    last_event_id: String,
    retry: Option<u64>,
    comments: usize,
    /// How many bytes of a leading BOM have been matched; `None` once the BOM question is settled.
    bom_matched: Option<usize>,
    /// The previous chunk ended in CR: an LF at the start of the next one is the same line end.
    after_cr: bool,
    /// The current line started with ':' and is being skipped.
    in_comment: bool,
    max_event_bytes: usize,
    error: Option<SseError>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser at the start of a stream, with [`DEFAULT_MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser that gives up once one event needs more than `max` bytes of buffering.
    pub fn with_max_event_bytes(max: usize) -> Self {
        SseParser {
            line: Vec::new(),
            data: String::new(),
            event_type: String::new(),
            last_event_id: String::new(),
            retry: None,
            comments: 0,
            bom_matched: Some(0),
            after_cr: false,
            in_comment: false,
            max_event_bytes: max,
            error: None,
        }
    }

    /// The reconnection time from the last valid `retry` field, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// How many comment lines (lines starting with ':') have been seen.
    pub fn comments_seen(&self) -> usize {
        self.comments
    }

    /// The stream's current last event id.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Set once the byte budget was exceeded; after that, `feed` ignores its input.
    pub fn error(&self) -> Option<SseError> {
        self.error
    }

    /// Feed the next bytes of the stream; returns the events they complete, in order.
    /// "If the file ends in the middle of an event, before the final empty line, the incomplete
    /// event is not dispatched", so an unfinished event simply waits for more bytes.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<ParsedEvent> {
        let mut out = Vec::new();
        let mut rest = bytes;
        // "stream = [ bom ] *event": one U+FEFF at the very start is dropped (UTF-8 decode strips
        // it). It may arrive split across chunks, so match it byte by byte.
        while let Some(matched) = self.bom_matched {
            let Some((&b, tail)) = rest.split_first() else {
                return out;
            };
            if BOM.get(matched) == Some(&b) {
                rest = tail;
                self.bom_matched = if matched + 1 == BOM.len() {
                    None
                } else {
                    Some(matched + 1)
                };
            } else {
                // Not a BOM after all: the bytes we held back are ordinary stream bytes.
                self.bom_matched = None;
                self.consume(BOM.get(..matched).unwrap_or(&[]), &mut out);
            }
        }
        self.consume(rest, &mut out);
        out
    }

    fn consume(&mut self, mut bytes: &[u8], out: &mut Vec<ParsedEvent>) {
        while !bytes.is_empty() && self.error.is_none() {
            // "a single U+000A LINE FEED (LF) character not preceded by a U+000D CARRIAGE RETURN
            // (CR) character" ends a line; one preceded by CR belongs to the CRLF already handled.
            if std::mem::take(&mut self.after_cr) {
                if let Some(tail) = bytes.strip_prefix(b"\n") {
                    bytes = tail;
                    continue;
                }
            }
            let Some(i) = bytes.iter().position(|&b| b == b'\r' || b == b'\n') else {
                self.push_line_bytes(bytes);
                return;
            };
            let Some((segment, tail)) = bytes.split_at_checked(i) else {
                return;
            };
            let Some((&eol, tail)) = tail.split_first() else {
                return;
            };
            self.push_line_bytes(segment);
            if self.error.is_some() {
                return;
            }
            self.after_cr = eol == b'\r';
            self.end_line(out);
            bytes = tail;
        }
    }

    fn push_line_bytes(&mut self, segment: &[u8]) {
        // "If the line starts with a U+003A COLON character (:) — Ignore the line."
        if self.line.is_empty() && !self.in_comment && segment.first() == Some(&b':') {
            self.in_comment = true;
        }
        if self.in_comment {
            return;
        }
        self.line.extend_from_slice(segment);
        self.check_budget();
    }

    fn check_budget(&mut self) {
        let used =
            self.line.len() + self.data.len() + self.event_type.len() + self.last_event_id.len();
        if used > self.max_event_bytes {
            self.error = Some(SseError::EventTooLarge);
            // Give the memory back; this parser is done.
            self.line = Vec::new();
            self.data = String::new();
            self.event_type = String::new();
        }
    }

    fn end_line(&mut self, out: &mut Vec<ParsedEvent>) {
        if std::mem::take(&mut self.in_comment) {
            self.comments = self.comments.saturating_add(1);
            return;
        }
        if self.line.is_empty() {
            // "If the line is empty (a blank line) — Dispatch the event".
            self.dispatch(out);
            return;
        }
        let line = std::mem::take(&mut self.line);
        let text = String::from_utf8_lossy(&line);
        // "If the line contains a U+003A COLON character (:) — Collect the characters on the line
        // before the first U+003A COLON character (:), and let field be that string. [...] If value
        // starts with a U+0020 SPACE character, remove it from value." Otherwise the whole line is
        // the field name and the value is empty.
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*text, ""),
        };
        self.process_field(field, value);
        // Keep the line's allocation for the next line.
        self.line = line;
        self.line.clear();
        self.check_budget();
    }

    fn process_field(&mut self, field: &str, value: &str) {
        match field {
            "event" => {
                self.event_type.clear();
                self.event_type.push_str(value);
            }
            "data" => {
                // "Append the field value to the data buffer, then append a single U+000A LINE
                // FEED (LF) character to the data buffer."
                self.data.push_str(value);
                self.data.push('\n');
            }
            // "If the field value does not contain U+0000 NULL, then set the last event ID buffer
            // to the field value. Otherwise, ignore the field."
            "id" if !value.contains('\0') => {
                self.last_event_id.clear();
                self.last_event_id.push_str(value);
            }
            // "If the field value consists of only ASCII digits, then interpret the field value as
            // an integer in base ten [...]. Otherwise, ignore the field." An empty value or one too
            // large for u64 is ignored as well.
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(ms);
                }
            }
            // "Otherwise — The field is ignored." (and the ignored id / retry cases above)
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<ParsedEvent>) {
        // "If the data buffer is an empty string, set the data buffer and the event type buffer to
        // the empty string and return."
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        // "If the data buffer's last character is a U+000A LINE FEED (LF) character, then remove
        // the last character from the data buffer."
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        let event = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            std::mem::take(&mut self.event_type)
        };
        out.push(ParsedEvent {
            event,
            data: std::mem::take(&mut self.data),
            last_event_id: self.last_event_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;
    use proptest::prelude::*;

    fn enc(event: Option<&str>, id: Option<&str>, data: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_event(&mut out, event, id, data).unwrap();
        out
    }

    fn ev(event: &str, data: &str, id: &str) -> ParsedEvent {
        ParsedEvent {
            event: event.into(),
            data: data.into(),
            last_event_id: id.into(),
        }
    }

    fn parse_all(bytes: &[u8]) -> Vec<ParsedEvent> {
        SseParser::new().feed(bytes)
    }

    /// Feeds one byte at a time: every chunk boundary at once.
    fn parse_bytewise(bytes: &[u8]) -> Vec<ParsedEvent> {
        let mut p = SseParser::new();
        bytes
            .iter()
            .flat_map(|b| p.feed(std::slice::from_ref(b)))
            .collect()
    }

    #[test]
    fn encode_simple_event() {
        assert_eq!(enc(None, None, "hello"), b"data: hello\n\n");
    }

    #[test]
    fn encode_named_event_with_id() {
        assert_eq!(
            enc(Some("update"), Some("3:17"), "{\"a\":1}"),
            b"event: update\nid: 3:17\ndata: {\"a\":1}\n\n"
        );
    }

    #[test]
    fn encode_splits_every_line_ending() {
        assert_eq!(enc(None, None, "a\nb"), b"data: a\ndata: b\n\n");
        assert_eq!(enc(None, None, "a\rb"), b"data: a\ndata: b\n\n");
        assert_eq!(enc(None, None, "a\r\nb"), b"data: a\ndata: b\n\n");
        assert_eq!(
            enc(None, None, "a\r\nb\rc\nd"),
            b"data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        // "\n\r" is two line ends, not one.
        assert_eq!(enc(None, None, "a\n\rb"), b"data: a\ndata: \ndata: b\n\n");
        assert_eq!(enc(None, None, "a\n"), b"data: a\ndata: \n\n");
        assert_eq!(
            parse_all(&enc(None, None, "a\r\nb\rc\nd"))[0].data,
            "a\nb\nc\nd"
        );
    }

    #[test]
    fn encode_leading_spaces_survive() {
        let bytes = enc(Some(" spaced"), Some(" 1"), "  two\n one");
        assert_eq!(
            bytes,
            b"event:  spaced\nid:  1\ndata:   two\ndata:  one\n\n"
        );
        assert_eq!(parse_all(&bytes), vec![ev(" spaced", "  two\n one", " 1")]);
    }

    #[test]
    fn encode_empty_data_is_dispatched_as_empty() {
        let bytes = enc(None, None, "");
        assert_eq!(bytes, b"data: \n\n");
        assert_eq!(parse_all(&bytes), vec![ev("message", "", "")]);
    }

    #[test]
    fn encode_line_of_only_cr() {
        let bytes = enc(None, None, "\r");
        assert_eq!(bytes, b"data: \ndata: \n\n");
        assert_eq!(parse_all(&bytes), vec![ev("message", "\n", "")]);
    }

    #[test]
    fn encode_unicode() {
        let bytes = enc(Some("ünï"), None, "héllo ✓ 🎉\u{2028}x");
        assert_eq!(
            bytes,
            "event: ünï\ndata: héllo ✓ 🎉\u{2028}x\n\n".as_bytes()
        );
        assert_eq!(
            parse_bytewise(&bytes),
            vec![ev("ünï", "héllo ✓ 🎉\u{2028}x", "")]
        );
    }

    #[test]
    fn encode_nul_in_data_is_carried() {
        let bytes = enc(None, None, "a\0b");
        assert_eq!(parse_all(&bytes), vec![ev("message", "a\0b", "")]);
    }

    #[test]
    fn rejects_bad_names_and_ids_without_writing() {
        let mut out = b"keep".to_vec();
        for bad in ["a\rb", "a\nb", "a\r\nb", "a\0b", "\n", "x\r"] {
            assert_eq!(
                encode_event(&mut out, Some(bad), None, "d"),
                Err(SseError::EventNameHasLineBreak)
            );
            assert_eq!(
                encode_event(&mut out, None, Some(bad), "d"),
                Err(SseError::IdHasLineBreak)
            );
        }
        assert_eq!(
            encode_event(&mut out, Some(""), None, "d"),
            Err(SseError::EventNameEmpty)
        );
        let long = "x".repeat(257);
        assert_eq!(
            encode_event(&mut out, Some(&long), None, "d"),
            Err(SseError::TooLong)
        );
        assert_eq!(
            encode_event(&mut out, None, Some(&long), "d"),
            Err(SseError::TooLong)
        );
        // A valid name with a bad id writes nothing either.
        assert_eq!(
            encode_event(&mut out, Some("ok"), Some("\n"), "d"),
            Err(SseError::IdHasLineBreak)
        );
        assert_eq!(out, b"keep");
        assert!(validate_event_name(&"x".repeat(256)).is_ok());
        assert!(validate_id(&"x".repeat(256)).is_ok());
        assert!(validate_id("").is_ok());
        assert!(!SseError::TooLong.to_string().is_empty());
    }

    #[test]
    fn encode_comment_vectors() {
        let mut out = Vec::new();
        encode_comment(&mut out, "");
        assert_eq!(out, b":\n\n");
        out.clear();
        encode_comment(&mut out, "ping");
        assert_eq!(out, b": ping\n\n");
        out.clear();
        encode_comment(&mut out, "a\r\ndata: evil\rretry: 1\nc");
        assert_eq!(out, b": a\n: data: evil\n: retry: 1\n: c\n\n");
        let mut p = SseParser::new();
        assert!(p.feed(&out).is_empty());
        assert_eq!(p.comments_seen(), 4);
        assert_eq!(p.retry(), None);
    }

    #[test]
    fn encode_retry_vectors() {
        let mut out = Vec::new();
        encode_retry(&mut out, 0);
        encode_retry(&mut out, 3000);
        encode_retry(&mut out, u64::MAX);
        assert_eq!(
            out,
            b"retry: 0\n\nretry: 3000\n\nretry: 18446744073709551615\n\n"
        );
        let mut p = SseParser::new();
        assert!(p.feed(&out).is_empty());
        assert_eq!(p.retry(), Some(u64::MAX));
    }

    #[test]
    fn event_id_round_trip_and_vectors() {
        let id = EventId { epoch: 7, seq: 42 };
        assert_eq!(id.encode(), "7:42");
        assert_eq!(parse_last_event_id("7:42"), Ok(id));
        assert_eq!(parse_last_event_id("0:0"), Ok(EventId { epoch: 0, seq: 0 }));
        let max = EventId {
            epoch: u64::MAX,
            seq: u64::MAX,
        };
        assert_eq!(parse_last_event_id(&max.encode()), Ok(max));
        assert!(validate_id(&max.encode()).is_ok());
    }

    #[test]
    fn last_event_id_hostile() {
        use LastEventIdError::*;
        for bad in [
            "",
            ":",
            "1:",
            ":2",
            "1",
            "1:2:3",
            "  1:2",
            "1:2 ",
            "-1:2",
            "+1:2",
            "1:-2",
            "1:+2",
            "01:2",
            "1:02",
            "1:2\r\nevil",
            "1:2\n",
            "1\r:2",
            "a:b",
            "1:2\0",
            "１:２",
            "18446744073709551616:1",
            "1:18446744073709551616",
            "99999999999999999999999:1",
        ] {
            assert_eq!(parse_last_event_id(bad), Err(Malformed), "{bad:?}");
        }
        assert_eq!(parse_last_event_id(&"1".repeat(10_000)), Err(TooLong));
        assert_eq!(parse_last_event_id(&"1".repeat(65)), Err(TooLong));
        // 64 bytes exactly is looked at (and is malformed: no u64 has 63 digits).
        let at_cap = format!("1:{}", "1".repeat(62));
        assert_eq!(parse_last_event_id(&at_cap), Err(Malformed));
        assert!(!Malformed.to_string().is_empty());
    }

    #[test]
    fn whatwg_stock_example() {
        // §9.2.6: "... would cause an event message with the interface MessageEvent to be
        // dispatched on the EventSource object. The event's data attribute would contain the
        // string "YHOO\n+2\n10"".
        let s = b"data: YHOO\ndata: +2\ndata: 10\n\n";
        assert_eq!(parse_all(s), vec![ev("message", "YHOO\n+2\n10", "")]);
    }

    #[test]
    fn whatwg_four_blocks_example() {
        let s = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n";
        let mut p = SseParser::new();
        assert_eq!(
            p.feed(s),
            vec![
                ev("message", "first event", "1"),
                ev("message", "second event", ""),
                ev("message", " third event", ""),
            ]
        );
        assert_eq!(p.comments_seen(), 1);
        assert_eq!(parse_bytewise(s), parse_all(s));
    }

    #[test]
    fn whatwg_empty_data_blocks_example() {
        // "The first block fires events with the data set to the empty string, as would the last
        // block if it was followed by a blank line. The middle block fires an event with the data
        // set to a single newline character. The last block is discarded because it is not
        // followed by a blank line."
        let s = b"data\n\ndata\ndata\n\ndata:";
        assert_eq!(
            parse_all(s),
            vec![ev("message", "", ""), ev("message", "\n", "")]
        );
    }

    #[test]
    fn whatwg_space_after_colon_example() {
        // "The following stream fires two identical events [...] the space after the colon is
        // ignored if present."
        let s = b"data:test\n\ndata: test\n\n";
        assert_eq!(parse_all(s), vec![ev("message", "test", ""); 2]);
    }

    #[test]
    fn whatwg_intro_examples() {
        let s = b"data: This is the first message.\n\ndata: This is the second message, it\ndata: has two lines.\n\ndata: This is the third message.\n\n";
        assert_eq!(
            parse_all(s),
            vec![
                ev("message", "This is the first message.", ""),
                ev(
                    "message",
                    "This is the second message, it\nhas two lines.",
                    ""
                ),
                ev("message", "This is the third message.", ""),
            ]
        );
        let s = b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n";
        assert_eq!(
            parse_all(s),
            vec![
                ev("add", "73857293", ""),
                ev("remove", "2153", ""),
                ev("add", "113411", "")
            ]
        );
    }

    #[test]
    fn parser_event_type_reset_rules() {
        // No data: nothing fires, and the event type does not leak into the next event.
        let s = b"event: foo\n\ndata: x\n\nid: 7\n\ndata: y\n\n";
        assert_eq!(
            parse_all(s),
            vec![ev("message", "x", ""), ev("message", "y", "7")]
        );
    }

    #[test]
    fn parser_line_endings() {
        let want = vec![ev("message", "a\nb", "")];
        assert_eq!(parse_all(b"data: a\r\ndata: b\r\n\r\n"), want);
        assert_eq!(parse_all(b"data: a\rdata: b\r\r"), want);
        assert_eq!(parse_all(b"data: a\ndata: b\r\n\r"), want);
        // "\n\r" is two line ends: a blank line in between dispatches "a" alone.
        assert_eq!(
            parse_all(b"data: a\n\rdata: b\n\n"),
            vec![ev("message", "a", ""), ev("message", "b", "")]
        );
    }

    #[test]
    fn parser_cr_lf_split_across_chunks() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: a\r").is_empty());
        // This LF completes the CRLF above; it is not a blank line.
        assert!(p.feed(b"\n").is_empty());
        assert!(p.feed(b"data: b\r").is_empty());
        assert_eq!(p.feed(b"\n\r"), vec![ev("message", "a\nb", "")]);
        // A lone CR followed in the next chunk by a non-LF is still a line end.
        assert!(p.feed(b"data: c\r").is_empty());
        assert_eq!(p.feed(b"\r"), vec![ev("message", "c", "")]);
    }

    #[test]
    fn parser_bom() {
        let mut s = BOM.to_vec();
        s.extend_from_slice(b"data: x\n\n");
        assert_eq!(parse_all(&s), vec![ev("message", "x", "")]);
        assert_eq!(parse_bytewise(&s), vec![ev("message", "x", "")]);
        // Only one BOM is stripped; a second one is part of the field name ("\u{feff}data").
        let mut two = BOM.to_vec();
        two.extend_from_slice(&s);
        assert!(parse_all(&two).is_empty());
        // A BOM later in the stream is ordinary text: "\u{feff}data" is an unknown field.
        let mut later = b"data: a\n".to_vec();
        later.extend_from_slice(&s);
        assert_eq!(parse_all(&later), vec![ev("message", "a", "")]);
        // A partial BOM prefix replays as ordinary bytes (lossy-decoded).
        let p = parse_bytewise(b"\xEF\xBBdata: y\n\n");
        assert!(p.is_empty());
        let p = parse_bytewise(b"\xEF\xBB\ndata: y\n\n");
        assert_eq!(p, vec![ev("message", "y", "")]);
        // A stream that starts with a comment right after the BOM.
        let mut c = BOM.to_vec();
        c.extend_from_slice(b":hi\ndata: z\n\n");
        let mut parser = SseParser::new();
        assert_eq!(parser.feed(&c), vec![ev("message", "z", "")]);
        assert_eq!(parser.comments_seen(), 1);
    }

    #[test]
    fn parser_fields() {
        let mut p = SseParser::new();
        // Unknown fields, case-sensitive names, a field with no colon, a NUL id ignored.
        let s = b"Data: no\nfoo: bar\ndata\nid: 5\nid: 6\0x\nevent:e\ndata:: colon\n\n";
        assert_eq!(p.feed(s), vec![ev("e", "\n: colon", "5")]);
        // The last event id persists across events.
        assert_eq!(p.feed(b"data: n\n\n"), vec![ev("message", "n", "5")]);
        assert_eq!(p.last_event_id(), "5");
    }

    #[test]
    fn parser_retry() {
        let mut p = SseParser::new();
        p.feed(b"retry: 1500\n");
        assert_eq!(p.retry(), Some(1500));
        for bogus in [
            "retry: 12x\n",
            "retry: -1\n",
            "retry: 0x10\n",
            "retry:\n",
            "retry\n",
            "retry:  5\n",
            "retry: 99999999999999999999999\n",
        ] {
            p.feed(bogus.as_bytes());
            assert_eq!(p.retry(), Some(1500), "{bogus:?}");
        }
        p.feed(b"retry:011\n");
        assert_eq!(p.retry(), Some(11));
    }

    #[test]
    fn parser_invalid_utf8_is_replaced() {
        assert_eq!(
            parse_all(b"data: a\xFFb\xE2\x82\n\n"),
            vec![ev("message", "a\u{FFFD}b\u{FFFD}", "")]
        );
        // A multi-byte char split across chunks decodes whole.
        let mut p = SseParser::new();
        assert!(p.feed(b"data: \xE2\x9C").is_empty());
        assert_eq!(p.feed(b"\x93\n\n"), vec![ev("message", "✓", "")]);
    }

    #[test]
    fn parser_hostile_sizes() {
        // A huge comment is skipped without buffering.
        let mut p = SseParser::with_max_event_bytes(64);
        p.feed(b":");
        for _ in 0..1000 {
            p.feed(&[b'x'; 1000]);
        }
        assert_eq!(p.feed(b"\ndata: ok\n\n"), vec![ev("message", "ok", "")]);
        assert_eq!(p.error(), None);
        // A huge line stops the parser instead of growing without bound.
        let mut p = SseParser::with_max_event_bytes(64);
        p.feed(b"data: ");
        p.feed(&[b'x'; 100]);
        assert_eq!(p.error(), Some(SseError::EventTooLarge));
        assert!(p.feed(b"\n\ndata: late\n\n").is_empty());
        // Many short data lines add up too.
        let mut p = SseParser::with_max_event_bytes(64);
        let many = b"data: 0123456789\n".repeat(10);
        assert!(p.feed(&many).is_empty());
        assert_eq!(p.error(), Some(SseError::EventTooLarge));
        // A million blank lines and CRs: no events, linear work.
        let mut p = SseParser::new();
        assert!(p.feed(&b"\r\n\r".repeat(1_000_000)).is_empty());
        assert!(p.feed(&vec![b'\n'; 1_000_000]).is_empty());
    }

    #[test]
    fn normalize_newlines_vectors() {
        assert_eq!(normalize_newlines(""), "");
        assert_eq!(normalize_newlines("a\r\nb\rc\nd"), "a\nb\nc\nd");
        assert_eq!(normalize_newlines("\r\r\n\n"), "\n\n\n");
    }

    fn valid_name() -> impl Strategy<Value = String> {
        "[^\r\n\0]{1,40}"
    }

    fn valid_id() -> impl Strategy<Value = String> {
        "[^\r\n\0]{0,40}"
    }

    /// Any unicode, weighted towards the characters that matter here.
    fn any_data() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                3 => any::<char>(),
                1 => Just('\r'),
                1 => Just('\n'),
                1 => Just('\0'),
                1 => Just(' '),
                1 => Just(':'),
                1 => Just('\u{FEFF}'),
            ],
            0..40,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    fn feed_chunked(p: &mut SseParser, bytes: &[u8], cuts: &[usize]) -> Vec<ParsedEvent> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut out = Vec::new();
        let mut start = 0;
        for end in points.into_iter().chain([bytes.len()]) {
            out.extend(p.feed(&bytes[start..end]));
            start = end;
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn encode_then_parse_round_trips(
            events in prop::collection::vec(
                (prop::option::of(valid_name()), prop::option::of(valid_id()), any_data()),
                1..5,
            ),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
            comment in any_data(),
        ) {
            let mut bytes = Vec::new();
            let mut want = Vec::new();
            let mut last_id = String::new();
            for (i, (name, id, data)) in events.iter().enumerate() {
                if i == 1 {
                    encode_comment(&mut bytes, &comment);
                }
                encode_event(&mut bytes, name.as_deref(), id.as_deref(), data).unwrap();
                if let Some(id) = id {
                    last_id.clone_from(id);
                }
                want.push(ev(name.as_deref().unwrap_or("message"), &normalize_newlines(data), &last_id));
            }
            let mut p = SseParser::new();
            let got = feed_chunked(&mut p, &bytes, &cuts);
            prop_assert_eq!(got, want);
            prop_assert_eq!(p.retry(), None);
            prop_assert_eq!(p.error(), None);
        }

        #[test]
        fn parser_never_panics_and_chunking_is_irrelevant(
            bytes in prop::collection::vec(
                prop_oneof![
                    4 => any::<u8>(),
                    2 => prop::sample::select(b"\r\n: data event id retry 0123\xEF\xBB\xBF".to_vec()),
                ],
                0..200,
            ),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut whole = SseParser::new();
            let all = whole.feed(&bytes);
            let mut chunked = SseParser::new();
            let parts = feed_chunked(&mut chunked, &bytes, &cuts);
            prop_assert_eq!(all, parts);
            prop_assert_eq!(whole.retry(), chunked.retry());
            prop_assert_eq!(whole.comments_seen(), chunked.comments_seen());
            prop_assert_eq!(whole.last_event_id(), chunked.last_event_id());
        }

        #[test]
        fn last_event_id_round_trips(epoch in any::<u64>(), seq in any::<u64>()) {
            let id = EventId { epoch, seq };
            prop_assert_eq!(parse_last_event_id(&id.encode()), Ok(id));
        }

        #[test]
        fn last_event_id_never_panics(s in "\\PC{0,80}") {
            if let Ok(id) = parse_last_event_id(&s) {
                prop_assert_eq!(id.encode(), s);
            }
        }
    }
}
