//! Metrics of the peer links (served with the gateway's others at
//! `/metrics`, prefix `sensorchain_peer_`): every request this gateway
//! sends to a peer, by kind and outcome, with its time to the answer and
//! its bytes; the dials and sessions; the requests it serves.
//!
//! A [`PeerConfig`](super::PeerConfig) carries one `Arc<PeerMetrics>`;
//! [`crate::metrics::Metrics`] registers the gateway's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sensorchain_core::peer::Kind;

use super::PeerError;

/// Labels of a request: its kind and what became of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// snake_case kind (`append_entries`, `vote`, `install_snapshot`,
    /// `forward`, `finality_vote`, `blocks`, `rejoin`, `status`).
    pub kind: &'static str,
    /// `answered`, `timeout`, `unreachable`, `too_large`, `protocol`,
    /// `unknown_node` or `shutdown`.
    pub outcome: &'static str,
}

/// A label with one `kind` value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// snake_case kind, as in [`RequestLabels::kind`].
    pub kind: &'static str,
}

/// A label with one `outcome` value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `established` or `failed`.
    pub outcome: &'static str,
}

/// The peer links' metrics (cheap to share: every field is an `Arc`
/// inside).
#[derive(Debug)]
pub struct PeerMetrics {
    /// Requests sent, by kind and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Seconds from sending a request to its answer (answered ones), by
    /// kind.
    pub request_seconds: Family<KindLabel, Histogram>,
    /// Bytes of the requests sent (peer messages, before the session's
    /// encryption).
    pub bytes_sent: Counter,
    /// Bytes of the answers received.
    pub bytes_received: Counter,
    /// Dials of a peer (TCP connect and handshake), by outcome.
    pub dials: Family<OutcomeLabel, Counter>,
    /// Sessions this gateway dialled that are open now.
    pub sessions_dialled: Gauge,
    /// Requests served to peers, by kind.
    pub served: Family<KindLabel, Counter>,
}

impl Default for PeerMetrics {
    fn default() -> Self {
        PeerMetrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 18))
            }),
            bytes_sent: Counter::default(),
            bytes_received: Counter::default(),
            dials: Family::default(),
            sessions_dialled: Gauge::default(),
            served: Family::default(),
        }
    }
}

impl PeerMetrics {
    /// Registers every metric in `registry` (under its prefix,
    /// `peer_…`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "peer_requests",
            "Requests sent to peer gateways, by kind and outcome",
            self.requests.clone(),
        );
        registry.register(
            "peer_request_seconds",
            "Seconds from sending a peer request to its answer, by kind",
            self.request_seconds.clone(),
        );
        registry.register(
            "peer_sent_bytes",
            "Bytes of peer requests sent (before the session's encryption)",
            self.bytes_sent.clone(),
        );
        registry.register(
            "peer_received_bytes",
            "Bytes of peer answers received",
            self.bytes_received.clone(),
        );
        registry.register(
            "peer_dials",
            "Dials of peer gateways (connect and handshake), by outcome",
            self.dials.clone(),
        );
        registry.register(
            "peer_sessions_dialled",
            "Peer sessions this gateway dialled that are open",
            self.sessions_dialled.clone(),
        );
        registry.register(
            "peer_served",
            "Requests served to peer gateways, by kind",
            self.served.clone(),
        );
    }

    /// Counts a request sent and what became of it (`answer_bytes`: the
    /// answer's size, if answered).
    pub fn request(
        &self,
        kind: Kind,
        sent_bytes: usize,
        result: Result<usize, &PeerError>,
        seconds: f64,
    ) {
        let kind = kind_label(kind);
        self.bytes_sent.inc_by(sent_bytes as u64);
        let outcome = match result {
            Ok(answer_bytes) => {
                self.bytes_received.inc_by(answer_bytes as u64);
                self.request_seconds
                    .get_or_create(&KindLabel { kind })
                    .observe(seconds);
                "answered"
            }
            Err(e) => error_label(e),
        };
        self.requests
            .get_or_create(&RequestLabels { kind, outcome })
            .inc();
    }

    /// Counts a dial.
    pub fn dialled(&self, ok: bool) {
        let outcome = if ok { "established" } else { "failed" };
        self.dials.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Counts a request served.
    pub fn served(&self, kind: Kind) {
        self.served
            .get_or_create(&KindLabel {
                kind: kind_label(kind),
            })
            .inc();
    }
}

/// The snake_case label of a request kind.
pub fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::AppendEntries => "append_entries",
        Kind::Vote => "vote",
        Kind::InstallSnapshot => "install_snapshot",
        Kind::Forward => "forward",
        Kind::FinalityVote => "finality_vote",
        Kind::Blocks => "blocks",
        Kind::Rejoin => "rejoin",
        Kind::Status => "status",
    }
}

fn error_label(e: &PeerError) -> &'static str {
    match e {
        PeerError::Unreachable(_) => "unreachable",
        PeerError::Timeout(_) => "timeout",
        PeerError::TooLarge(_) => "too_large",
        PeerError::Protocol(_) => "protocol",
        PeerError::UnknownNode(_) => "unknown_node",
        PeerError::Shutdown => "shutdown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_kind_and_outcome() {
        let m = PeerMetrics::default();
        let mut r = Registry::with_prefix("sensorchain");
        m.register(&mut r);
        m.request(Kind::AppendEntries, 100, Ok(40), 0.002);
        m.request(Kind::AppendEntries, 100, Ok(40), 0.004);
        m.request(
            Kind::Forward,
            50,
            Err(&PeerError::Timeout(std::time::Duration::from_secs(1))),
            1.0,
        );
        m.dialled(true);
        m.served(Kind::Vote);
        let mut t = String::new();
        prometheus_client::encoding::text::encode(&mut t, &r).unwrap();
        for want in [
            "sensorchain_peer_requests_total{kind=\"append_entries\",outcome=\"answered\"} 2",
            "sensorchain_peer_requests_total{kind=\"forward\",outcome=\"timeout\"} 1",
            "sensorchain_peer_request_seconds_count{kind=\"append_entries\"} 2",
            "sensorchain_peer_sent_bytes_total 250",
            "sensorchain_peer_received_bytes_total 80",
            "sensorchain_peer_dials_total{outcome=\"established\"} 1",
            "sensorchain_peer_served_total{kind=\"vote\"} 1",
        ] {
            assert!(t.contains(want), "{want} not in:\n{t}");
        }
    }
}
