//! Configuration: one struct, filled from defaults, then from the standard environment.
//!
//! Every knob has a default that works on a laptop with nothing else running: JSON logs at
//! `info`, OTLP over gRPC to `http://localhost:4317`, W3C `tracecontext,baggage` propagation.
//! [`TelemetryConfig::from_env`] then applies the variables a deployment sets, using the names
//! and meanings of the [OpenTelemetry SDK environment variable specification][spec]
//! (`OTEL_*`) plus the common `RUST_LOG` and `LOG_FORMAT`.
//!
//! [spec]: https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/

use std::time::Duration;

/// Where log lines go and how they look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line on stdout (`timestamp`, `level`, `target`, `message`, `service`,
    /// and `trace_id`/`span_id` inside a span). See [`crate::logging`].
    #[default]
    Json,
    /// Multi-line, coloured output for a human at a terminal.
    Pretty,
}

/// The OTLP transport, as named by `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// `grpc`: OTLP/gRPC (tonic), default port 4317.
    #[default]
    Grpc,
    /// `http/protobuf`: OTLP/HTTP with protobuf bodies, default port 4318; the signal paths
    /// `/v1/traces` and `/v1/logs` are appended to the endpoint.
    HttpProtobuf,
}

/// The trace sampler, as `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name it (see
/// the [SDK environment specification](https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/#general-sdk-configuration)
/// and [the samplers](https://opentelemetry.io/docs/specs/otel/trace/sdk/#built-in-samplers)).
/// A ratio is the probability, from 0.0 to 1.0, that a trace is sampled (`OTEL_TRACES_SAMPLER_ARG`,
/// default 1.0).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum TraceSampler {
    /// `always_on`: every span is sampled, whatever its parent decided.
    AlwaysOn,
    /// `always_off`: no span is sampled.
    AlwaysOff,
    /// `traceidratio`: a ratio of traces, by trace id, whatever the parent decided.
    TraceIdRatio(f64),
    /// `parentbased_always_on` (the default): the parent's decision; a root is sampled.
    #[default]
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`: the parent's decision; a root is not sampled.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`: the parent's decision; a ratio of roots.
    ParentBasedTraceIdRatio(f64),
}

impl TraceSampler {
    /// The SDK's sampler of that name.
    pub fn to_sdk(self) -> opentelemetry_sdk::trace::Sampler {
        use opentelemetry_sdk::trace::Sampler;
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(ratio),
            Self::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedTraceIdRatio(ratio) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
            }
        }
    }
}

/// A configuration value that could not be understood. The message names the variable, the
/// value and what is accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{variable}={value:?} is not valid: expected {expected}")]
pub struct ConfigError {
    /// The environment variable (or field) at fault.
    pub variable: &'static str,
    /// The rejected value.
    pub value: String,
    /// What would have been accepted.
    pub expected: &'static str,
}

