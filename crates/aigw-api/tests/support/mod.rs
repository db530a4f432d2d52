//! Test support: in-memory `Gateways` and `Shard` services (small but real: they store gateways
//! and logs, and evaluate filters, search, order and pagination), every request they receive
//! recorded for assertions, and the router served on a real socket.
//!
//! These fakes exist only to test the HTTP layer; the real services live with their state.

#![allow(dead_code)]

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use aigw_api::{ApiState, StaticTokens};
use aigw_proto::admin::gateways_server::Gateways;
use aigw_proto::admin::{
    CreateGatewayRequest, Gateway, GatewayRef, ListGatewaysRequest, ListGatewaysResponse,
    UpdateGatewayRequest,
};
use aigw_proto::shard::filter_value::Kind as Fv;
use aigw_proto::shard::shard_server::Shard;
use aigw_proto::shard::{
    BodyKind, DeleteGatewayRequest, DeleteGatewayResponse, DeleteLogsRequest, DeleteLogsResponse,
    Filter, FilterOperator, GetBodyRequest, GetBodyResponse, GetLogRequest, GetLogResponse,
    IngestRequest, IngestResponse, ListLogsRequest, ListLogsResponse, LogQuery, LogRecord, OrderBy,
    UpdateLogRequest, UpdateLogResponse, metadata_entry,
};
use serde_json::Value;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// The admin token of every harness.
pub const ADMIN: &str = "admin-secret";
/// The token of account [`ACCOUNT`].
pub const ACCOUNT_TOKEN: &str = "acct-1-token";
/// The account most tests use.
pub const ACCOUNT: &str = "acct-1";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A failure to answer instead of the next call.
#[derive(Default)]
struct Faults(Mutex<Option<Status>>);

impl Faults {
    fn take(&self) -> Result<(), Status> {
        match lock(&self.0).take() {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }
}

/// Gateway settings in memory, keyed by (account, id).
#[derive(Default)]
pub struct MemGateways {
    gateways: Mutex<BTreeMap<(String, String), Gateway>>,
    clock: Mutex<i64>,
    faults: Faults,
    /// Every request received, as `"Method account/id"`.
    pub calls: Mutex<Vec<String>>,
}

impl MemGateways {
    /// The next call answers `status`.
    pub fn fail_next(&self, status: Status) {
        *lock(&self.faults.0) = Some(status);
    }

    /// The calls received so far.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    fn now(&self) -> i64 {
        let mut clock = lock(&self.clock);
        *clock += 1_000;
        1_714_564_800_000 + *clock
    }

    fn record(&self, method: &str, account: &str, id: &str) -> Result<(), Status> {
        lock(&self.calls).push(format!("{method} {account}/{id}"));
        self.faults.take()
    }

    fn not_found(account: &str, id: &str) -> Status {
        Status::not_found(format!("gateway `{id}` not found in account `{account}`"))
    }
}

#[tonic::async_trait]
impl Gateways for MemGateways {
    type WatchGatewaysStream = aigw_proto::BoxStream<aigw_proto::admin::GatewayChanges>;

    async fn watch_gateways(
        &self,
        _request: Request<aigw_proto::admin::WatchGatewaysRequest>,
    ) -> Result<Response<Self::WatchGatewaysStream>, Status> {
        Err(Status::unimplemented("the management API never watches"))
    }

    async fn create_gateway(
        &self,
        request: Request<CreateGatewayRequest>,
    ) -> Result<Response<Gateway>, Status> {
        let r = request.into_inner();
        self.record("CreateGateway", &r.account_id, &r.id)?;
        let mut all = lock(&self.gateways);
        let key = (r.account_id.clone(), r.id.clone());
        if all.contains_key(&key) {
            return Err(Status::already_exists(format!(
                "gateway `{}` already exists",
                r.id
            )));
        }
        let now = self.now();
        let g = Gateway {
            account_id: r.account_id,
            id: r.id,
            settings: r.settings,
            created_at_ms: now,
            modified_at_ms: now,
            cache_epoch_ms: 0,
        };
        all.insert(key, g.clone());
        Ok(Response::new(g))
    }

