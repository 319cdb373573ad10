#!/usr/bin/env bash
# Start a fresh single-node SLURM cluster with accounting (munged, MariaDB, slurmdbd,
# slurmctld, slurmd) for tests and CI. Needs root and the packages from slurm/install.sh.
#
# Everything lives in one state dir: $HARNESS_SLURM_DIR (default /tmp/harness-slurm):
#   etc/slurm.conf etc/slurmdbd.conf   config (/etc/slurm/slurm.conf is a symlink to the first)
#   env.sh                             `source` it to get SLURM_CONF (optional: /etc/slurm works)
#   munge/ mysql/ state/ spool/        daemon data
#   log/*.log                          daemon logs
#   pids/*.pid                         one PID per daemon (slurm/stop.sh kills by these)
#
# Each start is fresh: a running harness cluster is stopped first (its jobs cancelled), the
# controller state is wiped and slurmctld starts with -c (job ids from 1 again), and the
# accounting database is dropped, so sacct never reports stale states of an earlier job that
# had the same id.
#
# Tunables (env): HARNESS_SLURM_DIR, HARNESS_SLURM_CPUS (CPUs the node advertises, default 8),
# HARNESS_SLURM_MEM_PER_CPU (DefMemPerCPU in MB, default 512), HARNESS_SLURM_CLUSTER (harness),
# HARNESS_SLURM_TIMEOUT (seconds to wait for each daemon, default 60).
set -euo pipefail

T0=$(date +%s.%N)
DIR=${HARNESS_SLURM_DIR:-/tmp/harness-slurm}
CPUS=${HARNESS_SLURM_CPUS:-8}
MEM_PER_CPU=${HARNESS_SLURM_MEM_PER_CPU:-512}
CLUSTER=${HARNESS_SLURM_CLUSTER:-harness}
WAIT=${HARNESS_SLURM_TIMEOUT:-60}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

MYSQL_SOCK=/run/mysqld/mysqld.sock   # libmariadb's default: slurmdbd finds it without config
MUNGE_SOCK=/run/munge/munge.socket.2 # libmunge's default: every slurm client finds it

log() { echo "start.sh: $*"; }

die() {
    # die MESSAGE [LOGFILE...]: print the message and the tail of each log, then exit 1
    local msg=$1; shift
    echo "start.sh: ERROR: $msg" >&2
    local f
    for f in "$@"; do
        if [ -s "$f" ]; then
            echo "----- last 30 lines of $f -----" >&2
            tail -n 30 "$f" >&2
            echo "-----" >&2
        fi
    done
    echo "start.sh: daemons that did start are still running: slurm/stop.sh ends them" >&2
    exit 1
}

if [ "$(id -u)" -ne 0 ]; then
    die "must run as root (it starts munged, MariaDB and the SLURM daemons as their users)"
fi
for b in munged mungekey mariadbd mariadb-install-db mariadb slurmdbd slurmctld slurmd sacctmgr sinfo; do
    command -v "$b" >/dev/null || die "$b not found: run slurm/install.sh first"
done

# --- stop whatever an earlier start left running (idempotent), then lay out the dir ---------
if [ -d "$DIR/pids" ]; then
    HARNESS_SLURM_DIR=$DIR "$HERE/stop.sh" --quiet || true
fi

