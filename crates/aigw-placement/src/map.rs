//! The versioned shard map: nodes, the replica placement of every shard group, and the
//! gateway → group mapping.

use std::collections::{BTreeMap, BTreeSet};

use hashring::HashRing;
use serde::{Deserialize, Serialize};

use crate::error::PlacementError;
use crate::hash::{GroupKey, StableHashBuilder, VNode, gateway_key, jump_consistent_hash};
use crate::{GroupId, NodeId};

/// Virtual nodes per physical node when the operator does not say otherwise.
///
/// Balance is statistical and has two sources of spread. The ring's arcs: with 1,024 groups
/// on 4–10 nodes, the fullest node was within 6–17 % of the mean at 256 points per node,
/// 14–22 % at 128 (20 node-id sets each). And which groups happen to hash where, which no
/// number of points removes: with only 64 groups on 5 nodes (~38 replicas each) the worst
/// node was 22 % off at 256 points, and on 8–10 nodes (~20 each) 40–50 %; that part shrinks
/// with the square root of the replicas per node, so plan hundreds of groups for an even
/// spread on many nodes. 512 points bought little over 256, and the ring is cloned once per
/// group planned, so size is not free.
pub const DEFAULT_VNODES_PER_NODE: u32 = 256;

/// Replicas per shard group in a cluster.
pub const DEFAULT_REPLICATION: usize = 3;

/// The Raft group of the account manager (metadata); shard groups are numbered from 1.
pub const METADATA_GROUP: GroupId = 0;

/// Whether a node takes new replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Holds replicas and receives new ones.
    Active,
    /// Keeps the replicas it has until they are moved away, but receives no new ones: a
    /// rebalance places nothing on it.
    Draining,
}

/// A physical shard node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id, also its Raft node id in every group it serves.
    pub id: NodeId,
    /// Its gRPC address (`host:port`), for the raft and shard services.
    pub addr: String,
    /// Whether it takes new replicas.
    pub state: NodeState,
}

impl NodeInfo {
    /// An Active node.
    pub fn active(id: NodeId, addr: impl Into<String>) -> Self {
        Self {
            id,
            addr: addr.into(),
            state: NodeState::Active,
        }
    }

    /// A Draining node.
    pub fn draining(id: NodeId, addr: impl Into<String>) -> Self {
        Self {
            id,
            addr: addr.into(),
            state: NodeState::Draining,
        }
    }
}

/// Where one shard group's replicas live.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupPlacement {
    /// Distinct nodes holding a replica; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// The replicas the group was created on, which form it (initialize its Raft membership
    /// with exactly these nodes); a replica placed later joins the formed group instead.
    /// Kept as placement changes, so a founder that sees the group only in a later map
    /// version still knows to form it. Empty when decoded from an older map: its replicas.
    #[serde(default)]
    pub founders: Vec<NodeId>,
}

impl GroupPlacement {
    /// A new group's placement: its first replicas are its founders.
    fn new(replicas: Vec<NodeId>) -> Self {
        Self {
            founders: replicas.clone(),
            replicas,
        }
    }
}

/// One sub-shard of a split gateway: the group holding its logs created from `from_ms` on.
///
/// The lower bound is strict — an edge sends a log to the last sub-shard it knows whose
/// `from_ms` is at or before the log's `created_at`, so a sub-shard never holds a log older
/// than its `from_ms`. The upper bound (the next sub-shard's `from_ms`) is not: an edge that
/// has not seen a split yet keeps sending to the sub-shard before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubShard {
    /// The Raft group holding its logs.
    pub group: GroupId,
    /// The first `created_at` (Unix ms) it takes.
    pub from_ms: i64,
}

/// One step of moving a group's replicas from the current map towards a target map.
///
/// Each step changes one replica, even when a group's target differs in several: add `add`
/// as a learner, promote it to voter once caught up, then remove `remove`, so the group keeps
/// its full replica count throughout. `add` is `None` only when the target has fewer replicas
/// than the current placement (replication lowered, or the group is gone); `remove` is `None`
/// when the group only gains a replica (or is new and must be created). Never both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaMove {
    /// The group changing.
    pub group: GroupId,
    /// The node gaining a replica.
    pub add: Option<NodeId>,
    /// The node losing one, after `add` has caught up.
    pub remove: Option<NodeId>,
}

