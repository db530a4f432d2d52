use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;

use crate::hash::{GroupKey, StableHashBuilder, VNode, gateway_key, jump_consistent_hash};
use crate::{
    DEFAULT_REPLICATION, DEFAULT_VNODES_PER_NODE, GroupId, GroupPlacement, NodeId, NodeInfo,
    PlacementError, ReplicaMove, ShardMap, SubShard,
};

const R: usize = DEFAULT_REPLICATION;
const V: u32 = DEFAULT_VNODES_PER_NODE;

fn nodes(ids: impl IntoIterator<Item = NodeId>) -> Vec<NodeInfo> {
    ids.into_iter()
        .map(|id| NodeInfo::active(id, format!("10.0.0.{id}:7000")))
        .collect()
}

fn plan(ids: impl IntoIterator<Item = NodeId>, groups: u32) -> ShardMap {
    ShardMap::plan(nodes(ids), groups, R, V).expect("plan")
}

/// Replicas held by each node of the map (0 for a node holding none).
fn load(map: &ShardMap) -> BTreeMap<NodeId, usize> {
    let mut load: BTreeMap<NodeId, usize> = map.nodes().keys().map(|&n| (n, 0)).collect();
    for placement in map.groups().values() {
        for n in &placement.replicas {
            *load.entry(*n).or_default() += 1;
        }
    }
    load
}

fn total_replicas(map: &ShardMap) -> usize {
    map.groups().values().map(|p| p.replicas.len()).sum()
}

fn moves_per_group(moves: &[ReplicaMove]) -> BTreeMap<GroupId, usize> {
    let mut per = BTreeMap::new();
    for m in moves {
        *per.entry(m.group).or_default() += 1;
    }
    per
}

fn replica_set(map: &ShardMap, group: GroupId) -> BTreeSet<NodeId> {
    map.replicas(group)
        .expect("group exists")
        .iter()
        .copied()
        .collect()
}

fn gateways(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("account-{}", i % 97), format!("gateway-{i}")))
        .collect()
}

#[test]
fn hashes_are_pinned() {
    // Changing any of these re-places every replica or gateway of a running cluster.
    let h = StableHashBuilder;
    // Cross-checked outside Rust: the first 8 bytes, little-endian, of SHA-256 over the tag
    // and the little-endian fields (Python's hashlib gives the same numbers).
    assert_eq!(
        h.hash_one(VNode { node: 1, index: 0 }),
        6_603_062_733_699_029_481
    );
    assert_eq!(h.hash_one(GroupKey(1)), 8_327_056_105_509_777_054);
    assert_eq!(gateway_key("acct", "default"), 9_607_172_746_188_086_662);
    assert_ne!(gateway_key("ab", "c"), gateway_key("a", "bc"));
    // Jump hash: one bucket takes everything; the rest agree with the paper's floating-point
    // version (checked on 60,000 random keys outside Rust).
    assert_eq!(jump_consistent_hash(0, 1), 0);
    assert_eq!(jump_consistent_hash(u64::MAX, 1), 0);
    let buckets: Vec<u64> = (0..8u64)
        .map(|k| jump_consistent_hash(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), 100))
        .collect();
    assert_eq!(buckets, vec![0, 71, 84, 15, 60, 71, 82, 68]);
}

#[test]
fn placement_is_deterministic_and_pinned() {
    let a = plan(1..=5, 64);
    let b = ShardMap::plan(nodes([5, 3, 1, 4, 2]), 64, R, V).expect("plan");
    assert_eq!(a, b, "node order must not matter");
    assert_eq!(a.version(), 1);
    let first: Vec<(GroupId, Vec<NodeId>)> = (1..=6)
        .map(|g| (g, a.replicas(g).expect("group").to_vec()))
        .collect();
    assert_eq!(
        first,
        vec![
            (1, vec![1, 4, 5]),
            (2, vec![4, 1, 3]),
            (3, vec![3, 2, 4]),
            (4, vec![3, 2, 4]),
            (5, vec![2, 1, 4]),
            (6, vec![2, 4, 1]),
        ]
    );
    let owners: Vec<GroupId> = [
        ("acct", "default"),
        ("acct", "prod"),
        ("0123456789abcdef", "my-gateway"),
    ]
    .iter()
    .map(|(a_, g)| a.group_for(a_, g))
    .collect();
    assert_eq!(owners, vec![39, 40, 61]);
}

