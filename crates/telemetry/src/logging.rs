//! JSON log lines that carry the ids of the exported trace.
//!
//! One JSON object per line, with these keys first:
//!
//! | key | value |
//! |---|---|
//! | `timestamp` | RFC 3339, UTC, always six fractional digits (`2026-11-29T10:42:00.123400Z`) |
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

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use opentelemetry::trace::TraceContextExt;
use std::io::Write as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;

use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
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
///
/// The line is written straight into the output, with the keys in lexicographic order (as a
/// `serde_json::Map` would write them) and strings escaped exactly as `serde_json` escapes them,
/// without building a JSON value first: no allocation per field. Pair it with
/// [`NoSpanFields`]: this format reads no span fields, so formatting them is wasted work.
#[derive(Clone, Debug)]
pub struct JsonFormat {
    /// The service name as a JSON string (quoted and escaped once).
    service_json: String,
}

impl JsonFormat {
    /// A format that writes `service` into every line.
    pub fn new(service: impl Into<String>) -> Self {
        let mut json = Vec::new();
        write_json_str(&mut json, &service.into());
        Self {
            service_json: String::from_utf8(json).expect("escaping keeps UTF-8"),
        }
    }
}

/// A [`FormatFields`] that formats nothing. The `fmt` layer formats every span's fields when
/// the span is created (and again on each `record`) for formatters that print them; with
/// [`JsonFormat`], which does not, that is pure cost on every request. Install it with
/// `tracing_subscriber::fmt::layer().fmt_fields(NoSpanFields).event_format(JsonFormat::new(..))`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSpanFields;

impl<'writer> FormatFields<'writer> for NoSpanFields {
    fn format_fields<R: RecordFields>(&self, _writer: Writer<'writer>, _fields: R) -> fmt::Result {
        Ok(())
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
        self.with_line(event, |line| {
            writer.write_str(std::str::from_utf8(line).map_err(|_| fmt::Error)?)
        })
    }
}

/// A [`Layer`] that writes every event as a [`JsonFormat`] line to a [`MakeWriter`], and does
/// nothing else.
///
/// It is what [`crate::init`] installs for `LOG_FORMAT=json`. Unlike `tracing_subscriber`'s
/// `fmt` layer with [`JsonFormat`], it keeps no state per span (the `fmt` layer stores every
/// span's formatted fields in the span's extensions, an allocation per span even with
/// [`NoSpanFields`]) and copies each line once, straight from the formatting buffer to the
/// writer: 1.1k fewer instructions per request in `bench/callgrind.sh` (36.2k instead of 37.3k).
///
/// Each line is one `write_all` on the writer that
/// [`make_writer_for`](MakeWriter::make_writer_for) returns for the event; a write that fails
/// loses that line (there is nowhere better to report it).
#[derive(Debug)]
pub struct JsonLayer<W> {
    format: JsonFormat,
    writer: W,
}

impl<W> JsonLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    /// A layer writing lines that name `service` to `writer`.
    pub fn new(service: impl Into<String>, writer: W) -> Self {
        Self {
            format: JsonFormat::new(service),
            writer,
        }
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let _ = self.format.with_line(event, |line| {
            self.writer
                .make_writer_for(event.metadata())
                .write_all(line)
                .map_err(|_| fmt::Error)
        });
    }
}

impl JsonFormat {
    /// Formats `event` into this thread's line buffer and hands the line (with its `\n`) to
    /// `write`.
    fn with_line(
        &self,
        event: &Event<'_>,
        write: impl FnOnce(&[u8]) -> fmt::Result,
    ) -> fmt::Result {
        thread_local! {
            static LINE: RefCell<Line> = RefCell::new(Line::default());
        }
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => {
                self.write_line(&mut line, event)?;
                write(&line.out)
            }
            // A field's `Debug` that logs while its own line is being formatted.
            Err(_) => {
                let mut line = Line::default();
                self.write_line(&mut line, event)?;
                write(&line.out)
            }
        })
    }

    /// Formats `event` into `line.out`.
    fn write_line(&self, line: &mut Line, event: &Event<'_>) -> fmt::Result {
        line.clear();
        let meta = event.metadata();

        // This format's own keys are pushed in lexicographic order, so that `finish`'s stable
        // sort only has to move the event's fields into place.
        line.push(Cow::Borrowed("level"), |b| {
            write_json_str(b, meta.level().as_str())
        });
        line.push(Cow::Borrowed("message"), |b| b.extend_from_slice(b"\"\""));
        line.push(Cow::Borrowed("service"), |b| {
            b.extend_from_slice(self.service_json.as_bytes())
        });
        let (trace_id, span_id) = opentelemetry::Context::map_current(|cx| {
            let span = cx.span();
            let sc = span.span_context();
            sc.is_valid()
                .then(|| (sc.trace_id().to_bytes(), sc.span_id().to_bytes()))
                .unzip()
        });
        if let Some(id) = span_id {
            line.push(Cow::Borrowed("span_id"), |b| write_hex_str(b, &id));
        }
        line.push(Cow::Borrowed("target"), |b| {
            write_json_str(b, meta.target())
        });
        let start = line.values.len();
        write_timestamp(&mut line.values, time::OffsetDateTime::now_utc());
        line.entry(Cow::Borrowed("timestamp"), start);
        if let Some(id) = trace_id {
            line.push(Cow::Borrowed("trace_id"), |b| write_hex_str(b, &id));
        }
        event.record(&mut JsonVisitor(line));
        line.finish();
        Ok(())
    }
}

