#!/usr/bin/env bash
# The extension on a Citus cluster (SPEC 7e): a coordinator and two workers
# on loopback ports (test/lib/citus_cluster.sh), each preloading citus
# before gmail_ingest.  Skips with one "# skipped" line (run_tests.sh shows
# it) when no Citus is installed for
# the PostgreSQL in use (the project never builds one).
#
#   - CREATE EXTENSION gmail_ingest on the coordinator reaches the workers;
#   - six mailboxes of the double are synced while the tables are still
#     local (a single-node database), then distribute(4) makes mailboxes and
#     the service accounts reference tables and every data table distributed
#     by mailbox_id, co-located: every row is kept (digests of every data
#     table, the mailboxes and the ledger equal before and after), the
#     mailboxes' rows are in shards on both workers, a second call changes
#     nothing;
#   - SELECT gmail_sync(id, 7) on the coordinator runs on the worker holding
#     the mailbox (the run's id comes from that node's range): incremental
#     syncs add the new mail, a forced full re-run adds no row, each mailbox
#     holds Gmail's window; SELECT * FROM gmail_sync() is delegated too,
#     and a sync the coordinator would run itself (in a transaction block)
#     is refused with 0A000, nothing written;
#   - the fleet: 60 mailboxes, run_due workers on both worker nodes and the
#     coordinator: every mailbox synced once, on the node holding it, none
#     twice at once;
#   - every foreign key is back and holds on the shards (a row pointing into
#     another mailbox is refused), the natural-key uniques refuse a
#     duplicate, the ledger refuses UPDATE, DELETE and TRUNCATE;
#   - a revoked grant: the delegated sync records its failed run, sync.failed
#     and reauthorize on the mailbox's worker, and stores no mail;
#   - CALL gmail_backfill(id, 7, 10) on the coordinator is delegated: every
#     step runs on the worker holding the mailbox, and it completes;
#   - a 1.0 database (two mailboxes sharing a content) updated to 1.1 on
#     the coordinator, then distributed, keeps every row, the ledger, and a
#     copy of each blob per mailbox referring to it;
#   - a tenant role with the README's policies sees exactly its
#     organisation's mailboxes, threads, messages, attachments, blobs and
#     ledger through the coordinator;
#   - from the coordinator: verify() holds for each mailbox, mailbox_status
#     and fleet_status answer, add_mailbox registers a new mailbox.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"
. "$(dirname "$0")/../lib/citus_cluster.sh"

DB=gi_citus
TAG=$(run_tag)
ORG=00000000-0000-0000-0000-0000000000c1
citus_test_cluster $DB
C=$CITUS_COORD
check "a coordinator and two workers" \
	"$(cq $C $DB "SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND groupid <> 0")" 2
check "CREATE EXTENSION gmail_ingest on the coordinator" "$(cq $C $DB "CREATE EXTENSION gmail_ingest" 2>&1)" ""
version=$(sed -n 's/^EXTVERSION *= *//p' Makefile)
for p in $CITUS_W1 $CITUS_W2; do
	check "the extension reached the worker on port $p" \
		"$(cq $p $DB "SELECT extversion FROM pg_extension WHERE extname = 'gmail_ingest'")" "$version"
done
check "distribute(0) is refused (22023)" \
	"$(psql -X -q -At -h 127.0.0.1 -p $C -d $DB -v VERBOSITY=verbose -c "SELECT * FROM gmail_ingest.distribute(0)" 2>&1 | grep -o '22023')" 22023

# --- six mailboxes synced while the tables are local.
ids=()
for i in 1 2 3 4 5 6; do
	e=citus-$i-$TAG@example.com
	new_mailbox "$e" "\"seed\":$((70 + i)),\"threads\":8,\"messages\":24,\"days\":9,\"window_days\":7,\"attachments\":6"
	ids+=("$(cq $C $DB "SELECT gmail_ingest.add_mailbox('$ORG', '$e', 'rt-$e')")")
done
synced=0
for id in "${ids[@]}"; do
	[ "$(cq $C $DB "SELECT status FROM gmail_ingest.gmail_sync($id, 7)")" = succeeded ] && synced=$((synced + 1))
