//! Who is each client connection: a JWT (from the Socket.IO `auth` payload, an `Authorization:
//! Bearer` header, the SSE query or a cookie), the demo's claimed identities, or anonymous; then,
//! optionally, the backend's word. Every refusal is logged with its reason and counted.

use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};
use tidings::{AuthRequest, ConnectDecision, Identity, NotificationService, Rejection};

use crate::jwt::{Jwt, TokenError};
use crate::metrics::GatewayStats;
use crate::webhook::{Outcome, Webhook};

/// How identities are established.
pub enum Mode {
    Jwt(Box<Jwt>),
    /// DEMO ONLY: the client says who it is.
    Demo,
    Anonymous,
}

/// The authentication of client connections.
pub struct ClientAuth {
    pub mode: Mode,
    pub allowed_tenants: Vec<String>,
    pub token_query: String,
    pub token_cookie: String,
    pub webhook: Option<Webhook>,
    pub stats: Arc<GatewayStats>,
    /// The running server's service (set once it has started): joins the token's rooms.
    pub service: Arc<OnceLock<NotificationService>>,
}

/// A refusal: the rejection for the client and the code for logs and metrics.
struct Refusal {
    code: &'static str,
    rejection: Rejection,
}

fn refuse(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
    let message = message.into();
    let rejection = if status == 403 {
        Rejection::forbidden(message)
    } else {
        Rejection {
            status,
            ..Rejection::unauthorized(message)
        }
    };
    Refusal {
        code,
        rejection: rejection.with_data(json!({"code": code})),
    }
}

fn bearer(v: Option<&str>) -> Option<String> {
    let (scheme, token) = v?.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

impl ClientAuth {
    /// The token a connection presents, if any.
    fn token(&self, req: &AuthRequest<'_>) -> Option<String> {
        let from_auth = req
            .auth
            .and_then(|a| a.get("token"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let from_query = || {
            // Only SSE may carry it in the URL (an EventSource cannot set headers).
            req.namespace
                .is_none()
                .then(|| req.info.query(&self.token_query))
                .flatten()
        };
        from_auth
            .or_else(|| bearer(req.info.header("authorization")))
            .or_else(from_query)
            .or_else(|| req.info.cookie(&self.token_cookie))
            .filter(|t| !t.is_empty())
    }

    /// The tenant the client names itself (`auth.tenant`, or `?tenant=` on SSE), if any.
    fn named_tenant(req: &AuthRequest<'_>) -> Option<String> {
        match req.auth {
            Some(a) => a.get("tenant").and_then(Value::as_str).map(str::to_string),
            None => req.info.query("tenant"),
        }
    }

    fn decide_now(
        &self,
        req: &AuthRequest<'_>,
    ) -> Result<(Option<Identity>, Vec<String>), Refusal> {
        let identity = match &self.mode {
            Mode::Anonymous => return Ok((None, Vec::new())),
            Mode::Demo => return Ok((demo_identity(req), Vec::new())),
            Mode::Jwt(jwt) => {
                let Some(token) = self.token(req) else {
                    return Err(refuse(401, "missing_token", "a token is required"));
                };
                jwt.verify(&token)
                    .map_err(|TokenError { code, message }| refuse(401, code, message))?
            }
        };
        let tenant = &identity.identity.tenant;
        if !self.allowed_tenants.is_empty() && !self.allowed_tenants.iter().any(|t| t == tenant) {
            return Err(refuse(
                403,
                "tenant_not_allowed",
                "this gateway does not serve the token's tenant",
            ));
        }
        if let Some(named) = Self::named_tenant(req) {
            if &named != tenant {
                return Err(refuse(
                    403,
                    "wrong_tenant",
                    "the token belongs to another tenant",
                ));
            }
        }
        Ok((Some(identity.identity), identity.rooms))
    }

    /// The hook: decides at once, or asks the backend and decides when it answers.
    pub fn hook(self: &Arc<Self>, req: &AuthRequest<'_>, decision: ConnectDecision) {
        let transport = if req.namespace.is_some() {
            "socketio"
        } else {
            "sse"
        };
        let remote = req.info.remote().map(|r| r.to_string()).unwrap_or_default();
        let (identity, rooms) = match self.decide_now(req) {
            Ok(ok) => ok,
            Err(r) => {
                self.stats
                    .auth
                    .inc(&[("transport", transport), ("outcome", r.code)]);
                log::warn!(transport = transport, reason = r.code, remote:% = remote; "client refused: {}", r.rejection.message);
                let _ = decision.decide(Err(r.rejection));
                return;
            }
        };
        if let Some(service) = self.service.get() {
            if let Some(user) = &identity {
                for room in &rooms {
                    if let Err(e) = service.join_room(user, room) {
                        log::warn!(room = room.as_str(), user = user.user.as_str(); "room of the token not joined: {e}");
                    }
                }
            }
        }
        match &self.webhook {
            Some(hook) if hook.connect => {
                let body = json!({
                    "type": "connect",
                    "transport": transport,
                    "namespace": req.namespace,
                    "user": identity.as_ref().map(|i| i.user.clone()),
                    "tenant": identity.as_ref().map(|i| i.tenant.clone()),
                    "remote": remote,
                });
                let me = self.clone();
                hook.call(body, move |outcome| {
                    me.backend_decided(transport, identity, outcome, decision)
                });
            }
            _ => self.accept(transport, identity, decision),
        }
    }

    fn accept(
        &self,
        transport: &'static str,
        identity: Option<Identity>,
        decision: ConnectDecision,
    ) {
        self.stats
            .auth
            .inc(&[("transport", transport), ("outcome", "accepted")]);
        log::debug!(transport = transport, user = identity.as_ref().map(|i| i.user.as_str()).unwrap_or(""); "client accepted");
        let _ = decision.decide(Ok(identity));
    }

    fn backend_decided(
        &self,
        transport: &'static str,
        identity: Option<Identity>,
        outcome: Outcome,
        decision: ConnectDecision,
    ) {
        self.stats
            .webhook
            .inc(&[("kind", "connect"), ("outcome", outcome.label())]);
        let refusal = match &outcome {
            Outcome::Answer(v) if v.get("allow") == Some(&Value::Bool(true)) => {
                return self.accept(transport, identity, decision)
            }
            Outcome::Answer(v) => refuse(
                403,
                "backend_refused",
                v.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("refused by the backend"),
            ),
            Outcome::Status(s) => {
                refuse(403, "backend_refused", format!("the backend answered {s}"))
            }
            Outcome::Timeout | Outcome::Unavailable(_) | Outcome::Busy => refuse(
                503,
                "backend_unavailable",
                "the backend cannot decide now; retry later",
            ),
        };
        self.stats
            .auth
            .inc(&[("transport", transport), ("outcome", refusal.code)]);
        log::warn!(transport = transport, reason = refusal.code, outcome = outcome.label(); "client refused by the backend webhook");
        let _ = decision.decide(Err(refusal.rejection));
    }
}

/// The demo's claimed identity (`crate::demo`).
fn demo_identity(req: &AuthRequest<'_>) -> Option<Identity> {
    crate::demo::claimed_identity(req)
}
