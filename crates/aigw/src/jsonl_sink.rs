//! Interim log sink of the all-in-one process: one JSON record per line in
//! `<data_dir>/logs.jsonl`. It stands in for the replicated shard store (issue #3), which will
//! implement the same [`LogSink`] interface; bodies are not kept by this sink.

use std::path::Path;

use aigw_edge::{LogEntry, LogSink, SinkError, SinkFuture};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// Appends records to a file.
pub struct JsonlSink {
    file: Mutex<tokio::fs::File>,
}

impl JsonlSink {
    /// Open (creating if needed) `path` for appending.
    pub async fn open(path: &Path) -> std::io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }
}

impl LogSink for JsonlSink {
    fn write_batch<'a>(&'a self, batch: &'a [LogEntry]) -> SinkFuture<'a> {
        Box::pin(async move {
            let mut buf = Vec::with_capacity(batch.len() * 512);
            for entry in batch {
                serde_json::to_writer(&mut buf, &entry.record)
                    .map_err(|e| SinkError(e.to_string()))?;
                buf.push(b'\n');
            }
            let mut file = self.file.lock().await;
            file.write_all(&buf)
                .await
                .map_err(|e| SinkError(e.to_string()))?;
            file.flush().await.map_err(|e| SinkError(e.to_string()))
        })
    }
}
