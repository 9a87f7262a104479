#!/usr/bin/env bash
# The fault suite.  For every fault kind the double injects (5xx backendError,
# 429, 403 rate limits with and without a retry hint, 403
# insufficientPermissions, 400, 401, 404 gone, truncated and invalid JSON
# bodies, gzip bodies that do not inflate, connection resets, hangs, delays and slow bodies beyond
# request_timeout_ms, token endpoint errors), on every endpoint a sync uses
# (token, profile, threads.list, messages.list, messages.get raw and minimal,
# threads.get, history.list), a sync either
#   - completes with exactly the rows of a clean sync (every column of the
#     mailbox's threads, messages, attachments and blobs compared with a
#     reference mailbox of identical content synced cleanly), having retried
#     (sync_runs.retries, and the double saw exactly the extra requests), or
#   - records a failed run (status failed, an error naming the Gmail method,
#     the HTTP status and Gmail's reason, the SQLSTATE in the ledger, a
#     WARNING) that left no row behind (every row of the data tables equal
#     before and after) and moved no history id; a fault that must not be
#     retried reached the double exactly once, a retryable one max_retries+1
#     times;
# then a clean re-run converges to the reference, and verify() holds after
# every step.
#
# Each case gets its own mailbox in the double (same content as the
# references, "content_email") and its own database; cases run in parallel
# (FAULTS_JOBS, default 8).  request_timeout_ms is 1500 and max_retries 1,
# so a case waits one backoff (1-2 s) at most.  FAULTS_ONLY=regex runs the
# matching cases only.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

P=gi_faults
TAG=$(run_tag)
NOW_MS=$(now_ms)
CONTENT=faults-content@example.com
PARAMS="\"seed\":19,\"threads\":10,\"messages\":24,\"days\":7,\"window_days\":7,\"attachments\":6,\"now_ms\":$NOW_MS,\"content_email\":\"$CONTENT\""
JOBS=${FAULTS_JOBS:-8}
ONLY=${FAULTS_ONLY:-.}
export PGOPTIONS="${PGOPTIONS:-} -c gmail_ingest.request_timeout_ms=1500 -c gmail_ingest.max_retries=1"
OUT=$(mktemp -d "${TMPDIR:-/tmp}/gi_faults.XXXXXX")
started=$SECONDS

clean_up_at_exit "${P}\_%"

mailbox() {  # mailbox EMAIL: in the double, remembered for cleanup
	echo "$1" >>"$OUT/emails"
	dbl POST /admin/mailboxes "{\"email\":\"$1\",\"refresh_token\":\"rt-$1\",$PARAMS}" >/dev/null
}

# apply EMAIL DELTA: mailbox changes, one "METHOD PATH [JSON]" per line (@EMAIL@ = EMAIL).
apply() {
	local method path body
	while read -r method path body; do
		[ -n "$method" ] && dbl "$method" "${path//@EMAIL@/$1}" "$body" >/dev/null
	done <<<"$2"
}

SYNC_SQL="SELECT r.status, coalesce(r.error, ''), r.retries, r.messages_vanished,
	round(extract(epoch FROM r.finished_at - r.started_at) * 1000), round(extract(epoch FROM r.finished_at) * 1000)"
sync() {  # sync DB MB FORCE_FULL: "status|error|retries|vanished|wall_ms|finished_ms"
	timeout 120 psql -X -At -F'|' -v ON_ERROR_STOP=1 -d "$1" -c "$SYNC_SQL FROM gmail_ingest.gmail_sync($2, 7, $3) r"
}

# ---------------------------------------------------------------- references
fresh_db ${P}_tmpl
install_digests ${P}_tmpl
for ph in full inc rc; do
	createdb -T ${P}_tmpl ${P}_ref_$ph
	mailbox "ref-$ph-$TAG@faults.example"
	eval "ref_mb_$ph=\$(q ${P}_ref_$ph \"SELECT gmail_ingest.add_mailbox(gen_random_uuid(), 'ref-$ph-$TAG@faults.example', 'rt-ref-$ph-$TAG@faults.example')\")"
