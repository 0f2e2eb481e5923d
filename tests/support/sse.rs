//! SSE streams, parsed with the crate's WHATWG parser.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tidings::proto::sse::{ParsedEvent, SseParser};

use super::http::{get_request, HttpResponse, ReadErr, ResponseHead, Wire};
use super::WAIT;

/// An open SSE stream, parsed with the crate's WHATWG parser.
pub struct SseStream {
    pub wire: Wire,
    pub head: ResponseHead,
    pub parser: SseParser,
    queue: VecDeque<ParsedEvent>,
    pub closed: bool,
}

/// Opens `GET target` as an SSE stream: `Ok` on a 200 `text/event-stream` answer, `Err` with the
/// whole response otherwise.
pub fn sse_open(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<SseStream, HttpResponse> {
    let mut hs = vec![("Accept", "text/event-stream")];
    hs.extend_from_slice(headers);
    sse_open_raw(addr, &get_request(target, &hs, false))
}

/// Like [`sse_open`] with raw request bytes.
pub fn sse_open_raw(addr: SocketAddr, request: &[u8]) -> Result<SseStream, HttpResponse> {
    let mut wire = Wire::connect(addr);
    wire.send(request).expect("send request");
    let deadline = Instant::now() + WAIT;
    let head = wire.read_head(deadline).expect("response head");
    let is_stream = head.status == 200
        && head
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_stream {
        let body = match head.content_length() {
            Some(n) => {
                wire.fill(n, deadline).expect("response body");
                wire.take(n)
            }
            None => Vec::new(),
        };
        let closed = wire.wait_eof(deadline);
        return Err(HttpResponse { head, body, closed });
    }
    let mut parser = SseParser::new();
    let rest = std::mem::take(&mut wire.buf);
    let queue: VecDeque<ParsedEvent> = parser.feed(&rest).into();
    Ok(SseStream {
        wire,
        head,
        parser,
        queue,
        closed: false,
    })
}

impl SseStream {
    /// Reads more of the stream, waiting at most until `deadline`; `false` on timeout or close.
    fn pump(&mut self, deadline: Instant) -> bool {
        if self.closed {
            return false;
        }
        match self.wire.read_some(deadline) {
            Ok(_) => {
                let bytes = std::mem::take(&mut self.wire.buf);
                self.queue.extend(self.parser.feed(&bytes));
                assert_eq!(self.parser.error(), None, "SSE parser gave up");
                true
            }
            Err(ReadErr::Closed) => {
                self.closed = true;
                false
            }
            Err(ReadErr::Timeout) => false,
            Err(ReadErr::Io(e)) => panic!("SSE read failed: {e}"),
        }
    }

    /// The next event, or `None` after `timeout` (or when the stream ended).
    pub fn next_event(&mut self, timeout: Duration) -> Option<ParsedEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if !self.pump(deadline) {
                return self.queue.pop_front();
            }
        }
    }

    /// The next event, which must arrive within [`WAIT`].
    pub fn expect_event(&mut self) -> ParsedEvent {
        match self.next_event(WAIT) {
            Some(e) => e,
            None => panic!("no SSE event within {WAIT:?} (closed: {})", self.closed),
        }
    }

    /// Events up to and including the first of type `event` (bounded by count and time).
    pub fn events_until(&mut self, event: &str, max: usize) -> Vec<ParsedEvent> {
        let mut out = Vec::new();
        for _ in 0..max {
            let e = self.expect_event();
            let done = e.event == event;
            out.push(e);
            if done {
                return out;
            }
        }
        panic!("no {event:?} event among the first {max}")
    }

    /// Reads until the server ends the stream; `true` if it did within `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.closed && Instant::now() < deadline {
            self.pump(deadline);
        }
        self.closed
    }

    /// Waits until the parser has seen a `retry` field.
    pub fn wait_retry(&mut self) -> Option<u64> {
        let deadline = Instant::now() + WAIT;
        while self.parser.retry().is_none() && Instant::now() < deadline {
            if !self.pump(deadline) && self.closed {
                break;
            }
        }
        self.parser.retry()
    }

    /// Waits until at least `n` comment lines arrived.
    pub fn wait_comments(&mut self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.parser.comments_seen() < n && Instant::now() < deadline {
            if !self.pump(deadline) && self.closed {
                break;
            }
        }
        self.parser.comments_seen()
    }
}

/// Splits our SSE id `<epoch>:<seq>`.
pub fn split_id(id: &str) -> (u64, u64) {
    let (e, s) = id.split_once(':').expect("id is epoch:seq");
    (e.parse().expect("epoch"), s.parse().expect("seq"))
}
