//! The behaviour suite against the embedded SQLite queue (always runs, in a temporary
//! directory), plus SQLite-specific behaviour: durability across reopen, leases that expire
//! mid-processing, connect errors.

mod common;

use std::time::Duration;

use common::{ACK_WAIT, PATIENCE};
use queue::{Outcome, ProcessError, Queue, QueueConfig, QueueError};
use tempfile::TempDir;

/// A fresh queue file (in a directory that does not exist yet) with the suite's ack wait.
fn fresh() -> (TempDir, QueueConfig) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested").join("queue.db");
    let mut config = QueueConfig::new(format!("sqlite://{}", path.display()));
    config.ack_wait = ACK_WAIT;
    (dir, config)
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_dir, config) = fresh();
                common::$name(config).await;
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
async fn system_is_sqlite() {
    let (_dir, config) = fresh();
    let queue = Queue::connect(config).await.unwrap();
    assert_eq!(queue.system(), "sqlite");
}

/// Messages survive the process; a lease held by a "crashed" process expires and the message
/// goes to the next one.
#[tokio::test]
async fn messages_survive_reopen_and_crashed_leases_expire() {
    let (_dir, config) = fresh();
    {
        let queue = Queue::connect(config.clone()).await.unwrap();
        queue
            .publish(&config.subject, "durable", b"kept", &Default::default())
            .await
            .unwrap();
        queue
            .publish(&config.subject, "leased", b"held", &Default::default())
            .await
            .unwrap();
        let held = queue.receive(1, PATIENCE).await.unwrap();
        assert_eq!(held[0].message().message_id, "durable");
        // The process dies holding the lease.
    }
    let queue = Queue::connect(config.clone()).await.unwrap();
    assert_eq!(queue.pending().await.unwrap(), 2);
    let mut first = queue.receive(10, PATIENCE).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].message().message_id, "leased");
    let outcome = queue
        .process(first.pop().unwrap(), Duration::ZERO, |_| async { Ok(()) })
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Acked);
    let again = queue.receive(10, PATIENCE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message().message_id, "durable");
    assert_eq!(again[0].message().delivery_count, 2);
    assert_eq!(again[0].message().payload, b"kept");
}

/// A consumer that outlives its lease cannot nack or dead-letter over the newer delivery.
#[tokio::test]
async fn settling_after_the_lease_expired_is_refused() {
    let (_dir, config) = fresh();
    let queue = Queue::connect(config.clone()).await.unwrap();
    queue
        .publish(&config.subject, "slow", b"x", &Default::default())
        .await
        .unwrap();
    let stale = queue.receive(1, PATIENCE).await.unwrap().pop().unwrap();
    let fresh = queue.receive(1, PATIENCE).await.unwrap().pop().unwrap();
    assert_eq!(fresh.message().delivery_count, 2);

    let err = queue
        .process(stale, Duration::ZERO, |_| async {
            Err(ProcessError::Fatal("late".into()))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::LeaseExpired { .. }), "{err}");
    assert_eq!(queue.dead_letters().await.unwrap(), 0);

    let outcome = queue
        .process(fresh, Duration::ZERO, |_| async { Ok(()) })
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Acked);
    assert_eq!(queue.pending().await.unwrap(), 0);
}

#[tokio::test]
async fn connect_errors_name_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"file").unwrap();
    let url = format!("sqlite://{}/queue.db", blocker.display());
    let err = Queue::connect(QueueConfig::new(url.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&url), "{err}");

    let not_sqlite = dir.path().join("garbage.db");
    std::fs::write(&not_sqlite, vec![7u8; 8192]).unwrap();
    let url = format!("sqlite://{}", not_sqlite.display());
    let err = Queue::connect(QueueConfig::new(url.clone()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&url), "{err}");

    let err = Queue::connect(QueueConfig::new("kafka://localhost:9092"))
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::InvalidUrl { .. }), "{err}");
    assert!(err.to_string().contains("sqlite://"), "{err}");

    let mut config = QueueConfig::new(format!("sqlite://{}/q.db", dir.path().display()));
    config.subject = "orders.*".into();
    let err = Queue::connect(config).await.unwrap_err();
    assert!(matches!(err, QueueError::InvalidConfig(_)), "{err}");
}

/// Connecting twice (and from two handles at once) is idempotent.
#[tokio::test]
async fn connect_is_idempotent_and_concurrent() {
    let (_dir, config) = fresh();
    let handles: Vec<_> = (0..4)
        .map(|_| tokio::spawn(Queue::connect(config.clone())))
        .collect();
    for h in handles {
        h.await.unwrap().expect("concurrent connect");
    }
    let queue = Queue::connect(config).await.unwrap();
    queue.ready().await.unwrap();
}
