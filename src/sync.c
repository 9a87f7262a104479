/*-------------------------------------------------------------------------
 * sync.c
 *	  What one sync fetches and in which order.
 *
 * A full sync reads the profile's historyId first (the next sync starts
 * there, so nothing that changes meanwhile is missed), then lists the
 * window's threads.  A thread whose Gmail historyId equals the stored one
 * and that was read over at least this window is not looked into at all:
 * an unchanged re-run costs the profile and the thread list.  For the other
 * threads, new messages are fetched raw once and stored; messages already
 * stored are only re-checked for labels (format=minimal).  Fetches are
 * pipelined: database work on one answer overlaps the transfers of others.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "message_row.h"
#include "mime_parse.h"
#include "remote_error.h"
#include "settings.h"
#include "sync.h"

#define PROGRESS_EVERY_MESSAGES 500
#define PROGRESS_EVERY_MS 5000

typedef struct ChangedThread
{
	char		key[256];		/* provider_thread_id */
	int			index;			/* into the ThreadFinal array */
} ChangedThread;

/*
 * Something to fetch: a new message (raw), a stored message's labels
 * (messages.get minimal), or the labels of several stored messages of one
 * thread at once (threads.get minimal: 10 units instead of 5 per message).
 */
typedef struct FetchItem
{
	char	   *id;				/* message id, or thread id for a thread item */
	bool		stored;
	bool		whole_thread;
	int			thread_index;
	int64		thread_id;
	char	   *provider_thread_id;
	TimestampTz internal_date;	/* stored messages only */
	StoredMessageRef *refs;		/* whole_thread: the stored messages to check */
	int			nrefs;
} FetchItem;

static char *
action_detail(StoreAction a, const char *extra_key, const char *extra_json)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"action\":\"%s\"", store_action_name(a));
	if (extra_key)
		appendStringInfo(&buf, ",\"%s\":%s", extra_key, extra_json);
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

static char *
labels_json(char **labels, int n)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		escape_json(&buf, labels[i]);
	}
	appendStringInfoChar(&buf, ']');
	return buf.data;
}

static bool
has_label(const GmailMessage *m, const char *label)
{
	int			i;

	for (i = 0; i < m->label_count; i++)
		if (strcmp(m->label_ids[i], label) == 0)
			return true;
	return false;
}

static void
report_progress(SyncState *s, bool force)
{
	TimestampTz now = GetCurrentTimestamp();

	if (!force && s->done % PROGRESS_EVERY_MESSAGES != 0 &&
		!TimestampDifferenceExceeds(s->last_progress, now, PROGRESS_EVERY_MS))
		return;
	s->last_progress = now;
	ereport(NOTICE,
			(errmsg("gmail_sync: mailbox " INT64_FORMAT ": " INT64_FORMAT " of " INT64_FORMAT
					" messages done", s->mb.id, s->done, s->todo)));
}

/* ------------------------------------------------------------------ */

static void
store_attachments(SyncState *s, int64 message_id, const mp_message *mp)
{
	size_t		i;

	for (i = 0; i < mp->attachment_count; i++)
	{
		const mp_attachment *a = &mp->attachments[i];
		AttachmentRow row;
		StoreAction act;
		int64		id = 0;

		if (store_put_blob(a->sha256_hex, a->data, a->size))
			s->counters.blobs_inserted++;
		memset(&row, 0, sizeof(row));
		row.mailbox_id = s->mb.id;
		row.message_id = message_id;
		row.part_id = a->part_id;
		row.filename = a->filename ? a->filename : "";
		row.filename_derived = a->filename_derived;
		row.mime_type = a->mime_type ? a->mime_type : "application/octet-stream";
		row.size_bytes = (int64) a->size;
		row.content_id = a->content_id;
		row.is_inline = a->is_inline;
		row.sha256_hex = a->sha256_hex;
		row.storage_path = psprintf("%s/" INT64_FORMAT "/%s/%s", s->mb.org_id, s->mb.id,
									a->sha256_hex, row.filename);
		act = store_upsert_attachment(&row, &id);
		if (act == SA_INSERTED)
			s->counters.attachments_inserted++;
		else if (act == SA_UPDATED)
			s->counters.attachments_updated++;
		else
			s->counters.attachments_unchanged++;
		if (act != SA_UNCHANGED)
		{
			StringInfoData d;

			initStringInfo(&d);
			appendStringInfo(&d, "{\"action\":\"%s\",\"part_id\":", store_action_name(act));
			escape_json(&d, a->part_id);
			appendStringInfo(&d, ",\"sha256\":\"%s\",\"size_bytes\":%zu}", a->sha256_hex, a->size);
			store_ledger(s->run_id, s->mb.id, "attachment.saved", id, NULL, d.data);
		}
	}
}

