//! `loadbench`: aigw's end-to-end load bench (run by `make bench`).
//!
//! It starts the release binaries as child processes — the mock upstream
//! (`target/release/aigw-mock --no-record`, or `AIGW_MOCK_BIN`; a second one over HTTPS for
//! phase 4) and the gateway (`target/release/aigw serve`, or `AIGW_BIN`; logging on, its
//! log store — a single-member Raft shard on sled, bodies in `<data_dir>/blobs` — in a
//! temporary directory) — then drives the same request mix straight to the mock and through
//! aigw, in one run, and prints one line per figure with its target and an `ok`/`MISS` mark.
//! Figures are reported, never asserted: the exit status is 0 whatever the figures, and 1 only
//! when requests failed (a bench with errors measures nothing).
//!
//! Phases:
//!
//! 1. concurrency 1, small non-streaming chat: direct vs aigw → p50/p99 and the added latency
//!    (difference of the percentiles, aigw − direct);
//! 2. concurrency `BENCH_CONCURRENCY`, small chat: direct vs aigw vs aigw with
//!    `cf-aig-collect-log: false` → requests/s, p50/p99, logging overhead
//!    `1 − rps(log on) / rps(log off)` — the median over the rounds, each round's pair of runs
//!    compared on its own (a burst of background load falls on one pair, not on the figure),
//!    printed beside the lowest and highest round and the figure pooled over every round; and
//!    the same overhead from CPU time, `1 − cpu(off) / cpu(on)` with `cpu` the CPU time of aigw,
//!    the mock and this generator per request (warm-ups and the store's catch-up included):
//!    on a machine the load saturates, throughput is its cores over that cost, and CPU time
//!    leaves out the stolen and idle time that makes a shared VM's rates jump between runs;
//! 3. gateway CPU per request (`utime + stime` of the aigw process) from phase 2's runs:
//!    the **edge CPU** per request over the logging-off runs' measured windows (the proxy hot
//!    path, against the target), and the **edge + log store CPU** per logged request over the
//!    logging-on runs, from the start of their warm-up until the store had caught up with them
//!    (information: what one process doing both costs);
//! 4. `BENCH_STREAMS` (1,000) concurrent streams (50 chunks, 100 ms apart, each read to its end)
//!    through a **fresh** aigw process with an empty data directory, its RSS read at start, idle
//!    (after a short warm-up) and peak (`VmHWM`, reset before the streams, read once their log
//!    records are stored). Three processes in turn: `cf-aig-collect-log: false` and logging on
//!    with the upstream reached as real providers are — HTTPS, HTTP/2 chosen by ALPN, so one
//!    connection carries every stream (a second mock serves HTTPS, its CA passed to aigw as
//!    `proxy.upstream_ca_file`) — and logging on over plain HTTP/1.1, where every open stream
//!    holds an upstream connection (about 25 KiB of hyper buffers and channels each). A fresh
//!    process because phases 1–3 leave hundreds of MiB of sled cache (up to
//!    `AIGW_INDEX_CACHE_BYTES`) in the first one, which would hide what the streams cost; the
//!    first process's RSS after phases 1–3 is reported beside them;
//! 5. streaming chat (20 chunks, no delay) at `BENCH_CONCURRENCY`: direct vs aigw requests/s (on
//!    the last aigw of phase 4: logging on, upstream over plain HTTP/1.1 like the direct runs).
//!
//! The variants of phases 1, 2 and 5 are interleaved: the measured time is split into
//! `BENCH_ROUNDS` rounds, and in each round every variant runs for its share (after its share
//! of the warm-up, on fresh connections), so background load on a shared machine falls on all
//! variants alike. Results of the rounds are merged before any figure is computed.
//!
//! Log records are stored asynchronously, so a logging-on run leaves work behind when its
//! requests end. After every logging-on run the bench therefore waits until the store has
//! caught up (`/metrics`: `aigw_log_queue_depth` 0, `aigw_logs_written_total` +
//! `aigw_logs_dropped_total` covering every logged request sent, both still and aigw idle for
//! 200 ms; at most 60 s) before the next run starts. That wait is outside every timed window (so
//! throughput and latency of the two variants are measured alike, neither overlapping the
//! other's store work), but its CPU time is charged to the run that caused it. Each logging-off
//! run checks that the store wrote nothing during it.
//!
//! Environment: `BENCH_SECS` (measured seconds per variant, default 15), `BENCH_WARMUP_SECS`
//! (per variant, default 3), `BENCH_ROUNDS` (default 15), `BENCH_CONCURRENCY` (default 32),
//! `BENCH_STREAMS` (default 1000), `BENCH_CLIENT_THREADS` (default 1). With the defaults a run
//! takes about three minutes (the waits for the log store included). Fifteen rounds of a second
//! per variant, not five: on a shared VM one round's pair of runs can differ by 30 points or
//! more, and the median of five moved by 18 points between two runs of one binary.
//!
//! The load generator is built to cost as little CPU as possible, since on a 2-core machine
//! every cycle it burns is taken from the mock and the gateway:
//!
//! - It runs on **one current-thread Tokio runtime** (the main thread) by default: all workers
//!   are tasks on it, so there are no cross-thread wake-ups or work stealing, and the generator
//!   can never take more than one core. Each worker runs requests back to back (closed loop) on
//!   its own connection. `BENCH_CLIENT_THREADS=N` (N > 1) switches to a multi-thread runtime
//!   with N workers, for machines where one thread cannot saturate the target.
//! - Each worker owns **exactly one HTTP/1.1 keep-alive connection** (TCP_NODELAY) made with
//!   hyper 1's connection API (`hyper::client::conn::http1`), waiting for `ready()` before each
//!   request. hyper-util's pooled legacy client was not used: when a worker's next request
//!   comes before its previous connection is back in the pool (that happens on a separately
//!   spawned task), its checkout races a *new* connect — in a probe, 32 such workers opened 33
//!   connections. The connection API makes "one connection per worker" exact and skips the pool.
//!   Each run prints how many connections its workers opened (one per worker unless errors forced
//!   reconnects).
//!
//! CPU time is read from `/proc/<pid>/stat` (clock ticks of `sysconf(_SC_CLK_TCK)`), memory from
//! `/proc/<pid>/status`; this bench runs on Linux only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aigw_benches::env::env_or;
use aigw_benches::procfs::{self, Pid};
use aigw_benches::servers::{
    ChildGuard, STARTUP_TIMEOUT, binaries_under_test, start_aigw, start_aigw_with, start_mock,
    start_tls_mock, tail_of,
};
use aigw_benches::stats::{Latencies, delta_ms, fmt_ms};
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the 1,000-stream phase may take in all.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(90);
/// Pause after a logging-off or direct run before its final CPU reading.
const SETTLE: Duration = Duration::from_millis(100);
/// Longest the log store may take to catch up after a logging-on run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the log counters must stay still, the queue empty and aigw idle, for the store to
/// count as caught up.
const DRAIN_QUIET: Duration = Duration::from_millis(200);
/// How often `/metrics` and aigw's CPU time are read while waiting for the store.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// Most CPU time aigw may use during [`DRAIN_QUIET`] and still count as idle (5 % of one core;
/// at least one clock tick).
const IDLE_CPU: Duration = Duration::from_millis(10);
/// How long one worker sends streams (no delay) to a fresh aigw before its idle RSS is read.
const FRESH_WARMUP: Duration = Duration::from_millis(200);
/// The model of every request.
const MODEL: &str = "gpt-4o-mini";
/// The gateway path prefix: account `bench`, gateway `default`, provider `openai`.
const AIGW_PATH: &str = "/v1/bench/default/openai/chat/completions";
/// The mock's own path for the same endpoint.
const DIRECT_PATH: &str = "/v1/chat/completions";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("loadbench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let settings = Settings::from_env()?;
    // Before any child starts, so the gateway and the mock inherit the raised limit too.
    let (nofile, _) = procfs::raise_nofile_limit().context("cannot read or raise RLIMIT_NOFILE")?;
    let needed = u64::try_from(settings.streams)
        .unwrap_or(u64::MAX)
        .saturating_mul(2)
        + 256;
    if nofile < needed {
        eprintln!(
            "loadbench: warning: open-files limit {nofile} is below the ~{needed} the {}-stream phase needs",
            settings.streams
        );
    }
    let runtime = if settings.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.client_threads)
            .enable_all()
            .build()
    }
    .context("cannot start the Tokio runtime")?;
    let mut servers = Servers::start()?;
    let report = runtime.block_on(bench(&settings, &mut servers))?;
    let errors = report.print(&settings, &servers);
    eprintln!(
        "loadbench: stopping the servers and removing {} (many small files: this can take a while)",
        servers.data_dir.path().display()
    );
    drop(servers);
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

