#!/usr/bin/env bash
# observe-test.sh: verifies the alert rules and the Grafana dashboards.
#   1. `promtool check rules` and `promtool test rules` (a unit test per alert) on
#      observability/alerts;
#   2. observe_dashboards.py: alert and panel queries use only metrics the mesh exports; then a
#      real Prometheus scrapes `mesh all` under traffic and every panel's query returns data.
# Needs MESH_NATS_URL and MESH_DATABASE_URL (scripts/services.sh up); starts them when unset.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
source scripts/deploy-tools.sh

ensure_services
ensure_prometheus
ensure_venv
MESH="$(mesh_binary)"

echo "== promtool" >&2
promtool check rules observability/alerts/mesh-alerts.yaml >&2
(cd observability/alerts && promtool test rules mesh-alerts.test.yaml) >&2

echo "== dashboards against a real Prometheus" >&2
db="$(fresh_database)"
trap 'drop_database "$db"' EXIT
MESH_DATABASE_URL="$db" "$PY" scripts/observe_dashboards.py --mesh "$MESH" --prometheus "$(command -v prometheus)"
echo "observe: all checks passed" >&2
