/*-------------------------------------------------------------------------
 * sync_state.h
 *	  The state of one sync of one mailbox, shared by the entry point that
 *	  fills it, the dispatcher and the plans that work on it.
 *
 * Settings reach the sync as plain values the entry point copies in, so
 * no sync file reads a GUC global (SPEC 2a: a layer never includes a
 * header of a layer above it).
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_SYNC_STATE_H
#define GMAIL_INGEST_SYNC_STATE_H

#include "gmail_api.h"
#include "http.h"
#include "s3_client.h"
#include "store.h"

typedef struct SyncState
{
	MailboxInfo mb;
	int			days;
	bool		force_full;
	int			backfill_batch;	/* > 0: one gmail_backfill step of this size */
	const char *mode;			/* "full" or "incremental" */
	int64		run_id;
	TimestampTz window_start;
	bool		fell_back;		/* incremental fell back to full */

	/* settings, as read when the sync started */
	bool		store_raw;		/* keep each raw message as a blob */
	int			max_concurrency;	/* transfers in flight at once */
	bool		use_s3;			/* bytes go to the object store (blob_store = s3) */
	S3Config	s3;

	HttpClient *api_http;
	HttpClient *token_http;
	GmailClient *gmail;
	MemoryContext item_cxt;		/* reset after each message */
	StoreBatch *batch;			/* new messages not written yet (store_batch.c) */
	MemoryContext upload_cxt;	/* uploads in flight (sync_objects.c) */
	int			object_retries;	/* retries at the object store */
	int64		upload_bytes;	/* bytes of the uploads not completed yet */

	RunCounters counters;
	int			token_retries;	/* retries at the OAuth token endpoint */
	int64		profile_history_id;	/* the profile's, read before anything else */
	int64		new_history_id;
	bool		has_new_history;

	/* progress NOTICEs */
	int64		done;
	int64		todo;
	int64		todo_hint;
	int64		listing_estimate;	/* resultSizeEstimate of the last messages.list page */		/* while a listing streams: what Gmail estimates there is to do */
	TimestampTz last_progress;
} SyncState;

#endif