/* A new message's raw bytes: blob, parse, row, attachments, ledger. */
static void
ingest_raw_message(SyncState *s, const FetchItem *item, GmailMessage *gm)
{
	char	   *raw_sha = NULL;
	mp_message	mp;
	volatile bool parsed = false;

	if (has_label(gm, "DRAFT"))
		return;					/* drafts are not ingested */

	raw_sha = sha256_hex_of(gm->raw, gm->raw_len);
	if (gi_store_raw)
	{
		if (store_put_blob(raw_sha, gm->raw, gm->raw_len))
			s->counters.blobs_inserted++;
	}

	memset(&mp, 0, sizeof(mp));
	PG_TRY();
	{
		MessageRow	row;
		StoreAction act;
		int64		id = 0;

		if (!mp_parse(gm->raw, gm->raw_len, &mp))
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory while parsing message %s", gm->id)));
		parsed = true;
		if (mp.parse_error)
			s->counters.messages_parse_errors++;

		build_message_row(&row, s->mb.id, item->thread_id, gm, &mp,
						  gi_store_raw ? raw_sha : NULL);
		act = store_upsert_message(&row, &id);
		if (act == SA_INSERTED)
			s->counters.messages_inserted++;
		else if (act == SA_UPDATED)
			s->counters.messages_updated++;
		else
			s->counters.messages_unchanged++;
		if (act != SA_UNCHANGED)
		{
			StringInfoData d;

			initStringInfo(&d);
			appendStringInfo(&d, "{\"action\":\"%s\",\"thread\":", store_action_name(act));
			escape_json(&d, gm->thread_id);
			appendStringInfo(&d, ",\"labels\":%s}", labels_json(row.labels, row.label_count));
			store_ledger(s->run_id, s->mb.id, "message.ingested", id, gm->id, d.data);
		}
		store_attachments(s, id, &mp);
	}
	PG_FINALLY();
	{
		if (parsed)
			mp_message_free(&mp);
	}
	PG_END_TRY();
}

/* A stored message's current labels (format=minimal). */
static void
refresh_labels(SyncState *s, const FetchItem *item, GmailMessage *gm)
{
	int			n = gm->label_count;
	int64		id = 0;
	StoreAction act;

	sort_labels(gm->label_ids, &n);
	act = store_update_labels(s->mb.id, item->id, item->thread_id, item->provider_thread_id,
							  item->internal_date, gm->label_ids, n, gm->history_id, &id);
	if (act == SA_UNCHANGED)
		s->counters.messages_unchanged++;
	else
	{
		s->counters.messages_updated++;
		store_ledger(s->run_id, s->mb.id, "message.ingested", id, item->id,
					 action_detail(SA_UPDATED, "labels", labels_json(gm->label_ids, n)));
	}
}

static void
mark_deleted(SyncState *s, const FetchItem *item)
{
	int64		id = 0;

	if (store_mark_deleted(s->mb.id, item->id, item->thread_id, item->provider_thread_id,
						   item->internal_date, &id) != SA_UNCHANGED)
	{
		s->counters.messages_deleted++;
		store_ledger(s->run_id, s->mb.id, "message.deleted", id, item->id, NULL);
	}
}

static FetchItem
item_for_ref(const StoredMessageRef *ref)
{
	FetchItem	it;

	memset(&it, 0, sizeof(it));
	it.id = ref->provider_id;
	it.stored = true;
	it.thread_id = ref->thread_id;
	it.provider_thread_id = ref->provider_thread_id;
	it.internal_date = ref->internal_date;
	return it;
}

/* A thread's current messages: labels of those stored, deletions of the rest. */
static void
process_thread(SyncState *s, const FetchItem *item, GmailCall *call)
{
	int			i,
				k;

	for (i = 0; i < item->nrefs; i++)
	{
		FetchItem	it = item_for_ref(&item->refs[i]);
		GmailMessage *found = NULL;

		for (k = 0; !call->not_found && k < call->message_count; k++)
			if (strcmp(call->messages[k].id, it.id) == 0)
			{
				found = &call->messages[k];
				break;
			}
		if (found)
			refresh_labels(s, &it, found);
		else
			mark_deleted(s, &it);
	}
}

