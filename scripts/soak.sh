#!/usr/bin/env bash
# Chaos soak: one `runops server` (SQLite) and four real `runops agent`s (different tags
# and concurrency) run thousands of tasks while agents and the server are SIGKILLed and
# restarted, agents are SIGSTOPped past their lease, an agent's spool disk fills up and
# an agent's network is cut; then every task is accounted for (lost, duplicated,
# mismatched logs, leaked secrets). The driver is scripts/soak.py; RELIABILITY.md has
# the figures and what each check means.
#
#   scripts/soak.sh --short          # 500 tasks, 10 faults, a few minutes; exit 1 on any
#                                    # lost/duplicated/leaked/mismatched task
#   scripts/soak.sh --tasks 10000 --faults 200 --duration 2400
#   scripts/soak.sh --help
#
# Run as root for the spool-full (tmpfs) and net-cut (network namespace + veth pair)
# faults; without root they are left out and the script says so. RUNOPS_BIN picks the
# binary (default: `cargo build -p runops`, target/debug/runops, which scripts/test.sh
# has built already; a release binary makes the long run faster).
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${RUNOPS_BIN:-}"
if [ -z "$bin" ]; then
    echo "==> cargo build -p runops" >&2
    cargo build --locked -q -p runops
    bin=target/debug/runops
fi
exec python3 scripts/soak.py "$bin" "$@"
