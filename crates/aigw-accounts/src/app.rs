//! The gateway registry as a Raft state machine.

use aigw_raft::{App, AppError};

use crate::GatewayRegistry;

/// Applies account-manager commands to a [`GatewayRegistry`].
#[derive(Debug, Clone)]
pub struct AccountsApp {
    registry: GatewayRegistry,
}

impl AccountsApp {
    /// A state machine over `registry`.
    pub fn new(registry: GatewayRegistry) -> Self {
        Self { registry }
    }
}

impl App for AccountsApp {
    fn apply(&self, _index: u64, command: &[u8]) -> Result<Vec<u8>, AppError> {
        self.registry.apply_encoded(command).map_err(AppError::new)
    }

    fn snapshot(&self) -> Result<Vec<u8>, AppError> {
        self.registry.snapshot().map_err(AppError::new)
    }

    fn restore(&self, data: &[u8]) -> Result<(), AppError> {
        self.registry.restore(data).map_err(AppError::new)
    }
}
