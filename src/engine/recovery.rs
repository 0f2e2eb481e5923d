//! Socket.IO connection state recovery (socket.io-client 4.6+), on the history that SSE resume
//! uses too.
//!
//! With `Config::connection_state_recovery` on, a socket of the main namespace gets a private
//! session id (`pid`, in its CONNECT reply next to `sid`), and every event that may be replayed
//! carries its offset (`<epoch>:<seq>`, the SSE id) as its last argument. When the connection is
//! lost for a recoverable reason (transport closed or failed, ping timeout, forced close), the
//! socket is *parked*: no connection, no pending acks, but its id, identity and `Socket::join`
//! rooms are kept — in the hub that every loop shares, so room events of the gap are addressed
//! to it and its client may come back through any loop. A
//! client that comes back within `max_disconnection_duration` presents `{pid, offset}` in its
//! CONNECT payload; if the authentication hook says the same identity again (unless
//! `skip_authentication`) and the history still holds everything after the offset, the socket is
//! restored — same id, same rooms — and every event addressed to it after the offset is sent
//! again, in order, once. Otherwise the client gets a fresh session (a new `pid`, so the client
//! sees `recovered === false`): recovery is all or nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::history::{Gap, HistoryAudience};
use super::hub::{Hub, HubState};
use super::index::{Identity, Index, RecipientKind, UserKey};
use super::session_log::RecordedSession;
use super::sio::{DisconnectReason, EncodedPacket, SocketId};
use super::timers::TimerKey;
use super::{AppEvent, Engine, Output};
use crate::proto::sio::Packet;
use crate::proto::sse::{self as sse_codec, EventId};

/// The longest `pid` or offset looked at (ours are 20 and at most 41 bytes).
const MAX_TOKEN: usize = 64;

/// What a recoverable socket carries while it is connected.
#[derive(Debug)]
pub(crate) struct SocketRecovery {
    pub(crate) sid: Arc<str>,
    pub(crate) pid: Arc<str>,
    /// The last sequence number this loop had delivered when the socket was first connected:
    /// nothing up to it is ever replayed to it (the client's offset may be a previous session's).
    pub(crate) since_seq: u64,
    /// Broadcasts up to this sequence number are not delivered to it any more: it recovered on a
    /// loop that had not delivered them yet, and they were in its replay or seen before.
    pub(crate) floor: u64,
}

/// A socket waiting for its client.
#[derive(Debug)]
pub(crate) struct ParkedSocket {
    socket: u64,
    recovery: SocketRecovery,
    user: Option<UserKey>,
    rooms: Vec<Arc<str>>,
    expires: Instant,
}

/// A CONNECT that presented the `pid` of a parked socket (taken out of the waiting list, so a
/// second CONNECT with the same `pid` gets a fresh session).
#[derive(Debug)]
pub(crate) struct Claim {
    parked: ParkedSocket,
    offset: Option<String>,
}

impl Claim {
    /// The identity the parked socket had.
    pub(crate) fn identity(&self) -> Option<Identity> {
        self.parked
            .user
            .as_ref()
            .map(|(t, u)| Identity::new(t.as_ref(), u.as_ref()))
    }
}

/// Every parked socket, by `pid`, and the order they expire in.
#[derive(Debug, Default)]
pub(crate) struct Parked {
    by_pid: HashMap<Arc<str>, ParkedSocket>,
    /// (expiry, pid), oldest first: the window is the same for all.
    order: VecDeque<(Instant, Arc<str>)>,
}

impl Parked {
    pub(crate) fn len(&self) -> usize {
        self.by_pid.len()
    }

    /// The socket an expiry entry stands for, unless the entry is stale (the socket was
    /// recovered since, and maybe parked again with a later expiry).
    fn take_current(&mut self, pid: &Arc<str>, expires: Instant) -> Option<ParkedSocket> {
        if self.by_pid.get(pid)?.expires != expires {
            return None;
        }
        self.by_pid.remove(pid)
    }
}

impl DisconnectReason {
    /// socket.io's recoverable reasons: the client did not mean to leave.
    fn is_recoverable(self) -> bool {
        matches!(
            self,
            DisconnectReason::TransportClose
                | DisconnectReason::TransportError
                | DisconnectReason::PingTimeout
                | DisconnectReason::ForcedClose
        )
    }
}

