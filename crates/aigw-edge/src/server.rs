//! The accept loop: HTTP/1.1 and HTTP/2 (cleartext, by preface) connections served by the
//! router, with a bounded HTTP/1.1 read buffer and graceful shutdown.
//!
//! `axum::serve` would do the same but fixes hyper's settings. The one that matters is the
//! HTTP/1.1 read buffer: hyper asks for 8 KiB of free room before every read, so a buffer
//! holding any unparsed bytes (a request head split across reads) doubles to 16 KiB, and stays
//! that size for the life of the connection. Capped at `max_request_head_bytes` (8 KiB by
//! default, hyper's minimum) it never grows — which is also the longest request head served
//! (longer ones get 431). Over a thousand open streams that is 8 MiB.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tracing::Instrument;

/// How long to pause accepting after an error that is not about one connection (out of file
/// descriptors, say), so the loop does not spin while it lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and waits for
/// open connections to finish their requests in flight.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    max_request_head_bytes: usize,
    shutdown: impl Future<Output = ()>,
) {
    // No timer is given to hyper, as `axum::serve` gives none: with one, hyper's 30 s
    // header-read timeout also closes keep-alive connections idle for 30 s, which clients
    // that reuse a connection after a pause would see as failed POSTs.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(max_request_head_bytes);
    builder
        .http2()
        .max_header_list_size(u32::try_from(max_request_head_bytes).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "cannot accept connections; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
        }
        // `Router::clone` is an `Arc` clone; the route tables are shared by every connection.
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(
            async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            .instrument(tracing::debug_span!("connection", %peer)),
        );
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Errors that concern one connection only (it was reset before it was accepted).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
