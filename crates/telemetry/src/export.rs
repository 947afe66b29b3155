//! The export path, made safe for a collector that is slow, down or missing.
//!
//! A service must not slow down, grow without bound or flood its own logs because the
//! OpenTelemetry Collector went away. The SDK's batch processor already exports off the request
//! path; this module adds what it lacks:
//!
//! - [`BoundedSpanProcessor`] puts an exact, observable bound on the spans waiting for export.
//!   The SDK drops spans when its channel is full but only keeps a private count; here every
//!   drop is counted in `otel_sdk_processor_span_processed_total{error_type="queue_full"}`
//!   (the [SDK self-observability metric][sdk-metrics] in Prometheus spelling).
//! - [`ObservedSpanExporter`] and [`ObservedLogExporter`] count what was exported and what
//!   failed (`otel_sdk_exporter_{span,log}_exported_total{error_type}`) and report failures in
//!   the log **at most once per interval**, with the number of failures they held back.
//!
//! - [`ExportState`], shared by both exporters, remembers whether the last export (of any
//!   signal) failed. At shutdown, once [`ExportState::begin_shutdown`] is called, an exporter
//!   whose collector failed the last export gives up on the final batches at once instead of
//!   retrying each with backoff (opentelemetry-otlp's retry policy spends ~0.8 s on a batch
//!   the collector refuses). If nothing listens at the collector's address (a TCP connection
//!   is refused), an export already under way when the shutdown began is abandoned too.
//!   While the collector answers, the final batches are exported as usual.
//!
//! The failure reports use the target `telemetry::export`, which the OTLP log pipeline
//! excludes: a report about a failing export must never itself be queued for that export.
//!
//! [sdk-metrics]: https://opentelemetry.io/docs/specs/semconv/otel/sdk-metrics/

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

use crate::metrics::{
    OTEL_SDK_EXPORTER_LOG_EXPORTED, OTEL_SDK_EXPORTER_SPAN_EXPORTED,
    OTEL_SDK_PROCESSOR_SPAN_PROCESSED,
};

/// The `tracing` target of export failure reports. Excluded from OTLP log export.
pub const EXPORT_LOG_TARGET: &str = "telemetry::export";

/// Reports export failures at most once per interval, counting the ones it held back.
///
/// Reporters made with [`for_signal`](Self::for_signal) share one budget: a process whose
/// collector is gone writes one line per interval in all, not one per signal.
#[derive(Clone, Debug)]
pub struct ErrorReporter {
    signal: &'static str,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct Gate {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl ErrorReporter {
    /// A reporter for `signal` (`"traces"` or `"logs"`) that logs at most once per `interval`.
    pub fn new(signal: &'static str, interval: Duration) -> Self {
        Self {
            signal,
            gate: Arc::new(Gate {
                interval,
                last: Mutex::new(None),
                suppressed: AtomicU64::new(0),
            }),
        }
    }

    /// A reporter for another `signal` that shares this one's budget (its interval, its last
    /// line and its count of failures held back).
    pub fn for_signal(&self, signal: &'static str) -> Self {
        Self {
            signal,
            gate: self.gate.clone(),
        }
    }

    /// Records one failed export of `items` items; logs a warning unless one was logged (for
    /// any signal sharing the budget) less than `interval` ago. Returns whether a line was
    /// written.
    pub fn report(&self, error: &OTelSdkError, items: usize) -> bool {
        let gate = &self.gate;
        let now = Instant::now();
        {
            let mut last = gate.last.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = *last
                && now.duration_since(t) < gate.interval
            {
                gate.suppressed.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            *last = Some(now);
        }
        let suppressed = gate.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            target: EXPORT_LOG_TARGET,
            signal = self.signal,
            error = %error,
            items,
            suppressed_failures = suppressed,
            report_interval_s = gate.interval.as_secs_f64(),
            "OTLP export failed; is the collector reachable? Further failures (of any signal) are reported at most once per interval"
        );
        true
    }
}

