//! Micro-benchmarks of the soft gateway state (`aigw_gateway_state`): response-cache lookups
//! and stores, and rate-limit leases.
//!
//! `cargo bench -p aigw-benches --bench gateway_state` (add `-- --quick` for a fast run).

use std::hint::black_box;

use aigw_gateway_state::{CacheEntry, CacheKey, RateBook, RatePolicy, ResponseCache, Technique};
use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// Entries in the cache under test.
const ENTRIES: u64 = 10_000;
/// Body bytes of each entry.
const BODY: usize = 1024;
/// A time the entries never expire by, and the leases are taken at (Unix ms).
const NOW_MS: i64 = 1_750_000_000_000;

fn key(n: u64) -> CacheKey {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&n.to_le_bytes());
    // Spread the rest as a digest would be.
    key[8..16].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    CacheKey(key)
}

fn entry(body: &Bytes) -> CacheEntry {
    CacheEntry {
        status: 200,
        content_type: Some("application/json".to_owned()),
        body: body.clone(),
        expires_at_ms: i64::MAX,
    }
}

/// A cache holding exactly [`ENTRIES`] entries of [`BODY`] bytes, full to its byte budget.
fn full_cache(body: &Bytes) -> ResponseCache {
    let probe = ResponseCache::new(usize::MAX);
    probe.put(key(0), entry(body));
    let cache = ResponseCache::new(probe.bytes() * ENTRIES as usize);
    for n in 0..ENTRIES {
        assert!(cache.put(key(n), entry(body)));
    }
    assert_eq!(cache.len() as u64, ENTRIES);
    cache
}

fn bench_cache(c: &mut Criterion) {
    let body = Bytes::from(vec![b'x'; BODY]);
    let mut group = c.benchmark_group("response_cache");
    group.throughput(Throughput::Elements(1));

    let cache = full_cache(&body);
    let mut n = 0u64;
    group.bench_function("get_hit_10k_x_1KiB", |b| {
        b.iter(|| {
            n = (n + 1) % ENTRIES;
            black_box(cache.get(&key(n), NOW_MS)).expect("a hit")
        });
    });

    // Every new key evicts the least recently used entry to stay within the budget.
    let mut next = ENTRIES;
    group.bench_function("put_evicting_10k_x_1KiB", |b| {
        b.iter_batched(
            || {
                next += 1;
                (key(next), entry(&body))
            },
            |(k, e)| black_box(cache.put(k, e)),
            BatchSize::SmallInput,
        );
    });
    assert_eq!(cache.len() as u64, ENTRIES, "each put evicted one entry");
    group.finish();
}

fn bench_rate(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_book");
    group.throughput(Throughput::Elements(1));
    for (name, technique) in [
        ("lease_fixed", Technique::Fixed),
        ("lease_sliding", Technique::Sliding),
    ] {
        let book = RateBook::default();
        let policy = RatePolicy {
            limit: u64::MAX / 2,
            interval_ms: 60_000,
            technique,
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let lease = book.lease("account", "gateway", black_box(policy), 1, NOW_MS);
                black_box(lease.granted)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_cache, bench_rate);
criterion_main!(benches);
