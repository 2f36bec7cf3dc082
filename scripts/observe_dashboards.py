#!/usr/bin/env python3
"""observe_dashboards.py: every panel of every Grafana dashboard shows data from a real mesh.

Static part (no processes): every metric name that the alert rules and the dashboards use is
one the mesh exports (observability/src/metrics.rs, the process collector's process_*, or up),
and every alert of mesh-alerts.yaml has a unit test in which it fires.

Live part: starts `mesh all` (fresh database, own prefix, new JWT keys) and a real Prometheus
scraping it every second with the alert rules loaded, drives traffic through the API (users,
logins, a failed login and a bad token, friends, messages by REST and WebSocket, a duplicate, a
rejected message, an SSE stream, a refresh, a logout), then runs every panel's query through
Prometheus' HTTP API with the template variables substituted ($role, $instance: .+;
$namespace, $release: .*; $__rate_interval: 5m) and requires at least one series with a number. The template variables'
own queries must answer too. The absence alerts (Mesh*Absent), evaluated on the same Prometheus,
stay silent: one `mesh all` target serves every role.

Usage: observe_dashboards.py --mesh BIN --prometheus BIN [--static-only]
       (MESH_NATS_URL and a fresh database in MESH_DATABASE_URL from the environment)
"""

import argparse
import asyncio
import glob
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid

import yaml

from meshtest import Api, delete_prefix, fail, free_port, scratch_dir, status_of, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARDS = os.path.join(ROOT, "observability", "dashboards")
ALERTS = os.path.join(ROOT, "observability", "alerts")
SUBSTITUTE = {"$__rate_interval": "5m", "$namespace": ".*", "$release": ".*", "$role": ".+",
              "$instance": ".+"}
# Panels whose metric the mesh does not refresh yet; each names what will make it show data.
AWAITING: dict = {}
PROMQL_WORDS = {"sum", "rate", "increase", "histogram_quantile", "max", "min", "by", "or", "and",
                "vector", "time", "delta", "min_over_time", "offset", "on", "le", "timestamp",
                "label_values", "changes", "count", "avg", "deriv"}


def panels():
    """(dashboard file, panel title, expr) of every query of every panel."""
    for path in sorted(glob.glob(os.path.join(DASHBOARDS, "*.json"))):
        with open(path) as f:
            board = json.load(f)
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield os.path.basename(path), panel["title"], target["expr"]


def variables():
    for path in sorted(glob.glob(os.path.join(DASHBOARDS, "*.json"))):
        with open(path) as f:
            board = json.load(f)
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                yield os.path.basename(path), var["name"], var["definition"]


def exported_metrics():
    with open(os.path.join(ROOT, "observability", "src", "metrics.rs")) as f:
        src = f.read()
    names = set(re.findall(r'"(mesh_[a-z0-9_]+)"', src))
    derived = set()
    for n in names:
        derived |= {n + "_bucket", n + "_sum", n + "_count"}
    return names | derived


def metric_names(expr):
    expr = re.sub(r'"[^"]*"', '""', expr)       # label values are no metric names
    expr = re.sub(r"\{[^}]*\}", "{}", expr)     # nor are label names
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"\b([a-z_][a-z0-9_]*)\b", expr))
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhd]", w)
            and (w.startswith("mesh_") or w.startswith("process_") or w == "up")}


def static_checks():
    known = exported_metrics()
    problems = []
    with open(os.path.join(ALERTS, "mesh-alerts.yaml")) as f:
        rules = yaml.safe_load(f)
    with open(os.path.join(ALERTS, "mesh-alerts.test.yaml")) as f:
        tests = yaml.safe_load(f)
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    exprs = [(f"alert {name}", e) for name, e in alerts.items()]
    exprs += [(f"{board} / {title}", e) for board, title, e in panels()]
    for where, expr in exprs:
        for name in metric_names(expr):
            if name.startswith("mesh_") and name not in known:
                problems.append(f"{where}: {name} is not a metric of the mesh")
    fired = {a["alertname"] for t in tests["tests"] for a in t["alert_rule_test"] if a.get("exp_alerts")}
    for name in sorted(set(alerts) - fired):
        problems.append(f"alert {name} has no unit test in which it fires")
    if problems:
        fail("\n  ".join(["static checks:"] + problems))
    print(f"observe: {len(alerts)} alerts each fire in a unit test; "
          f"{len(exprs)} alert and panel queries use only exported metrics")


