//! Dead letters: poison payloads and messages that keep failing are moved to
//! `orders.placed.dlq` and counted in `fulfillment_dead_letters_total`.
//!
//! Its own test binary because it installs a global metrics recorder (the worker tasks run on
//! other threads, so a thread-local recorder would not see them).

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use support::{FakeOrders, Options, eventually, new_id, start_service};

const WAIT: Duration = Duration::from_secs(20);

fn metrics() -> telemetry::MetricsHandle {
    static HANDLE: OnceLock<telemetry::MetricsHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let (recorder, handle) = telemetry::metrics::local_recorder();
            metrics::set_global_recorder(recorder).expect("the only recorder in this binary");
            handle
        })
        .clone()
}

/// The value of an unlabelled counter or gauge in the Prometheus text, 0 if absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name).then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_counted_and_their_orders_reported() {
    let handle = metrics();
    let orders = FakeOrders::start().await;
    let mut options = Options::new(orders.url());
    options.max_deliveries = 2;
    options.metrics = Some(handle.clone());
    let service = start_service(options).await;
    let queue = service.queue.clone();
    let dead_letters = |n: u64| {
        let queue = queue.clone();
        async move { queue.dead_letters().await.unwrap() == n }
    };

    // 1. Not JSON at all: dead-lettered on its first delivery, nobody to tell.
    service.publish("m-poison", b"{not json").await;
    eventually("the poison message to be dead-lettered", WAIT, || {
        dead_letters(1)
    })
    .await;
    eventually("the counter to reach 1", WAIT, || async {
        sample(&handle.render(), fulfillment::DEAD_LETTERS) == 1.0
    })
    .await;
    assert!(orders.reports().is_empty(), "{:?}", orders.reports());
    let (status, body) = service.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(&body, "fulfillment_dead_letters_total"),
        1.0,
        "{body}"
    );

    // 2. Names an order but is not a valid event: dead-lettered, and the order reported failed.
    let broken = new_id();
    let payload = serde_json::json!({"order_id": broken, "user_id": "u-1", "items": []});
    service
        .publish("m-broken", &serde_json::to_vec(&payload).unwrap())
        .await;
    eventually("the invalid event to be dead-lettered", WAIT, || {
        dead_letters(2)
    })
    .await;
    eventually("orders to hear 'failed'", WAIT, || async {
        orders.accepted(&broken, "failed") == 1
    })
    .await;
    assert_eq!(sample(&handle.render(), fulfillment::DEAD_LETTERS), 2.0);

    // 3. A valid order whose status report keeps failing: retried until max_deliveries (2 ×
    //    4 attempts), then dead-lettered. It did ship, so orders is told 'fulfilled' (the
    //    9th request), never 'failed'.
    orders.fail_next(8);
    let shipped = new_id();
    service.publish_order("m-shipped", &shipped, "u-dlq").await;
    eventually("the undeliverable report to be dead-lettered", WAIT, || {
        dead_letters(3)
    })
    .await;
    eventually("orders to hear 'fulfilled' after all", WAIT, || async {
        orders.accepted(&shipped, "fulfilled") == 1
    })
    .await;
    assert_eq!(orders.accepted(&shipped, "failed"), 0);
    assert_eq!(service.shipments("u-dlq").await.len(), 1);
    assert_eq!(sample(&handle.render(), fulfillment::DEAD_LETTERS), 3.0);

    // The pending gauge is refreshed in the background (every 2 s) and is 0 now.
    service.drained().await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let text = handle.render();
    assert!(
        text.lines()
            .any(|l| l == "fulfillment_queue_pending_messages 0"),
        "{text}"
    );
    service.stop().await;
}
