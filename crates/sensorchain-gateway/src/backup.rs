//! Backups of a chain and their restore (`sensorchain backup`,
//! `sensorchain restore`).
//!
//! A backup is the [export container](crate::export) of the chain: every
//! block's exact bytes with its finality certificate, heights 0 to the head
//! as of the start of the backup — the chain itself, not the store's pages.
//! A stopped gateway's store is read directly (one read snapshot); a
//! running gateway holds its store exclusively, so its backup is read
//! through its API ([`crate::chain_source::ApiChain`]), logged in with the
//! gateway's own key (it holds `validate`, which may read block bodies).
//! Either way the copy is consistent: stored blocks never change, and the
//! heights read are those up to one head.
//!
//! A restore never trusts the file: every block is strictly decoded and
//! replayed with the core's one rule from genesis (every signature,
//! permission, sequence, Merkle and state root; every certificate checked
//! against the validators in force at its height,
//! `WorldState::apply_block_encoded` — the audit's check) into a **new**
//! store, built in a temporary directory beside the target and renamed
//! into place only when complete. The store gets what the cluster's state
//! machine records beside a chain (the validator set in force from each
//! height that changed it, world-state snapshots) and no Raft state: the
//! restored directory has no `raft.redb`, so a single gateway starts a new
//! Raft log (a cluster of one) and keeps extending the chain, and a cluster
//! member starts with an empty log, which is the path of a member that lost
//! its data (`node/consensus/rejoin.rs`: it asks the leader and comes back
//! as a learner, never with an old vote). docs/DEPLOY.md, "Backup and
//! restore".

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sensorchain_core::block::{Block, FinalityCert};
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::PublicKey;
use sensorchain_core::state::{SigCheck, WorldState};
use sensorchain_core::tx::TxKind;

use crate::config::GatewayConfig;
use crate::export::{ExportReader, ExportRecord};
use crate::store::{self, Store};

/// World-state snapshots are written into a restored store every this many
/// blocks (and after the last), so that the gateway's start replays few.
pub const RESTORE_SNAPSHOT_EVERY: u64 = 64;

/// What a backup holds, as its full validation found it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainSummary {
    /// Blocks (genesis included).
    pub blocks: u64,
    /// Finality certificates.
    pub certs: u64,
    /// Transactions.
    pub transactions: u64,
    /// Readings among them.
    pub readings: u64,
    /// The head's height.
    pub head_height: u64,
    /// The head's hash.
    pub head_hash: Hash32,
    /// The genesis block's hash.
    pub genesis_hash: Hash32,
}

/// Why a backup was refused: the first record that does not decode or
/// validate (`height`), or a container that is not whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the backup is refused at block {height}: {reason}")]
pub struct InvalidBackup {
    /// The height of the first block that was not taken.
    pub height: u64,
    /// Why.
    pub reason: String,
}

/// The sorted public keys of the `VALIDATE` holders of `state` (the order
/// the cluster's state machine records them in).
fn validator_keys(state: &WorldState) -> Vec<PublicKey> {
    let mut v: Vec<PublicKey> = state.validators().iter().map(|k| *k.public()).collect();
    v.sort_unstable_by_key(|k| k.0);
    v
}

/// One validated block, for a [`replay`] sink.
pub struct Taken<'a> {
    /// The block.
    pub block: &'a Block,
    /// Its transactions' exact encodings.
    pub encoded: &'a [Vec<u8>],
    /// Its certificate, verified.
    pub cert: Option<&'a FinalityCert>,
    /// The state after it.
    pub state: &'a WorldState,
    /// The validators in force from the next height on, if this block
    /// changed them (always for genesis).
    pub validators_next: Option<Vec<PublicKey>>,
    /// Whether it is the last block of the backup.
    pub last: bool,
}

