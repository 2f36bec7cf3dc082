#!/usr/bin/env bash
# login-storm.sh: other users' sign-in latency idle and during a 300-guess storm from one
# address (bench/login_storm.py), against a `mesh all` of this script with limits and locks
# lifted, so the fairness of the password-hashing pool is what is measured.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

eval "$(scripts/services.sh up)"
# STORM_PROFILE=dev skips the release build (hashing is optimised in every profile).
profile="${STORM_PROFILE:-release}"
cargo build --profile "$profile" --locked --bin mesh
dir="$profile"; [[ "$profile" == dev ]] && dir=debug
mesh="${CARGO_TARGET_DIR:-target}/$dir/mesh"
work="$(mktemp -d)"
db="storm_$(date +%s)_$$"
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
export MESH_DATABASE_URL="${MESH_DATABASE_URL%/*}/$db" MESH_PREFIX="storm$$"
export MESH_HTTP_ADDR="127.0.0.1:$port" MESH_METRICS_ADDR="127.0.0.1:0"
export MESH_JWT_PRIVATE_KEY="$work/keys/jwt_ed25519.pem" MESH_JWT_PUBLIC_KEY="$work/keys/jwt_ed25519.pub.pem"
export MESH_TRUSTED_PROXIES=127.0.0.1/32 MESH_RATE_AUTH_IP=100000/1s
export MESH_LOGIN_LOCK_AFTER=100000 MESH_LOGIN_IP_LOCK_AFTER=100000 MESH_LOGIN_DELAY_AFTER=100000
export RUST_LOG=error
"$mesh" migrate >/dev/null
"$mesh" all >"$work/mesh.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do curl -fs "http://$MESH_HTTP_ADDR/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
python3 bench/login_storm.py "http://$MESH_HTTP_ADDR" "${GUESSES:-300}"
