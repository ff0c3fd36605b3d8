//! The build script of every board firmware (`build = "../board-common/board-build.rs"`
//! in firmware/rp2040 and firmware/nrf52840): puts the board's memory.x on
//! the linker's search path and records the build time (the reading
//! timestamps' lower bound until the board knows the time).
use std::env;
use std::fs;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // SOURCE_DATE_EPOCH (seconds) for reproducible builds, else now.
    let epoch_ms = match env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        Some(s) => s * 1000,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    };
    fs::write(
        out.join("build_epoch.rs"),
        format!("/// Unix time of the build, ms.\npub const BUILD_EPOCH_MS: u64 = {epoch_ms};\n"),
    )
    .unwrap();
}
