#!/usr/bin/env bash
# dev-cluster.sh -- run a real multi-node Slurm cluster on this one machine.
#
# Usage: scripts/dev-cluster.sh up|down|status|restart [--nodes N]
#
#   up       install missing packages, write configs, start munge, mariadb,
#            slurmdbd, slurmctld and one slurmd per node, register the
#            cluster/account/user in slurmdbd, wait until every node is usable.
#            Safe to run again: running daemons are detected and kept.
#   down     cancel all jobs, stop every daemon this script started. Idempotent.
#   status   print daemon state and sinfo; exit 0 only when every daemon runs and
#            every node is usable (idle/mixed/allocated/completing).
#   restart  down, then up.
#
# Targets Debian 12 (slurm-wlm 22.05), run as root, without systemd: the daemons
# are started directly and tracked through pid files.  Several slurmd share this
# host: each node has its own name, port, spool dir, pid file and log
# (NodeName=nodeN NodeHostname=<this host> NodeAddr=127.0.0.1, `slurmd -N nodeN`).
#
# Environment (all optional):
#   AIINFRA_DEV_CLUSTER_DIR        state + logs   [/var/lib/aiinfra-dev-cluster]
#   AIINFRA_DEV_CLUSTER_NODES      node count (or --nodes N, at most 99) [4]
#   AIINFRA_DEV_CLUSTER_MEM_MB     RealMemory per node (MB) [2000]
#   AIINFRA_DEV_CLUSTER_TIMEOUT    seconds allowed for each wait [90]
#   AIINFRA_DEV_CLUSTER_DB_PORT    port of the private mariadbd [13306]
#   AIINFRA_DEV_CLUSTER_CRED_EXPIRE  AuthInfo cred_expire, seconds; also the
#                                  delay before a requeued job restarts [30]
#   AIINFRA_DEV_CLUSTER_GRACE_TIME seconds a preempted debug job gets to
#                                  checkpoint before it is requeued [20]
#   AIINFRA_DEV_CLUSTER_NO_INSTALL set to 1 to never run apt-get
#   AIINFRA_DEV_CLUSTER_KEEP_JOBS  set to 1 so that `down` does not cancel jobs
#   AIINFRA_DEV_CLUSTER_INSTANCE   K in 1..9 runs a second, independent cluster
#                                  beside the default one [0]: config in
#                                  /etc/slurm-K, state in ...-cluster-K, every
#                                  port shifted, job ids from K*2000+1.  Its
#                                  users set SLURM_CONF=/etc/slurm-K/slurm.conf.
#
# Configuration is written to /etc/slurm (Debian's default), so plain sbatch,
# squeue, sacct, ... work without SLURM_CONF.

set -euo pipefail

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

# ----------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------
INSTANCE="${AIINFRA_DEV_CLUSTER_INSTANCE:-0}"
[[ "$INSTANCE" =~ ^[0-9]$ ]] || { echo "AIINFRA_DEV_CLUSTER_INSTANCE must be 0..9" >&2; exit 2; }
SUFFIX=""
((INSTANCE == 0)) || SUFFIX="-${INSTANCE}"
STATE_DIR="${AIINFRA_DEV_CLUSTER_DIR:-/var/lib/aiinfra-dev-cluster${SUFFIX}}"
NUM_NODES="${AIINFRA_DEV_CLUSTER_NODES:-4}"
NODE_MEM_MB="${AIINFRA_DEV_CLUSTER_MEM_MB:-2000}"
WAIT_TIMEOUT="${AIINFRA_DEV_CLUSTER_TIMEOUT:-90}"
DB_PORT="${AIINFRA_DEV_CLUSTER_DB_PORT:-$((13306 + INSTANCE))}"
CRED_EXPIRE="${AIINFRA_DEV_CLUSTER_CRED_EXPIRE:-30}"

CLUSTER_NAME="aiinfra"
PARTITION="debug"
URGENT_PARTITION="urgent"        # preempts debug (PreemptType=preempt/partition_prio)
GRACE_TIME="${AIINFRA_DEV_CLUSTER_GRACE_TIME:-20}"
ACCOUNT="dev"
SLURM_USER="root"
SLURMCTLD_PORT=$((6817 + 10 * INSTANCE))
SLURMDBD_PORT=$((6819 + 10 * INSTANCE))
SLURMD_BASE_PORT=$((17000 + 100 * INSTANCE))   # nodeN listens on SLURMD_BASE_PORT + N
# Job ids of instance K start at K*2000+1: ports derived from the job id
# (torchrun's rendezvous) then differ between instances.
FIRST_JOB_ID=$((2000 * INSTANCE + 1))

