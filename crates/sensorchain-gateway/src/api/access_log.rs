//! The access log: every read of a patient's data through the API (allowed,
//! or refused by a rule), hash-chained with the core's
//! [`access_log`](sensorchain_core::access_log) rule and its head signed by
//! the gateway after every write (docs/API.md, "Access log";
//! docs/PROTOCOL.md, "Access log").
//!
//! It lives in its own redb file, `access.redb` in the data directory, so
//! that the chain store's writer is never held up by it. One writer thread
//! takes the entries of many requests at once and writes them in one durable
//! transaction (group commit); a request's answer leaves only after its
//! entries are on disk (`AccessLog::record`): a read that cannot be logged
//! is not served (503 `access_log_unavailable`).
//!
//! Why a signed head rather than a transaction on the ledger: a reading
//! answer would otherwise wait for a block, and every read would grow the
//! chain that sensors' readings go into. The head signature binds the log to
//! the gateway's key; anyone who fetched a signed head (`GET
//! /access-log/head`: a patient, an auditor) holds a commitment that a later
//! rewrite of the file contradicts ([`verify_dir`] and
//! `ChainVerifier::matches`). Someone who holds the gateway's key and its disk
//! can rewrite the log *before* anyone fetched a head; anchoring heads on
//! the ledger (a transaction kind) is the next step for that case.
//!
//! Tables: `entries` (`seq` → entry bytes ‖ chain hash after it),
//! `by_patient` (`patient ‖ seq` big-endian → `()`), `meta` (`"head"` →
//! `count (u64 LE) ‖ hash (32) ‖ time_ms (u64 LE) ‖ signature (64)`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use axum::http::StatusCode;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use sensorchain_core::access_log::{
    AccessEntry, AccessHead, ChainVerifier, ENTRY_LEN, Outcome, chain_hash,
};
use sensorchain_core::hash::{ChainId, Hash32};
use sensorchain_core::identity::{Keypair, PublicKey, Signature, VerifyingKey};

use super::access::{NOBODY, Note};
use super::auth::Clock;
use super::errors::ApiError;

/// The access log's file in the data directory.
pub const FILE_NAME: &str = "access.redb";

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const BY_PATIENT: TableDefinition<&[u8], ()> = TableDefinition::new("by_patient");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Length of the stored head record.
const HEAD_RECORD_LEN: usize = 8 + 32 + 8 + 64;

/// Requests waiting for the writer; more wait for room.
const QUEUE: usize = 1024;

/// A signed head as stored and served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedHead {
    /// The head.
    pub head: AccessHead,
    /// The gateway's signature over it.
    pub signature: Signature,
}

impl SignedHead {
    fn encode(&self) -> [u8; HEAD_RECORD_LEN] {
        let mut b = [0u8; HEAD_RECORD_LEN];
        b[..8].copy_from_slice(&self.head.count.to_le_bytes());
        b[8..40].copy_from_slice(&self.head.hash.0);
        b[40..48].copy_from_slice(&self.head.time_ms.to_le_bytes());
        b[48..].copy_from_slice(&self.signature.0);
        b
    }

    fn decode(b: &[u8]) -> Option<SignedHead> {
        if b.len() != HEAD_RECORD_LEN {
            return None;
        }
        let u = |r: std::ops::Range<usize>| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[r]);
            u64::from_le_bytes(x)
        };
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&b[8..40]);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&b[48..]);
        Some(SignedHead {
            head: AccessHead {
                count: u(0..8),
                hash: Hash32(hash),
                time_ms: u(40..48),
            },
            signature: Signature(sig),
        })
    }
}

/// One stored entry: its bytes, the chain hash before and after it.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    /// The decoded entry.
    pub entry: AccessEntry,
    /// Its exact bytes.
    pub bytes: Vec<u8>,
    /// The chain hash before it.
    pub prev_hash: Hash32,
    /// The chain hash after it.
    pub hash: Hash32,
}

