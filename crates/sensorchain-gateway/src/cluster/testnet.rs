//! TEST-ONLY network between in-process members: each member's `Raft`
//! handle called directly. A member can be cut off (a partition) and
//! healed; the peer links of a real cluster come later.

// openraft's RPC errors are the network trait's own error type.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, Raft};

use super::types::{GatewayNode, NodeId, TypeConfig};

type Rpc<E = openraft::error::Infallible> = RPCError<NodeId, GatewayNode, RaftError<NodeId, E>>;

#[derive(Default)]
struct Members {
    rafts: BTreeMap<NodeId, Raft<TypeConfig>>,
    cut: BTreeSet<NodeId>,
}

/// The members' `Raft` handles; as a network factory, the messages of the
/// member it was made for ([`Router::member`]) or of nobody in particular.
#[derive(Clone, Default)]
pub(super) struct Router {
    members: Arc<Mutex<Members>>,
    from: Option<NodeId>,
}

impl Router {
    fn with<T>(&self, f: impl FnOnce(&mut Members) -> T) -> T {
        f(&mut self.members.lock().unwrap())
    }

    /// The factory of member `id`'s messages (cut off with it).
    pub(super) fn member(&self, id: NodeId) -> Router {
        Router {
            members: self.members.clone(),
            from: Some(id),
        }
    }

    /// Adds (or replaces) a member's handle.
    pub(super) fn add(&self, id: NodeId, raft: Raft<TypeConfig>) {
        self.with(|m| m.rafts.insert(id, raft));
    }

    /// Removes a member (it is down).
    pub(super) fn remove(&self, id: NodeId) {
        self.with(|m| m.rafts.remove(&id));
    }

    /// Cuts member `id` off: nothing reaches it, nothing it sends arrives.
    pub(super) fn cut(&self, id: NodeId) {
        self.with(|m| m.cut.insert(id));
    }

    /// Heals every cut.
    pub(super) fn heal(&self) {
        self.with(|m| m.cut.clear());
    }

    fn target<E: std::error::Error>(&self, to: NodeId) -> Result<Raft<TypeConfig>, Rpc<E>> {
        let unreachable = |why: &str| {
            RPCError::Unreachable(Unreachable::new(&AnyError::error(format!(
                "node {to}: {why}"
            ))))
        };
        self.with(|m| {
            if m.cut.contains(&to) || self.from.is_some_and(|f| m.cut.contains(&f)) {
                return Err(unreachable("cut off"));
            }
            m.rafts.get(&to).cloned().ok_or_else(|| unreachable("down"))
        })
    }
}

/// One member's connection to another.
pub(super) struct Link {
    router: Router,
    to: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Link;

    async fn new_client(&mut self, to: NodeId, _node: &GatewayNode) -> Link {
        Link {
            router: self.clone(),
            to,
        }
    }
}

fn remote<E: std::error::Error>(to: NodeId) -> impl FnOnce(RaftError<NodeId, E>) -> Rpc<E> {
    move |e| RPCError::RemoteError(RemoteError::new(to, e))
}

impl RaftNetwork<TypeConfig> for Link {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _o: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, Rpc> {
        let raft = self.router.target(self.to)?;
        raft.append_entries(rpc).await.map_err(remote(self.to))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _o: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, Rpc<InstallSnapshotError>> {
        let raft = self.router.target(self.to)?;
        raft.install_snapshot(rpc).await.map_err(remote(self.to))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _o: RPCOption,
    ) -> Result<VoteResponse<NodeId>, Rpc> {
        let raft = self.router.target(self.to)?;
        raft.vote(rpc).await.map_err(remote(self.to))
    }
}
