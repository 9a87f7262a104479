#!/usr/bin/env bash
# Credentials of another account never file that account's mail under a
# mailbox.  Mailbox A is synced; then its refresh token is replaced by one of
# account B (a user re-consenting picks whichever account the browser
# offers).  B holds A's messages and history ids (the double's
# "content_email") plus mail of its own added later, so B's history goes on
# from A's stored history id: version 1.0 read it incrementally, stored B's
# new messages under A and reported success.  Now:
#   - every sync reads the profile first and refuses another account's
#     token, whatever the plan: an incremental sync, a backfill's later
#     step, a full sync; a recorded failure that stores nothing and moves
#     no history id;
#   - add_mailbox with a changed token forgets the history id and a
#     backfill's staged listing (the next sync starts over, full);
#   - the right account's token syncs again, and nothing changed meanwhile.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

tag=$(run_tag)
A=acct-a-$tag@example.com
B=acct-b-$tag@example.com
C=acct-c-$tag@example.com
db=gi_account_change
new_mailbox "$A" '"seed":61,"threads":20,"messages":60,"days":9,"window_days":7,"attachments":10'
new_mailbox "$B" "\"content_email\":\"$A\",\"seed\":61,\"threads\":20,\"messages\":60,\"days\":9,\"window_days\":7,\"attachments\":10"
new_mailbox "$C" "\"content_email\":\"$A\",\"seed\":61,\"threads\":20,\"messages\":60,\"days\":9,\"window_days\":7,\"attachments\":10"
fresh_db $db
install_digests $db
org=00000000-0000-0000-0000-0000000000c1
a=$(q $db "SELECT gmail_ingest.add_mailbox('$org', '$A', 'rt-$A')")
check "A: first sync" "$(q $db "SELECT status FROM gmail_ingest.gmail_sync($a, 7)")" succeeded
for _ in 1 2 3; do $DQ add "$B" >/dev/null; done
b_ids=$($DQ nth-id "$B" 7 0),$($DQ nth-id "$B" 7 1),$($DQ nth-id "$B" 7 2)
history_a=$(q $db "SELECT history_id FROM gmail_ingest.mailboxes WHERE id = $a")
rows=$(q $db "SELECT gi_test_db_digest()")
b_stored="SELECT count(*) FROM gmail_ingest.mail_messages WHERE provider_message_id = ANY (string_to_array('$b_ids', ','))"

refused() {	# refused LABEL SQL: the run failed as another account's, stored nothing
	local out
	out=$(q $db "SELECT status || '|' || coalesce(error, '') || '|' || messages_inserted FROM $2" 2>/dev/null)
	check "$1: a failed run" "${out%%|*}" failed
	check "$1: the error names the other account" "$(grep -c "belongs to another account" <<<"$out")" 1
	check "$1: nothing stored" "$(q $db "SELECT gi_test_db_digest()") $(q $db "$b_stored")" "$rows 0"
	check "$1: the ledger says sync.failed with 28000" \
		"$(q $db "SELECT detail->>'sqlstate' FROM gmail_ingest.ledger WHERE mailbox_id = $a AND event = 'sync.failed' ORDER BY id DESC LIMIT 1")" 28000
}

# 1. The token replaced behind add_mailbox's back (a 1.0 add_mailbox, or an
#    UPDATE): the history id stays, the sync is incremental.
q $db "UPDATE gmail_ingest.mailbox_credentials SET refresh_token = 'rt-$B', access_token = NULL WHERE mailbox_id = $a" >/dev/null
check "incremental: the plan" "$(q $db "SELECT history_id IS NOT NULL FROM gmail_ingest.mailboxes WHERE id = $a")" t
refused "incremental" "gmail_ingest.gmail_sync($a, 7)"
check "incremental: history id not moved" "$(q $db "SELECT history_id FROM gmail_ingest.mailboxes WHERE id = $a")" "$history_a"
check "incremental: verify()" "$(verify_ok $db $a)" t

