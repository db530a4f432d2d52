//! The Raft transport between processes: one tonic service (`aigw.raft.v1.RaftService`)
//! carrying the messages of every group, each tagged with its group id, and one lazily
//! connected channel per peer address shared by every group that talks to that peer.
//!
//! Payloads are postcard-encoded openraft messages (see `codec`). Errors: a Raft-level error of
//! the receiving group travels back as a typed payload (`RaftReply.raft_error`) and surfaces
//! as `RPCError::RemoteError`; transport failures are gRPC statuses, mapped to `Unreachable`
//! (connection failed, peer does not run the group yet: openraft backs off), `Timeout`, or
//! `Network` (retried at once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aigw_proto::raft::raft_reply::Outcome;
use aigw_proto::raft::raft_service_client::RaftServiceClient;
use aigw_proto::raft::raft_service_server::{RaftService, RaftServiceServer};
use aigw_proto::raft::{RaftReply, RaftRequest};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, Raft, RaftNetwork, RaftNetworkFactory};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use super::{GroupRegistry, Transport};
use crate::codec;
use crate::types::{GroupId, NodeId, TypeConfig};

/// Settings of the gRPC Raft transport, both ends.
#[derive(Clone, Debug)]
pub struct GrpcConfig {
    /// How long to wait for a TCP connection to a peer.
    pub connect_timeout: Duration,
    /// The largest message sent or accepted (an append-entries batch, a snapshot chunk).
    pub max_message_bytes: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            max_message_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The gRPC client side of a node: one lazily connected channel per peer address, shared by
/// every group. Cheap to clone.
#[derive(Clone)]
pub struct GrpcTransport {
    node: NodeId,
    config: GrpcConfig,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl GrpcTransport {
    /// The transport of node `node`.
    pub fn new(node: NodeId, config: GrpcConfig) -> Self {
        Self {
            node,
            config,
            channels: Arc::default(),
        }
    }

    /// The channel to `addr` (`host:port`, or a URI), created on first use; connecting happens
    /// on the first request and again after failures.
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let channel = Endpoint::from_shared(uri)?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

impl Transport for GrpcTransport {
    type Network = GrpcNetworkFactory;

    fn network(&self, group: GroupId) -> GrpcNetworkFactory {
        GrpcNetworkFactory {
            group,
            transport: self.clone(),
        }
    }
}

/// openraft's network factory for one group over gRPC.
pub struct GrpcNetworkFactory {
    group: GroupId,
    transport: GrpcTransport,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = GrpcNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcNetwork {
        let max = self.transport.config.max_message_bytes;
        let client = self
            .transport
            .channel(&node.addr)
            .map(|channel| {
                RaftServiceClient::new(channel)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max)
            })
            .map_err(|e| format!("bad raft address {:?} of node {target}: {e}", node.addr));
        GrpcNetwork {
            group: self.group,
            max_message_bytes: max,
            node: self.transport.node,
            target,
            target_node: node.clone(),
            client,
        }
    }
}

/// The connection of one group to one peer replica.
pub struct GrpcNetwork {
    group: GroupId,
    max_message_bytes: usize,
    node: NodeId,
    target: NodeId,
    target_node: BasicNode,
    client: Result<RaftServiceClient<Channel>, String>,
}

/// A failure to address the peer at all (its address does not parse).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadAddress(String);

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// Room reserved for the gRPC envelope around a payload (group id, framing).
const ENVELOPE_BYTES: usize = 1024;

fn encoding_failed<E: std::error::Error>(
    e: codec::CodecError,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    RPCError::Network(NetworkError::new(&e))
}

impl GrpcNetwork {
    /// Send one encoded request of kind `kind` and decode the reply.
    async fn call<Resp, E>(
        &mut self,
        kind: RPCTypes,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = self
            .client
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&BadAddress(e))))?;
        let mut request = Request::new(RaftRequest {
            group_id: self.group,
            payload: payload.into(),
        });
        let ttl = option.hard_ttl();
        request.set_timeout(ttl);
        let call = async {
            match kind {
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
                _ => client.append_entries(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, call).await {
            Err(_elapsed) => {
                return Err(RPCError::Timeout(Timeout {
                    action: kind,
                    id: self.node,
                    target: self.target,
                    timeout: ttl,
                }));
            }
            Ok(Err(status)) => return Err(self.status_error(kind, ttl, status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let network = |e: codec::CodecError| RPCError::Network(NetworkError::new(&e));
        match reply.outcome {
            Some(Outcome::Response(bytes)) => codec::decode(&bytes).map_err(network),
            Some(Outcome::RaftError(bytes)) => {
                let error: RaftError<NodeId, E> = codec::decode(&bytes).map_err(network)?;
                Err(RPCError::RemoteError(RemoteError::new_with_node(
                    self.target,
                    self.target_node.clone(),
                    error,
                )))
            }
            None => Err(RPCError::Network(NetworkError::new(&Status::internal(
                "raft reply without outcome",
            )))),
        }
    }

    fn status_error<E: std::error::Error>(
        &self,
        kind: RPCTypes,
        ttl: Duration,
        status: Status,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        tracing::debug!(code = ?status.code(), message = status.message(), "raft rpc failed");
        match status.code() {
            // Connection refused or lost (tonic reports a broken HTTP/2 connection as UNKNOWN),
            // or the peer does not run this group (yet): back off.
            Code::Unavailable | Code::NotFound | Code::Unknown => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            Code::DeadlineExceeded => RPCError::Timeout(Timeout {
                action: kind,
                id: self.node,
                target: self.target,
                timeout: ttl,
            }),
            _ => RPCError::Network(NetworkError::new(&status)),
        }
    }

    fn span(&self, rpc: &'static str) -> tracing::Span {
        tracing::debug_span!("raft_rpc", rpc, group = self.group, target = self.target)
    }
}

impl RaftNetwork<TypeConfig> for GrpcNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let span = self.span("append_entries");
        let payload = codec::encode(&rpc).map_err(encoding_failed)?;
        // Leave room for the envelope; openraft retries with fewer entries per message.
        let limit = self.max_message_bytes.saturating_sub(ENVELOPE_BYTES).max(1);
        if payload.len() > limit && rpc.entries.len() > 1 {
            let entries = rpc.entries.len() as u64;
            let fitting = (entries * limit as u64 / payload.len() as u64).clamp(1, entries - 1);
            tracing::debug!(parent: &span, bytes = payload.len(), entries, fitting, "append-entries message too large");
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fitting),
            ));
        }
        self.call(RPCTypes::AppendEntries, payload, &option)
            .instrument(span)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let span = self.span("install_snapshot");
        self.call(
            RPCTypes::InstallSnapshot,
            codec::encode(&rpc).map_err(encoding_failed)?,
            &option,
        )
        .instrument(span)
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        let span = self.span("vote");
        self.call(
            RPCTypes::Vote,
            codec::encode(&rpc).map_err(encoding_failed)?,
            &option,
        )
        .instrument(span)
        .await
    }

    /// Retries to an unreachable peer: 100 ms, doubling to 2 s. Without a backoff every group
    /// retried each heartbeat — a node cut off from its peers logged a hundred replication
    /// errors a second — and a healed peer is still found within 2 s.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::successors(
            Some(Duration::from_millis(100)),
            |d| Some((*d * 2).min(Duration::from_secs(2))),
        ))
    }
}

