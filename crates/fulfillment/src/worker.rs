//! The worker pool: receives `orders.placed` deliveries and processes each in its own task,
//! at most `workers` at a time.
//!
//! The concurrency bound is a [`Semaphore`]: the receive loop first takes a permit (waiting
//! while every worker is busy, which is the back-pressure: nothing is leased from the queue that
//! no worker could start on), then asks the queue for as many messages as it holds permits.
//! Each delivery moves into a task together with its permit; finishing the task frees it.
//!
//! Tracing: the task runs the whole [`Queue::process`] call, which opens the CONSUMER span from
//! the message's `traceparent`. The task is spawned outside any span on purpose, so the
//! consumer span's parent is the producer's context and never some unrelated local span.
//!
//! `queue.consumer_stall`: while the fault is active the loop asks the queue for nothing (a
//! receive already waiting, at most [`RECEIVE_WAIT`], still completes), so messages pile up and
//! `fulfillment_queue_pending_messages` climbs; messages in flight finish normally. It waits on
//! the registry's change notifications (with a [`STALL_RECHECK`] fallback) and resumes as soon
//! as the fault is cleared or expires.
//!
//! Shutdown: on `stop` the loop receives nothing more and waits (bounded) for the tasks in
//! flight. A task cut off after that leaves its delivery unacked; the queue redelivers it after
//! the ack wait, and the idempotent handler makes that harmless.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chaos::{FaultKind, Faults};
use queue::{Delivery, Outcome, Queue};
use rand::Rng;
use servicekit::server::CancellationToken;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, Span};

use crate::fulfil::{Fulfiller, Progress};
use crate::queue_link::QueueLink;

/// `fulfillment_dead_letters_total` (counter): messages this service dead-lettered, whether
/// their processing failed for good or the queue moved them during this service's receive
/// because they had been delivered `max_deliveries` times without ever being settled.
pub const DEAD_LETTERS: &str = "fulfillment_dead_letters_total";

/// The longest one receive call waits for a first message (shutdown does not wait for it).
const RECEIVE_WAIT: Duration = Duration::from_secs(1);
/// The pause after a failed receive before trying again.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// While the consumer is stalled, how often the fault is looked up again even without a change
/// notification.
const STALL_RECHECK: Duration = Duration::from_millis(250);
/// How long shutdown waits for messages in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Redelivery delay after the first failed delivery; doubled per delivery up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
/// The longest redelivery delay.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Consumes until `stop` is cancelled; returns once the tasks in flight finished (or
/// [`DRAIN_TIMEOUT`] passed).
pub(crate) async fn run(
    link: QueueLink,
    fulfiller: Arc<Fulfiller>,
    workers: usize,
    stop: CancellationToken,
) {
    let Some(queue) = link.connected(&stop).await else {
        return;
    };
    let workers = workers.max(1);
    tracing::info!(workers, "worker pool consuming orders.placed");
    let semaphore = Arc::new(Semaphore::new(workers));
    let mut in_flight = JoinSet::new();
    let faults = fulfiller.faults.clone();
    let mut fault_changes = faults.subscribe();
    let mut unsettled_seen = queue.unsettled_dead_letters();
    loop {
        // Reap finished tasks so the set does not grow; a panic is logged, and its delivery
        // (never settled) is redelivered after the ack wait.
        while let Some(done) = in_flight.try_join_next() {
            if let Err(e) = done {
                tracing::error!(error = %e, "a worker task failed; its message will be redelivered");
            }
        }
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            permit = semaphore.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
        };
        let mut permits = vec![first];
        while let Ok(permit) = semaphore.clone().try_acquire_owned() {
            permits.push(permit);
        }
        if !wait_while_stalled(&faults, &mut fault_changes, &stop).await {
            break;
        }
        // Raced against `stop`, so shutdown does not wait out the receive's wait. A receive cut
        // short after it leased messages leaves them unsettled: they are delivered again after
        // the ack wait, here or to another worker (at least once), never lost.
        let received = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            received = queue.receive(permits.len(), RECEIVE_WAIT) => received,
        };
        count_unsettled_dead_letters(&queue, &mut unsettled_seen);
        let deliveries = match received {
            Ok(deliveries) => deliveries,
            Err(error) => {
                tracing::warn!(%error, "receiving from the queue failed; retrying");
                drop(permits);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(RECEIVE_ERROR_PAUSE) => continue,
                }
            }
        };
        for delivery in deliveries {
            let permit = match permits.pop() {
                Some(permit) => permit,
                // More deliveries than asked for: wait for a worker rather than overrun.
                None => match semaphore.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let queue = queue.clone();
            let fulfiller = fulfiller.clone();
            // A spawned task starts outside any span (tokio does not carry the current span
            // over), so the CONSUMER span that `process` opens hangs from the message's
            // `traceparent` alone.
            in_flight.spawn(handle(queue, fulfiller, delivery, permit));
        }
        // Unused permits return to the semaphore here.
    }

    if !in_flight.is_empty() {
        tracing::info!(
            in_flight = in_flight.len(),
            "waiting for messages in flight"
        );
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                in_flight = in_flight.len(),
                "messages still in flight after {DRAIN_TIMEOUT:?}; abandoning them unacked (the queue redelivers them after the ack wait)"
            );
            in_flight.abort_all();
        }
    }
    tracing::info!("worker pool stopped");
}

