//! The gateway's view of its two downstream services: one method per call it makes, each
//! returning either the useful part of the answer or a [`DownstreamError`] saying what went
//! wrong in terms a handler can act on.
//!
//! The calls themselves go through [`servicekit::client::HttpClient`], which makes the CLIENT
//! span, injects `traceparent` and applies the per-call timeout; this module only decides what
//! to call, whether to retry ([`crate::retry`], reads only), and how to read the answer.

use std::time::Duration;

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use servicekit::client::{ClientError, HttpClient, HttpResponse};
use uuid::Uuid;

use crate::input::PlaceOrder;
use crate::retry::{RetryPolicy, get_idempotent};

/// Why a downstream call gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum DownstreamError {
    /// No response: refused, reset or timed out (after retries, for reads).
    #[error("{service} did not answer: {source}")]
    NoResponse {
        /// `orders` or `fulfillment`.
        service: &'static str,
        /// What the client saw.
        #[source]
        source: ClientError,
    },
    /// The service refused the request with a 4xx problem: the caller's fault, passed on.
    #[error("{service} refused the request with {status}: {detail}")]
    Refused {
        /// `orders` or `fulfillment`.
        service: &'static str,
        /// The 4xx status.
        status: StatusCode,
        /// The problem's `title` (or the status's reason phrase).
        title: String,
        /// The problem's `detail` (or a generic text).
        detail: String,
    },
    /// A 5xx, an unexpected status, or a body we cannot read.
    #[error("{service} answered {status}: {reason}")]
    Failed {
        /// `orders` or `fulfillment`.
        service: &'static str,
        /// The status it answered.
        status: StatusCode,
        /// What is wrong with the answer.
        reason: String,
    },
}

impl DownstreamError {
    /// Whether the call may have reached the service and had its effect even though no answer
    /// came back (a timeout, as opposed to a refused connection).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, DownstreamError::NoResponse { source, .. } if source.is_timeout())
    }

    /// What a client of the gateway may be told: which service and what kind of failure, but
    /// not internal addresses or response bodies (those are in the log line, under the same
    /// `trace_id`).
    pub fn public_detail(&self) -> String {
        match self {
            DownstreamError::NoResponse { service, source } if source.is_timeout() => {
                format!("{service} did not answer in time")
            }
            DownstreamError::NoResponse { service, .. } => {
                format!("{service} could not be reached")
            }
            DownstreamError::Refused { detail, .. } => detail.clone(),
            DownstreamError::Failed {
                service, status, ..
            } => {
                format!("{service} failed ({status})")
            }
        }
    }
}

/// The members of an RFC 9457 problem body we pass on.
#[derive(Deserialize)]
struct ProblemBody {
    title: Option<String>,
    detail: Option<String>,
}

/// Reads an answer to a *write* that is not the expected success: a 4xx is
/// [`DownstreamError::Refused`] (the service judged the request: out of stock, unknown SKU;
/// the problem's title and detail are kept), anything else is [`DownstreamError::Failed`].
fn refused_or_failed(service: &'static str, response: &HttpResponse) -> DownstreamError {
    let status = response.status;
    if status.is_client_error() {
        let problem = response.json::<ProblemBody>().ok();
        let (title, detail) = problem.map(|p| (p.title, p.detail)).unwrap_or_default();
        DownstreamError::Refused {
            service,
            status,
            title: title
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("Refused").to_owned()),
            detail: detail.unwrap_or_else(|| format!("{service} refused the request ({status})")),
        }
    } else {
        failed(service, response)
    }
}

/// Reads an answer to a *read* that is not the expected success as [`DownstreamError::Failed`],
/// whatever its status. The gateway validated the input, so a 4xx here means the two services
/// disagree about the API (or orders sheds load with 429): a dependency fault, not the client's.
fn failed(service: &'static str, response: &HttpResponse) -> DownstreamError {
    DownstreamError::Failed {
        service,
        status: response.status,
        reason: body_excerpt(&response.body),
    }
}

/// The start of a body, for an error message (bodies of failing services can be huge).
fn body_excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    if text.trim().is_empty() {
        "(empty body)".to_owned()
    } else {
        text.into_owned()
    }
}

