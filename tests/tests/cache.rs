//! The response cache, end to end over real sockets: MISS then HIT with the original body and
//! a cached log row, a HIT through another edge sharing the cache's shared tier, TTL expiry,
//! `cf-aig-skip-cache` and `cf-aig-cache-key`, event streams replayed, identical concurrent
//! misses coalesced into one upstream request, keys that never cross accounts or API keys,
//! and `cache_invalidate_on_update`.

mod support;

use std::time::Duration;

use aigw_edge::GatewaySettings;
use serde_json::{Value, json};
use support::Harness;

const CACHE_STATUS: &str = "cf-aig-cache-status";

fn chat(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
}

fn caching(ttl: Duration) -> GatewaySettings {
    GatewaySettings {
        cache_ttl: Some(ttl),
        ..GatewaySettings::default()
    }
}

/// A chat request through `h`'s gateway `cached` of `account`; its cache status and body.
async fn send(
    h: &Harness,
    account: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (Option<String>, String) {
    let mut request = h
        .client
        .post(h.url(&format!("/v1/{account}/cached/openai/chat/completions")))
        .header("authorization", "Bearer sk-one")
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let resp = request.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let status = resp
        .headers()
        .get(CACHE_STATUS)
        .map(|v| v.to_str().unwrap().to_owned());
    (status, resp.text().await.unwrap())
}

fn hit() -> Option<String> {
    Some("HIT".into())
}

fn miss() -> Option<String> {
    Some("MISS".into())
}

#[tokio::test]
async fn a_second_identical_request_is_a_hit_logged_as_cached_at_no_cost() {
    let h = Harness::start().await;
    h.gateways
        .upsert("acct1", "cached", caching(Duration::from_secs(60)));
    let (first, body) = send(&h, "acct1", &chat("hi"), &[]).await;
    assert_eq!(first, miss());
    let (second, again) = send(&h, "acct1", &chat("hi"), &[]).await;
    assert_eq!(second, hit());
    assert_eq!(again, body, "the original response, byte for byte");
    assert_eq!(h.mock.requests().len(), 1, "the upstream saw one request");

    let logs = h.logs(2).await;
    let (original, cached) = (&logs[0].record, &logs[1].record);
    assert!(!original.cached && cached.cached);
    assert_eq!(cached.cost, Some(0.0), "a cached response costs nothing");
    assert!(original.cost.unwrap() > 0.0);
    assert_eq!(
        (cached.tokens_in, cached.tokens_out),
        (original.tokens_in, original.tokens_out),
        "the original token counts"
    );
    assert!(cached.tokens_in.is_some());
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("aigw_cache_lookups_total{result=\"hit_local\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("aigw_cache_lookups_total{result=\"miss\"} 1"));
}

#[tokio::test]
async fn a_response_cached_through_one_edge_is_a_hit_through_another() {
    let a = Harness::start().await;
    let b = Harness::start_sharing(
        |config| {
            support::mock_providers(config, &a.mock.base_url());
        },
        a.state.clone(),
    )
    .await;
    for h in [&a, &b] {
        h.gateways
            .upsert("acct1", "cached", caching(Duration::from_secs(60)));
    }
    let (first, body) = send(&a, "acct1", &chat("shared"), &[]).await;
    assert_eq!(first, miss());
    // Written to the shared tier before the last byte reached the client.
    let (second, again) = send(&b, "acct1", &chat("shared"), &[]).await;
    assert_eq!(second, hit());
    assert_eq!(again, body);
    assert!(
        b.metrics()
            .await
            .contains("aigw_cache_lookups_total{result=\"hit_shared\"} 1")
    );
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let h = Harness::start().await;
    h.gateways
        .upsert("acct1", "cached", caching(Duration::from_millis(800)));
    assert_eq!(send(&h, "acct1", &chat("ttl"), &[]).await.0, miss());
    assert_eq!(send(&h, "acct1", &chat("ttl"), &[]).await.0, hit());
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        send(&h, "acct1", &chat("ttl"), &[]).await.0,
        miss(),
        "expired"
    );
    assert_eq!(h.mock.requests().len(), 2);
}

