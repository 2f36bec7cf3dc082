#!/usr/bin/env bash
# bench.sh: measure the mesh on this machine. Builds `mesh` and `loadgen` in release mode,
# starts NATS and Postgres (scripts/services.sh) and a Matrix Synapse peer
# (scripts/bench-synapse.sh), runs a release `mesh all` of its own with the per-client limits
# lifted, runs `loadgen all` (or one scenario) against it with the pids of the mesh, NATS and
# Postgres, stops what it started and leaves the results in bench/.
#
# Usage: scripts/bench.sh [SCENARIO] [loadgen options...]
#   scripts/bench.sh                          every scenario (loadgen all)
#   scripts/bench.sh --seconds 5 --sizes 200,400   a short run of all
#   scripts/bench.sh throughput --seconds 5   one scenario (throughput, overload, latency,
#                                             fanout, connections, reads, login, baseline,
#                                             peer-throughput, peer-latency)
#
# Settings (environment):
#   MESH_BENCH_ADDR          where the benchmarked edge listens   (default 127.0.0.1:18080)
#   MESH_BENCH_PREFIX        its NATS prefix                      (default bench)
#   MESH_BENCH_DATABASE_URL  its Postgres                         (default: database mesh_bench
#                            next to the one services.sh prints, created when missing)
#   MESH_BENCH_EDGES         edges the connections scenario spreads its sockets over (default
#                            3: the mesh's own and 2 more `mesh edge` on the next ports; one
#                            process may open only `ulimit -Hn` files, 20,000 on some hosts)
#   MESH_BENCH_PEER=off      no Synapse peer (its scenarios are skipped)
#   MESH_BENCH_BUILD=off     use the binaries already built
#   MESH_BENCH_PROFILE       release (default) or debug: which build of mesh and loadgen runs
#                            (debug only checks that the bench works, as
#                            scripts/bench-smoke.sh does in CI; its figures mean nothing)
#   MESH_BENCH_DURABILITY    on (default for release): refuse a Postgres without fsync and
#                            synchronous_commit, as issue #16's targets are set with both on
#                            (the tests start theirs without, MESH_PG_FAST=1); any (default
#                            for debug): measure whatever runs, the heading says which
#   MESH_BENCH_KEEP_MESSAGES=on  keep the messages earlier runs stored (by default each run
#                            starts from an empty history; users, friends and groups stay)
#   CARGO_TARGET_DIR         where the binaries are built and run from
#   Other MESH_* variables (e.g. MESH_DB_MAX_CONNECTIONS, RUST_LOG, MESH_NATS_PORT) pass
#   through to the mesh and scripts/services.sh; the limits below are defaults only.
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
edge_pids=()
services_started=0
synapse_started=0
profile="${MESH_BENCH_PROFILE:-release}"
case "$profile" in
  release) build_flags=(--release) ;;
  debug) build_flags=() ;;
  *) die "MESH_BENCH_PROFILE must be release or debug, not '$profile'" ;;
esac
bin="${CARGO_TARGET_DIR:-target}/$profile"
durability_wanted="${MESH_BENCH_DURABILITY:-$([[ "$profile" == release ]] && echo on || echo any)}"
case "$durability_wanted" in
  on | any) ;;
  *) die "MESH_BENCH_DURABILITY must be on or any, not '$durability_wanted'" ;;
esac

