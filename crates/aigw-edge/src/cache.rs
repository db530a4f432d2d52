//! The response cache as the edge applies it.
//!
//! A request is cacheable when its gateway has a `cache_ttl`, or it asks with
//! `cf-aig-cache-ttl` or `cf-aig-cache-key` — and not with `cf-aig-skip-cache`. Its key
//! ([`CachePlan`]) is a SHA-256 over the account, the gateway, the gateway's cache epoch, and
//! either the custom key or the provider, method, endpoint (path and query), the provider
//! credentials and the whole body (which names the model): two tenants, or two API keys,
//! never share an entry.
//!
//! Two tiers ([`EdgeCache`]): this edge's own ([`ResponseCache`], recently used responses),
//! then the shared tier on the leader of the gateway's home shard group, reached through
//! [`GatewayState`]. A response stored through one edge is therefore a HIT through every
//! other. Identical requests that miss on one edge at the same time are coalesced: the first
//! goes upstream, the others wait for its response and are answered from it.
//!
//! Consistency: an entry is served until its expiry, by either tier; nothing is updated in
//! place. When `cache_invalidate_on_update` is set, each settings update moves the gateway's
//! cache epoch, which is part of every key, so every entry cached before is unreachable at
//! once on every edge (and ages out of memory by LRU). The shared tier lives in one process's
//! memory: when leadership of the home group moves, it starts empty.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aigw_gateway_state::{CacheEntry, CacheKey, GatewayState, ResponseCache, now_ms};
use bytes::Bytes;
use http::{HeaderMap, Method};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::capture::CapturedBody;
use crate::directives::Directives;
use crate::gateways::GatewaySettings;
use crate::metrics::Metrics;

/// Response header saying whether the response came from the cache.
pub const CACHE_STATUS_HEADER: &str = "cf-aig-cache-status";
/// TTL of a request that opts in with `cf-aig-cache-key` alone on a gateway without one.
pub const DEFAULT_KEYED_TTL: Duration = Duration::from_secs(300);
/// Largest response body cached (larger ones are relayed and logged, not cached).
pub const MAX_CACHED_BYTES: usize = 8 * 1024 * 1024;
/// Longest wait for the shared tier before a lookup counts as a miss.
const SHARED_TIMEOUT: Duration = Duration::from_secs(1);

/// Headers carrying provider credentials: part of the derived key, so callers with different
/// keys never share entries (the values are hashed, never kept).
const CREDENTIAL_HEADERS: [&str; 4] = ["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// The write of a response to the shared tier (bounded by a timeout; failures are logged).
pub(crate) type Publish = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The request as the cache sees it.
pub(crate) struct CacheRequest<'a> {
    pub(crate) account: &'a str,
    pub(crate) gateway: &'a str,
    pub(crate) provider: &'a str,
    /// The upstream path.
    pub(crate) path: &'a str,
    /// The upstream query, if any.
    pub(crate) query: Option<&'a str>,
    pub(crate) method: &'a Method,
    /// The headers sent upstream.
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
}

/// A cacheable request: its key and how long its response is kept.
#[derive(Debug, Clone)]
pub(crate) struct CachePlan {
    pub(crate) account: String,
    pub(crate) gateway: String,
    pub(crate) key: CacheKey,
    pub(crate) ttl: Duration,
}

/// Feeds length-prefixed fields to a hasher, so no two field lists hash alike.
struct KeyHasher(Sha256);

impl KeyHasher {
    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.parts(&[bytes])
    }

    /// One field made of `parts` end to end (hashed as their concatenation would be).
    fn parts(&mut self, parts: &[&[u8]]) -> &mut Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.0.update((len as u64).to_le_bytes());
        for part in parts {
            self.0.update(part);
        }
        self
    }
}

