#!/usr/bin/env bash
# Firmware CI: installs QEMU and the targets, builds every firmware in
# release, checks the size budgets against firmware/size-report.txt, and
# runs the QEMU sensor firmware end to end against a real gateway:
# genesis with the device, `sensorchain run`, the firmware streams its
# readings over an emulated UART and exits 0. Then a sealed pass: the
# admin assigns the device to a patient (`sensorchain tx assign`), the
# firmware is rebuilt to seal its readings for the patient and streams
# again; `sensorchain audit` passes, every reading is committed, and every
# sealed reading in the export opens with the patient's key (and not with
# the gateway's). Prints the firmware's own measurements (instructions of a
# signature, a verification, a sealed reading, the handshake's computation;
# stack peaks) and fails if data + bss + the peak stack of either pass
# exceed the RAM budget. Non-interactive; a few minutes.
# SENSORCHAIN_BIN=path: use that gateway binary instead of building one.
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
if [ -n "${SENSORCHAIN_BIN:-}" ]; then
  step "gateway binary: $SENSORCHAIN_BIN"
  SC=$(realpath "$SENSORCHAIN_BIN")
else
  step "gateway binary (profile $GATEWAY_PROFILE)"
  cargo build --profile "$GATEWAY_PROFILE" -q -p sensorchain-gateway --bin sensorchain
  TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  PROFILE_DIR=$GATEWAY_PROFILE; [ "$PROFILE_DIR" = dev ] && PROFILE_DIR=debug
  SC="$TARGET_DIR/$PROFILE_DIR/sensorchain"
fi
"$SC" --version

