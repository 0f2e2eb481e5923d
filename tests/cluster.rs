//! A cluster of tidings nodes through a real `redis-server` (started here on a free 127.0.0.1
//! port): every API call on one node, clients of both transports on the others, deliveries
//! checked exactly; membership, acks and counts across nodes; resume on another node; Redis
//! killed and restarted under sends; a seeded random sequence of steps against a model of one
//! server (`TIDINGS_CLUSTER_SEED=<hex>` replays a seed); handlers' room emits, namespaces and
//! limits; foreign messages on the cluster's channels; Redis losing its data; a node replaced.
#![cfg(feature = "redis")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::redis::{RedisServer, Resp};
use support::sio::*;
use support::sse::*;
use support::*;
use tidings::proto::sio::PacketKind;
use tidings::{
    AckOutcome, AckOutcomes, BroadcastError, ClusterConfig, Config, Identity, NotificationService,
    RoomLimit, Server, ServerBuilder, Target, Transport,
};

fn cluster_settings(redis: &RedisServer, prefix: &str) -> ClusterConfig {
    let mut cluster = ClusterConfig::new(redis.url());
    cluster.prefix = prefix.to_string();
    cluster.retry_for = Duration::from_secs(30);
    cluster
}

fn node(redis: &RedisServer, prefix: &str, config: Config) -> Server {
    node_built(
        redis,
        prefix,
        Server::builder(config).authenticate(auth_hook),
    )
}

/// A node from a builder that already has its hook and handlers.
fn node_built(redis: &RedisServer, prefix: &str, builder: ServerBuilder) -> Server {
    builder
        .cluster(cluster_settings(redis, prefix))
        .start()
        .expect("node starts")
}