/// Whether the collector failed the last export, and whether the process is shutting down:
/// shared by the span and log exporters (clones share one state).
///
/// An exporter with a state (`with_state`) skips its export, failing it at once, when both
/// hold: the final batches of a process whose collector is unreachable are not retried.
///
/// A state made with [`for_collector`](Self::for_collector) also knows where the collector
/// is. At [`begin_shutdown`](Self::begin_shutdown), unless the last export is known to have
/// succeeded with none under way, it tries a TCP connection there; if every address refuses
/// it (nothing listens), the collector counts as down: the final batches are skipped, and an
/// export already under way (opentelemetry-otlp retries a refused connection 3 times, ~0.8 s
/// of backoff) is abandoned at once. Any other outcome (connected, timed out, a name not
/// resolved within 200 ms) leaves export as it was.
#[derive(Clone, Debug, Default)]
pub struct ExportState(Arc<ExportStateInner>);

#[derive(Debug, Default)]
struct ExportStateInner {
    last_export_failed: std::sync::atomic::AtomicBool,
    /// An export of at least one item has completed (so `last_export_failed` means something).
    exported_once: std::sync::atomic::AtomicBool,
    shutting_down: std::sync::atomic::AtomicBool,
    /// Set at shutdown when nothing listens at the collector's address.
    collector_down: std::sync::atomic::AtomicBool,
    /// Exports under way.
    in_flight: AtomicUsize,
    /// Set by [`ExportState::stop_exports`]: the export runtime is about to stop.
    stopped: std::sync::atomic::AtomicBool,
    /// Exports being polled right now (see [`ExportState::stop_exports`]).
    polling: AtomicUsize,
    /// Wakes the exports under way when `collector_down` or `stopped` is set.
    abandon: tokio::sync::Notify,
    /// `host:port` of the collector, probed at shutdown.
    collector: Option<String>,
    /// The runtime the exporters' connections run on: entered while an export is polled, so
    /// that opentelemetry-otlp waits out its retry backoff with a tokio timer (which an
    /// abandoned export can stop) rather than by blocking the export thread in `sleep(2)`.
    runtime: Option<tokio::runtime::Handle>,
}

/// How long the shutdown probe waits for each address of the collector.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

impl ExportState {
    /// A state for exporters sending to `endpoint` (an OTLP endpoint URL such as
    /// `http://localhost:4317`; a URL without a port gets its scheme's, 80 or 443; `None`: no
    /// probe at shutdown, e.g. for an exporter that reaches the collector through a proxy),
    /// whose connections run on `runtime` (if any). See the type's docs for what it does at
    /// shutdown.
    pub fn for_collector(endpoint: Option<&str>, runtime: Option<tokio::runtime::Handle>) -> Self {
        let collector = endpoint.and_then(collector_address);
        Self(Arc::new(ExportStateInner {
            collector,
            runtime,
            ..Default::default()
        }))
    }

    /// From now on, an export is skipped (and counted as failed) while the last export of any
    /// signal sharing this state failed, or while nothing listens at the collector's address
    /// (probed now, see the type's docs; this may block for a few hundred milliseconds, so
    /// call it from a thread that may block). Call it just before shutting the providers down.
    pub fn begin_shutdown(&self) {
        let inner = &self.0;
        inner.shutting_down.store(true, Ordering::SeqCst);
        let known_good = inner.exported_once.load(Ordering::Acquire)
            && !self.last_export_failed()
            && inner.in_flight.load(Ordering::SeqCst) == 0;
        if !known_good
            && let Some(collector) = &inner.collector
            && nothing_listens(collector)
        {
            inner.collector_down.store(true, Ordering::Release);
            inner.abandon.notify_waiters();
        }
    }

