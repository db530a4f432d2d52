//! One request's journey through the edge: measured, captured, and logged exactly once.
//!
//! [`ExchangeGuard`] is created when the edge commits to proxying a request. It travels from the
//! handler into the response body ([`TeeBody`]), records what it sees, and — whether the exchange
//! completes, fails, or is abandoned because the client went away (the guard is dropped) — counts
//! the request in the metrics and ships its log record exactly once.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aigw_providers::Provider;
use aigw_types::RequestOutcome;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::cache::{CacheCapture, Publish};
use crate::metrics::Metrics;
use crate::shipper::{LogShipper, PendingLog};

/// How much of the end of a response cut at the size limit is kept to read its usage from.
pub const RESPONSE_TAIL_BYTES: usize = 64 * 1024;

/// Status recorded when the client left before the upstream answered (nginx's convention).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Tracks one proxied request until its response is finished or abandoned.
pub struct ExchangeGuard {
    provider: Arc<Provider>,
    started: Instant,
    status: Option<u16>,
    log: Option<PendingLog>,
    capture_limit: usize,
    /// The response being captured for the cache, when this exchange fills it.
    fill: Option<CacheCapture>,
    finished: bool,
    shipper: LogShipper,
    metrics: Arc<Metrics>,
}

impl ExchangeGuard {
    /// Start tracking; `log` is `None` when logging is off for this request.
    pub fn new(
        provider: Arc<Provider>,
        started: Instant,
        log: Option<PendingLog>,
        capture_limit: usize,
        shipper: LogShipper,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            provider,
            started,
            status: None,
            log,
            capture_limit,
            fill: None,
            finished: false,
            shipper,
            metrics,
        }
    }

    /// Also capture the response for the cache (stored if it completes with a 2xx).
    pub(crate) fn fill_cache(&mut self, fill: CacheCapture) {
        self.fill = Some(fill);
    }

    /// Note the upstream's response head.
    pub fn response_head(&mut self, status: u16, content_type: Option<&str>, streamed: bool) {
        self.status = Some(status);
        if let Some(fill) = &mut self.fill {
            fill.content_type = content_type.map(str::to_owned);
        }
        if let Some(log) = &mut self.log {
            let record = &mut log.record;
            record.status_code = status;
            record.response_content_type = content_type.map(str::to_owned);
            record.streamed = streamed;
            record.time_to_first_byte_ms = Some(millis(self.started.elapsed()));
        }
    }

    /// Copy (up to the limit) a chunk relayed to the client into the log capture.
    ///
    /// Copied rather than kept by reference: a received chunk is a view into the connection's
    /// read buffer, and holding many small views would pin many large buffers for the whole
    /// life of a stream.
    pub(crate) fn capture(&mut self, chunk: &Bytes) {
        if let Some(fill) = &mut self.fill
            && !fill.push(chunk)
        {
            // Too large to cache: identical requests waiting for it go upstream themselves.
            self.fill = None;
        }
        let Some(log) = &mut self.log else { return };
        log.record.response_size += chunk.len() as u64;
        let room = self.capture_limit.saturating_sub(log.response_body.len());
        let kept = chunk.len().min(room);
        log.response_body.push(&chunk[..kept]);
        if kept < chunk.len() {
            log.record.response_body_truncated = true;
            // Usage comes at the end of a response: keep its last bytes for the log too.
            let tail = &mut log.response_tail;
            tail.extend_from_slice(&chunk[kept..]);
            if tail.len() > 2 * RESPONSE_TAIL_BYTES {
                let excess = tail.len() - RESPONSE_TAIL_BYTES;
                let _ = tail.split_to(excess);
            }
        }
    }

    /// Finish with the given outcome; `status` replaces the upstream's when the gateway answered
    /// by itself (502, 504).
    pub fn finish(mut self, outcome: RequestOutcome, status: Option<u16>, error: Option<String>) {
        if let (Some(publish), Ok(runtime)) = (
            self.complete(outcome, status, error),
            tokio::runtime::Handle::try_current(),
        ) {
            runtime.spawn(publish);
        }
    }

    /// [`ExchangeGuard::finish`], returning the cache write still to do (see
    /// [`TeeBody`], which holds the end of the response until it is done).
    fn finish_publishing(
        mut self,
        outcome: RequestOutcome,
        status: Option<u16>,
        error: Option<String>,
    ) -> Option<Publish> {
        self.complete(outcome, status, error)
    }

    fn complete(
        &mut self,
        outcome: RequestOutcome,
        status: Option<u16>,
        error: Option<String>,
    ) -> Option<Publish> {
        self.finished = true;
        let status = status.or(self.status).unwrap_or(CLIENT_CLOSED_REQUEST);
        let elapsed = self.started.elapsed();
        self.metrics.request(&self.provider.slug, status, elapsed);
        let publish = match self.fill.take() {
            Some(fill) if outcome == RequestOutcome::Completed => fill.complete(status),
            _ => None,
        };
        if let Some(mut log) = self.log.take() {
            let record = &mut log.record;
            record.status_code = status;
            record.outcome = outcome;
            record.error = error;
            record.duration_ms = millis(elapsed);
            record.success = outcome == RequestOutcome::Completed && (200..300).contains(&status);
            self.shipper.ship(log);
        }
        publish
    }
}

