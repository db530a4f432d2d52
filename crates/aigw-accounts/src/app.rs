//! The account manager's state as a Raft state machine: the gateway registry and the shard map.

use aigw_raft::{App, AppError};
use prost::Message;

use crate::command::{Command, kind::Kind};
use crate::{GatewayRegistry, ShardMapStore};

/// A snapshot: both parts of the state, each in its own format.
#[derive(Clone, PartialEq, prost::Message)]
struct Snapshot {
    /// [`GatewayRegistry::snapshot`].
    #[prost(bytes = "vec", tag = "1")]
    gateways: Vec<u8>,
    /// [`ShardMapStore::snapshot`].
    #[prost(bytes = "vec", tag = "2")]
    shard_map: Vec<u8>,
}

/// Applies account-manager commands to a [`GatewayRegistry`] and a [`ShardMapStore`].
#[derive(Debug, Clone)]
pub struct AccountsApp {
    registry: GatewayRegistry,
    shard_map: ShardMapStore,
}

impl AccountsApp {
    /// A state machine over `registry` and `shard_map`.
    pub fn new(registry: GatewayRegistry, shard_map: ShardMapStore) -> Self {
        Self {
            registry,
            shard_map,
        }
    }
}

impl App for AccountsApp {
    fn apply(&self, _index: u64, command: &[u8]) -> Result<Vec<u8>, AppError> {
        let command = Command::decode(command).map_err(AppError::new)?;
        let applied = match command.kind {
            Some(Kind::PutShardMap(put)) => self.shard_map.apply(put).map_err(AppError::new)?,
            _ => self.registry.apply(command).map_err(AppError::new)?,
        };
        Ok(applied.encode_to_vec())
    }

    fn snapshot(&self) -> Result<Vec<u8>, AppError> {
        Ok(Snapshot {
            gateways: self.registry.snapshot().map_err(AppError::new)?,
            shard_map: self.shard_map.snapshot().map_err(AppError::new)?,
        }
        .encode_to_vec())
    }

    fn restore(&self, data: &[u8]) -> Result<(), AppError> {
        let snapshot = Snapshot::decode(data).map_err(AppError::new)?;
        self.registry
            .restore(&snapshot.gateways)
            .map_err(AppError::new)?;
        self.shard_map
            .restore(&snapshot.shard_map)
            .map_err(AppError::new)
    }
}
