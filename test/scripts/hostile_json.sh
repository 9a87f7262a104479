#!/usr/bin/env bash
# Hostile JSON answers (issue 9, items 5, 6 and 8): what a server may send
# inside the size cap must neither exhaust the backend's memory, nor put
# invalid UTF-8 into a text column (a dump that cannot be restored), nor
# escape the failure record.
#
#   memory   60 MB answers (HOSTILE_MB) made of tiny values: in a member
#            nothing reads ({"x":[0,0,…]}, {"x":[[],[],…]}) they are skipped;
#            inside read members ("threads":[[],[],…], "labelIds":["","",…])
#            they are refused as unreadable.  Either way the backend's peak
#            RSS (VmHWM) grows by less than MEM_FACTOR × the answer's size
#            plus MEM_ALLOWANCE_MB.
#   UTF-8    invalid bytes in a thread snippet, a message snippet and label,
#            a message id, a thread id, the profile address, an error body,
#            an error text cut at 300 bytes, invalid JSON; a lone surrogate
#            escape.  Every stored row is valid UTF-8, and pg_dump of the
#            database restores into a fresh one.  Ids are never stored
#            altered: their answer is unreadable (08P01).
#   depth    100,000 levels: a failed run with 08P01, the WARNING, nothing
#            stored, and the caller's transaction goes on.  A value 70 levels
#            deep followed by more members: refused cleanly the same way
#            (or every member read correctly), never read into the wrong
#            parent.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

P=gi_hostile
TAG=$(run_tag)
NOW_MS=$(now_ms)
CONTENT=hostile-content-$TAG@example.com
PARAMS="\"seed\":23,\"threads\":3,\"messages\":5,\"days\":7,\"window_days\":7,\"attachments\":1,\"now_ms\":$NOW_MS,\"content_email\":\"$CONTENT\""
HOSTILE_MB=${HOSTILE_MB:-60}
MEM_FACTOR=${MEM_FACTOR:-4}
MEM_ALLOWANCE_MB=${MEM_ALLOWANCE_MB:-64}
export PGOPTIONS="${PGOPTIONS:-} -c gmail_ingest.request_timeout_ms=30000 -c gmail_ingest.max_retries=1"
OUT=$(mktemp -d "${TMPDIR:-/tmp}/gi_hostile.XXXXXX")
started=$SECONDS

clean_up_at_exit "${P}\_%"

# new_case NAME: a database and a mailbox (same content as the reference) of
# its own; sets DB, EMAIL and MB.
new_case() {
	DB=${P}_$1
	EMAIL="$1-$TAG@hostile.example"
	echo "$EMAIL" >>"$OUT/emails"
	dbl POST /admin/mailboxes "{\"email\":\"$EMAIL\",\"refresh_token\":\"rt-$EMAIL\",$PARAMS}" >/dev/null
	createdb -T ${P}_tmpl "$DB"
	MB=$(q "$DB" "SELECT gmail_ingest.add_mailbox(gen_random_uuid(), '$EMAIL', 'rt-$EMAIL')")
}

# rule ENDPOINT COUNT STATUS MESSAGE_ID PYTHON: a "body" fault rule for
# $EMAIL.  PYTHON evaluates to the answer's parts: str, bytes (sent as hex),
# or (str or bytes, repeat); repeat "fill" makes the answer $BYTES long.
rule() {
	python3 - "$EMAIL" "$@" <<'PY'
import json, os, sys
email, endpoint, count, status, message_id, expr = sys.argv[1:7]
spec = eval(expr)
raw = lambda p: p if isinstance(p, bytes) else p.encode()
fixed = sum(len(raw(p)) for p in spec if not isinstance(p, tuple))
fixed += sum(len(raw(p[0])) * p[1] for p in spec if isinstance(p, tuple) and p[1] != "fill")
parts = []
for p in spec:
    if isinstance(p, tuple):
        n = (int(os.environ.get("BYTES", 0)) - fixed) // len(raw(p[0])) if p[1] == "fill" else p[1]
        key, val = ("hex", p[0].hex()) if isinstance(p[0], bytes) else ("text", p[0])
        parts.append({key: val, "repeat": n})
    elif isinstance(p, bytes):
        parts.append({"hex": p.hex()})
    else:
        parts.append({"text": p})
r = {"email": email, "endpoint": endpoint, "kind": "body", "count": int(count),
     "status": int(status), "body": parts}
if message_id != "-":
    r["message_id"] = message_id
print(json.dumps(r))
PY
}
inject() { dbl POST /admin/faults "$(rule "$@")" >/dev/null; }

