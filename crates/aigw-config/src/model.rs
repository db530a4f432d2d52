use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The validated configuration of one aigw process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Which roles this process runs: `all` (one-process gateway), `edge` or `shard`.
    pub role: Role,
    /// Address of the HTTP listener (inference, management API, health, metrics).
    pub http_addr: SocketAddr,
    /// Address of the gRPC listener (shard and admin services).
    pub grpc_addr: SocketAddr,
    /// Address other nodes dial to reach this node's gRPC services; empty means `grpc_addr`
    /// (set it when listening on `0.0.0.0` or behind NAT, e.g. `shard-1:9090`).
    pub advertise_addr: String,
    /// Directory for all local state (index, blobs).
    pub data_dir: PathBuf,
    /// Bearer token that grants every administrative permission. Never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// Account-scoped management API tokens, stored only as SHA-256 digests.
    pub api_tokens: Vec<ApiToken>,
    /// This node's id in its Raft groups (unique in a cluster).
    pub node_id: u64,
    /// Memory sled may use to cache the index and Raft logs of this process.
    pub index_cache_bytes: u64,
    /// New logs of a gateway between two usage reports of its shard leader to the account
    /// manager; also the most a shard may overshoot a plan's log limit by.
    pub usage_report_rows: u64,
    /// Rows of one gateway in its active shard group past which the gateway is split: a new
    /// group (sub-shard) takes its newer logs.
    pub shard_split_rows: u64,
    /// Most sub-shards of one gateway; past it the last keeps growing.
    pub shard_max_sub_shards: u32,
    /// Per-provider overrides, keyed by slug (`openai`, `custom-acme`, ...).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// How the edge talks to upstreams.
    pub proxy: ProxyConfig,
    /// The in-process queue between the edge and the log store.
    pub log_queue: LogQueueConfig,
    /// Memory for cached responses (`[cache]`).
    pub cache: CacheConfig,
    /// Where request and response bodies are stored.
    pub blob: BlobConfig,
    /// How this node finds and forms the cluster (`[cluster]`); unused by `role = "all"`.
    pub cluster: ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            role: Role::All,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            advertise_addr: String::new(),
            data_dir: PathBuf::from("./data"),
            admin_token: None,
            api_tokens: Vec::new(),
            node_id: 1,
            index_cache_bytes: 256 * 1024 * 1024,
            usage_report_rows: 1_000,
            shard_split_rows: 10_000_000,
            shard_max_sub_shards: 1_000,
            providers: BTreeMap::new(),
            proxy: ProxyConfig::default(),
            log_queue: LogQueueConfig::default(),
            cache: CacheConfig::default(),
            blob: BlobConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl Config {
    /// The address peers reach this node's gRPC services at.
    pub fn advertised_grpc_addr(&self) -> String {
        if self.advertise_addr.is_empty() {
            self.grpc_addr.to_string()
        } else {
            self.advertise_addr.clone()
        }
    }
}

/// The roles one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything in one process on single-member groups: edge, management API, account
    /// manager and one log shard.
    #[default]
    All,
    /// Stateless: proxies requests, serves the management API, and reaches the account
    /// manager and the shards of `cluster.members` over gRPC. Keeps nothing on disk.
    Edge,
    /// Stores: runs the replicas of the shard groups the shard map places on it, and — when
    /// listed in `cluster.members` — of the account-manager group.
    Shard,
}

/// Cluster membership (`[cluster]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The account-manager replicas as `id=host:port` (their node ids and advertised gRPC
    /// addresses), the same list on every node. Shard nodes listed here form the
    /// account-manager group and bootstrap the shard map from this list; edges and other
    /// shard nodes use the addresses as seeds.
    pub members: Vec<String>,
    /// Shard groups in the first shard map a new cluster plans.
    pub shard_groups: u32,
    /// Replicas per shard group (at most the number of shard nodes).
    pub replication: u32,
    /// How long a starting edge waits to reach the cluster before it exits with an error.
    pub join_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            members: Vec::new(),
            shard_groups: 16,
            replication: 3,
            join_timeout_ms: 30_000,
        }
    }
}

/// One parsed entry of `cluster.members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// Advertised gRPC address.
    pub addr: String,
}

impl ClusterConfig {
    /// `members`, parsed; the error names the first malformed entry.
    pub fn parsed_members(&self) -> Result<Vec<Member>, String> {
        self.members
            .iter()
            .map(|entry| {
                let (id, addr) = entry
                    .split_once('=')
                    .ok_or_else(|| format!("`{entry}` is not `id=host:port`"))?;
                let id: u64 =
                    id.trim().parse().ok().filter(|id| *id > 0).ok_or_else(|| {
                        format!("`{entry}`: the node id must be a positive integer")
                    })?;
                let addr = addr.trim();
                let port_ok = addr
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !port_ok {
                    return Err(format!("`{entry}`: `{addr}` is not host:port"));
                }
                Ok(Member {
                    id,
                    addr: addr.to_owned(),
                })
            })
            .collect()
    }
}

