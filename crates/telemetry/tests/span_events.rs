//! Events inside a span: every one is a log line and an OTLP log record with the trace and
//! span ids; only those at `span_event_level` (default WARN) and above are copied into the span
//! as span events.

mod support;

use std::time::Duration;

use axum::routing::get;
use fake_collector::{FakeCollector, SpanKind};
use support::{LogCapture, client, get as plain_get, serve};

#[tokio::test]
async fn only_warnings_and_errors_become_span_events_by_default() {
    let collector = FakeCollector::start().await;
    let logs = LogCapture::default();
    let mut config = telemetry::TelemetryConfig::new("span-events");
    config.otlp_endpoint = Some(collector.grpc_endpoint());
    config.scheduled_delay = Duration::from_millis(50);
    let guard = telemetry::init_with_writer(config, logs.clone()).expect("init");

    let app = serve(
        axum::Router::new()
            .route(
                "/work",
                get(|| async {
                    tracing::info!("routine line");
                    tracing::warn!("something to look at");
                    "ok"
                }),
            )
            .layer(telemetry::http::ServerLayer::new()),
    )
    .await;
    let (_, headers, _) = plain_get(&client(), &format!("http://{app}/work"), &[]).await;
    let trace_id = headers["x-trace-id"].to_str().unwrap().to_owned();
    guard.shutdown().await.expect("flush");

    let spans = collector.spans();
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server && s.trace_id == trace_id)
        .expect("the server span");
    let events: Vec<&str> = server.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(events, ["something to look at"], "{:?}", server.events);

    // Both are still log lines and OTLP log records in the request's trace.
    let lines = logs.lines();
    for message in ["routine line", "something to look at"] {
        let line = lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("{message}: {lines:?}"));
        assert_eq!(line["trace_id"], trace_id.as_str());
    }
    let records = collector.logs();
    for message in ["routine line", "something to look at"] {
        let record = records
            .iter()
            .find(|r| r.body == message)
            .unwrap_or_else(|| panic!("{message}: no OTLP log record"));
        assert_eq!(record.trace_id, trace_id);
    }
}
