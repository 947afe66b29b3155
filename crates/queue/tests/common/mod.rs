//! The behaviour suite shared by the SQLite and NATS test binaries. Every function takes a fresh
//! configuration (its own file / stream) with a short ack wait and panics on a failure.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use queue::{Delivery, Outcome, ProcessError, Queue, QueueConfig, QueueError};

/// The ack wait every suite configuration uses.
pub const ACK_WAIT: Duration = Duration::from_millis(400);
/// Long enough for anything that should arrive.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// The W3C propagator `telemetry::init` would install; the suite does not initialise telemetry.
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(telemetry::propagation::default_propagator());
}

pub async fn connect(config: &QueueConfig) -> Queue {
    Queue::connect(config.clone())
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", config.url))
}

async fn publish(queue: &Queue, id: &str, payload: &[u8]) {
    queue
        .publish(&queue.config().subject, id, payload, &BTreeMap::new())
        .await
        .unwrap_or_else(|e| panic!("publish {id}: {e}"));
}

async fn receive_one(queue: &Queue, wait: Duration) -> Delivery {
    let mut deliveries = queue.receive(1, wait).await.expect("receive");
    assert_eq!(deliveries.len(), 1, "expected one delivery within {wait:?}");
    deliveries.pop().unwrap()
}

async fn assert_nothing(queue: &Queue, wait: Duration) {
    let deliveries = queue.receive(10, wait).await.expect("receive");
    assert!(
        deliveries.is_empty(),
        "expected no delivery within {wait:?}, got {:?}",
        deliveries.iter().map(|d| d.message()).collect::<Vec<_>>()
    );
}

async fn ok(queue: &Queue, delivery: Delivery) -> Outcome {
    queue
        .process(delivery, Duration::ZERO, |_| async { Ok(()) })
        .await
        .expect("process")
}

async fn fail(queue: &Queue, delivery: Delivery, error: ProcessError, delay: Duration) -> Outcome {
    queue
        .process(delivery, delay, move |_| async move { Err(error) })
        .await
        .expect("process")
}

/// Publish → receive (all fields) → ack; then it is gone for good.
pub async fn publish_receive_ack(config: QueueConfig) {
    let queue = connect(&config).await;
    queue.ready().await.expect("ready");
    assert_eq!(queue.pending().await.unwrap(), 0);

    publish(&queue, "m-1", b"{\"order_id\":1}").await;
    assert_eq!(queue.pending().await.unwrap(), 1);

    let started = Instant::now();
    let delivery = receive_one(&queue, PATIENCE).await;
    assert!(started.elapsed() < Duration::from_secs(2), "slow receive");
    let message = delivery.message().clone();
    assert_eq!(message.message_id, "m-1");
    assert_eq!(message.subject, config.subject);
    assert_eq!(message.payload, b"{\"order_id\":1}");
    assert_eq!(message.delivery_count, 1);

    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen_in = seen.clone();
    let outcome = queue
        .process(delivery, Duration::ZERO, move |m| async move {
            *seen_in.lock().unwrap() = Some(m);
            Ok(())
        })
        .await
        .expect("process");
    assert_eq!(outcome, Outcome::Acked);
    assert_eq!(seen.lock().unwrap().as_ref(), Some(&message));
    assert_eq!(queue.pending().await.unwrap(), 0);
    assert_eq!(queue.dead_letters().await.unwrap(), 0);
    // Not redelivered, even after the ack wait.
    assert_nothing(&queue, ACK_WAIT * 2).await;
}

/// `receive` waits for a message published while it waits, and returns empty after `wait`.
pub async fn receive_waits(config: QueueConfig) {
    let queue = connect(&config).await;
    let started = Instant::now();
    assert_nothing(&queue, Duration::from_millis(300)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "returned after {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "returned after {waited:?}");

    let publisher = queue.clone();
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        publish(&publisher, "late", b"x").await;
    });
    let started = Instant::now();
    let delivery = receive_one(&queue, PATIENCE).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(delivery.message().message_id, "late");
    task.await.unwrap();
    assert_eq!(ok(&queue, delivery).await, Outcome::Acked);
}

