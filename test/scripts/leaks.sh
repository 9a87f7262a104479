#!/usr/bin/env bash
# No leaks: LEAK_SYNCS syncs (500) in ONE backend, a third of them
# succeeding (a full sync with downloads: the mailbox's rows are deleted
# before each), a third failing (400, invalid JSON, reset, 503 with
# max_retries 0, invalid_client: recorded failures that roll back what they
# wrote), a third cancelled by statement_timeout while a download hangs.
# The backend's resident memory apart from shared memory (VmRSS - RssShmem
# in /proc/PID/status: its heap, libcurl's and OpenSSL's included) after all
# of them must be within 5 MB of what it was after a warm-up, and it must
# hold no more sockets than before the first sync; the double must see no
# request still open.  VmRSS itself also counts the pages of shared buffers
# the backend has touched, which grow with the tables and are not a leak:
# printed, not checked.
# About 30 s for 500 syncs on 2 cores.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

N=${LEAK_SYNCS:-500}
WARM=$(( N / 8 ))
DB=gi_leaks
TAG=$(run_tag)
NOW_MS=$(now_ms)
OUT=$(mktemp -d "${TMPDIR:-/tmp}/gi_leaks.XXXXXX")
started=$SECONDS
PARAMS="\"seed\":71,\"threads\":4,\"messages\":8,\"days\":7,\"window_days\":7,\"attachments\":4,\"drafts\":0,\"spam\":0,\"trash\":0,\"now_ms\":$NOW_MS,\"content_email\":\"leak-content@example.com\""

emails=()
clean_up_at_exit $DB

fresh_db $DB
declare -A MB
for who in ok bad1 bad2 bad3 bad4 bad5 cancel; do
	e="leak-$who-$TAG@leaks.example"
	emails+=("$e")
	new_mailbox "$e" "$PARAMS"
	MB[$who]=$(q $DB "SELECT gmail_ingest.add_mailbox(gen_random_uuid(), '$e', 'rt-$e')")
done
X=$($DQ nth-id "leak-ok-$TAG@leaks.example" 7 3)   # a message in the middle
f() { echo "{\"email\":\"leak-$1-$TAG@leaks.example\",\"endpoint\":\"$2\",\"kind\":\"$3\",\"count\":-1$4}"; }
dbl POST /admin/faults "[$(f bad1 messages.get status ',"status":400,"message_id":"'"$X"'"'),
	$(f bad2 messages.get invalid_json ',"message_id":"'"$X"'"'),
	$(f bad3 threads.list reset ''),
	$(f bad4 messages.get status ',"status":503,"message_id":"'"$X"'"'),
	$(f bad5 token status ',"status":401,"reason":"invalid_client"'),
	$(f cancel messages.get hang ',"message_id":"'"$X"'"')]" >/dev/null

# Measurements are taken by the client (psql's \!) while the backend idles.
cat >"$OUT/measure.sh" <<EOF
pid=\$(tr -dc 0-9 <"$OUT/pid")
printf '%s %s %s %s %s %s\n' "\$1" \\
	"\$(awk '/^VmRSS/ {print \$2}' /proc/\$pid/status)" "\$(awk '/^RssAnon/ {print \$2}' /proc/\$pid/status)" \\
	"\$(awk '/^RssShmem/ {print \$2}' /proc/\$pid/status)" "\$(ls /proc/\$pid/fd | wc -l)" \\
	"\$(ls -l /proc/\$pid/fd | grep -c 'socket:')" >>"$OUT/figures"
EOF

bad=(bad1 bad2 bad3 bad4 bad5)
{
	echo "SET gmail_ingest.max_retries = 0;"
	echo "\\o $OUT/pid"
	echo "SELECT pg_backend_pid();"
	echo "\\o /dev/null"
	echo "\\! sh $OUT/measure.sh before"
	for k in $(seq 0 $((N - 1))); do
		case $((k % 3)) in
			0) echo "DELETE FROM gmail_ingest.mail_attachments WHERE mailbox_id = ${MB[ok]};
