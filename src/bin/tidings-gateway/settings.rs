//! Every setting of the gateway in one table: its name (the config file's key, `--name` on the
//! command line with `_` as `-`, `TIDINGS_NAME` in the environment), its default and what it
//! does. `--help` prints the table; later sources win: default < file < environment < flag.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// One setting: name, default (as text; "" is empty), and its documentation line.
struct Spec {
    name: &'static str,
    default: &'static str,
    doc: &'static str,
}

const fn s(name: &'static str, default: &'static str, doc: &'static str) -> Spec {
    Spec { name, default, doc }
}

/// Boolean settings: `--name` alone sets them to true.
const FLAGS: &[&str] = &["demo", "anonymous", "api_on_main_port", "webhook_connect"];

const SPECS: &[Spec] = &[
    s("config", "", "JSON config file: an object with any of these settings as keys (lists as arrays or comma-separated strings)"),
    s("bind", "127.0.0.1:3000", "address of the main listener: Socket.IO, SSE, /healthz, /readyz (and the demo page)"),
    s("api_bind", "127.0.0.1:3001", "address of the publish API listener (/api/v1/…, /metrics, /healthz, /readyz); \"off\" for none. Without api_keys it must be a loopback address"),
    s("api_keys", "", "bearer keys the publish API accepts (comma-separated); required for api_on_main_port or a non-loopback api_bind"),
    s("api_on_main_port", "false", "also serve the publish API and /metrics on the main listener (requires api_keys)"),
    s("api_max_body", "1000000", "largest publish API request body in bytes (larger: 413 body_too_large)"),
    s("api_max_batch", "100", "most sends in one /api/v1/batch request"),
    s("api_workers", "4", "threads serving publish API requests"),
    s("ack_timeout_max_ms", "8000", "longest timeout_ms an /api/v1/ask may ask for; must be below request_timeout_ms"),
    s("socketio_path", "/socket.io/", "Socket.IO endpoint path (\"off\" to disable)"),
    s("sse_path", "/events", "SSE endpoint path (\"off\" to disable)"),
    s("cors_origins", "", "origins allowed cross-origin (comma-separated, exact, e.g. https://app.example.com)"),
    s("cors_credentials", "false", "send Access-Control-Allow-Credentials: true to allowed origins"),
    s("max_connections", "10000", "most open connections on the main listener"),
    s("max_payload", "1000000", "largest Socket.IO message / broadcast in bytes"),
    s("ping_interval_ms", "25000", "Engine.IO ping interval"),
    s("ping_timeout_ms", "20000", "Engine.IO ping timeout"),
    s("request_timeout_ms", "10000", "time for a request head and body to arrive, and for the gateway to answer it (then 503)"),
    s("sse_history_events", "10000", "events kept for SSE resume (Last-Event-ID) and Socket.IO recovery"),
    s("recovery_window_ms", "0", "Socket.IO connection state recovery: how long a disconnected session waits for its client to come back and get what it missed (0: off; with --demo: 60000)"),
    s("anonymous", "false", "accept clients without a token as anonymous (they receive only sends to everyone); ignored when JWT is configured"),
    s("jwt_secret", "", "HS256 secret for client tokens (or set jwt_public_key_file)"),
    s("jwt_public_key_file", "", "PEM public key (RSA for RS256, P-256 for ES256) for client tokens"),
    s("jwt_algorithm", "", "HS256, RS256 or ES256; default HS256 with jwt_secret, required with jwt_public_key_file"),
    s("jwt_tenant_claim", "tenant", "claim holding the tenant (absent: the default tenant \"\")"),
    s("jwt_rooms_claim", "", "claim listing rooms the user is joined to on connect (an array of names); empty: none"),
    s("jwt_issuer", "", "required iss claim (empty: not checked)"),
    s("jwt_audience", "", "required aud claim (empty: tokens with an aud are refused)"),
    s("jwt_leeway_s", "0", "clock skew allowed on exp and nbf, in seconds"),
    s("allowed_tenants", "", "tenants served (comma-separated); a token of another tenant is refused with 403. Empty: any"),
    s("token_query", "token", "query parameter an SSE client may carry its token in"),
    s("token_cookie", "token", "cookie a client may carry its token in"),
    s("webhook_url", "", "backend URL (http://…) that client events are POSTed to as JSON; the answer becomes the ack"),
    s("webhook_events", "*", "client events forwarded (comma-separated names, * for all)"),
    s("webhook_connect", "false", "also ask the backend about every connect (its answer allows or refuses it)"),
    s("webhook_timeout_ms", "5000", "how long a backend call may take"),
    s("webhook_concurrency", "8", "backend calls in flight at once"),
    s("webhook_queue", "256", "backend calls waiting beyond those; more are refused at once (backend_busy)"),
    s("shutdown_grace_ms", "10000", "on SIGTERM / SIGINT: time clients get to drain before the process exits"),
    s("log_level", "info", "error, warn, info, debug or trace (JSON lines on stderr)"),
    s("demo", "false", "also serve the demo page at / and its demo:* control events (DEMO ONLY: without jwt_* settings clients claim who they are)"),
];

