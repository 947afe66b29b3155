//! The behaviour suite against NATS JetStream, when `TEST_NATS_URL` is set (e.g.
//! `nats://127.0.0.1:4222`, a server started with `-js`). Each test uses its own stream
//! (`TEST_<uuid>`, subjects `t<uuid>.>`) and deletes it afterwards.
//!
//! Without `TEST_NATS_URL` the tests print a note and pass, unless
//! `FAULTLINE_REQUIRE_EXTERNAL_TESTS` is set: then they fail, so CI never skips them silently.

mod common;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use common::ACK_WAIT;
use futures_util::FutureExt;
use queue::{Queue, QueueConfig, QueueError};

/// The NATS URL to test against, or `None` (after a note) when the tests should be skipped.
fn nats_url() -> Option<String> {
    match std::env::var("TEST_NATS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var_os("FAULTLINE_REQUIRE_EXTERNAL_TESTS").is_some() {
                panic!(
                    "FAULTLINE_REQUIRE_EXTERNAL_TESTS is set but TEST_NATS_URL is not: \
                     start nats-server -js and set TEST_NATS_URL=nats://127.0.0.1:4222"
                );
            }
            eprintln!("note: TEST_NATS_URL is not set; skipping the NATS JetStream queue tests");
            None
        }
    }
}

/// Runs `test` with a fresh stream/subject on the server, then deletes the stream (also when
/// the test panics).
async fn with_nats<F, Fut>(test: F)
where
    F: FnOnce(QueueConfig) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(url) = nats_url() else {
        return;
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut config = QueueConfig::new(url.clone());
    config.stream = format!("TEST_{id}");
    config.subject = format!("t{id}.placed");
    config.consumer = "fulfillment".to_owned();
    config.ack_wait = ACK_WAIT;
    let stream = config.stream.clone();

    let result = AssertUnwindSafe(test(config)).catch_unwind().await;

    let client = async_nats::connect(url.as_str())
        .await
        .expect("connect for cleanup");
    let js = async_nats::jetstream::new(client);
    if let Err(e) = js.delete_stream(&stream).await {
        eprintln!("note: could not delete test stream {stream}: {e}");
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                with_nats(common::$name).await;
            }
        )*
    };
}

suite!(
    publish_receive_ack,
    receive_waits,
    receive_batches,
    dedup_on_message_id,
    unacked_is_redelivered_after_ack_wait,
    nack_redelivers_after_delay,
    retries_exhausted_dead_letter,
    fatal_dead_letters_at_once,
    never_settled_is_dead_lettered,
    two_handles_share_the_queue,
    pending_counts,
    headers_carry_trace_context,
    invalid_publish_is_refused,
);

#[tokio::test]
async fn stream_and_consumer_are_created_idempotently() {
    with_nats(|config| async move {
        let queue = Queue::connect(config.clone()).await.expect("first connect");
        assert_eq!(queue.system(), "nats");
        queue.ready().await.expect("ready");
        // Again, with a changed ack wait: the durable consumer is updated, not refused.
        let mut changed = config.clone();
        changed.ack_wait = Duration::from_secs(2);
        let again = Queue::connect(changed).await.expect("second connect");
        again.ready().await.expect("ready");

        let client = async_nats::connect(config.url.as_str()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(&config.stream).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(
            info.config.subjects,
            [format!("{}.>", config.subject.split('.').next().unwrap())]
        );
        let consumer = stream.consumer_info(&config.consumer).await.unwrap();
        assert_eq!(consumer.config.filter_subject, config.subject);
        assert_eq!(consumer.config.ack_wait, Duration::from_secs(2));
        assert!(consumer.config.max_deliver > i64::from(config.max_deliveries));
    })
    .await;
}

/// An existing stream that does not hold the subject is reported, not silently used.
#[tokio::test]
async fn a_stream_without_the_subject_is_reported() {
    with_nats(|config| async move {
        let client = async_nats::connect(config.url.as_str()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("other{}.>", config.stream)],
            ..Default::default()
        })
        .await
        .unwrap();
        let err = Queue::connect(config.clone()).await.unwrap_err();
        assert!(matches!(err, QueueError::Setup { .. }), "{err}");
        assert!(err.to_string().contains(&config.subject), "{err}");
    })
    .await;
}

/// The dead-letter copy keeps the trace context and says why it was dead-lettered.
#[tokio::test]
async fn dead_letters_carry_reason_headers() {
    with_nats(|config| async move {
        common::install_propagator();
        let queue = Queue::connect(config.clone()).await.unwrap();
        let parent = std::collections::BTreeMap::from([(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        )]);
        queue
            .publish(&config.subject, "m-dlq", b"x", &parent)
            .await
            .unwrap();
        let d = queue
            .receive(1, common::PATIENCE)
            .await
            .unwrap()
            .pop()
            .unwrap();
        let outcome = queue
            .process(d, Duration::ZERO, |_| async {
                Err(queue::ProcessError::Fatal("unknown sku".into()))
            })
            .await
            .unwrap();
        assert_eq!(outcome, queue::Outcome::DeadLettered);

        let mut reader = config.clone();
        reader.subject = queue::dead_letter_subject(&config.subject);
        reader.consumer = "reader".into();
        let reader = Queue::connect(reader).await.unwrap();
        let d = reader
            .receive(1, common::PATIENCE)
            .await
            .unwrap()
            .pop()
            .unwrap();
        let h = &d.message().headers;
        assert_eq!(h["faultline-original-subject"], config.subject);
        assert_eq!(h["faultline-original-message-id"], "m-dlq");
        assert_eq!(h["faultline-delivery-count"], "1");
        assert!(
            h["faultline-dead-letter-reason"].contains("unknown sku"),
            "{h:?}"
        );
        assert!(h["traceparent"].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    })
    .await;
}

/// Runs without a server: a refused connection names the URL and suggests the fix.
#[tokio::test]
async fn connect_error_names_the_url_and_hints_at_jetstream() {
    let url = "nats://127.0.0.1:1";
    let err = Queue::connect(QueueConfig::new(url)).await.unwrap_err();
    assert!(matches!(err, QueueError::Connect { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(url), "{text}");
    assert!(text.contains("-js"), "{text}");

    let err = Queue::connect(QueueConfig::new("nats://user:secret@127.0.0.1:1"))
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
}