DELETE FROM gmail_ingest.mail_messages WHERE mailbox_id = ${MB[ok]};
DELETE FROM gmail_ingest.mail_threads WHERE mailbox_id = ${MB[ok]};
UPDATE gmail_ingest.mailboxes SET history_id = NULL WHERE id = ${MB[ok]};
SELECT status FROM gmail_ingest.gmail_sync(${MB[ok]}, 7);" ;;
			1) echo "SELECT status FROM gmail_ingest.gmail_sync(${MB[${bad[$(( (k / 3) % 5 ))]}]}, 7);" ;;
			2) echo "SET statement_timeout = 100; SELECT status FROM gmail_ingest.gmail_sync(${MB[cancel]}, 7); RESET statement_timeout;" ;;
		esac
		[ $((k + 1)) -eq $WARM ] && echo "\\! sh $OUT/measure.sh warm"
	done
	echo "\\! sh $OUT/measure.sh end"
} >"$OUT/script.sql"

t0=$(ms_now)
timeout 900 psql -X -q -At -d $DB -f "$OUT/script.sql" >/dev/null 2>"$OUT/stderr"
elapsed=$(( $(ms_now) - t0 ))
dbl DELETE "/admin/faults?email=leak-cancel-$TAG@leaks.example" >/dev/null

read -r _ rss0 anon0 shm0 fd0 sock0 < <(grep '^before' "$OUT/figures")
read -r _ rss1 anon1 shm1 fd1 sock1 < <(grep '^warm' "$OUT/figures")
read -r _ rss2 anon2 shm2 fd2 sock2 < <(grep '^end' "$OUT/figures")
echo "# $N syncs in one backend in $((elapsed / 1000)).$(printf %03d $((elapsed % 1000))) s"
echo "#            VmRSS  RssAnon RssShmem  fds sockets (kB)"
printf '#   before %8s %8s %8s %4s %4s\n' "$rss0" "$anon0" "$shm0" "$fd0" "$sock0"
printf '#   warm   %8s %8s %8s %4s %4s   (after %s syncs)\n' "$rss1" "$anon1" "$shm1" "$fd1" "$sock1" "$WARM"
printf '#   end    %8s %8s %8s %4s %4s\n' "$rss2" "$anon2" "$shm2" "$fd2" "$sock2"
growth=$(( (rss2 - shm2) - (rss1 - shm1) ))
echo "# growth after the warm-up: VmRSS - RssShmem $growth kB (RssAnon $(( anon2 - anon1 )) kB); VmRSS $(( rss2 - rss1 )) kB, of which shared buffers $(( shm2 - shm1 )) kB"

runs=$(q $DB "SELECT count(*) FILTER (WHERE status = 'succeeded') || '/' || count(*) FILTER (WHERE status = 'failed') FROM gmail_ingest.sync_runs")
cancels=$(grep -c 'canceling statement due to statement timeout' "$OUT/stderr")
others=$(grep '^psql:.*ERROR' "$OUT/stderr" | grep -vc 'canceling statement due to statement timeout')
check "a third succeeded, a third failed (recorded)" "$runs" "$(( (N + 2) / 3 ))/$(( (N + 1) / 3 ))"
check "a third cancelled by statement_timeout" "$cancels" "$(( N / 3 ))"
check "no other error" "$others" 0
check "resident memory (shared memory aside) grew less than 5 MB after the warm-up" \
	"$([ "$growth" -lt 5120 ] && echo yes || echo "no: $growth kB")" yes
check "no socket left open: as many as before the first sync" "$sock2" "$sock0"
check "no file descriptor piling up after the warm-up (at most 10 more relation files)" \
	"$([ $(( fd2 - fd1 )) -le 10 ] && echo yes || echo "no: $fd1 -> $fd2")" yes
sleep 0.5
open=0
for e in "${emails[@]}"; do
	open=$(( open + $(dbl GET "/admin/stats?email=$e" | grep -o '"in_flight": [0-9]*' | grep -o '[0-9]*$') ))
done
check "the double sees no request of ours still open" "$open" 0
check "verify() holds" "$(q $DB "SELECT count(*) FROM gmail_ingest.mailboxes m, gmail_ingest.verify(m.id) v WHERE NOT v.ok")" 0
echo "# $((SECONDS - started)) s"
finish
