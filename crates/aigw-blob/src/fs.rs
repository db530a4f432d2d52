//! Objects as files under a local directory.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tracing::{Instrument, debug, debug_span};

use crate::{BlobError, BlobFuture, BlobStore, ByteRange, run_blocking, validate_key};

/// Numbers temporary files, with the process id, so concurrent writers never share one.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Zeros written per call when erasing cannot punch holes.
const ZERO_CHUNK: usize = 64 * 1024;

/// A [`BlobStore`] keeping one file per key under a root directory; the `/` in keys become
/// subdirectories.
///
/// Writes are atomic and durable: the object goes to a temporary file in the target directory
/// (named with a `#`, which keys cannot contain), is fsynced, renamed over the target, and the
/// directory is fsynced; new directories are fsynced into their parents. A crash can leave
/// `#tmp#…` files behind; they are never read. Deleting removes files but keeps their
/// directories, so prefer key layouts with few distinct directories. Erasing punches holes into
/// the file (`fallocate(2)` on Linux: the blocks are freed, the length kept), or overwrites the
/// ranges with zeros where the filesystem cannot punch. All IO runs on Tokio's blocking pool.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: Arc<Path>,
    name: Arc<str>,
}

impl FsBlobStore {
    /// Opens the store at `root`, creating the directory if needed. Relative paths are made
    /// absolute against the current directory.
    pub fn open(root: PathBuf) -> Result<Self, BlobError> {
        let root = std::path::absolute(&root).unwrap_or(root);
        let name: Arc<str> = format!("fs:{}", root.display()).into();
        let unavailable = |reason: String| BlobError::Unavailable {
            store: name.to_string(),
            reason,
        };
        fs::create_dir_all(&root)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", root.display())))?;
        let meta = fs::metadata(&root)
            .map_err(|e| unavailable(format!("cannot inspect {}: {e}", root.display())))?;
        if !meta.is_dir() {
            return Err(unavailable(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        Ok(Self {
            root: root.into(),
            name,
        })
    }

    /// The directory objects are stored under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the object of a (valid) key lives.
    fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn unavailable(&self, reason: String) -> BlobError {
        BlobError::Unavailable {
            store: self.name.to_string(),
            reason,
        }
    }
}

impl BlobStore for FsBlobStore {
    fn put<'a>(&'a self, key: &'a str, object: Bytes) -> BlobFuture<'a, ()> {
        let span = debug_span!("blob_put", store = %self.name, key);
        Box::pin(
            async move {
                validate_key(key)?;
                let started = Instant::now();
                let store = self.clone();
                let owned_key = key.to_owned();
                let bytes = object.len();
                let result = run_blocking(&self.name, move || {
                    write_atomic(&store.root, &owned_key, &object, Durability::Now)
                        .map_err(|reason| store.unavailable(reason))
                })
                .await;
                match &result {
                    Ok(()) => debug!(
                        bytes,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "stored object"
                    ),
                    Err(error) => debug!(%error, "storing object failed"),
                }
                result
            }
            .instrument(span),
        )
    }

    /// Writes the batch without per-file fsyncs, on two blocking threads, then makes it durable
    /// with one filesystem sync: group commit, so a batch of many objects costs one sync.
    fn put_many<'a>(&'a self, items: Vec<(String, Bytes)>) -> BlobFuture<'a, ()> {
        let span = debug_span!("blob_put_many", store = %self.name, objects = items.len());
        Box::pin(
            async move {
                for (key, _) in &items {
                    validate_key(key)?;
                }
                let started = Instant::now();
                let half = items.len().div_ceil(2);
                let mut items = items;
                let second = items.split_off(half);
                let write = |chunk: Vec<(String, Bytes)>| {
                    let store = self.clone();
                    run_blocking(&self.name, move || {
                        for (key, object) in chunk {
                            write_atomic(&store.root, &key, &object, Durability::Deferred)
                                .map_err(|reason| store.unavailable(reason))?;
                        }
                        Ok(())
                    })
                };
                let (a, b) = futures_util::future::join(write(items), write(second)).await;
                a.and(b)?;
                let store = self.clone();
                run_blocking(&self.name, move || {
                    sync_filesystem(&store.root).map_err(|reason| store.unavailable(reason))
                })
                .await?;
                debug!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "stored objects"
                );
                Ok(())
            }
            .instrument(span),
        )
    }

