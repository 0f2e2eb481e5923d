//! Engine.IO over real sockets on 127.0.0.1: the blocking HTTP and WebSocket clients of
//! `support` (written there, independent of the server's code) against a `Server` whose events an
//! echo thread answers. Every read has a timeout and every loop is bounded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::net::TcpStream;
use std::time::Duration;

use support::eio::*;
use support::http::{Http, Wire};
use support::ws::{Frame, WsClient};
use tidings::{CloseReason, Config, Data, EngineIoEvent};

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn polling_session_echo_and_keep_alive() {
    let srv = TestServer::start(eio_config());
    let (mut c, sid, open) = polling_handshake(srv.addr);
    assert_eq!(
        open,
        serde_json::json!({
            "sid": sid, "upgrades": ["websocket"], "pingInterval": 25000,
            "pingTimeout": 20000, "maxPayload": 1000000
        })
    );
    let session = srv.wait_open(&sid);
    // Keep-alive: POST and then GET on the handshake's own TCP connection.
    let r = c.request("POST", &poll_url(&sid), "4héllo\x1ebAAEC/w==".as_bytes());
    assert_eq!(r.status(), 200);
    assert_eq!(r.text(), "ok");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert_eq!(srv.wait_message(session), Data::Text("héllo".into()));
    assert_eq!(srv.wait_message(session), Data::Binary(vec![0, 1, 2, 255]));
    // Both echoes are queued before the GET (the echo thread sends before forwarding the event).
    srv.sync();
    let r = c.request("GET", &poll_url(&sid), b"");
    assert_eq!(r.status(), 200);
    assert_eq!(r.body, "4héllo\x1ebAAEC/w==".as_bytes());
    // A parked GET on a second connection is answered by the echo of a later POST.
    let mut g = Http::new(srv.addr);
    g.send("GET", &poll_url(&sid), b"");
    let r = c.request("POST", &poll_url(&sid), b"4again");
    assert_eq!(r.text(), "ok");
    assert_eq!(g.read_response().text(), "4again");
    // A larger binary message round-trips through base64.
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let mut body = b"b".to_vec();
    body.extend_from_slice(
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &big).as_bytes(),
    );
    assert_eq!(c.request("POST", &poll_url(&sid), &body).text(), "ok");
    assert_eq!(srv.wait_message(session), Data::Text("again".into()));
    assert_eq!(srv.wait_message(session), Data::Binary(big.clone()));
    srv.sync();
    assert_eq!(c.request("GET", &poll_url(&sid), b"").body, body);
    srv.shutdown();
}

#[test]
fn websocket_session_text_and_binary() {
    let srv = TestServer::start(eio_config());
    let (mut ws, sid, open) = ws_handshake(srv.addr);
    assert_eq!(
        open,
        serde_json::json!({
            "sid": sid, "upgrades": [], "pingInterval": 25000,
            "pingTimeout": 20000, "maxPayload": 1000000
        })
    );
    let session = srv.wait_open(&sid);
    ws.send_text("4hello").unwrap();
    assert_eq!(ws.expect_text(), "4hello");
    ws.send_binary(&[0, 1, 2, 3, 255]).unwrap();
    assert_eq!(ws.expect_frame(), Frame::Binary(vec![0, 1, 2, 3, 255]));
    // 16-bit and 64-bit frame lengths.
    let mid = "m".repeat(40_000);
    ws.send_text(&format!("4{mid}")).unwrap();
    assert_eq!(ws.expect_text(), format!("4{mid}"));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    ws.send_binary(&big).unwrap();
    assert_eq!(ws.expect_frame(), Frame::Binary(big));
    assert_eq!(srv.wait_message(session), Data::Text("hello".into()));
    // Server-initiated message.
    srv.handle
        .eio_send(session, Data::Text("from server".into()))
        .unwrap();
    assert_eq!(ws.expect_text(), "4from server");
    // Client close.
    ws.send_text("1").unwrap();
    assert_eq!(srv.wait_close(session), CloseReason::ClientClose);
    ws.expect_close(1000);
    srv.shutdown();
}

