/*-------------------------------------------------------------------------
 * sync.h
 *	  One sync of one mailbox: planning, fetching, storing, the run record.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_SYNC_H
#define GMAIL_INGEST_SYNC_H

#include "gmail_api.h"
#include "http.h"
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

	HttpClient *api_http;
	HttpClient *token_http;
	GmailClient *gmail;
	MemoryContext item_cxt;		/* reset after each message */

	RunCounters counters;
	int			token_retries;	/* retries at the OAuth token endpoint */
	int64		profile_history_id;	/* the profile's, read before anything else */
	int64		new_history_id;
	bool		has_new_history;

	/* progress NOTICEs */
	int64		done;
	int64		todo;
	TimestampTz last_progress;
} SyncState;

/*
 * Do the work of a sync: fetch and store.  Raises a remote failure when
 * Gmail or the network fails; the caller owns the subtransaction.
 */
extern void sync_execute(SyncState *s);

#endif
