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

static void
stage_message_page(SyncState *s, GmailMessage *messages, int n, void *arg)
{
	char	  **ids = palloc(sizeof(char *) * Max(n, 1));
	char	  **thread_ids = palloc(sizeof(char *) * Max(n, 1));
	int			i;

	for (i = 0; i < n; i++)
	{
		ids[i] = messages[i].id;
		thread_ids[i] = messages[i].thread_id;
	}
	store_backfill_stage_messages(s->mb.id, ids, thread_ids, n);
	pfree(ids);
	pfree(thread_ids);
}

/* Every page of threads and messages, into the staging tables. */
static void
stage_listing(SyncState *s)
{
	char	   *query = window_query(s);
	ThreadFinal *threads;
	int			nthreads;

	threads = list_threads(s, query, &nthreads);
	store_backfill_stage_threads(s->mb.id, threads, nthreads);
	list_messages(s, query, stage_message_page, NULL);
}

/*
 * The next staged messages not stored yet, fetched; their threads' counts
 * stay exact after every batch, their history ids wait for the end.
 */
static void
fetch_batch(SyncState *s, char **ids, char **thread_ids, int n)
{
	SyncPlan	plan;
	int			i;

	plan_init(&plan);
	for (i = 0; i < n; i++)
	{
		FetchItem  *it = plan_item(&plan);
		bool		added;

		it->id = ids[i];
		it->thread_index = plan_thread(&plan, thread_ids[i], &added);
		it->provider_thread_id = plan.threads[it->thread_index].provider_id;
	}
	hash_destroy(resolve_threads(s, plan.threads, plan.nthreads));
	plan_execute(s, &plan);
}

bool
backfill_step(SyncState *s, int batch)
{
	BackfillState st;
	char	  **ids;
	char	  **tids;
	int64		remaining;
	int			n;
	ThreadFinal *threads;
	int			nthreads;

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
	if (n > 0)
	{
		fetch_batch(s, ids, tids, n);
		/* Vanished messages and drafts are not stored: drop them from the queue. */
		store_backfill_forget(s->mb.id, ids, n);
		if (remaining > n)
		{
			ereport(NOTICE,
					(errmsg("%d messages fetched, " INT64_FORMAT " left", n, remaining - n)));
			return false;
		}
	}

	/*
	 * Nothing left to fetch: finish in this same step, so a window that fits
	 * in one batch (most of a fleet's mailboxes) completes in one turn.
	 */
	threads = store_backfill_threads(s->mb.id, st.window_start, &nthreads);
	store_finalize_threads(s->mb.id, threads, nthreads, thread_report, s);
	store_backfill_clear(s->mb.id);
	s->new_history_id = st.history_id;
	s->has_new_history = true;
	return true;
}
