//! `loadbench`: aigw's end-to-end load bench (run by `make bench`).
//!
//! It starts the release binaries as child processes — the mock upstream
//! (`target/release/aigw-mock --no-record`) and the gateway (`target/release/aigw serve`, logging
//! on, log records appended to a temporary `logs.jsonl`) — then drives the same request mix
//! straight to the mock and through aigw, in one run, and prints one line per figure with its
//! target and an `ok`/`MISS` mark. Figures are reported, never asserted: the exit status is 0
//! whatever the figures, and 1 only when requests failed (a bench with errors measures nothing).
//!
//! Phases:
//!
//! 1. concurrency 1, small non-streaming chat: direct vs aigw → p50/p99 and the added latency
//!    (difference of the percentiles, aigw − direct);
//! 2. concurrency `BENCH_CONCURRENCY`, small chat: direct vs aigw vs aigw with
//!    `cf-aig-collect-log: false` → requests/s, p50/p99, logging overhead
//!    `1 − rps(log on) / rps(log off)`;
//! 3. gateway CPU per request: `utime + stime` of the aigw process over phase 2's logged run,
//!    divided by its requests;
//! 4. `BENCH_STREAMS` (1,000) concurrent streams through aigw (50 chunks, 100 ms apart, each
//!    read to its end), first with `cf-aig-collect-log: false`, then logging on → aigw's peak
//!    RSS (`VmHWM`, reset before each run), next to its idle RSS;
//! 5. streaming chat (20 chunks, no delay) at `BENCH_CONCURRENCY`: direct vs aigw requests/s.
//!
//! The variants of phases 1, 2 and 5 are interleaved: the measured time is split into
//! `BENCH_ROUNDS` rounds, and in each round every variant runs for its share (after its share
//! of the warm-up, on fresh connections), so background load on a shared machine falls on all
//! variants alike. Results of the rounds are merged before any figure is computed.
//!
//! Environment: `BENCH_SECS` (measured seconds per variant, default 5), `BENCH_WARMUP_SECS`
//! (per variant, default 1), `BENCH_ROUNDS` (default 5), `BENCH_CONCURRENCY` (default 32),
//! `BENCH_STREAMS` (default 1000), `BENCH_CLIENT_THREADS` (default 1). With the defaults a run
//! takes about a minute.
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
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aigw_benches::procfs::{self, Pid};
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
/// Pause after a run before the final CPU reading, so log records still being written count.
const SETTLE: Duration = Duration::from_millis(100);
/// Longest aigw may take to answer `/healthz` after start.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
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
        let secs: f64 = env_or("BENCH_SECS", 5.0)?;
        let warmup: f64 = env_or("BENCH_WARMUP_SECS", 1.0)?;
        let settings = Settings {
            duration: Duration::try_from_secs_f64(secs)
                .context("BENCH_SECS must be a positive number")?,
            warmup: Duration::try_from_secs_f64(warmup).context("BENCH_WARMUP_SECS must be ≥ 0")?,
            concurrency: env_or("BENCH_CONCURRENCY", 32)?,
            streams: env_or("BENCH_STREAMS", 1000)?,
            client_threads: env_or("BENCH_CLIENT_THREADS", 1)?,
            rounds: env_or("BENCH_ROUNDS", 5)?,
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

/// `name` parsed from the environment, or `default` when unset or empty.
fn env_or<T>(name: &str, default: T) -> Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .map_err(|e| anyhow!("{name}={value:?} is not valid: {e}")),
        _ => Ok(default),
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process that is killed (and reaped) when dropped — on success, error or panic.
struct ChildGuard {
    name: &'static str,
    child: Child,
    /// Where its output goes.
    log: PathBuf,
}

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error (with the tail of its output) if the process has exited.
    fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self
            .child
            .try_wait()
            .with_context(|| format!("cannot check on {}", self.name))?
        {
            bail!(
                "{} exited unexpectedly ({status}); the end of its output:\n{}",
                self.name,
                tail_of(&self.log, 20)
            );
        }
        Ok(())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Already gone is fine; nothing else can be done about a failure here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mock upstream and the gateway, running. Fields drop in order: children before the
/// temporary directory holding their data and output.
struct Servers {
    aigw: ChildGuard,
    mock: ChildGuard,
    aigw_addr: SocketAddr,
    mock_addr: SocketAddr,
    data_dir: tempfile::TempDir,
}

impl Servers {
    fn start() -> Result<Self> {
        let bin_dir = release_dir();
        let aigw_bin = bin_dir.join("aigw");
        let mock_bin = bin_dir.join("aigw-mock");
        for bin in [&aigw_bin, &mock_bin] {
            if !bin.is_file() {
                bail!(
                    "{} is missing: run `cargo build --release --bin aigw --bin aigw-mock` first",
                    bin.display()
                );
            }
        }
        let data_dir = tempfile::Builder::new()
            .prefix("aigw-loadbench-")
            .tempdir()
            .context("cannot create a temporary directory")?;

        let (mock, mock_addr) = start_mock(&mock_bin, data_dir.path())?;

        let aigw_addr = free_port()?;
        let grpc_addr = free_port()?;
        let aigw_log = data_dir.path().join("aigw.log");
        let out = File::create(&aigw_log).context("cannot create aigw.log")?;
        let err = out
            .try_clone()
            .context("cannot duplicate the aigw.log handle")?;
        let child = Command::new(&aigw_bin)
            .arg("serve")
            .env("AIGW_HTTP_ADDR", aigw_addr.to_string())
            .env("AIGW_GRPC_ADDR", grpc_addr.to_string())
            .env("AIGW_DATA_DIR", data_dir.path().join("data"))
            .env(
                "AIGW_PROVIDERS__OPENAI__BASE_URL",
                format!("http://{mock_addr}/v1"),
            )
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {}", aigw_bin.display()))?;
        let aigw = ChildGuard {
            name: "aigw",
            child,
            log: aigw_log,
        };
        Ok(Servers {
            aigw,
            mock,
            aigw_addr,
            mock_addr,
            data_dir,
        })
    }

    fn pids(&self) -> Pids {
        Pids {
            aigw: Pid::Other(self.aigw.pid()),
            mock: Pid::Other(self.mock.pid()),
        }
    }

    fn ensure_running(&mut self) -> Result<()> {
        self.aigw.ensure_running()?;
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
                    tail_of(&self.aigw.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `target/release` of this workspace (`$CARGO_TARGET_DIR/release` when that is set).
fn release_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    target.join("release")
}

/// Starts `aigw-mock` on a free port and reads the port from its one line of output.
fn start_mock(bin: &Path, dir: &Path) -> Result<(ChildGuard, SocketAddr)> {
    let log = dir.join("mock.log");
    let err = File::create(&log).context("cannot create mock.log")?;
    let mut child = Command::new(bin)
        .args(["--addr", "127.0.0.1:0", "--no-record"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child
        .stdout
        .take()
        .context("no stdout pipe for aigw-mock")?;
    let mut guard = ChildGuard {
        name: "aigw-mock",
        child,
        log,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let first = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send(first);
        // Keep draining until the mock exits, so it never writes into a closed pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => return Err(e).context("cannot read aigw-mock's output"),
        Err(_) => {
            guard.ensure_running()?;
            bail!("aigw-mock printed nothing within {STARTUP_TIMEOUT:?}");
        }
    };
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|addr| addr.parse().ok());
    match addr {
        Some(addr) => Ok((guard, addr)),
        None => {
            guard.ensure_running()?;
            bail!("unexpected first line from aigw-mock: {line:?}")
        }
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> Result<SocketAddr> {
    let listener = StdTcpListener::bind("127.0.0.1:0").context("cannot bind a free port")?;
    listener.local_addr().context("cannot read a bound address")
}

/// The last `lines` lines of a file (for error messages).
fn tail_of(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            if tail.is_empty() {
                "(no output)".to_owned()
            } else {
                tail
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
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
    cpu: Cpu,
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

    /// Adds another slice of the same variant.
    fn absorb(&mut self, other: RunResult) {
        self.latencies.merge(other.latencies);
        self.elapsed += other.elapsed;
        for (error, n) in other.errors {
            *self.errors.entry(error).or_default() += n;
        }
        self.connections += other.connections;
        self.cpu = Cpu {
            aigw: self.cpu.aigw + other.cpu.aigw,
            mock: self.cpu.mock + other.cpu.mock,
            client: self.cpu.client + other.cpu.client,
        };
    }

    fn p(&mut self, q: f64) -> Duration {
        self.latencies.quantile(q).unwrap_or_default()
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
            Ok(()) if start >= window.measure_from => out.latencies.record(start.elapsed()),
            Ok(()) => {}
            Err(e) => {
                *out.errors.entry(e).or_default() += 1;
                sender = None;
            }
        }
    }
    out
}

/// Runs `concurrency` closed-loop workers against `target`: `warmup`, then `duration` measured.
async fn closed_loop(
    variant: &Variant,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    pids: Pids,
) -> Result<RunResult> {
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
    };
    for handle in workers {
        let out = handle.await.context("a load worker panicked")?;
        result.latencies.merge(out.latencies);
        for (error, n) in out.errors {
            *result.errors.entry(error).or_default() += n;
        }
        result.connections += out.connections;
    }
    result.elapsed = measure_from.elapsed();
    tokio::time::sleep(SETTLE).await;
    result.cpu = Cpu::read(pids)?.since(cpu_before);
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
    pids: Pids,
) -> Result<Vec<RunResult>> {
    let rounds = u32::try_from(settings.rounds).unwrap_or(u32::MAX);
    let (warmup, slice) = (settings.warmup / rounds, settings.duration / rounds);
    let mut merged: Vec<Option<RunResult>> = variants.iter().map(|_| None).collect();
    for _ in 0..rounds {
        for (variant, total) in variants.iter().zip(&mut merged) {
            let run = closed_loop(variant, concurrency, warmup, slice, pids).await?;
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
}

// ---------------------------------------------------------------------------------------------
// Phase 4: many concurrent streams

/// The result of the concurrent-streams phase.
#[derive(Debug)]
struct StreamsResult {
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
}

impl StreamsResult {
    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Opens `streams` streams through aigw at once, reads each to its end, and measures aigw's
/// resident set.
async fn concurrent_streams(
    label: &str,
    target: Target,
    streams: usize,
    pids: Pids,
) -> Result<StreamsResult> {
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
    };
    println!(
        "  {:<38} {} streams: {} completed, peak {} open at once, wall {:.2} s, aigw RSS idle {} → peak {}{}",
        label,
        result.streams,
        result.completed,
        result.peak_open,
        result.wall.as_secs_f64(),
        mib(result.idle.rss_kib),
        mib(result.peak_kib),
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
    streams: StreamsResult,
    streams_nolog: StreamsResult,
    stream_direct: RunResult,
    stream_aigw: RunResult,
    start_rss_kib: u64,
    /// `(written, dropped)` log records per aigw's `/metrics`, if readable.
    log_counters: Option<(f64, f64)>,
    /// Size and line count of aigw's `logs.jsonl`.
    log_file: Option<(u64, usize)>,
}

async fn bench(settings: &Settings, servers: &mut Servers) -> Result<Report> {
    servers.wait_healthy().await?;
    let pids = servers.pids();
    let start_rss_kib = procfs::memory(pids.aigw)
        .context("cannot read aigw's memory")?
        .rss_kib;
    let addrs = Addrs {
        mock: servers.mock_addr,
        aigw: servers.aigw_addr,
    };
    let small = |via| Target::new(addrs, via, Kind::Small);
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
        pids,
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
            pids,
        )
        .await?,
    )?;
    servers.ensure_running()?;

    println!(
        "phase 4: {} concurrent streams through aigw",
        settings.streams
    );
    let long_stream = Kind::Stream {
        chunks: 50,
        delay_ms: 100,
    };
    // First without a log record, then with: what the log capture costs in memory. This order
    // keeps the figure with the target clean — memory the first run leaves behind is reused by
    // the second, so its peak is still (about) the larger of the two needs.
    let streams_nolog = concurrent_streams(
        "aigw, 50 chunks × 100 ms, no log",
        Target::new(addrs, Via::AigwNoLog, long_stream)?,
        settings.streams,
        pids,
    )
    .await?;
    servers.ensure_running()?;
    let streams = concurrent_streams(
        "aigw, same, logging on",
        Target::new(addrs, Via::Aigw, long_stream)?,
        settings.streams,
        pids,
    )
    .await?;
    servers.ensure_running()?;

    println!("phase 5: streaming throughput at concurrency {c} (20 chunks, no delay)");
    let [stream_direct, stream_aigw] = two(compare(
        &[
            Variant::new("direct stream", Via::Direct, streaming(Via::Direct)?),
            Variant::new("aigw stream", Via::Aigw, streaming(Via::Aigw)?),
        ],
        c,
        settings,
        pids,
    )
    .await?)?;
    servers.ensure_running()?;

    let log_counters = match get_text(servers.aigw_addr, "/metrics").await {
        Ok((StatusCode::OK, text)) => Some((
            metric_sum(&text, "aigw_logs_written_total"),
            metric_sum(&text, "aigw_logs_dropped_total"),
        )),
        _ => None,
    };
    let log_path = servers.data_dir.path().join("data").join("logs.jsonl");
    let log_file = std::fs::read(&log_path).ok().map(|bytes| {
        let lines = bytes.iter().filter(|&&b| b == b'\n').count();
        (u64::try_from(bytes.len()).unwrap_or(u64::MAX), lines)
    });

    Ok(Report {
        c1_direct,
        c1_aigw,
        direct,
        aigw_log,
        aigw_nolog,
        streams,
        streams_nolog,
        stream_direct,
        stream_aigw,
        start_rss_kib,
        log_counters,
        log_file,
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
    /// The runs behind this figure had request errors.
    tainted: bool,
}

impl Figure {
    fn info(name: impl Into<String>, value: impl Into<String>) -> Self {
        Figure {
            name: name.into(),
            value: value.into(),
            target: String::new(),
            pass: None,
            tainted: false,
        }
    }

    fn target(mut self, target: impl Into<String>, pass: bool) -> Self {
        self.target = target.into();
        self.pass = Some(pass);
        self
    }

    fn tainted(mut self, tainted: bool) -> Self {
        self.tainted = tainted;
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
        let overhead = (1.0 - self.aigw_log.rps() / self.aigw_nolog.rps().max(1e-9)) * 100.0;
        figures.push(
            Figure::info(
                "logging overhead, 1 − rps(on)/rps(off)",
                format!("{overhead:.1} %"),
            )
            .target("≤ 15 %", overhead <= 15.0)
            .tainted(tainted2),
        );

        // Gateway CPU.
        let cpu_log = self
            .aigw_log
            .cpu_us_per_request(self.aigw_log.cpu.aigw, tck);
        figures.push(
            Figure::info(
                format!("gateway CPU per small request (c={c}, logging on)"),
                cpu_log.map_or_else(|| "-".to_owned(), |us| format!("{us:.1} µs")),
            )
            .target("≤ 60 µs", cpu_log.is_some_and(|us| us <= 60.0))
            .tainted(self.aigw_log.error_count() > 0),
        );
        let cpu_nolog = self
            .aigw_nolog
            .cpu_us_per_request(self.aigw_nolog.cpu.aigw, tck);
        figures.push(Figure::info(
            format!("gateway CPU per small request (c={c}, logging off)"),
            cpu_nolog.map_or_else(|| "-".to_owned(), |us| format!("{us:.1} µs")),
        ));

        // Memory.
        let n = self.streams.streams;
        let (on, off) = (&mut self.streams, &mut self.streams_nolog);
        figures.push(Figure::info(
            "aigw RSS at start / idle before the streams",
            format!("{} / {}", mib(self.start_rss_kib), mib(off.idle.rss_kib)),
        ));
        figures.push(
            Figure::info(
                format!("peak RSS, {n} streams, collect-log false (run 1st)"),
                mib(off.peak_kib),
            )
            .tainted(off.error_count() > 0 || off.peak_open < off.streams),
        );
        let scope = if on.peak_reset {
            "VmHWM of the run"
        } else {
            "lifetime VmHWM"
        };
        figures.push(
            Figure::info(
                format!("peak RSS, {n} streams, logging on ({scope})"),
                mib(on.peak_kib),
            )
            .target("≤ 64 MiB", on.peak_kib <= 64 * 1024)
            .tainted(on.error_count() > 0 || on.peak_open < on.streams),
        );
        figures.push(Figure::info(
            "  (RSS idle before / sampled peak; lifetime VmHWM before)",
            format!(
                "{} / {}; {}",
                mib(on.idle.rss_kib),
                mib(on.sampled_peak_kib),
                mib(off.lifetime_hwm_kib)
            ),
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
        if let Some((written, dropped)) = self.log_counters {
            figures.push(
                Figure::info(
                    "log records written / dropped (aigw /metrics)",
                    format!("{written:.0} / {dropped:.0}"),
                )
                .target("0 dropped", dropped == 0.0),
            );
        }
        if let Some((bytes, lines)) = self.log_file {
            figures.push(Figure::info(
                "logs.jsonl size / records",
                format!("{} / {lines}", mib(bytes / 1024)),
            ));
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
                (Some(_), true) => "MISS (request errors)",
                (Some(true), false) => "ok",
                (Some(false), false) => "MISS",
                (None, _) => "",
            };
            println!("{:<62} {:<38} {:<12} {mark}", f.name, f.value, f.target);
        }
        println!(
            "notes: added latency = difference of the percentiles; CPU time from /proc/<pid>/stat at {tck} ticks/s, \
             divided by the requests measured"
        );
        let aigw_output = tail_of(&servers.aigw.log, 5);
        if aigw_output != "(no output)" {
            println!("aigw printed (RUST_LOG=warn), last lines:\n{aigw_output}");
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
