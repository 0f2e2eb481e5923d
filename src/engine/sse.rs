//! Server-Sent Events streams: opened after the application's authentication hook accepts the
//! request, indexed like any other recipient, kept alive by heartbeat comments, and resumable:
//! every broadcast carries `id: <epoch>:<seq>` and a bounded history replays, in order and once,
//! what a reconnecting client missed that was addressed to it — or says `tidings-reset` when the
//! gap can no longer be filled.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::index::{Identity, RecipientKind, UserKey};
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

/// Who a history entry was addressed to, frozen at send time.
#[derive(Debug)]
pub(crate) enum HistoryAudience {
    User(UserKey),
    Tenant(Arc<str>),
    /// The room's member users when the event was sent.
    Members(Arc<[UserKey]>),
    All,
}

impl HistoryAudience {
    fn reaches(&self, user: Option<&UserKey>) -> bool {
        match (self, user) {
            (HistoryAudience::All, _) => true,
            (HistoryAudience::User(k), Some(u)) => k == u,
            (HistoryAudience::Tenant(t), Some(u)) => *t == u.0,
            (HistoryAudience::Members(m), Some(u)) => m.contains(u),
            _ => false,
        }
    }

    fn cost(&self) -> usize {
        match self {
            HistoryAudience::Members(m) => m.len() * 16,
            _ => 16,
        }
    }
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    at: Instant,
    audience: HistoryAudience,
    frame: Arc<[u8]>,
}

#[derive(Debug)]
struct PendingStream {
    conn: ConnId,
    last_event_id: Option<String>,
    cors_origin: Option<String>,
}

#[derive(Debug)]
struct Stream {
    conn: ConnId,
}

/// All SSE state.
#[derive(Debug, Default)]
pub(crate) struct Sse {
    streams: HashMap<u64, Stream>,
    pending: HashMap<u64, PendingStream>,
    history: VecDeque<Entry>,
    history_bytes: usize,
    /// The highest sequence number evicted from the history: a client behind it cannot be served.
    evicted_up_to: u64,
    next_request: u64,
    heartbeat_armed: Option<Instant>,
}

impl Sse {
    pub(crate) fn stream_count(&self) -> usize {
        self.streams.len()
    }

    pub(crate) fn conn_of(&self, stream: u64) -> Option<ConnId> {
        self.streams.get(&stream).map(|s| s.conn)
    }

    pub(crate) fn history_len(&self) -> usize {
        self.history.len()
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
        let request = self.sse.next_request;
        self.sse.next_request += 1;
        self.sse.pending.insert(
            request,
            PendingStream {
                conn,
                last_event_id,
                cors_origin,
            },
        );
        self.roles.insert(conn, ConnRole::SsePending(request));
        let info = Arc::new(RequestInfo {
            head: req.head,
            remote: req.remote,
        });
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
        let id = self.next_recipient;
        self.next_recipient += 1;
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
        self.sse.streams.insert(id, Stream { conn: p.conn });
        self.index.add(id, RecipientKind::Sse, identity.as_ref());
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

    /// Replays what the client missed, or tells it that it cannot be done.
    fn sse_resume(&mut self, now: Instant, id: u64, conn: ConnId, last: Option<&str>) {
        // An empty Last-Event-ID is what a client sends before it saw any id: a fresh start.
        let Some(last) = last.filter(|l| !l.is_empty()) else {
            return;
        };
        // Age the history first: with no stream open, nothing else may have trimmed it lately.
        self.sse_trim(now);
        let reason = match codec::parse_last_event_id(last) {
            Err(_) => Some("invalid-id"),
            Ok(EventId { epoch, .. }) if epoch != self.epoch => Some("unknown-epoch"),
            Ok(EventId { seq, .. }) if seq > self.seq => Some("invalid-id"),
            Ok(EventId { seq, .. }) if seq < self.sse.evicted_up_to => Some("expired"),
            Ok(_) => None,
        };
        if let Some(reason) = reason {
            let mut out = Vec::new();
            let eid = EventId {
                epoch: self.epoch,
                seq: self.seq,
            }
            .encode();
            let data = format!("{{\"reason\":\"{reason}\"}}");
            if codec::encode_event(&mut out, Some(RESET_EVENT), Some(&eid), &data).is_ok() {
                self.push(Output::Write {
                    conn,
                    chunk: Chunk::Owned(out),
                });
            }
            return;
        }
        let Ok(EventId { seq: after, .. }) = codec::parse_last_event_id(last) else {
            return;
        };
        let user = self.index.user_of(id).cloned();
        let frames: Vec<Arc<[u8]>> = self
            .sse
            .history
            .iter()
            .filter(|e| e.seq > after && e.audience.reaches(user.as_ref()))
            .map(|e| e.frame.clone())
            .collect();
        for f in frames {
            self.push(Output::Write {
                conn,
                chunk: Chunk::Shared(f),
            });
        }
    }

    /// Keeps a broadcast for later replay, evicting by count, bytes and age.
    pub(super) fn sse_remember(
        &mut self,
        now: Instant,
        seq: u64,
        audience: HistoryAudience,
        frame: Arc<[u8]>,
    ) {
        if self.cfg.sse_history_events == 0 {
            self.sse.evicted_up_to = seq;
            return;
        }
        self.sse.history_bytes += frame.len() + audience.cost();
        self.sse.history.push_back(Entry {
            seq,
            at: now,
            audience,
            frame,
        });
        self.sse_trim(now);
    }

    fn sse_trim(&mut self, now: Instant) {
        let max_age = self.cfg.sse_history_age;
        while let Some(front) = self.sse.history.front() {
            let too_many = self.sse.history.len() > self.cfg.sse_history_events;
            let too_big = self.sse.history_bytes > self.cfg.sse_history_bytes;
            let too_old = now.saturating_duration_since(front.at) > max_age;
            if !(too_many || too_big || too_old) {
                break;
            }
            if let Some(e) = self.sse.history.pop_front() {
                self.sse.history_bytes = self
                    .sse
                    .history_bytes
                    .saturating_sub(e.frame.len() + e.audience.cost());
                self.sse.evicted_up_to = e.seq;
            }
        }
    }

    /// The history audience of a broadcast, frozen now.
    pub(super) fn history_audience(&self, audience: &super::index::Audience) -> HistoryAudience {
        use super::index::Audience;
        match audience {
            Audience::User(k) => HistoryAudience::User(k.clone()),
            Audience::Tenant(t) => HistoryAudience::Tenant(t.clone()),
            Audience::Room(r) => HistoryAudience::Members(Arc::from(self.index.room_members(r))),
            Audience::All => HistoryAudience::All,
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
            self.index.remove(stream);
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
        self.sse_trim(now);
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
