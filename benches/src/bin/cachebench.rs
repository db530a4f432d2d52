//! `cachebench`: what the response cache saves and what the rate limiter costs, end to end.
//!
//! It starts `aigw-mock` and `aigw serve` (release, logging on), creates three gateways
//! through the management API — `cached` (`cache_ttl` 300 s), `plain` (no cache, no limit) and
//! `limited` (no cache, a fixed-window limit of 10⁹ requests per 60 s: checked on every
//! request, never reached) — and sends small non-streaming OpenAI chat requests
//! (`/v1/{account}/{gateway}/openai/chat/completions`), closed loop on keep-alive HTTP/1.1
//! connections, in four modes:
//!
//! - **cache MISS**: gateway `cached`, every request a body never sent before;
//! - **cache HIT**: gateway `cached`, one body again and again (cached by a warm-up);
//! - **plain**: gateway `plain`;
//! - **rate-limited**: gateway `limited`.
//!
//! Every response must be a 200 (anything else stops the bench), and its
//! `cf-aig-cache-status` header must be the mode's (`MISS`, `HIT`, none for the uncached
//! gateways): mismatches are counted and printed. Each concurrency level (1, then
//! `CACHEBENCH_CONCURRENCY`) is measured for `CACHEBENCH_SECONDS` per mode, split into
//! `CACHEBENCH_ROUNDS` slices with the modes interleaved (each round starting one mode
//! later), so background load on a shared machine falls on every mode alike. After each slice the bench waits until aigw is idle
//! (its log store has caught up), outside the timed window; the gateway CPU of a slice
//! (`utime + stime` from `/proc`) runs from the start of its window to the end of that wait,
//! so it includes the log writes the slice caused.
//!
//! Printed: requests/s, p50, p99 and mean latency, and aigw CPU per request of every mode;
//! the HIT/MISS throughput and p50 ratios; the rate-limit check's cost per request (mean
//! latency and CPU of `limited` minus `plain` at concurrency 1); aigw's cache and rate-limit
//! counters from `/metrics`.
//!
//! Settings (environment): `CACHEBENCH_SECONDS` (5 per mode and level),
//! `CACHEBENCH_CONCURRENCY` (32), `CACHEBENCH_ROUNDS` (5), `AIGW_BIN`, `AIGW_MOCK_BIN`
//! (`target/release/…`). With the defaults a run takes about a minute. Linux only.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aigw_benches::env::env_or;
use aigw_benches::procfs::{self, Pid};
use aigw_benches::servers::{
    ChildGuard, STARTUP_TIMEOUT, binaries_under_test, start_aigw_with, start_mock, tail_of,
};
use aigw_benches::stats::{Latencies, fmt_delta_ms, fmt_ms};
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

const ACCOUNT: &str = "bench";
const ADMIN_TOKEN: &str = "cachebench-admin-token-0123456789";
const CACHE_STATUS: &str = "cf-aig-cache-status";
/// Unmeasured load before a mode's first slice at each level.
const WARMUP: Duration = Duration::from_millis(500);
/// aigw counts as idle once it used at most one clock tick in such a span…
const IDLE_SPAN: Duration = Duration::from_millis(100);
/// …and the wait for that ends after this long regardless.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes every cache-MISS body unique across the whole run.
static NONCE: AtomicU64 = AtomicU64::new(0);

fn main() -> ExitCode {
    aigw_benches::main_with("cachebench", run)
}

/// What a mode sends and what its responses must say.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Miss,
    Hit,
    Plain,
    Limited,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::Miss, Mode::Hit, Mode::Plain, Mode::Limited];

    fn label(self) -> &'static str {
        match self {
            Mode::Miss => "cache MISS (cached)",
            Mode::Hit => "cache HIT (cached)",
            Mode::Plain => "no cache, no limit (plain)",
            Mode::Limited => "rate-limited, fixed (limited)",
        }
    }

    fn gateway(self) -> &'static str {
        match self {
            Mode::Miss | Mode::Hit => "cached",
            Mode::Plain => "plain",
            Mode::Limited => "limited",
        }
    }

    /// The `cf-aig-cache-status` every response must carry.
    fn cache_status(self) -> Option<&'static str> {
        match self {
            Mode::Miss => Some("MISS"),
            Mode::Hit => Some("HIT"),
            Mode::Plain | Mode::Limited => None,
        }
    }

    fn body(self) -> String {
        let content = match self {
            Mode::Miss => format!("miss {}", NONCE.fetch_add(1, Ordering::Relaxed)),
            Mode::Hit => "the same question again".to_owned(),
            Mode::Plain | Mode::Limited => "hi".to_owned(),
        };
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
            .to_string()
    }
}

