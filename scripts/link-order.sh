#!/usr/bin/env bash
# Records which functions of the release `runops` binary the agent, the CLI and the
# server run, and writes them to crates/runops/link/hot-symbols.txt, the list the linker
# places first and together (crates/runops/build.rs says why). Run it after upgrading
# Rust or dependencies, or when BENCHMARKS.md's agent RSS grows: names the build no
# longer has are skipped by the linker, so a stale list only costs memory.
#
#   bash scripts/link-order.sh           # about a minute after the release build
#   bash scripts/link-order.sh --check   # how much of the list the built binary still has
#
# The list decays as the code changes: a function's name carries a hash, and LTO renames
# local functions (`.llvm.<n>`) and changes which ones are inlined, so every change
# leaves some names the new binary does not have: after one protocol change the binary
# had 83 % of them, and the idle agent was 2.8 MiB bigger than with all of them.
# Regenerate the list before a release and before measuring memory; bench.sh prints
# the figure.
#
# How: a server, an agent and CLI commands from `cargo build --release -p runops` (alone:
# building other packages with it can change the symbols' hashes), on loopback, each
# under `valgrind --tool=callgrind`; a few dozen tasks of the usual kinds (plain, failing,
# redacted output, a larger log, one that sleeps). The list holds the agent's functions,
# then the CLI's, then the server's, each name once, sorted within each group.
set -euo pipefail
cd "$(dirname "$0")/.."
list=crates/runops/link/hot-symbols.txt

if [ "${1:-}" = --check ]; then
  bin=${2:-target/release/runops}
  [ -x "$bin" ] || { echo "link-order.sh: no $bin; build it with cargo build --release -p runops" >&2; exit 2; }
  have=$(nm --defined-only "$bin" | awk '{print $3}' | sort -u | comm -12 - <(sort -u "$list") | wc -l)
  total=$(wc -l < "$list")
  echo "link-order.sh: $bin has $have of the $total functions of $list ($((100 * have / total)) %)"
  exit 0
fi

command -v valgrind >/dev/null || { echo "link-order.sh: needs valgrind (apt-get install valgrind)" >&2; exit 2; }

cargo build --release --locked -q -p runops
bin=$PWD/target/release/runops
work=$(mktemp -d /tmp/runops-link-order.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export RUNOPS_URL=http://127.0.0.1:$port
export RUNOPS_TOKEN=link-order-admin-$RANDOM$RANDOM$RANDOM$RANDOM
export RUNOPS_CONFIG=$work/cli-config
# `cg ROLE COMMAND...`: a command under callgrind. The server and the agent run in the
# background with the array itself, so that $! is valgrind.
callgrind=(valgrind --tool=callgrind --demangle=no -q)
cg() { "${callgrind[@]}" --callgrind-out-file="$work/cg.$1.%p" "${@:2}"; }

RUNOPS_ADMIN_TOKEN=$RUNOPS_TOKEN RUNOPS_LISTEN=127.0.0.1:$port RUNOPS_DATA_DIR=$work/server \
  "${callgrind[@]}" --callgrind-out-file="$work/cg.server.%p" \
  "$bin" server >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do curl -sf "$RUNOPS_URL/healthz" >/dev/null && break; sleep 0.2; done
curl -sf "$RUNOPS_URL/healthz" >/dev/null || { echo "link-order.sh: the server did not start; see $work/server.log" >&2; exit 1; }

cg cli "$bin" targets create --name local --type bash >/dev/null 2>&1
token=$(cg cli "$bin" agents create-token --name link-order | tail -1)
TOKEN=$token API_URL=$RUNOPS_URL RUNOPS_AGENT_DATA_DIR=$work/agent \
  "${callgrind[@]}" --callgrind-out-file="$work/cg.agent.%p" \
  "$bin" agent >"$work/agent.log" 2>&1 &
agent=$!
pids+=($agent)
for _ in $(seq 300); do grep -q "connected; ready" "$work/agent.log" && break; sleep 0.2; done
grep -q "connected; ready" "$work/agent.log" || { echo "link-order.sh: the agent did not connect; see $work/agent.log" >&2; exit 1; }

cg cli "$bin" tasks create -t local -s 'echo hello' >/dev/null
cg cli "$bin" tasks create -t local -s 'echo my email is john@example.com, card 4111111111111111; exit 3' >/dev/null 2>&1 || true
cg cli "$bin" tasks create -t local -s 'yes "a line of output from 192.168.1.1" | head -c 3000000 | tail -c 100' >/dev/null
for _ in $(seq 10); do
  "$bin" tasks create -t local -s true >/dev/null &
  a=$!
  "$bin" tasks create -t local -s 'echo john@example.com >&2; exit 1' >/dev/null 2>&1 &
  b=$!
  wait "$a" || true
  wait "$b" || true
done
cg cli "$bin" tasks create -t local -s 'sleep 0.5; echo done' >/dev/null
cg cli "$bin" tasks list >/dev/null
cg cli "$bin" tasks logs 1 >/dev/null
cg cli "$bin" targets list >/dev/null
cg cli "$bin" agents list >/dev/null

# callgrind writes its file when the process exits: stop the agent, then the server.
kill -TERM "$agent"
wait "$agent" 2>/dev/null || true
kill -TERM "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
pids=()

python3 - "$work" "$bin" "$list" <<'EOF'
import glob, re, sys
work, binary, out = sys.argv[1:]
names, seen = [], set()
for role in ("agent", "cli", "server"):
    start = len(names)
    for path in sorted(glob.glob(f"{work}/cg.{role}.*")):
        objects, functions, current = {}, {}, None
        for line in open(path, errors="replace"):
            line = line.rstrip("\n")
            m = re.match(r"^(c?ob)=\((\d+)\)(?: (.*))?$", line)
            if m:
                kind, i, name = m.groups()
                if name:
                    objects[i] = name
                if kind == "ob":
                    current = objects.get(i)
                continue
            m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line)
            if not m:
                continue
            kind, i, name = m.groups()
            if name:
                functions[i] = name
            name = functions.get(i)
            if kind != "fn" or current != binary or not name:
                continue
            name = re.sub(r"'\d+$", "", name)  # callgrind's mark for a recursion level
            if name.startswith(("(", "0x")) or name in seen:
                continue
            seen.add(name)
            names.append(name)
    # Sorted within each role: the order inside the group does not matter for what is
    # resident, and a sorted list keeps a regeneration's diff to what changed.
    names[start:] = sorted(names[start:])
with open(out, "w") as f:
    f.write("".join(n + "\n" for n in names))
print(f"link-order.sh: {len(names)} functions written to {out}")
EOF
[ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