/// `queue.consumer_stall`: returns at once when the fault is not active; otherwise waits until
/// it is cleared or expires. `false` if `stop` was cancelled meanwhile.
async fn wait_while_stalled(
    faults: &Faults,
    changes: &mut watch::Receiver<u64>,
    stop: &CancellationToken,
) -> bool {
    let mut acted: Option<String> = None;
    while let Some(hit) = faults.find(FaultKind::QueueConsumerStall, |_| true) {
        // Once per fault: the stall is one occurrence however long it lasts.
        if acted.as_deref() != Some(hit.id()) {
            hit.acted();
            acted = Some(hit.id().to_owned());
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            changed = changes.changed() => {
                if changed.is_err() {
                    // The registry is gone (never, while the service runs): poll instead.
                    tokio::time::sleep(STALL_RECHECK).await;
                }
            }
            _ = tokio::time::sleep(STALL_RECHECK) => {}
        }
    }
    true
}

/// Adds the messages the queue dead-lettered inside this service's receive calls (delivered
/// `max_deliveries` times, never settled) to [`DEAD_LETTERS`].
fn count_unsettled_dead_letters(queue: &Queue, seen: &mut u64) {
    let now = queue.unsettled_dead_letters();
    if now > *seen {
        metrics::counter!(DEAD_LETTERS).increment(now - *seen);
        *seen = now;
    }
}

/// Processes one delivery: the handler inside the CONSUMER span, then the dead-letter follow-up.
async fn handle(
    queue: Queue,
    fulfiller: Arc<Fulfiller>,
    delivery: Delivery,
    _permit: OwnedSemaphorePermit,
) {
    let retry_delay = retry_delay(delivery.message().delivery_count);
    let message_id = delivery.message().message_id.clone();
    let progress = Mutex::new(Progress::default());
    let outcome = queue
        .process(delivery, retry_delay, |message| {
            fulfiller.fulfil(message, &progress)
        })
        .await;
    match outcome {
        Ok(Outcome::Acked | Outcome::WillRetry) => {}
        Ok(Outcome::DeadLettered) => {
            metrics::counter!(DEAD_LETTERS).increment(1);
            let Progress { order_id, span } =
                progress.into_inner().unwrap_or_else(|p| p.into_inner());
            if let Some(order_id) = order_id {
                // Inside the (still open) CONSUMER span: the report joins the order's trace.
                fulfiller
                    .report_dead_letter(&order_id)
                    .instrument(span.unwrap_or_else(Span::none))
                    .await;
            }
        }
        Err(error) => tracing::warn!(
            message_id,
            %error,
            "the message could not be settled; the queue will redeliver it"
        ),
    }
}

/// Redelivery delay after delivery number `delivery_count` failed: 0.5 s, 1 s, 2 s, … up to
/// 30 s, plus up to 25 % jitter so that messages that failed together do not return together.
fn retry_delay(delivery_count: u32) -> Duration {
    let exponent = delivery_count.saturating_sub(1).min(16);
    let base = FIRST_RETRY_DELAY
        .saturating_mul(1 << exponent)
        .min(MAX_RETRY_DELAY);
    let jitter = rand::rng().random_range(0.0..0.25);
    base.mul_f64(1.0 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_exponentially_with_jitter_and_a_cap() {
        for (count, base_ms) in [(1, 500), (2, 1_000), (3, 2_000), (7, 30_000), (100, 30_000)] {
            let d = retry_delay(count);
            let base = Duration::from_millis(base_ms);
            assert!(d >= base && d <= base.mul_f64(1.25), "{count}: {d:?}");
        }
        assert!(retry_delay(0) >= FIRST_RETRY_DELAY);
    }
}
