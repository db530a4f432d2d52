//! aigw configuration.
//!
//! This crate owns turning a TOML file, `AIGW_*` environment variables and command-line flags into
//! one validated [`Config`]. Precedence is flag > environment > file > default. Every error names
//! the key (and, for overrides, the variable or flag) that caused it, and all problems are
//! reported at once. It must not start servers or touch storage: it only describes them.

mod load;
mod model;

pub use load::{ConfigError, KeyError, Override, Overrides, load};
pub use model::{
    ApiToken, BlobConfig, BlobKind, CacheConfig, ClusterConfig, Config, LogQueueConfig,
    MAX_REQUEST_HEAD_BYTES, MIN_REQUEST_HEAD_BYTES, Member, ProviderConfig, ProxyConfig, Role,
};
