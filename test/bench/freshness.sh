#!/usr/bin/env bash
# test/bench/freshness.sh: the freshness benchmark of push (issue 13).
#
#   bash test/bench/freshness.sh [--mailboxes 20] [--push-changes 120 --push-seconds 120]
#        [--poll-changes 60 --poll-seconds 150]
#
# Starts its own throw-away cluster and Gmail API double (test/lib/env.sh)
# unless run inside test/run_tests.sh.  Two measured phases on one fleet of
# small mailboxes, with 2 workers (CALL run_due) throughout:
#   push on: every mailbox watched, the listener (CALL run_push) running,
#     polling at the default 15 minutes (so only push brings a mailbox
#     back); changes at random times into random mailboxes (push_load.py);
#   push off, polling every minute: the listener stopped, set_schedule
#     '1 minute'; changes as above.
# For each: p50/p95/p99 from a change to its row.  Polling every 15 minutes
# is not waited out: its delay is the wait for the next poll (uniform over
# the interval) plus the sync, so its percentiles are the interval's plus
# the measured sync time.  Units per mailbox per hour come from the units
# the double charged for each kind of sync in the runs (a sync that finds
# nothing, the extra units of one change) at one change a minute (busy) or
# none (quiet), plus the daily watch renewal when push is on.  Prints a
# Markdown table (also appended to bench_freshness_results.md).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/env.sh"
cd "$GI_ROOT"

n=20 push_changes=120 push_seconds=120 poll_changes=60 poll_seconds=150
while [ $# -gt 0 ]; do
	case $1 in
	--mailboxes) n=$2 ;;
	--push-changes) push_changes=$2 ;;
	--push-seconds) push_seconds=$2 ;;
	--poll-changes) poll_changes=$2 ;;
	--poll-seconds) poll_seconds=$2 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
	shift 2
done

if [ -z "${GI_WORK:-}" ] || [ -z "${DOUBLE_URL:-}" ] || [ -z "${PGHOST:-}" ]; then
	gi_ensure_packages || exit 1
	gi_build_install || exit 1
	gi_start_all
fi
. "$GI_ROOT/test/lib/script.sh"

db=bench_freshness
tag=$(run_tag)
prefix=fr$tag
topic=projects/gi-bench/topics/gmail-$tag
sub=projects/gi-bench/subscriptions/pull-$tag
sa=bench-$tag@gi-bench.iam.gserviceaccount.com
OUT=$(mktemp -d)
fresh_db $db
stop_sessions() {
	psql -X -q -d $db -c "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE application_name IN ($1)" >/dev/null
	sleep 1
}
bench_clean_up() {
	stop_sessions "'gi_fresh_listener', 'gi_fresh_worker'" 2>/dev/null
	psql -X -q -d postgres -c "ALTER SYSTEM RESET gmail_ingest.pubsub_subscription" \
		-c "ALTER SYSTEM RESET gmail_ingest.pubsub_base_url" \
		-c "ALTER SYSTEM RESET gmail_ingest.pubsub_service_account" -c "SELECT pg_reload_conf()" >/dev/null 2>&1
	dropdb --if-exists $db >/dev/null 2>&1
	rm -rf "$OUT"
}
trap bench_clean_up EXIT

# Google Cloud as the double plays it, and the listener's service account.
pubsub_listener_account "$OUT" "$sa" "$topic" "$sub"
psql -X -q -d postgres -c "ALTER SYSTEM SET gmail_ingest.pubsub_subscription = '$sub'" \
	-c "ALTER SYSTEM SET gmail_ingest.pubsub_base_url = '$DOUBLE_URL'" \
	-c "ALTER SYSTEM SET gmail_ingest.pubsub_service_account = '$sa'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
psql -X -At -q -d $db -v key="$(cat "$OUT/key.json")" <<<"SELECT gmail_ingest.add_service_account(gen_random_uuid(), :'key')" >/dev/null

new_fleet $db "$n" "$prefix" '{"messages":20,"threads":8,"attachments":2,"days":5,"window_days":7}' || exit 1
q $db "SELECT count(*) FROM gmail_ingest.mailboxes m, gmail_ingest.gmail_sync(m.id) r WHERE r.status = 'succeeded'" >/dev/null
q $db "SELECT count(gmail_ingest.watch_mailbox(m.id, '$topic')) FROM gmail_ingest.mailboxes m" >/dev/null
q $db "UPDATE gmail_ingest.mailboxes SET next_sync_at = now() + sync_interval" >/dev/null

workers() {
	for w in 1 2; do
		PGAPPNAME=gi_fresh_worker psql -X -q -d $db -c "CALL gmail_ingest.run_due('30 minutes')" >>"$OUT/workers.log" 2>&1 &
	done
}
field() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