// ---------------------------------------------------------------------------------------------
// Settings

/// What the environment asks for.
#[derive(Clone, Debug)]
struct Settings {
    /// Measured time per run.
    duration: Duration,
    /// Warm-up time before each measured run.
    warmup: Duration,
    /// Workers for the throughput phases.
    concurrency: usize,
    /// Concurrent streams in phase 4.
    streams: usize,
    /// Load-generator runtime threads (1 = current-thread runtime).
    client_threads: usize,
    /// Interleaved rounds each comparison's time is split into.
    rounds: usize,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let secs: f64 = env_or("BENCH_SECS", 15.0)?;
        let warmup: f64 = env_or("BENCH_WARMUP_SECS", 3.0)?;
        let settings = Settings {
            duration: Duration::try_from_secs_f64(secs)
                .context("BENCH_SECS must be a positive number")?,
            warmup: Duration::try_from_secs_f64(warmup).context("BENCH_WARMUP_SECS must be ≥ 0")?,
            concurrency: env_or("BENCH_CONCURRENCY", 32)?,
            streams: env_or("BENCH_STREAMS", 1000)?,
            client_threads: env_or("BENCH_CLIENT_THREADS", 1)?,
            rounds: env_or("BENCH_ROUNDS", 15)?,
        };
        if settings.duration.is_zero()
            || settings.concurrency == 0
            || settings.streams == 0
            || settings.rounds == 0
        {
            bail!("BENCH_SECS, BENCH_CONCURRENCY, BENCH_STREAMS and BENCH_ROUNDS must be > 0");
        }
        Ok(settings)
    }

    fn runtime_description(&self) -> String {
        if self.client_threads <= 1 {
            "1 current-thread runtime".to_owned()
        } else {
            format!("multi-thread runtime, {} workers", self.client_threads)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// The mock upstream and the gateway, running. Fields drop in order: children before the
/// temporary directory holding their data and output.
struct Servers {
    aigw: ChildGuard,
    mock: ChildGuard,
    /// The same mock over HTTPS (HTTP/2 by ALPN), for aigw processes reaching it
    /// [`Upstream::Tls`].
    tls_mock: ChildGuard,
    aigw_addr: SocketAddr,
    mock_addr: SocketAddr,
    tls_mock_addr: SocketAddr,
    /// The certificate of the CA that signed the HTTPS mock's.
    tls_mock_ca: PathBuf,
    aigw_bin: PathBuf,
    /// Which aigw process is running: 1 for the first, +1 per [`Servers::restart_aigw`].
    generation: u32,
    /// Successful logging-on requests sent to the running aigw: the log records it owes the
    /// store (written or dropped).
    owed_logs: u64,
    /// Log counters of the aigw processes already stopped, summed.
    retired_logs: LogCounters,
    /// Output files of every aigw process started, in order.
    aigw_logs: Vec<PathBuf>,
    data_dir: tempfile::TempDir,
}

/// How a fresh aigw reaches the mock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upstream {
    /// Plain HTTP/1.1, as the other phases do: a connection per request in flight.
    Plain,
    /// HTTPS, HTTP/2 chosen by ALPN — how aigw reaches real providers: one connection
    /// carries every request in flight.
    Tls,
}

impl Servers {
    fn start() -> Result<Self> {
        let (aigw_bin, mock_bin) = binaries_under_test()?;
        let data_dir = tempfile::Builder::new()
            .prefix("aigw-loadbench-")
            .tempdir()
            .context("cannot create a temporary directory")?;

        let (mock, mock_addr) = start_mock(&mock_bin, data_dir.path())?;
        let (tls_mock, tls_mock_addr, tls_mock_ca) = start_tls_mock(&mock_bin, data_dir.path())?;
        let (aigw, aigw_addr) = start_aigw(&aigw_bin, data_dir.path(), 1, mock_addr)?;
        Ok(Servers {
            aigw_logs: vec![aigw.log().to_path_buf()],
            aigw,
            mock,
            tls_mock,
            aigw_addr,
            mock_addr,
            tls_mock_addr,
            tls_mock_ca,
            aigw_bin,
            generation: 1,
            owed_logs: 0,
            retired_logs: LogCounters::default(),
            data_dir,
        })
    }

    /// Stops the running aigw (after reading its log counters) and starts a fresh one with an
    /// empty data directory of its own, reaching the mock over `upstream`; waits until it is
    /// healthy. The old data directory stays until the end (removing it now would load the
    /// machine during the next phase).
    async fn restart_aigw(&mut self, upstream: Upstream) -> Result<()> {
        let counters = self.log_counters().await?;
        self.retired_logs.written += counters.written;
        self.retired_logs.dropped += counters.dropped;
        self.aigw.stop();
        self.generation += 1;
        let tls_base = format!("https://{}/v1", self.tls_mock_addr);
        let ca = self.tls_mock_ca.to_string_lossy().into_owned();
        let env: &[(&str, &str)] = match upstream {
            Upstream::Plain => &[],
            Upstream::Tls => &[
                ("AIGW_PROVIDERS__OPENAI__BASE_URL", &tls_base),
                ("AIGW_PROXY__UPSTREAM_CA_FILE", &ca),
            ],
        };
        let (aigw, addr) = start_aigw_with(
            &self.aigw_bin,
            self.data_dir.path(),
            self.generation,
            self.mock_addr,
            env,
        )?;
        self.aigw_logs.push(aigw.log().to_path_buf());
        // Dropping the old guard is a no-op: it was stopped and reaped above.
        self.aigw = aigw;
        self.aigw_addr = addr;
        self.owed_logs = 0;
        self.wait_healthy().await
    }

    fn pids(&self) -> Pids {
        Pids {
            aigw: Pid::Other(self.aigw.pid()),
            mock: Pid::Other(self.mock.pid()),
        }
    }

    fn addrs(&self) -> Addrs {
        Addrs {
            mock: self.mock_addr,
            aigw: self.aigw_addr,
        }
    }

    fn ensure_running(&mut self) -> Result<()> {
        self.aigw.ensure_running()?;
        self.tls_mock.ensure_running()?;
        self.mock.ensure_running()
    }

    /// Waits until aigw answers `GET /healthz` with 200.
    async fn wait_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            self.ensure_running()?;
            if let Ok(Ok(StatusCode::OK)) =
                tokio::time::timeout(Duration::from_secs(1), get(self.aigw_addr, "/healthz")).await
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "aigw did not answer /healthz on {} within {STARTUP_TIMEOUT:?}; its output:\n{}",
                    self.aigw_addr,
                    tail_of(self.aigw.log(), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The running aigw's log counters from `/metrics`.
    async fn log_counters(&mut self) -> Result<LogCounters> {
        let answer =
            tokio::time::timeout(Duration::from_secs(5), get_text(self.aigw_addr, "/metrics"))
                .await
                .map_err(|_| anyhow!("aigw did not answer /metrics within 5 s"));
        match answer {
            Ok(Ok((StatusCode::OK, text))) => Ok(LogCounters::parse(&text)),
            Ok(Ok((status, _))) => bail!("aigw answered /metrics with {status}"),
            Ok(Err(e)) | Err(e) => {
                self.ensure_running()?;
                Err(e.context("cannot read aigw's /metrics"))
            }
        }
    }

    /// Log counters of every aigw process of this run, summed (the queue depth is the running
    /// one's).
    async fn all_log_counters(&mut self) -> Result<LogCounters> {
        let now = self.log_counters().await?;
        Ok(LogCounters {
            queued: now.queued,
            written: now.written + self.retired_logs.written,
            dropped: now.dropped + self.retired_logs.dropped,
        })
    }

    /// Waits until the log store has caught up with every logged request sent so far: the queue
    /// is empty, written + dropped records cover [`Servers::owed_logs`], and for
    /// [`DRAIN_QUIET`] the counters have not moved and aigw has been idle (at most
    /// [`IDLE_CPU`]). Gives up after [`DRAIN_TIMEOUT`] with a warning.
    async fn wait_for_store(&mut self) -> Result<Drain> {
        let started = Instant::now();
        let pid = Pid::Other(self.aigw.pid());
        let owed = u64_f64(self.owed_logs);
        let idle_ticks = (procfs::clock_ticks_per_sec()
            * u64::try_from(IDLE_CPU.as_millis()).unwrap_or(u64::MAX)
            / 1000)
            .max(1);
        let ticks = || procfs::cpu_ticks(pid).context("cannot read aigw's CPU time");
        let mut counters = self.log_counters().await?;
        // The last moment the store was seen busy, and aigw's CPU time then.
        let (mut busy_at, mut busy_ticks) = (Instant::now(), ticks()?);
        loop {
            tokio::time::sleep(DRAIN_POLL).await;
            let now_counters = self.log_counters().await?;
            let (now, now_ticks) = (Instant::now(), ticks()?);
            if now_counters.queued > 0.0
                || now_counters.written != counters.written
                || now_counters.dropped != counters.dropped
                || now_ticks > busy_ticks + idle_ticks
            {
                (busy_at, busy_ticks) = (now, now_ticks);
            }
            counters = now_counters;
            if counters.settled() >= owed && now.duration_since(busy_at) >= DRAIN_QUIET {
                return Ok(Drain {
                    took: started.elapsed(),
                    timeouts: 0,
                });
            }
            if now.duration_since(started) > DRAIN_TIMEOUT {
                eprintln!(
                    "loadbench: warning: aigw's log store had not caught up after {DRAIN_TIMEOUT:?} \
                     ({} queued, {} written + {} dropped of {} logged requests); going on",
                    counters.queued, counters.written, counters.dropped, self.owed_logs
                );
                return Ok(Drain {
                    took: started.elapsed(),
                    timeouts: 1,
                });
            }
        }
    }
}

/// aigw's log-path counters from `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct LogCounters {
    /// `aigw_log_queue_depth`: records waiting for the store.
    queued: f64,
    /// `aigw_logs_written_total`: records the store accepted.
    written: f64,
    /// `aigw_logs_dropped_total`, every reason: records that will never be stored.
    dropped: f64,
}

impl LogCounters {
    fn parse(text: &str) -> Self {
        LogCounters {
            queued: metric_sum(text, "aigw_log_queue_depth"),
            written: metric_sum(text, "aigw_logs_written_total"),
            dropped: metric_sum(text, "aigw_logs_dropped_total"),
        }
    }

    /// Records the store is done with: written or dropped.
    fn settled(self) -> f64 {
        self.written + self.dropped
    }

    /// The counters' increase since `before` (the queue depth is the current one).
    fn since(self, before: LogCounters) -> LogCounters {
        LogCounters {
            queued: self.queued,
            written: self.written - before.written,
            dropped: self.dropped - before.dropped,
        }
    }
}

/// What waiting for the log store took, summed over runs.
#[derive(Clone, Copy, Debug, Default)]
struct Drain {
    /// From the end of the run until the store had caught up (or the deadline passed).
    took: Duration,
    /// Waits that hit the deadline.
    timeouts: u32,
}

impl Drain {
    fn add(&mut self, other: Drain) {
        self.took += other.took;
        self.timeouts += other.timeouts;
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and connections

/// One kind of request sent to one server.
struct Target {
    addr: SocketAddr,
    uri: Uri,
    host: HeaderValue,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    /// A server-sent-event stream that must end with `data: [DONE]`.
    sse: bool,
}

/// Which server a [`Target`] goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Direct,
    Aigw,
    AigwNoLog,
}

/// Which request body and mock headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Small non-streaming chat.
    Small,
    /// Streaming chat of `chunks` words, `delay_ms` apart.
    Stream { chunks: u32, delay_ms: u32 },
}

/// The small chat request body (about 200 bytes).
fn chat_body(stream: bool) -> Bytes {
    let stream = if stream { r#","stream":true"# } else { "" };
    Bytes::from(format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"system","content":"You are a terse assistant."}},{{"role":"user","content":"In one sentence: why do HTTP keep-alive connections cut latency?"}}],"max_tokens":32{stream}}}"#
    ))
}

