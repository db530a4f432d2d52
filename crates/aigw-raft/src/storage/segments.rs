//! A Raft log's entries as an append-only sequence of numbered records in segment files.
//!
//! sled is a poor home for a Raft log: a batch of a thousand logs is one ~200 KiB entry, past
//! sled's 128 KiB limit for inline pages, so every append wrote the entry to a file of its own
//! and, each time the log's last leaf split or was consolidated, rewrote a leaf of about ten
//! entries (~2 MiB) to another; and applying read the entries back through the same leaves.
//! Here an entry is written once, appended to the active segment, and made durable by one
//! `fdatasync` of that file.
//!
//! ```text
//! segment  {first index:020}.seg  = MAGIC | record*
//! record   = len u32 LE | crc32 u32 LE | index u64 LE | payload (len bytes)
//! ```
//!
//! The CRC covers the index and the payload. A segment is sealed (a new one started) once it
//! holds [`SEGMENT_BYTES`], after which it is never written again. Opening walks the records'
//! headers and checks every record of the *last* segment: the first one cut short or failing
//! its CRC is where a write a crash interrupted begins (never acknowledged, as acknowledgement
//! waits for the sync), and the segment is cut there — point-in-time recovery, as a database's
//! write-ahead log does. In a sealed segment, a record cut short or out of sequence fails the
//! open. Every payload is checked against its CRC when read.
//!
//! Purging is logical until a whole sealed segment is purged, which then is deleted.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// First bytes of every segment file (format version 1).
const MAGIC: &[u8; 8] = b"AIGWLOG1";
/// Bytes before a record's payload: length, CRC, index.
const HEADER_LEN: usize = 16;
/// A segment is sealed once it holds this many bytes.
pub(crate) const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// The suffix of segment file names.
const SUFFIX: &str = ".seg";

/// A segment log operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SegmentError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A file does not hold what this module wrote.
    #[error("{path}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where the damage is.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An append would leave a gap or overwrite entries (the caller must truncate first).
    #[error("append of index {got} to a log that expects {expected}")]
    NotContiguous {
        /// The index the log continues with.
        expected: u64,
        /// The index offered.
        got: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SegmentError + '_ {
    move |source| SegmentError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One segment file: records `first..first + offsets.len()`.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    first: u64,
    /// Byte offset of each record's header.
    offsets: Vec<u64>,
    /// Bytes in the file (where the next record goes).
    len: u64,
}

impl Segment {
    /// `file` (at `path`) made a segment holding no record yet: whatever it held is replaced
    /// by the magic, synced.
    fn empty(path: PathBuf, file: File, first: u64) -> Result<Self, SegmentError> {
        file.set_len(0)
            .and_then(|()| file.write_all_at(MAGIC, 0))
            .and_then(|()| file.sync_all())
            .map_err(io(&path))?;
        Ok(Self {
            path,
            file,
            first,
            offsets: Vec::new(),
            len: MAGIC.len() as u64,
        })
    }

    fn end(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }
}

/// The segments of one log directory, with an index of where each record is.
#[derive(Debug)]
pub(crate) struct SegmentLog {
    dir: PathBuf,
    /// By first index; the last is the active one.
    segments: BTreeMap<u64, Segment>,
    /// Records at or below this index are purged: never returned, deleted with their segment.
    purged: Option<u64>,
}

/// Files written by an append or a truncation that must be synced before it is durable.
#[must_use = "the write is not durable until synced"]
pub(crate) struct Unsynced(Vec<(PathBuf, File)>);

impl Unsynced {
    /// `fdatasync` every file touched (blocking).
    pub(crate) fn sync(self) -> Result<(), SegmentError> {
        for (path, file) in self.0 {
            file.sync_data().map_err(io(&path))?;
        }
        Ok(())
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}{SUFFIX}")
}

