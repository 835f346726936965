//! Event delivery. Every node runs a [`Deliverer`]: it takes the Postgres lease of the
//! subscriptions no live node holds (so one node delivers each, and any node takes over one
//! whose holder died), and for each POSTs the events past its per-stream cursors as
//! CloudEvents, moving the cursors only after a 2xx: at least once, in order per stream.
//! Failures back off exponentially and the subscription reports them; nothing is skipped.
//! Calls the database crate and HTTP endpoints only.

pub mod cloudevents;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aerugo_db::Pool;
use aerugo_db::events::{self, Progress, Subscription};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use prometheus::{Histogram, IntCounterVec};
use tokio::sync::watch;

use cloudevents::Selection;

use crate::http_client::{HttpClient, describe};

/// How a node delivers events.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name in leases (unique per process: a random suffix is added).
    pub node: String,
    /// How long a lease lasts without renewal: how soon another node takes over from a dead one.
    pub lease: Duration,
    /// The longest wait between attempts of a failing subscription.
    pub retry_max: Duration,
    /// Each request's timeout.
    pub timeout: Duration,
    /// Events older than this are deleted.
    pub retention: Duration,
}

/// Delivery metrics.
#[derive(Clone)]
pub struct EventMetrics {
    /// Requests to endpoints by outcome (`ok`, `http_<status>`, `error`).
    pub requests: IntCounterVec,
    /// Events delivered.
    pub delivered: IntCounterVec,
    /// Seconds from an event's commit to its delivery.
    pub lag: Histogram,
}

impl EventMetrics {
    /// The metrics, registered in `registry`.
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            prometheus::Opts::new("event_delivery_requests_total", "Event delivery requests by outcome"),
            &["outcome"],
        )?;
        let delivered = IntCounterVec::new(
            prometheus::Opts::new("events_delivered_total", "Events delivered to subscription endpoints"),
            &["type"],
        )?;
        let lag = Histogram::with_opts(
            prometheus::HistogramOpts::new("event_delivery_lag_seconds", "From an event's commit to its delivery")
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(delivered.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        Ok(EventMetrics { requests, delivered, lag })
    }
}

/// A node's deliverer.
pub struct Deliverer {
    pool: Pool,
    settings: Settings,
    owner: String,
    http: HttpClient,
    /// Bumped when new events may have been committed.
    wake: watch::Sender<u64>,
    metrics: EventMetrics,
}

/// What one round of a subscription did.
enum Round {
    /// Nothing pending.
    Idle,
    /// Sent (or passed over) a full batch: look again at once.
    Full,
    /// Sent less than a batch: look again after [`LINGER`].
    Partial,
    /// The endpoint failed; the next attempt waits for the backoff the row records.
    Failed,
    /// The lease is gone (or the subscription): stop.
    Lost,
}

