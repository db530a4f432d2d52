//! The searchable log index of one shard.
//!
//! This crate owns how log rows are laid out in a sled tree — rows, and postings of the
//! filterable keys, grouped per millisecond into buckets so a gateway's newest logs are a reverse
//! range scan over a few keys, counters per gateway and per value — the replicated [`command`]s that change them, and query planning and
//! evaluation for the management API's filters, search, ordering and pagination. It must not know
//! about consensus, networking or object storage: the shard crate replicates its commands with
//! Raft and stores bodies; this crate only applies commands deterministically and answers reads.

mod bucket;
pub mod command;
mod index;
pub mod keys;
mod query;
mod row;

pub use index::{Footprint, GatewayUsage, IndexError, LogIndex, Page, pack_key};
pub use query::{CompiledQuery, QueryError};
