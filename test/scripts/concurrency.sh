#!/usr/bin/env bash
# 20 concurrent syncs of 10 mailboxes (two per mailbox, started together):
# no deadlock, every call either syncs or is refused at once with 55P03
# because its twin holds the mailbox, and every mailbox ends complete.
set -euo pipefail
. "$(dirname "$0")/../lib/script.sh"

db=test_concurrency
tag=$$
fresh_db $db
mbs=()
for i in $(seq 1 10); do
	email="conc$i-$tag@example.com"
	gi_double POST /admin/mailboxes '{"email":"'$email'","refresh_token":"rt-conc'$i'-'$tag'","seed":'$((80 + i))',"threads":15,"messages":60,"days":8,"window_days":7,"attachments":10}' >/dev/null
	mbs+=("$(q $db "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000a$((i % 10))', '$email', 'rt-conc$i-$tag')")")
done

out="$GI_WORK/concurrency.$tag"
mkdir -p "$out"
start=$(date +%s%N)
for round in 1 2; do
	for i in $(seq 0 9); do
		psql -X -At -d $db -v VERBOSITY=sqlstate \
			-c "SELECT status FROM gmail_ingest.gmail_sync(${mbs[$i]}, 7)" >"$out/$i.$round" 2>&1 &
	done
done
wait
ms=$(( ($(date +%s%N) - start) / 1000000 ))

outcomes=$(cat "$out"/* | sed "s/^ERROR: */refused /" | sort | uniq -c | awk '{$1 = $1 " x"; print}' | tr '\n' ' ')
check "no deadlock, no other error: only succeeded or 55P03" "$(cat "$out"/* | grep -cv -e '^succeeded$' -e '55P03')" 0
check "every mailbox synced at least once" "$(q $db "SELECT count(DISTINCT mailbox_id) FROM gmail_ingest.sync_runs WHERE status = 'succeeded'")" 10
for i in $(seq 0 9); do
	email="conc$((i + 1))-$tag@example.com"
	want=$($DQ window-count "$email" 7)
	got=$(q $db "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = ${mbs[$i]}")
	[ "$got" = "$want" ] || check "mailbox $email complete" "$got" "$want"
done
check "all mailboxes complete, invariants hold" \
	"$(q $db "SELECT bool_and(ok) FROM gmail_ingest.mailboxes m, gmail_ingest.verify(m.id)")" t
echo "# 20 concurrent syncs of 10 mailboxes in $ms ms: $outcomes"
dropdb $db
finish