# --- push on
first=$(q $db "SELECT coalesce(max(id), 0) FROM gmail_ingest.sync_runs")
PGAPPNAME=gi_fresh_listener psql -X -q -d $db -c "CALL gmail_ingest.run_push('30 minutes')" >>"$OUT/listener.log" 2>&1 &
workers
sleep 1
/usr/bin/python3 test/scripts/push_load.py --db $db --double "$DOUBLE_URL" --prefix "$prefix" \
	--changes "$push_changes" --seconds "$push_seconds" --seed 21 --wait 60 >"$OUT/push.json"
push_last=$(q $db "SELECT coalesce(max(id), 0) FROM gmail_ingest.sync_runs")
stop_sessions "'gi_fresh_listener', 'gi_fresh_worker'"

# --- push off, polling every minute (due one minute after each mailbox's last sync)
q $db "SELECT count(gmail_ingest.unwatch_mailbox(m.id)) FROM gmail_ingest.mailboxes m" >/dev/null
q $db "SELECT count(gmail_ingest.set_schedule(m.id, '1 minute')) FROM gmail_ingest.mailboxes m" >/dev/null
q $db "UPDATE gmail_ingest.mailboxes SET next_sync_at = now() + random() * interval '1 minute'" >/dev/null
workers
sleep 1
/usr/bin/python3 test/scripts/push_load.py --db $db --double "$DOUBLE_URL" --prefix "$prefix" \
	--changes "$poll_changes" --seconds "$poll_seconds" --seed 22 --wait 90 >"$OUT/poll.json"
poll_last=$(q $db "SELECT coalesce(max(id), 0) FROM gmail_ingest.sync_runs")
stop_sessions "'gi_fresh_worker'"

# Units per kind of sync, from the runs themselves (the double charges the same).
quiet=$(q $db "SELECT round(avg(quota_units), 1) FROM gmail_ingest.sync_runs WHERE id > $push_last AND id <= $poll_last AND status = 'succeeded' AND messages_inserted + messages_updated + messages_deleted = 0")
per_new=$(q $db "SELECT round(avg(quota_units), 1) FROM gmail_ingest.sync_runs WHERE id > $first AND id <= $poll_last AND status = 'succeeded' AND messages_inserted = 1 AND messages_updated + messages_deleted = 0")
per_other=$(q $db "SELECT round(avg(quota_units), 1) FROM gmail_ingest.sync_runs WHERE id > $first AND id <= $poll_last AND status = 'succeeded' AND messages_inserted = 0 AND messages_updated + messages_deleted = 1")
sync_ms=$(q $db "SELECT round(avg(extract(epoch FROM finished_at - started_at) * 1000)) FROM gmail_ingest.sync_runs WHERE id > $first AND id <= $poll_last")
watch=$(gi_double GET /admin/config | python3 -c "import json, sys; print(json.load(sys.stdin)['costs']['watch'])")
push_syncs=$(q $db "SELECT count(*) FROM gmail_ingest.sync_runs WHERE id > $first AND id <= $push_last")

python3 - "$OUT/push.json" "$OUT/poll.json" "$quiet" "$per_new" "$per_other" "$sync_ms" "$watch" "$push_syncs" "$n" <<'PY' | tee -a bench_freshness_results.md
import json, sys
push, poll = (json.load(open(p)) for p in sys.argv[1:3])
quiet, per_new, per_other, sync_ms, watch = (float(x or 0) for x in sys.argv[3:8])
push_syncs, n = int(sys.argv[8]), int(sys.argv[9])
# one change a minute, half new messages, half label changes or deletions (as the load)
busy_change = (per_new + per_other) / 2
def s(ms):
    return f"{ms / 60000:.1f} min" if ms >= 120_000 else f"{ms / 1000:.2f} s"
rows = [
    ("push on (listener + 2 workers), polling every 15 min as the safety net",
     s(push["p50_ms"]), s(push["p95_ms"]), s(push["p99_ms"]), "measured",
     4 * quiet + watch / 24, 60 * busy_change + 4 * quiet + watch / 24),
    ("push off, polling every 1 min (2 workers)",
     s(poll["p50_ms"]), s(poll["p95_ms"]), s(poll["p99_ms"]), "measured",
     60 * quiet, 60 * busy_change),
    ("push off, polling every 15 min",
     s(450_000 + sync_ms), s(855_000 + sync_ms), s(891_000 + sync_ms), "interval + measured sync time",
     4 * quiet, 4 * quiet + 60 * (busy_change - quiet)),
]
print(f"\n### Freshness: {n} mailboxes; push phase {push['changes']} changes ({push['by_kind']}), "
      f"{push_syncs} syncs; polling phase {poll['changes']} changes; every change seen: "
      f"{push['unseen_count'] == 0 and poll['unseen_count'] == 0}\n")
print("| mode | p50 | p95 | p99 | latency from | units/mailbox/h quiet | units/mailbox/h busy (1 change/min) |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.0f} | {r[6]:.0f} |")
print(f"\nUnits per sync (the double's costs): nothing new {quiet}, one new message {per_new}, "
      f"one label change or deletion {per_other}; users.watch {watch:.0f} once a day; mean sync "
      f"{sync_ms:.0f} ms.")
PY
