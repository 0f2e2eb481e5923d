//! `/metrics` in the Prometheus text format (version 0.0.4): the library's totals and sizes, and
//! the gateway's own counters (publish API requests and errors, client authentication, backend
//! webhook calls).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use tidings::{Metrics, Stats};

/// Counters with one label set each (`name="value",…` already rendered).
#[derive(Default)]
pub struct Labeled {
    counts: Mutex<BTreeMap<String, u64>>,
}

/// Escapes a label value (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Labeled {
    /// Adds one to the counter with these labels.
    pub fn inc(&self, labels: &[(&str, &str)]) {
        let key = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(key).or_default() += 1;
        }
    }

    fn render(&self, out: &mut String, name: &str) {
        if let Ok(c) = self.counts.lock() {
            for (labels, n) in c.iter() {
                let _ = writeln!(out, "{name}{{{labels}}} {n}");
            }
        }
    }
}

/// The gateway's own counters.
#[derive(Default)]
pub struct GatewayStats {
    /// Publish API requests by endpoint and status.
    pub api_requests: Labeled,
    /// Publish API errors by code.
    pub api_errors: Labeled,
    /// Client authentications by transport and outcome (`accepted` or the refusal's code).
    pub auth: Labeled,
    /// Backend webhook calls by kind (`event`, `connect`) and outcome.
    pub webhook: Labeled,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn one(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The whole exposition. `stats` is `None` when the loop did not answer in time.
pub fn render(
    metrics: &Metrics,
    stats: Option<&Stats>,
    gw: &GatewayStats,
    draining: bool,
) -> String {
    let mut out = String::with_capacity(4096);
    family(
        &mut out,
        "tidings_connections",
        "gauge",
        "Open client connections by transport (Socket.IO sockets of every namespace, SSE streams).",
    );
    if let Some(s) = stats {
        let _ = writeln!(
            out,
            "tidings_connections{{transport=\"socketio\"}} {}",
            s.sio_sockets
        );
        let _ = writeln!(
            out,
            "tidings_connections{{transport=\"sse\"}} {}",
            s.sse_streams
        );
        one(
            &mut out,
            "tidings_engineio_sessions",
            "gauge",
            "Open Engine.IO sessions.",
            s.eio_sessions,
        );
        one(
            &mut out,
            "tidings_pending_acks",
            "gauge",
            "Acks waiting for an answer.",
            s.pending_acks,
        );
        one(
            &mut out,
            "tidings_sse_history_events",
            "gauge",
            "Events kept for SSE resume.",
            s.sse_history,
        );
        one(
            &mut out,
            "tidings_rooms",
            "gauge",
            "Rooms with a member.",
            s.index_rooms,
        );
        one(
            &mut out,
            "tidings_users",
            "gauge",
            "Users with a connection or a room.",
            s.index_users,
        );
    }
    one(
        &mut out,
        "tidings_up",
        "gauge",
        "1 while the event loop answers, 0 if it did not in time.",
        u8::from(stats.is_some()),
    );
    one(
        &mut out,
        "tidings_draining",
        "gauge",
        "1 once a shutdown signal was received.",
        u8::from(draining),
    );
    one(
        &mut out,
        "tidings_connections_accepted_total",
        "counter",
        "TCP connections accepted on the main listener.",
        metrics.connections_accepted,
    );
    one(
        &mut out,
        "tidings_events_in_total",
        "counter",
        "Socket.IO events received from clients.",
        metrics.events_in,
    );
    family(
        &mut out,
        "tidings_events_out_total",
        "counter",
        "Broadcast events delivered, one per connection reached, by transport.",
    );
    let _ = writeln!(
        out,
        "tidings_events_out_total{{transport=\"socketio\"}} {}",
        metrics.delivered_socketio
    );
    let _ = writeln!(
        out,
        "tidings_events_out_total{{transport=\"sse\"}} {}",
        metrics.delivered_sse
    );
    one(
        &mut out,
        "tidings_bytes_in_total",
        "counter",
        "Bytes read from client connections.",
        metrics.bytes_in,
    );
    one(
        &mut out,
        "tidings_bytes_out_total",
        "counter",
        "Bytes written to client connections.",
        metrics.bytes_out,
    );
    one(
        &mut out,
        "tidings_slow_consumer_closes_total",
        "counter",
        "Connections closed for not reading fast enough.",
        metrics.slow_consumer_closes,
    );
    one(
        &mut out,
        "tidings_dispatcher_backlog",
        "gauge",
        "Application events waiting for the dispatcher thread.",
        metrics.dispatcher_backlog,
    );
    family(
        &mut out,
        "tidings_api_requests_total",
        "counter",
        "Publish API requests by endpoint and status.",
    );
    gw.api_requests
        .render(&mut out, "tidings_api_requests_total");
    family(
        &mut out,
        "tidings_api_errors_total",
        "counter",
        "Publish API errors by code.",
    );
    gw.api_errors.render(&mut out, "tidings_api_errors_total");
    family(
        &mut out,
        "tidings_auth_total",
        "counter",
        "Client authentications by transport and outcome.",
    );
    gw.auth.render(&mut out, "tidings_auth_total");
    family(
        &mut out,
        "tidings_webhook_calls_total",
        "counter",
        "Backend webhook calls by kind and outcome.",
    );
    gw.webhook.render(&mut out, "tidings_webhook_calls_total");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_every_family_has_help_and_type() {
        let gw = GatewayStats::default();
        gw.api_errors.inc(&[("code", "a\"b\\c\nd")]);
        gw.api_errors.inc(&[("code", "a\"b\\c\nd")]);
        let text = render(&Metrics::default(), Some(&Stats::default()), &gw, false);
        assert!(text.contains("tidings_api_errors_total{code=\"a\\\"b\\\\c\\nd\"} 2\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }
}
