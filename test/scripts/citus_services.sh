#!/usr/bin/env bash
# The 1.1 services on a Citus cluster (SPEC 7e with 7b, 7c, 7d): a
# coordinator and two workers (test/lib/citus_cluster.sh), the schema
# distributed.  Skips with one "# skipped" line when no Citus is installed.
#
#   - the object store: with blob_store = 's3' on every node, syncs started
#     on the coordinator run on the mailbox's worker and put every
#     attachment and raw message at its key (the S3 server's own SHA-256 of
#     each object against the rows); verify(deep) holds from the
#     coordinator; gc_objects finds nothing to remove; migrate_blobs moves
#     the bytes back into the distributed blobs table;
#   - push: the listener (run_push) on the coordinator makes the notified
#     mailboxes due (mailboxes is a reference table), acknowledges every
#     delivery, and run_due sessions on the worker nodes sync the new mail,
#     each on its own node, also with the listener running beside the
#     workers while mail arrives; set_schedule, pause_mailbox and
#     resume_mailbox work from the coordinator;
#   - pg_cron: start_workers on each worker node (cron.database_name is the
#     test database there) keeps run_due jobs that sync a fleet on both
#     nodes, each mailbox once, on its own node; stop_workers removes them.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"
. "$(dirname "$0")/../lib/citus_cluster.sh"

DB=gi_citus_svc
TAG=$(run_tag)
ORG=00000000-0000-0000-0000-0000000000c2
export CITUS_CRON_DB=$DB
citus_test_cluster $DB
OUT=$(mktemp -d "${TMPDIR:-/tmp}/gi_citus_svc.XXXXXX")
C=$CITUS_COORD
W="$CITUS_W1 $CITUS_W2"
ALL="$C $W"
# Citus propagates CREATE EXTENSION to the workers (a worker refuses it itself)
cq $C $DB "CREATE EXTENSION pg_cron" >/dev/null
check "pg_cron on every node" "$(for p in $ALL; do cq $p $DB "SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'"; done | tr -d '\n')" 111
cq $C $DB "CREATE EXTENSION gmail_ingest" >/dev/null
check "distribute(4)" "$(cq $C $DB "SELECT count(*) FROM gmail_ingest.distribute(4) WHERE citus_table_type <> 'local'" 2>&1)" 13
# on which node's group a mailbox's shards are
holder_of() { cq $C $DB "SELECT groupid FROM pg_dist_placement WHERE shardid = get_shard_id_for_distribution_column('gmail_ingest.sync_runs', $1::bigint)"; }
# runs of the given mailboxes (an id list query) not made on the node holding them
runs_elsewhere() {
	cq $C $DB "SELECT count(*) FROM gmail_ingest.sync_runs r
	             JOIN pg_dist_placement p ON p.shardid = get_shard_id_for_distribution_column('gmail_ingest.sync_runs', r.mailbox_id)
	            WHERE r.mailbox_id IN ($1) AND (p.groupid <> r.id >> 48 OR p.groupid = 0)"
}

# --- 1. the object store.  blob_store is a superuser setting; each node
# reads it for the syncs it runs (the s3_* settings are in every node's
# configuration, test/lib/env.sh).
for p in $ALL; do
	cq $p $DB "SET citus.enable_ddl_propagation = off; ALTER DATABASE $DB SET gmail_ingest.blob_store = 's3'; ALTER DATABASE $DB SET gmail_ingest.s3_prefix = 'citus-$TAG/'"
done
check "blob_store = 's3' on every node" "$(for p in $ALL; do cq $p $DB "SHOW gmail_ingest.blob_store"; done | tr '\n' ' ')" "s3 s3 s3 "
ids=()
for i in 1 2 3 4; do
	e=svc-$i-$TAG@example.com
	new_mailbox "$e" "\"seed\":$((90 + i)),\"threads\":5,\"messages\":12,\"days\":9,\"window_days\":7,\"attachments\":5"
	ids+=("$(cq $C $DB "SELECT gmail_ingest.add_mailbox('$ORG', '$e', 'rt-$e')")")
done
idlist=$(IFS=,; echo "${ids[*]}")
ok=0
for id in "${ids[@]}"; do
	[ "$(cq $C $DB "SELECT status FROM gmail_ingest.gmail_sync($id, 7)")" = succeeded ] && ok=$((ok + 1))
