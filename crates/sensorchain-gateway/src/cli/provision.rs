//! `sensorchain provision`: turns a device key (from `sensorchain keygen`)
//! into the device's key page — seed, DRBG entropy, chain id, trusted
//! gateway keys and sealed-for readers in the 332-byte layout of
//! [`sensorchain_device::provision`] — written as raw bytes, Intel HEX or
//! RP2040 UF2 for flashing, and optionally grants the device on the chain
//! through a gateway's API.
//!
//! The grant is what `sensorchain genesis --member device:KEY` gives a
//! device: the permissions `connect,write` and the role `device`
//! ([`device_grant_kinds`]), signed by an admin with its next sequence
//! number; with `--patient` the device is also assigned to a patient (needed
//! for sealed readings). `docs/PROVISIONING.md` walks through the whole
//! flow from keygen to a flashed board.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::{ArgGroup, Args, ValueEnum};
use rand_core::TryRng as _;
use serde_json::{Value, json};

use sensorchain_core::block::Block;
use sensorchain_core::hash::{ChainId, parse_hex};
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::permissions::{Permissions, Role};
use sensorchain_core::tx::TxKind;
use sensorchain_device::provision::{KEY_PAGE_LEN, KeyPage, MAX_GATEWAYS, MAX_READERS};

use super::api_client::{Api, DEFAULT_API, Receipt, permissions_of};
use super::image::{self, NRF52840_KEY_PAGE_ADDRESS, RP2040_KEY_PAGE_ADDRESS};
use sensorchain_gateway::keys::{parse_public, read_keypair, write_keypair};

/// How the key page is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PageFormat {
    /// The 332 raw bytes (`probe-rs download --binary-format bin
    /// --base-address ADDR`).
    Bin,
    /// Intel HEX at `--base-address` (`probe-rs download --binary-format
    /// hex`, nrfjprog, most programmers).
    Hex,
    /// UF2 blocks for the RP2040 boot ROM (family 0xe48bff56) at
    /// `--base-address`: copy the file to the `RPI-RP2` drive.
    Uf2,
}

impl PageFormat {
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            PageFormat::Bin => "bin",
            PageFormat::Hex => "hex",
            PageFormat::Uf2 => "uf2",
        }
    }
}

