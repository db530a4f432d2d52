//! `storebench`: aigw's log-store bench (run by `make bench`, after `loadbench`).
//!
//! It builds the store in-process exactly as `aigw serve` does (`crates/aigw/src/allinone.rs`):
//! one sled `Db` → `aigw_raft::RaftNode` (node 1, an unused loopback port as its address — a
//! single-member group needs no gRPC server) → the shard group (group 1), a single-member Raft
//! group whose state machine is `aigw_shard::ShardApp` over `aigw_logindex::LogIndex` →
//! `aigw_shard::ShardService` with an `aigw_blob::FsBlobStore` at `<tmp>/blobs`. Every call
//! goes through the `aigw.shard.v1` service trait the edge's `ShardLogSink` and the management
//! API use, so the figures include Raft (append + fsync + apply), the blob store's durable
//! writes and the linearizability check of reads. Then it prints one line per figure with its
//! target and an `ok`/`MISS` mark. Figures are reported, never asserted: the exit status is 0
//! whatever the figures, and 1 only when the store misbehaved (an error, or a wrong answer).
//!
//! Phases (the issue's targets: all-in-one, 2 KiB bodies in the local blob store):
//!
//! 1. **Ingestion** — `STORE_BENCH_INGEST` logs (100,000) with ~2 KiB request and response
//!    bodies of realistic JSON, in batches of `STORE_BENCH_BATCH` (1024, the edge's default) from
//!    `STORE_BENCH_CONCURRENCY` (4) concurrent callers of `Shard::ingest`. Batches are built
//!    before the clock starts, as the edge's shipper hands them over → logs/s (target
//!    ≥ 20,000), MiB/s of bodies, batch latency p50/p99.
//! 2. **Top-up** to `STORE_BENCH_ROWS` (1,000,000) rows in the same gateway. Writing 1M × 4 KiB
//!    of bodies would need ~4 GB of disk, so the extra rows are ingested *without bodies*
//!    (`payload_collected = false`, as with `cf-aig-collect-log-payload: false`) through the same
//!    ingest path; the time it took is reported (this is ingestion minus the blob store).
//! 3. **List** — the 50 newest logs with one filter `model = X` (10 models, each ~10 % of the
//!    rows), `STORE_BENCH_LISTS` (2,000) times → p50/p99/max (target p99 ≤ 10 ms); the same
//!    without a filter; and, for information, a filter no index serves (`tokens_in gt 3000`),
//!    which scans the gateway (`STORE_BENCH_SCAN_LISTS`, 5 times). Every answer is checked: 50
//!    rows, exactly the newest matching ids in order, and the right `total_count`.
//! 4. **Get by id** — `STORE_BENCH_GETS` (10,000) random ids → p50/p99 (target ≤ 1 ms).
//! 5. **Footprint** — `LogIndex::footprint()` (logical bytes of keys + values: rows, secondary
//!    indexes, counters; bodies excluded) per log, measured after phase 1 (every row carries its
//!    body location) and at the full size (most rows without body keys) — target ≤ 400 B/log.
//!    For information: the sled directory on disk per row (with sled's own overhead), the Raft
//!    log's segment files per row (every entry: no snapshot is due yet) and the blob directory
//!    per ingested log.
//! 6. **Diagnostics** (`STORE_BENCH_DIAG`, on by default; information only) — the blob store's
//!    put rate alone, and `LogIndex::apply` alone (no Raft) on a fresh sled database, to show
//!    where ingestion time goes.
//!
//! Environment: the variables above, plus `STORE_BENCH_DIR` (where the temporary data directory
//! is made; default the system temp dir — it must be a real disk, not tmpfs, for fsync costs to
//! mean anything; a warning is printed on tmpfs) and `STORE_BENCH_KEEP=1` (keep the data
//! directory). `STORE_BENCH_ROWS=100000` makes a quick check (no top-up). With the defaults a
//! run takes about two to three minutes on 2 cores and needs ~3 GB of disk (sled ~1.8 GB, bodies
//! ~0.8 GB allocated).
//!
//! Besides the targets, the table shows process CPU per log for both ingestion runs (from
//! `/proc/self/stat`: it tells CPU-bound from waiting on fsync), where the bytes of one row
//! value go (body location, account and gateway ids), the logical size of each large sled tree, and
//! the zstd ratio of the bodies. List and get latencies are measured one call at a time on an
//! otherwise idle store.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aigw_benches::env::env_or;
use aigw_benches::procfs::{self, Pid};
use aigw_benches::stats::{Latencies, fmt_ms};
use aigw_blob::pack::PackWriter;
use aigw_blob::{BlobStore, Codec, FsBlobStore};
use aigw_logindex::command::{Command, Insert, kind::Kind as CommandKind};
use aigw_logindex::{Footprint, LogIndex};
use aigw_proto::shard::shard_server::Shard;
use aigw_proto::shard::{
    Filter, FilterOperator, FilterValue, GetLogRequest, IngestEntry, IngestRequest,
    ListLogsRequest, LogQuery, filter_value,
};
use aigw_raft::{GroupHandle, NodeConfig, RaftNode};
use aigw_shard::{ShardApp, ShardService};
use aigw_types::{LogRecord, Metadata, MetadataValue, RequestOutcome};
use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message;
use ulid::Ulid;

/// The shard group of the all-in-one process (as in `allinone.rs`).
const SHARD_GROUP: aigw_raft::GroupId = 1;
/// How long the single-member group may take to elect itself.
const ELECTION_WAIT: Duration = Duration::from_secs(15);
/// The account of every log: a Cloudflare-style 32-hex-digit id.
const ACCOUNT: &str = "3f0c2a9e5b7d4e1f8a6c0b2d9e4f7a1c";
/// The gateway of every log.
const GATEWAY: &str = "production";
/// Logs per page in the list phase.
const PER_PAGE: usize = 50;
/// `tokens_in gt` this for the filter that needs a scan (~25 % of the rows match).
const TOKENS_IN_THRESHOLD: u64 = 3000;
/// Body bytes the generator aims at per request and per response body.
const BODY_TARGET: usize = 2048;
/// Distinct bodies generated per model and kind; entries share them (each body is compressed
/// and stored on its own, so sharing does not make compression easier).
const BODIES_PER_MODEL: usize = 64;

/// The models logs are drawn from (uniformly), with their provider and upstream path.
const MODELS: [(&str, &str, &str); 10] = [
    ("gpt-4o-mini", "openai", "/chat/completions"),
    ("gpt-4o", "openai", "/chat/completions"),
    ("gpt-4.1-nano", "openai", "/chat/completions"),
    ("o3-mini", "openai", "/chat/completions"),
    ("claude-3-5-sonnet-20241022", "anthropic", "/v1/messages"),
    ("claude-3-5-haiku-20241022", "anthropic", "/v1/messages"),
    (
        "gemini-2.0-flash",
        "google-ai-studio",
        "/v1beta/models/gemini-2.0-flash:generateContent",
    ),
    (
        "@cf/meta/llama-3.1-8b-instruct",
        "workers-ai",
        "/@cf/meta/llama-3.1-8b-instruct",
    ),
    ("command-r-plus", "cohere", "/v2/chat"),
    ("mistral-large-latest", "mistral", "/v1/chat/completions"),
];

