//! JSON log lines that carry the ids of the exported trace.
//!
//! One JSON object per line, with these keys first:
//!
//! | key | value |
//! |---|---|
//! | `timestamp` | RFC 3339, UTC, microseconds (`2026-11-29T10:42:00.123456Z`) |
//! | `level` | `TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR` |
//! | `target` | the `tracing` target (module path unless set) |
//! | `message` | the formatted message |
//! | `service` | the `service.name` of the process |
//! | `trace_id`, `span_id` | inside a span: 32 and 16 lowercase hex digits |
//!
//! followed by the event's own fields (a field that would clash with a key above is written
//! with a `field.` prefix). `trace_id` and `span_id` are read from the OpenTelemetry context
//! that `tracing-opentelemetry` activates when a span is entered, so they are exactly the ids of
//! the span the collector receives: paste one into Jaeger and the trace opens.
//!
//! ```text
//! {"timestamp":"2026-11-29T10:42:00.123456Z","level":"INFO","target":"orders::api","message":"order placed","service":"orders","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","order_id":"o-17"}
//! ```

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The keys this format writes itself; event fields with these names get a `field.` prefix.
const RESERVED: [&str; 7] = [
    "timestamp",
    "level",
    "target",
    "message",
    "service",
    "trace_id",
    "span_id",
];

/// A [`FormatEvent`] writing the JSON line described in the [module docs](self).
#[derive(Clone, Debug)]
pub struct JsonFormat {
    service: String,
}

impl JsonFormat {
    /// A format that writes `service` into every line.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::with_capacity(8);
        let now = time::OffsetDateTime::now_utc();
        let timestamp = now
            .replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
            .unwrap_or(now)
            .format(&Rfc3339)
            .map_err(|_| fmt::Error)?;
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert("level".into(), Value::String(meta.level().as_str().into()));
        line.insert("target".into(), Value::String(meta.target().into()));
        line.insert("message".into(), Value::String(String::new()));
        line.insert("service".into(), Value::String(self.service.clone()));
        opentelemetry::Context::map_current(|cx| {
            let span = cx.span();
            let sc = span.span_context();
            if sc.is_valid() {
                line.insert("trace_id".into(), Value::String(sc.trace_id().to_string()));
                line.insert("span_id".into(), Value::String(sc.span_id().to_string()));
            }
        });
        event.record(&mut JsonVisitor(&mut line));
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Collects an event's fields into the JSON object.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name == "message" {
            self.0.insert("message".into(), value_to_message(value));
        } else if name.starts_with("log.") {
            // Metadata of events bridged from the `log` crate; `target` already says it.
        } else if RESERVED.contains(&name) {
            self.0.insert(format!("field.{name}"), value);
        } else {
            self.0.insert(name.to_owned(), value);
        }
    }
}

fn value_to_message(value: Value) -> Value {
    match value {
        Value::String(_) => value,
        other => Value::String(other.to_string()),
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.put(field, v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn capture(f: impl FnOnce()) -> Vec<Value> {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonFormat::new("svc"))
                .with_writer(move || out.clone()),
        );
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
            .collect()
    }

    #[test]
    fn a_line_has_the_contract_keys_and_the_event_fields() {
        let lines = capture(|| tracing::info!(order_id = "o-1", quantity = 2, "order placed"));
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert_eq!(l["level"], "INFO");
        assert_eq!(l["message"], "order placed");
        assert_eq!(l["service"], "svc");
        assert_eq!(l["order_id"], "o-1");
        assert_eq!(l["quantity"], 2);
        assert!(l.get("trace_id").is_none(), "no span, no trace id");
        let ts = l["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z'), "{ts}");
        time::OffsetDateTime::parse(ts, &Rfc3339).expect("RFC 3339");
    }

    #[test]
    fn fields_named_like_contract_keys_do_not_overwrite_them() {
        let lines = capture(|| tracing::warn!(service = "spoof", level = 3, "x"));
        assert_eq!(lines[0]["service"], "svc");
        assert_eq!(lines[0]["field.service"], "spoof");
        assert_eq!(lines[0]["level"], "WARN");
    }
}
