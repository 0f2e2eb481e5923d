//! Socket.IO engine scenarios: client events reaching the application (arguments, acks, binary
//! attachments), acks in both directions (replies, timeouts, disconnects, the pending-ack cap) and
//! socket rooms, on a simulated clock with the harness of `test_support`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::test_support::{ok, one, sio_event, test_config, Frame, H};
use super::*;
use crate::proto::sio::placeholder;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn sio_events_reach_the_app_with_args_ack_and_attachments() {
    let mut h = H::new();
    let (conn, s) = h.sio_connect(Some(Identity::user("alice")));
    let a = h.sio_join(conn, "/admin", Some(Identity::user("alice")));

    h.send(conn, r#"42["chat","hi",{"a":[1,2]}]"#);
    assert_eq!(
        sio_event(h.expect_app()),
        (
            s,
            "/".into(),
            "chat".into(),
            vec![json!("hi"), json!({"a": [1, 2]})],
            vec![],
            None
        )
    );
    h.send(conn, r#"4217["question",1]"#);
    assert_eq!(
        sio_event(h.expect_app()),
        (
            s,
            "/".into(),
            "question".into(),
            vec![json!(1)],
            vec![],
            Some(17)
        )
    );
    // Binary: the text part waits for its attachment.
    h.send(
        conn,
        r#"451-["upload",{"_placeholder":true,"num":0},"name"]"#,
    );
    h.no_app();
    h.send_bin(conn, &[1, 2, 3]);
    assert_eq!(
        sio_event(h.expect_app()),
        (
            s,
            "/".into(),
            "upload".into(),
            vec![placeholder(0), json!("name")],
            vec![vec![1, 2, 3]],
            None
        )
    );
    // Two attachments, a namespace and an ack id; an empty attachment is fine.
    h.send(
        conn,
        r#"452-/admin,9["two",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]"#,
    );
    h.send_bin(conn, &[0xA]);
    h.no_app();
    h.send_bin(conn, &[]);
    assert_eq!(
        sio_event(h.expect_app()),
        (
            a,
            "/admin".into(),
            "two".into(),
            vec![placeholder(1), placeholder(0)],
            vec![vec![0xA], vec![]],
            Some(9)
        )
    );
    // An event for a namespace the client has not joined is ignored, not fatal.
    h.send(conn, r#"42/other,["x"]"#);
    h.no_app();
    assert!(!h.is_closed(conn));
    assert!(h.frames(conn).is_empty());
}

#[test]
fn sio_app_answers_client_acks_text_and_binary() {
    let mut h = H::new();
    let (conn, s) = h.sio_connect(None);
    let a = h.sio_join(conn, "/admin", None);
    h.cmd(Command::SioAck {
        socket: s,
        id: 17,
        args: vec![json!("ok"), json!(2)],
        attachments: vec![],
    });
    assert_eq!(h.texts(conn), vec![r#"4317["ok",2]"#]);
    h.cmd(Command::SioAck {
        socket: s,
        id: 0,
        args: vec![],
        attachments: vec![],
    });
    assert_eq!(h.texts(conn), vec!["430[]"]);
    h.cmd(Command::SioAck {
        socket: s,
        id: 18,
        args: vec![placeholder(0)],
        attachments: vec![vec![9, 9]],
    });
    assert_eq!(
        h.frames(conn),
        vec![
            Frame::Text(r#"461-18[{"_placeholder":true,"num":0}]"#.into()),
            Frame::Binary(vec![9, 9])
        ]
    );
    h.cmd(Command::SioAck {
        socket: a,
        id: 9,
        args: vec![json!("adm")],
        attachments: vec![],
    });
    assert_eq!(h.texts(conn), vec![r#"43/admin,9["adm"]"#]);
    // Server emit with an attachment goes out as BINARY_EVENT.
    h.cmd(Command::SioEmit {
        socket: s,
        event: "file".into(),
        args: vec![json!("f"), placeholder(0)],
        attachments: vec![vec![0, 255]],
        ack: None,
        volatile: false,
        seq: None,
    });
    assert_eq!(
        h.frames(conn),
        vec![
            Frame::Text(r#"451-["file","f",{"_placeholder":true,"num":0}]"#.into()),
            Frame::Binary(vec![0, 255])
        ]
    );
    h.cmd(Command::SioEmit {
        socket: a,
        event: "adm".into(),
        args: vec![],
        attachments: vec![],
        ack: None,
        volatile: false,
        seq: None,
    });
    assert_eq!(h.texts(conn), vec![r#"42/admin,["adm"]"#]);
    // An ack for a socket that is gone is dropped.
    h.cmd(Command::SioAck {
        socket: SocketId(999_999),
        id: 1,
        args: vec![],
        attachments: vec![],
    });
    assert!(h.frames(conn).is_empty());
}

#[test]
fn sio_server_ack_reply_is_ok_and_table_empties() {
    let mut h = H::new();
    let (conn, s) = h.sio_connect(None);
    let rx = h.emit_ack(s, "q", Duration::from_secs(5));
    assert_eq!(h.texts(conn), vec![r#"420["q",1]"#]);
    assert!(h.e.stats().pending_acks > 0);
    assert!(rx.try_recv().is_err());
    h.send(conn, r#"430["a",{"b":2}]"#);
    assert_eq!(
        rx.try_recv().unwrap(),
        one(s, ok(vec![json!("a"), json!({"b": 2})]))
    );
    assert_eq!(h.e.stats().pending_acks, 0);
    h.no_app();
    // A binary reply.
    let rx = h.emit_ack(s, "q", Duration::from_secs(5));
    assert_eq!(h.texts(conn), vec![r#"421["q",1]"#]);
    h.send(conn, r#"461-1[{"_placeholder":true,"num":0}]"#);
    assert!(rx.try_recv().is_err());
    h.send_bin(conn, &[7]);
    assert_eq!(
        rx.try_recv().unwrap(),
        one(
            s,
            AckOutcome::Ok {
                args: vec![placeholder(0)],
                attachments: vec![vec![7]],
            }
        )
    );
    assert_eq!(h.e.stats().pending_acks, 0);
    // The callback form reaches the application as AckComplete.
    let (tx, rx2) = mpsc::channel();
    h.cmd(Command::SioEmit {
        socket: s,
        event: "cb".into(),
        args: vec![],
        attachments: vec![],
        ack: Some((
            Duration::from_secs(5),
            AckReply::Callback(Box::new(move |r| tx.send(r).unwrap())),
        )),
        volatile: false,
        seq: None,
    });
    assert_eq!(h.texts(conn), vec![r#"422["cb"]"#]);
    h.send(conn, "432[true]");
    match h.expect_app() {
        AppEvent::AckComplete { callback, results } => {
            assert_eq!(results, one(s, ok(vec![json!(true)])));
            (callback.0)(results);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rx2.try_recv().unwrap(), one(s, ok(vec![json!(true)])));
    assert_eq!(h.e.stats().pending_acks, 0);
    // In a custom namespace, ids are per socket and carry the namespace.
    let a = h.sio_join(conn, "/admin", None);
    let rx = h.emit_ack(a, "q", Duration::from_secs(5));
    assert_eq!(h.texts(conn), vec![r#"42/admin,0["q",1]"#]);
    h.send(conn, "430[]");
    assert!(
        rx.try_recv().is_err(),
        "an answer on `/` is not an answer on /admin"
    );
    h.send(conn, r#"43/admin,0["x"]"#);
    assert_eq!(rx.try_recv().unwrap(), one(a, ok(vec![json!("x")])));
    assert_eq!(h.e.stats().pending_acks, 0);
}

#[test]
fn sio_server_ack_times_out_and_table_empties() {
    let mut h = H::new();
    let (conn, s) = h.sio_connect(None);
    let rx = h.emit_ack(s, "q", Duration::from_secs(5));
    assert_eq!(h.texts(conn), vec![r#"420["q",1]"#]);
    h.advance(Duration::from_millis(4999));
    assert!(rx.try_recv().is_err());
    h.advance(Duration::from_millis(1));
    assert_eq!(rx.try_recv().unwrap(), one(s, AckOutcome::Timeout));
    assert_eq!(h.e.stats().pending_acks, 0);
    // A late answer is ignored and harmless.
    h.send(conn, r#"430["late"]"#);
    h.no_app();
    assert!(!h.is_closed(conn));
    assert!(rx.try_recv().is_err());
    h.send(conn, r#"42["alive"]"#);
    assert_eq!(sio_event(h.expect_app()).2, "alive");
}

#[test]
fn sio_server_ack_disconnect_mid_wait() {
    // Transport closed.
    let mut h = H::new();
    let (conn, s) = h.sio_connect(None);
    let rx = h.emit_ack(s, "q", Duration::from_secs(5));
    h.close(conn);
    assert_eq!(rx.try_recv().unwrap(), one(s, AckOutcome::Disconnected));
    assert_eq!(h.e.stats().pending_acks, 0);
    match h.expect_app() {
        AppEvent::SioDisconnected { socket, reason, .. } => {
            assert_eq!(socket, s);
            assert_eq!(reason, DisconnectReason::TransportClose);
        }
        other => panic!("{other:?}"),
    }
    // Later emits to the gone socket: Disconnected at once.
    let rx = h.emit_ack(s, "q", Duration::from_secs(5));
    assert_eq!(rx.try_recv().unwrap(), one(s, AckOutcome::Disconnected));
    h.advance(Duration::from_secs(10));
    assert!(rx.try_recv().is_err(), "exactly one answer");
    assert_eq!(h.e.stats().pending_acks, 0);

    // Client leaves the namespace.
    let (conn, s) = h.sio_connect(None);
    let rx = h.emit_ack(s, "q", Duration::from_secs(5));
    assert_eq!(h.texts(conn), vec![r#"420["q",1]"#]);
    h.send(conn, "41");
    assert_eq!(rx.try_recv().unwrap(), one(s, AckOutcome::Disconnected));
    // Server disconnects the socket.
    let s2 = h.sio_join(conn, "/", None);
    let rx = h.emit_ack(s2, "q", Duration::from_secs(5));
    assert_eq!(
        h.texts(conn),
        vec![r#"420["q",1]"#],
        "a new socket, new ack ids"
    );
    h.cmd(Command::SioDisconnect { socket: s2 });
    assert_eq!(rx.try_recv().unwrap(), one(s2, AckOutcome::Disconnected));
    assert_eq!(h.e.stats().pending_acks, 0);
    h.advance(Duration::from_secs(10));
    assert!(rx.try_recv().is_err());
}

#[test]
fn sio_acks_for_unknown_or_answered_ids_are_ignored() {
    let mut h = H::new();
    let (conn, s) = h.sio_connect(None);
    let a = h.sio_join(conn, "/admin", None);
    h.app.clear();
    let rx = h.emit_ack(s, "q", Duration::from_secs(5));
    h.texts(conn);
    // Unknown id, and the right id on the wrong namespace: ignored.
    h.send(conn, "4399[]");
    h.send(conn, "43/admin,0[]");
    h.send(conn, "4318446744073709551615[]");
    assert!(rx.try_recv().is_err());
    assert!(h.e.stats().pending_acks > 0);
    h.send(conn, "430[1]");
    assert_eq!(rx.try_recv().unwrap(), one(s, ok(vec![json!(1)])));
    // Already answered: ignored.
    h.send(conn, "430[2]");
    assert!(rx.try_recv().is_err());
    h.no_app();
    assert!(!h.is_closed(conn));
    assert_eq!(h.e.stats().pending_acks, 0);
    h.send(conn, r#"42/admin,["still"]"#);
    assert_eq!(sio_event(h.expect_app()).0, a);
    assert!(h.frames(conn).is_empty());
}

#[test]
fn sio_pending_ack_cap_overloads() {
    let cfg = Config {
        max_pending_acks: 2,
        ..test_config()
    };
    let mut h = H::with(cfg);
    let (conn, s) = h.sio_connect(None);
    let rx0 = h.emit_ack(s, "q", Duration::from_secs(5));
    let rx1 = h.emit_ack(s, "q", Duration::from_secs(5));
    let rx2 = h.emit_ack(s, "q", Duration::from_secs(5));
    assert_eq!(rx2.try_recv().unwrap(), one(s, AckOutcome::Overloaded));
    // Nothing was sent for the refused one.
    assert_eq!(h.texts(conn), vec![r#"420["q",1]"#, r#"421["q",1]"#]);
    // UserAck is capped the same way.
    let (conn_b, sb) = h.sio_connect(Some(Identity::user("u")));
    let _b0 = h.emit_ack(sb, "q", Duration::from_secs(5));
    let _b1 = h.emit_ack(sb, "q", Duration::from_secs(5));
    h.texts(conn_b);
    let (tx, rxu) = mpsc::channel();
    h.cmd(Command::UserAck {
        user: Identity::user("u"),
        event: "ua".into(),
        data: json!(0),
        timeout: Duration::from_secs(5),
        reply: AckReply::Channel(tx),
    });
    assert_eq!(rxu.try_recv().unwrap(), one(sb, AckOutcome::Overloaded));
    assert!(h.texts(conn_b).is_empty());
    // Answering one frees a slot.
    h.send(conn, "431[]");
    assert_eq!(rx1.try_recv().unwrap(), one(s, ok(vec![])));
    let rx3 = h.emit_ack(s, "q", Duration::from_secs(5));
    assert_eq!(h.texts(conn), vec![r#"422["q",1]"#]);
    h.advance(Duration::from_secs(5));
    assert_eq!(rx0.try_recv().unwrap(), one(s, AckOutcome::Timeout));
    assert_eq!(rx3.try_recv().unwrap(), one(s, AckOutcome::Timeout));
    assert_eq!(h.e.stats().pending_acks, 0);
}

#[test]
fn sio_socket_rooms_reach_members_only() {
    let mut h = H::new();
    let (c1, s1) = h.sio_connect(None);
    let (c2, s2) = h.sio_connect(None);
    let (c3, _) = h.sio_connect(None);
    let a3 = h.sio_join(c3, "/admin", None);
    h.cmd(Command::SioJoin {
        socket: s1,
        room: "r".into(),
        in_main: true,
        hub_added: false,
    });
    h.cmd(Command::SioJoin {
        socket: s1,
        room: "r".into(),
        in_main: true,
        hub_added: false,
    });
    h.cmd(Command::SioJoin {
        socket: a3,
        room: "r".into(),
        in_main: true,
        hub_added: false,
    });
    let emit = |nsp: &str, room: &str| Command::SioEmitToRoom {
        nsp: nsp.into(),
        room: room.into(),
        event: "ev".into(),
        args: vec![json!(1)],
        volatile: false,
    };
    h.take_fresh();
    h.cmd(emit("/", "r"));
    assert_eq!(h.take_fresh(), BTreeSet::from([c1]));
    assert_eq!(
        h.texts(c1),
        vec![r#"42["ev",1]"#],
        "once, though joined twice"
    );
    h.cmd(emit("/admin", "r"));
    assert_eq!(h.take_fresh(), BTreeSet::from([c3]));
    assert_eq!(h.texts(c3), vec![r#"42/admin,["ev",1]"#]);
    // One room model: in the main namespace a unified room broadcast reaches joined sockets too.
    h.bcast(Target::Room("r".into()), Transports::Both, "x", "1");
    assert_eq!(h.take_fresh(), BTreeSet::from([c1]));
    assert_eq!(h.texts(c1), vec![r#"42["x",1]"#]);
    // Leaving.
    h.cmd(Command::SioLeave {
        socket: s1,
        room: "r".into(),
        in_main: true,
    });
    h.cmd(emit("/", "r"));
    assert!(h.take_fresh().is_empty());
    // A member that disconnects is forgotten.
    h.cmd(Command::SioJoin {
        socket: s2,
        room: "q".into(),
        in_main: true,
        hub_added: false,
    });
    h.close(c2);
    h.app.clear();
    h.take_fresh();
    h.cmd(emit("/", "q"));
    assert!(h.take_fresh().is_empty());
    h.cmd(Command::SioJoin {
        socket: s2,
        room: "q".into(),
        in_main: true,
        hub_added: false,
    });
    h.cmd(emit("/", "q"));
    assert!(h.take_fresh().is_empty());
}
