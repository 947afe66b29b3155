//! The `/metrics` body parses as Prometheus text, and durations are histograms (not
//! summaries) with the semantic-convention buckets, in seconds.

use axum::body::Body;
use axum::routing::get;
use openmetrics_parser::{MetricFamily, MetricNumber, PrometheusType, PrometheusValue};
use tower::ServiceExt;

type Family = MetricFamily<PrometheusType, PrometheusValue>;

fn label<'a>(
    family: &'a Family,
    sample: &'a openmetrics_parser::Sample<PrometheusValue>,
    name: &str,
) -> Option<String> {
    let _ = family;
    sample
        .get_labelset()
        .ok()?
        .get_label_value(name)
        .map(str::to_owned)
}

#[tokio::test]
async fn rendered_metrics_parse_and_histograms_carry_the_semconv_buckets() {
    let handle = telemetry::metrics::install_recorder().expect("recorder");
    let app = axum::Router::new()
        .route("/orders/{id}", get(|| async { "ok" }))
        .route(
            "/fail",
            get(|| async { (http::StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .layer(telemetry::http::ServerLayer::new());
    for uri in ["/orders/1", "/orders/2", "/fail", "/nowhere"] {
        let req = http::Request::get(uri).body(Body::empty()).unwrap();
        app.clone().oneshot(req).await.unwrap();
    }

    let text = handle.render();
    let scrape = openmetrics_parser::prometheus::parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("invalid Prometheus text ({e:?}):\n{text}"));

    let durations = &scrape.families["http_server_request_duration_seconds"];
    assert_eq!(durations.family_type, PrometheusType::Histogram);
    let samples: Vec<_> = durations.iter_samples().collect();
    assert_eq!(samples.len(), 3, "three (route, status) series:\n{text}");
    let expected_le = telemetry::metrics::DURATION_BUCKETS_SECONDS.to_vec();
    for sample in &samples {
        let PrometheusValue::Histogram(h) = &sample.value else {
            panic!("not a histogram: {sample:?}");
        };
        let le: Vec<f64> = h
            .buckets
            .iter()
            .map(|b| b.upper_bound)
            .filter(|v| v.is_finite())
            .collect();
        assert_eq!(
            le, expected_le,
            "semantic-convention boundaries, in seconds"
        );
        assert!(
            h.buckets.iter().any(|b| b.upper_bound.is_infinite()),
            "+Inf bucket"
        );
    }
    let failed = samples
        .iter()
        .find(|s| label(durations, s, "http_response_status_code").as_deref() == Some("503"))
        .expect("503 series");
    assert_eq!(
        label(durations, failed, "error_type").as_deref(),
        Some("503")
    );
    assert_eq!(
        label(durations, failed, "http_route").as_deref(),
        Some("/fail")
    );
    assert!(
        samples
            .iter()
            .any(|s| label(durations, s, "http_route").as_deref() == Some("unmatched"))
    );
    assert!(!text.contains("quantile="), "no summaries");

    // Active requests went back to zero; process metrics are present.
    let active = &scrape.families["http_server_active_requests"];
    let value = &active.iter_samples().next().expect("a sample").value;
    assert!(
        matches!(value, PrometheusValue::Gauge(MetricNumber::Float(v)) if *v == 0.0)
            || matches!(value, PrometheusValue::Gauge(MetricNumber::Int(0))),
        "{value:?}"
    );
    assert!(
        scrape
            .families
            .contains_key("process_resident_memory_bytes")
    );
    assert!(scrape.families.contains_key("process_cpu_seconds_total"));
}
