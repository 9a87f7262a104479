/*-------------------------------------------------------------------------
 * gmail_api_int.h
 *	  Private to the Gmail API layer: what its files share and the sync code
 *	  has no business seeing.
 *
 * gmail_api.c (the client: submit, completion, retries) uses the others:
 * gmail_budget.c (the per-minute quota budget of a mailbox),
 * gmail_project_budget.c (the project's, in shared memory), gmail_url.c (request
 * URLs), gmail_error.c (what an error answer means) and gmail_parse.c
 * (answers -> the structs of gmail_api.h).  Each is about one thing, so a
 * change to how Gmail counts quota or phrases errors touches one file.
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

/*
 * A mailbox's budget: a bucket that paces the sends, and the units spent in
 * the last minute as a ring of charges, oldest first.
 */
typedef struct GmailBudget
{
	int			limit;			/* units per minute; 0 = no budget */
	int			project_limit;	/* the shared project budget's; 0 = none */
	GmailQuotaCosts costs;
	double		tokens;			/* the bucket: at most limit/60 */
	TimestampTz refilled_at;
	GmailBudgetCharge *charges;
	int			head;
	int			count;
	int			cap;
	int			units_in_window;
} GmailBudget;

extern void gmail_budget_init(GmailBudget *budget, int units_per_minute,
							  int project_units_per_minute,
							  const GmailQuotaCosts *costs);

/* The units a call of this method costs. */
extern int	gmail_budget_cost(const GmailBudget *budget, GmailMethod m);

/*
 * The client's HttpAdmit (arg: the GmailBudget; req->opaque: the
 * GmailCall): 0 when the call may go now (it is booked), else the ms to
 * wait.
 */
extern long gmail_budget_admit(void *arg, HttpRequest *req);

/* ---- gmail_project_budget.c ---- */

/*
 * Book units in the cluster's project budget: 0 when booked, else the ms
 * to wait (nothing booked).  limit 0 = no project budget.
 */
extern long gmail_project_budget_book(int limit, int units);

/* ---- gmail_url.c ---- */

/* The request URL of a call, palloc'd. */
extern char *gmail_url(const char *base_url, const GmailCall *call);

/* The JSON body a call POSTs (palloc'd), or NULL for a GET. */
extern char *gmail_body(const GmailCall *call);

/* ---- gmail_error.c ---- */

/* What the client does with an answer that is not a 200. */
typedef enum GmailErrorAction
{
	GE_NOT_FOUND,				/* a get's object vanished: not_found */
	GE_HISTORY_EXPIRED,			/* history.list's start is too old */
	GE_REFRESH,					/* 401: refresh the token and resend */
	GE_RETRY,					/* transient: retry with backoff */
	GE_FAIL						/* a failure no retry cures */
} GmailErrorAction;

/* An error answer's content, as safe, bounded copies. */
typedef struct GmailErrorAnswer
{
	long		status;
	const char *reason;			/* error.errors[].reason, or NULL */
	const char *message;		/* error.message, or "(no message)" */
	long		hint_ms;		/* when to retry, from the server; -1 none */
} GmailErrorAnswer;

/*
 * Read an error answer (doc may be NULL when it was not JSON).  The texts
 * are copied into the current memory context, so they outlive doc.
 */
extern void gmail_error_read(JsonNode *doc, long status, double retry_after_secs,
							 GmailErrorAnswer *ans);

/* What the answer means for a call of method m; *kind: the failure's kind. */
extern GmailErrorAction gmail_error_classify(GmailMethod m, const GmailErrorAnswer *ans,
											 RemoteFailure *kind);

/* "Gmail answered HTTP <status>, reason <reason>: <message>" (palloc'd). */
extern char *gmail_error_describe(const GmailErrorAnswer *ans);

/* Raise the remote failure of kind for an answer no retry cures. */
extern void gmail_error_raise(GmailMethod m, const GmailErrorAnswer *ans,
							  RemoteFailure kind) pg_attribute_noreturn();

/*
 * Printable, bounded copy of server text for an error message: valid UTF-8
 * (it is stored in sync_runs.error), cut on a character boundary.
 */
extern char *gmail_safe_text(const char *s);

/* ---- gmail_parse.c ---- */

/*
 * Parse a finished request's body into a JSON tree in the current memory
 * context; NULL (with *perr when a reason is known) if it is not JSON.  A
 * raw message's "raw" member is decoded first and cut out of the body
 * (call->predecoded_raw).
 */
extern JsonNode *gmail_parse_body(GmailCall *call, HttpRequest *req, char **perr);

/*
 * Fill the call's results from a 200 answer's tree, allocating in the
 * current memory context; false if it is unusable, with *why saying why
 * when the JSON parsed but its content did not hold.
 */
extern bool gmail_parse_answer(GmailCall *call, JsonNode *doc, const char **why);

#endif
