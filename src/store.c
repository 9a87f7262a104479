/*-------------------------------------------------------------------------
 * store.c
 *	  SPI plans for every read and write of gmail_ingest's tables.
 *
 * Plans are prepared once per backend and kept (SPI_keepplan).  Writes are
 * upserts whose DO UPDATE carries a WHERE ... IS DISTINCT FROM ..., so a
 * conflict with an identical row writes no tuple; RETURNING (xmax = 0)
 * tells an insert from an update.  Every SPI result is freed after use so
 * a sync of many messages runs in bounded memory.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "store.h"
#include "store_spi.h"

const char *
store_action_name(StoreAction a)
{
	switch (a)
	{
		case SA_INSERTED:
			return "inserted";
		case SA_UPDATED:
			return "updated";
		default:
			return "unchanged";
	}
}

/* ---------------------------------------------------------------- helpers */

/*
 * SPI leaves CurrentMemoryContext at its procedure context after executing
 * or preparing, where nothing is freed before SPI_finish; a sync of many
 * messages would pile every later allocation there.  These two restore the
 * caller's context, so per-message memory stays in per-message contexts.
 */
SPIPlanPtr
plan_once(SPIPlanPtr *slot, const char *sql, int nargs, const Oid *types)
{
	if (*slot == NULL)
	{
		MemoryContext caller = CurrentMemoryContext;
		SPIPlanPtr	p = SPI_prepare(sql, nargs, (Oid *) types);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s",
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "SPI_keepplan failed");
		MemoryContextSwitchTo(caller);
		*slot = p;
	}
	return *slot;
}

void
run_plan(SPIPlanPtr plan, Datum *values, const char *nulls, int expected)
{
	MemoryContext caller = CurrentMemoryContext;
	int			rc = SPI_execute_plan(plan, values, nulls, false, 0);

	MemoryContextSwitchTo(caller);
	if (rc != expected)
		elog(ERROR, "unexpected SPI result %s", SPI_result_code_string(rc));
}

static Datum
text_or_null(const char *s, char *null_flag)
{
	if (s == NULL)
	{
		*null_flag = 'n';
		return (Datum) 0;
	}
	*null_flag = ' ';
	return CStringGetTextDatum(s);
}

/*
 * A one-dimensional text[] of the strings, NULL ones as SQL NULLs, built in
 * place: the layout construct_md_array gives (no null bitmap when there is
 * no NULL), without a palloc'd text copy of every element first.  The
 * sync's thread arrays hold every thread of the window, and those copies
 * stayed behind as free chunks of its long-lived context.
 */
Datum
text_array(char **items, int n)
{
	Size		nbytes = 0;
	Size		dataoffset = 0;
	Size		total;
	bool		hasnulls = false;
	ArrayType  *arr;
	bits8	   *bitmap;
	char	   *p;
	int			i;

	if (n == 0)
		return PointerGetDatum(construct_empty_array(TEXTOID));
	for (i = 0; i < n; i++)
	{
		if (items[i] == NULL)
			hasnulls = true;
		else
		{
			nbytes = att_align_nominal(nbytes + VARHDRSZ + strlen(items[i]), TYPALIGN_INT);
			if (!AllocSizeIsValid(nbytes))
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("array size exceeds the maximum allowed (%d)",
								(int) MaxAllocSize)));
		}
	}
	if (hasnulls)
	{
		dataoffset = ARR_OVERHEAD_WITHNULLS(1, n);
		total = dataoffset + nbytes;
	}
	else
		total = ARR_OVERHEAD_NONULLS(1) + nbytes;
	if (!AllocSizeIsValid(total))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("array size exceeds the maximum allowed (%d)", (int) MaxAllocSize)));
	arr = (ArrayType *) palloc0(total);
	SET_VARSIZE(arr, total);
	arr->ndim = 1;
	arr->dataoffset = (int32) dataoffset;
	arr->elemtype = TEXTOID;
	ARR_DIMS(arr)[0] = n;
	ARR_LBOUND(arr)[0] = 1;
	bitmap = ARR_NULLBITMAP(arr);
	p = ARR_DATA_PTR(arr);
	for (i = 0; i < n; i++)
	{
		size_t		len;

		if (items[i] == NULL)
			continue;			/* its bitmap bit stays 0 */
		if (bitmap)
			bitmap[i / 8] |= (bits8) (1 << (i % 8));
		len = strlen(items[i]);
		SET_VARSIZE(p, VARHDRSZ + len);
		memcpy(VARDATA(p), items[i], len);
		p += att_align_nominal(VARHDRSZ + len, TYPALIGN_INT);
	}
	return PointerGetDatum(arr);
}

