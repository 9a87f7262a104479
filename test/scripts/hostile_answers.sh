#!/usr/bin/env bash
# Hostile or broken answers from Gmail or Google's token endpoint (issue 9):
#   - a rate-limit hint far in the future (Retry-After: 7200, or Gmail's
#     "Retry after <time>" once a daily quota is spent) fails the run at
#     once, with the retry time in the error and in the sync.failed ledger
#     entry, instead of parking the sync for hours in an open transaction;
#   - pagination that never ends (threads.list, messages.list, history.list
#     answering the same nextPageToken forever, a cycle of a few tokens, or
#     new tokens forever; a gmail_backfill's staging too) is an unreadable
#     answer (08P01), not an endless loop;
#   - numbers out of range (internalDate, sizeEstimate, historyId, a history
#     record id, expires_in) and oversized or malformed tokens are unreadable
#     answers: a recorded failed run, no row stored, nothing cached, and
#     SELECT * of every table and pg_dump still work afterwards;
#   - every remote-failure kind has the SQLSTATE the README lists (an
#     oversized answer is 08P01);
#   - a message or thread id too long to be Gmail's is an unreadable answer.
# Each case syncs a fresh mailbox of its own in the double, in one database,
# with request_timeout_ms 1500, max_retries 1 (0 where the retry is not the
# point) and the quota budget off (pagination runs at full speed).  A
# statement_timeout stops a case that would hang, so a regression shows as
# a failed check, not a stuck suite.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

DB=gi_hostile
TAG=$(run_tag)
NOW_MS=$(now_ms)
PARAMS="\"seed\":23,\"threads\":2,\"messages\":3,\"days\":7,\"window_days\":7,\"attachments\":0,\"now_ms\":$NOW_MS"
export PGOPTIONS="${PGOPTIONS:-} -c gmail_ingest.request_timeout_ms=1500 -c gmail_ingest.max_retries=1 -c gmail_ingest.quota_units_per_minute=0"
STATEMENT_TIMEOUT=${HOSTILE_STATEMENT_TIMEOUT:-15s}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/gi_hostile.XXXXXX")
started=$SECONDS
emails=()
clean_up_at_exit $DB

fresh_db $DB

# The mailbox's rows: threads/messages/attachments/history id/cached token.
rows() {
	q $DB "SELECT (SELECT count(*) FROM gmail_ingest.mail_threads WHERE mailbox_id = $1) || '/' ||
	              (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $1) || '/' ||
	              (SELECT count(*) FROM gmail_ingest.mail_attachments WHERE mailbox_id = $1) || '/' ||
	              coalesce(m.history_id::text, '-') || '/' || (c.access_token IS NOT NULL)
	         FROM gmail_ingest.mailboxes m JOIN gmail_ingest.mailbox_credentials c ON c.mailbox_id = m.id
	        WHERE m.id = $1"
}

# new_case: a fresh mailbox in the double and the database (sets email, mb).
n=0
new_case() {
	n=$((n + 1))
	email="h$n-$TAG@hostile.example"
	emails+=("$email")
	new_mailbox "$email" "${CASE_PARAMS:-$PARAMS}"
	mb=$(q $DB "SELECT gmail_ingest.add_mailbox(gen_random_uuid(), '$email', 'rt-$email')")
}

# A real access token of the current mailbox, from the double's token endpoint.
real_token() {
	dbl POST /token "client_id=test-client-id&client_secret=test-client-secret&grant_type=refresh_token&refresh_token=rt-$email" |
		sed -n 's/.*"access_token": *"\([^"]*\)".*/\1/p'
}

