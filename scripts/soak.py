#!/usr/bin/env python3
"""Chaos soak of Runops: one server (SQLite) and four real agents under injected faults.

Run through scripts/soak.sh (which builds the binary); see RELIABILITY.md for what it
proves and the figures. Stdlib only.

The driver creates bash tasks on four targets (one per agent: different tags and
concurrency). Each task appends `TASK_ID RUN_ID` to its own marker file, sleeps 0-2 s
and prints a pseudo-random text (its size and seed are in the script) with the
agent's planted secrets in three spellings (plain, base64, URL-encoded). Meanwhile
faults are injected at random:

  agent-kill    SIGKILL an agent, start it again (same data dir: it resumes its spool)
  server-kill   SIGKILL the server, start it again (same data dir and port)
  agent-stop    SIGSTOP an agent for longer than its lease, then SIGCONT
  spool-full    fill the tmpfs holding an agent's data dir, free it again
  net-cut       cut the veth link between an agent's network namespace and the
                server, restore it (sometimes longer than the lease)

At the end (faults stopped, every agent running) it waits for every task to end and
counts: tasks created / succeeded / failed by reason; runs per task from the markers
(0 runs for a task that did not fail = lost, more than 1 = duplicated); the stored log
of every successful task against the expected redacted output (SHA-256); planted
secrets anywhere (every task's log and failure message via the API, the server's data
dir with its database, each agent's data dir with its spool, the processes' own logs)
= leaks; and every `agent-lost` failure against the faults of its agent. Any lost,
duplicated, leaked, mismatched or unjustified task makes the exit status 1.

Usage: soak.py BIN [--short] [--tasks N] [--faults N] [--seed N] [--keep]
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
    def __init__(self, base):
        self.base = base

    def call(self, method, path, body=None, timeout=30, raw=False):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + ADMIN_TOKEN)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = resp.read()
        return payload if raw else json.loads(payload or b"null")

    def retrying(self, method, path, body=None, raw=False, limit=120):
        """Calls until the server answers (it may be down for a restart)."""
        deadline = time.time() + limit
        while True:
            try:
                return self.call(method, path, body, raw=raw)
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
# The soak


AGENTS = [
    # name, concurrency, where its data dir lives / how its network is reached
    ("a", 2, "plain"),
    ("b", 4, "netns"),
    ("c", 1, "plain"),
    ("d", 6, "tmpfs"),
]


class Soak:
    def __init__(self, args):
        self.args = args
        self.bin = os.path.abspath(args.bin)
        self.rng = random.Random(args.seed)
        self.dir = tempfile.mkdtemp(prefix="runops-soak-")
        self.markers = os.path.join(self.dir, "markers")
        os.makedirs(self.markers)
        os.chmod(self.dir, 0o755)
        os.chmod(self.markers, 0o777)
        tag = f"{os.getpid() % 100000}"
        self.netns = None
        self.tmpfs = None
        self.faults = []  # (kind, agent or None, start, end)
        self.fault_lock = threading.Lock()
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

    def start_server(self):
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
        self.port = free_port()
        self.url = f"http://{listen_ip}:{self.port}"
        self.server_data = os.path.join(self.dir, "server-data")
        self.procs["server"] = Proc(
            "server",
            [self.bin, "server", "--listen", f"{listen_ip}:{self.port}", "--data-dir", self.server_data],
            self.env({
                "RUNOPS_ADMIN_TOKEN": ADMIN_TOKEN,
                "RUNOPS_AGENT_LEASE_SECS": str(LEASE_SECS),
                "RUNOPS_OFFER_TIMEOUT_SECS": str(OFFER_TIMEOUT_SECS),
            }),
            os.path.join(self.dir, "server.log"),
        )
        self.procs["server"].start()
        self.api = Api(self.url)
        self.wait_healthy()

    def wait_healthy(self, limit=60):
        deadline = time.time() + limit
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"the server did not answer /healthz within {limit} s; see {self.dir}/server.log")

    def agent_data_dir(self, name):
        return os.path.join(self.dir, f"agent-{name}")

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
                    "API_URL": self.url,
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
        """Creates `n` tasks spread over `duration` seconds."""
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
        kinds = ["agent-kill", "server-kill", "agent-stop"]
        if self.tmpfs:
            kinds.append("spool-full")
        if self.netns:
            kinds.append("net-cut")
        return kinds

    def record(self, kind, agent, start):
        with self.fault_lock:
            self.faults.append((kind, agent, start, time.time()))

    def inject(self, kind):
        t0 = time.time()
        if kind == "agent-kill":
            name = self.rng.choice(AGENTS)[0]
            self.procs[name].kill()
            time.sleep(self.rng.uniform(0.2, 2))
            self.procs[name].start()
            self.record(kind, name, t0)
        elif kind == "server-kill":
            self.procs["server"].kill()
            time.sleep(self.rng.uniform(0.2, 2))
            self.procs["server"].start()
            self.wait_healthy()
            self.record(kind, None, t0)
        elif kind == "agent-stop":
            name = self.rng.choice(AGENTS)[0]
            self.procs[name].stop()
            time.sleep(LEASE_SECS + self.rng.uniform(2, 4))
            self.procs[name].cont()
            self.record(kind, name, t0)
        elif kind == "spool-full":
            name, path = self.tmpfs
            filler = os.path.join(path, "soak-filler")
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(self.rng.uniform(2, 6))
            os.unlink(filler)
            self.record(kind, name, t0)
        elif kind == "net-cut":
            name = next(a for a, _, k in AGENTS if k == "netns")
            self.netns.cut()
            # Half the cuts outlast the lease (the agent's tasks are lost), half do not.
            time.sleep(self.rng.choice([self.rng.uniform(1, LEASE_SECS - 2),
                                        LEASE_SECS + self.rng.uniform(2, 4)]))
            self.netns.restore()
            self.record(kind, name, t0)
        log(f"fault {kind} done in {time.time() - t0:.1f} s")

    def inject_faults(self, n, duration, stop):
        kinds = self.fault_kinds()
        order = [kinds[i % len(kinds)] for i in range(n)]
        self.rng.shuffle(order)
        start = time.time()
        for i, kind in enumerate(order):
            due = start + duration * (i + 0.5) / n
            while time.time() < due and not stop.is_set():
                time.sleep(0.1)
            self.inject(kind)

    # -- the end -------------------------------------------------------------------------

    def wait_all_final(self, limit):
        deadline = time.time() + limit
        while True:
            tasks = self.api.all_tasks()
            open_ = [t for t in tasks if t["status"] not in ("success", "failure")]
            if not open_ or time.time() > deadline:
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
        for dirpath, _, files in os.walk(root):
            for f in files:
                path = os.path.join(dirpath, f)
                try:
                    with open(path, "rb") as fh:
                        data = fh.read()
                except OSError:
                    continue
                for form, what in forms.items():
                    if form in data:
                        found.append(f"{where}: {what} in {path}")
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
                report["unexplained_failures"].append((tid, t.get("failure_reason")))
        report["leaks"] += self.scan_files(self.server_data, forms, "server data dir")
        for name, _, _ in AGENTS:
            report["leaks"] += self.scan_files(self.agent_data_dir(name), forms, f"agent {name} data dir")
        for name in ["server"] + [a for a, _, _ in AGENTS]:
            report["leaks"] += self.scan_files_one(os.path.join(self.dir, f"{name if name == 'server' else 'agent-' + name}.log"), forms)
        return report

    def scan_files_one(self, path, forms):
        try:
            data = open(path, "rb").read()
        except OSError:
            return []
        return [f"process log: {what} in {path}" for form, what in forms.items() if form in data]

    def justified(self, agent, task):
        """A failed task needs a fault of its own agent while it existed: a kill (its
        tasks fail `agent-error` "restarted" or `agent-lost`), a stop or a network cut
        past the lease (`agent-lost`), a full spool disk (`agent-error`). The tasks'
        scripts never fail by themselves, and a server restart must fail nothing."""
        created = iso_time(task["created_at"])
        finished = iso_time(task["finished_at"]) if task.get("finished_at") else time.time()
        for kind, who, start, end in self.faults:
            if who == agent and start <= finished + 1 and end >= created - 1:
                return True
        return False

    # -- the whole run -------------------------------------------------------------------

    def run(self):
        t0 = time.time()
        log(f"work dir {self.dir}; {self.args.tasks} tasks, {self.args.faults} faults over ~{self.args.duration} s")
        self.start_server()
        self.start_agents()
        log(f"server {self.url}; agents {', '.join(f'{n} (concurrency {c}, {k})' for n, c, k in AGENTS)}")
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
                p.start()
        log("faults done; waiting for every task to end")
        tasks = self.wait_all_final(self.args.settle)
        report = self.check(tasks)
        report["faults"] = {}
        for kind, _, _, _ in self.faults:
            report["faults"][kind] = report["faults"].get(kind, 0) + 1
        report["seconds"] = round(time.time() - t0)
        report["create_errors"] = self.create_errors
        return report

    def close(self):
        for p in self.procs.values():
            try:
                p.kill()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        if self.tmpfs:
            subprocess.run(["umount", self.tmpfs[1]], stderr=subprocess.DEVNULL)
        if self.netns:
            self.netns.close()
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def iso_time(s):
    from datetime import datetime
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "gen":
        gen_main(sys.argv[2], sys.argv[3])
        return 0
    ap = argparse.ArgumentParser(description="Runops chaos soak (see RELIABILITY.md)")
    ap.add_argument("bin", help="the runops binary")
    ap.add_argument("--short", action="store_true", help="500 tasks, 10 faults, about 3 minutes")
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--faults", type=int, default=40)
    ap.add_argument("--duration", type=int, default=None, help="seconds over which tasks and faults are spread")
    ap.add_argument("--settle", type=int, default=180, help="seconds to wait for the last tasks to end")
    ap.add_argument("--max-output-mb", type=int, default=5)
    ap.add_argument("--spool-mb", type=int, default=64, help="size of agent d's tmpfs data dir")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, database)")
    ap.add_argument("--json", help="also write the report to this file")
    args = ap.parse_args()
    if args.short:
        args.tasks, args.faults, args.max_output_mb = 500, 10, 3
        args.duration = args.duration or 120
    args.duration = args.duration or max(60, args.tasks // 4)
    if args.seed is None:
        args.seed = random.randrange(2**32)
    soak = Soak(args)

    def on_signal(signum, _frame):
        soak.close()
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        report = soak.run()
    finally:
        soak.close()
    report["seed"] = args.seed
    print_report(report)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    bad = (report["lost"] or report["duplicated"] or report["leaks"] or report["mismatched"]
           or report["unexplained_failures"] or report["unfinished"])
    return 1 if bad else 0


def print_report(r):
    print()
    print(f"soak: {r['tasks']} tasks in {r['seconds']} s (seed {r['seed']})")
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


if __name__ == "__main__":
    sys.exit(main())