impl Engine {
    /// Cluster: writes a new recoverable socket's record where the other nodes find it if this
    /// one dies (a socket that recovered on this node keeps the record it has).
    pub(super) fn record_session(
        &self,
        socket: u64,
        recovery: &SocketRecovery,
        identity: Option<&Identity>,
        rooms: &[Arc<str>],
    ) {
        if !self.hub.is_cluster() {
            return;
        }
        let mut state = self.hub.lock();
        if state.sessions.is_on() {
            state.sessions.open(
                socket,
                &recovery.sid,
                &recovery.pid,
                identity,
                recovery.since_seq,
                rooms,
            );
        }
    }

    /// A new recoverable socket's state, or `None` when recovery is off or `nsp` is not `/`.
    pub(super) fn new_socket_recovery(
        &mut self,
        nsp: &str,
        sid: &str,
    ) -> Option<Box<SocketRecovery>> {
        if self.cfg.connection_state_recovery.is_none() || nsp != "/" {
            return None;
        }
        let pid = crate::proto::eio::sid_from_random(&self.random_bytes::<15>());
        Some(Box::new(SocketRecovery {
            sid: Arc::from(sid),
            pid: Arc::from(pid.as_str()),
            since_seq: if self.hub.is_cluster() {
                self.hub.replay_until(&self.hub.lock(), self.delivered_seq)
            } else {
                self.delivered_seq
            },
            floor: 0,
        }))
    }

    /// A socket left: park it in the hub if it may come back (through any loop). Returns
    /// whether it was parked (its rooms then stay in the hub).
    pub(super) fn sio_park(
        &mut self,
        now: Instant,
        socket: u64,
        recovery: Option<Box<SocketRecovery>>,
        rooms: &[Arc<str>],
        reason: DisconnectReason,
    ) -> bool {
        let (Some(recovery), Some(cfg)) = (recovery, self.cfg.connection_state_recovery.clone())
        else {
            return false;
        };
        // A cluster node that shuts down (a deploy) keeps its sockets waiting, so that the nodes
        // their clients come back through can take them over while it finishes.
        let handed_on = reason == DisconnectReason::ServerShutdown && self.hub.is_cluster();
        if !reason.is_recoverable() && !handed_on {
            return false;
        }
        let expires = now + cfg.max_disconnection_duration;
        let user = self.index.user_of(socket).cloned();
        let hub = self.hub.clone();
        let mut state = hub.lock();
        // Bounded: at most one waiting socket per connection the server may hold; past that the
        // oldest gives way.
        while state.parked.len() >= self.cfg.max_connections {
            let Some((expires, pid)) = state.parked.order.pop_front() else {
                break;
            };
            if let Some(p) = state.parked.take_current(&pid, expires) {
                forget_parked(&hub, &mut state, p);
            }
        }
        let pid = recovery.pid.clone();
        let parked = &mut state.parked;
        parked.order.push_back((expires, pid.clone()));
        parked.by_pid.insert(
            pid,
            ParkedSocket {
                socket,
                recovery: *recovery,
                user,
                rooms: rooms.to_vec(),
                expires,
            },
        );
        // A client that drops and recovers over and over leaves stale entries behind: compact
        // now and then, so the list stays within twice the sockets it stands for.
        if parked.order.len() > 2 * parked.by_pid.len().max(1024) {
            let by_pid = &parked.by_pid;
            parked
                .order
                .retain(|(at, pid)| by_pid.get(pid).is_some_and(|p| p.expires == *at));
        }
        let next = parked.order.front().map(|(at, _)| *at);
        drop(state);
        self.arm_recovery_timer(next);
        true
    }

    /// This loop's recovery timer, at the first expiry of the hub's waiting list (each loop that
    /// parked a socket keeps one; whichever fires first forgets what is due).
    fn arm_recovery_timer(&mut self, next: Option<Instant>) {
        self.timers
            .schedule(TimerKey::Recovery, next, &mut self.sio.recovery_armed);
    }

