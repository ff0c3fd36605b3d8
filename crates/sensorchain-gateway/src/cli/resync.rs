//! `sensorchain resync --config gateway.toml`: a cluster member whose store
//! fails its integrity check (`sensorchain run` refuses it) rebuilt from
//! its peers.
//!
//! The chain is asked of the configured peers over the encrypted peer links
//! (the `Blocks` request of the snapshot back-fill,
//! [`PeerBlockSource`]), 256 blocks at a time, the member asked changing
//! after every answer that fails; every block and certificate received is
//! validated with the core's rule from genesis into a new store
//! ([`Rebuild`], what `sensorchain restore` uses), until no peer has a
//! block more. Then the damaged data directory is moved aside (renamed
//! `DIR.damaged-SECONDS`, never deleted) and the new store takes its place.
//! It holds no Raft state: at its start the member finds an empty Raft log
//! and takes the path of a member that lost its data (it asks the leader,
//! comes back as a learner, votes again once caught up).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use sensorchain_gateway::app::AppConfig;
use sensorchain_gateway::backup::{InvalidBackup, Rebuild};
use sensorchain_gateway::cluster::backfill::{BACKFILL_PAUSE, BlockSource, PeerBlockSource};
use sensorchain_gateway::cluster::network::BLOCKS_PER_REQUEST;
use sensorchain_gateway::cluster::{ClusterSettings, GatewayNode, NodeId, PeerNetwork};
use sensorchain_gateway::config::GatewayConfig;
use sensorchain_gateway::net::peer::PeerConfig;
use sensorchain_gateway::node::replay;
use sensorchain_gateway::store::{FILE_NAME, Store, StoreError, integrity};

/// `sensorchain resync`
#[derive(Debug, Args)]
pub struct ResyncArgs {
    /// The member's configuration (its data directory, key, genesis and
    /// `[cluster]` peers).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Rebuild even if the store passes its check.
    #[arg(long)]
    pub force: bool,
}

/// Failed answers in a row (each from the next member) before the re-sync
/// gives up.
const TRIES: u32 = 40;

/// What is wrong with the store in `dir` (the check `sensorchain run`
/// makes before it starts), or `None` if it is sound.
fn damage(dir: &std::path::Path, genesis: &sensorchain_core::block::Block) -> Option<String> {
    if !dir.join(FILE_NAME).exists() {
        return Some(format!("there is no chain store in {}", dir.display()));
    }
    match Store::open_checked(dir) {
        Err(StoreError::Busy) => None,
        Err(e) => Some(integrity::refusal(dir, &e)),
        Ok(store) => replay(&store, genesis).err().map(|e| format!("{e:#}")),
    }
}