    fn get<'a>(&'a self, key: &'a str) -> BlobFuture<'a, Bytes> {
        let span = debug_span!("blob_get", store = %self.name, key);
        Box::pin(
            async move {
                validate_key(key)?;
                let store = self.clone();
                let owned_key = key.to_owned();
                let result = run_blocking(&self.name, move || store.read_all(&owned_key)).await;
                match &result {
                    Ok(object) => debug!(bytes = object.len(), "read object"),
                    Err(error) => debug!(%error, "reading object failed"),
                }
                result
            }
            .instrument(span),
        )
    }

    fn get_range<'a>(&'a self, key: &'a str, range: ByteRange) -> BlobFuture<'a, Bytes> {
        let span = debug_span!(
            "blob_get_range",
            store = %self.name,
            key,
            offset = range.offset,
            len = range.len
        );
        Box::pin(
            async move {
                validate_key(key)?;
                let store = self.clone();
                let owned_key = key.to_owned();
                let result =
                    run_blocking(&self.name, move || store.read_range(&owned_key, range)).await;
                if let Err(error) = &result {
                    debug!(%error, "reading range failed");
                }
                result
            }
            .instrument(span),
        )
    }

    fn delete<'a>(&'a self, keys: &'a [String]) -> BlobFuture<'a, ()> {
        let span = debug_span!("blob_delete", store = %self.name, keys = keys.len());
        Box::pin(
            async move {
                for key in keys {
                    validate_key(key)?;
                }
                let store = self.clone();
                let paths: Vec<PathBuf> = keys.iter().map(|key| self.path_of(key)).collect();
                let result = run_blocking(&self.name, move || {
                    remove_all(&paths).map_err(|reason| store.unavailable(reason))
                })
                .await;
                match &result {
                    Ok(removed) => debug!(removed, "deleted objects"),
                    Err(error) => debug!(%error, "deleting objects failed"),
                }
                result.map(drop)
            }
            .instrument(span),
        )
    }

    fn erase<'a>(&'a self, key: &'a str, ranges: Vec<ByteRange>) -> BlobFuture<'a, ()> {
        let span = debug_span!("blob_erase", store = %self.name, key, ranges = ranges.len());
        Box::pin(
            async move {
                validate_key(key)?;
                let path = self.path_of(key);
                let store = self.clone();
                let result = run_blocking(&self.name, move || {
                    erase_file(&path, &ranges).map_err(|reason| store.unavailable(reason))
                })
                .await;
                match &result {
                    Ok(erased) => debug!(?erased, "erased ranges"),
                    Err(error) => debug!(%error, "erasing ranges failed"),
                }
                result.map(drop)
            }
            .instrument(span),
        )
    }

    fn describe(&self) -> String {
        self.name.to_string()
    }
}

