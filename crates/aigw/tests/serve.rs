//! The `aigw` binary as users run it: configuration errors, serving, restarts and crashes.
//!
//! Every test drives a real `aigw serve` process over real sockets, with the mock upstream in
//! this test process, and reads logs back through the management API.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aigw_mock_upstream::MockServer;
use common::{ADMIN_TOKEN, aigw_serve, api_get, free_addr, mock, wait_ok};
use serde_json::json;

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

/// A running `aigw serve`; killed when dropped.
struct Running {
    child: Child,
    http: SocketAddr,
    grpc: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    fn api(&self, path: &str) -> String {
        self.url(&format!("/client/v4/accounts/acct/ai-gateway{path}"))
    }

    /// Stop with SIGTERM and wait for a clean exit.
    fn terminate(mut self) {
        common::signal(&self.child, "TERM");
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
    }

    /// Kill with SIGKILL: no shutdown code runs.
    fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

async fn start(data_dir: &Path, mock: &MockServer, client: &reqwest::Client) -> Running {
    let (http, grpc) = (free_addr(), free_addr());
    let child = aigw_serve()
        .arg("--data-dir")
        .arg(data_dir)
        .env("AIGW_HTTP_ADDR", http.to_string())
        .env("AIGW_GRPC_ADDR", grpc.to_string())
        .env("AIGW_ADMIN_TOKEN", ADMIN_TOKEN)
        .env(
            "AIGW_PROVIDERS__OPENAI__BASE_URL",
            format!("{}/v1", mock.base_url()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("aigw starts");
    let running = Running { child, http, grpc };
    wait_ok(client, &running.url("/readyz"), "aigw").await;
    running
}

async fn chat(client: &reqwest::Client, aigw: &Running, i: usize) -> String {
    let resp = client
        .post(aigw.url("/v1/acct/default/openai/chat/completions"))
        .header("authorization", "Bearer sk-never-logged")
        .header("cf-aig-event-id", format!("evt-{i}"))
        .json(
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["cf-aig-log-id"].to_str().unwrap().to_owned();
    resp.bytes().await.unwrap();
    id
}

/// Ids of the newest `per_page` logs of `default`.
async fn visible_ids(client: &reqwest::Client, aigw: &Running) -> Vec<String> {
    let (status, body) = api_get(client, aigw.api("/gateways/default/logs?per_page=50")).await;
    assert_eq!(status, 200, "{body}");
    body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Wait until log `id` is readable (logging is asynchronous; the target is within 1 s).
async fn wait_for_log(client: &reqwest::Client, aigw: &Running, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = api_get(client, aigw.api(&format!("/gateways/default/logs/{id}"))).await;
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "log {id} never became visible");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The allocator options compiled into the binary are in effect: jemalloc's background
/// threads (which return freed pages to the kernel) are running.
#[tokio::test]
async fn jemalloc_purges_from_its_background_threads() {
    let mock = mock().await;
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let aigw = start(data.path(), &mock, &client).await;
    chat(&client, &aigw, 0).await;
    let tasks = std::fs::read_dir(format!("/proc/{}/task", aigw.child.id())).unwrap();
    let names: Vec<String> = tasks
        .map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).unwrap())
        .collect();
    assert!(
        names.iter().any(|name| name.trim() == "jemalloc_bg_thd"),
        "{names:?}"
    );
}

#[tokio::test]
async fn logs_feedback_and_gateways_survive_a_restart() {
    let mock = mock().await;
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let aigw = start(data.path(), &mock, &client).await;

    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(chat(&client, &aigw, i).await);
    }
    let created = client
        .post(aigw.api("/gateways"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"id": "prod", "collect_logs": false, "cache_ttl": 0, "cache_invalidate_on_update": false,
                      "rate_limiting_interval": 0, "rate_limiting_limit": 0, "rate_limiting_technique": "fixed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200, "{}", created.text().await.unwrap());
    wait_for_log(&client, &aigw, &ids[3]).await;
    let patched = client
        .patch(aigw.api(&format!("/gateways/default/logs/{}", ids[3])))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"feedback": 1, "score": 0.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200, "{}", patched.text().await.unwrap());
    // Shutdown flushes every queued record; then a new process opens the same data dir.
    aigw.terminate();

    let aigw = start(data.path(), &mock, &client).await;
    let visible = visible_ids(&client, &aigw).await;
    for id in &ids {
        assert!(visible.contains(id), "log {id} missing after restart");
    }
    let (status, log) = api_get(
        &client,
        aigw.api(&format!("/gateways/default/logs/{}", ids[3])),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(log["result"]["feedback"], 1, "{log}");
    let (status, body) = api_get(
        &client,
        aigw.api(&format!("/gateways/default/logs/{}/request", ids[0])),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["model"], "gpt-4o-mini", "request bodies survive too");
    let (status, gw) = api_get(&client, aigw.api("/gateways/prod")).await;
    assert_eq!(status, 200, "{gw}");
    assert_eq!(gw["result"]["collect_logs"], false);
    // The gateway's settings apply after the restart: prod does not log.
    let resp = client
        .post(aigw.url("/v1/acct/prod/openai/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("cf-aig-log-id"));
    aigw.terminate();
}

#[tokio::test]
async fn logs_visible_before_a_kill_9_survive_it() {
    let mock = mock().await;
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let aigw = start(data.path(), &mock, &client).await;
    let proxy_url = aigw.url("/v1/acct/default/openai/chat/completions");

    // Keep requests flowing from four workers while we watch what becomes visible.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (client, url, stop) = (client.clone(), proxy_url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = w * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    let _ = client
                        .post(&url)
                        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "load"}]}))
                        .header("cf-aig-event-id", format!("load-{i}"))
                        .send()
                        .await;
                    i += 1;
                }
            })
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 100 {
        seen.extend(visible_ids(&client, &aigw).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last look right before the kill, while writes are still in flight.
    seen.extend(visible_ids(&client, &aigw).await);
    aigw.crash();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }

    // The store reopens cleanly and every log that had been visible is still there.
    let aigw = start(data.path(), &mock, &client).await;
    for id in &seen {
        let (status, body) =
            api_get(&client, aigw.api(&format!("/gateways/default/logs/{id}"))).await;
        assert_eq!(
            status, 200,
            "log {id} was visible before kill -9 and is gone: {body}"
        );
    }
    // And it keeps accepting writes.
    let id = chat(&client, &aigw, 0).await;
    wait_for_log(&client, &aigw, &id).await;
    aigw.terminate();
}