    async fn list_gateways(
        &self,
        request: Request<ListGatewaysRequest>,
    ) -> Result<Response<ListGatewaysResponse>, Status> {
        let r = request.into_inner();
        self.record(
            "ListGateways",
            &r.account_id,
            r.search.as_deref().unwrap_or(""),
        )?;
        let all = lock(&self.gateways);
        let matching: Vec<Gateway> = all
            .values()
            .filter(|g| g.account_id == r.account_id)
            .filter(|g| r.search.as_deref().is_none_or(|s| g.id.contains(s)))
            .cloned()
            .collect();
        let start = (r.page as usize - 1) * r.per_page as usize;
        Ok(Response::new(ListGatewaysResponse {
            total_count: matching.len() as u64,
            gateways: matching
                .into_iter()
                .skip(start)
                .take(r.per_page as usize)
                .collect(),
        }))
    }

    async fn get_gateway(&self, request: Request<GatewayRef>) -> Result<Response<Gateway>, Status> {
        let r = request.into_inner();
        self.record("GetGateway", &r.account_id, &r.id)?;
        lock(&self.gateways)
            .get(&(r.account_id.clone(), r.id.clone()))
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Self::not_found(&r.account_id, &r.id))
    }

    async fn update_gateway(
        &self,
        request: Request<UpdateGatewayRequest>,
    ) -> Result<Response<Gateway>, Status> {
        let r = request.into_inner();
        self.record("UpdateGateway", &r.account_id, &r.id)?;
        let now = self.now();
        let mut all = lock(&self.gateways);
        let g = all
            .get_mut(&(r.account_id.clone(), r.id.clone()))
            .ok_or_else(|| Self::not_found(&r.account_id, &r.id))?;
        g.settings = r.settings;
        g.modified_at_ms = now;
        Ok(Response::new(g.clone()))
    }

    async fn delete_gateway(
        &self,
        request: Request<GatewayRef>,
    ) -> Result<Response<Gateway>, Status> {
        let r = request.into_inner();
        self.record("DeleteGateway", &r.account_id, &r.id)?;
        lock(&self.gateways)
            .remove(&(r.account_id.clone(), r.id.clone()))
            .map(Response::new)
            .ok_or_else(|| Self::not_found(&r.account_id, &r.id))
    }
}

/// One stored log and its bodies.
#[derive(Clone)]
pub struct StoredLog {
    /// The record.
    pub record: LogRecord,
    /// Request body and its content type.
    pub request: Option<(Vec<u8>, Option<String>)>,
    /// Response body and its content type.
    pub response: Option<(Vec<u8>, Option<String>)>,
}

/// Requests the shard received, by method.
#[derive(Default, Debug)]
pub struct ShardCalls {
    /// `ListLogs`.
    pub list: Vec<ListLogsRequest>,
    /// `DeleteLogs`.
    pub delete: Vec<DeleteLogsRequest>,
    /// `UpdateLog`.
    pub update: Vec<UpdateLogRequest>,
    /// `GetLog`.
    pub get: Vec<GetLogRequest>,
    /// `GetBody`.
    pub body: Vec<GetBodyRequest>,
    /// `DeleteGateway`.
    pub delete_gateway: Vec<DeleteGatewayRequest>,
}

/// Logs in memory.
#[derive(Default)]
pub struct MemShard {
    logs: Mutex<Vec<StoredLog>>,
    faults: Faults,
    /// Every request received.
    pub calls: Mutex<ShardCalls>,
}

impl MemShard {
    /// Store a log.
    pub fn insert(&self, log: StoredLog) {
        lock(&self.logs).push(log);
    }

    /// The next call answers `status`.
    pub fn fail_next(&self, status: Status) {
        *lock(&self.faults.0) = Some(status);
    }

