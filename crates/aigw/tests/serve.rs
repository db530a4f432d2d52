//! The `aigw` binary as users run it: configuration errors, serving, and a clean shutdown that
//! flushes every queued log record.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aigw_mock_upstream::MockOptions;
use serde_json::{Value, json};

/// `aigw serve` with a clean `AIGW_*` environment.
fn aigw_serve() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aigw"));
    cmd.arg("serve");
    // Only the variables a test sets may configure the process.
    for (name, _) in std::env::vars() {
        if name.starts_with("AIGW_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn run_to_exit(cmd: &mut Command) -> Output {
    cmd.output().expect("aigw runs")
}

#[test]
fn bad_configuration_fails_at_start_naming_the_key() {
    let out = run_to_exit(aigw_serve().env("AIGW_HTTP_ADDR", "not-an-address"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`http_addr` (set by AIGW_HTTP_ADDR)"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aigw.toml");
    std::fs::write(
        &file,
        "[providers.openai]\nbase_url = \"ftp://nope\"\n[proxy]\nupstream_timeout_ms = 0\n",
    )
    .unwrap();
    let out = run_to_exit(aigw_serve().arg("--config").arg(&file));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`providers.openai.base_url`"), "{stderr}");
    assert!(stderr.contains("`proxy.upstream_timeout_ms`"), "{stderr}");

    let out = run_to_exit(aigw_serve().args(["--config", "/nonexistent/aigw.toml"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/aigw.toml"));
}

struct Running {
    child: Child,
    http: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &Path, mock_base: &str) -> Running {
    let http = free_addr();
    let child = aigw_serve()
        .arg("--data-dir")
        .arg(data_dir)
        .env("AIGW_HTTP_ADDR", http.to_string())
        .env("AIGW_GRPC_ADDR", free_addr().to_string())
        .env(
            "AIGW_PROVIDERS__OPENAI__BASE_URL",
            format!("{mock_base}/v1"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("aigw starts");
    Running { child, http }
}

async fn wait_healthy(client: &reqwest::Client, http: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(resp) = client.get(format!("http://{http}/healthz")).send().await {
            if resp.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "aigw did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serves_requests_and_flushes_logs_on_sigterm() {
    let mock = aigw_mock_upstream::spawn(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        MockOptions::default(),
    )
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut running = start(data.path(), &mock.base_url());
    let client = reqwest::Client::new();
    wait_healthy(&client, running.http).await;

    let mut ids = Vec::new();
    for i in 0..20 {
        let resp = client
            .post(format!("http://{}/v1/acct/default/openai/chat/completions", running.http))
            .header("authorization", "Bearer sk-never-logged")
            .header("cf-aig-event-id", format!("evt-{i}"))
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        ids.push(resp.headers()["cf-aig-log-id"].to_str().unwrap().to_owned());
        resp.bytes().await.unwrap();
    }

    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = running.child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");

    let text = std::fs::read_to_string(data.path().join("logs.jsonl")).unwrap();
    assert!(!text.contains("sk-never-logged"));
    let logged: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let logged_ids: Vec<&str> = logged.iter().map(|r| r["id"].as_str().unwrap()).collect();
    for id in &ids {
        assert!(
            logged_ids.contains(&id.as_str()),
            "log {id} missing after shutdown"
        );
    }
    assert!(
        logged
            .iter()
            .all(|r| r["tokens_in"] == 2 && r["success"] == true)
    );
}
