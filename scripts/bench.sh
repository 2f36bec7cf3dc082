#!/usr/bin/env bash
# bench.sh: measure the mesh on this machine. Builds `mesh` and `loadgen` in release mode,
# starts NATS and Postgres (scripts/services.sh), runs a release `mesh all` of its own, runs
# `loadgen all` against it, stops what it started and leaves the results in bench/.
#
# Usage: scripts/bench.sh [loadgen all options...]   e.g. scripts/bench.sh --seconds 30
#
# Settings (environment):
#   MESH_BENCH_ADDR          where the benchmarked edge listens   (default 127.0.0.1:18080)
#   MESH_BENCH_PREFIX        its NATS prefix                      (default bench)
#   MESH_BENCH_DATABASE_URL  its Postgres                         (default: database mesh_bench
#                            next to the one services.sh prints, created when missing)
#   Other MESH_* variables (e.g. MESH_DB_MAX_CONNECTIONS, RUST_LOG) pass through to the mesh.
#
# The mesh's log goes to .local/log/bench-mesh.log; results are appended to
# bench/results.md and bench/results.json (see bench/README.md).
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

addr="${MESH_BENCH_ADDR:-127.0.0.1:18080}"
mesh_log=.local/log/bench-mesh.log
mesh_pid=""
services_started=0

cleanup() {
  local status=$?
  if [[ -n "$mesh_pid" ]] && kill -0 "$mesh_pid" 2>/dev/null; then
    log "stopping the mesh (pid $mesh_pid)"
    kill -TERM "$mesh_pid" 2>/dev/null || true
    for _ in $(seq 1 75); do kill -0 "$mesh_pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$mesh_pid" 2>/dev/null; then
      log "the mesh did not stop after SIGTERM; sending SIGKILL"
      kill -KILL "$mesh_pid" 2>/dev/null || true
    fi
    wait "$mesh_pid" 2>/dev/null || true
  fi
  if ((services_started)); then
    scripts/services.sh down || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every socket is a file descriptor, in the mesh and in the load generator.
hard="$(ulimit -Hn)"
[[ "$hard" == unlimited ]] && hard=1048576
ulimit -n "$hard" || log "could not raise the open-files limit (now $(ulimit -n))"
(($(ulimit -n) >= 8192)) || log "warning: only $(ulimit -n) open files allowed; the idle scenario needs more"

log "building mesh and loadgen (release)"
cargo build --locked --release -p nats-mesh --bin mesh -p mesh-loadgen --bin loadgen

# Stop NATS and Postgres at the end only if this script is what starts them.
scripts/services.sh status >/dev/null 2>&1 || services_started=1
service_env="$(scripts/services.sh up)"   # a failing start stops here
eval "$service_env"

# The benchmark gets its own database, so its users and messages stay apart from development.
db_url="${MESH_BENCH_DATABASE_URL:-}"
if [[ -z "$db_url" ]]; then
  db_url="${MESH_DATABASE_URL%/*}/mesh_bench"
  psql="$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -n 1 || true)"
  [[ -n "$psql" ]] || die "psql not found; set MESH_BENCH_DATABASE_URL"
  if [[ "$("$psql" "$MESH_DATABASE_URL" -tAqc "select 1 from pg_database where datname = 'mesh_bench'")" != 1 ]]; then
    log "creating database mesh_bench"
    "$psql" "$MESH_DATABASE_URL" -qc "create database mesh_bench" >&2
  fi
fi
pg_show() { "${psql:-psql}" "$db_url" -tAqc "show $1" 2>/dev/null || echo '?'; }
durability="fsync=$(pg_show fsync) synchronous_commit=$(pg_show synchronous_commit)"

keys=.local/keys
if [[ ! -f "$keys/jwt_ed25519.pem" ]]; then
  ./target/release/mesh keygen --out "$keys" >/dev/null
  log "generated a development JWT key pair in $keys"
fi
export MESH_JWT_PRIVATE_KEY="${MESH_JWT_PRIVATE_KEY:-$keys/jwt_ed25519.pem}"
export MESH_JWT_PUBLIC_KEY="${MESH_JWT_PUBLIC_KEY:-$keys/jwt_ed25519.pub.pem}"
export MESH_HTTP_ADDR="$addr"
export MESH_PREFIX="${MESH_BENCH_PREFIX:-bench}"
export MESH_DATABASE_URL="$db_url"

port="${addr##*:}"
if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
  die "something already listens on $addr; stop it or set MESH_BENCH_ADDR"
fi

mkdir -p "$(dirname "$mesh_log")" bench
# Streams and buckets are created by the migrate identity; serving roles only bind to them.
./target/release/mesh migrate >>"$mesh_log" 2>&1 || { tail -n 20 "$mesh_log" >&2; die "mesh migrate failed"; }
log "starting the mesh on $addr (prefix $MESH_PREFIX, log $mesh_log)"
./target/release/mesh all >"$mesh_log" 2>&1 &
mesh_pid=$!
for _ in $(seq 1 300); do
  kill -0 "$mesh_pid" 2>/dev/null || { tail -n 20 "$mesh_log" >&2; die "the mesh exited during startup"; }
  curl -fsS --max-time 1 -o /dev/null "http://$addr/readyz" 2>/dev/null && break
  sleep 0.2
done
curl -fsS --max-time 2 -o /dev/null "http://$addr/readyz" || die "the mesh was not ready within 60 s (see $mesh_log)"
log "mesh ready (pid $mesh_pid)"

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
note="commit $commit · release build · Postgres $durability · open files $(ulimit -n)"

./target/release/loadgen all --url "http://$addr" --pid "$mesh_pid" --note "$note" "$@"
log "results appended to bench/results.md and bench/results.json"
