//! One TCP connection: its mode (HTTP requests, WebSocket, closing), inbound parsing and outbound
//! queue. Reading hands complete inputs to the engine; the loop applies the engine's outputs.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

use super::request_reader::{RequestReader, Step};
use crate::buf::{Chunk, OutQueue};
use crate::config::Config;
use crate::engine::{ConnId, Engine, Request, WsMessage};
use crate::proto::http::{self, HeadLimits, Response};
use crate::proto::ws::{self, FrameBoundaries};

/// What a read pass ended with.
pub(crate) enum ReadOutcome {
    /// The socket has no more bytes for now.
    Blocked,
    /// A complete input was handed to the engine: apply its outputs, then read again.
    Continue,
    /// The read budget is spent; come back next turn.
    BudgetSpent,
    /// Drop the connection now.
    Close,
    /// A final answer (an HTTP error, a WebSocket close) is queued: close once it is written.
    CloseAfterFlush,
}

pub(crate) enum Mode {
    /// Boxed: a reader holds a whole request head while it waits for the body, and a connection
    /// in any other mode should not pay for that room.
    Http(Box<RequestReader>),
    WebSocket(WsReader),
    /// An endless response (SSE): input is discarded, end of input closes the stream.
    Streaming,
    /// Waiting for queued bytes to drain; input is discarded.
    Closing,
}

/// tungstenite's reader with its buffer: about 1.3 KiB, so only a connection in the middle of a frame
/// or of a fragmented message keeps one. Between messages the context goes back to the loop's
/// spare (a context between messages holds nothing of its last connection: same state as new).
pub(crate) type WsContext = Box<WebSocketContext>;

/// The read side of a WebSocket connection.
pub(crate) struct WsReader {
    /// Present only while the bytes read so far end inside a frame or a fragmented message.
    ctx: Option<WsContext>,
    /// Where the client's frames end (the bytes themselves go to the context).
    frames: FrameBoundaries,
    /// The context took a frame larger than a spare should keep room for.
    grew: bool,
}

/// A context that took frames larger than this is dropped rather than kept as the loop's spare, so
/// one large upload does not pin its buffer.
const SPARE_MAX_FRAME: u64 = 16 * 1024;

/// How the bytes handed to tungstenite in one pass end.
#[derive(Clone, Copy)]
enum FeedEnd {
    /// The socket has no more for now.
    Blocked,
    /// The peer closed its side.
    Eof,
    /// The socket failed.
    Failed(io::ErrorKind),
}

/// Adapter for tungstenite: reads come from bytes the loop already read from the socket, writes
/// (pongs, close replies) go into the connection's outbound queue (never blocks; the queue cap is
/// checked by the caller).
struct Feed<'a> {
    bytes: &'a [u8],
    end: FeedEnd,
    out: &'a mut OutQueue,
}

impl Read for Feed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.bytes.is_empty() {
            return match self.end {
                FeedEnd::Blocked => Err(io::ErrorKind::WouldBlock.into()),
                FeedEnd::Eof => Ok(0),
                FeedEnd::Failed(kind) => Err(kind.into()),
            };
        }
        let n = buf.len().min(self.bytes.len());
        let (now, rest) = self.bytes.split_at(n);
        if let Some(dst) = buf.get_mut(..n) {
            dst.copy_from_slice(now);
        }
        self.bytes = rest;
        Ok(n)
    }
}

impl Write for Feed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.push(Chunk::Owned(buf.to_vec()));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A read that did not fill the buffer took everything the socket had: no second read to hear
/// "would block". Safe with edge-triggered readiness, since bytes that arrive after it raise a
/// new readable event (the same rule as Netty's epoll transport), but only when that event did
/// not also report the peer's FIN: a FIN that came with the bytes raises nothing more, so then
/// the loop reads on until it sees the end (`short_read_ends` false).
fn drained(n: usize, scratch: &[u8]) -> bool {
    n > 0 && n < scratch.len()
}

