/*-------------------------------------------------------------------------
 * store_backfill.c
 *	  The staged listing of a gmail_backfill in progress.
 *
 * The first step stores what Gmail listed for the window and the
 * historyId read before listing; every later step takes the next staged
 * messages not stored yet.  Because the staging is committed with each
 * batch, a backfill interrupted anywhere resumes without listing again.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "store.h"
#include "store_spi.h"

void
store_backfill_state(int64 mailbox_id, BackfillState *out)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID};
	Datum		v[1];
	bool		isnull;

	plan_once(&plan,
			  "SELECT backfill_history_id, backfill_window_start, backfill_days "
			  "  FROM " SCHEMA "mailboxes WHERE id = $1",
			  1, types);
	v[0] = Int64GetDatum(mailbox_id);
	run_plan(plan, v, NULL, SPI_OK_SELECT);
	memset(out, 0, sizeof(*out));
	if (SPI_processed == 1)
	{
		out->history_id = DatumGetInt64(col_datum(0, 1, &isnull));
		out->active = !isnull;
		out->window_start = DatumGetTimestampTz(col_datum(0, 2, &isnull));
		out->days = DatumGetInt32(col_datum(0, 3, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
}

void
store_backfill_begin(int64 mailbox_id, int64 history_id, TimestampTz window_start, int days)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, INT8OID, TIMESTAMPTZOID, INT4OID};
	Datum		v[4];

	plan_once(&plan,
			  "UPDATE " SCHEMA "mailboxes SET backfill_history_id = $2, backfill_window_start = $3, "
			  "       backfill_days = $4 WHERE id = $1",
			  4, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = Int64GetDatum(history_id);
	v[2] = TimestampTzGetDatum(window_start);
	v[3] = Int32GetDatum(days);
	run_plan(plan, v, NULL, SPI_OK_UPDATE);
}

void
store_backfill_stage_threads(int64 mailbox_id, const ThreadFinal *threads, int n)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID};
	Datum		v[4];
	char	  **ids = palloc(sizeof(char *) * Max(n, 1));
	char	  **snips = palloc(sizeof(char *) * Max(n, 1));
	int64	   *hists = palloc(sizeof(int64) * Max(n, 1));
	bool	   *nulls = palloc0(sizeof(bool) * Max(n, 1));
	int			i;

	if (n == 0)
		return;
	plan_once(&plan,
			  "INSERT INTO " SCHEMA "backfill_threads AS b (mailbox_id, provider_thread_id, history_id, snippet) "
			  "SELECT $1, u.tid, u.hist, u.snip FROM unnest($2::text[], $3::int8[], $4::text[]) AS u(tid, hist, snip) "
			  "ON CONFLICT (mailbox_id, provider_thread_id) DO UPDATE "
			  "   SET history_id = EXCLUDED.history_id, snippet = EXCLUDED.snippet "
			  " WHERE (b.history_id, b.snippet) IS DISTINCT FROM (EXCLUDED.history_id, EXCLUDED.snippet)",
			  4, types);
	for (i = 0; i < n; i++)
	{
		ids[i] = threads[i].provider_id;
		snips[i] = threads[i].snippet;
		hists[i] = threads[i].history_id;
	}
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = text_array(ids, n);
	v[2] = int8_array_nullable(hists, nulls, n);
	v[3] = text_array(snips, n);
	run_plan(plan, v, NULL, SPI_OK_INSERT);
}

void
store_backfill_stage_messages(int64 mailbox_id, char **ids, char **thread_ids, int n)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		v[3];

	if (n == 0)
		return;
	plan_once(&plan,
			  "INSERT INTO " SCHEMA "backfill_queue AS q (mailbox_id, provider_message_id, provider_thread_id) "
			  "SELECT $1, u.mid, u.tid FROM unnest($2::text[], $3::text[]) AS u(mid, tid) "
			  "ON CONFLICT (mailbox_id, provider_message_id) DO UPDATE "
			  "   SET provider_thread_id = EXCLUDED.provider_thread_id "
			  " WHERE q.provider_thread_id IS DISTINCT FROM EXCLUDED.provider_thread_id",
			  3, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = text_array(ids, n);
	v[2] = text_array(thread_ids, n);
	run_plan(plan, v, NULL, SPI_OK_INSERT);
}

int
store_backfill_next(int64 mailbox_id, int limit, char ***ids, char ***thread_ids, int64 *remaining)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, INT4OID};
	Datum		v[2];
	uint64		i;
	int			n;

	plan_once(&plan,
			  "SELECT q.provider_message_id, q.provider_thread_id, count(*) OVER () "
			  "  FROM " SCHEMA "backfill_queue q "
			  " WHERE q.mailbox_id = $1 AND NOT EXISTS ( "
			  "       SELECT 1 FROM " SCHEMA "mail_messages m "
			  "        WHERE m.mailbox_id = q.mailbox_id AND m.provider_message_id = q.provider_message_id) "
			  " ORDER BY q.provider_thread_id, q.provider_message_id LIMIT $2",
			  2, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = Int32GetDatum(limit);
	run_plan(plan, v, NULL, SPI_OK_SELECT);
	n = (int) SPI_processed;
	*ids = palloc(sizeof(char *) * Max(n, 1));
	*thread_ids = palloc(sizeof(char *) * Max(n, 1));
	*remaining = 0;
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		(*ids)[i] = col_text(i, 1);
		(*thread_ids)[i] = col_text(i, 2);
		*remaining = DatumGetInt64(col_datum(i, 3, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	return n;
}

void
store_backfill_forget(int64 mailbox_id, char **ids, int n)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, TEXTARRAYOID};
	Datum		v[2];

	if (n == 0)
		return;
	plan_once(&plan,
			  "DELETE FROM " SCHEMA "backfill_queue WHERE mailbox_id = $1 AND provider_message_id = ANY ($2)",
			  2, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = text_array(ids, n);
	run_plan(plan, v, NULL, SPI_OK_DELETE);
}

ThreadFinal *
store_backfill_threads(int64 mailbox_id, TimestampTz window_start, int *count)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID};
	Datum		v[1];
	ThreadFinal *out;
	uint64		i;

	plan_once(&plan,
			  "SELECT t.id, b.provider_thread_id, b.history_id, b.snippet "
			  "  FROM " SCHEMA "backfill_threads b "
			  "  JOIN " SCHEMA "mail_threads t "
			  "    ON t.mailbox_id = b.mailbox_id AND t.provider_thread_id = b.provider_thread_id "
			  " WHERE b.mailbox_id = $1",
			  1, types);
	v[0] = Int64GetDatum(mailbox_id);
	run_plan(plan, v, NULL, SPI_OK_SELECT);
	out = palloc0(sizeof(ThreadFinal) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		out[i].id = DatumGetInt64(col_datum(i, 1, &isnull));
		out[i].provider_id = col_text(i, 2);
		out[i].history_id = DatumGetInt64(col_datum(i, 3, &isnull));
		out[i].has_history = !isnull;
		out[i].snippet = col_text(i, 4);
		out[i].synced_since = window_start;
	}
	*count = (int) SPI_processed;
	SPI_freetuptable(SPI_tuptable);
	return out;
}

void
store_backfill_clear(int64 mailbox_id)
{
	static SPIPlanPtr del_queue = NULL;
	static SPIPlanPtr del_threads = NULL;
	static SPIPlanPtr reset = NULL;
	static const Oid types[] = {INT8OID};
	Datum		v[1];

	v[0] = Int64GetDatum(mailbox_id);
	plan_once(&del_queue, "DELETE FROM " SCHEMA "backfill_queue WHERE mailbox_id = $1", 1, types);
	run_plan(del_queue, v, NULL, SPI_OK_DELETE);
	plan_once(&del_threads, "DELETE FROM " SCHEMA "backfill_threads WHERE mailbox_id = $1", 1, types);
	run_plan(del_threads, v, NULL, SPI_OK_DELETE);
	plan_once(&reset,
			  "UPDATE " SCHEMA "mailboxes SET backfill_history_id = NULL, backfill_window_start = NULL, "
			  "       backfill_days = NULL WHERE id = $1",
			  1, types);
	run_plan(reset, v, NULL, SPI_OK_UPDATE);
}
