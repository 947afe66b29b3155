//! On a `current_thread` runtime, `shutdown().await` still flushes over gRPC (the runtime stays
//! free to drive the exporter's connection), and `RUST_LOG=warn` quietens logs without
//! deleting the server spans.

mod support;

use std::time::{Duration, Instant};

use axum::routing::get;
use fake_collector::{FakeCollector, SpanKind};
use support::{LogCapture, client, get as plain_get, serve};

#[tokio::test(flavor = "current_thread")]
async fn shutdown_flushes_on_a_current_thread_runtime_even_with_quiet_logs() {
    let collector = FakeCollector::start().await;
    let logs = LogCapture::default();
    let mut config = telemetry::TelemetryConfig::new("single-thread");
    config.otlp_endpoint = Some(collector.grpc_endpoint());
    // A long delay: only the shutdown flush can deliver the spans in time.
    config.scheduled_delay = Duration::from_secs(60);
    config.log_filter = "warn".into();
    let guard = telemetry::init_with_writer(config, logs.clone()).expect("init");

    let app = serve(
        axum::Router::new()
            .route(
                "/quiet",
                get(|| async {
                    tracing::info!("filtered out by RUST_LOG=warn");
                    tracing::warn!("kept");
                    "ok"
                }),
            )
            .layer(telemetry::http::ServerLayer::new()),
    )
    .await;
    let (_, headers, _) = plain_get(&client(), &format!("http://{app}/quiet"), &[]).await;
    let trace_id = headers["x-trace-id"].to_str().unwrap().to_owned();
    assert!(
        collector.spans().is_empty(),
        "nothing exported before shutdown"
    );

    let t = Instant::now();
    guard.shutdown().await.expect("flush succeeds");
    assert!(t.elapsed() < Duration::from_secs(5));

    let spans = collector.spans();
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server && s.trace_id == trace_id)
        .expect("the server span survives RUST_LOG=warn and is flushed at shutdown");
    assert_eq!(server.name, "GET /quiet");

    let lines = logs.lines();
    assert!(
        lines
            .iter()
            .all(|l| l["message"] != "filtered out by RUST_LOG=warn")
    );
    let kept = lines
        .iter()
        .find(|l| l["message"] == "kept")
        .expect("warn line");
    assert_eq!(kept["trace_id"], trace_id.as_str());
    assert_eq!(kept["level"], "WARN");
}
