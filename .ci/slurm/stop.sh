#!/usr/bin/env bash
# Stop the cluster that start.sh started from $SLURM_ROOT, and leave nothing of it running:
# cancel its jobs, shut slurmctld and slurmd down, stop munged, then end any process that still
# belongs to this cluster (its daemons by pid file; job processes by the SLURM_CONF=$SLURM_ROOT/...
# in their environment, so no other process on the machine is touched).
# Safe to call at any time, any number of times (also when start.sh failed half way).
#   SLURM_ROOT=/tmp/ub-slurm bash .ci/slurm/stop.sh [--purge]    # --purge: also delete SLURM_ROOT
set -uo pipefail

R=${SLURM_ROOT:-/tmp/unlearnbench-slurm}
export SLURM_CONF=$R/etc/slurm.conf
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if alive "$R/run/slurmctld.pid"; then
    scancel --full --state=PENDING,RUNNING,SUSPENDED,REQUEUED 2>/dev/null
    for _ in $(seq 1 50); do   # up to 10 s for the jobs to go
        [ -z "$(squeue -h -t PENDING,RUNNING,COMPLETING,SUSPENDED -o %i 2>/dev/null)" ] && break
        sleep 0.2
    done
    scontrol shutdown 2>/dev/null   # stops slurmctld and every slurmd
fi

for daemon in slurmd slurmctld munged; do
    pidfile=$R/run/$daemon.pid
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        [ "$daemon" = munged ] && munged --socket="$R/munge/munge.socket" --stop 2>/dev/null
        [ "$daemon" = munged ] || kill "$pid" 2>/dev/null   # no-op after a clean shutdown
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && { echo "slurm/stop.sh: $daemon ($pid) needed SIGKILL" >&2; kill -9 "$pid"; }
    fi
    rm -f "$pidfile"
done

# Job processes (slurmstepd's children, the jobs' snakemake and python) outlive a slurmd that is
# killed; find them by this cluster's SLURM_CONF in their environment. Never this script or
# its callers, which may have sourced env.sh.
protected=" $$ "
p=$$
while [ "$p" -gt 1 ] 2>/dev/null; do
    p=$(awk '/^PPid:/{print $2}' "/proc/$p/status" 2>/dev/null) || break
    [ -n "$p" ] || break
    protected="$protected$p "
done
leftovers() {
    for env in /proc/[0-9]*/environ; do
        pid=${env#/proc/}; pid=${pid%/environ}
        case "$protected" in *" $pid "*) continue ;; esac
        grep -qzxF "SLURM_CONF=$SLURM_CONF" "$env" 2>/dev/null && echo "$pid"
    done
}
left=$(leftovers)
if [ -n "$left" ]; then
    echo "slurm/stop.sh: ending leftover processes of this cluster:" >&2
    ps -o pid=,args= -p "$(echo $left | tr ' ' ,)" >&2
    kill $left 2>/dev/null; sleep 1
    left=$(leftovers); [ -n "$left" ] && kill -9 $left 2>/dev/null
fi

rm -f "$R/munge/munge.socket" "$R/munge/munge.socket.lock"
if [ "${1:-}" = --purge ]; then
    rm -rf "$R"
fi
echo "slurm/stop.sh: stopped the cluster of $R"
exit 0
