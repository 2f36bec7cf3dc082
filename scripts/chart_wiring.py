#!/usr/bin/env python3
"""chart_wiring.py: proves the Helm chart's wiring without a cluster.

Renders the chart (`helm template`) for one mode, then plays kubelet: starts every rendered
container's command, args and env (envFrom ConfigMaps/Secrets resolved, mounted Secret files
written to a scratch directory) as a local process. Substitutions, and only these: the image's
/usr/local/bin/mesh is the freshly built binary; mount paths live under the scratch directory;
each container's listen addresses (0.0.0.0:<containerPort>) get a free loopback port, since all
"pods" share one host here. NATS and Postgres URLs come in as chart values.

Checks: every MESH_* variable the chart sets is one `mesh --help` knows; no Secret's value
sits in a ConfigMap or a plain env value; each pod gets only the database URLs its role reads
(the edge none); a setting taken from a Secret (secretEnv) reaches every pod and the Job; the
migration hook's command exits 0; every declared liveness/readiness probe answers 200 on the
port it names, and the pod's NetworkPolicy admits that port and no other (the migration Job's
none); in mode roles the edge is ready while no other role runs (its readiness does not
cascade from the workers); a chat message sent through the rendered edge (two users, friends) is
stored; behind a trusted proxy (edge.trustedProxies) a sign-in's session carries the client
address from X-Forwarded-For; the pods hold no more Postgres connections than the chart's budget
counts for them; on SIGTERM the edge closes an open WebSocket with 1001 (clients
reconnect to another edge); every process exits 0 on SIGTERM within its
terminationGracePeriodSeconds; with per-role NATS logins, no pod of one role (nor the migration
Job) has another role's password in any file mounted into it.

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
import urllib.request
import uuid

import yaml

from meshtest import (WAIT_SECS, Api, delete_prefix, fail, free_port, pod_connections, scratch_dir,
                      status_of, wait_for, with_password)


NATS_SECRET = "wiring-nats"
ENV_SECRET = "wiring-env"
ROLES = ("edge", "user", "social", "chat", "outbox", "migrate")
DB_URLS = ("MESH_DATABASE_URL", "MESH_USER_DATABASE_URL", "MESH_SOCIAL_DATABASE_URL",
           "MESH_CHAT_DATABASE_URL")
# The database URLs each process reads (src/config: a service its own, outbox and migrations all).
DB_URLS_OF = {"edge": set(), "user": {"MESH_USER_DATABASE_URL"},
              "social": {"MESH_SOCIAL_DATABASE_URL"}, "chat": {"MESH_CHAT_DATABASE_URL"},
              "outbox": set(DB_URLS), "all": set(DB_URLS), "migrate": set(DB_URLS)}
# The "ingress" in front of the rendered edge is this script on loopback; a client behind it.
PROXY = "127.0.0.1/32"
CLIENT_BEHIND_PROXY = "203.0.113.7"


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
        # With its password, as an operator's values (or existing Secret) would hold it.
        "--set", f"database.url={with_password(os.environ['MESH_DATABASE_URL'])}",
        "--set-file", f"jwt.privateKey={keys}/jwt_ed25519.pem",
        "--set-file", f"jwt.publicKey={keys}/jwt_ed25519.pub.pem",
        # Short timers so the mesh settles quickly; still names the binary must know. The RPC
        # timeout comes from a Secret, as a password would (secretEnv).
        "--set-json", 'secretEnv={"MESH_RPC_TIMEOUT":{"secretName":"%s","key":"rpc-timeout"}}' % ENV_SECRET,
        "--set", "env.RUST_LOG=warn",
        # A trusted proxy in front of the edge (this script), and an IPv6 block: the edge must
        # parse the list as the chart joins it.
        "--set", f"edge.trustedProxies={{{PROXY},fd00::/8}}",
    ]
    creds = os.environ.get("MESH_NATS_ROLE_CREDENTIALS")
    if creds:
        # A NATS server with authorization (scripts/services.sh's default): the role
        # credentials go in as an existing Secret with one key per role, as an operator
        # would deploy them, and each pod mounts only its own.
        cmd += ["--set", f"nats.roleCredentials.existingSecret={NATS_SECRET}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    docs.append({"kind": "Secret", "metadata": {"name": ENV_SECRET}, "stringData": {"rpc-timeout": "5s"}})
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
    # `[env: NAME=value]`, or `[env: NAME]` for a variable whose value --help hides.
    known = set(re.findall(r"env: (MESH_[A-Z0-9_]+)[=\]]", helptext))
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


def check_no_plain_secrets(docs):
    """No value of a Secret appears in a ConfigMap or in a container's plain `value`."""
    secrets = {v for d in docs if d["kind"] == "Secret" for v in secret_data(d).values() if len(v) >= 8}
    for d in docs:
        where = f"{d['kind']}/{d['metadata']['name']}"
        plain = list((d.get("data") or {}).values()) if d["kind"] == "ConfigMap" else []
        for c in (pod_spec(d) or {}).get("containers", []):
            plain += [e["value"] for e in c.get("env") or [] if "value" in e]
        for value in plain:
            if any(secret in str(value) for secret in secrets):
                fail(f"{where} holds a Secret's value in plain text")
    print("chart wiring: no Secret's value in a ConfigMap or a plain env value")


