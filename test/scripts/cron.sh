#!/usr/bin/env bash
# schedule_sync with the real pg_cron (preloaded by the test cluster): a
# scheduled sync really runs, its rows appear, cron.job_run_details shows
# success, and the second scheduled run of an unchanged mailbox writes
# nothing.  pg_cron 1.4 has minute granularity, so this waits (bounded).
set -euo pipefail
. "$(dirname "$0")/../lib/script.sh"

db=postgres   # cron.database_name of the test cluster
email=cron@example.com
q $db "DROP EXTENSION IF EXISTS gmail_ingest CASCADE" >/dev/null
q $db "CREATE EXTENSION IF NOT EXISTS pg_cron" >/dev/null
q $db "CREATE EXTENSION gmail_ingest" >/dev/null
gi_double POST /admin/mailboxes '{"email":"cron@example.com","refresh_token":"rt-cron","seed":31,"threads":10,"messages":40,"days":9,"window_days":7,"attachments":8}' >/dev/null
mb=$(q $db "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000c1', '$email', 'rt-cron')")
expected=$($DQ window-count $email 7)

job=$(q $db "SELECT gmail_ingest.schedule_sync($mb, '* * * * *', 7)")
job_again=$(q $db "SELECT gmail_ingest.schedule_sync($mb, '* * * * *', 7)")
check "schedule_sync twice keeps one job" "$(q $db "SELECT count(*) FROM cron.job WHERE jobname = 'gmail_ingest_sync_$mb'")/$job_again" "1/$job"

# Two runs: the first minute boundary, then the next one (at most ~130 s).
for _ in $(seq 1 140); do
	runs=$(q $db "SELECT count(*) FROM cron.job_run_details WHERE jobid = $job AND status = 'succeeded'")
	[ "$runs" -ge 2 ] && break
	sleep 1
done
check "two scheduled runs succeeded" "$(q $db "SELECT count(*) >= 2 FROM cron.job_run_details WHERE jobid = $job AND status = 'succeeded'")" t
check "first scheduled run stored the window" "$(q $db "SELECT messages_inserted FROM gmail_ingest.sync_runs WHERE mailbox_id = $mb ORDER BY id LIMIT 1")" "$expected"
check "second scheduled run was incremental and wrote nothing" \
	"$(q $db "SELECT mode || '/' || (messages_inserted + messages_updated + threads_inserted + threads_updated + attachments_inserted + blobs_inserted) FROM gmail_ingest.sync_runs WHERE mailbox_id = $mb ORDER BY id OFFSET 1 LIMIT 1")" "incremental/0"
check "second scheduled run added only its start and end to the ledger" \
	"$(q $db "SELECT string_agg(event, ',' ORDER BY id) FROM gmail_ingest.ledger WHERE sync_run_id = (SELECT id FROM gmail_ingest.sync_runs WHERE mailbox_id = $mb ORDER BY id OFFSET 1 LIMIT 1)")" "sync.started,sync.completed"

check "unschedule_sync drops the job" "$(q $db "SELECT gmail_ingest.unschedule_sync($mb)")" t
check "unschedule_sync again is harmless" "$(q $db "SELECT gmail_ingest.unschedule_sync($mb)")" f
check "no job left" "$(q $db "SELECT count(*) FROM cron.job WHERE jobname LIKE 'gmail_ingest_sync_%'")" 0

# Where pg_cron is not installed: a clear error with a hint.
fresh_db test_nocron
err=$(psql -X -At -d test_nocron -v VERBOSITY=verbose -c "SELECT gmail_ingest.schedule_sync(gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000c2', 'x@example.com', 'rt'))" 2>&1 || true)
check "without pg_cron: SQLSTATE 42704 with a hint" "$(echo "$err" | grep -c -e '42704' -e 'HINT:  Add pg_cron')" 2
dropdb test_nocron
q $db "DROP EXTENSION gmail_ingest CASCADE" >/dev/null
finish
