//! A node of a Node.js socket.io cluster (`@socket.io/redis-adapter`): the engine's side. The
//! adapter's messages select sockets by rooms, as socket.io does: a socket is in the room named
//! by its id, its `Socket::join` rooms and — in the main namespace, where tidings rooms are
//! unified — its user's rooms and the reserved rooms of its user and tenant
//! ([`user_room`], [`tenant_room`]). This module resolves such a selection on one loop and
//! delivers to it, or lists, joins, leaves or disconnects what it selects.

// Used by a node of a Node.js cluster only (the `redis` feature).
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::collections::HashSet;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::index::{Audience, Identity, Index, RecipientKind};
use super::sio::{AckReply, EncodedPacket};
use super::Engine;

/// The reserved room of a tidings user, as Node sees it: `tidings:user:` and
/// `JSON.stringify([tenant, user])`. Application rooms with the `tidings:` prefix are refused.
pub fn user_room(identity: &Identity) -> String {
    let pair = Value::Array(vec![
        Value::String(identity.tenant.clone()),
        Value::String(identity.user.clone()),
    ]);
    format!("{USER_ROOM}{pair}")
}

/// The reserved room of a tenant: `tidings:tenant:` and `JSON.stringify(tenant)`.
pub fn tenant_room(tenant: &str) -> String {
    format!("{TENANT_ROOM}{}", Value::String(tenant.to_string()))
}

/// The prefix no application room may have (the reserved rooms start with it).
pub const RESERVED_ROOM_PREFIX: &str = "tidings:";
const USER_ROOM: &str = "tidings:user:";
const TENANT_ROOM: &str = "tidings:tenant:";

/// What a room name of the adapter's messages stands for here.
#[derive(Debug, PartialEq)]
enum RoomName {
    User(Identity),
    Tenant(String),
    /// A reserved name that is not well formed: selects nobody.
    Nobody,
    /// A socket id or an application room.
    Plain,
}

fn parse_room(room: &str) -> RoomName {
    if let Some(rest) = room.strip_prefix(USER_ROOM) {
        return match serde_json::from_str::<Value>(rest) {
            Ok(Value::Array(a)) => match a.as_slice() {
                [Value::String(t), Value::String(u)] => RoomName::User(Identity::new(t, u)),
                _ => RoomName::Nobody,
            },
            _ => RoomName::Nobody,
        };
    }
    if let Some(rest) = room.strip_prefix(TENANT_ROOM) {
        return match serde_json::from_str::<Value>(rest) {
            Ok(Value::String(t)) => RoomName::Tenant(t),
            _ => RoomName::Nobody,
        };
    }
    if room.starts_with(RESERVED_ROOM_PREFIX) {
        return RoomName::Nobody;
    }
    RoomName::Plain
}

/// Which sockets of a namespace a message is for: those in any of `rooms` (all when empty) and
/// in none of `except`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Selection {
    pub(crate) rooms: Vec<String>,
    pub(crate) except: Vec<String>,
}

/// What a request does to the sockets it selects.
#[derive(Clone, Debug)]
pub(crate) enum AdapterAction {
    /// Lists them (`fetchSockets`, the ids of `SOCKETS`).
    List,
    /// Lists the rooms they are in (`allRooms`), as Node's `adapter.rooms`: each socket's id and
    /// every room it is in (a user's rooms count only while the user has a socket here).
    Rooms,
    /// They join these (`Socket::join` rooms).
    Join(Vec<String>),
    Leave(Vec<String>),
    /// They are disconnected (`close`: their whole connection, not only the namespace).
    Disconnect {
        close: bool,
    },
}

/// A socket as a Node server sees it in `fetchSockets`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AdapterSocket {
    pub(crate) sid: String,
    pub(crate) rooms: Vec<String>,
    pub(crate) identity: Option<Identity>,
    pub(crate) address: Option<String>,
    pub(crate) url: String,
}

/// One loop's answer to a query: how many sockets it selected, and what the action asked for
/// (the sockets for `List`, their rooms for `Rooms`; nothing is built for the others).
#[derive(Debug, Default)]
pub(crate) struct QueryAnswer {
    pub(crate) selected: usize,
    pub(crate) sockets: Vec<AdapterSocket>,
    pub(crate) rooms: Vec<String>,
}

/// Where a loop's answer goes.
pub(crate) type QueryReply = mpsc::Sender<QueryAnswer>;

impl Engine {
    /// The ids of this loop's sockets of `nsp` that `sel` selects, each once.
    fn adapter_select(&self, nsp: &str, sel: &Selection) -> Vec<u64> {
        let mut chosen: Vec<u64> = if sel.rooms.is_empty() {
            self.sio.socket_ids_of(nsp)
        } else {
            let mut set = HashSet::new();
            for room in &sel.rooms {
                self.adapter_room_members(nsp, room, &mut set);
            }
            set.into_iter().collect()
        };
        if !sel.except.is_empty() {
            let mut out = HashSet::new();
            for room in &sel.except {
                self.adapter_room_members(nsp, room, &mut out);
            }
            chosen.retain(|s| !out.contains(s));
        }
        chosen.sort_unstable();
        chosen
    }

    /// The sockets of `nsp` in `room` on this loop, added to `set`.
    fn adapter_room_members(&self, nsp: &str, room: &str, set: &mut HashSet<u64>) {
        if let Some(s) = self.sio.socket_by_sid(nsp, room) {
            set.insert(s);
        }
        if nsp != "/" {
            set.extend(self.sio.socket_room_members(nsp, room));
            return;
        }
        let audience = match parse_room(room) {
            RoomName::User(i) => Audience::User(Index::user_key(&i)),
            RoomName::Tenant(t) => Audience::Tenant(Arc::from(t.as_str())),
            RoomName::Nobody => return,
            RoomName::Plain => Audience::Room(Arc::from(room)),
        };
        let mut found = Vec::new();
        self.index
            .resolve(&audience, &[RecipientKind::SocketIo], &mut found);
        set.extend(found.into_iter().map(|(id, _)| id));
    }

