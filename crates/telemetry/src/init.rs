//! The one call a service makes at start-up, and the guard that flushes at shutdown.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{BatchLogProcessor, LogProcessor, SdkLogRecord, SdkLoggerProvider};
use opentelemetry_sdk::resource::{
    EnvResourceDetector, ResourceDetector, TelemetryResourceDetector,
};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing::span;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::Context;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{ConfigError, LogFormat, OtlpProtocol, TelemetryConfig};
use crate::export::{
    BoundedSpanProcessor, EXPORT_LOG_TARGET, ErrorReporter, ExportState, ObservedLogExporter,
    ObservedSpanExporter, PendingSpans,
};
use crate::export_thread::ExportRuntime;
use crate::log_writer::{BatchedWriter, FlushGuard};
use crate::logging::JsonLayer;
use crate::metrics::{MetricsError, MetricsHandle};

/// Targets whose spans and events never enter the OTLP pipelines: the exporter's own transport
/// (an export that logs about itself would feed itself) and the SDK.
const TRANSPORT_TARGETS: [&str; 11] = [
    "h2",
    "tonic",
    "tonic_prost",
    "hyper",
    "hyper_util",
    "tower",
    "reqwest",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "opentelemetry_http",
];

/// Why [`init`] failed. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `RUST_LOG` (or [`TelemetryConfig::span_filter`]) does not parse.
    #[error(
        "invalid log filter {filter:?} (RUST_LOG syntax, e.g. `info,my_crate=debug`): {source}"
    )]
    Filter {
        /// The rejected directives.
        filter: String,
        /// The parser's complaint.
        source: tracing_subscriber::filter::ParseError,
    },
    /// The OTLP exporter could not be built (bad endpoint URL, for instance).
    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Exporter {
        /// The endpoint in use.
        endpoint: String,
        /// What the exporter said.
        reason: String,
    },
    /// The Prometheus recorder could not be installed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The thread that writes log lines out could not be started.
    #[error("cannot start the log writer thread: {0}")]
    LogWriter(#[source] std::io::Error),
    /// A global `tracing` subscriber was already set in this process.
    #[error("a global tracing subscriber is already installed; call telemetry::init once, first")]
    SubscriberAlreadySet,
}

/// Why [`TelemetryGuard::shutdown`] could not flush everything.
#[derive(Debug, thiserror::Error)]
#[error("telemetry shutdown incomplete: {0}")]
pub struct ShutdownError(String);

/// Initialises tracing, logs, metrics and propagation for the whole process.
///
/// - installs the global `tracing` subscriber: log lines to stdout ([`LogFormat`], filtered by
///   `RUST_LOG`, written in batches by [`crate::log_writer::BatchedWriter`]), spans to
///   OpenTelemetry (filtered by [`TelemetryConfig::span_filter`]), and events to OTLP logs
///   (minus the exporter's own transport); events at [`TelemetryConfig::span_event_level`] and
///   above (default WARN) are also recorded as span events, so a trace viewer shows the
///   warnings and errors inside their spans, while the routine `info` lines are not written a
///   third time;
/// - builds the OTLP span and log pipelines (batch export off the request path, bounded queue,
///   failures counted and logged at most once per interval; see [`crate::export`]);
/// - sets the global propagator from `OTEL_PROPAGATORS` (strict W3C parsers, see
///   [`crate::propagation`]);
/// - installs the Prometheus `metrics` recorder (see [`crate::metrics`]).
///
/// Call it once, early (inside or outside a tokio runtime: the exporters run on a thread of
/// their own, `otel-export`, at [`TelemetryConfig::export_nice`]). Keep the returned guard
/// alive for the life of the process and call [`TelemetryGuard::shutdown`] before exiting.
///
/// # Errors
/// [`InitError`] for an invalid configuration, a filter that does not parse, an exporter that
/// cannot be built, or a second call in the same process.
pub fn init(config: TelemetryConfig) -> Result<TelemetryGuard, InitError> {
    // Lines are written to stdout in batches, not one write(2) per line on the request path
    // (see `crate::log_writer`).
    let (writer, flush) = BatchedWriter::stdout().map_err(InitError::LogWriter)?;
    let mut guard = init_with_writer(config, writer)?;
    guard.log_writer = Some(flush);
    Ok(guard)
}