# sync [FORCE_FULL]: syncs $MB of $DB; sets STATUS, ERROR, RETRIES, SQLSTATE
# and WARNINGS (the WARNING lines).
sync() {
	local out
	out=$(timeout 300 psql -X -At -F'|' -d "$DB" 2>"$OUT/sync.err" <<-SQL
		SELECT status, retries, replace(coalesce(error, ''), E'\n', ' ') FROM gmail_ingest.gmail_sync($MB, 7, ${1:-false});
		SELECT coalesce((SELECT detail->>'sqlstate' FROM gmail_ingest.ledger WHERE mailbox_id = $MB AND event = 'sync.failed' ORDER BY id DESC LIMIT 1), '-');
	SQL
	)
	IFS='|' read -r STATUS RETRIES ERROR <<<"$(sed -n 1p <<<"$out")"
	SQLSTATE=$(sed -n 2p <<<"$out")
	WARNINGS=$(grep -c 'WARNING:  gmail_sync of mailbox' "$OUT/sync.err")
	[ -n "$STATUS" ] || ERROR="$(head -c 300 "$OUT/sync.err")"
	dclear "$EMAIL"
}

# Rows of the extension's tables that are not valid UTF-8 (0 expected).
invalid_rows() {
	q "$DB" "SELECT (SELECT count(*) FROM gmail_ingest.mail_threads x WHERE NOT gi_valid_utf8(x::text))
		+ (SELECT count(*) FROM gmail_ingest.mail_messages x WHERE NOT gi_valid_utf8(x::text))
		+ (SELECT count(*) FROM gmail_ingest.sync_runs x WHERE NOT gi_valid_utf8(x::text))
		+ (SELECT count(*) FROM gmail_ingest.ledger x WHERE NOT gi_valid_utf8(x::text))
		+ (SELECT count(*) FROM gmail_ingest.mailboxes x WHERE NOT gi_valid_utf8(x::text))"
}

# dump_restore: "restored" when pg_dump of $DB restores into a fresh database.
dump_restore() {
	local f="$OUT/$DB.dump" r=${DB}_restored
	if ! "$GI_PGBIN/pg_dump" -Fc -f "$f" "$DB" 2>"$OUT/dump.err"; then
		echo "pg_dump failed: $(head -c 200 "$OUT/dump.err")"
		return
	fi
	dropdb --if-exists "$r" >/dev/null 2>&1
	createdb "$r"
	if "$GI_PGBIN/pg_restore" --exit-on-error -d "$r" "$f" 2>"$OUT/restore.err"; then
		echo "restored $(q "$r" "SELECT count(*) FROM gmail_ingest.sync_runs")"
	else
		echo "restore failed: $(grep -m1 -o 'ERROR:.*' "$OUT/restore.err" | head -c 200)"
	fi
	dropdb --if-exists "$r" >/dev/null 2>&1
}

# utf8_case NAME: the checks every UTF-8 case ends with.
utf8_case() {
	check "$1: every stored row is valid UTF-8" "$(invalid_rows)" 0
	check "$1: pg_dump restores into a fresh database" "$(dump_restore)" \
		"restored $(q "$DB" "SELECT count(*) FROM gmail_ingest.sync_runs")"
}

# ------------------------------------------------------------- references
fresh_db ${P}_tmpl
psql -X -q -v ON_ERROR_STOP=1 -d ${P}_tmpl <<'SQL'
CREATE FUNCTION public.gi_valid_utf8(t text) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
	PERFORM convert_to(t, 'UTF8');	-- verifies the bytes
	RETURN true;
EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
	RETURN false;
