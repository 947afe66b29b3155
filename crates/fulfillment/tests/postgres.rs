//! The ship-once guarantee on PostgreSQL (the compose database), against `TEST_DATABASE_URL`.
//!
//! Each run creates its own database (`fulfillment_test_<uuid>`) and drops it afterwards, even
//! when the test fails. Without `TEST_DATABASE_URL` the test is skipped with a note, unless
//! `FAULTLINE_REQUIRE_EXTERNAL_TESTS` is set (CI), where a skip would hide a gap: then it fails.

mod support;

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use support::{FakeOrders, Options, eventually, new_id, start_service};

const WAIT: Duration = Duration::from_secs(30);

/// `TEST_DATABASE_URL`, or `None` after printing why the test is skipped.
fn test_database_url() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(url) => Some(url),
        None if std::env::var_os("FAULTLINE_REQUIRE_EXTERNAL_TESTS").is_some() => panic!(
            "FAULTLINE_REQUIRE_EXTERNAL_TESTS is set but TEST_DATABASE_URL is not: set it to a PostgreSQL URL (e.g. postgres://postgres@127.0.0.1:5432/test) whose user may create databases"
        ),
        None => {
            eprintln!(
                "note: TEST_DATABASE_URL is not set; skipping the PostgreSQL test (set it to e.g. postgres://postgres@127.0.0.1:5432/test)"
            );
            None
        }
    }
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

async fn execute(url: &str, sql: String) {
    let mut conn = PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to TEST_DATABASE_URL: {e}"));
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .expect("admin statement");
    let _ = conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_an_order_ships_once_despite_redelivery_and_a_failed_report() {
    let Some(admin_url) = test_database_url() else {
        return;
    };
    let database = format!("fulfillment_test_{}", uuid::Uuid::new_v4().simple());
    execute(&admin_url, format!("CREATE DATABASE {database}")).await;
    let url = with_database(&admin_url, &database);

    // Run the scenario in its own task so that a failed assertion still reaches the cleanup.
    let outcome = tokio::spawn(scenario(url)).await;
    execute(
        &admin_url,
        format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
    )
    .await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn scenario(database_url: String) {
    let orders = FakeOrders::start().await;
    let mut options = Options::new(orders.url());
    options.database_url = Some(database_url);
    let service = start_service(options).await;

    // Delivered twice under two message ids.
    let twice = new_id();
    service.publish_order("m-1", &twice, "u-pg").await;
    service.publish_order("m-2", &twice, "u-pg").await;
    eventually("both deliveries to be reported", WAIT, || async {
        orders.accepted(&twice, "fulfilled") == 2
    })
    .await;

    // Shipped, then the report fails on every attempt: redelivered, shipped nothing new.
    orders.fail_next(4);
    let retried = new_id();
    service.publish_order("m-3", &retried, "u-pg").await;
    eventually("the retried order to be reported", WAIT, || async {
        orders.accepted(&retried, "fulfilled") == 1
    })
    .await;
    service.drained().await;

    let shipments = service.shipments("u-pg").await;
    assert_eq!(shipments.len(), 2, "{shipments:?}");
    assert_eq!(shipments[0]["order_id"], retried.as_str(), "newest first");
    assert_eq!(shipments[1]["order_id"], twice.as_str());
    service.stop().await;
}

#[test]
fn the_database_name_is_replaced_in_the_url() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/test?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
}
