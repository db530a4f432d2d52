//! The log index against a brute-force oracle, plus updates, deletes and snapshots.

use aigw_logindex::command::{
    Command, Delete, DeleteGateway, Insert, SetQuota, Update, kind::Kind,
};
use aigw_logindex::keys::Field;
use aigw_logindex::{CompiledQuery, LogIndex, QueryError};
use aigw_proto::admin::Quota;
use aigw_proto::shard::{
    BodyLocation, Filter, FilterOperator, FilterValue, LogQuery, LogRecord, MetadataEntry, OrderBy,
    filter_value, metadata_entry,
};
use ulid::Ulid;

fn open() -> (tempfile::TempDir, LogIndex) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    (
        dir,
        LogIndex::open(db.open_tree("shard-0").unwrap()).unwrap(),
    )
}

const MODELS: [&str; 3] = ["gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-8b"];
const PROVIDERS: [&str; 3] = ["openai", "anthropic", "workers-ai"];

/// Rows whose bodies share one pack in [`row`].
const ROWS_PER_PACK: u64 = 10;

/// Where [`row`] `i` keeps its bodies: pack `i / 10`, 100 bytes per row.
fn bodies(i: u64) -> BodyLocation {
    BodyLocation {
        pack: i / ROWS_PER_PACK,
        offset: (i % ROWS_PER_PACK) * 100,
        request_len: 60,
        response_len: 40,
    }
}

/// Rows [`row`] creates per millisecond: enough that a millisecond's bucket of rows spans
/// more than one chunk, and that inserts of consecutive ranges of rows share buckets.
const ROWS_PER_MS: u64 = 48;

/// When [`row`] 0 was created (Unix ms).
const BASE_MS: u64 = 1_700_000_000_000;

/// A deterministic row `i` of `account`/`gateway`, created at `BASE_MS + i / ROWS_PER_MS`.
fn row(account: &str, gateway: &str, i: u64) -> LogRecord {
    row_created_at(account, gateway, i, BASE_MS + i / ROWS_PER_MS)
}

/// [`row`] `i`, created at `created` (Unix ms).
fn row_created_at(account: &str, gateway: &str, i: u64, created: u64) -> LogRecord {
    let k = (i % 3) as usize;
    LogRecord {
        id: Ulid::from_parts(created, u128::from(i))
            .to_bytes()
            .to_vec()
            .into(),
        created_at_ms: created as i64,
        account_id: account.into(),
        gateway_id: gateway.into(),
        provider: PROVIDERS[k].into(),
        model: MODELS[k].into(),
        model_type: "chat".into(),
        path: "/chat/completions".into(),
        request_type: "provider".into(),
        status_code: if i.is_multiple_of(7) { 500 } else { 200 },
        success: !i.is_multiple_of(7),
        cached: i.is_multiple_of(11),
        tokens_in: Some(i % 50),
        tokens_out: Some(10),
        cost: Some((i % 13) as f64 * 0.001),
        duration_ms: i % 100,
        event_id: i.is_multiple_of(5).then(|| format!("evt-{i}")),
        metadata: vec![MetadataEntry {
            key: "user".into(),
            value: Some(metadata_entry::Value::Text(format!("u{}", i % 4))),
        }],
        bodies: Some(bodies(i)),
        ..Default::default()
    }
}

fn insert(index: &LogIndex, rows: Vec<LogRecord>) -> u64 {
    index
        .apply(Command {
            kind: Some(Kind::Insert(Insert {
                rows,
                ..Insert::default()
            })),
        })
        .unwrap()
        .affected
}

fn text(s: &str) -> FilterValue {
    FilterValue {
        kind: Some(filter_value::Kind::Text(s.into())),
    }
}
fn num(n: f64) -> FilterValue {
    FilterValue {
        kind: Some(filter_value::Kind::Number(n)),
    }
}
fn flag(b: bool) -> FilterValue {
    FilterValue {
        kind: Some(filter_value::Kind::Flag(b)),
    }
}
fn filter(key: &str, op: FilterOperator, values: Vec<FilterValue>) -> Filter {
    Filter {
        key: key.into(),
        operator: op as i32,
        values,
    }
}

