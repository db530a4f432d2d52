//! Rate-limit windows of each gateway, and leases of their budget.
//!
//! The owner of a gateway's budget (its home shard leader) keeps, per gateway, the requests
//! granted in the current clock-aligned window and the previous one. Edges lease slices of
//! what is left and admit requests against their slice locally; a slice is valid until its
//! window ends. The owner never grants more than the limit, so the requests admitted across
//! every edge stay within it; what an edge leased but did not use is lost at the window's end,
//! and grants shrink as the budget runs low, so little is stranded on an idle edge.
//!
//! - **Fixed**: windows aligned to the clock (`floor(now / interval)`); each allows `limit`.
//! - **Sliding**: the previous window's count weighs in proportion to how much of it still
//!   overlaps the sliding interval ending now (`prev × (1 − elapsed/interval) + current`), the
//!   usual approximation of a true sliding log.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// How requests are counted against a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Technique {
    /// Windows aligned to the clock.
    Fixed,
    /// A window sliding with the current time.
    Sliding,
}

/// A gateway's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatePolicy {
    /// Requests allowed per interval.
    pub limit: u64,
    /// The interval, in milliseconds (at least 1).
    pub interval_ms: u64,
    /// How requests are counted.
    pub technique: Technique,
}

/// What a lease request was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Requests the edge may admit (0: the limit is reached).
    pub granted: u64,
    /// When the granted requests stop being valid: the end of the current window (Unix ms).
    pub valid_until_ms: i64,
    /// With nothing granted: how long until a request can be admitted again, in ms.
    pub retry_after_ms: u64,
    /// Requests left to lease in this window after this grant.
    pub remaining: u64,
}

/// Counts of one gateway.
#[derive(Debug, Clone, Copy)]
struct Windows {
    policy: RatePolicy,
    /// Index of the current window (`now / interval`).
    window: i64,
    used: u64,
    previous_used: u64,
}

/// Gateways idle this many windows are forgotten when the book is tidied.
const IDLE_WINDOWS: i64 = 2;
/// The book is tidied when it holds more gateways than this.
const TIDY_ABOVE: usize = 10_000;

/// Every rate-limited gateway's windows on the budget's owner.
#[derive(Debug, Default)]
pub struct RateBook {
    gateways: Mutex<HashMap<(String, String), Windows>>,
}

impl RateBook {
    /// Grant up to `want` (at least 1) requests of `account`/`gateway` at `now_ms` under
    /// `policy`. A changed policy starts the gateway's counts over.
    pub fn lease(
        &self,
        account: &str,
        gateway: &str,
        policy: RatePolicy,
        want: u64,
        now_ms: i64,
    ) -> Lease {
        let policy = RatePolicy {
            interval_ms: policy.interval_ms.max(1),
            ..policy
        };
        let interval = i64::try_from(policy.interval_ms).unwrap_or(i64::MAX);
        let window = now_ms.div_euclid(interval);
        let mut gateways = self.gateways.lock().unwrap_or_else(PoisonError::into_inner);
        if gateways.len() > TIDY_ABOVE {
            gateways.retain(|_, w| window - w.window <= IDLE_WINDOWS);
        }
        let fresh = Windows {
            policy,
            window,
            used: 0,
            previous_used: 0,
        };
        let w = gateways
            .entry((account.to_owned(), gateway.to_owned()))
            .or_insert(fresh);
        if w.policy != policy {
            *w = fresh;
        }
        if w.window != window {
            w.previous_used = if w.window + 1 == window { w.used } else { 0 };
            w.used = 0;
            w.window = window;
        }
        let elapsed = now_ms - window * interval;
        let counted = counted(w, elapsed, interval);
        let available = policy.limit.saturating_sub(counted);
        // Half of what is left at most: another edge may need the rest.
        let granted = want.max(1).min(available.div_ceil(2));
        w.used += granted;
        let valid_until_ms = (window + 1) * interval;
        Lease {
            granted,
            valid_until_ms,
            retry_after_ms: if granted == 0 {
                retry_after(w, elapsed, interval)
            } else {
                0
            },
            remaining: available - granted,
        }
    }
}

/// Requests counted against the limit `elapsed` ms into the current window.
fn counted(w: &Windows, elapsed: i64, interval: i64) -> u64 {
    match w.policy.technique {
        Technique::Fixed => w.used,
        Technique::Sliding => {
            let overlap = (interval - elapsed) as f64 / interval as f64;
            // Rounded up: a partial request still counts.
            (w.previous_used as f64 * overlap).ceil() as u64 + w.used
        }
    }
}

