//! The server side of `scripts/measure-memory.sh`: what an idle connection costs the library,
//! without an application around it. Every connection is identified (Socket.IO by the `user` of its
//! CONNECT payload, SSE by the `user` query parameter, as `examples/idle_clients.rs` sends them), so
//! the user index holds one user per connection; no hook keeps anything of its own and nothing is
//! broadcast. (The demo server, by contrast, keeps who is online and tells every socket on each
//! open and close: that is the application's memory, not the connection's.)
//!
//! Listens on 127.0.0.1:$PORT (default 3000); up to 19 000 connections. Run:
//! `PORT=3000 cargo run --release --example idle_server`, then
//! `cargo run --release --example idle_clients -- --mode sio --port 3000 --count 10000 --hold 10`.

use serde_json::Value;
use tidings::{Config, Identity, Server};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 3000,
    };
    let config = Config {
        bind: ([127, 0, 0, 1], port).into(),
        // Under the ~20 000 fd limit, with room for 10 000 idle clients and their tools.
        max_connections: 19_000,
        ..Config::default()
    };
    let server = Server::builder(config)
        .authenticate(|req| {
            let user = match req.auth {
                Some(auth) => auth.get("user").and_then(Value::as_str).map(str::to_string),
                None => req.info.query("user"),
            };
            Ok(user.filter(|u| !u.is_empty()).map(Identity::user))
        })
        .start()?;
    println!("idle_server listening on {}", server.local_addr());
    loop {
        std::thread::park();
    }
}
