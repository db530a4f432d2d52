//! A snapshot built while writes keep being applied ("fuzzy") restores a follower to exactly
//! the leader's state, once the entries after its captured index are re-applied.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aigw_raft::openraft::SnapshotPolicy;

use crate::common::{
    KvApp, RouterCluster, TIMEOUT, init_tracing, must_write, set, test_raft_config, wait_applied,
    wait_for_leader,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzy_snapshot_restores_an_identical_follower() {
    init_tracing();
    let config = aigw_raft::openraft::Config {
        // Only the snapshot this test triggers; purge everything it covers.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..test_raft_config()
    };
    // Slow apply (2 ms per command) and slower snapshot (3 ms per key) so they interleave.
    let make_app = |db: &sled::Db, group| {
        KvApp::open_slow(
            db,
            group,
            Duration::from_millis(2),
            Duration::from_millis(3),
        )
    };
    let cluster = RouterCluster::start([1, 2, 3], config, make_app).await;

    let leader = wait_for_leader(&cluster.handles()).await;
    let follower = *cluster
        .handles()
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    let (_, first) = must_write(&cluster.handles(), set("before", "partition")).await;
    wait_applied(&cluster.handles(), first).await;
    cluster.router.isolate(follower);
    let majority: std::collections::BTreeMap<_, _> = cluster
        .handles()
        .into_iter()
        .filter(|(id, _)| *id != follower)
        .collect();

    // Fill some keys, then keep writing while the leader builds a snapshot.
    let mut last = first;
    for i in 0..40 {
        (_, last) = must_write(&majority, set(&format!("k{i}"), "0")).await;
    }
    let writer = {
        let majority = majority.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for i in 0..150 {
                (_, last) =
                    must_write(&majority, set(&format!("k{}", i % 40), &format!("{i}"))).await;
            }
            last
        })
    };
    // Snapshot on both nodes of the majority: whichever leads when the follower returns, it
    // has purged the log behind its snapshot and must send it.
    for handle in majority.values() {
        handle
            .raft()
            .wait(Some(TIMEOUT))
            .applied_index_at_least(Some(last + 20), "writes are flowing")
            .await
            .expect("flowing");
        handle
            .raft()
            .trigger()
            .snapshot()
            .await
            .expect("trigger snapshot");
    }
    let mut snapshot_indexes = Vec::new();
    for handle in majority.values() {
        let built = handle
            .raft()
            .wait(Some(TIMEOUT))
            .metrics(|m| m.snapshot.is_some(), "snapshot built")
            .await
            .expect("snapshot");
        snapshot_indexes.push((
            handle.node_id(),
            built.snapshot.map(|s| s.index).expect("index"),
        ));
    }
    let last = writer.await.expect("writer");
    for (id, snapshot_index) in &snapshot_indexes {
        assert!(
            cluster.nodes[id]
                .app
                .applies_during_snapshot
                .load(Ordering::SeqCst)
                > 0,
            "node {id}: commands were applied while its snapshot was being built (it is fuzzy)"
        );
        assert!(
            *snapshot_index < last,
            "node {id}: entries after the snapshot's index exist to re-apply"
        );
        cluster.nodes[id]
            .handle
            .raft()
            .wait(Some(TIMEOUT))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= *snapshot_index),
                "purged up to the snapshot",
            )
            .await
            .expect("purged");
    }

    cluster.router.heal(follower);
    wait_applied(&cluster.handles(), last).await;
    assert!(
        cluster.nodes[&follower].app.restores.load(Ordering::SeqCst) >= 1,
        "follower {follower} installed a snapshot"
    );
    let state = cluster.assert_converged();
    assert_eq!(state.len(), 41);
    assert_eq!(state.get("k29").map(String::as_str), Some("149"));

    cluster.shutdown().await;
}
