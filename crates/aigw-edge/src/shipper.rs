//! Handing log records to the store without making responses wait.
//!
//! The proxy builds a [`PendingLog`] per request and calls [`LogShipper::ship`], which never
//! blocks: the record joins the queue of its *lane* — the sink's partition of its gateway, a
//! shard group in a cluster — or, when the records buffered across every lane reach the bound,
//! is counted in `aigw_logs_dropped_total` and reported with a warning. Each lane has its own
//! worker task, which finishes records off the hot path (usage, model, cost) and writes them in
//! batches to the [`LogSink`], retrying a failed batch until it is written. So a lane whose
//! store is unavailable holds its records (up to the bound) without delaying the others, and
//! lanes write concurrently.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aigw_providers::{
    CustomCost, PricingTable, WireFormat, extract_tokens, extract_usage, extract_usage_tail,
    model_type, request_model,
};
use aigw_types::LogRecord;
use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use aigw_config::LogQueueConfig;

use crate::capture::CapturedBody;
use crate::metrics::{DropReason, Metrics};

/// A finished log record with the bodies to store beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// The record for the index.
    pub record: LogRecord,
    /// Request body (possibly truncated), when payload collection is on.
    pub request_body: Option<Bytes>,
    /// Response body (possibly truncated), when payload collection is on.
    pub response_body: Option<Bytes>,
}

/// Why a sink rejected a batch.
#[derive(Debug, thiserror::Error)]
#[error("log sink failed: {0}")]
pub struct SinkError(pub String);

/// Future returned by [`LogSink::write_batch`].
pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// Where finished log entries go: the shard store, or a test double.
pub trait LogSink: Send + Sync + 'static {
    /// Durably accept every entry of `batch`, all of lane `lane` (see [`LogSink::lane`]), or
    /// fail the whole batch (it may be retried, to the same lane).
    fn write_batch<'a>(&'a self, lane: u64, batch: &'a [LogEntry]) -> SinkFuture<'a>;

    /// The lane of a record of a gateway created at `created_at_ms`: records of different
    /// lanes are written, retried and held independently. A sink whose parts fail
    /// independently (the shard groups of a cluster) names them here; one lane by default.
    fn lane(&self, _account: &str, _gateway: &str, _created_at_ms: i64) -> u64 {
        0
    }
}

/// A request as captured by the edge, before usage and cost are worked out.
#[derive(Debug)]
pub struct PendingLog {
    /// The record, with everything the edge measured.
    pub record: LogRecord,
    /// How to read the bodies.
    pub wire: WireFormat,
    /// The request body as stored (already cut at the limit).
    pub request_body: Bytes,
    /// The response body as relayed, up to the limit.
    pub response_body: CapturedBody,
    /// When the body exceeded the limit: its last bytes (up to about twice
    /// [`RESPONSE_TAIL_BYTES`](crate::exchange::RESPONSE_TAIL_BYTES)), for usage extraction.
    pub response_tail: BytesMut,
    /// `cf-aig-custom-cost`, if given.
    pub custom_cost: Option<CustomCost>,
}

impl PendingLog {
    /// Work out model, usage and cost, and drop bodies the client asked not to store.
    pub fn finish(self) -> LogEntry {
        let PendingLog {
            mut record,
            wire,
            request_body,
            response_body,
            response_tail,
            custom_cost,
        } = self;
        let response_body = response_body.join();
        let requested = request_model(wire, &record.path, &request_body);
        // The response's model is wanted only when the request did not name one.
        let extract = if requested.is_some() {
            extract_tokens
        } else {
            extract_usage
        };
        let mut usage = extract(wire, &record.path, &response_body, record.streamed);
        if record.response_body_truncated {
            let tail = extract_usage_tail(wire, &record.path, &response_tail, record.streamed);
            usage.tokens_in = tail.tokens_in.or(usage.tokens_in);
            usage.tokens_out = tail.tokens_out.or(usage.tokens_out);
        }
        record.model = requested.or(usage.model).unwrap_or_default();
        record.model_type = model_type(&record.path).to_owned();
        record.tokens_in = usage.tokens_in;
        record.tokens_out = usage.tokens_out;
        record.custom_cost = custom_cost.is_some();
        record.cost = match custom_cost {
            // A cached response cost nothing; its token counts are the original's.
            _ if record.cached => Some(0.0),
            Some(custom) => custom.cost(usage.tokens_in, usage.tokens_out),
            None => PricingTable::builtin().cost(
                &record.provider,
                &record.model,
                usage.tokens_in,
                usage.tokens_out,
            ),
        };
        let (request_body, response_body) = if record.payload_collected {
            (Some(request_body), Some(response_body))
        } else {
            (None, None)
        };
        LogEntry {
            record,
            request_body,
            response_body,
        }
    }
}