fn query(filters: Vec<Filter>) -> LogQuery {
    LogQuery {
        account_id: "acct".into(),
        gateway_id: "gw".into(),
        filters,
        ..Default::default()
    }
}

fn ids(rows: &[LogRecord]) -> Vec<Vec<u8>> {
    rows.iter().map(|r| r.id.to_vec()).collect()
}

/// Every match of `q`, newest first, computed naively over `all`.
fn oracle(all: &[LogRecord], keep: impl Fn(&LogRecord) -> bool) -> Vec<Vec<u8>> {
    let mut m: Vec<&LogRecord> = all.iter().filter(|r| keep(r)).collect();
    m.sort_by(|a, b| b.id.cmp(&a.id));
    m.into_iter().map(|r| r.id.to_vec()).collect()
}

fn run(index: &LogIndex, q: LogQuery, page: u32, per_page: u32) -> (Vec<Vec<u8>>, u64) {
    let compiled = CompiledQuery::compile(&q).unwrap();
    let page = index.list(&compiled, page, per_page).unwrap();
    (ids(&page.rows), page.total)
}

/// A row predicate the oracle evaluates.
type Predicate = Box<dyn Fn(&LogRecord) -> bool>;

#[test]
fn queries_match_a_brute_force_oracle() {
    let (_dir, index) = open();
    let all: Vec<LogRecord> = (0..600).map(|i| row("acct", "gw", i)).collect();
    assert_eq!(insert(&index, all[..300].to_vec()), 300);
    assert_eq!(insert(&index, all[300..].to_vec()), 300);
    // Another tenant with the same gateway name and another gateway of the same account.
    insert(&index, (0..50).map(|i| row("other", "gw", i)).collect());
    insert(
        &index,
        (0..50).map(|i| row("acct", "gw2", 1000 + i)).collect(),
    );

    use FilterOperator::*;
    let cases: Vec<(Vec<Filter>, Predicate)> = vec![
        (vec![], Box::new(|_| true)),
        (
            vec![filter("model", Eq, vec![text("gpt-4o-mini")])],
            Box::new(|r| r.model == "gpt-4o-mini"),
        ),
        (
            vec![filter(
                "model",
                Eq,
                vec![text("gpt-4o-mini"), text("llama-3.1-8b")],
            )],
            Box::new(|r| r.model != "claude-3-5-haiku"),
        ),
        (
            vec![filter("provider", Neq, vec![text("openai")])],
            Box::new(|r| r.provider != "openai"),
        ),
        (
            vec![filter("success", Eq, vec![flag(false)])],
            Box::new(|r| !r.success),
        ),
        (
            vec![filter("success", Eq, vec![text("true")])],
            Box::new(|r| r.success),
        ),
        (
            vec![filter("cached", Eq, vec![flag(true)])],
            Box::new(|r| r.cached),
        ),
        (
            vec![filter("event_id", Eq, vec![text("evt-250")])],
            Box::new(|r| r.event_id.as_deref() == Some("evt-250")),
        ),
        (
            vec![filter("metadata.value", Eq, vec![text("u3")])],
            Box::new(|r| {
                r.id.len() == 16
                    && {
                        matches!(&r.metadata[0].value, Some(metadata_entry::Value::Text(v)) if v == "u3")
                    }
            }),
        ),
        (
            vec![filter("metadata.key", Eq, vec![text("user")])],
            Box::new(|_| true),
        ),
        (
            vec![filter("model", Contains, vec![text("CLAUDE")])],
            Box::new(|r| r.model.contains("claude")),
        ),
        (
            vec![filter("cost", Gt, vec![num(0.01)])],
            Box::new(|r| r.cost.unwrap() > 0.01),
        ),
        (
            vec![filter("tokens_in", Lt, vec![num(5.0)])],
            Box::new(|r| r.tokens_in.unwrap() < 5),
        ),
        (
            vec![filter("tokens", Gt, vec![num(55.0)])],
            Box::new(|r| r.tokens_in.unwrap() + 10 > 55),
        ),
        (
            vec![filter("duration", Eq, vec![num(42.0)])],
            Box::new(|r| r.duration_ms == 42),
        ),
        (
            vec![filter("status_code", Eq, vec![num(500.0)])],
            Box::new(|r| r.status_code == 500),
        ),
        (
            vec![
                filter("created_at", Gt, vec![num((BASE_MS + 2) as f64)]),
                filter("created_at", Lt, vec![num((BASE_MS + 9) as f64)]),
            ],
            Box::new(|r| {
                r.created_at_ms > (BASE_MS + 2) as i64 && r.created_at_ms < (BASE_MS + 9) as i64
            }),
        ),
        (
            vec![
                filter("model", Eq, vec![text("gpt-4o-mini")]),
                filter("success", Eq, vec![flag(false)]),
            ],
            Box::new(|r| r.model == "gpt-4o-mini" && !r.success),
        ),
        (
            vec![filter(
                "feedback",
                Eq,
                vec![FilterValue {
                    kind: Some(filter_value::Kind::Null(true)),
                }],
            )],
            Box::new(|r| r.feedback.is_none()),
        ),
    ];
    let mine: Vec<LogRecord> = all.clone();
    for (n, (filters, keep)) in cases.into_iter().enumerate() {
        let expected = oracle(&mine, &keep);
        let (got, total) = run(&index, query(filters.clone()), 1, 1000);
        assert_eq!(got, expected, "case {n}: {filters:?}");
        assert_eq!(total, expected.len() as u64, "case {n} total");
        // Page 2 of 7 is the oracle's slice.
        let (page2, total2) = run(&index, query(filters.clone()), 2, 7);
        let slice: Vec<_> = expected.iter().skip(7).take(7).cloned().collect();
        assert_eq!(page2, slice, "case {n} page 2");
        assert_eq!(total2, expected.len() as u64);
        // Ascending order is the reverse.
        let mut asc = query(filters.clone());
        asc.ascending = true;
        let (got_asc, _) = run(&index, asc, 1, 1000);
        let mut rev = expected.clone();
        rev.reverse();
        assert_eq!(got_asc, rev, "case {n} ascending");
    }

    // Search looks at model, provider, event id and metadata.
    let mut q = query(vec![]);
    q.search = Some("EVT-25".into());
    let (got, _) = run(&index, q, 1, 1000);
    assert_eq!(
        got,
        oracle(&mine, |r| r
            .event_id
            .as_deref()
            .is_some_and(|e| e.starts_with("evt-25")))
    );

    // Ordering by cost: largest first, ties newest first.
    let mut q = query(vec![]);
    q.order_by = OrderBy::Cost as i32;
    let (got, total) = run(&index, q, 1, 20);
    let mut by_cost = mine.clone();
    by_cost.sort_by(|a, b| {
        b.cost
            .unwrap()
            .total_cmp(&a.cost.unwrap())
            .then(b.id.cmp(&a.id))
    });
    assert_eq!(got, ids(&by_cost[..20]));
    assert_eq!(total, 600);

    // Counters.
    assert_eq!(index.count("acct", "gw", Field::All, b"").unwrap(), 600);
    assert_eq!(
        index
            .count("acct", "gw", Field::Model, b"gpt-4o-mini")
            .unwrap(),
        200
    );
    assert_eq!(index.count("other", "gw", Field::All, b"").unwrap(), 50);
}

