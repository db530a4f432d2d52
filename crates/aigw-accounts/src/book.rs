//! Accounts, plans, API-token verifiers and per-gateway log usage, in one sled tree.
//!
//! ```text
//! a \0 account                          → Account
//! p \0 plan                             → Plan           (built-in plans until replaced)
//! t \0 token id                         → TokenVerifier  (salted hash, never the token)
//! u \0 account \0 gateway \0 group(8)   → GroupUsage     (absolute counts, last report)
//! ```
//!
//! Usage reports carry absolute counts, so a report replayed after a failover changes nothing;
//! the quota a report is answered with is computed while applying it, from replicated state
//! only, so every replica grants the same.

use aigw_proto::admin::{
    Account, GatewaySettings, GroupUsage, LogManagementStrategy, Plan, Quota, TokenVerifier,
    UsageReport,
};
use prost::Message;
use sled::Tree;

use crate::GatewayMirror;
use crate::registry::{RegistryError, decode, put_framed, take_framed};

/// The plan of accounts nobody created: no limits, as a self-hosted gateway should start.
/// Operators redefine it with `aigw admin plan set default …`.
pub const DEFAULT_PLAN: &str = "default";

/// The plans every cluster starts with; stored plans of the same name replace them.
pub fn builtin_plans() -> Vec<Plan> {
    vec![
        Plan {
            name: DEFAULT_PLAN.into(),
            max_gateways: 0,
            max_logs_per_gateway: 0,
            max_logs_per_account: 0,
            delete_oldest_allowed: true,
        },
        // Cloudflare's free plan: 10 gateways, 100,000 logs across them.
        Plan {
            name: "free".into(),
            max_gateways: 10,
            max_logs_per_gateway: 0,
            max_logs_per_account: 100_000,
            delete_oldest_allowed: false,
        },
        // Cloudflare's paid plan: 20 gateways, 10,000,000 logs each.
        Plan {
            name: "paid".into(),
            max_gateways: 20,
            max_logs_per_gateway: 10_000_000,
            max_logs_per_account: 0,
            delete_oldest_allowed: true,
        },
    ]
}

const ACCOUNT: u8 = b'a';
const PLAN: u8 = b'p';
const TOKEN: u8 = b't';
const USAGE: u8 = b'u';

fn key(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![tag];
    for part in parts {
        k.push(0);
        k.extend_from_slice(part);
    }
    k
}

fn usage_prefix(account: &str, gateway: Option<&str>) -> Vec<u8> {
    let mut k = key(USAGE, &[account.as_bytes()]);
    k.push(0);
    if let Some(gateway) = gateway {
        k.extend_from_slice(gateway.as_bytes());
        k.push(0);
    }
    k
}

/// `a - b` floored at 0, where `a == 0` means unlimited (`None`).
fn remaining(limit: u64, used: u64) -> Option<u64> {
    (limit > 0).then(|| limit.saturating_sub(used))
}

/// The limit on one gateway's rows: the plan's, lowered by the gateway's own
/// `log_management` setting. 0: unlimited.
pub fn gateway_limit(plan: &Plan, settings: &GatewaySettings) -> u64 {
    match (plan.max_logs_per_gateway, settings.log_management) {
        (0, Some(own)) => own,
        (plan_limit, Some(own)) if own > 0 => plan_limit.min(own),
        (plan_limit, _) => plan_limit,
    }
}

/// Accounts, plans, tokens and usage, shared by clones.
#[derive(Debug, Clone)]
pub struct AccountBook {
    tree: Tree,
    mirror: GatewayMirror,
}

impl AccountBook {
    /// The book stored in `tree`; token verifiers are published through `mirror`.
    pub fn open(tree: Tree, mirror: GatewayMirror) -> Result<Self, RegistryError> {
        let book = Self { tree, mirror };
        book.reload()?;
        Ok(book)
    }

    fn reload(&self) -> Result<(), RegistryError> {
        self.mirror.replace_tokens(self.verifiers()?);
        Ok(())
    }

    fn get<M: Message + Default>(&self, key: &[u8]) -> Result<Option<M>, RegistryError> {
        self.tree.get(key)?.map(|v| decode(&v)).transpose()
    }

