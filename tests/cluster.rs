//! A cluster of tidings nodes through a real `redis-server` (started here on a free 127.0.0.1
//! port): every API call on one node, clients of both transports on the others, deliveries
//! checked exactly; membership, acks and counts across nodes; resume on another node; Redis
//! killed and restarted under sends.
#![cfg(feature = "redis")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::redis::RedisServer;
use support::sio::*;
use support::sse::*;
use support::*;
use tidings::{
    AckOutcome, AckOutcomes, BroadcastError, ClusterConfig, Config, Identity, NotificationService,
    Server, Target, Transport,
};

fn node(redis: &RedisServer, prefix: &str, config: Config) -> Server {
    let mut cluster = ClusterConfig::new(redis.url());
    cluster.prefix = prefix.to_string();
    cluster.retry_for = Duration::from_secs(30);
    Server::builder(config)
        .authenticate(auth_hook)
        .cluster(cluster)
        .start()
        .expect("node starts")
}

fn sse_config() -> Config {
    Config {
        sse_path: Some("/events".into()),
        ..test_config()
    }
}

/// Waits until `f` holds (bounded).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sio_event(c: &mut SioClient) -> (String, Value) {
    let (name, args, _) = c.expect_event();
    (name, args.first().cloned().unwrap_or(Value::Null))
}

#[test]
fn three_nodes_are_one_service() {
    let redis = RedisServer::start();
    let nodes: Vec<Server> = (0..3).map(|_| node(&redis, "t1", sse_config())).collect();
    let api = NotificationService::new(nodes[0].handle());

    let mut alice_b = SioClient::connect_as(nodes[1].local_addr(), "acme", "alice");
    let mut bob_c = SioClient::connect_as(nodes[2].local_addr(), "acme", "bob");
    let mut eve_c = SioClient::connect_as(nodes[2].local_addr(), "evil", "alice");
    let mut alice_sse_c = sse_open(nodes[2].local_addr(), "/events?tenant=acme&user=alice", &[])
        .unwrap_or_else(|r| panic!("stream refused: {r:?}"));
    // The streams and sockets are registered on their nodes before anything is sent.
    eventually("every node has its connections", || {
        let n1 = nodes[1].handle().stats().unwrap();
        let n2 = nodes[2].handle().stats().unwrap();
        n1.sio_sockets == 1 && n2.sio_sockets == 2 && n2.sse_streams == 1
    });

    let alice = Identity::new("acme", "alice");
    api.broadcast_to_user(Transport::Both, &alice, "hello", &json!({"n": 1}))
        .unwrap();
    assert_eq!(sio_event(&mut alice_b), ("hello".into(), json!({"n": 1})));
    let ev = alice_sse_c.expect_event();
    assert_eq!(ev.event, "hello");
    assert_eq!(ev.data, "{\"n\":1}");

    api.broadcast_to_tenant(Transport::SocketIo, "acme", "t", &json!(2))
        .unwrap();
    assert_eq!(sio_event(&mut alice_b), ("t".into(), json!(2)));
    assert_eq!(sio_event(&mut bob_c), ("t".into(), json!(2)));

    // Rooms live in Redis: joined on node 0, heard on 1 and 2, read back from 2.
    api.join_room(&alice, "ops").unwrap();
    let on_c = NotificationService::new(nodes[2].handle());
    assert_eq!(on_c.user_rooms(&alice).unwrap(), vec!["ops".to_string()]);
    api.broadcast_to_room("ops", "room", &json!("r")).unwrap();
    assert_eq!(sio_event(&mut alice_b), ("room".into(), json!("r")));
    let ev = alice_sse_c.expect_event();
    assert_eq!(ev.event, "room");

    // Counted from every node.
    let reach = api
        .send_counted(Transport::Both, &Target::All, "all", &json!(3))
        .unwrap();
    assert_eq!((reach.sse, reach.socketio), (1, 3));
    for c in [&mut alice_b, &mut bob_c, &mut eve_c] {
        assert_eq!(sio_event(c), ("all".into(), json!(3)));
    }
    assert_eq!(alice_sse_c.expect_event().event, "all");

    // The other tenant's alice heard only `to_all`.
    eve_c.expect_silence(QUIET);
    // Nothing else reached anyone.
    alice_b.expect_silence(QUIET);
    bob_c.expect_silence(QUIET);
    assert!(alice_sse_c.next_event(QUIET).is_none());

    // Acks from a socket on another node.
    let asker = api
        .provider(Transport::SocketIo)
        .socketio_features()
        .unwrap();
    let answering = std::thread::spawn(move || {
        let (name, args, p) = alice_b.expect_event();
        assert_eq!(name, "ask");
        assert_eq!(args, vec![json!({"q": 1})]);
        alice_b.ack(p.id.expect("an ack id"), vec![json!("yes")]);
        alice_b
    });
    let outcomes = asker
        .to_user_with_ack(&alice, "ask", &json!({"q": 1}), Duration::from_secs(3))
        .unwrap();
    let _alice_b = answering.join().unwrap();
    match outcomes {
        AckOutcomes::Outcomes(r) => {
            assert_eq!(r.len(), 1);
            assert!(
                matches!(&r[0].outcome, AckOutcome::Ok { args, .. } if args == &vec![json!("yes")])
            );
        }
        other => panic!("expected one outcome, got {other:?}"),
    }
    let nobody = Identity::new("acme", "nobody");
    assert_eq!(
        asker
            .to_user_with_ack(&nobody, "ask", &json!(1), Duration::from_secs(1))
            .unwrap(),
        AckOutcomes::NoRecipients
    );
}