/// Where the two servers listen.
#[derive(Clone, Copy, Debug)]
struct Addrs {
    mock: SocketAddr,
    aigw: SocketAddr,
}

impl Target {
    fn new(addrs: Addrs, via: Via, kind: Kind) -> Result<Self> {
        let (addr, path) = match via {
            Via::Direct => (addrs.mock, DIRECT_PATH),
            Via::Aigw | Via::AigwNoLog => (addrs.aigw, AIGW_PATH),
        };
        let mut headers = vec![
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::AUTHORIZATION,
                HeaderValue::from_static("Bearer sk-loadbench-not-a-real-key"),
            ),
        ];
        if via == Via::AigwNoLog {
            headers.push((
                HeaderName::from_static("cf-aig-collect-log"),
                HeaderValue::from_static("false"),
            ));
        }
        let sse = match kind {
            Kind::Small => false,
            Kind::Stream { chunks, delay_ms } => {
                headers.push((
                    HeaderName::from_static("x-mock-chunks"),
                    HeaderValue::from(chunks),
                ));
                if delay_ms > 0 {
                    headers.push((
                        HeaderName::from_static("x-mock-chunk-delay-ms"),
                        HeaderValue::from(delay_ms),
                    ));
                }
                true
            }
        };
        Ok(Target {
            addr,
            uri: Uri::from_static(path),
            host: HeaderValue::from_str(&addr.to_string()).context("address as Host header")?,
            headers,
            body: chat_body(sse),
            sse,
        })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        let headers = req.headers_mut();
        headers.insert(header::HOST, self.host.clone());
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        req
    }
}

/// Opens one keep-alive HTTP/1.1 connection (TCP_NODELAY) and drives it on a spawned task.
async fn connect<B>(addr: SocketAddr) -> Result<SendRequest<B>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        // Failures surface on the request side.
        let _ = conn.await;
    });
    Ok(sender)
}

/// `GET path` on a fresh connection; the response status.
async fn get(addr: SocketAddr, path: &'static str) -> Result<StatusCode> {
    get_text(addr, path).await.map(|(status, _)| status)
}

/// `GET path` on a fresh connection; the response status and body.
async fn get_text(addr: SocketAddr, path: &'static str) -> Result<(StatusCode, String)> {
    let mut sender = connect::<Empty<Bytes>>(addr)
        .await
        .map_err(|e| anyhow!(e))?;
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = Uri::from_static(path);
    req.headers_mut().insert(
        header::HOST,
        HeaderValue::from_str(&addr.to_string()).context("address as Host header")?,
    );
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Sends one request on `sender` and reads the response to its end. `on_head` runs when the
/// response head arrives. Errors are short descriptions, counted by kind.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    on_head: impl FnOnce(),
) -> Result<(), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let resp = sender
        .send_request(target.request())
        .await
        .map_err(|e| format!("request: {e}"))?;
    on_head();
    let status = resp.status();
    let mut body = resp.into_body();
    let mut bytes = 0usize;
    let mut tail: Vec<u8> = Vec::with_capacity(32);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            bytes += data.len();
            if target.sse {
                tail.extend_from_slice(&data[data.len().saturating_sub(16)..]);
                let excess = tail.len().saturating_sub(16);
                tail.drain(..excess);
            }
        }
    }
    if status != StatusCode::OK {
        return Err(format!("status {status}"));
    }
    if bytes == 0 {
        return Err("empty response body".to_owned());
    }
    if target.sse && !tail.windows(6).any(|w| w == b"[DONE]") {
        return Err("stream ended without data: [DONE]".to_owned());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Closed-loop runs

/// The processes whose CPU time is measured.
#[derive(Clone, Copy, Debug)]
struct Pids {
    aigw: Pid,
    mock: Pid,
}

/// CPU clock ticks used by the gateway, the mock and this load generator.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    aigw: u64,
    mock: u64,
    client: u64,
}

