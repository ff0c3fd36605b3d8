//! `sensorchain tx`: sign an operator's transaction and submit it through a
//! gateway's HTTP API, waiting until it is committed.
//!
//! One subcommand per administrative and patient kind of
//! [`TxKind`] (a reading is a device's, sent
//! over its link):
//!
//! | command | kind | signer needs |
//! |---|---|---|
//! | `tx grant KEY PERMS` | `Grant` | `admin` |
//! | `tx revoke KEY PERMS` | `Revoke` | `admin` |
//! | `tx role KEY ROLE` | `SetRole` | `admin` |
//! | `tx assign DEVICE PATIENT` | `AssignDevice` | `admin` |
//! | `tx consent READER [--withdraw]` | `Consent` | `send`, role `patient` |
//!
//! Granting or revoking `admin` or `validate` is a vote under the chain's
//! admin consensus: it takes effect once enough admins have voted
//! (`GET /votes`). The submission itself (sequence number, replay retry,
//! wait for the commit) is [`Api::submit`], shared with `sensorchain
//! provision --grant`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use sensorchain_core::identity::{Address, PublicKey};
use sensorchain_core::permissions::{Permissions, Role};
use sensorchain_core::tx::TxKind;

use super::api_client::{Api, DEFAULT_API, Receipt, permissions_of};
use super::provision::chain_from_args;
use sensorchain_gateway::keys::{parse_public, read_keypair};

/// `sensorchain tx`
#[derive(Debug, Args)]
pub struct TxArgs {
    /// The transaction to submit.
    #[command(subcommand)]
    pub command: TxCommand,
}

/// The transactions an operator or a patient signs.
#[derive(Debug, Subcommand)]
pub enum TxCommand {
    /// Grant permissions to an identity (signed by an admin). A new key is
    /// registered by its first grant. `admin` and `validate` are votes under
    /// admin consensus.
    #[command(after_help = "Example: sensorchain tx grant dev1.key connect,write --key admin.key")]
    Grant(PermsArgs),
    /// Revoke permissions from an identity (signed by an admin). Revoking
    /// `connect` closes the identity's live sessions at once; the record and
    /// its sequence numbers stay.
    #[command(after_help = "Example: sensorchain tx revoke dev1.key connect,write --key admin.key")]
    Revoke(PermsArgs),
    /// Set an identity's role (signed by an admin): device, patient, doctor,
    /// nurse, insurer, admin or gateway. Roles decide the access rules
    /// (assignments and consents).
    #[command(after_help = "Example: sensorchain tx role 5e0d… doctor --key admin.key")]
    Role(RoleArgs),
    /// Assign a device to the patient it measures (signed by an admin). The
    /// device must have role `device`, the patient role `patient`; sealed
    /// readings need it.
    #[command(after_help = "Example: sensorchain tx assign dev1.key 0a9f… --key admin.key")]
    Assign(AssignArgs),
    /// A patient's consent that a reader (role doctor, nurse or insurer) may
    /// read the patient's sealed readings, or with `--withdraw` its end.
    /// Signed by the patient's key, which needs `send`.
    #[command(after_help = "Example: sensorchain tx consent 5e0d… --key patient.key")]
    Consent(ConsentArgs),
}

