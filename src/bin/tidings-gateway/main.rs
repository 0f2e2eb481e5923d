//! tidings as a standalone gateway: Socket.IO and SSE clients on one port, a JSON publish API for
//! backends on another (or on the same behind a key), JWT client authentication, an optional
//! backend webhook for client events, Prometheus metrics, health checks and a graceful drain on
//! SIGTERM / SIGINT. `tidings-gateway --help` lists every setting with its default.
//!
//! Built with `cargo build --release --features gateway --bin tidings-gateway`.

mod api;
mod auth;
#[path = "../../../examples/demo/app.rs"]
mod demo;
mod jwt;
mod logger;
mod metrics;
mod pool;
mod settings;
mod webhook;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidings::{
    Config, Cors, Handle, HttpRequest, HttpResponse, NotificationService, Responder, Server,
    ServerBuilder, Socket,
};

use api::Api;
use auth::{ClientAuth, Mode};
use metrics::GatewayStats;
use pool::Pool;
use settings::{Invocation, SettingError, Settings};
use webhook::{Outcome, Webhook};

type BoxError = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match Settings::parse(&args, &|k| std::env::var(k).ok()) {
        Ok(Invocation::Help) => {
            print!("{}", settings::help());
            ExitCode::SUCCESS
        }
        Ok(Invocation::Version) => {
            println!("tidings-gateway {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Invocation::Run(s)) => match run(&s) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log::error!("{e}");
                eprintln!("tidings-gateway: {e}");
                ExitCode::from(2)
            }
        },
        Err(e) => {
            eprintln!("tidings-gateway: {e}");
            ExitCode::from(2)
        }
    }
}

/// Everything the routes need once the servers run.
struct Live {
    api: Arc<Api>,
    handle: Handle,
}

/// The shared state of the routes.
#[derive(Clone)]
struct Shared {
    live: Arc<OnceLock<Live>>,
    stats: Arc<GatewayStats>,
    draining: Arc<AtomicBool>,
    pool: Pool,
}

fn json_response(status: u16, body: Value) -> HttpResponse {
    HttpResponse::json(status, &body).header("Cache-Control", "no-store")
}

impl Shared {
    fn healthz(&self, _req: HttpRequest, res: Responder) {
        let _ = res.send(json_response(200, json!({"status": "ok"})));
    }

    /// Ready while serving: the loop answered this request, and no shutdown has begun.
    fn readyz(&self, _req: HttpRequest, res: Responder) {
        let resp = if self.draining.load(Ordering::SeqCst) {
            json_response(503, json!({"status": "draining"}))
        } else if self.live.get().is_none() {
            json_response(503, json!({"status": "starting"}))
        } else {
            json_response(200, json!({"status": "ready"}))
        };
        let _ = res.send(resp);
    }

    fn metrics(&self, req: HttpRequest, res: Responder) {
        let me = self.clone();
        // The responder goes to the job, or answers 503 here when the pool refuses the job.
        let slot = Arc::new(std::sync::Mutex::new(Some(res)));
        let job_slot = slot.clone();
        let job = move || {
            let Some(res) = job_slot.lock().ok().and_then(|mut s| s.take()) else {
                return;
            };
            let Some(live) = me.live.get() else {
                let _ = res.send(HttpResponse::error(503, "starting", "not started yet"));
                return;
            };
            let stats = live.handle.stats().ok();
            let text = metrics::render(
                &live.handle.metrics(),
                stats.as_ref(),
                &me.stats,
                me.draining.load(Ordering::SeqCst),
            );
            let _ = res.send(
                HttpResponse::new(200)
                    .body("text/plain; version=0.0.4; charset=utf-8", text)
                    .header("Cache-Control", "no-store"),
            );
        };
        if self.pool.try_run(job).is_err() {
            log::warn!(path = req.path.as_str(); "metrics request refused: the API pool is full");
            if let Some(res) = slot.lock().ok().and_then(|mut s| s.take()) {
                let _ = res.send(HttpResponse::error(
                    503,
                    "overloaded",
                    "too many requests in flight; retry",
                ));
            }
        }
    }

    fn api(&self, req: HttpRequest, res: Responder) {
        match self.live.get() {
            Some(live) => live.api.handle(req, res),
            None => {
                let _ = res.send(HttpResponse::error(503, "starting", "not started yet"));
            }
        }
    }

    /// `/metrics` and `/api` with a key check on the main port; the key check of `/api` is the
    /// API's own, `/metrics` gets the same.
    fn keyed_metrics(
        &self,
        keys: Arc<Vec<String>>,
    ) -> impl Fn(HttpRequest, Responder) + Send + Sync + 'static {
        let me = self.clone();
        move |req, res| {
            let ok = req.bearer_token().is_some_and(|t| {
                keys.iter()
                    .any(|k| subtle::ConstantTimeEq::ct_eq(k.as_bytes(), t.as_bytes()).into())
            });
            if ok {
                me.metrics(req, res);
            } else {
                let _ = res.send(
                    HttpResponse::error(
                        401,
                        "missing_api_key",
                        "send Authorization: Bearer <api key>",
                    )
                    .header("WWW-Authenticate", "Bearer"),
                );
            }
        }
    }
}

