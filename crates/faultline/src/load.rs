//! `faultline load`: open-loop traffic with a realistic mix, and its latency report.
//!
//! *Open loop* means requests are sent on a fixed schedule whether or not earlier ones have
//! answered — as real users do — so a slow service builds a backlog instead of quietly slowing
//! the generator down. Latency is measured from the moment a request was *due*, not from when
//! it was sent, which avoids "coordinated omission" (hiding the worst latencies).
//!
//! The mix: 25 % order placements (`POST /api/orders`), 35 % status polls of a recently placed
//! order (`GET /api/orders/{id}`), 40 % user summaries (`GET /api/users/{id}/summary`). Each
//! request is the root CLIENT span of its trace.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use rand::Rng;
use servicekit::client::{ClientError, HttpClient};
use servicekit::server::CancellationToken;

/// Arguments of `faultline load`.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Requests per second (open loop: sent on schedule even if earlier ones are slow).
    #[arg(long, default_value_t = 20.0, value_parser = positive_rate)]
    pub rps: f64,
    /// How long to run, e.g. `30s`, `5m`.
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    pub duration: Duration,
    /// The gateway's base URL.
    #[arg(
        long,
        env = "FAULTLINE_GATEWAY_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub target: String,
    /// Distinct simulated users (`u-1` … `u-N`).
    #[arg(long, default_value_t = 50)]
    pub users: u32,
    /// Requests allowed in flight at once; beyond it, due requests are counted as `skipped`.
    #[arg(long, default_value_t = 512)]
    pub max_in_flight: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    pub timeout: Duration,
    /// Relative weights of order placements, status polls and user summaries, e.g.
    /// `100,0,0` for placements only.
    #[arg(long, default_value = "25,35,40", value_parser = parse_mix)]
    pub mix: Mix,
}

/// Relative weights of the three request kinds (placements, status polls, summaries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    place: u32,
    status: u32,
    summary: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            place: 25,
            status: 35,
            summary: 40,
        }
    }
}

fn parse_mix(s: &str) -> Result<Mix, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let weights: Option<Vec<u32>> = parts.iter().map(|p| p.parse::<u32>().ok()).collect();
    match weights.as_deref() {
        Some([place, status, summary]) if place + status + summary > 0 => Ok(Mix {
            place: *place,
            status: *status,
            summary: *summary,
        }),
        _ => Err(
            "three whole-number weights for placements,status polls,summaries, e.g. 25,35,40"
                .into(),
        ),
    }
}

/// Parses a request rate: a number in (0, 100000].
pub(crate) fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 100_000.0 => Ok(v),
        _ => Err("a number of requests per second above 0 and at most 100000, e.g. 20".into()),
    }
}

/// The three request kinds of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    PlaceOrder,
    OrderStatus,
    UserSummary,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::PlaceOrder => "POST /api/orders",
            Kind::OrderStatus => "GET /api/orders/{id}",
            Kind::UserSummary => "GET /api/users/{id}/summary",
        }
    }
}

/// Everything measured, shared by the request tasks.
#[derive(Default)]
struct Stats {
    by_status: BTreeMap<String, u64>,
    by_kind: BTreeMap<Kind, Histogram<u64>>,
    all: Option<Histogram<u64>>,
    skipped: u64,
    completed: u64,
    succeeded: u64,
}

impl Stats {
    fn record(&mut self, kind: Kind, outcome: &str, ok: bool, latency: Duration) {
        *self.by_status.entry(outcome.to_owned()).or_default() += 1;
        let micros = latency.as_micros().clamp(1, 3_600_000_000) as u64;
        let new = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        let _ = self.by_kind.entry(kind).or_insert_with(new).record(micros);
        let _ = self.all.get_or_insert_with(new).record(micros);
        self.completed += 1;
        if ok {
            self.succeeded += 1;
        }
    }
}

/// The result of a run.
pub struct Report {
    /// Requests that got an answer or an error.
    pub completed: u64,
    /// Requests answered with a 2xx.
    pub succeeded: u64,
    elapsed: Duration,
    stats: Stats,
}

fn ms(micros: u64) -> String {
    format!("{:.1} ms", micros as f64 / 1000.0)
}

