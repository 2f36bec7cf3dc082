#!/usr/bin/env python3
"""chart_wiring.py: proves the Helm chart's wiring without a cluster.

Renders the chart (`helm template`) for one mode, then plays kubelet: starts every rendered
container's command, args and env (envFrom ConfigMaps/Secrets resolved, mounted Secret files
written to a scratch directory) as a local process. Substitutions, and only these: the image's
/usr/local/bin/mesh is the freshly built binary; mount paths live under the scratch directory;
each container's listen addresses (0.0.0.0:<containerPort>) get a free loopback port, since all
"pods" share one host here. NATS and Postgres URLs come in as chart values.

Checks: every MESH_* variable the chart sets is one `mesh --help` knows; the migration hook's
command exits 0; every declared liveness/readiness probe answers 200 on the port it names; a
chat message sent through the rendered edge (two users, friends) is stored; on SIGTERM the edge
closes an open WebSocket with 1001 (clients reconnect to another edge); every process exits 0
on SIGTERM within its terminationGracePeriodSeconds; with per-role NATS logins, no pod of one
role (nor the migration Job) has another role's password in any file mounted into it.

Usage: chart_wiring.py --helm HELM --chart DIR --mesh BIN --mode all|roles
       (MESH_NATS_URL and a fresh database in MESH_DATABASE_URL from the environment)
"""

import argparse
import base64
import json
import os
import re
import signal
import subprocess
import sys
import uuid

import yaml

from meshtest import WAIT_SECS, Api, delete_prefix, fail, free_port, scratch_dir, status_of, wait_for


NATS_SECRET = "wiring-nats"
ROLES = ("edge", "user", "social", "chat", "outbox", "migrate")


def role_secret(creds_text):
    """The per-role credentials Secret an operator makes from `mesh nats-config`'s file: one key
    per role holding that role's line only, and `all` holding every line."""
    lines = [l for l in creds_text.splitlines() if l.strip() and not l.startswith("#")]
    data = {role: "".join(f"{l}\n" for l in lines if l.split(" ", 1)[0] == role) for role in ROLES}
    data["all"] = "".join(f"{l}\n" for l in lines)
    return {"kind": "Secret", "metadata": {"name": NATS_SECRET}, "stringData": data}


def check_own_credentials(container, creds_text):
    """A pod of one role holds no other role's NATS password in any file mounted into it."""
    if container.name == "all":
        return
    foreign = [l.split(" ", 1)[1] for l in creds_text.splitlines()
               if l.strip() and not l.startswith("#") and l.split(" ", 1)[0] != container.name]
    for local in container.mounts.values():
        for file in os.listdir(local):
            with open(os.path.join(local, file), errors="replace") as f:
                text = f.read()
            if any(password in text for password in foreign):
                fail(f"{container.name} mounts another role's NATS credentials ({file})")


