/*-------------------------------------------------------------------------
 * sync_paging.c
 *	  The listings: threads.list, messages.list and history.list, followed
 *	  page by page through one loop while Gmail answers a nextPageToken,
 *	  under a guard against paging that never ends; and the check that an
 *	  id Gmail lists can be one.
 *
 * A server that answers the same token forever, or cycles through a few,
 * would keep a sync looping (and its listing growing) without end.  So a
 * token seen before ends the run as an unreadable answer, and so does a
 * page count no real mailbox reaches in the window: Gmail gives at most
 * 500 items a page, and Google Workspace accepts at most 86,400 messages a
 * day per user, so 100,000 items a day plus a floor of 100,000 (imports,
 * clock skew) is generous for any real mailbox.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "remote_error.h"
#include "sync_internal.h"

#define PAGE_ITEMS_PER_DAY	100000
#define PAGE_FLOOR_PAGES	200

/*
 * history.list covers the time since the last sync, not the window: count
 * at least the month or so Gmail may keep history for.
 */
#define HISTORY_MIN_DAYS	31

/* What stops a listing that never ends. */
typedef struct PageGuard
{
	GmailMethod method;
	int			days;			/* what the cap is derived from */
	int			pages;			/* answered so far */
	int			max_pages;
	HTAB	   *seen;			/* every nextPageToken answered */
	MemoryContext cxt;			/* holds the tokens */
} PageGuard;

/* Tokens are keyed by pointer to their text: no fixed key size to truncate at. */
static uint32
token_hash(const void *key, Size keysize)
{
	const char *s = *(const char *const *) key;

	return hash_bytes((const unsigned char *) s, (int) strlen(s));
}

static int
token_match(const void *key1, const void *key2, Size keysize)
{
	return strcmp(*(const char *const *) key1, *(const char *const *) key2);
}

