//! The edge's view of gateways: an in-memory mirror of the account manager's registry (its own
//! on an account-manager replica, a watched copy on an edge).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use aigw_accounts::{DEFAULT_GATEWAY, GatewayMirror, default_settings};
use aigw_gateway_state::{RatePolicy, Technique};
use std::time::Duration;

use aigw_api::{Authenticator, Principal};
use aigw_edge::{Backoff, GatewayDirectory, GatewaySettings, Retry};
use aigw_proto::DynGateways;
use aigw_proto::admin::GatewayRef;
use aigw_proto::admin::{RateLimitingTechnique, RetryBackoff};

/// Resolves gateways from a mirror; persists an account's implicit `default` gateway in the
/// background the first time it is used, so it appears in listings.
pub struct MirrorDirectory {
    mirror: GatewayMirror,
    gateways: Arc<DynGateways>,
    /// Who may run requests through authenticated gateways (the admin token and account
    /// tokens, checked against their hashes).
    runners: Arc<dyn Authenticator>,
    materializing: Arc<Mutex<HashSet<String>>>,
}

impl MirrorDirectory {
    /// A directory over `mirror`, creating `default` gateways through `gateways`, letting
    /// the tokens `runners` authenticates through authenticated gateways.
    pub fn new(
        mirror: GatewayMirror,
        gateways: Arc<DynGateways>,
        runners: Arc<dyn Authenticator>,
    ) -> Self {
        Self {
            mirror,
            gateways,
            runners,
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
            .unwrap_or_else(PoisonError::into_inner)
            .insert(account.to_owned());
        if !first {
            return;
        }
        let (gateways, account, pending) = (
            self.gateways.clone(),
            account.to_owned(),
            self.materializing.clone(),
        );
        runtime.spawn(async move {
            // `GetGateway` on `default` persists it (the management API's own rule).
            let request = tonic::Request::new(GatewayRef {
                account_id: account.clone(),
                id: DEFAULT_GATEWAY.to_owned(),
            });
            if let Err(e) = gateways.get_gateway(request).await {
                tracing::warn!(account, error = %e.message(), "could not persist the default gateway; will retry on next use");
            }
            pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&account);
        });
    }
}

impl GatewayDirectory for MirrorDirectory {
    fn allows(&self, account: &str, token: &str) -> bool {
        match self.runners.authenticate(token) {
            Some(Principal::Admin) => true,
            Some(Principal::Account(owner)) => owner == account,
            None => false,
        }
    }

    fn resolve(&self, account: &str, gateway: &str) -> Option<GatewaySettings> {
        let stored = self.mirror.get(account, gateway);
        let (settings, cache_epoch) = match stored {
            Some(g) => (
                g.settings.unwrap_or_else(default_settings),
                g.cache_epoch_ms,
            ),
            None if gateway == DEFAULT_GATEWAY => {
                self.materialize_default(account);
                (default_settings(), 0)
            }
            None => return None,
        };
        let backoff = match settings.retry_backoff() {
            RetryBackoff::Linear => Backoff::Linear,
            RetryBackoff::Exponential => Backoff::Exponential,
            RetryBackoff::Constant | RetryBackoff::Unspecified => Backoff::Constant,
        };
        let rate_limit = (settings.rate_limiting_limit > 0 && settings.rate_limiting_interval > 0)
            .then(|| RatePolicy {
                limit: settings.rate_limiting_limit,
                interval_ms: settings.rate_limiting_interval.saturating_mul(1_000),
                technique: match settings.rate_limiting_technique() {
                    RateLimitingTechnique::Sliding => Technique::Sliding,
                    RateLimitingTechnique::Fixed => Technique::Fixed,
                },
            });
        Some(GatewaySettings {
            collect_logs: settings.collect_logs,
            authentication: settings.authentication,
            cache_ttl: (settings.cache_ttl > 0).then(|| Duration::from_secs(settings.cache_ttl)),
            cache_epoch,
            rate_limit,
            retry: Retry {
                max_attempts: settings
                    .retry_max_attempts
                    .unwrap_or(1)
                    .clamp(1, aigw_edge::universal::MAX_ATTEMPTS),
                delay: Duration::from_millis(settings.retry_delay.map_or(0, u64::from)),
                backoff,
            },
        })
    }
}
