//! As `log_targets.rs`, with `LOG_FORMAT=pretty`: the OTLP log records do not depend on the
//! format of the log lines.

mod support;

#[tokio::test]
async fn exporter_targets_are_log_lines_but_never_otlp_records() {
    support::exporter_targets_are_log_lines_but_never_otlp_records(telemetry::LogFormat::Pretty)
        .await;
}
