//! The log index as a Raft state machine.

use aigw_logindex::LogIndex;
use aigw_raft::{App, AppError};

/// Applies shard commands to a [`LogIndex`].
#[derive(Debug, Clone)]
pub struct ShardApp {
    index: LogIndex,
}

impl ShardApp {
    /// A state machine over `index`.
    pub fn new(index: LogIndex) -> Self {
        Self { index }
    }

    /// The index, for reads.
    pub fn index(&self) -> &LogIndex {
        &self.index
    }
}

impl App for ShardApp {
    fn apply(&self, _index: u64, command: &[u8]) -> Result<Vec<u8>, AppError> {
        self.index.apply_encoded(command).map_err(AppError::new)
    }

    fn snapshot(&self) -> Result<Vec<u8>, AppError> {
        self.index.snapshot().map_err(AppError::new)
    }

    fn restore(&self, data: &[u8]) -> Result<(), AppError> {
        self.index.restore(data).map_err(AppError::new)
    }
}