#[test]
fn inserts_are_idempotent_and_rows_round_trip() {
    let (_dir, index) = open();
    let rows: Vec<LogRecord> = (0..10).map(|i| row("acct", "gw", i)).collect();
    assert_eq!(insert(&index, rows.clone()), 10);
    assert_eq!(
        insert(&index, rows.clone()),
        0,
        "replayed insert changes nothing"
    );
    let mut dup = rows[..2].to_vec();
    dup.extend(rows[..2].iter().cloned());
    assert_eq!(insert(&index, dup), 0);
    assert_eq!(index.count("acct", "gw", Field::All, b"").unwrap(), 10);
    let id = Ulid::from_bytes(rows[3].id.as_ref().try_into().unwrap());
    assert_eq!(
        index.get("acct", "gw", id).unwrap().as_ref(),
        Some(&rows[3])
    );
    assert_eq!(
        index.get("other", "gw", id).unwrap(),
        None,
        "another tenant cannot read it"
    );
}

#[test]
fn updates_move_index_entries() {
    let (_dir, index) = open();
    let rows: Vec<LogRecord> = (1..=4).map(|i| row("acct", "gw", i)).collect();
    insert(&index, rows.clone());
    let applied = index
        .apply(Command {
            kind: Some(Kind::Update(Update {
                account_id: "acct".into(),
                gateway_id: "gw".into(),
                id: rows[1].id.to_vec(),
                feedback: Some(1),
                score: Some(0.5),
                replace_metadata: true,
                metadata: vec![MetadataEntry {
                    key: "team".into(),
                    value: Some(metadata_entry::Value::Text("red".into())),
                }],
            })),
        })
        .unwrap();
    assert_eq!(applied.affected, 1);
    let updated = applied.row.unwrap();
    assert_eq!((updated.feedback, updated.score), (Some(1), Some(0.5)));
    let (got, total) = run(
        &index,
        query(vec![filter("feedback", FilterOperator::Eq, vec![num(1.0)])]),
        1,
        10,
    );
    assert_eq!((got, total), (vec![rows[1].id.to_vec()], 1));
    let (got, _) = run(
        &index,
        query(vec![filter(
            "metadata.value",
            FilterOperator::Eq,
            vec![text("red")],
        )]),
        1,
        10,
    );
    assert_eq!(got, vec![rows[1].id.to_vec()]);
    let old_value = match &rows[1].metadata[0].value {
        Some(metadata_entry::Value::Text(v)) => v.clone(),
        _ => unreachable!(),
    };
    let (got, _) = run(
        &index,
        query(vec![filter(
            "metadata.value",
            FilterOperator::Eq,
            vec![text(&old_value)],
        )]),
        1,
        10,
    );
    assert!(
        !got.contains(&rows[1].id.to_vec()),
        "old metadata no longer matches"
    );
    // Updating a missing row affects nothing.
    let missing = index
        .apply(Command {
            kind: Some(Kind::Update(Update {
                account_id: "other".into(),
                gateway_id: "gw".into(),
                id: rows[1].id.to_vec(),
                feedback: Some(-1),
                ..Default::default()
            })),
        })
        .unwrap();
    assert_eq!(missing.affected, 0);
}

