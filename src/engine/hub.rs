//! What the event loops of one server share: the broadcast sequence and its one history (so an
//! SSE id or a Socket.IO offset from any loop resumes on any), users' room memberships (written
//! before `join_room` returns, so `user_rooms` reads its writes), the rooms of recoverable
//! sockets (a replay reaches the members of the time of the send), the sockets waiting for
//! recovery (a client may come back through any loop), and where a recovered socket lives now.
//!
//! One mutex, taken per broadcast, per join and per recovery — never per delivery: each loop
//! resolves and writes its own connections without it. A sender holds it while it hands the
//! broadcast to every loop, so every loop sees the broadcasts in sequence order.
//!
//! Still sans-IO: no socket, no clock (`now` is passed in), no thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::history::{History, HistoryAudience, Limits};
use super::index::{Audience, Index, UserKey};
use super::recovery::Parked;
use super::session_log::SessionLog;
use super::sio::EncodedPacket;
use super::{Payload, Transports};
use crate::config::Config;

/// The most loops a server runs (a loop's index is one base64url character of its sids).
pub(crate) const MAX_LOOPS: usize = 64;

/// The shared state (see the module docs).
pub(crate) struct Hub {
    state: Mutex<HubState>,
    /// This server's epoch (SSE ids and offsets are `epoch:seq`); a cluster's, shared by its
    /// nodes, which changes only when Redis lost the history.
    epoch: AtomicU64,
    /// 0 alone. In a cluster, the cluster's sequence numbers are shifted left by this, and the
    /// numbers in between are this node's own (a socket's emits, kept for its recovery only), so
    /// both kinds stay in one order without a round trip to Redis per emit.
    seq_shift: u32,
    /// How many loops share it (ids and sids name their loop: see [`Hub::loop_of_id`]).
    pub(crate) loops: usize,
    /// Entries in `HubState::moved`: while zero, routing a socket's command takes no lock.
    moved: AtomicUsize,
    /// Entries in `HubState::remote_claims`: while zero, a CONNECT decision takes no lock.
    remote_claims: AtomicUsize,
}

/// Behind the hub's mutex.
#[derive(Default)]
pub(crate) struct HubState {
    /// The last sequence number given out.
    pub(crate) seq: u64,
    pub(crate) history: History,
    /// User rooms (`join_room`, with the limits) and the `Socket::join` rooms of recoverable
    /// sockets of `/` (parked ones included): no recipients, memberships only.
    pub(crate) rooms: Index,
    pub(crate) parked: Parked,
    /// Recovered sockets that live on another loop than their id names.
    moved: HashMap<u64, usize>,
    /// Cluster: CONNECTs (by request) that presented a `pid` no loop here knows, with their
    /// offset; the decision asks the other nodes for the socket first.
    remote_claims: HashMap<u64, (String, Option<String>)>,
    /// Cluster: the users and tenants with a connection on some loop of this node, so a
    /// broadcast to a user or tenant nobody here has wakes no loop.
    pub(crate) present: Presence,
    /// Cluster: the last broadcast this node kept in its history without handing it to its
    /// loops (nobody here was in its audience). A resume or recovery treats it as delivered by
    /// every loop, so it replays it from the history.
    pub(crate) quiet_seq: u64,
    /// Cluster with recovery on: the records that let another node restore this node's sockets
    /// if it dies.
    pub(crate) sessions: SessionLog,
}

impl HubState {
    /// A recoverable socket of `/` joins `room` (unbounded here: the loop's index bounds the
    /// memberships); whether it was not in it before.
    pub(crate) fn join_socket_room(&mut self, socket: u64, room: Arc<str>) -> bool {
        let added = self
            .rooms
            .socket_join(socket, room.clone(), 0, usize::MAX, usize::MAX)
            .unwrap_or(false);
        if added {
            self.sessions.room_changed(socket, &room, true, self.seq);
        }
        added
    }

    /// It leaves `room`; whether it was in it.
    pub(crate) fn leave_socket_room(&mut self, socket: u64, room: &str) -> bool {
        let left = self.rooms.socket_leave(socket, room);
        if left {
            self.sessions.room_changed(socket, room, false, self.seq);
        }
        left
    }
}

/// Connections per user and per tenant on this node (cluster only).
#[derive(Debug, Default)]
pub(crate) struct Presence {
    users: HashMap<UserKey, u32>,
    tenants: HashMap<Arc<str>, u32>,
}

impl Presence {
    pub(crate) fn add(&mut self, user: &UserKey) {
        *self.users.entry(user.clone()).or_default() += 1;
        *self.tenants.entry(user.0.clone()).or_default() += 1;
    }

    pub(crate) fn remove(&mut self, user: &UserKey) {
        fn down<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
            if let Some(n) = map.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        down(&mut self.users, user);
        down(&mut self.tenants, &user.0);
    }

