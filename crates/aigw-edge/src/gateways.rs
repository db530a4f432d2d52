//! Which gateways exist, and their settings as the edge needs them on the hot path.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use aigw_gateway_state::RatePolicy;

use crate::universal::Retry;

/// The id of the gateway every account has; it is created on first use.
pub const DEFAULT_GATEWAY: &str = "default";

/// Gateway settings the edge applies to each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Whether requests are logged unless `cf-aig-collect-log` says otherwise.
    pub collect_logs: bool,
    /// How Universal Endpoint steps are retried unless the request says otherwise.
    pub retry: Retry,
    /// Whether requests must carry `cf-aig-authorization: Bearer <token>` with a token
    /// [`GatewayDirectory::allows`].
    pub authentication: bool,
    /// How long responses are cached (`cache_ttl`); `None`: only requests that ask for it
    /// (`cf-aig-cache-ttl`, `cf-aig-cache-key`) are cached.
    pub cache_ttl: Option<Duration>,
    /// Part of every cache key: it changes when an update must invalidate the gateway's
    /// cached responses (`cache_invalidate_on_update`), so they are never served again.
    pub cache_epoch: i64,
    /// The gateway's rate limit, if it has one.
    pub rate_limit: Option<RatePolicy>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            collect_logs: true,
            retry: Retry::default(),
            authentication: false,
            cache_ttl: None,
            cache_epoch: 0,
            rate_limit: None,
        }
    }
}

/// Looks gateways up on the request path.
///
/// Implementations must answer from memory (a cache kept fresh in the background), never by a
/// remote call per request. The management API (and later the account manager) owns the truth.
pub trait GatewayDirectory: Send + Sync + 'static {
    /// Settings of `gateway` in `account`, creating `default` on first use; `None` if the gateway
    /// does not exist.
    fn resolve(&self, account: &str, gateway: &str) -> Option<GatewaySettings>;

    /// Whether `token` (from `cf-aig-authorization`) may run requests through `account`'s
    /// authenticated gateways. Checked in memory, like [`GatewayDirectory::resolve`].
    fn allows(&self, account: &str, token: &str) -> bool;
}

/// A process-local directory: gateways created through [`InMemoryGateways::upsert`] plus
/// `default` for every account.
#[derive(Debug, Default)]
pub struct InMemoryGateways {
    /// account → gateway → settings; nested so lookups need no allocation.
    gateways: RwLock<HashMap<String, HashMap<String, GatewaySettings>>>,
    /// (account, token) pairs allowed through authenticated gateways.
    tokens: RwLock<Vec<(String, String)>>,
}

impl InMemoryGateways {
    /// Create or replace a gateway.
    pub fn upsert(&self, account: &str, gateway: &str, settings: GatewaySettings) {
        let mut map = self
            .gateways
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(account.to_owned())
            .or_default()
            .insert(gateway.to_owned(), settings);
    }
}

impl InMemoryGateways {
    /// Let `token` run requests through `account`'s authenticated gateways.
    pub fn allow_token(&self, account: &str, token: &str) {
        self.tokens
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((account.to_owned(), token.to_owned()));
    }
}

impl GatewayDirectory for InMemoryGateways {
    fn allows(&self, account: &str, token: &str) -> bool {
        self.tokens
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .any(|(a, t)| a == account && t == token)
    }

    fn resolve(&self, account: &str, gateway: &str) -> Option<GatewaySettings> {
        {
            let map = self
                .gateways
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(found) = map.get(account).and_then(|gateways| gateways.get(gateway)) {
                return Some(found.clone());
            }
        }
        if gateway != DEFAULT_GATEWAY {
            return None;
        }
        let mut map = self
            .gateways
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let settings = map
            .entry(account.to_owned())
            .or_default()
            .entry(gateway.to_owned())
            .or_default();
        Some(settings.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_exists_on_first_use_and_others_must_be_created() {
        let dir = InMemoryGateways::default();
        assert_eq!(
            dir.resolve("a", "default"),
            Some(GatewaySettings::default())
        );
        assert_eq!(dir.resolve("a", "prod"), None);
        dir.upsert(
            "a",
            "prod",
            GatewaySettings {
                collect_logs: false,
                ..GatewaySettings::default()
            },
        );
        assert_eq!(
            dir.resolve("a", "prod"),
            Some(GatewaySettings {
                collect_logs: false,
                ..GatewaySettings::default()
            })
        );
        assert_eq!(dir.resolve("b", "prod"), None, "gateways are per account");
    }
}