done
check "reference: clean full sync" "$(sync ${P}_ref_full "$ref_mb_full" false | cut -d'|' -f1,3)" "succeeded|0"
REF_FULL=$(q ${P}_ref_full "SELECT gi_test_digest($ref_mb_full)")
REF_FULL_STATS=$(dstats "ref-full-$TAG@faults.example")
check "reference: stored every listed message" "$(q ${P}_ref_full "SELECT count(*) FROM gmail_ingest.mail_messages")" \
	"$($DQ window-count "ref-full-$TAG@faults.example" 7)"
check "reference: verify" "$(verify_ok ${P}_ref_full "$ref_mb_full")" t

# Message and thread ids are the same in every mailbox of this content.
T_MULTI=$(q ${P}_ref_full "SELECT provider_thread_id FROM gmail_ingest.mail_messages GROUP BY 1 HAVING count(*) >= 2 ORDER BY count(*) DESC, 1 LIMIT 1")
M_MULTI=$(q ${P}_ref_full "SELECT min(provider_message_id) FROM gmail_ingest.mail_messages WHERE provider_thread_id = '$T_MULTI'")
M_SINGLE=$(q ${P}_ref_full "SELECT min(provider_message_id) FROM gmail_ingest.mail_messages GROUP BY provider_thread_id HAVING count(*) = 1 ORDER BY 1 LIMIT 1")
M_RELABEL=$(q ${P}_ref_full "SELECT provider_message_id FROM gmail_ingest.mail_messages WHERE provider_thread_id <> '$T_MULTI' AND provider_message_id <> '$M_SINGLE' ORDER BY 1 LIMIT 1")
M_DELETE=$(q ${P}_ref_full "SELECT provider_message_id FROM gmail_ingest.mail_messages WHERE provider_thread_id <> '$T_MULTI' AND provider_message_id NOT IN ('$M_SINGLE', '$M_RELABEL') ORDER BY 1 DESC LIMIT 1")
M_GONE=$(q ${P}_ref_full "SELECT provider_message_id FROM gmail_ingest.mail_messages m WHERE EXISTS (SELECT 1 FROM gmail_ingest.mail_attachments a WHERE a.message_id = m.id) ORDER BY 1 LIMIT 1")
T_GONE=$(q ${P}_ref_full "SELECT provider_thread_id FROM gmail_ingest.mail_messages WHERE provider_message_id = '$M_GONE'")
REF_GONE=$(q ${P}_ref_full "SELECT gi_test_digest($ref_mb_full, '$T_GONE')")
# Changes between the first sync and the faulted one: for incremental runs a
# reply, a new thread, a label change and a deletion; for the label re-check
# of a forced full sync, labels on a message of a long thread (threads.get)
# and on a thread's only message (messages.get format=minimal).
M=/admin/mailboxes/@EMAIL@/messages
DELTA_INC="POST $M {\"thread_id\":\"$T_MULTI\",\"internal_date_ms\":$((NOW_MS - 60000))}
POST $M {\"internal_date_ms\":$((NOW_MS - 30000))}
POST $M/$M_RELABEL/labels {\"add\":[\"STARRED\"]}
DELETE $M/$M_DELETE"
DELTA_RC="POST $M/$M_MULTI/labels {\"add\":[\"Label_2\"]}
POST $M/$M_SINGLE/labels {\"add\":[\"Label_2\"],\"remove\":[\"UNREAD\"]}"

for ph in inc rc; do
	eval "mb=\$ref_mb_$ph"
	sync ${P}_ref_$ph "$mb" false >/dev/null
	apply "ref-$ph-$TAG@faults.example" "$([ $ph = inc ] && echo "$DELTA_INC" || echo "$DELTA_RC")"
	before=$(dstats "ref-$ph-$TAG@faults.example")
	check "reference: clean $ph sync" "$(sync ${P}_ref_$ph "$mb" "$([ $ph = rc ] && echo true || echo false)" | cut -d'|' -f1,3)" "succeeded|0"
	eval "REF_${ph^^}=\$(q ${P}_ref_$ph \"SELECT gi_test_digest($mb)\")"
	after=$(dstats "ref-$ph-$TAG@faults.example")
	stats=""
	for k in token profile threads.list messages.list messages.get threads.get history.list; do
		stats="$stats $k=$(( $(stat_of $k "$after") - $(stat_of $k "$before") ))"
	done
	eval "REF_${ph^^}_STATS=\$stats"
	check "reference: verify after the $ph sync" "$(verify_ok ${P}_ref_$ph "$mb")" t
done
check "reference: the incremental run applied the deletion and the label" \
	"$(q ${P}_ref_inc "SELECT string_agg(provider_message_id, ',' ORDER BY provider_message_id) FROM gmail_ingest.mail_messages WHERE deleted_at IS NOT NULL OR 'STARRED' = ANY (label_ids)")" \
	"$(printf '%s\n' "$M_DELETE" "$M_RELABEL" | sort | paste -sd, -)"
check "reference: the re-check used one threads.get and one messages.get" \
	"$(stat_of threads.get "$REF_RC_STATS")/$(stat_of messages.get "$REF_RC_STATS")" "1/1"
# The standalone message the incremental delta adds (same id in every clone).
M_NEW=$(q ${P}_ref_inc "SELECT provider_message_id FROM gmail_ingest.mail_messages WHERE provider_message_id = provider_thread_id ORDER BY internal_date DESC LIMIT 1")

# ---------------------------------------------------------------- one case
method_of() {
	case $1 in
		profile) echo users.getProfile ;;
		token) echo "OAuth" ;;
		*) echo "users.$1" ;;
	esac
}

