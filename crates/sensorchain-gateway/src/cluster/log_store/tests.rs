//! Tests of [`LogStore`]: openraft's own storage suite, a kill test (child
//! processes SIGKILLed at random moments), and the edges of truncate, purge
//! and damaged records.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Cursor, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogStorageExt, RaftStateMachine, Snapshot};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StoredMembership,
};
use tempfile::TempDir;

use super::*;
use crate::cluster::types::{ClusterRequest, ClusterResponse, GatewayNode};

// ------------------------------------------------------------- helpers

/// splitmix64: a small seeded generator (the kill test prints its seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The block bytes of the test entry (`term`, `index`): a length and
/// content that only these two determine, so a reader can check them.
pub(super) fn payload(term: u64, index: u64) -> Vec<u8> {
    let len = if index.is_multiple_of(37) {
        100_000
    } else {
        usize::try_from((index * 7919 + term * 31) % 2000).unwrap() + 1
    };
    let mut rng = Rng((term << 40) ^ index);
    (0..len).map(|_| rng.next() as u8).collect()
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// A block entry written by leader (`term`, node 1) at `index`.
fn ent(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(ClusterRequest::Block(payload(term, index))),
    }
}

fn ents(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    indexes.map(|i| ent(term, i)).collect()
}

async fn indexes(store: &mut LogStore) -> Vec<u64> {
    let entries = store.try_get_log_entries(..).await.unwrap();
    entries.iter().map(|e| e.log_id.index).collect()
}

/// The (purged, last) indexes of `get_log_state`.
async fn state(store: &mut LogStore) -> (Option<u64>, Option<u64>) {
    let s = store.get_log_state().await.unwrap();
    (
        s.last_purged_log_id.map(|l| l.index),
        s.last_log_id.map(|l| l.index),
    )
}

// ------------------------------------------- openraft's storage suite

/// TEST-ONLY state machine: keeps the last applied log id and membership
/// in memory and snapshots exactly those. The product's state machine
/// (applying blocks to the chain store) is not written yet.
#[derive(Clone, Default)]
pub(super) struct TestStateMachine {
    inner: Arc<Mutex<TestSmState>>,
}

#[derive(Default)]
struct TestSmState {
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, GatewayNode>,
    snapshot: Option<(SnapshotMeta<NodeId, GatewayNode>, Vec<u8>)>,
    snapshots_built: u64,
}

type SmImage = (Option<LogId>, StoredMembership<NodeId, GatewayNode>);