/// Several messages in one receive, oldest first, capped at `max`.
pub async fn receive_batches(config: QueueConfig) {
    let queue = connect(&config).await;
    for i in 0..5 {
        publish(&queue, &format!("b-{i}"), format!("{i}").as_bytes()).await;
    }
    let first = queue.receive(3, PATIENCE).await.unwrap();
    assert_eq!(
        first
            .iter()
            .map(|d| d.message().message_id.as_str())
            .collect::<Vec<_>>(),
        ["b-0", "b-1", "b-2"]
    );
    let rest = queue.receive(10, PATIENCE).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(queue.pending().await.unwrap(), 5);
    for d in first.into_iter().chain(rest) {
        assert_eq!(ok(&queue, d).await, Outcome::Acked);
    }
    assert_eq!(queue.pending().await.unwrap(), 0);
    assert!(queue.receive(0, PATIENCE).await.unwrap().is_empty());
}

/// Publishing the same message id twice stores one message (the first).
pub async fn dedup_on_message_id(config: QueueConfig) {
    let queue = connect(&config).await;
    publish(&queue, "dup", b"first").await;
    publish(&queue, "dup", b"second").await;
    assert_eq!(queue.pending().await.unwrap(), 1);
    let delivery = receive_one(&queue, PATIENCE).await;
    assert_eq!(delivery.message().payload, b"first");
    assert_eq!(ok(&queue, delivery).await, Outcome::Acked);
    // A late duplicate (a relay retrying after the consumer acked) is still ignored.
    publish(&queue, "dup", b"third").await;
    assert_eq!(queue.pending().await.unwrap(), 0);
    assert_nothing(&queue, Duration::from_millis(300)).await;
}

/// A delivery that is not settled becomes visible again after the ack wait.
pub async fn unacked_is_redelivered_after_ack_wait(config: QueueConfig) {
    let queue = connect(&config).await;
    publish(&queue, "lost", b"x").await;
    let first = receive_one(&queue, PATIENCE).await;
    assert_eq!(first.message().delivery_count, 1);
    let leased_at = Instant::now();
    drop(first); // the consumer "crashes"

    // Leased: invisible right now.
    assert_nothing(&queue, Duration::ZERO).await;
    assert_eq!(
        queue.pending().await.unwrap(),
        1,
        "in flight counts as pending"
    );

    let second = receive_one(&queue, PATIENCE).await;
    let after = leased_at.elapsed();
    assert!(
        after >= ACK_WAIT - Duration::from_millis(50),
        "redelivered after {after:?}, before the ack wait of {ACK_WAIT:?}"
    );
    assert_eq!(second.message().message_id, "lost");
    assert_eq!(second.message().delivery_count, 2);
    assert_eq!(ok(&queue, second).await, Outcome::Acked);
    assert_eq!(queue.pending().await.unwrap(), 0);
}

/// A `Retry` failure is redelivered after the retry delay, not before.
pub async fn nack_redelivers_after_delay(config: QueueConfig) {
    let queue = connect(&config).await;
    publish(&queue, "flaky", b"x").await;
    let delivery = receive_one(&queue, PATIENCE).await;
    let delay = Duration::from_millis(700);
    let nacked_at = Instant::now();
    let outcome = fail(
        &queue,
        delivery,
        ProcessError::Retry("db down".into()),
        delay,
    )
    .await;
    assert_eq!(outcome, Outcome::WillRetry);
    assert_eq!(queue.pending().await.unwrap(), 1);
    assert_nothing(&queue, Duration::from_millis(200)).await;

    let again = receive_one(&queue, PATIENCE).await;
    let after = nacked_at.elapsed();
    assert!(
        after >= delay - Duration::from_millis(50),
        "redelivered after {after:?}, before the retry delay of {delay:?}"
    );
    assert_eq!(again.message().delivery_count, 2);
    assert_eq!(ok(&queue, again).await, Outcome::Acked);
    assert_eq!(queue.dead_letters().await.unwrap(), 0);
}

