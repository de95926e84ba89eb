# syntax=docker/dockerfile:1
#
# Images for the one `runops` binary. Two targets:
#
#   docker build -t runops/agent:latest .                   # the agent (default: last stage)
#   docker build -t runops/server:latest --target server .  # the control plane
#
# The agent is the last stage on purpose: `docker build .` and `heroku container:push worker`
# (which builds without a target) both produce the agent image the docs use.
# Checked without a Docker engine by `scripts/check-deploy.sh` (hadolint).

# ---------------------------------------------------------------------------------------
# builder: exactly the release build CI compiles.
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p runops \
    && install -m 0755 target/release/runops /usr/local/bin/runops

# ---------------------------------------------------------------------------------------
# base: what both images share: CA certificates (HTTPS to the server, AWS, Vault), the
# binary, and the unprivileged `runops` user (uid/gid 10001, numeric so that Kubernetes'
# runAsNonRoot can check it).
FROM debian:bookworm-slim AS base
# Versions are not pinned: bookworm only publishes security fixes, and a pin would break
# the build at the next one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 runops \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/runops \
        --shell /usr/sbin/nologin runops
COPY --from=builder /usr/local/bin/runops /usr/local/bin/runops
ENV HOME=/home/runops
STOPSIGNAL SIGTERM

# ---------------------------------------------------------------------------------------
# server: the control plane. SQLite lives in /var/lib/runops (mount a volume there).
# sqlite3 (about 2 MB) is the one tool added: online backups with `.backup` need it
# (docs/operations.md), and a Kubernetes pod has no other way to take one.
FROM base AS server
# Debian packages unpinned on purpose (see the base stage).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends sqlite3 \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/runops
ENV RUNOPS_LISTEN=0.0.0.0:8080 \
    RUNOPS_DATA_DIR=/var/lib/runops
VOLUME ["/var/lib/runops"]
WORKDIR /var/lib/runops
USER 10001:10001
EXPOSE 8080
# No curl in the image: bash's /dev/tcp asks /healthz on the port RUNOPS_LISTEN names.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/bin/bash", "-c", "exec 3<>\"/dev/tcp/127.0.0.1/${RUNOPS_LISTEN##*:}\" && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/runops"]
CMD ["server"]

# ---------------------------------------------------------------------------------------
# kubectl for the k8s, k8s-apply and k8s-exec integrations: the official release binary,
# checked against its published SHA-256. Bump KUBECTL_VERSION with your clusters (kubectl
# supports one minor version of skew either way).
FROM debian:bookworm-slim AS kubectl
ARG KUBECTL_VERSION=v1.34.2
ARG TARGETARCH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian packages unpinned on purpose (see the base stage).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && arch="${TARGETARCH:-$(dpkg --print-architecture)}" \
    && url="https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${arch}/kubectl" \
    && curl -fsSL -o /usr/local/bin/kubectl "$url" \
    && echo "$(curl -fsSL "$url.sha256")  /usr/local/bin/kubectl" | sha256sum --check --strict \
    && chmod 0755 /usr/local/bin/kubectl

# ---------------------------------------------------------------------------------------
# mongosh for the mongodb integration, from npm, installed with the same Debian Node.js the
# agent image runs (so npm itself stays out of the final image).
FROM debian:bookworm-slim AS mongosh
ARG MONGOSH_VERSION=2.12.0
# Debian packages unpinned on purpose (see the base stage).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates nodejs npm \
    && rm -rf /var/lib/apt/lists/* \
    && npm install --prefix /opt/mongosh --omit=dev --no-audit --no-fund "mongosh@${MONGOSH_VERSION}" \
    && npm cache clean --force

# ---------------------------------------------------------------------------------------
# agent: the runtimes the integrations drive (bash, python3, node, kubectl, mongosh; the SQL
# types use native drivers inside the binary and need nothing). tini is PID 1: it forwards
# SIGTERM to the agent only (which then drains: no new work, running tasks finish and are
# reported) and reaps the orphans that task scripts leave behind.
FROM base AS agent
# Debian packages unpinned on purpose (see the base stage).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends bash nodejs python3 tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=kubectl /usr/local/bin/kubectl /usr/local/bin/kubectl
COPY --from=mongosh /opt/mongosh /opt/mongosh
RUN ln -s /opt/mongosh/node_modules/.bin/mongosh /usr/local/bin/mongosh \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/runops-agent
# The spool: logs and results the server has not acknowledged yet. Keep it on a volume so
# a restart resends them instead of losing them.
ENV RUNOPS_AGENT_DATA_DIR=/var/lib/runops-agent
VOLUME ["/var/lib/runops-agent"]
WORKDIR /var/lib/runops-agent
USER 10001:10001
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/runops"]
CMD ["agent"]
