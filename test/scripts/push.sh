#!/usr/bin/env bash
# Push (SPEC 7c) against the double's Gmail watch and Pub/Sub surface: 50
# watched mailboxes, 2 workers and the listener running, 200 changes (new
# messages, label changes, deletions) at random times into random
# mailboxes: every change reaches the database (p50 <= 2 s, p99 <= 5 s from
# the change to its row), every delivery is acknowledged after its commit
# and none is left outstanding, also when the listener's backend is killed
# between its commit and its ack; the quota spent is history.list and the
# new messages' gets (no list, no full sync).  Then: duplicated and
# reordered deliveries cause no sync without a change; a watch near its
# end is renewed by a fleet turn and outlives the old expiration on the
# double's clock; a lapsed watch leaves polling to catch the mail; a
# refused renewal is recorded, not raised, and not retried within the hour;
# bad notifications are acknowledged, counted and logged once; the
# listener's pg_cron job follows start_workers/stop_workers.
set -euo pipefail
. "$(dirname "$0")/../lib/script.sh"

db=test_push
tag=$(run_tag)
prefix=push$tag
topic=projects/gi-test/topics/gmail-$tag
sub=projects/gi-test/subscriptions/pull-$tag
n=50
fresh_db $db
OUT=$(mktemp -d)
clean_up_at_exit test_push
push_clean_up() {
	local j
	for j in $(jobs -p); do kill "$j" 2>/dev/null || true; done
	psql -X -q -d postgres -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name IN ('gi_push_listener', 'gi_push_worker')" >/dev/null 2>&1 || true
	psql -X -q -d postgres -c "ALTER SYSTEM RESET gmail_ingest.pubsub_subscription" \
		-c "ALTER SYSTEM RESET gmail_ingest.pubsub_base_url" \
		-c "ALTER SYSTEM RESET gmail_ingest.pubsub_service_account" \
		-c "SELECT pg_reload_conf()" >/dev/null 2>&1 || true
	gi_clean_up
}
trap push_clean_up EXIT

pubsub() { gi_double "$@"; }
sub_stat() {	# KEY: a counter of the subscription in the double
	pubsub GET /admin/pubsub/stats | python3 -c "import json, sys; print(json.load(sys.stdin)['subscriptions']['$sub']['$1'])"
}
push_stat() {	# KEY: a counter of the double's Gmail push side
	pubsub GET /admin/pubsub/stats | python3 -c "import json, sys; print(json.load(sys.stdin)['counts']['$1'])"
}

# --- Google Cloud as the double plays it: a topic Gmail may publish to, a
# pull subscription, and the service account the listener pulls as (its
# JSON key for the database, its public key in the double, the Subscriber
# role on the subscription).
sa=push-$tag@gi-test.iam.gserviceaccount.com
pubsub_listener_account "$OUT" "$sa" "$topic" "$sub" 3
pubsub POST /admin/pubsub/topics "{\"name\":\"$topic-closed\",\"publish_grant\":false}" >/dev/null
psql -X -q -d postgres -c "ALTER SYSTEM SET gmail_ingest.pubsub_subscription = '$sub'" \
	-c "ALTER SYSTEM SET gmail_ingest.pubsub_base_url = '$DOUBLE_URL'" \
	-c "ALTER SYSTEM SET gmail_ingest.pubsub_service_account = '$sa'" \
	-c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 1 50); do
	[ "$(q $db "SHOW gmail_ingest.pubsub_subscription")" = "$sub" ] && break
	sleep 0.1
done

new_fleet $db $n "$prefix" '{"messages":6,"threads":3,"attachments":0,"days":5,"window_days":7}'
check "the push service account registered" \
	"$(psql -X -At -v ON_ERROR_STOP=1 -d $db -v key="$(cat "$OUT/key.json")" <<<"SELECT gmail_ingest.add_service_account(gen_random_uuid(), :'key') > 0")" t
check "every mailbox synced once" \
	"$(q $db "SELECT count(*) FILTER (WHERE r.status = 'succeeded') FROM gmail_ingest.mailboxes m, gmail_ingest.gmail_sync(m.id) r")" $n
