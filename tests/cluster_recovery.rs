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
    node_on(&redis.url(), grace)
}

/// A node of the cluster on the Redis at `url`, with handlers `join`, `leave` (a socket room,
/// acked) and `echo` (emits `m` with the same arguments to the socket).
fn node_on(url: &str, grace: Duration) -> Node {
    let mut cluster = ClusterConfig::new(url);
    cluster.prefix = "rec".into();
    cluster.handoff_grace = grace;
    // A child node may be told to keep a small publish queue (see the lost-record test).
    if let Some(q) = std::env::var(CHILD_QUEUE).ok().and_then(|q| q.parse().ok()) {
        cluster.queue = q;
        cluster.retry_for = Duration::from_secs(60);
    }
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
        .on_event("/", "leave", |socket, ev| {
            let room = ev.args.first().and_then(Value::as_str).unwrap_or("");
            let _ = socket.leave(room);
            if let Some(ack) = ev.ack {
                let _ = ack.send(vec![json!(true)]);
            }
        })
        .on_event("/", "echo", |socket, ev| {
            let _ = socket.emit("m", ev.args);
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

/// Once node `b` has delivered everything sent so far (a counted send comes back after the
/// others), alice comes back to it with her socket's `(sid, pid, offset)`: the same socket,
/// recovered (its handler hears so), with exactly `missed` (first arguments, in order) and
/// nothing more.
fn recover_on(b: &Node, (sid, pid, offset): (&str, &str, &str), missed: &[Value]) -> SioClient {
    let _ = NotificationService::new(b.server.handle())
        .send_counted(Transport::Sse, &tidings::Target::All, "sync", &json!(null))
        .unwrap();
    let (mut c, hello) = connect_with_auth(
        b.server.local_addr(),
        json!({"tenant": "acme", "user": "alice", "pid": pid, "offset": offset}),
    );
    assert_eq!(hello["sid"], json!(sid), "the same socket, on node b");
    assert_eq!(hello["pid"], json!(pid));
    let (_, recovered, _) = b.connected.recv_timeout(WAIT).unwrap();
    assert!(recovered, "the handler hears a recovered socket");
    let got: Vec<Value> = (0..missed.len()).map(|_| event(&mut c).1).collect();
    assert_eq!(got, missed);
    c.expect_silence(QUIET);
    c
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
    eventually("the socket is parked", || {
        a.server.handle().stats().unwrap().parked_sockets > 0
    });
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
    let mut c = recover_on(
        &b,
        (&sid, &pid, &offset),
        &[json!(0.5), json!(1), json!(2), json!(4)],
    );

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
    eventually("the socket is parked", || {
        a.server.handle().stats().unwrap().parked_sockets > 0
    });
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
    let mut c = recover_on(&b, (&sid, &pid, &offset), &[json!(1), json!(2)]);
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

/// Set in the environment of a child process that runs one node (see `child_node`).
const CHILD_REDIS: &str = "TIDINGS_TEST_CHILD_NODE_REDIS";
/// Its publish queue, when set.
const CHILD_QUEUE: &str = "TIDINGS_TEST_CHILD_NODE_QUEUE";

/// Not a test: the entry point of a node in a child process of this test binary, which the
/// tests below kill with SIGKILL (a node that dies with no time to hand anything on). It prints
/// its address and serves until it is killed.
#[test]
#[ignore = "run by the killed-node tests as a child process"]
fn child_node() {
    let Ok(url) = std::env::var(CHILD_REDIS) else {
        return;
    };
    let n = node_on(&url, Duration::ZERO);
    println!("NODE {}", n.server.local_addr());
    // Bounded: the parent kills it long before.
    std::thread::sleep(Duration::from_secs(120));
}

/// A node in a child process; killed (SIGKILL) when dropped.
struct ChildNode {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl ChildNode {
    fn start(redis: &RedisServer) -> ChildNode {
        Self::start_with_queue(redis, None)
    }

    fn start_with_queue(redis: &RedisServer, queue: Option<usize>) -> ChildNode {
        use std::io::BufRead;
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        if let Some(q) = queue {
            command.env(CHILD_QUEUE, q.to_string());
        }
        let mut child = command
            .args([
                "--exact",
                "child_node",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_REDIS, redis.url())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the child node starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                // (The harness may have written the test's name on the same line.)
                if let Some((_, addr)) = line.split_once("NODE ") {
                    let _ = tx.send(addr.parse::<std::net::SocketAddr>().unwrap());
                    return;
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the child node printed its address");
        ChildNode { child, addr }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the node has written the emits of socket `pid` to Redis (a node's writes keep
/// their order, so everything before them is there too).
fn emits_written(redis: &RedisServer, pid: &str) {
    eventually("the emits are written", || emits_in_redis(redis, pid));
}

/// Whether the emits of socket `pid` are in Redis.
fn emits_in_redis(redis: &RedisServer, pid: &str) -> bool {
    String::from_utf8_lossy(&redis.command(&["KEYS", "rec:emits:*"])).contains(pid)
}

fn ack(c: &mut SioClient, id: u64, event: &str, room: &str) {
    c.emit_with_ack(id, event, vec![json!(room)]);
    assert_eq!(c.expect_packet().kind, PacketKind::Ack);
}

#[test]
fn a_killed_nodes_socket_recovers_on_another_node_with_everything_it_missed() {
    let redis = RedisServer::start();
    let b = node(&redis);
    let api_b = NotificationService::new(b.server.handle());
    let alice = Identity::new("acme", "alice");
    let mut a = ChildNode::start(&redis);
    let (mut c, hello) = connect_with_auth(a.addr, json!({"tenant": "acme", "user": "alice"}));
    let sid = hello["sid"].as_str().unwrap().to_string();
    let pid = hello["pid"].as_str().unwrap().to_string();
    ack(&mut c, 1, "join", "desk");
    ack(&mut c, 2, "join", "old");
    api_b
        .broadcast_to_user(Transport::SocketIo, &alice, "before", &json!(0))
        .unwrap();
    let (name, _, offset) = event(&mut c);
    assert_eq!(name, "before");
    api_b.broadcast_to_room("old", "m", &json!(1)).unwrap();
    assert_eq!(event(&mut c).1, json!(1));
    ack(&mut c, 3, "leave", "old");
    // Node a's own emit to the socket, which the client then loses with its connection (it
    // presents the offset of "before").
    c.emit("echo", vec![json!(1.5)]);
    assert_eq!(event(&mut c).1, json!(1.5));
    emits_written(&redis, &pid);

    // Node a is killed: no shutdown, no handoff.
    a.kill();
    let _ = c.expect_closed(16);
    // The gap, from the node that lives: the user's, its socket room's, a room it left, a room
    // it was never in, everyone's.
    api_b
        .broadcast_to_user(Transport::SocketIo, &alice, "m", &json!(2))
        .unwrap();
    api_b.broadcast_to_room("desk", "m", &json!(3)).unwrap();
    api_b
        .broadcast_to_room("old", "m", &json!("left it"))
        .unwrap();
    api_b
        .broadcast_to_room("elsewhere", "m", &json!("not yours"))
        .unwrap();
    api_b
        .provider(Transport::Both)
        .broadcast()
        .to_all("m", &json!(4))
        .unwrap();
    let mut c = recover_on(
        &b,
        (&sid, &pid, &offset),
        &[json!(1), json!(1.5), json!(2), json!(3), json!(4)],
    );
    // It lives on node b now, in the room it was in, not the one it left.
    api_b.broadcast_to_room("desk", "after", &json!(5)).unwrap();
    api_b
        .broadcast_to_room("old", "after", &json!("left it"))
        .unwrap();
    let (name, data, _) = event(&mut c);
    assert_eq!((name.as_str(), data), ("after", json!(5)));
    c.expect_silence(QUIET);
    // The record was taken: nobody else can take it again.
    let keys = redis.command(&["KEYS", "rec:emits:*"]);
    assert!(
        !String::from_utf8_lossy(&keys).contains(&pid),
        "its emits were taken"
    );
}

#[test]
fn a_killed_nodes_record_is_for_its_own_user_only_and_goes_with_a_clean_disconnect() {
    let redis = RedisServer::start();
    let b = node(&redis);
    let mut a = ChildNode::start(&redis);
    let alice = json!({"tenant": "acme", "user": "alice"});
    let (mut c, hello) = connect_with_auth(a.addr, alice.clone());
    let pid = hello["pid"].as_str().unwrap().to_string();
    c.emit("echo", vec![json!("hi")]);
    assert_eq!(event(&mut c).1, json!("hi"));
    emits_written(&redis, &pid);
    // A second socket that leaves cleanly before the kill: its record goes with it.
    let (mut gone, hello) = connect_with_auth(a.addr, alice.clone());
    let gone_pid = hello["pid"].as_str().unwrap().to_string();
    gone.emit("echo", vec![json!("bye")]);
    assert_eq!(event(&mut gone).1, json!("bye"));
    emits_written(&redis, &gone_pid);
    gone.send_packet(&tidings::proto::sio::Packet::disconnect("/"));
    eventually("the record of a closed socket goes", || {
        !emits_in_redis(&redis, &gone_pid)
    });
    a.kill();
    let _ = c.expect_closed(16);

    // Mallory with alice's pid: a fresh session, and alice's record stays.
    let (_m, got) = connect_with_auth(
        b.server.local_addr(),
        json!({"tenant": "acme", "user": "mallory", "pid": pid}),
    );
    assert_ne!(
        got["pid"],
        json!(pid),
        "a fresh session for another identity"
    );
    let (_, recovered, _) = b.connected.recv_timeout(WAIT).unwrap();
    assert!(!recovered);
    // Alice recovers, with the emit she had not seen (no offset: nothing seen yet).
    let mut with_pid = alice.clone();
    with_pid["pid"] = json!(pid);
    let (mut c, again) = connect_with_auth(b.server.local_addr(), with_pid);
    assert_eq!(again["pid"], json!(pid));
    assert_eq!(event(&mut c).1, json!("hi"));
    // The socket that left cleanly is gone for good.
    let mut with_gone = alice;
    with_gone["pid"] = json!(gone_pid);
    let (_g, fresh) = connect_with_auth(b.server.local_addr(), with_gone);
    assert_ne!(fresh["pid"], json!(gone_pid));
}

/// Whether some node's records in Redis hold a field of socket `pid`.
fn record_in_redis(redis: &RedisServer, pid: &str) -> bool {
    let keys = redis.command(&["KEYS", "rec:sess:*"]);
    let keys = String::from_utf8_lossy(&keys).to_string();
    keys.split("\r\n")
        .filter(|k| k.starts_with("rec:sess:"))
        .any(|k| String::from_utf8_lossy(&redis.command(&["HKEYS", k])).contains(pid))
}

#[test]
fn a_record_that_missed_a_write_is_deleted_and_never_restored_with_a_hole() {
    let mut redis = RedisServer::start();
    let b = node(&redis);
    // Node a's publish queue holds 4 writes: with Redis away, the fifth is lost.
    let mut a = ChildNode::start_with_queue(&redis, Some(4));
    let (mut c, hello) = connect_with_auth(a.addr, json!({"tenant": "acme", "user": "alice"}));
    let pid = hello["pid"].as_str().unwrap().to_string();
    eventually("the record is written", || record_in_redis(&redis, &pid));
    redis.kill();
    // Emits while Redis is away: delivered, but more of them than the queue holds.
    for i in 0..12 {
        c.emit("echo", vec![json!(i)]);
        assert_eq!(event(&mut c).1, json!(i));
    }
    redis.restart();
    // Node a deletes the record it could not keep whole.
    let after_outage = Duration::from_secs(20);
    eventually_within("the record with a hole is deleted", after_outage, || {
        !record_in_redis(&redis, &pid)
    });
    eventually_within("node b reconnects", after_outage, || {
        b.server.handle().cluster_connected() == Some(true)
    });
    a.kill();
    let _ = c.expect_closed(64);
    // Alice comes back on node b: a fresh session, not a replay that misses emits.
    let (_c, again) = connect_with_auth(
        b.server.local_addr(),
        json!({"tenant": "acme", "user": "alice", "pid": pid}),
    );
    assert_ne!(again["pid"], json!(pid), "a fresh session");
}
