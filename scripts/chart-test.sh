#!/usr/bin/env bash
# chart-test.sh: verifies the Helm chart helm/nats-mesh offline, with a real helm v4.
#   1. `helm lint --strict`, `helm template` and a client-side dry-run install (NOTES.txt) for
#      each value set in helm/nats-mesh/ci/
#      (all-in-one; per-role scaled with HPAs; ServiceMonitor + PrometheusRule), and that the
#      chart refuses to render without a database URL and a JWT key pair;
#   2. chart_checks.py: non-root, read-only root filesystem, probes, resources, HPA/PDB targets,
#      PrometheusRule == observability/alerts, ServiceMonitor ports;
#   3. `kubernetes-validate --strict` on every rendered manifest (the CRD kinds ServiceMonitor
#      and PrometheusRule have no bundled schema and are left out; step 2 checks them);
#   4. chart_wiring.py for mode "all" and mode "roles": the rendered containers run as local
#      processes against the test NATS and Postgres (probes, migration hook, a chat message).
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
           'ingress={"hosts":[{"host":"a","paths":[{"path":"/","pathType":"Any"}]}]}'; do
  if refusal="$(quiet_helm template x "$CHART" "${base[@]}" --set-json "$bad" 2>&1)" ||
     ! grep -q "schema" <<<"$refusal"; then
    echo "chart: FAIL: values.schema.json accepted $bad" >&2; exit 1
  fi
done
echo "chart: values.schema.json refuses bad values" >&2

echo "== chart checks" >&2
mkdir -p "$out/core"
"$PY" scripts/chart_checks.py --alerts observability/alerts/mesh-alerts.yaml --out "$out/core" "$out"/*.yaml

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