const USER_AGENTS: [&str; 4] = [
    "OpenAI/Python 1.54.3",
    "Anthropic/Python 0.39.0",
    "OpenAI/JS 4.73.0",
    "curl/8.5.0",
];

const WORDS: [&str; 96] = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "this",
    "are",
    "or",
    "from",
    "at",
    "which",
    "an",
    "but",
    "not",
    "have",
    "can",
    "request",
    "response",
    "gateway",
    "latency",
    "cache",
    "token",
    "model",
    "provider",
    "stream",
    "summary",
    "customer",
    "order",
    "invoice",
    "shipping",
    "refund",
    "account",
    "password",
    "database",
    "query",
    "index",
    "cluster",
    "replica",
    "leader",
    "network",
    "timeout",
    "retry",
    "budget",
    "forecast",
    "quarter",
    "revenue",
    "growth",
    "market",
    "product",
    "feature",
    "release",
    "deploy",
    "rollback",
    "incident",
    "postmortem",
    "analysis",
    "report",
    "table",
    "chart",
    "python",
    "function",
    "variable",
    "error",
    "exception",
    "compile",
    "benchmark",
    "throughput",
    "percentile",
    "distribution",
    "sample",
    "average",
    "median",
    "translate",
    "French",
    "German",
    "Spanish",
    "paragraph",
    "sentence",
    "explain",
    "simple",
    "detailed",
    "example",
    "however",
    "therefore",
    "because",
];

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("storebench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let settings = Settings::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the Tokio runtime")?;
    let mut report = runtime.block_on(bench(&settings))?;
    report.print(&settings);
    Ok(if report.wrong_answers.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

// ---------------------------------------------------------------------------------------------
// Settings

struct Settings {
    ingest: usize,
    rows: usize,
    concurrency: usize,
    batch: usize,
    lists: usize,
    scan_lists: usize,
    gets: usize,
    dir: PathBuf,
    keep: bool,
    diag: bool,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let ingest: usize = env_or("STORE_BENCH_INGEST", 100_000)?;
        let rows: usize = env_or("STORE_BENCH_ROWS", 1_000_000)?;
        let settings = Settings {
            ingest,
            rows: rows.max(ingest),
            concurrency: env_or("STORE_BENCH_CONCURRENCY", 4)?,
            batch: env_or("STORE_BENCH_BATCH", 1024)?,
            lists: env_or("STORE_BENCH_LISTS", 2000)?,
            scan_lists: env_or("STORE_BENCH_SCAN_LISTS", 5)?,
            gets: env_or("STORE_BENCH_GETS", 10_000)?,
            dir: std::env::var_os("STORE_BENCH_DIR")
                .filter(|d| !d.is_empty())
                .map_or_else(std::env::temp_dir, PathBuf::from),
            keep: env_or::<u8>("STORE_BENCH_KEEP", 0)? != 0,
            diag: env_or::<u8>("STORE_BENCH_DIAG", 1)? != 0,
        };
        if settings.ingest == 0
            || settings.concurrency == 0
            || settings.batch == 0
            || settings.lists == 0
            || settings.gets == 0
        {
            bail!(
                "STORE_BENCH_INGEST, STORE_BENCH_CONCURRENCY, STORE_BENCH_BATCH, STORE_BENCH_LISTS \
                 and STORE_BENCH_GETS must be > 0"
            );
        }
        Ok(settings)
    }
}

// ---------------------------------------------------------------------------------------------
// Data: realistic records and bodies, deterministic

/// SplitMix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` %.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).unwrap_or(0)
    }

    fn hex(&mut self, digits: usize) -> String {
        let mut s = String::with_capacity(digits);
        while s.len() < digits {
            let _ = write!(s, "{:016x}", self.next_u64());
        }
        s.truncate(digits);
        s
    }
}

/// Appends capitalised sentences of vocabulary words to `out` until it is `len` bytes long.
fn prose(rng: &mut Rng, out: &mut String, len: usize) {
    while out.len() < len {
        let words = rng.between(6, 18);
        for w in 0..words {
            let word = WORDS[rng.index(WORDS.len())];
            if w == 0 {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    out.extend(first.to_uppercase());
                    out.push_str(chars.as_str());
                }
            } else {
                out.push(' ');
                out.push_str(word);
            }
            if rng.chance(4) {
                let _ = write!(out, " {}", rng.below(10_000));
            }
        }
        out.push_str(if rng.chance(15) { "? " } else { ". " });
    }
    out.truncate(len);
}

/// An OpenAI-style chat request of about `target` bytes.
fn request_body(rng: &mut Rng, model: &str, target: usize) -> Bytes {
    let head = format!(
        r#"{{"model":"{model}","messages":[{{"role":"system","content":"You are a helpful assistant for ticket {}. Answer precisely."}},{{"role":"user","content":""#,
        rng.hex(8)
    );
    let tail = format!(
        r#""}}],"temperature":0.{},"max_tokens":{},"user":"user-{}"}}"#,
        rng.below(10),
        rng.between(64, 2048),
        rng.below(5000)
    );
    let mut body = head;
    let text_len = target.saturating_sub(body.len() + tail.len());
    let mut text = String::with_capacity(text_len);
    prose(rng, &mut text, text_len);
    body.push_str(&text);
    body.push_str(&tail);
    Bytes::from(body)
}

/// An OpenAI-style chat completion of about `target` bytes (JSON, or SSE chunks if `streamed`).
fn response_body(rng: &mut Rng, model: &str, target: usize, streamed: bool) -> Bytes {
    let id = format!("chatcmpl-{}", rng.hex(24));
    let created = 1_735_000_000 + rng.below(10_000_000);
    let (tin, tout) = (rng.between(20, 4000), rng.between(50, 600));
    if streamed {
        let mut body = String::with_capacity(target + 256);
        while body.len() < target.saturating_sub(120) {
            let mut words = String::new();
            let len = usize::try_from(rng.between(8, 30)).unwrap_or(16);
            prose(rng, &mut words, len);
            let _ = write!(
                body,
                "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{words}\"}},\"finish_reason\":null}}]}}\n\n"
            );
        }
        let _ = write!(
            body,
            "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":\"{model}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{tin},\"completion_tokens\":{tout},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
            tin + tout
        );
        return Bytes::from(body);
    }
    let head = format!(
        r#"{{"id":"{id}","object":"chat.completion","created":{created},"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":""#
    );
    let tail = format!(
        r#""}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{tin},"completion_tokens":{tout},"total_tokens":{}}},"system_fingerprint":"fp_{}"}}"#,
        tin + tout,
        rng.hex(10)
    );
    let mut body = head;
    let text_len = target.saturating_sub(body.len() + tail.len());
    let mut text = String::with_capacity(text_len);
    prose(rng, &mut text, text_len);
    body.push_str(&text);
    body.push_str(&tail);
    Bytes::from(body)
}

/// Pre-built bodies per model: requests, JSON responses, SSE responses.
struct BodyPool {
    requests: Vec<Vec<Bytes>>,
    responses: Vec<Vec<Bytes>>,
    streams: Vec<Vec<Bytes>>,
}