/* An array of 8-byte pass-by-value items (int8, timestamptz); nulls may be NULL. */
static Datum
int64_datum_array(const int64 *items, const bool *nulls, int n, Oid typid)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int			i;
	ArrayType  *arr;

	for (i = 0; i < n; i++)
		d[i] = Int64GetDatum(items[i]);
	arr = construct_md_array(d, (bool *) nulls, 1, dims, lbs, typid, 8, FLOAT8PASSBYVAL,
							 TYPALIGN_DOUBLE);
	pfree(d);
	return PointerGetDatum(arr);
}

Datum
int8_array_nullable(const int64 *items, const bool *nulls, int n)
{
	return int64_datum_array(items, nulls, n, INT8OID);
}

static Datum
tstz_array(const TimestampTz *items, const bool *nulls, int n)
{
	return int64_datum_array(items, nulls, n, TIMESTAMPTZOID);
}

char *
col_text(int row, int col)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);
}

Datum
col_datum(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

/* Reads (id bigint, inserted bool) from the single RETURNING row, if any. */
static StoreAction
returning_action(int64 *id)
{
	bool		isnull;
	StoreAction a = SA_UNCHANGED;

	if (SPI_processed == 1)
	{
		if (id)
			*id = DatumGetInt64(col_datum(0, 1, &isnull));
		a = DatumGetBool(col_datum(0, 2, &isnull)) ? SA_INSERTED : SA_UPDATED;
	}
	SPI_freetuptable(SPI_tuptable);
	return a;
}

/* -------------------------------------------------------------- mailboxes */

bool
store_load_mailbox(int64 mailbox_id, MailboxInfo *out)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID};
	Datum		v[1];
	bool		isnull;

	plan_once(&plan,
			  "SELECT m.org_id::text, m.provider_email, m.history_id, m.auth_state, "
			  "       c.mailbox_id IS NOT NULL AND (c.refresh_token IS NOT NULL OR m.service_account_id IS NOT NULL), "
			  "       c.refresh_token, c.access_token, c.access_token_expires_at, "
			  "       coalesce(m.service_account_id, 0) "
			  "  FROM " SCHEMA "mailboxes m "
			  "  LEFT JOIN " SCHEMA "mailbox_credentials c ON c.mailbox_id = m.id "
			  " WHERE m.id = $1",
			  1, types);
	v[0] = Int64GetDatum(mailbox_id);
	run_plan(plan, v, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		SPI_freetuptable(SPI_tuptable);
		return false;
	}
	memset(out, 0, sizeof(*out));
	out->id = mailbox_id;
	out->org_id = col_text(0, 1);
	out->email = col_text(0, 2);
	out->history_id = DatumGetInt64(col_datum(0, 3, &isnull));
	out->has_history = !isnull;
	out->auth_state = col_text(0, 4);
	out->has_credentials = DatumGetBool(col_datum(0, 5, &isnull));
	out->refresh_token = col_text(0, 6);
	out->access_token = col_text(0, 7);
	out->access_expires_at = DatumGetTimestampTz(col_datum(0, 8, &isnull));
	if (isnull)
		out->access_token = NULL;
	out->service_account_id = DatumGetInt64(col_datum(0, 9, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return true;
}

void
store_save_access_token(int64 mailbox_id, const char *token, TimestampTz expires_at)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, TEXTOID, TIMESTAMPTZOID};
	Datum		v[3];

	plan_once(&plan,
			  "UPDATE " SCHEMA "mailbox_credentials "
			  "   SET access_token = $2, access_token_expires_at = $3, updated_at = now() "
			  " WHERE mailbox_id = $1",
			  3, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = CStringGetTextDatum(token);
	v[2] = TimestampTzGetDatum(expires_at);
	run_plan(plan, v, NULL, SPI_OK_UPDATE);
}

