//! The connection to the queue, made in the background.
//!
//! The service must start even when the queue is down (NATS still booting, say): its HTTP API
//! and admin endpoints work, `/readyz` says the queue is not ready and why, and the workers
//! start consuming the moment the connection succeeds. [`QueueLink`] is that shared,
//! eventually-connected handle.

use std::time::Duration;

use queue::{Queue, QueueConfig, QueueError};
use servicekit::server::CancellationToken;
use tokio::sync::watch;

/// The first wait between connection attempts; doubled after each failure.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest wait between connection attempts.
const MAX_RETRY: Duration = Duration::from_secs(5);
/// How often `fulfillment_queue_pending_messages` is refreshed.
pub(crate) const PENDING_INTERVAL: Duration = Duration::from_secs(2);

/// `fulfillment_queue_pending_messages` (gauge): messages on `orders.placed` not yet acked.
pub const QUEUE_PENDING_MESSAGES: &str = "fulfillment_queue_pending_messages";

#[derive(Clone)]
enum State {
    /// Not connected yet; the last attempt's error, if any.
    Connecting(Option<String>),
    /// The URL or configuration is wrong: retrying cannot help.
    Misconfigured(String),
    Connected(Queue),
}

/// A queue handle that becomes available once the background connection succeeds.
#[derive(Clone)]
pub(crate) struct QueueLink {
    state: watch::Receiver<State>,
}

impl QueueLink {
    /// Starts connecting with `config` in the background, retrying with backoff until it
    /// succeeds or `stop` is cancelled.
    pub(crate) fn connect(config: QueueConfig, stop: CancellationToken) -> Self {
        let (tx, rx) = watch::channel(State::Connecting(None));
        tokio::spawn(async move {
            let mut delay = FIRST_RETRY;
            let mut attempts = 0u32;
            loop {
                let attempt = tokio::select! {
                    _ = stop.cancelled() => return,
                    attempt = Queue::connect(config.clone()) => attempt,
                };
                attempts += 1;
                match attempt {
                    Ok(queue) => {
                        tracing::info!(system = queue.system(), attempts, "connected to the queue");
                        let _ = tx.send(State::Connected(queue));
                        return;
                    }
                    Err(e @ (QueueError::InvalidUrl { .. } | QueueError::InvalidConfig(_))) => {
                        tracing::error!(error = %e, "the queue is misconfigured; fix QUEUE_URL and restart: no messages will be consumed");
                        let _ = tx.send(State::Misconfigured(e.to_string()));
                        return;
                    }
                    Err(e) => {
                        // Loud on the first failure, then quieter: an outage would otherwise
                        // print a line every few seconds for as long as it lasts.
                        if attempts == 1 || attempts.is_power_of_two() {
                            tracing::warn!(error = %e, attempts, retry_in_ms = delay.as_millis() as u64, "cannot connect to the queue; retrying in the background");
                        }
                        let _ = tx.send(State::Connecting(Some(e.to_string())));
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_RETRY);
            }
        });
        Self { state: rx }
    }

    /// The queue, if connected.
    pub(crate) fn get(&self) -> Option<Queue> {
        match &*self.state.borrow() {
            State::Connected(queue) => Some(queue.clone()),
            _ => None,
        }
    }

    /// Waits until connected; `None` if `stop` is cancelled first or the connection can never
    /// be made (misconfigured).
    pub(crate) async fn connected(&self, stop: &CancellationToken) -> Option<Queue> {
        let mut state = self.state.clone();
        tokio::select! {
            _ = stop.cancelled() => None,
            state = state.wait_for(|s| !matches!(s, State::Connecting(_))) => match state.ok().as_deref() {
                Some(State::Connected(queue)) => Some(queue.clone()),
                _ => None,
            },
        }
    }

    /// The `/readyz` check for the queue.
    pub(crate) async fn ready(&self) -> Result<(), String> {
        let state = self.state.borrow().clone();
        match state {
            State::Connected(queue) => queue.ready().await.map_err(|e| e.to_string()),
            State::Connecting(None) => Err("connecting".to_owned()),
            State::Connecting(Some(error)) => Err(format!("not connected, retrying: {error}")),
            State::Misconfigured(error) => Err(error),
        }
    }

    /// Refreshes [`QUEUE_PENDING_MESSAGES`] every [`PENDING_INTERVAL`] until `stop`.
    pub(crate) async fn report_pending(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PENDING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(queue) = self.get() else { continue };
            match queue.pending().await {
                Ok(pending) => metrics::gauge!(QUEUE_PENDING_MESSAGES).set(pending as f64),
                Err(error) => tracing::debug!(%error, "cannot read the queue's pending count"),
            }
        }
    }
}