/// A setting that cannot be used.
#[derive(Debug)]
pub struct SettingError(pub String);

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SettingError {}

fn err<T>(m: impl Into<String>) -> Result<T, SettingError> {
    Err(SettingError(m.into()))
}

/// What the command line asked for.
pub enum Invocation {
    Run(Settings),
    Help,
    Version,
}

/// The resolved settings, as text, with typed getters.
#[derive(Debug, Clone)]
pub struct Settings {
    values: BTreeMap<&'static str, String>,
}

fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

fn env_name(name: &str) -> String {
    format!("TIDINGS_{}", name.to_ascii_uppercase())
}

/// The `--help` text: every setting with its flag, variable and default.
pub fn help() -> String {
    let mut out = String::from(
        "tidings-gateway: Socket.IO and SSE for your backend, with a JSON publish API.\n\n\
         Usage: tidings-gateway [--setting value]... [--flag]...\n\n\
         Each setting is read from, in increasing priority: its default, the JSON file of\n\
         --config, the environment variable TIDINGS_<NAME>, the command line. Booleans take\n\
         true/false; on the command line the flag alone means true.\n\n",
    );
    for sp in SPECS {
        let flag = format!("--{}", sp.name.replace('_', "-"));
        let default = if sp.default.is_empty() {
            "(empty)".to_string()
        } else {
            sp.default.to_string()
        };
        out.push_str(&format!(
            "  {flag}  [{}]  default: {default}\n      {}\n",
            env_name(sp.name),
            sp.doc
        ));
    }
    out.push_str("\n  --help     this text\n  --version  the version\n");
    out
}

/// A config file value as setting text (arrays become comma-separated lists).
fn file_value(name: &str, v: &Value) -> Result<String, SettingError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Array(items) => {
            let mut parts = Vec::new();
            for item in items {
                match item {
                    Value::String(s) if !s.contains(',') => parts.push(s.clone()),
                    _ => {
                        return err(format!(
                            "config file: {name}: list items must be strings without ','"
                        ))
                    }
                }
            }
            Ok(parts.join(","))
        }
        _ => err(format!(
            "config file: {name}: expected a string, number, boolean or array"
        )),
    }
}

