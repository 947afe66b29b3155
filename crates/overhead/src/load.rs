//! An open-loop HTTP/1.1 load client: constant arrival rate, latency from the intended send
//! time.
//!
//! A closed-loop tool such as `wrk` sends the next request only when a connection is free, so a
//! stalled server also stalls the tool and the stall hides in its statistics ("coordinated
//! omission"). Here a dispatcher thread releases request *k* at `start + k / rate` whatever
//! happened before; `connections` keep-alive connections take released requests in order; each
//! request's latency runs from the moment it was *due* to the end of its response body, so time
//! spent waiting for a free connection counts. The dispatcher sleeps (with a 1 ns timer slack)
//! rather than spins, which leaves the core to whatever else shares it (the OTLP receiver in
//! `bench/overhead.sh`).
//!
//! The first `warmup` of the schedule runs but is not recorded. After the schedule ends, the
//! requests still queued are finished (within `drain_timeout`) and recorded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{HOST, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

/// One open-loop run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Where to connect (`127.0.0.1:8080`).
    pub addr: SocketAddr,
    /// The `Host` header.
    pub authority: String,
    /// The request path (`/trivial`).
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Requests per second.
    pub rate: f64,
    /// How long requests are recorded, after the warm-up.
    pub duration: Duration,
    /// How long requests are sent but not recorded, first.
    pub warmup: Duration,
    /// Keep-alive connections.
    pub connections: usize,
    /// How long queued requests may take to finish after the schedule ends.
    pub drain_timeout: Duration,
}

/// What a run measured. Latencies are in microseconds.
#[derive(Debug, Clone)]
pub struct Report {
    /// The configured rate.
    pub rate: f64,
    /// The recorded window, seconds.
    pub duration_s: f64,
    /// Requests due in the recorded window.
    pub scheduled: u64,
    /// Of those, answered with 2xx.
    pub ok: u64,
    /// Answered with another status.
    pub non_2xx: u64,
    /// Failed in transport (connection refused or reset).
    pub errors: u64,
    /// Not finished when the drain timeout expired.
    pub unfinished: u64,
    /// Answered requests per second of the recorded window.
    pub achieved_rps: f64,
    /// Latency percentiles of the answered requests, from their intended send time.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Report {
    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "rate": self.rate,
            "duration_s": self.duration_s,
            "scheduled": self.scheduled,
            "ok": self.ok,
            "non_2xx": self.non_2xx,
            "errors": self.errors,
            "unfinished": self.unfinished,
            "achieved_rps": self.achieved_rps,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
            "mean_us": self.mean_us,
        })
    }
}

struct ConnStats {
    latencies_ns: Histogram<u64>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s, 3 significant digits (0.1 % resolution), in nanoseconds.
    Histogram::new_with_bounds(1_000, 100_000_000_000, 3).expect("valid histogram bounds")
}

