//! SSE engine scenarios: rejected and accepted streams, resume with `Last-Event-ID`, history
//! expiry by count and age, heartbeats, room replay, and `sse_send` / close.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::test_support::{data_of, test_config, H};
use super::*;
use crate::proto::sse::ParsedEvent;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn sse_rejected_gets_401_or_403_and_no_stream() {
    for (rejection, status) in [
        (Rejection::unauthorized("no token"), "401 Unauthorized"),
        (Rejection::forbidden("no token"), "403 Forbidden"),
    ] {
        let mut h = H::new();
        let (conn, request, info) =
            h.sse_get("/events?token=bad", "Cookie: session=abc; theme=dark\r\n");
        assert_eq!(info.path(), "/events");
        assert_eq!(info.query("token").as_deref(), Some("bad"));
        assert_eq!(info.cookie("session").as_deref(), Some("abc"));
        assert!(!h.out.contains_key(&conn), "nothing before the decision");
        h.cmd(Command::SseDecision {
            request,
            decision: Err(rejection),
        });
        let resp = String::from_utf8(h.out[&conn].clone()).unwrap();
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{resp}"
        );
        assert!(resp.contains("Connection: close\r\n"));
        assert!(resp.ends_with("\r\n\r\nno token"));
        assert!(!resp.contains("text/event-stream"));
        assert_eq!(h.done.get(&conn), Some(&false));
        assert!(!h.sse.contains_key(&conn), "no StartStream");
        assert!(h.is_closed(conn));
        h.no_app();
        let st = h.e.stats();
        assert_eq!((st.sse_streams, st.index_recipients), (0, 0));
        h.take_fresh();
        h.bcast(Target::All, Transports::Both, "x", "1");
        assert!(h.take_fresh().is_empty());
    }
    // A client that leaves before the decision: the decision is dropped.
    let mut h = H::new();
    let (conn, request, _) = h.sse_get("/events", "");
    h.close(conn);
    h.cmd(Command::SseDecision {
        request,
        decision: Ok(Some(Identity::user("a"))),
    });
    assert!(!h.out.contains_key(&conn));
    h.no_app();
    assert_eq!(h.e.stats().sse_streams, 0);
}

#[test]
fn sse_accepted_stream_head_retry_and_ids() {
    let mut h = H::new();
    let (conn, request, _) = h.sse_get("/events", "");
    let alice = Identity::new("t", "alice");
    let stream = h.sse_accept(conn, request, Some(alice.clone()));
    let raw = String::from_utf8(h.out[&conn].clone()).unwrap();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
                Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n";
    assert!(raw.starts_with(head), "{raw}");
    let retry = raw[head.len()..]
        .strip_prefix("retry: ")
        .and_then(|r| r.strip_suffix("\n\n"))
        .unwrap();
    let retry: u64 = retry.parse().unwrap();
    assert!((3000..4000).contains(&retry), "retry {retry}");
    assert!(h.sse_events(conn).is_empty());
    assert_eq!(h.sse[&conn].1.retry(), Some(retry));
    let st = h.e.stats();
    assert_eq!((st.sse_streams, st.index_recipients), (1, 1));
    let _ = stream;
    h.bcast(
        Target::User(alice.clone()),
        Transports::Both,
        "a",
        r#"{"x":1}"#,
    );
    h.bcast(Target::Tenant("t".into()), Transports::Both, "b", "2");
    h.bcast(Target::All, Transports::Sse, "c", "[1,\r2,\r\n3,\n4]");
    let evs = h.sse_events(conn);
    assert_eq!(
        evs,
        vec![
            ParsedEvent {
                event: "a".into(),
                data: r#"{"x":1}"#.into(),
                last_event_id: h.id(1),
            },
            ParsedEvent {
                event: "b".into(),
                data: "2".into(),
                last_event_id: h.id(2),
            },
            ParsedEvent {
                event: "c".into(),
                data: "[1,\n2,\n3,\n4]".into(),
                last_event_id: h.id(3),
            },
        ]
    );
    // Exact bytes of the last one: data split on CR, CRLF and LF.
    let expect = format!(
        "event: c\nid: {}\ndata: [1,\ndata: 2,\ndata: 3,\ndata: 4]\n\n",
        h.id(3)
    );
    assert!(String::from_utf8(h.out[&conn].clone())
        .unwrap()
        .ends_with(&expect));
    // An event name with a line break is never written raw.
    h.bcast(Target::All, Transports::Sse, "bad\nname", "1");
    h.bcast(Target::All, Transports::Sse, "bad\rname", "1");
    h.bcast(Target::All, Transports::Sse, "bad\0name", "1");
    let (bytes, evs) = h.sse_raw(conn);
    assert!(bytes.is_empty() && evs.is_empty());
    // The epoch is the same for every id, the sequence counts broadcasts.
    let id = crate::proto::sse::parse_last_event_id(&h.id(3)).unwrap();
    assert_eq!(id.epoch, h.e.hub.epoch());
}

