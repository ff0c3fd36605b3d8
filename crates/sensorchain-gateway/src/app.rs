//! The one composition root: [`start`] wires a gateway's parts and returns
//! a [`Running`] gateway that owns every thread and task it started;
//! [`Running::shutdown`] stops them in order and joins them. `sensorchain
//! run`, `demo`, `bench` and the tests that run a gateway in their own
//! process start it here and nowhere else.
//!
//! **Start, in this order** (within the caller's tokio runtime):
//! 1. the data directory is created 0700 (or tightened);
//! 2. off the async runtime ([`tokio::task::spawn_blocking`]): the store is
//!    opened with redb's page checksums and made 0600 (an existing one open
//!    to group or others with a warning), the stored chain is
//!    checked and replayed (or the store initialised with the genesis
//!    block), and the node's block producer thread starts (it starts and
//!    joins its committer thread);
//! 3. the link hub ([`LinkHub`]: handshake table, session slots, the
//!    shutdown signal);
//! 4. the TCP sensor listener (bound once, here: a busy port is an error
//!    now, and the address bound — port 0 gives a free one — is
//!    [`Running::link_addr`]), then one task per serial device;
//! 5. the HTTP API (bound once, here: [`Running::api_addr`] is the address
//!    the listener holds).
//!
//! A failure at any step is a [`StartError`]; what was started before it is
//! stopped again.
//!
//! **Stop, in this order** ([`Running::shutdown`], each step bounded; what
//! does not end within its bound is reported in [`Stopped::not_stopped`],
//! never waited for without end, never slept over):
//! 1. the API stops accepting (its requests in flight finish meanwhile);
//! 2. the link hub's shutdown: listeners stop accepting, handshakes are
//!    refused, sessions stop reading, answer every submission in flight
//!    once committed, and close ([`AppConfig::shutdown_grace`]);
//! 3. the listener tasks are joined (the TCP listener joins each of its
//!    links first; links still handshaking after [`LINK_GRACE`] are
//!    aborted), then the serial tasks;
//! 4. the API task is joined (within `api.request_timeout_ms` + 2 s);
//! 5. the last node handles are dropped, so the block producer stores its
//!    last block and ends; its thread is joined (within [`NODE_GRACE`]).
//!    When [`Running::shutdown`] returns cleanly, the store is released.
//!
//! A [`Running`] dropped without `shutdown` aborts its tasks (nothing is
//! drained) and leaves the node to stop when its last handle goes.
//!
//! **Healing** ([`run_healing`], what `sensorchain run` uses): after a
//! storage failure (a full disk) the failed gateway keeps refusing
//! submissions `storage_failed` until a probe write next to the store
//! succeeds; then it is shut down as above and started again on the same
//! configuration and addresses (see [`heal`]).

pub mod heal;
mod setup;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use heal::{HealSettings, run_healing};
pub use setup::{
    AppConfig, Preflight, SHUTDOWN_GRACE, StartError, node_config, preflight, prepare_data_dir,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::net::{LinkHub, serial, tcp};
use crate::node::Node;
use crate::store::{Store, integrity};

/// How long links still handshaking when the sessions have drained may
/// take to end before they are aborted (they hold nothing in flight).
pub const LINK_GRACE: Duration = Duration::from_secs(2);

/// How long the node may take, once its last handle is dropped, to store
/// its last block and end.
pub const NODE_GRACE: Duration = Duration::from_secs(60);

/// How long a gateway that lost `VALIDATE` keeps answering (every new
/// submission refused as shutting down) before [`Running::run_until`]
/// stops it.
pub const LOST_VALIDATE_GRACE: Duration = Duration::from_secs(2);

/// One task a [`Running`] gateway owns.
struct Task {
    /// What it is, e.g. `tcp listener 127.0.0.1:7400`.
    name: String,
    handle: JoinHandle<()>,
}

/// A started gateway: it owns the node, the link hub, the listeners' tasks
/// and the API task (see the [module](self) for the order they start and
/// stop in).
pub struct Running {
    node: Node,
    links: Arc<LinkHub>,
    link_addr: Option<SocketAddr>,
    api_addr: Option<SocketAddr>,
    serial: Vec<String>,
    /// Listener tasks: TCP (which owns its links), then serial.
    listeners: Vec<Task>,
    api: Option<(oneshot::Sender<()>, Task)>,
    producer: Option<std::thread::JoinHandle<()>>,
    shutdown_grace: Duration,
    api_grace: Duration,
}

/// What [`Running::shutdown`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stopped {
    /// The height of the last block stored.
    pub height: u64,
    /// Every thread and task joined, by name, in the order joined.
    pub joined: Vec<String>,
    /// Each part that did not stop within its bound, with what was done
    /// about it (empty after a clean shutdown).
    pub not_stopped: Vec<String>,
    /// Set when [`Running::run_until`] stopped because a committed block
    /// took `VALIDATE` from the gateway's key: the reason.
    pub lost_validate: Option<String>,
    /// Times [`run_healing`] restarted the gateway after a storage
    /// failure (0 from [`Running::shutdown`] and [`Running::run_until`]).
    pub heals: u64,
}

