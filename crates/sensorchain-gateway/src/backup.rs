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
use sensorchain_core::block::Block;
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::{PublicKey, VerifyingKey};
use sensorchain_core::state::{SigCheck, WorldState};
use sensorchain_core::tx::TxKind;

use crate::audit::block_signatures_verified;
use crate::config::GatewayConfig;
use crate::export::ExportReader;
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

/// A chain rebuilt block by block into a new store, in a temporary
/// directory beside its target, every block validated with the core's rule
/// before it is stored (module docs): what a restore and a re-sync
/// (`sensorchain resync`) both use. Dropped unfinished, it leaves nothing.
pub struct Rebuild {
    tmp: tempfile::TempDir,
    store: Store,
    state: Option<WorldState>,
    genesis: Option<Hash32>,
    since_snapshot: u64,
    summary: ChainSummary,
}

impl Rebuild {
    /// A new rebuild whose store is to become the data directory `target`
    /// (its parent is created if missing); with `genesis`, the chain must
    /// begin with it.
    pub fn new(target: &Path, genesis: Option<&Block>) -> anyhow::Result<Rebuild> {
        let parent = parent_of(target);
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(".sensorchain-rebuild-")
            .tempdir_in(&parent)
            .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
        let store = Store::open(tmp.path())?;
        Ok(Rebuild {
            tmp,
            store,
            state: None,
            genesis: genesis.map(Block::hash),
            since_snapshot: 0,
            summary: ChainSummary {
                blocks: 0,
                certs: 0,
                transactions: 0,
                readings: 0,
                head_height: 0,
                head_hash: Hash32::ZERO,
                genesis_hash: Hash32::ZERO,
            },
        })
    }

    /// The height of the next block to take.
    pub fn next_height(&self) -> u64 {
        self.summary.blocks
    }

    /// What has been taken so far.
    pub fn summary(&self) -> &ChainSummary {
        &self.summary
    }

    /// Validates the next block (strictly decoded from `block`, its
    /// certificate from `cert`) from the state so far and stores it. A
    /// record that is not the next valid block is an [`InvalidBackup`] in
    /// the error chain, and changes nothing; any other error is the new
    /// store's.
    pub fn take(&mut self, block: &[u8], cert: Option<&[u8]>) -> anyhow::Result<()> {
        let h = self.summary.blocks;
        let invalid = |reason: String| InvalidBackup { height: h, reason };
        let block = store::decode_block(h, block).map_err(|e| invalid(e.to_string()))?;
        let cert = cert
            .map(|c| store::decode_cert(h, c))
            .transpose()
            .map_err(|e| invalid(e.to_string()))?;
        if h == 0
            && let Some(g) = self.genesis
            && g != block.hash()
        {
            bail!(
                "another chain: its genesis is {}, the configured genesis {g}",
                block.hash()
            );
        }
        let mut next = match &self.state {
            Some(s) => s.clone(),
            None => WorldState::new(block.header.chain_id),
        };
        let before = validator_keys(&next);
        let encoded = block.encoded_txs();
        // the signatures on every core first; the core's own check names
        // the error if one fails
        let known = vec![false; encoded.len()];
        let sigs = if block_signatures_verified(&block.header.chain_id, &block, &encoded, &known) {
            SigCheck::AlreadyVerified
        } else {
            SigCheck::Verify
        };
        next.apply_block_encoded(&block, &encoded, cert.as_ref(), sigs)
            .map_err(|e| invalid(e.to_string()))?;
        let after = validator_keys(&next);
        self.since_snapshot += 1;
        let snapshot =
            (h == 0 || self.since_snapshot >= RESTORE_SNAPSHOT_EVERY).then(|| next.snapshot());
        if snapshot.is_some() {
            self.since_snapshot = 0;
        }
        // no fsync per block: the store is used only once whole, after
        // `finish` syncs it
        self.store
            .commit_block_unsynced(&block, &encoded, cert.as_ref(), snapshot.as_deref())?;
        if h == 0 || after != before {
            self.store.record_validator_set(h + 1, &after)?;
        }
        let s = &mut self.summary;
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
        self.state = Some(next);
        Ok(())
    }

    /// Takes the certificate (`cert`, strictly decoded) of the stored block
    /// at `height`, which has none yet: checked against the validators in
    /// force at that height, stored. An [`InvalidBackup`] if it does not
    /// verify.
    pub fn take_cert(&mut self, height: u64, cert: &[u8]) -> anyhow::Result<()> {
        let invalid = |reason: String| InvalidBackup { height, reason };
        let c = store::decode_cert(height, cert).map_err(|e| invalid(e.to_string()))?;
        let header = self
            .store
            .header(height)?
            .ok_or_else(|| invalid("no such block".into()))?;
        let set = self
            .store
            .validator_set_at(height)?
            .ok_or_else(|| invalid("no validator set recorded there".into()))?;
        let keys: Vec<VerifyingKey> = set
            .iter()
            .filter_map(|k| VerifyingKey::from_public(k).ok())
            .collect();
        c.verify(&header, &keys)
            .map_err(|e| invalid(format!("the certificate does not verify: {e}")))?;
        self.store.put_cert(height, &c)?;
        self.summary.certs += 1;
        Ok(())
    }

