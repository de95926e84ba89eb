#!/usr/bin/env bash
# Chaos soak: the control plane and four real `runops agent`s (different tags and
# concurrency) run thousands of tasks while agents and servers are SIGKILLed and
# restarted, agents are SIGSTOPped past their lease, an agent's spool disk fills up and
# an agent's network is cut; then every task is accounted for (lost, duplicated,
# mismatched logs, leaked secrets, failures no fault of their agent explains). The
# driver is scripts/soak.py; RELIABILITY.md has the figures and what each check means.
#
# Two stores:
#   --store sqlite    (default) one `runops server` on SQLite; fault server-kill
#   --store postgres  three `runops server` replicas on one PostgreSQL database, in a
#                     private cluster the script makes (initdb in its work dir, a free
#                     port of 127.0.0.1, fsync on); faults replica-kill (SIGKILL one
#                     replica, restart it on its port) and pg-restart (the cluster
#                     stopped abruptly, started again 0.2-2 s later). Needs the
#                     PostgreSQL server programs (Debian: `apt-get install postgresql`);
#                     never touches a PostgreSQL already running on the machine.
#
#   scripts/soak.sh --short                   # 500 tasks, 10 faults, a few minutes;
#                                             # exit 1 on any lost/duplicated/leaked/
#                                             # mismatched/unexplained task
#   scripts/soak.sh --short --store postgres  # 400 tasks, 12 faults (2 of each kind)
#   scripts/soak.sh --tasks 10000 --faults 200 --duration 2400
#   scripts/soak.sh --store postgres --tasks 10000 --faults 200 --duration 2400
#   scripts/soak.sh --help
#
# The fault kinds come in turn (N faults: N/K of each of the K kinds, shuffled). The
# work dir (databases, spools, logs) is under $TMPDIR and removed at the end unless
# --keep; the script prints the disk it needs first (about 1.5 x the tasks' mean
# output of ~180 KiB each + 2 GiB: ~4.5 GiB for 10,000 tasks) and stops if it is not
# free. A failed run keeps the processes' logs and names their directory.
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