void
store_set_auth_state(int64 mailbox_id, const char *state)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, TEXTOID};
	Datum		v[2];

	plan_once(&plan,
			  "UPDATE " SCHEMA "mailboxes SET auth_state = $2 "
			  " WHERE id = $1 AND auth_state IS DISTINCT FROM $2",
			  2, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = CStringGetTextDatum(state);
	run_plan(plan, v, NULL, SPI_OK_UPDATE);
}

void
store_set_history(int64 mailbox_id, int64 history_id)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, INT8OID};
	Datum		v[2];

	plan_once(&plan,
			  "UPDATE " SCHEMA "mailboxes SET history_id = $2, last_synced_at = now() WHERE id = $1",
			  2, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = Int64GetDatum(history_id);
	run_plan(plan, v, NULL, SPI_OK_UPDATE);
}

/* ---------------------------------------------------------------- the run */

int64
store_start_run(int64 mailbox_id, const char *mode, int days, bool has_history, int64 history_id)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, TEXTOID, INT4OID, INT8OID};
	Datum		v[4];
	char		n[4] = {' ', ' ', ' ', has_history ? ' ' : 'n'};
	bool		isnull;
	int64		id;

	plan_once(&plan,
			  "INSERT INTO " SCHEMA "sync_runs (mailbox_id, mode, window_days, history_id_before) "
			  "VALUES ($1, $2, $3, $4) RETURNING id",
			  4, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = CStringGetTextDatum(mode);
	v[2] = Int32GetDatum(days);
	v[3] = Int64GetDatum(history_id);
	run_plan(plan, v, n, SPI_OK_INSERT_RETURNING);
	id = DatumGetInt64(col_datum(0, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return id;
}

void
store_finish_run(int64 mailbox_id, int64 run_id, const char *mode, const char *status,
				 const char *error, bool has_history_after, int64 history_after,
				 const char *fallback, const RunCounters *c)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, INT8OID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TIMESTAMPTZOID,
		INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID,
	INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID};
	Datum		v[25];
	char		n[25];
	int64		counters[17];

	/*
	 * The finishing time and each counter are parameters: Citus refuses
	 * clock_timestamp() (volatile) in an UPDATE of a distributed table, and
	 * its deparser crashes on a subscripted parameter ($7[1]) in the SET.
	 */
	plan_once(&plan,
			  "UPDATE " SCHEMA "sync_runs SET finished_at = $8, mode = $3, status = $4, "
			  "  error = $5, history_id_after = $6, "
			  "  threads_inserted = $9, threads_updated = $10, threads_unchanged = $11, "
			  "  messages_inserted = $12, messages_updated = $13, messages_unchanged = $14, "
			  "  messages_deleted = $15, messages_vanished = $16, messages_parse_errors = $17, "
			  "  attachments_inserted = $18, attachments_updated = $19, "
			  "  attachments_unchanged = $20, blobs_inserted = $21, http_requests = $22, "
			  "  quota_units = $23, retries = $24, bytes_downloaded = $25, fallback = $7 "
			  " WHERE mailbox_id = $1 AND id = $2",
			  25, types);
	counters[0] = c->threads_inserted;
	counters[1] = c->threads_updated;
	counters[2] = c->threads_unchanged;
	counters[3] = c->messages_inserted;
	counters[4] = c->messages_updated;
	counters[5] = c->messages_unchanged;
	counters[6] = c->messages_deleted;
	counters[7] = c->messages_vanished;
	counters[8] = c->messages_parse_errors;
	counters[9] = c->attachments_inserted;
	counters[10] = c->attachments_updated;
	counters[11] = c->attachments_unchanged;
	counters[12] = c->blobs_inserted;
	counters[13] = c->http_requests;
	counters[14] = c->quota_units;
	counters[15] = c->retries;
	counters[16] = c->bytes_downloaded;
	memset(n, ' ', sizeof(n));
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = Int64GetDatum(run_id);
	v[2] = CStringGetTextDatum(mode);
	v[3] = CStringGetTextDatum(status);
	v[4] = text_or_null(error, &n[4]);
	v[5] = Int64GetDatum(history_after);
	if (!has_history_after)
		n[5] = 'n';
	v[6] = text_or_null(fallback, &n[6]);
	v[7] = TimestampTzGetDatum(GetCurrentTimestamp());
	for (int k = 0; k < 17; k++)
		v[8 + k] = Int64GetDatum(counters[k]);
	run_plan(plan, v, n, SPI_OK_UPDATE);
}

