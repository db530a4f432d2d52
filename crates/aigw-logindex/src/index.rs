//! The index of one shard: applying commands and answering queries.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use aigw_proto::admin::Quota;
use aigw_proto::shard::{BodyLocation, LogRecord, OrderBy};
use prost::Message;
use sled::{Batch, IVec, Tree};
use ulid::Ulid;

use crate::bucket::{self, Buckets, Entry, Payload};
use crate::command::{
    Applied, Command, DeadBodies, Delete, DeleteGateway, SetQuota, Update, kind::Kind,
};
use crate::keys::{
    self, Field, GW_LEN, GatewayKey, counter_key, counter_prefix, gateway_index_prefix,
    gateway_key, gateway_of, index_prefix, owner_key, owner_value, pack_counter_key, pack_prefix,
    pack_suffix, push_counter_key, push_index_prefix, push_row_prefix, row_prefix, tagged,
    tombstone_key,
};
use crate::query::{CompiledQuery, IndexScan, feedback_byte, metadata_text};
use crate::row::{RowFields, WireInsert, WireRow, command_insert};

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// sled failed.
    #[error("index storage failed: {0}")]
    Storage(#[from] sled::Error),
    /// Stored bytes do not decode.
    #[error("index entry `{key}` is corrupt: {reason}")]
    Corrupt {
        /// Hex of the key.
        key: String,
        /// Decoder message.
        reason: String,
    },
    /// A command does not decode or is empty.
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    /// A query is invalid.
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
}

/// A source of ids, for merging index scans.
type IdSource = std::iter::Peekable<Box<dyn Iterator<Item = Result<Ulid, IndexError>>>>;

/// Rows deleted per atomic batch when a whole gateway goes.
const DELETE_CHUNK: usize = 10_000;

/// The layout version stored under [`keys::LAYOUT`]: 3 since index postings are bucketed by
/// 16 ms under their own tag; 2 when rows and postings were grouped into buckets of a
/// millisecond ([`bucket`]); before, every row and posting was a key of its own.
const LAYOUT_VERSION: u8 = 3;
/// Length of a row key as written before buckets: `R | gw | id(16)`.
const LEGACY_ROW_KEY_LEN: usize = 1 + GW_LEN + 16;
/// The smallest and the largest id.
const MIN_ID: Ulid = Ulid(0);
const MAX_ID: Ulid = Ulid(u128::MAX);

/// One page of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The rows of the page, in order.
    pub rows: Vec<LogRecord>,
    /// Matches over all pages.
    pub total: u64,
}

/// Space used by the index, for footprint reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Rows stored.
    pub rows: u64,
    /// Bytes of row keys and values.
    pub row_bytes: u64,
    /// Bytes of index keys.
    pub index_bytes: u64,
    /// Bytes of counter keys and values.
    pub counter_bytes: u64,
}

/// The log index of one shard, on one sled tree.
#[derive(Debug, Clone)]
pub struct LogIndex {
    tree: Tree,
}

/// Calls `f` with each (field, value) a row is posted under. A value may come twice (a
/// repeated metadata key): posting, or removing, it twice changes nothing.
fn for_each_posting(row: &RowFields, mut f: impl FnMut(Field, &[u8])) {
    if !row.provider.is_empty() {
        f(Field::Provider, row.provider.as_bytes());
    }
    if !row.model.is_empty() {
        f(Field::Model, row.model.as_bytes());
    }
    if !row.success {
        f(Field::Success, &[0]);
    }
    if row.cached {
        f(Field::Cached, &[1]);
    }
    if let Some(b) = row_feedback(row) {
        f(Field::Feedback, &[b]);
    }
    if let Some(event) = row.event_id {
        f(Field::EventId, event.as_bytes());
    }
    for entry in row.metadata.iter() {
        f(Field::MetaKey, entry.key.as_bytes());
        if let Some(text) = metadata_text(entry) {
            f(Field::MetaValue, text.as_bytes());
        }
    }
}

/// Pending changes of one command, applied as one atomic batch. Row payloads may borrow from
/// the command being applied (`'a`).
#[derive(Default)]
struct Changes<'a> {
    batch: Batch,
    /// Rows and index postings, by bucket.
    buckets: Buckets<'a>,
    /// Counter and pack-counter keys → change.
    counters: BTreeMap<Vec<u8>, i64>,
    /// Rows counted since the counted values last changed, added to `counters` only when they
    /// change or the changes are committed: a batch is mostly rows counted under the same keys.
    run: Option<CountRun>,
    /// Where the keys of each row are built: only keys not seen yet in this command are
    /// copied out of it.
    key: Vec<u8>,
}

/// Consecutive rows counted under the same keys: those keys' values, and the change so far.
struct CountRun {
    gw: GatewayKey,
    provider: String,
    model: String,
    success: bool,
    cached: bool,
    feedback: Option<u8>,
    pack: Option<u64>,
    delta: i64,
}

impl CountRun {
    fn new(gw: &GatewayKey, row: &RowFields, delta: i64) -> Self {
        Self {
            gw: *gw,
            provider: row.provider.to_owned(),
            model: row.model.to_owned(),
            success: row.success,
            cached: row.cached,
            feedback: row_feedback(row),
            pack: row.bodies.map(|b| b.pack),
            delta,
        }
    }

    /// Whether `row` of `gw` is counted under this run's keys.
    fn counts(&self, gw: &GatewayKey, row: &RowFields) -> bool {
        self.gw == *gw
            && self.success == row.success
            && self.cached == row.cached
            && self.pack == row.bodies.map(|b| b.pack)
            && self.feedback == row_feedback(row)
            && self.model == row.model
            && self.provider == row.provider
    }

    /// Calls `f` with each (field, value) counter these rows add to.
    fn for_each_counter(&self, mut f: impl FnMut(Field, &[u8])) {
        f(Field::All, &[]);
        f(Field::Provider, self.provider.as_bytes());
        f(Field::Model, self.model.as_bytes());
        f(Field::Success, &[u8::from(self.success)]);
        f(Field::Cached, &[u8::from(self.cached)]);
        if let Some(b) = self.feedback {
            f(Field::Feedback, &[b]);
        }
    }
}

/// A row's feedback as it is counted and posted.
fn row_feedback(row: &RowFields) -> Option<u8> {
    row.feedback.and_then(|f| feedback_byte(f64::from(f)))
}

impl<'a> Changes<'a> {
    /// Stores row `id` (`stored` is its stored form, see [`encode_row`]) and counts it.
    fn add_row(&mut self, gw: &GatewayKey, id: Ulid, stored: Payload<'a>, row: &RowFields) {
        self.put_row(gw, id, stored, row);
        self.count_row(gw, row, 1);
    }