/// Replays the records of a backup with the core's rule from genesis
/// (module docs), handing each validated block to `sink`; the summary of
/// the whole chain, or the first record refused ([`InvalidBackup`] in the
/// error chain).
pub fn replay<R: std::io::Read>(
    reader: ExportReader<R>,
    mut sink: impl FnMut(Taken<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<ChainSummary> {
    let mut records = reader.peekable();
    let mut state: Option<WorldState> = None;
    let mut s = ChainSummary {
        blocks: 0,
        certs: 0,
        transactions: 0,
        readings: 0,
        head_height: 0,
        head_hash: Hash32::ZERO,
        genesis_hash: Hash32::ZERO,
    };
    while let Some(record) = records.next() {
        let h = s.blocks;
        let ExportRecord { block, cert, .. } = record.map_err(|e| InvalidBackup {
            height: h,
            reason: format!("{e:#}"),
        })?;
        let st = state.get_or_insert_with(|| WorldState::new(block.header.chain_id));
        let before = validator_keys(st);
        let encoded = block.encoded_txs();
        st.apply_block_encoded(&block, &encoded, cert.as_ref(), SigCheck::Verify)
            .map_err(|e| InvalidBackup {
                height: h,
                reason: e.to_string(),
            })?;
        let after = validator_keys(st);
        let last = records.peek().is_none();
        sink(Taken {
            block: &block,
            encoded: &encoded,
            cert: cert.as_ref(),
            state: st,
            validators_next: (h == 0 || after != before).then_some(after),
            last,
        })?;
        if h == 0 {
            s.genesis_hash = block.hash();
        }
        s.blocks += 1;
        s.certs += u64::from(cert.is_some());
        s.transactions += block.txs.len() as u64;
        s.readings += block
            .txs
            .iter()
            .filter(|t| matches!(t.body.kind, TxKind::Reading { .. }))
            .count() as u64;
        s.head_height = h;
        s.head_hash = block.hash();
    }
    if s.blocks == 0 {
        bail!(InvalidBackup {
            height: 0,
            reason: "the backup holds no block".into(),
        });
    }
    Ok(s)
}

fn open(path: &Path) -> anyhow::Result<ExportReader<BufReader<File>>> {
    crate::export::open_export(path).with_context(|| format!("{} is no backup", path.display()))
}

/// Validates the backup at `path` completely (what a restore checks),
/// writing nothing.
pub fn verify_backup(path: &Path) -> anyhow::Result<ChainSummary> {
    replay(open(path)?, |_| Ok(()))
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestoreSummary {
    /// The chain restored.
    pub chain: ChainSummary,
    /// The data directory written.
    pub data_dir: PathBuf,
}

/// Whether `dir` may receive a restore: absent, or an empty directory.
fn check_target(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty: a restore writes a new data directory and never replaces \
                     one (move the old one aside first, e.g. `mv {0} {0}.old`)",
                    dir.display()
                );
            }
            Ok(())
        }
    }
}

/// Makes a restored data directory private, as `sensorchain run` wants
/// it (the directory 0700, its files 0600).
fn private(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        for e in std::fs::read_dir(dir)? {
            std::fs::set_permissions(e?.path(), std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Restores the backup at `from` into the new data directory `data_dir`
/// (absent or empty; module docs). With `genesis`, the backup must be of
/// that chain. Nothing is left at `data_dir` unless the whole backup
/// validated and was stored.
pub fn restore(
    from: &Path,
    data_dir: &Path,
    genesis: Option<&Block>,
) -> anyhow::Result<RestoreSummary> {
    check_target(data_dir)?;
    let reader = open(from)?;
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".sensorchain-restore-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    let store = Store::open(tmp.path())?;
    let mut since_snapshot = 0u64;
    let chain = replay(reader, |t| {
        let h = t.block.header.height;
        if h == 0
            && let Some(g) = genesis
            && g.hash() != t.block.hash()
        {
            bail!(
                "the backup is of another chain (genesis {} in the backup, {} configured)",
                t.block.hash(),
                g.hash()
            );
        }
        since_snapshot += 1;
        let snapshot = (h == 0 || t.last || since_snapshot >= RESTORE_SNAPSHOT_EVERY)
            .then(|| t.state.snapshot());
        if snapshot.is_some() {
            since_snapshot = 0;
        }
        store.commit_block(t.block, t.encoded, t.cert, snapshot.as_deref())?;
        if let Some(set) = &t.validators_next {
            store.record_validator_set(h + 1, set)?;
        }
        Ok(())
    })?;
    drop(store);
    private(tmp.path())?;
    let dir = tmp.keep();
    if let Err(e) = std::fs::rename(&dir, data_dir) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e)
            .with_context(|| format!("cannot move the restore to {}", data_dir.display()));
    }
    if let Ok(d) = File::open(&parent) {
        let _ = d.sync_all();
    }
    Ok(RestoreSummary {
        chain,
        data_dir: data_dir.to_path_buf(),
    })
}

/// The configuration of the gateway whose data directory is `data_dir`:
/// `gateway.toml` beside it (the layout of `sensorchain init --dir`), or
/// `/etc/sensorchain/gateway.toml` (`init --system`), whichever names that
/// data directory; `None` if neither does.
pub fn config_of_data_dir(data_dir: &Path) -> Option<(PathBuf, GatewayConfig)> {
    let want = std::fs::canonicalize(data_dir).ok()?;
    let mut candidates = Vec::new();
    if let Some(p) = want.parent() {
        candidates.push(p.join("gateway.toml"));
    }
    candidates.push(PathBuf::from("/etc/sensorchain/gateway.toml"));
    candidates.into_iter().find_map(|c| {
        let cfg = GatewayConfig::load(&c).ok()?;
        (std::fs::canonicalize(&cfg.data_dir).ok()? == want).then_some((c, cfg))
    })
}

/// The API address a local client reaches `cfg`'s gateway at
/// (`listen.api`, an unspecified address taken as loopback; `https` when
/// the API has TLS), with the certificate to trust for it; `None` if the
/// gateway serves no API.
pub fn local_api(cfg: &GatewayConfig) -> Option<(String, Option<PathBuf>)> {
    let listen = cfg.listen.api.as_deref()?;
    let addr: std::net::SocketAddr = listen.parse().ok()?;
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v) if v.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(v) if v.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(v) => format!("[{v}]"),
        ip => ip.to_string(),
    };
    let scheme = if cfg.listen.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    Some((
        format!("{scheme}://{ip}:{}", addr.port()),
        cfg.listen.tls_cert.clone(),
    ))
}