#[test]
fn every_group_has_distinct_active_replicas() {
    for (n, replication) in [(3u64, 3usize), (5, 3), (7, 3), (4, 1), (6, 5)] {
        let map = ShardMap::plan(nodes(1..=n), 64, replication, V).expect("plan");
        assert_eq!(map.groups().len(), 64);
        assert_eq!(
            map.groups().keys().copied().collect::<Vec<_>>(),
            (1..=64).collect::<Vec<_>>()
        );
        for (g, p) in map.groups() {
            assert_eq!(p.replicas.len(), replication, "group {g}");
            let distinct: BTreeSet<_> = p.replicas.iter().collect();
            assert_eq!(distinct.len(), replication, "group {g}: {:?}", p.replicas);
            assert!(p.replicas.iter().all(|r| map.node(*r).is_some()));
        }
    }
}

#[test]
fn three_nodes_hold_every_group() {
    let map = plan(1..=3, 64);
    assert_eq!(load(&map), BTreeMap::from([(1, 64), (2, 64), (3, 64)]));
}

#[test]
fn five_nodes_are_balanced() {
    let map = plan(1..=5, 64);
    let load = load(&map);
    let mean = total_replicas(&map) as f64 / 5.0;
    println!("5 nodes, 64 groups: {load:?}, mean {mean}");
    for (node, &count) in &load {
        let dev = (count as f64 - mean).abs() / mean;
        assert!(dev <= 0.25, "node {node} holds {count}, mean {mean}");
    }
}

#[test]
fn adding_a_node_moves_about_a_quarter() {
    for (before, groups) in [(3u64, 64u32), (4, 64), (5, 64), (5, 256)] {
        let map = plan(1..=before, groups);
        let bigger = map
            .rebalance(nodes(1..=before + 1), R, V)
            .expect("rebalance");
        assert_eq!(bigger.version(), 2);
        let moves = map.moves(&bigger);
        let fraction = moves.len() as f64 / total_replicas(&map) as f64;
        println!(
            "{before}→{} nodes, {groups} groups: {} of {} replicas move ({:.1}%)",
            before + 1,
            moves.len(),
            total_replicas(&map),
            fraction * 100.0
        );
        assert!(fraction <= 0.35, "{fraction}");
        assert!(!moves.is_empty());
        // One node joins: each touched group swaps exactly one replica, onto the new node.
        for m in &moves {
            assert_eq!(m.add, Some(before + 1), "{m:?}");
            assert!(m.remove.is_some(), "{m:?}");
        }
        assert!(moves_per_group(&moves).values().all(|&c| c == 1));
        // Untouched groups keep their set exactly.
        for g in map.groups().keys() {
            if !moves.iter().any(|m| m.group == *g) {
                assert_eq!(replica_set(&map, *g), replica_set(&bigger, *g));
            }
        }
    }
}

#[test]
fn three_to_four_nodes_moves_a_quarter_of_replicas() {
    let map = plan(1..=3, 64);
    let bigger = map.rebalance(nodes(1..=4), R, V).expect("rebalance");
    let moved = map.moves(&bigger).len();
    // Every group held all three old nodes; it changes iff the new node is among its three.
    let expected = bigger
        .groups()
        .values()
        .filter(|p| p.replicas.contains(&4))
        .count();
    assert_eq!(moved, expected);
    assert_eq!(load(&bigger).get(&4).copied(), Some(moved));
}

