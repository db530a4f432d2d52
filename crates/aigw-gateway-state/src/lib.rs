//! Soft per-gateway runtime state: cached responses and rate-limit budgets.
//!
//! This crate owns the two pieces of gateway state that are kept in memory rather than in a
//! Raft log, and the interface through which an edge reaches them, [`GatewayState`]:
//! - [`ResponseCache`]: cached upstream responses under a byte budget, least recently used
//!   evicted first, each entry with its own expiry. An edge keeps one as its local tier; the
//!   leader of a gateway's home shard group keeps the shared one.
//! - [`RateBook`]: each rate-limited gateway's windows, from which edges *lease* slices of the
//!   budget, so that a limit is one limit across every edge while admitting a request costs
//!   no remote call until an edge's slice runs out.
//!
//! [`LocalGatewayState`] is both, in process: the owner side that the shard service serves, and
//! what an edge uses when it has no cluster. The state is soft: it lives on one process (the
//! home group's leader) and is lost when that process stops or leadership moves — a cache
//! then misses, and a rate window starts over. This crate must stay free of I/O, networking
//! and storage: it is pure bookkeeping, tested and benchmarked alone.

mod cache;
mod rate;

use std::future::Future;
use std::pin::Pin;

pub use cache::{CacheEntry, CacheKey, ResponseCache};
pub use rate::{Lease, RateBook, RatePolicy, Technique};

/// Why shared gateway state could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("gateway state unavailable: {0}")]
pub struct StateError(pub String);

/// Future returned by [`GatewayState`] methods.
pub type StateFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StateError>> + Send + 'a>>;

/// The owner of a gateway's shared cache tier and rate budgets, as an edge sees it: in process
/// ([`LocalGatewayState`]) or the gateway's home shard leader over gRPC.
pub trait GatewayState: Send + Sync + 'static {
    /// The entry cached under `key` for `account`/`gateway`, if any and not expired.
    fn cache_get<'a>(
        &'a self,
        account: &'a str,
        gateway: &'a str,
        key: CacheKey,
    ) -> StateFuture<'a, Option<CacheEntry>>;

    /// Cache `entry` under `key` (until its `expires_at_ms`).
    fn cache_put<'a>(
        &'a self,
        account: &'a str,
        gateway: &'a str,
        key: CacheKey,
        entry: CacheEntry,
    ) -> StateFuture<'a, ()>;

    /// Lease up to `want` requests of `account`/`gateway`'s current window under `policy`.
    fn lease<'a>(
        &'a self,
        account: &'a str,
        gateway: &'a str,
        policy: RatePolicy,
        want: u64,
    ) -> StateFuture<'a, Lease>;
}

/// Milliseconds since the Unix epoch by the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A cache and a rate book in this process.
#[derive(Debug)]
pub struct LocalGatewayState {
    cache: ResponseCache,
    rates: RateBook,
}

impl LocalGatewayState {
    /// State whose cache holds at most `cache_bytes`.
    pub fn new(cache_bytes: usize) -> Self {
        Self {
            cache: ResponseCache::new(cache_bytes),
            rates: RateBook::default(),
        }
    }

    /// The cache.
    pub fn cache(&self) -> &ResponseCache {
        &self.cache
    }

    /// The rate book.
    pub fn rates(&self) -> &RateBook {
        &self.rates
    }
}

impl GatewayState for LocalGatewayState {
    fn cache_get<'a>(
        &'a self,
        _account: &'a str,
        _gateway: &'a str,
        key: CacheKey,
    ) -> StateFuture<'a, Option<CacheEntry>> {
        let found = self.cache.get(&key, now_ms()).map(|e| (*e).clone());
        Box::pin(std::future::ready(Ok(found)))
    }

    fn cache_put<'a>(
        &'a self,
        _account: &'a str,
        _gateway: &'a str,
        key: CacheKey,
        entry: CacheEntry,
    ) -> StateFuture<'a, ()> {
        self.cache.put(key, entry);
        Box::pin(std::future::ready(Ok(())))
    }

    fn lease<'a>(
        &'a self,
        account: &'a str,
        gateway: &'a str,
        policy: RatePolicy,
        want: u64,
    ) -> StateFuture<'a, Lease> {
        let lease = self.rates.lease(account, gateway, policy, want, now_ms());
        Box::pin(std::future::ready(Ok(lease)))
    }
}