impl Report {
    /// Prints the summary: counts by status, then p50/p90/p99 overall and per request kind.
    pub fn print(&self, target_rps: f64) {
        let secs = self.elapsed.as_secs_f64().max(0.001);
        println!(
            "\n{} requests in {:.1} s ({:.1}/s; target {:.1}/s){}",
            self.completed,
            secs,
            self.completed as f64 / secs,
            target_rps,
            if self.stats.skipped > 0 {
                format!(", {} skipped (too many in flight)", self.stats.skipped)
            } else {
                String::new()
            }
        );
        println!("  {:<22} {:>8}", "status", "count");
        for (status, count) in &self.stats.by_status {
            println!("  {status:<22} {count:>8}");
        }
        if let Some(all) = &self.stats.all {
            println!(
                "  {:<28} p50 {:>9}  p90 {:>9}  p99 {:>9}  max {:>9}",
                "latency (all)",
                ms(all.value_at_quantile(0.50)),
                ms(all.value_at_quantile(0.90)),
                ms(all.value_at_quantile(0.99)),
                ms(all.max())
            );
        }
        for (kind, h) in &self.stats.by_kind {
            println!(
                "  {:<28} p50 {:>9}  p90 {:>9}  p99 {:>9}  ({} requests)",
                kind.label(),
                ms(h.value_at_quantile(0.50)),
                ms(h.value_at_quantile(0.90)),
                ms(h.value_at_quantile(0.99)),
                h.len()
            );
        }
    }
}

/// Runs the generator until `duration` has passed or `stop` is cancelled. `progress` prints a
/// live line every second.
pub async fn generate(args: &LoadArgs, stop: CancellationToken, progress: bool) -> Report {
    let client = HttpClient::new();
    let stats = Arc::new(Mutex::new(Stats::default()));
    let recent_orders: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight));
    let interval = Duration::from_secs_f64(1.0 / args.rps);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + args.duration;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut last_progress = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let base = args.target.trim_end_matches('/').to_owned();

    loop {
        let due = tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => break,
            due = ticker.tick() => due,
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            stats.lock().unwrap().skipped += 1;
            continue;
        };
        let kind = {
            let mix = args.mix;
            let roll: u32 = rand::rng().random_range(0..mix.place + mix.status + mix.summary);
            let have_orders = !recent_orders.lock().unwrap().is_empty();
            if roll < mix.place {
                Kind::PlaceOrder
            } else if roll < mix.place + mix.status {
                // A status poll needs an order to poll; place one first.
                if have_orders {
                    Kind::OrderStatus
                } else {
                    Kind::PlaceOrder
                }
            } else {
                Kind::UserSummary
            }
        };
        let client = client.clone();
        let task_stats = stats.clone();
        let recent = recent_orders.clone();
        let base = base.clone();
        let users = args.users.max(1);
        let timeout = args.timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let (outcome, ok) = send(kind, &client, &base, users, timeout, &recent).await;
            let latency = due.elapsed();
            task_stats
                .lock()
                .unwrap()
                .record(kind, &outcome, ok, latency);
        });

        if progress && last_progress.elapsed() >= Duration::from_secs(if tty { 1 } else { 10 }) {
            last_progress = Instant::now();
            let s = stats.lock().unwrap();
            let p99 = s
                .all
                .as_ref()
                .map(|h| ms(h.value_at_quantile(0.99)))
                .unwrap_or_default();
            let line = format!(
                "  {:>5.0}s  completed {:>7}  ok {:>7}  errors {:>5}  in flight {:>4}  p99 {}",
                started.elapsed().as_secs_f64(),
                s.completed,
                s.succeeded,
                s.completed - s.succeeded,
                args.max_in_flight - in_flight.available_permits(),
                p99
            );
            if tty {
                print!("\r{line}   ");
                let _ = std::io::stdout().flush();
            } else {
                println!("{line}");
            }
        }
    }
    // Let in-flight requests finish (bounded by their timeout).
    let _ = tokio::time::timeout(
        args.timeout + Duration::from_secs(1),
        in_flight.acquire_many(args.max_in_flight as u32),
    )
    .await;
    let elapsed = started.elapsed();
    let stats = std::mem::take(&mut *stats.lock().unwrap());
    Report {
        completed: stats.completed,
        succeeded: stats.succeeded,
        elapsed,
        stats,
    }
}