class Processes:
    def __init__(self):
        self.procs = []

    def start(self, name, argv, env, log):
        proc = subprocess.Popen(argv, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.procs.append((name, proc, log))
        return proc

    def alive(self):
        for name, proc, log in self.procs:
            if proc.poll() is not None:
                fail(f"{name} exited {proc.returncode}: {open(log).read()[-2000:]}")

    def stop(self):
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def start_mesh(procs, mesh, scratch, prefix):
    keys = os.path.join(scratch, "keys")
    subprocess.run([mesh, "keygen", "--out", keys], check=True, capture_output=True)
    port = free_port()
    env = {
        # NATS credentials of the test server, if it runs with authorization.
        **{k: v for k, v in os.environ.items() if k.startswith("MESH_NATS_")},
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "MESH_NATS_URL": os.environ["MESH_NATS_URL"],
        "MESH_DATABASE_URL": os.environ["MESH_DATABASE_URL"],
        # The password of scripts/services.sh's Postgres, by its file.
        **{k: v for k, v in os.environ.items() if k == "PGPASSFILE"},
        "MESH_PREFIX": prefix,
        "MESH_HTTP_ADDR": f"127.0.0.1:{port}",
        "MESH_JWT_PRIVATE_KEY": f"{keys}/jwt_ed25519.pem",
        "MESH_JWT_PUBLIC_KEY": f"{keys}/jwt_ed25519.pub.pem",
        "MESH_CHAT_PARTITIONS": "4",
        "RUST_LOG": "warn",
    }
    # As in a deployment: migrations (database, and NATS streams once migrate owns them) first.
    migrated = subprocess.run([mesh, "migrate"], env=env, capture_output=True, text=True)
    if migrated.returncode != 0:
        fail(f"mesh migrate exited {migrated.returncode}: {migrated.stderr[-2000:]}")
    procs.start("mesh all", [mesh, "all"], env, os.path.join(scratch, "mesh.log"))
    wait_for("the mesh to be ready", lambda: status_of(f"http://127.0.0.1:{port}/readyz") == 200, procs.alive)
    return port


def start_prometheus(procs, prometheus, scratch, mesh_port):
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [os.path.join(ALERTS, "mesh-alerts.yaml")],
        "scrape_configs": [{
            "job_name": "nats-mesh",
            # As the chart's ServiceMonitor labels a target (the operator adds `namespace`).
            "static_configs": [{"targets": [f"127.0.0.1:{mesh_port}"],
                                "labels": {"mesh_role": "all", "namespace": "observe",
                                           "mesh_release": "observe"}}],
        }],
    }
    path = os.path.join(scratch, "prometheus.yml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    procs.start("prometheus", [prometheus, f"--config.file={path}",
                               f"--storage.tsdb.path={scratch}/tsdb",
                               f"--web.listen-address=127.0.0.1:{port}"],
                {"PATH": os.environ.get("PATH", "")}, os.path.join(scratch, "prometheus.log"))
    base = f"http://127.0.0.1:{port}"
    wait_for("Prometheus to be ready", lambda: status_of(f"{base}/-/ready") == 200, procs.alive)
    return base


def sse_stream(url, opened, stop):
    """Holds an SSE stream open (counted as a realtime connection) until `stop` is set."""
    with urllib.request.urlopen(url, timeout=30) as r:
        opened.set()
        while not stop.is_set():
            if not r.readline():
                return


