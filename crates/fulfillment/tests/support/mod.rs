//! Test harness: a fake orders service, the fulfillment service started on port 0 with a
//! temp-dir SQLite database and SQLite queue, and helpers to publish orders and wait for
//! outcomes.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use fulfillment::{CancellationToken, Config, Running};
use queue::{Queue, QueueConfig};
use serde_json::{Value, json};
use servicekit::client::HttpClient;
use tempfile::TempDir;

/// One `PUT /orders/{id}/status` the fake orders service received.
#[derive(Clone, Debug)]
pub struct Report {
    pub order_id: String,
    pub status: String,
    /// What the fake answered.
    pub answered: u16,
    pub traceparent: Option<String>,
}

#[derive(Default)]
struct OrdersState {
    reports: Mutex<Vec<Report>>,
    /// Answer 503 to this many more PUTs.
    fail_next: AtomicUsize,
    /// Order ids answered 404.
    unknown: Mutex<HashSet<String>>,
}

/// A stand-in for the orders service: records every status report.
#[derive(Clone, Default)]
pub struct FakeOrders {
    state: Arc<OrdersState>,
    pub addr: Option<SocketAddr>,
}

impl FakeOrders {
    /// Serves on `127.0.0.1:0`.
    pub async fn start() -> FakeOrders {
        Self::start_on("127.0.0.1:0".parse().unwrap(), false).await
    }

    /// Serves on `addr`, optionally behind the telemetry SERVER layer.
    pub async fn start_on(addr: SocketAddr, instrumented: bool) -> FakeOrders {
        let mut orders = FakeOrders::default();
        orders.serve(addr, instrumented).await;
        orders
    }