impl FsBlobStore {
    /// Opens the object of `key` for reading, with its length; a missing file, or a directory,
    /// is [`BlobError::NotFound`].
    fn open_object(&self, key: &str) -> Result<(File, u64), BlobError> {
        let path = self.path_of(key);
        let not_found = || BlobError::NotFound {
            key: key.to_owned(),
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if is_missing(&e) => return Err(not_found()),
            Err(e) => return Err(self.unavailable(format!("cannot open {}: {e}", path.display()))),
        };
        let meta = file
            .metadata()
            .map_err(|e| self.unavailable(format!("cannot inspect {}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(not_found());
        }
        Ok((file, meta.len()))
    }

    fn read_all(&self, key: &str) -> Result<Bytes, BlobError> {
        let (mut file, len) = self.open_object(key)?;
        let mut object = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.read_to_end(&mut object).map_err(|e| {
            self.unavailable(format!("cannot read {}: {e}", self.path_of(key).display()))
        })?;
        Ok(object.into())
    }

    fn read_range(&self, key: &str, range: ByteRange) -> Result<Bytes, BlobError> {
        let (file, object_len) = self.open_object(key)?;
        // Checked before allocating, so a bogus range cannot ask for a huge buffer.
        range.check_within(key, object_len)?;
        let len = usize::try_from(range.len).map_err(|_| {
            self.unavailable(format!("{range} do not fit in memory on this platform"))
        })?;
        let mut out = vec![0; len];
        // The descriptor pins the inode: a concurrent put renames a new file over the path
        // without changing what is read here.
        file.read_exact_at(&mut out, range.offset).map_err(|e| {
            self.unavailable(format!(
                "cannot read {range} of {}: {e}",
                self.path_of(key).display()
            ))
        })?;
        Ok(out.into())
    }
}

/// How [`erase_file`] made the ranges unrecoverable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Erased {
    /// There was no file (or nothing of the ranges inside it).
    Nothing,
    /// Holes were punched: the blocks are freed.
    Punched,
    /// The filesystem cannot punch holes: zeros were written over the ranges.
    Zeroed,
}

/// Erases `ranges` (clamped to the file) of the file at `path`, keeping its length, then
/// fdatasyncs it. A missing file (or a directory) is [`Erased::Nothing`].
fn erase_file(path: &Path, ranges: &[ByteRange]) -> Result<Erased, String> {
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(e) if is_missing(&e) || e.kind() == io::ErrorKind::IsADirectory => {
            return Ok(Erased::Nothing);
        }
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let object_len = file
        .metadata()
        .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?
        .len();
    let mut erased = Erased::Nothing;
    for range in ranges {
        let span = range.clamp_to(object_len);
        if span.is_empty() {
            continue;
        }
        let how = if punch_hole(&file, span.start, span.end - span.start)
            .map_err(|e| format!("cannot punch {range} of {}: {e}", path.display()))?
        {
            Erased::Punched
        } else {
            write_zeros(&file, span.start, span.end - span.start)
                .map_err(|e| format!("cannot zero {range} of {}: {e}", path.display()))?;
            Erased::Zeroed
        };
        // Report the weaker method if a filesystem mixes them.
        if erased != Erased::Zeroed {
            erased = how;
        }
    }
    if erased != Erased::Nothing {
        file.sync_data()
            .map_err(|e| format!("cannot fdatasync {}: {e}", path.display()))?;
    }
    Ok(erased)
}

/// Frees `len` bytes at `offset` of `file`, keeping its size. `Ok(false)` when the filesystem
/// (or the platform) cannot punch holes, so the caller writes zeros instead.
#[cfg(target_os = "linux")]
fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "range beyond off_t");
    let offset = libc::off_t::try_from(offset).map_err(|_| too_big())?;
    let len = libc::off_t::try_from(len).map_err(|_| too_big())?;
    // SAFETY: `file` is an open descriptor for the duration of the call; fallocate touches no
    // memory of ours.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOSYS) => Ok(false),
        _ => Err(e),
    }
}

/// Off Linux there is no portable hole punching: always write zeros.
#[cfg(not(target_os = "linux"))]
fn punch_hole(_file: &File, _offset: u64, _len: u64) -> io::Result<bool> {
    Ok(false)
}

/// Overwrites `len` bytes at `offset` of `file` with zeros.
fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK.min(usize::try_from(len).unwrap_or(ZERO_CHUNK))];
    let mut done = 0u64;
    while done < len {
        // Bounded by ZERO_CHUNK, so the cast back to usize is lossless.
        let n = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// A missing file, or a missing directory on its way (a file where a directory should be).
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// When a write becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// fsync the file and its directory before returning.
    Now,
    /// Leave it to one [`sync_filesystem`] for a whole batch.
    Deferred,
}