# run_case N NAME PHASE 'RULES' EXPECT
#   PHASE full: the first sync of an empty database; inc: an incremental sync
#     after DELTA_INC; rc: a forced full sync after DELTA_RC.
#   EXPECT  ok RETRIES EXTRA_REQUESTS [EXTRA_TOKEN_REQUESTS [MIN_WALL_MS]]
#             (RETRIES "0-1": a reset on a reused connection is retried by
#              libcurl itself, a reset on a new one by the extension)
#           fail SQLSTATE ATTEMPTS 'ERROR REGEX'
#           vanished         (404 on messages.get: skipped and counted)
#           fallback         (history 404: a full sync instead, same rows)
run_case() {
	local n=$1 name=$2 phase=$3 rules=$4 expect=$5
	local email="c$n-$TAG@faults.example" db=${P}_c$n
	local endpoint mb ref ref_stats before_stats report fired force=false pre retry_at=0
	local status error retries vanished wall finished verify sqlstate after auth post
	checks=0 check_failures=0
	[[ $rules =~ \"endpoint\":\"([^\"]+)\" ]] && endpoint=${BASH_REMATCH[1]}
	case $phase in
		full) ref=$REF_FULL ref_stats=$REF_FULL_STATS ;;
		inc) ref=$REF_INC ref_stats=$REF_INC_STATS ;;
		rc) ref=$REF_RC ref_stats=$REF_RC_STATS force=true ;;
	esac
	createdb -T ${P}_tmpl "$db"
	mailbox "$email"
	mb=$(q "$db" "SELECT gmail_ingest.add_mailbox(gen_random_uuid(), '$email', 'rt-$email')")
	if [ "$phase" != full ]; then
		sync "$db" "$mb" false >/dev/null
		apply "$email" "$([ "$phase" = inc ] && echo "$DELTA_INC" || echo "$DELTA_RC")"
	fi
	before_stats=$(dstats "$email")
	pre=$(q "$db" "SELECT gi_test_db_digest() || ' ' || coalesce(history_id, 0) FROM gmail_ingest.mailboxes WHERE id = $mb")

	if [[ $rules == *@RETRY_AT@* ]]; then
		retry_at=$(( $(date +%s) + 4 ))
		rules=${rules//@RETRY_AT@/$(date -u -d "@$retry_at" +%Y-%m-%dT%H:%M:%S.000Z)}
	fi
	dbl POST /admin/faults "${rules//@EMAIL@/$email}" >/dev/null
	mapfile -t post < <(timeout 120 psql -X -At -F'|' -d "$db" 2>"$OUT/c$n.err" <<-SQL
		$SYNC_SQL FROM gmail_ingest.gmail_sync($mb, 7, $force) r;
		SELECT coalesce(string_agg(check_name || ': ' || coalesce(detail, ''), '; '), 't') FROM gmail_ingest.verify($mb) WHERE NOT ok;
		SELECT coalesce((SELECT detail->>'sqlstate' FROM gmail_ingest.ledger WHERE mailbox_id = $mb AND event = 'sync.failed' ORDER BY id DESC LIMIT 1), '-');
		SELECT gi_test_db_digest() || ' ' || coalesce(history_id, 0), auth_state FROM gmail_ingest.mailboxes WHERE id = $mb;
	SQL
	)
	report=$(dstats "$email")
	fired=$(dfired "$email")
	dclear "$email"
	IFS='|' read -r status error retries vanished wall finished <<<"${post[0]:-}"
	verify=${post[1]:-} sqlstate=${post[2]:-} auth=${post[3]##*|} after=${post[3]%|*}
	local extra=$(( $(stat_of "$endpoint" "$report") - $(stat_of "$endpoint" "$before_stats") - $(stat_of "$endpoint" "$ref_stats") ))
	local extra_token=$(( $(stat_of token "$report") - $(stat_of token "$before_stats") - $(stat_of token "$ref_stats") ))
	echo "# $name: ${status:-ERROR $(head -c 300 "$OUT/c$n.err")} retries=$retries fired=$fired wall=${wall}ms${error:+ error: $error}"
	check "$name: verify after the faulted sync" "$verify" t

	local e1 e2 e3 e4
	read -r e1 e2 e3 e4 <<<"$expect"
	case $e1 in
		ok)
			if [ "$e2" = 0-1 ]; then
				check "$name: succeeded, retried by libcurl or the extension" \
					"$status/$([ "$retries" = 0 ] || [ "$retries" = 1 ] && echo 0-1 || echo "$retries")" "succeeded/0-1"
			else
				check "$name: succeeded with retries=$e2" "$status/$retries" "succeeded/$e2"
			fi
			check "$name: rows identical to the clean reference" "$(q "$db" "SELECT gi_test_digest($mb)")" "$ref"
			check "$name: every rule fired once" "$fired" "$(echo "$fired" | sed 's/[0-9][0-9]*/1/g')"
			local want_token=${e4%% *}
			[ "$endpoint" = token ] && want_token=$e3
			check "$name: the double saw exactly the extra $endpoint/token requests" "$extra/$extra_token" "$e3/${want_token:-0}"
			if [ "${e4#* }" != "$e4" ]; then
				check "$name: waited at least ${e4#* } ms as told" "$([ "${wall:-0}" -ge "${e4#* }" ] && echo yes || echo "no: ${wall}ms")" yes
			fi
			if [ "$retry_at" -gt 0 ]; then
				check "$name: the retry came after Gmail's \"Retry after\" time" \
					"$([ "${finished:-0}" -ge $((retry_at * 1000)) ] && echo yes || echo "no: finished $((retry_at * 1000 - ${finished:-0})) ms before it")" yes
			fi
			;;
		fail)
			check "$name: recorded a failed run with SQLSTATE $e2" "$status/$sqlstate" "failed/$e2"
			check "$name: the error names $(method_of "$endpoint"), the status and the reason" \
				"$(echo "$error" | grep -Eq "$e4" && echo yes || echo "no: $error")" yes
			check "$name: a WARNING was raised" "$(grep -c "WARNING:  gmail_sync of mailbox $mb failed" "$OUT/c$n.err")" 1
			check "$name: $e3 attempt(s) reached the double" "$fired" "$e3"
			check "$name: no row left behind, history id kept" "$after" "$pre"
			if [[ $error == *invalid_grant* ]]; then
				check "$name: the mailbox must be authorized again" "$auth" reauthorize
				q "$db" "SELECT gmail_ingest.add_mailbox(org_id, provider_email, 'rt-$email') FROM gmail_ingest.mailboxes WHERE id = $mb" >/dev/null
			else
				check "$name: auth_state unchanged" "$auth" ok
			fi
			;;
		vanished)
			check "$name: succeeded, the message counted as vanished" "$status/$vanished" "succeeded/1"
			check "$name: every other thread identical to the reference" "$(q "$db" "SELECT gi_test_digest($mb, '$T_GONE')")" "$REF_GONE"
			check "$name: the vanished message is not stored" "$(q "$db" "SELECT count(*) FROM gmail_ingest.mail_messages WHERE provider_message_id = '$M_GONE'")" 0
			check "$name: a 404 is not retried" "$fired" 1
			ref=$(q "$db" "SELECT gi_test_digest($mb)")
			;;
		fallback)
			check "$name: succeeded with a fallback to a full sync" \
				"$status/$(q "$db" "SELECT fallback FROM gmail_ingest.sync_runs WHERE mailbox_id = $mb ORDER BY id DESC LIMIT 1")" "succeeded/history_expired"
			check "$name: rows identical to the clean incremental reference" "$(q "$db" "SELECT gi_test_digest($mb)")" "$ref"
			ref=$(q "$db" "SELECT gi_test_digest($mb)")
			;;
	esac
	# A clean re-run: after a failure it converges to the reference; after
	# a success (incremental, nothing new) it changes nothing.
	mapfile -t post < <(timeout 120 psql -X -At -d "$db" 2>&1 <<-SQL
		SELECT status FROM gmail_ingest.gmail_sync($mb, 7, $([ "$e1" = fail ] && echo $force || echo false));
		SELECT gi_test_digest($mb);
		SELECT coalesce(string_agg(check_name || ': ' || coalesce(detail, ''), '; '), 't') FROM gmail_ingest.verify($mb) WHERE NOT ok;
	SQL
	)
	check "$name: a clean re-run $([ "$e1" = fail ] && echo "converges to the reference" || echo "changes nothing")" \
		"${post[0]:-} ${post[1]:-}" "succeeded $ref"
	check "$name: verify after the re-run" "${post[2]:-}" t
	dropdb "$db"
	echo "$checks $check_failures $fired $e1" >"$OUT/c$n.count"
}

