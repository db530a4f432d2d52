//! Calling a Raft group on its leader: one channel per node, the leader learned from replies,
//! retries within a deadline.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use aigw_placement::GroupId;
use aigw_proto::{GROUP_METADATA, LEADER_METADATA};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use crate::{Credentials, RetryPolicy};

/// Channels to nodes and the last known leader of each group.
pub(crate) struct Caller {
    policy: RetryPolicy,
    /// Node address → channel (one HTTP/2 connection, shared by every group on the node).
    channels: Mutex<HashMap<String, Channel>>,
    /// Group → address of its last known leader.
    leaders: Mutex<HashMap<GroupId, String>>,
    /// Nodes that just timed out or refused connections → until when they are avoided. A node
    /// that hangs (frozen, cut off) would otherwise cost every call an attempt timeout.
    suspects: Mutex<HashMap<String, Instant>>,
    credentials: Credentials,
}

/// How long a node that failed to answer is tried only when no other replica is left.
const SUSPECT_FOR: Duration = Duration::from_secs(3);
/// Turns tried in search of a replica that is not suspect.
const MAX_SKIPS: usize = 8;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The leader address a refusing replica named, if any.
fn leader_hint(status: &Status) -> Option<String> {
    status
        .metadata()
        .get(LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// A lazily connecting channel to the gRPC server at `addr` (`host:port`).
pub(crate) fn endpoint(addr: &str, policy: &RetryPolicy) -> Result<Endpoint, Status> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::invalid_argument(format!("bad node address `{addr}`: {e}")))?
        .connect_timeout(policy.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

impl Caller {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            channels: Mutex::default(),
            leaders: Mutex::default(),
            suspects: Mutex::default(),
            credentials: Credentials::none(),
        }
    }

    /// Sends `credentials` with every call.
    pub(crate) fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    fn is_suspect(&self, addr: &str) -> bool {
        let mut suspects = lock(&self.suspects);
        match suspects.get(addr) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                suspects.remove(addr);
                false
            }
            None => false,
        }
    }

    /// Where the next attempt goes: the known leader unless it is suspect, else the first
    /// replica from `turn` on that is not suspect (or `turn`'s, if all are). Advances `turn`
    /// past the replicas it skipped.
    fn target(
        &self,
        group: GroupId,
        turn: &mut usize,
        replica: &impl Fn(usize) -> Result<String, Status>,
    ) -> Result<String, Status> {
        if let Some(leader) = self.known_leader(group)
            && !self.is_suspect(&leader)
        {
            return Ok(leader);
        }
        for skip in 0..MAX_SKIPS {
            let addr = replica(*turn + skip)?;
            if !self.is_suspect(&addr) {
                *turn += skip;
                return Ok(addr);
            }
        }
        replica(*turn)
    }

    /// The address the next call to `group` goes to first, if its leader is known.
    pub(crate) fn known_leader(&self, group: GroupId) -> Option<String> {
        lock(&self.leaders).get(&group).cloned()
    }

    fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut channels = lock(&self.channels);
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = endpoint(addr, &self.policy)?.connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Sends `message` to `group` with `call`: to its known leader, else to `replica(turn)`
    /// for successive turns; follows leader hints and retries retryable failures until the
    /// policy's deadline.
    pub(crate) async fn call<M, R, F, Fut>(
        &self,
        group: GroupId,
        replica: impl Fn(usize) -> Result<String, Status>,
        message: M,
        call: F,
    ) -> Result<R, Status>
    where
        M: Clone,
        F: Fn(Channel, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let span = tracing::debug_span!("group_call", group, attempts = tracing::field::Empty);
        async move {
            let deadline = Instant::now() + self.policy.deadline;
            let mut backoff = self.policy.initial_backoff;
            let mut turn = 0;
            let mut attempt = 0u32;
            let mut followed_hint = false;
            loop {
                attempt += 1;
                let addr = self.target(group, &mut turn, &replica)?;
                let mut request = Request::new(message.clone());
                request.set_timeout(self.policy.attempt_timeout);
                self.credentials.attach(&mut request);
                request.metadata_mut().insert(
                    GROUP_METADATA,
                    group
                        .to_string()
                        .parse()
                        .map_err(|_| Status::internal("group id"))?,
                );
                let error = match call(self.channel(&addr)?, request).await {
                    Ok(response) => {
                        lock(&self.leaders).insert(group, addr);
                        tracing::Span::current().record("attempts", attempt);
                        return Ok(response.into_inner());
                    }
                    Err(status) => status,
                };
                let hint = leader_hint(&error).filter(|hint| *hint != addr);
                match (error.code(), hint) {
                    // Refused by a follower that knows the leader: go there now (once in a
                    // row: replicas with stale views could otherwise bounce us around).
                    (Code::FailedPrecondition, Some(leader)) if !followed_hint => {
                        lock(&self.leaders).insert(group, leader);
                        followed_hint = true;
                        continue;
                    }
                    (Code::FailedPrecondition, Some(leader)) => {
                        lock(&self.leaders).insert(group, leader);
                    }
                    (
                        Code::FailedPrecondition
                        | Code::Unavailable
                        | Code::DeadlineExceeded
                        | Code::Cancelled
                        | Code::Unknown,
                        _,
                    ) if is_retryable(&error) => {
                        if matches!(error.code(), Code::Unavailable | Code::DeadlineExceeded) {
                            lock(&self.suspects).insert(addr.clone(), Instant::now() + SUSPECT_FOR);
                        }
                        lock(&self.leaders).remove(&group);
                        turn += 1;
                    }
                    _ => return Err(error),
                }
                followed_hint = false;
                if Instant::now() + backoff > deadline {
                    return Err(Status::unavailable(format!(
                        "group {group} is unavailable after {attempt} attempts: {}",
                        error.message()
                    )));
                }
                tracing::debug!(group, attempt, %addr, code = ?error.code(), "retrying group call");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.policy.max_backoff);
            }
        }
        .instrument(span)
        .await
    }
}

/// Whether a failure may go away on another replica or later. A `FAILED_PRECONDITION` is
/// retryable only when it is a replica's refusal to lead, which always carries the leader
/// metadata (empty when the leader is unknown); other preconditions — a shard map
/// compare-and-set that lost — are the caller's to handle.
fn is_retryable(status: &Status) -> bool {
    status.code() != Code::FailedPrecondition || status.metadata().get(LEADER_METADATA).is_some()
}