impl Cpu {
    fn read(pids: Pids) -> Result<Self> {
        Ok(Cpu {
            aigw: procfs::cpu_ticks(pids.aigw).context("cannot read aigw's CPU time")?,
            mock: procfs::cpu_ticks(pids.mock).context("cannot read the mock's CPU time")?,
            client: procfs::cpu_ticks(Pid::This).context("cannot read this process's CPU time")?,
        })
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            aigw: self.aigw.saturating_sub(before.aigw),
            mock: self.mock.saturating_sub(before.mock),
            client: self.client.saturating_sub(before.client),
        }
    }

    fn plus(self, other: Cpu) -> Cpu {
        Cpu {
            aigw: self.aigw + other.aigw,
            mock: self.mock + other.mock,
            client: self.client + other.client,
        }
    }
}

/// The measurement window of a run: requests started in `[measure_from, end)` are measured.
#[derive(Clone, Copy, Debug)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

/// What one worker saw.
#[derive(Debug, Default)]
struct WorkerOut {
    latencies: Latencies,
    errors: BTreeMap<String, u64>,
    connections: u64,
    /// Successful requests, warm-up included.
    completed: u64,
}

/// The result of one closed-loop run.
#[derive(Debug)]
struct RunResult {
    label: String,
    via: Via,
    concurrency: usize,
    latencies: Latencies,
    /// From the start of the measurement window until the last measured request ended.
    elapsed: Duration,
    errors: BTreeMap<String, u64>,
    connections: u64,
    /// CPU over the measurement window (from its start until the last measured request ended).
    cpu: Cpu,
    /// Successful requests, warm-up included.
    completed: u64,
    /// CPU from the start of the warm-up until the log store had caught up with the run
    /// (logging on), or [`SETTLE`] after its end (otherwise).
    cpu_all: Cpu,
    /// How aigw's log counters moved over the same span (not read for direct runs).
    logs: LogCounters,
    /// Waiting for the log store after the run (logging on only).
    drain: Drain,
    /// Requests/s of each interleaved round, in order.
    round_rps: Vec<f64>,
}

impl RunResult {
    fn requests(&self) -> usize {
        self.latencies.len()
    }

    fn rps(&self) -> f64 {
        usize_f64(self.requests()) / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// CPU µs per measured request from `ticks` clock ticks.
    fn cpu_us_per_request(&self, ticks: u64, ticks_per_sec: u64) -> Option<f64> {
        (self.requests() > 0)
            .then(|| u64_f64(ticks) * 1e6 / u64_f64(ticks_per_sec) / usize_f64(self.requests()))
    }

    /// aigw CPU µs per successful request over [`RunResult::cpu_all`]: warm-up, window and
    /// the wait for the log store.
    fn aigw_cpu_all_us_per_request(&self, ticks_per_sec: u64) -> Option<f64> {
        self.cpu_all_us_per_request(self.cpu_all.aigw, ticks_per_sec)
    }

    /// CPU µs of aigw, the mock and this generator together per successful request over
    /// [`RunResult::cpu_all`]: what one request costs the whole machine.
    fn machine_cpu_all_us_per_request(&self, ticks_per_sec: u64) -> Option<f64> {
        let all = self.cpu_all;
        self.cpu_all_us_per_request(all.aigw + all.mock + all.client, ticks_per_sec)
    }

    fn cpu_all_us_per_request(&self, ticks: u64, ticks_per_sec: u64) -> Option<f64> {
        (self.completed > 0)
            .then(|| u64_f64(ticks) * 1e6 / u64_f64(ticks_per_sec) / u64_f64(self.completed))
    }

    /// Adds another slice of the same variant.
    fn absorb(&mut self, other: RunResult) {
        self.latencies.merge(other.latencies);
        self.elapsed += other.elapsed;
        for (error, n) in other.errors {
            *self.errors.entry(error).or_default() += n;
        }
        self.connections += other.connections;
        self.cpu = self.cpu.plus(other.cpu);
        self.completed += other.completed;
        self.cpu_all = self.cpu_all.plus(other.cpu_all);
        self.logs.written += other.logs.written;
        self.logs.dropped += other.logs.dropped;
        self.drain.add(other.drain);
        self.round_rps.extend(other.round_rps);
    }

    fn p(&mut self, q: f64) -> Duration {
        self.latencies.quantile(q).unwrap_or_default()
    }
}

/// The median of sorted `values` (the mean of the middle two for an even count).
fn median_of_sorted(values: &[f64]) -> Option<f64> {
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[mid]),
        _ => Some((values[mid - 1] + values[mid]) / 2.0),
    }
}

#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn usize_f64(n: usize) -> f64 {
    n as f64
}

#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn u64_f64(n: u64) -> f64 {
    n as f64
}

/// One closed-loop worker: requests back to back on its own connection until the window ends.
async fn worker(target: Arc<Target>, window: Window) -> WorkerOut {
    let mut out = WorkerOut::default();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        let start = Instant::now();
        if start >= window.end {
            break;
        }
        let conn = match sender.as_mut() {
            Some(conn) => conn,
            None => match connect(target.addr).await {
                Ok(conn) => {
                    out.connections += 1;
                    sender.insert(conn)
                }
                Err(e) => {
                    *out.errors.entry(e).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let result = tokio::time::timeout(REQUEST_TIMEOUT, exchange(conn, &target, || {}))
            .await
            .unwrap_or_else(|_| Err(format!("no complete response within {REQUEST_TIMEOUT:?}")));
        match result {
            Ok(()) => {
                out.completed += 1;
                if start >= window.measure_from {
                    out.latencies.record(start.elapsed());
                }
            }
            Err(e) => {
                *out.errors.entry(e).or_default() += 1;
                sender = None;
            }
        }
    }
    out
}

/// Runs `concurrency` closed-loop workers against `target`: `warmup`, then `duration` measured.
/// After a logging-on run, waits until the log store has caught up with it (outside the
/// measured window, inside [`RunResult::cpu_all`]).
async fn closed_loop(
    variant: &Variant,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    servers: &mut Servers,
) -> Result<RunResult> {
    let pids = servers.pids();
    let logs_before = match variant.via {
        Via::Direct => None,
        Via::Aigw | Via::AigwNoLog => Some(servers.log_counters().await?),
    };
    let cpu_start = Cpu::read(pids)?;
    let measure_from = Instant::now() + warmup;
    let window = Window {
        measure_from,
        end: measure_from + duration,
    };
    let workers: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(Arc::clone(&variant.target), window)))
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = Cpu::read(pids)?;
    let mut result = RunResult {
        label: variant.label.clone(),
        via: variant.via,
        concurrency,
        latencies: Latencies::default(),
        elapsed: Duration::ZERO,
        errors: BTreeMap::new(),
        connections: 0,
        cpu: Cpu::default(),
        completed: 0,
        cpu_all: Cpu::default(),
        logs: LogCounters::default(),
        drain: Drain::default(),
        round_rps: Vec::new(),
    };
    for handle in workers {
        let out = handle.await.context("a load worker panicked")?;
        result.latencies.merge(out.latencies);
        for (error, n) in out.errors {
            *result.errors.entry(error).or_default() += n;
        }
        result.connections += out.connections;
        result.completed += out.completed;
    }
    result.elapsed = measure_from.elapsed();
    result.round_rps.push(result.rps());
    result.cpu = Cpu::read(pids)?.since(cpu_before);
    if variant.via == Via::Aigw {
        servers.owed_logs += result.completed;
        result.drain = servers.wait_for_store().await?;
    } else {
        tokio::time::sleep(SETTLE).await;
    }
    result.cpu_all = Cpu::read(pids)?.since(cpu_start);
    if let Some(before) = logs_before {
        result.logs = servers.log_counters().await?.since(before);
    }
    Ok(result)
}

/// One side of a comparison.
struct Variant {
    label: String,
    via: Via,
    target: Arc<Target>,
}

impl Variant {
    fn new(label: &str, via: Via, target: Target) -> Self {
        Variant {
            label: label.to_owned(),
            via,
            target: Arc::new(target),
        }
    }
}