/// The gRPC server side: routes each incoming Raft message to the group it names in the
/// node's [`GroupRegistry`].
#[derive(Clone)]
pub struct RaftServiceImpl {
    registry: GroupRegistry,
}

impl RaftServiceImpl {
    /// A service delivering into `registry`.
    pub fn new(registry: GroupRegistry) -> Self {
        Self { registry }
    }

    /// The tonic service, accepting messages up to `config.max_message_bytes`; add it to a
    /// `tonic::transport::Server` next to the node's other services.
    pub fn into_server(self, config: &GrpcConfig) -> RaftServiceServer<Self> {
        RaftServiceServer::new(self)
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes)
    }

    fn raft(&self, group: GroupId) -> Result<Raft<TypeConfig>, Status> {
        self.registry
            .get(group)
            .ok_or_else(|| Status::not_found(format!("raft group {group} is not running here")))
    }
}

fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    codec::decode(payload).map_err(|e| Status::invalid_argument(format!("raft payload: {e}")))
}

fn reply<T: Serialize, E: Serialize + std::error::Error>(
    result: Result<T, RaftError<NodeId, E>>,
) -> Result<Response<RaftReply>, Status> {
    let outcome = match result {
        Ok(response) => Outcome::Response(encode_reply(&response)?.into()),
        Err(error) => {
            tracing::debug!(%error, "raft rpc answered with an error");
            Outcome::RaftError(encode_reply(&error)?.into())
        }
    };
    Ok(Response::new(RaftReply {
        outcome: Some(outcome),
    }))
}

