//! The management API over a real socket, in front of in-memory services: every endpoint,
//! every validation error, auth, and the exact backend requests produced.

mod support;

use aigw_proto::shard::filter_value::Kind as Fv;
use aigw_proto::shard::{
    DeleteGatewayRequest, DeleteLogsRequest, Filter, FilterOperator, FilterValue, ListLogsRequest,
    LogQuery, MetadataEntry, OrderBy, UpdateLogRequest, metadata_entry,
};
use reqwest::Method;
use serde_json::{Value, json};
use support::{ACCOUNT, ACCOUNT_TOKEN, ADMIN, Harness, assert_error, gateway_body, log};
use tonic::{Code, Status};

fn path(rest: &str) -> String {
    Harness::path(rest)
}

fn text(s: &str) -> FilterValue {
    FilterValue {
        kind: Some(Fv::Text(s.into())),
    }
}

fn num(n: f64) -> FilterValue {
    FilterValue {
        kind: Some(Fv::Number(n)),
    }
}

fn flag(b: bool) -> FilterValue {
    FilterValue {
        kind: Some(Fv::Flag(b)),
    }
}

fn filter(key: &str, op: FilterOperator, values: Vec<FilterValue>) -> Filter {
    Filter {
        key: key.into(),
        operator: op.into(),
        values,
    }
}

fn query(
    gateway: &str,
    filters: Vec<Filter>,
    search: Option<&str>,
    order: OrderBy,
    ascending: bool,
) -> LogQuery {
    LogQuery {
        account_id: ACCOUNT.into(),
        gateway_id: gateway.into(),
        filters,
        search: search.map(str::to_owned),
        order_by: order.into(),
        ascending,
    }
}

/// A harness with gateway `gw` and logs 1..=n in it.
async fn with_logs(n: u64) -> Harness {
    let h = Harness::start().await;
    h.create_gateway("gw").await;
    for i in 1..=n {
        h.shard
            .insert(log("gw", i, if i % 2 == 0 { "gpt-b" } else { "gpt-a" }));
    }
    h
}

fn log_id(n: u64) -> String {
    let created = 1_714_564_800_000 + n * 1_000;
    ulid::Ulid::from_parts(created, u128::from(n)).to_string()
}

// ---------------------------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn missing_or_unknown_tokens_are_401() {
    let h = Harness::start().await;
    let list = path("/gateways");
    let (s, _, b) = h.send(Method::GET, &list, None, None).await;
    assert_error(&(s, b), 401, 10000, "missing API token");
    let (s, _, b) = h.send(Method::GET, &list, Some("nope"), None).await;
    assert_error(&(s, b), 401, 10000, "invalid API token");
    // A non-bearer scheme is no token.
    let resp = reqwest::Client::new()
        .get(format!("{}{list}", h.base))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Unknown routes and wrong methods are also behind authentication.
    let (s, _, b) = h.send(Method::GET, "/client/v4/nowhere", None, None).await;
    assert_error(&(s, b), 401, 10000, "missing API token");
    assert!(h.gateways.calls().is_empty());
}

