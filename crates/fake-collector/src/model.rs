//! Flattened, test-friendly views of the OTLP data received by the collector,
//! and the conversions from the generated protobuf types.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as proto_trace;

/// An attribute value (or log body), converted from an OTLP `AnyValue`.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// `string_value`.
    String(String),
    /// `bool_value`.
    Bool(bool),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `array_value`, element by element.
    Array(Vec<AttrValue>),
    /// Anything else, in string form: a key/value list as `{k: v, ...}`,
    /// bytes as lowercase hex, an empty value as `""`.
    Other(String),
}

impl AttrValue {
    /// The string, if this is [`AttrValue::String`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is [`AttrValue::Int`].
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The boolean, if this is [`AttrValue::Bool`].
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            AttrValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The number, if this is [`AttrValue::Double`] or [`AttrValue::Int`].
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            AttrValue::Double(d) => Some(*d),
            AttrValue::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

/// The string form used by [`Span::attr_str`] and [`LogRecord::body`]:
/// strings unquoted, numbers and booleans as Rust prints them, arrays as
/// `[a, b]`, and [`AttrValue::Other`] as its stored string.
impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::String(s) | AttrValue::Other(s) => f.write_str(s),
            AttrValue::Bool(b) => write!(f, "{b}"),
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Double(d) => write!(f, "{d}"),
            AttrValue::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// A span's kind (OTLP `Span.kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// `SPAN_KIND_UNSPECIFIED`, or a value this crate does not know.
    Unspecified,
    /// `SPAN_KIND_INTERNAL`.
    Internal,
    /// `SPAN_KIND_SERVER`.
    Server,
    /// `SPAN_KIND_CLIENT`.
    Client,
    /// `SPAN_KIND_PRODUCER`.
    Producer,
    /// `SPAN_KIND_CONSUMER`.
    Consumer,
}

/// A span's status code (OTLP `Status.code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusCode {
    /// `STATUS_CODE_UNSET`, an absent status, or a value this crate does not know.
    Unset,
    /// `STATUS_CODE_OK`.
    Ok,
    /// `STATUS_CODE_ERROR`.
    Error,
}

/// A span event.
#[derive(Clone, Debug)]
pub struct Event {
    /// The event name.
    pub name: String,
    /// The event time, nanoseconds since the Unix epoch.
    pub time_unix_nanos: u64,
    /// The event attributes.
    pub attributes: BTreeMap<String, AttrValue>,
}

/// A span link.
#[derive(Clone, Debug)]
pub struct Link {
    /// The linked trace id, lowercase hex.
    pub trace_id: String,
    /// The linked span id, lowercase hex.
    pub span_id: String,
    /// The linked span context's W3C `tracestate`.
    pub trace_state: String,
    /// The link attributes.
    pub attributes: BTreeMap<String, AttrValue>,
}

/// One received span, flattened together with its resource and scope.
#[derive(Clone, Debug)]
pub struct Span {
    /// The `service.name` resource attribute in string form, `""` when absent.
    pub service_name: String,
    /// All resource attributes.
    pub resource: BTreeMap<String, AttrValue>,
    /// The instrumentation scope name, `""` when absent.
    pub scope_name: String,
    /// The trace id, lowercase hex.
    pub trace_id: String,
    /// The span id, lowercase hex.
    pub span_id: String,
    /// The parent span id, lowercase hex; `""` for a root span (absent,
    /// empty or all-zero parent id).
    pub parent_span_id: String,
    /// The span's `flags` field (the low byte holds the W3C trace flags).
    pub trace_flags: u32,
    /// The W3C `tracestate`.
    pub trace_state: String,
    /// The span name.
    pub name: String,
    /// The span kind.
    pub kind: SpanKind,
    /// Start time, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End time, nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// The span attributes.
    pub attributes: BTreeMap<String, AttrValue>,
    /// The status code.
    pub status: StatusCode,
    /// The status message.
    pub status_message: String,
    /// The span events, in order.
    pub events: Vec<Event>,
    /// The span links, in order.
    pub links: Vec<Link>,
}

impl Span {
    /// The attribute `key`, if present.
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.get(key)
    }

    /// The attribute `key` in string form (see [`AttrValue`]'s `Display`),
    /// whatever its type.
    pub fn attr_str(&self, key: &str) -> Option<String> {
        self.attr(key).map(ToString::to_string)
    }

    /// End minus start; zero if the end precedes the start.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_nanos.saturating_sub(self.start_unix_nanos))
    }

    /// Whether this span has no parent.
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }
}