impl RaftSnapshotBuilder<TypeConfig> for TestStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let mut s = self.inner.lock().unwrap();
        let data = postcard::to_allocvec(&(s.last_applied, s.membership.clone()))
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        s.snapshots_built += 1;
        let meta = SnapshotMeta {
            last_log_id: s.last_applied,
            last_membership: s.membership.clone(),
            snapshot_id: format!("test-{}", s.snapshots_built),
        };
        s.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for TestStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<SmImage, StorageError> {
        let s = self.inner.lock().unwrap();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ClusterResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut s = self.inner.lock().unwrap();
        let mut out = Vec::new();
        for entry in entries {
            s.last_applied = Some(entry.log_id);
            if let EntryPayload::Membership(m) = entry.payload {
                s.membership = StoredMembership::new(Some(entry.log_id), m);
            }
            out.push(ClusterResponse::Noop);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, GatewayNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let (last_applied, membership): SmImage = postcard::from_bytes(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        let mut s = self.inner.lock().unwrap();
        s.last_applied = last_applied;
        s.membership = membership;
        s.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let s = self.inner.lock().unwrap();
        Ok(s.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, TestStateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, TestStateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = LogStore::open_in_dir(dir.path())?;
        Ok((dir, store, TestStateMachine::default()))
    }
}

#[test]
fn openraft_storage_suite() {
    let started = Instant::now();
    Suite::test_all(Builder).unwrap();
    println!(
        "openraft 0.9 storage suite passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------- edge cases

#[tokio::test]
async fn truncate_and_purge_leave_no_holes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open_in_dir(dir.path()).unwrap();
    assert_eq!(state(&mut store).await, (None, None));
    // On an empty log both are no-ops.
    store.truncate(log_id(1, 0)).await.unwrap();
    store.truncate(log_id(1, 5)).await.unwrap();
    assert_eq!(state(&mut store).await, (None, None));

    store.blocking_append(ents(1, 1..=10)).await.unwrap();
    // Truncating past the end changes nothing.
    store.truncate(log_id(1, 11)).await.unwrap();
    assert_eq!(indexes(&mut store).await, (1..=10).collect::<Vec<_>>());
    store.truncate(log_id(1, 8)).await.unwrap();
    assert_eq!(indexes(&mut store).await, (1..=7).collect::<Vec<_>>());
    assert_eq!(state(&mut store).await, (None, Some(7)));

    store.purge(log_id(1, 3)).await.unwrap();
    assert_eq!(indexes(&mut store).await, vec![4, 5, 6, 7]);
    assert_eq!(state(&mut store).await, (Some(3), Some(7)));
    // A purge behind the last one changes nothing.
    store.purge(log_id(1, 2)).await.unwrap();
    assert_eq!(state(&mut store).await, (Some(3), Some(7)));
    // Reads of the purged part find nothing; a range across it finds the rest.
    assert!(store.try_get_log_entries(0..4).await.unwrap().is_empty());
    assert_eq!(store.try_get_log_entries(2..6).await.unwrap().len(), 2);
    // Empty and inverted ranges read nothing (and do not panic).
    assert!(store.try_get_log_entries(5..5).await.unwrap().is_empty());
    #[allow(clippy::reversed_empty_ranges)]
    let inverted = store.try_get_log_entries(6..4).await.unwrap();
    assert!(inverted.is_empty());

    // Purging everything: the state's last log id is the purged one.
    store.purge(log_id(1, 7)).await.unwrap();
    assert!(indexes(&mut store).await.is_empty());
    assert_eq!(state(&mut store).await, (Some(7), Some(7)));
    // The next append continues at purged + 1; anything else is a hole.
    assert!(store.blocking_append([ent(2, 9)]).await.is_err());
    store.blocking_append([ent(2, 8)]).await.unwrap();
    assert_eq!(state(&mut store).await, (Some(7), Some(8)));
    // Entries at or below the last purged are skipped, the rest appended.
    store.blocking_append(ents(2, 6..=7)).await.unwrap();
    assert_eq!(indexes(&mut store).await, vec![8]);
    store.truncate(log_id(2, 8)).await.unwrap();
    store.blocking_append(ents(2, 6..=8)).await.unwrap();
    assert_eq!(indexes(&mut store).await, vec![8]);
    assert_eq!(state(&mut store).await, (Some(7), Some(8)));

    // A purge beyond the end (as after installing a snapshot).
    store.purge(log_id(3, 20)).await.unwrap();
    assert_eq!(state(&mut store).await, (Some(20), Some(20)));
    store.blocking_append(ents(3, 21..=23)).await.unwrap();
    // Truncating everything that follows the purge.
    store.truncate(log_id(3, 21)).await.unwrap();
    assert_eq!(state(&mut store).await, (Some(20), Some(20)));
    store.blocking_append(ents(4, 21..=22)).await.unwrap();
    store.save_committed(Some(log_id(4, 21))).await.unwrap();
    store.save_vote(&Vote::new_committed(4, 1)).await.unwrap();

    // All of it survives a reopen.
    drop(store);
    let mut store = LogStore::open_in_dir(dir.path()).unwrap();
    assert_eq!(state(&mut store).await, (Some(20), Some(22)));
    let got = store.try_get_log_entries(..).await.unwrap();
    assert_eq!(got, ents(4, 21..=22));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(4, 21)));
    assert_eq!(
        store.read_vote().await.unwrap(),
        Some(Vote::new_committed(4, 1))
    );
}

#[tokio::test]
async fn appends_that_would_leave_a_hole_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open_in_dir(dir.path()).unwrap();
    store.blocking_append(ents(1, 1..=3)).await.unwrap();
    for bad in [
        vec![ent(1, 5)],            // a gap
        vec![ent(2, 3)],            // over the last entry, without truncate
        vec![ent(1, 4), ent(1, 6)], // a gap inside the batch
        vec![ent(1, 4), ent(1, 4)], // a repeat inside the batch
    ] {
        let err = store.blocking_append(bad).await.unwrap_err();
        assert!(err.to_string().contains("not consecutive"), "{err}");
        assert_eq!(indexes(&mut store).await, vec![1, 2, 3]);
    }
    // An empty append is fine and fires its callback.
    store.blocking_append(Vec::new()).await.unwrap();
    store.blocking_append(ents(1, 4..=4)).await.unwrap();
    assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn limited_reads_stop_at_the_byte_bound_but_never_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open_in_dir(dir.path()).unwrap();
    let big = |i: u64| Entry {
        log_id: log_id(1, i),
        payload: EntryPayload::Normal(ClusterRequest::Block(vec![i as u8; READ_MAX_BYTES])),
    };
    store.blocking_append([big(1), big(2)]).await.unwrap();
    assert_eq!(store.limited_get_log_entries(1, 3).await.unwrap().len(), 1);
    assert_eq!(store.limited_get_log_entries(2, 3).await.unwrap().len(), 1);
    store.truncate(log_id(1, 1)).await.unwrap();
    store
        .blocking_append(ents(1, 1..=(READ_MAX_ENTRIES as u64 + 10)))
        .await
        .unwrap();
    let got = store.limited_get_log_entries(1, 1000).await.unwrap();
    assert!(!got.is_empty() && got.len() <= READ_MAX_ENTRIES);
    assert_eq!(got[0].log_id.index, 1);
}

