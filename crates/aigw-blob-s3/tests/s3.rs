//! `S3BlobStore` against a real S3-compatible server (moto), one server and bucket per test.

mod moto;

use std::time::{Duration, Instant};

use aigw_blob::{BlobError, BlobStore, ByteRange, Codec, PackWriter, read_body};
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
async fn round_trips_objects_of_several_sizes_byte_for_byte() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("round-trip", "").await;
    assert_eq!(store.describe(), "s3://round-trip");
    let objects = [
        ("empty", Vec::new()),
        ("acct/gw/one-byte", b"x".to_vec()),
        ("acct/gw/log.req", json_body(4 << 10)),
        ("acct/gw/noise", noise(1 << 20, 3)),
        ("acct/gw/big-json", json_body(5 << 20)),
    ];
    for (key, object) in &objects {
        store.put(key, Bytes::from(object.clone())).await.unwrap();
    }
    for (key, object) in &objects {
        assert_eq!(store.get(key).await.unwrap(), *object, "{key}");
        // No codec in the store: the S3 object is the blob.
        assert_eq!(object_size(&store, key).await, object.len() as i64, "{key}");
    }
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
        "object `acct/nothing-here` not found in the blob store"
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
async fn get_range_returns_the_exact_bytes() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("ranges", "pre").await;
    let object = noise(3 << 20, 8);
    store
        .put("acct/pack", Bytes::from(object.clone()))
        .await
        .unwrap();
    for (offset, len) in [
        (0, 1),
        (0, 3 << 20),
        (777, 1 << 20),
        ((3 << 20) - 5, 5),
        // Empty ranges inside the object, the very end included.
        (100, 0),
        (3 << 20, 0),
    ] {
        let got = store
            .get_range("acct/pack", ByteRange::new(offset, len))
            .await
            .unwrap();
        assert_eq!(
            got,
            object[offset as usize..(offset + len) as usize],
            "{offset}+{len}"
        );
    }
}

#[tokio::test]
async fn get_range_past_the_end_is_corrupt_and_missing_objects_not_found() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("ranges-bad", "").await;
    store
        .put("acct/small", Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    for range in [
        // Starts inside, ends past the end: S3 answers with fewer bytes.
        ByteRange::new(5, 6),
        ByteRange::new(0, 11),
        // Starts at or past the end: S3 answers 416.
        ByteRange::new(10, 1),
        ByteRange::new(1_000, 10),
        // Empty, but past the end; and a range whose end overflows.
        ByteRange::new(11, 0),
        ByteRange::new(u64::MAX, 2),
    ] {
        let err = store.get_range("acct/small", range).await.unwrap_err();
        let BlobError::Corrupt { key, reason } = &err else {
            panic!("{range:?}: {err:?}");
        };
        assert_eq!(key, "acct/small");
        assert!(
            reason.contains(&range.to_string()) && reason.contains("10-byte"),
            "{range:?}: {reason}"
        );
    }
    for range in [ByteRange::new(0, 1), ByteRange::new(0, 0)] {
        let err = store.get_range("acct/missing", range).await.unwrap_err();
        assert!(
            matches!(&err, BlobError::NotFound { key } if key == "acct/missing"),
            "{range:?}: {err:?}"
        );
    }
    let err = store
        .get_range("../x", ByteRange::new(0, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::InvalidKey { .. }), "{err:?}");
}

