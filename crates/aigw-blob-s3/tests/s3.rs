//! `S3BlobStore` against a real S3-compatible server (moto), one server and bucket per test.

mod moto;

use std::time::{Duration, Instant};

use aigw_blob::{BlobError, BlobStore};
use aigw_blob_s3::{S3BlobStore, S3Settings};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use moto::Moto;

/// Bytes that zstd cannot shrink much (a xorshift stream).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A log-like JSON body of about `len` bytes.
fn json_body(len: usize) -> Vec<u8> {
    let mut out = b"{\"messages\":[".to_vec();
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!("{{\"role\":\"user\",\"content\":\"question number {i}\"}},").as_bytes(),
        );
        i += 1;
    }
    out.extend_from_slice(b"{}]}");
    out
}

async fn object_size(store: &S3BlobStore, key: &str) -> i64 {
    store
        .client()
        .head_object()
        .bucket(store.bucket())
        .key(store.object_key(key))
        .send()
        .await
        .expect("head object")
        .content_length()
        .expect("content length")
}

#[tokio::test]
async fn round_trips_bodies_of_several_sizes() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("round-trip", "").await;
    assert_eq!(store.describe(), "s3://round-trip");
    let bodies = [
        ("empty", Vec::new()),
        ("acct/gw/one-byte", b"x".to_vec()),
        ("acct/gw/log.req", json_body(4 << 10)),
        ("acct/gw/noise", noise(1 << 20, 3)),
        ("acct/gw/big-json", json_body(5 << 20)),
    ];
    for (key, body) in &bodies {
        store.put(key, Bytes::from(body.clone())).await.unwrap();
    }
    for (key, body) in &bodies {
        assert_eq!(store.get(key).await.unwrap(), *body, "{key}");
    }
    let stored = object_size(&store, "acct/gw/big-json").await;
    assert!(
        stored * 20 < 5 << 20,
        "5 MiB of JSON stored in {stored} bytes"
    );
}

#[tokio::test]
async fn ten_mib_body() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("ten-mib", "").await;
    let body = Bytes::from(noise(10 << 20, 42));
    store.put("big/body", body.clone()).await.unwrap();
    assert_eq!(store.get("big/body").await.unwrap(), body);
}

#[tokio::test]
async fn overwrite_replaces_the_body() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("overwrite", "").await;
    store.put("k", Bytes::from_static(b"first")).await.unwrap();
    store.put("k", Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), "second");
}

#[tokio::test]
async fn delete_removes_bodies_and_ignores_missing_keys() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("delete", "p").await;
    for key in ["a", "b", "k/1500", "k/2400"] {
        store.put(key, Bytes::from(key.to_owned())).await.unwrap();
    }
    store
        .delete(&["a".to_owned(), "missing".to_owned()])
        .await
        .unwrap();
    assert!(matches!(
        store.get("a").await,
        Err(BlobError::NotFound { .. })
    ));
    assert_eq!(store.get("b").await.unwrap(), "b");
    // Deleting again, and nothing at all, is fine.
    store.delete(&["a".to_owned()]).await.unwrap();
    store.delete(&[]).await.unwrap();

    // 2,500 keys take three DeleteObjects requests; the two live ones sit in the later ones.
    let keys: Vec<String> = (0..2500).map(|i| format!("k/{i}")).collect();
    store.delete(&keys).await.unwrap();
    for key in ["k/1500", "k/2400"] {
        assert!(
            matches!(store.get(key).await, Err(BlobError::NotFound { .. })),
            "{key}"
        );
    }
    assert_eq!(store.get("b").await.unwrap(), "b");

    let err = store
        .delete(&["b".to_owned(), "../x".to_owned()])
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::InvalidKey { .. }), "{err:?}");
    assert_eq!(
        store.get("b").await.unwrap(),
        "b",
        "nothing deleted on an invalid key"
    );
}

#[tokio::test]
async fn missing_key_is_not_found() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("missing", "").await;
    let err = store.get("acct/nothing-here").await.unwrap_err();
    assert!(
        matches!(&err, BlobError::NotFound { key } if key == "acct/nothing-here"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "body `acct/nothing-here` not found in the blob store"
    );
}

