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
mesh="${CARGO_TARGET_DIR:-target}/debug/mesh"
work="$(mktemp -d)"
db="schema_$(date +%s)_$$"
psql "$MESH_DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
pid=""
cleanup() {
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  psql "$MESH_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"$mesh" keygen --out "$work/keys" >/dev/null
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export MESH_DATABASE_URL="${MESH_DATABASE_URL%/*}/$db"
export MESH_PREFIX="schema$$" MESH_HTTP_ADDR="127.0.0.1:$port"
export MESH_METRICS_ADDR="127.0.0.1:0"
export MESH_JWT_PRIVATE_KEY="$work/keys/jwt_ed25519.pem" MESH_JWT_PUBLIC_KEY="$work/keys/jwt_ed25519.pub.pem"
# The fuzzer is one client: lift the limits it would otherwise (rightly) hit.
export MESH_RATE_AUTH_IP=100000/1s MESH_RATE_WRITE_IP=100000/1s MESH_RATE_WRITE_USER=100000/1s
export MESH_RATE_READ_IP=100000/1s MESH_RATE_READ_USER=100000/1s MESH_RATE_CHAT_SENDS=100000/1s
export MESH_LOGIN_LOCK_AFTER=100000 MESH_LOGIN_IP_LOCK_AFTER=100000 MESH_LOGIN_DELAY_AFTER=100000
export RUST_LOG="${RUST_LOG:-error}"
"$mesh" migrate >/dev/null
"$mesh" all >"$work/mesh.log" 2>&1 &
pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 200); do
  curl -fs "$base/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "$base/readyz" >/dev/null

# A signed-in user for each pass: the second pass ends its session (logout, logout-all, revoke),
# which would make every later request of the first pass a 401.
token() {
  local phone="+1555$(printf '%07d' $((RANDOM * RANDOM % 10000000)))"
  curl -fs -H 'content-type: application/json' "$base/v1/auth/register" \
    -d "{\"phone\":\"$phone\",\"password\":\"schemathesis-pass\",\"nickname\":\"St\"}" >/dev/null
  curl -fs -H 'content-type: application/json' "$base/v1/auth/login" \
    -d "{\"phone\":\"$phone\",\"password\":\"schemathesis-pass\"}" |
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
