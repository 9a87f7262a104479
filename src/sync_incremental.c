/*-------------------------------------------------------------------------
 * sync_incremental.c
 *	  The incremental sync: Gmail's history since the stored historyId.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "message_row.h"
#include "sync_internal.h"

/*
 * Events
 * for one message are folded in order so the last one wins; label changes
 * are applied from the label set the record carries, without a fetch.
 * ------------------------------------------------------------------
 */
typedef struct FoldedMessage
{
	char		key[256];		/* provider_message_id */
	char	   *thread_id;
	bool		added;
	bool		deleted;
	bool		labels_known;	/* the last record carried the full label set */
	bool		labels_changed;
	char	  **labels;
	int			label_count;
	int64		record_id;
	int			order;			/* first appearance, for a stable order */
} FoldedMessage;

static void
fold_event(HTAB *h, const GmailHistoryEvent *ev, int *order)
{
	bool		found;
	FoldedMessage *f;

	if (ev->message.id == NULL || strlen(ev->message.id) >= 256)
		return;
	f = hash_search(h, ev->message.id, HASH_ENTER, &found);
	if (!found)
	{
		memset(((char *) f) + sizeof(f->key), 0, sizeof(FoldedMessage) - sizeof(f->key));
		f->order = (*order)++;
	}
	if (ev->message.thread_id)
		f->thread_id = pstrdup(ev->message.thread_id);
	f->record_id = Max(f->record_id, ev->record_id);
	switch (ev->change)
	{
		case HC_ADDED:
			f->added = true;
			f->deleted = false;
			break;
		case HC_DELETED:
			f->deleted = true;
			break;
		case HC_LABELS_ADDED:
		case HC_LABELS_REMOVED:
			f->labels_changed = true;
			break;
	}
	if (ev->message.has_labels)
	{
		int			k;

		f->labels_known = true;
		f->label_count = ev->message.label_count;
		f->labels = palloc(sizeof(char *) * (f->label_count + 1));
		for (k = 0; k < f->label_count; k++)
			f->labels[k] = pstrdup(ev->message.label_ids[k]);
	}
	else if (ev->change == HC_LABELS_ADDED || ev->change == HC_LABELS_REMOVED)
		f->labels_known = false;	/* a delta on an unknown base: fetch */
}

static int
cmp_folded(const void *a, const void *b)
{
	return (*(FoldedMessage *const *) a)->order - (*(FoldedMessage *const *) b)->order;
}

static bool
labels_exclude(char **labels, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		if (strcmp(labels[i], "DRAFT") == 0 || strcmp(labels[i], "SPAM") == 0 ||
			strcmp(labels[i], "TRASH") == 0)
			return true;
	return false;
}