/// Writes `bytes` raw under `index` in the log table of the (closed) file.
fn poke_log(path: &Path, index: u64, bytes: &[u8]) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(LOG).unwrap().insert(index, bytes).unwrap();
    txn.commit().unwrap();
}

/// Writes `bytes` raw under `key` in `table` (vote or meta) of the (closed)
/// file.
fn poke(path: &Path, table: TableDefinition<&str, &[u8]>, key: &str, bytes: &[u8]) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(table).unwrap().insert(key, bytes).unwrap();
    txn.commit().unwrap();
}

/// Damaged pages (bytes changed under redb, as a failing SD card does) are
/// found by the page check at open, which refuses the file rather than let
/// redb repair it back to an earlier commit: never a panic, never a log
/// that silently lost acknowledged entries.
#[tokio::test]
async fn damaged_pages_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut store = LogStore::open(&path).unwrap();
    store.blocking_append(ents(1, 1..=64)).await.unwrap();
    store.save_vote(&Vote::new(1, 1)).await.unwrap();
    drop(store);
    // Reopened intact: the check passes.
    drop(LogStore::open(&path).unwrap());

    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    for b in &mut bytes[4096..len] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    let Err(e) = LogStore::open(&path) else {
        panic!("a damaged file is refused");
    };
    assert!(e.to_string().contains("opening the Raft log"), "{e}");
}

