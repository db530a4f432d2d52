//! A nemesis: random faults on the fault-injecting router (partitions, one-way blocks, message
//! loss, delay, leader crashes and restarts) while a client keeps writing. Afterwards every
//! write that was acknowledged is on every node, and no term ever had two leaders.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aigw_raft::openraft::{BasicNode, RaftMetrics, ServerState, SnapshotPolicy};
use aigw_raft::{GroupHandle, NodeId};
use tokio::sync::watch;

use crate::common::{
    KvApp, RouterCluster, init_tracing, must_write, set, test_raft_config, wait_applied,
    wait_for_leader,
};

/// Faults injected (each of the six kinds four times), one every [`FAULT_EVERY`].
const FAULTS: usize = 24;
const FAULT_EVERY: Duration = Duration::from_millis(400);
/// A write attempt that takes longer is abandoned (its outcome unknown, so never checked).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// A small deterministic generator: the same seed replays the same fault schedule.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

type Handles = Arc<Mutex<BTreeMap<NodeId, GroupHandle>>>;
/// Term → the nodes seen leading in it.
type Leaders = Arc<Mutex<BTreeMap<u64, BTreeSet<NodeId>>>>;

/// Record every (term, leader) a node's metrics show, until the node stops.
fn watch_leadership(
    mut metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    leaders: Leaders,
) {
    tokio::spawn(async move {
        loop {
            {
                let m = metrics.borrow_and_update();
                if m.state == ServerState::Leader {
                    let mut seen = leaders.lock().expect("leaders lock");
                    seen.entry(m.current_term).or_default().insert(m.id);
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Writes `k{n}=n` for n = 0, 1, … through whichever node leads; returns what was acknowledged.
async fn client(handles: Handles, stop: watch::Receiver<bool>) -> BTreeMap<String, String> {
    let mut acknowledged = BTreeMap::new();
    let mut n = 0u64;
    while !*stop.borrow() {
        let leader = {
            let handles = handles.lock().expect("handles lock");
            handles.values().find(|h| h.is_leader()).cloned()
        };
        let Some(leader) = leader else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (key, value) = (format!("k{n}"), n.to_string());
        n += 1;
        if let Ok(Ok(_)) =
            tokio::time::timeout(ATTEMPT_TIMEOUT, leader.write(set(&key, &value))).await
        {
            acknowledged.insert(key, value);
        }
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_random_faults_and_no_term_has_two_leaders() {
    init_tracing();
    let config = aigw_raft::openraft::Config {
        // Snapshot and purge often, so nodes that were cut off catch up through snapshots too.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(40),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..test_raft_config()
    };
    let mut cluster = RouterCluster::start([1, 2, 3], config, KvApp::open).await;
    wait_for_leader(&cluster.handles()).await;
    let leaders: Leaders = Arc::default();
    for handle in cluster.handles().values() {
        watch_leadership(handle.metrics(), leaders.clone());
    }
    let handles: Handles = Arc::new(Mutex::new(cluster.handles()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = tokio::spawn(client(handles.clone(), stop_rx));

    let mut rng = Lcg(0x5eed);
    let mut down: Option<NodeId> = None;
    let mut faults = BTreeMap::<&str, usize>::new();
    for step in 0..FAULTS {
        tokio::time::sleep(FAULT_EVERY).await;
        let ids: Vec<NodeId> = cluster.nodes.keys().copied().collect();
        let some_node = ids[rng.below(ids.len() as u64) as usize];
        // Every kind of fault in turn; which node it hits is random.
        let fault = match step % 6 {
            0 => {
                cluster.router.isolate(some_node);
                "isolate a node"
            }
            1 => {
                let other = ids[rng.below(ids.len() as u64) as usize];
                if other != some_node {
                    cluster.router.block(some_node, other);
                }
                "block one direction"
            }
            2 => {
                cluster.router.set_drop_rate(0.2, rng.below(1000));
                cluster
                    .router
                    .set_delay(some_node, Some(Duration::from_millis(40)));
                "drop 20% and delay a node"
            }
            3 => match down.take() {
                // Crash whoever leads (at most one node down at a time, so a majority remains).
                None => {
                    let leader = ids
                        .iter()
                        .copied()
                        .find(|id| cluster.nodes[id].handle.is_leader())
                        .unwrap_or(some_node);
                    cluster.kill(leader).await;
                    down = Some(leader);
                    "kill the leader"
                }
                Some(id) => {
                    cluster.start_node(id).await;
                    watch_leadership(cluster.nodes[&id].handle.metrics(), leaders.clone());
                    "restart the dead node"
                }
            },
            _ => {
                cluster.router.heal_all();
                "heal everything"
            }
        };
        *faults.entry(fault).or_default() += 1;
        *handles.lock().expect("handles lock") = cluster.handles();
    }

    // Heal, bring every node back, and let the writer see a working cluster once more.
    cluster.router.heal_all();
    if let Some(id) = down {
        cluster.start_node(id).await;
        watch_leadership(cluster.nodes[&id].handle.metrics(), leaders.clone());
    }
    *handles.lock().expect("handles lock") = cluster.handles();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_tx.send(true).expect("writer listens");
    let acknowledged = writer.await.expect("writer task");

    // One write in the final term commits everything before it; then all nodes apply it.
    let (_, last) = must_write(&cluster.handles(), set("final", "1")).await;
    wait_applied(&cluster.handles(), last).await;
    let state = cluster.assert_converged();
    tracing::info!(?faults, acknowledged = acknowledged.len(), "nemesis done");
    assert!(
        acknowledged.len() > 20,
        "the cluster kept accepting writes between faults: {} acknowledged, faults {faults:?}",
        acknowledged.len()
    );
    for (key, value) in &acknowledged {
        assert_eq!(
            state.get(key),
            Some(value),
            "acknowledged write {key}={value} was lost"
        );
    }
    let leaders = leaders.lock().expect("leaders lock").clone();
    assert!(leaders.len() > 1, "faults forced elections: {leaders:?}");
    for (term, nodes) in &leaders {
        assert_eq!(nodes.len(), 1, "term {term} had leaders {nodes:?}");
    }
    cluster.shutdown().await;
}