fn sse_config() -> Config {
    Config {
        sse_path: Some("/events".into()),
        ..test_config()
    }
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
    assert_eq!(
        alice_b.expect_event_arg(),
        ("hello".into(), json!({"n": 1}))
    );
    let ev = alice_sse_c.expect_event();
    assert_eq!(ev.event, "hello");
    assert_eq!(ev.data, "{\"n\":1}");

    api.broadcast_to_tenant(Transport::SocketIo, "acme", "t", &json!(2))
        .unwrap();
    assert_eq!(alice_b.expect_event_arg(), ("t".into(), json!(2)));
    assert_eq!(bob_c.expect_event_arg(), ("t".into(), json!(2)));

    // Rooms live in Redis: joined on node 0, heard on 1 and 2, read back from 2.
    api.join_room(&alice, "ops").unwrap();
    let on_c = NotificationService::new(nodes[2].handle());
    assert_eq!(on_c.user_rooms(&alice).unwrap(), vec!["ops".to_string()]);
    api.broadcast_to_room("ops", "room", &json!("r")).unwrap();
    assert_eq!(alice_b.expect_event_arg(), ("room".into(), json!("r")));
    let ev = alice_sse_c.expect_event();
    assert_eq!(ev.event, "room");

    // Counted from every node.
    let reach = api
        .send_counted(Transport::Both, &Target::All, "all", &json!(3))
        .unwrap();
    assert_eq!((reach.sse, reach.socketio), (1, 3));
    for c in [&mut alice_b, &mut bob_c, &mut eve_c] {
        assert_eq!(c.expect_event_arg(), ("all".into(), json!(3)));
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

// ---------------------------------------------------------------------------------------------
// A random sequence of steps on three nodes, checked against a model of one server.
// ---------------------------------------------------------------------------------------------

/// xorshift64: the same steps for the same seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const MODEL_TENANTS: [&str; 2] = ["acme", "beta"];
const MODEL_USERS: [&str; 3] = ["u0", "u1", "u2"];
const MODEL_ROOMS: [&str; 4] = ["r0", "r1", "r2", "r3"];
const MODEL_ROOMS_PER_USER: usize = 2;
const MODEL_MAX_LIVE: usize = 14;
const MODEL_STEPS: usize = 300;

/// A configuration whose Socket.IO pings do not need a reader: the model reads a client only
/// when it checks it.
fn quiet_pings(config: Config) -> Config {
    Config {
        ping_interval: Duration::from_secs(120),
        ping_timeout: Duration::from_secs(120),
        ..config
    }
}

/// One send of the run: event `n` is `sent[n]`.
#[derive(Debug)]
struct Sent {
    event: String,
    data: Value,
    origin: usize,
    /// Sends of one batch were made without waiting in between (from several nodes): their
    /// order across nodes is Redis's.
    batch: u64,
}

enum Conn {
    Sio(Box<SioClient>),
    Sse(Box<SseStream>),
}

struct Client {
    label: String,
    sse: bool,
    user: Option<Identity>,
    node: usize,
    /// `None`: closed (for good, or `away`).
    conn: Option<Conn>,
    /// An SSE stream closed by its client that will come back with `Last-Event-ID`: what is
    /// sent to it meanwhile must be replayed then.
    away: bool,
    expected: Vec<u64>,
    got: Vec<u64>,
    /// `expected[..checked]` was checked against `got[..checked]`.
    checked: usize,
    last_id: Option<String>,
    last_seq: u64,
}

impl Client {
    fn live(&self) -> bool {
        self.conn.is_some()
    }

    /// Live, or away with events kept for it.
    fn listening(&self) -> bool {
        self.conn.is_some() || self.away
    }
}

fn user_label(user: Option<&Identity>) -> String {
    user.map_or_else(
        || "anonymous".to_string(),
        |u| format!("{}/{}", u.tenant, u.user),
    )
}

fn target_label(target: &Target) -> String {
    match target {
        Target::User(u) => format!("user {}", user_label(Some(u))),
        Target::Tenant(t) => format!("tenant {t}"),
        Target::All => "all".to_string(),
        Target::Room(r) => format!("room {r}"),
    }
}

fn fire(
    api: &NotificationService,
    transport: Transport,
    target: &Target,
    event: &str,
    data: &Value,
) -> Result<(), BroadcastError> {
    let b = api.provider(transport).broadcast();
    match target {
        Target::User(u) => b.to_user(u, event, data),
        Target::Tenant(t) => b.to_tenant(t, event, data),
        Target::All => b.to_all(event, data),
        Target::Room(r) => b.to_room(r, event, data),
    }
}

/// Does a send reach this client, with the memberships `rooms`?
fn model_reaches(
    sse: bool,
    user: Option<&Identity>,
    rooms: &BTreeMap<Identity, BTreeSet<String>>,
    transport: Transport,
    target: &Target,
) -> bool {
    let on = match transport {
        Transport::Both => true,
        Transport::Sse => sse,
        Transport::SocketIo => !sse,
    };
    on && match target {
        Target::All => true,
        Target::User(u) => user == Some(u),
        Target::Tenant(t) => user.is_some_and(|u| &u.tenant == t),
        Target::Room(r) => user.is_some_and(|u| rooms.get(u).is_some_and(|s| s.contains(r))),
    }
}

fn open_sse(addr: std::net::SocketAddr, user: Option<&Identity>, last: Option<&str>) -> SseStream {
    let target = match user {
        Some(u) => format!("/events?tenant={}&user={}", u.tenant, u.user),
        None => "/events".to_string(),
    };
    let headers: Vec<(&str, &str)> = last.map(|l| vec![("Last-Event-ID", l)]).unwrap_or_default();
    sse_open(addr, &target, &headers).unwrap_or_else(|r| panic!("stream refused: {r:?}"))
}

fn open_sio(addr: std::net::SocketAddr, user: Option<&Identity>) -> SioClient {
    match user {
        Some(u) => SioClient::connect_as(addr, &u.tenant, &u.user),
        None => {
            let (c, p) = SioClient::connect_with(addr, Some(json!({})));
            assert_eq!(
                p.kind,
                PacketKind::Connect,
                "anonymous connect refused: {p:?}"
            );
            c
        }
    }
}

struct Model {
    seed: u64,
    step: usize,
    rng: Rng,
    nodes: Vec<Server>,
    apis: Vec<NotificationService>,
    clients: Vec<Client>,
    sent: Vec<Sent>,
    rooms: BTreeMap<Identity, BTreeSet<String>>,
    batch: u64,
    /// Nodes that sent since the last barrier.
    unsettled: BTreeSet<usize>,
    /// `(a, b)`: some client got event `a` before event `b`.
    before: HashSet<(u64, u64)>,
    /// The SSE id each event had (the same on every node).
    sse_ids: HashMap<u64, String>,
}

impl Model {
    fn log(&self, what: &str) {
        eprintln!("[seed {:#x} step {}] {what}", self.seed, self.step);
    }

    fn users() -> Vec<Identity> {
        MODEL_TENANTS
            .iter()
            .flat_map(|t| MODEL_USERS.iter().map(move |u| Identity::new(*t, *u)))
            .collect()
    }

    fn random_user(&mut self) -> Identity {
        let users = Model::users();
        users[self.rng.below(users.len())].clone()
    }

    fn random_room(&mut self) -> String {
        MODEL_ROOMS[self.rng.below(MODEL_ROOMS.len())].to_string()
    }

    fn random_target(&mut self) -> Target {
        match self.rng.below(20) {
            0..=4 => Target::User(self.random_user()),
            5 => Target::User(Identity::new("acme", "nobody-here")),
            6..=8 => Target::Tenant(MODEL_TENANTS[self.rng.below(2)].to_string()),
            9 => Target::Tenant("gamma".to_string()),
            10..=12 => Target::All,
            _ => Target::Room(self.random_room()),
        }
    }

    fn random_transport(&mut self) -> Transport {
        [Transport::Both, Transport::Sse, Transport::SocketIo][self.rng.below(3)]
    }

    fn live(&self) -> Vec<usize> {
        (0..self.clients.len())
            .filter(|&i| self.clients[i].live())
            .collect()
    }

    fn away(&self) -> Vec<usize> {
        (0..self.clients.len())
            .filter(|&i| self.clients[i].away)
            .collect()
    }

    /// Every node has the connections the model says, no more (a close was noticed, a new
    /// connection is registered before anything is sent to it).
    fn wait_counts(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            let on = |sse: bool| {
                self.clients
                    .iter()
                    .filter(|c| c.live() && c.sse == sse && c.node == i)
                    .count()
            };
            let (sse, sio) = (on(true), on(false));
            eventually(
                &format!("node {i} has {sio} sockets and {sse} streams"),
                || {
                    let s = node.handle().stats().unwrap();
                    s.sio_sockets == sio && s.sse_streams == sse
                },
            );
        }
    }

    /// Sends event `n` (the returned number) and records who must get it.
    fn send(
        &mut self,
        origin: usize,
        transport: Transport,
        target: Target,
        counted: bool,
        tag: &str,
    ) -> u64 {
        let n = self.sent.len() as u64;
        let kind = match &target {
            Target::User(_) => "user",
            Target::Tenant(_) => "tenant",
            Target::All => "all",
            Target::Room(_) => "room",
        };
        let event = format!("{tag}-{kind}");
        let data = json!({"n": n, "from": origin});
        let (mut sse, mut sio) = (0, 0);
        for c in &mut self.clients {
            if c.listening()
                && model_reaches(c.sse, c.user.as_ref(), &self.rooms, transport, &target)
            {
                c.expected.push(n);
                if c.live() {
                    if c.sse {
                        sse += 1;
                    } else {
                        sio += 1;
                    }
                }
            }
        }
        self.log(&format!(
            "send {n} {event} {transport:?} to {} from node {origin}{} (live reach: {sse} sse, {sio} sio)",
            target_label(&target),
            if counted { " counted" } else { "" },
        ));
        self.sent.push(Sent {
            event: event.clone(),
            data: data.clone(),
            origin,
            batch: self.batch,
        });
        let api = &self.apis[origin];
        if counted {
            let reach = api
                .send_counted(transport, &target, &event, &data)
                .unwrap_or_else(|e| panic!("send_counted {n} refused: {e:?}"));
            assert_eq!(
                (reach.sse, reach.socketio),
                (sse, sio),
                "send_counted {n} to {}: the reach summed over the nodes",
                target_label(&target)
            );
            // Every node answered: it is delivered everywhere.
            self.batch += 1;
        } else {
            fire(api, transport, &target, &event, &data)
                .unwrap_or_else(|e| panic!("send {n} refused: {e:?}"));
            self.unsettled.insert(origin);
        }
        n
    }

    /// Waits until every node delivered everything sent so far: a counted send from each node
    /// that sent (it comes after that node's sends, and every node answers it once its loops
    /// have handled it). It reaches nobody.
    fn settle(&mut self) {
        let nobody = Target::User(Identity::new("zz", "barrier"));
        for origin in std::mem::take(&mut self.unsettled) {
            let reach = self.apis[origin]
                .send_counted(Transport::Both, &nobody, "barrier", &json!(null))
                .unwrap_or_else(|e| panic!("barrier on node {origin} refused: {e:?}"));
            assert_eq!(reach.total(), 0, "the barrier reached someone");
        }
        self.batch += 1;
    }

    /// Reads one event of a live client; its number.
    fn read_one(&mut self, ci: usize) -> u64 {
        let c = &mut self.clients[ci];
        let label = c.label.clone();
        let (name, data, id) = match c.conn.as_mut().expect("a live client") {
            Conn::Sio(s) => match s.recv(WAIT) {
                SioEvent::Packet(p) if p.kind == PacketKind::Event && p.nsp == "/" => {
                    let Some(Value::Array(mut items)) = p.data.clone() else {
                        panic!("{label}: event payload {p:?}");
                    };
                    let name = items.remove(0);
                    assert_eq!(items.len(), 1, "{label}: one argument expected in {p:?}");
                    (
                        name.as_str().unwrap_or_default().to_string(),
                        items.remove(0),
                        None,
                    )
                }
                other => panic!("{label}: expected an event, got {other:?}"),
            },
            Conn::Sse(s) => match s.next_event(WAIT) {
                Some(ev) => {
                    let data: Value = serde_json::from_str(&ev.data)
                        .unwrap_or_else(|_| panic!("{label}: SSE data is not JSON: {ev:?}"));
                    (ev.event, data, Some(ev.last_event_id))
                }
                None => panic!(
                    "{label}: no SSE event within {WAIT:?} (closed: {})",
                    s.closed
                ),
            },
        };
        let n = data
            .get("n")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{label}: not one of ours: {name} {data}"));
        let sent = self
            .sent
            .get(n as usize)
            .unwrap_or_else(|| panic!("{label}: event {n} was never sent"));
        assert_eq!(
            (&name, &data),
            (&sent.event, &sent.data),
            "{label}: event {n} as sent"
        );
        if let Some(id) = id {
            let (_, seq) = split_id(&id);
            assert!(
                seq > c.last_seq,
                "{label}: id {id} of event {n} is not after the previous one ({})",
                c.last_seq
            );
            c.last_seq = seq;
            c.last_id = Some(id.clone());
            let first = self.sse_ids.entry(n).or_insert_with(|| id.clone());
            assert_eq!(
                *first, id,
                "{label}: event {n} has another id than on another stream"
            );
        }
        c.got.push(n);
        n
    }

    fn describe(&self, ns: &[u64]) -> String {
        ns.iter()
            .map(|&n| {
                let s = &self.sent[n as usize];
                format!("{n}:{}@{}", s.event, s.origin)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Reads until event `until` (which this client must get), then checks what came since the
    /// last check: exactly the expected events, each once; within a batch in the order of each
    /// sender, and in the same order as every other client saw them.
    fn drain(&mut self, ci: usize, until: u64) {
        let bound = self.clients[ci].expected.len() + 8;
        loop {
            let n = self.read_one(ci);
            if n == until {
                break;
            }
            assert!(
                self.clients[ci].got.len() <= bound,
                "{}: far more events than expected",
                self.clients[ci].label
            );
        }
        self.check(ci);
    }

    fn check(&mut self, ci: usize) {
        let c = &self.clients[ci];
        let exp = c.expected[c.checked..].to_vec();
        let got = c.got[c.checked..].to_vec();
        let label = c.label.clone();
        assert_eq!(
            exp.len(),
            got.len(),
            "{label}: expected [{}], got [{}]",
            self.describe(&exp),
            self.describe(&got)
        );
        let mut i = 0;
        while i < exp.len() {
            let batch = self.sent[exp[i] as usize].batch;
            let mut j = i;
            while j < exp.len() && self.sent[exp[j] as usize].batch == batch {
                j += 1;
            }
            let (mut e, mut g) = (exp[i..j].to_vec(), got[i..j].to_vec());
            e.sort_unstable();
            g.sort_unstable();
            assert_eq!(
                e,
                g,
                "{label}: expected [{}], got [{}]",
                self.describe(&exp),
                self.describe(&got)
            );
            for x in i..j {
                for y in x + 1..j {
                    let (a, b) = (got[x], got[y]);
                    if self.sent[a as usize].origin == self.sent[b as usize].origin {
                        assert!(
                            a < b,
                            "{label}: events {a} and {b} of one node out of order"
                        );
                    }
                    assert!(
                        !self.before.contains(&(b, a)),
                        "{label}: got {a} before {b}, another client the other way round"
                    );
                    self.before.insert((a, b));
                }
            }
            i = j;
        }
        let c = &mut self.clients[ci];
        c.checked = c.got.len();
    }

    fn connect(&mut self, node: usize, sse: bool, user: Option<Identity>) -> usize {
        let addr = self.nodes[node].local_addr();
        let conn = if sse {
            Conn::Sse(Box::new(open_sse(addr, user.as_ref(), None)))
        } else {
            Conn::Sio(Box::new(open_sio(addr, user.as_ref())))
        };
        let ci = self.clients.len();
        let label = format!(
            "client {ci} ({} {} on node {node})",
            if sse { "sse" } else { "sio" },
            user_label(user.as_ref())
        );
        self.log(&format!("connect {label}"));
        self.clients.push(Client {
            label,
            sse,
            user,
            node,
            conn: Some(conn),
            away: false,
            expected: Vec::new(),
            got: Vec::new(),
            checked: 0,
            last_id: None,
            last_seq: 0,
        });
        self.wait_counts();
        ci
    }

    /// Checks a live client up to now: a marker only its user's connections get (everyone's,
    /// for an anonymous one), then everything up to it.
    fn check_now(&mut self, ci: usize) {
        let origin = self.rng.below(self.nodes.len());
        let target = match &self.clients[ci].user {
            Some(u) => Target::User(u.clone()),
            None => Target::All,
        };
        let n = self.send(origin, Transport::Both, target, false, "mark");
        self.settle();
        self.drain(ci, n);
    }

    /// Closes a live client after checking it; an SSE stream that has an id may stay `away`.
    fn disconnect(&mut self, ci: usize, away: bool) {
        self.check_now(ci);
        let c = &mut self.clients[ci];
        c.conn = None;
        c.away = away && c.sse && c.last_id.is_some();
        let what = if c.away { "away" } else { "gone" };
        self.log(&format!("disconnect {} ({what})", self.clients[ci].label));
        self.wait_counts();
    }

    /// An away SSE stream comes back on `node` with its last id.
    fn resume(&mut self, ci: usize, node: usize) {
        let addr = self.nodes[node].local_addr();
        let c = &mut self.clients[ci];
        assert!(c.away);
        let s = open_sse(addr, c.user.as_ref(), c.last_id.as_deref());
        c.conn = Some(Conn::Sse(Box::new(s)));
        c.away = false;
        c.node = node;
        c.label = format!(
            "client {ci} (sse {} resumed on node {node})",
            user_label(c.user.as_ref())
        );
        let waiting = c.expected.len() - c.checked;
        self.log(&format!(
            "resume {} after {:?} ({waiting} events to replay)",
            self.clients[ci].label, self.clients[ci].last_id
        ));
        self.wait_counts();
    }

    /// A live client moves to another node: a socket reconnects as a new one, a stream resumes.
    fn reconnect(&mut self, ci: usize) {
        let node =
            (self.clients[ci].node + 1 + self.rng.below(self.nodes.len() - 1)) % self.nodes.len();
        let (sse, user) = (self.clients[ci].sse, self.clients[ci].user.clone());
        self.disconnect(ci, true);
        if self.clients[ci].away {
            self.resume(ci, node);
        } else {
            self.connect(node, sse, user);
        }
    }

    fn check_rooms(&self, user: &Identity) {
        let want: Vec<String> = self
            .rooms
            .get(user)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for (i, api) in self.apis.iter().enumerate() {
            let got = api
                .user_rooms(user)
                .unwrap_or_else(|e| panic!("user_rooms on node {i}: {e:?}"));
            assert_eq!(
                got,
                want,
                "user_rooms({}) on node {i}",
                user_label(Some(user))
            );
        }
    }

    fn join(&mut self) {
        let (user, room, node) = (self.random_user(), self.random_room(), self.rng.below(3));
        let got = if self.rng.chance(50) {
            self.apis[node].join_room(&user, &room)
        } else {
            self.apis[node]
                .provider(Transport::SocketIo)
                .socketio_features()
                .unwrap()
                .join_room(&user, &room)
        };
        let set = self.rooms.entry(user.clone()).or_default();
        let want = if set.contains(&room) {
            Ok(())
        } else if set.len() >= MODEL_ROOMS_PER_USER {
            Err(BroadcastError::TooManyRooms(RoomLimit::PerUser(
                MODEL_ROOMS_PER_USER,
            )))
        } else {
            set.insert(room.clone());
            Ok(())
        };
        self.log(&format!(
            "join {} {room} on node {node}: {got:?}",
            user_label(Some(&user))
        ));
        assert_eq!(
            got,
            want,
            "join_room({}, {room}) on node {node}",
            user_label(Some(&user))
        );
        self.check_rooms(&user);
    }

    fn leave(&mut self) {
        let (user, room, node) = (self.random_user(), self.random_room(), self.rng.below(3));
        let got = self.apis[node].leave_room(&user, &room);
        self.log(&format!(
            "leave {} {room} on node {node}: {got:?}",
            user_label(Some(&user))
        ));
        assert_eq!(got, Ok(()));
        if let Some(set) = self.rooms.get_mut(&user) {
            set.remove(&room);
        }
        self.check_rooms(&user);
    }

    fn batch_of_sends(&mut self) {
        for _ in 0..1 + self.rng.below(4) {
            let origin = self.rng.below(self.nodes.len());
            let transport = self.random_transport();
            let target = self.random_target();
            self.send(origin, transport, target, false, "ev");
        }
        self.settle();
    }

    fn connect_random(&mut self) {
        let node = self.rng.below(self.nodes.len());
        let sse = self.rng.chance(50);
        let user = if self.rng.chance(10) {
            None
        } else {
            Some(self.random_user())
        };
        self.connect(node, sse, user);
    }

    fn step(&mut self) {
        let live = self.live();
        let away = self.away();
        match self.rng.below(100) {
            0..=11 if live.len() < MODEL_MAX_LIVE => self.connect_random(),
            12..=17 if !live.is_empty() => {
                let ci = live[self.rng.below(live.len())];
                let away = self.rng.chance(50);
                self.disconnect(ci, away);
            }
            18..=23 if !live.is_empty() => {
                let ci = live[self.rng.below(live.len())];
                self.reconnect(ci);
            }
            24..=28 if !away.is_empty() => {
                let ci = away[self.rng.below(away.len())];
                let node = self.rng.below(self.nodes.len());
                self.resume(ci, node);
            }
            29..=31 if !live.is_empty() => {
                let ci = live[self.rng.below(live.len())];
                self.check_now(ci);
            }
            32..=45 => self.join(),
            46..=53 => self.leave(),
            54..=61 => {
                let origin = self.rng.below(self.nodes.len());
                let (transport, target) = (self.random_transport(), self.random_target());
                self.send(origin, transport, target, true, "ev");
            }
            _ => self.batch_of_sends(),
        }
    }

    /// Everything that is left: the away streams come back, a last `to_all` marks the end of
    /// every client's events, nothing comes after it, and every node reads the model's rooms.
    fn finish(&mut self) {
        self.step = MODEL_STEPS;
        for ci in self.away() {
            let node = self.rng.below(self.nodes.len());
            self.resume(ci, node);
        }
        let origin = self.rng.below(self.nodes.len());
        let end = self.send(origin, Transport::Both, Target::All, false, "end");
        self.settle();
        let live = self.live();
        for &ci in &live {
            self.drain(ci, end);
        }
        std::thread::sleep(QUIET);
        for &ci in &live {
            let c = &mut self.clients[ci];
            match c.conn.as_mut().unwrap() {
                Conn::Sio(s) => match s.recv(Duration::from_millis(20)) {
                    SioEvent::Timeout => {}
                    other => panic!("{}: after the end: {other:?}", c.label),
                },
                Conn::Sse(s) => {
                    if let Some(ev) = s.next_event(Duration::from_millis(20)) {
                        panic!("{}: after the end: {ev:?}", c.label);
                    }
                }
            }
        }
        for user in Model::users() {
            self.check_rooms(&user);
        }
        let received: usize = self.clients.iter().map(|c| c.got.len()).sum();
        self.log(&format!(
            "{} events sent, {received} received by {} clients",
            self.sent.len(),
            self.clients.len()
        ));
        for (i, n) in self.nodes.iter().enumerate() {
            let m = n.handle().metrics();
            assert_eq!(m.cluster_dropped, 0, "node {i}: {m:?}");
            assert_eq!(m.cluster_foreign, 0, "node {i}: {m:?}");
            assert!(m.cluster_published > 0, "node {i}: {m:?}");
        }
    }
}

fn run_model(seed: u64) {
    let redis = RedisServer::start();
    let mut rng = Rng::new(seed);
    let loops = [1, 2, 1 + rng.below(2)];
    let prefix = format!("model{seed:x}");
    let nodes: Vec<Server> = loops
        .iter()
        .map(|&event_loops| {
            let config = Config {
                event_loops,
                max_rooms_per_user: MODEL_ROOMS_PER_USER,
                ..quiet_pings(sse_config())
            };
            node(&redis, &prefix, config)
        })
        .collect();
    let apis = nodes
        .iter()
        .map(|n| NotificationService::new(n.handle()))
        .collect();
    let mut m = Model {
        seed,
        step: 0,
        rng,
        nodes,
        apis,
        clients: Vec::new(),
        sent: Vec::new(),
        rooms: BTreeMap::new(),
        batch: 0,
        unsettled: BTreeSet::new(),
        before: HashSet::new(),
        sse_ids: HashMap::new(),
    };
    m.log(&format!("event loops per node: {loops:?}"));
    for _ in 0..6 {
        m.connect_random();
    }
    for step in 0..MODEL_STEPS {
        m.step = step;
        m.step();
    }
    m.finish();
}

/// Runs the model with `seed` (or `TIDINGS_CLUSTER_SEED`), naming the seed if it fails.
fn model_with_seed(seed: u64) {
    let seed = std::env::var("TIDINGS_CLUSTER_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(seed);
    let run = std::panic::catch_unwind(|| run_model(seed));
    if let Err(e) = run {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!(
            "the cluster model failed with seed {seed:#x} (TIDINGS_CLUSTER_SEED={seed:x}): {msg}"
        );
    }
}

#[test]
fn random_steps_on_three_nodes_match_one_server_seed_a() {
    model_with_seed(0x5eed_a11c_e000_0001);
}

#[test]
fn random_steps_on_three_nodes_match_one_server_seed_b() {
    model_with_seed(0x0dd_ba11_2024_0b0b);
}

// ---------------------------------------------------------------------------------------------
// Redis killed while a thread sends.
// ---------------------------------------------------------------------------------------------

/// Reads the numbered `n` events of a client until `end` (bounded by `within`); the numbers.
fn read_numbers_sse(mut s: SseStream, within: Duration) -> Vec<i64> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        match s.next_event(Duration::from_millis(200)) {
            Some(ev) if ev.event == "end" => return got,
            Some(ev) if ev.event == "n" => got.push(ev.data.parse().expect("a number")),
            Some(ev) => panic!("sse: unexpected {ev:?}"),
            None => assert!(!s.closed, "sse: the stream ended"),
        }
    }
    panic!("sse: no end within {within:?}; got {got:?}")
}

fn read_numbers_sio(mut c: SioClient, within: Duration) -> Vec<i64> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        match c.recv(Duration::from_millis(200)) {
            SioEvent::Packet(p) if p.kind == PacketKind::Event => {
                let items = p.data.clone().unwrap();
                match items[0].as_str() {
                    Some("end") => return got,
                    Some("n") => got.push(items[1].as_i64().expect("a number")),
                    _ => panic!("sio: unexpected {p:?}"),
                }
            }
            SioEvent::Timeout => {}
            other => panic!("sio: unexpected {other:?}"),
        }
    }
    panic!("sio: no end within {within:?}; got {got:?}")
}

const KILL_SENDS: i64 = 400;

/// Sends `n` events 0.. to `user` every 10 ms; per send: its number, whether it was accepted,
/// whether Redis had been killed before it.
fn spawn_sender(
    api: NotificationService,
    user: Identity,
    killed: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(i64, bool, bool)>> {
    std::thread::spawn(move || {
        let mut outcomes = Vec::new();
        for i in 0..KILL_SENDS {
            let after_kill = killed.load(Ordering::SeqCst);
            match api.broadcast_to_user(Transport::Both, &user, "n", &json!(i)) {
                Ok(()) => outcomes.push((i, true, after_kill)),
                Err(BroadcastError::ClusterUnavailable(_)) => outcomes.push((i, false, after_kill)),
                Err(e) => panic!("send {i}: {e:?}"),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        outcomes
    })
}

#[test]
fn redis_killed_during_sends_delivers_every_accepted_send_once_in_order() {
    let mut redis = RedisServer::start();
    let loops = [1, 2, 1];
    let nodes: Vec<Server> = loops
        .iter()
        .map(|&event_loops| {
            node(
                &redis,
                "t-kill",
                Config {
                    event_loops,
                    ..sse_config()
                },
            )
        })
        .collect();
    let dan = Identity::new("acme", "dan");
    let sse = open_sse(nodes[1].local_addr(), Some(&dan), None);
    let sio = SioClient::connect_as(nodes[2].local_addr(), "acme", "dan");
    eventually("the clients are registered", || {
        nodes[1].handle().stats().unwrap().sse_streams == 1
            && nodes[2].handle().stats().unwrap().sio_sockets == 1
    });
    let within = Duration::from_secs(60);
    let sse_reader = std::thread::spawn(move || read_numbers_sse(sse, within));
    let sio_reader = std::thread::spawn(move || read_numbers_sio(sio, within));

    let api = NotificationService::new(nodes[0].handle());
    let killed = Arc::new(AtomicBool::new(false));
    let sender = spawn_sender(api.clone(), dan.clone(), killed.clone());
    std::thread::sleep(Duration::from_millis(500));
    redis.kill();
    killed.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(2));
    redis.restart();
    let outcomes = sender.join().expect("the sender did not panic");
    // The node finds out that Redis is gone when it writes to it: the first send after the kill
    // is accepted, then retried (the retry path is exercised).
    assert!(
        outcomes.iter().any(|o| o.1 && o.2),
        "a send accepted after the kill: {outcomes:?}"
    );

    // The end marker, once the link is back.
    eventually("the end marker is accepted", || {
        api.broadcast_to_user(Transport::Both, &dan, "end", &json!(null))
            .is_ok()
    });
    let sse_got = sse_reader.join().expect("sse reader");
    let sio_got = sio_reader.join().expect("sio reader");
    let ok: Vec<i64> = outcomes.iter().filter(|o| o.1).map(|o| o.0).collect();
    let refused: Vec<i64> = outcomes.iter().filter(|o| !o.1).map(|o| o.0).collect();
    eprintln!(
        "{} sends accepted, {} refused (from {:?} to {:?})",
        ok.len(),
        refused.len(),
        refused.first(),
        refused.last()
    );
    assert!(
        !refused.is_empty(),
        "Redis was down for 2 s: some sends must be refused"
    );
    assert!(
        ok.iter().any(|&i| i > *refused.last().unwrap()),
        "sends are accepted again after Redis is back"
    );
    assert_eq!(
        sse_got, ok,
        "the SSE stream on node 1: every accepted send, once, in order"
    );
    assert_eq!(
        sio_got, ok,
        "the socket on node 2: every accepted send, once, in order"
    );

    for (i, n) in nodes.iter().enumerate() {
        let m = n.handle().metrics();
        assert_eq!(m.cluster_dropped, 0, "node {i}: {m:?}");
        assert!(m.cluster_reconnects >= 1, "node {i} came back: {m:?}");
        assert_eq!(m.cluster_foreign, 0, "node {i}: {m:?}");
        assert_eq!(n.handle().cluster_connected(), Some(true), "node {i}");
    }
    // Node 0 counts a publish when it reads Redis's answer, which can come after the other nodes
    // have delivered it (a whole pipelined batch is answered at once): wait for it. Every
    // accepted send and the end, each once (a retry Redis had already taken answers "dup").
    let expected = ok.len() as u64 + 1;
    let mut published = 0;
    eventually(
        "node 0 counts every accepted send and the end as published",
        || {
            published = nodes[0].handle().metrics().cluster_published;
            published >= expected
        },
    );
    assert_eq!(
        published, expected,
        "node 0 published every accepted send and the end, once"
    );

    // The nodes keep serving: a new stream on node 0 hears a send from node 2, and resumes on
    // node 1 from an id of before the outage.
    let mut fresh = open_sse(nodes[0].local_addr(), Some(&dan), None);
    eventually("the new stream is registered", || {
        nodes[0].handle().stats().unwrap().sse_streams == 1
    });
    NotificationService::new(nodes[2].handle())
        .broadcast_to_user(Transport::Sse, &dan, "after", &json!(1))
        .unwrap();
    // Node 0 delivers what comes off the bus when it comes: the end marker too, if node 0 was
    // still catching up when the stream opened (the other nodes had delivered it already).
    let mut ev = fresh.expect_event();
    if ev.event == "end" {
        ev = fresh.expect_event();
    }
    assert_eq!((ev.event.as_str(), ev.data.as_str()), ("after", "1"));
}

/// Most sends one pipeline to Redis carries at the kill, on a loaded machine (100 ms of sends).
const PIPELINE_AT_KILL_MAX: u64 = 10;

#[test]
fn sends_queued_when_redis_died_are_given_up_after_retry_for_and_counted() {
    let mut redis = RedisServer::start();
    let short = |config: Config| {
        let mut cluster = cluster_settings(&redis, "t-drop");
        cluster.retry_for = Duration::from_millis(300);
        Server::builder(config)
            .authenticate(auth_hook)
            .cluster(cluster)
            .start()
            .expect("node starts")
    };
    let a = short(Config {
        event_loops: 2,
        ..sse_config()
    });
    let b = short(sse_config());
    let erin = Identity::new("acme", "erin");
    let sse = open_sse(b.local_addr(), Some(&erin), None);
    eventually("the stream is registered", || {
        b.handle().stats().unwrap().sse_streams == 1
    });
    let sse_reader = std::thread::spawn(move || read_numbers_sse(sse, Duration::from_secs(60)));
    let api = NotificationService::new(a.handle());
    let killed = Arc::new(AtomicBool::new(false));
    let sender = spawn_sender(api.clone(), erin.clone(), killed.clone());
    std::thread::sleep(Duration::from_millis(500));
    redis.kill();
    killed.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(2));
    redis.restart();
    let outcomes = sender.join().expect("the sender did not panic");
    eventually("the end marker is accepted", || {
        api.broadcast_to_user(Transport::Both, &erin, "end", &json!(null))
            .is_ok()
    });
    let got = sse_reader.join().expect("sse reader");
    let ok: Vec<i64> = outcomes.iter().filter(|o| o.1).map(|o| o.0).collect();
    let dropped = a.handle().metrics().cluster_dropped;
    eprintln!(
        "{} accepted, {} delivered, {dropped} given up",
        ok.len(),
        got.len()
    );
    // What came is accepted sends, once each, in order; what is missing was counted as given
    // up (Redis was away for longer than retry_for).
    let mut rest = ok.iter();
    for n in &got {
        assert!(
            rest.any(|o| o == n),
            "{n} delivered out of order, twice, or never accepted: got {got:?}, accepted {ok:?}"
        );
    }
    assert!(dropped >= 1, "the send queued when Redis died is given up");
    // Every accepted send is delivered or counted as given up. The sends Redis ran just before
    // it was killed, whose answers were lost, are given up and yet delivered from the log: the
    // one pipeline in flight at the kill. That is one send when the link keeps up with the
    // sender (a send per 10 ms), a few on a loaded machine where sends wait for the round trip
    // before them; never most of them.
    let missing = ok.len() as u64 - got.len() as u64;
    assert!(
        missing <= dropped && dropped <= missing + PIPELINE_AT_KILL_MAX,
        "{missing} accepted sends missing, {dropped} given up"
    );
    assert_eq!(b.handle().metrics().cluster_dropped, 0);
}

// ---------------------------------------------------------------------------------------------
// Handlers' room emits, namespaces, volatile sends, limits and counts across nodes.
// ---------------------------------------------------------------------------------------------

fn room_arg(ev: &tidings::Event) -> String {
    ev.args
        .first()
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `join [room]`: the socket joins; the ack says whether it could.
fn join_handler(socket: &tidings::Socket, ev: tidings::Event) {
    let ok = socket.join(&room_arg(&ev)).is_ok();
    if let Some(ack) = ev.ack {
        let _ = ack.send(vec![json!(ok)]);
    }
}

/// `say [room, args...]`: `said` with the other arguments to the room (`vsay`: volatile).
fn say_handler(socket: &tidings::Socket, ev: tidings::Event) {
    let room = room_arg(&ev);
    let args = ev.args.get(1..).unwrap_or_default().to_vec();
    let ok = if ev.name == "vsay" {
        socket.volatile().to_room(&room, "vsaid", args)
    } else {
        socket.to_room(&room, "said", args)
    };
    if let Some(ack) = ev.ack {
        let _ = ack.send(vec![json!(ok.is_ok())]);
    }
}

fn detail_node(redis: &RedisServer, prefix: &str, event_loops: usize) -> Server {
    let config = Config {
        event_loops,
        max_rooms_per_user: 2,
        max_room_memberships: 5,
        ..sse_config()
    };
    let builder = Server::builder(config)
        .authenticate(auth_hook)
        .on_event("/", "join", join_handler)
        .on_event("/", "say", say_handler)
        .on_event("/", "vsay", say_handler)
        .on_event("/chat", "join", join_handler)
        .on_event("/chat", "say", say_handler);
    node_built(redis, prefix, builder)
}

/// A socket in namespace `nsp` only.
fn connect_nsp(addr: std::net::SocketAddr, nsp: &str, tenant: &str, user: &str) -> SioClient {
    let mut c = SioClient::open(addr);
    let auth = json!({"tenant": tenant, "user": user});
    c.ws.send_text(&format!("40{nsp},{auth}")).unwrap();
    let p = c.expect_packet();
    assert_eq!(
        (p.kind, p.nsp.as_str()),
        (PacketKind::Connect, nsp),
        "{p:?}"
    );
    c
}

/// Emits `event` with an ack in `nsp` and waits for the answer (`[true]`).
fn emit_acked(c: &mut SioClient, nsp: &str, id: u64, event: &str, args: Vec<Value>) {
    c.send_packet(&tidings::proto::sio::Packet::event(
        nsp,
        event,
        args,
        Some(id),
    ));
    let p = c.expect_packet();
    assert_eq!(
        (p.kind, p.nsp.as_str(), p.id),
        (PacketKind::Ack, nsp, Some(id)),
        "{p:?}"
    );
    assert_eq!(p.data, Some(json!([true])), "{event} was refused");
}

/// The next events of a socket are exactly these (name, args) in namespace `nsp`.
fn expect_sio_events(c: &mut SioClient, who: &str, nsp: &str, want: &[(&str, Vec<Value>)]) {
    for (name, args) in want {
        let (n, a, p) = c.expect_event();
        assert_eq!(
            (n.as_str(), &a, p.nsp.as_str()),
            (*name, args, nsp),
            "{who}: the next event"
        );
    }
}

/// The next events of a stream are exactly these (event, data); their ids.
fn expect_sse_events(s: &mut SseStream, who: &str, want: &[(&str, &str)]) -> Vec<String> {
    let mut ids = Vec::new();
    for (event, data) in want {
        let ev = s.expect_event();
        assert_eq!(
            (ev.event.as_str(), ev.data.as_str()),
            (*event, *data),
            "{who}: the next event ({ev:?})"
        );
        ids.push(ev.last_event_id);
    }
    ids
}

#[test]
fn handlers_namespaces_volatile_limits_and_counts_across_nodes() {
    let redis = RedisServer::start();
    let nodes: Vec<Server> = [2, 1, 2]
        .iter()
        .map(|&l| detail_node(&redis, "t-details", l))
        .collect();
    let apis: Vec<NotificationService> = nodes
        .iter()
        .map(|n| NotificationService::new(n.handle()))
        .collect();
    let addr = |i: usize| nodes[i].local_addr();
    let alice = Identity::new("acme", "alice");
    let bob = Identity::new("acme", "bob");
    let carol = Identity::new("acme", "carol");

    // alice is in `lobby` as a user (her connections on nodes 1 and 2); bob's socket on node 2
    // joined it itself; carol (node 1) and dave (node 0, the speaker) are not in it.
    apis[0].join_room(&alice, "lobby").unwrap();
    let mut alice_b = SioClient::connect_as(addr(1), "acme", "alice");
    let mut alice_sse_c = open_sse(addr(2), Some(&alice), None);
    let mut bob_c = SioClient::connect_as(addr(2), "acme", "bob");
    emit_acked(&mut bob_c, "/", 1, "join", vec![json!("lobby")]);
    let mut carol_b = SioClient::connect_as(addr(1), "acme", "carol");
    let mut dave_a = SioClient::connect_as(addr(0), "acme", "dave");
    // In `/chat`: erin (node 1) joined its `lobby`, frank (node 2) did not, gina (node 0) speaks.
    let mut erin_chat_b = connect_nsp(addr(1), "/chat", "acme", "erin");
    emit_acked(&mut erin_chat_b, "/chat", 1, "join", vec![json!("lobby")]);
    let mut frank_chat_c = connect_nsp(addr(2), "/chat", "acme", "frank");
    let mut gina_chat_a = connect_nsp(addr(0), "/chat", "acme", "gina");
    eventually("every connection is registered", || {
        let s: Vec<_> = nodes.iter().map(|n| n.handle().stats().unwrap()).collect();
        (
            s[0].sio_sockets,
            s[1].sio_sockets,
            s[2].sio_sockets,
            s[2].sse_streams,
        ) == (2, 3, 2, 1)
    });

    // `Socket::to_room` from a handler on node 0 reaches the user member and the joined socket
    // on the other nodes, on both transports.
    emit_acked(
        &mut dave_a,
        "/",
        2,
        "say",
        vec![json!("lobby"), json!({"x": 1})],
    );
    emit_acked(
        &mut dave_a,
        "/",
        3,
        "say",
        vec![json!("lobby"), json!(1), json!("two")],
    );
    // In another namespace: that namespace's sockets in its room, on any node, and nobody else.
    emit_acked(
        &mut gina_chat_a,
        "/chat",
        1,
        "say",
        vec![json!("lobby"), json!("hi")],
    );
    // Volatile: a handler's room emit, and an API send. All of these come from node 0, whose
    // sends reach Redis in the order they were made (a send that returned on one node is not
    // ordered before a later send from another node: it may still be queued).
    emit_acked(
        &mut dave_a,
        "/",
        4,
        "vsay",
        vec![json!("lobby"), json!("v")],
    );
    apis[0]
        .volatile()
        .broadcast_to_user(Transport::Both, &alice, "vol", &json!(7))
        .unwrap();
    apis[0]
        .provider(Transport::Both)
        .broadcast()
        .to_all("mark", &json!(0))
        .unwrap();

    expect_sio_events(
        &mut alice_b,
        "alice on node 1",
        "/",
        &[
            ("said", vec![json!({"x": 1})]),
            ("said", vec![json!(1), json!("two")]),
            ("vsaid", vec![json!("v")]),
            ("vol", vec![json!(7)]),
            ("mark", vec![json!(0)]),
        ],
    );
    let ids = expect_sse_events(
        &mut alice_sse_c,
        "alice's stream on node 2",
        &[
            ("said", "{\"x\":1}"),
            ("said", "[1,\"two\"]"),
            ("vsaid", "\"v\""),
            ("vol", "7"),
            ("mark", "0"),
        ],
    );
    expect_sio_events(
        &mut bob_c,
        "bob's joined socket on node 2",
        "/",
        &[
            ("said", vec![json!({"x": 1})]),
            ("said", vec![json!(1), json!("two")]),
            ("vsaid", vec![json!("v")]),
            ("mark", vec![json!(0)]),
        ],
    );
    expect_sio_events(&mut carol_b, "carol", "/", &[("mark", vec![json!(0)])]);
    expect_sio_events(&mut dave_a, "dave", "/", &[("mark", vec![json!(0)])]);
    expect_sio_events(
        &mut erin_chat_b,
        "erin in /chat",
        "/chat",
        &[("said", vec![json!("hi")])],
    );
    for (who, c) in [
        ("erin", &mut erin_chat_b),
        ("frank", &mut frank_chat_c),
        ("gina", &mut gina_chat_a),
    ] {
        match c.recv(QUIET) {
            SioEvent::Timeout => {}
            other => panic!("{who} in /chat: nothing more expected, got {other:?}"),
        }
    }

    // Resumed on node 0 from the first `said`: the second one and the marker; the volatile
    // sends were never kept.
    let mut alice_sse_a = open_sse(addr(0), Some(&alice), Some(&ids[0]));
    expect_sse_events(
        &mut alice_sse_a,
        "alice resumed on node 0",
        &[("said", "[1,\"two\"]"), ("mark", "0")],
    );
    assert!(
        split_id(&ids[1]).1 < split_id(&ids[4]).1,
        "ids grow: {ids:?}"
    );

    // Room limits hold for the cluster: 2 rooms per user, 5 memberships in all.
    apis[1].join_room(&alice, "r2").unwrap();
    assert_eq!(
        apis[2].join_room(&alice, "r3"),
        Err(BroadcastError::TooManyRooms(RoomLimit::PerUser(2)))
    );
    assert_eq!(
        apis[0].user_rooms(&alice).unwrap(),
        vec!["lobby".to_string(), "r2".to_string()]
    );
    apis[0].join_room(&bob, "x1").unwrap();
    apis[1].join_room(&bob, "x2").unwrap();
    apis[2].join_room(&carol, "y1").unwrap();
    assert_eq!(
        apis[0].join_room(&carol, "y2"),
        Err(BroadcastError::TooManyRooms(RoomLimit::Total(5)))
    );
    // Leaving on node 1 is read at once on node 2, and frees a membership for node 0.
    apis[1].leave_room(&alice, "r2").unwrap();
    assert_eq!(
        apis[2].user_rooms(&alice).unwrap(),
        vec!["lobby".to_string()]
    );
    apis[0].join_room(&carol, "y2").unwrap();
    assert_eq!(
        apis[1].user_rooms(&carol).unwrap(),
        vec!["y1".to_string(), "y2".to_string()]
    );
    let left = apis[2]
        .send_counted(Transport::Both, &Target::Room("r2".into()), "r2", &json!(0))
        .unwrap();
    assert_eq!(left.total(), 0, "alice left r2 everywhere");

    // Counts are summed over the nodes: alice has sockets on nodes 0 and 1, streams on 0 and 2.
    let mut alice_a = SioClient::connect_as(addr(0), "acme", "alice");
    eventually("alice's socket on node 0", || {
        nodes[0].handle().stats().unwrap().sio_sockets == 3
    });
    let count = |node: usize, t: Transport, target: Target| {
        let r = apis[node].send_counted(t, &target, "c", &json!(1)).unwrap();
        (r.sse, r.socketio)
    };
    assert_eq!(
        count(1, Transport::Both, Target::User(alice.clone())),
        (2, 2)
    );
    assert_eq!(
        count(2, Transport::Sse, Target::User(alice.clone())),
        (2, 0)
    );
    assert_eq!(
        count(0, Transport::SocketIo, Target::User(alice.clone())),
        (0, 2)
    );
    // The room: alice's four connections and bob's joined socket.
    assert_eq!(
        count(2, Transport::Both, Target::Room("lobby".into())),
        (2, 3)
    );
    // Everyone of the main namespace: alice ×2, bob, carol, dave; the `/chat` sockets are not
    // broadcast targets.
    assert_eq!(count(1, Transport::Both, Target::All), (2, 5));
    assert_eq!(
        count(0, Transport::Both, Target::Tenant("beta".into())),
        (0, 0)
    );
    let c1 = ("c", vec![json!(1)]);
    expect_sio_events(
        &mut alice_b,
        "alice on node 1",
        "/",
        &[c1.clone(), c1.clone(), c1.clone(), c1.clone()],
    );
    expect_sio_events(
        &mut alice_a,
        "alice on node 0",
        "/",
        &[c1.clone(), c1.clone(), c1.clone(), c1.clone()],
    );
    for (who, s) in [
        ("alice's stream on node 2", &mut alice_sse_c),
        ("alice's stream on node 0", &mut alice_sse_a),
    ] {
        expect_sse_events(s, who, &[("c", "1"), ("c", "1"), ("c", "1"), ("c", "1")]);
    }
    expect_sio_events(&mut bob_c, "bob", "/", &[c1.clone(), c1.clone()]);
    expect_sio_events(&mut carol_b, "carol", "/", std::slice::from_ref(&c1));
    expect_sio_events(&mut dave_a, "dave", "/", std::slice::from_ref(&c1));

    // Acks from alice's sockets on two nodes, asked from the third.
    let answer = |mut c: SioClient, reply: &'static str| {
        std::thread::spawn(move || {
            let (name, _, p) = c.expect_event();
            assert_eq!(name, "ask");
            c.ack(p.id.expect("an ack id"), vec![json!(reply)]);
            c
        })
    };
    let (ta, tb) = (answer(alice_a, "from-a"), answer(alice_b, "from-b"));
    let outcomes = apis[2]
        .provider(Transport::SocketIo)
        .socketio_features()
        .unwrap()
        .to_user_with_ack(&alice, "ask", &json!({}), Duration::from_secs(3))
        .unwrap();
    let (_alice_a, _alice_b) = (ta.join().unwrap(), tb.join().unwrap());
    let AckOutcomes::Outcomes(results) = outcomes else {
        panic!("expected two outcomes, got {outcomes:?}");
    };
    let mut replies: Vec<Value> = results
        .iter()
        .map(|r| match &r.outcome {
            AckOutcome::Ok { args, .. } => args[0].clone(),
            other => panic!("not answered: {other:?}"),
        })
        .collect();
    replies.sort_by_key(|v| v.to_string());
    assert_eq!(replies, vec![json!("from-a"), json!("from-b")]);
    bob_c.expect_silence(QUIET);
    assert!(alice_sse_c.next_event(Duration::from_millis(10)).is_none());
}

// ---------------------------------------------------------------------------------------------
// Messages that are not ours on the cluster's channels.
// ---------------------------------------------------------------------------------------------

/// Sums `cluster_foreign` over the nodes.
fn foreign(nodes: &[Server]) -> Vec<u64> {
    nodes
        .iter()
        .map(|n| n.handle().metrics().cluster_foreign)
        .collect()
}

#[test]
fn foreign_messages_on_the_bus_and_node_channels_are_ignored_and_counted() {
    let redis = RedisServer::start();
    let nodes: Vec<Server> = [1, 2]
        .iter()
        .map(|&l| {
            node(
                &redis,
                "t-foreign",
                Config {
                    event_loops: l,
                    ..sse_config()
                },
            )
        })
        .collect();
    let api = NotificationService::new(nodes[0].handle());
    let fay = Identity::new("acme", "fay");
    api.join_room(&fay, "news").unwrap();
    let mut sse = open_sse(nodes[1].local_addr(), Some(&fay), None);
    let mut sio = SioClient::connect_as(nodes[0].local_addr(), "acme", "fay");
    let mut anon = SioClient::connect_with(nodes[1].local_addr(), Some(json!({}))).0;
    eventually("the clients are registered", || {
        let (a, b) = (
            nodes[0].handle().stats().unwrap(),
            nodes[1].handle().stats().unwrap(),
        );
        (a.sio_sockets, b.sio_sockets, b.sse_streams) == (1, 1, 1)
    });
    api.broadcast_to_user(Transport::Both, &fay, "before", &json!(1))
        .unwrap();
    let epoch = redis.get("t-foreign:epoch").expect("an epoch");
    let seq: u64 = redis.get("t-foreign:seq").unwrap().parse().unwrap();

    let bus = "t-foreign#bus";
    let garbage: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        Vec::new(),
        b"|".to_vec(),
        b"1:2".to_vec(),
        // socket.io's Redis adapter (msgpack): [uid, packet, opts]
        vec![
            0x93, 0xa6, b'e', b'm', b'i', b't', b't', b'r', 0x83, 0xa4, b't', b'y', b'p', b'e',
            0x02, 0xa4, b'd', b'a', b't', b'a', 0x92, 0xa1, b'x', 0x01, 0xa3, b'n', b's', b'p',
            0xa1, b'/', 0xc0,
        ],
        vec![0xff, 0xfe, 0x00, b'|', 0x80],
        // Well-formed headers with bodies that are not ours.
        format!("{epoch}:0|").into_bytes(),
        format!("{epoch}:0|hello").into_bytes(),
        format!("{epoch}:0|B\x00\x02\x00\x00\x00\x00").into_bytes(),
        format!("{epoch}:0|Z\x00\x00").into_bytes(),
        format!("{epoch}:0|{{\"type\":2,\"data\":[\"x\"]}}").into_bytes(),
        // Numbered, but from an epoch that is not the cluster's, or far ahead of it.
        format!("1:{}|Bjunk", seq + 1).into_bytes(),
        format!("{epoch}:{}|Bjunk", seq + 1000).into_bytes(),
        format!("{}99:{}|hello", "9".repeat(20), seq + 1).into_bytes(),
    ];
    let before = foreign(&nodes);
    for g in &garbage {
        assert_eq!(redis.publish(bus, g), 2, "both nodes listen on the bus");
    }
    // Each node's reply channel (the names are the cluster's own).
    let mine = redis.channels("t-foreign#node#*");
    assert_eq!(mine.len(), 2, "{mine:?}");
    for ch in &mine {
        assert_eq!(redis.publish(ch, b"garbage"), 1);
        assert_eq!(redis.publish(ch, &[b'r', 1, 2, 3]), 1);
        assert_eq!(redis.publish(ch, &[0x93, 0x01, 0x02, 0x03]), 1);
    }
    // Of the bus messages every node counts each one it cannot take for its own: all but the
    // two numbered ones it ignores on their header (an unknown epoch, a number far ahead), at
    // least.
    let bus_min = garbage.len() as u64 - 3;
    eventually("every node counted the foreign messages", || {
        foreign(&nodes)
            .iter()
            .zip(&before)
            .all(|(now, was)| now - was >= bus_min + 3)
    });

    // Nothing of it was delivered, and the nodes keep working: the next events are real ones
    // (each waited for before the next is sent from the other node).
    api.broadcast_to_user(Transport::Both, &fay, "after", &json!(2))
        .unwrap();
    expect_sse_events(
        &mut sse,
        "fay's stream on node 1",
        &[("before", "1"), ("after", "2")],
    );
    expect_sio_events(
        &mut sio,
        "fay's socket on node 0",
        "/",
        &[("before", vec![json!(1)]), ("after", vec![json!(2)])],
    );
    NotificationService::new(nodes[1].handle())
        .broadcast_to_room("news", "room", &json!(3))
        .unwrap();
    expect_sse_events(&mut sse, "fay's stream on node 1", &[("room", "3")]);
    expect_sio_events(
        &mut sio,
        "fay's socket on node 0",
        "/",
        &[("room", vec![json!(3)])],
    );
    api.provider(Transport::Both)
        .broadcast()
        .to_all("all", &json!(4))
        .unwrap();
    expect_sse_events(&mut sse, "fay's stream on node 1", &[("all", "4")]);
    expect_sio_events(
        &mut sio,
        "fay's socket on node 0",
        "/",
        &[("all", vec![json!(4)])],
    );
    expect_sio_events(&mut anon, "anonymous", "/", &[("all", vec![json!(4)])]);
    sio.expect_silence(QUIET);
    assert!(sse.next_event(Duration::from_millis(10)).is_none());
    // Requests still get every node's answer.
    let reach = api
        .send_counted(Transport::Both, &Target::User(fay.clone()), "c", &json!(5))
        .unwrap();
    assert_eq!((reach.sse, reach.socketio), (1, 1));
    assert_eq!(api.user_rooms(&fay).unwrap(), vec!["news".to_string()]);
    for (i, n) in nodes.iter().enumerate() {
        let m = n.handle().metrics();
        assert_eq!(m.cluster_dropped, 0, "node {i}: {m:?}");
        assert_eq!(n.handle().cluster_connected(), Some(true));
    }
}

/// A message with the cluster's header and the next number, but a body that is not ours, must
/// not take the place of the real message with that number.
#[test]
fn a_foreign_message_with_the_next_number_does_not_hide_the_real_one() {
    let redis = RedisServer::start();
    let a = node(&redis, "t-forged", sse_config());
    let b = node(&redis, "t-forged", sse_config());
    let gus = Identity::new("acme", "gus");
    let mut sse = open_sse(b.local_addr(), Some(&gus), None);
    eventually("the stream is registered", || {
        b.handle().stats().unwrap().sse_streams == 1
    });
    let api = NotificationService::new(a.handle());
    api.broadcast_to_user(Transport::Sse, &gus, "m", &json!(1))
        .unwrap();
    assert_eq!(sse.expect_event().data, "1");
    let epoch = redis.get("t-forged:epoch").unwrap();
    let seq: u64 = redis.get("t-forged:seq").unwrap().parse().unwrap();
    let was = b.handle().metrics().cluster_foreign;
    redis.publish(
        "t-forged#bus",
        format!("{epoch}:{}|junk", seq + 1).as_bytes(),
    );
    eventually("node b counted it", || {
        b.handle().metrics().cluster_foreign > was
    });
    api.broadcast_to_user(Transport::Sse, &gus, "m", &json!(2))
        .unwrap();
    api.broadcast_to_user(Transport::Sse, &gus, "m", &json!(3))
        .unwrap();
    let mut got = Vec::new();
    while let Some(ev) = sse.next_event(if got.len() < 2 { WAIT } else { QUIET }) {
        got.push(ev.data);
    }
    assert_eq!(
        got,
        vec!["2", "3"],
        "the real messages after the forged one"
    );
}

// ---------------------------------------------------------------------------------------------
// Redis loses its data: a new epoch.
// ---------------------------------------------------------------------------------------------

/// Events, then `FLUSHALL`, then a send from node `first_sender`: the live clients keep
/// receiving (nothing held back by the old numbers), a stream that comes back with an old id
/// gets the reset event on every node, and new ids resume.
fn epoch_reset(prefix: &str, first_sender: usize) {
    let redis = RedisServer::start();
    let nodes: Vec<Server> = [1, 2]
        .iter()
        .map(|&l| {
            node(
                &redis,
                prefix,
                Config {
                    event_loops: l,
                    ..sse_config()
                },
            )
        })
        .collect();
    let apis: Vec<NotificationService> = nodes
        .iter()
        .map(|n| NotificationService::new(n.handle()))
        .collect();
    let hal = Identity::new("acme", "hal");
    let mut sse = open_sse(nodes[1].local_addr(), Some(&hal), None);
    let mut sio = SioClient::connect_as(nodes[0].local_addr(), "acme", "hal");
    eventually("the clients are registered", || {
        nodes[1].handle().stats().unwrap().sse_streams == 1
            && nodes[0].handle().stats().unwrap().sio_sockets == 1
    });
    for n in 1..=5 {
        apis[n % 2]
            .send_counted(
                Transport::Both,
                &Target::User(hal.clone()),
                "old",
                &json!(n),
            )
            .unwrap();
    }
    let old_ids = expect_sse_events(
        &mut sse,
        "hal's stream",
        &[
            ("old", "1"),
            ("old", "2"),
            ("old", "3"),
            ("old", "4"),
            ("old", "5"),
        ],
    );
    for n in 1..=5 {
        expect_sio_events(&mut sio, "hal's socket", "/", &[("old", vec![json!(n)])]);
    }
    let old_epoch = redis.get(&format!("{prefix}:epoch")).unwrap();

    assert_eq!(redis.call(&[b"FLUSHALL"]), Resp::Simple("OK".into()));
    for n in 1..=3 {
        apis[first_sender]
            .broadcast_to_user(Transport::Both, &hal, "new", &json!(n))
            .unwrap();
    }
    // The live clients get the new events at once, whatever the old numbers were.
    let new_ids = expect_sse_events(
        &mut sse,
        "hal's stream",
        &[("new", "1"), ("new", "2"), ("new", "3")],
    );
    expect_sio_events(
        &mut sio,
        "hal's socket",
        "/",
        &[
            ("new", vec![json!(1)]),
            ("new", vec![json!(2)]),
            ("new", vec![json!(3)]),
        ],
    );
    let new_epoch = redis.get(&format!("{prefix}:epoch")).expect("a new epoch");
    assert_ne!(new_epoch, old_epoch, "Redis lost its data: a new epoch");
    for id in &new_ids {
        assert_eq!(
            split_id(id).0.to_string(),
            new_epoch,
            "new ids: {new_ids:?}"
        );
    }
    // An old id is not served (its history is gone) on any node: the reset event.
    for (i, n) in nodes.iter().enumerate() {
        let mut again = open_sse(n.local_addr(), Some(&hal), Some(&old_ids[2]));
        let ev = again.expect_event();
        assert_eq!(ev.event, tidings::RESET_EVENT, "node {i}: {ev:?}");
        assert!(ev.data.contains("unknown-epoch"), "node {i}: {ev:?}");
        // A new id resumes.
        let mut resumed = open_sse(n.local_addr(), Some(&hal), Some(&new_ids[0]));
        expect_sse_events(
            &mut resumed,
            &format!("resumed on node {i}"),
            &[("new", "2"), ("new", "3")],
        );
    }
    // And the cluster goes on from the new epoch.
    apis[1 - first_sender]
        .broadcast_to_user(Transport::Both, &hal, "later", &json!(0))
        .unwrap();
    expect_sse_events(&mut sse, "hal's stream", &[("later", "0")]);
    expect_sio_events(&mut sio, "hal's socket", "/", &[("later", vec![json!(0)])]);
}

#[test]
fn an_epoch_reset_first_sent_from_another_node_resets_old_ids() {
    // Node 0 started first: the first epoch is its candidate.
    epoch_reset("t-epoch1", 1);
}

#[test]
fn an_epoch_reset_first_sent_from_the_node_that_made_the_first_epoch_resets_old_ids() {
    epoch_reset("t-epoch0", 0);
}

/// The smallest case of the same: one node, and Redis restarts without its data. The node
/// reconnects and makes its own epoch again: the numbers restart at 1 in the same epoch.
#[test]
fn redis_restarted_empty_under_one_node_starts_a_new_epoch() {
    let mut redis = RedisServer::start();
    let a = node(&redis, "t-empty", sse_config());
    let api = NotificationService::new(a.handle());
    let ida = Identity::new("acme", "ida");
    let mut sse = open_sse(a.local_addr(), Some(&ida), None);
    let mut sio = SioClient::connect_as(a.local_addr(), "acme", "ida");
    eventually("the clients are registered", || {
        let s = a.handle().stats().unwrap();
        (s.sse_streams, s.sio_sockets) == (1, 1)
    });
    for n in 1..=5 {
        api.broadcast_to_user(Transport::Both, &ida, "old", &json!(n))
            .unwrap();
    }
    let old_ids = expect_sse_events(
        &mut sse,
        "ida's stream",
        &[
            ("old", "1"),
            ("old", "2"),
            ("old", "3"),
            ("old", "4"),
            ("old", "5"),
        ],
    );
    for n in 1..=5 {
        expect_sio_events(&mut sio, "ida's socket", "/", &[("old", vec![json!(n)])]);
    }
    redis.restart_empty();
    eventually("the node is back on Redis", || {
        a.handle().cluster_connected() == Some(true) && a.handle().metrics().cluster_reconnects >= 1
    });
    eventually("a send is accepted", || {
        api.broadcast_to_user(Transport::Both, &ida, "new", &json!(1))
            .is_ok()
    });
    expect_sse_events(&mut sse, "ida's stream", &[("new", "1")]);
    expect_sio_events(&mut sio, "ida's socket", "/", &[("new", vec![json!(1)])]);
    let mut again = open_sse(a.local_addr(), Some(&ida), Some(&old_ids[2]));
    assert_eq!(again.expect_event().event, tidings::RESET_EVENT);
}

// ---------------------------------------------------------------------------------------------
// A node shut down, and a new one on the same Redis.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_node_replaced_by_a_new_one_hands_over_rooms_and_history() {
    let redis = RedisServer::start();
    let a = node(
        &redis,
        "t-restart",
        Config {
            event_loops: 2,
            ..sse_config()
        },
    );
    let b = node(&redis, "t-restart", sse_config());
    let api_a = NotificationService::new(a.handle());
    let api_b = NotificationService::new(b.handle());
    let ivy = Identity::new("acme", "ivy");
    let joe = Identity::new("beta", "joe");
    api_a.join_room(&ivy, "keep").unwrap();
    api_a.join_room(&joe, "keep").unwrap();
    api_a.join_room(&joe, "gone").unwrap();
    api_a.leave_room(&joe, "gone").unwrap();
    let mut ivy_sse_a = open_sse(a.local_addr(), Some(&ivy), None);
    let mut joe_sio_b = SioClient::connect_as(b.local_addr(), "beta", "joe");
    eventually("the clients are registered", || {
        a.handle().stats().unwrap().sse_streams == 1 && b.handle().stats().unwrap().sio_sockets == 1
    });
    for n in 1..=3 {
        api_a.broadcast_to_room("keep", "r", &json!(n)).unwrap();
    }
    let ids = expect_sse_events(
        &mut ivy_sse_a,
        "ivy on node a",
        &[("r", "1"), ("r", "2"), ("r", "3")],
    );
    drop(ivy_sse_a);
    a.shutdown(Duration::from_secs(1)).unwrap();
    // Sent while no node but b is up.
    api_b.broadcast_to_room("keep", "r", &json!(4)).unwrap();
    api_b
        .broadcast_to_user(Transport::SocketIo, &ivy, "sio-only", &json!(5))
        .unwrap();
    api_b
        .broadcast_to_user(Transport::Sse, &ivy, "u", &json!(6))
        .unwrap();

    let c = node(
        &redis,
        "t-restart",
        Config {
            event_loops: 2,
            ..sse_config()
        },
    );
    let api_c = NotificationService::new(c.handle());
    assert_eq!(api_c.user_rooms(&ivy).unwrap(), vec!["keep".to_string()]);
    assert_eq!(api_c.user_rooms(&joe).unwrap(), vec!["keep".to_string()]);
    // The id from the node that is gone resumes on the new one: what came after it, in order.
    let mut ivy_sse_c = open_sse(c.local_addr(), Some(&ivy), Some(&ids[1]));
    expect_sse_events(
        &mut ivy_sse_c,
        "ivy resumed on node c",
        &[("r", "3"), ("r", "4"), ("u", "6")],
    );
    // The rooms it loaded are live: a room send from c reaches ivy on c and joe on b.
    let reach = api_c
        .send_counted(
            Transport::Both,
            &Target::Room("keep".into()),
            "r",
            &json!(7),
        )
        .unwrap();
    assert_eq!((reach.sse, reach.socketio), (1, 1));
    expect_sse_events(&mut ivy_sse_c, "ivy on node c", &[("r", "7")]);
    expect_sio_events(
        &mut joe_sio_b,
        "joe on node b",
        "/",
        &[
            ("r", vec![json!(1)]),
            ("r", vec![json!(2)]),
            ("r", vec![json!(3)]),
            ("r", vec![json!(4)]),
            ("r", vec![json!(7)]),
        ],
    );
    // Not in `gone` any more, on the new node either.
    let gone = api_c
        .send_counted(
            Transport::Both,
            &Target::Room("gone".into()),
            "g",
            &json!(0),
        )
        .unwrap();
    assert_eq!(gone.total(), 0);
    joe_sio_b.expect_silence(QUIET);
    assert!(ivy_sse_c.next_event(Duration::from_millis(10)).is_none());
    assert_eq!(b.handle().metrics().cluster_dropped, 0);
}