#[tokio::test]
async fn damaged_records_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut store = LogStore::open(&path).unwrap();
    store.blocking_append(ents(1, 1..=6)).await.unwrap();
    store.save_vote(&Vote::new(1, 1)).await.unwrap();
    drop(store);

    let mut trailing = encode(&ent(1, 5)).unwrap();
    trailing.push(0);
    poke_log(&path, 2, b"\xff\xff\xff");
    poke_log(&path, 3, &encode(&ent(1, 9)).unwrap());
    poke_log(&path, 5, &trailing);
    let mut store = LogStore::open(&path).unwrap();

    let err = |r: Result<Vec<Entry>, StorageError>| r.unwrap_err().to_string();
    let e = err(store.try_get_log_entries(..).await);
    assert!(
        e.contains("LogIndex(2)") && e.contains("does not decode"),
        "{e}"
    );
    let e = err(store.try_get_log_entries(3..4).await);
    assert!(
        e.contains("LogIndex(3)") && e.contains("holds the entry of log id"),
        "{e}"
    );
    let e = err(store.try_get_log_entries(5..=5).await);
    assert!(e.contains("LogIndex(5)") && e.contains("trailing"), "{e}");
    let e = err(store.limited_get_log_entries(2, 3).await);
    assert!(e.contains("LogIndex(2)"), "{e}");
    // Intact records around them still read.
    assert_eq!(
        store.try_get_log_entries(4..5).await.unwrap(),
        vec![ent(1, 4)]
    );
    assert_eq!(
        store.try_get_log_entries(6..).await.unwrap(),
        vec![ent(1, 6)]
    );
    drop(store);

    // The last record's log id is wrong: the log state is an error too.
    poke_log(&path, 7, &encode(&ent(1, 70)).unwrap());
    let mut store = LogStore::open(&path).unwrap();
    let e = store.get_log_state().await.unwrap_err().to_string();
    assert!(e.contains("LogIndex(7)"), "{e}");
    // ... and so is an append after it (it reads the last entry).
    let e = store
        .blocking_append([ent(1, 8)])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("LogIndex(7)"), "{e}");
    drop(store);

    poke(&path, VOTE, VOTE_KEY, b"\x01");
    poke(&path, META, META_PURGED, b"");
    poke(&path, META, META_COMMITTED, b"\x01\x02\x03\x04\x05\x06");
    let mut store = LogStore::open(&path).unwrap();
    let e = store.read_vote().await.unwrap_err().to_string();
    assert!(
        e.contains("Vote") && e.contains("vote record does not decode"),
        "{e}"
    );
    let e = store.get_log_state().await.unwrap_err().to_string();
    assert!(e.contains("Store") && e.contains("`last_purged`"), "{e}");
    let e = store.read_committed().await.unwrap_err().to_string();
    assert!(e.contains("`committed`"), "{e}");
    drop(store);

    // An unknown format version refuses to open.
    poke(&path, META, META_FORMAT, &2u32.to_le_bytes());
    let e = LogStore::open(&path).unwrap_err().to_string();
    assert!(e.contains("format"), "{e}");
    // A file that is not a redb database is an error, not a panic.
    let other = dir.path().join("garbage.redb");
    std::fs::write(&other, vec![0x5a; 8192]).unwrap();
    assert!(LogStore::open(&other).is_err());
}

#[test]
fn file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    drop(LogStore::open(&path).unwrap());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(LogStore::open(&path).unwrap());
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn an_entry_record_starts_with_its_log_id() {
    for e in [
        ent(7, 123_456),
        Entry {
            log_id: log_id(u64::MAX, u64::MAX),
            payload: EntryPayload::Blank,
        },
    ] {
        let record = encode(&e).unwrap();
        assert_eq!(
            decode_entry_log_id(e.log_id.index, &record).unwrap(),
            e.log_id
        );
        assert_eq!(decode_entry(e.log_id.index, &record).unwrap(), e);
    }
}

// -------------------------------------------------------- kill test

/// Set in a child of [`kill_test`]: the directory of its store.
const CHILD_DIR_ENV: &str = "SC_RAFT_KILL_CHILD_DIR";
/// Set in a child of [`kill_test`]: its RNG seed.
const CHILD_SEED_ENV: &str = "SC_RAFT_KILL_CHILD_SEED";
/// Set by hand to replay a run of the kill test or the power-cut test.
const SEED_ENV: &str = "SC_RAFT_KILL_SEED";
/// The prefix of the child's report lines on stdout.
const TAG: &str = "KC ";
/// How many times [`kill_test`] kills a child.
const KILLS: u64 = 24;
/// A generous bound on one round of [`kill_test`] (a child's start and up
/// to 40 acknowledged writes, usually well under a second): a child that
/// has not reported enough by then fails the test.
const ROUND_TIMEOUT: Duration = Duration::from_secs(120);

fn report(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{TAG}{line}").unwrap();
    out.flush().unwrap();
}

/// The child process of [`kill_test`] (it re-executes this test binary
/// with this test selected and [`CHILD_DIR_ENV`] set). It writes to the
/// store forever, reporting each write on stdout only once it is
/// acknowledged (after `append`'s callback fired, after `save_vote`,
/// `truncate`, `purge` returned), and an intent line before each vote,
/// truncate and purge: `A first last term`, `v term`/`V term`,
/// `t index`/`T index`, `p index`/`P index`.
#[test]
#[ignore = "the child process of kill_test, which runs it"]
fn kill_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut store = LogStore::open_in_dir(Path::new(&dir)).expect("child: open");
        let never = drive(&mut store, &mut Rng(seed), &mut report).await;
        panic!("child: a write failed: {never:?}");
    });
}