/// The cluster's node list and placement at one version.
///
/// Built only by [`ShardMap::plan`], [`ShardMap::rebalance`], [`ShardMap::split`] or
/// deserialization, all of which check its invariants: node ids and addresses unique, groups
/// numbered `1..=n` (the first `hashed_groups` of them take gateways by hash, the rest were
/// created by splits), each group's replicas distinct known nodes, each split gateway's
/// sub-shards in time order on distinct groups. Placement is a pure function of (nodes, group
/// ids, replication, vnodes per node), so any process can recompute and verify a map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawShardMap")]
pub struct ShardMap {
    version: u64,
    nodes: BTreeMap<NodeId, NodeInfo>,
    groups: BTreeMap<GroupId, GroupPlacement>,
    hashed_groups: u64,
    /// Account → gateway → its sub-shards, for split gateways (looked up on every log an
    /// edge ships, without allocating).
    sub_shards: BTreeMap<String, BTreeMap<String, Vec<SubShard>>>,
}

/// The serialized shape of a [`ShardMap`], validated before it becomes one.
#[derive(Deserialize)]
struct RawShardMap {
    version: u64,
    nodes: BTreeMap<NodeId, NodeInfo>,
    groups: BTreeMap<GroupId, GroupPlacement>,
    /// 0 (absent, an older map): every group.
    #[serde(default)]
    hashed_groups: u64,
    #[serde(default)]
    sub_shards: BTreeMap<String, BTreeMap<String, Vec<SubShard>>>,
}

impl TryFrom<RawShardMap> for ShardMap {
    type Error = PlacementError;

    fn try_from(raw: RawShardMap) -> Result<Self, PlacementError> {
        for (&key, node) in &raw.nodes {
            if key != node.id {
                return Err(PlacementError::NodeKeyMismatch { key, id: node.id });
            }
        }
        check_addresses(raw.nodes.values())?;
        if raw.groups.is_empty() {
            return Err(PlacementError::NoGroups);
        }
        let last = raw.groups.len() as GroupId;
        let mut groups = raw.groups;
        for (expected, (&group, placement)) in (1..).zip(groups.iter_mut()) {
            if group != expected {
                return Err(PlacementError::GroupNumbering {
                    expected_last: last,
                    found: group,
                });
            }
            let invalid = |reason| PlacementError::InvalidReplicas {
                group,
                replicas: placement.replicas.clone(),
                reason,
            };
            if placement.replicas.is_empty() {
                return Err(invalid("no replica"));
            }
            let distinct: BTreeSet<_> = placement.replicas.iter().collect();
            if distinct.len() != placement.replicas.len() {
                return Err(invalid("a node is listed twice"));
            }
            if !placement.replicas.iter().all(|n| raw.nodes.contains_key(n)) {
                return Err(invalid("a node is not in the node list"));
            }
            if placement.founders.is_empty() {
                placement.founders = placement.replicas.clone();
            }
        }
        let hashed_groups = match raw.hashed_groups {
            0 => last,
            n if n <= last => n,
            n => {
                return Err(PlacementError::InvalidSplit(format!(
                    "{n} hashed groups but only {last} groups"
                )));
            }
        };
        let mut split_groups = BTreeSet::new();
        let split = raw
            .sub_shards
            .iter()
            .flat_map(|(account, gateways)| gateways.iter().map(move |(g, s)| (account, g, s)));
        for (account, gateway, subs) in split {
            let invalid = |reason: &str| {
                PlacementError::InvalidSplit(format!("gateway {account}/{gateway}: {reason}"))
            };
            if subs.len() < 2 {
                return Err(invalid("a split gateway has at least 2 sub-shards"));
            }
            if !subs.windows(2).all(|w| w[0].from_ms < w[1].from_ms) {
                return Err(invalid("sub-shards are not in time order"));
            }
            for sub in &subs[1..] {
                if sub.group <= hashed_groups || sub.group > last {
                    return Err(invalid("a sub-shard's group is not a split group"));
                }
                if !split_groups.insert(sub.group) {
                    return Err(invalid("a split group serves two sub-shards"));
                }
            }
        }
        Ok(Self {
            version: raw.version,
            nodes: raw.nodes,
            groups,
            hashed_groups,
            sub_shards: raw.sub_shards,
        })
    }
}

