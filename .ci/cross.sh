#!/usr/bin/env bash
# Raspberry Pi CI: cross builds of the `sensorchain` binary for
# aarch64-unknown-linux-gnu (Pi 3/4/5, 64-bit Raspberry Pi OS) and
# armv7-unknown-linux-gnueabihf (32-bit OS, Pi Zero 2 W) with Debian's cross
# compilers (linkers: .cargo/config.toml); the aarch64 build run under
# qemu-user (`demo`, then `audit` of the chain it kept, `run --check` of its
# configuration), checking exit codes and output; the Debian packages
# (cargo-deb) for amd64, arm64 and armhf, their metadata and contents
# checked with dpkg-deb; the amd64 package installed and its gateway made
# and checked as the service would (`init --system`, `run --check` as the
# service's user), the unit checked with `systemd-analyze verify`; then the
# package purged. Installs everything it needs (idempotently).
# Non-interactive; about 15 minutes from cold on 2 cores (three release
# builds).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== cross: %s\n' "$*"; }
START=$(date +%s)
lap() { echo "   ($(($(date +%s) - START)) s so far)"; }
TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
declare -A DEB_ARCH=([aarch64-unknown-linux-gnu]=arm64 [armv7-unknown-linux-gnueabihf]=armhf)
# reproducible packages: file times and the man page's date from the commit
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

step "tools"
need=()
for p in gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross \
    qemu-user help2man dpkg-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup target add "${TARGETS[@]}" >/dev/null 2>&1 || rustup target add "${TARGETS[@]}"
if ! command -v cargo-deb >/dev/null; then
  t=$(date +%s)
  cargo install cargo-deb --locked --quiet
  echo "   cargo install cargo-deb: $(($(date +%s) - t)) s"
fi
cargo deb --version
lap

# The man page (help2man, from --help and --version) and every
# subcommand's --help, from the host binary, for each package.
docs() { # bin outdir
  help2man --no-info --name "gateway and tools of a permissioned ledger for signed sensor readings" \
    --section 1 "$1" | gzip -9n >"$2/sensorchain.1.gz"
  {
    "$1" --help
    for c in $("$1" --help | awk '/^Commands:/ {on=1; next} on && /^  [a-z]/ {print $1} /^$/ {on=0}'); do
      [ "$c" = help ] && continue
      printf '\n\n==== sensorchain %s --help\n\n' "$c"
      "$1" "$c" --help
    done
  } >"$2/sensorchain-help.txt"
}

step "amd64: release build, man page, package"
cargo build --locked --release -p sensorchain-gateway --bin sensorchain
HOST_BIN=$TARGET_DIR/release/sensorchain
docs "$HOST_BIN" "$TARGET_DIR/release"
cargo deb --locked --strip --no-build -p sensorchain-gateway
lap

for t in "${TARGETS[@]}"; do
  step "$t: release build and package (cargo deb --target $t)"
  mkdir -p "$TARGET_DIR/$t/release"
  docs "$HOST_BIN" "$TARGET_DIR/$t/release"
  cargo deb --locked --strip -p sensorchain-gateway --target "$t"
  lap
done

step "aarch64 under qemu-user: demo, audit of its chain, run --check"
QEMU=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
A64=$TARGET_DIR/aarch64-unknown-linux-gnu/release/sensorchain
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# (outputs are captured before they are matched: `cmd | grep -q` closes the
# pipe at the first match and the command's next line fails with EPIPE)
v=$("${QEMU[@]}" "$A64" --version) && grep -q '^sensorchain ' <<<"$v" || { echo "FAIL: aarch64 --version: $v"; exit 1; }
# one gateway (a process of its own, started under qemu too): a "works"
# check, not the five-gateway failover
"${QEMU[@]}" "$A64" demo --gateways 1 --gateway-runner "${QEMU[*]}" --seconds 3 --sensors 2 --data-dir "$work/demo" --json >"$work/demo.json" ||
  { echo "FAIL: aarch64 demo exited $?"; cat "$work/demo.json"; exit 1; }
