//! A scan of 1,000 random paths must not create 1,000 span names or metric series.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::routing::get;
use fake_collector::{FakeCollector, SpanKind};
use support::{LogCapture, client, get as plain_get, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_unmatched_paths_share_one_route_in_spans_and_metrics() {
    let collector = FakeCollector::start().await;
    let mut config = telemetry::TelemetryConfig::new("routes");
    config.otlp_endpoint = Some(collector.grpc_endpoint());
    config.scheduled_delay = Duration::from_millis(50);
    config.export_logs = false;
    let guard = telemetry::init_with_writer(config, LogCapture::default()).expect("init");
    let metrics = guard.metrics().expect("recorder installed").clone();

    let app = serve(
        axum::Router::new()
            .route("/orders/{id}", get(|| async { "order" }))
            .layer(telemetry::http::ServerLayer::new()),
    )
    .await;
    let http = client();
    for i in 0..1000 {
        let (status, headers, _) =
            plain_get(&http, &format!("http://{app}/scan/{i}/x{}", i * 7), &[]).await;
        assert_eq!(status, 404);
        assert!(
            headers.contains_key("x-trace-id"),
            "unmatched responses carry x-trace-id too"
        );
    }
    let (status, _, _) = plain_get(&http, &format!("http://{app}/orders/17"), &[]).await;
    assert_eq!(status, 200);
    guard.shutdown().await.expect("flush");

    let spans = collector.spans();
    let server_spans: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect();
    assert_eq!(server_spans.len(), 1001);
    let routes: BTreeSet<String> = server_spans
        .iter()
        .map(|s| {
            s.attr_str("http.route")
                .expect("every server span has http.route")
        })
        .collect();
    let names: BTreeSet<&str> = server_spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        routes,
        BTreeSet::from([
            "/orders/{id}".to_owned(),
            telemetry::http::UNMATCHED_ROUTE.to_owned()
        ])
    );
    assert_eq!(
        names,
        BTreeSet::from(["GET /orders/{id}", "GET unmatched"]),
        "span names never contain the raw path"
    );
    // url.path keeps the raw path for the one looking at a single span.
    assert!(
        server_spans
            .iter()
            .any(|s| s.attr_str("url.path").as_deref() == Some("/scan/999/x6993"))
    );

    let text = metrics.render();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count"))
        .collect();
    assert_eq!(series.len(), 2, "one series per route: {series:#?}");
    let unmatched = series
        .iter()
        .find(|l| l.contains("http_route=\"unmatched\""))
        .expect("the unmatched series");
    assert!(unmatched.contains("http_response_status_code=\"404\""));
    assert!(unmatched.ends_with(" 1000"), "{unmatched}");
    assert!(!text.contains("/scan/"), "no raw path in the metrics");
}
