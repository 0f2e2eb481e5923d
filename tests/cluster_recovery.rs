//! Socket.IO connection state recovery across the nodes of a cluster (real `redis-server` on a
//! free 127.0.0.1 port): a socket that dropped on one node recovers on another with the same
//! sid, pid and rooms, and gets every event addressed to it in the gap — the user's, its rooms',
//! everyone's, and its own node's emits to it — in order, once; its old node no longer has it.
#![cfg(feature = "redis")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::redis::RedisServer;
use support::sio::*;
use support::*;
use tidings::proto::sio::PacketKind;
use tidings::{
    ClusterConfig, Config, Identity, NotificationService, Recovery, Server, Socket, Transport,
};

struct Node {
    server: Server,
    /// Sockets as their handlers saw them connect: (sid, recovered, the socket).
    connected: mpsc::Receiver<(String, bool, Socket)>,
}

fn node(redis: &RedisServer) -> Node {
    node_with_grace(redis, Duration::from_millis(200))
}

/// A node whose shutdown keeps its closed sockets for other nodes for `grace`.
fn node_with_grace(redis: &RedisServer, grace: Duration) -> Node {
    let mut cluster = ClusterConfig::new(redis.url());
    cluster.prefix = "rec".into();
    cluster.handoff_grace = grace;
    let config = Config {
        connection_state_recovery: Some(Recovery {
            max_disconnection_duration: Duration::from_secs(30),
            ..Recovery::default()
        }),
        ..test_config()
    };
    let (tx, connected) = mpsc::channel();
    let tx = Mutex::new(tx);
    let server = Server::builder(config)
        .authenticate(auth_hook)
        .on_connect("/", move |socket, _auth| {
            let _ = tx.lock().unwrap().send((
                socket.sid().to_string(),
                socket.recovered(),
                socket.clone(),
            ));
        })
        .on_event("/", "join", |socket, ev| {
            let room = ev
                .args
                .first()
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let _ = socket.join(&room);
            if let Some(ack) = ev.ack {
                let _ = ack.send(vec![json!(true)]);
            }
        })
        .cluster(cluster)
        .start()
        .expect("node starts");
    Node { server, connected }
}

/// The event's name, its first argument and its offset (the last argument).
fn event(c: &mut SioClient) -> (String, Value, String) {
    let (name, args, _) = c.expect_event();
    let offset = args
        .last()
        .and_then(Value::as_str)
        .expect("an offset")
        .to_string();
    (name, args.first().cloned().unwrap_or(Value::Null), offset)
}

fn connect_with_auth(addr: std::net::SocketAddr, auth: Value) -> (SioClient, Value) {
    let (c, p) = SioClient::connect_with(addr, Some(auth));
    assert_eq!(p.kind, PacketKind::Connect, "refused: {p:?}");
    (c, p.data.unwrap())
}

/// Alice's socket on node `n`, joined to socket room "desk": the client, its sid and pid, and
/// the socket as its handler saw it (a fresh one).
fn alice_in_desk_on(n: &Node) -> (SioClient, String, String, Socket) {
    let (mut c, hello) = connect_with_auth(
        n.server.local_addr(),
        json!({"tenant": "acme", "user": "alice"}),
    );
    let sid = hello["sid"].as_str().unwrap().to_string();
    let pid = hello["pid"].as_str().unwrap().to_string();
    let (_, recovered, socket) = n.connected.recv_timeout(WAIT).unwrap();
    assert!(!recovered);
    c.emit_with_ack(1, "join", vec![json!("desk")]);
    assert_eq!(c.expect_packet().kind, PacketKind::Ack);
    (c, sid, pid, socket)
}

