//! The queue is down: orders are still accepted, their events wait in the outbox
//! (`orders_outbox_pending_messages` grows, `/readyz` names the queue), and once a working
//! queue is there every one of them is published. No order is lost.
//!
//! This binary installs the process-wide metrics recorder, so it holds one test only.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use http::StatusCode;
use support::{Options, sample, start_in, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_placed_while_the_queue_is_down_are_published_once_it_is_back() {
    let (recorder, metrics) = telemetry::metrics::local_recorder();
    metrics::set_global_recorder(recorder).expect("the only recorder in this binary");
    let dir = temp_dir();

    // Nothing listens on port 1.
    let service = start_in(
        dir.clone(),
        Options {
            queue_url: Some("nats://127.0.0.1:1".to_owned()),
            metrics: Some(metrics.clone()),
            ..Options::default()
        },
    )
    .await;
    let mut placed = BTreeSet::new();
    for n in 0..5 {
        let response = service.post_order(&format!("u-{n}"), &[("sku-9", 1)]).await;
        assert_eq!(
            response.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        let body: serde_json::Value = response.json().unwrap();
        placed.insert(body["order_id"].as_str().unwrap().to_owned());
    }
    service
        .eventually("the pending gauge shows the 5 waiting events", || async {
            let text = service.admin_get("/metrics").await;
            sample(
                &String::from_utf8_lossy(&text.body),
                "orders_outbox_pending_messages",
            ) == Some(5.0)
        })
        .await;
    assert_eq!(service.unsent().await, 5, "all five rows are kept, unsent");
    let ready = service.admin_get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let ready: serde_json::Value = ready.json().unwrap();
    assert_eq!(ready["checks"]["database"], "ok");
    assert_ne!(ready["checks"]["queue"], "ok", "{ready}");
    service.stop().await;

    // Same database, a queue that works.
    let service = start_in(
        dir.clone(),
        Options {
            metrics: Some(metrics.clone()),
            ..Options::default()
        },
    )
    .await;
    service
        .eventually("every waiting event is published", || async {
            service.unsent().await == 0
        })
        .await;
    service
        .eventually("the pending gauge is back to 0", || async {
            let text = service.admin_get("/metrics").await;
            sample(
                &String::from_utf8_lossy(&text.body),
                "orders_outbox_pending_messages",
            ) == Some(0.0)
        })
        .await;

    let queue = queue::Queue::connect(queue::QueueConfig::new(service.queue_url.clone()))
        .await
        .unwrap();
    let mut received = BTreeSet::new();
    while received.len() < placed.len() {
        let deliveries = queue.receive(10, Duration::from_secs(5)).await.unwrap();
        assert!(
            !deliveries.is_empty(),
            "only {} of 5 events arrived",
            received.len()
        );
        for delivery in deliveries {
            let event: serde_json::Value =
                serde_json::from_slice(&delivery.message().payload).unwrap();
            assert!(
                received.insert(event["order_id"].as_str().unwrap().to_owned()),
                "no event twice"
            );
        }
    }
    assert_eq!(received, placed, "every accepted order reached the queue");
    service.stop().await;
}
