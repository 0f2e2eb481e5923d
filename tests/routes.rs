//! Application routes over real sockets: requests under a prefix reach the handler with their
//! head and body, answers come now or later from another thread, unanswered requests get `503`
//! after `request_timeout`, dropped responders `500`, oversized bodies `413` (JSON, before the
//! body is read), and the usual hostile-input rules hold on route paths too. Every wait is
//! bounded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::http::{http_get, http_raw, read_response, Wire};
use support::sse::sse_open;
use support::{test_config, WAIT};
use tidings::{
    Config, Cors, HttpResponse, NotificationService, Responder, Server, Target, Transport,
};

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(body));
    })
}

fn post(target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Responders the `/park` route keeps unanswered (to test the timeout and late answers).
type Parked = Arc<Mutex<Vec<Responder>>>;

struct Fixture {
    server: Server,
    calls: Arc<AtomicUsize>,
    parked: Parked,
}

/// A server with routes: `/api` echoes the request as JSON, `/later` answers from another thread
/// after `?ms=`, `/park` never answers, `/drop` drops the responder, `/panic` panics, `/evil`
/// tries a header injection, `/api/deep` is a longer prefix.
fn start(cfg: Config) -> Fixture {
    let calls = Arc::new(AtomicUsize::new(0));
    let parked: Parked = Arc::default();
    let (c1, p1) = (calls.clone(), parked.clone());
    let server = Server::builder(cfg)
        .allow_anonymous()
        .route("/api", move |req, res| {
            c1.fetch_add(1, Ordering::SeqCst);
            let body = json!({
                "method": format!("{:?}", req.method),
                "path": req.path,
                "subpath": req.subpath(),
                "query": req.query_param("q"),
                "header": req.header("x-test"),
                "bearer": req.bearer_token(),
                "cookie": req.cookie("c"),
                "body": String::from_utf8_lossy(&req.body),
                "prefix": &*req.prefix,
            });
            let _ = res.send(HttpResponse::json(200, &body).header("X-Route", "api"));
        })
        .route("/api/deep", |_, res| {
            let _ = res.send(HttpResponse::text(200, "deep"));
        })
        .route("/later", |req, res| {
            let ms: u64 = req
                .query_param("ms")
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(ms));
                let _ = res.send(HttpResponse::text(200, format!("after {ms}")));
            });
        })
        .route("/park", move |_, res| {
            p1.lock().unwrap().push(res);
        })
        .route("/drop", |_, res| drop(res))
        .route("/panic", |_, _res| {
            panic!("route handler panics (on purpose)")
        })
        .route("/evil", |_, res| {
            let _ = res.send(
                HttpResponse::text(200, "fine")
                    .header("X-Ok", "yes")
                    .header("X-Bad", "a\r\nSet-Cookie: pwned=1")
                    .header("Bad Name", "x"),
            );
        })
        .start()
        .expect("server starts");
    Fixture {
        server,
        calls,
        parked,
    }
}

fn short_config() -> Config {
    Config {
        request_timeout: Duration::from_millis(600),
        max_request_body: 1000,
        ..test_config()
    }
}

#[test]
fn a_route_sees_method_path_query_headers_and_body_and_answers() {
    let f = start(test_config());
    let addr = f.server.local_addr();
    let req = post(
        "/api/send/x?q=a%20b",
        &[
            ("X-Test", "hello"),
            ("Authorization", "Bearer tok-1"),
            ("Cookie", "a=1; c=two"),
        ],
        b"{\"n\":1}",
    );
    let resp = http_raw(addr, &req).expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.header("x-route"), Some("api"));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v = json_of(&resp.body);
    assert_eq!(
        v,
        json!({"method": "Post", "path": "/api/send/x", "subpath": "/send/x", "query": "a b",
               "header": "hello", "bearer": "tok-1", "cookie": "two", "body": "{\"n\":1}",
               "prefix": "/api"})
    );
    // Whole segments only; the longest prefix wins; the prefix itself matches.
    assert_eq!(http_get(addr, "/apix", &[]).unwrap().status(), 404);
    assert_eq!(http_get(addr, "/api/deep/1", &[]).unwrap().text(), "deep");
    let v = json_of(&http_get(addr, "/api", &[]).unwrap().body);
    assert_eq!(v["subpath"], "");
    assert_eq!(v["method"], "Get");
    assert_eq!(f.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        f.server.handle().metrics().route_requests,
        3,
        "/apix is no route"
    );
}