    /// The heights of the stored blocks without a certificate above the
    /// highest certified one (the tip a backup or a peer had not certified
    /// yet).
    pub fn uncertified_tip(&self) -> anyhow::Result<Vec<u64>> {
        let mut v = Vec::new();
        for h in (1..self.summary.blocks).rev() {
            if self.store.cert(h)?.is_some() {
                break;
            }
            v.push(h);
        }
        v.reverse();
        Ok(v)
    }

    /// Ends the rebuild: a snapshot of the head's state, the directory made
    /// private (0700, files 0600) and renamed to `target`, which must not
    /// exist or be an empty directory by then. Fails if no block was taken.
    pub fn finish(self, target: &Path) -> anyhow::Result<ChainSummary> {
        let Some(state) = &self.state else {
            bail!(InvalidBackup {
                height: 0,
                reason: "no block".into(),
            });
        };
        let head = self.summary.head_height;
        if self.store.latest_snapshot()?.map(|(h, _)| h) != Some(head) {
            self.store.put_snapshot(head, &state.snapshot())?;
        }
        self.store.sync()?;
        let Rebuild {
            tmp,
            store,
            summary,
            ..
        } = self;
        drop(store);
        private(tmp.path())?;
        let dir = tmp.keep();
        if let Err(e) = std::fs::rename(&dir, target) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e)
                .with_context(|| format!("cannot move the rebuilt store to {}", target.display()));
        }
        if let Ok(d) = File::open(parent_of(target)) {
            let _ = d.sync_all();
        }
        Ok(summary)
    }
}

/// The directory `path` is in (`.` for a bare name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn open(path: &Path) -> anyhow::Result<ExportReader<BufReader<File>>> {
    crate::export::open_export(path).with_context(|| format!("{} is no backup", path.display()))
}

/// Validates the backup at `path` completely (what a restore checks),
/// writing nothing.
pub fn verify_backup(path: &Path) -> anyhow::Result<ChainSummary> {
    let mut state: Option<WorldState> = None;
    let mut s = None::<ChainSummary>;
    for (h, record) in open(path)?.enumerate() {
        let h = h as u64;
        let invalid = |reason: String| InvalidBackup { height: h, reason };
        let r = record.map_err(|e| invalid(format!("{e:#}")))?;
        let st = state.get_or_insert_with(|| WorldState::new(r.block.header.chain_id));
        let encoded = r.block.encoded_txs();
        let known = vec![false; encoded.len()];
        let chain = r.block.header.chain_id;
        let sigs = if block_signatures_verified(&chain, &r.block, &encoded, &known) {
            SigCheck::AlreadyVerified
        } else {
            SigCheck::Verify
        };
        st.apply_block_encoded(&r.block, &encoded, r.cert.as_ref(), sigs)
            .map_err(|e| invalid(e.to_string()))?;
        let sum = s.get_or_insert(ChainSummary {
            blocks: 0,
            certs: 0,
            transactions: 0,
            readings: 0,
            head_height: 0,
            head_hash: Hash32::ZERO,
            genesis_hash: r.block.hash(),
        });
        sum.blocks += 1;
        sum.certs += u64::from(r.cert.is_some());
        sum.transactions += r.block.txs.len() as u64;
        sum.readings += r
            .block
            .txs
            .iter()
            .filter(|t| matches!(t.body.kind, TxKind::Reading { .. }))
            .count() as u64;
        sum.head_height = h;
        sum.head_hash = r.block.hash();
    }
    s.ok_or_else(|| {
        InvalidBackup {
            height: 0,
            reason: "the backup holds no block".into(),
        }
        .into()
    })
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
    let mut rebuild = Rebuild::new(data_dir, genesis)?;
    for record in reader {
        let h = rebuild.next_height();
        let r = record.map_err(|e| InvalidBackup {
            height: h,
            reason: format!("{e:#}"),
        })?;
        let cert = r.cert.as_ref().map(sensorchain_core::codec::encode_to_vec);
        rebuild.take(&r.block_bytes, cert.as_deref())?;
    }
    check_target(data_dir)?;
    let chain = rebuild.finish(data_dir)?;
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
                n.to_string_lossy().starts_with(".sensorchain-rebuild-")
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
    fn rebuild_takes_missing_certificates_of_the_tip_only_if_they_verify() {
        let (dir, w) = World::stored(3, 4, 2);
        let source = Store::open_read_only(dir.path()).unwrap();
        let mut r = Rebuild::new(&dir.path().join("new"), None).unwrap();
        for h in 0..=4 {
            r.take(&source.block_bytes(h).unwrap().unwrap(), None)
                .unwrap();
        }
        assert_eq!(r.uncertified_tip().unwrap(), vec![1, 2, 3, 4]);
        let blocks = w.chain.blocks();
        let cert = |h: usize| sensorchain_core::codec::encode_to_vec(&w.cert(&blocks[h]));
        // a certificate of another block is refused, nothing stored
        let e = r.take_cert(3, &cert(2)).unwrap_err();
        assert!(e.downcast_ref::<InvalidBackup>().is_some(), "{e:#}");
        r.take_cert(3, &cert(3)).unwrap();
        assert_eq!(r.uncertified_tip().unwrap(), vec![4]);
        let s = r.finish(&dir.path().join("new")).unwrap();
        assert_eq!((s.blocks, s.certs), (5, 1));
        let store = Store::open_read_only(&dir.path().join("new")).unwrap();
        assert_eq!(store.cert(3).unwrap().unwrap(), w.cert(&blocks[3]));
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
