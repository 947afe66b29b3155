//! `overhead-server`: the app of `bench/overhead.sh`, bare or instrumented.
//!
//! ```text
//! overhead-server serve --mode bare|instrumented --listen 127.0.0.1:18080 \
//!     --admin-listen 127.0.0.1:19080 --work-iterations N
//! overhead-server calibrate --target 200us     # prints N for GET /work
//! ```
//!
//! Instrumented, it reads the same environment as `faultline serve` (`RUST_LOG`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER`, …) and writes its JSON log lines to
//! stdout, which the harness redirects to a file, as `faultline up` does. It prints one
//! `ready …` line on stderr once both listeners are bound. SIGTERM or SIGINT stops it
//! gracefully (telemetry flushed).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use overhead::{AppConfig, Mode};

#[derive(Parser)]
#[command(about = "The bare-vs-instrumented app of bench/overhead.sh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve GET /trivial and GET /work (app listener), /metrics and /healthz (admin listener).
    Serve {
        #[arg(long, value_enum)]
        mode: Mode,
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:19080")]
        admin_listen: SocketAddr,
        /// `burn` iterations of GET /work (from `calibrate`).
        #[arg(long)]
        work_iterations: u64,
        /// Do not write the per-request `info` log line.
        #[arg(long)]
        no_request_log: bool,
    },
    /// Print the number of `burn` iterations that take `--target` on this core.
    Calibrate {
        #[arg(long, default_value = "200us", value_parser = overhead::parse_duration)]
        target: Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Calibrate { target } => {
            println!("{}", overhead::calibrate(target, 200));
            ExitCode::SUCCESS
        }
        Command::Serve {
            mode,
            listen,
            admin_listen,
            work_iterations,
            no_request_log,
        } => {
            // The runtime `faultline` builds for its services.
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let config = AppConfig {
                work_iterations,
                log_per_request: !no_request_log,
            };
            match runtime.block_on(serve(mode, listen, admin_listen, config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(
    mode: Mode,
    listen: SocketAddr,
    admin_listen: SocketAddr,
    config: AppConfig,
) -> anyhow::Result<()> {
    let (guard, app) = match mode {
        Mode::Bare => (None, overhead::router(config)),
        Mode::Instrumented => {
            let mut telemetry = telemetry::TelemetryConfig::from_env("overhead-server")
                .context("invalid telemetry configuration")?;
            telemetry.service_namespace = Some("faultline".into());
            telemetry.service_version = env!("CARGO_PKG_VERSION").into();
            telemetry.deployment_environment = "bench".into();
            let guard = telemetry::init(telemetry).context("cannot initialise telemetry")?;
            (Some(guard), overhead::instrumented_router(config))
        }
    };
    let metrics = guard.as_ref().and_then(|g| g.metrics().cloned());
    // The services' admin routes: /metrics (404 when bare: no recorder), /healthz, /readyz.
    let admin = servicekit::admin::admin_router(metrics, servicekit::admin::Readiness::new());

    let app_listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let admin_listener = tokio::net::TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("cannot listen on {admin_listen}"))?;
    eprintln!(
        "ready mode={mode:?} app={} admin={} pid={}",
        app_listener.local_addr()?,
        admin_listener.local_addr()?,
        std::process::id()
    );
    tracing::info!(%listen, %admin_listen, ?mode, "overhead-server listening");

    let stop = tokio_stop();
    let app_server = axum::serve(app_listener, app).with_graceful_shutdown(stop.clone().wait());
    let admin_server = axum::serve(admin_listener, admin).with_graceful_shutdown(stop.wait());
    let (a, b) = tokio::join!(app_server.into_future(), admin_server.into_future());
    a?;
    b?;
    if let Some(guard) = guard
        && let Err(e) = guard.shutdown().await
    {
        eprintln!("warning: {e}");
    }
    Ok(())
}

/// Resolves (for every clone) once SIGTERM or SIGINT arrives.
#[derive(Clone)]
struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    async fn wait(mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }
}

fn tokio_stop() -> Stop {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = tx.send(true);
    });
    Stop(rx)
}
