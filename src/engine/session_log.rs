//! A cluster node's record of its recoverable sockets, kept outside the node (in Redis), so that
//! when the node dies — killed, crashed, unplugged, with no time to hand its sockets on — the
//! node a client reconnects through can still restore the socket with everything it missed.
//!
//! Broadcasts are in every node's history already (the cluster's one ordered log). What only the
//! dead node knew is written here, under the hub lock, as it changes: each socket's ids and
//! identity, the sequence number it started at, the `Socket::join` rooms it was in and when it
//! joined and left them (a replay of a room event reaches it only inside such a span), and the
//! events emitted to it alone. The sink (the cluster's publisher) never blocks the lock: what it
//! cannot write makes that socket's record unusable, never a replay with a hole in it.

// Written only by a cluster node (the `redis` feature); the engine's side is always built.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::collections::HashMap;
use std::sync::Arc;

use super::index::Identity;
use super::sio::EncodedPacket;

/// `Socket::join` rooms left that a record remembers; past it the oldest is dropped and the
/// record says it is complete only after that span's end (a client that saw less starts afresh).
pub(crate) const MAX_LEFT_SPANS: usize = 64;

/// When a socket was in a room: events numbered `joined < seq <= left` reached it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RoomSpan {
    pub(crate) room: String,
    /// The last sequence number given out when it joined (0: in it from the socket's start).
    pub(crate) joined: u64,
    /// The last one given out when it left; `None` while it is in the room.
    pub(crate) left: Option<u64>,
}

impl RoomSpan {
    /// Whether a room event numbered `seq` reached the socket.
    pub(crate) fn covers(&self, seq: u64) -> bool {
        self.joined < seq && self.left.is_none_or(|l| seq <= l)
    }
}

/// What another node needs to restore one socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionRecord {
    pub(crate) sid: String,
    pub(crate) pid: String,
    /// Who it was (`None`: anonymous); a claim by another identity never finds it.
    pub(crate) identity: Option<Identity>,
    /// Nothing up to this sequence number is ever replayed to it.
    pub(crate) since_seq: u64,
    pub(crate) spans: Vec<RoomSpan>,
    /// Spans that ended at or before this number may have been dropped: a client that saw
    /// nothing after it cannot be restored exactly.
    pub(crate) complete_after: u64,
}

impl SessionRecord {
    /// The rooms it is in now.
    pub(crate) fn rooms(&self) -> impl Iterator<Item = &str> {
        self.spans
            .iter()
            .filter(|s| s.left.is_none())
            .map(|s| s.room.as_str())
    }

    /// Whether a room event of `room` numbered `seq` reached it.
    pub(crate) fn reached_by(&self, room: &str, seq: u64) -> bool {
        self.spans.iter().any(|s| s.room == room && s.covers(seq))
    }

    fn joined(&mut self, room: &str, seq: u64) {
        if self.rooms().any(|r| r == room) {
            return;
        }
        self.spans.push(RoomSpan {
            room: room.to_string(),
            joined: seq,
            left: None,
        });
    }

    fn left(&mut self, room: &str, seq: u64) {
        let Some(span) = self
            .spans
            .iter_mut()
            .find(|s| s.left.is_none() && s.room == room)
        else {
            return;
        };
        span.left = Some(seq);
        let ended = self.spans.iter().filter(|s| s.left.is_some()).count();
        if ended > MAX_LEFT_SPANS {
            // The oldest to end goes; replays after its end stay exact.
            let oldest = self
                .spans
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.left.map(|l| (l, i)))
                .min();
            if let Some((l, i)) = oldest {
                self.spans.remove(i);
                self.complete_after = self.complete_after.max(l);
            }
        }
    }
}

/// What the sink writes.
#[derive(Debug)]
pub(crate) enum SessionWrite {
    /// The whole record, after it changed.
    Record(SessionRecord),
    /// An event emitted to that socket alone, with its sequence number: the Engine.IO text
    /// message and its binary attachments.
    Emit {
        pid: String,
        identity: Option<Identity>,
        seq: u64,
        text: Vec<u8>,
        attachments: Vec<Vec<u8>>,
    },
    /// The socket is gone for good (closed by its client or the server, expired, or taken over
    /// by another node): its record goes.
    Forget {
        pid: String,
        identity: Option<Identity>,
    },
}

/// Where the writes go (called under the hub lock: it must not block).
pub(crate) type SessionSink = Box<dyn FnMut(SessionWrite) + Send>;

/// The records of this node's recoverable sockets, by socket id (only with a sink).
#[derive(Default)]
pub(crate) struct SessionLog {
    sink: Option<SessionSink>,
    by_socket: HashMap<u64, SessionRecord>,
}

impl SessionLog {
    pub(crate) fn set_sink(&mut self, sink: SessionSink) {
        self.sink = Some(sink);
    }

    pub(crate) fn is_on(&self) -> bool {
        self.sink.is_some()
    }

    fn write(&mut self, w: SessionWrite) {
        if let Some(sink) = self.sink.as_mut() {
            sink(w);
        }
    }

