//! A storage node: the Raft replicas the shard map places on it, served over gRPC.
//!
//! Started by `role = "shard"` and, as a one-node cluster, by `role = "all"`. A node listed in
//! `cluster.members` also holds a replica of the account-manager group (gateways and the shard
//! map) and, while it leads that group, makes sure a shard map exists. Every node follows the
//! published map and keeps its replicas in step with it: it starts the shard groups placed on
//! it, and for the groups it leads it moves the voters to the replicas the map names.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aigw_accounts::{
    AccountBook, AccountsApp, AccountsService, GatewayRegistry, GatewaysService, ShardMapService,
    ShardMapStore,
};
use aigw_admin::{AdminAuth, AdminService};
use aigw_blob::{BlobStore, Codec};
use aigw_cluster::{
    AccountsClient, Credentials, GroupShards, RetryPolicy, ShardRouter, follow_shard_map,
};
use aigw_config::{Config, Member};
use aigw_gateway_state::LocalGatewayState;
use aigw_logindex::LogIndex;
use aigw_placement::{DEFAULT_VNODES_PER_NODE, METADATA_GROUP, NodeInfo, ShardMap};
use aigw_proto::MAX_SHARD_MESSAGE_BYTES;
use aigw_proto::admin::PutShardMapRequest;
use aigw_proto::admin::accounts_server::AccountsServer;
use aigw_proto::admin::admin_server::AdminServer;
use aigw_proto::admin::cluster_server::{Cluster, ClusterServer};
use aigw_proto::admin::gateways_server::GatewaysServer;
use aigw_proto::shard::shard_server::{Shard, ShardServer};
use aigw_raft::openraft::BasicNode;
use aigw_raft::{GroupHandle, GroupId, NodeConfig, NodeId, RaftNode};
use aigw_shard::{QuotaKeeper, ShardApp, ShardHost, ShardService, SplitPolicy, UsageReporter};
use anyhow::Context;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;

use crate::storage::{body_codec, open_blobs, open_index};

/// How long open gRPC connections get to finish when the server stops. The groups have
/// stopped by then, so calls still open can only fail; what stays open is mostly peers' and
/// edges' idle keep-alive connections, which a graceful stop would otherwise wait out.
const GRPC_GRACE: Duration = Duration::from_secs(1);
/// How long a replica the map moved away keeps running (see [`Replicas::leave`]).
const LEAVE_AFTER: Duration = Duration::from_secs(10);
/// How long the preferred leader of a group waits, caught up, before it campaigns to lead it
/// again (see [`Replicas::reclaim_leadership`]).
const RECLAIM_AFTER: Duration = Duration::from_secs(10);
/// How often replicas are checked against the map even when it did not change (leadership
/// moves, a membership change that failed and must be retried).
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// The account-manager replica of a node listed in `cluster.members`.
pub struct AccountsReplica {
    /// Every gateway, mirrored in memory.
    pub registry: GatewayRegistry,
    /// `aigw.admin.v1.Gateways` on this replica.
    pub gateways: Arc<GatewaysService>,
    /// `aigw.admin.v1.Cluster` on this replica.
    pub cluster: ShardMapService,
    /// `aigw.admin.v1.Accounts` on this replica.
    pub accounts: AccountsService,
    shard_maps: ShardMapStore,
    group: GroupHandle,
}

/// A running storage node.
pub struct ShardNode {
    db: sled::Db,
    node: Arc<RaftNode>,
    host: ShardHost,
    accounts: Option<AccountsReplica>,
    map: watch::Receiver<Arc<ShardMap>>,
    blobs: Arc<dyn BlobStore>,
    stop_grpc: oneshot::Sender<()>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    tasks: Vec<JoinHandle<()>>,
}

/// What keeping replicas in step with the map needs.
#[derive(Clone)]
struct Replicas {
    db: sled::Db,
    node: Arc<RaftNode>,
    host: ShardHost,
    blobs: Arc<dyn BlobStore>,
    codec: Codec,
    /// Where group leaders report usage (the account manager).
    usage: UsageReporter,
    usage_report_rows: u64,
    /// When gateways are split (sent with usage reports).
    splits: SplitPolicy,
    /// The soft state (shared cache tier, rate budgets) of the gateways whose home groups
    /// this node leads: one memory budget for all of them.
    gateway_state: Arc<LocalGatewayState>,
    /// Groups with a membership change under way.
    moving: Arc<Mutex<HashSet<GroupId>>>,
    /// Groups the map moved away from this node → when that was first seen.
    leaving: Arc<Mutex<HashMap<GroupId, Instant>>>,
    /// Groups this node is the preferred leader of but does not lead → since when (or since
    /// its last campaign).
    unled: Arc<Mutex<HashMap<GroupId, Instant>>>,
}

