//! `overhead-collector`: a live OTLP receiver (gRPC, and OTLP/HTTP with protobuf bodies on the
//! stats port) that counts spans and log records and keeps none of them (see
//! `overhead::collector`).
//!
//! ```text
//! overhead-collector --grpc 127.0.0.1:14317 --stats 127.0.0.1:14318
//! curl -s http://127.0.0.1:14318/stats   # {"spans":…,"logs":…,"trace_requests":…,"log_requests":…}
//! ```
//!
//! Runs until SIGTERM or SIGINT, then prints the final counts on stdout. By default it counts
//! each request's spans and log records without decoding them (`--decode count`, the least
//! CPU for a receiver that shares a core with the load tools); `--decode full` decodes every
//! request as a collector does. With `--spans-out FILE` (which decodes in full) it also writes
//! every span as a JSON line, for `overhead-hops`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, ValueEnum as _};
use overhead::collector::{Counts, Decode, SpanDump, serve};

#[derive(Parser)]
#[command(
    about = "A counting OTLP receiver (gRPC; OTLP/HTTP on the stats port) for bench/overhead.sh"
)]
struct Cli {
    /// OTLP/gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:14317")]
    grpc: SocketAddr,
    /// HTTP address of GET /stats and of OTLP/HTTP (POST /v1/traces, POST /v1/logs).
    #[arg(long, default_value = "127.0.0.1:14318")]
    stats: SocketAddr,
    /// How much of each export request to read: `count` walks its protobuf framing down to the
    /// spans and log records and counts them undecoded; `full` decodes everything, as a
    /// collector does.
    #[arg(long, value_enum, default_value_t = Decode::Count)]
    decode: Decode,
    /// Also write every span to this file, one JSON object per line (implies `--decode full`).
    #[arg(long)]
    spans_out: Option<std::path::PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let decode = if cli.spans_out.is_some() {
        Decode::Full
    } else {
        cli.decode
    };
    let grpc = tokio::net::TcpListener::bind(cli.grpc)
        .await
        .with_context(|| format!("cannot listen on {}", cli.grpc))?;
    let stats = tokio::net::TcpListener::bind(cli.stats)
        .await
        .with_context(|| format!("cannot listen on {}", cli.stats))?;
    eprintln!(
        "ready grpc={} stats={} decode={} pid={}",
        grpc.local_addr()?,
        stats.local_addr()?,
        decode
            .to_possible_value()
            .expect("no variant is skipped")
            .get_name(),
        std::process::id()
    );
    let dump = match &cli.spans_out {
        Some(path) => Some(
            SpanDump::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => None,
    };
    let counts = Arc::new(Counts::default());
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    serve(grpc, stats, counts.clone(), decode, dump, stop).await?;
    println!("{}", counts.to_json());
    Ok(())
}