done
check "s3: four syncs from the coordinator" "$ok" 4
check "s3: each ran on the worker holding its mailbox" "$(runs_elsewhere "$idlist")" 0
check "s3: the mailboxes are on both workers" \
	"$(for id in "${ids[@]}"; do holder_of $id; done | sort -u | wc -l)" 2
expected=$(cq $C $DB "SELECT 'citus-$TAG/' || a.storage_path || ' ' || a.sha256 FROM gmail_ingest.mail_attachments a WHERE a.mailbox_id IN ($idlist)
                      UNION
                      SELECT format('citus-$TAG/%s/%s/raw/%s.eml', '$ORG', m.mailbox_id, m.raw_sha256) || ' ' || m.raw_sha256
                        FROM gmail_ingest.mail_messages m WHERE m.mailbox_id IN ($idlist)" | sort)
stored=$(gi_s3 GET "/admin/objects?prefix=citus-$TAG/" |
	python3 -c 'import json,sys; [print(o["key"], o["sha256"]) for o in json.load(sys.stdin)]' | sort)
msgs=$(cq $C $DB "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id IN ($idlist)")
check "s3: a raw message per message and the attachments to store" \
	"$([ "$msgs" -gt 0 ] && [ "$(echo "$expected" | grep -c .)" -gt "$msgs" ] && echo yes)" yes
check "s3: every object at its key with the right bytes (the server's SHA-256)" "$(echo "$stored" | md5sum)" "$(echo "$expected" | md5sum)"
check "s3: the objects rows, in the shards, name each" \
	"$(cq $C $DB "SELECT count(*) FROM gmail_ingest.objects WHERE mailbox_id IN ($idlist)")" "$(echo "$expected" | grep -c .)"
check "s3: the blobs rows hold no bytes" \
	"$(cq $C $DB "SELECT count(*) FROM gmail_ingest.blobs WHERE mailbox_id IN ($idlist) AND data IS NOT NULL")" 0
deep=0
for id in "${ids[@]}"; do
	[ "$(cq $C $DB "SELECT coalesce(string_agg(check_name || ': ' || detail, '; '), 't') FROM gmail_ingest.verify($id, true) WHERE NOT ok")" = t ] && deep=$((deep + 1))
done
check "s3: verify(deep) from the coordinator, each mailbox" "$deep" 4
check "s3: gc_objects finds nothing to remove" \
	"$(cq $C $DB "SELECT count(*) FROM gmail_ingest.gc_objects(true)" 2>&1)" 0
out=$(psql -X -q -h 127.0.0.1 -p $C -d $DB -c "CALL gmail_ingest.migrate_blobs('database', 20)" 2>&1)
check "migrate_blobs('database') from the coordinator" "$(grep -c ERROR <<<"$out")" 0
check "... every blob's bytes back in the distributed table" \
	"$(cq $C $DB "SELECT count(*) FILTER (WHERE data IS NULL) || '/' || count(*) FROM gmail_ingest.blobs WHERE mailbox_id IN ($idlist)")" \
	"0/$(cq $C $DB "SELECT count(*) FROM gmail_ingest.blobs WHERE mailbox_id IN ($idlist)")"
for p in $ALL; do
	cq $p $DB "SET citus.enable_ddl_propagation = off; ALTER DATABASE $DB RESET gmail_ingest.blob_store" >/dev/null
done
deep=0
for id in "${ids[@]}"; do
	[ "$(cq $C $DB "SELECT coalesce(string_agg(check_name || ': ' || detail, '; '), 't') FROM gmail_ingest.verify($id, true) WHERE NOT ok")" = t ] && deep=$((deep + 1))
done
check "verify(deep) of each mailbox after the migration" "$deep" 4

# --- 2. push: the listener on the coordinator, the syncs on the workers.
topic=projects/gi-test/topics/citus-$TAG
sub=projects/gi-test/subscriptions/citus-$TAG
sa=citus-push-$TAG@gi-test.iam.gserviceaccount.com
sub_stat() { gi_double GET /admin/pubsub/stats | python3 -c "import json, sys; print(json.load(sys.stdin)['subscriptions']['$sub']['$1'])"; }
pubsub_listener_account "$OUT" "$sa" "$topic" "$sub" 3
check "push: the listener's service account registered (a reference table)" \
	"$(psql -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $C -d $DB -v key="$(cat "$OUT/key.json")" <<<"SELECT gmail_ingest.add_service_account('$ORG', :'key') > 0")" t
cq $C $DB "ALTER SYSTEM SET gmail_ingest.pubsub_subscription = '$sub'" >/dev/null
cq $C $DB "ALTER SYSTEM SET gmail_ingest.pubsub_base_url = '$DOUBLE_URL'" >/dev/null
cq $C $DB "ALTER SYSTEM SET gmail_ingest.pubsub_service_account = '$sa'" >/dev/null
cq $C $DB "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 1 50); do
	[ "$(cq $C $DB "SHOW gmail_ingest.pubsub_subscription")" = "$sub" ] && break
	sleep 0.1
done
watched=$(cq $C $DB "SELECT count(*) FILTER (WHERE gmail_ingest.watch_mailbox(m.id, '$topic') > now()) FROM gmail_ingest.mailboxes m WHERE m.id IN ($idlist)" 2>&1)
check "push: watch_mailbox from the coordinator, each mailbox" "$watched" 4
# as after a fleet turn: due one interval on, so only a notification brings them back
check "set_schedule from the coordinator: the next sync one hour after the last" \
	"$(for id in "${ids[@]}"; do cq $C $DB "SELECT gmail_ingest.set_schedule($id, '1 hour') = last_synced_at + interval '1 hour'
	                                         FROM gmail_ingest.mailboxes WHERE id = $id" 2>&1; done | tr '\n' ' ')" "t t t t "
check "pause_mailbox and resume_mailbox from the coordinator" \
	"$(cq $C $DB "SELECT gmail_ingest.pause_mailbox(${ids[0]})" 2>&1; cq $C $DB "SELECT paused FROM gmail_ingest.mailboxes WHERE id = ${ids[0]}";
	   cq $C $DB "SELECT gmail_ingest.resume_mailbox(${ids[0]})" 2>&1; cq $C $DB "SELECT paused FROM gmail_ingest.mailboxes WHERE id = ${ids[0]}")" \
	"$(printf '\nt\n\nf')"
