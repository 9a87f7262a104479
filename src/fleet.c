/*-------------------------------------------------------------------------
 * fleet.c
 *	  The fleet worker's two steps, called by the run_due procedure once
 *	  per transaction: _claim_due() picks the most overdue due mailbox no
 *	  other worker holds, and _run_turn() syncs it and writes the outcome
 *	  into its schedule (next_sync_at, consecutive_failures, backoff_until).
 *
 * The claim is the mailbox's sync lock, the same lock gmail_sync takes,
 * tried and never waited on, and held to the end of the worker's
 * transaction: a worker that dies loses its claim with its transaction.
 * Dueness is read again once the lock is held, with a fresh snapshot, so
 * a mailbox another worker synced meanwhile is not synced twice.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "gmail_ingest.h"
#include "push.h"
#include "settings.h"
#include "store.h"

/* Claimable: not paused, credentials usable, due, not backing off. */
#define DUE_CONDITION \
	"NOT m.paused AND m.auth_state = 'ok' AND m.next_sync_at <= pg_catalog.now() " \
	"AND (m.backoff_until IS NULL OR m.backoff_until <= pg_catalog.now())"

/* Candidates read per claim: more than workers that can hold one. */
#define CLAIM_CANDIDATES 64

PGDLLEXPORT Datum gmail_claim_due(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum gmail_run_turn(PG_FUNCTION_ARGS);

static void
spi_check(int rc, int expected, const char *what)
{
	if (rc != expected)
		elog(ERROR, "%s failed: %s", what, SPI_result_code_string(rc));
}

/* Whether the mailbox is due now, read with a new snapshot. */
static bool
still_due(int64 mailbox_id)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1];

	values[0] = Int64GetDatum(mailbox_id);
	spi_check(SPI_execute_with_args("SELECT 1 FROM gmail_ingest.mailboxes m WHERE m.id = $1 AND "
									DUE_CONDITION,
									1, types, values, NULL, false, 1),
			  SPI_OK_SELECT, "reading the mailbox's schedule");
	return SPI_processed == 1;
}

PG_FUNCTION_INFO_V1(gmail_claim_due);

/*
 * The most overdue due mailbox whose sync lock this transaction now holds,
 * or NULL when none is free.  Overdue is measured from the later of its
 * due time and the end of its backoff.
 */
Datum
gmail_claim_due(PG_FUNCTION_ARGS)
{
	int64		ids[CLAIM_CANDIDATES];
	int			n;
	int			i;
	int64		claimed = 0;
	bool		found = false;
	Datum		ranges_lo;
	Datum		ranges_hi;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	store_check_schema_version();
	if (!store_local_shard_ranges(&ranges_lo, &ranges_hi))
		spi_check(SPI_execute("SELECT m.id FROM gmail_ingest.mailboxes m WHERE " DUE_CONDITION
							  " ORDER BY GREATEST(m.next_sync_at, m.backoff_until), m.id"
							  " LIMIT " CppAsString2(CLAIM_CANDIDATES),
							  true, 0),
				  SPI_OK_SELECT, "listing due mailboxes");
	else
	{
		Oid			types[2] = {INT4ARRAYOID, INT4ARRAYOID};
		Datum		values[2] = {ranges_lo, ranges_hi};

		/*
		 * Only the mailboxes whose shards this node holds (Citus, SPEC 7e):
		 * every sync local, and the nodes' claims disjoint, since their sync
		 * locks are per node.  A coordinator holds none and claims nothing.
		 */
		spi_check(SPI_execute_with_args("SELECT m.id FROM gmail_ingest.mailboxes m WHERE " DUE_CONDITION
										" AND EXISTS (SELECT 1 FROM unnest($1::int4[], $2::int4[]) r(lo, hi)"
										"              WHERE worker_hash(m.id) BETWEEN r.lo AND r.hi)"
										" ORDER BY GREATEST(m.next_sync_at, m.backoff_until), m.id"
										" LIMIT " CppAsString2(CLAIM_CANDIDATES),
										2, types, values, NULL, true, 0),
				  SPI_OK_SELECT, "listing due mailboxes");
	}
	n = (int) SPI_processed;
	for (i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);

	for (i = 0; i < n && !found; i++)
	{
		if (sync_lock_held(ids[i]))
			continue;			/* this transaction's own turn */
		if (!sync_lock_try(ids[i]))
			continue;			/* another worker or a gmail_sync has it */
		if (still_due(ids[i]))
		{
			claimed = ids[i];
			found = true;
		}
		else
			sync_lock_release(ids[i]);
	}
	SPI_finish();
	if (!found)
		PG_RETURN_NULL();
	PG_RETURN_INT64(claimed);
}

