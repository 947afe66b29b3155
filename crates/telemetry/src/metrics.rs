//! Metrics: the [`metrics`] facade, rendered in the Prometheus text format.
//!
//! Services record with the `metrics` macros (`counter!`, `gauge!`, `histogram!`); this module
//! installs the global recorder from [`metrics_exporter_prometheus`] and hands back a
//! [`MetricsHandle`] whose [`render`](MetricsHandle::render) produces the body of an admin
//! `GET /metrics` endpoint.
//!
//! Three details matter and are easy to get wrong with that exporter:
//! - every histogram gets explicit buckets, otherwise it is rendered as a *summary*, which cannot
//!   be aggregated across instances. Durations are in **seconds** and use the bucket boundaries
//!   the [OpenTelemetry semantic conventions][semconv-http] recommend;
//! - the recorder needs periodic *upkeep* (draining histogram samples); `install_recorder()`
//!   does not start it, so [`MetricsHandle`] runs it on a background thread;
//! - names follow the [Prometheus naming rules][prom]: base units in the name
//!   (`_seconds`, `_bytes`), `_total` on counters, OpenTelemetry dots turned into underscores
//!   (`http.server.request.duration` → `http_server_request_duration_seconds`).
//!
//! Process metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`, …) are
//! read from the OS at every render by [`metrics_process::collector::collect`]. The CPU time is
//! rendered by this module rather than through the recorder: the `metrics` facade's counters
//! hold whole numbers, which would truncate it to whole seconds (see [`ProcessMetrics`]).
//!
//! [semconv-http]: https://opentelemetry.io/docs/specs/semconv/http/http-metrics/
//! [prom]: https://prometheus.io/docs/practices/naming/

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// `http.server.request.duration` (histogram, seconds) with `http_request_method`,
/// `http_route`, `http_response_status_code` (and `error_type` on 5xx).
pub const HTTP_SERVER_REQUEST_DURATION: &str = "http_server_request_duration_seconds";
/// `http.server.active_requests` (gauge, requests) with `http_request_method`.
pub const HTTP_SERVER_ACTIVE_REQUESTS: &str = "http_server_active_requests";
/// `http.client.request.duration` (histogram, seconds) with `http_request_method`,
/// `server_address`, `http_response_status_code` (absent on transport errors) and `error_type`.
pub const HTTP_CLIENT_REQUEST_DURATION: &str = "http_client_request_duration_seconds";
/// `db.client.operation.duration` (histogram, seconds).
pub const DB_CLIENT_OPERATION_DURATION: &str = "db_client_operation_duration_seconds";
/// `messaging.process.duration` (histogram, seconds).
pub const MESSAGING_PROCESS_DURATION: &str = "messaging_process_duration_seconds";
/// `otel.sdk.processor.span.processed` (counter, spans): spans handed to the batch processor;
/// `error_type="queue_full"` marks the ones dropped because the export queue was full.
pub const OTEL_SDK_PROCESSOR_SPAN_PROCESSED: &str = "otel_sdk_processor_span_processed_total";
/// `otel.sdk.exporter.span.exported` (counter, spans): spans the exporter sent;
/// `error_type` is set on the ones that failed.
pub const OTEL_SDK_EXPORTER_SPAN_EXPORTED: &str = "otel_sdk_exporter_span_exported_total";
/// `otel.sdk.exporter.log.exported` (counter, log records), like the span counter.
pub const OTEL_SDK_EXPORTER_LOG_EXPORTED: &str = "otel_sdk_exporter_log_exported_total";

