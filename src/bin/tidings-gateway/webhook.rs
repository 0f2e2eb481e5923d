//! The backend webhook: client events (and, optionally, connects) POSTed as JSON to a configured
//! URL, on a bounded pool of worker threads with a timeout per call. The loop and the dispatcher
//! never wait for the backend: a full queue is refused at once, a slow backend times out.

use serde_json::{json, Value};

use crate::pool::Pool;
use crate::settings::{SettingError, Settings};

/// What a backend call came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A 2xx answer with this JSON body (`null` for an empty body).
    Answer(Value),
    /// A non-2xx status.
    Status(u16),
    /// No answer within `webhook_timeout_ms`.
    Timeout,
    /// The backend could not be reached, or its answer was not JSON.
    Unavailable(String),
    /// Too many calls in flight and queued: not sent.
    Busy,
}

impl Outcome {
    /// The metric label of the outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Answer(_) => "ok",
            Outcome::Status(_) => "error_status",
            Outcome::Timeout => "timeout",
            Outcome::Unavailable(_) => "unavailable",
            Outcome::Busy => "busy",
        }
    }

    /// The ack a client gets when the backend did not answer properly.
    pub fn error_ack(&self) -> Value {
        let (code, message) = match self {
            Outcome::Answer(_) => ("ok", String::new()),
            Outcome::Status(s) => ("backend_error", format!("the backend answered {s}")),
            Outcome::Timeout => (
                "backend_timeout",
                "the backend did not answer in time".into(),
            ),
            Outcome::Unavailable(m) => ("backend_unavailable", m.clone()),
            Outcome::Busy => ("backend_busy", "too many backend calls in flight".into()),
        };
        json!({"error": {"code": code, "message": message}})
    }
}

/// The configured webhook.
#[derive(Clone)]
pub struct Webhook {
    url: String,
    events: Option<Vec<String>>,
    pub connect: bool,
    agent: ureq::Agent,
    pool: Pool,
}

/// Most bytes read from a backend answer.
const MAX_ANSWER: u64 = 1_000_000;

impl Webhook {
    /// The webhook the settings describe, or `None` without `webhook_url`.
    pub fn from_settings(s: &Settings) -> Result<Option<Webhook>, SettingError> {
        let Some(url) = s.optional("webhook_url") else {
            return Ok(None);
        };
        if !url.starts_with("http://") {
            return Err(SettingError(
                "webhook_url must be an http:// URL (put TLS in front of the backend's side)"
                    .into(),
            ));
        }
        let timeout = s.millis("webhook_timeout_ms")?;
        if timeout.is_zero() {
            return Err(SettingError("webhook_timeout_ms must be at least 1".into()));
        }
        let events = s.list("webhook_events");
        let events = if events.iter().any(|e| e == "*") {
            None
        } else {
            Some(events)
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let pool = Pool::new(
            "tidings-webhook",
            s.positive("webhook_concurrency")?,
            s.positive("webhook_queue")?,
        )
        .map_err(|e| SettingError(format!("cannot start webhook workers: {e}")))?;
        Ok(Some(Webhook {
            url,
            events,
            connect: s.bool("webhook_connect")?,
            agent,
            pool,
        }))
    }

    /// Whether client event `name` is forwarded.
    pub fn forwards(&self, name: &str) -> bool {
        self.events
            .as_ref()
            .is_none_or(|list| list.iter().any(|e| e == name))
    }

    /// POSTs `body` on a worker and calls `done` there with the outcome (at once with `Busy`
    /// when the queue is full).
    pub fn call(&self, body: Value, done: impl FnOnce(Outcome) + Send + 'static) {
        let (agent, url) = (self.agent.clone(), self.url.clone());
        let done = std::sync::Arc::new(std::sync::Mutex::new(Some(done)));
        let job_done = done.clone();
        let job = move || {
            let outcome = post(&agent, &url, &body);
            if let Some(f) = job_done.lock().ok().and_then(|mut d| d.take()) {
                f(outcome);
            }
        };
        if self.pool.try_run(job).is_err() {
            if let Some(f) = done.lock().ok().and_then(|mut d| d.take()) {
                f(Outcome::Busy);
            }
        }
    }
}

fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Outcome {
    let sent = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string());
    let mut resp = match sent {
        Ok(r) => r,
        Err(ureq::Error::Timeout(_)) => return Outcome::Timeout,
        Err(e) => return Outcome::Unavailable(format!("the backend cannot be reached: {e}")),
    };
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        return Outcome::Status(status);
    }
    let text = match resp
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_string()
    {
        Ok(t) => t,
        Err(ureq::Error::Timeout(_)) => return Outcome::Timeout,
        Err(e) => return Outcome::Unavailable(format!("the backend's answer cannot be read: {e}")),
    };
    if text.trim().is_empty() {
        return Outcome::Answer(Value::Null);
    }
    match serde_json::from_str(&text) {
        Ok(v) => Outcome::Answer(v),
        Err(_) => Outcome::Unavailable("the backend's answer is not JSON".into()),
    }
}