END
$f$;
CREATE FUNCTION public.gi_hwm_kb() RETURNS bigint LANGUAGE sql AS $f$
	SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s*(\d+)'))[1]::bigint
$f$;
SQL
new_case ref
sync
check "reference: clean sync" "$STATUS" succeeded
IFS='|' read -r T1 H1 T2 H2 <<<"$(q "$DB" "SELECT string_agg(provider_thread_id || '|' || history_id, '|' ORDER BY provider_thread_id) FROM (SELECT * FROM gmail_ingest.mail_threads ORDER BY provider_thread_id LIMIT 2) t")"
IFS='|' read -r M1 M1_MS <<<"$(q "$DB" "SELECT provider_message_id, (extract(epoch FROM internal_date) * 1000)::bigint FROM gmail_ingest.mail_messages WHERE provider_thread_id = '$T1' ORDER BY 1 LIMIT 1")"
REF_THREADS=$(q "$DB" "SELECT count(*) FROM gmail_ingest.mail_threads")
check "reference: dump restores" "$(dump_restore)" "restored 1"
RAW=$(printf 'From: a@example.com\r\nTo: b@example.com\r\nSubject: hostile\r\nMessage-ID: <h@example.com>\r\n\r\nbody\r\n' | base64 -w0 | tr '+/' '-_')

# ------------------------------------------------------------- UTF-8 (item 6)
new_case snippet
inject threads.list 1 200 - "['{\"threads\":[{\"id\":\"$T1\",\"historyId\":\"$H1\",\"snippet\":\"caf', b'\\xc3 \\xff\\xfe\\xed\\xa0\\x80', ' end\"}]}']"
sync
check "thread snippet with invalid bytes: the sync succeeded" "$STATUS" succeeded
check "thread snippet with invalid bytes: repaired to U+FFFD" \
	"$(q "$DB" "SELECT snippet FROM gmail_ingest.mail_threads WHERE provider_thread_id = '$T1'")" \
	"caf� ����� end"
utf8_case "thread snippet"

new_case surrogate
inject threads.list 1 200 - "['{\"threads\":[{\"id\":\"$T1\",\"historyId\":\"$H1\",\"snippet\":\"a\\\\ud800b\\\\udc00c\\\\ud83d\\\\ude00\"}]}']"
sync
check "lone surrogate escapes: read at once, no retry" "$STATUS/$RETRIES" succeeded/0
check "lone surrogate escapes: each U+FFFD, a pair kept" \
	"$(q "$DB" "SELECT snippet FROM gmail_ingest.mail_threads WHERE provider_thread_id = '$T1'")" "a�b�c😀"
utf8_case "lone surrogate"

new_case message
inject messages.get 1 200 "$M1" "['{\"id\":\"$M1\",\"threadId\":\"$T1\",\"historyId\":\"$H1\",\"internalDate\":\"$M1_MS\",\"labelIds\":[\"INBOX\",\"L', b'\\xff\\xfe', 'X\"],\"snippet\":\"s', b'\\xc0\\xaf', '\",\"raw\":\"$RAW\"}']"
sync
check "message label and snippet with invalid bytes: the sync succeeded" "$STATUS" succeeded
check "message label and snippet: repaired to U+FFFD" \
	"$(q "$DB" "SELECT array_to_string(label_ids, ',') || ' ' || snippet FROM gmail_ingest.mail_messages WHERE provider_message_id = '$M1'")" \
	"INBOX,L��X s��"
utf8_case "message label and snippet"

new_case message_id
inject messages.get -1 200 "$M1" "['{\"id\":\"$M1', b'\\xff', '\",\"threadId\":\"$T1\",\"historyId\":\"$H1\",\"internalDate\":\"$M1_MS\",\"raw\":\"$RAW\"}']"
sync
check "message id with an invalid byte: an unreadable answer, not an altered id" "$STATUS/$SQLSTATE/$WARNINGS" failed/08P01/1
check "message id with an invalid byte: the error says which member" \
	"$(grep -q 'member "id" is not valid UTF-8' <<<"$ERROR" && echo yes || echo "no: $ERROR")" yes
