//! `faultline`: the command users touch.
//!
//! - `up` starts the three services as child processes (`faultline serve <name>`), waits until
//!   they are ready, prints where everything is, and drives a modest load;
//! - `serve <service>` runs one service in this process (what `up` runs for each service);
//! - `load` sends open-loop traffic at a fixed rate and reports latency percentiles;
//! - `status` asks every service's `/readyz`.
//!
//! Usage errors exit with status 2 (clap), runtime errors with status 1 and one clear line.

mod drill;
mod fault;
mod load;
mod serve;
mod status;
mod up;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Faultline: an incident-debugging lab. Start the shop with `faultline up`, then watch its
/// traces, metrics and logs.
#[derive(Parser, Debug)]
#[command(name = "faultline", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start gateway, orders and fulfillment (and a load generator) on this machine.
    ///
    /// Ctrl-C (or SIGTERM) stops them one by one, gateway, fulfillment, then orders, each
    /// flushing its telemetry; a service not stopped within 10 s is killed (exit status 1). A
    /// second Ctrl-C kills whatever still runs (exit status 130; 143 for SIGTERM).
    Up(up::UpArgs),
    /// Run one service in the foreground (what `up` runs for each service).
    Serve(serve::ServeArgs),
    /// Send open-loop traffic to the gateway and report status counts and latency percentiles.
    Load(load::LoadArgs),
    /// Show whether each service and its dependencies are ready.
    Status(status::StatusArgs),
    /// Inject, list and clear faults (latency, errors, slow queries, stalls, …).
    Fault(fault::FaultArgs),
    /// Practise: start a blind incident drill, find the cause, answer, get graded.
    Drill(drill::DrillArgs),
}

/// Parses durations such as `30s`, `5m`, `1h30m`, `250ms`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 5m, 250ms)"))
}

/// For the verbs that print a listing and exit (`status`, `fault`, `drill`): a closed stdout
/// (`faultline drill list | head -1`) ends the process quietly, as it does any Unix filter,
/// instead of `println!` panicking on the broken pipe. The Rust runtime ignores SIGPIPE; this
/// restores the default action. Not for `up`, `serve` and `load`, which run for long and must
/// stop their way (flushing telemetry, stopping the services) whatever happens to their output.
fn die_quietly_on_a_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: called on the main thread before any other thread exists; `signal` with
    // `SIG_DFL` installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Status(_) | Command::Fault(_) | Command::Drill(_)
    ) {
        die_quietly_on_a_closed_stdout();
    }
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
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Load(args) => load::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Fault(args) => fault::run(args).await,
            Command::Drill(args) => drill::run(args).await,
        }
    });
    // Do not wait for stray blocking tasks (e.g. a stdin reader) at exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
