/*-------------------------------------------------------------------------
 * push.h
 *	  Push (SPEC 7c): what push.c offers the module's entry and the fleet
 *	  worker beside its SQL-callable functions.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_PUSH_H
#define GMAIL_INGEST_PUSH_H

/* Define the gmail_ingest.pubsub_* settings (from _PG_init). */
extern void push_settings_define(void);

/*
 * After a successful fleet turn of a mailbox (run run_id): renew its watch
 * when it lapses within 6 days (a failure is recorded in the mailbox's
 * watch_error, never raised, and tried again an hour later), and make it
 * due again at once when a notification newer than what the sync reached
 * came in meanwhile.  SPI connected by the caller.
 */
extern void push_after_turn(int64 mailbox_id, int64 run_id);

#endif