    /// A recoverable socket started here (or was taken over from another node) in `rooms`. A
    /// socket that already has a record (it recovered on this node) keeps it.
    pub(crate) fn open(
        &mut self,
        socket: u64,
        sid: &str,
        pid: &str,
        identity: Option<&Identity>,
        since_seq: u64,
        rooms: &[Arc<str>],
    ) {
        if self.sink.is_none() || self.by_socket.contains_key(&socket) {
            return;
        }
        let record = SessionRecord {
            sid: sid.to_string(),
            pid: pid.to_string(),
            identity: identity.cloned(),
            since_seq,
            spans: rooms
                .iter()
                .map(|r| RoomSpan {
                    room: r.to_string(),
                    joined: 0,
                    left: None,
                })
                .collect(),
            complete_after: 0,
        };
        self.by_socket.insert(socket, record.clone());
        self.write(SessionWrite::Record(record));
    }

    /// The socket joined (`true`) or left `room` when `seq` was the last number given out.
    pub(crate) fn room_changed(&mut self, socket: u64, room: &str, joined: bool, seq: u64) {
        let Some(record) = self.by_socket.get_mut(&socket) else {
            return;
        };
        if joined {
            record.joined(room, seq);
        } else {
            record.left(room, seq);
        }
        let record = record.clone();
        self.write(SessionWrite::Record(record));
    }

    /// An event emitted to the socket alone, numbered `seq`.
    pub(crate) fn emitted(&mut self, socket: u64, seq: u64, packet: &EncodedPacket) {
        let Some(record) = self.by_socket.get(&socket) else {
            return;
        };
        let (pid, identity) = (record.pid.clone(), record.identity.clone());
        let (text, attachments) = packet.to_parts();
        self.write(SessionWrite::Emit {
            pid,
            identity,
            seq,
            text,
            attachments,
        });
    }

    /// The socket is gone for good.
    pub(crate) fn forget(&mut self, socket: u64) {
        if let Some(record) = self.by_socket.remove(&socket) {
            self.write(SessionWrite::Forget {
                pid: record.pid,
                identity: record.identity,
            });
        }
    }

    #[cfg(test)]
    pub(crate) fn record_of(&self, socket: u64) -> Option<&SessionRecord> {
        self.by_socket.get(&socket)
    }
}

impl std::fmt::Debug for SessionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionLog({} records)", self.by_socket.len())
    }
}

/// An event emitted to one socket: `(seq, text, attachments)`.
pub(crate) type EmitEntry = (u64, Vec<u8>, Vec<Vec<u8>>);

/// A record claimed from a dead node, with the emits it kept and the client's offset.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RecordedSession {
    pub(crate) record: SessionRecord,
    /// `(seq, text, attachments)`, oldest first, maybe trimmed from the front.
    pub(crate) emits: Vec<EmitEntry>,
    /// Whether the emits list was full (its oldest ones may have been dropped).
    pub(crate) emits_full: bool,
    pub(crate) offset: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::unwrap_used)]
    use super::*;
    use std::sync::Mutex;

    fn log() -> (SessionLog, Arc<Mutex<Vec<SessionWrite>>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let w = written.clone();
        let mut log = SessionLog::default();
        log.set_sink(Box::new(move |x| w.lock().unwrap().push(x)));
        (log, written)
    }

    #[test]
    fn spans_say_which_room_events_reached_the_socket() {
        let (mut log, written) = log();
        let alice = Identity::new("acme", "alice");
        log.open(7, "sid", "pid", Some(&alice), 10, &[Arc::from("a")]);
        log.room_changed(7, "b", true, 20);
        log.room_changed(7, "b", true, 21); // already in it: no new span
        log.room_changed(7, "a", false, 30);
        log.room_changed(7, "c", false, 31); // not in it: nothing
        let r = log.record_of(7).unwrap().clone();
        assert_eq!(r.rooms().collect::<Vec<_>>(), vec!["b"]);
        assert!(r.reached_by("a", 11) && r.reached_by("a", 30));
        assert!(!r.reached_by("a", 31));
        assert!(!r.reached_by("b", 20) && r.reached_by("b", 21) && r.reached_by("b", 99));
        assert!(!r.reached_by("c", 25));
        // open, b joined, b again, a left, c "left": five writes of the record
        assert_eq!(written.lock().unwrap().len(), 5);
        log.forget(7);
        log.forget(7);
        let w = written.lock().unwrap();
        assert!(matches!(w.last(), Some(SessionWrite::Forget { pid, .. }) if pid == "pid"));
        assert_eq!(w.len(), 6);
    }

    #[test]
    fn dropping_old_spans_moves_complete_after() {
        let (mut log, _) = log();
        log.open(1, "s", "p", None, 0, &[]);
        for i in 0..(MAX_LEFT_SPANS as u64 + 3) {
            log.room_changed(1, &format!("r{i}"), true, i * 10);
            log.room_changed(1, &format!("r{i}"), false, i * 10 + 5);
        }
        let r = log.record_of(1).unwrap();
        assert_eq!(r.spans.len(), MAX_LEFT_SPANS);
        assert_eq!(r.complete_after, 25);
        assert!(!r.reached_by("r0", 3));
        assert!(r.reached_by("r3", 33));
    }

    #[test]
    fn no_sink_no_record_and_a_second_open_keeps_the_first() {
        let mut off = SessionLog::default();
        off.open(1, "s", "p", None, 0, &[]);
        assert!(off.record_of(1).is_none());
        let (mut log, written) = log();
        log.open(1, "s", "p", None, 5, &[]);
        log.room_changed(1, "x", true, 6);
        log.open(1, "s", "p", None, 9, &[]);
        assert_eq!(log.record_of(1).unwrap().since_seq, 5);
        assert_eq!(log.record_of(1).unwrap().spans.len(), 1);
        assert_eq!(written.lock().unwrap().len(), 2);
    }
}
