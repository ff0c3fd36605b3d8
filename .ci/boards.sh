#!/usr/bin/env bash
# Board firmware CI: installs the two Cortex-M targets (idempotently), runs
# the host tests of firmware/board-common (the torn-write-safe flash state
# log both boards use), builds firmware/rp2040 (thumbv6m-none-eabi) and
# firmware/nrf52840 (thumbv7em-none-eabihf) in release with --locked, and
# writes a size report per board (firmware/<board>/size-report.txt),
# failing if a budget is exceeded and showing the change from the
# committed snapshot. Build checks only: no board is attached here, the
# images are not run. Non-interactive; a few minutes from cold.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== boards: %s\n' "$*"; }
START=$(date +%s)

# Budgets in bytes. flash = vector table + boot2 + text + rodata + data
# (what is programmed), ram = data + bss + uninit (static RAM; the stack,
# about 19 KiB at its peak in the QEMU run, comes on top). Both boards have
# far more (RP2040: 2 MiB flash, 264 KiB RAM; nRF52840: 1 MiB, 256 KiB):
# the budgets hold the images near today's size (about 20 % headroom) so
# that growth is noticed.
declare -A FLASH_BUDGET=([rp2040]=$((88 * 1024)) [nrf52840]=$((80 * 1024)))
declare -A RAM_BUDGET=([rp2040]=$((4 * 1024)) [nrf52840]=$((4 * 1024)))
declare -A TARGET=([rp2040]=thumbv6m-none-eabi [nrf52840]=thumbv7em-none-eabihf)
declare -A BIN=([rp2040]=sensorchain-fw-rp2040 [nrf52840]=sensorchain-fw-nrf52840)

step "targets"
if command -v rustup >/dev/null; then
  rustup target add thumbv6m-none-eabi thumbv7em-none-eabihf >/dev/null 2>&1 ||
    rustup target add thumbv6m-none-eabi thumbv7em-none-eabihf
fi
SIZE=""
for s in size llvm-size; do command -v "$s" >/dev/null && { SIZE=$s; break; }; done
[ -n "$SIZE" ] || { echo "FAIL: neither binutils 'size' nor 'llvm-size' found"; exit 1; }
HOST=$(rustc -vV | sed -n 's/^host: //p')
# Reproducible sizes: panic locations embed source paths (this checkout's
# and cargo's registry), so the same commit built in another directory
# used to differ by 16-40 bytes of rodata. Both are remapped to fixed names
# (merged with the boards' own target rustflags).
ROOT=$(pwd)
CARGO_DIR=${CARGO_HOME:-$HOME/.cargo}
remap() { # target -> a --config argument
  printf -- '--config=target.%s.rustflags=["--remap-path-prefix=%s=/sensorchain","--remap-path-prefix=%s=/cargo"]' \
    "$1" "$ROOT" "$CARGO_DIR"
}

step "firmware/board-common: state log host tests ($HOST)"
(cd firmware/board-common && env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET \
  cargo test --locked --target "$HOST")

sizes() { # name elf -> "name flash N ram N"
  "$SIZE" -A "$2" | awk -v n="$1" '
    $1==".vector_table"||$1==".boot2"||$1==".text"||$1==".rodata" {f+=$2}
    $1==".data" {f+=$2; r+=$2}
    $1==".bss"||$1==".uninit" {r+=$2}
    END {printf "%-24s flash %7d  ram %6d\n", n, f, r}'
}

fail=0
for board in rp2040 nrf52840; do
  step "firmware/$board: cargo build --release --locked (${TARGET[$board]})"
  t0=$(date +%s)
  (cd "firmware/$board" && env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET \
    cargo build --release --locked "$(remap "${TARGET[$board]}")")
  echo "built in $(( $(date +%s) - t0 )) s"
  elf="firmware/$board/target/${TARGET[$board]}/release/${BIN[$board]}"
  report="firmware/$board/size-report.txt"
  new=$(mktemp)
  {
    echo "# $board release image in bytes (.ci/boards.sh): flash = vector table + boot2 + text + rodata + data, ram = data + bss + uninit (stack not included)"
    echo "# budget $board: flash <= ${FLASH_BUDGET[$board]}, ram <= ${RAM_BUDGET[$board]}"
    sizes "$board" "$elf"
  } >"$new"
  cat "$new"
  read -r _ _ flash _ ram < <(grep "^$board " "$new")
  if [ "$flash" -gt "${FLASH_BUDGET[$board]}" ]; then
    echo "FAIL: $board flash $flash > ${FLASH_BUDGET[$board]}"; fail=1
  fi
  if [ "$ram" -gt "${RAM_BUDGET[$board]}" ]; then
    echo "FAIL: $board ram $ram > ${RAM_BUDGET[$board]}"; fail=1
  fi
  if [ -f "$report" ] && ! diff -u "$report" "$new"; then
    echo "note: $board sizes differ from the committed snapshot $report (rewritten: commit it if the change is meant)"
  fi
  cat "$new" >"$report"
  rm -f "$new"
done

[ "$fail" -eq 0 ] || { echo "FAIL: size budget"; exit 1; }
echo "boards: rp2040 and nrf52840 built, within budget, in $(( $(date +%s) - START )) s"