def check_database_urls(container):
    """A pod holds only the database URLs its role reads."""
    got = {k for k in container.env if k in DB_URLS}
    if got != DB_URLS_OF[container.name]:
        fail(f"{container.name} gets database URLs {sorted(got)}, its role reads {sorted(DB_URLS_OF[container.name])}")
    if container.env.get("MESH_RPC_TIMEOUT") != "5s":
        fail(f"{container.name}: secretEnv.MESH_RPC_TIMEOUT did not reach it from its Secret")


def pod_spec(doc):
    if doc["kind"] in ("Deployment", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


class Container:
    """One rendered container turned into a local process."""

    def __init__(self, name, doc, by, args, scratch):
        self.name = name
        self.labels = doc["spec"]["template"]["metadata"]["labels"]
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

        def source(kind, ref):
            """The data of a referenced ConfigMap or Secret, as the kubelet finds it."""
            doc = by.get((kind, ref["name"]))
            if doc is None:
                if ref.get("optional"):
                    return {}
                fail(f"{name}: references {kind} {ref['name']}, which is not rendered")
            return doc.get("data") or {} if kind == "ConfigMap" else secret_data(doc)

        for src in c.get("envFrom") or []:
            if "configMapRef" in src:
                data = source("ConfigMap", src["configMapRef"])
            else:
                data = source("Secret", src["secretRef"])
            env.update({src.get("prefix", "") + k: v for k, v in data.items()})
        for e in c.get("env") or []:
            if "value" in e:
                env[e["name"]] = e["value"]
                continue
            ref = e["valueFrom"].get("secretKeyRef") or e["valueFrom"].get("configMapKeyRef")
            data = source("Secret" if "secretKeyRef" in e["valueFrom"] else "ConfigMap", ref)
            if ref["key"] in data:
                env[e["name"]] = data[ref["key"]]
            elif not ref.get("optional"):
                fail(f"{name}: {e['name']} references key {ref['key']}, missing from {ref['name']}")
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


def check_policy_ports(docs, container, served):
    """The one NetworkPolicy selecting this pod admits exactly the container ports `served`
    (those its probes and /metrics answered on): it neither shuts out what the pod serves nor
    opens another port."""
    mine = [d for d in docs if d["kind"] == "NetworkPolicy" and all(
        container.labels.get(k) == v for k, v in d["spec"]["podSelector"]["matchLabels"].items())]
    if len(mine) != 1:
        fail(f"{container.name}: selected by {len(mine)} NetworkPolicies, expected 1")
    admitted = {p["port"] for rule in mine[0]["spec"].get("ingress") or [] for p in rule.get("ports") or []}
    if admitted != served:
        fail(f"{container.name}: its NetworkPolicy admits ports {sorted(admitted)}, it serves {sorted(served)}")


def chat_through_edge(api, procs):
    """Two friends exchange a message through the edge; answers the receiver's access token."""
    alive = lambda: [p.alive() for p in procs]
    (a, _), (b, id_b) = api.user("wiring-a"), api.user("wiring-b")
    api.befriend(a["access_token"], id_b, b["access_token"])
    api.send_until_stored(a["access_token"], id_b, b["access_token"], "wiring-1",
                          "hello through the rendered chart", alive)
    print("chart wiring: message sent through the rendered edge and stored")
    return b["access_token"]


def connections_within_the_chart(procs):
    """The running pods hold no more Postgres connections than the chart's budget counts for
    them (their pools full, the outbox relay's per schema): what the chart adds up is what the
    binary opens."""
    held = subprocess.run(
        ["psql", os.environ["MESH_DATABASE_URL"], "-tAc",
         "SELECT count(*) FROM pg_stat_activity "
         "WHERE datname = current_database() AND pid <> pg_backend_pid()"],
        capture_output=True, text=True, check=True).stdout.strip()
    most = sum(pod_connections(p.name, p.env.get("MESH_DB_MAX_CONNECTIONS", 0)) for p in procs)
    if int(held) > most:
        fail(f"the pods hold {held} Postgres connections, more than the {most} the chart counts")
    print(f"chart wiring: the pods hold {held} Postgres connections, within the {most} the chart counts")


def client_behind_proxy(edge):
    """A sign-in through the trusted proxy: its session records the forwarded client address."""
    api = Api(f"http://127.0.0.1:{edge.ports['http'][1]}")
    login, _ = api.user("wiring-xff")
    req = urllib.request.Request(api.base + "/v1/auth/login", method="POST",
                                 data=json.dumps({"phone": login["phone"], "password": "correct horse"}).encode(),
                                 headers={"content-type": "application/json",
                                          "x-forwarded-for": CLIENT_BEHIND_PROXY})
    with urllib.request.urlopen(req, timeout=10) as r:
        token = json.load(r)["access_token"]
    sessions = api.ok("GET", "/v1/sessions", token=token)["items"]
    ip = next((s.get("ip") for s in sessions if s.get("current")), None)
    if ip != CLIENT_BEHIND_PROXY:
        fail(f"a sign-in through the trusted proxy {PROXY} was recorded from {ip}, not the "
             f"forwarded client {CLIENT_BEHIND_PROXY}: MESH_TRUSTED_PROXIES does not reach the edge")
    print(f"chart wiring: behind a trusted proxy the edge sees the client's own address")


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
    check_no_plain_secrets(docs)

    jobs = [d for d in docs if d["kind"] == "Job"]
    if len(jobs) != 1 or "pre-install" not in jobs[0]["metadata"]["annotations"]["helm.sh/hook"]:
        fail("expected one pre-install migration hook Job")
    creds = os.environ.get("MESH_NATS_ROLE_CREDENTIALS")
    creds_text = open(creds).read() if creds else ""
    migrate = Container("migrate", jobs[0], by, args, scratch)
    check_own_credentials(migrate, creds_text)
    check_database_urls(migrate)
    migrate.run_to_end()
    check_policy_ports(docs, migrate, set())
    print("chart wiring: migration hook ran; its NetworkPolicy admits nothing")

    deployments = [d for d in docs if d["kind"] == "Deployment"]
    expected = 1 if args.mode == "all" else 5
    if len(deployments) != expected:
        fail(f"mode {args.mode}: {len(deployments)} Deployments, expected {expected}")
    procs = [Container(d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"],
                       d, by, args, scratch) for d in deployments]
    for p in procs:
        check_own_credentials(p, creds_text)
        check_database_urls(p)
    if creds_text:
        print("chart wiring: every pod mounts only its own role's NATS credentials")
    print("chart wiring: each pod gets only its role's database URLs, and secretEnv from its Secret")
    edge = next(p for p in procs if p.name in ("edge", "all"))
    try:
        if edge.name == "edge":
            # One failing worker role must not take every edge out of its Service: the edge's
            # readiness probe answers 200 while no other role runs at all.
            edge.start()
            (_, ready_url), = [u for u in edge.probes() if u[0] == "readinessProbe"]
            wait_for(f"the edge to be ready with no worker role running ({ready_url})",
                     lambda: status_of(ready_url) == 200, edge.alive)
            print("chart wiring: the edge is ready while no worker role runs")
        for p in procs:
            if p.proc is None:
                p.start()
        for p in procs:
            for kind, url in p.probes():
                wait_for(f"{p.name} {kind} {url}", lambda u=url: status_of(u) == 200,
                         lambda: [q.alive() for q in procs])
                print(f"chart wiring: {p.name} {kind} answers 200 at {url.split('/', 3)[-1]}")
            metrics_port = p.ports.get("metrics") or p.ports.get("http")
            if status_of(f"http://127.0.0.1:{metrics_port[1]}/metrics") != 200:
                fail(f"{p.name} serves no /metrics")
            served = {p.ports[p.spec[k]["httpGet"]["port"]][0] for k in ("livenessProbe", "readinessProbe")}
            served.add(metrics_port[0])
            check_policy_ports(docs, p, served)
            print(f"chart wiring: {p.name}'s NetworkPolicy admits exactly the port it serves on {sorted(served)}")
        # The edge's own probe leaves the workers out, so a ready edge may still find them
        # starting: traffic waits for the full readiness (every service answering), as an
        # operator's smoke test would.
        full_ready = f"http://127.0.0.1:{edge.ports['http'][1]}/readyz"
        wait_for(f"every service answering ({full_ready})", lambda: status_of(full_ready) == 200,
                 lambda: [q.alive() for q in procs])
        token = chat_through_edge(Api(f"http://127.0.0.1:{edge.ports['http'][1]}"), procs)
        client_behind_proxy(edge)
        connections_within_the_chart(procs)
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
