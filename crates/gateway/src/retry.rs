//! Retries with exponential backoff and jitter, for idempotent calls only.
//!
//! A `GET` asks for a state and changes nothing, so sending it again after a failure is safe: at
//! worst the server answers twice. A `POST /orders` is not: if the first attempt timed out after
//! orders had committed, a retry would place the order twice. So [`get_idempotent`] exists and
//! there is deliberately no retrying `post`.
//!
//! Only failures that another attempt may cure are retried: no response at all (refused, reset,
//! timed out) and `502`/`503`/`504` (a proxy or the service saying "not now"). A `404` or a
//! `500` will be the same next time, so they are answered at once.
//!
//! Every attempt goes through [`HttpClient`], so every attempt is its own CLIENT span in the
//! trace: a trace that shows three `GET` spans under one request is a retry story, readable
//! without logs. The waits between attempts grow exponentially (50 ms, then 100 ms, …) with
//! random jitter so that many gateways recovering at once do not retry in lock-step.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use http::StatusCode;
use servicekit::client::{ClientError, HttpClient, HttpResponse};

/// How many times, and how patiently, an idempotent call is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first one.
    pub max_retries: usize,
    /// The wait before the first retry; each later wait doubles, up to `max_delay`.
    pub base_delay: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Two retries, 50 ms then 100 ms apart (plus jitter): enough to ride over a restart or a
    /// dropped connection, short enough that a user is not kept waiting for a service that is
    /// really down.
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            // Randomly seeded per backoff (backon's `std` feature, enabled in the workspace):
            // without it every process would draw the same "random" delays — exactly the
            // lock-step that jitter exists to break.
            .with_jitter()
    }
}

/// Whether an HTTP status says "try again shortly" rather than "this is the answer".
pub fn is_retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// The outcome of one failed attempt, as backon sees it.
enum Attempt {
    /// No response; retried unless the request itself is invalid.
    NoResponse(ClientError),
    /// A response with a retryable status; if it is the last attempt, it is the answer.
    Unavailable(HttpResponse),
}

impl Attempt {
    fn is_retryable(&self) -> bool {
        match self {
            Attempt::NoResponse(ClientError::Invalid { .. }) => false,
            Attempt::NoResponse(_) | Attempt::Unavailable(_) => true,
        }
    }

    fn describe(&self) -> String {
        match self {
            Attempt::NoResponse(e) => e.to_string(),
            Attempt::Unavailable(r) => format!("answered {}", r.status),
        }
    }
}

/// `GET url` with per-attempt `timeout`, retried per `policy` on no response or
/// `502`/`503`/`504`. Returns like [`HttpClient::get`]: the last response, whatever its status,
/// or the last error.
///
/// # Errors
/// The last attempt's [`ClientError`] when no attempt got a response.
pub async fn get_idempotent(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
    policy: &RetryPolicy,
) -> Result<HttpResponse, ClientError> {
    let attempt = || async {
        match client.get(url, timeout).await {
            Ok(response) if is_retryable_status(response.status) => {
                Err(Attempt::Unavailable(response))
            }
            Ok(response) => Ok(response),
            Err(e) => Err(Attempt::NoResponse(e)),
        }
    };
    let outcome = attempt
        .retry(policy.backoff())
        .sleep(tokio::time::sleep)
        .when(Attempt::is_retryable)
        .notify(|failed: &Attempt, wait: Duration| {
            tracing::warn!(
                url,
                reason = %failed.describe(),
                retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "GET failed, retrying"
            );
        })
        .await;
    match outcome {
        Ok(response) | Err(Attempt::Unavailable(response)) => Ok(response),
        Err(Attempt::NoResponse(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_not_now_statuses_are_retried() {
        for s in [502, 503, 504] {
            assert!(is_retryable_status(StatusCode::from_u16(s).unwrap()));
        }
        for s in [200, 201, 400, 404, 409, 422, 429, 500, 501] {
            assert!(
                !is_retryable_status(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }

    #[test]
    fn the_backoff_grows_and_stops_after_the_retries() {
        use backon::BackoffBuilder;
        let policy = RetryPolicy::default();
        let delays: Vec<Duration> = policy.backoff().build().collect();
        assert_eq!(delays.len(), 2);
        // Jitter adds up to one base delay on top of the exponential one.
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[1] >= Duration::from_millis(100) && delays[1] <= Duration::from_millis(200));
    }
}
