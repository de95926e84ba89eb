#!/usr/bin/env python3
"""Chaos soak of Runops: the control plane and four real agents under injected faults.

Run through scripts/soak.sh (which builds the binary); see RELIABILITY.md for what it
proves and the figures. Stdlib only.

Two stores (--store):

  sqlite    one `runops server` on SQLite in its data dir (the default)
  postgres  three `runops server` replicas on one PostgreSQL database, in a private
            cluster the script makes itself (initdb in its work dir, a free port of
            127.0.0.1, fsync on; run as the `postgres` user when root); the shared
            PostgreSQL of the machine is never touched

The driver creates bash tasks on four targets (one per agent: different tags and
concurrency), through a random replica (another one when it does not answer). Each task
appends `TASK_ID RUN_ID` to its own marker file, sleeps 0-2 s and prints a pseudo-random
text (its size and seed are in the script) with the agent's planted secrets in three
spellings (plain, base64, URL-encoded). Meanwhile faults are injected, the kinds in turn
(a run of N faults has N/K of each of the K kinds, in a shuffled order):

  agent-kill    SIGKILL an agent, start it again (same data dir: it resumes its spool)
  server-kill   (sqlite) SIGKILL the server, start it again (same data dir and port)
  replica-kill  (postgres) SIGKILL one replica, start it again on the same port
  pg-restart    (postgres) stop the cluster abruptly (`pg_ctl stop -m immediate`, or
                SIGKILL of the postmaster and every backend), start it again 0.2-2 s
                later (crash recovery from the WAL)
  agent-stop    SIGSTOP an agent for longer than its lease, then SIGCONT
  spool-full    fill the tmpfs holding an agent's data dir, free it again
  net-cut       cut the veth link between an agent's network namespace and the
                server, restore it (sometimes longer than the lease)

At the end (faults stopped, every process running) it waits for every task to end and
counts: tasks created / succeeded / failed by reason; runs per task from the markers
(0 runs for a task that did not fail = lost, more than 1 = duplicated); the stored log
of every successful task against the expected redacted output (SHA-256); planted
secrets anywhere (every task's log and failure message via the API, each server's data
dir, the SQLite database or the PostgreSQL cluster's files and, by SQL, every text,
bytea and JSON column of every table, each agent's data dir with its spool, the
processes' own logs) = leaks; and every failed task against the faults of its agent.
Any lost, duplicated, leaked, mismatched, unfinished or unjustified task makes the exit
status 1.

Usage: soak.py BIN [--store sqlite|postgres] [--short] [--tasks N] [--faults N] [--seed N] [--keep]
       soak.py gen SEED SIZE          (what a task runs to print its output)
"""

import argparse
import base64
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ADMIN_TOKEN = "rou_soak-admin-token-0123456789abcdefghijklmnopqrstuvw"
SECRET_KEYS = ("SOAK_API_TOKEN", "SOAK_DB_PASSWORD")
LEASE_SECS = 6
OFFER_TIMEOUT_SECS = 5
# How long after a fault of its agent a task's failure may still be recorded: the lease
# running out after a stop or a cut, the reaper's second, the restarted agent's first
# report (its connection backed off meanwhile).
FAULT_REACH = LEASE_SECS + 10

# ---------------------------------------------------------------------------------------
# Task output: the same function prints it (in the task) and predicts it (in the driver).

# Bytes -> lowercase letters, spaces and newlines: text no secret spelling can come from.
_TABLE = bytes(
    (ord("\n") if b % 61 == 0 else ord(" ") if b % 7 == 0 else ord("a") + b % 26)
    for b in range(256)
)


def spellings(value):
    """The spellings of a secret a task prints: plain, base64, URL-encoded."""
    return [
        value.encode(),
        base64.b64encode(value.encode()),
        urllib.parse.quote(value, safe="").encode(),
    ]


def task_output(seed, size, secrets):
    """(raw output, expected redacted output) of a task: `size` bytes of filler with
    planted spellings of `secrets` ({key: value}) at random places."""
    rng = random.Random(seed)
    body = rng.randbytes(size).translate(_TABLE)
    plants = 2 + size // 150_000
    cuts = sorted(rng.randrange(size + 1) for _ in range(plants))
    raw, expected, at = [], [], 0
    keys = sorted(secrets)
    for cut in cuts:
        raw.append(body[at:cut])
        expected.append(body[at:cut])
        key = keys[rng.randrange(len(keys))]
        form = spellings(secrets[key])[rng.randrange(3)]
        raw.append(b" " + form + b" ")
        expected.append(b" [REDACTED:" + key.encode() + b"] ")
        at = cut
    raw.append(body[at:] + b"\nend of output\n")
    expected.append(body[at:] + b"\nend of output\n")
    return b"".join(raw), b"".join(expected)


def gen_main(seed, size):
    secrets = {k: os.environ[k] for k in SECRET_KEYS}
    raw, _ = task_output(int(seed), int(size), secrets)
    sys.stdout.buffer.write(raw)
    sys.stdout.buffer.flush()


# ---------------------------------------------------------------------------------------
# HTTP API