check "message id with an invalid byte: nothing stored" "$(q "$DB" "SELECT count(*) FROM gmail_ingest.mail_messages")" 0
utf8_case "message id"

new_case thread_id
inject threads.list -1 200 - "['{\"threads\":[{\"id\":\"$T1', b'\\xfe', '\",\"historyId\":\"$H1\"}]}']"
sync
check "thread id with an invalid byte: an unreadable answer" "$STATUS/$SQLSTATE" failed/08P01
check "thread id with an invalid byte: nothing stored" "$(q "$DB" "SELECT count(*) FROM gmail_ingest.mail_threads")" 0
utf8_case "thread id"

new_case profile
inject profile -1 200 - "['{\"emailAddress\":\"x', b'\\xff', '@example.com\",\"historyId\":\"$H1\"}']"
sync
check "profile address with an invalid byte: refused as another account" "$STATUS/$SQLSTATE" failed/28000
check "profile address with an invalid byte: quoted repaired" \
	"$(grep -q 'token is for "x�@example.com"' <<<"$ERROR" && echo yes || echo "no: $ERROR")" yes
utf8_case "profile address"

new_case cut
inject threads.list -1 400 - "['{\"error\":{\"code\":400,\"message\":\"', ('x', 299), ('é', 20), '\",\"errors\":[{\"reason\":\"badRequest\"}]}}']"
sync
check "error text cut at 300 bytes: a failed run" "$STATUS/$SQLSTATE" failed/38000
# The stored bytes (textsend: no encoding check): how many follow "Gmail said: ", the last two.
check "error text cut at 300 bytes: cut before the character, not inside it" \
	"$(q "$DB" "SELECT length(b) - position('Gmail said: '::bytea IN b) - 11 || ' bytes, ending ' || encode(substring(b FROM length(b) - 1), 'hex')
		FROM (SELECT textsend(error) AS b FROM gmail_ingest.sync_runs WHERE mailbox_id = $MB) x")" "299 bytes, ending 7878"
utf8_case "error text cut"

new_case error_body
inject threads.list -1 400 - "['{\"error\":{\"code\":400,\"message\":\"bad ', b'\\xff\\xfe', ' news\",\"errors\":[{\"reason\":\"r', b'\\xe2\\x82', '\"}]}}']"
sync
check "error body with invalid bytes: a failed run" "$STATUS/$SQLSTATE" failed/38000
check "error body with invalid bytes: quoted repaired" \
	"$(grep -q 'reason r�: .*Gmail said: bad �� news' <<<"$ERROR" && echo yes || echo "no: $ERROR")" yes
utf8_case "error body"

new_case bad_json
inject threads.list -1 200 - "['{\"threads\":', b'\\xff\\xfeabc', '}']"
sync
check "invalid JSON with invalid bytes: an unreadable answer" "$STATUS/$SQLSTATE" failed/08P01
check "invalid JSON with invalid bytes: the parser's detail quoted repaired" \
	"$(grep -q 'could not be read: Token ".*��abc' <<<"$ERROR" && echo yes || echo "no: $ERROR")" yes
utf8_case "invalid JSON"

# ------------------------------------------------------------- depth (item 8)
new_case deep
inject threads.list -1 200 - "['{\"threads\":', ('[', 100000), (']', 100000), '}']"
out=$(timeout 300 psql -X -At -d "$DB" 2>"$OUT/deep.err" <<-SQL
	BEGIN;
	SELECT status FROM gmail_ingest.gmail_sync($MB, 7, false);
	SELECT 'the transaction goes on';
	COMMIT;
	SELECT detail->>'sqlstate' FROM gmail_ingest.ledger WHERE mailbox_id = $MB AND event = 'sync.failed';
	SELECT count(*) || ' ' || string_agg(status, ',') FROM gmail_ingest.sync_runs WHERE mailbox_id = $MB;
	SELECT count(*) FROM gmail_ingest.mail_threads;
SQL
)
dclear "$EMAIL"
check "100,000 levels: a failed run, the caller's transaction goes on, 08P01 recorded, nothing stored" \
	"$(echo $out)" "BEGIN failed the transaction goes on COMMIT 08P01 1 failed 0"
