//! aigw's gRPC contracts.
//!
//! This crate owns the code generated from `proto/` (tonic clients and servers, prost messages)
//! and the conversions between wire messages and `aigw-types`. It must not implement any
//! service: servers live with the state they serve (shards, account manager), clients with
//! their callers.

mod convert;
mod order;

/// `aigw.shard.v1`: log ingestion and queries, served by shard-owner nodes.
pub mod shard {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("aigw.shard.v1");
}

/// `aigw.admin.v1`: gateways and their settings, served by the account-manager group.
pub mod admin {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("aigw.admin.v1");
}

/// Every aigw proto file, encoded (`google.protobuf.FileDescriptorSet`), for gRPC server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/aigw_descriptor.bin"));

/// A server stream as the gRPC service traits return it, boxed so that a local service and a
/// remote client of it have the same type.
pub type BoxStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>>;

/// `aigw.admin.v1.Gateways` as a trait object: served by an account-manager replica or called
/// remotely, interchangeably.
pub type DynGateways =
    dyn admin::gateways_server::Gateways<WatchGatewaysStream = BoxStream<admin::GatewayChanges>>;

/// `aigw.raft.v1`: the Raft transport between nodes, one service for every group they host.
pub mod raft {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("aigw.raft.v1");
}

pub use convert::{ConvertError, id_from_bytes, metadata_from_proto, metadata_to_proto};
pub use order::compare_logs;

/// gRPC metadata naming the shard group an `aigw.shard.v1` call is for (decimal group id): one
/// node serves many groups behind one service.
pub const GROUP_METADATA: &str = "aigw-group";

/// The largest `aigw.shard.v1` message either side sends or accepts: an ingest batch carries
/// the bodies of its logs (tonic's default of 4 MiB would refuse a batch with one large body).
pub const MAX_SHARD_MESSAGE_BYTES: usize = 1 << 30;

/// gRPC metadata carrying the leader's address when a replica that does not lead refuses a
/// call (`FAILED_PRECONDITION`), so the caller can go straight there.
pub const LEADER_METADATA: &str = "aigw-leader";

/// The most logs one `ListLogs` reply carries: the page size a shard clamps `per_page` to,
/// and so the deepest `page × per_page` a router merging a split gateway's sub-shards can
/// serve (each sub-shard is asked for that many).
pub const MAX_LISTED_ROWS: u32 = 10_000;