/// A connection keeps read state only in the middle of a frame or of a fragmented message: frames
/// cut anywhere (in the header, in the length, in the payload), a fragmented message with a ping
/// between its fragments, several frames in one write, each piece sent on its own (the pauses only
/// make separate reads likely; the answers do not depend on them).
#[test]
fn websocket_frames_split_across_reads() {
    let srv = TestServer::start(eio_config());
    let (mut ws, _sid, _) = ws_handshake(srv.addr);
    let pause = || std::thread::sleep(Duration::from_millis(20));
    let send_in_pieces = |ws: &mut WsClient, frame: &[u8], cuts: &[usize]| {
        let mut from = 0;
        for &cut in cuts.iter().chain([frame.len()].iter()) {
            ws.wire.send(&frame[from..cut]).unwrap();
            from = cut;
            pause();
        }
    };
    // Cut after the first header byte, then inside the payload.
    let f = ws.frame(true, 0x1, b"4cut in the header");
    send_in_pieces(&mut ws, &f, &[1, 9]);
    assert_eq!(ws.expect_text(), "4cut in the header");
    // A 16-bit length cut between its two bytes, and the mask key cut too.
    let long = format!("4{}", "l".repeat(300));
    let f = ws.frame(true, 0x1, long.as_bytes());
    send_in_pieces(&mut ws, &f, &[3, 6, 100]);
    assert_eq!(ws.expect_text(), long);
    // A fragmented message, a ping between its fragments.
    let first = ws.frame(false, 0x1, b"4frag");
    send_in_pieces(&mut ws, &first, &[]);
    let ping = ws.frame(true, 0x9, b"p");
    send_in_pieces(&mut ws, &ping, &[1]);
    assert_eq!(ws.expect_frame(), Frame::Pong(b"p".to_vec()));
    let last = ws.frame(true, 0x0, b"mented");
    send_in_pieces(&mut ws, &last, &[]);
    assert_eq!(ws.expect_text(), "4fragmented");
    // Two frames and the start of a third in one write, then the rest of it.
    let mut batch = ws.frame(true, 0x1, b"4one");
    batch.extend_from_slice(&ws.frame(true, 0x1, b"4two"));
    let third = ws.frame(true, 0x1, b"4three");
    batch.extend_from_slice(&third[..4]);
    send_in_pieces(&mut ws, &batch, &[]);
    assert_eq!(ws.expect_text(), "4one");
    assert_eq!(ws.expect_text(), "4two");
    send_in_pieces(&mut ws, &third[4..], &[]);
    assert_eq!(ws.expect_text(), "4three");
    // A large frame (its reader is not kept for others), then a small one.
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let f = ws.frame(true, 0x2, &big);
    send_in_pieces(&mut ws, &f, &[5, 50_000]);
    assert_eq!(ws.expect_frame(), Frame::Binary(big));
    ws.send_text("4small").unwrap();
    assert_eq!(ws.expect_text(), "4small");
    srv.shutdown();
}

