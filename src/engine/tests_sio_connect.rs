//! Socket.IO engine scenarios: connecting to namespaces (accepted, with auth, rejected, unknown,
//! timed out) and disconnecting (by the client from one namespace, by the server), on a simulated
//! clock with the harness of `test_support`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::test_support::{sio_event, test_config, Frame, H, SIO_WS};
use super::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn sio_connect_accepted_sends_sid_and_reports_identity() {
    let mut h = H::new();
    let (conn, eio_sid) = h.ws_open(SIO_WS);
    h.no_app();
    h.send(conn, "40");
    let (request, info) = match h.expect_app() {
        AppEvent::SioConnectRequest {
            request,
            nsp,
            auth,
            info,
        } => {
            assert_eq!(&*nsp, "/");
            // No CONNECT payload: the application sees `{}`, as socket.io's `handshake.auth`.
            assert_eq!(auth, json!({}));
            (request, info)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(info.path(), "/socket.io/");
    assert_eq!(info.query("EIO").as_deref(), Some("4"));
    h.no_app();
    let alice = Identity::new("acme", "alice");
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Ok(Some(alice.clone())),
    });
    let t = h.texts(conn);
    assert_eq!(t.len(), 1);
    let body: Value = serde_json::from_str(t[0].strip_prefix("40").unwrap()).unwrap();
    let sid = body["sid"].as_str().unwrap().to_string();
    assert_eq!(t[0], format!("40{{\"sid\":\"{sid}\"}}"));
    assert_eq!(sid.len(), 20);
    assert!(sid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_ne!(sid, eio_sid, "the Socket.IO id is not the Engine.IO id");
    let socket = match h.expect_app() {
        AppEvent::SioConnected {
            socket,
            nsp,
            sid: s,
            identity,
            auth,
            recovered,
        } => {
            assert!(!recovered, "recovery is off");
            assert_eq!(&*nsp, "/");
            assert_eq!(&*s, sid);
            assert_eq!(identity, Some(alice.clone()));
            assert_eq!(auth, json!({}));
            socket
        }
        other => panic!("{other:?}"),
    };
    h.no_app();
    let st = h.e.stats();
    assert_eq!(
        (
            st.sio_sockets,
            st.index_recipients,
            st.index_users,
            st.index_tenants
        ),
        (1, 1, 1, 1)
    );
    // A second CONNECT to the same namespace is ignored.
    h.send(conn, "40");
    h.no_app();
    assert!(h.frames(conn).is_empty());
    // The identity is indexed: a user broadcast reaches the socket.
    h.bcast(Target::User(alice), Transports::Both, "hello", r#"{"a":1}"#);
    assert_eq!(h.texts(conn), vec![r#"42["hello",{"a":1}]"#]);
    // And the socket can be addressed directly.
    h.cmd(Command::SioEmit {
        socket,
        event: "direct".into(),
        args: vec![json!("x"), json!(null)],
        attachments: Vec::new(),
        ack: None,
        volatile: false,
        seq: None,
    });
    assert_eq!(h.texts(conn), vec![r#"42["direct","x",null]"#]);
}

#[test]
fn sio_connect_with_auth_to_custom_namespace() {
    let mut h = H::new();
    let (conn, _) = h.ws_open(SIO_WS);
    h.send(conn, r#"40/admin,{"token":"abc"}"#);
    let request = match h.expect_app() {
        AppEvent::SioConnectRequest {
            request, nsp, auth, ..
        } => {
            assert_eq!(&*nsp, "/admin");
            assert_eq!(auth, json!({"token": "abc"}));
            request
        }
        other => panic!("{other:?}"),
    };
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Ok(Some(Identity::user("root"))),
    });
    let t = h.texts(conn);
    assert_eq!(t.len(), 1);
    assert!(t[0].starts_with("40/admin,{\"sid\":\""), "{}", t[0]);
    match h.expect_app() {
        AppEvent::SioConnected { nsp, auth, .. } => {
            assert_eq!(&*nsp, "/admin");
            assert_eq!(auth, json!({"token": "abc"}));
        }
        other => panic!("{other:?}"),
    }
    // Only main-namespace sockets are broadcast recipients.
    let st = h.e.stats();
    assert_eq!((st.sio_sockets, st.index_recipients), (1, 0));
    h.bcast(Target::All, Transports::Both, "x", "1");
    assert!(h.frames(conn).is_empty());
}

#[test]
fn sio_connect_rejected_sends_connect_error_and_client_may_retry() {
    let mut h = H::new();
    let (conn, _) = h.ws_open(SIO_WS);
    h.send(conn, r#"40{"token":"bad"}"#);
    let AppEvent::SioConnectRequest { request, .. } = h.expect_app() else {
        panic!()
    };
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Err(Rejection::unauthorized("bad token").with_data(json!({"code": 42}))),
    });
    let t = h.texts(conn);
    assert_eq!(t.len(), 1);
    let body: Value = serde_json::from_str(t[0].strip_prefix("44").unwrap()).unwrap();
    assert_eq!(body, json!({"message": "bad token", "data": {"code": 42}}));
    h.no_app();
    assert!(!h.is_closed(conn));
    assert_eq!(h.e.stats().sio_sockets, 0);
    assert_eq!(h.e.stats().index_recipients, 0);
    // Without data: exactly `{"message":..}`.
    h.send(conn, "40/admin,");
    let AppEvent::SioConnectRequest { request, .. } = h.expect_app() else {
        panic!()
    };
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Err(Rejection::forbidden("nope")),
    });
    assert_eq!(h.texts(conn), vec![r#"44/admin,{"message":"nope"}"#]);
    // A decision for an already decided request does nothing.
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Ok(None),
    });
    assert!(h.frames(conn).is_empty());
    h.no_app();
    // The client may try again on the same connection.
    let s = h.sio_join(conn, "/", Some(Identity::user("bob")));
    assert_eq!(h.e.stats().sio_sockets, 1);
    h.send(conn, r#"42["after"]"#);
    assert_eq!(sio_event(h.expect_app()).0, s);
}

#[test]
fn sio_unknown_namespace_gets_invalid_namespace() {
    let mut h = H::new();
    let (conn, _) = h.ws_open(SIO_WS);
    h.send(conn, "40/random,");
    assert_eq!(
        h.texts(conn),
        vec![r#"44/random,{"message":"Invalid namespace"}"#]
    );
    h.no_app();
    assert!(!h.is_closed(conn));
    // Without the trailing comma, the same answer.
    h.send(conn, "40/random");
    assert_eq!(
        h.texts(conn),
        vec![r#"44/random,{"message":"Invalid namespace"}"#]
    );
    h.no_app();
    // The main namespace still works.
    h.sio_join(conn, "/", None);
}

#[test]
fn sio_connect_timeout_closes_sessions_without_a_namespace() {
    let cfg = Config {
        connect_timeout: Duration::from_secs(5),
        ..test_config()
    };
    let mut h = H::with(cfg);
    let (idle, _) = h.ws_open(SIO_WS);
    let (pending, _) = h.ws_open(SIO_WS);
    h.send(pending, "40");
    let AppEvent::SioConnectRequest { request, .. } = h.expect_app() else {
        panic!()
    };
    let (joined, _) = h.sio_connect(None);
    h.advance(Duration::from_millis(4999));
    assert!(!h.is_closed(idle) && !h.is_closed(pending) && !h.is_closed(joined));
    h.advance(Duration::from_millis(1));
    assert!(h.is_closed(idle) && h.is_closed(pending));
    assert_eq!(h.frames(idle), vec![Frame::Close(1000)]);
    assert_eq!(h.frames(pending), vec![Frame::Close(1000)]);
    assert!(!h.is_closed(joined));
    assert_eq!(h.e.stats().eio_sessions, 1);
    h.no_app();
    // A late decision for the closed session does nothing.
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Ok(None),
    });
    h.no_app();
    assert_eq!(h.e.stats().sio_sockets, 1);
    // Much later, the connected session is still there.
    h.advance(Duration::from_secs(60));
    assert!(!h.is_closed(joined));
}

#[test]
fn sio_client_disconnect_of_one_namespace_keeps_the_other() {
    let mut h = H::new();
    let (conn, s) = h.sio_connect(Some(Identity::user("alice")));
    let a = h.sio_join(conn, "/admin", Some(Identity::user("alice")));
    h.send(conn, "41/admin,");
    match h.expect_app() {
        AppEvent::SioDisconnected {
            socket,
            nsp,
            reason,
        } => {
            assert_eq!((socket, &*nsp), (a, "/admin"));
            assert_eq!(reason, DisconnectReason::ClientDisconnect);
        }
        other => panic!("{other:?}"),
    }
    h.no_app();
    assert!(!h.is_closed(conn));
    assert!(h.frames(conn).is_empty());
    assert_eq!(h.e.stats().sio_sockets, 1);
    h.send(conn, r#"42/admin,["gone"]"#);
    h.no_app();
    h.send(conn, r#"42["here"]"#);
    assert_eq!(sio_event(h.expect_app()).0, s);
    h.bcast(
        Target::User(Identity::user("alice")),
        Transports::Both,
        "b",
        "1",
    );
    assert_eq!(h.texts(conn), vec![r#"42["b",1]"#]);
    // And /admin can be joined again.
    let a2 = h.sio_join(conn, "/admin", None);
    assert_ne!(a2, a);
    // Leaving `/` keeps /admin and removes the index entry.
    h.send(conn, "41");
    assert!(matches!(
        h.expect_app(),
        AppEvent::SioDisconnected { socket, .. } if socket == s
    ));
    assert_eq!(h.e.stats().index_recipients, 0);
    h.send(conn, r#"42/admin,["x"]"#);
    assert_eq!(sio_event(h.expect_app()).0, a2);
}

#[test]
fn sio_server_disconnect_sends_41() {
    let mut h = H::new();
    let (conn, s) = h.sio_connect(Some(Identity::user("alice")));
    let a = h.sio_join(conn, "/admin", None);
    h.cmd(Command::SioDisconnect { socket: a });
    assert_eq!(h.texts(conn), vec!["41/admin,"]);
    match h.expect_app() {
        AppEvent::SioDisconnected { socket, reason, .. } => {
            assert_eq!(socket, a);
            assert_eq!(reason, DisconnectReason::ServerDisconnect);
        }
        other => panic!("{other:?}"),
    }
    h.cmd(Command::SioDisconnect { socket: s });
    assert_eq!(h.texts(conn), vec!["41"]);
    assert!(matches!(
        h.expect_app(),
        AppEvent::SioDisconnected { socket, reason: DisconnectReason::ServerDisconnect, .. } if socket == s
    ));
    // Idempotent.
    h.cmd(Command::SioDisconnect { socket: s });
    assert!(h.frames(conn).is_empty());
    h.no_app();
    let st = h.e.stats();
    assert_eq!(
        (st.sio_sockets, st.index_recipients, st.index_users),
        (0, 0, 0)
    );
    assert_eq!(st.eio_sessions, 1);
    h.bcast(Target::All, Transports::Both, "x", "1");
    assert!(h.frames(conn).is_empty());
    // Events for the left namespaces are ignored.
    h.send(conn, r#"42["x"]"#);
    h.no_app();
}
