#!/usr/bin/env bash
# bench-synapse.sh: a Matrix Synapse peer for scripts/bench.sh, on this machine and on the
# Postgres of scripts/services.sh (its own database, C collation, from template0), with open
# registration (no captcha, no e-mail) and every rate limit lifted, so the load generator can
# run the same pairs scenarios through the client-server API.
#
# Usage: scripts/bench-synapse.sh up     install (first time) and start; prints the base URL
#        scripts/bench-synapse.sh down   stop it
#
# Needs MESH_DATABASE_URL (eval "$(scripts/services.sh env)"). Settings (environment):
#   MESH_BENCH_SYNAPSE_PORT   its client-server API port          (default 18008)
#   MESH_BENCH_SYNAPSE_VERSION the PyPI matrix-synapse version     (default 1.163.2)
#
# It installs into .tools/synapse (a Python venv) and keeps its config, keys and log in
# .local/synapse; the database is synapse_bench. Progress goes to stderr, the URL to stdout.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd -P)"

log() { printf '[synapse] %s\n' "$*" >&2; }
die() { printf '[synapse] error: %s\n' "$*" >&2; exit 1; }

readonly VENV="$ROOT/.tools/synapse"
readonly HOME_DIR="$ROOT/.local/synapse"
readonly PORT="${MESH_BENCH_SYNAPSE_PORT:-18008}"
readonly VERSION="${MESH_BENCH_SYNAPSE_VERSION:-1.163.2}"
readonly PID_FILE="$HOME_DIR/homeserver.pid"
readonly LOG="$HOME_DIR/homeserver.log"
readonly DB=synapse_bench

install() {
  if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "import synapse, psycopg2" 2>/dev/null &&
    [[ "$("$VENV/bin/python" -c 'import synapse; print(synapse.__version__)')" == "$VERSION" ]]; then
    return 0
  fi
  log "installing matrix-synapse==$VERSION into ${VENV#"$ROOT"/} (a few minutes the first time)"
  python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (install python3-venv)"
  "$VENV/bin/python" -m pip install --quiet --no-input --upgrade pip >&2 || die "upgrading pip in the venv failed"
  # psycopg2-binary: the postgres extra's psycopg2 would need a C compiler and libpq headers.
  "$VENV/bin/python" -m pip install --quiet --no-input "matrix-synapse==$VERSION" psycopg2-binary >&2 ||
    die "pip install matrix-synapse==$VERSION psycopg2-binary failed"
}

# host, port and user of MESH_DATABASE_URL (postgres://user@host:port/db).
db_parts() {
  local rest="${MESH_DATABASE_URL#*://}"
  rest="${rest%%/*}"
  local user="${rest%@*}" hostport="${rest#*@}"
  user="${user%%:*}"
  printf '%s %s %s\n' "$user" "${hostport%:*}" "${hostport##*:}"
}

create_db() {
  local psql
  psql="$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -n 1 || true)"
  [[ -n "$psql" ]] || die "psql not found"
  if [[ "$("$psql" "$MESH_DATABASE_URL" -tAqc "select 1 from pg_database where datname = '$DB'")" != 1 ]]; then
    log "creating database $DB (C collation, template0, as Synapse requires)"
    "$psql" "$MESH_DATABASE_URL" -qc \
      "create database $DB encoding 'UTF8' lc_collate 'C' lc_ctype 'C' template template0" >&2
  fi
}

secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

write_config() {
  mkdir -p "$HOME_DIR/media"
  local user host port
  read -r user host port < <(db_parts)
  [[ -f "$HOME_DIR/secrets" ]] || printf '%s\n%s\n%s\n' "$(secret)" "$(secret)" "$(secret)" >"$HOME_DIR/secrets"
  local s1 s2 s3
  { read -r s1; read -r s2; read -r s3; } <"$HOME_DIR/secrets"
  cat >"$HOME_DIR/log.config" <<LOGCFG
version: 1
formatters:
  precise:
    format: '%(asctime)s %(levelname)s %(name)s %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: $LOG
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
LOGCFG
  # Rate limits lifted: the bench measures throughput, not Synapse's flood protection.
  local lifted="{per_second: 1000000, burst_count: 1000000}"
  cat >"$HOME_DIR/homeserver.yaml" <<CFG
# Written by scripts/bench-synapse.sh at each start; edits are overwritten.
server_name: "bench.local"
pid_file: "$PID_FILE"
listeners:
  - port: $PORT
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: psycopg2
  args:
    user: "$user"
    host: "$host"
    port: $port
    dbname: "$DB"
    cp_min: 5
    cp_max: 10
log_config: "$HOME_DIR/log.config"
media_store_path: "$HOME_DIR/media"
signing_key_path: "$HOME_DIR/signing.key"
report_stats: false
# The peer's users are made per run: cheap password hashing keeps that setup short (it is
# not part of what is measured).
bcrypt_rounds: 4
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: "$s1"
macaroon_secret_key: "$s2"
form_secret: "$s3"
trusted_key_servers: []
suppress_key_server_warning: true
presence:
  enabled: false
rc_message: $lifted
rc_registration: $lifted
rc_room_creation: $lifted
rc_login:
  address: $lifted
  account: $lifted
  failed_attempts: $lifted
rc_joins:
  local: $lifted
  remote: $lifted
rc_joins_per_room: $lifted
rc_invites:
  per_room: $lifted
  per_user: $lifted
  per_issuer: $lifted
rc_3pid_validation: $lifted
CFG
}

running() {
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

up() {
  [[ -n "${MESH_DATABASE_URL:-}" ]] || die "MESH_DATABASE_URL is not set (eval \"\$(scripts/services.sh env)\")"
  install
  create_db
  write_config
  local url="http://127.0.0.1:$PORT"
  if running; then
    log "Synapse already running (pid $(cat "$PID_FILE"))"
  else
    [[ -f "$HOME_DIR/signing.key" ]] ||
      "$VENV/bin/python" -m synapse.app.homeserver -c "$HOME_DIR/homeserver.yaml" --generate-keys >&2 ||
      die "generating Synapse's signing key failed"
    log "starting Synapse on $url (log ${LOG#"$ROOT"/})"
    nohup "$VENV/bin/python" -m synapse.app.homeserver -c "$HOME_DIR/homeserver.yaml" \
      </dev/null >>"$HOME_DIR/stdout.log" 2>&1 &
    local starter=$! _
    for _ in $(seq 1 300); do
      curl -fsS --max-time 1 -o /dev/null "$url/_matrix/client/versions" 2>/dev/null && break
      kill -0 "$starter" 2>/dev/null || { tail -n 30 "$HOME_DIR/stdout.log" "$LOG" >&2 2>/dev/null; die "Synapse exited during startup"; }
      sleep 0.2
    done
    curl -fsS --max-time 2 -o /dev/null "$url/_matrix/client/versions" ||
      { tail -n 30 "$LOG" >&2 2>/dev/null; die "Synapse did not answer within 60 s"; }
    [[ -s "$PID_FILE" ]] || echo "$starter" >"$PID_FILE"
  fi
  echo "$url"
}

down() {
  if running; then
    local pid
    pid="$(cat "$PID_FILE")"
    log "stopping Synapse (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  install) install ;;
  *) die "unknown subcommand '$1' (use up, down or install)" ;;
esac
