//! The one bus follower: a broadcast subscription to some topics that keeps a replica's
//! in-memory state in step with the event stream (ARCHITECTURE.md, Messaging).
//!
//! It starts at the stream sequence recorded when the replica loaded its snapshot
//! ([`Follower::start_after`]); when the subscription ends it subscribes again from the
//! last sequence handled, so nothing is missed while the stream still holds it. When events
//! may have been missed it says so ([`FollowHandler::gap`]), and the handler resynchronises:
//! - the stream no longer holds the sequence it was to continue from (its limits dropped
//!   events before they were read): [`Gap::Dropped`], checked after every subscription
//!   and whenever the sequence jumps;
//! - no subscription could be had for longer than [`Follower::outage_gap`]: [`Gap::Outage`]
//!   (the state may be stale by then, even though the events are replayed later);
//! - an event is not an `EventEnvelope`: [`Gap::Undecodable`];
//! - no snapshot sequence was given, so the follower had to record one itself, after state
//!   may already have been loaded: [`Gap::Unanchored`].
//!
//! Events are decoded here, once, and handed over in stream order, each inside a span whose
//! parent is the context in the event's headers (`crate::trace::event_span`).
//!
//! The subject is the authority on tenant and topic (publish permissions are granted per
//! subject): an event whose body names another tenant or topic than its subject
//! `pc.<tenant>.evt.<topic>` is dropped, logged and counted in
//! `portcullis.bus.events.mismatched` ([`MISMATCHED_METRIC`]), and never reaches a handler.

use std::time::{Duration, Instant};

use opentelemetry::metrics::{Counter, Meter};
use portcullis_bus::{Bus, BusError, Event, Headers, StartFrom, TopicFilter};
use portcullis_proto::events::v1::EventEnvelope;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

/// The counter of events dropped because body and subject disagree (no attributes: tenants
/// are unbounded).
pub const MISMATCHED_METRIC: &str = "portcullis.bus.events.mismatched";

/// Name of the meter the follower records through when none is given.
pub const METER_NAME: &str = "portcullis-kit";

fn mismatched_counter(meter: &Meter) -> Counter<u64> {
    meter
        .u64_counter(MISMATCHED_METRIC)
        .with_description("Bus events dropped because the tenant or topic in the body differs from the subject's.")
        .with_unit("{event}")
        .build()
}

/// Whether `envelope` is about the tenant and topic of the subject it came on.
fn matches_subject(envelope: &EventEnvelope, event: &Event) -> bool {
    envelope.tenant_id == event.tenant && envelope.topic == event.topic
}

/// One event as the follower hands it over: decoded, with its stream sequence and headers.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowedEvent {
    /// Its stream sequence.
    pub sequence: u64,
    /// The decoded payload.
    pub envelope: EventEnvelope,
    /// The event's headers (trace context).
    pub headers: Headers,
}

/// Why events may have been missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gap {
    /// No snapshot sequence was given: the follower started from the stream's end at
    /// `sequence`, and anything loaded before may predate changes it will never report.
    Unanchored {
        /// The sequence the follower recorded.
        sequence: u64,
    },
    /// The stream dropped events from `expected` on before they were read: its oldest
    /// retained event is `first`.
    Dropped {
        /// The sequence the follower was to continue from.
        expected: u64,
        /// The oldest sequence the stream holds.
        first: u64,
    },
    /// Whether events were dropped could not be checked (the stream could not be asked).
    Unchecked {
        /// The sequence the follower was to continue from.
        expected: u64,
    },
    /// No subscription for this long (the outage bound passed).
    Outage {
        /// How long the follower has been without a subscription.
        down_for: Duration,
    },
    /// The event at this sequence could not be decoded.
    Undecodable {
        /// Its stream sequence.
        sequence: u64,
    },
}

/// What a follower calls. Calls come from the follower's task, one at a time, in order.
pub trait FollowHandler: Send {
    /// One event, in stream order.
    fn event(&mut self, event: &FollowedEvent);
    /// Events may have been missed: resynchronise what the events keep current.
    fn gap(&mut self, gap: &Gap);
    /// The subscription is in place (`true`) or lost (`false`). By default nothing.
    fn following(&mut self, _following: bool) {}
}

