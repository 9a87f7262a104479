#!/usr/bin/env bash
# Quota and time of incremental runs: unchanged (at most 3 units, no data
# tuple written), and with 10 changes (4 new messages, 2 deleted, 2 moved to
# Trash, 2 relabelled: exactly those applied, one messages.get per new
# message), against a full sync and a backfill of the same mailbox.
set -euo pipefail
. "$(dirname "$0")/../lib/script.sh"

db=test_incremental
email=figures-$$@example.com   # unique: the double outlives a run
fresh_db $db
gi_double POST /admin/mailboxes '{"email":"'$email'","refresh_token":"rt-figures-'$$'","seed":51,"threads":120,"messages":600,"days":8,"window_days":7,"attachments":120}' >/dev/null
mb=$(q $db "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000e1', '$email', 'rt-figures-$$')")

run() {  # prints: mode units ms inserted updated deleted data_tuples
	psql -X -At -q -v ON_ERROR_STOP=1 -d $db -c "
	BEGIN;
	CREATE TEMP TABLE x0 AS SELECT relname, n_tup_ins + n_tup_upd + n_tup_del AS n
	  FROM pg_stat_xact_user_tables WHERE schemaname = 'gmail_ingest';
	CREATE TEMP TABLE r AS SELECT * FROM gmail_ingest.gmail_sync($mb, 7, $1);
	SELECT r.mode, r.quota_units, round(extract(epoch FROM r.finished_at - r.started_at) * 1000),
	       r.messages_inserted, r.messages_updated, r.messages_deleted,
	       (SELECT sum(s.n_tup_ins + s.n_tup_upd + s.n_tup_del - x0.n) FROM pg_stat_xact_user_tables s
	          JOIN x0 USING (relname)
	         WHERE s.schemaname = 'gmail_ingest'
	           AND s.relname IN ('mail_threads', 'mail_messages', 'mail_attachments', 'blobs'))
	  FROM r;
	COMMIT;" 2>/dev/null | tr '|' ' '
}

read -r mode units ms ins upd del tuples <<<"$(run false)"
echo "# first full sync: $ins messages, $units units, $ms ms"
full_units=$units

read -r mode units ms ins upd del tuples <<<"$(run false)"
check "unchanged incremental: mode" "$mode" incremental
check "unchanged incremental: at most 3 units" "$([ "$units" -le 3 ] && echo yes)" yes
check "unchanged incremental: no data tuple written" "$tuples" 0
echo "# unchanged incremental: $units units, $ms ms"

for n in 20 22 24 26 28 30 32 34 36 38; do ids+=("$($DQ nth-id $email 7 $n)"); done
for _ in 1 2 3 4; do $DQ add $email >/dev/null; done
$DQ delete $email "${ids[0]}"
$DQ delete $email "${ids[1]}"
$DQ labels $email "${ids[2]}" TRASH INBOX
$DQ labels $email "${ids[3]}" TRASH INBOX
$DQ labels $email "${ids[4]}" STARRED -
$DQ labels $email "${ids[5]}" Label_figures -
$DQ reset-stats
read -r mode units ms ins upd del tuples <<<"$(run false)"
check "10 changes: 4 inserted, 4 updated, 2 deleted" "$ins/$upd/$del" "4/4/2"
check "10 changes: one messages.get per new message" "$($DQ requests $email messages.get)" 4
check "10 changes: no listing" "$($DQ requests $email messages.list)/$($DQ requests $email threads.list)" "0/0"
check "10 changes: invariants hold" "$(q $db "SELECT bool_and(ok) FROM gmail_ingest.verify($mb)")" t
echo "# incremental with 10 changes: $units units, $ms ms"

# A backfill of the same window into a second database.
fresh_db test_incremental_bf
mb2=$(q test_incremental_bf "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000e1', '$email', 'rt-figures-$$')")
start=$(date +%s%N)
psql -X -q -d test_incremental_bf -c "CALL gmail_ingest.gmail_backfill($mb2, 7, 100)" >/dev/null 2>&1
bf_ms=$(( ($(date +%s%N) - start) / 1000000 ))
bf_units=$(q test_incremental_bf "SELECT sum(quota_units) FROM gmail_ingest.sync_runs WHERE mailbox_id = $mb2")
check "backfill stores what the full sync stored" \
	"$(q test_incremental_bf "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $mb2")" \
	"$(q $db "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $mb AND deleted_at IS NULL AND NOT ('TRASH' = ANY (label_ids))")"
echo "# backfill (batches of 100): $bf_units units, $bf_ms ms; full sync: $full_units units"
dropdb test_incremental_bf
dropdb $db
finish
