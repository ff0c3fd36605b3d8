//! Prometheus metrics of a gateway (served at `/metrics` by the API).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::net::peer::metrics::PeerMetrics;
use std::sync::Arc;

/// A label with one `reason` value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// snake_case reason.
    pub reason: String,
}

/// Every metric of a gateway.
pub struct Metrics {
    registry: Registry,
    /// Transactions committed in blocks (readings and others).
    pub txs_committed: Counter,
    /// Readings committed.
    pub readings_committed: Counter,
    /// Submissions refused, by reason.
    pub rejects: Family<Reason, Counter>,
    /// Height of the last committed block.
    pub block_height: Gauge,
    /// Height of the last final block (its certificate stored).
    pub finalized_height: Gauge,
    /// Blocks committed since start.
    pub blocks_committed: Counter,
    /// Seconds from a submission's arrival to its durable commit.
    pub ingest_latency: Histogram,
    /// Seconds to build, validate and durably store one block.
    pub block_commit_seconds: Histogram,
    /// Seconds to cut and build one block (proposal).
    pub block_build_seconds: Histogram,
    /// Seconds to validate and durably store one block.
    pub block_store_seconds: Histogram,
    /// Transactions waiting for a block.
    pub pending: Gauge,
    /// Established sessions now.
    pub sessions_active: Gauge,
    /// Sessions established since start.
    pub sessions_total: Counter,
    /// Handshakes refused or failed, by reason.
    pub handshake_failures: Family<Reason, Counter>,
    /// Links closed, by reason (timeout, malformed, revoked, ...).
    pub links_closed: Family<Reason, Counter>,
    /// Frames refused at the link layer (oversized, malformed COBS or encoding).
    pub bad_frames: Family<Reason, Counter>,
    /// The peer links' requests, dials and sessions.
    pub peer: Arc<PeerMetrics>,
    /// Raft's log and the store files, read at each scrape
    /// ([`crate::node::Node::refresh_metrics`]).
    pub log: LogGauges,
    /// Times the node stopped on a storage failure (a full disk, an I/O
    /// error) since the process started.
    pub storage_failures: Counter,
    /// Times the node was restarted on its store after a storage failure,
    /// once the disk took writes again.
    pub storage_heals: Counter,
    /// 1 while the node is stopped on a storage failure (every submission
    /// refused `storage_failed`), else 0.
    pub storage_failed: Gauge,
}

/// Raft's log and the store files, as gauges (set at each scrape).
#[derive(Debug, Default)]
pub struct LogGauges {
    /// Raft's current term.
    pub term: Gauge,
    /// The last index of the Raft log (-1: empty).
    pub last_log_index: Gauge,
    /// The last log index applied to the chain (-1: none).
    pub applied_index: Gauge,
    /// The last index purged from the log, below the latest snapshot (-1:
    /// none).
    pub purged_index: Gauge,
    /// Entries in the log (last index less purged index).
    pub entries: Gauge,
    /// 1 while this gateway leads.
    pub leader: Gauge,
    /// Bytes of `raft.redb`.
    pub log_file_bytes: Gauge,
    /// Bytes of `chain.redb`.
    pub chain_file_bytes: Gauge,
}

