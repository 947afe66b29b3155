//! Which events become OTLP log records with `LOG_FORMAT=json`: all that pass `RUST_LOG`,
//! except those of the exporter's own targets. (A file of its own: `init` installs
//! process-wide state once; `log_targets_pretty.rs` checks the `pretty` format.)

mod support;

#[tokio::test]
async fn exporter_targets_are_log_lines_but_never_otlp_records() {
    support::exporter_targets_are_log_lines_but_never_otlp_records(telemetry::LogFormat::Json)
        .await;
}
