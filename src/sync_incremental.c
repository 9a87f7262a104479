/*-------------------------------------------------------------------------
 * sync_incremental.c
 *	  The incremental sync: Gmail's history since the stored historyId.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"

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
	char		key[GMAIL_ID_SIZE];	/* provider_message_id */
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

	if (ev->message.id == NULL)
		return;
	require_gmail_id(ev->message.id, "message", GM_HISTORY_LIST);
	if (ev->message.thread_id)
		require_gmail_id(ev->message.thread_id, "thread", GM_HISTORY_LIST);
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

/* history.list, page by page: events folded into the hash */
typedef struct HistoryReading
{
	HTAB	   *folded;			/* FoldedMessage entries */
	int			order;
	bool		expired;		/* Gmail no longer has the start history id */
} HistoryReading;

static bool
fold_history_page(SyncState *s, GmailCall *page, void *arg)
{
	HistoryReading *r = (HistoryReading *) arg;
	int			i;

	if (page->history_expired)
	{
		r->expired = true;
		return false;
	}
	for (i = 0; i < page->event_count; i++)
		fold_event(r->folded, &page->events[i], &r->order);
	s->new_history_id = page->history_id;
	s->has_new_history = true;
	return true;
}

/*
 * Every page of history since the stored history id (including pages with
 * a token and no records), folded by message in first-seen order; NULL
 * when Gmail no longer has that history id.
 */
static FoldedMessage **
read_history(SyncState *s, int *count)
{
	HistoryReading r;
	GmailCall	request;
	HASH_SEQ_STATUS seq;
	FoldedMessage **list;
	FoldedMessage *f;
	int			n = 0;

	memset(&r, 0, sizeof(r));
	r.folded = gmail_id_hash("history", sizeof(FoldedMessage), 256);

	memset(&request, 0, sizeof(request));
	request.method = GM_HISTORY_LIST;
	request.start_history_id = s->mb.history_id;
	list_pages(s, &request, fold_history_page, &r);
	if (r.expired)
		return NULL;

	*count = (int) hash_get_num_entries(r.folded);
	list = palloc(sizeof(FoldedMessage *) * Max(*count, 1));
	hash_seq_init(&seq, r.folded);
	while ((f = hash_seq_search(&seq)) != NULL)
		list[n++] = f;
	qsort(list, n, sizeof(FoldedMessage *), cmp_folded);
	return list;
}

/*
 * What one folded message asks for, given its stored state (NULL when not
 * stored): a deletion or a label change applied now, or an item to fetch.
 */
static void
plan_folded_message(SyncState *s, SyncPlan *p, FoldedMessage *f, const MessageState *st)
{
	int			ti;
	bool		added;

	if (st == NULL && (f->deleted || !f->added || f->thread_id == NULL ||
					   (f->labels_known && labels_exclude(f->labels, f->label_count))))
		return;					/* never stored, and nothing to store */
	if (f->thread_id == NULL)
		return;
	ti = plan_thread(p, f->thread_id, &added);
	if (added)
		p->threads[ti].has_history = true;
	p->threads[ti].history_id = Max(p->threads[ti].history_id, f->record_id);

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
						 action_detail(SA_UPDATED, "labels", store_labels_json(f->labels, n)));
		}
		else
			s->counters.messages_unchanged++;
	}
	else if (st == NULL || f->labels_changed)
	{
		FetchItem  *it = plan_item(p);

		it->id = f->key;
		it->stored = st != NULL;
		it->thread_index = ti;
		it->provider_thread_id = p->threads[ti].provider_id;
		if (st != NULL)
			it->thread_id = st->thread_id;
	}
}

/* Returns false when Gmail no longer has the start history id. */
bool
incremental_sync(SyncState *s)
{
	FoldedMessage **folded;
	int			nfolded,
				i;
	char	  **ids;
	HTAB	   *mstates;
	SyncPlan	plan;

	folded = read_history(s, &nfolded);
	if (folded == NULL)
		return false;
	if (nfolded == 0)
		return true;

	ids = palloc(sizeof(char *) * nfolded);
	for (i = 0; i < nfolded; i++)
		ids[i] = folded[i]->key;
	mstates = store_message_states(s->mb.id, ids, nfolded);
	plan_init(&plan);
	for (i = 0; i < nfolded; i++)
		plan_folded_message(s, &plan, folded[i],
							hash_search(mstates, folded[i]->key, HASH_FIND, NULL));
	hash_destroy(mstates);
	if (plan.nthreads == 0)
		return true;

	/* Rows for threads seen for the first time; a thread's history id never goes backwards. */
	{
		HTAB	   *stored = resolve_threads(s, plan.threads, plan.nthreads);

		for (i = 0; i < plan.nthreads; i++)
		{
			ThreadState *st = hash_search(stored, plan.threads[i].provider_id, HASH_FIND, NULL);

			if (st && st->has_history && st->history_id > plan.threads[i].history_id)
				plan.threads[i].history_id = st->history_id;
		}
		hash_destroy(stored);
	}
	plan_execute(s, &plan);
	return true;
}