bool
store_previous_run_fell_back(int64 mailbox_id, int64 run_id)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, INT8OID};
	Datum		v[2];
	bool		fell_back = false;
	bool		isnull;

	plan_once(&plan,
			  "SELECT fallback IS NOT NULL FROM " SCHEMA "sync_runs "
			  " WHERE mailbox_id = $1 AND id < $2 AND status = 'succeeded' ORDER BY id DESC LIMIT 1",
			  2, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = Int64GetDatum(run_id);
	run_plan(plan, v, NULL, SPI_OK_SELECT);
	if (SPI_processed == 1)
		fell_back = DatumGetBool(col_datum(0, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return fell_back;
}

Datum
store_run_row(int64 mailbox_id, int64 run_id)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, INT8OID};
	Datum		v[2];

	plan_once(&plan,
			  "SELECT * FROM " SCHEMA "sync_runs WHERE mailbox_id = $1 AND id = $2",
			  2, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = Int64GetDatum(run_id);
	run_plan(plan, v, NULL, SPI_OK_SELECT);
	if (SPI_processed != 1)
		elog(ERROR, "sync run " INT64_FORMAT " not found", run_id);
	return PointerGetDatum(SPI_returntuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc));
}

void
store_ledger(int64 run_id, int64 mailbox_id, const char *event, int64 entity_id,
			 const char *provider_id, const char *detail_json)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, INT8OID, TEXTOID, INT8OID, TEXTOID, TEXTOID};
	Datum		v[6];
	char		n[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	plan_once(&plan,
			  "INSERT INTO " SCHEMA "ledger (sync_run_id, mailbox_id, event, entity_id, provider_id, detail) "
			  "VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
			  6, types);
	v[0] = Int64GetDatum(run_id);
	v[1] = Int64GetDatum(mailbox_id);
	v[2] = CStringGetTextDatum(event);
	v[3] = Int64GetDatum(entity_id);
	if (entity_id <= 0)
		n[3] = 'n';
	v[4] = text_or_null(provider_id, &n[4]);
	v[5] = text_or_null(detail_json, &n[5]);
	run_plan(plan, v, n, SPI_OK_INSERT);
}

/* ---------------------------------------------------------------- threads */

HTAB *
gmail_id_hash(const char *name, Size entry_size, long n)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = GMAIL_ID_SIZE;
	ctl.entrysize = entry_size;
	ctl.hcxt = CurrentMemoryContext;
	return hash_create(name, Max(n, 16), &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

HTAB *
store_thread_states(int64 mailbox_id, char **provider_ids, int n)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, TEXTARRAYOID};
	Datum		v[2];
	HTAB	   *h = gmail_id_hash("thread states", sizeof(ThreadState), n);
	uint64		i;

	plan_once(&plan,
			  "SELECT provider_thread_id, id, history_id, synced_since FROM " SCHEMA "mail_threads "
			  " WHERE mailbox_id = $1 AND provider_thread_id = ANY ($2)",
			  2, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = text_array(provider_ids, n);
	run_plan(plan, v, NULL, SPI_OK_SELECT);
	pfree(DatumGetPointer(v[1]));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		found,
					isnull;
		char	   *key = col_text(i, 1);
		ThreadState *st = hash_search(h, key, HASH_ENTER, &found);

		pfree(key);
		st->id = DatumGetInt64(col_datum(i, 2, &isnull));
		st->history_id = DatumGetInt64(col_datum(i, 3, &isnull));
		st->has_history = !isnull;
		st->synced_since = DatumGetTimestampTz(col_datum(i, 4, &isnull));
		st->has_synced_since = !isnull;
	}
	SPI_freetuptable(SPI_tuptable);
	return h;
}