pub(crate) struct Conn {
    pub(crate) id: ConnId,
    pub(crate) stream: TcpStream,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) mode: Mode,
    pub(crate) out: OutQueue,
    pub(crate) close_after_flush: bool,
    pub(crate) deadline: Option<Instant>,
    /// Set when the first byte of a new request arrives on an idle keep-alive connection, so the
    /// loop can swap the idle deadline for the (shorter) request deadline.
    pub(crate) request_started: bool,
    /// Already listed in the loop's `dirty` list this turn.
    pub(crate) queued_dirty: bool,
    /// Bytes read and written since the loop last collected them (for the metrics).
    bytes_read: u64,
    bytes_written: u64,
}

fn ws_config(cfg: &Config) -> WebSocketConfig {
    // tungstenite's defaults allocate 128 KiB per connection and accept 64 MiB messages; we keep
    // an idle connection small and apply Engine.IO's maxPayload to frames and messages alike.
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(cfg.max_outbound_bytes)
        .max_message_size(Some(cfg.max_payload))
        .max_frame_size(Some(cfg.max_payload))
        .accept_unmasked_frames(false)
}

impl Conn {
    pub(crate) fn new(
        id: ConnId,
        stream: TcpStream,
        remote: Option<SocketAddr>,
        _cfg: &Config,
    ) -> Conn {
        Conn {
            id,
            stream,
            remote,
            mode: Mode::Http(Box::new(RequestReader::new())),
            out: OutQueue::new(),
            close_after_flush: false,
            deadline: None,
            request_started: false,
            queued_dirty: false,
            bytes_read: 0,
            bytes_written: 0,
        }
    }

