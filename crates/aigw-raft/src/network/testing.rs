//! An in-process transport for cluster tests, with fault injection.
//!
//! A [`Router`] connects the [`GroupRegistry`]s of in-process nodes; each node sends through
//! its own [`RouterTransport`]. Faults, modelled on TiKV's transport filters and openraft's
//! test router: isolate a node (a partition: nothing in or out), block one direction between
//! two nodes, drop a random share of messages, delay delivery to a node, or remove a node
//! (crashed: unreachable). Messages are handed over as values, without serialization.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, Raft, RaftNetwork, RaftNetworkFactory};

use super::{GroupRegistry, Transport};
use crate::types::{GroupId, NodeId, TypeConfig};

/// Connects in-process nodes, and breaks the connections on demand. Cheap to clone.
#[derive(Clone, Default)]
pub struct Router {
    state: Arc<Mutex<RouterState>>,
}

#[derive(Default)]
struct RouterState {
    nodes: HashMap<NodeId, GroupRegistry>,
    isolated: HashSet<NodeId>,
    blocked: HashSet<(NodeId, NodeId)>,
    delays: HashMap<NodeId, Duration>,
    /// Share of messages dropped at random, in 0.0..=1.0.
    drop_rate: f64,
    rng: u64,
}

/// Why the router did not deliver a message.
#[derive(Debug, thiserror::Error)]
enum Fault {
    #[error("node {0} is not connected to the router")]
    Down(NodeId),
    #[error("node {0} is isolated")]
    Isolated(NodeId),
    #[error("messages {0} -> {1} are blocked")]
    Blocked(NodeId, NodeId),
    #[error("message {0} -> {1} dropped")]
    Dropped(NodeId, NodeId),
    #[error("node {0} does not run group {1}")]
    NoGroup(NodeId, GroupId),
}

impl RouterState {
    /// A pseudo-random number in 0.0..1.0 (xorshift; reproducible per router).
    fn next_random(&mut self) -> f64 {
        let mut x = if self.rng == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            self.rng
        };
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether a message may pass from `from` to `to` right now.
    fn check_link(&self, from: NodeId, to: NodeId) -> Result<(), Fault> {
        for node in [from, to] {
            if self.isolated.contains(&node) {
                return Err(Fault::Isolated(node));
            }
        }
        if self.blocked.contains(&(from, to)) {
            return Err(Fault::Blocked(from, to));
        }
        Ok(())
    }
}

impl Router {
    /// A router with no nodes and no faults.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RouterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connect node `node`, delivering to the groups in `registry`.
    pub fn add_node(&self, node: NodeId, registry: GroupRegistry) {
        self.state().nodes.insert(node, registry);
    }

    /// Disconnect node `node` (as if it crashed): messages to it fail as unreachable.
    pub fn remove_node(&self, node: NodeId) {
        self.state().nodes.remove(&node);
    }

    /// The transport node `node` sends through.
    pub fn transport(&self, node: NodeId) -> RouterTransport {
        RouterTransport {
            router: self.clone(),
            node,
        }
    }

    /// Partition `node` from every other node, both directions.
    pub fn isolate(&self, node: NodeId) {
        self.state().isolated.insert(node);
    }

    /// Undo [`isolate`](Self::isolate) for `node`.
    pub fn heal(&self, node: NodeId) {
        self.state().isolated.remove(&node);
    }

