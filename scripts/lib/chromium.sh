# chromium.sh: sourced by web-test.sh. `ensure_chromium` prints the path of a Chromium binary:
# the system's /usr/bin/chromium when Debian's package is installed, otherwise Debian's
# `chromium` package and whichever of its dependencies this machine lacks, downloaded with
# `apt-get download` and unpacked with `dpkg -x` into .tools/chromium (nothing system-wide;
# no root needed once the package lists exist). Progress goes to stderr.

CHROMIUM_ROOT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)/.tools/chromium"

chromium_log() { printf '[chromium] %s\n' "$*" >&2; }

# Wraps the unpacked browser so it finds the unpacked libraries.
write_chromium_wrapper() {
  local root="$CHROMIUM_ROOT_DIR/root"
  cat >"$CHROMIUM_ROOT_DIR/chromium" <<WRAP
#!/bin/sh
export LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu/pulseaudio:$root/usr/lib/chromium\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$root/usr/lib/chromium/chromium" "\$@"
WRAP
  chmod +x "$CHROMIUM_ROOT_DIR/chromium"
}

ensure_chromium() {
  if [[ -x /usr/bin/chromium ]]; then echo /usr/bin/chromium; return; fi
  if [[ -x "$CHROMIUM_ROOT_DIR/chromium" ]] && "$CHROMIUM_ROOT_DIR/chromium" --version >/dev/null 2>&1; then
    echo "$CHROMIUM_ROOT_DIR/chromium"; return
  fi
  chromium_log "unpacking Debian's chromium and its missing dependencies into $CHROMIUM_ROOT_DIR"
  local plan pkgs debs
  plan="$(apt-get install --simulate --no-install-recommends chromium 2>/dev/null)" || plan=""
  if ! grep -q '^Inst chromium ' <<<"$plan"; then
    chromium_log "package lists missing or stale: apt-get update"
    apt-get update -q >/dev/null 2>&1 || true
    plan="$(apt-get install --simulate --no-install-recommends chromium)"
  fi
  mapfile -t pkgs < <(awk '/^Inst / { print $2 }' <<<"$plan")
  debs="$(mktemp -d)"
  (cd "$debs" && apt-get download -q "${pkgs[@]}" >/dev/null 2>&1) || {
    chromium_log "apt-get download failed for: ${pkgs[*]}"; rm -rf "$debs"; return 1; }
  rm -rf "$CHROMIUM_ROOT_DIR"
  mkdir -p "$CHROMIUM_ROOT_DIR/root"
  local deb
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$CHROMIUM_ROOT_DIR/root"; done
  rm -rf "$debs"
  write_chromium_wrapper
  "$CHROMIUM_ROOT_DIR/chromium" --version >&2 || { chromium_log "the unpacked chromium does not start"; return 1; }
  echo "$CHROMIUM_ROOT_DIR/chromium"
}
