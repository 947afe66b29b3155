//! Strict parsing and injection of the W3C `traceparent` header, and the
//! [`StrictTraceContextPropagator`] that ties `traceparent` and `tracestate`
//! together.
//!
//! Specification: <https://www.w3.org/TR/trace-context-2/#traceparent-header>.

use std::sync::LazyLock;

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

use super::tracestate::parse_tracestate_values;

/// Name of the W3C `traceparent` header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Name of the W3C `tracestate` header.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// The trace-flags bits this crate propagates: `sampled` (`0x01`) and the
/// Level 2 `random` trace-id flag (`0x02`). Every other bit is dropped on
/// extraction and never emitted on injection.
pub const KNOWN_TRACE_FLAGS: u8 = 0x03;

/// Length of a version `00` traceparent, and of the part of any later version
/// that this parser understands: `vv-` + 32 + `-` + 16 + `-` + 2.
const TRACEPARENT_LEN: usize = 55;

/// The only version this crate emits.
const EMITTED_VERSION: u8 = 0x00;

/// The version value the specification forbids.
const FORBIDDEN_VERSION: u8 = 0xff;

static FIELDS: LazyLock<[String; 2]> =
    LazyLock::new(|| [TRACEPARENT_HEADER.to_owned(), TRACESTATE_HEADER.to_owned()]);

/// Why a `traceparent` value was rejected by [`parse_traceparent`].
///
/// Every variant means the same thing to a caller: the value is not a usable
/// parent, so the receiver starts a new trace. The variants only exist so
/// that the reason can be logged or tested.
///
/// Specification: <https://www.w3.org/TR/trace-context-2/#traceparent-header-field-values>.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceparentError {
    /// The header was sent more than once, or one value contains a comma
    /// (which is how HTTP folds repeated headers into one line).
    #[error("traceparent was sent more than once (repeated header or comma in the value)")]
    MultipleValues,
    /// Shorter than 55 characters, or a version `00` value that is not
    /// exactly 55 characters long.
    #[error("traceparent has the wrong length for its version")]
    Length,
    /// The version is not two lowercase hexadecimal digits.
    #[error("traceparent version is not two lowercase hex digits")]
    Version,
    /// The version is `ff`, which the specification forbids.
    #[error("traceparent version ff is forbidden")]
    ForbiddenVersion,
    /// A field separator is not `-`.
    #[error("traceparent fields are not separated by '-'")]
    Delimiter,
    /// A value of a version later than `00` is longer than 55 characters but
    /// the 56th character is not `-`.
    #[error("traceparent of a later version continues past 55 characters without a '-'")]
    TrailingData,
    /// The trace-id is not 32 lowercase hexadecimal digits.
    #[error("trace-id is not 32 lowercase hex digits")]
    TraceId,
    /// The trace-id is all zeros.
    #[error("trace-id is all zeros")]
    ZeroTraceId,
    /// The parent-id is not 16 lowercase hexadecimal digits.
    #[error("parent-id is not 16 lowercase hex digits")]
    ParentId,
    /// The parent-id is all zeros.
    #[error("parent-id is all zeros")]
    ZeroParentId,
    /// The trace-flags are not two lowercase hexadecimal digits.
    #[error("trace-flags are not two lowercase hex digits")]
    Flags,
}

/// A successfully parsed `traceparent` value.
///
/// Specification: <https://www.w3.org/TR/trace-context-2/#traceparent-header-field-values>.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    /// The version the sender used (`0x00..=0xfe`).
    pub version: u8,
    /// The trace-id; never all zeros.
    pub trace_id: TraceId,
    /// The parent-id (the sender's span id); never all zeros.
    pub parent_id: SpanId,
    /// The trace-flags, already reduced to the bits in
    /// [`KNOWN_TRACE_FLAGS`] (`sampled` and `random`).
    pub trace_flags: TraceFlags,
}

/// Parses one `traceparent` value strictly.
///
/// Rules (<https://www.w3.org/TR/trace-context-2/#traceparent-header>):
/// * the version is two lowercase hex digits and not `ff`;
/// * version `00` is exactly `vv-<32 hex>-<16 hex>-<2 hex>` (55 characters);
/// * a later version is parsed the same way over its first 55 characters; if
///   it is longer, the 56th character must be `-` and the rest is ignored;
/// * only lowercase hex digits are accepted, and neither id may be all zeros;
/// * trace-flags keep only `sampled` (`0x01`) and `random` (`0x02`).
///
/// # Errors
///
/// Returns a [`TraceparentError`] naming the first rule the value breaks.
/// The function never panics, whatever the input.
pub fn parse_traceparent(value: &str) -> Result<Traceparent, TraceparentError> {
    let bytes = value.as_bytes();
    if bytes.contains(&b',') {
        return Err(TraceparentError::MultipleValues);
    }
    if bytes.len() < TRACEPARENT_LEN {
        return Err(TraceparentError::Length);
    }

    let version = parse_hex_u8(&bytes[0..2]).ok_or(TraceparentError::Version)?;
    if version == FORBIDDEN_VERSION {
        return Err(TraceparentError::ForbiddenVersion);
    }
    if bytes.len() > TRACEPARENT_LEN {
        if version == 0x00 {
            return Err(TraceparentError::Length);
        }
        if bytes[TRACEPARENT_LEN] != b'-' {
            return Err(TraceparentError::TrailingData);
        }
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return Err(TraceparentError::Delimiter);
    }

    let trace_id = parse_hex_u128(&bytes[3..35]).ok_or(TraceparentError::TraceId)?;
    if trace_id == 0 {
        return Err(TraceparentError::ZeroTraceId);
    }
    let parent_id = parse_hex_u64(&bytes[36..52]).ok_or(TraceparentError::ParentId)?;
    if parent_id == 0 {
        return Err(TraceparentError::ZeroParentId);
    }
    let flags = parse_hex_u8(&bytes[53..55]).ok_or(TraceparentError::Flags)?;

    Ok(Traceparent {
        version,
        trace_id: TraceId::from(trace_id),
        parent_id: SpanId::from(parent_id),
        trace_flags: TraceFlags::new(flags & KNOWN_TRACE_FLAGS),
    })
}

