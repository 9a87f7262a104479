/*-------------------------------------------------------------------------
 * gmail_api.c
 *	  The Gmail client: calls submitted and completed, answers -> structs,
 *	  retries with backoff, token refresh on 401, the counters of a sync.
 *
 * What an error answer means is decided in gmail_error.c; this file acts
 * on it.  Backoff
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
};

static const char *const method_names[GM__COUNT] = {
	"users.getProfile", "users.messages.list", "users.threads.list",
	"users.messages.get", "users.messages.get", "users.threads.get",
	"users.history.list"
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
	gmail_budget_init(&c->budget, opts->quota_units_per_minute, &opts->costs);
	http_set_admission(http, gmail_budget_admit, &c->budget);
	return c;
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
 * Ranges of the numbers Gmail sends.  A number outside its range makes the
 * answer unreadable (RF_PROTOCOL), like invalid JSON, so it never reaches a
 * row: a timestamp PostgreSQL cannot print would break SELECT * and
 * pg_dump of the whole table.  internalDate: 1900-01-01 to 9999-12-31 in
 * epoch ms (imported mail may predate 1970; nothing predates 1900).
 */
#define INTERNAL_DATE_MIN_MS	INT64CONST(-2208988800000)
#define INTERNAL_DATE_MAX_MS	INT64CONST(253402300799999)

static void
parse_labels(JsonNode *msg, GmailMessage *m, const char *key)
{
	JsonNode   *labels = json_get(msg, key);
	int			i;

	m->has_labels = labels != NULL;
	m->label_count = json_len(labels);
	m->label_ids = palloc0(sizeof(char *) * (m->label_count + 1));
	for (i = 0; i < m->label_count; i++)
	{
		JsonNode   *l = json_at(labels, i);

		m->label_ids[i] = (l && l->kind == JK_STRING) ? l->str : "";
	}
}

/*
 * A number Gmail sent, when present: it must parse and lie in [min, max],
 * else the answer is unreadable (*why says what was wrong).  Absent is not
 * an error here: Gmail leaves out what it has nothing for.
 */
static bool
get_number(JsonNode *obj, const char *key, int64 min, int64 max, int64 *out,
		   const char **why, const char *what)
{
	JsonNode   *v = json_get(obj, key);
	int64		x;

	if (v == NULL || v->kind == JK_NULL)
		return false;
	if (!json_get_int64(obj, key, &x) || x < min || x > max)
	{
		*why = what;
		return false;
	}
	*out = x;
	return true;
}

/* A historyId: positive. */
#define get_history_id(obj, key, out, why) \
	get_number((obj), (key), 1, PG_INT64_MAX, (out), (why), key " is not a positive 64-bit integer")

/* false when the message is unusable; *why is set when that makes the whole answer unreadable */
static bool
parse_message(JsonNode *msg, GmailMessage *m, bool want_raw, const char **why)
{
	const char *raw;
	int64		size = 0;

	memset(m, 0, sizeof(*m));
	m->id = (char *) json_get_str(msg, "id");
	m->thread_id = (char *) json_get_str(msg, "threadId");
	if (m->id == NULL)
		return false;
	parse_labels(msg, m, "labelIds");
	get_history_id(msg, "historyId", &m->history_id, why);
	get_number(msg, "internalDate", INTERNAL_DATE_MIN_MS, INTERNAL_DATE_MAX_MS, &m->internal_date_ms,
			   why, "internalDate is not a time between the years 1900 and 9999");
	if (get_number(msg, "sizeEstimate", 0, PG_INT32_MAX, &size,
				   why, "sizeEstimate is not a non-negative 32-bit integer"))
		m->size_estimate = (int) size;
	if (*why != NULL)
		return false;
	m->snippet = (char *) json_get_str(msg, "snippet");
	if (want_raw)
	{
		JsonNode   *rawnode = json_get(msg, "raw");

		raw = rawnode ? rawnode->str : NULL;
		if (raw == NULL || m->thread_id == NULL)
			return false;
		if (!gmail_base64url_decode(raw, strlen(raw), &m->raw, &m->raw_len))
			return false;
		/* The encoded text is as large as the message: drop it now. */
		json_drop_str(rawnode);
	}
	return true;
}

