//! A small file system of its own for full-disk tests: a tmpfs mounted on
//! a fresh directory (needs root; tests skip without it), filled with a
//! filler file, emptied again.

use std::path::{Path, PathBuf};

/// A tmpfs mounted on a temporary directory, unmounted (lazily, so that a
/// file still open does not keep it) and removed on drop.
pub struct Tmpfs {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `8m`) on a fresh
    /// temporary directory; `None` (with a `SKIPPED test` line on stderr)
    /// where it cannot be mounted (not root, no tmpfs).
    pub fn mount(size: &str, test: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let mnt = dir.path().join("disk");
        std::fs::create_dir_all(&mnt).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mnt)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("SKIPPED {test}: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Tmpfs { mnt, _dir: dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Bytes free on it.
    pub fn free(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.mnt)
            .output()
            .expect("df runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df gives the bytes free")
    }

    /// Fills it with a filler file until `leave` bytes are free (or fewer).
    pub fn fill(&self, leave: u64) {
        let n = self.free().saturating_sub(leave);
        std::fs::write(self.filler(), vec![0u8; n as usize]).expect("the filler is written");
    }

    /// Removes the filler file: the space is free again.
    pub fn empty(&self) {
        std::fs::remove_file(self.filler()).expect("the filler is removed");
    }

    fn filler(&self) -> PathBuf {
        self.mnt.join("filler")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mnt)
            .status();
    }
}