/// Writes to the store until a write fails: appends (70 %), votes,
/// truncates of the last 1-3 entries (each followed by a vote for a new
/// term), purges up to 10 entries before the last. `emit` gets a line
/// once each write is acknowledged (after `append`'s callback fired, after
/// `save_vote`, `truncate`, `purge` returned), and an intent line before
/// each vote, truncate and purge: `A first last term`, `v term`/`V term`,
/// `t index`/`T index`, `p index`/`P index` (see [`replay`]).
async fn drive(
    store: &mut LogStore,
    rng: &mut Rng,
    emit: &mut dyn FnMut(std::fmt::Arguments<'_>),
) -> Result<(), StorageError> {
    let mut term = store.read_vote().await?.map_or(1, |v| v.leader_id.term);
    let st = store.get_log_state().await?;
    let mut last = st.last_log_id.map_or(0, |l| l.index);
    let mut purged = st.last_purged_log_id.map_or(0, |l| l.index);
    emit(format_args!("S {last} {purged} {term}"));
    loop {
        let roll = rng.below(100);
        if roll < 70 {
            let first = last + 1;
            let k = 1 + rng.below(8);
            store
                .blocking_append(ents(term, first..=first + k - 1))
                .await?;
            last = first + k - 1;
            emit(format_args!("A {first} {last} {term}"));
        } else if roll < 80 {
            term += 1;
            emit(format_args!("v {term}"));
            store.save_vote(&Vote::new(term, 1)).await?;
            emit(format_args!("V {term}"));
        } else if roll < 90 {
            if last > purged + 1 {
                let at = last - rng.below(3.min(last - purged - 1));
                emit(format_args!("t {at}"));
                store.truncate(log_id(term, at)).await?;
                emit(format_args!("T {at}"));
                last = at - 1;
                // The next entries come from a new leader.
                term += 1;
                emit(format_args!("v {term}"));
                store.save_vote(&Vote::new(term, 1)).await?;
                emit(format_args!("V {term}"));
            }
        } else if last > purged + 20 {
            let at = last - 10;
            let id = store.try_get_log_entries(at..=at).await?[0].log_id;
            emit(format_args!("p {at}"));
            store.purge(id).await?;
            emit(format_args!("P {at}"));
            purged = at;
        }
    }
}

/// What the parent knows to be on disk: checked after each kill, then
/// replaced by what is on disk.
#[derive(Default, Debug)]
struct Model {
    /// index → term of the entries that must be present (above `purged`).
    entries: BTreeMap<u64, u64>,
    purged: u64,
    vote_term: Option<u64>,
}

#[derive(Default, Debug)]
struct KillStats {
    acked_appends: u64,
    acked_entries: u64,
    acked_votes: u64,
    acked_truncates: u64,
    acked_purges: u64,
    in_flight_found_done: u64,
    in_flight_found_undone: u64,
}

impl KillStats {
    fn summary(&self, end: &Model) -> String {
        format!(
            "acknowledged: {} appends ({} entries), {} votes, {} truncates, {} purges; writes \
             in flight at the end found done {}, not done {}; log at the end: {} entries after \
             index {}",
            self.acked_appends,
            self.acked_entries,
            self.acked_votes,
            self.acked_truncates,
            self.acked_purges,
            self.in_flight_found_done,
            self.in_flight_found_undone,
            end.entries.len(),
            end.purged,
        )
    }
}

/// The seed of a randomised test: [`SEED_ENV`] if set (a replay), else
/// from the clock; printed.
fn seed(test: &str) -> u64 {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("{test}: seed {seed} (replay: {SEED_ENV}={seed})");
    seed
}

/// A write reported as started but not as done when the writer died.
#[derive(Debug, Clone, Copy)]
enum InFlight {
    Vote(u64),
    Truncate(u64),
    Purge(u64),
}

fn num(field: Option<&str>, line: &str) -> u64 {
    field
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("bad child line {line:?}"))
}

