/*-------------------------------------------------------------------------
 * project_quota.c
 *	  The SQL-callable project_quota_usage(): what the cluster's shared
 *	  Gmail project budget has booked in the last minute, and its limit.
 *
 * An entry point of its own so the budget (gmail_project_budget.c, the
 * Gmail API layer) stays free of the settings; the limit reported is this
 * backend's gmail_ingest.project_quota_units_per_minute, which every
 * backend shares once the configuration is reloaded.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"

#include "gmail_api.h"
#include "settings.h"

PGDLLEXPORT Datum gmail_project_quota_usage(PG_FUNCTION_ARGS);

PG_FUNCTION_INFO_V1(gmail_project_quota_usage);

Datum
gmail_project_quota_usage(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("project_quota_usage must be called in a context that accepts a record")));
	tupdesc = BlessTupleDesc(tupdesc);
	values[0] = Int64GetDatum(gmail_project_budget_units_last_minute());
	values[1] = Int32GetDatum(gi_project_quota_units_per_minute);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
