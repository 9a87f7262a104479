#!/usr/bin/env bash
# No head-of-line blocking: a mailbox whose first sync is large beside 100
# small ones synced every minute, all served by ONE worker.  The large sync
# is time-sliced (one fleet_batch_size batch per turn, committed), so while
# it backfills no small mailbox's lag (time since its last completed sync,
# or since it was added) exceeds twice its interval, each small one is
# synced once per due time (consecutive syncs at least most of an interval
# apart), and the large one still makes progress every round.
set -euo pipefail
. "$(dirname "$0")/../lib/script.sh"

db=test_fleet_fairness
tag=$(run_tag)
prefix=ff$tag
huge=huge-$tag@example.com
fresh_db $db
OUT=$(mktemp -d)
clean_up_at_exit test_fleet_fairness
new_fleet $db 100 "$prefix" '{"messages":4,"threads":2,"attachments":0,"days":5,"window_days":7}'
q $db "SELECT count(gmail_ingest.set_schedule(id, '1 minute')) FROM gmail_ingest.mailboxes" >/dev/null
new_mailbox "$huge" '"seed":77,"threads":600,"messages":3000,"days":5,"window_days":7,"attachments":0'
# Slow its answers down so its whole first sync outlasts this test.
$DQ mailbox-config "$huge" '{"latency_ms":500}' >/dev/null
huge_mb=$(q $db "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000f1', '$huge', 'rt-$huge')")
q $db "SELECT gmail_ingest.set_schedule($huge_mb, '1 minute')" >/dev/null
# The large mailbox was added first: it is the most overdue from the start.
q $db "UPDATE gmail_ingest.mailboxes SET next_sync_at = now() - interval '1 minute', created_at = now() WHERE id = $huge_mb" >/dev/null

small="provider_email LIKE '$prefix-%'"
lag_sql="SELECT coalesce(extract(epoch FROM max(now() - coalesce(last_synced_at, created_at)))::int, 0) FROM gmail_ingest.mailboxes WHERE $small"
runtime=150
PGOPTIONS="-c gmail_ingest.fleet_batch_size=100" \
	psql -X -q -d $db -c "CALL gmail_ingest.run_due('$runtime seconds')" >"$OUT/worker.log" 2>&1 &
worker=$!
max_lag=0
while kill -0 $worker 2>/dev/null; do
	lag=$(q $db "$lag_sql")
	[ "$lag" -gt "$max_lag" ] && max_lag=$lag
	sleep 2
done
wait $worker || { cat "$OUT/worker.log"; false; }

huge_runs=$(q $db "SELECT count(*) FROM gmail_ingest.sync_runs WHERE mailbox_id = $huge_mb AND status = 'succeeded'")
huge_stored=$(q $db "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $huge_mb")
huge_total=$($DQ window-count "$huge" 7)
check "the large mailbox is still backfilling at the end" \
	"$(q $db "SELECT history_id IS NULL AND backfill_history_id IS NOT NULL FROM gmail_ingest.mailboxes WHERE id = $huge_mb")" t
check "the large mailbox had several turns, none over one batch" \
	"$(q $db "SELECT count(*) >= 3 AND max(messages_inserted) <= 100 FROM gmail_ingest.sync_runs WHERE mailbox_id = $huge_mb")" t
check "no small mailbox's lag exceeded 2 x its interval (max ${max_lag} s)" "$([ "$max_lag" -lt 120 ] && echo t || echo f)" t
check "every small mailbox synced at least twice" \
	"$(q $db "SELECT count(*) FROM (SELECT m.id FROM gmail_ingest.mailboxes m JOIN gmail_ingest.sync_runs r ON r.mailbox_id = m.id AND r.status = 'succeeded' WHERE $small GROUP BY m.id HAVING count(*) >= 2) x")" 100
# Once per due time: due times are the creation time plus whole intervals,
# pushed later (never earlier) by a late sync (next = due + interval, or
# now + interval once that has passed), so a mailbox's k-th sync (from 0)
# never starts before created_at + k intervals.  Consecutive syncs may be
# closer than an interval: a late one keeps the cadence.
check "once per due time: no small mailbox's k-th sync before its k-th due time" \
	"$(q $db "SELECT coalesce(bool_and(x.started_at >= x.created_at + x.k * x.sync_interval - interval '1 second'), false) FROM (SELECT r.started_at, m.created_at, m.sync_interval, row_number() OVER (PARTITION BY r.mailbox_id ORDER BY r.id) - 1 AS k FROM gmail_ingest.sync_runs r JOIN gmail_ingest.mailboxes m ON m.id = r.mailbox_id WHERE $small) x")" t
check "no failed run" "$(q $db "SELECT count(*) FROM gmail_ingest.sync_runs WHERE status <> 'succeeded'")" 0
echo "# one worker, ${runtime} s: large mailbox $huge_stored of $huge_total messages in $huge_runs turns; small mailboxes' max lag ${max_lag} s (interval 60 s)"
finish
