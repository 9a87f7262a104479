/*-------------------------------------------------------------------------
 * sync_paging.c
 *	  The guard every paging loop goes through: threads.list, messages.list
 *	  and history.list are followed page by page while Gmail answers a
 *	  nextPageToken, and nothing else stops them.
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

#include "remote_error.h"
#include "sync_internal.h"

#define PAGE_ITEMS_PER_DAY	100000
#define PAGE_FLOOR_PAGES	200

/*
 * history.list covers the time since the last sync, not the window: count
 * at least the month or so Gmail may keep history for.
 */
#define HISTORY_MIN_DAYS	31

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

void
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

char *
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

void
page_guard_done(PageGuard *g)
{
	hash_destroy(g->seen);
	MemoryContextDelete(g->cxt);
	g->seen = NULL;
	g->cxt = NULL;
}