/// Makes `data` the content of `root/key`, atomically (and durably if `durability` says so).
/// Errors are reasons naming the path that failed.
fn write_atomic(root: &Path, key: &str, data: &[u8], durability: Durability) -> Result<(), String> {
    let path = root.join(key);
    let dir = path.parent().unwrap_or(root);
    ensure_dirs(root, key)?;
    let temp = TempFile(dir.join(format!(
        "#tmp#{}.{}",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    )));
    let context = |action: &str, p: &Path| {
        let p = p.display().to_string();
        let action = action.to_owned();
        move |e: io::Error| format!("cannot {action} {p}: {e}")
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp.0)
        .map_err(context("create", &temp.0))?;
    file.write_all(data).map_err(context("write", &temp.0))?;
    if durability == Durability::Now {
        file.sync_all().map_err(context("fsync", &temp.0))?;
    }
    drop(file);
    fs::rename(&temp.0, &path).map_err(context("rename into", &path))?;
    temp.disarm();
    if durability == Durability::Now {
        sync_dir(dir).map_err(context("fsync", dir))?;
    }
    Ok(())
}

/// Make everything written on the filesystem holding `root` durable: one `syncfs(2)` instead
/// of an fsync per file and directory. Elsewhere than Linux, a full `sync(2)`.
fn sync_filesystem(root: &Path) -> Result<(), String> {
    let dir = File::open(root).map_err(|e| format!("cannot open {}: {e}", root.display()))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `dir` is an open descriptor for the duration of the call; syncfs only reads it.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            let e = io::Error::last_os_error();
            return Err(format!("cannot syncfs {}: {e}", root.display()));
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        drop(dir);
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
    }
    Ok(())
}

