//! Property test: random connects, disconnects, joins, leaves (of users with `join_room` and of
//! sockets with `Socket::join`) and broadcasts over both transports reach exactly the recipients
//! a simple model of users, tenants and rooms predicts: one room model, whose audience is its
//! users' connections plus its joined sockets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::test_support::H;
use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::collections::BTreeSet;

const USERS: [&str; 3] = ["u0", "u1", "u2"];
const TENANTS: [&str; 2] = ["t0", "t1"];
const ROOMS: [&str; 3] = ["r0", "r1", "r9"];

#[derive(Clone, Debug)]
enum Op {
    Connect {
        sse: bool,
        who: Option<(usize, usize)>,
    },
    Disconnect(usize),
    ServerClose(usize),
    ClientLeave(usize),
    Reconnect(usize),
    Join(usize, usize, usize),
    /// A live Socket.IO socket joins / leaves a room itself.
    SocketJoin(usize, usize),
    SocketLeave(usize, usize),
    Leave(usize, usize, usize),
    Broadcast {
        kind: usize,
        a: usize,
        t: usize,
        tr: usize,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), proptest::option::of((0..3usize, 0..2usize)))
            .prop_map(|(sse, who)| Op::Connect { sse, who }),
        1 => any::<usize>().prop_map(Op::Disconnect),
        1 => any::<usize>().prop_map(Op::ServerClose),
        1 => any::<usize>().prop_map(Op::ClientLeave),
        1 => any::<usize>().prop_map(Op::Reconnect),
        2 => (0..3usize, 0..2usize, 0..2usize).prop_map(|(u, t, r)| Op::Join(u, t, r)),
        1 => (0..3usize, 0..2usize, 0..3usize).prop_map(|(u, t, r)| Op::Leave(u, t, r)),
        2 => (any::<usize>(), 0..2usize).prop_map(|(i, r)| Op::SocketJoin(i, r)),
        1 => (any::<usize>(), 0..3usize).prop_map(|(i, r)| Op::SocketLeave(i, r)),
        4 => (0..4usize, 0..3usize, 0..2usize, 0..3usize)
            .prop_map(|(kind, a, t, tr)| Op::Broadcast { kind, a, t, tr }),
    ]
}

fn ident(u: usize, t: usize) -> Identity {
    Identity::new(TENANTS[t], USERS[u])
}

struct Live {
    conn: ConnId,
    sse: bool,
    who: Option<Identity>,
    stream: Option<StreamId>,
    socket: Option<SocketId>,
    /// Rooms the socket joined itself (Socket.IO only).
    rooms: BTreeSet<String>,
}

fn connect(h: &mut H, sse: bool, who: Option<Identity>) -> Live {
    let l = if sse {
        let (conn, s) = h.sse_open(who.clone(), None);
        Live {
            conn,
            sse,
            who,
            stream: Some(s),
            socket: None,
            rooms: BTreeSet::new(),
        }
    } else {
        let (conn, s) = h.sio_connect(who.clone());
        Live {
            conn,
            sse,
            who,
            stream: None,
            socket: Some(s),
            rooms: BTreeSet::new(),
        }
    };
    h.app.clear();
    l
}

fn model_reaches(
    l: &Live,
    target: &Target,
    tr: Transports,
    rooms: &BTreeMap<Identity, BTreeSet<String>>,
) -> bool {
    let kind_ok = match tr {
        Transports::Sse => l.sse,
        Transports::SocketIo => !l.sse,
        Transports::Both => true,
    };
    kind_ok
        && match target {
            Target::All => true,
            Target::User(i) => l.who.as_ref() == Some(i),
            Target::Tenant(t) => l.who.as_ref().is_some_and(|w| &w.tenant == t),
            Target::Room(r) => {
                l.rooms.contains(r)
                    || l.who
                        .as_ref()
                        .is_some_and(|w| rooms.get(w).is_some_and(|s| s.contains(r)))
            }
        }
}