    fn scan<M: Message + Default>(&self, prefix: &[u8]) -> Result<Vec<M>, RegistryError> {
        self.tree
            .scan_prefix(prefix)
            .map(|item| decode(&item?.1))
            .collect()
    }

    /// A plan by name: the stored one, else the built-in one.
    pub fn plan(&self, name: &str) -> Result<Option<Plan>, RegistryError> {
        match self.get(&key(PLAN, &[name.as_bytes()]))? {
            Some(plan) => Ok(Some(plan)),
            None => Ok(builtin_plans().into_iter().find(|p| p.name == name)),
        }
    }

    /// Every plan, sorted by name.
    pub fn plans(&self) -> Result<Vec<Plan>, RegistryError> {
        let stored: Vec<Plan> = self.scan(&[PLAN])?;
        let mut plans = builtin_plans();
        plans.retain(|b| stored.iter().all(|s| s.name != b.name));
        plans.extend(stored);
        plans.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(plans)
    }

    /// A created account.
    pub fn account(&self, id: &str) -> Result<Option<Account>, RegistryError> {
        self.get(&key(ACCOUNT, &[id.as_bytes()]))
    }

    /// The plan `account` is on (the default plan for accounts never created; a plan that
    /// vanished is refused, rather than lifting every limit).
    pub fn plan_of(&self, account: &str) -> Result<Result<Plan, String>, RegistryError> {
        let name = self
            .account(account)?
            .map_or_else(|| DEFAULT_PLAN.to_owned(), |a| a.plan);
        Ok(self.plan(&name)?.ok_or(name))
    }

    /// Every live token verifier.
    pub fn verifiers(&self) -> Result<Vec<TokenVerifier>, RegistryError> {
        self.scan(&[TOKEN])
    }

    /// One token's verifier.
    pub fn token(&self, id: &str) -> Result<Option<TokenVerifier>, RegistryError> {
        self.get(&key(TOKEN, &[id.as_bytes()]))
    }

    /// The usage of one gateway, per group, or of every gateway of the account.
    pub fn usage(
        &self,
        account: &str,
        gateway: Option<&str>,
    ) -> Result<Vec<GroupUsage>, RegistryError> {
        self.scan(&usage_prefix(account, gateway))
    }

    /// Rows of `account` as last reported, summed over its gateways and groups.
    pub fn account_logs(&self, account: &str) -> Result<u64, RegistryError> {
        Ok(self.usage(account, None)?.iter().map(|u| u.rows).sum())
    }

    /// Create or replace a plan.
    pub fn put_plan(&self, plan: &Plan) -> Result<(), RegistryError> {
        self.tree
            .insert(key(PLAN, &[plan.name.as_bytes()]), plan.encode_to_vec())?;
        Ok(())
    }

    /// Store an account as given.
    pub fn put_account(&self, account: &Account) -> Result<(), RegistryError> {
        self.tree.insert(
            key(ACCOUNT, &[account.id.as_bytes()]),
            account.encode_to_vec(),
        )?;
        Ok(())
    }

    /// Store a token verifier and publish it.
    pub fn put_token(&self, verifier: TokenVerifier) -> Result<(), RegistryError> {
        self.tree.insert(
            key(TOKEN, &[verifier.id.as_bytes()]),
            verifier.encode_to_vec(),
        )?;
        self.mirror.upsert_token(verifier);
        Ok(())
    }

    /// Remove a token; returns its verifier if it existed.
    pub fn revoke_token(&self, id: &str) -> Result<Option<TokenVerifier>, RegistryError> {
        let old = self.tree.remove(key(TOKEN, &[id.as_bytes()]))?;
        if old.is_some() {
            self.mirror.remove_token(id);
        }
        old.map(|v| decode(&v)).transpose()
    }

    /// Forget a deleted gateway's usage.
    pub fn drop_usage(&self, account: &str, gateway: &str) -> Result<(), RegistryError> {
        for item in self.tree.scan_prefix(usage_prefix(account, Some(gateway))) {
            self.tree.remove(item?.0)?;
        }
        Ok(())
    }

