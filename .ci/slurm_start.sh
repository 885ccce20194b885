#!/usr/bin/env bash
# A single-node SLURM cluster on this Debian/Ubuntu machine, for sweep.py's SLURM tests (tests/test_slurm.py):
# installs slurm-wlm and munge with apt when missing, writes a minimal slurm.conf with one CPU partition
# ("cpu", the default), starts munged, slurmctld and slurmd, and waits for the node to be idle.
# Run as root; running it again on a working cluster changes nothing.   Stop it: .ci/slurm_stop.sh
#     sudo .ci/slurm_start.sh && sinfo
# SLURM_CPUS (default: this machine's cores + 1) sets how many CPUs the node offers the scheduler: one more
# than the cores, so that a job held stopped (tests/test_slurm.py holds one for up to 30 s) leaves none idle.
set -euo pipefail

fail() { echo "slurm_start.sh: error: $*" >&2; exit 1; }

node_idle() { sinfo -h -N -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; }

if command -v sinfo >/dev/null && node_idle; then
    echo "slurm_start.sh: SLURM is up: $(sinfo -h -o '%P %D %t %c' | tr '\n' ' ')"
    exit 0
fi
[ "$(id -u)" = 0 ] || fail "run as root (sudo $0): it installs packages and starts the SLURM daemons"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || fail "slurm-wlm and munge are not installed and there is no apt-get here"
    echo "slurm_start.sh: installing slurm-wlm and munge (about a minute)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
fi

# munge: the key the daemons authenticate with (the package makes one; a container may not have run it)
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chmod 400 /etc/munge/munge.key
if ! munge -n </dev/null >/dev/null 2>&1; then  # no munged answering yet
    if id munge >/dev/null 2>&1; then
        chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
        runuser -u munge -- munged
    else
        munged --force
    fi
fi

# slurm.conf: this host as controller and only node; processes tracked without cgroups (containers)
host=$(hostname -s)
cpus=${SLURM_CPUS:-$(( $(nproc) + 1 ))}
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
conf_dir=/etc/slurm
[ -d /etc/slurm-llnl ] && [ ! -d /etc/slurm ] && conf_dir=/etc/slurm-llnl  # older Debian/Ubuntu
mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > "$conf_dir/slurm.conf.tmp" <<EOF
# written by .ci/slurm_start.sh: a single-node cluster for tests
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=60
KillWait=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
# a daemon is the process its pid file names
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ! cmp -s "$conf_dir/slurm.conf.tmp" "$conf_dir/slurm.conf"; then
    mv "$conf_dir/slurm.conf.tmp" "$conf_dir/slurm.conf"
    for pid_file in /run/slurmctld.pid /run/slurmd.pid; do  # they read the new configuration on start
        if running "$pid_file"; then kill "$(cat "$pid_file")"; fi
    done
    sleep 2
else
    rm "$conf_dir/slurm.conf.tmp"
fi

running /run/slurmctld.pid || slurmctld
running /run/slurmd.pid || slurmd
for _ in $(seq 60); do
    if node_idle; then
        echo "slurm_start.sh: SLURM is up: $(sinfo -h -o '%P %D %t %c' | tr '\n' ' ')"
        exit 0
    fi
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true  # a node left down by a stop
    sleep 1
done
fail "the node did not become idle in 60 s: see /var/log/slurm/slurmctld.log and slurmd.log ($(sinfo -h -N -o '%N %t %E' 2>&1 | head -1))"
