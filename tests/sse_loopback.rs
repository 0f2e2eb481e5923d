//! SSE over real sockets on 127.0.0.1: headers, named events with ids, heartbeats,
//! slow consumers, resume with `Last-Event-ID`, resets, auth, rooms, tenants, hostile ids and
//! event names.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::http::*;
use support::sse::*;
use support::*;
use tidings::proto::sse::ParsedEvent;
use tidings::{
    BroadcastError, Config, Identity, NotificationService, Server, StreamId, Transport, RESET_EVENT,
};

/// A running server with the tests' auth hook; SSE opens/closes are reported on channels.
struct Sse {
    server: Server,
    service: NotificationService,
    opened: mpsc::Receiver<(StreamId, Option<Identity>)>,
    closed: mpsc::Receiver<StreamId>,
}

impl Sse {
    fn start(config: Config) -> Sse {
        let (open_tx, opened) = mpsc::channel();
        let (close_tx, closed) = mpsc::channel();
        let open_tx = Mutex::new(open_tx);
        let close_tx = Mutex::new(close_tx);
        let server = Server::builder(config)
            .authenticate(auth_hook)
            .on_sse_open(move |id, who| {
                let _ = open_tx.lock().unwrap().send((id, who.cloned()));
            })
            .on_sse_close(move |id| {
                let _ = close_tx.lock().unwrap().send(id);
            })
            .start()
            .expect("server starts");
        let service = NotificationService::new(server.handle());
        Sse {
            server,
            service,
            opened,
            closed,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Opens `/events?user=..&tenant=..` and returns the stream and its id.
    fn open(&self, tenant: &str, user: &str, headers: &[(&str, &str)]) -> (SseStream, StreamId) {
        self.open_target(&format!("/events?tenant={tenant}&user={user}"), headers)
    }

    fn open_target(&self, target: &str, headers: &[(&str, &str)]) -> (SseStream, StreamId) {
        let s = sse_open(self.addr(), target, headers)
            .unwrap_or_else(|r| panic!("stream refused: {r:?}"));
        let (id, _) = self.opened.recv_timeout(WAIT).expect("on_sse_open");
        (s, id)
    }

    /// Sends a `to_all` marker and returns its name: on every stream it arrives after whatever
    /// was broadcast before it, so "the next event is the marker" proves nothing came in between.
    fn marker(&self, name: &str) {
        self.service
            .provider(Transport::Sse)
            .broadcast()
            .to_all(name, &json!({"marker": name}))
            .unwrap();
    }

    fn shutdown(self) {
        self.server.shutdown(Duration::from_millis(500)).unwrap();
    }
}

fn alice() -> Identity {
    Identity::new("acme", "alice")
}

fn data(e: &ParsedEvent) -> Value {
    serde_json::from_str(&e.data).unwrap_or_else(|_| panic!("data is JSON: {e:?}"))
}

fn names(events: &[ParsedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

#[test]
fn stream_opens_with_exact_headers_and_a_retry_line() {
    let srv = Sse::start(test_config());
    let (mut s, _) = srv.open("acme", "alice", &[]);
    assert_eq!(s.head.status, 200);
    assert_eq!(
        s.head.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(s.head.header("cache-control"), Some("no-cache"));
    assert_eq!(s.head.header("x-accel-buffering"), Some("no"));
    assert_eq!(s.head.header("content-length"), None);
    // `retry` is the configured 3 s plus up to 1 s of jitter.
    let retry = s.wait_retry().expect("a retry line");
    assert!((3000..4000).contains(&retry), "retry {retry}");
    assert_eq!(srv.server.handle().stats().unwrap().sse_streams, 1);
    srv.shutdown();
}

#[test]
fn named_events_with_ids_arrive_from_every_broadcast_kind() {
    let srv = Sse::start(test_config());
    let (mut s, _) = srv.open("acme", "alice", &[]);
    let sse = srv.service.provider(Transport::Sse).broadcast();
    srv.service
        .broadcast_to_user(
            Transport::Sse,
            &alice(),
            "notification",
            &json!({"subject": "Hi"}),
        )
        .unwrap();
    srv.service
        .broadcast_to_tenant(Transport::Both, "acme", "tenant-news", &json!([1, 2]))
        .unwrap();
    sse.to_all("global", &json!("to everyone")).unwrap();
    // Socket.IO only: never reaches an SSE stream.
    srv.service
        .broadcast_to_user(Transport::SocketIo, &alice(), "sio-only", &json!(null))
        .unwrap();
    // Multi-line data survives (CR, LF and CRLF inside a JSON string are escaped anyway).
    sse.to_all("lines", &json!("a\nb\r\nc")).unwrap();
    srv.marker("end");

    let events = s.events_until("end", 10);
    assert_eq!(
        names(&events),
        ["notification", "tenant-news", "global", "lines", "end"]
    );
    assert_eq!(data(&events[0]), json!({"subject": "Hi"}));
    assert_eq!(data(&events[1]), json!([1, 2]));
    assert_eq!(data(&events[2]), json!("to everyone"));
    assert_eq!(data(&events[3]), json!("a\nb\r\nc"));
    // Ids are `<epoch>:<seq>`: one epoch, strictly increasing sequence numbers.
    let ids: Vec<(u64, u64)> = events.iter().map(|e| split_id(&e.last_event_id)).collect();
    assert!(
        ids.windows(2).all(|w| w[0].0 == w[1].0 && w[0].1 < w[1].1),
        "{ids:?}"
    );
    srv.shutdown();
}

#[test]
fn heartbeats_arrive_on_an_idle_stream() {
    let srv = Sse::start(Config {
        sse_heartbeat: Duration::from_millis(100),
        ..test_config()
    });
    let (mut s, _) = srv.open("acme", "alice", &[]);
    let seen = s.wait_comments(3, Duration::from_secs(3));
    assert!(seen >= 3, "only {seen} heartbeat comments");
    assert!(!s.closed);
    srv.shutdown();
}

/// Config for the slow-consumer tests: a small outbound queue.
fn small_queue() -> Config {
    Config {
        max_payload: 100_000,
        max_outbound_bytes: 256 * 1024,
        ..test_config()
    }
}

#[test]
fn a_slow_consumer_is_disconnected_while_another_stream_keeps_receiving_everything() {
    let srv = Sse::start(small_queue());
    // The slow client asks for a stream and never reads a byte.
    let mut slow = Wire::connect(srv.addr());
    slow.send(&get_request("/events?user=slow", &[], false))
        .unwrap();
    let (slow_id, _) = srv.opened.recv_timeout(WAIT).expect("slow stream opens");
    let (mut good, _) = srv.open("acme", "good", &[]);

    // The good client reads on its own thread until the "done" event, publishing its progress.
    let progress = Arc::new(AtomicU64::new(0));
    let reader = {
        let progress = progress.clone();
        std::thread::spawn(move || {
            let mut seqs = Vec::new();
            for _ in 0..10_000 {
                let Some(e) = good.next_event(Duration::from_secs(20)) else {
                    break;
                };
                if e.event == "done" {
                    return (seqs, Some(good));
                }
                if e.event == "bulk" {
                    seqs.push(data(&e)["n"].as_u64().unwrap());
                    progress.fetch_add(1, Ordering::SeqCst);
                }
            }
            (seqs, None)
        })
    };

    let pad = "x".repeat(40_000);
    let sse = srv.service.provider(Transport::Sse).broadcast();
    let mut sent = 0u64;
    // Paced by the reading client: it is never more than 4 events (160 KB, under the cap)
    // behind, however slowly a loaded machine schedules its thread.
    let send_next = |sent: &mut u64| {
        let paced = Instant::now() + Duration::from_secs(10);
        while progress.load(Ordering::SeqCst) + 4 < *sent && Instant::now() < paced {
            std::thread::sleep(Duration::from_millis(1));
        }
        sse.to_all("bulk", &json!({"n": *sent, "pad": pad}))
            .unwrap();
        *sent += 1;
    };
    let mut dropped = None;
    let started = Instant::now();
    // Bounded: at most 1000 events of 40 KB (40 MB: far beyond any loopback socket buffer).
    while sent < 1000 && started.elapsed() < Duration::from_secs(30) {
        send_next(&mut sent);
        if let Ok(id) = srv.closed.recv_timeout(Duration::from_millis(1)) {
            dropped = Some(id);
            break;
        }
    }
    assert_eq!(
        dropped,
        Some(slow_id),
        "the slow consumer was not disconnected"
    );
    // A few more after the drop, then the end marker.
    for _ in 0..5 {
        send_next(&mut sent);
    }
    sse.to_all("done", &json!(null)).unwrap();
    let (seqs, good) = reader.join().unwrap();
    assert!(
        good.is_some(),
        "the good stream ended early after {} events",
        seqs.len()
    );
    assert_eq!(seqs, (0..sent).collect::<Vec<_>>());
    assert_eq!(srv.server.handle().stats().unwrap().sse_streams, 1);
    // The slow client sees its stream end (after what the kernel had buffered).
    assert!(slow.wait_eof(Instant::now() + Duration::from_secs(20)));
    srv.shutdown();
}

/// Several broadcasts issued back to back (larger together than `max_outbound_bytes`, each well
/// under it) to a client that reads promptly: none of them should cost it its stream, since the
/// socket could take them as fast as they come.
#[test]
fn a_burst_over_the_queue_cap_does_not_disconnect_a_reading_client() {
    let srv = Sse::start(small_queue());
    let (mut s, id) = srv.open("acme", "alice", &[]);
    let pad = "y".repeat(60_000);
    let sse = srv.service.provider(Transport::Sse).broadcast();
    for n in 0..8 {
        sse.to_all("burst", &json!({"n": n, "pad": pad})).unwrap();
    }
    srv.marker("end");
    let events = s.events_until("end", 20);
    assert_eq!(events.len(), 9);
    assert!(srv.closed.try_recv() != Ok(id));
    srv.shutdown();
}

/// Shared by the two resume tests: the missed events come exactly once, in order, and only those
/// addressed to the user.
fn resume_after_server_close(resume: impl Fn(&Sse, &str) -> SseStream) {
    let srv = Sse::start(test_config());
    let (mut s, id) = srv.open("acme", "alice", &[]);
    let bob = Identity::new("acme", "bob");
    for n in 1..=3 {
        srv.service
            .broadcast_to_user(Transport::Sse, &alice(), "n", &json!(n))
            .unwrap();
    }
    let seen: Vec<ParsedEvent> = (0..3).map(|_| s.expect_event()).collect();
    assert_eq!(
        seen.iter().map(data).collect::<Vec<_>>(),
        [json!(1), json!(2), json!(3)]
    );
    let last = s.parser.last_event_id().to_string();

    srv.server.handle().sse_close(id).unwrap();
    assert!(s.wait_closed(WAIT), "sse_close did not end the stream");
    assert_eq!(srv.closed.recv_timeout(WAIT), Ok(id));

    // Missed while away: three for alice, one for a room she is in (membership outlives her
    // connection), one for bob and one for a room she is not in (neither may be replayed to her).
    let features = srv
        .service
        .provider(Transport::Both)
        .socketio_features()
        .unwrap();
    features.join_room(&alice(), "ops").unwrap();
    features.join_room(&bob, "sales").unwrap();
    for n in 4..=6 {
        srv.service
            .broadcast_to_user(Transport::Sse, &alice(), "n", &json!(n))
            .unwrap();
        if n == 5 {
            srv.service
                .broadcast_to_user(Transport::Sse, &bob, "n", &json!("bob's"))
                .unwrap();
            srv.service
                .broadcast_to_room("ops", "room", &json!("ops"))
                .unwrap();
            srv.service
                .broadcast_to_room("sales", "room", &json!("sales"))
                .unwrap();
        }
    }
    let mut s = resume(&srv, &last);
    srv.service
        .broadcast_to_user(Transport::Sse, &alice(), "n", &json!(7))
        .unwrap();
    srv.marker("end");
    let events = s.events_until("end", 20);
    assert_eq!(names(&events), ["n", "n", "room", "n", "n", "end"]);
    let values: Vec<Value> = events[..5].iter().map(data).collect();
    assert_eq!(
        values,
        [json!(4), json!(5), json!("ops"), json!(6), json!(7)]
    );
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| split_id(&e.last_event_id).1)
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(seqs[0] > split_id(&last).1);
    srv.shutdown();
}

#[test]
fn resume_with_the_last_event_id_header_replays_missed_events_once_in_order() {
    resume_after_server_close(|srv, last| srv.open("acme", "alice", &[("Last-Event-ID", last)]).0);
}

#[test]
fn resume_with_the_last_event_id_query_parameter_replays_missed_events_once_in_order() {
    resume_after_server_close(|srv, last| {
        let encoded = last.replace(':', "%3A");
        srv.open_target(
            &format!("/events?tenant=acme&user=alice&lastEventId={encoded}"),
            &[],
        )
        .0
    });
}

fn expect_reset(s: &mut SseStream, reason: &str) {
    let e = s.expect_event();
    assert_eq!(e.event, RESET_EVENT, "{e:?}");
    assert_eq!(data(&e), json!({"reason": reason}));
    split_id(&e.last_event_id);
}

#[test]
fn reset_when_the_history_expired_and_for_an_unknown_epoch() {
    let srv = Sse::start(Config {
        sse_history_events: 3,
        ..test_config()
    });
    let (mut s, id) = srv.open("acme", "alice", &[]);
    srv.marker("first");
    let first = s.expect_event();
    let (epoch, seq) = split_id(&first.last_event_id);
    srv.server.handle().sse_close(id).unwrap();
    assert!(s.wait_closed(WAIT));
    for n in 0..6 {
        srv.service
            .broadcast_to_user(Transport::Sse, &alice(), "n", &json!(n))
            .unwrap();
    }
    // The gap after `first` is no longer in the 3-event history.
    let (mut s, _) = srv.open("acme", "alice", &[("Last-Event-ID", &first.last_event_id)]);
    expect_reset(&mut s, "expired");
    srv.marker("live");
    assert_eq!(s.expect_event().event, "live");

    // Another epoch (a previous run of the server): reset, not a replay.
    let other = format!("{}:{seq}", epoch.wrapping_add(1));
    let (mut s2, _) = srv.open("acme", "alice", &[("Last-Event-ID", &other)]);
    expect_reset(&mut s2, "unknown-epoch");
    // A sequence number from the future of this epoch.
    let future = format!("{epoch}:{}", seq + 1_000_000);
    let (mut s3, _) = srv.open("acme", "alice", &[("Last-Event-ID", &future)]);
    expect_reset(&mut s3, "invalid-id");
    srv.marker("after");
    assert_eq!(s.expect_event().event, "after");
    assert_eq!(s2.expect_event().event, "after");
    assert_eq!(s3.expect_event().event, "after");
    srv.shutdown();
}

#[test]
fn rejected_auth_gets_401_or_403_and_no_stream() {
    let srv = Sse::start(test_config());
    for (user, status) in [("deny401", 401), ("deny403", 403)] {
        let r = match sse_open(srv.addr(), &format!("/events?user={user}"), &[]) {
            Ok(_) => panic!("{user} got a stream"),
            Err(r) => r,
        };
        assert_eq!(r.status(), status);
        assert!(r.closed, "the connection stays open after {status}");
        assert_ne!(
            r.head.header("content-type").unwrap_or_default(),
            "text/event-stream; charset=utf-8"
        );
        assert!(!r.body_text().contains("data:"));
    }
    assert!(srv.opened.try_recv().is_err());
    assert_eq!(srv.server.handle().stats().unwrap().sse_streams, 0);
    // A rejected client's resume id changes nothing either.
    let r = sse_open(
        srv.addr(),
        "/events?user=deny401",
        &[("Last-Event-ID", "1:1")],
    );
    assert_eq!(r.err().map(|r| r.status()), Some(401));
    srv.shutdown();
}

#[test]
fn a_room_reaches_its_members_and_never_a_non_member() {
    let srv = Sse::start(test_config());
    let (mut member, _) = srv.open("acme", "alice", &[]);
    let (mut outsider, _) = srv.open("acme", "bob", &[]);
    let (mut anon, _) = srv.open_target("/events", &[]);
    let features = srv
        .service
        .provider(Transport::Both)
        .socketio_features()
        .expect("Socket.IO features");
    features.join_room(&alice(), "ops").unwrap();
    assert_eq!(features.user_rooms(&alice()).unwrap(), ["ops"]);
    srv.service
        .broadcast_to_room("ops", "incident", &json!({"sev": 1}))
        .unwrap();
    srv.service
        .provider(Transport::Sse)
        .broadcast()
        .to_room("ops", "incident-sse", &json!({"sev": 2}))
        .unwrap();
    srv.marker("end");
    assert_eq!(
        names(&member.events_until("end", 5)),
        ["incident", "incident-sse", "end"]
    );
    assert_eq!(names(&outsider.events_until("end", 5)), ["end"]);
    assert_eq!(names(&anon.events_until("end", 5)), ["end"]);

    // After leaving, the member receives nothing more from the room.
    features.leave_room(&alice(), "ops").unwrap();
    srv.service
        .broadcast_to_room("ops", "incident", &json!({"sev": 3}))
        .unwrap();
    srv.marker("end2");
    assert_eq!(names(&member.events_until("end2", 5)), ["end2"]);
    srv.shutdown();
}

#[test]
fn another_tenants_events_never_arrive() {
    let srv = Sse::start(test_config());
    let (mut acme, _) = srv.open("acme", "alice", &[]);
    // Same user id, another tenant: another user.
    let (mut globex, _) = srv.open("globex", "alice", &[]);
    srv.service
        .broadcast_to_tenant(Transport::Sse, "acme", "acme-only", &json!(1))
        .unwrap();
    srv.service
        .broadcast_to_user(Transport::Sse, &alice(), "acme-alice", &json!(2))
        .unwrap();
    let features = srv
        .service
        .provider(Transport::SocketIo)
        .socketio_features()
        .unwrap();
    features.join_room(&alice(), "acme-room").unwrap();
    srv.service
        .broadcast_to_room("acme-room", "acme-room-event", &json!(3))
        .unwrap();
    srv.marker("end");
    assert_eq!(
        names(&acme.events_until("end", 6)),
        ["acme-only", "acme-alice", "acme-room-event", "end"]
    );
    let globex_events = globex.events_until("end", 6);
    assert_eq!(names(&globex_events), ["end"]);

    // Resuming with an id from before those events does not replay another tenant's events.
    // `end` was the fourth broadcast: resume from before the first.
    let (epoch, end_seq) = split_id(&globex_events[0].last_event_id);
    let before = format!("{epoch}:{}", end_seq - 4);
    let (mut resumed, _) = srv.open("globex", "alice", &[("Last-Event-ID", &before)]);
    srv.marker("end2");
    let replay = resumed.events_until("end2", 10);
    assert_eq!(names(&replay), ["end", "end2"]);
    srv.shutdown();
}

#[test]
fn hostile_last_event_ids_get_a_reset_or_a_4xx_and_the_server_keeps_serving() {
    let srv = Sse::start(test_config());
    let (mut bystander, _) = srv.open("acme", "bystander", &[]);
    let huge = "9".repeat(10 * 1024);
    let huge_colon = format!("1:{}", "1".repeat(10 * 1024));
    let raw_cr = get_request(
        "/events?user=alice",
        &[("Last-Event-ID", "1:1\rinjected: x")],
        false,
    );
    let raw_nul = get_request(
        "/events?user=alice",
        &[("Last-Event-ID", "1:\u{0}1")],
        false,
    );
    let raw_bytes = {
        let mut r =
            b"GET /events?user=alice HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: ".to_vec();
        r.extend_from_slice(&[0xff, 0xfe, 0x80, b':', b'1']);
        r.extend_from_slice(b"\r\n\r\n");
        r
    };
    let mut requests: Vec<Vec<u8>> = vec![
        get_request("/events?user=alice", &[("Last-Event-ID", &huge)], false),
        get_request(
            "/events?user=alice",
            &[("Last-Event-ID", &huge_colon)],
            false,
        ),
        get_request(
            &format!("/events?user=alice&lastEventId={huge}"),
            &[],
            false,
        ),
        raw_cr,
        raw_nul,
        raw_bytes,
    ];
    for id in [
        "garbage",
        "",
        ":",
        "1:",
        ":1",
        "-1:1",
        "01:1",
        "1:1:1",
        "18446744073709551616:1",
        "1:18446744073709551616",
        "%0D%0Aevent:%20x",
        "1%3A1%0D%0Adata:%20injected",
        "%00",
    ] {
        requests.push(get_request(
            &format!("/events?user=alice&lastEventId={id}"),
            &[],
            false,
        ));
        if !id.contains('%') {
            requests.push(get_request(
                "/events?user=alice",
                &[("Last-Event-ID", id)],
                false,
            ));
        }
    }
    for req in &requests {
        let shown = String::from_utf8_lossy(&req[..req.len().min(120)]).into_owned();
        match sse_open_raw(srv.addr(), req) {
            Ok(mut s) => {
                let (id, _) = srv.opened.recv_timeout(WAIT).expect("opened");
                // An empty id is no id at all; anything else unusable gets a reset.
                let e = s.next_event(QUIET);
                if let Some(e) = &e {
                    assert_eq!(e.event, RESET_EVENT, "{shown}: {e:?}");
                    assert_eq!(data(e), json!({"reason": "invalid-id"}), "{shown}");
                }
                let empty = req.ends_with(b"lastEventId= HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    || req.windows(16).any(|w| w == b"Last-Event-ID: \r");
                assert!(e.is_some() || empty, "{shown}: no reset");
                srv.server.handle().sse_close(id).unwrap();
                assert!(s.wait_closed(WAIT));
            }
            Err(r) => {
                assert!((400..500).contains(&r.status()), "{shown}: {}", r.status());
            }
        }
    }
    // Nobody else was touched, and new clients are served.
    srv.marker("still-here");
    assert_eq!(
        names(&bystander.events_until("still-here", 3)),
        ["still-here"]
    );
    let (mut fresh, _) = srv.open("acme", "carol", &[]);
    srv.marker("fresh");
    assert_eq!(fresh.expect_event().event, "fresh");
    srv.shutdown();

    // With room for a 10 KB header, the id reaches the parser, which looks at 64 bytes at most.
    let srv = Sse::start(Config {
        max_head_bytes: 32 * 1024,
        ..test_config()
    });
    for id in [&huge, &huge_colon] {
        let (mut s, _) = srv.open("acme", "alice", &[("Last-Event-ID", id)]);
        expect_reset(&mut s, "invalid-id");
    }
    srv.shutdown();
}

#[test]
fn an_event_name_with_cr_or_lf_is_refused_and_nothing_is_written() {
    let srv = Sse::start(test_config());
    let (mut s, id) = srv.open("acme", "alice", &[]);
    let sse = srv.service.provider(Transport::Sse).broadcast();
    let features = srv
        .service
        .provider(Transport::Both)
        .socketio_features()
        .unwrap();
    features.join_room(&alice(), "r").unwrap();
    for bad in ["a\r\nid: 9", "a\nb", "a\rb", "a\0b", "\r\n", "", "connect"] {
        let d = json!({"x": 1});
        let results = [
            sse.to_all(bad, &d),
            sse.to_user(&alice(), bad, &d),
            sse.to_tenant("acme", bad, &d),
            sse.to_room("r", bad, &d),
            srv.service.broadcast_to_room("r", bad, &d),
            srv.service
                .broadcast_to_user(Transport::Both, &alice(), bad, &d),
        ];
        for r in results {
            assert!(
                matches!(r, Err(BroadcastError::InvalidEvent(_))),
                "{bad:?}: {r:?}"
            );
        }
    }
    // Data may hold anything: it is split into data lines, never into fields.
    sse.to_all("ok", &json!("line1\r\nid: 666\n\nevent: evil\rretry: 1"))
        .unwrap();
    // Handle::sse_send with a bad name is refused with a typed error and writes nothing.
    let refused = srv
        .server
        .handle()
        .sse_send(id, Some("x\r\nevent: evil"), "payload");
    assert!(
        matches!(refused, Err(BroadcastError::InvalidEvent(_))),
        "{refused:?}"
    );
    srv.server
        .handle()
        .sse_send(id, Some("direct"), "one\ntwo")
        .unwrap();
    srv.marker("end");
    let events = s.events_until("end", 10);
    assert_eq!(names(&events), ["ok", "direct", "end"]);
    assert_eq!(
        data(&events[0]),
        json!("line1\r\nid: 666\n\nevent: evil\rretry: 1")
    );
    assert_eq!(events[1].data, "one\ntwo");
    let retry = s.parser.retry().unwrap();
    assert!(retry >= 3000, "retry was changed to {retry}");
    srv.shutdown();
}
