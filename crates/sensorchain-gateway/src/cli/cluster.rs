//! `sensorchain cluster`: what the gateways of a cluster say of it.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use anyhow::Context;
use sensorchain_gateway::chain_source::normalise_url;
use sensorchain_gateway::login_client;

use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::permissions::Permissions;
use sensorchain_core::tx::TxKind;

use super::api_client::{Api, DEFAULT_API, permissions_of};

/// `sensorchain cluster`
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The `cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show each gateway's role, term, leader, height, finalized height, lag and health.
    ///
    /// Asks every gateway given with --api (`GET /cluster`) and prints one
    /// line per gateway, then the members as the leader sees them (with how
    /// many log entries each is behind) and any equivocation evidence.
    /// Exit 0: every gateway answered and is healthy; 1: one did not answer,
    /// has stopped, or holds evidence; 2: the command could not run.
    Status(StatusArgs),
    /// Add a gateway to the cluster: grant its key validate and connect on the chain (if it lacks them), then make it a member.
    ///
    /// Membership follows the chain: the key must hold validate and connect
    /// (granted here with an admin transaction signed by --key if it does
    /// not; with several admins that transaction is a vote, and the command
    /// says so and stops). Then the leader (--api must be the leader's API)
    /// adds it as a learner, replicates it the log, and makes it a voter.
    /// The new gateway must be running with a [cluster] section listing the
    /// members (its node_id, listen = --addr).
    Add(AddArgs),
    /// Remove a gateway from the cluster: revoke validate from its key on the chain; the leader then removes it.
    Remove(RemoveArgs),
}

/// `sensorchain cluster add`
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The leader's API.
    #[arg(long, default_value = DEFAULT_API)]
    pub api: String,
    /// An admin's key file (signs the grant, logs in for the change).
    #[arg(long)]
    pub key: std::path::PathBuf,
    /// The new member's id (unique in the cluster).
    #[arg(long)]
    pub id: u64,
    /// The new member's peer-link address (its [cluster] listen).
    #[arg(long)]
    pub addr: String,
    /// The new gateway's public key: 64 hex digits or its key file.
    #[arg(long)]
    pub gateway_key: String,
    /// PEM certificates to trust for an `https://` API.
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
    /// How long to wait for the change (the new member catches up first).
    #[arg(long, default_value_t = 300)]
    pub wait_secs: u64,
}

/// `sensorchain cluster remove`
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// A gateway's API (any member).
    #[arg(long, default_value = DEFAULT_API)]
    pub api: String,
    /// An admin's key file (signs the revocation).
    #[arg(long)]
    pub key: std::path::PathBuf,
    /// The gateway's public key: 64 hex digits or its key file.
    #[arg(long)]
    pub gateway_key: String,
    /// PEM certificates to trust for an `https://` API.
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
    /// How long to wait until the leader has removed it.
    #[arg(long, default_value_t = 60)]
    pub wait_secs: u64,
}

/// `sensorchain cluster status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A gateway's API (repeat for each gateway to ask).
    #[arg(long = "api", default_value = DEFAULT_API)]
    pub apis: Vec<String>,
    /// Print JSON: `{"gateways": [{"api", "status" | "error"}]}`.
    #[arg(long)]
    pub json: bool,
    /// PEM certificates to trust for `https://` APIs (instead of the web's roots).
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
}

/// Runs `sensorchain cluster`.
pub fn cluster(a: &ClusterArgs) -> anyhow::Result<ExitCode> {
    match &a.command {
        ClusterCommand::Status(s) => status(s),
        ClusterCommand::Add(s) => add(s),
        ClusterCommand::Remove(s) => remove(s),
    }
}