impl ShardMap {
    /// A fresh map at version 1: groups `1..=shard_groups`, each on `replication` distinct
    /// Active nodes.
    ///
    /// Each Active node puts `vnodes_per_node` points on a hash ring; a group hashes its id
    /// onto the ring and walks clockwise, taking each physical node the first time it meets
    /// one, until it has `replication`. Draining nodes are listed but get nothing.
    pub fn plan(
        nodes: impl IntoIterator<Item = NodeInfo>,
        shard_groups: u32,
        replication: usize,
        vnodes_per_node: u32,
    ) -> Result<Self, PlacementError> {
        if shard_groups == 0 {
            return Err(PlacementError::NoGroups);
        }
        let (nodes, ring) = active_ring(nodes, replication, vnodes_per_node)?;
        let groups = (1..=GroupId::from(shard_groups))
            .map(|group| (group, GroupPlacement::new(walk(&ring, group, replication))))
            .collect();
        Ok(ShardMap {
            version: 1,
            nodes,
            groups,
            hashed_groups: u64::from(shard_groups),
            sub_shards: BTreeMap::new(),
        })
    }

    /// The target map for a new node set (a node added, removed, or marked Draining), one
    /// version on, with the same groups.
    ///
    /// The target is recomputed from scratch exactly as [`ShardMap::plan`] would, which is what
    /// keeps it minimal: the ring walk only changes where the changed node sits in it, so one
    /// node added (or removed, or drained) changes at most one replica per group, and only in
    /// groups whose walk meets that node. [`ShardMap::moves`] lists the steps from here to the
    /// target. Draining nodes stay in the node list (their replicas live there until moved).
    pub fn rebalance(
        &self,
        new_nodes: impl IntoIterator<Item = NodeInfo>,
        replication: usize,
        vnodes_per_node: u32,
    ) -> Result<Self, PlacementError> {
        let (nodes, ring) = active_ring(new_nodes, replication, vnodes_per_node)?;
        let groups = self
            .groups
            .iter()
            .map(|(&group, placement)| {
                let replicas = walk(&ring, group, replication);
                let founders = placement.founders.clone();
                (group, GroupPlacement { replicas, founders })
            })
            .collect();
        Ok(ShardMap {
            version: self.next_version()?,
            nodes,
            groups,
            hashed_groups: self.hashed_groups,
            sub_shards: self.sub_shards.clone(),
        })
    }

    /// This map with `account`/`gateway` split, one version on: a new group, placed by the
    /// ring like every other (so on possibly different nodes), becomes the gateway's active
    /// sub-shard for logs created from `from_ms` on; the sub-shards before it keep what they
    /// hold. `from_ms` must lie after the current active sub-shard's start.
    pub fn split(
        &self,
        account: &str,
        gateway: &str,
        from_ms: i64,
        replication: usize,
        vnodes_per_node: u32,
    ) -> Result<Self, PlacementError> {
        let mut subs = self.sub_shards(account, gateway);
        if subs.last().is_some_and(|last| last.from_ms >= from_ms) {
            return Err(PlacementError::InvalidSplit(format!(
                "gateway {account}/{gateway}: a split at {from_ms} ms is not after its active \
                 sub-shard's start"
            )));
        }
        let (_, ring) = active_ring(self.nodes.values().cloned(), replication, vnodes_per_node)?;
        let group = self.groups.len() as GroupId + 1;
        let mut split = self.clone();
        split.version = self.next_version()?;
        split
            .groups
            .insert(group, GroupPlacement::new(walk(&ring, group, replication)));
        subs.push(SubShard { group, from_ms });
        split
            .sub_shards
            .entry(account.to_owned())
            .or_default()
            .insert(gateway.to_owned(), subs);
        Ok(split)
    }

    /// The sub-shards of `account`/`gateway` in time order: one (its hashed group, from the
    /// beginning of time) until it is split.
    pub fn sub_shards(&self, account: &str, gateway: &str) -> Vec<SubShard> {
        match self.split_of(account, gateway) {
            Some(subs) => subs.to_vec(),
            None => vec![SubShard {
                group: self.group_for(account, gateway),
                from_ms: i64::MIN,
            }],
        }
    }

    fn split_of(&self, account: &str, gateway: &str) -> Option<&[SubShard]> {
        self.sub_shards
            .get(account)?
            .get(gateway)
            .map(Vec::as_slice)
    }

    /// Whether `account`/`gateway` has been split.
    pub fn is_split(&self, account: &str, gateway: &str) -> bool {
        self.split_of(account, gateway).is_some()
    }

    /// The group that takes a log of `account`/`gateway` created at `created_at_ms`: the last
    /// sub-shard starting at or before it.
    pub fn group_at(&self, account: &str, gateway: &str, created_at_ms: i64) -> GroupId {
        match self.split_of(account, gateway) {
            Some(subs) => subs
                .iter()
                .rev()
                .find(|s| s.from_ms <= created_at_ms)
                .or(subs.first())
                .map_or_else(|| self.group_for(account, gateway), |s| s.group),
            None => self.group_for(account, gateway),
        }
    }

