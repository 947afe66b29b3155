//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`: spans and logs reach an OTLP/HTTP receiver at
//! `{endpoint}/v1/traces` and `{endpoint}/v1/logs`, and `OTEL_SERVICE_NAME` names the service.

mod support;

use std::time::Duration;

use axum::routing::get;
use fake_collector::FakeCollector;
use support::{LogCapture, client, get as plain_get, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_logs_are_exported_over_http_protobuf() {
    let collector = FakeCollector::start().await;
    let endpoint = collector.http_endpoint();
    let vars = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "renamed-by-env"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    let config = telemetry::TelemetryConfig::new("configured-name")
        .with_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .expect("valid configuration");
    let guard = telemetry::init_with_writer(config, LogCapture::default()).expect("init");

    let app = serve(
        axum::Router::new()
            .route(
                "/ping",
                get(|| async {
                    tracing::info!("pong");
                    "pong"
                }),
            )
            .layer(telemetry::http::ServerLayer::new()),
    )
    .await;
    let (_, headers, _) = plain_get(&client(), &format!("http://{app}/ping"), &[]).await;
    let trace_id = headers["x-trace-id"].to_str().unwrap().to_owned();

    let spans = collector
        .wait_for_spans(
            |s| s.iter().any(|s| s.trace_id == trace_id),
            Duration::from_secs(10),
        )
        .await;
    let span = spans.iter().find(|s| s.trace_id == trace_id).unwrap();
    assert_eq!(span.name, "GET /ping");
    assert_eq!(span.service_name, "renamed-by-env");
    let logs = collector
        .wait_for_logs(
            |l| l.iter().any(|r| r.body == "pong"),
            Duration::from_secs(10),
        )
        .await;
    let record = logs.iter().find(|r| r.body == "pong").unwrap();
    assert_eq!(record.trace_id, trace_id);
    assert_eq!(record.span_id, span.span_id);
    guard.shutdown().await.expect("flush");
}
