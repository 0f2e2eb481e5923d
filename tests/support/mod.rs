//! Small blocking clients for the loopback tests: HTTP, SSE, WebSocket, Socket.IO over WebSocket
//! and the Engine.IO echo server of `eio_loopback` / `hostile`, all over `std::net::TcpStream` on
//! 127.0.0.1. The clients are written here, independent of the server's code. Every read has a
//! deadline, every loop a bound, so a server bug shows up as a failed assertion, never as a hung
//! test.
//!
//! Each test binary imports the submodules it needs (`use support::{http::*, ws::*, *}`) and uses
//! only part of them, hence `dead_code` is allowed here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(dead_code)]

pub mod eio;
pub mod http;
pub mod redis;
pub mod sio;
pub mod sse;
pub mod ws;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidings::{AuthRequest, Config, Identity, Rejection};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be convinced that something does *not* happen.
pub const QUIET: Duration = Duration::from_millis(300);
/// Largest frame / response body the clients accept (a bound, not a protocol limit).
const MAX_BODY: usize = 32 << 20;

/// A configuration for tests: an ephemeral port and short timeouts.
pub fn test_config() -> Config {
    Config {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        ping_interval: Duration::from_millis(500),
        ping_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        keep_alive_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        upgrade_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

/// The authentication hook of the tests.
///
/// SSE: query `user` (and `tenant`, default `acme`); no `user` is anonymous. Socket.IO: the same
/// fields in the CONNECT payload. User `deny401` is refused as unauthorized, `deny403` as
/// forbidden (Socket.IO rejections carry `data: {"code": 401|403}`).
pub fn auth_hook(req: &AuthRequest<'_>) -> Result<Option<Identity>, Rejection> {
    let (user, tenant) = match req.auth {
        Some(auth) => (
            auth.get("user").and_then(Value::as_str).map(str::to_string),
            auth.get("tenant")
                .and_then(Value::as_str)
                .map(str::to_string),
        ),
        None => (req.info.query("user"), req.info.query("tenant")),
    };
    let Some(user) = user else {
        return Ok(None);
    };
    match user.as_str() {
        "deny401" => Err(Rejection::unauthorized("no valid token").with_data(json!({"code": 401}))),
        "deny403" => Err(Rejection::forbidden("not your stream").with_data(json!({"code": 403}))),
        _ => Ok(Some(Identity::new(
            tenant.unwrap_or_else(|| "acme".into()),
            user,
        ))),
    }
}

/// Waits until `f` holds, at most [`WAIT`]; fails the test with `what` otherwise.
pub fn eventually(what: &str, f: impl FnMut() -> bool) {
    eventually_within(what, WAIT, f);
}

/// The same with another bound.
pub fn eventually_within(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
