//! Packing an ingest batch's bodies: one pack object per gateway instead of a file per body.
//!
//! Creating an object per body made ingestion a benchmark of the filesystem's directory lock and
//! inode allocator (and would cost a PUT per body on S3). A batch's bodies of one gateway go
//! into one pack, each as its own codec frame so a single body reads back with a ranged read;
//! the row records the pack id and where its frames lie (`BodyLocation`).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use aigw_blob::pack::PackWriter;
use aigw_blob::{BlobError, Codec};
use aigw_logindex::pack_key;
use aigw_proto::shard::{BodyLocation, IngestEntry, LogRecord};
use aigw_types::unix_now_ms;
use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};

/// A pack is closed once it holds this many bytes, so a batch of huge bodies is split into
/// objects a reader or a rewrite (erasing on S3) can handle.
pub(crate) const PACK_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Hashes a gateway's names for the room its packs open with (fixed: no state to share).
static GATEWAY_HASH: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0);

/// Bits of a pack id below its millisecond timestamp.
const SEQ_BITS: u32 = 22;

/// Mints pack ids: the creation millisecond above a per-process sequence that starts at a
/// random point. Two leaders of one group (before and after an election) would have to mint
/// in the same millisecond at the same sequence number to collide.
#[derive(Debug)]
pub(crate) struct PackIds {
    seq: AtomicU64,
}

impl PackIds {
    pub(crate) fn new() -> Self {
        // A ULID's low bits are random: a seed without another dependency.
        let seed = ulid::Ulid::new().random() as u64;
        Self {
            seq: AtomicU64::new(seed),
        }
    }

    pub(crate) fn next(&self) -> u64 {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) & ((1 << SEQ_BITS) - 1);
        (unix_now_ms().max(0) as u64) << SEQ_BITS | seq
    }
}

/// Rows ready to propose and the packs their bodies are in.
#[derive(Debug, Default)]
pub(crate) struct PackedBatch {
    /// Rows, each with its `bodies` set when it has any.
    pub rows: Vec<LogRecord>,
    /// (object key, pack) to store before the rows are proposed.
    pub packs: Vec<(String, Bytes)>,
}

/// Why a batch could not be packed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PackError {
    /// An entry is malformed.
    #[error("{0}")]
    InvalidEntry(String),
    /// A body could not be encoded.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

struct OpenPack {
    id: u64,
    writer: PackWriter,
}

/// Validates the entries and frames their bodies into packs (CPU-bound: compression).
pub(crate) fn pack_batch(
    entries: Vec<IngestEntry>,
    codec: Codec,
    ids: &PackIds,
) -> Result<PackedBatch, PackError> {
    let mut batch = PackedBatch {
        rows: Vec::with_capacity(entries.len()),
        packs: Vec::new(),
    };
    // Open packs by account, then gateway: looked up by the row's own strings, so only a
    // gateway's first row in the batch copies its names.
    let mut open: HashMap<String, HashMap<String, OpenPack>> = HashMap::new();
    // The bodies each gateway has left to pack: a pack opens with room for them (one grown by
    // doubling copied itself into fresh pages over and over), up to a full pack. Gateways are
    // told apart by a hash of their names: a collision only misjudges the room.
    let gateway_of = |record: &LogRecord| {
        GATEWAY_HASH.hash_one((record.account_id.as_str(), record.gateway_id.as_str()))
    };
    let bodies_of = |entry: &IngestEntry| {
        let lens = [&entry.request_body, &entry.response_body].map(|b| b.as_ref().map(Bytes::len));
        (
            lens.iter().flatten().count(),
            lens.iter().flatten().sum::<usize>(),
        )
    };
    let mut left: HashMap<u64, (usize, usize)> = HashMap::new();
    for entry in &entries {
        if let Some(record) = &entry.record {
            let (bodies, bytes) = bodies_of(entry);
            let gateway = left.entry(gateway_of(record)).or_default();
            *gateway = (gateway.0 + bodies, gateway.1 + bytes);
        }
    }
    for entry in entries {
        let (bodies, bytes) = bodies_of(&entry);
        let mut row = entry
            .record
            .ok_or_else(|| PackError::InvalidEntry("ingest entry without a record".into()))?;
        aigw_proto::id_from_bytes(&row.id).map_err(|e| PackError::InvalidEntry(e.to_string()))?;
        if row.account_id.is_empty() || row.gateway_id.is_empty() {
            return Err(PackError::InvalidEntry(
                "record without account_id or gateway_id".into(),
            ));
        }
        // Where bodies lie is the shard's to say: a row pointing into a pack of its own
        // choosing would read, or on deletion erase, another log's bodies.
        if row.bodies.is_some() {
            return Err(PackError::InvalidEntry(
                "record with `bodies` set: the shard places bodies itself".into(),
            ));
        }
        if entry.request_body.is_none() && entry.response_body.is_none() {
            batch.rows.push(row);
            continue;
        }
        let packs = match open.get_mut(row.account_id.as_str()) {
            Some(packs) => packs,
            None => open.entry(row.account_id.clone()).or_default(),
        };
        let gateway_left = left.entry(gateway_of(&row)).or_default();
        let pack = match packs.get_mut(row.gateway_id.as_str()) {
            Some(pack) => pack,
            None => packs
                .entry(row.gateway_id.clone())
                .or_insert_with(|| OpenPack {
                    id: ids.next(),
                    writer: PackWriter::with_room_for(
                        codec,
                        gateway_left.0,
                        gateway_left.1.min(PACK_MAX_BYTES as usize),
                    ),
                }),
        };
        *gateway_left = (
            gateway_left.0.saturating_sub(bodies),
            gateway_left.1.saturating_sub(bytes),
        );
        let offset = pack.writer.len();
        let mut frame_len = |body: Option<Bytes>| -> Result<u64, BlobError> {
            body.map_or(Ok(0), |b| Ok(pack.writer.push(&b)?.len))
        };
        let request_len = frame_len(entry.request_body)?;
        let response_len = frame_len(entry.response_body)?;
        row.bodies = Some(BodyLocation {
            pack: pack.id,
            offset,
            request_len,
            response_len,
        });
        if pack.writer.len() >= PACK_MAX_BYTES
            && let Some(full) = packs.remove(row.gateway_id.as_str())
        {
            batch
                .packs
                .push(close(&row.account_id, &row.gateway_id, full));
        }
        batch.rows.push(row);
    }
    for (account, packs) in open {
        for (gateway, pack) in packs {
            batch.packs.push(close(&account, &gateway, pack));
        }
    }
    Ok(batch)
}