    /// Stores the row and its index postings, leaving counters alone.
    fn put_row(&mut self, gw: &GatewayKey, id: Ulid, stored: Payload<'a>, row: &RowFields) {
        self.edit_row(gw, id, Some(stored), row);
    }

    fn remove_row(&mut self, gw: &GatewayKey, id: Ulid, row: &RowFields) {
        self.edit_row(gw, id, None, row);
        self.count_row(gw, row, -1);
    }

    /// Stores row `id` as `stored` with its index postings, or removes them all (`None`).
    fn edit_row(
        &mut self,
        gw: &GatewayKey,
        id: Ulid,
        stored: Option<Payload<'a>>,
        row: &RowFields,
    ) {
        let posted = stored.is_some();
        self.key.clear();
        push_row_prefix(&mut self.key, gw);
        self.buckets.edit(&self.key, id, stored);
        self.edit_postings(gw, id, posted, row);
    }

    /// Posts row `id` under every value it is indexed by, leaving the row itself alone.
    fn post_row(&mut self, gw: &GatewayKey, id: Ulid, row: &RowFields) {
        self.edit_postings(gw, id, true, row);
    }

    /// Adds (`posted`) or removes the index postings of row `id`.
    fn edit_postings(&mut self, gw: &GatewayKey, id: Ulid, posted: bool, row: &RowFields) {
        let Self { buckets, key, .. } = self;
        for_each_posting(row, |field, value| {
            key.clear();
            push_index_prefix(key, gw, field, value);
            buckets.edit(key, id, posted.then(|| Payload::Owned(Vec::new())));
        });
    }

    fn count_row(&mut self, gw: &GatewayKey, row: &RowFields, delta: i64) {
        match &mut self.run {
            Some(run) if run.counts(gw, row) => run.delta += delta,
            _ => {
                self.end_count_run();
                self.run = Some(CountRun::new(gw, row, delta));
            }
        }
    }

    /// Adds the current run of counted rows to the counters.
    fn end_count_run(&mut self) {
        let Some(run) = self.run.take() else {
            return;
        };
        let Self { counters, key, .. } = self;
        let mut count = |key: &[u8]| match counters.get_mut(key) {
            Some(n) => *n += run.delta,
            None => {
                counters.insert(key.to_vec(), run.delta);
            }
        };
        run.for_each_counter(|field, value| {
            key.clear();
            push_counter_key(key, &run.gw, field, value);
            count(key);
        });
        if let Some(pack) = run.pack {
            count(&pack_counter_key(&run.gw, pack));
        }
    }

    /// Applies the batch; returns the counter keys that dropped to zero (and were removed).
    fn commit(mut self, tree: &Tree) -> Result<Vec<Vec<u8>>, IndexError> {
        self.end_count_run();
        self.buckets.write(tree, &mut self.batch)?;
        let mut emptied = Vec::new();
        for (key, delta) in self.counters {
            if delta == 0 {
                continue;
            }
            let current = tree.get(&key)?.map_or(0, |v| decode_count(&v));
            let next = current.saturating_add_signed(delta);
            if next == 0 {
                self.batch.remove(key.clone());
                emptied.push(key);
            } else {
                self.batch.insert(key, &next.to_be_bytes()[..]);
            }
        }
        tree.apply_batch(self.batch)?;
        Ok(emptied)
    }
}

/// What becomes of the bodies of the rows a command removes or refuses.
#[derive(Default)]
struct DeadBodyTracker {
    /// Packs that keep at least one live row.
    live_packs: HashSet<u64>,
    /// Frames of removed or refused rows, by pack.
    dead: BTreeMap<u64, Vec<(u64, u64)>>,
}

impl DeadBodyTracker {
    fn live(&mut self, bodies: Option<&BodyLocation>) {
        if let Some(b) = bodies {
            self.live_packs.insert(b.pack);
        }
    }

    fn dead(&mut self, bodies: Option<&BodyLocation>) {
        if let Some(b) = bodies {
            let len = b.request_len.saturating_add(b.response_len);
            self.dead.entry(b.pack).or_default().push((b.offset, len));
        }
    }

    /// Fills `applied`: a pack goes whole when `gone(pack)` says no row uses it any more; in
    /// packs that stay, the dead frames are erased.
    fn report(
        self,
        account: &str,
        gateway: &str,
        gone: impl Fn(u64) -> bool,
        applied: &mut Applied,
    ) {
        for (pack, frames) in self.dead {
            let pack_key = pack_key(account, gateway, pack);
            if !self.live_packs.contains(&pack) && gone(pack) {
                applied.deleted_packs.push(pack_key);
                continue;
            }
            applied
                .erased
                .extend(frames.into_iter().map(|(offset, len)| DeadBodies {
                    pack_key: pack_key.clone(),
                    offset,
                    len,
                }));
        }
    }
}

/// The pack ids among counter keys that dropped to zero.
fn emptied_packs(emptied: &[Vec<u8>]) -> HashSet<u64> {
    emptied
        .iter()
        .filter(|k| k.first() == Some(&keys::PACK))
        .filter_map(|k| pack_suffix(k))
        .collect()
}

/// Whether rows of one gateway in an insert are admitted, and where they find room.
struct Admission<'a> {
    /// The prefix belongs to these names (false: a hash collision with another gateway).
    owner_ok: bool,
    /// Rows created at or before this were in flight when the gateway was deleted.
    deleted_at: Option<i64>,
    /// New rows the quota admits without evicting any.
    room: u64,
    /// The quota is at its limit and keeps the newest rows: past it, the oldest row of all —
    /// stored, added by this batch, or the new one — goes.
    evicts: bool,
    /// The stored rows, oldest first (when evicting).
    stored: Option<Box<dyn Iterator<Item = Result<Entry, IndexError>>>>,
    /// The oldest stored row not evicted yet, once read.
    next_stored: Option<Entry>,
    /// Stored rows this batch evicts.
    evicted_stored: Vec<Entry>,
    /// This batch's rows so far (when evicting).
    added: BTreeMap<Ulid, RowFields<'a>>,
    /// Rows of this batch that made way for newer ones of it.
    replaced: u64,
    /// New rows older than every row kept: evicted on arrival.
    dropped: u64,
    /// New rows refused (the quota does not evict).
    refused: u64,
}

