//! `sensorchain cluster`: what the gateways of a cluster say of it.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use anyhow::Context;
use sensorchain_gateway::chain_source::normalise_url;
use sensorchain_gateway::login_client;

use super::api_client::DEFAULT_API;

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
