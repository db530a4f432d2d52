//! HTTPS: the mock's own CA, HTTP/2 or HTTP/1.1 by ALPN, and the binary's `--tls` flag.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use aigw_mock_upstream::{MockOptions, MockServer};

use crate::support::start_with;

async fn start_tls() -> MockServer {
    start_with(MockOptions {
        tls: true,
        ..MockOptions::default()
    })
    .await
}

fn trusting(ca_pem: &str) -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("the CA is PEM");
    reqwest::Client::builder().add_root_certificate(ca)
}

#[tokio::test]
async fn a_client_trusting_the_ca_gets_http2_or_http1_by_alpn() {
    let server = start_tls().await;
    assert!(server.base_url().starts_with("https://127.0.0.1:"));
    let ca = server.ca_certificate_pem().expect("a TLS mock has a CA");
    let url = format!("{}/v1/models", server.base_url());

    let h2 = trusting(ca).build().expect("client builds");
    let response = h2.get(&url).send().await.expect("TLS handshake succeeds");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);

    let h1 = trusting(ca).http1_only().build().expect("client builds");
    let response = h1.get(&url).send().await.expect("TLS handshake succeeds");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);

    let seen = server.requests();
    let versions: Vec<&str> = seen.iter().map(|r| r.version.as_str()).collect();
    assert_eq!(versions, ["HTTP/2.0", "HTTP/1.1"]);
}

#[tokio::test]
async fn a_client_without_the_ca_is_refused() {
    let server = start_tls().await;
    let err = reqwest::Client::new()
        .get(format!("{}/v1/models", server.base_url()))
        .send()
        .await
        .expect_err("the mock's CA is not a web root");
    assert!(err.is_connect(), "{err:?}");
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn the_binary_writes_its_ca_and_serves_https() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_aigw-mock"))
        .arg("--tls")
        .arg(&ca_file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("startup line");
    let addr = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected startup line {line:?}"))
        .to_owned();
    let ca = std::fs::read_to_string(&ca_file).expect("the CA was written before the line");
    let response = trusting(&ca)
        .build()
        .expect("client builds")
        .get(format!("https://{addr}/v1/models"))
        .send()
        .await
        .expect("TLS handshake succeeds");
    assert_eq!(response.status(), 200);
    child.kill().expect("kill");
    child.wait().expect("reaped");
}
