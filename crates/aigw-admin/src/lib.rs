//! The gRPC admin API (`aigw.admin.v1.Admin`) every shard node serves.
//!
//! This crate owns what operators see and do through `aigw admin`: each node's Raft groups
//! (state, leader, term, log and applied indexes, voters, and on leaders how far each
//! follower lags), the cluster-wide view assembled from every node of the shard map, a health
//! verdict, and changes of placement — adding a node, draining one, moving a replica — made by
//! publishing a new shard map version through the account manager (compare-and-set, retried
//! when another change won). It does not move data itself: shard nodes follow the map and
//! their group leaders change membership. It also owns the admin-token check for gRPC. It must
//! not touch storage.

use std::sync::Arc;
use std::time::Duration;

use aigw_cluster::{AccountsClient, RetryPolicy};
use aigw_placement::{DEFAULT_VNODES_PER_NODE, NodeInfo, PlacementError, ShardMap};
use aigw_proto::admin::admin_client::AdminClient;
use aigw_proto::admin::admin_server::Admin;
use aigw_proto::admin::cluster_server::Cluster;
use aigw_proto::admin::{
    AddNodeRequest, ClusterStatus, ClusterStatusRequest, GetShardMapRequest, GroupStatus,
    HealthRequest, HealthResponse, MoveReplicaRequest, NodeStatus, NodeStatusRequest,
    PutShardMapRequest, RemoveNodeRequest, ReplicaProgress, ShardMapVersion, UnreachableNode,
};
use aigw_raft::RaftNode;
use aigw_raft::openraft::ServerState;
use tokio::sync::watch;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

/// Lag (in log entries) past which a follower makes its leader unhealthy, by default.
const DEFAULT_MAX_LAG: u64 = 1_000;
/// How long the cluster view waits for each node.
const NODE_TIMEOUT: Duration = Duration::from_secs(2);
/// Placement changes retried after losing a compare-and-set to a concurrent change.
const CAS_ATTEMPTS: usize = 5;

/// `aigw.admin.v1.Admin` on one shard node.
pub struct AdminService {
    node: Arc<RaftNode>,
    /// The map the node follows; `None` until it received the first.
    map: watch::Receiver<Option<Arc<ShardMap>>>,
    accounts: Arc<AccountsClient>,
}

impl AdminService {
    /// The admin API of `node`, which follows `map`; placement changes go through `accounts`.
    pub fn new(
        node: Arc<RaftNode>,
        map: watch::Receiver<Option<Arc<ShardMap>>>,
        accounts: Arc<AccountsClient>,
    ) -> Self {
        Self {
            node,
            map,
            accounts,
        }
    }

    fn node_status(&self) -> NodeStatus {
        let groups = self
            .node
            .registry()
            .group_ids()
            .into_iter()
            .filter_map(|group| self.node.group(group))
            .map(|handle| {
                let metrics = handle.metrics().borrow().clone();
                let membership = metrics.membership_config.membership();
                let last = metrics.last_log_index.unwrap_or(0);
                let replication = metrics
                    .replication
                    .iter()
                    .flatten()
                    .map(|(node, matched)| {
                        let matched = matched.map(|m| m.index);
                        ReplicaProgress {
                            node_id: *node,
                            matched_index: matched,
                            lag: last.saturating_sub(matched.unwrap_or(0)),
                        }
                    })
                    .collect();
                GroupStatus {
                    group: handle.group_id(),
                    state: format!("{:?}", metrics.state),
                    leader: metrics.current_leader,
                    term: metrics.current_term,
                    last_log_index: last,
                    last_applied: metrics.last_applied.map_or(0, |l| l.index),
                    voters: membership.voter_ids().collect(),
                    learners: membership.learner_ids().collect(),
                    replication,
                }
            })
            .collect();
        NodeStatus {
            node_id: self.node.id(),
            addr: self.node.addr().to_owned(),
            map_version: self.map.borrow().as_ref().map_or(0, |m| m.version()),
            groups,
        }
    }

    /// Asks the node at `addr` for its status, forwarding the caller's credentials.
    async fn remote_status(
        addr: &str,
        authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
    ) -> Result<NodeStatus, Status> {
        let policy = RetryPolicy {
            connect_timeout: NODE_TIMEOUT,
            ..RetryPolicy::default()
        };
        let channel = aigw_cluster::connect(addr, &policy).await?;
        let mut request = Request::new(NodeStatusRequest {});
        request.set_timeout(NODE_TIMEOUT);
        if let Some(value) = authorization {
            request.metadata_mut().insert("authorization", value);
        }
        Ok(AdminClient::new(channel)
            .node_status(request)
            .await?
            .into_inner())
    }

    /// Publishes `change` of the current map; retried when a concurrent change won.
    async fn change_map(
        &self,
        change: impl Fn(&ShardMap) -> Result<ShardMap, Status>,
    ) -> Result<ShardMapVersion, Status> {
        let mut last = None;
        for _ in 0..CAS_ATTEMPTS {
            let current = self
                .accounts
                .get_shard_map(Request::new(GetShardMapRequest {}))
                .await?
                .into_inner();
            let current = ShardMap::from_bytes(&current.map)
                .map_err(|e| Status::data_loss(format!("undecodable shard map: {e}")))?;
            let next = change(&current)?;
            let put = PutShardMapRequest {
                expected_version: current.version(),
                map: next.to_bytes().into(),
            };
            match self.accounts.put_shard_map(Request::new(put)).await {
                Ok(done) => {
                    tracing::info!(version = next.version(), "shard map changed by an operator");
                    return Ok(done.into_inner());
                }
                Err(e) if e.code() == Code::FailedPrecondition => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Status::aborted("the shard map kept changing")))
    }
}