cq $C $DB "UPDATE gmail_ingest.mailboxes SET next_sync_at = now() + interval '1 hour' WHERE id IN ($idlist)" >/dev/null
last_run=$(cq $C $DB "SELECT max(started_at) FROM gmail_ingest.sync_runs WHERE mailbox_id IN ($idlist)")
for i in 1 2 3 4; do $DQ add "svc-$i-$TAG@example.com" >/dev/null; done
out=$(psql -X -q -h 127.0.0.1 -p $C -d $DB -c "CALL gmail_ingest.run_push('4 seconds')" 2>&1)
check "push: run_push on the coordinator raised nothing" "$(grep -c -e ERROR -e WARNING <<<"$out")" 0
check "push: the four notified mailboxes are due" \
	"$(cq $C $DB "SELECT count(*) FROM gmail_ingest.mailboxes WHERE id IN ($idlist) AND next_sync_at <= now() AND push_history_id > history_id")" 4
check "push: the batches counted them, all acknowledged" \
	"$(cq $C $DB "SELECT sum(due) || '/' || sum(received - acknowledged) FROM gmail_ingest.push_batches")" "4/0"
check "push: nothing outstanding at Pub/Sub" "$(sub_stat outstanding)/$(sub_stat backlog)" "0/0"
pids=()
for p in $W; do
	psql -X -q -h 127.0.0.1 -p $p -d $DB -c "CALL gmail_ingest.run_due('5 seconds')" >"$OUT/run_due-$p.log" 2>&1 &
	pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
check "push: the workers' run_due raised nothing" "$(cat "$OUT"/run_due-*.log | grep -c ERROR)" 0
check "push: each notified mailbox synced its new message" \
	"$(cq $C $DB "SELECT count(*) FROM gmail_ingest.sync_runs WHERE mailbox_id IN ($idlist) AND started_at > '$last_run'
	              AND mode = 'incremental' AND status = 'succeeded' AND messages_inserted = 1")" 4
