//! [`RaftNode`]: the one per process, hosting every Raft group of this node; [`GroupHandle`]:
//! what the shard and the account manager hold to write and read through their group.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use aigw_proto::raft::raft_service_server::RaftServiceServer;
use openraft::{BasicNode, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::watch;

use crate::error::{NodeError, ReadError, WriteError};
use crate::network::grpc::{GrpcConfig, GrpcTransport, RaftServiceImpl};
use crate::network::{GroupRegistry, Transport};
use crate::storage::open_group_storage;
use crate::types::{App, Command, GroupId, NodeId, TypeConfig};

/// aigw's Raft settings: 200 ms heartbeats, elections after 600–1200 ms of silence, a
/// snapshot every 10,000 applied entries after which the log is purged but for the last 1,000
/// entries (so briefly lagging followers catch up from the log, not a snapshot), up to 1,000
/// entries per append-entries message.
///
/// Heartbeats are the cost of an idle group (each leader sends one to each follower per
/// interval, not batched per node pair yet): 1,000 idle groups per node took ~39% of a core
/// per node at 100 ms and ~22% at 200 ms, while writes resumed ~1.6 s and ~2.1 s after a
/// leader was killed (target: within 3 s).
pub fn default_raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "aigw".to_owned(),
        heartbeat_interval: 200,
        election_timeout_min: 600,
        election_timeout_max: 1200,
        // Per snapshot chunk; the last one waits for `App::restore`, so be generous.
        install_snapshot_timeout: 10_000,
        max_payload_entries: 1000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: 1000,
        purge_batch_size: 256,
        ..openraft::Config::default()
    }
}

/// Who this node is and how its groups run.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id; stable for the node's life, unique in the cluster.
    pub node_id: NodeId,
    /// The address other nodes reach this node's Raft service at (`host:port`).
    pub addr: String,
    /// openraft settings shared by every group (see [`default_raft_config`]).
    pub raft: openraft::Config,
    /// gRPC transport settings (client and server).
    pub grpc: GrpcConfig,
    /// The directory of the groups' Raft log entries (a directory per group); the rest of
    /// their storage is in the node's sled database.
    pub log_dir: PathBuf,
}

impl NodeConfig {
    /// Node `node_id` reachable at `addr`, keeping its Raft logs in `log_dir`, with the
    /// default Raft and gRPC settings.
    pub fn new(node_id: NodeId, addr: impl Into<String>, log_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_id,
            addr: addr.into(),
            log_dir: log_dir.into(),
            raft: default_raft_config(),
            grpc: GrpcConfig::default(),
        }
    }
}

/// The Raft side of one aigw process: its sled database, its transport, and the groups it runs.
///
/// Groups are started at runtime with [`start_group`](Self::start_group); the node's gRPC
/// service ([`grpc_service`](Self::grpc_service)) delivers incoming messages to them.
pub struct RaftNode<T: Transport = GrpcTransport> {
    config: NodeConfig,
    raft_config: Arc<openraft::Config>,
    db: sled::Db,
    transport: T,
    registry: GroupRegistry,
    /// Serializes `start_group`, so one group's storage is never opened twice.
    starting: tokio::sync::Mutex<()>,
}

impl RaftNode<GrpcTransport> {
    /// A node talking to its peers over gRPC, storing its groups in `db`.
    pub fn new(db: sled::Db, config: NodeConfig) -> Result<Self, NodeError> {
        let transport = GrpcTransport::new(config.node_id, config.grpc.clone());
        Self::with_transport(db, config, transport)
    }
}