impl Stopped {
    /// True if everything stopped within its bound.
    pub fn is_clean(&self) -> bool {
        self.not_stopped.is_empty()
    }
}

/// Starts the gateway `cfg` describes in the current tokio runtime (see
/// the [module](self) for what starts in which order). Prints nothing.
pub async fn start(cfg: AppConfig) -> Result<Running, StartError> {
    let AppConfig {
        key,
        genesis,
        data_dir,
        node: node_cfg,
        net,
        tcp: tcp_listen,
        serial: serial_ports,
        api: api_listen,
        api_settings,
        api_tls,
        metrics,
        shutdown_grace,
        heal: _,
    } = cfg;
    // 1.-2. the store and the node, off the async runtime (the replay of a
    // long chain takes a while and must not hold a worker thread)
    let node = tokio::task::spawn_blocking(move || -> Result<Node, StartError> {
        prepare_data_dir(&data_dir).map_err(StartError::DataDir)?;
        let created = !data_dir.join(crate::store::FILE_NAME).exists();
        // redb's page checksums, then the chain-level check in Node::start
        let store = Store::open_checked(&data_dir).map_err(|e| {
            StartError::Store(if e.is_corrupt() {
                integrity::refusal(&data_dir, &e).to_string()
            } else {
                format!("cannot open store in {}: {e}", data_dir.display())
            })
        })?;
        if created {
            setup::set_private(store.path(), 0o600)
        } else {
            // an existing file open to group or others: tightened, warned
            setup::tighten(store.path(), 0o600, "store file")
        }
        .map_err(StartError::DataDir)?;
        Node::start(store, key, &genesis, node_cfg, metrics).map_err(StartError::Node)
    })
    .await
    .map_err(|e| StartError::Internal(e.to_string()))??;
    let producer = node.take_producer();
    // 3. the link hub
    let links = LinkHub::new(node.clone(), net);
    let mut running = Running {
        node,
        links,
        link_addr: None,
        api_addr: None,
        serial: Vec::new(),
        listeners: Vec::new(),
        api: None,
        producer,
        shutdown_grace,
        api_grace: Duration::from_millis(api_settings.request_timeout_ms) + Duration::from_secs(2),
    };
    // 4. the listeners: a failure stops what started (shutdown joins it)
    if let Err(e) = running.listen(tcp_listen, serial_ports).await {
        running.shutdown().await;
        return Err(e);
    }
    // 5. the API
    if let Some(addr) = &api_listen {
        // a non-loopback address needs TLS or listen.allow_plaintext
        let acceptor = match api_tls.acceptor() {
            Ok(a) => a,
            Err(e) => {
                running.shutdown().await;
                return Err(StartError::Api(e));
            }
        };
        let listener = match crate::api::bind_with(addr, &api_settings, &api_tls).await {
            Ok(l) => l,
            Err(e) => {
                running.shutdown().await;
                return Err(StartError::Api(e));
            }
        };
        let local = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                running.shutdown().await;
                return Err(StartError::Api(e.into()));
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let node = running.node.clone();
        let handle = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) =
                crate::api::serve_secure(node, listener, api_settings, acceptor, shutdown).await
            {
                tracing::error!(error = %format!("{e:#}"), "HTTP API stopped");
            }
        });
        running.api = Some((
            stop,
            Task {
                name: format!("api {local}"),
                handle,
            },
        ));
        running.api_addr = Some(local);
    }
    Ok(running)
}

impl Running {
    /// Binds the TCP listener and starts it and the serial tasks.
    async fn listen(
        &mut self,
        tcp_listen: Option<String>,
        serial_ports: Vec<crate::config::SerialPort>,
    ) -> Result<(), StartError> {
        if let Some(addr) = tcp_listen {
            let bound = tokio::net::TcpListener::bind(&addr)
                .await
                .and_then(|l| l.local_addr().map(|a| (l, a)));
            let (listener, local) = bound.map_err(|error| StartError::Links {
                addr: addr.clone(),
                error,
            })?;
            self.listeners.push(Task {
                name: format!("tcp listener {local}"),
                handle: tokio::spawn(tcp::serve_tcp(self.links.clone(), listener)),
            });
            self.link_addr = Some(local);
        }
        for p in serial_ports {
            self.listeners.push(Task {
                name: format!("serial {}", p.path),
                handle: tokio::spawn(serial::serve_serial(
                    self.links.clone(),
                    p.path.clone(),
                    p.baud,
                )),
            });
            self.serial.push(format!("{} ({} baud)", p.path, p.baud));
        }
        Ok(())
    }

