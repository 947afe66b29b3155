//! A collector that accepts connections and never answers (the worst kind of outage): requests
//! are not held up by exports, the export queue stays bounded and counts what it drops, export
//! failures are logged at most once per interval, and shutdown still ends in bounded time.

mod support;

use std::time::{Duration, Instant};

use axum::routing::get;
use support::{LogCapture, client, get as plain_get, serve};

fn counter(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_collector_neither_slows_requests_nor_floods_the_logs() {
    let collector = fake_collector::black_hole().await;
    let logs = LogCapture::default();
    let mut config = telemetry::TelemetryConfig::new("outage");
    config.otlp_endpoint = Some(format!("http://{collector}"));
    config.export_timeout = Duration::from_secs(2);
    config.scheduled_delay = Duration::from_millis(50);
    config.max_queue_size = 50;
    config.export_error_log_interval = Duration::from_secs(2);
    config.shutdown_timeout = Duration::from_secs(1);
    let guard = telemetry::init_with_writer(config, logs.clone()).expect("init");
    let metrics = guard.metrics().unwrap().clone();

    let app = serve(
        axum::Router::new()
            .route(
                "/work",
                get(|| async {
                    tracing::info!("doing the work");
                    "done"
                }),
            )
            .layer(telemetry::http::ServerLayer::new()),
    )
    .await;
    let http = client();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..200 {
        let t = Instant::now();
        let (status, _, _) = plain_get(&http, &format!("http://{app}/work"), &[]).await;
        assert_eq!(status, 200);
        slowest = slowest.max(t.elapsed());
    }
    // An export on the request path would cost up to the 2 s export timeout.
    assert!(
        slowest < Duration::from_millis(500),
        "a request waited {slowest:?}: exports must stay off the request path"
    );

    // Let several export attempts time out.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let elapsed = started.elapsed();

    let text = metrics.render();
    let dropped = counter(
        &text,
        "otel_sdk_processor_span_processed_total{error_type=\"queue_full\"}",
    );
    let accepted = counter(&text, "otel_sdk_processor_span_processed_total ");
    assert!(
        dropped > 0.0,
        "the bounded queue dropped and counted spans:\n{text}"
    );
    assert_eq!(
        dropped + accepted,
        200.0,
        "every span is either queued or counted as dropped"
    );
    let failed = counter(&text, "otel_sdk_exporter_span_exported_total{error_type=");
    assert!(failed > 0.0, "failed exports are counted:\n{text}");

    let export_errors: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|l| l["target"] == telemetry::export::EXPORT_LOG_TARGET)
        .collect();
    let traces = export_errors
        .iter()
        .filter(|l| l["signal"] == "traces")
        .count();
    let log_errors = export_errors
        .iter()
        .filter(|l| l["signal"] == "logs")
        .count();
    let allowed = (elapsed.as_secs_f64() / 2.0).ceil() as usize + 1;
    assert!(traces + log_errors >= 1, "the outage is reported");
    assert!(
        traces + log_errors <= allowed,
        "at most one report per 2 s interval for all signals together over {elapsed:?}: {traces} trace, {log_errors} log reports"
    );

    let t = Instant::now();
    let result = guard.shutdown().await;
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "shutdown is bounded by its timeout, took {:?}",
        t.elapsed()
    );
    // Whether the SDK reports the lost batch as an error is its business; ours is the bound.
    drop(result);
}
