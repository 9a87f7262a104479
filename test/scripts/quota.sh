#!/usr/bin/env bash
# The client-side quota budget against a double enforcing Gmail's per-user
# limits (a sliding minute of units, and at most 10 requests in flight).
#
# Both sides count the 2026 quota model's costs (messages.get 20), the
# extension's and the double's default.
#
# 1. The double allows QUOTA_LIMIT units a minute (6000, the 2026 per-user
#    limit) and 10 concurrent requests for one mailbox;
#    gmail_ingest.quota_units_per_minute is the same limit.  A full sync of
#    about 7,500 units must get no 429 at all, store everything (the rows of
#    a reference synced without limits), and keep the limit's pace: over any
#    sliding minute at most LIMIT units, so U units need at least
#    (ceil(U / LIMIT) - 1) minutes, and the budget's bucket sends no more
#    than a second's worth at once and then LIMIT / 60 a second, so no less
#    than (U - LIMIT / 60) / LIMIT minutes either; it must not take more
#    than 15% longer than U / LIMIT minutes.
# 2. The contrary, at the same time on another mailbox: the extension's budget
#    off (0) and a tiny limit at the double (600 units a minute for about 850
#    units of work).  The sync hits 429s, waits as Gmail's "Retry after
#    <time>" says (about a minute), and either succeeds with every row of the
#    reference or records a 53400 failure with no row -- never a success
#    with missing data.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

LIMIT=${QUOTA_LIMIT:-6000}
TINY=600
DB=gi_quota
TAG=$(run_tag)
NOW_MS=$(now_ms)
E1=quota-$TAG@quota.example
E2=quota-off-$TAG@quota.example
OUT=$(mktemp -d "${TMPDIR:-/tmp}/gi_quota.XXXXXX")

cleanup() {
	local j
	for j in $(jobs -p); do kill "$j" 2>/dev/null; done
	wait 2>/dev/null
	dropdb --if-exists $DB >/dev/null 2>&1
	dropdb --if-exists ${DB}_ref >/dev/null 2>&1
	rm -rf "$OUT"
}
trap cleanup EXIT

BIG="\"seed\":61,\"threads\":100,\"messages\":400,\"days\":7,\"window_days\":7,\"attachments\":20,\"attachment_size_max\":8192,\"now_ms\":$NOW_MS,\"content_email\":\"quota-big@example.com\""
SMALL="\"seed\":62,\"threads\":15,\"messages\":50,\"days\":7,\"window_days\":7,\"attachments\":6,\"now_ms\":$NOW_MS,\"content_email\":\"quota-small@example.com\""
new_mailbox "$E1" "$BIG"
new_mailbox "$E2" "$SMALL"
new_mailbox "ref-$E1" "$BIG"
new_mailbox "ref-$E2" "$SMALL"
fresh_db $DB
fresh_db ${DB}_ref
install_digests $DB
install_digests ${DB}_ref
mb1=$(q $DB "SELECT gmail_ingest.add_mailbox(gen_random_uuid(), '$E1', 'rt-$E1')")
mb2=$(q $DB "SELECT gmail_ingest.add_mailbox(gen_random_uuid(), '$E2', 'rt-$E2')")
for e in "$E1" "$E2"; do
	r=$(q ${DB}_ref "SELECT gmail_ingest.add_mailbox(gen_random_uuid(), 'ref-$e', 'rt-ref-$e')")
	PGOPTIONS="${PGOPTIONS:-} -c gmail_ingest.quota_units_per_minute=0" q ${DB}_ref "SELECT status FROM gmail_ingest.gmail_sync($r, 7)" >/dev/null
	eval "ref_$([ "$e" = "$E1" ] && echo 1 || echo 2)=\$(q ${DB}_ref \"SELECT gi_test_digest($r)\")"
done

dbl POST "/admin/mailboxes/$E1/config" "{\"quota_units_per_minute\":$LIMIT,\"max_concurrent_per_user\":10}" >/dev/null
dbl POST "/admin/mailboxes/$E2/config" "{\"quota_units_per_minute\":$TINY,\"max_concurrent_per_user\":10}" >/dev/null

# Both syncs at once, each in its own session.
sync_sql="SELECT status, coalesce(error, ''), quota_units, retries, http_requests,
	round(extract(epoch FROM finished_at - started_at) * 1000) FROM gmail_ingest.gmail_sync"
PGOPTIONS="${PGOPTIONS:-} -c gmail_ingest.quota_units_per_minute=$LIMIT -c gmail_ingest.max_concurrency=8" \
	timeout 600 psql -X -At -F'|' -d $DB -c "$sync_sql($mb1, 7)" >"$OUT/1" 2>"$OUT/1.err" &
