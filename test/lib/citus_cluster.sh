# test/lib/citus_cluster.sh: a Citus cluster for the tests, a coordinator
# and two workers on loopback ports, each preloading citus before pg_cron
# and gmail_ingest (Citus must come first) and pointed at the suite's Gmail
# double.  Sourced after test/lib/env.sh, inside a run of test/run_tests.sh
# (GI_WORK, GI_PGBIN, DOUBLE_URL set).  It uses an installed Citus and
# never builds one: citus_available says whether there is one.
#
#   citus_available                     true when citus.so and citus.control are installed
#   citus_test_cluster DB               a test's start: skip without Citus, else
#                                       citus_cluster_start DB (or fail)
#   citus_cluster_start DB              start the three servers, create DB on each,
#                                       CREATE EXTENSION citus, add the workers;
#                                       sets CITUS_COORD, CITUS_W1, CITUS_W2 (ports);
#                                       CITUS_CRON_DB, if set, is every node's
#                                       cron.database_name (default postgres)
#   citus_cluster_db DB                 one more database on the cluster, the workers added
#   citus_cluster_stop                  stop every server it started (also on EXIT)
#   cq PORT DB SQL                      one query, unaligned tuples only
#   citus_replica_digests DB TABLE      one digest per node of its copy of a reference
#                                       table (equal when the replicas agree)

citus_available() {
	local pg_config=${PG_CONFIG:-pg_config}
	[ -f "$("$pg_config" --pkglibdir)/citus.so" ] &&
		[ -f "$("$pg_config" --sharedir)/extension/citus.control" ]
}

# A test script's start: exit with one "# skipped" line (run_tests.sh shows
# it) without Citus; else start the cluster with DB, or fail the script.
citus_test_cluster() {	# DB
	if ! citus_available; then
		echo "# skipped: Citus is not installed for $("${PG_CONFIG:-pg_config}" --bindir)/postgres (the SPEC 7e tests need it)"
		exit 0
	fi
	if ! citus_cluster_start "$1"; then
		tail -20 "$GI_WORK"/citus-*.log
		echo "not ok - the Citus cluster starts"
		finish
		exit 1
	fi
}

CITUS_NODES=()

cq() {
	psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -d "$2" -c "$3"
}

citus_node_start() {	# NAME: init and start one node, echo its port
	local name=$1 port data
	port=$(gi_free_port)
	data=$GI_WORK/citus-$name
	gi_init_cluster "$GI_PGBIN" "$data" "$port" citus,pg_cron,gmail_ingest
	cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
cron.database_name = '${CITUS_CRON_DB:-postgres}'
cron.use_background_workers = on
max_worker_processes = 32
max_connections = 200
citus.node_conninfo = 'sslmode=disable'
shared_buffers = 64MB
# which node ran a function: pg_stat_user_functions (the tests' proof of delegation)
track_functions = all
CONF
	gi_s3_settings "$data/postgresql.conf"
	su postgres -c "'$GI_PGBIN/pg_ctl' -D '$data' -l '$GI_WORK/citus-$name.log' -w start >/dev/null" || return 1
	CITUS_NODES+=("$data")
	echo "$port"
}

citus_cluster_stop() {
	local data
	for data in "${CITUS_NODES[@]}"; do
		su postgres -c "'$GI_PGBIN/pg_ctl' -D '$data' -m fast stop >/dev/null 2>&1" || true
	done
	CITUS_NODES=()
}

citus_cluster_start() {
	local db=$1 port
	# CITUS_EXIT_ALSO: what the caller's own EXIT trap did (this one replaces it)
	trap "citus_cluster_stop; ${CITUS_EXIT_ALSO:-}" EXIT
	# a redirected function call runs in this shell: CITUS_NODES is kept
	citus_node_start coord >"$GI_WORK/citus-port-coord" || return 1
	citus_node_start w1 >"$GI_WORK/citus-port-w1" || return 1
	citus_node_start w2 >"$GI_WORK/citus-port-w2" || return 1
	CITUS_COORD=$(cat "$GI_WORK/citus-port-coord")
	CITUS_W1=$(cat "$GI_WORK/citus-port-w1")
	CITUS_W2=$(cat "$GI_WORK/citus-port-w2")
	export CITUS_COORD CITUS_W1 CITUS_W2
	citus_cluster_db "$db"
}

# citus_cluster_db DB: DB on every node with Citus, the workers added (a
# Citus cluster's nodes are per database).
citus_cluster_db() {
	local db=$1 port
	for port in "$CITUS_COORD" "$CITUS_W1" "$CITUS_W2"; do
		cq "$port" postgres "CREATE DATABASE $db" >/dev/null || return 1
		cq "$port" "$db" "CREATE EXTENSION citus" >/dev/null || return 1
	done
	cq "$CITUS_COORD" "$db" "SELECT citus_set_coordinator_host('127.0.0.1', $CITUS_COORD)" >/dev/null || return 1
	cq "$CITUS_COORD" "$db" "SELECT citus_add_node('127.0.0.1', $CITUS_W1)" >/dev/null || return 1
	cq "$CITUS_COORD" "$db" "SELECT citus_add_node('127.0.0.1', $CITUS_W2)" >/dev/null || return 1
}

citus_replica_digests() {
	local db=$1 table=$2 shard port
	shard=$(cq "$CITUS_COORD" "$db" "SELECT s.shardid FROM pg_dist_shard s WHERE s.logicalrelid = '$table'::regclass")
	for port in "$CITUS_COORD" "$CITUS_W1" "$CITUS_W2"; do
		cq "$port" "$db" "SELECT count(*) || ':' || md5(coalesce(string_agg(r::text, ',' ORDER BY r::text), '')) FROM ${table}_$shard r"
	done
}