#[test]
fn removing_a_node_moves_only_its_replicas() {
    let map = plan(1..=5, 64);
    let smaller = map.rebalance(nodes([1, 2, 4, 5]), R, V).expect("rebalance");
    assert!(smaller.node(3).is_none());
    let moves = map.moves(&smaller);
    let on_3 = load(&map)[&3];
    println!("5→4 nodes, 64 groups: {} of 192 replicas move", moves.len());
    assert_eq!(moves.len(), on_3);
    for m in &moves {
        assert_eq!(m.remove, Some(3), "{m:?}");
        assert!(m.add.is_some_and(|a| a != 3));
    }
    for g in map.groups().keys() {
        let before = replica_set(&map, *g);
        if !before.contains(&3) {
            assert_eq!(before, replica_set(&smaller, *g), "group {g} moved");
        }
    }
}

#[test]
fn draining_node_receives_nothing_and_stays_listed() {
    let map = plan(1..=5, 64);
    let mut new_nodes = nodes(1..=5);
    new_nodes[1] = NodeInfo::draining(2, "10.0.0.2:7000");
    let drained = map.rebalance(new_nodes, R, V).expect("rebalance");
    // Listed, so its address resolves while its replicas are moved off.
    assert_eq!(
        drained.node(2).map(|n| n.addr.as_str()),
        Some("10.0.0.2:7000")
    );
    assert_eq!(load(&drained)[&2], 0);
    let moves = map.moves(&drained);
    println!(
        "draining 1 of 5 nodes: {} of 192 replicas move",
        moves.len()
    );
    assert_eq!(moves.len(), load(&map)[&2]);
    assert!(
        moves
            .iter()
            .all(|m| m.remove == Some(2) && m.add != Some(2))
    );

    // A map planned with a draining node places nothing on it either.
    let mut with_draining = nodes(1..=4);
    with_draining.push(NodeInfo::draining(9, "10.0.0.9:7000"));
    let planned = ShardMap::plan(with_draining, 64, R, V).expect("plan");
    assert_eq!(load(&planned)[&9], 0);
}

#[test]
fn identical_target_has_no_moves() {
    let map = plan(1..=5, 64);
    let same = map.rebalance(nodes(1..=5), R, V).expect("rebalance");
    assert_eq!(same.version(), map.version() + 1);
    assert_eq!(same.groups(), map.groups());
    assert!(map.moves(&same).is_empty());
    assert!(map.moves(&map).is_empty());
}

#[test]
fn several_changes_at_once_become_single_replica_steps() {
    let map = plan(1..=3, 64);
    // Two nodes join and one leaves in one rebalance; groups may change up to all replicas.
    let target = map.rebalance(nodes([2, 3, 4, 5]), R, V).expect("rebalance");
    let moves = map.moves(&target);
    let changed_most = moves_per_group(&moves).values().copied().max().unwrap_or(0);
    assert!(changed_most >= 2, "expected a group changing two replicas");
    for g in map.groups().keys() {
        let before = replica_set(&map, *g);
        let after = replica_set(&target, *g);
        let steps: Vec<&ReplicaMove> = moves.iter().filter(|m| m.group == *g).collect();
        assert_eq!(
            steps.len(),
            before
                .difference(&after)
                .count()
                .max(after.difference(&before).count())
        );
        // Replaying the steps turns the old set into the new one, one replica at a time.
        let mut set = before.clone();
        for m in steps {
            let add = m.add.expect("same replication: every step adds");
            let remove = m.remove.expect("same replication: every step removes");
            assert!(set.insert(add));
            assert!(set.remove(&remove));
            assert_eq!(set.len(), R);
        }
        assert_eq!(set, after);
    }
}

#[test]
fn lowering_and_raising_replication_yield_one_sided_moves() {
    let map = plan(1..=5, 16);
    let lower = map.rebalance(nodes(1..=5), 2, V).expect("rebalance");
    let moves = map.moves(&lower);
    assert_eq!(moves.len(), 16);
    assert!(moves.iter().all(|m| m.add.is_none() && m.remove.is_some()));
    let back = lower.moves(&map);
    assert_eq!(back.len(), 16);
    assert!(back.iter().all(|m| m.add.is_some() && m.remove.is_none()));
}