check "100,000 levels: the WARNING" "$(grep -c 'WARNING:  gmail_sync of mailbox' "$OUT/deep.err")" 1
check "100,000 levels: the error says why" \
	"$(grep -q 'nested deeper than 64 levels' "$OUT/deep.err" && echo yes || echo "no: $(head -c 300 "$OUT/deep.err")")" yes

new_case deep70
inject threads.list -1 200 - "['{\"threads\":[{\"id\":\"$T1\",\"historyId\":\"$H1\",\"snippet\":\"one\",\"x\":', ('[', 70), (']', 70), '},{\"id\":\"$T2\",\"historyId\":\"$H2\",\"snippet\":\"two\"}]}']"
sync
threads=$(q "$DB" "SELECT coalesce(string_agg(provider_thread_id || ':' || snippet, ',' ORDER BY provider_thread_id), '') FROM gmail_ingest.mail_threads")
if [ "$STATUS" = succeeded ]; then
	got="read: $threads"
else
	got="$STATUS/$SQLSTATE/stored: $threads"
fi
check "a value 70 levels deep, then more members: refused cleanly or every member read" \
	"$got" "$([ "$STATUS" = succeeded ] && echo "read: $T1:one,$T2:two" || echo "failed/08P01/stored: ")"

# ------------------------------------------------------------- memory (item 5)
export BYTES=$((HOSTILE_MB * 1024 * 1024))
# mem_case NAME EXPECT PYTHON: an answer of HOSTILE_MB (parts as for rule);
# EXPECT is the run's status/SQLSTATE.
mem_case() {
	local name=$1 expect=$2 out before after grew bound
	new_case "mem$((++mem_n))"
	inject threads.list -1 200 - "$3"
	out=$(timeout 300 psql -X -At -F'|' -d "$DB" 2>"$OUT/mem.err" <<-SQL
		SELECT gi_hwm_kb();
		SELECT status FROM gmail_ingest.gmail_sync($MB, 7, false);
		SELECT gi_hwm_kb();
		SELECT coalesce((SELECT detail->>'sqlstate' FROM gmail_ingest.ledger WHERE mailbox_id = $MB AND event = 'sync.failed'), '-');
	SQL
	)
	dclear "$EMAIL"
	before=$(sed -n 1p <<<"$out") after=$(sed -n 3p <<<"$out")
	grew=$(( (${after:-0} - ${before:-0}) / 1024 ))
	bound=$(( BYTES * MEM_FACTOR / 1048576 + MEM_ALLOWANCE_MB ))
	echo "# $name ($HOSTILE_MB MB answer): peak RSS grew by $grew MB (bound $bound MB); $(sed -n 2p <<<"$out")/$(sed -n 4p <<<"$out")"
	check "$name: $expect" "$(sed -n 2p <<<"$out")/$(sed -n 4p <<<"$out")" "$expect"
	check "$name: peak RSS within $MEM_FACTOR x the answer + $MEM_ALLOWANCE_MB MB" \
		"$([ -n "$after" ] && [ "$grew" -le "$bound" ] && echo yes || echo "no: grew by $grew MB, bound $bound MB $(head -c 200 "$OUT/mem.err")")" yes
}
mem_n=0
mem_case 'unread member {"x":[0,0,…]}' succeeded/- "['{\"x\":[', ('0,', 'fill'), '0]}']"
mem_case 'unread member {"x":[[],[],…]}' succeeded/- "['{\"x\":[', ('[],', 'fill'), '[]]}']"
mem_case 'read member "threads":[[],[],…]' failed/08P01 "['{\"threads\":[', ('[],', 'fill'), '[]]}']"
mem_case 'read member "labelIds":["","",…]' failed/08P01 \
	"['{\"threads\":[{\"id\":\"$T1\",\"historyId\":\"$H1\",\"labelIds\":[', ('\"\",', 'fill'), '\"\"]}]}']"

echo "# $((SECONDS - started)) s"
finish
