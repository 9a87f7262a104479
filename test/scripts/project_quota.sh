#!/usr/bin/env bash
# The project's quota, one budget in shared memory for every backend
# (gmail_ingest.project_quota_units_per_minute), and the pacing of both
# budgets, against a double enforcing the same limits.
#
# 1. Project: the double allows PROJECT_LIMIT units a minute over all its
#    mailboxes (4,800: a test of about 45 s) and the cluster gets the same
#    limit with ALTER SYSTEM + pg_reload_conf(), no restart.  Per-user
#    limits are off on both sides.  NSYNC (4) backends sync a mailbox each,
#    at once.  Checked: no 429 from the project limit (nor any other);
#    units the double charged = the sum of the runs' quota_units; wall time
#    (first start to last finish) within 15% of units / limit, and no less
#    than the bucket allows (a second's worth at once, then limit/60 a
#    second); the double's own record of arrival times: no 1-second span
#    holds more than BURST_TOLERANCE x limit/60 units (see below); and
#    project_quota_usage() reports those units as the last minute's.
# 2. A sync waiting for the project's budget (60 units a minute: 20 s for
#    each messages.get) ends at statement_timeout, within 500 ms.
# 3. Per user: one mailbox, the per-user limit low (USER_LIMIT, 3,000) at
#    the double and in gmail_ingest.quota_units_per_minute, the project
#    limit back at its default: no 429, and the pace within 15%.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

PROJECT_LIMIT=${PROJECT_LIMIT:-4800}
USER_LIMIT=${USER_LIMIT:-3000}
NSYNC=4
DB=gi_project_quota
TAG=$(run_tag)
NOW_MS=$(now_ms)
OUT=$(mktemp -d "${TMPDIR:-/tmp}/gi_project_quota.XXXXXX")

cleanup() {
	local j
	for j in $(jobs -p); do kill "$j" 2>/dev/null; done
	wait 2>/dev/null
	dbl POST /admin/config '{"project_quota_units_per_minute":0}' >/dev/null
	psql -X -q -d postgres -c "ALTER SYSTEM RESET gmail_ingest.project_quota_units_per_minute" \
		-c "SELECT pg_reload_conf()" >/dev/null 2>&1
	dropdb --if-exists $DB >/dev/null 2>&1
	rm -rf "$OUT"
}
trap cleanup EXIT

# dglobal EXPR: a value of the double's global stats, EXPR in Python over `s`.
dglobal() {
	dbl GET /admin/stats | python3 -c "import json, sys; s = json.load(sys.stdin); print($1)"
}

