use std::fmt;
use std::path::{Path, PathBuf};

use aigw_providers::ProviderCatalog;
use toml::{Table, Value};

use crate::model::{Config, MAX_REQUEST_HEAD_BYTES, MIN_REQUEST_HEAD_BYTES, Role};

/// Prefix of environment variables that override configuration keys.
const ENV_PREFIX: &str = "AIGW_";
/// Longest `log_queue.linger_ms` accepted.
const MAX_LOG_LINGER_MS: u64 = 60_000;

/// One key set from outside the file: an environment variable or a command-line flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Dotted key path, e.g. `providers.openai.base_url`.
    pub key: String,
    /// Raw value; converted to the key's type (integer, boolean or string).
    pub value: String,
    /// Where it came from, for error messages (`AIGW_HTTP_ADDR`, `--http-addr`).
    pub source: String,
}

/// Overrides applied on top of the file, later entries winning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides(Vec<Override>);

impl Overrides {
    /// Overrides from `AIGW_*` variables: the rest of the name, lowercased, split on `__` into
    /// a key path (`AIGW_PROXY__MAX_BODY_BYTES` → `proxy.max_body_bytes`). Provider slugs use
    /// `_` for `-` (`AIGW_PROVIDERS__WORKERS_AI__BASE_URL` → `providers.workers-ai.base_url`).
    pub fn from_env<I>(vars: I) -> Self
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut entries: Vec<Override> = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix(ENV_PREFIX)?;
                let mut parts: Vec<String> =
                    rest.split("__").map(str::to_ascii_lowercase).collect();
                if parts.len() >= 2 && parts[0] == "providers" {
                    parts[1] = parts[1].replace('_', "-");
                }
                Some(Override {
                    key: parts.join("."),
                    value,
                    source: name,
                })
            })
            .collect();
        // Environment order is arbitrary; make precedence among variables deterministic.
        entries.sort_by(|a, b| a.source.cmp(&b.source));
        Self(entries)
    }

    /// Add an override that wins over those already present (used for flags).
    pub fn push(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        source: impl Into<String>,
    ) {
        self.0.push(Override {
            key: key.into(),
            value: value.into(),
            source: source.into(),
        });
    }
}

/// One configuration problem, tied to the key that has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// Dotted key path.
    pub key: String,
    /// The override that set the key, if it did not come from the file.
    pub source: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.key)?;
        if let Some(source) = &self.source {
            write!(f, " (set by {source})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// One or more keys have unusable values.
    #[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<KeyError>),
}

/// Load the configuration: defaults, then `file` (if any), then `overrides`; then validate.
pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut table = match file {
        Some(path) => read_table(path)?,
        None => Table::new(),
    };
    let template = Value::try_from(Config::default()).map_err(|e| {
        ConfigError::Invalid(vec![KeyError {
            key: String::new(),
            source: None,
            message: format!("defaults do not serialize: {e}"),
        }])
    })?;
    let mut errors = Vec::new();
    for o in &overrides.0 {
        if let Err(message) = apply_override(&mut table, &template, o) {
            errors.push(KeyError {
                key: o.key.clone(),
                source: Some(o.source.clone()),
                message,
            });
        }
    }
    if !errors.is_empty() {
        return Err(ConfigError::Invalid(errors));
    }

    let config: Config = serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        let source = overrides
            .0
            .iter()
            .rev()
            .find(|o| o.key == key || key.starts_with(&format!("{}.", o.key)))
            .map(|o| o.source.clone());
        ConfigError::Invalid(vec![KeyError {
            key,
            source,
            message: e.into_inner().to_string(),
        }])
    })?;

    let errors = validate(&config, overrides);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(errors))
    }
}

