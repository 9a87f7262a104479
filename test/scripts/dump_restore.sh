#!/usr/bin/env bash
# A database restored from pg_dump writes again (issue: 1.0's identity
# sequences were not dumped, so a restored database handed out ids already
# taken: every gmail_sync failed on sync_runs_pkey, add_mailbox on
# mailboxes_pkey).  For the plain and the custom format: sync, dump, restore
# into a new database; the sequences stand where they stood (checked before
# anything runs in the restored database, so no repair can hide a missing
# dump); then new mail and a new mailbox sync there, verify() holds and no
# natural key is duplicated.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

tag=$(run_tag)
A=dump-a-$tag@example.com
db=gi_dump_src
new_mailbox "$A" '"seed":51,"threads":15,"messages":40,"days":9,"window_days":7,"attachments":10'
fresh_db $db
install_digests $db
a=$(q $db "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000d1', '$A', 'rt-$A')")
check "source: first sync" "$(q $db "SELECT status FROM gmail_ingest.gmail_sync($a, 7)")" succeeded
$DQ add "$A" >/dev/null
check "source: incremental sync" "$(q $db "SELECT status FROM gmail_ingest.gmail_sync($a, 7)")" succeeded

positions="SELECT string_agg(t || '=' || coalesce(pg_sequence_last_value(pg_get_serial_sequence('gmail_ingest.' || t, 'id')::regclass)::text, 'unset'), ' ' ORDER BY t)
             FROM unnest(ARRAY['mailboxes', 'mail_threads', 'mail_messages', 'mail_attachments', 'sync_runs', 'ledger']) t"
src_positions=$(q $db "$positions")
src_rows=$(q $db "SELECT gi_test_db_digest()")
check "source: every sequence in use" "$(grep -c unset <<<"$src_positions")" 0

added=0
for format in plain custom; do
	rdb=gi_dump_$format
	dropdb --if-exists $rdb >/dev/null 2>&1
	createdb $rdb
	if [ $format = plain ]; then
		pg_dump -d $db -f "$GI_WORK/dump.sql"
		psql -X -q -v ON_ERROR_STOP=1 -d $rdb -f "$GI_WORK/dump.sql" >"$GI_WORK/restore-$format.log" 2>&1
	else
		pg_dump -Fc -d $db -f "$GI_WORK/dump.custom"
		pg_restore --exit-on-error -d $rdb "$GI_WORK/dump.custom" >"$GI_WORK/restore-$format.log" 2>&1
	fi
	check "$format: restored" "$?" 0
	check "$format: the sequences stand where they stood" "$(q $rdb "$positions")" "$src_positions"
	check "$format: every row" "$(q $rdb "SELECT gi_test_db_digest()")" "$src_rows"

	$DQ add "$A" >/dev/null
	added=$((added + 1))		# every restore starts from the source's state
	check "$format: new mail syncs" \
		"$(q $rdb "SELECT status || ' ' || messages_inserted FROM gmail_ingest.gmail_sync($a, 7)" 2>&1)" "succeeded $added"
	N=dump-n-$format-$tag@example.com
	new_mailbox "$N" '"seed":52,"threads":3,"messages":6,"days":9,"window_days":7,"attachments":2'
	n=$(q $rdb "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000d1', '$N', 'rt-$N')" 2>&1)
	check "$format: a new mailbox is added" "$(q $rdb "SELECT provider_email FROM gmail_ingest.mailboxes WHERE id = '$n'" 2>&1)" "$N"
	check "$format: the new mailbox syncs" "$(q $rdb "SELECT status FROM gmail_ingest.gmail_sync($n, 7)" 2>&1)" succeeded
	check "$format: verify()" "$(verify_ok $rdb $a) $(verify_ok $rdb $n)" "t t"
	check "$format: no duplicate" "$(q $rdb "SELECT gi_test_duplicates($a) + gi_test_duplicates($n)")" 0
	check "$format: ids stay unique" \
		"$(q $rdb "SELECT (SELECT count(*) = count(DISTINCT id) FROM gmail_ingest.sync_runs)
		             AND (SELECT count(*) = count(DISTINCT id) FROM gmail_ingest.ledger)
		             AND (SELECT count(*) = count(DISTINCT id) FROM gmail_ingest.mail_messages)")" t
	dropdb $rdb
done
dropdb $db

finish
