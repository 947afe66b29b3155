//! Fifty customers race for the last twenty items: exactly twenty win, thirty are told "out of
//! stock", stock ends at zero and never goes below it, and each winner has exactly one order and
//! one outbox row. In both locking modes, on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL.
//!
//! The race runs with the `CHECK (stock >= 0)` constraint removed: the constraint is the last
//! line of defence and would hide a locking bug (an oversell would turn into a 409 instead of
//! negative stock). Here the locking alone must keep the stock right.

mod support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;
use orders::Locking;
use support::{Options, PgDatabase, TestService, start};

/// One race at a time, so that each can read its own number of conflicts off the process-wide
/// counter.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This test binary's global metrics recorder.
fn metrics() -> &'static telemetry::MetricsHandle {
    static HANDLE: OnceLock<telemetry::MetricsHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let (recorder, handle) = telemetry::metrics::local_recorder();
        metrics::set_global_recorder(recorder).expect("the only recorder in this binary");
        handle
    })
}

fn conflicts_so_far() -> f64 {
    support::sample(&metrics().render(), "orders_stock_conflicts_total").unwrap_or(0.0)
}

const CUSTOMERS: usize = 50;
const STOCK: i64 = 20;
const SKU: &str = "sku-1";

/// Runs the race and returns how many optimistic-locking conflicts it caused.
async fn fifty_customers_race_for_twenty_items(service: TestService) -> f64 {
    let conflicts_before = conflicts_so_far();
    remove_stock_constraint(&service).await;
    service.set_stock(SKU, STOCK).await;
    let service = Arc::new(service);

    // Watch the stock while the race runs: it must never be seen below zero.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = tokio::spawn({
        let service = service.clone();
        let watching = watching.clone();
        async move {
            let mut lowest = i64::MAX;
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                lowest = lowest.min(service.stock(SKU).await);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            lowest
        }
    });

    let start_line = Arc::new(tokio::sync::Barrier::new(CUSTOMERS));
    let customers: Vec<_> = (0..CUSTOMERS)
        .map(|n| {
            let service = service.clone();
            let start_line = start_line.clone();
            tokio::spawn(async move {
                start_line.wait().await;
                service.post_order(&format!("racer-{n}"), &[(SKU, 1)]).await
            })
        })
        .collect();
    let mut created = 0;
    let mut out_of_stock = 0;
    let mut other = Vec::new();
    for customer in customers {
        let response = customer.await.unwrap();
        match response.status {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => out_of_stock += 1,
            status => other.push(format!(
                "{status}: {}",
                String::from_utf8_lossy(&response.body)
            )),
        }
    }
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    let lowest_seen = watcher.await.unwrap();

    assert!(other.is_empty(), "unexpected answers: {other:#?}");
    assert_eq!(created, STOCK as usize, "exactly as many orders as items");
    assert_eq!(out_of_stock, CUSTOMERS - STOCK as usize);
    assert_eq!(service.stock(SKU).await, 0);
    assert!(lowest_seen >= 0, "stock was seen at {lowest_seen}");
    assert_eq!(service.count("orders").await, STOCK);
    assert_eq!(service.count("outbox").await, STOCK);
    let version: i64 = {
        use sqlx::Row;
        sqlx::query("SELECT version FROM inventory WHERE sku = $1")
            .bind(SKU)
            .fetch_one(&service.db)
            .await
            .unwrap()
            .get(0)
    };
    assert_eq!(
        version, STOCK,
        "one version bump per successful reservation"
    );

    let service = Arc::into_inner(service).expect("no other owner");
    service.stop().await;
    conflicts_so_far() - conflicts_before
}