    /// Requests received so far.
    pub fn calls(&self) -> MutexGuard<'_, ShardCalls> {
        lock(&self.calls)
    }

    /// How many logs are stored.
    pub fn len(&self) -> usize {
        lock(&self.logs).len()
    }

    fn find<'a>(
        logs: &'a mut [StoredLog],
        account: &str,
        gateway: &str,
        id: &[u8],
    ) -> Result<&'a mut StoredLog, Status> {
        logs.iter_mut()
            .find(|l| {
                l.record.account_id == account
                    && l.record.gateway_id == gateway
                    && l.record.id == id
            })
            .ok_or_else(|| Status::not_found("log not found"))
    }

    /// Matching logs, ordered.
    fn select(logs: &[StoredLog], query: &LogQuery) -> Vec<usize> {
        let mut hits: Vec<usize> = logs
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                l.record.account_id == query.account_id && l.record.gateway_id == query.gateway_id
            })
            .filter(|(_, l)| query.filters.iter().all(|f| matches(&l.record, f)))
            .filter(|(_, l)| {
                query
                    .search
                    .as_deref()
                    .is_none_or(|s| searched(&l.record, s))
            })
            .map(|(i, _)| i)
            .collect();
        let order = query.order_by();
        hits.sort_by(|a, b| {
            let (a, b) = (&logs[*a].record, &logs[*b].record);
            let o = sort_key(a, order)
                .partial_cmp(&sort_key(b, order))
                .unwrap_or(Ordering::Equal)
                .then_with(|| a.id.cmp(&b.id));
            if query.ascending { o } else { o.reverse() }
        });
        hits
    }
}

/// A record field as the filters see it.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Field {
    Null,
    Text(String),
    Number(f64),
    Flag(bool),
}

fn opt_text(s: &Option<String>) -> Field {
    s.clone().map_or(Field::Null, Field::Text)
}

fn opt_num<T: Into<f64> + Copy>(n: Option<T>) -> Field {
    n.map_or(Field::Null, |n| Field::Number(n.into()))
}

fn meta_text(v: &Option<metadata_entry::Value>) -> String {
    match v {
        Some(metadata_entry::Value::Text(s)) | Some(metadata_entry::Value::Number(s)) => s.clone(),
        Some(metadata_entry::Value::Flag(b)) => b.to_string(),
        None => String::new(),
    }
}

/// Every value `key` has in `r` (metadata keys and values are several).
fn fields(r: &LogRecord, key: &str) -> Vec<Field> {
    let one = match key {
        "id" => Field::Text(
            ulid::Ulid::from_bytes(r.id.as_ref().try_into().unwrap_or([0; 16])).to_string(),
        ),
        "created_at" => Field::Number(r.created_at_ms as f64),
        "request_content_type" => opt_text(&r.request_content_type),
        "response_content_type" => opt_text(&r.response_content_type),
        "request_type" => Field::Text(r.request_type.clone()),
        "success" => Field::Flag(r.success),
        "cached" => Field::Flag(r.cached),
        "authentication" => Field::Flag(r.authentication),
        "provider" => Field::Text(r.provider.clone()),
        "model" => Field::Text(r.model.clone()),
        "model_type" => Field::Text(r.model_type.clone()),
        "cost" => opt_num(r.cost),
        "tokens" => match (r.tokens_in, r.tokens_out) {
            (None, None) => Field::Null,
            (a, b) => Field::Number((a.unwrap_or(0) + b.unwrap_or(0)) as f64),
        },
        "tokens_in" => opt_num(r.tokens_in.map(|n| n as f64)),
        "tokens_out" => opt_num(r.tokens_out.map(|n| n as f64)),
        "duration" => Field::Number(r.duration_ms as f64),
        "status_code" => Field::Number(f64::from(r.status_code)),
        "feedback" => opt_num(r.feedback),
        "event_id" => opt_text(&r.event_id),
        "user_agent" => opt_text(&r.user_agent),
        "metadata.key" => {
            return r
                .metadata
                .iter()
                .map(|e| Field::Text(e.key.clone()))
                .collect();
        }
        "metadata.value" => {
            return r
                .metadata
                .iter()
                .map(|e| Field::Text(meta_text(&e.value)))
                .collect();
        }
        other => panic!("fake shard: unknown filter key {other}"),
    };
    vec![one]
}