/// Whether `e` says the store is held by a running gateway.
pub fn is_busy(e: &store::StoreError) -> bool {
    matches!(e, store::StoreError::Busy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::export_store;
    use crate::store::tests::World;

    /// Where each block's bytes begin in a container.
    fn block_starts(bytes: &[u8]) -> Vec<usize> {
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        let (mut pos, mut starts) = (8, Vec::new());
        while u32_at(pos) != 0 {
            starts.push(pos + 4);
            pos += 4 + u32_at(pos);
            pos += 4 + u32_at(pos);
        }
        starts
    }

    fn backup(blocks: usize) -> (tempfile::TempDir, World, PathBuf) {
        let (dir, w) = World::stored(3, blocks, 5);
        let out = dir.path().join("chain.backup");
        let store = Store::open_read_only(dir.path()).unwrap();
        export_store(&store, &out).unwrap();
        (dir, w, out)
    }

    #[test]
    fn restore_validates_and_rebuilds_the_store() {
        let (dir, w, out) = backup(70);
        let target = dir.path().join("restored");
        let r = restore(&out, &target, Some(&w.chain.blocks()[0])).unwrap();
        assert_eq!(r.chain.blocks, 71);
        assert_eq!(r.chain.head_hash, w.chain.head_hash());
        let store = Store::open_read_only(&target).unwrap();
        let head = store.head().unwrap().unwrap();
        assert_eq!((head.height, head.hash), (70, w.chain.head_hash()));
        // a snapshot at the head, the validator set from height 1, the audit passes
        assert_eq!(store.latest_snapshot().unwrap().unwrap().0, 70);
        assert!(store.validator_set_at(1).unwrap().is_some());
        assert!(store.applied_mark().unwrap().is_none());
        let report = crate::audit::audit_store(&store, std::time::Duration::MAX, |_| {}).unwrap();
        assert!(report.valid, "{report:?}");
        assert_eq!(report.readings, r.chain.readings);
        // no Raft state, nothing left beside it
        assert!(!target.join("raft.redb").exists());
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                n.to_string_lossy().starts_with(".sensorchain-restore-")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn restore_refuses_a_non_empty_target_another_chain_and_a_damaged_file() {
        let (dir, w, out) = backup(3);
        // the source store's own directory is not empty
        let e = restore(&out, dir.path(), None).unwrap_err();
        assert!(format!("{e:#}").contains("not empty"), "{e:#}");
        // another chain's genesis
        let other = World::new(2);
        let target = dir.path().join("t1");
        let e = restore(&out, &target, Some(&other.chain.blocks()[0])).unwrap_err();
        assert!(format!("{e:#}").contains("another chain"), "{e:#}");
        assert!(!target.exists());
        // a flipped byte inside a transaction of block 2: refused, nothing written
        let mut bytes = std::fs::read(&out).unwrap();
        let at = block_starts(&bytes)[2] + w.chain.blocks()[2].to_vec().len() - 10;
        bytes[at] ^= 0x01;
        let bad = dir.path().join("bad.backup");
        std::fs::write(&bad, &bytes).unwrap();
        let target = dir.path().join("t2");
        let e = restore(&bad, &target, None).unwrap_err();
        let inv = e.downcast_ref::<InvalidBackup>().expect("an InvalidBackup");
        assert_eq!(inv.height, 2, "{e:#}");
        assert!(!target.exists());
        assert!(verify_backup(&bad).is_err());
        assert_eq!(verify_backup(&out).unwrap().blocks, 4);
        // a truncated file
        std::fs::write(&bad, &bytes[..bytes.len() - 5]).unwrap();
        assert!(restore(&bad, &target, None).is_err());
        assert!(!target.exists());
    }

    #[test]
    fn local_api_of_a_config() {
        let mut cfg = GatewayConfig::new("d".into(), "k".into(), "g".into());
        cfg.listen.api = Some("0.0.0.0:7480".into());
        assert_eq!(
            local_api(&cfg),
            Some(("http://127.0.0.1:7480".to_string(), None))
        );
        cfg.listen.tls_cert = Some("c.pem".into());
        cfg.listen.api = Some("10.0.0.2:443".into());
        assert_eq!(
            local_api(&cfg),
            Some(("https://10.0.0.2:443".to_string(), Some("c.pem".into())))
        );
        cfg.listen.api = None;
        assert_eq!(local_api(&cfg), None);
    }
}