/// Replicas per group of `map` (every group has the same count).
fn replication(map: &ShardMap) -> usize {
    map.groups()
        .values()
        .map(|p| p.replicas.len())
        .max()
        .unwrap_or(1)
}

fn placement_error(e: PlacementError) -> Status {
    Status::failed_precondition(e.to_string())
}

fn unknown_node(id: u64) -> Status {
    Status::not_found(format!("node {id} is not in the shard map"))
}

#[tonic::async_trait]
impl Admin for AdminService {
    #[tracing::instrument(skip_all)]
    async fn node_status(
        &self,
        _request: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatus>, Status> {
        Ok(Response::new(self.node_status()))
    }

    #[tracing::instrument(skip_all)]
    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        let authorization = request.metadata().get("authorization").cloned();
        let map = self
            .map
            .borrow()
            .clone()
            .ok_or_else(|| Status::unavailable("this node has no shard map yet"))?;
        let me = self.node.id();
        let asks = map.nodes().values().map(|info| {
            let authorization = authorization.clone();
            async move {
                let status = if info.id == me {
                    Ok(self.node_status())
                } else {
                    Self::remote_status(&info.addr, authorization).await
                };
                (info.clone(), status)
            }
        });
        let mut out = ClusterStatus {
            map: Some(ShardMapVersion {
                version: map.version(),
                map: map.to_bytes().into(),
            }),
            ..ClusterStatus::default()
        };
        for (info, status) in futures_util::future::join_all(asks).await {
            match status {
                Ok(status) => out.nodes.push(status),
                Err(e) => out.unreachable.push(UnreachableNode {
                    node_id: info.id,
                    addr: info.addr,
                    error: e.message().to_owned(),
                }),
            }
        }
        Ok(Response::new(out))
    }

    #[tracing::instrument(skip_all)]
    async fn health(
        &self,
        request: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        let max_lag = match request.into_inner().max_lag {
            0 => DEFAULT_MAX_LAG,
            n => n,
        };
        let mut problems = Vec::new();
        for group in self.node_status().groups {
            if group.leader.is_none() {
                problems.push(format!("group {} has no leader", group.group));
            }
            if group.state == format!("{:?}", ServerState::Leader) {
                for r in group.replication.iter().filter(|r| r.lag > max_lag) {
                    problems.push(format!(
                        "group {}: node {} lags by {} entries",
                        group.group, r.node_id, r.lag
                    ));
                }
            }
        }
        Ok(Response::new(HealthResponse {
            serving: problems.is_empty(),
            problems,
        }))
    }

    #[tracing::instrument(skip_all, fields(node = request.get_ref().node_id))]
    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> Result<Response<ShardMapVersion>, Status> {
        let r = request.into_inner();
        if r.node_id == 0 || r.addr.is_empty() {
            return Err(Status::invalid_argument(
                "a node needs a positive id and an address",
            ));
        }
        self.change_map(|map| {
            if let Some(existing) = map.node(r.node_id) {
                return Err(Status::already_exists(format!(
                    "node {} is already in the shard map at {}",
                    r.node_id, existing.addr
                )));
            }
            let nodes = map
                .nodes()
                .values()
                .cloned()
                .chain([NodeInfo::active(r.node_id, r.addr.clone())]);
            map.rebalance(nodes, replication(map), DEFAULT_VNODES_PER_NODE)
                .map_err(placement_error)
        })
        .await
        .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(node = request.get_ref().node_id))]
    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<ShardMapVersion>, Status> {
        let id = request.into_inner().node_id;
        self.change_map(|map| {
            let removed = map.node(id).ok_or_else(|| unknown_node(id))?;
            let nodes = map.nodes().values().map(|n| {
                if n.id == removed.id {
                    NodeInfo::draining(n.id, n.addr.clone())
                } else {
                    n.clone()
                }
            });
            map.rebalance(nodes, replication(map), DEFAULT_VNODES_PER_NODE)
                .map_err(placement_error)
        })
        .await
        .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(group = request.get_ref().group))]
    async fn move_replica(
        &self,
        request: Request<MoveReplicaRequest>,
    ) -> Result<Response<ShardMapVersion>, Status> {
        let r = request.into_inner();
        self.change_map(|map| {
            map.move_replica(r.group, r.from_node, r.to_node)
                .map_err(placement_error)
        })
        .await
        .map(Response::new)
    }
}

/// Checks `authorization: Bearer <token>` on admin calls when a token is configured (without
/// one, as in a laptop's all-in-one process, admin calls are open).
#[derive(Clone)]
pub struct AdminAuth {
    token: Option<Arc<str>>,
}

impl AdminAuth {
    /// Require `token` (none: require nothing).
    pub fn new(token: Option<&str>) -> Self {
        Self {
            token: token.map(Arc::from),
        }
    }
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl tonic::service::Interceptor for AdminAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("admin calls need `authorization: Bearer <admin_token>`")
            })?;
        if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
            Ok(request)
        } else {
            Err(Status::permission_denied("wrong admin token"))
        }
    }
}