fn read_table(path: &Path) -> Result<Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<Table>().map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Set `o.key` in `table`, typed like the default value at that key (strings where there is none).
fn apply_override(table: &mut Table, template: &Value, o: &Override) -> Result<(), String> {
    let parts: Vec<&str> = o.key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err("malformed key".to_owned());
    }
    let default = parts.iter().try_fold(template, |v, p| v.get(p));
    let value = match default {
        Some(Value::Integer(_)) => o
            .value
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("expected an integer, got `{}`", o.value))?,
        Some(Value::Boolean(_)) => o
            .value
            .trim()
            .parse::<bool>()
            .map(Value::Boolean)
            .map_err(|_| format!("expected true or false, got `{}`", o.value))?,
        Some(Value::Table(_)) => return Err("is a section; set one of its keys instead".to_owned()),
        // Lists are comma-separated (`AIGW_CLUSTER__MEMBERS=1=a:9090,2=b:9090`).
        Some(Value::Array(_)) => Value::Array(
            o.value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::String(item.to_owned()))
                .collect(),
        ),
        _ => Value::String(o.value.clone()),
    };
    let (last, parents) = parts.split_last().ok_or("empty key")?;
    let mut cursor = table;
    for part in parents {
        let entry = cursor
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        cursor = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is not a section"))?;
    }
    cursor.insert((*last).to_owned(), value);
    Ok(())
}

fn validate(config: &Config, overrides: &Overrides) -> Vec<KeyError> {
    let source_of = |key: &str| {
        overrides
            .0
            .iter()
            .rev()
            .find(|o| o.key == key)
            .map(|o| o.source.clone())
    };
    let mut errors = Vec::new();
    let mut check = |ok: bool, key: &str, message: String| {
        if !ok {
            errors.push(KeyError {
                key: key.to_owned(),
                source: source_of(key),
                message,
            });
        }
    };
    check(
        config.admin_token.as_deref().is_none_or(|t| t.len() >= 16),
        "admin_token",
        "must be at least 16 characters".to_owned(),
    );
    check(
        config.usage_report_rows >= 2,
        "usage_report_rows",
        "must be at least 2".to_owned(),
    );
    check(
        config.shard_split_rows >= config.usage_report_rows,
        "shard_split_rows",
        format!(
            "must be at least usage_report_rows ({}): splits are decided on usage reports",
            config.usage_report_rows
        ),
    );
    check(
        config.shard_max_sub_shards >= 1,
        "shard_max_sub_shards",
        "must be at least 1".to_owned(),
    );
    check(
        config.proxy.max_universal_steps >= 1,
        "proxy.max_universal_steps",
        "must be at least 1".to_owned(),
    );
    check(
        config.proxy.max_body_bytes > 0,
        "proxy.max_body_bytes",
        "must be greater than 0".to_owned(),
    );
    check(
        (MIN_REQUEST_HEAD_BYTES..=MAX_REQUEST_HEAD_BYTES)
            .contains(&config.proxy.max_request_head_bytes),
        "proxy.max_request_head_bytes",
        format!("must be between {MIN_REQUEST_HEAD_BYTES} and {MAX_REQUEST_HEAD_BYTES}"),
    );
    check(
        config.proxy.upstream_timeout_ms > 0,
        "proxy.upstream_timeout_ms",
        "must be greater than 0".to_owned(),
    );
    check(
        config.proxy.connect_timeout_ms > 0,
        "proxy.connect_timeout_ms",
        "must be greater than 0".to_owned(),
    );
    check(
        config.proxy.http2_connections_per_host >= 1,
        "proxy.http2_connections_per_host",
        "must be at least 1".to_owned(),
    );
    if let Some(path) = &config.proxy.upstream_ca_file {
        let pem = std::fs::read_to_string(path);
        check(
            pem.as_ref()
                .is_ok_and(|pem| pem.contains("-----BEGIN CERTIFICATE-----")),
            "proxy.upstream_ca_file",
            match pem {
                Ok(_) => format!("{} holds no PEM certificate", path.display()),
                Err(e) => format!("cannot read {}: {e}", path.display()),
            },
        );
    }
    check(
        config.log_queue.capacity > 0,
        "log_queue.capacity",
        "must be greater than 0".to_owned(),
    );
    check(
        config.log_queue.batch_size > 0,
        "log_queue.batch_size",
        "must be greater than 0".to_owned(),
    );
    check(
        config.log_queue.linger_ms <= MAX_LOG_LINGER_MS,
        "log_queue.linger_ms",
        format!("must be at most {MAX_LOG_LINGER_MS} (records wait in memory meanwhile)"),
    );
    check(
        config.node_id > 0,
        "node_id",
        "must be greater than 0".to_owned(),
    );
    for (i, token) in config.api_tokens.iter().enumerate() {
        let digest_ok = token.token_sha256.len() == 64
            && token
                .token_sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        check(
            digest_ok,
            &format!("api_tokens[{i}].token_sha256"),
            "must be 64 lower-case hex characters (printf %s TOKEN | sha256sum)".to_owned(),
        );
        check(
            !token.account_id.is_empty(),
            &format!("api_tokens[{i}].account_id"),
            "must not be empty".to_owned(),
        );
    }
    if config.blob.kind == crate::model::BlobKind::S3 {
        check(
            !config.blob.bucket.is_empty(),
            "blob.bucket",
            "is required when blob.kind = \"s3\"".to_owned(),
        );
        check(
            config.blob.access_key_id.is_empty() == config.blob.secret_access_key.is_empty(),
            "blob.access_key_id",
            "set both access_key_id and secret_access_key, or neither (standard AWS chain)"
                .to_owned(),
        );
        check(
            config.blob.endpoint.is_empty()
                || config.blob.endpoint.starts_with("http://")
                || config.blob.endpoint.starts_with("https://"),
            "blob.endpoint",
            format!(
                "`{}` must be an http:// or https:// URL",
                config.blob.endpoint
            ),
        );
    }
    validate_cluster(config, &mut check);
    for (slug, provider) in &config.providers {
        if let Err(e) = ProviderCatalog::new([(slug.as_str(), provider.base_url.as_str())]) {
            let key = format!("providers.{slug}.base_url");
            check(false, &key, e.to_string());
        }
    }
    errors
}