/// Settings of one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Base URL the upstream path is appended to; may use `{account_id}` and `{path_segment}`.
    pub base_url: String,
}

/// The smallest `proxy.max_request_head_bytes`: hyper reads into buffers of this size.
pub const MIN_REQUEST_HEAD_BYTES: u64 = 8 * 1024;

/// The largest `proxy.max_request_head_bytes` (each open connection may hold that much).
pub const MAX_REQUEST_HEAD_BYTES: u64 = 1024 * 1024;

/// How the edge proxies requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Largest accepted request body; larger requests get 413. Also the most of each body that
    /// is kept for the log.
    pub max_body_bytes: u64,
    /// Longest request head served, in bytes (HTTP/1.1 request line and headers; HTTP/2
    /// header list); longer ones get 431. It is also the size of each client connection's read
    /// buffer, so raising it costs that much memory per open connection. At least 8192.
    pub max_request_head_bytes: u64,
    /// Time allowed for the upstream to send response headers, and the longest silence allowed
    /// between chunks of a streamed response. `cf-aig-request-timeout` overrides it per request.
    pub upstream_timeout_ms: u64,
    /// Time allowed to establish an upstream connection.
    pub connect_timeout_ms: u64,
    /// Idle upstream connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// HTTP/2 connections the edge spreads its requests to one upstream host over (as that
    /// many independent connection pools, taken in turn): a provider allows only so many
    /// concurrent streams per connection (often 100–250), and requests past that would wait.
    pub http2_connections_per_host: usize,
    /// A PEM file of CA certificates trusted for upstream TLS besides the built-in web roots
    /// (Mozilla's): for providers behind a private CA, such as self-hosted models.
    pub upstream_ca_file: Option<PathBuf>,
    /// Most steps in one Universal Endpoint request.
    pub max_universal_steps: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 50 * 1024 * 1024,
            max_request_head_bytes: MIN_REQUEST_HEAD_BYTES,
            upstream_timeout_ms: 120_000,
            connect_timeout_ms: 10_000,
            pool_max_idle_per_host: 256,
            http2_connections_per_host: 8,
            upstream_ca_file: None,
            max_universal_steps: 10,
        }
    }
}

/// Memory budgets of the response cache. An edge keeps recently used responses in its own
/// tier; the leader of each gateway's home shard group keeps the tier every edge shares (one
/// budget per node, for all its groups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bytes of responses an edge keeps (0: every lookup goes to the shared tier). A response
    /// larger than a quarter of a tier's budget is not cached in that tier.
    pub edge_bytes: u64,
    /// Bytes of responses a shard node keeps for the gateways its groups are home to.
    pub shard_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            edge_bytes: 32 * 1024 * 1024,
            shard_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The bounded queue that decouples responses from log writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogQueueConfig {
    /// Records buffered before new ones are dropped (and counted in `/metrics`).
    pub capacity: usize,
    /// Most records handed to the store in one write.
    pub batch_size: usize,
    /// How long a lane waits, once it holds a record, for more to fill its batch before it
    /// writes (milliseconds; 0 writes whatever is queued at once). Every write costs the store
    /// a body pack, a Raft entry and an fsync or two whatever its size, so under load a short
    /// wait cuts what logging costs; it delays when logs become searchable, never a response.
    pub linger_ms: u64,
}

impl Default for LogQueueConfig {
    fn default() -> Self {
        Self {
            capacity: 16_384,
            batch_size: 4096,
            linger_ms: 50,
        }
    }
}

/// Which object store keeps bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// A local directory, `<data_dir>/blobs` unless `path` is set.
    #[default]
    Fs,
    /// An S3-compatible service.
    S3,
}

/// Object storage for bodies (`[blob]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobConfig {
    /// `fs` or `s3`.
    pub kind: BlobKind,
    /// Directory for `kind = "fs"`; empty means `<data_dir>/blobs`.
    pub path: String,
    /// S3 endpoint URL (e.g. `http://127.0.0.1:9000`); empty means AWS's regional endpoint.
    pub endpoint: String,
    /// S3 bucket.
    pub bucket: String,
    /// S3 region.
    pub region: String,
    /// Address buckets by path (`endpoint/bucket/key`), as most non-AWS servers need.
    pub path_style: bool,
    /// Static access key id; empty means the standard AWS credential chain.
    pub access_key_id: String,
    /// Static secret access key (never logged); empty means the standard AWS credential chain.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub secret_access_key: String,
    /// Key prefix inside the bucket or directory.
    pub prefix: String,
}

impl Default for BlobConfig {
    fn default() -> Self {
        Self {
            kind: BlobKind::Fs,
            path: String::new(),
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".to_owned(),
            path_style: true,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            prefix: String::new(),
        }
    }
}

/// A management API token limited to one account (`[[api_tokens]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// The account the token may manage.
    pub account_id: String,
    /// Lower-case hex SHA-256 of the token (`printf %s TOKEN | sha256sum`).
    pub token_sha256: String,
}