done
check "six first syncs before distribute()" "$synced" 6
PGHOST=127.0.0.1 PGPORT=$C install_digests $DB
# Citus plans no query of an SQL function with parameters: the digests'
# bodies are run as plain queries, their parameters written in.
body() { cq $C $DB "SELECT prosrc FROM pg_proc WHERE proname = '$1'"; }
db_digest=$(body gi_test_db_digest | sed -E 's/\bper_content\b/false/g')
mb_digest() { body gi_test_digest | sed -E "s/\bmb\b/$1/g; s/\bexcept_thread\b/NULL::text/g"; }
ledger_digest="SELECT count(*) || ':' || md5(string_agg(to_jsonb(l)::text, E'\n' ORDER BY l.mailbox_id, l.id)) FROM gmail_ingest.ledger l"
before_rows=$(cq $C $DB "$db_digest")
before_ledger=$(cq $C $DB "$ledger_digest")
before_each=$(for id in "${ids[@]}"; do cq $C $DB "$(mb_digest $id)"; done)

# --- distribute()
kinds=$(cq $C $DB "SELECT citus_table_type, count(*) FROM gmail_ingest.distribute(4) GROUP BY 1 ORDER BY 1" 2>&1)
check "distribute(4): 10 distributed, 1 local, 3 reference tables" "$(echo $kinds)" \
	"distributed by mailbox_id|10 local|1 reference|3"
check "one co-location group for the data tables, 4 shards each" \
	"$(cq $C $DB "SELECT count(DISTINCT p.colocationid) || ' ' || count(*) || ' ' || min(c.shards) || ' ' || max(c.shards)
	              FROM pg_dist_partition p
	              JOIN (SELECT logicalrelid, count(*) AS shards FROM pg_dist_shard GROUP BY 1) c USING (logicalrelid)
	             WHERE p.partmethod = 'h'")" "1 10 4 4"
check "every row kept" "$(cq $C $DB "$db_digest")" "$before_rows"
check "ledger kept" "$(cq $C $DB "$ledger_digest")" "$before_ledger"
check "each mailbox's threads, messages, attachments and blobs kept" \
	"$(for id in "${ids[@]}"; do cq $C $DB "$(mb_digest $id)"; done)" "$before_each"
check "the coordinator keeps no copy of the rows (its tables are empty shells)" \
	"$(cq $C $DB "SELECT sum(pg_relation_size(('gmail_ingest.' || t)::regclass))
	              FROM unnest('{mail_threads,mail_messages,mail_attachments,blobs,ledger,sync_runs}'::text[]) t")" 0
ports=$(for id in "${ids[@]}"; do
	cq $C $DB "SELECT n.nodeport FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid)
	            WHERE p.shardid = get_shard_id_for_distribution_column('gmail_ingest.mail_messages', $id::bigint)"
done | sort -u | tr '\n' ' ')
check "the six mailboxes live on both workers" "$ports" "$(printf '%s\n' $CITUS_W1 $CITUS_W2 | sort | tr '\n' ' ')"
for p in $CITUS_W1 $CITUS_W2; do
	check "messages stored in the shards of the worker on port $p" \
		"$(cq $p $DB "SET citus.override_table_visibility TO off;
		              SELECT sum(pg_relation_size(oid)) > 0 FROM pg_class
		               WHERE relnamespace = 'gmail_ingest'::regnamespace AND relkind = 'r'
		                 AND relname ~ '^mail_messages_[0-9]+$'")" t
done
again=$(cq $C $DB "SELECT string_agg(table_name || '=' || citus_table_type, ',' ORDER BY table_name) FROM gmail_ingest.distribute(4)" 2>&1)
check "a second distribute() changes nothing" \
	"$(echo "$again" | tr ',' '\n' | grep -c '=distributed by mailbox_id') $(cq $C $DB "$db_digest")" "10 $before_rows"