fn run_index_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut h = H::new();
    let mut live: Vec<Live> = Vec::new();
    // Socket.IO connections whose socket left `/` (the connection stays open).
    let mut idle: Vec<ConnId> = Vec::new();
    let mut rooms: BTreeMap<Identity, BTreeSet<String>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Connect { sse, who } => {
                let l = connect(&mut h, sse, who.map(|(u, t)| ident(u, t)));
                live.push(l);
            }
            Op::Disconnect(i) | Op::ClientLeave(i) | Op::ServerClose(i) | Op::Reconnect(i)
                if live.is_empty() =>
            {
                let _ = i;
            }
            Op::Disconnect(i) => {
                let l = live.remove(i % live.len());
                h.close(l.conn);
            }
            Op::Reconnect(i) => {
                let l = live.remove(i % live.len());
                h.close(l.conn);
                let n = connect(&mut h, l.sse, l.who);
                live.push(n);
            }
            Op::ClientLeave(i) => {
                let l = live.remove(i % live.len());
                if l.sse {
                    h.close(l.conn);
                } else {
                    h.send(l.conn, "41");
                    idle.push(l.conn);
                }
            }
            Op::ServerClose(i) => {
                let l = live.remove(i % live.len());
                match (l.stream, l.socket) {
                    (Some(stream), _) => {
                        h.cmd(Command::SseClose { stream });
                        prop_assert!(h.is_closed(l.conn));
                    }
                    (None, Some(socket)) => {
                        h.cmd(Command::SioDisconnect { socket });
                        idle.push(l.conn);
                    }
                    (None, None) => unreachable!(),
                }
            }
            Op::Join(u, t, r) => {
                h.cmd(Command::JoinRoom {
                    user: ident(u, t),
                    room: ROOMS[r].into(),
                });
                rooms
                    .entry(ident(u, t))
                    .or_default()
                    .insert(ROOMS[r].into());
            }
            Op::Leave(u, t, r) => {
                h.cmd(Command::LeaveRoom {
                    user: ident(u, t),
                    room: ROOMS[r].into(),
                });
                if let Some(s) = rooms.get_mut(&ident(u, t)) {
                    s.remove(ROOMS[r]);
                    if s.is_empty() {
                        rooms.remove(&ident(u, t));
                    }
                }
            }
            Op::SocketJoin(i, r) | Op::SocketLeave(i, r) if live.is_empty() => {
                let _ = (i, r);
            }
            Op::SocketJoin(i, r) => {
                let n = live.len();
                let l = &mut live[i % n];
                if let Some(socket) = l.socket {
                    h.cmd(Command::SioJoin {
                        socket,
                        room: ROOMS[r].into(),
                        in_main: true,
                        hub_added: false,
                    });
                    l.rooms.insert(ROOMS[r].into());
                }
            }
            Op::SocketLeave(i, r) => {
                let n = live.len();
                let l = &mut live[i % n];
                if let Some(socket) = l.socket {
                    h.cmd(Command::SioLeave {
                        socket,
                        room: ROOMS[r].into(),
                        in_main: true,
                    });
                    l.rooms.remove(ROOMS[r]);
                }
            }
            Op::Broadcast { kind, a, t, tr } => {
                let target = match kind {
                    0 => Target::User(ident(a, t)),
                    1 => Target::Tenant(["t0", "t1", "t9"][a].into()),
                    2 => Target::Room(ROOMS[a].into()),
                    _ => Target::All,
                };
                let tr = [Transports::Sse, Transports::SocketIo, Transports::Both][tr];
                let want: BTreeSet<ConnId> = live
                    .iter()
                    .filter(|l| model_reaches(l, &target, tr, &rooms))
                    .map(|l| l.conn)
                    .collect();
                h.take_fresh();
                h.bcast(target.clone(), tr, "e", "1");
                let got = h.take_fresh();
                prop_assert_eq!(got, want, "{:?} {:?}", target, tr);
            }
        }
        h.app.clear();
        let inv = h.e.index.check_invariants();
        prop_assert!(inv.is_ok(), "{:?}", inv);
        let users: BTreeSet<&Identity> = live
            .iter()
            .filter_map(|l| l.who.as_ref())
            .chain(rooms.keys())
            .collect();
        let tenants: BTreeSet<&str> = live
            .iter()
            .filter_map(|l| l.who.as_ref().map(|w| w.tenant.as_str()))
            .collect();
        let room_names: BTreeSet<&String> = rooms
            .values()
            .flatten()
            .chain(live.iter().flat_map(|l| l.rooms.iter()))
            .collect();
        let st = h.e.stats();
        prop_assert_eq!(st.index_recipients, live.len());
        prop_assert_eq!(st.index_users, users.len());
        prop_assert_eq!(st.index_tenants, tenants.len());
        prop_assert_eq!(st.index_rooms, room_names.len());
        prop_assert_eq!(st.sse_streams, live.iter().filter(|l| l.sse).count());
        prop_assert_eq!(st.sio_sockets, live.iter().filter(|l| !l.sse).count());
    }
    for l in std::mem::take(&mut live) {
        h.close(l.conn);
    }
    for c in idle {
        h.close(c);
    }
    for (who, rs) in std::mem::take(&mut rooms) {
        for r in rs {
            h.cmd(Command::LeaveRoom {
                user: who.clone(),
                room: r,
            });
        }
    }
    let inv = h.e.index.check_invariants();
    prop_assert!(inv.is_ok(), "{:?}", inv);
    let st = h.e.stats();
    prop_assert_eq!(
        (
            st.index_recipients,
            st.index_users,
            st.index_tenants,
            st.index_rooms
        ),
        (0, 0, 0, 0)
    );
    prop_assert_eq!(
        (
            st.eio_sessions,
            st.sio_sockets,
            st.sse_streams,
            st.pending_acks
        ),
        (0, 0, 0, 0)
    );
    Ok(())
}

proptest! {
    // No regression file: this module owns no file outside itself.
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn index_matches_a_simple_model(ops in proptest::collection::vec(op_strategy(), 1..48)) {
        run_index_ops(ops)?;
    }
}