/// Where a new row finds room.
enum Room<'a> {
    /// Under the quota, or in place of an evicted stored row.
    Free,
    /// In place of the oldest row this batch added.
    Replacing(Box<(Ulid, RowFields<'a>)>),
    /// Nowhere: refused, or itself the oldest.
    None,
}

impl<'a> Admission<'a> {
    fn admits(&self, created_at_ms: i64) -> bool {
        self.owner_ok && self.deleted_at.is_none_or(|t| created_at_ms > t)
    }

    /// Rows this batch evicts, counted as such.
    fn evicted(&self) -> u64 {
        self.evicted_stored.len() as u64 + self.replaced + self.dropped
    }

    /// The id of the oldest stored row not evicted yet.
    fn peek_stored(&mut self) -> Result<Option<Ulid>, IndexError> {
        if self.next_stored.is_none()
            && let Some(item) = self.stored.as_mut().and_then(Iterator::next)
        {
            self.next_stored = Some(item?);
        }
        Ok(self.next_stored.as_ref().map(|entry| entry.id))
    }

    /// Finds room for new row `id`, counting what it costs.
    fn take_room(&mut self, id: Ulid) -> Result<Room<'a>, IndexError> {
        if self.room > 0 {
            self.room -= 1;
            return Ok(Room::Free);
        }
        if !self.evicts {
            self.refused += 1;
            return Ok(Room::None);
        }
        let stored = self.peek_stored()?;
        let added = self.added.first_key_value().map(|(k, _)| *k);
        let oldest = [stored, added, Some(id)].into_iter().flatten().min();
        if oldest == stored && stored.is_some() {
            self.evicted_stored.extend(self.next_stored.take());
            Ok(Room::Free)
        } else if oldest == added
            && let Some(replaced) = self.added.pop_first()
        {
            self.replaced += 1;
            Ok(Room::Replacing(Box::new(replaced)))
        } else {
            self.dropped += 1;
            Ok(Room::None)
        }
    }
}

fn encode_stats(stats: [u64; 2]) -> Vec<u8> {
    stats.iter().flat_map(|n| n.to_be_bytes()).collect()
}

/// One gateway's row count, admission statistics and quota on one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GatewayUsage {
    /// Live rows.
    pub rows: u64,
    /// New rows refused by quotas so far.
    pub refused: u64,
    /// Old rows evicted to make room so far.
    pub evicted: u64,
    /// The quota (none until a usage report was answered).
    pub quota: Option<Quota>,
}