/// Measures every variant at `concurrency` for `settings.duration` in all, interleaved: in each
/// of `settings.rounds` rounds, every variant runs once for its share of the time (after its
/// share of the warm-up, on fresh connections). On a shared machine, background load then falls
/// on all variants alike instead of on whichever ran while a neighbour's compiler did. Prints one
/// line per variant and returns the merged results, in the order given.
async fn compare(
    variants: &[Variant],
    concurrency: usize,
    settings: &Settings,
    servers: &mut Servers,
) -> Result<Vec<RunResult>> {
    let rounds = u32::try_from(settings.rounds).unwrap_or(u32::MAX);
    let (warmup, slice) = (settings.warmup / rounds, settings.duration / rounds);
    let mut merged: Vec<Option<RunResult>> = variants.iter().map(|_| None).collect();
    for _ in 0..rounds {
        for (variant, total) in variants.iter().zip(&mut merged) {
            let run = closed_loop(variant, concurrency, warmup, slice, servers).await?;
            match total {
                Some(total) => total.absorb(run),
                None => *total = Some(run),
            }
        }
    }
    let ticks_per_sec = procfs::clock_ticks_per_sec();
    let mut results = Vec::with_capacity(variants.len());
    for mut run in merged.into_iter().flatten() {
        run.latencies.sort();
        print_run(&mut run, ticks_per_sec);
        results.push(run);
    }
    Ok(results)
}

fn print_run(run: &mut RunResult, ticks_per_sec: u64) {
    let per_req = |ticks| {
        run.cpu_us_per_request(ticks, ticks_per_sec)
            .map_or_else(|| "-".to_owned(), |us| format!("{us:.0}"))
    };
    let aigw_cpu = if run.via == Via::Direct {
        "-".to_owned()
    } else {
        per_req(run.cpu.aigw)
    };
    let (mock_cpu, client_cpu) = (per_req(run.cpu.mock), per_req(run.cpu.client));
    let (p50, p99) = (run.p(0.50), run.p(0.99));
    let errors = run.error_count();
    println!(
        "  {:<38} c={:<4} {:>8} req {:>9.0} req/s  p50 {:>10}  p99 {:>10}  conns {:>4}  CPU µs/req aigw {:>4} mock {:>4} client {:>4}{}",
        run.label,
        run.concurrency,
        run.requests(),
        run.rps(),
        fmt_ms(p50),
        fmt_ms(p99),
        run.connections,
        aigw_cpu,
        mock_cpu,
        client_cpu,
        if errors == 0 {
            String::new()
        } else {
            format!("  !!! {errors} ERRORS")
        }
    );
    match run.via {
        Via::Direct => {}
        Via::Aigw => println!(
            "  {:<38} warm-up + window + store catch-up: aigw CPU µs/req {:>4}; log records +{:.0} written, +{:.0} dropped; waited {:.2} s for the store{}",
            "",
            run.aigw_cpu_all_us_per_request(ticks_per_sec)
                .map_or_else(|| "-".to_owned(), |us| format!("{us:.0}")),
            run.logs.written,
            run.logs.dropped,
            run.drain.took.as_secs_f64(),
            if run.drain.timeouts == 0 {
                String::new()
            } else {
                format!("  !!! {} waits timed out", run.drain.timeouts)
            }
        ),
        Via::AigwNoLog => println!(
            "  {:<38} log records written during these runs: {:.0}{}",
            "",
            run.logs.written,
            if run.logs.written == 0.0 {
                " (store idle)"
            } else {
                "  !!! the store was busy"
            }
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Phase 4: many concurrent streams

/// The result of the concurrent-streams phase.
#[derive(Debug)]
struct StreamsResult {
    /// The fresh aigw's resident set right after it became healthy (KiB).
    start_rss_kib: u64,
    streams: usize,
    completed: usize,
    /// Most streams open at once (response head received, body not yet ended).
    peak_open: usize,
    wall: Duration,
    latencies: Latencies,
    errors: BTreeMap<String, u64>,
    /// aigw's resident set when idle, just before the phase.
    idle: procfs::Memory,
    /// aigw's `VmHWM` over its whole life so far, before the reset.
    lifetime_hwm_kib: u64,
    /// aigw's peak resident set during the phase: `VmHWM` after a reset, or the lifetime
    /// `VmHWM` when the reset was refused.
    peak_kib: u64,
    /// Whether `peak_kib` covers this phase only.
    peak_reset: bool,
    /// Highest `VmRSS` sampled every 50 ms during the phase.
    sampled_peak_kib: u64,
    /// Waiting for the log store to store the streams' records (logging on only); the peak
    /// figures cover this wait too.
    drain: Drain,
}

impl StreamsResult {
    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// What the streams added to the idle process at their peak (KiB).
    fn growth_kib(&self) -> u64 {
        self.peak_kib.saturating_sub(self.idle.rss_kib)
    }
}

/// Phase 4 for one variant: stops the running aigw, starts a fresh one (empty data directory),
/// warms it up for [`FRESH_WARMUP`] with streams of the same variant (no delay, one at a time),
/// then runs [`concurrent_streams`] on it.
async fn streams_on_fresh_aigw(
    label: &str,
    via: Via,
    upstream: Upstream,
    streams: usize,
    servers: &mut Servers,
) -> Result<StreamsResult> {
    servers.restart_aigw(upstream).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start_rss_kib = procfs::memory(servers.pids().aigw)
        .context("cannot read aigw's memory")?
        .rss_kib;
    let warm = Variant::new(
        "warm-up",
        via,
        Target::new(
            servers.addrs(),
            via,
            Kind::Stream {
                chunks: 50,
                delay_ms: 0,
            },
        )?,
    );
    let warm = closed_loop(&warm, 1, Duration::ZERO, FRESH_WARMUP, servers).await?;
    let target = Target::new(
        servers.addrs(),
        via,
        Kind::Stream {
            chunks: 50,
            delay_ms: 100,
        },
    )?;
    let mut result = concurrent_streams(label, target, via, streams, servers).await?;
    result.start_rss_kib = start_rss_kib;
    for (e, n) in warm.errors {
        *result.errors.entry(format!("warm-up: {e}")).or_default() += n;
    }
    Ok(result)
}

/// Opens `streams` streams through aigw at once, reads each to its end, and measures aigw's
/// resident set — until the log store has stored the streams' records, when logging is on.
async fn concurrent_streams(
    label: &str,
    target: Target,
    via: Via,
    streams: usize,
    servers: &mut Servers,
) -> Result<StreamsResult> {
    let pids = servers.pids();
    // Let the previous phase's connections and buffers settle before calling it idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = procfs::memory(pids.aigw).context("cannot read aigw's memory")?;
    let peak_reset = procfs::reset_peak_rss(pids.aigw).is_ok();

    let target = Arc::new(target);
    let open = Arc::new(AtomicUsize::new(0));
    let peak_open = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampled_peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, sampled_peak) = (Arc::clone(&done), Arc::clone(&sampled_peak));
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Ok(mem) = procfs::memory(pids.aigw) {
                    sampled_peak.fetch_max(mem.rss_kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let started = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let (target, open, peak_open) = (
                Arc::clone(&target),
                Arc::clone(&open),
                Arc::clone(&peak_open),
            );
            tokio::spawn(async move {
                let start = Instant::now();
                let mut conn = connect(target.addr).await?;
                let mut opened = false;
                let result = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    exchange(&mut conn, &target, || {
                        opened = true;
                        let now_open = open.fetch_add(1, Ordering::Relaxed) + 1;
                        peak_open.fetch_max(now_open, Ordering::Relaxed);
                    }),
                )
                .await
                .unwrap_or_else(|_| Err(format!("stream not finished within {REQUEST_TIMEOUT:?}")));
                if opened {
                    open.fetch_sub(1, Ordering::Relaxed);
                }
                result.map(|()| start.elapsed())
            })
        })
        .collect();

    let mut latencies = Latencies::with_capacity(streams);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let collect = async {
        for task in tasks {
            match task.await {
                Ok(Ok(latency)) => latencies.record(latency),
                Ok(Err(e)) => *errors.entry(e).or_default() += 1,
                Err(e) => {
                    *errors
                        .entry(format!("stream task failed: {e}"))
                        .or_default() += 1
                }
            }
        }
    };
    let finished = tokio::time::timeout(STREAMS_TIMEOUT, collect).await.is_ok();
    let wall = started.elapsed();
    let drain = if via == Via::Aigw {
        servers.owed_logs += u64::try_from(latencies.len()).unwrap_or(u64::MAX);
        servers.wait_for_store().await?
    } else {
        Drain::default()
    };
    done.store(true, Ordering::Relaxed);
    sampler.await.context("the RSS sampler panicked")?;
    if !finished {
        let missing =
            streams - latencies.len() - usize::try_from(errors.values().sum::<u64>()).unwrap_or(0);
        errors.insert(
            format!("streams still open after {STREAMS_TIMEOUT:?}"),
            u64::try_from(missing).unwrap_or(0),
        );
    }
    let after = procfs::memory(pids.aigw).context("cannot read aigw's memory")?;
    latencies.sort();
    let result = StreamsResult {
        start_rss_kib: 0,
        streams,
        completed: latencies.len(),
        peak_open: peak_open.load(Ordering::Relaxed),
        wall,
        latencies,
        errors,
        idle,
        lifetime_hwm_kib: idle.hwm_kib,
        peak_kib: after.hwm_kib,
        peak_reset,
        sampled_peak_kib: sampled_peak.load(Ordering::Relaxed),
        drain,
    };
    println!(
        "  {:<38} {} streams: {} completed, peak {} open at once, wall {:.2} s, aigw RSS idle {} → peak {} (+{}){}{}",
        label,
        result.streams,
        result.completed,
        result.peak_open,
        result.wall.as_secs_f64(),
        mib(result.idle.rss_kib),
        mib(result.peak_kib),
        mib(result.growth_kib()),
        if via == Via::Aigw {
            format!(
                ", then {:.2} s until the records were stored",
                result.drain.took.as_secs_f64()
            )
        } else {
            String::new()
        },
        if result.error_count() == 0 {
            String::new()
        } else {
            format!("  !!! {} ERRORS", result.error_count())
        }
    );
    Ok(result)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", u64_f64(kib) / 1024.0)
}

// ---------------------------------------------------------------------------------------------
// The bench

/// Everything measured.
struct Report {
    c1_direct: RunResult,
    c1_aigw: RunResult,
    direct: RunResult,
    aigw_log: RunResult,
    aigw_nolog: RunResult,
    /// Phase 4, logging on, upstream over HTTPS (HTTP/2).
    streams: StreamsResult,
    /// Phase 4, logging off, upstream over HTTPS (HTTP/2).
    streams_nolog: StreamsResult,
    /// Phase 4, logging on, upstream over plain HTTP/1.1.
    streams_h1: StreamsResult,
    stream_direct: RunResult,
    stream_aigw: RunResult,
    /// The first aigw's resident set after start, and after phases 1–3 (KiB).
    start_rss_kib: u64,
    phases_rss_kib: u64,
    /// Log counters of every aigw process, summed, if readable.
    log_counters: Option<LogCounters>,
}

async fn bench(settings: &Settings, servers: &mut Servers) -> Result<Report> {
    servers.wait_healthy().await?;
    let start_rss_kib = procfs::memory(servers.pids().aigw)
        .context("cannot read aigw's memory")?
        .rss_kib;
    let addrs = servers.addrs();
    let small = |via| Target::new(addrs, via, Kind::Small);
    println!(
        "aigw load bench: mock at {}, aigw at {} (logging on), request body {} bytes, \
         {} s per variant after {} s warm-up, interleaved in {} rounds\n",
        servers.mock_addr,
        servers.aigw_addr,
        chat_body(false).len(),
        settings.duration.as_secs_f64(),
        settings.warmup.as_secs_f64(),
        settings.rounds,
    );
    let c = settings.concurrency;

    println!("phase 1: latency at concurrency 1 (small chat)");
    let [c1_direct, c1_aigw] = two(compare(
        &[
            Variant::new("direct small", Via::Direct, small(Via::Direct)?),
            Variant::new("aigw small", Via::Aigw, small(Via::Aigw)?),
        ],
        1,
        settings,
        servers,
    )
    .await?)?;
    servers.ensure_running()?;

    println!("phase 2+3: throughput and gateway CPU at concurrency {c} (small chat)");
    let [direct, aigw_log, aigw_nolog] = three(
        compare(
            &[
                Variant::new("direct small", Via::Direct, small(Via::Direct)?),
                Variant::new("aigw small, logging on", Via::Aigw, small(Via::Aigw)?),
                Variant::new(
                    "aigw small, cf-aig-collect-log: false",
                    Via::AigwNoLog,
                    small(Via::AigwNoLog)?,
                ),
            ],
            c,
            settings,
            servers,
        )
        .await?,
    )?;
    servers.ensure_running()?;
    let phases_rss_kib = procfs::memory(servers.pids().aigw)
        .context("cannot read aigw's memory")?
        .rss_kib;

    println!(
        "phase 4: {} concurrent streams, each run on a fresh aigw (new process, empty data dir; \
         the first one holds {} after phases 1–3)",
        settings.streams,
        mib(phases_rss_kib),
    );
    // Each variant on a process of its own, so none inherits another's memory (nor the sled
    // cache phases 1–3 filled). The upstream is reached as real providers are — HTTPS, HTTP/2
    // by ALPN — and, for comparison, over plain HTTP/1.1 (a connection per open stream).
    let streams_nolog = streams_on_fresh_aigw(
        "aigw, 50 chunks × 100 ms, no log",
        Via::AigwNoLog,
        Upstream::Tls,
        settings.streams,
        servers,
    )
    .await?;
    servers.ensure_running()?;
    let streams = streams_on_fresh_aigw(
        "aigw, same, logging on",
        Via::Aigw,
        Upstream::Tls,
        settings.streams,
        servers,
    )
    .await?;
    servers.ensure_running()?;
    let streams_h1 = streams_on_fresh_aigw(
        "aigw, same, logging on, upstream h1",
        Via::Aigw,
        Upstream::Plain,
        settings.streams,
        servers,
    )
    .await?;
    servers.ensure_running()?;

    println!(
        "phase 5: streaming throughput at concurrency {c} (20 chunks, no delay; \
         on phase 4's last aigw: logging on, upstream h1 like the direct runs)"
    );
    let addrs = servers.addrs();
    let streaming = |via| {
        Target::new(
            addrs,
            via,
            Kind::Stream {
                chunks: 20,
                delay_ms: 0,
            },
        )
    };
    let [stream_direct, stream_aigw] = two(compare(
        &[
            Variant::new("direct stream", Via::Direct, streaming(Via::Direct)?),
            Variant::new("aigw stream", Via::Aigw, streaming(Via::Aigw)?),
        ],
        c,
        settings,
        servers,
    )
    .await?)?;
    servers.ensure_running()?;

    let log_counters = servers.all_log_counters().await.ok();

    Ok(Report {
        c1_direct,
        c1_aigw,
        direct,
        aigw_log,
        aigw_nolog,
        streams,
        streams_nolog,
        streams_h1,
        stream_direct,
        stream_aigw,
        start_rss_kib,
        phases_rss_kib,
        log_counters,
    })
}

/// The two results of a two-variant comparison.
fn two(results: Vec<RunResult>) -> Result<[RunResult; 2]> {
    results
        .try_into()
        .map_err(|_| anyhow!("expected two results"))
}

/// The three results of a three-variant comparison.
fn three(results: Vec<RunResult>) -> Result<[RunResult; 3]> {
    results
        .try_into()
        .map_err(|_| anyhow!("expected three results"))
}

/// The sum of every sample of metric `name` (all label sets) in Prometheus text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, v| sum + v)
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
    /// Why the figure cannot be trusted (request errors, a busy store), if it cannot.
    tainted: Option<&'static str>,
}

