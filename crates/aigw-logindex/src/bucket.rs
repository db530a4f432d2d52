//! Buckets: everything under one key prefix whose ids share a time span, in a few sled keys.
//!
//! A row or an index posting used to be one sled key each, and sled's cost is mostly per key:
//! every insert walks the tree, copies a node and, with ids arriving in order, splits a leaf
//! every eight inserts. So entries are grouped by the time of their id (a ULID's first six
//! bytes, milliseconds) into a *bucket*, stored as numbered *chunks*:
//!
//! ```text
//! prefix | ms(6) | chunk(2)  →  entry*      entry = tail | len varint | payload
//! ```
//!
//! A bucket spans one millisecond for rows (`R`) and [`POSTING_SPAN_MS`] for index postings
//! (`J`): a posting is a dozen bytes, so a millisecond's postings of one value made a key
//! each of a few hundred bytes, half the keys an insert wrote. `ms` is the span's first
//! millisecond, and `tail` is the rest of the id: its last ten bytes for rows; for postings its
//! last eleven, whose first byte carries the millisecond within the span. Within a bucket the
//! chunks, read in key order, hold the entries sorted by tail — so by id, and a range of keys
//! read forwards or backwards yields ids in order — and
//! every chunk but the last holds at least [`CHUNK_BYTES`]. A write rebuilds each bucket it
//! touches from its stored chunks and its edits, and stores only the chunks that changed: ids
//! mostly arrive in order, so a batch appends new buckets and rewrites at most the one it
//! continues. Chunks keep sled's nodes (16 keys per leaf) well under its 128 KiB limit for
//! inline pages, past which sled writes a node to a file of its own.

use std::collections::BTreeMap;
use std::ops::Range;

use sled::{IVec, Tree};
use ulid::Ulid;

use crate::index::IndexError;

/// Width of the millisecond part of an id.
pub const MS_LEN: usize = 6;
/// Width of a chunk number.
const CHUNK_NO_LEN: usize = 2;
/// A chunk is closed once it holds this many bytes; the next entry starts a new one.
pub const CHUNK_BYTES: usize = 4096;
/// Milliseconds a bucket of index postings spans (a power of two up to 256: the millisecond
/// within the span is in the id's sixth byte, the first of a posting's tail).
pub const POSTING_SPAN_MS: u64 = 16;

/// How the entries under one prefix are bucketed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    /// Milliseconds per bucket (a power of two).
    ms: u64,
    /// Where an entry's tail begins in its id's bytes.
    tail_at: usize,
}

/// Rows: a bucket per millisecond, tails of ten bytes.
const ROW_SPAN: Span = Span {
    ms: 1,
    tail_at: MS_LEN,
};
/// Index postings: a bucket per [`POSTING_SPAN_MS`], tails of eleven bytes.
const POSTING_SPAN: Span = Span {
    ms: POSTING_SPAN_MS,
    tail_at: MS_LEN - 1,
};

/// The span of the entries under a prefix (or chunk key) starting with `key`'s tag.
fn span_of(key: &[u8]) -> Span {
    if key.first() == Some(&crate::keys::INDEX) {
        POSTING_SPAN
    } else {
        ROW_SPAN
    }
}

impl Span {
    /// The bucket (its first millisecond) of `id`.
    fn bucket(self, id: Ulid) -> u64 {
        id.timestamp_ms() & !(self.ms - 1)
    }
}

/// `prefix | ms` — the bucket of `id` under `prefix`.
pub fn bucket_key(prefix: &[u8], id: Ulid) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + MS_LEN + CHUNK_NO_LEN);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&span_of(prefix).bucket(id).to_be_bytes()[8 - MS_LEN..]);
    key
}

