#!/usr/bin/env bash
# No secret in the server log, even at log_min_messages = debug5 (set with
# ALTER SYSTEM for the length of this script, then restored): syncs that
# succeed, get a 401 and refresh the token, fail with a 5xx, fail as an
# ERROR (raise_on_failure, so the statement is logged too), and fail with
# invalid_grant after the grant is revoked.  Then the log written meanwhile
# must contain none of the access tokens the mailbox held, its refresh
# token, or the client secret.  The refresh token never appears in a
# statement: add_mailbox reads it from a file.  Last, a failing add_mailbox
# logs a token given as a literal but not one given as a bind parameter.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

DB=gi_log_secrets
TAG=$(run_tag)
NOW_MS=$(now_ms)
EMAIL=logsecrets-$TAG@logs.example
LOG=${GI_LOG:-$GI_WORK/postgres.log}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/gi_log_secrets.XXXXXX")
chmod 755 "$DIR"
RT="rt-secret-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
SECRET=$(psql -X -At -d postgres -c "SHOW gmail_ingest.client_secret")
restore=""

cleanup() {
	if [ -n "$restore" ]; then
		psql -X -q -d postgres -c "$restore" -c "SELECT pg_reload_conf()" >/dev/null
	fi
	dclear "$EMAIL" 2>/dev/null
	dropdb --if-exists $DB >/dev/null 2>&1
	rm -rf "$DIR"
}
trap cleanup EXIT

check "the server log is readable" "$([ -r "$LOG" ] && echo yes)" yes
check "a client secret is configured" "$([ -n "$SECRET" ] && echo yes)" yes
dbl POST /admin/mailboxes "{\"email\":\"$EMAIL\",\"refresh_token\":\"$RT\",\"seed\":95,\"threads\":5,\"messages\":12,\"days\":7,\"window_days\":7,\"attachments\":3,\"now_ms\":$NOW_MS}" >/dev/null
printf '%s' "$RT" >"$DIR/rt"
chmod 644 "$DIR/rt"
fresh_db $DB
mb=$(q $DB "SELECT gmail_ingest.add_mailbox(gen_random_uuid(), '$EMAIL', pg_read_file('$DIR/rt'))")

# debug5, restored at exit to what it was.
read -r old source file < <(psql -X -At -F' ' -d postgres -c "SELECT setting, source, coalesce(sourcefile, '-') FROM pg_settings WHERE name = 'log_min_messages'")
if [ "$source" = "configuration file" ] && [[ $file == *postgresql.auto.conf ]]; then
	restore="ALTER SYSTEM SET log_min_messages = '$old'"
else
	restore="ALTER SYSTEM RESET log_min_messages"
fi
offset=$(stat -c %s "$LOG")
psql -X -q -d postgres -c "ALTER SYSTEM SET log_min_messages = debug5" -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 1 50); do
	[ "$(q $DB "SHOW log_min_messages")" = debug5 ] && break
	sleep 0.1
done
check "log_min_messages is debug5" "$(q $DB "SHOW log_min_messages")" debug5

