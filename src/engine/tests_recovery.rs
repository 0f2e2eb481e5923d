//! Socket.IO connection state recovery and volatile emits, on the simulated clock: recovery
//! inside and outside the window, an offset trimmed from the history, two reconnects racing with
//! one `pid`, room events of the gap (for rooms joined and left), another identity presenting a
//! valid `pid`, hostile `pid`s and offsets, and volatile events that are neither stamped nor
//! replayed. Also the one room model with recovery (a parked socket's `Socket::join` rooms).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::test_support::{test_config, H, SIO_WS};
use super::*;
use crate::config::Recovery;
use serde_json::json;
use std::time::Duration;

const WINDOW: Duration = Duration::from_secs(120);

fn config() -> Config {
    Config {
        connection_state_recovery: Some(Recovery::default()),
        ..test_config()
    }
}

fn alice() -> Identity {
    Identity::new("acme", "alice")
}

/// A socket of `/` as the client sees it.
struct Client {
    conn: ConnId,
    socket: SocketId,
    sid: String,
    pid: String,
    recovered: bool,
}

/// Opens a WebSocket, sends `40<payload>`, lets the hook say `identity`, and reads the CONNECT
/// reply (every later frame stays for the test).
fn connect(h: &mut H, payload: &str, identity: Option<Identity>) -> Client {
    let (conn, _) = h.ws_open(SIO_WS);
    h.app.clear();
    h.send(conn, &format!("40{payload}"));
    let request = match h.expect_app() {
        AppEvent::SioConnectRequest { request, .. } => request,
        other => panic!("expected SioConnectRequest, got {other:?}"),
    };
    decide(h, conn, request, identity)
}

/// Answers a pending CONNECT and reads the reply.
fn decide(h: &mut H, conn: ConnId, request: u64, identity: Option<Identity>) -> Client {
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Ok(identity.clone()),
    });
    connected(h, conn, identity)
}

/// Reads the CONNECT reply on `conn` and the matching `SioConnected` event.
fn connected(h: &mut H, conn: ConnId, identity: Option<Identity>) -> Client {
    let first = h.next_text(conn);
    let body: Value = serde_json::from_str(first.strip_prefix("40").expect("CONNECT")).unwrap();
    let sid = body["sid"].as_str().unwrap().to_string();
    let pid = body["pid"]
        .as_str()
        .expect("a pid with recovery on")
        .to_string();
    assert_eq!(body.as_object().unwrap().len(), 2, "{first}");
    let (socket, recovered) = loop {
        match h.expect_app() {
            AppEvent::SioConnected {
                socket,
                sid: s,
                identity: i,
                recovered,
                ..
            } => {
                assert_eq!(&*s, sid);
                assert_eq!(i, identity);
                break (socket, recovered);
            }
            AppEvent::SioDisconnected { .. } => continue,
            other => panic!("expected SioConnected, got {other:?}"),
        }
    };
    Client {
        conn,
        socket,
        sid,
        pid,
        recovered,
    }
}

fn reconnect(h: &mut H, old: &Client, offset: Option<&str>, identity: Option<Identity>) -> Client {
    let payload = match offset {
        Some(o) => json!({"pid": old.pid, "offset": o}),
        None => json!({"pid": old.pid}),
    };
    connect(h, &payload.to_string(), identity)
}