/// Formats the `traceparent` value this crate emits for `span_context`:
/// `00-{trace-id}-{parent-id}-{flags}`, with the flags reduced to
/// [`KNOWN_TRACE_FLAGS`] so the Level 2 `random` flag survives.
///
/// Returns `None` when the span context is not valid (an all-zero id), in
/// which case nothing must be injected.
///
/// Specification: <https://www.w3.org/TR/trace-context-2/#traceparent-header>.
pub fn format_traceparent(span_context: &SpanContext) -> Option<String> {
    if !span_context.is_valid() {
        return None;
    }
    Some(format!(
        "{:02x}-{}-{}-{:02x}",
        EMITTED_VERSION,
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8() & KNOWN_TRACE_FLAGS
    ))
}

/// The value of one lowercase hexadecimal digit; uppercase and anything else
/// is rejected.
fn lower_hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

/// Folds lowercase hex digits into a `u128`. Callers pass at most 32 digits,
/// so this cannot overflow; every byte is checked, so signs and other
/// characters `from_str_radix` would tolerate are rejected.
fn parse_hex_u128(digits: &[u8]) -> Option<u128> {
    debug_assert!(digits.len() <= 32);
    digits.iter().try_fold(0u128, |acc, &byte| {
        lower_hex_digit(byte).map(|digit| (acc << 4) | u128::from(digit))
    })
}

fn parse_hex_u64(digits: &[u8]) -> Option<u64> {
    debug_assert!(digits.len() <= 16);
    // 16 digits always fit in 64 bits.
    parse_hex_u128(digits).and_then(|value| u64::try_from(value).ok())
}

fn parse_hex_u8(digits: &[u8]) -> Option<u8> {
    debug_assert!(digits.len() <= 2);
    parse_hex_u128(digits).and_then(|value| u8::try_from(value).ok())
}

/// A [`TextMapPropagator`] for W3C Trace Context (Level 2) that rejects
/// anything the specification does not allow.
///
/// Extraction reads every value of `traceparent` and `tracestate` through
/// [`Extractor::get_all`]:
/// * no `traceparent`, more than one value, or a value [`parse_traceparent`]
///   rejects: the given context is returned unchanged, so the receiver
///   starts a new trace;
/// * otherwise the context gets a remote [`SpanContext`] whose flags keep
///   `sampled` and `random`;
/// * `tracestate` is only read when `traceparent` is valid; if it is
///   malformed or has too many members (see
///   [`parse_tracestate`](super::parse_tracestate)) the trace state is empty
///   but the parent is still used. Later duplicates of a key, and members
///   `TraceState` cannot hold, are dropped one by one.
///
/// Injection writes `traceparent` (version `00`, flags masked to `0x03`) and,
/// when non-empty, `tracestate`, but only if the context's span context is
/// valid.
///
/// Specification: <https://www.w3.org/TR/trace-context-2/>.
#[derive(Debug, Clone, Copy, Default)]
pub struct StrictTraceContextPropagator {
    _private: (),
}

impl StrictTraceContextPropagator {
    /// Creates the propagator. It has no configuration.
    pub const fn new() -> Self {
        Self { _private: () }
    }

    /// The span context carried by `extractor`, or `None` if there is no
    /// usable `traceparent`.
    fn extract_span_context(&self, extractor: &dyn Extractor) -> Option<SpanContext> {
        let values = extractor.get_all(TRACEPARENT_HEADER)?;
        let [value] = values.as_slice() else {
            // Absent (an empty list) or repeated: either way not a parent.
            return None;
        };
        let parent = parse_traceparent(value).ok()?;

        let trace_state = extractor
            .get_all(TRACESTATE_HEADER)
            .and_then(|values| parse_tracestate_values(values.iter().copied()).ok())
            .unwrap_or_default();

        Some(SpanContext::new(
            parent.trace_id,
            parent.parent_id,
            parent.trace_flags,
            true,
            trace_state,
        ))
    }
}

impl TextMapPropagator for StrictTraceContextPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let span_context = span.span_context();
        let Some(traceparent) = format_traceparent(span_context) else {
            return;
        };
        injector.set(TRACEPARENT_HEADER, traceparent);
        let trace_state: &TraceState = span_context.trace_state();
        let header = trace_state.header();
        if !header.is_empty() {
            injector.set(TRACESTATE_HEADER, header);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match self.extract_span_context(extractor) {
            Some(span_context) => cx.with_remote_span_context(span_context),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(FIELDS.as_slice())
    }
}