/// Why the access log cannot be used or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access log {}: {what}", file.display())]
pub struct AccessLogFault {
    /// The file.
    pub file: PathBuf,
    /// What is wrong (names the entry where one is at fault).
    pub what: String,
}

struct Job {
    entries: Vec<(PublicKey, Note, Outcome)>,
    done: oneshot::Sender<Result<(), String>>,
}

struct Shared {
    file: PathBuf,
    db: Option<Arc<Database>>,
    fault: Option<String>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    chain: ChainId,
    gateway: PublicKey,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // close the queue, then let the writer finish what it holds, so the
        // file is closed when the last handle goes (a reopen finds it free)
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

/// The access log of one data directory (cheap to clone; one per process
/// and directory, however many routers are built on it).
#[derive(Clone)]
pub(crate) struct AccessLog(Arc<Shared>);

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Shared>>> {
    static R: OnceLock<Mutex<HashMap<PathBuf, Weak<Shared>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

fn unavailable(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "access_log_unavailable",
        format!("this read cannot be recorded in the access log, so it is not served: {why}"),
    )
}

impl AccessLog {
    /// Opens (or creates) `dir/access.redb` for the gateway `gateway` on
    /// `chain`, checks that its last entry is its signed head, and starts its
    /// writer. A log that cannot be opened or fails the check is kept as a
    /// fault: every read that must be logged is then answered 503.
    pub(crate) fn open(
        dir: &Path,
        chain: ChainId,
        gateway: &Keypair,
        clock: Clock,
        anchor: Option<AnchorFn>,
    ) -> AccessLog {
        let file = dir.join(FILE_NAME);
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = reg.get(&file).and_then(Weak::upgrade) {
            return AccessLog(s);
        }
        let opened = open_checked(&file, &chain, gateway);
        let (db, fault, head) = match opened {
            Ok((db, head)) => (Some(Arc::new(db)), None, head),
            Err(e) => {
                tracing::error!("{e}; reads of patients' data are refused until it is repaired");
                (None, Some(e.what), (0, Hash32::ZERO))
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = db.as_ref().map(|db| {
            let w = Writer {
                db: db.clone(),
                chain,
                gateway: gateway.clone(),
                count: head.0,
                hash: head.1,
                clock: clock.clone(),
                anchoring: anchor.and_then(|submit| {
                    Some(Anchoring {
                        submit,
                        handle: tokio::runtime::Handle::try_current().ok()?,
                        // what was written before this start counts as
                        // anchored: it is anchored with the next anchor
                        anchored: Arc::new(head.0.into()),
                        busy: Default::default(),
                        last_ms: clock(),
                    })
                }),
            };
            std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || w.run(rx))
                .ok()
        });
        let shared = Arc::new(Shared {
            file: file.clone(),
            db,
            fault,
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(writer.flatten()),
            chain,
            gateway: gateway.public(),
        });
        reg.retain(|_, w| w.strong_count() > 0);
        reg.insert(file, Arc::downgrade(&shared));
        AccessLog(shared)
    }

    /// Records `notes` as read by `reader` with `outcome`, durably, before
    /// returning (nothing to do for no notes).
    pub(crate) async fn record(
        &self,
        reader: PublicKey,
        notes: &[Note],
        outcome: Outcome,
    ) -> Result<(), ApiError> {
        if notes.is_empty() {
            return Ok(());
        }
        if let Some(f) = &self.0.fault {
            return Err(unavailable(f));
        }
        let sender = self
            .0
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| unavailable("the gateway is stopping"))?;
        let (done, wait) = oneshot::channel();
        let job = Job {
            entries: notes.iter().map(|n| (reader, *n, outcome)).collect(),
            done,
        };
        sender
            .send(job)
            .await
            .map_err(|_| unavailable("the writer has stopped"))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(unavailable(&e)),
            Err(_) => Err(unavailable("the writer has stopped")),
        }
    }

    fn db(&self) -> Result<&Database, ApiError> {
        match (&self.0.db, &self.0.fault) {
            (Some(db), _) => Ok(db),
            (None, Some(f)) => Err(unavailable(f)),
            (None, None) => Err(unavailable("not open")),
        }
    }

