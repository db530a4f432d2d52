//! Commands replicated through the shard's Raft log, and their replies.
//!
//! Every command is deterministic and idempotent: applying it twice, or on top of a state that
//! already holds part of its effect, yields the same state. The Raft layer relies on this after
//! crashes and when replaying entries over a fuzzy snapshot.

use aigw_proto::admin::Quota;
use aigw_proto::shard::{LogRecord, MetadataEntry};
use prost::encoding::WireType;

/// Tags of the insert command's fields, for the code that writes and reads it without prost's
/// derived code ([`Insert::to_command`], the `row` module); tests hold them to prost's.
pub(crate) mod tags {
    /// [`Insert::rows`](super::Insert::rows).
    pub const INSERT_ROWS: u32 = 1;
    /// [`Insert::default_max_rows`](super::Insert::default_max_rows).
    pub const INSERT_DEFAULT_MAX_ROWS: u32 = 2;
    /// The `Insert` variant of [`Command`](super::Command)'s oneof.
    pub const COMMAND_INSERT: u32 = 1;
    /// Every variant of that oneof.
    pub const COMMAND_KINDS: std::ops::RangeInclusive<u32> = 1..=5;
}

/// Insert rows; ids already present are left untouched.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Insert {
    /// Rows to insert, account and gateway included.
    #[prost(message, repeated, tag = "1")]
    pub rows: Vec<LogRecord>,
    /// The quota of gateways that have none stored yet (no usage report answered): 0 admits
    /// every row.
    #[prost(uint64, tag = "2")]
    pub default_max_rows: u64,
}

impl Insert {
    /// This insert as an encoded [`Command`]: the bytes `Command { kind: Some(Kind::Insert(..)) }
    /// .encode_to_vec()` gives, in one pass over the rows. prost's derived encoding sizes a
    /// nested message once for every message around it, so each row three times; a batch of
    /// a thousand rows is proposed on every busy shard several times a second.
    pub fn to_command(&self) -> Vec<u8> {
        use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, uint64};
        use tags::{COMMAND_INSERT, INSERT_DEFAULT_MAX_ROWS, INSERT_ROWS};
        let row_lens: Vec<usize> = self.rows.iter().map(prost::Message::encoded_len).collect();
        let delimited = |len: usize| encoded_len_varint(len as u64) + len;
        // A proto3 scalar at its default is not written.
        let max_rows_len = match self.default_max_rows {
            0 => 0,
            max => uint64::encoded_len(INSERT_DEFAULT_MAX_ROWS, &max),
        };
        let insert_len = row_lens
            .iter()
            .map(|&len| key_len(INSERT_ROWS) + delimited(len))
            .sum::<usize>()
            + max_rows_len;
        let mut command = Vec::with_capacity(key_len(COMMAND_INSERT) + delimited(insert_len));
        encode_key(COMMAND_INSERT, WireType::LengthDelimited, &mut command);
        encode_varint(insert_len as u64, &mut command);
        for (row, &len) in self.rows.iter().zip(&row_lens) {
            encode_key(INSERT_ROWS, WireType::LengthDelimited, &mut command);
            encode_varint(len as u64, &mut command);
            // The row's fields without sizing it again (what prost's own nesting calls).
            prost::Message::encode_raw(row, &mut command);
        }
        if max_rows_len > 0 {
            uint64::encode(
                INSERT_DEFAULT_MAX_ROWS,
                &self.default_max_rows,
                &mut command,
            );
        }
        command
    }
}

