#!/usr/bin/env bash
# Boots the firmware ELF ($1) in QEMU's mps2-an386 machine. UART0 goes to
# ${QEMU_SERIAL:-null} (e.g. tcp:127.0.0.1:7400 to reach a gateway);
# semihosting prints to stdout and carries the exit status. QEMU_EXTRA adds
# options (e.g. "-icount shift=0" for instruction counts).
set -euo pipefail
elf="$1"
exec qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none \
  -semihosting-config enable=on,target=native \
  -serial "${QEMU_SERIAL:-null}" ${QEMU_EXTRA:-} -kernel "$elf"