static GmailMessage *
parse_message_array(JsonNode *arr, int *count, bool need_thread, const char **why)
{
	int			n = json_len(arr);
	GmailMessage *out = palloc0(sizeof(GmailMessage) * Max(n, 1));
	int			i,
				k = 0;

	for (i = 0; i < n && *why == NULL; i++)
	{
		if (!parse_message(json_at(arr, i), &out[k], false, why))
			continue;
		if (need_thread && out[k].thread_id == NULL)
			continue;
		k++;
	}
	*count = k;
	return out;
}

static void
add_history_events(GmailCall *call, JsonNode *rec, const char *key, HistoryChange change,
				   int *cap, const char **why)
{
	JsonNode   *list = json_get(rec, key);
	int64		rid = 0;
	int			i;

	get_number(rec, "id", 1, PG_INT64_MAX, &rid, why, "a history record's id is not a positive 64-bit integer");
	for (i = 0; i < json_len(list) && *why == NULL; i++)
	{
		JsonNode   *item = json_at(list, i);
		GmailHistoryEvent *ev;

		if (call->event_count == *cap)
		{
			*cap = *cap ? *cap * 2 : 64;
			call->events = call->events
				? repalloc(call->events, sizeof(GmailHistoryEvent) * *cap)
				: palloc(sizeof(GmailHistoryEvent) * *cap);
		}
		ev = &call->events[call->event_count];
		memset(ev, 0, sizeof(*ev));
		if (!parse_message(json_get(item, "message"), &ev->message, false, why))
			continue;
		ev->change = change;
		ev->record_id = rid;
		if (change == HC_LABELS_ADDED || change == HC_LABELS_REMOVED)
		{
			GmailMessage tmp;

			parse_labels(item, &tmp, "labelIds");
			ev->changed_labels = tmp.label_ids;
			ev->changed_label_count = tmp.label_count;
		}
		call->event_count++;
	}
}

/* threads.list items; one without an id or a usable historyId is skipped. */
static GmailThreadItem *
parse_thread_array(JsonNode *arr, int *count, const char **why)
{
	int			n = json_len(arr);
	GmailThreadItem *out = palloc0(sizeof(GmailThreadItem) * Max(n, 1));
	int			i,
				k = 0;

	for (i = 0; i < n && *why == NULL; i++)
	{
		JsonNode   *t = json_at(arr, i);
		GmailThreadItem *ti = &out[k];

		ti->id = (char *) json_get_str(t, "id");
		if (ti->id == NULL || !get_history_id(t, "historyId", &ti->history_id, why))
			continue;
		ti->snippet = (char *) json_get_str(t, "snippet");
		k++;
	}
	*count = k;
	return out;
}

/* history.list records -> call->events, in Gmail's order. */
static void
parse_history(GmailCall *call, JsonNode *hist, const char **why)
{
	int			cap = 0,
				i;

	for (i = 0; i < json_len(hist) && *why == NULL; i++)
	{
		JsonNode   *rec = json_at(hist, i);

		add_history_events(call, rec, "messagesAdded", HC_ADDED, &cap, why);
		add_history_events(call, rec, "messagesDeleted", HC_DELETED, &cap, why);
		add_history_events(call, rec, "labelsAdded", HC_LABELS_ADDED, &cap, why);
		add_history_events(call, rec, "labelsRemoved", HC_LABELS_REMOVED, &cap, why);
	}
}

/*
 * The "raw" member of a messages.get?format=raw answer is the whole message
 * in base64url, megabytes long.  It is decoded straight from the answer and
 * cut out of it before the JSON parse, so PostgreSQL's lexer (which copies
 * strings a character at a time) never sees it.  Finds the top-level member
 * key's string value; false when absent or when it holds an escape (then
 * the ordinary parse handles it).
 */