# ---------------------------------------------------------------- the cases
cases=()
add() { cases+=("$1|$2|$3|$4"); }   # add NAME PHASE RULES EXPECT

st() {  # st ENDPOINT STATUS [REASON [COUNT [MORE JSON]]]: a status fault
	echo "{\"email\":\"@EMAIL@\",\"endpoint\":\"$1\",\"kind\":\"status\",\"status\":$2${3:+,\"reason\":\"$3\"},\"count\":${4:-1}${5:+,$5}}"
}
kind() {  # kind ENDPOINT KIND [COUNT [MORE JSON]]
	echo "{\"email\":\"@EMAIL@\",\"endpoint\":\"$1\",\"kind\":\"$2\",\"count\":${3:-1}${4:+,$4}}"
}
NOPERM='"message":"Request had insufficient authentication scopes."'

# Every kind on every endpoint of a first sync, except that the paths the
# method does not change (401 refresh, 403 insufficientPermissions, running
# out of retries, the second rate-limit reason) are taken on the first
# request (profile) and on the parallel downloads (messages.get) only.
for e in profile threads.list messages.list messages.get; do
	m=$(method_of $e)
	only=""   # messages.get runs in parallel: a failing rule names one message
	[ $e = messages.get ] && only=",\"message_id\":\"$M_GONE\""
	add "$e 503 backendError" full "$(st $e 503)" "ok 1 1"
	add "$e 429" full "$(st $e 429)" "ok 1 1"
	add "$e 403 userRateLimitExceeded" full "$(st $e 403 userRateLimitExceeded)" "ok 1 1"
	add "$e truncated body" full "$(kind $e truncate)" "ok 1 1"
	add "$e invalid JSON" full "$(kind $e invalid_json)" "ok 1 1"
	add "$e corrupt gzip body" full "$(kind $e corrupt_gzip)" "ok 1 1"
	add "$e connection reset" full "$(kind $e reset)" "ok $([ $e = profile ] && echo 1 || echo 0-1) 1"
	add "$e hang beyond request_timeout_ms" full "$(kind $e hang)" "ok 1 1"
	add "$e 400" full "$(st $e 400 invalidArgument -1 "${only#,}")" "fail 38000 1 $m.*HTTP 400.*invalidArgument"
	case $e in profile|messages.get)
		add "$e 403 rateLimitExceeded" full "$(st $e 403 rateLimitExceeded)" "ok 1 1"
		add "$e 401, then a refreshed token" full "$(st $e 401)" "ok 0 1 1"
		add "$e 403 insufficientPermissions" full "$(st $e 403 insufficientPermissions -1 "$NOPERM$only")" \
			"fail 28000 1 $m.*HTTP 403.*insufficientPermissions"
		add "$e 503 beyond max_retries" full "$(st $e 503 backendError -1 "${only#,}")" \
			"fail 38000 2 $m.*2.attempts.*HTTP 503.*backendError" ;;
	esac
done
for s in 500 502 504; do add "messages.get $s backendError" full "$(st messages.get $s)" "ok 1 1"; done
add "profile 429 beyond max_retries" full "$(st profile 429 rateLimitExceeded -1)" \
	"fail 53400 2 users.getProfile.*2.attempts.*HTTP 429.*rateLimitExceeded"
add "messages.get 403 userRateLimitExceeded beyond max_retries" full \
	"$(st messages.get 403 userRateLimitExceeded -1 "\"message_id\":\"$M_GONE\"")" \
	"fail 53400 2 users.messages.get.*2.attempts.*HTTP 403.*userRateLimitExceeded"