fn chunk_key(bucket: &[u8], n: u16) -> Vec<u8> {
    let mut key = Vec::with_capacity(bucket.len() + CHUNK_NO_LEN);
    key.extend_from_slice(bucket);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// Whether `key` is a chunk key under `prefix` (and not, say, an old one-key-per-id entry).
pub fn is_chunk_key(prefix_len: usize, key: &[u8]) -> bool {
    key.len() == prefix_len + MS_LEN + CHUNK_NO_LEN
}

fn corrupt(key: &[u8], reason: &str) -> IndexError {
    IndexError::Corrupt {
        key: crate::index::hex(key),
        reason: reason.into(),
    }
}

/// The entries of one chunk `key`: each entry's id and where its payload is.
fn parse(key: &[u8], chunk: &[u8]) -> Result<Vec<(Ulid, Range<usize>)>, IndexError> {
    let span = span_of(key);
    let ms = key
        .len()
        .checked_sub(MS_LEN + CHUNK_NO_LEN)
        .map(|at| &key[at..at + MS_LEN])
        .ok_or_else(|| corrupt(key, "chunk key too short"))?;
    let mut id = [0; 16];
    id[..span.tail_at].copy_from_slice(&ms[..span.tail_at]);
    let tail_len = 16 - span.tail_at;
    let mut out = Vec::new();
    let mut at = 0;
    while at < chunk.len() {
        let tail = chunk
            .get(at..at + tail_len)
            .ok_or_else(|| corrupt(key, "chunk entry cut short"))?;
        id[span.tail_at..].copy_from_slice(tail);
        let mut rest = &chunk[at + tail_len..];
        let before = rest.len();
        let len = prost::encoding::decode_varint(&mut rest)
            .ok()
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| corrupt(key, "bad entry length"))?;
        let start = at + tail_len + (before - rest.len());
        let end = start
            .checked_add(len)
            .filter(|end| *end <= chunk.len())
            .ok_or_else(|| corrupt(key, "entry runs past its chunk"))?;
        out.push((Ulid::from_bytes(id), start..end));
        at = end;
    }
    Ok(out)
}

/// One stored entry: its id and its payload, a view of the chunk that holds it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry's id.
    pub id: Ulid,
    chunk: IVec,
    payload: Range<usize>,
}

impl Entry {
    /// An entry that is a whole stored value (a row written before buckets, a key of its own).
    pub fn whole(id: Ulid, value: IVec) -> Self {
        let payload = 0..value.len();
        Self {
            id,
            chunk: value,
            payload,
        }
    }

    /// The entry's payload (a row; empty for a posting).
    pub fn payload(&self) -> &[u8] {
        &self.chunk[self.payload.clone()]
    }
}

/// The entries of one stored chunk `(key, chunk)`, in order (reversed when `descending`).
pub fn chunk_entries(
    key: &[u8],
    chunk: IVec,
    descending: bool,
) -> Result<impl Iterator<Item = Entry> + use<>, IndexError> {
    let mut entries = parse(key, &chunk)?;
    if descending {
        entries.reverse();
    }
    Ok(entries.into_iter().map(move |(id, payload)| Entry {
        id,
        chunk: chunk.clone(),
        payload,
    }))
}

/// Entries under `prefix` with ids in `lo..=hi`, in id order (newest first when `descending`).
pub fn range(
    tree: &Tree,
    prefix: &[u8],
    lo: Ulid,
    hi: Ulid,
    descending: bool,
) -> impl Iterator<Item = Result<Entry, IndexError>> + use<> {
    let keys = tree.range(
        chunk_key(&bucket_key(prefix, lo), 0)..=chunk_key(&bucket_key(prefix, hi), u16::MAX),
    );
    let chunks: Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>> + Send> = if descending {
        Box::new(keys.rev())
    } else {
        Box::new(keys)
    };
    only_chunks(chunks, prefix.len())
        .flat_map(move |item| {
            let entries = item.and_then(|(key, chunk)| chunk_entries(&key, chunk, descending));
            let (ok, err) = match entries {
                Ok(entries) => (Some(entries), None),
                Err(e) => (None, Some(Err(e))),
            };
            ok.into_iter().flatten().map(Ok).chain(err)
        })
        .filter(move |entry| entry.as_ref().map_or(true, |e| (lo..=hi).contains(&e.id)))
}

/// The chunks among stored `(key, value)` pairs under a prefix of `prefix_len` bytes (older
/// one-key-per-id entries may share the prefix).
fn only_chunks(
    items: impl Iterator<Item = sled::Result<(IVec, IVec)>>,
    prefix_len: usize,
) -> impl Iterator<Item = Result<(IVec, IVec), IndexError>> {
    items
        .filter(move |item| {
            item.as_ref()
                .map_or(true, |(key, _)| is_chunk_key(prefix_len, key))
        })
        .map(|item| item.map_err(IndexError::from))
}

