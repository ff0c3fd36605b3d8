//! Key files: an identity's 32-byte Ed25519 seed in hex, written readable by
//! its owner only (mode 0600 on Unix).
//!
//! Like ssh with a private key, [`read_keypair`] refuses a key file that
//! its group or others may read or write (any of the mode bits `0o077`):
//! the secret may already be known to someone else. `chmod 600 FILE` fixes
//! it. [`parse_public`], which only needs the public half, does not refuse.
//!
//! Format (text, one value per line, `#` comments allowed):
//! ```text
//! # sensorchain secret key: keep private
//! # public 3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29
//! 9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use sensorchain_core::hash::parse_hex;
use sensorchain_core::identity::{Keypair, PublicKey};

/// Writes `kp`'s seed to `path` with mode 0600. Refuses to overwrite unless
/// `force`.
pub fn write_keypair(path: &Path, kp: &Keypair, force: bool) -> anyhow::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| {
        if path.exists() && !force {
            format!("{} exists (use --force to overwrite)", path.display())
        } else {
            format!("cannot create key file {}", path.display())
        }
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    let seed = kp.seed();
    writeln!(
        f,
        "# sensorchain secret key: keep private\n# public {}\n{}",
        kp.public(),
        hex::encode(seed)
    )?;
    f.sync_all()?;
    Ok(())
}

/// Reads a key file written by [`write_keypair`], refusing one that is
/// accessible by group or others ([`check_key_mode`]).
pub fn read_keypair(path: &Path) -> anyhow::Result<Keypair> {
    check_key_mode(path)?;
    read_seed(path)
}

/// Refuses a key file whose mode lets its group or others read or write it
/// (Unix; elsewhere a no-op). The message names the file, its mode and the
/// `chmod` that fixes it.
pub fn check_key_mode(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(path)
            .with_context(|| format!("cannot read key file {}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "key file {p}: permissions {mode:04o} are too open: a secret key must not be \
                 accessible by group or others, so it is not used (fix: chmod 600 {p})",
                p = path.display()
            );
        }
    }
    Ok(())
}

fn read_seed(path: &Path) -> anyhow::Result<Keypair> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .with_context(|| format!("{}: no key in file", path.display()))?;
    let Some(seed) = parse_hex::<32>(line) else {
        bail!("{}: expected 64 hex digits of secret key", path.display());
    };
    Ok(Keypair::from_seed(seed))
}

/// Parses a public key given as 64 hex digits or as the path of a key file.
pub fn parse_public(s: &str) -> anyhow::Result<PublicKey> {
    if let Ok(pk) = s.parse::<PublicKey>() {
        return Ok(pk);
    }
    let p = Path::new(s);
    if p.exists() {
        return Ok(read_seed(p)?.public());
    }
    bail!("{s:?} is neither 64 hex digits of public key nor a key file")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of seed `[seed; 32]` written to `k.key` in a new directory.
    fn key_file(seed: u8) -> (tempfile::TempDir, std::path::PathBuf, Keypair) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        let kp = Keypair::from_seed([seed; 32]);
        write_keypair(&p, &kp, false).unwrap();
        (dir, p, kp)
    }

    #[test]
    fn roundtrip_and_mode() {
        let (_dir, p, kp) = key_file(5);
        assert_eq!(read_keypair(&p).unwrap().public(), kp.public());
        assert!(
            write_keypair(&p, &kp, false).is_err(),
            "no silent overwrite"
        );
        write_keypair(&p, &kp, true).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(parse_public(p.to_str().unwrap()).unwrap(), kp.public());
        assert_eq!(parse_public(&kp.public().to_string()).unwrap(), kp.public());
        assert!(parse_public("nonsense").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn group_or_world_accessible_key_refused() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, p, kp) = key_file(6);
        for mode in [0o640, 0o604, 0o620, 0o644, 0o666] {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            let e = format!("{:#}", read_keypair(&p).unwrap_err());
            assert!(
                e.contains(&format!("{mode:04o}"))
                    && e.contains("chmod 600")
                    && e.contains("k.key"),
                "{e}"
            );
            // the public half is still readable (genesis members, --gateway-key)
            assert_eq!(parse_public(p.to_str().unwrap()).unwrap(), kp.public());
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read_keypair(&p).unwrap().public(), kp.public());
    }
}
