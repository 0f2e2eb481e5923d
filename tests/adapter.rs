//! A tidings server as a node of a Node.js socket.io cluster (`ServerBuilder::socketio_adapter`,
//! real `redis-server` on a free 127.0.0.1 port): two tidings nodes share Socket.IO broadcasts
//! in the `@socket.io/redis-adapter` format, and what a Node server would publish (msgpack
//! broadcasts, JSON requests) is answered and delivered exactly. The interop suite
//! (tests/interop/adapter.test.mjs) does the same against a real Node socket.io server.
#![cfg(feature = "redis")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::redis::RedisServer;
use support::sio::*;
use support::*;
use tidings::proto::sio::PacketKind;
use tidings::{user_room, Identity, NotificationService, Server, SocketIoAdapterConfig, Transport};

/// A tidings node of the Node cluster on `redis`, with a `join` handler (a socket room, acked)
/// and a server-side-emit answer; the sids of its sockets as they connect.
fn node(redis: &RedisServer) -> (Server, mpsc::Receiver<String>) {
    let (tx, sids) = mpsc::channel();
    let tx = Mutex::new(tx);
    let server = Server::builder(test_config())
        .authenticate(auth_hook)
        .on_connect("/", move |socket, _| {
            let _ = tx.lock().unwrap().send(socket.sid().to_string());
        })
        .on_event("/", "join", |socket, ev| {
            let room = ev.args.first().and_then(Value::as_str).unwrap_or("");
            let _ = socket.join(room);
            if let Some(ack) = ev.ack {
                let _ = ack.send(vec![json!(true)]);
            }
        })
        .on_server_side_emit(|event, args| {
            Some(json!({"from": "tidings", "event": event, "args": args}))
        })
        .socketio_adapter(SocketIoAdapterConfig::new(redis.url()))
        .start()
        .expect("node starts");
    (server, sids)
}

/// A raw RESP connection to Redis (what a Node server would publish, and what it would hear).
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn open(redis: &RedisServer) -> Raw {
        let addr = SocketAddr::from(([127, 0, 0, 1], redis.port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, args: &[&[u8]]) {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&req).unwrap();
    }

    /// One reply: an array of bulk strings and integers (as text), a status or an integer.
    fn reply(&mut self, within: Duration) -> Option<Vec<Vec<u8>>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((items, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(items);
            }
            if Instant::now() > deadline {
                return None;
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
    }

    fn publish(redis: &RedisServer, channel: &str, body: &[u8]) -> i64 {
        let mut r = Raw::open(redis);
        r.send(&[b"PUBLISH", channel.as_bytes(), body]);
        let reply = r.reply(WAIT).expect("PUBLISH answered");
        String::from_utf8_lossy(&reply[0]).parse().unwrap()
    }

    fn subscribe(redis: &RedisServer, channel: &str) -> Raw {
        let mut r = Raw::open(redis);
        r.send(&[b"SUBSCRIBE", channel.as_bytes()]);
        let ok = r.reply(WAIT).expect("subscribed");
        assert_eq!(ok[0], b"subscribe");
        r
    }

    /// The next message's payload, as JSON.
    fn next_json(&mut self) -> Value {
        let m = self.reply(WAIT).expect("a message within WAIT");
        assert_eq!(m[0], b"message");
        serde_json::from_slice(&m[2]).expect("a JSON message")
    }
}

/// Parses one RESP value at the start of `b`: its items and its length.
fn parse(b: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    let line_end = |from: usize| {
        b.get(from..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p)
    };
    let end = line_end(0)?;
    let head = std::str::from_utf8(&b[1..end]).ok()?;
    match b.first()? {
        b'+' | b':' => Some((vec![head.as_bytes().to_vec()], end + 2)),
        b'*' => {
            let n: usize = head.parse().ok()?;
            let mut at = end + 2;
            let mut items = Vec::new();
            for _ in 0..n {
                let e = line_end(at)?;
                let h = std::str::from_utf8(&b[at + 1..e]).ok()?;
                match b[at] {
                    b'$' => {
                        let len: usize = h.parse().ok()?;
                        let start = e + 2;
                        let data = b.get(start..start + len)?;
                        items.push(data.to_vec());
                        at = start + len + 2;
                    }
                    _ => {
                        items.push(h.as_bytes().to_vec());
                        at = e + 2;
                    }
                }
                if at > b.len() {
                    return None;
                }
            }
            Some((items, at))
        }
        _ => None,
    }
}

/// msgpack of a Node broadcast: `["node1", {type: 2, data: [event, arg], nsp: "/"},
/// {rooms, except, flags: {}}]` with string args and rooms (what `io.to(rooms).except(..)
/// .emit(event, arg)` publishes).
fn node_broadcast(event: &str, arg: &str, rooms: &[&str], except: &[&str]) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, v: &str) {
        assert!(v.len() < 32);
        out.push(0xa0 | v.len() as u8);
        out.extend_from_slice(v.as_bytes());
    }
    fn list(out: &mut Vec<u8>, vs: &[&str]) {
        out.push(0x90 | vs.len() as u8);
        for v in vs {
            s(out, v);
        }
    }
    let mut m = vec![0x93];
    s(&mut m, "node1");
    m.push(0x83);
    s(&mut m, "type");
    m.push(0x02);
    s(&mut m, "data");
    list(&mut m, &[event, arg]);
    s(&mut m, "nsp");
    s(&mut m, "/");
    m.push(0x83);
    s(&mut m, "rooms");
    list(&mut m, rooms);
    s(&mut m, "except");
    list(&mut m, except);
    s(&mut m, "flags");
    m.push(0x80);
    m
}

