//! Serial links: a UART device (via tokio-serial) carrying the same COBS
//! frames as TCP. A serial line carries one link at a time; when a link
//! ends, the next one starts on the same line (the device handshakes again).
//! If the device cannot be opened or fails, it is reopened with exponential
//! backoff (100 ms doubling to 30 s, reset after a link that worked).

use std::sync::Arc;
use std::time::Duration;

use tokio_serial::SerialPortBuilderExt;

use super::LinkHub;
use super::responder::{LinkEnd, serve_link};

/// Serves links on the serial device `path` at `baud` until shutdown.
pub async fn serve_serial(gw: Arc<LinkHub>, path: String, baud: u32) {
    let mut shutdown = gw.shutdown_signal();
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        let port = tokio_serial::new(&path, baud).open_native_async();
        let wait = match port {
            Ok(port) => {
                tracing::info!(%path, baud, "serial link open");
                let end = tokio::select! {
                    _ = shutdown.changed() => return,
                    end = serve_link(gw.clone(), port, &path) => end,
                };
                match end {
                    LinkEnd::Io => {
                        tracing::warn!(%path, "serial link failed; reopening");
                        backoff
                    }
                    _ => {
                        // the next link on the same line, after a breath (a
                        // line that reports end-of-stream must not spin)
                        backoff = Duration::from_millis(100);
                        Duration::from_millis(50)
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%path, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot open serial device");
                backoff
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