    /// Whether some connection here may be in `audience` (rooms and everyone: always).
    pub(crate) fn may_reach(&self, audience: &Audience) -> bool {
        match audience {
            Audience::User(k) => self.users.contains_key(k),
            Audience::Tenant(t) => self.tenants.contains_key(t),
            Audience::Room(_) | Audience::All => true,
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn has_user(&self, user: &UserKey) -> bool {
        self.users.contains_key(user)
    }
}

/// A broadcast made ready once for every loop: its sequence number, its audience and its bytes.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) seq: Option<u64>,
    pub(crate) audience: Audience,
    pub(crate) transports: Transports,
    pub(crate) sse_frame: Option<Arc<[u8]>>,
    pub(crate) sio_packet: Option<EncodedPacket>,
    pub(crate) volatile: bool,
}

impl Hub {
    pub(crate) fn new(epoch: u64, loops: usize) -> Hub {
        Hub {
            state: Mutex::new(HubState::default()),
            epoch: AtomicU64::new(epoch),
            seq_shift: 0,
            loops: loops.clamp(1, MAX_LOOPS),
            moved: AtomicUsize::new(0),
            remote_claims: AtomicUsize::new(0),
        }
    }

    /// Cluster: CONNECT `request` presented `pid` (and `offset`), which no loop here knows.
    pub(crate) fn note_remote_claim(&self, request: u64, pid: String, offset: Option<String>) {
        if self
            .lock()
            .remote_claims
            .insert(request, (pid, offset))
            .is_none()
        {
            self.remote_claims.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The claim CONNECT `request` noted, taken out (at most once).
    pub(crate) fn take_remote_claim(&self, request: u64) -> Option<(String, Option<String>)> {
        if self.remote_claims.load(Ordering::Acquire) == 0 {
            return None;
        }
        let taken = self.lock().remote_claims.remove(&request);
        if taken.is_some() {
            self.remote_claims.fetch_sub(1, Ordering::AcqRel);
        }
        taken
    }

    /// The hub of a cluster node (see `seq_shift`).
    pub(crate) fn new_cluster_node(epoch: u64, loops: usize) -> Hub {
        Hub {
            seq_shift: CLUSTER_SEQ_SHIFT,
            ..Hub::new(epoch, loops)
        }
    }

    /// Whether this is a cluster node's hub.
    pub(crate) fn is_cluster(&self) -> bool {
        self.seq_shift > 0
    }

    /// The epoch of the ids given out now.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A cluster's new epoch (Redis lost the history): the caller empties the history under the
    /// lock and tells every loop (`Command::ResetSequence`).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Release);
    }

    /// The local sequence number of the cluster's `seq` (see `seq_shift`).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn cluster_seq(&self, seq: u64) -> u64 {
        seq << self.seq_shift
    }

    /// What a loop may count as delivered when it replays: what it delivered itself, or what
    /// this node kept without handing to any loop, whichever is later.
    pub(crate) fn replay_until(&self, state: &HubState, delivered: u64) -> u64 {
        delivered.max(state.quiet_seq)
    }

    /// The highest sequence number given out anywhere yet: alone the last one; in a cluster any
    /// node's own number after the last cluster broadcast (another node's socket emits that a
    /// client saw may be ahead of this node's).
    pub(crate) fn seq_ceiling(&self, state: &HubState) -> u64 {
        if self.seq_shift == 0 {
            return state.seq;
        }
        state.seq | ((1u64 << self.seq_shift) - 1)
    }

    /// A sequence number of this node's own (a socket's emit, with recovery on); `None` in a
    /// cluster once 2^24 - 1 of them went out since the last cluster broadcast (that emit is then
    /// sent without an offset and not kept).
    pub(crate) fn next_local_seq(&self, state: &mut HubState) -> Option<u64> {
        if self.seq_shift > 0 {
            let mask = (1u64 << self.seq_shift) - 1;
            if state.seq & mask == mask {
                return None;
            }
        }
        state.seq += 1;
        Some(state.seq)
    }

    /// The state; a loop that panicked while holding it poisons nothing we cannot use.
    pub(crate) fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The loop an id (socket, stream, session, request) was made on: ids are
    /// `counter * loops + loop`.
    pub(crate) fn loop_of_id(&self, id: u64) -> usize {
        (id % self.loops as u64) as usize
    }

    /// The loop a socket lives on now (a recovered socket may have moved).
    pub(crate) fn loop_of_socket(&self, socket: u64) -> usize {
        if self.moved.load(Ordering::Acquire) > 0 {
            if let Some(l) = self.lock().moved.get(&socket) {
                return *l;
            }
        }
        self.loop_of_id(socket)
    }

    /// The same, for a caller that holds the lock.
    pub(crate) fn loop_of_socket_in(&self, state: &HubState, socket: u64) -> usize {
        match state.moved.get(&socket) {
            Some(l) => *l,
            None => self.loop_of_id(socket),
        }
    }