/// Alice (in socket room "desk") and bob of tenant acme on `server`, with their sids.
fn alice_in_desk_and_bob(
    server: &Server,
    sids: &mpsc::Receiver<String>,
) -> (SioClient, String, SioClient, String) {
    let mut alice = SioClient::connect_as(server.local_addr(), "acme", "alice");
    let alice_sid = sids.recv_timeout(WAIT).unwrap();
    let bob = SioClient::connect_as(server.local_addr(), "acme", "bob");
    let bob_sid = sids.recv_timeout(WAIT).unwrap();
    ack(&mut alice, 1, "join", "desk");
    (alice, alice_sid, bob, bob_sid)
}

fn ack(c: &mut SioClient, id: u64, event: &str, room: &str) {
    c.emit_with_ack(id, event, vec![json!(room)]);
    assert_eq!(c.expect_packet().kind, PacketKind::Ack);
}

#[test]
fn two_tidings_nodes_share_socketio_broadcasts_in_the_node_format() {
    let redis = RedisServer::start();
    let (a, _) = node(&redis);
    let (b, sids) = node(&redis);
    let (mut alice, alice_sid, mut bob, _) = alice_in_desk_and_bob(&b, &sids);
    let (mut anon, _) = SioClient::connect_with(a.local_addr(), None);
    // What a Node server would hear: the room channel for one room.
    let mut room_channel = Raw::subscribe(&redis, "socket.io#/#desk#");

    let api = NotificationService::new(a.handle());
    api.broadcast_to_room("desk", "m", &json!("room")).unwrap();
    assert_eq!(alice.expect_event_arg(), ("m".into(), json!("room")));
    let heard = room_channel
        .reply(WAIT)
        .expect("published on the room channel");
    assert_eq!(heard[0], b"message");
    api.broadcast_to_user(
        Transport::SocketIo,
        &Identity::new("acme", "bob"),
        "m",
        &json!("bob"),
    )
    .unwrap();
    assert_eq!(bob.expect_event_arg(), ("m".into(), json!("bob")));
    api.provider(Transport::Both)
        .broadcast()
        .to_all("m", &json!("all"))
        .unwrap();
    for c in [&mut alice, &mut bob, &mut anon] {
        assert_eq!(c.expect_event_arg(), ("m".into(), json!("all")));
    }
    for c in [&mut alice, &mut bob, &mut anon] {
        c.expect_silence(QUIET);
    }

    // A Node server's broadcasts: to a room and except a socket id; to a user's reserved room.
    let desk = node_broadcast("hello", "desk", &["desk"], &[]);
    assert!(
        Raw::publish(&redis, "socket.io#/#desk#", &desk) >= 2,
        "both nodes listen"
    );
    assert_eq!(alice.expect_event_arg(), ("hello".into(), json!("desk")));
    let not_alice = node_broadcast("hello", "not alice", &[], &[&alice_sid]);
    Raw::publish(&redis, "socket.io#/#", &not_alice);
    assert_eq!(bob.expect_event_arg(), ("hello".into(), json!("not alice")));
    assert_eq!(
        anon.expect_event_arg(),
        ("hello".into(), json!("not alice"))
    );
    let bob_room = user_room(&Identity::new("acme", "bob"));
    let to_bob = node_broadcast("hello", "bob", &[&bob_room], &[]);
    Raw::publish(&redis, &format!("socket.io#/#{bob_room}#"), &to_bob);
    assert_eq!(bob.expect_event_arg(), ("hello".into(), json!("bob")));
    // Garbage and other formats on those channels: ignored, counted.
    let foreign_before = b.handle().metrics().cluster_foreign;
    Raw::publish(&redis, "socket.io#/#", b"\xc1 not msgpack");
    Raw::publish(&redis, "socket.io#/#", b"[\"a socketioxide-like\", 1]");
    for c in [&mut alice, &mut bob, &mut anon] {
        c.expect_silence(QUIET);
    }
    assert!(b.handle().metrics().cluster_foreign >= foreign_before + 2);
    assert_eq!(b.handle().adapter_connected(), Some(true));
}