static bool
find_top_level_string(const char *json, size_t len, const char *key, size_t *vstart, size_t *vend)
{
	size_t		keylen = strlen(key);
	size_t		i = 0;
	int			depth = 0;

	while (i < len)
	{
		char		ch = json[i];

		if (ch == '"')
		{
			size_t		s = i + 1;
			size_t		j = s;
			size_t		k;

			/* The string's end: the next quote not escaped by an odd run of backslashes. */
			for (;;)
			{
				const char *q = memchr(json + j, '"', len - j);
				size_t		b = 0;

				if (q == NULL)
					return false;
				j = q - json;
				while (j - b > s && json[j - b - 1] == '\\')
					b++;
				if (b % 2 == 0)
					break;
				j++;
			}
			i = j + 1;
			if (depth != 1 || j - s != keylen || memcmp(json + s, key, keylen) != 0)
				continue;
			/* A key only if a colon follows; then the value must be a string. */
			for (k = i; k < len && (json[k] == ' ' || json[k] == '\n' || json[k] == '\r' || json[k] == '\t'); k++)
				;
			if (k >= len || json[k] != ':')
				continue;
			for (k++; k < len && (json[k] == ' ' || json[k] == '\n' || json[k] == '\r' || json[k] == '\t'); k++)
				;
			if (k >= len || json[k] != '"')
				return false;
			{
				const char *q = memchr(json + k + 1, '"', len - k - 1);

				if (q == NULL || memchr(json + k + 1, '\\', q - (json + k + 1)) != NULL)
					return false;
				*vstart = k + 1;
				*vend = q - json;
				return true;
			}
		}
		if (ch == '{' || ch == '[')
			depth++;
		else if (ch == '}' || ch == ']')
			depth--;
		i++;
	}
	return false;
}

/*
 * Every member name read from a Gmail answer, at any level (an error body's
 * too); the JSON tree skips the others without building them.  A new
 * json_get of another name must add it here.  Ids are sent back to Gmail or
 * stored as keys: one that is not valid UTF-8 makes the answer unreadable
 * rather than being stored altered.
 */
static const char *const gmail_read_names[] = {
	"details", "emailAddress", "error", "errors", "history", "historyId", "id",
	"internalDate", "labelIds", "labelsAdded", "labelsRemoved", "message",
	"messages", "messagesAdded", "messagesDeleted", "nextPageToken", "raw",
	"reason", "sizeEstimate", "snippet", "threadId", "threads", NULL
};
static const char *const gmail_exact_names[] = {
	"id", "threadId", "nextPageToken", NULL
};
static const JsonReadSpec gmail_read_spec = {gmail_read_names, gmail_exact_names};

/*
 * Parse a finished request's body into a JSON tree; a raw message's "raw"
 * member is decoded first and cut out of the body (call->predecoded_raw).
 */
static JsonNode *
gmail_parse_body(GmailCall *call, HttpRequest *r, char **perr)
{
	call->predecoded_raw = NULL;
	if (r->body == NULL)
		return NULL;
	if (r->status == 200 && call->method == GM_MESSAGE_RAW)
	{
		size_t		vs,
					ve;

		if (find_top_level_string(r->body, r->body_len, "raw", &vs, &ve) &&
			gmail_base64url_decode(r->body + vs, ve - vs, &call->predecoded_raw, &call->predecoded_len))
		{
			memmove(r->body + vs, r->body + ve, r->body_len - ve + 1);
			r->body_len -= ve - vs;
		}
	}
	return json_parse_members(r->body, (int) r->body_len, &gmail_read_spec, perr);
}

/*
 * Fill the call's results from a 200 answer; false if it is unusable, with
 * *why saying why when the JSON parsed but its content did not hold.
 */
