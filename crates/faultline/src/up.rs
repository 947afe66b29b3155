//! `faultline up`: the whole shop on this machine, one process per service.
//!
//! `up` re-executes its own binary as `faultline serve <service>` three times, so each service
//! has its own process and its own telemetry, as it would in a container. The children's standard
//! input is a pipe held by `up`: when `up` exits — cleanly, by Ctrl-C, or killed outright — the
//! pipe closes and every child shuts down gracefully, flushing its telemetry. No process is left
//! behind.
//!
//! Stopping follows the flow of an order backwards ([`STOP_ORDER`]): the gateway first (no new
//! orders), then fulfillment (it finishes the orders it holds and can still report them to
//! orders), then orders. The children run in process groups of their own, so Ctrl-C in the
//! terminal reaches `up` alone and this order holds; sent to all three at once, fulfillment
//! would retry its status reports against an orders service already gone (a second or more of
//! shutdown, and an order left to be redelivered). Each service has [`STOP_GRACE`] to stop
//! before it is killed. From the first Ctrl-C on, a second one (or SIGTERM) kills whatever
//! still runs and `up` exits with status 130.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use servicekit::client::HttpClient;
use servicekit::server::{CancellationToken, SignalWatch, watch_signals};
use tokio::process::{Child, Command};
use tracing::instrument::WithSubscriber as _;

use crate::serve::Service;
use crate::status::{admin_port, app_port, readiness};

/// Arguments of `faultline up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Do not start the load generator.
    #[arg(long)]
    pub no_load: bool,
    /// Rate of the built-in load generator, requests per second.
    #[arg(long, default_value_t = 5.0, value_parser = crate::load::positive_rate)]
    pub rps: f64,
    /// Where databases, the queue, logs and the admin token live.
    #[arg(long, default_value = ".faultline")]
    pub dir: PathBuf,
    /// How long to wait for every service to become ready.
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    pub ready_timeout: Duration,
}

/// Telemetry for a CLI process (load generator): spans exported like any service's, human
/// logs on stderr at `warn` unless `RUST_LOG` says otherwise, no metrics recorder.
pub fn init_cli_telemetry(name: &str) -> anyhow::Result<telemetry::TelemetryGuard> {
    let mut config = telemetry::TelemetryConfig::from_env(name)?;
    if std::env::var_os("RUST_LOG").is_none() {
        // The CLI reports failed requests in its summary and says once whether a collector
        // listens; per-request transport warnings would bury its own output.
        config.log_filter = "warn,telemetry=error".into();
    }
    config.ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if std::env::var_os("LOG_FORMAT").is_none() {
        config.log_format = telemetry::LogFormat::Pretty;
    }
    config.service_namespace = Some("faultline".into());
    config.service_version = env!("CARGO_PKG_VERSION").into();
    config.deployment_environment = crate::serve::deployment_environment();
    config.install_metrics_recorder = false;
    config.shutdown_timeout = Duration::from_secs(2);
    telemetry::init_with_writer(config, std::io::stderr).context("cannot initialise telemetry")
}

struct Spawned {
    service: Service,
    child: Child,
    log: PathBuf,
}

/// The last `n` lines of a file, for error messages.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

