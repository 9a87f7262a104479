/*-------------------------------------------------------------------------
 * gmail_project_budget.c
 *	  The project's Gmail quota: one budget in shared memory that every
 *	  backend of the cluster books its requests in before sending them.
 *
 * Gmail limits a Cloud project as a whole (1,200,000 units a minute by
 * default) besides each user; the syncs of one cluster share the project,
 * so no backend can keep that budget alone.  Two rules decide admission,
 * as in the per-mailbox budget (gmail_budget.c):
 *
 *	- a continuously refilled bucket (rate limit/60 units a second, holding
 *	  at most one second's worth) paces the requests, so they never arrive
 *	  in the bursts that draw a 429 when several backends start together;
 *	- a sliding window, the way Gmail counts, a second longer than its
 *	  minute (Gmail books a request on arrival, a little after our send):
 *	  a full bucket plus a minute of refill would be 61 seconds' worth, and
 *	  the window keeps any minute within the limit.
 *
 * The window is kept in 100 ms slots, not per request: at the default limit
 * a minute holds up to a million requests, too many to remember one by
 * one.  A slot counts until its end leaves the window, so a charge is never
 * forgotten early.  Booking is one critical section under an LWLock (the
 * window's wait is a loop over slots, too long for a spinlock); no
 * ereport happens while it is held.  A booked request that is then not
 * sent (cancel, error) stays booked: the budget errs on the safe side.
 *
 * The limit is the booking backend's gmail_ingest.project_quota_units_per_minute
 * (PGC_SIGHUP: the same for all once they have reloaded); a sync takes it
 * at its start, like its other settings.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "gmail_api_int.h"

#define PB_SLOT_US		100000	/* one slot: 100 ms */
#define PB_WINDOW_SLOTS 610		/* 61 s: Gmail's minute plus a second */
#define PB_MINUTE_SLOTS 600		/* what project_quota_usage() reports */
#define PB_RING			640		/* > PB_WINDOW_SLOTS: a live slot is never reused */

typedef struct ProjectBudget
{
	LWLock	   *lock;
	int			limit;			/* the limit the bucket was last sized for */
	double		tokens;			/* may go below 0 after a costly request */
	TimestampTz refilled_at;
	int64		window_units;	/* units of the slots still in the window */
	int64		expired_before; /* slots below this are out of the window */
	int64		slot_no[PB_RING];	/* which slot an entry holds, -1 = none */
	int64		slot_units[PB_RING];
} ProjectBudget;

static ProjectBudget *pb = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
pb_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(ProjectBudget)));
	RequestNamedLWLockTranche("gmail_ingest_project_budget", 1);
}

static void
pb_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	pb = ShmemInitStruct("gmail_ingest project budget", sizeof(ProjectBudget), &found);
	if (!found)
	{
		int			i;

		memset(pb, 0, sizeof(*pb));
		pb->lock = &(GetNamedLWLockTranche("gmail_ingest_project_budget"))->lock;
		for (i = 0; i < PB_RING; i++)
			pb->slot_no[i] = -1;
	}
	LWLockRelease(AddinShmemInitLock);
}

void
gmail_project_budget_install(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = pb_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = pb_shmem_startup;
}

/* Drop the slots that have left the window ending at slot `now_slot`. */
static void
pb_expire(int64 now_slot)
{
	int64		first = now_slot - PB_WINDOW_SLOTS + 1;

	if (first - pb->expired_before >= PB_RING)
	{
		int			i;

		/* idle for longer than the ring: nothing in it is still counted */
		for (i = 0; i < PB_RING; i++)
		{
			pb->slot_no[i] = -1;
			pb->slot_units[i] = 0;
		}
		pb->window_units = 0;
		pb->expired_before = first;
		return;
	}
	for (; pb->expired_before < first; pb->expired_before++)
	{
		int			i = (int) (pb->expired_before % PB_RING);

		if (pb->slot_no[i] == pb->expired_before)
		{
			pb->window_units -= pb->slot_units[i];
			pb->slot_no[i] = -1;
			pb->slot_units[i] = 0;
		}
	}
}

/* Refill the bucket up to now; a changed limit resizes it. */
static void
pb_refill(int limit, TimestampTz now)
{
	double		cap = limit / 60.0;

	if (pb->limit != limit || pb->refilled_at == 0)
	{
		/* first use or a new limit: start full, never above the new size */
		pb->tokens = (pb->refilled_at == 0) ? cap : Min(pb->tokens, cap);
		pb->limit = limit;
	}
	else if (now > pb->refilled_at)
		pb->tokens = Min(cap, pb->tokens + (now - pb->refilled_at) * (limit / 60.0e6));
	pb->refilled_at = Max(pb->refilled_at, now);
}

/*
 * Book `units` now if both rules allow it (0), else the ms until they may
 * (nothing booked).  A request dearer than a second's worth waits for a
 * full bucket and leaves it in debt, so the pace holds on average.
 */
long
gmail_project_budget_book(int limit, int units)
{
	TimestampTz now;
	int64		now_slot;
	double		need;
	long		wait_ms = 0;

	if (pb == NULL || limit <= 0 || units <= 0)
		return 0;
	if (units > limit)
		units = limit;
	need = Min((double) units, limit / 60.0);

	LWLockAcquire(pb->lock, LW_EXCLUSIVE);
	now = GetCurrentTimestamp();
	now_slot = now / PB_SLOT_US;
	pb_expire(now_slot);
	pb_refill(limit, now);

	if (pb->tokens < need)
		wait_ms = (long) ceil((need - pb->tokens) / (limit / 60.0e6) / 1000.0);
	if (pb->window_units + units > limit)
	{
		int64		in_window = pb->window_units;
		int64		s;

		/* the first slot whose expiry leaves room; it always exists */
		for (s = pb->expired_before; s <= now_slot; s++)
		{
			int			i = (int) (s % PB_RING);

			if (pb->slot_no[i] != s)
				continue;
			in_window -= pb->slot_units[i];
			if (in_window + units <= limit)
			{
				long		ms = (long) (((s + PB_WINDOW_SLOTS) * PB_SLOT_US - now) / 1000) + 1;

				wait_ms = Max(wait_ms, ms);
				break;
			}
		}
	}
	if (wait_ms <= 0)
	{
		int			i = (int) (now_slot % PB_RING);

		if (pb->slot_no[i] != now_slot)
		{
			pb->slot_no[i] = now_slot;
			pb->slot_units[i] = 0;
		}
		pb->slot_units[i] += units;
		pb->window_units += units;
		pb->tokens -= units;
	}
	LWLockRelease(pb->lock);
	return Max(wait_ms, 0);
}

/* Units booked in the 60 s before now (whole 100 ms slots). */
int64
gmail_project_budget_units_last_minute(void)
{
	int64		sum = 0;
	int64		now_slot;
	int64		s;

	if (pb == NULL)
		return 0;
	LWLockAcquire(pb->lock, LW_SHARED);
	now_slot = GetCurrentTimestamp() / PB_SLOT_US;
	for (s = now_slot - PB_MINUTE_SLOTS + 1; s <= now_slot; s++)
	{
		int			i = (int) (s % PB_RING);

		if (pb->slot_no[i] == s)
			sum += pb->slot_units[i];
	}
	LWLockRelease(pb->lock);
	return sum;
}