    /// The version of the map that replaces this one.
    fn next_version(&self) -> Result<u64, PlacementError> {
        self.version
            .checked_add(1)
            .ok_or(PlacementError::VersionExhausted {
                version: self.version,
            })
    }

    /// This map with one replica of `group` moved from node `from` to node `to`, one version
    /// on: an operator's override of the ring (to empty a failing disk, say), kept until the
    /// next [`ShardMap::rebalance`] recomputes placement. `to` must be an Active node that does
    /// not hold a replica of the group yet; `from` must hold one. The moved replica takes
    /// `from`'s place in the list, so the preferred leader changes only if `from` was it.
    pub fn move_replica(
        &self,
        group: GroupId,
        from: NodeId,
        to: NodeId,
    ) -> Result<Self, PlacementError> {
        let invalid = |reason: String| PlacementError::InvalidMove { group, reason };
        let placement = self
            .groups
            .get(&group)
            .ok_or_else(|| invalid(format!("there is no group {group}")))?;
        let slot = placement
            .replicas
            .iter()
            .position(|n| *n == from)
            .ok_or_else(|| invalid(format!("node {from} holds no replica of it")))?;
        if placement.replicas.contains(&to) {
            return Err(invalid(format!("node {to} already holds a replica of it")));
        }
        match self.nodes.get(&to) {
            Some(node) if node.state == NodeState::Active => {}
            Some(_) => return Err(invalid(format!("node {to} is draining"))),
            None => return Err(invalid(format!("node {to} is not in the map"))),
        }
        let mut moved = self.clone();
        moved.version = self.next_version()?;
        if let Some(p) = moved.groups.get_mut(&group) {
            p.replicas[slot] = to;
        }
        Ok(moved)
    }

    /// The steps from this map's placement to `target`'s, group by group in id order.
    ///
    /// A group whose replica set is the same in both (whatever the order) has none. Otherwise
    /// the nodes it gains are paired with the nodes it loses, one [`ReplicaMove`] per pair, so
    /// that each step changes a single replica even when a group changes several at once;
    /// unpaired gains or losses become steps with `remove` or `add` left `None`. Groups only
    /// in the target appear as adds of all their replicas, groups only here as removals.
    pub fn moves(&self, target: &ShardMap) -> Vec<ReplicaMove> {
        let groups: BTreeSet<GroupId> = self
            .groups
            .keys()
            .chain(target.groups.keys())
            .copied()
            .collect();
        let mut moves = Vec::new();
        for group in groups {
            let current = self.replicas(group).unwrap_or_default();
            let wanted = target.replicas(group).unwrap_or_default();
            let adds: Vec<NodeId> = wanted
                .iter()
                .filter(|n| !current.contains(n))
                .copied()
                .collect();
            let removes: Vec<NodeId> = current
                .iter()
                .filter(|n| !wanted.contains(n))
                .copied()
                .collect();
            for i in 0..adds.len().max(removes.len()) {
                moves.push(ReplicaMove {
                    group,
                    add: adds.get(i).copied(),
                    remove: removes.get(i).copied(),
                });
            }
        }
        moves
    }

    /// The shard group an (account, gateway) pair hashes to: all of its logs until it is
    /// split, its first sub-shard after (see [`ShardMap::group_at`]).
    ///
    /// Jump consistent hash over the groups `1..=n` of the SHA-256 key of the pair, not a
    /// second ring: it needs no ring kept per map, spreads gateways as evenly as the keys are
    /// random (a ring needs hundreds of points per group to get close), and growing from n to
    /// m groups moves exactly the gateways that land in the new groups, an expected
    /// (m − n) / m. Its one limit — only the highest group can ever be taken away — is no
    /// limit here: groups are added, never removed. The result depends only on the strings
    /// and the number of groups, never on the process, platform or version.
    pub fn group_for(&self, account: &str, gateway: &str) -> GroupId {
        let buckets = self.hashed_groups;
        if buckets <= 1 {
            // Jump hash over one bucket is that bucket whatever the key: skip the SHA-256 of
            // the pair, which an all-in-one process would otherwise pay for every log.
            return 1;
        }
        jump_consistent_hash(gateway_key(account, gateway), buckets) + 1
    }