async def websocket_traffic(base, token, to, procs):
    import websockets
    url = base.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(url, additional_headers={"authorization": f"Bearer {token}"}) as ws:
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            fail(f"first WebSocket frame: {ready}")
        await ws.send(json.dumps({"type": "ping", "nonce": "n1"}))
        await ws.send(json.dumps({"type": "send", "client_id": "ws-1", "to": to, "body": "over the socket"}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
            if frame.get("type") == "ack" and frame.get("client_id") == "ws-1":
                if frame["status"] == "stored":
                    return
                if frame["status"] == "rejected":
                    fail(f"WebSocket message rejected: {frame}")


def drive_traffic(api, procs, round):
    (a, id_a), (b, id_b) = api.user("ann"), api.user("bob")
    (c, id_c) = api.user("cid")
    ta, tb, tc = a["access_token"], b["access_token"], c["access_token"]
    api.call("POST", "/v1/auth/login", {"phone": a["phone"], "password": "wrong horse"})
    api.call("GET", "/v1/users/me", token="not-a-token")
    api.befriend(ta, id_b, tb)
    stop, opened = threading.Event(), threading.Event()
    sse = threading.Thread(target=sse_stream, args=(f"{api.base}/v1/events?access_token={tb}", opened, stop),
                           daemon=True)
    sse.start()
    wait_for("the SSE stream to open", opened.is_set, procs.alive)
    api.send_until_stored(ta, id_b, tb, "rest-1", "hello bob", procs.alive)
    api.ok("POST", "/v1/messages", {"client_id": "rest-1", "to": id_b, "body": "hello bob"}, token=ta)
    api.send_until_stored(ta, id_b, tb, "rest-3", "still there?", procs.alive)
    api.call("POST", "/v1/messages", {"client_id": "rest-2", "to": id_c, "body": "not friends"}, token=ta)
    asyncio.run(websocket_traffic(api.base, ta, id_b, procs))
    api.ok("POST", "/v1/auth/refresh", {"refresh_token": a["refresh_token"]})
    api.ok("POST", "/v1/auth/logout", token=tc)
    stop.set()
    print(f"observe: traffic round {round} (REST, WebSocket, SSE, auth failures, refresh, logout)")


def query(base, expr):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        answer = json.load(r)
    if answer["status"] != "success":
        fail(f"query failed: {expr}: {answer}")
    return answer["data"]["result"]


def has_number(result):
    return any(not math.isnan(float(s["value"][1])) for s in result)


def substitute(expr):
    for k, v in SUBSTITUTE.items():
        expr = expr.replace(k, v)
    return expr


def live_checks(args):
    with scratch_dir("observe-") as scratch:
        check_live(args, scratch)


def check_live(args, scratch):
    prefix = f"obs{uuid.uuid4().hex[:10]}"
    procs = Processes()
    try:
        mesh_port = start_mesh(procs, args.mesh, scratch, prefix)
        prom = start_prometheus(procs, args.prometheus, scratch, mesh_port)
        # rate() sees only increases between two samples, and a labelled series is born at its
        # first use: so traffic runs twice with a scrape between, then once more is scraped.
        api = Api(f"http://127.0.0.1:{mesh_port}")
        for round in (1, 2):
            drive_traffic(api, procs, round)
            done = time.time()

            def scraped_since():
                series = query(prom, 'up{job="nats-mesh"}[5m]')
                return any(float(t) > done and up == "1" for s in series for t, up in s["values"])

            wait_for(f"a scrape after traffic round {round}", scraped_since, procs.alive)
        empty = []
        count = 0
        for board, title, expr in panels():
            count += 1
            if not has_number(query(prom, substitute(expr))):
                if title in AWAITING:
                    print(f"observe: WARNING: {board} / {title} has no data yet: {AWAITING[title]}",
                          file=sys.stderr)
                    continue
                empty.append(f"{board} / {title}: {substitute(expr)}")
        for board, name, definition in variables():
            m = re.fullmatch(r"label_values\((.*), *([a-z_]+)\)", definition)
            series = query(prom, substitute(m.group(1)))
            if not any(m.group(2) in s["metric"] for s in series):
                empty.append(f"{board} / variable {name}: {definition}")
        rules = json.load(urllib.request.urlopen(f"{prom}/api/v1/rules", timeout=10))["data"]["groups"]
        loaded = sum(len(g["rules"]) for g in rules)
        if any(r.get("health") == "err" for g in rules for r in g["rules"]):
            empty.append(f"alert rules evaluate with errors: {rules}")
        absence = {r["name"]: r["query"] for g in rules for r in g["rules"]
                   if r.get("type") == "alerting" and r["name"].endswith("Absent")}
        if not absence:
            empty.append("no absence alert (Mesh*Absent) loaded")
        for name, expr in absence.items():
            missing = query(prom, expr)
            if missing:
                empty.append(f"{name} would fire while `mesh all` is scraped: "
                             f"{[s['metric'] for s in missing]}")
        if empty:
            print(f"observe: scrapes in the last minute: {query(prom, 'up[1m]')}", file=sys.stderr)
            fail("panels without data, or failed alert checks:\n  " + "\n  ".join(empty))
        print(f"observe: all {count} panel queries and the template variables return data "
              f"from a real Prometheus; it loaded {loaded} alert rules; "
              f"{', '.join(sorted(absence))} silent with every role up in `mesh all`")
    finally:
        procs.stop()
        delete_prefix(prefix)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mesh")
    ap.add_argument("--prometheus")
    ap.add_argument("--static-only", action="store_true")
    args = ap.parse_args()
    static_checks()
    if not args.static_only:
        live_checks(args)


if __name__ == "__main__":
    main()