impl BodyPool {
    fn new(rng: &mut Rng) -> Self {
        let mut pool = BodyPool {
            requests: Vec::new(),
            responses: Vec::new(),
            streams: Vec::new(),
        };
        for (model, _, _) in MODELS {
            let mut target = || {
                let spread = BODY_TARGET as u64 / 10;
                usize::try_from(
                    rng.between(BODY_TARGET as u64 - spread, BODY_TARGET as u64 + spread),
                )
                .unwrap_or(BODY_TARGET)
            };
            let targets: Vec<usize> = (0..3 * BODIES_PER_MODEL).map(|_| target()).collect();
            let mut t = targets.into_iter();
            let mut next = || t.next().unwrap_or(BODY_TARGET);
            pool.requests.push(
                (0..BODIES_PER_MODEL)
                    .map(|_| request_body(rng, model, next()))
                    .collect(),
            );
            pool.responses.push(
                (0..BODIES_PER_MODEL)
                    .map(|_| response_body(rng, model, next(), false))
                    .collect(),
            );
            pool.streams.push(
                (0..BODIES_PER_MODEL)
                    .map(|_| response_body(rng, model, next(), true))
                    .collect(),
            );
        }
        pool
    }
}

/// What the bench knows about one generated log, to check answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Known {
    id: Ulid,
    model: u8,
    /// `tokens_in > TOKENS_IN_THRESHOLD`.
    heavy: bool,
}

/// Generates log entries the way the edge produces them, and remembers what it generated.
struct Generator {
    rng: Rng,
    bodies: BodyPool,
    known: Vec<Known>,
    body_bytes: u64,
}

impl Generator {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let bodies = BodyPool::new(&mut rng);
        Generator {
            rng,
            bodies,
            known: Vec::new(),
            body_bytes: 0,
        }
    }

    /// One entry as `ShardLogSink` sends it: an `aigw_types::LogRecord` converted to the wire
    /// row, with its bodies when `collect` (payload collection on).
    fn entry(&mut self, collect: bool) -> IngestEntry {
        let rng = &mut self.rng;
        let id = Ulid::new();
        let m = rng.index(MODELS.len());
        let (model, provider, path) = MODELS[m];
        let created_at_ms = i64::try_from(id.timestamp_ms()).unwrap_or(i64::MAX);
        let mut r = LogRecord::new(id, created_at_ms, ACCOUNT, GATEWAY, provider);
        r.model = model.to_owned();
        r.model_type = "chat".to_owned();
        r.path = path.to_owned();
        r.method = "POST".to_owned();
        let failed = rng.chance(2);
        r.status_code = if failed {
            [429, 500, 503][rng.index(3)]
        } else {
            200
        };
        r.success = !failed;
        r.outcome = RequestOutcome::Completed;
        if failed {
            r.error = Some(format!("upstream answered {}", r.status_code));
        }
        r.streamed = !failed && rng.chance(25);
        r.time_to_first_byte_ms = Some(rng.between(80, 900));
        r.duration_ms = r.time_to_first_byte_ms.unwrap_or(0) + rng.between(10, 6000);
        let tokens_in = rng.between(20, 4000);
        if !failed {
            r.tokens_in = Some(tokens_in);
            r.tokens_out = Some(rng.between(1, 1200));
            let cost = (tokens_in as f64 * 2.5 + r.tokens_out.unwrap_or(0) as f64 * 10.0) / 1e6;
            r.cost = Some(cost);
        }
        if rng.chance(30) {
            let mut md = Metadata::new();
            md.insert(
                "user".to_owned(),
                MetadataValue::String(format!("user-{}", rng.below(5000))),
            );
            if rng.chance(50) {
                md.insert(
                    "team".to_owned(),
                    MetadataValue::String(
                        ["search", "support", "billing", "growth"][rng.index(4)].to_owned(),
                    ),
                );
            }
            if rng.chance(30) {
                md.insert(
                    "attempt".to_owned(),
                    MetadataValue::Number(rng.between(1, 3).into()),
                );
            }
            r.metadata = md;
        }
        if rng.chance(20) {
            r.event_id = Some(format!("evt_{}", rng.hex(20)));
        }
        r.request_content_type = Some("application/json".to_owned());
        r.response_content_type = Some(
            if r.streamed {
                "text/event-stream"
            } else {
                "application/json"
            }
            .to_owned(),
        );
        r.user_agent = Some(USER_AGENTS[rng.index(USER_AGENTS.len())].to_owned());
        r.authentication = rng.chance(50);
        r.payload_collected = collect;
        let pick = rng.index(BODIES_PER_MODEL);
        let request = self.bodies.requests[m][pick].clone();
        let response = if r.streamed {
            self.bodies.streams[m][pick].clone()
        } else {
            self.bodies.responses[m][pick].clone()
        };
        r.request_size = request.len() as u64;
        r.response_size = response.len() as u64;
        let (request_body, response_body) = if collect {
            self.body_bytes += (request.len() + response.len()) as u64;
            (Some(request), Some(response))
        } else {
            (None, None)
        };
        self.known.push(Known {
            id,
            model: u8::try_from(m).unwrap_or(0),
            heavy: r.tokens_in.is_some_and(|t| t > TOKENS_IN_THRESHOLD),
        });
        IngestEntry {
            record: Some((&r).into()),
            request_body,
            response_body,
        }
    }

    fn batch(&mut self, size: usize, collect: bool) -> IngestRequest {
        IngestRequest {
            entries: (0..size).map(|_| self.entry(collect)).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The store, wired as in allinone.rs

struct Store {
    db: sled::Db,
    node: RaftNode,
    shard: Arc<ShardService>,
    index: LogIndex,
    blobs_dir: PathBuf,
    index_dir: PathBuf,
    raft_log_dir: PathBuf,
}

impl Store {
    async fn open(data_dir: &Path) -> Result<Self> {
        let index_dir = data_dir.join("index");
        let blobs_dir = data_dir.join("blobs");
        let raft_log_dir = data_dir.join("raft-log");
        let db = sled::open(&index_dir)
            .with_context(|| format!("cannot open the index in {}", index_dir.display()))?;
        let blobs: Arc<dyn BlobStore> = Arc::new(
            FsBlobStore::open(blobs_dir.clone()).context("cannot open the blob directory")?,
        );
        let node = RaftNode::new(
            db.clone(),
            NodeConfig::new(1, unused_loopback_addr()?, raft_log_dir.clone()),
        )
        .context("cannot create the raft node")?;
        let index = LogIndex::open(db.open_tree("shard/1/index")?)?;
        let group = start_single_member(&node, Arc::new(ShardApp::new(index.clone()))).await?;
        let shard = Arc::new(ShardService::new(index.clone(), group, blobs));
        Ok(Store {
            db,
            node,
            shard,
            index,
            blobs_dir,
            index_dir,
            raft_log_dir,
        })
    }

    async fn footprint(&self) -> Result<Footprint> {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || index.footprint())
            .await
            .context("footprint task failed")?
            .context("footprint scan failed")
    }
}

/// A loopback address nothing listens on (the single-member group never dials it).
fn unused_loopback_addr() -> Result<String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free loopback port")?;
    Ok(listener.local_addr()?.to_string())
}

