//! Rows as the index reads them: the fields it posts, counts and tracks ([`RowFields`]), taken
//! from a decoded [`LogRecord`] or read in place from an `Insert` command's bytes ([`WireRow`]).
//!
//! Inserting is most of what a shard does. Decoding every row of a Raft entry into a
//! `LogRecord` (a dozen strings each) only to encode it again for storage was a third of the
//! cost of applying the entry. A [`WireRow`] instead borrows the few fields the index needs
//! from the entry and keeps the rest of the encoding as it came: protobuf fields may appear in
//! any order, so a row's stored form is its encoding minus the fields its key already carries
//! (id, account, gateway), and it decodes to the same `LogRecord`.
//!
//! The fields read are decoded with prost's own field decoders, so they are checked exactly as
//! a full decode checks them. Fields the index does not read are copied unchecked: entries are
//! proposed by the shard from messages it decoded itself, and the Raft log checksums them.

use std::borrow::Cow;

use aigw_proto::shard::{BodyLocation, LogRecord, MetadataEntry};

use crate::bucket::Payload;
use crate::command::tags::{COMMAND_INSERT, COMMAND_KINDS, INSERT_DEFAULT_MAX_ROWS, INSERT_ROWS};
use prost::DecodeError;
use prost::bytes::Buf;
use prost::encoding::{
    DecodeContext, WireType, check_wire_type, decode_key, decode_varint, skip_field,
};

/// Tags of the `LogRecord` fields read here (proto/aigw/shard/v1/shard.proto).
mod tag {
    pub const ID: u32 = 1;
    pub const CREATED_AT_MS: u32 = 2;
    pub const ACCOUNT_ID: u32 = 3;
    pub const GATEWAY_ID: u32 = 4;
    pub const PROVIDER: u32 = 5;
    pub const MODEL: u32 = 6;
    pub const SUCCESS: u32 = 12;
    pub const CACHED: u32 = 13;
    pub const METADATA: u32 = 23;
    pub const EVENT_ID: u32 = 24;
    pub const FEEDBACK: u32 = 26;
    pub const BODIES: u32 = 35;
}

/// Why an encoded command or row does not decode.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// prost's decoder of a field failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A length-delimited field claims more bytes than are left.
    #[error("a length-delimited field runs past the end of its message")]
    Underflow,
    /// A string field holds bytes that are not UTF-8.
    #[error("a string field is not UTF-8")]
    NotUtf8,
}

/// The fields of a row the index posts, counts and tracks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RowFields<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    pub success: bool,
    pub cached: bool,
    pub feedback: Option<i32>,
    pub event_id: Option<&'a str>,
    pub metadata: Cow<'a, [MetadataEntry]>,
    pub bodies: Option<BodyLocation>,
}

impl<'a> From<&'a LogRecord> for RowFields<'a> {
    fn from(row: &'a LogRecord) -> Self {
        Self {
            provider: &row.provider,
            model: &row.model,
            success: row.success,
            cached: row.cached,
            feedback: row.feedback,
            event_id: row.event_id.as_deref(),
            metadata: Cow::Borrowed(&row.metadata),
            bodies: row.bodies,
        }
    }
}

/// A row of an `Insert` command, read in place.
#[derive(Debug)]
pub(crate) struct WireRow<'a> {
    /// The id's bytes (checked by the caller).
    pub id: &'a [u8],
    pub created_at_ms: i64,
    pub account: &'a str,
    pub gateway: &'a str,
    pub fields: RowFields<'a>,
    /// The row as stored: its encoding without id, account and gateway.
    pub stored: Payload<'a>,
}

