//! Fulfilling one order: the business steps the worker runs for each `orders.placed` message.
//!
//! 1. parse the event (a payload that cannot be an order is poison: dead-letter it now);
//! 2. take the payment (simulated: 5–20 ms, span `payment`; this is where `queue.slow_consumer`
//!    adds its delay and where a `queue.poison` order fails, on every delivery);
//! 3. ship and record the shipment (simulated work, span `shipment`, then
//!    `INSERT … ON CONFLICT (order_id) DO NOTHING`): a redelivered message ships nothing new;
//! 4. tell orders the order is `fulfilled`.
//!
//! Each step is safe to repeat, which is what at-least-once delivery demands: if the process
//! dies between 3 and 4, the message comes back, step 3 finds the shipment and step 4 runs
//! again. Transient failures answer [`ProcessError::Retry`] (the queue redelivers later);
//! failures that no retry can fix answer [`ProcessError::Fatal`] (dead letter).
//!
//! This code runs inside the CONSUMER span that [`queue::Queue::process`] opens, so the spans
//! made here, and the CLIENT span of the status report, belong to the trace of the request that
//! placed the order. It makes no span kinds or propagation of its own.
//!
//! The faults leave no mark of their own: a slow payment is just a slower `payment` span, and a
//! poison order fails the way an order the code cannot handle would (an error log, the
//! `payment` span and the CONSUMER span in error, retries, then the dead letters).

use std::sync::Mutex;
use std::time::Duration;

use chaos::{FaultKind, Faults};
use queue::{ProcessError, ReceivedMessage};
use rand::Rng;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::event::OrderPlaced;
use crate::orders_client::{OrderStatus, OrdersClient, ReportError, Reported};
use crate::shipments::{Recorded, Shipments};

/// What the handler learned about a message, kept for the dead-letter path (which runs after
/// the handler returned, once the queue has decided the message's fate).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// The order the message is about, if the payload named one.
    pub(crate) order_id: Option<String>,
    /// The CONSUMER span the handler ran in. Holding it keeps the span open so that the
    /// dead-letter status report becomes part of the same trace.
    pub(crate) span: Option<Span>,
}

/// The steps, and what they need.
#[derive(Clone, Debug)]
pub(crate) struct Fulfiller {
    pub(crate) shipments: Shipments,
    pub(crate) orders: OrdersClient,
    /// Read by the payment step (`queue.slow_consumer`, `queue.poison`).
    pub(crate) faults: Faults,
}

impl Fulfiller {
    /// The [`queue::Queue::process`] handler for one message.
    pub(crate) async fn fulfil(
        &self,
        message: ReceivedMessage,
        progress: &Mutex<Progress>,
    ) -> Result<(), ProcessError> {
        set_progress(progress, |p| p.span = Some(Span::current()));
        let event = match OrderPlaced::parse(&message.payload) {
            Ok(event) => event,
            Err(error) => {
                let order_id = OrderPlaced::order_id_of(&message.payload);
                tracing::warn!(
                    message_id = message.message_id,
                    order_id = order_id.as_deref(),
                    %error,
                    "poison message: it can never be processed"
                );
                set_progress(progress, |p| p.order_id = order_id);
                return Err(ProcessError::Fatal(error.to_string()));
            }
        };
        set_progress(progress, |p| p.order_id = Some(event.order_id.clone()));
        let order_id = event.order_id.as_str();

        self.take_payment(order_id)
            .instrument(tracing::info_span!(
                "payment",
                order_id,
                otel.status_code = Empty,
                error.type = Empty
            ))
            .await?;

        let recorded = async {
            simulate_work(Duration::ZERO).await;
            self.shipments
                .record(order_id, &event.user_id, &event.items)
                .await
        }
        .instrument(tracing::info_span!("shipment", order_id))
        .await
        .map_err(|e| {
            ProcessError::Retry(format!(
                "cannot record the shipment of order {order_id}: {e}"
            ))
        })?;
        match recorded {
            Recorded::Shipped => tracing::info!(order_id, user_id = event.user_id, "order shipped"),
            Recorded::AlreadyShipped => tracing::info!(
                order_id,
                delivery_count = message.delivery_count,
                "order had already shipped (a redelivered message); not shipping it again"
            ),
        }

        match self.orders.report(order_id, OrderStatus::Fulfilled).await {
            Ok(Reported::Accepted) => Ok(()),
            Ok(Reported::AlreadyFinal) => {
                tracing::info!(
                    order_id,
                    "orders says the order already has a final status (409)"
                );
                Ok(())
            }
            Err(e @ ReportError::UnknownOrder { .. }) => {
                // Orders has no such order, so there is no status to report when this message
                // is dead-lettered.
                set_progress(progress, |p| p.order_id = None);
                Err(ProcessError::Fatal(e.to_string()))
            }
            Err(e @ ReportError::Rejected { .. }) => Err(ProcessError::Fatal(e.to_string())),
            // The shipment is recorded; the redelivery will find it and only report again.
            Err(e @ ReportError::Unavailable(_)) => Err(ProcessError::Retry(format!(
                "order {order_id} shipped but its status could not be reported: {e}"
            ))),
        }
    }