    /// A broadcast of the Node cluster: to this loop's sockets that `sel` selects, encoded once;
    /// with `ack`, each socket's answer (the packet then gets an ack id per socket). Returns how
    /// many sockets it went to.
    pub(super) fn adapter_broadcast(
        &mut self,
        now: Instant,
        nsp: &str,
        sel: &Selection,
        packet: &crate::proto::sio::Packet,
        volatile: bool,
        ack: Option<(Duration, AckReply)>,
    ) -> usize {
        let sockets = self.adapter_select(nsp, sel);
        let count = sockets.len();
        match ack {
            None => {
                let encoded = EncodedPacket::new(packet).shared();
                for socket in sockets {
                    let Some(session) = self.sio.session_of(socket) else {
                        continue;
                    };
                    if volatile {
                        self.sio_send_volatile(now, session, &encoded);
                    } else {
                        self.sio_send(now, session, &encoded);
                    }
                }
            }
            Some((timeout, reply)) => {
                if sockets.is_empty() {
                    self.deliver_ack_reply(reply, Vec::new());
                    return 0;
                }
                let collector = self.new_collector(now + timeout, reply);
                for socket in sockets {
                    let mut p = packet.clone();
                    self.emit_with_ack_to(now, socket, &mut p, collector);
                }
                self.finish_collector_if_done(collector);
            }
        }
        count
    }

    /// A request of the Node cluster on this loop's sockets of `nsp`.
    pub(super) fn adapter_query(
        &mut self,
        now: Instant,
        nsp: &str,
        sel: &Selection,
        action: &AdapterAction,
        reply: QueryReply,
    ) {
        let chosen = self.adapter_select(nsp, sel);
        let mut answer = QueryAnswer {
            selected: chosen.len(),
            ..QueryAnswer::default()
        };
        match action {
            AdapterAction::List => {
                answer.sockets = chosen
                    .iter()
                    .filter_map(|s| self.adapter_socket(*s))
                    .collect();
            }
            AdapterAction::Rooms => {
                let mut rooms = std::collections::BTreeSet::new();
                for s in &chosen {
                    if let Some(s) = self.adapter_socket(*s) {
                        rooms.extend(s.rooms);
                    }
                }
                answer.rooms = rooms.into_iter().collect();
            }
            AdapterAction::Join(rooms) => {
                for s in &chosen {
                    for room in rooms {
                        self.sio_join(*s, room, false);
                    }
                }
            }
            AdapterAction::Leave(rooms) => {
                for s in &chosen {
                    for room in rooms {
                        self.sio_leave(*s, room);
                    }
                }
            }
            AdapterAction::Disconnect { close: false } => {
                for s in &chosen {
                    self.sio_disconnect(now, *s);
                }
            }
            // "disconnect(true) closes the underlying connection": as socket.io does, each
            // socket of the connection hears its DISCONNECT first.
            AdapterAction::Disconnect { close: true } => {
                let sessions: std::collections::BTreeSet<u64> = chosen
                    .iter()
                    .filter_map(|s| self.sio.session_of(*s))
                    .collect();
                for session in sessions {
                    for socket in self.sio.sockets_of_session(session) {
                        self.sio_disconnect(now, socket);
                    }
                    self.eio_close(now, session, super::CloseReason::ServerClose);
                }
            }
        }
        let _ = reply.send(answer);
    }

    /// One socket as Node sees it.
    fn adapter_socket(&self, socket: u64) -> Option<AdapterSocket> {
        let super::sio::AdapterView {
            sid,
            nsp,
            rooms: own_rooms,
            info,
        } = self.sio.adapter_view(socket)?;
        let mut rooms = vec![sid.to_string()];
        rooms.extend(own_rooms.iter().map(|r| r.to_string()));
        let mut identity = None;
        if nsp.as_ref() == "/" {
            if let Some((t, u)) = self.index.user_of(socket) {
                let i = Identity::new(t.as_ref(), u.as_ref());
                for r in self.index.rooms_of(&i) {
                    if !rooms.contains(&r) {
                        rooms.push(r);
                    }
                }
                rooms.push(user_room(&i));
                rooms.push(tenant_room(&i.tenant));
                identity = Some(i);
            }
        }
        Some(AdapterSocket {
            sid: sid.to_string(),
            rooms,
            identity,
            address: info.remote().map(|a| a.ip().to_string()),
            url: info.path().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_rooms_are_json_and_parse_back() {
        let i = Identity::new("acme", "al\"ice");
        assert_eq!(user_room(&i), r#"tidings:user:["acme","al\"ice"]"#);
        assert_eq!(tenant_room("acme"), r#"tidings:tenant:"acme""#);
        assert_eq!(parse_room(&user_room(&i)), RoomName::User(i));
        assert_eq!(
            parse_room(&tenant_room("acme")),
            RoomName::Tenant("acme".into())
        );
        for bad in [
            "tidings:user:[1,2]",
            "tidings:user:[\"a\"]",
            "tidings:user:nope",
            "tidings:tenant:3",
            "tidings:other",
        ] {
            assert_eq!(parse_room(bad), RoomName::Nobody, "{bad}");
        }
        assert_eq!(parse_room("lobby"), RoomName::Plain);
        assert_eq!(parse_room("tidings"), RoomName::Plain);
    }
}
