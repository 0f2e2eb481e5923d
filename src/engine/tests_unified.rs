//! The unified broadcast API in the engine: rooms joined before connecting, tenants kept apart,
//! per-user acks, the transport filter, and a broadcast encoded once for every recipient.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::test_support::{data_of, ok, H, SIO_WS};
use super::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn unified_room_joined_before_connect_survives_reconnect() {
    let mut h = H::new();
    let alice = Identity::new("t", "alice");
    let bob = Identity::new("t", "bob");
    h.cmd(Command::JoinRoom {
        user: alice.clone(),
        room: "vip".into(),
    });
    let (tx, rx) = mpsc::channel();
    h.cmd(Command::UserRooms {
        user: alice.clone(),
        reply: tx,
    });
    assert_eq!(rx.try_recv().unwrap(), vec!["vip".to_string()]);
    let (a_sio, _) = h.sio_connect(Some(alice.clone()));
    let (a_sse, _) = h.sse_open(Some(alice.clone()), None);
    let (b_sio, _) = h.sio_connect(Some(bob.clone()));
    let (b_sse, _) = h.sse_open(Some(bob.clone()), None);
    let (n_sio, _) = h.sio_connect(None);
    let (n_sse, _) = h.sse_open(None, None);
    h.app.clear();
    h.take_fresh();
    h.bcast(Target::Room("vip".into()), Transports::Both, "v", "1");
    assert_eq!(h.take_fresh(), BTreeSet::from([a_sio, a_sse]));
    assert_eq!(h.texts(a_sio), vec![r#"42["v",1]"#]);
    assert_eq!(data_of(&h.sse_events(a_sse)), vec!["1"]);
    for c in [b_sse, n_sse] {
        assert!(h.sse_events(c).is_empty());
    }
    for c in [b_sio, n_sio] {
        assert!(h.frames(c).is_empty());
    }
    // Reconnect on both transports: membership stays with the user.
    h.close(a_sio);
    h.close(a_sse);
    let (a_sio, _) = h.sio_connect(Some(alice.clone()));
    let (a_sse, _) = h.sse_open(Some(alice.clone()), None);
    h.app.clear();
    h.take_fresh();
    h.bcast(Target::Room("vip".into()), Transports::Both, "v", "2");
    assert_eq!(h.take_fresh(), BTreeSet::from([a_sio, a_sse]));
    assert_eq!(h.texts(a_sio), vec![r#"42["v",2]"#]);
    // Ids of different kinds never collide.
    h.bcast(Target::Room("alice".into()), Transports::Both, "v", "3");
    h.bcast(Target::Tenant("alice".into()), Transports::Both, "v", "3");
    h.bcast(Target::Tenant("vip".into()), Transports::Both, "v", "3");
    h.bcast(
        Target::User(Identity::new("t", "vip")),
        Transports::Both,
        "v",
        "3",
    );
    h.bcast(
        Target::User(Identity::new("vip", "alice")),
        Transports::Both,
        "v",
        "3",
    );
    assert!(h.take_fresh().is_empty());
    // Leaving stops delivery; an empty room is forgotten.
    h.cmd(Command::LeaveRoom {
        user: alice.clone(),
        room: "vip".into(),
    });
    h.bcast(Target::Room("vip".into()), Transports::Both, "v", "4");
    assert!(h.take_fresh().is_empty());
    assert_eq!(h.e.stats().index_rooms, 0);
}

#[test]
fn unified_same_user_id_in_two_tenants_never_crosses() {
    let mut h = H::new();
    let u1 = Identity::new("t1", "u");
    let u2 = Identity::new("t2", "u");
    let u0 = Identity::user("u");
    let mut conns = BTreeMap::new();
    for who in [&u1, &u2, &u0] {
        let (w, _) = h.sio_connect(Some(who.clone()));
        let (s, _) = h.sse_open(Some(who.clone()), None);
        conns.insert(who.tenant.clone(), BTreeSet::from([w, s]));
    }
    h.app.clear();
    let st = h.e.stats();
    assert_eq!((st.index_users, st.index_tenants), (3, 3));
    h.take_fresh();
    h.bcast(Target::User(u1.clone()), Transports::Both, "e", "1");
    assert_eq!(h.take_fresh(), conns["t1"]);
    h.bcast(Target::User(u2.clone()), Transports::Both, "e", "2");
    assert_eq!(h.take_fresh(), conns["t2"]);
    h.bcast(Target::Tenant("t1".into()), Transports::Both, "e", "3");
    assert_eq!(h.take_fresh(), conns["t1"]);
    h.bcast(Target::Tenant("t2".into()), Transports::Both, "e", "4");
    assert_eq!(h.take_fresh(), conns["t2"]);
    h.bcast(Target::Tenant(String::new()), Transports::Both, "e", "5");
    assert_eq!(h.take_fresh(), conns[""]);
    h.bcast(Target::Tenant("t3".into()), Transports::Both, "e", "6");
    assert!(h.take_fresh().is_empty());
    h.cmd(Command::JoinRoom {
        user: u1.clone(),
        room: "r".into(),
    });
    h.bcast(Target::Room("r".into()), Transports::Both, "e", "7");
    assert_eq!(h.take_fresh(), conns["t1"]);
    let (tx, rx) = mpsc::channel();
    h.cmd(Command::UserRooms {
        user: u2.clone(),
        reply: tx,
    });
    assert!(rx.try_recv().unwrap().is_empty());
    h.bcast(Target::All, Transports::Both, "e", "8");
    assert_eq!(h.take_fresh().len(), 6);
    // UserAck in one tenant reaches only that tenant's socket.
    let (tx, _rx) = mpsc::channel();
    h.cmd(Command::UserAck {
        user: u2.clone(),
        event: "q".into(),
        data: json!(1),
        timeout: Duration::from_secs(5),
        reply: AckReply::Channel(tx),
    });
    let fresh = h.take_fresh();
    assert_eq!(fresh.len(), 1);
    assert!(conns["t2"].is_superset(&fresh));
}

#[test]
fn unified_user_ack_outcomes_ok_timeout_disconnected() {
    let mut h = H::new();
    let alice = Identity::new("t", "alice");
    let (ca, sa) = h.sio_connect(Some(alice.clone()));
    let (cb, sb) = h.sio_connect(Some(alice.clone()));
    let (cc, sc) = h.sio_connect(Some(alice.clone()));
    let (sse, _) = h.sse_open(Some(alice.clone()), None);
    let (other, _) = h.sio_connect(Some(Identity::new("t", "bob")));
    h.app.clear();
    h.take_fresh();
    let (tx, rx) = mpsc::channel();
    h.cmd(Command::UserAck {
        user: alice.clone(),
        event: "q".into(),
        data: json!({"n": 1}),
        timeout: Duration::from_secs(5),
        reply: AckReply::Channel(tx),
    });
    assert_eq!(h.take_fresh(), BTreeSet::from([ca, cb, cc]));
    for c in [ca, cb, cc] {
        assert_eq!(h.texts(c), vec![r#"420["q",{"n":1}]"#]);
    }
    assert!(h.sse_events(sse).is_empty());
    assert!(h.frames(other).is_empty());
    h.send(ca, r#"430["yes"]"#);
    h.close(cc);
    assert!(rx.try_recv().is_err(), "one socket is still silent");
    assert!(h.e.stats().pending_acks > 0);
    h.advance(Duration::from_secs(5));
    assert_eq!(
        rx.try_recv().unwrap(),
        vec![
            AckResult {
                socket: sa,
                outcome: ok(vec![json!("yes")]),
            },
            AckResult {
                socket: sb,
                outcome: AckOutcome::Timeout,
            },
            AckResult {
                socket: sc,
                outcome: AckOutcome::Disconnected,
            },
        ]
    );
    assert_eq!(h.e.stats().pending_acks, 0);
    h.send(cb, r#"430["late"]"#);
    assert!(rx.try_recv().is_err());
    assert!(!h.is_closed(cb));
    // Everyone answers: the result comes at once, before the timeout.
    let (tx, rx) = mpsc::channel();
    h.cmd(Command::UserAck {
        user: alice.clone(),
        event: "q".into(),
        data: json!(null),
        timeout: Duration::from_secs(5),
        reply: AckReply::Channel(tx),
    });
    assert_eq!(h.texts(ca), vec![r#"421["q",null]"#]);
    assert_eq!(h.texts(cb), vec![r#"421["q",null]"#]);
    h.send(cb, "431[2]");
    assert!(rx.try_recv().is_err());
    h.send(ca, "431[1]");
    assert_eq!(
        rx.try_recv().unwrap(),
        vec![
            AckResult {
                socket: sa,
                outcome: ok(vec![json!(1)]),
            },
            AckResult {
                socket: sb,
                outcome: ok(vec![json!(2)]),
            },
        ]
    );
    assert_eq!(h.e.stats().pending_acks, 0);
}

#[test]
fn unified_user_ack_without_sockets_answers_at_once() {
    let mut h = H::new();
    let alice = Identity::new("t", "alice");
    // An SSE stream does not count, nor does a socket in another namespace.
    let (_sse, _) = h.sse_open(Some(alice.clone()), None);
    let (conn, _) = h.ws_open(SIO_WS);
    h.sio_join(conn, "/admin", Some(alice.clone()));
    let (tx, rx) = mpsc::channel();
    h.cmd(Command::UserAck {
        user: alice.clone(),
        event: "q".into(),
        data: json!(1),
        timeout: Duration::from_secs(5),
        reply: AckReply::Channel(tx),
    });
    assert_eq!(rx.try_recv().unwrap(), Vec::<AckResult>::new());
    assert_eq!(h.e.stats().pending_acks, 0);
    assert!(h.frames(conn).is_empty());
    // Callback form: AckComplete with no results, at once.
    h.app.clear();
    h.cmd(Command::UserAck {
        user: Identity::user("nobody"),
        event: "q".into(),
        data: json!(1),
        timeout: Duration::from_secs(5),
        reply: AckReply::Callback(Box::new(|_| {})),
    });
    match h.expect_app() {
        AppEvent::AckComplete { results, .. } => assert!(results.is_empty()),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.e.stats().pending_acks, 0);
}

#[test]
fn unified_transport_filter_keeps_sse_and_socketio_apart() {
    let mut h = H::new();
    let alice = Identity::new("t", "alice");
    let (w, _) = h.sio_connect(Some(alice.clone()));
    let (s, _) = h.sse_open(Some(alice.clone()), None);
    h.take_fresh();
    for target in [
        Target::User(alice.clone()),
        Target::Tenant("t".into()),
        Target::All,
    ] {
        h.bcast(target.clone(), Transports::Sse, "e", "1");
        assert_eq!(h.take_fresh(), BTreeSet::from([s]), "{target:?}");
        h.bcast(target.clone(), Transports::SocketIo, "e", "2");
        assert_eq!(h.take_fresh(), BTreeSet::from([w]), "{target:?}");
        h.bcast(target.clone(), Transports::Both, "e", "3");
        assert_eq!(h.take_fresh(), BTreeSet::from([s, w]), "{target:?}");
    }
    h.cmd(Command::JoinRoom {
        user: alice.clone(),
        room: "r".into(),
    });
    h.bcast(Target::Room("r".into()), Transports::Sse, "e", "1");
    assert_eq!(h.take_fresh(), BTreeSet::from([s]));
    h.bcast(Target::Room("r".into()), Transports::SocketIo, "e", "2");
    assert_eq!(h.take_fresh(), BTreeSet::from([w]));
    assert_eq!(
        h.texts(w),
        vec![
            r#"42["e",2]"#,
            r#"42["e",3]"#,
            r#"42["e",2]"#,
            r#"42["e",3]"#,
            r#"42["e",2]"#,
            r#"42["e",3]"#,
            r#"42["e",2]"#
        ]
    );
    assert_eq!(
        data_of(&h.sse_events(s)),
        vec!["1", "3", "1", "3", "1", "3", "1"]
    );
}

#[test]
fn unified_broadcast_is_encoded_once() {
    let mut h = H::new();
    let (s1, _) = h.sse_open(Some(Identity::user("a")), None);
    let (s2, _) = h.sse_open(None, None);
    let (w1, _) = h.sio_connect(Some(Identity::user("c")));
    let (w2, _) = h.sio_connect(None);
    let start = h.log.len();
    h.bcast(Target::All, Transports::Both, "news", r#"{"n":1}"#);
    let writes = &h.log[start..];
    let of = |c: ConnId| -> Vec<&Chunk> {
        writes
            .iter()
            .filter(|(w, _)| *w == c)
            .map(|(_, ch)| ch)
            .collect()
    };
    let shared = |ch: &Chunk| -> Arc<[u8]> {
        match ch {
            Chunk::Shared(a) => a.clone(),
            other => panic!("expected a shared chunk, got {other:?}"),
        }
    };
    let (a1, a2) = (of(s1), of(s2));
    assert_eq!((a1.len(), a2.len()), (1, 1));
    let (f1, f2) = (shared(a1[0]), shared(a2[0]));
    assert!(Arc::ptr_eq(&f1, &f2), "one SSE frame for every stream");
    assert_eq!(
        &*f1,
        format!("event: news\nid: {}\ndata: {{\"n\":1}}\n\n", h.id(1)).as_bytes()
    );
    let (b1, b2) = (of(w1), of(w2));
    assert_eq!((b1.len(), b2.len()), (1, 1), "one chunk: the whole frame");
    let (p1, p2) = (shared(b1[0]), shared(b2[0]));
    assert!(
        Arc::ptr_eq(&p1, &p2),
        "one WebSocket frame for every socket"
    );
    let payload = br#"42["news",{"n":1}]"#;
    assert_eq!(&p1[..2], &[0x81, payload.len() as u8]);
    assert_eq!(&p1[2..], payload);
    // Replaying it shares the same bytes too.
    h.close(s2);
    let start = h.log.len();
    let (s3, _) = h.sse_open(None, Some(&h.id(0)));
    let replay: Vec<&Chunk> = h.log[start..]
        .iter()
        .filter(|(c, _)| *c == s3)
        .map(|(_, ch)| ch)
        .collect();
    assert!(replay
        .iter()
        .any(|ch| matches!(ch, Chunk::Shared(a) if Arc::ptr_eq(a, &f1))));
}

/// A broadcast the hub prepared for a large audience reaches io in two parts (the first
/// `DELIVER_FIRST` recipients at once, the rest at the next `poll_output`); whatever io does in
/// between finishes it first, so every connection still gets each broadcast once and in order,
/// and the reach is counted once, whole.
#[test]
fn a_broadcast_to_many_comes_in_two_parts_and_nothing_comes_between() {
    let mut h = H::new();
    let clients = 2 * DELIVER_FIRST + 40;
    let conns: Vec<ConnId> = (0..clients).map(|_| h.sio_connect(None).0).collect();
    for c in &conns {
        let _ = h.texts(*c);
    }
    let hub = h.e.hub.clone();
    let cfg = h.e.cfg.clone();
    let mut delivers = Vec::new();
    let mut replies = Vec::new();
    for tick in 0..2 {
        let (tx, rx) = mpsc::channel();
        replies.push(rx);
        fanout::route(
            &hub,
            &cfg,
            &|| h.now(),
            Command::Broadcast {
                target: Target::All,
                transports: Transports::Both,
                event: Arc::from("tick"),
                data: Arc::from(format!("{tick}").as_str()),
                volatile: false,
                reply: Some(ReachReply::Channel(tx)),
            },
            &mut |_, c| delivers.push(c),
        );
    }
    assert_eq!(delivers.len(), 2);
    let second = delivers.pop().unwrap();
    let first = delivers.pop().unwrap();
    h.e.handle_command(h.now(), first);
    // The first part only, and no reach yet.
    assert_eq!(h.e.outputs.len(), DELIVER_FIRST);
    assert!(replies[0].try_recv().is_err());
    // io takes the second broadcast before asking for more output: the first one is finished
    // before the second begins.
    h.e.handle_command(h.now(), second);
    h.cmd(Command::Stats {
        reply: mpsc::channel().0,
    });
    for c in &conns {
        let ticks: Vec<String> = h
            .texts(*c)
            .into_iter()
            .filter(|t| t.contains("tick"))
            .collect();
        assert_eq!(ticks.len(), 2, "connection {c}: {ticks:?}");
        assert!(
            ticks[0].contains(",0") && ticks[1].contains(",1"),
            "{ticks:?}"
        );
    }
    for rx in &replies {
        let reach = rx.try_recv().expect("reach once the delivery is whole");
        assert_eq!(reach.socketio, clients);
        assert!(rx.try_recv().is_err(), "one reach per broadcast");
    }
}