WORK=$(mktemp -d)
GW_PID=""
cleanup() {
  if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then kill "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

step "network on disk: keys, genesis with the device and a patient as members"
"$SC" keygen --out "$WORK/admin.key" >/dev/null
"$SC" keygen --out "$WORK/gateway.key" >/dev/null
"$SC" keygen --out "$WORK/patient.key" >/dev/null
"$SC" keygen --out "$WORK/device.key" | sed 's/^/  /'
"$SC" genesis --name fw-e2e --creator "$WORK/admin.key" \
  --member "gateway:$WORK/gateway.key" --member "device:$WORK/device.key" \
  --member "patient:$WORK/patient.key" \
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
build_fw() { # [SEAL_FOR key file]
  (cd "$FW" && env -u CARGO_TARGET_DIR SENSORCHAIN_DEVICE_KEY="$WORK/device.key" SENSORCHAIN_GATEWAY_KEY="$WORK/gateway.key" \
    SENSORCHAIN_GENESIS="$WORK/genesis.block" SENSORCHAIN_READINGS="$READINGS" SENSORCHAIN_SEAL_FOR="${1:-}" \
    cargo build --release --locked -q \
      "--config=target.thumbv7em-none-eabihf.rustflags=[\"--remap-path-prefix=$ROOT=/sensorchain\",\"--remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo\"]")
}
build_fw

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

run_fw() { # log file
  set +e
  (cd "$WORK" && QEMU_SERIAL="tcp:127.0.0.1:$TCP" QEMU_EXTRA="-icount shift=0" \
    timeout 300 "$ROOT/$FW/run-qemu.sh" "$ELF") | tee "$1"
  QEMU_RC=${PIPESTATUS[0]}
  set -e
  echo "firmware exit status $QEMU_RC"
  [ "$QEMU_RC" -eq 0 ] || { echo "FAIL: firmware did not succeed; gateway log:"; tail -40 "$WORK/gateway.log"; exit 1; }
}
# field N of the line starting with $2 in log $1
field() { awk -v k="$2" -v n="$3" 'index($0, k) == 1 {print $n; exit}' "$1"; }
need() { for v in "$@"; do [ -n "${!v}" ] || { echo "FAIL: the firmware did not report $v"; exit 1; }; done; }
insns() { echo $(( $1 * 40 )); }
row() { printf '  %-58s %12d %14d\n' "$1" "$2" "$(insns "$2")"; }

step "QEMU mps2-an386: firmware streams $READINGS readings in clear through UART0 (-icount shift=0)"
run_fw "$WORK/qemu.log"

step "measured under -icount shift=0 (one 25 MHz timer tick = 40 instructions, so +-40)"
L="$WORK/qemu.log"
SIGN_T=$(field "$L" "ticks sign" 3); VERIFY_T=$(field "$L" "ticks sign" 5); SEALED_T=$(field "$L" "ticks sign" 7)
HS_A=$(field "$L" "handshake ticks" 4); HS_B=$(field "$L" "handshake ticks" 6); HS_W=$(field "$L" "handshake ticks" 8)
HS_STACK=$(field "$L" "handshake ticks" 10); HS_DEPTH=$(field "$L" "handshake ticks" 12)
RD_T=$(field "$L" "reading ticks" 3); RD_N=$(field "$L" "reading ticks" 5)
ST_BOOT=$(field "$L" "stack boot" 3); ST_STREAM=$(field "$L" "stack boot" 7); PEAK=$(field "$L" "stack peak" 3)
need SIGN_T VERIFY_T SEALED_T HS_A HS_B HS_W HS_STACK HS_DEPTH RD_T RD_N ST_BOOT ST_STREAM PEAK
printf '  %-58s %12s %14s\n' operation "timer ticks" instructions
row "Ed25519 signature" "$SIGN_T"
row "Ed25519 verification (the device's check of a gateway)" "$VERIFY_T"
row "sealed reading for one reader (seal + sign), standalone" "$SEALED_T"
row "handshake: start (ephemeral key, message 1)" "$HS_A"
row "handshake: finish (message 2 -> message 3, session keys)" "$HS_B"
row "handshake: the initiator's computation (start + finish)" "$((HS_A + HS_B))"
row "handshake: wall, including the wait for the gateway" "$HS_W"
row "plain reading signed in the loop, mean of $RD_N" "$((RD_T / RD_N))"
printf '  stack peak: boot and measurements %d B, handshake %d B (%d B of it below the loop that starts it), streaming %d B; whole run %d B\n' \
  "$ST_BOOT" "$HS_STACK" "$((HS_STACK - HS_DEPTH))" "$ST_STREAM" "$PEAK"

step "sealed pass: assign the device to the patient (sensorchain tx assign)"
"$SC" tx assign "$WORK/device.key" "$WORK/patient.key" --key "$WORK/admin.key" \
  --api "http://127.0.0.1:$API" | sed 's/^/  /'

step "rebuild the firmware to seal its readings for the patient"
build_fw "$WORK/patient.key"

step "QEMU mps2-an386: firmware streams $READINGS readings sealed for the patient"
run_fw "$WORK/qemu-sealed.log"
L="$WORK/qemu-sealed.log"
SRD_T=$(field "$L" "reading ticks" 3); SRD_N=$(field "$L" "reading ticks" 5); SPEAK=$(field "$L" "stack peak" 3)
SST_STREAM=$(field "$L" "stack boot" 7)
need SRD_T SRD_N SPEAK SST_STREAM
row "sealed reading (seal for the patient + sign) in the loop, mean of $SRD_N" "$((SRD_T / SRD_N))"
printf '  stack peak: streaming sealed %d B; whole run %d B\n' "$SST_STREAM" "$SPEAK"
[ "$SPEAK" -gt "$PEAK" ] && PEAK=$SPEAK
STACK_RAM=$((RAM + PEAK))
printf '  RAM: data + bss %d B + peak stack %d B (both passes) = %d B (budget %d)\n' "$RAM" "$PEAK" "$STACK_RAM" "$RAM_BUDGET"
if [ "$STACK_RAM" -gt "$RAM_BUDGET" ]; then echo "FAIL: data + bss + peak stack $STACK_RAM > $RAM_BUDGET"; fail=1; fi

step "stop the gateway, audit its chain"
kill -TERM "$GW_PID"; wait "$GW_PID" 2>/dev/null || true; GW_PID=""
AUDIT=$("$SC" audit --data-dir "$WORK/data" --json)
echo "$AUDIT"
VALID=$(echo "$AUDIT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["valid"])')
COMMITTED=$(echo "$AUDIT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["readings"])')
[ "$VALID" = "True" ] || { echo "FAIL: audit"; exit 1; }
[ "$COMMITTED" -ge $((2 * READINGS)) ] || { echo "FAIL: $COMMITTED readings committed, want $((2 * READINGS))"; exit 1; }

step "export the chain; the patient's key opens every sealed reading, the gateway's none"
"$SC" export --data-dir "$WORK/data" --out "$WORK/chain.export" | sed 's/^/  /'
HOST=$(rustc -vV | sed -n 's/^host: //p')
(cd "$FW/host-check" && env -u CARGO_TARGET_DIR cargo build --release --locked -q --target "$HOST")
if ! "$ROOT/$FW/host-check/target/$HOST/release/sensorchain-fw-open-sealed" "$WORK/chain.export" \
  "$WORK/device.key" "$WORK/patient.key" "$WORK/gateway.key" "$READINGS" | sed 's/^/  /'; then
  echo "FAIL: the sealed readings do not all open for the patient (or one opens for the gateway)"; exit 1
fi
[ "$fail" -eq 0 ] || { echo "FAIL: size budget"; exit 1; }
echo "QEMU end to end: $COMMITTED readings committed ($READINGS in clear, $READINGS sealed for the patient and opened with its key), audit valid, flash $FLASH B, ram $RAM B + stack $PEAK B = $STACK_RAM B"
echo "firmware: 1 passed, 0 failed"
