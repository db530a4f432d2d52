//! Many shard groups behind one `aigw.shard.v1` service.
//!
//! A shard node hosts one Raft group per shard it holds a replica of, but serves a single gRPC
//! service: each call names its group in the [`GROUP_METADATA`] header and is handed to that
//! group's [`ShardService`]. Groups are added at runtime, as the node starts them.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use aigw_proto::GROUP_METADATA;
use aigw_proto::shard::shard_server::Shard;
use aigw_proto::shard::{
    CacheGetRequest, CacheGetResponse, CachePutRequest, CachePutResponse, DeleteGatewayRequest,
    DeleteGatewayResponse, DeleteLogsRequest, DeleteLogsResponse, GetBodyRequest, GetBodyResponse,
    GetLogRequest, GetLogResponse, IngestRequest, IngestResponse, LeaseRateRequest,
    LeaseRateResponse, ListLogsRequest, ListLogsResponse, UpdateLogRequest, UpdateLogResponse,
};
use aigw_raft::GroupId;
use tonic::{Request, Response, Status};

use crate::ShardService;

/// The shard groups of one node, served as one `aigw.shard.v1` service.
#[derive(Clone, Default)]
pub struct ShardHost {
    groups: Arc<RwLock<HashMap<GroupId, Arc<ShardService>>>>,
}

impl ShardHost {
    /// A host serving no group yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve `group` with `service` (replacing any previous service of that group).
    pub fn insert(&self, group: GroupId, service: Arc<ShardService>) {
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(group, service);
    }

    /// Stop serving `group` (its replica moved away); calls naming it get `UNAVAILABLE`.
    pub fn remove(&self, group: GroupId) {
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&group);
    }

    /// The service of `group`, if this node serves it.
    pub fn get(&self, group: GroupId) -> Option<Arc<ShardService>> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&group)
            .cloned()
    }

    /// The service of the group a call names. A group this node does not host is `UNAVAILABLE`
    /// (retryable: the caller's map may be behind, another replica may serve it).
    fn route<T>(&self, request: &Request<T>) -> Result<Arc<ShardService>, Status> {
        let value = request.metadata().get(GROUP_METADATA).ok_or_else(|| {
            Status::invalid_argument(format!("missing `{GROUP_METADATA}` metadata"))
        })?;
        let group: GroupId = value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "`{GROUP_METADATA}` metadata must be a group id, got {value:?}"
                ))
            })?;
        self.get(group)
            .ok_or_else(|| Status::unavailable(format!("shard group {group} is not hosted here")))
    }
}

/// Every method: find the group's service, hand it the call.
macro_rules! dispatch {
    ($($method:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl Shard for ShardHost {
            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    self.route(&request)?.$method(request).await
                }
            )*
        }
    };
}

dispatch! {
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
