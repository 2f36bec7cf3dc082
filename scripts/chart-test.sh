#!/usr/bin/env bash
# chart-test.sh: verifies the Helm chart helm/nats-mesh offline, with a real helm v4.
#   1. `helm lint --strict`, `helm template` and a client-side dry-run install (NOTES.txt) for
#      each value set in helm/nats-mesh/ci/
#      (all-in-one; per-role scaled with HPAs and egress restricted; ServiceMonitor +
#      PrometheusRule), and that the chart refuses to render without a database URL and a JWT
#      key pair, and refuses PodDisruptionBudgets that keep every pod (by count, against the
#      HPA's minReplicas, by percentage) while rendering those that leave one to evict;
#   2. chart_checks.py: non-root, read-only root filesystem, probes, resources, HPA/PDB targets,
#      PDBs that leave a pod to evict, one NetworkPolicy per workload admitting exactly its
#      declared ports, PrometheusRule == observability/alerts, ServiceMonitor ports; then the
#      deployment safety checks below: the Ingress routes the edge's public paths only (never
#      /metrics, /healthz, /readyz); it needs edge.trustedProxies, which reach the edge; the
#      edge's readiness does not ask the worker roles; PDBs let drains evict unready pods; the
#      hash pool fits the memory limit; each pod gets only its role's database URLs, all by
#      secretKeyRef; secrets and chart-owned settings are refused in plain env; then the
#      NetworkPolicies of the defaults, of peers, ports and egress set, and of
#      networkPolicy.enabled=false against what those values ask for;
#   3. `kubernetes-validate --strict` on every rendered manifest, the NetworkPolicy renders
#      included (the CRD kinds ServiceMonitor and PrometheusRule have no bundled schema and are
#      left out; step 2 checks them);
#   4. chart_wiring.py for mode "all" and mode "roles": the rendered containers run as local
#      processes against the test NATS and Postgres (probes, migration hook, a chat message;
#      each pod's NetworkPolicy admits the port its probes answer on).
# Needs MESH_NATS_URL and MESH_DATABASE_URL (scripts/services.sh up); starts them when unset.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
source scripts/deploy-tools.sh

CHART=helm/nats-mesh
ensure_services
ensure_helm
ensure_venv
MESH="$(mesh_binary)"

out="$(mktemp -d)"
dbs=()
cleanup() {
  rm -rf "$out"
  for db in "${dbs[@]}"; do drop_database "$db"; done
}
trap cleanup EXIT

# helm prints one INFO line per symbolic link it follows (files/ links to observability/).
quiet_helm() { "$HELM" "$@" 2> >(grep -v 'found symbolic link' >&2); }