static void
page_guard_init(PageGuard *g, GmailMethod method, int days)
{
	HASHCTL		ctl;

	memset(g, 0, sizeof(*g));
	g->method = method;
	g->days = method == GM_HISTORY_LIST ? Max(days, HISTORY_MIN_DAYS) : days;
	g->max_pages = PAGE_FLOOR_PAGES + g->days * (PAGE_ITEMS_PER_DAY / GMAIL_LIST_PAGE_SIZE);
	g->cxt = AllocSetContextCreate(CurrentMemoryContext, "page tokens", ALLOCSET_SMALL_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(char *);
	ctl.entrysize = sizeof(char *);
	ctl.hash = token_hash;
	ctl.match = token_match;
	ctl.hcxt = g->cxt;
	g->seen = hash_create("page tokens", 64, &ctl,
						  HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
}

/*
 * After each page: the token to ask for next (a copy that lives until
 * page_guard_done), or NULL when the listing is complete.  A token answered
 * before, or a page count beyond the cap, raises an RF_PROTOCOL failure.
 */
static char *
page_guard_next(PageGuard *g, const char *next_token)
{
	char	   *copy;
	bool		found;

	g->pages++;
	if (next_token == NULL)
		return NULL;
	if (g->pages >= g->max_pages)
		remote_failure(RF_PROTOCOL,
					   errmsg("Gmail %s did not stop paging", gmail_method_name(g->method)),
					   errdetail("It still answered a nextPageToken on page %d, more than a %d-day listing "
								 "can hold: at most %d pages.", g->pages, g->days, g->max_pages));
	copy = MemoryContextStrdup(g->cxt, next_token);
	hash_search(g->seen, &copy, HASH_ENTER, &found);
	if (found)
		remote_failure(RF_PROTOCOL,
					   errmsg("Gmail %s did not stop paging", gmail_method_name(g->method)),
					   errdetail("It answered a nextPageToken of an earlier page again, on page %d.",
								 g->pages));
	return copy;
}

static void
page_guard_done(PageGuard *g)
{
	hash_destroy(g->seen);
	MemoryContextDelete(g->cxt);
	g->seen = NULL;
	g->cxt = NULL;
}

void
list_pages(SyncState *s, const GmailCall *request, PageHandler handle, void *arg)
{
	PageGuard	guard;
	char	   *page = NULL;

	page_guard_init(&guard, request->method, s->days);
	do
	{
		GmailCall	call = *request;

		call.page_token = page;
		gmail_run(s->gmail, &call);
		page = handle(s, &call, arg) ? page_guard_next(&guard, call.next_page_token) : NULL;
		gmail_call_done(&call);
	} while (page != NULL);
	page_guard_done(&guard);
}

/* The q= of the sync's window, to the second. */
char *
window_query(SyncState *s)
{
	pg_time_t	after = timestamptz_to_time_t(s->window_start);

	return psprintf("after:" INT64_FORMAT, (int64) after);
}

/* Every page of a listing that takes a q= query. */
static void
list_query(SyncState *s, GmailMethod method, const char *query, PageHandler handle, void *arg)
{
	GmailCall	request;

	memset(&request, 0, sizeof(request));
	request.method = method;
	request.query = query;
	list_pages(s, &request, handle, arg);
}

void
require_gmail_id(const char *id, const char *what, GmailMethod method)
{
	size_t		len = strlen(id);

	if (len >= GMAIL_ID_SIZE)
		remote_failure(RF_PROTOCOL,
					   errmsg("Gmail %s answered a %s id too long to be one", gmail_method_name(method), what),
					   errdetail("The id has %zu characters; Gmail's have 16, and at most %d are accepted.",
								 len, GMAIL_ID_SIZE - 1));
}

/* list_threads' listing so far, with an index that drops a thread listed twice */
typedef struct ThreadListing
{
	ThreadFinal *threads;
	int			count;
	int			cap;
	HTAB	   *listed;
} ThreadListing;

static bool
add_thread_page(SyncState *s, GmailCall *page, void *arg)
{
	ThreadListing *l = (ThreadListing *) arg;
	int			i;

	for (i = 0; i < page->thread_count; i++)
	{
		const GmailThreadItem *t = &page->threads[i];
		ThreadFinal *f;
		bool		found;

		require_gmail_id(t->id, "thread", GM_THREADS_LIST);
		hash_search(l->listed, t->id, HASH_ENTER, &found);
		if (found)
			continue;			/* moved to a later page while listing */
		l->threads = grow_array(l->threads, l->count, &l->cap, sizeof(ThreadFinal));
		f = &l->threads[l->count++];
		memset(f, 0, sizeof(*f));
		f->provider_id = pstrdup(t->id);
		f->snippet = t->snippet ? pstrdup(t->snippet) : NULL;
		f->history_id = t->history_id;
		f->has_history = true;
	}
	return true;
}

ThreadFinal *
list_threads(SyncState *s, const char *query, int *count)
{
	ThreadListing l;

	memset(&l, 0, sizeof(l));
	l.listed = gmail_id_hash("listed threads", GMAIL_ID_SIZE, 512);
	list_query(s, GM_THREADS_LIST, query, add_thread_page, &l);
	hash_destroy(l.listed);
	*count = l.count;
	return l.threads;
}

typedef struct MessageListing
{
	MessagePageHandler handle;
	void	   *arg;
} MessageListing;

static bool
check_message_page(SyncState *s, GmailCall *page, void *arg)
{
	MessageListing *l = (MessageListing *) arg;
	int			i;

	for (i = 0; i < page->message_count; i++)
	{
		require_gmail_id(page->messages[i].id, "message", GM_MESSAGES_LIST);
		require_gmail_id(page->messages[i].thread_id, "thread", GM_MESSAGES_LIST);
	}
	s->listing_estimate = page->result_size_estimate;
	l->handle(s, page->messages, page->message_count, l->arg);
	return true;
}

void
list_messages(SyncState *s, const char *query, MessagePageHandler handle, void *arg)
{
	MessageListing l;

	l.handle = handle;
	l.arg = arg;
	list_query(s, GM_MESSAGES_LIST, query, check_message_page, &l);
}