#[test]
fn sse_resume_replays_exactly_the_missed_events_for_this_user() {
    let mut h = H::new();
    let alice = Identity::new("t1", "alice");
    let bob = Identity::new("t1", "bob");
    h.cmd(Command::JoinRoom {
        user: alice.clone(),
        room: "r2".into(),
    });
    h.cmd(Command::JoinRoom {
        user: bob.clone(),
        room: "r".into(),
    });
    let (bob_conn, _) = h.sse_open(Some(bob.clone()), None);
    let (a, _) = h.sse_open(Some(alice.clone()), None);
    h.bcast(Target::User(alice.clone()), Transports::Both, "e", "1");
    let evs = h.sse_events(a);
    assert_eq!(data_of(&evs), vec!["1"]);
    let last = evs[0].last_event_id.clone();
    assert_eq!(last, h.id(1));
    h.close(a);
    let b = Transports::Both;
    h.bcast(Target::User(alice.clone()), b, "e", "2");
    h.bcast(Target::User(bob.clone()), b, "e", "3");
    h.bcast(Target::Tenant("t2".into()), b, "e", "4");
    h.bcast(Target::Tenant("t1".into()), b, "e", "5");
    h.bcast(Target::Room("r".into()), b, "e", "6");
    h.bcast(Target::Room("r2".into()), b, "e", "7");
    h.bcast(Target::All, b, "e", "8");
    h.bcast(Target::User(alice.clone()), Transports::SocketIo, "e", "9");
    h.bcast(Target::User(Identity::new("t2", "alice")), b, "e", "10");
    h.bcast(Target::User(Identity::user("alice")), b, "e", "11");
    h.bcast(Target::User(alice.clone()), Transports::Sse, "e", "12");
    assert_eq!(
        data_of(&h.sse_events(bob_conn)),
        vec!["3", "5", "6", "8"],
        "the connected bystander got its own"
    );
    let (a, _) = h.sse_open(Some(alice.clone()), Some(&last));
    let evs = h.sse_events(a);
    assert_eq!(data_of(&evs), vec!["2", "5", "7", "8", "12"]);
    let ids: Vec<String> = evs.iter().map(|e| e.last_event_id.clone()).collect();
    assert_eq!(ids, vec![h.id(2), h.id(5), h.id(7), h.id(8), h.id(12)]);
    assert!(evs.iter().all(|e| e.event == "e"));
    // Live events continue after the replay.
    h.bcast(Target::User(alice.clone()), b, "e", "13");
    let evs = h.sse_events(a);
    assert_eq!(data_of(&evs), vec!["13"]);
    assert_eq!(evs[0].last_event_id, h.id(13));
    // Resuming from the newest id replays nothing; the query form works as the header does.
    let q = format!("/events?lastEventId={}", h.id(13));
    let (c, request, _) = h.sse_get(&q, "");
    h.sse_accept(c, request, Some(alice.clone()));
    assert!(h.sse_events(c).is_empty());
    let q = format!("/events?lastEventId={}", h.id(11));
    let (c, request, _) = h.sse_get(&q, "");
    h.sse_accept(c, request, Some(alice.clone()));
    assert_eq!(data_of(&h.sse_events(c)), vec!["12", "13"]);
    // Another user presenting alice's id gets only what was addressed to them.
    let (c, _) = h.sse_open(Some(Identity::new("t2", "eve")), Some(&last));
    assert_eq!(data_of(&h.sse_events(c)), vec!["4", "8"]);
    // An anonymous stream gets only `to_all`.
    let (c, _) = h.sse_open(None, Some(&last));
    assert_eq!(data_of(&h.sse_events(c)), vec!["8"]);
}