#[test]
fn gateways_spread_evenly_over_groups() {
    let map = plan(1..=3, 64);
    let mut per_group: BTreeMap<GroupId, usize> = BTreeMap::new();
    for (account, gateway) in gateways(10_000) {
        let group = map.group_for(&account, &gateway);
        assert!((1..=64).contains(&group), "{group}");
        *per_group.entry(group).or_default() += 1;
    }
    assert_eq!(per_group.len(), 64);
    let mean = 10_000.0 / 64.0;
    let (min, max) = (
        per_group.values().min().copied().unwrap_or(0),
        per_group.values().max().copied().unwrap_or(0),
    );
    println!("10,000 gateways over 64 groups: min {min}, max {max}, mean {mean}");
    for (group, &count) in &per_group {
        let dev = (count as f64 - mean).abs() / mean;
        assert!(dev <= 0.30, "group {group} owns {count}, mean {mean}");
    }
}

#[test]
fn adding_groups_moves_only_gateways_to_new_groups() {
    let small = plan(1..=3, 64);
    let large = plan(1..=3, 80);
    let gws = gateways(10_000);
    let mut moved = 0;
    for (account, gateway) in &gws {
        let (before, after) = (
            small.group_for(account, gateway),
            large.group_for(account, gateway),
        );
        if before != after {
            moved += 1;
            assert!(
                after > 64,
                "{account}/{gateway} moved between old groups {before}→{after}"
            );
        }
    }
    let fraction = moved as f64 / gws.len() as f64;
    println!(
        "64→80 groups: {moved} of 10,000 gateways move ({:.1}%)",
        fraction * 100.0
    );
    assert!(fraction <= 0.25, "{fraction}");
    assert!(fraction >= 0.15, "{fraction}");
}

#[test]
fn group_for_ignores_nodes() {
    // Only the group count matters: membership changes never move gateways.
    let a = plan(1..=3, 64);
    let b = a.rebalance(nodes(1..=7), R, V).expect("rebalance");
    for (account, gateway) in gateways(1_000) {
        assert_eq!(
            a.group_for(&account, &gateway),
            b.group_for(&account, &gateway)
        );
    }
}

#[test]
fn one_hashed_group_takes_every_gateway_as_the_hash_would() {
    let map = ShardMap::plan(nodes([1]), 1, 1, V).expect("plan");
    for (account, gateway) in gateways(100) {
        let hashed = jump_consistent_hash(gateway_key(&account, &gateway), 1) + 1;
        assert_eq!(map.group_for(&account, &gateway), hashed);
        assert_eq!(hashed, 1);
    }
}

#[test]
fn invalid_inputs_are_rejected() {
    assert_eq!(
        ShardMap::plan(nodes(1..=2), 64, 3, V),
        Err(PlacementError::TooFewActiveNodes {
            active: 2,
            draining: 0,
            replication: 3
        })
    );
    let mut with_draining = nodes(1..=2);
    with_draining.push(NodeInfo::draining(3, "10.0.0.3:7000"));
    let err = ShardMap::plan(with_draining, 64, 3, V).expect_err("draining does not count");
    assert_eq!(
        err.to_string(),
        "2 active node(s) cannot hold 3 distinct replicas per group (1 more node(s) are draining)"
    );
    let mut dup_id = nodes(1..=3);
    dup_id.push(NodeInfo::active(2, "10.0.0.99:7000"));
    assert_eq!(
        ShardMap::plan(dup_id, 64, 3, V),
        Err(PlacementError::DuplicateNodeId { id: 2 })
    );
    let mut dup_addr = nodes(1..=3);
    dup_addr.push(NodeInfo::active(4, "10.0.0.1:7000"));
    assert_eq!(
        ShardMap::plan(dup_addr, 64, 3, V),
        Err(PlacementError::DuplicateAddress {
            addr: "10.0.0.1:7000".into(),
            first: 1,
            second: 4
        })
    );
    assert_eq!(
        ShardMap::plan(vec![NodeInfo::active(1, "")], 1, 1, V),
        Err(PlacementError::EmptyAddress { id: 1 })
    );
    assert_eq!(
        ShardMap::plan(nodes(1..=3), 64, 0, V),
        Err(PlacementError::ZeroReplication)
    );
    assert_eq!(
        ShardMap::plan(nodes(1..=3), 0, 3, V),
        Err(PlacementError::NoGroups)
    );
    assert_eq!(
        ShardMap::plan(nodes(1..=3), 64, 3, 0),
        Err(PlacementError::NoVirtualNodes)
    );
    // Rebalancing validates the new node set the same way.
    let map = plan(1..=3, 8);
    assert!(matches!(
        map.rebalance(nodes(1..=2), 3, V),
        Err(PlacementError::TooFewActiveNodes { active: 2, .. })
    ));
}

