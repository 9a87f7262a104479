/*-------------------------------------------------------------------------
 * gmail_api_int.h
 *	  Private to the Gmail API layer: what its files share and the sync code
 *	  has no business seeing.
 *
 * gmail_api.c (the client) uses the others: gmail_budget.c (the
 * per-minute quota budget) and gmail_url.c (request URLs).
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_GMAIL_API_INT_H
#define GMAIL_INGEST_GMAIL_API_INT_H

#include "gmail_api.h"
#include "http.h"
#include "json_tree.h"
#include "remote_error.h"

/* ---- gmail_budget.c ---- */

typedef struct GmailBudgetCharge
{
	TimestampTz at;
	int			units;
} GmailBudgetCharge;

/* Units spent in the last minute, as a ring of charges, oldest first. */
typedef struct GmailBudget
{
	int			limit;			/* units per minute; 0 = no budget */
	GmailQuotaCosts costs;
	GmailBudgetCharge *charges;
	int			head;
	int			count;
	int			cap;
	int			units_in_window;
} GmailBudget;

extern void gmail_budget_init(GmailBudget *budget, int units_per_minute,
							  const GmailQuotaCosts *costs);

/* The units a call of this method costs. */
extern int	gmail_budget_cost(const GmailBudget *budget, GmailMethod m);

/*
 * The client's HttpAdmit (arg: the GmailBudget; req->opaque: the
 * GmailCall): 0 when the call may go now (it is booked), else the ms to
 * wait.
 */
extern long gmail_budget_admit(void *arg, HttpRequest *req);

/* ---- gmail_url.c ---- */

/* The request URL of a call, palloc'd. */
extern char *gmail_url(const char *base_url, const GmailCall *call);

#endif
