//! The edge's view of gateways, answered from the account manager's in-memory registry.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use aigw_accounts::{DEFAULT_GATEWAY, GatewayRegistry, GatewaysService};
use aigw_edge::{GatewayDirectory, GatewaySettings};

/// Resolves gateways from the local registry replica; persists an account's implicit `default`
/// gateway in the background the first time it is used, so it appears in listings.
pub struct RegistryDirectory {
    registry: GatewayRegistry,
    service: GatewaysService,
    materializing: Arc<Mutex<HashSet<String>>>,
}

impl RegistryDirectory {
    /// A directory over `registry`, writing through `service`.
    pub fn new(registry: GatewayRegistry, service: GatewaysService) -> Self {
        Self {
            registry,
            service,
            materializing: Arc::default(),
        }
    }

    fn materialize_default(&self, account: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let first = self
            .materializing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.to_owned());
        if !first {
            return;
        }
        let (service, account, pending) = (
            self.service.clone(),
            account.to_owned(),
            self.materializing.clone(),
        );
        runtime.spawn(async move {
            if let Err(e) = service.materialize_default(&account).await {
                tracing::warn!(account, error = %e, "could not persist the default gateway; will retry on next use");
            }
            pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&account);
        });
    }
}

impl GatewayDirectory for RegistryDirectory {
    fn resolve(&self, account: &str, gateway: &str) -> Option<GatewaySettings> {
        let settings = self.registry.settings(account, gateway)?;
        if gateway == DEFAULT_GATEWAY && self.registry.get(account, gateway).is_none() {
            self.materialize_default(account);
        }
        Some(GatewaySettings {
            collect_logs: settings.collect_logs,
        })
    }
}