/// One received log record, flattened together with its resource and scope.
#[derive(Clone, Debug)]
pub struct LogRecord {
    /// The `service.name` resource attribute in string form, `""` when absent.
    pub service_name: String,
    /// All resource attributes.
    pub resource: BTreeMap<String, AttrValue>,
    /// The instrumentation scope name, `""` when absent.
    pub scope_name: String,
    /// The record's `time_unix_nano` (0 when unset).
    pub time_unix_nanos: u64,
    /// The record's `observed_time_unix_nano` (0 when unset).
    pub observed_time_unix_nanos: u64,
    /// The OTLP severity number (e.g. 9 = INFO, 17 = ERROR).
    pub severity_number: i32,
    /// The severity text.
    pub severity_text: String,
    /// The body in string form (see [`AttrValue`]'s `Display`); `""` when absent.
    pub body: String,
    /// The record attributes.
    pub attributes: BTreeMap<String, AttrValue>,
    /// The trace id, lowercase hex; `""` when absent, empty or all-zero.
    pub trace_id: String,
    /// The span id, lowercase hex; `""` when absent, empty or all-zero.
    pub span_id: String,
    /// The record's `event_name`.
    pub event_name: String,
}

impl LogRecord {
    /// The attribute `key`, if present.
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.get(key)
    }

    /// The attribute `key` in string form, whatever its type.
    pub fn attr_str(&self, key: &str) -> Option<String> {
        self.attr(key).map(ToString::to_string)
    }
}

/// The first span named `name`.
pub fn find<'a>(spans: &'a [Span], name: &str) -> Option<&'a Span> {
    spans.iter().find(|s| s.name == name)
}

/// Every span named `name`, in the order received.
pub fn find_all<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// Every span of the trace `trace_id` (lowercase hex), in the order received.
pub fn by_trace<'a>(spans: &'a [Span], trace_id: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.trace_id == trace_id).collect()
}

/// The direct children of `parent` (same trace, parent id = its span id).
pub fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.trace_id == parent.trace_id && s.parent_span_id == parent.span_id)
        .collect()
}

/// The first log record whose body contains `needle`.
pub fn find_log<'a>(logs: &'a [LogRecord], needle: &str) -> Option<&'a LogRecord> {
    logs.iter().find(|l| l.body.contains(needle))
}

// ---------------------------------------------------------------------------
// Conversions from the protobuf types.

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Lowercase hex of an optional id: `""` when empty or all zero.
fn optional_id(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| *b == 0) {
        String::new()
    } else {
        hex(bytes)
    }
}

fn any_value(value: Option<&AnyValue>) -> AttrValue {
    use any_value::Value;
    match value.and_then(|v| v.value.as_ref()) {
        None => AttrValue::Other(String::new()),
        Some(Value::StringValue(s)) => AttrValue::String(s.clone()),
        Some(Value::BoolValue(b)) => AttrValue::Bool(*b),
        Some(Value::IntValue(i)) => AttrValue::Int(*i),
        Some(Value::DoubleValue(d)) => AttrValue::Double(*d),
        Some(Value::ArrayValue(a)) => {
            AttrValue::Array(a.values.iter().map(|v| any_value(Some(v))).collect())
        }
        Some(Value::KvlistValue(kv)) => {
            let items: Vec<String> = kv
                .values
                .iter()
                .map(|e| format!("{}: {}", e.key, any_value(e.value.as_ref())))
                .collect();
            AttrValue::Other(format!("{{{}}}", items.join(", ")))
        }
        Some(Value::BytesValue(b)) => AttrValue::Other(hex(b)),
        Some(Value::StringValueStrindex(i)) => AttrValue::Other(format!("strindex:{i}")),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, AttrValue> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any_value(kv.value.as_ref())))
        .collect()
}

/// Resource attributes and the `service.name` taken from them.
fn resource(resource: Option<&Resource>) -> (BTreeMap<String, AttrValue>, String) {
    let attrs = resource
        .map(|r| attributes(&r.attributes))
        .unwrap_or_default();
    let service = attrs
        .get("service.name")
        .map(ToString::to_string)
        .unwrap_or_default();
    (attrs, service)
}

fn scope_name(scope: Option<&InstrumentationScope>) -> String {
    scope.map(|s| s.name.clone()).unwrap_or_default()
}

fn span_kind(kind: i32) -> SpanKind {
    use proto_trace::span::SpanKind as P;
    match P::try_from(kind) {
        Ok(P::Internal) => SpanKind::Internal,
        Ok(P::Server) => SpanKind::Server,
        Ok(P::Client) => SpanKind::Client,
        Ok(P::Producer) => SpanKind::Producer,
        Ok(P::Consumer) => SpanKind::Consumer,
        Ok(P::Unspecified) | Err(_) => SpanKind::Unspecified,
    }
}

fn status(status: Option<&proto_trace::Status>) -> (StatusCode, String) {
    use proto_trace::status::StatusCode as P;
    let Some(status) = status else {
        return (StatusCode::Unset, String::new());
    };
    let code = match P::try_from(status.code) {
        Ok(P::Ok) => StatusCode::Ok,
        Ok(P::Error) => StatusCode::Error,
        Ok(P::Unset) | Err(_) => StatusCode::Unset,
    };
    (code, status.message.clone())
}