#[test]
fn sse_hostile_last_event_id_gets_a_reset() {
    let mut h = H::new();
    for n in 1..=3 {
        h.bcast(Target::All, Transports::Both, "e", &n.to_string());
    }
    let epoch = h.e.hub.epoch();
    let cases: Vec<(String, bool, &str)> = vec![
        (format!("{}:1", epoch + 1), true, "unknown-epoch"),
        (format!("{}:1", epoch ^ 1), true, "unknown-epoch"),
        ("abc".into(), true, "invalid-id"),
        ("1".repeat(10_000), true, "invalid-id"),
        (format!("{epoch}:01"), true, "invalid-id"),
        (format!("{epoch}:4"), true, "invalid-id"),
        (format!("{epoch}:{}", u64::MAX), true, "invalid-id"),
        (format!("{epoch}:1:2"), true, "invalid-id"),
        (format!("{epoch}:1%0D%0Aevent:%20x"), false, "invalid-id"),
        (format!("{epoch}:1%0A"), false, "invalid-id"),
        (format!("{epoch}:1%00"), false, "invalid-id"),
        ("%E2%80%A8".into(), false, "invalid-id"),
    ];
    for (id, as_header, reason) in cases {
        let (conn, request, _) = if as_header {
            h.sse_get("/events", &format!("Last-Event-ID: {id}\r\n"))
        } else {
            h.sse_get(&format!("/events?lastEventId={id}"), "")
        };
        h.sse_accept(conn, request, Some(Identity::user("a")));
        let evs = h.sse_events(conn);
        assert_eq!(
            evs,
            vec![ParsedEvent {
                event: RESET_EVENT.into(),
                data: format!("{{\"reason\":\"{reason}\"}}"),
                last_event_id: h.id(3),
            }],
            "Last-Event-ID {:?}",
            id.get(..40)
        );
        h.close(conn);
    }
    // The valid id gets a replay, not a reset.
    let (conn, _) = h.sse_open(Some(Identity::user("a")), Some(&h.id(1)));
    assert_eq!(data_of(&h.sse_events(conn)), vec!["2", "3"]);
}

