//! Shared by the integration tests: fake downstream services (small axum routers on
//! `127.0.0.1:0` that record what they receive), a gateway started the way the binary starts it,
//! and a client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use gateway::{Config, Running};
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use servicekit::client::HttpClient;
use servicekit::server::CancellationToken;

/// One request a fake service received.
#[derive(Clone, Debug)]
pub struct Hit {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

/// Everything a fake service received, in order.
#[derive(Clone, Default)]
pub struct Hits(Arc<Mutex<Vec<Hit>>>);

impl Hits {
    pub fn all(&self) -> Vec<Hit> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

async fn record(State(hits): State<Hits>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    hits.0.lock().unwrap().push(Hit {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        body: bytes.to_vec(),
    });
    next.run(Request::from_parts(parts, bytes.into())).await
}

/// A fake downstream service: its base URL and what it received.
pub struct Fake {
    pub url: String,
    pub hits: Hits,
}

/// Serves `router` on `127.0.0.1:0`, recording every request.
pub async fn fake(router: Router) -> Fake {
    let hits = Hits::default();
    let router = router.layer(axum::middleware::from_fn_with_state(hits.clone(), record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Fake {
        url: format!("http://{addr}"),
        hits,
    }
}

/// A URL where nothing listens (a port that was free a moment ago): connection refused.
pub async fn closed_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// A running gateway; stopped (gracefully) when dropped.
pub struct Gateway {
    pub url: String,
    pub admin_url: String,
    pub app_addr: SocketAddr,
    shutdown: CancellationToken,
    running: Option<Running>,
}

impl Gateway {
    /// Stops the gateway and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.running.take().unwrap().wait().await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Test defaults: ephemeral ports, short timeouts, limits out of the way, no fault, no token.
pub fn config(orders_url: &str, fulfillment_url: &str) -> Config {
    Config {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        admin_listen_addr: "127.0.0.1:0".parse().unwrap(),
        orders_url: orders_url.to_owned(),
        fulfillment_url: fulfillment_url.to_owned(),
        rate_limit_rps: 10_000,
        rate_limit_burst: 10_000,
        max_concurrent_requests: 256,
        orders_timeout: Duration::from_millis(500),
        fulfillment_timeout: Duration::from_millis(300),
        max_body_bytes: gateway::DEFAULT_MAX_BODY_BYTES,
        // A fresh, empty registry of its own.
        faults: Config::default().faults,
        admin_token: None,
    }
}

/// Starts a gateway with `config`.
pub async fn start(config: Config) -> Gateway {
    start_with_metrics(config, None).await
}

/// Starts a gateway with `config`, rendering `metrics` on its admin listener.
pub async fn start_with_metrics(
    config: Config,
    metrics: Option<telemetry::MetricsHandle>,
) -> Gateway {
    let shutdown = CancellationToken::new();
    let running = gateway::start(config, metrics, shutdown.clone())
        .await
        .expect("the gateway starts");
    Gateway {
        url: format!("http://{}", running.app_addr),
        admin_url: format!("http://{}", running.admin_addr),
        app_addr: running.app_addr,
        shutdown,
        running: Some(running),
    }
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts this is an RFC 9457 problem with `status`, and returns its body.
    #[track_caller]
    pub fn problem(&self, status: StatusCode) -> Value {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{:?}",
            self.headers
        );
        let problem = self.json();
        assert_eq!(problem["status"], status.as_u16(), "{problem}");
        assert!(
            problem["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{problem}"
        );
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{problem}"
        );
        problem
    }
}

/// Sends `method url` with an optional JSON body (sent with `Content-Type: application/json`).
pub async fn send(method: Method, url: &str, body: Option<&str>) -> Reply {
    let response = HttpClient::new()
        .request(
            method,
            url,
            body.map(|b| b.as_bytes().to_vec()),
            Duration::from_secs(10),
        )
        .await
        .expect("the gateway answers");
    Reply {
        status: response.status,
        headers: response.headers,
        body: response.body.to_vec(),
    }
}

pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, None).await
}

pub async fn post(url: &str, body: &str) -> Reply {
    send(Method::POST, url, Some(body)).await
}

/// Sends `method url` over a plain HTTP client (no CLIENT span, no trace context), with
/// `Authorization: Bearer <token>` when given: for the admin API, whose calls should leave no
/// trace of their own.
pub async fn admin(method: Method, url: &str, token: Option<&str>, body: Option<&str>) -> Reply {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut request = http::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::from(body.unwrap_or_default().to_owned()))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("the admin API answers within 10 s")
        .expect("the admin API answers");
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes().to_vec(),
    }
}

/// The sum of the samples of `name` (exactly that name: `…_count`, not the histogram) whose
/// labels include every `key="value"` of `labels`, in a Prometheus text exposition; `None` when
/// there is no such sample.
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let wanted = labels.iter().all(|(k, v)| {
            label_text
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        });
        if wanted && let Ok(v) = value.trim().parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

pub const ORDER_ID: &str = "7d444840-9dc0-11d1-b245-5ffdce74fad2";
pub const VALID_ORDER: &str = r#"{"user_id":"u-1","items":[{"sku":"sku-1","quantity":2}]}"#;