impl CachePlan {
    /// The plan for `req` under the gateway's `settings` and the request's `directives`;
    /// `None` when the request is not cached.
    pub(crate) fn new(
        settings: &GatewaySettings,
        directives: &Directives,
        req: &CacheRequest<'_>,
    ) -> Option<Self> {
        if directives.skip_cache || !matches!(*req.method, Method::GET | Method::POST) {
            return None;
        }
        let ttl = directives
            .cache_ttl
            .or(settings.cache_ttl)
            .or_else(|| directives.cache_key.as_ref().map(|_| DEFAULT_KEYED_TTL))?;
        let mut h = KeyHasher(Sha256::new());
        h.field(b"aigw-cache-v1")
            .field(req.account.as_bytes())
            .field(req.gateway.as_bytes())
            .field(&settings.cache_epoch.to_le_bytes());
        match &directives.cache_key {
            Some(custom) => {
                h.field(b"custom").field(custom.as_bytes());
            }
            None => {
                h.field(b"request")
                    .field(req.provider.as_bytes())
                    .field(req.method.as_str().as_bytes())
                    .parts(&[
                        req.path.as_bytes(),
                        if req.query.is_some() { b"?" } else { b"" },
                        req.query.unwrap_or_default().as_bytes(),
                    ]);
                for name in CREDENTIAL_HEADERS {
                    for value in req.headers.get_all(name) {
                        h.field(name.as_bytes()).field(value.as_bytes());
                    }
                }
                h.field(req.body);
            }
        }
        Some(Self {
            account: req.account.to_owned(),
            gateway: req.gateway.to_owned(),
            key: CacheKey(h.0.finalize().into()),
            ttl,
        })
    }
}

/// Where a lookup found its answer, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HitTier {
    /// This edge's tier.
    Local,
    /// The shared tier.
    Shared,
    /// Another request's response, coalesced while it was in flight.
    Coalesced,
}

impl HitTier {
    fn label(self) -> &'static str {
        match self {
            Self::Local => "hit_local",
            Self::Shared => "hit_shared",
            Self::Coalesced => "hit_coalesced",
        }
    }
}

/// What a lookup found.
pub(crate) enum Lookup {
    /// A cached response.
    Hit(Arc<CacheEntry>, HitTier),
    /// Nothing: go upstream, and store the response through the ticket.
    Miss(FillTicket),
    /// An identical request in flight failed to produce a cacheable response: go upstream
    /// without storing.
    Uncached,
}

/// State of an in-flight miss, as its waiters see it.
#[derive(Debug, Clone)]
enum Fill {
    Pending,
    Filled(Arc<CacheEntry>),
    Failed,
}

/// Both tiers, and the misses in flight on this edge.
pub(crate) struct EdgeCache {
    local: ResponseCache,
    shared: Arc<dyn GatewayState>,
    inflight: Mutex<HashMap<CacheKey, watch::Receiver<Fill>>>,
    metrics: Arc<Metrics>,
}

