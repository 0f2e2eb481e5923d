//! Server-Sent Events streams: opened after the application's authentication hook accepts the
//! request, indexed like any other recipient, kept alive by heartbeat comments, and resumable:
//! every broadcast carries `id: <epoch>:<seq>` and a bounded history replays, in order and once,
//! what a reconnecting client missed that was addressed to it — or says `tidings-reset` when the
//! gap can no longer be filled.

use crate::engine::id_map::IdMap;
use std::sync::Arc;
use std::time::Instant;

use super::history::Gap;
use super::index::{Identity, RecipientKind};
use super::sio::Rejection;
use super::timers::TimerKey;
use super::{AppEvent, ConnId, ConnRole, Engine, Output, Request, RequestInfo};
use crate::buf::Chunk;
use crate::proto::http::Response;
use crate::proto::sse::{self as codec, EventId};

/// The event name of the reset notice sent when missed events cannot be replayed.
pub const RESET_EVENT: &str = "tidings-reset";

/// An SSE stream, unique for the life of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

#[derive(Debug)]
struct PendingStream {
    conn: ConnId,
    last_event_id: Option<String>,
    cors_origin: Option<String>,
}

#[derive(Debug)]
struct Stream {
    conn: ConnId,
    /// Broadcasts up to this sequence number are not delivered any more: the stream resumed past
    /// them (see `sse_resume`).
    floor: u64,
}

/// All SSE state.
#[derive(Debug, Default)]
pub(crate) struct Sse {
    streams: IdMap<Stream>,
    pending: IdMap<PendingStream>,
    next_request: u64,
    heartbeat_armed: Option<Instant>,
}

impl Sse {
    /// A new sequence (a cluster's new epoch): no stream holds back what comes next.
    pub(crate) fn reset_floors(&mut self) {
        for s in self.streams.values_mut() {
            s.floor = 0;
        }
    }

    pub(crate) fn stream_count(&self) -> usize {
        self.streams.len()
    }

    pub(crate) fn conn_of(&self, stream: u64) -> Option<ConnId> {
        self.streams.get(&stream).map(|s| s.conn)
    }

    /// Where a broadcast to `stream` goes, and its floor.
    pub(crate) fn target_of(&self, stream: u64) -> Option<(ConnId, u64)> {
        self.streams.get(&stream).map(|s| (s.conn, s.floor))
    }
}

impl Engine {
    /// A GET on the SSE path: ask the application who this is.
    pub(super) fn sse_request(&mut self, conn: ConnId, req: Request) {
        let last_event_id = req
            .head
            .header("last-event-id")
            .map(str::to_string)
            .or_else(|| req.head.query_param("lastEventId"));
        let cors_origin = self.allowed_origin(&req.head);
        let request = Self::take_id(&mut self.sse.next_request, self.hub.loops, self.loop_index);
        self.sse.pending.insert(
            request,
            PendingStream {
                conn,
                last_event_id,
                cors_origin,
            },
        );
        self.roles.insert(conn, ConnRole::SsePending(request));
        let info = Arc::new(RequestInfo::new(req.head, req.remote));
        self.push(Output::App(AppEvent::SseConnectRequest { request, info }));
    }

    /// The application decided on an SSE request.
    pub(super) fn sse_decision(
        &mut self,
        now: Instant,
        request: u64,
        decision: Result<Option<Identity>, Rejection>,
    ) {
        let Some(p) = self.sse.pending.remove(&request) else {
            return;
        };
        if self.roles.get(&p.conn) != Some(&ConnRole::SsePending(request)) {
            return; // the client went away meanwhile
        }
        self.roles.remove(&p.conn);
        let identity = match decision {
            Ok(identity) => identity,
            Err(rejection) => {
                // Never a stream for a rejected request: a plain 401/403 and the connection closes.
                let status = if rejection.status == 403 { 403 } else { 401 };
                let mut resp =
                    Response::new(status).with_body("text/plain; charset=utf-8", rejection.message);
                if let Some(origin) = &p.cors_origin {
                    super::apply_cors(&mut resp, origin, self.cfg.cors.allow_credentials);
                }
                self.push(Output::Write {
                    conn: p.conn,
                    chunk: Chunk::Owned(resp.encode(false)),
                });
                self.push(Output::ResponseDone {
                    conn: p.conn,
                    keep_alive: false,
                });
                return;
            }
        };
        let id = self.new_recipient_id();
        let mut resp = Response::new(200);
        resp.header("Content-Type", "text/event-stream; charset=utf-8");
        resp.header("Cache-Control", "no-cache");
        resp.header("X-Accel-Buffering", "no");
        if let Some(origin) = &p.cors_origin {
            super::apply_cors(&mut resp, origin, self.cfg.cors.allow_credentials);
        }
        let mut head = resp.encode_head_streaming();
        // `retry` comes only from the server: the configured delay plus up to 1 s of jitter so a
        // restart does not bring every client back in the same instant.
        let jitter = u64::from(u16::from_le_bytes(self.random_bytes::<2>())) % 1000;
        codec::encode_retry(&mut head, self.cfg.sse_retry.as_millis() as u64 + jitter);
        self.push(Output::Write {
            conn: p.conn,
            chunk: Chunk::Owned(head),
        });
        self.push(Output::StartStream { conn: p.conn });
        self.roles.insert(p.conn, ConnRole::Sse(id));
        self.sse.streams.insert(
            id,
            Stream {
                conn: p.conn,
                floor: 0,
            },
        );
        self.index_add(id, RecipientKind::Sse, identity.as_ref());
        self.sse_resume(now, id, p.conn, p.last_event_id.as_deref());
        let hb = now + self.cfg.sse_heartbeat;
        self.timers.schedule(
            TimerKey::SseHeartbeat,
            Some(hb),
            &mut self.sse.heartbeat_armed,
        );
        self.push(Output::App(AppEvent::SseOpened {
            stream: StreamId(id),
            identity,
        }));
    }