    /// `socket` lives on `lp` from now on (or again on the loop its id names).
    pub(crate) fn set_socket_loop(&self, state: &mut HubState, socket: u64, lp: usize) {
        if lp == self.loop_of_id(socket) {
            if state.moved.remove(&socket).is_some() {
                self.moved.fetch_sub(1, Ordering::AcqRel);
            }
        } else if state.moved.insert(socket, lp).is_none() {
            self.moved.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// `socket` is gone for good.
    pub(crate) fn forget_socket(&self, state: &mut HubState, socket: u64) {
        state.sessions.forget(socket);
        if self.moved.load(Ordering::Acquire) > 0 && state.moved.remove(&socket).is_some() {
            self.moved.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// `<epoch>:<seq>`.
    pub(crate) fn event_id(&self, seq: u64) -> String {
        crate::proto::sse::EventId {
            epoch: self.epoch(),
            seq,
        }
        .encode()
    }

    /// Gives the broadcast its sequence number (unless volatile; `numbered`: the one a cluster
    /// gave it), encodes each wire form once, and remembers it for resume and recovery with its
    /// audience frozen as of now. The caller holds the lock and hands the result to every loop
    /// before it lets go.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prepare(
        &self,
        state: &mut HubState,
        cfg: &Config,
        now: Instant,
        audience: Audience,
        transports: Transports,
        payload: Payload<'_>,
        volatile: bool,
        numbered: Option<u64>,
    ) -> Prepared {
        // A volatile event is never replayed, so it takes no sequence number and carries no id.
        let seq = if volatile {
            None
        } else if let Some(seq) = numbered {
            state.seq = state.seq.max(seq);
            Some(seq)
        } else {
            state.seq += 1;
            Some(state.seq)
        };
        let mut sse_frame = None;
        if transports != Transports::SocketIo && cfg.sse_path.is_some() {
            let id = seq.map(|seq| self.event_id(seq));
            let mut frame = Vec::with_capacity(payload.sse_data.len() + payload.event.len() + 48);
            if crate::proto::sse::encode_event(
                &mut frame,
                Some(payload.event),
                id.as_deref(),
                payload.sse_data,
            )
            .is_ok()
            {
                sse_frame = Some(Arc::from(frame));
            }
        }
        // With recovery on, every event that may be replayed carries its offset as the last
        // argument (the client keeps the last one it saw and presents it when it reconnects).
        let recovery = cfg.connection_state_recovery.is_some();
        let offset = seq.filter(|_| recovery);
        let sio_packet = (transports != Transports::Sse)
            .then(|| self.event_packet_text(payload.event, payload.sio_args, offset));
        if let Some(seq) = seq {
            let sio_kept = sio_packet.clone().filter(|_| offset.is_some());
            if sse_frame.is_some() || sio_kept.is_some() {
                let frozen = Self::history_audience(state, &audience, recovery);
                let limits = history_limits(cfg);
                state
                    .history
                    .push(now, limits, seq, frozen, sse_frame.clone(), sio_kept);
            }
        }
        Prepared {
            seq,
            audience,
            transports,
            sse_frame,
            sio_packet,
            volatile,
        }
    }

    /// `42["event",args…(,"offset")]` in the main namespace, framed once for many recipients.
    pub(crate) fn event_packet_text(
        &self,
        event: &str,
        sio_args: &str,
        offset: Option<u64>,
    ) -> EncodedPacket {
        // Every part is already valid JSON, so plain concatenation is exact (and the main
        // namespace needs no prefix).
        let event_json = serde_json::Value::String(event.to_string()).to_string();
        let mut text = String::with_capacity(event_json.len() + sio_args.len() + 32);
        text.push_str("42[");
        text.push_str(&event_json);
        if !sio_args.is_empty() {
            text.push(',');
            text.push_str(sio_args);
        }
        if let Some(seq) = offset {
            text.push_str(",\"");
            text.push_str(&self.event_id(seq));
            text.push('"');
        }
        text.push(']');
        EncodedPacket::from_text(Arc::from(text.into_bytes())).shared()
    }

    /// Who a broadcast reaches, frozen now for a later replay.
    fn history_audience(state: &HubState, audience: &Audience, recovery: bool) -> HistoryAudience {
        use HistoryAudience as H;
        match audience {
            Audience::User(k) => H::User(k.clone()),
            Audience::Tenant(t) => H::Tenant(t.clone()),
            Audience::Room(r) => {
                let (users, sockets) = state.rooms.room_snapshot(r, recovery);
                H::Members {
                    room: r.clone(),
                    users: Arc::from(users),
                    sockets: Arc::from(sockets),
                }
            }
            Audience::All => H::All,
        }
    }
}

/// See `Hub::seq_shift`.
const CLUSTER_SEQ_SHIFT: u32 = 24;

/// The history's limits, from `Config`.
pub(crate) fn history_limits(cfg: &Config) -> Limits {
    Limits {
        events: cfg.sse_history_events,
        bytes: cfg.sse_history_bytes,
        age: cfg.sse_history_age,
    }
}
