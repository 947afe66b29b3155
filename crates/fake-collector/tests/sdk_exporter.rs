//! The real OpenTelemetry SDK + OTLP exporters (gRPC/tonic and HTTP/protobuf)
//! talking to the fake collector.

use std::time::Duration;

use fake_collector::{AttrValue, FakeCollector, SpanKind, StatusCode, find};
use opentelemetry::KeyValue;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{
    Span as _, SpanKind as OtelKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

const WAIT: Duration = Duration::from_secs(10);

fn resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_owned())
        .build()
}

/// Emits a SERVER span with a child and a log record inside the child, then
/// flushes both providers (on a blocking thread: flushing blocks).
async fn emit(tracer_provider: SdkTracerProvider, logger_provider: SdkLoggerProvider) {
    let tracer = tracer_provider.tracer("sdk-test");
    let logger = logger_provider.logger("sdk-test-logs");
    let mut root = tracer
        .span_builder("handle request")
        .with_kind(OtelKind::Server)
        .with_attributes([
            KeyValue::new("http.response.status_code", 503_i64),
            KeyValue::new("url.path", "/x"),
        ])
        .start(&tracer);
    root.set_status(Status::error("upstream down"));
    let cx = opentelemetry::Context::current_with_span(root);
    {
        let child = tracer
            .span_builder("call upstream")
            .with_kind(OtelKind::Client)
            .start_with_context(&tracer, &cx);
        let child_cx = cx.with_span(child);
        let child_span = child_cx.span();
        let sc = child_span.span_context();
        let mut record = logger.create_log_record();
        record.set_body(AnyValue::from("upstream refused"));
        record.set_severity_number(Severity::Warn);
        record.set_severity_text("WARN");
        record.add_attribute("attempt", 2_i64);
        record.set_trace_context(sc.trace_id(), sc.span_id(), Some(sc.trace_flags()));
        logger.emit(record);
        child_span.end();
    }
    cx.span().end();

    tokio::task::spawn_blocking(move || {
        tracer_provider.force_flush().unwrap();
        logger_provider.force_flush().unwrap();
        tracer_provider.shutdown().unwrap();
        logger_provider.shutdown().unwrap();
    })
    .await
    .unwrap();
}

async fn check(collector: &FakeCollector, service: &str) {
    let spans = collector.wait_for_spans(|s| s.len() >= 2, WAIT).await;
    let root = find(&spans, "handle request").unwrap();
    let child = find(&spans, "call upstream").unwrap();
    assert_eq!(root.service_name, service);
    assert_eq!(root.scope_name, "sdk-test");
    assert_eq!(root.kind, SpanKind::Server);
    assert_eq!(root.status, StatusCode::Error);
    assert_eq!(root.status_message, "upstream down");
    assert_eq!(
        root.attr("http.response.status_code"),
        Some(&AttrValue::Int(503))
    );
    assert_eq!(root.attr_str("url.path").as_deref(), Some("/x"));
    assert_eq!(root.parent_span_id, "");
    assert_eq!(root.trace_id.len(), 32);
    assert_eq!(root.span_id.len(), 16);
    assert_eq!(root.trace_flags & 0xff, 1, "sampled");
    assert_eq!(child.kind, SpanKind::Client);
    assert_eq!(child.trace_id, root.trace_id);
    assert_eq!(child.parent_span_id, root.span_id);

    let logs = collector.wait_for_logs(|l| !l.is_empty(), WAIT).await;
    let log = &logs[0];
    assert_eq!(log.service_name, service);
    assert_eq!(log.scope_name, "sdk-test-logs");
    assert_eq!(log.body, "upstream refused");
    assert_eq!(log.severity_text, "WARN");
    assert_eq!(log.severity_number, 13);
    assert_eq!(log.attr("attempt"), Some(&AttrValue::Int(2)));
    assert_eq!(log.trace_id, root.trace_id);
    assert_eq!(log.span_id, child.span_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_exporter() {
    let collector = FakeCollector::start().await;
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(collector.grpc_endpoint())
        .build()
        .unwrap();
    let logs = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(collector.grpc_endpoint())
        .build()
        .unwrap();
    emit(
        SdkTracerProvider::builder()
            .with_resource(resource("grpc-svc"))
            .with_batch_exporter(spans)
            .build(),
        SdkLoggerProvider::builder()
            .with_resource(resource("grpc-svc"))
            .with_batch_exporter(logs)
            .build(),
    )
    .await;
    check(&collector, "grpc-svc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_protobuf_exporter() {
    let collector = FakeCollector::start().await;
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(collector.http_traces_endpoint())
        .build()
        .unwrap();
    let logs = opentelemetry_otlp::LogExporter::builder()
        .with_http()
        .with_endpoint(collector.http_logs_endpoint())
        .build()
        .unwrap();
    emit(
        SdkTracerProvider::builder()
            .with_resource(resource("http-svc"))
            .with_batch_exporter(spans)
            .build(),
        SdkLoggerProvider::builder()
            .with_resource(resource("http-svc"))
            .with_batch_exporter(logs)
            .build(),
    )
    .await;
    check(&collector, "http-svc").await;
}
