//! Admission control: which requests the gateway takes on at all.
//!
//! Two limits protect the services behind the gateway, checked in this order before a handler
//! runs:
//!
//! 1. **rate** — a GCRA rate limiter ([`governor`], one bucket for all clients) admits
//!    `rate_limit_rps` requests per second with bursts up to `rate_limit_burst`. Beyond that the
//!    client gets `429 Too Many Requests` with `Retry-After` (whole seconds, at least 1) and
//!    `gateway_rate_limited_requests_total` goes up. This bounds the *arrival* rate.
//! 2. **concurrency** — at most `max_concurrent_requests` requests are in the handlers at once.
//!    One more gets `503` immediately (load shedding) instead of waiting in a queue: when
//!    downstream services slow down, requests pile up, and a queue would only turn that into
//!    timeouts for everyone and memory growth here. This bounds the *work in progress*.
//!
//! Both apply to the app listener only; `/metrics` and `/readyz` on the admin listener must keep
//! answering precisely when the app is overloaded. Both run inside the SERVER span (see
//! [`crate::app`]), so refused requests are still traced, counted in the RED metrics and carry
//! `x-trace-id`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use servicekit::problem::Problem;
use tokio::sync::Semaphore;

/// Counter of requests refused with 429 (CONTRACT.md).
pub const RATE_LIMITED_REQUESTS: &str = "gateway_rate_limited_requests_total";

/// The shared state of both limits.
#[derive(Debug)]
pub struct Admission {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
    permits: Arc<Semaphore>,
    max_concurrent: usize,
}

impl Admission {
    /// `rps` requests per second with bursts of `burst`, and `max_concurrent` at once. Zeros are
    /// raised to 1 (a limit of nothing would refuse every request).
    pub fn new(rps: u32, burst: u32, max_concurrent: usize) -> Self {
        let rps = NonZeroU32::new(rps).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let max_concurrent = max_concurrent.max(1);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(rps).allow_burst(burst)),
            clock: DefaultClock::default(),
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
        }
    }

    /// `Ok` if the rate allows one more request now, otherwise how long until it would.
    fn check_rate(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// Describes the gateway's own metric to the recorder (its `# HELP` line).
pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        RATE_LIMITED_REQUESTS,
        "Requests refused with 429 because the gateway's rate limit was exceeded."
    );
    // Exported from the start, at 0: `rate()` reads 0, not "no data", until the first 429.
    metrics::counter!(RATE_LIMITED_REQUESTS).increment(0);
}

/// The middleware (`axum::middleware::from_fn_with_state`): rate, then concurrency, then the
/// handler, holding a concurrency permit until the response is ready.
pub async fn admit(
    State(admission): State<Arc<Admission>>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(wait) = admission.check_rate() {
        metrics::counter!(RATE_LIMITED_REQUESTS).increment(1);
        let retry_after = retry_after_seconds(wait);
        tracing::debug!(retry_after_s = retry_after, "rate limit exceeded");
        let problem = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            format!("the gateway's rate limit is exceeded; retry in {retry_after} s"),
        )
        .with("retry_after_s", retry_after);
        return with_retry_after(problem, retry_after);
    }
    // Refused at once rather than awaited: see the module docs.
    let Ok(permit) = admission.permits.clone().try_acquire_owned() else {
        tracing::debug!(
            limit = admission.max_concurrent,
            "concurrency limit reached"
        );
        let problem = Problem::unavailable(format!(
            "the gateway is already handling its limit of {} concurrent requests; retry shortly",
            admission.max_concurrent
        ));
        return with_retry_after(problem, 1);
    };
    let response = next.run(request).await;
    drop(permit);
    response
}

/// `Retry-After` is in whole seconds (RFC 9110 §10.2.3); rounding down could tell a client to
/// come back before it would be admitted, and `0` invites an immediate retry storm.
fn retry_after_seconds(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

fn with_retry_after(problem: Problem, seconds: u64) -> Response {
    let mut response = problem.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_at_least_one_second() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(2)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn the_burst_is_admitted_then_the_rate_applies() {
        let admission = Admission::new(1, 3, 1);
        for _ in 0..3 {
            assert!(admission.check_rate().is_ok());
        }
        let wait = admission.check_rate().unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }
}