def render(args, scratch, prefix):
    keys = os.path.join(scratch, "keys")
    subprocess.run([args.mesh, "keygen", "--out", keys], check=True, capture_output=True)
    cmd = [
        args.helm, "template", "wiring", args.chart,
        "--set", f"mode={args.mode}",
        "--set", f"prefix={prefix}",
        "--set", f"nats.url={os.environ['MESH_NATS_URL']}",
        "--set", f"database.url={os.environ['MESH_DATABASE_URL']}",
        "--set-file", f"jwt.privateKey={keys}/jwt_ed25519.pem",
        "--set-file", f"jwt.publicKey={keys}/jwt_ed25519.pub.pem",
        # Short timers so the mesh settles quickly; still names the binary must know.
        "--set", "env.MESH_RPC_TIMEOUT=5s",
        "--set", "env.RUST_LOG=warn",
    ]
    creds = os.environ.get("MESH_NATS_ROLE_CREDENTIALS")
    if creds:
        # A NATS server with authorization (scripts/services.sh's default): the role
        # credentials go in as an existing Secret with one key per role, as an operator
        # would deploy them, and each pod mounts only its own.
        cmd += ["--set", f"nats.roleCredentials.existingSecret={NATS_SECRET}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    if creds:
        with open(creds) as f:
            docs.append(role_secret(f.read()))
    return docs


def index(docs):
    by = {}
    for d in docs:
        by[(d["kind"], d["metadata"]["name"])] = d
    return by


def secret_data(secret):
    data = dict(secret.get("stringData") or {})
    for k, v in (secret.get("data") or {}).items():
        data[k] = base64.b64decode(v).decode()
    return data


def check_env_names(docs, mesh):
    helptext = subprocess.run([mesh, "--help"], check=True, capture_output=True, text=True).stdout
    known = set(re.findall(r"env: (MESH_[A-Z0-9_]+)=", helptext))
    if not known:
        fail("`mesh --help` lists no environment variables")
    names = set()
    for d in docs:
        if d["kind"] in ("ConfigMap", "Secret"):
            names |= set((d.get("data") or {}).keys()) | set((d.get("stringData") or {}).keys())
        spec = pod_spec(d)
        for c in (spec or {}).get("containers", []):
            names |= {e["name"] for e in c.get("env") or []}
    unknown = sorted(n for n in names if n.startswith("MESH_") and n not in known)
    if unknown:
        fail(f"the chart sets variables `mesh --help` does not know: {unknown}")
    print(f"chart wiring: {len([n for n in names if n.startswith('MESH_')])} MESH_* names, all known to mesh --help")


def pod_spec(doc):
    if doc["kind"] in ("Deployment", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


class Container:
    """One rendered container turned into a local process."""

    def __init__(self, name, doc, by, args, scratch):
        self.name = name
        spec = pod_spec(doc)
        self.grace = spec.get("terminationGracePeriodSeconds", 30)
        (c,) = spec["containers"]
        self.spec = c
        root = os.path.join(scratch, name)
        self.mounts = {}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for m in c.get("volumeMounts") or []:
            local = os.path.join(root, m["mountPath"].lstrip("/"))
            os.makedirs(local, exist_ok=True)
            self.mounts[m["mountPath"]] = local
            vol = volumes[m["name"]]
            if "secret" in vol:
                data = secret_data(by[("Secret", vol["secret"]["secretName"])])
                items = vol["secret"].get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    with open(os.path.join(local, item["path"]), "w") as f:
                        f.write(data[item["key"]])
        env = {}
        for src in c.get("envFrom") or []:
            if "configMapRef" in src:
                env.update(by[("ConfigMap", src["configMapRef"]["name"])]["data"])
            if "secretRef" in src:
                env.update(secret_data(by[("Secret", src["secretRef"]["name"])]))
        for e in c.get("env") or []:
            env[e["name"]] = e["value"]
        self.ports = {}
        for p in c.get("ports") or []:
            self.ports[p["name"]] = (p["containerPort"], free_port())
        by_container_port = {cp: lp for cp, lp in self.ports.values()}
        for k, v in list(env.items()):
            for path, local in self.mounts.items():
                if v.startswith(path + "/"):
                    env[k] = local + v[len(path):]
            m = re.fullmatch(r"0\.0\.0\.0:(\d+)", v)
            if m:
                # Only the addresses this container declares get a real port; others must not
                # collide between "pods" either.
                env[k] = f"127.0.0.1:{by_container_port.get(int(m.group(1)), free_port())}"
        if c["command"] != ["/usr/local/bin/mesh"]:
            fail(f"{name}: unexpected command {c['command']}")
        self.argv = [args.mesh] + c.get("args", [])
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        self.log = os.path.join(scratch, f"{name}.log")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=open(self.log, "w"),
                                     stderr=subprocess.STDOUT)

    def wait_exit(self, timeout, what):
        """Waits for the process to end (killing it after `timeout`) and requires exit 0."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail(f"{self.name} did not {what} within {timeout}s")
        if code != 0:
            fail(f"{self.name} exited {code}: {open(self.log).read()[-2000:]}")

    def run_to_end(self):
        self.start()
        self.wait_exit(WAIT_SECS, "finish")

    def probes(self):
        out = []
        for kind in ("livenessProbe", "readinessProbe"):
            probe = self.spec.get(kind)
            if not probe:
                fail(f"{self.name} has no {kind}")
            get = probe["httpGet"]
            port = get["port"]
            if port not in self.ports:
                fail(f"{self.name}: {kind} names port {port!r}, which the container does not declare")
            out.append((kind, f"http://127.0.0.1:{self.ports[port][1]}{get['path']}"))
        return out

    def alive(self):
        if self.proc.poll() is not None:
            fail(f"{self.name} exited {self.proc.returncode}: {open(self.log).read()[-2000:]}")

    def stop(self):
        """SIGTERM, as the kubelet sends it; exit 0 within terminationGracePeriodSeconds."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.wait_exit(self.grace, "stop on SIGTERM")


def chat_through_edge(api, procs):
    """Two friends exchange a message through the edge; answers the receiver's access token."""
    alive = lambda: [p.alive() for p in procs]
    (a, _), (b, id_b) = api.user("wiring-a"), api.user("wiring-b")
    api.befriend(a["access_token"], id_b, b["access_token"])
    api.send_until_stored(a["access_token"], id_b, b["access_token"], "wiring-1",
                          "hello through the rendered chart", alive)
    print("chart wiring: message sent through the rendered edge and stored")
    return b["access_token"]


def open_socket(edge, token):
    """A WebSocket on the rendered edge, past its `ready` frame."""
    from websockets.sync.client import connect
    ws = connect(f"ws://127.0.0.1:{edge.ports['http'][1]}/v1/ws",
                 additional_headers={"authorization": f"Bearer {token}"}, open_timeout=10)
    ready = json.loads(ws.recv(timeout=10))
    if ready.get("type") != "ready":
        fail(f"first WebSocket frame: {ready}")
    return ws


def expect_going_away(ws):
    """After the edge's SIGTERM its sockets close with 1001 (going away: reconnect elsewhere)."""
    from websockets.exceptions import ConnectionClosed
    try:
        while True:
            ws.recv(timeout=WAIT_SECS)
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else None
        if code != 1001:
            fail(f"the edge closed its WebSocket with {code}, not 1001, on SIGTERM")
    except TimeoutError:
        fail("the edge kept its WebSocket open after SIGTERM")
    print("chart wiring: on SIGTERM the edge closed its WebSocket with 1001")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--helm", required=True)
    ap.add_argument("--chart", required=True)
    ap.add_argument("--mesh", required=True)
    ap.add_argument("--mode", choices=["all", "roles"], required=True)
    args = ap.parse_args()
    with scratch_dir(f"chart-wiring-{args.mode}-") as scratch:
        check(args, scratch)


def check(args, scratch):
    prefix = f"chart{uuid.uuid4().hex[:10]}"
    docs = render(args, scratch, prefix)
    by = index(docs)
    check_env_names(docs, args.mesh)

    jobs = [d for d in docs if d["kind"] == "Job"]
    if len(jobs) != 1 or "pre-install" not in jobs[0]["metadata"]["annotations"]["helm.sh/hook"]:
        fail("expected one pre-install migration hook Job")
    creds = os.environ.get("MESH_NATS_ROLE_CREDENTIALS")
    creds_text = open(creds).read() if creds else ""
    migrate = Container("migrate", jobs[0], by, args, scratch)
    check_own_credentials(migrate, creds_text)
    migrate.run_to_end()
    print("chart wiring: migration hook ran")

    deployments = [d for d in docs if d["kind"] == "Deployment"]
    expected = 1 if args.mode == "all" else 5
    if len(deployments) != expected:
        fail(f"mode {args.mode}: {len(deployments)} Deployments, expected {expected}")
    procs = [Container(d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"],
                       d, by, args, scratch) for d in deployments]
    for p in procs:
        check_own_credentials(p, creds_text)
    if creds_text:
        print("chart wiring: every pod mounts only its own role's NATS credentials")
    try:
        for p in procs:
            p.start()
        for p in procs:
            for kind, url in p.probes():
                wait_for(f"{p.name} {kind} {url}", lambda u=url: status_of(u) == 200,
                         lambda: [q.alive() for q in procs])
                print(f"chart wiring: {p.name} {kind} answers 200 at {url.split('/', 3)[-1]}")
            metrics_port = p.ports.get("metrics") or p.ports.get("http")
            if status_of(f"http://127.0.0.1:{metrics_port[1]}/metrics") != 200:
                fail(f"{p.name} serves no /metrics")
        edge = next(p for p in procs if p.name in ("edge", "all"))
        token = chat_through_edge(Api(f"http://127.0.0.1:{edge.ports['http'][1]}"), procs)
        ws = open_socket(edge, token)
        edge.stop()
        expect_going_away(ws)
    finally:
        errors = []
        for p in procs:
            try:
                p.stop()
            except SystemExit as e:
                errors.append(e)
        delete_prefix(prefix)
    if errors:
        sys.exit(1)
    print(f"chart wiring ({args.mode}): every process stopped cleanly on SIGTERM")


if __name__ == "__main__":
    main()
