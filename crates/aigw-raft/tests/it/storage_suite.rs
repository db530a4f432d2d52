//! openraft's storage conformance suite on the segment-file log store and the sled state machine.

use aigw_raft::openraft::testing::{StoreBuilder, Suite};
use aigw_raft::openraft::{AnyError, StorageError, StorageIOError};
use aigw_raft::{NodeId, SegmentLogStore, SledStateMachine, TypeConfig, open_group_storage};
use tempfile::TempDir;

use crate::common::{KvApp, init_tracing};

/// A fresh database in a temporary directory per store; the directory is the guard.
struct TempStoreBuilder;

impl StoreBuilder<TypeConfig, SegmentLogStore, SledStateMachine<KvApp>, TempDir>
    for TempStoreBuilder
{
    async fn build(
        &self,
    ) -> Result<(TempDir, SegmentLogStore, SledStateMachine<KvApp>), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("open sled");
        let group = 3;
        let (log, sm) = open_group_storage(
            &db,
            &dir.path().join("raft-log"),
            group,
            KvApp::open(&db, group),
        )
        .map_err(|e| StorageIOError::read(AnyError::new(&e)))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn raft_storage_passes_openraft_suite() {
    init_tracing();
    if let Err(e) = Suite::test_all(TempStoreBuilder) {
        panic!("storage suite failed: {e}");
    }
}