# as if the fleet had synced them: next due one interval on, so push alone brings them back
q $db "UPDATE gmail_ingest.mailboxes SET next_sync_at = now() + sync_interval" >/dev/null
watches0=$(push_stat watch)
expires=$(q $db "SELECT count(*) FILTER (WHERE w.e BETWEEN now() + interval '6 days 23 hours' AND now() + interval '7 days 1 minute') FROM gmail_ingest.mailboxes m, LATERAL (SELECT gmail_ingest.watch_mailbox(m.id, '$topic') AS e) w")
check "watch_mailbox: each watched, expiring 7 days ahead" "$expires" $n
check "mailbox_status shows the watch" \
	"$(q $db "SELECT count(*) FROM gmail_ingest.mailbox_status WHERE watch_topic = '$topic' AND watch_expires_at > now() AND watch_error IS NULL")" $n
check "the double holds the watches" "$(( $(push_stat watch) - watches0 ))" $n

# --- 1. The load: 2 workers, the listener, 200 changes in 60 s, the listener killed once.
pubsub POST /admin/fleet/stats/reset "{\"prefix\":\"$prefix\"}" >/dev/null
jwt_tokens() { pubsub GET /admin/stats | python3 -c "import json, sys; print(json.load(sys.stdin)['jwt_tokens_issued'])"; }
tokens0=$(jwt_tokens)
first_run=$(q $db "SELECT coalesce(max(id), 0) FROM gmail_ingest.sync_runs")
listener="PGAPPNAME=gi_push_listener psql -X -q -d $db -c \"CALL gmail_ingest.run_push('10 minutes')\" >>$OUT/listener.log 2>&1"
for w in 1 2; do
	PGAPPNAME=gi_push_worker psql -X -q -d $db -c "CALL gmail_ingest.run_due('10 minutes')" >"$OUT/worker$w.log" 2>&1 &
done
eval "$listener &"
sleep 1
/usr/bin/python3 test/scripts/push_load.py --db $db --double "$DOUBLE_URL" --prefix "$prefix" \
	--changes 200 --seconds 60 --seed 13 --wait 40 \
	--kill-listener-at 30 --subscription "$sub" --listener-cmd "$listener" >"$OUT/load.json"
load() { python3 -c "import json, sys; print(json.load(open('$OUT/load.json'))$1)"; }
check "every change is in the database" "$(load "['seen']")/$(load "['unseen_count']")" "200/0"
p50=$(load "['p50_ms']")
p99=$(load "['p99_ms']")
check "p50 from change to row <= 2 s" "$([ "$p50" -le 2000 ] && echo t || echo "f ($p50 ms)")" t
check "p99 from change to row <= 5 s" "$([ "$p99" -le 5000 ] && echo t || echo "f ($p99 ms)")" t
echo "# push: 200 changes into $n mailboxes ($(load "['by_kind']")), 2 workers + listener: p50 $p50 ms, p95 $(load "['p95_ms']") ms, p99 $p99 ms, max $(load "['max_ms']") ms"

# The killed batch: committed, never acknowledged, delivered again, harmless.
killed=$(load ".get('kill', {}).get('batch', 0)")
check "the listener was killed between a commit and its ack" "$(load ".get('kill', {}).get('terminated', 0)")" 1
check "its batch was committed and never acknowledged" \
	"$(q $db "SELECT received > 0 AND acknowledged = 0 AND acked_at IS NULL FROM gmail_ingest.push_batches WHERE id = $killed")" t
check "the double dropped that ack" "$([ "$(sub_stat dropped_acks)" -gt 0 ] && echo t)" t
# The ack deadline is 3 s: what was not acknowledged comes back and is acknowledged.
for _ in $(seq 1 100); do
	[ "$(sub_stat outstanding)/$(sub_stat backlog)" = "0/0" ] && break
	sleep 0.1
done
check "nothing left outstanding or undelivered" "$(sub_stat outstanding)/$(sub_stat backlog)" "0/0"
check "the killed batch was delivered again" "$([ "$(sub_stat redelivered)" -gt 0 ] && echo t)" t
check "every delivery was acknowledged once (delivered = acked + dropped + late)" \
	"$(sub_stat delivered)" "$(( $(sub_stat acked) + $(sub_stat dropped_acks) + $(sub_stat late_acks) ))"
