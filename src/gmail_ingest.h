/*-------------------------------------------------------------------------
 * gmail_ingest.h
 *	  What the module's entry offers its siblings at the top layer (the
 *	  fleet worker): one sync of a mailbox as a C call, and the mailbox's
 *	  sync lock.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_H
#define GMAIL_INGEST_H

#include "utils/timestamp.h"

#include "gmail_api.h"
#include "remote_error.h"

/* How one sync (or backfill step) ended. */
typedef struct SyncOutcome
{
	int64		run_id;			/* its sync_runs row */
	bool		failed;			/* a failure on Gmail's side, recorded */
	RemoteFailure kind;			/* what failed, when failed */
	TimestampTz retry_after;	/* when the server said to retry, or 0 */
	bool		complete;		/* succeeded and history_id moved: the
								 * mailbox is synced (a backfill step that
								 * left messages to fetch is not) */
} SyncOutcome;

extern void sync_mailbox(int64 mailbox_id, int32 days, bool force_full, int32 backfill_batch,
						 bool may_raise, SyncOutcome *out);

/*
 * One Gmail call outside a sync (users.watch, users.stop) with the
 * mailbox's credentials, refreshed as a sync refreshes them; SPI connected
 * by the caller.  Everything, the call's results included, is allocated in
 * cxt, which the caller deletes; *quota_units: what the call cost.
 */
extern void mailbox_gmail_call(int64 mailbox_id, GmailCall *call, MemoryContext cxt,
							   int64 *quota_units);

/* The mailbox's sync lock, held to the end of the transaction; never waits. */
extern bool sync_lock_try(int64 mailbox_id);
extern bool sync_lock_held(int64 mailbox_id);
extern void sync_lock_release(int64 mailbox_id);

#endif							/* GMAIL_INGEST_H */
