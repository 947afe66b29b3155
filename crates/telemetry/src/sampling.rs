//! Sampling that keeps the W3C Trace Context Level 2 *random* flag.
//!
//! [Level 2](https://www.w3.org/TR/trace-context-2/#random-trace-id-flag) says: if the random
//! flag (`0x02`) is set in the incoming `traceparent`, it MUST also be set in every outgoing
//! `traceparent` of the same trace. The SDK keeps the parent's flags for spans it records, but
//! builds a dropped span's context with empty flags, so an unsampled request (`-02`) would leave
//! with `-00`. [`KeepRandomFlag`] turns a *drop* decision under such a parent into
//! *record only*: the span still is not exported (only sampled spans are), and its context keeps
//! the flag.

use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, ShouldSample};

/// The random-trace-id flag of `trace-flags`.
const RANDOM: u8 = 0x02;

/// Wraps a sampler (normally the one `OTEL_TRACES_SAMPLER` selects) so the random flag survives
/// a drop decision. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct KeepRandomFlag(pub Box<dyn ShouldSample>);

impl ShouldSample for KeepRandomFlag {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let mut result =
            self.0
                .should_sample(parent_context, trace_id, name, span_kind, attributes, links);
        let parent_is_random = parent_context.is_some_and(|cx| {
            cx.has_active_span() && cx.span().span_context().trace_flags().to_u8() & RANDOM != 0
        });
        if result.decision == SamplingDecision::Drop && parent_is_random {
            result.decision = SamplingDecision::RecordOnly;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};
    use opentelemetry_sdk::trace::Sampler;

    fn parent(flags: u8) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(1u128),
            SpanId::from(1u64),
            TraceFlags::new(flags),
            true,
            TraceState::NONE,
        ))
    }

    fn decide(flags: u8) -> SamplingDecision {
        let sampler = KeepRandomFlag(Box::new(Sampler::ParentBased(Box::new(Sampler::AlwaysOn))));
        sampler
            .should_sample(
                Some(&parent(flags)),
                TraceId::from(1u128),
                "x",
                &SpanKind::Server,
                &[],
                &[],
            )
            .decision
    }

    #[test]
    fn an_unsampled_random_parent_is_recorded_not_dropped() {
        assert_eq!(decide(0x02), SamplingDecision::RecordOnly);
        assert_eq!(decide(0x00), SamplingDecision::Drop);
        assert_eq!(decide(0x03), SamplingDecision::RecordAndSample);
    }
}
