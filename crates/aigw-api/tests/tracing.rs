//! The per-request span names the method, route template, account and status, and never the
//! token or the query string.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use support::{ACCOUNT, ACCOUNT_TOKEN, ADMIN, Harness};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn spans_carry_account_and_route_but_no_secrets() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded, so the server task logs on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::start().await;
    h.create_gateway("gw").await;
    let (status, _, _) = h
        .send(
            Method::GET,
            &Harness::path("/gateways/gw/logs?search=secret-query"),
            Some(ACCOUNT_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = h
        .send(
            Method::GET,
            &Harness::path("/gateways"),
            Some("wrong-token-xyz"),
            None,
        )
        .await;
    assert_eq!(status, 401);

    let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(out.contains("management"), "{out}");
    assert!(out.contains(&format!("account=\"{ACCOUNT}\"")), "{out}");
    assert!(
        out.contains(
            "route=\"/client/v4/accounts/{account_id}/ai-gateway/gateways/{gateway_id}/logs\""
        ),
        "{out}"
    );
    assert!(
        out.contains("status=200") && out.contains("status=401"),
        "{out}"
    );
    for secret in [ADMIN, ACCOUNT_TOKEN, "wrong-token-xyz", "secret-query"] {
        assert!(!out.contains(secret), "`{secret}` leaked into:\n{out}");
    }
}