add "profile 503 with Retry-After: 3" full "$(st profile 503 backendError 1 '"retry_after":3')" "ok 1 1 0 2900"
add "profile 403 rateLimitExceeded with Retry-After: 3" full "$(st profile 403 rateLimitExceeded 1 '"retry_after":3')" "ok 1 1 0 2900"
add "messages.get 403 userRateLimitExceeded, \"Retry after <time>\"" full \
	"$(st messages.get 403 userRateLimitExceeded 1 '"message":"User-rate limit exceeded.  Retry after @RETRY_AT@"')" "ok 1 1"
add "messages.get 429, \"Retry after <time>\"" full \
	"$(st messages.get 429 rateLimitExceeded 1 '"message":"Resource has been exhausted.  Retry after @RETRY_AT@"')" "ok 1 1"
add "messages.get delay beyond request_timeout_ms" full "$(kind messages.get delay 1 '"ms":4000')" "ok 1 1"
add "messages.get slow body beyond request_timeout_ms" full "$(kind messages.get slow_body 1 '"ms":4000')" "ok 1 1"
add "profile slow body beyond request_timeout_ms" full "$(kind profile slow_body 1 '"ms":4000')" "ok 1 1"
add "messages.get delay within request_timeout_ms" full "$(kind messages.get delay 1 '"ms":500')" "ok 0 0"
add "profile hang beyond max_retries" full "$(kind profile hang -1)" "fail 08006 2 users.getProfile.*2.attempts.*[Tt]ime"
add "profile connection reset beyond max_retries" full "$(kind profile reset -1)" "fail 08006 2 users.getProfile.*2.attempts"
add "profile invalid JSON beyond max_retries" full "$(kind profile invalid_json -1)" "fail 08P01 2 users.getProfile.*2.attempts.*could not be read"
add "profile 401 again after the refresh" full "$(st profile 401 authError -1)" "fail 28000 2 users.getProfile.*HTTP 401"
add "messages.get 404 gone" full "$(kind messages.get gone 1 "\"message_id\":\"$M_GONE\"")" "vanished"