/// [`init`], writing log lines to `writer` instead of stdout (a file, a
/// [`BatchedWriter`](crate::log_writer::BatchedWriter) around one, or a buffer in a test).
/// Each line is written to `writer` on the thread that logs it.
///
/// # Errors
/// As [`init`].
pub fn init_with_writer<W>(config: TelemetryConfig, writer: W) -> Result<TelemetryGuard, InitError>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let propagator =
        crate::propagation::propagator_from_env_value(&config.propagators).map_err(|e| {
            ConfigError {
                variable: "OTEL_PROPAGATORS",
                value: e.to_string(),
                expected: "a comma-separated list of `tracecontext`, `baggage`, `none`",
            }
        })?;

    let log_filter = parse_filter(&config.log_filter)?;
    let span_filter = parse_filter(&config.span_filter)?;

    let metrics = if config.install_metrics_recorder {
        Some(crate::metrics::install_recorder()?)
    } else {
        None
    };

    let resource = resource(&config);
    let service_name = resource
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .map(|v| v.to_string())
        .unwrap_or_else(|| config.service_name.clone());

    let (tracer_provider, logger_provider, export_runtime, export_state) = if config.sdk_disabled {
        (None, None, None, ExportState::default())
    } else {
        // The exporters' connections live on a runtime of their own, off the service's
        // threads and at a lower priority (see `crate::export_thread`).
        let runtime = ExportRuntime::start(config.export_nice)
            .map_err(|e| exporter_error(&config, format!("cannot start the export thread: {e}")))?;
        // Whether the collector failed the last export, and where it is: at shutdown, the
        // final batches are not retried when it did, nor when nothing listens there (see
        // `ExportState`). The gRPC exporters run on the export runtime; the HTTP one uses a
        // blocking client, which must not run inside a runtime, and which honours the proxy
        // variables: through a proxy, a refused direct connection says nothing.
        let grpc = matches!(config.otlp_protocol, OtlpProtocol::Grpc);
        let endpoint = config.resolved_otlp_endpoint();
        let export_state = ExportState::for_collector(
            (grpc || !proxy_configured()).then_some(endpoint.as_str()),
            grpc.then(|| runtime.handle().clone()),
        );
        // One budget for export-failure lines: a missing collector is one problem, reported
        // once per interval, not once per signal.
        let reporter = ErrorReporter::new("traces", config.export_error_log_interval);
        let tracer = tracer_provider(
            &config,
            resource.clone(),
            reporter.clone(),
            export_state.clone(),
            &runtime,
        )?;
        let logger = if config.export_logs {
            Some(logger_provider(
                &config,
                resource,
                reporter.for_signal("logs"),
                export_state.clone(),
                &runtime,
            )?)
        } else {
            None
        };
        (Some(tracer), logger, Some(runtime), export_state)
    };
    // Held together from here on, so that on every path (an error below included) the
    // providers flush before the export runtime stops: `Providers` drops in field order.
    let providers = Providers {
        tracer: tracer_provider,
        logger: logger_provider,
        export_state,
        export_runtime,
    };

    // The log lines and the OTLP log records share one per-layer filter: every per-layer
    // filter costs each span a lookup in the registry on every enter, exit and close (~1.2k
    // instructions per request for a third one). The records leave out the exporter's own
    // targets (see `ExcludeTargets`).
    let otlp_logs = providers.logger.as_ref().map(|provider| {
        let mut excluded: Vec<&'static str> = TRANSPORT_TARGETS.to_vec();
        excluded.push(EXPORT_LOG_TARGET);
        ExcludeTargets {
            inner: opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(provider),
            excluded,
        }
    });
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    layers.push(match config.log_format {
        // Events only: no per-span state (see `JsonLayer`).
        LogFormat::Json => JsonLayer::new(service_name, writer)
            .and_then(otlp_logs)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .pretty()
            .with_ansi(config.ansi)
            .with_writer(writer)
            .and_then(otlp_logs)
            .with_filter(log_filter)
            .boxed(),
    });
    layers.push(match &providers.tracer {
        Some(provider) => {
            let scope = InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
                .with_version(env!("CARGO_PKG_VERSION"))
                .build();
            span_layer(provider.tracer_with_scope(scope), &config, span_filter)
        }
        // `OTEL_SDK_DISABLED`: the OpenTelemetry API without an SDK. No span is recorded and
        // no id is made, but a span takes its parent's context, so an incoming trace is still
        // joined (`x-trace-id`, log ids) and propagated to downstream calls, as the API's
        // no-op tracer does (https://opentelemetry.io/docs/specs/otel/trace/api/#behavior-of-the-api-in-the-absence-of-an-installed-sdk).
        None => span_layer(
            opentelemetry::trace::noop::NoopTracer::new(),
            &config,
            span_filter,
        ),
    });

    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|_| InitError::SubscriberAlreadySet)?;
    opentelemetry::global::set_text_map_propagator(propagator);

    tracing::debug!(
        endpoint = %config.resolved_otlp_endpoint(),
        protocol = ?config.otlp_protocol,
        sdk_disabled = config.sdk_disabled,
        "telemetry initialised"
    );
    Ok(TelemetryGuard {
        providers: Some(providers),
        metrics,
        timeout: config.shutdown_timeout,
        log_writer: None,
    })
}