tokens=()
keep_token() {
	local t
	t=$(q $DB "SELECT coalesce(access_token, '') FROM gmail_ingest.mailbox_credentials WHERE mailbox_id = $mb")
	local n=${#tokens[@]}
	[ -n "$t" ] && { [ "$n" -eq 0 ] || [ "$t" != "${tokens[$((n - 1))]}" ]; } && tokens+=("$t")
}
run() {  # run SETTINGS: one sync; its status
	psql -X -q -At -d $DB -c "SET gmail_ingest.max_retries = 0" ${1:+-c "$1"} \
		-c "SELECT status FROM gmail_ingest.gmail_sync($mb, 7)" 2>>"$DIR/client.log"
}

check "a sync succeeds" "$(run)" succeeded
keep_token
dbl POST /admin/faults "{\"email\":\"$EMAIL\",\"endpoint\":\"history.list\",\"kind\":\"status\",\"status\":401,\"count\":1}" >/dev/null
check "a sync gets a 401, refreshes the token and succeeds" "$(run)" succeeded
keep_token
check "the 401 made a new access token" "$([ "${#tokens[@]}" -eq 2 ] && [ "${tokens[0]}" != "${tokens[1]}" ] && echo yes)" yes
dbl POST /admin/faults "{\"email\":\"$EMAIL\",\"endpoint\":\"history.list\",\"kind\":\"status\",\"status\":503,\"count\":2}" >/dev/null
check "a sync fails with a 503 (recorded)" "$(run)" failed
check "a sync fails with a 503 as an ERROR (raise_on_failure)" \
	"$(run "SET gmail_ingest.raise_on_failure = on"; grep -c 'ERROR:  Gmail users.history.list failed' "$DIR/client.log")" 1
dbl POST "/admin/mailboxes/$EMAIL/revoke" '{}' >/dev/null
check "a sync fails with invalid_grant once the grant is revoked" "$(run)" failed
check "... and the mailbox must be authorized again" "$(q $DB "SELECT auth_state FROM gmail_ingest.mailboxes WHERE id = $mb")" reauthorize
keep_token
sleep 0.5    # the logger catches up

tail -c +$((offset + 1)) "$LOG" >"$DIR/log"
echo "# $(wc -l <"$DIR/log") log lines written at debug5 ($(grep -c 'DEBUG:' "$DIR/log") DEBUG), searched for ${#tokens[@]} access tokens, the refresh token and the client secret"
check "the log is the debug5 log of these syncs (DEBUG lines and their WARNINGs are there)" \
	"$([ "$(grep -c 'DEBUG:' "$DIR/log")" -gt 0 ] && grep -q "WARNING:  gmail_sync of mailbox $mb failed" "$DIR/log" && grep -q 'invalid_grant' "$DIR/log" && echo yes)" yes
for i in "${!tokens[@]}"; do
	check "access token $((i + 1)) is not in the log" "$(grep -cF -- "${tokens[$i]}" "$DIR/log")" 0
	check "... nor its first 20 characters" "$(grep -cF -- "${tokens[$i]:7:20}" "$DIR/log")" 0
done
check "the refresh token is not in the log" "$(grep -cF -- "$RT" "$DIR/log")" 0
check "the client secret is not in the log" "$(grep -cF -- "$SECRET" "$DIR/log")" 0
check "no secret in what the client was told either" "$(grep -cF -e "$RT" -e "$SECRET" -e "${tokens[0]}" -e "${tokens[1]:-${tokens[0]}}" "$DIR/client.log")" 0

# A refresh token as an argument: a literal in a failing add_mailbox reaches
# the log (log_min_error_statement logs the statement), a bind parameter
# does not (the statement says $3; values are logged only with
# log_parameter_max_length_on_error).  psycopg 3 binds on the server.
literal="rt-literal-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
bound="rt-bound-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
offset=$(stat -c %s "$LOG")
psql -X -q -d $DB -c "SELECT gmail_ingest.add_mailbox(gen_random_uuid(), 'not an email', '$literal')" >/dev/null 2>&1
check "add_mailbox with a bind parameter: refused like the literal" "$(/usr/bin/python3 - "$DB" "$bound" <<'PY'
import os, sys, uuid
import psycopg
with psycopg.connect(dbname=sys.argv[1], host=os.environ["PGHOST"], port=os.environ["PGPORT"],
                     user=os.environ.get("PGUSER", "postgres"), autocommit=True) as conn:
    try:
        conn.execute("SELECT gmail_ingest.add_mailbox(%s, %s, %s)", (uuid.uuid4(), "not an email", sys.argv[2]))
    except psycopg.Error as e:
        print(e.sqlstate)
PY
)" 22023
sleep 0.5
tail -c +$((offset + 1)) "$LOG" >"$DIR/log-arguments"
check "a literal token in a failing statement is in the log (why the README says: bind it)" \
	"$([ "$(grep -cF -- "$literal" "$DIR/log-arguments")" -gt 0 ] && echo yes)" yes
check "a bound token is not, even at debug5" "$(grep -cF -- "$bound" "$DIR/log-arguments")" 0
check "the logged statement shows the placeholder" "$(grep -c 'add_mailbox(\$1, \$2, \$3)' "$DIR/log-arguments" | sed 's/^[1-9][0-9]*$/yes/')" yes
finish
