#!/usr/bin/env bash
# schedule_sync with the real pg_cron (preloaded by the test cluster): a
# scheduled sync really runs, its rows appear, cron.job_run_details shows
# success, and the second scheduled run of an unchanged mailbox writes
# nothing.  In the same minutes, start_workers' jobs run fleet workers that
# sync another mailbox, and stop_workers removes them.  pg_cron 1.4 has
# minute granularity, so this waits (bounded).
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

# The fleet's workers leave this one to its own job; they sync the next.
q $db "SELECT gmail_ingest.pause_mailbox($mb)" >/dev/null
gi_double POST /admin/mailboxes '{"email":"cron-fleet@example.com","refresh_token":"rt-cron-fleet","seed":32,"threads":6,"messages":20,"days":9,"window_days":7,"attachments":4}' >/dev/null
fleet_mb=$(q $db "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000c1', 'cron-fleet@example.com', 'rt-cron-fleet')")
fleet_expected=$($DQ window-count cron-fleet@example.com 7)
worker_jobs="SELECT string_agg(jobname || ' ' || schedule || ' ' || command, '; ' ORDER BY jobname) FROM cron.job WHERE jobname LIKE 'gmail_ingest_worker_%'"
check "start_workers(3) makes three jobs" "$(q $db "SELECT gmail_ingest.start_workers(3)")/$(q $db "SELECT count(*) FROM cron.job WHERE jobname LIKE 'gmail_ingest_worker_%'")" "3/3"
check "start_workers(2) keeps two" "$(q $db "SELECT gmail_ingest.start_workers(2)")/$(q $db "SELECT count(*) FROM cron.job WHERE jobname LIKE 'gmail_ingest_worker_%'")" "2/2"
check "start_workers(2) again is harmless" "$(q $db "SELECT gmail_ingest.start_workers(2)"; q $db "$worker_jobs")" \
	"2
gmail_ingest_worker_1 * * * * * CALL gmail_ingest.run_due('55 seconds'); gmail_ingest_worker_2 * * * * * CALL gmail_ingest.run_due('55 seconds')"

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

check "a fleet worker synced the other mailbox's window" \
	"$(q $db "SELECT status || '/' || messages_inserted FROM gmail_ingest.sync_runs WHERE mailbox_id = $fleet_mb ORDER BY id LIMIT 1")" "succeeded/$fleet_expected"
check "the fleet left the paused mailbox to its own job (runs of it = runs of its job)" \
	"$(q $db "SELECT (SELECT count(*) FROM gmail_ingest.sync_runs WHERE mailbox_id = $mb AND status = 'succeeded') = (SELECT count(*) FROM cron.job_run_details WHERE jobid = $job AND status = 'succeeded')")" t
check "the fleet mailbox is scheduled one interval on" \
	"$(q $db "SELECT next_sync_at > now() + interval '10 minutes' AND consecutive_failures = 0 FROM gmail_ingest.mailboxes WHERE id = $fleet_mb")" t
check "the workers' jobs ran" \
	"$(q $db "SELECT count(*) > 0 FROM cron.job_run_details d JOIN cron.job j USING (jobid) WHERE j.jobname LIKE 'gmail_ingest_worker_%'")" t
check "stop_workers removes both jobs" "$(q $db "SELECT gmail_ingest.stop_workers()")/$(q $db "SELECT count(*) FROM cron.job WHERE jobname LIKE 'gmail_ingest_worker_%'")" "2/0"
check "stop_workers again removes nothing" "$(q $db "SELECT gmail_ingest.stop_workers()")" 0
# A worker already running finishes its 55 seconds; end them now.
q $db "SELECT count(pg_terminate_backend(pid)) >= 0 FROM pg_stat_activity WHERE query LIKE 'CALL gmail_ingest.run_due%' AND pid <> pg_backend_pid()" >/dev/null

check "unschedule_sync drops the job" "$(q $db "SELECT gmail_ingest.unschedule_sync($mb)")" t
check "unschedule_sync again is harmless" "$(q $db "SELECT gmail_ingest.unschedule_sync($mb)")" f
check "no job left" "$(q $db "SELECT count(*) FROM cron.job WHERE jobname LIKE 'gmail_ingest_sync_%'")" 0

# Where pg_cron is not installed: a clear error with a hint.
fresh_db test_nocron
err=$(psql -X -At -d test_nocron -v VERBOSITY=verbose -c "SELECT gmail_ingest.schedule_sync(gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000c2', 'x@example.com', 'rt'))" 2>&1 || true)
check "without pg_cron: SQLSTATE 42704 with a hint" "$(echo "$err" | grep -c -e '42704' -e 'HINT:  Add pg_cron')" 2
err=$(psql -X -At -d test_nocron -v VERBOSITY=verbose -c "SELECT gmail_ingest.start_workers(2)" 2>&1 || true)
check "start_workers without pg_cron: SQLSTATE 42704 with a hint" "$(echo "$err" | grep -c -e '42704' -e 'HINT:  Add pg_cron')" 2
dropdb test_nocron
q $db "DROP EXTENSION gmail_ingest CASCADE" >/dev/null
finish
