//! One index for every transport: user → recipients, tenant → recipients, room → member users.
//!
//! A *recipient* is something a broadcast can reach: an SSE stream or a Socket.IO socket in the
//! main namespace. A room has two kinds of members, and its audience is the union of both:
//! - *users* joined with `join_room`: the membership belongs to the user (tenant + user id), not to
//!   a connection, so it reaches the user's live recipients and those it opens later, until the
//!   user leaves;
//! - *sockets* joined with `Socket::join`: the membership ends with the socket.
//!
//! Users, tenants and rooms live in separate maps, so no id of one kind can collide with another.

use crate::engine::id_map::IdMap;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Who a connection belongs to. The same user id in two tenants are two different users.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// The tenant ("" for single-tenant applications).
    pub tenant: String,
    /// The user id within the tenant.
    pub user: String,
}

impl Identity {
    /// A user of a tenant.
    pub fn new(tenant: impl Into<String>, user: impl Into<String>) -> Identity {
        Identity {
            tenant: tenant.into(),
            user: user.into(),
        }
    }

    /// A user of the default tenant ("").
    pub fn user(user: impl Into<String>) -> Identity {
        Identity::new("", user)
    }
}

/// Which transport a recipient uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecipientKind {
    Sse,
    SocketIo,
}

/// Internal key of a user: shared strings so that many recipients cost one allocation.
pub(crate) type UserKey = (Arc<str>, Arc<str>);

#[derive(Debug)]
struct RecipientEntry {
    kind: RecipientKind,
    user: Option<UserKey>,
}

#[derive(Debug, Default)]
struct UserEntry {
    recipients: Vec<u64>,
    rooms: BTreeSet<Arc<str>>,
}

/// A broadcast's audience.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Audience {
    User(UserKey),
    Tenant(Arc<str>),
    Room(Arc<str>),
    All,
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    recipients: IdMap<RecipientEntry>,
    users: HashMap<UserKey, UserEntry>,
    tenants: HashMap<Arc<str>, HashSet<u64>>,
    rooms: HashMap<Arc<str>, RoomEntry>,
    /// (user, room) and (socket, room) pairs, bounded so a flood of joins cannot grow memory
    /// forever.
    memberships: usize,
}

/// The two kinds of members of a room; an entry with neither is removed.
#[derive(Debug, Default)]
struct RoomEntry {
    users: HashSet<UserKey>,
    sockets: HashSet<u64>,
}

impl RoomEntry {
    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.sockets.is_empty()
    }
}

/// A `join_room` over a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomLimit {
    /// The user is already in `max_rooms_per_user` rooms.
    PerUser(usize),
    /// The socket is already in `max_rooms_per_user` rooms (joined with `Socket::join`).
    PerSocket(usize),
    /// The server holds `max_room_memberships` memberships.
    Total(usize),
}

impl Index {
    pub(crate) fn user_key(identity: &Identity) -> UserKey {
        (
            Arc::from(identity.tenant.as_str()),
            Arc::from(identity.user.as_str()),
        )
    }

    /// The key of an identity, if any.
    pub(crate) fn user_key_of(identity: Option<&Identity>) -> Option<UserKey> {
        identity.map(Self::user_key)
    }

    /// Shares the strings of an existing entry, so a user with many connections stores its key once.
    fn intern(&self, key: UserKey) -> UserKey {
        match self.users.get_key_value(&key) {
            Some((k, _)) => k.clone(),
            None => key,
        }
    }

    /// Registers a recipient (anonymous when `identity` is `None`: it only receives `to_all`).
    pub(crate) fn add(&mut self, id: u64, kind: RecipientKind, identity: Option<&Identity>) {
        self.remove(id);
        let user = identity.map(|i| self.intern(Self::user_key(i)));
        if let Some(key) = &user {
            self.users
                .entry(key.clone())
                .or_default()
                .recipients
                .push(id);
            self.tenants.entry(key.0.clone()).or_default().insert(id);
        }
        self.recipients.insert(id, RecipientEntry { kind, user });
    }

    /// Forgets a recipient; a user with no recipients and no rooms is forgotten too.
    pub(crate) fn remove(&mut self, id: u64) {
        let Some(entry) = self.recipients.remove(&id) else {
            return;
        };
        let Some(key) = entry.user else {
            return;
        };
        if let Some(set) = self.tenants.get_mut(&key.0) {
            set.remove(&id);
            if set.is_empty() {
                self.tenants.remove(&key.0);
            }
        }
        if let Some(u) = self.users.get_mut(&key) {
            u.recipients.retain(|r| *r != id);
            if u.recipients.is_empty() && u.rooms.is_empty() {
                self.users.remove(&key);
            }
        }
    }

