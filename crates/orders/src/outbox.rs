//! The outbox relay: the background task that moves `orders.placed` rows from the outbox table
//! to the queue.
//!
//! An order and its event are written in one database transaction ([`crate::store`]); this
//! task publishes the event afterwards and only then marks the row sent. If the queue is down,
//! rows simply wait (the `orders_outbox_pending_messages` gauge grows) and the relay retries
//! with backoff; if the process dies between publishing and marking, the row is published again
//! on restart and the queue drops the duplicate (the outbox row id is the message id). So
//! every accepted order reaches the queue at least once, and fulfillment sees it once.
//!
//! The relay wakes as soon as a request commits an order (a [`Notify`]) and otherwise polls
//! every 500 ms (rows written by another instance, or left over from before a restart).
//! Each publish opens its PRODUCER span inside the queue crate, as a child of the trace context
//! stored in the row: the publish is part of the trace of the request that placed the order.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chaos::{FaultKind, Faults};
use queue::{Queue, QueueConfig, QueueError};
use servicekit::server::CancellationToken;
use tokio::sync::{Notify, OnceCell};

use crate::store::{OUTBOX_BATCH, OUTBOX_PENDING, Store};

/// How often the relay looks for rows when nothing woke it.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The first wait after a failure; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two attempts while the queue (or database) fails.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// At most one warning per this interval while failures continue.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// How long one attempt to connect to the queue may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Somewhere to publish outbox rows: the queue in production, a stand-in in tests.
pub(crate) trait Publisher: Send + Sync {
    /// Makes sure the destination is reachable (connects if needed) before a pass.
    fn connect(&self) -> impl Future<Output = Result<(), String>> + Send;

    /// Publishes one message; `headers` is the W3C context stored with the row.
    fn publish(
        &self,
        subject: &str,
        message_id: &str,
        payload: &[u8],
        headers: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// The queue, connected on first use and kept afterwards. A queue that is unreachable when the
/// service starts must not stop it from taking orders: the outbox holds them until the queue
/// answers.
///
/// `queue.publish_failure` acts here: while it is set, each publish (with the fault's
/// probability) is refused the way the broker refuses one — see [`refused`].
#[derive(Debug)]
pub(crate) struct QueueLink {
    url: String,
    queue: OnceCell<Queue>,
    last_error: Mutex<Option<String>>,
    faults: Faults,
}

impl QueueLink {
    pub(crate) fn new(url: impl Into<String>, faults: Faults) -> Self {
        Self {
            url: url.into(),
            queue: OnceCell::new(),
            last_error: Mutex::new(None),
            faults,
        }
    }

    /// The connected queue, connecting now if needed.
    async fn queue(&self) -> Result<&Queue, String> {
        self.queue
            .get_or_try_init(|| async {
                let connect = Queue::connect(QueueConfig::new(self.url.clone()));
                let result = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                    Ok(Ok(queue)) => {
                        tracing::info!(system = queue.system(), "connected to the queue");
                        Ok(queue)
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "no answer from the queue within {CONNECT_TIMEOUT:?}; is it running and is QUEUE_URL right?"
                    )),
                };
                if let Err(reason) = &result {
                    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(reason.clone());
                }
                result
            })
            .await
    }

    /// For `/readyz`: whether the queue is connected and answering. Does not connect (the
    /// relay does), so a probe never waits for a connection timeout.
    pub(crate) async fn ready(&self) -> Result<(), String> {
        match self.queue.get() {
            Some(queue) => queue.ready().await.map_err(|e| e.to_string()),
            None => {
                let last = self
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                Err(match last {
                    Some(reason) => format!("not connected: {reason}"),
                    None => "not connected yet".to_owned(),
                })
            }
        }
    }
}

impl Publisher for QueueLink {
    async fn connect(&self) -> Result<(), String> {
        self.queue().await.map(|_| ())
    }

    async fn publish(
        &self,
        subject: &str,
        message_id: &str,
        payload: &[u8],
        headers: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let queue = self.queue().await?;
        if let Some(hit) = self.faults.roll(FaultKind::QueuePublishFailure, |_| true) {
            let refusal = refusal(queue.system(), subject, message_id);
            return queue
                .publish_refused(subject, message_id, payload, headers, refusal, || {
                    hit.acted()
                })
                .await
                .map_err(|e| e.to_string());
        }
        queue
            .publish(subject, message_id, payload, headers)
            .await
            .map_err(|e| e.to_string())
    }
}

