#!/usr/bin/env bash
# slurm-local.sh start|stop|status — a one-node Slurm cluster on this machine, for the sweep test
# (crates/zoo-cli/tests/slurm.rs) and for trying `zoo sweep --slurm` by hand.
#
# Needs root and Debian's `slurm-wlm` + `munge` (`apt-get install slurm-wlm munge`). Everything it
# writes lives in one folder, ${SLURM_LOCAL_DIR:-/tmp/zoo-slurm}: its own munge key and munged
# (private socket, so a system munged is neither needed nor touched), a slurm.conf for one node
# (this host, `hostname -s`, at 127.0.0.1), state, spool, logs and pid files. Nothing under /etc
# changes, so clients must point at the config:
#
#     export SLURM_CONF=${SLURM_LOCAL_DIR:-/tmp/zoo-slurm}/slurm.conf    # then sbatch, squeue, sinfo
#
# Works without systemd and without cgroups (proctrack/linuxproc, task/none), as in a container.
# `start` is idempotent (daemons already running are kept) and waits until the node is idle;
# `stop` ends only the daemons whose pid files it wrote; `status` exits 0 when all three are up.
# Environment: SLURM_LOCAL_DIR, SLURM_LOCAL_CTLD_PORT (6817), SLURM_LOCAL_SLURMD_PORT (6818),
# SLURM_LOCAL_TIMEOUT (seconds to wait for the idle node, 60).
set -euo pipefail

dir=${SLURM_LOCAL_DIR:-/tmp/zoo-slurm}
ctld_port=${SLURM_LOCAL_CTLD_PORT:-6817}
slurmd_port=${SLURM_LOCAL_SLURMD_PORT:-6818}
ready_timeout=${SLURM_LOCAL_TIMEOUT:-60}
node=$(hostname -s)
conf=$dir/slurm.conf
munge_socket=$dir/munge/munge.socket
export SLURM_CONF=$conf

die() {
  echo "slurm-local: $*" >&2
  exit 1
}

