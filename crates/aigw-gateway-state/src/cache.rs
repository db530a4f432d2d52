//! A byte-bounded, least-recently-used cache of upstream responses with per-entry expiry.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Bytes charged per entry on top of its body and content type (map slots, order index).
const ENTRY_OVERHEAD: usize = 128;

/// A cache key: a digest of everything that makes two requests the same request (the edge
/// derives it; tenants and credentials are part of it, so they never share entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key from its 32 bytes on the wire; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

/// One cached response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The upstream's status code.
    pub status: u16,
    /// The upstream's `Content-Type`, replayed with the body.
    pub content_type: Option<String>,
    /// The whole response body as the upstream sent it (an SSE stream included).
    pub body: Bytes,
    /// When the entry stops being served (Unix ms).
    pub expires_at_ms: i64,
}

impl CacheEntry {
    fn weight(&self) -> usize {
        self.body.len() + self.content_type.as_ref().map_or(0, String::len) + ENTRY_OVERHEAD
    }
}

/// Cached responses under a byte budget: the least recently used go first when it is
/// exceeded, expired ones when they are next looked up.
#[derive(Debug)]
pub struct ResponseCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<CacheKey, Slot>,
    /// Use tick → key, oldest first.
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
    bytes: usize,
}

#[derive(Debug)]
struct Slot {
    entry: Arc<CacheEntry>,
    tick: u64,
}

impl Inner {
    fn touch(&mut self, key: CacheKey) -> Option<Arc<CacheEntry>> {
        self.tick += 1;
        let tick = self.tick;
        let slot = self.entries.get_mut(&key)?;
        self.order.remove(&slot.tick);
        slot.tick = tick;
        self.order.insert(tick, key);
        Some(slot.entry.clone())
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some(slot) = self.entries.remove(key) {
            self.order.remove(&slot.tick);
            self.bytes -= slot.entry.weight();
        }
    }
}

impl ResponseCache {
    /// A cache holding at most `capacity` bytes (bodies plus a fixed overhead per entry).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::default(),
        }
    }

    /// The largest entry accepted: a quarter of the budget, so one response cannot flush
    /// everything else.
    pub fn max_entry_bytes(&self) -> usize {
        self.capacity / 4
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live entry under `key` at `now_ms` (an expired one is dropped).
    pub fn get(&self, key: &CacheKey, now_ms: i64) -> Option<Arc<CacheEntry>> {
        let mut inner = self.lock();
        let entry = inner.touch(*key)?;
        if entry.expires_at_ms <= now_ms {
            inner.remove(key);
            return None;
        }
        Some(entry)
    }

    /// Store `entry` under `key`, evicting the least recently used as needed; `false` (and
    /// nothing stored) when the entry is larger than [`ResponseCache::max_entry_bytes`].
    pub fn put(&self, key: CacheKey, entry: CacheEntry) -> bool {
        let weight = entry.weight();
        if weight > self.max_entry_bytes() {
            return false;
        }
        let mut inner = self.lock();
        inner.remove(&key);
        while inner.bytes + weight > self.capacity {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            if let Some(slot) = inner.entries.remove(&oldest) {
                inner.bytes -= slot.entry.weight();
            }
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.order.insert(tick, key);
        inner.entries.insert(
            key,
            Slot {
                entry: Arc::new(entry),
                tick,
            },
        );
        inner.bytes += weight;
        true
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged for the entries held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    fn entry(body: &'static str, expires_at_ms: i64) -> CacheEntry {
        CacheEntry {
            status: 200,
            content_type: Some("application/json".into()),
            body: Bytes::from_static(body.as_bytes()),
            expires_at_ms,
        }
    }

    #[test]
    fn entries_are_served_until_they_expire() {
        let cache = ResponseCache::new(1 << 20);
        assert!(cache.put(key(1), entry("a", 1_000)));
        assert_eq!(cache.get(&key(1), 999).unwrap().body, "a");
        assert!(cache.get(&key(1), 1_000).is_none(), "expired at its time");
        assert!(cache.is_empty(), "an expired entry is dropped when seen");
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn the_least_recently_used_are_evicted_to_stay_within_budget() {
        let one = entry("x", i64::MAX).weight();
        let cache = ResponseCache::new(one * 4);
        for n in 0..3 {
            assert!(cache.put(key(n), entry("x", i64::MAX)));
        }
        // Use 0, so 1 is now the least recently used.
        assert!(cache.get(&key(0), 0).is_some());
        assert!(cache.put(key(3), entry("x", i64::MAX)));
        assert!(cache.put(key(4), entry("x", i64::MAX)));
        assert_eq!(cache.len(), 4);
        assert!(
            cache.get(&key(1), 0).is_none(),
            "least recently used went first"
        );
        for n in [0, 2, 3, 4] {
            assert!(cache.get(&key(n), 0).is_some(), "{n} kept");
        }
        assert!(cache.bytes() <= one * 4);
    }

    #[test]
    fn replacing_an_entry_recharges_it_and_oversized_ones_are_refused() {
        let cache = ResponseCache::new(4 * 1024);
        assert!(cache.put(key(1), entry("short", i64::MAX)));
        let before = cache.bytes();
        assert!(cache.put(key(1), entry("a longer body", i64::MAX)));
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache.bytes(),
            before + "a longer body".len() - "short".len()
        );
        let big = CacheEntry {
            body: Bytes::from(vec![0u8; 2048]),
            ..entry("", i64::MAX)
        };
        assert!(!cache.put(key(2), big), "more than a quarter of the budget");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn keys_come_from_exactly_32_bytes() {
        assert_eq!(CacheKey::from_slice(&[7; 32]), Some(key(7)));
        assert_eq!(CacheKey::from_slice(&[7; 31]), None);
    }
}
