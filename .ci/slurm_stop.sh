#!/usr/bin/env bash
# Stops the single-node SLURM cluster that .ci/slurm_start.sh started: cancels every job, then stops
# slurmd, slurmctld and munged. Run as root. Running it again (or with nothing running) changes nothing.
set -uo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "slurm_stop.sh: error: run as root (sudo $0)" >&2
    exit 1
fi
command -v scancel >/dev/null && scancel --quiet --state=PENDING,RUNNING,SUSPENDED 2>/dev/null
# each daemon is the process its pid file names (slurm_start.sh's slurm.conf and munged's default)
pid_files=(/run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid)
for pid_file in "${pid_files[@]}"; do
    [ -s "$pid_file" ] && kill "$(cat "$pid_file")" 2>/dev/null
done
for _ in $(seq 30); do
    left=""
    for pid_file in "${pid_files[@]}"; do
        [ -s "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null && left="$left $pid_file"
    done
    [ -z "$left" ] && { echo "slurm_stop.sh: SLURM stopped"; exit 0; }
    sleep 1
done
echo "slurm_stop.sh: error: still running after 30 s:$left" >&2
exit 1
