//! Gateways in a sled tree, mirrored in memory for the request path.

use aigw_proto::admin::Gateway;
use prost::Message;
use sled::Tree;

use crate::command::{
    Applied, Command, CreateGateway, DeleteGateway, Status, UpdateGateway, kind::Kind,
};
use crate::mirror::GatewayMirror;

/// Why the registry failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// sled failed.
    #[error("gateway storage failed: {0}")]
    Storage(#[from] sled::Error),
    /// Stored or replicated bytes do not decode.
    #[error("corrupt gateway data: {0}")]
    Corrupt(String),
}

/// The gateways of every account.
#[derive(Debug, Clone)]
pub struct GatewayRegistry {
    tree: Tree,
    mirror: GatewayMirror,
}

fn key(account: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.len() + id.len() + 1);
    k.extend_from_slice(account.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Decodes stored or replicated bytes.
pub(crate) fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, RegistryError> {
    M::decode(bytes).map_err(|e| RegistryError::Corrupt(e.to_string()))
}

/// Appends `part` to a snapshot, its length first (a varint).
pub(crate) fn put_framed(out: &mut Vec<u8>, part: &[u8]) {
    prost::encoding::encode_varint(part.len() as u64, out);
    out.extend_from_slice(part);
}

/// Takes the next part [`put_framed`] wrote from the front of `buf`.
pub(crate) fn take_framed<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], RegistryError> {
    let len =
        prost::encoding::decode_varint(buf).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
    let len = usize::try_from(len)
        .ok()
        .filter(|len| *len <= buf.len())
        .ok_or_else(|| RegistryError::Corrupt("truncated snapshot".into()))?;
    let (part, rest) = buf.split_at(len);
    *buf = rest;
    Ok(part)
}

impl GatewayRegistry {
    /// Open the registry stored in `tree`, loading the in-memory mirror.
    pub fn open(tree: Tree) -> Result<Self, RegistryError> {
        let registry = Self {
            tree,
            mirror: GatewayMirror::default(),
        };
        registry.reload()?;
        Ok(registry)
    }

    fn reload(&self) -> Result<(), RegistryError> {
        let gateways = self
            .tree
            .iter()
            .map(|item| decode::<Gateway>(&item?.1))
            .collect::<Result<Vec<_>, _>>()?;
        self.mirror.replace_gateways(gateways);
        Ok(())
    }

    /// The in-memory view, which publishes every applied change to its subscribers.
    pub fn mirror(&self) -> &GatewayMirror {
        &self.mirror
    }

    /// Apply one command.
    pub fn apply(&self, command: Command) -> Result<Applied, RegistryError> {
        match command.kind {
            Some(Kind::Create(CreateGateway { gateway: Some(g) })) => {
                if let Some(existing) = self.get(&g.account_id, &g.id) {
                    return Ok(applied(Status::AlreadyExists, existing));
                }
                self.tree
                    .insert(key(&g.account_id, &g.id), g.encode_to_vec())?;
                self.mirror.upsert(g.clone());
                Ok(applied(Status::Ok, g))
            }
            Some(Kind::Update(UpdateGateway {
                gateway: Some(mut g),
            })) => {
                let Some(existing) = self.get(&g.account_id, &g.id) else {
                    return Ok(Applied {
                        status: Status::NotFound as i32,
                        ..Applied::default()
                    });
                };
                g.created_at_ms = existing.created_at_ms;
                let invalidate = g
                    .settings
                    .as_ref()
                    .is_some_and(|s| s.cache_invalidate_on_update);
                g.cache_epoch_ms = if invalidate {
                    g.modified_at_ms
                } else {
                    existing.cache_epoch_ms
                };
                self.tree
                    .insert(key(&g.account_id, &g.id), g.encode_to_vec())?;
                self.mirror.upsert(g.clone());
                Ok(applied(Status::Ok, g))
            }
            Some(Kind::Delete(DeleteGateway { account_id, id })) => {
                match self.tree.remove(key(&account_id, &id))? {
                    Some(old) => {
                        self.mirror.remove(&account_id, &id);
                        Ok(applied(Status::Ok, decode(&old)?))
                    }
                    None => Ok(Applied {
                        status: Status::NotFound as i32,
                        ..Applied::default()
                    }),
                }
            }
            _ => Err(RegistryError::Corrupt("empty command".into())),
        }
    }

    /// One stored gateway.
    pub fn get(&self, account: &str, id: &str) -> Option<Gateway> {
        self.mirror.get(account, id)
    }

    /// An account's stored gateways whose id contains `search`, sorted by id.
    pub fn list(&self, account: &str, search: Option<&str>) -> Vec<Gateway> {
        self.mirror.list(account, search)
    }