impl<'a> WireRow<'a> {
    /// Reads the encoded `LogRecord` `encoded`.
    pub fn parse(encoded: &'a [u8]) -> Result<Self, WireError> {
        let mut row = WireRow {
            id: &[],
            created_at_ms: 0,
            account: "",
            gateway: "",
            fields: RowFields {
                provider: "",
                model: "",
                success: false,
                cached: false,
                feedback: None,
                event_id: None,
                metadata: Cow::Owned(Vec::new()),
                bodies: None,
            },
            stored: Payload::Joined([&[], &[]]),
        };
        let ctx = DecodeContext::default();
        let mut buf = encoded;
        // The stored form is `encoded` with the key's fields cut out: the spans between them,
        // borrowed. prost writes fields in tag order, so the stored form of a row it encoded is
        // two spans: `created_at_ms` (between the id and the account) and what follows the
        // gateway.
        let mut kept = KeptSpans::default();
        let mut kept_from = 0;
        while buf.has_remaining() {
            let field_start = encoded.len() - buf.len();
            let (tag, wire_type) = decode_key(&mut buf)?;
            let fields = &mut row.fields;
            match tag {
                tag::ID => row.id = len_delimited(wire_type, &mut buf)?,
                tag::CREATED_AT_MS => prost::encoding::int64::merge(
                    wire_type,
                    &mut row.created_at_ms,
                    &mut buf,
                    ctx.clone(),
                )?,
                tag::ACCOUNT_ID => row.account = text(wire_type, &mut buf)?,
                tag::GATEWAY_ID => row.gateway = text(wire_type, &mut buf)?,
                tag::PROVIDER => fields.provider = text(wire_type, &mut buf)?,
                tag::MODEL => fields.model = text(wire_type, &mut buf)?,
                tag::SUCCESS => prost::encoding::bool::merge(
                    wire_type,
                    &mut fields.success,
                    &mut buf,
                    ctx.clone(),
                )?,
                tag::CACHED => prost::encoding::bool::merge(
                    wire_type,
                    &mut fields.cached,
                    &mut buf,
                    ctx.clone(),
                )?,
                tag::METADATA => {
                    let mut entry = MetadataEntry::default();
                    prost::encoding::message::merge(wire_type, &mut entry, &mut buf, ctx.clone())?;
                    fields.metadata.to_mut().push(entry);
                }
                tag::EVENT_ID => fields.event_id = Some(text(wire_type, &mut buf)?),
                tag::FEEDBACK => prost::encoding::sint32::merge(
                    wire_type,
                    fields.feedback.get_or_insert_default(),
                    &mut buf,
                    ctx.clone(),
                )?,
                tag::BODIES => prost::encoding::message::merge(
                    wire_type,
                    fields.bodies.get_or_insert_default(),
                    &mut buf,
                    ctx.clone(),
                )?,
                _ => skip_value(wire_type, tag, &mut buf)?,
            }
            if matches!(tag, tag::ID | tag::ACCOUNT_ID | tag::GATEWAY_ID) {
                kept.push(&encoded[kept_from..field_start]);
                kept_from = encoded.len() - buf.len();
            }
        }
        kept.push(&encoded[kept_from..]);
        row.stored = kept.into_payload();
        Ok(row)
    }
}

/// The spans of an encoding kept in a stored form: borrowed while there are at most two,
/// copied into a buffer from the third on (only an encoding prost would not write has more).
#[derive(Default)]
struct KeptSpans<'a> {
    pieces: [&'a [u8]; 2],
    count: usize,
    joined: Vec<u8>,
}

impl<'a> KeptSpans<'a> {
    fn push(&mut self, span: &'a [u8]) {
        if span.is_empty() {
            return;
        }
        if self.count < self.pieces.len() {
            self.pieces[self.count] = span;
            self.count += 1;
            return;
        }
        if self.joined.is_empty() {
            self.joined = self.pieces.concat();
        }
        self.joined.extend_from_slice(span);
    }

    fn into_payload(self) -> Payload<'a> {
        if self.joined.is_empty() {
            Payload::Joined(self.pieces)
        } else {
            Payload::Owned(self.joined)
        }
    }
}