/// The sending side of the log queue; cheap to clone.
#[derive(Clone)]
pub struct LogShipper {
    queue: Arc<Queue>,
}

/// The lanes and their shared bound. Dropped with the last [`LogShipper`], which closes every
/// lane: the workers drain what they hold and stop.
struct Queue {
    sink: Arc<dyn LogSink>,
    batch_size: usize,
    linger: Duration,
    capacity: usize,
    /// Records accepted and not yet written or dropped, across every lane.
    buffered: Arc<AtomicUsize>,
    /// Read on every record, written once per lane.
    lanes: RwLock<HashMap<u64, Arc<LaneQueue>>>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Set when the queue closes: from then on a failing batch is retried only for
    /// [`SHUTDOWN_RETRY_BUDGET`], and no batch lingers.
    closing: Arc<AtomicBool>,
    /// Wakes the lanes lingering when the queue closes.
    closed: Arc<Notify>,
    metrics: Arc<Metrics>,
    last_warning_secs: AtomicU64,
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        self.closed.notify_waiters();
        // A worker waiting for records learns of the close from its own queue's wake-up,
        // which is kept for it if it is not waiting yet.
        for lane in self
            .lanes
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            lane.wake.notify_one();
        }
    }
}

/// One lane's records waiting for its worker.
///
/// A plain vector under a lock rather than a channel: a record costs a push, the worker takes
/// everything queued in one swap, and the worker is woken only by the record that finds the
/// queue empty (a lane's batch then lingers on a timer, not on wake-ups).
struct LaneQueue {
    state: Mutex<LaneState>,
    /// Wakes the worker when a record lands in an empty queue, or when the shipper closes.
    wake: Notify,
}

struct LaneState {
    records: Vec<PendingLog>,
    /// Cleared when the worker stops: records are refused from then on.
    open: bool,
}

