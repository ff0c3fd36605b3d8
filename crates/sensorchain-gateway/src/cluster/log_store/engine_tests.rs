//! [`LogStore`] under openraft's own engine: three in-process gateways
//! (a test-only network that calls the peers' `Raft` handles directly)
//! replicate blocks, snapshot and purge their logs, shut down, reopen their
//! log stores and go on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, Raft, SnapshotPolicy};

use super::tests::{TestStateMachine, payload};
use super::*;
use crate::cluster::testnet::Router;
use crate::cluster::types::{ClusterRequest, GatewayNode};

const IDS: [NodeId; 3] = [1, 2, 3];
const WAIT: Option<Duration> = Some(Duration::from_secs(30));

fn config() -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // A snapshot every 20 entries, and the log purged up to it.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(20),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    Arc::new(config.validate().unwrap())
}

/// Starts the members on their log stores in `dirs` (reopened) and their
/// state machines (kept across restarts, as a durable one would be); returns
/// them with a reader of each log store.
async fn start(
    router: &Router,
    dirs: &[tempfile::TempDir],
    sms: &[TestStateMachine],
) -> Vec<(Raft<TypeConfig>, LogStore)> {
    let mut out = Vec::new();
    for (k, id) in IDS.into_iter().enumerate() {
        let store = LogStore::open_in_dir(dirs[k].path()).unwrap();
        let reader = store.clone();
        let raft = Raft::new(id, config(), router.clone(), store, sms[k].clone())
            .await
            .unwrap();
        router.add(id, raft.clone());
        out.push((raft, reader));
    }
    out
}

/// Writes `n` blocks through the leader; returns the last log index.
async fn write_blocks(nodes: &[(Raft<TypeConfig>, LogStore)], term_tag: u64, n: u64) -> u64 {
    let m = nodes[0]
        .0
        .wait(WAIT)
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .unwrap();
    let leader = m.current_leader.unwrap();
    let raft = &nodes[IDS.iter().position(|&i| i == leader).unwrap()].0;
    let mut last = 0;
    for i in 0..n {
        let resp = raft
            .client_write(ClusterRequest::Block(payload(term_tag, i)))
            .await
            .unwrap();
        last = resp.log_id.index;
    }
    for (raft, _) in nodes {
        raft.wait(WAIT)
            .applied_index_at_least(Some(last), "all applied")
            .await
            .unwrap();
    }
    last
}

/// The members' logs: no holes above their purge points, and the same
/// entries where they overlap.
async fn check_logs(nodes: &mut [(Raft<TypeConfig>, LogStore)]) {
    let mut seen: BTreeMap<u64, Entry> = BTreeMap::new();
    for (_, store) in nodes.iter_mut() {
        let st = store.get_log_state().await.unwrap();
        let entries = store.try_get_log_entries(..).await.unwrap();
        let from = st.last_purged_log_id.map_or(0, |l| l.index + 1);
        for (k, e) in entries.iter().enumerate() {
            assert_eq!(e.log_id.index, from + k as u64, "a hole");
            if let Some(other) = seen.get(&e.log_id.index) {
                assert_eq!(other, e, "members disagree at {}", e.log_id.index);
            } else {
                seen.insert(e.log_id.index, e.clone());
            }
        }
        assert_eq!(
            st.last_log_id,
            entries.last().map(|e| e.log_id).or(st.last_purged_log_id)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_purge_and_restart() {
    let dirs: Vec<_> = IDS.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let sms: Vec<TestStateMachine> = IDS.iter().map(|_| TestStateMachine::default()).collect();
    let router = Router::default();
    let mut nodes = start(&router, &dirs, &sms).await;
    let members: BTreeMap<NodeId, GatewayNode> = IDS
        .iter()
        .map(|&id| {
            let node = GatewayNode {
                addr: format!("127.0.0.1:{}", 7400 + id),
                public_key: [id as u8; 32],
            };
            (id, node)
        })
        .collect();
    nodes[0].0.initialize(members).await.unwrap();

    let last = write_blocks(&nodes, 1, 60).await;
    // Snapshots were taken and the logs purged up to them.
    for (raft, store) in &mut nodes {
        raft.wait(WAIT)
            .metrics(|m| m.purged.is_some(), "a purge")
            .await
            .unwrap();
        let st = store.get_log_state().await.unwrap();
        assert!(st.last_purged_log_id.is_some_and(|p| p.index >= 20));
        assert_eq!(st.last_log_id.map(|l| l.index), Some(last));
        println!(
            "member {}: log state after 60 blocks: {st:?}",
            raft.metrics().borrow().id
        );
    }
    check_logs(&mut nodes).await;
    let mut votes = Vec::new();
    for (_, store) in &mut nodes {
        votes.push(store.read_vote().await.unwrap().unwrap());
    }

    // Shut down, reopen the log stores, go on.
    for (raft, _) in &nodes {
        raft.shutdown().await.unwrap();
    }
    for id in IDS {
        router.remove(id);
    }
    drop(nodes);
    let mut nodes = start(&router, &dirs, &sms).await;
    for (k, (_, store)) in nodes.iter_mut().enumerate() {
        let vote = store.read_vote().await.unwrap().unwrap();
        assert!(vote >= votes[k], "the vote went back");
        let st = store.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id.map(|l| l.index), Some(last));
    }
    let last2 = write_blocks(&nodes, 2, 30).await;
    assert!(last2 >= last + 30);
    check_logs(&mut nodes).await;
    for (raft, store) in &mut nodes {
        let st = store.get_log_state().await.unwrap();
        println!(
            "member {}: log state after the restart and 30 more: {st:?}",
            raft.metrics().borrow().id
        );
    }
    for (raft, _) in &nodes {
        raft.shutdown().await.unwrap();
    }
}