    /// The node (submissions, state, store, metrics, events). A clone kept
    /// past [`shutdown`](Self::shutdown) keeps the node from stopping
    /// (reported as not stopped).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The link hub (sessions, handshakes, limits).
    pub fn links(&self) -> &Arc<LinkHub> {
        &self.links
    }

    /// The address the TCP sensor listener holds, if it listens.
    pub fn link_addr(&self) -> Option<SocketAddr> {
        self.link_addr
    }

    /// The address the HTTP API's listener holds, if it serves.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// The serial devices served, as `PATH (BAUD baud)`.
    pub fn serial_ports(&self) -> &[String] {
        &self.serial
    }

    /// Runs until `signal` completes, or until a committed block takes
    /// `VALIDATE` from the gateway's key (then answers for
    /// [`LOST_VALIDATE_GRACE`] more, so that what was decided reaches its
    /// senders, and reports the reason in [`Stopped::lost_validate`]); then
    /// [`shutdown`](Self::shutdown).
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Stopped {
        let lost = tokio::select! {
            _ = signal => None,
            why = self.node.lost_validate() => Some(why),
        };
        if lost.is_some() {
            // let the answers already decided (the block that took the
            // permission, e.g. its submitter's) reach their senders
            tokio::time::sleep(LOST_VALIDATE_GRACE).await;
        }
        let mut stopped = self.shutdown().await;
        stopped.lost_validate = lost;
        stopped
    }

    /// Stops everything in order and joins every thread and task, each
    /// within its bound (see the [module](self)); what did not stop in time
    /// is in [`Stopped::not_stopped`].
    pub async fn shutdown(mut self) -> Stopped {
        let mut joined = Vec::new();
        let mut not_stopped = Vec::new();
        // 1. the API stops accepting at once and finishes within its grace
        let api = self.api.take().map(|(stop, task)| {
            let _ = stop.send(());
            task
        });
        // 2. the links drain
        if !self.links.shutdown(self.shutdown_grace).await {
            not_stopped.push(format!(
                "{} sessions still open after the {} s grace: aborted",
                self.links.sessions(),
                self.shutdown_grace.as_secs()
            ));
        }
        // 3. the listeners (the TCP listener joins its links)
        for t in std::mem::take(&mut self.listeners) {
            join_task(t, LINK_GRACE, &mut joined, &mut not_stopped).await;
        }
        // 4. the API
        if let Some(t) = api {
            join_task(t, self.api_grace, &mut joined, &mut not_stopped).await;
        }
        // 5. the node: its producer ends when the last handle is gone
        let height = self.node.state().next_height().saturating_sub(1);
        let producer = self.producer.take();
        drop(self);
        if let Some(p) = producer {
            let deadline = Instant::now() + NODE_GRACE;
            let mut wait = Duration::from_millis(1);
            while !p.is_finished() && Instant::now() < deadline {
                // polls a condition (the thread has ended) within a bound
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(50));
            }
            if p.is_finished() {
                if p.join().is_err() {
                    not_stopped.push("block producer: panicked".into());
                } else {
                    joined.push("block producer (and its committer)".into());
                }
            } else {
                not_stopped.push(format!(
                    "block producer: still running {} s after the last node handle here was dropped (a node handle is held elsewhere, or storing the last block hangs); the store stays open until it ends",
                    NODE_GRACE.as_secs()
                ));
            }
        }
        Stopped {
            height,
            joined,
            not_stopped,
            lost_validate: None,
            heals: 0,
        }
    }
}

/// Joins `t` within `bound`; aborts it (and waits for the abort) if it
/// does not end in time.
async fn join_task(
    t: Task,
    bound: Duration,
    joined: &mut Vec<String>,
    not_stopped: &mut Vec<String>,
) {
    let Task { name, mut handle } = t;
    match tokio::time::timeout(bound, &mut handle).await {
        Ok(Ok(())) => joined.push(name),
        Ok(Err(e)) => not_stopped.push(format!("{name}: {e}")),
        Err(_) => {
            handle.abort();
            let _ = handle.await;
            not_stopped.push(format!(
                "{name}: still running {:.1} s after the shutdown began: aborted",
                bound.as_secs_f64()
            ));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // not shut down: nothing is drained, the tasks are aborted
        if let Some((stop, t)) = self.api.take() {
            let _ = stop.send(());
            t.handle.abort();
        }
        for t in self.listeners.drain(..) {
            t.handle.abort();
        }
    }
}