    /// The recovery timer fired: forget the sockets whose window has passed.
    pub(super) fn recovery_timer(&mut self, now: Instant, at: Instant) {
        if self.sio.recovery_armed != Some(at) {
            return;
        }
        self.sio.recovery_armed = None;
        let hub = self.hub.clone();
        let mut state = hub.lock();
        while let Some((first, _)) = state.parked.order.front() {
            if *first > now {
                break;
            }
            let Some((expires, pid)) = state.parked.order.pop_front() else {
                break;
            };
            if let Some(p) = state.parked.take_current(&pid, expires) {
                forget_parked(&hub, &mut state, p);
            }
        }
        let next = state.parked.order.front().map(|(at, _)| *at);
        drop(state);
        self.arm_recovery_timer(next);
    }

    /// A CONNECT to `/` whose payload names a parked socket's `pid`: take it out of the waiting
    /// list for this CONNECT (a second one with the same `pid` finds nothing).
    pub(super) fn sio_claim(&mut self, now: Instant, nsp: &str, auth: &Value) -> Option<Claim> {
        if self.cfg.connection_state_recovery.is_none() || nsp != "/" {
            return None;
        }
        let token = |name: &str| {
            auth.get(name)
                .and_then(Value::as_str)
                .filter(|t| t.len() <= MAX_TOKEN)
        };
        let pid = token("pid")?;
        let offset = token("offset").map(str::to_string);
        let hub = self.hub.clone();
        let mut state = hub.lock();
        let parked = state.parked.by_pid.remove(pid)?;
        if parked.expires <= now {
            forget_parked(&hub, &mut state, parked);
            return None;
        }
        Some(Claim { parked, offset })
    }

