#!/usr/bin/env bash
# Firmware CI: installs QEMU and the targets, builds every firmware in
# release, checks the size budgets against firmware/size-report.txt, and
# runs the QEMU sensor firmware end to end against a real gateway:
# genesis with the device, `sensorchain run`, the firmware streams its
# readings over an emulated UART and exits 0, `sensorchain audit` passes
# and at least 20 readings are committed. Non-interactive; a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
step() { printf '\n== firmware: %s\n' "$*"; }

FLASH_BUDGET=$((48 * 1024))
RAM_BUDGET=$((16 * 1024))
READINGS=${SENSORCHAIN_READINGS:-20}

step "tools: qemu-system-arm and the rustup targets"
if ! command -v qemu-system-arm >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq qemu-system-arm >/dev/null
fi
qemu-system-arm --version | head -1
if command -v rustup >/dev/null; then
  rustup target add thumbv7em-none-eabihf thumbv6m-none-eabi >/dev/null 2>&1 || true
fi
command -v size >/dev/null || { echo "binutils 'size' missing"; exit 1; }

# The dev profile (dependencies at opt-level 3) shares the build that
# `cargo test --workspace` already made; GATEWAY_PROFILE=release for a
# release gateway.
GATEWAY_PROFILE=${GATEWAY_PROFILE:-dev}
step "gateway binary (profile $GATEWAY_PROFILE)"
cargo build --profile "$GATEWAY_PROFILE" -q -p sensorchain-gateway --bin sensorchain
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
PROFILE_DIR=$GATEWAY_PROFILE; [ "$PROFILE_DIR" = dev ] && PROFILE_DIR=debug
SC="$TARGET_DIR/$PROFILE_DIR/sensorchain"
"$SC" --version

WORK=$(mktemp -d)
GW_PID=""
cleanup() {
  if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then kill "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

step "network on disk: keys, genesis with the device as a member"
"$SC" keygen --out "$WORK/admin.key" >/dev/null
"$SC" keygen --out "$WORK/gateway.key" >/dev/null
"$SC" keygen --out "$WORK/device.key" | sed 's/^/  /'
"$SC" genesis --name fw-e2e --creator "$WORK/admin.key" \
  --member "gateway:$WORK/gateway.key" --member "device:$WORK/device.key" \
  --out "$WORK/genesis.block" | sed 's/^/  /'
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TCP=$(free_port); API=$(free_port)
cat > "$WORK/gateway.toml" <<TOML
data_dir = "data"
key_file = "gateway.key"
genesis_file = "genesis.block"
[listen]
tcp = "127.0.0.1:$TCP"
api = "127.0.0.1:$API"
[batch]
timeout_ms = 5
TOML

step "build firmware/qemu-mps2-an386 (release, provisioned with the device key)"
FW=firmware/qemu-mps2-an386
ELF="$ROOT/$FW/target/thumbv7em-none-eabihf/release/sensorchain-fw-qemu-mps2-an386"
(cd "$FW" && env -u CARGO_TARGET_DIR SENSORCHAIN_DEVICE_KEY="$WORK/device.key" SENSORCHAIN_GATEWAY_KEY="$WORK/gateway.key" \
  SENSORCHAIN_GENESIS="$WORK/genesis.block" SENSORCHAIN_READINGS="$READINGS" \
  cargo build --release --locked -q)

step "size report"
REPORT="$WORK/size-report.txt"
fail=0
sizes() { # name elf -> "name flash ram"
  size -A "$2" | awk -v n="$1" '
    $1==".vector_table"||$1==".text"||$1==".rodata" {f+=$2}
    $1==".data" {f+=$2; r+=$2}
    $1==".bss"||$1==".uninit" {r+=$2}
    END {printf "%-24s flash %7d  ram %6d\n", n, f, r}'
}
{
  echo "# firmware sizes in bytes: flash = vector table + text + rodata + data, ram = data + bss (stack not included)"
  echo "# budget qemu-mps2-an386: flash <= $FLASH_BUDGET, ram <= $RAM_BUDGET"
  sizes qemu-mps2-an386 "$ELF"
} > "$REPORT"
cat "$REPORT"
read -r _ _ FLASH _ RAM < <(grep '^qemu-mps2-an386' "$REPORT")
if [ "$FLASH" -gt "$FLASH_BUDGET" ]; then echo "FAIL: qemu-mps2-an386 flash $FLASH > $FLASH_BUDGET"; fail=1; fi
if [ "$RAM" -gt "$RAM_BUDGET" ]; then echo "FAIL: qemu-mps2-an386 ram $RAM > $RAM_BUDGET"; fail=1; fi
if ! diff -u firmware/size-report.txt "$REPORT"; then
  echo "note: sizes differ from the snapshot firmware/size-report.txt (update it with: cp the report above)"
fi

step "gateway: sensorchain run"
(cd "$WORK" && SENSORCHAIN_LOG="${GATEWAY_LOG:-info}" exec "$SC" run --config gateway.toml 2>"$WORK/gateway.log") &
GW_PID=$!
for _ in $(seq 1 300); do
  (exec 3<>"/dev/tcp/127.0.0.1/$TCP") 2>/dev/null && break
  kill -0 "$GW_PID" 2>/dev/null || { echo "gateway exited"; exit 1; }
  sleep 0.1
done

step "QEMU mps2-an386: firmware streams $READINGS readings through UART0 (-icount shift=0)"
set +e
(cd "$WORK" && QEMU_SERIAL="tcp:127.0.0.1:$TCP" QEMU_EXTRA="-icount shift=0" \
  timeout 300 "$ROOT/$FW/run-qemu.sh" "$ELF") | tee "$WORK/qemu.log"
QEMU_RC=${PIPESTATUS[0]}
set -e
echo "firmware exit status $QEMU_RC"
[ "$QEMU_RC" -eq 0 ] || { echo "FAIL: firmware did not succeed; gateway log:"; tail -40 "$WORK/gateway.log"; exit 1; }

step "stop the gateway, audit its chain"
kill -TERM "$GW_PID"; wait "$GW_PID" 2>/dev/null || true; GW_PID=""
AUDIT=$("$SC" audit --data-dir "$WORK/data" --json)
echo "$AUDIT"
VALID=$(echo "$AUDIT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["valid"])')
COMMITTED=$(echo "$AUDIT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["readings"])')
[ "$VALID" = "True" ] || { echo "FAIL: audit"; exit 1; }
[ "$COMMITTED" -ge "$READINGS" ] || { echo "FAIL: $COMMITTED readings committed, want $READINGS"; exit 1; }
[ "$fail" -eq 0 ] || { echo "FAIL: size budget"; exit 1; }
echo "QEMU end to end: $COMMITTED readings committed, audit valid, flash $FLASH B, ram $RAM B"
echo "firmware: 1 passed, 0 failed"