/// The stored chunks of a bucket, in order, read as they are needed.
fn chunks(tree: &Tree, bucket: &[u8]) -> impl Iterator<Item = Result<(IVec, IVec), IndexError>> {
    only_chunks(tree.scan_prefix(bucket), bucket.len() - MS_LEN)
}

/// The newest bucket stored under `prefix` (its first millisecond), if any.
fn newest_bucket(tree: &Tree, prefix: &[u8]) -> Result<Option<u64>, IndexError> {
    for stored in tree.scan_prefix(prefix).keys().rev() {
        let key = stored?;
        if is_chunk_key(prefix.len(), &key) {
            let mut ms = [0; 8];
            ms[8 - MS_LEN..].copy_from_slice(&key[prefix.len()..prefix.len() + MS_LEN]);
            return Ok(Some(u64::from_be_bytes(ms)));
        }
    }
    Ok(None)
}

/// The stored chunks of a bucket, in order.
fn load(tree: &Tree, bucket: &[u8]) -> Result<Vec<(IVec, IVec)>, IndexError> {
    chunks(tree, bucket).collect()
}

/// The entry `id` under `prefix`, if stored.
pub fn get(tree: &Tree, prefix: &[u8], id: Ulid) -> Result<Option<Entry>, IndexError> {
    find(chunks(tree, &bucket_key(prefix, id)), id)
}

/// The entry `id` among a bucket's chunks. They are sorted across chunks, so the search stops
/// at the first larger id without reading the chunks after it.
fn find(
    chunks: impl IntoIterator<Item = Result<(IVec, IVec), IndexError>>,
    id: Ulid,
) -> Result<Option<Entry>, IndexError> {
    for chunk in chunks {
        let (key, chunk) = chunk?;
        if let Some(entry) = chunk_entries(&key, chunk, false)?.find(|e| e.id >= id) {
            return Ok((entry.id == id).then_some(entry));
        }
    }
    Ok(None)
}

/// An entry's payload as an edit carries it: bytes of its own, or up to two pieces of the
/// command being applied (a row read in place from a Raft entry is its encoding with the key's
/// fields cut out), joined only when its chunk is built.
#[derive(Debug, Clone)]
pub enum Payload<'a> {
    /// Bytes of its own (an encoded row, an empty posting).
    Owned(Vec<u8>),
    /// The payload is these pieces, in order.
    Joined([&'a [u8]; 2]),
}

impl Payload<'_> {
    /// The payload's pieces, in order.
    fn pieces(&self) -> [&[u8]; 2] {
        match self {
            Self::Owned(bytes) => [bytes, &[]],
            Self::Joined(pieces) => *pieces,
        }
    }

    /// The payload's bytes, in a buffer of their own (to outlive the command it was read from).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Self::Owned(bytes) => bytes,
            Self::Joined(pieces) => pieces.concat(),
        }
    }
}

/// What one write does to the entries under one prefix: per id, the payload to store, or
/// `None` to remove, in the order they were made (the last edit of an id wins). Kept as made
/// and sorted once when written: ids mostly arrive in order, so pushing is all an edit costs.
type Edits<'a> = Vec<(Ulid, Option<Payload<'a>>)>;

/// `edits` sorted by id, the last edit of each id kept.
fn sorted_last_edits(mut edits: Edits<'_>) -> Edits<'_> {
    // Stable: the edits of one id stay in the order they were made.
    edits.sort_by_key(|(id, _)| *id);
    edits.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
    edits
}

/// Edited buckets of one prefix this many milliseconds apart or closer have their stored
/// chunks read with one range scan. An insert's ids fill every millisecond between them, and
/// one scan costs far less than one per bucket; scattered ids (a delete by filter) still read
/// only their own buckets.
const SCAN_GAP_MS: u64 = 64;

/// Pending changes to buckets; payloads may borrow from the command being applied (`'a`).
#[derive(Default)]
pub struct Buckets<'a> {
    /// Edits by prefix (a handful per command: rows and a few posting values per gateway).
    edits: BTreeMap<Vec<u8>, Edits<'a>>,
    /// Chunks as stored before these changes, per bucket read so far by [`Buckets::stored`].
    stored: BTreeMap<Vec<u8>, Vec<(IVec, IVec)>>,
    /// Per prefix asked about by [`Buckets::stored`]: its newest bucket as stored before these
    /// changes (its first millisecond; `None` when nothing is stored under it).
    newest: BTreeMap<Vec<u8>, Option<u64>>,
}

