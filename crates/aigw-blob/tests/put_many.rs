//! Batched puts: the fs store's group commit and the trait's default, through `dyn BlobStore`;
//! and packs written through `put_many`, read back body by body.

use std::sync::Arc;

use aigw_blob::{BlobError, BlobStore, ByteRange, Codec, FsBlobStore, MemBlobStore, PackWriter};
use bytes::Bytes;

fn batch(n: usize) -> Vec<(String, Bytes)> {
    (0..n)
        .map(|i| {
            let object = format!(r#"{{"i":{i},"text":"{}"}}"#, "x".repeat(i % 300));
            (format!("acct/gw/{i:05}.pack"), Bytes::from(object))
        })
        .collect()
}

async fn check(store: Arc<dyn BlobStore>) {
    let items = batch(301);
    store.put_many(items.clone()).await.unwrap();
    for (key, object) in &items {
        assert_eq!(&store.get(key).await.unwrap(), object, "{key}");
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

    // Two packs of one batch, each body read back through its range.
    let codec = Codec::default();
    let mut written: Vec<(String, ByteRange, String)> = Vec::new();
    let mut packs = Vec::new();
    for p in 0..2 {
        let key = format!("acct/gw/packs/{p}");
        let mut writer = PackWriter::new(codec);
        for i in 0..50 {
            let body = format!(r#"{{"pack":{p},"log":{i},"pad":"{}"}}"#, "y".repeat(i * 7));
            let range = writer.push(body.as_bytes()).unwrap();
            written.push((key.clone(), range, body));
        }
        packs.push((key, writer.finish()));
    }
    store.put_many(packs).await.unwrap();
    for (key, range, body) in &written {
        let back = aigw_blob::read_body(&*store, &codec, key, *range)
            .await
            .unwrap();
        assert_eq!(back, body.as_bytes());
    }
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