#[test]
fn node_requests_see_and_act_on_tidings_sockets() {
    let redis = RedisServer::start();
    let (a, sids) = node(&redis);
    let (mut alice, alice_sid, mut bob, bob_sid) = alice_in_desk_and_bob(&a, &sids);
    let mut responses = Raw::subscribe(&redis, "socket.io-response#/#");
    let request = |v: Value| {
        let n = Raw::publish(&redis, "socket.io-request#/#", v.to_string().as_bytes());
        assert_eq!(n, 1, "the tidings node listens on the request channel");
    };

    // fetchSockets in "desk": alice only, with her rooms and identity.
    request(
        json!({"uid": "node1", "requestId": "f1", "type": 5, "opts": {"rooms": ["desk"], "except": []}}),
    );
    let r = responses.next_json();
    assert_eq!(r["requestId"], json!("f1"));
    let sockets = r["sockets"].as_array().unwrap();
    assert_eq!(sockets.len(), 1, "{r}");
    assert_eq!(sockets[0]["id"], json!(alice_sid));
    assert_eq!(
        sockets[0]["data"],
        json!({"user": "alice", "tenant": "acme"})
    );
    let rooms: std::collections::BTreeSet<String> = sockets[0]["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let expected: std::collections::BTreeSet<String> = [
        alice_sid.clone(),
        "desk".into(),
        user_room(&Identity::new("acme", "alice")),
        tidings::tenant_room("acme"),
    ]
    .into_iter()
    .collect();
    assert_eq!(rooms, expected);

    // allRooms has "desk".
    request(json!({"uid": "node1", "requestId": "r1", "type": 1}));
    let r = responses.next_json();
    assert_eq!(r["requestId"], json!("r1"));
    assert!(
        r["rooms"].as_array().unwrap().contains(&json!("desk")),
        "{r}"
    );

    // socketsJoin: bob (by his id) joins "vip"; a broadcast to "vip" reaches him alone. A
    // reserved room cannot be joined that way.
    request(
        json!({"uid": "node1", "type": 2, "opts": {"rooms": [bob_sid], "except": []}, "rooms": ["vip", "tidings:user:[\"acme\",\"mallory\"]"]}),
    );
    let vip = node_broadcast("hello", "vip", &["vip"], &[]);
    let deadline = Instant::now() + WAIT;
    loop {
        Raw::publish(&redis, "socket.io#/#vip#", &vip);
        if let SioEvent::Packet(p) = bob.recv(Duration::from_millis(200)) {
            assert_eq!(p.data, Some(json!(["hello", "vip"])));
            break;
        }
        assert!(Instant::now() < deadline, "bob never joined vip");
    }
    alice.expect_silence(QUIET);
    let mallory = node_broadcast(
        "hello",
        "mallory",
        &["tidings:user:[\"acme\",\"mallory\"]"],
        &[],
    );
    Raw::publish(&redis, "socket.io#/#", &mallory);
    bob.expect_silence(QUIET);

    // serverSideEmit with an ack: the application's answer.
    request(json!({"uid": "node1", "requestId": "s1", "type": 6, "data": ["ping", 42]}));
    let r = responses.next_json();
    assert_eq!(
        r,
        json!({"type": 6, "requestId": "s1", "data": {"from": "tidings", "event": "ping", "args": [42]}})
    );

    // disconnectSockets in "desk": alice goes, bob stays.
    request(
        json!({"uid": "node1", "type": 4, "opts": {"rooms": ["desk"], "except": []}, "close": false}),
    );
    let p = alice.expect_packet();
    assert_eq!(p.kind, PacketKind::Disconnect);
    bob.expect_silence(QUIET);
}

