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

log "deployment files (hadolint, kustomize + kubernetes-validate, systemd-analyze, docs)"
bash scripts/check-deploy.sh

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test"
cargo test --workspace --locked "$@"