# run PRE DAYS 'RULES' ['SET ...;']: one sync of a new mailbox under the fault
# rules (@EMAIL@ = its e-mail).  PRE "inc": a clean first sync and a new
# message come first, so the faulted sync is incremental.  SYNC_CALL, when
# set, is the statement instead of gmail_sync (@MB@, @DAYS@).  Sets status,
# sqlstate, retry_after (the ledger's), error, wall (ms), fired, before,
# after (rows), psql_error.
run() {
	local pre=$1 days=$2 rules=$3 settings=${4:-} t0 res
	local call=${SYNC_CALL:-"SELECT 1 FROM gmail_ingest.gmail_sync(@MB@, @DAYS@);"}
	[ -n "${mb:-}" ] && [ "${reuse:-}" = 1 ] || new_case
	if [ "$pre" = inc ]; then
		q $DB "SELECT status FROM gmail_ingest.gmail_sync($mb, 7)" >/dev/null
		dbl POST "/admin/mailboxes/$email/messages" "{\"internal_date_ms\":$((NOW_MS - 30000))}" >/dev/null
	fi
	before=$(rows "$mb")
	dbl POST /admin/faults "${rules//@EMAIL@/$email}" >/dev/null
	t0=$(ms_now)
	psql -X -At -v ON_ERROR_STOP=1 -d $DB >/dev/null 2>"$OUT/err" <<-SQL
		SET statement_timeout = '$STATEMENT_TIMEOUT';
		$settings
		$(c=${call//@MB@/$mb}; echo "${c//@DAYS@/$days}")
	SQL
	wall=$(( $(ms_now) - t0 ))
	psql_error=$(grep -m1 '^ERROR:' "$OUT/err")
	fired=$(dfired "$email")
	dclear "$email"
	res=$(q $DB "SELECT r.status || '|' || coalesce(l.detail->>'sqlstate', '-') || '|' ||
	                    coalesce(l.detail->>'retry_after', '-') || '|' || coalesce(replace(r.error, E'\n', ' '), '')
	               FROM gmail_ingest.sync_runs r
	               LEFT JOIN gmail_ingest.ledger l ON l.mailbox_id = r.mailbox_id AND l.sync_run_id = r.id
	                                              AND l.event = 'sync.failed'
	              WHERE r.mailbox_id = $mb ORDER BY r.id DESC LIMIT 1")
	IFS='|' read -r status sqlstate retry_after error <<<"$res"
	[ -n "$psql_error" ] && status="ERROR: $psql_error"
	after=$(rows "$mb")
	echo "# case $n: ${status:-no run} sqlstate=$sqlstate retry_after=$retry_after wall=${wall}ms fired=$fired${error:+ error: ${error:0:300}}"
}

# expect_failed NAME SQLSTATE: a recorded failed run with that SQLSTATE, and no row left behind.
expect_failed() {
	check "$1: recorded a failed run with SQLSTATE $2" "$status/$sqlstate" "failed/$2"
	check "$1: no row stored, history id kept, no token cached" "$after" "$before"
}

# within_ms MS NAME: the sync ended within MS milliseconds.
within_ms() {
	check "$2: failed within $1 ms" "$([ "$wall" -le "$1" ] && echo yes || echo "no: ${wall} ms")" yes
}

st() {  # st ENDPOINT STATUS REASON COUNT [MORE JSON]: a status fault
	echo "{\"email\":\"@EMAIL@\",\"endpoint\":\"$1\",\"kind\":\"status\",\"status\":$2${3:+,\"reason\":\"$3\"},\"count\":$4${5:+,$5}}"
}
body() {  # body ENDPOINT COUNT 'JSON TEXT' [MORE JSON]: a 200 answering the text
	local text=${3//\\/\\\\}
	echo "{\"email\":\"@EMAIL@\",\"endpoint\":\"$1\",\"kind\":\"body\",\"count\":$2,\"body\":[{\"text\":\"${text//\"/\\\"}\"}]${4:+,$4}}"
}

# ------------------------------------------------- 1. far-future retry hints
# max_retries 5: without the bound the sync would wait for the hint.
R5="SET gmail_ingest.max_retries = 5;"
# Is the ledger's retry_after within 60 s of the epoch second $1?
near() {
	q $DB "SELECT CASE WHEN abs(extract(epoch FROM '$retry_after'::timestamptz) - $1) <= 60 THEN 'yes'
	                   ELSE 'no: ' || '$retry_after' END" 2>/dev/null || echo "no: '$retry_after'"
}

run full 7 "$(st profile 429 rateLimitExceeded -1 '"retry_after":7200')" "$R5"
expect_failed "profile 429 Retry-After: 7200" 53400
within_ms 5000 "profile 429 Retry-After: 7200"
check "profile 429 Retry-After: 7200: not retried" "$fired" 1
check "profile 429 Retry-After: 7200: the ledger records the retry time" "$(near $(( $(date +%s) + 7200 )))" yes
check "profile 429 Retry-After: 7200: the error says when to retry" \
	"$(grep -Eq 'retry.*after.*[0-9]{4}-[0-9]{2}-[0-9]{2}' <<<"$error" && echo yes || echo "no: $error")" yes

RETRY_AT=$(( $(date +%s) + 3 * 3600 ))
RETRY_AT_TEXT=$(date -u -d "@$RETRY_AT" +%Y-%m-%dT%H:%M:%S.000Z)
run full 7 "$(st messages.get 403 userRateLimitExceeded -1 "\"message\":\"User-rate limit exceeded.  Retry after $RETRY_AT_TEXT\"")" "$R5"
expect_failed "messages.get 403 \"Retry after <in 3 h>\"" 53400
within_ms 5000 "messages.get 403 \"Retry after <in 3 h>\""
check "messages.get 403 \"Retry after <in 3 h>\": the ledger records Gmail's time" "$(near $RETRY_AT)" yes

run full 7 "$(st threads.list 429 '' -1 "\"message\":\"Resource has been exhausted (e.g. check quota).  Retry after $RETRY_AT_TEXT\"")" "$R5"
expect_failed "threads.list 429 \"Retry after <in 3 h>\"" 53400
within_ms 5000 "threads.list 429 \"Retry after <in 3 h>\""
check "threads.list 429 \"Retry after <in 3 h>\": the ledger records Gmail's time" "$(near $RETRY_AT)" yes

run full 7 "$(st threads.list 503 backendError -1 '"retry_after":7200')" "$R5"
expect_failed "threads.list 503 Retry-After: 7200" 38000
within_ms 5000 "threads.list 503 Retry-After: 7200"
check "threads.list 503 Retry-After: 7200: the ledger records the retry time" "$(near $(( $(date +%s) + 7200 )))" yes

run full 7 "$(st token 429 '' -1 '"retry_after":7200')" "$R5"
expect_failed "token 429 Retry-After: 7200" 53400
within_ms 5000 "token 429 Retry-After: 7200"
check "token 429 Retry-After: 7200: not retried" "$fired" 1
check "token 429 Retry-After: 7200: the ledger records the retry time" "$(near $(( $(date +%s) + 7200 )))" yes

run full 7 "$(st token 503 '' -1 "\"message\":\"Backend unavailable.  Retry after $RETRY_AT_TEXT\"")" "$R5"
expect_failed "token 503 \"Retry after <in 3 h>\"" 38000
within_ms 5000 "token 503 \"Retry after <in 3 h>\""
check "token 503 \"Retry after <in 3 h>\": the ledger records the time" "$(near $RETRY_AT)" yes

# A hint within the bound is still honoured (faults.sh checks the wait itself).
run full 7 "$(st profile 429 rateLimitExceeded 1 '"retry_after":2')"
check "profile 429 Retry-After: 2: waited and succeeded" "$status/$([ "$wall" -ge 1900 ] && echo waited || echo "${wall}ms")" "succeeded/waited"

# ------------------------------------------------- 2. pagination that never ends
THREADS_PAGE='{"threads":[{"id":"a1","historyId":"5","snippet":"x"}],"nextPageToken":"TOKEN"}'
MESSAGES_PAGE='{"messages":[{"id":"b1","threadId":"a1"}],"nextPageToken":"TOKEN"}'
HISTORY_PAGE='{"history":[],"historyId":"999999","nextPageToken":"TOKEN"}'
cycle() {  # cycle ENDPOINT PAGE: tokens A, B, C, then A again
	local t out=""
	for t in A B C A; do out="$out${out:+,}$(body "$1" 1 "${2//TOKEN/$t}")"; done
	echo "[$(listed $1)$out]"
}
counter() {  # counter ENDPOINT PAGE: a new token on every page, forever
	local pre=${2%%TOKEN*} post=${2#*TOKEN}
	pre=${pre//\"/\\\"} post=${post//\"/\\\"}
	echo "{\"email\":\"@EMAIL@\",\"endpoint\":\"$1\",\"kind\":\"body\",\"count\":-1,\"body\":[{\"text\":\"${pre}p\"},{\"counter\":true},{\"text\":\"$post\"}]}"
}
# messages.list is read only when threads.list lists a thread: one, always.
listed() {
	[ "$1" = messages.list ] && echo "$(body threads.list -1 '{"threads":[{"id":"a1","historyId":"5","snippet":"x"}]}'),"
}
for ep in threads.list messages.list history.list; do
	case $ep in
		threads.list) page=$THREADS_PAGE pre=full pf="" ;;
		messages.list) page=$MESSAGES_PAGE pre=full pf="1," ;;   # the threads.list rule fired once
		history.list) page=$HISTORY_PAGE pre=inc pf="" ;;
	esac
	run $pre 7 "[$(listed $ep)$(body $ep -1 "${page//TOKEN/SAME}")]"
	expect_failed "$ep: the same nextPageToken forever" 08P01
	within_ms 5000 "$ep: the same nextPageToken forever"
	check "$ep: the same nextPageToken forever: seen on the second page" "$fired" "${pf}2"
	check "$ep: the same nextPageToken forever: the error says so" \
		"$(grep -q 'nextPageToken' <<<"$error" && echo yes || echo "no: $error")" yes
	run $pre 7 "$(cycle $ep "$page")"
	expect_failed "$ep: a cycle of three tokens" 08P01
	within_ms 5000 "$ep: a cycle of three tokens"
	check "$ep: a cycle of three tokens: seen on its fourth page" "$fired" "${pf}1,1,1,1"
done
# gmail_backfill stages its listing through the same guard.
SYNC_CALL="CALL gmail_ingest.gmail_backfill(@MB@, @DAYS@, 500);" \
	run full 7 "[$(listed messages.list)$(body messages.list -1 "${MESSAGES_PAGE//TOKEN/SAME}")]"
expect_failed "gmail_backfill, messages.list: the same nextPageToken forever" 08P01
within_ms 5000 "gmail_backfill, messages.list: the same nextPageToken forever"
check "gmail_backfill, messages.list: the same nextPageToken forever: seen on the second page" "$fired" "1,2"
# New tokens forever: the page cap (a 1-day window: 400 pages).
for ep in threads.list messages.list; do
	case $ep in
		threads.list) page=$THREADS_PAGE pf="" ;;
		messages.list) page=$MESSAGES_PAGE pf="1," ;;
	esac
	run full 1 "[$(listed $ep)$(counter $ep "$page")]"
	expect_failed "$ep: a new nextPageToken forever" 08P01
	within_ms 10000 "$ep: a new nextPageToken forever"
	check "$ep: a new nextPageToken forever: stopped at the cap of 400 pages" "$fired" "${pf}400"
	check "$ep: a new nextPageToken forever: the error names the cap" \
		"$(grep -q '400 pages' <<<"$error" && echo yes || echo "no: $error")" yes
done

# ------------------------------------------------- 3. numbers out of range, bad tokens
R0="SET gmail_ingest.max_retries = 0;"
RAW=$(printf 'From: a@example.com\r\nTo: b@example.com\r\nSubject: hostile\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <h@example.com>\r\n\r\nhi\r\n' |
	base64 -w0 | tr '+/' '-_' | tr -d '=')
raw_msg() {  # raw_msg INTERNAL_DATE SIZE_ESTIMATE HISTORY_ID
	echo "{\"id\":\"m1\",\"threadId\":\"a1\",\"labelIds\":[\"INBOX\"],\"historyId\":\"$3\",\"internalDate\":\"$1\",\"sizeEstimate\":$2,\"raw\":\"$RAW\"}"
}
while IFS='|' read -r name pre rules; do
	[ -n "$name" ] || continue
	run "$pre" 7 "$rules" "$R0"
	expect_failed "$name" 08P01
	check "$name: the error says the answer could not be read" \
		"$(grep -q 'could not be read' <<<"$error" && echo yes || echo "no: $error")" yes
done <<EOF
messages.get internalDate -300000000000000|full|$(body messages.get -1 "$(raw_msg -300000000000000 100 5)")
messages.get internalDate in year 11000|full|$(body messages.get -1 "$(raw_msg 285000000000000 100 5)")
messages.get internalDate beyond int64|full|$(body messages.get -1 "$(raw_msg 99999999999999999999 100 5)")
messages.get internalDate not a number|full|$(body messages.get -1 "$(raw_msg 12x 100 5)")
messages.get sizeEstimate -1|full|$(body messages.get -1 "$(raw_msg $NOW_MS -1 5)")
messages.get sizeEstimate beyond int4|full|$(body messages.get -1 "$(raw_msg $NOW_MS 3000000000 5)")
messages.get historyId 0|full|$(body messages.get -1 "$(raw_msg $NOW_MS 100 0)")
messages.get historyId -5|full|$(body messages.get -1 "$(raw_msg $NOW_MS 100 -5)")
threads.list historyId -7|full|$(body threads.list -1 '{"threads":[{"id":"a1","historyId":"-7","snippet":"x"}]}')
profile historyId -1|full|$(body profile -1 '{"emailAddress":"@EMAIL@","historyId":"-1"}')
history.list historyId -1|inc|$(body history.list -1 '{"historyId":"-1"}')
history.list record id -3|inc|$(body history.list -1 '{"history":[{"id":"-3","messagesAdded":[{"message":{"id":"m9","threadId":"a9","labelIds":["INBOX"]}}]}],"historyId":"99999999"}')
EOF

# The token endpoint: expires_in and the token itself, with a token the
# double really accepts (so only the bad number or shape can fail the run).
while IFS='|' read -r name answer; do
	[ -n "$name" ] || continue
	new_case
	tok=$(real_token)
	reuse=1 run full 7 "$(body token -1 "${answer//@TOKEN@/$tok}")" "$R0"
	expect_failed "$name" 08P01
	check "$name: the error names the token endpoint" \
		"$(grep -q 'OAuth token endpoint' <<<"$error" && echo yes || echo "no: $error")" yes
	check "$name: the token is not in the error" "$(grep -c "${tok:-no token}" <<<"$error")" 0
done <<'EOF'
token expires_in -10^12|{"access_token":"@TOKEN@","expires_in":-1000000000000,"token_type":"Bearer"}
token expires_in 10^15|{"access_token":"@TOKEN@","expires_in":1000000000000000,"token_type":"Bearer"}
token expires_in 0|{"access_token":"@TOKEN@","expires_in":0,"token_type":"Bearer"}
token with a CR LF (a header injection)|{"access_token":"@TOKEN@\r\nX-Injected: 1","expires_in":3599,"token_type":"Bearer"}
token empty|{"access_token":"","expires_in":3599,"token_type":"Bearer"}
EOF
mb=""

# A 10 MB access token: an unreadable answer, not "out of memory", not cached.
run full 7 '{"email":"@EMAIL@","endpoint":"token","kind":"body","count":-1,"body":[{"text":"{\"access_token\":\"ya29."},{"text":"a","repeat":10485760},{"text":"\",\"expires_in\":3599}"}]}' "$R0"
expect_failed "token of 10 MB" 08P01
check "token of 10 MB: no token in mailbox_credentials" \
	"$(q $DB "SELECT count(*) FROM gmail_ingest.mailbox_credentials WHERE mailbox_id = $mb AND access_token IS NOT NULL")" 0

# A page token of 10 KB: unreadable.
run full 7 '{"email":"@EMAIL@","endpoint":"threads.list","kind":"body","count":-1,"body":[{"text":"{\"threads\":[{\"id\":\"a1\",\"historyId\":\"5\"}],\"nextPageToken\":\""},{"text":"p","repeat":10240},{"text":"\"}"}]}' "$R0"
expect_failed "threads.list nextPageToken of 10 KB" 08P01

# An unreadable answer is retried like the others: max_retries 1, two attempts
# (a mailbox of one message, so no other fetch reaches the double).
CASE_PARAMS=${PARAMS/\"threads\":2,\"messages\":3/\"threads\":1,\"messages\":1} run full 7 "$(body messages.get -1 "$(raw_msg -300000000000000 100 5)")"
expect_failed "messages.get internalDate out of range, max_retries 1" 08P01
check "messages.get internalDate out of range, max_retries 1: retried once" "$fired" 2

# An answer beyond max_response_mb is an unreadable answer too: 08P01, as the README says.
run full 7 '{"email":"@EMAIL@","endpoint":"profile","kind":"body","count":-1,"body":[{"text":"{\"a\":\""},{"text":"x","repeat":2097152},{"text":"\"}"}]}' \
	"SET gmail_ingest.max_response_mb = 1;"
expect_failed "profile answer beyond max_response_mb" 08P01

# ------------------------------------------------- 4. ids too long to be Gmail's
# An id of 300 characters (Gmail's have 16) is an unreadable answer wherever a
# listing or the history gives it, backfill staging included: never a key cut
# short, never a row.
LONG_ID=$(printf 'x%.0s' $(seq 1 300))
long_messages() {  # long_messages ID THREAD_ID: a messages.list page
	body messages.list -1 "{\"messages\":[{\"id\":\"$1\",\"threadId\":\"$2\"}]}"
}
while IFS='|' read -r name pre call rules; do
	[ -n "$name" ] || continue
	SYNC_CALL=${call:-} run "$pre" 7 "$rules" "$R0"
	expect_failed "$name" 08P01
	check "$name: the error says the id is too long" \
		"$(grep -q 'id too long to be one' <<<"$error" && echo yes || echo "no: $error")" yes
done <<EOF
threads.list thread id of 300 characters|full||$(body threads.list -1 "{\"threads\":[{\"id\":\"$LONG_ID\",\"historyId\":\"5\",\"snippet\":\"x\"}]}")
messages.list message id of 300 characters|full||[$(listed messages.list)$(long_messages "$LONG_ID" a1)]
messages.list thread id of 300 characters|full||[$(listed messages.list)$(long_messages b1 "$LONG_ID")]
gmail_backfill, messages.list message id of 300 characters|full|CALL gmail_ingest.gmail_backfill(@MB@, @DAYS@, 500);|[$(listed messages.list)$(long_messages "$LONG_ID" a1)]
history.list message id of 300 characters|inc||$(body history.list -1 "{\"history\":[{\"id\":\"7\",\"messagesAdded\":[{\"message\":{\"id\":\"$LONG_ID\",\"threadId\":\"a9\",\"labelIds\":[\"INBOX\"]}}]}],\"historyId\":\"99999999\"}")
EOF

# Every table stays readable, and pg_dump works.
bad_tables=""
for t in $(q $DB "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'gmail_ingest' ORDER BY 1"); do
	psql -X -q -d $DB -c "SELECT * FROM $t" >/dev/null 2>"$OUT/sel" || bad_tables="$bad_tables $t: $(head -1 "$OUT/sel")"
done
check "SELECT * from every table of gmail_ingest" "${bad_tables:-ok}" ok
check "pg_dump of the database" "$(pg_dump -d $DB >/dev/null 2>"$OUT/dump" && echo ok || head -1 "$OUT/dump")" ok

echo "# $n cases in $((SECONDS - started)) s"
finish