    /// The payment step (simulated), inside the `payment` span.
    ///
    /// `queue.slow_consumer` makes it `ms` slower for the messages it draws. An order that
    /// `queue.poison` affects (the same orders on every delivery, see [`Faults::affects`])
    /// cannot be charged: the step fails with a retryable error, as an unexpected failure in
    /// the worker's own code would, so the message is retried and finally dead-lettered.
    async fn take_payment(&self, order_id: &str) -> Result<(), ProcessError> {
        let extra = match self.faults.roll(FaultKind::QueueSlowConsumer, |_| true) {
            Some(hit) => {
                hit.acted();
                hit.spec().duration()
            }
            None => Duration::ZERO,
        };
        simulate_work(extra).await;
        if let Some(hit) = self.faults.affects(FaultKind::QueuePoison, order_id) {
            hit.acted();
            let error =
                "cannot build the payment request: the order's line items could not be priced";
            let span = Span::current();
            span.record("otel.status_code", "ERROR");
            span.record("error.type", "payment_failed");
            tracing::error!(order_id, error, "payment failed");
            return Err(ProcessError::Retry(format!(
                "payment for order {order_id} failed: {error}"
            )));
        }
        Ok(())
    }

    /// After a message was dead-lettered: tell orders, best effort, how the order ended. An
    /// order whose shipment was recorded *did* ship (only the report kept failing), so it is
    /// reported `fulfilled`, never `failed`.
    pub(crate) async fn report_dead_letter(&self, order_id: &str) {
        let status = match self.shipments.is_shipped(order_id).await {
            Ok(true) => OrderStatus::Fulfilled,
            Ok(false) => OrderStatus::Failed,
            Err(error) => {
                tracing::error!(
                    order_id,
                    %error,
                    "cannot tell whether the dead-lettered order shipped; leaving its status to an operator"
                );
                return;
            }
        };
        match self.orders.report(order_id, status).await {
            Ok(_) => tracing::info!(
                order_id,
                ?status,
                "reported the dead-lettered order's status"
            ),
            Err(error) => tracing::error!(
                order_id,
                ?status,
                %error,
                "could not report the dead-lettered order's status; the order keeps its old status"
            ),
        }
    }
}

fn set_progress(progress: &Mutex<Progress>, update: impl FnOnce(&mut Progress)) {
    // A poisoned lock only means another thread panicked mid-update; the data is still usable.
    update(&mut progress.lock().unwrap_or_else(|p| p.into_inner()));
}

/// Simulated work (a payment provider, a warehouse): 5–20 ms with jitter, plus `extra`.
async fn simulate_work(extra: Duration) {
    let millis = rand::rng().random_range(5..=20);
    tokio::time::sleep(Duration::from_millis(millis) + extra).await;
}