/// A handler made of two closures: one per event, one per gap.
#[derive(Debug)]
pub struct Closures<E, G> {
    on_event: E,
    on_gap: G,
}

impl<E, G> FollowHandler for Closures<E, G>
where
    E: FnMut(&FollowedEvent) + Send,
    G: FnMut(&Gap) + Send,
{
    fn event(&mut self, event: &FollowedEvent) {
        (self.on_event)(event);
    }

    fn gap(&mut self, gap: &Gap) {
        (self.on_gap)(gap);
    }
}

/// Follows `topics` on `bus` until `stop`, calling `handler` per event and `on_gap` per gap,
/// from the stream sequence `start_after` (recorded when the snapshot was loaded; `None`:
/// from now, reporting [`Gap::Unanchored`]).
pub async fn follow<E, G>(
    bus: Bus,
    topics: &[&str],
    start_after: Option<u64>,
    handler: E,
    on_gap: G,
    stop: CancellationToken,
) where
    E: FnMut(&FollowedEvent) + Send,
    G: FnMut(&Gap) + Send,
{
    let mut follower = Follower::new(bus, TopicFilter::topics(topics.iter().copied()));
    if let Some(sequence) = start_after {
        follower = follower.start_after(sequence);
    }
    follower
        .run(
            Closures {
                on_event: handler,
                on_gap,
            },
            stop,
        )
        .await;
}

/// How a follower retries and when an outage counts as a gap (a settings section of each
/// service that follows the bus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FollowOptions {
    /// The first wait between subscription attempts; doubled per failure.
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// The longest wait between subscription attempts.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// How long without a subscription counts as a gap ([`Gap::Outage`]).
    #[serde(with = "humantime_serde")]
    pub outage_gap: Duration,
}

impl Default for FollowOptions {
    /// 100 ms doubling up to 5 s; an outage longer than 5 s is a gap.
    fn default() -> FollowOptions {
        FollowOptions {
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            outage_gap: Duration::from_secs(5),
        }
    }
}

/// A follower being set up; [`Follower::run`] follows.
#[derive(Debug, Clone)]
pub struct Follower {
    bus: Bus,
    filter: TopicFilter,
    start_after: Option<u64>,
    retry_min: Duration,
    retry_max: Duration,
    outage_gap: Duration,
    mismatched: Counter<u64>,
}

impl Follower {
    /// Follows `filter` on `bus`, from now; retries after 100 ms doubling up to 5 s; an
    /// outage longer than 5 s is a gap.
    pub fn new(bus: Bus, filter: TopicFilter) -> Follower {
        let defaults = FollowOptions::default();
        Follower {
            bus,
            filter,
            start_after: None,
            retry_min: defaults.retry_min,
            retry_max: defaults.retry_max,
            outage_gap: defaults.outage_gap,
            mismatched: mismatched_counter(&opentelemetry::global::meter(METER_NAME)),
        }
    }

    /// Counts dropped events on `meter` instead of the global meter provider's (tests).
    #[must_use]
    pub fn meter(mut self, meter: &Meter) -> Follower {
        self.mismatched = mismatched_counter(meter);
        self
    }

    /// Retries and the outage bound from `options`.
    #[must_use]
    pub fn options(self, options: &FollowOptions) -> Follower {
        self.retry(options.retry_min, options.retry_max)
            .outage_gap(options.outage_gap)
    }

    /// Starts right after `sequence`: what `Bus::last_sequence` returned when the snapshot
    /// was loaded.
    #[must_use]
    pub fn start_after(mut self, sequence: u64) -> Follower {
        self.start_after = Some(sequence);
        self
    }

    /// Waits between subscription attempts: from `min`, doubling up to `max`.
    #[must_use]
    pub fn retry(mut self, min: Duration, max: Duration) -> Follower {
        self.retry_min = min;
        self.retry_max = max.max(min);
        self
    }

    /// How long without a subscription counts as a gap ([`Gap::Outage`]).
    #[must_use]
    pub fn outage_gap(mut self, bound: Duration) -> Follower {
        self.outage_gap = bound;
        self
    }

