//! Usage reports and quotas: how a shard leader keeps its gateways within their plans without
//! a round trip per request.
//!
//! Rows are admitted by the state machine against the quota stored in the group (replicated,
//! so a new leader admits exactly as the old one did). The leader reports a gateway's counts
//! to the account manager after every `report_every` new rows and when it nears a quota that
//! is not the limit, and otherwise — at most once a second — whenever its counts changed (rows
//! refused or evicted, or deleted); the answer
//! becomes the gateway's next quota. Reports run beside ingestion, never in front of it: while
//! the account manager cannot be reached, the stored quota keeps applying.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aigw_logindex::GatewayUsage;
use aigw_logindex::command::{SetQuota, kind::Kind};
use aigw_proto::admin::accounts_server::Accounts;
use aigw_proto::admin::{Quota, UsageReport};
use aigw_raft::GroupId;
use tonic::Status;

/// Rows between two reports of one gateway, by default.
pub const DEFAULT_REPORT_EVERY: u64 = 1_000;
/// Least time between reports of a gateway that only refuses or evicts rows (its count is not
/// moving, but the plan or the other gateways' usage may be), and between failed attempts.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Where usage is reported: the account manager's `Accounts` service, in process or remote.
pub type UsageReporter = Arc<dyn Accounts>;

/// What the leader last reported of one gateway.
#[derive(Debug, Clone, Copy)]
struct Reported {
    rows: u64,
    refused: u64,
    evicted: u64,
    at: Instant,
    in_flight: bool,
    /// The last attempt failed: the next waits [`RETRY_EVERY`].
    failed: bool,
    /// A later look is scheduled (counts changed while reports were held back).
    scheduled: bool,
}

/// When a gateway's active sub-shard is split (sent with every report; the account manager
/// decides).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitPolicy {
    /// Rows in the active sub-shard that trigger a split (0: never).
    pub rows: u64,
    /// Sub-shards past which a gateway is not split.
    pub max_sub_shards: u32,
}

/// Whether a gateway's usage is to be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Now (marked in flight).
    Now,
    /// Once [`RETRY_EVERY`] has passed: counts changed, but a report went out just now.
    Later(Duration),
    /// Not until more rows arrive.
    No,
}

/// The reporting side of quotas for one shard group, shared by the service's clones.
#[derive(Clone)]
pub struct QuotaKeeper {
    reporter: UsageReporter,
    group: GroupId,
    every: u64,
    splits: SplitPolicy,
    reported: Arc<Mutex<HashMap<(String, String), Reported>>>,
}

impl std::fmt::Debug for QuotaKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaKeeper")
            .field("group", &self.group)
            .field("every", &self.every)
            .field("splits", &self.splits)
            .finish_non_exhaustive()
    }
}

fn entry(
    reported: &mut HashMap<(String, String), Reported>,
    key: (String, String),
) -> &mut Reported {
    reported.entry(key).or_insert(Reported {
        rows: 0,
        refused: 0,
        evicted: 0,
        at: Instant::now(),
        in_flight: false,
        failed: false,
        scheduled: false,
    })
}

impl QuotaKeeper {
    /// Reports of group `group` go to `reporter` every `every` rows (at least 2).
    pub fn new(reporter: UsageReporter, group: GroupId, every: u64) -> Self {
        Self {
            reporter,
            group,
            every: every.max(2),
            splits: SplitPolicy::default(),
            reported: Arc::default(),
        }
    }

    /// Asks the account manager to split gateways as `splits` says.
    pub fn with_splits(mut self, splits: SplitPolicy) -> Self {
        self.splits = splits;
        self
    }

    /// The quota of gateways nothing was reported for yet: one report's worth of rows.
    pub fn initial_rows(&self) -> u64 {
        self.every
    }

    /// Whether `usage` of a gateway calls for a report; marks one in flight if now, or a
    /// later look scheduled (so that counts that stop changing are reported all the same).
    pub(crate) fn due(&self, account: &str, gateway: &str, usage: &GatewayUsage) -> Due {
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (account.to_owned(), gateway.to_owned());
        let (wanted, urgent, wait) = match reported.get(&key) {
            None => (true, true, Duration::ZERO),
            Some(last) if last.in_flight => (false, false, Duration::ZERO),
            Some(last) => {
                let wait = RETRY_EVERY.saturating_sub(last.at.elapsed());
                let changed = usage.rows != last.rows
                    || usage.refused != last.refused
                    || usage.evicted != last.evicted;
                // Until a quota is stored, the proposer's default (one report's worth) applies.
                let (max_rows, at_limit) = usage
                    .quota
                    .map_or((self.every, false), |q| (q.max_rows, q.at_limit));
                let urgent = !last.failed
                    && (usage.rows.abs_diff(last.rows) >= self.every
                        || (!at_limit && usage.rows.saturating_add(self.every / 2) >= max_rows));
                (changed || usage.quota.is_none(), urgent, wait)
            }
        };
        let entry = entry(&mut reported, key);
        if wanted && (urgent || wait.is_zero()) {
            entry.in_flight = true;
            Due::Now
        } else if wanted && !entry.scheduled {
            entry.scheduled = true;
            Due::Later(wait)
        } else {
            Due::No
        }
    }

    /// A scheduled look is being taken.
    pub(crate) fn unschedule(&self, account: &str, gateway: &str) {
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        entry(&mut reported, (account.to_owned(), gateway.to_owned())).scheduled = false;
    }

    /// Reports `usage` and returns the command that stores the quota granted (`None` when it
    /// is the one already held). The caller proposes it.
    pub(crate) async fn report(
        &self,
        account: &str,
        gateway: &str,
        usage: GatewayUsage,
    ) -> Result<Option<Kind>, Status> {
        let report = UsageReport {
            account_id: account.to_owned(),
            gateway_id: gateway.to_owned(),
            group: self.group,
            rows: usage.rows,
            refused: usage.refused,
            evicted: usage.evicted,
            report_every: self.every,
            split_rows: self.splits.rows,
            max_sub_shards: self.splits.max_sub_shards,
        };
        let result = self
            .reporter
            .report_usage(tonic::Request::new(report))
            .await
            .map(tonic::Response::into_inner);
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entry(&mut reported, (account.to_owned(), gateway.to_owned()));
        entry.in_flight = false;
        entry.at = Instant::now();
        entry.failed = result.is_err();
        let quota: Quota = result?;
        tracing::debug!(
            account,
            gateway,
            rows = usage.rows,
            refused = usage.refused,
            evicted = usage.evicted,
            ?quota,
            "usage reported"
        );
        (entry.rows, entry.refused, entry.evicted) = (usage.rows, usage.refused, usage.evicted);
        Ok((usage.quota != Some(quota)).then(|| {
            Kind::SetQuota(SetQuota {
                account_id: account.to_owned(),
                gateway_id: gateway.to_owned(),
                quota: Some(quota),
            })
        }))
    }
}