/// The `tracing` → OpenTelemetry span layer for `tracer`, with the span filter.
fn span_layer<T>(
    tracer: T,
    config: &TelemetryConfig,
    span_filter: EnvFilter,
) -> Box<dyn Layer<Registry> + Send + Sync>
where
    T: opentelemetry::trace::Tracer + Send + Sync + 'static,
    T::Span: Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Busy/idle time, thread ids, source locations (`code.*`) and the `tracing` target
        // cost work on every span, and again on export (a third of a server span's
        // attributes), and are not semantic-convention attributes of these spans.
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_target(false)
        .with_filter(
            // The cheap tests first: the level turns most events away without the directives
            // (an `EnvFilter` test costs hundreds of instructions).
            span_events(config.span_event_level)
                .and(tracing_subscriber::filter::filter_fn(|meta| {
                    !starts_with_any(meta.target(), &TRANSPORT_TARGETS)
                }))
                .and(span_filter),
        )
        .boxed()
}

/// Parses `directives` (RUST_LOG syntax).
fn parse_filter(directives: &str) -> Result<EnvFilter, InitError> {
    EnvFilter::builder()
        .parse(directives.trim())
        .map_err(|source| InitError::Filter {
            filter: directives.to_owned(),
            source,
        })
}

/// Resource attributes: the configured ones first, then `OTEL_RESOURCE_ATTRIBUTES`, then
/// `OTEL_SERVICE_NAME` (later sources win), plus the SDK's `telemetry.sdk.*`.
fn resource(config: &TelemetryConfig) -> Resource {
    let mut attributes = vec![
        KeyValue::new("service.name", config.service_name.clone()),
        KeyValue::new("service.version", config.service_version.clone()),
        KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
        KeyValue::new(
            "deployment.environment.name",
            config.deployment_environment.clone(),
        ),
    ];
    if let Some(ns) = &config.service_namespace {
        attributes.push(KeyValue::new("service.namespace", ns.clone()));
    }
    let detectors: Vec<Box<dyn ResourceDetector>> = vec![
        Box::new(EnvResourceDetector::new()),
        Box::new(TelemetryResourceDetector),
    ];
    let mut builder = Resource::builder_empty()
        .with_attributes(attributes)
        .with_detectors(&detectors);
    // The configured name already honours OTEL_SERVICE_NAME (see `TelemetryConfig::from_env`);
    // re-apply it so it also wins over `service.name` in OTEL_RESOURCE_ATTRIBUTES, as the
    // specification says.
    if let Ok(name) = std::env::var("OTEL_SERVICE_NAME")
        && !name.trim().is_empty()
    {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

fn exporter_error(config: &TelemetryConfig, e: impl std::fmt::Display) -> InitError {
    InitError::Exporter {
        endpoint: config.resolved_otlp_endpoint(),
        reason: e.to_string(),
    }
}

/// Lets every span through, and the events at `level` or more severe (as span events).
fn span_events(
    level: tracing::Level,
) -> tracing_subscriber::filter::FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(move |meta| meta.is_span() || *meta.level() <= level)
}

/// Whether `target` starts with one of `prefixes`: how the exporter's own targets are told
/// apart, for spans and for log records alike (the match of an `h2=off` directive).
fn starts_with_any(target: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| target.starts_with(p))
}

