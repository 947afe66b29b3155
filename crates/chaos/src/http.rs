//! Inbound faults: an axum middleware that acts on the requests of matching routes.
//!
//! Add it with `Router::layer` *inside* the telemetry server layer, so that the SERVER span
//! and the RED metrics see what the fault does (the extra latency, the 5xx), exactly as they
//! would see a real incident:
//!
//! ```ignore
//! router
//!     .layer(axum::middleware::from_fn_with_state(faults.clone(), chaos::http::inbound))
//!     .layer(telemetry::http::ServerLayer::new())
//! ```
//!
//! Per request, in order: `http.hang`, `http.error`, `http.latency`, then the runtime faults
//! (`runtime.cpu_burn`, `runtime.blocking_call`, `runtime.lock_across_await`,
//! `runtime.memory_leak`), which act on the request's own worker thread and memory.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::kind::FaultKind;
use crate::registry::{Faults, route_matches};
use crate::runtime;

/// The middleware (see the [module docs](self)).
pub async fn inbound(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    if faults.is_empty() {
        return next.run(request).await;
    }
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let matches = |spec: &crate::ValidSpec| route_matches(spec, &method, &route);

    if let Some(hit) = faults.roll(FaultKind::HttpHang, matches) {
        hit.acted();
        // Never answer while the fault lasts; the caller's timeout (or disconnect, which drops
        // this future) ends it first.
        let mut changes = faults.subscribe();
        while faults
            .find(FaultKind::HttpHang, |_| true)
            .is_some_and(|h| h.id() == hit.id())
        {
            let expires_in = faults
                .list()
                .into_iter()
                .find(|f| f.id == hit.id())
                .map_or(0, |f| f.expires_in_seconds);
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(expires_in + 1),
                changes.changed(),
            )
            .await;
        }
    }
    if let Some(hit) = faults.roll(FaultKind::HttpError, matches) {
        hit.acted();
        let status = StatusCode::from_u16(hit.spec().status.unwrap_or(500))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return problem(status);
    }
    if let Some(hit) = faults.roll(FaultKind::HttpLatency, matches) {
        hit.acted();
        tokio::time::sleep(hit.spec().jittered_duration()).await;
    }
    if let Some(hit) = faults.roll(FaultKind::RuntimeCpuBurn, matches) {
        hit.acted();
        runtime::burn_cpu(hit.spec().duration());
    }
    if let Some(hit) = faults.roll(FaultKind::RuntimeBlockingCall, matches) {
        hit.acted();
        runtime::blocking_call(hit.spec().duration());
    }
    if let Some(hit) = faults.roll(FaultKind::RuntimeLockAcrossAwait, matches) {
        hit.acted();
        runtime::hold_lock_across_await(faults.shared_lock(), hit.spec().duration()).await;
    }
    if let Some(hit) = faults.roll(FaultKind::RuntimeMemoryLeak, matches) {
        hit.acted();
        runtime::leak(&hit);
    }
    next.run(request).await
}

/// The error a failing handler would give: an RFC 9457 problem with the trace id, and nothing
/// that names the fault.
fn problem(status: StatusCode) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let mut body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": "the server failed to handle the request; the trace_id identifies it in the logs",
    });
    if let Some(trace_id) = telemetry::current_trace_id() {
        body["trace_id"] = trace_id.into();
    }
    // A neutral target: the module path (`chaos::http`) would name the injector in the logs.
    tracing::error!(target: "http", status_code = status.as_u16(), "request failed");
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use http_body_util::BodyExt;
    use std::time::{Duration, Instant};
    use tower::ServiceExt;

    fn app(faults: &Faults) -> Router {
        Router::new()
            .route("/a", get(|| async { "a" }))
            .route("/b/{id}", get(|| async { "b" }))
            .layer(axum::middleware::from_fn_with_state(
                faults.clone(),
                inbound,
            ))
    }

    async fn call(app: &Router, uri: &str) -> (StatusCode, String) {
        let r = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let ct = r.headers().get(header::CONTENT_TYPE).cloned();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        if status.is_server_error() {
            assert_eq!(ct.unwrap(), "application/problem+json");
        }
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn set(f: &Faults, json: &str) -> String {
        f.set(&serde_json::from_str(json).unwrap()).unwrap().id
    }

    #[tokio::test]
    async fn http_error_hits_only_the_matching_route_until_cleared() {
        let faults = Faults::new("gateway", &FaultKind::ALL);
        let app = app(&faults);
        let id = set(
            &faults,
            r#"{"kind":"http.error","status":503,"route":"/b/{id}"}"#,
        );
        assert_eq!(call(&app, "/a").await.0, StatusCode::OK);
        let (status, body) = call(&app, "/b/7").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !body.contains("http.error") && !body.contains("fault"),
            "{body}"
        );
        faults.clear(&id);
        assert_eq!(call(&app, "/b/7").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn http_latency_delays() {
        let faults = Faults::new("gateway", &FaultKind::ALL);
        let app = app(&faults);
        set(&faults, r#"{"kind":"http.latency","ms":120}"#);
        let start = Instant::now();
        assert_eq!(call(&app, "/a").await.0, StatusCode::OK);
        assert!(start.elapsed() >= Duration::from_millis(120));
    }

    #[tokio::test]
    async fn http_hang_holds_until_the_fault_is_cleared() {
        let faults = Faults::new("gateway", &FaultKind::ALL);
        let app = app(&faults);
        let id = set(&faults, r#"{"kind":"http.hang","route":"GET /a"}"#);
        let pending = tokio::spawn({
            let app = app.clone();
            async move { call(&app, "/a").await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!pending.is_finished(), "a hung request does not answer");
        assert_eq!(call(&app, "/b/1").await.0, StatusCode::OK);
        faults.clear(&id);
        let (status, _) = tokio::time::timeout(Duration::from_secs(2), pending)
            .await
            .expect("answers once the fault is gone")
            .unwrap();
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn memory_leak_is_capped_and_freed() {
        let faults = Faults::new("gateway", &FaultKind::ALL);
        let app = app(&faults);
        let id = set(
            &faults,
            r#"{"kind":"runtime.memory_leak","bytes":1000,"max_bytes":2500}"#,
        );
        for _ in 0..5 {
            call(&app, "/a").await;
        }
        let hit = faults.find(FaultKind::RuntimeMemoryLeak, |_| true).unwrap();
        let held = hit.entry().leak.lock().unwrap().bytes_held();
        assert_eq!(held, 2000, "capped at max_bytes");
        assert_eq!(faults.list()[0].occurrences, 5);
        faults.clear(&id);
    }
}
