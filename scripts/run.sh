#!/usr/bin/env bash
# run.sh: bring the whole mesh up on this machine: NATS and Postgres (scripts/services.sh),
# a development JWT key pair if none exists, a build, `mesh migrate`, and `mesh all` in the
# foreground (each role on its own NATS login from MESH_NATS_ROLE_CREDENTIALS). The web console
# is built into web/dist (scripts/web-build.sh, npm) and served at /console/.
# Ctrl-C stops the mesh; `scripts/services.sh down` stops NATS and Postgres.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

service_env="$(scripts/services.sh up)"   # a failing start stops here
eval "$service_env"
cargo build --locked --bin mesh
scripts/web-build.sh || echo "the web console was not built (see above); the API runs without it" >&2
keys=.local/keys
if [[ ! -f "$keys/jwt_ed25519.pem" ]]; then
  ./target/debug/mesh keygen --out "$keys" >/dev/null
  echo "generated a development JWT key pair in $keys" >&2
fi
export MESH_JWT_PRIVATE_KEY="${MESH_JWT_PRIVATE_KEY:-$keys/jwt_ed25519.pem}"
export MESH_JWT_PUBLIC_KEY="${MESH_JWT_PUBLIC_KEY:-$keys/jwt_ed25519.pub.pem}"
export MESH_HTTP_ADDR="${MESH_HTTP_ADDR:-127.0.0.1:8080}"
cat >&2 <<MSG
nats-mesh is starting:
  API       http://$MESH_HTTP_ADDR/v1   (docs: http://$MESH_HTTP_ADDR/docs)
  console   http://$MESH_HTTP_ADDR/console/
  health    http://$MESH_HTTP_ADDR/readyz
  metrics   http://$MESH_HTTP_ADDR/metrics
  NATS      $MESH_NATS_URL
  Postgres  $MESH_DATABASE_URL
MSG
# Database schemas, streams and buckets (the serving roles only bind to them).
./target/debug/mesh migrate
exec ./target/debug/mesh all