/// A JSON array from a list endpoint. A bare array is the documented shape; an object holding
/// the array under `key` is accepted too, so that wrapping a list in an envelope later (for
/// paging, say) does not break the gateway.
fn json_list(
    service: &'static str,
    key: &str,
    response: &HttpResponse,
) -> Result<Vec<Value>, DownstreamError> {
    let bad_body = |reason: String| DownstreamError::Failed {
        service,
        status: response.status,
        reason,
    };
    match response.json::<Value>() {
        Ok(Value::Array(items)) => Ok(items),
        Ok(Value::Object(mut object)) => match object.remove(key) {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(bad_body(format!(
                "expected a JSON array (or `{key}` array)"
            ))),
        },
        Ok(_) => Err(bad_body("expected a JSON array".into())),
        Err(e) => Err(bad_body(format!("the body is not JSON: {e}"))),
    }
}

/// An order orders has accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The new order's id.
    pub order_id: Uuid,
    /// Its status as orders reports it (`accepted`).
    pub status: String,
}

/// The orders service: `POST /orders`, `GET /orders/{id}`, `GET /users/{id}/orders`.
#[derive(Clone, Debug)]
pub struct Orders {
    client: HttpClient,
    base_url: String,
    timeout: Duration,
    retry: RetryPolicy,
}

impl Orders {
    const SERVICE: &'static str = "orders";

    /// Orders at `base_url` (no trailing `/`), `timeout` per call.
    pub fn new(
        client: HttpClient,
        base_url: String,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            client,
            base_url,
            timeout,
            retry,
        }
    }

    /// `POST /orders`, **once**: placing an order is not idempotent, so a failed attempt is
    /// reported, never repeated (see [`crate::retry`]).
    ///
    /// # Errors
    /// [`DownstreamError::Refused`] for a 4xx (out of stock, unknown SKU), otherwise why there is
    /// no accepted order.
    pub async fn place(&self, order: &PlaceOrder) -> Result<Accepted, DownstreamError> {
        #[derive(Deserialize)]
        struct Created {
            order_id: String,
            status: Option<String>,
        }
        let url = format!("{}/orders", self.base_url);
        let response = self
            .client
            .send_json(Method::POST, &url, order, self.timeout)
            .await
            .map_err(|source| DownstreamError::NoResponse {
                service: Self::SERVICE,
                source,
            })?;
        if !response.status.is_success() {
            return Err(refused_or_failed(Self::SERVICE, &response));
        }
        let bad_body = |reason: String| DownstreamError::Failed {
            service: Self::SERVICE,
            status: response.status,
            reason,
        };
        let created: Created = response
            .json()
            .map_err(|e| bad_body(format!("unreadable order confirmation: {e}")))?;
        // The id goes into a `Location` header and a URL the client will call; anything but a
        // UUID would be a URL the gateway itself refuses.
        let order_id = Uuid::parse_str(&created.order_id)
            .map_err(|_| bad_body(format!("order id {:?} is not a UUID", created.order_id)))?;
        Ok(Accepted {
            order_id,
            status: created.status.unwrap_or_else(|| "accepted".to_owned()),
        })
    }

    /// `GET /orders/{id}`, retried: the order as orders returns it, or `None` for a 404.
    ///
    /// # Errors
    /// Why no order could be read.
    pub async fn get(&self, id: Uuid) -> Result<Option<Value>, DownstreamError> {
        let url = format!("{}/orders/{id}", self.base_url);
        let response = self.get_json(&url).await?;
        match response.status {
            StatusCode::OK => {
                response
                    .json::<Value>()
                    .map(Some)
                    .map_err(|e| DownstreamError::Failed {
                        service: Self::SERVICE,
                        status: response.status,
                        reason: format!("the order is not JSON: {e}"),
                    })
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(failed(Self::SERVICE, &response)),
        }
    }

    /// `GET /users/{user_id}/orders`, retried: the user's orders. `user_id` must already be
    /// valid ([`crate::input::check_id`]), which makes it safe in a path.
    ///
    /// # Errors
    /// Why the list could not be read.
    pub async fn for_user(&self, user_id: &str) -> Result<Vec<Value>, DownstreamError> {
        let url = format!("{}/users/{user_id}/orders", self.base_url);
        let response = self.get_json(&url).await?;
        if response.status != StatusCode::OK {
            return Err(failed(Self::SERVICE, &response));
        }
        json_list(Self::SERVICE, "orders", &response)
    }

    async fn get_json(&self, url: &str) -> Result<HttpResponse, DownstreamError> {
        get_idempotent(&self.client, url, self.timeout, &self.retry)
            .await
            .map_err(|source| DownstreamError::NoResponse {
                service: Self::SERVICE,
                source,
            })
    }

    /// Readiness probe: any HTTP answer (a 404 included) proves orders is up and reachable.
    /// Orders serves `/healthz` only on its admin port, which the gateway is not told, so the
    /// probe asks the app port for an order that cannot exist.
    pub(crate) async fn probe(&self) -> Result<(), String> {
        let url = format!(
            "{}/orders/00000000-0000-0000-0000-000000000000",
            self.base_url
        );
        probe(&self.client, &url, self.timeout).await
    }
}

