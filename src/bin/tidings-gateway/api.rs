//! The publish API: JSON over HTTP for backends, served as a tidings route (on its own listener,
//! or on the main port behind a key). Every answer is JSON; every error is
//! `{"error": {"code", "message"}}` with a stable code.
//!
//! | request | body | answer |
//! |---|---|---|
//! | `POST /api/v1/send` | a send: `{"to", "event", "data"?, "transport"?}` | `{"reached": {"sse", "socketio", "total"}}` |
//! | `POST /api/v1/batch` | `{"sends": [send, …]}` | `{"results": [{"reached"} or {"error"}, …]}` |
//! | `POST /api/v1/rooms/join` | `{"user", "tenant"?, "room"}` | `{"rooms": […]}` (the user's rooms after) |
//! | `POST /api/v1/rooms/leave` | the same | `{"rooms": […]}` |
//! | `GET /api/v1/rooms?user=&tenant=` | | `{"rooms": […]}` |
//! | `POST /api/v1/ask` | `{"user", "tenant"?, "event", "data"?, "timeout_ms"?}` | `{"outcomes": [{"status": "ok", "args"} or {"status": "timeout" / "disconnected" / "overloaded"}, …]}` |
//!
//! `to` is `{"user", "tenant"?}`, `{"tenant"}`, `{"room"}` or `"all"`; `transport` is `both`
//! (default), `sse` or `socket`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;
use tidings::{
    AckOutcome, AckOutcomes, BroadcastError, HttpRequest, HttpResponse, Identity, Method,
    NotificationService, PendingReach, Reach, Responder, Target, Transport,
};

use crate::metrics::GatewayStats;
use crate::pool::Pool;

/// An error answer: status, stable code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status: 400,
        code,
        message: message.into(),
    }
}

impl ApiError {
    fn json(&self) -> Value {
        json!({"code": self.code, "message": self.message})
    }
}

impl From<BroadcastError> for ApiError {
    fn from(e: BroadcastError) -> ApiError {
        let (status, code) = match &e {
            BroadcastError::InvalidUser(_) => (400, "invalid_user"),
            BroadcastError::InvalidTenant(_) => (400, "invalid_tenant"),
            BroadcastError::InvalidRoom(_) => (400, "invalid_room"),
            BroadcastError::InvalidEvent(_) => (400, "invalid_event"),
            BroadcastError::TooManyRooms(_) => (409, "too_many_rooms"),
            BroadcastError::PayloadTooLarge { .. } => (413, "payload_too_large"),
            BroadcastError::ServerClosed => (503, "shutting_down"),
            BroadcastError::ClusterUnavailable(_) => (503, "cluster_unavailable"),
        };
        ApiError {
            status,
            code,
            message: e.to_string(),
        }
    }
}

/// A JSON object being read: refuses fields it was not told about.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    at: &'a str,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, at: &'a str, allowed: &[&str]) -> Result<Obj<'a>, ApiError> {
        let Value::Object(map) = v else {
            return Err(bad("invalid_field", format!("{at} must be a JSON object")));
        };
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            let k: String = k.chars().take(64).collect();
            return Err(bad(
                "unknown_field",
                format!(
                    "{at}: unknown field {k:?} (allowed: {})",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(Obj { map, at })
    }

    fn opt_str(&self, k: &str) -> Result<Option<&'a str>, ApiError> {
        match self.map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(
                "invalid_field",
                format!("{}.{k} must be a string", self.at),
            )),
        }
    }

    fn str(&self, k: &str) -> Result<&'a str, ApiError> {
        self.opt_str(k)?
            .ok_or_else(|| bad("missing_field", format!("{}.{k} is required", self.at)))
    }

    fn data(&self) -> Value {
        self.map.get("data").cloned().unwrap_or(Value::Null)
    }

    fn identity(&self) -> Result<Identity, ApiError> {
        Ok(Identity::new(
            self.opt_str("tenant")?.unwrap_or(""),
            self.str("user")?,
        ))
    }
}

/// One parsed send.
struct Send {
    transport: Transport,
    target: Target,
    event: String,
    data: Value,
}