#[test]
fn serde_round_trips() {
    let mut list = nodes(1..=4);
    list.push(NodeInfo::draining(5, "10.0.0.5:7000"));
    let map = ShardMap::plan(list, 64, R, V).expect("plan");
    let json = serde_json::to_string(&map).expect("json");
    assert_eq!(
        serde_json::from_str::<ShardMap>(&json).expect("from json"),
        map
    );
    let bytes = map.to_bytes();
    assert_eq!(ShardMap::from_bytes(&bytes).expect("from bytes"), map);
    let err = ShardMap::from_bytes(&bytes[..bytes.len() / 2]).expect_err("truncated");
    assert!(matches!(err, PlacementError::Decode(_)), "{err}");
    let moves = map.moves(&plan(1..=5, 64));
    let json = serde_json::to_string(&moves).expect("json");
    assert_eq!(
        serde_json::from_str::<Vec<ReplicaMove>>(&json).expect("moves"),
        moves
    );
}

#[test]
fn decoding_checks_invariants() {
    let map = plan(1..=3, 4);
    let mut value = serde_json::to_value(&map).expect("json");

    let mut gap = value.clone();
    let groups = gap["groups"].as_object_mut().expect("groups");
    let g4 = groups.remove("4").expect("group 4");
    groups.insert("7".into(), g4);
    let err = serde_json::from_value::<ShardMap>(gap).expect_err("gap");
    assert!(err.to_string().contains("numbered 1..=4"), "{err}");

    let mut unknown = value.clone();
    unknown["groups"]["1"]["replicas"] = serde_json::json!([1, 2, 42]);
    let err = serde_json::from_value::<ShardMap>(unknown).expect_err("unknown node");
    assert!(err.to_string().contains("not in the node list"), "{err}");

    let mut twice = value.clone();
    twice["groups"]["2"]["replicas"] = serde_json::json!([1, 1, 2]);
    let err = serde_json::from_value::<ShardMap>(twice).expect_err("twice");
    assert!(err.to_string().contains("listed twice"), "{err}");

    value["nodes"]["2"]["id"] = serde_json::json!(9);
    let err = serde_json::from_value::<ShardMap>(value).expect_err("mismatch");
    assert!(
        err.to_string().contains("node 9 is filed under key 2"),
        "{err}"
    );

    // A well-formed placement that another process produced decodes as is.
    let p = GroupPlacement {
        replicas: vec![3, 1],
        founders: vec![],
    };
    let raw = serde_json::json!({
        "version": 7,
        "nodes": {"1": {"id": 1, "addr": "a:1", "state": "Active"},
                  "3": {"id": 3, "addr": "b:1", "state": "Draining"}},
        "groups": {"1": p},
    });
    let decoded: ShardMap = serde_json::from_value(raw).expect("valid");
    assert_eq!(decoded.version(), 7);
    assert_eq!(decoded.replicas(1), Some(&[3, 1][..]));
    assert_eq!(decoded.group_for("any", "thing"), 1);
    assert_eq!(decoded.replicas(2), None);
    assert_eq!(
        decoded.groups()[&1].founders,
        vec![3, 1],
        "an older map's groups were founded by their replicas"
    );
}