    /// Serialize every gateway for a snapshot.
    pub fn snapshot(&self) -> Result<Vec<u8>, RegistryError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            put_framed(&mut out, &item?.1);
        }
        Ok(out)
    }

    /// Replace every gateway with a snapshot's.
    pub fn restore(&self, snapshot: &[u8]) -> Result<(), RegistryError> {
        self.tree.clear()?;
        let mut buf = snapshot;
        while !buf.is_empty() {
            let value = take_framed(&mut buf)?;
            let g: Gateway = decode(value)?;
            self.tree.insert(key(&g.account_id, &g.id), value)?;
        }
        self.reload()
    }
}

fn applied(status: Status, gateway: Gateway) -> Applied {
    Applied {
        status: status as i32,
        gateway: Some(gateway),
        ..Applied::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::default_settings;
    use aigw_proto::admin::GatewaySettings;

    fn open() -> (tempfile::TempDir, GatewayRegistry) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let reg = GatewayRegistry::open(db.open_tree("accounts").unwrap()).unwrap();
        (dir, reg)
    }

    fn gateway(account: &str, id: &str, collect_logs: bool, at: i64) -> Gateway {
        Gateway {
            account_id: account.into(),
            id: id.into(),
            settings: Some(GatewaySettings {
                collect_logs,
                ..GatewaySettings::default()
            }),
            created_at_ms: at,
            modified_at_ms: at,
            cache_epoch_ms: 0,
        }
    }

    fn create(reg: &GatewayRegistry, g: Gateway) -> Status {
        let applied = reg
            .apply(Command {
                kind: Some(Kind::Create(CreateGateway { gateway: Some(g) })),
            })
            .unwrap();
        Status::try_from(applied.status).unwrap()
    }

    #[test]
    fn updates_that_invalidate_the_cache_move_its_epoch() {
        let (_dir, reg) = open();
        create(&reg, gateway("a", "prod", true, 1));
        let update = |at: i64, invalidate: bool| {
            let mut g = gateway("a", "prod", true, at);
            g.settings.as_mut().unwrap().cache_invalidate_on_update = invalidate;
            reg.apply(Command {
                kind: Some(Kind::Update(UpdateGateway { gateway: Some(g) })),
            })
            .unwrap()
            .gateway
            .unwrap()
            .cache_epoch_ms
        };
        assert_eq!(update(5, false), 0, "without the flag the epoch stays");
        assert_eq!(update(7, true), 7);
        assert_eq!(
            update(9, false),
            7,
            "kept by later updates without the flag"
        );
        assert_eq!(reg.get("a", "prod").unwrap().cache_epoch_ms, 7);
    }

    #[test]
    fn create_update_delete_and_the_implicit_default() {
        let (_dir, reg) = open();
        assert_eq!(
            reg.mirror().settings("a", "default"),
            Some(default_settings())
        );
        assert_eq!(reg.mirror().settings("a", "prod"), None);
        assert_eq!(create(&reg, gateway("a", "prod", false, 1)), Status::Ok);
        assert_eq!(
            create(&reg, gateway("a", "prod", true, 2)),
            Status::AlreadyExists,
            "replay-safe"
        );
        assert!(!reg.mirror().settings("a", "prod").unwrap().collect_logs);
        assert_eq!(reg.mirror().settings("b", "prod"), None, "per account");

        let updated = reg
            .apply(Command {
                kind: Some(Kind::Update(UpdateGateway {
                    gateway: Some(gateway("a", "prod", true, 9)),
                })),
            })
            .unwrap();
        let g = updated.gateway.unwrap();
        assert_eq!(
            (g.created_at_ms, g.modified_at_ms),
            (1, 9),
            "creation time kept"
        );
        assert!(reg.mirror().settings("a", "prod").unwrap().collect_logs);

        create(&reg, gateway("a", "staging", true, 3));
        assert_eq!(
            reg.list("a", None)
                .iter()
                .map(|g| g.id.as_str())
                .collect::<Vec<_>>(),
            ["prod", "staging"]
        );
        assert_eq!(reg.list("a", Some("stag")).len(), 1);

        let delete = Command {
            kind: Some(Kind::Delete(DeleteGateway {
                account_id: "a".into(),
                id: "prod".into(),
            })),
        };
        assert_eq!(reg.apply(delete.clone()).unwrap().status, Status::Ok as i32);
        assert_eq!(reg.apply(delete).unwrap().status, Status::NotFound as i32);
        assert_eq!(reg.mirror().settings("a", "prod"), None);
    }

    #[test]
    fn state_survives_reopen_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let reg = GatewayRegistry::open(db.open_tree("accounts").unwrap()).unwrap();
            create(&reg, gateway("a", "prod", false, 1));
            db.flush().unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let reg = GatewayRegistry::open(db.open_tree("accounts").unwrap()).unwrap();
        assert!(!reg.mirror().settings("a", "prod").unwrap().collect_logs);

        let snapshot = reg.snapshot().unwrap();
        let (_d2, other) = open();
        create(&other, gateway("x", "stale", true, 1));
        other.restore(&snapshot).unwrap();
        assert_eq!(other.list("x", None), vec![]);
        assert_eq!(other.get("a", "prod"), reg.get("a", "prod"));
    }
}
