#!/usr/bin/env python3
"""Where one task's dispatch time goes, from the server's and the agent's own logs.

Sends N tasks one by one (`echo $EPOCHREALTIME` on TARGET, GAP seconds apart) to a
running `runops server` with one `runops agent`, then reads both processes' logs
(default text format, INFO level) and prints the median of each phase:

  POST -> task stored -> claimed by the agent's poll -> start accepted
       -> the agent's "task started" line -> the script's first command

Usage (the server and agent started by hand, their stderr in the two files):
  python3 crates/runops-bench/probes/dispatch_timeline.py URL TOKEN SERVER_LOG AGENT_LOG \
      [--target local] [-n 40] [--gap 0.1]
"""
import argparse
import datetime
import http.client
import json
import re
import statistics
import time
import urllib.parse


def stamp(line):
    # 2026-12-04T19:26:39.255774Z ...
    return (
        datetime.datetime.strptime(line[:26], "%Y-%m-%dT%H:%M:%S.%f")
        .replace(tzinfo=datetime.timezone.utc)
        .timestamp()
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("token")
    ap.add_argument("server_log")
    ap.add_argument("agent_log")
    ap.add_argument("--target", default="local")
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("--gap", type=float, default=0.1)
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80)
    headers = {"Authorization": "Bearer " + a.token, "Content-Type": "application/json"}

    def call(method, path, body=None):
        conn.request(method, path, body, headers)
        r = conn.getresponse()
        return r.read()

    sent = []
    for _ in range(a.n):
        t0 = time.time()
        task = json.loads(call("POST", "/v1/tasks", json.dumps({"target": a.target, "script": "echo $EPOCHREALTIME"})))
        while json.loads(call("GET", f"/v1/tasks/{task['id']}"))["status"] not in ("success", "failure"):
            time.sleep(0.005)
        first = float(call("GET", f"/v1/tasks/{task['id']}/logs").decode().split()[-1])
        sent.append((task["id"], t0, first))
        time.sleep(a.gap)

    events = {}
    for line in open(a.server_log, errors="replace"):
        if "task created" in line or "task state changed" in line:
            task = int(re.search(r"task=(\d+)", line).group(1))
            status = re.search(r'status="?([a-z-]+)', line).group(1)
            events.setdefault(task, {})[status] = stamp(line)
    for line in open(a.agent_log, errors="replace"):
        if "task started" in line:
            task = int(re.search(r"task_id=(\d+)", line).group(1))
            events.setdefault(task, {})["agent"] = stamp(line)

    phases = {
        "POST -> stored": lambda e, t0, s: e["ready"] - t0,
        "stored -> claimed": lambda e, t0, s: e["dispatched"] - e["ready"],
        "claimed -> start accepted": lambda e, t0, s: e["running"] - e["dispatched"],
        "accepted -> agent's line": lambda e, t0, s: e["agent"] - e["running"],
        "agent's line -> script": lambda e, t0, s: s - e["agent"],
        "POST -> script (total)": lambda e, t0, s: s - t0,
    }
    skip = min(5, len(sent) // 4)  # warm-up
    for name, f in phases.items():
        values = [f(events[t], t0, s) * 1000 for t, t0, s in sent[skip:] if t in events]
        print(f"{name:28s} p50 {statistics.median(values):6.2f} ms   min {min(values):6.2f} ms")


if __name__ == "__main__":
    main()
