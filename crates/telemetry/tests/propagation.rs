//! Table-driven tests for strict W3C Trace Context (Level 2) and Baggage
//! propagation. Every row names the input it covers.
//!
//! The propagators are used directly; only `convenience_functions_use_the_global_propagator`
//! touches the global propagator.

use std::collections::BTreeMap;

use opentelemetry::baggage::{BaggageExt, BaggageMetadata};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue, StringValue};
use telemetry::propagation::{
    HeaderExtractor, HeaderInjector, MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS,
    MAX_TRACESTATE_MEMBERS, MapExtractor, MapInjector, StrictBaggagePropagator,
    StrictTraceContextPropagator, TraceparentError, TracestateError, UnknownPropagator,
    default_propagator, parse_traceparent, parse_tracestate, propagator_from_env_value,
};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const VALID_TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A carrier that holds header values exactly as given (any bytes, any case,
/// repeated names) and matches names without regard to case.
#[derive(Debug, Default)]
struct RawCarrier(Vec<(String, String)>);

impl RawCarrier {
    fn new(pairs: &[(&str, &str)]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn with(pairs: Vec<(&str, String)>) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}

impl Extractor for RawCarrier {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

/// Records every `set` call in order.
#[derive(Debug, Default)]
struct RecordingInjector(Vec<(String, String)>);

impl Injector for RecordingInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

impl RecordingInjector {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A remote span context unrelated to any test input; extraction of invalid
/// input must hand it back untouched.
fn sentinel_span_context() -> SpanContext {
    SpanContext::new(
        TraceId::from(0x1111_u128),
        SpanId::from(0x2222_u64),
        TraceFlags::SAMPLED,
        true,
        TraceState::from_key_value([("sentinel", "1")]).unwrap(),
    )
}

fn sentinel() -> Context {
    Context::new()
        .with_remote_span_context(sentinel_span_context())
        .with_baggage([KeyValue::new("sentinel", "kept")])
}

fn extract_trace(carrier: &RawCarrier) -> Context {
    StrictTraceContextPropagator::new().extract_with_context(&sentinel(), carrier)
}

fn assert_unchanged(cx: &Context, row: &str) {
    assert_eq!(
        cx.span().span_context(),
        &sentinel_span_context(),
        "{row}: the given context must be returned unchanged"
    );
    assert_eq!(
        cx.baggage().get("sentinel").map(StringValue::as_str),
        Some("kept"),
        "{row}: the rest of the context must be kept"
    );
}

fn tp(version: &str, trace_id: &str, parent_id: &str, flags: &str) -> String {
    format!("{version}-{trace_id}-{parent_id}-{flags}")
}

// ---------------------------------------------------------------------------
// traceparent
// ---------------------------------------------------------------------------

#[test]
fn traceparent_invalid_values_start_a_new_trace() {
    let upper_trace = TRACE_ID.to_ascii_uppercase();
    let upper_parent = PARENT_ID.to_ascii_uppercase();
    let rows: Vec<(&str, String, TraceparentError)> = vec![
        ("empty value", String::new(), TraceparentError::Length),
        ("only whitespace", "   ".into(), TraceparentError::Length),
        (
            "version 1 char",
            tp("0", TRACE_ID, PARENT_ID, "01"),
            TraceparentError::Length,
        ),
        (
            "version 3 chars",
            tp("000", TRACE_ID, PARENT_ID, "01"),
            TraceparentError::Length,
        ),
        (
            "trace-id 31 chars",
            tp("00", &TRACE_ID[..31], PARENT_ID, "01"),
            TraceparentError::Length,
        ),
        (
            "trace-id 33 chars",
            tp("00", &format!("{TRACE_ID}a"), PARENT_ID, "01"),
            TraceparentError::Length,
        ),
        (
            "trace-id empty",
            tp("00", "", PARENT_ID, "01"),
            TraceparentError::Length,
        ),
        (
            "parent-id 15 chars",
            tp("00", TRACE_ID, &PARENT_ID[..15], "01"),
            TraceparentError::Length,
        ),
        (
            "parent-id 17 chars",
            tp("00", TRACE_ID, &format!("{PARENT_ID}a"), "01"),
            TraceparentError::Length,
        ),
        (
            "flags 1 char",
            tp("00", TRACE_ID, PARENT_ID, "1"),
            TraceparentError::Length,
        ),
        (
            "flags 3 chars",
            tp("00", TRACE_ID, PARENT_ID, "001"),
            TraceparentError::Length,
        ),
        (
            "flags missing",
            format!("00-{TRACE_ID}-{PARENT_ID}"),
            TraceparentError::Length,
        ),
        (
            "version 00 with an extra field",
            format!("{VALID_TP}-extra"),
            TraceparentError::Length,
        ),
        (
            "version 00 with a trailing dash",
            format!("{VALID_TP}-"),
            TraceparentError::Length,
        ),
        (
            "version 00 with a trailing space",
            format!("{VALID_TP} "),
            TraceparentError::Length,
        ),
        (
            "leading space",
            format!(" {VALID_TP}"),
            TraceparentError::Version,
        ),
        (
            "uppercase version",
            tp("0A", TRACE_ID, PARENT_ID, "01"),
            TraceparentError::Version,
        ),
        (
            "non-hex version",
            tp("0x", TRACE_ID, PARENT_ID, "01"),
            TraceparentError::Version,
        ),
        (
            "leading + in version",
            tp("+0", TRACE_ID, PARENT_ID, "01"),
            TraceparentError::Version,
        ),
        (
            "version ff",
            tp("ff", TRACE_ID, PARENT_ID, "01"),
            TraceparentError::ForbiddenVersion,
        ),
        (
            "uppercase trace-id",
            tp("00", &upper_trace, PARENT_ID, "01"),
            TraceparentError::TraceId,
        ),
        (
            "non-hex trace-id",
            tp("00", "4bf92f3577b34da6a3ce929d0e0e473g", PARENT_ID, "01"),
            TraceparentError::TraceId,
        ),
        (
            "leading + in trace-id",
            tp("00", "+bf92f3577b34da6a3ce929d0e0e4736", PARENT_ID, "01"),
            TraceparentError::TraceId,
        ),
        (
            "leading - in trace-id",
            tp("00", "-bf92f3577b34da6a3ce929d0e0e4736", PARENT_ID, "01"),
            TraceparentError::TraceId,
        ),
        (
            "non-ASCII in trace-id",
            tp("00", "4bf92f3577b34da6a3ce929d0e0e47é", PARENT_ID, "01"),
            TraceparentError::TraceId,
        ),
        (
            "all-zero trace-id",
            tp("00", &"0".repeat(32), PARENT_ID, "01"),
            TraceparentError::ZeroTraceId,
        ),
        (
            "uppercase parent-id",
            tp("00", TRACE_ID, &upper_parent, "01"),
            TraceparentError::ParentId,
        ),
        (
            "non-hex parent-id",
            tp("00", TRACE_ID, "00f067aa0ba902bz", "01"),
            TraceparentError::ParentId,
        ),
        (
            "leading + in parent-id",
            tp("00", TRACE_ID, "+0f067aa0ba902b7", "01"),
            TraceparentError::ParentId,
        ),
        (
            "all-zero parent-id",
            tp("00", TRACE_ID, &"0".repeat(16), "01"),
            TraceparentError::ZeroParentId,
        ),
        (
            "uppercase flags",
            tp("00", TRACE_ID, PARENT_ID, "0A"),
            TraceparentError::Flags,
        ),
        (
            "non-hex flags",
            tp("00", TRACE_ID, PARENT_ID, "0g"),
            TraceparentError::Flags,
        ),
        (
            "leading + in flags",
            tp("00", TRACE_ID, PARENT_ID, "+1"),
            TraceparentError::Flags,
        ),
        (
            "underscore instead of first dash",
            format!("00_{TRACE_ID}-{PARENT_ID}-01"),
            TraceparentError::Delimiter,
        ),
        (
            "no dash between the ids",
            format!("00-{TRACE_ID}x{PARENT_ID}-01"),
            TraceparentError::Delimiter,
        ),
        (
            "version 01 longer without a dash",
            format!("{}x", tp("01", TRACE_ID, PARENT_ID, "01")),
            TraceparentError::TrailingData,
        ),
        (
            "version cc longer without a dash",
            format!("{}00", tp("cc", TRACE_ID, PARENT_ID, "01")),
            TraceparentError::TrailingData,
        ),
        (
            "version cc shorter than 55",
            tp("cc", TRACE_ID, PARENT_ID, "0"),
            TraceparentError::Length,
        ),
        (
            "version 01 shorter than 55",
            tp("01", TRACE_ID, &PARENT_ID[..15], "01"),
            TraceparentError::Length,
        ),
        (
            "two values folded with a comma",
            format!("{VALID_TP},{VALID_TP}"),
            TraceparentError::MultipleValues,
        ),
        (
            "comma in a later-version tail",
            format!("{}-a,b", tp("cc", TRACE_ID, PARENT_ID, "01")),
            TraceparentError::MultipleValues,
        ),
    ];

    for (row, value, expected) in rows {
        assert_eq!(parse_traceparent(&value), Err(expected), "{row}: {value:?}");
        // Even with a valid tracestate next to it, nothing is extracted.
        let carrier = RawCarrier::new(&[("traceparent", &value), ("tracestate", "a=1")]);
        assert_unchanged(&extract_trace(&carrier), row);
    }
}

#[test]
fn traceparent_valid_values() {
    // (row, value, expected flags after masking)
    let rows: Vec<(&str, String, u8)> = vec![
        ("version 00 sampled", VALID_TP.to_owned(), 0x01),
        (
            "version 00 not sampled",
            tp("00", TRACE_ID, PARENT_ID, "00"),
            0x00,
        ),
        (
            "version 00 random flag only",
            tp("00", TRACE_ID, PARENT_ID, "02"),
            0x02,
        ),
        (
            "version 00 sampled and random",
            tp("00", TRACE_ID, PARENT_ID, "03"),
            0x03,
        ),
        (
            "other flag bits dropped (ff)",
            tp("00", TRACE_ID, PARENT_ID, "ff"),
            0x03,
        ),
        (
            "other flag bits dropped (fc)",
            tp("00", TRACE_ID, PARENT_ID, "fc"),
            0x00,
        ),
        (
            "other flag bits dropped (09)",
            tp("00", TRACE_ID, PARENT_ID, "09"),
            0x01,
        ),
        (
            "version 01 exactly 55 chars",
            tp("01", TRACE_ID, PARENT_ID, "01"),
            0x01,
        ),
        (
            "version 01 with an extra field",
            format!(
                "{}-what-the-future-holds",
                tp("01", TRACE_ID, PARENT_ID, "01")
            ),
            0x01,
        ),
        (
            "version cc with an extra field",
            format!("{}-00", tp("cc", TRACE_ID, PARENT_ID, "03")),
            0x03,
        ),
        (
            "version cc with a bare trailing dash",
            format!("{}-", tp("cc", TRACE_ID, PARENT_ID, "01")),
            0x01,
        ),
        (
            "version fe (highest allowed)",
            tp("fe", TRACE_ID, PARENT_ID, "01"),
            0x01,
        ),
    ];

    for (row, value, flags) in rows {
        let parsed = parse_traceparent(&value).unwrap_or_else(|e| panic!("{row}: {e}"));
        assert_eq!(parsed.trace_flags, TraceFlags::new(flags), "{row}");

        let cx = extract_trace(&RawCarrier::new(&[("traceparent", &value)]));
        let sc = cx.span().span_context().clone();
        assert_eq!(sc.trace_id().to_string(), TRACE_ID, "{row}");
        assert_eq!(sc.span_id().to_string(), PARENT_ID, "{row}");
        assert_eq!(sc.trace_flags().to_u8(), flags, "{row}");
        assert!(sc.is_remote(), "{row}: extracted parent must be remote");
        assert_eq!(
            sc.trace_state(),
            &TraceState::NONE,
            "{row}: no tracestate sent"
        );
        // The rest of the context is kept.
        assert_eq!(
            cx.baggage().get("sentinel").map(StringValue::as_str),
            Some("kept"),
            "{row}"
        );
    }
}

#[test]
fn traceparent_repeated_header_is_invalid() {
    let other = tp(
        "00",
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
        "01",
    );
    let rows: Vec<(&str, RawCarrier)> = vec![
        (
            "two different traceparent headers",
            RawCarrier::new(&[("traceparent", VALID_TP), ("traceparent", &other)]),
        ),
        (
            "the same traceparent twice",
            RawCarrier::new(&[("traceparent", VALID_TP), ("traceparent", VALID_TP)]),
        ),
        (
            "a valid and an invalid traceparent",
            RawCarrier::new(&[("traceparent", VALID_TP), ("traceparent", "garbage")]),
        ),
        (
            "two spellings of the name",
            RawCarrier::new(&[("traceparent", VALID_TP), ("Traceparent", VALID_TP)]),
        ),
        (
            "one value that folds two with a comma",
            RawCarrier::with(vec![("traceparent", format!("{VALID_TP}, {other}"))]),
        ),
    ];
    for (row, carrier) in rows {
        assert_unchanged(&extract_trace(&carrier), row);
    }

    // Through real HTTP headers as well.
    let mut headers = http::HeaderMap::new();
    headers.append("traceparent", VALID_TP.parse().unwrap());
    headers.append("traceparent", other.parse().unwrap());
    let cx = StrictTraceContextPropagator::new()
        .extract_with_context(&sentinel(), &HeaderExtractor(&headers));
    assert_unchanged(&cx, "two HTTP traceparent headers");
}

#[test]
fn traceparent_missing_leaves_context_unchanged() {
    let rows: Vec<(&str, RawCarrier)> = vec![
        ("no headers at all", RawCarrier::default()),
        ("only tracestate", RawCarrier::new(&[("tracestate", "a=1")])),
        (
            "unrelated header",
            RawCarrier::new(&[("x-trace", VALID_TP)]),
        ),
    ];
    for (row, carrier) in rows {
        assert_unchanged(&extract_trace(&carrier), row);
    }
}

#[test]
fn traceparent_header_name_is_case_insensitive_in_case_insensitive_carriers() {
    let cx = extract_trace(&RawCarrier::new(&[("TraceParent", VALID_TP)]));
    assert_eq!(cx.span().span_context().trace_id().to_string(), TRACE_ID);
}

#[test]
fn trace_flags_survive_extract_then_inject() {
    let propagator = StrictTraceContextPropagator::new();
    // (row, incoming flags, outgoing flags)
    let rows = [
        ("random flag kept", "02", "02"),
        ("sampled and random kept", "03", "03"),
        ("sampled kept", "01", "01"),
        ("nothing set", "00", "00"),
        ("unknown bits dropped", "ff", "03"),
        ("unknown bits dropped, random kept", "fe", "02"),
    ];
    for (row, incoming, outgoing) in rows {
        let carrier = RawCarrier::with(vec![(
            "traceparent",
            tp("00", TRACE_ID, PARENT_ID, incoming),
        )]);
        let cx = propagator.extract_with_context(&Context::new(), &carrier);
        let mut injector = RecordingInjector::default();
        propagator.inject_context(&cx, &mut injector);
        assert_eq!(
            injector.get("traceparent"),
            Some(tp("00", TRACE_ID, PARENT_ID, outgoing).as_str()),
            "{row}"
        );
        assert_eq!(
            injector.get("tracestate"),
            None,
            "{row}: empty tracestate not sent"
        );
    }
}

#[test]
fn later_versions_are_reinjected_as_version_00() {
    let propagator = StrictTraceContextPropagator::new();
    let incoming = format!("{}-future", tp("cc", TRACE_ID, PARENT_ID, "03"));
    let cx = propagator.extract_with_context(
        &Context::new(),
        &RawCarrier::new(&[("traceparent", &incoming)]),
    );
    let mut injector = RecordingInjector::default();
    propagator.inject_context(&cx, &mut injector);
    assert_eq!(
        injector.get("traceparent"),
        Some(tp("00", TRACE_ID, PARENT_ID, "03").as_str())
    );
}

#[test]
fn inject_trace_context() {
    let propagator = StrictTraceContextPropagator::new();
    let trace_id = TraceId::from_hex(TRACE_ID).unwrap();
    let span_id = SpanId::from_hex(PARENT_ID).unwrap();
    let state =
        TraceState::from_key_value([("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")])
            .unwrap();

    // (row, span context, expected traceparent, expected tracestate)
    let rows: Vec<(&str, SpanContext, Option<String>, Option<&str>)> = vec![
        (
            "valid, sampled, with tracestate",
            SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, false, state.clone()),
            Some(VALID_TP.to_owned()),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        ),
        (
            "flags beyond 0x03 are masked",
            SpanContext::new(
                trace_id,
                span_id,
                TraceFlags::new(0xff),
                false,
                TraceState::NONE,
            ),
            Some(tp("00", TRACE_ID, PARENT_ID, "03")),
            None,
        ),
        (
            "invalid trace-id injects nothing",
            SpanContext::new(
                TraceId::INVALID,
                span_id,
                TraceFlags::SAMPLED,
                false,
                state.clone(),
            ),
            None,
            None,
        ),
        (
            "invalid span-id injects nothing",
            SpanContext::new(trace_id, SpanId::INVALID, TraceFlags::SAMPLED, false, state),
            None,
            None,
        ),
    ];
    for (row, sc, traceparent, tracestate) in rows {
        let cx = Context::new().with_remote_span_context(sc);
        let mut injector = RecordingInjector::default();
        propagator.inject_context(&cx, &mut injector);
        assert_eq!(injector.get("traceparent"), traceparent.as_deref(), "{row}");
        assert_eq!(injector.get("tracestate"), tracestate, "{row}");
    }

    // A context without any span injects nothing.
    let mut injector = RecordingInjector::default();
    propagator.inject_context(&Context::new(), &mut injector);
    assert!(injector.0.is_empty(), "empty context injects nothing");
}

#[test]
fn trace_context_fields() {
    let propagator = StrictTraceContextPropagator::new();
    let mut fields: Vec<&str> = propagator.fields().collect();
    fields.sort_unstable();
    assert_eq!(fields, ["traceparent", "tracestate"]);
}

// ---------------------------------------------------------------------------
// tracestate
// ---------------------------------------------------------------------------

fn members(count: usize) -> String {
    (0..count)
        .map(|i| format!("k{i}=v{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Extracts with a valid traceparent plus the given tracestate values and
/// returns the resulting trace state header ("" when empty).
fn extract_tracestate(values: &[String]) -> (SpanContext, String) {
    let mut pairs = vec![("traceparent", VALID_TP.to_owned())];
    pairs.extend(values.iter().map(|v| ("tracestate", v.clone())));
    let cx = extract_trace(&RawCarrier::with(pairs));
    let sc = cx.span().span_context().clone();
    let header = sc.trace_state().header();
    (sc, header)
}

#[test]
fn tracestate_kept() {
    let long_value = "x".repeat(250);
    let three_long = format!("a={long_value},b={long_value},c={long_value}");
    let key_256 = format!("a{}", "b".repeat(255));
    let tenant_241 = format!("{}@sys", "t".repeat(241));
    let tenant_242 = format!("{}@v", "t".repeat(242));
    let key_256_with_at = format!("{}@s", "t".repeat(254));
    let value_256 = "v".repeat(256);

    // (row, header values, expected trace state header)
    let rows: Vec<(&str, Vec<String>, String)> = vec![
        ("single member", vec!["a=1".into()], "a=1".into()),
        (
            "order kept",
            vec!["z=1,a=2,m=3".into()],
            "z=1,a=2,m=3".into(),
        ),
        (
            "spaces and tabs around members",
            vec![" a=1 ,\tb=2\t, c=3".into()],
            "a=1,b=2,c=3".into(),
        ),
        (
            "empty members skipped",
            vec![",a=1,,b=2,".into()],
            "a=1,b=2".into(),
        ),
        (
            "only whitespace members skipped",
            vec!["a=1, \t ,b=2".into()],
            "a=1,b=2".into(),
        ),
        (
            "multiple headers combined in order",
            vec!["a=1".into(), "b=2,c=3".into()],
            "a=1,b=2,c=3".into(),
        ),
        (
            "empty header among several",
            vec!["a=1".into(), String::new(), "b=2".into()],
            "a=1,b=2".into(),
        ),
        (
            "all key characters",
            vec!["a0_-*/@=1".into()],
            "a0_-*/@=1".into(),
        ),
        (
            "key starting with a digit: 1special",
            vec!["1special=1".into()],
            "1special=1".into(),
        ),
        (
            "key ending in '@': foo@",
            vec!["foo@=1,bar=2".into()],
            "foo@=1,bar=2".into(),
        ),
        (
            "digit right after '@': t@0s",
            vec!["t@0s=1".into()],
            "t@0s=1".into(),
        ),
        (
            "242 characters before '@'",
            vec!["foo=1".into(), format!("{tenant_242}=1")],
            format!("foo=1,{tenant_242}=1"),
        ),
        (
            "256-char key with '@'",
            vec![format!("{key_256_with_at}=v")],
            format!("{key_256_with_at}=v"),
        ),
        (
            "duplicate key: first kept",
            vec!["a=1,b=2,a=3".into()],
            "a=1,b=2".into(),
        ),
        (
            "duplicate key and value: foo=1,foo=1",
            vec!["foo=1,foo=1".into()],
            "foo=1".into(),
        ),
        (
            "duplicate key across headers: first kept",
            vec!["foo=1".into(), "foo=2".into()],
            "foo=1".into(),
        ),
        (
            "32 members counting a duplicate",
            vec![format!("{},k0=again", members(31))],
            members(31),
        ),
        (
            "multi-tenant key",
            vec!["tenant@sys=v".into()],
            "tenant@sys=v".into(),
        ),
        (
            "multi-tenant key with digit tenant",
            vec!["0tenant@s1=v".into()],
            "0tenant@s1=v".into(),
        ),
        (
            "13-char system id",
            vec!["t@abcdefghijklm=v".into()],
            "t@abcdefghijklm=v".into(),
        ),
        (
            "241-char tenant id",
            vec![format!("{tenant_241}=v")],
            format!("{tenant_241}=v"),
        ),
        (
            "256-char key",
            vec![format!("{key_256}=v")],
            format!("{key_256}=v"),
        ),
        (
            "256-char value",
            vec![format!("a={value_256}")],
            format!("a={value_256}"),
        ),
        (
            "value with inner and leading space",
            vec!["a= x y".into()],
            "a= x y".into(),
        ),
        (
            "value with all punctuation allowed",
            vec!["a=!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~".into()],
            "a=!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~".into(),
        ),
        ("32 members", vec![members(32)], members(32)),
        (
            "32 members split over two headers",
            vec![
                members(16),
                (16..32)
                    .map(|i| format!("k{i}=v{i}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ],
            members(32),
        ),
        (
            "more than 512 characters kept whole",
            vec![three_long.clone()],
            three_long,
        ),
    ];

    for (row, values, expected) in rows {
        let (sc, header) = extract_tracestate(&values);
        assert_eq!(sc.trace_id().to_string(), TRACE_ID, "{row}");
        assert_eq!(header, expected, "{row}");
    }
}

#[test]
fn tracestate_dropped_but_traceparent_kept() {
    let key_257 = format!("a{}", "b".repeat(256));
    let key_257_with_at = format!("{}@s", "t".repeat(255));
    let value_257 = "v".repeat(257);

    // (row, header values)
    let rows: Vec<(&str, Vec<String>)> = vec![
        ("33 members", vec![members(33)]),
        (
            "33 members over two headers",
            vec![members(32), "extra=1".into()],
        ),
        (
            "33 members counting a duplicate",
            vec![format!("{},k0=again", members(32))],
        ),
        ("member without '='", vec!["a=1,b".into()]),
        ("uppercase key", vec!["A=1".into()]),
        ("uppercase after '@'", vec!["t@S=1".into()]),
        ("key starting with '_'", vec!["_a=1".into()]),
        ("key starting with '-'", vec!["-a=1".into()]),
        ("key with '.'", vec!["a.b=1".into()]),
        ("empty key", vec!["=1".into()]),
        ("space before '='", vec!["a =1".into()]),
        ("257-char key", vec![format!("{key_257}=1")]),
        (
            "257-char key with '@'",
            vec![format!("{key_257_with_at}=1")],
        ),
        ("key starting with '@': @foo", vec!["@foo=1,bar=2".into()]),
        ("key that is only '@'", vec!["@=1".into()]),
        ("invalid key after a duplicate", vec!["a=1,a=2,B=3".into()]),
        ("empty value", vec!["a=".into()]),
        ("value containing '='", vec!["a=b=c".into()]),
        ("257-char value", vec![format!("a={value_257}")]),
        ("value with a control character", vec!["a=b\u{1}c".into()]),
        ("value with DEL", vec!["a=b\u{7f}".into()]),
        ("value with non-ASCII", vec!["a=caf\u{e9}".into()]),
        ("value with a tab inside", vec!["a=b\tc".into()]),
        ("one bad member among good ones", vec!["a=1,B=2,c=3".into()]),
    ];

    for (row, values) in rows {
        let (sc, header) = extract_tracestate(&values);
        assert_eq!(
            sc.trace_id().to_string(),
            TRACE_ID,
            "{row}: traceparent must survive"
        );
        assert_eq!(
            sc.span_id().to_string(),
            PARENT_ID,
            "{row}: traceparent must survive"
        );
        assert!(sc.is_sampled(), "{row}: flags must survive");
        assert_eq!(
            sc.trace_state(),
            &TraceState::NONE,
            "{row}: tracestate must be empty"
        );
        assert_eq!(header, "", "{row}");
        assert!(parse_tracestate(&values.join(",")).is_err(), "{row}");
    }
}

#[test]
fn tracestate_errors_name_the_rule() {
    let rows: Vec<(&str, String, TracestateError)> = vec![
        (
            "33 members",
            members(MAX_TRACESTATE_MEMBERS + 1),
            TracestateError::TooManyMembers,
        ),
        ("no '='", "a".into(), TracestateError::Member("a".into())),
        ("bad key", "A=1".into(), TracestateError::Key("A".into())),
        (
            "key starting with '@'",
            "bar=2,@foo=1".into(),
            TracestateError::Key("@foo".into()),
        ),
        (
            "bad value",
            "a=b=c".into(),
            TracestateError::Value("b=c".into()),
        ),
    ];
    for (row, value, expected) in rows {
        assert_eq!(parse_tracestate(&value).unwrap_err(), expected, "{row}");
    }
}

#[test]
fn tracestate_duplicate_keys_are_not_errors() {
    for value in ["a=1,a=2", "a=1,a=1", "a=1,b=2,a=3"] {
        let state = parse_tracestate(value).unwrap_or_else(|err| panic!("{value}: {err}"));
        assert_eq!(state.get("a"), Some("1"), "{value}");
    }
}

#[test]
fn tracestate_members_refused_by_opentelemetry_trace_state_dropped_alone() {
    // These keys follow the W3C Level 2 grammar, but opentelemetry 0.33's
    // `TraceState` rejects keys with more than one '@', more than 13
    // characters after the '@', or something other than a lowercase letter
    // or digit right after it. Those members cannot be stored, so only they
    // are dropped; the other members and the traceparent are kept.
    let t241_v14 = format!("{}@{}", "t".repeat(241), "v".repeat(14));

    // (row, header values, expected trace state header)
    let rows: Vec<(&str, Vec<String>, &str)> = vec![
        ("foo@@bar", vec!["foo@@bar=1,bar=2".into()], "bar=2"),
        ("foo@bar@baz", vec!["foo@bar@baz=1,bar=2".into()], "bar=2"),
        (
            "14 characters after '@': t@abcdefghijklmn",
            vec!["a=1,t@abcdefghijklmn=v,b=2".into()],
            "a=1,b=2",
        ),
        (
            "15 characters after '@': t@abcdefghijklmno",
            vec!["foo=1".into(), "t@abcdefghijklmno=1".into()],
            "foo=1",
        ),
        (
            "256-char key with 14 characters after '@'",
            vec!["foo=1".into(), format!("{t241_v14}=1")],
            "foo=1",
        ),
        (
            "'_' right after '@': t@_x",
            vec!["t@_x=1,a=2".into()],
            "a=2",
        ),
        (
            "refused member, then the same key again",
            vec!["t@s@x=1,a=2,t@s@x=3".into()],
            "a=2",
        ),
        ("only refused members", vec!["t@s@x=1,u@@v=2".into()], ""),
    ];

    for (row, values, expected) in rows {
        let parsed = parse_tracestate(&values.join(","))
            .unwrap_or_else(|err| panic!("{row}: not a syntax error: {err}"));
        assert_eq!(parsed.header(), expected, "{row}");
        let (sc, header) = extract_tracestate(&values);
        assert_eq!(sc.trace_id().to_string(), TRACE_ID, "{row}");
        assert_eq!(sc.span_id().to_string(), PARENT_ID, "{row}");
        assert_eq!(header, expected, "{row}");
    }
}

#[test]
fn tracestate_ignored_when_traceparent_invalid() {
    let rows = [
        ("uppercase traceparent", VALID_TP.to_ascii_uppercase()),
        ("garbage traceparent", "not-a-traceparent".to_owned()),
        (
            "all-zero trace-id",
            tp("00", &"0".repeat(32), PARENT_ID, "01"),
        ),
    ];
    for (row, traceparent) in rows {
        let carrier = RawCarrier::with(vec![
            ("traceparent", traceparent),
            ("tracestate", "a=1,b=2".to_owned()),
        ]);
        let cx = extract_trace(&carrier);
        assert_unchanged(&cx, row);
        assert_eq!(
            cx.span().span_context().trace_state().get("a"),
            None,
            "{row}"
        );
    }
}

#[test]
fn tracestate_round_trip() {
    let propagator = StrictTraceContextPropagator::new();
    let incoming = "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7,tenant@sys=x y";
    let cx = propagator.extract_with_context(
        &Context::new(),
        &RawCarrier::new(&[("traceparent", VALID_TP), ("tracestate", incoming)]),
    );
    let mut injector = RecordingInjector::default();
    propagator.inject_context(&cx, &mut injector);
    assert_eq!(injector.get("traceparent"), Some(VALID_TP));
    assert_eq!(
        injector.get("tracestate"),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,tenant@sys=x y")
    );
}

// ---------------------------------------------------------------------------
// baggage
// ---------------------------------------------------------------------------

/// (key, value, metadata), sorted by key.
type Entries = Vec<(String, String, String)>;

fn entries_of(cx: &Context) -> Entries {
    let mut entries: Entries = cx
        .baggage()
        .iter()
        .map(|(k, (v, m))| (k.to_string(), v.as_str().to_owned(), m.as_str().to_owned()))
        .collect();
    entries.sort();
    entries
}

fn extract_baggage(values: &[String]) -> Entries {
    let carrier = RawCarrier::with(values.iter().map(|v| ("baggage", v.clone())).collect());
    entries_of(&StrictBaggagePropagator::new().extract_with_context(&Context::new(), &carrier))
}

fn e(key: &str, value: &str, metadata: &str) -> (String, String, String) {
    (key.to_owned(), value.to_owned(), metadata.to_owned())
}

#[test]
fn baggage_members() {
    // (row, header values, expected entries sorted by key)
    let rows: Vec<(&str, Vec<&str>, Entries)> = vec![
        ("single member", vec!["k=v"], vec![e("k", "v", "")]),
        (
            "whitespace around keys, values and members",
            vec!["  k1 =  v1 ,\tk2\t=\tv2 "],
            vec![e("k1", "v1", ""), e("k2", "v2", "")],
        ),
        ("empty value", vec!["k="], vec![e("k", "", "")]),
        (
            "value containing '='",
            vec!["k=a=b"],
            vec![e("k", "a=b", "")],
        ),
        (
            "all token characters in the key",
            vec!["!#$%&'*+-.^_`|~Az9=v"],
            vec![e("!#$%&'*+-.^_`|~Az9", "v", "")],
        ),
        (
            "percent-decoding",
            vec!["k=hello%20world%2C%3B%25%3d"],
            vec![e("k", "hello world,;%=", "")],
        ),
        (
            "percent-decoded UTF-8",
            vec!["k=caf%C3%A9%20%E2%9C%93"],
            vec![e("k", "caf\u{e9} \u{2713}", "")],
        ),
        (
            "percent-decoded invalid UTF-8 becomes U+FFFD",
            vec!["k=a%FFb%C3"],
            vec![e("k", "a\u{fffd}b\u{fffd}", "")],
        ),
        (
            "key is not percent-decoded",
            vec!["a%41=v"],
            vec![e("a%41", "v", "")],
        ),
        (
            "property without value",
            vec!["k=v;p1"],
            vec![e("k", "v", "p1")],
        ),
        (
            "properties with and without values",
            vec!["k=v;p1;p2=x;p3"],
            vec![e("k", "v", "p1;p2=x;p3")],
        ),
        (
            "whitespace around properties removed",
            vec!["k=v ; p1 ;\tp2 = x "],
            vec![e("k", "v", "p1;p2=x")],
        ),
        (
            "property values are not decoded",
            vec!["k=v;p=a%2Cb"],
            vec![e("k", "v", "p=a%2Cb")],
        ),
        (
            "multiple headers combined",
            vec!["a=1", "b=2,c=3"],
            vec![e("a", "1", ""), e("b", "2", ""), e("c", "3", "")],
        ),
        (
            "empty members ignored",
            vec![",a=1,,b=2,", ""],
            vec![e("a", "1", ""), e("b", "2", "")],
        ),
        (
            "duplicate key: the later value wins",
            vec!["k=1,k=2"],
            vec![e("k", "2", "")],
        ),
        (
            "duplicate key across headers",
            vec!["k=1", "k=2"],
            vec![e("k", "2", "")],
        ),
    ];
    for (row, values, expected) in rows {
        let values: Vec<String> = values.into_iter().map(str::to_owned).collect();
        assert_eq!(extract_baggage(&values), expected, "{row}");
    }
}

#[test]
fn baggage_invalid_member_dropped_others_kept() {
    // Each row is `<bad member>`; it is sent between two good members.
    let rows: Vec<(&str, &str)> = vec![
        ("member without '='", "novalue"),
        ("empty key", "=v"),
        ("key with '('", "k(1)=v"),
        ("key with '/'", "a/b=v"),
        ("key with '@'", "a@b=v"),
        ("key with non-ASCII", "cl\u{e9}=v"),
        ("space inside the key", "a b=v"),
        ("space inside the value", "k=a b"),
        ("double quote in the value", "k=a\"b"),
        ("backslash in the value", "k=a\\b"),
        ("control character in the value", "k=a\u{1}b"),
        ("DEL in the value", "k=a\u{7f}"),
        ("raw non-ASCII in the value", "k=caf\u{e9}"),
        ("'%' not followed by hex", "k=%zz"),
        ("'%' followed by one hex digit", "k=%4"),
        ("'%' at the end", "k=abc%"),
        ("empty property", "k=v;"),
        ("empty property between two", "k=v;p1;;p2"),
        ("property key not a token", "k=v;p(=1"),
        ("property value with a space", "k=v;p=a b"),
        ("property without a key", "k=v;=x"),
    ];
    for (row, bad) in rows {
        let header = format!("first=1,{bad},last=2");
        let got = extract_baggage(&[header]);
        assert_eq!(
            got,
            vec![e("first", "1", ""), e("last", "2", "")],
            "{row}: {bad:?}"
        );
    }
}

#[test]
fn baggage_all_invalid_leaves_context_unchanged() {
    let carrier = RawCarrier::new(&[("baggage", "bad member,k=%zz")]);
    let cx = StrictBaggagePropagator::new().extract_with_context(&sentinel(), &carrier);
    assert_unchanged(&cx, "only invalid baggage members");

    let cx =
        StrictBaggagePropagator::new().extract_with_context(&sentinel(), &RawCarrier::default());
    assert_unchanged(&cx, "no baggage header");

    // A valid header replaces the baggage of the given context.
    let carrier = RawCarrier::new(&[("baggage", "k=v")]);
    let cx = StrictBaggagePropagator::new().extract_with_context(&sentinel(), &carrier);
    assert_eq!(entries_of(&cx), vec![e("k", "v", "")]);
    assert_eq!(cx.span().span_context(), &sentinel_span_context());
}

fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("key{i:02}=value{i:02}")).collect()
}

fn keys(entries: &Entries) -> Vec<String> {
    entries.iter().map(|(k, _, _)| k.clone()).collect()
}

fn expected_keys(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("key{i:02}")).collect()
}

#[test]
fn baggage_member_limit() {
    let rows: Vec<(&str, Vec<String>, Vec<String>)> = vec![
        (
            "64 members all kept",
            vec![numbered(0..64).join(",")],
            expected_keys(0..64),
        ),
        (
            "65 members: the first 64 kept",
            vec![numbered(0..65).join(",")],
            expected_keys(0..64),
        ),
        (
            "100 members: the first 64 kept",
            vec![numbered(0..100).join(",")],
            expected_keys(0..64),
        ),
        (
            "65 members over two headers: the first 64 kept",
            vec![numbered(0..40).join(","), numbered(40..65).join(",")],
            expected_keys(0..64),
        ),
        (
            "invalid members do not count",
            vec![
                numbered(0..64)
                    .into_iter()
                    .flat_map(|m| [m, "bad member".to_owned()])
                    .collect::<Vec<_>>()
                    .join(","),
            ],
            expected_keys(0..64),
        ),
        (
            "empty members do not count",
            vec![format!("{},,,", numbered(0..64).join(",,"))],
            expected_keys(0..64),
        ),
    ];
    for (row, values, expected) in rows {
        assert_eq!(keys(&extract_baggage(&values)), expected, "{row}");
    }
    assert_eq!(MAX_BAGGAGE_MEMBERS, 64);
}

/// A member `kNN=<x…>` exactly `len` bytes long.
fn sized_member(index: usize, len: usize) -> String {
    let prefix = format!("k{index:02}=");
    format!("{prefix}{}", "x".repeat(len - prefix.len()))
}

#[test]
fn baggage_byte_limit() {
    assert_eq!(MAX_BAGGAGE_BYTES, 8192);
    // Two 4000-byte members + one comma = 8001 bytes.
    let big0 = sized_member(0, 4000);
    let big1 = sized_member(1, 4000);
    // Exactly fills 8192: 8001 + 1 (comma) + 190.
    let fill = sized_member(2, 190);
    let one_too_many = sized_member(2, 191);

    // (row, header values, expected keys kept)
    let rows: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        (
            "exactly 8192 bytes kept",
            vec![[big0.clone(), big1.clone(), fill.clone()].join(",")],
            vec!["k00", "k01", "k02"],
        ),
        (
            "8193 bytes: the last member dropped whole",
            vec![[big0.clone(), big1.clone(), one_too_many.clone()].join(",")],
            vec!["k00", "k01"],
        ),
        (
            "whitespace around members is not counted",
            vec![format!("{big0} ,\t{big1} , {fill}")],
            vec!["k00", "k01", "k02"],
        ),
        (
            "over the limit across two headers",
            vec![big0.clone(), format!("{big1},{one_too_many}")],
            vec!["k00", "k01"],
        ),
        (
            "members after the first that does not fit are dropped too",
            vec![
                [
                    big0.clone(),
                    big1.clone(),
                    sized_member(2, 500),
                    "k03=1".to_owned(),
                ]
                .join(","),
            ],
            vec!["k00", "k01"],
        ),
        (
            "a single member over 8192 bytes is dropped",
            vec![sized_member(0, 8193)],
            vec![],
        ),
        (
            "a single member of 8192 bytes is kept",
            vec![sized_member(0, 8192)],
            vec!["k00"],
        ),
        (
            "invalid members do not use up the budget",
            vec![
                [
                    big0.clone(),
                    "bad member".repeat(100),
                    big1.clone(),
                    fill.clone(),
                ]
                .join(","),
            ],
            vec!["k00", "k01", "k02"],
        ),
    ];
    for (row, values, expected) in rows {
        let got = extract_baggage(&values);
        assert_eq!(keys(&got), expected, "{row}");
        // Kept members are never truncated.
        for (key, value, _) in &got {
            let sent = values
                .iter()
                .flat_map(|v| v.split(','))
                .map(|m| m.trim_matches([' ', '\t']))
                .find(|m| m.starts_with(&format!("{key}=")))
                .unwrap();
            assert_eq!(format!("{key}={value}"), sent, "{row}: {key} must be whole");
        }
    }
}

#[test]
fn baggage_properties_count_toward_the_byte_limit() {
    // 8000 bytes of member text, of which most is a property.
    let first = format!("a=1;p={}", "x".repeat(8000 - "a=1;p=".len()));
    let header = format!("{first},b={}", "y".repeat(200));
    let got = extract_baggage(&[header]);
    assert_eq!(keys(&got), vec!["a"]);
    assert_eq!(got[0].2.len(), 8000 - "a=1;".len());
}

fn inject_baggage(cx: &Context) -> Option<String> {
    let mut injector = RecordingInjector::default();
    StrictBaggagePropagator::new().inject_context(cx, &mut injector);
    assert!(injector.0.len() <= 1, "at most one baggage header");
    injector.get("baggage").map(str::to_owned)
}

#[test]
fn baggage_inject() {
    use opentelemetry::baggage::KeyValueMetadata;
    // (row, entries, expected header)
    let rows: Vec<(&str, Vec<KeyValueMetadata>, Option<&str>)> = vec![
        ("no baggage, no header", vec![], None),
        (
            "single entry",
            vec![KeyValueMetadata::new("k", "v", "")],
            Some("k=v"),
        ),
        (
            "entries in key order",
            vec![
                KeyValueMetadata::new("b", "2", ""),
                KeyValueMetadata::new("a", "1", ""),
            ],
            Some("a=1,b=2"),
        ),
        (
            "space encoded",
            vec![KeyValueMetadata::new("k", "hello world", "")],
            Some("k=hello%20world"),
        ),
        (
            "every non-baggage-octet encoded, plus '%' and '='",
            vec![KeyValueMetadata::new(
                "k",
                "a,b;c\"d\\e%f=g\u{7f}\u{e9}",
                "",
            )],
            Some("k=a%2Cb%3Bc%22d%5Ce%25f%3Dg%7F%C3%A9"),
        ),
        (
            "leading and trailing spaces preserved by encoding",
            vec![KeyValueMetadata::new("k", " v ", "")],
            Some("k=%20v%20"),
        ),
        (
            "metadata as properties",
            vec![KeyValueMetadata::new("k", "v", "p1;p2=x")],
            Some("k=v;p1;p2=x"),
        ),
        (
            "metadata whitespace normalised",
            vec![KeyValueMetadata::new("k", "v", "p1 ; p2 = x")],
            Some("k=v;p1;p2=x"),
        ),
        (
            "invalid metadata drops the entry",
            vec![
                KeyValueMetadata::new("k", "v", "p,q"),
                KeyValueMetadata::new("ok", "1", ""),
            ],
            Some("ok=1"),
        ),
        (
            "only invalid entries: no header",
            vec![KeyValueMetadata::new("k", "v", "a b")],
            None,
        ),
    ];
    for (row, entries, expected) in rows {
        let cx = Context::new().with_baggage(entries);
        assert_eq!(inject_baggage(&cx).as_deref(), expected, "{row}");
    }
}

#[test]
fn baggage_round_trip() {
    let values = [
        ("plain", "value"),
        ("spaces", " a b "),
        ("separators", "x,y;z"),
        ("percent", "100%25 literal %41"),
        ("quote", "q\"uote"),
        ("backslash", "back\\slash"),
        ("equals", "a=b=c"),
        ("unicode", "caf\u{e9} \u{1f600}"),
        ("empty", ""),
    ];
    let cx = Context::new().with_baggage(
        values
            .iter()
            .map(|(k, v)| KeyValue::new(*k, *v))
            .collect::<Vec<_>>(),
    );
    let mut with_props = cx
        .baggage()
        .iter()
        .map(|(k, (v, m))| {
            opentelemetry::baggage::KeyValueMetadata::new(k.clone(), v.clone(), m.clone())
        })
        .collect::<Vec<_>>();
    with_props.push(opentelemetry::baggage::KeyValueMetadata::new(
        "props",
        "v",
        BaggageMetadata::from("p1;p2=x"),
    ));
    let cx = Context::new().with_baggage(with_props);

    let header = inject_baggage(&cx).expect("baggage injected");
    assert!(
        header.bytes().all(|b| b.is_ascii_graphic()),
        "injected header must be printable ASCII without spaces: {header}"
    );
    let back = extract_baggage(&[header]);
    assert_eq!(back, entries_of(&cx));
    assert_eq!(back.len(), values.len() + 1);
}

#[test]
fn baggage_inject_limits_drop_whole_entries() {
    // 40 entries of 100 spaces: 100 bytes each inside `Baggage` (within its
    // own 8192-byte budget) but 300 bytes each once percent-encoded.
    let entries: Vec<KeyValue> = (0..40)
        .map(|i| KeyValue::new(format!("k{i:02}"), " ".repeat(100)))
        .collect();
    let cx = Context::new().with_baggage(entries);
    assert_eq!(cx.baggage().len(), 40, "Baggage itself keeps all 40");

    let header = inject_baggage(&cx).expect("baggage injected");
    assert!(header.len() <= MAX_BAGGAGE_BYTES, "{} bytes", header.len());
    // Each member is "kNN=" + 300 bytes = 304; 26 fit (26*304 + 25 = 7929).
    let members: Vec<&str> = header.split(',').collect();
    assert_eq!(members.len(), 26);
    for (i, member) in members.iter().enumerate() {
        assert_eq!(
            *member,
            format!("k{i:02}={}", "%20".repeat(100)),
            "member {i} whole"
        );
    }
}

#[test]
fn baggage_type_limits_are_not_tighter_than_ours() {
    // `opentelemetry::baggage::Baggage` refuses more than 64 entries and more
    // than 8192 bytes of key + value + metadata. Our extraction limits count
    // header text (>= those bytes), so a header at our limits survives whole.
    let members: Vec<String> = (0..64)
        .map(|i| sized_member(i, if i == 63 { 8192 - 63 * 128 - 63 } else { 128 }))
        .collect();
    let header = members.join(",");
    assert_eq!(header.len(), 8192);
    let got = extract_baggage(&[header]);
    assert_eq!(got.len(), 64);
}

#[test]
fn baggage_fields() {
    let propagator = StrictBaggagePropagator::new();
    let fields: Vec<&str> = propagator.fields().collect();
    assert_eq!(fields, ["baggage"]);
}

// ---------------------------------------------------------------------------
// OTEL_PROPAGATORS
// ---------------------------------------------------------------------------

fn sorted_fields(propagator: &dyn TextMapPropagator) -> Vec<String> {
    let mut fields: Vec<String> = propagator.fields().map(str::to_owned).collect();
    fields.sort();
    fields
}

#[test]
fn propagators_from_env_value() {
    let rows: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "empty: default",
            "",
            vec!["baggage", "traceparent", "tracestate"],
        ),
        (
            "whitespace: default",
            "  ",
            vec!["baggage", "traceparent", "tracestate"],
        ),
        (
            "tracecontext only",
            "tracecontext",
            vec!["traceparent", "tracestate"],
        ),
        ("baggage only", "baggage", vec!["baggage"]),
        (
            "both",
            "tracecontext,baggage",
            vec!["baggage", "traceparent", "tracestate"],
        ),
        (
            "spaces and case ignored",
            " TraceContext , BAGGAGE ",
            vec!["baggage", "traceparent", "tracestate"],
        ),
        ("duplicates collapse", "baggage,baggage", vec!["baggage"]),
        (
            "empty entries ignored",
            ",tracecontext,,",
            vec!["traceparent", "tracestate"],
        ),
        ("none", "none", vec![]),
        ("none with others", "none,baggage", vec!["baggage"]),
    ];
    for (row, value, fields) in rows {
        let propagator = propagator_from_env_value(value).unwrap_or_else(|e| panic!("{row}: {e}"));
        assert_eq!(sorted_fields(&propagator), fields, "{row}");
    }
    assert_eq!(
        sorted_fields(&default_propagator()),
        ["baggage", "traceparent", "tracestate"]
    );
}

#[test]
fn propagators_from_env_value_unknown() {
    let rows = [
        ("b3 is not supported", "tracecontext,b3", "b3"),
        ("jaeger is not supported", "jaeger", "jaeger"),
        ("typo", "tracecontex", "tracecontex"),
        ("name is trimmed in the error", "baggage, xray ", "xray"),
    ];
    for (row, value, name) in rows {
        let err = propagator_from_env_value(value).unwrap_err();
        assert_eq!(err, UnknownPropagator(name.to_owned()), "{row}");
        let message = err.to_string();
        for supported in ["tracecontext", "baggage", "none", name] {
            assert!(message.contains(supported), "{row}: {message}");
        }
    }
}

#[test]
fn env_propagators_really_propagate() {
    let incoming = RawCarrier::new(&[("traceparent", VALID_TP), ("baggage", "k=v")]);

    let none = propagator_from_env_value("none").unwrap();
    let cx = none.extract_with_context(&Context::new(), &incoming);
    assert!(
        !cx.span().span_context().is_valid(),
        "none extracts nothing"
    );
    assert!(cx.baggage().is_empty());

    let both = propagator_from_env_value("tracecontext,baggage").unwrap();
    let cx = both.extract_with_context(&Context::new(), &incoming);
    assert_eq!(cx.span().span_context().trace_id().to_string(), TRACE_ID);
    assert_eq!(entries_of(&cx), vec![e("k", "v", "")]);

    let mut injector = RecordingInjector::default();
    none.inject_context(&cx, &mut injector);
    assert!(injector.0.is_empty(), "none injects nothing");
}

// ---------------------------------------------------------------------------
// carriers
// ---------------------------------------------------------------------------

#[test]
fn http_header_extractor() {
    let mut headers = http::HeaderMap::new();
    headers.append("baggage", "a=1".parse().unwrap());
    headers.append(
        "baggage",
        http::HeaderValue::from_bytes(b"bad=\xff").unwrap(),
    );
    headers.append("baggage", "b=2".parse().unwrap());
    headers.insert("traceparent", VALID_TP.parse().unwrap());

    let extractor = HeaderExtractor(&headers);
    let rows: Vec<(&str, &str, Option<Vec<&str>>)> = vec![
        (
            "repeated header, non-UTF-8 value skipped",
            "baggage",
            Some(vec!["a=1", "b=2"]),
        ),
        ("name case ignored", "TraceParent", Some(vec![VALID_TP])),
        ("absent header", "tracestate", None),
    ];
    for (row, key, expected) in rows {
        assert_eq!(extractor.get_all(key), expected, "{row}");
    }
    assert_eq!(extractor.get("baggage"), Some("a=1"));
    let mut keys = extractor.keys();
    keys.sort_unstable();
    assert_eq!(keys, ["baggage", "traceparent"]);

    let cx = StrictBaggagePropagator::new().extract_with_context(&Context::new(), &extractor);
    assert_eq!(entries_of(&cx), vec![e("a", "1", ""), e("b", "2", "")]);
}

#[test]
fn http_header_injector() {
    let mut headers = http::HeaderMap::new();
    headers.append("traceparent", "old-1".parse().unwrap());
    headers.append("traceparent", "old-2".parse().unwrap());
    {
        let mut injector = HeaderInjector(&mut headers);
        injector.set("Traceparent", VALID_TP.to_owned());
        injector.set("bad-value", "line\nbreak".to_owned());
        injector.set("bad name", "v".to_owned());
        injector.set("x-ok", "v".to_owned());
    }
    let values: Vec<_> = headers.get_all("traceparent").iter().collect();
    assert_eq!(values, [VALID_TP], "set replaces every old value");
    assert!(headers.get("bad-value").is_none(), "invalid value skipped");
    assert_eq!(headers.len(), 2, "invalid name skipped");
    assert_eq!(headers["x-ok"], "v");
}

#[cfg(feature = "nats")]
#[test]
fn nats_header_extractor_ignores_case() {
    use telemetry::propagation::NatsHeaderExtractor;

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Traceparent", VALID_TP);
    headers.insert("TRACESTATE", "a=1");
    headers.append("Baggage", "a=1");
    headers.append("Baggage", "b=2");

    let extractor = NatsHeaderExtractor(&headers);
    let rows: Vec<(&str, &str, Option<Vec<&str>>)> = vec![
        (
            "lowercase finds capitalised",
            "traceparent",
            Some(vec![VALID_TP]),
        ),
        ("lowercase finds uppercase", "tracestate", Some(vec!["a=1"])),
        (
            "repeated values in order",
            "baggage",
            Some(vec!["a=1", "b=2"]),
        ),
        ("absent", "x-missing", None),
    ];
    for (row, key, expected) in rows {
        assert_eq!(extractor.get_all(key), expected, "{row}");
    }
    assert_eq!(extractor.get("TRACEPARENT"), Some(VALID_TP));

    let cx = default_propagator().extract_with_context(&Context::new(), &extractor);
    let span = cx.span();
    let sc = span.span_context();
    assert_eq!(sc.trace_id().to_string(), TRACE_ID);
    assert_eq!(sc.trace_state().header(), "a=1");
    assert_eq!(entries_of(&cx), vec![e("a", "1", ""), e("b", "2", "")]);

    // The same field under two spellings is two values: invalid traceparent.
    let mut twice = async_nats::HeaderMap::new();
    twice.insert("traceparent", VALID_TP);
    twice.insert("Traceparent", VALID_TP);
    assert_eq!(
        NatsHeaderExtractor(&twice)
            .get_all("traceparent")
            .map(|v| v.len()),
        Some(2)
    );
    let cx = StrictTraceContextPropagator::new()
        .extract_with_context(&sentinel(), &NatsHeaderExtractor(&twice));
    assert_unchanged(&cx, "traceparent under two NATS spellings");
}

#[cfg(feature = "nats")]
#[test]
fn nats_header_injector_lowercases_and_replaces() {
    use telemetry::propagation::{NatsHeaderExtractor, NatsHeaderInjector};

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Traceparent", "old");
    headers.insert("TRACEPARENT", "older");
    headers.append("X-Other", "1");
    headers.append("X-Other", "2");
    {
        let mut injector = NatsHeaderInjector(&mut headers);
        injector.set("traceparent", VALID_TP.to_owned());
        injector.set("Baggage", "k=v".to_owned());
        injector.set("x-bad-value", "a\r\nb".to_owned());
        injector.set("bad:name", "v".to_owned());
    }
    let mut names: Vec<String> = headers
        .iter()
        .map(|(name, _)| AsRef::<str>::as_ref(name).to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["X-Other", "baggage", "traceparent"]);
    assert_eq!(
        headers.get("traceparent").map(|v| v.as_str()),
        Some(VALID_TP)
    );
    assert_eq!(headers.get("baggage").map(|v| v.as_str()), Some("k=v"));
    let others: Vec<&str> = headers.get_all("X-Other").map(|v| v.as_str()).collect();
    assert_eq!(others, ["1", "2"], "unrelated headers kept with all values");

    // Round trip through a real propagator.
    let cx = StrictTraceContextPropagator::new()
        .extract_with_context(&Context::new(), &NatsHeaderExtractor(&headers));
    let mut out = async_nats::HeaderMap::new();
    default_propagator().inject_context(&cx, &mut NatsHeaderInjector(&mut out));
    assert_eq!(out.get("traceparent").map(|v| v.as_str()), Some(VALID_TP));
}

#[test]
fn map_carriers() {
    let mut map = BTreeMap::new();
    map.insert("Traceparent".to_owned(), VALID_TP.to_owned());
    map.insert("baggage".to_owned(), "a=1".to_owned());
    map.insert("BAGGAGE".to_owned(), "b=2".to_owned());

    let extractor = MapExtractor(&map);
    assert_eq!(extractor.get("traceparent"), Some(VALID_TP));
    assert_eq!(
        extractor.get_all("Baggage"),
        Some(vec!["b=2", "a=1"]),
        "key order"
    );
    assert_eq!(extractor.get_all("tracestate"), None);

    let cx = default_propagator().extract_with_context(&Context::new(), &extractor);
    assert_eq!(cx.span().span_context().trace_id().to_string(), TRACE_ID);
    assert_eq!(entries_of(&cx), vec![e("a", "1", ""), e("b", "2", "")]);

    {
        let mut injector = MapInjector(&mut map);
        injector.set("TraceParent", "new".to_owned());
        injector.set("Baggage", "c=3".to_owned());
    }
    let expected: BTreeMap<String, String> = [("baggage", "c=3"), ("traceparent", "new")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(map, expected);
}

#[test]
fn convenience_functions_use_the_global_propagator() {
    // The only test that touches the global propagator.
    opentelemetry::global::set_text_map_propagator(default_propagator());

    let mut incoming = http::HeaderMap::new();
    incoming.insert(
        "traceparent",
        tp("00", TRACE_ID, PARENT_ID, "03").parse().unwrap(),
    );
    incoming.insert("baggage", "k=v%20w".parse().unwrap());
    let cx = telemetry::propagation::extract_http(&incoming);
    assert_eq!(cx.span().span_context().trace_flags().to_u8(), 0x03);
    assert_eq!(entries_of(&cx), vec![e("k", "v w", "")]);

    let mut outgoing = http::HeaderMap::new();
    telemetry::propagation::inject_http(&cx, &mut outgoing);
    assert_eq!(outgoing["traceparent"], tp("00", TRACE_ID, PARENT_ID, "03"));
    assert_eq!(outgoing["baggage"], "k=v%20w");

    let row = telemetry::propagation::inject_map(&cx);
    assert_eq!(row.keys().collect::<Vec<_>>(), ["baggage", "traceparent"]);
    let back = telemetry::propagation::extract_map(&row);
    assert_eq!(back.span().span_context(), cx.span().span_context());

    #[cfg(feature = "nats")]
    {
        let mut nats = async_nats::HeaderMap::new();
        telemetry::propagation::inject_nats(&cx, &mut nats);
        let back = telemetry::propagation::extract_nats(&nats);
        assert_eq!(back.span().span_context(), cx.span().span_context());
        assert_eq!(entries_of(&back), vec![e("k", "v w", "")]);
    }

    // Invalid input gives an empty context, not the caller's current one.
    let mut bad = http::HeaderMap::new();
    bad.insert("traceparent", "garbage".parse().unwrap());
    let _guard = cx.clone().attach();
    let extracted = telemetry::propagation::extract_http(&bad);
    assert!(!extracted.span().span_context().is_valid());
    assert!(extracted.baggage().is_empty());
}
