//! A loopback TCP proxy between the members of a test cluster, one
//! listener per ordered pair: member `a`'s configuration names member
//! `b`'s peer address as the proxy's port for `(a, b)`, and the proxy
//! connects each accepted link to `b`'s real peer listener (which a
//! restart may move: [`Proxy::set_target`]).
//!
//! Faults are per direction of traffic: [`Proxy::block`]`(a, b)` holds the
//! bytes *from `a` to `b`* — on the link `a` dialled (its requests) and on
//! the link `b` dialled (`a`'s answers) — until [`Proxy::unblock`]. Held
//! bytes are not lost: the proxy stops reading, so the sender's kernel
//! buffers fill and its writes stall, as over a path that drops every
//! packet while TCP keeps retransmitting; when the path heals they arrive
//! (if the connection is still open). [`Proxy::cut`] closes every proxied
//! connection between two members at once (both ends see the link end).
//!
//! Every listener is bound to port 0 and held by the test process for the
//! proxy's lifetime: no port can be taken by anyone else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The proxy of an `n`-member cluster (members `0..n`).
pub struct Proxy {
    n: usize,
    /// The listening address for each ordered pair `(from, to)`.
    listen: HashMap<(usize, usize), SocketAddr>,
    /// Each member's real peer listener, none while it is down.
    targets: Vec<watch::Sender<Option<SocketAddr>>>,
    /// `flows[a][b]`: bytes from `a` to `b` are held.
    flows: Vec<Vec<watch::Sender<bool>>>,
    /// Per unordered pair: bumped to close every connection between them.
    cuts: HashMap<(usize, usize), watch::Sender<u64>>,
    /// Connections accepted, for the report.
    accepted: Arc<Mutex<u64>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Binds a listener for every ordered pair of `n` members and serves
    /// them on `rt`.
    pub fn new(n: usize, rt: &Handle) -> Proxy {
        let targets: Vec<_> = (0..n).map(|_| watch::Sender::new(None)).collect();
        let flows: Vec<Vec<_>> = (0..n)
            .map(|_| (0..n).map(|_| watch::Sender::new(false)).collect())
            .collect();
        let mut cuts = HashMap::new();
        for a in 0..n {
            for b in a + 1..n {
                cuts.insert((a, b), watch::Sender::new(0u64));
            }
        }
        let accepted = Arc::new(Mutex::new(0));
        let mut listen = HashMap::new();
        let mut tasks = Vec::new();
        for from in 0..n {
            for to in 0..n {
                if from == to {
                    continue;
                }
                let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                std.set_nonblocking(true).unwrap();
                listen.insert((from, to), std.local_addr().unwrap());
                let link = Link {
                    target: targets[to].subscribe(),
                    up: flows[from][to].subscribe(),
                    down: flows[to][from].subscribe(),
                    cut: cuts[&(from.min(to), from.max(to))].subscribe(),
                    accepted: accepted.clone(),
                };
                let _enter = rt.enter();
                let l = TcpListener::from_std(std).unwrap();
                tasks.push(rt.spawn(link.serve(l)));
            }
        }
        Proxy {
            n,
            listen,
            targets,
            flows,
            cuts,
            accepted,
            tasks,
        }
    }

    /// The address member `from` dials to reach member `to`.
    pub fn addr(&self, from: usize, to: usize) -> SocketAddr {
        self.listen[&(from, to)]
    }

    /// Where member `m`'s peer listener is now (none: it is down).
    pub fn set_target(&self, m: usize, addr: Option<SocketAddr>) {
        self.targets[m].send_replace(addr);
    }

    /// Holds the bytes from `a` to `b`.
    pub fn block(&self, a: usize, b: usize) {
        self.flows[a][b].send_replace(true);
    }

    /// Lets the bytes from `a` to `b` flow again.
    pub fn unblock(&self, a: usize, b: usize) {
        self.flows[a][b].send_replace(false);
    }

    /// Cuts `side` off from every other member, both ways.
    pub fn isolate(&self, side: &[usize]) {
        for a in 0..self.n {
            for b in 0..self.n {
                if a != b && side.contains(&a) != side.contains(&b) {
                    self.block(a, b);
                }
            }
        }
    }

    /// Every flow open again.
    pub fn heal(&self) {
        for a in 0..self.n {
            for b in 0..self.n {
                if a != b {
                    self.unblock(a, b);
                }
            }
        }
    }

    /// Closes every proxied connection between `a` and `b` now.
    pub fn cut(&self, a: usize, b: usize) {
        self.cuts[&(a.min(b), a.max(b))].send_modify(|e| *e += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        *self.accepted.lock().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One ordered pair's listener and its controls.
struct Link {
    target: watch::Receiver<Option<SocketAddr>>,
    /// Bytes from the dialling member to the dialled one held.
    up: watch::Receiver<bool>,
    /// Bytes from the dialled member back held.
    down: watch::Receiver<bool>,
    cut: watch::Receiver<u64>,
    accepted: Arc<Mutex<u64>>,
}

impl Link {
    async fn serve(self, l: TcpListener) {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((client, _)) = l.accept().await else {
                continue;
            };
            *self.accepted.lock().unwrap() += 1;
            // a member that is down: the link ends at once, as a refused
            // connection would
            let Some(target) = *self.target.borrow() else {
                continue;
            };
            let (up, down, mut cut) = (self.up.clone(), self.down.clone(), self.cut.clone());
            cut.mark_unchanged();
            conns.spawn(async move {
                let connect =
                    tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target));
                let Ok(Ok(server)) = connect.await else {
                    return;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::select! {
                    _ = pump(cr, sw, up) => {}
                    _ = pump(sr, cw, down) => {}
                    _ = cut.changed() => {}
                }
                // both sockets dropped here: both members see the link end
            });
            while conns.try_join_next().is_some() {}
        }
    }
}

/// Copies `r` to `w`, holding the bytes while `blocked` says so.
async fn pump(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    mut blocked: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let _ = blocked.wait_for(|b| !*b).await;
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        // a block raised while these bytes were read holds them too
        let _ = blocked.wait_for(|b| !*b).await;
        w.write_all(&buf[..n]).await?;
    }
}