add "token 500" full "$(st token 500)" "ok 1 1"
add "token connection reset" full "$(kind token reset)" "ok 1 1"
add "token hang beyond request_timeout_ms" full "$(kind token hang)" "ok 1 1"
add "token invalid JSON" full "$(kind token invalid_json)" "ok 1 1"
# The token endpoint retries like Gmail calls: 1 + max_retries (1 here) attempts.
add "token 503 beyond retries" full "$(st token 503 '' -1)" "fail 38000 2 OAuth token endpoint.*HTTP 503"
add "token invalid_client" full "$(st token 401 invalid_client -1)" "fail 28000 1 invalid_client"
add "token invalid_grant" full "$(st token 400 invalid_grant -1)" "fail 28000 1 invalid_grant"
add "token 400 invalid_request" full "$(st token 400 invalid_request -1)" "fail 38000 1 OAuth token endpoint.*HTTP 400"

add "history.list 503 backendError" inc "$(st history.list 503)" "ok 1 1"
add "history.list 429" inc "$(st history.list 429)" "ok 1 1"
add "history.list truncated body" inc "$(kind history.list truncate)" "ok 1 1"
add "history.list invalid JSON" inc "$(kind history.list invalid_json)" "ok 1 1"
add "history.list connection reset" inc "$(kind history.list reset)" "ok 0-1 1"
add "history.list hang beyond request_timeout_ms" inc "$(kind history.list hang)" "ok 1 1"
add "history.list 400" inc "$(st history.list 400 invalidArgument -1)" "fail 38000 1 users.history.list.*HTTP 400.*invalidArgument"
add "history.list 503 beyond max_retries" inc "$(st history.list 503 backendError -1)" "fail 38000 2 users.history.list.*2.attempts.*HTTP 503"
add "history.list 404 (history expired)" inc "$(kind history.list gone)" "fallback"
add "incremental messages.get 503" inc "$(st messages.get 503 backendError 1 "\"message_id\":\"$M_NEW\"")" "ok 1 1"
add "incremental messages.get 400" inc "$(st messages.get 400 invalidArgument -1 "\"message_id\":\"$M_NEW\"")" "fail 38000 1 users.messages.get.*HTTP 400"