/// The roles' cluster requirements: a cluster node needs the member list; a node of it must
/// not reuse a member's id at another address; the all-in-one process forms its own cluster.
fn validate_cluster(config: &Config, check: &mut impl FnMut(bool, &str, String)) {
    let cluster = &config.cluster;
    let members = match cluster.parsed_members() {
        Ok(members) => members,
        Err(e) => return check(false, "cluster.members", e),
    };
    let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    ids.dedup();
    check(
        ids.len() == members.len(),
        "cluster.members",
        "lists a node id twice".to_owned(),
    );
    match config.role {
        Role::All => check(
            members.is_empty(),
            "cluster.members",
            "is for role = \"edge\" or \"shard\"; role = \"all\" runs its own one-node cluster"
                .to_owned(),
        ),
        Role::Edge | Role::Shard => check(
            !members.is_empty(),
            "cluster.members",
            format!(
                "role = \"{}\" needs the account-manager replicas (`id=host:port`, comma-separated)",
                if config.role == Role::Edge {
                    "edge"
                } else {
                    "shard"
                }
            ),
        ),
    }
    if config.role == Role::Shard
        && let Some(me) = members.iter().find(|m| m.id == config.node_id)
    {
        let advertised = config.advertised_grpc_addr();
        check(
            me.addr == advertised,
            "node_id",
            format!(
                "node {} is listed in cluster.members at {}, but this node advertises {advertised}: \
                 reusing another node's id would corrupt its raft groups",
                me.id, me.addr
            ),
        );
    }
    check(
        cluster.shard_groups > 0,
        "cluster.shard_groups",
        "must be greater than 0".to_owned(),
    );
    check(
        cluster.replication > 0,
        "cluster.replication",
        "must be greater than 0".to_owned(),
    );
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Overrides {
        Overrides::from_env(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = load(None, &Overrides::default()).unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:9090");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.proxy.max_body_bytes, 50 * 1024 * 1024);
        assert_eq!(c.proxy.max_request_head_bytes, 8 * 1024);
        assert!(c.admin_token.is_none());
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let f = file(
            "http_addr = \"127.0.0.1:1000\"\ndata_dir = \"/tmp/a\"\n[providers.openai]\nbase_url = \"http://file/v1\"\n",
        );
        let mut o = env(&[
            ("AIGW_HTTP_ADDR", "127.0.0.1:2000"),
            ("AIGW_PROVIDERS__OPENAI__BASE_URL", "http://env/v1"),
            (
                "AIGW_PROVIDERS__WORKERS_AI__BASE_URL",
                "http://wai/{account_id}",
            ),
            ("AIGW_PROXY__MAX_BODY_BYTES", "1024"),
            ("AIGW_ADMIN_TOKEN", "0123456789abcdef0123"),
            ("UNRELATED", "x"),
        ]);
        o.push("http_addr", "127.0.0.1:3000", "--http-addr");
        let c = load(Some(f.path()), &o).unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:3000");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/a"));
        assert_eq!(c.providers["openai"].base_url, "http://env/v1");
        assert_eq!(
            c.providers["workers-ai"].base_url,
            "http://wai/{account_id}"
        );
        assert_eq!(c.proxy.max_body_bytes, 1024);
        assert_eq!(c.admin_token.as_deref(), Some("0123456789abcdef0123"));
    }

    #[test]
    fn an_upstream_ca_file_must_hold_a_pem_certificate() {
        let missing = invalid(load(
            None,
            &env(&[("AIGW_PROXY__UPSTREAM_CA_FILE", "/nonexistent/ca.pem")]),
        ));
        assert!(
            missing.contains("`proxy.upstream_ca_file` (set by AIGW_PROXY__UPSTREAM_CA_FILE)")
                && missing.contains("cannot read /nonexistent/ca.pem"),
            "{missing}"
        );
        let not_pem = file("just text\n");
        let path = not_pem.path().display().to_string();
        let msg = invalid(load(
            None,
            &env(&[("AIGW_PROXY__UPSTREAM_CA_FILE", path.as_str())]),
        ));
        assert!(msg.contains("holds no PEM certificate"), "{msg}");
        let pem = file("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
        let path = pem.path().display().to_string();
        let c = load(
            None,
            &env(&[("AIGW_PROXY__UPSTREAM_CA_FILE", path.as_str())]),
        )
        .unwrap();
        assert_eq!(c.proxy.upstream_ca_file, Some(pem.path().to_owned()));
    }

    fn invalid(result: Result<Config, ConfigError>) -> String {
        match result {
            Err(e @ ConfigError::Invalid(_)) => e.to_string(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn bad_values_name_their_key_and_source() {
        let msg = invalid(load(None, &env(&[("AIGW_HTTP_ADDR", "nonsense")])));
        assert!(msg.contains("`http_addr` (set by AIGW_HTTP_ADDR)"), "{msg}");

        let msg = invalid(load(None, &env(&[("AIGW_PROXY__MAX_BODY_BYTES", "lots")])));
        assert!(
            msg.contains("`proxy.max_body_bytes`") && msg.contains("`lots`"),
            "{msg}"
        );

        let f = file("htp_addr = \"127.0.0.1:1\"\n");
        let msg = invalid(load(Some(f.path()), &Overrides::default()));
        assert!(msg.contains("htp_addr"), "{msg}");

        let f = file("[providers.nope]\nbase_url = \"http://x\"\n[proxy]\nmax_body_bytes = 0\n");
        let msg = invalid(load(Some(f.path()), &Overrides::default()));
        assert!(msg.contains("`providers.nope.base_url`"), "{msg}");
        assert!(msg.contains("`proxy.max_body_bytes`"), "{msg}");

        // The edge sends to what `http::Uri` parses: a host it cannot take fails here, at start.
        let msg = invalid(load(
            None,
            &env(&[(
                "AIGW_PROVIDERS__OPENAI__BASE_URL",
                "https://bücher.example/v1",
            )]),
        ));
        assert!(msg.contains("`providers.openai.base_url`"), "{msg}");
        assert!(msg.contains("punycode"), "{msg}");

        for (head, ok) in [
            ("4096", false),
            ("8192", true),
            ("1048576", true),
            ("1048577", false),
        ] {
            let result = load(None, &env(&[("AIGW_PROXY__MAX_REQUEST_HEAD_BYTES", head)]));
            if ok {
                assert!(result.is_ok(), "{head}: {result:?}");
            } else {
                let msg = invalid(result);
                assert!(
                    msg.contains("`proxy.max_request_head_bytes`")
                        && msg.contains("between 8192 and 1048576"),
                    "{msg}"
                );
            }
        }

        let msg = invalid(load(None, &env(&[("AIGW_LOG_QUEUE__LINGER_MS", "60001")])));
        assert!(
            msg.contains("`log_queue.linger_ms`") && msg.contains("at most 60000"),
            "{msg}"
        );
        assert!(load(None, &env(&[("AIGW_LOG_QUEUE__LINGER_MS", "0")])).is_ok());

        let msg = invalid(load(None, &env(&[("AIGW_BLOB__KIND", "s3")])));
        assert!(msg.contains("`blob.bucket`"), "{msg}");
        let msg = invalid(load(None, &env(&[("AIGW_BLOB__KIND", "tape")])));
        assert!(msg.contains("`blob.kind`") && msg.contains("tape"), "{msg}");

        let msg = invalid(load(None, &env(&[("AIGW_ADMIN_TOKEN", "short")])));
        assert!(
            msg.contains("`admin_token`") && !msg.contains("short`"),
            "{msg}"
        );
    }

    #[test]
    fn cluster_roles_need_and_check_members() {
        let msg = invalid(load(None, &env(&[("AIGW_ROLE", "edge")])));
        assert!(msg.contains("`cluster.members`"), "{msg}");
        let msg = invalid(load(None, &env(&[("AIGW_ROLE", "router")])));
        assert!(msg.contains("`role`") && msg.contains("router"), "{msg}");
        let msg = invalid(load(
            None,
            &env(&[
                ("AIGW_ROLE", "shard"),
                ("AIGW_CLUSTER__MEMBERS", "1=a:1,x=b:2"),
            ]),
        ));
        assert!(msg.contains("`x=b:2`"), "{msg}");
        let msg = invalid(load(
            None,
            &env(&[
                ("AIGW_ROLE", "shard"),
                ("AIGW_CLUSTER__MEMBERS", "1=a:1,1=b:2"),
            ]),
        ));
        assert!(msg.contains("twice"), "{msg}");
        let msg = invalid(load(
            None,
            &env(&[
                ("AIGW_ROLE", "shard"),
                ("AIGW_NODE_ID", "2"),
                ("AIGW_CLUSTER__MEMBERS", "1=127.0.0.1:9090,2=10.0.0.2:9090"),
            ]),
        ));
        assert!(
            msg.contains("`node_id`") && msg.contains("10.0.0.2:9090"),
            "{msg}"
        );

        let c = load(
            None,
            &env(&[
                ("AIGW_ROLE", "shard"),
                ("AIGW_ADVERTISE_ADDR", "10.0.0.2:9090"),
                ("AIGW_NODE_ID", "2"),
                (
                    "AIGW_CLUSTER__MEMBERS",
                    " 1=10.0.0.1:9090, 2=10.0.0.2:9090 ,",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.role, Role::Shard);
        let members = c.cluster.parsed_members().unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[1].addr, "10.0.0.2:9090");
    }

    #[test]
    fn file_errors_name_the_file() {
        let f = file("http_addr = \n");
        let err = load(Some(f.path()), &Overrides::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
        let err = load(
            Some(Path::new("/nonexistent/aigw.toml")),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/aigw.toml"), "{err}");
    }
}