/// Creates the directories of `key` under `root`, each fsynced into its parent.
fn ensure_dirs(root: &Path, key: &str) -> Result<(), String> {
    let Some((dirs, _)) = key.rsplit_once('/') else {
        return Ok(());
    };
    if root.join(dirs).is_dir() {
        return Ok(());
    }
    let mut current = root.to_path_buf();
    for segment in dirs.split('/') {
        let parent = current.clone();
        current.push(segment);
        match fs::create_dir(&current) {
            Ok(()) => {
                sync_dir(&parent).map_err(|e| format!("cannot fsync {}: {e}", parent.display()))?
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", current.display())),
        }
    }
    Ok(())
}

/// Removes the files at `paths` (missing ones are fine) and fsyncs their directories. Returns
/// how many files were removed.
fn remove_all(paths: &[PathBuf]) -> Result<usize, String> {
    let mut dirs = BTreeSet::new();
    let mut removed = 0;
    for path in paths {
        match fs::remove_file(path) {
            Ok(()) => {
                removed += 1;
                if let Some(dir) = path.parent() {
                    dirs.insert(dir);
                }
            }
            // A directory is not a body: nothing stored under that key.
            Err(e) if is_missing(&e) || e.kind() == io::ErrorKind::IsADirectory => {}
            Err(e) => return Err(format!("cannot delete {}: {e}", path.display())),
        }
    }
    for dir in dirs {
        sync_dir(dir).map_err(|e| format!("cannot fsync {}: {e}", dir.display()))?;
    }
    Ok(removed)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A temporary file removed on drop unless it was renamed into place.
struct TempFile(PathBuf);

impl TempFile {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::{json_body, noise};

    fn store() -> (tempfile::TempDir, FsBlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path().join("blobs")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn round_trips_objects_of_every_size_byte_for_byte() {
        let (_dir, store) = store();
        let objects = [
            ("empty", Vec::new()),
            ("a/small", b"{\"ok\":true}".to_vec()),
            ("a/b/c/noise", noise(5 << 20, 11)),
            ("a/b/json", json_body(5 << 20)),
        ];
        for (key, object) in &objects {
            store.put(key, Bytes::from(object.clone())).await.unwrap();
        }
        for (key, object) in &objects {
            assert_eq!(store.get(key).await.unwrap(), *object, "{key}");
            // No codec any more: the file is the object.
            assert_eq!(fs::read(store.root().join(key)).unwrap(), *object, "{key}");
        }
        let leftovers: Vec<_> = fs::read_dir(store.root().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with('#'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn overwrite_replaces_the_body() {
        let (_dir, store) = store();
        store
            .put("k/v", Bytes::from_static(b"first"))
            .await
            .unwrap();
        store
            .put("k/v", Bytes::from_static(b"second"))
            .await
            .unwrap();
        assert_eq!(store.get("k/v").await.unwrap(), "second");
    }

    #[tokio::test]
    async fn delete_is_idempotent() {
        let (_dir, store) = store();
        store.put("x/1", Bytes::from_static(b"one")).await.unwrap();
        store.put("x/2", Bytes::from_static(b"two")).await.unwrap();
        let keys = [
            "x/1".to_owned(),
            "x/missing".to_owned(),
            "nodir/k".to_owned(),
        ];
        store.delete(&keys).await.unwrap();
        store.delete(&keys).await.unwrap();
        store.delete(&[]).await.unwrap();
        // A key naming a directory has no body.
        store.delete(&["x".to_owned()]).await.unwrap();
        assert!(matches!(
            store.get("x/1").await,
            Err(BlobError::NotFound { .. })
        ));
        assert_eq!(store.get("x/2").await.unwrap(), "two");
    }

    #[tokio::test]
    async fn missing_bodies_are_not_found() {
        let (_dir, store) = store();
        store
            .put("dir/file", Bytes::from_static(b"x"))
            .await
            .unwrap();
        for key in ["nothing", "dir", "dir/other", "dir/file/below"] {
            let err = store.get(key).await.unwrap_err();
            assert!(
                matches!(&err, BlobError::NotFound { key: k } if k == key),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!("object `{key}` not found in the blob store")
            );
        }
    }

    #[tokio::test]
    async fn get_range_returns_the_exact_bytes() {
        let (_dir, store) = store();
        let object = noise(3 << 20, 5);
        store
            .put("p/pack", Bytes::from(object.clone()))
            .await
            .unwrap();
        for (offset, len) in [(0, 1), (0, 3 << 20), (12_345, 1 << 20), ((3 << 20) - 7, 7)] {
            let got = store
                .get_range("p/pack", ByteRange::new(offset, len))
                .await
                .unwrap();
            let (start, end) = (offset as usize, (offset + len) as usize);
            assert_eq!(got, object[start..end], "{offset}+{len}");
        }
        // An empty range at the very end is inside the object.
        let empty = store
            .get_range("p/pack", ByteRange::new(3 << 20, 0))
            .await
            .unwrap();
        assert!(empty.is_empty());
    }

    #[tokio::test]
    async fn get_range_past_the_end_is_corrupt_and_missing_objects_not_found() {
        let (_dir, store) = store();
        store
            .put("p/small", Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        for range in [
            ByteRange::new(5, 6),
            ByteRange::new(10, 1),
            ByteRange::new(11, 0),
            ByteRange::new(u64::MAX, 2),
        ] {
            let err = store.get_range("p/small", range).await.unwrap_err();
            let BlobError::Corrupt { key, reason } = &err else {
                panic!("{range:?}: {err:?}");
            };
            assert_eq!(key, "p/small");
            assert!(
                reason.contains(&range.to_string()) && reason.contains("10-byte"),
                "{reason}"
            );
        }
        for key in ["p/missing", "nodir/x", "p", "p/small/below"] {
            let err = store
                .get_range(key, ByteRange::new(0, 1))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, BlobError::NotFound { key: k } if k == key),
                "{key}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn erase_zeroes_ranges_and_keeps_everything_else() {
        let (_dir, store) = store();
        let object = noise(200_000, 9);
        store
            .put("p/pack", Bytes::from(object.clone()))
            .await
            .unwrap();
        let ranges = vec![
            ByteRange::new(10, 90),
            ByteRange::new(50_000, 70_000),
            // Clamped to the end of the object.
            ByteRange::new(199_990, 1_000),
            ByteRange::new(500_000, 10),
            ByteRange::new(u64::MAX, u64::MAX),
            ByteRange::new(3, 0),
        ];
        store.erase("p/pack", ranges.clone()).await.unwrap();
        let mut expected = object.clone();
        expected[10..100].fill(0);
        expected[50_000..120_000].fill(0);
        expected[199_990..].fill(0);
        let after = store.get("p/pack").await.unwrap();
        assert_eq!(after.len(), object.len(), "the length is kept");
        assert!(after == expected, "only the erased ranges changed");
        assert_eq!(
            store
                .get_range("p/pack", ByteRange::new(100, 10))
                .await
                .unwrap(),
            object[100..110]
        );
        // Erasing again, a missing object, or a directory is fine.
        store.erase("p/pack", ranges).await.unwrap();
        assert!(store.get("p/pack").await.unwrap() == expected);
        store
            .erase("p/missing", vec![ByteRange::new(0, 10)])
            .await
            .unwrap();
        store
            .erase("nodir/x", vec![ByteRange::new(0, 10)])
            .await
            .unwrap();
        store.erase("p", vec![ByteRange::new(0, 10)]).await.unwrap();
        store.erase("p/pack", Vec::new()).await.unwrap();
        assert!(matches!(
            store.get("p/missing").await,
            Err(BlobError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn erasing_a_large_range_frees_blocks_where_holes_can_be_punched() {
        use std::os::unix::fs::MetadataExt;

        let (_dir, store) = store();
        let object = noise(8 << 20, 13);
        store
            .put("p/big", Bytes::from(object.clone()))
            .await
            .unwrap();
        let path = store.root().join("p/big");
        let before = fs::metadata(&path).unwrap().blocks();
        // Deliberately unaligned, so partial blocks at both ends are zeroed, not freed.
        store
            .erase("p/big", vec![ByteRange::new(1_000_001, 6 << 20)])
            .await
            .unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 8 << 20);
        let mut expected = object;
        expected[1_000_001..1_000_001 + (6 << 20)].fill(0);
        assert!(fs::read(&path).unwrap() == expected);

        // Probe inside the erased range, where punching again changes nothing.
        let probe = OpenOptions::new().write(true).open(&path).unwrap();
        if punch_hole(&probe, 2 << 20, 4096).unwrap() {
            // 512-byte units; 6 MiB punched out of 8 MiB leaves well under half.
            assert!(
                meta.blocks() * 2 < before,
                "blocks {before} -> {} after punching",
                meta.blocks()
            );
        } else {
            eprintln!(
                "{}: this filesystem cannot punch holes; erase wrote zeros",
                store.root().display()
            );
        }
    }

    #[tokio::test]
    async fn packs_read_back_and_erased_or_tampered_frames_are_corrupt() {
        let (_dir, store) = store();
        let codec = crate::Codec::default();
        let bodies = [
            b"{\"a\":1}".to_vec(),
            Vec::new(),
            json_body(1 << 20),
            noise(1 << 20, 21),
            b"last".to_vec(),
        ];
        let mut writer = crate::PackWriter::new(codec);
        let ranges: Vec<ByteRange> = bodies.iter().map(|b| writer.push(b).unwrap()).collect();
        store.put("acct/gw/pack", writer.finish()).await.unwrap();
        for (range, body) in ranges.iter().zip(&bodies) {
            let back = crate::read_body(&store, &codec, "acct/gw/pack", *range)
                .await
                .unwrap();
            assert_eq!(back, *body);
        }

        store
            .erase("acct/gw/pack", vec![ranges[2], ranges[4]])
            .await
            .unwrap();
        for erased in [ranges[2], ranges[4]] {
            let err = crate::read_body(&store, &codec, "acct/gw/pack", erased)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, BlobError::Corrupt { key, reason }
                    if key == "acct/gw/pack" && reason.contains(&erased.to_string())),
                "{err:?}"
            );
        }
        for kept in [0, 1, 3] {
            let back = crate::read_body(&store, &codec, "acct/gw/pack", ranges[kept])
                .await
                .unwrap();
            assert_eq!(back, bodies[kept], "frame {kept} survives");
        }

        // A byte flipped on disk inside a frame.
        let path = store.root().join("acct/gw/pack");
        let mut raw = fs::read(&path).unwrap();
        raw[(ranges[3].offset + ranges[3].len / 2) as usize] ^= 0x01;
        fs::write(&path, raw).unwrap();
        let err = crate::read_body(&store, &codec, "acct/gw/pack", ranges[3])
            .await
            .unwrap_err();
        assert!(matches!(&err, BlobError::Corrupt { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn invalid_keys_are_refused_by_every_operation() {
        let (_dir, store) = store();
        for key in ["../escape", "/etc/passwd", "a/../../b", "", "sp ace"] {
            let put = store.put(key, Bytes::from_static(b"x")).await;
            assert!(
                matches!(put, Err(BlobError::InvalidKey { .. })),
                "{key}: {put:?}"
            );
            let get = store.get(key).await;
            assert!(
                matches!(get, Err(BlobError::InvalidKey { .. })),
                "{key}: {get:?}"
            );
            let range = store.get_range(key, ByteRange::new(0, 1)).await;
            assert!(
                matches!(range, Err(BlobError::InvalidKey { .. })),
                "{key}: {range:?}"
            );
            let erase = store.erase(key, vec![ByteRange::new(0, 1)]).await;
            assert!(
                matches!(erase, Err(BlobError::InvalidKey { .. })),
                "{key}: {erase:?}"
            );
            let del = store.delete(&["ok".to_owned(), key.to_owned()]).await;
            assert!(
                matches!(del, Err(BlobError::InvalidKey { .. })),
                "{key}: {del:?}"
            );
        }
        assert!(!store.root().parent().unwrap().join("escape").exists());
    }

    #[tokio::test]
    async fn io_failures_are_unavailable_and_name_the_path() {
        let (_dir, store) = store();
        store.put("file", Bytes::from_static(b"x")).await.unwrap();
        // `file` is not a directory, so nothing can be stored below it.
        let err = store
            .put("file/below", Bytes::from_static(b"y"))
            .await
            .unwrap_err();
        let BlobError::Unavailable {
            store: name,
            reason,
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(*name, store.describe());
        assert!(reason.contains("file"), "{reason}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_puts_all_land() {
        let (_dir, store) = store();
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for i in 0..64 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                // Half the writers race on one key, the rest write their own keys in new dirs.
                let key = if i % 2 == 0 {
                    "shared/key".to_owned()
                } else {
                    format!("d{i}/k")
                };
                let body = Bytes::from(format!("body {i}"));
                store.put(&key, body).await.unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        for i in (1..64).step_by(2) {
            assert_eq!(
                store.get(&format!("d{i}/k")).await.unwrap(),
                format!("body {i}")
            );
        }
        let shared = store.get("shared/key").await.unwrap();
        assert!(shared.starts_with(b"body "), "{shared:?}");
        let leftovers = fs::read_dir(store.root().join("shared")).unwrap().count();
        assert_eq!(leftovers, 1);
    }

    #[test]
    fn describe_names_the_absolute_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(store.describe(), format!("fs:{}", dir.path().display()));
    }

    #[test]
    fn open_refuses_a_file_as_root() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let err = FsBlobStore::open(file).unwrap_err();
        assert!(matches!(err, BlobError::Unavailable { .. }), "{err:?}");
    }
}
