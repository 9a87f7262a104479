/*-------------------------------------------------------------------------
 * sync_full.c
 *	  The full sync of a window.
 *
 * The profile's historyId is read first (the next sync starts there, so
 * nothing that changes meanwhile is missed), then the window's threads are
 * listed.  A thread whose Gmail historyId equals the stored one and that
 * was read over at least this window is not looked into: an unchanged
 * re-run costs the profile and the thread list.  For the other threads,
 * new messages are fetched raw once; messages already stored are only
 * re-checked for labels and deletion.  The messages listing is streamed:
 * each page's new messages are fetched and stored before the next page is
 * listed, so memory holds the window's threads but only one page of
 * messages, however large the mailbox (issue 15).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "sync_internal.h"

/*
 * 2-3. Rows for the listed threads never stored, so their messages can
 * reference them; the threads that changed since they were stored, or were
 * never read this far back, become the plan's threads.
 */
static void
plan_changed_threads(SyncState *s, ThreadFinal *listed, int n, SyncPlan *p)
{
	HTAB	   *stored = resolve_threads(s, listed, n);
	int			i;

	for (i = 0; i < n; i++)
	{
		ThreadState *st = hash_search(stored, listed[i].provider_id, HASH_FIND, NULL);
		bool		same_history = st && st->has_history && st->history_id == listed[i].history_id;
		bool		added;
		int			k;

		if (same_history && st->has_synced_since && st->synced_since <= s->window_start)
		{
			s->counters.threads_unchanged++;
			continue;
		}
		k = plan_thread(p, listed[i].provider_id, &added);
		if (added)
			pfree(p->threads[k].provider_id);	/* the listed one's is as good */
		p->threads[k] = listed[i];
		/* Same history, wider window: what was read before still holds. */
		p->threads[k].synced_since = same_history && st->has_synced_since
			? Min(st->synced_since, s->window_start) : s->window_start;
	}
	hash_destroy(stored);
}

/* 4. A page of the window's messages: those of changed threads not stored yet are fetched. */
static void
plan_new_messages(SyncState *s, GmailMessage *messages, int n, void *arg)
{
	SyncPlan   *p = (SyncPlan *) arg;
	char	  **ids = palloc(sizeof(char *) * Max(n, 1));
	HTAB	   *stored;
	int			i;

	for (i = 0; i < n; i++)
		ids[i] = messages[i].id;
	stored = store_message_states(s->mb.id, ids, n);
	for (i = 0; i < n; i++)
	{
		ThreadIndex *ti = hash_search(p->thread_index, messages[i].thread_id, HASH_FIND, NULL);
		FetchItem  *it;

		if (ti == NULL)
			continue;			/* unchanged thread, or one listed after the thread list */
		if (hash_search(stored, messages[i].id, HASH_FIND, NULL) != NULL)
			continue;			/* stored: its labels are checked in step 5 */
		it = plan_item(p);
		it->id = pstrdup(messages[i].id);
		it->thread_index = ti->index;
		it->provider_thread_id = p->threads[ti->index].provider_id;
	}
	hash_destroy(stored);
	pfree(ids);
}

/*
 * 5. Stored messages of changed threads inside the window: labels may have
 * moved, or the message may be gone (also those no longer listed, e.g.
 * moved to Trash).  One threads.get covers a thread's group of two or more.
 */
static void
plan_label_checks(SyncState *s, SyncPlan *p)
{
	char	  **thread_ids = palloc(sizeof(char *) * Max(p->nthreads, 1));
	StoredMessageRef *refs;
	int			nrefs,
				i;

	for (i = 0; i < p->nthreads; i++)
		thread_ids[i] = p->threads[i].provider_id;
	refs = store_messages_of_threads(s->mb.id, thread_ids, p->nthreads, s->window_start, &nrefs);
	/* refs come grouped by thread */
	for (i = 0; i < nrefs;)
	{
		FetchItem  *it = plan_item(p);
		int			j = i;

		while (j < nrefs && strcmp(refs[j].provider_thread_id, refs[i].provider_thread_id) == 0)
			j++;
		*it = item_for_ref(&refs[i]);
		if (j - i > 1)
		{
			it->id = refs[i].provider_thread_id;
			it->whole_thread = true;
			it->refs = &refs[i];
			it->nrefs = j - i;
		}
		i = j;
	}
	pfree(thread_ids);
}

/*
 * 4, streamed: each page of the listing has its new messages fetched and
 * stored before the next page is asked for, so a first sync holds one
 * page of items, not the window's.  The page's items live in a context
 * reset after the page.
 */
typedef struct StreamPages
{
	SyncPlan   *plan;
	MemoryContext page_cxt;
	int			nchecks;		/* label checks fetched after the listing */
	bool		first_page;
} StreamPages;

static void
stream_new_messages(SyncState *s, GmailMessage *messages, int n, void *arg)
{
	StreamPages *sp = (StreamPages *) arg;
	SyncPlan   *p = sp->plan;
	MemoryContext old = MemoryContextSwitchTo(sp->page_cxt);
	int			i;

	/*
	 * The progress NOTICEs' "to do": the listing is not all known yet, so
	 * Gmail's estimate of it stands in (all new in a first sync) until the
	 * listing ends.
	 */
	if (sp->first_page)
		s->todo_hint = s->todo + s->listing_estimate + sp->nchecks;
	sp->first_page = false;
	plan_new_messages(s, messages, n, p);
	for (i = 0; i < p->nitems; i++)
		p->items[i].thread_id = p->threads[p->items[i].thread_index].id;
	fetch_and_store(s, p->items, p->nitems);
	MemoryContextSwitchTo(old);
	p->items = NULL;
	p->nitems = p->items_cap = 0;
	MemoryContextReset(sp->page_cxt);
}

void
full_sync(SyncState *s)
{
	char	   *query = window_query(s);
	ThreadFinal *listed;
	int			nlisted;
	SyncPlan	plan;
	FetchItem  *checks;
	int			nchecks;
	StreamPages sp;

	/* The next sync starts at the history id read before listing began. */
	s->new_history_id = s->profile_history_id;
	s->has_new_history = true;

	/* 1. The window's threads, with their Gmail historyIds. */
	listed = list_threads(s, query, &nlisted);
	if (nlisted == 0)
		return;

	plan_init(&plan);
	plan_changed_threads(s, listed, nlisted, &plan);
	/* the plan's threads are copies (their strings are shared, not freed) */
	pfree(listed);
	if (plan.nthreads == 0)
		return;

	/* 5 before 4: the stored messages to re-check are those stored before this run */
	plan_label_checks(s, &plan);
	checks = plan.items;
	nchecks = plan.nitems;
	plan.items = NULL;
	plan.nitems = plan.items_cap = 0;

	sp.plan = &plan;
	sp.nchecks = nchecks;
	sp.first_page = true;
	sp.page_cxt = AllocSetContextCreate(CurrentMemoryContext, "gmail_sync listing page",
										ALLOCSET_DEFAULT_SIZES);
	list_messages(s, query, stream_new_messages, &sp);
	MemoryContextDelete(sp.page_cxt);
	s->todo_hint = 0;

	/* 6. The label checks, then the threads' counts and history ids. */
	plan.items = checks;
	plan.nitems = nchecks;
	plan_execute(s, &plan);
}