fn decode_count(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// Rows are stored without their id (it is in the key) and without their account and gateway
/// (named once by the prefix's owner entry): together a fifth of a typical row.
fn encode_row(row: &mut LogRecord) -> Vec<u8> {
    // Taken out and put back rather than encoding a stripped clone: no copy of every field.
    let id = std::mem::take(&mut row.id);
    let account = std::mem::take(&mut row.account_id);
    let gateway = std::mem::take(&mut row.gateway_id);
    let stored = row.encode_to_vec();
    (row.id, row.account_id, row.gateway_id) = (id, account, gateway);
    stored
}

/// Row `id` as stored (`value`), owned by `account`/`gateway` (which the caller has checked).
fn decode_row(
    id: Ulid,
    value: &[u8],
    account: &str,
    gateway: &str,
) -> Result<LogRecord, IndexError> {
    let mut row = LogRecord::decode(value).map_err(|e| IndexError::Corrupt {
        key: format!("row {id}"),
        reason: e.to_string(),
    })?;
    row.id = id.to_bytes().to_vec().into();
    account.clone_into(&mut row.account_id);
    gateway.clone_into(&mut row.gateway_id);
    Ok(row)
}

/// The object-store key of body pack `pack` of a gateway: `{account}/{gateway}/{pack:016x}.pack`.
/// Rows store only the pack id, so the naming is fixed here, next to the row encoding.
pub fn pack_key(account: &str, gateway: &str, pack: u64) -> String {
    format!("{account}/{gateway}/{pack:016x}.pack")
}

/// `bytes` in hex, for naming a corrupt key.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The error for a command that does not decode.
fn invalid_command(e: impl std::fmt::Display) -> IndexError {
    IndexError::InvalidCommand(e.to_string())
}

/// A row id from a command. Malformed ids are skipped, not errors: an error while applying a
/// committed entry would stop the whole group, and proposers validate ids before proposing.
fn parse_id(bytes: &[u8]) -> Option<Ulid> {
    aigw_proto::id_from_bytes(bytes).ok()
}

impl LogIndex {
    /// The index stored in `tree`, its rows first moved to the current layout if an earlier
    /// version wrote them.
    pub fn open(tree: Tree) -> Result<Self, IndexError> {
        let index = Self { tree };
        let layout = index.tree.get([keys::LAYOUT])?;
        if layout.as_deref() != Some(&[LAYOUT_VERSION][..]) {
            index.migrate_legacy_rows()?;
            index.rebuild_postings()?;
            index.tree.insert([keys::LAYOUT], &[LAYOUT_VERSION][..])?;
        }
        Ok(index)
    }

    /// Drops the index postings of earlier layouts and of an interrupted rebuild, then posts
    /// every stored row again, a chunk of rows per atomic batch. Counters are unchanged: the
    /// rows are the same. Until the layout version is written at the end, a crash midway
    /// just starts it over on the next open.
    fn rebuild_postings(&self) -> Result<(), IndexError> {
        let started = std::time::Instant::now();
        for tag in [keys::LEGACY_INDEX, keys::INDEX] {
            loop {
                let mut batch = Batch::default();
                let mut dropped = 0;
                for key in self.tree.scan_prefix([tag]).keys().take(DELETE_CHUNK) {
                    batch.remove(key?);
                    dropped += 1;
                }
                if dropped == 0 {
                    break;
                }
                self.tree.apply_batch(batch)?;
            }
        }
        let posted = self.rewrite_row_keys(|changes, key, value| {
            let Some(gw) = gateway_of(&key) else {
                return Ok(0);
            };
            let entries = stored_rows(&key, value)?;
            for entry in &entries {
                changes.post_row(&gw, entry.id, &read_stored(entry)?.fields);
            }
            Ok(entries.len())
        })?;
        if posted > 0 {
            tracing::info!(
                rows = posted,
                elapsed_ms = started.elapsed().as_millis(),
                "rebuilt the log index postings in 16 ms buckets"
            );
        }
        Ok(())
    }

    /// Moves rows stored one key per row, with one key per index posting, into buckets, a
    /// chunk of rows per atomic batch (so a crash midway leaves every row in one layout or the
    /// other, and the next open goes on). Counters are unchanged: the rows are the same.
    fn migrate_legacy_rows(&self) -> Result<(), IndexError> {
        self.rewrite_row_keys(|changes, key, value| {
            if key.len() != LEGACY_ROW_KEY_LEN {
                return Ok(0);
            }
            let (Some(gw), [entry]) = (gateway_of(&key), &stored_rows(&key, value)?[..]) else {
                return Ok(0);
            };
            let mut row = decode_row(entry.id, entry.payload(), "", "")?;
            let stored = Payload::Owned(encode_row(&mut row));
            let fields = RowFields::from(&row);
            // Its key-per-posting entries go with every legacy posting, in
            // `rebuild_postings`.
            changes.batch.remove(key.clone());
            changes.put_row(&gw, entry.id, stored, &fields);
            Ok(1)
        })
        .map(drop)
    }

    /// Calls `each` with every row key and value, in key order, committing its changes after
    /// every [`DELETE_CHUNK`] rows it reports handled (so a layout change is applied a chunk per
    /// atomic batch); returns how many rows it handled in all.
    fn rewrite_row_keys(
        &self,
        mut each: impl FnMut(&mut Changes, IVec, IVec) -> Result<usize, IndexError>,
    ) -> Result<usize, IndexError> {
        let mut from = vec![keys::ROW];
        let mut total = 0;
        loop {
            let mut changes = Changes::default();
            let mut rows = 0;
            for item in self.tree.range(from.clone()..) {
                let (key, value) = item?;
                if key.first() != Some(&keys::ROW) || rows >= DELETE_CHUNK {
                    break;
                }
                from = key.to_vec();
                from.push(0);
                rows += each(&mut changes, key, value)?;
            }
            if rows == 0 {
                return Ok(total);
            }
            total += rows;
            changes.commit(&self.tree)?;
        }
    }

    /// Stored rows of a gateway, oldest first.
    fn rows_oldest_first(
        &self,
        gw: &GatewayKey,
    ) -> impl Iterator<Item = Result<Entry, IndexError>> + use<> {
        bucket::range(&self.tree, &row_prefix(gw), MIN_ID, MAX_ID, false)
    }

    /// Apply one encoded [`Command`]; returns the encoded [`Applied`]. An insert's rows are
    /// read in place (see the `row` module), not decoded.
    pub fn apply_encoded(&self, command: &[u8]) -> Result<Vec<u8>, IndexError> {
        let applied = match command_insert(command).map_err(invalid_command)? {
            Some(insert) => self.insert(insert)?,
            None => self.apply(Command::decode(command).map_err(invalid_command)?)?,
        };
        Ok(applied.encode_to_vec())
    }

    /// Apply one command.
    pub fn apply(&self, command: Command) -> Result<Applied, IndexError> {
        match command.kind {
            // One insert path, the one entries take: a decoded insert (tests, benches) is
            // encoded again to get there.
            Some(Kind::Insert(c)) => {
                let encoded = c.encode_to_vec();
                self.insert(WireInsert::parse(&encoded).map_err(invalid_command)?)
            }
            Some(Kind::Update(c)) => self.update(c),
            Some(Kind::Delete(c)) => self.delete(c),
            Some(Kind::DeleteGateway(c)) => self.delete_gateway(c),
            Some(Kind::SetQuota(c)) => self.set_quota(c),
            None => Err(IndexError::InvalidCommand("empty command".into())),
        }
    }

    fn insert(&self, command: WireInsert<'_>) -> Result<Applied, IndexError> {
        let mut changes = Changes::default();
        let mut seen = HashSet::with_capacity(command.len());
        let mut admissions: HashMap<GatewayKey, Admission> = HashMap::new();
        // Packs are per gateway, so each gateway's bodies are tracked apart, with its names.
        let mut bodies: HashMap<GatewayKey, (&str, &str, DeadBodyTracker)> = HashMap::new();
        let mut affected = 0;
        let mut evicted_from_batch = Vec::new();
        // A batch's rows are mostly of one gateway: its key is hashed, and the prefix of its
        // rows built, once.
        let mut last_gateway: Option<(&str, &str, GatewayKey)> = None;
        let mut rows_prefix = Vec::new();
        for row in command.rows() {
            let WireRow {
                id,
                created_at_ms,
                account,
                gateway,
                fields,
                stored: stored_form,
            } = row.map_err(invalid_command)?;
            let Some(id) = parse_id(id) else {
                continue;
            };
            let gw = match last_gateway {
                Some((a, g, gw)) if (a, g) == (account, gateway) => gw,
                _ => {
                    let gw = gateway_key(account, gateway);
                    last_gateway = Some((account, gateway, gw));
                    rows_prefix.clear();
                    push_row_prefix(&mut rows_prefix, &gw);
                    gw
                }
            };
            let admission = match admissions.entry(gw) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(self.admission(
                    &gw,
                    account,
                    gateway,
                    command.default_max_rows,
                    &mut changes,
                )?),
            };
            let row_bodies = fields.bodies;
            let live = admission.admits(created_at_ms)
                && seen.insert((gw, id))
                && match changes.buckets.stored(&self.tree, &rows_prefix, id)? {
                    None => match admission.take_room(id)? {
                        Room::Free => {
                            changes.add_row(&gw, id, stored_form, &fields);
                            affected += 1;
                            if admission.evicts {
                                admission.added.insert(id, fields);
                            }
                            true
                        }
                        // The oldest row this batch added makes way.
                        Room::Replacing(oldest) => {
                            let (oldest_id, oldest_row) = *oldest;
                            changes.remove_row(&gw, oldest_id, &oldest_row);
                            evicted_from_batch.push((gw, oldest_row.bodies));
                            changes.add_row(&gw, id, stored_form, &fields);
                            admission.added.insert(id, fields);
                            true
                        }
                        Room::None => false,
                    },
                    // Replayed after a crash: the stored row already uses these very bodies.
                    Some(stored) => {
                        row_bodies.is_some()
                            && decode_row(id, stored.payload(), "", "")?.bodies == row_bodies
                    }
                };
            let (_, _, tracker) = bodies
                .entry(gw)
                .or_insert_with(|| (account, gateway, DeadBodyTracker::default()));
            if live {
                tracker.live(row_bodies.as_ref());
            } else {
                tracker.dead(row_bodies.as_ref());
            }
        }
        for (gw, row_bodies) in &evicted_from_batch {
            if let Some((_, _, tracker)) = bodies.get_mut(gw) {
                tracker.dead(row_bodies.as_ref());
            }
        }
        let mut evicted_bodies = Vec::new();
        let (mut refused, mut evicted) = (0, 0);
        for (gw, admission) in admissions {
            let evicted_here = admission.evicted();
            refused += admission.refused;
            evicted += evicted_here;
            if admission.refused + evicted_here == 0 {
                continue;
            }
            let Some(&(account, gateway, _)) = bodies.get(&gw) else {
                continue;
            };
            let mut tracker = DeadBodyTracker::default();
            for entry in admission.evicted_stored {
                let row = decode_row(entry.id, entry.payload(), account, gateway)?;
                changes.remove_row(&gw, entry.id, &RowFields::from(&row));
                tracker.dead(row.bodies.as_ref());
            }
            evicted_bodies.push((account, gateway, tracker));
            let [old_refused, old_evicted] = self.stats(&gw)?;
            let stats = [old_refused + admission.refused, old_evicted + evicted_here];
            changes
                .batch
                .insert(tagged(keys::STATS, &gw), encode_stats(stats));
        }
        let emptied = emptied_packs(&changes.commit(&self.tree)?);
        let mut applied = Applied {
            affected,
            refused,
            evicted,
            ..Applied::default()
        };
        for (account, gateway, tracker) in bodies.into_values() {
            // A pack is written for one insert: if none of its rows went in, nothing uses it.
            tracker.report(account, gateway, |_| true, &mut applied);
        }
        for (account, gateway, tracker) in evicted_bodies {
            tracker.report(account, gateway, |p| emptied.contains(&p), &mut applied);
        }
        Ok(applied)
    }

    /// Whether, and how many of, the rows of `account`/`gateway` are admitted; claims the prefix
    /// for its names when it has no owner yet.
    fn admission<'a>(
        &self,
        gw: &GatewayKey,
        account: &str,
        gateway: &str,
        default_max_rows: u64,
        changes: &mut Changes,
    ) -> Result<Admission<'a>, IndexError> {
        let names = owner_value(account, gateway);
        let owner_ok = match self.tree.get(owner_key(gw))? {
            Some(stored) => stored.as_ref() == names.as_slice(),
            None => {
                changes.batch.insert(owner_key(gw), names);
                true
            }
        };
        let live = self
            .tree
            .get(counter_key(gw, Field::All, &[]))?
            .map_or(0, |v| decode_count(&v));
        let quota = self.quota(gw)?.unwrap_or(Quota {
            max_rows: if default_max_rows == 0 {
                u64::MAX
            } else {
                default_max_rows
            },
            at_limit: false,
            delete_oldest: false,
        });
        let evicts = quota.at_limit && quota.delete_oldest;
        Ok(Admission {
            owner_ok,
            deleted_at: self.tombstone(gw)?,
            room: quota.max_rows.saturating_sub(live),
            evicts,
            stored: evicts
                .then(|| Box::new(self.rows_oldest_first(gw)) as Box<dyn Iterator<Item = _>>),
            next_stored: None,
            evicted_stored: Vec::new(),
            added: BTreeMap::new(),
            replaced: 0,
            dropped: 0,
            refused: 0,
        })
    }

    /// A gateway's quota, if a usage report set one.
    fn quota(&self, gw: &GatewayKey) -> Result<Option<Quota>, IndexError> {
        Ok(self.tree.get(tagged(keys::QUOTA, gw))?.map(|v| {
            let max_rows = v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            let flags = v.get(8).copied().unwrap_or(0);
            Quota {
                max_rows,
                at_limit: flags & 1 != 0,
                delete_oldest: flags & 2 != 0,
            }
        }))
    }

    /// Rows refused and evicted so far.
    fn stats(&self, gw: &GatewayKey) -> Result<[u64; 2], IndexError> {
        Ok(self.tree.get(tagged(keys::STATS, gw))?.map_or([0, 0], |v| {
            let at = |i: usize| {
                v.get(i * 8..i * 8 + 8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_be_bytes)
            };
            [at(0), at(1)]
        }))
    }

    fn set_quota(&self, command: SetQuota) -> Result<Applied, IndexError> {
        let quota = command.quota.unwrap_or_default();
        let gw = gateway_key(&command.account_id, &command.gateway_id);
        let mut value = quota.max_rows.to_be_bytes().to_vec();
        value.push(u8::from(quota.at_limit) | (u8::from(quota.delete_oldest) << 1));
        self.tree.insert(tagged(keys::QUOTA, &gw), value)?;
        let (account, gateway) = (&command.account_id, &command.gateway_id);
        let mut applied = Applied::default();
        if !(quota.at_limit && quota.delete_oldest && self.owned_by(&gw, account, gateway)?) {
            return Ok(applied);
        }
        // A limit lowered below what the gateway holds: the oldest rows go now, in chunks.
        let live = self.count(account, gateway, Field::All, &[])?;
        let mut excess = live.saturating_sub(quota.max_rows);
        while excess > 0 {
            let mut changes = Changes::default();
            let mut tracker = DeadBodyTracker::default();
            let mut n = 0;
            let chunk = usize::try_from(excess)
                .unwrap_or(DELETE_CHUNK)
                .min(DELETE_CHUNK);
            for entry in self.rows_oldest_first(&gw).take(chunk) {
                let entry = entry?;
                let row = decode_row(entry.id, entry.payload(), account, gateway)?;
                changes.remove_row(&gw, entry.id, &RowFields::from(&row));
                tracker.dead(row.bodies.as_ref());
                n += 1;
            }
            if n == 0 {
                break;
            }
            let [refused, evicted] = self.stats(&gw)?;
            changes.batch.insert(
                tagged(keys::STATS, &gw),
                encode_stats([refused, evicted + n]),
            );
            let emptied = emptied_packs(&changes.commit(&self.tree)?);
            tracker.report(account, gateway, |p| emptied.contains(&p), &mut applied);
            applied.evicted += n;
            excess = excess.saturating_sub(n);
        }
        Ok(applied)
    }

    /// Every (account, gateway) with rows here.
    pub fn gateways(&self) -> Result<Vec<(String, String)>, IndexError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([keys::OWNER]) {
            let (key, value) = item?;
            let names = keys::owner_names(&value).ok_or_else(|| IndexError::Corrupt {
                key: hex(&key),
                reason: "undecodable owner names".into(),
            })?;
            out.push(names);
        }
        Ok(out)
    }

    /// What the account manager needs to hear about one gateway: its rows here, rows refused
    /// and evicted so far, and the quota it holds.
    pub fn usage(&self, account: &str, gateway: &str) -> Result<GatewayUsage, IndexError> {
        let gw = gateway_key(account, gateway);
        let [refused, evicted] = self.stats(&gw)?;
        Ok(GatewayUsage {
            rows: self.count(account, gateway, Field::All, &[])?,
            refused,
            evicted,
            quota: self.quota(&gw)?,
        })
    }

    /// Whether the prefix `gw` holds the rows of `account`/`gateway`.
    fn owned_by(&self, gw: &GatewayKey, account: &str, gateway: &str) -> Result<bool, IndexError> {
        Ok(self
            .tree
            .get(owner_key(gw))?
            .is_some_and(|stored| stored.as_ref() == owner_value(account, gateway).as_slice()))
    }

    fn update(&self, command: Update) -> Result<Applied, IndexError> {
        let Some(id) = parse_id(&command.id) else {
            return Ok(Applied::default());
        };
        let gw = gateway_key(&command.account_id, &command.gateway_id);
        let Some(old) = self.get_by_key(&gw, id, &command.account_id, &command.gateway_id)? else {
            return Ok(Applied::default());
        };
        let mut new = old.clone();
        if let Some(f) = command.feedback {
            new.feedback = Some(f);
        }
        if let Some(s) = command.score {
            new.score = Some(s);
        }
        if command.replace_metadata {
            new.metadata = command.metadata;
        }
        let mut changes = Changes::default();
        changes.remove_row(&gw, id, &RowFields::from(&old));
        let stored = Payload::Owned(encode_row(&mut new));
        changes.add_row(&gw, id, stored, &RowFields::from(&new));
        // Entries present in both old and new were removed then re-inserted in the same batch;
        // sled applies batch operations in order, so they survive.
        changes.commit(&self.tree)?;
        Ok(Applied {
            affected: 1,
            row: Some(new),
            ..Applied::default()
        })
    }

    fn delete(&self, command: Delete) -> Result<Applied, IndexError> {
        let (account, gateway) = (&command.account_id, &command.gateway_id);
        let gw = gateway_key(account, gateway);
        let mut changes = Changes::default();
        let mut bodies = DeadBodyTracker::default();
        let mut applied = Applied::default();
        if !self.owned_by(&gw, account, gateway)? {
            return Ok(applied);
        }
        for raw in &command.ids {
            let Some(id) = parse_id(raw) else { continue };
            if let Some(row) = self.owned_row(&gw, id, account, gateway)? {
                changes.remove_row(&gw, id, &RowFields::from(&row));
                bodies.dead(row.bodies.as_ref());
                applied.affected += 1;
            }
        }
        let emptied = emptied_packs(&changes.commit(&self.tree)?);
        bodies.report(account, gateway, |p| emptied.contains(&p), &mut applied);
        Ok(applied)
    }

    fn tombstone(&self, gw: &GatewayKey) -> Result<Option<i64>, IndexError> {
        Ok(self
            .tree
            .get(tombstone_key(gw))?
            .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes)))
    }

    fn delete_gateway(&self, command: DeleteGateway) -> Result<Applied, IndexError> {
        let (account, gateway) = (&command.account_id, &command.gateway_id);
        let gw = gateway_key(account, gateway);
        let deleted_at = self
            .tombstone(&gw)?
            .unwrap_or(i64::MIN)
            .max(command.deleted_at_ms);
        let mut applied = Applied::default();
        let mut changes = Changes::default();
        changes
            .batch
            .insert(tombstone_key(&gw), &deleted_at.to_be_bytes()[..]);
        // A gateway created again under the same name starts over.
        changes.batch.remove(tagged(keys::QUOTA, &gw));
        changes.batch.remove(tagged(keys::STATS, &gw));
        if !self.owned_by(&gw, account, gateway)? {
            // Nothing stored under these names (or the prefix is another gateway's).
            changes.commit(&self.tree)?;
            return Ok(applied);
        }
        changes.batch.remove(owner_key(&gw));
        loop {
            let mut n = 0;
            for entry in self.rows_oldest_first(&gw).take(DELETE_CHUNK) {
                let entry = entry?;
                let row = decode_row(entry.id, entry.payload(), account, gateway)?;
                changes.remove_row(&gw, entry.id, &RowFields::from(&row));
                n += 1;
            }
            let emptied = std::mem::take(&mut changes).commit(&self.tree)?;
            // Every row goes, so every pack does: each as its last row is removed.
            let packs = emptied_packs(&emptied).into_iter();
            applied
                .deleted_packs
                .extend(packs.map(|pack| pack_key(account, gateway, pack)));
            applied.affected += n;
            if n < DELETE_CHUNK as u64 {
                break;
            }
        }
        Ok(applied)
    }

    fn get_by_key(
        &self,
        gw: &GatewayKey,
        id: Ulid,
        account: &str,
        gateway: &str,
    ) -> Result<Option<LogRecord>, IndexError> {
        if !self.owned_by(gw, account, gateway)? {
            return Ok(None);
        }
        self.owned_row(gw, id, account, gateway)
    }

    /// Row `id` under a prefix the caller has checked belongs to `account`/`gateway`.
    fn owned_row(
        &self,
        gw: &GatewayKey,
        id: Ulid,
        account: &str,
        gateway: &str,
    ) -> Result<Option<LogRecord>, IndexError> {
        match bucket::get(&self.tree, &row_prefix(gw), id)? {
            Some(entry) => decode_row(id, entry.payload(), account, gateway).map(Some),
            None => Ok(None),
        }
    }

    /// One row by id, if it belongs to `account`/`gateway`.
    pub fn get(
        &self,
        account: &str,
        gateway: &str,
        id: Ulid,
    ) -> Result<Option<LogRecord>, IndexError> {
        self.get_by_key(&gateway_key(account, gateway), id, account, gateway)
    }

    /// The value of a counter (`Field::All` with an empty value counts a gateway's rows).
    pub fn count(
        &self,
        account: &str,
        gateway: &str,
        field: Field,
        value: &[u8],
    ) -> Result<u64, IndexError> {
        let key = counter_key(&gateway_key(account, gateway), field, value);
        Ok(self.tree.get(key)?.map_or(0, |v| decode_count(&v)))
    }

    /// One page (1-based) of `per_page` rows matching `query`, and the total number of matches.
    pub fn list(
        &self,
        query: &CompiledQuery,
        page: u32,
        per_page: u32,
    ) -> Result<Page, IndexError> {
        let per_page = per_page.max(1) as usize;
        let skip = (page.max(1) as usize - 1).saturating_mul(per_page);
        if query.order_by != OrderBy::CreatedAt {
            let mut all = self.collect(query, usize::MAX)?;
            all.sort_by(|a, b| query.compare(a, b));
            let total = all.len() as u64;
            let rows = all.into_iter().skip(skip).take(per_page).collect();
            return Ok(Page { rows, total });
        }
        let shortcut = query.counter_shortcut();
        let mut rows = Vec::with_capacity(per_page);
        let mut matched = 0u64;
        for row in self.scan(query)? {
            let row = row?;
            matched += 1;
            if matched as usize > skip && rows.len() < per_page {
                rows.push(row);
            } else if rows.len() == per_page && shortcut.is_some() {
                break;
            }
        }
        let total = match shortcut {
            Some((field, value)) => {
                self.count(&query.account_id, &query.gateway_id, field, &value)?
            }
            None => matched,
        };
        Ok(Page { rows, total })
    }

    /// Up to `limit` rows matching `query`, in its order.
    pub fn collect(
        &self,
        query: &CompiledQuery,
        limit: usize,
    ) -> Result<Vec<LogRecord>, IndexError> {
        if query.order_by == OrderBy::CreatedAt {
            return self.scan(query)?.take(limit).collect();
        }
        let mut all = self.scan(query)?.collect::<Result<Vec<_>, _>>()?;
        all.sort_by(|a, b| query.compare(a, b));
        all.truncate(limit);
        Ok(all)
    }

    /// Matching rows in creation order (newest first unless ascending).
    fn scan<'a>(
        &'a self,
        query: &'a CompiledQuery,
    ) -> Result<Box<dyn Iterator<Item = Result<LogRecord, IndexError>> + 'a>, IndexError> {
        let (account, gateway) = (query.account_id.as_str(), query.gateway_id.as_str());
        let gw = gateway_key(account, gateway);
        if query.empty_range() || !self.owned_by(&gw, account, gateway)? {
            return Ok(Box::new(std::iter::empty()));
        }
        let (lo, hi) = query.id_range;
        let descending = query.order_by != OrderBy::CreatedAt || !query.ascending;
        let rows: Box<dyn Iterator<Item = Result<LogRecord, IndexError>>> =
            match query.driving_index() {
                None => {
                    let rows = bucket::range(&self.tree, &row_prefix(&gw), lo, hi, descending);
                    Box::new(rows.map(|entry| {
                        let entry = entry?;
                        decode_row(entry.id, entry.payload(), account, gateway)
                    }))
                }
                Some(scan) => {
                    let ids = self.index_ids(&gw, &scan, lo, hi, descending);
                    let mut rows = bucket::Reader::new(&self.tree, row_prefix(&gw));
                    Box::new(ids.filter_map(move |id| {
                        let row = id.and_then(|id| rows.read(id));
                        row.transpose().map(|entry| {
                            let entry = entry?;
                            decode_row(entry.id, entry.payload(), account, gateway)
                        })
                    }))
                }
            };
        Ok(Box::new(rows.filter(move |r| {
            r.as_ref().map_or(true, |row| query.matches(row))
        })))
    }

    /// Ids from the union of the index prefixes of `scan`, in id order, without duplicates.
    fn index_ids(
        &self,
        gw: &GatewayKey,
        scan: &IndexScan,
        lo: Ulid,
        hi: Ulid,
        descending: bool,
    ) -> impl Iterator<Item = Result<Ulid, IndexError>> + 'static {
        let mut sources: Vec<IdSource> = scan
            .values
            .iter()
            .map(|value| {
                let prefix = index_prefix(gw, scan.field, value);
                let postings = bucket::range(&self.tree, &prefix, lo, hi, descending);
                let ids: Box<dyn Iterator<Item = Result<Ulid, IndexError>>> =
                    Box::new(postings.map(|entry| entry.map(|e| e.id)));
                ids.peekable()
            })
            .collect();
        let mut last: Option<Ulid> = None;
        std::iter::from_fn(move || {
            loop {
                // Pick the next id across sources: largest when descending, smallest otherwise.
                let mut best: Option<(usize, Ulid)> = None;
                for (i, source) in sources.iter_mut().enumerate() {
                    match source.peek() {
                        Some(Ok(id)) => {
                            let better = best
                                .is_none_or(|(_, b)| if descending { *id > b } else { *id < b });
                            if better {
                                best = Some((i, *id));
                            }
                        }
                        Some(Err(_)) => return source.next(),
                        None => {}
                    }
                }
                let (i, id) = best?;
                sources[i].next();
                if last != Some(id) {
                    last = Some(id);
                    return Some(Ok(id));
                }
            }
        })
    }

    /// Serialize every owner entry, row, tombstone, quota and statistic (the only non-derived
    /// state) for a
    /// snapshot. Safe to run while commands are applied: keys are visited in order, each as of
    /// some recent moment.
    pub fn snapshot(&self) -> Result<Vec<u8>, IndexError> {
        let mut out = Vec::new();
        let owners = self.tree.scan_prefix([keys::OWNER]);
        let rows = self.tree.scan_prefix([keys::ROW]);
        let tombstones = self.tree.scan_prefix([keys::TOMBSTONE]);
        let quotas = self.tree.scan_prefix([keys::QUOTA]);
        let stats = self.tree.scan_prefix([keys::STATS]);
        for item in owners
            .chain(rows)
            .chain(tombstones)
            .chain(quotas)
            .chain(stats)
        {
            let (key, value) = item?;
            prost::encoding::encode_varint(key.len() as u64, &mut out);
            out.extend_from_slice(&key);
            prost::encoding::encode_varint(value.len() as u64, &mut out);
            out.extend_from_slice(&value);
        }
        Ok(out)
    }

    /// Replace all state with a snapshot's rows, rebuilding indexes and counters.
    pub fn restore(&self, snapshot: &[u8]) -> Result<(), IndexError> {
        self.tree.clear()?;
        let mut buf = snapshot;
        let corrupt = |reason: &str| IndexError::Corrupt {
            key: "snapshot".into(),
            reason: reason.into(),
        };
        let mut changes = Changes::default();
        let mut pending = 0;
        while !buf.is_empty() {
            let take = |buf: &mut &[u8]| -> Result<Vec<u8>, IndexError> {
                let len =
                    prost::encoding::decode_varint(buf).map_err(|e| corrupt(&e.to_string()))?;
                let len = usize::try_from(len).map_err(|_| corrupt("length overflow"))?;
                if buf.len() < len {
                    return Err(corrupt("truncated"));
                }
                let (head, rest) = buf.split_at(len);
                *buf = rest;
                Ok(head.to_vec())
            };
            let key = take(&mut buf)?;
            let value = take(&mut buf)?;
            if key.first() != Some(&keys::ROW) {
                changes.batch.insert(key, value);
                continue;
            }
            let gw = gateway_of(&key).ok_or_else(|| corrupt("row key too short"))?;
            for entry in stored_rows(&key, value.into())? {
                // Stored rows are in stored form already: read in place, kept as they are.
                let row = read_stored(&entry)?;
                changes.add_row(
                    &gw,
                    entry.id,
                    Payload::Owned(row.stored.into_vec()),
                    &row.fields,
                );
                pending += 1;
            }
            if pending >= DELETE_CHUNK {
                std::mem::take(&mut changes).commit(&self.tree)?;
                pending = 0;
            }
        }
        changes
            .batch
            .insert(&[keys::LAYOUT][..], &[LAYOUT_VERSION][..]);
        changes.commit(&self.tree).map(drop)
    }

    /// Bytes used per kind of entry, from a full scan (for benchmarks and diagnostics).
    pub fn footprint(&self) -> Result<Footprint, IndexError> {
        let mut f = Footprint::default();
        for item in self.tree.iter() {
            let (key, value) = item?;
            let bytes = (key.len() + value.len()) as u64;
            match key.first() {
                Some(&keys::ROW) => {
                    f.rows += stored_rows(&key, value)?.len() as u64;
                    f.row_bytes += bytes;
                }
                Some(&keys::INDEX) => f.index_bytes += bytes,
                Some(&keys::COUNTER | &keys::PACK | &keys::OWNER) => f.counter_bytes += bytes,
                _ => {}
            }
        }
        Ok(f)
    }

    /// Whether the gateway has any rows, index entries, counters or packs left (used by tests
    /// of deletion).
    pub fn gateway_is_empty(&self, account: &str, gateway: &str) -> Result<bool, IndexError> {
        let gw = gateway_key(account, gateway);
        let prefixes = [
            row_prefix(&gw),
            gateway_index_prefix(&gw),
            counter_prefix(&gw),
            pack_prefix(&gw),
            owner_key(&gw),
        ];
        Ok(prefixes
            .iter()
            .all(|p| self.tree.scan_prefix(p).next().is_none()))
    }
}