# set_project_limit N: the cluster's project limit, as an operator sets it.
set_project_limit() {
	psql -X -q -v ON_ERROR_STOP=1 -d postgres \
		-c "ALTER SYSTEM SET gmail_ingest.project_quota_units_per_minute = $1" \
		-c "SELECT pg_reload_conf()" >/dev/null
	# a new session has reloaded; wait for the postmaster's signal to land
	for _ in $(seq 50); do
		[ "$(q postgres "SHOW gmail_ingest.project_quota_units_per_minute")" = "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

fresh_db $DB
q postgres "CREATE EXTENSION IF NOT EXISTS gmail_ingest" >/dev/null
emails=()
ids=()
for i in $(seq $NSYNC); do
	e=pq$i-$TAG@quota.example
	new_mailbox "$e" "\"seed\":$((70 + i)),\"threads\":14,\"messages\":48,\"days\":7,\"window_days\":7,\"attachments\":4,\"now_ms\":$NOW_MS,\"content_email\":\"pq$i@quota.example\""
	emails+=("$e")
	ids+=("$(q $DB "SELECT gmail_ingest.add_mailbox(gen_random_uuid(), '$e', 'rt-$e')")")
done

# ---- 1. the project's budget, shared by NSYNC backends
check "project limit set without restart" "$(set_project_limit $PROJECT_LIMIT && echo yes)" yes
dbl POST /admin/config "{\"project_quota_units_per_minute\":$PROJECT_LIMIT}" >/dev/null
# The shared budget remembers the last minute: let earlier tests' units
# leave it, so the pace and the usage are this test's alone.
for _ in $(seq 70); do
	[ "$(q postgres "SELECT units_last_minute FROM gmail_ingest.project_quota_usage()" 2>/dev/null)" = 0 ] && break
	sleep 1
done
before_user=$(dglobal 's["rate_limited"]["user"]')
before_project=$(dglobal 's["rate_limited"]["project"]')
since=$(date +%s.%N)
sync_sql="SELECT status, quota_units FROM gmail_ingest.gmail_sync"
for i in $(seq $NSYNC); do
	PGOPTIONS="${PGOPTIONS:-} -c gmail_ingest.quota_units_per_minute=0 -c gmail_ingest.max_concurrency=8" \
		timeout 300 psql -X -At -F'|' -d $DB -c "$sync_sql(${ids[$((i - 1))]}, 7)" >"$OUT/$i" 2>"$OUT/$i.err" &
done
wait
usage=$(q $DB "SELECT units_last_minute || '|' || units_per_minute FROM gmail_ingest.project_quota_usage()")
after_user=$(dglobal 's["rate_limited"]["user"]')
after_project=$(dglobal 's["rate_limited"]["project"]')
dbl GET "/admin/charges?since=$since" >"$OUT/charges.json"

ok=0
run_units=0
dbl_units=0
for i in $(seq $NSYNC); do
	IFS='|' read -r status units <"$OUT/$i"
	[ "$status" = succeeded ] && ok=$((ok + 1))
	run_units=$((run_units + ${units:-0}))
	dbl_units=$((dbl_units + $(stat_of units "$(dstats "${emails[$((i - 1))]}")")))
done
wall=$(q $DB "SELECT round(extract(epoch FROM max(finished_at) - min(started_at)) * 1000)
	FROM gmail_ingest.sync_runs WHERE mailbox_id IN ($(IFS=,; echo "${ids[*]}"))")
pace_ms=$((run_units * 60000 / PROJECT_LIMIT))
bucket_ms=$(((run_units - PROJECT_LIMIT / 60) * 60000 / PROJECT_LIMIT))
# Spans of one second in the double's arrival times: the largest from the
# start (a full bucket plus a second's refill may fall in it) and from one
# second on (an empty bucket: one second's refill).
read -r burst_first burst_steady max_cost n_charges <<<"$(python3 - "$OUT/charges.json" <<'PY'
import json, sys
ch = json.load(open(sys.argv[1]))["charges"]
times = [c[0] for c in ch]
units = [c[1] for c in ch]
t0 = times[0] if times else 0
best_all = best_steady = 0
j = 0
total = 0
for i in range(len(ch)):          # the span [t_i, t_i + 1 s)
    while j < len(ch) and times[j] < times[i] + 1.0:
        total += units[j]
        j += 1
    best_all = max(best_all, total)
    if times[i] >= t0 + 1.0:
        best_steady = max(best_steady, total)
    total -= units[i]
print(best_all, best_steady, max(units or [0]), len(ch))
PY
)"
per_second=$((PROJECT_LIMIT / 60))
echo "# project: $NSYNC syncs, $run_units units at $PROJECT_LIMIT units/min: wall $((wall / 1000)).$(printf %03d $((wall % 1000))) s" \
	"(units / limit = $((pace_ms / 1000)).$(printf %03d $((pace_ms % 1000))) s); busiest second: $burst_first units" \
	"($burst_steady after the first second; limit/60 = $per_second); $n_charges requests;" \
	"429s: project $((after_project - before_project)), per-user $((after_user - before_user)); usage $usage"
check "project: every sync succeeded" "$ok" "$NSYNC"
check "project: zero 429s from the project limit" "$((after_project - before_project))" 0
check "project: zero 429s from per-user limits" "$((after_user - before_user))" 0
check "project: enough work for the pace to show (over 30 s)" "$([ "$pace_ms" -gt 30000 ] && echo yes)" yes
check "project: units charged by the double = the runs' quota_units" "$dbl_units" "$run_units"
check "project: the double's record holds them all" \
	"$(python3 -c "import json; print(sum(c[1] for c in json.load(open('$OUT/charges.json'))['charges']))")" "$run_units"
check "project: no faster than the bucket allows" \
	"$([ "$wall" -ge $((bucket_ms - 500)) ] && echo yes || echo "no: $wall ms < $bucket_ms ms")" yes
check "project: within 15% of units / limit" \
	"$([ "$wall" -le $((pace_ms * 115 / 100)) ] && echo yes || echo "no: $wall ms > 1.15 x $pace_ms ms")" yes
# A 1-second span from the start may hold the full bucket (limit/60) and a
# second's refill (limit/60); from then on the bucket is empty and a span
# holds a second's refill.  Either may hold one request more than that (the
# one that takes the bucket into debt: max_cost), and the double sees
# arrival times, which the network and four backends' 100 ms polling shift
# by a few ms, hence 10% of a second's worth on top.
check "project: busiest 1-second span from the start <= 2 x limit/60 + one request" \
	"$([ "$burst_first" -le $((2 * per_second * 110 / 100 + max_cost)) ] && echo yes || echo "no: $burst_first")" yes
check "project: busiest 1-second span after the first second <= limit/60 + one request" \
	"$([ "$burst_steady" -le $((per_second * 110 / 100 + max_cost)) ] && echo yes || echo "no: $burst_steady")" yes
check "project: project_quota_usage() reports the last minute's units and the limit" "$usage" "$run_units|$PROJECT_LIMIT"

# ---- 2. a long wait for the project's budget ends at a cancel
dbl POST /admin/config '{"project_quota_units_per_minute":0}' >/dev/null
check "project limit set to 60 units/min" "$(set_project_limit 60 && echo yes)" yes
e=pc-$TAG@quota.example
new_mailbox "$e" "\"seed\":78,\"threads\":4,\"messages\":10,\"days\":7,\"window_days\":7,\"now_ms\":$NOW_MS,\"content_email\":\"pc@quota.example\""
emails+=("$e")
mbc=$(q $DB "SELECT gmail_ingest.add_mailbox(gen_random_uuid(), '$e', 'rt-$e')")
t0=$(ms_now)
err=$(PGOPTIONS="${PGOPTIONS:-} -c statement_timeout=2000" q $DB "SELECT status FROM gmail_ingest.gmail_sync($mbc, 7)" 2>&1)
elapsed=$(($(ms_now) - t0))
echo "# at 60 units/min (20 s a messages.get): $err after $elapsed ms"
check "cancel during a project wait: statement_timeout's own error" \
	"$(grep -c 'canceling statement due to statement timeout' <<<"$err")" 1
check "cancel during a project wait: within 500 ms of the timeout" \
	"$([ "$elapsed" -lt 2500 ] && echo yes || echo "no: $elapsed ms")" yes

# ---- 3. a mailbox's own budget, the same pacing
check "project limit back to its default" "$(set_project_limit 1200000 && echo yes)" yes
e=pu-$TAG@quota.example
new_mailbox "$e" "\"seed\":79,\"threads\":12,\"messages\":40,\"days\":7,\"window_days\":7,\"attachments\":4,\"now_ms\":$NOW_MS,\"content_email\":\"pu@quota.example\""
emails+=("$e")
mb=$(q $DB "SELECT gmail_ingest.add_mailbox(gen_random_uuid(), '$e', 'rt-$e')")
dbl POST "/admin/mailboxes/$e/config" "{\"quota_units_per_minute\":$USER_LIMIT}" >/dev/null
IFS='|' read -r status units wall <<<"$(PGOPTIONS="${PGOPTIONS:-} -c gmail_ingest.quota_units_per_minute=$USER_LIMIT" \
	q $DB "SELECT status, quota_units, round(extract(epoch FROM finished_at - started_at) * 1000) FROM gmail_ingest.gmail_sync($mb, 7)")"
s=$(dstats "$e")
dbl POST "/admin/mailboxes/$e/config" '{"quota_units_per_minute":null}' >/dev/null
units=${units:-0} wall=${wall:-0}
pace_ms=$((units * 60000 / USER_LIMIT))
bucket_ms=$(((units - USER_LIMIT / 60) * 60000 / USER_LIMIT))
echo "# per user: $units units at $USER_LIMIT units/min: wall $((wall / 1000)).$(printf %03d $((wall % 1000))) s" \
	"(units / limit = $((pace_ms / 1000)).$(printf %03d $((pace_ms % 1000))) s), $(stat_of e429 "$s") 429s"
check "per user: the sync succeeded" "$status" succeeded
check "per user: zero 429s" "$(stat_of e429 "$s")" 0
check "per user: units as the double counted them" "$units" "$(stat_of units "$s")"
check "per user: enough work for the pace to show (over 10 s)" "$([ "$pace_ms" -gt 10000 ] && echo yes)" yes
check "per user: no faster than the bucket allows" \
	"$([ "$wall" -ge $((bucket_ms - 500)) ] && echo yes || echo "no: $wall ms < $bucket_ms ms")" yes
check "per user: within 15% of units / limit" \
	"$([ "$wall" -le $((pace_ms * 115 / 100)) ] && echo yes || echo "no: $wall ms > 1.15 x $pace_ms ms")" yes
finish
