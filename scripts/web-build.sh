#!/usr/bin/env bash
# web-build.sh: builds the web console (web/) into web/dist, which the edge serves at
# /console/ (MESH_CONSOLE_PATH, MESH_CONSOLE_DIR). `npm ci` installs the locked toolchain
# (web/package-lock.json) into web/node_modules from the npm registry; the build generates the
# API and frame types from web/spec/*.json, type-checks and bundles. Nothing is rebuilt when
# web/dist is newer than every source.
#   scripts/web-build.sh                  build when needed
#   scripts/web-build.sh --refresh-spec   copy a fresh mesh's /openapi.json and /asyncapi.json
#                                         into web/spec/ first (after an API change)
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
WEB="$ROOT/web"
log() { printf '[web-build] %s\n' "$*" >&2; }

command -v npm >/dev/null || { log "npm is missing: install Node.js (Debian: nodejs npm)"; exit 1; }

if [[ ! -d "$WEB/node_modules" || "$WEB/package-lock.json" -nt "$WEB/node_modules/.package-lock.json" ]]; then
  log "npm ci (web/node_modules)"
  (cd "$WEB" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

if [[ "${1:-}" == "--refresh-spec" ]]; then
  # shellcheck source=lib/scratch-mesh.sh
  source "$ROOT/scripts/lib/scratch-mesh.sh"
  eval "$(cd "$ROOT" && scripts/services.sh up)"
  (cd "$ROOT" && cargo build --locked --quiet --bin mesh)
  start_scratch_mesh webspec "${CARGO_TARGET_DIR:-$ROOT/target}/debug/mesh"
  (cd "$WEB" && node scripts/sync-spec.mjs write "$base")
  rm -f "$WEB/dist/index.html"
fi

newest_source="$(find "$WEB/src" "$WEB/spec" "$WEB/scripts" "$WEB/index.html" "$WEB/vite.config.ts" \
  "$WEB/tsconfig.json" "$WEB/package-lock.json" -type f -not -path '*/src/gen/*' -newer "$WEB/dist/index.html" 2>/dev/null | head -n 1 || true)"
if [[ -f "$WEB/dist/index.html" && -z "$newest_source" ]]; then
  exit 0
fi
log "building web/dist"
(cd "$WEB" && npm run --silent build >&2)