impl EdgeCache {
    pub(crate) fn new(
        local_bytes: usize,
        shared: Arc<dyn GatewayState>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            local: ResponseCache::new(local_bytes),
            shared,
            inflight: Mutex::default(),
            metrics,
        }
    }

    /// Look `plan` up; waits up to `wait` for an identical request in flight on this edge.
    pub(crate) async fn lookup(self: &Arc<Self>, plan: &CachePlan, wait: Duration) -> Lookup {
        let found = self.find(plan, wait).await;
        let label = match &found {
            Lookup::Hit(_, tier) => tier.label(),
            Lookup::Miss(_) | Lookup::Uncached => "miss",
        };
        self.metrics.cache_lookup(label);
        found
    }

    async fn find(self: &Arc<Self>, plan: &CachePlan, wait: Duration) -> Lookup {
        let in_flight = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            match inflight.get(&plan.key) {
                Some(rx) => Err(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(Fill::Pending);
                    inflight.insert(plan.key, rx);
                    Ok(FillTicket {
                        cache: self.clone(),
                        plan: plan.clone(),
                        tx,
                        settled: false,
                    })
                }
            }
        };
        let ticket = match in_flight {
            Ok(ticket) => ticket,
            Err(mut rx) => {
                let settled =
                    tokio::time::timeout(wait, rx.wait_for(|f| !matches!(f, Fill::Pending))).await;
                let entry = match settled {
                    Ok(Ok(fill)) => match &*fill {
                        Fill::Filled(entry) => Some(entry.clone()),
                        Fill::Pending | Fill::Failed => None,
                    },
                    _ => None,
                };
                return match entry {
                    Some(entry) => Lookup::Hit(entry, HitTier::Coalesced),
                    None => Lookup::Uncached,
                };
            }
        };
        // This request leads: it alone looks further, and goes upstream on a miss.
        if let Some(entry) = self.local.get(&plan.key, now_ms()) {
            ticket.settle(Fill::Filled(entry.clone()));
            return Lookup::Hit(entry, HitTier::Local);
        }
        let shared = tokio::time::timeout(
            SHARED_TIMEOUT,
            self.shared
                .cache_get(&plan.account, &plan.gateway, plan.key),
        )
        .await;
        match shared {
            Ok(Ok(Some(entry))) if entry.expires_at_ms > now_ms() => {
                self.local.put(plan.key, entry.clone());
                let entry = Arc::new(entry);
                ticket.settle(Fill::Filled(entry.clone()));
                Lookup::Hit(entry, HitTier::Shared)
            }
            Ok(Ok(_)) => Lookup::Miss(ticket),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "shared cache lookup failed; treating as a miss");
                Lookup::Miss(ticket)
            }
            Err(_) => {
                tracing::warn!("shared cache lookup timed out; treating as a miss");
                Lookup::Miss(ticket)
            }
        }
    }
}

/// The duty of the request that missed: store its response (or say it could not), which
/// also answers the identical requests waiting for it. Dropped unsettled, it fails them.
pub(crate) struct FillTicket {
    cache: Arc<EdgeCache>,
    plan: CachePlan,
    tx: watch::Sender<Fill>,
    settled: bool,
}

impl FillTicket {
    fn settle(mut self, fill: Fill) {
        self.finish(fill);
    }

    fn finish(&mut self, fill: Fill) {
        self.settled = true;
        self.cache
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.plan.key);
        let _ = self.tx.send(fill);
    }

    /// Cache a complete response: in this edge's tier at once (answering the identical
    /// requests waiting for it), and in the shared tier by the returned future. The response's
    /// last byte is held back until that future is done, so a client that has the whole
    /// response finds it cached through every edge.
    pub(crate) fn store(self, status: u16, content_type: Option<String>, body: Bytes) -> Publish {
        let ttl_ms = i64::try_from(self.plan.ttl.as_millis()).unwrap_or(i64::MAX);
        let entry = CacheEntry {
            status,
            content_type,
            body,
            expires_at_ms: now_ms().saturating_add(ttl_ms),
        };
        self.cache.local.put(self.plan.key, entry.clone());
        let (shared, plan) = (self.cache.shared.clone(), self.plan.clone());
        let stored = entry.clone();
        self.settle(Fill::Filled(Arc::new(entry)));
        Box::pin(async move {
            let put = shared.cache_put(&plan.account, &plan.gateway, plan.key, stored);
            match tokio::time::timeout(SHARED_TIMEOUT, put).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "storing in the shared cache failed"),
                Err(_) => tracing::warn!("storing in the shared cache timed out"),
            }
        })
    }
}

impl Drop for FillTicket {
    fn drop(&mut self) {
        if !self.settled {
            self.finish(Fill::Failed);
        }
    }
}

/// A response being captured for the cache as it is relayed.
pub(crate) struct CacheCapture {
    ticket: FillTicket,
    body: CapturedBody,
    /// The response's `Content-Type`, replayed on hits.
    pub(crate) content_type: Option<String>,
}

impl CacheCapture {
    pub(crate) fn new(ticket: FillTicket) -> Self {
        Self {
            ticket,
            body: CapturedBody::default(),
            content_type: None,
        }
    }

