//! Socket.IO v5 over a real WebSocket on 127.0.0.1: auth and rejection, events and acks
//! both ways with binary attachments, ack timeouts and disconnects, hostile Socket.IO input
//! (each closes only its own connection, cleanly), panicking handlers and room limits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;
use support::sio::*;
use support::sse::sse_open;
use support::*;
use tidings::proto::sio::{placeholder, Packet, PacketKind};
use tidings::{
    AckOutcome, AckOutcomes, BroadcastError, Config, DisconnectReason, Identity,
    NotificationService, RoomLimit, Server, Socket, SocketId, Transport,
};

/// A running server with the tests' auth hook and a few handlers:
/// - `echo`: emits `echo` back with the same arguments and attachments;
/// - `ask`: answers the ack with `{"got": args}`;
/// - `ask-binary`: answers the ack with `["bin", <attachment 0>]` and bytes 0, 1, 2;
/// - `boom`: panics.
///
/// Connected sockets and disconnects are reported on channels.
struct Sio {
    server: Server,
    service: NotificationService,
    sockets: mpsc::Receiver<Socket>,
    gone: mpsc::Receiver<(SocketId, DisconnectReason)>,
}

impl Sio {
    fn start(config: Config) -> Sio {
        let (sock_tx, sockets) = mpsc::channel();
        let (gone_tx, gone) = mpsc::channel();
        let sock_tx = Mutex::new(sock_tx);
        let gone_tx = Mutex::new(gone_tx);
        let server = Server::builder(config)
            .authenticate(auth_hook)
            .on_connect("/", move |socket, _auth| {
                let _ = sock_tx.lock().unwrap().send(socket.clone());
            })
            .on_disconnect("/", move |socket, reason| {
                let _ = gone_tx.lock().unwrap().send((socket.id(), reason));
            })
            .on_event("/", "echo", |socket, ev| {
                let _ = socket.emit_binary("echo", ev.args, ev.attachments);
            })
            .on_event("/", "ask", |_socket, ev| {
                if let Some(ack) = ev.ack {
                    let _ = ack.send(vec![json!({ "got": ev.args })]);
                }
            })
            .on_event("/", "ask-binary", |_socket, ev| {
                if let Some(ack) = ev.ack {
                    let _ =
                        ack.send_binary(vec![json!("bin"), placeholder(0)], vec![vec![0, 1, 2]]);
                }
            })
            .on_event("/", "ack-then-wait", |socket, ev| {
                // The ack is queued first; then the handler waits for the loops three times.
                // None of these waits may hang on a loop that nobody woke.
                if let Some(ack) = ev.ack {
                    let _ = ack.send(vec![json!("first")]);
                }
                let service = NotificationService::new(socket.handle().clone());
                let user = socket.identity().cloned().expect("identified socket");
                let joined = service.join_room(&user, "held").is_ok();
                let rooms = service.user_rooms(&user).unwrap_or_default();
                let sockets = socket.handle().stats().map_or(0, |s| s.sio_sockets);
                let _ = socket.emit("waited", vec![json!(joined), json!(rooms), json!(sockets)]);
            })
            .on_event("/", "in-order", |socket, ev| {
                // Sends of every kind, to this socket's loop and to every loop (the room
                // broadcast), all held until the batch ends: they must leave in this order.
                let room = format!("in-order-{}", socket.sid());
                let _ = socket.emit("n", vec![json!(1)]);
                let _ = socket.join(&room);
                let _ = socket.to_room(&room, "n", vec![json!(2)]);
                let _ = socket.emit("n", vec![json!(3)]);
                let _ = socket.leave(&room);
                let _ = socket.to_room(&room, "n", vec![json!("not a member")]);
                if let Some(ack) = ev.ack {
                    let _ = ack.send(vec![json!(4)]);
                }
            })
            .on_event("/", "boom", |_socket, _ev| {
                panic!("a handler that panics (on purpose, in a test)");
            })
            .start()
            .expect("server starts");
        let service = NotificationService::new(server.handle());
        Sio {
            server,
            service,
            sockets,
            gone,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Connects `tenant`/`user` and returns the client and the server's `Socket` for it.
    fn connect(&self, tenant: &str, user: &str) -> (SioClient, Socket) {
        let c = SioClient::connect_as(self.addr(), tenant, user);
        let s = self.sockets.recv_timeout(WAIT).expect("on_connect ran");
        (c, s)
    }

    fn pending_acks(&self) -> usize {
        self.server.handle().stats().unwrap().pending_acks
    }

    fn shutdown(self) {
        self.server.shutdown(Duration::from_millis(500)).unwrap();
    }
}

fn alice() -> Identity {
    Identity::new("acme", "alice")
}

/// One `ask` round trip with ack id `id`: proves the connection (and the dispatcher) still work.
fn round_trip(c: &mut SioClient, id: u64) {
    c.emit_with_ack(id, "ask", vec![json!(id)]);
    let p = c.expect_packet();
    assert_eq!(p.kind, PacketKind::Ack, "{p:?}");
    assert_eq!(p.id, Some(id));
    assert_eq!(p.data, Some(json!([{ "got": [id] }])));
}

#[test]
fn connect_with_auth_gives_the_socket_its_identity() {
    let srv = Sio::start(test_config());
    let (mut c, socket) = srv.connect("acme", "alice");
    assert_eq!(socket.identity(), Some(&alice()));
    assert_eq!(socket.namespace(), "/");
    // The WebSocket handshake: exactly these keys, and no upgrades.
    let hs = c.handshake.as_object().unwrap();
    let mut keys: Vec<&str> = hs.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ]
    );
    assert_eq!(hs["upgrades"], json!([]));
    assert_eq!(hs["pingInterval"], json!(500));
    assert_eq!(hs["pingTimeout"], json!(5000));

