//! Authenticated gateways, end to end: with `authentication` on, a request needs
//! `cf-aig-authorization: Bearer <token>` with a token allowed for the account — checked
//! before anything goes upstream, on provider paths and the Universal Endpoint alike; with it
//! off the header is ignored whatever it holds, and it is never forwarded.

mod support;

use aigw_edge::GatewaySettings;
use serde_json::{Value, json};
use support::{Harness, gateway_error};

const TOKEN: &str = "aigw_0123456789abcdef_run-secret";

fn chat() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
}

async fn harness() -> Harness {
    let h = Harness::start().await;
    for (gateway, authentication) in [("locked", true), ("open", false)] {
        h.gateways.upsert(
            "acct1",
            gateway,
            GatewaySettings {
                authentication,
                ..GatewaySettings::default()
            },
        );
    }
    h.gateways.allow_token("acct1", TOKEN);
    h.gateways.allow_token("acct2", "aigw_other_account");
    h
}

async fn send(h: &Harness, path: &str, body: Value, auth: Option<&str>) -> reqwest::Response {
    let mut request = h
        .client
        .post(h.url(path))
        .header("authorization", "Bearer sk-provider-key")
        .json(&body);
    if let Some(auth) = auth {
        request = request.header("cf-aig-authorization", auth);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn an_authenticated_gateway_needs_a_valid_token_before_anything_goes_upstream() {
    let h = harness().await;
    let universal = json!({"provider": "openai", "endpoint": "chat/completions", "query": chat()});
    for (path, body) in [
        ("/v1/acct1/locked/openai/chat/completions", chat()),
        ("/v1/acct1/locked", universal),
    ] {
        let sent_before = h.mock.requests().len();
        for (auth, why) in [
            (None, "missing"),
            (Some("Bearer wrong-token"), "not valid"),
            (Some("Bearer aigw_other_account"), "not valid"),
            (Some(TOKEN), "Bearer <token>"),
        ] {
            let (code, message) =
                gateway_error(send(&h, path, body.clone(), auth).await, 401).await;
            assert_eq!(code, 2007, "{path} {auth:?}: {message}");
            assert!(message.contains(why), "{path} {auth:?}: {message}");
        }
        assert_eq!(
            h.mock.requests().len(),
            sent_before,
            "refused before the upstream"
        );

        let bearer = format!("Bearer {TOKEN}");
        let resp = send(&h, path, body, Some(&bearer)).await;
        assert_eq!(resp.status(), 200, "{path}");
        resp.bytes().await.unwrap();
    }
    let seen = h.mock.requests();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert!(
            request
                .headers
                .iter()
                .all(|(k, v)| k != "cf-aig-authorization" && !v.contains(TOKEN)),
            "the gateway token never reaches the provider: {:?}",
            request.headers
        );
    }
    let logs = h.logs(2).await;
    assert!(logs.iter().all(|e| e.record.authentication));
}

#[tokio::test]
async fn an_open_gateway_ignores_the_header_whatever_it_holds() {
    let h = harness().await;
    for auth in [None, Some("Bearer wrong-token"), Some("garbage")] {
        let resp = send(&h, "/v1/acct1/open/openai/chat/completions", chat(), auth).await;
        assert_eq!(resp.status(), 200, "{auth:?}");
        resp.bytes().await.unwrap();
    }
}