#[test]
fn upgrade_polling_to_websocket() {
    let srv = TestServer::start(eio_config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    // A poll parked before the upgrade.
    let mut g = Http::new(srv.addr);
    g.send("GET", &poll_url(&sid), b"");
    let mut ws = WsClient::connect(
        srv.addr,
        &format!("/engine.io/?EIO=4&transport=websocket&sid={sid}"),
    );
    ws.send_text("2probe").unwrap();
    assert_eq!(ws.expect_text(), "3probe");
    // The parked poll is released with a noop.
    assert_eq!(g.read_response().text(), "6");
    // Messages sent while the upgrade is in progress: one from the application, one echoed from a
    // POST over polling. Both must arrive over the WebSocket after `5`.
    srv.handle
        .eio_send(session, Data::Text("during".into()))
        .unwrap();
    assert_eq!(c.request("POST", &poll_url(&sid), b"4posted").text(), "ok");
    assert_eq!(srv.wait_message(session), Data::Text("posted".into()));
    srv.sync();
    // A poll during the upgrade gets a noop, never the buffered messages.
    assert_eq!(c.request("GET", &poll_url(&sid), b"").text(), "6");
    ws.send_text("5").unwrap();
    assert_eq!(ws.expect_text(), "4during");
    assert_eq!(ws.expect_text(), "4posted");
    ws.send_text("4over ws").unwrap();
    assert_eq!(ws.expect_text(), "4over ws");
    ws.send_binary(&[9, 8, 7]).unwrap();
    assert_eq!(ws.expect_frame(), Frame::Binary(vec![9, 8, 7]));
    // Polling is refused now; the session stays.
    let r = c.request("GET", &poll_url(&sid), b"");
    assert_eq!(r.status(), 400);
    ws.send_text("4still").unwrap();
    assert_eq!(ws.expect_text(), "4still");
    // Server close over the upgraded transport.
    srv.handle.eio_close(session).unwrap();
    ws.expect_close(1000);
    assert_eq!(srv.wait_close(session), CloseReason::ServerClose);
    srv.shutdown();
}

#[test]
fn heartbeat_timeout_closes_both_transports() {
    let srv = TestServer::start(Config {
        // A generous timeout: a loaded machine must not turn a prompt pong into a timeout.
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(1000),
        ..eio_config()
    });
    // WebSocket: answer the first ping, ignore the second.
    let (mut ws, sid, open) = ws_handshake(srv.addr);
    assert_eq!(open["pingInterval"], 100);
    let session = srv.wait_open(&sid);
    assert_eq!(ws.expect_text(), "2");
    ws.send_text("3").unwrap();
    assert_eq!(ws.expect_text(), "2");
    assert_eq!(srv.wait_close(session), CloseReason::PingTimeout);
    ws.expect_close(1000);

    // Polling: a client that never polls again.
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    assert_eq!(srv.wait_close(session), CloseReason::PingTimeout);
    let r = c.request("GET", &poll_url(&sid), b"");
    assert_eq!(r.status(), 400);
    assert_eq!(r.text(), r#"{"code":1,"message":"Session ID unknown"}"#);

    // Polling, answering pings: stays alive across several intervals.
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    for _ in 0..5 {
        let r = c.request("GET", &poll_url(&sid), b"");
        assert_eq!(r.text(), "2");
        assert_eq!(c.request("POST", &poll_url(&sid), b"3").text(), "ok");
    }
    let stats = srv.handle.stats().unwrap();
    assert_eq!(stats.eio_sessions, 1);
    drop(c);
    assert_eq!(srv.wait_close(session), CloseReason::PingTimeout);
    srv.shutdown();
}

#[test]
fn close_from_each_side() {
    let srv = TestServer::start(eio_config());
    // Client close over polling, with a parked poll.
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let mut g = parked_get(srv.addr, &sid, &mut c);
    assert_eq!(c.request("POST", &poll_url(&sid), b"1").text(), "ok");
    assert_eq!(g.read_response().text(), "6");
    assert_eq!(srv.wait_close(session), CloseReason::ClientClose);
    let r = c.request("GET", &poll_url(&sid), b"");
    assert_eq!(r.text(), r#"{"code":1,"message":"Session ID unknown"}"#);

    // Server close over polling: the parked poll carries the close packet.
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let mut g = parked_get(srv.addr, &sid, &mut c);
    srv.handle.eio_close(session).unwrap();
    assert_eq!(g.read_response().text(), "1");
    assert_eq!(srv.wait_close(session), CloseReason::ServerClose);

    // Server close over WebSocket.
    let (mut ws, sid, _) = ws_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    srv.handle.eio_close(session).unwrap();
    ws.expect_close(1000);
    assert_eq!(srv.wait_close(session), CloseReason::ServerClose);

    // The client drops its WebSocket without a word.
    let (ws, sid, _) = ws_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    drop(ws);
    assert_eq!(srv.wait_close(session), CloseReason::TransportClose);

    // An aborted poll closes the session.
    let (_c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    let mut g = Http::new(srv.addr);
    g.send("GET", &poll_url(&sid), b"");
    drop(g);
    assert_eq!(srv.wait_close(session), CloseReason::TransportClose);
    assert_eq!(srv.handle.stats().unwrap().eio_sessions, 0);
    srv.shutdown();
}

#[test]
fn keep_alive_many_requests_on_one_connection() {
    let srv = TestServer::start(eio_config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    for i in 0..20 {
        let r = c.request("POST", &poll_url(&sid), format!("4n{i}").as_bytes());
        assert_eq!((r.status(), r.text()), (200, "ok".to_string()));
        assert_eq!(srv.wait_message(session), Data::Text(format!("n{i}")));
        srv.sync();
        let r = c.request("GET", &poll_url(&sid), b"");
        assert_eq!(r.text(), format!("4n{i}"));
    }
    // Pipelined: two requests written at once, answered in order.
    let mut both = Vec::new();
    both.extend_from_slice(
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n4p",
            poll_url(&sid)
        )
        .as_bytes(),
    );
    both.extend_from_slice(
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n4q",
            poll_url(&sid)
        )
        .as_bytes(),
    );
    c.wire.send(&both).unwrap();
    assert_eq!(c.read_response().text(), "ok");
    assert_eq!(c.read_response().text(), "ok");
    assert_eq!(srv.wait_message(session), Data::Text("p".into()));
    assert_eq!(srv.wait_message(session), Data::Text("q".into()));
    // `Connection: close` is honoured.
    c.wire
        .send(
            b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let r = c.read_response();
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());
    srv.shutdown();
}

#[test]
fn shutdown_closes_everything_and_joins() {
    let srv = TestServer::start(eio_config());
    let (mut c, sid, _) = polling_handshake(srv.addr);
    let polling = srv.wait_open(&sid);
    let mut g = parked_get(srv.addr, &sid, &mut c);
    let (mut ws, wsid, _) = ws_handshake(srv.addr);
    let websocket = srv.wait_open(&wsid);
    // An idle keep-alive connection and one that never sent anything.
    let mut idle = Wire::connect(srv.addr);
    let addr = srv.addr;
    let handle = srv.handle.clone();
    let events = srv.shutdown_collect();
    // Every session was closed with ServerShutdown, and the event stream ended.
    let mut closes = Vec::new();
    for ev in events {
        if let EngineIoEvent::Close { session, reason } = ev {
            closes.push((session, reason));
        }
    }
    closes.sort_by_key(|(s, _)| *s);
    let mut expect = vec![
        (polling, CloseReason::ServerShutdown),
        (websocket, CloseReason::ServerShutdown),
    ];
    expect.sort_by_key(|(s, _)| *s);
    assert_eq!(closes, expect);
    // The parked poll got the close packet, the WebSocket a close frame, and all are closed.
    assert_eq!(g.read_response().text(), "1");
    assert!(g.is_closed());
    ws.expect_close(1000);
    assert!(c.is_closed());
    assert!(idle.is_closed());
    // Nobody listens any more; the handle reports the server gone.
    assert!(TcpStream::connect(addr).is_err());
    assert!(handle.stats().is_err());
}

/// With two event loops, new connections alternate between them: a polling session whose
/// requests each come on a fresh connection has half of them arrive on the loop that does not
/// hold it. They must be served as if there were one loop (the connection moves to the session's
/// loop with its request), and so must an upgrade that arrives on the other loop.
#[test]
fn polling_session_across_loops() {
    let srv = TestServer::start(Config {
        event_loops: 2,
        ..eio_config()
    });
    assert_eq!(srv.handle.event_loops(), 2);
    let (_c, sid, _) = polling_handshake(srv.addr);
    let session = srv.wait_open(&sid);
    for i in 0..6 {
        // A fresh connection per round trip: loops 1, 0, 1, 0, … in turn.
        let mut post = Http::new(srv.addr);
        let msg = format!("4m{i}");
        assert_eq!(
            post.request("POST", &poll_url(&sid), msg.as_bytes()).text(),
            "ok"
        );
        assert_eq!(srv.wait_message(session), Data::Text(format!("m{i}")));
        srv.sync();
        let mut get = Http::new(srv.addr);
        assert_eq!(get.request("GET", &poll_url(&sid), b"").text(), msg);
        // The moved connection stays usable for the session (keep-alive).
        assert_eq!(get.request("POST", &poll_url(&sid), b"4again").text(), "ok");
        assert_eq!(srv.wait_message(session), Data::Text("again".into()));
        srv.sync();
        assert_eq!(post.request("GET", &poll_url(&sid), b"").text(), "4again");
    }
    // An unknown sid is still refused, whichever loop it names.
    for first in ['A', 'B', 'Z'] {
        let fake = format!("{first}{}", &sid[1..]).replace(&sid[1..2], "~");
        let r = Http::new(srv.addr).request("GET", &poll_url(&fake), b"");
        assert_eq!(r.status(), 400, "{fake}");
    }
    // The upgrade, probed on connections of both loops in turn.
    let _spacer = Http::new(srv.addr);
    let mut ws = WsClient::connect(
        srv.addr,
        &format!("/engine.io/?EIO=4&transport=websocket&sid={sid}"),
    );
    ws.send_text("2probe").unwrap();
    assert_eq!(ws.expect_text(), "3probe");
    ws.send_text("5").unwrap();
    ws.send_text("4over ws").unwrap();
    assert_eq!(ws.expect_text(), "4over ws");
    srv.handle.eio_close(session).unwrap();
    ws.expect_close(1000);
    assert_eq!(srv.wait_close(session), CloseReason::ServerClose);
    srv.shutdown();
}