impl Settings {
    /// Resolves the settings from the command line (without the program name), the environment
    /// (a lookup function, so tests can pass their own) and the config file it names.
    pub fn parse(
        args: &[String],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Invocation, SettingError> {
        let mut flags: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut i = 0;
        while let Some(arg) = args.get(i) {
            i += 1;
            match arg.as_str() {
                "--help" | "-h" => return Ok(Invocation::Help),
                "--version" | "-V" => return Ok(Invocation::Version),
                _ => {}
            }
            let Some(raw) = arg.strip_prefix("--") else {
                return err(format!(
                    "unexpected argument {arg:?} (settings are --name value; see --help)"
                ));
            };
            let (key, inline) = match raw.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (raw, None),
            };
            let name = key.replace('-', "_");
            let Some(sp) = spec(&name) else {
                return err(format!("unknown setting --{key} (see --help)"));
            };
            let value = match inline {
                Some(v) => v,
                None if FLAGS.contains(&sp.name) => match args.get(i).map(String::as_str) {
                    Some("true" | "false") => {
                        i += 1;
                        args.get(i - 1).cloned().unwrap_or_default()
                    }
                    _ => "true".to_string(),
                },
                None => {
                    let Some(v) = args.get(i) else {
                        return err(format!("--{key} needs a value"));
                    };
                    i += 1;
                    v.clone()
                }
            };
            flags.insert(sp.name, value);
        }
        let mut values: BTreeMap<&'static str, String> = SPECS
            .iter()
            .map(|sp| (sp.name, sp.default.to_string()))
            .collect();
        let config_file = flags
            .get("config")
            .cloned()
            .or_else(|| env(&env_name("config")))
            .filter(|p| !p.is_empty());
        if let Some(path) = config_file {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| SettingError(format!("config file {path}: {e}")))?;
            let json: Value = serde_json::from_str(&text)
                .map_err(|e| SettingError(format!("config file {path}: {e}")))?;
            let Value::Object(map) = json else {
                return err(format!("config file {path}: expected a JSON object"));
            };
            for (k, v) in &map {
                let Some(sp) = spec(k).filter(|sp| sp.name != "config") else {
                    return err(format!(
                        "config file {path}: unknown setting {k:?} (see --help)"
                    ));
                };
                values.insert(sp.name, file_value(k, v)?);
            }
            values.insert("config", path);
        }
        for sp in SPECS {
            if let Some(v) = env(&env_name(sp.name)) {
                values.insert(sp.name, v);
            }
        }
        values.extend(flags);
        Ok(Invocation::Run(Settings { values }))
    }

    /// The text of a setting.
    pub fn str(&self, name: &str) -> &str {
        self.values.get(name).map(String::as_str).unwrap_or("")
    }

    /// A setting that may be "off" or empty: `None` then.
    pub fn optional(&self, name: &str) -> Option<String> {
        match self.str(name) {
            "" | "off" => None,
            v => Some(v.to_string()),
        }
    }

    /// A comma-separated list (empty items dropped).
    pub fn list(&self, name: &str) -> Vec<String> {
        self.str(name)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub fn bool(&self, name: &str) -> Result<bool, SettingError> {
        match self.str(name) {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" | "" => Ok(false),
            v => err(format!("{name}: {v:?} is not a boolean (true or false)")),
        }
    }

    pub fn u64(&self, name: &str) -> Result<u64, SettingError> {
        let v = self.str(name);
        v.parse()
            .map_err(|_| SettingError(format!("{name}: {v:?} is not a whole number")))
    }

    pub fn usize(&self, name: &str) -> Result<usize, SettingError> {
        let n = self.u64(name)?;
        usize::try_from(n).map_err(|_| SettingError(format!("{name}: {n} is too large")))
    }

    pub fn millis(&self, name: &str) -> Result<Duration, SettingError> {
        Ok(Duration::from_millis(self.u64(name)?))
    }

    pub fn addr(&self, name: &str) -> Result<SocketAddr, SettingError> {
        let v = self.str(name);
        v.parse().map_err(|_| {
            SettingError(format!(
                "{name}: {v:?} is not an address like 127.0.0.1:3000"
            ))
        })
    }

    /// A positive count (workers, concurrency, sizes).
    pub fn positive(&self, name: &str) -> Result<usize, SettingError> {
        match self.usize(name)? {
            0 => err(format!("{name} must be at least 1")),
            n => Ok(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, SettingError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match Settings::parse(&args, &lookup)? {
            Invocation::Run(s) => Ok(s),
            _ => err("not a run"),
        }
    }

    #[test]
    fn defaults_then_environment_then_flags() -> Result<(), SettingError> {
        let s = run(&[], &[])?;
        assert_eq!(s.str("bind"), "127.0.0.1:3000");
        assert!(!s.bool("demo")?);
        let s = run(
            &["--bind", "127.0.0.1:4000"],
            &[("TIDINGS_BIND", "127.0.0.1:5000")],
        )?;
        assert_eq!(s.str("bind"), "127.0.0.1:4000");
        let s = run(&[], &[("TIDINGS_BIND", "127.0.0.1:5000")])?;
        assert_eq!(s.str("bind"), "127.0.0.1:5000");
        let s = run(&["--demo", "--api-keys=a,b", "--anonymous", "false"], &[])?;
        assert!(s.bool("demo")?);
        assert!(!s.bool("anonymous")?);
        assert_eq!(s.list("api_keys"), vec!["a", "b"]);
        Ok(())
    }

    #[test]
    fn unknown_or_incomplete_settings_are_refused() {
        assert!(run(&["--nope", "1"], &[]).is_err());
        assert!(run(&["--bind"], &[]).is_err());
        assert!(run(&["stray"], &[]).is_err());
        assert!(run(&["--max-payload", "x"], &[]).is_ok_and(|s| s.u64("max_payload").is_err()));
    }

    #[test]
    fn every_setting_is_in_the_help() {
        let h = help();
        for sp in SPECS {
            assert!(
                h.contains(&format!("--{}", sp.name.replace('_', "-"))),
                "{}",
                sp.name
            );
            assert!(h.contains(&env_name(sp.name)));
        }
        for f in FLAGS {
            assert!(spec(f).is_some(), "{f}");
        }
    }
}
