//! Every gateway and API-token verifier in memory, for the request path: the account
//! manager's own view on its replicas, and the copy an edge keeps current from a
//! `WatchGateways` stream.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use aigw_proto::admin::{Gateway, GatewayChanges, GatewaySettings, TokenVerifier};
use tokio::sync::broadcast;

use crate::tokens::Permission;

/// The gateway every account has without creating it.
pub const DEFAULT_GATEWAY: &str = "default";

/// Changes a watcher is sent before it must resynchronize from a fresh snapshot.
const CHANGE_BACKLOG: usize = 4096;

/// Settings of a gateway nobody configured: logging on, everything else off.
pub fn default_settings() -> GatewaySettings {
    GatewaySettings {
        collect_logs: true,
        ..GatewaySettings::default()
    }
}

type Gateways = HashMap<String, HashMap<String, Gateway>>;

fn by_account(gateways: impl IntoIterator<Item = Gateway>) -> Gateways {
    let mut out = Gateways::new();
    for g in gateways {
        out.entry(g.account_id.clone())
            .or_default()
            .insert(g.id.clone(), g);
    }
    out
}

/// One change to the mirror, as watchers receive it.
#[derive(Debug, Clone)]
pub enum GatewayChange {
    /// A gateway was created or replaced.
    Upsert(Gateway),
    /// A gateway was deleted.
    Removed {
        /// Its account.
        account_id: String,
        /// Its id.
        id: String,
    },
    /// A token verifier was stored.
    TokenUpsert(TokenVerifier),
    /// A token was revoked (its id).
    TokenRemoved(String),
    /// Everything was replaced (a snapshot was installed): watchers start over.
    Reset,
}

/// Gateways by account and id, and token verifiers by token id, shared by clones; every
/// change is published to subscribers.
#[derive(Debug, Clone)]
pub struct GatewayMirror {
    gateways: Arc<RwLock<Gateways>>,
    tokens: Arc<RwLock<HashMap<String, TokenVerifier>>>,
    changes: broadcast::Sender<GatewayChange>,
}

impl Default for GatewayMirror {
    fn default() -> Self {
        Self {
            gateways: Arc::default(),
            tokens: Arc::default(),
            changes: broadcast::channel(CHANGE_BACKLOG).0,
        }
    }
}