/// Hands `inner` the events whose target starts with none of `excluded`: the match of an
/// `h2=off` directive (a prefix, so `hyper` also covers `hyper_util`, and `opentelemetry` the
/// SDK crates' internal events, whose targets are their package names, hyphens included).
/// Every other callback goes to `inner` unchanged. A layer rather than a per-layer filter, so
/// that it adds no per-span work of its own.
struct ExcludeTargets<L> {
    inner: L,
    excluded: Vec<&'static str>,
}

impl<L, S> Layer<S> for ExcludeTargets<L>
where
    L: Layer<S>,
    S: tracing::Subscriber,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let target = event.metadata().target();
        if !starts_with_any(target, &self.excluded) {
            self.inner.on_event(event, ctx);
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.inner.max_level_hint()
    }
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }
    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.inner.register_callsite(metadata)
    }
    fn enabled(&self, metadata: &tracing::Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }
    fn event_enabled(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }
    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(id, values, ctx);
    }
    fn on_follows_from(&self, id: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(id, follows, ctx);
    }
    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }
    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }
    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }
    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }
    // SAFETY: returns `self` for its own type id, else what `inner` returns for the id (a
    // pointer into `inner`, which lives as long as `self`), as `Layered` does.
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else {
            // SAFETY: the caller's contract is passed on unchanged.
            unsafe { self.inner.downcast_raw(id) }
        }
    }
}

fn tracer_provider(
    config: &TelemetryConfig,
    resource: Resource,
    reporter: ErrorReporter,
    state: ExportState,
    runtime: &ExportRuntime,
) -> Result<SdkTracerProvider, InitError> {
    let endpoint = config.resolved_otlp_endpoint();
    let exporter = match config.otlp_protocol {
        // Built inside the export runtime: the gRPC channel's tasks are spawned there.
        OtlpProtocol::Grpc => {
            let _entered = runtime.handle().enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(config.export_timeout)
                .build()
        }
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .with_timeout(config.export_timeout)
            .build(),
    }
    .map_err(|e| exporter_error(config, e))?;

    let pending = PendingSpans::default();
    let observed =
        ObservedSpanExporter::new(exporter, pending.clone(), config.export_error_log_interval)
            .with_reporter(reporter)
            .with_state(state)
            .with_export_nice(config.export_nice);
    let batch_size = config.max_export_batch_size.min(config.max_queue_size);
    let batch = BatchSpanProcessor::builder(observed)
        .with_batch_config(
            BatchConfigBuilder::default()
                // The bound is enforced (and counted) by `BoundedSpanProcessor`; the inner
                // queue only needs room for it.
                .with_max_queue_size(config.max_queue_size + batch_size)
                .with_max_export_batch_size(batch_size)
                .with_scheduled_delay(config.scheduled_delay)
                .build(),
        )
        .build();
    let bounded = BoundedSpanProcessor::new(batch, pending, config.max_queue_size)
        .with_hook(config.span_hook.clone());
    // The sampler `OTEL_TRACES_SAMPLER`/`_ARG` select (read and checked by `TelemetryConfig`),
    // wrapped so the Level 2 random flag survives a drop decision.
    let sampler = crate::sampling::KeepRandomFlag(Box::new(config.sampler.to_sdk()));
    Ok(SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_span_processor(bounded)
        .with_resource(resource)
        .build())
}