impl ShardNode {
    /// Opens storage, starts the account-manager replica if this node is a member, serves gRPC,
    /// and waits for the shard map (published by the members; retried until `shutdown`).
    pub async fn start(
        config: &Config,
        members: &[Member],
        shard_groups: u32,
        replication: usize,
    ) -> anyhow::Result<Self> {
        let db = open_index(config)?;
        let blobs = open_blobs(config).await?;
        let advertised = config.advertised_grpc_addr();
        let node = Arc::new(
            RaftNode::new(
                db.clone(),
                NodeConfig::new(
                    config.node_id,
                    advertised.clone(),
                    config.data_dir.join("raft-log"),
                ),
            )
            .context("cannot create the raft node")?,
        );

        let is_member = members.iter().any(|m| m.id == config.node_id);
        let accounts = if is_member {
            Some(start_accounts(&db, &node, members).await?)
        } else {
            None
        };
        let host = ShardHost::new();
        let seeds: Vec<String> = members.iter().map(|m| m.addr.clone()).collect();
        let credentials = Credentials::bearer(config.admin_token.as_deref())
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        let (known_map, admin_map) = watch::channel(None);
        let accounts_client = Arc::new(
            AccountsClient::new(seeds.clone(), RetryPolicy::default(), credentials.clone())
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?,
        );
        let admin = AdminService::new(node.clone(), admin_map, accounts_client.clone());
        let (stop_grpc, grpc) = serve_grpc(config, &node, &host, accounts.as_ref(), admin).await?;

        let mut tasks = Vec::new();
        if let Some(accounts) = &accounts {
            tasks.push(tokio::spawn(keep_map_published(
                accounts.cluster.clone(),
                accounts.shard_maps.clone(),
                accounts.group.clone(),
                members.to_vec(),
                shard_groups,
                replication,
            )));
        }
        let map = wait_for_map(seeds, credentials).await;
        let listed = map.borrow().node(config.node_id).map(|n| n.addr.clone());
        if let Some(listed) = listed.filter(|addr| !is_member && *addr != advertised) {
            // Another node holds this id: serving its replicas would corrupt its groups.
            // (Members' addresses are the map's to follow; see `publish`.)
            for task in &tasks {
                task.abort();
            }
            let _ = stop_grpc.send(());
            anyhow::bail!(
                "node id {} is already in the shard map at {listed}, and this node advertises \
                 {advertised}: give this node an unused id (or stop the other one)",
                config.node_id
            );
        }
        tasks.push(tokio::spawn(forward_map(map.clone(), known_map)));
        let replicas = Replicas {
            db: db.clone(),
            node: node.clone(),
            host: host.clone(),
            blobs: blobs.clone(),
            codec: body_codec(config),
            usage: accounts_client,
            usage_report_rows: config.usage_report_rows,
            splits: SplitPolicy {
                rows: config.shard_split_rows,
                max_sub_shards: config.shard_max_sub_shards,
            },
            gateway_state: Arc::new(LocalGatewayState::new(
                usize::try_from(config.cache.shard_bytes).unwrap_or(usize::MAX),
            )),
            moving: Arc::default(),
            leaving: Arc::default(),
            unled: Arc::default(),
        };
        tasks.push(tokio::spawn(replicas.follow(map.clone())));
        tracing::info!(
            node = config.node_id,
            grpc_addr = %config.grpc_addr,
            advertised = %advertised,
            account_manager = accounts.is_some(),
            map_version = map.borrow().version(),
            "shard node running"
        );
        Ok(Self {
            db,
            node,
            host,
            accounts,
            map,
            blobs,
            stop_grpc,
            grpc,
            tasks,
        })
    }

    /// The account-manager replica, on member nodes.
    pub fn accounts(&self) -> Option<&AccountsReplica> {
        self.accounts.as_ref()
    }

    /// The body store.
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    /// A router over the shard groups this node runs, called in process (the all-in-one
    /// edge's; a group not running here is `UNAVAILABLE`).
    pub fn local_router(&self) -> ShardRouter {
        ShardRouter::over(self.map.clone(), Arc::new(LocalGroups(self.host.clone())))
    }

