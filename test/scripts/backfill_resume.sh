#!/usr/bin/env bash
# gmail_backfill survives a killed backend: batches already committed stay,
# a second call resumes without listing again or fetching a stored message
# again, completes with no duplicate, and moves history_id only at the end.
set -euo pipefail
. "$(dirname "$0")/../lib/script.sh"

db=test_backfill
email=backfill@example.com
fresh_db $db
gi_double POST /admin/mailboxes '{"email":"backfill@example.com","refresh_token":"rt-backfill","seed":21,"threads":80,"messages":500,"days":9,"window_days":7,"attachments":100}' >/dev/null
mb=$(q $db "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000b1', '$email', 'rt-backfill')")
expected=$($DQ window-count $email 7)

# Slow downloads down so the backfill is still running when it is killed.
$DQ faults '[{"endpoint": "messages.get", "kind": "delay", "ms": 60, "count": -1}]'
psql -X -q -d $db -c "CALL gmail_ingest.gmail_backfill($mb, 7, 25)" >/dev/null 2>&1 &
caller=$!
for _ in $(seq 1 300); do
	done_batches=$(q $db "SELECT count(*) FROM gmail_ingest.sync_runs WHERE mailbox_id = $mb AND status = 'succeeded'")
	[ "$done_batches" -ge 3 ] && break
	sleep 0.1
done
backend=$(q $db "SELECT pid FROM pg_stat_activity WHERE query LIKE 'CALL gmail_ingest.gmail_backfill%' AND pid <> pg_backend_pid()")
q $db "SELECT pg_terminate_backend($backend)" >/dev/null
wait $caller || true
$DQ clear-faults

stored=$(q $db "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $mb")
check "killed mid-way: some batches committed" "$([ "$stored" -gt 0 ] && [ "$stored" -lt "$expected" ] && echo yes)" yes
check "killed mid-way: history_id not moved" "$(q $db "SELECT history_id IS NULL AND backfill_history_id IS NOT NULL FROM gmail_ingest.mailboxes WHERE id = $mb")" t
check "killed mid-way: invariants hold" "$(q $db "SELECT bool_and(ok) FROM gmail_ingest.verify($mb)")" t
check "mailbox_status shows the backfill" "$(q $db "SELECT backfill_in_progress FROM gmail_ingest.mailbox_status WHERE mailbox_id = $mb")" t

$DQ reset-stats
start=$(date +%s%N)
psql -X -q -d $db -c "CALL gmail_ingest.gmail_backfill($mb, 7, 25)" >/dev/null 2>&1
elapsed=$(( ($(date +%s%N) - start) / 1000000 ))
gets=$($DQ requests $email messages.get)
check "resumed: every message stored once" "$(q $db "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $mb")" "$expected"
check "resumed: stored messages not fetched again" "$gets" "$((expected - stored))"
check "resumed: no listing again" "$($DQ requests $email messages.list)/$($DQ requests $email threads.list)" "0/0"
check "completed: history_id moved, staging empty" "$(q $db "SELECT history_id IS NOT NULL AND backfill_history_id IS NULL AND NOT EXISTS (SELECT 1 FROM gmail_ingest.backfill_queue WHERE mailbox_id = $mb) FROM gmail_ingest.mailboxes WHERE id = $mb")" t
check "completed: invariants hold" "$(q $db "SELECT bool_and(ok) FROM gmail_ingest.verify($mb)")" t

# The result is that of a full sync: a forced full re-run finds nothing to do.
$DQ reset-stats
check "full re-run after backfill writes nothing" "$(q $db "SELECT messages_inserted + messages_updated + threads_inserted + threads_updated + attachments_inserted + blobs_inserted FROM gmail_ingest.gmail_sync($mb, 7, true)")" 0
check "full re-run after backfill downloads nothing" "$($DQ requests $email messages.get)" 0

units=$(q $db "SELECT sum(quota_units) FROM gmail_ingest.sync_runs WHERE mailbox_id = $mb AND id < (SELECT max(id) FROM gmail_ingest.sync_runs WHERE mailbox_id = $mb)")
echo "# backfill of $expected messages: killed after $stored stored; resume fetched $gets in ${elapsed} ms; $units quota units over all batches"
dropdb $db
finish
