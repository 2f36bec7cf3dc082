#!/usr/bin/env bash
# login-storm.sh: other users' sign-in latency idle and during a 300-guess storm from one
# address (bench/login_storm.py), against a `mesh all` of this script with limits and locks
# lifted, so the fairness of the password-hashing pool is what is measured.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

service_env="$(scripts/services.sh up)"   # a failing start stops here
eval "$service_env"
# STORM_PROFILE=dev skips the release build (hashing is optimised in every profile).
profile="${STORM_PROFILE:-release}"
cargo build --profile "$profile" --locked --bin mesh
dir="$profile"; [[ "$profile" == dev ]] && dir=debug
mesh="${CARGO_TARGET_DIR:-target}/$dir/mesh"
# shellcheck source=scripts/lib/scratch-mesh.sh
source scripts/lib/scratch-mesh.sh
export MESH_TRUSTED_PROXIES=127.0.0.1/32 MESH_RATE_AUTH_IP=100000/1s
export MESH_LOGIN_LOCK_AFTER=100000 MESH_LOGIN_IP_LOCK_AFTER=100000 MESH_LOGIN_DELAY_AFTER=100000
start_scratch_mesh storm "$mesh"
python3 bench/login_storm.py "$base" "${GUESSES:-300}"