impl Drop for ExchangeGuard {
    fn drop(&mut self) {
        if !self.finished {
            tracing::debug!(provider = %self.provider.slug, "client disconnected before the response completed");
            // Aborted: nothing is cached, so there is nothing to publish.
            let _ = self.complete(
                RequestOutcome::ClientAborted,
                None,
                Some("client disconnected before the response completed".to_owned()),
            );
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The upstream stalled longer than the idle timeout in the middle of a response.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?}")]
pub struct StreamStalled(pub Duration);

/// The response body relayed to the client: passes upstream frames through unchanged as they
/// arrive, tees data into the exchange's log capture, and ends the exchange when the stream ends,
/// fails or stalls. Dropping it (client gone) drops the upstream body, which cancels the request.
pub struct TeeBody {
    inner: hyper::body::Incoming,
    guard: Option<ExchangeGuard>,
    /// The cache write under way, and what it holds back: the last frame, or (`None`) the
    /// end of the body.
    publishing: Option<(Publish, Option<Frame<Bytes>>)>,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    last_frame: Instant,
}

impl TeeBody {
    /// Relay `inner`, failing it if the upstream stays silent for `idle_timeout`.
    pub fn new(inner: hyper::body::Incoming, guard: ExchangeGuard, idle_timeout: Duration) -> Self {
        Self {
            inner,
            guard: Some(guard),
            publishing: None,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            last_frame: Instant::now(),
        }
    }

    fn end(&mut self, outcome: RequestOutcome, error: Option<String>) {
        if let Some(guard) = self.guard.take() {
            guard.finish(outcome, None, error);
        }
    }

    /// Ends the exchange as completed and yields `last` (a frame, or `None` for the end of
    /// the body) once the response's cache write, if any, is done.
    fn complete_with(
        &mut self,
        last: Option<Frame<Bytes>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let publish = self
            .guard
            .take()
            .and_then(|guard| guard.finish_publishing(RequestOutcome::Completed, None, None));
        match publish {
            Some(publish) => {
                self.publishing = Some((publish, last));
                self.poll_publishing(cx)
            }
            None => Poll::Ready(last.map(Ok)),
        }
    }

    fn poll_publishing(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.publishing.take() {
            Some((mut publish, held)) => {
                if publish.as_mut().poll(cx).is_pending() {
                    self.publishing = Some((publish, held));
                    return Poll::Pending;
                }
                Poll::Ready(held.map(Ok))
            }
            None => Poll::Ready(None),
        }
    }

    /// Whether the idle timer fired with no frame since; re-arms it otherwise.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        // The timer is re-armed lazily, only when it fires, so busy streams cost no timer work.
        while self.idle.as_mut().poll(cx).is_ready() {
            let deadline = self.last_frame + self.idle_timeout;
            if Instant::now() >= deadline {
                return true;
            }
            self.idle.as_mut().reset(deadline.into());
        }
        false
    }
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.publishing.is_some() {
            return this.poll_publishing(cx);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.last_frame = Instant::now();
                if let (Some(data), Some(guard)) = (frame.data_ref(), this.guard.as_mut()) {
                    guard.capture(data);
                }
                // With a known length, hyper stops polling once the last byte is out, so the end
                // must be observed here rather than from a final `None`.
                if this.inner.is_end_stream() && this.guard.is_some() {
                    return this.complete_with(Some(frame), cx);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let message = format!(
                    "upstream response failed mid-body: {}",
                    crate::proxy::root_cause(&e)
                );
                this.end(RequestOutcome::UpstreamBodyError, Some(message));
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => this.complete_with(None, cx),
            Poll::Pending if this.guard.is_some() && this.stalled(cx) => {
                let stalled = StreamStalled(this.idle_timeout);
                this.end(RequestOutcome::UpstreamTimeout, Some(stalled.to_string()));
                Poll::Ready(Some(Err(Box::new(stalled))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Until the exchange is finished the body must be polled once more, so that the end of
        // an empty upstream body is observed and logged as completed.
        self.guard.is_none() && self.publishing.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
