#!/usr/bin/env bash
# The dashboard's WebAssembly module (crates/sensorchain-wasm): rebuilds it
# with the pinned toolchain and fails if the bytes differ from the committed
# asset the gateway embeds; then, unless WASM_ONLY=1, installs Debian's
# chromium and chromedriver and runs the dashboard's browser test against a
# running `sensorchain demo` (tests/dashboard.rs; SENSORCHAIN_BROWSER_TESTS=1
# makes a missing browser a failure, not a skip).
#
#   bash .ci/wasm.sh            check (CI)
#   WASM_UPDATE=1 bash .ci/wasm.sh   rebuild and overwrite the asset
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
export RUSTUP_AUTO_INSTALL=0
ASSET=crates/sensorchain-gateway/src/api/dashboard/assets/sensorchain.wasm

rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown
# Paths are remapped so the bytes do not depend on where the repository or
# cargo's registry are (the profile strips debug info; this covers any path
# that panics' locations might still carry).
CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="--remap-path-prefix=$PWD=/sensorchain --remap-path-prefix=$CARGO_HOME_DIR=/cargo"
cargo build --locked -p sensorchain-wasm --target wasm32-unknown-unknown --profile wasm
BUILT="${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/wasm/sensorchain_wasm.wasm"
echo "wasm: $(stat -c %s "$BUILT") bytes ($BUILT)"
if [ "${WASM_UPDATE:-0}" = 1 ]; then
    cp "$BUILT" "$ASSET"
    echo "updated $ASSET"
elif ! cmp -s "$BUILT" "$ASSET"; then
    echo "FAIL: $ASSET differs from a fresh build of crates/sensorchain-wasm"
    echo "  ($(stat -c %s "$ASSET") committed, $(stat -c %s "$BUILT") built): run WASM_UPDATE=1 bash .ci/wasm.sh and commit it"
    exit 1
else
    echo "wasm: the committed asset is the reproducible build"
fi

[ "${WASM_ONLY:-0}" = 1 ] && exit 0

# the browser test: Debian's chromium and its chromedriver
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
mkdir -p target
SENSORCHAIN_BROWSER_TESTS=1 cargo test --locked -p sensorchain-gateway --test dashboard 2>&1 | tee target/ci-dashboard.log
