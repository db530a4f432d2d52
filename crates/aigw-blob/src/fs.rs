//! Bodies as files under a local directory.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tracing::{Instrument, debug, debug_span};

use crate::{BlobError, BlobFuture, BlobStore, Codec, run_blocking, validate_key};

/// Numbers temporary files, with the process id, so concurrent writers never share one.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A [`BlobStore`] keeping one file per key under a root directory; the `/` in keys become
/// subdirectories.
///
/// Writes are atomic and durable: the stored form goes to a temporary file in the target
/// directory (named with a `#`, which keys cannot contain), is fsynced, renamed over the target,
/// and the directory is fsynced; new directories are fsynced into their parents. A crash can
/// leave `#tmp#…` files behind; they are never read. Deleting removes files but keeps their
/// directories, so prefer key layouts with few distinct directories (e.g.
/// `{account}/{gateway}/{log_id}.req`). All IO runs on Tokio's blocking pool.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: Arc<Path>,
    name: Arc<str>,
    codec: Codec,
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
            codec: Codec::default(),
        })
    }

    /// Uses `codec` (e.g. another decode limit) instead of the default.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The directory bodies are stored under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the body of a (valid) key lives.
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
    fn put<'a>(&'a self, key: &'a str, body: Bytes) -> BlobFuture<'a, ()> {
        let span = debug_span!("blob_put", store = %self.name, key);
        Box::pin(
            async move {
                validate_key(key)?;
                let started = Instant::now();
                let store = self.clone();
                let owned_key = key.to_owned();
                let body_len = body.len();
                let result = run_blocking(&self.name, move || {
                    let stored = store.codec.encode(&body)?;
                    write_atomic(&store.root, &owned_key, &stored, Durability::Now)
                        .map_err(|reason| store.unavailable(reason))?;
                    Ok(stored.len())
                })
                .await;
                match &result {
                    Ok(stored_bytes) => debug!(
                        bytes = body_len,
                        stored_bytes,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "stored body"
                    ),
                    Err(error) => debug!(%error, "storing body failed"),
                }
                result.map(drop)
            }
            .instrument(span),
        )
    }

    /// Writes the batch without per-file fsyncs, on two blocking threads, then makes it durable
    /// with one filesystem sync: group commit, so a batch of hundreds of bodies costs one sync.
    fn put_many<'a>(&'a self, items: Vec<(String, Bytes)>) -> BlobFuture<'a, ()> {
        let span = debug_span!("blob_put_many", store = %self.name, bodies = items.len());
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
                        for (key, body) in chunk {
                            let stored = store.codec.encode(&body)?;
                            write_atomic(&store.root, &key, &stored, Durability::Deferred)
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
                    "stored bodies"
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
                let result = run_blocking(&self.name, move || {
                    let stored = store.read_stored(&owned_key)?;
                    store.codec.decode(&owned_key, &stored)
                })
                .await;
                match &result {
                    Ok(body) => debug!(bytes = body.len(), "read body"),
                    Err(error) => debug!(%error, "reading body failed"),
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
                    Ok(removed) => debug!(removed, "deleted bodies"),
                    Err(error) => debug!(%error, "deleting bodies failed"),
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
    /// Reads the stored form of `key`, refusing files larger than any encoded body.
    fn read_stored(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        let path = self.path_of(key);
        let not_found = || BlobError::NotFound {
            key: key.to_owned(),
        };
        let mut file = match File::open(&path) {
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
        let max = self.codec.max_stored_bytes();
        if meta.len() > max as u64 {
            return Err(BlobError::Corrupt {
                key: key.to_owned(),
                reason: format!(
                    "the stored object is {} bytes, more than any encoded body ({max})",
                    meta.len()
                ),
            });
        }
        let mut stored = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut stored)
            .map_err(|e| self.unavailable(format!("cannot read {}: {e}", path.display())))?;
        Ok(stored)
    }
}

/// A missing file, or a missing directory on its way (a file where a directory should be).
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Makes `data` the content of `root/key`, atomically and durably. Errors are reasons naming the
/// path that failed.
/// When a write becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// fsync the file and its directory before returning.
    Now,
    /// Leave it to one [`sync_filesystem`] for a whole batch.
    Deferred,
}

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
    async fn round_trips_bodies_of_every_size() {
        let (_dir, store) = store();
        let bodies = [
            ("empty", Vec::new()),
            ("a/small", b"{\"ok\":true}".to_vec()),
            ("a/b/c/noise", noise(5 << 20, 11)),
            ("a/b/json", json_body(5 << 20)),
        ];
        for (key, body) in &bodies {
            store.put(key, Bytes::from(body.clone())).await.unwrap();
        }
        for (key, body) in &bodies {
            assert_eq!(store.get(key).await.unwrap(), *body, "{key}");
        }
        let on_disk = fs::metadata(store.root().join("a/b/json")).unwrap().len();
        assert!(
            on_disk * 20 < 5 << 20,
            "repetitive JSON stored in {on_disk} bytes"
        );
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
                format!("body `{key}` not found in the blob store")
            );
        }
    }

    #[tokio::test]
    async fn garbage_on_disk_is_corrupt() {
        let (_dir, store) = store();
        store
            .put("acct/log1", Bytes::from(json_body(4096)))
            .await
            .unwrap();
        fs::write(store.root().join("acct/log1"), b"not a body at all").unwrap();
        let err = store.get("acct/log1").await.unwrap_err();
        assert!(
            matches!(&err, BlobError::Corrupt { key, .. } if key == "acct/log1"),
            "{err:?}"
        );
        assert!(err.to_string().contains("`acct/log1`"), "{err}");

        // A real frame, cut short.
        let stored = crate::encode(&json_body(4096)).unwrap();
        fs::write(store.root().join("acct/log2"), &stored[..stored.len() / 2]).unwrap();
        let err = store.get("acct/log2").await.unwrap_err();
        assert!(
            matches!(&err, BlobError::Corrupt { key, .. } if key == "acct/log2"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn oversized_files_are_refused_unread() {
        let (_dir, store) = store();
        let store = store.with_codec(Codec::new(1024));
        fs::write(store.root().join("big"), vec![0u8; 8192]).unwrap();
        let err = store.get("big").await.unwrap_err();
        assert!(matches!(&err, BlobError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("8192 bytes"), "{err}");
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
