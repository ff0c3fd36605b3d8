//! `sensorchain keygen`

use std::process::ExitCode;

use sensorchain_core::identity::Keypair;

use super::KeygenArgs;
use sensorchain_gateway::keys::write_keypair;

/// Generates an identity from the OS's randomness and writes its key file.
pub fn keygen(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let kp = Keypair::generate(&mut rand::rng());
    write_keypair(&args.out, &kp, args.force)?;
    let pk = kp.public();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "file": args.out,
                "public_key": pk.to_string(),
                "key_id": pk.key_id().to_string(),
                "address": pk.address().to_string(),
            })
        );
    } else {
        println!("wrote {} (mode 0600)", args.out.display());
        println!("public key  {pk}");
        println!("key id      {}", pk.key_id());
        println!("address     {}", pk.address());
    }
    Ok(ExitCode::SUCCESS)
}
