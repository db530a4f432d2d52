//! Reaching the groups that hold data from a node that does not.
//!
//! This crate owns how an edge (or any node without the data) calls a Raft group: one lazily
//! connected gRPC channel per node, the leader of each group learned from replies (a replica
//! that does not lead says so in [`LEADER_METADATA`](aigw_proto::LEADER_METADATA)) rather than
//! looked up, nodes that just timed out avoided for a few seconds, and transparent retries
//! across leader changes and node failures within a deadline. [`ShardRouter`] implements the
//! same `aigw.shard.v1` [`Shard`] trait the shards serve, following the current [`ShardMap`], so
//! the edge's log sink and the management API use it unchanged; [`AccountsClient`] does the
//! same for the account manager's `Gateways` and `Cluster` services. [`follow_shard_map`] and
//! [`follow_gateways`] keep the map and the gateways current from watch streams on any
//! account-manager replica, resumed on another when one breaks. It must not keep state on disk,
//! and must not know how shards store logs.
//!
//! Every `aigw.shard.v1` call is safe to retry: ingestion is idempotent by log id, updates set
//! fields, deletions of what is already gone delete nothing. So a call whose outcome is unknown
//! (a timeout, a leader that died mid-call) is simply sent again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

mod accounts;
mod caller;
mod credentials;
mod follow;

pub use accounts::AccountsClient;
pub use credentials::Credentials;
pub use follow::{connect, follow_gateways, follow_shard_map};

use caller::Caller;

use aigw_placement::{GroupId, ShardMap};
use aigw_proto::MAX_SHARD_MESSAGE_BYTES;
use aigw_proto::shard::shard_client::ShardClient;
use aigw_proto::shard::shard_server::Shard;
use aigw_proto::shard::{
    DeleteGatewayRequest, DeleteGatewayResponse, DeleteLogsRequest, DeleteLogsResponse,
    GetBodyRequest, GetBodyResponse, GetLogRequest, GetLogResponse, IngestEntry, IngestRequest,
    IngestResponse, ListLogsRequest, ListLogsResponse, UpdateLogRequest, UpdateLogResponse,
};
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// How hard the router tries before it gives up on a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// A call gives up (`UNAVAILABLE`, naming the group and the last error) after this long.
    pub deadline: Duration,
    /// Wait before the first retry that has no leader to go to; doubled each time.
    pub initial_backoff: Duration,
    /// The longest wait between retries.
    pub max_backoff: Duration,
    /// Bound on connecting to a node.
    pub connect_timeout: Duration,
    /// Bound on one attempt.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            // Longer than an election (election timeouts are 150–300 ms by default) plus a
            // leader's first commit, short enough that the edge's log shipper retries the batch.
            deadline: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(2),
        }
    }
}

/// Calls shard groups on their leaders, following the watched [`ShardMap`].
pub struct ShardRouter {
    map: watch::Receiver<Arc<ShardMap>>,
    caller: Caller,
}

impl ShardRouter {
    /// A router following `map`, with the default [`RetryPolicy`].
    pub fn new(map: watch::Receiver<Arc<ShardMap>>) -> Self {
        Self {
            map,
            caller: Caller::new(RetryPolicy::default()),
        }
    }

    /// Uses `policy` instead of the default.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.caller = Caller::new(policy);
        self
    }

    /// The group holding the logs of `account`/`gateway` under the current map.
    pub fn group_for(&self, account: &str, gateway: &str) -> GroupId {
        self.map.borrow().group_for(account, gateway)
    }

    /// The address the router would call first for `group`, if it knows its leader.
    pub fn known_leader(&self, group: GroupId) -> Option<String> {
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

impl ShardRouter {
    /// Splits an ingest batch by group and sends the parts at once.
    async fn ingest_by_group(&self, request: IngestRequest) -> Result<IngestResponse, Status> {
        let mut by_group: HashMap<GroupId, Vec<IngestEntry>> = HashMap::new();
        for entry in request.entries {
            let record = entry
                .record
                .as_ref()
                .ok_or_else(|| Status::invalid_argument("ingest entry without a record"))?;
            let group = self.group_for(&record.account_id, &record.gateway_id);
            by_group.entry(group).or_default().push(entry);
        }
        let parts = by_group.into_iter().map(|(group, entries)| {
            self.call(group, IngestRequest { entries }, |mut c, r| async move {
                c.ingest(r).await
            })
        });
        let mut accepted = 0u32;
        for reply in futures_util::future::join_all(parts).await {
            accepted = accepted.saturating_add(reply?.accepted);
        }
        Ok(IngestResponse { accepted })
    }
}

/// A request that concerns one gateway, and so one group.
trait ForGateway {
    /// (account, gateway).
    fn gateway(&self) -> Result<(&str, &str), Status>;
}

macro_rules! for_gateway {
    (top-level: $($req:ty),*) => {$(
        impl ForGateway for $req {
            fn gateway(&self) -> Result<(&str, &str), Status> {
                Ok((&self.account_id, &self.gateway_id))
            }
        }
    )*};
    (in query: $($req:ty),*) => {$(
        impl ForGateway for $req {
            fn gateway(&self) -> Result<(&str, &str), Status> {
                let query = self
                    .query
                    .as_ref()
                    .ok_or_else(|| Status::invalid_argument("missing query"))?;
                Ok((&query.account_id, &query.gateway_id))
            }
        }
    )*};
}

for_gateway!(top-level: GetLogRequest, GetBodyRequest, UpdateLogRequest, DeleteGatewayRequest);
for_gateway!(in query: ListLogsRequest, DeleteLogsRequest);

/// `Shard` on the router: ingest is split by group, every other call goes to its gateway's.
macro_rules! route {
    ($($method:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl Shard for ShardRouter {
            async fn ingest(
                &self,
                request: Request<IngestRequest>,
            ) -> Result<Response<IngestResponse>, Status> {
                self.ingest_by_group(request.into_inner()).await.map(Response::new)
            }

            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    let message = request.into_inner();
                    let (account, gateway) = message.gateway()?;
                    let group = self.group_for(account, gateway);
                    self.call(group, message, |mut c, r| async move { c.$method(r).await })
                        .await
                        .map(Response::new)
                }
            )*
        }
    };
}

route! {
    list_logs(ListLogsRequest) -> ListLogsResponse;
    get_log(GetLogRequest) -> GetLogResponse;
    get_body(GetBodyRequest) -> GetBodyResponse;
    update_log(UpdateLogRequest) -> UpdateLogResponse;
    delete_logs(DeleteLogsRequest) -> DeleteLogsResponse;
    delete_gateway(DeleteGatewayRequest) -> DeleteGatewayResponse;
}
