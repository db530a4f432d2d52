//! Handing log records to the store without making responses wait.
//!
//! The proxy builds a [`PendingLog`] per request and calls [`LogShipper::ship`], which never
//! blocks: the record goes into a bounded queue, or — when the queue is full — is counted in
//! `aigw_logs_dropped_total` and reported with a warning. A single worker task drains the queue,
//! finishes each record off the hot path (usage, model, cost) and writes batches to a [`LogSink`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aigw_providers::{
    CustomCost, PricingTable, WireFormat, extract_usage, extract_usage_tail, model_type,
    request_model,
};
use aigw_types::LogRecord;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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
    /// Durably accept every entry of `batch`, or fail the whole batch (it may be retried).
    fn write_batch<'a>(&'a self, batch: &'a [LogEntry]) -> SinkFuture<'a>;
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
    pub response_body: BytesMut,
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
        let response_body = response_body.freeze();
        let mut usage = extract_usage(wire, &record.path, &response_body, record.streamed);
        if record.response_body_truncated {
            let tail = extract_usage_tail(wire, &record.path, &response_tail, record.streamed);
            usage.tokens_in = tail.tokens_in.or(usage.tokens_in);
            usage.tokens_out = tail.tokens_out.or(usage.tokens_out);
        }
        record.model = request_model(wire, &record.path, &request_body)
            .or(usage.model)
            .unwrap_or_default();
        record.model_type = model_type(&record.path).to_owned();
        record.tokens_in = usage.tokens_in;
        record.tokens_out = usage.tokens_out;
        record.custom_cost = custom_cost.is_some();
        record.cost = match custom_cost {
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
    tx: mpsc::Sender<PendingLog>,
    metrics: Arc<Metrics>,
    last_warning_secs: Arc<AtomicU64>,
}

/// The worker draining the queue; await [`ShipperTask::drained`] after the last
/// [`LogShipper`] is dropped to flush everything queued.
pub struct ShipperTask {
    handle: JoinHandle<()>,
}

impl ShipperTask {
    /// Wait until every queued record has been written (or counted as dropped).
    pub async fn drained(self) {
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "log shipper task failed");
        }
    }
}

/// How long a failing batch is retried (the store may be electing a leader or restarting)
/// before its records are counted as dropped. Meanwhile new records queue up, and past the
/// queue's capacity they are dropped and counted too.
const RETRY_BUDGET: Duration = Duration::from_secs(30);
/// First pause between attempts; doubled each time up to [`RETRY_MAX_DELAY`].
const RETRY_FIRST_DELAY: Duration = Duration::from_millis(50);
/// Longest pause between attempts.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

impl LogShipper {
    /// Start the worker writing to `sink` through a queue of `capacity` records, `batch_size`
    /// at a time.
    pub fn spawn(
        sink: Arc<dyn LogSink>,
        capacity: usize,
        batch_size: usize,
        metrics: Arc<Metrics>,
    ) -> (LogShipper, ShipperTask) {
        let (tx, rx) = mpsc::channel(capacity);
        let handle = tokio::spawn(run_worker(rx, sink, batch_size, metrics.clone()));
        let shipper = LogShipper {
            tx,
            metrics,
            last_warning_secs: Arc::new(AtomicU64::new(0)),
        };
        (shipper, ShipperTask { handle })
    }

    /// Queue a record without waiting. When the queue is full the record is dropped, counted and
    /// warned about (at most one warning per second, carrying the running total).
    pub fn ship(&self, pending: PendingLog) {
        let reason = match self.tx.try_send(pending) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => DropReason::QueueFull,
            Err(mpsc::error::TrySendError::Closed(_)) => DropReason::Closed,
        };
        self.metrics.logs_dropped(reason, 1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_warning_secs.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(
                ?reason,
                dropped_total = self.metrics.logs_dropped_total(),
                capacity = self.capacity(),
                "log record dropped: the log queue cannot take it"
            );
        }
    }

    /// Records waiting in the queue.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Records the queue can hold.
    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }

    /// Whether the worker is still running.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }
}

async fn run_worker(
    mut rx: mpsc::Receiver<PendingLog>,
    sink: Arc<dyn LogSink>,
    batch_size: usize,
    metrics: Arc<Metrics>,
) {
    let mut pending = Vec::with_capacity(batch_size);
    while rx.recv_many(&mut pending, batch_size).await > 0 {
        let batch: Vec<LogEntry> = pending.drain(..).map(PendingLog::finish).collect();
        let n = batch.len();
        if write_with_retry(sink.as_ref(), &batch).await {
            metrics.logs_written(n);
        } else {
            metrics.logs_dropped(DropReason::SinkError, n);
        }
    }
}

/// Write a batch, retrying with backoff; `false` when every attempt failed.
async fn write_with_retry(sink: &dyn LogSink, batch: &[LogEntry]) -> bool {
    let started = tokio::time::Instant::now();
    let mut delay = RETRY_FIRST_DELAY;
    let mut attempt = 1u32;
    loop {
        match sink.write_batch(batch).await {
            Ok(()) => return true,
            Err(e) if started.elapsed() + delay < RETRY_BUDGET => {
                tracing::warn!(error = %e, attempt, records = batch.len(), "log write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX_DELAY);
                attempt += 1;
            }
            Err(e) => {
                tracing::error!(error = %e, attempt, records = batch.len(), "log write failed; records dropped");
                return false;
            }
        }
    }
}
