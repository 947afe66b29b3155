//! Export work runs on threads of its own, nicer than the service: the `otel-export` thread
//! (which drives the gRPC connections and encodes the batches) and the SDK's batch-processor
//! threads. So `init`, export and the flush on drop need no tokio runtime of the caller's.

use std::time::Duration;

use fake_collector::FakeCollector;
use telemetry::export_thread::{EXPORT_THREAD_NAME, nice_of_stat, thread_nice_values};

/// The calling thread's nice value.
fn own_nice() -> i32 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("procfs");
    nice_of_stat(&stat).expect("a stat line")
}

#[test]
fn export_runs_on_its_own_nicer_threads_without_the_callers_runtime() {
    // The collector has a runtime of its own; the code under test runs on none.
    let collector_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let collector = collector_rt.block_on(FakeCollector::start());
    assert!(tokio::runtime::Handle::try_current().is_err());

    let mut config = telemetry::TelemetryConfig::new("export-thread");
    config.otlp_endpoint = Some(collector.grpc_endpoint());
    config.scheduled_delay = Duration::from_millis(50);
    config.export_nice = 7;
    let guard = telemetry::init_with_writer(config, std::io::sink).expect("init with no runtime");

    tracing::info_span!("outside any runtime").in_scope(|| tracing::info!("a record"));
    collector_rt.block_on(collector.wait_for_spans(
        |spans| spans.iter().any(|s| s.name == "outside any runtime"),
        Duration::from_secs(10),
    ));
    collector_rt.block_on(collector.wait_for_logs(
        |logs| logs.iter().any(|l| l.body == "a record"),
        Duration::from_secs(10),
    ));

    let expected = (own_nice() + 7).min(19);
    for name in [
        EXPORT_THREAD_NAME,
        "OpenTelemetry.Traces.BatchProcessor",
        "OpenTelemetry.Logs.BatchProcessor",
    ] {
        assert_eq!(
            thread_nice_values(name),
            vec![expected],
            "thread {name} runs 7 steps nicer than the service"
        );
    }

    // Dropping the guard flushes (still with no runtime here) and then stops the thread.
    tracing::info_span!("flushed on drop").in_scope(|| {});
    drop(guard);
    assert!(
        collector
            .spans()
            .iter()
            .any(|s| s.name == "flushed on drop"),
        "the flush on drop went out over the export thread's connection"
    );
    // Joined; /proc may list the thread for a moment longer.
    let gone = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        thread_nice_values(EXPORT_THREAD_NAME).is_empty()
    });
    assert!(gone, "the export thread ends after the flush");
}
