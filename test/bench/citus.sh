#!/usr/bin/env bash
# test/bench/citus.sh: a fleet's first sync on one node against a Citus
# coordinator and two workers (SPEC 7e), on this machine: messages per
# second and the CPU seconds each node's processes used.  The double
# answers after 50 ms and enforces no quota; the extension's budgets are
# off.  The same number of run_due workers runs in both: all on the one
# node, or half on each worker node (the coordinator holds no shard).
#
#   bash test/bench/citus.sh [MAILBOXES (60)] [WORKERS (4)] [MESSAGES_PER_MAILBOX (40)]
#
# Starts its own throw-away cluster and Gmail API double unless run inside
# test/run_tests.sh; prints a table (also appended to $OUT, default
# bench_citus_results.md).  Skips with one line when Citus is not
# installed.  About 2 minutes with the defaults.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/env.sh"
if [ -z "${GI_WORK:-}" ] || [ -z "${DOUBLE_URL:-}" ] || [ -z "${PGHOST:-}" ]; then
	gi_ensure_packages || exit 1
	gi_build_install || exit 1
	gi_start_all
	CITUS_EXIT_ALSO=gi_stop_all		# citus_cluster_start takes over the EXIT trap
fi
. "$here/../lib/script.sh"
. "$here/../lib/citus_cluster.sh"
if ! citus_available; then
	echo "skipped: Citus is not installed for $("${PG_CONFIG:-pg_config}" --bindir)/postgres"
	exit 0
fi

trap "citus_cluster_stop; ${CITUS_EXIT_ALSO:-}" EXIT	# the one-node server too

N=${1:-60}
WORKERS=${2:-4}
MSGS=${3:-40}
OUT=${OUT:-bench_citus_results.md}
TAG=$(run_tag)
SPEC="{\"messages\":$MSGS,\"threads\":$((MSGS / 4)),\"attachments\":$((MSGS / 10)),\"days\":5,\"window_days\":7}"
gi_double POST /admin/config '{"latency_ms":50,"project_quota_units_per_minute":0}' >/dev/null

# CPU seconds a server has used: its postmaster, the children it has
# reaped (exited backends) and the children alive.
cpu_of() {	# DATA_DIR
	local pm
	pm=$(head -1 "$1/postmaster.pid")
	python3 - "$pm" <<'PY'
import os, sys
pm = sys.argv[1]
hz = os.sysconf("SC_CLK_TCK")
def fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()
f = fields(pm)
total = sum(int(x) for x in f[11:15])        # utime stime cutime cstime
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            g = fields(pid)
        except OSError:
            continue
        if g[1] == pm:
            total += int(g[11]) + int(g[12])
print(f"{total / hz:.1f}")
PY
}

# run PORTS... : WORKERS run_due sessions spread over the ports, stopped
# once every fleet mailbox has synced once; prints the seconds it took.
run_fleet() {	# DB COUNT_PORT PREFIX PORT...
	local db=$1 cport=$2 prefix=$3 started done i=0 p pids=()
	shift 3
	started=$(ms_now)
	while [ $i -lt "$WORKERS" ]; do
		for p in "$@"; do
			[ $i -lt "$WORKERS" ] || break
			psql -X -q -h 127.0.0.1 -p "$p" -d "$db" -c "CALL gmail_ingest.run_due('10 minutes')" >/dev/null 2>&1 &
			pids+=($!)
			i=$((i + 1))
		done
	done
	while [ "$(cq "$cport" "$db" "SELECT count(*) FROM gmail_ingest.mailboxes
	                              WHERE provider_email LIKE '$prefix-%' AND last_synced_at IS NOT NULL")" -lt "$N" ]; do
		sleep 0.2
	done
	done=$(ms_now)
	for p in "$@"; do
		cq "$p" "$db" "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity
		               WHERE query LIKE 'CALL gmail_ingest.run_due%' AND pid <> pg_backend_pid()" >/dev/null
	done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	echo $(((done - started)))
}

# --- one node: a server like the cluster's nodes (citus preloaded, unused), over loopback TCP.
citus_node_start one >"$GI_WORK/bench-one-port" || exit 1
one_port=$(cat "$GI_WORK/bench-one-port")
cq "$one_port" postgres "CREATE DATABASE gi_bench" >/dev/null
cq "$one_port" gi_bench "CREATE EXTENSION gmail_ingest" >/dev/null
PGHOST=127.0.0.1 PGPORT=$one_port new_fleet gi_bench "$N" "one$TAG" "$SPEC" || exit 1
c0=$(cpu_of "$GI_WORK/citus-one")
one_ms=$(run_fleet gi_bench "$one_port" "one$TAG" "$one_port")
c1=$(cpu_of "$GI_WORK/citus-one")
one_msgs=$(cq "$one_port" gi_bench "SELECT count(*) FROM gmail_ingest.mail_messages")
citus_cluster_stop

# --- a coordinator and two workers.
citus_cluster_start gi_bench_c || exit 1
cq "$CITUS_COORD" gi_bench_c "CREATE EXTENSION gmail_ingest" >/dev/null
cq "$CITUS_COORD" gi_bench_c "SELECT count(*) FROM gmail_ingest.distribute(8)" >/dev/null
PGHOST=127.0.0.1 PGPORT=$CITUS_COORD new_fleet gi_bench_c "$N" "cl$TAG" "$SPEC" || exit 1
declare -A before after
for n in coord w1 w2; do before[$n]=$(cpu_of "$GI_WORK/citus-$n"); done
cl_ms=$(run_fleet gi_bench_c "$CITUS_COORD" "cl$TAG" "$CITUS_W1" "$CITUS_W2")
for n in coord w1 w2; do after[$n]=$(cpu_of "$GI_WORK/citus-$n"); done
cl_msgs=$(cq "$CITUS_COORD" gi_bench_c "SELECT count(*) FROM gmail_ingest.mail_messages")
citus_cluster_stop

rate() { python3 -c "print(f'{$1 / ($2 / 1000):.0f}')"; }
sub() { python3 -c "print(f'{$2 - $1:.1f}')"; }
{
	echo
	echo "### Citus: fleet first sync ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores)"
	echo
	echo "$N mailboxes of $MSGS messages, $WORKERS run_due workers, double latency 50 ms, quotas off."
	echo
	echo "| setup | messages | seconds | messages/s | CPU s: coordinator | worker 1 | worker 2 |"
	echo "|---|---|---|---|---|---|---|"
	echo "| one node | $one_msgs | $(python3 -c "print(f'{$one_ms / 1000:.1f}')") | $(rate "$one_msgs" "$one_ms") | $(sub "$c0" "$c1") | – | – |"
	echo "| coordinator + 2 workers | $cl_msgs | $(python3 -c "print(f'{$cl_ms / 1000:.1f}')") | $(rate "$cl_msgs" "$cl_ms") | $(sub "${before[coord]}" "${after[coord]}") | $(sub "${before[w1]}" "${after[w1]}") | $(sub "${before[w2]}" "${after[w2]}") |"
} | tee -a "$OUT"