    // A broadcast to the user arrives as `42["news",{...}]`; an SSE-only one does not.
    srv.service
        .broadcast_to_user(Transport::Sse, &alice(), "sse-only", &json!(0))
        .unwrap();
    srv.service
        .broadcast_to_user(Transport::SocketIo, &alice(), "news", &json!({"n": 1}))
        .unwrap();
    let (name, args, p) = c.expect_event();
    assert_eq!((name.as_str(), args), ("news", vec![json!({"n": 1})]));
    assert_eq!(p.id, None);

    // Anonymous: no auth payload is accepted (the hook says so) with no identity.
    let (mut anon, answer) = SioClient::connect_with(srv.addr(), None);
    assert_eq!(answer.kind, PacketKind::Connect);
    let anon_socket = srv.sockets.recv_timeout(WAIT).unwrap();
    assert_eq!(anon_socket.identity(), None);
    srv.service
        .provider(Transport::SocketIo)
        .broadcast()
        .to_all("hello-all", &json!(true))
        .unwrap();
    assert_eq!(anon.expect_event().0, "hello-all");
    assert_eq!(c.expect_event().0, "hello-all");
    assert_eq!(srv.server.handle().stats().unwrap().sio_sockets, 2);
    // Idle for a while: the server pings (interval 500 ms), the client answers, the session lives.
    c.expect_silence(Duration::from_millis(1300));
    assert!(c.pings_answered >= 2, "{} pings", c.pings_answered);
    round_trip(&mut c, 1);
    srv.shutdown();
}