async fn start_single_member(node: &RaftNode, app: Arc<ShardApp>) -> Result<GroupHandle> {
    let members = std::collections::BTreeMap::from([(node.id(), node.basic_node())]);
    let handle = node
        .start_group(SHARD_GROUP, app, members)
        .await
        .context("cannot start the shard group")?;
    handle
        .raft()
        .wait(Some(ELECTION_WAIT))
        .current_leader(node.id(), "single-member group elects itself")
        .await
        .context("the shard group did not elect a leader")?;
    Ok(handle)
}

// ---------------------------------------------------------------------------------------------
// Phases

/// One ingestion run.
struct IngestRun {
    logs: u64,
    wall: Duration,
    latencies: Latencies,
    /// Time spent generating batches inside the measured window (top-up only).
    generate: Duration,
    /// CPU time of the whole process (every thread) over the run.
    cpu: Duration,
}

impl IngestRun {
    fn logs_per_sec(&self) -> f64 {
        self.logs as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// CPU and wall per log, in µs.
    fn per_log_us(&self) -> (f64, f64) {
        let n = self.logs.max(1) as f64;
        (
            self.cpu.as_secs_f64() * 1e6 / n,
            self.wall.as_secs_f64() * 1e6 / n,
        )
    }
}

/// CPU time (user + system, all threads) this process has used.
fn process_cpu() -> Duration {
    let ticks = procfs::cpu_ticks(Pid::This).unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / procfs::clock_ticks_per_sec() as f64)
}

/// Where ingest callers get their next batch.
enum Source {
    /// Built before the clock started.
    Ready(Mutex<VecDeque<IngestRequest>>),
    /// Built on demand, without bodies, until `remaining` logs were made.
    Generate {
        generator: Arc<Mutex<Generator>>,
        remaining: Mutex<usize>,
        batch: usize,
    },
}

impl Source {
    /// The next batch, and how long making it took.
    fn next(&self) -> Option<(IngestRequest, Duration)> {
        let started = Instant::now();
        match self {
            Source::Ready(queue) => queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front()
                .map(|b| (b, Duration::ZERO)),
            Source::Generate {
                generator,
                remaining,
                batch,
            } => {
                let size = {
                    let mut left = remaining.lock().unwrap_or_else(PoisonError::into_inner);
                    let size = (*left).min(*batch);
                    *left -= size;
                    size
                };
                if size == 0 {
                    return None;
                }
                let request = generator
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .batch(size, false);
                Some((request, started.elapsed()))
            }
        }
    }
}

/// `concurrency` callers of `Shard::ingest` draining `source`.
async fn ingest(
    shard: &Arc<ShardService>,
    source: Source,
    concurrency: usize,
) -> Result<IngestRun> {
    let source = Arc::new(source);
    let cpu_before = process_cpu();
    let started = Instant::now();
    let callers: Vec<_> = (0..concurrency)
        .map(|_| {
            let shard = Arc::clone(shard);
            let source = Arc::clone(&source);
            tokio::spawn(async move {
                let mut latencies = Latencies::with_capacity(1024);
                let mut logs = 0u64;
                let mut generate = Duration::ZERO;
                loop {
                    // Generation locks a std mutex briefly; keep it off the async workers' backs.
                    let source2 = Arc::clone(&source);
                    let next = tokio::task::spawn_blocking(move || source2.next())
                        .await
                        .context("batch source task failed")?;
                    let Some((batch, made_in)) = next else { break };
                    generate += made_in;
                    let n = batch.entries.len();
                    let t = Instant::now();
                    let reply = shard
                        .ingest(tonic::Request::new(batch))
                        .await
                        .map_err(|s| anyhow!("ingest failed: {}: {}", s.code(), s.message()))?;
                    latencies.record(t.elapsed());
                    let accepted = reply.into_inner().accepted as usize;
                    ensure!(accepted == n, "ingest accepted {accepted} of {n} entries");
                    logs += n as u64;
                }
                anyhow::Ok((latencies, logs, generate))
            })
        })
        .collect();
    let mut run = IngestRun {
        logs: 0,
        wall: Duration::ZERO,
        latencies: Latencies::default(),
        generate: Duration::ZERO,
        cpu: Duration::ZERO,
    };
    for caller in callers {
        let (latencies, logs, generate) = caller.await.context("ingest caller panicked")??;
        run.latencies.merge(latencies);
        run.logs += logs;
        run.generate += generate;
    }
    run.wall = started.elapsed();
    run.cpu = process_cpu().saturating_sub(cpu_before);
    Ok(run)
}

/// Results of one kind of list query.
struct ListRun {
    latencies: Latencies,
    queries: usize,
}

/// The newest `PER_PAGE` known ids passing `keep`, newest first, and how many pass.
fn expected_page(sorted_desc: &[Known], keep: impl Fn(&Known) -> bool) -> (Vec<Ulid>, u64) {
    let mut page = Vec::with_capacity(PER_PAGE);
    let mut total = 0u64;
    for k in sorted_desc.iter().filter(|k| keep(k)) {
        if page.len() < PER_PAGE {
            page.push(k.id);
        }
        total += 1;
    }
    (page, total)
}

fn text_filter(key: &str, op: FilterOperator, value: filter_value::Kind) -> Filter {
    Filter {
        key: key.to_owned(),
        operator: op as i32,
        values: vec![FilterValue { kind: Some(value) }],
    }
}

fn list_request(filters: Vec<Filter>) -> ListLogsRequest {
    ListLogsRequest {
        query: Some(LogQuery {
            account_id: ACCOUNT.to_owned(),
            gateway_id: GATEWAY.to_owned(),
            filters,
            ..LogQuery::default()
        }),
        page: 1,
        per_page: PER_PAGE as u32,
        after_id: None,
    }
}

/// Runs `queries` list calls, the `i`-th with `case(i)` = (filters, expected ids, expected
/// total); checks every answer, recording mismatches in `wrong`.
async fn list(
    shard: &ShardService,
    queries: usize,
    label: &str,
    wrong: &mut Vec<String>,
    case: impl Fn(usize) -> (Vec<Filter>, Arc<(Vec<Ulid>, u64)>),
) -> Result<ListRun> {
    let mut latencies = Latencies::with_capacity(queries);
    for i in 0..queries {
        let (filters, expected) = case(i);
        let request = list_request(filters);
        let t = Instant::now();
        let reply = shard
            .list_logs(tonic::Request::new(request))
            .await
            .map_err(|s| anyhow!("list_logs ({label}) failed: {}: {}", s.code(), s.message()))?;
        latencies.record(t.elapsed());
        let reply = reply.into_inner();
        let ids: Vec<Ulid> = reply
            .logs
            .iter()
            .map(|row| aigw_proto::id_from_bytes(&row.id).unwrap_or_default())
            .collect();
        let (want_ids, want_total) = &*expected;
        if &ids != want_ids || reply.total_count != *want_total {
            let newest_first = ids.windows(2).all(|w| w[0] > w[1]);
            wrong.push(format!(
                "list ({label}), query {i}: {} rows (want {}), newest first: {newest_first}, \
                 same ids: {}, total_count {} (want {want_total})",
                ids.len(),
                want_ids.len(),
                &ids == want_ids,
                reply.total_count
            ));
        }
    }
    Ok(ListRun { latencies, queries })
}