add "threads.get 503 backendError" rc "$(st threads.get 503)" "ok 1 1"
add "threads.get truncated body" rc "$(kind threads.get truncate)" "ok 1 1"
add "threads.get invalid JSON" rc "$(kind threads.get invalid_json)" "ok 1 1"
add "threads.get 403 rateLimitExceeded" rc "$(st threads.get 403 rateLimitExceeded)" "ok 1 1"
add "threads.get 400" rc "$(st threads.get 400 invalidArgument -1)" "fail 38000 1 users.threads.get.*HTTP 400"
add "threads.get 503 beyond max_retries" rc "$(st threads.get 503 backendError -1)" "fail 38000 2 users.threads.get.*2.attempts.*HTTP 503"
add "threads.get 403 insufficientPermissions" rc "$(st threads.get 403 insufficientPermissions -1 "$NOPERM")" "fail 28000 1 users.threads.get.*HTTP 403.*insufficientPermissions"
add "messages.get minimal 503" rc "$(st messages.get 503 backendError 1 "\"message_id\":\"$M_SINGLE\"")" "ok 1 1"
add "messages.get minimal truncated body" rc "$(kind messages.get truncate 1 "\"message_id\":\"$M_SINGLE\"")" "ok 1 1"
add "messages.get minimal 400" rc "$(st messages.get 400 invalidArgument -1 "\"message_id\":\"$M_SINGLE\"")" "fail 38000 1 users.messages.get.*HTTP 400"

n=0
for c in "${cases[@]}"; do
	IFS='|' read -r name phase rules expect <<<"$c"
	n=$((n + 1))
	echo "$name" | grep -Eq -- "$ONLY" || continue
	wait_jobs "$JOBS"
	run_case $n "$name" "$phase" "$rules" "$expect" >"$OUT/c$n.out" 2>&1 &
done
wait

injected=0 survived=0 recorded=0 ran=0
for i in $(seq 1 $n); do
	[ -f "$OUT/c$i.out" ] || continue
	ran=$((ran + 1))
	cat "$OUT/c$i.out"
	if [ -f "$OUT/c$i.count" ]; then
		read -r c f fired kind <"$OUT/c$i.count"
		checks=$((checks + c))
		check_failures=$((check_failures + f))
		for x in ${fired//,/ }; do injected=$((injected + x)); done
		case $kind in fail) recorded=$((recorded + 1)) ;; *) survived=$((survived + 1)) ;; esac
	else
		check "case $i finished" no yes
	fi
done
echo "# $ran fault cases, $injected faults injected: $survived syncs survived them with the reference's rows, $recorded recorded a failure, left no row and converged on a clean re-run; $((SECONDS - started)) s"
finish