    /// Bytes read and written since the last call (the loop adds them to the metrics).
    pub(crate) fn take_io_counts(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.bytes_read),
            std::mem::take(&mut self.bytes_written),
        )
    }

    /// True while a request is partly received (a timeout then deserves a 408).
    pub(crate) fn is_mid_request(&self) -> bool {
        match &self.mode {
            Mode::Http(reader) => reader.is_mid_request(),
            _ => false,
        }
    }

    /// The engine finished the response to the current request: read the next one.
    pub(crate) fn response_done(&mut self) {
        if let Mode::Http(reader) = &mut self.mode {
            reader.response_done();
        }
    }

    /// The 101 response is queued: bytes after the request head already belong to WebSocket.
    pub(crate) fn start_websocket(&mut self, cfg: &Config) {
        let leftover = match &mut self.mode {
            Mode::Http(reader) => reader.take_leftover(),
            _ => return,
        };
        let mut frames = FrameBoundaries::default();
        let grew = frames.feed(&leftover) > SPARE_MAX_FRAME;
        // Bytes that came with the request (a client that did not wait for the 101) wait in a
        // context of their own, handed to tungstenite at the next read.
        let ctx = (!leftover.is_empty()).then(|| {
            Box::new(WebSocketContext::from_partially_read(
                leftover,
                Role::Server,
                Some(ws_config(cfg)),
            ))
        });
        self.mode = Mode::WebSocket(WsReader { ctx, frames, grew });
    }

    /// Writes as much of the queue as the socket takes. `Err` means the connection is dead.
    pub(crate) fn write_queued(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            let written = {
                let mut slices = [std::io::IoSlice::new(&[]); 64];
                let n = self.out.fill_slices(&mut slices);
                self.stream.write_vectored(slices.get(..n).unwrap_or(&[]))
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.bytes_written += n as u64;
                    self.out.advance(n)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what the socket has, into `scratch` (shared by every connection of the loop).
    /// `spare` is the loop's WebSocket context between connections.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read(
        &mut self,
        scratch: &mut [u8],
        spare: &mut Option<WsContext>,
        budget: &mut usize,
        short_read_ends: bool,
        engine: &mut Engine,
        now: Instant,
        cfg: &Config,
    ) -> ReadOutcome {
        match self.mode {
            Mode::Http { .. } => self.read_http(scratch, budget, short_read_ends, engine, now, cfg),
            Mode::WebSocket(_) => {
                self.read_ws(scratch, spare, budget, short_read_ends, engine, now, cfg)
            }
            Mode::Streaming | Mode::Closing => self.read_discard(scratch, budget, short_read_ends),
        }
    }

    fn read_discard(
        &mut self,
        scratch: &mut [u8],
        budget: &mut usize,
        short_read_ends: bool,
    ) -> ReadOutcome {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return ReadOutcome::Close,
                Ok(n) => {
                    self.bytes_read += n as u64;
                    *budget = budget.saturating_sub(n);
                    if *budget == 0 {
                        return ReadOutcome::BudgetSpent;
                    }
                    if short_read_ends && drained(n, scratch) {
                        return ReadOutcome::Blocked;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Close,
            }
        }
    }

    fn read_http(
        &mut self,
        scratch: &mut [u8],
        budget: &mut usize,
        short_read_ends: bool,
        engine: &mut Engine,
        now: Instant,
        cfg: &Config,
    ) -> ReadOutcome {
        if let Some(outcome) = self.process_http(engine, now, cfg) {
            return outcome;
        }
        loop {
            let n = match self.stream.read(scratch) {
                Ok(0) => return ReadOutcome::Close,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return ReadOutcome::Close,
            };
            *budget = budget.saturating_sub(n);
            self.bytes_read += n as u64;
            let Mode::Http(reader) = &mut self.mode else {
                return ReadOutcome::Continue;
            };
            if reader.is_idle() {
                self.request_started = true;
            }
            reader.push(scratch.get(..n).unwrap_or(&[]));
            // Bytes pipelined behind a parked request are kept, but only up to one more request.
            if reader.awaiting_response()
                && reader.buffered()
                    > cfg.max_head_bytes + cfg.max_payload.max(cfg.max_request_body)
            {
                return ReadOutcome::Close;
            }
            if let Some(outcome) = self.process_http(engine, now, cfg) {
                return outcome;
            }
            if *budget == 0 {
                return ReadOutcome::BudgetSpent;
            }
            if short_read_ends && drained(n, scratch) {
                return ReadOutcome::Blocked;
            }
        }
    }

    /// Frames buffered bytes. `Some` when a request was dispatched or refused; `None` when more
    /// bytes are needed.
    fn process_http(
        &mut self,
        engine: &mut Engine,
        now: Instant,
        cfg: &Config,
    ) -> Option<ReadOutcome> {
        let Mode::Http(reader) = &mut self.mode else {
            return None;
        };
        let limits = HeadLimits {
            max_head_bytes: cfg.max_head_bytes,
            max_headers: cfg.max_headers,
        };
        // Routes have their own limit (`max_request_body`), Engine.IO bodies `max_payload`.
        match reader.next(&limits, |head| engine.max_body(head)) {
            Step::NeedMore { send_continue } => {
                if send_continue {
                    self.out
                        .push(Chunk::inline(b"HTTP/1.1 100 Continue\r\n\r\n"));
                }
                None
            }
            Step::Refuse(status) => Some(self.refuse(status)),
            Step::TooLarge(head) => {
                let resp = engine.body_too_large(&head);
                Some(self.refuse_with(resp))
            }
            Step::Request { head, body } => {
                self.deadline = None;
                self.request_started = false;
                let remote = self.remote;
                engine.handle_request(now, self.id, Request { head, body, remote });
                Some(ReadOutcome::Continue)
            }
        }
    }

    /// Answers a request we cannot serve and closes the connection after the answer.
    fn refuse(&mut self, status: u16) -> ReadOutcome {
        let resp = Response::new(status)
            .with_body("text/plain; charset=utf-8", http::reason_phrase(status));
        self.refuse_with(resp)
    }

    /// Like [`Conn::refuse`], with a response of the engine's.
    fn refuse_with(&mut self, resp: Response) -> ReadOutcome {
        self.out.push(Chunk::Owned(resp.encode(false)));
        self.mode = Mode::Closing;
        ReadOutcome::CloseAfterFlush
    }

    #[allow(clippy::too_many_arguments)]
    fn read_ws(
        &mut self,
        scratch: &mut [u8],
        spare: &mut Option<WsContext>,
        budget: &mut usize,
        short_read_ends: bool,
        engine: &mut Engine,
        now: Instant,
        cfg: &Config,
    ) -> ReadOutcome {
        // Bytes that came with the upgrade request first (nothing new to read for them).
        if let Some(outcome) = self.ws_pass(&[], FeedEnd::Blocked, spare, engine, now, cfg) {
            return outcome;
        }
        loop {
            let (n, end) = match self.stream.read(scratch) {
                Ok(0) => (0, FeedEnd::Eof),
                Ok(n) => (n, FeedEnd::Blocked),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => (0, FeedEnd::Failed(e.kind())),
            };
            self.bytes_read += n as u64;
            *budget = budget.saturating_sub(n);
            let bytes = scratch.get(..n).unwrap_or(&[]);
            if let Some(outcome) = self.ws_pass(bytes, end, spare, engine, now, cfg) {
                return outcome;
            }
            if *budget == 0 {
                return ReadOutcome::BudgetSpent;
            }
            if short_read_ends && drained(n, scratch) {
                return ReadOutcome::Blocked;
            }
        }
    }

    /// Hands `bytes` (then `end`) to tungstenite and each message it completes to the engine.
    /// `None` when all of them are consumed and more are needed.
    fn ws_pass(
        &mut self,
        bytes: &[u8],
        end: FeedEnd,
        spare: &mut Option<WsContext>,
        engine: &mut Engine,
        now: Instant,
        cfg: &Config,
    ) -> Option<ReadOutcome> {
        let id = self.id;
        let Mode::WebSocket(reader) = &mut self.mode else {
            return Some(ReadOutcome::Continue);
        };
        if bytes.is_empty() && matches!(end, FeedEnd::Blocked) && reader.ctx.is_none() {
            return None;
        }
        reader.grew |= reader.frames.feed(bytes) > SPARE_MAX_FRAME;
        let ctx = reader.ctx.get_or_insert_with(|| {
            spare.take().unwrap_or_else(|| {
                Box::new(WebSocketContext::new(Role::Server, Some(ws_config(cfg))))
            })
        });
        let mut s = Feed {
            bytes,
            end,
            out: &mut self.out,
        };
        // Each call takes a frame (2 bytes at least) or ends the pass.
        loop {
            let result = ctx.read(&mut s);
            let _ = ctx.flush(&mut s); // pongs and close replies go into our queue
            if s.out.queued_bytes() > cfg.max_outbound_bytes {
                // A ping flood from a client that never reads: its pongs alone fill the queue.
                engine.handle_conn_closed(now, id);
                return Some(ReadOutcome::Close);
            }
            match result {
                Ok(Message::Text(t)) => {
                    engine.handle_ws_message(now, id, WsMessage::Text(t.as_str()))
                }
                Ok(Message::Binary(b)) => engine.handle_ws_message(now, id, WsMessage::Binary(&b)),
                Ok(Message::Close(_)) => {
                    engine.handle_conn_closed(now, id);
                    self.mode = Mode::Closing;
                    return Some(ReadOutcome::CloseAfterFlush);
                }
                Ok(_) => {} // ping (answered by tungstenite), pong, raw frame
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Some(ReadOutcome::Close)
                }
                Err(e) => {
                    // RFC 6455 §7.4.1: 1009 "message too big", 1007 "inconsistent data" (bad
                    // UTF-8), 1002 "protocol error".
                    let code = match e {
                        tungstenite::Error::Capacity(_) => 1009,
                        tungstenite::Error::Utf8(_) => 1007,
                        _ => 1002,
                    };
                    engine.handle_conn_closed(now, id);
                    self.out.push(Chunk::inline(&ws::close_frame(code)));
                    self.mode = Mode::Closing;
                    return Some(ReadOutcome::CloseAfterFlush);
                }
            }
        }
        // Every byte is in the context now. Between messages it holds nothing of this
        // connection: give it back (a context that took a large frame is dropped instead).
        if reader.frames.between_messages() {
            if let Some(ctx) = reader.ctx.take() {
                if !reader.grew && spare.is_none() {
                    *spare = Some(ctx);
                }
            }
            reader.grew = false;
        }
        None
    }
}