/// Get-by-id results.
struct GetRun {
    latencies: Latencies,
}

async fn get(
    shard: &ShardService,
    known: &[Known],
    gets: usize,
    rng: &mut Rng,
    wrong: &mut Vec<String>,
) -> Result<GetRun> {
    let mut latencies = Latencies::with_capacity(gets);
    for _ in 0..gets {
        let k = known[rng.index(known.len())];
        let request = GetLogRequest {
            account_id: ACCOUNT.to_owned(),
            gateway_id: GATEWAY.to_owned(),
            id: Bytes::copy_from_slice(&k.id.to_bytes()),
        };
        let t = Instant::now();
        let reply = shard
            .get_log(tonic::Request::new(request))
            .await
            .map_err(|s| anyhow!("get_log failed: {}: {}", s.code(), s.message()))?;
        latencies.record(t.elapsed());
        let log = reply.into_inner().log.unwrap_or_default();
        let id = aigw_proto::id_from_bytes(&log.id).unwrap_or_default();
        if id != k.id || log.model != MODELS[usize::from(k.model)].0 {
            wrong.push(format!(
                "get_log {}: got id {id} model {:?}",
                k.id, log.model
            ));
        }
    }
    Ok(GetRun { latencies })
}

/// Where the bytes of one stored row value go (from one row read back after phase 1): the
/// encoded row as read back (id excluded), its body location, its account and gateway ids
/// (which the index does not store in rows: they are named once per gateway).
#[derive(Clone, Copy, Debug, Default)]
struct RowParts {
    value: usize,
    body_location: usize,
    account_gateway: usize,
}

async fn row_parts(shard: &ShardService, generator: &Mutex<Generator>) -> Result<RowParts> {
    let id = generator
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .known
        .first()
        .map(|k| k.id)
        .ok_or_else(|| anyhow!("no log was ingested"))?;
    let reply = shard
        .get_log(tonic::Request::new(GetLogRequest {
            account_id: ACCOUNT.to_owned(),
            gateway_id: GATEWAY.to_owned(),
            id: Bytes::copy_from_slice(&id.to_bytes()),
        }))
        .await
        .map_err(|s| anyhow!("get_log failed: {}: {}", s.code(), s.message()))?;
    let mut row = reply.into_inner().log.unwrap_or_default();
    row.id = Bytes::new();
    let value = row.encoded_len();
    let mut bare = row.clone();
    bare.bodies = None;
    let body_location = value - bare.encoded_len();
    bare = row.clone();
    bare.account_id.clear();
    bare.gateway_id.clear();
    Ok(RowParts {
        value,
        body_location,
        account_gateway: value - bare.encoded_len(),
    })
}

/// Bytes of files under `dir`: (files, apparent bytes, allocated bytes).
fn dir_usage(dir: &Path) -> std::io::Result<(u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut totals = (0, 0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                totals.0 += 1;
                totals.1 += meta.len();
                totals.2 += meta.blocks() * 512;
            }
        }
    }
    Ok(totals)
}

/// Logical bytes (keys + values) of every sled tree of `db`, largest first.
fn tree_bytes(db: &sled::Db) -> Result<Vec<(String, u64, u64)>> {
    let mut out = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name)?;
        let (mut entries, mut bytes) = (0u64, 0u64);
        for item in tree.iter() {
            let (k, v) = item?;
            entries += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        out.push((String::from_utf8_lossy(&name).into_owned(), entries, bytes));
    }
    out.sort_by_key(|t| std::cmp::Reverse(t.2));
    Ok(out)
}

/// Whether `path` is on a tmpfs (fsync there costs nothing, so the figures would flatter).
fn on_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `stat` is a plain-old-data struct, valid when zeroed; `c_path` is a valid
    // NUL-terminated string that outlives the call.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above; statfs only writes into `stat`.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    #[allow(clippy::unnecessary_cast)]
    let kind = stat.f_type as i64;
    rc == 0 && kind == TMPFS_MAGIC
}

