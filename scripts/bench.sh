#!/usr/bin/env bash
# Builds the release binaries and runs the benchmark suite (about 10 minutes): every
# figure next to its baseline, printed as markdown on stdout and written to
# target/bench/results-<UTC time>.{json,md} (the raw redaction table next to them).
# The first table is "Goals (issue 20)": each goal's figure, its baseline from the same
# run, and the goal. Copy the figures you want to keep into BENCHMARKS.md.
#
#   bash scripts/bench.sh                    # everything
#   bash scripts/bench.sh goals              # only issue 20's goals table
#   bash scripts/bench.sh --figures cli,cpu goals   # some of its figures: cli dispatch cpu throughput logs agent-memory follow-memory
#   bash scripts/bench.sh dispatch memory    # some of: goals dispatch overhead throughput memory redaction control control-postgres dispatch-postgres
#
# Before/after: compare an old `runops` binary with the one built from this tree, in the
# same run. Each figure runs alternately on old and new (3 rounds each; --rounds N), and
# the table gives both medians and new / old:
#
#   cp target/release/runops /tmp/runops-before      # once, before your change (or build the base commit elsewhere)
#   bash scripts/bench.sh --compare /tmp/runops-before               # every figure
#   bash scripts/bench.sh --compare /tmp/runops-before dispatch cpu  # some figures
#   bash scripts/bench.sh --compare /tmp/runops-before --rounds 5 --log-bytes 268435456 logs
#
#   bash scripts/bench.sh --replicas 1,3 control control-postgres dispatch-postgres   # SQLite vs PostgreSQL, one run
#   QUICK=1 bash scripts/bench.sh            # debug builds, tiny samples: checks the harness only
#
# Needs bash; the overhead's postgres task needs psql plus a PostgreSQL on 127.0.0.1:5432
# that lets `postgres` into database `test` without a password (marked pending otherwise).
# The PostgreSQL measurements (control-postgres, dispatch-postgres) need psql and the server
# at RUNOPS_BENCH_DATABASE_URL (or --database-url; default
# postgres://postgres@127.0.0.1:5432/postgres): each run creates a fresh database there
# (runops_bench_<pid>_...) and drops it afterwards.
# The machine should be otherwise idle: the load average is recorded with the figures.
set -euo pipefail

# --compare's binary is a path given relative to the caller's directory.
args=()
compare=0
while [ $# -gt 0 ]; do
  case "$1" in
    --compare)
      [ $# -ge 2 ] || { echo "bench.sh: --compare needs the old runops binary" >&2; exit 2; }
      [ -x "$2" ] || { echo "bench.sh: $2 is not an executable runops binary" >&2; exit 2; }
      args+=(--compare "$(realpath "$2")"); compare=1; shift 2 ;;
    --compare=*)
      old=${1#--compare=}
      [ -x "$old" ] || { echo "bench.sh: $old is not an executable runops binary" >&2; exit 2; }
      args+=(--compare "$(realpath "$old")"); compare=1; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- "${args[@]+"${args[@]}"}"
cd "$(dirname "$0")/.."

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

want_redaction=0
for m in "$@"; do [ "$m" = redaction ] && want_redaction=1; done
[ $# -eq 0 ] && want_redaction=1
[ "$compare" = 1 ] && want_redaction=0

out=target/bench
mkdir -p "$out"
stamp=$(date -u +%Y%m%d-%H%M%S)
[ "$compare" = 1 ] && stamp="compare-$stamp"

if [ "${QUICK:-}" = 1 ]; then
  profile=debug
  build_flags=()
  bench_flags=(--quick)
  redact_mib=4
else
  profile=release
  build_flags=(--release)
  bench_flags=()
  redact_mib=
fi

log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
command -v psql >/dev/null || log "psql not found: the postgres comparison will be marked pending"

# runops alone, as users build it: built together with runops-bench, cargo unifies the
# two packages' features, which changes symbol hashes and so the binary's layout
# (crates/runops/build.rs).
log "cargo build ${build_flags[*]} -p runops; cargo build ${build_flags[*]} -p runops-bench"
cargo build "${build_flags[@]}" -p runops
cargo build "${build_flags[@]}" -p runops-bench
[ "$profile" = release ] && log "$(bash scripts/link-order.sh --check "target/$profile/runops")"

redact_args=()
if [ "$want_redaction" = 1 ]; then
  log "cargo run ${build_flags[*]} -p runops-redact --example redact_bench $redact_mib"
  # shellcheck disable=SC2086 # $redact_mib is empty or one number
  cargo run -q "${build_flags[@]}" -p runops-redact --example redact_bench $redact_mib | tee "$out/redact-$stamp.txt"
  redact_args=(--redact-table "$out/redact-$stamp.txt")
fi

log "runops-bench $*"
"target/$profile/runops-bench" --runops "target/$profile/runops" "${bench_flags[@]}" "${redact_args[@]}" \
  --json "$out/results-$stamp.json" --markdown "$out/results-$stamp.md" "$@"
log "results: $out/results-$stamp.md and $out/results-$stamp.json"
