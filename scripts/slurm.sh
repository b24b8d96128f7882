#!/usr/bin/env bash
# A real single-node Slurm for the executor tests: installs slurm-wlm and munge (apt-get, as
# root), writes a minimal slurm.conf for this machine (cons_tres, no cgroups, no accounting
# database) and starts munged, slurmctld and slurmd unless they run. Idempotent.
# Exits 0 when `sinfo` shows the node idle, 1 otherwise (callers may ignore it: the tests skip).
set -u
log() { echo "slurm: $*"; }
if [ "$(id -u)" != "0" ]; then log "not root; cannot install or start Slurm"; exit 1; fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || { log "slurm-wlm not installed and no apt-get"; exit 1; }
  log "installing slurm-wlm munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq slurm-wlm munge >/dev/null; }; } \
    || { log "could not install slurm-wlm munge"; exit 1; }
fi

node=$(hostname -s)
cpus=$(nproc)
# Slurm refuses a node that reports less memory than configured: stay below MemTotal.
mem=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
conf_dir=/etc/slurm
mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
conf=$(cat <<CONF
# Written by kifabrik scripts/slurm.sh: one node, jobs run as root, no cgroups, no accounting.
ClusterName=kf
SlurmctldHost=$node
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MinJobAge=600
NodeName=$node CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
)
restart=0
if [ "$(cat "$conf_dir/slurm.conf" 2>/dev/null)" != "$conf" ]; then
  printf '%s\n' "$conf" > "$conf_dir/slurm.conf"
  restart=1
fi

chown munge:munge /run/munge 2>/dev/null || true
if [ ! -s /etc/munge/munge.key ]; then
  command -v mungekey >/dev/null 2>&1 && mungekey --create --force >/dev/null 2>&1 \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
running() { pgrep -x "$1" >/dev/null 2>&1; }
running munged || su -s /bin/sh munge -c munged || runuser -u munge -- munged || { log "munged did not start"; exit 1; }
if [ "$restart" = 1 ]; then  # a changed configuration: restart the daemons that read the old one
  for d in slurmd slurmctld; do pid=$(pgrep -x "$d") && kill "$pid"; done
  sleep 1
fi
running slurmctld || slurmctld || { log "slurmctld did not start (see /var/log/slurm/slurmctld.log)"; exit 1; }
running slurmd || slurmd || { log "slurmd did not start (see /var/log/slurm/slurmd.log)"; exit 1; }

for _ in $(seq 30); do
  state=$(sinfo -h -N -n "$node" -o %T 2>/dev/null | head -n1)
  case "$state" in
    idle|mixed|allocated) log "node $node $state (slurm.conf: $conf_dir/slurm.conf)"; exit 0 ;;
    down*|drain*) scontrol update nodename="$node" state=resume >/dev/null 2>&1 ;;
  esac
  sleep 1
done
log "node $node not idle after 30 s (state: ${state:-none}); see /var/log/slurm/"
exit 1