/// Every span of `request`, flattened, in request order.
pub(crate) fn spans_from(request: &ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let (resource, service_name) = resource(rs.resource.as_ref());
        for ss in &rs.scope_spans {
            let scope_name = scope_name(ss.scope.as_ref());
            for s in &ss.spans {
                let (status, status_message) = status(s.status.as_ref());
                out.push(Span {
                    service_name: service_name.clone(),
                    resource: resource.clone(),
                    scope_name: scope_name.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: optional_id(&s.parent_span_id),
                    trace_flags: s.flags,
                    trace_state: s.trace_state.clone(),
                    name: s.name.clone(),
                    kind: span_kind(s.kind),
                    start_unix_nanos: s.start_time_unix_nano,
                    end_unix_nanos: s.end_time_unix_nano,
                    attributes: attributes(&s.attributes),
                    status,
                    status_message,
                    events: s
                        .events
                        .iter()
                        .map(|e| Event {
                            name: e.name.clone(),
                            time_unix_nanos: e.time_unix_nano,
                            attributes: attributes(&e.attributes),
                        })
                        .collect(),
                    links: s
                        .links
                        .iter()
                        .map(|l| Link {
                            trace_id: hex(&l.trace_id),
                            span_id: hex(&l.span_id),
                            trace_state: l.trace_state.clone(),
                            attributes: attributes(&l.attributes),
                        })
                        .collect(),
                });
            }
        }
    }
    out
}

/// Every log record of `request`, flattened, in request order.
pub(crate) fn logs_from(request: &ExportLogsServiceRequest) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for rl in &request.resource_logs {
        let (resource, service_name) = resource(rl.resource.as_ref());
        for sl in &rl.scope_logs {
            let scope_name = scope_name(sl.scope.as_ref());
            for l in &sl.log_records {
                out.push(LogRecord {
                    service_name: service_name.clone(),
                    resource: resource.clone(),
                    scope_name: scope_name.clone(),
                    time_unix_nanos: l.time_unix_nano,
                    observed_time_unix_nanos: l.observed_time_unix_nano,
                    severity_number: l.severity_number,
                    severity_text: l.severity_text.clone(),
                    body: any_value(l.body.as_ref()).to_string(),
                    attributes: attributes(&l.attributes),
                    trace_id: optional_id(&l.trace_id),
                    span_id: optional_id(&l.span_id),
                    event_name: l.event_name.clone(),
                });
            }
        }
    }
    out
}

/// One line per span, for timeout messages.
pub(crate) fn describe_spans(spans: &[Span]) -> String {
    if spans.is_empty() {
        return "  (none)".to_owned();
    }
    spans
        .iter()
        .map(|s| {
            format!(
                "  {:?} service={:?} kind={:?} trace={} span={} parent={}",
                s.name,
                s.service_name,
                s.kind,
                s.trace_id,
                s.span_id,
                if s.parent_span_id.is_empty() {
                    "-"
                } else {
                    &s.parent_span_id
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One line per log record, for timeout messages.
pub(crate) fn describe_logs(logs: &[LogRecord]) -> String {
    if logs.is_empty() {
        return "  (none)".to_owned();
    }
    logs.iter()
        .map(|l| {
            let dash = |s: &str| {
                if s.is_empty() {
                    "-".to_owned()
                } else {
                    s.to_owned()
                }
            };
            format!(
                "  [{} {}] {:?} service={:?} event={:?} trace={} span={}",
                l.severity_number,
                l.severity_text,
                l.body,
                l.service_name,
                l.event_name,
                dash(&l.trace_id),
                dash(&l.span_id)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0a, 0xff, 0x10]), "000aff10");
        assert_eq!(optional_id(&[]), "");
        assert_eq!(optional_id(&[0; 8]), "");
        assert_eq!(optional_id(&[0, 0, 0, 0, 0, 0, 0, 1]), "0000000000000001");
    }

    #[test]
    fn any_value_string_forms() {
        use any_value::Value;
        let v = |value| AnyValue { value: Some(value) };
        assert_eq!(
            any_value(Some(&v(Value::StringValue("x".into())))),
            AttrValue::String("x".into())
        );
        assert_eq!(any_value(None), AttrValue::Other(String::new()));
        assert_eq!(
            any_value(Some(&v(Value::BytesValue(vec![0xde, 0xad])))).to_string(),
            "dead"
        );
        let arr = any_value(Some(&v(Value::ArrayValue(
            opentelemetry_proto::tonic::common::v1::ArrayValue {
                values: vec![v(Value::IntValue(1)), v(Value::BoolValue(true))],
            },
        ))));
        assert_eq!(
            arr,
            AttrValue::Array(vec![AttrValue::Int(1), AttrValue::Bool(true)])
        );
        assert_eq!(arr.to_string(), "[1, true]");
        assert_eq!(AttrValue::Double(1.5).to_string(), "1.5");
    }
}
