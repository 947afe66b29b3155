//! Shared by the integration tests: run the real service (`orders::start`) on ephemeral ports
//! against a temp-dir SQLite database and SQLite queue (or a fresh PostgreSQL database), call
//! it over HTTP, and look straight into its database to check what was (not) written.

#![allow(dead_code)]

use std::time::Duration;

use http::Method;
use orders::{CancellationToken, Config, Locking, Running};
use servicekit::client::{HttpClient, HttpResponse};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe, Row};

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How to start the service under test.
pub struct Options {
    pub locking: Locking,
    /// `None`: a SQLite file in the temp dir.
    pub database_url: Option<String>,
    /// `None`: a SQLite queue file in the temp dir.
    pub queue_url: Option<String>,
    pub metrics: Option<telemetry::MetricsHandle>,
    pub max_conflict_retries: u32,
    pub db_pool_size: u32,
    /// `FAULTLINE_ADMIN_TOKEN`: `None` leaves `/admin/faults` open.
    pub admin_token: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            locking: Locking::Optimistic,
            database_url: None,
            queue_url: None,
            metrics: None,
            max_conflict_retries: 10,
            db_pool_size: 10,
            admin_token: None,
        }
    }
}

/// A running orders service plus a separate connection pool to its database.
pub struct TestService {
    running: Option<Running>,
    pub shutdown: CancellationToken,
    pub base: String,
    pub admin: String,
    pub database_url: String,
    pub queue_url: String,
    pub db: AnyPool,
    pub client: HttpClient,
    pub dir: std::sync::Arc<tempfile::TempDir>,
}

/// A temp dir whose SQLite database and queue URLs several services can share (restarts).
pub fn temp_dir() -> std::sync::Arc<tempfile::TempDir> {
    std::sync::Arc::new(tempfile::tempdir().expect("temp dir"))
}

pub fn sqlite_url(dir: &tempfile::TempDir, file: &str) -> String {
    format!("sqlite://{}", dir.path().join(file).display())
}

pub async fn start(options: Options) -> TestService {
    start_in(temp_dir(), options).await
}

pub async fn start_in(dir: std::sync::Arc<tempfile::TempDir>, options: Options) -> TestService {
    let database_url = options
        .database_url
        .unwrap_or_else(|| sqlite_url(&dir, "state/orders.db"));
    let queue_url = options
        .queue_url
        .unwrap_or_else(|| sqlite_url(&dir, "queue.db"));
    let config = Config {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        admin_listen_addr: "127.0.0.1:0".parse().unwrap(),
        database_url: database_url.clone(),
        queue_url: queue_url.clone(),
        locking: options.locking,
        max_conflict_retries: options.max_conflict_retries,
        db_pool_size: options.db_pool_size,
        admin_token: options.admin_token,
        ..Config::defaults()
    };
    let shutdown = CancellationToken::new();
    let running = orders::start(config, options.metrics, shutdown.clone())
        .await
        .expect("the service starts");
    let db = connect(&database_url).await;
    TestService {
        base: format!("http://{}", running.app_addr),
        admin: format!("http://{}", running.admin_addr),
        running: Some(running),
        shutdown,
        database_url,
        queue_url,
        db,
        client: HttpClient::new(),
        dir,
    }
}

/// A small pool for the test's own queries.
pub async fn connect(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("the test connects to the service's database")
}

