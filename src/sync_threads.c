/*-------------------------------------------------------------------------
 * sync_threads.c
 *	  Thread rows during a sync: finding or creating the rows new messages
 *	  reference, and counting and logging what the final upsert wrote.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"

#include "sync_internal.h"

void
resolve_threads(SyncState *s, ThreadFinal *threads, int n, int64 *stored_history)
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

		stored_history[i] = (st && st->has_history) ? st->history_id : 0;
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
	hash_destroy(states);
	pfree(ids);
	pfree(new_ids);
	pfree(new_snips);
	pfree(new_rows);
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