fn filter_field(v: &aigw_proto::shard::FilterValue) -> Field {
    match &v.kind {
        Some(Fv::Text(s)) => Field::Text(s.clone()),
        Some(Fv::Number(n)) => Field::Number(*n),
        Some(Fv::Flag(b)) => Field::Flag(*b),
        Some(Fv::Null(_)) | None => Field::Null,
    }
}

/// Compare as text when either side is text (metadata values are matched by their text).
fn same(field: &Field, value: &Field) -> bool {
    match (field, value) {
        (Field::Text(a), Field::Number(n)) | (Field::Number(n), Field::Text(a)) => {
            a == &n.to_string()
        }
        (Field::Text(a), Field::Flag(b)) => a == &b.to_string(),
        (a, b) => a == b,
    }
}

fn matches(r: &LogRecord, f: &Filter) -> bool {
    let fields = fields(r, &f.key);
    let values: Vec<Field> = f.values.iter().map(filter_field).collect();
    let any = |test: &dyn Fn(&Field, &Field) -> bool| {
        fields
            .iter()
            .any(|field| values.iter().any(|v| test(field, v)))
    };
    match f.operator() {
        FilterOperator::Eq => any(&same),
        FilterOperator::Neq => !any(&same),
        FilterOperator::Contains => any(&|a, b| match (a, b) {
            (Field::Text(a), Field::Text(b)) => a.contains(b.as_str()),
            _ => false,
        }),
        FilterOperator::Lt => {
            any(&|a, b| matches!((a, b), (Field::Number(a), Field::Number(b)) if a < b))
        }
        FilterOperator::Gt => {
            any(&|a, b| matches!((a, b), (Field::Number(a), Field::Number(b)) if a > b))
        }
    }
}

