//! Gateway rate limits, end to end over real sockets: fixed windows aligned to the clock and
//! their boundaries, sliding windows, one limit across two edges sharing the budget's owner,
//! and a limit that survives an edge restart. Refused requests are 429 with the JSON error,
//! `Retry-After` and `RateLimit-*` headers, and never reach the upstream.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aigw_edge::GatewaySettings;
use aigw_gateway_state::{RatePolicy, Technique};
use serde_json::json;
use support::{Harness, gateway_error};

fn limited(limit: u64, interval: Duration, technique: Technique) -> GatewaySettings {
    GatewaySettings {
        rate_limit: Some(RatePolicy {
            limit,
            interval_ms: u64::try_from(interval.as_millis()).unwrap(),
            technique,
        }),
        ..GatewaySettings::default()
    }
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Waits, if need be, so that at least `room` is left of the current `interval` window.
async fn not_near_a_boundary(interval: Duration, room: Duration) {
    let interval = u64::try_from(interval.as_millis()).unwrap();
    let left = interval - now_ms() % interval;
    if left < u64::try_from(room.as_millis()).unwrap() {
        tokio::time::sleep(Duration::from_millis(left + 20)).await;
    }
}

async fn request(h: &Harness) -> reqwest::Response {
    h.client
        .post(h.url("/v1/acct1/limited/openai/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

/// Sends until one is refused; the number admitted, and the refusal.
async fn drain(h: &Harness) -> (u64, reqwest::Response) {
    let mut admitted = 0;
    loop {
        let resp = request(h).await;
        if resp.status() == 429 {
            return (admitted, resp);
        }
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        admitted += 1;
    }
}

#[tokio::test]
async fn a_fixed_window_admits_its_limit_then_refuses_until_the_next() {
    let h = Harness::start().await;
    let interval = Duration::from_secs(2);
    h.gateways
        .upsert("acct1", "limited", limited(3, interval, Technique::Fixed));
    not_near_a_boundary(interval, Duration::from_millis(1_000)).await;
    let (admitted, refused) = drain(&h).await;
    assert_eq!(admitted, 3);
    let headers = refused.headers().clone();
    assert_eq!(headers["ratelimit-limit"], "3");
    assert_eq!(headers["ratelimit-remaining"], "0");
    assert_eq!(headers["ratelimit-policy"], "3;w=2");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=2).contains(&retry_after),
        "until the window ends: {retry_after}"
    );
    let (code, message) = gateway_error(refused, 429).await;
    assert_eq!(code, 2030);
    assert!(
        message.contains("rate limited to 3 requests per 2 s"),
        "{message}"
    );
    assert_eq!(
        h.mock.requests().len(),
        3,
        "refused requests never reach the upstream"
    );
    assert!(h.metrics().await.contains("aigw_rate_limited_total 1"));

    // The next window, aligned to the clock, admits the limit again.
    let left = 2_000 - now_ms() % 2_000;
    tokio::time::sleep(Duration::from_millis(left + 20)).await;
    assert_eq!(drain(&h).await.0, 3);
}

#[tokio::test]
async fn a_sliding_window_counts_the_previous_window_by_its_overlap() {
    let h = Harness::start().await;
    let interval = Duration::from_secs(2);
    h.gateways.upsert(
        "acct1",
        "limited",
        limited(10, interval, Technique::Sliding),
    );
    not_near_a_boundary(interval, Duration::from_millis(1_500)).await;
    let (first, refused) = drain(&h).await;
    assert_eq!(first, 10);
    assert!(refused.headers().contains_key("retry-after"));
    // Into the next window: part of the previous one still counts, so fewer than the limit
    // are admitted, but some are.
    let left = 2_000 - now_ms() % 2_000;
    tokio::time::sleep(Duration::from_millis(left + 1_000)).await;
    let (second, _) = drain(&h).await;
    assert!(
        (1..10).contains(&second),
        "half the previous window still counts: {second}"
    );
}

#[tokio::test]
async fn two_edges_share_one_limit() {
    let a = Harness::start().await;
    let b = Harness::start_sharing(
        |config| support::mock_providers(config, &a.mock.base_url()),
        a.state.clone(),
    )
    .await;
    let interval = Duration::from_secs(3600);
    for h in [&a, &b] {
        h.gateways
            .upsert("acct1", "limited", limited(100, interval, Technique::Fixed));
    }
    not_near_a_boundary(interval, Duration::from_secs(60)).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    // Eight workers per edge, each sending until it is refused.
    let workers = (0..16).map(|i| {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { drain(&h).await.0 })
    });
    let admitted: u64 = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    assert!(
        (100..=105).contains(&admitted),
        "admitted {admitted} of 100"
    );
    assert_eq!(
        u64::try_from(a.mock.requests().len()).unwrap(),
        admitted,
        "only admitted requests reach the upstream"
    );
}

#[tokio::test]
async fn a_restarted_edge_does_not_reset_the_limit() {
    let a = Harness::start().await;
    let interval = Duration::from_secs(3600);
    let settings = limited(5, interval, Technique::Fixed);
    a.gateways.upsert("acct1", "limited", settings.clone());
    not_near_a_boundary(interval, Duration::from_secs(60)).await;
    for _ in 0..3 {
        assert_eq!(request(&a).await.status(), 200);
    }
    let state = a.state.clone();
    a.shutdown().await;
    let b = Harness::start_sharing(|_| {}, state).await;
    b.gateways.upsert("acct1", "limited", settings);
    let (admitted, refused) = drain(&b).await;
    assert_eq!(refused.status(), 429);
    assert!(
        (1..=2).contains(&admitted),
        "the restarted edge gets what is left of the window (at most 2): {admitted}"
    );
}