fn parse_send(v: &Value, at: &str) -> Result<Send, ApiError> {
    let o = Obj::new(v, at, &["to", "event", "data", "transport"])?;
    let transport = match o.opt_str("transport")? {
        None => Transport::Both,
        Some(t) => t.parse().map_err(|e: tidings::UnknownTransport| {
            bad("invalid_field", format!("{at}.transport: {e}"))
        })?,
    };
    let to_at = format!("{at}.to");
    let target = match o.map.get("to") {
        None => return Err(bad("missing_field", format!("{to_at} is required"))),
        Some(Value::String(s)) if s == "all" => Target::All,
        Some(to @ Value::Object(_)) => {
            let t = Obj::new(to, &to_at, &["user", "tenant", "room", "all"])?;
            let user = t.opt_str("user")?;
            let tenant = t.opt_str("tenant")?;
            let room = t.opt_str("room")?;
            let all = match t.map.get("all") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad("invalid_field", format!("{to_at}.all must be true"))),
            };
            match (user, tenant, room, all) {
                (Some(u), tenant, None, false) => {
                    Target::User(Identity::new(tenant.unwrap_or(""), u))
                }
                (None, Some(t), None, false) => Target::Tenant(t.to_string()),
                (None, None, Some(r), false) => Target::Room(r.to_string()),
                (None, None, None, true) => Target::All,
                _ => {
                    return Err(bad(
                        "invalid_field",
                        format!(
                            "{to_at} must be {{user, tenant?}}, {{tenant}}, {{room}} or \"all\""
                        ),
                    ))
                }
            }
        }
        Some(_) => {
            return Err(bad(
                "invalid_field",
                format!("{to_at} must be an object or \"all\""),
            ))
        }
    };
    Ok(Send {
        transport,
        target,
        event: o.str("event")?.to_string(),
        data: o.data(),
    })
}

fn reached(r: Reach) -> Value {
    json!({"reached": {"sse": r.sse, "socketio": r.socketio, "total": r.total()}})
}

fn queue(service: &NotificationService, s: &Send) -> Result<PendingReach, ApiError> {
    Ok(service.send_counted_deferred(s.transport, &s.target, &s.event, &s.data)?)
}

fn outcome_json(o: &AckOutcome) -> Value {
    match o {
        AckOutcome::Ok { args, .. } => json!({"status": "ok", "args": args}),
        AckOutcome::Timeout => json!({"status": "timeout"}),
        AckOutcome::Disconnected => json!({"status": "disconnected"}),
        AckOutcome::Overloaded => json!({"status": "overloaded"}),
    }
}

/// What the API needs: the service, limits, keys, counters.
pub struct Api {
    pub service: NotificationService,
    pub keys: Vec<String>,
    pub max_batch: usize,
    pub ack_timeout_max: Duration,
    pub stats: Arc<GatewayStats>,
    pub pool: Pool,
}

/// An answer being prepared: where it goes and which endpoint it counts under.
pub struct Reply {
    responder: Responder,
    endpoint: &'static str,
    stats: Arc<GatewayStats>,
}

impl Reply {
    pub fn new(responder: Responder, endpoint: &'static str, stats: Arc<GatewayStats>) -> Reply {
        Reply {
            responder,
            endpoint,
            stats,
        }
    }

    pub fn ok(self, body: Value) {
        self.send(HttpResponse::json(200, &body));
    }

    pub fn error(self, e: &ApiError) {
        self.stats.api_errors.inc(&[("code", e.code)]);
        let mut resp = HttpResponse::json(e.status, &json!({"error": e.json()}));
        if e.status == 401 {
            resp = resp.header("WWW-Authenticate", "Bearer");
        }
        self.send(resp);
    }

    pub fn send(self, resp: HttpResponse) {
        let status = resp.status().to_string();
        log::debug!(endpoint = self.endpoint, status = resp.status(); "publish API request");
        self.stats
            .api_requests
            .inc(&[("endpoint", self.endpoint), ("status", &status)]);
        let _ = self
            .responder
            .send(resp.header("Cache-Control", "no-store"));
    }
}

/// The endpoint name a request counts under (a fixed set, so labels stay bounded).
fn endpoint_of(method: Method, sub: &str) -> &'static str {
    match (method, sub) {
        (Method::Post, "/v1/send") => "send",
        (Method::Post, "/v1/batch") => "batch",
        (Method::Post, "/v1/rooms/join") => "rooms_join",
        (Method::Post, "/v1/rooms/leave") => "rooms_leave",
        (Method::Get, "/v1/rooms") => "rooms_list",
        (Method::Post, "/v1/ask") => "ask",
        _ => "other",
    }
}

/// Whether `key` is one of the configured keys (constant time per key).
fn key_ok(keys: &[String], key: &str) -> bool {
    keys.iter().fold(false, |ok, k| {
        ok | bool::from(k.as_bytes().ct_eq(key.as_bytes()))
    })
}