impl TestService {
    pub async fn post_order(&self, user_id: &str, items: &[(&str, i64)]) -> HttpResponse {
        let items: Vec<_> = items
            .iter()
            .map(|(sku, quantity)| serde_json::json!({"sku": sku, "quantity": quantity}))
            .collect();
        self.post_json(
            "/orders",
            &serde_json::json!({"user_id": user_id, "items": items}),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> HttpResponse {
        self.client
            .send_json(Method::POST, &format!("{}{path}", self.base), body, TIMEOUT)
            .await
            .expect("POST answered")
    }

    /// Sends `body` as is, with `Content-Type: application/json`.
    pub async fn send_raw(&self, method: Method, path: &str, body: Vec<u8>) -> HttpResponse {
        self.client
            .request(method, &format!("{}{path}", self.base), Some(body), TIMEOUT)
            .await
            .expect("request answered")
    }

    pub async fn get(&self, path: &str) -> HttpResponse {
        self.client
            .get(&format!("{}{path}", self.base), TIMEOUT)
            .await
            .expect("GET answered")
    }

    pub async fn admin_get(&self, path: &str) -> HttpResponse {
        self.client
            .get(&format!("{}{path}", self.admin), TIMEOUT)
            .await
            .expect("admin GET answered")
    }

    pub async fn put_status(&self, order_id: &str, status: &str) -> HttpResponse {
        self.client
            .send_json(
                Method::PUT,
                &format!("{}/orders/{order_id}/status", self.base),
                &serde_json::json!({"status": status}),
                TIMEOUT,
            )
            .await
            .expect("PUT answered")
    }

    pub async fn count(&self, table: &str) -> i64 {
        count(&self.db, table).await
    }

    pub async fn unsent(&self) -> i64 {
        sqlx::query("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&self.db)
            .await
            .unwrap()
            .get(0)
    }

    pub async fn stock(&self, sku: &str) -> i64 {
        sqlx::query("SELECT stock FROM inventory WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.db)
            .await
            .unwrap()
            .get(0)
    }

    pub async fn set_stock(&self, sku: &str, stock: i64) {
        let done = sqlx::query("UPDATE inventory SET stock = $1 WHERE sku = $2")
            .bind(stock)
            .bind(sku)
            .execute(&self.db)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1, "{sku} exists");
    }

    /// Polls `check` until it holds (or panics after 15 s).
    pub async fn eventually<F, Fut>(&self, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !check().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Cancels the shutdown token and waits until the service has stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let running = self.running.take().expect("running");
        tokio::time::timeout(TIMEOUT, running.wait())
            .await
            .expect("the service stops within 30 s")
            .expect("the service stops cleanly");
        self.db.close().await;
    }
}

pub async fn count(db: &AnyPool, table: &str) -> i64 {
    sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(db)
        .await
        .unwrap()
        .get(0)
}

/// The value of an unlabelled sample in a Prometheus text body.
pub fn sample(metrics_text: &str, name: &str) -> Option<f64> {
    metrics_text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// The PostgreSQL server to test against (`TEST_DATABASE_URL`), or `None` with a note when it
/// is not configured. With `FAULTLINE_REQUIRE_EXTERNAL_TESTS` set, a missing server is a
/// failure: CI must never skip silently.
pub fn postgres_url() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("FAULTLINE_REQUIRE_EXTERNAL_TESTS").is_none(),
                "FAULTLINE_REQUIRE_EXTERNAL_TESTS is set but TEST_DATABASE_URL is not: \
                 set it to a PostgreSQL URL such as postgres://postgres@127.0.0.1:5432/test"
            );
            eprintln!(
                "note: TEST_DATABASE_URL is not set; skipping the PostgreSQL part of this test"
            );
            None
        }
    }
}

/// A fresh PostgreSQL database for one test, dropped by [`PgDatabase::drop_database`].
pub struct PgDatabase {
    server_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    /// Creates `orders_test_<random>` on the server of `server_url`.
    pub async fn create(server_url: &str) -> PgDatabase {
        let name = format!("orders_test_{}", uuid::Uuid::new_v4().simple());
        let admin = connect(server_url).await;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("CREATE DATABASE (does the test role have CREATEDB?)");
        admin.close().await;
        PgDatabase {
            server_url: server_url.to_owned(),
            url: with_database(server_url, &name),
            name,
        }
    }

    /// Runs `test` (in its own task, so that a failing assertion is caught), drops the
    /// database whatever happened, then passes the failure on.
    pub async fn run<Fut, T>(self, test: Fut) -> T
    where
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let outcome = tokio::spawn(test).await;
        self.drop_database().await;
        match outcome {
            Ok(value) => value,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    pub async fn drop_database(self) {
        let admin = connect(&self.server_url).await;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&admin)
        .await
        .expect("DROP DATABASE");
        admin.close().await;
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}