/// A node started later loads the log's newest `sse_history_events` entries; room changes are
/// entries of the log too, so with rooms changing it holds fewer broadcasts than the nodes
/// that were up, and refuses a resume they serve.
#[test]
fn a_node_started_later_serves_the_resumes_the_others_serve() {
    let redis = RedisServer::start();
    let config = || Config {
        sse_history_events: 8,
        ..sse_config()
    };
    let a = node(&redis, "t-later", config());
    let api = NotificationService::new(a.handle());
    let kim = Identity::new("acme", "kim");
    let mut s = open_sse(a.local_addr(), Some(&kim), None);
    eventually("the stream is registered", || {
        a.handle().stats().unwrap().sse_streams == 1
    });
    for n in 1..=4 {
        api.broadcast_to_user(Transport::Sse, &kim, "m", &json!(n))
            .unwrap();
    }
    let ids = expect_sse_events(
        &mut s,
        "kim",
        &[("m", "1"), ("m", "2"), ("m", "3"), ("m", "4")],
    );
    // Other users' room changes: eight entries of the log.
    for i in 0..4 {
        let other = Identity::new("acme", format!("other{i}"));
        api.join_room(&other, "busy").unwrap();
        api.leave_room(&other, "busy").unwrap();
    }
    let b = node(&redis, "t-later", config());
    for (name, n) in [("a", &a), ("b", &b)] {
        let mut again = open_sse(n.local_addr(), Some(&kim), Some(&ids[0]));
        let got = expect_sse_events(
            &mut again,
            &format!("resumed on node {name}"),
            &[("m", "2")],
        );
        assert_eq!(got.len(), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Order across nodes.
// ---------------------------------------------------------------------------------------------

/// One caller sends on node a, then (after that call returned) on node b. A plain send returns
/// once it is queued for Redis, so a later send from another node may overtake it (documented);
/// `send_counted` returns once every node delivered it, so what is sent after it, from any node,
/// comes after it.
#[test]
fn a_counted_send_comes_before_a_later_send_from_another_node() {
    let redis = RedisServer::start();
    let nodes: Vec<Server> = (0..3)
        .map(|_| node(&redis, "t-order", sse_config()))
        .collect();
    let a = NotificationService::new(nodes[0].handle());
    let b = NotificationService::new(nodes[1].handle());
    let lee = Identity::new("acme", "lee");
    let mut c = SioClient::connect_as(nodes[2].local_addr(), "acme", "lee");
    eventually("the socket is registered", || {
        nodes[2].handle().stats().unwrap().sio_sockets == 1
    });
    let mut swapped = Vec::new();
    for i in 0..100 {
        let reach = a
            .send_counted(
                Transport::Both,
                &Target::User(lee.clone()),
                "first",
                &json!(i),
            )
            .unwrap();
        assert_eq!(reach.socketio, 1);
        b.broadcast_to_user(Transport::Both, &lee, "second", &json!(i))
            .unwrap();
        let (one, _, _) = c.expect_event();
        let (two, _, _) = c.expect_event();
        if (one.as_str(), two.as_str()) != ("first", "second") {
            swapped.push(i);
        }
    }
    assert!(swapped.is_empty(), "swapped in rounds {swapped:?}");
}

/// A node shut down while a cross-node ack request waits: the caller hears `ServerClosed` at
/// once, not after the timeout; a handle kept past the shutdown is refused.
#[test]
fn shutting_down_ends_the_requests_still_waiting_for_other_nodes() {
    let redis = RedisServer::start();
    let a = node(&redis, "t-stop", sse_config());
    let b = node(&redis, "t-stop", sse_config());
    let kim = Identity::new("acme", "kim");
    // Kim's socket on b never answers.
    let _c = SioClient::connect_as(b.local_addr(), "acme", "kim");
    eventually("the socket is registered", || {
        b.handle().stats().unwrap().sio_sockets == 1
    });
    let kept = a.handle();
    let api = NotificationService::new(a.handle());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let asker = api
            .provider(Transport::SocketIo)
            .socketio_features()
            .unwrap();
        let r = asker.to_user_with_ack(&kim, "ask", &json!(1), Duration::from_secs(60));
        let _ = tx.send(r);
    });
    // The request is out (b's socket got it) before a stops.
    std::thread::sleep(Duration::from_millis(300));
    a.shutdown(Duration::from_millis(200)).unwrap();
    let answer = rx
        .recv_timeout(WAIT)
        .expect("the waiting request ended with the shutdown");
    assert_eq!(answer, Err(BroadcastError::ServerClosed));
    let after = NotificationService::new(kept);
    assert_eq!(
        after.broadcast_to_user(
            Transport::Both,
            &Identity::new("acme", "kim"),
            "late",
            &json!(0)
        ),
        Err(BroadcastError::ServerClosed)
    );
}