/* The schedule's view of a mailbox at the start of a turn. */
typedef struct TurnPlan
{
	int32		window_days;
	bool		needs_full;		/* never synced, or a full sync under way */
} TurnPlan;

static void
read_turn_plan(int64 mailbox_id, TurnPlan *plan)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1];
	bool		isnull;

	values[0] = Int64GetDatum(mailbox_id);
	spi_check(SPI_execute_with_args("SELECT m.window_days, m.history_id IS NULL OR m.backfill_history_id IS NOT NULL"
									"  FROM gmail_ingest.mailboxes m WHERE m.id = $1",
									1, types, values, NULL, false, 1),
			  SPI_OK_SELECT, "reading the mailbox");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("mailbox " INT64_FORMAT " does not exist", mailbox_id)));
	plan->window_days = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	plan->needs_full = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	SPI_freetuptable(SPI_tuptable);
}

/*
 * An error that is not a failure on Gmail's side (a bug, an answer the
 * sync could not handle, out of memory) still gets a failed run, so the
 * mailbox's status says what happened and its ledger stays intact; the
 * worker goes on with other mailboxes.
 */
static void
record_unexpected_failure(int64 mailbox_id, const TurnPlan *plan, ErrorData *edata)
{
	const char *mode = plan->needs_full ? "full" : "incremental";
	RunCounters counters;
	int64		run_id;
	char	   *detail;

	memset(&counters, 0, sizeof(counters));
	run_id = store_start_run(mailbox_id, mode, plan->window_days, false, 0);
	store_ledger(run_id, mailbox_id, "sync.started", 0, NULL,
				 psprintf("{\"mode\":\"%s\",\"window_days\":%d}", mode, plan->window_days));
	store_finish_run(mailbox_id, run_id, mode, "failed", edata->message, false, 0, NULL, &counters);
	detail = psprintf("{\"sqlstate\":\"%s\",\"kind\":\"internal\"}", unpack_sql_state(edata->sqlerrcode));
	store_ledger(run_id, mailbox_id, "sync.failed", 0, NULL, detail);
	ereport(WARNING,
			(errcode(edata->sqlerrcode),
			 errmsg("fleet sync of mailbox " INT64_FORMAT " failed: %s", mailbox_id, edata->message),
			 edata->detail ? errdetail_internal("%s", edata->detail) : 0));
}

/*
 * The sync (or one time-sliced batch of a full sync), with any error but
 * a cancel caught: *edata is set when it raised instead of recording.
 */
static void
run_guarded(int64 mailbox_id, const TurnPlan *plan, SyncOutcome *out, ErrorData **edata)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	*edata = NULL;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		sync_mailbox(mailbox_id, plan->window_days, false,
					 plan->needs_full ? gi_fleet_batch_size : 0, false, out);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *e;

		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (e->sqlerrcode == ERRCODE_QUERY_CANCELED || e->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
			ReThrowError(e);
		*edata = e;
	}
	PG_END_TRY();
}

/*
 * The schedule after a turn.  Synced: due one interval after the due time
 * it served (or after now, when it is more than an interval behind), so
 * the cadence does not drift by the sync's own length.  A full sync with
 * more to fetch: due again at once, behind every mailbox due earlier.
 * Failed with usable credentials: exponential backoff from the interval,
 * capped at 6 hours, with up to 20% jitter so failed mailboxes spread out,
 * and never before the server's own Retry-After.  Failed and parked
 * (auth_state no longer 'ok'): counted, not backed off: the credentials
 * must be replaced, and add_mailbox makes it due again.
 */
