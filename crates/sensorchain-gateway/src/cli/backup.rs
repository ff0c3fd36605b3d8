//! `sensorchain backup` and `sensorchain restore`: a chain copied to a
//! [backup file](sensorchain_gateway::backup) (of a stopped gateway, or of
//! a running one through its API) and rebuilt from one into a new data
//! directory, every block validated.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use sensorchain_core::block::Block;
use sensorchain_gateway::backup::{config_of_data_dir, is_busy, local_api, restore, verify_backup};
use sensorchain_gateway::chain_source::{ApiChain, ChainSource};
use sensorchain_gateway::config::GatewayConfig;
use sensorchain_gateway::export::export_source;
use sensorchain_gateway::keys::read_keypair;
use sensorchain_gateway::store::Store;

/// `sensorchain backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The gateway's data directory. A stopped gateway's store is read
    /// directly; a running gateway's chain is read through its API, logged
    /// in with its own key, both found in the configuration that names
    /// this directory (gateway.toml beside it, or
    /// /etc/sensorchain/gateway.toml; else give --config).
    #[arg(long, required_unless_present_any = ["config", "api"], conflicts_with_all = ["config", "api"])]
    pub data_dir: Option<PathBuf>,
    /// The gateway's configuration: its data directory, and for a running
    /// gateway its API address (`listen.api`, with `listen.tls_cert` for
    /// https) and key (`key_file`).
    #[arg(long, short, conflicts_with = "api")]
    pub config: Option<PathBuf>,
    /// A running gateway's API (`http(s)://HOST:PORT`), read with --key.
    #[arg(long, value_name = "URL", requires = "key")]
    pub api: Option<String>,
    /// With --api: the key to log in with (it must hold `audit` or `validate`).
    #[arg(long, value_name = "FILE", requires = "api")]
    pub key: Option<PathBuf>,
    /// With --api: a PEM file of the certificates to trust for https.
    #[arg(long, value_name = "FILE", requires = "api")]
    pub ca: Option<PathBuf>,
    /// The backup file to write (refused if it exists, unless --force).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
    /// Skip the full validation of the written file (a restore runs it
    /// anyway).
    #[arg(long)]
    pub no_verify: bool,
}

/// `sensorchain restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (`sensorchain backup --out FILE`, or an export).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// The new data directory: absent or empty (an existing store is
    /// never replaced: move it aside first).
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    pub data_dir: Option<PathBuf>,
    /// Restore into this gateway configuration's data directory, checking
    /// that the backup is of its chain (its genesis_file).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Only validate the backup; write nothing.
    #[arg(long)]
    pub check: bool,
}

/// Connects to `url` as the key in `key_file`.
fn api_source(
    url: &str,
    key_file: &Path,
    ca: Option<&Path>,
) -> anyhow::Result<ChainSource<'static>> {
    let key = read_keypair(key_file)?;
    Ok(ChainSource::Api(ApiChain::connect(url, &key, ca)?))
}

/// `sensorchain backup (--data-dir D | --config F | --api URL --key K) --out FILE`.
pub fn backup(args: &BackupArgs) -> anyhow::Result<ExitCode> {
    super::refuse_overwrite(&args.out, args.force)?;
    let store;
    let source = match (&args.api, &args.config, &args.data_dir) {
        (Some(url), _, _) => {
            let key = args.key.as_deref().context("--api needs --key FILE")?;
            api_source(url, key, args.ca.as_deref())?
        }
        (None, config, data_dir) => {
            let cfg = match config {
                Some(c) => Some((c.clone(), GatewayConfig::load(c)?)),
                None => None,
            };
            let dir = match (&cfg, data_dir) {
                (Some((_, c)), _) => c.data_dir.clone(),
                (None, Some(d)) => d.clone(),
                (None, None) => bail!("give --data-dir DIR, --config FILE or --api URL"),
            };
            match Store::open_read_only(&dir) {
                Ok(s) => {
                    store = s;
                    ChainSource::Store(&store)
                }
                Err(e) if is_busy(&e) => {
                    let Some((file, cfg)) = cfg.or_else(|| config_of_data_dir(&dir)) else {
                        bail!(
                            "the gateway of {} is running and no gateway.toml naming that data \
                             directory was found beside it: give --config FILE, or --api URL \
                             --key FILE",
                            dir.display()
                        );
                    };
                    let Some((url, ca)) = local_api(&cfg) else {
                        bail!(
                            "the gateway of {} is running and its configuration {} serves no \
                             API (listen.api): stop it for the backup, or enable its API",
                            dir.display(),
                            file.display()
                        );
                    };
                    eprintln!("the gateway is running: reading its chain through {url}");
                    api_source(&url, &cfg.key_file, ca.as_deref())?
                }
                Err(e) => return Err(sensorchain_gateway::audit::open_error(&dir, e)),
            }
        }
    };
    let written = export_source(&source, &args.out)?;
    println!(
        "backed up {} blocks ({} with finality certificates, {} bytes) from {} to {}",
        written.blocks,
        written.certs,
        written.bytes,
        source.describe(),
        args.out.display()
    );
    if !args.no_verify {
        let s = verify_backup(&args.out)?;
        println!(
            "verified: {} blocks, {} transactions ({} readings), head {} at height {}",
            s.blocks, s.transactions, s.readings, s.head_hash, s.head_height
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `sensorchain restore --from FILE (--data-dir NEW | --config F) [--check]`.
pub fn restore_cmd(args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    if args.check {
        let s = verify_backup(&args.from)?;
        println!(
            "valid backup: {} blocks ({} certified), {} transactions ({} readings), head {} at height {}",
            s.blocks, s.certs, s.transactions, s.readings, s.head_hash, s.head_height
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (dir, genesis) = match (&args.config, &args.data_dir) {
        (Some(c), _) => {
            let cfg = GatewayConfig::load(c)?;
            let bytes = std::fs::read(&cfg.genesis_file).with_context(|| {
                format!(
                    "cannot read the genesis block {}",
                    cfg.genesis_file.display()
                )
            })?;
            let g = Block::decode(&bytes).map_err(|e| {
                anyhow::anyhow!("{}: not a genesis block: {e}", cfg.genesis_file.display())
            })?;
            (cfg.data_dir, Some(g))
        }
        (None, Some(d)) => (d.clone(), None),
        (None, None) => bail!("give --data-dir DIR or --config FILE"),
    };
    let r = restore(&args.from, &dir, genesis.as_ref())?;
    let s = &r.chain;
    println!(
        "restored {} blocks ({} certified), {} transactions ({} readings), head {} at height {} into {}",
        s.blocks,
        s.certs,
        s.transactions,
        s.readings,
        s.head_hash,
        s.head_height,
        r.data_dir.display()
    );
    println!(
        "it holds no Raft state: a single gateway starts a new Raft log on it; a cluster member \
         rejoins as a learner and votes again once caught up (docs/DEPLOY.md, \"Backup and restore\")"
    );
    Ok(ExitCode::SUCCESS)
}
