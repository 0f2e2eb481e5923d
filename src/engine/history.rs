//! One ordered, bounded history of what was sent, behind both ways back: SSE resume
//! (`Last-Event-ID`) and Socket.IO connection state recovery (`pid` + offset). Every entry keeps
//! who it was addressed to when it was sent, and the bytes of each wire form it was sent in, so a
//! replay reaches exactly the connections it reached then, byte for byte.
//!
//! Bounded by count, bytes and age (`Config::sse_history_*`): when an entry is evicted, its
//! sequence number is remembered, and a client whose last id is older than that gets an explicit
//! "cannot be done" (a `tidings-reset` event, a fresh Socket.IO session) — never a partial replay.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::index::UserKey;
use super::sio::EncodedPacket;

/// Who an entry was addressed to, frozen at send time.
#[derive(Debug)]
pub(crate) enum HistoryAudience {
    User(UserKey),
    Tenant(Arc<str>),
    /// A room: its member users and its joined sockets when the event was sent.
    Members {
        room: Arc<str>,
        users: Arc<[UserKey]>,
        sockets: Arc<[u64]>,
    },
    /// One socket (`Socket::emit`).
    Socket(u64),
    All,
}

impl HistoryAudience {
    /// Does this entry reach a connection of `user` (anonymous: `None`) that is `socket` (an SSE
    /// stream passes `None`)?
    pub(crate) fn reaches(&self, user: Option<&UserKey>, socket: Option<u64>) -> bool {
        match self {
            HistoryAudience::All => true,
            HistoryAudience::User(k) => user == Some(k),
            HistoryAudience::Tenant(t) => user.is_some_and(|u| u.0 == *t),
            HistoryAudience::Members { users, sockets, .. } => {
                user.is_some_and(|u| users.contains(u))
                    || socket.is_some_and(|s| sockets.contains(&s))
            }
            HistoryAudience::Socket(s) => socket == Some(*s),
        }
    }

    /// The same for a socket that another cluster node handed over, known here by its rooms
    /// (which a waiting socket cannot change) rather than its id; its own emits were kept by
    /// that node, which replayed them.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn reaches_rooms(&self, user: Option<&UserKey>, rooms: &[Arc<str>]) -> bool {
        match self {
            HistoryAudience::Members { room, users, .. } => {
                user.is_some_and(|u| users.contains(u)) || rooms.contains(room)
            }
            HistoryAudience::Socket(_) => false,
            other => other.reaches(user, None),
        }
    }

    fn cost(&self) -> usize {
        match self {
            HistoryAudience::Members { users, sockets, .. } => {
                16 + users.len() * 16 + sockets.len() * 8
            }
            _ => 16,
        }
    }
}

/// One remembered send.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    at: Instant,
    pub(crate) audience: HistoryAudience,
    /// The SSE frame, when it went to SSE streams.
    pub(crate) sse: Option<Arc<[u8]>>,
    /// The Socket.IO packet with its offset, when it went to Socket.IO sockets with recovery on.
    pub(crate) sio: Option<EncodedPacket>,
}

impl Entry {
    fn cost(&self) -> usize {
        self.sse.as_ref().map_or(0, |f| f.len())
            + self.sio.as_ref().map_or(0, EncodedPacket::byte_len)
            + self.audience.cost()
    }
}

/// The limits, from `Config`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) events: usize,
    pub(crate) bytes: usize,
    pub(crate) age: Duration,
}

/// Whether a client's last seen sequence number can be served from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gap {
    /// Everything after it is here.
    Fillable,
    /// Something after it was evicted.
    Expired,
    /// It is ahead of anything sent: not an id this server gave out.
    Invalid,
}

#[derive(Debug, Default)]
pub(crate) struct History {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// The highest sequence number evicted: a client behind it cannot be served.
    evicted_up_to: u64,
}

impl History {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Can a client that saw everything up to `seq` (of this epoch) be served, when `current` is
    /// the last sequence number given out?
    pub(crate) fn gap(&self, seq: u64, current: u64) -> Gap {
        if seq > current {
            Gap::Invalid
        } else if seq < self.evicted_up_to {
            Gap::Expired
        } else {
            Gap::Fillable
        }
    }

    /// Remembers a send, then evicts by count, bytes and age. With a zero count nothing is kept.
    pub(crate) fn push(
        &mut self,
        now: Instant,
        limits: Limits,
        seq: u64,
        audience: HistoryAudience,
        sse: Option<Arc<[u8]>>,
        sio: Option<EncodedPacket>,
    ) {
        if limits.events == 0 {
            self.evicted_up_to = self.evicted_up_to.max(seq);
            return;
        }
        let entry = Entry {
            seq,
            at: now,
            audience,
            sse,
            sio,
        };
        self.bytes += entry.cost();
        // A loop may keep a socket's emit after a later broadcast went in (the emit's number was
        // taken first, by its sender): keep the entries in sequence order.
        match self.entries.back() {
            Some(last) if last.seq > seq => {
                let at = self.entries.partition_point(|e| e.seq < seq);
                self.entries.insert(at, entry);
            }
            _ => self.entries.push_back(entry),
        }
        self.trim(now, limits);
    }

    /// Evicts what is over the limits (also called before a resume: with nothing sent lately,
    /// nothing else may have aged the history).
    pub(crate) fn trim(&mut self, now: Instant, limits: Limits) {
        while let Some(front) = self.entries.front() {
            let too_many = self.entries.len() > limits.events;
            let too_big = self.bytes > limits.bytes;
            let too_old = now.saturating_duration_since(front.at) > limits.age;
            if !(too_many || too_big || too_old) {
                break;
            }
            if let Some(e) = self.entries.pop_front() {
                self.bytes = self.bytes.saturating_sub(e.cost());
                self.evicted_up_to = e.seq;
            }
        }
    }

    /// Nothing up to `seq` can be served any more (a cluster node missed what the log no longer
    /// has): a client that saw less gets a reset.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn mark_hole(&mut self, seq: u64) {
        self.evicted_up_to = self.evicted_up_to.max(seq);
    }

    /// The entries after `seq`, oldest first.
    pub(crate) fn after(&self, seq: u64) -> impl Iterator<Item = &Entry> {
        // Entries are in sequence order: skip the older ones from the front.
        let start = self.entries.partition_point(|e| e.seq <= seq);
        self.entries.range(start..)
    }
}