fn sync_dir(dir: &Path) -> Result<(), SegmentError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl SegmentLog {
    /// Opens (creating if needed) the log in `dir`, whose records at or below `purged` are
    /// already purged.
    pub(crate) fn open(dir: &Path, purged: Option<u64>) -> Result<Self, SegmentError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut firsts = Vec::new();
        for item in std::fs::read_dir(dir).map_err(io(dir))? {
            let name = item.map_err(io(dir))?.file_name();
            let Some(first) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            firsts.push(first);
        }
        firsts.sort_unstable();
        let mut log = Self {
            dir: dir.to_owned(),
            segments: BTreeMap::new(),
            purged,
        };
        let count = firsts.len();
        for (n, first) in firsts.into_iter().enumerate() {
            let segment = load_segment(&dir.join(segment_name(first)), first, n + 1 == count)?;
            if let Some(previous) = log.segments.values().next_back()
                && previous.end() != first
            {
                return Err(SegmentError::Corrupt {
                    path: segment.path,
                    offset: 0,
                    reason: format!(
                        "starts at index {first}, after a segment ending at {}",
                        previous.end()
                    ),
                });
            }
            log.segments.insert(first, segment);
        }
        log.delete_purged_segments()?;
        Ok(log)
    }

    /// The index after the last record, if any record (purged or not) is stored.
    pub(crate) fn end(&self) -> Option<u64> {
        self.segments.values().next_back().map(Segment::end)
    }

    /// Appends `records` (index, payload), whose indexes must continue the log (a log whose
    /// every record is purged continues anywhere after the purge point). Readable at once;
    /// durable once the returned files are synced.
    pub(crate) fn append(
        &mut self,
        records: impl IntoIterator<Item = (u64, Vec<u8>)>,
    ) -> Result<Unsynced, SegmentError> {
        let mut touched: Vec<u64> = Vec::new();
        let mut buf = Vec::new();
        for (index, payload) in records {
            let expected = self.end();
            let new_segment = if expected == Some(index) {
                self.active().is_some_and(|s| s.len >= SEGMENT_BYTES)
            } else {
                let all_purged = match (expected, self.purged) {
                    (None, _) => true,
                    (Some(end), Some(purged)) => end <= purged + 1 && index > purged,
                    (Some(_), None) => false,
                };
                if !all_purged {
                    return Err(SegmentError::NotContiguous {
                        expected: expected.unwrap_or_default(),
                        got: index,
                    });
                }
                true
            };
            if new_segment {
                self.write_out(&mut buf, &mut touched)?;
                self.start_segment(index)?;
            }
            // Never missing: the branches above start a segment when there is none.
            let segment = self.active_mut().ok_or(SegmentError::NotContiguous {
                expected: 0,
                got: index,
            })?;
            let offset = segment.len + buf.len() as u64;
            segment.offsets.push(offset);
            let len = u32::try_from(payload.len()).map_err(|_| SegmentError::Corrupt {
                path: segment.path.clone(),
                offset,
                reason: format!("a record of {} bytes is too large", payload.len()),
            })?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&record_crc(index, &payload).to_le_bytes());
            buf.extend_from_slice(&index.to_le_bytes());
            buf.extend_from_slice(&payload);
        }
        self.write_out(&mut buf, &mut touched)?;
        self.unsynced(touched)
    }

    /// The payloads of the unpurged records with indexes in `start..end`, in order (fewer
    /// when the log does not hold them all).
    pub(crate) fn read(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, SegmentError> {
        let start = start.max(self.purged.map_or(0, |p| p + 1));
        let mut out = Vec::new();
        let mut index = start;
        while index < end {
            let Some((_, segment)) = self.segments.range(..=index).next_back() else {
                // Before the first segment: continue from there.
                match self.segments.keys().next() {
                    Some(&first) if first > index => {
                        index = first;
                        continue;
                    }
                    _ => break,
                }
            };
            if index >= segment.end() {
                break;
            }
            let upto = end.min(segment.end());
            for i in index..upto {
                out.push(read_record(segment, i)?);
            }
            index = upto;
        }
        Ok(out)
    }

    /// Removes the records at `from` and after.
    pub(crate) fn truncate(&mut self, from: u64) -> Result<Unsynced, SegmentError> {
        let doomed: Vec<u64> = self.segments.range(from..).map(|(k, _)| *k).collect();
        for first in &doomed {
            if let Some(segment) = self.segments.remove(first) {
                std::fs::remove_file(&segment.path).map_err(io(&segment.path))?;
            }
        }
        let mut touched = Vec::new();
        if let Some((&first, segment)) = self.segments.range_mut(..from).next_back()
            && from < segment.end()
        {
            let at = segment.offsets[(from - segment.first) as usize];
            segment.file.set_len(at).map_err(io(&segment.path))?;
            segment.offsets.truncate((from - segment.first) as usize);
            segment.len = at;
            touched.push(first);
        }
        if !doomed.is_empty() {
            sync_dir(&self.dir)?;
        }
        self.unsynced(touched)
    }

    /// Marks the records at or below `upto` purged, and deletes the sealed segments that hold
    /// nothing else. The caller must have made the purge point durable first: a deleted
    /// segment cannot come back.
    pub(crate) fn purge(&mut self, upto: u64) -> Result<(), SegmentError> {
        self.purged = Some(self.purged.map_or(upto, |p| p.max(upto)));
        self.delete_purged_segments()
    }

    fn delete_purged_segments(&mut self) -> Result<(), SegmentError> {
        let Some(purged) = self.purged else {
            return Ok(());
        };
        let active = self.segments.keys().next_back().copied();
        let dead: Vec<u64> = self
            .segments
            .values()
            .filter(|s| Some(s.first) != active && s.end() <= purged + 1)
            .map(|s| s.first)
            .collect();
        for first in &dead {
            if let Some(segment) = self.segments.remove(first) {
                std::fs::remove_file(&segment.path).map_err(io(&segment.path))?;
            }
        }
        if !dead.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Deletes every segment: the log becomes empty, and continues at any index.
    pub(crate) fn clear(&mut self) -> Result<(), SegmentError> {
        for (_, segment) in std::mem::take(&mut self.segments) {
            std::fs::remove_file(&segment.path).map_err(io(&segment.path))?;
        }
        sync_dir(&self.dir)
    }

    fn active(&self) -> Option<&Segment> {
        self.segments.values().next_back()
    }

    fn active_mut(&mut self) -> Option<&mut Segment> {
        self.segments.values_mut().next_back()
    }

    /// Writes `buf` at the end of the active segment, noting it as touched.
    fn write_out(&mut self, buf: &mut Vec<u8>, touched: &mut Vec<u64>) -> Result<(), SegmentError> {
        if buf.is_empty() {
            return Ok(());
        }
        let Some(segment) = self.active_mut() else {
            return Ok(());
        };
        if let Err(e) = segment.file.write_all_at(buf, segment.len) {
            // Forget the records that did not make it, so the index matches the file.
            let len = segment.len;
            segment.offsets.retain(|offset| *offset < len);
            return Err(io(&segment.path)(e));
        }
        segment.len += buf.len() as u64;
        if !touched.contains(&segment.first) {
            touched.push(segment.first);
        }
        buf.clear();
        Ok(())
    }

    /// Seals the active segment and starts a new one whose first record will be `first`;
    /// segments left holding only purged records are deleted.
    fn start_segment(&mut self, first: u64) -> Result<(), SegmentError> {
        // Sealed means synced whole: only the last segment may hold a torn write.
        if let Some(active) = self.active() {
            active.file.sync_data().map_err(io(&active.path))?;
        }
        let path = self.dir.join(segment_name(first));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io(&path))?;
        let segment = Segment::empty(path, file, first)?;
        sync_dir(&self.dir)?;
        self.segments.insert(first, segment);
        self.delete_purged_segments()
    }

    fn unsynced(&self, firsts: Vec<u64>) -> Result<Unsynced, SegmentError> {
        firsts
            .into_iter()
            .filter_map(|first| self.segments.get(&first))
            .map(|s| {
                s.file
                    .try_clone()
                    .map(|f| (s.path.clone(), f))
                    .map_err(io(&s.path))
            })
            .collect::<Result<_, _>>()
            .map(Unsynced)
    }
}