#[test]
fn deletes_remove_rows_indexes_and_counters_and_report_dead_bodies() {
    let (_dir, index) = open();
    let rows: Vec<LogRecord> = (0..30).map(|i| row("acct", "gw", i)).collect();
    insert(&index, rows.clone());
    insert(&index, (0..5).map(|i| row("acct", "keep", i)).collect());
    let applied = index
        .apply(Command {
            kind: Some(Kind::Delete(Delete {
                account_id: "acct".into(),
                gateway_id: "gw".into(),
                ids: rows[..10].iter().map(|r| r.id.to_vec()).collect(),
            })),
        })
        .unwrap();
    assert_eq!(applied.affected, 10);
    assert_eq!(
        applied.deleted_packs,
        ["acct/gw/0000000000000000.pack"],
        "rows 0..10 were all of pack 0"
    );
    assert!(applied.erased.is_empty(), "{:?}", applied.erased);
    assert_eq!(index.count("acct", "gw", Field::All, b"").unwrap(), 20);
    let (_, total) = run(
        &index,
        query(vec![filter(
            "model",
            FilterOperator::Eq,
            vec![text("gpt-4o-mini")],
        )]),
        1,
        50,
    );
    assert_eq!(
        total,
        rows[10..]
            .iter()
            .filter(|r| r.model == "gpt-4o-mini")
            .count() as u64
    );

    // Two rows of pack 1: the pack stays for its other rows, only their frames are erased.
    let applied = index
        .apply(Command {
            kind: Some(Kind::Delete(Delete {
                account_id: "acct".into(),
                gateway_id: "gw".into(),
                ids: ids(&rows[12..14]),
            })),
        })
        .unwrap();
    assert_eq!(applied.affected, 2);
    assert!(applied.deleted_packs.is_empty());
    let erased: Vec<(&str, u64, u64)> = applied
        .erased
        .iter()
        .map(|d| (d.pack_key.as_str(), d.offset, d.len))
        .collect();
    assert_eq!(
        erased,
        [
            ("acct/gw/0000000000000001.pack", 200, 100),
            ("acct/gw/0000000000000001.pack", 300, 100)
        ]
    );

    let applied = index
        .apply(Command {
            kind: Some(Kind::DeleteGateway(DeleteGateway {
                account_id: "acct".into(),
                gateway_id: "gw".into(),
                deleted_at_ms: (BASE_MS + 100) as i64,
            })),
        })
        .unwrap();
    assert_eq!(applied.affected, 18);
    let mut packs = applied.deleted_packs.clone();
    packs.sort();
    assert_eq!(
        packs,
        [
            "acct/gw/0000000000000001.pack",
            "acct/gw/0000000000000002.pack"
        ]
    );
    assert!(
        index.gateway_is_empty("acct", "gw").unwrap(),
        "no rows, index entries, counters or packs left"
    );
    assert_eq!(
        index.count("acct", "keep", Field::All, b"").unwrap(),
        5,
        "other gateways untouched"
    );
}