    /// Ends every export still under way, before the runtime its connections run on stops (a
    /// shutdown that timed out leaves the SDK's batch threads exporting; polling a tokio timer
    /// of a stopped runtime panics). Waits for a poll in progress to return (at most 100 ms;
    /// polls do not block). Exports started later fail at once.
    pub(crate) fn stop_exports(&self) {
        let inner = &self.0;
        inner.stopped.store(true, Ordering::SeqCst);
        inner.abandon.notify_waiters();
        let deadline = Instant::now() + Duration::from_millis(100);
        while inner.polling.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether the last export (of any signal sharing this state) failed.
    pub fn last_export_failed(&self) -> bool {
        self.0.last_export_failed.load(Ordering::Acquire)
    }

    /// Runs `export` (of `items` items) and records its outcome, or fails at once without
    /// running it when [`skip_at_shutdown`](Self::skip_at_shutdown) says so; abandons it
    /// (failed) if the shutdown finds the collector down while it runs.
    async fn export(
        &self,
        items: usize,
        export: impl std::future::Future<Output = OTelSdkResult>,
    ) -> OTelSdkResult {
        let inner = &self.0;
        // Created before the checks below: it hears a `notify_waiters` from then on.
        let mut abandon = std::pin::pin!(inner.abandon.notified());
        if let Some(skipped) = self.skip_at_shutdown() {
            return Err(skipped);
        }
        inner.in_flight.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight(&inner.in_flight);
        let mut export = std::pin::pin!(export);
        let result = std::future::poll_fn(|cx| {
            // Counted before `stopped` is read: `stop_exports` sets it, then waits for this
            // count to fall to 0 (both sequentially consistent), so the export is either not
            // polled or polled to the end of this poll before the runtime stops.
            inner.polling.fetch_add(1, Ordering::SeqCst);
            let _polling = InFlight(&inner.polling);
            if inner.stopped.load(Ordering::SeqCst) {
                return std::task::Poll::Ready(Err(OTelSdkError::InternalFailure(
                    "not exported: telemetry shut down before the export finished".into(),
                )));
            }
            if abandon.as_mut().poll(cx).is_ready() || inner.collector_down.load(Ordering::Acquire)
            {
                return std::task::Poll::Ready(Err(abandoned()));
            }
            let _entered = inner.runtime.as_ref().map(tokio::runtime::Handle::enter);
            export.as_mut().poll(cx)
        })
        .await;
        self.record(&result, items);
        result
    }

    /// Records the outcome of an export of `items` items. An empty batch says nothing about
    /// the collector (an exporter may answer it without a request), so it is not recorded.
    fn record(&self, result: &OTelSdkResult, items: usize) {
        if items > 0 {
            self.0
                .last_export_failed
                .store(result.is_err(), Ordering::Release);
            self.0.exported_once.store(true, Ordering::Release);
        }
    }

    /// The error an export skipped at shutdown fails with, or `None` to export.
    fn skip_at_shutdown(&self) -> Option<OTelSdkError> {
        let inner = &self.0;
        if inner.stopped.load(Ordering::SeqCst) {
            return Some(OTelSdkError::InternalFailure(
                "not exported: telemetry has shut down".into(),
            ));
        }
        if inner.collector_down.load(Ordering::Acquire) {
            return Some(abandoned());
        }
        (inner.shutting_down.load(Ordering::Acquire) && self.last_export_failed()).then(|| {
            OTelSdkError::InternalFailure(
                "not exported: shutting down, and the collector failed the last export (not retried)"
                    .into(),
            )
        })
    }
}

/// The `host:port` an OTLP endpoint URL connects to (`http://localhost:4317` →
/// `localhost:4317`; without a port, the scheme's: 80, or 443 for `https`; an IPv6 host keeps
/// its brackets). `None` for a value that is not a URL with a host.
pub fn collector_address(endpoint: &str) -> Option<String> {
    let uri = endpoint.parse::<http::Uri>().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    Some(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// The error of an export skipped or abandoned because nothing listens at the collector's
/// address at shutdown.
fn abandoned() -> OTelSdkError {
    OTelSdkError::InternalFailure(
        "not exported: shutting down, and nothing listens at the collector's address".into(),
    )
}

/// Decrements a count when dropped: an export under way (abandoned or cancelled ones too), or
/// one being polled.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether every address of `collector` (`host:port`) refuses a TCP connection: nothing
/// listens there. `false` when one accepts, or when the answer is unclear (the name not
/// resolved within [`PROBE_TIMEOUT`], no address, a timeout, another error).
fn nothing_listens(collector: &str) -> bool {
    use std::net::ToSocketAddrs;
    // The name lookup blocks for as long as the resolver takes: on a thread of its own,
    // abandoned if it has not answered in time.
    let (tx, rx) = std::sync::mpsc::channel();
    let name = collector.to_owned();
    if std::thread::Builder::new()
        .name("otel-probe".into())
        .spawn(move || {
            let _ = tx.send(name.to_socket_addrs().map(Vec::from_iter));
        })
        .is_err()
    {
        return false;
    }
    let Ok(Ok(addrs)) = rx.recv_timeout(PROBE_TIMEOUT) else {
        return false;
    };
    let mut refused = false;
    for addr in addrs {
        match std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused = true,
            _ => return false,
        }
    }
    refused
}

/// The `error_type` label of a failed export.
fn error_type(error: &OTelSdkError) -> &'static str {
    match error {
        OTelSdkError::Timeout(_) => "timeout",
        OTelSdkError::AlreadyShutdown => "already_shutdown",
        OTelSdkError::InternalFailure(_) => "export_failed",
    }
}

/// Spans accepted by [`BoundedSpanProcessor`] and not yet handed to the exporter.
#[derive(Clone, Debug, Default)]
pub struct PendingSpans(Arc<AtomicUsize>);

impl PendingSpans {
    /// The current number of spans waiting for export.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// A function applied to every sampled span just before it is queued for export (to redact an
/// attribute, add one, or — in Faultline's `telemetry.clock_skew` fault — shift the timestamps).
/// It runs on the thread that ends the span, so keep it cheap.
#[derive(Clone)]
pub struct SpanHook(Arc<dyn Fn(&mut SpanData) + Send + Sync>);

impl SpanHook {
    /// Wraps `hook`.
    pub fn new(hook: impl Fn(&mut SpanData) + Send + Sync + 'static) -> Self {
        Self(Arc::new(hook))
    }
}

impl std::fmt::Debug for SpanHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpanHook")
    }
}

