#!/usr/bin/env bash
# bench-smoke.sh: checks that scripts/bench.sh still runs every scenario and still writes every
# figure beside its limit, ratio, ceiling and CPU accounting. A short run of `loadgen all` with
# the debug build (its figures mean nothing; that they are there, and that no integrity check
# failed, is what counts), the Synapse peer off, the connections scenario over three edges and
# its holder processes, in a fresh database and on a NATS prefix of its own. The results and
# the run's output go to target/bench-smoke/ (under CARGO_TARGET_DIR when set; bench/results.*
# stay untouched), where bench_check.py reads them.
# Needs MESH_NATS_URL and MESH_DATABASE_URL (scripts/services.sh up); starts them when unset.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
source scripts/deploy-tools.sh

ensure_services
out="${CARGO_TARGET_DIR:-target}/bench-smoke"
rm -rf "$out"
mkdir -p "$out"
db="$(fresh_database)"
trap 'drop_database "$db"' EXIT

members=40,120
sizes=100,300
echo "== bench smoke (debug build, every scenario, results in $out)" >&2
MESH_BENCH_PROFILE=debug MESH_BENCH_DURABILITY=any MESH_BENCH_PEER=off MESH_BENCH_VACUUM=off \
  MESH_BENCH_DATABASE_URL="$db" MESH_BENCH_PREFIX=smoke \
  MESH_BENCH_ADDR="127.0.0.1:${MESH_BENCH_SMOKE_PORT:-18180}" \
  scripts/bench.sh --seconds 3 --overload-seconds 3 --baseline-seconds 2 \
  --pairs 10 --window 50 --members "$members" --fanout-messages 20,10 --fanout-rate 40,10 \
  --sizes "$sizes" --read-concurrency 8 --login-concurrency 4 \
  --out "$out/results.md" --json "$out/results.json" --users-cache "$out/users.json" \
  >"$out/bench.log" 2>&1 || { tail -n 40 "$out/bench.log" >&2; echo "bench smoke: scripts/bench.sh failed" >&2; exit 1; }
python3 scripts/bench_check.py --members "$members" --sizes "$sizes" --edges 3 "$out/results.json"