impl Api {
    /// The route handler: checks the key on the dispatcher thread, serves on the API pool.
    pub fn handle(self: &Arc<Self>, req: HttpRequest, responder: Responder) {
        let endpoint = endpoint_of(req.method, req.subpath());
        let reply = Reply::new(responder, endpoint, self.stats.clone());
        if !self.keys.is_empty() {
            match req.bearer_token() {
                None => {
                    return reply.error(&ApiError {
                        status: 401,
                        code: "missing_api_key",
                        message: "send Authorization: Bearer <api key>".into(),
                    })
                }
                Some(k) if !key_ok(&self.keys, k) => {
                    log::warn!(remote:% = req.remote.map(|r| r.to_string()).unwrap_or_default(); "publish API: wrong API key");
                    return reply.error(&ApiError {
                        status: 401,
                        code: "invalid_api_key",
                        message: "the API key is not valid".into(),
                    });
                }
                Some(_) => {}
            }
        }
        let api = self.clone();
        let slot = Arc::new(std::sync::Mutex::new(Some((req, reply))));
        let job_slot = slot.clone();
        let queued = self.pool.try_run(move || {
            if let Some((req, reply)) = job_slot.lock().ok().and_then(|mut s| s.take()) {
                api.serve(req, reply);
            }
        });
        if queued.is_err() {
            if let Some((_, reply)) = slot.lock().ok().and_then(|mut s| s.take()) {
                reply.error(&ApiError {
                    status: 503,
                    code: "overloaded",
                    message: "too many publish API requests in flight; retry".into(),
                });
            }
        }
    }