/// `sensorchain provision`
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("chain").required(true).args(["genesis", "chain_id"])))]
#[command(after_long_help = AFTER_HELP)]
pub struct ProvisionArgs {
    /// The device's key file (written by `sensorchain keygen`, or by
    /// `--generate`).
    #[arg(long, value_name = "FILE")]
    pub device_key: PathBuf,
    /// Create the device key file first (a new identity from the OS's
    /// randomness, mode 0600); refuses to overwrite an existing file unless
    /// `--force`.
    #[arg(long)]
    pub generate: bool,
    /// Overwrite an existing `--out` file (and, with `--generate`, an
    /// existing device key file).
    #[arg(long)]
    pub force: bool,
    /// A gateway the device will trust: 64 hex digits of public key, or a
    /// key file. Repeatable, 1 to 4; the device refuses every other gateway.
    #[arg(long = "gateway-key", value_name = "KEY", required = true)]
    pub gateway_keys: Vec<String>,
    /// The chain's genesis block file: the chain id is read from it.
    #[arg(long, value_name = "FILE")]
    pub genesis: Option<PathBuf>,
    /// The chain id (64 hex digits, as `sensorchain genesis` prints it),
    /// instead of `--genesis`. (A chain's name does not determine its id:
    /// the id is derived from the whole genesis.)
    #[arg(long, value_name = "HEX")]
    pub chain_id: Option<String>,
    /// A reader the device seals its readings for (the patient, a doctor…):
    /// a public key or a key file. Repeatable, at most 2; none: readings go
    /// in clear.
    #[arg(long = "seal-for", value_name = "KEY")]
    pub seal_for: Vec<String>,
    /// A file holding the device's secret DRBG entropy: 32 raw bytes or 64
    /// hex digits. Default: 32 fresh bytes from the OS's random number
    /// generator.
    #[arg(long, value_name = "FILE")]
    pub entropy: Option<PathBuf>,
    /// Where to write the key page. Written with mode 0600: it holds the
    /// device's secret seed.
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
    /// The file format: `bin` (the 332 raw bytes), `hex` (Intel HEX at
    /// `--base-address`) or `uf2` (UF2 for the RP2040 boot ROM at
    /// `--base-address`).
    #[arg(long, value_enum, default_value_t = PageFormat::Bin)]
    pub format: PageFormat,
    /// The flash address of the key page, hex (0x…) or decimal; required for
    /// `hex` and `uf2`. RP2040 with 2 MiB flash: 0x101FF000 (the last 4 KiB
    /// sector); nRF52840: 0x000FE000. The page needs a flash sector (page)
    /// of its own that the firmware image does not use.
    #[arg(long, value_name = "ADDR", value_parser = image::parse_address)]
    pub base_address: Option<u32>,
    /// Also grant the device on the chain (permissions connect,write and
    /// role device, like `genesis --member device:KEY`), signed by
    /// `--admin` and submitted to `--api`; waits until it is committed.
    #[arg(long, requires = "admin")]
    pub grant: bool,
    /// With `--grant`: the key file of an admin of the chain.
    #[arg(long, value_name = "FILE", requires = "grant")]
    pub admin: Option<PathBuf>,
    /// With `--grant`: also assign the device to this patient (a public key
    /// or key file of an identity with role `patient`), which sealed
    /// readings need.
    #[arg(long, value_name = "KEY", requires = "grant")]
    pub patient: Option<String>,
    /// The gateway's HTTP API, for `--grant` (`http://` or `https://`; the
    /// command logs in there with --admin).
    #[arg(long, value_name = "URL", env = "SENSORCHAIN_API", default_value = DEFAULT_API)]
    pub api: String,
    /// A PEM file of the certificates to trust for an `https` API.
    #[arg(long, value_name = "FILE", requires = "grant")]
    pub ca: Option<PathBuf>,
    /// With `--grant`: how long to wait for each transaction to be
    /// committed, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

const AFTER_HELP: &str = "\
Examples:
  sensorchain provision --device-key dev1.key --generate --genesis genesis.block \\
      --gateway-key gateway.key --format uf2 --base-address 0x101FF000 --out dev1.uf2 \\
      --grant --admin admin.key --api http://127.0.0.1:7480
  sensorchain provision --device-key dev2.key --chain-id 5c0f… --gateway-key 3b6a… \\
      --format hex --base-address 0x000FE000 --out dev2.hex

Flash a bin or hex page with probe-rs (never with --chip-erase, which would erase the firmware):
  probe-rs download --chip nRF52840_xxAA --binary-format bin --base-address 0x000FE000 dev.bin
  probe-rs download --chip nRF52840_xxAA --binary-format hex dev2.hex
or copy a .uf2 to the RPI-RP2 drive of an RP2040 started with BOOTSEL held.
See docs/PROVISIONING.md.";

/// The chain id of a genesis block file, checked: the block must be a valid
/// genesis whose id is the one derived from its genesis transaction.
pub fn chain_of_genesis(path: &Path) -> anyhow::Result<ChainId> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let block = Block::decode(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a genesis block: {e}", path.display()))?;
    ensure!(
        block.header.height == 0,
        "{}: a block at height {}, not a genesis block",
        path.display(),
        block.header.height
    );
    sensorchain_core::chain::genesis_chain_id(&block)
        .map_err(|e| anyhow::anyhow!("{}: not a valid genesis block: {e}", path.display()))
}

/// The chain id from `--genesis FILE` or `--chain-id HEX` (`None` if
/// neither is given).
pub fn chain_from_args(
    genesis: Option<&Path>,
    chain_id: Option<&str>,
) -> anyhow::Result<Option<ChainId>> {
    match (genesis, chain_id) {
        (Some(_), Some(_)) => bail!("give --genesis or --chain-id, not both"),
        (Some(p), None) => chain_of_genesis(p).map(Some),
        (None, Some(h)) => sensorchain_core::hash::parse_hex::<32>(h.trim())
            .map(|b| Some(ChainId(b)))
            .with_context(|| {
                format!(
                    "--chain-id {h:?}: a chain id is 64 hex digits (the \"chain id\" line of \
                     `sensorchain genesis`, or `chain_id` of GET /chain)"
                )
            }),
        (None, None) => Ok(None),
    }
}

/// Parses a list of public keys (hex or key files), refusing duplicates and
/// more than `max`.
pub fn parse_keys(list: &[String], what: &str, max: usize) -> anyhow::Result<Vec<PublicKey>> {
    ensure!(
        list.len() <= max,
        "{} {what}s given: a key page holds at most {max}",
        list.len()
    );
    let mut out: Vec<PublicKey> = Vec::with_capacity(list.len());
    for s in list {
        let pk = parse_public(s).with_context(|| format!("{what} {s:?}"))?;
        ensure!(!out.contains(&pk), "{what} {pk} is listed twice");
        out.push(pk);
    }
    Ok(out)
}

/// Reads DRBG entropy: a file of exactly 32 bytes, or 64 hex digits (with
/// optional surrounding whitespace). All-zero and all-`0xFF` values are
/// refused.
pub fn read_entropy(path: &Path) -> anyhow::Result<[u8; 32]> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let e: [u8; 32] = match <[u8; 32]>::try_from(bytes.as_slice()) {
        Ok(raw) => raw,
        Err(_) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| parse_hex::<32>(t.trim()))
            .with_context(|| {
                format!(
                    "{}: expected 32 raw bytes or 64 hex digits of entropy ({} bytes found)",
                    path.display(),
                    bytes.len()
                )
            })?,
    };
    ensure!(
        e != [0; 32] && e != [0xFF; 32],
        "{}: the entropy is all 0x00 or all 0xFF; use secret random bytes",
        path.display()
    );
    Ok(e)
}