class Api:
    """The HTTP API of the control plane: one server, or several replicas (any of which
    serves any request: their state is the shared database)."""

    def __init__(self, bases):
        self.bases = list(bases)
        self.rng = random.Random()

    def call(self, method, path, body=None, timeout=30, raw=False, base=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request((base or self.bases[0]) + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + ADMIN_TOKEN)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = resp.read()
        return payload if raw else json.loads(payload or b"null")

    def retrying(self, method, path, body=None, raw=False, limit=120):
        """Calls until a server answers: a random replica first, then the next one when
        it does not answer or answers 5xx (it may be down for a restart, or the database
        may be). A 4xx is raised at once."""
        deadline = time.time() + limit
        at = self.rng.randrange(len(self.bases))
        while True:
            for i in range(len(self.bases)):
                base = self.bases[(at + i) % len(self.bases)]
                try:
                    return self.call(method, path, body, raw=raw, base=base)
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
                    if isinstance(e, urllib.error.HTTPError) and e.code < 500:
                        raise
                    if time.time() > deadline:
                        raise
            time.sleep(0.2)

    def all_tasks(self):
        tasks, before = [], None
        while True:
            q = "/v1/tasks?limit=1000" + (f"&before={before}" if before else "")
            page = self.retrying("GET", q)
            tasks += page
            if len(page) < 1000:
                return tasks
            before = min(t["id"] for t in page)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------
# The processes


class Proc:
    """A `runops` process the soak starts, kills and restarts."""

    def __init__(self, name, argv, env, logfile, prefix=()):
        self.name, self.argv, self.env, self.logfile = name, argv, env, logfile
        self.prefix = list(prefix)
        self.p = None
        self.stopped = False

    def start(self):
        out = open(self.logfile, "ab")
        self.p = subprocess.Popen(
            self.prefix + self.argv, env=self.env, stdout=out, stderr=out,
            stdin=subprocess.DEVNULL,
        )
        out.close()

    def signal(self, sig):
        if self.p and self.p.poll() is None:
            os.kill(self.p.pid, sig)

    def kill(self):
        if self.stopped:
            self.cont()
        self.signal(signal.SIGKILL)
        if self.p:
            self.p.wait()

    def stop(self):
        self.signal(signal.SIGSTOP)
        self.stopped = True

    def cont(self):
        self.signal(signal.SIGCONT)
        self.stopped = False

    def alive(self):
        return self.p is not None and self.p.poll() is None


class Netns:
    """A network namespace joined to this one by a veth pair; only addresses of this
    machine (a private /30), removed by `close`."""

    def __init__(self, tag, subnet_byte):
        self.ns = f"runops-soak-{tag}"
        self.host_if = f"rsk{tag}h"[:15]
        self.ns_if = f"rsk{tag}n"[:15]
        self.host_ip = f"10.213.{subnet_byte}.1"
        self.ns_ip = f"10.213.{subnet_byte}.2"
        self.up_ok = False

    def sh(self, *cmd):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def create(self):
        self.sh("ip", "netns", "add", self.ns)
        self.sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self.sh("ip", "link", "set", self.ns_if, "netns", self.ns)
        self.sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        self.sh("ip", "link", "set", self.host_if, "up")
        self.sh("ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        self.sh("ip", "netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "up")
        self.sh("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        self.up_ok = True

    def cut(self):
        # The namespace's end goes down: its packets are dropped, while the server's
        # address (on the host's end) stays reachable for everyone else.
        self.sh("ip", "netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "down")

    def restore(self):
        self.sh("ip", "netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "up")

    def close(self):
        subprocess.run(["ip", "link", "del", self.host_if], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", self.ns], stderr=subprocess.DEVNULL)


def netns_available():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"runops-soak-probe-{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", probe], stderr=subprocess.DEVNULL).returncode == 0
    subprocess.run(["ip", "netns", "del", probe], stderr=subprocess.DEVNULL)
    return ok


def mount_tmpfs(path, size_mb):
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        return False
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", path],
        stderr=subprocess.DEVNULL,
    )
    return r.returncode == 0


# ---------------------------------------------------------------------------------------
# A private PostgreSQL cluster


class PgMissing(Exception):
    pass


def postgres_bin_dir():
    """The directory holding PostgreSQL's server programs (`initdb`, `pg_ctl`,
    `postgres`): the newest /usr/lib/postgresql/VERSION/bin (Debian, Ubuntu), else the
    one of `initdb` on PATH; `PgMissing` naming what to install when there is none."""
    found = []
    try:
        for v in os.listdir("/usr/lib/postgresql"):
            bin_ = os.path.join("/usr/lib/postgresql", v, "bin")
            if v.isdigit() and all(os.access(os.path.join(bin_, t), os.X_OK) for t in ("initdb", "pg_ctl", "postgres")):
                found.append((int(v), bin_))
    except OSError:
        pass
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl", path=os.path.dirname(initdb)):
        return os.path.dirname(initdb)
    raise PgMissing(
        "--store postgres needs the PostgreSQL server programs (initdb, pg_ctl, postgres), "
        "found neither in /usr/lib/postgresql/*/bin nor on PATH. Install them "
        "(Debian/Ubuntu: `apt-get install postgresql`; scripts/test.sh does it): the soak "
        "runs a private cluster of its own, it does not use a running PostgreSQL.")


class PrivatePostgres:
    """A PostgreSQL cluster of the soak alone: `initdb` in its work dir, a free port of
    127.0.0.1, trust authentication, fsync left on (a restart must find every committed
    transaction through real crash recovery). Run as the `postgres` user when root
    (initdb and postgres refuse root). Stopped and removed with the work dir."""

    def __init__(self, root, bindir):
        self.root = root
        self.bindir = bindir
        self.data = os.path.join(root, "data")
        self.logfile = os.path.join(root, "postgres.log")
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        self.restarts = 0

    def argv(self, tool, *args):
        exe = os.path.join(self.bindir, tool)
        if self.as_postgres:
            return ["runuser", "-u", "postgres", "--", exe, *args]
        return [exe, *args]

    def run(self, tool, *args, check=True):
        r = subprocess.run(self.argv(tool, *args), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if check and r.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({r.returncode}): {r.stdout.decode(errors='replace')}"
                               f"\n{self.log_tail()}")
        return r

    def log_tail(self, n=30):
        try:
            with open(self.logfile, "rb") as fh:
                return "postgres.log:\n" + b"".join(fh.readlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def init(self):
        os.makedirs(self.root)
        if self.as_postgres:
            import pwd
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PgMissing("running as root, the private cluster runs as the `postgres` user "
                                "(initdb refuses root), and there is none: install PostgreSQL "
                                "(`apt-get install postgresql`) or run as a plain user") from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self):
        """Starts the postmaster as a child of this process (not through `pg_ctl`, whose
        postmaster is orphaned: after a SIGKILL its zombie would keep the PID in
        postmaster.pid alive until some init reaps it) and waits until it accepts
        connections (after crash recovery when it was not shut down cleanly)."""
        argv = [os.path.join(self.bindir, "postgres"), "-D", self.data, "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-k", self.root, "-c", "max_connections=100"]
        out = open(self.logfile, "ab")
        kwargs = {}
        if self.as_postgres:
            import pwd
            pw = pwd.getpwnam("postgres")
            kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                  cwd=self.root, start_new_session=True, **kwargs)
        out.close()
        deadline = time.time() + 300
        while True:
            if self.p.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.p.returncode}) while starting\n{self.log_tail()}")
            r = subprocess.run([os.path.join(self.bindir, "pg_isready"), "-q", "-h", "127.0.0.1",
                                "-p", str(self.port)], stdin=subprocess.DEVNULL)
            if r.returncode == 0:
                return
            if time.time() > deadline:
                raise RuntimeError(f"postgres did not accept connections within 300 s\n{self.log_tail()}")
            time.sleep(0.05)

    def crash(self, how):
        """Stops the cluster abruptly: `immediate` (SIGQUIT to the postmaster, what
        `pg_ctl stop -m immediate` sends: it SIGQUITs every backend and exits without a
        checkpoint) or `kill` (SIGKILL of the postmaster and of every process it
        started, at once). Either way the next start replays the WAL."""
        pid = self.p.pid
        backends = []
        if how == "immediate":
            # The postmaster waits for its backends before it exits.
            os.kill(pid, signal.SIGQUIT)
        else:
            backends = children_of(pid)
            for p in [pid] + backends:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.p.wait()
        # The backends (orphaned by a SIGKILL) are gone before the next start.
        deadline = time.time() + 30
        while any(pid_alive(p) for p in backends) and time.time() < deadline:
            time.sleep(0.02)

    def stop(self):
        if getattr(self, "p", None) and self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGQUIT)
            try:
                self.p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def psql(self, sql, db="postgres"):
        r = subprocess.run(
            [os.path.join(self.bindir, "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError(f"psql: {r.stderr.decode(errors='replace')}")
        return r.stdout.decode()


def children_of(pid):
    """Every process whose parent is `pid` (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(d))
    return out


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# The soak


AGENTS = [
    # name, concurrency, where its data dir lives / how its network is reached
    ("a", 2, "plain"),
    ("b", 4, "netns"),
    ("c", 1, "plain"),
    ("d", 6, "tmpfs"),
]

# --store postgres: the replicas each agent's API_URL names, in order. Agents a and c
# talk to one replica each (as to a load balancer's one address: while it is down they
# wait for it); b and d list all three (the documented failover: when one does not
# answer the agent moves to the next). Every replica has an agent of its own first.
REPLICAS = 3
AGENT_REPLICAS = {"a": [0], "b": [1, 2, 0], "c": [2], "d": [2, 0, 1]}
PG_DATABASE = "runops"


def mean_output_bytes(max_output_mb):
    """The mean size of a task's output under `Soak.output_size`."""
    big = max_output_mb * 1024 * 1024
    return 0.65 * 10_000 + 0.21 * 210_000 + 0.04 * (big // 4 + big) / 2


class Server:
    """One `runops server` (the SQLite one, or a replica on PostgreSQL)."""

    def __init__(self, name, listen_ip, data_dir, proc_factory):
        self.name = name
        self.port = free_port()
        self.url = f"http://{listen_ip}:{self.port}"
        self.listen = f"{listen_ip}:{self.port}"
        self.data_dir = data_dir
        self.proc = proc_factory(self)


class Soak:
    def __init__(self, args):
        self.args = args
        self.store = args.store
        self.bin = os.path.abspath(args.bin)
        self.rng = random.Random(args.seed)
        # The faults' own sequence (the fault thread runs beside the task creator).
        self.fault_rng = random.Random(args.seed ^ 0x5EED)
        self.dir = tempfile.mkdtemp(prefix="runops-soak-")
        self.markers = os.path.join(self.dir, "markers")
        os.makedirs(self.markers)
        os.chmod(self.dir, 0o755)
        os.chmod(self.markers, 0o777)
        tag = f"{os.getpid() % 100000}"
        self.netns = None
        self.tmpfs = None
        self.pg = None
        self.servers = []
        self.faults = []  # (kind, agent or None, start, end, detail)
        self.fault_lock = threading.Lock()
        self.problems = []
        self.secrets = {}
        self.procs = {}
        self.ns_tag = tag
        self.created = 0
        self.create_errors = 0

    # -- set-up --------------------------------------------------------------------------

    def env(self, extra):
        e = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.dir,
            "LANG": "C.UTF-8",
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        }
        e.update(extra)
        return e

    def start_control_plane(self):
        listen_ip = "127.0.0.1"
        if netns_available():
            self.netns = Netns(self.ns_tag[-5:], 16 + os.getpid() % 200)
            try:
                self.netns.create()
                listen_ip = self.netns.host_ip
            except subprocess.CalledProcessError as e:
                log(f"network namespaces unusable ({e.stderr.decode().strip()}): no net-cut faults")
                self.netns.close()
                self.netns = None
        else:
            log("no network namespaces here (not root, or no `ip netns`): no net-cut faults")
        server_env = {
            "RUNOPS_ADMIN_TOKEN": ADMIN_TOKEN,
            "RUNOPS_AGENT_LEASE_SECS": str(LEASE_SECS),
            "RUNOPS_OFFER_TIMEOUT_SECS": str(OFFER_TIMEOUT_SECS),
        }
        if self.store == "postgres":
            self.pg = PrivatePostgres(os.path.join(self.dir, "pg"), postgres_bin_dir())
            self.pg.init()
            self.pg.start()
            self.pg.psql(f"CREATE DATABASE {PG_DATABASE}")
            log(f"private PostgreSQL ({self.pg.bindir}) on 127.0.0.1:{self.pg.port}, data {self.pg.data}")
            server_env["RUNOPS_DATABASE_URL"] = self.pg.url(PG_DATABASE)
            server_env["RUNOPS_SECRET_KEY"] = base64.b64encode(self.rng.randbytes(32)).decode()
            names = [f"replica-{i}" for i in range(REPLICAS)]
        else:
            names = ["server"]

        def proc(server):
            return Proc(
                server.name,
                [self.bin, "server", "--listen", server.listen, "--data-dir", server.data_dir],
                self.env(server_env),
                os.path.join(self.dir, f"{server.name}.log"),
            )

        for name in names:
            server = Server(name, listen_ip, os.path.join(self.dir, f"{name}-data"), proc)
            self.servers.append(server)
            self.procs[name] = server.proc
            # One at a time: the first creates the schema, the organisation and the
            # admin token; the others find them.
            server.proc.start()
            self.wait_healthy(server)
        self.api = Api([s.url for s in self.servers])

    def wait_healthy(self, server, limit=60, path="/healthz"):
        deadline = time.time() + limit
        while time.time() < deadline:
            if not server.proc.alive():
                raise SystemExit(f"{server.name} exited ({server.proc.p.returncode}); "
                                 f"see {server.proc.logfile}:\n{tail(server.proc.logfile)}")
            try:
                with urllib.request.urlopen(server.url + path, timeout=2) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        if path != "/healthz":
            return False
        raise SystemExit(f"{server.name} did not answer /healthz within {limit} s; see {server.proc.logfile}")

    def agent_data_dir(self, name):
        return os.path.join(self.dir, f"agent-{name}")

    def agent_api_url(self, name):
        if self.store == "postgres":
            return ",".join(self.servers[i].url for i in AGENT_REPLICAS[name])
        return self.servers[0].url

    def start_agents(self):
        for name, concurrency, kind in AGENTS:
            tags = f"soak-{name}"
            secrets = {k: self.secret_value() for k in SECRET_KEYS}
            self.secrets[name] = secrets
            token = self.api.retrying("POST", "/v1/agent-tokens", {"tags": tags, "name": tags})["token"]
            self.api.retrying("POST", "/v1/targets", {
                "name": f"soak-{name}",
                "type": "bash",
                "tags": tags,
                "secret_provider": "env-var",
                "secret_path": "SOAK_SECRETS",
                "timeout": 120,
            })
            data = self.agent_data_dir(name)
            prefix = ()
            if kind == "tmpfs":
                if mount_tmpfs(data, self.args.spool_mb):
                    self.tmpfs = (name, data)
                else:
                    log("cannot mount a tmpfs (not root?): no spool-full faults")
            if kind == "netns" and self.netns:
                prefix = ("ip", "netns", "exec", self.netns.ns)
            self.procs[name] = Proc(
                name,
                [self.bin, "agent"],
                self.env({
                    "TOKEN": token,
                    "API_URL": self.agent_api_url(name),
                    "TAGS": tags,
                    "CONCURRENCY": str(concurrency),
                    "RUNOPS_AGENT_DATA_DIR": data,
                    "RUNOPS_KILL_GRACE_SECS": "2",
                    "RUN_AS_USER": os.environ.get("USER") or "root",
                    "SOAK_SECRETS": json.dumps(secrets),
                }),
                os.path.join(self.dir, f"agent-{name}.log"),
                prefix,
            )
            self.procs[name].start()

    def secret_value(self):
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789"
        core = "".join(self.rng.choice(alphabet) for _ in range(18))
        # `/`, `+` and `@` make the URL-encoded spelling differ from the plain one.
        return f"Sk{core[:6]}/{core[6:12]}+{core[12:]}@9"

    # -- the load ------------------------------------------------------------------------

    def script(self, seed, size, sleep):
        py = sys.executable
        me = os.path.abspath(__file__)
        return (
            f'echo "$RUNOPS_TASK_ID $$-$RANDOM" >> {self.markers}/"$RUNOPS_TASK_ID"\n'
            f"sleep {sleep:.2f}\n"
            f"exec {py} {me} gen {seed} {size}\n"
        )

    def output_size(self):
        r = self.rng.random()
        big = self.args.max_output_mb * 1024 * 1024
        if r < 0.10:
            return 0
        if r < 0.75:
            return self.rng.randrange(1, 20_000)
        if r < 0.96:
            return self.rng.randrange(20_000, 400_000)
        return self.rng.randrange(big // 4, big + 1)

    def create_tasks(self, n, duration):
        """Creates `n` tasks spread over `duration` seconds, each through a random
        server (the next one when it does not answer)."""
        start = time.time()
        for i in range(n):
            due = start + duration * i / n
            if due > time.time():
                time.sleep(due - time.time())
            # Each agent gets work in proportion to its concurrency.
            name = self.rng.choices(AGENTS, weights=[c for _, c, _ in AGENTS])[0][0]
            seed = self.rng.randrange(2**32)
            body = {
                "target": f"soak-{name}",
                "script": self.script(seed, self.output_size(), self.rng.uniform(0, 2)),
            }
            try:
                self.api.retrying("POST", "/v1/tasks", body)
                self.created += 1
            except Exception as e:  # noqa: BLE001 - counted and reported
                self.create_errors += 1
                log(f"task creation failed: {e}")

    # -- faults --------------------------------------------------------------------------

    def fault_kinds(self):
        if self.store == "postgres":
            kinds = ["agent-kill", "replica-kill", "agent-stop", "pg-restart"]
        else:
            kinds = ["agent-kill", "server-kill", "agent-stop"]
        if self.tmpfs:
            kinds.append("spool-full")
        if self.netns:
            kinds.append("net-cut")
        return kinds

    def record(self, kind, agent, start, detail=""):
        with self.fault_lock:
            self.faults.append((kind, agent, start, time.time(), detail))

    def inject(self, kind):
        rng = self.fault_rng
        t0 = time.time()
        detail = ""
        if kind == "agent-kill":
            name = rng.choice(AGENTS)[0]
            self.procs[name].kill()
            time.sleep(rng.uniform(0.2, 2))
            self.procs[name].start()
            self.record(kind, name, t0)
            detail = f"agent {name}"
        elif kind in ("server-kill", "replica-kill"):
            server = rng.choice(self.servers)
            server.proc.kill()
            time.sleep(rng.uniform(0.2, 2))
            server.proc.start()
            self.wait_healthy(server)
            self.record(kind, None, t0, server.name)
            detail = server.name
        elif kind == "pg-restart":
            # Both ways in turn: the postmaster's immediate shutdown, and every process
            # of the cluster SIGKILLed at once.
            how = ("immediate", "kill")[self.pg.restarts % 2]
            self.pg.crash(how)
            down = rng.uniform(0.2, 2)
            time.sleep(down)
            self.pg.start()
            self.pg.restarts += 1
            self.record(kind, None, t0, how)
            detail = f"{how}, down {down:.1f} s + start"
            # Every replica recovers by itself (docs/operations.md): /readyz is 200
            # again without restarting any.
            for server in self.servers:
                if not self.wait_healthy(server, limit=60, path="/readyz"):
                    self.problems.append(f"{server.name}: /readyz not 200 within 60 s of PostgreSQL's restart at {t0:.0f}")
        elif kind == "agent-stop":
            name = rng.choice(AGENTS)[0]
            self.procs[name].stop()
            time.sleep(LEASE_SECS + rng.uniform(2, 4))
            self.procs[name].cont()
            self.record(kind, name, t0)
            detail = f"agent {name}"
        elif kind == "spool-full":
            name, path = self.tmpfs
            filler = os.path.join(path, "soak-filler")
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(2, 6))
            os.unlink(filler)
            self.record(kind, name, t0)
            detail = f"agent {name}"
        elif kind == "net-cut":
            name = next(a for a, _, k in AGENTS if k == "netns")
            self.netns.cut()
            # Half the cuts outlast the lease (the agent's tasks are lost), half do not.
            time.sleep(rng.choice([rng.uniform(1, LEASE_SECS - 2),
                                   LEASE_SECS + rng.uniform(2, 4)]))
            self.netns.restore()
            self.record(kind, name, t0)
            detail = f"agent {name}"
        log(f"fault {kind} ({detail}) done in {time.time() - t0:.1f} s")

    def inject_faults(self, n, duration, stop):
        kinds = self.fault_kinds()
        order = [kinds[i % len(kinds)] for i in range(n)]
        self.fault_rng.shuffle(order)
        start = time.time()
        for i, kind in enumerate(order):
            due = start + duration * (i + 0.5) / n
            while time.time() < due and not stop.is_set():
                time.sleep(0.1)
            try:
                self.inject(kind)
            except BaseException as e:  # noqa: BLE001 - reported, and the run fails
                self.problems.append(f"fault {kind} could not be injected: {e}")
                log(f"fault {kind} failed: {e}")
                return

    # -- the end -------------------------------------------------------------------------

    def wait_all_final(self, limit):
        """Every task, once each has ended, or once none has ended for `limit` seconds
        (a loaded machine drains a backlog slowly; a stuck task stops the progress)."""
        deadline = time.time() + limit
        left = None
        while True:
            tasks = self.api.all_tasks()
            open_ = [t for t in tasks if t["status"] not in ("success", "failure")]
            if not open_:
                log(f"all {len(tasks)} tasks ended")
                return tasks
            if left is None or len(open_) < left:
                left = len(open_)
                deadline = time.time() + limit
            if time.time() > deadline:
                log(f"{len(open_)} of {len(tasks)} tasks still not ended after {limit} s without progress: "
                    f"{[(t['id'], t['status']) for t in open_[:20]]}")
                return tasks
            time.sleep(1)

    def leak_forms(self):
        forms = {}
        for agent, secrets in self.secrets.items():
            for key, value in secrets.items():
                for f in spellings(value):
                    forms[f] = f"{agent}:{key}"
        return forms

    def scan_files(self, root, forms, where):
        found = []
        paths = [root] if os.path.isfile(root) else (
            os.path.join(d, f) for d, _, files in os.walk(root) for f in files)
        for path in paths:
            for what in scan_file(path, forms):
                found.append(f"{where}: {what} in {path}")
        return found

    def sql_leaks(self, forms):
        """Planted spellings in any text, bytea or JSON column of any table, by SQL:
        PostgreSQL may store a value compressed (TOAST), where a scan of its files
        would not see it."""
        cols = self.pg.psql(
            "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND data_type IN "
            "('bytea', 'text', 'character varying', 'character', 'json', 'jsonb') ORDER BY 1, 2, 3",
            db=PG_DATABASE)
        found, columns = [], 0
        items = list(forms.items())
        for line in cols.splitlines():
            schema, table, col, typ = line.split("|")
            columns += 1
            c = '"' + col.replace('"', '""') + '"'
            conds = []
            for form, _ in items:
                if typ == "bytea":
                    cond = f"position('\\x{form.hex()}'::bytea in {c}) > 0"
                else:
                    cond = f"strpos({c}::text, '{form.decode()}') > 0"
                conds.append(f"count(*) FILTER (WHERE {cond})")
            ident = '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'
            counts = self.pg.psql(f"SELECT {', '.join(conds)} FROM {ident}", db=PG_DATABASE).strip()
            for (_, what), n in zip(items, counts.split("|")):
                if int(n):
                    found.append(f"database column {table}.{col}: {what} in {n} rows")
        log(f"SQL scan: {columns} text/bytea/json columns of database {PG_DATABASE} searched")
        return found

    def check(self, tasks):
        forms = self.leak_forms()
        by_target = {f"soak-{a}": a for a, _, _ in AGENTS}
        report = {
            "tasks": len(tasks), "succeeded": 0, "failed": {}, "unfinished": 0,
            "lost": [], "duplicated": [], "mismatched": [], "leaks": [],
            "unexplained_failures": [],
        }
        for t in tasks:
            tid = t["id"]
            agent = by_target.get(t["target"])
            try:
                with open(os.path.join(self.markers, str(tid))) as fh:
                    runs = len([line for line in fh if line.strip()])
            except FileNotFoundError:
                runs = 0
            status = t["status"]
            if status == "success":
                report["succeeded"] += 1
            elif status == "failure":
                reason = t.get("failure_reason") or "?"
                report["failed"][reason] = report["failed"].get(reason, 0) + 1
            else:
                report["unfinished"] += 1
            if runs == 0 and status != "failure":
                report["lost"].append(tid)
            if runs > 1:
                report["duplicated"].append((tid, runs))
            log_bytes = self.api.retrying("GET", f"/v1/tasks/{tid}/logs", raw=True)
            for form, what in forms.items():
                if form in log_bytes or form.decode() in (t.get("failure_message") or ""):
                    report["leaks"].append(f"task {tid} log: {what}")
            if status == "success":
                seed, size = [int(x) for x in t["script"].split(" gen ")[1].split()[:2]]
                _, expected = task_output(seed, size, self.secrets[agent])
                if hashlib.sha256(log_bytes).digest() != hashlib.sha256(expected).digest():
                    report["mismatched"].append((tid, len(log_bytes), len(expected)))
            if status == "failure" and not self.justified(agent, t):
                report["unexplained_failures"].append((tid, t.get("failure_reason"), t.get("failure_message")))
        for server in self.servers:
            report["leaks"] += self.scan_files(server.data_dir, forms, f"{server.name} data dir")
        if self.pg:
            # The cluster's files (tables, TOAST, WAL, its log), then its content by SQL.
            report["leaks"] += self.scan_files(self.pg.root, forms, "PostgreSQL cluster")
            report["leaks"] += self.sql_leaks(forms)
        for name, _, _ in AGENTS:
            report["leaks"] += self.scan_files(self.agent_data_dir(name), forms, f"agent {name} data dir")
        for p in self.procs.values():
            report["leaks"] += self.scan_files(p.logfile, forms, "process log")
        return report

    def justified(self, agent, task):
        """A failed task needs a fault of its own agent, close to when it failed: a
        kill (its running tasks fail `agent-error` "restarted", reported by the
        restarted agent), a stop or a network cut (`agent-lost` once the lease ran out),
        a full spool disk (`agent-error`). The failure must be recorded between the
        fault's start and FAULT_REACH seconds after its end, and the task must have
        existed before the fault ended; a task that merely lived through an old fault
        of its agent is not excused. The tasks' scripts never fail by themselves, and a
        restart of the server, of a replica or of PostgreSQL must fail nothing: the
        agent keeps its tasks and its spool and delivers their results once a server
        answers again, and the servers give every session a fresh lease after a restart
        or a database outage."""
        created = iso_time(task["created_at"])
        finished = iso_time(task["finished_at"]) if task.get("finished_at") else time.time()
        for kind, who, start, end, _ in self.faults:
            if who == agent and start - 1 <= finished <= end + FAULT_REACH and created <= end + 1:
                return True
        return False

    # -- the whole run -------------------------------------------------------------------

    def check_disk(self):
        """The disk the run needs in the work dir's file system, or exit 2 if it is not
        free: every task's log is stored once by the server (SQLite, or PostgreSQL's
        heap/TOAST), plus the write-ahead log and the agents' spools in flight."""
        mean = mean_output_bytes(self.args.max_output_mb)
        need = int(self.args.tasks * mean * 1.5) + 2 * 1024**3
        free = shutil.disk_usage(self.dir).free
        log(f"disk: ~{need / 1024**3:.1f} GiB needed in {os.path.dirname(self.dir)} "
            f"({self.args.tasks} tasks x {mean / 1024:.0f} KiB mean output x 1.5 + 2 GiB), "
            f"{free / 1024**3:.1f} GiB free")
        if free < need:
            raise SystemExit(f"not enough free disk in {os.path.dirname(self.dir)} "
                             f"({free / 1024**3:.1f} GiB free, ~{need / 1024**3:.1f} GiB needed): "
                             "free some, set TMPDIR to a larger file system, or run fewer tasks")

    def run(self):
        t0 = time.time()
        log(f"work dir {self.dir}; store {self.store}; {self.args.tasks} tasks, "
            f"{self.args.faults} faults over ~{self.args.duration} s; seed {self.args.seed}")
        self.check_disk()
        self.start_control_plane()
        self.start_agents()
        log(f"servers {', '.join(f'{s.name} {s.url}' for s in self.servers)}")
        log(f"agents {', '.join(f'{n} (concurrency {c}, {k}, API_URL {self.agent_api_url(n)})' for n, c, k in AGENTS)}")
        log(f"fault kinds: {', '.join(self.fault_kinds())}")
        stop = threading.Event()
        faults = threading.Thread(
            target=self.inject_faults, args=(self.args.faults, self.args.duration, stop), daemon=True)
        faults.start()
        self.create_tasks(self.args.tasks, self.args.duration)
        log(f"created {self.created} tasks ({self.create_errors} creation errors); waiting for the faults to finish")
        faults.join()
        for p in self.procs.values():
            if p.stopped:
                p.cont()
            if not p.alive():
                log(f"{p.name} was not running at the end of the faults; starting it")
                p.start()
        log("faults done; waiting for every task to end")
        tasks = self.wait_all_final(self.args.settle)
        report = self.check(tasks)
        report["store"] = self.store
        report["servers"] = len(self.servers)
        report["faults"] = {}
        for kind, _, _, _, _ in self.faults:
            report["faults"][kind] = report["faults"].get(kind, 0) + 1
        report["problems"] = list(self.problems)
        report["seconds"] = round(time.time() - t0)
        report["create_errors"] = self.create_errors
        return report

    def save_logs(self):
        """The processes' logs (not the data), for a run that failed a check."""
        keep = tempfile.mkdtemp(prefix=f"runops-soak-logs-{self.args.seed}-")
        for p in self.procs.values():
            if os.path.exists(p.logfile):
                shutil.copy(p.logfile, keep)
        if self.pg and os.path.exists(self.pg.logfile):
            shutil.copy(self.pg.logfile, keep)
        with open(os.path.join(keep, "faults.json"), "w") as fh:
            json.dump(self.faults, fh, indent=1)
        return keep

    def close(self):
        for p in self.procs.values():
            try:
                p.kill()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        if self.pg:
            try:
                self.pg.stop()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        if self.tmpfs:
            subprocess.run(["umount", self.tmpfs[1]], stderr=subprocess.DEVNULL)
        if self.netns:
            self.netns.close()
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            log(f"work dir kept: {self.dir}")


def scan_file(path, forms, block=64 * 1024 * 1024):
    """The names of the `forms` ({bytes: name}) found in the file at `path`, read in
    blocks (the cluster's files may be large), overlapping by the longest form."""
    found = set()
    overlap = max(len(f) for f in forms) - 1
    try:
        with open(path, "rb") as fh:
            prev = b""
            while True:
                chunk = fh.read(block)
                if not chunk:
                    break
                data = prev + chunk
                for form, what in forms.items():
                    if form in data:
                        found.add(what)
                prev = data[-overlap:]
    except OSError:
        return []
    return sorted(found)


def tail(path, n=30):
    try:
        with open(path, "rb") as fh:
            return b"".join(fh.readlines()[-n:]).decode(errors="replace")
    except OSError:
        return ""


def iso_time(s):
    from datetime import datetime
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "gen":
        gen_main(sys.argv[2], sys.argv[3])
        return 0
    ap = argparse.ArgumentParser(description="Runops chaos soak (see RELIABILITY.md)")
    ap.add_argument("bin", help="the runops binary")
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite",
                    help="sqlite: one server (default); postgres: three replicas on a private "
                         "PostgreSQL cluster the script makes (needs initdb), with the faults "
                         "replica-kill and pg-restart")
    ap.add_argument("--short", action="store_true",
                    help="sqlite: 500 tasks, 10 faults; postgres: 400 tasks, 12 faults; "
                         "a few minutes (what scripts/test.sh runs)")
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--faults", type=int, default=40)
    ap.add_argument("--duration", type=int, default=None, help="seconds over which tasks and faults are spread")
    ap.add_argument("--settle", type=int, default=180, help="seconds without any task ending after which the end stops waiting (unfinished tasks fail the run)")
    ap.add_argument("--max-output-mb", type=int, default=5)
    ap.add_argument("--spool-mb", type=int, default=64, help="size of agent d's tmpfs data dir")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true",
                    help="keep the work dir (logs, databases); without it the work dir is removed, "
                         "and a failed run keeps only the processes' logs")
    ap.add_argument("--json", help="also write the report to this file")
    args = ap.parse_args()
    if args.short:
        if args.store == "postgres":
            args.tasks, args.faults, args.max_output_mb = 400, 12, 3
            args.duration = args.duration or 150
        else:
            args.tasks, args.faults, args.max_output_mb = 500, 10, 3
            args.duration = args.duration or 120
    args.duration = args.duration or max(60, args.tasks // 4)
    if args.seed is None:
        args.seed = random.randrange(2**32)
    if args.store == "postgres":
        try:
            postgres_bin_dir()
        except PgMissing as e:
            print(f"soak: error: {e}", file=sys.stderr)
            return 2
    soak = Soak(args)

    def on_signal(signum, _frame):
        soak.close()
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    kept = None
    try:
        report = soak.run()
        report["seed"] = args.seed
        bad = (report["lost"] or report["duplicated"] or report["leaks"] or report["mismatched"]
               or report["unexplained_failures"] or report["unfinished"] or report["problems"])
        if bad and not args.keep:
            kept = soak.save_logs()
    except PgMissing as e:
        print(f"soak: error: {e}", file=sys.stderr)
        return 2
    finally:
        soak.close()
    print_report(report)
    if kept:
        print(f"  the processes' logs of this failed run: {kept}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 1 if bad else 0


def print_report(r):
    print()
    print(f"soak: {r['tasks']} tasks in {r['seconds']} s (seed {r['seed']}; store {r['store']}, "
          f"{r['servers']} server{'s' if r['servers'] > 1 else ''})")
    print(f"  faults:      {', '.join(f'{k} {v}' for k, v in sorted(r['faults'].items())) or 'none'}")
    print(f"  succeeded:   {r['succeeded']}")
    print(f"  failed:      {', '.join(f'{k} {v}' for k, v in sorted(r['failed'].items())) or 'none'}")
    print(f"  unfinished:  {r['unfinished']}")
    print(f"  lost:        {len(r['lost'])} {r['lost'][:20]}")
    print(f"  duplicated:  {len(r['duplicated'])} {r['duplicated'][:20]}")
    print(f"  mismatched:  {len(r['mismatched'])} {r['mismatched'][:20]}")
    print(f"  leaks:       {len(r['leaks'])} {r['leaks'][:20]}")
    print(f"  failures without a fault of their agent: {len(r['unexplained_failures'])} {r['unexplained_failures'][:20]}")
    print(f"  task creations that failed: {r['create_errors']}")
    if r["problems"]:
        print(f"  problems:    {len(r['problems'])} {r['problems'][:20]}")


if __name__ == "__main__":
    sys.exit(main())
