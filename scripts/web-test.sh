#!/usr/bin/env bash
# web-test.sh: the web console in a real browser (part of scripts/test.sh). Builds the console,
# starts a `mesh all` of its own serving it, checks that web/spec/ still equals the edge's
# published documents, then Playwright (playwright-core) drives Debian's Chromium (unpacked into
# .tools/chromium when the machine has none) through web/tests/browser.mjs: two people become
# friends and chat live, a reload keeps history, a conversation list longer than one page is
# listed whole, a revoked session and a disabled account log
# their pages out, the admin pages work (account search, another user's sessions signed out).
# The mesh issues access tokens for a few seconds only (MESH_ACCESS_TTL), so every page must
# refresh its tokens before they expire to get through the run. Screenshots of each view go to
# ${CARGO_TARGET_DIR:-target}/web-test/.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
# shellcheck source=lib/chromium.sh
source scripts/lib/chromium.sh
# shellcheck source=lib/scratch-mesh.sh
source scripts/lib/scratch-mesh.sh

echo "== web console (browser)" >&2
scripts/web-build.sh
chromium_bin="$(ensure_chromium)"
if [[ -z "${MESH_NATS_URL:-}" || -z "${MESH_DATABASE_URL:-}" ]]; then
  eval "$(scripts/services.sh up)"
fi
cargo build --locked --quiet --bin mesh
admin_phone="+1999$(date +%s | tail -c 8)"
access_ttl_secs=6
export MESH_BOOTSTRAP_ADMINS="$admin_phone" MESH_CONSOLE_DIR="$ROOT/web/dist"
# Every page refreshes every few seconds, all from 127.0.0.1: lift the per-ip sign-in limit,
# and hint at a refresh only in a token's last second (the default hint, 60 s, is longer than
# these tokens live), so the pages' own timers must do the refreshing.
export MESH_ACCESS_TTL="${access_ttl_secs}s" MESH_TOKEN_REFRESH_HINT=1s MESH_RATE_AUTH_IP="600/1m"
start_scratch_mesh webtest "${CARGO_TARGET_DIR:-$ROOT/target}/debug/mesh"
(cd web && node scripts/sync-spec.mjs check "$base")
out="${CARGO_TARGET_DIR:-$ROOT/target}/web-test"
rm -rf "$out"
(cd web && MESH_BASE="$base" CHROMIUM="$chromium_bin" ADMIN_PHONE="$admin_phone" \
  ACCESS_TTL_SECS="$access_ttl_secs" OUT="$out" node tests/browser.mjs)
echo "screenshots: $out" >&2