    /// `Ok(true)` if the user was not yet a member; an error (and no change) past a limit.
    pub(crate) fn join(
        &mut self,
        identity: &Identity,
        room: &str,
        per_user: usize,
        total: usize,
    ) -> Result<bool, RoomLimit> {
        let key = self.intern(Self::user_key(identity));
        if let Some(u) = self.users.get(&key) {
            if u.rooms.contains(room) {
                return Ok(false);
            }
            if u.rooms.len() >= per_user {
                return Err(RoomLimit::PerUser(per_user));
            }
        }
        if self.memberships >= total {
            return Err(RoomLimit::Total(total));
        }
        let room = self.intern_room(room);
        self.users
            .entry(key.clone())
            .or_default()
            .rooms
            .insert(room.clone());
        self.rooms.entry(room).or_default().users.insert(key);
        self.memberships += 1;
        Ok(true)
    }

    /// Shares the name of an existing room.
    pub(crate) fn intern_room(&self, room: &str) -> Arc<str> {
        match self.rooms.get_key_value(room) {
            Some((r, _)) => r.clone(),
            None => Arc::from(room),
        }
    }

    /// A socket (a recipient of the main namespace) joins `room` until it leaves or disconnects.
    /// `Ok(true)` if it was not yet a member; `held` is how many rooms the socket is in already.
    pub(crate) fn socket_join(
        &mut self,
        socket: u64,
        room: Arc<str>,
        held: usize,
        per_socket: usize,
        total: usize,
    ) -> Result<bool, RoomLimit> {
        if self
            .rooms
            .get(&room)
            .is_some_and(|r| r.sockets.contains(&socket))
        {
            return Ok(false);
        }
        if held >= per_socket {
            return Err(RoomLimit::PerSocket(per_socket));
        }
        if self.memberships >= total {
            return Err(RoomLimit::Total(total));
        }
        self.rooms.entry(room).or_default().sockets.insert(socket);
        self.memberships += 1;
        Ok(true)
    }

    /// `true` if the socket was a member.
    pub(crate) fn socket_leave(&mut self, socket: u64, room: &str) -> bool {
        let Some(entry) = self.rooms.get_mut(room) else {
            return false;
        };
        let removed = entry.sockets.remove(&socket);
        if removed {
            self.memberships -= 1;
        }
        if entry.is_empty() {
            self.rooms.remove(room);
        }
        removed
    }

    /// `true` if the user was a member.
    pub(crate) fn leave(&mut self, identity: &Identity, room: &str) -> bool {
        let key = Self::user_key(identity);
        let Some(u) = self.users.get_mut(&key) else {
            return false;
        };
        let removed = u.rooms.remove(room);
        if removed {
            self.memberships -= 1;
        }
        if u.recipients.is_empty() && u.rooms.is_empty() {
            self.users.remove(&key);
        }
        if let Some(members) = self.rooms.get_mut(room) {
            members.users.remove(&key);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
        removed
    }

    /// Every `(user, room)` of `join_room`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn user_memberships(&self) -> Vec<(Identity, String)> {
        let mut out = Vec::new();
        for ((tenant, user), entry) in &self.users {
            for room in &entry.rooms {
                out.push((
                    Identity::new(tenant.as_ref(), user.as_ref()),
                    room.to_string(),
                ));
            }
        }
        out
    }

