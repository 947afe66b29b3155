//! Which events become OTLP log records: all that pass `RUST_LOG`, except those of the
//! exporter's own targets. (A file of its own: `init` installs process-wide state once.)

mod support;

use std::time::Duration;

use fake_collector::FakeCollector;
use support::LogCapture;

/// The exporter's own targets (its transport, the SDK, `telemetry::export`) are log lines like
/// any other, but never OTLP log records: a record about an export would feed the next export.
#[tokio::test]
async fn exporter_targets_are_log_lines_but_never_otlp_records() {
    let collector = FakeCollector::start().await;
    let logs = LogCapture::default();
    let mut config = telemetry::TelemetryConfig::new("log-targets");
    config.otlp_endpoint = Some(collector.grpc_endpoint());
    config.scheduled_delay = Duration::from_millis(50);
    config.log_filter = "info".into();
    let guard = telemetry::init_with_writer(config, logs.clone()).expect("init");

    tracing::info!(target: "h2::codec", "from h2");
    tracing::info!(target: "hyper_util::client", "from hyper_util");
    tracing::info!(target: "opentelemetry_sdk", "from the sdk");
    tracing::warn!(target: telemetry::export::EXPORT_LOG_TARGET, "from the exporter");
    // A target that only shares a prefix with an excluded one by chance is excluded as well
    // (the rule of a `tower=off` directive); a target merely containing one is not.
    tracing::info!(target: "tower_http::trace", "from tower_http");
    tracing::info!(target: "app::h2", "from the app");
    tracing::debug!(target: "app", "below the filter");
    guard.shutdown().await.expect("flush");

    let lines = logs.lines();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    for message in [
        "from h2",
        "from hyper_util",
        "from the sdk",
        "from the exporter",
        "from tower_http",
        "from the app",
    ] {
        assert!(messages.contains(&message), "{message}: {messages:?}");
    }
    assert!(!messages.contains(&"below the filter"), "{messages:?}");

    let records: Vec<String> = collector.logs().into_iter().map(|r| r.body).collect();
    assert_eq!(records, ["from the app"], "OTLP log records");
}