#[test]
fn snapshots_restore_rows_and_rebuild_indexes() {
    let (_dir, source) = open();
    insert(&source, (0..200).map(|i| row("acct", "gw", i)).collect());
    let snapshot = source.snapshot().unwrap();
    let (_dir2, target) = open();
    insert(&target, vec![row("acct", "stale", 1)]);
    target.restore(&snapshot).unwrap();
    assert_eq!(
        target.count("acct", "stale", Field::All, b"").unwrap(),
        0,
        "restore replaces state"
    );
    for filters in [
        vec![],
        vec![filter(
            "model",
            FilterOperator::Eq,
            vec![text("llama-3.1-8b")],
        )],
    ] {
        assert_eq!(
            run(&source, query(filters.clone()), 1, 500),
            run(&target, query(filters), 1, 500)
        );
    }
    assert_eq!(source.footprint().unwrap(), target.footprint().unwrap());
    assert!(
        target.restore(&snapshot[..snapshot.len() - 3]).is_err(),
        "a truncated snapshot is refused"
    );
}

#[test]
fn a_fuzzy_snapshot_plus_replay_equals_the_live_state() {
    let (_dir, live) = open();
    let batches: Vec<Vec<LogRecord>> = (0..40)
        .map(|b| (0..50).map(|i| row("acct", "gw", b * 50 + i)).collect())
        .collect();
    insert(&live, batches[0].clone());
    // Take the snapshot while other batches are being applied; remember what was applied before.
    let snapshot = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for batch in &batches[1..] {
                insert(&live, batch.clone());
            }
        });
        let snap = live.snapshot().unwrap();
        writer.join().unwrap();
        snap
    });
    // Deletes and updates after the snapshot are part of the replayed tail too.
    let delete = Command {
        kind: Some(Kind::Delete(Delete {
            account_id: "acct".into(),
            gateway_id: "gw".into(),
            ids: batches[3].iter().map(|r| r.id.to_vec()).collect(),
        })),
    };
    live.apply(delete.clone()).unwrap();

    let (_dir2, follower) = open();
    follower.restore(&snapshot).unwrap();
    for batch in &batches[1..] {
        insert(&follower, batch.clone());
    }
    follower.apply(delete).unwrap();
    assert_eq!(live.footprint().unwrap(), follower.footprint().unwrap());
    assert_eq!(
        run(&live, query(vec![]), 1, 5000),
        run(&follower, query(vec![]), 1, 5000)
    );
    assert_eq!(
        live.count("acct", "gw", Field::All, b"").unwrap(),
        follower.count("acct", "gw", Field::All, b"").unwrap()
    );
}