/// Applies the child's lines to `model`; returns the write in flight.
fn replay(model: &mut Model, lines: &[String], stats: &mut KillStats) -> Option<InFlight> {
    let mut in_flight = None;
    for line in lines {
        let mut f = line.split(' ');
        let kind = f.next().unwrap_or_default();
        match kind {
            "S" => {}
            "A" => {
                let (first, last, term) = (
                    num(f.next(), line),
                    num(f.next(), line),
                    num(f.next(), line),
                );
                for i in first..=last {
                    model.entries.insert(i, term);
                }
                stats.acked_appends += 1;
                stats.acked_entries += last - first + 1;
            }
            "v" => in_flight = Some(InFlight::Vote(num(f.next(), line))),
            "t" => in_flight = Some(InFlight::Truncate(num(f.next(), line))),
            "p" => in_flight = Some(InFlight::Purge(num(f.next(), line))),
            "V" => {
                model.vote_term = Some(num(f.next(), line));
                stats.acked_votes += 1;
                in_flight = None;
            }
            "T" => {
                model.entries.split_off(&num(f.next(), line));
                stats.acked_truncates += 1;
                in_flight = None;
            }
            "P" => {
                let at = num(f.next(), line);
                model.entries = model.entries.split_off(&(at + 1));
                model.purged = at;
                stats.acked_purges += 1;
                in_flight = None;
            }
            _ => panic!("unknown child line {line:?}"),
        }
    }
    in_flight
}

/// Checks the reopened `store` against `model` (what the writer had
/// acknowledged before it died, and the write it had in flight); returns
/// the model of what is on disk now.
async fn check_store(
    store: &mut LogStore,
    model: &Model,
    in_flight: Option<InFlight>,
    stats: &mut KillStats,
    round: u64,
) -> Model {
    {
        let vote = store.read_vote().await.unwrap();
        let st = store.get_log_state().await.unwrap();
        let entries = store.try_get_log_entries(..).await.unwrap();
        let ctx = || format!("round {round}: model {model:?}, in flight {in_flight:?}");

        // The vote: the last acknowledged one, or the one in flight.
        let vote_term = vote.map(|v| v.leader_id.term);
        match in_flight {
            Some(InFlight::Vote(t)) if vote_term == Some(t) => stats.in_flight_found_done += 1,
            Some(InFlight::Vote(_)) => {
                stats.in_flight_found_undone += 1;
                assert_eq!(vote_term, model.vote_term, "{}", ctx());
            }
            _ => assert_eq!(vote_term, model.vote_term, "{}", ctx()),
        }

        // The purge: the last acknowledged one, or the one in flight.
        let purged = st.last_purged_log_id.map_or(0, |l| l.index);
        match in_flight {
            Some(InFlight::Purge(at)) if purged == at => stats.in_flight_found_done += 1,
            Some(InFlight::Purge(_)) => {
                stats.in_flight_found_undone += 1;
                assert_eq!(purged, model.purged, "{}", ctx());
            }
            _ => assert_eq!(purged, model.purged, "{}", ctx()),
        }

        // No holes: consecutive from purged + 1, and the state agrees.
        for (k, e) in entries.iter().enumerate() {
            let want = purged + 1 + k as u64;
            assert_eq!(e.log_id.index, want, "hole at {want}: {}", ctx());
            let want_payload = EntryPayload::Normal(ClusterRequest::Block(payload(
                e.log_id.leader_id.term,
                want,
            )));
            assert!(
                e.payload == want_payload,
                "entry {want}'s bytes differ: {}",
                ctx()
            );
        }
        assert_eq!(
            st.last_log_id,
            entries.last().map(|e| e.log_id).or(st.last_purged_log_id),
            "{}",
            ctx()
        );

        // Every acknowledged entry is there, with its term (except what an
        // in-flight truncate may have removed).
        let on_disk: BTreeMap<u64, u64> = entries
            .iter()
            .map(|e| (e.log_id.index, e.log_id.leader_id.term))
            .collect();
        let truncated_from = match in_flight {
            Some(InFlight::Truncate(at)) => {
                if on_disk.contains_key(&at) {
                    stats.in_flight_found_undone += 1;
                } else {
                    stats.in_flight_found_done += 1;
                }
                at
            }
            _ => u64::MAX,
        };
        for (&i, &term) in model
            .entries
            .range(purged + 1..truncated_from.max(purged + 1))
        {
            assert_eq!(
                on_disk.get(&i),
                Some(&term),
                "acknowledged entry {i} lost: {}",
                ctx()
            );
        }

        Model {
            entries: on_disk,
            purged,
            vote_term,
        }
    }
}