scenario=all
if [[ $# -gt 0 && "$1" != -* ]]; then
  scenario="$1"
  shift
fi

# Stops one mesh process: SIGTERM, then SIGKILL after 15 s.
stop_mesh() {
  local pid="$1" what="$2"
  kill -0 "$pid" 2>/dev/null || return 0
  log "stopping $what (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$what did not stop after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  for pid in "${edge_pids[@]}"; do stop_mesh "$pid" "an extra edge"; done
  [[ -n "$mesh_pid" ]] && stop_mesh "$mesh_pid" "the mesh"
  if ((synapse_started)); then
    scripts/bench-synapse.sh down || true
  fi
  if ((services_started)); then
    scripts/services.sh down || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every socket is a file descriptor, in the mesh and in the load generator: 50,000
# connections need more than 100,000. Root may raise the hard limit up to fs.nr_open.
ulimit -Hn "$(cat /proc/sys/fs/nr_open 2>/dev/null || echo 1048576)" 2>/dev/null || true
hard="$(ulimit -Hn)"
[[ "$hard" == unlimited ]] && hard=1048576
ulimit -n "$hard" || log "could not raise the open-files limit (now $(ulimit -n))"
log "open files per process: $(ulimit -n); the connections scenario spreads its sockets over several processes on each side"

if [[ "${MESH_BENCH_BUILD:-on}" != off ]]; then
  log "building mesh and loadgen ($profile)"
  cargo build --locked "${build_flags[@]}" -p nats-mesh --bin mesh -p mesh-loadgen --bin loadgen
fi

# Stop NATS and Postgres at the end only if this script is what starts them.
scripts/services.sh status >/dev/null 2>&1 || services_started=1
# A Postgres this script starts is durable unless any durability will do.
if [[ "$durability_wanted" == on ]]; then export MESH_PG_FAST=0; fi
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
# The mesh tests' databases (one per test, hundreds after a few runs) keep Postgres's
# autovacuum launcher busy while idle, which every scenario would count as Postgres's CPU.
if [[ -z "${MESH_BENCH_DATABASE_URL:-}" ]]; then scripts/services.sh prune; fi
pg_show() { "${psql:-psql}" "$db_url" -tAqc "show $1" 2>/dev/null || echo '?'; }
durability="fsync=$(pg_show fsync) synchronous_commit=$(pg_show synchronous_commit)"
# A Postgres already running (the tests', say) may have been started without either: its
# figures would not be comparable with the targets, and nothing but the heading would say so.
if [[ "$durability_wanted" == on && "$durability" != "fsync=on synchronous_commit=on" ]]; then
  die "Postgres runs with $durability (started in fast mode, MESH_PG_FAST=1, as the tests do); the targets are set with both on. Run 'scripts/services.sh down' and bench again, or set MESH_BENCH_DURABILITY=any to measure it anyway"
fi

keys=.local/keys
if [[ ! -f "$keys/jwt_ed25519.pem" ]]; then
  "$bin/mesh" keygen --out "$keys" >/dev/null
  log "generated a development JWT key pair in $keys"
fi
export MESH_JWT_PRIVATE_KEY="${MESH_JWT_PRIVATE_KEY:-$keys/jwt_ed25519.pem}"
export MESH_JWT_PUBLIC_KEY="${MESH_JWT_PUBLIC_KEY:-$keys/jwt_ed25519.pub.pem}"
export MESH_HTTP_ADDR="$addr"
export MESH_PREFIX="${MESH_BENCH_PREFIX:-bench}"
admin_db_url="$MESH_DATABASE_URL"
export MESH_DATABASE_URL="$db_url"
export MESH_METRICS_ADDR="${MESH_BENCH_METRICS_ADDR:-127.0.0.1:0}"

# Per-client limits lifted: the bench's clients are few users and addresses sending far more
# than any one person would. The edge's own overload push-back is not a per-client limit and
# stays as configured.
lift() { export "$1=${!1:-$2}"; }
lift MESH_RATE_CHAT_SENDS 10000000/1s
lift MESH_RATE_WS_FRAMES 10000000/1s
lift MESH_WS_FLOOD_CLOSE_AFTER 1000000
lift MESH_RATE_AUTH_IP 10000000/1s
lift MESH_RATE_WRITE_IP 10000000/1s
lift MESH_RATE_WRITE_USER 10000000/1s
lift MESH_RATE_READ_IP 10000000/1s
lift MESH_RATE_READ_USER 10000000/1s
lift MESH_MAX_CONNECTIONS_PER_USER 1000
lift MESH_MAX_CONNECTIONS_PER_IP 1000000
lift MESH_LOGIN_DELAY_AFTER 1000000
lift MESH_LOGIN_LOCK_AFTER 1000000
lift MESH_LOGIN_IP_LOCK_AFTER 1000000
# The bench administrator lifts the plan limits (messages per day, group size...) of the
# users that send and own groups: the mesh makes this phone an admin when it registers.
export LOADGEN_ADMIN_PHONE="${LOADGEN_ADMIN_PHONE:-+15550000001}"
export MESH_BOOTSTRAP_ADMINS="${MESH_BOOTSTRAP_ADMINS:+$MESH_BOOTSTRAP_ADMINS,}$LOADGEN_ADMIN_PHONE"

port="${addr##*:}"
host="${addr%:*}"
listening() { timeout 2 bash -c "exec 3<>/dev/tcp/$host/$1" 2>/dev/null; }
listening "$port" && die "something already listens on $addr; stop it or set MESH_BENCH_ADDR"

# Waits until the edge at $1 answers /readyz while process $2 lives.
await_ready() {
  local url="$1" pid="$2" log_file="$3"
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log_file" >&2; die "pid $pid exited during startup"; }
    curl -fsS --max-time 1 -o /dev/null "$url/readyz" 2>/dev/null && return 0
    sleep 0.2
  done
  curl -fsS --max-time 2 -o /dev/null "$url/readyz" || die "$url was not ready within 60 s (see $log_file)"
}

mkdir -p "$(dirname "$mesh_log")" bench
# Streams and buckets are created by the migrate identity; serving roles only bind to them.
"$bin/mesh" migrate >>"$mesh_log" 2>&1 || { tail -n 20 "$mesh_log" >&2; die "mesh migrate failed"; }
# Each run starts from an empty message history. Kept, a full run's half a million to two
# million messages a time filled the disk (17 GB, 24 million rows by 2026-12-06, when a CI
# run on the same disk failed for lack of space), and each run measured a bigger table than
# the one before. The users, friendships and groups stay: registering the connections
# scenario's 50,000 users takes minutes. Every conversation starts again at seq 1, no
# one has read anything, and a former member sees none of it. MESH_BENCH_KEEP_MESSAGES=on
# keeps them.
if [[ "${MESH_BENCH_KEEP_MESSAGES:-off}" != on ]]; then
  log "clearing the messages of earlier runs from the bench database"
  "${psql:-psql}" "$db_url" -v ON_ERROR_STOP=1 -q >&2 <<'SQL' || die "clearing the bench database's messages failed"
BEGIN;
TRUNCATE chat.messages, chat.deleted_messages;
UPDATE chat.conversations SET last_seq = 0, last_message_id = NULL WHERE last_seq <> 0;
UPDATE chat.inbox SET read_seq = 0, hidden_at_seq = NULL,
  left_at_seq = CASE WHEN left_at_seq IS NULL THEN NULL ELSE 0 END
  WHERE read_seq <> 0 OR hidden_at_seq IS NOT NULL OR left_at_seq IS NOT NULL;
COMMIT;
SQL
fi
# Autovacuum of the bench database's tables fell inside scenarios and took their CPU (13:11
# run of 2026-12-03, chat.messages). Vacuuming first resets what triggers it: a run changes
# fewer rows than the next autovacuum waits for. MESH_BENCH_VACUUM=off skips it.
if [[ "${MESH_BENCH_VACUUM:-on}" != off ]]; then
  log "vacuuming the bench database, so that autovacuum does not run inside a scenario"
  "${psql:-psql}" "$db_url" -qc "VACUUM (ANALYZE)" >&2 || die "VACUUM of the bench database failed"
fi
log "starting the mesh on $addr (prefix $MESH_PREFIX, log $mesh_log)"
"$bin/mesh" all >"$mesh_log" 2>&1 &
mesh_pid=$!
await_ready "http://$addr" "$mesh_pid" "$mesh_log"
log "mesh ready (pid $mesh_pid)"

# More edges for the connections scenario, on the ports after the mesh's: every socket is a
# file, and one process may hold only `ulimit -Hn` of them.
edges=()
if [[ "$scenario" == all || "$scenario" == connections ]]; then
  for k in $(seq 1 $((${MESH_BENCH_EDGES:-3} - 1))); do
    edge_addr="$host:$((port + k))"
    listening "$((port + k))" && die "something already listens on $edge_addr; stop it or set MESH_BENCH_ADDR"
    edge_log=".local/log/bench-edge-$k.log"
    MESH_HTTP_ADDR="$edge_addr" "$bin/mesh" edge >"$edge_log" 2>&1 &
    edge_pid=$!
    edge_pids+=("$edge_pid")
    await_ready "http://$edge_addr" "$edge_pid" "$edge_log"
    edges+=(--edge-url "http://$edge_addr" --edge-pid "$edge_pid")
    log "extra edge ready on $edge_addr (pid $edge_pid)"
  done
fi

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
note="commit $commit · $profile build · Postgres $durability · open files $(ulimit -n)"

# What the load generator watches: the mesh, NATS and Postgres processes (their CPU), the
# ingest backlog (NATS monitoring), and what the raw limits connect to.
watch=(--pid "$mesh_pid" --prefix "$MESH_PREFIX"
  --nats-monitor "http://127.0.0.1:${MESH_NATS_MONITOR_PORT:-8222}")
nats_pid="$(head -n 1 .local/run/nats.pid 2>/dev/null | tr -dc '0-9' || true)"
[[ -n "$nats_pid" ]] && watch+=(--nats-pid "$nats_pid")
pg_pid="$(head -n 1 .local/pg/postmaster.pid 2>/dev/null | tr -dc '0-9' || true)"
if [[ -n "$pg_pid" ]] && kill -0 "$pg_pid" 2>/dev/null; then
  watch+=(--postgres-pid "$pg_pid")
else
  log "no Postgres postmaster of this project (a user-given Postgres?): its CPU is not counted"
fi
export LOADGEN_DATABASE_URL="$db_url"

# The peer: Matrix Synapse on the same Postgres. A failure is recorded in the results.
peer=()
if [[ "$scenario" == all || "$scenario" == peer-* ]] && [[ "${MESH_BENCH_PEER:-on}" != off ]]; then
  if peer_url="$(MESH_DATABASE_URL="$admin_db_url" scripts/bench-synapse.sh up 2>.local/log/bench-synapse.err)"; then
    synapse_started=1
    peer=(--peer-url "$peer_url")
    synapse_pid="$(head -n 1 .local/synapse/homeserver.pid 2>/dev/null | tr -dc '0-9' || true)"
    [[ -n "$synapse_pid" ]] && peer+=(--peer-pid "$synapse_pid")
    log "Synapse peer at $peer_url"
  else
    reason="$(grep -v '^\s*$' .local/log/bench-synapse.err | tail -n 3 | tr '\n' ' ')"
    log "the Synapse peer is unavailable: $reason"
    peer=(--peer-unavailable "scripts/bench-synapse.sh failed: $reason")
  fi
fi

"$bin/loadgen" "$scenario" --url "http://$addr" --note "$note" "${watch[@]}" "${edges[@]}" "${peer[@]}" "$@"
log "done (results appended to the files named by --out and --json, by default bench/results.md and bench/results.json)"
