//! `sensorchain genesis`

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use sensorchain_core::chain::Chain;
use sensorchain_core::permissions::{Permissions, Role};
use sensorchain_core::tx::{GENESIS_MAX_MEMBERS, GenesisConfig, Member, Params};

use super::GenesisArgs;
use sensorchain_gateway::keys::{parse_public, read_keypair};
use sensorchain_gateway::node::now_ms;

/// Parses `ROLE:KEY[:PERMISSIONS]`.
pub fn parse_member(s: &str) -> anyhow::Result<Member> {
    let mut parts = s.splitn(3, ':');
    let (Some(role), Some(key)) = (parts.next(), parts.next()) else {
        bail!("member {s:?}: expected ROLE:KEY[:PERMISSIONS]");
    };
    let role: Role = role
        .parse()
        .with_context(|| format!("member {s:?}: unknown role {role:?}"))?;
    let key = parse_public(key).with_context(|| format!("member {s:?}"))?;
    let permissions = match parts.next() {
        Some(p) => p
            .parse::<Permissions>()
            .with_context(|| format!("member {s:?}: bad permissions {p:?}"))?,
        None => role.default_permissions(),
    };
    Ok(Member {
        key,
        permissions,
        role,
    })
}

/// Parses `NUM/DEN`.
pub fn parse_fraction(s: &str) -> anyhow::Result<(u8, u8)> {
    let (n, d) = s
        .split_once('/')
        .with_context(|| format!("{s:?}: expected NUM/DEN such as 1/2"))?;
    let (n, d): (u8, u8) = (n.trim().parse()?, d.trim().parse()?);
    anyhow::ensure!(d > 0 && n <= d, "{s:?}: need 0 <= NUM <= DEN and DEN > 0");
    Ok((n, d))
}

/// Builds the genesis configuration from arguments (the creator is added as
/// an admin if not listed).
pub fn genesis_config(
    args: &GenesisArgs,
    creator: &sensorchain_core::identity::PublicKey,
) -> anyhow::Result<GenesisConfig> {
    let mut members = Vec::new();
    for m in &args.members {
        let m = parse_member(m)?;
        if members.iter().any(|x: &Member| x.key == m.key) {
            bail!("key {} listed twice", m.key);
        }
        members.push(m);
    }
    if !members.iter().any(|m| m.key == *creator) {
        members.insert(0, Member::of_role(*creator, Role::Admin));
    }
    if !members
        .iter()
        .any(|m| m.key == *creator && m.permissions.contains(Permissions::ADMIN))
    {
        bail!("the creator must be an admin");
    }
    if !members
        .iter()
        .any(|m| m.permissions.contains(Permissions::VALIDATE))
    {
        bail!("no validator: add at least one gateway, e.g. --member gateway:gw.key");
    }
    anyhow::ensure!(
        members.len() <= GENESIS_MAX_MEMBERS,
        "at most {GENESIS_MAX_MEMBERS} members at genesis (grant the others later)"
    );
    let (num, den) = parse_fraction(&args.admin_consensus)?;
    anyhow::ensure!(args.max_block_txs > 0, "--max-block-txs must be at least 1");
    let params = Params {
        admin_consensus_num: num,
        admin_consensus_den: den,
        pow_difficulty: args.pow_difficulty,
        max_block_txs: args.max_block_txs,
        ..Params::default()
    };
    GenesisConfig::new(&args.name, params, &members).with_context(|| {
        format!(
            "chain name longer than {} bytes",
            sensorchain_core::tx::CHAIN_NAME_MAX
        )
    })
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename); an
/// existing file is replaced only if `force`.
pub fn write_file(path: &Path, bytes: &[u8], force: bool) -> anyhow::Result<()> {
    // public material: readable by all
    super::write_file_atomic(path, bytes, 0o644, force)
}

/// Creates the genesis block and writes it.
pub fn genesis(args: &GenesisArgs) -> anyhow::Result<ExitCode> {
    super::refuse_overwrite(&args.out, args.force)?;
    let creator = read_keypair(&args.creator)?;
    let cfg = genesis_config(args, &creator.public())?;
    let members = cfg.members.len();
    let block =
        Chain::genesis_block(&creator, cfg, now_ms()).map_err(|e| anyhow::anyhow!("{e}"))?;
    write_file(&args.out, &block.to_vec(), args.force)?;
    println!("wrote {} ({members} members)", args.out.display());
    println!("chain id    {}", block.header.chain_id);
    println!("genesis     {}", block.hash());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_fractions() {
        let pk = sensorchain_core::identity::Keypair::from_seed([1; 32]).public();
        let m = parse_member(&format!("device:{pk}")).unwrap();
        assert_eq!(m.permissions, Role::Device.default_permissions());
        let m = parse_member(&format!("doctor:{pk}:connect")).unwrap();
        assert_eq!(m.permissions, Permissions::CONNECT);
        assert!(parse_member("wizard:00").is_err());
        assert!(parse_member(&format!("device:{pk}:fly")).is_err());
        assert_eq!(parse_fraction("2/3").unwrap(), (2, 3));
        assert!(parse_fraction("3/2").is_err());
        assert!(parse_fraction("1/0").is_err());
    }
}
