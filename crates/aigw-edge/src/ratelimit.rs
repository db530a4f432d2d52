//! Gateway rate limits, one limit across every edge.
//!
//! The budget of each gateway is owned by the leader of its home shard group
//! ([`GatewayState::lease`], a [`RateBook`](aigw_gateway_state::RateBook) there). An edge
//! leases a slice of the current window's budget and admits requests against it in memory:
//! the hot path takes a token under a mutex and makes no remote call. When the slice runs low
//! the next one is fetched in the background; only when it is empty does a request wait for
//! the owner. A refused lease carries the time until a request fits again, and the edge
//! refuses locally until then, so a flood of refused requests costs no remote calls either.
//!
//! The owner never grants past the limit, so the admitted total stays within it except for
//! clock skew between edges and the owner at window boundaries (a slice used a little past
//! its window). If the owner cannot be reached, requests are admitted (an outage of the
//! shard must not stop inference) and counted in `aigw_rate_limit_unavailable_total`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aigw_gateway_state::{GatewayState, Lease, RatePolicy, now_ms};
use tokio::sync::Notify;

use crate::error::EdgeError;
use crate::metrics::Metrics;

/// Longest wait for the owner's lease before a request is admitted without one.
const LEASE_TIMEOUT: Duration = Duration::from_secs(1);
/// After the owner failed to answer, requests are admitted without asking it for this long.
const UNAVAILABLE_BACKOFF_MS: i64 = 1_000;
/// Budgets tracked before the first sweep for spent ones; later sweeps come when the count
/// has doubled since the last, so sweeping costs O(1) per new budget, amortised.
const FIRST_SWEEP_AT: usize = 1_024;

/// The slice an edge asks for: a tenth of the limit (at least 1, at most 1,000), so a limit
/// costs about ten owner calls per window per busy edge.
fn slice(limit: u64) -> u64 {
    (limit / 10).clamp(1, 1_000)
}

/// One gateway's lease on this edge.
#[derive(Debug, Default)]
struct Budget {
    policy: Option<RatePolicy>,
    tokens: u64,
    valid_until_ms: i64,
    /// Refused until then, with nothing left to lease.
    refused_until_ms: i64,
    /// The owner failed; admit without it until then.
    unavailable_until_ms: i64,
    fetching: bool,
}

impl Budget {
    /// Whether forgetting this budget loses nothing: its slice and any refusal or outage
    /// backoff have run out, and no lease is in flight.
    fn is_spent(&self, now: i64) -> bool {
        !self.fetching
            && now >= self.valid_until_ms
            && now >= self.refused_until_ms
            && now >= self.unavailable_until_ms
    }
}

struct GatewayBudget {
    budget: Mutex<Budget>,
    fetched: Notify,
}

/// Every gateway's budget on this edge: account → gateway → budget, nested so lookups need
/// no allocation, swept of spent budgets as it grows (a gateway that stops sending traffic,
/// or is deleted, must not keep its entry for the life of the process).
struct Budgets {
    by_account: HashMap<String, HashMap<String, Arc<GatewayBudget>>>,
    /// Budgets tracked (kept beside the map: summing it would cost a pass per new budget).
    len: usize,
    /// `len` at which the next new budget sweeps first.
    sweep_at: usize,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            by_account: HashMap::new(),
            len: 0,
            sweep_at: FIRST_SWEEP_AT,
        }
    }
}

impl Budgets {
    /// Forget the budgets nobody holds that are spent at `now`.
    fn sweep(&mut self, now: i64) {
        for gateways in self.by_account.values_mut() {
            gateways.retain(|_, gw| {
                Arc::strong_count(gw) > 1
                    || !gw
                        .budget
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_spent(now)
            });
        }
        self.by_account.retain(|_, gateways| !gateways.is_empty());
        self.len = self.by_account.values().map(HashMap::len).sum();
        self.sweep_at = (self.len * 2).max(FIRST_SWEEP_AT);
    }
}

/// What the hot path decided.
enum Decision {
    Admit,
    Refuse(u64),
    /// Wait for the lease in flight, then decide again.
    Wait,
}

/// Admits requests against leased slices of each gateway's budget.
pub(crate) struct RateLimiter {
    owner: Arc<dyn GatewayState>,
    gateways: Mutex<Budgets>,
    metrics: Arc<Metrics>,
}

impl RateLimiter {
    pub(crate) fn new(owner: Arc<dyn GatewayState>, metrics: Arc<Metrics>) -> Self {
        Self {
            owner,
            gateways: Mutex::default(),
            metrics,
        }
    }

    fn budget(&self, account: &str, gateway: &str) -> Arc<GatewayBudget> {
        let mut budgets = self.gateways.lock().unwrap_or_else(PoisonError::into_inner);
        // Looked up by borrowed keys first: the hot path allocates nothing.
        if let Some(found) = budgets.by_account.get(account).and_then(|g| g.get(gateway)) {
            return found.clone();
        }
        if budgets.len >= budgets.sweep_at {
            budgets.sweep(now_ms());
        }
        budgets.len += 1;
        budgets
            .by_account
            .entry(account.to_owned())
            .or_default()
            .entry(gateway.to_owned())
            .or_insert_with(|| {
                Arc::new(GatewayBudget {
                    budget: Mutex::default(),
                    fetched: Notify::new(),
                })
            })
            .clone()
    }