/// A span processor that admits at most `max_queue_size` spans waiting for export and passes
/// them to an inner processor (normally the SDK's `BatchSpanProcessor`, built with an
/// [`ObservedSpanExporter`] sharing the same [`PendingSpans`] and a larger queue, so the inner
/// queue can never overflow).
#[derive(Debug)]
pub struct BoundedSpanProcessor<P> {
    inner: P,
    pending: PendingSpans,
    max_queue_size: usize,
    hook: Option<SpanHook>,
    /// `otel_sdk_processor_span_processed_total` without `error_type`, looked up in the
    /// recorder at the first span rather than on every span.
    processed: std::sync::OnceLock<metrics::Counter>,
}

impl<P: SpanProcessor> BoundedSpanProcessor<P> {
    /// Wraps `inner`; `pending` must be the counter given to the exporter inside `inner`.
    /// Install the `metrics` recorder before the first span ends: the processor keeps the
    /// counter handle it gets then.
    pub fn new(inner: P, pending: PendingSpans, max_queue_size: usize) -> Self {
        Self {
            inner,
            pending,
            max_queue_size,
            hook: None,
            processed: std::sync::OnceLock::new(),
        }
    }

    /// Applies `hook` to every admitted span before it is queued.
    pub fn with_hook(mut self, hook: Option<SpanHook>) -> Self {
        self.hook = hook;
        self
    }
}

