#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod config;
pub mod db;
pub mod export;
pub mod export_thread;
pub mod http;
mod init;
pub mod log_writer;
pub mod logging;
pub mod metrics;
pub mod propagation;
pub mod sampling;

pub use config::{LogFormat, OtlpProtocol, TelemetryConfig, TraceSampler};
pub use init::{InitError, ShutdownError, TelemetryGuard, init, init_with_writer};
pub use metrics::MetricsHandle;

/// The trace id of the current `tracing` span's OpenTelemetry context, as 32 lowercase hex
/// digits ([W3C Trace Context](https://www.w3.org/TR/trace-context/#trace-id)), or `None`
/// outside any span (or when the id is the invalid all-zero id). Use it to put the trace id
/// into error bodies and response headers.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = tracing::Span::current().context();
    let id = cx.span().span_context().trace_id();
    (id != opentelemetry::trace::TraceId::INVALID).then(|| id.to_string())
}