    /// Serves this fake's state on `addr` (e.g. once "orders is back").
    pub async fn serve(&mut self, addr: SocketAddr, instrumented: bool) {
        let mut app = Router::new()
            .route("/orders/{id}/status", put(status))
            .with_state(self.state.clone());
        if instrumented {
            app = app.layer(telemetry::http::ServerLayer::new());
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind fake orders");
        self.addr = Some(listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.expect("started"))
    }

    /// Answers 503 to the next `n` status reports.
    pub fn fail_next(&self, n: usize) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// Answers 404 for `order_id`.
    pub fn forget(&self, order_id: &str) {
        self.state
            .unknown
            .lock()
            .unwrap()
            .insert(order_id.to_owned());
    }

    pub fn reports(&self) -> Vec<Report> {
        self.state.reports.lock().unwrap().clone()
    }

    /// Reports of `status` for `order_id` that were answered 2xx.
    pub fn accepted(&self, order_id: &str, status: &str) -> usize {
        self.reports()
            .iter()
            .filter(|r| r.order_id == order_id && r.status == status && r.answered < 300)
            .count()
    }
}

async fn status(
    State(state): State<Arc<OrdersState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    let failing = state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let answer = if failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else if state.unknown.lock().unwrap().contains(&id) {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    state.reports.lock().unwrap().push(Report {
        order_id: id.clone(),
        status: body["status"].as_str().unwrap_or_default().to_owned(),
        answered: answer.as_u16(),
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    (
        answer,
        axum::Json(json!({"order_id": id, "status": body["status"]})),
    )
}

/// A port nothing listens on (bound, then released): "orders is down".
pub async fn free_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// How to start the service under test.
pub struct Options {
    pub orders_url: String,
    /// `None`: a SQLite file in the temp dir.
    pub database_url: Option<String>,
    pub ack_wait: Duration,
    pub max_deliveries: u32,
    pub workers: usize,
    pub metrics: Option<telemetry::MetricsHandle>,
    /// `FAULTLINE_ADMIN_TOKEN`; default none.
    pub admin_token: Option<String>,
}

impl Options {
    pub fn new(orders_url: String) -> Self {
        Self {
            orders_url,
            database_url: None,
            // Above the longest processing time (4 report attempts of 1 s plus backoff).
            ack_wait: Duration::from_secs(10),
            max_deliveries: 5,
            workers: 4,
            metrics: None,
            admin_token: None,
        }
    }
}

/// The running fulfillment service plus a queue handle for publishing.
pub struct Service {
    pub running: Running,
    pub shutdown: CancellationToken,
    pub queue: Queue,
    pub queue_url: String,
    pub dir: TempDir,
    http: HttpClient,
}

/// A temp dir and the SQLite queue URL inside it; create before the service to set up a
/// scenario (e.g. a crashed consumer) first.
pub fn queue_url(dir: &TempDir) -> String {
    format!("sqlite://{}/queue.db", dir.path().display())
}

/// A publisher/consumer handle on the test queue with a short ack wait.
pub async fn queue_handle(url: &str, ack_wait: Duration) -> Queue {
    let mut config = QueueConfig::new(url);
    config.ack_wait = ack_wait;
    Queue::connect(config)
        .await
        .expect("connect the test queue")
}

pub async fn start_service(options: Options) -> Service {
    start_service_in(tempfile::tempdir().unwrap(), options).await
}

pub async fn start_service_in(dir: TempDir, options: Options) -> Service {
    let queue_url = queue_url(&dir);
    let queue = queue_handle(&queue_url, options.ack_wait).await;
    let faults = fulfillment::fault_registry(&options.orders_url);
    let config = Config {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        admin_listen_addr: "127.0.0.1:0".parse().unwrap(),
        database_url: options
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}/data/fulfillment.db", dir.path().display())),
        queue_url: queue_url.clone(),
        orders_url: options.orders_url,
        workers: options.workers,
        orders_timeout: Duration::from_secs(1),
        max_deliveries: options.max_deliveries,
        ack_wait: options.ack_wait,
        faults,
        admin_token: options.admin_token,
    };
    let shutdown = CancellationToken::new();
    let running = fulfillment::start(config, options.metrics, shutdown.clone())
        .await
        .expect("start fulfillment");
    Service {
        running,
        shutdown,
        queue,
        queue_url,
        dir,
        http: HttpClient::new(),
    }
}

pub fn order_payload(order_id: &str, user_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "order_id": order_id,
        "user_id": user_id,
        "items": [{"sku": "sku-1", "quantity": 2}],
        "placed_at": "2025-01-31T09:08:07Z",
    }))
    .unwrap()
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Service {
    /// Publishes an `orders.placed` event for `order_id` with message id `message_id`.
    pub async fn publish_order(&self, message_id: &str, order_id: &str, user_id: &str) {
        self.publish(message_id, &order_payload(order_id, user_id))
            .await;
    }

    pub async fn publish(&self, message_id: &str, payload: &[u8]) {
        self.queue
            .publish("orders.placed", message_id, payload, &BTreeMap::new())
            .await
            .expect("publish");
    }

    /// `GET /users/{user}/shipments`: status and body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(
                &format!("http://{}{path}", self.running.app_addr),
                Duration::from_secs(5),
            )
            .await
            .expect("GET");
        (
            response.status.as_u16(),
            serde_json::from_slice(&response.body).unwrap_or(Value::Null),
        )
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(
                &format!("http://{}{path}", self.running.admin_addr),
                Duration::from_secs(5),
            )
            .await
            .expect("GET admin");
        (
            response.status.as_u16(),
            String::from_utf8_lossy(&response.body).into_owned(),
        )
    }

    /// `method path` on the admin listener with an optional bearer `token` and JSON `body`,
    /// over a plain HTTP/1.1 connection (the test sets the `Authorization` header itself):
    /// status and body (`Value::Null` when the body is not JSON).
    pub async fn admin_send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let addr = self.running.admin_addr;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.map_or(0, str::len)
        );
        if body.is_some() {
            request.push_str("Content-Type: application/json\r\n");
        }
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body.unwrap_or_default());
        let response = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(addr).expect("connect admin");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            stream.write_all(request.as_bytes()).expect("send");
            let mut response = Vec::new();
            stream.read_to_end(&mut response).expect("read the answer");
            String::from_utf8(response).expect("a UTF-8 answer")
        })
        .await
        .unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line: {head}"));
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// The user's shipments as the API lists them.
    pub async fn shipments(&self, user_id: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/users/{user_id}/shipments")).await;
        assert_eq!(status, 200, "{body}");
        body.as_array().cloned().expect("a JSON array")
    }

    /// Waits until nothing on `orders.placed` is left unacked.
    pub async fn drained(&self) {
        let queue = self.queue.clone();
        eventually("the queue to drain", Duration::from_secs(20), || {
            let queue = queue.clone();
            async move { queue.pending().await.unwrap() == 0 }
        })
        .await;
    }

    /// Cancels the shutdown token and waits for the service to stop.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.running.wait())
            .await
            .expect("the service stops within 20 s")
            .expect("the service stops cleanly");
    }
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
