/*-------------------------------------------------------------------------
 * sync_internal.h
 *	  Pieces shared by the full, incremental and backfill plans.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_SYNC_INTERNAL_H
#define GMAIL_INGEST_SYNC_INTERNAL_H

#include "utils/hsearch.h"

#include "sync_state.h"

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

/* sync_paging.c: what stops a listing that never ends */
typedef struct PageGuard
{
	GmailMethod method;
	int			days;			/* what the cap is derived from */
	int			pages;			/* answered so far */
	int			max_pages;
	HTAB	   *seen;			/* every nextPageToken answered */
	MemoryContext cxt;			/* holds the tokens */
} PageGuard;

extern void page_guard_init(PageGuard *g, GmailMethod method, int days);

/*
 * After each page: the token to ask for next (a copy that lives until
 * page_guard_done), or NULL when the listing is complete.  A token answered
 * before, or a page count beyond the cap, raises an RF_PROTOCOL failure.
 */
extern char *page_guard_next(PageGuard *g, const char *next_token);
extern void page_guard_done(PageGuard *g);

/* sync_fetch.c: the fetch pipeline and what is stored for each answer */
extern char *action_detail(StoreAction a, const char *extra_key, const char *extra_json);
extern char *labels_json(char **labels, int n);
extern void report_progress(SyncState *s, bool force);
extern void refresh_labels(SyncState *s, const FetchItem *item, GmailMessage *gm);
extern void mark_deleted(SyncState *s, const FetchItem *item);
extern FetchItem item_for_ref(const StoredMessageRef *ref);
extern void fetch_and_store(SyncState *s, FetchItem *items, int n);

/* sync_threads.c */
/*
 * Fill threads[i].id from the stored rows, inserting rows for threads not
 * stored yet (was_new set); stored_history[i] gets the stored history id
 * (0 when none).
 */
extern void resolve_threads(SyncState *s, ThreadFinal *threads, int n, int64 *stored_history);
extern void thread_report(void *arg, const ThreadFinal *t, StoreAction action);

/* sync_full.c */
extern char *window_query(SyncState *s);
extern void read_profile(SyncState *s);
extern ThreadFinal *list_threads(SyncState *s, const char *query, int *count);
extern void full_sync(SyncState *s);

/* sync_incremental.c: false when Gmail no longer has the start history id */
extern bool incremental_sync(SyncState *s);

/* sync_backfill.c: true when the backfill completed */
extern bool backfill_step(SyncState *s, int batch);

#endif