#[test]
fn invalid_queries_name_the_filter() {
    use FilterOperator::*;
    for (f, needle) in [
        (
            filter("nope", Eq, vec![text("x")]),
            "`nope`: unknown filter key",
        ),
        (
            filter("model", Lt, vec![text("x")]),
            "`model`: lt and gt need a numeric key",
        ),
        (
            filter("success", Contains, vec![flag(true)]),
            "`success`: only eq and neq",
        ),
        (
            filter("cost", Contains, vec![num(1.0)]),
            "`cost`: contains needs a text key",
        ),
        (
            filter("cost", Gt, vec![text("cheap")]),
            "`cost`: expected a number, got `cheap`",
        ),
        (
            filter("success", Eq, vec![text("yes")]),
            "`success`: expected true or false",
        ),
        (filter("model", Eq, vec![]), "at least one value"),
        (
            Filter {
                key: "model".into(),
                operator: 42,
                values: vec![text("x")],
            },
            "unknown operator",
        ),
    ] {
        let err: QueryError = CompiledQuery::compile(&query(vec![f])).unwrap_err();
        assert!(err.to_string().contains(needle), "{err} !~ {needle}");
    }
}

#[test]
fn names_are_not_stored_but_read_back() {
    use prost::Message;
    let (_dir, index) = open();
    let r = row("acct-with-a-long-name", "gateway", 1);
    let id = Ulid::from_bytes(r.id.as_ref().try_into().unwrap());
    insert(&index, vec![r.clone()]);
    assert_eq!(
        index.get("acct-with-a-long-name", "gateway", id).unwrap(),
        Some(r.clone())
    );
    assert_eq!(
        index.get("acct-with-a-long-nam", "egateway", id).unwrap(),
        None
    );
    let stored = index.footprint().unwrap().row_bytes as usize;
    let verbatim = r.encoded_len() - r.id.len() + 1 + 16 + 8;
    assert!(
        stored + 25 < verbatim,
        "names are not stored in rows: {stored} vs {verbatim}"
    );
}

#[test]
fn refused_and_duplicate_rows_report_their_packs_and_replays_report_nothing() {
    let (_dir, index) = open();
    let first: Vec<LogRecord> = (0..10).map(|i| row("acct", "gw", i)).collect();
    let applied = index
        .apply(Command {
            kind: Some(Kind::Insert(Insert {
                rows: first.clone(),
                ..Insert::default()
            })),
        })
        .unwrap();
    assert_eq!(applied.affected, 10);
    assert!(applied.deleted_packs.is_empty() && applied.erased.is_empty());

    // The same entry applied again (a replay after a crash) changes and reports nothing.
    let replay = index
        .apply(Command {
            kind: Some(Kind::Insert(Insert {
                rows: first.clone(),
                ..Insert::default()
            })),
        })
        .unwrap();
    assert_eq!(replay, Default::default());

    // A retried batch: the same rows with their bodies in a new pack, which nothing uses.
    let retried: Vec<LogRecord> = first
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.bodies.as_mut().unwrap().pack = 77;
            r
        })
        .collect();
    let applied = index
        .apply(Command {
            kind: Some(Kind::Insert(Insert {
                rows: retried,
                ..Insert::default()
            })),
        })
        .unwrap();
    assert_eq!(applied.affected, 0);
    assert_eq!(applied.deleted_packs, ["acct/gw/000000000000004d.pack"]);

    // Rows created before the gateway's deletion are refused with their bodies; a pack shared
    // with admitted rows stays, and the refused frames are erased.
    index
        .apply(Command {
            kind: Some(Kind::DeleteGateway(DeleteGateway {
                account_id: "acct".into(),
                gateway_id: "gw".into(),
                deleted_at_ms: (BASE_MS + 15) as i64,
            })),
        })
        .unwrap();
    let straddling: Vec<LogRecord> = (10..20)
        .map(|i| row_created_at("acct", "gw", i, BASE_MS + i))
        .collect();
    let applied = index
        .apply(Command {
            kind: Some(Kind::Insert(Insert {
                rows: straddling,
                ..Insert::default()
            })),
        })
        .unwrap();
    assert_eq!(applied.affected, 4, "rows 16..20 are after the deletion");
    assert!(applied.deleted_packs.is_empty());
    assert_eq!(applied.erased.len(), 6);
    assert!(
        applied
            .erased
            .iter()
            .all(|d| d.pack_key == "acct/gw/0000000000000001.pack")
    );
}

