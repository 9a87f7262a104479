/*-------------------------------------------------------------------------
 * gmail_budget.c
 *	  The client-side Gmail quota budget of a mailbox: what each method
 *	  costs, and when a call may be sent without going over the units per
 *	  minute of the user or of the project.
 *
 * Gmail refuses a user's calls with 429 beyond its per-minute quota, and a
 * refused call still waits out a backoff; holding calls back here instead
 * costs nothing.  Two rules, as in the project's budget
 * (gmail_project_budget.c): a bucket refilled continuously at limit/60
 * units a second and holding one second's worth paces the sends, and a
 * sliding window the way Gmail counts, a second longer than Gmail's minute
 * because Gmail books a request when it arrives, a little after we send
 * it, keeps every minute within the limit (the bucket alone would allow
 * a minute and a second's worth).  Charges are booked in send order, so
 * the ring stays sorted by time.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "utils/timestamp.h"

#include "gmail_api_int.h"

#define BUDGET_WINDOW_MS 61000

void
gmail_budget_init(GmailBudget *b, int units_per_minute, int project_units_per_minute,
				  const GmailQuotaCosts *costs)
{
	memset(b, 0, sizeof(*b));
	b->limit = units_per_minute;
	b->project_limit = project_units_per_minute;
	b->tokens = units_per_minute / 60.0;	/* a full bucket */
	b->costs = *costs;
	b->cap = 256;
	b->charges = palloc(sizeof(GmailBudgetCharge) * b->cap);
}

int
gmail_budget_cost(const GmailBudget *b, GmailMethod m)
{
	const GmailQuotaCosts *c = &b->costs;

	switch (m)
	{
		case GM_PROFILE:
			return c->profile;
		case GM_MESSAGES_LIST:
			return c->messages_list;
		case GM_THREADS_LIST:
			return c->threads_list;
		case GM_MESSAGE_RAW:
		case GM_MESSAGE_MINIMAL:
			return c->messages_get;
		case GM_THREAD_MINIMAL:
			return c->threads_get;
		case GM_HISTORY_LIST:
			return c->history_list;
		case GM_WATCH:
			return c->watch;
		case GM_STOP:
			return c->stop;
		default:
			return 0;
	}
}

static void
budget_expire(GmailBudget *b, TimestampTz now)
{
	while (b->count > 0)
	{
		GmailBudgetCharge *oldest = &b->charges[b->head];

		if (oldest->at > TimestampTzPlusMilliseconds(now, -BUDGET_WINDOW_MS))
			break;
		b->units_in_window -= oldest->units;
		b->head = (b->head + 1) % b->cap;
		b->count--;
	}
}

static void
budget_record(GmailBudget *b, TimestampTz at, int units)
{
	if (b->count == b->cap)
	{
		int			ncap = b->cap * 2;
		GmailBudgetCharge *n = palloc(sizeof(GmailBudgetCharge) * ncap);
		int			i;

		for (i = 0; i < b->count; i++)
			n[i] = b->charges[(b->head + i) % b->cap];
		pfree(b->charges);
		b->charges = n;
		b->cap = ncap;
		b->head = 0;
	}
	b->charges[(b->head + b->count) % b->cap].at = at;
	b->charges[(b->head + b->count) % b->cap].units = units;
	b->count++;
	b->units_in_window += units;
}

/*
 * The ms until the mailbox's budget admits `units` (0 = now), booking
 * nothing: the bucket must hold them (at most a second's worth) and the
 * window must have room.
 */
static long
budget_wait(GmailBudget *b, int units, TimestampTz now)
{
	double		rate_per_ms = b->limit / 60000.0;
	double		need = Min((double) units, b->limit / 60.0);
	long		wait = 0;
	int			in_window;
	int			i;

	if (now > b->refilled_at)
	{
		if (b->refilled_at != 0)
			b->tokens = Min(b->limit / 60.0,
							b->tokens + (now - b->refilled_at) / 1000.0 * rate_per_ms);
		b->refilled_at = now;
	}
	if (b->tokens < need)
		wait = (long) ceil((need - b->tokens) / rate_per_ms);

	budget_expire(b, now);
	if (b->units_in_window + units <= b->limit)
		return wait;
	in_window = b->units_in_window;
	for (i = 0; i < b->count; i++)
	{
		GmailBudgetCharge *ch = &b->charges[(b->head + i) % b->cap];

		in_window -= ch->units;
		if (in_window + units <= b->limit)
			return Max(wait, TimestampDifferenceMilliseconds(now,
															 TimestampTzPlusMilliseconds(ch->at, BUDGET_WINDOW_MS)) + 1);
	}
	return Max(wait, 1000);		/* not reached: the window can always empty */
}

/*
 * Admission of a call about to be sent: the mailbox's budget is asked
 * first without booking, then the project's books atomically across
 * backends, and only then is the mailbox's booked.  So a call the project
 * holds back is booked nowhere, and one admitted is booked in both, once,
 * at the real send time: the local window never forgets a unit Gmail still
 * counts.  Otherwise: the ms to wait (the HTTP layer waits in slices of at
 * most 100 ms, checking for interrupts, and asks again).
 */
long
gmail_budget_admit(void *arg, HttpRequest *req)
{
	GmailBudget *b = (GmailBudget *) arg;
	GmailCall  *call = (GmailCall *) req->opaque;
	int			units = gmail_budget_cost(b, call->method);
	int			mine = units;
	TimestampTz now;
	long		wait;

	if (units <= 0)
		return 0;
	if (b->limit > 0)
	{
		if (mine > b->limit)
			mine = b->limit;
		now = GetCurrentTimestamp();
		wait = budget_wait(b, mine, now);
		if (wait > 0)
			return wait;
	}
	wait = gmail_project_budget_book(b->project_limit, units);
	if (wait > 0)
		return wait;
	if (b->limit > 0)
	{
		now = GetCurrentTimestamp();
		budget_expire(b, now);
		budget_record(b, now, mine);
		b->tokens -= mine;
	}
	return 0;
}
