//! Key layout of the index tree.
//!
//! Everything of one shard lives in one sled tree so that each command is applied with one
//! atomic batch. Keys start with a tag byte:
//!
//! ```text
//! G | gw(8)                                     → len account, gateway  the names behind `gw`
//! R | gw(8) | ms(6) | chunk(2)                  → rows (LogRecord, prost) of one millisecond
//! J | gw(8) | field(1) | len value | ms(6) | chunk(2) → postings (ids) of one value, 16 ms
//! C | gw(8) | field(1) | len value              → u64 count (big-endian)  counters per value
//! P | gw(8) | pack(8)                           → u64 count (big-endian)  live rows per pack
//! T | gw(8)                                     → i64 ms (big-endian)   gateway deleted at
//! Q | gw(8)                                     → max rows u64, flags u8  quota (from usage)
//! S | gw(8)                                     → refused u64, evicted u64  refused / evicted
//! V                                             → u8                    layout version
//! ```
//!
//! Rows and postings are grouped by the millisecond of their id into buckets of a few chunks
//! each (see the `bucket` module): sled's cost is per key, and a key per row and per posting
//! made it the largest cost of logging. `len` is the value's length as a varint (one byte below
//! 128). `gw` is the first 8 bytes of SHA-256(account ‖ 0 ‖ gateway): fixed width, stable across
//! versions and platforms, and not forgeable by a tenant aiming at another's prefix. Rows do
//! not repeat the account and gateway (a tenth of a row); the `G` entry names the owner of a
//! prefix once, every read checks it, and an insert whose names collide with another owner's
//! prefix is refused, so a collision could never leak data. Ids are ULIDs in big-endian bytes
//! (a millisecond timestamp, then 10 random bytes), so within a prefix keys sort by creation
//! time.

use sha2::{Digest, Sha256};
use ulid::Ulid;

/// Tag of row keys.
pub const ROW: u8 = b'R';
/// Tag of secondary-index keys.
pub const INDEX: u8 = b'J';
/// Tag of secondary-index keys as layouts before 3 wrote them (buckets of one millisecond, or
/// a key per posting); dropped, and the postings rebuilt, when such a tree is opened.
pub const LEGACY_INDEX: u8 = b'I';
/// Tag of counter keys.
pub const COUNTER: u8 = b'C';
/// Tag of the entry naming the (account, gateway) behind a gateway prefix.
pub const OWNER: u8 = b'G';
/// Tag of live-row counters of body packs.
pub const PACK: u8 = b'P';
/// Tag of gateway tombstones: when a gateway was deleted, so that logs of requests that were
/// in flight at the time are not inserted afterwards.
pub const TOMBSTONE: u8 = b'T';

/// Tag of gateway quotas: how many rows the gateway may hold here, and what happens at that
/// number.
pub const QUOTA: u8 = b'Q';
/// Tag of gateway admission statistics: rows refused and rows evicted by quotas.
pub const STATS: u8 = b'S';
/// The key (a tag alone) of the layout version of the tree.
pub const LAYOUT: u8 = b'V';

/// Width of the gateway prefix.
pub const GW_LEN: usize = 8;

/// The fixed-width key of one (account, gateway).
pub type GatewayKey = [u8; GW_LEN];

/// Hash `account` and `gateway` into their key prefix.
pub fn gateway_key(account: &str, gateway: &str) -> GatewayKey {
    let mut hasher = Sha256::new();
    hasher.update(account.as_bytes());
    hasher.update([0]);
    hasher.update(gateway.as_bytes());
    let digest = hasher.finalize();
    let mut key = [0; GW_LEN];
    key.copy_from_slice(&digest[..GW_LEN]);
    key
}

/// Indexed or counted fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Field {
    /// Every log of the gateway (counter only, empty value).
    All = 0,
    /// Provider slug.
    Provider = 1,
    /// Model name.
    Model = 2,
    /// Success flag (indexed only for `false`, the rare value).
    Success = 3,
    /// Cached flag (indexed only for `true`, the rare value).
    Cached = 4,
    /// Feedback -1/0/1 (indexed when set).
    Feedback = 5,
    /// Event id (indexed, not counted).
    EventId = 6,
    /// A metadata key (indexed, not counted).
    MetaKey = 7,
    /// A metadata value as text (indexed, not counted).
    MetaValue = 8,
}

/// `R | gw` — the prefix of a gateway's row buckets.
pub fn row_prefix(gw: &GatewayKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + GW_LEN);
    push_row_prefix(&mut k, gw);
    k
}

/// Appends [`row_prefix`] to `k` (a reused buffer, on paths run for every row).
pub fn push_row_prefix(k: &mut Vec<u8>, gw: &GatewayKey) {
    k.push(ROW);
    k.extend_from_slice(gw);
}

/// Append `value` with a varint length first (one byte for the usual short values), which keeps
/// every value's prefix distinct from every other's.
fn push_value(k: &mut Vec<u8>, value: &[u8]) {
    // Values longer than u16::MAX are cut: they still index (by prefix) and rows are re-checked.
    let len = value.len().min(usize::from(u16::MAX));
    prost::encoding::encode_varint(len as u64, k);
    k.extend_from_slice(&value[..len]);
}