    /// The service of shard group `group` once this node runs it and it has a leader, waiting
    /// up to `timeout` (the all-in-one edge writes to its one group in-process).
    pub async fn local_group(
        &self,
        group: GroupId,
        timeout: Duration,
    ) -> anyhow::Result<Arc<ShardService>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(service) = self.host.get(group)
                && let Some(handle) = self.node.group(group)
                && handle.leader().is_some()
            {
                return Ok(service);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "shard group {group} did not start within {timeout:?} (map version {})",
                self.map.borrow().version()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the groups, ends watch streams, stops serving gRPC and flushes storage.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        for task in &self.tasks {
            task.abort();
        }
        self.node.shutdown().await.context("raft shutdown failed")?;
        if let Some(accounts) = &self.accounts {
            // A graceful server stop waits for open streams: end the watches.
            accounts.cluster.close();
            accounts.gateways.close();
        }
        let _ = self.stop_grpc.send(());
        let mut grpc = self.grpc;
        match tokio::time::timeout(GRPC_GRACE, &mut grpc).await {
            Ok(served) => served.context("gRPC server task failed")??,
            Err(_) => {
                // A client that ignores GOAWAY must not keep the process alive.
                tracing::debug!(grace = ?GRPC_GRACE, "gRPC connections still open; closing them");
                grpc.abort();
            }
        }
        aigw_raft::flush_db(&self.db)
            .await
            .context("final index flush failed")?;
        Ok(())
    }
}

/// The groups a node runs, reached in process.
struct LocalGroups(ShardHost);

