//! `ShardService` on a real single-member Raft group: the write and read paths, and failures of
//! the blob store that must produce clear errors without taking the shard down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aigw_blob::{BlobStore, MemBlobStore};
use aigw_blob_s3::{S3BlobStore, S3Settings};
use aigw_logindex::LogIndex;
use aigw_proto::shard::shard_server::Shard;
use aigw_proto::shard::{
    BodyKind, DeleteGatewayRequest, DeleteLogsRequest, Filter, FilterOperator, FilterValue,
    GetBodyRequest, GetLogRequest, IngestEntry, IngestRequest, ListLogsRequest, LogQuery,
    UpdateLogRequest, filter_value,
};
use aigw_raft::{NodeConfig, RaftNode};
use aigw_shard::{ShardApp, ShardService};
use aigw_types::LogRecord;
use tonic::{Code, Request};
use ulid::Ulid;

struct Shard1 {
    _dir: tempfile::TempDir,
    _node: RaftNode,
    service: ShardService,
}

async fn shard(blobs: Arc<dyn BlobStore>) -> Shard1 {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let node = RaftNode::new(
        db.clone(),
        NodeConfig::new(1, "127.0.0.1:1", dir.path().join("raft-log")),
    )
    .unwrap();
    let index = LogIndex::open(db.open_tree("shard").unwrap()).unwrap();
    let members = BTreeMap::from([(1, node.basic_node())]);
    let group = node
        .start_group(7, Arc::new(ShardApp::new(index.clone())), members)
        .await
        .unwrap();
    group
        .raft()
        .wait(Some(Duration::from_secs(20)))
        .current_leader(1, "single member leads")
        .await
        .unwrap();
    Shard1 {
        _dir: dir,
        _node: node,
        service: ShardService::new(index, group, blobs),
    }
}

