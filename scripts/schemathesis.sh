#!/usr/bin/env bash
# The API contract against a live server: schemathesis generates requests from
# /v1/openapi.json (docs/openapi.json) and checks every answer: no 5xx
# (not_a_server_error), every answer matches the document (status code, content type,
# schema), every 4xx/5xx is `{code, error, hint}` (the `error_shape` check of
# scripts/schemathesis_hooks.py). It runs as an admin, as a user and as an agent, each
# with its own token made through the CLI, on a `runops server` with a throwaway data
# dir on a free port. RELIABILITY.md has the totals.
#
#   scripts/schemathesis.sh                 # about 25 examples per operation and mode
#   SCHEMATHESIS_EXAMPLES=200 scripts/schemathesis.sh
#
# Exit 1 on any finding; the report and the server log stay in the printed directory.
# RUNOPS_BIN picks the binary (default: `cargo build -p runops`, target/debug/runops).
# schemathesis (pinned below) is installed from PyPI into ~/.cache/runops/.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
examples="${SCHEMATHESIS_EXAMPLES:-25}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/runops"
venv="$cache/venv-schemathesis"

log() { printf '==> %s\n' "$*" >&2; }

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    mkdir -p "$cache"
    python3 -m venv "$venv" || {
        echo "error: cannot create a Python venv; install python3-venv (apt-get install python3-venv)" >&2
        exit 1
    }
    "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

bin="${RUNOPS_BIN:-}"
if [ -z "$bin" ]; then
    log "cargo build -p runops"
    cargo build --locked -q -p runops
    bin=target/debug/runops
fi
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

work="$(mktemp -d "${TMPDIR:-/tmp}/runops-schemathesis.XXXXXX")"
mkdir -p "$work/home"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
admin="rou_schemathesis-admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"

server_pid=""
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
trap stop_server EXIT

log "runops server on $url (data and report in $work)"
# A short lease keeps agent polls (held open up to a fraction of it) short.
HOME="$work/home" RUNOPS_ADMIN_TOKEN="$admin" "$bin" server \
    --listen "127.0.0.1:$port" --data-dir "$work/data" --agent-lease-secs 4 \
    >"$work/server.log" 2>&1 &
server_pid=$!
healthy() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$url/healthz" 2>/dev/null; }
for _ in $(seq 600); do
    healthy && break
    kill -0 "$server_pid" 2>/dev/null || { tail -20 "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
healthy || { echo "error: the server at $url did not answer /healthz in 60 s" >&2; exit 1; }

cli() { HOME="$work/home" RUNOPS_URL="$url" RUNOPS_TOKEN="$admin" "$bin" "$@"; }
user="$(cli users create --name fuzz-user --email fuzz-user@example.com --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"
agent="$(cli agents create-token --name schemathesis)"
# Something for the generated ids and names to find: a plain and a reviewed target,
# a task on each.
cli targets create --name fuzz --type bash >/dev/null
cli targets create --name fuzz-reviewed --type bash --review anyone >/dev/null
cli tasks create --target fuzz --script 'echo hello' --no-wait >/dev/null
cli tasks create --target fuzz-reviewed --script 'echo reviewed' --no-wait >/dev/null

failed=0
scripts="$PWD/scripts"
# One pass of schemathesis: NAME TOKEN [filter options...].
pass() {
    local name="$1" token="$2"
    shift 2
    log "schemathesis: $name"
    local rc=0
    # From the work dir: schemathesis keeps its cache in ./.schemathesis.
    (cd "$work" && SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$scripts" \
        "$venv/bin/schemathesis" run "$url/v1/openapi.json" \
        --header "Authorization: Bearer $token" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,error_shape \
        --phases examples,coverage,fuzzing \
        --max-examples "$examples" --seed 18 --workers 1 \
        --request-timeout 20 --no-color \
        --generation-database none --generation-with-security-parameters false \
        --report junit --report-junit-path "$work/$name.xml" \
        "$@") >"$work/$name.txt" 2>&1 || rc=$?
    tail -n 25 "$work/$name.txt" >&2
    [ "$rc" -eq 0 ] || failed=1
}

# The agent protocol takes agent tokens only; revoking tokens comes last, as a revoked
# admin or user token would turn the rest of a pass into 401s.
protocol='agent_(connect|poll|start|upload_log|finish|disconnect)'
revokes='tokens_revoke|agent_tokens_revoke'
pass admin "$admin" --exclude-operation-id-regex "^($protocol|$revokes)\$"
pass user "$user" --exclude-operation-id-regex "^($protocol|$revokes)\$"
pass agent "$agent" --include-operation-id-regex "^$protocol\$"
pass revokes "$admin" --include-operation-id-regex "^($revokes)\$"

python3 - "$work" <<'EOF'
import glob, os, sys
import xml.etree.ElementTree as ET
work = sys.argv[1]
total = {"operations": 0, "failures": 0, "errors": 0}
for path in sorted(glob.glob(os.path.join(work, "*.xml"))):
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    for s in suites:
        total["operations"] += int(s.get("tests", 0))
        total["failures"] += int(s.get("failures", 0))
        total["errors"] += int(s.get("errors", 0))
print("schemathesis totals: {operations} operation runs, {failures} failures, {errors} errors".format(**total), file=sys.stderr)
EOF
if [ "$failed" -ne 0 ]; then
    printf 'error: schemathesis found problems; the reports and the server log are in %s\n' "$work" >&2
    exit 1
fi
stop_server
rm -rf "$work"
log "schemathesis: no findings"