/// One key of the line; its value's JSON text is `Line::values[start..end]`.
struct Entry {
    key: Cow<'static, str>,
    start: usize,
    end: usize,
}

/// The line being written, kept per thread so that its buffers are reused.
#[derive(Default)]
struct Line {
    entries: Vec<Entry>,
    values: Vec<u8>,
    out: Vec<u8>,
}

impl Line {
    /// Buffers larger than this (a huge field) are not kept for the next line.
    const KEEP_BYTES: usize = 64 * 1024;

    fn clear(&mut self) {
        self.entries.clear();
        for buf in [&mut self.values, &mut self.out] {
            buf.clear();
            if buf.capacity() > Self::KEEP_BYTES {
                buf.shrink_to(Self::KEEP_BYTES / 4);
            }
        }
    }

    fn entry(&mut self, key: Cow<'static, str>, start: usize) {
        self.entries.push(Entry {
            key,
            start,
            end: self.values.len(),
        });
    }

    fn push(&mut self, key: Cow<'static, str>, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.values.len();
        write(&mut self.values);
        self.entry(key, start);
    }

    /// Writes `{"key":value,…}\n` into `out`: keys in lexicographic order, and for a key
    /// written more than once the last value (the semantics of a JSON map built by inserts).
    fn finish(&mut self) {
        // Stable: equal keys stay in insertion order, so the last one is the latest.
        self.entries.sort_by(|a, b| a.key.cmp(&b.key));
        self.out.push(b'{');
        let mut first = true;
        for (i, e) in self.entries.iter().enumerate() {
            if self
                .entries
                .get(i + 1)
                .is_some_and(|next| next.key == e.key)
            {
                continue;
            }
            if !first {
                self.out.push(b',');
            }
            first = false;
            write_json_str(&mut self.out, &e.key);
            self.out.push(b':');
            self.out.extend_from_slice(&self.values[e.start..e.end]);
        }
        self.out.extend_from_slice(b"}\n");
    }
}

/// Collects an event's fields into the line.
struct JsonVisitor<'a>(&'a mut Line);