impl<P: SpanProcessor> SpanProcessor for BoundedSpanProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let before = self.pending.0.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_queue_size {
            self.pending.0.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!(OTEL_SDK_PROCESSOR_SPAN_PROCESSED, "error_type" => "queue_full")
                .increment(1);
            return;
        }
        self.processed
            .get_or_init(|| metrics::counter!(OTEL_SDK_PROCESSOR_SPAN_PROCESSED))
            .increment(1);
        if let Some(hook) = &self.hook {
            (hook.0)(&mut span);
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A span exporter that counts exported and failed spans, releases them from
/// [`PendingSpans`], and reports failures through an [`ErrorReporter`].
pub struct ObservedSpanExporter<E> {
    inner: E,
    pending: PendingSpans,
    reporter: ErrorReporter,
    state: ExportState,
    nice: u8,
}

impl<E> fmt::Debug for ObservedSpanExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservedSpanExporter")
            .finish_non_exhaustive()
    }
}

impl<E: SpanExporter> ObservedSpanExporter<E> {
    /// Wraps `inner`; failures are logged at most once per `report_interval`.
    pub fn new(inner: E, pending: PendingSpans, report_interval: Duration) -> Self {
        Self {
            inner,
            pending,
            reporter: ErrorReporter::new("traces", report_interval),
            state: ExportState::default(),
            nice: 0,
        }
    }

    /// Lowers the priority of the thread that exports by `nice` steps, at its first export
    /// (see [`crate::export_thread`]). Only for a processor with an export thread of its own,
    /// such as the SDK's `BatchSpanProcessor`: with one that exports on the caller's thread it
    /// would slow the caller down.
    pub fn with_export_nice(mut self, nice: u8) -> Self {
        self.nice = nice;
        self
    }

    /// Reports failures through `reporter` (e.g. one sharing its budget with the log
    /// exporter's) instead of its own.
    pub fn with_reporter(mut self, reporter: ErrorReporter) -> Self {
        self.reporter = reporter;
        self
    }

    /// Shares `state` (see [`ExportState`]), e.g. with the log exporter, instead of keeping
    /// one of its own.
    pub fn with_state(mut self, state: ExportState) -> Self {
        self.state = state;
        self
    }
}

impl<E: SpanExporter> SpanExporter for ObservedSpanExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        crate::export_thread::lower_this_export_thread_once(self.nice);
        let n = batch.len();
        // The spans have left the queue: they no longer count against its bound.
        let _ = self
            .pending
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.saturating_sub(n))
            });
        let result = self.state.export(n, self.inner.export(batch)).await;
        match &result {
            Ok(()) => metrics::counter!(OTEL_SDK_EXPORTER_SPAN_EXPORTED).increment(n as u64),
            Err(e) => {
                metrics::counter!(OTEL_SDK_EXPORTER_SPAN_EXPORTED, "error_type" => error_type(e))
                    .increment(n as u64);
                self.reporter.report(e, n);
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A log exporter that counts exported and failed records and reports failures through an
/// [`ErrorReporter`].
pub struct ObservedLogExporter<E> {
    inner: E,
    reporter: ErrorReporter,
    state: ExportState,
    nice: u8,
}

impl<E> fmt::Debug for ObservedLogExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservedLogExporter")
            .finish_non_exhaustive()
    }
}

impl<E: LogExporter> ObservedLogExporter<E> {
    /// Wraps `inner`; failures are logged at most once per `report_interval`.
    pub fn new(inner: E, report_interval: Duration) -> Self {
        Self {
            inner,
            reporter: ErrorReporter::new("logs", report_interval),
            state: ExportState::default(),
            nice: 0,
        }
    }

    /// As [`ObservedSpanExporter::with_export_nice`], for the SDK's `BatchLogProcessor`.
    pub fn with_export_nice(mut self, nice: u8) -> Self {
        self.nice = nice;
        self
    }

    /// Reports failures through `reporter` (e.g. one sharing its budget with the span
    /// exporter's) instead of its own.
    pub fn with_reporter(mut self, reporter: ErrorReporter) -> Self {
        self.reporter = reporter;
        self
    }