echo "== helm lint --strict / helm template" >&2
for values in "$CHART"/ci/*-values.yaml; do
  name="$(basename "$values" -values.yaml)"
  quiet_helm lint --strict "$CHART" -f "$values" >/dev/null
  quiet_helm template "nats-mesh" "$CHART" --namespace chat -f "$values" >"$out/$name.yaml"
  # A client-side dry-run install also renders NOTES.txt.
  installed="$(quiet_helm install "nats-mesh" "$CHART" --namespace chat -f "$values" --dry-run=client)"
  grep -q '^NOTES:' <<<"$installed" || { echo "chart: FAIL: $name: no NOTES" >&2; exit 1; }
  echo "chart: $name lints strictly, renders and dry-run installs" >&2
done
if refusal="$(quiet_helm template x "$CHART" 2>&1)"; then
  echo "chart: FAIL: rendered without a database URL or JWT keys" >&2; exit 1
fi
grep -q 'database.url' <<<"$refusal" || { echo "chart: FAIL: unclear refusal: $refusal" >&2; exit 1; }
if refusal="$(quiet_helm template x "$CHART" --set database.url=postgres://h/db 2>&1)"; then
  echo "chart: FAIL: rendered without JWT keys" >&2; exit 1
fi
grep -q 'jwt.existingSecret' <<<"$refusal" || { echo "chart: FAIL: unclear refusal: $refusal" >&2; exit 1; }

# values.schema.json refuses what the chart cannot deploy (and says so).
base=(--set database.url=postgres://h/db --set jwt.existingSecret=k)
for bad in 'mode="both"' 'nats={"url":"http://nats:4222"}' 'roles={"edge":{"replicas":-1}}' \
           'database={"chatUrl":"mysql://h/db"}' 'unknownKey=1' \
           'ingress={"hosts":[{"host":"a","paths":[{"path":"/","pathType":"Prefix"}]}]}' \
           'edge={"trustedProxies":["everyone"]}' 'edge={"console":{"path":"/metrics"}}' \
           'secretEnv={"MESH_NATS_PASSWORD":{"secretName":"s"}}' 'roles={"user":{"hashThreads":0}}' \
           'roles={"edge":{"pdb":{"enabled":true,"unhealthyPodEvictionPolicy":"Never"}}}'; do
  if refusal="$(quiet_helm template x "$CHART" "${base[@]}" --set-json "$bad" 2>&1)" ||
     ! grep -q "schema" <<<"$refusal"; then
    echo "chart: FAIL: values.schema.json accepted $bad" >&2; exit 1
  fi
done
echo "chart: values.schema.json refuses bad values" >&2

# The chart refuses what it cannot deploy safely, saying what to set instead.
refuses() {  # refuses WHAT EXPECTED-TEXT HELM-ARGS...
  local what="$1" expect="$2" refusal; shift 2
  if refusal="$(quiet_helm template x "$CHART" "${base[@]}" "$@" 2>&1)"; then
    echo "chart: FAIL: rendered $what" >&2; exit 1
  fi
  grep -qF -- "$expect" <<<"$refusal" || { echo "chart: FAIL: unclear refusal of $what: $refusal" >&2; exit 1; }
}
refuses "an Ingress without trusted proxies" 'edge.trustedProxies' --set ingress.enabled=true
quiet_helm template x "$CHART" "${base[@]}" --set ingress.enabled=true \
  --set ingress.unsafeSharedClientAddress=true >/dev/null
refuses "MESH_TRUSTED_PROXIES in env" 'edge.trustedProxies' --set env.MESH_TRUSTED_PROXIES=10.0.0.0/8
refuses "MESH_FORWARDED_HEADER in env" 'edge.forwardedHeader' --set env.MESH_FORWARDED_HEADER=forwarded
refuses "a NATS password in the ConfigMap" 'secretEnv.MESH_NATS_PASSWORD' --set nats.env.MESH_NATS_PASSWORD=pw
refuses "a NATS URL with credentials in the ConfigMap" 'secretEnv.MESH_NATS_URL' --set nats.url=nats://u:pw@nats:4222
for where in roles.edge.env all.env; do
  refuses "a NATS URL with credentials in $where" 'secretEnv.MESH_NATS_URL' \
    --set "$where.MESH_NATS_URL=nats://u:pw@nats:4222"
done
refuses "every role's NATS logins in every pod" 'nats.roleCredentials' \
  --set nats.env.MESH_NATS_ROLE_CREDENTIALS=/etc/mesh/nats/role-credentials
refuses "a database URL outside the per-role Secret" 'database.' --set roles.edge.env.MESH_DATABASE_URL=postgres://h/db
refuses "a user pod whose memory limit the hash pool exceeds" 'hashThreads' \
  --set mode=roles --set roles.user.resources.limits.memory=160Mi
# 8 chat pods + 2 new + 2 old while rolling, 8 connections each, beside the other roles: over a
# stock Postgres.
refuses "more Postgres connections than the budget" 'database.connectionBudget is 97, but this release may hold' \
  --set mode=roles --set roles.chat.replicas=8
refuses "an HPA that may outgrow the budget" '16 chat pods x 8' \
  --set mode=roles --set roles.chat.autoscaling.enabled=true --set roles.chat.autoscaling.maxReplicas=11
quiet_helm template x "$CHART" "${base[@]}" --set mode=roles --set roles.chat.replicas=8 \
  --set database.connectionBudget=0 >/dev/null
refuses "MESH_DB_MAX_CONNECTIONS in a role's env" 'databaseConnections' \
  --set roles.chat.env.MESH_DB_MAX_CONNECTIONS=50
echo "chart: refuses Ingress without trusted proxies, secrets in plain env, chart-owned settings in env, a too small hash pool limit, more Postgres connections than the budget" >&2

# A PodDisruptionBudget that keeps every pod (replicas, or the HPA's minReplicas) lets no node
# drain evict one: refused, naming the values; one that leaves a pod free renders.
refuses "a PDB keeping both edge pods" 'roles.edge.pdb.minAvailable (2) must stay below roles.edge.replicas (2)' \
  --set mode=roles --set roles.edge.pdb.minAvailable=2
refuses "a PDB keeping more pods than there are" 'roles.outbox.pdb.minAvailable (3) must stay below roles.outbox.replicas (2)' \
  --set mode=roles --set roles.outbox.pdb.minAvailable=3
refuses "a PDB on the single \`all\` pod" 'all.pdb.minAvailable (1) must stay below all.replicas (1)' \
  --set all.pdb.enabled=true
# 5 replicas, but the HPA may rest at 2: the budget counts minReplicas.
refuses "a PDB keeping the HPA's minimum" 'roles.chat.pdb.minAvailable (2) must stay below roles.chat.autoscaling.minReplicas (2)' \
  --set mode=roles --set roles.chat.replicas=5 --set roles.chat.pdb.minAvailable=2 \
  --set roles.chat.autoscaling.enabled=true --set roles.chat.autoscaling.minReplicas=2 --set roles.chat.autoscaling.maxReplicas=3
refuses "a PDB of 100%" 'roles.user.pdb.minAvailable (100%, i.e. 2 pods) must stay below roles.user.replicas (2)' \
  --set mode=roles --set-string roles.user.pdb.minAvailable=100%
refuses "a PDB of 50% of one pod (rounded up: the pod)" 'all.pdb.minAvailable (50%, i.e. 1 pod) must stay below all.replicas (1)' \
  --set all.pdb.enabled=true --set-string all.pdb.minAvailable=50%
refuses "a PDB minAvailable that is neither a number nor a percentage" 'must be a whole number of pods or a percentage' \
  --set mode=roles --set-string roles.social.pdb.minAvailable=most --skip-schema-validation
for allowed in "--set roles.edge.pdb.minAvailable=1" "--set-string roles.edge.pdb.minAvailable=50%" \
               "--set roles.edge.replicas=3 --set roles.edge.pdb.minAvailable=2" \
               "--set roles.edge.pdb.enabled=false --set roles.edge.pdb.minAvailable=2" \
               "--set roles.edge.replicas=0"; do
  # shellcheck disable=SC2086  # one word per flag and value
  quiet_helm template x "$CHART" "${base[@]}" --set mode=roles $allowed >/dev/null ||
    { echo "chart: FAIL: refused a PDB that leaves a pod to evict ($allowed)" >&2; exit 1; }
done
quiet_helm template x "$CHART" "${base[@]}" --set all.pdb.enabled=true --set all.replicas=2 \
  --set all.databaseConnections=4 >/dev/null
echo "chart: refuses PodDisruptionBudgets that keep every pod (replicas, HPA minReplicas, 100% or rounded-up percentages); allows the rest" >&2

# NetworkPolicy values that would cut the release off from what it needs.
refuses "a ServiceMonitor while the metrics ports admit this namespace only" 'needs networkPolicy.metrics.from' \
  --set metrics.serviceMonitor.enabled=true
quiet_helm template x "$CHART" "${base[@]}" --set metrics.serviceMonitor.enabled=true \
  --set networkPolicy.enabled=false >/dev/null
refuses "a trace endpoint behind restricted egress" 'networkPolicy.egress.otlp.enabled=true' \
  --set networkPolicy.egress.enabled=true --set mode=roles --set roles.chat.env.OTEL_EXPORTER_OTLP_ENDPOINT=http://otel:4318
refuses "an egress rule without ports" 'networkPolicy.egress.nats.ports is empty' \
  --set networkPolicy.egress.enabled=true --set-json 'networkPolicy.egress.nats.ports=[]' --skip-schema-validation
echo "chart: refuses a ServiceMonitor without metrics peers, a trace endpoint or a port-less rule behind restricted egress" >&2

echo "== chart checks" >&2
mkdir -p "$out/core"
"$PY" scripts/chart_checks.py --alerts observability/alerts/mesh-alerts.yaml --out "$out/core" "$out"/*.yaml
# Deployment safety of every rendered value set (plus mode roles with an Ingress and console off).
roles_ingress=(-f "$CHART/ci/all-in-one-values.yaml" --set mode=roles --set edge.console.enabled=false)
quiet_helm template "nats-mesh" "$CHART" --namespace chat "${roles_ingress[@]}" >"$out/roles-ingress.yaml"
# The total the chart's own budget check computes for each value set (it names it when refusing
# a budget of 1), to compare with the one recomputed below from the manifests and the code.
mkdir -p "$out/budget"
for values in "$CHART"/ci/*-values.yaml roles-ingress; do
  if [[ "$values" == roles-ingress ]]; then name=roles-ingress; args=("${roles_ingress[@]}")
  else name="$(basename "$values" -values.yaml)"; args=(-f "$values"); fi
  refusal="$(quiet_helm template x "$CHART" "${args[@]}" --set database.connectionBudget=1 2>&1 || true)"
  sed -n 's/.*this release may hold \([0-9]*\) Postgres connections.*/\1/p' <<<"$refusal" >"$out/budget/$name.yaml"