void
store_ensure_threads(int64 mailbox_id, char **provider_ids, char **snippets, int n, int64 *ids)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		v[3];
	HTAB	   *h;
	uint64		i;

	if (n == 0)
		return;

	/*
	 * The sync holds the mailbox's lock, so no other session inserts these
	 * threads; the DO UPDATE only keeps every write an upsert.
	 */
	plan_once(&plan,
			  "INSERT INTO " SCHEMA "mail_threads AS t (mailbox_id, provider_thread_id, snippet) "
			  "SELECT $1, u.tid, u.snip FROM unnest($2::text[], $3::text[]) AS u(tid, snip) "
			  "ON CONFLICT (mailbox_id, provider_thread_id) DO UPDATE "
			  "   SET snippet = EXCLUDED.snippet "
			  " WHERE t.snippet IS DISTINCT FROM EXCLUDED.snippet "
			  "RETURNING t.provider_thread_id, t.id",
			  3, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = text_array(provider_ids, n);
	v[2] = text_array(snippets, n);
	run_plan(plan, v, NULL, SPI_OK_INSERT_RETURNING);
	pfree(DatumGetPointer(v[1]));
	pfree(DatumGetPointer(v[2]));

	h = gmail_id_hash("ensured threads", sizeof(ThreadState), n);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		found,
					isnull;
		char	   *key = col_text(i, 1);
		ThreadState *st = hash_search(h, key, HASH_ENTER, &found);

		pfree(key);
		st->id = DatumGetInt64(col_datum(i, 2, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	for (i = 0; i < (uint64) n; i++)
	{
		ThreadState *st = hash_search(h, provider_ids[i], HASH_FIND, NULL);

		if (st == NULL)
			elog(ERROR, "thread %s was not stored", provider_ids[i]);
		ids[i] = st->id;
	}
	hash_destroy(h);
}

void
store_finalize_threads(int64 mailbox_id, ThreadFinal *threads, int n,
					   ThreadReport report, void *arg)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr agg_plan = NULL;
	static const Oid agg_types[] = {INT8OID, INT8ARRAYOID, TEXTARRAYOID};
	static const Oid types[] = {INT8OID, TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID, INT8ARRAYOID,
	TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		v[8];
	int64	   *counts;
	TimestampTz *first_at;
	bool	   *first_null;
	TimestampTz *last_at;
	bool	   *last_null;
	int64	   *ids;
	char	  **pids;
	char	  **snips;
	int64	   *hists;
	bool	   *hist_null;
	TimestampTz *since;
	bool	   *since_null;
	HTAB	   *byid;
	HASHCTL		ctl;
	uint64		i;

	if (n == 0)
		return;

	/*
	 * Two statements: the counts and dates (and the snippet history gives
	 * none for) of each thread's stored messages, then the upsert of the
	 * threads from arrays.  Citus plans the first on the mailbox's shard;
	 * it refuses them as one INSERT ... SELECT (a table function joined to
	 * a distributed table).
	 */
	plan_once(&agg_plan,
			  "SELECT COALESCE(u.snip, n.snippet), s.c, s.first_at, s.last_at "
			  "  FROM unnest($2::int8[], $3::text[]) WITH ORDINALITY AS u(id, snip, ord) "
			  "  CROSS JOIN LATERAL ( "
			  "       SELECT count(*)::int8 AS c, min(m.internal_date) AS first_at, max(m.internal_date) AS last_at "
			  "         FROM " SCHEMA "mail_messages m "
			  "        WHERE m.mailbox_id = $1 AND m.thread_id = u.id AND m.deleted_at IS NULL) s "
			  /*
			   * Without a listed snippet (history gives none), Gmail's rule: the
			   * snippet of the thread's newest message it would list; none when
			   * no such message is left.  Never the stored one: which message
			   * last set it depends on how the syncs were cut, and the row must
			   * depend only on what Gmail holds.
			   */
			  "  LEFT JOIN LATERAL ( "
			  "       SELECT m.snippet FROM " SCHEMA "mail_messages m "
			  "        WHERE u.snip IS NULL AND m.mailbox_id = $1 AND m.thread_id = u.id "
			  "          AND m.deleted_at IS NULL AND NOT m.label_ids && '{SPAM,TRASH,DRAFT}' "
			  "        ORDER BY m.internal_date DESC, m.id DESC LIMIT 1) n ON true "
			  " ORDER BY u.ord",
			  3, agg_types);
	plan_once(&plan,
			  "INSERT INTO " SCHEMA "mail_threads AS t (mailbox_id, provider_thread_id, snippet, history_id, "
			  "       message_count, first_message_at, last_message_at, synced_since) "
			  "SELECT $1, u.tid, u.snip, u.hist, u.c::int, u.first_at, u.last_at, u.since "
			  "  FROM unnest($2::text[], $3::text[], $4::int8[], $5::int8[], $6::timestamptz[], "
			  "              $7::timestamptz[], $8::timestamptz[]) "
			  "       AS u(tid, snip, hist, c, first_at, last_at, since) "
			  /* A NULL synced_since means: keep what is stored. */
			  "ON CONFLICT (mailbox_id, provider_thread_id) DO UPDATE "
			  "   SET snippet = EXCLUDED.snippet, history_id = EXCLUDED.history_id, "
			  "       message_count = EXCLUDED.message_count, first_message_at = EXCLUDED.first_message_at, "
			  "       last_message_at = EXCLUDED.last_message_at, "
			  "       synced_since = COALESCE(EXCLUDED.synced_since, t.synced_since), updated_at = EXCLUDED.updated_at "
			  " WHERE (t.snippet, t.history_id, t.message_count, t.first_message_at, t.last_message_at, "
			  "        t.synced_since) IS DISTINCT FROM "
			  "       (EXCLUDED.snippet, EXCLUDED.history_id, EXCLUDED.message_count, "
			  "        EXCLUDED.first_message_at, EXCLUDED.last_message_at, "
			  "        COALESCE(EXCLUDED.synced_since, t.synced_since)) "
			  "RETURNING t.id",
			  8, types);

	ids = palloc(sizeof(int64) * n);
	pids = palloc(sizeof(char *) * n);
	snips = palloc(sizeof(char *) * n);
	hists = palloc(sizeof(int64) * n);
	hist_null = palloc(sizeof(bool) * n);
	since = palloc(sizeof(TimestampTz) * n);
	since_null = palloc(sizeof(bool) * n);
	counts = palloc(sizeof(int64) * n);
	first_at = palloc(sizeof(TimestampTz) * n);
	first_null = palloc(sizeof(bool) * n);
	last_at = palloc(sizeof(TimestampTz) * n);
	last_null = palloc(sizeof(bool) * n);
	for (i = 0; i < (uint64) n; i++)
	{
		ids[i] = threads[i].id;
		pids[i] = threads[i].provider_id;
		snips[i] = threads[i].snippet;
		hists[i] = threads[i].history_id;
		hist_null[i] = !threads[i].has_history;
		since[i] = threads[i].synced_since;
		since_null[i] = threads[i].synced_since == 0;
	}
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = int8_array_nullable(ids, NULL, n);
	v[2] = text_array(snips, n);
	run_plan(agg_plan, v, NULL, SPI_OK_SELECT);
	if (SPI_processed != (uint64) n)
		elog(ERROR, "thread aggregates: %d threads, " UINT64_FORMAT " rows", n, SPI_processed);
	for (i = 0; i < (uint64) n; i++)
	{
		bool		isnull;

		snips[i] = col_text(i, 1);
		counts[i] = DatumGetInt64(col_datum(i, 2, &isnull));
		first_at[i] = DatumGetTimestampTz(col_datum(i, 3, &first_null[i]));
		last_at[i] = DatumGetTimestampTz(col_datum(i, 4, &last_null[i]));
	}
	SPI_freetuptable(SPI_tuptable);

	v[1] = text_array(pids, n);
	v[2] = text_array(snips, n);
	v[3] = int8_array_nullable(hists, hist_null, n);
	v[4] = int8_array_nullable(counts, NULL, n);
	v[5] = tstz_array(first_at, first_null, n);
	v[6] = tstz_array(last_at, last_null, n);
	v[7] = tstz_array(since, since_null, n);
	run_plan(plan, v, NULL, SPI_OK_INSERT_RETURNING);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(int64);
	ctl.hcxt = CurrentMemoryContext;
	byid = hash_create("written threads", Max(SPI_processed, 16), &ctl,
					   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(col_datum(i, 1, &isnull));

		hash_search(byid, &id, HASH_ENTER, NULL);
	}
	SPI_freetuptable(SPI_tuptable);

	/* Threads inserted earlier in the run count as inserted, once. */
	for (i = 0; i < (uint64) n; i++)
	{
		bool		written = hash_search(byid, &threads[i].id, HASH_FIND, NULL) != NULL;

		if (threads[i].was_new)
			report(arg, &threads[i], SA_INSERTED);
		else
			report(arg, &threads[i], written ? SA_UPDATED : SA_UNCHANGED);
	}
	hash_destroy(byid);
	pfree(ids);
	pfree(pids);
	pfree(snips);
	pfree(hists);
	pfree(hist_null);
	pfree(since);
	pfree(since_null);
	pfree(counts);
	pfree(first_at);
	pfree(first_null);
	pfree(last_at);
	pfree(last_null);
}

/* --------------------------------------------------------------- messages */

HTAB *
store_message_states(int64 mailbox_id, char **provider_ids, int n)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, TEXTARRAYOID};
	Datum		v[2];
	HTAB	   *h = gmail_id_hash("message states", sizeof(MessageState), n);
	uint64		i;

	/*
	 * One index probe per id.  Without statistics (a first sync in a new
	 * installation) "mailbox_id = $1" looks rare, and "= ANY ($2)" of a
	 * page's 500 ids made the planner prefer scanning the mailbox through
	 * any index that starts with mailbox_id, filtering each row against the
	 * 500 ids: a cost growing with the mailbox on every listing page.
	 */
	plan_once(&plan,
			  "SELECT m.provider_message_id, m.id, m.thread_id, m.deleted_at IS NOT NULL "
			  "  FROM unnest($2::text[]) AS u(pid) "
			  "  CROSS JOIN LATERAL (SELECT x.provider_message_id, x.id, x.thread_id, x.deleted_at "
			  "                        FROM " SCHEMA "mail_messages x "
			  "                       WHERE x.mailbox_id = $1 AND x.provider_message_id = u.pid "
			  "                       LIMIT 1) m",
			  2, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = text_array(provider_ids, n);
	run_plan(plan, v, NULL, SPI_OK_SELECT);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		found,
					isnull;
		MessageState *st = hash_search(h, col_text(i, 1), HASH_ENTER, &found);
		st->id = DatumGetInt64(col_datum(i, 2, &isnull));
		st->thread_id = DatumGetInt64(col_datum(i, 3, &isnull));
		st->deleted = DatumGetBool(col_datum(i, 4, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	return h;
}

StoredMessageRef *
store_messages_of_threads(int64 mailbox_id, char **thread_ids, int n, TimestampTz since,
						  int *count)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, TEXTARRAYOID, TIMESTAMPTZOID};
	Datum		v[3];
	StoredMessageRef *out;
	uint64		i;

	*count = 0;
	if (n == 0)
		return NULL;
	plan_once(&plan,
			  "SELECT provider_message_id, provider_thread_id, thread_id, internal_date "
			  "  FROM " SCHEMA "mail_messages "
			  " WHERE mailbox_id = $1 AND provider_thread_id = ANY ($2) AND internal_date >= $3 "
			  "   AND deleted_at IS NULL "
			  " ORDER BY provider_thread_id",
			  3, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = text_array(thread_ids, n);
	v[2] = TimestampTzGetDatum(since);
	run_plan(plan, v, NULL, SPI_OK_SELECT);
	pfree(DatumGetPointer(v[1]));
	out = palloc0(sizeof(StoredMessageRef) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		out[i].provider_id = col_text(i, 1);
		out[i].provider_thread_id = col_text(i, 2);
		out[i].thread_id = DatumGetInt64(col_datum(i, 3, &isnull));
		out[i].internal_date = DatumGetTimestampTz(col_datum(i, 4, &isnull));
	}
	*count = (int) SPI_processed;
	SPI_freetuptable(SPI_tuptable);
	return out;
}

/*
 * The label and deletion upserts carry the stored row's own key values:
 * they are only called for messages already stored, under the mailbox's
 * lock, so the insert arm never fires and the conflict arm does the work.
 */
StoreAction
store_update_labels(int64 mailbox_id, const char *provider_message_id, int64 thread_id,
					const char *provider_thread_id, TimestampTz internal_date,
					char **labels, int label_count, int64 history_id, int64 *id)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, TEXTOID, INT8OID, TEXTOID, TIMESTAMPTZOID, TEXTARRAYOID, INT8OID};
	Datum		v[7];

	plan_once(&plan,
			  "INSERT INTO " SCHEMA "mail_messages AS m (mailbox_id, provider_message_id, thread_id, "
			  "  provider_thread_id, internal_date, label_ids, history_id) "
			  "VALUES ($1, $2, $3, $4, $5, $6, $7) "
			  "ON CONFLICT (mailbox_id, provider_message_id) DO UPDATE "
			  "   SET label_ids = EXCLUDED.label_ids, history_id = EXCLUDED.history_id, updated_at = EXCLUDED.updated_at "
			  " WHERE m.label_ids IS DISTINCT FROM EXCLUDED.label_ids "
			  "RETURNING m.id, (m.xmax = 0)",
			  7, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = CStringGetTextDatum(provider_message_id);
	v[2] = Int64GetDatum(thread_id);
	v[3] = CStringGetTextDatum(provider_thread_id);
	v[4] = TimestampTzGetDatum(internal_date);
	v[5] = text_array(labels, label_count);
	v[6] = Int64GetDatum(history_id);
	run_plan(plan, v, NULL, SPI_OK_INSERT_RETURNING);
	return returning_action(id);
}

StoreAction
store_mark_deleted(int64 mailbox_id, const char *provider_message_id, int64 thread_id,
				   const char *provider_thread_id, TimestampTz internal_date, int64 *id)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, TEXTOID, INT8OID, TEXTOID, TIMESTAMPTZOID};
	Datum		v[5];

	plan_once(&plan,
			  "INSERT INTO " SCHEMA "mail_messages AS m (mailbox_id, provider_message_id, thread_id, "
			  "  provider_thread_id, internal_date, deleted_at) "
			  "VALUES ($1, $2, $3, $4, $5, now()) "
			  "ON CONFLICT (mailbox_id, provider_message_id) DO UPDATE "
			  "   SET deleted_at = EXCLUDED.deleted_at, updated_at = EXCLUDED.updated_at "
			  " WHERE m.deleted_at IS NULL "
			  "RETURNING m.id, (m.xmax = 0)",
			  5, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = CStringGetTextDatum(provider_message_id);
	v[2] = Int64GetDatum(thread_id);
	v[3] = CStringGetTextDatum(provider_thread_id);
	v[4] = TimestampTzGetDatum(internal_date);
	run_plan(plan, v, NULL, SPI_OK_INSERT_RETURNING);
	return returning_action(id);
}
