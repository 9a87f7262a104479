/*-------------------------------------------------------------------------
 * sync.h
 *	  The sync layer as the entry point sees it: run one sync, or one
 *	  backfill step, on a SyncState it has filled.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_SYNC_H
#define GMAIL_INGEST_SYNC_H

#include "sync_state.h"

/*
 * Do the work of a sync: fetch and store.  Raises a remote failure when
 * Gmail or the network fails; the caller owns the subtransaction.
 */
extern void sync_execute(SyncState *s);

#endif