mkdir -p "$DIR"/{etc,log,pids,state,spool,munge,mysql}
chmod 755 "$DIR"              # munge and mysql must traverse it
rm -f "$DIR"/log/*.log "$DIR"/pids/*.pid
# Fresh controller state: `slurmctld -c` drops jobs but still continues job ids from the saved
# state; wiping it makes ids start from 1 again, matching the dropped accounting database.
rm -rf "${DIR:?}"/state/* "${DIR:?}"/spool/*
HOST=$(hostname -s)

# wait_for SECONDS PIDFILE COMMAND...: poll COMMAND until it succeeds; give up at once when
# the daemon whose PID is in PIDFILE has died (PIDFILE "-" to skip that check)
wait_for() {
    local secs=$1 pidfile=$2; shift 2
    local deadline=$(( $(date +%s) + secs ))
    until timeout 5 "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then return 1; fi
        if [ "$pidfile" != - ] && [ -s "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "start.sh: $(basename "$pidfile" .pid) (pid $(cat "$pidfile")) died" >&2
            return 1
        fi
        sleep 0.2
    done
}

# alive PIDFILE: the PID recorded in PIDFILE is a running process
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# --- config -------------------------------------------------------------------------------
# Node memory from the hardware (slurmd -C); config_overrides lets the node advertise more
# CPUs than it has, so several small jobs run at once on a 2-core machine.
REAL_MEM=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)
REAL_MEM=${REAL_MEM:-4096}

cat > "$DIR/etc/slurm.conf" <<EOF
# Written by scaling-harness slurm/start.sh for the test cluster in $DIR. Do not edit:
# every start rewrites it.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$MEM_PER_CPU
KillWait=5
MinJobAge=300
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SlurmdParameters=config_overrides
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/pids/slurmctld.pid
SlurmdPidFile=$DIR/pids/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS Sockets=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

cat > "$DIR/etc/slurmdbd.conf" <<EOF
# Written by scaling-harness slurm/start.sh.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/pids/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
chmod 600 "$DIR/etc/slurmdbd.conf"

cat > "$DIR/env.sh" <<EOF
# source this file to talk to the harness test cluster (also reachable via /etc/slurm/slurm.conf)
export SLURM_CONF=$DIR/etc/slurm.conf
export HARNESS_SLURM_DIR=$DIR
EOF
export SLURM_CONF=$DIR/etc/slurm.conf

# Clients (sbatch, squeue, sacct, scancel, and scontrol inside jobs) read /etc/slurm/slurm.conf
# when SLURM_CONF is not set: point it at ours. A foreign file there is kept as a backup.
mkdir -p /etc/slurm
if [ -e /etc/slurm/slurm.conf ] && [ ! -L /etc/slurm/slurm.conf ] \
        && ! grep -q 'scaling-harness slurm/start.sh' /etc/slurm/slurm.conf; then
    mv /etc/slurm/slurm.conf /etc/slurm/slurm.conf.before-harness
    log "moved an existing /etc/slurm/slurm.conf to /etc/slurm/slurm.conf.before-harness"
fi
ln -sfn "$DIR/etc/slurm.conf" /etc/slurm/slurm.conf

# --- munged -------------------------------------------------------------------------------
mkdir -p /run/munge
chown munge:munge /run/munge "$DIR/munge"
chmod 755 /run/munge
chmod 700 "$DIR/munge"
if [ ! -s "$DIR/munge/munge.key" ]; then
    mungekey --create --keyfile="$DIR/munge/munge.key" >/dev/null
fi
chown munge:munge "$DIR/munge/munge.key"
touch "$DIR/log/munged.log" && chown munge:munge "$DIR/log/munged.log"
chmod 400 "$DIR/munge/munge.key"
runuser -u munge -- munged --force --socket="$MUNGE_SOCK" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munged.seed" \
    || die "munged failed to start" "$DIR/log/munged.log"
wait_for "$WAIT" - test -s "$DIR/munge/munged.pid" \
    || die "munged wrote no PID file" "$DIR/log/munged.log"
cp "$DIR/munge/munged.pid" "$DIR/pids/munged.pid"
wait_for "$WAIT" "$DIR/pids/munged.pid" sh -c 'munge -n -S '"$MUNGE_SOCK"' | unmunge -S '"$MUNGE_SOCK" \
    || die "munge does not answer on $MUNGE_SOCK" "$DIR/log/munged.log"

# --- MariaDB (unix socket only) -----------------------------------------------------------
mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld "$DIR/mysql"
if [ ! -d "$DIR/mysql/mysql" ]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/mysql" \
        --auth-root-authentication-method=socket --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed" "$DIR/log/mariadb-install.log"
fi
setsid mariadbd --no-defaults --user=mysql --datadir="$DIR/mysql" --socket="$MYSQL_SOCK" \
    --pid-file="$DIR/mysql/mariadbd.pid" --log-error="$DIR/log/mariadb.log" \
    --skip-networking --skip-log-bin --innodb-buffer-pool-size=256M \
    --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
    </dev/null >>"$DIR/log/mariadb.log" 2>&1 &
echo $! > "$DIR/pids/mariadb.pid"
wait_for "$WAIT" "$DIR/pids/mariadb.pid" mariadb --no-defaults -uroot --socket="$MYSQL_SOCK" -e 'SELECT 1' \
    || die "MariaDB does not answer on $MYSQL_SOCK" "$DIR/log/mariadb.log"
# A fresh slurmctld -c numbers jobs from 1 again: old accounting rows would shadow new jobs.
mariadb --no-defaults -uroot --socket="$MYSQL_SOCK" \
    -e 'DROP DATABASE IF EXISTS slurm_acct_db; CREATE DATABASE slurm_acct_db;' \
    || die "could not reset the accounting database" "$DIR/log/mariadb.log"

# --- slurmdbd -----------------------------------------------------------------------------
slurmdbd >>"$DIR/log/slurmdbd.log" 2>&1 || die "slurmdbd failed to start" "$DIR/log/slurmdbd.log"
wait_for "$WAIT" "$DIR/pids/slurmdbd.pid" sacctmgr -n show cluster \
    || die "slurmdbd does not answer (sacctmgr show cluster)" "$DIR/log/slurmdbd.log"
alive "$DIR/pids/slurmdbd.pid" || die "slurmdbd is not running" "$DIR/log/slurmdbd.log"
if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null \
        || die "could not register cluster $CLUSTER" "$DIR/log/slurmdbd.log"
fi

# --- slurmctld (fresh state) and slurmd ---------------------------------------------------
slurmctld -c >>"$DIR/log/slurmctld.log" 2>&1 \
    || die "slurmctld failed to start" "$DIR/log/slurmctld.log"
wait_for "$WAIT" "$DIR/pids/slurmctld.pid" scontrol ping \
    || die "slurmctld does not answer (scontrol ping)" "$DIR/log/slurmctld.log"
alive "$DIR/pids/slurmctld.pid" || die "slurmctld is not running" "$DIR/log/slurmctld.log"

slurmd >>"$DIR/log/slurmd.log" 2>&1 || die "slurmd failed to start" "$DIR/log/slurmd.log"
wait_for "$WAIT" "$DIR/pids/slurmd.pid" sh -c "[ \"\$(sinfo -h -n $HOST -o %t)\" = idle ]" \
    || die "node $HOST is not idle after ${WAIT}s: $(sinfo -h -N -o '%N %t %E' 2>&1)" \
        "$DIR/log/slurmd.log" "$DIR/log/slurmctld.log"
alive "$DIR/pids/slurmd.pid" || die "slurmd is not running" "$DIR/log/slurmd.log"

T1=$(date +%s.%N)
log "cluster '$CLUSTER' up in $(awk "BEGIN{printf \"%.1f\", $T1 - $T0}") s:" \
    "node $HOST, $CPUS CPUs, partition debug, state dir $DIR"
for p in "$DIR"/pids/*.pid; do
    printf '  %-10s pid %s\n' "$(basename "$p" .pid)" "$(cat "$p")"
done
log "clients use /etc/slurm/slurm.conf; or: source $DIR/env.sh"