static const char *
record_outcome(int64 mailbox_id, bool failed, bool complete, TimestampTz retry_after)
{
	Oid			types[4] = {INT8OID, BOOLOID, BOOLOID, TIMESTAMPTZOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', retry_after != 0 ? ' ' : 'n'};
	Oid			utypes[4] = {INT8OID, BOOLOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		uvalues[4];
	char		unulls[4] = {' ', ' ', ' ', ' '};
	bool		isnull;
	const char *outcome;

	/*
	 * The new schedule is read first and written as parameters: Citus
	 * refuses volatile functions (clock_timestamp, random) and stable ones
	 * over columns in an UPDATE of its tables (mailboxes is a reference
	 * table there).  The turn holds the mailbox's sync lock meanwhile.
	 */
	values[0] = Int64GetDatum(mailbox_id);
	values[1] = BoolGetDatum(failed);
	values[2] = BoolGetDatum(complete);
	values[3] = TimestampTzGetDatum(retry_after);
	spi_check(SPI_execute_with_args(
									"SELECT CASE WHEN $2 THEN m.next_sync_at"
									"            WHEN NOT $3 THEN pg_catalog.clock_timestamp()"
									"            WHEN m.next_sync_at + m.sync_interval > pg_catalog.clock_timestamp()"
									"            THEN m.next_sync_at + m.sync_interval"
									"            ELSE pg_catalog.clock_timestamp() + m.sync_interval END,"
									"       CASE WHEN NOT $2 OR m.auth_state <> 'ok' THEN NULL"
									"         ELSE GREATEST($4, pg_catalog.clock_timestamp()"
									"              + LEAST(interval '6 hours',"
									"                      m.sync_interval * pg_catalog.power(2, LEAST(m.consecutive_failures, 20)))"
									"                * (0.8 + 0.2 * pg_catalog.random())) END,"
									"       CASE WHEN NOT $2 THEN CASE WHEN $3 THEN 'synced' ELSE 'partial' END"
									"            WHEN m.auth_state <> 'ok' THEN 'parked' ELSE 'backoff' END"
									"  FROM gmail_ingest.mailboxes m WHERE m.id = $1",
									4, types, values, nulls, false, 1),
			  SPI_OK_SELECT, "reading the mailbox's schedule");
	if (SPI_processed != 1)
		return "vanished";		/* the mailbox was removed during its sync */
	uvalues[0] = Int64GetDatum(mailbox_id);
	uvalues[1] = BoolGetDatum(failed);
	uvalues[2] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	uvalues[3] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (isnull)
		unulls[3] = 'n';
	outcome = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	SPI_freetuptable(SPI_tuptable);
	spi_check(SPI_execute_with_args("UPDATE gmail_ingest.mailboxes m"
									"   SET consecutive_failures = CASE WHEN $2 THEN m.consecutive_failures + 1 ELSE 0 END,"
									"       next_sync_at = $3, backoff_until = $4"
									" WHERE m.id = $1",
									4, utypes, uvalues, unulls, false, 0),
			  SPI_OK_UPDATE, "recording the turn in the schedule");
	if (SPI_processed != 1)
		return "vanished";
	return outcome;
}

PG_FUNCTION_INFO_V1(gmail_run_turn);

/*
 * One turn of a worker on a mailbox: a sync (incremental, or a batch of
 * its full sync), then its schedule.  Returns 'synced', 'partial' (a full
 * sync with more to fetch), 'backoff' or 'parked'.  The caller commits.
 */
Datum
gmail_run_turn(PG_FUNCTION_ARGS)
{
	int64		mailbox_id;
	TurnPlan	plan;
	SyncOutcome out;
	ErrorData  *edata;
	const char *outcome;
	int			guc_nest;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("mailbox_id must not be null")));
	mailbox_id = PG_GETARG_INT64(0);
	guc_nest = store_mailbox_writes_commute();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	store_check_schema_version();
	read_turn_plan(mailbox_id, &plan);
	if (!sync_lock_try(mailbox_id))
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("mailbox " INT64_FORMAT " is already being synced", mailbox_id),
				 errhint("Claim a mailbox with gmail_ingest._claim_due() in the same transaction.")));

	memset(&out, 0, sizeof(out));
	run_guarded(mailbox_id, &plan, &out, &edata);
	if (edata != NULL)
	{
		record_unexpected_failure(mailbox_id, &plan, edata);
		outcome = record_outcome(mailbox_id, true, false, 0);
	}
	else
		outcome = record_outcome(mailbox_id, out.failed, out.complete, out.failed ? out.retry_after : 0);
	/* push (SPEC 7c): renew the mailbox's watch, notifications that came in meanwhile */
	if (edata == NULL && !out.failed)
		push_after_turn(mailbox_id, out.run_id);
	SPI_finish();
	store_mailbox_writes_done(guc_nest);
	PG_RETURN_TEXT_P(cstring_to_text(outcome));
}
