/*-------------------------------------------------------------------------
 * sync_backfill.c
 *	  One step of gmail_backfill: the result of a full sync, one batch per
 *	  transaction, for windows too large for one.
 *
 * The first step reads the profile's historyId and stages the window's
 * listing; each step then fetches the next staged messages not stored yet
 * and keeps the touched threads' counts exact, with their history id NULL
 * (not fully read yet) so no full sync trusts them.  The last step gives
 * every staged thread its listed history id and only then moves the
 * mailbox's history_id.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "sync_internal.h"

/* Every page of threads and messages, into the staging tables. */
static void
stage_listing(SyncState *s)
{
	char	   *query = window_query(s);
	ThreadFinal *threads;
	int			nthreads;
	char	   *page = NULL;
	PageGuard	guard;

	threads = list_threads(s, query, &nthreads);
	store_backfill_stage_threads(s->mb.id, threads, nthreads);
	page_guard_init(&guard, GM_MESSAGES_LIST, s->days);
	do
	{
		GmailCall	call;
		char	  **ids;
		char	  **tids;
		int			i;

		memset(&call, 0, sizeof(call));
		call.method = GM_MESSAGES_LIST;
		call.query = query;
		call.page_token = page;
		gmail_run(s->gmail, &call);
		ids = palloc(sizeof(char *) * Max(call.message_count, 1));
		tids = palloc(sizeof(char *) * Max(call.message_count, 1));
		for (i = 0; i < call.message_count; i++)
		{
			ids[i] = call.messages[i].id;
			tids[i] = call.messages[i].thread_id;
		}
		store_backfill_stage_messages(s->mb.id, ids, tids, call.message_count);
		page = page_guard_next(&guard, call.next_page_token);
		gmail_call_release(&call);
	} while (page != NULL);
	page_guard_done(&guard);
}

/* Thread rows for the batch; fills each item's thread_id. */
static ThreadFinal *
batch_threads(SyncState *s, FetchItem *items, int n, int *count)
{
	HTAB	   *seen;
	HASHCTL		ctl;
	ThreadFinal *threads = palloc0(sizeof(ThreadFinal) * Max(n, 1));
	int64	   *stored_history = palloc(sizeof(int64) * Max(n, 1));
	int			nthreads = 0,
				i;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = 256;
	ctl.entrysize = sizeof(ChangedThread);
	ctl.hcxt = CurrentMemoryContext;
	seen = hash_create("backfill threads", Max(n, 16), &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (i = 0; i < n; i++)
	{
		bool		found;
		ChangedThread *ct = hash_search(seen, items[i].provider_thread_id, HASH_ENTER, &found);

		if (!found)
		{
			ct->index = nthreads;
			threads[nthreads++].provider_id = items[i].provider_thread_id;
		}
		items[i].thread_index = ct->index;
	}
	resolve_threads(s, threads, nthreads, stored_history);
	for (i = 0; i < n; i++)
		items[i].thread_id = threads[items[i].thread_index].id;
	hash_destroy(seen);
	*count = nthreads;
	return threads;
}

bool
backfill_step(SyncState *s, int batch)
{
	BackfillState st;
	char	  **ids;
	char	  **tids;
	int64		remaining;
	int			n,
				i;

	store_backfill_state(s->mb.id, &st);
	if (st.active && st.days != s->days)
	{
		/* Another window was asked for: start over (stored messages stay). */
		store_backfill_clear(s->mb.id);
		st.active = false;
	}
	if (!st.active)
	{
		stage_listing(s);
		st.history_id = s->profile_history_id;
		st.window_start = s->window_start;
		st.days = s->days;
		store_backfill_begin(s->mb.id, st.history_id, st.window_start, st.days);
	}
	s->has_new_history = false;
	s->window_start = st.window_start;

	n = store_backfill_next(s->mb.id, batch, &ids, &tids, &remaining);
	if (n == 0)
	{
		ThreadFinal *threads;
		int			nthreads;

		threads = store_backfill_threads(s->mb.id, st.window_start, &nthreads);
		store_finalize_threads(s->mb.id, threads, nthreads, thread_report, s);
		store_backfill_clear(s->mb.id);
		s->new_history_id = st.history_id;
		s->has_new_history = true;
		return true;
	}

	{
		FetchItem  *items = palloc0(sizeof(FetchItem) * n);
		ThreadFinal *threads;
		int			nthreads;

		for (i = 0; i < n; i++)
		{
			items[i].id = ids[i];
			items[i].provider_thread_id = tids[i];
		}
		threads = batch_threads(s, items, n, &nthreads);
		fetch_and_store(s, items, n);
		/* Counts stay exact after every batch; history ids wait for the end. */
		for (i = 0; i < nthreads; i++)
			threads[i].has_history = false;
		store_finalize_threads(s->mb.id, threads, nthreads, thread_report, s);
		/* Vanished messages and drafts are not stored: drop them from the queue. */
		store_backfill_forget(s->mb.id, ids, n);
	}
	ereport(NOTICE,
			(errmsg("%d messages fetched, " INT64_FORMAT " left", n, remaining - n)));
	return false;
}
