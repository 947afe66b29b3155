//! An open-loop HTTP/1.1 load client: constant arrival rate, latency from the intended send
//! time.
//!
//! A closed-loop tool such as `wrk` sends the next request only when a connection is free, so a
//! stalled server also stalls the tool and the stall hides in its statistics ("coordinated
//! omission"). Here request *k* is released at `start + k / rate` whatever happened before;
//! `connections` keep-alive connections take released requests in order; each request's latency
//! runs from the moment it was *due* to the end of its response body, so time spent waiting for
//! a free connection counts.
//!
//! Everything runs on one thread (a current-thread tokio runtime): the releases are paced by a
//! `timerfd` registered with the runtime (microsecond precision, unlike tokio's millisecond
//! timer wheel), so releasing a request costs no thread hand-off and the client sleeps, rather
//! than spins, between requests — it leaves the core to whatever else shares it (the OTLP
//! receiver in `bench/overhead.sh`).
//!
//! The client also measures how late it released each recorded request (`release_lag_*`: from
//! the moment the request was due to the moment the client's thread queued it for the
//! connections; waiting for a free connection comes after, in the latency only). That lateness
//! is the client's: its thread was not running on time (another process had its core) or was
//! busy. It is inside every latency figure but not part of the server's response time; it
//! covers only the send side (a response left waiting in the client's socket is not in it).
//!
//! The first `warmup` of the schedule runs but is not recorded. After the schedule ends, the
//! requests still queued are finished and recorded until `drain_timeout`; those left are
//! reported as `unfinished`.

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
    /// CPU time (user + system) this client process used during the run, seconds: with the
    /// request count, shows whether the client had room to keep the schedule.
    pub client_cpu_s: f64,
    /// How late the client released the recorded requests (due time to release), microseconds:
    /// 99th percentile. Included in the latencies above.
    pub release_lag_p99_us: f64,
    /// The same, maximum.
    pub release_lag_max_us: f64,
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
            "client_cpu_s": self.client_cpu_s,
            "release_lag_p99_us": self.release_lag_p99_us,
            "release_lag_max_us": self.release_lag_max_us,
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
    deadline: Instant,
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
        if Instant::now() >= deadline {
            break; // counted as unfinished
        }
        let recorded = due >= window.0 && due < window.1;
        if sender.is_none() {
            sender = connect(config.addr).await.ok();
        }
        let outcome = match sender.as_mut() {
            Some(s) => {
                match tokio::time::timeout_at(deadline.into(), send(s, &config)).await {
                    Ok(result) => result.ok(),
                    Err(_) => break, // still waiting at the deadline: unfinished
                }
            }
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

/// Ticks every `interval` from `first` with microsecond precision: a periodic `timerfd`
/// registered with the runtime's reactor (tokio's own timer has millisecond granularity). One
/// wake-up per tick, no re-arming; ticks missed while the thread was busy are simply caught up.
#[cfg(target_os = "linux")]
struct Pacer {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

#[cfg(target_os = "linux")]
impl Pacer {
    fn new(first: Instant, interval: Duration) -> std::io::Result<Self> {
        use std::os::fd::{AsRawFd as _, FromRawFd as _};
        let spec = |d: Duration| libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        };
        // SAFETY: timerfd_create has no memory arguments; a valid descriptor is owned here.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let timer = libc::itimerspec {
            it_interval: spec(interval.max(Duration::from_micros(1))),
            // A zero value would disarm the timer.
            it_value: spec(
                first
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_nanos(1)),
            ),
        };
        // SAFETY: valid descriptor, valid `itimerspec`, no old value requested.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &timer, std::ptr::null_mut()) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the `OwnedFd` is moved into the `AsyncFd`, which keeps it open and
        // unchanged for its whole life.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        Ok(Self { fd })
    }

    /// Waits for the next tick (returns at once if ticks elapsed since the last call).
    async fn tick(&mut self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd as _;
        loop {
            let mut ready = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            // SAFETY: reads at most 8 bytes into an 8-byte buffer.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            if n == 8 {
                // The read took every expiration: the next tick needs a new readiness event
                // (clearing now saves a read that would only say "not yet").
                ready.clear_ready();
                return Ok(());
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::WouldBlock {
                return Err(error);
            }
            ready.clear_ready();
        }
    }
}

#[cfg(not(target_os = "linux"))]
struct Pacer(tokio::time::Interval);

#[cfg(not(target_os = "linux"))]
impl Pacer {
    fn new(first: Instant, interval: Duration) -> std::io::Result<Self> {
        let mut i = tokio::time::interval_at(first.into(), interval);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Ok(Self(i))
    }
    async fn tick(&mut self) -> std::io::Result<()> {
        self.0.tick().await;
        Ok(())
    }
}