fn logger_provider(
    config: &TelemetryConfig,
    resource: Resource,
    reporter: ErrorReporter,
    state: ExportState,
    runtime: &ExportRuntime,
) -> Result<SdkLoggerProvider, InitError> {
    let endpoint = config.resolved_otlp_endpoint();
    let exporter = match config.otlp_protocol {
        // Built inside the export runtime: the gRPC channel's tasks are spawned there.
        OtlpProtocol::Grpc => {
            let _entered = runtime.handle().enter();
            opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(config.export_timeout)
                .build()
        }
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{endpoint}/v1/logs"))
            .with_timeout(config.export_timeout)
            .build(),
    }
    .map_err(|e| exporter_error(config, e))?;
    let observed = ObservedLogExporter::new(exporter, config.export_error_log_interval)
        .with_reporter(reporter)
        .with_state(state)
        .with_export_nice(config.export_nice);
    let processor = BatchLogProcessor::builder(observed)
        .with_batch_config(
            opentelemetry_sdk::logs::BatchConfigBuilder::default()
                .with_max_queue_size(config.max_queue_size)
                .with_max_export_batch_size(config.max_export_batch_size.min(config.max_queue_size))
                .with_scheduled_delay(config.scheduled_delay)
                .build(),
        )
        .build();
    Ok(SdkLoggerProvider::builder()
        .with_log_processor(EventTime(processor))
        .with_resource(resource)
        .build())
}

/// Gives each log record its `Timestamp` (the time of the event, OTLP `time_unix_nano`) where
/// the bridge left it unset, which `opentelemetry-appender-tracing` always does: a `tracing`
/// event carries no time of its own, so the bridge sets only `ObservedTimestamp`, and back ends
/// that read `time_unix_nano` see 0 (1970). The record is made as the event happens, so its
/// observed time is the event's time
/// ([log data model](https://opentelemetry.io/docs/specs/otel/logs/data-model/#field-timestamp)).
#[derive(Debug)]
struct EventTime<P>(P);

impl<P: LogProcessor> LogProcessor for EventTime<P> {
    fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
        if record.timestamp().is_none() {
            let observed = record
                .observed_timestamp()
                .unwrap_or_else(std::time::SystemTime::now);
            opentelemetry::logs::LogRecord::set_timestamp(record, observed);
        }
        self.0.emit(record, scope);
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn shutdown(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown()
    }

    fn event_enabled(
        &self,
        level: opentelemetry::logs::Severity,
        target: &str,
        name: Option<&str>,
    ) -> bool {
        self.0.event_enabled(level, target, name)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// Whether an HTTP proxy variable is set (the OTLP/HTTP exporter's client, reqwest, uses
/// them: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, upper or lower case).
fn proxy_configured() -> bool {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|value| !value.is_empty()))
}

/// The pipelines. Fields drop in order: the providers (which flush) before the runtime that
/// drives their connections.
struct Providers {
    tracer: Option<SdkTracerProvider>,
    logger: Option<SdkLoggerProvider>,
    /// Shared by both exporters; told when shutdown begins.
    export_state: ExportState,
    /// Drives the gRPC connections: stopped only after both providers have flushed.
    export_runtime: Option<ExportRuntime>,
}

