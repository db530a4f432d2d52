//! The index of one shard: applying commands and answering queries.

use std::collections::{BTreeMap, HashMap};

use aigw_proto::shard::{LogRecord, OrderBy};
use prost::Message;
use sled::{Batch, IVec, Tree};
use ulid::Ulid;

use crate::command::{Applied, Command, Delete, DeleteGateway, Insert, Update, kind::Kind};
use crate::keys::{
    self, Field, GatewayKey, counter_key, counter_prefix, gateway_index_prefix, gateway_key,
    id_suffix, index_key, row_key, row_prefix, tombstone_key,
};
use crate::query::{CompiledQuery, IndexScan, feedback_byte, metadata_text};

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

/// Index entries of a row: (field, value) pairs.
fn index_entries(row: &LogRecord) -> Vec<(Field, Vec<u8>)> {
    let mut out = Vec::with_capacity(4 + 2 * row.metadata.len());
    if !row.provider.is_empty() {
        out.push((Field::Provider, row.provider.as_bytes().to_vec()));
    }
    if !row.model.is_empty() {
        out.push((Field::Model, row.model.as_bytes().to_vec()));
    }
    if !row.success {
        out.push((Field::Success, vec![0]));
    }
    if row.cached {
        out.push((Field::Cached, vec![1]));
    }
    if let Some(b) = row.feedback.and_then(|f| feedback_byte(f64::from(f))) {
        out.push((Field::Feedback, vec![b]));
    }
    if let Some(event) = &row.event_id {
        out.push((Field::EventId, event.as_bytes().to_vec()));
    }
    for entry in &row.metadata {
        out.push((Field::MetaKey, entry.key.as_bytes().to_vec()));
        if let Some(text) = metadata_text(entry) {
            out.push((Field::MetaValue, text.into_bytes()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Counters a row contributes to.
fn counted(row: &LogRecord) -> Vec<(Field, Vec<u8>)> {
    let mut out = vec![
        (Field::All, Vec::new()),
        (Field::Provider, row.provider.as_bytes().to_vec()),
        (Field::Model, row.model.as_bytes().to_vec()),
        (Field::Success, vec![u8::from(row.success)]),
        (Field::Cached, vec![u8::from(row.cached)]),
    ];
    if let Some(b) = row.feedback.and_then(|f| feedback_byte(f64::from(f))) {
        out.push((Field::Feedback, vec![b]));
    }
    out
}

/// Pending changes of one command, applied as one atomic batch.
#[derive(Default)]
struct Changes {
    batch: Batch,
    counters: BTreeMap<Vec<u8>, i64>,
}

impl Changes {
    fn add_row(&mut self, gw: &GatewayKey, id: Ulid, row: &LogRecord) {
        self.batch.insert(row_key(gw, id), encode_row(row));
        for (field, value) in index_entries(row) {
            self.batch.insert(index_key(gw, field, &value, id), &[][..]);
        }
        for (field, value) in counted(row) {
            *self
                .counters
                .entry(counter_key(gw, field, &value))
                .or_default() += 1;
        }
    }

    fn remove_row(&mut self, gw: &GatewayKey, id: Ulid, row: &LogRecord) {
        self.batch.remove(row_key(gw, id));
        for (field, value) in index_entries(row) {
            self.batch.remove(index_key(gw, field, &value, id));
        }
        for (field, value) in counted(row) {
            *self
                .counters
                .entry(counter_key(gw, field, &value))
                .or_default() -= 1;
        }
    }

    fn commit(mut self, tree: &Tree) -> Result<(), IndexError> {
        for (key, delta) in self.counters {
            if delta == 0 {
                continue;
            }
            let current = tree.get(&key)?.map_or(0, |v| decode_count(&v));
            let next = current.saturating_add_signed(delta);
            if next == 0 {
                self.batch.remove(key);
            } else {
                self.batch.insert(key, &next.to_be_bytes()[..]);
            }
        }
        tree.apply_batch(self.batch)?;
        Ok(())
    }
}

fn decode_count(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// Rows are stored without their id (it is in the key).
/// Rows are stored without their id (it is in the key), and body keys that follow the
/// [`body_key`] naming are stored as empty strings (re-derived on read): together they are a
/// third of a typical row.
fn encode_row(row: &LogRecord) -> Vec<u8> {
    let mut stored = row.clone();
    stored.id = Default::default();
    if let Some(id) = parse_id(&row.id) {
        for (slot, part) in [
            (&mut stored.request_body_key, BodyPart::Request),
            (&mut stored.response_body_key, BodyPart::Response),
        ] {
            if slot.as_deref()
                == Some(body_key(&row.account_id, &row.gateway_id, id, part).as_str())
            {
                *slot = Some(String::new());
            }
        }
    }
    stored.encode_to_vec()
}

fn decode_row(key: &[u8], value: &[u8]) -> Result<LogRecord, IndexError> {
    let mut row = LogRecord::decode(value).map_err(|e| IndexError::Corrupt {
        key: hex(key),
        reason: e.to_string(),
    })?;
    let id = id_suffix(key).ok_or_else(|| IndexError::Corrupt {
        key: hex(key),
        reason: "key too short".into(),
    })?;
    row.id = id.to_bytes().to_vec().into();
    for (slot, part) in [
        (&mut row.request_body_key, BodyPart::Request),
        (&mut row.response_body_key, BodyPart::Response),
    ] {
        if slot.as_deref() == Some("") {
            *slot = Some(body_key(&row.account_id, &row.gateway_id, id, part));
        }
    }
    Ok(row)
}

/// Which body of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPart {
    /// The request body.
    Request,
    /// The response body.
    Response,
}

/// The object-store key of a log's body: `{account}/{gateway}/{id}.request|response`. Rows
/// store only whether a body exists, so the naming is fixed here, next to the row encoding.
pub fn body_key(account: &str, gateway: &str, id: Ulid, part: BodyPart) -> String {
    let suffix = match part {
        BodyPart::Request => "request",
        BodyPart::Response => "response",
    };
    format!("{account}/{gateway}/{id}.{suffix}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A row id from a command. Malformed ids are skipped, not errors: an error while applying a
/// committed entry would stop the whole group, and proposers validate ids before proposing.
fn parse_id(bytes: &[u8]) -> Option<Ulid> {
    aigw_proto::id_from_bytes(bytes).ok()
}

impl LogIndex {
    /// The index stored in `tree`.
    pub fn new(tree: Tree) -> Self {
        Self { tree }
    }

    /// Apply one encoded [`Command`]; returns the encoded [`Applied`].
    pub fn apply_encoded(&self, command: &[u8]) -> Result<Vec<u8>, IndexError> {
        let command =
            Command::decode(command).map_err(|e| IndexError::InvalidCommand(e.to_string()))?;
        Ok(self.apply(command)?.encode_to_vec())
    }

    /// Apply one command.
    pub fn apply(&self, command: Command) -> Result<Applied, IndexError> {
        match command.kind {
            Some(Kind::Insert(c)) => self.insert(c),
            Some(Kind::Update(c)) => self.update(c),
            Some(Kind::Delete(c)) => self.delete(c),
            Some(Kind::DeleteGateway(c)) => self.delete_gateway(c),
            None => Err(IndexError::InvalidCommand("empty command".into())),
        }
    }

    fn insert(&self, command: Insert) -> Result<Applied, IndexError> {
        let mut changes = Changes::default();
        let mut seen = std::collections::HashSet::with_capacity(command.rows.len());
        let mut tombstones: HashMap<GatewayKey, Option<i64>> = HashMap::new();
        let mut refused_bodies = Vec::new();
        let mut affected = 0;
        for row in &command.rows {
            let Some(id) = parse_id(&row.id) else {
                continue;
            };
            let gw = gateway_key(&row.account_id, &row.gateway_id);
            let deleted_at = match tombstones.get(&gw) {
                Some(t) => *t,
                None => {
                    let t = self.tombstone(&gw)?;
                    tombstones.insert(gw, t);
                    t
                }
            };
            if deleted_at.is_some_and(|t| row.created_at_ms <= t) {
                // Its bodies were stored for nothing: report them for deletion.
                refused_bodies.extend(body_keys(row));
                continue;
            }
            let key = row_key(&gw, id);
            if !seen.insert(key.clone()) || self.tree.contains_key(&key)? {
                continue;
            }
            changes.add_row(&gw, id, row);
            affected += 1;
        }
        changes.commit(&self.tree)?;
        Ok(Applied {
            affected,
            deleted_body_keys: refused_bodies,
            ..Applied::default()
        })
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
        changes.remove_row(&gw, id, &old);
        changes.add_row(&gw, id, &new);
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
        let gw = gateway_key(&command.account_id, &command.gateway_id);
        let mut changes = Changes::default();
        let mut applied = Applied::default();
        for raw in &command.ids {
            let Some(id) = parse_id(raw) else { continue };
            if let Some(row) = self.get_by_key(&gw, id, &command.account_id, &command.gateway_id)? {
                changes.remove_row(&gw, id, &row);
                applied.affected += 1;
                applied.deleted_body_keys.extend(body_keys(&row));
            }
        }
        changes.commit(&self.tree)?;
        Ok(applied)
    }

    fn tombstone(&self, gw: &GatewayKey) -> Result<Option<i64>, IndexError> {
        Ok(self
            .tree
            .get(tombstone_key(gw))?
            .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes)))
    }

    fn delete_gateway(&self, command: DeleteGateway) -> Result<Applied, IndexError> {
        let gw = gateway_key(&command.account_id, &command.gateway_id);
        let deleted_at = self
            .tombstone(&gw)?
            .unwrap_or(i64::MIN)
            .max(command.deleted_at_ms);
        let mut applied = Applied::default();
        let mut first = true;
        loop {
            let mut changes = Changes::default();
            if std::mem::take(&mut first) {
                changes
                    .batch
                    .insert(tombstone_key(&gw), &deleted_at.to_be_bytes()[..]);
            }
            let mut n = 0;
            for item in self.tree.scan_prefix(row_prefix(&gw)).take(DELETE_CHUNK) {
                let (key, value) = item?;
                let row = decode_row(&key, &value)?;
                if row.account_id != command.account_id || row.gateway_id != command.gateway_id {
                    continue;
                }
                let id = id_suffix(&key).unwrap_or_default();
                changes.remove_row(&gw, id, &row);
                applied.deleted_body_keys.extend(body_keys(&row));
                n += 1;
            }
            changes.commit(&self.tree)?;
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
        let key = row_key(gw, id);
        match self.tree.get(&key)? {
            Some(value) => {
                let row = decode_row(&key, &value)?;
                Ok((row.account_id == account && row.gateway_id == gateway).then_some(row))
            }
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
        if query.empty_range() {
            return Ok(Box::new(std::iter::empty()));
        }
        let gw = gateway_key(&query.account_id, &query.gateway_id);
        let (lo, hi) = query.id_range;
        let descending = query.order_by != OrderBy::CreatedAt || !query.ascending;
        let rows: Box<dyn Iterator<Item = Result<LogRecord, IndexError>>> =
            match query.driving_index() {
                None => {
                    let range = self.tree.range(row_key(&gw, lo)..=row_key(&gw, hi));
                    let iter: Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>>> = if descending {
                        Box::new(range.rev())
                    } else {
                        Box::new(range)
                    };
                    Box::new(iter.map(|item| {
                        let (key, value) = item?;
                        decode_row(&key, &value)
                    }))
                }
                Some(scan) => {
                    let ids = self.index_ids(&gw, &scan, lo, hi, descending);
                    Box::new(ids.filter_map(move |id| match id {
                        Ok(id) => {
                            let key = row_key(&gw, id);
                            match self.tree.get(&key) {
                                Ok(Some(value)) => Some(decode_row(&key, &value)),
                                Ok(None) => None,
                                Err(e) => Some(Err(e.into())),
                            }
                        }
                        Err(e) => Some(Err(e)),
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
                let range = self.tree.range(
                    index_key(gw, scan.field, value, lo)..=index_key(gw, scan.field, value, hi),
                );
                let iter: Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>>> = if descending {
                    Box::new(range.rev())
                } else {
                    Box::new(range)
                };
                let ids: Box<dyn Iterator<Item = Result<Ulid, IndexError>>> =
                    Box::new(iter.map(|item| {
                        let (key, _) = item?;
                        id_suffix(&key).ok_or_else(|| IndexError::Corrupt {
                            key: hex(&key),
                            reason: "index key too short".into(),
                        })
                    }));
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

    /// Serialize every row and tombstone (the only non-derived state) for a snapshot. Safe to
    /// run while commands are applied: keys are visited in order, each as of some recent moment.
    pub fn snapshot(&self) -> Result<Vec<u8>, IndexError> {
        let mut out = Vec::new();
        let rows = self.tree.scan_prefix([keys::ROW]);
        let tombstones = self.tree.scan_prefix([keys::TOMBSTONE]);
        for item in rows.chain(tombstones) {
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
            if key.first() == Some(&keys::TOMBSTONE) {
                changes.batch.insert(key, value);
                continue;
            }
            let row = decode_row(&key, &value)?;
            let id = id_suffix(&key).ok_or_else(|| corrupt("row key too short"))?;
            changes.add_row(&gateway_key(&row.account_id, &row.gateway_id), id, &row);
            pending += 1;
            if pending == DELETE_CHUNK {
                std::mem::take(&mut changes).commit(&self.tree)?;
                pending = 0;
            }
        }
        changes.commit(&self.tree)
    }

    /// Bytes used per kind of entry, from a full scan (for benchmarks and diagnostics).
    pub fn footprint(&self) -> Result<Footprint, IndexError> {
        let mut f = Footprint::default();
        for item in self.tree.iter() {
            let (key, value) = item?;
            let bytes = (key.len() + value.len()) as u64;
            match key.first() {
                Some(&keys::ROW) => {
                    f.rows += 1;
                    f.row_bytes += bytes;
                }
                Some(&keys::INDEX) => f.index_bytes += bytes,
                Some(&keys::COUNTER) => f.counter_bytes += bytes,
                _ => {}
            }
        }
        Ok(f)
    }

    /// Whether the gateway has any index entries or counters left (used by tests of deletion).
    pub fn gateway_is_empty(&self, account: &str, gateway: &str) -> Result<bool, IndexError> {
        let gw = gateway_key(account, gateway);
        Ok(self.tree.scan_prefix(row_prefix(&gw)).next().is_none()
            && self
                .tree
                .scan_prefix(gateway_index_prefix(&gw))
                .next()
                .is_none()
            && self.tree.scan_prefix(counter_prefix(&gw)).next().is_none())
    }
}

/// Body object keys referenced by a row.
fn body_keys(row: &LogRecord) -> impl Iterator<Item = String> + '_ {
    row.request_body_key
        .iter()
        .chain(row.response_body_key.iter())
        .cloned()
}