/// Diagnostic: the body path alone — framing `logs` logs' two bodies into packs of `batch`
/// logs (zstd), and storing the packs in an `FsBlobStore`, `concurrency` at once → logs/s.
async fn diag_packs(
    dir: &Path,
    bodies: &[Bytes],
    logs: usize,
    batch: usize,
    concurrency: usize,
) -> Result<f64> {
    let store = Arc::new(FsBlobStore::open(dir.to_path_buf())?);
    let bodies: Arc<[Bytes]> = bodies.into();
    let started = Instant::now();
    let results: Vec<_> = futures_util::stream::iter(0..logs.div_ceil(batch))
        .map(|b| {
            let store = Arc::clone(&store);
            let bodies = Arc::clone(&bodies);
            async move {
                let pack = tokio::task::spawn_blocking(move || {
                    let mut writer = PackWriter::new(Codec::default());
                    for i in 0..batch * 2 {
                        writer.push(&bodies[(b * batch * 2 + i) % bodies.len()])?;
                    }
                    Ok::<_, aigw_blob::BlobError>(writer.finish())
                })
                .await??;
                let key = format!("{ACCOUNT}/{GATEWAY}/{b:016x}.pack");
                store.put(&key, pack).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let wall = started.elapsed();
    for r in results {
        r.context("diagnostic pack put failed")?;
    }
    Ok(logs as f64 / wall.as_secs_f64().max(1e-9))
}

/// Diagnostic: `LogIndex::apply` of insert commands on a fresh sled database, no Raft, no
/// fsync → rows/s.
fn diag_index_apply(dir: &Path, rows: usize, batch: usize) -> Result<(f64, f64)> {
    let db = sled::open(dir)?;
    let index = LogIndex::open(db.open_tree("shard/1/index")?)?;
    let mut generator = Generator::new(7);
    let batches: Vec<Insert> = (0..rows.div_ceil(batch))
        .map(|_| Insert {
            rows: generator
                .batch(batch, true)
                .entries
                .into_iter()
                .filter_map(|e| e.record)
                .collect(),
            ..Insert::default()
        })
        .collect();
    let n: usize = batches.iter().map(|b| b.rows.len()).sum();
    let started = Instant::now();
    let mut flush = Duration::ZERO;
    for insert in batches {
        index.apply(Command {
            kind: Some(CommandKind::Insert(insert)),
        })?;
        let t = Instant::now();
        db.flush()?;
        flush += t.elapsed();
    }
    let wall = started.elapsed();
    let apply = wall.saturating_sub(flush);
    Ok((
        n as f64 / apply.as_secs_f64().max(1e-9),
        flush.as_secs_f64() * 1e3 / (n.div_ceil(batch)) as f64,
    ))
}

// ---------------------------------------------------------------------------------------------
// The run

struct Report {
    data_dir: String,
    tmpfs: bool,
    ingest: IngestRun,
    ingest_body_bytes: u64,
    ingest_footprint: Footprint,
    row_parts: RowParts,
    topup: Option<IngestRun>,
    rows: u64,
    footprint: Footprint,
    footprint_time: Duration,
    list_model: ListRun,
    list_all: ListRun,
    list_scan: Option<ListRun>,
    gets: GetRun,
    index_disk: (u64, u64, u64),
    raft_log_disk: (u64, u64, u64),
    blobs_disk: (u64, u64, u64),
    trees: Vec<(String, u64, u64)>,
    diag_puts_per_sec: Option<f64>,
    diag_apply: Option<(f64, f64)>,
    peak_rss_kib: u64,
    total: Duration,
    wrong_answers: Vec<String>,
}

/// Progress on stderr, stamped with the seconds since `$start`.
macro_rules! note {
    ($start:expr, $($arg:tt)*) => {
        eprintln!("storebench [{:7.1} s] {}", $start.elapsed().as_secs_f64(), format_args!($($arg)*))
    };
}

async fn bench(settings: &Settings) -> Result<Report> {
    let bench_started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("aigw-storebench-")
        .tempdir_in(&settings.dir)
        .with_context(|| format!("cannot make a temp dir in {}", settings.dir.display()))?;
    let tmpfs = on_tmpfs(tmp.path());
    if tmpfs {
        eprintln!(
            "storebench: warning: {} is on tmpfs; fsync is free there, figures will flatter \
             (set STORE_BENCH_DIR to a directory on disk)",
            tmp.path().display()
        );
    }
    let data_dir = tmp.path().join("data");
    std::fs::create_dir_all(&data_dir)?;
    let store = Store::open(&data_dir).await?;
    note!(
        bench_started,
        "store open in {}, shard group leader elected",
        data_dir.display()
    );
    let mut wrong = Vec::new();

    // 1. Ingestion with bodies.
    note!(
        bench_started,
        "phase 1: building {} logs with bodies…",
        settings.ingest
    );
    let generator = Arc::new(Mutex::new(Generator::new(0x5eed_a16e)));
    let (batches, ingest_body_bytes) = {
        let mut g = generator.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batches = VecDeque::new();
        let mut left = settings.ingest;
        while left > 0 {
            let n = left.min(settings.batch);
            batches.push_back(g.batch(n, true));
            left -= n;
        }
        (batches, g.body_bytes)
    };
    note!(
        bench_started,
        "phase 1: ingesting {} logs, batches of {}, {} callers…",
        settings.ingest,
        settings.batch,
        settings.concurrency
    );
    let ingest_run = ingest(
        &store.shard,
        Source::Ready(Mutex::new(batches)),
        settings.concurrency,
    )
    .await?;
    note!(
        bench_started,
        "phase 1: {:.0} logs/s",
        ingest_run.logs_per_sec()
    );
    let ingest_footprint = store.footprint().await?;
    let row_parts = row_parts(&store.shard, &generator).await?;

    // 2. Top-up without bodies.
    let topup_logs = settings.rows - settings.ingest;
    let topup = if topup_logs > 0 {
        note!(
            bench_started,
            "phase 2: topping up with {topup_logs} logs without bodies…"
        );
        let run = ingest(
            &store.shard,
            Source::Generate {
                generator: Arc::clone(&generator),
                remaining: Mutex::new(topup_logs),
                batch: settings.batch,
            },
            settings.concurrency,
        )
        .await?;
        note!(
            bench_started,
            "phase 2: {:.0} logs/s over {:.1} s",
            run.logs_per_sec(),
            run.wall.as_secs_f64()
        );
        Some(run)
    } else {
        None
    };
    let mut known = std::mem::take(
        &mut generator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .known,
    );
    known.sort_unstable_by_key(|k| std::cmp::Reverse(k.id));

    // 3. Lists.
    note!(bench_started, "phase 3: list queries…");
    let per_model: Vec<Arc<(Vec<Ulid>, u64)>> = (0..MODELS.len())
        .map(|m| {
            let m = u8::try_from(m).unwrap_or(0);
            Arc::new(expected_page(&known, |k| k.model == m))
        })
        .collect();
    let model_filter = |i: usize| {
        let m = i % MODELS.len();
        (
            vec![text_filter(
                "model",
                FilterOperator::Eq,
                filter_value::Kind::Text(MODELS[m].0.to_owned()),
            )],
            Arc::clone(&per_model[m]),
        )
    };
    // Warm-up: one pass over the models (first reads fault pages in).
    list(
        &store.shard,
        MODELS.len(),
        "warm-up",
        &mut wrong,
        model_filter,
    )
    .await?;
    let list_model = list(
        &store.shard,
        settings.lists,
        "model = X",
        &mut wrong,
        model_filter,
    )
    .await?;
    let all = Arc::new(expected_page(&known, |_| true));
    let list_all = list(
        &store.shard,
        settings.lists,
        "no filter",
        &mut wrong,
        |_| (Vec::new(), Arc::clone(&all)),
    )
    .await?;
    let list_scan = if settings.scan_lists > 0 {
        let heavy = Arc::new(expected_page(&known, |k| k.heavy));
        Some(
            list(
                &store.shard,
                settings.scan_lists,
                "tokens_in gt",
                &mut wrong,
                |_| {
                    (
                        vec![text_filter(
                            "tokens_in",
                            FilterOperator::Gt,
                            filter_value::Kind::Number(TOKENS_IN_THRESHOLD as f64),
                        )],
                        Arc::clone(&heavy),
                    )
                },
            )
            .await?,
        )
    } else {
        None
    };

    // 4. Gets.
    note!(bench_started, "phase 4: get by id…");
    let mut rng = Rng(42);
    let gets = get(&store.shard, &known, settings.gets, &mut rng, &mut wrong).await?;

    // 5. Footprint.
    note!(bench_started, "phase 5: footprint…");
    let t = Instant::now();
    let footprint = store.footprint().await?;
    let footprint_time = t.elapsed();
    if footprint.rows != known.len() as u64 {
        wrong.push(format!(
            "footprint counts {} rows, {} were ingested",
            footprint.rows,
            known.len()
        ));
    }
    aigw_raft::flush_db(&store.db)
        .await
        .context("index flush failed")?;
    let trees = tree_bytes(&store.db)?;
    let index_disk = dir_usage(&store.index_dir)?;
    let raft_log_disk = dir_usage(&store.raft_log_dir)?;
    let blobs_disk = dir_usage(&store.blobs_dir)?;
    let peak_rss_kib = procfs::memory(Pid::This).map_or(0, |m| m.hwm_kib);
    note!(
        bench_started,
        "sizes measured; shutting the raft node down…"
    );
    store
        .node
        .shutdown()
        .await
        .context("raft shutdown failed")?;

    // 6. Diagnostics.
    let (diag_puts_per_sec, diag_apply) = if settings.diag {
        note!(bench_started, "phase 6: diagnostics…");
        let bodies: Vec<Bytes> = {
            let g = generator.lock().unwrap_or_else(PoisonError::into_inner);
            g.bodies.requests.iter().flatten().cloned().collect()
        };
        let puts = diag_packs(
            &tmp.path().join("diag-blobs"),
            &bodies,
            50_000,
            settings.batch,
            settings.concurrency,
        )
        .await?;
        note!(bench_started, "diagnostics: index apply…");
        let dir = tmp.path().join("diag-index");
        let rows = 50_000.min(settings.rows);
        let batch = settings.batch;
        let apply = tokio::task::spawn_blocking(move || diag_index_apply(&dir, rows, batch))
            .await
            .context("diagnostic task failed")??;
        (Some(puts), Some(apply))
    } else {
        (None, None)
    };

    let total = bench_started.elapsed();
    let data_dir_text = tmp.path().display().to_string();
    if settings.keep {
        let kept = tmp.keep();
        note!(bench_started, "kept {}", kept.display());
    } else {
        note!(bench_started, "removing {data_dir_text}…");
        drop(tmp);
        note!(bench_started, "removed");
    }
    Ok(Report {
        data_dir: data_dir_text,
        tmpfs,
        ingest: ingest_run,
        ingest_body_bytes,
        ingest_footprint,
        row_parts,
        topup,
        rows: known.len() as u64,
        footprint,
        footprint_time,
        list_model,
        list_all,
        list_scan,
        gets,
        index_disk,
        raft_log_disk,
        blobs_disk,
        trees,
        diag_puts_per_sec,
        diag_apply,
        peak_rss_kib,
        total,
        wrong_answers: wrong,
    })
}

// ---------------------------------------------------------------------------------------------
// The table

/// One line of the final table.
struct Figure {
    name: String,
    value: String,
    target: String,
    /// `Some(true)` ok, `Some(false)` MISS, `None` reported only.
    pass: Option<bool>,
}

impl Figure {
    fn info(name: impl Into<String>, value: impl Into<String>) -> Self {
        Figure {
            name: name.into(),
            value: value.into(),
            target: String::new(),
            pass: None,
        }
    }

    fn target(mut self, target: impl Into<String>, pass: bool) -> Self {
        self.target = target.into();
        self.pass = Some(pass);
        self
    }
}

fn q(l: &mut Latencies, quantile: f64) -> Duration {
    l.quantile(quantile).unwrap_or_default()
}

fn per_log(bytes: u64, rows: u64) -> f64 {
    bytes as f64 / rows.max(1) as f64
}

fn index_bytes(f: &Footprint) -> u64 {
    f.row_bytes + f.index_bytes + f.counter_bytes
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl Report {
    fn print(&mut self, settings: &Settings) {
        let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
        let mut figures = Vec::new();

        // Ingestion.
        let rate = self.ingest.logs_per_sec();
        figures.push(
            Figure::info(
                format!(
                    "ingestion, 2 KiB bodies, batches of {}, {} callers",
                    settings.batch, settings.concurrency
                ),
                format!("{rate:.0} logs/s"),
            )
            .target("≥ 20,000/s", rate >= 20_000.0),
        );
        let body_mib_s =
            self.ingest_body_bytes as f64 / (1024.0 * 1024.0) / self.ingest.wall.as_secs_f64();
        figures.push(Figure::info(
            "  bodies ingested (uncompressed)",
            format!(
                "{body_mib_s:.1} MiB/s, {:.0} B/log",
                per_log(self.ingest_body_bytes, self.ingest.logs)
            ),
        ));
        figures.push(Figure::info(
            "  batch latency p50 / p99",
            format!(
                "{} / {}",
                fmt_ms(q(&mut self.ingest.latencies, 0.5)),
                fmt_ms(q(&mut self.ingest.latencies, 0.99))
            ),
        ));
        let (cpu_us, wall_us) = self.ingest.per_log_us();
        figures.push(Figure::info(
            "  logs / wall; per log: wall / process CPU",
            format!(
                "{} / {:.1} s; {wall_us:.0} / {cpu_us:.0} µs",
                self.ingest.logs,
                self.ingest.wall.as_secs_f64()
            ),
        ));

        // Top-up.
        match &mut self.topup {
            Some(run) => {
                figures.push(Figure::info(
                    "top-up WITHOUT bodies (payload_collected=false)",
                    format!(
                        "{} logs in {:.1} s = {:.0} logs/s",
                        run.logs,
                        run.wall.as_secs_f64(),
                        run.logs_per_sec()
                    ),
                ));
                let (cpu_us, wall_us) = run.per_log_us();
                figures.push(Figure::info(
                    "  per log: wall / process CPU (incl. generation)",
                    format!("{wall_us:.0} / {cpu_us:.0} µs"),
                ));
                figures.push(Figure::info(
                    "  batch latency p50 / p99; batch generation (all callers)",
                    format!(
                        "{} / {}; {:.1} s",
                        fmt_ms(q(&mut run.latencies, 0.5)),
                        fmt_ms(q(&mut run.latencies, 0.99)),
                        run.generate.as_secs_f64()
                    ),
                ));
            }
            None => figures.push(Figure::info("top-up", "none (STORE_BENCH_ROWS ≤ INGEST)")),
        }

        // Lists.
        let rows = self.rows;
        let (p50, p99, max) = (
            q(&mut self.list_model.latencies, 0.5),
            q(&mut self.list_model.latencies, 0.99),
            q(&mut self.list_model.latencies, 1.0),
        );
        figures.push(
            Figure::info(
                format!("list 50 newest, model = X, {rows} rows: p99"),
                fmt_ms(p99),
            )
            .target("≤ 10 ms", p99 <= Duration::from_millis(10)),
        );
        figures.push(Figure::info(
            format!(
                "  p50 / max ({} queries, 10 models)",
                self.list_model.queries
            ),
            format!("{} / {}", fmt_ms(p50), fmt_ms(max)),
        ));
        figures.push(Figure::info(
            format!(
                "list 50 newest, no filter: p50 / p99 / max ({} queries)",
                self.list_all.queries
            ),
            format!(
                "{} / {} / {}",
                fmt_ms(q(&mut self.list_all.latencies, 0.5)),
                fmt_ms(q(&mut self.list_all.latencies, 0.99)),
                fmt_ms(q(&mut self.list_all.latencies, 1.0))
            ),
        ));
        if let Some(scan) = &mut self.list_scan {
            figures.push(Figure::info(
                format!(
                    "list, tokens_in gt {TOKENS_IN_THRESHOLD} (scan): p50 / max ({} q.)",
                    scan.queries
                ),
                format!(
                    "{} / {}",
                    fmt_ms(q(&mut scan.latencies, 0.5)),
                    fmt_ms(q(&mut scan.latencies, 1.0))
                ),
            ));
        }

        // Gets.
        let g99 = q(&mut self.gets.latencies, 0.99);
        figures.push(
            Figure::info(format!("get by id, {rows} rows: p99"), fmt_ms(g99))
                .target("≤ 1 ms", g99 <= Duration::from_millis(1)),
        );
        figures.push(Figure::info(
            format!("  p50 / max ({} gets)", self.gets.latencies.len()),
            format!(
                "{} / {}",
                fmt_ms(q(&mut self.gets.latencies, 0.5)),
                fmt_ms(q(&mut self.gets.latencies, 1.0))
            ),
        ));

        // Footprint.
        let f1 = self.ingest_footprint;
        let per1 = per_log(index_bytes(&f1), f1.rows);
        figures.push(
            Figure::info(
                format!("index B/log (keys+values), {} rows with bodies", f1.rows),
                format!("{per1:.0} B"),
            )
            .target("≤ 400 B", per1 <= 400.0),
        );
        figures.push(Figure::info(
            "  row / secondary index / counters per log",
            format!(
                "{:.0} / {:.0} / {:.1} B",
                per_log(f1.row_bytes, f1.rows),
                per_log(f1.index_bytes, f1.rows),
                per_log(f1.counter_bytes, f1.rows)
            ),
        ));
        let parts = self.row_parts;
        figures.push(Figure::info(
            "  one row (as read): all / body location / account+gateway ids (not stored)",
            format!(
                "{} / {} / {} B",
                parts.value, parts.body_location, parts.account_gateway
            ),
        ));
        let f = self.footprint;
        let per = per_log(index_bytes(&f), f.rows);
        let with_bodies = self.ingest.logs;
        figures.push(
            Figure::info(
                format!(
                    "index B/log (keys+values), {} rows, {} % with bodies",
                    f.rows,
                    with_bodies * 100 / f.rows.max(1)
                ),
                format!("{per:.0} B"),
            )
            .target("≤ 400 B", per <= 400.0),
        );
        figures.push(Figure::info(
            "  row / secondary index / counters per log; scan time",
            format!(
                "{:.0} / {:.0} / {:.2} B; {:.2} s",
                per_log(f.row_bytes, f.rows),
                per_log(f.index_bytes, f.rows),
                per_log(f.counter_bytes, f.rows),
                self.footprint_time.as_secs_f64()
            ),
        ));
        let (files, apparent, allocated) = self.index_disk;
        figures.push(Figure::info(
            "sled dir on disk per row (incl. sled overhead)",
            format!(
                "{:.0} B ({}, {files} files, {} alloc.)",
                per_log(apparent, f.rows),
                mib(apparent),
                mib(allocated)
            ),
        ));
        let (files, apparent, allocated) = self.raft_log_disk;
        figures.push(Figure::info(
            "Raft log files per row (all entries: no snapshot due yet)",
            format!(
                "{:.0} B ({}, {files} files, {} alloc.)",
                per_log(apparent, f.rows),
                mib(apparent),
                mib(allocated)
            ),
        ));
        for (name, entries, bytes) in self.trees.iter().filter(|t| t.2 > 1024 * 1024) {
            figures.push(Figure::info(
                format!("  sled tree {name}: entries / keys+values"),
                format!("{entries} / {}", mib(*bytes)),
            ));
        }
        let (bfiles, bapparent, ballocated) = self.blobs_disk;
        figures.push(Figure::info(
            format!("blob dir per ingested log ({bfiles} files)"),
            format!(
                "{:.0} B apparent, {:.0} B allocated",
                per_log(bapparent, self.ingest.logs),
                per_log(ballocated, self.ingest.logs)
            ),
        ));
        figures.push(Figure::info(
            "  zstd ratio of bodies (stored / raw)",
            format!(
                "{:.2}",
                bapparent as f64 / self.ingest_body_bytes.max(1) as f64
            ),
        ));

        // Diagnostics.
        if let Some(logs) = self.diag_puts_per_sec {
            figures.push(Figure::info(
                format!(
                    "diag: bodies alone (pack {} logs + FsBlobStore::put), {} at once",
                    settings.batch, settings.concurrency
                ),
                format!("{logs:.0} logs/s"),
            ));
        }
        if let Some((rows_s, flush_ms)) = self.diag_apply {
            figures.push(Figure::info(
                "diag: LogIndex::apply alone (no Raft); sled flush/batch",
                format!("{rows_s:.0} rows/s; {flush_ms:.2} ms"),
            ));
        }
        figures.push(Figure::info(
            "peak RSS of the bench process",
            mib(self.peak_rss_kib * 1024),
        ));
        let wrong = self.wrong_answers.len();
        figures.push(
            Figure::info("wrong answers (lists, gets, row count)", wrong.to_string())
                .target("0", wrong == 0),
        );

        println!();
        println!(
            "== aigw log-store bench: {cores} cores, all-in-one store in-process (sled + \
             single-member Raft + fs blobs), {:.0} s (without the clean-up) ==",
            self.total.as_secs_f64()
        );
        println!(
            "   (data in {}{}; load average at the end: {})",
            self.data_dir,
            if self.tmpfs { ", ON TMPFS" } else { "" },
            procfs::load_average()
        );
        println!("{:<62} {:<44} {:<12} mark", "figure", "value", "target");
        for f in &figures {
            let mark = match f.pass {
                Some(true) => "ok",
                Some(false) => "MISS",
                None => "",
            };
            println!("{:<62} {:<44} {:<12} {mark}", f.name, f.value, f.target);
        }
        println!(
            "notes: the top-up rows carry no bodies (1M × 4 KiB of bodies would need ~4 GB of \
             disk); index bytes = LogIndex::footprint() keys + values, bodies excluded; on-disk \
             sizes are information only"
        );
        if wrong > 0 {
            println!();
            println!("!!! {wrong} WRONG ANSWERS — the store misbehaved:");
            for w in self.wrong_answers.iter().take(20) {
                println!("!!!   {w}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_about_two_kib_of_json_and_vary() {
        let mut rng = Rng(1);
        let a = request_body(&mut rng, "gpt-4o", 2048);
        let b = request_body(&mut rng, "gpt-4o", 2048);
        assert!((2000..=2100).contains(&a.len()), "{}", a.len());
        assert_ne!(a, b);
        let v: serde_json::Value = serde_json::from_slice(&a).expect("request is JSON");
        assert_eq!(v["model"], "gpt-4o");
        let r = response_body(&mut rng, "gpt-4o", 2048, false);
        assert!((2000..=2100).contains(&r.len()), "{}", r.len());
        let v: serde_json::Value = serde_json::from_slice(&r).expect("response is JSON");
        assert!(v["usage"]["total_tokens"].as_u64().is_some());
        let s = response_body(&mut rng, "gpt-4o", 2048, true);
        assert!((1800..=2400).contains(&s.len()), "{}", s.len());
        assert!(s.ends_with(b"data: [DONE]\n\n"));
    }

    #[test]
    fn entries_look_like_the_edges() {
        let mut g = Generator::new(3);
        let batch = g.batch(200, true);
        assert_eq!(batch.entries.len(), 200);
        for e in &batch.entries {
            let r = e.record.as_ref().expect("record");
            assert_eq!(r.id.len(), 16);
            assert_eq!(r.account_id, ACCOUNT);
            assert!(r.payload_collected);
            assert_eq!(
                e.request_body.as_ref().map(|b| b.len() as u64),
                Some(r.request_size)
            );
        }
        let models: std::collections::BTreeSet<_> = g.known.iter().map(|k| k.model).collect();
        assert_eq!(models.len(), MODELS.len());
        let bare = g.batch(10, false);
        assert!(bare.entries.iter().all(|e| e.request_body.is_none()
            && e.response_body.is_none()
            && e.record.as_ref().is_some_and(|r| !r.payload_collected)));
    }

    #[test]
    fn expected_pages_are_newest_first_with_totals() {
        let known: Vec<Known> = (0..200u128)
            .rev()
            .map(|i| Known {
                id: Ulid(i),
                model: u8::try_from(i % 4).unwrap_or(0),
                heavy: i % 2 == 0,
            })
            .collect();
        let (page, total) = expected_page(&known, |k| k.model == 1);
        assert_eq!(total, 50);
        assert_eq!(page.len(), 50);
        assert_eq!(page[0], Ulid(197));
        assert!(page.windows(2).all(|w| w[0] > w[1]));
    }
}