impl Providers {
    /// Flushes and shuts down traces and logs, side by side, each within `timeout`. If the
    /// collector failed the last export, or nothing listens at its address, the final batches
    /// are given up at once instead of being retried (see [`ExportState`]).
    fn shutdown(self, timeout: Duration) -> Result<(), ShutdownError> {
        self.export_state.begin_shutdown();
        let (traces, logs) = std::thread::scope(|scope| {
            let logs = self.logger.as_ref().map(|logger| {
                scope.spawn(move || {
                    logger
                        .shutdown_with_timeout(timeout)
                        .map_err(|e| format!("logs: {e}"))
                })
            });
            let traces = self.tracer.as_ref().map(|tracer| {
                tracer
                    .shutdown_with_timeout(timeout)
                    .map_err(|e| format!("traces: {e}"))
            });
            let logs = logs.map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err("logs: the shutdown thread panicked".into()))
            });
            (traces, logs)
        });
        let errors: Vec<String> = [traces, logs]
            .into_iter()
            .flatten()
            .filter_map(Result::err)
            .collect();
        // Both providers have flushed, or given up (a timeout leaves their batch threads
        // exporting): end what is still under way, then the connections can go.
        self.export_state.stop_exports();
        drop(self.export_runtime);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ShutdownError(errors.join("; ")))
        }
    }
}

/// Keeps the telemetry pipelines alive; flushes them on [`shutdown`](Self::shutdown) (or, as a
/// fallback, on drop).
///
/// Prefer `guard.shutdown().await` at the end of `main`: it flushes from a blocking thread, so
/// the runtime's other tasks keep running meanwhile. Dropping the guard also flushes, blocking
/// the calling thread for up to the shutdown timeout. Either works on any runtime (or none):
/// the exporters' connections are driven by the `otel-export` thread, not by the service's
/// runtime (see [`crate::export_thread`]).
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    providers: Option<Providers>,
    metrics: Option<MetricsHandle>,
    timeout: Duration,
    /// [`init`]'s log writer: dropping it writes the lines still queued (after the providers
    /// have shut down, so their own last lines are written too).
    log_writer: Option<FlushGuard>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("exporting", &self.providers.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl TelemetryGuard {
    /// The Prometheus renderer for `GET /metrics`, unless the recorder was not installed.
    pub fn metrics(&self) -> Option<&MetricsHandle> {
        self.metrics.as_ref()
    }

    /// Flushes pending spans and log records and shuts the exporters down, taking at most the
    /// configured [`shutdown_timeout`](TelemetryConfig::shutdown_timeout), plus scheduling and,
    /// unless the last export is known to have succeeded, one TCP connection attempt to the
    /// collector (at most 200 ms per address; see [`crate::export::ExportState`]).
    ///
    /// # Errors
    /// [`ShutdownError`] when a provider's flush or shutdown failed or timed out; telemetry is
    /// shut down either way. An export that fails during the flush (no collector listening,
    /// say) is not an error here: the SDK counts and logs it like any failed export
    /// (`otel_sdk_exporter_span_exported_total{error_type}` and a `WARN` line).
    pub async fn shutdown(mut self) -> Result<(), ShutdownError> {
        if let Some(m) = &self.metrics {
            m.stop_upkeep();
        }
        let Some(providers) = self.providers.take() else {
            return Ok(());
        };
        let timeout = self.timeout;
        let log_writer = self.log_writer.take();
        let finish = move || {
            let result = providers.shutdown(timeout);
            drop(log_writer);
            result
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(finish)
                .await
                .map_err(|e| ShutdownError(format!("shutdown task failed: {e}")))?,
            Err(_) => finish(),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.stop_upkeep();
        }
        if let Some(providers) = self.providers.take()
            && let Err(e) = providers.shutdown(self.timeout)
        {
            eprintln!("{e}");
        }
        // Written last: the lines logged while the providers shut down are still queued.
        drop(self.log_writer.take());
    }
}
