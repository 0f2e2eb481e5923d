//! Application routes: HTTP requests under a path prefix that the application answers itself
//! (its page, a small REST API), on the same port and under the same limits as everything else.
//!
//! A request whose path is under a registered prefix becomes `AppEvent::HttpRequest`; the
//! application answers with `Command::HttpRespond`. Until then the connection is parked (no more
//! requests are read from it). An answer that does not come within `Config::request_timeout`
//! becomes a `503`; a late answer, or one for a connection that has gone, is dropped.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::json;

use super::timers::TimerKey;
use super::{AppEvent, ConnId, ConnRole, Engine, Output, Request};
use crate::buf::Chunk;
use crate::proto::http::{RequestHead, Response};

/// Requests waiting for the application's answer.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// Registered prefixes, longest first.
    prefixes: Vec<String>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
}

#[derive(Debug)]
struct Pending {
    conn: ConnId,
    keep_alive: bool,
    /// The allowed CORS origin of the request, if any (the configured string).
    origin: Option<String>,
    deadline: Instant,
    armed: Option<Instant>,
    /// A `HEAD` request: the answer goes without its body (RFC 9110 §9.3.2).
    head_only: bool,
}

/// Whether `path` is under `prefix`: `/api` matches `/api` and `/api/…` (not `/apix`); `/api/`
/// matches `/api` and everything starting with `/api/`; `/` matches every path.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    if let Some(base) = prefix.strip_suffix('/') {
        path == base || path.starts_with(prefix)
    } else {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// A JSON error body, as route-level refusals use: `{"error": {"code", "message"}}`.
pub(crate) fn json_error(status: u16, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message}}).to_string();
    Response::new(status)
        .with_header("Cache-Control", "no-store")
        .with_body("application/json", body)
}

impl Routes {
    /// Registers the prefixes (validated by the caller).
    pub(crate) fn set_prefixes(&mut self, mut prefixes: Vec<String>) {
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        prefixes.dedup();
        self.prefixes = prefixes;
    }

    /// The longest registered prefix `path` is under.
    pub(crate) fn matching(&self, path: &str) -> Option<&str> {
        self.prefixes
            .iter()
            .find(|p| prefix_matches(p, path))
            .map(String::as_str)
    }
}

impl Engine {
    /// Sets the path prefixes the application answers (`ServerBuilder::route`).
    pub(crate) fn set_routes(&mut self, prefixes: Vec<String>) {
        self.routes.set_prefixes(prefixes);
    }

    /// The most body bytes accepted for a request with this head: `max_request_body` under a
    /// route, `max_payload` elsewhere (Engine.IO polling bodies).
    pub(crate) fn max_body(&self, head: &RequestHead) -> usize {
        if self.routes.matching(&head.path).is_some() {
            self.cfg.max_request_body
        } else {
            self.cfg.max_payload
        }
    }

    /// The answer to a request whose declared body is over [`Engine::max_body`].
    pub(crate) fn body_too_large(&self, head: &RequestHead) -> Response {
        let max = self.max_body(head);
        let mut resp = if self.routes.matching(&head.path).is_some() {
            json_error(
                413,
                "body_too_large",
                &format!("the request body is over the {max}-byte limit"),
            )
        } else {
            Response::new(413).with_body("text/plain; charset=utf-8", "Payload Too Large")
        };
        self.add_cors(head, &mut resp);
        resp
    }