/* Returns false when Gmail no longer has the start history id. */
bool
incremental_sync(SyncState *s)
{
	GmailCall	call;
	HTAB	   *folded;
	HASHCTL		ctl;
	char	   *page = NULL;
	int			order = 0;
	int			nfolded,
				i,
				nitems = 0,
				nthreads = 0;
	FoldedMessage **list;
	HASH_SEQ_STATUS seq;
	FoldedMessage *f;
	char	  **ids;
	HTAB	   *mstates;
	HTAB	   *threads_touched;
	FetchItem  *items;
	ThreadFinal *threads;
	PageGuard	guard;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = 256;
	ctl.entrysize = sizeof(FoldedMessage);
	ctl.hcxt = CurrentMemoryContext;
	folded = hash_create("history", 256, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	/* Every page, including pages with a token and no records. */
	page_guard_init(&guard, GM_HISTORY_LIST, s->days);
	do
	{
		memset(&call, 0, sizeof(call));
		call.method = GM_HISTORY_LIST;
		call.start_history_id = s->mb.history_id;
		call.page_token = page;
		gmail_run(s->gmail, &call);
		if (call.history_expired)
		{
			gmail_call_release(&call);
			return false;
		}
		for (i = 0; i < call.event_count; i++)
			fold_event(folded, &call.events[i], &order);
		s->new_history_id = call.history_id;
		s->has_new_history = true;
		page = page_guard_next(&guard, call.next_page_token);
		gmail_call_release(&call);
	} while (page != NULL);
	page_guard_done(&guard);

	nfolded = (int) hash_get_num_entries(folded);
	if (nfolded == 0)
		return true;

	list = palloc(sizeof(FoldedMessage *) * nfolded);
	ids = palloc(sizeof(char *) * nfolded);
	i = 0;
	hash_seq_init(&seq, folded);
	while ((f = hash_seq_search(&seq)) != NULL)
		list[i++] = f;
	qsort(list, nfolded, sizeof(FoldedMessage *), cmp_folded);
	for (i = 0; i < nfolded; i++)
		ids[i] = list[i]->key;
	mstates = store_message_states(s->mb.id, ids, nfolded);

	/* The threads the history touched, by provider id. */
	ctl.keysize = 256;
	ctl.entrysize = sizeof(ChangedThread);
	threads_touched = hash_create("touched threads", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	threads = palloc0(sizeof(ThreadFinal) * nfolded);
	items = palloc0(sizeof(FetchItem) * nfolded);

	for (i = 0; i < nfolded; i++)
	{
		MessageState *st;
		ChangedThread *ct;
		bool		found;

		f = list[i];
		st = hash_search(mstates, f->key, HASH_FIND, NULL);
		if (st == NULL && (f->deleted || !f->added || f->thread_id == NULL ||
						   (f->labels_known && labels_exclude(f->labels, f->label_count))))
			continue;			/* never stored, and nothing to store */
		if (f->thread_id == NULL || strlen(f->thread_id) >= 256)
			continue;
		ct = hash_search(threads_touched, f->thread_id, HASH_ENTER, &found);
		if (!found)
		{
			ct->index = nthreads;
			threads[nthreads].provider_id = pstrdup(f->thread_id);
			threads[nthreads].has_history = true;
			nthreads++;
		}
		threads[ct->index].history_id = Max(threads[ct->index].history_id, f->record_id);

		if (st != NULL && f->deleted)
		{
			FetchItem	it;

			memset(&it, 0, sizeof(it));
			it.id = f->key;
			it.thread_id = st->thread_id;
			it.provider_thread_id = f->thread_id;
			mark_deleted(s, &it);
		}
		else if (st != NULL && f->labels_changed && f->labels_known)
		{
			int64		id = 0;
			int			n = f->label_count;

			sort_labels(f->labels, &n);
			if (store_update_labels(s->mb.id, f->key, st->thread_id, f->thread_id, 0,
									f->labels, n, f->record_id, &id) != SA_UNCHANGED)
			{
				s->counters.messages_updated++;
				store_ledger(s->run_id, s->mb.id, "message.ingested", id, f->key,
							 action_detail(SA_UPDATED, "labels", labels_json(f->labels, n)));
			}
			else
				s->counters.messages_unchanged++;
		}
		else if (st != NULL && f->labels_changed)
		{
			items[nitems].id = f->key;
			items[nitems].stored = true;
			items[nitems].thread_index = ct->index;
			items[nitems].provider_thread_id = threads[ct->index].provider_id;
			items[nitems].thread_id = st->thread_id;
			nitems++;
		}
		else if (st == NULL)
		{
			items[nitems].id = f->key;
			items[nitems].thread_index = ct->index;
			items[nitems].provider_thread_id = threads[ct->index].provider_id;
			nitems++;
		}
	}
	hash_destroy(mstates);
	if (nthreads == 0)
		return true;

	/* Thread rows for threads seen for the first time. */
	{
		int64	   *stored_history = palloc(sizeof(int64) * nthreads);
		int			k;

		resolve_threads(s, threads, nthreads, stored_history);
		for (k = 0; k < nthreads; k++)
			if (stored_history[k] > threads[k].history_id)
				threads[k].history_id = stored_history[k];	/* never backwards */
		for (k = 0; k < nitems; k++)
			if (!items[k].stored)
				items[k].thread_id = threads[items[k].thread_index].id;
	}

	fetch_and_store(s, items, nitems);
	store_finalize_threads(s->mb.id, threads, nthreads, thread_report, s);
	return true;
}