impl LogGauges {
    fn register(&self, r: &mut Registry) {
        let g = [
            ("raft_term", "Raft's current term", &self.term),
            (
                "raft_last_log_index",
                "Last index of the Raft log (-1: empty)",
                &self.last_log_index,
            ),
            (
                "raft_applied_index",
                "Last Raft log index applied to the chain (-1: none)",
                &self.applied_index,
            ),
            (
                "raft_purged_index",
                "Last Raft log index purged below a snapshot (-1: none)",
                &self.purged_index,
            ),
            (
                "raft_log_entries",
                "Entries kept in the Raft log",
                &self.entries,
            ),
            ("raft_leader", "1 while this gateway leads", &self.leader),
            (
                "raft_log_file_bytes",
                "Bytes of the Raft log file (raft.redb)",
                &self.log_file_bytes,
            ),
            (
                "chain_file_bytes",
                "Bytes of the chain store file (chain.redb)",
                &self.chain_file_bytes,
            ),
        ];
        for (name, help, gauge) in g {
            r.register(name, help, gauge.clone());
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set, registered under the `sensorchain_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sensorchain");
        let m = Metrics {
            txs_committed: Counter::default(),
            readings_committed: Counter::default(),
            rejects: Family::default(),
            block_height: Gauge::default(),
            finalized_height: Gauge::default(),
            blocks_committed: Counter::default(),
            ingest_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            block_commit_seconds: Histogram::new(exponential_buckets(0.0002, 2.0, 16)),
            block_build_seconds: Histogram::new(exponential_buckets(0.0002, 2.0, 16)),
            block_store_seconds: Histogram::new(exponential_buckets(0.0002, 2.0, 16)),
            pending: Gauge::default(),
            sessions_active: Gauge::default(),
            sessions_total: Counter::default(),
            handshake_failures: Family::default(),
            links_closed: Family::default(),
            bad_frames: Family::default(),
            peer: Arc::default(),
            log: LogGauges::default(),
            storage_failures: Counter::default(),
            storage_heals: Counter::default(),
            storage_failed: Gauge::default(),
            registry: Registry::default(),
        };
        m.peer.register(&mut registry);
        m.log.register(&mut registry);
        registry.register(
            "txs_committed",
            "Transactions committed in blocks",
            m.txs_committed.clone(),
        );
        registry.register(
            "readings_committed",
            "Readings committed in blocks",
            m.readings_committed.clone(),
        );
        registry.register(
            "rejects",
            "Submissions refused, by reason",
            m.rejects.clone(),
        );
        registry.register(
            "block_height",
            "Height of the last committed block",
            m.block_height.clone(),
        );
        registry.register(
            "finalized_height",
            "Height of the last final block (its certificate stored)",
            m.finalized_height.clone(),
        );
        registry.register(
            "blocks_committed",
            "Blocks committed since start",
            m.blocks_committed.clone(),
        );
        registry.register(
            "ingest_latency_seconds",
            "Seconds from a submission's arrival to its durable commit",
            m.ingest_latency.clone(),
        );
        registry.register(
            "block_commit_seconds",
            "Seconds from cutting a block to its durable commit (build, wait, validate, store)",
            m.block_commit_seconds.clone(),
        );
        registry.register(
            "block_build_seconds",
            "Seconds to build one block from the pool (proposal)",
            m.block_build_seconds.clone(),
        );
        registry.register(
            "block_store_seconds",
            "Seconds to validate and durably store one block",
            m.block_store_seconds.clone(),
        );
        registry.register(
            "pending",
            "Transactions waiting for a block",
            m.pending.clone(),
        );
        registry.register(
            "sessions_active",
            "Established sessions",
            m.sessions_active.clone(),
        );
        registry.register(
            "sessions",
            "Sessions established since start",
            m.sessions_total.clone(),
        );
        registry.register(
            "handshake_failures",
            "Handshakes refused or failed, by reason",
            m.handshake_failures.clone(),
        );
        registry.register(
            "links_closed",
            "Links closed, by reason",
            m.links_closed.clone(),
        );
        registry.register(
            "bad_frames",
            "Frames refused at the link layer, by reason",
            m.bad_frames.clone(),
        );
        registry.register(
            "storage_failures",
            "Times the node stopped on a storage failure (full disk, I/O error)",
            m.storage_failures.clone(),
        );
        registry.register(
            "storage_heals",
            "Times the node was restarted on its store after a storage failure",
            m.storage_heals.clone(),
        );
        registry.register(
            "storage_failed",
            "1 while the node is stopped on a storage failure, else 0",
            m.storage_failed.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a refused submission.
    pub fn reject(&self, reason: &str) {
        self.rejects
            .get_or_create(&Reason {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a failed handshake.
    pub fn handshake_failed(&self, reason: &str) {
        self.handshake_failures
            .get_or_create(&Reason {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a closed link.
    pub fn link_closed(&self, reason: &str) {
        self.links_closed
            .get_or_create(&Reason {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a bad frame.
    pub fn bad_frame(&self, reason: &str) {
        self.bad_frames
            .get_or_create(&Reason {
                reason: reason.into(),
            })
            .inc();
    }

    /// The current value of a reject counter (for summaries).
    pub fn reject_count(&self, reason: &str) -> u64 {
        self.rejects
            .get_or_create(&Reason {
                reason: reason.into(),
            })
            .get()
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_counters() {
        let m = Metrics::new();
        m.reject("replay");
        m.reject("replay");
        m.readings_committed.inc();
        let t = m.encode();
        assert!(
            t.contains("sensorchain_rejects_total{reason=\"replay\"} 2"),
            "{t}"
        );
        assert!(t.contains("sensorchain_readings_committed_total 1"), "{t}");
        assert_eq!(m.reject_count("replay"), 2);
    }
}