    /// Cluster: a CONNECT to `/` presented a `pid` that no loop here knows; remember it, so the
    /// decision first asks the other nodes whether one keeps that socket.
    pub(super) fn note_remote_claim(&mut self, request: u64, nsp: &str, auth: &Value) {
        if self.cfg.connection_state_recovery.is_none() || nsp != "/" {
            return;
        }
        let token = |name: &str| {
            auth.get(name)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN)
        };
        let Some(pid) = token("pid") else {
            return;
        };
        let offset = token("offset").map(str::to_string);
        self.hub.note_remote_claim(request, pid.to_string(), offset);
    }

    /// A claim that did not lead to a recovery (the hook refused, or said another identity):
    /// the socket waits again for its real client, until its window ends.
    pub(super) fn sio_unclaim(&mut self, now: Instant, claim: Claim) {
        let p = claim.parked;
        let hub = self.hub.clone();
        let mut state = hub.lock();
        if p.expires <= now {
            return forget_parked(&hub, &mut state, p);
        }
        // Its expiry entry may have been compacted away meanwhile: queue it again (a duplicate
        // is harmless; the second one finds nothing left to forget).
        let pid = p.recovery.pid.clone();
        let expires = p.expires;
        state.parked.by_pid.insert(pid.clone(), p);
        let order = &mut state.parked.order;
        let at = order.partition_point(|(t, _)| *t <= expires);
        order.insert(at, (expires, pid));
        let next = order.front().map(|(at, _)| *at);
        drop(state);
        self.arm_recovery_timer(next);
    }

    /// Where a replay for `claim` would start: `Some(seq)` when the history holds everything
    /// addressed to the socket after what the client saw, `None` when it cannot be done.
    fn replay_start(&self, state: &mut HubState, now: Instant, claim: &Claim) -> Option<u64> {
        let since = claim.parked.recovery.since_seq;
        let seen = match &claim.offset {
            // No offset: the client has processed no event of this socket yet.
            None => since,
            Some(offset) => {
                let EventId { epoch, seq } = sse_codec::parse_last_event_id(offset).ok()?;
                if epoch != self.hub.epoch() {
                    return None;
                }
                seq.max(since)
            }
        };
        state.history.trim(now, self.history_limits());
        match state.history.gap(seen, self.hub.seq_ceiling(state)) {
            Gap::Fillable => Some(seen),
            Gap::Expired | Gap::Invalid => None,
        }
    }

    /// Restores a claimed socket on session `key` (the caller checked the identity), on this
    /// loop whichever loop it left from. When the gap cannot be filled the socket is gone for
    /// good, and `auth` comes back for a fresh one.
    pub(super) fn sio_restore(
        &mut self,
        now: Instant,
        key: u64,
        claim: Claim,
        auth: Value,
    ) -> Result<(), Value> {
        let hub = self.hub.clone();
        let mut state = hub.lock();
        let Some(after) = self.replay_start(&mut state, now, &claim) else {
            forget_parked(&hub, &mut state, claim.parked);
            return Err(auth);
        };
        let identity = claim.identity();
        let mut p = claim.parked;
        let socket = p.socket;
        // Everything addressed to it since, in order, once: the user's and tenant's events, its
        // rooms' (as they were when each event was sent), its own emits, everyone's — up to what
        // this loop has delivered; what is still on its way here comes live, past the floor.
        let user = Index::user_key_of(identity.as_ref());
        let until = hub.replay_until(&state, self.delivered_seq);
        let missed: Vec<EncodedPacket> = state
            .history
            .after(after)
            .take_while(|e| e.seq <= until)
            .filter(|e| e.audience.reaches(user.as_ref(), Some(socket)))
            .filter_map(|e| e.sio.clone())
            .collect();
        hub.set_socket_loop(&mut state, socket, self.loop_index);
        drop(state);
        p.recovery.floor = after.max(until);
        self.sio_restored(
            now, key, socket, p.rooms, p.recovery, identity, auth, &missed,
        );
        Ok(())
    }

    /// The end of a recovery: the socket becomes a recipient again, here, with its
    /// `Socket::join` rooms; its client hears the CONNECT (same sid and pid), then what it
    /// missed; the application hears a recovered socket.
    #[allow(clippy::too_many_arguments)]
    fn sio_restored(
        &mut self,
        now: Instant,
        key: u64,
        socket: u64,
        rooms: Vec<Arc<str>>,
        recovery: SocketRecovery,
        identity: Option<Identity>,
        auth: Value,
        missed: &[EncodedPacket],
    ) {
        self.index_add(socket, RecipientKind::SocketIo, identity.as_ref());
        for room in &rooms {
            let room = self.index.intern_room(room);
            let _ = self
                .index
                .socket_join(socket, room, 0, usize::MAX, usize::MAX);
        }
        self.record_session(socket, &recovery, identity.as_ref(), &rooms);
        let sid = recovery.sid.clone();
        let mut ok = serde_json::Map::new();
        ok.insert("sid".into(), Value::String(sid.to_string()));
        ok.insert("pid".into(), Value::String(recovery.pid.to_string()));
        let sid_text = sid.clone();
        self.sio_attach_socket(key, "/", socket, &sid_text, rooms, Some(Box::new(recovery)));
        let reply = Packet::connect("/", Some(Value::Object(ok)));
        self.sio_send(now, key, &EncodedPacket::new(&reply));
        for packet in missed {
            self.sio_send(now, key, packet);
        }
        self.push(Output::App(AppEvent::SioConnected {
            socket: SocketId(socket),
            nsp: Arc::from("/"),
            sid,
            identity,
            auth,
            recovered: true,
        }));
    }
}

/// A parked socket that will not come back: its rooms are left.
fn forget_parked(hub: &Hub, state: &mut HubState, p: ParkedSocket) {
    for room in &p.rooms {
        state.rooms.socket_leave(p.socket, room);
    }
    hub.forget_socket(state, p.socket);
}

/// A waiting socket handed from one cluster node to another: who it is, its rooms, and every
/// event addressed to it after the client's offset, as the node that kept it computed them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Handoff {
    pub(crate) sid: String,
    pub(crate) pid: String,
    pub(crate) since_seq: u64,
    /// The replay covers the history up to here; the receiving node replays its own after it.
    pub(crate) until: u64,
    pub(crate) rooms: Vec<String>,
    /// Each replayed packet: the Engine.IO text message and its binary attachments.
    pub(crate) packets: Vec<(Vec<u8>, Vec<Vec<u8>>)>,
}