impl<T: Transport> RaftNode<T> {
    /// A node sending through `transport` (tests use the in-process router).
    pub fn with_transport(
        db: sled::Db,
        config: NodeConfig,
        transport: T,
    ) -> Result<Self, NodeError> {
        let raft_config = config
            .raft
            .clone()
            .validate()
            .map_err(|e| NodeError::Config(e.to_string()))?;
        Ok(Self {
            config,
            raft_config: Arc::new(raft_config),
            db,
            transport,
            registry: GroupRegistry::new(),
            starting: tokio::sync::Mutex::new(()),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.node_id
    }

    /// This node's Raft address.
    pub fn addr(&self) -> &str {
        &self.config.addr
    }

    /// This node as a group member: its address.
    pub fn basic_node(&self) -> BasicNode {
        BasicNode::new(self.config.addr.clone())
    }

    /// The groups this node runs; what the gRPC service (or a test router) delivers into.
    pub fn registry(&self) -> &GroupRegistry {
        &self.registry
    }

    /// The gRPC Raft service for this node's groups, to add to the process's tonic server.
    pub fn grpc_service(&self) -> RaftServiceServer<RaftServiceImpl> {
        RaftServiceImpl::new(self.registry.clone()).into_server(&self.config.grpc)
    }

    /// Start (or restart) group `group` on this node with `app` as its state machine.
    ///
    /// Storage is opened from the node's database: a group that ran here before resumes from
    /// its log, vote and applied state. A brand-new group (nothing stored) starts with
    /// `members` as its initial membership on every member, and the member with the lowest
    /// id campaigns at once, so it usually leads; if it is down, the others elect one of
    /// themselves after an election timeout. A single-member group (all-in-one) therefore
    /// elects itself at once.
    /// `members` must include this node and be the same on every member; nodes joining an
    /// existing group later use [`RaftNode::join_group`].
    pub async fn start_group<A: App>(
        &self,
        group: GroupId,
        app: Arc<A>,
        members: BTreeMap<NodeId, BasicNode>,
    ) -> Result<GroupHandle, NodeError> {
        let lowest = members.keys().next().copied().unwrap_or_default();
        self.form_group(group, app, members, lowest).await
    }

    /// [`RaftNode::start_group`], with `initializer` instead of the lowest member campaigning
    /// first in a new group, so it usually leads: a cluster spreads its groups' leaders by
    /// naming a different member for each group.
    pub async fn form_group<A: App>(
        &self,
        group: GroupId,
        app: Arc<A>,
        members: BTreeMap<NodeId, BasicNode>,
        initializer: NodeId,
    ) -> Result<GroupHandle, NodeError> {
        let node = self.config.node_id;
        if !members.contains_key(&node) {
            return Err(NodeError::NotAMember {
                group,
                node,
                members: members.keys().copied().collect(),
            });
        }
        self.open_group(group, app, Some((members, initializer)))
            .await
    }

    /// Start (or restart) this node's replica of an existing group `group` that it is being
    /// added to: it never initializes the group, and waits for the leader to send it the log
    /// (as a learner, then a voter, through `raft().add_learner` and `change_membership` on
    /// the leader).
    pub async fn join_group<A: App>(
        &self,
        group: GroupId,
        app: Arc<A>,
    ) -> Result<GroupHandle, NodeError> {
        self.open_group(group, app, None).await
    }

    async fn open_group<A: App>(
        &self,
        group: GroupId,
        app: Arc<A>,
        initial: Option<(BTreeMap<NodeId, BasicNode>, NodeId)>,
    ) -> Result<GroupHandle, NodeError> {
        let node = self.config.node_id;
        let _starting = self.starting.lock().await;
        if self.registry.get(group).is_some() {
            return Err(NodeError::AlreadyRunning(group));
        }
        let raft_error = |e: &dyn std::fmt::Display| NodeError::Raft {
            group,
            message: e.to_string(),
        };

        let (log, sm) = open_group_storage(&self.db, &self.config.log_dir, group, app)?;
        // Every founder holds the initial membership before the group can receive a vote
        // request: had only the initializer written it, a founder that granted the
        // initializer's first vote could neither initialize nor be elected if the initializer
        // died before replicating it, and the group would wait for that node to come back.
        let seeded = match &initial {
            Some((members, _)) => {
                log.seed_membership(members.clone())
                    .await
                    .map_err(|e| NodeError::Storage {
                        group,
                        message: format!("seeding the initial membership: {e}"),
                    })?
            }
            None => false,
        };
        let network = self.transport.network(group);
        let raft = Raft::new(node, Arc::clone(&self.raft_config), network, log, sm)
            .await
            .map_err(|e| raft_error(&e))?;
        let Some(token) = self.registry.insert(group, raft.clone()) else {
            // Unreachable while `starting` is held; never run two instances of one group.
            let _ = raft.shutdown().await;
            return Err(NodeError::AlreadyRunning(group));
        };
        let handle = GroupHandle {
            group,
            node,
            raft,
            registry: self.registry.clone(),
            token,
        };

        if let Some((members, initializer)) = initial
            && seeded
            && initializer == node
        {
            // The initializer campaigns at once and so usually leads; the other founders
            // campaign only if it has not won by their election timeout.
            tracing::info!(group, members = ?members.keys().collect::<Vec<_>>(), "new raft group: campaigning first");
            if let Err(e) = handle.raft.trigger().elect().await {
                let _ = handle.shutdown().await;
                return Err(raft_error(&e));
            }
        }
        tracing::info!(group, node, new = seeded, "raft group started");
        Ok(handle)
    }

    /// The handle of running group `group`.
    pub fn group(&self, group: GroupId) -> Option<GroupHandle> {
        self.registry
            .get_registered(group)
            .map(|(raft, token)| GroupHandle {
                group,
                node: self.config.node_id,
                raft,
                registry: self.registry.clone(),
                token,
            })
    }

    /// Stop every group and flush the database.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let mut first_error = None;
        for group in self.registry.group_ids() {
            if let Some(handle) = self.group(group)
                && let Err(e) = handle.shutdown().await
            {
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = crate::flush_db(&self.db).await {
            first_error.get_or_insert(NodeError::Flush(e.to_string()));
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// One running group on this node: write commands, confirm reads, watch its state. Cheap to
/// clone.
#[derive(Clone)]
pub struct GroupHandle {
    group: GroupId,
    node: NodeId,
    raft: Raft<TypeConfig>,
    registry: GroupRegistry,
    /// This instance's registration, so a stale handle never unregisters a restarted group.
    token: u64,
}

impl GroupHandle {
    /// The group's id.
    pub fn group_id(&self) -> GroupId {
        self.group
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// Replicate `command`, wait until it is committed and applied here, and return the app's
    /// reply. Only the leader accepts writes: others answer [`WriteError::NotLeader`] with the
    /// leader they know of.
    pub async fn write(&self, command: Vec<u8>) -> Result<Vec<u8>, WriteError> {
        let response = self.raft.client_write(Command(command)).await?;
        Ok(response.data.0)
    }

    /// Confirm, with a quorum, that this node still leads and that its state machine has
    /// applied everything committed before the call: reads made afterwards are linearizable.
    pub async fn ensure_linearizable(&self) -> Result<(), ReadError> {
        self.raft.ensure_linearizable().await?;
        Ok(())
    }

    /// Whether this node currently believes it leads the group (it may have been deposed
    /// without knowing yet: use [`ensure_linearizable`](Self::ensure_linearizable) for reads).
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == ServerState::Leader && metrics.current_leader == Some(self.node)
    }

    /// The leader this node knows of, with its address.
    pub fn leader(&self) -> Option<(NodeId, Option<String>)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone());
        Some((leader, addr))
    }

    /// The nodes that vote in the group's current membership.
    pub fn voters(&self) -> std::collections::BTreeSet<NodeId> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.membership_config.membership().voter_ids().collect()
    }

    /// Makes `members` the group's voters; call it on the leader. New members are added as
    /// learners first and waited for until they have caught up with the log, so the group
    /// never counts an empty replica toward its quorum; then the voter set changes in one
    /// joint-consensus step, and members left out stop being part of the group. Returns
    /// whether anything changed.
    pub async fn change_voters(
        &self,
        members: BTreeMap<NodeId, BasicNode>,
    ) -> Result<bool, NodeError> {
        let wanted: std::collections::BTreeSet<NodeId> = members.keys().copied().collect();
        if wanted.is_empty() || self.voters() == wanted {
            return Ok(false);
        }
        let raft_error = |e: &dyn std::fmt::Display| NodeError::Raft {
            group: self.group,
            message: e.to_string(),
        };
        let known: std::collections::BTreeSet<NodeId> = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect()
        };
        for (id, node) in members {
            if !known.contains(&id) {
                tracing::info!(group = self.group, node = id, "adding learner");
                self.raft
                    .add_learner(id, node, true)
                    .await
                    .map_err(|e| raft_error(&e))?;
            }
        }
        tracing::info!(group = self.group, voters = ?wanted, "changing voters");
        self.raft
            .change_membership(wanted, false)
            .await
            .map_err(|e| raft_error(&e))?;
        Ok(true)
    }

    /// The group's Raft metrics as they change (state, leader, log and applied indexes).
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<NodeId, BasicNode>> {
        self.raft.metrics()
    }

    /// The underlying openraft handle, for what this API does not cover (membership changes,
    /// triggering snapshots, waiting on metrics).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Stop the group on this node: unregister it (incoming messages get NOT_FOUND) and shut
    /// its Raft down. Its storage stays; starting it again resumes.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.registry.remove(self.group, self.token);
        self.raft.shutdown().await.map_err(|e| NodeError::Raft {
            group: self.group,
            message: format!("shutdown: {e}"),
        })
    }
}