static void
process_fetched(SyncState *s, const FetchItem *item, GmailCall *call)
{
	if (item->whole_thread)
	{
		process_thread(s, item, call);
		return;
	}
	if (call->not_found)
	{
		/* Gone between listing and fetching: a stored one was deleted. */
		if (item->stored)
			mark_deleted(s, item);
		else
			s->counters.messages_vanished++;
		return;
	}
	if (item->stored)
		refresh_labels(s, item, &call->message);
	else
		ingest_raw_message(s, item, &call->message);
}

/*
 * Fetch every item, keeping up to twice max_concurrency calls queued so a
 * transfer slot never waits for the database, and process each answer in
 * a memory context reset afterwards.
 */
static void
fetch_and_store(SyncState *s, FetchItem *items, int n)
{
	int			window = Max(1, gi_max_concurrency * 2);
	GmailCall  *calls = palloc0(sizeof(GmailCall) * window);
	int		   *free_slots = palloc(sizeof(int) * window);
	int			nfree = window;
	int			next = 0;
	int			i;

	for (i = 0; i < window; i++)
		free_slots[i] = window - 1 - i;
	s->todo += n;
	while (next < n || gmail_pending(s->gmail) > 0)
	{
		GmailCall  *done;

		while (next < n && nfree > 0)
		{
			GmailCall  *c = &calls[free_slots[--nfree]];

			memset(c, 0, sizeof(*c));
			c->method = items[next].whole_thread ? GM_THREAD_MINIMAL
				: items[next].stored ? GM_MESSAGE_MINIMAL : GM_MESSAGE_RAW;
			c->id = items[next].id;
			c->opaque = &items[next];
			gmail_submit(s->gmail, c);
			next++;
		}
		done = gmail_next(s->gmail);
		if (done == NULL)
			break;
		{
			MemoryContext old = MemoryContextSwitchTo(s->item_cxt);

			process_fetched(s, (FetchItem *) done->opaque, done);
			MemoryContextSwitchTo(old);
			MemoryContextReset(s->item_cxt);
		}
		gmail_call_release(done);
		free_slots[nfree++] = (int) (done - calls);
		s->done++;
		report_progress(s, false);
	}
	pfree(calls);
	pfree(free_slots);
}

/* ------------------------------------------------------------------ */

static void
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

static char *
window_query(SyncState *s)
{
	pg_time_t	after = timestamptz_to_time_t(s->window_start);

	return psprintf("after:" INT64_FORMAT, (int64) after);
}

static void
read_profile(SyncState *s)
{
	GmailCall	call;

	memset(&call, 0, sizeof(call));
	call.method = GM_PROFILE;
	gmail_run(s->gmail, &call);

	/* A token of another account would file its mail under this mailbox. */
	if (call.email != NULL && pg_strcasecmp(call.email, s->mb.email) != 0)
		remote_failure(RF_AUTH, ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
					   errmsg("the refresh token of mailbox " INT64_FORMAT " belongs to another account",
							  s->mb.id),
					   errdetail("The mailbox is registered as \"%s\"; Gmail says the token is for \"%s\".",
								 s->mb.email, call.email));
	s->new_history_id = call.history_id;
	s->has_new_history = true;
	gmail_call_release(&call);
}

