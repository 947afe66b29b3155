//! Errors as [RFC 9457](https://www.rfc-editor.org/rfc/rfc9457) problem details.
//!
//! Every error response of a Faultline service is `application/problem+json`:
//!
//! ```json
//! {"type":"about:blank","title":"Out of stock","status":409,
//!  "detail":"sku-3: 2 requested, 1 in stock","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}
//! ```
//!
//! `trace_id` (an extension member) is the trace the request joined, so a user holding an error
//! can open its trace. [`Json`] is a drop-in for axum's JSON extractor whose rejections are such
//! problems (400 malformed JSON, 422 wrong shape, 415 wrong content type, 413 too large).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The media type of problem details.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem detail (RFC 9457 §3) with a `trace_id` extension.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Problem {
    /// A URI reference identifying the problem type; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, and what to do about it.
    pub detail: String,
    /// The trace the request joined (32 lowercase hex digits), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Extra members (e.g. `retry_after_s`), flattened into the object.
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem with `status`, `title` and `detail`, tagged with the current trace id.
    pub fn new(status: StatusCode, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            problem_type: "about:blank".to_owned(),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            trace_id: crate::current_trace_id(),
            extensions: serde_json::Map::new(),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad request", detail)
    }

    /// 404 Not Found.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", detail)
    }

    /// 422 Unprocessable Content: well-formed JSON that breaks a rule.
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request", detail)
    }

    /// 503 Service Unavailable: a dependency is down.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable",
            detail,
        )
    }

    /// 500 Internal Server Error. The detail is logged; the client sees a generic text.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "the server failed to handle the request; the trace_id identifies it in the logs",
        )
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        match &rejection {
            JsonRejection::JsonSyntaxError(_) => Problem::bad_request(format!(
                "the body is not valid JSON: {}",
                rejection.body_text()
            )),
            JsonRejection::JsonDataError(_) => Problem::unprocessable(rejection.body_text()),
            JsonRejection::MissingJsonContentType(_) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(_)
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Request body too large",
                    rejection.body_text(),
                )
            }
            _ => Problem::new(rejection.status(), "Bad request", rejection.body_text()),
        }
    }
}

/// A JSON body extractor (like `axum::Json`) whose rejections are [`Problem`]s.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(rejection.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::post;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Order {
        quantity: u32,
    }

    async fn post_body(
        body: &'static str,
        content_type: &str,
    ) -> (StatusCode, String, serde_json::Value) {
        let app = Router::new()
            .route("/", post(|Json(_): Json<Order>| async { "ok" }))
            .layer(axum::extract::DefaultBodyLimit::max(64));
        let response = app
            .oneshot(
                http::Request::post("/")
                    .header("content-type", content_type)
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let ct = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            ct,
            serde_json::from_slice(&bytes).unwrap_or_default(),
        )
    }

    #[tokio::test]
    async fn rejections_are_problem_details_with_the_right_status() {
        for (body, ct, status) in [
            ("{not json", "application/json", StatusCode::BAD_REQUEST),
            (
                r#"{"quantity": -1}"#,
                "application/json",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                r#"{"quantity": 1}"#,
                "text/plain",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                r#"{"quantity": 1, "padding": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
                "application/json",
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
        ] {
            let (got, content_type, problem) = post_body(body, ct).await;
            assert_eq!(got, status, "{body}");
            assert_eq!(content_type, CONTENT_TYPE);
            assert_eq!(problem["status"], status.as_u16());
            assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
        }
    }
}