/// Everything [`crate::init`] needs. Build it with [`TelemetryConfig::new`] (defaults) or
/// [`TelemetryConfig::from_env`] (defaults, then the environment), then adjust fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TelemetryConfig {
    /// `service.name`; `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`)
    /// overrides it. Also the `service` field of every log line.
    pub service_name: String,
    /// `service.namespace` resource attribute, if any.
    pub service_namespace: Option<String>,
    /// `service.version` resource attribute (usually `env!("CARGO_PKG_VERSION")` of the binary).
    pub service_version: String,
    /// `deployment.environment.name` resource attribute. Default `local`.
    pub deployment_environment: String,
    /// `RUST_LOG`: the [`EnvFilter`](tracing_subscriber::EnvFilter) directives for log lines
    /// (stdout and OTLP). Default `info`.
    pub log_filter: String,
    /// `LOG_FORMAT`: `json` (default) or `pretty`.
    pub log_format: LogFormat,
    /// Colour the `pretty` format (ANSI escapes). Default: whether stdout is a terminal, so
    /// redirected output stays plain text.
    pub ansi: bool,
    /// Directives selecting which `tracing` spans become OpenTelemetry spans. Kept apart from
    /// [`log_filter`](Self::log_filter) on purpose: `RUST_LOG=warn` must quieten the logs
    /// without deleting the server spans every trace hangs from. Default `info`.
    pub span_filter: String,
    /// `OTEL_SDK_DISABLED=true`: no OTLP export at all (logs and metrics still work), and no
    /// span recorded: as the OpenTelemetry API does without an SDK, an incoming trace context
    /// is still joined (`x-trace-id`, the ids in log lines) and propagated downstream
    /// unchanged, and a request that brings none gets no trace id.
    pub sdk_disabled: bool,
    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`: which spans are sampled (recorded
    /// and exported). Default [`TraceSampler::ParentBasedAlwaysOn`].
    pub sampler: TraceSampler,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: base URL of the collector. Default
    /// `http://localhost:4317` (gRPC) or `http://localhost:4318` (HTTP).
    pub otlp_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` (default) or `http/protobuf`.
    pub otlp_protocol: OtlpProtocol,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds): the longest one export call may take.
    /// Default 10 s.
    pub export_timeout: Duration,
    /// Export log records over OTLP as well as spans. Default `true`.
    pub export_logs: bool,
    /// `OTEL_PROPAGATORS`: comma-separated `tracecontext`, `baggage`, `none`. Default
    /// `tracecontext,baggage`.
    pub propagators: String,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans waiting for export beyond this are dropped (and counted
    /// in `otel_sdk_processor_span_processed_total{error_type="queue_full"}`), which bounds
    /// memory while the collector is away. Default 2048.
    pub max_queue_size: usize,
    /// `OTEL_BSP_SCHEDULE_DELAY` (milliseconds): how often a batch is sent. Default 1 s.
    pub scheduled_delay: Duration,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: the most spans (and log records) one export call
    /// carries; a batch goes out as soon as this many wait, without waiting for
    /// [`scheduled_delay`](Self::scheduled_delay). Default 512, as in the [SDK environment
    /// specification](https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/#batch-span-processor).
    /// Capped at [`max_queue_size`](Self::max_queue_size). Smaller batches spread the
    /// encoding work into shorter slices, larger ones make fewer export calls.
    pub max_export_batch_size: usize,
    /// `TELEMETRY_EXPORT_NICE` (0–19): how many steps nicer (lower CPU priority) than the
    /// service the export threads run: the `otel-export` thread that drives the OTLP
    /// connections and the SDK's batch-processor threads. Default 0, the service's own
    /// priority: a nicer export gives a saturated service throughput back by dropping spans
    /// (BENCHMARKS.md), and this lab exists to show spans. See [`crate::export_thread`].
    /// Linux only; elsewhere it does nothing.
    pub export_nice: u8,
    /// How often, at most, a failing export is reported in the logs. Default 10 s.
    pub export_error_log_interval: Duration,
    /// The longest [`crate::TelemetryGuard::shutdown`] may spend flushing. Default 5 s.
    pub shutdown_timeout: Duration,
    /// Install the global `metrics` recorder (Prometheus). Default `true`; turn off when the
    /// process already has a recorder.
    pub install_metrics_recorder: bool,
    /// The least severe events that are also recorded as span events (every event is a log
    /// line and an OTLP log record carrying the trace and span ids either way). Default
    /// `WARN`: warnings and errors show inside their spans in a trace viewer; routine `info`
    /// lines are not copied into every span (which costs on every request). `TRACE` records
    /// them all.
    pub span_event_level: tracing::Level,
    /// Applied to every sampled span before export (see [`SpanHook`](crate::export::SpanHook)).
    /// Default none.
    pub span_hook: Option<crate::export::SpanHook>,
}

impl TelemetryConfig {
    /// Defaults for `service_name`, ignoring the environment.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            service_namespace: None,
            service_version: "0.0.0".to_owned(),
            deployment_environment: "local".to_owned(),
            log_filter: "info".to_owned(),
            log_format: LogFormat::Json,
            ansi: std::io::IsTerminal::is_terminal(&std::io::stdout()),
            span_filter: "info".to_owned(),
            sdk_disabled: false,
            sampler: TraceSampler::ParentBasedAlwaysOn,
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::Grpc,
            export_timeout: Duration::from_secs(10),
            export_logs: true,
            propagators: "tracecontext,baggage".to_owned(),
            max_queue_size: 2048,
            scheduled_delay: Duration::from_secs(1),
            max_export_batch_size: 512,
            export_nice: 0,
            export_error_log_interval: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            install_metrics_recorder: true,
            span_hook: None,
            span_event_level: tracing::Level::WARN,
        }
    }

    /// Defaults, then the process environment. Errors name the variable that is wrong.
    pub fn from_env(service_name: impl Into<String>) -> Result<Self, ConfigError> {
        Self::new(service_name).with_lookup(|key| std::env::var(key).ok())
    }

    /// Applies variables from any lookup function (the environment, a test map, a file).
    /// Unset and empty variables keep the current value.
    pub fn with_lookup(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("OTEL_SERVICE_NAME") {
            self.service_name = v;
        }
        if let Some(v) = get("RUST_LOG") {
            self.log_filter = v;
        }
        if let Some(v) = get("LOG_FORMAT") {
            self.log_format = match v.trim().to_ascii_lowercase().as_str() {
                "json" => LogFormat::Json,
                "pretty" | "text" => LogFormat::Pretty,
                _ => return Err(invalid("LOG_FORMAT", v, "`json` or `pretty`")),
            };
        }
        if let Some(v) = get("OTEL_SDK_DISABLED") {
            self.sdk_disabled = match v.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(invalid("OTEL_SDK_DISABLED", v, "`true` or `false`")),
            };
        }
        if let Some(v) = get("OTEL_TRACES_SAMPLER") {
            // The ratio samplers' argument, read only for them (the specification has the
            // others ignore it); unset means 1.0.
            let ratio = || match get("OTEL_TRACES_SAMPLER_ARG") {
                None => Ok(1.0),
                Some(arg) => arg
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        invalid(
                            "OTEL_TRACES_SAMPLER_ARG",
                            arg,
                            "a sampling ratio from 0.0 to 1.0, such as 0.25",
                        )
                    }),
            };
            self.sampler = match v.trim().to_ascii_lowercase().as_str() {
                "always_on" => TraceSampler::AlwaysOn,
                "always_off" => TraceSampler::AlwaysOff,
                "traceidratio" => TraceSampler::TraceIdRatio(ratio()?),
                "parentbased_always_on" => TraceSampler::ParentBasedAlwaysOn,
                "parentbased_always_off" => TraceSampler::ParentBasedAlwaysOff,
                "parentbased_traceidratio" => TraceSampler::ParentBasedTraceIdRatio(ratio()?),
                _ => {
                    return Err(invalid(
                        "OTEL_TRACES_SAMPLER",
                        v,
                        "`always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, \
                         `parentbased_always_off` or `parentbased_traceidratio`",
                    ));
                }
            };
        }
        if let Some(v) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                return Err(invalid(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    v,
                    "an http:// or https:// URL such as http://localhost:4317",
                ));
            }
            self.otlp_endpoint = Some(v);
        }
        if let Some(v) = get("OTEL_EXPORTER_OTLP_PROTOCOL") {
            self.otlp_protocol = match v.trim() {
                "grpc" => OtlpProtocol::Grpc,
                "http/protobuf" => OtlpProtocol::HttpProtobuf,
                _ => {
                    return Err(invalid(
                        "OTEL_EXPORTER_OTLP_PROTOCOL",
                        v,
                        "`grpc` or `http/protobuf`",
                    ));
                }
            };
        }
        if let Some(v) = get("OTEL_EXPORTER_OTLP_TIMEOUT") {
            self.export_timeout = millis("OTEL_EXPORTER_OTLP_TIMEOUT", v)?;
        }
        if let Some(v) = get("OTEL_PROPAGATORS") {
            self.propagators = v;
        }
        if let Some(v) = get("OTEL_BSP_MAX_QUEUE_SIZE") {
            self.max_queue_size = positive("OTEL_BSP_MAX_QUEUE_SIZE", v)?;
        }
        if let Some(v) = get("OTEL_BSP_SCHEDULE_DELAY") {
            self.scheduled_delay = millis("OTEL_BSP_SCHEDULE_DELAY", v)?;
        }
        if let Some(v) = get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
            self.max_export_batch_size = positive("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", v)?;
        }
        if let Some(v) = get("TELEMETRY_EXPORT_NICE") {
            self.export_nice = v
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= 19)
                .ok_or_else(|| invalid("TELEMETRY_EXPORT_NICE", v, "an integer from 0 to 19"))?;
        }
        Ok(self)
    }

    /// The collector endpoint in use: the configured one or the protocol's default.
    pub fn resolved_otlp_endpoint(&self) -> String {
        match (&self.otlp_endpoint, self.otlp_protocol) {
            (Some(e), _) => e.trim_end_matches('/').to_owned(),
            (None, OtlpProtocol::Grpc) => "http://localhost:4317".to_owned(),
            (None, OtlpProtocol::HttpProtobuf) => "http://localhost:4318".to_owned(),
        }
    }
}

