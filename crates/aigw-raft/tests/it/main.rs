//! aigw-raft against real openraft groups: the storage suite, restarts on disk, clusters on the
//! fault-injecting router (a random-fault nemesis among them) and over real gRPC, fuzzy snapshots.

mod common;

mod cluster_grpc;
mod cluster_router;
mod fuzzy_snapshot;
mod nemesis;
mod single_node;
mod storage_suite;