#[test]
fn a_split_adds_a_placed_group_that_takes_the_gateways_newer_logs() {
    let map = ShardMap::plan(nodes(1..=5), 4, 3, 64).expect("plan");
    let hashed = map.group_for("acct", "gw");
    assert_eq!(map.group_at("acct", "gw", 1_000), hashed);
    assert!(!map.is_split("acct", "gw"));

    let once = map.split("acct", "gw", 1_000, 3, 64).expect("split");
    assert_eq!(once.version(), map.version() + 1);
    assert_eq!(once.groups().len(), 5);
    let new = &once.groups()[&5];
    assert_eq!(new.replicas.len(), 3);
    assert_eq!(new.founders, new.replicas);
    assert_eq!(
        once.sub_shards("acct", "gw"),
        vec![
            SubShard {
                group: hashed,
                from_ms: i64::MIN
            },
            SubShard {
                group: 5,
                from_ms: 1_000
            }
        ]
    );
    assert_eq!(once.group_at("acct", "gw", 999), hashed);
    assert_eq!(once.group_at("acct", "gw", 1_000), 5);
    // Other gateways keep hashing over the original four groups only.
    for i in 0..200 {
        let gw = format!("g{i}");
        assert_eq!(once.group_for("acct", &gw), map.group_for("acct", &gw));
        assert!(once.group_for("acct", &gw) <= 4);
    }

    let twice = once
        .split("acct", "gw", 2_000, 3, 64)
        .expect("second split");
    assert_eq!(twice.sub_shards("acct", "gw").len(), 3);
    assert_eq!(twice.group_at("acct", "gw", 1_500), 5);
    assert_eq!(twice.group_at("acct", "gw", 2_500), 6);
    let err = twice.split("acct", "gw", 2_000, 3, 64).unwrap_err();
    assert!(err.to_string().contains("not after"), "{err}");

    // Splits survive the wire and a rebalance, founders included.
    assert_eq!(
        ShardMap::from_bytes(&twice.to_bytes()).expect("decode"),
        twice
    );
    let grown = twice.rebalance(nodes(1..=6), 3, 64).expect("rebalance");
    assert_eq!(
        grown.sub_shards("acct", "gw"),
        twice.sub_shards("acct", "gw")
    );
    assert_eq!(grown.groups()[&6].founders, twice.groups()[&6].founders);
    assert_eq!(grown.group_for("x", "y"), twice.group_for("x", "y"));

    // A map whose sub-shards point at hashed groups is refused.
    let mut value = serde_json::to_value(&twice).expect("json");
    value["sub_shards"]["acct"]["gw"][1]["group"] = serde_json::json!(2);
    let err = serde_json::from_value::<ShardMap>(value).expect_err("invalid");
    assert!(err.to_string().contains("not a split group"), "{err}");
}

#[test]
fn an_operator_moves_one_replica_and_bad_moves_are_named() {
    let mut with_draining = nodes(1..=4);
    with_draining.push(NodeInfo::draining(5, "10.0.0.5:9090"));
    let map = ShardMap::plan(with_draining, 4, 3, 64).expect("plan");
    let group = 1;
    let replicas = map.replicas(group).unwrap().to_vec();
    let from = replicas[1];
    let to = (1..=4).find(|n| !replicas.contains(n)).unwrap();

    let moved = map.move_replica(group, from, to).expect("move");
    assert_eq!(moved.version(), map.version() + 1);
    let mut expected = replicas.clone();
    expected[1] = to;
    assert_eq!(moved.replicas(group).unwrap(), expected.as_slice());
    assert_eq!(map.moves(&moved).len(), 1, "exactly one replica step");
    assert_eq!(
        ShardMap::from_bytes(&moved.to_bytes()).expect("still a valid map"),
        moved
    );

    for (group, from, to, reason) in [
        (9, from, to, "no group 9"),
        (group, to, from, &*format!("node {to} holds no replica")),
        (group, from, replicas[0], "already holds"),
        (group, from, 5, "draining"),
        (group, from, 7, "not in the map"),
    ] {
        let err = map.move_replica(group, from, to).unwrap_err().to_string();
        assert!(err.contains(reason), "{err}");
    }
}