# 2. add_mailbox with the other account's token forgets the history id.
q $db "SELECT gmail_ingest.add_mailbox('$org', '$A', 'rt-$A')" >/dev/null
q $db "SELECT gmail_ingest.add_mailbox('$org', '$A', 'rt-$B')" >/dev/null
check "add_mailbox with a new token forgets the history id" \
	"$(q $db "SELECT history_id IS NULL FROM gmail_ingest.mailboxes WHERE id = $a")" t
rows=$(q $db "SELECT gi_test_db_digest()")
refused "full" "gmail_ingest.gmail_sync($a, 7)"

# 3. A backfill staged with A's token, resumed with B's.
c=$(q $db "SELECT gmail_ingest.add_mailbox('$org', '$C', 'rt-$C')")
for _ in 1 2 3; do $DQ add "$C" >/dev/null; done
check "backfill: first step" "$(q $db "SELECT status FROM gmail_ingest._backfill_step($c, 7, 10)")" succeeded
staged=$(q $db "SELECT count(*) FROM gmail_ingest.backfill_queue WHERE mailbox_id = $c")
check "backfill: messages staged" "$([ "$staged" -gt 0 ] && echo yes)" yes
rows=$(q $db "SELECT gi_test_db_digest()")
q $db "UPDATE gmail_ingest.mailbox_credentials SET refresh_token = 'rt-$B', access_token = NULL WHERE mailbox_id = $c" >/dev/null
out=$(q $db "SELECT status || '|' || coalesce(error, '') FROM gmail_ingest._backfill_step($c, 7, 10)" 2>/dev/null)
check "backfill resumed with another account's token: refused" \
	"${out%%|*} $(grep -c "belongs to another account" <<<"$out")" "failed 1"
check "backfill: nothing stored, the staging kept" \
	"$(q $db "SELECT gi_test_db_digest()") $(q $db "SELECT count(*) FROM gmail_ingest.backfill_queue WHERE mailbox_id = $c")" \
	"$rows $staged"
q $db "SELECT gmail_ingest.add_mailbox('$org', '$C', 'rt-$C')" >/dev/null
check "add_mailbox with a new token forgets the backfill" \
	"$(q $db "SELECT backfill_history_id IS NULL AND backfill_days IS NULL
	           AND NOT EXISTS (SELECT 1 FROM gmail_ingest.backfill_queue WHERE mailbox_id = $c)
	           AND NOT EXISTS (SELECT 1 FROM gmail_ingest.backfill_threads WHERE mailbox_id = $c)
	          FROM gmail_ingest.mailboxes WHERE id = $c")" t

# 4. The right account again: a full sync over what is stored, then the new mail.
q $db "SELECT gmail_ingest.add_mailbox('$org', '$A', 'rt-$A')" >/dev/null
check "A's own token: syncs again" "$(q $db "SELECT mode || ' ' || status FROM gmail_ingest.gmail_sync($a, 7)")" "full succeeded"
check "A's mailbox never held B's mail" "$(q $db "$b_stored")" 0
history_a=$(q $db "SELECT history_id FROM gmail_ingest.mailboxes WHERE id = $a")
q $db "SELECT gmail_ingest.add_mailbox('$org', '$A', 'rt-$A')" >/dev/null
check "add_mailbox with the same token forgets nothing" \
	"$(q $db "SELECT history_id FROM gmail_ingest.mailboxes WHERE id = $a")" "$history_a"
check "the backfill starts over and completes" \
	"$(psql -X -q -d $db -c "CALL gmail_ingest.gmail_backfill($c, 7, 50)" >/dev/null 2>&1; q $db "SELECT history_id IS NOT NULL FROM gmail_ingest.mailboxes WHERE id = $c")" t
check "verify() A and C" "$(verify_ok $db $a) $(verify_ok $db $c)" "t t"

finish