#[test]
fn a_rejected_connect_gets_connect_error_with_message_and_data() {
    let srv = Sio::start(test_config());
    let (mut c, p) = SioClient::connect_with(
        srv.addr(),
        Some(json!({"tenant": "acme", "user": "deny403"})),
    );
    assert_eq!(p.kind, PacketKind::ConnectError);
    assert_eq!(p.nsp, "/");
    assert_eq!(
        p.data,
        Some(json!({"message": "not your stream", "data": {"code": 403}}))
    );
    assert!(
        srv.sockets.try_recv().is_err(),
        "on_connect ran for a rejected client"
    );
    // The Engine.IO session stays: the client may try again, with better credentials.
    c.ws.send_text(r#"40{"tenant":"acme","user":"alice"}"#)
        .unwrap();
    let p = c.expect_packet();
    assert_eq!(p.kind, PacketKind::Connect, "{p:?}");
    srv.sockets.recv_timeout(WAIT).unwrap();
    round_trip(&mut c, 1);

    // An unknown namespace is refused by the server itself.
    c.ws.send_text("40/nope,").unwrap();
    let p = c.expect_packet();
    assert_eq!(p.kind, PacketKind::ConnectError);
    assert_eq!(p.nsp, "/nope");
    assert_eq!(p.data, Some(json!({"message": "Invalid namespace"})));
    srv.shutdown();
}

#[test]
fn events_both_ways_with_binary_attachments() {
    let srv = Sio::start(test_config());
    let (mut c, socket) = srv.connect("acme", "alice");
    // Client → server → client, with two attachments (one empty, one with every byte value).
    let all_bytes: Vec<u8> = (0..=255).collect();
    c.emit_binary(
        "echo",
        vec![json!({"a": placeholder(0)}), json!("x"), placeholder(1)],
        vec![Vec::new(), all_bytes.clone()],
    );
    let (name, args, p) = c.expect_event();
    assert_eq!(p.kind, PacketKind::BinaryEvent);
    assert_eq!(name, "echo");
    assert_eq!(
        args,
        [json!({"a": placeholder(0)}), json!("x"), placeholder(1)]
    );
    assert_eq!(p.attachments, [Vec::new(), all_bytes]);

    // The same as raw text, as socket.io-client writes it.
    c.send_raw(r#"51-["echo",{"_placeholder":true,"num":0}]"#)
        .unwrap();
    c.ws.send_binary(b"raw").unwrap();
    let (_, args, p) = c.expect_event();
    assert_eq!(args, [placeholder(0)]);
    assert_eq!(p.attachments, [b"raw".to_vec()]);

    // Plain events both ways.
    c.emit("echo", vec![json!(1), json!("two"), json!([3])]);
    let (name, args, p) = c.expect_event();
    assert_eq!((p.kind, name.as_str()), (PacketKind::Event, "echo"));
    assert_eq!(args, [json!(1), json!("two"), json!([3])]);

    // Server → client on the application's initiative.
    socket
        .emit_binary(
            "file",
            vec![json!({"name": "a.bin"}), placeholder(0), placeholder(1)],
            vec![vec![9; 1000], vec![7]],
        )
        .unwrap();
    let (name, args, p) = c.expect_event();
    assert_eq!(name, "file");
    assert_eq!(
        args,
        [json!({"name": "a.bin"}), placeholder(0), placeholder(1)]
    );
    assert_eq!(p.attachments, [vec![9; 1000], vec![7]]);
    srv.shutdown();
}

#[test]
fn client_to_server_acks_with_and_without_binary() {
    let srv = Sio::start(test_config());
    let (mut c, _) = srv.connect("acme", "alice");
    round_trip(&mut c, 0);
    round_trip(&mut c, 18_446_744_073_709_551_615); // u64::MAX is a valid id
    c.emit_with_ack(8, "ask-binary", vec![]);
    let p = c.expect_packet();
    assert_eq!(p.kind, PacketKind::BinaryAck, "{p:?}");
    assert_eq!(p.id, Some(8));
    assert_eq!(p.data, Some(json!(["bin", placeholder(0)])));
    assert_eq!(p.attachments, [vec![0, 1, 2]]);
    srv.shutdown();
}

/// A client that sends its last message and its FIN back to back: the server sees the end of
/// the stream and closes at once (the loop stops reading at a short read only when the
/// readiness event reported no FIN; a FIN that came with the bytes raises no second event). The
/// ping timeout is long, so only reading the FIN can close it this soon.
#[test]
fn a_last_message_sent_with_the_fin_is_read_to_the_end() {
    for loops in [1, 2] {
        let srv = Sio::start(Config {
            event_loops: loops,
            ping_timeout: Duration::from_secs(60),
            ..test_config()
        });
        let (mut c, socket) = srv.connect("acme", "alice");
        c.emit_with_ack(5, "ask", vec![json!("bye")]);
        c.ws.wire
            .stream
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        // A WebSocket that ends without a close frame is a protocol error (1002). The ack may
        // still come first: when the FIN travels in a segment of its own, the handler can
        // answer before the loop reads it.
        let mut event = c.recv(WAIT);
        if let SioEvent::Packet(p) = &event {
            assert_eq!((p.kind, p.id), (PacketKind::Ack, Some(5)), "{p:?}");
            event = c.recv(WAIT);
        }
        match event {
            SioEvent::Closed(_) => {}
            other => panic!("expected the server to close, got {other:?}"),
        }
        let (gone, reason) = srv.gone.recv_timeout(WAIT).expect("the server saw the end");
        assert_eq!(gone, socket.id());
        assert_eq!(reason, DisconnectReason::TransportClose);
        srv.shutdown();
    }
}

/// What a handler sends (emits, a join, room broadcasts that go to every loop, a leave, its
/// ack) is held until its batch of handlers ends and leaves in the order it was sent, for
/// clients on one loop and on two, sending at once so their events share batches.
#[test]
fn a_handlers_sends_of_every_kind_leave_in_the_order_they_were_sent() {
    for loops in [1, 2] {
        let srv = Sio::start(Config {
            event_loops: loops,
            ..test_config()
        });
        let mut clients: Vec<SioClient> = (0..4)
            .map(|i| srv.connect("acme", &format!("user{i}")).0)
            .collect();
        for round in 0..3 {
            for (i, c) in clients.iter_mut().enumerate() {
                c.emit_with_ack(round * 10 + i as u64, "in-order", vec![]);
            }
            for (i, c) in clients.iter_mut().enumerate() {
                for n in 1..=3 {
                    let got = c.expect_event_arg();
                    assert_eq!(
                        got,
                        ("n".to_string(), json!(n)),
                        "loops {loops}, client {i}"
                    );
                }
                let p = c.expect_packet();
                assert_eq!(p.kind, PacketKind::Ack, "{p:?}");
                assert_eq!(p.id, Some(round * 10 + i as u64));
                assert_eq!(p.data, Some(json!([4])));
            }
        }
        srv.shutdown();
    }
}

/// Broadcasts back to back to more clients than the engine hands io in one part, on one loop
/// and on two: io writes the first clients at once and the rest at the turn's end; every client
/// gets every broadcast, once, in order.
#[test]
fn back_to_back_broadcasts_to_many_clients_arrive_whole_and_in_order() {
    const CLIENTS: usize = 300;
    const TICKS: u64 = 5;
    for loops in [1, 2] {
        let srv = Sio::start(Config {
            event_loops: loops,
            ..test_config()
        });
        let mut clients: Vec<SioClient> = (0..CLIENTS)
            .map(|i| srv.connect("acme", &format!("u{i}")).0)
            .collect();
        let all = srv.service.provider(Transport::Both).broadcast();
        for i in 0..TICKS {
            all.to_all("tick", &json!(i)).unwrap();
        }
        for (n, c) in clients.iter_mut().enumerate() {
            for i in 0..TICKS {
                let (name, args, _) = c.expect_event();
                assert_eq!(
                    (name.as_str(), args),
                    ("tick", vec![json!(i)]),
                    "client {n}"
                );
            }
        }
        srv.shutdown();
    }
}

/// A handler that answers an ack and then waits for the loops (join, user_rooms, stats): the
/// loops are woken for what it queued before it waits, so nothing hangs, and the ack goes first.
#[test]
fn a_handler_that_waits_for_the_loops_after_answering_gets_its_answers() {
    for loops in [1, 2] {
        let srv = Sio::start(Config {
            event_loops: loops,
            ..test_config()
        });
        let (mut c, _) = srv.connect("acme", "alice");
        c.emit_with_ack(1, "ack-then-wait", vec![]);
        let p = c.expect_packet();
        assert_eq!(p.kind, PacketKind::Ack, "{p:?}");
        assert_eq!(p.data, Some(json!(["first"])));
        let (name, args, _) = c.expect_event();
        assert_eq!(name, "waited");
        assert_eq!(
            args,
            vec![json!(true), json!(["held"]), json!(1)],
            "{loops} loop(s)"
        );
        srv.shutdown();
    }
}

/// Several clients on two loops, each keeping a window of emits with ack in flight (the shape of
/// the ack benchmark): every emit is answered, on both loops, and none waits for another
/// client's traffic to be read. (A loop once set connections aside while the dispatcher looked
/// far behind and then slept on them: the last window of half the clients was never answered.)
#[test]
fn acks_in_flight_on_two_loops_are_all_answered() {
    const CLIENTS: usize = 4;
    const WINDOW: u64 = 16;
    const ROUND_TRIPS: u64 = 1_500;
    let srv = Sio::start(Config {
        event_loops: 2,
        ..test_config()
    });
    let clients: Vec<SioClient> = (0..CLIENTS)
        .map(|i| srv.connect("acme", &format!("user{i}")).0)
        .collect();
    let workers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                for id in 0..WINDOW {
                    c.emit_with_ack(id, "ask", vec![json!(id)]);
                }
                let mut answered = 0u64;
                while answered < ROUND_TRIPS {
                    // expect_packet waits at most WAIT: a stalled loop fails here.
                    let p = c.expect_packet();
                    assert_eq!(p.kind, PacketKind::Ack, "{p:?}");
                    let id = p.id.expect("ack id");
                    assert_eq!(p.data, Some(json!([{ "got": [id] }])));
                    answered += 1;
                    let next = id + WINDOW;
                    if next < ROUND_TRIPS {
                        c.emit_with_ack(next, "ask", vec![json!(next)]);
                    }
                }
                answered
            })
        })
        .collect();
    for w in workers {
        assert_eq!(w.join().expect("client thread"), ROUND_TRIPS);
    }
    srv.shutdown();
}