/// Kills a child writing to the store (SIGKILL) at random moments, 24
/// times, and checks after each that everything acknowledged survived,
/// with no hole, and that the store reopens.
#[test]
fn kill_test() {
    let seed = seed("kill test");
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(seed);
    let mut model = Model::default();
    let mut stats = KillStats::default();
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "cluster::log_store::tests::kill_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(
                CHILD_SEED_ENV,
                (seed ^ round.wrapping_mul(0x9e37_79b9)).to_string(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            // A last line cut by the kill has no newline: left out (its
            // write was acknowledged, so leaving it out only weakens the
            // check).
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                if let Some(l) = line.strip_suffix('\n').and_then(|l| l.strip_prefix(TAG)) {
                    let _ = tx.send(l.to_owned());
                }
                line.clear();
            }
        });
        // Kill after a random number of acknowledged writes, plus a random
        // delay of up to 3 ms: the moment falls anywhere in a write.
        let kill_after = 1 + rng.below(40);
        let mut lines = Vec::new();
        let mut acks = 0;
        let deadline = Instant::now() + ROUND_TIMEOUT;
        while acks < kill_after {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => {
                    if l.starts_with(['A', 'V', 'T', 'P']) {
                        acks += 1;
                    }
                    lines.push(l);
                }
                Err(e) => {
                    let _ = child.kill();
                    panic!(
                        "round {round}: the child stopped reporting ({e:?}; exit {:?})",
                        child.wait()
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let in_flight = replay(&mut model, &lines, &mut stats);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        model = rt.block_on(async {
            let mut store = LogStore::open_in_dir(dir.path())
                .unwrap_or_else(|e| panic!("round {round}: reopening failed: {e}"));
            check_store(&mut store, &model, in_flight, &mut stats, round).await
        });
    }
    println!(
        "kill test: {KILLS} kills in {:.1} s, seed {seed}; {}",
        started.elapsed().as_secs_f64(),
        stats.summary(&model)
    );
    assert!(stats.acked_entries > 0);
}

// ---------------------------------------------------- power-cut test

/// TEST-ONLY redb storage backend: a file in memory that models a power
/// cut. Reads see every write (the page cache); what survives a cut is
/// what was there at the last `sync_data`, plus any subset of the writes
/// (and resizes) made since, as a disk may have written some of them.
#[derive(Debug, Clone)]
struct PowerCutDisk(Arc<Mutex<DiskState>>);

#[derive(Debug)]
struct DiskState {
    /// What reads see.
    current: Vec<u8>,
    /// What survived the last `sync_data`.
    durable: Vec<u8>,
    /// The writes and resizes since the last `sync_data`, in order.
    unsynced: Vec<DiskWrite>,
    /// How many more writes and syncs succeed before the power goes.
    io_left: u64,
    cut: bool,
}

#[derive(Debug)]
enum DiskWrite {
    Bytes(usize, Vec<u8>),
    Len(usize),
}

impl DiskWrite {
    fn apply(&self, image: &mut Vec<u8>) {
        match self {
            DiskWrite::Bytes(at, data) => {
                if image.len() < at + data.len() {
                    image.resize(at + data.len(), 0);
                }
                image[*at..at + data.len()].copy_from_slice(data);
            }
            DiskWrite::Len(len) => image.resize(*len, 0),
        }
    }
}

impl PowerCutDisk {
    /// A disk holding `image`, with power until [`arm`](Self::arm).
    fn new(image: Vec<u8>) -> PowerCutDisk {
        PowerCutDisk(Arc::new(Mutex::new(DiskState {
            current: image.clone(),
            durable: image,
            unsynced: Vec::new(),
            io_left: u64::MAX,
            cut: false,
        })))
    }

    /// The power goes at the `io_left`-th write or sync from now.
    fn arm(&self, io_left: u64) {
        self.0.lock().unwrap().io_left = io_left;
    }

    /// What the disk holds after the cut: the durable image plus each
    /// unsynced write with probability 1/2.
    fn image_after_cut(&self, rng: &mut Rng) -> (Vec<u8>, usize, usize) {
        let s = self.0.lock().unwrap();
        let mut image = s.durable.clone();
        let mut kept = 0;
        for w in &s.unsynced {
            if rng.below(2) == 0 {
                w.apply(&mut image);
                kept += 1;
            }
        }
        (image, kept, s.unsynced.len())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.0.lock().unwrap()
    }
}

impl DiskState {
    /// Counts one write or sync; fails it, and all I/O after it, once the
    /// power is gone.
    fn io(&mut self) -> std::io::Result<()> {
        if !self.cut && self.io_left > 0 {
            self.io_left -= 1;
            return Ok(());
        }
        self.cut = true;
        Err(std::io::Error::other("power cut"))
    }

    fn powered(&self) -> std::io::Result<()> {
        if self.cut {
            Err(std::io::Error::other("power cut"))
        } else {
            Ok(())
        }
    }
}

fn out_of_range() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "out of range")
}

