//! The README's quick start (`examples/quickstart.rs`), run with real clients on 127.0.0.1: the
//! README shows exactly that code, and it delivers: a chat line said by one member of the room
//! reaches every member's connections on both transports, and nobody else.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

#[allow(dead_code)]
#[path = "../examples/quickstart.rs"]
mod quickstart;

use serde_json::json;
use support::sio::*;
use support::sse::sse_open;
use support::*;
use tidings::proto::sio::PacketKind;
use tidings::{Identity, Reach, Target, Transport};

/// The lines of `source` between `// README: <name>begin` and `// README: <name>end`.
fn marked<'a>(source: &'a str, name: &str) -> &'a str {
    let begin = format!("// README: {name}begin\n");
    let start = source.find(&begin).expect("begin marker") + begin.len();
    let end = source
        .find(&format!("// README: {name}end"))
        .expect("end marker");
    &source[start..end]
}

#[test]
fn the_readme_shows_the_quickstart_code_verbatim() {
    let source = include_str!("../examples/quickstart.rs");
    let readme = include_str!("../README.md");
    for (name, must_have) in [("", "pub fn start"), ("push ", "pub fn push")] {
        let shown = marked(source, name);
        assert!(shown.contains(must_have), "markers moved");
        assert!(
            readme.contains(&format!("```rust\n{shown}```")),
            "README.md must show examples/quickstart.rs between the `README: {name}` markers verbatim"
        );
    }
}

#[test]
fn the_readme_shows_the_client_guide_of_the_crate_docs() {
    let guide = include_str!("../src/client_guide.md");
    let readme = include_str!("../README.md");
    assert!(guide.contains("### Where clients connect"));
    assert!(
        readme.contains(guide),
        "README.md must contain src/client_guide.md verbatim (the crate docs show the same guide)"
    );
}

#[test]
fn the_quickstart_delivers_to_the_whole_room_and_nobody_else() {
    let (server, service) = quickstart::start(test_config()).expect("quickstart starts");
    let addr = server.local_addr();

    // alice on Socket.IO (token in the auth payload), bob on SSE (token in the query) and on
    // Socket.IO, carol (not in the lobby) on both.
    let connect = |token: &str| {
        let (c, p) = SioClient::connect_with(addr, Some(json!({ "token": token })));
        assert_eq!(p.kind, PacketKind::Connect, "refused: {p:?}");
        c
    };
    let mut alice = connect("t-alice");
    let mut bob_sio = connect("t-bob");
    let mut carol_sio = connect("t-carol");
    let mut bob_sse = sse_open(addr, "/events?token=t-bob", &[]).expect("bob's stream");
    let mut carol_sse = sse_open(addr, "/events", &[("Cookie", "token=t-carol")]).expect("carol");

    // A wrong token is refused on both transports.
    let (_, p) = SioClient::connect_with(addr, Some(json!({ "token": "nope" })));
    assert_eq!(p.kind, PacketKind::ConnectError);
    assert_eq!(
        sse_open(addr, "/events?token=nope", &[])
            .err()
            .map(|r| r.head.status),
        Some(401)
    );

    // The ack.
    alice.emit_with_ack(7, "whoami", vec![]);
    let p = alice.expect_packet();
    assert_eq!((p.kind, p.id), (PacketKind::Ack, Some(7)));
    assert_eq!(p.data, Some(json!([{ "user": "alice" }])));

    // The room's audience, counted: the members' connections on both transports.
    let carol_id = Identity::new("acme", "carol");
    let reach = service
        .send_counted(
            Transport::Both,
            &Target::Room("lobby".into()),
            "hello",
            &json!(1),
        )
        .expect("send");
    assert_eq!(
        reach,
        Reach {
            sse: 1,
            socketio: 2
        },
        "bob's stream, alice and bob's sockets"
    );
    for c in [&mut alice, &mut bob_sio] {
        let (name, args, _) = c.expect_event();
        assert_eq!((name.as_str(), args), ("hello", vec![json!(1)]));
    }
    assert_eq!(bob_sse.expect_event().data, "1");

    // alice says something in the chat: the handler's `socket.to_room("lobby", …)` reaches every
    // member on every transport, alice included, and not carol.
    alice.emit("chat", vec![json!("hi all")]);
    for c in [&mut alice, &mut bob_sio] {
        let (name, args, _) = c.expect_event();
        assert_eq!((name.as_str(), args), ("chat", vec![json!("hi all")]));
    }
    let ev = bob_sse.expect_event();
    assert_eq!(
        (ev.event.as_str(), ev.data.as_str()),
        ("chat", "\"hi all\"")
    );
    carol_sio.expect_silence(QUIET);
    assert!(
        carol_sse.next_event(QUIET).is_none(),
        "carol is not in the lobby"
    );

    // carol joins: from now on she hears the chat too, on both her connections.
    service.join_room(&carol_id, "lobby").expect("join");
    assert_eq!(
        service.user_rooms(&carol_id).expect("rooms"),
        vec!["lobby".to_string()]
    );
    bob_sio.emit("chat", vec![json!("welcome carol")]);
    let (name, args, _) = carol_sio.expect_event();
    assert_eq!(
        (name.as_str(), args),
        ("chat", vec![json!("welcome carol")])
    );
    assert_eq!(carol_sse.expect_event().data, "\"welcome carol\"");
    for c in [&mut alice, &mut bob_sio] {
        let (name, _, _) = c.expect_event();
        assert_eq!(name, "chat", "bob's own line reaches everybody in the room");
    }
    assert_eq!(bob_sse.expect_event().data, "\"welcome carol\"");

    // The README's `push`, with alice answering the ack from another thread.
    let pushing = std::thread::spawn(move || quickstart::push(&service));
    let (name, args, _) = alice.expect_event();
    assert_eq!(
        (name.as_str(), args),
        ("notification", vec![json!({"subject": "Hello"})])
    );
    let (name, args, _) = alice.expect_event();
    assert_eq!(
        (name.as_str(), args),
        ("chat", vec![json!("the server says hi")])
    );
    let (name, _, p) = alice.expect_event();
    assert_eq!(name, "are-you-there");
    alice.ack(p.id.expect("an ack id"), vec![json!({"here": true})]);
    pushing.join().expect("push thread").expect("push");
    let ev = bob_sse.expect_event();
    assert_eq!(
        (ev.event.as_str(), ev.data.as_str()),
        ("maintenance", r#"{"in":"5 min"}"#)
    );
    assert_eq!(bob_sse.expect_event().data, "\"the server says hi\"");
    carol_sio.expect_event(); // carol is in the lobby now: the server's line
    server.shutdown(WAIT).expect("shutdown");
}
