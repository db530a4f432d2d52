//! The log queue never makes responses wait, and never drops a record silently.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aigw_edge::{LogEntry, LogSink, MemorySink, SinkError, SinkFuture};
use serde_json::json;
use support::Harness;
use tokio::sync::Semaphore;

/// A sink that holds every write until released, like a store that has stalled.
struct StalledSink {
    gate: Semaphore,
    inner: Arc<MemorySink>,
}

impl LogSink for StalledSink {
    fn write_batch<'a>(&'a self, batch: &'a [LogEntry]) -> SinkFuture<'a> {
        Box::pin(async move {
            let permit = self
                .gate
                .acquire()
                .await
                .map_err(|e| SinkError(e.to_string()))?;
            permit.forget();
            self.inner.write_batch(batch).await
        })
    }
}

/// A sink that fails the first `failures` writes.
struct FlakySink {
    failures: AtomicUsize,
    inner: Arc<MemorySink>,
}

impl LogSink for FlakySink {
    fn write_batch<'a>(&'a self, batch: &'a [LogEntry]) -> SinkFuture<'a> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Box::pin(std::future::ready(Err(SinkError(
                "store unavailable".into(),
            ))));
        }
        self.inner.write_batch(batch)
    }
}

async fn send_chat(h: &Harness) -> reqwest::Response {
    h.client
        .post(h.gw("openai", "/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_records_but_responses_still_succeed() {
    let memory = Arc::new(MemorySink::default());
    let sink = Arc::new(StalledSink {
        gate: Semaphore::new(0),
        inner: memory.clone(),
    });
    let h = Harness::start_with_sink(
        |c| {
            c.log_queue.capacity = 2;
            c.log_queue.batch_size = 1;
        },
        sink.clone(),
        memory,
    )
    .await;
    for _ in 0..8 {
        let resp = send_chat(&h).await;
        assert_eq!(resp.status(), 200, "responses never wait for logging");
        resp.bytes().await.unwrap();
    }
    // One record is held by the stalled writer, two fill the queue, five are dropped.
    let text = h
        .client
        .get(h.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"aigw_logs_dropped_total{reason="queue_full"} 5"#),
        "{text}"
    );
    assert!(text.contains("aigw_log_queue_depth 2"), "{text}");
    sink.gate.add_permits(100);
    h.logs(3).await;
    h.shutdown().await;
}

#[tokio::test]
async fn failed_writes_are_retried() {
    let memory = Arc::new(MemorySink::default());
    let sink = Arc::new(FlakySink {
        failures: AtomicUsize::new(2),
        inner: memory.clone(),
    });
    let h = Harness::start_with_sink(|_| {}, sink, memory).await;
    send_chat(&h).await.bytes().await.unwrap();
    let entries = h.logs(1).await;
    assert_eq!(entries.len(), 1);
    let text = h
        .client
        .get(h.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("aigw_logs_written_total 1"), "{text}");
    assert!(!text.contains("aigw_logs_dropped_total{"), "{text}");
    h.shutdown().await;
}