/// `queue.publish_failure`: the refusal the broker would give — SQLite's write lock held by
/// another writer past the busy timeout; JetStream's storage limit. [`Queue::publish_refused`]
/// records it exactly as a real refusal (an Error PRODUCER span in the row's trace,
/// `messaging_client_sent_messages_total` with its `error_type`); the relay then handles it like
/// any failed publish (the row stays in the outbox, the attempt is counted, it warns and backs
/// off).
fn refusal(system: &'static str, subject: &str, message_id: &str) -> QueueError {
    let (error_type, reason) = match system {
        "sqlite" => (
            "database_busy",
            "error returned from database: (code: 5) database is locked",
        ),
        _ => (
            "_OTHER",
            "jetstream error: insufficient resources (code 503, error code 10023)",
        ),
    };
    QueueError::Publish {
        subject: subject.to_owned(),
        message_id: message_id.to_owned(),
        reason: reason.to_owned(),
        error_type,
    }
}

/// What one pass over the outbox did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Pass {
    /// Rows published and marked sent.
    pub(crate) sent: usize,
    /// Whether the batch was full (more rows may be waiting: go again at once).
    pub(crate) full: bool,
}

/// Publishes the oldest unsent rows (one batch), marking each sent once the queue took it.
/// Stops at the first failure so that rows go out in order; the failed row and all after it
/// stay unsent for the next pass.
pub(crate) async fn relay_once<P: Publisher>(store: &Store, publisher: &P) -> Result<Pass, String> {
    let rows = store.unsent().await.map_err(|e| e.to_string())?;
    let full = rows.len() as i64 >= OUTBOX_BATCH;
    let mut sent = 0;
    for row in rows {
        if let Err(reason) = publisher
            .publish(&row.subject, &row.id, row.payload.as_bytes(), &row.headers)
            .await
        {
            // Bookkeeping only; the row is unsent either way.
            let _ = store.count_failed_attempt(&row.id).await;
            return Err(reason);
        }
        store.mark_sent(&row.id).await.map_err(|e| e.to_string())?;
        sent += 1;
    }
    Ok(Pass { sent, full })
}

