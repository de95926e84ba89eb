#!/usr/bin/env bash
# Regenerates docs/web-tasks.png, the tasks page README.md shows, with the browser test
# that drives the real binary (needs `apt-get install chromium chromium-driver`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -p runops --test e2e_web sign_in_create_a_task_watch_its_log_arrive_live_and_kill_it
cp target/tmp/e2e_web/live_log_and_kill/tasks-1280.png docs/web-tasks.png
echo "updated docs/web-tasks.png"