    /// As [`ObservedSpanExporter::with_state`].
    pub fn with_state(mut self, state: ExportState) -> Self {
        self.state = state;
        self
    }
}

impl<E: LogExporter> LogExporter for ObservedLogExporter<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        crate::export_thread::lower_this_export_thread_once(self.nice);
        let n = batch.iter().count();
        let result = self.state.export(n, self.inner.export(batch)).await;
        match &result {
            Ok(()) => metrics::counter!(OTEL_SDK_EXPORTER_LOG_EXPORTED).increment(n as u64),
            Err(e) => {
                metrics::counter!(OTEL_SDK_EXPORTER_LOG_EXPORTED, "error_type" => error_type(e))
                    .increment(n as u64);
                self.reporter.report(e, n);
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_reported_at_most_once_per_interval() {
        let reporter = ErrorReporter::new("traces", Duration::from_secs(3600));
        let err = OTelSdkError::InternalFailure("connection refused".into());
        let written: usize = (0..500).filter(|_| reporter.report(&err, 1)).count();
        assert_eq!(written, 1);
        assert_eq!(reporter.gate.suppressed.load(Ordering::Relaxed), 499);
    }

    #[test]
    fn a_new_report_is_written_after_the_interval() {
        let reporter = ErrorReporter::new("logs", Duration::from_millis(20));
        let err = OTelSdkError::Timeout(Duration::from_secs(1));
        assert!(reporter.report(&err, 1));
        assert!(!reporter.report(&err, 1));
        std::thread::sleep(Duration::from_millis(30));
        assert!(reporter.report(&err, 1));
        assert_eq!(reporter.gate.suppressed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn signals_sharing_a_budget_write_one_line_per_interval_in_all() {
        let traces = ErrorReporter::new("traces", Duration::from_secs(3600));
        let logs = traces.for_signal("logs");
        let err = OTelSdkError::InternalFailure("connection refused".into());
        assert!(traces.report(&err, 5));
        assert!(
            !logs.report(&err, 3),
            "the logs' failure waits for the next interval"
        );
        assert!(!traces.report(&err, 1));
        assert_eq!(logs.gate.suppressed.load(Ordering::Relaxed), 2);
        let alone = ErrorReporter::new("logs", Duration::from_secs(3600));
        assert!(
            alone.report(&err, 1),
            "an unshared reporter has its own budget"
        );
    }

    /// A span exporter that counts its calls and fails them while `fail` is set.
    #[derive(Debug, Default)]
    struct Collector {
        calls: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    impl SpanExporter for &Collector {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                Err(OTelSdkError::InternalFailure("connection refused".into()))
            } else {
                Ok(())
            }
        }
    }

    /// A batch of one span (an empty batch is not a test of the collector).
    fn one_span() -> Vec<SpanData> {
        use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
        vec![SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "GET /".into(),
            start_time: std::time::SystemTime::UNIX_EPOCH,
            end_time: std::time::SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }]
    }

    fn observed<'a>(
        collector: &'a Collector,
        state: &ExportState,
    ) -> ObservedSpanExporter<&'a Collector> {
        ObservedSpanExporter::new(
            collector,
            PendingSpans::default(),
            Duration::from_secs(3600),
        )
        .with_state(state.clone())
    }

    #[tokio::test]
    async fn at_shutdown_a_collector_that_failed_the_last_export_is_not_called_again() {
        let collector = Collector::default();
        let state = ExportState::default();
        let exporter = observed(&collector, &state);
        collector.fail.store(true, Ordering::SeqCst);
        assert!(exporter.export(one_span()).await.is_err());
        assert!(state.last_export_failed());
        // Before shutdown, every batch is still tried (the collector may be back).
        assert!(exporter.export(one_span()).await.is_err());
        assert_eq!(collector.calls.load(Ordering::SeqCst), 2);

        state.begin_shutdown();
        let skipped = exporter.export(one_span()).await;
        assert!(
            matches!(&skipped, Err(OTelSdkError::InternalFailure(m)) if m.contains("shutting down")),
            "{skipped:?}"
        );
        assert_eq!(
            collector.calls.load(Ordering::SeqCst),
            2,
            "the final batch is not sent to a collector known to be down"
        );
    }

    #[tokio::test]
    async fn at_shutdown_a_collector_that_answered_the_last_export_gets_the_final_batches() {
        let collector = Collector::default();
        let state = ExportState::default();
        let traces = observed(&collector, &state);
        assert!(traces.export(one_span()).await.is_ok());
        state.begin_shutdown();
        assert!(traces.export(one_span()).await.is_ok());
        assert_eq!(collector.calls.load(Ordering::SeqCst), 2);

        // An empty batch (which an exporter may answer without asking the collector) does
        // not count as the collector answering.
        let empty_state = ExportState::default();
        let failing = Collector::default();
        failing.fail.store(true, Ordering::SeqCst);
        let answered_empty = Collector::default();
        assert!(
            observed(&failing, &empty_state)
                .export(one_span())
                .await
                .is_err()
        );
        assert!(
            observed(&answered_empty, &empty_state)
                .export(Vec::new())
                .await
                .is_ok()
        );
        assert!(empty_state.last_export_failed());

        // One state for both signals: a failure of either decides for both.
        let logs_collector = Collector::default();
        logs_collector.fail.store(true, Ordering::SeqCst);
        let logs_state = ExportState::default();
        let logs = observed(&logs_collector, &logs_state);
        let spans = observed(&collector, &logs_state);
        assert!(logs.export(one_span()).await.is_err());
        logs_state.begin_shutdown();
        assert!(spans.export(one_span()).await.is_err());
        assert_eq!(collector.calls.load(Ordering::SeqCst), 2, "skipped");
    }

    /// A span exporter whose exports wait until `release` is notified (for ever if never),
    /// like one retrying a collector that does not answer.
    #[derive(Debug, Default)]
    struct Stuck {
        calls: AtomicUsize,
        release: tokio::sync::Notify,
    }

    impl SpanExporter for &Stuck {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.release.notified().await;
            Ok(())
        }
    }

    /// An endpoint at a port that refused connections a moment ago (nothing listens).
    fn refusing_endpoint() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    }

    /// Starts one export of `exporter` in a task and waits until it is under way.
    async fn export_under_way(
        exporter: ObservedSpanExporter<&'static Stuck>,
        stuck: &Stuck,
    ) -> tokio::task::JoinHandle<OTelSdkResult> {
        let task = tokio::spawn(async move { exporter.export(one_span()).await });
        while stuck.calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task
    }

    fn stuck_exporter(
        state: &ExportState,
    ) -> (&'static Stuck, ObservedSpanExporter<&'static Stuck>) {
        let stuck: &'static Stuck = Box::leak(Box::default());
        let exporter =
            ObservedSpanExporter::new(stuck, PendingSpans::default(), Duration::from_secs(3600))
                .with_state(state.clone());
        (stuck, exporter)
    }

    /// A state for a collector at `endpoint`, an export under way, then the shutdown begun.
    async fn shutdown_during_an_export(
        endpoint: &str,
    ) -> (
        ExportState,
        &'static Stuck,
        tokio::task::JoinHandle<OTelSdkResult>,
    ) {
        let state = ExportState::for_collector(Some(endpoint), None);
        let (stuck, exporter) = stuck_exporter(&state);
        let task = export_under_way(exporter, stuck).await;
        let shutting_down = state.clone();
        tokio::task::spawn_blocking(move || shutting_down.begin_shutdown())
            .await
            .unwrap();
        (state, stuck, task)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_shutdown_an_export_under_way_is_abandoned_when_nothing_listens() {
        let (state, _, task) = shutdown_during_an_export(&refusing_endpoint()).await;
        let result = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the export under way was not abandoned")
            .unwrap();
        assert!(
            matches!(&result, Err(OTelSdkError::InternalFailure(m)) if m.contains("nothing listens")),
            "{result:?}"
        );
        assert!(state.last_export_failed());
        // The final batches are not tried either.
        let (later, exporter) = stuck_exporter(&state);
        assert!(exporter.export(one_span()).await.is_err());
        assert_eq!(later.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_shutdown_an_export_under_way_goes_on_while_the_collector_listens() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (state, stuck, task) = shutdown_during_an_export(&endpoint).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !task.is_finished(),
            "abandoned although the collector listens"
        );
        stuck.release.notify_waiters();
        assert!(task.await.unwrap().is_ok());
        assert!(!state.last_export_failed());
    }

    /// opentelemetry-otlp waits out its retry backoff with `tokio::time::sleep` when a runtime
    /// is current, else by blocking its thread. The SDK's batch processor exports from a
    /// thread of its own, outside any runtime: the state enters the export runtime around each
    /// poll, so the wait is a timer an abandoned export can drop.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exports_from_the_batch_thread_run_inside_the_export_runtime() {
        #[derive(Debug, Default)]
        struct Sleeper(Arc<AtomicUsize>);
        impl SpanExporter for Sleeper {
            async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
                // Panics without a current runtime ("there is no reactor running").
                tokio::time::sleep(Duration::from_millis(10)).await;
                self.0.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
        let done = Arc::new(AtomicUsize::new(0));
        let state = ExportState::for_collector(
            Some(&refusing_endpoint()),
            Some(tokio::runtime::Handle::current()),
        );
        let exporter = ObservedSpanExporter::new(
            Sleeper(done.clone()),
            PendingSpans::default(),
            Duration::from_secs(3600),
        )
        .with_state(state);
        let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter).build();
        tokio::task::spawn_blocking(move || {
            for span in one_span() {
                processor.on_end(span);
            }
            let _ = processor.force_flush();
            let _ = processor.shutdown();
        })
        .await
        .unwrap();
        assert_eq!(
            done.load(Ordering::SeqCst),
            1,
            "the export's timer did not run"
        );
    }

    /// Runs `future` to completion on this thread, outside any runtime, as the SDK's batch
    /// processors do (`futures_executor::block_on`).
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            std::thread::park();
        }
    }

    #[test]
    fn an_export_still_under_way_when_the_export_runtime_stops_ends_without_panicking() {
        // A shutdown that timed out: the batch thread is still in the exporter's retry backoff
        // (tokio timers of the export runtime) when that runtime is dropped.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state =
            ExportState::for_collector(Some(&refusing_endpoint()), Some(runtime.handle().clone()));
        let polled = Arc::new(AtomicUsize::new(0));
        let exporting = {
            let state = state.clone();
            let polled = polled.clone();
            std::thread::spawn(move || {
                block_on(state.export(1, async move {
                    loop {
                        polled.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }))
            })
        };
        while polled.load(Ordering::SeqCst) < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        state.stop_exports();
        drop(runtime);
        let result = exporting
            .join()
            .expect("the exporting thread panicked after the runtime stopped");
        assert!(
            matches!(&result, Err(OTelSdkError::InternalFailure(m)) if m.contains("shut down")),
            "{result:?}"
        );
        // Later exports fail at once.
        assert!(block_on(state.export(1, async { Ok(()) })).is_err());
    }

    #[test]
    fn the_collector_address_comes_from_the_endpoint() {
        let address = |e: &str| {
            ExportState::for_collector(Some(e), None)
                .0
                .collector
                .clone()
        };
        assert_eq!(
            address("http://localhost:4317").as_deref(),
            Some("localhost:4317")
        );
        assert_eq!(
            address("https://otel.example.com").as_deref(),
            Some("otel.example.com:443")
        );
        assert_eq!(
            address("http://collector/v1").as_deref(),
            Some("collector:80")
        );
        assert_eq!(address("http://[::1]:4318").as_deref(), Some("[::1]:4318"));
        assert_eq!(address("not a url"), None);
        assert_eq!(ExportState::for_collector(None, None).0.collector, None);
    }
}
