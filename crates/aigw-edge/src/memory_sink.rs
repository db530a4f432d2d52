//! A [`LogSink`] that keeps entries in memory, for tests and benchmarks.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::shipper::{LogEntry, LogSink, SinkFuture};

/// Keeps every written entry; lets tests wait for them.
#[derive(Debug, Default)]
pub struct MemorySink {
    entries: Mutex<Vec<LogEntry>>,
    written: Notify,
}

impl MemorySink {
    /// A copy of every entry written so far, in write order.
    pub fn entries(&self) -> Vec<LogEntry> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Number of entries written so far.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wait until at least `n` entries were written, or `timeout` passes; returns the entries.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<LogEntry> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.written.notified();
            let entries = self.entries();
            if entries.len() >= n || tokio::time::Instant::now() >= deadline {
                return entries;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }
}

impl LogSink for MemorySink {
    fn write_batch<'a>(&'a self, _lane: u64, batch: &'a [LogEntry]) -> SinkFuture<'a> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(batch);
        self.written.notify_waiters();
        Box::pin(std::future::ready(Ok(())))
    }
}
