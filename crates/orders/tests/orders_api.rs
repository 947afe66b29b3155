//! The orders HTTP API against a real service (SQLite database, SQLite queue): placing,
//! reading and updating orders, what reaches the queue, and every kind of bad request.

mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;
use support::{Options, PgDatabase, TestService, start};

/// Runs `scenario` against a service on SQLite (`…_on_sqlite`) and on PostgreSQL
/// (`…_on_postgres`, with `TEST_DATABASE_URL`): the same SQL must behave the same on both.
macro_rules! on_both_backends {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_sqlite() {
                super::on_sqlite(super::$scenario).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_postgres() {
                super::on_postgres(super::$scenario).await;
            }
        }
    };
}

async fn on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(TestService) -> Fut,
    Fut: Future<Output = ()>,
{
    scenario(start(Options::default()).await).await;
}

async fn on_postgres<F, Fut>(scenario: F)
where
    F: FnOnce(TestService) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(server) = support::postgres_url() else {
        return;
    };
    let database = PgDatabase::create(&server).await;
    let service = start(Options {
        database_url: Some(database.url.clone()),
        ..Options::default()
    })
    .await;
    database.run(scenario(service)).await;
}

fn json(response: &servicekit::client::HttpResponse) -> Value {
    response.json().unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&response.body)
        )
    })
}

fn assert_problem(response: &servicekit::client::HttpResponse, status: StatusCode, case: &str) {
    assert_eq!(
        response.status,
        status,
        "{case}: {}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response.headers[http::header::CONTENT_TYPE],
        "application/problem+json",
        "{case}"
    );
    let body = json(response);
    assert_eq!(body["status"], status.as_u16(), "{case}: {body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{case}: {body}"
    );
}

