#!/usr/bin/env bash
# A real single-node Slurm on this host, for tests/test_slurm.py (and for trying the slurm runtime).
#
# Installs slurm-wlm and munge when missing (Debian/Ubuntu, as root), writes a minimal slurm.conf
# (this host as the only node, its CPUs and most of its memory, no cgroups, no accounting database),
# starts munged, slurmctld and slurmd in the background and waits until `sinfo` shows the node idle.
# Idempotent: when the node already answers idle it does nothing. Stop it with `scripts/ci-slurm.sh stop`.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
STATE=/var/spool/slurm-ci
LOGS=/var/log/slurm-ci
NODE=$(hostname -s)

log() { echo "ci-slurm: $*" >&2; }

if [[ "${1:-}" == "stop" ]]; then
    for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" /run/munge/munged.pid; do
        [[ -f $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    log "stopped"
    exit 0
fi

node_idle() {
    timeout 10 sinfo --noheader --nodes "$NODE" --format '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'
}

if command -v sinfo >/dev/null && [[ -f $CONF ]] && node_idle; then
    log "already up: $(sinfo --noheader --format '%P %t %D' | head -1)"
    exit 0
fi

MARK="# written by scripts/ci-slurm.sh"
if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
    log "$CONF exists and was not written by this script: not touching a real cluster's configuration"
    exit 1
fi

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (it installs packages and starts the Slurm daemons)"
    exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q slurm-wlm munge >/dev/null
fi

# --- munge: a key and the daemon (as the munge user) -------------------------------------------------
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null || { log "munged did not start (see /var/log/munge/munged.log)"; exit 1; }

# --- slurm.conf: one node, this host ------------------------------------------------------------------
CPUS=$(nproc)
MEM_MB=$(free -m | awk '/^Mem:/ {print int($2 * 0.9)}')
mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" "$LOGS"
cat > "$CONF" <<EOF
$MARK: a single-node test cluster, not for production
ClusterName=mergebench-ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
# finished jobs stay visible to scontrol/squeue for an hour (there is no accounting database for sacct)
MinJobAge=3600
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

# --- the daemons --------------------------------------------------------------------------------------
pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ! pid_alive "$STATE/slurmctld.pid"; then
    /usr/sbin/slurmctld -i   # -i: ignore state files from an earlier, different configuration
fi
if ! pid_alive "$STATE/slurmd.pid"; then
    /usr/sbin/slurmd
fi

for _ in $(seq 120); do
    if node_idle; then
        log "up: $(sinfo --noheader --format '%P %t %D %c CPUs' | head -1)"
        exit 0
    fi
    state=$(timeout 10 sinfo --noheader --nodes "$NODE" --format '%t' 2>/dev/null || true)
    if [[ $state == down* || $state == drain* ]]; then
        scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
    fi
    sleep 0.5
done
log "the node did not become idle within 60 s; see $LOGS/slurmctld.log and $LOGS/slurmd.log"
sinfo -N -l >&2 || true
exit 1