#[test]
fn server_to_client_acks_ok_timeout_and_disconnected() {
    let srv = Sio::start(test_config());
    let (mut phone, phone_socket) = srv.connect("acme", "alice");
    let (mut tablet, tablet_socket) = srv.connect("acme", "alice");
    let features = srv
        .service
        .provider(Transport::SocketIo)
        .socketio_features()
        .unwrap();

    // Both connections answer: one Ok per connection.
    std::thread::scope(|scope| {
        let waiting =
            scope.spawn(|| features.to_user_with_ack(&alice(), "confirm", &json!({"q": 1}), WAIT));
        for (c, answer) in [(&mut phone, "phone"), (&mut tablet, "tablet")] {
            let (name, args, p) = c.expect_event();
            assert_eq!((name.as_str(), args), ("confirm", vec![json!({"q": 1})]));
            c.ack(p.id.expect("an ack id"), vec![json!(answer)]);
        }
        let outcomes = waiting.join().unwrap().unwrap();
        let AckOutcomes::Outcomes(results) = outcomes else {
            panic!("{outcomes:?}")
        };
        let mut got: Vec<(SocketId, AckOutcome)> =
            results.into_iter().map(|r| (r.socket, r.outcome)).collect();
        got.sort_by_key(|(s, _)| *s);
        let ok = |s: &str| AckOutcome::Ok {
            args: vec![json!(s)],
            attachments: Vec::new(),
        };
        let mut want = vec![
            (phone_socket.id(), ok("phone")),
            (tablet_socket.id(), ok("tablet")),
        ];
        want.sort_by_key(|(s, _)| *s);
        assert_eq!(got, want);
    });
    assert_eq!(srv.pending_acks(), 0);

    // Only the phone answers: Ok and Timeout. The tablet's late answer is ignored.
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            features.to_user_with_ack(&alice(), "confirm", &json!(2), Duration::from_millis(400))
        });
        let (_, _, p) = phone.expect_event();
        phone.ack(p.id.unwrap(), vec![]);
        let (_, _, late) = tablet.expect_event();
        let outcomes = waiting.join().unwrap().unwrap();
        let AckOutcomes::Outcomes(results) = outcomes else {
            panic!("{outcomes:?}")
        };
        for r in &results {
            let want = if r.socket == phone_socket.id() {
                AckOutcome::Ok {
                    args: vec![],
                    attachments: vec![],
                }
            } else {
                AckOutcome::Timeout
            };
            assert_eq!(r.outcome, want);
        }
        assert_eq!(results.len(), 2);
        tablet.ack(late.id.unwrap(), vec![json!("too late")]);
    });
    round_trip(&mut tablet, 1);
    assert_eq!(srv.pending_acks(), 0);

    // Socket::emit_with_ack: a timeout through the callback.
    let (tx, rx) = mpsc::channel();
    phone_socket
        .emit_with_ack(
            "ping?",
            vec![json!(3)],
            Duration::from_millis(200),
            move |o| {
                let _ = tx.send(o);
            },
        )
        .unwrap();
    let (name, _, _) = phone.expect_event();
    assert_eq!(name, "ping?");
    assert_eq!(rx.recv_timeout(WAIT), Ok(AckOutcome::Timeout));

    // And Ok through the callback, with a binary answer.
    let (tx, rx) = mpsc::channel();
    phone_socket
        .emit_with_ack("ping?", vec![], WAIT, move |o| {
            let _ = tx.send(o);
        })
        .unwrap();
    let (_, _, p) = phone.expect_event();
    let mut answer = Packet::ack("/", p.id.unwrap(), vec![placeholder(0)]);
    answer.attachments = vec![vec![42]];
    phone.send_packet(&answer);
    assert_eq!(
        rx.recv_timeout(WAIT),
        Ok(AckOutcome::Ok {
            args: vec![placeholder(0)],
            attachments: vec![vec![42]],
        })
    );
    assert_eq!(srv.pending_acks(), 0);

    // Disconnected: the tablet reads the request and goes away.
    std::thread::scope(|scope| {
        let waiting = scope
            .spawn(|| tablet_socket.emit_with_ack_wait("bye?", vec![], Duration::from_secs(30)));
        let (name, _, _) = tablet.expect_event();
        assert_eq!(name, "bye?");
        let _ = tablet.ws.send_close(1000);
        assert_eq!(waiting.join().unwrap(), Ok(AckOutcome::Disconnected));
    });
    let (gone, reason) = srv.gone.recv_timeout(WAIT).unwrap();
    assert_eq!(gone, tablet_socket.id());
    assert_eq!(reason, DisconnectReason::TransportClose);

    // to_user_with_ack while the phone drops the TCP connection: Disconnected too.
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            features.to_user_with_ack(&alice(), "last", &json!(null), Duration::from_secs(30))
        });
        let (name, _, _) = phone.expect_event();
        assert_eq!(name, "last");
        drop(phone);
        let outcomes = waiting.join().unwrap().unwrap();
        let AckOutcomes::Outcomes(results) = outcomes else {
            panic!("{outcomes:?}")
        };
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].outcome, AckOutcome::Disconnected);
    });
    // The ack table is empty again, and an emit to a gone socket answers Disconnected at once.
    assert_eq!(srv.pending_acks(), 0);
    assert_eq!(
        phone_socket.emit_with_ack_wait("x", vec![], WAIT),
        Ok(AckOutcome::Disconnected)
    );
    assert_eq!(srv.pending_acks(), 0);
    srv.shutdown();
}

