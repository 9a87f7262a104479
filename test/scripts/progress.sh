#!/usr/bin/env bash
# A long sync says how far it is: NOTICE lines at a bounded rate (every 500
# messages or 5 s) with messages done / to do, and pg_stat_activity shows
# the backend waiting on the network (wait_event_type Extension).
set -euo pipefail
. "$(dirname "$0")/../lib/script.sh"

db=test_progress
email=progress@example.com
fresh_db $db
gi_double POST /admin/mailboxes '{"email":"progress@example.com","refresh_token":"rt-progress","seed":41,"threads":300,"messages":1300,"days":8,"window_days":7,"attachments":60}' >/dev/null
mb=$(q $db "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000d1', '$email', 'rt-progress')")
expected=$($DQ window-count $email 7)

# Each download waits 20 ms, so the sync lasts a few seconds.
$DQ faults '[{"endpoint": "messages.get", "kind": "delay", "ms": 20, "count": -1}]'
# SHOW_CONTEXT: the run's context line names the mailbox each NOTICE is about.
psql -X -d $db -v SHOW_CONTEXT=always -c "SELECT status FROM gmail_ingest.gmail_sync($mb, 7)" >"$GI_WORK/progress.out" 2>&1 &
caller=$!
waits=0
for _ in $(seq 1 100); do
	n=$(q $db "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT status FROM gmail_ingest.gmail_sync%' AND wait_event_type = 'Extension'")
	waits=$((waits + n))
	[ "$waits" -ge 3 ] && break
	sleep 0.05
done
wait $caller
$DQ clear-faults

notices=$(grep -A1 "^NOTICE:  [0-9]* of $expected messages done$" "$GI_WORK/progress.out" |
	grep -c "^CONTEXT:  syncing mailbox $mb, run [0-9]*$" || true)
check "sync succeeded" "$(grep -c succeeded "$GI_WORK/progress.out")" 1
check "pg_stat_activity showed the backend waiting on the network" "$([ "$waits" -ge 3 ] && echo yes)" yes
check "progress NOTICEs at a bounded rate (one per 500 messages or 5 s, plus the last)" \
	"$([ "$notices" -ge 2 ] && [ "$notices" -le $((expected / 500 + 3)) ] && echo yes)" yes
grep -A1 NOTICE "$GI_WORK/progress.out" | head -6
dropdb $db
finish