/// Drops `CHECK (stock >= 0)` from `inventory`. PostgreSQL can drop a constraint; SQLite
/// cannot, so the table is rebuilt without it.
async fn remove_stock_constraint(service: &TestService) {
    let statements: &[&'static str] = if service.database_url.starts_with("sqlite:") {
        &[
            "CREATE TABLE inventory_unchecked (sku TEXT NOT NULL PRIMARY KEY, stock BIGINT NOT NULL, version BIGINT NOT NULL DEFAULT 0)",
            "INSERT INTO inventory_unchecked (sku, stock, version) SELECT sku, stock, version FROM inventory",
            "DROP TABLE inventory",
            "ALTER TABLE inventory_unchecked RENAME TO inventory",
        ]
    } else {
        &["ALTER TABLE inventory DROP CONSTRAINT inventory_stock_check"]
    };
    let negative = sqlx::query("UPDATE inventory SET stock = -1 WHERE sku = 'sku-10'")
        .execute(&service.db)
        .await;
    assert!(
        negative.is_err(),
        "the schema refuses negative stock (last line of defence)"
    );
    let mut tx = service.db.begin().await.unwrap();
    for statement in statements {
        sqlx::query(*statement).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    let negative = sqlx::query("UPDATE inventory SET stock = -1 WHERE sku = 'sku-10'")
        .execute(&service.db)
        .await;
    assert!(negative.is_ok(), "the constraint is gone: {negative:?}");
}

fn options(locking: Locking) -> Options {
    Options {
        locking,
        metrics: Some(metrics().clone()),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn optimistic_locking_on_sqlite_sells_exactly_the_stock() {
    let _serial = SERIAL.lock().await;
    let conflicts =
        fifty_customers_race_for_twenty_items(start(options(Locking::Optimistic)).await).await;
    // The race is real: concurrent transactions did collide and were retried.
    assert!(conflicts > 0.0, "no conflicts: the customers did not race");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pessimistic_locking_on_sqlite_sells_exactly_the_stock() {
    let _serial = SERIAL.lock().await;
    let conflicts =
        fifty_customers_race_for_twenty_items(start(options(Locking::Pessimistic)).await).await;
    assert_eq!(
        conflicts, 0.0,
        "with the lock taken first, nobody conflicts"
    );
}

async fn on_postgres(locking: Locking) -> Option<f64> {
    let server = support::postgres_url()?;
    let _serial = SERIAL.lock().await;
    let database = PgDatabase::create(&server).await;
    let service = start(Options {
        database_url: Some(database.url.clone()),
        ..options(locking)
    })
    .await;
    let conflicts = database
        .run(async move {
            assert_eq!(
                service.count("inventory").await,
                10,
                "a fresh database is seeded"
            );
            fifty_customers_race_for_twenty_items(service).await
        })
        .await;
    Some(conflicts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn optimistic_locking_on_postgres_sells_exactly_the_stock() {
    if let Some(conflicts) = on_postgres(Locking::Optimistic).await {
        assert!(conflicts > 0.0, "no conflicts: the customers did not race");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pessimistic_locking_on_postgres_sells_exactly_the_stock() {
    if let Some(conflicts) = on_postgres(Locking::Pessimistic).await {
        assert_eq!(
            conflicts, 0.0,
            "with the row locked first, nobody conflicts"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_that_keeps_conflicting_gets_503_and_writes_nothing() {
    let _serial = SERIAL.lock().await;
    let conflicts_before = conflicts_so_far();
    let service = Arc::new(
        start(Options {
            max_conflict_retries: 0,
            ..options(Locking::Optimistic)
        })
        .await,
    );
    let start_line = Arc::new(tokio::sync::Barrier::new(CUSTOMERS));
    let customers: Vec<_> = (0..CUSTOMERS)
        .map(|n| {
            let service = service.clone();
            let start_line = start_line.clone();
            tokio::spawn(async move {
                start_line.wait().await;
                service.post_order(&format!("racer-{n}"), &[(SKU, 1)]).await
            })
        })
        .collect();
    let mut created = 0;
    let mut gave_up = 0;
    for customer in customers {
        let response = customer.await.unwrap();
        match response.status {
            StatusCode::CREATED => created += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                gave_up += 1;
                let problem: serde_json::Value = response.json().unwrap();
                assert_eq!(problem["title"], "contention, retry");
                assert_eq!(response.headers[http::header::RETRY_AFTER], "1");
            }
            status => panic!("{status}: {}", String::from_utf8_lossy(&response.body)),
        }
    }
    assert!(
        gave_up > 0,
        "with no retries allowed, some of 50 racers give up"
    );
    assert!(conflicts_so_far() - conflicts_before >= f64::from(gave_up));
    assert_eq!(service.count("orders").await, i64::from(created));
    assert_eq!(service.count("outbox").await, i64::from(created));
    assert_eq!(service.stock(SKU).await, 10_000 - i64::from(created));
    Arc::into_inner(service).unwrap().stop().await;
}