#[test]
fn to_user_with_ack_without_socketio_connections_is_no_recipients() {
    let srv = Sio::start(test_config());
    let features = srv
        .service
        .provider(Transport::Both)
        .socketio_features()
        .unwrap();
    let nobody = Identity::new("acme", "nobody");
    assert_eq!(
        features.to_user_with_ack(&nobody, "q", &json!(1), WAIT),
        Ok(AckOutcomes::NoRecipients)
    );
    // A user with only an SSE stream has no Socket.IO recipient either.
    let _sse = sse_open(srv.addr(), "/events?tenant=acme&user=sse-only", &[]).unwrap();
    let sse_only = Identity::new("acme", "sse-only");
    assert_eq!(
        features.to_user_with_ack(&sse_only, "q", &json!(1), WAIT),
        Ok(AckOutcomes::NoRecipients)
    );
    // The same user id in another tenant is another user.
    let (_c, _) = srv.connect("globex", "nobody");
    assert_eq!(
        features.to_user_with_ack(&nobody, "q", &json!(1), WAIT),
        Ok(AckOutcomes::NoRecipients)
    );
    // Invalid input is refused before anything is sent.
    assert!(matches!(
        features.to_user_with_ack(&alice(), "connect", &json!(1), WAIT),
        Err(BroadcastError::InvalidEvent(_))
    ));
    assert_eq!(srv.pending_acks(), 0);
    srv.shutdown();
}