/// Skips a field's value, as prost's `skip_field` does, without its bookkeeping for groups
/// (which no `LogRecord` field is; they are left to prost). Most of a row's fields are
/// skipped, so this is most of reading one.
fn skip_value(wire_type: WireType, tag: u32, buf: &mut &[u8]) -> Result<(), WireError> {
    let len = match wire_type {
        WireType::Varint => return decode_varint(buf).map(drop).map_err(WireError::from),
        WireType::SixtyFourBit => 8,
        WireType::ThirtyTwoBit => 4,
        WireType::LengthDelimited => return len_delimited(wire_type, buf).map(drop),
        WireType::StartGroup | WireType::EndGroup => {
            return Ok(skip_field(wire_type, tag, buf, DecodeContext::default())?);
        }
    };
    let rest = buf.get(len..).ok_or(WireError::Underflow)?;
    *buf = rest;
    Ok(())
}

/// A length-delimited field's bytes.
fn len_delimited<'a>(wire_type: WireType, buf: &mut &'a [u8]) -> Result<&'a [u8], WireError> {
    check_wire_type(WireType::LengthDelimited, wire_type)?;
    let len = usize::try_from(decode_varint(buf)?)
        .ok()
        .filter(|len| *len <= buf.len())
        .ok_or(WireError::Underflow)?;
    let (value, rest) = buf.split_at(len);
    *buf = rest;
    Ok(value)
}

/// A string field, checked as UTF-8.
fn text<'a>(wire_type: WireType, buf: &mut &'a [u8]) -> Result<&'a str, WireError> {
    std::str::from_utf8(len_delimited(wire_type, buf)?).map_err(|_| WireError::NotUtf8)
}

/// The rows of an `Insert` command, read in place.
#[derive(Debug, Default)]
pub(crate) struct WireInsert<'a> {
    /// Each row's encoding, read by [`WireInsert::rows`] as the rows are applied.
    rows: Vec<&'a [u8]>,
    pub default_max_rows: u64,
}

impl<'a> WireInsert<'a> {
    /// Reads the encoded `Insert` `encoded`.
    pub fn parse(encoded: &'a [u8]) -> Result<Self, WireError> {
        let mut insert = Self::default();
        insert.merge(encoded)?;
        Ok(insert)
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The rows, in order; a row that does not decode is an error.
    pub fn rows(&self) -> impl Iterator<Item = Result<WireRow<'a>, WireError>> + '_ {
        self.rows.iter().map(|row| WireRow::parse(row))
    }

    /// Adds what the encoded `Insert` `encoded` holds, as decoding it over this one would.
    fn merge(&mut self, encoded: &'a [u8]) -> Result<(), WireError> {
        let ctx = DecodeContext::default();
        let mut buf = encoded;
        while buf.has_remaining() {
            let (tag, wire_type) = decode_key(&mut buf)?;
            match tag {
                INSERT_ROWS => self.rows.push(len_delimited(wire_type, &mut buf)?),
                INSERT_DEFAULT_MAX_ROWS => prost::encoding::uint64::merge(
                    wire_type,
                    &mut self.default_max_rows,
                    &mut buf,
                    ctx.clone(),
                )?,
                _ => skip_field(wire_type, tag, &mut buf, ctx.clone())?,
            }
        }
        Ok(())
    }
}

/// The `Insert` an encoded `Command` carries, read in place; `None` when the command holds any
/// other kind, or anything unusual, for a full decode to apply or reject.
pub(crate) fn command_insert(command: &[u8]) -> Result<Option<WireInsert<'_>>, WireError> {
    let mut inserts = Vec::new();
    let mut buf = command;
    while buf.has_remaining() {
        let Ok((tag, wire_type)) = decode_key(&mut buf) else {
            return Ok(None);
        };
        if tag == COMMAND_INSERT && wire_type == WireType::LengthDelimited {
            let Ok(insert) = len_delimited(wire_type, &mut buf) else {
                return Ok(None);
            };
            inserts.push(insert);
        } else if COMMAND_KINDS.contains(&tag)
            || skip_field(wire_type, tag, &mut buf, DecodeContext::default()).is_err()
        {
            return Ok(None);
        }
    }
    if inserts.is_empty() {
        return Ok(None);
    }
    // Repeated occurrences of one oneof message merge, as prost merges them.
    let mut insert = WireInsert::default();
    for encoded in inserts {
        insert.merge(encoded)?;
    }
    Ok(Some(insert))
}