async fn spawn(service: Service, exe: &Path, dir: &Path, token: &str) -> anyhow::Result<Spawned> {
    let log = dir.join("logs").join(format!("{}.log", service.name()));
    // Appended, not truncated: a trace id from an earlier run can still be found.
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open the log file {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg(service.name())
        .arg("--stop-on-stdin-eof")
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(err)
        .env("FAULTLINE_ADMIN_TOKEN", token)
        .kill_on_drop(true);
    // Out of the terminal's foreground process group: a Ctrl-C there reaches `up` alone, which
    // then stops the services in STOP_ORDER through their stdin.
    #[cfg(unix)]
    cmd.process_group(0);
    // Native defaults, unless the user chose otherwise.
    if std::env::var_os("DATABASE_URL").is_none() {
        cmd.env(
            "DATABASE_URL",
            sqlite_url(&dir.join(format!("{}.db", service.name()))),
        );
    }
    if std::env::var_os("QUEUE_URL").is_none() {
        cmd.env("QUEUE_URL", sqlite_url(&dir.join("queue.db")));
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{} serve {}`", exe.display(), service.name()))?;
    Ok(Spawned {
        service,
        child,
        log,
    })
}

/// Fails, naming them, when any of the native ports (8080–8082, 9080–9082 on 127.0.0.1) cannot
/// be bound: whatever holds one (another `up`, a `faultline serve`) would answer the readiness
/// checks in place of the service this `up` starts, which then dies on start-up.
fn check_ports_free() -> anyhow::Result<()> {
    let mut in_use = Vec::new();
    let mut other = Vec::new();
    for service in Service::ALL {
        for port in [app_port(service), admin_port(service)] {
            match std::net::TcpListener::bind(("127.0.0.1", port)) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    in_use.push(format!("{port} ({})", service.name()));
                }
                Err(e) => other.push(format!("{port} ({}): {e}", service.name())),
            }
        }
    }
    if !in_use.is_empty() {
        bail!(
            "port {} on 127.0.0.1 already in use: is another `faultline up` (or `faultline serve`) \
             running? Stop it first",
            in_use.join(", ")
        );
    }
    if !other.is_empty() {
        bail!("cannot listen on {}", other.join(", "));
    }
    Ok(())
}

/// Waits until every child answers `/readyz` with 200, failing early if one exits.
async fn wait_ready(children: &mut [Spawned], timeout: Duration) -> anyhow::Result<()> {
    let client = HttpClient::new();
    let deadline = Instant::now() + timeout;
    loop {
        for c in children.iter_mut() {
            if let Some(status) = c.child.try_wait()? {
                bail!(
                    "{} exited during start-up ({status}); last lines of {}:\n{}",
                    c.service.name(),
                    c.log.display(),
                    tail(&c.log, 20)
                );
            }
        }
        let mut waiting = Vec::new();
        for c in children.iter() {
            let (ok, body) = readiness(&client, "127.0.0.1", c.service).await;
            if !ok {
                waiting.push(format!("{} ({})", c.service.name(), body));
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "not ready after {}: {}\nsee the logs in {}",
                humantime::format_duration(timeout),
                waiting.join(", "),
                children[0]
                    .log
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The order in which `up` stops the services: against the flow of an order, so that none is
/// left waiting on one already gone (see the [module docs](self)).
pub const STOP_ORDER: [Service; 3] = [Service::Gateway, Service::Fulfillment, Service::Orders];

/// How long each service has to stop after its stdin closes before it is killed: its telemetry
/// flush alone may take the telemetry shutdown timeout (5 s) when the collector hangs, and a
/// server waits for its requests in flight (one a client holds open on a hung route, say).
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How the services stopped.
#[derive(Debug, Default)]
struct Stopped {
    /// Killed for not stopping within [`STOP_GRACE`].
    timed_out: Vec<&'static str>,
    /// Killed because a second Ctrl-C or SIGTERM came: its name.
    interrupted: Option<&'static str>,
}

/// Stops the children one after another in [`STOP_ORDER`] (see [`stop_in_order`]); the
/// second signal `signals` hears kills whatever still runs.
async fn stop_all(children: &mut [Spawned], signals: &SignalWatch) -> Stopped {
    let impatient = std::pin::pin!(signals.second());
    stop_in_order(children, impatient, None).await
}

/// The exit status after a second `signal` cut the stop short: 128 + its number, as a shell
/// reports a job a signal ended (130 for SIGINT, 143 for SIGTERM).
fn killed_by(signal: &str) -> ExitCode {
    ExitCode::from(if signal == "SIGTERM" { 143 } else { 130 })
}

/// Stops the children one after another in [`STOP_ORDER`]: closes a child's stdin (it shuts down
/// gracefully) and waits for it to exit before telling the next, printing each as it goes. A
/// child still running after [`STOP_GRACE`] is killed. When `impatient` (the second Ctrl-C or
/// SIGTERM) completes meanwhile, or `interrupted` names one that already came, every child
/// still running is killed at once.
async fn stop_in_order(
    children: &mut [Spawned],
    mut impatient: std::pin::Pin<&mut impl std::future::Future<Output = &'static str>>,
    interrupted: Option<&'static str>,
) -> Stopped {
    use std::io::Write as _;
    let mut stopped = Stopped {
        interrupted,
        ..Stopped::default()
    };
    for service in STOP_ORDER {
        let Some(c) = children.iter_mut().find(|c| c.service == service) else {
            continue;
        };
        let name = c.service.name();
        drop(c.child.stdin.take());
        if let Ok(Some(status)) = c.child.try_wait() {
            println!("  {name} had already exited ({status})");
            continue;
        }
        if stopped.interrupted.is_none() {
            print!("  stopping {name}…");
            let _ = std::io::stdout().flush();
            let started = Instant::now();
            tokio::select! {
                r = tokio::time::timeout(STOP_GRACE, c.child.wait()) => {
                    if r.is_ok() {
                        println!(" stopped ({} ms)", started.elapsed().as_millis());
                        continue;
                    }
                    println!(
                        " did not stop within {}; killing it",
                        humantime::format_duration(STOP_GRACE)
                    );
                    stopped.timed_out.push(name);
                }
                signal = &mut impatient => {
                    println!("\nSecond signal ({signal}): killing the services");
                    stopped.interrupted = Some(signal);
                }
            }
        }
        let _ = c.child.kill().await;
    }
    stopped
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    // Before anything is written: a running lab's token file stays as it is.
    check_ports_free()?;
    std::fs::create_dir_all(args.dir.join("logs"))
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let token_file = dir.join("admin-token");
    write_private(&token_file, &token)?;
    let exe = std::env::current_exe().context("cannot find the faultline executable")?;

    let guard = init_cli_telemetry("faultline-load")?;
    let stop = CancellationToken::new();
    // From now on: the first Ctrl-C or SIGTERM stops gracefully, a second kills.
    let signals = watch_signals(stop.clone());

    println!(
        "Starting Faultline (native mode, state in {})",
        dir.display()
    );
    let mut children = Vec::new();
    for service in Service::ALL {
        match spawn(service, &exe, &dir, &token).await {
            Ok(c) => children.push(c),
            Err(e) => {
                stop_all(&mut children, &signals).await;
                return Err(e);
            }
        }
    }
    let started = Instant::now();
    // `up` polling for readiness is not load: with no subscriber, those calls make no CLIENT
    // spans (refused connections, before the services listen, would be exported as errors).
    let polls = wait_ready(&mut children, args.ready_timeout)
        .with_subscriber(tracing::subscriber::NoSubscriber::default());
    let ready = tokio::select! {
        r = polls => r,
        _ = stop.cancelled() => Err(anyhow::anyhow!("interrupted during start-up")),
    };
    if let Err(e) = ready {
        stop_all(&mut children, &signals).await;
        let _ = guard.shutdown().await;
        return Err(e);
    }
    // Where the services export: they read the same environment (endpoint, protocol,
    // OTEL_SDK_DISABLED) and would not have started had it been invalid.
    let config = telemetry::TelemetryConfig::from_env("faultline").ok();
    let otlp = if config.as_ref().is_some_and(|c| c.sdk_disabled) {
        Otlp::Disabled
    } else {
        let endpoint = config.map_or_else(
            || "http://localhost:4317".to_owned(),
            |c| c.resolved_otlp_endpoint(),
        );
        let listening = otlp_receiver_listens(&endpoint).await;
        Otlp::Endpoint {
            endpoint,
            listening,
        }
    };
    print_banner(&dir, started.elapsed(), &args, &otlp);

    let load = (!args.no_load).then(|| {
        let load_args = crate::load::LoadArgs {
            rps: args.rps,
            duration: Duration::from_secs(365 * 24 * 3600),
            target: "http://127.0.0.1:8080".into(),
            users: 50,
            max_in_flight: 256,
            timeout: Duration::from_secs(10),
            mix: crate::load::Mix::default(),
        };
        let stop = stop.clone();
        tokio::spawn(async move { crate::load::generate(&load_args, stop, false).await })
    });

    // Run until Ctrl-C/SIGTERM, or until a service dies on its own.
    let mut exit = ExitCode::SUCCESS;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if let Some(c) = children.iter_mut().find_map(|c| match c.child.try_wait() {
            Ok(Some(status)) => Some((c.service, status, c.log.clone())),
            _ => None,
        }) {
            eprintln!(
                "\n{} exited unexpectedly ({}); last lines of {}:\n{}",
                c.0.name(),
                c.1,
                c.2.display(),
                tail(&c.2, 20)
            );
            exit = ExitCode::FAILURE;
            stop.cancel();
            break;
        }
    }

    // A second Ctrl-C or SIGTERM from here on kills whatever still runs.
    let mut impatient = std::pin::pin!(signals.second());
    println!("\nStopping… (Ctrl-C again to kill the services at once)");
    let mut interrupted = None;
    if let Some(load) = load {
        // The load waits for its requests in flight (up to their 10 s timeout plus 1 s, say
        // under a hang fault) to report them.
        tokio::select! {
            report = load => if let Ok(report) = report {
                report.print(args.rps);
            },
            signal = &mut impatient => {
                println!("Second signal ({signal}): killing the services");
                interrupted = Some(signal);
            }
        }
    }
    let stopped = stop_in_order(&mut children, impatient.as_mut(), interrupted).await;
    if let Some(signal) = stopped.interrupted {
        // Best effort for `up`'s own telemetry (the load's spans), without making the
        // impatient user wait.
        let _ = tokio::time::timeout(Duration::from_millis(200), guard.shutdown()).await;
        println!("Services killed.");
        return Ok(killed_by(signal));
    }
    // `up`'s own telemetry (the load's spans); a second Ctrl-C cuts it short too.
    tokio::select! {
        _ = guard.shutdown() => {}
        signal = &mut impatient => {
            println!("Second signal ({signal}): not waiting for telemetry");
            return Ok(killed_by(signal));
        }
    }
    if !stopped.timed_out.is_empty() {
        eprintln!(
            "All services stopped; killed for not stopping in time: {} (logs in {}).",
            stopped.timed_out.join(", "),
            dir.join("logs").display()
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("All services stopped.");
    Ok(exit)
}

/// Where the services send their traces and logs, for the banner.
enum Otlp {
    /// `OTEL_SDK_DISABLED=true`.
    Disabled,
    /// The endpoint the services resolve (the protocol's default port when unset), and whether
    /// something accepted a TCP connection there.
    Endpoint { endpoint: String, listening: bool },
}

/// Whether something accepts TCP connections at the host and port of `endpoint` (an OTLP
/// endpoint URL such as `http://localhost:4317`), within 300 ms. Only for the banner's advice:
/// the services export (or count their failures) either way.
async fn otlp_receiver_listens(endpoint: &str) -> bool {
    let Some(address) = telemetry::export::collector_address(endpoint) else {
        return false;
    };
    matches!(
        tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(address)
        )
        .await,
        Ok(Ok(_))
    )
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn print_banner(dir: &Path, took: Duration, args: &UpArgs, otlp: &Otlp) {
    let rel = |p: PathBuf| {
        std::env::current_dir()
            .ok()
            .and_then(|cwd| p.strip_prefix(cwd).ok().map(Path::to_path_buf))
            .unwrap_or(p)
            .display()
            .to_string()
    };
    println!("All services ready in {:.1} s.\n", took.as_secs_f64());
    println!("  {:<12} {:<24} {:<32} logs", "service", "API", "metrics");
    // Along the flow of an order, as the README shows it.
    for service in [Service::Gateway, Service::Orders, Service::Fulfillment] {
        let port = app_port(service);
        println!(
            "  {:<12} {:<24} {:<32} {}",
            service.name(),
            format!("http://127.0.0.1:{port}"),
            format!("http://127.0.0.1:{}/metrics", admin_port(service)),
            rel(dir.join("logs").join(format!("{}.log", service.name())))
        );
    }
    match otlp {
        Otlp::Disabled => println!("\n  traces and logs  not exported (OTEL_SDK_DISABLED)"),
        Otlp::Endpoint {
            endpoint,
            listening: true,
        } => println!("\n  traces and logs  OTLP to {endpoint} (a receiver is listening there)"),
        Otlp::Endpoint {
            endpoint,
            listening: false,
        } => println!(
            "\n  traces and logs  OTLP to {endpoint} (nothing listens there yet: start Jaeger or a collector to see them)"
        ),
    }
    println!("  admin token      {}", rel(dir.join("admin-token")));
    if args.no_load {
        println!("  load             off (run `faultline load` in another terminal)");
    } else {
        println!(
            "  load             {} req/s (`--no-load` to turn it off)",
            args.rps
        );
    }
    let exe = std::env::current_exe()
        .map(rel)
        .unwrap_or_else(|_| "faultline".to_owned());
    println!(
        "\nTry:\n  curl -si -X POST http://127.0.0.1:8080/api/orders -H 'content-type: application/json' \\\n       -d '{{\"user_id\":\"u-1\",\"items\":[{{\"sku\":\"sku-1\",\"quantity\":1}}]}}'\n  {exe} status\n  {exe} load --rps 50 --duration 30s\n  {exe} fault set orders db.slow_query --ms 800 --probability 0.3 --for 5m\n  {exe} drill start --random      (a blind incident to find; `drill list` shows them all)\n\nPress Ctrl-C to stop."
    );
}

#[cfg(test)]
mod tests {
    use super::{STOP_ORDER, otlp_receiver_listens};
    use crate::serve::Service;

    #[test]
    fn every_service_has_its_place_in_the_stop_order() {
        for service in Service::ALL {
            assert_eq!(
                STOP_ORDER.iter().filter(|s| **s == service).count(),
                1,
                "{} must appear once in STOP_ORDER, or `up` never stops it",
                service.name()
            );
        }
    }

    #[tokio::test]
    async fn the_banner_knows_whether_an_otlp_receiver_listens() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let endpoint = format!("http://127.0.0.1:{port}");
        assert!(otlp_receiver_listens(&endpoint).await, "{endpoint}");
        drop(listener);
        assert!(
            !otlp_receiver_listens(&endpoint).await,
            "{endpoint} after close"
        );
        assert!(!otlp_receiver_listens("not an endpoint").await);
        assert!(!otlp_receiver_listens("/v1/traces").await, "no host");
    }
}
