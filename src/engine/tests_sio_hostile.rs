//! Socket.IO engine scenarios: hostile client input closes only the offending session and leaves
//! a bystander on the same engine untouched.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::test_support::{sio_event, Frame, H};
use super::*;

/// What a hostile client sends.
#[derive(Clone, Debug)]
enum Msg {
    T(String),
    B(Vec<u8>),
}

fn hostile_cases() -> Vec<(&'static str, Vec<Msg>)> {
    let t = |s: &str| Msg::T(s.to_string());
    let ph = |n: usize| format!(r#"{{"_placeholder":true,"num":{n}}}"#);
    let eleven: Vec<String> = (0..11).map(ph).collect();
    vec![
        (
            "placeholder num splice",
            vec![
                t(r#"451-["hello",{"_placeholder":true,"num":"splice"}]"#),
                Msg::B(vec![1]),
            ],
        ),
        (
            "placeholder num out of range",
            vec![
                t(r#"451-["hello",{"_placeholder":true,"num":1}]"#),
                Msg::B(vec![1]),
            ],
        ),
        (
            "placeholder num negative",
            vec![
                t(r#"451-["hello",{"_placeholder":true,"num":-1}]"#),
                Msg::B(vec![1]),
            ],
        ),
        (
            "placeholder num not an integer",
            vec![
                t(r#"451-["hello",{"_placeholder":true,"num":0.5}]"#),
                Msg::B(vec![1]),
            ],
        ),
        (
            "placeholder duplicated",
            vec![
                t(&format!(r#"452-["hello",{},{}]"#, ph(0), ph(0))),
                Msg::B(vec![1]),
                Msg::B(vec![2]),
            ],
        ),
        (
            "attachment count 999999999",
            vec![t(r#"45999999999-["hello"]"#)],
        ),
        (
            "attachment count 11",
            vec![t(&format!(r#"4511-["hello",{}]"#, eleven.join(",")))],
        ),
        ("event name object", vec![t(r#"42[{"toString":"x"}]"#)]),
        ("event name null", vec![t(r#"42[null,"x"]"#)]),
        ("event name number", vec![t("42[1]")]),
        ("reserved connect", vec![t(r#"42["connect"]"#)]),
        ("reserved connect_error", vec![t(r#"42["connect_error"]"#)]),
        ("reserved disconnect", vec![t(r#"42["disconnect"]"#)]),
        ("reserved disconnecting", vec![t(r#"42["disconnecting"]"#)]),
        ("reserved newListener", vec![t(r#"42["newListener"]"#)]),
        (
            "reserved removeListener",
            vec![t(r#"42["removeListener"]"#)],
        ),
        (
            "ack id beyond u64",
            vec![t(r#"4218446744073709551616["x"]"#)],
        ),
        (
            "ack id of 10000 digits",
            vec![t(&format!(r#"42{}["x"]"#, "1".repeat(10_000)))],
        ),
        (
            "ack reply id beyond u64",
            vec![t("4318446744073709551616[]")],
        ),
        (
            "1 MB namespace",
            vec![t(&format!("40/{},", "a".repeat(1_000_000)))],
        ),
        (
            "JSON nested 100000 deep",
            vec![t(&format!(
                r#"42["x",{}{}]"#,
                "[".repeat(100_000),
                "]".repeat(100_000)
            ))],
        ),
        ("event payload not an array", vec![t("42{}")]),
        ("event payload empty array", vec![t("42[]")]),
        ("event without payload", vec![t("42")]),
        ("garbage after type", vec![t(r#"42abc["x"]"#)]),
        ("socket.io type abc", vec![t("4abc")]),
        ("socket.io type 9", vec![t("49")]),
        ("engine.io abc", vec![t("abc")]),
        ("engine.io 9", vec![t("9")]),
        ("empty message", vec![t("")]),
        ("record separator", vec![t("\u{1e}")]),
        (
            "binary without a pending packet",
            vec![Msg::B(vec![1, 2, 3])],
        ),
        (
            "text while an attachment is expected",
            vec![
                t(r#"451-["x",{"_placeholder":true,"num":0}]"#),
                t(r#"42["y"]"#),
            ],
        ),
        ("client CONNECT_ERROR", vec![t(r#"44{"message":"x"}"#)]),
        ("ack without id", vec![t("43[]")]),
        ("ack payload not an array", vec![t(r#"430{"a":1}"#)]),
        ("disconnect with payload", vec![t(r#"41["x"]"#)]),
        (
            "connect with a string payload",
            vec![t(r#"40/admin,"str""#)],
        ),
        ("connect with an id", vec![t("401{}")]),
        ("namespace with control char", vec![t("40/a\u{1}b,")]),
    ]
}

#[test]
fn sio_hostile_inputs_close_only_the_offending_session() {
    for (name, msgs) in hostile_cases() {
        let mut h = H::new();
        let (good, gs) = h.sio_connect(Some(Identity::user("bob")));
        let (bad, bs) = h.sio_connect(Some(Identity::user("mallory")));
        h.app.clear();
        for m in &msgs {
            if h.is_closed(bad) {
                break;
            }
            match m {
                Msg::T(s) => h.send(bad, s),
                Msg::B(b) => h.send_bin(bad, b),
            }
        }
        assert!(h.is_closed(bad), "{name}: offender not closed");
        let frames = h.frames(bad);
        assert_eq!(
            frames.last(),
            Some(&Frame::Close(1000)),
            "{name}: {frames:?}"
        );
        let evs: Vec<AppEvent> = h.app.drain(..).collect();
        assert_eq!(evs.len(), 1, "{name}: {evs:?}");
        match &evs[0] {
            AppEvent::SioDisconnected {
                socket,
                nsp,
                reason,
            } => {
                assert_eq!((*socket, &**nsp), (bs, "/"), "{name}");
                assert_eq!(*reason, DisconnectReason::ParseError, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        let st = h.e.stats();
        assert_eq!((st.eio_sessions, st.sio_sockets), (1, 1), "{name}");
        assert_eq!(st.index_recipients, 1, "{name}");
        // The bystander is untouched.
        assert!(!h.is_closed(good), "{name}");
        assert!(h.frames(good).is_empty(), "{name}");
        h.send(good, r#"42["still",1]"#);
        let ev = sio_event(h.expect_app());
        assert_eq!((ev.0, ev.2.as_str()), (gs, "still"), "{name}");
        h.bcast(Target::All, Transports::Both, "n", "1");
        assert_eq!(h.texts(good), vec![r#"42["n",1]"#], "{name}");
        // Nothing more for the closed conn (pump asserts no write after close).
        h.send(bad, r#"42["x"]"#);
        h.no_app();
    }
}
