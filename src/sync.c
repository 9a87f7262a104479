/*-------------------------------------------------------------------------
 * sync.c
 *	  The dispatcher: reads the profile every sync starts with, then
 *	  chooses the plan: a backfill step, incremental from the stored
 *	  historyId (falling back to full when Gmail no longer has it), or full.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "remote_error.h"
#include "sync.h"
#include "sync_internal.h"

/*
 * The profile: whose mailbox the credentials open, and the history id the
 * next sync starts from.
 */
static void
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
	gmail_call_done(&call);
}

void
sync_execute(SyncState *s)
{
	s->last_progress = GetCurrentTimestamp();
	s->window_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												  -(int64) s->days * 86400 * 1000);

	/*
	 * Whose mailbox do these credentials open?  Asked first, on every sync
	 * (1 unit): nothing is read from Gmail under another account's name.
	 */
	read_profile(s);
	if (s->backfill_batch > 0)
	{
		backfill_step(s, s->backfill_batch);
		if (s->has_new_history)
			store_set_history(s->mb.id, s->new_history_id);
		return;
	}
	if (strcmp(s->mode, "incremental") == 0 && !incremental_sync(s))
	{
		/*
		 * Gmail forgot our history id (404): the cure is a full sync.  Twice
		 * in a row means syncs are further apart than Gmail keeps history,
		 * which peers loop on silently; say it loudly.
		 */
		if (store_previous_run_fell_back(s->mb.id, s->run_id))
			ereport(WARNING,
					(errmsg("history of mailbox " INT64_FORMAT " expired at Gmail again; running a full sync of %d days",
							s->mb.id, s->days),
					 errdetail("The previous sync of this mailbox also had to fall back to a full sync."),
					 errhint("Sync more often than Gmail keeps history (typically a week, sometimes hours).")));
		else
			ereport(NOTICE,
					(errmsg("history of mailbox " INT64_FORMAT " expired at Gmail; running a full sync of %d days",
							s->mb.id, s->days)));
		s->fell_back = true;
		s->mode = "full";
		s->has_new_history = false;
	}
	if (strcmp(s->mode, "full") == 0)
		full_sync(s);
	if (s->todo >= PROGRESS_EVERY_MESSAGES)
		report_progress(s, true);
	if (s->has_new_history)
		store_set_history(s->mb.id, s->new_history_id);
}
