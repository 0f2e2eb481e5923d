//! [`Handle`]: how any application thread reaches the loop (a command channel and a waker).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Command, Data, SessionId, Stats, StreamId};
use crate::error::{BroadcastError, ServerClosed};
use crate::io::{LoopCommand, LoopWaker};

/// A cheap, cloneable handle to a running server, usable from any thread.
#[derive(Clone)]
pub struct Handle {
    pub(super) commands: Sender<LoopCommand>,
    pub(super) waker: Arc<LoopWaker>,
    pub(super) max_payload: usize,
    pub(super) counters: Arc<crate::metrics::Counters>,
    pub(super) backlog: Arc<AtomicUsize>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handle")
    }
}

impl Handle {
    pub(crate) fn send(&self, cmd: LoopCommand) -> Result<(), ServerClosed> {
        self.commands.send(cmd).map_err(|_| ServerClosed)?;
        self.waker.wake().map_err(|_| ServerClosed)
    }

    pub(crate) fn command(&self, cmd: Command) -> Result<(), ServerClosed> {
        self.send(LoopCommand::Engine(cmd))
    }

    /// The configured `max_payload`: the largest message the server sends or accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Sends a message on a raw Engine.IO session. Unknown or closed sessions are ignored.
    pub fn eio_send(&self, session: SessionId, data: Data) -> Result<(), ServerClosed> {
        self.command(Command::EioSend { session, data })
    }

    /// Closes a raw Engine.IO session.
    pub fn eio_close(&self, session: SessionId) -> Result<(), ServerClosed> {
        self.command(Command::EioClose { session })
    }

    /// Sends an event to one SSE stream (not kept for resume: use a broadcast for that). An event
    /// name with CR, LF or NUL, or data over `max_payload`, is refused and nothing is sent.
    pub fn sse_send(
        &self,
        stream: StreamId,
        event: Option<&str>,
        data: &str,
    ) -> Result<(), BroadcastError> {
        if let Some(name) = event {
            crate::proto::sse::validate_event_name(name)
                .map_err(|e| BroadcastError::InvalidEvent(e.to_string()))?;
        }
        if data.len() > self.max_payload {
            return Err(BroadcastError::PayloadTooLarge {
                size: data.len(),
                max: self.max_payload,
            });
        }
        self.command(Command::SseSend {
            stream,
            event: event.map(str::to_string),
            data: data.to_string(),
        })?;
        Ok(())
    }

    /// Ends an SSE stream.
    pub fn sse_close(&self, stream: StreamId) -> Result<(), ServerClosed> {
        self.command(Command::SseClose { stream })
    }

    /// Totals since start (bytes, deliveries, client events, slow-consumer closes, route
    /// requests) and the dispatcher's backlog. Reads atomics: no round trip to the loop.
    pub fn metrics(&self) -> crate::Metrics {
        self.counters.snapshot(self.backlog.load(Ordering::Relaxed))
    }

    pub(crate) fn counters(&self) -> &crate::metrics::Counters {
        &self.counters
    }

    /// Engine counters (sessions, sockets, streams, pending acks, index sizes).
    pub fn stats(&self) -> Result<Stats, ServerClosed> {
        let (tx, rx) = mpsc::channel();
        self.command(Command::Stats { reply: tx })?;
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| ServerClosed)
    }
}