/// Bucket boundaries (seconds) of `http.server.request.duration`,
/// `http.client.request.duration` and `messaging.process.duration`, from the
/// [semantic conventions](https://opentelemetry.io/docs/specs/semconv/http/http-metrics/#metric-httpserverrequestduration).
pub const DURATION_BUCKETS_SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Bucket boundaries (seconds) of `db.client.operation.duration`, from the
/// [semantic conventions](https://opentelemetry.io/docs/specs/semconv/database/database-metrics/#metric-dbclientoperationduration).
pub const DB_DURATION_BUCKETS_SECONDS: [f64; 9] =
    [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// How often histogram samples are drained when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Error from [`install_recorder`].
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Another global `metrics` recorder is already installed in this process.
    #[error(
        "a global metrics recorder is already installed; set `install_metrics_recorder = false` \
         to keep it: {0}"
    )]
    AlreadyInstalled(String),
    /// The exporter rejected the bucket configuration (a bug in this crate).
    #[error("invalid Prometheus exporter configuration: {0}")]
    Build(String),
}

/// Renders the Prometheus text exposition of everything recorded in this process.
/// Cheap to clone; all clones render the same registry.
#[derive(Clone)]
pub struct MetricsHandle {
    prometheus: PrometheusHandle,
    upkeep_running: Arc<AtomicBool>,
}

impl std::fmt::Debug for MetricsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsHandle").finish_non_exhaustive()
    }
}

impl MetricsHandle {
    /// The [Prometheus text format 0.0.4](https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format)
    /// body for `GET /metrics` (serve it as `text/plain; version=0.0.4; charset=utf-8`).
    /// Samples the process metrics first so they are current.
    pub fn render(&self) -> String {
        let cpu_seconds = ProcessMetrics::record();
        let mut text = self.prometheus.render();
        if let Some(seconds) = cpu_seconds {
            ProcessMetrics::render_cpu_seconds(&mut text, seconds);
        }
        text
    }

    /// The `Content-Type` that goes with [`render`](Self::render).
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// Stops the upkeep thread (idempotent). Called by [`crate::TelemetryGuard`] on shutdown.
    pub fn stop_upkeep(&self) {
        self.upkeep_running.store(false, Ordering::Release);
    }
}

/// Builds the Prometheus recorder with semantic-convention buckets and installs it as the
/// global `metrics` recorder, starts upkeep and describes the metrics this crate records.
///
/// # Errors
/// [`MetricsError::AlreadyInstalled`] when the process already has a global recorder.
pub fn install_recorder() -> Result<MetricsHandle, MetricsError> {
    let prometheus = builder()?
        .install_recorder()
        .map_err(|e| MetricsError::AlreadyInstalled(e.to_string()))?;
    Ok(start(prometheus))
}

/// A recorder that is *not* installed globally, for tests and benchmarks that use
/// [`metrics::with_local_recorder`]. Returns the recorder and its handle.
pub fn local_recorder() -> (
    metrics_exporter_prometheus::PrometheusRecorder,
    MetricsHandle,
) {
    let recorder = builder()
        .expect("static bucket configuration is valid")
        .build_recorder();
    let handle = start(recorder.handle());
    (recorder, handle)
}

fn builder() -> Result<PrometheusBuilder, MetricsError> {
    let build = |e: metrics_exporter_prometheus::BuildError| MetricsError::Build(e.to_string());
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(DB_CLIENT_OPERATION_DURATION.to_owned()),
            &DB_DURATION_BUCKETS_SECONDS,
        )
        .map_err(build)?
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_owned()),
            &DURATION_BUCKETS_SECONDS,
        )
        .map_err(build)
}