python3 - "$work/demo.json" <<'EOF'
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
bad = [k for k in ("chain_valid", "tamper_detected") if not (s[k] is True or (isinstance(s[k], dict) and s[k].get("detected")))]
if s["readings_committed"] < 1 or s["blocks"] < 1 or bad:
    sys.exit(f"FAIL: aarch64 demo summary: {s}")
print(f"   demo (emulated, a 'works' only): {s['readings_committed']} readings in {s['blocks']} blocks, chain valid, tamper detected")
EOF
"${QEMU[@]}" "$A64" audit --data-dir "$work/demo/cluster/gw1/data" --json >"$work/audit.json" ||
  { echo "FAIL: aarch64 audit exited $?"; cat "$work/audit.json"; exit 1; }
grep -q '"valid":true' "$work/audit.json" || { echo "FAIL: aarch64 audit: $(cat "$work/audit.json")"; exit 1; }
echo "   audit of the kept chain: valid"
c=$("${QEMU[@]}" "$A64" run --check --config "$work/demo/cluster/gw1/gateway.toml") && grep -q '^ok ' <<<"$c" ||
  { echo "FAIL: aarch64 run --check of the demo's gateway.toml: $c"; exit 1; }
echo "   run --check of its gateway.toml: ok"
ARMV7=$TARGET_DIR/armv7-unknown-linux-gnueabihf/release/sensorchain
v=$(qemu-arm -L /usr/arm-linux-gnueabihf "$ARMV7" --version) && grep -q '^sensorchain ' <<<"$v" ||
  { echo "FAIL: armv7 --version under qemu-arm: $v"; exit 1; }
echo "   armv7 --version under qemu-arm: ok"
lap

