//! Reporting an order's final status back to the orders service:
//! `PUT {ORDERS_URL}/orders/{id}/status {"status": "fulfilled" | "failed"}`.
//!
//! Orders makes that call idempotent, so a report may be repeated safely: it is retried a few
//! times, with exponential backoff and jitter, when orders is unreachable, times out or answers
//! 5xx. The CLIENT span of each attempt (and the `traceparent` orders continues) comes from
//! [`servicekit::client::HttpClient`]; called inside the CONSUMER span, the report is part of
//! the trace that placed the order.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use http::{Method, StatusCode};
use servicekit::client::{ClientError, HttpClient};

/// Attempts per report: the first and [`RETRIES`] more.
const RETRIES: usize = 3;
/// The first backoff delay; doubled per retry, and jitter adds up to as much again.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest one [`OrdersClient::report`] can take with `timeout` per attempt: every
/// attempt timing out, plus the largest backoff delays.
pub(crate) fn longest_report(timeout: Duration) -> Duration {
    let attempts = u32::try_from(RETRIES + 1).unwrap_or(u32::MAX);
    let backoff: Duration = (0..RETRIES).map(|i| FIRST_BACKOFF * (1 << i) * 2).sum();
    timeout * attempts + backoff
}

/// The status values orders accepts from fulfillment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OrderStatus {
    /// Shipped.
    Fulfilled,
    /// Could not be fulfilled (its message was dead-lettered).
    Failed,
}

impl OrderStatus {
    fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Fulfilled => "fulfilled",
            OrderStatus::Failed => "failed",
        }
    }
}

/// How orders took a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reported {
    /// 2xx: the status is set.
    Accepted,
    /// 409: the order already has a final status; nothing to do.
    AlreadyFinal,
}

/// Why a report did not land.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    /// 404: orders does not know the order. Retrying will not help.
    #[error("orders does not know order {order_id} (404)")]
    UnknownOrder {
        /// The order.
        order_id: String,
    },
    /// Another 4xx: orders refused the request itself. Retrying will not help.
    #[error("orders rejected the status report for order {order_id}: {status} {body}")]
    Rejected {
        /// The order.
        order_id: String,
        /// The status orders answered.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
    /// Unreachable, timed out or 5xx, after the retries.
    #[error("orders is unavailable: {0}")]
    Unavailable(String),
}

impl ReportError {
    fn is_transient(&self) -> bool {
        matches!(self, ReportError::Unavailable(_))
    }
}

/// The orders service, as fulfillment sees it.
#[derive(Clone, Debug)]
pub(crate) struct OrdersClient {
    http: HttpClient,
    base_url: String,
    timeout: Duration,
    backoff: ExponentialBuilder,
}

impl OrdersClient {
    /// A client for the orders service at `base_url`, each attempt bounded by `timeout`,
    /// retried up to [`RETRIES`] times (after 100 ms, 200 ms, 400 ms, each plus up to as much
    /// jitter) when transient. The outbound faults of `faults` whose target is `orders` (or
    /// its `host:port`) act on each attempt, below its CLIENT span.
    pub(crate) fn new(base_url: &str, timeout: Duration, faults: chaos::Faults) -> Self {
        Self {
            http: HttpClient::new().with_faults(
                chaos::client::OutboundLayer::new(faults).dependency("orders", base_url),
            ),
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout,
            backoff: ExponentialBuilder::new()
                .with_min_delay(FIRST_BACKOFF)
                .with_max_delay(Duration::from_secs(2))
                .with_max_times(RETRIES)
                .with_jitter(),
        }
    }

    /// Sets the order's status, retrying transient failures. `order_id` must be path-safe
    /// ([`crate::event::valid_id`]).
    pub(crate) async fn report(
        &self,
        order_id: &str,
        status: OrderStatus,
    ) -> Result<Reported, ReportError> {
        let url = format!("{}/orders/{order_id}/status", self.base_url);
        let body = serde_json::json!({ "status": status.as_str() });
        (|| self.put(&url, order_id, &body))
            // backon's `std` feature seeds each backoff's jitter afresh, so reports that failed
            // together (orders went down under all workers at once) do not retry in lock step.
            .retry(self.backoff)
            .when(ReportError::is_transient)
            .notify(|error, delay| {
                tracing::warn!(
                    order_id,
                    status = status.as_str(),
                    %error,
                    retry_in_ms = delay.as_millis() as u64,
                    "reporting the order status failed; retrying"
                );
            })
            .await
    }

    async fn put(
        &self,
        url: &str,
        order_id: &str,
        body: &serde_json::Value,
    ) -> Result<Reported, ReportError> {
        let response = self
            .http
            .send_json(Method::PUT, url, body, self.timeout)
            .await
            .map_err(|e: ClientError| ReportError::Unavailable(e.to_string()))?;
        let status = response.status;
        if status.is_success() {
            Ok(Reported::Accepted)
        } else if status == StatusCode::CONFLICT {
            Ok(Reported::AlreadyFinal)
        } else if status == StatusCode::NOT_FOUND {
            Err(ReportError::UnknownOrder {
                order_id: order_id.to_owned(),
            })
        } else if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            Err(ReportError::Unavailable(format!(
                "PUT {url} answered {status}"
            )))
        } else {
            let body = String::from_utf8_lossy(&response.body);
            Err(ReportError::Rejected {
                order_id: order_id.to_owned(),
                status,
                body: body.chars().take(200).collect(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_report_is_every_attempt_timing_out_plus_the_backoff() {
        // 4 attempts × 2 s + (100 + 200 + 400 ms) × 2 for jitter.
        assert_eq!(
            longest_report(Duration::from_secs(2)),
            Duration::from_millis(9_400)
        );
    }
}
