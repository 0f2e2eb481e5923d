//! Several engines joined as loops (one hub, commands routed by `fanout`, one queue per loop,
//! processed in an interleaving the test picks) against one engine alone, driven by the same
//! random operations: every client must receive the same broadcasts in the same order, every
//! user must have the same rooms, and every ack request the same outcomes.
//!
//! Connection-level steps (a client connects, leaves, its socket joins a room, it answers an
//! ask) first let every loop catch up, as the application would see it: what differs between
//! one loop and several is only when each loop gets to a command, never what it does with it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::fanout::{self, Routed};
use super::test_support::{parse_frames, request, ws_upgrade_head, Frame, SIO_WS};
use super::*;
use proptest::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const USERS: [(&str, &str); 3] = [("t0", "u0"), ("t0", "u1"), ("t1", "u0")];
const ROOMS: [&str; 2] = ["r0", "r1"];

fn identity(u: usize) -> Option<Identity> {
    USERS.get(u).map(|(t, n)| Identity::new(*t, *n))
}

struct Client {
    lp: usize,
    conn: ConnId,
    sio: bool,
    /// Where the WebSocket frames start in `out`.
    ws_from: Option<usize>,
    socket: Option<SocketId>,
    out: Vec<u8>,
    /// Ack requests already answered (by byte position of their frame).
    answered: usize,
    open: bool,
}

struct Cluster {
    cfg: Arc<Config>,
    hub: Arc<Hub>,
    engines: Vec<Engine>,
    queues: Vec<VecDeque<Command>>,
    now: Instant,
    clients: Vec<Client>,
    by_conn: HashMap<(usize, ConnId), usize>,
    next_loop: usize,
    acting: Option<usize>,
}

fn random(seed: u64) -> RandomSource {
    let mut state = seed | 1;
    Box::new(move |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
    })
}

impl Cluster {
    fn new(loops: usize) -> Cluster {
        let cfg = Arc::new(Config {
            ping_interval: Duration::from_secs(3600),
            ping_timeout: Duration::from_secs(3600),
            connection_state_recovery: Some(crate::config::Recovery::default()),
            ..Config::default()
        });
        let hub = Arc::new(Hub::new(7, loops));
        let engines = (0..loops)
            .map(|i| Engine::on_hub(cfg.clone(), random(i as u64 + 11), hub.clone(), i))
            .collect();
        Cluster {
            cfg,
            hub,
            engines,
            queues: (0..loops).map(|_| VecDeque::new()).collect(),
            now: Instant::now(),
            clients: Vec::new(),
            by_conn: HashMap::new(),
            next_loop: 0,
            acting: None,
        }
    }

    /// Routes an application command as the server's handle does.
    fn route(&mut self, cmd: Command) -> Routed {
        let queues = &mut self.queues;
        let now = self.now;
        fanout::route(&self.hub, &self.cfg, &|| now, cmd, &mut |to, c| {
            queues[to].push_back(c)
        })
    }

    /// Lets loop `lp` take up to `n` commands from its queue.
    fn step_loop(&mut self, lp: usize, n: usize) {
        for _ in 0..n {
            let Some(cmd) = self.queues[lp].pop_front() else {
                return;
            };
            self.acting = None;
            self.engines[lp].handle_command(self.now, cmd);
            self.pump(lp);
        }
    }

    /// Every loop catches up.
    fn drain(&mut self) {
        for _ in 0..100 {
            if self.queues.iter().all(VecDeque::is_empty) {
                return;
            }
            for lp in 0..self.engines.len() {
                self.step_loop(lp, usize::MAX);
            }
        }
        panic!("the loops never caught up");
    }

    fn pump(&mut self, lp: usize) {
        for _ in 0..100_000 {
            let Some(out) = self.engines[lp].poll_output() else {
                return;
            };
            match out {
                Output::Write { conn, chunk } | Output::WriteVolatile { conn, chunk } => {
                    let c = self.by_conn[&(lp, conn)];
                    assert!(self.clients[c].open, "a write after close");
                    self.clients[c].out.extend_from_slice(chunk.as_slice());
                }
                Output::StartWebSocket { conn } => {
                    let c = self.by_conn[&(lp, conn)];
                    self.clients[c].ws_from = Some(self.clients[c].out.len());
                }
                Output::StartStream { .. } | Output::ResponseDone { .. } => {}
                Output::Close { conn } => {
                    let c = self.by_conn[&(lp, conn)];
                    if self.clients[c].open {
                        self.clients[c].open = false;
                        self.engines[lp].handle_conn_closed(self.now, conn);
                    }
                }
                Output::Forward { .. } => panic!("no polling here"),
                Output::App(ev) => self.app(ev),
            }
        }
        panic!("too many outputs");
    }

