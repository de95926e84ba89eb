#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60) and prints a table
# of executions. Needs the nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# FUZZ_JOBS=N runs N targets at a time (default 1); each still runs SECONDS.
# A crash stops the script (non-zero) naming the target and the input libFuzzer saved
# under fuzz/artifacts/TARGET/; reproduce it with
#   cargo +nightly fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...
# and turn it into a unit test of the crate that owns the code.
# Targets build without a sanitizer (`-s none`): the code under test is safe Rust, and
# libFuzzer's coverage guidance and Rust's own checks (overflow, bounds) still apply.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
jobs="${FUZZ_JOBS:-1}"

echo "building the fuzz targets (nightly, cargo fuzz)..." >&2
cargo +nightly fuzz build -s none

# Seed corpora: the genuine tokens and key set for the JWT targets.
for t in jwt_token jwks_document; do
    mkdir -p "corpus/$t"
done
cp seeds/token_es256.txt seeds/token_rs256.txt corpus/jwt_token/ 2>/dev/null || true
cp seeds/jwks.json corpus/jwks_document/ 2>/dev/null || true

# One target: its log in artifacts/TARGET/last-run.log, exit status 0 or 1 (crash).
run_one() {
    local t="$1"
    mkdir -p "corpus/$t" "artifacts/$t"
    cargo +nightly fuzz run -s none "$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
        >"artifacts/$t/last-run.log" 2>&1
}

pids=()
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    run_one "$t" &
    pids+=($!)
done

printf '%-16s %12s %8s %10s\n' target executions seconds exec/s
status=0
for i in "${!targets[@]}"; do
    t="${targets[$i]}"
    log="artifacts/$t/last-run.log"
    if wait "${pids[$i]}"; then
        runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
        runs="${runs:-?}"
        rate="?"
        if [ "$runs" != "?" ] && [ "$secs" -gt 0 ]; then rate=$((runs / secs)); fi
        printf '%-16s %12s %8s %10s\n' "$t" "$runs" "$secs" "$rate"
    else
        printf '%-16s %12s\n' "$t" "CRASH"
        grep -E 'panicked at|ERROR: libFuzzer|Test unit written to' "$log" | cut -c1-300 | head -5 >&2
        status=1
    fi
done
exit $status
