#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target in fuzz/, replays the
# regression inputs in fuzz/regressions/<target>/, then runs each target for
# FUZZ_SECONDS (default 30) from a corpus seeded with tests/vectors. Fails on
# any crash; the crashing input is kept in fuzz/artifacts/<target>/ and must
# be copied to fuzz/regressions/<target>/ with the fix.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${FUZZ_SECONDS:-30}

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

python3 seed_corpus.py >/dev/null
cargo +nightly fuzz build -O
failed=0
for t in $(cargo +nightly fuzz list); do
    if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
        cargo +nightly fuzz run -O "$t" regressions/$t/* -- -runs=0 >/dev/null 2>&1 ||
            { echo "fuzz: $t: a regression input fails again"; failed=1; continue; }
    fi
    mkdir -p "corpus/$t"
    log=$(mktemp)
    if cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
        printf 'fuzz: %-22s ok   %s execs, %s\n' "$t" \
            "$(awk '/stat::number_of_executed_units/ {print $2}' "$log")" \
            "$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)"
    else
        echo "fuzz: $t CRASHED:"
        grep -E 'panicked|ERROR|Test unit written' "$log" | head -5
        failed=1
    fi
    rm -f "$log"
done
exit $failed