    fn serve(&self, req: HttpRequest, reply: Reply) {
        let sub = req.subpath();
        let known = [
            "/v1/send",
            "/v1/batch",
            "/v1/rooms/join",
            "/v1/rooms/leave",
            "/v1/rooms",
            "/v1/ask",
        ];
        if reply.endpoint == "other" {
            let e = if known.contains(&sub) {
                ApiError {
                    status: 405,
                    code: "method_not_allowed",
                    message: format!("{:?} is not allowed on {}", req.method, req.path),
                }
            } else {
                ApiError {
                    status: 404,
                    code: "not_found",
                    message: "no such endpoint (see the publish API docs)".into(),
                }
            };
            return reply.error(&e);
        }
        if reply.endpoint == "rooms_list" {
            let user = req.query_param("user").unwrap_or_default();
            let tenant = req.query_param("tenant").unwrap_or_default();
            return match self.service.user_rooms(&Identity::new(tenant, user)) {
                Ok(rooms) => reply.ok(json!({"rooms": rooms})),
                Err(e) => reply.error(&e.into()),
            };
        }
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => {
                return reply.error(&bad("bad_json", format!("the body is not valid JSON: {e}")))
            }
        };
        if reply.endpoint == "ask" {
            return self.ask(&body, reply);
        }
        let result = match reply.endpoint {
            "send" => parse_send(&body, "body")
                .and_then(|s| queue(&self.service, &s))
                .and_then(|p| p.wait().map_err(ApiError::from))
                .map(reached),
            "batch" => self.batch(&body),
            "rooms_join" | "rooms_leave" => self.membership(&body, reply.endpoint == "rooms_join"),
            _ => Err(bad("not_found", "no such endpoint")),
        };
        match result {
            Ok(v) => reply.ok(v),
            Err(e) => reply.error(&e),
        }
    }

    fn batch(&self, body: &Value) -> Result<Value, ApiError> {
        let o = Obj::new(body, "body", &["sends"])?;
        let Some(Value::Array(sends)) = o.map.get("sends") else {
            return Err(bad("missing_field", "body.sends must be an array of sends"));
        };
        if sends.len() > self.max_batch {
            return Err(bad(
                "batch_too_large",
                format!("at most {} sends per batch", self.max_batch),
            ));
        }
        // Queue every send first, then collect the counts: one wait for the lot.
        let queued: Vec<Result<PendingReach, ApiError>> = sends
            .iter()
            .enumerate()
            .map(|(i, v)| {
                parse_send(v, &format!("body.sends[{i}]")).and_then(|s| queue(&self.service, &s))
            })
            .collect();
        let results: Vec<Value> = queued
            .into_iter()
            .map(|q| match q.and_then(|p| p.wait().map_err(ApiError::from)) {
                Ok(r) => reached(r),
                Err(e) => {
                    self.stats.api_errors.inc(&[("code", e.code)]);
                    json!({"error": e.json()})
                }
            })
            .collect();
        Ok(json!({"results": results}))
    }

    fn membership(&self, body: &Value, join: bool) -> Result<Value, ApiError> {
        let o = Obj::new(body, "body", &["user", "tenant", "room"])?;
        let user = o.identity()?;
        let room = o.str("room")?;
        if join {
            self.service.join_room(&user, room)?;
        } else {
            self.service.leave_room(&user, room)?;
        }
        Ok(json!({"rooms": self.service.user_rooms(&user)?}))
    }

    fn ask(&self, body: &Value, reply: Reply) {
        let parsed = (|| {
            let o = Obj::new(
                body,
                "body",
                &["user", "tenant", "event", "data", "timeout_ms"],
            )?;
            let timeout = match o.map.get("timeout_ms") {
                None => Duration::from_secs(5).min(self.ack_timeout_max),
                Some(v) => match v.as_u64() {
                    Some(ms) if ms >= 1 && Duration::from_millis(ms) <= self.ack_timeout_max => {
                        Duration::from_millis(ms)
                    }
                    _ => {
                        return Err(bad(
                            "invalid_field",
                            format!(
                                "body.timeout_ms must be between 1 and {}",
                                self.ack_timeout_max.as_millis()
                            ),
                        ))
                    }
                },
            };
            Ok((
                o.identity()?,
                o.str("event")?.to_string(),
                o.data(),
                timeout,
            ))
        })();
        let (user, event, data, timeout) = match parsed {
            Ok(p) => p,
            Err(e) => return reply.error(&e),
        };
        let Some(features) = self
            .service
            .provider(Transport::SocketIo)
            .socketio_features()
        else {
            return reply.error(&bad("internal", "no Socket.IO provider"));
        };
        // The reply goes into the callback, which runs once the outcomes are in; if the call is
        // refused, the callback never runs and the error is answered here.
        let slot = Arc::new(std::sync::Mutex::new(Some(reply)));
        let cb_slot = slot.clone();
        let asked = features.to_user_with_ack_callback(
            &user,
            &event,
            &data,
            timeout,
            Box::new(move |outcomes| {
                let list = match outcomes {
                    AckOutcomes::NoRecipients => Vec::new(),
                    AckOutcomes::Outcomes(list) => {
                        list.iter().map(|r| outcome_json(&r.outcome)).collect()
                    }
                };
                if let Some(reply) = cb_slot.lock().ok().and_then(|mut s| s.take()) {
                    reply.ok(json!({"outcomes": list}));
                }
            }),
        );
        if let Err(e) = asked {
            if let Some(reply) = slot.lock().ok().and_then(|mut s| s.take()) {
                reply.error(&e.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(v: Value) -> &'static str {
        match parse_send(&v, "body") {
            Ok(_) => "ok",
            Err(e) => e.code,
        }
    }

    #[test]
    fn sends_parse_strictly() {
        assert_eq!(code(json!({"to": "all", "event": "e"})), "ok");
        assert_eq!(
            code(json!({"to": {"user": "u", "tenant": "t"}, "event": "e", "data": 1})),
            "ok"
        );
        assert_eq!(
            code(json!({"to": {"tenant": "t"}, "event": "e", "transport": "sse"})),
            "ok"
        );
        assert_eq!(code(json!({"to": {"room": "r"}, "event": "e"})), "ok");
        assert_eq!(code(json!({"to": {"all": true}, "event": "e"})), "ok");
        assert_eq!(
            code(json!({"to": "all", "event": "e", "extra": 1})),
            "unknown_field"
        );
        assert_eq!(
            code(json!({"to": {"user": "u", "x": 1}, "event": "e"})),
            "unknown_field"
        );
        assert_eq!(
            code(json!({"to": {"room": "r", "tenant": "t"}, "event": "e"})),
            "invalid_field"
        );
        assert_eq!(
            code(json!({"to": "everyone", "event": "e"})),
            "invalid_field"
        );
        assert_eq!(code(json!({"event": "e"})), "missing_field");
        assert_eq!(code(json!({"to": "all"})), "missing_field");
        assert_eq!(code(json!({"to": "all", "event": 3})), "invalid_field");
        assert_eq!(
            code(json!({"to": "all", "event": "e", "transport": "pigeon"})),
            "invalid_field"
        );
        assert_eq!(code(json!([1])), "invalid_field");
    }

    #[test]
    fn keys_compare_whole() {
        let keys = vec!["k-one".to_string(), "k-two".to_string()];
        assert!(key_ok(&keys, "k-two"));
        assert!(!key_ok(&keys, "k-tw"));
        assert!(!key_ok(&keys, "k-two2"));
        assert!(!key_ok(&keys, ""));
        assert!(!key_ok(&[], "x"));
    }
}