    /// Replays what the client missed, or tells it that it cannot be done. The replay goes up
    /// to what this loop has delivered; the broadcasts still on their way here come live, past
    /// the stream's floor (the client's last id), so each arrives once whichever loop it saw it
    /// on before.
    fn sse_resume(&mut self, now: Instant, id: u64, conn: ConnId, last: Option<&str>) {
        // An empty Last-Event-ID is what a client sends before it saw any id: a fresh start.
        let Some(last) = last.filter(|l| !l.is_empty()) else {
            return;
        };
        let hub = self.hub.clone();
        let mut state = hub.lock();
        // Age the history first: with no stream open, nothing else may have trimmed it lately.
        state.history.trim(now, self.history_limits());
        let parsed = codec::parse_last_event_id(last);
        let reason = match parsed {
            Err(_) => Some("invalid-id"),
            Ok(EventId { epoch, .. }) if epoch != hub.epoch() => Some("unknown-epoch"),
            Ok(EventId { seq, .. }) => match state.history.gap(seq, hub.seq_ceiling(&state)) {
                Gap::Invalid => Some("invalid-id"),
                Gap::Expired => Some("expired"),
                Gap::Fillable => None,
            },
        };
        if let Some(reason) = reason {
            let eid = hub.event_id(state.seq);
            drop(state);
            let mut out = Vec::new();
            let data = format!("{{\"reason\":\"{reason}\"}}");
            if codec::encode_event(&mut out, Some(RESET_EVENT), Some(&eid), &data).is_ok() {
                self.push(Output::Write {
                    conn,
                    chunk: Chunk::Owned(out),
                });
            }
            return;
        }
        let Ok(EventId { seq: after, .. }) = parsed else {
            return;
        };
        let user = self.index.user_of(id).cloned();
        let until = hub.replay_until(&state, self.delivered_seq);
        let frames: Vec<Arc<[u8]>> = state
            .history
            .after(after)
            .take_while(|e| e.seq <= until)
            .filter(|e| e.audience.reaches(user.as_ref(), None))
            .filter_map(|e| e.sse.clone())
            .collect();
        drop(state);
        if let Some(s) = self.sse.streams.get_mut(&id) {
            // What is still on its way to this loop and was replayed is not sent twice.
            s.floor = after.max(until);
        }
        for f in frames {
            self.push(Output::Write {
                conn,
                chunk: Chunk::Shared(f),
            });
        }
    }

    /// Sends an event to one stream (not kept for replay: it was addressed to that stream only).
    pub(super) fn sse_send(&mut self, stream: u64, event: Option<&str>, data: &str) {
        let Some(conn) = self.sse.conn_of(stream) else {
            return;
        };
        let mut out = Vec::new();
        if codec::encode_event(&mut out, event, None, data).is_ok() {
            self.push(Output::Write {
                conn,
                chunk: Chunk::Owned(out),
            });
        }
    }

    /// Ends a stream from the server side.
    pub(super) fn sse_close(&mut self, now: Instant, stream: u64) {
        if let Some(conn) = self.sse.conn_of(stream) {
            self.push(Output::Close { conn });
            self.sse_stream_gone(now, stream);
        }
    }

    pub(super) fn sse_stream_gone(&mut self, _now: Instant, stream: u64) {
        if let Some(s) = self.sse.streams.remove(&stream) {
            self.roles.remove(&s.conn);
            self.index_remove(stream);
            self.push(Output::App(AppEvent::SseClosed {
                stream: StreamId(stream),
            }));
        }
    }

    /// One heartbeat comment, encoded once, to every stream; also ages the history out.
    pub(super) fn sse_heartbeat(&mut self, now: Instant, at: Instant) {
        if self.sse.heartbeat_armed != Some(at) {
            return;
        }
        self.sse.heartbeat_armed = None;
        let limits = self.history_limits();
        self.hub.lock().history.trim(now, limits);
        if self.sse.streams.is_empty() {
            return;
        }
        let beat: Arc<[u8]> = Arc::from(&b":\n\n"[..]);
        let conns: Vec<ConnId> = self.sse.streams.values().map(|s| s.conn).collect();
        for conn in conns {
            self.push(Output::Write {
                conn,
                chunk: Chunk::Shared(beat.clone()),
            });
        }
        let next = now + self.cfg.sse_heartbeat;
        self.timers.schedule(
            TimerKey::SseHeartbeat,
            Some(next),
            &mut self.sse.heartbeat_armed,
        );
    }

    pub(super) fn sse_forget_pending(&mut self, request: u64) {
        self.sse.pending.remove(&request);
    }

    pub(super) fn sse_stream_ids(&self) -> Vec<u64> {
        self.sse.streams.keys().copied().collect()
    }
}
