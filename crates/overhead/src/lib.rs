//! # overhead — what observability costs, measured
//!
//! The pieces `bench/overhead.sh` runs to compare one service **bare** (no telemetry at all) with
//! the same service **instrumented** the way Faultline's gateway runs (see `bench/README.md`):
//!
//! - `overhead-server`: an axum app with a trivial route (`GET /trivial`) and a route doing a
//!   fixed amount of deterministic CPU work (`GET /work`, about 200 µs once calibrated with
//!   `overhead-server calibrate`), served bare or instrumented ([`Mode`]);
//! - `overhead-collector`: a live OTLP receiver (gRPC, and OTLP/HTTP) that counts each export
//!   request's spans and log records, undecoded by default, and throws them away (memory stays
//!   flat however long it runs);
//! - `overhead-load`: an open-loop load client (constant arrival rate, latency measured from
//!   each request's *intended* send time, so no coordinated omission) — `wrk` is closed-loop.
//!
//! The library holds what the binaries share, so it can be tested.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::get;

pub mod collector;
pub mod hops;
pub mod load;

/// The `traceparent` every benchmark request carries (a caller that is already tracing, as the
/// gateway's callers are): the instrumented server parses it and continues that trace.
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The two ways the same app is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The handlers and router only: no tracing subscriber, no layer, no metrics recorder.
    Bare,
    /// Everything on, as `faultline serve gateway` runs it: `telemetry::init` (JSON logs,
    /// OTLP traces and logs through the batch processors, Prometheus recorder), the
    /// `telemetry::http::ServerLayer` (SERVER span, RED metrics, request/trace id headers) and
    /// one `info` log line per request.
    Instrumented,
}

/// Burns CPU deterministically: `iterations` rounds of a xorshift step, each depending on the
/// previous one (nothing to vectorise or fold away). Returns the final state so the work is
/// observable. About 1 ns per iteration on a current x86 core; see [`calibrate`].
pub fn burn(iterations: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let n = std::hint::black_box(iterations);
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(i);
    }
    std::hint::black_box(x)
}

/// The number of [`burn`] iterations that take `target` on this thread's core: the fastest
/// of `samples` timed runs (the least disturbed), scaled to `target`. Run it once, pinned to the
/// core the server will use, and give the same number to every server of a comparison.
pub fn calibrate(target: Duration, samples: u32) -> u64 {
    const PROBE: u64 = 100_000;
    burn(PROBE); // warm up
    let fastest = (0..samples.max(1))
        .map(|_| {
            let start = Instant::now();
            burn(PROBE);
            start.elapsed()
        })
        .min()
        .unwrap_or(Duration::from_micros(100));
    let per_iteration = fastest.as_secs_f64() / PROBE as f64;
    (target.as_secs_f64() / per_iteration).round().max(1.0) as u64
}

/// What the handlers need.
#[derive(Clone, Copy, Debug)]
pub struct AppConfig {
    /// [`burn`] iterations of `GET /work`.
    pub work_iterations: u64,
    /// Write one `info` line per request (the gateway logs each accepted order at `info`).
    /// Without a subscriber (bare), the macro costs one relaxed load.
    pub log_per_request: bool,
}

async fn trivial(State(config): State<AppConfig>) -> &'static str {
    if config.log_per_request {
        tracing::info!(route = "/trivial", "request served");
    }
    "ok\n"
}

async fn work(State(config): State<AppConfig>) -> String {
    let checksum = burn(config.work_iterations);
    if config.log_per_request {
        tracing::info!(
            route = "/work",
            iterations = config.work_iterations,
            checksum,
            "request served"
        );
    }
    format!("{checksum:016x}\n")
}

/// The app: `GET /trivial` and `GET /work`, nothing else (a request that matches no route gets
/// axum's 404). The same router in both modes; [`instrumented_router`] adds the SERVER layer.
pub fn router(config: AppConfig) -> Router {
    Router::new()
        .route("/trivial", get(trivial))
        .route("/work", get(work))
        .with_state(config)
}

/// [`router`] with [`telemetry::http::ServerLayer`], added the way the gateway adds it
/// (`Router::layer`, outermost, so it sees the matched route).
pub fn instrumented_router(config: AppConfig) -> Router {
    router(config).layer(telemetry::http::ServerLayer::new())
}

/// Parses a duration the way `faultline` does ([`humantime`]: `30s`, `500ms`, `200us`,
/// `2m`, `1m30s`).
///
/// # Errors
/// Not a duration, or a number without its unit; the message gives examples.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?}: {e} (examples: 30s, 500ms, 200us, 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[test]
    fn burn_is_deterministic_and_not_folded_away() {
        assert_eq!(burn(1000), burn(1000));
        assert_ne!(burn(1000), burn(1001));
        let n = calibrate(Duration::from_micros(200), 5);
        assert!(n > 1000, "{n} iterations for 200 µs is implausibly few");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("200us"), Ok(Duration::from_micros(200)));
        assert!(parse_duration("5").is_err(), "a number needs its unit");
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("x").is_err());
    }

    async fn get(app: Router, path: &str) -> (StatusCode, http::HeaderMap, String) {
        let response = app
            .oneshot(
                Request::get(path)
                    .header("traceparent", TRACEPARENT)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn both_routers_serve_the_same_answers() {
        let config = AppConfig {
            work_iterations: 10_000,
            log_per_request: true,
        };
        for app in [router(config), instrumented_router(config)] {
            let (status, _, body) = get(app.clone(), "/trivial").await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
            let (status, _, body) = get(app.clone(), "/work").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, format!("{:016x}\n", burn(10_000)));
            let (status, _, _) = get(app, "/nothing").await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        }
        let (_, headers, _) = get(router(config), "/trivial").await;
        assert!(headers.get("x-request-id").is_none(), "bare adds nothing");
        let (_, headers, _) = get(instrumented_router(config), "/trivial").await;
        assert!(headers.get("x-request-id").is_some(), "the layer runs");
    }
}
