//! Micro-benchmark of the log index's apply step (`aigw_logindex`): one Raft entry's `Insert`
//! of a batch of rows, decoded and written to a sled tree, as a shard applies it.
//!
//! The rows look like the load bench's: one gateway, a small chat completion each, bodies in a
//! pack, ids arriving in order about 20 to a millisecond (about 20k logs/s).
//!
//! `cargo bench -p aigw-benches --bench logindex` (add `-- --quick` for a fast run).

use std::hint::black_box;

use aigw_logindex::LogIndex;
use aigw_logindex::command::{Command, Insert, kind::Kind};
use aigw_proto::shard::{BodyLocation, LogRecord, Outcome};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use ulid::Ulid;

/// Rows per command, as the shipper batches them under load.
const ROWS: u64 = 1024;
/// Rows created in one millisecond.
const ROWS_PER_MS: u64 = 20;
/// When the first row was created (Unix ms).
const BASE_MS: u64 = 1_750_000_000_000;

/// Row `n` of the stream, in the shape the edge ships for a small chat completion.
fn row(n: u64) -> LogRecord {
    let created = BASE_MS + n / ROWS_PER_MS;
    LogRecord {
        id: Ulid::from_parts(created, u128::from(n) * 0x9E37_79B9)
            .to_bytes()
            .to_vec()
            .into(),
        created_at_ms: created as i64,
        account_id: "acct-bench".into(),
        gateway_id: "default".into(),
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        model_type: "chat".into(),
        path: "/chat/completions".into(),
        request_type: "provider".into(),
        method: "POST".into(),
        status_code: 200,
        success: true,
        outcome: Outcome::Completed.into(),
        duration_ms: 2,
        time_to_first_byte_ms: Some(1),
        tokens_in: Some(12),
        tokens_out: Some(9),
        cost: Some(0.000_007_2),
        request_content_type: Some("application/json".into()),
        response_content_type: Some("application/json".into()),
        request_size: 120,
        response_size: 330,
        user_agent: Some("wrk".into()),
        authentication: true,
        payload_collected: true,
        bodies: Some(BodyLocation {
            pack: n / ROWS,
            offset: (n % ROWS) * 200,
            request_len: 80,
            response_len: 120,
        }),
        ..Default::default()
    }
}

/// The encoded `Insert` of rows `first..first + ROWS`, as it sits in a Raft entry.
fn insert_command(first: u64) -> Vec<u8> {
    Command {
        kind: Some(Kind::Insert(Insert {
            rows: (first..first + ROWS).map(row).collect(),
            default_max_rows: 0,
        })),
    }
    .encode_to_vec()
}

fn bench_insert(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = sled::open(dir.path()).expect("a sled db");
    let index = LogIndex::open(db.open_tree("shard").expect("a tree")).expect("an index");
    let mut group = c.benchmark_group("logindex");
    group.throughput(Throughput::Elements(ROWS));
    let mut next = 0;
    group.bench_function("apply_insert_1024_rows", |b| {
        b.iter_batched(
            || {
                let command = insert_command(next);
                next += ROWS;
                command
            },
            |command| black_box(index.apply_encoded(&command).expect("applied")),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_insert);
criterion_main!(benches);
