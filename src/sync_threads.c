/*-------------------------------------------------------------------------
 * sync_threads.c
 *	  What a plan collects before fetching (the threads it touches, the
 *	  items to fetch) and the thread rows around the fetch: finding or
 *	  creating the rows new messages reference, then counting and logging
 *	  what the final upsert wrote.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "sync_internal.h"

void
plan_init(SyncPlan *p)
{
	memset(p, 0, sizeof(*p));
	p->thread_index = gmail_id_hash("plan threads", sizeof(ThreadIndex), 64);
}

int
plan_thread(SyncPlan *p, const char *provider_thread_id, bool *added)
{
	ThreadIndex *ti = hash_search(p->thread_index, provider_thread_id, HASH_ENTER, added);

	*added = !*added;
	if (*added)
	{
		p->threads = grow_array(p->threads, p->nthreads, &p->threads_cap, sizeof(ThreadFinal));
		memset(&p->threads[p->nthreads], 0, sizeof(ThreadFinal));
		p->threads[p->nthreads].provider_id = pstrdup(provider_thread_id);
		ti->index = p->nthreads++;
	}
	return ti->index;
}

FetchItem *
plan_item(SyncPlan *p)
{
	FetchItem  *it;

	p->items = grow_array(p->items, p->nitems, &p->items_cap, sizeof(FetchItem));
	it = &p->items[p->nitems++];
	memset(it, 0, sizeof(*it));
	return it;
}

HTAB *
resolve_threads(SyncState *s, ThreadFinal *threads, int n)
{
	char	  **ids = palloc(sizeof(char *) * Max(n, 1));
	char	  **new_ids = palloc(sizeof(char *) * Max(n, 1));
	char	  **new_snips = palloc0(sizeof(char *) * Max(n, 1));
	int64	   *new_rows = palloc(sizeof(int64) * Max(n, 1));
	HTAB	   *states;
	int			nnew = 0,
				i;

	for (i = 0; i < n; i++)
		ids[i] = threads[i].provider_id;
	states = store_thread_states(s->mb.id, ids, n);
	for (i = 0; i < n; i++)
	{
		ThreadState *st = hash_search(states, ids[i], HASH_FIND, NULL);

		if (st)
			threads[i].id = st->id;
		else
		{
			threads[i].was_new = true;
			new_ids[nnew] = ids[i];
			new_snips[nnew] = threads[i].snippet;
			nnew++;
		}
	}
	store_ensure_threads(s->mb.id, new_ids, new_snips, nnew, new_rows);
	for (i = 0, nnew = 0; i < n; i++)
		if (threads[i].was_new)
			threads[i].id = new_rows[nnew++];
	pfree(ids);
	pfree(new_ids);
	pfree(new_snips);
	pfree(new_rows);
	return states;
}

/*
 * The threads' final rows, FINALIZE_CHUNK threads per statement pair in a
 * memory context reset after each: a first sync finalizes every thread of
 * its window, and the arrays, result rows and ledger details of all of
 * them at once made its peak memory grow with the mailbox (issue 15).
 */
#define FINALIZE_CHUNK 1000

static void
finalize_threads(SyncState *s, ThreadFinal *threads, int n)
{
	MemoryContext cxt;
	int			off;

	if (n == 0)
		return;
	cxt = AllocSetContextCreate(CurrentMemoryContext, "gmail_sync thread rows",
								ALLOCSET_DEFAULT_SIZES);
	for (off = 0; off < n; off += FINALIZE_CHUNK)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		store_finalize_threads(s->mb.id, threads + off, Min(FINALIZE_CHUNK, n - off),
							   thread_report, s);
		MemoryContextSwitchTo(old);
		MemoryContextReset(cxt);
	}
	MemoryContextDelete(cxt);
}

void
plan_execute(SyncState *s, SyncPlan *p)
{
	int			i;

	for (i = 0; i < p->nitems; i++)
		if (!p->items[i].stored)
			p->items[i].thread_id = p->threads[p->items[i].thread_index].id;
	fetch_and_store(s, p->items, p->nitems);
	finalize_threads(s, p->threads, p->nthreads);
}

void
thread_report(void *arg, const ThreadFinal *t, StoreAction action)
{
	SyncState  *s = (SyncState *) arg;

	if (action == SA_INSERTED)
		s->counters.threads_inserted++;
	else if (action == SA_UPDATED)
		s->counters.threads_updated++;
	else
		s->counters.threads_unchanged++;
	if (action != SA_UNCHANGED)
		store_ledger(s->run_id, s->mb.id, "thread.ingested", t->id, t->provider_id,
					 action_detail(action, NULL, NULL));
}
