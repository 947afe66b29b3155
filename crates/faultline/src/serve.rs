//! `faultline serve <service>`: one service in the foreground.
//!
//! Initialises telemetry for the service (its own `service.name`, OTLP, JSON logs, Prometheus
//! recorder), starts it from the CONTRACT's environment variables, and shuts down gracefully on
//! SIGINT/SIGTERM — or, with `--stop-on-stdin-eof`, when its parent (`faultline up`) goes away,
//! even if the parent was killed outright: the kernel closes the pipe either way.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use servicekit::server::{CancellationToken, shutdown_signal};
use tokio::io::AsyncReadExt;

/// The three services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Service {
    /// The public REST edge (8080, admin 9080).
    Gateway,
    /// Orders: database, optimistic locking, transactional outbox (8081, admin 9081).
    Orders,
    /// The fulfillment worker fed by the queue (8082, admin 9082).
    Fulfillment,
}

impl Service {
    /// The `service.name` and the argument of `serve`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Orders => "orders",
            Service::Fulfillment => "fulfillment",
        }
    }

    /// All three, in data-flow order of start-up dependencies (downstream first).
    pub const ALL: [Service; 3] = [Service::Orders, Service::Fulfillment, Service::Gateway];
}

/// Arguments of `faultline serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Which service to run.
    #[arg(value_enum)]
    pub service: Service,
    /// Shut down when standard input reaches end-of-file (set by `faultline up`, so children
    /// never outlive it).
    #[arg(long, hide = true)]
    pub stop_on_stdin_eof: bool,
}

/// One service's configuration, read from the environment before telemetry starts (so that
/// its fault registry can hook into the span pipeline for `telemetry.clock_skew`).
enum ServiceConfig {
    Gateway(gateway::Config),
    Orders(orders::Config),
    Fulfillment(fulfillment::Config),
}

impl ServiceConfig {
    fn from_env(service: Service) -> anyhow::Result<Self> {
        Ok(match service {
            Service::Gateway => Self::Gateway(gateway::Config::from_env()?),
            Service::Orders => Self::Orders(orders::Config::from_env()?),
            Service::Fulfillment => Self::Fulfillment(fulfillment::Config::from_env()?),
        })
    }

    fn faults(&self) -> &chaos::Faults {
        match self {
            Self::Gateway(c) => &c.faults,
            Self::Orders(c) => &c.faults,
            Self::Fulfillment(c) => &c.faults,
        }
    }
}

/// The `deployment.environment.name` resource attribute of every process the CLI runs (the
/// services and the load generator alike, so that one trace has one environment):
/// `FAULTLINE_ENVIRONMENT`, `native` when unset (compose sets `compose`).
pub fn deployment_environment() -> String {
    servicekit::env::string("FAULTLINE_ENVIRONMENT", "native")
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let name = args.service.name();
    let service_config = ServiceConfig::from_env(args.service)
        .with_context(|| format!("invalid configuration for {name}"))?;
    let mut config = telemetry::TelemetryConfig::from_env(name)
        .with_context(|| format!("invalid telemetry configuration for {name}"))?;
    config.service_namespace = Some("faultline".into());
    config.service_version = env!("CARGO_PKG_VERSION").into();
    config.deployment_environment = deployment_environment();
    config.span_hook = Some(service_config.faults().clock_skew_hook());
    let guard = telemetry::init(config).context("cannot initialise telemetry")?;
    let metrics = guard.metrics().cloned();

    let shutdown = CancellationToken::new();
    {
        // One watcher for every reason to stop, so the log names the first and only it: a
        // supervisor sharing our process group (not `faultline up`, which gives each service a
        // group of its own) may signal us and close our stdin at the same moment.
        let token = shutdown.clone();
        let stop_on_stdin_eof = args.stop_on_stdin_eof;
        tokio::spawn(async move {
            tokio::select! {
                signal = shutdown_signal() => {
                    tracing::info!("{signal} received, shutting down");
                }
                () = stdin_closed(), if stop_on_stdin_eof => {
                    tracing::info!("parent process went away (stdin closed), shutting down");
                }
            }
            token.cancel();
        });
    }

    let result = start_and_wait(service_config, metrics, shutdown).await;
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "{name} stopped with an error");
    }
    if let Err(e) = guard.shutdown().await {
        eprintln!("warning: {e}");
    }
    result.map(|()| ExitCode::SUCCESS)
}

async fn start_and_wait(
    config: ServiceConfig,
    metrics: Option<telemetry::MetricsHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let running = match config {
        ServiceConfig::Gateway(config) => gateway::start(config, metrics, shutdown).await?,
        ServiceConfig::Orders(config) => orders::start(config, metrics, shutdown).await?,
        ServiceConfig::Fulfillment(config) => fulfillment::start(config, metrics, shutdown).await?,
    };
    tracing::info!(app = %running.app_addr, admin = %running.admin_addr, "listening");
    running.wait().await
}

/// Returns when stdin reaches its end (or fails): the parent that holds its other end, `faultline
/// up`, has stopped or died.
async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}