SLURM_CONF_DIR="/etc/slurm${SUFFIX}"
SLURM_CONF="${SLURM_CONF_DIR}/slurm.conf"
# Every Slurm command and daemon started here reads this instance's config.
export SLURM_CONF
SLURMDBD_CONF="${SLURM_CONF_DIR}/slurmdbd.conf"

MUNGE_KEY="/etc/munge/munge.key"
MUNGE_RUN_DIR="/run/munge"
MUNGE_PID_FILE="${MUNGE_RUN_DIR}/munged.pid"

LOG_DIR="${STATE_DIR}/log"
RUN_DIR="${STATE_DIR}/run"
SPOOL_DIR="${STATE_DIR}/spool"
DB_DIR="${STATE_DIR}/mariadb"
DB_DATA_DIR="${DB_DIR}/data"
DB_RUN_DIR="${DB_DIR}/run"
DB_SOCKET="${DB_RUN_DIR}/mariadbd.sock"
DB_PID_FILE="${DB_RUN_DIR}/mariadbd.pid"
DB_PASSWORD_FILE="${STATE_DIR}/db-password"
DB_NAME="slurm_acct_db"
DB_USER="slurm"

SHORT_HOST="$(hostname -s 2>/dev/null || hostname)"

# Packages installed when a needed command is missing (command -> package).
REQUIRED=(
  "slurmctld:slurmctld"
  "slurmd:slurmd"
  "slurmdbd:slurmdbd"
  "sinfo:slurm-client"
  "munged:munge"
  "mariadbd:mariadb-server"
  "mariadb:mariadb-client"
  "mpirun:openmpi-bin"
  "mpicc:libopenmpi-dev"
)

# ----------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------
log() { printf '[dev-cluster] %s\n' "$*" >&2; }
die() { printf '[dev-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

node_names() {
  local i
  for ((i = 1; i <= NUM_NODES; i++)); do printf 'node%d\n' "$i"; done
}

node_range() {
  if ((NUM_NODES == 1)); then echo "node1"; else echo "node[1-${NUM_NODES}]"; fi
}

# Print the last lines of each given log file (used on failures).
show_logs() {
  local f
  for f in "$@"; do
    if [[ -s "$f" ]]; then
      printf -- '----- tail of %s -----\n' "$f" >&2
      tail -n 30 "$f" >&2 || true
    else
      printf -- '----- %s: missing or empty -----\n' "$f" >&2
    fi
  done
}

# wait_for TIMEOUT DESCRIPTION "LOG1 LOG2..." COMMAND...
# Poll COMMAND (quietly) every second until it succeeds; on timeout print the
# given logs and fail.
wait_for() {
  local timeout="$1" what="$2" logs="$3"
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for ${what}"
      # shellcheck disable=SC2086  # logs is a space-separated list of paths
      show_logs $logs
      exit 1
    fi
    sleep 1
  done
}

# pid_alive PID: the process exists and is not a zombie.  (PID 1 in a
# container may be slow to reap, and a zombie still shows its old comm.)
pid_alive() {
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  stat="${stat##*) }"               # drop "pid (comm) "
  [[ -n "$stat" && "${stat:0:1}" != Z && "${stat:0:1}" != X ]]
}

# pid_from_file FILE COMM: print the pid stored in FILE if that process is
# alive and its command name is COMM; fail otherwise.
pid_from_file() {
  local file="$1" comm="$2" pid
  [[ -r "$file" ]] || return 1
  pid="$(tr -dc '0-9' <"$file")"
  [[ -n "$pid" ]] || return 1
  pid_alive "$pid" || return 1
  local c
  { read -r c <"/proc/${pid}/comm"; } 2>/dev/null || return 1
  [[ "$c" == "$comm" ]] || return 1
  echo "$pid"
}

# find_procs COMM [ARG]: pids of processes named COMM whose command line
# contains ARG as a separate word (reads /proc; procps may be absent).
find_procs() {
  local comm="$1" arg="${2:-}" p pid cmd c
  for p in /proc/[0-9]*; do
    pid="${p#/proc/}"
    { read -r c <"$p/comm"; } 2>/dev/null || continue
    [[ "$c" == "$comm" ]] || continue
    pid_alive "$pid" || continue
    if [[ -n "$arg" ]]; then
      cmd=" $(tr '\0' ' ' 2>/dev/null <"$p/cmdline") "
      [[ "$cmd" == *" ${arg} "* ]] || continue
    fi
    echo "$pid"
  done
}

# ours PID: the process reads this instance's config (its SLURM_CONF, default
# /etc/slurm/slurm.conf): daemons and job steps of other instances are not ours.
ours() {
  local conf
  conf="$(tr '\0' '\n' 2>/dev/null <"/proc/$1/environ" | sed -n 's/^SLURM_CONF=//p' | head -n1)"
  [[ "${conf:-/etc/slurm/slurm.conf}" == "$SLURM_CONF" ]]
}

# our_procs COMM [ARG]: find_procs limited to this instance's processes.
our_procs() {
  local pid
  for pid in $(find_procs "$@"); do
    if ours "$pid"; then echo "$pid"; fi
  done
}

# stray_pid COMM [ARG]: a daemon of ours that lost its pid file.
stray_pid() {
  local pid
  pid="$(our_procs "$@" | head -n1)"
  [[ -n "$pid" ]] && echo "$pid"
}

# daemon_pid NAME: pid of a running daemon of ours, or fail.
daemon_pid() {
  local name="$1" pid
  case "$name" in
    munged)    pid_from_file "$MUNGE_PID_FILE" munged ;;
    mariadbd)  pid_from_file "$DB_PID_FILE" mariadbd ;;
    slurmdbd)  pid_from_file "${RUN_DIR}/slurmdbd.pid" slurmdbd || stray_pid slurmdbd ;;
    slurmctld) pid_from_file "${RUN_DIR}/slurmctld.pid" slurmctld || stray_pid slurmctld ;;
    node*)     pid_from_file "${RUN_DIR}/slurmd-${name}.pid" slurmd || stray_pid slurmd "$name" ;;
    *) return 1 ;;
  esac
}