    /// The signed head (`None` while the log is empty).
    pub(crate) fn head(&self) -> Result<Option<SignedHead>, ApiError> {
        let r = self.db()?.begin_read().map_err(internal)?;
        let t = match r.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(internal(e)),
        };
        let v = t.get("head").map_err(internal)?;
        Ok(v.and_then(|v| SignedHead::decode(v.value())))
    }

    /// The entries about `patient` (its own, and every block-body read),
    /// from entry number `from` on, at most `limit`.
    pub(crate) fn for_patient(
        &self,
        patient: &PublicKey,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, ApiError> {
        let r = self.db()?.begin_read().map_err(internal)?;
        let (idx, entries) = match (r.open_table(BY_PATIENT), r.open_table(ENTRIES)) {
            (Ok(i), Ok(e)) => (i, e),
            (Err(redb::TableError::TableDoesNotExist(_)), _)
            | (_, Err(redb::TableError::TableDoesNotExist(_))) => return Ok(Vec::new()),
            (Err(e), _) | (_, Err(e)) => return Err(internal(e)),
        };
        let mut seqs = Vec::new();
        for who in [patient, &NOBODY] {
            let lo = index_key(who, from);
            let hi = index_key(who, u64::MAX);
            for item in idx
                .range(lo.as_slice()..=hi.as_slice())
                .map_err(internal)?
                .take(limit)
            {
                let (k, _) = item.map_err(internal)?;
                let mut s = [0u8; 8];
                s.copy_from_slice(&k.value()[32..40]);
                seqs.push(u64::from_be_bytes(s));
            }
        }
        seqs.sort_unstable();
        seqs.dedup();
        seqs.truncate(limit);
        seqs.iter()
            .map(|s| read_entry(&entries, *s))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| unavailable(&e))
    }

    /// Every entry from number `from` on, at most `limit` (for auditors).
    pub(crate) fn range(&self, from: u64, limit: usize) -> Result<Vec<StoredEntry>, ApiError> {
        let r = self.db()?.begin_read().map_err(internal)?;
        let entries = match r.open_table(ENTRIES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(internal(e)),
        };
        let mut out = Vec::new();
        for item in entries.range(from..).map_err(internal)?.take(limit) {
            let (k, _) = item.map_err(internal)?;
            out.push(read_entry(&entries, k.value()).map_err(|e| unavailable(&e))?);
        }
        Ok(out)
    }

    /// The chain and gateway the log is of.
    pub(crate) fn ids(&self) -> (ChainId, PublicKey) {
        (self.0.chain, self.0.gateway)
    }

    /// The file.
    #[allow(dead_code)]
    pub(crate) fn file(&self) -> &Path {
        &self.0.file
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    unavailable(&format!("store error: {e}"))
}

fn index_key(patient: &PublicKey, seq: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&patient.0);
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn read_entry(
    entries: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
) -> Result<StoredEntry, String> {
    let get = |s: u64| -> Result<Vec<u8>, String> {
        entries
            .get(s)
            .map_err(|e| e.to_string())?
            .map(|v| v.value().to_vec())
            .ok_or_else(|| format!("entry {s} is missing"))
    };
    let v = get(seq)?;
    if v.len() != ENTRY_LEN + 32 {
        return Err(format!("entry {seq} is not {} bytes", ENTRY_LEN + 32));
    }
    let entry = AccessEntry::decode(&v[..ENTRY_LEN]).map_err(|e| format!("entry {seq}: {e}"))?;
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&v[ENTRY_LEN..]);
    let prev_hash = if seq == 0 {
        Hash32::ZERO
    } else {
        let p = get(seq - 1)?;
        let mut h = [0u8; 32];
        h.copy_from_slice(p.get(ENTRY_LEN..).ok_or("short entry")?);
        Hash32(h)
    };
    Ok(StoredEntry {
        entry,
        bytes: v[..ENTRY_LEN].to_vec(),
        prev_hash,
        hash: Hash32(hash),
    })
}