/// Whether a value is written as a JSON string or as a bare number or boolean.
#[derive(PartialEq, Eq)]
enum Kind {
    String,
    Bare,
}

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, kind: Kind, write: impl FnOnce(&mut Vec<u8>)) {
        let name = field.name();
        let key = if name == "message" {
            // The message is always a string, whatever type it was recorded with.
            if kind == Kind::Bare {
                self.0.push(Cow::Borrowed("message"), |b| {
                    b.push(b'"');
                    write(b); // digits, `.`, `e`, `-`, `true`, `false`: nothing to escape
                    b.push(b'"');
                });
                return;
            }
            Cow::Borrowed("message")
        } else if name.starts_with("log.") {
            // Metadata of events bridged from the `log` crate; `target` already says it.
            return;
        } else if RESERVED.contains(&name) {
            Cow::Owned(format!("field.{name}"))
        } else {
            Cow::Borrowed(name)
        };
        self.0.push(key, write);
    }

    fn put_display(&mut self, field: &Field, value: &dyn fmt::Display) {
        self.put(field, Kind::String, |b| write_json_display(b, value));
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // Finite: `serde_json`'s shortest round-trip form, as its `Number` displays it;
        // NaN and infinities are not JSON numbers and become strings.
        match serde_json::Number::from_f64(value) {
            Some(n) => self.put(field, Kind::Bare, |b| write_display(b, &n)),
            None => self.put_display(field, &value),
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Kind::Bare, |b| write_display(b, &value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Kind::Bare, |b| write_display(b, &value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put_display(field, &value);
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put_display(field, &value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Kind::Bare, |b| {
            b.extend_from_slice(if value { b"true" } else { b"false" })
        });
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Kind::String, |b| write_json_str(b, value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put_display(field, value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Kind::String, |b| {
            write_json_display(b, &format_args!("{value:?}"))
        });
    }
}

/// A timestamp written as RFC 3339 in UTC with exactly six fractional digits
/// (`2026-11-29T10:42:00.123400Z`): fixed width, so timestamps stored or logged as text sort in
/// time order (`time`'s RFC 3339 formatter drops trailing zeros). The JSON lines' `timestamp`
/// uses it; so can anything else that stores time as text.
#[derive(Clone, Copy, Debug)]
pub struct Rfc3339Micros(pub time::OffsetDateTime);

impl Rfc3339Micros {
    /// The current time.
    pub fn now() -> Self {
        Self(time::OffsetDateTime::now_utc())
    }

    /// The timestamp's 27 ASCII bytes, written digit by digit (a tenth of what `write!` with
    /// padded fields costs; this runs for every log line). Years outside 0–9999, which RFC 3339
    /// cannot express, are clamped.
    pub fn to_bytes(&self) -> [u8; 27] {
        fn digits(out: &mut [u8], mut value: u32) {
            for d in out.iter_mut().rev() {
                *d = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        let t = self.0.to_offset(time::UtcOffset::UTC);
        let mut b = *b"0000-00-00T00:00:00.000000Z";
        digits(&mut b[0..4], t.year().clamp(0, 9999) as u32);
        digits(&mut b[5..7], u32::from(u8::from(t.month())));
        digits(&mut b[8..10], u32::from(t.day()));
        digits(&mut b[11..13], u32::from(t.hour()));
        digits(&mut b[14..16], u32::from(t.minute()));
        digits(&mut b[17..19], u32::from(t.second()));
        digits(&mut b[20..26], t.microsecond());
        b
    }
}

impl fmt::Display for Rfc3339Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes();
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

/// `t` as a JSON string ([`Rfc3339Micros`]).
fn write_timestamp(out: &mut Vec<u8>, t: time::OffsetDateTime) {
    out.push(b'"');
    out.extend_from_slice(&Rfc3339Micros(t).to_bytes());
    out.push(b'"');
}

/// `value`'s `Display`, unquoted (numbers).
fn write_display(out: &mut Vec<u8>, value: &dyn fmt::Display) {
    let _ = std::io::Write::write_fmt(out, format_args!("{value}"));
}

/// `value`'s `Display` as a JSON string, escaped by `serde_json` as it is formatted (no
/// intermediate `String`).
fn write_json_display(out: &mut Vec<u8>, value: &dyn fmt::Display) {
    let _ = serde::Serializer::collect_str(&mut serde_json::Serializer::new(out), value);
}

/// `s` as a JSON string: quoted and escaped by `serde_json`. A string with nothing to escape
/// (no control character, `"` or `\\`: the common case) is copied as it is, which is what
/// `serde_json` would write too.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    let _ = serde::Serializer::serialize_str(&mut serde_json::Serializer::new(out), s);
}

/// Bytes (at most 16: trace and span ids) as lowercase hex in a JSON string.
fn write_hex_str(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'"'; 34];
    let bytes = &bytes[..bytes.len().min(16)];
    for (i, b) in bytes.iter().enumerate() {
        text[1 + 2 * i] = HEX[usize::from(b >> 4)];
        text[2 + 2 * i] = HEX[usize::from(b & 0xf)];
    }
    out.extend_from_slice(&text[..2 * bytes.len() + 2]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};
    use std::io;
    use std::sync::{Arc, Mutex};
    use time::format_description::well_known::Rfc3339;
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

    /// The format as it was first written (a `serde_json::Map`, then `to_string`): the
    /// reference the direct writer must match byte for byte.
    struct ReferenceFormat(String);

    impl<S, N> FormatEvent<S, N> for ReferenceFormat
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
            let mut line = Map::new();
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
            line.insert("service".into(), Value::String(self.0.clone()));
            opentelemetry::Context::map_current(|cx| {
                let span = cx.span();
                let sc = span.span_context();
                if sc.is_valid() {
                    line.insert("trace_id".into(), Value::String(sc.trace_id().to_string()));
                    line.insert("span_id".into(), Value::String(sc.span_id().to_string()));
                }
            });
            event.record(&mut ReferenceVisitor(&mut line));
            let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
            writeln!(writer, "{text}")
        }
    }

    struct ReferenceVisitor<'a>(&'a mut Map<String, Value>);

    impl ReferenceVisitor<'_> {
        fn put(&mut self, field: &Field, value: Value) {
            let name = field.name();
            if name == "message" {
                let value = match value {
                    Value::String(_) => value,
                    other => Value::String(other.to_string()),
                };
                self.0.insert("message".into(), value);
            } else if name.starts_with("log.") {
            } else if RESERVED.contains(&name) {
                self.0.insert(format!("field.{name}"), value);
            } else {
                self.0.insert(name.to_owned(), value);
            }
        }
    }

    impl Visit for ReferenceVisitor<'_> {
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

    /// The line with the timestamp's value blanked (two formatters never read the same clock).
    fn without_timestamp(line: &str) -> String {
        let key = "\"timestamp\":\"";
        let start = line.find(key).expect("a timestamp") + key.len();
        let end = start + line[start..].find('"').unwrap();
        format!("{}{}", &line[..start], &line[end..])
    }

    #[test]
    fn the_direct_writer_writes_what_serde_json_wrote() {
        let (new, reference, layer) = (Buf::default(), Buf::default(), Buf::default());
        let (n, r, l) = (new.clone(), reference.clone(), layer.clone());
        let service = "svc \"quoted\" \u{7}";
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(NoSpanFields)
                    .event_format(JsonFormat::new(service))
                    .with_writer(move || n.clone()),
            )
            .with(JsonLayer::new(service, move || l.clone()))
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(ReferenceFormat(service.into()))
                    .with_writer(move || r.clone()),
            );
        let error = std::io::Error::other("disk \"full\"\n");
        let events = || {
            tracing::info!("plain");
            tracing::warn!(
                order_id = "o-1",
                quantity = 2,
                ok = true,
                "order {} placed",
                7
            );
            tracing::error!(error = %error, debug = ?Some("x\ty"), "failed");
            tracing::info!(
                f = 1.5,
                big = 1e300,
                tiny = -2.5e-8,
                nan = f64::NAN,
                inf = f64::NEG_INFINITY,
                i = -9_i64,
                u = u64::MAX,
                wide = i128::MIN,
                uwide = u128::MAX,
                "numbers"
            );
            tracing::info!(message = 5);
            tracing::info!(message = 2.25);
            tracing::info!(message = false);
            tracing::info!(message = "explicit");
            tracing::info!(
                service = "spoof",
                level = 3,
                trace_id = "x",
                span_id = 1,
                "reserved"
            );
            tracing::info!(
                zzz = 1,
                aaa = "\u{0}\u{1f}\u{7f}\\/\u{8}\u{c}\r é ✓ 😀",
                "field.level" = "two ways to one key",
                level = "second",
                "ordering"
            );
            tracing::info!(log.file = "x", log.line = 3, "bridged");
            tracing::info!(target: "custom::target", "custom target");
            let e: &(dyn std::error::Error + 'static) = &error;
            tracing::info!(e, "error value");
        };
        tracing::subscriber::with_default(subscriber, || {
            events();
            let sc = opentelemetry::trace::SpanContext::new(
                opentelemetry::trace::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736")
                    .unwrap(),
                opentelemetry::trace::SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                opentelemetry::trace::TraceFlags::SAMPLED,
                true,
                Default::default(),
            );
            let _cx = opentelemetry::Context::new()
                .with_remote_span_context(sc)
                .attach();
            events();
        });
        let new = String::from_utf8(new.0.lock().unwrap().clone()).unwrap();
        let reference = String::from_utf8(reference.0.lock().unwrap().clone()).unwrap();
        let layer = String::from_utf8(layer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(new.lines().count(), 26);
        assert_eq!(
            layer.lines().map(without_timestamp).collect::<Vec<_>>(),
            new.lines().map(without_timestamp).collect::<Vec<_>>(),
            "JsonLayer writes the lines the fmt layer with JsonFormat writes"
        );
        assert!(new.contains("\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\""));
        for (n, r) in new.lines().zip(reference.lines()) {
            assert_eq!(without_timestamp(n), without_timestamp(r));
            let ts = serde_json::from_str::<Value>(n).unwrap()["timestamp"].clone();
            time::OffsetDateTime::parse(ts.as_str().unwrap(), &Rfc3339).expect("RFC 3339");
        }
        assert_eq!(new.lines().count(), reference.lines().count());
    }

    #[test]
    fn timestamps_always_have_six_fractional_digits() {
        // 2026-11-29T19:56:00.6447Z: RFC 3339 formatters drop the trailing zeros.
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(1_795_982_160_644_700_000).unwrap();
        let mut out = Vec::new();
        write_timestamp(&mut out, t);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "\"2026-11-29T19:56:00.644700Z\"");
        let parsed = time::OffsetDateTime::parse(text.trim_matches('"'), &Rfc3339).unwrap();
        assert_eq!(parsed, t);
        let mut whole = Vec::new();
        write_timestamp(&mut whole, t.replace_nanosecond(0).unwrap());
        assert_eq!(whole, b"\"2026-11-29T19:56:00.000000Z\"");
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut all: String = (0u8..=0x7f).map(char::from).collect();
        all.push_str("é✓😀\u{2028}\u{fffd}");
        for s in [all.as_str(), "", "plain", "\"", "\\", "a\u{0}b"] {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }
}