    /// Records `report` and grants its group a quota, from `plan` and the gateway's
    /// `settings`. What is left under the gateway's limit is granted whole: only the
    /// gateway's active group takes its rows, so it cannot be overshot, and the group keeps
    /// admitting exactly up to it while the account manager is unreachable. What is left under
    /// the account's limit is shared by the account's reporting groups — an equal part each,
    /// at least `report_every` rows — so that groups overshoot it by at most one report each
    /// (every group reports after `report_every` rows and is answered from the latest counts).
    pub fn report(
        &self,
        report: &UsageReport,
        reported_at_ms: i64,
        plan: &Plan,
        settings: &GatewaySettings,
    ) -> Result<Quota, RegistryError> {
        let (account, gateway) = (report.account_id.as_str(), report.gateway_id.as_str());
        let mut k = usage_prefix(account, Some(gateway));
        k.extend_from_slice(&report.group.to_be_bytes());
        let usage = GroupUsage {
            group: report.group,
            rows: report.rows,
            refused: report.refused,
            evicted: report.evicted,
            reported_at_ms,
        };
        self.tree.insert(k, usage.encode_to_vec())?;

        // The gateway's limit, less what its other groups hold: this group's ceiling. Below
        // its rows when the limit was lowered, so that DELETE_OLDEST trims down to it.
        let other_groups: u64 = self
            .usage(account, Some(gateway))?
            .iter()
            .filter(|u| u.group != report.group)
            .map(|u| u.rows)
            .sum();
        let limit = gateway_limit(plan, settings);
        let gateway_ceiling = (limit > 0).then(|| limit.saturating_sub(other_groups));
        let of_account = self.usage(account, None)?;
        let account_rows: u64 = of_account.iter().map(|u| u.rows).sum();
        let account_ceiling = remaining(plan.max_logs_per_account, account_rows).map(|left| {
            let share = left / (of_account.len().max(1) as u64);
            let share = share.max(report.report_every.max(1)).min(left);
            (report.rows.saturating_add(share), share == left)
        });
        let delete_oldest = plan.delete_oldest_allowed
            && settings.log_management_strategy() == LogManagementStrategy::DeleteOldest;
        // The ceiling, and whether it is a limit (only then does the strategy apply).
        let (max_rows, at_limit) = match (gateway_ceiling, account_ceiling) {
            (None, None) => (u64::MAX, false),
            (Some(g), None) => (g, true),
            (None, Some(account)) => account,
            (Some(g), Some((a, _))) if g <= a => (g, true),
            (Some(_), Some(account)) => account,
        };
        Ok(Quota {
            max_rows,
            at_limit,
            delete_oldest,
        })
    }

