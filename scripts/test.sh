#!/usr/bin/env bash
# test.sh: the whole test suite, as CI runs it. Installs and starts NATS and Postgres
# (scripts/services.sh), checks formatting and lints, then runs unit and whole-mesh tests.
# Services this script started are stopped again at the end; ones already running are reused.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

started_here=0
if ! scripts/services.sh status >/dev/null 2>&1; then
  started_here=1
fi
cleanup() {
  if [[ "$started_here" -eq 1 ]]; then
    scripts/services.sh down >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

export MESH_PG_FAST=1
# Assigned first so that a failing start stops the run here (eval "$(..)" would hide it).
service_env="$(scripts/services.sh up)"
eval "$service_env"

# Databases left behind by earlier runs (each test creates its own).
scripts/services.sh prune

echo "== cargo fmt --check" >&2
cargo fmt --all --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
scripts/chart-test.sh
scripts/observe-test.sh
scripts/web-test.sh
echo "== schemathesis" >&2
scripts/schema-test.sh
echo "== cargo test" >&2
log="$(mktemp)"
status=0
# The 3-node NATS cluster test kills leaders and measures that nothing accepted is lost; it
# runs alone afterwards, so four other whole-mesh tests do not starve its failovers.
cargo test --workspace --all-targets --locked --no-fail-fast -- --test-threads="${MESH_TEST_THREADS:-4}" \
  --skip nats_cluster:: 2>&1 | tee "$log" || status=$?
cargo test --locked --test mesh -- nats_cluster:: --test-threads=1 2>&1 | tee -a "$log" || status=$?
# Every benchmark scenario, briefly, with the debug build: the bench still writes every figure.
scripts/bench-smoke.sh || status=$?
# The newest full run committed has every figure too, measured as issue #16 sets its targets:
# a release build, and Postgres with fsync and synchronous_commit on.
echo "== bench check of the newest committed run" >&2
python3 scripts/bench_check.py --members 500,5000 --sizes 10000,50000 --edges 3 --peer \
  --durable --newest bench/results.json || status=$?
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