impl<'a> Buckets<'a> {
    /// Store `Some(payload)` as entry `id` under `prefix`, or remove it (`None`).
    pub fn edit(&mut self, prefix: &[u8], id: Ulid, edit: Option<Payload<'a>>) {
        // Looked up by slice: the prefix is mostly known already, and its key is copied once.
        if let Some(edits) = self.edits.get_mut(prefix) {
            edits.push((id, edit));
        } else {
            self.edits.insert(prefix.to_vec(), vec![(id, edit)]);
        }
    }

    /// The entry `id` under `prefix` as stored before these changes.
    pub fn stored(
        &mut self,
        tree: &Tree,
        prefix: &[u8],
        id: Ulid,
    ) -> Result<Option<Entry>, IndexError> {
        // New ids are mostly newer than everything stored under their prefix (only a replay
        // after a crash sends old ones): those are answered without building a key or
        // reading a bucket.
        let newest = match self.newest.get(prefix) {
            Some(newest) => *newest,
            None => {
                let newest = newest_bucket(tree, prefix)?;
                self.newest.insert(prefix.to_vec(), newest);
                newest
            }
        };
        if newest.is_none_or(|newest| span_of(prefix).bucket(id) > newest) {
            return Ok(None);
        }
        let bucket = bucket_key(prefix, id);
        let chunks = match self.stored.entry(bucket) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let chunks = load(tree, e.key())?;
                e.insert(chunks)
            }
        };
        find(chunks.iter().cloned().map(Ok), id)
    }

    /// Add to `batch` the chunk writes and removals that carry out these changes.
    pub fn write(self, tree: &Tree, batch: &mut sled::Batch) -> Result<(), IndexError> {
        for (prefix, edits) in self.edits {
            let span = span_of(&prefix);
            let edits = sorted_last_edits(edits);
            let mut rest = edits.iter().peekable();
            while let Some(first) = rest.next() {
                let mut run = vec![first];
                let mut last = first.0;
                while let Some(next) = rest.next_if(|(id, _)| {
                    id.timestamp_ms() <= last.timestamp_ms().saturating_add(SCAN_GAP_MS)
                }) {
                    last = next.0;
                    run.push(next);
                }
                let scan = chunk_key(&bucket_key(&prefix, first.0), 0)
                    ..=chunk_key(&bucket_key(&prefix, last), u16::MAX);
                let stored: Vec<(IVec, IVec)> =
                    only_chunks(tree.range(scan), prefix.len()).collect::<Result<_, _>>()?;
                // Stored chunks and edited buckets are both in key order: one pass over each.
                let mut stored = stored.iter().peekable();
                for bucket_edits in
                    run.chunk_by(|(a, _), (b, _)| span.bucket(*a) == span.bucket(*b))
                {
                    let bucket = bucket_key(&prefix, bucket_edits[0].0);
                    while stored.next_if(|(key, _)| key[..] < bucket[..]).is_some() {}
                    let chunks: Vec<&(IVec, IVec)> =
                        std::iter::from_fn(|| stored.next_if(|(key, _)| key.starts_with(&bucket)))
                            .collect();
                    write_bucket(&bucket, span, &chunks, bucket_edits, batch)?;
                }
            }
        }
        Ok(())
    }
}