    /// The replicas of `group`, preferred leader first; `None` for an unknown group.
    pub fn replicas(&self, group: GroupId) -> Option<&[NodeId]> {
        self.groups.get(&group).map(|p| p.replicas.as_slice())
    }

    /// The node with id `id`.
    pub fn node(&self, id: NodeId) -> Option<&NodeInfo> {
        self.nodes.get(&id)
    }

    /// The map's version; every rebalance increments it.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every node, Active or Draining, by id.
    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeInfo> {
        &self.nodes
    }

    /// Every shard group's placement, by id (`1..=n`), split groups included.
    pub fn groups(&self) -> &BTreeMap<GroupId, GroupPlacement> {
        &self.groups
    }

    /// The map's replicated and wire form (postcard): compact, and decoded only through
    /// [`ShardMap::from_bytes`], which checks every invariant.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain integers, strings and maps into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// A map from [`ShardMap::to_bytes`]; malformed bytes and invalid maps are refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PlacementError> {
        postcard::from_bytes(bytes).map_err(|e| PlacementError::Decode(e.to_string()))
    }
}

/// Validates `nodes` and builds the ring of their Active members.
#[allow(clippy::type_complexity)]
fn active_ring(
    nodes: impl IntoIterator<Item = NodeInfo>,
    replication: usize,
    vnodes_per_node: u32,
) -> Result<
    (
        BTreeMap<NodeId, NodeInfo>,
        HashRing<VNode, StableHashBuilder>,
    ),
    PlacementError,
> {
    if replication == 0 {
        return Err(PlacementError::ZeroReplication);
    }
    if vnodes_per_node == 0 {
        return Err(PlacementError::NoVirtualNodes);
    }
    let mut by_id = BTreeMap::new();
    for node in nodes {
        if by_id.contains_key(&node.id) {
            return Err(PlacementError::DuplicateNodeId { id: node.id });
        }
        by_id.insert(node.id, node);
    }
    check_addresses(by_id.values())?;
    let active = by_id
        .values()
        .filter(|n| n.state == NodeState::Active)
        .count();
    if active < replication {
        return Err(PlacementError::TooFewActiveNodes {
            active,
            draining: by_id.len() - active,
            replication,
        });
    }
    let ring = node_ring(&by_id, vnodes_per_node);
    Ok((by_id, ring))
}

/// Rejects empty and shared addresses.
fn check_addresses<'a>(nodes: impl Iterator<Item = &'a NodeInfo>) -> Result<(), PlacementError> {
    let mut seen: BTreeMap<&str, NodeId> = BTreeMap::new();
    for node in nodes {
        if node.addr.is_empty() {
            return Err(PlacementError::EmptyAddress { id: node.id });
        }
        if let Some(&first) = seen.get(node.addr.as_str()) {
            return Err(PlacementError::DuplicateAddress {
                addr: node.addr.clone(),
                first,
                second: node.id,
            });
        }
        seen.insert(&node.addr, node.id);
    }
    Ok(())
}

/// The ring of virtual nodes of the Active nodes.
fn node_ring(
    nodes: &BTreeMap<NodeId, NodeInfo>,
    vnodes_per_node: u32,
) -> HashRing<VNode, StableHashBuilder> {
    let points = nodes
        .values()
        .filter(|n| n.state == NodeState::Active)
        .flat_map(|n| (0..vnodes_per_node).map(move |index| VNode { node: n.id, index }))
        .collect();
    let mut ring = HashRing::with_hasher(StableHashBuilder);
    ring.batch_add(points);
    ring
}

/// The first `replication` distinct physical nodes met walking the ring from `group`'s hash.
///
/// hashring 0.3 can walk but not skip: `get_with_replicas(key, k)` returns the owning point
/// and the `k` points after it, repeats included (and, past the ring's length, wraps). Asking
/// for `len - 1` gives every point exactly once in walk order, which we dedupe into physical
/// nodes. It clones the ring per call — O(nodes × vnodes) per group, fine for a control-plane
/// computation done once per membership change.
fn walk(
    ring: &HashRing<VNode, StableHashBuilder>,
    group: GroupId,
    replication: usize,
) -> Vec<NodeId> {
    let points = ring
        .get_with_replicas(&GroupKey(group), ring.len().saturating_sub(1))
        .unwrap_or_default();
    let mut replicas = Vec::with_capacity(replication);
    for point in points {
        if !replicas.contains(&point.node) {
            replicas.push(point.node);
            if replicas.len() == replication {
                break;
            }
        }
    }
    replicas
}