impl LaneQueue {
    fn new() -> Self {
        Self {
            state: Mutex::new(LaneState {
                records: Vec::new(),
                open: true,
            }),
            wake: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `record`; `false` when the lane's worker has stopped.
    fn push(&self, record: PendingLog) -> bool {
        let mut state = self.state();
        if !state.open {
            return false;
        }
        state.records.push(record);
        let first = state.records.len() == 1;
        drop(state);
        if first {
            self.wake.notify_one();
        }
        true
    }

    fn len(&self) -> usize {
        self.state().records.len()
    }

    /// Moves up to `max` of the oldest records into `into`, which must be empty.
    fn take(&self, into: &mut Vec<PendingLog>, max: usize) {
        let mut state = self.state();
        if state.records.len() <= max {
            std::mem::swap(&mut state.records, into);
        } else {
            into.extend(state.records.drain(..max));
        }
    }

    /// Refuses records from now on; returns those still queued.
    fn stop(&self) -> Vec<PendingLog> {
        let mut state = self.state();
        state.open = false;
        std::mem::take(&mut state.records)
    }
}

/// The workers draining the lanes; await [`ShipperTask::drained`] after the last
/// [`LogShipper`] is dropped to flush everything queued.
pub struct ShipperTask {
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Set, and `closed` notified, when the last [`LogShipper`] is dropped.
    closing: Arc<AtomicBool>,
    closed: Arc<Notify>,
}

impl ShipperTask {
    /// Wait until the last [`LogShipper`] is dropped and every record it queued has been
    /// written (or counted as dropped). Until then a record may still open a lane: a
    /// WebSocket session answering its last request as the server shuts down ships its log
    /// after the HTTP connections are gone.
    pub async fn drained(self) {
        loop {
            // Registered before the flag is read, so a close between the two still wakes us.
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.closing.load(Ordering::SeqCst) {
                break;
            }
            closed.await;
        }
        loop {
            let workers: Vec<JoinHandle<()>> =
                std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
            if workers.is_empty() {
                return;
            }
            for worker in workers {
                if let Err(e) = worker.await {
                    tracing::error!(error = %e, "log shipper task failed");
                }
            }
        }
    }
}

/// After shutdown begins, how long a failing batch is still retried before its records are
/// counted as dropped (a lane whose store stays down must not hold the process forever).
const SHUTDOWN_RETRY_BUDGET: Duration = Duration::from_secs(30);
/// First pause between attempts; doubled each time up to [`RETRY_MAX_DELAY`].
const RETRY_FIRST_DELAY: Duration = Duration::from_millis(50);
/// Longest pause between attempts.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

impl LogShipper {
    /// Start shipping to `sink`: at most `config.capacity` records buffered across every
    /// lane, written `config.batch_size` at a time, each lane lingering up to
    /// `config.linger_ms` for a batch to fill.
    pub fn spawn(
        sink: Arc<dyn LogSink>,
        config: &LogQueueConfig,
        metrics: Arc<Metrics>,
    ) -> (LogShipper, ShipperTask) {
        let workers = Arc::new(Mutex::new(Vec::new()));
        let (closing, closed) = (Arc::new(AtomicBool::new(false)), Arc::new(Notify::new()));
        let queue = Queue {
            sink,
            batch_size: config.batch_size.max(1),
            linger: Duration::from_millis(config.linger_ms),
            capacity: config.capacity,
            buffered: Arc::new(AtomicUsize::new(0)),
            lanes: RwLock::default(),
            workers: workers.clone(),
            closing: closing.clone(),
            closed: closed.clone(),
            metrics,
            last_warning_secs: AtomicU64::new(0),
        };
        (
            LogShipper {
                queue: Arc::new(queue),
            },
            ShipperTask {
                workers,
                closing,
                closed,
            },
        )
    }

    /// Queue a record without waiting. When the bound is reached the record is dropped,
    /// counted and warned about (at most one warning per second, carrying the running total).
    pub fn ship(&self, pending: PendingLog) {
        let q = &self.queue;
        if q.buffered.fetch_add(1, Ordering::Relaxed) >= q.capacity {
            q.buffered.fetch_sub(1, Ordering::Relaxed);
            return self.dropped(DropReason::QueueFull);
        }
        let record = &pending.record;
        let lane = q
            .sink
            .lane(&record.account_id, &record.gateway_id, record.created_at_ms);
        let lanes = q.lanes.read().unwrap_or_else(PoisonError::into_inner);
        let queued = if let Some(queue) = lanes.get(&lane) {
            queue.push(pending)
        } else {
            drop(lanes);
            let mut lanes = q.lanes.write().unwrap_or_else(PoisonError::into_inner);
            lanes
                .entry(lane)
                .or_insert_with(|| q.open_lane(lane))
                .push(pending)
        };
        if !queued {
            q.buffered.fetch_sub(1, Ordering::Relaxed);
            self.dropped(DropReason::Closed);
        }
    }

    fn dropped(&self, reason: DropReason) {
        let q = &self.queue;
        q.metrics.logs_dropped(reason, 1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if q.last_warning_secs.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(
                ?reason,
                dropped_total = q.metrics.logs_dropped_total(),
                capacity = q.capacity,
                "log record dropped: the log queue cannot take it"
            );
        }
    }

    /// Records waiting to be written, across every lane.
    pub fn depth(&self) -> usize {
        self.queue.buffered.load(Ordering::Relaxed)
    }

    /// Records the queue can hold, across every lane.
    pub fn capacity(&self) -> usize {
        self.queue.capacity
    }

    /// Whether the shipper still accepts records.
    pub fn is_running(&self) -> bool {
        !self.queue.closing.load(Ordering::Relaxed)
    }
}

impl Queue {
    /// A lane's queue, with its worker.
    fn open_lane(&self, lane: u64) -> Arc<LaneQueue> {
        let queue = Arc::new(LaneQueue::new());
        let worker = Lane {
            lane,
            sink: self.sink.clone(),
            batch_size: self.batch_size,
            linger: self.linger,
            buffered: self.buffered.clone(),
            closing: self.closing.clone(),
            closed: self.closed.clone(),
            metrics: self.metrics.clone(),
        };
        let handle = tokio::spawn(worker.run(queue.clone()));
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(handle);
        queue
    }
}

/// One lane's worker.
struct Lane {
    lane: u64,
    sink: Arc<dyn LogSink>,
    batch_size: usize,
    /// How long a batch may wait to fill.
    linger: Duration,
    buffered: Arc<AtomicUsize>,
    closing: Arc<AtomicBool>,
    closed: Arc<Notify>,
    metrics: Arc<Metrics>,
}

/// Stops a lane's queue when its worker ends, however it ends: later records are refused
/// (counted as dropped, `closed`). When the worker failed (a panic), the batch it was writing
/// (`sink_error`) and the records still queued (`closed`) are counted as dropped too, so the
/// queue's depth comes back down.
struct StopOnDrop<'a> {
    queue: &'a LaneQueue,
    lane: &'a Lane,
    /// Records of the batch being written.
    in_flight: usize,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let left = self.queue.stop().len();
        let metrics = &self.lane.metrics;
        if self.in_flight > 0 {
            metrics.logs_dropped(DropReason::SinkError, self.in_flight);
        }
        if left > 0 {
            metrics.logs_dropped(DropReason::Closed, left);
        }
        self.lane
            .buffered
            .fetch_sub(self.in_flight + left, Ordering::Relaxed);
    }
}