/// 32 bytes from the OS's random number generator.
pub fn os_entropy() -> anyhow::Result<[u8; 32]> {
    let mut e = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut e)
        .map_err(|err| anyhow::anyhow!("the OS random number generator failed: {err}"))?;
    Ok(e)
}

/// The file contents of `page` in `format` at `base` (required for `hex`
/// and `uf2`).
pub fn render(page: &[u8], format: PageFormat, base: Option<u32>) -> anyhow::Result<Vec<u8>> {
    let need_base = || {
        base.with_context(|| {
            format!(
                "--format {} needs --base-address (RP2040 with 2 MiB flash: 0x{RP2040_KEY_PAGE_ADDRESS:08X}; \
                 nRF52840: 0x{NRF52840_KEY_PAGE_ADDRESS:08X})",
                format.name()
            )
        })
    };
    Ok(match format {
        PageFormat::Bin => page.to_vec(),
        PageFormat::Hex => image::intel_hex(page, need_base()?)?.into_bytes(),
        PageFormat::Uf2 => image::uf2_rp2040(page, need_base()?)?,
    })
}

/// Writes `bytes` to `path` with mode 0600 (temp file, fsync, rename);
/// refuses to replace an existing file unless `force`.
pub fn write_secret(path: &Path, bytes: &[u8], force: bool) -> anyhow::Result<()> {
    super::write_file_atomic(path, bytes, 0o600, force)
}

/// The transactions that let `device` connect and send readings: what
/// `sensorchain genesis --member device:KEY` gives a device (its role's
/// default permissions, `connect,write`, and the role `device`).
pub fn device_grant_kinds(device: &PublicKey) -> Vec<TxKind> {
    vec![
        TxKind::Grant {
            target: *device,
            permissions: Role::Device.default_permissions(),
        },
        TxKind::SetRole {
            target: *device,
            role: Role::Device,
        },
    ]
}

/// Checks that the API serves `chain` and that `admin` is registered there
/// with the `admin` permission, before anything is written. (The gateway
/// still decides: this only spares writing a page whose grant would surely
/// be refused.)
fn check_api(api: &Api, chain: &ChainId, admin: &Keypair) -> anyhow::Result<()> {
    let served = api.chain_id()?;
    ensure!(
        served == *chain,
        "the gateway at {} serves chain {served}, but the key page is for chain {chain} \
         (check --genesis / --chain-id)",
        api.base()
    );
    let pk = admin.public();
    let Some(rec) = api.identity(&pk)? else {
        bail!(
            "the admin {} ({pk}) is not registered on the chain served at {}",
            pk.address(),
            api.base()
        );
    };
    ensure!(
        permissions_of(&rec).contains(Permissions::ADMIN),
        "{} ({pk}) lacks the admin permission on the chain served at {} (it holds: {}): it \
         cannot grant devices",
        pk.address(),
        api.base(),
        permissions_of(&rec)
    );
    Ok(())
}

/// Whether an identity record (API JSON) already has `perms` and `role`.
fn has_grant(rec: &Value, perms: Permissions, role: Role) -> bool {
    permissions_of(rec).contains(perms) && rec["role"].as_str() == Some(role.name())
}