#[cfg(test)]
mod tests {
    use aigw_proto::shard::metadata_entry;
    use prost::Message;

    use super::*;
    use crate::command::{Command, Delete, Insert, kind::Kind};

    /// A row with every field the index reads set, and a few it does not.
    fn record(n: u32) -> LogRecord {
        LogRecord {
            id: ulid::Ulid::from_parts(1_700_000_000_000 + u64::from(n), 7)
                .to_bytes()
                .to_vec()
                .into(),
            created_at_ms: 1_700_000_000_000 + i64::from(n),
            account_id: "acct".into(),
            gateway_id: "gw".into(),
            provider: "openai".into(),
            model: format!("model-{n}"),
            model_type: "chat".into(),
            path: "/chat/completions".into(),
            status_code: 500,
            success: n.is_multiple_of(2),
            cached: n.is_multiple_of(3),
            error: Some("upstream answered 500".into()),
            tokens_in: Some(12),
            cost: Some(0.25),
            metadata: vec![
                MetadataEntry {
                    key: "user".into(),
                    value: Some(metadata_entry::Value::Text(format!("u{n}"))),
                },
                MetadataEntry {
                    key: "n".into(),
                    value: Some(metadata_entry::Value::Number(n.to_string())),
                },
            ],
            event_id: Some(format!("evt-{n}")),
            feedback: Some(-1),
            score: Some(0.5),
            user_agent: Some("ünïcode agent".into()),
            bodies: Some(BodyLocation {
                pack: 9,
                offset: u64::from(n) * 100,
                request_len: 60,
                response_len: 40,
            }),
            ..LogRecord::default()
        }
    }

    /// `row` as its stored form decodes: without the fields its key carries.
    fn without_key_fields(mut row: LogRecord) -> LogRecord {
        row.id = Default::default();
        row.account_id.clear();
        row.gateway_id.clear();
        row
    }

    #[test]
    fn a_wire_row_reads_what_a_full_decode_reads() {
        for n in 0..4 {
            let row = record(n);
            let encoded = row.encode_to_vec();
            let wire = WireRow::parse(&encoded).unwrap();
            assert_eq!(wire.id, &row.id[..]);
            assert_eq!(wire.created_at_ms, row.created_at_ms);
            assert_eq!((wire.account, wire.gateway), ("acct", "gw"));
            assert_eq!(wire.fields, RowFields::from(&row));
        }
    }

    #[test]
    fn the_stored_form_decodes_to_the_row_without_its_key_fields() {
        let row = record(1);
        let wire_encoded = row.encode_to_vec();
        let wire = WireRow::parse(&wire_encoded).unwrap();
        let expected = without_key_fields(row.clone());
        assert_eq!(
            LogRecord::decode(&wire.stored.clone().into_vec()[..]).unwrap(),
            expected
        );
        assert_eq!(wire.stored.clone().into_vec().len(), expected.encoded_len());
    }

    #[test]
    fn key_fields_between_others_leave_a_stored_form_of_every_span_between_them() {
        let row = record(3);
        // id, provider, account, model, gateway, the rest: three spans kept, joined.
        let only = |set: &dyn Fn(&mut LogRecord)| {
            let mut field = LogRecord::default();
            set(&mut field);
            field.encode_to_vec()
        };
        let mut rest = without_key_fields(row.clone());
        rest.provider.clear();
        rest.model.clear();
        let encoded = [
            only(&|r| r.id = row.id.clone()),
            only(&|r| r.provider = row.provider.clone()),
            only(&|r| r.account_id = row.account_id.clone()),
            only(&|r| r.model = row.model.clone()),
            only(&|r| r.gateway_id = row.gateway_id.clone()),
            rest.encode_to_vec(),
        ]
        .concat();
        let wire = WireRow::parse(&encoded).unwrap();
        assert!(matches!(wire.stored, Payload::Owned(_)));
        let expected = without_key_fields(row.clone());
        let stored = wire.stored.into_vec();
        assert_eq!(LogRecord::decode(&stored[..]).unwrap(), expected);
        assert_eq!(stored.len(), expected.encoded_len());
    }