/// `Retry` until `max_deliveries` → dead letter; readable on the dead-letter subject.
pub async fn retries_exhausted_dead_letter(mut config: QueueConfig) {
    config.max_deliveries = 3;
    let queue = connect(&config).await;
    publish(&queue, "poison", b"bad").await;
    let mut outcomes = Vec::new();
    for attempt in 1..=3u32 {
        let delivery = receive_one(&queue, PATIENCE).await;
        assert_eq!(delivery.message().delivery_count, attempt);
        outcomes.push(
            fail(
                &queue,
                delivery,
                ProcessError::Retry(format!("attempt {attempt}")),
                Duration::from_millis(10),
            )
            .await,
        );
    }
    assert_eq!(
        outcomes,
        [
            Outcome::WillRetry,
            Outcome::WillRetry,
            Outcome::DeadLettered
        ]
    );
    assert_eq!(queue.dead_letters().await.unwrap(), 1);
    assert_eq!(queue.pending().await.unwrap(), 0);
    assert_nothing(&queue, ACK_WAIT * 2).await;
    assert_dead_letter_readable(&config, "poison", b"bad").await;
}

/// `Fatal` → dead-lettered on the first delivery.
pub async fn fatal_dead_letters_at_once(config: QueueConfig) {
    let queue = connect(&config).await;
    publish(&queue, "malformed", b"???").await;
    let delivery = receive_one(&queue, PATIENCE).await;
    assert_eq!(delivery.message().delivery_count, 1);
    let outcome = fail(
        &queue,
        delivery,
        ProcessError::Fatal("not JSON".into()),
        Duration::ZERO,
    )
    .await;
    assert_eq!(outcome, Outcome::DeadLettered);
    assert_eq!(queue.dead_letters().await.unwrap(), 1);
    assert_eq!(queue.pending().await.unwrap(), 0);
    assert_nothing(&queue, ACK_WAIT * 2).await;
    assert_dead_letter_readable(&config, "malformed", b"???").await;
}

/// A message delivered `max_deliveries` times without ever being settled (its consumer
/// crashes) is dead-lettered instead of being delivered again.
pub async fn never_settled_is_dead_lettered(mut config: QueueConfig) {
    config.max_deliveries = 2;
    let queue = connect(&config).await;
    publish(&queue, "crasher", b"x").await;
    for attempt in 1..=2u32 {
        let delivery = receive_one(&queue, PATIENCE).await;
        assert_eq!(delivery.message().delivery_count, attempt);
        drop(delivery);
    }
    assert_eq!(queue.unsettled_dead_letters(), 0);
    assert_nothing(&queue, ACK_WAIT * 3).await;
    assert_eq!(queue.dead_letters().await.unwrap(), 1);
    assert_eq!(queue.pending().await.unwrap(), 0);
    assert_eq!(
        queue.unsettled_dead_letters(),
        1,
        "counted by the receive that moved it"
    );
}

/// Two handles (two processes) on the same queue: both see the messages, and concurrent
/// consumers never get the same message twice.
pub async fn two_handles_share_the_queue(config: QueueConfig) {
    let a = connect(&config).await;
    let b = connect(&config).await;
    publish(&a, "from-a", b"a").await;
    assert_eq!(b.pending().await.unwrap(), 1);
    let delivery = receive_one(&b, PATIENCE).await;
    assert_eq!(delivery.message().message_id, "from-a");
    assert_eq!(ok(&b, delivery).await, Outcome::Acked);
    assert_eq!(a.pending().await.unwrap(), 0);

    const N: usize = 30;
    for i in 0..N {
        let producer = if i % 2 == 0 { &a } else { &b };
        publish(producer, &format!("c-{i}"), b"x").await;
    }
    let consume = |queue: Queue| {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let batch = queue.receive(4, Duration::from_millis(300)).await.unwrap();
                if batch.is_empty() {
                    return seen;
                }
                for d in batch {
                    seen.push(d.message().message_id.clone());
                    assert_eq!(ok(&queue, d).await, Outcome::Acked);
                }
            }
        })
    };
    let (from_a, from_b) = (consume(a.clone()), consume(b.clone()));
    let (from_a, from_b) = (from_a.await.unwrap(), from_b.await.unwrap());
    let mut all: Vec<_> = from_a.iter().chain(&from_b).cloned().collect();
    let unique: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(
        all.len(),
        unique.len(),
        "a message was delivered twice: {all:?}"
    );
    all.sort();
    assert_eq!(unique.len(), N, "a: {from_a:?}, b: {from_b:?}");
    assert_eq!(a.pending().await.unwrap(), 0);
    assert_eq!(b.pending().await.unwrap(), 0);
}