/// Runs the relay until `shutdown` is cancelled (it finishes the publish in progress first).
pub(crate) async fn run<P: Publisher>(
    store: &Store,
    publisher: &P,
    wake: &Notify,
    shutdown: &CancellationToken,
) {
    let mut failures = FailureLog::default();
    let mut backoff = MIN_BACKOFF;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        // Connect first, even with nothing to send, so that `/readyz` reports the queue as
        // soon as it is reachable. A connection attempt may take seconds: shutdown does not
        // wait for it.
        let connected = tokio::select! {
            () = shutdown.cancelled() => break,
            connected = publisher.connect() => connected,
        };
        let outcome = match connected {
            Ok(()) => relay_once(store, publisher).await,
            Err(reason) => Err(reason),
        };
        refresh_pending_gauge(store, &outcome).await;
        let wait = match outcome {
            Ok(pass) => {
                failures.recovered();
                backoff = MIN_BACKOFF;
                if pass.full {
                    continue;
                }
                POLL_INTERVAL
            }
            Err(reason) => {
                failures.failed(&reason);
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        let backing_off = failures.failing();
        tokio::select! {
            () = shutdown.cancelled() => break,
            // While failing, new orders do not cut the backoff short: each would otherwise
            // hammer a queue that is down.
            () = wake.notified(), if !backing_off => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
    tracing::debug!("outbox relay stopped");
}

/// Keeps `orders_outbox_pending_messages` current. An empty batch means zero without another
/// query.
async fn refresh_pending_gauge(store: &Store, outcome: &Result<Pass, String>) {
    let pending = match outcome {
        Ok(Pass {
            sent: 0,
            full: false,
        }) => Some(0),
        _ => store.unsent_count().await.ok(),
    };
    if let Some(pending) = pending {
        metrics::gauge!(OUTBOX_PENDING).set(pending as f64);
    }
}

/// Rate-limits the relay's warnings: the first failure is logged at once, then at most one
/// line per [`WARN_INTERVAL`] saying how many failures it stands for.
#[derive(Debug, Default)]
struct FailureLog {
    unreported: u64,
    total: u64,
    last_warning: Option<Instant>,
}

impl FailureLog {
    fn failed(&mut self, reason: &str) {
        self.unreported += 1;
        self.total += 1;
        if self
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARN_INTERVAL)
        {
            tracing::warn!(
                failures = self.unreported,
                error = reason,
                "cannot publish outbox rows; they stay in the outbox and will be retried"
            );
            self.unreported = 0;
            self.last_warning = Some(Instant::now());
        }
    }

    fn failing(&self) -> bool {
        self.total > 0
    }

    fn recovered(&mut self) {
        if self.total > 0 {
            tracing::info!(
                failures = self.total,
                "publishing outbox rows again after failures"
            );
        }
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::config::Locking;
    use crate::db::Database;
    use crate::order::{Item, NewOrder};

    /// Message id, payload and headers of one published message.
    type Published = (String, String, BTreeMap<String, String>);

    /// A queue stand-in that can be switched off, and remembers what it received.
    #[derive(Default)]
    struct SwitchableQueue {
        down: AtomicBool,
        published: Mutex<Vec<Published>>,
    }

    impl Publisher for SwitchableQueue {
        async fn connect(&self) -> Result<(), String> {
            Ok(())
        }

        async fn publish(
            &self,
            subject: &str,
            message_id: &str,
            payload: &[u8],
            headers: &BTreeMap<String, String>,
        ) -> Result<(), String> {
            if self.down.load(Ordering::SeqCst) {
                return Err("connection refused".to_owned());
            }
            assert_eq!(subject, "orders.placed");
            let payload = String::from_utf8(payload.to_vec()).unwrap();
            self.published
                .lock()
                .unwrap()
                .push((message_id.to_owned(), payload, headers.clone()));
            Ok(())
        }
    }

    async fn store_with_orders(dir: &tempfile::TempDir, orders: usize) -> Store {
        let url = format!("sqlite://{}", dir.path().join("orders.db").display());
        let db = Database::connect(&url, 4).await.unwrap();
        db.migrate().await.unwrap();
        db.seed().await.unwrap();
        let store = Store::new(db);
        let order = NewOrder {
            user_id: "u-1".into(),
            items: vec![Item {
                sku: "sku-1".into(),
                quantity: 1,
            }],
        };
        let headers = BTreeMap::from([(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        )]);
        for _ in 0..orders {
            store
                .place_order(&order, Locking::Optimistic, 3, &headers)
                .await
                .unwrap();
        }
        store
    }

    #[tokio::test]
    async fn rows_stay_unsent_while_publishing_fails_and_all_go_out_once_it_works() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_orders(&dir, 150).await;
        let queue = SwitchableQueue::default();
        queue.down.store(true, Ordering::SeqCst);

        for _ in 0..3 {
            assert_eq!(
                relay_once(&store, &queue).await,
                Err("connection refused".to_owned())
            );
        }
        assert_eq!(store.unsent_count().await.unwrap(), 150, "nothing lost");

        queue.down.store(false, Ordering::SeqCst);
        assert_eq!(
            relay_once(&store, &queue).await,
            Ok(Pass {
                sent: 100,
                full: true
            }),
            "one batch of at most 100"
        );
        assert_eq!(
            relay_once(&store, &queue).await,
            Ok(Pass {
                sent: 50,
                full: false
            })
        );
        assert_eq!(store.unsent_count().await.unwrap(), 0);
        assert_eq!(
            relay_once(&store, &queue).await,
            Ok(Pass {
                sent: 0,
                full: false
            })
        );

        let published = queue.published.lock().unwrap().clone();
        assert_eq!(published.len(), 150, "each row published exactly once");
        let mut ids: Vec<&str> = published.iter().map(|(id, _, _)| id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 150);
        let (_, payload, headers) = &published[0];
        let event: serde_json::Value = serde_json::from_str(payload).unwrap();
        assert_eq!(event["user_id"], "u-1");
        assert!(
            headers["traceparent"].contains("4bf92f3577b34da6a3ce929d0e0e4736"),
            "the row's trace context goes along"
        );
        // The failed passes were counted on the first row; every row counts its one success.
        let attempts: i64 = sqlx::query_scalar("SELECT MAX(attempts) FROM outbox")
            .fetch_one(store.database().pool())
            .await
            .unwrap();
        assert_eq!(attempts, 4);
    }

    #[tokio::test]
    async fn the_relay_task_recovers_from_an_outage_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(store_with_orders(&dir, 5).await);
        let queue = Arc::new(SwitchableQueue::default());
        queue.down.store(true, Ordering::SeqCst);
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (store, queue, wake, shutdown) =
                (store.clone(), queue.clone(), wake.clone(), shutdown.clone());
            async move { run(&store, queue.as_ref(), &wake, &shutdown).await }
        });

        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(store.unsent_count().await.unwrap(), 5);
        queue.down.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.unsent_count().await.unwrap() > 0 {
            assert!(
                Instant::now() < deadline,
                "the relay resumes after the outage"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(queue.published.lock().unwrap().len(), 5);

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the relay stops promptly on shutdown")
            .unwrap();
    }
}