impl Lane {
    async fn run(self, queue: Arc<LaneQueue>) {
        let mut stop = StopOnDrop {
            queue: &queue,
            lane: &self,
            in_flight: 0,
        };
        let mut pending = Vec::with_capacity(self.batch_size);
        while self.wait_for_records(&queue).await {
            self.linger(&queue).await;
            queue.take(&mut pending, self.batch_size);
            let batch: Vec<LogEntry> = pending.drain(..).map(PendingLog::finish).collect();
            // A backlog once taken whole is not kept allocated.
            pending.shrink_to(self.batch_size);
            let n = batch.len();
            stop.in_flight = n;
            if self.write_with_retry(&batch).await {
                self.metrics.logs_written(n);
            } else {
                self.metrics.logs_dropped(DropReason::SinkError, n);
            }
            self.buffered.fetch_sub(n, Ordering::Relaxed);
            stop.in_flight = 0;
        }
    }

    /// Waits until the lane has records (`true`), or the queue has closed with none left.
    async fn wait_for_records(&self, queue: &LaneQueue) -> bool {
        loop {
            // Taken before the checks: a record or a close after them leaves it ready.
            let woken = queue.wake.notified();
            if queue.len() > 0 {
                return true;
            }
            if self.closing.load(Ordering::SeqCst) {
                return false;
            }
            woken.await;
        }
    }