fn close(account: &str, gateway: &str, pack: OpenPack) -> (String, Bytes) {
    (pack_key(account, gateway, pack.id), pack.writer.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_blob::ByteRange;

    fn entry(
        account: &str,
        gateway: &str,
        request: Option<&str>,
        response: Option<&str>,
    ) -> IngestEntry {
        IngestEntry {
            record: Some(LogRecord {
                id: ulid::Ulid::new().to_bytes().to_vec().into(),
                account_id: account.into(),
                gateway_id: gateway.into(),
                ..Default::default()
            }),
            request_body: request.map(|s| Bytes::from(s.to_owned())),
            response_body: response.map(|s| Bytes::from(s.to_owned())),
        }
    }

    #[test]
    fn one_pack_per_gateway_with_contiguous_frames() {
        let ids = PackIds::new();
        let batch = pack_batch(
            vec![
                entry("a", "g1", Some("req one"), Some("resp one")),
                entry("a", "g2", Some("req two"), None),
                entry("a", "g1", None, Some("resp three")),
                entry("a", "g1", None, None),
            ],
            Codec::default(),
            &ids,
        )
        .unwrap();
        assert_eq!(batch.packs.len(), 2);
        let packs: HashMap<&str, &Bytes> =
            batch.packs.iter().map(|(k, p)| (k.as_str(), p)).collect();
        let read = |row: &LogRecord, request: bool| {
            let b = row.bodies.as_ref().unwrap();
            let key = pack_key(&row.account_id, &row.gateway_id, b.pack);
            let range = if request {
                ByteRange {
                    offset: b.offset,
                    len: b.request_len,
                }
            } else {
                ByteRange {
                    offset: b.offset + b.request_len,
                    len: b.response_len,
                }
            };
            let pack = packs[key.as_str()];
            let frame = &pack[range.offset as usize..(range.offset + range.len) as usize];
            aigw_blob::decode(&key, frame).unwrap()
        };
        assert_eq!(read(&batch.rows[0], true), "req one");
        assert_eq!(read(&batch.rows[0], false), "resp one");
        assert_eq!(read(&batch.rows[1], true), "req two");
        assert_eq!(batch.rows[1].bodies.as_ref().unwrap().response_len, 0);
        assert_eq!(batch.rows[2].bodies.as_ref().unwrap().request_len, 0);
        assert_eq!(read(&batch.rows[2], false), "resp three");
        assert_eq!(batch.rows[3].bodies, None);
        let (p0, p2) = (&batch.rows[0].bodies, &batch.rows[2].bodies);
        assert_eq!(p0.as_ref().unwrap().pack, p2.as_ref().unwrap().pack);
    }

    #[test]
    fn malformed_entries_are_refused() {
        let mut no_gateway = entry("a", "", None, None);
        let err = pack_batch(vec![no_gateway.clone()], Codec::default(), &PackIds::new());
        assert!(matches!(err, Err(PackError::InvalidEntry(m)) if m.contains("gateway_id")));
        let mut placed = entry("a", "g", None, None);
        if let Some(record) = placed.record.as_mut() {
            record.bodies = Some(BodyLocation::default());
        }
        let err = pack_batch(vec![placed], Codec::default(), &PackIds::new());
        assert!(matches!(err, Err(PackError::InvalidEntry(m)) if m.contains("`bodies`")));
        no_gateway.record = None;
        let err = pack_batch(vec![no_gateway], Codec::default(), &PackIds::new());
        assert!(matches!(err, Err(PackError::InvalidEntry(m)) if m.contains("without a record")));
    }

    #[test]
    fn pack_ids_are_distinct_and_time_ordered() {
        let ids = PackIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert!(a >> SEQ_BITS <= b >> SEQ_BITS);
    }
}