/// How long, from `elapsed` ms into the current window, until one more request fits.
fn retry_after(w: &Windows, elapsed: i64, interval: i64) -> u64 {
    let to_window_end = u64::try_from(interval - elapsed).unwrap_or(0);
    let limit = w.policy.limit;
    if w.policy.technique == Technique::Fixed || limit == 0 {
        return to_window_end.max(1);
    }
    // Sliding: the previous window's weight decays linearly over this one.
    let (prev, cur, interval_f) = (w.previous_used as f64, w.used as f64, interval as f64);
    let room = (limit - 1) as f64;
    if prev > 0.0 && cur <= room {
        // prev × (1 − (elapsed + t)/interval) + cur ≤ room
        let t = interval_f * (1.0 - (room - cur) / prev) - elapsed as f64;
        if t < (interval - elapsed) as f64 {
            return (t.ceil() as u64).max(1);
        }
    }
    // Not within this window: then this window's count decays over the next.
    let next = if cur > 0.0 {
        (interval_f * (1.0 - room / cur)).max(0.0).ceil() as u64
    } else {
        0
    };
    (to_window_end + next).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    fn policy(limit: u64, technique: Technique) -> RatePolicy {
        RatePolicy {
            limit,
            interval_ms: MINUTE,
            technique,
        }
    }

    /// Leases one request at a time until refused; the number granted.
    fn drain(book: &RateBook, p: RatePolicy, now: i64) -> u64 {
        let mut total = 0;
        loop {
            let lease = book.lease("a", "g", p, 1, now);
            if lease.granted == 0 {
                return total;
            }
            total += lease.granted;
        }
    }

    #[test]
    fn fixed_windows_are_aligned_to_the_clock_and_never_over_granted() {
        let book = RateBook::default();
        let p = policy(100, Technique::Fixed);
        let start = 10 * MINUTE as i64;
        let mut granted = 0;
        // Greedy leases: each is at most half of what is left.
        loop {
            let lease = book.lease("a", "g", p, 40, start + 5_000);
            assert!(lease.granted <= 40);
            if lease.granted == 0 {
                assert_eq!(lease.retry_after_ms, 55_000, "until the window ends");
                assert_eq!(lease.valid_until_ms, start + MINUTE as i64);
                break;
            }
            granted += lease.granted;
        }
        assert_eq!(granted, 100);
        // The next window is a fresh budget, at its first millisecond.
        assert_eq!(drain(&book, p, start + MINUTE as i64), 100);
    }

    #[test]
    fn grants_shrink_as_the_budget_runs_out() {
        let book = RateBook::default();
        let p = policy(10, Technique::Fixed);
        let grants: Vec<u64> = (0..6)
            .map(|_| book.lease("a", "g", p, 8, 0).granted)
            .collect();
        assert_eq!(grants, [5, 3, 1, 1, 0, 0]);
    }

    #[test]
    fn gateways_and_accounts_have_separate_budgets() {
        let book = RateBook::default();
        let p = policy(3, Technique::Fixed);
        assert_eq!(drain(&book, p, 0), 3);
        assert_eq!(book.lease("a", "other", p, 1, 0).granted, 1);
        assert_eq!(book.lease("b", "g", p, 1, 0).granted, 1);
    }

    #[test]
    fn sliding_windows_weigh_the_previous_window_by_its_overlap() {
        let book = RateBook::default();
        let p = policy(100, Technique::Sliding);
        assert_eq!(drain(&book, p, 0), 100);
        // A quarter into the next window, three quarters of the previous 100 still count.
        let quarter = MINUTE as i64 + 15_000;
        assert_eq!(drain(&book, p, quarter), 25);
        let refused = book.lease("a", "g", p, 1, quarter);
        assert_eq!(refused.granted, 0);
        assert!(
            (1..=1_000).contains(&refused.retry_after_ms),
            "the previous window decays by one request every 600 ms: {}",
            refused.retry_after_ms
        );
        // Half-way: 50 of the previous window count, plus the 25 taken: 25 more.
        assert_eq!(drain(&book, p, MINUTE as i64 + 30_000), 25);
    }

    #[test]
    fn a_fixed_window_refuses_with_the_time_to_its_end() {
        let book = RateBook::default();
        let p = policy(1, Technique::Fixed);
        assert_eq!(book.lease("a", "g", p, 1, 59_000).granted, 1);
        let refused = book.lease("a", "g", p, 1, 59_000);
        assert_eq!((refused.granted, refused.retry_after_ms), (0, 1_000));
    }

    #[test]
    fn a_changed_policy_starts_over() {
        let book = RateBook::default();
        assert_eq!(drain(&book, policy(2, Technique::Fixed), 0), 2);
        assert_eq!(drain(&book, policy(5, Technique::Fixed), 0), 5);
    }
}