/// What a node answers to another's claim of a `pid`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum HandoffAnswer {
    /// No socket waits here under that `pid` (for that identity).
    NotHere,
    /// It waited here, but the gap cannot be filled: it is gone, the client starts afresh.
    Expired,
    /// Taken out of this node's waiting list and handed over.
    Found(Box<Handoff>),
}

/// A cluster node's side of a claim from another node: if the socket waits here for the same
/// identity, take it out of the hub (nobody may recover it here any more) and compute its replay
/// over the history this node holds (which includes its own emits to the socket).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn hand_off(
    hub: &Hub,
    cfg: &crate::config::Config,
    now: Instant,
    pid: &str,
    offset: Option<&str>,
    identity: Option<&Identity>,
) -> HandoffAnswer {
    if cfg.connection_state_recovery.is_none() || pid.len() > MAX_TOKEN {
        return HandoffAnswer::NotHere;
    }
    let mut state = hub.lock();
    let wanted = Index::user_key_of(identity);
    match state.parked.by_pid.get(pid) {
        Some(p) if p.user == wanted => {}
        _ => return HandoffAnswer::NotHere,
    }
    let Some(parked) = state.parked.by_pid.remove(pid) else {
        return HandoffAnswer::NotHere;
    };
    if parked.expires <= now {
        forget_parked(hub, &mut state, parked);
        return HandoffAnswer::Expired;
    }
    let since = parked.recovery.since_seq;
    let seen = match offset {
        None => Some(since),
        Some(o) => match sse_codec::parse_last_event_id(o) {
            Ok(EventId { epoch, seq }) if epoch == hub.epoch() => Some(seq.max(since)),
            _ => None,
        },
    };
    state.history.trim(now, super::hub::history_limits(cfg));
    let ceiling = hub.seq_ceiling(&state);
    let after = seen.filter(|s| state.history.gap(*s, ceiling) == Gap::Fillable);
    let Some(after) = after else {
        forget_parked(hub, &mut state, parked);
        return HandoffAnswer::Expired;
    };
    let socket = parked.socket;
    let packets = state
        .history
        .after(after)
        .filter(|e| e.audience.reaches(parked.user.as_ref(), Some(socket)))
        .filter_map(|e| e.sio.as_ref().map(EncodedPacket::to_parts))
        .collect();
    let until = state.seq;
    let handoff = Handoff {
        sid: parked.recovery.sid.to_string(),
        pid: parked.recovery.pid.to_string(),
        since_seq: since,
        until: until.max(after),
        rooms: parked.rooms.iter().map(|r| r.to_string()).collect(),
        packets,
    };
    forget_parked(hub, &mut state, parked);
    HandoffAnswer::Found(Box::new(handoff))
}

impl Engine {
    /// A socket another cluster node handed over (the caller checked the identity with the
    /// hook): it lives here from now on under a new id, with its sid, pid and rooms; its client
    /// gets the other node's replay, then what this node delivered after it, then live events.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn sio_restore_remote(
        &mut self,
        now: Instant,
        key: u64,
        handoff: Handoff,
        identity: Option<Identity>,
        auth: Value,
    ) -> Result<(), Value> {
        let mut packets = Vec::with_capacity(handoff.packets.len());
        for (text, attachments) in handoff.packets {
            match EncodedPacket::from_parts(text, attachments) {
                Some(p) => packets.push(p),
                // Not what a node of ours sends: a fresh session, never a partial replay.
                None => return Err(auth),
            }
        }
        let socket = self.new_recipient_id();
        let rooms: Vec<Arc<str>> = handoff
            .rooms
            .iter()
            .map(|r| Arc::from(r.as_str()))
            .collect();
        let user = Index::user_key_of(identity.as_ref());
        let hub = self.hub.clone();
        let mut state = hub.lock();
        let until = hub.replay_until(&state, self.delivered_seq);
        for e in state
            .history
            .after(handoff.until)
            .take_while(|e| e.seq <= until)
            .filter(|e| e.audience.reaches_rooms(user.as_ref(), &rooms))
        {
            if let Some(p) = e.sio.clone() {
                packets.push(p);
            }
        }
        // Its rooms are in the hub like any recoverable socket's, so later room events freeze
        // an audience with it.
        for room in &rooms {
            state.join_socket_room(socket, room.clone());
        }
        drop(state);
        let recovery = SocketRecovery {
            sid: Arc::from(handoff.sid.as_str()),
            pid: Arc::from(handoff.pid.as_str()),
            since_seq: handoff.since_seq,
            floor: handoff.until.max(until),
        };
        self.sio_restored(now, key, socket, rooms, recovery, identity, auth, &packets);
        Ok(())
    }
}