fn apply(index: &LogIndex, kind: Kind) -> aigw_logindex::command::Applied {
    index.apply(Command { kind: Some(kind) }).unwrap()
}

fn set_quota(index: &LogIndex, max_rows: u64, at_limit: bool, delete_oldest: bool) {
    apply(
        index,
        Kind::SetQuota(SetQuota {
            account_id: "acct".into(),
            gateway_id: "gw".into(),
            quota: Some(Quota {
                max_rows,
                at_limit,
                delete_oldest,
            }),
        }),
    );
}

fn insert_with_default(index: &LogIndex, rows: Vec<LogRecord>, default_max_rows: u64) -> u64 {
    apply(
        index,
        Kind::Insert(Insert {
            rows,
            default_max_rows,
        }),
    )
    .affected
}

#[test]
fn quotas_refuse_or_evict_the_oldest_and_count_both() {
    let (_dir, index) = open();
    let rows =
        |range: std::ops::Range<u64>| range.map(|i| row("acct", "gw", i)).collect::<Vec<_>>();
    // No quota yet: the proposer's default applies (one report's worth).
    assert_eq!(insert_with_default(&index, rows(0..15), 10), 10);
    let usage = index.usage("acct", "gw").unwrap();
    assert_eq!((usage.rows, usage.refused, usage.quota), (10, 5, None));

    // A quota that is not the limit refuses past it too (the account manager is late), but
    // never deletes.
    set_quota(&index, 12, false, true);
    let applied = apply(
        &index,
        Kind::Insert(Insert {
            rows: rows(15..20),
            default_max_rows: 10,
        }),
    );
    assert_eq!(
        (applied.affected, applied.refused, applied.evicted),
        (2, 3, 0)
    );

    // DELETE_OLDEST at the limit: every new row evicts the oldest, bodies included.
    set_quota(&index, 12, true, true);
    let evicting = |range| {
        apply(
            &index,
            Kind::Insert(Insert {
                rows: rows(range),
                default_max_rows: 10,
            }),
        )
    };
    let applied = evicting(20..32);
    assert_eq!(
        (applied.affected, applied.refused, applied.evicted),
        (12, 0, 12)
    );
    // Packs 0 and 1 lost every row: deleted.
    assert_eq!(applied.deleted_packs.len(), 2, "{applied:?}");
    let applied = evicting(32..35);
    assert_eq!(
        (applied.affected, applied.refused, applied.evicted),
        (3, 0, 3)
    );
    // Pack 2 keeps rows: the evicted rows' frames are erased in place.
    assert_eq!(applied.erased.len(), 3, "{applied:?}");
    let usage = index.usage("acct", "gw").unwrap();
    assert_eq!((usage.rows, usage.refused, usage.evicted), (12, 8, 15));
    let (kept, total) = run(&index, query(vec![]), 1, 100);
    assert_eq!(total, 12);
    let mut newest: Vec<Vec<u8>> = ids(&rows(23..35));
    newest.reverse();
    assert_eq!(kept, newest, "the newest rows stay");
    // A batch larger than the limit (a backlog after a failover): its newest rows stay.
    let applied = evicting(35..55);
    assert_eq!(
        (applied.affected, applied.refused, applied.evicted),
        (12, 0, 20)
    );
    let (kept, total) = run(&index, query(vec![]), 1, 100);
    assert_eq!(total, 12);
    let mut newest: Vec<Vec<u8>> = ids(&rows(43..55));
    newest.reverse();
    assert_eq!(kept, newest, "the newest rows of the batch stay");
    // Rows older than every row kept (a batch retried after its rows were evicted) are
    // evicted on arrival: they never push newer rows out.
    let applied = evicting(0..3);
    assert_eq!(
        (applied.affected, applied.refused, applied.evicted),
        (0, 0, 3)
    );
    assert_eq!(run(&index, query(vec![]), 1, 100).0, newest);

    // A limit lowered below what the gateway holds trims the oldest rows at once.
    let applied = apply(
        &index,
        Kind::SetQuota(SetQuota {
            account_id: "acct".into(),
            gateway_id: "gw".into(),
            quota: Some(Quota {
                max_rows: 10,
                at_limit: true,
                delete_oldest: true,
            }),
        }),
    );
    assert_eq!(applied.evicted, 2);
    assert!(!applied.erased.is_empty() || !applied.deleted_packs.is_empty());
    let mut newest: Vec<Vec<u8>> = ids(&rows(45..55));
    newest.reverse();
    assert_eq!(run(&index, query(vec![]), 1, 100).0, newest);

    // STOP_INSERTING at the limit: refused and counted; a snapshot keeps quota and counts.
    set_quota(&index, 10, true, false);
    assert_eq!(insert(&index, rows(55..60)), 0);
    let (_d2, restored) = open();
    restored.restore(&index.snapshot().unwrap()).unwrap();
    assert_eq!(
        restored.usage("acct", "gw").unwrap(),
        index.usage("acct", "gw").unwrap()
    );
    assert_eq!(restored.usage("acct", "gw").unwrap().refused, 13);
    assert_eq!(restored.usage("acct", "gw").unwrap().evicted, 40);

    // Deleting the gateway forgets its quota.
    apply(
        &index,
        Kind::DeleteGateway(DeleteGateway {
            account_id: "acct".into(),
            gateway_id: "gw".into(),
            deleted_at_ms: 0,
        }),
    );
    assert_eq!(index.usage("acct", "gw").unwrap(), Default::default());
}

