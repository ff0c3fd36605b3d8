#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS each (default 600), JOBS at a time
# (default 1; TARGETS="a b" picks some), logging to fuzz/logs/<target>.log. Local use; CI uses
# .ci/fuzz.sh.
set -uo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SECONDS:-600}
jobs=${JOBS:-1}
mkdir -p logs
python3 seed_corpus.py >/dev/null
targets=${TARGETS:-$(cargo +nightly fuzz list)}
run() {
    t=$1
    mkdir -p corpus/$t
    cargo +nightly fuzz run -O "$t" corpus/$t -- -max_total_time="$secs" -print_final_stats=1 \
        >"logs/$t.log" 2>&1
    echo "$t exit $?"
}
export -f run
export secs
printf '%s\n' $targets | xargs -P "$jobs" -I{} bash -c 'run {}'