    /// Drop every message from `from` to `to` (one direction).
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.state().blocked.insert((from, to));
    }

    /// Undo [`block`](Self::block).
    pub fn unblock(&self, from: NodeId, to: NodeId) {
        self.state().blocked.remove(&(from, to));
    }

    /// Delay every message delivered to `node` by `delay` (`None`: no delay).
    pub fn set_delay(&self, node: NodeId, delay: Option<Duration>) {
        let mut state = self.state();
        match delay {
            Some(delay) => state.delays.insert(node, delay),
            None => state.delays.remove(&node),
        };
    }

    /// Drop this share (0.0..=1.0) of all messages at random, reproducibly from `seed`.
    pub fn set_drop_rate(&self, rate: f64, seed: u64) {
        let mut state = self.state();
        state.drop_rate = rate.clamp(0.0, 1.0);
        state.rng = seed;
    }

    /// Remove every fault: isolation, blocks, delays, drops.
    pub fn heal_all(&self) {
        let mut state = self.state();
        state.isolated.clear();
        state.blocked.clear();
        state.delays.clear();
        state.drop_rate = 0.0;
    }

    /// The target's Raft for `group` and the delivery delay, or why the message is lost.
    fn route(
        &self,
        from: NodeId,
        to: NodeId,
        group: GroupId,
    ) -> Result<(Raft<TypeConfig>, Option<Duration>), Fault> {
        let mut state = self.state();
        state.check_link(from, to)?;
        if state.drop_rate > 0.0 && state.next_random() < state.drop_rate {
            return Err(Fault::Dropped(from, to));
        }
        let registry = state.nodes.get(&to).ok_or(Fault::Down(to))?;
        let raft = registry.get(group).ok_or(Fault::NoGroup(to, group))?;
        Ok((raft, state.delays.get(&to).copied()))
    }
}

/// The sending side of one node on a [`Router`].
#[derive(Clone)]
pub struct RouterTransport {
    router: Router,
    node: NodeId,
}

impl Transport for RouterTransport {
    type Network = RouterNetworkFactory;

    fn network(&self, group: GroupId) -> RouterNetworkFactory {
        RouterNetworkFactory {
            transport: self.clone(),
            group,
        }
    }
}

/// openraft's network factory for one group on a [`Router`].
pub struct RouterNetworkFactory {
    transport: RouterTransport,
    group: GroupId,
}

impl RaftNetworkFactory<TypeConfig> for RouterNetworkFactory {
    type Network = RouterNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> RouterNetwork {
        RouterNetwork {
            transport: self.transport.clone(),
            group: self.group,
            target,
            target_node: node.clone(),
        }
    }
}

/// The connection of one group to one peer replica on a [`Router`].
pub struct RouterNetwork {
    transport: RouterTransport,
    group: GroupId,
    target: NodeId,
    target_node: BasicNode,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl RouterNetwork {
    async fn deliver<Resp, E, Fut>(
        &self,
        kind: RPCTypes,
        option: &RPCOption,
        send: impl FnOnce(Raft<TypeConfig>) -> Fut,
    ) -> RpcResult<Resp, E>
    where
        E: std::error::Error,
        Fut: Future<Output = Result<Resp, RaftError<NodeId, E>>>,
    {
        let (from, to) = (self.transport.node, self.target);
        let lost = |fault: Fault| match fault {
            Fault::Dropped(..) => RPCError::Network(NetworkError::new(&fault)),
            _ => RPCError::Unreachable(Unreachable::new(&fault)),
        };
        let (raft, delay) = self
            .transport
            .router
            .route(from, to, self.group)
            .map_err(lost)?;
        let ttl = option.hard_ttl();
        let call = async {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            send(raft).await
        };
        let result = tokio::time::timeout(ttl, call).await.map_err(|_| {
            RPCError::Timeout(Timeout {
                action: kind,
                id: from,
                target: to,
                timeout: ttl,
            })
        })?;
        // The reply travels back over the same (possibly broken meanwhile) link.
        self.transport
            .router
            .state()
            .check_link(to, from)
            .map_err(lost)?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(to, self.target_node.clone(), e))
        })
    }
}

impl RaftNetwork<TypeConfig> for RouterNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.deliver(RPCTypes::AppendEntries, &option, |raft| async move {
            raft.append_entries(rpc).await
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.deliver(RPCTypes::InstallSnapshot, &option, |raft| async move {
            raft.install_snapshot(rpc).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.deliver(RPCTypes::Vote, &option, |raft| async move {
            raft.vote(rpc).await
        })
        .await
    }

    /// Retry unreachable peers quickly: tests heal partitions and expect prompt catch-up.
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(50)))
    }
}