/// Options of every `sensorchain tx` command.
#[derive(Debug, Args)]
pub struct SubmitOpts {
    /// Key file of the signer: an admin's, or for `consent` the patient's.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The gateway's HTTP API (`http://` or `https://`); the command logs
    /// in there with --key for its reads.
    #[arg(long, value_name = "URL", env = "SENSORCHAIN_API", default_value = DEFAULT_API)]
    pub api: String,
    /// A PEM file of the certificates to trust for an `https` API (a
    /// gateway's own self-signed certificate); default: the web's roots.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Check that the gateway serves the chain of this genesis block
    /// (default: sign for the chain the gateway serves).
    #[arg(long, value_name = "FILE", conflicts_with = "chain_id")]
    pub genesis: Option<PathBuf>,
    /// Check that the gateway serves the chain with this id (64 hex digits).
    #[arg(long, value_name = "HEX")]
    pub chain_id: Option<String>,
    /// How long to wait for the transaction to be committed, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `tx grant` and `tx revoke`
#[derive(Debug, Args)]
pub struct PermsArgs {
    /// The identity: 64 hex digits of public key, a key file, or the
    /// base58 address of a registered identity.
    #[arg(value_name = "KEY")]
    pub target: String,
    /// Comma-separated permissions: connect, send, receive, write, admin,
    /// validate (or all).
    #[arg(value_name = "PERMS")]
    pub permissions: String,
    /// Signer, API and output options.
    #[command(flatten)]
    pub opts: SubmitOpts,
}

/// `tx role`
#[derive(Debug, Args)]
pub struct RoleArgs {
    /// The identity: 64 hex digits of public key, a key file, or the
    /// base58 address of a registered identity.
    #[arg(value_name = "KEY")]
    pub target: String,
    /// device, patient, doctor, nurse, insurer, admin or gateway.
    #[arg(value_name = "ROLE")]
    pub role: String,
    /// Signer, API and output options.
    #[command(flatten)]
    pub opts: SubmitOpts,
}

/// `tx assign`
#[derive(Debug, Args)]
pub struct AssignArgs {
    /// The device (key, key file or address).
    #[arg(value_name = "DEVICE")]
    pub device: String,
    /// The patient it measures (key, key file or address).
    #[arg(value_name = "PATIENT")]
    pub patient: String,
    /// Signer, API and output options.
    #[command(flatten)]
    pub opts: SubmitOpts,
}

/// `tx consent`
#[derive(Debug, Args)]
pub struct ConsentArgs {
    /// The reader (key, key file or address): a doctor, nurse or insurer.
    #[arg(value_name = "READER")]
    pub reader: String,
    /// Withdraw the consent instead of giving it.
    #[arg(long)]
    pub withdraw: bool,
    /// Signer, API and output options.
    #[command(flatten)]
    pub opts: SubmitOpts,
}

/// Parses a key given as hex or a key file, or, failing that, as the
/// address of an identity the API knows.
pub fn resolve_key(api: &Api, s: &str) -> anyhow::Result<PublicKey> {
    match parse_public(s) {
        Ok(pk) => Ok(pk),
        Err(e) if s.trim().parse::<Address>().is_ok() => api
            .key_of_address(s.trim())
            .with_context(|| format!("{e}, and not a registered identity's address")),
        Err(e) => Err(e),
    }
}

/// Parses a non-empty permission list.
pub fn parse_permissions(s: &str) -> anyhow::Result<Permissions> {
    let p = Permissions::parse_list(s).with_context(|| {
        format!("{s:?}: unknown permission (connect, send, receive, write, admin, validate, all)")
    })?;
    ensure!(!p.is_empty(), "{s:?}: no permission named");
    Ok(p)
}

/// Parses a role name.
pub fn parse_role(s: &str) -> anyhow::Result<Role> {
    s.parse::<Role>().map_err(|_| {
        anyhow::anyhow!(
            "{s:?}: unknown role (device, patient, doctor, nurse, insurer, admin, gateway)"
        )
    })
}

fn opts_of(cmd: &TxCommand) -> &SubmitOpts {
    match cmd {
        TxCommand::Grant(a) | TxCommand::Revoke(a) => &a.opts,
        TxCommand::Role(a) => &a.opts,
        TxCommand::Assign(a) => &a.opts,
        TxCommand::Consent(a) => &a.opts,
    }
}

/// A one-line description of an identity record from the API.
fn describe(rec: &Value) -> String {
    let perms: Vec<&str> = rec["permissions"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut s = format!(
        "{}: role {}, permissions {}",
        rec["address"].as_str().unwrap_or("?"),
        rec["role"].as_str().unwrap_or("none"),
        if perms.is_empty() {
            "none".to_string()
        } else {
            perms.join(",")
        }
    );
    if let Some(p) = rec["patient"].as_str() {
        s.push_str(&format!(", patient {p}"));
    }
    if let Some(r) = rec["consented_readers"]
        .as_array()
        .filter(|r| !r.is_empty())
    {
        s.push_str(&format!(", {} consented reader(s)", r.len()));
    }
    s
}

/// Whether the `admin`/`validate` part of a grant or revocation has not
/// taken effect yet (it is a vote waiting for more admins), given the
/// target's record after the commit.
pub fn vote_pending(kind: &TxKind, after: Option<&Value>) -> bool {
    let (asked, grant) = match kind {
        TxKind::Grant { permissions, .. } => (*permissions, true),
        TxKind::Revoke { permissions, .. } => (*permissions, false),
        _ => return false,
    };
    let asked = asked.intersect(Permissions::CONSENSUS);
    if asked.is_empty() {
        return false;
    }
    let held = after.map(permissions_of).unwrap_or_default();
    if grant {
        !held.contains(asked)
    } else {
        !held.intersect(asked).is_empty()
    }
}

/// Signs and submits one operator transaction.
pub fn tx(args: &TxArgs) -> anyhow::Result<ExitCode> {
    let opts = opts_of(&args.command);
    let signer = read_keypair(&opts.key)?;
    let api = Api::new(
        &opts.api,
        Duration::from_secs(opts.timeout.max(1)),
        &signer,
        opts.ca.as_deref(),
    )?;
    let served = api.chain_id()?;
    if let Some(expected) = chain_from_args(opts.genesis.as_deref(), opts.chain_id.as_deref())? {
        ensure!(
            served == expected,
            "the gateway at {} serves chain {served}, not {expected} (from --genesis / --chain-id)",
            api.base()
        );
    }
    // the kind, and whose record shows its effect
    let (kind, subject) = match &args.command {
        TxCommand::Grant(a) | TxCommand::Revoke(a) => {
            let target = resolve_key(&api, &a.target)?;
            let permissions = parse_permissions(&a.permissions)?;
            let kind = if matches!(args.command, TxCommand::Grant(_)) {
                TxKind::Grant {
                    target,
                    permissions,
                }
            } else {
                TxKind::Revoke {
                    target,
                    permissions,
                }
            };
            (kind, target)
        }
        TxCommand::Role(a) => {
            let target = resolve_key(&api, &a.target)?;
            let role = parse_role(&a.role)?;
            (TxKind::SetRole { target, role }, target)
        }
        TxCommand::Assign(a) => {
            let device = resolve_key(&api, &a.device)?;
            let patient = resolve_key(&api, &a.patient)?;
            (TxKind::AssignDevice { device, patient }, device)
        }
        TxCommand::Consent(a) => {
            let reader = resolve_key(&api, &a.reader)?;
            (
                TxKind::Consent {
                    reader,
                    granted: !a.withdraw,
                },
                signer.public(),
            )
        }
    };
    let receipt: Receipt = api.submit(&signer, &served, kind.clone())?;
    let after = api.identity(&subject)?;
    let pending_vote = vote_pending(&kind, after.as_ref());
    if opts.json {
        let mut v = receipt.to_json();
        v["api"] = json!(api.base());
        v["chain_id"] = json!(served.to_string());
        v["identity"] = after.clone().unwrap_or(Value::Null);
        v["pending_vote"] = json!(pending_vote);
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "committed   {} at height {} (index {})",
        receipt.kind, receipt.height, receipt.index
    );
    println!("tx          {}", receipt.tx_id);
    println!("            {}", receipt.summary);
    println!(
        "signer      {} sequence {}",
        receipt.signer.address(),
        receipt.sequence
    );
    if let Some(rec) = &after {
        println!("now         {}", describe(rec));
    }
    if pending_vote {
        println!(
            "note        admin and validate changes take admin consensus: this was one vote \
             (see GET {}/votes)",
            api.base()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use sensorchain_core::identity::Keypair;

    #[test]
    fn permission_and_role_names() {
        assert_eq!(
            parse_permissions("connect,write").unwrap(),
            Permissions::CONNECT.union(Permissions::WRITE)
        );
        assert_eq!(parse_permissions("mine").unwrap(), Permissions::VALIDATE);
        assert!(parse_permissions("").is_err());
        assert!(parse_permissions("fly").is_err());
        assert_eq!(parse_role("doctor").unwrap(), Role::Doctor);
        assert!(parse_role("wizard").is_err());
    }

    #[test]
    fn command_lines_parse() {
        crate::cli::Cli::command().debug_assert();
        let k = "ab".repeat(32);
        let cli = crate::cli::Cli::try_parse_from([
            "sensorchain",
            "tx",
            "grant",
            &k,
            "connect,write",
            "--key",
            "admin.key",
            "--api",
            "127.0.0.1:9",
            "--json",
        ])
        .unwrap();
        let crate::cli::Command::Tx(TxArgs {
            command: TxCommand::Grant(a),
        }) = cli.command
        else {
            panic!("not tx grant");
        };
        assert_eq!(a.target, k);
        assert_eq!(a.permissions, "connect,write");
        assert!(a.opts.json);
        assert_eq!(a.opts.timeout, 30);
        let cli = crate::cli::Cli::try_parse_from([
            "sensorchain",
            "tx",
            "consent",
            &k,
            "--withdraw",
            "--key",
            "p.key",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            crate::cli::Command::Tx(TxArgs {
                command: TxCommand::Consent(ConsentArgs { withdraw: true, .. })
            })
        ));
        // the signer's key is required
        assert!(
            crate::cli::Cli::try_parse_from(["sensorchain", "tx", "role", &k, "doctor"]).is_err()
        );
        // --genesis and --chain-id exclude each other
        assert!(
            crate::cli::Cli::try_parse_from([
                "sensorchain",
                "tx",
                "role",
                &k,
                "doctor",
                "--key",
                "a",
                "--genesis",
                "g",
                "--chain-id",
                "n"
            ])
            .is_err()
        );
    }

    #[test]
    fn votes_are_pending_until_the_bits_change() {
        let t = Keypair::from_seed([8; 32]).public();
        let grant = |p| TxKind::Grant {
            target: t,
            permissions: p,
        };
        let revoke = |p| TxKind::Revoke {
            target: t,
            permissions: p,
        };
        let rec = |p: &[&str]| json!({ "permissions": p });
        let admin = Permissions::ADMIN;
        let both = Permissions::CONNECT.union(Permissions::VALIDATE);
        // plain bits are never votes
        assert!(!vote_pending(&grant(Permissions::CONNECT), Some(&rec(&[]))));
        assert!(vote_pending(&grant(admin), Some(&rec(&["connect"]))));
        assert!(!vote_pending(
            &grant(admin),
            Some(&rec(&["connect", "admin"]))
        ));
        assert!(vote_pending(&grant(both), Some(&rec(&["connect"]))));
        assert!(vote_pending(&revoke(admin), Some(&rec(&["admin"]))));
        assert!(!vote_pending(&revoke(admin), Some(&rec(&["send"]))));
        assert!(!vote_pending(
            &TxKind::SetRole {
                target: t,
                role: Role::Admin
            },
            None
        ));
    }

    #[test]
    fn identity_lines() {
        let rec = json!({
            "address": "Sabc", "role": "device", "permissions": ["connect", "write"],
            "patient": "0a9f", "consented_readers": [],
        });
        assert_eq!(
            describe(&rec),
            "Sabc: role device, permissions connect,write, patient 0a9f"
        );
        let rec =
            json!({"address": "Sp", "role": null, "permissions": [], "consented_readers": ["x"]});
        assert_eq!(
            describe(&rec),
            "Sp: role none, permissions none, 1 consented reader(s)"
        );
    }
}