/// Rows of one millisecond share a bucket of chunks; late rows land in the middle of a bucket,
/// and deletes empty chunks. Whatever the order of arrival, scans and counts match the oracle.
#[test]
fn rows_arriving_out_of_order_share_buckets_and_scan_in_id_order() {
    let (_dir, index) = open();
    let all: Vec<LogRecord> = (0..600).map(|i| row("acct", "gw", i)).collect();
    // A fixed permutation (7 is coprime with 600), inserted in uneven batches.
    let shuffled: Vec<LogRecord> = (0..600).map(|i| all[(i * 7) % 600].clone()).collect();
    let mut inserted = 0;
    for batch in shuffled.chunks(97) {
        inserted += insert(&index, batch.to_vec());
    }
    assert_eq!(inserted, 600);
    assert_eq!(index.footprint().unwrap().rows, 600);
    let by_model = |rows: &[LogRecord]| oracle(rows, |r| r.model == MODELS[1]);
    let check = |rows: &[LogRecord]| {
        assert_eq!(
            run(&index, query(vec![]), 1, 1000),
            (oracle(rows, |_| true), rows.len() as u64)
        );
        let model = query(vec![filter(
            "model",
            FilterOperator::Eq,
            vec![text(MODELS[1])],
        )]);
        let expected = by_model(rows);
        assert_eq!(run(&index, model.clone(), 1, 1000).0, expected);
        // Oldest first, and a page from the middle.
        let oldest_first = LogQuery {
            ascending: true,
            ..query(vec![])
        };
        let mut ascending = oracle(rows, |_| true);
        ascending.reverse();
        assert_eq!(run(&index, oldest_first, 1, 1000).0, ascending);
        let page = run(&index, model, 3, 20).0;
        assert_eq!(page, expected[40..60.min(expected.len())]);
        for r in rows.iter().step_by(37) {
            let id = Ulid::from_bytes(r.id.to_vec().try_into().unwrap());
            assert_eq!(index.get("acct", "gw", id).unwrap().as_ref(), Some(r));
        }
    };
    check(&all);

    // Delete every row whose index is not a multiple of 4, in two commands.
    let doomed: Vec<Vec<u8>> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 4 != 0)
        .map(|(_, r)| r.id.to_vec())
        .collect();
    for ids in doomed.chunks(doomed.len() / 2 + 1) {
        apply(
            &index,
            Kind::Delete(Delete {
                account_id: "acct".into(),
                gateway_id: "gw".into(),
                ids: ids.to_vec(),
            }),
        );
    }
    let kept: Vec<LogRecord> = all.iter().step_by(4).cloned().collect();
    check(&kept);
    assert_eq!(index.count("acct", "gw", Field::All, b"").unwrap(), 150);
    assert_eq!(index.footprint().unwrap().rows, 150);
}