/// Grants (or revokes) `perms` to `target` with an admin transaction unless
/// it holds them (or lacks them) already; false if the transaction was a
/// vote still waiting for other admins.
fn ensure(
    api: &Api,
    admin: &Keypair,
    target: PublicKey,
    perms: Permissions,
    grant: bool,
) -> anyhow::Result<bool> {
    let held = api
        .identity(&target)?
        .map(|r| permissions_of(&r))
        .unwrap_or_default();
    let done = |held: Permissions| {
        if grant {
            held.contains(perms)
        } else {
            held.intersect(perms).is_empty()
        }
    };
    if done(held) {
        return Ok(true);
    }
    let kind = if grant {
        TxKind::Grant {
            target,
            permissions: perms,
        }
    } else {
        TxKind::Revoke {
            target,
            permissions: perms,
        }
    };
    let chain = api.chain_id()?;
    let receipt = api.submit(admin, &chain, kind)?;
    println!("{}", receipt.summary);
    let after = api
        .identity(&target)?
        .map(|r| permissions_of(&r))
        .unwrap_or_default();
    Ok(done(after))
}

fn add(a: &AddArgs) -> anyhow::Result<ExitCode> {
    let admin = sensorchain_gateway::keys::read_keypair(&a.key)?;
    let target = sensorchain_gateway::keys::parse_public(&a.gateway_key)?;
    let wait = Duration::from_secs(a.wait_secs.max(1));
    let api = Api::new(&a.api, wait, &admin, a.ca.as_deref())?;
    if !ensure(
        &api,
        &admin,
        target,
        Permissions::VALIDATE.union(Permissions::CONNECT),
        true,
    )? {
        println!(
            "the grant of validate to {target} is a vote waiting for more admins: run this again once it has passed"
        );
        return Ok(ExitCode::from(1));
    }
    let body = json!({"id": a.id, "addr": a.addr, "key": target.to_string()});
    let (status, answer) = api.session().post_json("/cluster/members", &body)?;
    if status != 200 {
        let e = &answer["error"];
        anyhow::bail!(
            "{} refused the change: {} ({}, HTTP {status})",
            api.base(),
            e["message"].as_str().unwrap_or("no message"),
            e["code"].as_str().unwrap_or("?"),
        );
    }
    println!("member {} ({target}) added at {}", a.id, a.addr);
    print!("{}", render(&[(api.base().to_string(), Ok(answer))]));
    Ok(ExitCode::SUCCESS)
}