#[test]
fn a_tidings_node_asks_the_whole_cluster() {
    let redis = RedisServer::start();
    let (a, _) = node(&redis);
    let (b, sids) = node(&redis);
    let (mut alice, alice_sid, mut bob, bob_sid) = alice_in_desk_and_bob(&b, &sids);
    let cluster = a
        .handle()
        .socketio_cluster()
        .expect("a node of a Node cluster");
    assert!(b.handle().socketio_cluster().is_some());
    assert!(Server::builder(test_config())
        .allow_anonymous()
        .start()
        .unwrap()
        .handle()
        .socketio_cluster()
        .is_none());

    // fetchSockets from node a sees node b's sockets.
    let desk = tidings::SocketSelector::of("/").in_room("desk");
    let found = cluster.fetch_sockets(&desk).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].id, alice_sid);
    assert_eq!(
        found[0].data,
        Some(json!({"user": "alice", "tenant": "acme"}))
    );
    let everyone = cluster
        .fetch_sockets(&tidings::SocketSelector::of("/"))
        .unwrap();
    let mut ids: Vec<String> = everyone.into_iter().map(|s| s.id).collect();
    ids.sort();
    let mut expected = vec![alice_sid.clone(), bob_sid.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    let not_desk = cluster
        .fetch_sockets(&tidings::SocketSelector::of("/").except("desk"))
        .unwrap();
    assert_eq!(not_desk.len(), 1);
    assert_eq!(not_desk[0].id, bob_sid);
    // By user: the reserved room.
    let bobs = tidings::SocketSelector::of("/").in_room(user_room(&Identity::new("acme", "bob")));
    assert_eq!(cluster.fetch_sockets(&bobs).unwrap()[0].id, bob_sid);

    // socketsJoin from node a: bob joins "vip" on node b; a broadcast to "vip" reaches him.
    cluster.sockets_join(&bobs, &["vip"]).unwrap();
    let api = NotificationService::new(a.handle());
    let in_vip = || {
        cluster
            .fetch_sockets(&tidings::SocketSelector::of("/").in_room("vip"))
            .unwrap()
            .len()
    };
    eventually("bob joins vip", || in_vip() == 1);
    api.broadcast_to_room("vip", "m", &json!("vip")).unwrap();
    assert_eq!(bob.expect_event_arg(), ("m".into(), json!("vip")));
    alice.expect_silence(QUIET);
    assert!(
        cluster.sockets_join(&bobs, &["tidings:user:x"]).is_err(),
        "reserved"
    );
    cluster.sockets_leave(&bobs, &["vip"]).unwrap();
    eventually("bob leaves vip", || in_vip() == 0);

    // serverSideEmit with an ack: node b's answer (node a does not answer itself).
    let answers = cluster
        .server_side_emit_with_ack("ping", vec![json!(7)], Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        answers,
        vec![json!({"from": "tidings", "event": "ping", "args": [7]})]
    );
    cluster.server_side_emit("ping", vec![json!(8)]).unwrap();
    assert!(
        cluster.server_side_emit("connect", vec![]).is_err(),
        "a reserved event name"
    );
    assert!(cluster
        .fetch_sockets(&tidings::SocketSelector::of("/elsewhere"))
        .is_err());

    // disconnectSockets from node a: alice goes, bob stays.
    cluster.disconnect_sockets(&desk, false).unwrap();
    assert_eq!(alice.expect_packet().kind, PacketKind::Disconnect);
    bob.expect_silence(QUIET);
}

#[test]
fn a_broadcast_with_acks_collects_the_answers_of_every_node() {
    let redis = RedisServer::start();
    let (a, _) = node(&redis);
    let (b, _) = node(&redis);
    let mut on_a = SioClient::connect_as(a.local_addr(), "acme", "alice");
    let mut on_b = SioClient::connect_as(b.local_addr(), "acme", "bob");
    let mut silent = SioClient::connect_as(b.local_addr(), "acme", "carol");
    ack(&mut on_a, 1, "join", "desk");
    ack(&mut on_b, 1, "join", "desk");
    let cluster = a.handle().socketio_cluster().unwrap();
    let desk = tidings::SocketSelector::of("/").in_room("desk");
    let asking = std::thread::spawn(move || {
        cluster.emit_with_ack(&desk, "question", vec![json!("?")], Duration::from_secs(5))
    });
    for (c, answer) in [(&mut on_a, "a"), (&mut on_b, "b")] {
        let (name, args, p) = c.expect_event();
        assert_eq!((name.as_str(), args), ("question", vec![json!("?")]));
        let id = p.id.expect("an ack id");
        c.send_packet(&tidings::proto::sio::Packet::ack(
            "/",
            id,
            vec![json!(answer)],
        ));
    }
    silent.expect_silence(QUIET);
    let mut answers = asking.join().unwrap().unwrap();
    answers.sort_by_key(|v| v.to_string());
    assert_eq!(answers, vec![json!("a"), json!("b")]);

    // A client that does not answer: the call ends at its timeout, with an error.
    let cluster = a.handle().socketio_cluster().unwrap();
    let everyone = tidings::SocketSelector::of("/");
    let asked = cluster.emit_with_ack(&everyone, "question", vec![], Duration::from_millis(500));
    assert!(asked.is_err(), "{asked:?}");
}