/// `pending` counts waiting + in flight + waiting for a retry; dead letters move out of it.
pub async fn pending_counts(config: QueueConfig) {
    let queue = connect(&config).await;
    for i in 0..4 {
        publish(&queue, &format!("p-{i}"), b"x").await;
    }
    assert_eq!(queue.pending().await.unwrap(), 4);
    let mut deliveries = queue.receive(3, PATIENCE).await.unwrap();
    assert_eq!(deliveries.len(), 3);
    assert_eq!(queue.pending().await.unwrap(), 4, "in flight still pending");
    let third = deliveries.pop().unwrap();
    let second = deliveries.pop().unwrap();
    let first = deliveries.pop().unwrap();
    assert_eq!(ok(&queue, first).await, Outcome::Acked);
    assert_eq!(queue.pending().await.unwrap(), 3);
    let retry = ProcessError::Retry("later".into());
    assert_eq!(
        fail(&queue, second, retry, Duration::from_secs(30)).await,
        Outcome::WillRetry
    );
    assert_eq!(queue.pending().await.unwrap(), 3, "waiting for a retry");
    let fatal = ProcessError::Fatal("no".into());
    assert_eq!(
        fail(&queue, third, fatal, Duration::ZERO).await,
        Outcome::DeadLettered
    );
    assert_eq!(queue.pending().await.unwrap(), 2);
    assert_eq!(queue.dead_letters().await.unwrap(), 1);
}

/// The message carries the W3C context; without a recording tracer the parent context is
/// passed through, so the trace still continues.
pub async fn headers_carry_trace_context(config: QueueConfig) {
    install_propagator();
    let queue = connect(&config).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let parent = BTreeMap::from([
        ("traceparent".to_owned(), traceparent.to_owned()),
        ("baggage".to_owned(), "user=u-1".to_owned()),
    ]);
    queue
        .publish(&config.subject, "traced", b"x", &parent)
        .await
        .unwrap();
    let delivery = receive_one(&queue, PATIENCE).await;
    let headers = &delivery.message().headers;
    let got = headers.get("traceparent").expect("traceparent header");
    assert!(
        got.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{headers:?}"
    );
    assert_eq!(headers.get("baggage").map(String::as_str), Some("user=u-1"));
    assert!(
        headers.keys().all(|k| !k.starts_with("nats-")),
        "{headers:?}"
    );
    assert_eq!(ok(&queue, delivery).await, Outcome::Acked);
}

/// Invalid subjects and ids are refused before anything is stored.
pub async fn invalid_publish_is_refused(config: QueueConfig) {
    let queue = connect(&config).await;
    let empty = BTreeMap::new();
    for subject in ["", "orders..placed", "orders.*", "orders.>", "with space"] {
        let e = queue
            .publish(subject, "id", b"x", &empty)
            .await
            .unwrap_err();
        assert!(matches!(e, QueueError::InvalidConfig(_)), "{subject}: {e}");
    }
    let e = queue
        .publish(&config.subject, "", b"x", &empty)
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::InvalidConfig(_)), "{e}");
    assert_eq!(queue.pending().await.unwrap(), 0);
}

/// Reads the dead letter back through a consumer of the dead-letter subject.
async fn assert_dead_letter_readable(config: &QueueConfig, message_id: &str, payload: &[u8]) {
    let mut reader = config.clone();
    reader.subject = queue::dead_letter_subject(&config.subject);
    reader.consumer = format!("{}-dlq-reader", config.consumer);
    let reader = connect(&reader).await;
    let delivery = receive_one(&reader, PATIENCE).await;
    let message = delivery.message();
    assert_eq!(message.payload, payload);
    assert_eq!(message.subject, queue::dead_letter_subject(&config.subject));
    assert_eq!(
        message.delivery_count, 1,
        "a fresh message on the dead-letter subject"
    );
    let h = &message.headers;
    assert_eq!(
        h.get("faultline-original-message-id").map(String::as_str),
        Some(message_id),
        "{h:?}"
    );
    assert_eq!(
        h.get("faultline-original-subject"),
        Some(&config.subject),
        "{h:?}"
    );
    assert!(
        h.get("faultline-dead-letter-reason")
            .is_some_and(|r| !r.is_empty()),
        "{h:?}"
    );
    assert!(h.contains_key("faultline-delivery-count"), "{h:?}");
}