#[tokio::test]
async fn erase_zeroes_ranges_and_keeps_everything_else() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("erase", "p").await;
    let object = noise(300_000, 12);
    store
        .put("acct/pack", Bytes::from(object.clone()))
        .await
        .unwrap();
    let ranges = vec![
        ByteRange::new(0, 100),
        ByteRange::new(150_000, 50_000),
        // Clamped to the end.
        ByteRange::new(299_000, 5_000),
        ByteRange::new(1 << 30, 10),
        ByteRange::new(u64::MAX, u64::MAX),
    ];
    store.erase("acct/pack", ranges.clone()).await.unwrap();
    let mut expected = object;
    expected[..100].fill(0);
    expected[150_000..200_000].fill(0);
    expected[299_000..].fill(0);
    let after = store.get("acct/pack").await.unwrap();
    assert_eq!(after.len(), expected.len(), "the length is kept");
    assert!(after == expected, "only the erased ranges changed");
    // Idempotent; a missing object and nothing to erase are fine and create nothing.
    store.erase("acct/pack", ranges).await.unwrap();
    assert!(store.get("acct/pack").await.unwrap() == expected);
    store
        .erase("acct/missing", vec![ByteRange::new(0, 10)])
        .await
        .unwrap();
    store.erase("acct/pack", Vec::new()).await.unwrap();
    assert!(matches!(
        store.get("acct/missing").await,
        Err(BlobError::NotFound { .. })
    ));
    let err = store.erase("a//b", Vec::new()).await.unwrap_err();
    assert!(matches!(err, BlobError::InvalidKey { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_erases_of_one_object_never_undo_each_other() {
    let Some(moto) = Moto::start() else { return };
    let store = std::sync::Arc::new(moto.store("erase-race", "").await);
    let object = vec![0xAAu8; 64 * 1024];
    store
        .put("acct/pack", Bytes::from(object.clone()))
        .await
        .unwrap();
    // Sixteen erases of disjoint ranges at once, through clones of the store.
    let tasks: Vec<_> = (0..16u64)
        .map(|i| {
            let store = S3BlobStore::clone(&store);
            tokio::spawn(async move {
                store
                    .erase("acct/pack", vec![ByteRange::new(i * 4096, 1024)])
                    .await
                    .unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let after = store.get("acct/pack").await.unwrap();
    for (i, chunk) in after.chunks(4096).enumerate() {
        assert!(chunk[..1024].iter().all(|b| *b == 0), "range {i} erased");
        assert!(chunk[1024..].iter().all(|b| *b == 0xAA), "chunk {i} kept");
    }
}

#[tokio::test]
async fn packs_read_back_and_erased_or_tampered_frames_are_corrupt() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("packs", "logs").await;
    let codec = Codec::default();
    let bodies = [
        b"{\"first\":1}".to_vec(),
        Vec::new(),
        json_body(1 << 20),
        noise(1 << 20, 99),
        json_body(500),
    ];
    let mut writer = PackWriter::new(codec);
    let ranges: Vec<ByteRange> = bodies.iter().map(|b| writer.push(b).unwrap()).collect();
    let pack = writer.finish();
    store.put("acct/gw/pack", pack.clone()).await.unwrap();
    for (range, body) in ranges.iter().zip(&bodies) {
        let back = read_body(&store, &codec, "acct/gw/pack", *range)
            .await
            .unwrap();
        assert_eq!(back, *body);
    }

    store.erase("acct/gw/pack", vec![ranges[2]]).await.unwrap();
    let err = read_body(&store, &codec, "acct/gw/pack", ranges[2])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BlobError::Corrupt { key, reason }
            if key == "acct/gw/pack" && reason.contains(&ranges[2].to_string())),
        "{err:?}"
    );
    for kept in [0, 1, 3, 4] {
        let back = read_body(&store, &codec, "acct/gw/pack", ranges[kept])
            .await
            .unwrap();
        assert_eq!(back, bodies[kept], "frame {kept} survives");
    }

    // A byte flipped inside a frame, planted behind the store's back.
    let mut tampered = pack.to_vec();
    tampered[(ranges[4].offset + ranges[4].len / 2) as usize] ^= 0x10;
    store
        .client()
        .put_object()
        .bucket(store.bucket())
        .key(store.object_key("acct/gw/tampered"))
        .body(ByteStream::from(tampered))
        .send()
        .await
        .unwrap();
    let err = read_body(&store, &codec, "acct/gw/tampered", ranges[4])
        .await
        .unwrap_err();
    assert!(matches!(&err, BlobError::Corrupt { .. }), "{err:?}");
    let err = read_body(&store, &codec, "acct/gw/none", ranges[0])
        .await
        .unwrap_err();
    assert!(matches!(&err, BlobError::NotFound { .. }), "{err:?}");
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
        store
            .get_range("k", ByteRange::new(0, 1))
            .await
            .unwrap_err(),
        store
            .erase("k", vec![ByteRange::new(0, 1)])
            .await
            .unwrap_err(),
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