#[tokio::test]
async fn account_tokens_are_scoped_to_their_account() {
    let h = Harness::start().await;
    let (s, _, b) = h
        .send(Method::GET, &path("/gateways"), Some(ACCOUNT_TOKEN), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let other = "/client/v4/accounts/someone-else/ai-gateway/gateways";
    let (s, _, b) = h.send(Method::GET, other, Some(ACCOUNT_TOKEN), None).await;
    assert_error(&(s, b), 403, 9109, "someone-else");
    let (s, _, b) = h.send(Method::GET, other, Some(ADMIN), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        h.gateways.calls(),
        vec![
            format!("ListGateways {ACCOUNT}/"),
            "ListGateways someone-else/".to_owned(),
        ]
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_enveloped() {
    let h = Harness::start().await;
    let got = h
        .admin(
            Method::GET,
            "/client/v4/accounts/a/ai-gateway/nothing",
            None,
        )
        .await;
    assert_error(&got, 404, 7000, "/client/v4/accounts/a/ai-gateway/nothing");
    let got = h.admin(Method::PATCH, &path("/gateways"), None).await;
    assert_error(&got, 405, 7001, "PATCH");
    let got = h
        .admin(Method::POST, &path("/gateways/gw/logs/x/request"), None)
        .await;
    assert_error(&got, 405, 7001, "POST");
}

#[tokio::test]
async fn path_ids_are_validated() {
    let h = Harness::start().await;
    let got = h
        .admin(
            Method::GET,
            "/client/v4/accounts/a.b/ai-gateway/gateways",
            None,
        )
        .await;
    assert_error(&got, 400, 3001, "`account_id`");
    let got = h
        .admin(Method::GET, &path("/gateways/Not_Lower"), None)
        .await;
    assert_error(&got, 400, 3001, "`gateway_id`");
    let got = h
        .admin(Method::GET, &path("/gateways/gw/logs/not-a-ulid"), None)
        .await;
    assert_error(&got, 400, 3001, "`id`");
    let long = "a".repeat(65);
    let got = h
        .admin(Method::DELETE, &path(&format!("/gateways/{long}")), None)
        .await;
    assert_error(&got, 400, 3001, "`gateway_id`");
    assert!(h.gateways.calls().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Gateways

#[tokio::test]
async fn create_answers_the_sdk_gateway_shape() {
    let h = Harness::start().await;
    let (s, b) = h
        .admin(
            Method::POST,
            &path("/gateways"),
            Some(json!({
                "id": "full",
                "cache_invalidate_on_update": true,
                "cache_ttl": 300,
                "collect_logs": true,
                "rate_limiting_interval": 60,
                "rate_limiting_limit": 100,
                "rate_limiting_technique": "sliding",
                "authentication": true,
                "log_management": 10000,
                "log_management_strategy": "DELETE_OLDEST",
                "logpush": true,
                "logpush_public_key": "pk",
                "retry_max_attempts": 3,
                "retry_delay": 250,
                "retry_backoff": "exponential",
                "zdr": false,
                "guardrails": null,
            })),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["success"], true);
    assert_eq!(b["errors"], json!([]));
    assert_eq!(b["messages"], json!([]));
    assert!(b.get("result_info").is_none());
    assert_eq!(
        b["result"],
        json!({
            "id": "full",
            "account_id": ACCOUNT,
            "created_at": "2024-05-01T12:00:01Z",
            "modified_at": "2024-05-01T12:00:01Z",
            "is_default": false,
            "cache_invalidate_on_update": true,
            "cache_ttl": 300,
            "collect_logs": true,
            "rate_limiting_interval": 60,
            "rate_limiting_limit": 100,
            "rate_limiting_technique": "sliding",
            "authentication": true,
            "log_management": 10000,
            "log_management_strategy": "DELETE_OLDEST",
            "logpush": true,
            "logpush_public_key": "pk",
            "retry_max_attempts": 3,
            "retry_delay": 250,
            "retry_backoff": "exponential",
        })
    );
    let minimal = h.create_gateway("minimal").await;
    let r = &minimal["result"];
    assert_eq!(r["cache_ttl"], 0);
    assert_eq!(r["rate_limiting_technique"], "fixed");
    assert_eq!(r["log_management"], Value::Null);
    assert_eq!(r["log_management_strategy"], Value::Null);
    assert_eq!(r["authentication"], false);
}

#[tokio::test]
async fn create_rejects_bad_bodies_naming_the_field() {
    let h = Harness::start().await;
    let create = path("/gateways");
    let with = |extra: Value| {
        let mut body = gateway_body("ok");
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    let cases = [
        (with(json!({"id": "Has Space"})), "`id`"),
        (with(json!({"id": "x".repeat(65)})), "`id`"),
        (with(json!({"id": ""})), "`id`"),
        (
            json!({"collect_logs": true, "cache_invalidate_on_update": false}),
            "missing field `id`",
        ),
        (
            json!({"id": "ok", "collect_logs": true}),
            "cache_invalidate_on_update",
        ),
        (with(json!({"cache_ttl": -5})), "`cache_ttl`"),
        (with(json!({"cache_ttl": "60"})), "`cache_ttl`"),
        (
            with(json!({"rate_limiting_technique": "leaky"})),
            "`rate_limiting_technique`",
        ),
        (
            with(json!({"log_management_strategy": "KEEP_ALL"})),
            "`log_management_strategy`",
        ),
        (with(json!({"log_management": 0})), "`log_management`"),
        (with(json!({"dlp": {"enabled": true}})), "`dlp`"),
        (
            with(json!({"retry_max_attempts": 6})),
            "`retry_max_attempts`",
        ),
        (with(json!({"retry_delay": 60_001})), "`retry_delay`"),
        (with(json!({"retry_backoff": "random"})), "`retry_backoff`"),
        (with(json!({"zdr": true})), "`zdr`"),
        (json!([1, 2]), "invalid request body"),
    ];
    for (body, needle) in cases {
        let got = h.admin(Method::POST, &create, Some(body.clone())).await;
        assert_error(&got, 400, 3002, needle);
    }
    let resp = reqwest::Client::new()
        .post(format!("{}{create}", h.base))
        .bearer_auth(ADMIN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(
        h.gateways.calls().is_empty(),
        "nothing invalid reaches the backend"
    );
}

#[tokio::test]
async fn create_twice_is_a_conflict() {
    let h = Harness::start().await;
    h.create_gateway("dup").await;
    let got = h
        .admin(Method::POST, &path("/gateways"), Some(gateway_body("dup")))
        .await;
    assert_error(&got, 409, 3004, "already exists");
}

#[tokio::test]
async fn list_pages_and_searches() {
    let h = Harness::start().await;
    for id in ["alpha", "alphabet", "beta"] {
        h.create_gateway(id).await;
    }
    let (s, b) = h
        .admin(Method::GET, &path("/gateways?search=alpha"), None)
        .await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = b["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alpha", "alphabet"]);
    assert_eq!(
        b["result_info"],
        json!({"page": 1, "per_page": 20, "count": 2, "total_count": 2})
    );

    let (_, b) = h
        .admin(Method::GET, &path("/gateways?page=2&per_page=2"), None)
        .await;
    assert_eq!(b["result"][0]["id"], "beta");
    assert_eq!(
        b["result_info"],
        json!({"page": 2, "per_page": 2, "count": 1, "total_count": 3})
    );

    // Past the last page: empty, so the SDK's auto-pagination stops.
    let (s, b) = h
        .admin(Method::GET, &path("/gateways?page=9&per_page=2"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["result"], json!([]));
    assert_eq!(
        b["result_info"],
        json!({"page": 9, "per_page": 2, "count": 0, "total_count": 3})
    );

    for (q, name) in [
        ("page=0", "`page`"),
        ("page=-1", "`page`"),
        ("page=two", "`page`"),
        ("per_page=0", "`per_page`"),
        ("per_page=51", "`per_page`"),
        ("search=a&search=b", "`search`"),
    ] {
        let got = h
            .admin(Method::GET, &path(&format!("/gateways?{q}")), None)
            .await;
        assert_error(&got, 400, 3001, name);
    }
}

#[tokio::test]
async fn get_update_and_not_found() {
    let h = Harness::start().await;
    h.create_gateway("gw").await;
    let (s, b) = h.admin(Method::GET, &path("/gateways/gw"), None).await;
    assert_eq!(s, 200);
    assert_eq!(b["result"]["id"], "gw");

    let mut body = gateway_body("gw");
    body["cache_ttl"] = json!(120);
    body["authentication"] = json!(true);
    let (s, b) = h
        .admin(Method::PUT, &path("/gateways/gw"), Some(body))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["result"]["cache_ttl"], 120);
    assert_eq!(b["result"]["authentication"], true);
    assert_eq!(b["result"]["created_at"], "2024-05-01T12:00:01Z");
    assert_eq!(b["result"]["modified_at"], "2024-05-01T12:00:02Z");

    let got = h
        .admin(
            Method::PUT,
            &path("/gateways/gw"),
            Some(gateway_body("other")),
        )
        .await;
    assert_error(&got, 400, 3002, "`id`");
    let mut no_logs_flag = gateway_body("gw");
    no_logs_flag.as_object_mut().unwrap().remove("collect_logs");
    let got = h
        .admin(Method::PUT, &path("/gateways/gw"), Some(no_logs_flag))
        .await;
    assert_error(&got, 400, 3002, "collect_logs");

    let got = h.admin(Method::GET, &path("/gateways/missing"), None).await;
    assert_error(&got, 404, 3003, "`missing` not found");
    let mut body = gateway_body("missing");
    body.as_object_mut().unwrap().remove("id");
    let got = h
        .admin(Method::PUT, &path("/gateways/missing"), Some(body))
        .await;
    assert_error(&got, 404, 3003, "not found");
}

#[tokio::test]
async fn delete_removes_settings_and_logs() {
    let h = with_logs(3).await;
    h.create_gateway("keep").await;
    h.shard.insert(log("keep", 9, "m"));
    let (s, b) = h.admin(Method::DELETE, &path("/gateways/gw"), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["result"]["id"], "gw");
    assert_eq!(b["result"]["collect_logs"], true);
    assert_eq!(h.shard.len(), 1, "only the other gateway's log is left");
    let sweep = DeleteGatewayRequest {
        account_id: ACCOUNT.into(),
        gateway_id: "gw".into(),
    };
    assert_eq!(h.shard.calls().delete_gateway, vec![sweep.clone()]);

    // Again: 404, but the sweep still runs (it cleans up after a half-failed delete).
    let got = h.admin(Method::DELETE, &path("/gateways/gw"), None).await;
    assert_error(&got, 404, 3003, "not found");
    assert_eq!(h.shard.calls().delete_gateway, vec![sweep.clone(), sweep]);

    // The account manager failing otherwise: no sweep.
    h.gateways.fail_next(Status::unavailable("no leader"));
    let got = h.admin(Method::DELETE, &path("/gateways/keep"), None).await;
    assert_error(&got, 503, 3005, "Unavailable");
    assert_eq!(h.shard.calls().delete_gateway.len(), 2);
    assert_eq!(h.shard.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Logs: listing

#[tokio::test]
async fn list_defaults() {
    let h = with_logs(0).await;
    let (s, b) = h.admin(Method::GET, &path("/gateways/gw/logs"), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["result"], json!([]));
    assert_eq!(
        h.shard.calls().list,
        vec![ListLogsRequest {
            query: Some(query("gw", vec![], None, OrderBy::CreatedAt, false)),
            page: 1,
            per_page: 20,
            after_id: None,
        }]
    );
}

#[tokio::test]
async fn a_cursor_becomes_the_shard_querys_after_id() {
    let h = with_logs(0).await;
    let cursor = "01HWT0D9EG0000000000000002";
    let (s, b) = h
        .admin(
            Method::GET,
            &path(&format!("/gateways/gw/logs?cursor={cursor}&per_page=50")),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let id = ulid::Ulid::from_string(cursor).unwrap();
    assert_eq!(
        h.shard.calls().list,
        vec![ListLogsRequest {
            query: Some(query("gw", vec![], None, OrderBy::CreatedAt, false)),
            page: 1,
            per_page: 50,
            after_id: Some(id.to_bytes().to_vec().into()),
        }]
    );
    assert!(
        b["result_info"].get("cursor").is_none(),
        "a page that is not full is the last: no cursor"
    );
}

/// Exactly what the Python SDK sends for
/// `logs.list("gw", filters=[model eq gpt-4o, created_at gt ..., metadata.value contains u1,
/// success eq True, cost lt 0.5], order_by="model", order_by_direction="asc", page=2, per_page=5,
/// search="hello")`.
const SDK_FILTERS: &str = "filters.key=model&filters.key=created_at&filters.key=metadata.value\
    &filters.key=success&filters.key=cost&filters.operator=eq&filters.operator=gt\
    &filters.operator=contains&filters.operator=eq&filters.operator=lt&filters.value=gpt-4o\
    &filters.value=2024-05-01T12%3A00%3A00Z&filters.value=u1&filters.value=true&filters.value=0.5\
    &order_by=model&order_by_direction=asc&page=2&per_page=5&search=hello";

#[tokio::test]
async fn sdk_filters_become_the_exact_shard_query() {
    let h = with_logs(0).await;
    let (s, b) = h
        .admin(
            Method::GET,
            &path(&format!("/gateways/gw/logs?{SDK_FILTERS}")),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let expected = ListLogsRequest {
        query: Some(query(
            "gw",
            vec![
                filter("model", FilterOperator::Eq, vec![text("gpt-4o")]),
                filter(
                    "created_at",
                    FilterOperator::Gt,
                    vec![num(1_714_564_800_000.0)],
                ),
                filter("metadata.value", FilterOperator::Contains, vec![text("u1")]),
                filter("success", FilterOperator::Eq, vec![flag(true)]),
                filter("cost", FilterOperator::Lt, vec![num(0.5)]),
            ],
            Some("hello"),
            OrderBy::Model,
            true,
        )),
        page: 2,
        per_page: 5,
        after_id: None,
    };
    assert_eq!(h.shard.calls().list, vec![expected]);
}

#[tokio::test]
async fn one_filter_with_several_values_and_json_filters() {
    let h = with_logs(0).await;
    // SDK: filters=[{"key": "model", "operator": "neq", "value": ["a", "b"]}]
    let sdk = "filters.key=model&filters.operator=neq&filters.value=a&filters.value=b";
    let json_form = r#"filters=[{"key":"model","operator":"neq","value":["a","b"]},{"key":"feedback","operator":"eq","value":[null,-1]}]"#;
    for q in [
        sdk.to_owned(),
        format!("filters={}", urlencode(&json_form["filters=".len()..])),
    ] {
        let (s, b) = h
            .admin(Method::GET, &path(&format!("/gateways/gw/logs?{q}")), None)
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let calls = h.shard.calls();
    let model = filter("model", FilterOperator::Neq, vec![text("a"), text("b")]);
    assert_eq!(
        calls.list[0].query.as_ref().unwrap().filters,
        vec![model.clone()]
    );
    let null = FilterValue {
        kind: Some(Fv::Null(true)),
    };
    assert_eq!(
        calls.list[1].query.as_ref().unwrap().filters,
        vec![
            model,
            filter("feedback", FilterOperator::Eq, vec![null, num(-1.0)])
        ]
    );
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Exactly what the Python SDK sends for `logs.list("gw", cached=True, start_date=datetime(2024,
/// 5, 1, 12, tzinfo=utc), end_date="2024-05-02T00:00:00Z", feedback=1, min_cost=0.25,
/// max_tokens_out=100, model="gpt-4o", provider="openai", success=False, direction="desc",
/// meta_info=True, min_total_tokens=5)`.
const SDK_FLAT: &str = "cached=true&direction=desc&end_date=2024-05-02T00%3A00%3A00Z&feedback=1\
    &max_tokens_out=100&meta_info=true&min_cost=0.25&min_total_tokens=5&model=gpt-4o\
    &provider=openai&start_date=2024-05-01T12%3A00%3A00%2B00%3A00&success=false";

#[tokio::test]
async fn flat_parameters_become_inclusive_filters() {
    let h = with_logs(0).await;
    let (s, b) = h
        .admin(
            Method::GET,
            &path(&format!("/gateways/gw/logs?{SDK_FLAT}")),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let below_quarter = f64::from_bits(0.25f64.to_bits() - 1);
    let expected = ListLogsRequest {
        query: Some(query(
            "gw",
            vec![
                filter("cached", FilterOperator::Eq, vec![flag(true)]),
                filter("success", FilterOperator::Eq, vec![flag(false)]),
                filter("feedback", FilterOperator::Eq, vec![num(1.0)]),
                filter("provider", FilterOperator::Eq, vec![text("openai")]),
                filter("model", FilterOperator::Eq, vec![text("gpt-4o")]),
                filter(
                    "created_at",
                    FilterOperator::Gt,
                    vec![num(1_714_564_799_999.0)],
                ),
                filter(
                    "created_at",
                    FilterOperator::Lt,
                    vec![num(1_714_608_000_001.0)],
                ),
                filter("cost", FilterOperator::Gt, vec![num(below_quarter)]),
                filter("tokens_out", FilterOperator::Lt, vec![num(101.0)]),
                filter("tokens", FilterOperator::Gt, vec![num(4.0)]),
            ],
            None,
            OrderBy::CreatedAt,
            false,
        )),
        page: 1,
        per_page: 20,
        after_id: None,
    };
    assert_eq!(h.shard.calls().list, vec![expected]);
}

#[tokio::test]
async fn list_rejects_bad_parameters_naming_them() {
    let h = with_logs(0).await;
    let cases = [
        ("page=0", "`page`"),
        ("page=abc", "`page`"),
        ("page=4294967296", "`page`"),
        ("per_page=51", "`per_page`"),
        ("per_page=0", "`per_page`"),
        ("order_by=colour", "`order_by`"),
        ("order_by_direction=up", "`order_by_direction`"),
        ("direction=sideways", "`direction`"),
        ("direction=asc&order_by_direction=desc", "`direction`"),
        ("start_date=yesterday", "`start_date`"),
        ("end_date=2024-02-30T00:00:00Z", "`end_date`"),
        ("min_cost=cheap", "`min_cost`"),
        ("max_duration=NaN", "`max_duration`"),
        ("min_tokens_in=x", "`min_tokens_in`"),
        ("max_total_tokens=", "`max_total_tokens`"),
        ("cached=maybe", "`cached`"),
        ("success=1", "`success`"),
        ("feedback=2", "`feedback`"),
        ("meta_info=yes", "`meta_info`"),
        ("search=a&search=b", "`search`"),
        ("model=a&model=b", "`model`"),
        (
            "filters.key=nope&filters.operator=eq&filters.value=x",
            "`filters[0].key`",
        ),
        (
            "filters.key=wholesale&filters.operator=eq&filters.value=x",
            "`filters[0].key`",
        ),
        (
            "filters.key=model&filters.operator=gt&filters.value=x",
            "`filters[0].operator`",
        ),
        (
            "filters.key=tokens_in&filters.operator=contains&filters.value=1",
            "`filters[0].operator`",
        ),
        (
            "filters.key=success&filters.operator=lt&filters.value=true",
            "`filters[0].operator`",
        ),
        (
            "filters.key=model&filters.operator=like&filters.value=x",
            "`filters[0].operator`",
        ),
        (
            "filters.key=cost&filters.operator=gt&filters.value=abc",
            "`filters[0].value`",
        ),
        (
            "filters.key=created_at&filters.operator=lt&filters.value=soon",
            "`filters[0].value`",
        ),
        (
            "filters.key=success&filters.operator=eq&filters.value=yes",
            "`filters[0].value`",
        ),
        (
            "filters.key=feedback&filters.operator=eq&filters.value=5",
            "`filters[0].value`",
        ),
        (
            "filters.key=id&filters.operator=eq&filters.value=123",
            "`filters[0].value`",
        ),
        (
            "filters.key=model&filters.operator=eq",
            "`filters[0].value`",
        ),
        (
            "filters.key=model&filters.key=cost&filters.operator=eq&filters.operator=gt\
             &filters.value=a&filters.value=b&filters.value=1",
            "`filters.value`",
        ),
        (
            "filters.key=model&filters.key=cost&filters.operator=eq&filters.value=a",
            "`filters.operator`",
        ),
        ("filters.colour=red", "`filters.colour`"),
        ("filters=notjson", "`filters`"),
        ("cursor=not-a-log-id", "`cursor`"),
        (
            "cursor=01HWT0D9EG0000000000000002&order_by=model",
            "`cursor`",
        ),
    ];
    for (q, name) in cases {
        let got = h
            .admin(Method::GET, &path(&format!("/gateways/gw/logs?{q}")), None)
            .await;
        assert_error(&got, 400, 3001, name);
    }
    assert!(
        h.shard.calls().list.is_empty(),
        "nothing invalid reaches the shard"
    );
}

#[tokio::test]
async fn list_answers_sdk_log_items_and_pages() {
    let h = with_logs(3).await;
    let (s, b) = h
        .admin(Method::GET, &path("/gateways/gw/logs?per_page=2"), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let items = b["result"].as_array().unwrap();
    assert_eq!(
        b["result_info"],
        json!({"page": 1, "per_page": 2, "count": 2, "total_count": 3,
               "cursor": items[1]["id"]}),
        "a full page in creation order names the cursor of the next"
    );
    assert_eq!(items.len(), 2);
    let first = &items[0];
    assert_eq!(first["id"], log_id(3));
    assert_eq!(first["created_at"], "2024-05-01T12:00:03Z");
    assert_eq!(
        first["metadata"], r#"{"user":"u3"}"#,
        "metadata is a JSON string"
    );
    for (key, value) in [
        ("provider", json!("openai")),
        ("model", json!("gpt-a")),
        ("model_type", json!("chat")),
        ("path", json!("/chat/completions")),
        ("request_type", json!("provider")),
        ("success", json!(true)),
        ("cached", json!(false)),
        ("status_code", json!(200)),
        ("duration", json!(103)),
        ("tokens_in", json!(30)),
        ("tokens_out", json!(3)),
        ("cost", json!(0.003)),
        ("custom_cost", json!(false)),
        ("step", json!(0)),
        ("feedback", Value::Null),
        ("score", Value::Null),
        ("event_id", Value::Null),
        ("request_content_type", json!("application/json")),
        ("response_content_type", json!("application/json")),
        ("request_size", json!(20)),
        ("response_size", json!(30)),
        ("outcome", json!("completed")),
    ] {
        assert_eq!(first[key], value, "{key}");
    }
    assert!(
        first.get("request_head").is_none(),
        "heads only on GET of one log"
    );
    assert_eq!(items[1]["id"], log_id(2));

    let (_, b) = h
        .admin(
            Method::GET,
            &path("/gateways/gw/logs?per_page=2&page=2"),
            None,
        )
        .await;
    assert_eq!(b["result"][0]["id"], log_id(1));
    assert_eq!(
        b["result_info"],
        json!({"page": 2, "per_page": 2, "count": 1, "total_count": 3})
    );
    let (s, b) = h
        .admin(
            Method::GET,
            &path("/gateways/gw/logs?per_page=2&page=3"),
            None,
        )
        .await;
    assert_eq!(s, 200, "a page past the end is empty, not an error");
    assert_eq!(b["result"], json!([]));
    assert_eq!(
        b["result_info"],
        json!({"page": 3, "per_page": 2, "count": 0, "total_count": 3})
    );

    // The fake evaluates what the API produced.
    let (_, b) = h
        .admin(Method::GET, &path("/gateways/gw/logs?model=gpt-b"), None)
        .await;
    assert_eq!(b["result"].as_array().unwrap().len(), 1);
    let (_, b) = h
        .admin(
            Method::GET,
            &path("/gateways/gw/logs?min_tokens_in=20&order_by=cost&order_by_direction=asc"),
            None,
        )
        .await;
    let ids: Vec<&str> = b["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [log_id(2), log_id(3)]);
}

#[tokio::test]
async fn logs_of_an_unknown_gateway_are_404() {
    let h = Harness::start().await;
    let got = h
        .admin(Method::GET, &path("/gateways/nope/logs"), None)
        .await;
    assert_error(&got, 404, 3003, "`nope` not found");
    let got = h
        .admin(Method::DELETE, &path("/gateways/nope/logs"), None)
        .await;
    assert_error(&got, 404, 3003, "`nope` not found");
    assert!(h.shard.calls().list.is_empty());
    assert!(h.shard.calls().delete.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Logs: one log, its bodies, edits

#[tokio::test]
async fn get_log_with_heads() {
    let h = with_logs(2).await;
    let (s, b) = h
        .admin(
            Method::GET,
            &path(&format!("/gateways/gw/logs/{}", log_id(1))),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let r = &b["result"];
    assert_eq!(r["id"], log_id(1));
    assert_eq!(r["request_head"], r#"{"model":"gpt-a","n":1}"#);
    assert_eq!(r["request_head_complete"], true);
    assert_eq!(r["response_head"], r#"{"ok":true}"#);
    assert_eq!(r["response_head_complete"], true);
    // Lower-case ids are the same log.
    let lower = log_id(1).to_lowercase();
    let (s, _) = h
        .admin(
            Method::GET,
            &path(&format!("/gateways/gw/logs/{lower}")),
            None,
        )
        .await;
    assert_eq!(s, 200);

    // Without a collected payload: no heads, and no body fetch.
    let mut bare = log("gw", 7, "m");
    bare.record.payload_collected = false;
    bare.request = None;
    bare.response = None;
    h.shard.insert(bare);
    h.shard.calls.lock().unwrap().body.clear();
    let (s, b) = h
        .admin(
            Method::GET,
            &path(&format!("/gateways/gw/logs/{}", log_id(7))),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["result"]["request_head"], Value::Null);
    assert!(h.shard.calls().body.is_empty());

    let got = h
        .admin(
            Method::GET,
            &path(&format!("/gateways/gw/logs/{}", log_id(99))),
            None,
        )
        .await;
    assert_error(&got, 404, 3003, "log not found");
}

#[tokio::test]
async fn bodies_are_returned_raw() {
    let h = with_logs(1).await;
    let mut cut = log("gw", 2, "m");
    cut.record.response_body_truncated = true;
    cut.response = Some((b"partial".to_vec(), Some("text/plain".into())));
    h.shard.insert(cut);

    let url = path(&format!("/gateways/gw/logs/{}/request", log_id(1)));
    let (s, headers, body) = h.send(Method::GET, &url, Some(ADMIN), None).await;
    assert_eq!(s, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body, json!({"model": "gpt-a", "n": 1}));
    assert!(headers.get("cf-aig-body-truncated").is_none());

    let url = path(&format!("/gateways/gw/logs/{}/response", log_id(2)));
    let (s, headers, body) = h.send(Method::GET, &url, Some(ADMIN), None).await;
    assert_eq!(s, 200);
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(headers["cf-aig-body-truncated"], "true");
    assert_eq!(body, "partial");

    let mut bare = log("gw", 3, "m");
    bare.request = None;
    h.shard.insert(bare);
    let got = h
        .admin(
            Method::GET,
            &path(&format!("/gateways/gw/logs/{}/request", log_id(3))),
            None,
        )
        .await;
    assert_error(&got, 404, 3003, "body not stored");
}

#[tokio::test]
async fn patch_sets_feedback_score_and_metadata() {
    let h = with_logs(1).await;
    let url = path(&format!("/gateways/gw/logs/{}", log_id(1)));
    let (s, b) = h
        .admin(
            Method::PATCH,
            &url,
            Some(json!({"feedback": 1, "score": 88, "metadata": {"team": "x", "n": 2}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["result"]["feedback"], 1);
    assert_eq!(b["result"]["score"], 88.0);
    assert_eq!(b["result"]["metadata"], r#"{"n":2,"team":"x"}"#);
    let id = ulid::Ulid::from_string(&log_id(1)).unwrap();
    let entry = |key: &str, value| MetadataEntry {
        key: key.into(),
        value: Some(value),
    };
    assert_eq!(
        h.shard.calls().update,
        vec![UpdateLogRequest {
            account_id: ACCOUNT.into(),
            gateway_id: "gw".into(),
            id: id.to_bytes().to_vec().into(),
            feedback: Some(1),
            score: Some(88.0),
            replace_metadata: true,
            metadata: vec![
                entry("n", metadata_entry::Value::Number("2".into())),
                entry("team", metadata_entry::Value::Text("x".into())),
            ],
        }]
    );
    // Score alone leaves the metadata alone.
    let (s, b) = h
        .admin(
            Method::PATCH,
            &url,
            Some(json!({"score": 0.5, "feedback": null})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["result"]["metadata"], r#"{"n":2,"team":"x"}"#);
    let last = h.shard.calls().update.last().cloned().unwrap();
    assert!(!last.replace_metadata);
    assert_eq!(last.feedback, None);

    for (body, needle) in [
        (json!({"feedback": 3}), "`feedback`"),
        (json!({"feedback": 0.5}), "`feedback`"),
        (json!({"feedback": "up"}), "`feedback`"),
        (json!({"score": 101}), "`score`"),
        (json!({"score": -0.1}), "`score`"),
        (json!({"metadata": {"a": {"deep": 1}}}), "`metadata.a`"),
        (
            json!({"metadata": {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}}),
            "`metadata`",
        ),
        (json!({"metadata": "x"}), "`metadata`"),
        (json!({"rating": 5}), "`rating`"),
        (json!({}), "at least one of feedback, score, metadata"),
    ] {
        let got = h.admin(Method::PATCH, &url, Some(body)).await;
        assert_error(&got, 400, 3002, needle);
    }
    assert_eq!(h.shard.calls().update.len(), 2);
    let got = h
        .admin(
            Method::PATCH,
            &path(&format!("/gateways/gw/logs/{}", log_id(5))),
            Some(json!({"score": 1})),
        )
        .await;
    assert_error(&got, 404, 3003, "log not found");
}

#[tokio::test]
async fn delete_logs_by_filter() {
    let h = with_logs(4).await;
    // Exactly what the SDK sends for logs.delete("gw", filters=[{"key": "model", "operator":
    // "eq", "value": ["gpt-a"]}], limit=10, order_by="cost", order_by_direction="asc").
    let q = "filters.key=model&filters.operator=eq&filters.value=gpt-a&limit=10&order_by=cost&order_by_direction=asc";
    let (s, b) = h
        .admin(
            Method::DELETE,
            &path(&format!("/gateways/gw/logs?{q}")),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["success"], true);
    assert_eq!(b["result"], json!({"success": true, "deleted": 2}));
    assert_eq!(
        h.shard.calls().delete,
        vec![DeleteLogsRequest {
            query: Some(query(
                "gw",
                vec![filter("model", FilterOperator::Eq, vec![text("gpt-a")])],
                None,
                OrderBy::Cost,
                true,
            )),
            limit: 10,
        }]
    );
    assert_eq!(h.shard.len(), 2);

    for (q, name) in [
        ("model=gpt-b", "`model`"),
        ("direction=asc", "`direction`"),
        ("limit=0", "`limit`"),
        ("limit=-3", "`limit`"),
        ("order_by=colour", "`order_by`"),
        (
            "filters.key=cost&filters.operator=contains&filters.value=1",
            "`filters[0].operator`",
        ),
    ] {
        let got = h
            .admin(
                Method::DELETE,
                &path(&format!("/gateways/gw/logs?{q}")),
                None,
            )
            .await;
        assert_error(&got, 400, 3001, name);
    }
    assert_eq!(h.shard.calls().delete.len(), 1);

    let (s, b) = h
        .admin(Method::DELETE, &path("/gateways/gw/logs"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["result"]["deleted"], 2);
    assert_eq!(h.shard.len(), 0);
}

// ---------------------------------------------------------------------------------------------
// Backend failures

#[tokio::test]
async fn backend_statuses_map_to_http() {
    let h = Harness::start().await;
    let cases = [
        (Status::not_found("gateway gone"), 404, 3003, "gateway gone"),
        (
            Status::invalid_argument("bad search"),
            400,
            3001,
            "bad search",
        ),
        (
            Status::out_of_range("page too far"),
            400,
            3001,
            "page too far",
        ),
        (Status::already_exists("exists"), 409, 3004, "exists"),
        (
            Status::failed_precondition("not leader"),
            503,
            3005,
            "FailedPrecondition",
        ),
        (Status::unavailable("down"), 503, 3005, "Unavailable"),
        (
            Status::deadline_exceeded("slow"),
            504,
            3006,
            "DeadlineExceeded",
        ),
        (Status::internal("secret detail"), 500, 3099, "Internal"),
        (
            Status::permission_denied("nope"),
            500,
            3099,
            "PermissionDenied",
        ),
    ];
    for (status, http, code, needle) in cases {
        let server_side = http >= 500;
        let detail = status.message().to_owned();
        h.gateways.fail_next(status);
        let got = h.admin(Method::GET, &path("/gateways/gw"), None).await;
        assert_error(&got, http, code, needle);
        if server_side {
            assert!(
                !got.1.to_string().contains(&detail),
                "5xx hides backend details: {}",
                got.1
            );
        }
    }
    h.create_gateway("gw").await;
    h.shard
        .fail_next(Status::new(Code::Unavailable, "shard down"));
    let got = h.admin(Method::GET, &path("/gateways/gw/logs"), None).await;
    assert_error(&got, 503, 3005, "Unavailable");
}

// ---------------------------------------------------------------------------------------------
// For the Python SDK check: `AIGW_API_SDK_PORT=18787 cargo test -p aigw-api --test api -- \
// --ignored serve_for_sdk --nocapture`, then run the SDK against http://127.0.0.1:18787.

#[tokio::test]
#[ignore = "serves until killed; used to run the Python SDK against the API"]
async fn serve_for_sdk() {
    let port = std::env::var("AIGW_API_SDK_PORT").unwrap_or_else(|_| "18787".into());
    let h = Harness::start_on(&format!("127.0.0.1:{port}")).await;
    h.create_gateway("sdk-logs").await;
    for i in 1..=3 {
        h.shard.insert(log("sdk-logs", i, "gpt-4o"));
    }
    println!(
        "serving on {} with logs {} {} {}",
        h.base,
        log_id(1),
        log_id(2),
        log_id(3)
    );
    let secs = std::env::var("AIGW_API_SDK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
}