/// `sensorchain resync --config FILE [--force]` (module docs).
pub fn resync(args: &ResyncArgs) -> anyhow::Result<ExitCode> {
    let cfg = GatewayConfig::load(&args.config)?;
    let app = AppConfig::from_config(&cfg, &args.config)?;
    let section = cfg.cluster.as_ref().with_context(|| {
        format!(
            "{} has no [cluster] section: a single gateway has no peers to re-sync from \
             (restore it from a backup: sensorchain restore)",
            args.config.display()
        )
    })?;
    let settings = ClusterSettings::from_section(section)?;
    let dir = cfg.data_dir.clone();
    if matches!(Store::open_read_only(&dir), Err(StoreError::Busy)) {
        bail!(
            "the gateway of {} is running: stop it first (sensorchain run refuses a damaged \
             store, so a running one is not damaged)",
            dir.display()
        );
    }
    match damage(&dir, &app.genesis) {
        Some(why) => eprintln!("the store is damaged: {why}"),
        None if args.force => eprintln!("the store passes its check; rebuilding it (--force)"),
        None => {
            println!(
                "the store in {} passes its check: nothing to do (--force rebuilds it anyway)",
                dir.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
    let members: Vec<(NodeId, GatewayNode)> = settings
        .members
        .iter()
        .filter(|(id, _)| **id != settings.node_id)
        .map(|(id, n)| (*id, n.clone()))
        .collect();
    if members.is_empty() {
        bail!("[cluster] names no peer to re-sync from");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let net = PeerNetwork::new(
        settings.node_id,
        PeerConfig::new(Arc::new(app.key.clone()), app.genesis.header.chain_id),
    );
    net.pin_nodes(members.clone());
    let source = PeerBlockSource::new(net.clone(), rt.handle().clone(), Arc::new(|| None));
    let fetched = fetch_chain(&source, &members, &dir, &app.genesis);
    rt.block_on(net.shutdown(Duration::from_secs(5)));
    let rebuild = fetched?;
    let aside = aside_name(&dir);
    let kept = dir.exists();
    if kept {
        std::fs::rename(&dir, &aside).with_context(|| {
            format!(
                "cannot move the damaged {} aside to {}",
                dir.display(),
                aside.display()
            )
        })?;
    }
    let s = rebuild.finish(&dir)?;
    let kept = if kept {
        format!("; the damaged directory is kept at {}", aside.display())
    } else {
        String::new()
    };
    println!(
        "re-synced {} blocks ({} certified), {} transactions ({} readings), head {} at height {} \
         from the peers into {}{kept}",
        s.blocks,
        s.certs,
        s.transactions,
        s.readings,
        s.head_hash,
        s.head_height,
        dir.display(),
    );
    println!(
        "start the gateway: it has no Raft state, so it asks the leader and rejoins as a learner, \
         a voter again once caught up"
    );
    Ok(ExitCode::SUCCESS)
}

/// `DIR.damaged-SECONDS` (a free name).
fn aside_name(dir: &std::path::Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".damaged-{secs}"));
    let mut p = PathBuf::from(&name);
    let mut i = 1;
    while p.exists() {
        let mut n = name.clone();
        n.push(format!("-{i}"));
        p = PathBuf::from(n);
        i += 1;
    }
    p
}

/// Fetches and validates the whole chain from `members` into a new store
/// beside `dir`: until every member in turn has no block more (or could
/// not be asked), then the certificates of the tip that the first answers
/// lacked.
fn fetch_chain(
    source: &PeerBlockSource,
    members: &[(NodeId, GatewayNode)],
    dir: &std::path::Path,
    genesis: &sensorchain_core::block::Block,
) -> anyhow::Result<Rebuild> {
    let mut rebuild = Rebuild::new(dir, Some(genesis))?;
    let (mut attempt, mut failed, mut done_in_a_row) = (0u32, 0u32, 0usize);
    let mut answered = false;
    while done_in_a_row < members.len() {
        let from = rebuild.next_height();
        match source.fetch(from, BLOCKS_PER_REQUEST, members, attempt) {
            Ok(blocks) if blocks.is_empty() => {
                answered = true;
                done_in_a_row += 1;
                attempt += 1;
                continue;
            }
            Ok(blocks) => {
                answered = true;
                let mut refused = None;
                for b in blocks {
                    if let Err(e) = rebuild.take(&b.block, b.cert.as_deref()) {
                        match e.downcast_ref::<InvalidBackup>() {
                            Some(i) => refused = Some(i.to_string()),
                            None => return Err(e),
                        }
                        break;
                    }
                }
                match refused {
                    None => {
                        done_in_a_row = 0;
                        failed = 0;
                        let s = rebuild.summary();
                        eprintln!("resync: {} blocks validated", s.blocks);
                        continue;
                    }
                    Some(why) => eprintln!("resync: a peer's answer is refused: {why}"),
                }
            }
            Err(why) => {
                eprintln!("resync: {why}");
                done_in_a_row += 1;
            }
        }
        attempt += 1;
        failed += 1;
        if failed >= TRIES {
            bail!("block {from} not obtained from the peers after {failed} tries");
        }
        std::thread::sleep(BACKFILL_PAUSE);
    }
    if !answered || rebuild.next_height() == 0 {
        bail!("no peer answered: start the other members first");
    }
    // The certificates the peers had not stored yet when they served the tip.
    for h in rebuild.uncertified_tip()? {
        for attempt in 0..members.len() as u32 {
            let Ok(b) = source.fetch(h, 1, members, attempt) else {
                continue;
            };
            let Some(cert) = b.first().and_then(|b| b.cert.clone()) else {
                continue;
            };
            if rebuild.take_cert(h, &cert).is_ok() {
                break;
            }
        }
    }
    Ok(rebuild)
}
