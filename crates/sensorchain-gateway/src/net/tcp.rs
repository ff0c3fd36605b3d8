//! The TCP listener: one task per accepted connection, each serving one
//! link ([`super::responder::serve_link`]), all owned (and joined) by the
//! listener's task, which [`crate::app`] owns (bound there, once).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::LinkHub;
use super::responder::serve_link;

/// Accepts connections on `listener` until shutdown begins, serving each as
/// a link; then waits until no session is left (sessions drain on the same
/// shutdown signal), aborts the links still handshaking, and joins every
/// link it started: joining this task joins its links. Aborting it aborts
/// them. Accept errors (such as running out of file
/// descriptors) are logged and retried after a short pause.
pub async fn serve_tcp(gw: Arc<LinkHub>, listener: TcpListener) {
    let mut shutdown = gw.shutdown_signal();
    if *shutdown.borrow() {
        return;
    }
    let mut links = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            // reap the links that ended
            Some(_) = links.join_next(), if !links.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let gw = gw.clone();
                    links.spawn(async move {
                        serve_link(gw, stream, &addr.to_string()).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    // Sessions drain on the same signal. Once none is left, the links still
    // open are handshakes (refused from now on) or silent connections, with
    // nothing in flight: they are aborted, and joined.
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while gw.sessions() > 0 && !links.is_empty() {
        tokio::select! {
            _ = links.join_next() => {}
            _ = tick.tick() => {}
        }
    }
    links.abort_all();
    while links.join_next().await.is_some() {}
}