on_both_backends!(a_placed_order_is_stored_accepted_and_published_to_the_queue);
async fn a_placed_order_is_stored_accepted_and_published_to_the_queue(service: TestService) {
    assert_eq!(
        service.stock("sku-3").await,
        10_000,
        "fresh databases are seeded"
    );
    assert_eq!(service.count("inventory").await, 10);

    let placed = service
        .post_order("u-1", &[("sku-3", 2), ("sku-7", 1)])
        .await;
    assert_eq!(
        placed.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&placed.body)
    );
    let body = json(&placed);
    assert_eq!(body["status"], "accepted");
    let order_id = body["order_id"].as_str().expect("order_id").to_owned();
    uuid::Uuid::parse_str(&order_id).expect("the order id is a UUID");
    assert_eq!(
        placed.headers[http::header::LOCATION],
        format!("/orders/{order_id}").as_str()
    );

    let fetched = service.get(&format!("/orders/{order_id}")).await;
    assert_eq!(fetched.status, StatusCode::OK);
    let order = json(&fetched);
    assert_eq!(order["order_id"], order_id.as_str());
    assert_eq!(order["user_id"], "u-1");
    assert_eq!(order["status"], "accepted");
    assert_eq!(
        order["items"],
        serde_json::json!([{"sku": "sku-3", "quantity": 2}, {"sku": "sku-7", "quantity": 1}])
    );
    for field in ["created_at", "updated_at"] {
        let ts = order[field].as_str().expect(field);
        assert!(ts.ends_with('Z'), "{field} is UTC: {ts}");
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{field} {ts} is RFC 3339: {e}"));
    }
    assert_eq!(service.stock("sku-3").await, 9_998);
    assert_eq!(service.stock("sku-7").await, 9_999);

    // The relay publishes the outbox row: a consumer of orders.placed receives the event.
    let queue = queue::Queue::connect(queue::QueueConfig::new(service.queue_url.clone()))
        .await
        .expect("queue");
    let deliveries = queue
        .receive(10, Duration::from_secs(10))
        .await
        .expect("receive");
    assert_eq!(deliveries.len(), 1, "exactly one event for one order");
    let message = deliveries[0].message();
    assert_eq!(message.subject, "orders.placed");
    let event: Value = serde_json::from_slice(&message.payload).expect("JSON payload");
    assert_eq!(event["order_id"], order_id.as_str());
    assert_eq!(event["user_id"], "u-1");
    assert_eq!(event["items"], order["items"]);
    assert_eq!(event["placed_at"], order["created_at"]);

    service
        .eventually("the outbox row is marked sent", || async {
            service.unsent().await == 0
        })
        .await;
    assert_eq!(service.count("outbox").await, 1);
    let (sent_at, attempts): (Option<String>, i64) = {
        use sqlx::Row;
        let row = sqlx::query("SELECT sent_at, attempts FROM outbox")
            .fetch_one(&service.db)
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(sent_at.is_some());
    assert_eq!(attempts, 1);

    let ready = service.admin_get("/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    service.stop().await;
}

on_both_backends!(bad_requests_get_the_right_problem_and_write_nothing);
async fn bad_requests_get_the_right_problem_and_write_nothing(service: TestService) {
    service.set_stock("sku-2", 3).await;
    let before = (
        service.count("orders").await,
        service.count("outbox").await,
        service.stock("sku-1").await,
        service.stock("sku-2").await,
    );

    let oversized = serde_json::to_vec(&serde_json::json!({
        "user_id": "u-1",
        "items": [{"sku": "sku-1", "quantity": 1}],
        "padding": "x".repeat(20 * 1024),
    }))
    .unwrap();
    let too_many: Vec<Value> = (1..=21)
        .map(|n| serde_json::json!({"sku": format!("s-{n}"), "quantity": 1}))
        .collect();
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        ("malformed JSON", b"{\"user_id\": ".to_vec(), StatusCode::BAD_REQUEST),
        (
            "missing items",
            br#"{"user_id":"u-1"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "missing user_id",
            br#"{"items":[{"sku":"sku-1","quantity":1}]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "quantity not a number",
            br#"{"user_id":"u-1","items":[{"sku":"sku-1","quantity":"two"}]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "zero quantity",
            br#"{"user_id":"u-1","items":[{"sku":"sku-1","quantity":0}]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "negative quantity",
            br#"{"user_id":"u-1","items":[{"sku":"sku-1","quantity":-3}]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "quantity above 1000",
            br#"{"user_id":"u-1","items":[{"sku":"sku-1","quantity":1001}]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "no items",
            br#"{"user_id":"u-1","items":[]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "21 different SKUs",
            serde_json::to_vec(&serde_json::json!({"user_id": "u-1", "items": too_many})).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "user id with a space",
            br#"{"user_id":"u 1","items":[{"sku":"sku-1","quantity":1}]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown SKU (after a valid one: the first reservation is rolled back)",
            br#"{"user_id":"u-1","items":[{"sku":"sku-1","quantity":1},{"sku":"sku-999","quantity":1}]}"#
                .to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "more than in stock (after a valid one)",
            br#"{"user_id":"u-1","items":[{"sku":"sku-1","quantity":1},{"sku":"sku-2","quantity":4}]}"#
                .to_vec(),
            StatusCode::CONFLICT,
        ),
        ("oversized body", oversized, StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (case, body, status) in cases {
        let response = service.send_raw(Method::POST, "/orders", body).await;
        assert_problem(&response, status, case);
    }
    let out_of_stock = service.post_order("u-1", &[("sku-2", 4)]).await;
    assert_eq!(json(&out_of_stock)["title"], "Out of stock");

    assert_problem(
        &service.get("/orders/not-a-uuid").await,
        StatusCode::BAD_REQUEST,
        "non-UUID order id",
    );
    assert_problem(
        &service
            .get(&format!("/orders/{}", uuid::Uuid::new_v4()))
            .await,
        StatusCode::NOT_FOUND,
        "unknown order id",
    );
    assert_problem(
        &service.get("/nowhere").await,
        StatusCode::NOT_FOUND,
        "unknown route",
    );

    let after = (
        service.count("orders").await,
        service.count("outbox").await,
        service.stock("sku-1").await,
        service.stock("sku-2").await,
    );
    assert_eq!(
        before, after,
        "(orders, outbox rows, stock sku-1, stock sku-2)"
    );
    service.stop().await;
}

on_both_backends!(a_sku_listed_twice_is_one_line_with_the_summed_quantity);
async fn a_sku_listed_twice_is_one_line_with_the_summed_quantity(service: TestService) {
    let placed = service
        .post_order("u-2", &[("sku-1", 2), ("sku-1", 3)])
        .await;
    assert_eq!(placed.status, StatusCode::CREATED);
    let id = json(&placed)["order_id"].as_str().unwrap().to_owned();
    let order = json(&service.get(&format!("/orders/{id}")).await);
    assert_eq!(
        order["items"],
        serde_json::json!([{"sku": "sku-1", "quantity": 5}])
    );
    assert_eq!(service.stock("sku-1").await, 9_995);
    service.stop().await;
}

on_both_backends!(status_reports_are_idempotent_and_final_statuses_never_flip);
async fn status_reports_are_idempotent_and_final_statuses_never_flip(service: TestService) {
    let mut ids = Vec::new();
    for _ in 0..2 {
        let placed = service.post_order("u-3", &[("sku-4", 1)]).await;
        assert_eq!(placed.status, StatusCode::CREATED);
        ids.push(json(&placed)["order_id"].as_str().unwrap().to_owned());
    }
    let (a, b) = (&ids[0], &ids[1]);

    let first = service.put_status(a, "fulfilled").await;
    assert_eq!(first.status, StatusCode::OK);
    let first = json(&first);
    assert_eq!(first["status"], "fulfilled");
    assert_eq!(first["order_id"], a.as_str());
    assert!(
        first["updated_at"].as_str() >= first["created_at"].as_str(),
        "{first}"
    );

    let again = service.put_status(a, "fulfilled").await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "the same report again is fine"
    );
    assert_eq!(
        json(&again),
        first,
        "and changes nothing, not even updated_at"
    );

    assert_problem(
        &service.put_status(a, "failed").await,
        StatusCode::CONFLICT,
        "fulfilled → failed",
    );
    assert_eq!(
        json(&service.get(&format!("/orders/{a}")).await)["status"],
        "fulfilled"
    );

    assert_eq!(service.put_status(b, "failed").await.status, StatusCode::OK);
    assert_eq!(service.put_status(b, "failed").await.status, StatusCode::OK);
    assert_problem(
        &service.put_status(b, "fulfilled").await,
        StatusCode::CONFLICT,
        "failed → fulfilled",
    );

    for bad in ["accepted", "shipped", ""] {
        assert_problem(
            &service.put_status(a, bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            bad,
        );
    }
    assert_problem(
        &service
            .put_status(&uuid::Uuid::new_v4().to_string(), "fulfilled")
            .await,
        StatusCode::NOT_FOUND,
        "unknown order",
    );
    assert_problem(
        &service.put_status("123", "fulfilled").await,
        StatusCode::BAD_REQUEST,
        "non-UUID id",
    );
    service.stop().await;
}

on_both_backends!(a_users_orders_are_listed_newest_first_and_at_most_fifty);
async fn a_users_orders_are_listed_newest_first_and_at_most_fifty(service: TestService) {
    let mut placed = Vec::new();
    for _ in 0..52 {
        let response = service.post_order("u-many", &[("sku-5", 1)]).await;
        assert_eq!(response.status, StatusCode::CREATED);
        placed.push(json(&response)["order_id"].as_str().unwrap().to_owned());
    }
    service.post_order("someone-else", &[("sku-5", 1)]).await;

    let listed = service.get("/users/u-many/orders").await;
    assert_eq!(listed.status, StatusCode::OK);
    let listed = json(&listed);
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    let newest_fifty: Vec<&str> = placed.iter().rev().take(50).map(String::as_str).collect();
    assert_eq!(listed, newest_fifty);

    let none = service.get("/users/nobody/orders").await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(json(&none), serde_json::json!([]));
    service.stop().await;
}

on_both_backends!(the_admin_listener_serves_health_and_readiness);
async fn the_admin_listener_serves_health_and_readiness(service: TestService) {
    assert_eq!(service.admin_get("/healthz").await.status, StatusCode::OK);
    service
        .eventually("the queue is connected and /readyz is 200", || async {
            service.admin_get("/readyz").await.status == StatusCode::OK
        })
        .await;
    let ready = json(&service.admin_get("/readyz").await);
    assert_eq!(ready["checks"]["database"], "ok");
    assert_eq!(ready["checks"]["queue"], "ok");
    service.stop().await;
}
