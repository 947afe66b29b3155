//! `overhead-hops`: where the time goes per hop, from spans dumped by
//! `overhead-collector --spans-out FILE` (see `overhead::hops`).
//!
//! ```text
//! overhead-collector --grpc 127.0.0.1:4317 --stats 127.0.0.1:14318 --spans-out spans.jsonl &
//! faultline up --no-load & faultline load --mix 100,0,0 --rps 250 --duration 20s
//! overhead-hops --spans spans.jsonl --anchor "POST /api/orders"
//! ```

use anyhow::Context as _;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Per-hop breakdown of traces dumped by overhead-collector --spans-out")]
struct Cli {
    /// The JSON-lines file written by `overhead-collector --spans-out`.
    #[arg(long)]
    spans: std::path::PathBuf,
    /// Anchor each trace at the first span with this name (default: the trace's root span).
    #[arg(long)]
    anchor: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let text = std::fs::read_to_string(&cli.spans)
        .with_context(|| format!("cannot read {}", cli.spans.display()))?;
    let spans = overhead::hops::parse(&text)?;
    print!("{}", overhead::hops::report(&spans, cli.anchor.as_deref()));
    Ok(())
}
