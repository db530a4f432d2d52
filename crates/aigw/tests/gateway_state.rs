//! Cache and rate limit across a real cluster of `aigw` processes (three shard nodes, two
//! edges): a response cached through one edge is a HIT through the other (the shared tier on
//! the gateway's home shard leader); a limit of 100 requests per 60 s admits between 100 and
//! 105 with both edges under load, and an edge killed and replaced does not reset it.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cluster::{start_cluster, wait_healthy};
use common::{ADMIN_TOKEN, mock};
use serde_json::{Value, json};

const ACCOUNT: &str = "acme";

fn chat_body(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
}

/// A chat request through `edge`'s gateway `gateway`; (status, cache status, body).
async fn send(
    client: &reqwest::Client,
    edge: SocketAddr,
    gateway: &str,
    content: &str,
) -> (u16, Option<String>, String) {
    let resp = client
        .post(format!(
            "http://{edge}/v1/{ACCOUNT}/{gateway}/openai/chat/completions"
        ))
        .header("authorization", "Bearer sk-test")
        .json(&chat_body(content))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("cf-aig-cache-status")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, cache, resp.text().await.unwrap())
}

async fn create_gateway(client: &reqwest::Client, edge: SocketAddr, settings: Value) {
    let (status, body) = common::api(
        client,
        reqwest::Method::POST,
        format!("http://{edge}/client/v4/accounts/{ACCOUNT}/ai-gateway/gateways"),
        ADMIN_TOKEN,
        Some(settings),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Sends through `edge` until a request is refused; the number admitted.
async fn until_refused(client: reqwest::Client, edge: SocketAddr) -> u64 {
    let mut admitted = 0;
    loop {
        match send(&client, edge, "limited", "rate").await.0 {
            200 => admitted += 1,
            429 => return admitted,
            other => panic!("unexpected status {other}"),
        }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_and_the_rate_limit_hold_across_edges() {
    let upstream = mock().await;
    let client = reqwest::Client::new();
    let mut cluster = start_cluster(&client, format!("{}/v1", upstream.base_url())).await;
    wait_healthy(cluster.grpc[0]).await;
    let edges: Vec<SocketAddr> = cluster.edges.iter().map(|(a, _)| *a).collect();
    create_gateway(
        &client,
        edges[0],
        json!({"id": "limited", "collect_logs": true, "cache_ttl": 0,
               "cache_invalidate_on_update": false, "rate_limiting_interval": 60,
               "rate_limiting_limit": 100, "rate_limiting_technique": "fixed"}),
    )
    .await;
    create_gateway(
        &client,
        edges[0],
        json!({"id": "cached", "collect_logs": true, "cache_ttl": 300,
               "cache_invalidate_on_update": false, "rate_limiting_interval": 0,
               "rate_limiting_limit": 0}),
    )
    .await;
    // Gateway changes reach an edge in order: once it knows `cached`, it knows `limited`.
    for edge in &edges {
        let deadline = Instant::now() + Duration::from_secs(15);
        while send(&client, *edge, "cached", &format!("probe {edge}"))
            .await
            .0
            != 200
        {
            assert!(
                Instant::now() < deadline,
                "edge {edge} never saw the gateways"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Cached through edge 1, a HIT through edge 2.
    let (status, cache, original) = send(&client, edges[0], "cached", "shared answer").await;
    assert_eq!((status, cache.as_deref()), (200, Some("MISS")));
    // The shared tier is written before the last byte reaches the client: the very next
    // request, through the other edge, is a HIT.
    let (status, cache, again) = send(&client, edges[1], "cached", "shared answer").await;
    assert_eq!((status, cache.as_deref()), (200, Some("HIT")));
    assert_eq!(again, original, "the cached response, byte for byte");
    let upstream_saw = |needle: &str| {
        upstream
            .requests()
            .iter()
            .filter(|r| r.body.contains(needle))
            .count()
    };
    assert_eq!(upstream_saw("shared answer"), 1);

    // One limit across both edges: eight senders per edge, each until refused.
    let left = 60_000 - now_ms() % 60_000;
    if left < 20_000 {
        tokio::time::sleep(Duration::from_millis(left + 50)).await;
    }
    let senders: Vec<_> = (0..16)
        .map(|i| tokio::spawn(until_refused(client.clone(), edges[i % 2])))
        .collect();
    let mut admitted = 0;
    for sender in senders {
        admitted += sender.await.unwrap();
    }
    assert!(
        (100..=105).contains(&admitted),
        "admitted {admitted} of 100"
    );
    assert_eq!(
        u64::try_from(upstream_saw("\"rate\"")).unwrap(),
        admitted,
        "refused requests never reach the upstream"
    );

    // An edge killed and replaced does not reset the window.
    let (_, mut killed) = cluster.edges.remove(0);
    killed.kill().unwrap();
    killed.wait().unwrap();
    cluster.start_edge(&client).await;
    let fresh = cluster.edges.last().unwrap().0;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body) = send(&client, fresh, "limited", "rate").await;
        if status == 429 {
            assert!(
                body.contains("rate limited to 100 requests per 60 s"),
                "{body}"
            );
            break;
        }
        // Only a new edge that has not seen the gateway yet answers otherwise.
        assert_eq!(status, 404, "{body}");
        assert!(
            Instant::now() < deadline,
            "the new edge never saw the gateway"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