impl Engine {
    /// A socket whose node died, restored from the record that node kept in the cluster (the
    /// caller checked the identity with the hook): it lives here from now on under a new id,
    /// with its sid, pid and the rooms it was in; its client gets, in sequence order, every
    /// broadcast of this node's history after its offset that reached it there (by its user,
    /// its tenant, everyone, or a room while it was in it) and the events emitted to it alone,
    /// then live events. All or nothing: `Err(auth)` when any of it cannot be known.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn sio_restore_recorded(
        &mut self,
        now: Instant,
        key: u64,
        recorded: RecordedSession,
        identity: Option<Identity>,
        auth: Value,
    ) -> Result<(), Value> {
        let RecordedSession {
            record,
            emits,
            emits_full,
            offset,
        } = recorded;
        if record.identity != identity {
            return Err(auth);
        }
        let since = record.since_seq;
        let seen = match offset.as_deref() {
            None => since,
            Some(o) => match sse_codec::parse_last_event_id(o) {
                Ok(EventId { epoch, seq }) if epoch == self.hub.epoch() => seq.max(since),
                _ => return Err(auth),
            },
        };
        // Room spans that ended before what the client saw were dropped: it cannot be exact.
        if seen < record.complete_after {
            return Err(auth);
        }
        // A full list lost its oldest emits; unless the client saw past them, one is missing.
        if emits_full && emits.first().is_some_and(|(seq, _, _)| *seq > seen) {
            return Err(auth);
        }
        let mut packets: Vec<(u64, EncodedPacket)> = Vec::with_capacity(emits.len());
        for (seq, text, attachments) in emits {
            if seq <= seen || packets.iter().any(|(s, _)| *s == seq) {
                continue;
            }
            match EncodedPacket::from_parts(text, attachments) {
                Some(p) => packets.push((seq, p)),
                None => return Err(auth),
            }
        }
        let user = Index::user_key_of(identity.as_ref());
        let socket = self.new_recipient_id();
        let rooms: Vec<Arc<str>> = record.rooms().map(Arc::from).collect();
        let hub = self.hub.clone();
        let mut state = hub.lock();
        state.history.trim(now, self.history_limits());
        if state.history.gap(seen, hub.seq_ceiling(&state)) != Gap::Fillable {
            return Err(auth);
        }
        let until = hub.replay_until(&state, self.delivered_seq);
        for e in state.history.after(seen).take_while(|e| e.seq <= until) {
            let reached = match &e.audience {
                // This node's own emits are its sockets'; the dead node's came with the record.
                HistoryAudience::Socket(_) => false,
                HistoryAudience::Members { room, users, .. } => {
                    user.as_ref().is_some_and(|u| users.contains(u))
                        || record.reached_by(room, e.seq)
                }
                other => other.reaches(user.as_ref(), None),
            };
            if let (true, Some(p)) = (reached, &e.sio) {
                packets.push((e.seq, p.clone()));
            }
        }
        // The cluster's numbers and the dead node's own (in between them) in one order: the
        // order it would have sent them in.
        packets.sort_by_key(|(seq, _)| *seq);
        for room in &rooms {
            state.join_socket_room(socket, room.clone());
        }
        drop(state);
        let recovery = SocketRecovery {
            sid: Arc::from(record.sid.as_str()),
            pid: Arc::from(record.pid.as_str()),
            since_seq: since,
            floor: seen.max(until),
        };
        let packets: Vec<EncodedPacket> = packets.into_iter().map(|(_, p)| p).collect();
        self.sio_restored(now, key, socket, rooms, recovery, identity, auth, &packets);
        Ok(())
    }
}