#[test]
fn sse_history_expires_by_count() {
    let cfg = Config {
        sse_history_events: 3,
        ..test_config()
    };
    let mut h = H::with(cfg);
    let alice = Identity::user("alice");
    for n in 1..=6 {
        h.bcast(Target::All, Transports::Both, "e", &n.to_string());
    }
    assert_eq!(h.e.stats().sse_history, 3);
    let reset = |h: &mut H, conn| {
        let evs = h.sse_events(conn);
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert_eq!(evs[0].event, RESET_EVENT);
        assert_eq!(evs[0].data, r#"{"reason":"expired"}"#);
    };
    for stale in [1, 2] {
        let (c, _) = h.sse_open(Some(alice.clone()), Some(&h.id(stale)));
        reset(&mut h, c);
    }
    // From the newest evicted id, everything after it is still there.
    let (c, _) = h.sse_open(Some(alice.clone()), Some(&h.id(3)));
    assert_eq!(data_of(&h.sse_events(c)), vec!["4", "5", "6"]);
    let (c, _) = h.sse_open(Some(alice.clone()), Some(&h.id(5)));
    assert_eq!(data_of(&h.sse_events(c)), vec!["6"]);
    // No history at all: any gap is a reset.
    let cfg = Config {
        sse_history_events: 0,
        ..test_config()
    };
    let mut h = H::with(cfg);
    h.bcast(Target::All, Transports::Both, "e", "1");
    h.bcast(Target::All, Transports::Both, "e", "2");
    let (c, _) = h.sse_open(Some(alice.clone()), Some(&h.id(1)));
    reset(&mut h, c);
    let (c, _) = h.sse_open(Some(alice.clone()), Some(&h.id(2)));
    assert!(h.sse_events(c).is_empty());
}

fn age_config() -> Config {
    Config {
        sse_history_age: Duration::from_secs(60),
        ..test_config()
    }
}

#[test]
fn sse_history_expires_by_age_while_streams_are_open() {
    let mut h = H::with(age_config());
    let alice = Identity::user("alice");
    let (_bystander, _) = h.sse_open(None, None);
    let (a, _) = h.sse_open(Some(alice.clone()), None);
    h.bcast(Target::All, Transports::Both, "e", "1");
    let last = h.sse_events(a)[0].last_event_id.clone();
    h.close(a);
    h.advance(Duration::from_secs(1));
    h.bcast(Target::User(alice.clone()), Transports::Both, "e", "2");
    // Within the age: replayed.
    h.advance(Duration::from_secs(30));
    let (a, _) = h.sse_open(Some(alice.clone()), Some(&last));
    assert_eq!(data_of(&h.sse_events(a)), vec!["2"]);
    h.close(a);
    // Past the age: reset.
    h.advance(Duration::from_secs(60));
    assert_eq!(h.e.stats().sse_history, 0);
    let (a, _) = h.sse_open(Some(alice.clone()), Some(&last));
    let evs = h.sse_events(a);
    assert_eq!(data_of(&evs), vec![r#"{"reason":"expired"}"#]);
    assert_eq!(evs[0].event, RESET_EVENT);
}

#[test]
fn sse_history_expires_by_age_with_no_stream_open() {
    let mut h = H::with(age_config());
    let alice = Identity::user("alice");
    let (a, _) = h.sse_open(Some(alice.clone()), None);
    h.bcast(Target::All, Transports::Both, "e", "1");
    let last = h.sse_events(a)[0].last_event_id.clone();
    h.close(a);
    h.advance(Duration::from_secs(1));
    h.bcast(Target::User(alice.clone()), Transports::Both, "e", "2");
    h.advance(Duration::from_secs(120));
    let (a, _) = h.sse_open(Some(alice.clone()), Some(&last));
    let evs = h.sse_events(a);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].event, RESET_EVENT);
    assert_eq!(evs[0].data, r#"{"reason":"expired"}"#);
}

#[test]
fn sse_heartbeat_comment_every_interval() {
    let mut h = H::new();
    let (a, _) = h.sse_open(None, None);
    assert!(h.sse_raw(a).0.starts_with(b"retry: "));
    h.advance(Duration::from_millis(14_999));
    assert!(h.sse_raw(a).0.is_empty());
    h.advance(Duration::from_millis(1));
    let (bytes, evs) = h.sse_raw(a);
    assert_eq!(bytes, b":\n\n");
    assert!(evs.is_empty());
    assert_eq!(h.sse[&a].1.comments_seen(), 1);
    // A second stream shares the next beat's bytes.
    let (b, _) = h.sse_open(None, None);
    h.sse_raw(b);
    let start = h.log.len();
    h.advance(Duration::from_secs(15));
    assert_eq!(h.sse_raw(a).0, b":\n\n");
    assert_eq!(h.sse_raw(b).0, b":\n\n");
    let beats: Vec<&Chunk> = h.log[start..].iter().map(|(_, c)| c).collect();
    assert_eq!(beats.len(), 2);
    match (beats[0], beats[1]) {
        (Chunk::Shared(x), Chunk::Shared(y)) => assert!(Arc::ptr_eq(x, y)),
        other => panic!("{other:?}"),
    }
    // Socket.IO connections get no SSE heartbeat.
    let (w, _) = h.sio_connect(None);
    h.advance(Duration::from_secs(15));
    assert!(h.frames(w).is_empty());
    // With every stream closed, the timer goes quiet.
    h.close(a);
    h.close(b);
    h.take_fresh();
    h.advance(Duration::from_secs(45));
    assert!(h.take_fresh().is_empty());
    assert_eq!(h.e.stats().sse_streams, 0);
}

#[test]
fn sse_room_replay_follows_membership_at_send_time() {
    let mut h = H::new();
    let alice = Identity::new("t", "alice");
    let bob = Identity::new("t", "bob");
    let carol = Identity::new("t", "carol");
    h.cmd(Command::JoinRoom {
        user: alice.clone(),
        room: "r".into(),
    });
    h.cmd(Command::JoinRoom {
        user: carol.clone(),
        room: "r".into(),
    });
    h.cmd(Command::LeaveRoom {
        user: carol.clone(),
        room: "r".into(),
    });
    h.bcast(Target::All, Transports::Both, "e", "1");
    let last = h.id(1);
    h.bcast(Target::Room("r".into()), Transports::Both, "e", "2");
    h.cmd(Command::JoinRoom {
        user: bob.clone(),
        room: "r".into(),
    });
    h.bcast(Target::Room("r".into()), Transports::Both, "e", "3");
    h.cmd(Command::LeaveRoom {
        user: alice.clone(),
        room: "r".into(),
    });
    for (who, want) in [
        (&alice, vec!["2", "3"]),
        (&bob, vec!["3"]),
        (&carol, vec![]),
    ] {
        let (c, _) = h.sse_open(Some(who.clone()), Some(&last));
        assert_eq!(data_of(&h.sse_events(c)), want, "{who:?}");
    }
}

#[test]
fn sse_send_and_close() {
    let mut h = H::new();
    let alice = Identity::user("alice");
    let (a, stream) = h.sse_open(Some(alice.clone()), None);
    assert!(h.sse_raw(a).0.starts_with(b"retry: "));
    h.cmd(Command::SseSend {
        stream,
        event: Some("hello".into()),
        data: "a\nb".into(),
    });
    assert_eq!(h.sse_raw(a).0, b"event: hello\ndata: a\ndata: b\n\n");
    h.cmd(Command::SseSend {
        stream,
        event: None,
        data: "x\r\ny".into(),
    });
    let (bytes, evs) = h.sse_raw(a);
    assert_eq!(bytes, b"data: x\ndata: y\n\n");
    assert_eq!(evs[0].event, "message");
    // Names that would break the framing are refused, not written.
    for bad in ["x\ny", "x\ry", "x\0y", ""] {
        h.cmd(Command::SseSend {
            stream,
            event: Some(bad.into()),
            data: "1".into(),
        });
    }
    assert!(h.sse_raw(a).0.is_empty());
    // `retry` never comes from data.
    h.cmd(Command::SseSend {
        stream,
        event: None,
        data: "1\nretry: 1\n\nid: 9".into(),
    });
    let (_, evs) = h.sse_raw(a);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].data, "1\nretry: 1\n\nid: 9");
    assert!(h.sse[&a].1.retry().unwrap() >= 3000);
    // A direct send is not kept for replay.
    h.cmd(Command::SseClose { stream });
    assert!(h.is_closed(a));
    match h.expect_app() {
        AppEvent::SseClosed { stream: s } => assert_eq!(s, stream),
        other => panic!("{other:?}"),
    }
    let st = h.e.stats();
    assert_eq!(
        (st.sse_streams, st.index_recipients, st.sse_history),
        (0, 0, 0)
    );
    h.cmd(Command::SseSend {
        stream,
        event: None,
        data: "after".into(),
    });
    h.cmd(Command::SseClose { stream });
    h.no_app();
    h.take_fresh();
    h.bcast(Target::User(alice.clone()), Transports::Both, "e", "1");
    assert!(h.take_fresh().is_empty());
    let (b, _) = h.sse_open(Some(alice.clone()), Some(&h.id(0)));
    assert_eq!(data_of(&h.sse_events(b)), vec!["1"]);
}