/// A stored row read in place (its stored form is kept as it is).
fn read_stored(entry: &Entry) -> Result<WireRow<'_>, IndexError> {
    WireRow::parse(entry.payload()).map_err(|e| IndexError::Corrupt {
        key: format!("row {}", entry.id),
        reason: e.to_string(),
    })
}

/// The rows stored under one row key, with their ids: a chunk of a bucket, or — as written
/// before rows were grouped into buckets (`R | gw | id(16)`) — one row.
fn stored_rows(key: &[u8], value: IVec) -> Result<Vec<Entry>, IndexError> {
    if key.len() == LEGACY_ROW_KEY_LEN {
        let id = key[1 + GW_LEN..].try_into().map(Ulid::from_bytes);
        return Ok(id
            .map(|id| vec![Entry::whole(id, value)])
            .unwrap_or_default());
    }
    Ok(bucket::chunk_entries(key, value, false)?.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_proto::shard::{Filter, FilterOperator, FilterValue, LogQuery, filter_value};

    /// Thirty rows of gateway `a`/`g` (models `even` and `odd`, four to a millisecond), stored
    /// as the first layout stored them: a key per row, `R | gw | id`, and a key per posting,
    /// `I | gw | field | value | id`.
    fn first_layout_rows(tree: &Tree) -> Vec<LogRecord> {
        let gw = gateway_key("a", "g");
        let mut legacy = Changes::default();
        let rows: Vec<LogRecord> = (0..30u64)
            .map(|i| LogRecord {
                id: Ulid::from_parts(1_700_000_000_000 + i / 4, u128::from(i))
                    .to_bytes()
                    .to_vec()
                    .into(),
                account_id: "a".into(),
                gateway_id: "g".into(),
                provider: "openai".into(),
                model: if i % 2 == 0 { "even" } else { "odd" }.into(),
                success: true,
                ..LogRecord::default()
            })
            .collect();
        for row in &rows {
            let id = parse_id(&row.id).unwrap();
            let mut key = row_prefix(&gw);
            key.extend_from_slice(&id.to_bytes());
            legacy.batch.insert(key, encode_row(&mut row.clone()));
            let fields = RowFields::from(row);
            for_each_posting(&fields, |field, value| {
                let mut posting = index_prefix(&gw, field, value);
                posting[0] = keys::LEGACY_INDEX;
                posting.extend_from_slice(&id.to_bytes());
                legacy.batch.insert(posting, &[][..]);
            });
            legacy.count_row(&gw, &fields, 1);
        }
        legacy.batch.insert(owner_key(&gw), owner_value("a", "g"));
        legacy.commit(tree).unwrap();
        rows
    }

    /// The index holds `rows` in the current layout: all counted, found by a filter on
    /// their model, and opening it again changes nothing.
    fn assert_current_layout_holds(tree: &Tree, rows: &[LogRecord]) {
        let index = LogIndex::open(tree.clone()).unwrap();
        assert_eq!(index.footprint().unwrap().rows, 30);
        assert_eq!(index.count("a", "g", Field::All, b"").unwrap(), 30);
        let odd = CompiledQuery::compile(&LogQuery {
            account_id: "a".into(),
            gateway_id: "g".into(),
            filters: vec![Filter {
                key: "model".into(),
                operator: FilterOperator::Eq as i32,
                values: vec![FilterValue {
                    kind: Some(filter_value::Kind::Text("odd".into())),
                }],
            }],
            ..LogQuery::default()
        })
        .unwrap();
        let listed = index.list(&odd, 1, 100).unwrap();
        let mut expected: Vec<&LogRecord> = rows.iter().filter(|r| r.model == "odd").collect();
        expected.reverse();
        assert_eq!(listed.rows.iter().collect::<Vec<_>>(), expected);
        assert_eq!(
            tree.get([keys::LAYOUT]).unwrap().as_deref(),
            Some(&[LAYOUT_VERSION][..])
        );
        assert_eq!(
            tree.scan_prefix([keys::LEGACY_INDEX]).count(),
            0,
            "no posting of an earlier layout is left"
        );
        let before: Vec<_> = tree.iter().map(Result::unwrap).collect();
        LogIndex::open(tree.clone()).unwrap();
        assert_eq!(tree.iter().map(Result::unwrap).collect::<Vec<_>>(), before);
    }

    /// The first layout's rows are moved into buckets, and its postings rebuilt, on open.
    #[test]
    fn rows_of_the_key_per_row_layout_move_into_buckets_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path()).unwrap().open_tree("t").unwrap();
        let rows = first_layout_rows(&tree);
        LogIndex::open(tree.clone()).unwrap();
        let per_row_keys = tree
            .iter()
            .keys()
            .map(Result::unwrap)
            .filter(|k| k.ends_with(&rows[3].id))
            .count();
        assert_eq!(per_row_keys, 0, "no key of the first layout is left");
        assert_current_layout_holds(&tree, &rows);
    }

    /// Postings of layout 2 (`I`, a bucket per millisecond) are dropped and the rows posted
    /// again in buckets of 16 ms, on open.
    #[test]
    fn postings_of_millisecond_buckets_are_rebuilt_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path()).unwrap().open_tree("t").unwrap();
        let rows = first_layout_rows(&tree);
        LogIndex::open(tree.clone()).unwrap();
        let postings: Vec<(IVec, IVec)> = tree
            .scan_prefix([keys::INDEX])
            .map(Result::unwrap)
            .collect();
        // The rows' 8 milliseconds are in one 16 ms bucket: a key per posted value.
        assert_eq!(postings.len(), 3, "openai, even, odd");
        // As layout 2 left it: postings under `I`, some of them stale, none under `J`.
        let mut v2 = Batch::default();
        for (key, value) in postings {
            let mut legacy = key.to_vec();
            legacy[0] = keys::LEGACY_INDEX;
            v2.insert(legacy.clone(), value);
            legacy.push(0);
            v2.insert(legacy, &b"stale"[..]);
            v2.remove(key);
        }
        v2.insert(&[keys::LAYOUT][..], &[2][..]);
        tree.apply_batch(v2).unwrap();
        assert_current_layout_holds(&tree, &rows);
    }
}
