//! Commands replicated through the account-manager group. Each is deterministic (timestamps are
//! chosen by the proposer) and idempotent.

use aigw_proto::admin::Gateway;

/// Create a gateway; a no-op reporting `AlreadyExists` when the id is taken.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateGateway {
    /// The gateway, timestamps included.
    #[prost(message, optional, tag = "1")]
    pub gateway: Option<Gateway>,
}

/// Replace a gateway's settings (keeps `created_at_ms`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateGateway {
    /// The gateway with its new settings and `modified_at_ms`.
    #[prost(message, optional, tag = "1")]
    pub gateway: Option<Gateway>,
}

/// Delete a gateway.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteGateway {
    /// Account.
    #[prost(string, tag = "1")]
    pub account_id: String,
    /// Gateway id.
    #[prost(string, tag = "2")]
    pub id: String,
}

/// Replace the cluster's shard map: a compare-and-set on its version.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutShardMap {
    /// The version the stored map must have (0: none yet).
    #[prost(uint64, tag = "1")]
    pub expected_version: u64,
    /// The new map (`aigw_placement::ShardMap::to_bytes`), version `expected_version + 1`.
    #[prost(bytes = "vec", tag = "2")]
    pub map: Vec<u8>,
}

/// One replicated command.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Command {
    /// What to do.
    #[prost(oneof = "kind::Kind", tags = "1, 2, 3, 4")]
    pub kind: Option<kind::Kind>,
}

/// The variants of [`Command`].
pub mod kind {
    /// What a command does.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// Create a gateway.
        #[prost(message, tag = "1")]
        Create(super::CreateGateway),
        /// Update a gateway.
        #[prost(message, tag = "2")]
        Update(super::UpdateGateway),
        /// Delete a gateway.
        #[prost(message, tag = "3")]
        Delete(super::DeleteGateway),
        /// Replace the shard map.
        #[prost(message, tag = "4")]
        PutShardMap(super::PutShardMap),
    }
}

/// Outcome of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum Status {
    /// Applied.
    Ok = 0,
    /// Create of an existing id.
    AlreadyExists = 1,
    /// Update or delete of a missing id.
    NotFound = 2,
    /// A shard map put whose expected version is not the stored one, or whose map is not the
    /// next version.
    Conflict = 3,
}

/// The reply to a command.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Applied {
    /// What happened.
    #[prost(enumeration = "Status", tag = "1")]
    pub status: i32,
    /// The gateway as stored after the command (or as it was, for a delete).
    #[prost(message, optional, tag = "2")]
    pub gateway: Option<Gateway>,
    /// The stored shard map's version after a shard map put.
    #[prost(uint64, tag = "3")]
    pub shard_map_version: u64,
}
