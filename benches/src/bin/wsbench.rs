//! `wsbench`: small non-streaming Universal Endpoint requests through `aigw serve` (release,
//! logging on) in front of `aigw-mock`, three ways in one run — over one WebSocket connection
//! (`WSBENCH_CONCURRENCY` requests in flight on it), over keep-alive HTTP/1.1 connections, and
//! over a new HTTP/1.1 connection per request (the same concurrency) — and prints requests/s
//! and latency p50/p99 of each.
//!
//! Settings (environment): `WSBENCH_SECONDS` (5 per mode), `WSBENCH_CONCURRENCY` (32),
//! `AIGW_BIN`, `AIGW_MOCK_BIN` (`target/release/…`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aigw_benches::env::env_or;
use aigw_benches::procfs;
use aigw_benches::servers::{binaries_under_test, start_aigw, start_mock};
use aigw_benches::stats::{Latencies, fmt_ms};
use anyhow::{Context, Result, anyhow, ensure};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn main() -> ExitCode {
    aigw_benches::main_with("wsbench", run)
}

/// One step: a small chat completion on the mock.
fn step() -> Value {
    json!({"provider": "openai", "endpoint": "chat/completions",
           "headers": {"authorization": "Bearer sk-bench"},
           "query": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}})
}

/// What one mode achieved.
struct Outcome {
    requests: u64,
    wall: Duration,
    latencies: Latencies,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64()
    }
}

async fn run() -> Result<()> {
    let seconds: u64 = env_or("WSBENCH_SECONDS", 5)?;
    let concurrency: usize = env_or("WSBENCH_CONCURRENCY", 32)?;
    let (aigw_bin, mock_bin) = binaries_under_test()?;
    let dir = tempfile::tempdir()?;
    let (_mock, mock_addr) = start_mock(&mock_bin, dir.path())?;
    let (_aigw, aigw_addr) = start_aigw(&aigw_bin, dir.path(), 0, mock_addr)?;
    wait_ready(aigw_addr).await?;
    let window = Duration::from_secs(seconds);
    println!(
        "wsbench: small Universal Endpoint requests through aigw (logging on), {concurrency} in flight, {seconds} s per mode, load {}",
        procfs::load_average()
    );

    // Warm up the upstream pool and the log store.
    http(aigw_addr, concurrency, Duration::from_secs(1), true).await?;
    let keep_alive = http(aigw_addr, concurrency, window, true).await?;
    let fresh = http(aigw_addr, concurrency, window, false).await?;
    let socket = websocket(aigw_addr, concurrency, window).await?;
    let base = keep_alive.rate();
    for (name, mut outcome) in [
        ("one WebSocket connection", socket),
        ("keep-alive HTTP/1.1", keep_alive),
        ("new HTTP/1.1 connection per request", fresh),
    ] {
        println!(
            "{name:<38} {:>7.0} req/s ({:.2}× keep-alive)  p50 {}  p99 {}",
            outcome.rate(),
            outcome.rate() / base,
            fmt_ms(outcome.latencies.quantile(0.5).unwrap_or_default()),
            fmt_ms(outcome.latencies.quantile(0.99).unwrap_or_default()),
        );
    }
    Ok(())
}

async fn wait_ready(addr: SocketAddr) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/readyz")).send().await
            && r.status() == 200
        {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "aigw did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `concurrency` closed-loop clients for `window`, on pooled connections or a new one each.
async fn http(
    addr: SocketAddr,
    concurrency: usize,
    window: Duration,
    keep_alive: bool,
) -> Result<Outcome> {
    let mut builder = reqwest::Client::builder().http1_only().no_proxy();
    if !keep_alive {
        builder = builder.pool_max_idle_per_host(0);
    }
    let client = builder.build()?;
    let body = Arc::new(step().to_string());
    let url = Arc::new(format!("http://{addr}/v1/bench/default"));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, body, url) = (client.clone(), body.clone(), url.clone());
            tokio::spawn(async move {
                let mut latencies = Latencies::default();
                while started.elapsed() < window {
                    let t = Instant::now();
                    let resp = client
                        .post(url.as_str())
                        .header("content-type", "application/json")
                        .body(body.as_str().to_owned())
                        .send()
                        .await?;
                    ensure!(resp.status() == 200, "status {}", resp.status());
                    resp.bytes().await?;
                    latencies.record(t.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Latencies::default();
    for w in workers {
        latencies.merge(w.await??);
    }
    Ok(Outcome {
        requests: latencies.len() as u64,
        wall: started.elapsed(),
        latencies,
    })
}

/// One connection with `concurrency` requests in flight for `window`.
async fn websocket(addr: SocketAddr, concurrency: usize, window: Duration) -> Result<Outcome> {
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/bench/default"))
        .await
        .context("cannot open the WebSocket")?;
    let (mut tx, mut rx) = socket.split();
    let message = |id: u64| {
        let mut request = step();
        request["eventId"] = json!(id.to_string());
        Message::Text(
            json!({"type": "universal.create", "request": request})
                .to_string()
                .into(),
        )
    };
    let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(concurrency);
    let mut latencies = Latencies::default();
    let mut next = 0u64;
    let started = Instant::now();
    while next < concurrency as u64 {
        sent.insert(next, Instant::now());
        tx.send(message(next)).await?;
        next += 1;
    }
    while !sent.is_empty() {
        let frame = rx
            .next()
            .await
            .ok_or_else(|| anyhow!("the socket closed"))??;
        let Message::Text(text) = frame else { continue };
        let answer: Value = serde_json::from_str(text.as_str())?;
        ensure!(answer["type"] == "universal.created", "unexpected {answer}");
        let id: u64 = answer["metadata"]["eventId"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("an answer without its eventId")?;
        let t = sent.remove(&id).context("an answer to nothing sent")?;
        latencies.record(t.elapsed());
        if started.elapsed() < window {
            sent.insert(next, Instant::now());
            tx.send(message(next)).await?;
            next += 1;
        }
    }
    Ok(Outcome {
        requests: latencies.len() as u64,
        wall: started.elapsed(),
        latencies,
    })
}