/// Grants `device` on the chain (skipping what it already has) and, with
/// `patient`, assigns it. Returns the committed transactions.
pub fn grant_device(
    api: &Api,
    admin: &Keypair,
    chain: &ChainId,
    device: &PublicKey,
    patient: Option<&PublicKey>,
) -> anyhow::Result<Vec<Receipt>> {
    let mut done = Vec::new();
    let rec = api.identity(device)?;
    let granted = rec
        .as_ref()
        .is_some_and(|r| has_grant(r, Role::Device.default_permissions(), Role::Device));
    if !granted {
        for kind in device_grant_kinds(device) {
            done.push(api.submit(admin, chain, kind)?);
        }
    }
    if let Some(p) = patient {
        let assigned = rec
            .as_ref()
            .and_then(|r| r["patient"].as_str())
            .is_some_and(|k| k == p.to_string());
        if !assigned {
            done.push(api.submit(
                admin,
                chain,
                TxKind::AssignDevice {
                    device: *device,
                    patient: *p,
                },
            )?);
        }
    }
    Ok(done)
}

fn flash_hint(format: PageFormat, base: Option<u32>, out: &Path) -> String {
    let out = out.display();
    match (format, base) {
        (PageFormat::Bin, Some(b)) => format!(
            "probe-rs download --chip <CHIP> --binary-format bin --base-address 0x{b:08X} {out}"
        ),
        (PageFormat::Bin, None) => format!(
            "probe-rs download --chip <CHIP> --binary-format bin --base-address <ADDR> {out} \
             (RP2040: 0x{RP2040_KEY_PAGE_ADDRESS:08X}, nRF52840: 0x{NRF52840_KEY_PAGE_ADDRESS:08X})"
        ),
        (PageFormat::Hex, _) => {
            format!("probe-rs download --chip <CHIP> --binary-format hex {out}")
        }
        (PageFormat::Uf2, _) => {
            format!("hold BOOTSEL, plug the RP2040 in, copy {out} to the RPI-RP2 drive")
        }
    }
}