#[test]
fn keep_alive_serves_several_route_requests_on_one_connection() {
    let f = start(test_config());
    let mut wire = Wire::connect(f.server.local_addr());
    for i in 0..3 {
        wire.send(&post("/api/k", &[], format!("n{i}").as_bytes()))
            .unwrap();
        let resp = read_response(&mut wire, Instant::now() + WAIT).expect("response");
        assert_eq!(resp.status(), 200);
        assert!(!resp.closed);
        assert_eq!(json_of(&resp.body)["body"], format!("n{i}"));
    }
    // Two pipelined requests: answered in order.
    let mut both = post("/api/p", &[], b"first");
    both.extend(post("/api/p", &[], b"second"));
    wire.send(&both).unwrap();
    for want in ["first", "second"] {
        let resp = read_response(&mut wire, Instant::now() + WAIT).expect("response");
        assert_eq!(json_of(&resp.body)["body"], want);
    }
}

#[test]
fn an_answer_from_another_thread_does_not_hold_up_other_requests_or_handlers() {
    let mut cfg = test_config();
    cfg.request_timeout = Duration::from_secs(5);
    let f = start(cfg);
    let addr = f.server.local_addr();
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        let resp = http_get(addr, "/later?ms=800", &[]).expect("slow response");
        (resp.text(), started.elapsed())
    });
    // Wait until the slow request is parked (its handler ran), then check the dispatcher is free.
    let deadline = Instant::now() + WAIT;
    while f.server.handle().metrics().route_requests < 1 {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached its handler"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    assert_eq!(http_get(addr, "/api/fast", &[]).unwrap().status(), 200);
    let mut sse = sse_open(addr, "/events", &[]).expect("SSE stream opens meanwhile");
    let service = NotificationService::new(f.server.handle());
    service
        .send_counted(Transport::Sse, &Target::All, "hi", &json!(1))
        .unwrap();
    assert_eq!(sse.next_event(WAIT).expect("event").event, "hi");
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "other requests waited for the slow answer: {:?}",
        started.elapsed()
    );
    let (text, took) = slow.join().unwrap();
    assert_eq!(text, "after 800");
    assert!(took >= Duration::from_millis(800));
}