#[tokio::test]
async fn requests_opt_in_and_out_with_headers() {
    let h = Harness::start().await;
    h.gateways
        .upsert("acct1", "cached", GatewaySettings::default());
    // No gateway TTL: not cached, no status.
    assert_eq!(send(&h, "acct1", &chat("a"), &[]).await.0, None);
    assert_eq!(send(&h, "acct1", &chat("a"), &[]).await.0, None);
    // cf-aig-cache-ttl opts in.
    let ttl = [("cf-aig-cache-ttl", "120")];
    assert_eq!(send(&h, "acct1", &chat("b"), &ttl).await.0, miss());
    assert_eq!(send(&h, "acct1", &chat("b"), &ttl).await.0, hit());
    // cf-aig-skip-cache bypasses it.
    let skip = [("cf-aig-cache-ttl", "120"), ("cf-aig-skip-cache", "true")];
    assert_eq!(send(&h, "acct1", &chat("b"), &skip).await.0, None);
    // A custom key opts in and replaces the request: another body is a hit.
    let (first, body) = send(&h, "acct1", &chat("c"), &[("cf-aig-cache-key", "k1")]).await;
    assert_eq!(first, miss());
    let (second, again) = send(&h, "acct1", &chat("d"), &[("cf-aig-cache-key", "k1")]).await;
    assert_eq!((second, again), (hit(), body));
    assert_eq!(h.mock.requests().len(), 5);

    let resp = h
        .client
        .post(h.url("/v1/acct1/cached/openai/chat/completions"))
        .header("cf-aig-cache-ttl", "30")
        .json(&chat("e"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("cf-aig-cache-ttl"));
}

#[tokio::test]
async fn streams_are_replayed_as_server_sent_events() {
    let h = Harness::start().await;
    h.gateways
        .upsert("acct1", "cached", caching(Duration::from_secs(60)));
    let mut body = chat("stream");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (first, streamed) = send(&h, "acct1", &body, &[]).await;
    assert_eq!(first, miss());
    assert!(streamed.contains("data: [DONE]"));
    let resp = h
        .client
        .post(h.url("/v1/acct1/cached/openai/chat/completions"))
        .header("authorization", "Bearer sk-one")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()[CACHE_STATUS], "HIT");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(resp.text().await.unwrap(), streamed);
    let logs = h.logs(2).await;
    assert!(logs[1].record.cached && logs[1].record.streamed);
    assert_eq!(logs[1].record.tokens_out, logs[0].record.tokens_out);
    assert!(logs[1].record.tokens_out.is_some());
}

#[tokio::test]
async fn concurrent_identical_misses_reach_the_upstream_once() {
    let h = Harness::start().await;
    h.gateways
        .upsert("acct1", "cached", caching(Duration::from_secs(60)));
    let body = chat("same");
    let requests = (0..10).map(|_| send(&h, "acct1", &body, &[("x-mock-delay-ms", "300")]));
    let answers = futures_util::future::join_all(requests).await;
    assert_eq!(
        h.mock.requests().len(),
        1,
        "coalesced into one upstream request"
    );
    let misses = answers.iter().filter(|(s, _)| *s == miss()).count();
    assert_eq!(misses, 1);
    assert!(answers.iter().all(|(_, body)| *body == answers[0].1));
    assert_eq!(
        h.logs(10).await.iter().filter(|e| e.record.cached).count(),
        9
    );
}

#[tokio::test]
async fn keys_never_cross_accounts_or_api_keys() {
    let h = Harness::start().await;
    for account in ["acct1", "acct2"] {
        h.gateways
            .upsert(account, "cached", caching(Duration::from_secs(60)));
    }
    assert_eq!(send(&h, "acct1", &chat("k"), &[]).await.0, miss());
    assert_eq!(
        send(&h, "acct2", &chat("k"), &[]).await.0,
        miss(),
        "another account"
    );
    let other_key = h
        .client
        .post(h.url("/v1/acct1/cached/openai/chat/completions"))
        .header("authorization", "Bearer sk-two")
        .json(&chat("k"))
        .send()
        .await
        .unwrap();
    assert_eq!(other_key.headers()[CACHE_STATUS], "MISS", "another API key");
    assert_eq!(send(&h, "acct1", &chat("k"), &[]).await.0, hit());
    assert_eq!(h.mock.requests().len(), 3);
}

#[tokio::test]
async fn a_new_cache_epoch_invalidates_every_entry() {
    let h = Harness::start().await;
    h.gateways
        .upsert("acct1", "cached", caching(Duration::from_secs(60)));
    assert_eq!(send(&h, "acct1", &chat("e"), &[]).await.0, miss());
    assert_eq!(send(&h, "acct1", &chat("e"), &[]).await.0, hit());
    h.gateways.upsert(
        "acct1",
        "cached",
        GatewaySettings {
            cache_epoch: 42,
            ..caching(Duration::from_secs(60))
        },
    );
    assert_eq!(send(&h, "acct1", &chat("e"), &[]).await.0, miss());
}