impl Figure {
    fn info(name: impl Into<String>, value: impl Into<String>) -> Self {
        Figure {
            name: name.into(),
            value: value.into(),
            target: String::new(),
            pass: None,
            tainted: None,
        }
    }

    fn target(mut self, target: impl Into<String>, pass: bool) -> Self {
        self.target = target.into();
        self.pass = Some(pass);
        self
    }

    /// Marks the figure untrustworthy because its runs had request errors.
    fn tainted(self, tainted: bool) -> Self {
        self.suspect(tainted, "request errors")
    }

    /// Marks the figure untrustworthy for `why` when `suspect` (the first reason stays).
    fn suspect(mut self, suspect: bool, why: &'static str) -> Self {
        if suspect && self.tainted.is_none() {
            self.tainted = Some(why);
        }
        self
    }
}

impl Report {
    /// Prints the table; returns the number of failed requests.
    fn print(mut self, settings: &Settings, servers: &Servers) -> u64 {
        let tck = procfs::clock_ticks_per_sec();
        let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
        let c = settings.concurrency;
        let mut figures = Vec::new();

        // Latency at concurrency 1.
        let tainted1 = self.c1_direct.error_count() + self.c1_aigw.error_count() > 0;
        let (d50, d99) = (self.c1_direct.p(0.50), self.c1_direct.p(0.99));
        let (a50, a99) = (self.c1_aigw.p(0.50), self.c1_aigw.p(0.99));
        figures.push(Figure::info(
            "latency c=1 direct p50 / p99",
            format!("{} / {}", fmt_ms(d50), fmt_ms(d99)),
        ));
        figures.push(Figure::info(
            "latency c=1 aigw p50 / p99",
            format!("{} / {}", fmt_ms(a50), fmt_ms(a99)),
        ));
        let added50 = delta_ms(a50, d50);
        figures.push(
            Figure::info(
                "added latency p50 (aigw − direct, c=1)",
                format!("{added50:.3} ms"),
            )
            .target("≤ 0.200 ms", added50 <= 0.2)
            .tainted(tainted1),
        );
        figures.push(
            Figure::info(
                "added latency p99 (aigw − direct, c=1)",
                format!("{:.3} ms", delta_ms(a99, d99)),
            )
            .tainted(tainted1),
        );

        // Throughput at concurrency c.
        let tainted2 =
            self.direct.error_count() + self.aigw_log.error_count() + self.aigw_nolog.error_count()
                > 0;
        let direct_rps = self.direct.rps();
        for (name, run) in [
            ("direct", &mut self.direct),
            ("aigw, logging on", &mut self.aigw_log),
            ("aigw, cf-aig-collect-log: false", &mut self.aigw_nolog),
        ] {
            let ratio = if run.via == Via::Direct {
                String::new()
            } else {
                format!("  aigw/direct {:.2}", run.rps() / direct_rps.max(1e-9))
            };
            figures.push(Figure::info(
                format!("throughput c={c} small, {name}"),
                format!("{:.0} req/s{ratio}", run.rps()),
            ));
            figures.push(Figure::info(
                format!("latency c={c} small, {name} p50 / p99"),
                format!("{} / {}", fmt_ms(run.p(0.50)), fmt_ms(run.p(0.99))),
            ));
        }
        let overhead = |on: f64, off: f64| (1.0 - on / off.max(1e-9)) * 100.0;
        let pooled = overhead(self.aigw_log.rps(), self.aigw_nolog.rps());
        // Each round runs both variants back to back: a burst of background load on a shared
        // machine lands on one round's pair, which the median sets aside and pooling does not.
        let mut rounds: Vec<f64> = (self.aigw_log.round_rps.iter())
            .zip(&self.aigw_nolog.round_rps)
            .map(|(on, off)| overhead(*on, *off))
            .collect();
        rounds.sort_by(f64::total_cmp);
        let median = median_of_sorted(&rounds).unwrap_or(pooled);
        figures.push(
            Figure::info(
                format!(
                    "logging overhead, 1 − rps(on)/rps(off), median of {} paired rounds",
                    rounds.len()
                ),
                format!("{median:.1} %"),
            )
            .target("≤ 15 %", median <= 15.0)
            .tainted(tainted2),
        );
        figures.push(Figure::info(
            "  (rounds lowest … highest; pooled over every round)",
            format!(
                "{:.1} … {:.1} %; {pooled:.1} %",
                rounds.first().copied().unwrap_or(pooled),
                rounds.last().copied().unwrap_or(pooled)
            ),
        ));

        // The same overhead from CPU time: when the machine is the bottleneck, throughput is
        // its cores over the CPU one request costs them, so the ratio of CPU per request is
        // the throughput ratio without the idle and stolen time that make rates noisy.
        let machine_on = self.aigw_log.machine_cpu_all_us_per_request(tck);
        let machine_off = self.aigw_nolog.machine_cpu_all_us_per_request(tck);
        if let (Some(on), Some(off)) = (machine_on, machine_off) {
            let by_cpu = overhead(off, on);
            figures.push(
                Figure::info(
                    "logging overhead by CPU, 1 − cpu(off)/cpu(on) per request, pooled",
                    format!("{by_cpu:.1} %"),
                )
                .target("≤ 15 %", by_cpu <= 15.0)
                .tainted(tainted2),
            );
            figures.push(Figure::info(
                "  (aigw + mock + generator CPU per request, on / off; incl. warm-ups, store catch-up)",
                format!("{on:.1} / {off:.1} µs"),
            ));
        }

        // Gateway CPU.
        let nolog_store_busy = self.aigw_nolog.logs.written > 0.0;
        let cpu_nolog = self
            .aigw_nolog
            .cpu_us_per_request(self.aigw_nolog.cpu.aigw, tck);
        figures.push(
            Figure::info(
                format!("edge CPU per small request (c={c}, logging off)"),
                cpu_nolog.map_or_else(|| "-".to_owned(), |us| format!("{us:.1} µs")),
            )
            .target("≤ 60 µs", cpu_nolog.is_some_and(|us| us <= 60.0))
            .tainted(self.aigw_nolog.error_count() > 0)
            .suspect(nolog_store_busy, "store busy"),
        );
        figures.push(Figure::info(
            "  (log records stored during those runs)",
            format!(
                "{:.0}{}",
                self.aigw_nolog.logs.written,
                if nolog_store_busy {
                    ""
                } else {
                    " (store idle)"
                }
            ),
        ));
        let cpu_all = self.aigw_log.aigw_cpu_all_us_per_request(tck);
        figures.push(
            Figure::info(
                format!("edge + log store CPU per logged request (c={c}, all-in-one)"),
                cpu_all.map_or_else(|| "-".to_owned(), |us| format!("{us:.1} µs")),
            )
            .tainted(self.aigw_log.error_count() > 0)
            .suspect(self.aigw_log.drain.timeouts > 0, "store not caught up"),
        );
        figures.push(Figure::info(
            "  (incl. warm-ups, store catch-up; records stored / dropped)",
            format!(
                "{:.0} / {:.0}; waited {:.2} s{}",
                self.aigw_log.logs.written,
                self.aigw_log.logs.dropped,
                self.aigw_log.drain.took.as_secs_f64(),
                if self.aigw_log.drain.timeouts == 0 {
                    String::new()
                } else {
                    format!(", {} timed out", self.aigw_log.drain.timeouts)
                }
            ),
        ));
        let cpu_log_window = self
            .aigw_log
            .cpu_us_per_request(self.aigw_log.cpu.aigw, tck);
        figures.push(Figure::info(
            "  (logging on, timed windows only: edge + concurrent store)",
            cpu_log_window.map_or_else(|| "-".to_owned(), |us| format!("{us:.1} µs")),
        ));

        // Memory.
        let n = self.streams.streams;
        let (on, off, h1) = (
            &mut self.streams,
            &mut self.streams_nolog,
            &mut self.streams_h1,
        );
        figures.push(Figure::info(
            "1st aigw RSS at start / after phases 1–3 (sled cache)",
            format!("{} / {}", mib(self.start_rss_kib), mib(self.phases_rss_kib)),
        ));
        figures.push(Figure::info(
            "fresh aigw (logging on) RSS at start / idle after warm-up",
            format!("{} / {}", mib(on.start_rss_kib), mib(on.idle.rss_kib)),
        ));
        let scope = if on.peak_reset {
            "run's VmHWM"
        } else {
            "lifetime VmHWM"
        };
        figures.push(
            Figure::info(
                format!("peak RSS, {n} streams, logging on, upstream HTTPS/h2 ({scope})"),
                mib(on.peak_kib),
            )
            .target("≤ 64 MiB", on.peak_kib <= 64 * 1024)
            .tainted(on.error_count() > 0 || on.peak_open < on.streams)
            .suspect(on.drain.timeouts > 0, "store not caught up"),
        );
        figures.push(Figure::info(
            "  what the streams add: peak − idle",
            format!("+{}", mib(on.growth_kib())),
        ));
        figures.push(Figure::info(
            "  (sampled peak VmRSS; lifetime VmHWM before the streams)",
            format!("{}; {}", mib(on.sampled_peak_kib), mib(on.lifetime_hwm_kib)),
        ));
        figures.push(Figure::info(
            "  streams completed / peak open at once / wall",
            format!(
                "{} / {} / {:.2} s",
                on.completed,
                on.peak_open,
                on.wall.as_secs_f64()
            ),
        ));
        figures.push(Figure::info(
            "  stream duration p50 / p99",
            format!(
                "{} / {}",
                fmt_ms(on.latencies.quantile(0.5).unwrap_or_default()),
                fmt_ms(on.latencies.quantile(0.99).unwrap_or_default())
            ),
        ));
        figures.push(
            Figure::info(
                format!("peak RSS, {n} streams, collect-log false, upstream HTTPS/h2"),
                format!(
                    "{} (idle {}, +{})",
                    mib(off.peak_kib),
                    mib(off.idle.rss_kib),
                    mib(off.growth_kib())
                ),
            )
            .tainted(off.error_count() > 0 || off.peak_open < off.streams),
        );
        figures.push(
            Figure::info(
                format!("peak RSS, {n} streams, logging on, upstream plain HTTP/1.1"),
                format!(
                    "{} (idle {}, +{})",
                    mib(h1.peak_kib),
                    mib(h1.idle.rss_kib),
                    mib(h1.growth_kib())
                ),
            )
            .tainted(h1.error_count() > 0 || h1.peak_open < h1.streams)
            .suspect(h1.drain.timeouts > 0, "store not caught up"),
        );

        // Streaming throughput.
        let stream_direct_rps = self.stream_direct.rps();
        figures.push(Figure::info(
            format!("streaming c={c} (20 chunks), direct"),
            format!(
                "{stream_direct_rps:.0} req/s, p50 {}",
                fmt_ms(self.stream_direct.p(0.5))
            ),
        ));
        figures.push(Figure::info(
            format!("streaming c={c} (20 chunks), aigw"),
            format!(
                "{:.0} req/s, p50 {}  aigw/direct {:.2}",
                self.stream_aigw.rps(),
                fmt_ms(self.stream_aigw.p(0.5)),
                self.stream_aigw.rps() / stream_direct_rps.max(1e-9)
            ),
        ));

        // Logging sanity.
        if let Some(logs) = self.log_counters {
            figures.push(
                Figure::info(
                    "log records written / dropped (/metrics, all aigw processes)",
                    format!("{:.0} / {:.0}", logs.written, logs.dropped),
                )
                .target("0 dropped", logs.dropped == 0.0),
            );
        }

        // Errors.
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        for run in [
            &self.c1_direct,
            &self.c1_aigw,
            &self.direct,
            &self.aigw_log,
            &self.aigw_nolog,
            &self.stream_direct,
            &self.stream_aigw,
        ] {
            for (e, n) in &run.errors {
                *errors.entry(format!("{}: {e}", run.label)).or_default() += n;
            }
        }
        for (label, streams) in [
            ("concurrent streams, logging on", &self.streams),
            ("concurrent streams, logging off", &self.streams_nolog),
            (
                "concurrent streams, logging on, upstream h1",
                &self.streams_h1,
            ),
        ] {
            for (e, n) in &streams.errors {
                *errors.entry(format!("{label}: {e}")).or_default() += n;
            }
        }
        let error_total: u64 = errors.values().sum();
        figures.push(
            Figure::info("request errors (all runs)", error_total.to_string())
                .target("0", error_total == 0),
        );

        println!();
        println!(
            "== aigw load bench: {cores} cores, {} s per variant after {} s warm-up in {} rounds, load generator on {} ==",
            settings.duration.as_secs_f64(),
            settings.warmup.as_secs_f64(),
            settings.rounds,
            settings.runtime_description()
        );
        println!("   (load average at the end: {})", procfs::load_average());
        println!("{:<62} {:<38} {:<12} mark", "figure", "value", "target");
        for f in &figures {
            let mark = match (f.pass, f.tainted) {
                (Some(_), Some(why)) => format!("MISS ({why})"),
                (Some(true), None) => "ok".to_owned(),
                (Some(false), None) => "MISS".to_owned(),
                (None, _) => String::new(),
            };
            println!("{:<62} {:<38} {:<12} {mark}", f.name, f.value, f.target);
        }
        println!(
            "notes: added latency = difference of the percentiles; CPU time from /proc/<pid>/stat at {tck} ticks/s, \
             divided by the requests measured (all-in-one: by every request of the runs, warm-ups included); \
             after each logging-on run the bench waits, untimed, for the log store to catch up; \
             phase 4 runs on fresh aigw processes"
        );
        for (i, log) in servers.aigw_logs.iter().enumerate() {
            let aigw_output = tail_of(log, 5);
            if aigw_output != "(no output)" {
                println!(
                    "aigw #{} printed (RUST_LOG=warn), last lines:\n{aigw_output}",
                    i + 1
                );
            }
        }

        if error_total > 0 {
            println!();
            println!(
                "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
            );
            println!("!!! {error_total} REQUESTS FAILED — the figures above are not trustworthy:");
            for (e, n) in &errors {
                println!("!!!   {n:>7} × {e}");
            }
            println!(
                "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
            );
        }
        error_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_rounds_is_the_middle_one_or_the_mean_of_two() {
        assert_eq!(median_of_sorted(&[]), None);
        assert_eq!(median_of_sorted(&[3.0]), Some(3.0));
        assert_eq!(median_of_sorted(&[1.0, 2.0, 40.0]), Some(2.0));
        assert_eq!(median_of_sorted(&[1.0, 2.0, 4.0, 40.0]), Some(3.0));
    }

    #[test]
    fn metric_sum_adds_every_label_set_of_one_metric_only() {
        let text = "# HELP aigw_logs_dropped_total x\n\
                    aigw_logs_dropped_total{reason=\"queue_full\"} 2\n\
                    aigw_logs_dropped_total{reason=\"sink_error\"} 3\n\
                    aigw_logs_dropped_total_other 100\n\
                    aigw_logs_written_total 7\n";
        assert!((metric_sum(text, "aigw_logs_dropped_total") - 5.0).abs() < 1e-9);
        assert!((metric_sum(text, "aigw_logs_written_total") - 7.0).abs() < 1e-9);
        assert!(metric_sum(text, "absent").abs() < 1e-9);
    }

    #[test]
    fn log_counters_read_queue_written_and_every_drop_reason() {
        let before = LogCounters::parse(
            "aigw_log_queue_capacity 16384\n\
             aigw_log_queue_depth 0\n\
             aigw_logs_written_total 100\n\
             aigw_logs_dropped_total{reason=\"queue_full\"} 1\n",
        );
        assert_eq!(
            before,
            LogCounters {
                queued: 0.0,
                written: 100.0,
                dropped: 1.0
            }
        );
        let after = LogCounters::parse(
            "aigw_log_queue_depth 7\n\
             aigw_logs_written_total 150\n\
             aigw_logs_dropped_total{reason=\"queue_full\"} 1\n\
             aigw_logs_dropped_total{reason=\"sink_error\"} 2\n",
        );
        assert!((after.settled() - 153.0).abs() < 1e-9);
        let delta = after.since(before);
        assert_eq!(
            delta,
            LogCounters {
                queued: 7.0,
                written: 50.0,
                dropped: 2.0
            }
        );
    }

    #[test]
    fn request_bodies_are_small_chat_requests() {
        let small = chat_body(false);
        let stream = chat_body(true);
        assert!((150..=260).contains(&small.len()), "{}", small.len());
        assert!(!small.windows(6).any(|w| w == b"stream"));
        assert!(stream.ends_with(br#","stream":true}"#));
    }

    #[test]
    fn targets_carry_the_path_and_control_headers() {
        let addrs = Addrs {
            mock: "127.0.0.1:1".parse().expect("valid"),
            aigw: "127.0.0.1:2".parse().expect("valid"),
        };
        let direct = Target::new(addrs, Via::Direct, Kind::Small).expect("target");
        let req = direct.request();
        assert_eq!(req.uri().path(), DIRECT_PATH);
        assert_eq!(req.headers()[header::HOST], "127.0.0.1:1");
        let nolog = Target::new(
            addrs,
            Via::AigwNoLog,
            Kind::Stream {
                chunks: 50,
                delay_ms: 100,
            },
        )
        .expect("target");
        let req = nolog.request();
        assert_eq!(req.uri().path(), AIGW_PATH);
        assert_eq!(req.headers()["cf-aig-collect-log"], "false");
        assert_eq!(req.headers()["x-mock-chunks"], "50");
        assert_eq!(req.headers()["x-mock-chunk-delay-ms"], "100");
        assert!(nolog.sse);
    }
}