step "packages: dpkg-deb --info / --contents"
VERSION=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="sensorchain-gateway"))')
declare -A MACHINE=([amd64]="x86-64" [arm64]="ARM aarch64" [armhf]="ARM, EABI5")
for arch in amd64 arm64 armhf; do
  deb=$(ls "$TARGET_DIR"/debian/sensorchain_"$VERSION"-*_"$arch".deb 2>/dev/null | head -1 || true)
  [ -n "$deb" ] || deb=$(ls "$TARGET_DIR"/*/debian/sensorchain_"$VERSION"-*_"$arch".deb | head -1)
  info=$(dpkg-deb --info "$deb")
  contents=$(dpkg-deb --contents "$deb")
  for want in "Package: sensorchain" "Architecture: $arch" "Version: $VERSION" "Section: net"; do
    grep -q "^ *$want" <<<"$info" || { echo "FAIL: $deb: no '$want' in its control"; exit 1; }
  done
  for f in ./usr/bin/sensorchain ./usr/lib/systemd/system/sensorchain.service \
      ./usr/lib/sysusers.d/sensorchain.conf ./usr/share/man/man1/sensorchain.1.gz \
      ./usr/share/doc/sensorchain/sensorchain-help.txt ./usr/share/doc/sensorchain/DEPLOY.md \
      ./usr/share/doc/sensorchain/examples/gateway.toml ./usr/share/doc/sensorchain/copyright; do
    grep -q " $f\$" <<<"$contents" || { echo "FAIL: $deb lacks $f"; echo "$contents"; exit 1; }
  done
  for s in postinst postrm; do
    grep -q "^ *[0-9]* bytes, *[0-9]* lines *\* *$s " <<<"$info" || { echo "FAIL: $deb: no $s"; exit 1; }
  done
  x=$(mktemp -d); dpkg-deb -x "$deb" "$x"
  what=$(file "$x/usr/bin/sensorchain")
  grep -q "${MACHINE[$arch]}" <<<"$what" && grep -q ', stripped' <<<"$what" ||
    { echo "FAIL: $deb: $what (expected ${MACHINE[$arch]}, stripped)"; exit 1; }
  rm -rf "$x"
  printf '   %-44s %6d KiB, %s\n' "$(basename "$deb")" $(($(stat -c %s "$deb") / 1024)) \
    "$(grep -c . <<<"$contents") entries"
done
lap

step "amd64 package: install, init --system, run --check as the service's user, unit verified"
AMD64_DEB=$(ls "$TARGET_DIR"/debian/sensorchain_"$VERSION"-*_amd64.deb | head -1)
if [ "$(id -u)" != 0 ] || [ -e /etc/sensorchain ] || [ -e /var/lib/sensorchain ] || dpkg -s sensorchain >/dev/null 2>&1; then
  echo "   skipped: needs root and a machine without a sensorchain installation"
else
  cleanup() { dpkg --purge sensorchain >/dev/null 2>&1 || true; rm -rf /etc/sensorchain /var/lib/sensorchain "$work"; }
  trap cleanup EXIT
  dpkg -i "$AMD64_DEB" >/dev/null
  getent passwd sensorchain >/dev/null || { echo "FAIL: the package made no user sensorchain"; exit 1; }
  [ -d /etc/sensorchain ] || { echo "FAIL: no /etc/sensorchain"; exit 1; }
  SC=/usr/bin/sensorchain
  api=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  out=$($SC init --system --tcp 127.0.0.1:0 --api "127.0.0.1:$api")
  pk=$(awk '/^public key/ {print $3}' <<<"$out")
  [ "$(stat -c '%U %a' /etc/sensorchain/gateway.key)" = "sensorchain 600" ] ||
    { echo "FAIL: key is $(stat -c '%U %a' /etc/sensorchain/gateway.key)"; exit 1; }
  if $SC init --system >/dev/null 2>&1; then echo "FAIL: a second init --system overwrote"; exit 1; fi
  $SC keygen --out "$work/admin.key" >/dev/null
  $SC genesis --name ci --creator "$work/admin.key" --member "gateway:$pk" --out "$work/genesis.block" >/dev/null
  install -m 0644 "$work/genesis.block" /etc/sensorchain/genesis.block
  # ExecStartPre and ExecStart of the unit, as its user
  UNIT=$(dpkg -L sensorchain | grep '/systemd/system/sensorchain\.service$')
  pre=$(sed -n 's/^ExecStartPre=//p' "$UNIT")
  c=$(runuser -u sensorchain -- $pre) && grep -q '^ok ' <<<"$c" || { echo "FAIL: $pre as sensorchain: $c"; exit 1; }
  echo "   $pre (as sensorchain): ok"
  exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
  runuser -u sensorchain -- $exec_start >"$work/run.log" 2>&1 &
  gw=$!
  ok=0
  for _ in $(seq 1 300); do
    if python3 -c 'import urllib.request,sys; sys.exit(0 if b"height" in urllib.request.urlopen("http://127.0.0.1:%s/chain/head" % sys.argv[1], timeout=2).read() else 1)' "$api" 2>/dev/null; then ok=1; break; fi
    kill -0 "$gw" 2>/dev/null || break
    sleep 0.1
  done
  kill -TERM "$gw" 2>/dev/null || true
  wait "$gw" || true
  [ "$ok" = 1 ] || { echo "FAIL: the installed gateway did not serve /chain/head:"; cat "$work/run.log"; exit 1; }
  echo "   $exec_start (as sensorchain): served /chain/head, stopped on SIGTERM"
  if command -v systemd-analyze >/dev/null; then
    # --man=no: the man page is checked above; `man` itself may be missing
    if systemd-analyze verify --man=no "$UNIT" 2>"$work/verify.log"; then
      echo "   systemd-analyze verify: ok"
      systemd-analyze security --offline=yes "$UNIT" 2>/dev/null | grep 'Overall exposure' | sed 's/^/   /' || true
    else
      cat "$work/verify.log"; echo "FAIL: systemd-analyze verify"; exit 1
    fi
  else
    echo "   systemd-analyze: not installed here, the unit was not verified"
  fi
  dpkg --purge sensorchain >/dev/null
  [ ! -e /usr/bin/sensorchain ] || { echo "FAIL: purge left /usr/bin/sensorchain"; exit 1; }
fi

# keep only the packages of the cross builds' outputs (disk)
echo "   packages: $(ls "$TARGET_DIR"/debian/*.deb "$TARGET_DIR"/*/debian/*.deb 2>/dev/null | tr '\n' ' ')"
echo "cross: ok in $(($(date +%s) - START)) s"