/// An entry created `i` ms after a fixed instant (ids order like creation times).
fn entry(i: u64, gateway: &str, model: &str, with_bodies: bool) -> IngestEntry {
    let at = 1_700_000_000_000 + i;
    let mut record = LogRecord::new(
        Ulid::from_parts(at, u128::from(i)),
        at as i64,
        "acct",
        gateway,
        "openai",
    );
    record.model = model.into();
    record.success = true;
    record.payload_collected = with_bodies;
    IngestEntry {
        record: Some((&record).into()),
        request_body: with_bodies.then(|| format!(r#"{{"model":"{model}"}}"#).into()),
        response_body: with_bodies.then(|| br#"{"ok":true}"#.to_vec().into()),
    }
}

fn query(gateway: &str, filters: Vec<Filter>) -> LogQuery {
    LogQuery {
        account_id: "acct".into(),
        gateway_id: gateway.into(),
        filters,
        ..Default::default()
    }
}

fn model_is(model: &str) -> Filter {
    Filter {
        key: "model".into(),
        operator: FilterOperator::Eq as i32,
        values: vec![FilterValue {
            kind: Some(filter_value::Kind::Text(model.into())),
        }],
    }
}

async fn ingest(service: &ShardService, entries: Vec<IngestEntry>) -> Result<u32, tonic::Status> {
    service
        .ingest(Request::new(IngestRequest { entries }))
        .await
        .map(|r| r.into_inner().accepted)
}

async fn list(service: &ShardService, q: LogQuery) -> (Vec<Vec<u8>>, u64) {
    let r = service
        .list_logs(Request::new(ListLogsRequest {
            query: Some(q),
            page: 1,
            per_page: 50,
            after_id: None,
        }))
        .await
        .unwrap()
        .into_inner();
    (
        r.logs.iter().map(|l| l.id.to_vec()).collect(),
        r.total_count,
    )
}

async fn body(service: &ShardService, id: &[u8], kind: BodyKind) -> Result<Vec<u8>, tonic::Status> {
    service
        .get_body(Request::new(GetBodyRequest {
            account_id: "acct".into(),
            gateway_id: "gw".into(),
            id: id.to_vec().into(),
            kind: kind as i32,
        }))
        .await
        .map(|r| r.into_inner().body.to_vec())
}

#[tokio::test]
async fn ingest_query_update_and_delete_round_trip() {
    let blobs = Arc::new(MemBlobStore::new());
    let s = shard(blobs.clone()).await;
    let entries: Vec<IngestEntry> = (0..10)
        .map(|i| entry(i, "gw", if i % 2 == 0 { "a" } else { "b" }, i < 8))
        .collect();
    let ids: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| e.record.as_ref().unwrap().id.to_vec())
        .collect();
    assert_eq!(ingest(&s.service, entries.clone()).await.unwrap(), 10);
    assert_eq!(
        ingest(&s.service, entries).await.unwrap(),
        0,
        "re-sent batches are not duplicated"
    );
    let packs = blobs.keys();
    assert_eq!(
        packs.len(),
        1,
        "one pack holds the batch's bodies; the re-sent batch's pack was discarded: {packs:?}"
    );
    assert!(packs[0].starts_with("acct/gw/") && packs[0].ends_with(".pack"));

    let (found, total) = list(&s.service, query("gw", vec![model_is("a")])).await;
    assert_eq!(total, 5);
    assert_eq!(found.len(), 5);
    assert_eq!(
        body(&s.service, &ids[0], BodyKind::Request).await.unwrap(),
        br#"{"model":"a"}"#
    );
    assert_eq!(
        body(&s.service, &ids[0], BodyKind::Response).await.unwrap(),
        br#"{"ok":true}"#
    );
    let missing = body(&s.service, &ids[9], BodyKind::Request)
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        missing.message().contains("was not stored"),
        "{}",
        missing.message()
    );

    let updated = s
        .service
        .update_log(Request::new(UpdateLogRequest {
            account_id: "acct".into(),
            gateway_id: "gw".into(),
            id: ids[1].clone().into(),
            feedback: Some(-1),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.log.unwrap().feedback, Some(-1));
    let bad = s
        .service
        .update_log(Request::new(UpdateLogRequest {
            account_id: "acct".into(),
            gateway_id: "gw".into(),
            id: ids[1].clone().into(),
            feedback: Some(3),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    let six = s
        .service
        .get_log(Request::new(GetLogRequest {
            account_id: "acct".into(),
            gateway_id: "gw".into(),
            id: ids[6].clone().into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .log
        .unwrap()
        .bodies
        .unwrap();
    let deleted = s
        .service
        .delete_logs(Request::new(DeleteLogsRequest {
            query: Some(query("gw", vec![model_is("a")])),
            limit: 2,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 2);
    assert_eq!(
        list(&s.service, query("gw", vec![model_is("a")])).await.1,
        3
    );
    // The two newest "a" logs are #8 (no payload kept) and #6 (two bodies): the pack stays for
    // the other logs, #6's frames in it are erased.
    assert_eq!(blobs.keys(), packs);
    let pack = blobs.get(&packs[0]).await.unwrap();
    let frames = six.offset as usize..(six.offset + six.request_len + six.response_len) as usize;
    assert!(pack[frames].iter().all(|b| *b == 0), "erased");
    assert_eq!(
        body(&s.service, &ids[4], BodyKind::Request).await.unwrap(),
        br#"{"model":"a"}"#,
        "the other logs' bodies are intact"
    );

    let gone = s
        .service
        .delete_gateway(Request::new(DeleteGatewayRequest {
            account_id: "acct".into(),
            gateway_id: "gw".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.deleted, 8);
    assert!(blobs.keys().is_empty());
    assert_eq!(list(&s.service, query("gw", vec![])).await.1, 0);
}

#[tokio::test]
async fn corrupt_or_missing_bodies_are_clear_errors_and_the_shard_keeps_serving() {
    let blobs = Arc::new(MemBlobStore::new());
    let s = shard(blobs.clone()).await;
    let e = entry(0, "gw", "a", true);
    let id = e.record.as_ref().unwrap().id.to_vec();
    ingest(&s.service, vec![e]).await.unwrap();
    let key = blobs.keys().pop().unwrap();
    // Flip a byte in the middle of the request frame (the pack's first frame).
    let mut pack = blobs.get(&key).await.unwrap().to_vec();
    let request_len = pack.len() / 2;
    pack[request_len / 2] ^= 0xff;
    blobs.put(&key, pack.into()).await.unwrap();
    let err = body(&s.service, &id, BodyKind::Request).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss);
    assert!(err.message().contains(&key), "{}", err.message());
    assert_eq!(
        body(&s.service, &id, BodyKind::Response).await.unwrap(),
        br#"{"ok":true}"#,
        "the other frame of the pack still reads"
    );
    blobs.put(&key, "short".into()).await.unwrap();
    let err = body(&s.service, &id, BodyKind::Response).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "a range past the end");
    blobs.delete(std::slice::from_ref(&key)).await.unwrap();
    let err = body(&s.service, &id, BodyKind::Request).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Everything else still works.
    assert_eq!(
        ingest(&s.service, vec![entry(1, "gw", "a", true)])
            .await
            .unwrap(),
        1
    );
    let err = s
        .service
        .get_log(Request::new(GetLogRequest {
            account_id: "acct".into(),
            gateway_id: "gw".into(),
            id: vec![1, 2, 3].into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn an_unreachable_object_store_fails_ingest_clearly_without_stopping_reads() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let s3 = S3BlobStore::new(S3Settings {
        endpoint: Some(format!("http://{closed}")),
        bucket: "bodies".into(),
        region: "us-east-1".into(),
        path_style: true,
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        prefix: String::new(),
    })
    .await
    .unwrap();
    let s = shard(Arc::new(s3)).await;
    let err = ingest(&s.service, vec![entry(0, "gw", "a", true)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("unreachable"), "{}", err.message());
    // No row was committed without its body, and the shard still answers.
    assert_eq!(list(&s.service, query("gw", vec![])).await.1, 0);
    assert_eq!(
        ingest(&s.service, vec![entry(1, "gw", "a", false)])
            .await
            .unwrap(),
        1
    );
    assert_eq!(list(&s.service, query("gw", vec![])).await.1, 1);
}