# stop_pid NAME PID: SIGTERM, wait up to 30 s, then SIGKILL.
stop_pid() {
  local name="$1" pid="$2" i
  log "stopping ${name} (pid ${pid})"
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 60; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.5
  done
  log "${name} (pid ${pid}) ignored SIGTERM for 30s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

# write_if_changed PATH MODE OWNER: write stdin to PATH when the content
# differs; return 0 if the file changed, 1 if it was already up to date.
write_if_changed() {
  local path="$1" mode="$2" owner="$3" tmp
  tmp="$(mktemp "${path}.XXXXXX")"
  cat >"$tmp"
  chmod "$mode" "$tmp"
  chown "$owner" "$tmp"
  if [[ -f "$path" ]] && cmp -s "$tmp" "$path"; then
    rm -f "$tmp"
    chmod "$mode" "$path"
    chown "$owner" "$path"
    return 1
  fi
  mv -f "$tmp" "$path"
  log "wrote ${path}"
  return 0
}

# spawn OUTFILE CMD...: start a (self-daemonising) command with stdin from
# /dev/null, stdout/stderr appended to OUTFILE and every other inherited file
# descriptor closed: a daemon must not keep our lock (fd 9) or a CI runner's
# pipes open, or the next `up` / the CI step would wait on it forever.
spawn() {
  local out="$1"
  shift
  (
    for fd in /proc/self/fd/*; do
      fd="${fd##*/}"
      if ((fd > 2)); then { exec {fd}>&-; } 2>/dev/null || true; fi
    done
    exec "$@" </dev/null >>"$out" 2>&1
  )
}

require_root() {
  [[ "$(id -u)" -eq 0 ]] || die "must run as root (it starts system daemons and writes /etc/slurm)"
}