fn start(prometheus: PrometheusHandle) -> MetricsHandle {
    ProcessMetrics::describe();
    describe();
    let upkeep_running = Arc::new(AtomicBool::new(true));
    let running = upkeep_running.clone();
    let upkeep = prometheus.clone();
    // A plain thread, not a tokio task: it must work whatever runtime (if any) the caller uses
    // and must not compete with request handling for a runtime worker.
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            while running.load(Ordering::Acquire) {
                std::thread::park_timeout(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the metrics upkeep thread; histograms are drained at scrape time only");
    }
    MetricsHandle {
        prometheus,
        upkeep_running,
    }
}

/// The [process metrics](https://prometheus.io/docs/instrumenting/writing_clientlibs/#process-metrics)
/// every Prometheus client library exposes, read from the OS (`/proc` on Linux) by
/// `metrics_process`.
///
/// `process_cpu_seconds_total` is a counter of seconds with a fractional part (the kernel counts
/// in ticks of 1/100 s). `metrics_process::Collector` records it through a `metrics` counter,
/// which holds whole numbers only, so a service at 1 % of a core would show a step once every
/// 100 s and `rate()` would read zero in between; this module appends it to the rendered text
/// itself, at full precision. The other process metrics are gauges and go through the recorder.
struct ProcessMetrics;

impl ProcessMetrics {
    const CPU_SECONDS_TOTAL: &'static str = "process_cpu_seconds_total";

    fn describe() {
        use metrics::{Unit, describe_gauge};
        describe_gauge!(
            "process_open_fds",
            Unit::Count,
            "Number of open file descriptors."
        );
        describe_gauge!(
            "process_max_fds",
            Unit::Count,
            "Maximum number of open file descriptors."
        );
        describe_gauge!(
            "process_virtual_memory_bytes",
            Unit::Bytes,
            "Virtual memory size in bytes."
        );
        describe_gauge!(
            "process_virtual_memory_max_bytes",
            Unit::Bytes,
            "Maximum amount of virtual memory available in bytes."
        );
        describe_gauge!(
            "process_resident_memory_bytes",
            Unit::Bytes,
            "Resident memory size in bytes."
        );
        describe_gauge!(
            "process_start_time_seconds",
            Unit::Seconds,
            "Start time of the process since unix epoch in seconds."
        );
        describe_gauge!(
            "process_threads",
            Unit::Count,
            "Number of OS threads in the process."
        );
    }

    /// Reads the process metrics, records the gauges and returns the CPU time in seconds
    /// (`None` where the OS does not say).
    fn record() -> Option<f64> {
        use metrics::gauge;
        let m = metrics_process::collector::collect();
        let gauges = [
            ("process_open_fds", m.open_fds),
            ("process_max_fds", m.max_fds),
            ("process_virtual_memory_bytes", m.virtual_memory_bytes),
            (
                "process_virtual_memory_max_bytes",
                m.virtual_memory_max_bytes,
            ),
            ("process_resident_memory_bytes", m.resident_memory_bytes),
            ("process_start_time_seconds", m.start_time_seconds),
            ("process_threads", m.threads),
        ];
        for (name, value) in gauges {
            if let Some(value) = value {
                gauge!(name).set(value as f64);
            }
        }
        m.cpu_seconds_total
    }

    /// Appends the `process_cpu_seconds_total` counter family to a text exposition.
    fn render_cpu_seconds(text: &mut String, seconds: f64) {
        use std::fmt::Write as _;
        let name = Self::CPU_SECONDS_TOTAL;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        // `f64`'s `Display` never uses an exponent: a valid Prometheus float.
        let _ = write!(
            text,
            "# HELP {name} Total user and system CPU time spent in seconds.\n\
             # TYPE {name} counter\n\
             {name} {seconds}\n"
        );
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        HTTP_SERVER_REQUEST_DURATION,
        Unit::Seconds,
        "Duration of HTTP server requests."
    );
    describe_gauge!(
        HTTP_SERVER_ACTIVE_REQUESTS,
        "Number of active HTTP server requests."
    );
    describe_histogram!(
        HTTP_CLIENT_REQUEST_DURATION,
        Unit::Seconds,
        "Duration of HTTP client requests."
    );
    describe_histogram!(
        DB_CLIENT_OPERATION_DURATION,
        Unit::Seconds,
        "Duration of database client operations."
    );
    describe_counter!(
        OTEL_SDK_PROCESSOR_SPAN_PROCESSED,
        "Spans handed to the batch span processor; error_type=queue_full marks dropped spans."
    );
    describe_counter!(
        OTEL_SDK_EXPORTER_SPAN_EXPORTED,
        "Spans sent to the OTLP collector; error_type marks failed exports."
    );
    describe_counter!(
        OTEL_SDK_EXPORTER_LOG_EXPORTED,
        "Log records sent to the OTLP collector; error_type marks failed exports."
    );
}