impl GroupShards for LocalGroups {
    fn shard(&self, group: GroupId) -> Result<Arc<dyn Shard>, tonic::Status> {
        match self.0.get(group) {
            Some(service) => Ok(service),
            None => Err(tonic::Status::unavailable(format!(
                "shard group {group} is not running on this node yet"
            ))),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn basic_nodes<'a>(
    members: impl IntoIterator<Item = (NodeId, &'a str)>,
) -> BTreeMap<NodeId, BasicNode> {
    members
        .into_iter()
        .map(|(id, addr)| (id, BasicNode::new(addr)))
        .collect()
}

async fn start_accounts(
    db: &sled::Db,
    node: &RaftNode,
    members: &[Member],
) -> anyhow::Result<AccountsReplica> {
    let registry = GatewayRegistry::open(db.open_tree("accounts/gateways")?)?;
    let shard_maps = ShardMapStore::open(db.open_tree("accounts/shard_map")?)?;
    let book = AccountBook::open(db.open_tree("accounts/book")?, registry.mirror().clone())?;
    let group = node
        .start_group(
            METADATA_GROUP,
            Arc::new(AccountsApp::new(
                registry.clone(),
                book.clone(),
                shard_maps.clone(),
            )),
            basic_nodes(members.iter().map(|m| (m.id, m.addr.as_str()))),
        )
        .await
        .context("cannot start the account-manager group")?;
    Ok(AccountsReplica {
        gateways: Arc::new(GatewaysService::new(
            registry.clone(),
            book.clone(),
            group.clone(),
        )),
        accounts: AccountsService::new(book, registry.clone(), shard_maps.clone(), group.clone()),
        cluster: ShardMapService::new(shard_maps.clone(), group.clone()),
        registry,
        shard_maps,
        group,
    })
}

async fn serve_grpc(
    config: &Config,
    node: &RaftNode,
    host: &ShardHost,
    accounts: Option<&AccountsReplica>,
    admin: AdminService,
) -> anyhow::Result<(
    oneshot::Sender<()>,
    JoinHandle<Result<(), tonic::transport::Error>>,
)> {
    let listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on grpc_addr {}", config.grpc_addr))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let auth = AdminAuth::new(config.admin_token.as_deref());
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(aigw_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the gRPC reflection service")?;
    let server = tonic::transport::Server::builder()
        .add_service(node.grpc_service())
        .add_service(
            ShardServer::new(host.clone())
                .max_decoding_message_size(MAX_SHARD_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_SHARD_MESSAGE_BYTES),
        )
        // The account manager's services can rewrite gateways and the shard map: admin only.
        .add_optional_service(accounts.map(|a| {
            InterceptedService::new(GatewaysServer::from_arc(a.gateways.clone()), auth.clone())
        }))
        .add_optional_service(
            accounts.map(|a| ClusterServer::with_interceptor(a.cluster.clone(), auth.clone())),
        )
        .add_optional_service(
            accounts.map(|a| AccountsServer::with_interceptor(a.accounts.clone(), auth.clone())),
        )
        .add_service(AdminServer::with_interceptor(admin, auth.clone()))
        .add_service(reflection)
        .serve_with_incoming_shutdown(crate::tcp_incoming(listener), async {
            let _ = stopped.await;
        });
    Ok((stop, tokio::spawn(server)))
}

/// Copies every map `map` receives into `known` (the admin API's view, which exists before
/// the first map does).
async fn forward_map(
    mut map: watch::Receiver<Arc<ShardMap>>,
    known: watch::Sender<Option<Arc<ShardMap>>>,
) {
    loop {
        known.send_replace(Some(map.borrow_and_update().clone()));
        if map.changed().await.is_err() {
            return;
        }
    }
}

/// The first shard map from the members at `seeds`, waited for as long as it takes (a
/// cluster's members may come up in any order).
async fn wait_for_map(
    seeds: Vec<String>,
    credentials: Credentials,
) -> watch::Receiver<Arc<ShardMap>> {
    loop {
        match follow_shard_map(seeds.clone(), RetryPolicy::default(), credentials.clone()).await {
            Ok(map) => return map,
            Err(e) => tracing::warn!(error = %e.message(), "waiting for the shard map"),
        }
    }
}

/// While this node leads the account-manager group, makes sure the map exists and lists every
/// member at its configured address: plans the first map from the members, and republishes
/// the map when a member's address changed (the all-in-one process moved to another port).
async fn keep_map_published(
    service: ShardMapService,
    store: ShardMapStore,
    group: GroupHandle,
    members: Vec<Member>,
    shard_groups: u32,
    replication: usize,
) {
    let mut metrics = group.metrics();
    loop {
        if group.is_leader() {
            match publish(&service, &store, &members, shard_groups, replication).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot publish the shard map yet"),
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// One attempt of [`keep_map_published`]; `true` when the map is as it should be.
async fn publish(
    service: &ShardMapService,
    store: &ShardMapStore,
    members: &[Member],
    shard_groups: u32,
    replication: usize,
) -> anyhow::Result<bool> {
    let member_nodes = || {
        members
            .iter()
            .map(|m| NodeInfo::active(m.id, m.addr.clone()))
    };
    let replication = replication.min(members.len());
    let (expected_version, map) = match store.current() {
        None => (
            0,
            ShardMap::plan(
                member_nodes(),
                shard_groups,
                replication,
                DEFAULT_VNODES_PER_NODE,
            )?,
        ),
        Some(current) => {
            let moved = members
                .iter()
                .any(|m| current.node(m.id).is_some_and(|n| n.addr != m.addr));
            if !moved {
                return Ok(true);
            }
            let mut nodes = current.nodes().clone();
            for m in members {
                if let Some(n) = nodes.get_mut(&m.id) {
                    n.addr = m.addr.clone();
                }
            }
            (
                current.version(),
                current.rebalance(nodes.into_values(), replication, DEFAULT_VNODES_PER_NODE)?,
            )
        }
    };
    let request = PutShardMapRequest {
        expected_version,
        map: map.to_bytes().into(),
    };
    service
        .put_shard_map(tonic::Request::new(request))
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    tracing::info!(
        version = map.version(),
        groups = map.groups().len(),
        "published the shard map"
    );
    Ok(true)
}

impl Replicas {
    /// Keeps this node's replicas in step with `map` until the map's publisher goes away.
    async fn follow(self, mut map: watch::Receiver<Arc<ShardMap>>) {
        loop {
            let current = map.borrow_and_update().clone();
            self.reconcile(&current).await;
            tokio::select! {
                changed = map.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(RECONCILE_EVERY) => {}
            }
        }
    }

    async fn reconcile(&self, map: &ShardMap) {
        let me = self.node.id();
        let mut campaigned = false;
        let nodes_of = |ids: &[NodeId]| {
            basic_nodes(
                ids.iter()
                    .filter_map(|id| map.node(*id).map(|n| (*id, n.addr.as_str()))),
            )
        };
        for (&group, placement) in map.groups() {
            let members = nodes_of(&placement.replicas);
            if members.contains_key(&me) {
                // Placed here (again): nothing to leave.
                lock(&self.leaving).remove(&group);
            }
            let founding = placement.founders.contains(&me);
            let running = self.node.group(group);
            match running {
                None if members.contains_key(&me) => {
                    let founders =
                        founding.then(|| (nodes_of(&placement.founders), placement.founders[0]));
                    if let Err(e) = self.start(group, founders).await {
                        tracing::error!(group, error = %e, "cannot start shard group");
                    }
                }
                Some(handle) if handle.is_leader() => {
                    lock(&self.unled).remove(&group);
                    self.move_voters(handle, members);
                }
                Some(handle) if !members.contains_key(&me) => self.leave(group, handle).await,
                Some(handle) if placement.replicas.first() == Some(&me) && !campaigned => {
                    campaigned = self.reclaim_leadership(&handle).await;
                }
                _ => {}
            }
        }
    }

    /// On the preferred leader of a group it does not lead (after a failover, or a restart):
    /// once it has been caught up for [`RECLAIM_AFTER`], it campaigns, and being up to date
    /// wins — so leaders spread over the nodes again instead of staying piled on the
    /// survivors of a failure (openraft 0.9 has no leadership transfer). One campaign per
    /// reconcile pass per node, so that a restarted node does not disrupt all its groups at
    /// once. Returns whether it campaigned.
    async fn reclaim_leadership(&self, handle: &GroupHandle) -> bool {
        let group = handle.group_id();
        let metrics = handle.metrics().borrow().clone();
        let caught_up = metrics.last_log_index.is_some()
            && metrics.last_applied.map(|l| l.index) == metrics.last_log_index;
        let voting = handle.voters().contains(&self.node.id());
        if metrics.current_leader.is_none() || !caught_up || !voting {
            lock(&self.unled).remove(&group);
            return false;
        }
        let due = {
            let mut unled = lock(&self.unled);
            let since = unled.entry(group).or_insert_with(Instant::now);
            let due = since.elapsed() >= RECLAIM_AFTER;
            if due {
                *since = Instant::now();
            }
            due
        };
        if !due {
            return false;
        }
        tracing::info!(group, leader = ?metrics.current_leader, "preferred leader campaigns to lead again");
        if let Err(e) = handle.raft().trigger().elect().await {
            tracing::warn!(group, error = %e, "cannot campaign");
        }
        true
    }

    /// Stops this node's replica of a group the map moved away, once it no longer votes or
    /// [`LEAVE_AFTER`] has passed: a replica removed from the membership is not told (the
    /// leader stops writing to it), so the grace period is what ends most replicas; the
    /// group's leader has replaced it by then (a new replica catches up first, and while it
    /// does the other two keep a quorum). Its data stays on disk.
    async fn leave(&self, group: GroupId, handle: GroupHandle) {
        let first_seen = *lock(&self.leaving)
            .entry(group)
            .or_insert_with(Instant::now);
        if handle.voters().contains(&self.node.id()) && first_seen.elapsed() < LEAVE_AFTER {
            return;
        }
        self.host.remove(group);
        if let Err(e) = handle.shutdown().await {
            tracing::warn!(group, error = %e, "stopping a moved-away group failed");
        }
        lock(&self.leaving).remove(&group);
        tracing::info!(group, "replica moved away; group stopped here");
    }

    /// Starts this node's replica of `group`. A founder (`founders`: the group's founding
    /// members and the one that campaigns first) forms the group — every founder starts with
    /// the initial membership, and the first founder, the preferred leader of a new group,
    /// campaigns at once, so leaders spread over the nodes; a replica placed here later joins
    /// the formed group.
    async fn start(
        &self,
        group: GroupId,
        founders: Option<(BTreeMap<NodeId, BasicNode>, NodeId)>,
    ) -> anyhow::Result<()> {
        let index = LogIndex::open(self.db.open_tree(format!("shard/{group}/index"))?)?;
        let app = Arc::new(ShardApp::new(index.clone()));
        let handle = match founders {
            Some((members, initializer)) => {
                self.node
                    .form_group(group, app, members, initializer)
                    .await?
            }
            None => self.node.join_group(group, app).await?,
        };
        let service = ShardService::new(index, handle, self.blobs.clone())
            .with_codec(self.codec)
            .with_gateway_state(self.gateway_state.clone())
            .with_quotas(
                QuotaKeeper::new(self.usage.clone(), group, self.usage_report_rows)
                    .with_splits(self.splits),
            );
        tokio::spawn(service.clone().report_on_leadership());
        self.host.insert(group, Arc::new(service));
        Ok(())
    }

    /// On the leader of `group`: makes the map's replicas its voters, in the background (a
    /// new replica first catches up as a learner, which may take a while).
    fn move_voters(&self, handle: GroupHandle, members: BTreeMap<NodeId, BasicNode>) {
        let wanted: std::collections::BTreeSet<NodeId> = members.keys().copied().collect();
        if handle.voters() == wanted {
            return;
        }
        let group = handle.group_id();
        if !lock(&self.moving).insert(group) {
            return;
        }
        let moving = self.moving.clone();
        tokio::spawn(async move {
            match handle.change_voters(members).await {
                Ok(_) => tracing::info!(group, voters = ?wanted, "replicas moved"),
                Err(e) => tracing::warn!(group, error = %e, "moving replicas failed; will retry"),
            }
            lock(&moving).remove(&group);
        });
    }
}