/// The all-in-one process is a one-node cluster to the outside: it publishes its shard map,
/// which a stateless node follows, and serves its shard group over gRPC to a `ShardRouter` —
/// the path an edge of a cluster takes. A watcher does not hold up a graceful shutdown, and a
/// restart on a new address publishes the next version of the map.
// Multi-threaded: `terminate` blocks this thread while the follower's connection must keep
// running to see the server go away.
/// Follows the shard map the all-in-one process publishes on its gRPC port.
async fn follow_map(
    aigw: &Running,
) -> Result<tokio::sync::watch::Receiver<std::sync::Arc<aigw_placement::ShardMap>>, tonic::Status> {
    use aigw_cluster::{Credentials, RetryPolicy, follow_shard_map};
    follow_shard_map(
        vec![aigw.grpc.to_string()],
        RetryPolicy::default(),
        Credentials::bearer(Some(ADMIN_TOKEN))?,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_all_in_one_publishes_its_shard_map_and_serves_its_group_remotely() {
    use aigw_cluster::ShardRouter;
    use aigw_proto::shard::shard_server::Shard;
    use aigw_proto::shard::{ListLogsRequest, LogQuery};

    let mock = mock().await;
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let aigw = start(data.path(), &mock, &client).await;
    let maps = follow_map(&aigw).await.expect("the map is published");
    let map = maps.borrow().clone();
    assert_eq!(map.version(), 1);
    assert_eq!(map.nodes().len(), 1);
    let node = map.nodes().values().next().unwrap();
    assert_eq!(node.addr, aigw.grpc.to_string());
    assert_eq!(
        map.replicas(map.group_for("acct", "default")),
        Some(&[node.id][..])
    );

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(chat(&client, &aigw, i).await);
    }
    wait_for_log(&client, &aigw, &ids[2]).await;
    let router = ShardRouter::new(maps.clone());
    let found = router
        .list_logs(tonic::Request::new(ListLogsRequest {
            query: Some(LogQuery {
                account_id: "acct".into(),
                gateway_id: "default".into(),
                ..Default::default()
            }),
            page: 1,
            per_page: 10,
            after_id: None,
        }))
        .await
        .expect("list through the router")
        .into_inner();
    assert_eq!(found.total_count, 3);
    // The follower stays connected: its stream must not hold up the graceful shutdown.
    aigw.terminate();

    let aigw = start(data.path(), &mock, &client).await;
    let maps = follow_map(&aigw).await.expect("the map is published again");
    let map = maps.borrow().clone();
    assert_eq!(map.version(), 2, "a new address is a new version");
    assert_eq!(
        map.nodes().values().next().unwrap().addr,
        aigw.grpc.to_string()
    );
    aigw.terminate();
}

/// `aigw admin token create` for `account` with `permissions`; the token printed.
fn issue_token(aigw: &Running, account: &str, permissions: &[&str]) -> String {
    let mut args = vec!["token", "create", "--account", account];
    for p in permissions {
        args.extend(["--permission", p]);
    }
    common::cluster::admin(aigw.grpc, &args).trim().to_owned()
}

#[tokio::test]
async fn issued_tokens_do_what_their_permissions_allow() {
    let upstream = mock().await;
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let aigw = start(dir.path(), &upstream, &client).await;
    let created = client
        .post(aigw.api("/gateways"))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &json!({"id": "locked", "collect_logs": true, "cache_ttl": 0,
                      "cache_invalidate_on_update": false, "rate_limiting_interval": 0,
                      "rate_limiting_limit": 0, "authentication": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let run = issue_token(&aigw, "acct", &["run"]);
    let logs = issue_token(&aigw, "acct", &["logs"]);
    let both = issue_token(&aigw, "acct", &[]);
    let foreign = issue_token(&aigw, "other", &["run"]);

    let through_gateway = |token: String| {
        let (client, url) = (
            client.clone(),
            aigw.url("/v1/acct/locked/openai/chat/completions"),
        );
        async move {
            client
                .post(url)
                .header("cf-aig-authorization", format!("Bearer {token}"))
                .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let management = |token: String| {
        let (client, url) = (client.clone(), aigw.api("/gateways/locked/logs"));
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(through_gateway(run.clone()).await, 200);
    assert_eq!(through_gateway(both.clone()).await, 200);
    assert_eq!(through_gateway(ADMIN_TOKEN.to_owned()).await, 200);
    assert_eq!(
        through_gateway(logs.clone()).await,
        401,
        "no run permission"
    );
    assert_eq!(
        through_gateway(foreign).await,
        401,
        "another account's token"
    );
    assert_eq!(management(logs).await, 200);
    assert_eq!(management(both).await, 200);
    assert_eq!(management(run).await, 401, "no logs permission");
    let listed = common::cluster::admin(aigw.grpc, &["token", "list", "--account", "acct"]);
    assert!(
        listed.contains("permissions=run") && listed.contains("permissions=logs,run"),
        "{listed}"
    );
    aigw.terminate();
}
