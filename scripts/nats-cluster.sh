#!/usr/bin/env bash
# nats-cluster.sh: a 3-node NATS cluster on loopback (three nats-server processes with routes
# and JetStream) for trying and testing the mesh's failover. Same authorization as
# scripts/services.sh (`mesh nats-config --any-prefix`), so every role logs in as itself.
#
# Usage: scripts/nats-cluster.sh [up|down|status|env]
#   up      (default) start the nodes that are not running (a killed node comes back),
#           wait until JetStream has a leader, then print the env lines
#   down    stop the nodes this script started
#   status  say which nodes run (exit 0 when all three do)
#   env     print export lines: MESH_NATS_URL (all three nodes), MESH_NATS_REPLICAS=3,
#           MESH_NATS_ROLE_CREDENTIALS
#
# Settings (environment):
#   MESH_NATS_CLUSTER_PORT_BASE  first of 9 ports (default 19500): clients base..base+2,
#                                routes base+3..base+5, monitoring base+6..base+8
#   MESH_NATS_CLUSTER_DIR        state: configs, JetStream stores, logs, pid files
#                                (default .local/nats-cluster)
#   MESH_NATS_AUTH_DIR           where auth.conf and role-credentials live (default
#                                .local/nats-auth; generated with cargo when missing)
#   MESH_NATS_SYNC_INTERVAL      JetStream fsync interval (default `always`: an acknowledged
#                                publish is on disk on a quorum; see README "High availability")
#
# Node i's pid is in $MESH_NATS_CLUSTER_DIR/n<i>.pid; its server name is n<i>.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
readonly ROOT
readonly BASE="${MESH_NATS_CLUSTER_PORT_BASE:-19500}"
readonly DIR="${MESH_NATS_CLUSTER_DIR:-$ROOT/.local/nats-cluster}"
readonly AUTH_DIR="${MESH_NATS_AUTH_DIR:-$ROOT/.local/nats-auth}"
readonly SYNC="${MESH_NATS_SYNC_INTERVAL:-always}"
readonly NATS_BIN="${MESH_NATS_SERVER_BIN:-$ROOT/.tools/bin/nats-server}"
readonly NODES=(1 2 3)
readonly WAIT_SECS=30

log() { printf '[nats-cluster] %s\n' "$*" >&2; }
die() { printf '[nats-cluster] error: %s\n' "$*" >&2; exit 1; }

client_port() { echo $((BASE + $1 - 1)); }
route_port() { echo $((BASE + 2 + $1)); }
monitor_port() { echo $((BASE + 5 + $1)); }

pid_of() { [[ -f "$DIR/n$1.pid" ]] && head -n 1 "$DIR/n$1.pid" | tr -dc '0-9'; }

node_alive() {
  local pid
  pid="$(pid_of "$1" || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == nats-server ]]
}

ensure_auth() {
  [[ -f "$AUTH_DIR/auth.conf" && -f "$AUTH_DIR/role-credentials" ]] && return 0
  log "generating NATS authorization into $AUTH_DIR"
  (cd "$ROOT" && cargo run --quiet --locked --bin mesh -- nats-config --any-prefix --out "$AUTH_DIR") >/dev/null ||
    die "mesh nats-config failed"
}

write_conf() {
  local i="$1" routes="" j
  for j in "${NODES[@]}"; do
    [[ "$j" == "$i" ]] && continue
    routes+="    nats-route://127.0.0.1:$(route_port "$j")"$'\n'
  done
  mkdir -p "$DIR/n$i"
  cat >"$DIR/n$i.conf" <<CONF
# Written by scripts/nats-cluster.sh; edits are overwritten.
server_name: n$i
listen: 127.0.0.1:$(client_port "$i")
http: 127.0.0.1:$(monitor_port "$i")
pid_file: "$DIR/n$i.pid"
log_file: "$DIR/n$i.log"
jetstream {
  store_dir: "$DIR/n$i"
  sync_interval: $SYNC
}
cluster {
  name: mesh
  listen: 127.0.0.1:$(route_port "$i")
  routes: [
$routes  ]
}
include ./auth.conf
CONF
}

start_node() {
  local i="$1"
  write_conf "$i"
  log "starting n$i on 127.0.0.1:$(client_port "$i") (routes $(route_port "$i"), monitor $(monitor_port "$i"))"
  nohup "$NATS_BIN" -c "$DIR/n$i.conf" </dev/null >>"$DIR/n$i.stdout.log" 2>&1 &
  STARTED[$i]=$!
}

declare -A STARTED=()

healthy() {
  curl -fsS --max-time 2 "http://127.0.0.1:$(monitor_port "$1")/healthz" 2>/dev/null | grep -q '"ok"'
}

cmd_env() {
  local urls="" i
  for i in "${NODES[@]}"; do urls+="${urls:+,}nats://127.0.0.1:$(client_port "$i")"; done
  printf 'export MESH_NATS_URL=%q\n' "$urls"
  printf 'export MESH_NATS_REPLICAS=3\n'
  printf 'export MESH_NATS_ROLE_CREDENTIALS=%q\n' "$AUTH_DIR/role-credentials"
}

cmd_up() {
  [[ -x "$NATS_BIN" ]] || die "$NATS_BIN not found; run scripts/services.sh up first (it installs nats-server)"
  mkdir -p "$DIR"
  ensure_auth
  # nats-server includes relative to the including file.
  cp "$AUTH_DIR/auth.conf" "$DIR/auth.conf"
  local i
  for i in "${NODES[@]}"; do node_alive "$i" || start_node "$i"; done
  local deadline=$((SECONDS + WAIT_SECS))
  for i in "${NODES[@]}"; do
    until healthy "$i"; do
      if [[ -n "${STARTED[$i]:-}" ]] && ! kill -0 "${STARTED[$i]}" 2>/dev/null; then
        tail -n 20 "$DIR/n$i.stdout.log" "$DIR/n$i.log" >&2 2>/dev/null || true
        die "n$i exited during start-up"
      fi
      ((SECONDS < deadline)) || { tail -n 20 "$DIR/n$i.log" >&2 || true; die "n$i not healthy within ${WAIT_SECS}s"; }
      sleep 0.2
    done
  done
  log "cluster ready (sync_interval $SYNC)"
  cmd_env
}

cmd_down() {
  local i pid
  for i in "${NODES[@]}"; do
    if node_alive "$i"; then
      pid="$(pid_of "$i")"
      log "stopping n$i (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      local deadline=$((SECONDS + 10))
      while node_alive "$i" && ((SECONDS < deadline)); do sleep 0.2; done
      node_alive "$i" && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/n$i.pid"
  done
}

cmd_status() {
  local ok=0 i
  for i in "${NODES[@]}"; do
    if node_alive "$i" && healthy "$i"; then
      echo "n$i: running (pid $(pid_of "$i"), nats://127.0.0.1:$(client_port "$i"))"
    else
      echo "n$i: stopped"; ok=1
    fi
  done
  return "$ok"
}

case "${1:-up}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  -h | --help | help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown subcommand '$1' (use up, down, status or env)" ;;
esac