/// Writes a device's key page and optionally grants the device.
pub fn provision(args: &ProvisionArgs) -> anyhow::Result<ExitCode> {
    // every input is checked before anything is written
    let chain = chain_from_args(args.genesis.as_deref(), args.chain_id.as_deref())?
        .context("give --genesis FILE or --chain-id HEX")?;
    ensure!(
        !args.gateway_keys.is_empty(),
        "give at least one --gateway-key"
    );
    let gateways = parse_keys(&args.gateway_keys, "gateway key", MAX_GATEWAYS)?;
    let readers = parse_keys(&args.seal_for, "sealed-for reader", MAX_READERS)?;
    let entropy = match &args.entropy {
        Some(p) => read_entropy(p)?,
        None => os_entropy()?,
    };
    // a missing or unusable address, before a key is generated
    render(&[0; KEY_PAGE_LEN], args.format, args.base_address)?;
    super::refuse_overwrite(&args.out, args.force)?;
    if args.generate && !args.force && args.device_key.exists() {
        bail!(
            "{} exists (use --force to overwrite it, or drop --generate to use it)",
            args.device_key.display()
        );
    }
    let grant = if args.grant {
        let admin_file = args.admin.as_ref().context("--grant needs --admin")?;
        let admin = read_keypair(admin_file)?;
        let patient = args
            .patient
            .as_deref()
            .map(|p| parse_public(p).with_context(|| format!("patient {p:?}")))
            .transpose()?;
        let api = Api::new(
            &args.api,
            Duration::from_secs(args.timeout.max(1)),
            &admin,
            args.ca.as_deref(),
        )?;
        check_api(&api, &chain, &admin)?;
        Some((api, admin, patient))
    } else {
        None
    };

    let device = if args.generate {
        let kp = Keypair::generate(&mut rand::rng());
        write_keypair(&args.device_key, &kp, args.force)?;
        kp
    } else {
        read_keypair(&args.device_key)?
    };
    let device_pk = device.public();
    ensure!(
        !gateways.contains(&device_pk) && !readers.contains(&device_pk),
        "the device key is also listed as a gateway or a reader"
    );
    let page = KeyPage::new(chain, device.seed(), entropy, &gateways, &readers)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bytes = page.encode();
    // what the firmware will read back
    ensure!(
        KeyPage::decode(&bytes).as_ref() == Ok(&page),
        "internal error: the key page does not decode to itself"
    );
    let file = render(&bytes, args.format, args.base_address)?;
    write_secret(&args.out, &file, args.force)?;

    let receipts = match &grant {
        Some((api, admin, patient)) => {
            grant_device(api, admin, &chain, &device_pk, patient.as_ref()).with_context(|| {
                let assign = patient
                    .map(|p| format!(", `sensorchain tx assign {device_pk} {p} --key ADMIN`"))
                    .unwrap_or_default();
                format!(
                    "the key page was written to {}, but the device is not (fully) granted; \
                     finish with `sensorchain tx grant {device_pk} connect,write --key ADMIN`, \
                     `sensorchain tx role {device_pk} device --key ADMIN`{assign}",
                    args.out.display()
                )
            })?
        }
        None => Vec::new(),
    };

    let hint = flash_hint(args.format, args.base_address, &args.out);
    if args.json {
        println!(
            "{}",
            json!({
                "file": args.out,
                "format": args.format.name(),
                "bytes": file.len(),
                "page_len": KEY_PAGE_LEN,
                "base_address": args.base_address.map(|b| format!("0x{b:08X}")),
                "device_key_file": args.device_key,
                "generated_key": args.generate,
                "device": {
                    "public_key": device_pk.to_string(),
                    "key_id": device_pk.key_id().to_string(),
                    "address": device_pk.address().to_string(),
                },
                "chain_id": chain.to_string(),
                "gateways": gateways.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
                "readers": readers.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "grant": grant.as_ref().map(|(api, admin, _)| json!({
                    "api": api.base(),
                    "admin": admin.public().to_string(),
                    "txs": receipts.iter().map(Receipt::to_json).collect::<Vec<_>>(),
                    "height": receipts.last().map(|r| r.height),
                })),
                "flash": hint,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.generate {
        println!("generated   {} (mode 0600)", args.device_key.display());
    }
    println!(
        "wrote       {} ({} bytes, {}{}, mode 0600: it holds the device's secret seed)",
        args.out.display(),
        file.len(),
        args.format.name(),
        args.base_address
            .map(|b| format!(" at 0x{b:08X}"))
            .unwrap_or_default()
    );
    println!("device      {device_pk}");
    println!("key id      {}", device_pk.key_id());
    println!("address     {}", device_pk.address());
    println!("chain id    {chain}");
    for (i, g) in gateways.iter().enumerate() {
        println!("gateway {}   {g}", i + 1);
    }
    if readers.is_empty() {
        println!("readers     none (readings go in clear)");
    }
    for (i, r) in readers.iter().enumerate() {
        println!("reader {}    {r}", i + 1);
    }
    println!("flash with  {hint}");
    if let Some((api, _, _)) = &grant {
        if receipts.is_empty() {
            println!("granted     already: the device holds connect,write and role device");
        }
        for r in &receipts {
            println!(
                "committed   {} at height {} (tx {}): {}",
                r.kind, r.height, r.tx_id, r.summary
            );
        }
        println!("api         {}", api.base());
    } else {
        println!(
            "not granted yet: the gateway refuses the device until an admin runs \
             `sensorchain tx grant {device_pk} connect,write` and `sensorchain tx role {device_pk} device` \
             (or provision with --grant)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_from_genesis_or_hex() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "ab".repeat(32);
        assert_eq!(
            chain_from_args(None, Some(&hex)).unwrap(),
            Some(ChainId([0xab; 32]))
        );
        assert_eq!(chain_from_args(None, None).unwrap(), None);
        assert!(chain_from_args(None, Some("")).is_err());
        assert!(
            chain_from_args(None, Some("ward-7")).is_err(),
            "a name is no id"
        );
        assert!(chain_from_args(None, Some(&"a".repeat(63))).is_err());
        let admin = Keypair::from_seed([1; 32]);
        let gw = Keypair::from_seed([2; 32]);
        let members = [
            sensorchain_core::tx::Member::of_role(admin.public(), Role::Admin),
            sensorchain_core::tx::Member::of_role(gw.public(), Role::Gateway),
        ];
        let cfg = sensorchain_core::tx::GenesisConfig::new(
            "ward-7",
            sensorchain_core::tx::Params::default(),
            &members,
        )
        .unwrap();
        let block = sensorchain_core::chain::Chain::genesis_block(&admin, cfg, 1).unwrap();
        let p = dir.path().join("genesis.block");
        fs::write(&p, block.to_vec()).unwrap();
        assert_eq!(
            chain_from_args(Some(&p), None).unwrap(),
            Some(block.header.chain_id)
        );
        assert!(chain_from_args(Some(&p), Some(&hex)).is_err());
        // a genesis whose header names another chain id is refused
        let mut forged = block.clone();
        forged.header.chain_id = ChainId([0xab; 32]);
        fs::write(&p, forged.to_vec()).unwrap();
        assert!(chain_of_genesis(&p).is_err());
        fs::write(&p, b"not a block").unwrap();
        assert!(chain_of_genesis(&p).is_err());
    }

    #[test]
    fn keys_lists_are_bounded_and_unique() {
        let a = Keypair::from_seed([5; 32]).public().to_string();
        let b = Keypair::from_seed([6; 32]).public().to_string();
        assert_eq!(
            parse_keys(&[a.clone(), b.clone()], "reader", 2)
                .unwrap()
                .len(),
            2
        );
        assert!(parse_keys(&[a.clone(), a.clone()], "reader", 2).is_err());
        assert!(parse_keys(&[a.clone(), b.clone(), a.clone()], "reader", 2).is_err());
        assert!(parse_keys(&["zz".into()], "reader", 2).is_err());
    }

    #[test]
    fn entropy_files_raw_or_hex() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e");
        fs::write(&p, [7u8; 32]).unwrap();
        assert_eq!(read_entropy(&p).unwrap(), [7; 32]);
        fs::write(&p, format!("{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(read_entropy(&p).unwrap(), [0xAB; 32]);
        fs::write(&p, [0u8; 32]).unwrap();
        assert!(read_entropy(&p).is_err(), "all-zero entropy");
        fs::write(&p, [7u8; 31]).unwrap();
        assert!(read_entropy(&p).is_err(), "31 bytes");
        let a = os_entropy().unwrap();
        assert_ne!(a, os_entropy().unwrap());
    }

    #[test]
    fn render_formats() {
        let page = KeyPage::new(
            ChainId([7; 32]),
            [10; 32],
            [11; 32],
            &[Keypair::from_seed([2; 32]).public()],
            &[],
        )
        .unwrap()
        .encode();
        assert_eq!(render(&page, PageFormat::Bin, None).unwrap(), page);
        assert!(render(&page, PageFormat::Hex, None).is_err());
        assert!(render(&page, PageFormat::Uf2, None).is_err());
        let hex = render(&page, PageFormat::Hex, Some(NRF52840_KEY_PAGE_ADDRESS)).unwrap();
        assert!(hex.starts_with(b":02000004000FEB\n"));
        assert!(hex.ends_with(b":00000001FF\n"));
        let uf2 = render(&page, PageFormat::Uf2, Some(RP2040_KEY_PAGE_ADDRESS)).unwrap();
        assert_eq!(uf2.len(), 1024);
        assert_eq!(&uf2[32..288], &page[..256]);
    }

    #[test]
    fn secret_files_are_0600_and_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("page.bin");
        write_secret(&p, b"one", false).unwrap();
        let e = write_secret(&p, b"two", false).unwrap_err().to_string();
        assert!(e.contains("exists"), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"one");
        write_secret(&p, b"two", true).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[test]
    fn device_grant_is_what_genesis_gives_a_device() {
        let d = Keypair::from_seed([9; 32]).public();
        let member = super::super::genesis::parse_member(&format!("device:{d}")).unwrap();
        let kinds = device_grant_kinds(&d);
        assert_eq!(
            kinds[0],
            TxKind::Grant {
                target: d,
                permissions: member.permissions
            }
        );
        assert_eq!(
            kinds[1],
            TxKind::SetRole {
                target: d,
                role: member.role
            }
        );
        let rec = json!({"permissions": ["connect", "write"], "role": "device"});
        assert!(has_grant(&rec, member.permissions, Role::Device));
        let rec = json!({"permissions": ["connect"], "role": "device"});
        assert!(!has_grant(&rec, member.permissions, Role::Device));
        let rec = json!({"permissions": ["connect", "write"], "role": null});
        assert!(!has_grant(&rec, member.permissions, Role::Device));
    }
}
