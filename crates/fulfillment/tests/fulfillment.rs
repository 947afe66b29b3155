//! The worker end to end: a real SQLite queue and database in a temp dir, a fake orders
//! service, and the service started on port 0.

mod support;

use std::time::Duration;

use support::{FakeOrders, Options, eventually, free_addr, new_id, start_service};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_placed_order_is_shipped_once_and_reported_fulfilled() {
    let orders = FakeOrders::start().await;
    let service = start_service(Options::new(orders.url())).await;
    let order_id = new_id();
    service.publish_order("m-1", &order_id, "u-happy").await;

    eventually("orders to hear 'fulfilled'", WAIT, || async {
        orders.accepted(&order_id, "fulfilled") == 1
    })
    .await;
    service.drained().await;

    let shipments = service.shipments("u-happy").await;
    assert_eq!(shipments.len(), 1, "{shipments:?}");
    let shipment = &shipments[0];
    assert_eq!(shipment["order_id"], order_id.as_str());
    assert_eq!(shipment["user_id"], "u-happy");
    assert_eq!(
        shipment["items"],
        serde_json::json!([{"sku": "sku-1", "quantity": 2}])
    );
    assert!(uuid::Uuid::parse_str(shipment["shipment_id"].as_str().unwrap()).is_ok());
    let shipped_at = shipment["shipped_at"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(shipped_at, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "{shipped_at}"
    );

    // Nothing more happens later: one report, one shipment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(orders.reports().len(), 1, "{:?}", orders.reports());
    assert!(service.shipments("u-nobody").await.is_empty());
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_order_delivered_twice_ships_once() {
    let orders = FakeOrders::start().await;
    let service = start_service(Options::new(orders.url())).await;
    let order_id = new_id();
    // Two messages for one order (a relay that crashed after publishing, before marking its
    // outbox row sent, publishes it again under another id).
    service.publish_order("m-first", &order_id, "u-twice").await;
    service.publish_order("m-again", &order_id, "u-twice").await;

    eventually("both deliveries to be processed", WAIT, || async {
        orders.accepted(&order_id, "fulfilled") == 2
    })
    .await;
    service.drained().await;
    assert_eq!(service.shipments("u-twice").await.len(), 1);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_report_that_fails_after_shipping_is_redelivered_and_still_ships_once() {
    let orders = FakeOrders::start().await;
    // The first delivery's report fails on every attempt (1 + 3 retries): the message goes
    // back to the queue after the shipment was recorded.
    orders.fail_next(4);
    let service = start_service(Options::new(orders.url())).await;
    let order_id = new_id();
    service.publish_order("m-1", &order_id, "u-retry").await;

    eventually("orders to hear 'fulfilled'", WAIT, || async {
        orders.accepted(&order_id, "fulfilled") == 1
    })
    .await;
    service.drained().await;
    let reports = orders.reports();
    assert_eq!(
        reports.len(),
        5,
        "4 refused attempts then one accepted: {reports:?}"
    );
    assert_eq!(service.shipments("u-retry").await.len(), 1);
    assert_eq!(service.queue.dead_letters().await.unwrap(), 0);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_failed_report_is_retried_within_the_delivery() {
    let orders = FakeOrders::start().await;
    orders.fail_next(1);
    let service = start_service(Options::new(orders.url())).await;
    let order_id = new_id();
    service.publish_order("m-1", &order_id, "u-blip").await;
    eventually("orders to hear 'fulfilled'", WAIT, || async {
        orders.accepted(&order_id, "fulfilled") == 1
    })
    .await;
    assert_eq!(orders.reports().len(), 2);
    assert_eq!(service.shipments("u-blip").await.len(), 1);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_orders_is_down_messages_are_retried_and_none_is_lost_or_shipped_twice() {
    let orders_addr = free_addr().await;
    let mut orders = FakeOrders::default();
    let service = start_service(Options::new(format!("http://{orders_addr}"))).await;
    let order_ids: Vec<String> = (0..5).map(|_| new_id()).collect();
    for (i, order_id) in order_ids.iter().enumerate() {
        service
            .publish_order(&format!("m-{i}"), order_id, &format!("u-down-{i}"))
            .await;
    }

    // Orders is unreachable (connection refused) for a while: the deliveries fail and wait
    // for redelivery; nothing is acked.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(service.queue.pending().await.unwrap() > 0);
    orders.serve(orders_addr, false).await;

    eventually("every order to be reported fulfilled", WAIT, || async {
        order_ids
            .iter()
            .all(|id| orders.accepted(id, "fulfilled") == 1)
    })
    .await;
    service.drained().await;
    for i in 0..order_ids.len() {
        assert_eq!(
            service.shipments(&format!("u-down-{i}")).await.len(),
            1,
            "user u-down-{i}"
        );
    }
    assert_eq!(service.queue.dead_letters().await.unwrap(), 0);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_left_unacked_by_a_crashed_worker_is_redelivered_and_shipped_once() {
    let orders = FakeOrders::start().await;
    let dir = tempfile::tempdir().unwrap();
    let queue_url = support::queue_url(&dir);
    let order_id = new_id();

    // A worker that received the message and then died: its lease runs out after 300 ms.
    let crashed = support::queue_handle(&queue_url, Duration::from_millis(300)).await;
    crashed
        .publish(
            "orders.placed",
            "m-crash",
            &support::order_payload(&order_id, "u-crash"),
            &Default::default(),
        )
        .await
        .unwrap();
    let leased = crashed.receive(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(leased.len(), 1);
    drop(leased); // never settled, like a process killed mid-message

    let service = support::start_service_in(dir, Options::new(orders.url())).await;
    eventually("the redelivered order to be reported", WAIT, || async {
        orders.accepted(&order_id, "fulfilled") == 1
    })
    .await;
    service.drained().await;
    assert_eq!(service.shipments("u-crash").await.len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(orders.reports().len(), 1, "{:?}", orders.reports());
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_orders_does_not_know_is_dead_lettered_without_a_status_report() {
    let orders = FakeOrders::start().await;
    let order_id = new_id();
    orders.forget(&order_id);
    let service = start_service(Options::new(orders.url())).await;
    service.publish_order("m-1", &order_id, "u-unknown").await;
    let queue = service.queue.clone();
    eventually("the message to be dead-lettered", WAIT, || {
        let queue = queue.clone();
        async move { queue.dead_letters().await.unwrap() == 1 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One 404 (not retried), and no 'failed' report for an order orders does not have.
    let reports = orders.reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].answered, 404);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shipments_api_validates_ids_and_answers_problems() {
    let orders = FakeOrders::start().await;
    let service = start_service(Options::new(orders.url())).await;

    assert_eq!(
        service.shipments("u-empty").await,
        Vec::<serde_json::Value>::new()
    );

    let too_long = "a".repeat(65);
    for bad in ["a%20b", "a.b", too_long.as_str()] {
        let (status, body) = service.get(&format!("/users/{bad}/shipments")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["status"], 400);
        assert!(
            body["detail"].as_str().unwrap().contains("not valid"),
            "{body}"
        );
    }

    let (status, body) = service.get("/nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["title"], "Not found");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_most_fifty_shipments_are_listed_newest_first() {
    let orders = FakeOrders::start().await;
    let service = start_service(Options::new(orders.url())).await;
    for i in 0..55 {
        service
            .publish_order(&format!("m-{i}"), &format!("o-{i:02}"), "u-busy")
            .await;
    }
    service.drained().await;
    let shipments = service.shipments("u-busy").await;
    assert_eq!(shipments.len(), 50);
    let times: Vec<&str> = shipments
        .iter()
        .map(|s| s["shipped_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_reports_the_queue_until_it_can_be_reached() {
    let orders = FakeOrders::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A queue URL whose file cannot be created (its "directory" is a regular file).
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let config = fulfillment::Config {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        admin_listen_addr: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}/f.db", dir.path().display()),
        queue_url: format!("sqlite://{}/queue.db", blocker.display()),
        orders_url: orders.url(),
        workers: 2,
        orders_timeout: Duration::from_secs(1),
        max_deliveries: 5,
        ack_wait: Duration::from_secs(5),
        faults: fulfillment::fault_registry(&orders.url()),
        admin_token: None,
    };
    let shutdown = fulfillment::CancellationToken::new();
    let running = fulfillment::start(config, None, shutdown.clone())
        .await
        .expect("the service starts without its queue");

    let http = servicekit::client::HttpClient::new();
    let ready = http
        .get(
            &format!("http://{}/readyz", running.admin_addr),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(ready.status.as_u16(), 503);
    let body: serde_json::Value = ready.json().unwrap();
    assert_eq!(body["checks"]["database"], "ok");
    assert_ne!(body["checks"]["queue"], "ok");

    let healthy = http
        .get(
            &format!("http://{}/healthz", running.admin_addr),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(healthy.status.as_u16(), 200);
    // The app API works without the queue.
    let shipments = http
        .get(
            &format!("http://{}/users/u-1/shipments", running.app_addr),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(shipments.status.as_u16(), 200);

    shutdown.cancel();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_is_ok_once_database_and_queue_answer() {
    let orders = FakeOrders::start().await;
    let service = start_service(Options::new(orders.url())).await;
    eventually("/readyz to answer 200", WAIT, || async {
        service.admin_get("/readyz").await.0 == 200
    })
    .await;
    service.stop().await;
}