/// The fulfillment service: `GET /users/{id}/shipments`.
#[derive(Clone, Debug)]
pub struct Fulfillment {
    client: HttpClient,
    base_url: String,
    timeout: Duration,
    retry: RetryPolicy,
}

impl Fulfillment {
    const SERVICE: &'static str = "fulfillment";

    /// Fulfillment at `base_url` (no trailing `/`), `timeout` per call.
    pub fn new(
        client: HttpClient,
        base_url: String,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            client,
            base_url,
            timeout,
            retry,
        }
    }

    /// `GET /users/{user_id}/shipments`, retried: the user's shipments. `user_id` must already
    /// be valid.
    ///
    /// # Errors
    /// Why the list could not be read.
    pub async fn shipments_for_user(&self, user_id: &str) -> Result<Vec<Value>, DownstreamError> {
        let url = format!("{}/users/{user_id}/shipments", self.base_url);
        let response = get_idempotent(&self.client, &url, self.timeout, &self.retry)
            .await
            .map_err(|source| DownstreamError::NoResponse {
                service: Self::SERVICE,
                source,
            })?;
        if response.status != StatusCode::OK {
            return Err(failed(Self::SERVICE, &response));
        }
        json_list(Self::SERVICE, "shipments", &response)
    }

    /// Readiness probe: any HTTP answer proves fulfillment is up (see [`Orders::probe`]).
    pub(crate) async fn probe(&self) -> Result<(), String> {
        let url = format!("{}/users/readiness-probe/shipments", self.base_url);
        probe(&self.client, &url, self.timeout).await
    }
}

async fn probe(client: &HttpClient, url: &str, timeout: Duration) -> Result<(), String> {
    client
        .get(url, timeout)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: body.to_owned().into_bytes().into(),
        }
    }

    #[test]
    fn a_4xx_problem_keeps_its_title_and_detail() {
        let r = response(
            409,
            r#"{"type":"about:blank","title":"Out of stock","status":409,"detail":"sku-3: 2 requested, 1 in stock"}"#,
        );
        match refused_or_failed("orders", &r) {
            DownstreamError::Refused {
                status,
                title,
                detail,
                ..
            } => {
                assert_eq!(status, StatusCode::CONFLICT);
                assert_eq!(title, "Out of stock");
                assert_eq!(detail, "sku-3: 2 requested, 1 in stock");
            }
            other => panic!("{other:?}"),
        }
        // Not a problem body: still refused, with generic words.
        match refused_or_failed("orders", &response(404, "nope")) {
            DownstreamError::Refused { title, .. } => assert_eq!(title, "Not Found"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_5xx_is_a_failure() {
        let e = refused_or_failed("orders", &response(500, ""));
        assert!(matches!(e, DownstreamError::Failed { .. }));
        let e = failed("orders", &response(400, ""));
        assert!(matches!(e, DownstreamError::Failed { .. }));
        assert!(e.to_string().contains("(empty body)"));
    }

    #[test]
    fn lists_are_bare_arrays_or_wrapped_under_their_name() {
        let bare = response(200, r#"[{"a":1}]"#);
        assert_eq!(json_list("orders", "orders", &bare).unwrap().len(), 1);
        let wrapped = response(200, r#"{"orders":[1,2]}"#);
        assert_eq!(json_list("orders", "orders", &wrapped).unwrap().len(), 2);
        assert!(json_list("orders", "orders", &response(200, "{}")).is_err());
        assert!(json_list("orders", "orders", &response(200, "not json")).is_err());
    }
}