/// The offset a client keeps: the last argument of the last event it processed.
fn last_offset(text: &str) -> String {
    let v: Value = serde_json::from_str(text.strip_prefix("42").unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

fn bcast(h: &mut H, target: Target, event: &str) {
    h.bcast(target, Transports::Both, event, "1");
}

#[test]
fn recovered_within_the_window_with_every_missed_event_in_order_once() {
    let mut h = H::with(config());
    let a = connect(&mut h, "", Some(alice()));
    assert!(!a.recovered);
    // The user's room and a room the socket joined itself.
    h.cmd(Command::JoinRoomReply {
        user: alice(),
        room: "team".into(),
        reply: std::sync::mpsc::channel().0,
    });
    h.cmd(Command::SioJoin {
        socket: a.socket,
        room: "chat".into(),
        in_main: true,
        hub_added: false,
    });
    bcast(&mut h, Target::User(alice()), "seen");
    let t = h.texts(a.conn);
    assert_eq!(t, vec![format!(r#"42["seen",1,"{}"]"#, h.id(1))]);
    let offset = last_offset(&t[0]);
    // Sent to it, but lost in flight with the connection: replayed too.
    bcast(&mut h, Target::All, "in-flight");
    h.close(a.conn);
    assert_eq!(h.e.stats().sio_sockets, 0);
    // The gap.
    bcast(&mut h, Target::User(alice()), "to-user");
    bcast(&mut h, Target::Room("team".into()), "to-team");
    bcast(&mut h, Target::Room("chat".into()), "to-chat");
    bcast(&mut h, Target::Tenant("acme".into()), "to-tenant");
    bcast(&mut h, Target::User(Identity::new("acme", "bob")), "to-bob");
    bcast(&mut h, Target::Room("other".into()), "to-other");
    bcast(&mut h, Target::Tenant("globex".into()), "to-globex");
    h.bcast(Target::All, Transports::Sse, "sse-only", "1");
    bcast(&mut h, Target::All, "to-all");
    h.advance(WINDOW - Duration::from_millis(1));

    let b = reconnect(&mut h, &a, Some(&offset), Some(alice()));
    assert!(b.recovered);
    assert_eq!(
        (b.sid.as_str(), b.pid.as_str()),
        (a.sid.as_str(), a.pid.as_str())
    );
    assert_eq!(b.socket, a.socket, "the same socket again");
    let names: Vec<String> = h
        .texts(b.conn)
        .iter()
        .map(|t| {
            let v: Value = serde_json::from_str(t.strip_prefix("42").unwrap()).unwrap();
            v[0].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "in-flight",
            "to-user",
            "to-team",
            "to-chat",
            "to-tenant",
            "to-all"
        ]
    );
    // Live again, in its rooms, and nothing replayed twice.
    bcast(&mut h, Target::Room("chat".into()), "live");
    let t = h.texts(b.conn);
    assert_eq!(t.len(), 1);
    assert!(t[0].starts_with(r#"42["live",1,""#), "{t:?}");
    let inv = h.e.index.check_invariants();
    assert!(inv.is_ok(), "{inv:?}");
    assert_eq!(h.e.hub.lock().parked.len(), 0);
}

#[test]
fn outside_the_window_a_fresh_session() {
    let mut h = H::with(config());
    let a = connect(&mut h, "", Some(alice()));
    h.cmd(Command::SioJoin {
        socket: a.socket,
        room: "chat".into(),
        in_main: true,
        hub_added: false,
    });
    h.close(a.conn);
    assert_eq!(
        h.e.hub.lock().rooms.sizes().3,
        1,
        "the parked socket keeps its room"
    );
    bcast(&mut h, Target::User(alice()), "missed");
    h.advance(WINDOW + Duration::from_millis(1));
    assert_eq!(h.e.hub.lock().parked.len(), 0);
    assert_eq!(
        h.e.stats().index_rooms,
        0,
        "its room is left when the window ends"
    );
    let b = reconnect(&mut h, &a, None, Some(alice()));
    assert!(!b.recovered);
    assert_ne!(b.sid, a.sid);
    assert_ne!(b.pid, a.pid);
    assert!(h.texts(b.conn).is_empty(), "no replay into a fresh session");
    let inv = h.e.index.check_invariants();
    assert!(inv.is_ok(), "{inv:?}");
}

#[test]
fn an_offset_trimmed_from_the_history_gives_a_fresh_session_never_a_partial_replay() {
    let mut h = H::with(Config {
        sse_history_events: 3,
        ..config()
    });
    let a = connect(&mut h, "", Some(alice()));
    bcast(&mut h, Target::User(alice()), "seen");
    let offset = last_offset(&h.texts(a.conn)[0]);
    h.close(a.conn);
    for i in 0..5 {
        bcast(&mut h, Target::User(alice()), &format!("gap{i}"));
    }
    let b = reconnect(&mut h, &a, Some(&offset), Some(alice()));
    assert!(!b.recovered);
    assert!(h.texts(b.conn).is_empty());
    // The parked socket is gone for good: its pid does not work a second time either.
    let c = reconnect(&mut h, &a, Some(&offset), Some(alice()));
    assert!(!c.recovered);
}

#[test]
fn no_offset_replays_everything_since_the_socket_connected() {
    // A client that processed no event yet sends only its pid (socket.io would not recover it).
    let mut h = H::with(config());
    bcast(&mut h, Target::User(alice()), "before");
    let a = connect(&mut h, "", Some(alice()));
    bcast(&mut h, Target::User(alice()), "lost");
    h.close(a.conn);
    let b = reconnect(&mut h, &a, None, Some(alice()));
    assert!(b.recovered);
    let t = h.texts(b.conn);
    assert_eq!(t, vec![format!(r#"42["lost",1,"{}"]"#, h.id(2))]);
}

#[test]
fn an_old_offset_never_replays_what_came_before_the_socket() {
    // The client keeps its last offset across a fresh session: it must not bring back events of
    // the earlier session.
    let mut h = H::with(config());
    let first = connect(&mut h, "", Some(alice()));
    bcast(&mut h, Target::User(alice()), "old");
    let offset = last_offset(&h.texts(first.conn)[0]);
    bcast(
        &mut h,
        Target::User(alice()),
        "delivered-to-the-first-session",
    );
    h.texts(first.conn);
    h.cmd(Command::SioDisconnect {
        socket: first.socket,
    });
    h.close(first.conn);
    let second = connect(&mut h, "", Some(alice()));
    bcast(&mut h, Target::User(alice()), "missed");
    h.close(second.conn);
    let back = reconnect(&mut h, &second, Some(&offset), Some(alice()));
    assert!(back.recovered);
    let t = h.texts(back.conn);
    assert_eq!(t.len(), 1, "{t:?}");
    assert!(t[0].starts_with(r#"42["missed""#));
}

#[test]
fn two_reconnects_racing_with_one_pid_one_wins_the_other_is_fresh() {
    let mut h = H::with(config());
    let a = connect(&mut h, "", Some(alice()));
    h.close(a.conn);
    bcast(&mut h, Target::User(alice()), "gap");
    let payload = json!({"pid": a.pid}).to_string();
    let mut pending = Vec::new();
    for _ in 0..2 {
        let (conn, _) = h.ws_open(SIO_WS);
        h.app.clear();
        h.send(conn, &format!("40{payload}"));
        match h.expect_app() {
            AppEvent::SioConnectRequest { request, .. } => pending.push((conn, request)),
            other => panic!("{other:?}"),
        }
    }
    // The hook answers the second first: it still loses, the first CONNECT claimed the socket.
    let (c2, r2) = pending[1];
    let second = decide(&mut h, c2, r2, Some(alice()));
    let (c1, r1) = pending[0];
    let first = decide(&mut h, c1, r1, Some(alice()));
    assert!(first.recovered && !second.recovered);
    assert_eq!(first.sid, a.sid);
    assert_ne!(second.pid, a.pid);
    assert_eq!(h.texts(first.conn).len(), 1, "the gap, once");
    assert!(h.texts(second.conn).is_empty());
}

#[test]
fn a_room_left_before_the_disconnect_is_not_replayed() {
    let mut h = H::with(config());
    let a = connect(&mut h, "", Some(alice()));
    h.cmd(Command::SioJoin {
        socket: a.socket,
        room: "left".into(),
        in_main: true,
        hub_added: false,
    });
    h.cmd(Command::SioLeave {
        socket: a.socket,
        room: "left".into(),
        in_main: true,
    });
    h.cmd(Command::JoinRoomReply {
        user: alice(),
        room: "user-left".into(),
        reply: std::sync::mpsc::channel().0,
    });
    h.cmd(Command::LeaveRoom {
        user: alice(),
        room: "user-left".into(),
    });
    h.close(a.conn);
    bcast(&mut h, Target::Room("left".into()), "x");
    bcast(&mut h, Target::Room("user-left".into()), "y");
    bcast(&mut h, Target::User(alice()), "sentinel");
    let b = reconnect(&mut h, &a, None, Some(alice()));
    assert!(b.recovered);
    let t = h.texts(b.conn);
    assert_eq!(t.len(), 1, "{t:?}");
    assert!(t[0].starts_with(r#"42["sentinel""#));
}

#[test]
fn another_identity_with_a_valid_pid_gets_a_fresh_session_and_no_foreign_event() {
    let mut h = H::with(config());
    let a = connect(&mut h, "", Some(alice()));
    h.close(a.conn);
    bcast(&mut h, Target::User(alice()), "private");
    let mallory = Identity::new("acme", "mallory");
    let m = reconnect(&mut h, &a, None, Some(mallory.clone()));
    assert!(!m.recovered);
    assert_ne!(m.sid, a.sid);
    assert!(h.texts(m.conn).is_empty(), "nothing of alice's");
    // An anonymous connection with the pid: the same.
    let anon = reconnect(&mut h, &a, None, None);
    assert!(!anon.recovered);
    assert!(h.texts(anon.conn).is_empty());
    // A refused CONNECT neither: and the real client can still come back.
    let (conn, _) = h.ws_open(SIO_WS);
    h.app.clear();
    h.send(conn, &format!("40{}", json!({"pid": a.pid})));
    let AppEvent::SioConnectRequest { request, .. } = h.expect_app() else {
        panic!("expected a connect request")
    };
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Err(Rejection::unauthorized("no")),
    });
    assert!(h.texts(conn)[0].starts_with("44{"));
    let back = reconnect(&mut h, &a, None, Some(alice()));
    assert!(back.recovered);
    assert_eq!(h.texts(back.conn).len(), 1);
}

#[test]
fn skip_authentication_restores_on_the_pid_alone() {
    let mut h = H::with(Config {
        connection_state_recovery: Some(Recovery {
            skip_authentication: true,
            ..Recovery::default()
        }),
        ..test_config()
    });
    let a = connect(&mut h, "", Some(alice()));
    h.close(a.conn);
    bcast(&mut h, Target::User(alice()), "gap");
    let (conn, _) = h.ws_open(SIO_WS);
    h.app.clear();
    h.send(conn, &format!("40{}", json!({"pid": a.pid})));
    // No question to the hook.
    let b = connected(&mut h, conn, Some(alice()));
    assert!(b.recovered);
    assert_eq!(h.texts(conn).len(), 1);
}

#[test]
fn only_recoverable_reasons_park_the_socket() {
    // A client's own disconnect and a server-side disconnect end the session for good.
    let mut h = H::with(config());
    let a = connect(&mut h, "", Some(alice()));
    h.send(a.conn, "41");
    assert_eq!(h.e.hub.lock().parked.len(), 0);
    let b = reconnect(&mut h, &a, None, Some(alice()));
    assert!(!b.recovered);
    h.cmd(Command::SioDisconnect { socket: b.socket });
    assert_eq!(h.e.hub.lock().parked.len(), 0);
    let c = reconnect(&mut h, &b, None, Some(alice()));
    assert!(!c.recovered);
    // A forced close of the connection (Socket::close_connection) is recoverable.
    h.cmd(Command::SioCloseConnection { socket: c.socket });
    assert_eq!(h.e.hub.lock().parked.len(), 1);
}

#[test]
fn hostile_pids_and_offsets_give_fresh_sessions() {
    let mut h = H::with(config());
    let a = connect(&mut h, "", Some(alice()));
    bcast(&mut h, Target::User(alice()), "seen");
    h.close(a.conn);
    let other_epoch = format!("{}:1", h.e.hub.epoch() + 1);
    let ahead = h.id(99);
    let huge = "9".repeat(100_000);
    let payloads = [
        json!({"pid": "x".repeat(100_000)}),
        json!({"pid": 12345}),
        json!({"pid": null, "offset": "1:1"}),
        json!({"pid": [a.pid.clone()]}),
        json!({"pid": a.pid.clone(), "offset": "abc"}),
        json!({"pid": a.pid.clone(), "offset": other_epoch}),
        json!({"pid": a.pid.clone(), "offset": ahead}),
        json!({"pid": a.pid.clone(), "offset": huge}),
        json!({"pid": a.pid.clone(), "offset": 7}),
    ];
    for (i, p) in payloads.iter().enumerate() {
        let c = connect(&mut h, &p.to_string(), Some(alice()));
        assert!(!c.recovered, "payload {i}");
        assert!(h.texts(c.conn).is_empty(), "payload {i}");
        assert_ne!(c.sid, a.sid, "payload {i}");
    }
    let inv = h.e.index.check_invariants();
    assert!(inv.is_ok(), "{inv:?}");
}

#[test]
fn a_pid_of_the_main_namespace_does_nothing_in_another() {
    let mut h = H::with(config());
    let a = connect(&mut h, "", Some(alice()));
    h.close(a.conn);
    let (conn, _) = h.ws_open(SIO_WS);
    h.app.clear();
    h.send(conn, &format!("40/admin,{}", json!({"pid": a.pid})));
    let AppEvent::SioConnectRequest { request, .. } = h.expect_app() else {
        panic!("expected a connect request")
    };
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Ok(Some(alice())),
    });
    let t = h.texts(conn);
    assert!(t[0].starts_with("40/admin,{\"sid\":"), "{t:?}");
    assert!(!t[0].contains("pid"), "recovery is for the main namespace");
    assert_eq!(
        h.e.hub.lock().parked.len(),
        1,
        "still waiting for its client"
    );
}

#[test]
fn a_pid_used_twice_recovers_once() {
    let mut h = H::with(config());
    let a = connect(&mut h, "", Some(alice()));
    h.close(a.conn);
    let b = reconnect(&mut h, &a, None, Some(alice()));
    assert!(b.recovered);
    // Replayed while the recovered socket is live: a fresh session.
    let c = reconnect(&mut h, &a, None, Some(alice()));
    assert!(!c.recovered);
    assert_ne!(c.sid, a.sid);
}

#[test]
fn direct_emits_are_stamped_and_replayed_acked_ones_are_not() {
    let mut h = H::with(config());
    let a = connect(&mut h, "", Some(alice()));
    h.cmd(Command::SioEmit {
        socket: a.socket,
        event: "direct".into(),
        args: vec![json!("x")],
        attachments: vec![],
        ack: None,
        volatile: false,
        seq: None,
    });
    let t = h.texts(a.conn);
    assert_eq!(t, vec![format!(r#"42["direct","x","{}"]"#, h.id(1))]);
    let _rx = h.emit_ack(a.socket, "asked", Duration::from_secs(5));
    let t = h.texts(a.conn);
    assert_eq!(
        t,
        vec![r#"420["asked",1]"#.to_string()],
        "no offset with an ack"
    );
    h.close(a.conn);
    let b = reconnect(&mut h, &a, None, Some(alice()));
    assert!(b.recovered);
    assert_eq!(
        h.texts(b.conn),
        vec![format!(r#"42["direct","x","{}"]"#, h.id(1))]
    );
}

#[test]
fn sse_ids_and_socket_io_offsets_are_one_sequence() {
    let mut h = H::with(config());
    let a = connect(&mut h, "", Some(alice()));
    let (sse, _) = h.sse_open(Some(alice()), None);
    bcast(&mut h, Target::User(alice()), "both");
    let ev = h.sse_events(sse);
    assert_eq!(ev.len(), 1);
    assert_eq!(last_offset(&h.texts(a.conn)[0]), ev[0].last_event_id);
    // And an SSE stream resumes from the same history.
    h.close(sse);
    bcast(&mut h, Target::User(alice()), "gap");
    let (sse2, _) = h.sse_open(Some(alice()), Some(&ev[0].last_event_id));
    let replayed = h.sse_events(sse2);
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].event, "gap");
}

#[test]
fn volatile_events_are_neither_stamped_nor_replayed_and_dropped_when_backlogged() {
    let mut h = H::with(config());
    let a = connect(&mut h, "", Some(alice()));
    let (sse, _) = h.sse_open(Some(alice()), None);
    let volatile = |h: &mut H, event: &str| {
        h.cmd(Command::Broadcast {
            target: Target::User(alice()),
            transports: Transports::Both,
            event: Arc::from(event),
            data: Arc::from("1"),
            volatile: true,
            reply: None,
        });
    };
    volatile(&mut h, "v1");
    assert_eq!(h.texts(a.conn), vec![r#"42["v1",1]"#.to_string()]);
    let ev = h.sse_events(sse);
    assert_eq!(
        (ev[0].event.as_str(), ev[0].last_event_id.as_str()),
        ("v1", "")
    );
    assert_eq!(h.e.stats().sse_history, 0, "never kept");
    // Past the low-water mark io drops them; normal events still go.
    h.backlogged.insert(a.conn);
    h.backlogged.insert(sse);
    volatile(&mut h, "v2");
    assert_eq!(h.volatile_dropped, 2);
    assert!(h.texts(a.conn).is_empty());
    bcast(&mut h, Target::User(alice()), "normal");
    assert_eq!(h.texts(a.conn).len(), 1);
    h.backlogged.clear();
    // A socket's volatile emit: no offset either.
    h.cmd(Command::SioEmit {
        socket: a.socket,
        event: "v3".into(),
        args: vec![],
        attachments: vec![],
        ack: None,
        volatile: true,
        seq: None,
    });
    assert_eq!(h.texts(a.conn), vec![r#"42["v3"]"#.to_string()]);
    // Nothing volatile comes back with a recovery.
    h.close(a.conn);
    volatile(&mut h, "v4");
    let b = reconnect(&mut h, &a, None, Some(alice()));
    assert!(b.recovered);
    let t = h.texts(b.conn);
    assert_eq!(t.len(), 1, "only the normal event: {t:?}");
    assert!(t[0].starts_with(r#"42["normal""#));
}

#[test]
fn volatile_on_polling_is_dropped_past_the_low_water_mark() {
    let mut h = H::with(Config {
        volatile_low_water: 40,
        ..test_config()
    });
    let get = |sid: &str| {
        format!("GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: t\r\n\r\n")
    };
    let (_, open) = h.http(
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: t\r\n\r\n",
        b"",
    );
    let body = &open[open.find("\r\n\r\n").unwrap() + 4..];
    let handshake: Value = serde_json::from_str(body.strip_prefix('0').unwrap()).unwrap();
    let sid = handshake["sid"].as_str().unwrap().to_string();
    let post = format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n"
    );
    h.app.clear();
    h.http(&post, b"40");
    let AppEvent::SioConnectRequest { request, .. } = h.expect_app() else {
        panic!("expected a connect request")
    };
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Ok(Some(alice())),
    });
    let (c, _) = h.http(&get(&sid), b"");
    assert!(
        h.written(c).ends_with("}"),
        "the CONNECT reply: {}",
        h.written(c)
    );
    let volatile = |h: &mut H, event: &str| {
        h.cmd(Command::Broadcast {
            target: Target::User(alice()),
            transports: Transports::SocketIo,
            event: Arc::from(event),
            data: Arc::from("1"),
            volatile: true,
            reply: None,
        });
    };
    // No poll parked: the events wait in the session's buffer. Below the mark, kept.
    volatile(&mut h, "v1");
    // Past it (two normal events of ~25 bytes each), dropped.
    bcast(&mut h, Target::User(alice()), "normal-1");
    bcast(&mut h, Target::User(alice()), "normal-2");
    volatile(&mut h, "v2");
    let (c, _) = h.http(&get(&sid), b"");
    let payload = h.written(c);
    assert!(payload.contains(r#"42["v1",1]"#), "{payload}");
    assert!(payload.contains(r#"42["normal-1",1]"#), "{payload}");
    assert!(payload.contains(r#"42["normal-2",1]"#), "{payload}");
    assert!(
        !payload.contains("v2"),
        "dropped past the low-water mark: {payload}"
    );
}