/// Every hostile Socket.IO input that must close the connection. Each is sent as one Engine.IO
/// message (`4` + the text) on a fresh connection.
fn closing_inputs() -> Vec<(String, String)> {
    let ph = |n: usize| placeholder(n).to_string();
    let eleven: Vec<String> = (0..11).map(ph).collect();
    let deep = format!("2[\"x\",{}{}]", "[".repeat(100_000), "]".repeat(100_000));
    let ack_10k = "1".repeat(10_000);
    let nsp_1mb = format!("/{}", "a".repeat(1 << 20));
    let mut v: Vec<(String, String)> = vec![
        (
            "placeholder num is a string".into(),
            r#"51-["hello",{"_placeholder":true,"num":"splice"}]"#.into(),
        ),
        (
            "placeholder out of range".into(),
            r#"51-["hello",{"_placeholder":true,"num":1}]"#.into(),
        ),
        (
            "placeholder negative".into(),
            r#"51-["hello",{"_placeholder":true,"num":-1}]"#.into(),
        ),
        (
            "placeholder not an integer".into(),
            r#"51-["hello",{"_placeholder":true,"num":0.5}]"#.into(),
        ),
        (
            "placeholder in a non-binary event".into(),
            r#"2["hello",{"_placeholder":true,"num":0}]"#.into(),
        ),
        (
            "5999999999 attachments".into(),
            r#"5999999999-["hello"]"#.into(),
        ),
        (
            "11 attachments".into(),
            format!("511-[\"hello\",{}]", eleven.join(",")),
        ),
        (
            "event name is an object".into(),
            r#"2[{"toString":"x"}]"#.into(),
        ),
        ("event name is null".into(), r#"2[null,"x"]"#.into()),
        ("event name is a number".into(), "2[42]".into()),
        ("empty event array".into(), "2[]".into()),
        ("event payload not an array".into(), r#"2{"a":1}"#.into()),
        (
            "ack id of 10 000 digits".into(),
            format!("2{ack_10k}[\"x\"]"),
        ),
        (
            "ack answer id of 10 000 digits".into(),
            format!("3{ack_10k}[]"),
        ),
        (
            "ack id beyond u64".into(),
            r#"218446744073709551616["x"]"#.into(),
        ),
        (
            "1 MB namespace (connect)".into(),
            format!("0{nsp_1mb},{{}}"),
        ),
        (
            "1 MB namespace (event)".into(),
            format!("2{nsp_1mb},[\"x\"]"),
        ),
        ("JSON nested 100 000 deep".into(), deep),
        (
            "ack payload nested 100 000 deep".into(),
            format!("30{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        ),
        ("ack without an id".into(), "3[]".into()),
        ("ack payload not an array".into(), r#"31{"a":1}"#.into()),
        ("DISCONNECT with a payload".into(), r#"1{"a":1}"#.into()),
        ("unknown packet type".into(), "9".into()),
        ("client CONNECT_ERROR".into(), r#"4{"message":"x"}"#.into()),
    ];
    for name in [
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "newListener",
        "removeListener",
    ] {
        v.push((
            format!("reserved event name {name}"),
            format!("2[\"{name}\",1]"),
        ));
    }
    v
}

enum Step {
    Text(String),
    Binary(Vec<u8>),
}

fn hostile_config() -> Config {
    Config {
        // Above 1 MiB, so the 1 MB namespace reaches the Socket.IO decoder instead of being cut
        // off by the WebSocket message limit.
        max_payload: 1_100_000,
        ..test_config()
    }
}

#[test]
fn hostile_packets_close_only_their_own_connection_cleanly() {
    let srv = Sio::start(hostile_config());
    let (mut good, _) = srv.connect("acme", "good");
    let mut next_id = 100;
    for (what, text) in closing_inputs() {
        let (mut bad, bad_socket) = srv.connect("acme", "mallory");
        bad.send_raw(&text)
            .unwrap_or_else(|e| panic!("{what}: send failed: {e}"));
        let code = bad.expect_closed(0);
        assert_eq!(code, Some(1000), "{what}: not closed with a close frame");
        let (gone, reason) = srv.gone.recv_timeout(WAIT).unwrap();
        assert_eq!(gone, bad_socket.id(), "{what}");
        assert_eq!(reason, DisconnectReason::ParseError, "{what}");
        // The well-behaved client on the same server never noticed.
        round_trip(&mut good, next_id);
        next_id += 1;
    }
    // Attachments that do not match the header: a text part while binaries are due, a binary
    // without a header.
    let header = r#"51-["hello",{"_placeholder":true,"num":0}]"#.to_string();
    let ten: Vec<String> = (0..10).map(|n| placeholder(n).to_string()).collect();
    let mut over_max_payload = vec![Step::Text(format!("510-[\"big\",{}]", ten.join(",")))];
    // 6 × 200 KB: each under maxPayload (1.1 MB), together over it.
    over_max_payload.extend((0..6).map(|_| Step::Binary(vec![0xAB; 200_000])));
    for (what, steps) in [
        (
            "text while an attachment is due",
            vec![Step::Text(header), Step::Text(r#"2["x"]"#.into())],
        ),
        (
            "binary without a binary packet",
            vec![Step::Binary(b"zzz".to_vec())],
        ),
        ("attachments over maxPayload in total", over_max_payload),
    ] {
        let (mut bad, _) = srv.connect("acme", "mallory");
        for step in steps {
            match step {
                // The server may close before the last steps are written.
                Step::Text(t) => drop(bad.send_raw(&t)),
                Step::Binary(b) => drop(bad.ws.send_binary(&b)),
            }
        }
        assert_eq!(bad.expect_closed(0), Some(1000), "{what}");
        srv.gone.recv_timeout(WAIT).unwrap();
        round_trip(&mut good, next_id);
        next_id += 1;
    }
    let stats = srv.server.handle().stats().unwrap();
    assert_eq!(stats.sio_sockets, 1);
    assert_eq!(stats.pending_acks, 0);
    srv.shutdown();
}

/// With the default maxPayload (1 MB), a 1 MB namespace does not even reach the Socket.IO decoder:
/// the WebSocket message limit closes the connection with 1009 "message too big".
#[test]
fn a_message_over_max_payload_is_closed_with_1009() {
    let srv = Sio::start(test_config());
    let (mut good, _) = srv.connect("acme", "good");
    let (mut bad, _) = srv.connect("acme", "mallory");
    let _ = bad.send_raw(&format!("0/{},{{}}", "a".repeat(1 << 20)));
    assert_eq!(bad.expect_closed(0), Some(1009));
    let reason = srv.gone.recv_timeout(WAIT).unwrap().1;
    assert!(
        matches!(
            reason,
            DisconnectReason::TransportClose | DisconnectReason::TransportError
        ),
        "{reason:?}"
    );
    round_trip(&mut good, 1);
    srv.shutdown();
}

#[test]
fn acks_for_unknown_or_answered_ids_are_ignored_and_the_connection_stays() {
    let srv = Sio::start(test_config());
    let (mut c, socket) = srv.connect("acme", "alice");
    c.send_raw("3999[]").unwrap();
    c.send_raw(r#"30["never asked"]"#).unwrap();
    c.send_raw(&format!("3{}[]", u64::MAX)).unwrap();
    round_trip(&mut c, 1);
    // Answer a real request twice: the second answer is ignored.
    let (tx, rx) = mpsc::channel();
    socket
        .emit_with_ack("q", vec![], WAIT, move |o| {
            let _ = tx.send(o);
        })
        .unwrap();
    let (_, _, p) = c.expect_event();
    let id = p.id.unwrap();
    c.ack(id, vec![json!("first")]);
    c.ack(id, vec![json!("second")]);
    assert_eq!(
        rx.recv_timeout(WAIT),
        Ok(AckOutcome::Ok {
            args: vec![json!("first")],
            attachments: vec![],
        })
    );
    round_trip(&mut c, 2);
    assert!(rx.recv_timeout(QUIET).is_err(), "the callback ran twice");
    assert_eq!(srv.pending_acks(), 0);
    assert!(srv.gone.try_recv().is_err());
    srv.shutdown();
}

#[test]
fn a_panicking_handler_does_not_stop_other_handlers() {
    let srv = Sio::start(test_config());
    let (mut a, _) = srv.connect("acme", "alice");
    let (mut b, _) = srv.connect("acme", "bob");
    for i in 0..3 {
        a.emit("boom", vec![json!(i)]);
        round_trip(&mut a, i);
        round_trip(&mut b, i);
    }
    a.emit_with_ack(10, "boom", vec![]);
    round_trip(&mut a, 11);
    // Disconnect handlers still run, and new clients still connect.
    drop(b);
    assert_eq!(
        srv.gone.recv_timeout(WAIT).unwrap().1,
        DisconnectReason::TransportClose
    );
    let (mut c, _) = srv.connect("acme", "carol");
    round_trip(&mut c, 1);
    srv.shutdown();
}

#[test]
fn join_room_past_max_rooms_per_user_is_a_typed_error() {
    let srv = Sio::start(Config {
        max_rooms_per_user: 3,
        ..test_config()
    });
    let (mut member, _) = srv.connect("acme", "alice");
    let (mut outsider, _) = srv.connect("acme", "bob");
    let features = srv
        .service
        .provider(Transport::SocketIo)
        .socketio_features()
        .unwrap();
    for room in ["r1", "r2", "r3"] {
        features.join_room(&alice(), room).unwrap();
    }
    // Joining a room one is already in is not a new membership.
    features.join_room(&alice(), "r2").unwrap();
    assert_eq!(
        features.join_room(&alice(), "r4"),
        Err(BroadcastError::TooManyRooms(RoomLimit::PerUser(3)))
    );
    let mut rooms = features.user_rooms(&alice()).unwrap();
    rooms.sort();
    assert_eq!(rooms, ["r1", "r2", "r3"]);
    // The rooms that were joined work: members receive, others do not.
    srv.service
        .broadcast_to_room("r3", "room-event", &json!(1))
        .unwrap();
    srv.service
        .broadcast_to_room("r4", "not-joined", &json!(2))
        .unwrap();
    srv.service
        .provider(Transport::SocketIo)
        .broadcast()
        .to_all("end", &json!(null))
        .unwrap();
    assert_eq!(member.expect_event().0, "room-event");
    assert_eq!(member.expect_event().0, "end");
    assert_eq!(outsider.expect_event().0, "end");
    // Leaving frees a slot.
    features.leave_room(&alice(), "r1").unwrap();
    features.join_room(&alice(), "r4").unwrap();
    srv.shutdown();
}

#[test]
fn socket_emits_with_reserved_or_broken_names_are_typed_errors_and_send_nothing() {
    let srv = Sio::start(test_config());
    let (mut client, socket) = srv.connect("acme", "alice");
    for bad in ["connect", "disconnect", "", "a\r\nb"] {
        assert!(
            matches!(
                socket.emit(bad, vec![json!(1)]),
                Err(BroadcastError::InvalidEvent(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        socket.join(""),
        Err(BroadcastError::InvalidRoom(_))
    ));
    assert!(matches!(
        socket.to_room("r", "connect_error", vec![]),
        Err(BroadcastError::InvalidEvent(_))
    ));
    // Nothing of the above reached the client: the next event it sees is this one.
    socket.emit("fine", vec![json!(2)]).unwrap();
    let (event, args, _) = client.expect_event();
    assert_eq!((event.as_str(), args), ("fine", vec![json!(2)]));
    srv.shutdown();
}