    /// Adds a relayed chunk; `false` once the response is too large to cache.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> bool {
        if self.body.len() + chunk.len() > MAX_CACHED_BYTES {
            return false;
        }
        self.body.push(chunk);
        true
    }

    /// The response completed: cache it if it succeeded; the shared tier's write to await.
    pub(crate) fn complete(self, status: u16) -> Option<Publish> {
        (200..300).contains(&status).then(|| {
            self.ticket
                .store(status, self.content_type, self.body.join())
        })
    }
}

/// A cached body as the client receives it: an event stream is replayed event by event.
pub(crate) fn replay(entry: &CacheEntry) -> axum::body::Body {
    let streamed = entry
        .content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if !streamed {
        return axum::body::Body::from(entry.body.clone());
    }
    let body = entry.body.clone();
    let mut events = Vec::new();
    let mut start = 0;
    while let Some(end) = first_event_len(&body[start..]) {
        events.push(Ok::<_, std::convert::Infallible>(
            body.slice(start..start + end),
        ));
        start += end;
    }
    if start < body.len() {
        events.push(Ok(body.slice(start..)));
    }
    axum::body::Body::from_stream(futures_util::stream::iter(events))
}

/// Length of the first SSE event of `bytes`, its blank-line terminator included.
fn first_event_len(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn plan_for(
        account: &str,
        headers: &HeaderMap,
        body: &[u8],
        directives: &Directives,
    ) -> Option<CachePlan> {
        let settings = GatewaySettings {
            cache_ttl: Some(Duration::from_secs(60)),
            ..GatewaySettings::default()
        };
        CachePlan::new(
            &settings,
            directives,
            &CacheRequest {
                account,
                gateway: "g",
                provider: "openai",
                path: "/chat/completions",
                query: None,
                method: &Method::POST,
                headers,
                body,
            },
        )
    }

    fn directives() -> Directives {
        Directives::parse(&HeaderMap::new()).unwrap()
    }

    fn auth(key: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static(key));
        h
    }

    #[test]
    fn keys_differ_by_account_credentials_and_body() {
        let d = directives();
        let base = plan_for("a", &auth("Bearer k1"), b"{}", &d).unwrap().key;
        assert_eq!(
            base,
            plan_for("a", &auth("Bearer k1"), b"{}", &d).unwrap().key
        );
        assert_ne!(
            base,
            plan_for("b", &auth("Bearer k1"), b"{}", &d).unwrap().key
        );
        assert_ne!(
            base,
            plan_for("a", &auth("Bearer k2"), b"{}", &d).unwrap().key
        );
        assert_ne!(
            base,
            plan_for("a", &auth("Bearer k1"), b"{ }", &d).unwrap().key
        );
    }

    #[test]
    fn custom_keys_replace_the_request_but_stay_per_account() {
        let d = Directives {
            cache_key: Some("k".into()),
            ..directives()
        };
        let a = plan_for("a", &auth("Bearer k1"), b"1", &d).unwrap().key;
        assert_eq!(a, plan_for("a", &auth("Bearer k2"), b"2", &d).unwrap().key);
        assert_ne!(a, plan_for("b", &auth("Bearer k1"), b"1", &d).unwrap().key);
    }

    #[test]
    fn skip_and_no_ttl_mean_no_caching() {
        let skip = Directives {
            skip_cache: true,
            ..directives()
        };
        assert!(plan_for("a", &HeaderMap::new(), b"", &skip).is_none());
        let plan = CachePlan::new(
            &GatewaySettings::default(),
            &directives(),
            &CacheRequest {
                account: "a",
                gateway: "g",
                provider: "openai",
                path: "/x",
                query: None,
                method: &Method::POST,
                headers: &HeaderMap::new(),
                body: b"",
            },
        );
        assert!(plan.is_none(), "no gateway TTL and no opt-in");
    }

    #[test]
    fn event_streams_replay_event_by_event() {
        let entry = CacheEntry {
            status: 200,
            content_type: Some("text/event-stream".into()),
            body: Bytes::from_static(b"data: 1\n\ndata: 2\n\ntail"),
            expires_at_ms: i64::MAX,
        };
        assert_eq!(first_event_len(&entry.body), Some(9));
        let _ = replay(&entry);
    }
}
