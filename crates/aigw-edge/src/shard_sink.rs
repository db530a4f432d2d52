//! The production [`LogSink`]: hands batches to the owning shard through the `aigw.shard.v1`
//! service interface — a remote tonic client or, in the all-in-one process, the server itself.

use std::sync::Arc;

use aigw_proto::shard::shard_server::Shard;
use aigw_proto::shard::{IngestEntry, IngestRequest};

use crate::shipper::{LogEntry, LogSink, SinkError, SinkFuture};

/// Writes log batches to a shard service.
pub struct ShardLogSink {
    shard: Arc<dyn Shard>,
}

impl ShardLogSink {
    /// A sink writing to `shard`.
    pub fn new(shard: Arc<dyn Shard>) -> Self {
        Self { shard }
    }
}

fn to_ingest(entry: &LogEntry) -> IngestEntry {
    IngestEntry {
        record: Some((&entry.record).into()),
        request_body: entry.request_body.clone(),
        response_body: entry.response_body.clone(),
    }
}

impl LogSink for ShardLogSink {
    fn write_batch<'a>(&'a self, batch: &'a [LogEntry]) -> SinkFuture<'a> {
        Box::pin(async move {
            let request = IngestRequest {
                entries: batch.iter().map(to_ingest).collect(),
            };
            self.shard
                .ingest(tonic::Request::new(request))
                .await
                .map(|_| ())
                .map_err(|status| SinkError(format!("{}: {}", status.code(), status.message())))
        })
    }
}
