#!/usr/bin/env bash
# Stop the test cluster started by slurm/start.sh: cancel every job, then end each daemon by
# its recorded PID (slurmd, slurmctld, slurmdbd, mariadb, munged) and wait for it to exit.
# Idempotent: exits 0 when nothing runs. Leaves the state dir (logs) in place.
#   HARNESS_SLURM_DIR   state dir (default /tmp/harness-slurm)
#   --quiet             print only problems
set -uo pipefail

T0=$(date +%s.%N)
DIR=${HARNESS_SLURM_DIR:-/tmp/harness-slurm}
QUIET=0
[ "${1:-}" = "--quiet" ] && QUIET=1
log() { [ "$QUIET" -eq 1 ] || echo "stop.sh: $*"; }

if [ ! -d "$DIR/pids" ]; then
    log "nothing to stop (no $DIR/pids)"
    exit 0
fi
if [ -f "$DIR/etc/slurm.conf" ]; then
    export SLURM_CONF=$DIR/etc/slurm.conf
fi

# expected process name of each daemon: never signal a PID that was reused by something else
comm_of() {
    case $1 in
        slurmd) echo slurmd ;; slurmctld) echo slurmctld ;; slurmdbd) echo slurmdbd ;;
        mariadb) echo mariadbd ;; munged) echo munged ;;
    esac
}
pid_of() {
    # pid_of NAME: the recorded PID if it is alive and is that daemon, else empty
    local f=$DIR/pids/$1.pid pid
    [ -s "$f" ] || return 0
    pid=$(tr -dc '0-9' < "$f")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 0
    [ "$(cat "/proc/$pid/comm")" = "$(comm_of "$1")" ] && echo "$pid"
    return 0
}

# 1. cancel jobs while slurmctld still runs (job processes outlive slurmd), wait briefly
if [ -n "$(pid_of slurmctld)" ] && command -v squeue >/dev/null; then
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs 2>/dev/null || true
        for _ in $(seq 1 40); do   # up to ~10 s (KillWait=5 plus cleanup)
            [ -z "$(timeout 5 squeue -h -o %A 2>/dev/null)" ] && break
            sleep 0.25
        done
    fi
fi

# 2. end daemons by PID, in three phases (each TERM, wait up to 20 s, then KILL):
#    slurmd + slurmctld, then slurmdbd (slurmctld flushes accounting to it on the way down),
#    then mariadb + munged. Daemons within a phase stop in parallel (each takes ~2-4 s).
stop_phase() {
    local name pid pids=() names=()
    for name in "$@"; do
        pid=$(pid_of "$name")
        if [ -z "$pid" ]; then
            rm -f "$DIR/pids/$name.pid"
            continue
        fi
        kill -TERM "$pid" 2>/dev/null
        pids+=("$pid"); names+=("$name")
    done
    local i left
    for _ in $(seq 1 200); do
        left=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
        [ "$left" -eq 0 ] && break
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        pid=${pids[$i]}; name=${names[$i]}
        if kill -0 "$pid" 2>/dev/null; then
            echo "stop.sh: $name (pid $pid) ignored SIGTERM for 20 s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null
            sleep 0.5
        fi
        if kill -0 "$pid" 2>/dev/null; then
            echo "stop.sh: WARNING: $name (pid $pid) is still running" >&2   # report, never fail
        else
            log "stopped $name (pid $pid)"
            rm -f "$DIR/pids/$name.pid"
        fi
    done
}
stop_phase slurmd slurmctld
stop_phase slurmdbd
stop_phase mariadb munged
rm -f "$DIR/munge/munged.pid"

log "stopped in $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $T0}") s"
exit 0
