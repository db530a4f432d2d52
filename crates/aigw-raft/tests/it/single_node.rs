//! A single-member group (all-in-one mode) on disk: writes survive a restart of everything.

use std::collections::BTreeMap;

use aigw_raft::openraft::ServerState;
use aigw_raft::{GroupHandle, NodeConfig, RaftNode};

use crate::common::{
    KvApp, TIMEOUT, init_tracing, members, must_write, open_db, set, test_raft_config,
};

const GROUP: u64 = 11;

async fn start(dir: &std::path::Path) -> (RaftNode, GroupHandle, std::sync::Arc<KvApp>) {
    let db = open_db(dir).await;
    let config = NodeConfig {
        raft: test_raft_config(),
        ..NodeConfig::new(1, "127.0.0.1:1", dir.join("raft-log"))
    };
    let node = RaftNode::new(db.clone(), config).expect("node");
    let app = KvApp::open(&db, GROUP);
    let handle = node
        .start_group(
            GROUP,
            app.clone(),
            members([1], |_| "127.0.0.1:1".to_owned()),
        )
        .await
        .expect("start group");
    handle
        .raft()
        .wait(Some(TIMEOUT))
        .state(ServerState::Leader, "single member leads")
        .await
        .expect("leader");
    (node, handle, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_member_group_survives_restart() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");

    let (node, handle, app) = start(dir.path()).await;
    assert!(handle.is_leader());
    let handles = BTreeMap::from([(1, handle.clone())]);
    for i in 0..20 {
        let (reply, _) = must_write(&handles, set(&format!("k{i}"), &format!("v{i}"))).await;
        assert!(
            reply.is_empty(),
            "first write of k{i} has no previous value"
        );
    }
    let (reply, applied_before) = must_write(&handles, set("k0", "again")).await;
    assert_eq!(reply, b"v0", "the reply is the app's");
    handle.ensure_linearizable().await.expect("leader reads");
    let state_before = app.dump();
    assert_eq!(state_before.len(), 20);

    node.shutdown().await.expect("shutdown");
    drop((node, handle, handles, app));

    // Everything reopened from the same directory.
    let (node, handle, app) = start(dir.path()).await;
    let metrics = handle
        .raft()
        .wait(Some(TIMEOUT))
        .applied_index_at_least(Some(applied_before), "applied index survives")
        .await
        .expect("applied");
    assert!(
        metrics
            .last_applied
            .is_some_and(|l| l.index >= applied_before)
    );
    assert_eq!(app.dump(), state_before, "state survives the restart");
    assert_eq!(
        app.applies.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "after a clean shutdown the recorded applied index is current: nothing is applied twice"
    );

    let handles = BTreeMap::from([(1, handle.clone())]);
    let (reply, applied_after) = must_write(&handles, set("k20", "v20")).await;
    assert!(reply.is_empty());
    assert!(applied_after > applied_before);
    assert_eq!(app.get("k20").as_deref(), Some("v20"));
    assert_eq!(app.get("k0").as_deref(), Some("again"));
    node.shutdown().await.expect("shutdown");
}