    pub(crate) fn rooms_of(&self, identity: &Identity) -> Vec<String> {
        self.users
            .get(&Self::user_key(identity))
            .map(|u| u.rooms.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default()
    }

    /// Member users and joined sockets of a room (a snapshot, kept in the history so a replay
    /// reaches exactly the members of the time the event was sent). In the hub, sockets waiting
    /// for recovery are members still.
    pub(crate) fn room_snapshot(&self, room: &str, with_sockets: bool) -> (Vec<UserKey>, Vec<u64>) {
        match self.rooms.get(room) {
            Some(m) => (
                m.users.iter().cloned().collect(),
                if with_sockets {
                    m.sockets.iter().copied().collect()
                } else {
                    Vec::new()
                },
            ),
            None => (Vec::new(), Vec::new()),
        }
    }

    pub(crate) fn user_of(&self, id: u64) -> Option<&UserKey> {
        self.recipients.get(&id).and_then(|r| r.user.as_ref())
    }

    /// Every recipient of `kinds` that `audience` reaches, each once.
    pub(crate) fn resolve(
        &self,
        audience: &Audience,
        kinds: &[RecipientKind],
        out: &mut Vec<(u64, RecipientKind)>,
    ) {
        out.clear();
        let mut push = |id: &u64| {
            if let Some(r) = self.recipients.get(id) {
                if kinds.contains(&r.kind) {
                    out.push((*id, r.kind));
                }
            }
        };
        match audience {
            Audience::User(key) => {
                if let Some(u) = self.users.get(key) {
                    u.recipients.iter().for_each(&mut push);
                }
            }
            Audience::Tenant(t) => {
                if let Some(set) = self.tenants.get(t) {
                    set.iter().for_each(&mut push);
                }
            }
            Audience::Room(room) => {
                // Users are distinct and each recipient belongs to one user: no duplicates among
                // the users' recipients. A joined socket of a member user is already among them.
                if let Some(members) = self.rooms.get(room) {
                    for key in &members.users {
                        if let Some(u) = self.users.get(key) {
                            u.recipients.iter().for_each(&mut push);
                        }
                    }
                    for id in &members.sockets {
                        let of_member = self
                            .recipients
                            .get(id)
                            .and_then(|r| r.user.as_ref())
                            .is_some_and(|k| members.users.contains(k));
                        if !of_member {
                            push(id);
                        }
                    }
                }
            }
            // Everyone: straight from the map (no second lookup per recipient).
            Audience::All => out.extend(self.everyone(kinds)),
        }
    }

    /// At most `limit` of everyone's recipients of `kinds`: the start of a broadcast to all,
    /// without walking all of them first.
    pub(crate) fn resolve_all_first(
        &self,
        kinds: &[RecipientKind],
        out: &mut Vec<(u64, RecipientKind)>,
        limit: usize,
    ) {
        out.clear();
        out.extend(self.everyone(kinds).take(limit));
    }

    /// Every recipient of `kinds`, in the map's order.
    fn everyone<'a>(
        &'a self,
        kinds: &'a [RecipientKind],
    ) -> impl Iterator<Item = (u64, RecipientKind)> + 'a {
        self.recipients
            .iter()
            .filter(|(_, r)| kinds.contains(&r.kind))
            .map(|(id, r)| (*id, r.kind))
    }

    /// Counts, for tests and metrics: (recipients, users, tenants, rooms).
    pub(crate) fn sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.recipients.len(),
            self.users.len(),
            self.tenants.len(),
            self.rooms.len(),
        )
    }

    /// Checks that the forward and reverse maps agree (property tests and the engine fuzz target).
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        for (id, r) in &self.recipients {
            if let Some(key) = &r.user {
                let u = self
                    .users
                    .get(key)
                    .ok_or(format!("recipient {id}: user missing"))?;
                if !u.recipients.contains(id) {
                    return Err(format!("recipient {id} not listed under its user"));
                }
                if !self.tenants.get(&key.0).is_some_and(|t| t.contains(id)) {
                    return Err(format!("recipient {id} not listed under its tenant"));
                }
            }
        }
        for (key, u) in &self.users {
            if u.recipients.is_empty() && u.rooms.is_empty() {
                return Err(format!("empty user {key:?} left behind"));
            }
            for id in &u.recipients {
                if self.recipients.get(id).and_then(|r| r.user.as_ref()) != Some(key) {
                    return Err(format!("user {key:?} lists foreign recipient {id}"));
                }
            }
            for room in &u.rooms {
                if !self.rooms.get(room).is_some_and(|m| m.users.contains(key)) {
                    return Err(format!("room {room} lacks member {key:?}"));
                }
            }
        }
        for (t, set) in &self.tenants {
            if set.is_empty() {
                return Err(format!("empty tenant {t} left behind"));
            }
            for id in set {
                if self
                    .recipients
                    .get(id)
                    .and_then(|r| r.user.as_ref())
                    .map(|k| &k.0)
                    != Some(t)
                {
                    return Err(format!("tenant {t} lists foreign recipient {id}"));
                }
            }
        }
        let mut memberships = 0;
        for (room, members) in &self.rooms {
            if members.is_empty() {
                return Err(format!("empty room {room} left behind"));
            }
            for key in &members.users {
                if !self.users.get(key).is_some_and(|u| u.rooms.contains(room)) {
                    return Err(format!("room {room} lists non-member {key:?}"));
                }
            }
            for id in &members.sockets {
                if !self.recipients.contains_key(id) {
                    return Err(format!("room {room} lists gone socket {id}"));
                }
            }
            memberships += members.users.len() + members.sockets.len();
        }
        if memberships != self.memberships {
            return Err(format!(
                "membership count {} but {memberships} memberships",
                self.memberships
            ));
        }
        Ok(())
    }
}
