//! The production [`LogSink`]: hands batches to the owning shard through the `aigw.shard.v1`
//! service interface — a remote tonic client or, in the all-in-one process, the server itself.

use std::sync::Arc;

use aigw_proto::shard::shard_server::Shard;
use aigw_proto::shard::{IngestEntry, IngestRequest};

use crate::shipper::{LogEntry, LogSink, SinkError, SinkFuture};

/// Which part of the store holds a gateway's logs (its shard group).
pub type Placement = Arc<dyn Fn(&str, &str) -> u64 + Send + Sync>;

/// Writes log batches to a shard service.
pub struct ShardLogSink {
    shard: Arc<dyn Shard>,
    placement: Option<Placement>,
}

impl ShardLogSink {
    /// A sink writing to `shard`, one lane for every gateway.
    pub fn new(shard: Arc<dyn Shard>) -> Self {
        Self {
            shard,
            placement: None,
        }
    }

    /// Gives each part of the store its own lane (`placement` names the part holding a
    /// gateway), so that one unavailable shard group holds back only its own logs.
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
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

    fn lane(&self, account: &str, gateway: &str) -> u64 {
        self.placement.as_ref().map_or(0, |p| p(account, gateway))
    }
}
