/*-------------------------------------------------------------------------
 * sync_internal.h
 *	  Pieces shared by the dispatcher and the full, incremental and
 *	  backfill plans.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_SYNC_INTERNAL_H
#define GMAIL_INGEST_SYNC_INTERNAL_H

#include "utils/hsearch.h"

#include "sync_state.h"

#define PROGRESS_EVERY_MESSAGES 500
#define PROGRESS_EVERY_MS 5000

/*
 * Room for one more element in a palloc'd array (NULL before the first)
 * that holds count elements in *cap slots: the capacity doubles when full,
 * so appending n elements costs O(n) copies.
 */
static inline void *
grow_array(void *array, int count, int *cap, Size elem_size)
{
	if (count < *cap)
		return array;
	*cap = *cap > 0 ? *cap * 2 : 256;
	return array ? repalloc(array, elem_size * *cap) : palloc(elem_size * *cap);
}

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
	int			thread_index;	/* into the plan's threads */
	int64		thread_id;
	char	   *provider_thread_id;
	TimestampTz internal_date;	/* stored messages only */
	StoredMessageRef *refs;		/* whole_thread: the stored messages to check */
	int			nrefs;
} FetchItem;

/*
 * What a plan collects before fetching: the threads it touches (each once,
 * found by provider id) and the items to fetch.  sync_threads.c.
 */
typedef struct ThreadIndex
{
	char		key[GMAIL_ID_SIZE];	/* provider_thread_id */
	int			index;			/* into SyncPlan.threads */
} ThreadIndex;

typedef struct SyncPlan
{
	ThreadFinal *threads;
	int			nthreads;
	int			threads_cap;
	HTAB	   *thread_index;	/* ThreadIndex entries */
	FetchItem  *items;
	int			nitems;
	int			items_cap;
} SyncPlan;

extern void plan_init(SyncPlan *p);

/*
 * The plan's index of the thread with this provider id, added (zeroed but
 * for provider_id, a copy) when not there yet; *added says which.
 */
extern int	plan_thread(SyncPlan *p, const char *provider_thread_id, bool *added);

/* A new zeroed item at the end of the plan's items. */
extern FetchItem *plan_item(SyncPlan *p);

/*
 * Rows for the threads: fills threads[i].id from the stored rows, inserting
 * rows for threads not stored yet (was_new set).  Returns the stored states
 * as store_thread_states gives them, for the caller to look into and
 * destroy.
 */
extern HTAB *resolve_threads(SyncState *s, ThreadFinal *threads, int n);

/*
 * Fetch and store the plan's items, then write its threads' final rows.
 * Items of new messages take their thread's row id: resolve the threads
 * first.
 */
extern void plan_execute(SyncState *s, SyncPlan *p);
extern void thread_report(void *arg, const ThreadFinal *t, StoreAction action);

/* sync_paging.c: the listings, page by page under a guard against endless paging */

/*
 * A Gmail id longer than GMAIL_ID_SIZE allows cannot be one (Gmail's are
 * 16 hex digits): the answer carrying it is unreadable (RF_PROTOCOL).
 */
extern void require_gmail_id(const char *id, const char *what, GmailMethod method);

/* Gives each page's answer to the plan; false stops the listing. */
typedef bool (*PageHandler) (SyncState *s, GmailCall *page, void *arg);

/*
 * Every page of the listing request asks for (its method, query or start
 * history id), each given to handle before the next is asked for.  A
 * token answered before, or more pages than the window can hold, raises an
 * RF_PROTOCOL failure.
 */
extern void list_pages(SyncState *s, const GmailCall *request, PageHandler handle, void *arg);

extern char *window_query(SyncState *s);

/* Every thread threads.list gives for the query, each once, in listed order. */
extern ThreadFinal *list_threads(SyncState *s, const char *query, int *count);

/* Every page of messages.list for the query, one page at a time. */
typedef void (*MessagePageHandler) (SyncState *s, GmailMessage *messages, int n, void *arg);
extern void list_messages(SyncState *s, const char *query, MessagePageHandler handle, void *arg);

/* sync_fetch.c: the fetch pipeline and what is stored for each answer */
extern char *action_detail(StoreAction a, const char *extra_key, const char *extra_json);
extern void report_progress(SyncState *s, bool force);
extern void refresh_labels(SyncState *s, const FetchItem *item, GmailMessage *gm);
extern void mark_deleted(SyncState *s, const FetchItem *item);
extern FetchItem item_for_ref(const StoredMessageRef *ref);
extern void fetch_and_store(SyncState *s, FetchItem *items, int n);
/* The run's batch of new messages, made on first use (store_batch.c). */
extern StoreBatch *sync_batch(SyncState *s);

/* sync_objects.c: a content's bytes, in the blobs table or at key in the object store */
extern void sync_keep_bytes(SyncState *s, const char *sha256_hex, const unsigned char *data,
							size_t len, const char *key);
/* Whether the uploads in flight or queued hold too many bytes to fetch more. */
extern bool sync_uploads_backlogged(const SyncState *s);

/* sync_full.c */
extern void full_sync(SyncState *s);

/* sync_incremental.c: false when Gmail no longer has the start history id */
extern bool incremental_sync(SyncState *s);

/* sync_backfill.c: true when the backfill completed */
extern bool backfill_step(SyncState *s, int batch);

#endif