/// Change the mutable fields of one row.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Update {
    /// Account of the row.
    #[prost(string, tag = "1")]
    pub account_id: String,
    /// Gateway of the row.
    #[prost(string, tag = "2")]
    pub gateway_id: String,
    /// Row id (16 bytes).
    #[prost(bytes = "vec", tag = "3")]
    pub id: Vec<u8>,
    /// New feedback (-1, 0, 1).
    #[prost(sint32, optional, tag = "4")]
    pub feedback: Option<i32>,
    /// New score.
    #[prost(double, optional, tag = "5")]
    pub score: Option<f64>,
    /// Whether `metadata` replaces the row's metadata.
    #[prost(bool, tag = "6")]
    pub replace_metadata: bool,
    /// The new metadata (when `replace_metadata`).
    #[prost(message, repeated, tag = "7")]
    pub metadata: Vec<MetadataEntry>,
}

/// Delete rows by id (the leader resolves filters to ids before proposing).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Delete {
    /// Account of the rows.
    #[prost(string, tag = "1")]
    pub account_id: String,
    /// Gateway of the rows.
    #[prost(string, tag = "2")]
    pub gateway_id: String,
    /// Ids (16 bytes each).
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub ids: Vec<Vec<u8>>,
}

/// Delete every row of a gateway, and refuse rows created up to `deleted_at_ms` afterwards
/// (logs of requests that were in flight when the gateway was deleted).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteGateway {
    /// Account.
    #[prost(string, tag = "1")]
    pub account_id: String,
    /// Gateway.
    #[prost(string, tag = "2")]
    pub gateway_id: String,
    /// When the deletion was requested (Unix ms, chosen by the proposer).
    #[prost(int64, tag = "3")]
    pub deleted_at_ms: i64,
}

/// Set a gateway's quota (the account manager's answer to a usage report).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetQuota {
    /// Account.
    #[prost(string, tag = "1")]
    pub account_id: String,
    /// Gateway.
    #[prost(string, tag = "2")]
    pub gateway_id: String,
    /// The quota.
    #[prost(message, optional, tag = "3")]
    pub quota: Option<Quota>,
}

/// One replicated command.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Command {
    /// What to do.
    #[prost(oneof = "kind::Kind", tags = "1, 2, 3, 4, 5")]
    pub kind: Option<kind::Kind>,
}

/// The variants of [`Command`].
pub mod kind {
    /// What a command does.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// Insert rows.
        #[prost(message, tag = "1")]
        Insert(super::Insert),
        /// Update a row.
        #[prost(message, tag = "2")]
        Update(super::Update),
        /// Delete rows.
        #[prost(message, tag = "3")]
        Delete(super::Delete),
        /// Delete a gateway's rows.
        #[prost(message, tag = "4")]
        DeleteGateway(super::DeleteGateway),
        /// Set a gateway's quota.
        #[prost(message, tag = "5")]
        SetQuota(super::SetQuota),
    }
}

/// The result of applying a command.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Applied {
    /// Rows inserted, updated or deleted (already-present, absent or tombstoned rows are not
    /// counted).
    #[prost(uint64, tag = "1")]
    pub affected: u64,
    /// Body packs no live row refers to any more (every row deleted or refused), for the
    /// leader to delete from the blob store.
    #[prost(string, repeated, tag = "2")]
    pub deleted_packs: Vec<String>,
    /// The row after an update.
    #[prost(message, optional, tag = "3")]
    pub row: Option<LogRecord>,
    /// Bodies of deleted or refused rows inside packs that other rows still use, for the leader
    /// to erase in place.
    #[prost(message, repeated, tag = "4")]
    pub erased: Vec<DeadBodies>,
    /// New rows refused by a quota.
    #[prost(uint64, tag = "5")]
    pub refused: u64,
    /// Old rows deleted to make room under a `delete_oldest` quota.
    #[prost(uint64, tag = "6")]
    pub evicted: u64,
}

/// The frames of one row's bodies inside a pack that stays.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeadBodies {
    /// Object key of the pack.
    #[prost(string, tag = "1")]
    pub pack_key: String,
    /// First byte of the frames.
    #[prost(uint64, tag = "2")]
    pub offset: u64,
    /// Bytes of the frames.
    #[prost(uint64, tag = "3")]
    pub len: u64,
}