check "push_batches counted every delivery, acknowledged all but the killed batch" \
	"$(q $db "SELECT sum(received) = sum(acknowledged) + (SELECT received FROM gmail_ingest.push_batches WHERE id = $killed) FROM gmail_ingest.push_batches")" t
check "one Pub/Sub token per listener backend (two: the killed one and its successor)" \
	"$(( $(jwt_tokens) - tokens0 ))" 2
check "the notifications were Gmail's: none malformed, none unknown" \
	"$(q $db "SELECT sum(malformed) + sum(unknown_address) FROM gmail_ingest.push_batches")" 0
check "no full sync, no failed run" \
	"$(q $db "SELECT count(*) FILTER (WHERE mode = 'full') || '/' || count(*) FILTER (WHERE status <> 'succeeded') FROM gmail_ingest.sync_runs WHERE id > $first_run")" "0/0"
stats=$(pubsub GET "/admin/fleet/stats?prefix=$prefix")
req() { python3 -c "import json, sys; print(json.loads(sys.argv[1])['requests'].get('$1', 0))" "$stats"; }
check "quota: no list call" "$(req messages.list)/$(req threads.list)" "0/0"
check "quota: one messages.get per new message" "$(req messages.get)" "$(load "['new_messages']")"
syncs=$(q $db "SELECT count(*) FROM gmail_ingest.sync_runs WHERE id > $first_run")
check "quota: one profile per sync" "$(req profile)" "$syncs"
check "quota: units spent on profile, history.list and messages.get alone" \
	"$(python3 -c "import json, sys; print(','.join(sorted(k for k, v in json.loads(sys.argv[1])['units_by_endpoint'].items() if v)))" "$stats")" \
	"history.list,messages.get,profile"
check "no sync without a change" \
	"$(q $db "SELECT count(*) FROM gmail_ingest.sync_runs WHERE id > $first_run AND messages_inserted + messages_updated + messages_deleted = 0")" 0
echo "# push: $syncs syncs for 200 changes; units $(python3 -c "import json, sys; print(json.loads(sys.argv[1])['units'])" "$stats") ($(python3 -c "import json, sys; print(json.loads(sys.argv[1])['units_by_endpoint'])" "$stats"))"
fs=$(q $db "SELECT notifications_last_hour || '/' || notifications_acknowledged_last_hour || '/' || notifications_ignored_last_hour || '/' || watched || '/' || (watch_earliest_expiration > now() + interval '6 days') FROM gmail_ingest.fleet_status")
check "fleet_status: notifications received / acknowledged / ignored, watches, earliest expiration" "$fs" \
	"$(q $db "SELECT sum(received) || '/' || sum(acknowledged) || '/' || sum(stale + unknown_address + malformed) FROM gmail_ingest.push_batches")/$n/true"
check "fleet_status: all but the killed batch acknowledged" \
	"$(q $db "SELECT notifications_last_hour - notifications_acknowledged_last_hour FROM gmail_ingest.fleet_status")" \
	"$(q $db "SELECT received FROM gmail_ingest.push_batches WHERE id = $killed")"
check "verify() holds for every mailbox" \
	"$(q $db "SELECT count(*) FROM gmail_ingest.mailboxes m, gmail_ingest.verify(m.id) v WHERE NOT v.ok")" 0
check "fleet rows equal the double's messages" \
	"$(q $db "SELECT count(*) FROM gmail_ingest.mail_messages WHERE deleted_at IS NULL")" \
	"$(python3 -c "import json, sys; print(json.loads(sys.argv[1])['messages'])" "$stats")"

# --- 2. Duplicated and reordered deliveries: no sync without a change, no error.
pubsub POST /admin/pubsub/faults "{\"subscription\":\"$sub\",\"duplicate\":1.0,\"reorder\":true}" >/dev/null
before=$(q $db "SELECT coalesce(max(id), 0) FROM gmail_ingest.sync_runs")
dup_before=$(sub_stat duplicated)
for i in 1 2 3 4 5 6 7 8 9 10; do
	member=$(printf '%s-%04d@fleet.test' "$prefix" "$i")
	for _ in 1 2 3; do pubsub POST "/admin/mailboxes/$member/messages" '{}' >/dev/null; done
	sleep 1.5