    /// Follows until `stop` is cancelled.
    pub async fn run<H: FollowHandler>(self, mut handler: H, stop: CancellationToken) {
        let Some(mut next) = self.anchor(&mut handler, &stop).await else {
            return;
        };
        loop {
            let Some(mut subscription) = self.subscribe(next, &mut handler, &stop).await else {
                return;
            };
            next = self.check_retained(next, &mut handler).await;
            handler.following(true);
            loop {
                let received = tokio::select! {
                    () = stop.cancelled() => return,
                    received = subscription.next() => received,
                };
                let Some(received) = received else {
                    tracing::warn!(next, "the event subscription ended; subscribing again");
                    break;
                };
                if received.sequence > next {
                    // Events of other topics sit between ours; only a dropped one is a gap.
                    self.check_retained(next, &mut handler).await;
                }
                next = received.sequence.saturating_add(1);
                match EventEnvelope::decode(received.event.payload.as_ref()) {
                    Ok(envelope) if !matches_subject(&envelope, &received.event) => {
                        // Forged or misrouted: applying it would change another tenant's state.
                        tracing::warn!(
                            subject = %received.event.subject(),
                            body_tenant = %envelope.tenant_id,
                            body_topic = %envelope.topic,
                            sequence = received.sequence,
                            "event dropped: its body and subject disagree"
                        );
                        self.mismatched.add(1, &[]);
                    }
                    Ok(envelope) => {
                        let event = FollowedEvent {
                            sequence: received.sequence,
                            envelope,
                            headers: received.event.headers,
                        };
                        // The handling span continues the publisher's trace.
                        crate::trace::event_span(&event.envelope.topic, event.sequence, &event.headers)
                            .in_scope(|| handler.event(&event));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, subject = %received.event.subject(), "undecodable event");
                        handler.gap(&Gap::Undecodable {
                            sequence: received.sequence,
                        });
                    }
                }
            }
            handler.following(false);
        }
    }

    /// The first sequence to read: after the snapshot's, or after the stream's end now
    /// (then a gap). `None` when stopped first.
    async fn anchor<H: FollowHandler>(&self, handler: &mut H, stop: &CancellationToken) -> Option<u64> {
        if let Some(sequence) = self.start_after {
            return Some(sequence.saturating_add(1));
        }
        let sequence = self
            .retrying(
                stop,
                handler,
                || self.bus.last_sequence(),
                "reading the stream's last sequence",
            )
            .await?;
        handler.gap(&Gap::Unanchored { sequence });
        Some(sequence.saturating_add(1))
    }

    async fn subscribe<H: FollowHandler>(
        &self,
        next: u64,
        handler: &mut H,
        stop: &CancellationToken,
    ) -> Option<portcullis_bus::BroadcastSubscription> {
        self.retrying(
            stop,
            handler,
            || self.bus.subscribe_broadcast(&self.filter, StartFrom::Sequence(next)),
            "subscribing to events",
        )
        .await
    }

    /// Runs `attempt` until it succeeds (backing off) or `stop`; reports an outage once it
    /// has lasted longer than the bound.
    async fn retrying<T, F, Fut, H>(
        &self,
        stop: &CancellationToken,
        handler: &mut H,
        mut attempt: F,
        what: &str,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, BusError>>,
        H: FollowHandler,
    {
        let since = Instant::now();
        let mut wait = self.retry_min;
        let mut reported = false;
        loop {
            let result = tokio::select! {
                () = stop.cancelled() => return None,
                result = attempt() => result,
            };
            match result {
                Ok(value) => return Some(value),
                Err(e) => tracing::warn!(error = %e, "{what} failed; retrying"),
            }
            let down_for = since.elapsed();
            if !reported && down_for >= self.outage_gap {
                reported = true;
                handler.gap(&Gap::Outage { down_for });
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(wait) => {}
            }
            wait = wait.saturating_mul(2).min(self.retry_max);
        }
    }

    /// Reports a gap when the stream no longer holds `expected`; returns where reading
    /// goes on (the oldest held sequence when events were dropped).
    async fn check_retained<H: FollowHandler>(&self, expected: u64, handler: &mut H) -> u64 {
        match self.bus.first_sequence().await {
            Ok(first) if first > expected => {
                tracing::warn!(expected, first, "events were dropped before they were read");
                handler.gap(&Gap::Dropped { expected, first });
                first
            }
            Ok(_) => expected,
            Err(e) => {
                tracing::warn!(error = %e, expected, "cannot check that no event was dropped");
                handler.gap(&Gap::Unchecked { expected });
                expected
            }
        }
    }
}
