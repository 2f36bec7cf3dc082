#!/usr/bin/env bash
# schema-test.sh: schemathesis (PyPI, in a venv under .tools/) against a running mesh, as a
# signed-in user, over every operation of /openapi.json, with the checks not_a_server_error,
# response_schema_conformance and status_code_conformance. Bounded examples keep it short.
# Expects NATS and Postgres from scripts/services.sh (MESH_NATS_URL, MESH_DATABASE_URL).
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

: "${MESH_NATS_URL:?run scripts/services.sh up first}"
: "${MESH_DATABASE_URL:?run scripts/services.sh up first}"
venv=.tools/schemathesis
if [[ ! -x "$venv/bin/st" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==4.32.5"
fi

cargo build --locked --bin mesh
# shellcheck source=scripts/lib/scratch-mesh.sh
source scripts/lib/scratch-mesh.sh
# The fuzzer is one client: lift the limits it would otherwise (rightly) hit.
export MESH_RATE_AUTH_IP=100000/1s MESH_RATE_WRITE_IP=100000/1s MESH_RATE_WRITE_USER=100000/1s
export MESH_RATE_READ_IP=100000/1s MESH_RATE_READ_USER=100000/1s MESH_RATE_CHAT_SENDS=100000/1s
export MESH_LOGIN_LOCK_AFTER=100000 MESH_LOGIN_IP_LOCK_AFTER=100000 MESH_LOGIN_DELAY_AFTER=100000
start_scratch_mesh schema "${CARGO_TARGET_DIR:-target}/debug/mesh"

# A signed-in user for each pass: the second pass ends its session (logout, logout-all, revoke),
# which would make every later request of the first pass a 401.
token() {
  local phone="+1555$(printf '%07d' $((RANDOM * RANDOM % 10000000)))"
  # Registering signs in: its answer carries the access token.
  curl -fs -H 'content-type: application/json' "$base/v1/auth/register" \
    -d "{\"phone\":\"$phone\",\"password\":\"schemathesis-pass\",\"nickname\":\"St\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
run() {
  "$venv/bin/st" run "$base/openapi.json" \
    --checks not_a_server_error,response_schema_conformance,status_code_conformance \
    --header "Authorization: Bearer $(token)" \
    --max-examples "${SCHEMA_TEST_EXAMPLES:-15}" \
    --generation-database none \
    --no-color "$@"
}
run --exclude-operation-id logout --exclude-operation-id logout_all --exclude-operation-id revoke_session
run --include-operation-id logout --include-operation-id logout_all --include-operation-id revoke_session
