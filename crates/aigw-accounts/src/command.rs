//! Commands replicated through the account-manager group. Each is deterministic (timestamps are
//! chosen by the proposer) and idempotent.

use aigw_proto::admin::{Account, Gateway, Plan, Quota, TokenVerifier, UsageReport};

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

/// Create or replace a plan.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutPlan {
    /// The plan.
    #[prost(message, optional, tag = "1")]
    pub plan: Option<Plan>,
}

/// Create an account; a no-op reporting `AlreadyExists` when the id is taken.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateAccount {
    /// The account, creation time included.
    #[prost(message, optional, tag = "1")]
    pub account: Option<Account>,
}

/// Move an account (created, or implicit until now) to another plan.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetAccountPlan {
    /// The account as it is to be stored (creation time chosen by the proposer if new).
    #[prost(message, optional, tag = "1")]
    pub account: Option<Account>,
}

/// Store a token's verifier (never the token).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutToken {
    /// The verifier.
    #[prost(message, optional, tag = "1")]
    pub verifier: Option<TokenVerifier>,
}

/// Revoke a token.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RevokeToken {
    /// The token's id.
    #[prost(string, tag = "1")]
    pub id: String,
}

/// Record a shard group's counts for one gateway and grant it a quota.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReportUsage {
    /// The counts (absolute, so a replayed report changes nothing).
    #[prost(message, optional, tag = "1")]
    pub report: Option<UsageReport>,
    /// When it was reported (Unix ms, chosen by the proposer).
    #[prost(int64, tag = "2")]
    pub reported_at_ms: i64,
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
    #[prost(oneof = "kind::Kind", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10")]
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
        /// Create or replace a plan.
        #[prost(message, tag = "5")]
        PutPlan(super::PutPlan),
        /// Create an account.
        #[prost(message, tag = "6")]
        CreateAccount(super::CreateAccount),
        /// Change an account's plan.
        #[prost(message, tag = "7")]
        SetAccountPlan(super::SetAccountPlan),
        /// Store a token verifier.
        #[prost(message, tag = "8")]
        PutToken(super::PutToken),
        /// Revoke a token.
        #[prost(message, tag = "9")]
        RevokeToken(super::RevokeToken),
        /// Record usage, grant a quota.
        #[prost(message, tag = "10")]
        ReportUsage(super::ReportUsage),
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
    /// The account's plan does not allow it (`limit` names the number when there is one).
    LimitExceeded = 4,
    /// A plan, or an account's plan, that does not exist.
    UnknownPlan = 5,
    /// `DELETE_OLDEST` on a plan that does not allow it.
    StrategyNotAllowed = 6,
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
    /// The plan limit a `LimitExceeded` refers to.
    #[prost(uint64, tag = "4")]
    pub limit: u64,
    /// The account after an account command.
    #[prost(message, optional, tag = "5")]
    pub account: Option<Account>,
    /// The quota granted by a usage report.
    #[prost(message, optional, tag = "6")]
    pub quota: Option<Quota>,
    /// The plan after a plan put.
    #[prost(message, optional, tag = "7")]
    pub plan: Option<Plan>,
    /// The token's verifier after a token command.
    #[prost(message, optional, tag = "8")]
    pub token: Option<TokenVerifier>,
}