# The pid in FILE when that process is alive and is the program NAME (a stale file whose pid was
# reused by something else must not count, nor be killed by `stop`).
running_pid() {
  local file=$1 name=$2 pid
  [[ -s $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$name" ]] || return 1
  echo "$pid"
}

log_tails() {
  local f
  for f in "$dir"/log/*.log; do
    [[ -e $f ]] || continue
    echo "---- last lines of $f ----" >&2
    tail -n 25 "$f" >&2
  done
}

check_prerequisites() {
  [[ $(id -u) == 0 ]] || die "must run as root (slurmd starts each job as the user who submitted it)"
  local program
  for program in munged munge unmunge slurmctld slurmd sinfo sbatch; do
    command -v "$program" >/dev/null 2>&1 ||
      die "\`$program\` not found; install the packages with: apt-get install -y slurm-wlm munge"
  done
}

start_munged() {
  if running_pid "$dir/munge/munged.pid" munged >/dev/null; then return; fi
  # munged refuses a key folder that others can write to, and warns unless everyone may enter
  # the socket's folder (non-root clients); the key itself stays readable by root only.
  install -d -m 0755 "$dir/munge"
  if [[ ! -s $dir/munge/munge.key ]]; then
    if command -v mungekey >/dev/null 2>&1; then
      mungekey --create --keyfile="$dir/munge/munge.key"
    else
      dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 0400 "$dir/munge/munge.key"
  fi
  # --force: munged otherwise refuses to run as root; here root runs the whole test cluster.
  munged --force \
    --key-file="$dir/munge/munge.key" \
    --socket="$munge_socket" \
    --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munged.seed" ||
    { log_tails; die "munged did not start"; }
  local tries
  for tries in $(seq 50); do
    if munge -n -S "$munge_socket" 2>/dev/null | unmunge -S "$munge_socket" >/dev/null 2>&1; then
      return
    fi
    sleep 0.1
  done
  log_tails
  die "munged started but a credential does not round-trip through $munge_socket"
}

write_conf() {
  local cpus mem_mb
  cpus=$(nproc)
  # A little under MemTotal: slurmd marks a node invalid whose configured memory exceeds what it
  # measures itself.
  mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.95)}' /proc/meminfo)
  cat >"$conf.tmp" <<EOF
# Written by scripts/slurm-local.sh: a one-node test cluster; rewritten on every fresh start.
ClusterName=zoo-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$munge_socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups (a container may not have a writable cgroup tree): track job processes by
# parent pid from /proc and bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
SchedulerType=sched/builtin
SelectType=select/cons_tres
# Cores only: with memory as a resource too, each job would get the whole node's memory and the
# array tasks would run one at a time.
SelectTypeParameters=CR_Core
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=600
SlurmdTimeout=60
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$conf.tmp" "$conf"
}

node_state() {
  sinfo -h -N -n "$node" -o '%T' 2>/dev/null | head -n 1
}

wait_until_idle() {
  local deadline=$((SECONDS + ready_timeout)) state="" resumed=no
  while ((SECONDS < deadline)); do
    # Fail fast when a daemon died (a port in use, a bad config): its log says why.
    local name
    for name in slurmctld slurmd; do
      if [[ -e $dir/$name.pid ]] && ! running_pid "$dir/$name.pid" "$name" >/dev/null; then
        log_tails
        die "$name exited while starting (a port in use? set SLURM_LOCAL_CTLD_PORT / SLURM_LOCAL_SLURMD_PORT); see $dir/log/$name.log"
      fi
    done
    state=$(node_state || true)
    case $state in
      idle | mixed | allocated | completing) return ;;
      # A node left drained or down by an earlier slurmd that died: put it back once.
      drained | draining | down)
        if [[ $resumed == no ]]; then
          scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
          resumed=yes
        fi
        ;;
    esac
    sleep 0.5
  done
  log_tails
  die "node $node not idle after ${ready_timeout}s (last state: '${state:-no answer from slurmctld}'); see the logs in $dir/log, config $conf"
}

start() {
  check_prerequisites
  install -d -m 0755 "$dir" "$dir/log" "$dir/state" "$dir/spool"
  start_munged
  local ctld_pid slurmd_pid
  ctld_pid=$(running_pid "$dir/slurmctld.pid" slurmctld || true)
  slurmd_pid=$(running_pid "$dir/slurmd.pid" slurmd || true)
  # A running daemon keeps the config it read; rewrite it only when neither is running.
  if [[ -z $ctld_pid && -z $slurmd_pid ]]; then write_conf; fi
  if [[ -z $ctld_pid ]]; then
    # -c: start with no jobs from an earlier session of this test cluster.
    slurmctld -c -f "$conf" || { log_tails; die "slurmctld did not start"; }
  fi
  if [[ -z $slurmd_pid ]]; then
    slurmd -f "$conf" -N "$node" || { log_tails; die "slurmd did not start"; }
  fi
  wait_until_idle
  echo "slurm-local: node $node is up ($(nproc) CPUs, partition debug); use: export SLURM_CONF=$conf"
}

# Sends TERM to the daemon in FILE, then KILL if it is still there after 10 s.
stop_daemon() {
  local file=$1 name=$2 pid tries
  pid=$(running_pid "$file" "$name") || { rm -f "$file"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for tries in $(seq 100); do
    [[ -d /proc/$pid ]] || break
    sleep 0.1
  done
  if [[ -d /proc/$pid ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$file"
  echo "slurm-local: stopped $name ($pid)"
}

stop() {
  # Cancel what is still queued or running, so no job step outlives its slurmd.
  if running_pid "$dir/slurmctld.pid" slurmctld >/dev/null && [[ -e $conf ]]; then
    local jobs
    jobs=$(squeue -h -o '%A' 2>/dev/null || true)
    if [[ -n $jobs ]]; then
      # shellcheck disable=SC2086 # one argument per job id
      scancel $jobs 2>/dev/null || true
      sleep 1
    fi
  fi
  stop_daemon "$dir/slurmd.pid" slurmd
  stop_daemon "$dir/slurmctld.pid" slurmctld
  stop_daemon "$dir/munge/munged.pid" munged
}

status() {
  local all_up=0 pid name file
  for name in munged slurmctld slurmd; do
    file=$dir/$name.pid
    [[ $name == munged ]] && file=$dir/munge/munged.pid
    if pid=$(running_pid "$file" "$name"); then
      echo "$name: running ($pid)"
    else
      echo "$name: stopped"
      all_up=3
    fi
  done
  if [[ $all_up == 0 ]]; then
    echo "node $node: $(node_state || echo 'no answer')"
    echo "SLURM_CONF=$conf"
  fi
  return "$all_up"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: $0 start|stop|status   (folder: \${SLURM_LOCAL_DIR:-/tmp/zoo-slurm})" >&2
    exit 2
    ;;
esac
