//! Structured logs: one JSON object per line on stderr (`ts` in Unix seconds, `level`, `target`,
//! `msg`, then the record's key-value pairs), filtered by `log_level`.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::kv::{Key, Value as KvValue, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};
use serde_json::{Map, Value};

struct JsonLogger {
    level: LevelFilter,
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: KvValue<'kvs>) -> Result<(), log::kv::Error> {
        let v = if let Some(n) = value.to_u64() {
            Value::from(n)
        } else if let Some(n) = value.to_i64() {
            Value::from(n)
        } else if let Some(b) = value.to_bool() {
            Value::from(b)
        } else {
            Value::from(value.to_string())
        };
        self.0.insert(key.as_str().to_string(), v);
        Ok(())
    }
}

impl Log for JsonLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as f64 / 1000.0)
            .unwrap_or(0.0);
        let mut line = Map::new();
        line.insert("ts".into(), Value::from(ts));
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        line.insert("level".into(), Value::from(level));
        line.insert("target".into(), Value::from(record.target()));
        line.insert("msg".into(), Value::from(record.args().to_string()));
        let _ = record.key_values().visit(&mut Fields(&mut line));
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        // One write per line, so lines of different threads do not interleave.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Parses a `log_level` value.
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    match s {
        "off" => Some(LevelFilter::Off),
        "error" => Some(LevelFilter::Error),
        "warn" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

/// Installs the logger (once per process).
pub fn init(level: LevelFilter) {
    // The logger lives as long as the process: leaking the one box is what `set_logger` wants.
    let logger: &'static JsonLogger = Box::leak(Box::new(JsonLogger { level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}