    fn app(&mut self, ev: AppEvent) {
        match ev {
            // The application accepts everyone, with the identity the client was made with.
            AppEvent::SioConnectRequest { request, .. } => {
                let c = self.acting.expect("a connect caused by a client");
                let user = self.user_of(c);
                self.route(Command::SioConnectDecision {
                    request,
                    decision: Ok(user),
                });
            }
            AppEvent::SseConnectRequest { request, .. } => {
                let c = self.acting.expect("a connect caused by a client");
                let user = self.user_of(c);
                self.route(Command::SseDecision {
                    request,
                    decision: Ok(user),
                });
            }
            AppEvent::SioConnected { socket, .. } => {
                let c = self.acting.expect("a connect caused by a client");
                self.clients[c].socket = Some(socket);
            }
            _ => {}
        }
    }

    fn user_of(&self, c: usize) -> Option<Identity> {
        // Kept in the connection number: conn = client * 8 + user + 1.
        identity((self.clients[c].conn % 8) as usize - 1)
    }

    fn connect(&mut self, sio: bool, user: usize) {
        self.drain();
        let lp = self.next_loop % self.engines.len();
        self.next_loop += 1;
        let c = self.clients.len();
        let conn = (c as u64) * 8 + (user.min(USERS.len()) as u64) + 1;
        self.clients.push(Client {
            lp,
            conn,
            sio,
            ws_from: None,
            socket: None,
            out: Vec::new(),
            answered: 0,
            open: true,
        });
        self.by_conn.insert((lp, conn), c);
        self.acting = Some(c);
        let req = if sio {
            request(&ws_upgrade_head(SIO_WS))
        } else {
            request("GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        };
        self.engines[lp].handle_request(self.now, conn, req);
        self.pump(lp);
        if sio {
            self.engines[lp].handle_ws_message(self.now, conn, WsMessage::Text("40"));
            self.pump(lp);
        }
        // The decision was routed: let the loop act on it while this client is the one acting.
        for _ in 0..4 {
            let Some(cmd) = self.queues[lp].pop_front() else {
                break;
            };
            self.engines[lp].handle_command(self.now, cmd);
            self.pump(lp);
        }
        self.acting = None;
        self.drain();
    }

    fn close(&mut self, c: usize) {
        self.drain();
        let Some(cl) = self.clients.get_mut(c) else {
            return;
        };
        if !cl.open {
            return;
        }
        cl.open = false;
        let (lp, conn) = (cl.lp, cl.conn);
        self.engines[lp].handle_conn_closed(self.now, conn);
        self.pump(lp);
        self.drain();
    }

    /// Every open Socket.IO client answers the asks it has not answered yet.
    fn answer_asks(&mut self) {
        self.drain();
        for c in 0..self.clients.len() {
            let cl = &self.clients[c];
            let Some(from) = cl.ws_from.filter(|_| cl.open && cl.sio) else {
                continue;
            };
            let frames = parse_frames(&cl.out[from..]);
            let asks: Vec<u64> = frames
                .iter()
                .filter_map(|f| match f {
                    Frame::Text(t) => t.strip_prefix("42"),
                    _ => None,
                })
                .filter_map(|t| {
                    let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().ok()
                })
                .collect();
            let skip = cl.answered;
            let (lp, conn) = (cl.lp, cl.conn);
            self.clients[c].answered = asks.len();
            for id in asks.into_iter().skip(skip) {
                let text = format!("43{id}[\"ok\"]");
                self.engines[lp].handle_ws_message(self.now, conn, WsMessage::Text(&text));
                self.pump(lp);
            }
        }
        self.drain();
    }

    /// The unique broadcast names each client received, in order.
    fn received(&self) -> Vec<Vec<String>> {
        self.clients
            .iter()
            .map(|c| {
                let text = String::from_utf8_lossy(&c.out);
                let mut names = Vec::new();
                let mut rest = text.as_ref();
                while let Some(i) = rest.find("ev#") {
                    let tail = &rest[i + 3..];
                    let n: String = tail.chars().take_while(char::is_ascii_digit).collect();
                    names.push(n);
                    rest = tail;
                }
                names
            })
            .collect()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Connect {
        sio: bool,
        user: usize,
    },
    Close(usize),
    Join(usize, usize),
    Leave(usize, usize),
    SocketJoin(usize, usize),
    Broadcast {
        target: usize,
        arg: usize,
        transports: usize,
    },
    Ask(usize),
    Rooms(usize),
    /// Lets loop `n % loops` take a few commands (the interleaving).
    Step(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<bool>(), 0..4usize).prop_map(|(sio, user)| Op::Connect { sio, user }),
        (0..16usize).prop_map(Op::Close),
        (0..3usize, 0..2usize).prop_map(|(u, r)| Op::Join(u, r)),
        (0..3usize, 0..2usize).prop_map(|(u, r)| Op::Leave(u, r)),
        (0..16usize, 0..2usize).prop_map(|(c, r)| Op::SocketJoin(c, r)),
        (0..4usize, 0..3usize, 0..3usize).prop_map(|(target, arg, transports)| Op::Broadcast {
            target,
            arg,
            transports
        }),
        (0..3usize).prop_map(Op::Ask),
        (0..3usize).prop_map(Op::Rooms),
        (0..4usize, 1..4usize).prop_map(|(l, n)| Op::Step(l, n)),
    ]
}

/// What one run yields: per client its broadcasts, per ask its outcome kinds, per rooms query
/// its answer.
type Observed = (Vec<Vec<String>>, Vec<Vec<String>>, Vec<Vec<String>>);

fn run(loops: usize, ops: &[Op]) -> Observed {
    let mut k = Cluster::new(loops);
    let mut asks = Vec::new();
    let mut rooms = Vec::new();
    let mut pending_asks = Vec::new();
    for (n, op) in ops.iter().enumerate() {
        match op {
            Op::Connect { sio, user } => k.connect(*sio, *user),
            Op::Close(c) => k.close(*c),
            Op::Join(u, r) => {
                let (tx, rx) = mpsc::channel();
                k.route(Command::JoinRoomReply {
                    user: identity(*u).unwrap(),
                    room: ROOMS[*r].into(),
                    reply: tx,
                });
                // The hub answers at once, before any loop got the copy.
                assert_eq!(rx.try_recv().unwrap(), Ok(()));
            }
            Op::Leave(u, r) => {
                k.route(Command::LeaveRoom {
                    user: identity(*u).unwrap(),
                    room: ROOMS[*r].into(),
                });
            }
            Op::SocketJoin(c, r) => {
                k.drain();
                if let Some(socket) = k.clients.get(*c).and_then(|c| c.socket) {
                    k.route(Command::SioJoin {
                        socket,
                        room: ROOMS[*r].into(),
                        in_main: true,
                        hub_added: false,
                    });
                }
            }
            Op::Broadcast {
                target,
                arg,
                transports,
            } => {
                let target = match target {
                    0 => Target::All,
                    1 => Target::User(identity(*arg).unwrap()),
                    2 => Target::Tenant(USERS[*arg].0.into()),
                    _ => Target::Room(ROOMS[arg % 2].into()),
                };
                let transports =
                    [Transports::Both, Transports::Sse, Transports::SocketIo][*transports];
                k.route(Command::Broadcast {
                    target,
                    transports,
                    event: Arc::from(format!("ev#{n}#").as_str()),
                    data: Arc::from("1"),
                    volatile: false,
                    reply: None,
                });
            }
            Op::Ask(u) => {
                let (tx, rx) = mpsc::channel();
                k.route(Command::UserAck {
                    user: identity(*u).unwrap(),
                    event: "ask".into(),
                    data: serde_json::json!(1),
                    timeout: Duration::from_secs(60),
                    reply: AckReply::Channel(tx),
                });
                pending_asks.push(rx);
            }
            Op::Rooms(u) => {
                let (tx, rx) = mpsc::channel();
                k.route(Command::UserRooms {
                    user: identity(*u).unwrap(),
                    reply: tx,
                });
                rooms.push(rx.try_recv().unwrap());
            }
            Op::Step(l, n) => k.step_loop(l % loops, *n),
        }
    }
    k.answer_asks();
    for rx in pending_asks {
        let results = rx
            .try_recv()
            .expect("every ask answered once all sockets replied");
        let mut kinds: Vec<String> = results.iter().map(|r| format!("{:?}", r.outcome)).collect();
        kinds.sort();
        asks.push(kinds);
    }
    (k.received(), asks, rooms)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Three loops see to it that every client gets what one loop gives it.
    #[test]
    fn several_loops_deliver_as_one(ops in proptest::collection::vec(op(), 1..60)) {
        let one = run(1, &ops);
        let three = run(3, &ops);
        prop_assert_eq!(&one.0, &three.0, "deliveries");
        prop_assert_eq!(&one.1, &three.1, "ack outcomes");
        prop_assert_eq!(&one.2, &three.2, "user rooms");
    }
}

#[test]
fn a_broadcast_is_encoded_once_for_every_loop() {
    let mut k = Cluster::new(3);
    for i in 0..3 {
        k.connect(i % 2 == 0, 0);
    }
    k.route(Command::Broadcast {
        target: Target::All,
        transports: Transports::Both,
        event: Arc::from("ev#1#"),
        data: Arc::from("1"),
        volatile: false,
        reply: None,
    });
    // The same prepared broadcast is queued for each loop.
    let prepared: Vec<*const hub::Prepared> = k
        .queues
        .iter()
        .map(|q| match q.front() {
            Some(Command::Deliver { prepared, .. }) => Arc::as_ptr(prepared),
            other => panic!("expected a delivery, got {other:?}"),
        })
        .collect();
    assert!(prepared.windows(2).all(|w| w[0] == w[1]));
    k.drain();
    assert_eq!(k.received(), vec![vec!["1".to_string()]; 3]);
}
