//! The admin listener: `GET /metrics`, `GET /healthz`, `GET /readyz` (CONTRACT.md).
//!
//! It runs on its own port so that scraping and probing never queue behind application
//! traffic, and so that a load balancer can be pointed at the app port alone.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The named checks behind `GET /readyz`: each says whether a dependency (database, queue,
/// downstream service) is usable right now.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, CheckFn)>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.checks.iter().map(|(n, _)| *n).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

impl Readiness {
    /// No checks: always ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check called `name`; `check` returns `Err(reason)` when the dependency is not
    /// usable. Checks run concurrently, each with a 2 s timeout.
    pub fn check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((
            name,
            Arc::new(move || Box::pin(check()) as BoxFuture<'static, _>),
        ));
        self
    }

    /// Runs every check; returns whether all passed and each check's result (`"ok"` or the
    /// reason).
    pub async fn evaluate(&self) -> (bool, Map<String, Value>) {
        let results = futures_util::future::join_all(self.checks.iter().map(|(name, check)| {
            let check = check.clone();
            async move {
                let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
                };
                (*name, outcome)
            }
        }))
        .await;
        let mut all_ok = true;
        let mut map = Map::new();
        for (name, outcome) in results {
            match outcome {
                Ok(()) => {
                    map.insert(name.to_owned(), Value::String("ok".into()));
                }
                Err(reason) => {
                    all_ok = false;
                    map.insert(name.to_owned(), Value::String(reason));
                }
            }
        }
        (all_ok, map)
    }
}

/// The admin routes. `metrics` renders `/metrics` (absent: 404 with a reason); `readiness`
/// backs `/readyz`. Merge more admin routes (faults) into the returned router.
pub fn admin_router(metrics: Option<telemetry::MetricsHandle>, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    match metrics {
                        Some(m) => (
                            [(header::CONTENT_TYPE, telemetry::MetricsHandle::CONTENT_TYPE)],
                            m.render(),
                        )
                            .into_response(),
                        None => (
                            StatusCode::NOT_FOUND,
                            "no Prometheus recorder is installed in this process",
                        )
                            .into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move { readyz(&readiness).await }
            }),
        )
}

async fn readyz(readiness: &Readiness) -> Response {
    let (ok, checks) = readiness.evaluate().await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ok { "ready" } else { "not ready" },
        "checks": checks,
    });
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_json(router: Router, uri: &str) -> (StatusCode, Value) {
        let response = router
            .oneshot(http::Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn readyz_names_the_failing_check() {
        let readiness = Readiness::new()
            .check("database", || async { Ok(()) })
            .check("queue", || async { Err("connection refused".to_owned()) });
        let (status, body) = get_json(admin_router(None, readiness), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["checks"]["database"], "ok");
        assert_eq!(body["checks"]["queue"], "connection refused");
    }

    #[tokio::test]
    async fn readyz_and_healthz_are_ok_when_all_checks_pass() {
        let readiness = Readiness::new().check("database", || async { Ok(()) });
        let router = admin_router(None, readiness);
        assert_eq!(get_json(router.clone(), "/readyz").await.0, StatusCode::OK);
        assert_eq!(get_json(router, "/healthz").await.0, StatusCode::OK);
    }
}