# --- syncs on the cluster: SELECT gmail_sync(id, ...) on the coordinator runs
# on the node holding the mailbox.  Each node draws ids from its own range
# (Citus: the node's group id in the top 16 bits), so a run's id says which
# node inserted it.
latest_run="SELECT r.id >> 48 AS grp, r.mode, r.status, r.messages_inserted FROM gmail_ingest.sync_runs r"
ran_on_holder=0
incremental=0
for i in 0 1 2 3 4 5; do
	id=${ids[$i]}
	$DQ add "citus-$((i + 1))-$TAG@example.com" >/dev/null
	cq $C $DB "SELECT gmail_ingest.gmail_sync($id, 7)" >/dev/null
	holder=$(cq $C $DB "SELECT n.groupid FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid)
	                     WHERE p.shardid = get_shard_id_for_distribution_column('gmail_ingest.sync_runs', $id::bigint)")
	run=$(cq $C $DB "SELECT grp || ' ' || mode || ' ' || status || ' ' || messages_inserted FROM ($latest_run
	                  WHERE r.mailbox_id = $id ORDER BY r.started_at DESC LIMIT 1) x")
	[ "${run%% *}" = "$holder" ] && [ "$holder" != 0 ] && ran_on_holder=$((ran_on_holder + 1))
	[ "${run#* }" = "incremental succeeded 1" ] && incremental=$((incremental + 1))
done
check "six incremental syncs on the cluster, one new message each" "$incremental" 6
check "each ran on the worker holding its mailbox" "$ran_on_holder" 6
rerun=0
for id in "${ids[@]}"; do
	cq $C $DB "SELECT gmail_ingest.gmail_sync($id, 7, true)" >/dev/null
	[ "$(cq $C $DB "SELECT mode || ' ' || status || ' ' || messages_inserted || ' ' || threads_inserted
	                 || ' ' || attachments_inserted FROM gmail_ingest.sync_runs
	                 WHERE mailbox_id = $id ORDER BY started_at DESC LIMIT 1")" = "full succeeded 0 0 0" ] && rerun=$((rerun + 1))
done
check "a forced full re-run of each adds no row" "$rerun" 6
counts=0
for i in 0 1 2 3 4 5; do
	[ "$(cq $C $DB "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = ${ids[$i]}")" = "$($DQ window-count "citus-$((i + 1))-$TAG@example.com" 7)" ] &&
		counts=$((counts + 1))
done
check "each mailbox holds Gmail's window" "$counts" 6
# SELECT * FROM gmail_sync() is delegated too; inside a transaction block
# Citus runs a function where it is called, and a sync there would take its
# sync lock beside a delegated one on the worker: refused with 0A000 and a
# hint, nothing written.
holder0=$(cq $C $DB "SELECT groupid FROM pg_dist_placement WHERE shardid = get_shard_id_for_distribution_column('gmail_ingest.sync_runs', ${ids[0]}::bigint)")
check "SELECT * FROM gmail_sync() on the coordinator runs on the mailbox's worker" \
	"$(cq $C $DB "SELECT (id >> 48) || ' ' || status FROM gmail_ingest.gmail_sync(${ids[0]}, 7)")" "$holder0 succeeded"
runs_before=$(cq $C $DB "SELECT count(*) FROM gmail_ingest.sync_runs WHERE mailbox_id = ${ids[0]}")
in_block=$(psql -X -q -At -h 127.0.0.1 -p $C -d $DB -v VERBOSITY=verbose 2>&1 <<SQL
BEGIN;
SELECT count(*) FROM gmail_ingest.mailboxes;
SELECT status FROM gmail_ingest.gmail_sync(${ids[0]}, 7);
ROLLBACK;
SQL
)
check "in a transaction block on the coordinator: refused (0A000)" "$(grep -o '0A000' <<<"$in_block" | head -1)" 0A000
check "... with nothing written" "$(cq $C $DB "SELECT count(*) FROM gmail_ingest.sync_runs WHERE mailbox_id = ${ids[0]}")" "$runs_before"
for p in $CITUS_W1 $CITUS_W2; do
	check "the worker on port $p ran gmail_sync itself" \
		"$(cq $p $DB "SELECT count(*) > 0 FROM gmail_ingest.sync_runs WHERE id >> 48 = (SELECT groupid FROM pg_dist_local_group)")" t
done

# --- the fleet on the cluster: 60 mailboxes, two run_due workers on each
# worker node and one on the coordinator (which holds no shard).  Each
# node's workers claim only the mailboxes whose shards it holds.
prefix=cf$TAG
PGHOST=127.0.0.1 PGPORT=$C new_fleet $DB 60 "$prefix" '{"messages":4,"threads":2,"attachments":1,"days":5,"window_days":7}'
fleet="SELECT id FROM gmail_ingest.mailboxes WHERE provider_email LIKE '$prefix-%'"
check "60 fleet mailboxes registered" "$(cq $C $DB "SELECT count(*) FROM ($fleet) f")" 60
pids=()
for p in $CITUS_W1 $CITUS_W1 $CITUS_W2 $CITUS_W2 $C; do
	psql -X -q -h 127.0.0.1 -p $p -d $DB -c "CALL gmail_ingest.run_due('12 seconds')" >"$GI_WORK/citus-run_due-$p-$RANDOM.log" 2>&1 &
	pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
check "the workers raised no error" "$(cat "$GI_WORK"/citus-run_due-*.log | grep -c 'ERROR')" 0
check "every fleet mailbox synced once, successfully" \
	"$(cq $C $DB "SELECT count(*) FILTER (WHERE n = 1 AND ok = 1) || '/' || count(*) FROM (
	              SELECT f.id, count(r.id) AS n, count(r.id) FILTER (WHERE r.status = 'succeeded') AS ok
	                FROM ($fleet) f LEFT JOIN gmail_ingest.sync_runs r ON r.mailbox_id = f.id GROUP BY f.id) x")" "60/60"
check "none synced twice at once" \
	"$(cq $C $DB "SELECT count(*) FROM gmail_ingest.sync_runs a JOIN gmail_ingest.sync_runs b
	              ON b.mailbox_id = a.mailbox_id AND b.id <> a.id
	             WHERE a.mailbox_id IN ($fleet) AND a.started_at < b.finished_at AND b.started_at < a.finished_at")" 0
check "each fleet mailbox synced on the worker holding it" \
	"$(cq $C $DB "SELECT count(*) FROM gmail_ingest.sync_runs r
	               JOIN pg_dist_placement p ON p.shardid = get_shard_id_for_distribution_column('gmail_ingest.sync_runs', r.mailbox_id)
	              WHERE r.mailbox_id IN ($fleet) AND p.groupid = r.id >> 48 AND p.groupid <> 0")" 60
check "both worker nodes synced part of the fleet" \
	"$(cq $C $DB "SELECT count(DISTINCT r.id >> 48) FROM gmail_ingest.sync_runs r WHERE r.mailbox_id IN ($fleet)")" 2
check "fleet_status from the coordinator: nothing due" \
	"$(cq $C $DB "SELECT due_now FROM gmail_ingest.fleet_status")" 0
# every node's copy of the reference table agrees after the nodes' concurrent writes
replicas=$(citus_replica_digests $DB gmail_ingest.mailboxes)
check "the three copies of mailboxes are identical" "$(sort -u <<<"$replicas" | sed 's/:.*//') $(wc -l <<<"$replicas")" \
	"$(cq $C $DB "SELECT count(*) FROM gmail_ingest.mailboxes") 3"

# --- the keys hold on the cluster.
fks=$(cq $C $DB "SELECT count(*) FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
                  WHERE c.contype = 'f' AND r.relnamespace = 'gmail_ingest'::regnamespace AND r.relname !~ '_[0-9]+$'")
check "the 15 foreign keys are back" "$fks" 15
a=${ids[0]}
b=${ids[1]}
out=$(cq $C $DB "INSERT INTO gmail_ingest.mail_messages (mailbox_id, provider_message_id, thread_id, provider_thread_id, internal_date)
                 SELECT $a, 'x-$TAG', id, provider_thread_id, now() FROM gmail_ingest.mail_threads WHERE mailbox_id = $b LIMIT 1" 2>&1)
check "a message pointing at another mailbox's thread is refused (23503)" "$(grep -c 'violates foreign key' <<<"$out")" 1
out=$(cq $C $DB "INSERT INTO gmail_ingest.mail_messages (mailbox_id, provider_message_id, thread_id, provider_thread_id, internal_date)
                 SELECT mailbox_id, provider_message_id, thread_id, provider_thread_id, internal_date
                   FROM gmail_ingest.mail_messages WHERE mailbox_id = $a LIMIT 1" 2>&1)
check "a duplicate (mailbox_id, provider_message_id) is refused" "$(grep -c 'duplicate key' <<<"$out")" 1
before_ledger=$(cq $C $DB "$ledger_digest")
for stmt in "UPDATE gmail_ingest.ledger SET event = event WHERE mailbox_id = $a" \
	"DELETE FROM gmail_ingest.ledger WHERE mailbox_id = $a" "TRUNCATE gmail_ingest.ledger"; do
	out=$(cq $C $DB "$stmt" 2>&1)
	check "the ledger refuses ${stmt%% *}" "$(grep -c 'append-only' <<<"$out")" 1
done
check "ledger intact after the refusals" "$(cq $C $DB "$ledger_digest")" "$before_ledger"

# --- read from the coordinator as on one node.
ok=0
for id in "${ids[@]}"; do
	[ "$(PGHOST=127.0.0.1 PGPORT=$C verify_ok $DB $id)" = t ] && ok=$((ok + 1))
done
check "verify() holds for the six mailboxes from the coordinator" "$ok" 6
check "mailbox_status from the coordinator" \
	"$(cq $C $DB "SELECT count(*) FILTER (WHERE last_run_status = 'succeeded' AND messages > 0) FROM gmail_ingest.mailbox_status")" 66
check "fleet_status from the coordinator" "$(cq $C $DB "SELECT mailboxes FROM gmail_ingest.fleet_status" 2>&1)" 66
# --- tenant isolation through the coordinator, with the README's policies
# (no subquery; the organisation propagated to the workers by SET LOCAL).
cq $C $DB "CREATE ROLE gi_citus_tenant LOGIN" >/dev/null
psql -X -q -h 127.0.0.1 -p $C -d $DB -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE FUNCTION public.gi_citus_tenant_mailbox(mailbox_id bigint) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET citus.allow_nested_distributed_execution = on AS $f$
	SELECT EXISTS (SELECT 1 FROM gmail_ingest.mailboxes m
	                WHERE m.id = mailbox_id AND m.org_id = current_setting('app.org_id')::uuid)
$f$;
REVOKE ALL ON FUNCTION public.gi_citus_tenant_mailbox(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.gi_citus_tenant_mailbox(bigint) TO gi_citus_tenant;
GRANT USAGE ON SCHEMA gmail_ingest TO gi_citus_tenant;
GRANT SELECT ON gmail_ingest.mailboxes, gmail_ingest.mail_threads, gmail_ingest.mail_messages,
                gmail_ingest.mail_attachments, gmail_ingest.blobs, gmail_ingest.ledger TO gi_citus_tenant;
CREATE POLICY org ON gmail_ingest.mailboxes FOR SELECT TO gi_citus_tenant
    USING (org_id = current_setting('app.org_id')::uuid);
CREATE POLICY org ON gmail_ingest.mail_threads FOR SELECT TO gi_citus_tenant
    USING (public.gi_citus_tenant_mailbox(mailbox_id));
CREATE POLICY org ON gmail_ingest.mail_messages FOR SELECT TO gi_citus_tenant
    USING (public.gi_citus_tenant_mailbox(mailbox_id));
CREATE POLICY org ON gmail_ingest.mail_attachments FOR SELECT TO gi_citus_tenant
    USING (public.gi_citus_tenant_mailbox(mailbox_id));
CREATE POLICY org ON gmail_ingest.blobs FOR SELECT TO gi_citus_tenant
    USING (public.gi_citus_tenant_mailbox(mailbox_id));
CREATE POLICY org ON gmail_ingest.ledger FOR SELECT TO gi_citus_tenant
    USING (public.gi_citus_tenant_mailbox(mailbox_id));
SQL
tenant_counts="SELECT (SELECT count(*) FROM gmail_ingest.mailboxes) || ' ' || (SELECT count(*) FROM gmail_ingest.mail_threads)
  || ' ' || (SELECT count(*) FROM gmail_ingest.mail_messages) || ' ' || (SELECT count(*) FROM gmail_ingest.mail_attachments)
  || ' ' || (SELECT count(*) FROM gmail_ingest.blobs) || ' ' || (SELECT count(*) FROM gmail_ingest.ledger)"
org_counts=$(cq $C $DB "SELECT (SELECT count(*) FROM gmail_ingest.mailboxes WHERE org_id = '$ORG')
  || ' ' || (SELECT count(*) FROM gmail_ingest.mail_threads WHERE mailbox_id IN (SELECT id FROM gmail_ingest.mailboxes WHERE org_id = '$ORG'))
  || ' ' || (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id IN (SELECT id FROM gmail_ingest.mailboxes WHERE org_id = '$ORG'))
  || ' ' || (SELECT count(*) FROM gmail_ingest.mail_attachments WHERE mailbox_id IN (SELECT id FROM gmail_ingest.mailboxes WHERE org_id = '$ORG'))
  || ' ' || (SELECT count(*) FROM gmail_ingest.blobs WHERE mailbox_id IN (SELECT id FROM gmail_ingest.mailboxes WHERE org_id = '$ORG'))
  || ' ' || (SELECT count(*) FROM gmail_ingest.ledger WHERE mailbox_id IN (SELECT id FROM gmail_ingest.mailboxes WHERE org_id = '$ORG'))")
seen=$(psql -X -q -At -h 127.0.0.1 -p $C -d $DB 2>&1 <<SQL
SET citus.propagate_set_commands = 'local';
BEGIN;
SET LOCAL ROLE gi_citus_tenant;
SET LOCAL app.org_id = '$ORG';
$tenant_counts;
COMMIT;
SQL
)
check "a tenant sees exactly its organisation's rows through the coordinator" "$seen" "$org_counts"
check "the other organisation (the fleet) has rows the tenant does not see" \
	"$(cq $C $DB "SELECT count(*) > 0 FROM gmail_ingest.mail_messages WHERE mailbox_id IN ($fleet)")" t

# --- a 1.0 database, updated to 1.1, then distributed.  The 1.1 library
# syncs no 1.0 schema, so 1.0's rows are written as a 1.0 sync leaves
# them: two mailboxes sharing an attachment's content (one blobs row in
# 1.0, one per mailbox in 1.1).
D10=gi_citus10
citus_cluster_db $D10 || echo "not ok - a second database on the cluster"
cq $C $D10 "CREATE EXTENSION gmail_ingest VERSION '1.0'" >/dev/null
psql -X -q -h 127.0.0.1 -p $C -d $D10 -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
INSERT INTO gmail_ingest.mailboxes (org_id, provider_email, history_id)
VALUES ('00000000-0000-0000-0000-0000000000a1', 'one@example.com', 100),
       ('00000000-0000-0000-0000-0000000000a1', 'two@example.com', 200);
INSERT INTO gmail_ingest.blobs (sha256, size_bytes, data)
SELECT encode(sha256(d), 'hex'), length(d), d
  FROM (VALUES ('shared attachment'::bytea), ('raw one'::bytea), ('raw two'::bytea)) v(d);
INSERT INTO gmail_ingest.mail_threads (mailbox_id, provider_thread_id, message_count)
SELECT id, 't-' || id, 1 FROM gmail_ingest.mailboxes;
INSERT INTO gmail_ingest.mail_messages (mailbox_id, provider_message_id, thread_id, provider_thread_id,
                                        internal_date, subject, raw_sha256)
SELECT t.mailbox_id, 'm-' || t.mailbox_id, t.id, t.provider_thread_id, now(), 'hello',
       encode(sha256(CASE WHEN m.provider_email = 'one@example.com' THEN 'raw one' ELSE 'raw two' END::bytea), 'hex')
  FROM gmail_ingest.mail_threads t JOIN gmail_ingest.mailboxes m ON m.id = t.mailbox_id;
INSERT INTO gmail_ingest.mail_attachments (mailbox_id, message_id, part_id, filename, mime_type, size_bytes,
                                           sha256, storage_path)
SELECT x.mailbox_id, x.id, '2', 'a.txt', 'text/plain', 17, encode(sha256('shared attachment'::bytea), 'hex'), 'a.txt'
  FROM gmail_ingest.mail_messages x;
INSERT INTO gmail_ingest.sync_runs (mailbox_id, mode, window_days, status)
SELECT id, 'full', 7, 'succeeded' FROM gmail_ingest.mailboxes;
INSERT INTO gmail_ingest.ledger (sync_run_id, mailbox_id, event)
SELECT r.id, r.mailbox_id, e FROM gmail_ingest.sync_runs r, unnest('{sync.started,sync.completed}'::text[]) e;
SQL
PGHOST=127.0.0.1 PGPORT=$C install_digests $D10
db_digest_c=$(body gi_test_db_digest | sed -E 's/\bper_content\b/true/g')
copies="SELECT count(*) || ':' || md5(string_agg(r.mailbox_id || ' ' || b.sha256 || ' ' || md5(b.data), ',' ORDER BY r.mailbox_id, b.sha256))
  FROM gmail_ingest.blobs b
  JOIN (SELECT mailbox_id, sha256 FROM gmail_ingest.mail_attachments
        UNION SELECT mailbox_id, raw_sha256 FROM gmail_ingest.mail_messages) r ON r.sha256 = b.sha256"
copies_11="SELECT count(*) || ':' || md5(string_agg(b.mailbox_id || ' ' || b.sha256 || ' ' || md5(b.data), ',' ORDER BY b.mailbox_id, b.sha256))
  FROM gmail_ingest.blobs b"
rows10=$(cq $C $D10 "$db_digest_c")
ledger10=$(cq $C $D10 "$ledger_digest")
copies10=$(cq $C $D10 "$copies")
check "1.0 database: 3 blob rows, 4 references" "$(cq $C $D10 "SELECT count(*) FROM gmail_ingest.blobs") ${copies10%%:*}" "3 4"
check "ALTER EXTENSION gmail_ingest UPDATE on the coordinator" \
	"$(cq $C $D10 "ALTER EXTENSION gmail_ingest UPDATE" 2>&1; cq $C $D10 "SELECT extversion FROM pg_extension WHERE extname = 'gmail_ingest'")" "$version"
for p in $CITUS_W1 $CITUS_W2; do
	check "the update reached the worker on port $p" \
		"$(cq $p $D10 "SELECT extversion FROM pg_extension WHERE extname = 'gmail_ingest'")" "$version"
done
check "updated 1.0 database distributed" \
	"$(cq $C $D10 "SELECT count(*) FROM gmail_ingest.distribute(4) WHERE citus_table_type <> 'local'" 2>&1)" 13
check "1.0 rows kept after the update and distribute() (each content once)" "$(cq $C $D10 "$db_digest_c")" "$rows10"
check "1.0 ledger kept" "$(cq $C $D10 "$ledger_digest")" "$ledger10"
check "each 1.0 blob copied to every mailbox referring to it, in its shards" "$(cq $C $D10 "$copies_11")" "$copies10"

# --- a failure is recorded on the mailbox's node: a revoked grant.
e=citus-9-$TAG@example.com
new_mailbox "$e" '"seed":79,"threads":3,"messages":6,"days":9,"window_days":7'
rv=$(cq $C $DB "SELECT gmail_ingest.add_mailbox('$ORG', '$e', 'rt-$e')")
gi_double POST "/admin/mailboxes/$e/revoke" '{}' >/dev/null
cq $C $DB "SELECT gmail_ingest.gmail_sync($rv, 7)" >/dev/null 2>&1
check "a revoked grant: the failed run, its ledger event and reauthorize recorded through the cluster, no mail" \
	"$(cq $C $DB "SELECT (SELECT string_agg(r.status || ':' || (r.id >> 48 = p.groupid AND p.groupid <> 0), ',')
	                       FROM gmail_ingest.sync_runs r
	                       JOIN pg_dist_placement p ON p.shardid = get_shard_id_for_distribution_column('gmail_ingest.sync_runs', r.mailbox_id)
	                      WHERE r.mailbox_id = $rv)
	              || ' ' || (SELECT count(*) FROM gmail_ingest.ledger WHERE mailbox_id = $rv AND event = 'sync.failed')
	              || ' ' || (SELECT auth_state FROM gmail_ingest.mailboxes WHERE id = $rv)
	              || ' ' || (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $rv)")" \
	"failed:true 1 reauthorize 0"

# --- gmail_backfill on the coordinator: its steps, each committed.
e=citus-8-$TAG@example.com
new_mailbox "$e" '"seed":78,"threads":10,"messages":30,"days":9,"window_days":7,"attachments":3'
bf=$(cq $C $DB "SELECT gmail_ingest.add_mailbox('$ORG', '$e', 'rt-$e')")
out=$(psql -X -q -h 127.0.0.1 -p $C -d $DB -c "CALL gmail_ingest.gmail_backfill($bf, 7, 10)" 2>&1)
check "gmail_backfill completes on the cluster" \
	"$(grep -c ERROR <<<"$out") $(cq $C $DB "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $bf")" \
	"0 $($DQ window-count "$e" 7)"
check "gmail_backfill (a delegated CALL) ran its steps on the worker holding the mailbox" \
	"$(cq $C $DB "SELECT count(*) FILTER (WHERE r.id >> 48 = p.groupid AND p.groupid <> 0) = count(*) AND count(*) > 1
	                FROM gmail_ingest.sync_runs r
	                JOIN pg_dist_placement p ON p.shardid = get_shard_id_for_distribution_column('gmail_ingest.sync_runs', r.mailbox_id)
	               WHERE r.mailbox_id = $bf")" t

e=citus-7-$TAG@example.com
new_mailbox "$e" '"seed":77,"threads":2,"messages":4,"days":9,"window_days":7'
check "add_mailbox on the distributed schema" \
	"$(cq $C $DB "SELECT gmail_ingest.add_mailbox('$ORG', '$e', 'rt-$e') > 0" 2>&1)" t

finish