impl redb::StorageBackend for PowerCutDisk {
    fn len(&self) -> std::io::Result<u64> {
        let s = self.state();
        s.powered()?;
        Ok(s.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let s = self.state();
        s.powered()?;
        let at = usize::try_from(offset).map_err(|_| out_of_range())?;
        let src = s.current.get(at..at + out.len()).ok_or_else(out_of_range)?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut s = self.state();
        s.io()?;
        let w = DiskWrite::Len(usize::try_from(len).map_err(|_| out_of_range())?);
        w.apply(&mut s.current);
        s.unsynced.push(w);
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let mut s = self.state();
        s.io()?;
        s.durable = s.current.clone();
        s.unsynced.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut s = self.state();
        s.io()?;
        let at = usize::try_from(offset).map_err(|_| out_of_range())?;
        if s.current.len() < at + data.len() {
            return Err(out_of_range());
        }
        let w = DiskWrite::Bytes(at, data.to_vec());
        w.apply(&mut s.current);
        s.unsynced.push(w);
        Ok(())
    }
}

/// How many power cuts [`power_cut_test`] makes.
const CUTS: u64 = 40;

/// Cuts the power of a simulated disk under the store at random moments
/// (at the n-th write or sync, n random: inside a commit, between its
/// writes and its sync, ...), 40 times; after each, what survives is the
/// last synced image plus a random half of the unsynced writes. Then the
/// store must reopen and hold every acknowledged write, with no hole. This
/// is what a SIGKILL cannot show (the page cache survives a killed
/// process): that an `append` is acknowledged, and a vote saved, only once
/// the data is synced.
#[test]
fn power_cut_test() {
    let seed = seed("power cut test");
    let started = Instant::now();
    let mut rng = Rng(seed);
    let mut image = Vec::new();
    let mut model = Model::default();
    let mut in_flight = None;
    let mut stats = KillStats::default();
    let (mut kept, mut unsynced) = (0, 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for round in 0..=CUTS {
        let disk = PowerCutDisk::new(image);
        let mut store = LogStore::open_backend(disk.clone())
            .unwrap_or_else(|e| panic!("round {round}: reopening failed: {e}"));
        model = rt.block_on(check_store(
            &mut store, &model, in_flight, &mut stats, round,
        ));
        if round == CUTS {
            break;
        }
        disk.arm(1 + rng.below(400));
        let mut lines = Vec::new();
        let mut writer_rng = Rng(rng.next());
        let result = rt.block_on(drive(&mut store, &mut writer_rng, &mut |l| {
            lines.push(l.to_string());
        }));
        assert!(
            result.is_err(),
            "round {round}: the writes outlived the power"
        );
        drop(store);
        in_flight = replay(&mut model, &lines, &mut stats);
        let (after, k, u) = disk.image_after_cut(&mut rng);
        image = after;
        kept += k;
        unsynced += u;
    }
    println!(
        "power cut test: {CUTS} cuts in {:.1} s, seed {seed}; {}; unsynced disk writes at \
         the cuts: {unsynced}, of which {kept} kept",
        started.elapsed().as_secs_f64(),
        stats.summary(&model)
    );
    assert!(stats.acked_entries > 0);
}
