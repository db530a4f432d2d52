//! The account manager's replicated state.
//!
//! This crate owns the gateways of every account and their settings, and the account book:
//! accounts, plans (data: limits on gateways and logs), API-token verifiers (salted hashes)
//! and the log usage shards report, answered with the quotas they admit rows against. It owns
//! the commands that change them (replicated through the account-manager Raft group), their layout in a sled tree, and an
//! in-memory mirror that edges consult on the request path without any I/O. It also owns the
//! cluster's shard map (`aigw_placement::ShardMap`): versioned, changed only by
//! compare-and-set, and published to watchers as each version is applied. It must not know
//! about consensus or networking — the node wires its commands through Raft and serves them over
//! gRPC — and it never stores logs.

mod accounts_service;
mod app;
mod book;
pub mod command;
mod mirror;
mod registry;
mod service;
mod shard_map;
mod shard_map_service;
pub mod tokens;

pub use accounts_service::AccountsService;
pub use app::AccountsApp;
pub use book::{AccountBook, DEFAULT_PLAN, builtin_plans, gateway_limit};
pub use mirror::{DEFAULT_GATEWAY, GatewayChange, GatewayMirror, default_settings};
pub use registry::{GatewayRegistry, RegistryError};
pub use service::{GatewayChangesStream, GatewaysService};
pub use shard_map::{ShardMapError, ShardMapStore};
pub use shard_map_service::{ShardMapService, ShardMapStream};