impl Deliverer {
    /// A deliverer for this node.
    pub fn new(pool: Pool, settings: Settings, metrics: EventMetrics) -> anyhow::Result<Arc<Self>> {
        let http = crate::http_client::new()?;
        let owner = format!("{}-{}", settings.node, &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let (wake, _) = watch::channel(0);
        Ok(Arc::new(Deliverer { pool, settings, owner, http, wake, metrics }))
    }

    /// This node's name in leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs until the task is dropped: watches for new events, keeps the leases (a new
    /// subscription is taken within a second), runs one task per subscription held, and deletes
    /// events past their retention.
    pub async fn run(self: Arc<Self>) {
        tokio::spawn(self.clone().watch_events());
        let mut running: HashMap<i64, tokio::task::JoinHandle<()>> = HashMap::new();
        let every = (self.settings.lease / 3).clamp(Duration::from_millis(200), Duration::from_secs(1));
        let mut ticker = tokio::time::interval(every);
        let mut pruned = tokio::time::Instant::now() - Duration::from_secs(3600);
        loop {
            ticker.tick().await;
            running.retain(|_, task| !task.is_finished());
            match self.claim().await {
                Ok(held) => {
                    let held: HashSet<i64> = held.into_iter().collect();
                    running.retain(|id, task| {
                        let keep = held.contains(id);
                        if !keep {
                            task.abort();
                        }
                        keep
                    });
                    for id in held {
                        running.entry(id).or_insert_with(|| tokio::spawn(self.clone().deliver(id)));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "renewing event subscription leases failed"),
            }
            if pruned.elapsed() >= Duration::from_secs(600) {
                pruned = tokio::time::Instant::now();
                self.prune().await;
            }
        }
    }

    /// Gives up this node's leases (at shutdown), so another node delivers at once.
    pub async fn release(&self) {
        let released = async { events::release(&self.pool.get().await?, &self.owner).await };
        match released.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(subscriptions = n, "event subscription leases released"),
            Err(e) => tracing::warn!(error = %e, "releasing event subscription leases failed"),
        }
    }

    async fn claim(&self) -> aerugo_db::Result<Vec<i64>> {
        let client = self.pool.get().await?;
        events::claim(&client, &self.owner, self.settings.lease).await
    }

    async fn prune(&self) {
        let Ok(retention) = time::Duration::try_from(self.settings.retention) else { return };
        let cutoff = time::OffsetDateTime::now_utc() - retention;
        let pruned = async {
            let client = self.pool.get().await?;
            let mut total = 0;
            loop {
                let n = events::prune(&client, cutoff, 10_000).await?;
                total += n;
                if n < 10_000 {
                    return Ok::<_, aerugo_db::Error>(total);
                }
            }
        };
        match pruned.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "events past their retention deleted"),
            Err(e) => tracing::warn!(error = %e, "deleting old events failed"),
        }
    }

    /// Wakes the subscription tasks when the event id sequence moves (checked every
    /// [`WATCH_EVERY`]), and on the ticks of the next half second too: the transaction that took
    /// an id may commit after the tick that saw it. Writers do not NOTIFY: that would serialize
    /// their commits.
    async fn watch_events(self: Arc<Self>) {
        const TRAILING_TICKS: u32 = 10;
        let mut ticker = tokio::time::interval(WATCH_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut seen, mut trailing) = (None, 0u32);
        loop {
            ticker.tick().await;
            let last = async { events::last_id(&self.pool.get().await?).await };
            match last.await {
                Ok(last) => {
                    if seen.is_some_and(|s| s != last) {
                        trailing = TRAILING_TICKS;
                    }
                    if trailing > 0 {
                        trailing -= 1;
                        self.wake.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    seen = Some(last);
                }
                Err(e) => tracing::debug!(error = %e, "reading the event id sequence failed"),
            }
        }
    }

    /// Delivers subscription `id` for as long as this node holds its lease.
    async fn deliver(self: Arc<Self>, id: i64) {
        let mut wake = self.wake.subscribe();
        loop {
            wake.borrow_and_update();
            let sub = match self.pool.get().await.map_err(aerugo_db::Error::from) {
                Ok(client) => events::subscription(&client, id).await,
                Err(e) => Err(e),
            };
            let sub = match sub {
                Ok(Some(sub)) => sub,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(subscription = id, error = %e, "reading an event subscription failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Some(wait) = sub.next_attempt_at.map(|at| at - time::OffsetDateTime::now_utc())
                && wait.is_positive()
            {
                tokio::time::sleep(wait.try_into().unwrap_or(Duration::ZERO)).await;
                continue;
            }
            let wait = match self.round(&sub).await {
                Ok(Round::Full) => continue,
                // Let events gather into the next batch instead of sending a request for each.
                Ok(Round::Partial) => LINGER,
                Ok(Round::Lost) => return,
                Ok(Round::Failed) => continue,
                Ok(Round::Idle) => Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(subscription = %sub.name, org = %sub.org, error = %e, "event delivery round failed");
                    Duration::from_secs(1)
                }
            };
            // New events wake the task; the timeout also catches what the watch could not see
            // (a transaction that committed long after taking its ids).
            if let Ok(Err(_)) = tokio::time::timeout(wait, wake.changed()).await {
                return;
            }
        }
    }

    /// One batch: skip what the subscription does not select, POST what it does, move the
    /// cursors.
    async fn round(&self, sub: &Subscription) -> aerugo_db::Result<Round> {
        let selection = Selection::of(sub);
        let batch_size = usize::try_from(sub.batch_size.max(1)).unwrap_or(1);
        let client = self.pool.get().await?;
        let streams = events::pending_streams(&client, sub).await?;
        if streams.is_empty() {
            return Ok(Round::Idle);
        }
        let mut progress = Progress::default();
        let (wanted, skipped): (Vec<_>, Vec<_>) = streams.iter().partition(|s| selection.wants_stream(&s.name));
        progress.cursors.extend(skipped.iter().map(|s| (s.name.clone(), s.last_seq)));
        let limit = batch_size.max(256);
        let fetched = if wanted.is_empty() {
            Vec::new()
        } else {
            events::next_events(&client, sub.org_id, &wanted, i64::try_from(limit).unwrap_or(256)).await?
        };
        let mut consumed: HashMap<&str, i64> = HashMap::new();
        let mut payload = Vec::new();
        let mut walked = 0;
        for event in &fetched {
            if payload.len() == batch_size {
                break;
            }
            walked += 1;
            consumed.insert(&event.stream, event.seq);
            if selection.wants(event) {
                payload.push(event);
            }
        }
        // More is pending when this batch stopped short of what was fetched, or the fetch was full.
        let more = walked < fetched.len() || fetched.len() == limit;
        progress.cursors.extend(consumed.into_iter().map(|(s, q)| (s.to_owned(), q)));
        // No connection is held while an endpoint answers (it may take its timeout).
        drop(client);
        if !payload.is_empty() {
            if let Err(error) = self.post(sub, &payload).await {
                let retry_in = backoff(sub.failures + 1, self.settings.retry_max);
                tracing::warn!(subscription = %sub.name, org = %sub.org, endpoint = %sub.endpoint, %error,
                    failures = sub.failures + 1, retry_in_ms = retry_in.as_millis() as u64, "event delivery failed");
                let client = self.pool.get().await?;
                return Ok(if events::failed(&client, sub.id, &self.owner, &error, retry_in).await? {
                    Round::Failed
                } else {
                    Round::Lost
                });
            }
            progress.sent = i64::try_from(payload.len()).unwrap_or(i64::MAX);
            progress.last_id = payload.last().map(|e| e.id);
            let now = time::OffsetDateTime::now_utc();
            for event in &payload {
                self.metrics.delivered.with_label_values(&[&event.kind]).inc();
                self.metrics.lag.observe((now - event.at).as_seconds_f64().max(0.0));
            }
        }
        if progress.cursors.is_empty() {
            return Ok(Round::Idle);
        }
        let mut client = self.pool.get().await?;
        if !events::advance(&mut client, sub.id, &self.owner, sub.epoch, &progress).await? {
            return Ok(Round::Lost);
        }
        Ok(if more { Round::Full } else { Round::Partial })
    }

    /// POSTs `payload` to the subscription's endpoint; the error says what went wrong (never
    /// the response body: an endpoint's answer is not shown to the subscription's owner).
    async fn post(&self, sub: &Subscription, payload: &[&events::Event]) -> Result<(), String> {
        let (body, content_type) = cloudevents::body(&sub.org, payload, sub.batch_size);
        let mut request = http::Request::post(&sub.endpoint)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::USER_AGENT, concat!("aerugo/", env!("CARGO_PKG_VERSION")))
            .header("aerugo-subscription", &sub.name);
        if let Some(secret) = &sub.signing_secret {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            request = request.header(cloudevents::SIGNATURE_HEADER, cloudevents::signature(secret, now, &body));
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| format!("invalid request: {e}"))?;
        let outcome = tokio::time::timeout(self.settings.timeout, async {
            let response = self.http.request(request).await.map_err(|e| describe(&e))?;
            let status = response.status();
            // Read (and drop) the body so the connection is reused.
            let _ = response.into_body().collect().await;
            Ok::<_, String>(status)
        })
        .await;
        let result = match outcome {
            Err(_) => Err(format!("no answer within {} s", self.settings.timeout.as_secs())),
            Ok(Err(e)) => Err(e),
            Ok(Ok(status)) if status.is_success() => Ok(()),
            Ok(Ok(status)) => Err(format!("the endpoint answered HTTP {}", status.as_u16())),
        };
        let label = match &result {
            Ok(()) => "ok".to_owned(),
            Err(e) if e.starts_with("the endpoint answered HTTP ") => {
                format!("http_{}", e.trim_start_matches("the endpoint answered HTTP "))
            }
            Err(_) => "error".to_owned(),
        };
        self.metrics.requests.with_label_values(&[&label]).inc();
        result
    }
}

/// How often a node checks for new events.
pub const WATCH_EVERY: Duration = Duration::from_millis(50);

/// How long a subscription that sent less than a batch waits before its next request.
pub const LINGER: Duration = Duration::from_millis(100);

/// The wait after the `failures`-th consecutive failure: 1 s, doubling, at most `max`.
pub fn backoff(failures: i32, max: Duration) -> Duration {
    let exponent = u32::try_from(failures.clamp(1, 30) - 1).unwrap_or(0);
    Duration::from_secs(1u64 << exponent.min(20)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let max = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(i32::MAX, max), max);
        assert_eq!(backoff(0, max), Duration::from_secs(1));
    }
}