fn add_health(builder: ServerBuilder, shared: &Shared) -> ServerBuilder {
    let (a, b) = (shared.clone(), shared.clone());
    builder
        .route("/healthz", move |req, res| a.healthz(req, res))
        .route("/readyz", move |req, res| b.readyz(req, res))
}

fn add_api(builder: ServerBuilder, shared: &Shared) -> ServerBuilder {
    let a = shared.clone();
    builder.route("/api", move |req, res| a.api(req, res))
}

/// Client events to the backend: the answer becomes the ack.
fn forward_event(hook: &Webhook, stats: &Arc<GatewayStats>, socket: &Socket, ev: tidings::Event) {
    if !hook.forwards(&ev.name) {
        if let Some(ack) = ev.ack {
            let _ = ack.send(vec![
                json!({"error": {"code": "unknown_event", "message": "this event is not handled"}}),
            ]);
        }
        return;
    }
    let identity = socket.identity();
    let body = json!({
        "type": "event",
        "event": ev.name,
        "args": ev.args,
        "sid": socket.sid(),
        "user": identity.map(|i| i.user.clone()),
        "tenant": identity.map(|i| i.tenant.clone()),
        "ack": ev.ack.is_some(),
    });
    let (ack, stats) = (ev.ack, stats.clone());
    // The answer goes back to the client as its ack: it must fit in one message.
    let max_answer = socket.handle().max_payload().saturating_sub(64);
    hook.call(body, move |outcome| {
        let outcome = match outcome {
            Outcome::Answer(v) if v.to_string().len() > max_answer => {
                Outcome::Unavailable(format!("the backend's answer is over {max_answer} bytes"))
            }
            other => other,
        };
        stats
            .webhook
            .inc(&[("kind", "event"), ("outcome", outcome.label())]);
        if !matches!(outcome, Outcome::Answer(_)) {
            log::warn!(outcome = outcome.label(); "backend webhook call failed");
        }
        if let Some(ack) = ack {
            let v = match outcome {
                Outcome::Answer(v) => v,
                other => other.error_ack(),
            };
            let _ = ack.send(vec![v]);
        }
    });
}

