//! `overhead-load`: open-loop load at a constant rate; prints one JSON report on stdout
//! (see `overhead::load`).
//!
//! ```text
//! overhead-load --url http://127.0.0.1:18080/trivial --rate 5000 --duration 30s --warmup 5s
//! ```

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use http::header::{HeaderName, HeaderValue};
use overhead::load::{LoadConfig, run};

#[derive(Parser)]
#[command(about = "Open-loop HTTP load (constant arrival rate, no coordinated omission)")]
struct Cli {
    /// `http://host:port/path` (plain HTTP/1.1).
    #[arg(long)]
    url: http::Uri,
    /// Requests per second.
    #[arg(long)]
    rate: f64,
    /// Recorded duration.
    #[arg(long, default_value = "30s", value_parser = overhead::parse_duration)]
    duration: Duration,
    /// Unrecorded warm-up before it.
    #[arg(long, default_value = "5s", value_parser = overhead::parse_duration)]
    warmup: Duration,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Extra header, `name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Send no `traceparent` (by default every request carries `overhead::TRACEPARENT`).
    #[arg(long)]
    no_traceparent: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let authority = cli
        .url
        .authority()
        .context("the URL needs host:port")?
        .to_string();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&authority)
        .with_context(|| format!("cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to nothing"))?;
    let mut headers = Vec::new();
    if !cli.no_traceparent {
        headers.push((
            HeaderName::from_static("traceparent"),
            HeaderValue::from_static(overhead::TRACEPARENT),
        ));
    }
    for h in &cli.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not `name: value`"))?;
        headers.push((
            HeaderName::try_from(name.trim())?,
            HeaderValue::try_from(value.trim())?,
        ));
    }
    let config = LoadConfig {
        addr,
        authority,
        path: cli
            .url
            .path_and_query()
            .map_or("/".to_owned(), |p| p.to_string()),
        headers,
        rate: cli.rate,
        duration: cli.duration,
        warmup: cli.warmup,
        connections: cli.connections,
        drain_timeout: Duration::from_secs(10),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(config))?;
    println!("{}", report.to_json());
    Ok(())
}