done
sleep 4
check "every delivery was sent twice" "$([ $(( $(sub_stat duplicated) - dup_before )) -ge 10 ] && echo t)" t
check "each burst's messages stored" \
	"$(q $db "SELECT sum(messages_inserted) FROM gmail_ingest.sync_runs WHERE id > $before")" 30
check "no sync without a change (duplicates and stale ids ignored)" \
	"$(q $db "SELECT count(*) FROM gmail_ingest.sync_runs WHERE id > $before AND messages_inserted + messages_updated + messages_deleted = 0")" 0
check "at most one sync per burst and notification" \
	"$(q $db "SELECT count(*) <= 20 FROM gmail_ingest.sync_runs WHERE id > $before")" t
check "the duplicates were counted stale" \
	"$(q $db "SELECT sum(stale) > 0 FROM gmail_ingest.push_batches")" t
pubsub POST /admin/pubsub/faults "{\"subscription\":\"$sub\",\"duplicate\":0,\"reorder\":false}" >/dev/null

# --- 3. Bad notifications: acknowledged, counted, one WARNING each, the listener goes on.
bad_before=$(q $db "SELECT coalesce(sum(malformed), 0) || '/' || coalesce(sum(unknown_address), 0) FROM gmail_ingest.push_batches")
pubsub POST /admin/pubsub/publish "{\"topic\":\"$topic\",\"data\":\"%%% not base64 %%%\"}" >/dev/null
pubsub POST /admin/pubsub/publish "{\"topic\":\"$topic\",\"data\":\"$(printf 'not json' | base64)\"}" >/dev/null
pubsub POST /admin/pubsub/publish "{\"topic\":\"$topic\",\"json\":{\"historyId\":5}}" >/dev/null
pubsub POST /admin/pubsub/publish "{\"topic\":\"$topic\",\"json\":{\"emailAddress\":\"$prefix-0001@fleet.test\"}}" >/dev/null
pubsub POST /admin/pubsub/publish "{\"topic\":\"$topic\",\"json\":{\"emailAddress\":\"$prefix-0001@fleet.test\",\"historyId\":\"x1\"}}" >/dev/null
pubsub POST /admin/pubsub/publish "{\"topic\":\"$topic\",\"json\":[1,2]}" >/dev/null
pubsub POST /admin/pubsub/publish "{\"topic\":\"$topic\",\"json\":{\"emailAddress\":\"nobody-$tag@fleet.test\",\"historyId\":7}}" >/dev/null
member=$(printf '%s-%04d@fleet.test' "$prefix" 20)
mid=$(pubsub POST "/admin/mailboxes/$member/messages" '{}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
for _ in $(seq 1 100); do
	[ "$(q $db "SELECT count(*) FROM gmail_ingest.mail_messages WHERE provider_message_id = '$mid'")" = 1 ] && break
	sleep 0.1
done
check "a good notification after the bad ones still works" \
	"$(q $db "SELECT count(*) FROM gmail_ingest.mail_messages WHERE provider_message_id = '$mid'")" 1
sleep 0.5
check "6 malformed and 1 unknown address counted" \
	"$(q $db "SELECT (sum(malformed) - ${bad_before%/*}) || '/' || (sum(unknown_address) - ${bad_before#*/}) FROM gmail_ingest.push_batches")" "6/1"
check "all acknowledged" "$(sub_stat outstanding)/$(sub_stat backlog)" "0/0"
check "one WARNING per malformed notification" \
	"$(grep -c 'not a Gmail notification' "$OUT/listener.log" || true)" 6
check "the listener is still running" \
	"$(q $db "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gi_push_listener'")" 1

# --- 4. Watches: renewed before they lapse, lapsed ones left to polling, refusals recorded.
q $db "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE application_name = 'gi_push_worker'" >/dev/null
sleep 0.5
renew_mb=$(q $db "SELECT id FROM gmail_ingest.mailboxes WHERE provider_email = '$prefix-0030@fleet.test'")
lapse_mb=$(q $db "SELECT id FROM gmail_ingest.mailboxes WHERE provider_email = '$prefix-0031@fleet.test'")
refuse_mb=$(q $db "SELECT id FROM gmail_ingest.mailboxes WHERE provider_email = '$prefix-0032@fleet.test'")
turn() {	# one fleet turn of MAILBOX (as a worker's, its due time come); the outcome
	q $db "UPDATE gmail_ingest.mailboxes SET next_sync_at = now() WHERE id = $1" >/dev/null
	q $db "SELECT gmail_ingest._run_turn($1)"
}
watches_before=$(push_stat watch)
check "a turn renews no watch with more than 6 days left" "$(turn $renew_mb)/$(push_stat watch)" "synced/$watches_before"
# Six and a half days pass, on both clocks.
pubsub POST /admin/pubsub/clock '{"advance_ms":561600000}' >/dev/null
q $db "UPDATE gmail_ingest.mailboxes SET watch_expires_at = watch_expires_at - interval '6.5 days'" >/dev/null
check "a turn renews a watch with less than 6 days left" "$(turn $renew_mb)/$(push_stat watch)" "synced/$((watches_before + 1))"
double_now=$(pubsub GET /admin/pubsub/stats | python3 -c 'import json, sys; print(json.load(sys.stdin)["now_ms"])')
check "the renewal's expiration is 7 days ahead on the double's clock" \
	"$(q $db "SELECT abs(extract(epoch FROM watch_expires_at - to_timestamp($double_now / 1000.0 + 7 * 86400))) < 60 FROM gmail_ingest.mailboxes WHERE id = $renew_mb")" t
# (the turn before it synced the same unchanged mailbox without renewing)
check "the renewal's units (users.watch's cost) are counted in the turn's run" \
	"$(q $db "SELECT max(quota_units) - min(quota_units) FROM (SELECT quota_units FROM gmail_ingest.sync_runs WHERE mailbox_id = $renew_mb ORDER BY id DESC LIMIT 2) r")" \
	"$(python3 -c "import json, sys; print(json.loads(sys.argv[1])['costs']['watch'])" "$(pubsub GET /admin/config)")"
# A day more: the first watch would have lapsed; the renewed one publishes.
pubsub POST /admin/pubsub/clock '{"advance_ms":86400000}' >/dev/null
n0=$(push_stat notifications)
lapsed0=$(push_stat lapsed_changes)
mid=$(pubsub POST "/admin/mailboxes/$prefix-0030@fleet.test/messages" '{}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
mid2=$(pubsub POST "/admin/mailboxes/$prefix-0031@fleet.test/messages" '{}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
sleep 1
check "past the old expiration the renewed watch still publishes; the unrenewed one has lapsed" \
	"$(( $(push_stat notifications) - n0 ))/$(( $(push_stat lapsed_changes) - lapsed0 ))" "1/1"
check "the notified mailbox is due, the lapsed one is not" \
	"$(q $db "SELECT string_agg((next_sync_at <= now())::text, ',' ORDER BY id) FROM gmail_ingest.mailboxes WHERE id IN ($renew_mb, $lapse_mb)")" "true,false"
# Polling: the lapsed mailbox's interval comes round (its due time is moved to now).
check "polling syncs the lapsed mailbox" "$(turn $lapse_mb)" synced
check "and catches its new mail" "$(q $db "SELECT count(*) FROM gmail_ingest.mail_messages WHERE provider_message_id = '$mid2'")" 1
check "the lapsed watch was renewed by that turn" \
	"$(q $db "SELECT watch_expires_at > now() + interval '6 days' AND watch_error IS NULL FROM gmail_ingest.mailboxes WHERE id = $lapse_mb")" t
# A refused renewal: recorded in watch_error, a WARNING, the sync itself succeeds.
q $db "UPDATE gmail_ingest.mailboxes SET watch_topic = '$topic-closed', watch_expires_at = now() + interval '1 day' WHERE id = $refuse_mb" >/dev/null
watches_before=$(push_stat watch)
out=$(turn $refuse_mb 2>&1)
check "a refused renewal: the turn still synced" "$(grep -cx synced <<<"$out")" 1
check "a refused renewal: a WARNING naming the grant" \
	"$(grep -c 'renewing the watch of mailbox.*failed' <<<"$out")/$(grep -c 'gmail-api-push@system.gserviceaccount.com' <<<"$out")" "1/1"
check "a refused renewal: recorded in watch_error and mailbox_status" \
	"$(q $db "SELECT watch_error LIKE '%HTTP 403%' FROM gmail_ingest.mailbox_status WHERE mailbox_id = $refuse_mb")" t
check "a refused renewal is not tried again on the next turn" "$(turn $refuse_mb)/$(push_stat watch)" "synced/$watches_before"

# --- 5. unwatch_mailbox: users.stop, no more notifications.
stops=$(push_stat stop)
q $db "SELECT gmail_ingest.unwatch_mailbox($renew_mb)" >/dev/null
check "unwatch_mailbox: users.stop, the watch forgotten" \
	"$(( $(push_stat stop) - stops ))/$(q $db "SELECT watch_topic IS NULL AND watch_expires_at IS NULL FROM gmail_ingest.mailboxes WHERE id = $renew_mb")" "1/t"
n0=$(push_stat notifications)
pubsub POST "/admin/mailboxes/$prefix-0030@fleet.test/messages" '{}' >/dev/null
sleep 0.3
check "an unwatched mailbox publishes nothing" "$(( $(push_stat notifications) - n0 ))" 0

# --- 6. Pub/Sub failures: retried like Gmail's, the listener goes on.
pubsub POST /admin/pubsub/faults "{\"subscription\":\"$sub\",\"fail\":[503,503]}" >/dev/null
member=$(printf '%s-%04d@fleet.test' "$prefix" 31)	# its watch was renewed above
mid=$(pubsub POST "/admin/mailboxes/$member/messages" '{}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
PGAPPNAME=gi_push_worker psql -X -q -d $db -c "CALL gmail_ingest.run_due('30 seconds')" >"$OUT/worker3.log" 2>&1 &
for _ in $(seq 1 150); do
	[ "$(q $db "SELECT count(*) FROM gmail_ingest.mail_messages WHERE provider_message_id = '$mid'")" = 1 ] && break
	sleep 0.1
done
for _ in $(seq 1 100); do
	[ "$(sub_stat failed)/$(sub_stat outstanding)" = "2/0" ] && break
	sleep 0.1
done
check "two 503s from Pub/Sub: retried, the mail arrives, all acknowledged" \
	"$(sub_stat failed)/$(sub_stat outstanding)/$(q $db "SELECT count(*) FROM gmail_ingest.mail_messages WHERE provider_message_id = '$mid'")" "2/0/1"
q $db "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE application_name IN ('gi_push_listener', 'gi_push_worker')" >/dev/null
wait || true
check "no ERROR in the workers' or the listener's output" \
	"$(cat "$OUT"/worker*.log "$OUT/listener.log" | grep -v 'canceling statement due to user request\|terminating connection due to administrator command\|server closed the connection\|connection to server was lost\|This probably means\|before or while processing' | grep -c 'ERROR\|FATAL' || true)" 0

# --- 7. start_workers keeps the listener's job while a subscription is set.
q postgres "CREATE EXTENSION IF NOT EXISTS pg_cron" >/dev/null
q postgres "DROP EXTENSION IF EXISTS gmail_ingest CASCADE" >/dev/null
q postgres "CREATE EXTENSION gmail_ingest" >/dev/null
job="SELECT coalesce(string_agg(schedule || ' ' || command, '; '), 'none') FROM cron.job WHERE jobname = 'gmail_ingest_push'"
check "start_workers(2) with a subscription: the listener's job" \
	"$(q postgres "SELECT gmail_ingest.start_workers(2)" >/dev/null; q postgres "$job")" \
	"* * * * * CALL gmail_ingest.run_push('55 seconds')"
check "stop_workers removes it with the workers" "$(q postgres "SELECT gmail_ingest.stop_workers()")/$(q postgres "$job")" "3/none"
psql -X -q -d postgres -c "ALTER SYSTEM RESET gmail_ingest.pubsub_subscription" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.3
check "start_workers without a subscription: no listener" \
	"$(q postgres "SELECT gmail_ingest.start_workers(1)" >/dev/null; q postgres "$job")/$(q postgres "SELECT gmail_ingest.stop_workers()")" "none/1"
q postgres "DROP EXTENSION gmail_ingest" >/dev/null
finish
