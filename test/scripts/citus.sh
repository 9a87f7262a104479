#!/usr/bin/env bash
# The extension on a Citus cluster (SPEC 7e): a coordinator and two workers
# on loopback ports (test/lib/citus_cluster.sh), each preloading citus
# before gmail_ingest.  Skips with one line when no Citus is installed for
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
#   - every foreign key is back and holds on the shards (a row pointing into
#     another mailbox is refused), the natural-key uniques refuse a
#     duplicate, the ledger refuses UPDATE, DELETE and TRUNCATE;
#   - from the coordinator: verify() holds for each mailbox, mailbox_status
#     and fleet_status answer, add_mailbox registers a new mailbox.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"
. "$(dirname "$0")/../lib/citus_cluster.sh"

if ! citus_available; then
	echo "ok - skipped: Citus is not installed for $("${PG_CONFIG:-pg_config}" --bindir)/postgres (SPEC 7e tests need it)"
	finish
	exit 0
fi

DB=gi_citus
TAG=$(run_tag)
ORG=00000000-0000-0000-0000-0000000000c1
if ! citus_cluster_start $DB; then
	tail -20 "$GI_WORK"/citus-*.log
	echo "not ok - the Citus cluster starts"
	finish
	exit 1
fi
C=$CITUS_COORD
check "a coordinator and two workers" \
	"$(cq $C $DB "SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND groupid <> 0")" 2
check "CREATE EXTENSION gmail_ingest on the coordinator" "$(cq $C $DB "CREATE EXTENSION gmail_ingest" 2>&1)" ""
version=$(sed -n 's/^EXTVERSION *= *//p' Makefile)
for p in $CITUS_W1 $CITUS_W2; do
	check "the extension reached the worker on port $p" \
		"$(cq $p $DB "SELECT extversion FROM pg_extension WHERE extname = 'gmail_ingest'")" "$version"
done
check "distribute() before Citus knows the workers' tables refuses a bad shard_count (22023)" \
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
	"$(cq $C $DB "SELECT count(*) FILTER (WHERE last_run_status = 'succeeded' AND messages > 0) FROM gmail_ingest.mailbox_status")" 6
check "fleet_status from the coordinator" "$(cq $C $DB "SELECT mailboxes FROM gmail_ingest.fleet_status" 2>&1)" 6
e=citus-7-$TAG@example.com
new_mailbox "$e" '"seed":77,"threads":2,"messages":4,"days":9,"window_days":7'
check "add_mailbox on the distributed schema" \
	"$(cq $C $DB "SELECT gmail_ingest.add_mailbox('$ORG', '$e', 'rt-$e') > 0" 2>&1)" t

finish
