//! The admin API (CONTRACT.md), merged into each service's admin listener:
//!
//! | request | answer |
//! |---|---|
//! | `GET /admin/faults` | 200 `{"service":"orders","supported":[…],"faults":[Fault…]}` |
//! | `PUT /admin/faults` with a [`FaultSpec`] | 201 with the [`Fault`]; 400 problem with the reason |
//! | `DELETE /admin/faults` | 200 `{"cleared":N}` |
//! | `DELETE /admin/faults/{id}` | 200 `{"cleared":1,"fault":Fault}`; 404 problem |
//!
//! When a token is configured (`FAULTLINE_ADMIN_TOKEN`), every mutation needs
//! `Authorization: Bearer <token>` and gets 401 otherwise (with `WWW-Authenticate: Bearer`,
//! [RFC 6750](https://www.rfc-editor.org/rfc/rfc6750#section-3)). Reading is open, like
//! `/metrics`. Errors are `application/problem+json` ([RFC 9457](https://www.rfc-editor.org/rfc/rfc9457)).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde_json::json;

use crate::registry::{Fault, Faults};
use crate::spec::FaultSpec;

#[derive(Clone)]
struct AdminState {
    faults: Faults,
    token: Option<Arc<str>>,
}

/// The `/admin/faults` routes for `faults`; mutations need `token` when it is `Some` (an
/// empty token counts as none).
pub fn router(faults: Faults, token: Option<String>) -> Router {
    let token = token.filter(|t| !t.is_empty()).map(Arc::from);
    Router::new()
        .route("/admin/faults", get(list).put(set).delete(clear_all))
        .route("/admin/faults/{id}", delete(clear_one))
        .with_state(AdminState { faults, token })
}

fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// `Err(401)` unless the request carries the token.
fn authorise(state: &AdminState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(expected) = &state.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
        return Ok(());
    }
    let mut response = problem(
        StatusCode::UNAUTHORIZED,
        "changing faults needs Authorization: Bearer <FAULTLINE_ADMIN_TOKEN> (faultline up writes it to .faultline/admin-token)",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Err(Box::new(response))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn list(State(state): State<AdminState>) -> Response {
    let supported: Vec<_> = state.faults.supported().iter().map(|k| k.name()).collect();
    json_response(
        StatusCode::OK,
        json!({
            "service": state.faults.service(),
            "supported": supported,
            "faults": state.faults.list(),
        }),
    )
}

async fn set(State(state): State<AdminState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorise(&state, &headers) {
        return *r;
    }
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("invalid fault spec: {e}")),
    };
    match state.faults.set(&spec) {
        Ok(fault) => json_response(StatusCode::CREATED, fault_json(&fault)),
        Err(e) => problem(StatusCode::BAD_REQUEST, e.0),
    }
}

async fn clear_all(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorise(&state, &headers) {
        return *r;
    }
    let cleared = state.faults.clear_all();
    json_response(StatusCode::OK, json!({ "cleared": cleared }))
}

async fn clear_one(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorise(&state, &headers) {
        return *r;
    }
    match state.faults.clear(&id) {
        Some(fault) => json_response(
            StatusCode::OK,
            json!({ "cleared": 1, "fault": fault_json(&fault) }),
        ),
        None => problem(
            StatusCode::NOT_FOUND,
            format!(
                "no fault {id:?} in {} (it may have expired)",
                state.faults.service()
            ),
        ),
    }
}

fn fault_json(fault: &Fault) -> serde_json::Value {
    serde_json::to_value(fault).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FaultKind;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn send(
        app: &Router,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = axum::http::Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let r = app
            .clone()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn mutations_need_the_token_and_reads_do_not() {
        let faults = Faults::new("orders", &FaultKind::ALL);
        let app = router(faults.clone(), Some("s3cret".into()));
        let spec = r#"{"kind":"http.error"}"#;
        assert_eq!(
            send(&app, "PUT", "/admin/faults", None, spec).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&app, "PUT", "/admin/faults", Some("wrong"), spec)
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        assert!(faults.is_empty(), "a refused PUT changes nothing");
        let (status, fault) = send(&app, "PUT", "/admin/faults", Some("s3cret"), spec).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(fault["kind"], "http.error");
        assert_eq!(fault["ttl_seconds"], 600);
        let (status, listed) = send(&app, "GET", "/admin/faults", None, "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(listed["faults"][0]["id"], fault["id"]);
        assert_eq!(
            send(&app, "DELETE", "/admin/faults", None, "").await.0,
            StatusCode::UNAUTHORIZED
        );
        let id = fault["id"].as_str().unwrap();
        let (status, cleared) = send(
            &app,
            "DELETE",
            &format!("/admin/faults/{id}"),
            Some("s3cret"),
            "",
        )
        .await;
        assert_eq!(
            (status, cleared["cleared"].as_u64()),
            (StatusCode::OK, Some(1))
        );
        let (status, _) = send(
            &app,
            "DELETE",
            &format!("/admin/faults/{id}"),
            Some("s3cret"),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn invalid_specs_get_400_with_the_reason() {
        let faults = Faults::new("orders", &[FaultKind::HttpError]);
        let app = router(faults.clone(), None);
        for (body, needle) in [
            ("not json", "invalid fault spec"),
            (
                r#"{"kind":"db.slow_query","ms":5}"#,
                "does not act in orders",
            ),
            (r#"{"kind":"nope"}"#, "unknown variant"),
            (r#"{"kind":"http.error","status":99}"#, "status must be"),
        ] {
            let (status, problem) = send(&app, "PUT", "/admin/faults", None, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(
                problem["detail"].as_str().unwrap().contains(needle),
                "{problem}"
            );
        }
        assert!(faults.is_empty());
    }
}
