//! Subscription streams and the items they yield.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::event::{Event, Headers};
use crate::{BusError, memory, nats};

/// A bounded stream of items from the bus. Dropping it ends the subscription (for NATS
/// the consumer or core subscription goes away; a work durable keeps its position).
///
/// Items wait in a channel of `BusConfig::channel_capacity`; while it is full nothing more
/// is fetched, so a slow reader slows delivery down instead of buffering without bound.
pub struct Subscription<T> {
    rx: mpsc::Receiver<T>,
    task: Option<JoinHandle<()>>,
}

/// Work deliveries of a durable consumer.
pub type WorkSubscription = Subscription<Delivery>;
/// Every event of a broadcast subscription.
pub type BroadcastSubscription = Subscription<crate::ReceivedEvent>;
/// Requests to a served subject.
pub type RequestStream = Subscription<IncomingRequest>;
/// Core (fire-and-forget) messages.
pub type CoreSubscription = Subscription<CoreMessage>;

impl<T> Subscription<T> {
    pub(crate) fn new(rx: mpsc::Receiver<T>, task: Option<JoinHandle<()>>) -> Self {
        Self { rx, task }
    }

    /// The next item; waits while there is none. `None` only when the feeding side has ended
    /// (the NATS connection was closed for good); a memory subscription never ends by itself.
    pub async fn next(&mut self) -> Option<T> {
        self.rx.recv().await
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        // The feeding task owns the NATS consumer or subscriber; stopping it releases them.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl<T> futures::Stream for Subscription<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// One delivery of a work subscription. Acknowledge it once handled; if it is neither
/// acknowledged nor rejected within the ack wait it is delivered again (to any subscriber
/// of the durable).
pub struct Delivery {
    /// The event.
    pub event: Event,
    /// Its stream sequence.
    pub sequence: u64,
    /// How many times it has been delivered, this time included (1 on the first delivery).
    pub attempt: u64,
    pub(crate) acker: Acker,
}

pub(crate) enum Acker {
    // Boxed: the JetStream acker is large next to the memory one.
    Nats(Box<nats::NatsAcker>),
    Memory(memory::MemoryAcker),
}

impl Delivery {
    /// Marks the event handled: it is not delivered again.
    ///
    /// With NATS it returns once the server has confirmed the acknowledgement (a double ack),
    /// so a subscriber that goes away right after does not get the event back; if the
    /// confirmation does not come (the connection dropped), the call fails and the event may
    /// come back, which handlers tolerate because they are idempotent on the event id.
    pub async fn ack(&self) -> Result<(), BusError> {
        match &self.acker {
            Acker::Nats(a) => a.ack().await,
            Acker::Memory(a) => {
                a.ack();
                Ok(())
            }
        }
    }

    /// Rejects the delivery: it is delivered again right away (to any subscriber of the durable).
    pub async fn nak(&self) -> Result<(), BusError> {
        match &self.acker {
            Acker::Nats(a) => a.nak().await,
            Acker::Memory(a) => {
                a.nak();
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("event", &self.event)
            .field("sequence", &self.sequence)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// A request received by `serve`; answer it with [`IncomingRequest::reply`].
pub struct IncomingRequest {
    /// The subject it was sent to.
    pub subject: String,
    /// Its headers (trace context).
    pub headers: Headers,
    /// Its payload.
    pub payload: Bytes,
    pub(crate) responder: Responder,
}

pub(crate) enum Responder {
    Nats(nats::NatsResponder),
    Memory(memory::MemoryResponder),
}

impl IncomingRequest {
    /// Sends the reply. The requester gets the first reply; later ones are ignored.
    pub async fn reply(self, payload: Bytes) -> Result<(), BusError> {
        match self.responder {
            Responder::Nats(r) => r.reply(payload).await,
            Responder::Memory(r) => {
                r.reply(payload);
                Ok(())
            }
        }
    }
}

impl fmt::Debug for IncomingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingRequest")
            .field("subject", &self.subject)
            .field("headers", &self.headers)
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

/// A core (fire-and-forget) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreMessage {
    /// The subject it was published on.
    pub subject: String,
    /// Its headers.
    pub headers: Headers,
    /// Its payload.
    pub payload: Bytes,
}