/// Opens the file and checks the tail against the signed head: (database,
/// (count, hash)).
fn open_checked(
    file: &Path,
    chain: &ChainId,
    gateway: &Keypair,
) -> Result<(Database, (u64, Hash32)), AccessLogFault> {
    let fault = |what: String| AccessLogFault {
        file: file.to_path_buf(),
        what,
    };
    let db = Database::create(file).map_err(|e| fault(format!("cannot open: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
    }
    let head = {
        let r = db.begin_read().map_err(|e| fault(e.to_string()))?;
        let head = match r.open_table(META) {
            Ok(t) => t
                .get("head")
                .map_err(|e| fault(e.to_string()))?
                .map(|v| v.value().to_vec()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(fault(e.to_string())),
        };
        let Some(head) = head else {
            return Ok((db, (0, Hash32::ZERO)));
        };
        let sh =
            SignedHead::decode(&head).ok_or_else(|| fault("the head record is damaged".into()))?;
        let vk = VerifyingKey::from_public(&gateway.public())
            .map_err(|e| fault(format!("gateway key: {e}")))?;
        sh.head
            .verify(chain, &vk, &sh.signature)
            .map_err(|e| fault(format!("the signed head does not verify: {e}")))?;
        if sh.head.count > 0 {
            let t = r.open_table(ENTRIES).map_err(|e| fault(e.to_string()))?;
            let last = read_entry(&t, sh.head.count - 1).map_err(fault)?;
            if last.hash != sh.head.hash
                || chain_hash(chain, &gateway.public(), &last.prev_hash, &last.bytes) != last.hash
            {
                return Err(fault(format!(
                    "entry {} does not hash to the signed head (the file was changed); \
                     `sensorchain audit` names the first bad entry",
                    sh.head.count - 1
                )));
            }
            if t.get(sh.head.count)
                .map_err(|e| fault(e.to_string()))?
                .is_some()
            {
                return Err(fault(format!(
                    "entry {} lies beyond the signed head",
                    sh.head.count
                )));
            }
        }
        (sh.head.count, sh.head.hash)
    };
    Ok((db, head))
}

/// Checks the whole access log of `dir` (of `gateway` on `chain`): every
/// entry decodes, is numbered in order, chains, and the chain ends at the
/// stored signed head, whose signature verifies. Returns the head, or the
/// fault naming the first bad entry.
pub fn verify_dir(
    dir: &Path,
    chain: &ChainId,
    gateway: &PublicKey,
) -> Result<Option<SignedHead>, AccessLogFault> {
    let file = dir.join(FILE_NAME);
    let fault = |what: String| AccessLogFault {
        file: file.clone(),
        what,
    };
    let db = redb::ReadOnlyDatabase::open(&file).map_err(|e| fault(format!("cannot open: {e}")))?;
    let r = db.begin_read().map_err(|e| fault(e.to_string()))?;
    let head = match r.open_table(META) {
        Ok(t) => t
            .get("head")
            .map_err(|e| fault(e.to_string()))?
            .map(|v| v.value().to_vec()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(fault(e.to_string())),
    };
    let mut v = ChainVerifier::new(*chain, *gateway);
    if let Ok(t) = r.open_table(ENTRIES) {
        for item in t.iter().map_err(|e| fault(e.to_string()))? {
            let (k, val) = item.map_err(|e| fault(e.to_string()))?;
            let seq = k.value();
            let bytes = val.value();
            if bytes.len() != ENTRY_LEN + 32 {
                return Err(fault(format!("entry {seq}: the record is damaged")));
            }
            v.push(&bytes[..ENTRY_LEN])
                .map_err(|e| fault(format!("entry {seq}: {e}")))?;
            if v.hash().0 != bytes[ENTRY_LEN..] {
                return Err(fault(format!(
                    "entry {seq} does not hash to its stored chain hash: the entry or an earlier one was changed"
                )));
            }
        }
    }
    let Some(head) = head else {
        return if v.count() == 0 {
            Ok(None)
        } else {
            Err(fault("entries without a signed head".into()))
        };
    };
    let sh = SignedHead::decode(&head).ok_or_else(|| fault("the head record is damaged".into()))?;
    let vk = VerifyingKey::from_public(gateway).map_err(|e| fault(format!("gateway key: {e}")))?;
    sh.head
        .verify(chain, &vk, &sh.signature)
        .map_err(|e| fault(format!("the signed head does not verify: {e}")))?;
    v.matches(&sh.head).map_err(|_| {
        fault(format!(
            "{} entries hash to {}, but the signed head says {} entries hashing to {}",
            v.count(),
            v.hash(),
            sh.head.count,
            sh.head.hash
        ))
    })?;
    Ok(Some(sh))
}

/// Checks the access log of `dir` against the anchors on the chain (each
/// `(count, hash)` of an `AccessAnchor` transaction its gateway signed):
/// the entries, hashed again from their bytes, must give `hash` after
/// `count` entries. This holds against whoever holds the gateway's key and
/// disk too: an anchored prefix cannot be rewritten unseen. Returns how
/// many anchors were checked, or the first that does not match.
pub fn verify_anchors(
    dir: &Path,
    chain: &ChainId,
    gateway: &PublicKey,
    anchors: &[(u64, Hash32)],
) -> Result<usize, AccessLogFault> {
    let file = dir.join(FILE_NAME);
    let fault = |what: String| AccessLogFault {
        file: file.clone(),
        what,
    };
    let mut want: Vec<(u64, Hash32)> = anchors.to_vec();
    want.sort_unstable_by_key(|a| a.0);
    let db = redb::ReadOnlyDatabase::open(&file).map_err(|e| fault(format!("cannot open: {e}")))?;
    let r = db.begin_read().map_err(|e| fault(e.to_string()))?;
    let mut v = ChainVerifier::new(*chain, *gateway);
    let mut next = want.iter().peekable();
    if let Ok(t) = r.open_table(ENTRIES) {
        for item in t.iter().map_err(|e| fault(e.to_string()))? {
            let Some(&&(count, hash)) = next.peek() else {
                break;
            };
            let (k, val) = item.map_err(|e| fault(e.to_string()))?;
            let bytes = val.value();
            v.push(&bytes[..ENTRY_LEN.min(bytes.len())])
                .map_err(|e| fault(format!("entry {}: {e}", k.value())))?;
            if v.count() == count {
                if v.hash() != hash {
                    return Err(fault(format!(
                        "the chain anchors {count} entries hashing to {hash}, the log's first {count} hash to {}: an anchored entry was changed",
                        v.hash()
                    )));
                }
                next.next();
            }
        }
    }
    if let Some((count, _)) = next.next() {
        return Err(fault(format!(
            "the chain anchors {count} entries, the log holds {}: anchored entries are missing",
            v.count()
        )));
    }
    Ok(want.len())
}

/// The access-log anchors of `gateway` on the chain in `store`: `(count,
/// hash)` of each `AccessAnchor` it signed, in chain order.
pub fn anchors_in_chain(
    store: &crate::store::Store,
    gateway: &PublicKey,
) -> Result<Vec<(u64, Hash32)>, crate::store::StoreError> {
    let mut out = Vec::new();
    for b in store.blocks(0) {
        let (height, bytes) = b?;
        let block = sensorchain_core::block::Block::decode(&bytes).map_err(|e| {
            crate::store::StoreError::corrupt_in("blocks", Some(height), e.to_string())
        })?;
        for tx in &block.txs {
            if tx.body.signer == *gateway
                && let sensorchain_core::tx::TxKind::AccessAnchor { count, hash } = tx.body.kind
            {
                out.push((count, hash));
            }
        }
    }
    Ok(out)
}

/// Overwrites entry `seq`'s stored bytes without any check: a test hook for
/// tamper detection (like the chain store's `tamper`). The gateway must
/// not be running on `dir`.
#[cfg(any(test, feature = "test-hooks"))]
pub fn overwrite_entry_unchecked(dir: &Path, seq: u64, entry: &[u8]) -> Result<(), String> {
    let db = Database::open(dir.join(FILE_NAME)).map_err(|e| e.to_string())?;
    let w = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut t = w.open_table(ENTRIES).map_err(|e| e.to_string())?;
        let old = t
            .get(seq)
            .map_err(|e| e.to_string())?
            .map(|v| v.value().to_vec())
            .ok_or("no such entry")?;
        let mut new = entry.to_vec();
        new.extend_from_slice(&old[ENTRY_LEN.min(old.len())..]);
        t.insert(seq, new.as_slice()).map_err(|e| e.to_string())?;
    }
    w.commit().map_err(|e| e.to_string())
}

/// Entries after which the log's head is anchored on the chain.
pub const ANCHOR_ENTRIES: u64 = 256;

/// Time after which new entries are anchored on the chain (at the next
/// write), in ms.
pub const ANCHOR_EVERY_MS: u64 = 60_000;

/// Submits an anchor of the log's head (`count` entries, chain hash
/// `hash`) to the chain; answers whether it was committed.
pub type AnchorFn =
    Arc<dyn Fn(u64, Hash32) -> futures::future::BoxFuture<'static, bool> + Send + Sync>;

/// The writer's anchoring: what it anchored last and how to anchor.
struct Anchoring {
    submit: AnchorFn,
    handle: tokio::runtime::Handle,
    /// Entries covered by the last committed anchor (shared with the
    /// submitting task).
    anchored: Arc<std::sync::atomic::AtomicU64>,
    /// An anchor is on its way.
    busy: Arc<std::sync::atomic::AtomicBool>,
    last_ms: u64,
}

/// TEST HOOK: what someone holding the gateway's key and disk could do:
/// replace entry `seq` with `entry`, recompute every chain hash from there
/// on and sign a new head with `gateway`'s key, so that [`verify_dir`]
/// finds a consistent, signed log. Only the anchors on the chain
/// ([`verify_anchors`]) tell. The gateway must not be running on `dir`.
#[cfg(any(test, feature = "test-hooks"))]
pub fn rewrite_with_key_unchecked(
    dir: &Path,
    chain: &ChainId,
    gateway: &Keypair,
    seq: u64,
    entry: &[u8],
) -> Result<(), String> {
    let db = Database::open(dir.join(FILE_NAME)).map_err(|e| e.to_string())?;
    let w = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut t = w.open_table(ENTRIES).map_err(|e| e.to_string())?;
        let mut all: Vec<(u64, Vec<u8>)> = Vec::new();
        for item in t.iter().map_err(|e| e.to_string())? {
            let (k, v) = item.map_err(|e| e.to_string())?;
            all.push((k.value(), v.value()[..ENTRY_LEN].to_vec()));
        }
        let gw = gateway.public();
        let mut hash = Hash32::ZERO;
        for (k, bytes) in &mut all {
            if *k == seq {
                *bytes = entry.to_vec();
            }
            hash = chain_hash(chain, &gw, &hash, bytes);
            let mut rec = bytes.clone();
            rec.extend_from_slice(&hash.0);
            t.insert(*k, rec.as_slice()).map_err(|e| e.to_string())?;
        }
        let head = AccessHead {
            count: all.len() as u64,
            hash,
            time_ms: 0,
        };
        let sh = SignedHead {
            head,
            signature: head.sign(chain, gateway),
        };
        w.open_table(META)
            .map_err(|e| e.to_string())?
            .insert("head", sh.encode().as_slice())
            .map_err(|e| e.to_string())?;
    }
    w.commit().map_err(|e| e.to_string())
}

/// The writer thread's state.
struct Writer {
    db: Arc<Database>,
    chain: ChainId,
    gateway: Keypair,
    count: u64,
    hash: Hash32,
    clock: Clock,
    anchoring: Option<Anchoring>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < QUEUE {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let r = self.write(&jobs);
            if let Err(e) = &r {
                tracing::error!("access log write failed: {e}");
            } else {
                self.maybe_anchor();
            }
            for j in jobs {
                let _ = j.done.send(r.clone());
            }
        }
    }

    /// Anchors the head on the chain when [`ANCHOR_ENTRIES`] entries or
    /// [`ANCHOR_EVERY_MS`] have passed since the last anchor (one anchor on
    /// its way at a time; a failed one is tried again at the next write).
    fn maybe_anchor(&mut self) {
        use std::sync::atomic::Ordering;
        let now = (self.clock)();
        let (count, hash) = (self.count, self.hash);
        let Some(a) = &mut self.anchoring else { return };
        let anchored = a.anchored.load(Ordering::Acquire);
        let due = count > anchored
            && (count - anchored >= ANCHOR_ENTRIES
                || now.saturating_sub(a.last_ms) >= ANCHOR_EVERY_MS);
        if !due || a.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        a.last_ms = now;
        let (submit, done, busy) = (a.submit.clone(), a.anchored.clone(), a.busy.clone());
        a.handle.spawn(async move {
            if submit(count, hash).await {
                done.fetch_max(count, Ordering::AcqRel);
            }
            busy.store(false, Ordering::Release);
        });
    }

    fn write(&mut self, jobs: &[Job]) -> Result<(), String> {
        let now = (self.clock)();
        let (mut count, mut hash) = (self.count, self.hash);
        let gw = self.gateway.public();
        let mut w = self.db.begin_write().map_err(|e| e.to_string())?;
        w.set_durability(Durability::Immediate)
            .map_err(|e| e.to_string())?;
        {
            let mut entries = w.open_table(ENTRIES).map_err(|e| e.to_string())?;
            let mut idx = w.open_table(BY_PATIENT).map_err(|e| e.to_string())?;
            for (reader, n, outcome) in jobs.iter().flat_map(|j| j.entries.iter()) {
                let e = AccessEntry {
                    seq: count,
                    time_ms: now,
                    reader: *reader,
                    patient: n.patient,
                    device: n.device,
                    kind: n.kind,
                    outcome: *outcome,
                    stream: n.stream,
                    from: n.from,
                    to: n.to,
                    subject: n.subject,
                };
                let bytes = e.encode();
                hash = chain_hash(&self.chain, &gw, &hash, &bytes);
                let mut rec = bytes.to_vec();
                rec.extend_from_slice(&hash.0);
                entries
                    .insert(count, rec.as_slice())
                    .map_err(|e| e.to_string())?;
                idx.insert(index_key(&n.patient, count).as_slice(), ())
                    .map_err(|e| e.to_string())?;
                count += 1;
            }
            let head = AccessHead {
                count,
                hash,
                time_ms: now,
            };
            let sh = SignedHead {
                head,
                signature: head.sign(&self.chain, &self.gateway),
            };
            let mut meta = w.open_table(META).map_err(|e| e.to_string())?;
            meta.insert("head", sh.encode().as_slice())
                .map_err(|e| e.to_string())?;
        }
        w.commit().map_err(|e| e.to_string())?;
        self.count = count;
        self.hash = hash;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Routes.

/// `?patient=&from=&limit=` of `GET /access-log` (and `?from=&limit=` of
/// `GET /access-log/entries`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogQuery {
    patient: Option<String>,
    from: Option<u64>,
    limit: Option<usize>,
}

fn limit_of(q: &LogQuery) -> Result<usize, ApiError> {
    let limit = q.limit.unwrap_or(super::DEFAULT_LIMIT);
    if limit == 0 || limit > super::MAX_LIMIT {
        return Err(ApiError::bad_request(
            "bad_limit",
            format!(
                "limit must be between 1 and {}, got {limit}",
                super::MAX_LIMIT
            ),
        ));
    }
    Ok(limit)
}

fn entry_json(state: &sensorchain_core::state::WorldState, e: &StoredEntry) -> serde_json::Value {
    let key = |k: &PublicKey| (*k != NOBODY).then(|| k.to_string());
    let x = &e.entry;
    serde_json::json!({
        "seq": x.seq,
        "time_ms": x.time_ms,
        "reader": key(&x.reader),
        "reader_role": state.identity(&x.reader).and_then(|r| r.role).map(|r| r.name()),
        "patient": key(&x.patient),
        "device": key(&x.device),
        "kind": x.kind.name(),
        "outcome": x.outcome.name(),
        "stream": x.stream,
        "from": x.from,
        "to": x.to,
        "subject": (x.subject != Hash32::ZERO).then(|| x.subject.to_string()),
        "entry": ::hex::encode(&e.bytes),
        "prev_hash": e.prev_hash.to_string(),
        "hash": e.hash.to_string(),
    })
}

fn head_json(log: &AccessLog, h: Option<SignedHead>) -> serde_json::Value {
    let (chain, gw) = log.ids();
    match h {
        None => serde_json::json!({
            "count": 0, "hash": Hash32::ZERO.to_string(), "time_ms": null, "signature": null,
            "chain_id": chain.to_string(), "gateway": gw.to_string(),
        }),
        Some(h) => serde_json::json!({
            "count": h.head.count,
            "hash": h.head.hash.to_string(),
            "time_ms": h.head.time_ms,
            "signature": ::hex::encode(h.signature.0),
            "chain_id": chain.to_string(),
            "gateway": gw.to_string(),
        }),
    }
}

/// `GET /access-log?patient=KEY[&from=N&limit=L]`: the entries about one
/// patient (and every block-body read), oldest first, with the signed head.
pub(super) async fn patient_log(
    axum::extract::State(api): axum::extract::State<super::Api>,
    axum::Extension(caller): axum::Extension<super::access::Caller>,
    q: Result<axum::extract::Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> super::errors::ApiResult {
    let axum::extract::Query(q) =
        q.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let limit = limit_of(&q)?;
    let patient = match q.patient.as_deref() {
        Some(p) => PublicKey(
            sensorchain_core::hash::parse_hex::<32>(p)
                .ok_or_else(|| ApiError::bad_request("bad_key", "patient must be 64 hex digits"))?,
        ),
        None => caller
            .key
            .ok_or_else(|| ApiError::bad_request("bad_query", "patient=KEY is required"))?,
    };
    let from = q.from.unwrap_or(0);
    let log = api.log.clone();
    let state = caller.state.clone();
    api.pool
        .run(move || {
            let entries = log.for_patient(&patient, from, limit)?;
            let head = log.head()?;
            let list: Vec<_> = entries.iter().map(|e| entry_json(&state, e)).collect();
            super::ok_json(serde_json::json!({
                "patient": patient.to_string(),
                "count": list.len(),
                "entries": list,
                "head": head_json(&log, head),
            }))
        })
        .await
}

/// `GET /access-log/head`: the signed head.
pub(super) async fn head(
    axum::extract::State(api): axum::extract::State<super::Api>,
) -> super::errors::ApiResult {
    let log = api.log.clone();
    api.pool
        .run(move || {
            let h = log.head()?;
            super::ok_json(head_json(&log, h))
        })
        .await
}

/// `GET /access-log/entries?from=N&limit=L`: every entry (auditors), to
/// verify the whole chain against the signed head.
pub(super) async fn entries(
    axum::extract::State(api): axum::extract::State<super::Api>,
    axum::Extension(caller): axum::Extension<super::access::Caller>,
    q: Result<axum::extract::Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> super::errors::ApiResult {
    let axum::extract::Query(q) =
        q.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    if q.patient.is_some() {
        return Err(ApiError::bad_request(
            "bad_query",
            "patient= belongs to GET /access-log",
        ));
    }
    let limit = limit_of(&q)?;
    let from = q.from.unwrap_or(0);
    let log = api.log.clone();
    let state = caller.state.clone();
    api.pool
        .run(move || {
            let list: Vec<_> = log
                .range(from, limit)?
                .iter()
                .map(|e| entry_json(&state, e))
                .collect();
            let head = log.head()?;
            super::ok_json(serde_json::json!({
                "count": list.len(),
                "entries": list,
                "head": head_json(&log, head),
            }))
        })
        .await
}
