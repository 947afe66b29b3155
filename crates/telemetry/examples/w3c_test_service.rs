//! A service for the official W3C Trace Context test harness
//! (<https://github.com/w3c/trace-context/tree/main/test>).
//!
//! The harness POSTs a JSON array of `{"url": …, "arguments": …}` to `/test`; for each element
//! this service POSTs `arguments` (as JSON) to `url` through [`telemetry::http::ClientLayer`],
//! so the harness can check what the strict propagator does with the headers it sent.
//!
//! ```sh
//! cargo run -p telemetry --example w3c_test_service            # listens on 127.0.0.1:5000
//! LISTEN_ADDR=127.0.0.1:5001 cargo run -p telemetry --example w3c_test_service
//! # then, in a checkout of w3c/trace-context:  python3 test/test.py http://127.0.0.1:5000/test
//! ```

use std::net::SocketAddr;

use axum::Json;
use axum::http::StatusCode;
use axum::routing::post;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tower::{ServiceBuilder, ServiceExt};

/// One element of the harness's request body.
#[derive(Deserialize)]
struct Case {
    url: String,
    arguments: serde_json::Value,
}

async fn run_cases(Json(cases): Json<Vec<Case>>) -> StatusCode {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for case in cases {
        let body = serde_json::to_vec(&case.arguments).unwrap_or_default();
        let request = match http::Request::post(&case.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::from(body))
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(url = %case.url, error = %e, "skipping a case with an invalid URL");
                continue;
            }
        };
        let svc = ServiceBuilder::new()
            .layer(telemetry::http::ClientLayer::new())
            .service(client.clone());
        if let Err(e) = svc.oneshot(request).await {
            tracing::warn!(url = %case.url, error = %e, "harness callback failed");
        }
    }
    StatusCode::OK
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = telemetry::TelemetryConfig::from_env("w3c-test-service")?;
    let guard = telemetry::init(config)?;
    let addr: SocketAddr = std::env::var("LISTEN_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:5000".into())
        .parse()
        .map_err(|e| format!("LISTEN_ADDR must be an address like 127.0.0.1:5000: {e}"))?;

    let app = axum::Router::new()
        .route("/test", post(run_cases))
        .layer(telemetry::http::ServerLayer::new());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "W3C trace-context test service listening on POST /test");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    guard.shutdown().await?;
    Ok(())
}