fn read_record(segment: &Segment, index: u64) -> Result<Vec<u8>, SegmentError> {
    let offset = segment.offsets[(index - segment.first) as usize];
    let corrupt = |reason: String| SegmentError::Corrupt {
        path: segment.path.clone(),
        offset,
        reason,
    };
    let mut header = [0; HEADER_LEN];
    segment
        .file
        .read_exact_at(&mut header, offset)
        .map_err(io(&segment.path))?;
    let (len, crc, stored_index) = parse_header(&header);
    if stored_index != index {
        return Err(corrupt(format!(
            "holds index {stored_index}, expected {index}"
        )));
    }
    let mut payload = vec![0; len as usize];
    segment
        .file
        .read_exact_at(&mut payload, offset + HEADER_LEN as u64)
        .map_err(io(&segment.path))?;
    if record_crc(index, &payload) != crc {
        return Err(corrupt(format!("record {index} fails its checksum")));
    }
    Ok(payload)
}

fn parse_header(header: &[u8; HEADER_LEN]) -> (u32, u32, u64) {
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let mut index = [0; 8];
    index.copy_from_slice(&header[8..16]);
    (word(0), word(4), u64::from_le_bytes(index))
}

fn record_crc(index: u64, payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&index.to_le_bytes());
    crc.update(payload);
    crc.finalize()
}