#[tokio::test]
async fn missing_bucket_is_unavailable_not_not_found() {
    let Some(moto) = Moto::start() else { return };
    let store = S3BlobStore::new(moto.settings("never-created", ""))
        .await
        .unwrap();
    let err = store.get("k").await.unwrap_err();
    let BlobError::Unavailable { reason, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(reason.contains("NoSuchBucket"), "{reason}");
}

#[tokio::test]
async fn corrupt_object_is_corrupt() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("corrupt", "pre").await;
    store
        .client()
        .put_object()
        .bucket(store.bucket())
        .key(store.object_key("acct/log1"))
        .body(ByteStream::from_static(b"{\"plain\":\"json, not a body\"}"))
        .send()
        .await
        .unwrap();
    let err = store.get("acct/log1").await.unwrap_err();
    assert!(
        matches!(&err, BlobError::Corrupt { key, .. } if key == "acct/log1"),
        "{err:?}"
    );
    assert!(err.to_string().contains("`acct/log1`"), "{err}");

    // A real body, truncated.
    let stored = aigw_blob::encode(&json_body(10_000)).unwrap();
    store
        .client()
        .put_object()
        .bucket(store.bucket())
        .key(store.object_key("acct/log2"))
        .body(ByteStream::from(stored[..stored.len() - 10].to_vec()))
        .send()
        .await
        .unwrap();
    let err = store.get("acct/log2").await.unwrap_err();
    assert!(matches!(&err, BlobError::Corrupt { .. }), "{err:?}");
}

#[tokio::test]
async fn unreachable_endpoint_is_unavailable_within_seconds() {
    // Needs no server: nothing listens on the port.
    let endpoint = format!("http://127.0.0.1:{}", moto::free_port());
    let store = S3BlobStore::new(S3Settings {
        endpoint: Some(endpoint.clone()),
        bucket: "b".to_owned(),
        region: "us-east-1".to_owned(),
        path_style: true,
        access_key_id: Some("AKIDSHOULDNOTLEAK".to_owned()),
        secret_access_key: Some("SECRETSHOULDNOTLEAK".to_owned()),
        prefix: String::new(),
    })
    .await
    .unwrap();
    let started = Instant::now();
    let errors = [
        store.put("k", Bytes::from_static(b"x")).await.unwrap_err(),
        store.get("k").await.unwrap_err(),
        store.delete(&["k".to_owned()]).await.unwrap_err(),
        store.ensure_bucket().await.unwrap_err(),
    ];
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    for err in errors {
        let message = err.to_string();
        assert!(
            matches!(&err, BlobError::Unavailable { store, .. } if store == "s3://b"),
            "{err:?}"
        );
        assert!(
            message.contains(&format!("S3 endpoint {endpoint} unreachable")),
            "{message}"
        );
        assert!(
            message.to_lowercase().contains("connection refused"),
            "{message}"
        );
        assert!(!message.contains("SHOULDNOTLEAK"), "{message}");
    }
}

#[tokio::test]
async fn ensure_bucket_is_idempotent() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("ensure", "").await;
    store.ensure_bucket().await.unwrap();
    store.ensure_bucket().await.unwrap();
    store.put("k", Bytes::from_static(b"v")).await.unwrap();

    // Outside us-east-1 the bucket is created with a location constraint.
    let mut settings = moto.settings("ensure-eu", "");
    settings.region = "eu-west-1".to_owned();
    let store = S3BlobStore::new(settings).await.unwrap();
    store.ensure_bucket().await.unwrap();
    store.ensure_bucket().await.unwrap();
    store.put("k", Bytes::from_static(b"v")).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), "v");
}

#[tokio::test]
async fn prefix_is_applied() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("prefixed", "/logs/v1/").await;
    assert_eq!(store.describe(), "s3://prefixed/logs/v1");
    store
        .put("acct/1", Bytes::from_static(b"one"))
        .await
        .unwrap();
    store
        .put("acct/2", Bytes::from_static(b"two"))
        .await
        .unwrap();
    let listed = store
        .client()
        .list_objects_v2()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap();
    let mut keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["logs/v1/acct/1", "logs/v1/acct/2"]);

    // The same bucket without the prefix sees none of them.
    let bare = moto.store("prefixed", "").await;
    assert!(matches!(
        bare.get("acct/1").await,
        Err(BlobError::NotFound { .. })
    ));
    assert_eq!(store.get("acct/1").await.unwrap(), "one");
}

#[tokio::test]
async fn usable_as_a_shared_trait_object() {
    let Some(moto) = Moto::start() else { return };
    let store: std::sync::Arc<dyn BlobStore> = std::sync::Arc::new(moto.store("dyn", "").await);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                let key = format!("acct/{i}");
                store
                    .put(&key, Bytes::from(json_body(1000 + i)))
                    .await
                    .unwrap();
                assert_eq!(store.get(&key).await.unwrap(), json_body(1000 + i));
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}