fn run(s: &Settings) -> Result<(), BoxError> {
    let level = logger::parse_level(s.str("log_level")).ok_or_else(|| {
        SettingError(format!(
            "log_level: {:?} is not a level",
            s.str("log_level")
        ))
    })?;
    logger::init(level);

    let request_timeout = s.millis("request_timeout_ms")?;
    let ack_timeout_max = s.millis("ack_timeout_max_ms")?;
    if ack_timeout_max >= request_timeout {
        return Err(
            SettingError("ack_timeout_max_ms must be below request_timeout_ms".into()).into(),
        );
    }
    let demo_on = s.bool("demo")?;
    let keys = s.list("api_keys");
    let api_on_main = s.bool("api_on_main_port")?;
    if api_on_main && keys.is_empty() {
        return Err(SettingError("api_on_main_port needs api_keys".into()).into());
    }
    let api_bind = match s.optional("api_bind") {
        None => None,
        Some(_) => Some(s.addr("api_bind")?),
    };
    if let Some(a) = api_bind {
        if keys.is_empty() && !a.ip().is_loopback() {
            return Err(SettingError(
                "a publish API on a non-loopback api_bind needs api_keys".into(),
            )
            .into());
        }
    }
    let config = Config {
        bind: s.addr("bind")?,
        socketio_path: s.optional("socketio_path"),
        sse_path: s.optional("sse_path"),
        cors: Cors {
            allowed_origins: s.list("cors_origins"),
            allow_credentials: s.bool("cors_credentials")?,
        },
        max_connections: s.positive("max_connections")?,
        max_payload: s.positive("max_payload")?,
        max_outbound_bytes: (1 << 20) + s.positive("max_payload")?,
        ping_interval: s.millis("ping_interval_ms")?,
        ping_timeout: s.millis("ping_timeout_ms")?,
        request_timeout,
        sse_history_events: s.usize("sse_history_events")?,
        max_request_body: s.positive("api_max_body")?,
        pages: if demo_on {
            vec![demo::page()]
        } else {
            Vec::new()
        },
        connection_state_recovery: match s.millis("recovery_window_ms")? {
            w if !w.is_zero() => Some(tidings::Recovery {
                max_disconnection_duration: w,
                ..tidings::Recovery::default()
            }),
            // The demo page's "go offline" shows recovery.
            _ if demo_on => Some(demo::recovery()),
            _ => None,
        },
        ..Config::default()
    };
    config.validate()?;

    let mode = match jwt::Jwt::from_settings(s)? {
        Some(j) => Mode::Jwt(Box::new(j)),
        None if demo_on => Mode::Demo,
        None if s.bool("anonymous")? => Mode::Anonymous,
        None => {
            return Err(SettingError(
                "no client authentication: set jwt_secret or jwt_public_key_file, or --anonymous (or --demo)".into(),
            )
            .into())
        }
    };
    if demo_on && matches!(mode, Mode::Jwt(_)) {
        log::warn!("--demo with JWT settings: the demo page's connections need tokens too");
    }
    let mode_name = match &mode {
        Mode::Jwt(_) => "jwt",
        Mode::Demo => "demo (clients claim who they are)",
        Mode::Anonymous => "anonymous",
    };
    let stats = Arc::new(GatewayStats::default());
    let webhook = Webhook::from_settings(s)?;
    let service_cell: Arc<OnceLock<NotificationService>> = Arc::default();
    let auth = Arc::new(ClientAuth {
        mode,
        allowed_tenants: s.list("allowed_tenants"),
        token_query: s.str("token_query").to_string(),
        token_cookie: s.str("token_cookie").to_string(),
        webhook: webhook.clone(),
        stats: stats.clone(),
        service: service_cell.clone(),
    });
    let shared = Shared {
        live: Arc::default(),
        stats: stats.clone(),
        draining: Arc::default(),
        pool: Pool::new("tidings-api", s.positive("api_workers")?, 4096)?,
    };

    let mut builder =
        Server::builder(config).authenticate_deferred(move |req, d| auth.hook(req, d));
    if let Some(hook) = webhook.clone() {
        let stats = stats.clone();
        builder = builder.on_any_event("/", move |socket, ev| {
            forward_event(&hook, &stats, socket, ev)
        });
    }
    let mut demo_app = None;
    if demo_on {
        let (b, d) = demo::install(builder);
        builder = b;
        demo_app = Some(d);
    }
    builder = add_health(builder, &shared);
    let keys = Arc::new(keys);
    if api_on_main {
        builder = add_api(builder, &shared);
        builder = builder.route("/metrics", shared.keyed_metrics(keys.clone()));
    }
    let server = builder.start()?;
    let handle = server.handle();
    let service = NotificationService::new(handle.clone());
    let _ = service_cell.set(service.clone());
    if let Some(d) = &demo_app {
        d.start(handle.clone());
    }

    let api_server = match api_bind {
        None => None,
        Some(bind) => {
            let api_config = Config {
                bind,
                socketio_path: None,
                sse_path: None,
                request_timeout,
                max_request_body: s.positive("api_max_body")?,
                max_connections: 4096,
                ..Config::default()
            };
            let m = shared.clone();
            let b = add_health(add_api(Server::builder(api_config), &shared), &shared)
                .route("/metrics", move |req, res| m.metrics(req, res))
                // Anything else on this listener: a JSON 404 like every API error.
                .route("/", |_, res| {
                    let _ = res.send(HttpResponse::error(
                        404,
                        "not_found",
                        "no such endpoint: the API is under /api/v1/",
                    ));
                });
            Some(b.start()?)
        }
    };
    let _ = shared.live.set(Live {
        api: Arc::new(Api {
            service,
            keys: keys.to_vec(),
            max_batch: s.positive("api_max_batch")?,
            ack_timeout_max,
            stats: stats.clone(),
            pool: shared.pool.clone(),
        }),
        handle,
    });
    let api_addr = api_server
        .as_ref()
        .map(|a| a.local_addr().to_string())
        .unwrap_or_default();
    log::info!(
        main:% = server.local_addr(),
        api = api_addr.as_str(),
        auth = mode_name,
        webhook = webhook.is_some(),
        demo = demo_on;
        "tidings-gateway listening"
    );

    // SIGTERM / SIGINT set the flag; the main thread polls it.
    let signalled = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, signalled.clone())?;
    }
    while !signalled.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let grace = s.millis("shutdown_grace_ms")?;
    shared.draining.store(true, Ordering::SeqCst);
    let started = Instant::now();
    log::info!(grace_ms = grace.as_millis() as u64; "shutdown signal: draining clients");
    // Clients first (Socket.IO: a close packet, so they see the disconnect and reconnect to
    // another instance; SSE: a retry hint, then the end of the stream), then the API.
    server.shutdown(grace)?;
    if let Some(api) = api_server {
        api.shutdown(grace.saturating_sub(started.elapsed()))?;
    }
    log::info!(took_ms = started.elapsed().as_millis() as u64; "drained; exiting");
    Ok(())
}