#[test]
fn a_socket_recovers_on_another_node_with_everything_it_missed() {
    let redis = RedisServer::start();
    let a = node(&redis);
    let b = node(&redis);
    let api_b = NotificationService::new(b.server.handle());
    let alice = Identity::new("acme", "alice");
    let (mut c, sid, pid, socket_on_a) = alice_in_desk_on(&a);

    api_b
        .broadcast_to_user(Transport::SocketIo, &alice, "before", &json!(0))
        .unwrap();
    let (name, _, offset) = event(&mut c);
    assert_eq!(name, "before");
    // An emit of node a to the socket itself, which the client then loses with its connection
    // (it presents the offset of the event before).
    socket_on_a.emit("m", vec![json!(0.5)]).unwrap();
    assert_eq!(event(&mut c).1, json!(0.5));

    // The connection drops: node a parks the socket.
    drop(c);
    let deadline = Instant::now() + WAIT;
    while a.server.handle().stats().unwrap().parked_sockets == 0 {
        assert!(Instant::now() < deadline, "the socket was not parked");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The gap: the user's, its socket room's, everyone's, and a room it is not in (an emit to a
    // waiting socket is dropped, on one node as on several).
    api_b
        .broadcast_to_user(Transport::SocketIo, &alice, "m", &json!(1))
        .unwrap();
    api_b.broadcast_to_room("desk", "m", &json!(2)).unwrap();
    api_b
        .broadcast_to_room("elsewhere", "m", &json!("not yours"))
        .unwrap();
    socket_on_a.emit("m", vec![json!("dropped")]).unwrap();
    api_b
        .provider(Transport::Both)
        .broadcast()
        .to_all("m", &json!(4))
        .unwrap();
    // Node b has delivered everything (a counted send comes back after the others).
    let _ = api_b
        .send_counted(Transport::Sse, &tidings::Target::All, "sync", &json!(null))
        .unwrap();

    let (mut c, hello) = connect_with_auth(
        b.server.local_addr(),
        json!({"tenant": "acme", "user": "alice", "pid": pid, "offset": offset}),
    );
    assert_eq!(hello["sid"], json!(sid), "the same socket");
    assert_eq!(hello["pid"], json!(pid));
    let (_, recovered, _) = b.connected.recv_timeout(WAIT).unwrap();
    assert!(recovered, "the handler hears a recovered socket");
    let got: Vec<Value> = (0..4).map(|_| event(&mut c).1).collect();
    assert_eq!(got, vec![json!(0.5), json!(1), json!(2), json!(4)]);
    c.expect_silence(QUIET);

    // It lives on node b now, with its room; nothing comes twice.
    api_b.broadcast_to_room("desk", "after", &json!(5)).unwrap();
    let (name, data, _) = event(&mut c);
    assert_eq!((name.as_str(), data), ("after", json!(5)));
    c.expect_silence(QUIET);
    assert_eq!(a.server.handle().stats().unwrap().parked_sockets, 0);

    // Its old node no longer has it: the same pid there gets a fresh session.
    let (_c2, fresh) = connect_with_auth(
        a.server.local_addr(),
        json!({"tenant": "acme", "user": "alice", "pid": pid, "offset": offset}),
    );
    assert_ne!(fresh["pid"], json!(pid));
}

#[test]
fn another_identity_cannot_take_a_socket_from_another_node() {
    let redis = RedisServer::start();
    let a = node(&redis);
    let b = node(&redis);
    let (c, hello) = connect_with_auth(
        a.server.local_addr(),
        json!({"tenant": "acme", "user": "alice"}),
    );
    let pid = hello["pid"].as_str().unwrap().to_string();
    drop(c);
    let deadline = Instant::now() + WAIT;
    while a.server.handle().stats().unwrap().parked_sockets == 0 {
        assert!(Instant::now() < deadline, "the socket was not parked");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_m, got) = connect_with_auth(
        b.server.local_addr(),
        json!({"tenant": "acme", "user": "mallory", "pid": pid}),
    );
    assert_ne!(
        got["pid"],
        json!(pid),
        "a fresh session for another identity"
    );
    // Alice still can, on either node.
    let (_c, again) = connect_with_auth(
        b.server.local_addr(),
        json!({"tenant": "acme", "user": "alice", "pid": pid}),
    );
    assert_eq!(again["pid"], json!(pid));
}

#[test]
fn a_rolling_deploy_hands_the_sockets_of_the_stopping_node_to_the_others() {
    let redis = RedisServer::start();
    let a = node_with_grace(&redis, Duration::from_secs(20));
    let b = node(&redis);
    let api_b = NotificationService::new(b.server.handle());
    let alice = Identity::new("acme", "alice");
    let (mut c, sid, pid, _) = alice_in_desk_on(&a);
    api_b
        .broadcast_to_user(Transport::SocketIo, &alice, "before", &json!(0))
        .unwrap();
    let (_, _, offset) = event(&mut c);

    // Node a stops (a deploy): its connections close, it keeps the socket for the others.
    let Node { server, .. } = a;
    let started = Instant::now();
    let stopping = std::thread::spawn(move || server.shutdown(Duration::from_millis(300)));
    // The client hears its connection close (and would reconnect through the balancer).
    let _ = c.expect_closed(16);
    // Sent while the client is away, from the node that stays.
    api_b
        .broadcast_to_user(Transport::SocketIo, &alice, "m", &json!(1))
        .unwrap();
    api_b.broadcast_to_room("desk", "m", &json!(2)).unwrap();
    let _ = api_b
        .send_counted(Transport::Sse, &tidings::Target::All, "sync", &json!(null))
        .unwrap();
    let (mut c, hello) = connect_with_auth(
        b.server.local_addr(),
        json!({"tenant": "acme", "user": "alice", "pid": pid, "offset": offset}),
    );
    assert_eq!(
        hello["sid"],
        json!(sid),
        "the same socket, on the node that stays"
    );
    let got: Vec<Value> = (0..2).map(|_| event(&mut c).1).collect();
    assert_eq!(got, vec![json!(1), json!(2)]);
    c.expect_silence(QUIET);
    // Node a finished as soon as nothing was left to hand over, well before its grace.
    stopping.join().unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // The room came along.
    api_b.broadcast_to_room("desk", "after", &json!(3)).unwrap();
    assert_eq!(event(&mut c).1, json!(3));
}