/// Reads a segment's record headers. In the last segment (`is_last`), a record a crash cut
/// short or left failing its checksum ends the segment: the file is cut there. Sealed segments
/// were synced whole before the next began, so there it is corruption, as is any record out of
/// sequence.
fn load_segment(path: &Path, first: u64, is_last: bool) -> Result<Segment, SegmentError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(path))?;
    let file_len = file.metadata().map_err(io(path))?.len();
    let corrupt = |offset: u64, reason: String| SegmentError::Corrupt {
        path: path.to_owned(),
        offset,
        reason,
    };
    let mut reader = BufReader::new(&mut file);
    let mut magic = [0; MAGIC.len()];
    if reader.read_exact(&mut magic).is_err() || &magic != MAGIC {
        if is_last && file_len < MAGIC.len() as u64 {
            // Created, and the crash came before its first bytes were synced.
            drop(reader);
            return Segment::empty(path.to_owned(), file, first);
        }
        return Err(corrupt(0, "not a segment file (bad magic)".into()));
    }
    let mut offsets = Vec::new();
    let mut at = MAGIC.len() as u64;
    let mut torn = None;
    while at < file_len {
        let expected = first + offsets.len() as u64;
        let mut header = [0; HEADER_LEN];
        if file_len - at < HEADER_LEN as u64 {
            torn = Some("a record header cut short");
            break;
        }
        reader.read_exact(&mut header).map_err(io(path))?;
        let (len, crc, index) = parse_header(&header);
        let next = at + HEADER_LEN as u64 + u64::from(len);
        if next > file_len {
            torn = Some("a record cut short");
            break;
        }
        if is_last {
            // Only the last segment can hold a torn write: check every payload there.
            let mut payload = vec![0; len as usize];
            reader.read_exact(&mut payload).map_err(io(path))?;
            if record_crc(index, &payload) != crc {
                torn = Some("a record failing its checksum");
                break;
            }
        } else {
            reader
                .seek(SeekFrom::Current(i64::from(len)))
                .map_err(io(path))?;
        }
        if index != expected {
            return Err(corrupt(
                at,
                format!("holds index {index}, expected {expected}"),
            ));
        }
        offsets.push(at);
        at = next;
    }
    drop(reader);
    if let Some(reason) = torn {
        if !is_last {
            return Err(corrupt(at, format!("{reason} in a sealed segment")));
        }
        tracing::warn!(path = %path.display(), offset = at, reason, "cutting off an unfinished write at the end of the raft log");
        file.set_len(at).map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
    }
    Ok(Segment {
        path: path.to_owned(),
        file,
        first,
        offsets,
        len: at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(i: u64) -> Vec<u8> {
        vec![i as u8; (i % 7 + 1) as usize * 10]
    }

    fn append(log: &mut SegmentLog, range: std::ops::Range<u64>) {
        log.append(range.map(|i| (i, payload(i))))
            .expect("append")
            .sync()
            .expect("sync");
    }

    fn all(log: &SegmentLog) -> Vec<Vec<u8>> {
        log.read(0, u64::MAX).expect("read")
    }

    /// Flips every bit of byte `at` of the file at `path`.
    fn damage(path: &Path, at: usize) {
        let mut bytes = std::fs::read(path).expect("read file");
        bytes[at] ^= 0xff;
        std::fs::write(path, &bytes).expect("write file");
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        assert_eq!(log.end(), None);
        append(&mut log, 1..50);
        assert_eq!(
            log.read(10, 13).expect("read"),
            vec![payload(10), payload(11), payload(12)]
        );
        drop(log);
        let log = SegmentLog::open(dir.path(), None).expect("reopen");
        assert_eq!(log.end(), Some(50));
        assert_eq!(all(&log), (1..50).map(payload).collect::<Vec<_>>());
    }

    #[test]
    fn appends_must_continue_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        append(&mut log, 5..8);
        assert!(matches!(
            log.append([(9, payload(9))]),
            Err(SegmentError::NotContiguous {
                expected: 8,
                got: 9
            })
        ));
        assert!(log.append([(7, payload(7))]).is_err());
        // Once everything is purged, the log may continue anywhere after the purge point
        // (after a snapshot was installed).
        log.purge(7).expect("purge");
        append(&mut log, 100..102);
        assert_eq!(all(&log), vec![payload(100), payload(101)]);
        let log = SegmentLog::open(dir.path(), Some(7)).expect("reopen");
        assert_eq!(all(&log), vec![payload(100), payload(101)]);
    }

    #[test]
    fn truncation_removes_the_tail_for_good() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        append(&mut log, 0..20);
        log.truncate(12).expect("truncate").sync().expect("sync");
        assert_eq!(log.end(), Some(12));
        append(&mut log, 12..14);
        drop(log);
        let log = SegmentLog::open(dir.path(), None).expect("reopen");
        assert_eq!(all(&log), (0..14).map(payload).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_damage_elsewhere_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        append(&mut log, 1..4);
        drop(log);
        let path = dir.path().join(segment_name(1));
        let full = std::fs::metadata(&path).expect("stat").len();
        // A crash in the middle of the last record's write.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(full - 5))
            .expect("cut");
        let mut log = SegmentLog::open(dir.path(), None).expect("reopen");
        assert_eq!(all(&log), vec![payload(1), payload(2)]);
        append(&mut log, 3..5);
        // Seal the segment: a flipped byte there is not a torn write but damage, reported
        // when the record is read.
        log.start_segment(5).expect("segment");
        append(&mut log, 5..6);
        drop(log);
        damage(&path, MAGIC.len() + HEADER_LEN + 1);
        let log = SegmentLog::open(dir.path(), None).expect("open");
        assert!(matches!(log.read(1, 2), Err(SegmentError::Corrupt { .. })));
        assert_eq!(
            log.read(2, 6).expect("read"),
            (2..6).map(payload).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_last_segment_ends_at_its_first_bad_record() {
        // Records after it can only be part of the same unsynced write (point-in-time
        // recovery, as a database's write-ahead log does).
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        append(&mut log, 1..5);
        drop(log);
        let path = dir.path().join(segment_name(1));
        let second = MAGIC.len() + HEADER_LEN + payload(1).len();
        damage(&path, second + HEADER_LEN);
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        assert_eq!(all(&log), vec![payload(1)]);
        append(&mut log, 2..3);
        assert_eq!(all(&log), vec![payload(1), payload(2)]);
    }

    #[test]
    fn purged_segments_are_deleted_once_sealed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        append(&mut log, 1..3);
        // Seal by starting segments by hand, as a full one would be.
        log.start_segment(3).expect("segment");
        append(&mut log, 3..6);
        log.start_segment(6).expect("segment");
        append(&mut log, 6..8);
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 3);
        log.purge(4).expect("purge");
        // The first segment (1..3) is gone; 3..6 still holds 5.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 2);
        assert_eq!(all(&log), vec![payload(5), payload(6), payload(7)]);
        drop(log);
        let log = SegmentLog::open(dir.path(), Some(4)).expect("reopen");
        assert_eq!(all(&log), vec![payload(5), payload(6), payload(7)]);
        assert_eq!(log.read(0, 6).expect("read"), vec![payload(5)]);
    }
}
