#!/usr/bin/env bash
# Issue 16, shown at full size: three `runops server` replicas on one PostgreSQL
# database (127.0.0.1:5432, user postgres, trust), agents on two of them, 2,000 tasks
# created round-robin on all three; every task must run exactly once. The regular test
# suite runs the same test with 300 tasks.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNOPS_E2E_REPLICA_TASKS="${RUNOPS_E2E_REPLICA_TASKS:-2000}" \
    cargo test -p runops --test e2e_replicas -- --exact \
    tasks_created_on_any_replica_run_exactly_once_on_agents_of_other_replicas "$@"