#[test]
fn an_unanswered_request_gets_503_after_request_timeout_and_a_late_answer_is_dropped() {
    let f = start(short_config());
    let mut wire = Wire::connect(f.server.local_addr());
    let started = Instant::now();
    wire.send(b"GET /park HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let resp = read_response(&mut wire, Instant::now() + WAIT).expect("503");
    let took = started.elapsed();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(json_of(&resp.body)["error"]["code"], "timeout");
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(3),
        "503 after {took:?}, request_timeout is 600 ms"
    );
    // The late answer goes nowhere; the connection serves the next request normally.
    let late = f
        .parked
        .lock()
        .unwrap()
        .pop()
        .expect("the handler kept its responder");
    late.send(HttpResponse::text(200, "too late")).unwrap();
    wire.send(b"GET /api/next HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let next = read_response(&mut wire, Instant::now() + WAIT).expect("next response");
    assert_eq!(next.status(), 200);
    assert_eq!(json_of(&next.body)["path"], "/api/next");
}

#[test]
fn a_dropped_responder_and_a_panicking_handler_answer_500() {
    let f = start(test_config());
    let addr = f.server.local_addr();
    for path in ["/drop", "/panic"] {
        let resp = http_get(addr, path, &[]).expect("response");
        assert_eq!(resp.status(), 500, "{path}");
        assert_eq!(json_of(&resp.body)["error"]["code"], "unanswered", "{path}");
    }
    // The dispatcher survived the panic.
    assert_eq!(http_get(addr, "/api/after", &[]).unwrap().status(), 200);
}

#[test]
fn an_oversized_body_is_refused_with_413_before_it_is_read() {
    let f = start(short_config());
    let addr = f.server.local_addr();
    // Only the head is sent: the refusal must not wait for the 5000 bytes.
    let mut wire = Wire::connect(addr);
    wire.send(b"POST /api/big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut wire, Instant::now() + WAIT).expect("413");
    assert_eq!(resp.status(), 413);
    assert_eq!(json_of(&resp.body)["error"]["code"], "body_too_large");
    assert!(wire.is_closed(), "the connection closes after a 413");
    // Exactly the limit is fine.
    let body = vec![b'a'; 1000];
    let resp = http_raw(addr, &post("/api/ok", &[], &body)).unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        f.calls.load(Ordering::SeqCst),
        1,
        "the handler never saw the big one"
    );
}

#[test]
fn expect_100_continue_gets_an_interim_answer() {
    let f = start(test_config());
    let mut wire = Wire::connect(f.server.local_addr());
    wire.send(
        b"POST /api/e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let interim = wire.read_head(Instant::now() + WAIT).expect("100 Continue");
    assert_eq!(interim.status, 100);
    wire.send(b"body").unwrap();
    let resp = read_response(&mut wire, Instant::now() + WAIT).expect("response");
    assert_eq!(json_of(&resp.body)["body"], "body");
}

#[test]
fn hostile_requests_on_route_paths_are_refused_like_any_other() {
    let f = start(short_config());
    let addr = f.server.local_addr();
    let bad_length = b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello";
    assert_eq!(http_raw(addr, bad_length).unwrap().status(), 400);
    let chunked =
        b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(http_raw(addr, chunked).unwrap().status(), 501);
    // A body that never completes: 408 once request_timeout passes.
    let mut wire = Wire::connect(addr);
    wire.send(b"POST /api/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly a bit")
        .unwrap();
    let resp = read_response(&mut wire, Instant::now() + WAIT).expect("408");
    assert_eq!(resp.status(), 408);
    // Header injection from the handler: the unsafe headers are dropped, the rest is sent.
    let resp = http_get(addr, "/evil", &[]).unwrap();
    assert_eq!(resp.text(), "fine");
    assert_eq!(resp.header("x-ok"), Some("yes"));
    assert_eq!(resp.header("x-bad"), None);
    assert_eq!(resp.header("set-cookie"), None);
    assert_eq!(
        f.calls.load(Ordering::SeqCst),
        0,
        "no hostile request reached the handler"
    );
}

#[test]
fn a_client_gone_before_the_answer_costs_nothing() {
    let f = start(test_config());
    let addr = f.server.local_addr();
    let mut wire = Wire::connect(addr);
    wire.send(b"GET /park HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let deadline = Instant::now() + WAIT;
    while f.parked.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the request never reached its handler"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(wire);
    std::thread::sleep(Duration::from_millis(100));
    let late = f.parked.lock().unwrap().pop().unwrap();
    late.send(HttpResponse::text(200, "nobody listens"))
        .unwrap();
    assert_eq!(http_get(addr, "/api/still", &[]).unwrap().status(), 200);
}

#[test]
fn cors_applies_to_routes_and_builtin_endpoints_keep_priority() {
    let cfg = Config {
        cors: Cors {
            allowed_origins: vec!["https://app.example".into()],
            allow_credentials: false,
        },
        ..test_config()
    };
    let (tx, rx) = mpsc::channel();
    let server = Server::builder(cfg)
        .allow_anonymous()
        .route("/", move |req, res| {
            let _ = tx.send(req.path.clone());
            let _ = res.send(HttpResponse::new(204));
        })
        .start()
        .unwrap();
    let addr = server.local_addr();
    let resp = http_get(addr, "/anything", &[("Origin", "https://app.example")]).unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let resp = http_get(addr, "/x", &[("Origin", "https://evil.example")]).unwrap();
    assert_eq!(resp.header("access-control-allow-origin"), None);
    let preflight = b"OPTIONS /x HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n";
    let resp = http_raw(addr, preflight).unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.header("access-control-allow-methods").is_some());
    // `/events` and `/socket.io/` are still the server's, even under the route "/".
    assert!(sse_open(addr, "/events", &[]).is_ok());
    let eio = http_get(addr, "/socket.io/?EIO=4&transport=polling", &[]).unwrap();
    assert_eq!(eio.status(), 200);
    assert!(eio.text().starts_with('0'));
    let seen: Vec<String> = rx.try_iter().collect();
    assert_eq!(seen, vec!["/anything".to_string(), "/x".to_string()]);
}

#[test]
fn a_bad_route_prefix_is_refused_at_start() {
    let r = Server::builder(test_config())
        .route("api", |_, _| {})
        .start();
    assert!(matches!(r, Err(tidings::StartError::Config(_))));
}
