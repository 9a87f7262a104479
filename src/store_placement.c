/*-------------------------------------------------------------------------
 * store_placement.c
 *	  Where a mailbox's rows live on a Citus cluster whose tables
 *	  distribute() distributed (SPEC 7e), read from Citus's catalogs.
 *
 * A sync must run on the node holding the mailbox's shards: its sync lock
 * (the 55P03 guard) is an advisory lock of the node it runs on, so two
 * nodes syncing one mailbox would not see each other's lock.  The fleet
 * claims only local mailboxes, and gmail_sync refuses a mailbox held by
 * another node.  Without Citus, or before distribute(), every mailbox is
 * local.  Citus's catalogs are read in separate statements after
 * to_regclass() found them: without Citus they do not parse.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "utils/guc.h"

#include "store.h"

/* The placements of mail_threads' shards; its co-location group is every data table's. */
#define LOCAL_PLACEMENTS \
	"  FROM pg_catalog.pg_dist_shard s" \
	"  JOIN pg_catalog.pg_dist_placement pl ON pl.shardid = s.shardid" \
	" WHERE s.logicalrelid = 'gmail_ingest.mail_threads'::regclass" \
	"   AND pl.groupid = (SELECT groupid FROM pg_catalog.pg_dist_local_group)"

static void
spi_check(int rc, int expected, const char *what)
{
	if (rc != expected)
		elog(ERROR, "%s failed: %s", what, SPI_result_code_string(rc));
}

static bool
first_bool(void)
{
	bool		isnull;
	bool		b = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	return !isnull && b;
}

/* Whether Citus is installed here and distribute() has run. */
static bool
distributed(void)
{
	bool		found;

	spi_check(SPI_execute("SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL",
						  true, 1),
			  SPI_OK_SELECT, "looking for Citus");
	found = first_bool();
	SPI_freetuptable(SPI_tuptable);
	if (!found)
		return false;
	spi_check(SPI_execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p"
						  "               WHERE p.logicalrelid = 'gmail_ingest.mail_threads'::regclass)",
						  true, 1),
			  SPI_OK_SELECT, "reading Citus's tables");
	found = first_bool();
	SPI_freetuptable(SPI_tuptable);
	return found;
}

bool
store_local_shard_ranges(Datum *lo, Datum *hi)
{
	bool		isnull;

	if (!distributed())
		return false;
	spi_check(SPI_execute("SELECT coalesce(array_agg(s.shardminvalue::int4), '{}'),"
						  "       coalesce(array_agg(s.shardmaxvalue::int4), '{}')" LOCAL_PLACEMENTS,
						  true, 1),
			  SPI_OK_SELECT, "reading the local shards");
	*lo = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	*hi = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	return true;
}

bool
store_mailbox_is_local(int64 mailbox_id)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1];
	bool		local;

	if (!distributed())
		return true;
	values[0] = Int64GetDatum(mailbox_id);
	spi_check(SPI_execute_with_args("SELECT EXISTS (SELECT 1" LOCAL_PLACEMENTS
									"   AND pg_catalog.worker_hash($1)"
									"       BETWEEN s.shardminvalue::int4 AND s.shardmaxvalue::int4)",
									1, types, values, NULL, true, 1),
			  SPI_OK_SELECT, "finding the mailbox's shard");
	local = first_bool();
	SPI_freetuptable(SPI_tuptable);
	return local;
}

/*
 * Citus serializes the UPDATEs of a reference table across the cluster:
 * each takes an exclusive lock on the table's shard, on every node, held
 * to the end of its transaction, unless the session says that its writes
 * commute.  A sync's and a fleet turn's writes to mailboxes (a reference
 * table after distribute()) do: each changes the row of the mailbox being
 * synced, and only the node holding that mailbox syncs it.  A write that
 * may meet them on the same row from another node (the push listener's,
 * set_schedule's) keeps the default, so it waits for them rather than
 * taking the row's locks in another order (a distributed deadlock).  Without
 * this, every fleet turn in the cluster waited for the others' commits
 * (test/bench/citus.sh: 110 against 229 messages/s).  Set for the caller's
 * call only, as a function's SET clause would be: the caller's own writes
 * before and after keep Citus's default.  Without Citus, nothing is set.
 */
int
store_mailbox_writes_commute(void)
{
	int			nest = NewGUCNestLevel();

	if (GetConfigOption("citus.all_modifications_commutative", true, false) != NULL)
		(void) set_config_option("citus.all_modifications_commutative", "on",
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	return nest;
}

/* The end of the call store_mailbox_writes_commute() began; an error's abort restores it as well. */
void
store_mailbox_writes_done(int nest)
{
	AtEOXact_GUC(true, nest);
}
