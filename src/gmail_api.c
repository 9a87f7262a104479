/*-------------------------------------------------------------------------
 * gmail_api.c
 *	  The Gmail client: calls submitted and completed, retries with
 *	  backoff, token refresh on 401, the counters of a sync.
 *
 * What an answer means is decided elsewhere (gmail_error.c for error
 * answers, gmail_parse.c for the rest); this file acts on it.  Backoff
 * waits are not sleeps: a retried request is queued with a start time, so
 * other transfers go on and a cancel is seen at once.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "gmail_api_int.h"
#include "retry_policy.h"

struct GmailClient
{
	HttpClient *http;
	GmailOptions opts;
	GmailTokenSource token_source;
	void	   *token_arg;
	const char *token;
	int			token_generation;
	MemoryContext cxt;
	GmailStats	stats;
	GmailBudget budget;
	GmailForeignDone foreign_done;	/* see gmail_set_foreign */
	void	   *foreign_arg;
};

static const char *const method_names[GM__COUNT] = {
	"users.getProfile", "users.messages.list", "users.threads.list",
	"users.messages.get", "users.messages.get", "users.threads.get",
	"users.history.list", "users.watch", "users.stop"
};

const char *
gmail_method_name(GmailMethod m)
{
	return (m >= 0 && m < GM__COUNT) ? method_names[m] : "unknown";
}

GmailClient *
gmail_client_create(HttpClient *http, const GmailOptions *opts,
					GmailTokenSource token_source, void *token_arg)
{
	GmailClient *c = palloc0(sizeof(GmailClient));

	c->http = http;
	c->opts = *opts;
	c->opts.api_base_url = pstrdup(opts->api_base_url);
	c->token_source = token_source;
	c->token_arg = token_arg;
	c->cxt = CurrentMemoryContext;
	gmail_budget_init(&c->budget, opts->quota_units_per_minute,
					  opts->project_units_per_minute, &opts->costs);
	http_set_admission(http, gmail_budget_admit, &c->budget);
	return c;
}

void
gmail_set_foreign(GmailClient *client, GmailForeignDone fn, void *arg)
{
	client->foreign_done = fn;
	client->foreign_arg = arg;
}

const GmailStats *
gmail_stats(GmailClient *client)
{
	return &client->stats;
}

static void
start_attempt(GmailClient *c, GmailCall *call, TimestampTz earliest)
{
	memset(&call->http, 0, sizeof(HttpRequest));
	call->http.url = call->url;
	call->http.post_fields = call->body;
	call->http.post_json = call->body != NULL;
	call->http.bearer_token = c->token;
	call->http.opaque = call;
	call->token_generation = c->token_generation;
	call->http.not_before = earliest;
	http_submit(c->http, &call->http);
}

void
gmail_submit(GmailClient *c, GmailCall *call)
{
	MemoryContext old = MemoryContextSwitchTo(c->cxt);

	if (c->token == NULL)
		c->token = c->token_source(c->token_arg, false);
	call->attempt = 0;
	call->refreshed = false;
	call->not_found = false;
	call->history_expired = false;
	call->result_cxt = NULL;
	call->url = gmail_url(c->opts.api_base_url, call);
	call->body = gmail_body(call);
	start_attempt(c, call, 0);
	MemoryContextSwitchTo(old);
}

int
gmail_pending(GmailClient *c)
{
	return http_pending(c->http);
}

static void
retry_or_fail(GmailClient *c, GmailCall *call, long hint_ms, RemoteFailure kind,
			  const char *what)
{
	long		wait;

	/*
	 * A hint beyond what a sync waits for ends the run now: waiting would
	 * hold the caller's transaction, its snapshot and the mailbox's sync
	 * lock for hours (a spent daily quota says "Retry after" the next day).
	 * The time is kept with the failure, so the run's record carries it for
	 * whoever schedules the next sync.
	 */
	if (hint_ms > RETRY_HINT_MAX_MS)
	{
		TimestampTz at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), hint_ms);

		remote_failure_set_retry_after(at);
		remote_failure(kind,
					   errmsg("Gmail %s asked to retry after %s", gmail_method_name(call->method),
							  retry_time_text(at)),
					   errdetail("%s", what),
					   errhint("A sync waits at most %ld s for a retry rather than hold its transaction open; "
							   "run it again after that time.", RETRY_HINT_MAX_MS / 1000));
	}
	if (call->attempt >= c->opts.max_retries)
	{
		if (hint_ms > 0)
			remote_failure_set_retry_after(TimestampTzPlusMilliseconds(GetCurrentTimestamp(), hint_ms));
		/* curl's own text goes in errdetail_internal, as library text does. */
		remote_failure(kind,
					   errmsg("Gmail %s failed after %d attempts", gmail_method_name(call->method),
							  call->attempt + 1),
					   kind == RF_NETWORK ? errdetail_internal("%s", what) : errdetail("%s", what));
	}
	call->attempt++;
	c->stats.retries++;
	wait = retry_wait_ms(call->attempt, hint_ms);
	http_request_reset(&call->http);
	start_attempt(c, call, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait));
}

/*
 * The transfer failed before a complete answer: too large and permanent
 * failures end the call, anything else is retried.
 */
