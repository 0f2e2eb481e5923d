//! The server-layer additions the gateway builds on, over real sockets: a catch-all event
//! handler, a deferred authentication decision, the metrics counters, and the SSE retry hint on
//! shutdown. Every wait is bounded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::sio::{SioClient, SioEvent};
use support::sse::sse_open;
use support::{test_config, WAIT};
use tidings::proto::sio::PacketKind;
use tidings::{Identity, NotificationService, Rejection, Server, Target, Transport};

#[test]
fn on_any_event_gets_the_events_no_handler_names() {
    let (tx, rx) = mpsc::channel();
    let server = Server::builder(test_config())
        .allow_anonymous()
        .on_event("/", "named", |_, ev| {
            if let Some(ack) = ev.ack {
                let _ = ack.send(vec![json!("named")]);
            }
        })
        .on_any_event("/", move |_, ev| {
            let _ = tx.send(ev.name.clone());
            if let Some(ack) = ev.ack {
                let _ = ack.send(vec![json!({"any": ev.name})]);
            }
        })
        .start()
        .unwrap();
    let (mut c, p) = SioClient::connect_with(server.local_addr(), None);
    assert_eq!(p.kind, PacketKind::Connect);
    c.emit_with_ack(1, "named", vec![]);
    c.emit_with_ack(2, "other", vec![json!(1)]);
    let mut acks = Vec::new();
    let deadline = Instant::now() + WAIT;
    while acks.len() < 2 && Instant::now() < deadline {
        if let SioEvent::Packet(p) = c.recv(WAIT) {
            if p.kind == PacketKind::Ack {
                acks.push((p.id, p.data));
            }
        }
    }
    acks.sort_by_key(|(id, _)| *id);
    assert_eq!(acks[0], (Some(1), Some(json!(["named"]))));
    assert_eq!(acks[1], (Some(2), Some(json!([{"any": "other"}]))));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), "other");
    assert!(
        rx.try_recv().is_err(),
        "the named event did not reach the catch-all"
    );
    let m = server.handle().metrics();
    assert_eq!(m.events_in, 2);
    assert!(m.bytes_in > 0 && m.bytes_out > 0);
}

#[test]
fn a_deferred_decision_comes_from_another_thread_and_a_dropped_one_refuses() {
    let server = Server::builder(test_config())
        .authenticate_deferred(|req, decision| {
            let user = req
                .auth
                .and_then(|a| a.get("user"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| req.info.query("user"));
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                match user.as_deref() {
                    Some("drop") => drop(decision),
                    Some("no") => {
                        let _ = decision.decide(Err(Rejection::forbidden("not you")));
                    }
                    Some(u) => {
                        let _ = decision.decide(Ok(Some(Identity::new("t", u))));
                    }
                    None => {
                        let _ = decision.decide(Ok(None));
                    }
                }
            });
        })
        .start()
        .unwrap();
    let addr = server.local_addr();
    let (mut ok, p) = SioClient::connect_with(addr, Some(json!({"user": "ann"})));
    assert_eq!(p.kind, PacketKind::Connect);
    let (_, p) = SioClient::connect_with(addr, Some(json!({"user": "no"})));
    assert_eq!(p.kind, PacketKind::ConnectError);
    assert_eq!(p.data.unwrap()["message"], "not you");
    let (_, p) = SioClient::connect_with(addr, Some(json!({"user": "drop"})));
    assert_eq!(p.kind, PacketKind::ConnectError);
    let refused = sse_open(addr, "/events?user=no", &[])
        .err()
        .expect("refused");
    assert_eq!(refused.status(), 403);
    let mut sse = sse_open(addr, "/events?user=ann", &[]).expect("SSE accepted");
    let service = NotificationService::new(server.handle());
    let reach = service
        .send_counted(
            Transport::Both,
            &Target::User(Identity::new("t", "ann")),
            "hello",
            &json!(1),
        )
        .unwrap();
    assert_eq!((reach.sse, reach.socketio), (1, 1));
    assert_eq!(sse.expect_event().event, "hello");
    let (name, _, _) = ok.expect_event();
    assert_eq!(name, "hello");
    let m = server.handle().metrics();
    assert_eq!((m.delivered_sse, m.delivered_socketio), (1, 1));
}

#[test]
fn shutdown_gives_sse_clients_a_retry_hint_and_closes_them() {
    let server = Server::builder(test_config())
        .allow_anonymous()
        .start()
        .unwrap();
    let addr = server.local_addr();
    let mut sse = sse_open(addr, "/events", &[]).expect("stream");
    // The opening `retry:` has been read; what comes now is the shutdown's.
    let _ = sse.next_event(Duration::from_millis(100));
    assert!(sse.parser.retry().is_some());
    let stopper = std::thread::spawn(move || server.shutdown(Duration::from_secs(2)));
    let (rest, closed) = sse.wire.read_to_close(Instant::now() + WAIT);
    assert!(closed, "the stream ended");
    let text = String::from_utf8_lossy(&rest);
    let hint = text
        .lines()
        .find_map(|l| l.strip_prefix("retry: "))
        .unwrap_or_else(|| panic!("no retry hint before the close: {text:?}"));
    let ms: u64 = hint.parse().unwrap();
    assert!((3000..4000).contains(&ms), "{ms}");
    stopper.join().unwrap().unwrap();
    assert!(
        std::net::TcpStream::connect_timeout(&addr, WAIT).is_err(),
        "nothing listens any more"
    );
}

#[test]
fn commands_from_many_threads_always_wake_the_loop() {
    // The loop is woken only when it sleeps: round trips from several threads, each answered
    // before the next is sent, cross the sleeping/awake edge thousands of times. A lost wake-up
    // would leave a round trip waiting until its 10 s timeout and fail it.
    let server = Server::builder(test_config())
        .allow_anonymous()
        .start()
        .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let handle = server.handle();
            std::thread::spawn(move || {
                for _ in 0..1500 {
                    handle.stats().expect("the loop answers");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no round trip was lost");
    }
    server.shutdown(WAIT).unwrap();
}
