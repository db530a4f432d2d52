//! The production [`LogSink`]: hands batches to the owning shard through the `aigw.shard.v1`
//! service interface — a remote tonic client or, in the all-in-one process, the server itself —
//! and the production [`GatewayState`], reached through the same interface.

use std::sync::Arc;

use aigw_gateway_state::{
    CacheEntry, CacheKey, GatewayState, Lease, RatePolicy, StateError, StateFuture, Technique,
};
use aigw_proto::GROUP_METADATA;
use aigw_proto::shard::shard_server::Shard;
use aigw_proto::shard::{
    CacheGetRequest, CachePutRequest, IngestEntry, IngestRequest, LeaseRateRequest,
};
use bytes::Bytes;

use crate::shipper::{LogEntry, LogSink, SinkError, SinkFuture};

/// Which part of the store takes a log of a gateway created at a time (account, gateway,
/// `created_at` in Unix ms → its shard group).
pub type Placement = Arc<dyn Fn(&str, &str, i64) -> u64 + Send + Sync>;

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

    /// Gives each part of the store its own lane (`placement` names the part taking a log),
    /// so that one unavailable shard group holds back only its own logs.
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
    fn write_batch<'a>(&'a self, lane: u64, batch: &'a [LogEntry]) -> SinkFuture<'a> {
        Box::pin(async move {
            let mut request = tonic::Request::new(IngestRequest {
                entries: batch.iter().map(to_ingest).collect(),
            });
            if self.placement.is_some() {
                // The lane is the group the batch was placed in when its logs were shipped:
                // a retry after the shard map changed must not send them to another group
                // (each group is idempotent by log id, not the cluster).
                request
                    .metadata_mut()
                    .insert(GROUP_METADATA, tonic::metadata::MetadataValue::from(lane));
            }
            self.shard
                .ingest(request)
                .await
                .map(|_| ())
                .map_err(|status| SinkError(format!("{}: {}", status.code(), status.message())))
        })
    }

    fn lane(&self, account: &str, gateway: &str, created_at_ms: i64) -> u64 {
        self.placement
            .as_ref()
            .map_or(0, |p| p(account, gateway, created_at_ms))
    }
}

/// The gateway state of a cluster: each gateway's on the leader of its home shard group,
/// reached through the `aigw.shard.v1` service (a router over every group, or in process).
pub struct ShardGatewayState {
    shard: Arc<dyn Shard>,
}

impl ShardGatewayState {
    /// State reached through `shard`.
    pub fn new(shard: Arc<dyn Shard>) -> Self {
        Self { shard }
    }
}

fn unavailable(status: &tonic::Status) -> StateError {
    StateError(status.message().to_owned())
}

impl GatewayState for ShardGatewayState {
    fn cache_get<'a>(
        &'a self,
        account: &'a str,
        gateway: &'a str,
        key: CacheKey,
    ) -> StateFuture<'a, Option<CacheEntry>> {
        Box::pin(async move {
            let reply = self
                .shard
                .cache_get(tonic::Request::new(CacheGetRequest {
                    account_id: account.to_owned(),
                    gateway_id: gateway.to_owned(),
                    key: Bytes::copy_from_slice(&key.0),
                }))
                .await
                .map_err(|s| unavailable(&s))?;
            reply
                .into_inner()
                .entry
                .map(CacheEntry::try_from)
                .transpose()
                .map_err(|e| StateError(e.to_string()))
        })
    }

    fn cache_put<'a>(
        &'a self,
        account: &'a str,
        gateway: &'a str,
        key: CacheKey,
        entry: CacheEntry,
    ) -> StateFuture<'a, ()> {
        Box::pin(async move {
            self.shard
                .cache_put(tonic::Request::new(CachePutRequest {
                    account_id: account.to_owned(),
                    gateway_id: gateway.to_owned(),
                    key: Bytes::copy_from_slice(&key.0),
                    entry: Some(entry.into()),
                }))
                .await
                .map_err(|s| unavailable(&s))?;
            Ok(())
        })
    }

    fn lease<'a>(
        &'a self,
        account: &'a str,
        gateway: &'a str,
        policy: RatePolicy,
        want: u64,
    ) -> StateFuture<'a, Lease> {
        Box::pin(async move {
            let reply = self
                .shard
                .lease_rate(tonic::Request::new(LeaseRateRequest {
                    account_id: account.to_owned(),
                    gateway_id: gateway.to_owned(),
                    limit: policy.limit,
                    interval_ms: policy.interval_ms,
                    sliding: policy.technique == Technique::Sliding,
                    want,
                }))
                .await
                .map_err(|s| unavailable(&s))?;
            Ok(reply.into_inner().into())
        })
    }
}