/// `I | gw | field | value` — the prefix of one value's posting buckets.
pub fn index_prefix(gw: &GatewayKey, field: Field, value: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + GW_LEN + 1 + 2 + value.len() + 8);
    push_index_prefix(&mut k, gw, field, value);
    k
}

/// Appends [`index_prefix`] to `k` (a reused buffer, on paths run for every row).
pub fn push_index_prefix(k: &mut Vec<u8>, gw: &GatewayKey, field: Field, value: &[u8]) {
    k.push(INDEX);
    k.extend_from_slice(gw);
    k.push(field as u8);
    push_value(k, value);
}

/// `C | gw | field | value`.
pub fn counter_key(gw: &GatewayKey, field: Field, value: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + GW_LEN + 1 + 2 + value.len());
    push_counter_key(&mut k, gw, field, value);
    k
}

/// Appends [`counter_key`] to `k` (a reused buffer, on paths run for every row).
pub fn push_counter_key(k: &mut Vec<u8>, gw: &GatewayKey, field: Field, value: &[u8]) {
    k.push(COUNTER);
    k.extend_from_slice(gw);
    k.push(field as u8);
    push_value(k, value);
}

/// `T | gw` — when the gateway was last deleted.
pub fn tombstone_key(gw: &GatewayKey) -> Vec<u8> {
    tagged(TOMBSTONE, gw)
}

/// `tag | gw`: an entry there is one of per gateway (tombstone, quota, statistics).
pub fn tagged(tag: u8, gw: &GatewayKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + GW_LEN);
    k.push(tag);
    k.extend_from_slice(gw);
    k
}

/// `G | gw`.
pub fn owner_key(gw: &GatewayKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + GW_LEN);
    k.push(OWNER);
    k.extend_from_slice(gw);
    k
}

/// The names in an owner entry's value ([`owner_value`]); `None` when it is corrupt.
pub fn owner_names(mut value: &[u8]) -> Option<(String, String)> {
    let len = usize::try_from(prost::encoding::decode_varint(&mut value).ok()?).ok()?;
    let account = std::str::from_utf8(value.get(..len)?).ok()?;
    let gateway = std::str::from_utf8(value.get(len..)?).ok()?;
    Some((account.to_owned(), gateway.to_owned()))
}

/// The value of an owner entry: the account's length as a varint, the account, the gateway.
pub fn owner_value(account: &str, gateway: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + account.len() + gateway.len());
    prost::encoding::encode_varint(account.len() as u64, &mut v);
    v.extend_from_slice(account.as_bytes());
    v.extend_from_slice(gateway.as_bytes());
    v
}

/// `P | gw` — the prefix of a gateway's pack counters.
pub fn pack_prefix(gw: &GatewayKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + GW_LEN + 8);
    k.push(PACK);
    k.extend_from_slice(gw);
    k
}

/// `P | gw | pack`.
pub fn pack_counter_key(gw: &GatewayKey, pack: u64) -> Vec<u8> {
    let mut k = pack_prefix(gw);
    k.extend_from_slice(&pack.to_be_bytes());
    k
}

/// The pack id at the end of a pack counter key.
pub fn pack_suffix(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    key[start..].try_into().ok().map(u64::from_be_bytes)
}

/// The gateway prefix of any key (the 8 bytes after the tag).
pub fn gateway_of(key: &[u8]) -> Option<GatewayKey> {
    key.get(1..=GW_LEN)?.try_into().ok()
}

/// `C | gw` — the prefix of a gateway's counters.
pub fn counter_prefix(gw: &GatewayKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + GW_LEN);
    k.push(COUNTER);
    k.extend_from_slice(gw);
    k
}

/// `I | gw` — the prefix of a gateway's index entries.
pub fn gateway_index_prefix(gw: &GatewayKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + GW_LEN);
    k.push(INDEX);
    k.extend_from_slice(gw);
    k
}

/// The smallest id created at or after `ms` (Unix milliseconds).
pub fn first_id_at(ms: u64) -> Ulid {
    Ulid::from_parts(ms.min((1 << 48) - 1), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_keys_are_stable_and_distinct() {
        assert_eq!(gateway_key("a", "g"), gateway_key("a", "g"));
        assert_ne!(gateway_key("a", "bg"), gateway_key("ab", "g"));
        // Pinned so an accidental change of the layout (which would orphan stored data) fails.
        assert_eq!(
            gateway_key("acct", "default"),
            [89, 137, 48, 183, 127, 238, 209, 12]
        );
    }

    #[test]
    fn index_prefixes_of_distinct_values_do_not_nest() {
        let gw = gateway_key("a", "g");
        let short = index_prefix(&gw, Field::Model, b"m");
        let long = index_prefix(&gw, Field::Model, b"m2");
        assert!(!long.starts_with(&short) && !short.starts_with(&long));
        assert!(short < long);
    }
}
