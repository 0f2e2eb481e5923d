//! Deadlines as data: a min-heap of `(instant, key)` with lazy invalidation.
//!
//! Each owner (a session, a stream) remembers the instant of its earliest heap entry. A new entry is
//! pushed only when a deadline moves *earlier*; when an entry fires the owner checks it is still the
//! one it remembers, does its work and schedules its next deadline. So a flood of events that push a
//! deadline later (pongs, say) adds nothing to the heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Who a deadline belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKey {
    EioSession(u64),
    /// An ack collector's deadline.
    Ack(u64),
    /// The next SSE heartbeat (one timer for every stream).
    SseHeartbeat,
    /// A route request's answer deadline.
    Route(u64),
    /// The next parked socket whose recovery window ends (one timer for all).
    Recovery,
}

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, TimerKey)>>,
}

impl Timers {
    /// Makes sure the owner is woken at `at`. `armed` is the owner's record of its earliest entry.
    pub fn schedule(&mut self, key: TimerKey, at: Option<Instant>, armed: &mut Option<Instant>) {
        let Some(at) = at else {
            return;
        };
        match armed {
            Some(current) if *current <= at => {}
            _ => {
                *armed = Some(at);
                self.heap.push(Reverse((at, key)));
            }
        }
    }

    /// The earliest entry (possibly stale: waking up early is harmless).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Pops one entry due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerKey)> {
        match self.heap.peek() {
            Some(Reverse((t, _))) if *t <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }
}