async fn connect(addr: SocketAddr) -> std::io::Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn send(
    sender: &mut SendRequest<Empty<Bytes>>,
    config: &LoadConfig,
) -> Result<http::StatusCode, Box<dyn std::error::Error + Send + Sync>> {
    sender.ready().await?;
    let mut request = http::Request::get(config.path.as_str())
        .header(HOST, config.authority.as_str())
        .body(Empty::<Bytes>::new())?;
    for (name, value) in &config.headers {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

async fn connection_loop(
    config: Arc<LoadConfig>,
    jobs: Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>,
    window: (Instant, Instant),
) -> ConnStats {
    let mut stats = ConnStats {
        latencies_ns: histogram(),
        ok: 0,
        non_2xx: 0,
        errors: 0,
    };
    let mut sender = connect(config.addr).await.ok();
    loop {
        let due = {
            let mut jobs = jobs.lock().await;
            match jobs.recv().await {
                Some(due) => due,
                None => break,
            }
        };
        let recorded = due >= window.0 && due < window.1;
        if sender.is_none() {
            sender = connect(config.addr).await.ok();
        }
        let outcome = match sender.as_mut() {
            Some(s) => send(s, &config).await.ok(),
            None => None,
        };
        let latency = due.elapsed();
        match outcome {
            Some(status) => {
                if recorded {
                    let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                    stats.latencies_ns.saturating_record(ns);
                    if status.is_success() {
                        stats.ok += 1;
                    } else {
                        stats.non_2xx += 1;
                    }
                }
            }
            None => {
                sender = None;
                if recorded {
                    stats.errors += 1;
                }
            }
        }
    }
    stats
}

#[cfg(target_os = "linux")]
fn precise_sleeps() {
    // The default 50 µs timer slack would release requests late and in bursts.
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and affects this thread only.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(not(target_os = "linux"))]
fn precise_sleeps() {}

/// Runs `config` on the current tokio runtime (a current-thread runtime is enough and is what
/// `overhead-load` uses) and reports.
///
/// # Errors
/// When no connection can be opened at the start.
pub async fn run(config: LoadConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(
        config.rate > 0.0 && config.rate.is_finite(),
        "rate must be > 0"
    );
    anyhow::ensure!(config.connections > 0, "at least one connection");
    // Fail fast when nothing listens.
    drop(
        connect(config.addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", config.addr))?,
    );

    let config = Arc::new(config);
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let jobs = Arc::new(Mutex::new(rx));
    // Leave the connections time to open before the first request is due.
    let start = Instant::now() + Duration::from_millis(200);
    let window = (
        start + config.warmup,
        start + config.warmup + config.duration,
    );
    let tasks: Vec<_> = (0..config.connections)
        .map(|_| tokio::spawn(connection_loop(config.clone(), jobs.clone(), window)))
        .collect();

    let rate = config.rate;
    let end = window.1;
    let dispatcher = std::thread::Builder::new()
        .name("dispatcher".into())
        .spawn(move || {
            precise_sleeps();
            let mut scheduled_in_window = 0u64;
            for k in 0u64.. {
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                if due >= end {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if due >= window.0 {
                    scheduled_in_window += 1;
                }
                if tx.send(due).is_err() {
                    break;
                }
            }
            scheduled_in_window
        })?;
    let scheduled = tokio::task::spawn_blocking(move || dispatcher.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the dispatcher thread panicked"))?;

    let mut latencies = histogram();
    let (mut ok, mut non_2xx, mut errors) = (0, 0, 0);
    let drained = tokio::time::timeout(config.drain_timeout, async {
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await);
        }
        all
    })
    .await;
    if let Ok(results) = drained {
        for stats in results.into_iter().flatten() {
            latencies.add(&stats.latencies_ns)?;
            ok += stats.ok;
            non_2xx += stats.non_2xx;
            errors += stats.errors;
        }
    }
    let answered = ok + non_2xx;
    let us = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    let duration_s = config.duration.as_secs_f64();
    Ok(Report {
        rate,
        duration_s,
        scheduled,
        ok,
        non_2xx,
        errors,
        unfinished: scheduled.saturating_sub(answered + errors),
        achieved_rps: answered as f64 / duration_s,
        p50_us: us(0.50),
        p90_us: us(0.90),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: latencies.max() as f64 / 1000.0,
        mean_us: latencies.mean() / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_open_loop_run_sends_on_schedule_and_measures() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = crate::router(crate::AppConfig {
            work_iterations: 1000,
            log_per_request: false,
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        let report = run(LoadConfig {
            addr,
            authority: addr.to_string(),
            path: "/trivial".into(),
            headers: vec![(
                HeaderName::from_static("traceparent"),
                HeaderValue::from_static(crate::TRACEPARENT),
            )],
            rate: 500.0,
            duration: Duration::from_millis(600),
            warmup: Duration::from_millis(200),
            connections: 4,
            drain_timeout: Duration::from_secs(5),
        })
        .await
        .unwrap();
        assert_eq!(report.scheduled, 300, "{report:?}");
        assert_eq!(report.ok, 300, "{report:?}");
        assert_eq!(report.errors + report.non_2xx + report.unfinished, 0);
        assert!(report.p50_us > 0.0 && report.p50_us <= report.p99_us);
        assert!(report.p99_us <= report.max_us);
    }

    #[tokio::test]
    async fn failed_requests_are_counted_not_measured() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = crate::router(crate::AppConfig {
            work_iterations: 1,
            log_per_request: false,
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        let report = run(LoadConfig {
            addr,
            authority: addr.to_string(),
            path: "/missing".into(),
            headers: vec![],
            rate: 200.0,
            duration: Duration::from_millis(250),
            warmup: Duration::ZERO,
            connections: 2,
            drain_timeout: Duration::from_secs(5),
        })
        .await
        .unwrap();
        assert_eq!(report.ok, 0);
        assert_eq!(report.non_2xx, 50, "{report:?}");
    }
}
