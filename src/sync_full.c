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
 * re-checked for labels and deletion.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "remote_error.h"
#include "sync_internal.h"

char *
window_query(SyncState *s)
{
	pg_time_t	after = timestamptz_to_time_t(s->window_start);

	return psprintf("after:" INT64_FORMAT, (int64) after);
}

void
read_profile(SyncState *s)
{
	GmailCall	call;

	memset(&call, 0, sizeof(call));
	call.method = GM_PROFILE;
	gmail_run(s->gmail, &call);

	/*
	 * A token of another account would file its mail under this mailbox.
	 * Every sync checks, whatever its plan: an incremental sync or a
	 * backfill's later step with new credentials would otherwise read the
	 * other account from this mailbox's history id or staged listing.
	 */
	if (call.email == NULL)
		remote_failure(RF_PROTOCOL,
					   errmsg("Gmail's profile of mailbox " INT64_FORMAT " names no account", s->mb.id),
					   errdetail("users.getProfile answered without emailAddress."));
	if (pg_strcasecmp(call.email, s->mb.email) != 0)
		remote_failure(RF_AUTH,
					   errmsg("the refresh token of mailbox " INT64_FORMAT " belongs to another account",
							  s->mb.id),
					   errdetail("The mailbox is registered as \"%s\"; Gmail says the token is for \"%s\".",
								 s->mb.email, call.email));
	s->profile_history_id = call.history_id;
	gmail_call_release(&call);
}

/* Every page of threads.list for the query, as ThreadFinal entries. */
ThreadFinal *
list_threads(SyncState *s, const char *query, int *count)
{
	GmailCall	call;
	ThreadFinal *threads = NULL;
	int			nthreads = 0,
				cap = 0,
				i;
	char	   *page = NULL;
	PageGuard	guard;

	page_guard_init(&guard, GM_THREADS_LIST, s->days);
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
		page = page_guard_next(&guard, call.next_page_token);
		gmail_call_release(&call);
	} while (page != NULL);
	page_guard_done(&guard);

	*count = nthreads;
	return threads;
}

void
full_sync(SyncState *s)
{
	char	   *query = window_query(s);
	GmailCall	call;
	ThreadFinal *threads;
	int			nthreads = 0;
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
	char	   *page = NULL;
	PageGuard	guard;
	int			i;

	/* The next sync starts at the history id read before listing began. */
	s->new_history_id = s->profile_history_id;
	s->has_new_history = true;

	/* 1. The window's threads, with their Gmail historyIds. */
	threads = list_threads(s, query, &nthreads);

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
	page_guard_init(&guard, GM_MESSAGES_LIST, s->days);
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
		page = page_guard_next(&guard, call.next_page_token);
		gmail_call_release(&call);
	} while (page != NULL);
	page_guard_done(&guard);

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

