//! Hostile input over real sockets: malformed or abusive HTTP, WebSocket and Engine.IO. Each test
//! asserts the exact outcome (a status code, a close frame, a closed connection) and then that a
//! well-behaved session on the same server still works. Every loop is bounded in count, every
//! socket read has a timeout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::eio::*;
use support::http::{head_end, read_response, Http, ResponseHead, Wire};
use support::ws::{masked_frame, Frame};
use support::WAIT;
use tidings::{CloseReason, Config, Data};

// ---------------------------------------------------------------------------------------------
// Hostile helpers
// ---------------------------------------------------------------------------------------------

/// `request_timeout` is short so slowloris cases finish quickly; heads may be large enough that
/// 2000 headers trip the header *count* limit, not the byte limit.
fn hostile_config() -> Config {
    Config {
        request_timeout: Duration::from_millis(300),
        max_head_bytes: 64 * 1024,
        ..eio_config()
    }
}

/// Reads until the server closes (EOF or reset) or [`WAIT`] passes. Returns the bytes and whether
/// the connection was closed.
fn read_to_close(wire: &mut Wire) -> (Vec<u8>, bool) {
    wire.read_to_close(Instant::now() + WAIT)
}

/// The status of the one response in `bytes` (which must hold a complete head).
fn status_of(bytes: &[u8]) -> u16 {
    let end = head_end(bytes)
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(bytes)));
    ResponseHead::parse(&bytes[..end]).status
}

/// Writes `bytes`, ignoring a failure (the server may already have closed).
fn write_lenient(wire: &mut Wire, bytes: &[u8]) {
    let _ = wire.send(bytes);
}

/// A well-behaved client still gets service: a polling echo and a WebSocket echo.
fn assert_healthy(srv: &TestServer) {
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    assert_eq!(c.request("POST", &poll_url(&sid), b"4alive").text(), "ok");
    assert_eq!(srv.wait_message(session), Data::Text("alive".into()));
    srv.sync();
    assert_eq!(c.request("GET", &poll_url(&sid), b"").text(), "4alive");
    let (mut ws, wsid, _) = ws_handshake(srv.addr);
    srv.wait_open(&wsid);
    ws.send_text("4alive").unwrap();
    assert_eq!(ws.expect_text(), "4alive");
    ws.send_binary(&[1, 2, 3]).unwrap();
    assert_eq!(ws.expect_frame(), Frame::Binary(vec![1, 2, 3]));
}

/// Opens a WebSocket session, writes `bytes` raw, and expects a close frame with `code`, EOF, and
/// the session closed as `reason`.
fn ws_hostile(srv: &TestServer, bytes: &[u8], code: u16, reason: CloseReason) {
    let (mut ws, sid, _) = ws_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    write_lenient(&mut ws.wire, bytes);
    ws.expect_close(code);
    assert_eq!(srv.wait_close(session), reason);
}

/// A masked frame with a raw first byte (FIN/RSV/opcode) and an honest length.
fn raw_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    masked_frame(first, [0x37, 0xfa, 0x21, 0x3d], payload)
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

