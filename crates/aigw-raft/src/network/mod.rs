//! How Raft messages travel: the [`Transport`] a node sends through, the [`GroupRegistry`] a node
//! receives into, and the two transports — gRPC between processes, and (for tests) an in-process
//! router with fault injection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use openraft::{Raft, RaftNetworkFactory};

use crate::types::{GroupId, TypeConfig};

pub(crate) mod grpc;
#[cfg(any(test, feature = "testing"))]
pub(crate) mod testing;

/// The sending side of a node's Raft traffic: hands each group the network openraft uses to
/// reach that group's replicas on other nodes.
pub trait Transport: Send + Sync + 'static {
    /// The per-group network factory given to `Raft::new`.
    type Network: RaftNetworkFactory<TypeConfig>;

    /// The network for `group`, sending from this node.
    fn network(&self, group: GroupId) -> Self::Network;
}

/// The receiving side: the Raft groups this node runs, by id. Groups are added and removed at
/// runtime (by [`RaftNode`](crate::RaftNode)); clones share the same registry.
#[derive(Clone, Default)]
pub struct GroupRegistry {
    groups: Arc<RwLock<HashMap<GroupId, Registered>>>,
    next_token: Arc<AtomicU64>,
}

/// One registration: the token tells a restarted group from the instance a stale handle holds.
struct Registered {
    raft: Raft<TypeConfig>,
    token: u64,
}

impl GroupRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The Raft of `group`, if this node runs it.
    pub fn get(&self, group: GroupId) -> Option<Raft<TypeConfig>> {
        self.get_registered(group).map(|(raft, _)| raft)
    }

    /// The ids of the registered groups, ascending.
    pub fn group_ids(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = self
            .groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The Raft of `group` and its registration token.
    pub(crate) fn get_registered(&self, group: GroupId) -> Option<(Raft<TypeConfig>, u64)> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&group)
            .map(|r| (r.raft.clone(), r.token))
    }

    /// Register `raft` as `group`; its token, or `None` (and no change) if the group is taken.
    pub(crate) fn insert(&self, group: GroupId, raft: Raft<TypeConfig>) -> Option<u64> {
        let mut groups = self.groups.write().unwrap_or_else(PoisonError::into_inner);
        if groups.contains_key(&group) {
            return None;
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        groups.insert(group, Registered { raft, token });
        Some(token)
    }

    /// Unregister `group` if it is still the registration `token`.
    pub(crate) fn remove(&self, group: GroupId, token: u64) {
        let mut groups = self.groups.write().unwrap_or_else(PoisonError::into_inner);
        if groups.get(&group).is_some_and(|r| r.token == token) {
            groups.remove(&group);
        }
    }
}
