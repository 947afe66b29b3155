//! Strict W3C context propagation: Trace Context (Level 2) and Baggage.
//!
//! A service continues a distributed trace by reading the caller's
//! `traceparent`/`tracestate`/`baggage` headers into a [`Context`]
//! (*extraction*) and writing them onto its own outgoing requests and
//! messages (*injection*). This module provides:
//!
//! * [`StrictTraceContextPropagator`]: W3C Trace Context Level 2
//!   (<https://www.w3.org/TR/trace-context-2/>) with its own strict parser.
//!   Unlike `opentelemetry_sdk`'s `TraceContextPropagator`, it rejects
//!   repeated `traceparent` headers, uppercase hex, version `00` values with
//!   trailing data and a `tracestate` with any malformed member (it drops
//!   only duplicate keys and members `TraceState` cannot hold), and it keeps
//!   the Level 2 `random` trace-id flag (`0x02`) instead of clearing it.
//! * [`StrictBaggagePropagator`]: W3C Baggage
//!   (<https://www.w3.org/TR/baggage/>), dropping invalid list members one by
//!   one and enforcing the 64-member / 8192-byte limits on whole members.
//! * [`propagator_from_env_value`] and [`default_propagator`] to build the
//!   propagator named by `OTEL_PROPAGATORS`.
//! * Carrier adapters ([`HeaderExtractor`], [`HeaderInjector`],
//!   [`NatsHeaderExtractor`], [`NatsHeaderInjector`], [`MapExtractor`],
//!   [`MapInjector`]) that expose repeated headers and match names without
//!   regard to case.
//! * Convenience functions ([`extract_http`], [`inject_http`],
//!   [`extract_nats`], [`inject_nats`], [`extract_map`], [`inject_map`]) that
//!   use the *global* propagator set with
//!   [`opentelemetry::global::set_text_map_propagator`].
//!
//! Invalid input never panics and never yields a half-parsed context: an
//! unusable `traceparent` leaves the context as it was, so the receiver starts
//! a new trace.
//!
//! # Example
//!
//! ```
//! use opentelemetry::propagation::TextMapPropagator;
//! use opentelemetry::trace::TraceContextExt;
//! use opentelemetry::Context;
//! use telemetry::propagation::{default_propagator, HeaderExtractor, HeaderInjector};
//!
//! let propagator = default_propagator();
//!
//! let mut incoming = http::HeaderMap::new();
//! incoming.insert(
//!     "traceparent",
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03".parse().unwrap(),
//! );
//! let cx = propagator.extract_with_context(&Context::new(), &HeaderExtractor(&incoming));
//! assert!(cx.span().span_context().is_remote());
//!
//! let mut outgoing = http::HeaderMap::new();
//! propagator.inject_context(&cx, &mut HeaderInjector(&mut outgoing));
//! assert_eq!(
//!     outgoing["traceparent"],
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"
//! );
//! ```

mod baggage;
mod carriers;
mod traceparent;
mod tracestate;

use std::collections::BTreeMap;

use opentelemetry::Context;
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};

pub use self::baggage::{
    BAGGAGE_HEADER, MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS, StrictBaggagePropagator,
};
pub use self::carriers::{HeaderExtractor, HeaderInjector, MapExtractor, MapInjector};
#[cfg(feature = "nats")]
pub use self::carriers::{NatsHeaderExtractor, NatsHeaderInjector};
pub use self::traceparent::{
    KNOWN_TRACE_FLAGS, StrictTraceContextPropagator, TRACEPARENT_HEADER, TRACESTATE_HEADER,
    Traceparent, TraceparentError, format_traceparent, parse_traceparent,
};
pub use self::tracestate::{MAX_TRACESTATE_MEMBERS, TracestateError, parse_tracestate};

/// The propagator names [`propagator_from_env_value`] understands.
pub const SUPPORTED_PROPAGATORS: &[&str] = &["tracecontext", "baggage", "none"];

