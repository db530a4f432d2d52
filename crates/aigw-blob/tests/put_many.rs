//! Batched puts: the fs store's group commit and the trait's default, through `dyn BlobStore`.

use std::sync::Arc;

use aigw_blob::{BlobError, BlobStore, FsBlobStore, MemBlobStore};
use bytes::Bytes;

fn batch(n: usize) -> Vec<(String, Bytes)> {
    (0..n)
        .map(|i| {
            let body = format!(r#"{{"i":{i},"text":"{}"}}"#, "x".repeat(i % 300));
            (format!("acct/gw/{i:05}.request"), Bytes::from(body))
        })
        .collect()
}

async fn check(store: Arc<dyn BlobStore>) {
    let items = batch(301);
    store.put_many(items.clone()).await.unwrap();
    for (key, body) in &items {
        assert_eq!(&store.get(key).await.unwrap(), body, "{key}");
    }
    // An invalid key fails the batch before anything is written.
    let mut bad = batch(3);
    for (key, _) in &mut bad {
        key.insert_str(0, "fresh/");
    }
    bad.push(("../escape".to_owned(), Bytes::from_static(b"x")));
    let err = store.put_many(bad.clone()).await.unwrap_err();
    assert!(matches!(err, BlobError::InvalidKey { .. }), "{err}");
    assert!(matches!(
        store.get(&bad[0].0).await,
        Err(BlobError::NotFound { .. })
    ));
    store.put_many(Vec::new()).await.unwrap();
}

#[tokio::test]
async fn fs_store_commits_a_batch_at_once() {
    let dir = tempfile::tempdir().unwrap();
    check(Arc::new(
        FsBlobStore::open(dir.path().to_path_buf()).unwrap(),
    ))
    .await;
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("acct/gw"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('#'))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files are left behind");
}

#[tokio::test]
async fn the_default_put_many_stores_every_body() {
    check(Arc::new(MemBlobStore::new())).await;
}
