/*-------------------------------------------------------------------------
 * gmail_budget.c
 *	  The client-side Gmail quota budget: what each method costs, and when
 *	  a call may be sent without going over the units per minute.
 *
 * Gmail refuses a user's calls with 429 beyond its per-minute quota, and a
 * refused call still waits out a backoff; holding calls back here instead
 * costs nothing.  The budget is a sliding window the way Gmail counts, a
 * second longer than Gmail's minute because Gmail books a request when it
 * arrives, a little after we send it.  Charges are booked in send order, so
 * the ring stays sorted by time.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "gmail_api_int.h"

#define BUDGET_WINDOW_MS 61000

void
gmail_budget_init(GmailBudget *b, int units_per_minute, const GmailQuotaCosts *costs)
{
	memset(b, 0, sizeof(*b));
	b->limit = units_per_minute;
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
 * Admission of a call about to be sent: it may start when the units spent
 * in the preceding window plus its own stay within the limit; it is booked
 * at that moment, the real send time, so the local window never forgets a
 * unit Gmail still counts.  Otherwise: the ms until enough units expire.
 */
long
gmail_budget_admit(void *arg, HttpRequest *req)
{
	GmailBudget *b = (GmailBudget *) arg;
	GmailCall  *call = (GmailCall *) req->opaque;
	int			limit = b->limit;
	int			units = gmail_budget_cost(b, call->method);
	TimestampTz now = GetCurrentTimestamp();
	int			in_window;
	int			i;

	if (limit <= 0 || units <= 0)
		return 0;
	if (units > limit)
		units = limit;
	budget_expire(b, now);
	if (b->units_in_window + units <= limit)
	{
		budget_record(b, now, units);
		return 0;
	}
	in_window = b->units_in_window;
	for (i = 0; i < b->count; i++)
	{
		GmailBudgetCharge *ch = &b->charges[(b->head + i) % b->cap];

		in_window -= ch->units;
		if (in_window + units <= limit)
			return Max(1, TimestampDifferenceMilliseconds(now,
														  TimestampTzPlusMilliseconds(ch->at, BUDGET_WINDOW_MS)) + 1);
	}
	return 1000;				/* not reached: the window can always empty */
}
