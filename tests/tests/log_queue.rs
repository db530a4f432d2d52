//! The log queue never makes responses wait, and never drops a record silently.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
    fn write_batch<'a>(&'a self, lane: u64, batch: &'a [LogEntry]) -> SinkFuture<'a> {
        Box::pin(async move {
            let permit = self
                .gate
                .acquire()
                .await
                .map_err(|e| SinkError(e.to_string()))?;
            permit.forget();
            self.inner.write_batch(lane, batch).await
        })
    }
}

/// A sink that fails the first `failures` writes.
struct FlakySink {
    failures: AtomicUsize,
    inner: Arc<MemorySink>,
}

impl LogSink for FlakySink {
    fn write_batch<'a>(&'a self, lane: u64, batch: &'a [LogEntry]) -> SinkFuture<'a> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Box::pin(std::future::ready(Err(SinkError(
                "store unavailable".into(),
            ))));
        }
        self.inner.write_batch(lane, batch)
    }
}

/// A store of two parts, one per account, whose `acct2` part is down until healed.
struct PartlyDownSink {
    healed: AtomicBool,
    inner: Arc<MemorySink>,
}

impl LogSink for PartlyDownSink {
    fn write_batch<'a>(&'a self, lane: u64, batch: &'a [LogEntry]) -> SinkFuture<'a> {
        let down = batch.iter().any(|e| e.record.account_id == "acct2");
        if down && !self.healed.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(SinkError(
                "the acct2 part is unavailable".into(),
            ))));
        }
        self.inner.write_batch(lane, batch)
    }

    fn lane(&self, account: &str, _gateway: &str, _created_at_ms: i64) -> u64 {
        u64::from(account == "acct2")
    }
}

async fn send_chat(h: &Harness) -> reqwest::Response {
    send_chat_to(h, &h.gw("openai", "/chat/completions")).await
}

async fn send_chat_to(h: &Harness, url: &str) -> reqwest::Response {
    h.client
        .post(url)
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
    // The bound counts every record not yet written: the one held by the stalled writer and
    // the one queued behind it; six are dropped.
    let text = h.metrics().await;
    assert!(
        text.contains(r#"aigw_logs_dropped_total{reason="queue_full"} 6"#),
        "{text}"
    );
    assert!(text.contains("aigw_log_queue_depth 2"), "{text}");
    sink.gate.add_permits(100);
    h.logs(2).await;
    h.shutdown().await;
}

#[tokio::test]
async fn records_arriving_while_a_batch_lingers_are_written_with_it() {
    let h = Harness::start_with(|c| c.log_queue.linger_ms = 2_000).await;
    for _ in 0..5 {
        send_chat(&h).await.bytes().await.unwrap();
    }
    assert_eq!(h.logs(5).await.len(), 5);
    let text = h.metrics().await;
    assert!(text.contains("aigw_logs_written_total 5"), "{text}");
    assert!(text.contains("aigw_log_batches_total 1"), "{text}");
    h.shutdown().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_out_the_linger() {
    let memory = Arc::new(MemorySink::default());
    let mut h = Harness::start_with_sink(
        |c| c.log_queue.linger_ms = 600_000,
        memory.clone(),
        memory.clone(),
    )
    .await;
    send_chat(&h).await.bytes().await.unwrap();
    // The record is lingering (ten minutes); stopping writes it at once.
    tokio::time::timeout(std::time::Duration::from_secs(30), h.stop())
        .await
        .expect("shutdown flushes a lingering batch without waiting for it to fill");
    assert_eq!(memory.len(), 1);
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
    let text = h.metrics().await;
    assert!(text.contains("aigw_logs_written_total 1"), "{text}");
    assert!(!text.contains("aigw_logs_dropped_total{"), "{text}");
    h.shutdown().await;
}

#[tokio::test]
async fn an_unavailable_lane_holds_its_records_without_delaying_the_others() {
    let memory = Arc::new(MemorySink::default());
    let sink = Arc::new(PartlyDownSink {
        healed: AtomicBool::new(false),
        inner: memory.clone(),
    });
    let h = Harness::start_with_sink(|_| {}, sink.clone(), memory).await;
    let down = h.url("/v1/acct2/default/openai/chat/completions");
    for _ in 0..3 {
        assert_eq!(send_chat_to(&h, &down).await.status(), 200);
    }
    for _ in 0..3 {
        send_chat(&h).await.bytes().await.unwrap();
    }
    let written = h.logs(3).await;
    assert!(
        written.iter().all(|e| e.record.account_id == "acct1"),
        "the healthy lane is written while the other retries"
    );

    // The failing lane kept its records and writes them once its store is back.
    sink.healed.store(true, Ordering::SeqCst);
    let all = h.logs(6).await;
    assert_eq!(
        all.iter()
            .filter(|e| e.record.account_id == "acct2")
            .count(),
        3
    );
    let text = h.metrics().await;
    assert!(!text.contains("aigw_logs_dropped_total{"), "{text}");
    h.shutdown().await;
}