    /// Once a batch has begun but is not full, wait the linger time for it to fill. The wait
    /// is one timer, not a wake-up per record: a lane woken by every record it is sent costs
    /// more than the wait saves. Under a load that fills batches the queue already holds a
    /// full one and nothing waits; once the queue closes nothing waits either.
    async fn linger(&self, queue: &LaneQueue) {
        if queue.len() >= self.batch_size || self.linger.is_zero() {
            return;
        }
        // Registered before the flag is read, so a close between the two still wakes us.
        let closed = self.closed.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if self.closing.load(Ordering::SeqCst) {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(self.linger) => {}
            () = closed => {}
        }
    }

    /// Write a batch, retrying with backoff until it is written; `false` when the shipper
    /// is shutting down and the batch still failed after [`SHUTDOWN_RETRY_BUDGET`].
    async fn write_with_retry(&self, batch: &[LogEntry]) -> bool {
        let mut delay = RETRY_FIRST_DELAY;
        let mut attempt = 1u32;
        let mut closing_since = None;
        loop {
            let error = match self.sink.write_batch(self.lane, batch).await {
                Ok(()) => return true,
                Err(e) => e,
            };
            if self.closing.load(Ordering::Relaxed) {
                let since = *closing_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() + delay >= SHUTDOWN_RETRY_BUDGET {
                    tracing::error!(error = %error, lane = self.lane, attempt, records = batch.len(), "log write failed at shutdown; records dropped");
                    return false;
                }
            }
            tracing::warn!(error = %error, lane = self.lane, attempt, records = batch.len(), "log write failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_MAX_DELAY);
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ulid::Ulid;

    /// A sink with a bug: it panics on every batch.
    struct PanickingSink;

    impl LogSink for PanickingSink {
        fn write_batch<'a>(&'a self, _lane: u64, _batch: &'a [LogEntry]) -> SinkFuture<'a> {
            Box::pin(async { panic!("a sink bug") })
        }
    }

    fn pending() -> PendingLog {
        PendingLog {
            record: LogRecord::new(Ulid::new(), 0, "acct", "gw", "openai"),
            wire: WireFormat::OpenAi,
            request_body: Bytes::new(),
            response_body: CapturedBody::default(),
            response_tail: BytesMut::new(),
            custom_cost: None,
        }
    }

    #[tokio::test]
    async fn draining_waits_for_the_last_shipper_and_the_lane_it_opens_last() {
        let sink = Arc::new(crate::MemorySink::default());
        let metrics = Arc::new(Metrics::default());
        let (shipper, task) = LogShipper::spawn(sink.clone(), &LogQueueConfig::default(), metrics);
        // Draining begins before any record, so before any lane, as when the server stops
        // while a WebSocket session is still answering.
        let drained = tokio::spawn(task.drained());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!drained.is_finished(), "drained while a shipper was alive");
        shipper.ship(pending());
        drop(shipper);
        drained.await.unwrap();
        assert_eq!(sink.entries().len(), 1, "the last record was written");
    }

    #[tokio::test]
    async fn a_failed_lane_refuses_and_counts_records_and_its_depth_comes_back_down() {
        let metrics = Arc::new(Metrics::default());
        let config = LogQueueConfig {
            linger_ms: 0,
            ..LogQueueConfig::default()
        };
        let (shipper, task) = LogShipper::spawn(Arc::new(PanickingSink), &config, metrics.clone());
        shipper.ship(pending());
        // The worker takes the record, and its sink panics while writing it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while metrics.logs_dropped_total() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the failed batch was never counted"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            shipper.depth(),
            0,
            "the failed batch still counts as queued"
        );
        // Its lane now refuses records instead of holding them forever.
        shipper.ship(pending());
        assert_eq!(metrics.logs_dropped_total(), 2);
        assert_eq!(shipper.depth(), 0);
        let text = metrics.render(shipper.depth(), shipper.capacity());
        assert!(
            text.contains(r#"aigw_logs_dropped_total{reason="sink_error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"aigw_logs_dropped_total{reason="closed"} 1"#),
            "{text}"
        );
        drop(shipper);
        task.drained().await;
    }
}
