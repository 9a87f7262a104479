# test/lib/script.sh: helpers for the script tests in test/scripts/.  run_tests.sh exports
# PGHOST/PGPORT/PGUSER and DOUBLE_URL; each script uses its own database.
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
cd "$GI_ROOT"

checks=0
check_failures=0

# check DESCRIPTION ACTUAL EXPECTED
check() {
	checks=$((checks + 1))
	if [ "$2" = "$3" ]; then
		echo "ok - $1 ($2)"
	else
		check_failures=$((check_failures + 1))
		echo "not ok - $1: got '$2', expected '$3'"
	fi
}

# q DB SQL: one value
q() { psql -X -At -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

fresh_db() {
	dropdb --if-exists "$1" >/dev/null 2>&1
	createdb "$1"
	q "$1" "CREATE EXTENSION gmail_ingest" >/dev/null
}

finish() {
	echo "$((checks - check_failures)) passed, $check_failures failed"
	[ "$check_failures" -eq 0 ]
}

# --- helpers of the reliability scripts (faults, soak, quota, leaks, cancel_latency, tls, log_secrets)

# clean_up_at_exit DB_LIKE: when the script exits, drop the double's fault
# rules of every e-mail in the array `emails` or listed in $OUT/emails, the
# databases whose name is LIKE DB_LIKE, and the directory $OUT.
clean_up_at_exit() {
	GI_CLEAN_DBS=$1
	trap gi_clean_up EXIT
}
gi_clean_up() {
	local e d
	for e in ${emails[@]+"${emails[@]}"} $(cat "${OUT:-/nonexistent}/emails" 2>/dev/null); do
		dclear "$e" 2>/dev/null
	done
	for d in $(psql -X -At -d postgres -c "SELECT datname FROM pg_database WHERE datname LIKE '$GI_CLEAN_DBS'"); do
		dropdb --if-exists "$d" >/dev/null 2>&1
	done
	[ -n "${OUT:-}" ] && rm -rf "$OUT"
}

# Epoch milliseconds, whole minutes: pass the same now_ms to mailboxes that must be identical.
now_ms() { echo $(( $(date +%s) / 60 * 60000 )); }

# A suffix that keeps this run's mailbox e-mails apart from earlier runs on the same double.
run_tag() { echo "$(date +%s%N | cut -c8-13)$$"; }

# Milliseconds since the epoch, for wall-clock measurements.
ms_now() { echo $(( $(date +%s%N) / 1000000 )); }

# new_mailbox EMAIL 'more JSON fields': creates EMAIL in the double with refresh token rt-EMAIL.
new_mailbox() {
	gi_double POST /admin/mailboxes "{\"email\":\"$1\",\"refresh_token\":\"rt-$1\",$2}" >/dev/null
}

# new_fleet DB N PREFIX ['JSON']: creates N mailboxes PREFIX-0001@fleet.test ... in the
# double in one call (POST /admin/fleet; JSON adds spec fields: domain, first, seed,
# messages, threads, ...; see test/double/gmail_fleet.py) and registers every one in DB
# with its refresh token (refresh-<address>), under one new org_id, in one statement.
# Prints nothing; on an error says what failed on stderr and returns 1.
new_fleet() {
	local db=$1 n=$2 prefix=$3 spec=${4:-} list got
	[ -n "$spec" ] || spec='{}'
	list=$($DQ fleet "$n" "$prefix" "$spec") || {
		echo "new_fleet: the double did not create fleet $prefix (see above)" >&2
		return 1
	}
	# The double allows only [a-z0-9._-] in the prefix and the domain, so the
	# list cannot close the dollar quote.
	got=$(psql -X -At -v ON_ERROR_STOP=1 -d "$db" 2>&1 <<SQL
WITH org AS MATERIALIZED (SELECT gen_random_uuid() AS id)
SELECT count(gmail_ingest.add_mailbox(org.id, split_part(l, ' ', 1), split_part(l, ' ', 2)))
  FROM org, unnest(string_to_array(\$fleet\$$list\$fleet\$, E'\n')) AS l
SQL
	)
	if [ "$got" != "$n" ]; then
		echo "new_fleet: registering fleet $prefix in $db: ${got:-no answer}" >&2
		return 1
	fi
}

# install_digests DB: helper functions comparing what syncs stored.
#   gi_test_digest(mailbox_id [, except provider_thread_id]): the mailbox's threads,
#     messages, attachments and their blobs, every column except surrogate ids,
#     mailbox/org ids, row timestamps and synced_since (deleted_at becomes a flag,
#     storage_path loses its {org}/{mailbox}/ prefix), as counts and md5s.  Two
#     mailboxes holding the same data give the same text.  The exception leaves out
#     one thread with its messages, attachments and their blobs.
#   gi_test_db_digest([per_content]): every row of the data tables and mailboxes (auth_state,
#     the fleet's schedule and push columns and service_account_id aside, so 1.0
#     and 1.1 rows compare), ids included: equal before and after a step means the step left
#     no row behind.  per_content => true counts each content of blobs once (1.0
#     keeps one row per content, 1.1 one per mailbox holding it).
#   gi_test_duplicates(mailbox_id): natural keys stored more than once.
# pubsub_listener_account DIR EMAIL TOPIC SUB [ACK_DEADLINE_S]: a topic
# Gmail may publish to, a service account of the double (its RSA key made
# here) holding the Subscriber role on a pull subscription of it; writes
# DIR/key.json, the account's JSON key for add_service_account.
pubsub_listener_account() {
	local dir=$1 email=$2 topic=$3 sub=$4 ack=${5:-}
	gi_double POST /admin/pubsub/clock '{"offset_ms":0}' >/dev/null	# the double's push clock: real time
	gi_double POST /admin/pubsub/topics "{\"name\":\"$topic\"}" >/dev/null
	openssl genrsa -out "$dir/sa.pem" 2048 2>/dev/null
	openssl pkey -in "$dir/sa.pem" -pubout -out "$dir/sa.pub"
	/usr/bin/python3 - "$dir" "$email" <<'PY'
import json, sys
out, email = sys.argv[1:3]
json.dump({"type": "service_account", "project_id": "gi-test", "private_key_id": "kid-listener",
           "private_key": open(f"{out}/sa.pem").read(), "client_email": email, "client_id": "2001",
           "token_uri": "https://oauth2.googleapis.com/token"}, open(f"{out}/key.json", "w"))
json.dump({"client_email": email, "client_id": "2001", "key_id": "kid-listener",
           "public_key": open(f"{out}/sa.pub").read(), "scopes": [], "domain": None},
          open(f"{out}/reg.json", "w"))
PY
	gi_double POST /admin/service_accounts "$(cat "$dir/reg.json")" >/dev/null
	gi_double POST /admin/pubsub/subscriptions \
		"{\"name\":\"$sub\",\"topic\":\"$topic\",${ack:+\"ack_deadline_seconds\":$ack,}\"subscribers\":[\"$email\"]}" >/dev/null
}

install_digests() {
	psql -X -q -v ON_ERROR_STOP=1 -d "$1" <<'SQL'
CREATE FUNCTION public.gi_test_digest(mb bigint, except_thread text DEFAULT NULL) RETURNS text
LANGUAGE sql STABLE AS $f$
WITH msg AS (
	SELECT * FROM gmail_ingest.mail_messages
	WHERE mailbox_id = mb AND provider_thread_id IS DISTINCT FROM except_thread),
t AS (
	SELECT (to_jsonb(x) - '{id,mailbox_id,org_id,created_at,updated_at,synced_since}'::text[])::text AS r
	FROM gmail_ingest.mail_threads x
	WHERE mailbox_id = mb AND provider_thread_id IS DISTINCT FROM except_thread),
m AS (
	SELECT (to_jsonb(x) - '{id,mailbox_id,org_id,thread_id,created_at,updated_at,deleted_at}'::text[]
	        || jsonb_build_object('deleted', x.deleted_at IS NOT NULL))::text AS r
	FROM msg x),
att AS (
	SELECT x.* FROM gmail_ingest.mail_attachments x
	WHERE x.mailbox_id = mb AND x.message_id IN (SELECT id FROM msg)),
a AS (
	SELECT (to_jsonb(x) - '{id,mailbox_id,org_id,message_id,created_at,updated_at,storage_path}'::text[]
	        || jsonb_build_object('message', (SELECT provider_message_id FROM msg WHERE msg.id = x.message_id),
	                              'storage_name', regexp_replace(x.storage_path, '^[^/]*/[^/]*/', '')))::text AS r
	FROM att x),
b AS (	-- DISTINCT: 1.0 keys blobs by sha256, 1.1 by (mailbox_id, sha256)
	SELECT DISTINCT jsonb_build_object('sha256', sha256, 'size', size_bytes, 'md5', md5(data))::text AS r
	FROM gmail_ingest.blobs
	WHERE sha256 IN (SELECT raw_sha256 FROM msg UNION SELECT sha256 FROM att))
SELECT format('threads=%s:%s messages=%s:%s attachments=%s:%s blobs=%s:%s',
	(SELECT count(*) FROM t), (SELECT left(md5(coalesce(string_agg(r, E'\n' ORDER BY r), '')), 10) FROM t),
	(SELECT count(*) FROM m), (SELECT left(md5(coalesce(string_agg(r, E'\n' ORDER BY r), '')), 10) FROM m),
	(SELECT count(*) FROM a), (SELECT left(md5(coalesce(string_agg(r, E'\n' ORDER BY r), '')), 10) FROM a),
	(SELECT count(*) FROM b), (SELECT left(md5(coalesce(string_agg(r, E'\n' ORDER BY r), '')), 10) FROM b))
$f$;
CREATE FUNCTION public.gi_test_db_digest(per_content boolean DEFAULT false) RETURNS text LANGUAGE sql STABLE AS $f$
SELECT format('threads=%s messages=%s attachments=%s blobs=%s rows:%s',
	(SELECT count(*) FROM gmail_ingest.mail_threads), (SELECT count(*) FROM gmail_ingest.mail_messages),
	(SELECT count(*) FROM gmail_ingest.mail_attachments),
	(SELECT CASE WHEN per_content THEN count(DISTINCT sha256) ELSE count(*) END FROM gmail_ingest.blobs),
	left(md5(
	  (SELECT coalesce(string_agg(to_jsonb(x)::text, E'\n' ORDER BY x.mailbox_id, x.id), '') FROM gmail_ingest.mail_threads x) ||
	  (SELECT coalesce(string_agg(to_jsonb(x)::text, E'\n' ORDER BY x.mailbox_id, x.id), '') FROM gmail_ingest.mail_messages x) ||
	  (SELECT coalesce(string_agg(to_jsonb(x)::text, E'\n' ORDER BY x.mailbox_id, x.id), '') FROM gmail_ingest.mail_attachments x) ||
	  (SELECT coalesce(string_agg(y.r, E'\n' ORDER BY y.r), '') FROM (
	     SELECT x.sha256 || md5(x.data) AS r FROM gmail_ingest.blobs x WHERE NOT per_content
	     UNION ALL
	     SELECT DISTINCT x.sha256 || md5(x.data) FROM gmail_ingest.blobs x WHERE per_content) y) ||
	  (SELECT coalesce(string_agg((to_jsonb(x) - '{auth_state,sync_interval,window_days,paused,next_sync_at,consecutive_failures,backoff_until,service_account_id,watch_topic,watch_expires_at,watch_attempted_at,watch_error,push_history_id}'::text[])::text, E'\n' ORDER BY x.id), '') FROM gmail_ingest.mailboxes x)), 10))
$f$;
CREATE FUNCTION public.gi_test_duplicates(mb bigint) RETURNS bigint LANGUAGE sql STABLE AS $f$
SELECT (SELECT count(*) - count(DISTINCT provider_thread_id) FROM gmail_ingest.mail_threads WHERE mailbox_id = mb)
     + (SELECT count(*) - count(DISTINCT provider_message_id) FROM gmail_ingest.mail_messages WHERE mailbox_id = mb)
     + (SELECT count(*) - count(DISTINCT (message_id, part_id)) FROM gmail_ingest.mail_attachments WHERE mailbox_id = mb)
$f$;
SQL
}

# verify_ok DB MAILBOX: t when every verify() check passes, else f and the failing checks.
verify_ok() {
	local bad
	bad=$(q "$1" "SELECT string_agg(check_name || ': ' || coalesce(detail, ''), '; ') FROM gmail_ingest.verify($2) WHERE NOT ok")
	if [ -z "$bad" ]; then echo t; else echo "f ($bad)"; fi
}

# stat_of KEY 'key=value ...' (a dq.py stats line): the value, 0 when absent.
stat_of() {
	local kv
	for kv in $2; do
		[ "${kv%%=*}" = "$1" ] && { echo "${kv#*=}"; return; }
	done
	echo 0
}

# wait_jobs N: block while N or more background jobs run.
wait_jobs() {
	while [ "$(jobs -rp | wc -l)" -ge "$1" ]; do wait -n || true; done
}

# dbl METHOD PATH [JSON]: the double's admin API from bash alone (/dev/tcp), for
# scripts that call it hundreds of times; prints the body, fails on a non-2xx.
dbl() {
	local LC_ALL=C method=$1 path=$2 body=${3:-} hp=${DOUBLE_URL:-} fd resp status
	hp=${hp#http://}
	[ -n "$hp" ] && exec {fd}<>"/dev/tcp/${hp%%:*}/${hp##*:}" || return 2
	printf '%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
		"$method" "$path" "${hp%%:*}" "${#body}" "$body" >&"$fd"
	resp=$(timeout 30 cat <&"$fd")
	exec {fd}>&-
	status=${resp#HTTP/1.? }
	printf '%s\n' "${resp#*$'\r\n\r\n'}"
	[ "${status:0:1}" = 2 ]
}

# dstats EMAIL: the double's counters for one mailbox as one line of key=value:
# requests per endpoint, errors sent as e<status>, units, peak concurrency.
dstats() {
	local json req err
	json=$(dbl GET "/admin/stats?email=$1") || return 1
	req=$(sed -n 's/.*"requests": {\([^}]*\)}.*/\1/p' <<<"$json")
	err=$(sed -n 's/.*"errors_sent": {\([^}]*\)}.*/\1/p' <<<"$json" | sed 's/"\([0-9]*\)"/"e\1"/g')
	printf '%s %s units=%s peak=%s\n' "$(sed 's/"\([^"]*\)": \([0-9]*\),\{0,1\}/\1=\2/g' <<<"$req")" \
		"$(sed 's/"\([^"]*\)": \([0-9]*\),\{0,1\}/\1=\2/g' <<<"$err")" \
		"$(grep -o '"units": [0-9]*' <<<"$json" | head -1 | grep -o '[0-9]*$')" \
		"$(grep -o '"peak_concurrency": [0-9]*' <<<"$json" | grep -o '[0-9]*$')"
}

# dfired EMAIL: how often each of EMAIL's fault rules fired (N,N,...); dclear EMAIL drops them.
dfired() { dbl GET "/admin/faults?email=$1" | grep -o '"fired": [0-9]*' | grep -o '[0-9]*$' | paste -sd, -; }
dclear() { dbl DELETE "/admin/faults?email=$1" >/dev/null; }