fn encode_reply<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    codec::encode(value).map_err(|e| Status::internal(format!("raft reply: {e}")))
}

impl RaftServiceImpl {
    /// Decode one incoming RPC for its group, run it on that group's `Raft`, encode the reply;
    /// in a span naming the RPC and the group.
    async fn serve<Req, Resp, E, F, Fut>(
        &self,
        rpc: &'static str,
        request: Request<RaftRequest>,
        call: F,
    ) -> Result<Response<RaftReply>, Status>
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        E: Serialize + std::error::Error,
        F: FnOnce(Raft<TypeConfig>, Req) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, RaftError<NodeId, E>>>,
    {
        let RaftRequest { group_id, payload } = request.into_inner();
        async move {
            let raft = self.raft(group_id)?;
            let rpc: Req = decode_payload(&payload)?;
            reply(call(raft, rpc).await)
        }
        .instrument(tracing::debug_span!("raft_rpc_in", rpc, group = group_id))
        .await
    }
}

#[tonic::async_trait]
impl RaftService for RaftServiceImpl {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.serve("append_entries", request, |raft, rpc: AppendEntriesRequest<TypeConfig>| async move {
            raft.append_entries(rpc).await
        })
        .await
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.serve(
            "vote",
            request,
            |raft, rpc: VoteRequest<NodeId>| async move { raft.vote(rpc).await },
        )
        .await
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.serve(
            "install_snapshot",
            request,
            |raft, rpc: InstallSnapshotRequest<TypeConfig>| async move {
                raft.install_snapshot(rpc).await
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    use super::*;
    use crate::types::Command;

    async fn network_to(addr: &str, config: GrpcConfig) -> GrpcNetwork {
        let transport = GrpcTransport::new(1, config);
        transport
            .network(7)
            .new_client(2, &BasicNode::new(addr))
            .await
    }

    fn option() -> RPCOption {
        RPCOption::new(Duration::from_secs(5))
    }

    #[tokio::test]
    async fn oversized_append_entries_asks_for_fewer_entries() {
        let config = GrpcConfig {
            max_message_bytes: ENVELOPE_BYTES + 2048,
            ..GrpcConfig::default()
        };
        // Never contacted: the size check comes first.
        let mut network = network_to("127.0.0.1:9", config).await;
        let entries = (1..=10)
            .map(|index| Entry::<TypeConfig> {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(Command(vec![7; 1000])),
            })
            .collect();
        let rpc = AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries,
        };
        match network.append_entries(rpc, option()).await {
            Err(RPCError::PayloadTooLarge(e)) => {
                assert!(e.to_string().contains("entries:2"), "{e}")
            }
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let mut network = network_to(&addr, GrpcConfig::default()).await;
        let rpc = VoteRequest::new(Vote::new(2, 1), None);
        match network.vote(rpc, option()).await {
            Err(RPCError::Unreachable(_)) => {}
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_group_not_running_here_is_not_found() {
        let service = RaftServiceImpl::new(GroupRegistry::new());
        let request = Request::new(RaftRequest {
            group_id: 42,
            payload: Vec::new().into(),
        });
        let status = service.vote(request).await.expect_err("no group 42");
        assert_eq!(status.code(), Code::NotFound);
    }
}