#[test]
fn huge_header_is_431_and_closed() {
    let srv = TestServer::start(hostile_config());
    let mut s = Wire::connect(srv.addr);
    write_lenient(
        &mut s,
        b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nX-Big: ",
    );
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    let mut write_failed = false;
    // 20 MB at most, in 64 KiB chunks; stop at the first error (the server closed on us).
    while sent < 20 << 20 {
        match s.stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => {
                write_failed = true;
                break;
            }
        }
    }
    assert!(
        write_failed,
        "the server read a 20 MB head without closing ({sent} bytes sent)"
    );
    let (bytes, closed) = read_to_close(&mut s);
    assert!(closed);
    assert_eq!(status_of(&bytes), 431);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn trickled_head_completes() {
    // A head arriving one byte at a time is served normally (and costs linear work).
    let srv = TestServer::start(eio_config());
    let mut s = Wire::connect(srv.addr);
    let mut req =
        String::from("GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: localhost\r\n");
    while req.len() < 280 {
        req.push_str("X-Pad: abcdefghijklmnop\r\n");
    }
    req.push_str("\r\n");
    let n = req.len();
    assert!((280..340).contains(&n));
    for b in req.as_bytes() {
        s.send(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = read_response(&mut s, Instant::now() + WAIT).unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.body.starts_with(b"0{\"sid\":"), "{}", r.body_text());
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn two_thousand_headers_is_431() {
    let srv = TestServer::start(hostile_config());
    let mut req = String::from("GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n");
    for i in 0..2000 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    assert!(
        req.len() < 64 * 1024,
        "under the byte limit: the count limit must refuse it"
    );
    let mut s = Wire::connect(srv.addr);
    write_lenient(&mut s, req.as_bytes());
    let (bytes, closed) = read_to_close(&mut s);
    assert!(closed);
    assert_eq!(status_of(&bytes), 431);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_transport_without_upgrade_is_400() {
    let srv = TestServer::start(hostile_config());
    let mut c = Http::new(srv.addr);
    let r = c.request("GET", "/engine.io/?EIO=4&transport=websocket", b"");
    assert_eq!(r.status(), 400);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), r#"{"code":3,"message":"Bad request"}"#);
    // The same with the sid of a live polling session: refused, the session is untouched.
    let (mut p, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let r = c.request(
        "GET",
        &format!("/engine.io/?EIO=4&transport=websocket&sid={sid}"),
        b"",
    );
    assert_eq!(r.status(), 400);
    assert_eq!(p.request("POST", &poll_url(&sid), b"4still").text(), "ok");
    assert_eq!(srv.wait_message(session), Data::Text("still".into()));
    // transport=__proto__ is just an unknown transport.
    let r = c.request("GET", "/engine.io/?EIO=4&transport=__proto__", b"");
    assert_eq!(r.text(), r#"{"code":0,"message":"Transport unknown"}"#);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn silent_connection_is_closed_after_request_timeout() {
    let srv = TestServer::start(hostile_config());
    let mut s = Wire::connect(srv.addr);
    let (bytes, closed) = read_to_close(&mut s);
    assert!(closed, "a connection that never sends a byte is closed");
    assert!(
        bytes.is_empty(),
        "closed without a response: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn lying_content_length_is_408() {
    let srv = TestServer::start(hostile_config());
    let (_c, sid, _) = polling_handshake(srv.addr);
    srv.wait_open(&sid);
    let mut s = Wire::connect(srv.addr);
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n4only ten",
        poll_url(&sid)
    );
    write_lenient(&mut s, req.as_bytes());
    let (bytes, closed) = read_to_close(&mut s);
    assert!(closed);
    assert_eq!(status_of(&bytes), 408);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn absent_content_length_is_an_empty_body() {
    let srv = TestServer::start(hostile_config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    c.wire
        .send(format!("POST {} HTTP/1.1\r\nHost: x\r\n\r\n", poll_url(&sid)).as_bytes())
        .unwrap();
    let r = c.read_response();
    assert_eq!(r.status(), 400);
    assert_eq!(srv.wait_close(session), CloseReason::ProtocolError);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn content_length_over_max_payload_is_413() {
    let srv = TestServer::start(hostile_config());
    let (_c, sid, _) = polling_handshake(srv.addr);
    srv.wait_open(&sid);
    let mut s = Wire::connect(srv.addr);
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000001\r\n\r\n4abc",
        poll_url(&sid)
    );
    write_lenient(&mut s, req.as_bytes());
    let (bytes, closed) = read_to_close(&mut s);
    assert!(closed);
    assert_eq!(status_of(&bytes), 413);
    let huge =
        "POST /engine.io/ HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n";
    let mut s = Wire::connect(srv.addr);
    write_lenient(&mut s, huge.as_bytes());
    let (bytes, closed) = read_to_close(&mut s);
    assert!(closed);
    assert_eq!(status_of(&bytes), 400);
    assert_healthy(&srv);
    srv.shutdown();
}

// ---------------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------------

#[test]
fn websocket_rsv_bits_close_1002() {
    let srv = TestServer::start(hostile_config());
    ws_hostile(
        &srv,
        &raw_frame(0xC1, b"4hello"),
        1002,
        CloseReason::TransportClose,
    );
    ws_hostile(
        &srv,
        &raw_frame(0x91, b"4hello"),
        1002,
        CloseReason::TransportClose,
    );
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_unmasked_frame_closes_1002() {
    let srv = TestServer::start(hostile_config());
    ws_hostile(&srv, b"\x81\x064hello", 1002, CloseReason::TransportClose);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_oversized_control_frame_closes_1002() {
    let srv = TestServer::start(hostile_config());
    // RFC 6455 §5.5: "All control frames MUST have a payload length of 125 bytes or less".
    ws_hostile(
        &srv,
        &raw_frame(0x89, &[b'p'; 126]),
        1002,
        CloseReason::TransportClose,
    );
    // A fragmented control frame is refused too.
    ws_hostile(
        &srv,
        &raw_frame(0x09, b"ping"),
        1002,
        CloseReason::TransportClose,
    );
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_invalid_utf8_closes_1007() {
    let srv = TestServer::start(hostile_config());
    ws_hostile(
        &srv,
        &raw_frame(0x81, b"4\xff\xfe"),
        1007,
        CloseReason::TransportClose,
    );
    // Split across fragments, each half invalid alone.
    let mut two = raw_frame(0x01, b"4\xc3");
    two.extend_from_slice(&raw_frame(0x80, b"\x28"));
    ws_hostile(&srv, &two, 1007, CloseReason::TransportClose);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_length_2_pow_63_closes_1009() {
    let srv = TestServer::start(hostile_config());
    let mut f = vec![0x82, 0x80 | 127];
    f.extend_from_slice(&(1u64 << 63).to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    ws_hostile(&srv, &f, 1009, CloseReason::TransportClose);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_message_over_max_payload_closes_1009() {
    let srv = TestServer::start(Config {
        max_payload: 1000,
        ..hostile_config()
    });
    // One frame of max_payload + 1 bytes.
    ws_hostile(
        &srv,
        &raw_frame(0x82, &[7u8; 1001]),
        1009,
        CloseReason::TransportClose,
    );
    // Fragments that are each small but add up to more.
    let mut frags = raw_frame(0x02, &[7u8; 600]);
    frags.extend_from_slice(&raw_frame(0x80, &[7u8; 600]));
    ws_hostile(&srv, &frags, 1009, CloseReason::TransportClose);
    // Exactly max_payload is fine.
    let (mut ws, sid, _) = ws_handshake(srv.addr);
    srv.wait_open(&sid);
    ws.send_binary(&[7u8; 1000]).unwrap();
    assert_eq!(ws.expect_frame(), Frame::Binary(vec![7u8; 1000]));
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_engine_io_garbage_closes() {
    let srv = TestServer::start(hostile_config());
    for bad in ["abc", "9", "", "0{}", "bAQID"] {
        ws_hostile(
            &srv,
            &raw_frame(0x81, bad.as_bytes()),
            1000,
            CloseReason::ProtocolError,
        );
    }
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_client_that_never_reads_is_closed_at_the_cap() {
    // The echo of every message goes back to a client that never reads: the server's queue for it
    // grows until max_outbound_bytes, then the connection is closed. Others are unaffected.
    let srv = TestServer::start(Config {
        max_outbound_bytes: 2 << 20,
        ..hostile_config()
    });
    let (mut ws, sid, _) = ws_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let msg = format!("4{}", "x".repeat(64 * 1024));
    let frame = ws.frame(true, 1, msg.as_bytes());
    let mut write_failed = false;
    // At most 128 MB; kernel buffers hold a few MB, the server queue 2 MiB.
    for _ in 0..2000 {
        if ws.wire.send(&frame).is_err() {
            write_failed = true;
            break;
        }
    }
    assert!(
        write_failed,
        "the server never closed a client that does not read"
    );
    assert_eq!(srv.wait_close(session), CloseReason::TransportClose);
    assert_eq!(srv.handle.stats().unwrap().eio_sessions, 0);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn websocket_ping_flood_from_a_client_that_never_reads_is_closed() {
    // A ping flood from a client that never reads. Every ping makes the server queue a
    // pong for a client that never takes it: the queue must hit its cap and the connection close.
    let srv = TestServer::start(Config {
        max_outbound_bytes: 1 << 20,
        max_payload: 64 * 1024,
        ..hostile_config()
    });
    let (mut ws, sid, _) = ws_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let mut batch = Vec::new();
    for _ in 0..1000 {
        batch.extend_from_slice(&ws.frame(true, 9, &[b'p'; 125]));
    }
    let mut write_failed = false;
    // 400 batches of 1000 pings: 52 MB of pings, 51 MB of pongs owed.
    for _ in 0..400 {
        if ws.wire.send(&batch).is_err() {
            write_failed = true;
            break;
        }
    }
    assert!(
        write_failed,
        "the server kept queueing pongs for a client that never reads"
    );
    assert_eq!(srv.wait_close(session), CloseReason::TransportClose);
    assert_healthy(&srv);
    srv.shutdown();
}

// ---------------------------------------------------------------------------------------------
// Engine.IO
// ---------------------------------------------------------------------------------------------

#[test]
fn record_separator_flood_is_400() {
    let srv = TestServer::start(hostile_config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let body = vec![0x1e; 1_000_000];
    let r = c.request("POST", &poll_url(&sid), &body);
    assert_eq!(r.status(), 400);
    assert_eq!(r.text(), r#"{"code":3,"message":"Bad request"}"#);
    assert_eq!(srv.wait_close(session), CloseReason::ProtocolError);
    let r = c.request("GET", &poll_url(&sid), b"");
    assert_eq!(r.text(), r#"{"code":1,"message":"Session ID unknown"}"#);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn bare_b_is_an_empty_binary_message() {
    let srv = TestServer::start(hostile_config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    assert_eq!(c.request("POST", &poll_url(&sid), b"b").text(), "ok");
    assert_eq!(srv.wait_message(session), Data::Binary(vec![]));
    srv.sync();
    assert_eq!(c.request("GET", &poll_url(&sid), b"").text(), "b");
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn invalid_base64_and_garbage_packets_close_the_session() {
    let srv = TestServer::start(hostile_config());
    for bad in [&b"b!!!!"[..], b"bAQID=x", b"abc", b"9", b"4ok\x1e", b"\xff"] {
        let (mut c, sid, _) = polling_handshake(srv.addr);
        let session = srv.wait_open(&sid);
        let r = c.request("POST", &poll_url(&sid), bad);
        assert_eq!(r.status(), 400, "{bad:?}");
        assert_eq!(
            srv.wait_close(session),
            CloseReason::ProtocolError,
            "{bad:?}"
        );
        let r = c.request("GET", &poll_url(&sid), b"");
        assert_eq!(r.text(), r#"{"code":1,"message":"Session ID unknown"}"#);
    }
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn binary_content_type_post_is_refused() {
    let srv = TestServer::start(hostile_config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 6\r\n\r\n4hello",
        poll_url(&sid)
    );
    c.wire.send(req.as_bytes()).unwrap();
    assert_eq!(c.read_response().status(), 400);
    assert_eq!(srv.wait_close(session), CloseReason::ProtocolError);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn two_concurrent_polls() {
    let srv = TestServer::start(hostile_config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let mut g1 = parked_get(srv.addr, &sid, &mut c);
    let mut g2 = Http::new(srv.addr);
    let r2 = g2.request("GET", &poll_url(&sid), b"");
    assert_eq!(r2.status(), 400);
    assert_eq!(r2.text(), r#"{"code":3,"message":"Bad request"}"#);
    let r1 = g1.read_response();
    assert_eq!((r1.status(), r1.text()), (200, "1".to_string()));
    assert_eq!(srv.wait_close(session), CloseReason::ProtocolError);
    assert_healthy(&srv);
    srv.shutdown();
}

#[test]
fn pong_flood_over_polling_and_websocket() {
    let srv = TestServer::start(hostile_config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let body = vec!["3"; 100_000].join("\x1e");
    for _ in 0..5 {
        assert_eq!(
            c.request("POST", &poll_url(&sid), body.as_bytes()).text(),
            "ok"
        );
    }
    let (mut ws, wsid, _) = ws_handshake(srv.addr);
    srv.wait_open(&wsid);
    let mut batch = Vec::new();
    for _ in 0..20_000 {
        batch.extend_from_slice(&ws.frame(true, 1, b"3"));
    }
    ws.wire.send(&batch).unwrap();
    ws.send_text("4after").unwrap();
    assert_eq!(ws.expect_text(), "4after");
    let stats = srv.handle.stats().unwrap();
    assert_eq!(stats.eio_sessions, 2);
    assert!(stats.timer_entries <= 4, "{stats:?}");
    assert_eq!(c.request("POST", &poll_url(&sid), b"4x").text(), "ok");
    assert_eq!(srv.wait_message(session), Data::Text("x".into()));
    assert_healthy(&srv);
    srv.shutdown();
}
