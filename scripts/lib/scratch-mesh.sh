# scratch-mesh.sh: sourced by scripts that drive a `mesh all` of their own (schemathesis, the
# login storm). `start_scratch_mesh NAME BIN` creates a fresh database and JWT keys, exports the
# mesh's settings (plus whatever MESH_* the caller exported before), runs `mesh migrate`, starts
# `mesh all` on a free port and waits until it is ready; it sets `base` to the mesh's URL and
# removes the process, the database and the scratch directory on exit.
# Needs MESH_NATS_URL and MESH_DATABASE_URL (scripts/services.sh up).

start_scratch_mesh() {
  local name="$1" mesh="$2"
  scratch_work="$(mktemp -d)"
  scratch_db="${name}_$(date +%s)_$$"
  scratch_admin_url="$MESH_DATABASE_URL"
  scratch_pid=""
  psql "$scratch_admin_url" -qc "CREATE DATABASE $scratch_db" >/dev/null
  trap stop_scratch_mesh EXIT
  "$mesh" keygen --out "$scratch_work/keys" >/dev/null
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  export MESH_DATABASE_URL="${scratch_admin_url%/*}/$scratch_db" MESH_PREFIX="$name$$"
  export MESH_HTTP_ADDR="127.0.0.1:$port" MESH_METRICS_ADDR="127.0.0.1:0"
  export MESH_JWT_PRIVATE_KEY="$scratch_work/keys/jwt_ed25519.pem"
  export MESH_JWT_PUBLIC_KEY="$scratch_work/keys/jwt_ed25519.pub.pem"
  export RUST_LOG="${RUST_LOG:-error}"
  "$mesh" migrate >/dev/null
  "$mesh" all >"$scratch_work/mesh.log" 2>&1 &
  scratch_pid=$!
  base="http://$MESH_HTTP_ADDR"
  local _
  for _ in $(seq 1 200); do
    curl -fs "$base/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$scratch_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "the scratch mesh did not become ready; its log:" >&2
  tail -n 30 "$scratch_work/mesh.log" >&2
  return 1
}

stop_scratch_mesh() {
  [[ -n "${scratch_pid:-}" ]] && kill "$scratch_pid" 2>/dev/null && wait "$scratch_pid" 2>/dev/null
  psql "$scratch_admin_url" -qc "DROP DATABASE IF EXISTS $scratch_db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$scratch_work"
}
