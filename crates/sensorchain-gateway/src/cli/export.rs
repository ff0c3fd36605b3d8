//! `sensorchain export`: a stored chain written as an [export
//! container](sensorchain_gateway::export).

use std::process::ExitCode;

use anyhow::bail;
use sensorchain_gateway::chain_source::{ApiChain, ChainSource};
use sensorchain_gateway::export::export_source;
use sensorchain_gateway::store::Store;

use super::ExportArgs;

/// `sensorchain export --data-dir DIR | --api URL --out FILE [--force]`.
pub fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    super::refuse_overwrite(&args.out, args.force)?;
    let store;
    let source = match (&args.source.data_dir, &args.source.api) {
        (Some(dir), _) => {
            store = Store::open_read_only(dir)
                .map_err(|e| sensorchain_gateway::audit::open_error(dir, e))?;
            ChainSource::Store(&store)
        }
        (None, Some(url)) => ChainSource::Api(ApiChain::connect(
            url,
            &super::read_keypair_arg(args.source.key.as_deref())?,
            args.source.ca.as_deref(),
        )?),
        (None, None) => bail!("give --data-dir DIR or --api URL"),
    };
    let s = export_source(&source, &args.out)?;
    println!(
        "exported {} blocks ({} with finality certificates, {} bytes) to {}",
        s.blocks,
        s.certs,
        s.bytes,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