impl GatewayMirror {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Gateways> {
        self.gateways.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Gateways> {
        self.gateways
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Create or replace `gateway`.
    pub fn upsert(&self, gateway: Gateway) {
        self.write()
            .entry(gateway.account_id.clone())
            .or_default()
            .insert(gateway.id.clone(), gateway.clone());
        let _ = self.changes.send(GatewayChange::Upsert(gateway));
    }

    /// Remove a gateway (nothing if it is absent).
    pub fn remove(&self, account_id: &str, id: &str) {
        let mut gateways = self.write();
        if let Some(of_account) = gateways.get_mut(account_id) {
            of_account.remove(id);
            if of_account.is_empty() {
                gateways.remove(account_id);
            }
        }
        drop(gateways);
        let _ = self.changes.send(GatewayChange::Removed {
            account_id: account_id.to_owned(),
            id: id.to_owned(),
        });
    }

    fn write_tokens(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, TokenVerifier>> {
        self.tokens.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Store a token verifier.
    pub fn upsert_token(&self, verifier: TokenVerifier) {
        self.write_tokens()
            .insert(verifier.id.clone(), verifier.clone());
        let _ = self.changes.send(GatewayChange::TokenUpsert(verifier));
    }

    /// Forget a revoked token.
    pub fn remove_token(&self, id: &str) {
        self.write_tokens().remove(id);
        let _ = self
            .changes
            .send(GatewayChange::TokenRemoved(id.to_owned()));
    }

    /// Replace every gateway and every token verifier (an edge's resynchronization).
    pub fn replace(
        &self,
        gateways: impl IntoIterator<Item = Gateway>,
        tokens: impl IntoIterator<Item = TokenVerifier>,
    ) {
        *self.write() = by_account(gateways);
        *self.write_tokens() = tokens.into_iter().map(|t| (t.id.clone(), t)).collect();
        let _ = self.changes.send(GatewayChange::Reset);
    }

    /// Replace every gateway, keeping the tokens (the registry's reload).
    pub fn replace_gateways(&self, gateways: impl IntoIterator<Item = Gateway>) {
        *self.write() = by_account(gateways);
        let _ = self.changes.send(GatewayChange::Reset);
    }

    /// Replace every token verifier, keeping the gateways (the account book's reload).
    pub fn replace_tokens(&self, tokens: impl IntoIterator<Item = TokenVerifier>) {
        *self.write_tokens() = tokens.into_iter().map(|t| (t.id.clone(), t)).collect();
        let _ = self.changes.send(GatewayChange::Reset);
    }

    /// Applies the upserts and removals of one `WatchGateways` batch.
    pub fn apply_changes(&self, batch: GatewayChanges) {
        for g in batch.upserts {
            self.upsert(g);
        }
        for r in batch.removals {
            self.remove(&r.account_id, &r.id);
        }
        for t in batch.token_upserts {
            self.upsert_token(t);
        }
        for id in batch.token_removals {
            self.remove_token(&id);
        }
    }

    /// Every token verifier.
    pub fn tokens(&self) -> Vec<TokenVerifier> {
        let tokens = self.tokens.read().unwrap_or_else(PoisonError::into_inner);
        tokens.values().cloned().collect()
    }

    /// The account whose API token `token` is, if it is a live one.
    pub fn token_account(&self, token: &str, permission: Permission) -> Option<String> {
        let (id, secret) = crate::tokens::parse(token)?;
        let tokens = self.tokens.read().unwrap_or_else(PoisonError::into_inner);
        let verifier = tokens.get(id)?;
        (crate::tokens::grants(verifier, permission) && crate::tokens::verify(verifier, secret))
            .then(|| verifier.account_id.clone())
    }

    /// Receives every change from now on; a receiver that falls more than a few thousand
    /// changes behind gets `Lagged` and must start over from [`GatewayMirror::all`].
    pub fn subscribe(&self) -> broadcast::Receiver<GatewayChange> {
        self.changes.subscribe()
    }

    /// One gateway.
    pub fn get(&self, account: &str, id: &str) -> Option<Gateway> {
        self.read().get(account).and_then(|g| g.get(id)).cloned()
    }

    /// Settings the request path applies: the stored gateway's, or defaults for `default`;
    /// `None` when the gateway does not exist.
    pub fn settings(&self, account: &str, id: &str) -> Option<GatewaySettings> {
        match self.read().get(account).and_then(|g| g.get(id)) {
            Some(g) => Some(g.settings.clone().unwrap_or_else(default_settings)),
            None => (id == DEFAULT_GATEWAY).then(default_settings),
        }
    }

    /// An account's gateways whose id contains `search`, sorted by id.
    pub fn list(&self, account: &str, search: Option<&str>) -> Vec<Gateway> {
        let mut out: Vec<Gateway> = self
            .read()
            .get(account)
            .map(|g| {
                g.values()
                    .filter(|g| search.is_none_or(|s| g.id.contains(s)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Every gateway of every account.
    pub fn all(&self) -> Vec<Gateway> {
        self.read()
            .values()
            .flat_map(|g| g.values().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_proto::admin::GatewayRef;

    fn gateway(account: &str, id: &str) -> Gateway {
        Gateway {
            account_id: account.into(),
            id: id.into(),
            settings: Some(default_settings()),
            ..Gateway::default()
        }
    }

    #[test]
    fn changes_apply_and_are_published() {
        let mirror = GatewayMirror::default();
        let mut changes = mirror.subscribe();
        mirror.apply_changes(GatewayChanges {
            upserts: vec![gateway("a", "prod"), gateway("a", "dev")],
            removals: vec![GatewayRef {
                account_id: "a".into(),
                id: "dev".into(),
            }],
            ..GatewayChanges::default()
        });
        assert_eq!(mirror.list("a", None), vec![gateway("a", "prod")]);
        assert!(mirror.settings("b", "default").is_some());
        assert!(mirror.settings("b", "prod").is_none());
        assert!(matches!(changes.try_recv(), Ok(GatewayChange::Upsert(_))));
        assert!(matches!(changes.try_recv(), Ok(GatewayChange::Upsert(_))));
        assert!(matches!(
            changes.try_recv(),
            Ok(GatewayChange::Removed { .. })
        ));
        mirror.replace([gateway("c", "x")], []);
        assert_eq!(mirror.all(), vec![gateway("c", "x")]);
        assert!(matches!(changes.try_recv(), Ok(GatewayChange::Reset)));
    }
}
