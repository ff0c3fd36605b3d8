//! Fixtures shared by the gateway's tests: the unit tests (`cfg(test)`),
//! and the integration tests of the top-level `tests/` through the
//! `test-hooks` feature. Not part of a gateway build.

use std::path::PathBuf;
use std::time::Duration;

use sensorchain_core::block::Block;
use sensorchain_core::chain::Chain;
use sensorchain_core::identity::Keypair;
use sensorchain_core::permissions::Role;
use sensorchain_core::tx::{GenesisConfig, Member, Params};

use crate::app::AppConfig;
use crate::node::NodeConfig;

mod tmpfs;
pub use tmpfs::Tmpfs;

/// The admin of the test networks: the key of seed `[1; 32]`.
pub fn admin() -> Keypair {
    Keypair::from_seed([1; 32])
}

/// The gateway of the test networks: the key of seed `[2; 32]`.
pub fn gateway() -> Keypair {
    Keypair::from_seed([2; 32])
}

/// `keys` as devices with the device role's default permissions.
pub fn device_members(keys: &[Keypair]) -> Vec<Member> {
    keys.iter()
        .map(|k| Member::of_role(k.public(), Role::Device))
        .collect()
}

/// The genesis block of a network named `name` with default parameters,
/// made by `admin` at 1 000 ms: `admin` an admin, `gateway` a gateway, then
/// `others`.
pub fn genesis_block(name: &str, admin: &Keypair, gateway: &Keypair, others: &[Member]) -> Block {
    let mut members = vec![
        Member::of_role(admin.public(), Role::Admin),
        Member::of_role(gateway.public(), Role::Gateway),
    ];
    members.extend_from_slice(others);
    let cfg = GenesisConfig::new(name, Params::default(), &members).unwrap();
    Chain::genesis_block(admin, cfg, 1_000).unwrap()
}

/// An in-process gateway of `gateway` on `genesis` storing in `data_dir`:
/// blocks cut after 5 ms, sensor links on a loopback port the system picks.
pub fn app_config(gateway: &Keypair, genesis: Block, data_dir: impl Into<PathBuf>) -> AppConfig {
    let mut c = AppConfig::new(gateway.clone(), genesis, data_dir);
    c.node = NodeConfig {
        batch_timeout: Duration::from_millis(5),
        ..NodeConfig::default()
    };
    c.tcp = Some("127.0.0.1:0".into());
    c
}