check "push: each on the worker holding it" "$(runs_elsewhere "$idlist")" 0
# how many of the four mailboxes hold exactly Gmail's 7-day window
holding_window() {
	local i n=0
	for i in 1 2 3 4; do
		[ "$(cq $C $DB "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = ${ids[$((i - 1))]}")" = \
			"$($DQ window-count "svc-$i-$TAG@example.com" 7)" ] && n=$((n + 1))
	done
	echo $n
}
check "push: each mailbox holds Gmail's window" "$(holding_window)" 4
# The listener beside the workers, mail arriving while the mailboxes sync
# (200 ms per Gmail answer): the listener's writes of a mailbox may meet a
# turn's on another node.
for i in 1 2 3 4; do $DQ mailbox-config "svc-$i-$TAG@example.com" '{"latency_ms":200}' >/dev/null; done
pids=()
psql -X -q -h 127.0.0.1 -p $C -d $DB -c "CALL gmail_ingest.run_push('16 seconds')" >"$OUT/run_push.log" 2>&1 &
pids+=($!)
for p in $W; do
	psql -X -q -h 127.0.0.1 -p $p -d $DB -c "CALL gmail_ingest.run_due('16 seconds')" >"$OUT/run_due2-$p.log" 2>&1 &
	pids+=($!)
done
for round in 1 2 3 4 5; do
	for i in 1 2 3 4; do $DQ add "svc-$i-$TAG@example.com" >/dev/null; done
	sleep 1.5
done
for pid in "${pids[@]}"; do wait "$pid"; done
check "push beside the workers: no error on any node" "$(cat "$OUT"/run_push.log "$OUT"/run_due2-*.log | grep -c ERROR)" 0
check "push beside the workers: each mailbox holds Gmail's window (5 new messages each)" "$(holding_window)" 4
check "push beside the workers: every delivery acknowledged" \
	"$(cq $C $DB "SELECT sum(received - acknowledged) FROM gmail_ingest.push_batches")/$(sub_stat outstanding)" "0/0"
for i in 1 2 3 4; do $DQ mailbox-config "svc-$i-$TAG@example.com" '{"latency_ms":null}' >/dev/null; done
cq $C $DB "ALTER SYSTEM RESET gmail_ingest.pubsub_subscription" >/dev/null
cq $C $DB "SELECT pg_reload_conf()" >/dev/null

# --- 3. pg_cron: start_workers on each worker node.  pg_cron 1.4 starts
# jobs at minute boundaries: the fleet is synced within about two minutes.
prefix=cs$TAG
PGHOST=127.0.0.1 PGPORT=$C new_fleet $DB 12 "$prefix" '{"messages":4,"threads":2,"attachments":1,"days":5,"window_days":7}'
fleet="SELECT id FROM gmail_ingest.mailboxes WHERE provider_email LIKE '$prefix-%'"
started=$(for p in $W; do cq $p $DB "SELECT gmail_ingest.start_workers(2)" 2>&1; done | tr '\n' ' ')
check "start_workers(2) on each worker node" "$started" "2 2 "
check "each worker node holds its own two jobs" \
	"$(for p in $W; do cq $p $DB "SELECT count(*) FROM cron.job WHERE jobname LIKE 'gmail_ingest_worker_%'"; done | tr '\n' ' ')" "2 2 "
synced=0
for _ in $(seq 1 150); do
	synced=$(cq $C $DB "SELECT count(DISTINCT r.mailbox_id) FROM gmail_ingest.sync_runs r WHERE r.mailbox_id IN ($fleet) AND r.status = 'succeeded'")
	[ "$synced" = 12 ] && break
	sleep 1
done
check "pg_cron's workers synced the fleet" "$synced" 12
check "... each mailbox once" \
	"$(cq $C $DB "SELECT count(*) FROM gmail_ingest.sync_runs WHERE mailbox_id IN ($fleet)")" 12
check "... on the worker holding it" "$(runs_elsewhere "$fleet")" 0
check "... both worker nodes' jobs ran" \
	"$(for p in $W; do cq $p $DB "SELECT count(*) > 0 FROM cron.job_run_details d JOIN cron.job j USING (jobid) WHERE j.jobname LIKE 'gmail_ingest_worker_%'"; done | tr '\n' ' ')" "t t "
stopped=$(for p in $W; do cq $p $DB "SELECT gmail_ingest.stop_workers()"; done | tr '\n' ' ')
# every node's copy of the reference table agrees after the nodes' concurrent writes
replicas=$(citus_replica_digests $DB gmail_ingest.mailboxes)
check "the three copies of mailboxes are identical" "$(sort -u <<<"$replicas" | sed 's/:.*//') $(wc -l <<<"$replicas")" \
	"$(cq $C $DB "SELECT count(*) FROM gmail_ingest.mailboxes") 3"
check "stop_workers on each worker node removes its two jobs" "$stopped" "2 2 "
for p in $W; do
	cq $p $DB "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'CALL gmail_ingest.run_due%' AND pid <> pg_backend_pid()" >/dev/null
done

rm -rf "$OUT"
finish