done
BUDGETS="$out/budget" "$PY" - "$out"/*.yaml <<'PY'
import os, re, sys, yaml
sys.path.insert(0, "scripts")
from meshtest import POOLS, pod_connections

# The edge's own routes (edge/src/lib.rs): `/` nests the OpenAPI service, all of it under /v1.
lib = open("edge/src/lib.rs").read()
tops = {p.split("/")[1] for p in re.findall(r'\.(?:at|nest)\(\s*"(/[^"]*)"', lib)} - {""}
INTERNAL = {"metrics", "healthz", "readyz"}
if not INTERNAL <= tops or "v1" not in tops:
    sys.exit(f"chart: FAIL: cannot read the edge's routes from edge/src/lib.rs: {sorted(tops)}")
PUBLIC = tops - INTERNAL
DB = {"MESH_DATABASE_URL", "MESH_USER_DATABASE_URL", "MESH_SOCIAL_DATABASE_URL", "MESH_CHAT_DATABASE_URL"}
DB_OF = {"edge": set(), "user": {"MESH_USER_DATABASE_URL"}, "social": {"MESH_SOCIAL_DATABASE_URL"},
         "chat": {"MESH_CHAT_DATABASE_URL"}, "outbox": DB, "all": DB, "migrate": DB}
problems = []

DEFAULTS = yaml.safe_load(open("helm/nats-mesh/values.yaml"))
VALUES_OF = {"roles-ingress.yaml": "all-in-one"}  # rendered from another set's values

def budget_of(name):
    """database.connectionBudget of a rendered value set."""
    stem = VALUES_OF.get(name, name.removesuffix(".yaml"))
    given = yaml.safe_load(open(f"helm/nats-mesh/ci/{stem}-values.yaml")).get("database") or {}
    return given.get("connectionBudget", DEFAULTS["database"]["connectionBudget"])

def reaches(path, kind, url):
    """Whether an Ingress path of this pathType routes `url` (Prefix: whole segments)."""
    if kind == "Exact":
        return url == path
    path = path.rstrip("/")
    return path == "" or url == path or url.startswith(path + "/")

def mebibytes(q):
    m = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    f = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    return float(m.group(1)) * f[m.group(2)] / 2**20

for path in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    name = path.rsplit("/", 1)[-1]
    ingress = [d for d in docs if d["kind"] == "Ingress"]
    console = None
    # The most Postgres connections the release may hold: each Deployment at its HPA's
    # maxReplicas (else replicas) plus what a rolling update adds, its pools full; the Job.
    most = {d["spec"]["scaleTargetRef"]["name"]: d["spec"]["maxReplicas"]
            for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    connections = []
    for d in docs:
        if d["kind"] == "ConfigMap" and "MESH_DB_MAX_CONNECTIONS" in (d.get("data") or {}):
            problems.append(f"{name} ConfigMap/{d['metadata']['name']}: MESH_DB_MAX_CONNECTIONS belongs to each Deployment")
        if d["kind"] not in ("Deployment", "Job"):
            continue
        component = d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        (c,) = d["spec"]["template"]["spec"]["containers"]
        size = {e["name"]: e.get("value") for e in c.get("env") or []}.get("MESH_DB_MAX_CONNECTIONS")
        if d["kind"] == "Job":
            connections.append(int(size))
            continue
        if POOLS[component] == 0:
            continue
        if size is None:
            problems.append(f"{name} Deployment/{d['metadata']['name']}: MESH_DB_MAX_CONNECTIONS not set")
            continue
        if "strategy" in d["spec"]:
            problems.append(f"{name} Deployment/{d['metadata']['name']}: a strategy this check does not count")
        pods = most.get(d["metadata"]["name"], d["spec"].get("replicas", 1))
        # A rolling update adds 25% new pods (rounded up) while 25% of the old ones (rounded
        # down) may still be stopping.
        pods += -(-pods // 4) + pods // 4
        connections.append(pods * pod_connections(component, size))
    budget = budget_of(name)
    with open(os.path.join(os.environ["BUDGETS"], name)) as f:
        charted = f.read().strip()
    if charted != str(sum(connections)):
        problems.append(f"{name}: the chart's budget check counts {charted or 'nothing'}, the manifests "
                        f"and src/roles.rs give {sum(connections)}")
    if budget and sum(connections) > budget:
        problems.append(f"{name}: may hold {sum(connections)} Postgres connections ({connections}), budget {budget}")
    print(f"chart: {name}: at most {sum(connections)} Postgres connections, budget {budget}", file=sys.stderr)
    for d in docs:
        kind, where = d["kind"], f"{name} {d['kind']}/{d['metadata']['name']}"
        if kind == "PodDisruptionBudget" and d["spec"].get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
            problems.append(f"{where}: unready pods block node drains (unhealthyPodEvictionPolicy)")
        if kind not in ("Deployment", "Job"):
            continue
        component = d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        (c,) = d["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in c.get("env") or []}
        db_secrets = {env[n]["valueFrom"]["secretKeyRef"]["name"] for n in DB & set(env) if "valueFrom" in env[n]}
        whole = {src["secretRef"]["name"] for src in c.get("envFrom") or [] if "secretRef" in src}
        if whole & db_secrets or any(n.endswith("-database") or n.endswith("-migrate") for n in whole):
            problems.append(f"{where}: takes the whole database Secret into its environment (envFrom)")
        got = DB & set(env)
        if got != DB_OF[component]:
            problems.append(f"{where}: database URLs {sorted(got)}, its role reads {sorted(DB_OF[component])}")
        if any("value" in env[n] for n in got):
            problems.append(f"{where}: a database URL in plain text")
        if kind == "Job":
            continue
        ready = c["readinessProbe"]["httpGet"]["path"]
        want = "/readyz?exclude=services" if component in ("edge", "all") else "/readyz"
        if ready != want:
            problems.append(f"{where}: readiness probe {ready}, expected {want}")
        if component in ("edge", "all"):
            console = env.get("MESH_CONSOLE_PATH", {}).get("value")
            if ingress and not env.get("MESH_TRUSTED_PROXIES", {}).get("value"):
                problems.append(f"{where}: behind the Ingress without MESH_TRUSTED_PROXIES")
        if component in ("user", "all"):
            threads = env.get("MESH_USER_HASH_THREADS", {}).get("value")
            limit = (c["resources"].get("limits") or {}).get("memory")
            if not threads:
                problems.append(f"{where}: MESH_USER_HASH_THREADS not set (the binary sizes its pool by the node)")
            elif limit and mebibytes(limit) < int(threads) * 19 + (256 if component == "all" else 128):
                problems.append(f"{where}: {threads} hash threads x 19Mi do not fit the {limit} limit")
    for d in ingress:
        where = f"{name} Ingress/{d['metadata']['name']}"
        for rule in d["spec"]["rules"]:
            paths = [(p["path"], p["pathType"]) for p in rule["http"]["paths"]]
            for p, kind in paths:
                for internal in INTERNAL:
                    if reaches(p, kind, f"/{internal}"):
                        problems.append(f"{where}: {p} ({kind}) exposes /{internal}")
            wanted = {f"/{t}" for t in PUBLIC} | ({console} if console and console != "off" else set())
            for url in sorted(wanted):
                if not any(reaches(p, kind, url) for p, kind in paths):
                    problems.append(f"{where}: the public {url} is not routed")
            if console and console != "off" and not any(reaches(p, k, console + "/") for p, k in paths):
                problems.append(f"{where}: the console's pages under {console}/ are not routed")
if problems:
    sys.exit("chart: FAIL:\n  " + "\n  ".join(problems))
print(f"chart: Ingress routes only the public {sorted(PUBLIC)} (+ console); edge readiness, PDBs, "
      "hash pool, per-role database URLs, Postgres connections within the budget checked", file=sys.stderr)
PY

echo "== NetworkPolicies" >&2
# Renders with the defaults and with peers, ports and egress set, checked against what the
# values ask for; chart_checks.py then checks each against its pods (one policy each, the
# declared ports only) and kubernetes-validate below against the API's schema.
mkdir -p "$out/netpol"
ingress_peer='{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"ingress-nginx"}}}'
prometheus_peer='{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}},"podSelector":{"matchLabels":{"app.kubernetes.io/name":"prometheus"}}}'
nats_peer='{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"nats"}}}'
db_peer='{"ipBlock":{"cidr":"10.0.12.0/24"}}'
otlp_peer='{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"observability"}}}'
extra_rule='{"to":[{"ipBlock":{"cidr":"192.0.2.0/24"}}],"ports":[{"port":443,"protocol":"TCP"}]}'
np_render() {  # np_render NAME HELM-ARGS...
  local name="$1"; shift
  quiet_helm template np "$CHART" --namespace chat "${base[@]}" "$@" >"$out/netpol/$name.yaml"
}
np_render default-all
np_render default-roles --set mode=roles
np_render peers --set mode=roles --set ports.http=8081 --set ports.metrics=9200 \
  --set-json "networkPolicy.http.from=[$ingress_peer]" --set-json "networkPolicy.metrics.from=[$prometheus_peer]"
np_render peers-all --set-json "networkPolicy.http.from=[$ingress_peer]"
np_render egress --set mode=roles --set networkPolicy.egress.enabled=true \
  --set-json "networkPolicy.egress.nats.to=[$nats_peer]" --set-json "networkPolicy.egress.postgres.to=[$db_peer]" \
  --set networkPolicy.egress.otlp.enabled=true --set-json "networkPolicy.egress.otlp.to=[$otlp_peer]" \
  --set-json "networkPolicy.egress.extra=[$extra_rule]"
np_render egress-any-address --set networkPolicy.egress.enabled=true
np_render off --set mode=roles --set networkPolicy.enabled=false
np_render no-migration --set migration.enabled=false
PEERS="{\"ingress\":$ingress_peer,\"prometheus\":$prometheus_peer,\"nats\":$nats_peer,\"db\":$db_peer,\"otlp\":$otlp_peer,\"extra\":$extra_rule}" \
  "$PY" - "$out/netpol" <<'PY'
import json, os, sys, yaml
d = sys.argv[1]
P = json.loads(os.environ["PEERS"])
problems = []

def render(name):
    docs = [x for x in yaml.safe_load_all(open(f"{d}/{name}.yaml")) if x]
    pols = {p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]: p
            for p in docs if p["kind"] == "NetworkPolicy"}
    pods = {w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: w
            for w in docs if w["kind"] in ("Deployment", "Job")}
    return pols, pods

def expect(name, got, want):
    if got != want:
        problems.append(f"{name}: {json.dumps(got)}, expected {json.dumps(want)}")

def tcp(*ports):
    return [{"port": p, "protocol": "TCP"} for p in ports]

NAMESPACE = [{"podSelector": {}}]
DNS = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
WORKERS = ("user", "social", "chat", "outbox")
for name, components in (("default-all", ["all"]), ("default-roles", ["edge", *WORKERS]),
                         ("peers", ["edge", *WORKERS]), ("peers-all", ["all"]),
                         ("egress", ["edge", *WORKERS]), ("egress-any-address", ["all"]),
                         ("no-migration", ["all"])):
    pols, pods = render(name)
    migrate = [] if name == "no-migration" else ["migrate"]
    expect(f"{name}: policies", sorted(pols), sorted(components + migrate))
    for c, pol in pols.items():
        where = f"{name} NetworkPolicy/{pol['metadata']['name']}"
        spec = pol["spec"]
        # The policy selects exactly its workload's pods: the Deployment's own selector (the
        # Job's pod labels), as mesh.selectorLabels writes it.
        w = pods.get(c)
        sel = (w["spec"]["selector"]["matchLabels"] if w and w["kind"] == "Deployment"
               else w and w["spec"]["template"]["metadata"]["labels"])
        expect(f"{where} podSelector", spec["podSelector"], {"matchLabels": sel})
        egress = name.startswith("egress")
        expect(f"{where} policyTypes", spec["policyTypes"], ["Ingress", "Egress"] if egress else ["Ingress"])
        http, metrics = (8081, 9200) if name == "peers" else (8080, 9100)
        scrapers = [P["prometheus"]] if name == "peers" else NAMESPACE
        if c == "migrate":
            want = []
        elif c in ("edge", "all"):
            rule = {"ports": tcp(http)}
            if name.startswith("peers"):
                rule["from"] = [P["ingress"]] + scrapers
            want = [rule]
        else:
            want = [{"ports": tcp(metrics), "from": scrapers}]
        expect(f"{where} ingress", spec["ingress"], want)
        if name == "egress":
            want = [DNS, {"ports": tcp(4222), "to": [P["nats"]]}]
            if c != "edge":
                want.append({"ports": tcp(5432), "to": [P["db"]]})
            want += [{"ports": tcp(4318), "to": [P["otlp"]]}, P["extra"]]
            expect(f"{where} egress", spec["egress"], want)
        elif name == "egress-any-address":
            expect(f"{where} egress", spec["egress"], [DNS, {"ports": tcp(4222)}, {"ports": tcp(5432)}])
        else:
            expect(f"{where} egress", spec.get("egress"), None)
pols, pods = render("off")
expect("off: policies", sorted(pols), [])
expect("off: workloads", sorted(pods), ["chat", "edge", "migrate", "outbox", "social", "user"])
if problems:
    sys.exit("chart: FAIL:\n  " + "\n  ".join(problems))
print("chart: NetworkPolicies select each component's pods and admit the edge's HTTP port (from anyone, "
      "or the given peers), the metrics ports from the metrics peers, the Job nothing; egress DNS, "
      "NATS, Postgres (not the edge), OTLP and extra rules; none with networkPolicy.enabled=false", file=sys.stderr)
PY
rm "$out/netpol/off.yaml"
"$PY" scripts/chart_checks.py --alerts observability/alerts/mesh-alerts.yaml --out "$out/core" "$out"/netpol/*.yaml

echo "== kubernetes-validate --strict" >&2
"$VENV/bin/kubernetes-validate" --strict --quiet "$out"/core/*.yaml
echo "chart: every rendered manifest passes kubernetes-validate --strict" >&2

echo "== chart wiring" >&2
for mode in all roles; do
  db="$(fresh_database)"
  dbs+=("$db")
  MESH_DATABASE_URL="$db" "$PY" scripts/chart_wiring.py --helm "$HELM" --chart "$CHART" \
    --mesh "$MESH" --mode "$mode" 2> >(grep -v 'found symbolic link' >&2)
done
echo "chart: all checks passed" >&2
