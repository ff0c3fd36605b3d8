//! `sensorchain audit`: the [audit](sensorchain_gateway::audit) of a
//! stopped gateway's store or of a running gateway's API, printed.

use std::process::ExitCode;
use std::time::Duration;

use sensorchain_gateway::audit::{audit_dir, audit_source, human_report, print_progress};
use sensorchain_gateway::chain_source::{ApiChain, ChainSource};
use sensorchain_gateway::store;

use super::AuditArgs;

/// `sensorchain audit --data-dir DIR | --api URL [--json]`: exit code 0 if
/// the chain is valid, 1 if it is not (the report names the block and the
/// failure, or the damaged table); other failures are `Err` (exit code 2).
pub fn audit(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let (report, source) = match (&args.source.data_dir, &args.source.api) {
        (Some(dir), _) => (
            audit_dir(dir, !args.json)?,
            dir.join(store::FILE_NAME).display().to_string(),
        ),
        (None, Some(url)) => {
            let key = super::read_keypair_arg(args.source.key.as_deref())?;
            let api = ApiChain::connect(url, &key, args.source.ca.as_deref())?;
            let source = ChainSource::Api(api);
            let report = audit_source(&source, Duration::from_secs(2), |p| {
                if !args.json {
                    print_progress(p)
                }
            })?;
            (report, source.describe())
        }
        (None, None) => anyhow::bail!("give --data-dir DIR or --api URL"),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", human_report(&source, &report));
    }
    Ok(if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