fn searched(r: &LogRecord, s: &str) -> bool {
    let s = s.to_lowercase();
    [
        r.model.as_str(),
        r.provider.as_str(),
        r.event_id.as_deref().unwrap_or(""),
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(r.metadata.iter().map(|e| meta_text(&e.value)))
    .any(|t| t.to_lowercase().contains(&s))
}

fn sort_key(r: &LogRecord, order: OrderBy) -> Field {
    let key = match order {
        OrderBy::CreatedAt => "created_at",
        OrderBy::Provider => "provider",
        OrderBy::Model => "model",
        OrderBy::ModelType => "model_type",
        OrderBy::Success => "success",
        OrderBy::Cached => "cached",
        OrderBy::Cost => "cost",
        OrderBy::TokensIn => "tokens_in",
        OrderBy::TokensOut => "tokens_out",
        OrderBy::Duration => "duration",
        OrderBy::Feedback => "feedback",
    };
    fields(r, key).remove(0)
}

#[tonic::async_trait]
impl Shard for MemShard {
    async fn ingest(
        &self,
        request: Request<IngestRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        self.faults.take()?;
        let entries = request.into_inner().entries;
        let accepted = entries.len() as u32;
        for e in entries {
            let record = e
                .record
                .ok_or_else(|| Status::invalid_argument("entry without record"))?;
            let request_ct = record.request_content_type.clone();
            let response_ct = record.response_content_type.clone();
            self.insert(StoredLog {
                record,
                request: e.request_body.map(|b| (b.to_vec(), request_ct)),
                response: e.response_body.map(|b| (b.to_vec(), response_ct)),
            });
        }
        Ok(Response::new(IngestResponse { accepted }))
    }

    async fn list_logs(
        &self,
        request: Request<ListLogsRequest>,
    ) -> Result<Response<ListLogsResponse>, Status> {
        let r = request.into_inner();
        lock(&self.calls).list.push(r.clone());
        self.faults.take()?;
        let query = r
            .query
            .ok_or_else(|| Status::invalid_argument("no query"))?;
        let logs = lock(&self.logs);
        let hits = Self::select(&logs, &query);
        let start = (r.page as usize - 1) * r.per_page as usize;
        Ok(Response::new(ListLogsResponse {
            total_count: hits.len() as u64,
            logs: hits
                .iter()
                .skip(start)
                .take(r.per_page as usize)
                .map(|i| logs[*i].record.clone())
                .collect(),
        }))
    }

    async fn get_log(
        &self,
        request: Request<GetLogRequest>,
    ) -> Result<Response<GetLogResponse>, Status> {
        let r = request.into_inner();
        lock(&self.calls).get.push(r.clone());
        self.faults.take()?;
        let mut logs = lock(&self.logs);
        let log = Self::find(&mut logs, &r.account_id, &r.gateway_id, &r.id)?;
        Ok(Response::new(GetLogResponse {
            log: Some(log.record.clone()),
        }))
    }

    async fn get_body(
        &self,
        request: Request<GetBodyRequest>,
    ) -> Result<Response<GetBodyResponse>, Status> {
        let r = request.into_inner();
        lock(&self.calls).body.push(r.clone());
        self.faults.take()?;
        let mut logs = lock(&self.logs);
        let log = Self::find(&mut logs, &r.account_id, &r.gateway_id, &r.id)?;
        let (body, truncated) = match r.kind() {
            BodyKind::Request => (&log.request, log.record.request_body_truncated),
            BodyKind::Response => (&log.response, log.record.response_body_truncated),
        };
        let (body, content_type) = body
            .clone()
            .ok_or_else(|| Status::not_found("body not stored"))?;
        Ok(Response::new(GetBodyResponse {
            body: body.into(),
            content_type,
            truncated,
        }))
    }

    async fn update_log(
        &self,
        request: Request<UpdateLogRequest>,
    ) -> Result<Response<UpdateLogResponse>, Status> {
        let r = request.into_inner();
        lock(&self.calls).update.push(r.clone());
        self.faults.take()?;
        let mut logs = lock(&self.logs);
        let log = Self::find(&mut logs, &r.account_id, &r.gateway_id, &r.id)?;
        if r.feedback.is_some() {
            log.record.feedback = r.feedback;
        }
        if r.score.is_some() {
            log.record.score = r.score;
        }
        if r.replace_metadata {
            log.record.metadata = r.metadata;
        }
        Ok(Response::new(UpdateLogResponse {
            log: Some(log.record.clone()),
        }))
    }

    async fn delete_logs(
        &self,
        request: Request<DeleteLogsRequest>,
    ) -> Result<Response<DeleteLogsResponse>, Status> {
        let r = request.into_inner();
        lock(&self.calls).delete.push(r.clone());
        self.faults.take()?;
        let query = r
            .query
            .ok_or_else(|| Status::invalid_argument("no query"))?;
        let mut logs = lock(&self.logs);
        let mut hits = Self::select(&logs, &query);
        if r.limit > 0 {
            hits.truncate(r.limit as usize);
        }
        hits.sort_unstable_by(|a, b| b.cmp(a));
        for i in &hits {
            logs.remove(*i);
        }
        Ok(Response::new(DeleteLogsResponse {
            deleted: hits.len() as u64,
        }))
    }

    async fn delete_gateway(
        &self,
        request: Request<DeleteGatewayRequest>,
    ) -> Result<Response<DeleteGatewayResponse>, Status> {
        let r = request.into_inner();
        lock(&self.calls).delete_gateway.push(r.clone());
        self.faults.take()?;
        let mut logs = lock(&self.logs);
        let before = logs.len();
        logs.retain(|l| {
            !(l.record.account_id == r.account_id && l.record.gateway_id == r.gateway_id)
        });
        Ok(Response::new(DeleteGatewayResponse {
            deleted: (before - logs.len()) as u64,
        }))
    }

    async fn cache_get(
        &self,
        _: Request<aigw_proto::shard::CacheGetRequest>,
    ) -> Result<Response<aigw_proto::shard::CacheGetResponse>, Status> {
        Err(Status::unimplemented("no gateway state here"))
    }

    async fn cache_put(
        &self,
        _: Request<aigw_proto::shard::CachePutRequest>,
    ) -> Result<Response<aigw_proto::shard::CachePutResponse>, Status> {
        Err(Status::unimplemented("no gateway state here"))
    }

    async fn lease_rate(
        &self,
        _: Request<aigw_proto::shard::LeaseRateRequest>,
    ) -> Result<Response<aigw_proto::shard::LeaseRateResponse>, Status> {
        Err(Status::unimplemented("no gateway state here"))
    }
}

/// A log record for `gateway` of [`ACCOUNT`], created `n` seconds after a fixed instant, with a
/// JSON request and response body.
pub fn log(gateway: &str, n: u64, model: &str) -> StoredLog {
    let created = 1_714_564_800_000 + (n as i64) * 1_000;
    let id = ulid::Ulid::from_parts(created as u64, u128::from(n));
    let mut r = aigw_types::LogRecord::new(id, created, ACCOUNT, gateway, "openai");
    r.model = model.to_owned();
    r.model_type = "chat".into();
    r.path = "/chat/completions".into();
    r.request_type = "provider".into();
    r.method = "POST".into();
    r.status_code = 200;
    r.success = true;
    r.duration_ms = 100 + n;
    r.tokens_in = Some(10 * n);
    r.tokens_out = Some(n);
    r.cost = Some(0.001 * n as f64);
    r.request_content_type = Some("application/json".into());
    r.response_content_type = Some("application/json".into());
    r.request_size = 20;
    r.response_size = 30;
    r.payload_collected = true;
    r.metadata.insert(
        "user".into(),
        aigw_types::MetadataValue::String(format!("u{n}")),
    );
    StoredLog {
        record: LogRecord::from(&r),
        request: Some((
            format!(r#"{{"model":"{model}","n":{n}}}"#).into_bytes(),
            Some("application/json".into()),
        )),
        response: Some((br#"{"ok":true}"#.to_vec(), Some("application/json".into()))),
    }
}

/// The router on a real socket, in front of the fakes.
pub struct Harness {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The fake account manager.
    pub gateways: Arc<MemGateways>,
    /// The fake shard.
    pub shard: Arc<MemShard>,
    client: reqwest::Client,
}

impl Harness {
    /// Serve on `addr` (use `127.0.0.1:0` for any port).
    pub async fn start_on(addr: &str) -> Self {
        let gateways = Arc::new(MemGateways::default());
        let shard = Arc::new(MemShard::default());
        let state = ApiState {
            shards: shard.clone(),
            gateways: gateways.clone(),
            auth: Arc::new(StaticTokens::new(
                Some(ADMIN),
                vec![(ACCOUNT.to_owned(), StaticTokens::hash_token(ACCOUNT_TOKEN))],
            )),
        };
        let listener = TcpListener::bind(addr).await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = aigw_api::router(state);
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self {
            base,
            gateways,
            shard,
            client: reqwest::Client::new(),
        }
    }

    /// Serve on any free port.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// `/client/v4/accounts/{ACCOUNT}/ai-gateway{rest}`.
    pub fn path(rest: &str) -> String {
        format!("/client/v4/accounts/{ACCOUNT}/ai-gateway{rest}")
    }

    /// Send a request; answers the status, headers and body (JSON when it parses, else a string).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, headers, value)
    }

    /// [`Harness::send`] as admin, without headers.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, _, body) = self.send(method, path, Some(ADMIN), body).await;
        (status, body)
    }

    /// Create gateway `id` of [`ACCOUNT`] with the SDK's required fields.
    pub async fn create_gateway(&self, id: &str) -> Value {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                &Self::path("/gateways"),
                Some(gateway_body(id)),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// A create body with the SDK's required fields.
pub fn gateway_body(id: &str) -> Value {
    serde_json::json!({
        "id": id,
        "cache_invalidate_on_update": false,
        "cache_ttl": null,
        "collect_logs": true,
        "rate_limiting_interval": null,
        "rate_limiting_limit": null,
    })
}

/// Assert an error envelope: status, code, and a message mentioning `needle`.
#[track_caller]
pub fn assert_error(got: &(u16, Value), status: u16, code: u32, needle: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["result"], Value::Null, "{body}");
    assert_eq!(body["messages"], serde_json::json!([]), "{body}");
    let errors = body["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["code"], code, "{body}");
    let message = errors[0]["message"].as_str().expect("message");
    assert!(
        message.contains(needle),
        "`{message}` does not mention `{needle}`"
    );
}