    /// Serves `req` if it is under a route; returns it back otherwise.
    pub(super) fn route_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        req: Request,
    ) -> Option<Request> {
        let Some(prefix) = self.routes.matching(&req.head.path).map(str::to_string) else {
            return Some(req);
        };
        if req.head.method == crate::proto::http::Method::Options
            && req.head.header("access-control-request-method").is_some()
        {
            self.preflight(conn, &req.head);
            return None;
        }
        // Ids start at 1 (0 never names a request).
        self.routes.next_id = self.routes.next_id.max(1);
        let id = Self::take_id(&mut self.routes.next_id, self.hub.loops, self.loop_index);
        let deadline = now + self.cfg.request_timeout;
        let mut pending = Pending {
            conn,
            keep_alive: req.head.keep_alive(),
            origin: self.allowed_origin(&req.head),
            deadline,
            armed: None,
            head_only: req.head.method == crate::proto::http::Method::Head,
        };
        self.timers
            .schedule(TimerKey::Route(id), Some(deadline), &mut pending.armed);
        self.routes.pending.insert(id, pending);
        self.roles.insert(conn, ConnRole::Route(id));
        self.push(Output::App(AppEvent::HttpRequest {
            request: id,
            prefix: prefix.into(),
            head: req.head,
            body: req.body,
            remote: req.remote,
        }));
        None
    }

    /// The application's answer to request `id`.
    pub(super) fn route_respond(&mut self, id: u64, resp: Response) {
        self.route_finish(id, resp);
    }

    /// A route request's deadline fired: answer 503 if it is still unanswered.
    pub(super) fn route_timer(&mut self, id: u64, at: Instant) {
        let due = self
            .routes
            .pending
            .get(&id)
            .is_some_and(|p| p.deadline <= at);
        if due {
            log::debug!("route request {id} unanswered within request_timeout: 503");
            let resp = json_error(503, "timeout", "the application did not answer in time")
                .with_header("Retry-After", "1");
            self.route_finish(id, resp);
        }
    }

    /// The connection of a route request has gone: a later answer is dropped.
    pub(super) fn route_conn_closed(&mut self, id: u64) {
        self.routes.pending.remove(&id);
    }

    fn route_finish(&mut self, id: u64, mut resp: Response) {
        let Some(p) = self.routes.pending.remove(&id) else {
            return;
        };
        if self.roles.get(&p.conn) != Some(&ConnRole::Route(id)) {
            return;
        }
        self.roles.remove(&p.conn);
        if let Some(origin) = &p.origin {
            super::apply_cors(&mut resp, origin, self.cfg.cors.allow_credentials);
        }
        let mut bytes = resp.encode(p.keep_alive);
        if p.head_only {
            // The head as a GET would have it (Content-Length included), without the body.
            bytes.truncate(bytes.len().saturating_sub(resp.body.len()));
        }
        self.push(Output::Write {
            conn: p.conn,
            chunk: Chunk::Owned(bytes),
        });
        self.push(Output::ResponseDone {
            conn: p.conn,
            keep_alive: p.keep_alive,
        });
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::prefix_matches;
    use crate::config::Config;
    use crate::engine::test_support::request;
    use crate::engine::{AppEvent, Command, Engine, Output};
    use crate::proto::http::Response;

    /// An engine with routes `/api` and `/`, on a simulated clock.
    fn engine(timeout_ms: u64) -> Engine {
        let cfg = Config {
            request_timeout: Duration::from_millis(timeout_ms),
            ..Config::default()
        };
        let mut n = 0u8;
        let mut e = Engine::new(
            Arc::new(cfg),
            Box::new(move |b: &mut [u8]| {
                for x in b.iter_mut() {
                    n = n.wrapping_add(1);
                    *x = n;
                }
            }),
        );
        e.set_routes(vec!["/api".into(), "/".into()]);
        e
    }

    /// (request id, prefix) of each request event, or (connection, bytes) of each write.
    type Pairs = Vec<(u64, String)>;

    /// The requests handed to the application, and the bytes written per connection.
    fn drain(e: &mut Engine) -> (Pairs, Pairs) {
        let (mut reqs, mut writes) = (Vec::new(), Vec::new());
        while let Some(o) = e.poll_output() {
            match o {
                Output::App(AppEvent::HttpRequest {
                    request, prefix, ..
                }) => reqs.push((request, prefix.to_string())),
                Output::Write { conn, chunk } => {
                    writes.push((conn, String::from_utf8_lossy(chunk.as_slice()).into_owned()))
                }
                _ => {}
            }
        }
        (reqs, writes)
    }

    #[test]
    fn the_longest_prefix_gets_the_request_and_the_answer_goes_to_its_connection() {
        let mut e = engine(1000);
        let t0 = Instant::now();
        e.handle_request(t0, 7, request("GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n"));
        e.handle_request(t0, 8, request("GET /other HTTP/1.1\r\nHost: a\r\n\r\n"));
        let (reqs, writes) = drain(&mut e);
        assert!(
            writes.is_empty(),
            "nothing is answered before the application"
        );
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].1, "/api");
        assert_eq!(reqs[1].1, "/");
        e.handle_command(
            t0,
            Command::HttpRespond {
                request: reqs[1].0,
                response: Response::new(200).with_body("text/plain", "to 8"),
            },
        );
        let (_, writes) = drain(&mut e);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].0, 8);
        assert!(writes[0].1.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(writes[0].1.ends_with("to 8"));
    }

    #[test]
    fn unanswered_requests_get_503_at_the_deadline_and_not_before() {
        let mut e = engine(1000);
        let t0 = Instant::now();
        e.handle_request(t0, 7, request("GET /api HTTP/1.1\r\nHost: a\r\n\r\n"));
        let (reqs, _) = drain(&mut e);
        assert_eq!(e.next_deadline(), Some(t0 + Duration::from_millis(1000)));
        e.handle_timeout(t0 + Duration::from_millis(999));
        assert!(drain(&mut e).1.is_empty());
        e.handle_timeout(t0 + Duration::from_millis(1000));
        let (_, writes) = drain(&mut e);
        assert_eq!(writes.len(), 1);
        assert!(writes[0].1.starts_with("HTTP/1.1 503 "), "{}", writes[0].1);
        assert!(writes[0].1.contains("\"code\":\"timeout\""));
        // The late answer is dropped.
        e.handle_command(
            t0 + Duration::from_millis(1001),
            Command::HttpRespond {
                request: reqs[0].0,
                response: Response::new(200),
            },
        );
        assert!(drain(&mut e).1.is_empty());
    }

    #[test]
    fn a_head_request_gets_the_head_without_the_body() {
        let mut e = engine(1000);
        let t0 = Instant::now();
        e.handle_request(t0, 7, request("HEAD /api HTTP/1.1\r\nHost: a\r\n\r\n"));
        let (reqs, _) = drain(&mut e);
        e.handle_command(
            t0,
            Command::HttpRespond {
                request: reqs[0].0,
                response: Response::new(200).with_body("text/plain", "12345"),
            },
        );
        let (_, writes) = drain(&mut e);
        assert!(writes[0].1.contains("Content-Length: 5\r\n"));
        assert!(writes[0].1.ends_with("\r\n\r\n"), "{:?}", writes[0].1);
    }

    #[test]
    fn an_answer_for_a_closed_connection_is_dropped() {
        let mut e = engine(1000);
        let t0 = Instant::now();
        e.handle_request(t0, 7, request("GET /api HTTP/1.1\r\nHost: a\r\n\r\n"));
        let (reqs, _) = drain(&mut e);
        e.handle_conn_closed(t0, 7);
        e.handle_command(
            t0,
            Command::HttpRespond {
                request: reqs[0].0,
                response: Response::new(200),
            },
        );
        assert!(drain(&mut e).1.is_empty());
        e.handle_timeout(t0 + Duration::from_secs(2));
        assert!(
            drain(&mut e).1.is_empty(),
            "no 503 for a connection that is gone"
        );
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/send"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(!prefix_matches("/api", "/ap"));
        assert!(prefix_matches("/api/", "/api"));
        assert!(prefix_matches("/api/", "/api/x/y"));
        assert!(!prefix_matches("/api/", "/apix"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/", "/"));
        assert!(prefix_matches("/metrics", "/metrics"));
        assert!(!prefix_matches("/metrics", "/metricsx"));
    }
}