/// An `OTEL_PROPAGATORS` entry this crate does not implement.
///
/// Holds the offending name as written (trimmed). Only `tracecontext`,
/// `baggage` and `none` are supported; other names from the OpenTelemetry
/// specification (`b3`, `jaeger`, `xray`, ...) are reported with this error
/// rather than silently ignored.
///
/// Specification: <https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/#general-sdk-configuration>.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown propagator {0:?} in OTEL_PROPAGATORS; supported values are \"tracecontext\", \"baggage\" and \"none\""
)]
pub struct UnknownPropagator(pub String);

/// Builds the propagator described by an `OTEL_PROPAGATORS` value.
///
/// The value is a comma-separated list; names are trimmed and compared
/// without regard to ASCII case, empty entries are ignored and a name listed
/// twice is used once. `tracecontext` adds [`StrictTraceContextPropagator`],
/// `baggage` adds [`StrictBaggagePropagator`], in the order listed; `none`
/// adds nothing (so `none` alone disables propagation). An empty or
/// all-whitespace value gives the default, `tracecontext,baggage`.
///
/// # Errors
///
/// [`UnknownPropagator`] for the first name that is not one of
/// [`SUPPORTED_PROPAGATORS`].
pub fn propagator_from_env_value(
    value: &str,
) -> Result<TextMapCompositePropagator, UnknownPropagator> {
    if value.trim().is_empty() {
        return Ok(default_propagator());
    }

    let mut trace_context = false;
    let mut baggage = false;
    let mut propagators: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name.eq_ignore_ascii_case("tracecontext") {
            if !trace_context {
                trace_context = true;
                propagators.push(Box::new(StrictTraceContextPropagator::new()));
            }
        } else if name.eq_ignore_ascii_case("baggage") {
            if !baggage {
                baggage = true;
                propagators.push(Box::new(StrictBaggagePropagator::new()));
            }
        } else if !name.eq_ignore_ascii_case("none") {
            return Err(UnknownPropagator(name.to_owned()));
        }
    }
    Ok(TextMapCompositePropagator::new(propagators))
}

/// The default propagator: [`StrictTraceContextPropagator`] followed by
/// [`StrictBaggagePropagator`] (`OTEL_PROPAGATORS=tracecontext,baggage`).
pub fn default_propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(StrictTraceContextPropagator::new()),
        Box::new(StrictBaggagePropagator::new()),
    ])
}

/// Extracts the remote parent and baggage from incoming HTTP headers with the
/// global propagator.
///
/// Extraction starts from an empty [`Context`], not the current one, so
/// nothing active in the receiving task leaks into the request's parent.
/// Invalid headers give an empty context.
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract_with_context(&Context::new(), &HeaderExtractor(headers))
    })
}

/// Injects `cx` into outgoing HTTP headers with the global propagator,
/// replacing any existing values of the propagated headers.
pub fn inject_http(cx: &Context, headers: &mut http::HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(cx, &mut HeaderInjector(headers));
    });
}

/// Extracts the remote parent and baggage from NATS message headers with the
/// global propagator, matching header names without regard to case.
///
/// Like [`extract_http`], extraction starts from an empty [`Context`].
#[cfg(feature = "nats")]
pub fn extract_nats(headers: &async_nats::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract_with_context(&Context::new(), &NatsHeaderExtractor(headers))
    })
}

/// Injects `cx` into NATS message headers with the global propagator, writing
/// lowercase names and replacing values stored under any other spelling.
#[cfg(feature = "nats")]
pub fn inject_nats(cx: &Context, headers: &mut async_nats::HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(cx, &mut NatsHeaderInjector(headers));
    });
}

/// Extracts the remote parent and baggage from a string map (for example an
/// outbox row) with the global propagator; keys match without regard to case.
///
/// Like [`extract_http`], extraction starts from an empty [`Context`].
pub fn extract_map(map: &BTreeMap<String, String>) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract_with_context(&Context::new(), &MapExtractor(map))
    })
}

/// Injects `cx` with the global propagator into a new string map with
/// lowercase keys (for example to store in an outbox row).
pub fn inject_map(cx: &Context) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(cx, &mut MapInjector(&mut map));
    });
    map
}