static bool
gmail_parse_answer(GmailCall *call, JsonNode *doc, const char **why)
{
	bool		ok;

	if (doc == NULL || doc->kind != JK_OBJECT)
		return false;
	call->next_page_token = (char *) json_get_str(doc, "nextPageToken");
	if (call->next_page_token && strlen(call->next_page_token) > GMAIL_MAX_TOKEN_BYTES)
	{
		*why = "nextPageToken is longer than " CppAsString2(GMAIL_MAX_TOKEN_BYTES) " bytes";
		return false;
	}
	switch (call->method)
	{
		case GM_PROFILE:
			call->email = (char *) json_get_str(doc, "emailAddress");
			ok = get_history_id(doc, "historyId", &call->history_id, why);
			break;
		case GM_MESSAGES_LIST:
			call->messages = parse_message_array(json_get(doc, "messages"),
												 &call->message_count, true, why);
			ok = true;
			break;
		case GM_THREADS_LIST:
			call->threads = parse_thread_array(json_get(doc, "threads"), &call->thread_count, why);
			ok = true;
			break;
		case GM_MESSAGE_RAW:
			if (call->predecoded_raw != NULL)
			{
				/* raw was decoded before the parse; its member is now "". */
				ok = parse_message(doc, &call->message, false, why) && call->message.thread_id != NULL &&
					json_get(doc, "raw") != NULL;
				if (ok)
				{
					call->message.raw = call->predecoded_raw;
					call->message.raw_len = call->predecoded_len;
				}
			}
			else
				ok = parse_message(doc, &call->message, true, why);
			break;
		case GM_MESSAGE_MINIMAL:
			ok = parse_message(doc, &call->message, false, why);
			break;
		case GM_THREAD_MINIMAL:
			get_history_id(doc, "historyId", &call->history_id, why);
			call->messages = parse_message_array(json_get(doc, "messages"),
												 &call->message_count, false, why);
			ok = json_get_str(doc, "id") != NULL;
			break;
		case GM_HISTORY_LIST:
			parse_history(call, json_get(doc, "history"), why);
			ok = get_history_id(doc, "historyId", &call->history_id, why);
			break;
		default:
			ok = false;
			break;
	}
	return ok && *why == NULL;
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
}

/* base64 and base64url digits -> values; 64 = skippable white space, 65 = invalid. */
static unsigned char b64_table[256];
static bool b64_table_ready = false;

static void
b64_init(void)
{
	const char *std = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	int			i;

	memset(b64_table, 65, sizeof(b64_table));
	for (i = 0; i < 62; i++)
		b64_table[(unsigned char) std[i]] = (unsigned char) i;
	b64_table['-'] = b64_table['+'] = 62;
	b64_table['_'] = b64_table['/'] = 63;
	b64_table['\r'] = b64_table['\n'] = b64_table[' '] = 64;
	b64_table_ready = true;
}

/*
 * Table-driven, four digits at a time on the common path: a message's raw
 * bytes pass through here, so this is one of the hottest loops of a sync.
 */
bool
gmail_base64url_decode(const char *in, size_t len, unsigned char **out, size_t *out_len)
{
	const unsigned char *p = (const unsigned char *) in;
	const unsigned char *end = p + len;
	unsigned char *buf;
	size_t		o = 0;
	uint32		acc = 0;
	int			bits = 0;

	if (!b64_table_ready)
		b64_init();
	if (len > MaxAllocHugeSize / 3 * 4)
		return false;
	buf = palloc_extended(len / 4 * 3 + 3, MCXT_ALLOC_HUGE);
	while (p < end)
	{
		unsigned char a,
					b,
					c,
					d;

		if (bits == 0 && end - p >= 4 &&
			(a = b64_table[p[0]]) < 64 && (b = b64_table[p[1]]) < 64 &&
			(c = b64_table[p[2]]) < 64 && (d = b64_table[p[3]]) < 64)
		{
			uint32		v = ((uint32) a << 18) | ((uint32) b << 12) | ((uint32) c << 6) | d;

			buf[o] = (unsigned char) (v >> 16);
			buf[o + 1] = (unsigned char) (v >> 8);
			buf[o + 2] = (unsigned char) v;
			o += 3;
			p += 4;
			continue;
		}
		/* Slow path: white space, padding, the tail, or an error. */
		if (*p == '=')
			break;
		a = b64_table[*p++];
		if (a == 64)
			continue;
		if (a == 65)
		{
			pfree(buf);
			return false;
		}
		acc = (acc << 6) | a;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			buf[o++] = (unsigned char) (acc >> bits);
		}
	}
	*out = buf;
	*out_len = o;
	return true;
}