fn invalid(variable: &'static str, value: String, expected: &'static str) -> ConfigError {
    ConfigError {
        variable,
        value,
        expected,
    }
}

/// A positive integer (surrounding spaces allowed).
fn positive(variable: &'static str, value: String) -> Result<usize, ConfigError> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| invalid(variable, value, "a positive integer"))
}

fn millis(variable: &'static str, value: String) -> Result<Duration, ConfigError> {
    value
        .trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| invalid(variable, value, "a whole number of milliseconds"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<TelemetryConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TelemetryConfig::new("svc").with_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_otel_spec() {
        let c = from(&[]).unwrap();
        assert_eq!(c.service_name, "svc");
        assert_eq!(c.resolved_otlp_endpoint(), "http://localhost:4317");
        assert_eq!(c.otlp_protocol, OtlpProtocol::Grpc);
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(!c.sdk_disabled);
        assert_eq!(c.export_nice, 0);
        assert_eq!(c.max_export_batch_size, 512);
    }

    #[test]
    fn environment_overrides_defaults() {
        let c = from(&[
            ("OTEL_SERVICE_NAME", "other"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "250"),
            ("LOG_FORMAT", "pretty"),
            ("OTEL_SDK_DISABLED", "TRUE"),
            ("RUST_LOG", "warn,orders=debug"),
            ("TELEMETRY_EXPORT_NICE", "5"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", " 64 "),
        ])
        .unwrap();
        assert_eq!(c.export_nice, 5);
        assert_eq!(c.max_export_batch_size, 64);
        assert_eq!(c.service_name, "other");
        assert_eq!(c.resolved_otlp_endpoint(), "http://localhost:4318");
        assert_eq!(c.export_timeout, Duration::from_millis(250));
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert!(c.sdk_disabled);
        assert_eq!(c.log_filter, "warn,orders=debug");
    }

    #[test]
    fn the_sampler_and_its_ratio_come_from_the_environment() {
        let sampler = |vars: &[(&str, &str)]| from(vars).unwrap().sampler;
        assert_eq!(sampler(&[]), TraceSampler::ParentBasedAlwaysOn);
        assert_eq!(
            sampler(&[("OTEL_TRACES_SAMPLER", "always_off")]),
            TraceSampler::AlwaysOff
        );
        assert_eq!(
            sampler(&[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", " 0.25 ")
            ]),
            TraceSampler::ParentBasedTraceIdRatio(0.25)
        );
        // No argument: 1.0. An argument to a sampler that takes none: ignored.
        assert_eq!(
            sampler(&[("OTEL_TRACES_SAMPLER", "traceidratio")]),
            TraceSampler::TraceIdRatio(1.0)
        );
        assert_eq!(
            sampler(&[
                ("OTEL_TRACES_SAMPLER", "always_on"),
                ("OTEL_TRACES_SAMPLER_ARG", "abc")
            ]),
            TraceSampler::AlwaysOn
        );
        for (name, arg) in [
            ("bogus", "0.5"),
            ("jaeger_remote", ""),
            ("traceidratio", "abc"),
            ("traceidratio", "1.5"),
            ("parentbased_traceidratio", "-0.1"),
            ("traceidratio", "NaN"),
        ] {
            let err = from(&[
                ("OTEL_TRACES_SAMPLER", name),
                ("OTEL_TRACES_SAMPLER_ARG", arg),
            ])
            .unwrap_err();
            let variable = if name == "bogus" || name == "jaeger_remote" {
                "OTEL_TRACES_SAMPLER"
            } else {
                "OTEL_TRACES_SAMPLER_ARG"
            };
            assert_eq!(err.variable, variable, "{name} {arg}: {err}");
        }
    }

    #[test]
    fn each_sampler_decides_as_its_name_says() {
        use opentelemetry::trace::{SpanKind, TraceId};
        use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample};
        let root = |s: TraceSampler| {
            s.to_sdk()
                .should_sample(None, TraceId::from(7u128), "x", &SpanKind::Server, &[], &[])
                .decision
        };
        assert_eq!(
            root(TraceSampler::AlwaysOn),
            SamplingDecision::RecordAndSample
        );
        assert_eq!(root(TraceSampler::AlwaysOff), SamplingDecision::Drop);
        assert_eq!(
            root(TraceSampler::TraceIdRatio(0.0)),
            SamplingDecision::Drop
        );
        assert_eq!(
            root(TraceSampler::ParentBasedAlwaysOn),
            SamplingDecision::RecordAndSample
        );
        assert_eq!(
            root(TraceSampler::ParentBasedAlwaysOff),
            SamplingDecision::Drop
        );
        assert_eq!(
            root(TraceSampler::ParentBasedTraceIdRatio(1.0)),
            SamplingDecision::RecordAndSample
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("LOG_FORMAT", "xml"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317"),
            ("OTEL_SDK_DISABLED", "yes"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "many"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
            ("TELEMETRY_EXPORT_NICE", "20"),
            ("TELEMETRY_EXPORT_NICE", "-5"),
        ] {
            let err = from(&[(k, v)]).unwrap_err();
            assert_eq!(err.variable, k);
            assert!(err.to_string().contains(v), "{err}");
        }
    }
}