    /// Every entry, for a snapshot.
    pub fn snapshot(&self) -> Result<Vec<u8>, RegistryError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            put_framed(&mut out, &k);
            put_framed(&mut out, &v);
        }
        Ok(out)
    }

    /// Replace every entry with a snapshot's.
    pub fn restore(&self, snapshot: &[u8]) -> Result<(), RegistryError> {
        self.tree.clear()?;
        let mut buf = snapshot;
        while !buf.is_empty() {
            let k = take_framed(&mut buf)?;
            let v = take_framed(&mut buf)?;
            self.tree.insert(k, v)?;
        }
        self.reload()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, AccountBook) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let book = AccountBook::open(db.open_tree("book").unwrap(), GatewayMirror::default());
        (dir, book.unwrap())
    }

    fn report(gateway: &str, group: u64, rows: u64) -> UsageReport {
        UsageReport {
            account_id: "a".into(),
            gateway_id: gateway.into(),
            group,
            rows,
            report_every: 1_000,
            ..UsageReport::default()
        }
    }

    #[test]
    fn quotas_grant_the_gateway_limit_whole_and_share_the_account_limit() {
        let (_dir, book) = open();
        let free = book.plan("free").unwrap().unwrap();
        let settings = GatewaySettings::default();
        // One group reporting: all of the account's 100,000 is its to use.
        let q = book
            .report(&report("g1", 1, 5_000), 1, &free, &settings)
            .unwrap();
        assert_eq!((q.max_rows, q.at_limit), (100_000, true));
        // A second group: what is left is shared, at least one report's worth each.
        let q = book
            .report(&report("g2", 2, 15_000), 1, &free, &settings)
            .unwrap();
        assert_eq!((q.max_rows, q.at_limit), (15_000 + 40_000, false));
        book.report(&report("g2", 2, 94_500), 1, &free, &settings)
            .unwrap();
        let q = book
            .report(&report("g1", 1, 5_000), 2, &free, &settings)
            .unwrap();
        assert_eq!((q.max_rows, q.at_limit), (5_500, true));
        // Past the limit (both groups overshot): nothing more.
        book.report(&report("g2", 2, 96_000), 3, &free, &settings)
            .unwrap();
        let q = book
            .report(&report("g1", 1, 5_000), 4, &free, &settings)
            .unwrap();
        assert_eq!(q.max_rows, 5_000);
        assert!(!q.delete_oldest, "the free plan does not delete");
        assert_eq!(book.account_logs("a").unwrap(), 101_000);

        // The gateway's own setting lowers the plan's per-gateway limit; it is granted whole,
        // and a replayed report grants the same.
        let paid = book.plan("paid").unwrap().unwrap();
        let own = GatewaySettings {
            log_management: Some(20_000),
            log_management_strategy: LogManagementStrategy::DeleteOldest.into(),
            ..GatewaySettings::default()
        };
        let first = book
            .report(&report("g3", 3, 1_500), 5, &paid, &own)
            .unwrap();
        let again = book
            .report(&report("g3", 3, 1_500), 5, &paid, &own)
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(
            (first.max_rows, first.at_limit, first.delete_oldest),
            (20_000, true, true)
        );

        // A limit lowered below what the gateway holds: the ceiling is the limit, so that
        // DELETE_OLDEST trims down to it.
        let lowered = GatewaySettings {
            log_management: Some(1_000),
            ..own
        };
        let q = book
            .report(&report("g3", 3, 1_500), 6, &paid, &lowered)
            .unwrap();
        assert_eq!((q.max_rows, q.at_limit), (1_000, true));

        let unlimited = book.plan(DEFAULT_PLAN).unwrap().unwrap();
        let q = book
            .report(&report("g4", 1, 10), 6, &unlimited, &settings)
            .unwrap();
        assert_eq!(q.max_rows, u64::MAX);
        book.drop_usage("a", "g2").unwrap();
        assert_eq!(book.account_logs("a").unwrap(), 5_000 + 1_500 + 10);
    }

    #[test]
    fn plans_accounts_and_tokens_survive_snapshots() {
        let (_dir, book) = open();
        book.put_plan(&Plan {
            name: "free".into(),
            max_gateways: 3,
            ..Plan::default()
        })
        .unwrap();
        assert_eq!(book.plan("free").unwrap().unwrap().max_gateways, 3);
        assert_eq!(
            book.plans().unwrap().len(),
            3,
            "a stored plan replaces the built-in"
        );
        book.put_account(&Account {
            id: "a".into(),
            plan: "paid".into(),
            created_at_ms: 1,
        })
        .unwrap();
        assert_eq!(book.plan_of("a").unwrap().unwrap().name, "paid");
        assert_eq!(book.plan_of("b").unwrap().unwrap().name, DEFAULT_PLAN);
        let (token, verifier) =
            crate::tokens::issue("a", &crate::tokens::Permission::ALL, 1).unwrap();
        book.put_token(verifier.clone()).unwrap();

        let (_d2, other) = open();
        other.restore(&book.snapshot().unwrap()).unwrap();
        assert_eq!(other.plan("free").unwrap().unwrap().max_gateways, 3);
        assert_eq!(other.token(&verifier.id).unwrap(), Some(verifier.clone()));
        assert_eq!(
            other
                .mirror
                .token_account(&token, crate::tokens::Permission::Run),
            Some("a".into())
        );
        other.revoke_token(&verifier.id).unwrap();
        assert_eq!(
            other
                .mirror
                .token_account(&token, crate::tokens::Permission::Run),
            None
        );
    }
}
