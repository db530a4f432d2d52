//! openraft's storage conformance suite on the sled log store and state machine.

use aigw_raft::openraft::testing::{StoreBuilder, Suite};
use aigw_raft::openraft::{AnyError, StorageError, StorageIOError};
use aigw_raft::{NodeId, SledLogStore, SledStateMachine, TypeConfig, open_group_storage};
use tempfile::TempDir;

use crate::common::{KvApp, init_tracing};

/// A fresh database in a temporary directory per store; the directory is the guard.
struct SledBuilder;

impl StoreBuilder<TypeConfig, SledLogStore, SledStateMachine<KvApp>, TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, SledLogStore, SledStateMachine<KvApp>), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("open sled");
        let group = 3;
        let (log, sm) = open_group_storage(&db, group, KvApp::open(&db, group))
            .map_err(|e| StorageIOError::read(AnyError::new(&e)))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_storage_passes_openraft_suite() {
    init_tracing();
    if let Err(e) = Suite::test_all(SledBuilder) {
        panic!("storage suite failed: {e}");
    }
}