    #[test]
    fn fields_out_of_order_or_repeated_read_as_prost_reads_them() {
        // Key fields last, then a second provider and a second bodies (which merges).
        let row = record(2);
        let mut encoded = LogRecord {
            id: Default::default(),
            account_id: String::new(),
            gateway_id: String::new(),
            ..row.clone()
        }
        .encode_to_vec();
        LogRecord {
            id: row.id.clone(),
            account_id: row.account_id.clone(),
            gateway_id: row.gateway_id.clone(),
            provider: "anthropic".into(),
            bodies: Some(BodyLocation {
                response_len: 41,
                ..BodyLocation::default()
            }),
            ..LogRecord::default()
        }
        .encode(&mut encoded)
        .unwrap();
        let decoded = LogRecord::decode(&encoded[..]).unwrap();
        let wire = WireRow::parse(&encoded).unwrap();
        assert_eq!(wire.fields, RowFields::from(&decoded));
        assert_eq!(wire.fields.provider, "anthropic");
        assert_eq!((wire.account, wire.gateway), ("acct", "gw"));
        let expected = without_key_fields(decoded.clone());
        assert_eq!(
            LogRecord::decode(&wire.stored.clone().into_vec()[..]).unwrap(),
            expected
        );
    }

    #[test]
    fn a_cut_row_fails_where_a_full_decode_fails() {
        let encoded = record(3).encode_to_vec();
        for cut in 0..encoded.len() {
            let part = &encoded[..cut];
            assert_eq!(
                WireRow::parse(part).is_ok(),
                LogRecord::decode(part).is_ok(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn bad_read_fields_are_errors() {
        // provider (5) as a varint, then provider as bytes that are not UTF-8.
        for bad in [&[5 << 3, 1][..], &[(5 << 3) | 2, 2, 0xff, 0xfe][..]] {
            assert!(LogRecord::decode(bad).is_err());
            assert!(WireRow::parse(bad).is_err());
        }
    }

    #[test]
    fn an_insert_encoded_in_one_pass_is_the_command_prost_encodes() {
        let mut long = record(9);
        long.error = Some("x".repeat(20_000)); // three-byte row length
        for rows in [
            vec![],
            vec![record(0)],
            vec![record(1), long, LogRecord::default()],
        ] {
            for default_max_rows in [0, 77, u64::MAX] {
                let insert = Insert {
                    rows: rows.clone(),
                    default_max_rows,
                };
                let prost = Command {
                    kind: Some(Kind::Insert(insert.clone())),
                }
                .encode_to_vec();
                assert_eq!(insert.to_command(), prost);
            }
        }
    }

    #[test]
    fn a_command_yields_its_insert_and_only_an_insert() {
        let insert = Insert {
            rows: vec![record(0), record(1)],
            default_max_rows: 77,
        };
        let command = |kind| Command { kind: Some(kind) }.encode_to_vec();
        let encoded = command(Kind::Insert(insert.clone()));
        let wire = command_insert(&encoded).unwrap().unwrap();
        assert_eq!(wire.default_max_rows, 77);
        let rows: Vec<WireRow> = wire.rows().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].fields, RowFields::from(&insert.rows[1]));

        // Two occurrences of the oneof's insert merge, as prost merges them.
        let mut twice = encoded.clone();
        twice.extend_from_slice(&encoded);
        let Some(Kind::Insert(merged)) = Command::decode(&twice[..]).unwrap().kind else {
            panic!("prost reads an insert");
        };
        assert_eq!(
            command_insert(&twice).unwrap().unwrap().rows.len(),
            merged.rows.len()
        );

        let delete = command(Kind::Delete(Delete::default()));
        assert!(command_insert(&delete).unwrap().is_none());
        let mut insert_then_delete = encoded.clone();
        insert_then_delete.extend_from_slice(&delete);
        assert!(command_insert(&insert_then_delete).unwrap().is_none());
        assert!(command_insert(&[]).unwrap().is_none());
    }
}