/// Sends one request of `kind`; returns the outcome label (status code or error class) and
/// whether it succeeded.
async fn send(
    kind: Kind,
    client: &HttpClient,
    base: &str,
    users: u32,
    timeout: Duration,
    recent: &Mutex<VecDeque<String>>,
) -> (String, bool) {
    let user = format!("u-{}", rand::rng().random_range(1..=users));
    let result = match kind {
        Kind::PlaceOrder => {
            let (sku, quantity) = {
                let mut rng = rand::rng();
                (rng.random_range(1..=10u32), rng.random_range(1..=3u32))
            };
            let body = serde_json::json!({
                "user_id": user,
                "items": [{"sku": format!("sku-{sku}"), "quantity": quantity}],
            });
            let url = format!("{base}/api/orders");
            let r = client
                .send_json(http::Method::POST, &url, &body, timeout)
                .await;
            if let Ok(response) = &r
                && response.status == http::StatusCode::ACCEPTED
                && let Ok(v) = response.json::<serde_json::Value>()
                && let Some(id) = v["order_id"].as_str()
            {
                let mut recent = recent.lock().unwrap();
                recent.push_back(id.to_owned());
                if recent.len() > 1000 {
                    recent.pop_front();
                }
            }
            r
        }
        Kind::OrderStatus => {
            let id = {
                let recent = recent.lock().unwrap();
                let i = rand::rng().random_range(0..recent.len().max(1));
                recent.get(i).cloned().unwrap_or_default()
            };
            client
                .get(&format!("{base}/api/orders/{id}"), timeout)
                .await
        }
        Kind::UserSummary => {
            client
                .get(&format!("{base}/api/users/{user}/summary"), timeout)
                .await
        }
    };
    match result {
        Ok(response) => (
            response.status.as_u16().to_string(),
            response.status.is_success(),
        ),
        Err(ClientError::Timeout { .. }) => ("timeout".into(), false),
        Err(ClientError::Transport { error_type, .. }) => (error_type.into(), false),
        Err(ClientError::Invalid { .. }) => ("invalid_request".into(), false),
    }
}

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let guard = crate::up::init_cli_telemetry("faultline-load")?;
    url_check(&args.target)?;
    println!(
        "load: {:.1} req/s for {} against {} (Ctrl-C stops early)",
        args.rps,
        humantime::format_duration(args.duration),
        args.target
    );
    preflight(&args.target).await?;
    let stop = CancellationToken::new();
    servicekit::server::cancel_on_signals(stop.clone());
    let report = generate(&args, stop, true).await;
    report.print(args.rps);
    let _ = guard.shutdown().await;
    if report.completed > 0 && report.succeeded == 0 {
        anyhow::bail!(
            "no request succeeded: is the gateway running at {}? (`faultline up` starts it)",
            args.target
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Fails at once, with one clear line, when nothing listens at the target. A gateway that
/// accepts the request but is slow to answer (an incident in progress is exactly when load is
/// wanted) is only a warning.
async fn preflight(target: &str) -> anyhow::Result<()> {
    let url = format!(
        "{}/api/orders/00000000-0000-0000-0000-000000000000",
        target.trim_end_matches('/')
    );
    match HttpClient::new().get(&url, Duration::from_secs(3)).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_timeout() => {
            eprintln!(
                "warning: the gateway at {target} did not answer within 3 s; sending load anyway"
            );
            Ok(())
        }
        Err(e) => anyhow::bail!(
            "cannot reach the gateway at {target} ({e}); start it with `faultline up`"
        ),
    }
}

/// Rejects a target that is not an http URL with a clear message.
fn url_check(target: &str) -> anyhow::Result<()> {
    match target.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => Ok(()),
        _ => anyhow::bail!(
            "--target {target:?} must be an http:// URL such as http://127.0.0.1:8080"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_takes_three_weights() {
        assert_eq!(
            parse_mix("100,0,0"),
            Ok(Mix {
                place: 100,
                status: 0,
                summary: 0
            })
        );
        assert!(parse_mix("0,0,0").is_err());
        assert!(parse_mix("1,2").is_err());
        assert!(parse_mix("a,b,c").is_err());
    }

    #[test]
    fn a_rate_is_above_zero_and_says_so() {
        assert_eq!(positive_rate("20"), Ok(20.0));
        assert_eq!(positive_rate("100000"), Ok(100_000.0));
        for bad in ["0", "-1", "100001", "NaN", "inf", "x"] {
            let err = positive_rate(bad).unwrap_err();
            assert!(err.contains("above 0"), "{bad}: {err}");
        }
    }
}