    /// Admit one request of `account`/`gateway` under `policy`, or refuse it with 429.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        account: &str,
        gateway: &str,
        policy: RatePolicy,
    ) -> Result<(), EdgeError> {
        let gw = self.budget(account, gateway);
        loop {
            let fetched = gw.fetched.notified();
            let decision = {
                let mut b = gw.budget.lock().unwrap_or_else(PoisonError::into_inner);
                let now = now_ms();
                if b.policy != Some(policy) {
                    // New or changed settings: what was leased under the old ones is void.
                    *b = Budget {
                        policy: Some(policy),
                        fetching: b.fetching,
                        ..Budget::default()
                    };
                }
                if now >= b.valid_until_ms {
                    b.tokens = 0;
                }
                if b.tokens > 0 {
                    b.tokens -= 1;
                    if b.tokens <= slice(policy.limit) / 2 && !b.fetching {
                        self.fetch(&gw, &mut b, account, gateway, policy);
                    }
                    Decision::Admit
                } else if now < b.unavailable_until_ms {
                    self.metrics.rate_limit_unavailable();
                    Decision::Admit
                } else if now < b.refused_until_ms {
                    Decision::Refuse(u64::try_from(b.refused_until_ms - now).unwrap_or(0))
                } else {
                    if !b.fetching {
                        self.fetch(&gw, &mut b, account, gateway, policy);
                    }
                    Decision::Wait
                }
            };
            match decision {
                Decision::Admit => return Ok(()),
                Decision::Refuse(retry_after_ms) => {
                    self.metrics.rate_limited();
                    return Err(EdgeError::RateLimited {
                        gateway: gateway.to_owned(),
                        limit: policy.limit,
                        interval_secs: policy.interval_ms.div_ceil(1_000),
                        retry_after_secs: retry_after_ms.div_ceil(1_000).max(1),
                    });
                }
                Decision::Wait => {
                    if tokio::time::timeout(LEASE_TIMEOUT * 2, fetched)
                        .await
                        .is_err()
                    {
                        // The fetch itself is bounded; this only guards against a lost wake-up.
                        continue;
                    }
                }
            }
        }
    }

    /// Start fetching the next slice in the background; waiters are woken when it lands.
    fn fetch(
        self: &Arc<Self>,
        gw: &Arc<GatewayBudget>,
        b: &mut Budget,
        account: &str,
        gateway: &str,
        policy: RatePolicy,
    ) {
        b.fetching = true;
        let (this, gw) = (self.clone(), gw.clone());
        let (account, gateway) = (account.to_owned(), gateway.to_owned());
        tokio::spawn(async move {
            let want = slice(policy.limit);
            let leased = tokio::time::timeout(
                LEASE_TIMEOUT,
                this.owner.lease(&account, &gateway, policy, want),
            )
            .await;
            let mut b = gw.budget.lock().unwrap_or_else(PoisonError::into_inner);
            b.fetching = false;
            let now = now_ms();
            match leased {
                Ok(Ok(lease)) if b.policy == Some(policy) => apply(&mut b, lease, now),
                Ok(Ok(_)) => {} // the settings changed meanwhile: the lease is void
                Ok(Err(e)) => {
                    tracing::warn!(%account, %gateway, error = %e, "rate-limit owner unavailable; admitting without it");
                    b.unavailable_until_ms = now + UNAVAILABLE_BACKOFF_MS;
                }
                Err(_) => {
                    tracing::warn!(%account, %gateway, "rate-limit lease timed out; admitting without it");
                    b.unavailable_until_ms = now + UNAVAILABLE_BACKOFF_MS;
                }
            }
            drop(b);
            gw.fetched.notify_waiters();
        });
    }
}

fn apply(b: &mut Budget, lease: Lease, now: i64) {
    if lease.granted == 0 {
        b.refused_until_ms = now + i64::try_from(lease.retry_after_ms).unwrap_or(i64::MAX);
        return;
    }
    if now >= b.valid_until_ms || lease.valid_until_ms != b.valid_until_ms {
        b.tokens = 0;
    }
    b.tokens += lease.granted;
    b.valid_until_ms = lease.valid_until_ms;
    b.refused_until_ms = 0;
}

#[cfg(test)]
mod tests {
    use aigw_gateway_state::{LocalGatewayState, Technique};

    use super::*;

    fn limiter() -> Arc<RateLimiter> {
        Arc::new(RateLimiter::new(
            Arc::new(LocalGatewayState::new(1 << 20)),
            Arc::new(Metrics::default()),
        ))
    }

    fn tracked(limiter: &RateLimiter) -> usize {
        let budgets = limiter.gateways.lock().unwrap();
        assert_eq!(
            budgets.len,
            budgets.by_account.values().map(HashMap::len).sum::<usize>()
        );
        budgets.len
    }

    #[tokio::test]
    async fn spent_budgets_are_swept_and_live_ones_kept() {
        let limiter = limiter();
        let policy = RatePolicy {
            limit: 100,
            interval_ms: 60_000,
            technique: Technique::Fixed,
        };
        // A gateway with a live slice of the current window.
        limiter.admit("acct", "live", policy).await.unwrap();
        // Gateways that were seen once and never leased (nothing live).
        for i in 1..FIRST_SWEEP_AT {
            drop(limiter.budget("acct", &format!("idle-{i}")));
        }
        assert_eq!(tracked(&limiter), FIRST_SWEEP_AT);
        // The next new gateway sweeps: only the live budget and the new one remain.
        drop(limiter.budget("other", "new"));
        assert_eq!(tracked(&limiter), 2);
        // The live budget still holds its slice: admitting takes a token, no new lease.
        limiter.admit("acct", "live", policy).await.unwrap();
        let live = limiter.budget("acct", "live");
        let tokens = live.budget.lock().unwrap().tokens;
        assert_eq!(tokens, slice(policy.limit) - 2);
    }
}