/// Adds to `batch` what rewrites `bucket` (stored as `stored`) with `edits` (of its ids, in
/// order): the chunks that change, and removals of chunks no longer needed.
fn write_bucket(
    bucket: &[u8],
    span: Span,
    stored: &[&(IVec, IVec)],
    edits: &[&(Ulid, Option<Payload<'_>>)],
    batch: &mut sled::Batch,
) -> Result<(), IndexError> {
    let mut entries: Vec<(Ulid, [&[u8]; 2])> = Vec::new();
    for (key, chunk) in stored.iter().copied() {
        entries.extend(
            parse(key, chunk)?
                .into_iter()
                .map(|(id, payload)| (id, [&chunk[payload], &[][..]])),
        );
    }
    // Both sides are sorted by id: merged, an edit replacing or removing its stored entry.
    let mut merged = Vec::with_capacity(entries.len() + edits.len());
    let mut stored_entries = entries.into_iter().peekable();
    for (id, edit) in edits.iter().copied() {
        let id = *id;
        while let Some(entry) = stored_entries.next_if(|(stored, _)| *stored < id) {
            merged.push(entry);
        }
        stored_entries.next_if(|(stored, _)| *stored == id);
        if let Some(payload) = edit {
            merged.push((id, payload.pieces()));
        }
    }
    merged.extend(stored_entries);
    let chunks = rechunk(span, &merged);
    for (n, chunk) in chunks.iter().enumerate() {
        let key = chunk_key(bucket, n as u16);
        let unchanged = stored
            .get(n)
            .is_some_and(|(old_key, old)| *old_key == key && old == chunk);
        if !unchanged {
            batch.insert(key, chunk.as_slice());
        }
    }
    for (key, _) in stored {
        let n = key
            .get(key.len() - CHUNK_NO_LEN..)
            .and_then(|b| b.try_into().ok())
            .map_or(usize::MAX, |b| usize::from(u16::from_be_bytes(b)));
        if n >= chunks.len() {
            batch.remove(key.clone());
        }
    }
    Ok(())
}

/// Sorted entries of one bucket cut into chunks of at least [`CHUNK_BYTES`] (the last one
/// excepted).
fn rechunk(span: Span, entries: &[(Ulid, [&[u8]; 2])]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    for (id, [head, tail]) in entries {
        chunk.extend_from_slice(&id.to_bytes()[span.tail_at..]);
        prost::encoding::encode_varint((head.len() + tail.len()) as u64, &mut chunk);
        chunk.extend_from_slice(head);
        chunk.extend_from_slice(tail);
        // The last possible chunk number takes everything left.
        if chunk.len() >= CHUNK_BYTES && chunks.len() < usize::from(u16::MAX) {
            chunks.push(std::mem::take(&mut chunk));
        }
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// Reads entries of one prefix by id, keeping the last bucket read: ids from an index scan come
/// in order, so consecutive ones mostly share a bucket.
pub struct Reader {
    tree: Tree,
    prefix: Vec<u8>,
    bucket: Vec<u8>,
    chunks: Vec<(IVec, IVec)>,
}

impl Reader {
    /// A reader of the entries under `prefix`.
    pub fn new(tree: &Tree, prefix: Vec<u8>) -> Self {
        Self {
            tree: tree.clone(),
            prefix,
            bucket: Vec::new(),
            chunks: Vec::new(),
        }
    }

    /// The entry `id`, if stored.
    pub fn read(&mut self, id: Ulid) -> Result<Option<Entry>, IndexError> {
        let bucket = bucket_key(&self.prefix, id);
        if bucket != self.bucket {
            self.chunks = load(&self.tree, &bucket)?;
            self.bucket = bucket;
        }
        find(self.chunks.iter().cloned().map(Ok), id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path()).unwrap().open_tree("t").unwrap();
        (dir, tree)
    }

    fn write(tree: &Tree, buckets: Buckets) {
        let mut batch = sled::Batch::default();
        buckets.write(tree, &mut batch).unwrap();
        tree.apply_batch(batch).unwrap();
    }

    #[test]
    fn edits_out_of_order_are_stored_sorted_and_the_last_edit_of_an_id_wins() {
        let (_dir, tree) = tree();
        let prefix = b"R-prefix".to_vec();
        let id = |ms, random| Ulid::from_parts(ms, random);
        let mut buckets = Buckets::default();
        buckets.edit(&prefix, id(9, 1), Some(Payload::Owned(vec![1])));
        buckets.edit(&prefix, id(3, 1), Some(Payload::Joined([&[2], &[3, 4]])));
        buckets.edit(&prefix, id(9, 1), None);
        buckets.edit(&prefix, id(5, 1), None);
        buckets.edit(&prefix, id(5, 1), Some(Payload::Owned(vec![5])));
        buckets.edit(&prefix, id(3, 0), Some(Payload::Owned(vec![6])));
        write(&tree, buckets);
        let stored: Vec<(Ulid, Vec<u8>)> = range(&tree, &prefix, id(0, 0), id(99, 0), false)
            .map(|e| e.map(|e| (e.id, e.payload().to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            stored,
            [
                (id(3, 0), vec![6]),
                (id(3, 1), vec![2, 3, 4]),
                (id(5, 1), vec![5]),
            ]
        );
    }

    #[test]
    fn stored_entries_are_found_before_and_in_the_newest_bucket_and_none_after_it() {
        let (_dir, tree) = tree();
        let prefix = b"R-prefix".to_vec();
        let other = b"R-other".to_vec();
        let mut buckets = Buckets::default();
        for (ms, random) in [(5, 1), (10, 1), (10, 3)] {
            buckets.edit(
                &prefix,
                Ulid::from_parts(ms, random),
                Some(Payload::Owned(vec![ms as u8])),
            );
        }
        write(&tree, buckets);
        let mut buckets = Buckets::default();
        let mut stored = |prefix: &[u8], ms, random| {
            buckets
                .stored(&tree, prefix, Ulid::from_parts(ms, random))
                .unwrap()
                .map(|e| e.payload().to_vec())
        };
        assert_eq!(stored(&prefix, 5, 1), Some(vec![5]));
        assert_eq!(stored(&prefix, 5, 2), None);
        assert_eq!(stored(&prefix, 10, 3), Some(vec![10]));
        assert_eq!(stored(&prefix, 10, 2), None);
        assert_eq!(stored(&prefix, 11, 1), None);
        assert_eq!(stored(&other, 10, 3), None);
        // Edits of this command do not count: "stored" is as of before it.
        let mut buckets = Buckets::default();
        buckets.edit(
            &prefix,
            Ulid::from_parts(20, 1),
            Some(Payload::Owned(vec![20])),
        );
        assert!(
            buckets
                .stored(&tree, &prefix, Ulid::from_parts(20, 1))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn buckets_keep_entries_sorted_across_full_chunks() {
        let (_dir, tree) = tree();
        let prefix = b"R-prefix".to_vec();
        let ids: Vec<Ulid> = (0..300u128).map(|i| Ulid::from_parts(7, i * 3)).collect();
        // Three writes, each of every third id, so later ones land between stored entries.
        for start in 0..3 {
            let mut buckets = Buckets::default();
            for id in ids.iter().skip(start).step_by(3) {
                buckets.edit(&prefix, *id, Some(Payload::Owned(vec![start as u8; 100])));
            }
            write(&tree, buckets);
        }
        let chunks: Vec<(IVec, IVec)> = tree.iter().map(Result::unwrap).collect();
        assert_eq!(chunks.len(), 300 * 111 / CHUNK_BYTES + 1);
        for (_, chunk) in &chunks[..chunks.len() - 1] {
            assert!((CHUNK_BYTES..CHUNK_BYTES + 111).contains(&chunk.len()));
        }
        let forwards: Vec<Ulid> = range(&tree, &prefix, Ulid(0), Ulid(u128::MAX), false)
            .map(|e| e.unwrap().id)
            .collect();
        assert_eq!(forwards, ids);
        let mut backwards: Vec<Ulid> = range(&tree, &prefix, ids[10], ids[20], true)
            .map(|e| e.unwrap().id)
            .collect();
        backwards.reverse();
        assert_eq!(backwards, ids[10..=20]);
        let entry = get(&tree, &prefix, ids[4]).unwrap().unwrap();
        assert_eq!(entry.payload(), [1; 100]);
        assert!(
            get(&tree, &prefix, Ulid::from_parts(7, 1))
                .unwrap()
                .is_none()
        );

        // Removing all but one entry leaves one chunk; removing it leaves no key.
        let mut buckets = Buckets::default();
        for id in &ids[1..] {
            buckets.edit(&prefix, *id, None);
        }
        write(&tree, buckets);
        assert_eq!(tree.len(), 1);
        let mut buckets = Buckets::default();
        buckets.edit(&prefix, ids[0], None);
        write(&tree, buckets);
        assert!(tree.is_empty());
    }

    #[test]
    fn edits_in_runs_of_nearby_buckets_change_only_their_entries() {
        let (_dir, tree) = tree();
        let prefix = b"I-prefix".to_vec();
        // One entry in each of 300 milliseconds.
        let id = |ms: u64, n: u128| Ulid::from_parts(ms, n);
        let mut buckets = Buckets::default();
        for ms in 0..300 {
            buckets.edit(&prefix, id(ms, 1), Some(Payload::Owned(vec![1])));
        }
        write(&tree, buckets);
        // Edits in two runs (around 10 and around 250) with untouched buckets between.
        let mut buckets = Buckets::default();
        buckets.edit(&prefix, id(10, 0), Some(Payload::Owned(vec![2])));
        buckets.edit(&prefix, id(11, 1), None);
        buckets.edit(&prefix, id(70, 5), Some(Payload::Owned(vec![3])));
        buckets.edit(&prefix, id(250, 1), Some(Payload::Owned(vec![4])));
        buckets.edit(&prefix, id(400, 0), Some(Payload::Owned(vec![5])));
        write(&tree, buckets);
        let mut expected: Vec<(Ulid, Vec<u8>)> = (0..300)
            .filter(|ms| *ms != 11)
            .map(|ms| (id(ms, 1), vec![if ms == 250 { 4 } else { 1 }]))
            .collect();
        expected.extend([
            (id(10, 0), vec![2]),
            (id(70, 5), vec![3]),
            (id(400, 0), vec![5]),
        ]);
        expected.sort();
        let stored: Vec<(Ulid, Vec<u8>)> = range(&tree, &prefix, Ulid(0), Ulid(u128::MAX), false)
            .map(|e| {
                let e = e.unwrap();
                (e.id, e.payload().to_vec())
            })
            .collect();
        assert_eq!(stored, expected);
    }

    #[test]
    fn postings_share_a_bucket_per_span_and_keep_their_exact_ids() {
        let (_dir, tree) = tree();
        let prefix = [&[crate::keys::INDEX][..], b"-prefix"].concat();
        // Two entries in each of 40 milliseconds, from the middle of a span.
        let ids: Vec<Ulid> = (8..48u64)
            .flat_map(|ms| {
                [
                    Ulid::from_parts(ms, 2),
                    Ulid::from_parts(ms, u128::MAX >> 48),
                ]
            })
            .collect();
        let mut buckets = Buckets::default();
        for id in ids.iter().rev() {
            buckets.edit(&prefix, *id, Some(Payload::Owned(Vec::new())));
        }
        write(&tree, buckets);
        // Spans 0–15, 16–31, 32–47: a key each.
        let keys: Vec<IVec> = tree.iter().keys().map(Result::unwrap).collect();
        assert_eq!(keys.len(), 3);
        for (key, first_ms) in keys.iter().zip([0u64, 16, 32]) {
            assert_eq!(
                key[..],
                chunk_key(&bucket_key(&prefix, Ulid::from_parts(first_ms, 0)), 0)
            );
        }
        let forwards: Vec<Ulid> = range(&tree, &prefix, Ulid(0), Ulid(u128::MAX), false)
            .map(|e| e.unwrap().id)
            .collect();
        assert_eq!(forwards, ids);
        let backwards: Vec<Ulid> = range(&tree, &prefix, ids[5], ids[50], true)
            .map(|e| e.unwrap().id)
            .collect();
        assert_eq!(
            backwards,
            ids[5..=50].iter().rev().copied().collect::<Vec<_>>()
        );
        assert!(get(&tree, &prefix, ids[33]).unwrap().is_some());
        assert!(
            get(&tree, &prefix, Ulid::from_parts(20, 3))
                .unwrap()
                .is_none()
        );
    }
}
