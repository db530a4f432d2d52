//! A log shard.
//!
//! This crate owns one shard's behaviour: the [`ShardApp`] that plugs the log index into a Raft
//! group (commands in, deterministic state out, fuzzy snapshots), and the [`ShardService`] that
//! serves `aigw.shard.v1` on the group's leader — a batch's bodies go to the blob store, packed
//! into one object per gateway, before their rows are proposed; deletions remove or erase
//! bodies after they commit; reads are linearizable; rows are admitted against per-gateway quotas
//! that the leader keeps current by reporting usage to the account manager ([`QuotaKeeper`]).
//! The leader of a gateway's home group also serves its soft state — the cache's shared tier
//! and rate-limit leases — from a node-wide `aigw_gateway_state::LocalGatewayState`.
//! It must not
//! know about HTTP or the management API's wire format; it speaks the gRPC contract only.

mod app;
mod host;
mod packing;
mod quota;
mod service;

pub use app::ShardApp;
pub use host::ShardHost;
pub use quota::{DEFAULT_REPORT_EVERY, QuotaKeeper, SplitPolicy, UsageReporter};
pub use service::ShardService;