static void
transport_failed(GmailClient *c, GmailCall *call)
{
	HttpRequest *r = &call->http;

	if (r->too_large)
		remote_failure(RF_PROTOCOL,
					   errmsg("Gmail %s answer exceeds gmail_ingest.max_response_mb",
							  gmail_method_name(call->method)),
					   errdetail("The answer was longer than %d MB.", c->opts.max_response_mb));
	if (r->permanent)
		remote_failure(RF_NETWORK,
					   errmsg("Gmail %s failed", gmail_method_name(call->method)),
					   errdetail_internal("%s", r->error));
	retry_or_fail(c, call, -1, RF_NETWORK,
				  psprintf("%s%s", r->error, r->timed_out ? " (timed out)" : ""));
}

/*
 * A 401: the token expired or was revoked.  Resend once with a fresh one;
 * false when that was already done, and the refusal is final.
 */
static bool
resend_with_fresh_token(GmailClient *c, GmailCall *call)
{
	if (call->token_generation != c->token_generation)
	{
		/* Another call refreshed the token meanwhile: use that one. */
		start_attempt(c, call, 0);
		return true;
	}
	if (!call->refreshed)
	{
		MemoryContext old = MemoryContextSwitchTo(c->cxt);

		c->token = c->token_source(c->token_arg, true);
		c->token_generation++;
		MemoryContextSwitchTo(old);
		call->refreshed = true;
		start_attempt(c, call, 0);
		return true;
	}
	return false;
}

/*
 * Decide what a finished HTTP exchange means.  Returns true when the call is
 * finished (successfully, or with not_found / history_expired set), false
 * when it was queued again.
 */
static bool
handle_completion(GmailClient *c, GmailCall *call)
{
	HttpRequest *r = &call->http;
	JsonNode   *doc;
	char	   *perr = NULL;
	long		status;
	double		retry_after;
	GmailErrorAnswer ans;
	RemoteFailure kind;
	MemoryContext old;

	c->stats.http_requests++;
	c->stats.requests_by_method[call->method]++;
	c->stats.bytes_downloaded += r->bytes_downloaded;
	/* Gmail charges what it admits: not a 401, nor a request it refused as over the limit. */
	if (r->transport_failed || (r->status != 401 && r->status != 429))
		c->stats.quota_units += gmail_budget_cost(&c->budget, call->method);

	if (r->transport_failed)
	{
		transport_failed(c, call);
		return false;
	}

	call->result_cxt = AllocSetContextCreate(c->cxt, "gmail call result", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(call->result_cxt);
	doc = gmail_parse_body(call, r, &perr);
	MemoryContextSwitchTo(old);
	/* The tree holds copies of everything needed; the body can go now. */
	status = r->status;
	retry_after = r->retry_after_secs;
	http_request_reset(r);

	/* users.stop answers 204 and no body. */
	if (call->method == GM_STOP && (status == 200 || status == 204))
		return true;
	if (status == 200)
	{
		bool		ok;
		const char *why = NULL;

		old = MemoryContextSwitchTo(call->result_cxt);
		ok = gmail_parse_answer(call, doc, &why);
		MemoryContextSwitchTo(old);
		if (ok)
			return true;
		gmail_call_release(call);
		retry_or_fail(c, call, -1, RF_PROTOCOL,
					  psprintf("Gmail's answer to %s could not be read%s%s.",
							   gmail_method_name(call->method),
							   (perr || why) ? ": " : "", perr ? gmail_safe_text(perr) : why ? why : ""));
		return false;
	}

	/* Copied out: the result context may be released before they are used. */
	gmail_error_read(doc, status, retry_after, &ans);
	switch (gmail_error_classify(call->method, &ans, &kind))
	{
		case GE_NOT_FOUND:
			call->not_found = true;
			return true;
		case GE_HISTORY_EXPIRED:
			call->history_expired = true;
			return true;
		case GE_REFRESH:
			gmail_call_release(call);
			if (resend_with_fresh_token(c, call))
				return false;
			break;
		case GE_RETRY:
			gmail_call_release(call);
			retry_or_fail(c, call, ans.hint_ms, kind, gmail_error_describe(&ans));
			return false;
		case GE_FAIL:
			break;
	}
	gmail_error_raise(call->method, &ans, kind);
}

GmailCall *
gmail_next(GmailClient *c)
{
	for (;;)
	{
		HttpRequest *r = http_wait_any(c->http);
		GmailCall  *call;

		if (r == NULL)
			return NULL;
		if (r->opaque == NULL && c->foreign_done != NULL)
		{
			c->foreign_done(c->foreign_arg, r);
			continue;
		}
		call = (GmailCall *) r->opaque;
		if (handle_completion(c, call))
			return call;
	}
}

void
gmail_run(GmailClient *c, GmailCall *call)
{
	GmailCall  *done;

	gmail_submit(c, call);
	do
	{
		done = gmail_next(c);
		if (done == NULL)
			elog(ERROR, "Gmail call was lost");
	} while (done != call);
}

void
gmail_call_done(GmailCall *call)
{
	gmail_call_release(call);
	if (call->url)
		pfree((void *) call->url);
	if (call->body)
		pfree((void *) call->body);
	call->url = NULL;
	call->body = NULL;
}

void
gmail_call_release(GmailCall *call)
{
	if (call->result_cxt)
		MemoryContextDelete(call->result_cxt);
	call->result_cxt = NULL;
	call->next_page_token = NULL;
	call->email = NULL;
	memset(&call->message, 0, sizeof(GmailMessage));
	call->messages = NULL;
	call->message_count = 0;
	call->threads = NULL;
	call->thread_count = 0;
	call->events = NULL;
	call->event_count = 0;
	call->expiration_ms = 0;
}
