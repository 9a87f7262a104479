#!/usr/bin/env bash
# A thread's stored summary (snippet, message count, first and last dates)
# depends only on what Gmail holds, not on the path the syncs took to it.
# Two mailboxes of the same content: in one, a thread loses its messages one
# sync at a time; in the other, all in one sync.  (The soak found it: a
# thread emptied in two steps kept the snippet of its last message, one
# emptied in one step the snippet Gmail listed first.)  The same for a
# thread whose messages all went to Trash, and for one that only lost its
# newest message.  The rows must then be equal, an emptied thread has no
# snippet, and a re-run writes nothing.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

tag=$(run_tag)
NOW_MS=$(now_ms)
db=gi_rollup
A=rollup-a-$tag@example.com
B=rollup-b-$tag@example.com
params="\"seed\":91,\"threads\":6,\"messages\":24,\"days\":7,\"window_days\":7,\"attachments\":0,\"now_ms\":$NOW_MS,\"content_email\":\"rollup@example.com\""
new_mailbox "$A" "$params"
new_mailbox "$B" "$params"
fresh_db $db
clean_up_at_exit $db
install_digests $db
a=$(q $db "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000e1', '$A', 'rt-$A')")
b=$(q $db "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000e1', '$B', 'rt-$B')")
sync() { q $db "SELECT status FROM gmail_ingest.gmail_sync($1, 7)"; }
check "first syncs" "$(sync "$a") $(sync "$b")" "succeeded succeeded"
check "the same rows to begin with" "$(q $db "SELECT gi_test_digest($a) = gi_test_digest($b)")" t

# Three threads of at least three messages (the same ids in both mailboxes),
# each message listed newest first.
threads=$(q $db "SELECT string_agg(provider_thread_id, ' ' ORDER BY provider_thread_id) FROM (
  SELECT provider_thread_id FROM gmail_ingest.mail_messages WHERE mailbox_id = $a
   GROUP BY provider_thread_id HAVING count(*) >= 3 ORDER BY provider_thread_id LIMIT 3) t")
read -r emptied trashed trimmed <<<"$threads"
check "three threads of three or more messages" "$([ -n "${trimmed:-}" ] && echo yes)" yes
msgs() { q $db "SELECT string_agg(provider_message_id, ' ' ORDER BY internal_date DESC, provider_message_id) FROM gmail_ingest.mail_messages WHERE mailbox_id = $a AND provider_thread_id = '$1'"; }
read -ra e_msgs <<<"$(msgs "$emptied")"
read -ra t_msgs <<<"$(msgs "$trashed")"
read -ra m_msgs <<<"$(msgs "$trimmed")"

# A: one change per sync, newest message first.
for id in "${e_msgs[@]}"; do
	dbl DELETE "/admin/mailboxes/$A/messages/$id" >/dev/null
	s=$(sync "$a"); [ "$s" = succeeded ] || echo "# A: sync after deleting $id: $s"
done
for id in "${t_msgs[@]}"; do
	$DQ labels "$A" "$id" TRASH INBOX >/dev/null
	s=$(sync "$a"); [ "$s" = succeeded ] || echo "# A: sync after trashing $id: $s"
done
dbl DELETE "/admin/mailboxes/$A/messages/${m_msgs[0]}" >/dev/null
check "A: one sync per change" "$(sync "$a")" succeeded
# B: every change, then one sync.
for id in "${e_msgs[@]}"; do dbl DELETE "/admin/mailboxes/$B/messages/$id" >/dev/null; done
for id in "${t_msgs[@]}"; do $DQ labels "$B" "$id" TRASH INBOX >/dev/null; done
dbl DELETE "/admin/mailboxes/$B/messages/${m_msgs[0]}" >/dev/null
check "B: one sync for every change" "$(sync "$b")" succeeded

check "the same thread rows whatever the path" "$(q $db "SELECT gi_test_digest($a) = gi_test_digest($b)")" t
rows="SELECT string_agg(concat_ws(' ', provider_thread_id, message_count, coalesce(snippet, '(null)')), E'\n' ORDER BY provider_thread_id) FROM gmail_ingest.mail_threads WHERE mailbox_id = %s"
if [ "$(q $db "$(printf "$rows" "$a")")" != "$(q $db "$(printf "$rows" "$b")")" ]; then
	diff <(q $db "$(printf "$rows" "$a")") <(q $db "$(printf "$rows" "$b")") | sed -n 's/^[<>] /# &/p'
fi
for mb in "$a" "$b"; do
	check "emptied and trashed threads: no live message, no snippet ($mb)" \
		"$(q $db "SELECT string_agg(message_count || ':' || (snippet IS NULL), ' ' ORDER BY provider_thread_id) FROM gmail_ingest.mail_threads WHERE mailbox_id = $mb AND provider_thread_id IN ('$emptied', '$trashed')")" \
		"$(if [[ "$emptied" < "$trashed" ]]; then echo "0:true ${#t_msgs[@]}:true"; else echo "${#t_msgs[@]}:true 0:true"; fi)"
	check "trimmed thread: the snippet of its newest remaining message ($mb)" \
		"$(q $db "SELECT t.snippet = m.snippet FROM gmail_ingest.mail_threads t JOIN gmail_ingest.mail_messages m ON m.mailbox_id = t.mailbox_id AND m.provider_message_id = '${m_msgs[1]}' WHERE t.mailbox_id = $mb AND t.provider_thread_id = '$trimmed'")" t
done
check "verify() holds" "$(q $db "SELECT count(*) FROM gmail_ingest.verify($a) v WHERE NOT v.ok") $(q $db "SELECT count(*) FROM gmail_ingest.verify($b) v WHERE NOT v.ok")" "0 0"
before=$(q $db "SELECT n_tup_upd + n_tup_ins FROM pg_stat_user_tables WHERE relname = 'mail_threads'")
sync "$a" >/dev/null; sync "$b" >/dev/null
q $db "SELECT pg_stat_force_next_flush()" >/dev/null
after=$(q $db "SELECT n_tup_upd + n_tup_ins FROM pg_stat_user_tables WHERE relname = 'mail_threads'")
check "unchanged re-runs write no thread" "$((after - before))" 0
finish