# ----------------------------------------------------------------------------
# Installation
# ----------------------------------------------------------------------------
install_packages() {
  local missing=() entry cmd pkg
  for entry in "${REQUIRED[@]}"; do
    cmd="${entry%%:*}"
    pkg="${entry#*:}"
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  # The mysql storage plugin is what lets slurmdbd talk to mariadb.
  dpkg -s slurm-wlm-mysql-plugin >/dev/null 2>&1 || missing+=("slurm-wlm-mysql-plugin")
  ((${#missing[@]} == 0)) && return 0

  [[ "${AIINFRA_DEV_CLUSTER_NO_INSTALL:-0}" == 1 ]] \
    && die "missing packages (${missing[*]}) and AIINFRA_DEV_CLUSTER_NO_INSTALL=1"
  log "installing: ${missing[*]}"

  # Keep the packages' init scripts from starting system-wide daemons: this
  # script runs its own instances.  Only add a policy-rc.d if none exists.
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added_policy=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -q \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  } || rc=$?
  ((added_policy)) && rm -f "$policy"
  ((rc == 0)) || die "apt-get failed (rc=${rc})"
}

# ----------------------------------------------------------------------------
# Host preparation and configuration
# ----------------------------------------------------------------------------
prepare_host() {
  local names=() n
  # Node names (and this host's name) must resolve; all of them are 127.0.0.1.
  getent hosts "$SHORT_HOST" >/dev/null 2>&1 || names+=("$SHORT_HOST")
  while read -r n; do
    getent hosts "$n" >/dev/null 2>&1 || names+=("$n")
  done < <(node_names)
  if ((${#names[@]} > 0)); then
    log "adding '127.0.0.1 ${names[*]}' to /etc/hosts"
    # Append (not sed -i): /etc/hosts is often a bind mount in containers.
    printf '127.0.0.1 %s  # aiinfra dev-cluster\n' "${names[*]}" >>/etc/hosts
  fi

  mkdir -p "$SLURM_CONF_DIR" "$LOG_DIR" "$RUN_DIR" "${SPOOL_DIR}/slurmctld" \
    "$DB_DATA_DIR" "$DB_RUN_DIR"
  while read -r n; do mkdir -p "${SPOOL_DIR}/slurmd/${n}"; done < <(node_names)
  chown -R mysql:mysql "$DB_DIR"
  chmod 700 "$STATE_DIR"/spool
  # The state dir must be traversable by the munge and mysql users.
  chmod 755 "$STATE_DIR" "$LOG_DIR"

  if [[ ! -s "$DB_PASSWORD_FILE" ]]; then
    (umask 077; head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 >"$DB_PASSWORD_FILE")
  fi
}

# Hardware description of one node: this host's real topology, so that slurmd
# does not drain the node for "Low socket*core count".
node_hw() {
  local line cpus boards sockets cores threads
  line="$(slurmd -C 2>/dev/null | head -n1 || true)"
  cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$line")"
  boards="$(sed -n 's/.*Boards=\([0-9]*\).*/\1/p' <<<"$line")"
  sockets="$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$line")"
  cores="$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$line")"
  threads="$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$line")"
  if [[ -n "$cpus" && -n "$boards" && -n "$sockets" && -n "$cores" && -n "$threads" ]]; then
    echo "CPUs=${cpus} Boards=${boards} SocketsPerBoard=${sockets} CoresPerSocket=${cores} ThreadsPerCore=${threads}"
  else
    cpus="$(nproc)"
    echo "CPUs=${cpus} Boards=1 SocketsPerBoard=1 CoresPerSocket=${cpus} ThreadsPerCore=1"
  fi
}

# Sets SLURM_CONF_CHANGED / DBD_CONF_CHANGED to 1 when a file was rewritten.
SLURM_CONF_CHANGED=0
DBD_CONF_CHANGED=0
write_configs() {
  local last_port=$((SLURMD_BASE_PORT + NUM_NODES)) ports
  if ((NUM_NODES == 1)); then ports="$last_port"; else ports="$((SLURMD_BASE_PORT + 1))-${last_port}"; fi

  if write_if_changed "$SLURM_CONF" 644 root:root <<EOF; then SLURM_CONF_CHANGED=1; fi
# Generated by scripts/dev-cluster.sh -- local multi-node dev cluster.
# Do not edit by hand: rerun 'scripts/dev-cluster.sh up' after changing the script.
ClusterName=${CLUSTER_NAME}
SlurmctldHost=${SHORT_HOST}(127.0.0.1)
SlurmctldPort=${SLURMCTLD_PORT}
FirstJobId=${FIRST_JOB_ID}
SlurmUser=${SLURM_USER}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again
# (Slurm default 120 s); shortened so requeue tests do not idle for 2 minutes.
AuthInfo=cred_expire=${CRED_EXPIRE}
MpiDefault=none
MailProg=/bin/true

# No cgroups: track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30

# Consumable cores: several small jobs may share a node; memory is not a
# consumable resource (CR_Core, not CR_Core_Memory), so jobs need no --mem.
SchedulerType=sched/backfill
# Run the periodic schedulers often, so that jobs which become eligible by
# time (e.g. requeued jobs, see cred_expire) start within seconds.
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core

# Requeue: batch jobs are requeueable by default (scontrol requeue, node failure).
JobRequeue=1
# Reject at submit time a job that no partition can ever run (e.g. -N 5 on a
# 4-node partition); the default (NO) would leave it pending forever.
EnforcePartLimits=ALL
# Nodes that were DOWN come back as soon as their slurmd registers again.
ReturnToService=2
KillWait=5
MinJobAge=300
InactiveLimit=0
SlurmdTimeout=60
SlurmctldTimeout=60
Waittime=0

# Accounting through slurmdbd (sacct, sacctmgr).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=${SLURMDBD_PORT}
JobCompType=jobcomp/none

# State, pid and log files: all under ${STATE_DIR}.
StateSaveLocation=${SPOOL_DIR}/slurmctld
SlurmdSpoolDir=${SPOOL_DIR}/slurmd/%n
SlurmctldPidFile=${RUN_DIR}/slurmctld.pid
SlurmdPidFile=${RUN_DIR}/slurmd-%n.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info

# ${NUM_NODES} nodes, one slurmd each, all on this host (port per node).
NodeName=$(node_range) NodeHostname=${SHORT_HOST} NodeAddr=127.0.0.1 Port=${ports} $(node_hw) RealMemory=${NODE_MEM_MB} State=UNKNOWN
# Real preemption for the requeue tests: a job in urgent (higher PriorityTier, same
# nodes) preempts debug jobs it needs the nodes of (take them with --exclusive: cores are
# shared otherwise). The preempted step's ranks get SIGTERM at once and GraceTime seconds
# to checkpoint; then the job is requeued.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=${PARTITION} Nodes=$(node_range) Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=${GRACE_TIME}
PartitionName=${URGENT_PARTITION} Nodes=$(node_range) MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF

  if write_if_changed "$SLURMDBD_CONF" 600 "${SLURM_USER}:${SLURM_USER}" <<EOF; then DBD_CONF_CHANGED=1; fi
# Generated by scripts/dev-cluster.sh -- local multi-node dev cluster.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=${SLURMDBD_PORT}
SlurmUser=${SLURM_USER}
DebugLevel=info
LogFile=${LOG_DIR}/slurmdbd.log
PidFile=${RUN_DIR}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=${DB_PORT}
StorageUser=${DB_USER}
StoragePass=$(cat "$DB_PASSWORD_FILE")
StorageLoc=${DB_NAME}
EOF
}

# ----------------------------------------------------------------------------
# Daemons
# ----------------------------------------------------------------------------
munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if munge_works; then
    log "munged already running"
    return 0
  fi
  if [[ ! -s "$MUNGE_KEY" ]]; then
    log "creating ${MUNGE_KEY}"
    mkdir -p "$(dirname "$MUNGE_KEY")"
    if command -v mungekey >/dev/null 2>&1; then
      mungekey --create --keyfile="$MUNGE_KEY"
    else
      dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
  fi
  chown munge:munge "$MUNGE_KEY" "$(dirname "$MUNGE_KEY")"
  chmod 0400 "$MUNGE_KEY"
  chmod 0700 "$(dirname "$MUNGE_KEY")"
  mkdir -p "$MUNGE_RUN_DIR" /var/lib/munge
  chown munge:munge "$MUNGE_RUN_DIR" /var/lib/munge
  chmod 0755 "$MUNGE_RUN_DIR"
  touch "${LOG_DIR}/munged.log"
  chown munge:munge "${LOG_DIR}/munged.log"
  chmod 0640 "${LOG_DIR}/munged.log"

  log "starting munged"
  # munged forks into the background itself; --force removes a stale socket.
  spawn "${LOG_DIR}/munged.out" runuser -u munge -- munged --force --log-file="${LOG_DIR}/munged.log" \
    || { show_logs "${LOG_DIR}/munged.out" "${LOG_DIR}/munged.log"; die "munged failed to start"; }
  wait_for "$WAIT_TIMEOUT" "munge" "${LOG_DIR}/munged.out ${LOG_DIR}/munged.log" munge_works
  # Remember that we started it, so that 'down' stops only our munged.
  cp "$MUNGE_PID_FILE" "${RUN_DIR}/munged.pid" 2>/dev/null || true
}

db_sql() { mariadb --no-defaults --protocol=socket --socket="$DB_SOCKET" -uroot -N -B; }
db_alive() { mariadb-admin --no-defaults --socket="$DB_SOCKET" -uroot ping; }

start_mariadb() {
  local log_file="${LOG_DIR}/mariadb.log"
  if [[ ! -d "${DB_DATA_DIR}/mysql" ]]; then
    log "initialising mariadb datadir ${DB_DATA_DIR}"
    mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DATA_DIR" \
      --auth-root-authentication-method=socket --skip-test-db \
      >>"${LOG_DIR}/mariadb-install.log" 2>&1 \
      || { show_logs "${LOG_DIR}/mariadb-install.log"; die "mariadb-install-db failed"; }
  fi

  if daemon_pid mariadbd >/dev/null; then
    log "mariadbd already running (pid $(daemon_pid mariadbd))"
  else
    touch "$log_file"
    chown mysql:mysql "$log_file"
    log "starting mariadbd on 127.0.0.1:${DB_PORT}"
    spawn "${LOG_DIR}/mariadb.out" setsid -f mariadbd --no-defaults --user=mysql \
      --datadir="$DB_DATA_DIR" --socket="$DB_SOCKET" --pid-file="$DB_PID_FILE" \
      --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
      --log-error="$log_file" \
      --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900 \
      --innodb-log-file-size=64M --max-allowed-packet=64M
  fi
  wait_for "$WAIT_TIMEOUT" "mariadbd" "${LOG_DIR}/mariadb.out ${log_file}" db_alive

  # Database and user for slurmdbd (idempotent; keeps the password in sync).
  local pw
  pw="$(cat "$DB_PASSWORD_FILE")"
  db_sql <<EOF
CREATE DATABASE IF NOT EXISTS ${DB_NAME};
CREATE USER IF NOT EXISTS '${DB_USER}'@'localhost' IDENTIFIED BY '${pw}';
CREATE USER IF NOT EXISTS '${DB_USER}'@'127.0.0.1' IDENTIFIED BY '${pw}';
ALTER USER '${DB_USER}'@'localhost' IDENTIFIED BY '${pw}';
ALTER USER '${DB_USER}'@'127.0.0.1' IDENTIFIED BY '${pw}';
GRANT ALL PRIVILEGES ON ${DB_NAME}.* TO '${DB_USER}'@'localhost';
GRANT ALL PRIVILEGES ON ${DB_NAME}.* TO '${DB_USER}'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
}

dbd_alive() { sacctmgr -n -P show cluster format=Cluster; }

start_slurmdbd() {
  if daemon_pid slurmdbd >/dev/null; then
    log "slurmdbd already running (pid $(daemon_pid slurmdbd))"
  else
    log "starting slurmdbd"
    spawn "${LOG_DIR}/slurmdbd.out" slurmdbd \
      || { show_logs "${LOG_DIR}/slurmdbd.out" "${LOG_DIR}/slurmdbd.log"; die "slurmdbd failed to start"; }
  fi
  wait_for "$WAIT_TIMEOUT" "slurmdbd" "${LOG_DIR}/slurmdbd.out ${LOG_DIR}/slurmdbd.log" dbd_alive
}

# Cluster, account and user associations (only what is missing is added).
register_accounting() {
  if ! sacctmgr -n -P show cluster format=Cluster | grep -qx "$CLUSTER_NAME"; then
    log "registering cluster ${CLUSTER_NAME} in slurmdbd"
    sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null
  fi
  if ! sacctmgr -n -P show account "$ACCOUNT" format=Account | grep -qx "$ACCOUNT"; then
    log "adding account ${ACCOUNT}"
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER_NAME" \
      Description="aiinfra dev" Organization=aiinfra >/dev/null
  fi
  local users=(root) u
  [[ -n "${SUDO_USER:-}" && "${SUDO_USER}" != root ]] && users+=("$SUDO_USER")
  for u in "${users[@]}"; do
    if [[ -z "$(sacctmgr -n -P show assoc where cluster="$CLUSTER_NAME" account="$ACCOUNT" user="$u" format=User)" ]]; then
      log "adding user ${u} to account ${ACCOUNT}"
      sacctmgr -i add user "$u" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" Cluster="$CLUSTER_NAME" >/dev/null
    fi
  done
}

ctld_alive() { scontrol ping | grep -q 'is UP'; }

start_slurmctld() {
  if daemon_pid slurmctld >/dev/null; then
    log "slurmctld already running (pid $(daemon_pid slurmctld))"
  else
    log "starting slurmctld"
    spawn "${LOG_DIR}/slurmctld.out" slurmctld \
      || { show_logs "${LOG_DIR}/slurmctld.out" "${LOG_DIR}/slurmctld.log"; die "slurmctld failed to start"; }
  fi
  wait_for "$WAIT_TIMEOUT" "slurmctld" "${LOG_DIR}/slurmctld.out ${LOG_DIR}/slurmctld.log" ctld_alive
}

start_slurmds() {
  local n
  while read -r n; do
    if daemon_pid "$n" >/dev/null; then
      log "slurmd ${n} already running (pid $(daemon_pid "$n"))"
      continue
    fi
    log "starting slurmd ${n}"
    spawn "${LOG_DIR}/slurmd-${n}.out" slurmd -N "$n" \
      || { show_logs "${LOG_DIR}/slurmd-${n}.out" "${LOG_DIR}/slurmd-${n}.log"; die "slurmd ${n} failed to start"; }
  done < <(node_names)
}

# Node states that can run jobs (sinfo %T, no flag suffix such as '*' or '~').
node_usable() { [[ "$1" =~ ^(idle|mixed|allocated|completing|planned)$ ]]; }

# Succeeds when every node of the partition is usable.
all_nodes_usable() {
  local out name state count=0
  out="$(sinfo -h -N -p "$PARTITION" -o '%N %T' 2>/dev/null)" || return 1
  while read -r name state; do
    [[ -n "$name" ]] || continue
    node_usable "$state" || return 1
    count=$((count + 1))
  done <<<"$out"
  ((count == NUM_NODES))
}

wait_for_nodes() {
  local deadline=$((SECONDS + WAIT_TIMEOUT)) resumed=0 n logs=("${LOG_DIR}/slurmctld.log")
  while ! all_nodes_usable; do
    # Nodes left DOWN/DRAINED by an earlier run (not merely unreachable) are
    # resumed once: this is a throw-away dev cluster.
    if ((resumed == 0 && SECONDS + WAIT_TIMEOUT - deadline >= 10)); then
      resumed=1
      if sinfo -h -N -p "$PARTITION" -o '%T' | grep -Eq '^(down|drained|draining)$'; then
        log "resuming down/drained nodes"
        scontrol update NodeName="$(node_range)" State=RESUME >/dev/null 2>&1 || true
      fi
    fi
    if ((SECONDS >= deadline)); then
      log "timed out after ${WAIT_TIMEOUT}s waiting for all ${NUM_NODES} nodes to be idle"
      sinfo -N -l >&2 || true
      scontrol show node 2>/dev/null | grep -E 'NodeName=|State=|Reason=' >&2 || true
      while read -r n; do logs+=("${LOG_DIR}/slurmd-${n}.log"); done < <(node_names)
      show_logs "${logs[@]}"
      exit 1
    fi
    sleep 1
  done
}

# ----------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------
stop_slurm_daemons() {
  local n pid
  while read -r n; do
    if pid="$(daemon_pid "$n")"; then stop_pid "slurmd ${n}" "$pid"; fi
  done < <(node_names)
  if pid="$(daemon_pid slurmctld)"; then stop_pid slurmctld "$pid"; fi
}

cmd_up() {
  local t0=$SECONDS
  require_root
  install_packages
  prepare_host
  write_configs

  # A changed config needs a daemon restart to take effect.
  if ((SLURM_CONF_CHANGED)) && daemon_pid slurmctld >/dev/null; then
    log "slurm.conf changed: restarting slurmctld and slurmd"
    stop_slurm_daemons
  fi
  if ((DBD_CONF_CHANGED)); then
    local pid
    if pid="$(daemon_pid slurmdbd)"; then
      log "slurmdbd.conf changed: restarting slurmdbd"
      stop_pid slurmdbd "$pid"
    fi
  fi

  start_munge
  start_mariadb
  start_slurmdbd
  register_accounting
  start_slurmctld
  start_slurmds
  wait_for_nodes

  sinfo
  log "cluster up ($((SECONDS - t0))s); logs in ${LOG_DIR}"
}

cmd_down() {
  require_root
  local pid

  # Cancel jobs first so that no job steps outlive their slurmd and so that
  # the next 'up' starts with an empty queue.
  if [[ "${AIINFRA_DEV_CLUSTER_KEEP_JOBS:-0}" != 1 ]] && daemon_pid slurmctld >/dev/null \
     && ctld_alive >/dev/null 2>&1; then
    local jobs
    jobs="$(squeue -h -o '%i' 2>/dev/null | tr '\n' ' ')"
    if [[ -n "${jobs// /}" ]]; then
      log "cancelling jobs: ${jobs}"
      # shellcheck disable=SC2086  # word splitting of the job id list is intended
      scancel $jobs 2>/dev/null || true
      local deadline=$((SECONDS + 30))
      while [[ -n "$(squeue -h -t R,CG -o '%i' 2>/dev/null)" ]] && ((SECONDS < deadline)); do
        sleep 1
      done
    fi
  fi

  stop_slurm_daemons
  # Job steps orphaned by the slurmds (only possible when jobs were kept).
  if [[ "${AIINFRA_DEV_CLUSTER_KEEP_JOBS:-0}" != 1 ]]; then
    for pid in $(our_procs slurmstepd); do stop_pid slurmstepd "$pid"; done
  fi
  if pid="$(daemon_pid slurmdbd)"; then stop_pid slurmdbd "$pid"; fi
  if pid="$(daemon_pid mariadbd)"; then stop_pid mariadbd "$pid"; fi
  # munged: only stop the one this script started.
  if pid="$(daemon_pid munged)" && [[ "$(cat "${RUN_DIR}/munged.pid" 2>/dev/null)" == "$pid" ]]; then
    stop_pid munged "$pid"
  fi
  rm -f "${RUN_DIR}/munged.pid"
  log "cluster down"
}

cmd_status() {
  local ok=0 pid name
  printf '%-12s %s\n' DAEMON STATE
  for name in munged mariadbd slurmdbd slurmctld $(node_names); do
    if [[ "$name" == munged ]] && munge_works; then
      printf '%-12s running (pid %s)\n' "$name" "$(daemon_pid munged || echo '?')"
    elif pid="$(daemon_pid "$name")"; then
      printf '%-12s running (pid %s)\n' "$name" "$pid"
    else
      printf '%-12s stopped\n' "$name"
      ok=1
    fi
  done
  echo
  if ctld_alive >/dev/null 2>&1; then
    sinfo -N -o '%10N %10P %12T %5c %8m %E' || ok=1
    echo
    squeue || true
    all_nodes_usable || { echo "not all ${NUM_NODES} nodes are usable"; ok=1; }
  else
    echo "slurmctld is not answering"
    ok=1
  fi
  ((ok == 0)) || echo "cluster is NOT fully up (run: scripts/dev-cluster.sh up)"
  return "$ok"
}

usage() {
  sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
  exit 2
}

# Serialise up/down/restart (e.g. several test processes calling `up` at once).
# Daemons are started through spawn(), which closes fd 9, so they never hold it.
take_lock() {
  require_root
  mkdir -p "$STATE_DIR"
  exec 9>"${STATE_DIR}/.lock"
  flock -w 600 9 || die "another dev-cluster.sh is still running (lock ${STATE_DIR}/.lock)"
}

# Options after the command: --nodes N (same as AIINFRA_DEV_CLUSTER_NODES).
parse_options() {
  while (($#)); do
    case "$1" in
      --nodes) [[ "${2:-}" =~ ^[1-9][0-9]?$ ]] || die "--nodes takes 1..99"; NUM_NODES="$2"; shift 2 ;;
      *) usage ;;
    esac
  done
}

main() {
  local command="${1:-}"
  (($#)) && shift
  parse_options "$@"
  case "$command" in
    up)      take_lock; cmd_up ;;
    down)    take_lock; cmd_down ;;
    status)  cmd_status ;;
    restart) take_lock; cmd_down; cmd_up ;;
    -h|--help|help) usage ;;
    *) usage ;;
  esac
}

main "$@"
