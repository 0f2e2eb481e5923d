//! The server the official Engine.IO v4 / Socket.IO v5 test suites run against (DESIGN §5).
//!
//! `/engine.io/` echoes every message (text as text, binary as binary). Listens on 127.0.0.1:3000
//! unless `PORT` says otherwise. Run: `cargo run --example conformance`.

use std::time::Duration;

use tidings::{AppEvent, Config, Server};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 3000,
    };
    let config = Config {
        bind: ([127, 0, 0, 1], port).into(),
        engineio_path: Some("/engine.io/".into()),
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        ..Config::default()
    };
    let server = Server::start(config)?;
    eprintln!("conformance server on http://{}", server.local_addr());
    let handle = server.handle();
    let events = server.take_events().ok_or("events already taken")?;
    for event in events {
        if let AppEvent::EioMessage { session, data } = event {
            handle.eio_send(session, data)?;
        }
    }
    Ok(())
}