static void
full_sync(SyncState *s)
{
	char	   *query = window_query(s);
	GmailCall	call;
	ThreadFinal *threads = NULL;
	int			nthreads = 0,
				cap = 0;
	char	  **listed_ids;
	HTAB	   *stored;
	HTAB	   *changed;
	HASHCTL		ctl;
	ThreadFinal *ch;
	int			nch = 0;
	char	  **new_ids;
	char	  **new_snips;
	int64	   *new_row_ids;
	int			nnew = 0;
	FetchItem  *items = NULL;
	int			nitems = 0,
				icap = 0;
	char	  *page = NULL;
	int			i;

	read_profile(s);

	/* 1. The window's threads, with their Gmail historyIds. */
	do
	{
		memset(&call, 0, sizeof(call));
		call.method = GM_THREADS_LIST;
		call.query = query;
		call.page_token = page;
		gmail_run(s->gmail, &call);
		for (i = 0; i < call.thread_count; i++)
		{
			if (nthreads == cap)
			{
				cap = cap ? cap * 2 : 512;
				threads = threads ? repalloc(threads, sizeof(ThreadFinal) * cap)
					: palloc(sizeof(ThreadFinal) * cap);
			}
			memset(&threads[nthreads], 0, sizeof(ThreadFinal));
			threads[nthreads].provider_id = pstrdup(call.threads[i].id);
			threads[nthreads].snippet = call.threads[i].snippet ? pstrdup(call.threads[i].snippet) : NULL;
			threads[nthreads].history_id = call.threads[i].history_id;
			threads[nthreads].has_history = true;
			nthreads++;
		}
		page = call.next_page_token ? pstrdup(call.next_page_token) : NULL;
		gmail_call_release(&call);
	} while (page != NULL);

	if (nthreads == 0)
		return;

	/* 2. Which of them changed since they were stored, or were never read this far back. */
	listed_ids = palloc(sizeof(char *) * nthreads);
	for (i = 0; i < nthreads; i++)
		listed_ids[i] = threads[i].provider_id;
	stored = store_thread_states(s->mb.id, listed_ids, nthreads);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = 256;
	ctl.entrysize = sizeof(ChangedThread);
	ctl.hcxt = CurrentMemoryContext;
	changed = hash_create("changed threads", Max(nthreads, 16), &ctl,
						  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	ch = palloc(sizeof(ThreadFinal) * nthreads);
	new_ids = palloc(sizeof(char *) * nthreads);
	new_snips = palloc(sizeof(char *) * nthreads);
	for (i = 0; i < nthreads; i++)
	{
		ThreadState *st = hash_search(stored, threads[i].provider_id, HASH_FIND, NULL);
		ChangedThread *ct;
		bool		found;

		if (st && st->has_history && st->history_id == threads[i].history_id &&
			st->has_synced_since && st->synced_since <= s->window_start)
		{
			s->counters.threads_unchanged++;
			continue;
		}
		if (strlen(threads[i].provider_id) >= 256)
			continue;
		ct = hash_search(changed, threads[i].provider_id, HASH_ENTER, &found);
		if (found)
			continue;			/* listed twice across pages */
		ct->index = nch;
		ch[nch] = threads[i];
		if (st)
		{
			ch[nch].id = st->id;
			/* Same history, wider window: what was read before still holds. */
			ch[nch].synced_since = (st->has_history && st->history_id == threads[i].history_id &&
									st->has_synced_since)
				? Min(st->synced_since, s->window_start) : s->window_start;
		}
		else
		{
			ch[nch].was_new = true;
			ch[nch].synced_since = s->window_start;
			new_ids[nnew] = ch[nch].provider_id;
			new_snips[nnew] = ch[nch].snippet;
			nnew++;
		}
		nch++;
	}
	hash_destroy(stored);
	if (nch == 0)
		return;

	/* 3. Rows for new threads, so their messages can reference them. */
	new_row_ids = palloc(sizeof(int64) * Max(nnew, 1));
	store_ensure_threads(s->mb.id, new_ids, new_snips, nnew, new_row_ids);
	for (i = 0, nnew = 0; i < nch; i++)
		if (ch[i].was_new)
			ch[i].id = new_row_ids[nnew++];

	/* 4. The window's messages; keep those of changed threads. */
	page = NULL;
	do
	{
		char	  **ids;
		int			k = 0;
		HTAB	   *mstates;

		memset(&call, 0, sizeof(call));
		call.method = GM_MESSAGES_LIST;
		call.query = query;
		call.page_token = page;
		gmail_run(s->gmail, &call);

		ids = palloc(sizeof(char *) * Max(call.message_count, 1));
		for (i = 0; i < call.message_count; i++)
			if (strlen(call.messages[i].id) < 256)
				ids[k++] = call.messages[i].id;
		mstates = store_message_states(s->mb.id, ids, k);
		for (i = 0; i < call.message_count; i++)
		{
			GmailMessage *m = &call.messages[i];
			ChangedThread *ct = hash_search(changed, m->thread_id, HASH_FIND, NULL);

			if (ct == NULL || strlen(m->id) >= 256)
				continue;		/* unchanged thread, or one listed after the thread list */
			if (hash_search(mstates, m->id, HASH_FIND, NULL) != NULL)
				continue;		/* stored: its labels are checked in step 5 */
			if (nitems == icap)
			{
				icap = icap ? icap * 2 : 1024;
				items = items ? repalloc(items, sizeof(FetchItem) * icap)
					: palloc(sizeof(FetchItem) * icap);
			}
			memset(&items[nitems], 0, sizeof(FetchItem));
			items[nitems].id = pstrdup(m->id);
			items[nitems].thread_index = ct->index;
			items[nitems].thread_id = ch[ct->index].id;
			items[nitems].provider_thread_id = ch[ct->index].provider_id;
			nitems++;
		}
		hash_destroy(mstates);
		pfree(ids);
		page = call.next_page_token ? pstrdup(call.next_page_token) : NULL;
		gmail_call_release(&call);
	} while (page != NULL);

	/*
	 * 5. Stored messages of changed threads inside the window: labels may
	 * have moved, or the message may be gone (also those no longer listed,
	 * e.g. moved to Trash).
	 */
	{
		char	  **ch_ids = palloc(sizeof(char *) * nch);
		StoredMessageRef *refs;
		int			nrefs;

		for (i = 0; i < nch; i++)
			ch_ids[i] = ch[i].provider_id;
		refs = store_messages_of_threads(s->mb.id, ch_ids, nch, s->window_start, &nrefs);
		/* refs come grouped by thread: one threads.get covers a group of two or more. */
		for (i = 0; i < nrefs;)
		{
			int			j = i;

			while (j < nrefs && strcmp(refs[j].provider_thread_id, refs[i].provider_thread_id) == 0)
				j++;
			if (nitems == icap)
			{
				icap = icap ? icap * 2 : 1024;
				items = items ? repalloc(items, sizeof(FetchItem) * icap)
					: palloc(sizeof(FetchItem) * icap);
			}
			items[nitems] = item_for_ref(&refs[i]);
			if (j - i > 1)
			{
				items[nitems].id = refs[i].provider_thread_id;
				items[nitems].whole_thread = true;
				items[nitems].refs = &refs[i];
				items[nitems].nrefs = j - i;
			}
			nitems++;
			i = j;
		}
	}

	/* 6. Fetch and store, then the threads' counts and history ids. */
	fetch_and_store(s, items, nitems);
	store_finalize_threads(s->mb.id, ch, nch, thread_report, s);
}

/* ------------------------------------------------------------------
 * Incremental sync: Gmail's history since the stored historyId.  Events
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
static bool
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

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = 256;
	ctl.entrysize = sizeof(FoldedMessage);
	ctl.hcxt = CurrentMemoryContext;
	folded = hash_create("history", 256, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	/* Every page, including pages with a token and no records. */
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
		page = call.next_page_token ? pstrdup(call.next_page_token) : NULL;
		gmail_call_release(&call);
	} while (page != NULL);

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
		char	  **tids = palloc(sizeof(char *) * nthreads);
		HTAB	   *tstates;
		char	  **new_ids = palloc(sizeof(char *) * nthreads);
		char	  **new_snips = palloc0(sizeof(char *) * nthreads);
		int64	   *new_rows = palloc(sizeof(int64) * nthreads);
		int			nnew = 0,
					k;

		for (k = 0; k < nthreads; k++)
			tids[k] = threads[k].provider_id;
		tstates = store_thread_states(s->mb.id, tids, nthreads);
		for (k = 0; k < nthreads; k++)
		{
			ThreadState *ts = hash_search(tstates, tids[k], HASH_FIND, NULL);

			if (ts)
			{
				threads[k].id = ts->id;
				/* Never move a thread's history id backwards. */
				if (ts->has_history && ts->history_id > threads[k].history_id)
					threads[k].history_id = ts->history_id;
			}
			else
			{
				threads[k].was_new = true;
				new_ids[nnew++] = tids[k];
			}
		}
		store_ensure_threads(s->mb.id, new_ids, new_snips, nnew, new_rows);
		for (k = 0, nnew = 0; k < nthreads; k++)
			if (threads[k].was_new)
				threads[k].id = new_rows[nnew++];
		for (k = 0; k < nitems; k++)
			items[k].thread_id = items[k].stored ? items[k].thread_id : threads[items[k].thread_index].id;
		hash_destroy(tstates);
	}

	fetch_and_store(s, items, nitems);
	store_finalize_threads(s->mb.id, threads, nthreads, thread_report, s);
	return true;
}

void
sync_execute(SyncState *s)
{
	s->last_progress = GetCurrentTimestamp();
	s->window_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												  -(int64) s->days * 86400 * 1000);
	if (strcmp(s->mode, "incremental") == 0 && !incremental_sync(s))
	{
		/* Gmail forgot our history id (404): the cure is a full sync. */
		ereport(NOTICE,
				(errmsg("gmail_sync: history of mailbox " INT64_FORMAT " expired at Gmail; running a full sync of %d days",
						s->mb.id, s->days)));
		s->fell_back = true;
		s->mode = "full";
		s->has_new_history = false;
	}
	if (strcmp(s->mode, "full") == 0)
		full_sync(s);
	if (s->todo >= PROGRESS_EVERY_MESSAGES)
		report_progress(s, true);
	if (s->has_new_history)
		store_set_history(s->mb.id, s->new_history_id);
}
