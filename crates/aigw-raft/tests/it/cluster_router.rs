//! Three in-process nodes on the fault-injecting router: election, replication, leader crash
//! and restart, a partitioned follower catching up through a snapshot, and a new group whose
//! first member is down forming without it.

use std::sync::atomic::Ordering;

use aigw_raft::openraft::SnapshotPolicy;

use crate::common::{
    KvApp, RouterCluster, TIMEOUT, init_tracing, must_write, set, test_raft_config, wait_applied,
    wait_for_leader,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_fail_over_and_catch_up() {
    init_tracing();
    let config = aigw_raft::openraft::Config {
        // Snapshot often and keep no log behind it, so a lagging follower needs the snapshot.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(20),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..test_raft_config()
    };
    let mut cluster = RouterCluster::start([1, 2, 3], config, KvApp::open).await;

    // Elect and replicate.
    let mut last = 0;
    for i in 0..10 {
        (_, last) = must_write(&cluster.handles(), set(&format!("a{i}"), "1")).await;
    }
    wait_applied(&cluster.handles(), last).await;
    assert_eq!(cluster.assert_converged().len(), 10);

    // Kill the leader: the others elect a new one and keep accepting writes.
    let old_leader = wait_for_leader(&cluster.handles()).await;
    cluster.kill(old_leader).await;
    let new_leader = wait_for_leader(&cluster.handles()).await;
    assert_ne!(new_leader, old_leader);
    for i in 0..10 {
        (_, last) = must_write(&cluster.handles(), set(&format!("b{i}"), "2")).await;
    }
    wait_applied(&cluster.handles(), last).await;

    // The old leader restarts from its disk and catches up.
    cluster.start_node(old_leader).await;
    wait_applied(&cluster.handles(), last).await;
    assert_eq!(cluster.assert_converged().len(), 20);

    // Partition a follower; the others commit, snapshot and purge past it.
    let leader = wait_for_leader(&cluster.handles()).await;
    let follower = *cluster
        .handles()
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    cluster.router.isolate(follower);
    let majority = cluster
        .handles()
        .into_iter()
        .filter(|(id, _)| *id != follower)
        .collect();
    for i in 0..60 {
        (_, last) = must_write(&majority, set(&format!("c{}", i % 25), &i.to_string())).await;
    }
    let follower_handle = cluster.nodes[&follower].handle.clone();
    let follower_last_log = follower_handle
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    // Whichever of them leads after the heal must have purged past the follower.
    for handle in majority.values() {
        handle
            .raft()
            .wait(Some(TIMEOUT))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index > follower_last_log),
                "purged past the follower",
            )
            .await
            .expect("purged");
    }

    // Heal: the follower can only catch up by installing the leader's snapshot.
    let restores_before = cluster.nodes[&follower].app.restores.load(Ordering::SeqCst);
    cluster.router.heal(follower);
    wait_applied(&cluster.handles(), last).await;
    assert!(
        cluster.nodes[&follower].app.restores.load(Ordering::SeqCst) > restores_before,
        "follower {follower} caught up through install_snapshot"
    );
    let state = cluster.assert_converged();
    assert_eq!(state.len(), 20 + 25);
    assert_eq!(state.get("c9").map(String::as_str), Some("59"));

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_through_dropped_and_delayed_messages() {
    init_tracing();
    let cluster = RouterCluster::start([1, 2, 3], test_raft_config(), KvApp::open).await;
    let leader = wait_for_leader(&cluster.handles()).await;
    let slow = *cluster
        .handles()
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");

    // Lose one message in ten everywhere, and make one follower 30 ms away.
    cluster.router.set_drop_rate(0.1, 7);
    cluster
        .router
        .set_delay(slow, Some(std::time::Duration::from_millis(30)));
    let mut last = 0;
    for i in 0..30 {
        (_, last) = must_write(&cluster.handles(), set(&format!("d{i}"), &i.to_string())).await;
    }
    cluster.router.heal_all();
    wait_applied(&cluster.handles(), last).await;
    assert_eq!(cluster.assert_converged().len(), 30);

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_forms_without_the_member_that_campaigns_first() {
    init_tracing();
    // Node 1, the lowest member, is the one that campaigns first in a new group; it is down.
    let mut cluster =
        RouterCluster::start_without([1, 2, 3], Some(1), test_raft_config(), KvApp::open).await;
    let leader = wait_for_leader(&cluster.handles()).await;
    assert_ne!(leader, 1);
    let (_, last) = must_write(&cluster.handles(), set("formed", "without node 1")).await;
    wait_applied(&cluster.handles(), last).await;

    // Node 1 comes up later, as a member of the formed group, and catches up.
    cluster.start_node(1).await;
    wait_applied(&cluster.handles(), last).await;
    assert_eq!(
        cluster.assert_converged().get("formed").map(String::as_str),
        Some("without node 1")
    );
    cluster.shutdown().await;
}
