//! Shard groups reached over gRPC on their leaders.

use std::future::Future;
use std::sync::Arc;

use aigw_placement::{GroupId, ShardMap};
use aigw_proto::MAX_SHARD_MESSAGE_BYTES;
use aigw_proto::shard::shard_client::ShardClient;
use aigw_proto::shard::shard_server::Shard;
use aigw_proto::shard::{
    CacheGetRequest, CacheGetResponse, CachePutRequest, CachePutResponse, DeleteGatewayRequest,
    DeleteGatewayResponse, DeleteLogsRequest, DeleteLogsResponse, GetBodyRequest, GetBodyResponse,
    GetLogRequest, GetLogResponse, IngestRequest, IngestResponse, LeaseRateRequest,
    LeaseRateResponse, ListLogsRequest, ListLogsResponse, UpdateLogRequest, UpdateLogResponse,
};
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::RetryPolicy;
use crate::caller::Caller;
use crate::router::GroupShards;

/// Every group of the watched map, called on its leader through one [`Caller`].
pub(crate) struct RemoteGroups {
    map: watch::Receiver<Arc<ShardMap>>,
    caller: Caller,
}

impl RemoteGroups {
    pub(crate) fn new(map: watch::Receiver<Arc<ShardMap>>, policy: RetryPolicy) -> Self {
        Self {
            map,
            caller: Caller::new(policy),
        }
    }

    pub(crate) fn known_leader(&self, group: GroupId) -> Option<String> {
        self.caller.known_leader(group)
    }

    /// The replica to try on turn `turn` for `group` when its leader is unknown.
    fn replica(&self, group: GroupId, turn: usize) -> Result<String, Status> {
        let map = self.map.borrow();
        let replicas = map
            .replicas(group)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| Status::unavailable(format!("shard group {group} has no replicas")))?;
        let node = replicas[turn % replicas.len()];
        map.node(node).map(|n| n.addr.clone()).ok_or_else(|| {
            Status::unavailable(format!(
                "node {node} of shard group {group} is not in the map"
            ))
        })
    }

    /// Sends `message` to `group` on its leader with `call`.
    async fn call<M, R, F, Fut>(&self, group: GroupId, message: M, call: F) -> Result<R, Status>
    where
        M: Clone,
        F: Fn(ShardClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        self.caller
            .call(
                group,
                |turn| self.replica(group, turn),
                message,
                |channel, request| {
                    call(
                        ShardClient::new(channel)
                            .max_decoding_message_size(MAX_SHARD_MESSAGE_BYTES)
                            .max_encoding_message_size(MAX_SHARD_MESSAGE_BYTES),
                        request,
                    )
                },
            )
            .await
    }
}

impl GroupShards for Arc<RemoteGroups> {
    fn shard(&self, group: GroupId) -> Result<Arc<dyn Shard>, Status> {
        Ok(Arc::new(RemoteGroup {
            groups: self.clone(),
            group,
        }))
    }
}

/// One group's `Shard` service on its leader.
struct RemoteGroup {
    groups: Arc<RemoteGroups>,
    group: GroupId,
}

macro_rules! remote {
    ($($method:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl Shard for RemoteGroup {
            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    self.groups
                        .call(self.group, request.into_inner(), |mut c, r| async move {
                            c.$method(r).await
                        })
                        .await
                        .map(Response::new)
                }
            )*
        }
    };
}

remote! {
    ingest(IngestRequest) -> IngestResponse;
    list_logs(ListLogsRequest) -> ListLogsResponse;
    get_log(GetLogRequest) -> GetLogResponse;
    get_body(GetBodyRequest) -> GetBodyResponse;
    update_log(UpdateLogRequest) -> UpdateLogResponse;
    delete_logs(DeleteLogsRequest) -> DeleteLogsResponse;
    delete_gateway(DeleteGatewayRequest) -> DeleteGatewayResponse;
    cache_get(CacheGetRequest) -> CacheGetResponse;
    cache_put(CachePutRequest) -> CachePutResponse;
    lease_rate(LeaseRateRequest) -> LeaseRateResponse;
}
