//! The TCP listener: one task per accepted connection, each serving one
//! link ([`super::responder::serve_link`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::LinkHub;
use super::responder::serve_link;

/// Accepts connections on `listener` until shutdown begins, serving each as
/// a link. Accept errors (such as running out of file descriptors) are
/// logged and retried after a short pause.
pub async fn serve_tcp(gw: Arc<LinkHub>, listener: TcpListener) {
    let mut shutdown = gw.shutdown_signal();
    if *shutdown.borrow() {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let gw = gw.clone();
                    tokio::spawn(async move {
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
}

/// Binds `addr` and spawns [`serve_tcp`] on it; returns the bound address
/// (useful with port 0).
pub async fn spawn_tcp(gw: Arc<LinkHub>, addr: &str) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve_tcp(gw, listener));
    Ok(local)
}