fn remove(a: &RemoveArgs) -> anyhow::Result<ExitCode> {
    let admin = sensorchain_gateway::keys::read_keypair(&a.key)?;
    let target = sensorchain_gateway::keys::parse_public(&a.gateway_key)?;
    let wait = Duration::from_secs(a.wait_secs.max(1));
    let api = Api::new(&a.api, wait, &admin, a.ca.as_deref())?;
    if !ensure(&api, &admin, target, Permissions::VALIDATE, false)? {
        println!(
            "the revocation of validate from {target} is a vote waiting for more admins: run this again once it has passed"
        );
        return Ok(ExitCode::from(1));
    }
    let agent = login_client::agent(Duration::from_secs(10), a.ca.as_deref())?;
    let key = target.to_string();
    let deadline = std::time::Instant::now() + wait;
    loop {
        let s = fetch(&agent, api.base())?;
        let listed = s["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["key"] == key.as_str()));
        if !listed {
            println!("{target} is no longer a member");
            return Ok(ExitCode::SUCCESS);
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{target} lost validate but is still a member after {:?} (is a leader up?)",
                wait
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn status(a: &StatusArgs) -> anyhow::Result<ExitCode> {
    let agent = login_client::agent(Duration::from_secs(10), a.ca.as_deref())?;
    let mut rows = Vec::new();
    for url in &a.apis {
        let base = normalise_url(url)?;
        let status = fetch(&agent, &base);
        rows.push((base, status));
    }
    let healthy = rows.iter().all(|(_, r)| {
        r.as_ref()
            .is_ok_and(|s| s["health"] == "ok" && s["evidence"].as_u64() == Some(0))
    });
    if a.json {
        let gateways: Vec<Value> = rows
            .iter()
            .map(|(api, r)| match r {
                Ok(s) => json!({"api": api, "status": s}),
                Err(e) => json!({"api": api, "error": format!("{e:#}")}),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "gateways": gateways }))?
        );
    } else {
        print!("{}", render(&rows));
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `GET /cluster` (public: no login).
fn fetch(agent: &ureq::Agent, base: &str) -> anyhow::Result<Value> {
    let mut r = agent
        .get(format!("{base}/cluster"))
        .call()
        .map_err(|e| anyhow::anyhow!("cannot reach the gateway API at {base}: {e}"))?;
    let status = r.status().as_u16();
    let body: Value = r
        .body_mut()
        .read_json()
        .with_context(|| format!("GET {base}/cluster: not JSON (HTTP {status})"))?;
    if status != 200 {
        anyhow::bail!("GET {base}/cluster: HTTP {status}: {body}");
    }
    Ok(body)
}

fn opt(v: &Value) -> String {
    if v.is_null() {
        "-".into()
    } else {
        v.to_string().trim_matches('"').to_string()
    }
}

/// The human-readable report of the gateways' answers.
fn render(rows: &[(String, anyhow::Result<Value>)]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<28} {:>4} {:<9} {:>5} {:>6} {:>8} {:>9} {:>8}  health\n",
        "gateway", "id", "role", "term", "leader", "height", "finalized", "applied"
    ));
    for (api, r) in rows {
        match r {
            Ok(s) => out.push_str(&format!(
                "{:<28} {:>4} {:<9} {:>5} {:>6} {:>8} {:>9} {:>8}  {}\n",
                api,
                opt(&s["node_id"]),
                opt(&s["role"]),
                opt(&s["term"]),
                opt(&s["leader"]),
                opt(&s["height"]),
                opt(&s["finalized_height"]),
                opt(&s["applied_index"]),
                opt(&s["health"]),
            )),
            Err(e) => out.push_str(&format!("{api:<28} unreachable: {e:#}\n")),
        }
    }
    if let Some(s) = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .find(|s| s["role"] == "leader")
    {
        out.push_str(&format!(
            "\nmembers (as leader {} sees them):\n",
            opt(&s["node_id"])
        ));
        for m in s["members"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {:>4} {:<8} {:<24} matched {:>8}  behind {:>6}  key {}\n",
                opt(&m["id"]),
                if m["voter"] == true {
                    "voter"
                } else {
                    "learner"
                },
                opt(&m["addr"]),
                opt(&m["matched_index"]),
                opt(&m["lag"]),
                opt(&m["key"]),
            ));
        }
    }
    for (api, s) in rows
        .iter()
        .filter_map(|(a, r)| r.as_ref().ok().map(|s| (a, s)))
    {
        for e in s["evidence_pairs"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "EVIDENCE at {api}: validator {} signed two blocks at height {}: {} and {}\n",
                opt(&e["validator"]),
                opt(&e["height"]),
                opt(&e["first"]["hash"]),
                opt(&e["second"]["hash"]),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gateways_members_and_evidence() {
        let leader = json!({
            "node_id": 1, "role": "leader", "term": 3, "leader": 1, "height": 10,
            "finalized_height": 9, "applied_index": 22, "health": "ok", "evidence": 1,
            "members": [
                {"id": 1, "addr": "10.0.0.1:7500", "key": "aa", "voter": true, "matched_index": 22, "lag": 0},
                {"id": 2, "addr": "10.0.0.2:7500", "key": "bb", "voter": false, "matched_index": null, "lag": 22}
            ],
            "evidence_pairs": [{"height": 4, "validator": "cc", "first": {"hash": "h1"}, "second": {"hash": "h2"}}]
        });
        let text = render(&[
            ("http://a".into(), Ok(leader)),
            (
                "http://b".into(),
                Err(anyhow::anyhow!("connection refused")),
            ),
        ]);
        assert!(text.contains("leader"), "{text}");
        assert!(
            text.contains("http://b                     unreachable: connection refused"),
            "{text}"
        );
        assert!(text.contains("learner"), "{text}");
        assert!(text.contains("behind     22"), "{text}");
        assert!(
            text.contains(
                "EVIDENCE at http://a: validator cc signed two blocks at height 4: h1 and h2"
            ),
            "{text}"
        );
    }
}