#[test]
fn an_sse_stream_resumes_on_another_node() {
    let redis = RedisServer::start();
    let a = node(&redis, "t2", sse_config());
    let b = node(&redis, "t2", sse_config());
    let api = NotificationService::new(a.handle());
    let bob = Identity::new("acme", "bob");
    let mut s = sse_open(a.local_addr(), "/events?tenant=acme&user=bob", &[]).unwrap();
    eventually("stream registered", || {
        a.handle().stats().unwrap().sse_streams == 1
    });
    api.broadcast_to_user(Transport::Sse, &bob, "m", &json!(1))
        .unwrap();
    let first = s.expect_event();
    let id = first.last_event_id.clone();
    drop(s);
    for n in 2..=4 {
        api.broadcast_to_user(Transport::Sse, &bob, "m", &json!(n))
            .unwrap();
    }
    // Wait until node b has them (it delivers what it hears from Redis).
    std::thread::sleep(Duration::from_millis(200));
    let mut again = sse_open(
        b.local_addr(),
        "/events?tenant=acme&user=bob",
        &[("Last-Event-ID", id.as_str())],
    )
    .unwrap();
    for n in 2..=4 {
        let ev = again.expect_event();
        assert_eq!(ev.data, n.to_string(), "{ev:?}");
    }
    assert!(again.next_event(QUIET).is_none());
}

#[test]
fn a_node_started_later_loads_rooms_and_history() {
    let redis = RedisServer::start();
    let a = node(&redis, "t3", sse_config());
    let api = NotificationService::new(a.handle());
    let carol = Identity::new("acme", "carol");
    api.join_room(&carol, "late").unwrap();
    api.broadcast_to_room("late", "r", &json!(1)).unwrap();
    api.broadcast_to_room("late", "r", &json!(2)).unwrap();
    let b = node(&redis, "t3", sse_config());
    let on_b = NotificationService::new(b.handle());
    assert_eq!(on_b.user_rooms(&carol).unwrap(), vec!["late".to_string()]);
    // From the start of the history: `<epoch>:0` is "before everything".
    let first_id = {
        let mut s = sse_open(b.local_addr(), "/events?tenant=acme&user=carol", &[]).unwrap();
        eventually("stream on b", || {
            b.handle().stats().unwrap().sse_streams == 1
        });
        api.broadcast_to_room("late", "r", &json!(3)).unwrap();
        let ev = s.expect_event();
        assert_eq!(ev.data, "3");
        ev.last_event_id.clone()
    };
    let (epoch, seq) = split_id(&first_id);
    assert!(seq > 0);
    // Resume from before the first room event: node b serves 1 and 2 from the history it loaded.
    let mut s = sse_open(
        b.local_addr(),
        "/events?tenant=acme&user=carol",
        &[("Last-Event-ID", &format!("{epoch}:0"))],
    )
    .unwrap();
    let got: Vec<String> = (0..3).map(|_| s.expect_event().data).collect();
    assert_eq!(got, vec!["1", "2", "3"]);
}

#[test]
fn redis_down_refuses_sends_then_the_cluster_recovers() {
    let mut redis = RedisServer::start();
    let a = node(&redis, "t4", sse_config());
    let b = node(&redis, "t4", sse_config());
    let api = NotificationService::new(a.handle());
    let dan = Identity::new("acme", "dan");
    let mut s = sse_open(b.local_addr(), "/events?tenant=acme&user=dan", &[]).unwrap();
    eventually("stream registered", || {
        b.handle().stats().unwrap().sse_streams == 1
    });
    api.broadcast_to_user(Transport::Sse, &dan, "m", &json!(1))
        .unwrap();
    assert_eq!(s.expect_event().data, "1");

    redis.kill();
    eventually("node a sees Redis gone", || {
        // A send finds out: refused, never panics.
        matches!(
            api.broadcast_to_user(Transport::Sse, &dan, "probe", &json!(0)),
            Err(BroadcastError::ClusterUnavailable(_))
        ) || a.handle().cluster_connected() == Some(false)
    });
    assert!(matches!(
        api.broadcast_to_user(Transport::Sse, &dan, "m", &json!(-1)),
        Err(BroadcastError::ClusterUnavailable(_))
    ));
    redis.restart();
    eventually("node a reconnects", || {
        a.handle().cluster_connected() == Some(true)
    });
    // Sends work again, and reach the stream on the other node (its subscriber came back).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        api.broadcast_to_user(Transport::Sse, &dan, "m", &json!(2))
            .unwrap();
        match s.next_event(Duration::from_millis(500)) {
            Some(ev) if ev.event == "m" && ev.data == "2" => break,
            Some(ev) if ev.event == "probe" => continue,
            Some(ev) => panic!("unexpected {ev:?}"),
            None => assert!(
                Instant::now() < deadline,
                "no delivery after Redis came back"
            ),
        }
    }
}
