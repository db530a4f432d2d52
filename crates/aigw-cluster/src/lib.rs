//! Reaching shard groups from a stateless node.
//!
//! This crate owns how an edge (or any node without the data) finds and calls the shard group
//! that holds a gateway's logs: the current [`ShardMap`], received through a watch channel so
//! changes arrive without polling; one lazily connected gRPC channel per shard node; the leader
//! of each group, learned from replies (a replica that does not lead names the leader in
//! [`LEADER_METADATA`]) rather than looked up; and transparent retries across leader changes and
//! node failures within a deadline. [`ShardRouter`] implements the same `aigw.shard.v1` [`Shard`]
//! trait the shards serve, so the edge's log sink and the management API use it unchanged. It
//! must not keep state on disk, and must not know how shards store logs. [`follow_shard_map`]
//! feeds it: a watch stream on any account-manager replica, resumed on another when it breaks.
//!
//! Every `aigw.shard.v1` call is safe to retry: ingestion is idempotent by log id, updates set
//! fields, deletions of what is already gone delete nothing. So a call whose outcome is unknown
//! (a timeout, a leader that died mid-call) is simply sent again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

mod follow;

pub use follow::follow_shard_map;

use aigw_placement::{GroupId, ShardMap};
use aigw_proto::shard::shard_client::ShardClient;
use aigw_proto::shard::shard_server::Shard;
use aigw_proto::shard::{
    DeleteGatewayRequest, DeleteGatewayResponse, DeleteLogsRequest, DeleteLogsResponse,
    GetBodyRequest, GetBodyResponse, GetLogRequest, GetLogResponse, IngestEntry, IngestRequest,
    IngestResponse, ListLogsRequest, ListLogsResponse, UpdateLogRequest, UpdateLogResponse,
};
use aigw_proto::{GROUP_METADATA, LEADER_METADATA, MAX_SHARD_MESSAGE_BYTES};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

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
            max_backoff: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

/// Calls shard groups on their leaders, following the watched [`ShardMap`].
pub struct ShardRouter {
    map: watch::Receiver<Arc<ShardMap>>,
    policy: RetryPolicy,
    /// Node address → channel (one HTTP/2 connection, shared by every group on the node).
    channels: Mutex<HashMap<String, Channel>>,
    /// Group → address of its last known leader.
    leaders: Mutex<HashMap<GroupId, String>>,
}

impl ShardRouter {
    /// A router following `map`, with the default [`RetryPolicy`].
    pub fn new(map: watch::Receiver<Arc<ShardMap>>) -> Self {
        Self {
            map,
            policy: RetryPolicy::default(),
            channels: Mutex::default(),
            leaders: Mutex::default(),
        }
    }

    /// Uses `policy` instead of the default.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The group holding the logs of `account`/`gateway` under the current map.
    pub fn group_for(&self, account: &str, gateway: &str) -> GroupId {
        self.map.borrow().group_for(account, gateway)
    }

    /// The address the router would call first for `group`, if it knows its leader.
    pub fn known_leader(&self, group: GroupId) -> Option<String> {
        lock(&self.leaders).get(&group).cloned()
    }

    fn client(&self, addr: &str) -> Result<ShardClient<Channel>, Status> {
        let mut channels = lock(&self.channels);
        let channel = match channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| {
                        Status::invalid_argument(format!("bad shard node address `{addr}`: {e}"))
                    })?
                    .connect_timeout(self.policy.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_while_idle(true);
                let channel = endpoint.connect_lazy();
                channels.insert(addr.to_owned(), channel.clone());
                channel
            }
        };
        Ok(ShardClient::new(channel)
            .max_decoding_message_size(MAX_SHARD_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_SHARD_MESSAGE_BYTES))
    }

    /// Where to send the next attempt for `group`: its known leader, else the replicas in turn.
    fn target(&self, group: GroupId, turn: usize) -> Result<String, Status> {
        if let Some(leader) = self.known_leader(group) {
            return Ok(leader);
        }
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

    /// Sends `message` to `group` with `call`, following leader hints and retrying retryable
    /// failures until the policy's deadline.
    async fn call<M, R, F, Fut>(&self, group: GroupId, message: M, call: F) -> Result<R, Status>
    where
        M: Clone,
        F: Fn(ShardClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let span = tracing::debug_span!("shard_call", group, attempts = tracing::field::Empty);
        async move {
            let deadline = Instant::now() + self.policy.deadline;
            let mut backoff = self.policy.initial_backoff;
            let mut turn = 0;
            let mut attempt = 0u32;
            let mut followed_hint = false;
            loop {
                attempt += 1;
                let addr = self.target(group, turn)?;
                let mut request = Request::new(message.clone());
                request.set_timeout(self.policy.attempt_timeout);
                request.metadata_mut().insert(
                    GROUP_METADATA,
                    group
                        .to_string()
                        .parse()
                        .map_err(|_| Status::internal("group id"))?,
                );
                let error = match call(self.client(&addr)?, request).await {
                    Ok(response) => {
                        lock(&self.leaders).insert(group, addr);
                        tracing::Span::current().record("attempts", attempt);
                        return Ok(response.into_inner());
                    }
                    Err(status) => status,
                };
                let hint = leader_hint(&error).filter(|hint| *hint != addr);
                match (error.code(), hint) {
                    // Refused by a follower that knows the leader: go there now (once in a
                    // row: replicas with stale views could otherwise bounce us around).
                    (Code::FailedPrecondition, Some(leader)) if !followed_hint => {
                        lock(&self.leaders).insert(group, leader);
                        followed_hint = true;
                        continue;
                    }
                    (Code::FailedPrecondition, Some(leader)) => {
                        lock(&self.leaders).insert(group, leader);
                    }
                    (
                        Code::FailedPrecondition
                        | Code::Unavailable
                        | Code::DeadlineExceeded
                        | Code::Cancelled
                        | Code::Unknown,
                        _,
                    ) => {
                        lock(&self.leaders).remove(&group);
                        turn += 1;
                    }
                    _ => return Err(error),
                }
                followed_hint = false;
                if Instant::now() + backoff > deadline {
                    return Err(Status::unavailable(format!(
                        "shard group {group} is unavailable after {attempt} attempts: {}",
                        error.message()
                    )));
                }
                tracing::debug!(group, attempt, %addr, code = ?error.code(), "retrying shard call");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.policy.max_backoff);
            }
        }
        .instrument(span)
        .await
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The leader address a refusing replica named, if any.
fn leader_hint(status: &Status) -> Option<String> {
    status
        .metadata()
        .get(LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
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