/// Runs `config` on the current tokio runtime (a current-thread runtime is what `overhead-load`
/// uses: the whole client on one thread) and reports.
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

    let cpu_before = process_cpu_seconds();
    let config = Arc::new(config);
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let jobs = Arc::new(Mutex::new(rx));
    // Leave the connections time to open before the first request is due.
    let start = Instant::now() + Duration::from_millis(200);
    let window = (
        start + config.warmup,
        start + config.warmup + config.duration,
    );
    let deadline = window.1 + config.drain_timeout;
    let tasks: Vec<_> = (0..config.connections)
        .map(|_| {
            tokio::spawn(connection_loop(
                config.clone(),
                jobs.clone(),
                window,
                deadline,
            ))
        })
        .collect();

    // Request k is due at start + k × interval (whole nanoseconds, so that the due times and
    // the timer's ticks coincide).
    let interval = Duration::from_nanos((1e9 / config.rate).round().max(1.0) as u64);
    let rate = 1e9 / interval.as_nanos() as f64;
    let due = |k: u64| start + interval * u32::try_from(k).unwrap_or(u32::MAX);
    let mut pacer = Pacer::new(start, interval)?;
    let mut scheduled = 0u64;
    let mut release_lag = histogram();
    let mut k = 0u64;
    'schedule: loop {
        pacer.tick().await?;
        let now = Instant::now();
        while due(k) <= now {
            let when = due(k);
            if when >= window.1 {
                break 'schedule;
            }
            if when >= window.0 {
                scheduled += 1;
                let lag = u64::try_from((now - when).as_nanos()).unwrap_or(u64::MAX);
                release_lag.saturating_record(lag);
            }
            if tx.send(when).is_err() {
                break 'schedule;
            }
            k += 1;
        }
    }
    drop(tx);

    let mut latencies = histogram();
    let (mut ok, mut non_2xx, mut errors) = (0, 0, 0);
    for task in tasks {
        // Every loop stops by the deadline; the margin covers a connect in progress.
        let Ok(Ok(stats)) =
            tokio::time::timeout_at((deadline + Duration::from_secs(5)).into(), task).await
        else {
            continue;
        };
        latencies.add(&stats.latencies_ns)?;
        ok += stats.ok;
        non_2xx += stats.non_2xx;
        errors += stats.errors;
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
        client_cpu_s: process_cpu_seconds() - cpu_before,
        release_lag_p99_us: release_lag.value_at_quantile(0.99) as f64 / 1000.0,
        release_lag_max_us: release_lag.max() as f64 / 1000.0,
    })
}

/// User + system CPU seconds of this process so far.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
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
        assert!(report.release_lag_p99_us <= report.release_lag_max_us);
    }

    #[tokio::test]
    async fn a_client_kept_from_running_reports_its_release_lag() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The server on a thread of its own: only the client's thread is blocked below.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener.into_std().unwrap()).unwrap();
                let app = crate::router(crate::AppConfig {
                    work_iterations: 1,
                    log_per_request: false,
                });
                axum::serve(listener, app).await
            })
        });
        // In the middle of the recorded window the client's (only) thread is taken for 80 ms,
        // as when another process holds its core: requests due meanwhile are released late.
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            std::thread::sleep(Duration::from_millis(80));
        });
        let report = run(LoadConfig {
            addr,
            authority: addr.to_string(),
            path: "/trivial".into(),
            headers: vec![],
            rate: 500.0,
            duration: Duration::from_millis(800),
            warmup: Duration::from_millis(100),
            connections: 4,
            drain_timeout: Duration::from_secs(5),
        })
        .await
        .unwrap();
        assert_eq!(report.ok, 400, "{report:?}");
        assert!(
            report.release_lag_max_us >= 70_000.0,
            "the requests due while the thread was taken were released late: {report:?}"
        );
        // 40 of the 400 recorded requests were due during those 80 ms.
        assert!(report.release_lag_p99_us >= 10_000.0, "{report:?}");
        assert!(report.max_us >= report.release_lag_max_us, "{report:?}");
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

    #[tokio::test]
    async fn requests_a_hung_server_never_answers_are_unfinished_not_lost() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket); // accepted, never answered
            }
        });
        let started = Instant::now();
        let report = run(LoadConfig {
            addr,
            authority: addr.to_string(),
            path: "/".into(),
            headers: vec![],
            rate: 100.0,
            duration: Duration::from_millis(300),
            warmup: Duration::ZERO,
            connections: 2,
            drain_timeout: Duration::from_millis(300),
        })
        .await
        .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "bounded by the drain timeout"
        );
        assert_eq!(report.scheduled, 30, "{report:?}");
        assert_eq!(report.unfinished, 30, "{report:?}");
        assert_eq!(report.ok + report.non_2xx, 0);
    }
}