p1=$!
PGOPTIONS="${PGOPTIONS:-} -c gmail_ingest.quota_units_per_minute=0 -c gmail_ingest.max_retries=5" \
	timeout 600 psql -X -At -F'|' -d $DB -c "$sync_sql($mb2, 7)" >"$OUT/2" 2>"$OUT/2.err" &
p2=$!
wait $p1
wait $p2
s1=$(dstats "$E1")
s2=$(dstats "$E2")
dbl POST "/admin/mailboxes/$E1/config" '{"quota_units_per_minute":null,"max_concurrent_per_user":null}' >/dev/null
dbl POST "/admin/mailboxes/$E2/config" '{"quota_units_per_minute":null,"max_concurrent_per_user":null}' >/dev/null

# ---- 1. within the budget
IFS='|' read -r status error units retries requests wall <"$OUT/1"
units=${units:-0} wall=${wall:-0}
min_ms=$(( ( (units + LIMIT - 1) / LIMIT - 1) * 60000 ))
bucket_ms=$(( (units - LIMIT / 60) * 60000 / LIMIT ))
[ $bucket_ms -gt $min_ms ] && min_ms=$bucket_ms
pace_ms=$(( units * 60000 / LIMIT ))
max_ms=$(( pace_ms * 115 / 100 ))
echo "# budget on: $units units at $LIMIT units/min (units / limit = $(awk "BEGIN{printf \"%.2f\", $units / $LIMIT}") min;" \
	"the budget allows it in no less than $((min_ms / 1000)) s): $requests requests, wall $((wall / 1000)).$(printf %03d $((wall % 1000))) s," \
	"$(stat_of e429 "$s1") 429s, peak $(stat_of peak "$s1") in flight"
check "budget on: the sync succeeded" "$status" succeeded
check "budget on: zero 429s from the double" "$(stat_of e429 "$s1")" 0
check "budget on: no retry needed" "$retries" 0
check "budget on: units as the double counted them" "$units" "$(stat_of units "$s1")"
check "budget on: at most 10 requests in flight" "$([ "$(stat_of peak "$s1")" -le 10 ] && echo yes)" yes
check "budget on: enough work to need a second minute" "$([ "$units" -gt "$LIMIT" ] && echo yes)" yes
check "budget on: no faster than the bucket and the sliding minute allow" "$([ "$wall" -ge $((min_ms - 500)) ] && echo yes || echo "no: $wall ms")" yes
check "budget on: within 15% of units / limit" "$([ "$wall" -le "$max_ms" ] && echo yes || echo "no: $wall ms > $max_ms ms")" yes
check "budget on: every row of the reference" "$(q $DB "SELECT gi_test_digest($mb1)")" "$ref_1"
check "budget on: verify" "$(verify_ok $DB "$mb1")" t

# ---- 2. budget off, tiny limit at the double
IFS='|' read -r status2 error2 units2 retries2 requests2 wall2 <"$OUT/2"
wall2=${wall2:-0}
echo "# budget off, $TINY units/min at the double: $status2 after $((wall2 / 1000)) s, $(stat_of e429 "$s2") 429s," \
	"$retries2 retries, $units2 units${error2:+: $error2}"
check "budget off: Gmail's limit was hit" "$([ "$(stat_of e429 "$s2")" -gt 0 ] && echo yes)" yes
if [ "$status2" = succeeded ]; then
	check "budget off: it retried" "$([ "${retries2:-0}" -gt 0 ] && echo yes)" yes
	check "budget off: the success stored every row of the reference" "$(q $DB "SELECT gi_test_digest($mb2)")" "$ref_2"
	# Gmail's "Retry after" is when the first requests leave the minute: ~60 s
	# after the start.  Backoff alone (1+2+4+8+16 s) would give up sooner.
	check "budget off: it waited as Gmail said (about a minute)" "$([ "$wall2" -ge 55000 ] && echo yes || echo "no: $wall2 ms")" yes
else
	check "budget off: a recorded failure with SQLSTATE 53400" \
		"$status2/$(q $DB "SELECT detail->>'sqlstate' FROM gmail_ingest.ledger WHERE mailbox_id = $mb2 AND event = 'sync.failed' ORDER BY id DESC LIMIT 1")" "failed/53400"
	check "budget off: the failure left no row" "$(q $DB "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $mb2")" 0
fi
check "budget off: verify" "$(verify_ok $DB "$mb2")" t
finish