/// What one mode achieved at one concurrency (its slices merged).
#[derive(Default)]
struct Outcome {
    wall: Duration,
    latencies: Latencies,
    /// Responses whose cache header was not the mode's.
    mismatched: u64,
    /// aigw CPU clock ticks over the windows and the waits for idle after them.
    aigw_ticks: u64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// aigw CPU µs per measured request.
    fn cpu_us(&self) -> f64 {
        self.aigw_ticks as f64 * 1e6
            / procfs::clock_ticks_per_sec() as f64
            / self.latencies.len().max(1) as f64
    }

    fn absorb(&mut self, slice: Outcome) {
        self.wall += slice.wall;
        self.latencies.merge(slice.latencies);
        self.mismatched += slice.mismatched;
        self.aigw_ticks += slice.aigw_ticks;
    }
}

/// Polls `probe` until it holds while `aigw` runs (at most [`STARTUP_TIMEOUT`]); `what`
/// says what did not happen.
async fn until<F>(aigw: &mut ChildGuard, what: &str, mut probe: impl FnMut() -> F) -> Result<()>
where
    F: Future<Output = bool>,
{
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        aigw.ensure_running()?;
        if probe().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{what} within {STARTUP_TIMEOUT:?}; aigw's output:\n{}",
                tail_of(aigw.log(), 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The gateway under test and how to reach it.
struct Gateway {
    pid: Pid,
    addr: SocketAddr,
    client: reqwest::Client,
}

impl Gateway {
    /// One chat request of `mode`: its status and cache header.
    async fn send(&self, mode: Mode) -> Result<(u16, Option<String>)> {
        let resp = self
            .client
            .post(format!(
                "http://{}/v1/{ACCOUNT}/{}/openai/chat/completions",
                self.addr,
                mode.gateway()
            ))
            .header("authorization", "Bearer sk-bench")
            .header("content-type", "application/json")
            .body(mode.body())
            .send()
            .await?;
        let status = resp.status().as_u16();
        let cache = resp
            .headers()
            .get(CACHE_STATUS)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        resp.bytes().await?;
        Ok((status, cache))
    }

    /// Creates gateway `id` with `settings` through the management API.
    async fn create(&self, id: &str, settings: Value) -> Result<()> {
        let mut body = json!({"id": id, "collect_logs": true, "cache_invalidate_on_update": false});
        body.as_object_mut()
            .context("a JSON object")?
            .extend(settings.as_object().cloned().unwrap_or_default());
        let resp = self
            .client
            .post(format!(
                "http://{}/client/v4/accounts/{ACCOUNT}/ai-gateway/gateways",
                self.addr
            ))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        ensure!(
            status == 200,
            "creating gateway {id}: {status} {}",
            resp.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// Whether `mode`'s request is answered 200 with cache header `want`.
    async fn answers(&self, mode: Mode, want: &str) -> bool {
        matches!(self.send(mode).await, Ok((200, Some(status))) if status == want)
    }

    /// Waits until aigw has been idle for [`IDLE_SPAN`] (at most [`IDLE_TIMEOUT`]).
    async fn wait_idle(&self) -> Result<()> {
        let deadline = Instant::now() + IDLE_TIMEOUT;
        let mut before = procfs::cpu_ticks(self.pid)?;
        while Instant::now() < deadline {
            tokio::time::sleep(IDLE_SPAN).await;
            let now = procfs::cpu_ticks(self.pid)?;
            if now - before <= 1 {
                break;
            }
            before = now;
        }
        Ok(())
    }

    /// `concurrency` closed-loop clients of `mode` for `window`, then the wait for idle.
    async fn slice(
        self: &Arc<Self>,
        mode: Mode,
        concurrency: usize,
        window: Duration,
    ) -> Result<Outcome> {
        let ticks = procfs::cpu_ticks(self.pid)?;
        let started = Instant::now();
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let gw = self.clone();
                tokio::spawn(async move {
                    let mut out = Outcome::default();
                    while started.elapsed() < window {
                        let t = Instant::now();
                        let (status, cache) = gw.send(mode).await?;
                        ensure!(status == 200, "{}: status {status}", mode.label());
                        out.latencies.record(t.elapsed());
                        out.mismatched += u64::from(cache.as_deref() != mode.cache_status());
                    }
                    anyhow::Ok(out)
                })
            })
            .collect();
        let mut total = Outcome::default();
        for w in workers {
            total.absorb(w.await??);
        }
        total.wall = started.elapsed();
        self.wait_idle().await?;
        total.aigw_ticks = procfs::cpu_ticks(self.pid)? - ticks;
        Ok(total)
    }
}

async fn run() -> Result<()> {
    let seconds: f64 = env_or("CACHEBENCH_SECONDS", 5.0)?;
    let concurrency: usize = env_or("CACHEBENCH_CONCURRENCY", 32)?;
    let rounds: u32 = env_or("CACHEBENCH_ROUNDS", 5)?;
    let (aigw_bin, mock_bin) = binaries_under_test()?;
    ensure!(rounds > 0 && seconds > 0.0, "nothing to measure");
    let dir = tempfile::tempdir()?;
    let (_mock, mock_addr) = start_mock(&mock_bin, dir.path())?;
    let (mut aigw, addr) = start_aigw_with(
        &aigw_bin,
        dir.path(),
        0,
        mock_addr,
        &[("AIGW_ADMIN_TOKEN", ADMIN_TOKEN)],
    )?;
    let gw = Gateway {
        pid: Pid::Other(aigw.pid()),
        addr,
        client: reqwest::Client::builder().http1_only().no_proxy().build()?,
    };
    until(&mut aigw, "aigw did not answer /readyz", || async {
        let ready = gw.client.get(format!("http://{addr}/readyz")).send().await;
        ready.is_ok_and(|r| r.status() == 200)
    })
    .await?;
    // Each gateway's settings reach the edge in order, so once `cached` (the last) is seen
    // with its cache on, the other two are known too.
    let no_cache = json!({"cache_ttl": 0, "rate_limiting_interval": 0, "rate_limiting_limit": 0});
    gw.create("plain", no_cache).await?;
    gw.create(
        "limited",
        json!({"cache_ttl": 0, "rate_limiting_interval": 60,
               "rate_limiting_limit": 1_000_000_000_u64, "rate_limiting_technique": "fixed"}),
    )
    .await?;
    gw.create(
        "cached",
        json!({"cache_ttl": 300, "rate_limiting_interval": 0, "rate_limiting_limit": 0}),
    )
    .await?;
    until(&mut aigw, "gateway `cached` did not answer MISS", || {
        gw.answers(Mode::Miss, "MISS")
    })
    .await?;
    until(&mut aigw, "gateway `cached` did not answer HIT", || {
        gw.answers(Mode::Hit, "HIT")
    })
    .await?;
    let gw = Arc::new(gw);

    let slice = Duration::from_secs_f64(seconds / f64::from(rounds));
    println!(
        "cachebench: small OpenAI chat requests through aigw (logging on), {seconds} s per mode and level in {rounds} interleaved slices, load {}",
        procfs::load_average()
    );
    let mut levels = Vec::new();
    for level in [1, concurrency] {
        let mut outcomes: Vec<Outcome> = Mode::ALL.iter().map(|_| Outcome::default()).collect();
        for mode in Mode::ALL {
            gw.slice(mode, level, WARMUP).await?;
        }
        // Each round starts one mode later, so no mode always follows the same one (and
        // inherits what that one left behind).
        for round in 0..rounds as usize {
            for i in 0..Mode::ALL.len() {
                let m = (round + i) % Mode::ALL.len();
                outcomes[m].absorb(gw.slice(Mode::ALL[m], level, slice).await?);
            }
        }
        levels.push((level, outcomes));
    }

    println!(
        "{:<30} {:>4} {:>8} {:>10} {:>10} {:>10} {:>12} {:>10}",
        "mode", "conc", "req/s", "p50", "p99", "mean", "aigw CPU/req", "mismatch"
    );
    for (level, outcomes) in &mut levels {
        for (mode, o) in Mode::ALL.into_iter().zip(outcomes.iter_mut()) {
            println!(
                "{:<30} {level:>4} {:>8.0} {:>10} {:>10} {:>10} {:>9.1} µs {:>10}",
                mode.label(),
                o.rate(),
                fmt_ms(o.latencies.quantile(0.5).unwrap_or_default()),
                fmt_ms(o.latencies.quantile(0.99).unwrap_or_default()),
                fmt_ms(o.latencies.mean().unwrap_or_default()),
                o.cpu_us(),
                o.mismatched,
            );
        }
    }
    for (level, outcomes) in &mut levels {
        let [miss, hit, plain, limited] = &mut outcomes[..] else {
            unreachable!("one outcome per mode")
        };
        let p50 = |o: &mut Outcome| o.latencies.quantile(0.5).unwrap_or_default();
        println!(
            "concurrency {level:>2}: HIT/MISS throughput {:.2}×, p50 HIT/MISS {:.2}; rate-limit check (limited − plain): mean {}, aigw CPU {:+.1} µs/request",
            hit.rate() / miss.rate(),
            p50(hit).as_secs_f64() / p50(miss).as_secs_f64().max(1e-12),
            fmt_delta_ms(
                limited.latencies.mean().unwrap_or_default(),
                plain.latencies.mean().unwrap_or_default()
            ),
            limited.cpu_us() - plain.cpu_us(),
        );
    }
    let metrics = gw
        .client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("aigw_cache_lookups_total") || l.starts_with("aigw_rate_limit"))
    {
        println!("  {line}");
    }
    let mismatched: u64 = levels
        .iter()
        .flat_map(|(_, o)| o.iter().map(|o| o.mismatched))
        .sum();
    ensure!(
        mismatched == 0,
        "{mismatched} responses had the wrong {CACHE_STATUS}"
    );
    Ok(())
}
