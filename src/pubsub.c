/*-------------------------------------------------------------------------
 * pubsub.c
 *	  The Cloud Pub/Sub REST client of the push listener: :pull and
 *	  :acknowledge on one subscription, with Gmail's retry rules, and the
 *	  decoding of the Gmail notification a message carries.
 *
 * One request is in flight at a time: the listener pulls, commits what the
 * notifications mean, then acknowledges, in that order (at-least-once), so
 * there is nothing to overlap.  Error answers are Google's JSON error
 * shape, read by the Gmail layer's reader (gmail_error_read).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "gmail_api_int.h"
#include "pubsub.h"
#include "retry_policy.h"

struct PubsubClient
{
	HttpClient *http;
	PubsubOptions opts;
	PubsubTokenSource token_source;
	void	   *token_arg;
	const char *token;
	int			retries;
};

/* Every member name read from a Pub/Sub answer (an error body's too). */
static const char *const pubsub_read_names[] = {
	"ackId", "data", "details", "error", "errors", "message", "messageId",
	"reason", "receivedMessages", NULL
};
/* An ackId is sent back verbatim: one that is not valid UTF-8 is refused. */
static const char *const pubsub_exact_names[] = {"ackId", NULL};
static const JsonReadSpec pubsub_read_spec = {pubsub_read_names, pubsub_exact_names};

PubsubClient *
pubsub_client_create(HttpClient *http, const PubsubOptions *opts,
					 PubsubTokenSource token_source, void *token_arg)
{
	PubsubClient *c = palloc0(sizeof(PubsubClient));

	c->http = http;
	c->opts = *opts;
	c->opts.base_url = pstrdup(opts->base_url);
	c->opts.subscription = pstrdup(opts->subscription);
	c->token_source = token_source;
	c->token_arg = token_arg;
	return c;
}

int
pubsub_retries(PubsubClient *c)
{
	return c->retries;
}

/* Pub/Sub's resource-name alphabet: letters, digits, - . _ ~ % + */
static bool
segment_valid(const char *s, size_t len)
{
	size_t		i;

	if (len == 0 || len > 255)
		return false;
	for (i = 0; i < len; i++)
		if (!(isalnum((unsigned char) s[i]) || strchr("-._~%+", s[i]) != NULL))
			return false;
	return true;
}

bool
pubsub_name_valid(const char *name, const char *kind)
{
	const char *p;
	const char *slash;
	size_t		klen = strlen(kind);

	if (name == NULL || strncmp(name, "projects/", 9) != 0)
		return false;
	p = name + 9;
	slash = strchr(p, '/');
	if (slash == NULL || !segment_valid(p, slash - p))
		return false;
	p = slash + 1;
	if (strncmp(p, kind, klen) != 0 || p[klen] != '/')
		return false;
	p += klen + 1;
	return segment_valid(p, strlen(p));
}

/*
 * Wait out a retry of a failed attempt, or fail when the retries are spent
 * or the server's hint is beyond what the listener waits for.
 */
static TimestampTz
retry_time(PubsubClient *c, int *attempt, long hint_ms, RemoteFailure kind,
		   const char *verb, const char *what)
{
	if (hint_ms > RETRY_HINT_MAX_MS || *attempt >= c->opts.max_retries)
		remote_failure(kind,
					   errmsg("Pub/Sub %s of %s failed after %d attempts", verb, c->opts.subscription,
							  *attempt + 1),
					   kind == RF_NETWORK ? errdetail_internal("%s", what) : errdetail("%s", what));
	(*attempt)++;
	c->retries++;
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), retry_wait_ms(*attempt, hint_ms));
}

/* "Pub/Sub answered HTTP <status>, reason <reason>: <message>" */
static char *
describe(const GmailErrorAnswer *ans)
{
	return psprintf("Pub/Sub answered HTTP %ld%s%s: %s", ans->status,
					ans->reason ? ", reason " : "", ans->reason ? ans->reason : "", ans->message);
}

/*
 * POST {base}/v1/{subscription}:{verb} with a JSON body; the answer's tree
 * (in the current memory context).  Retries what Gmail's client retries.
 */
static JsonNode *
pubsub_post(PubsubClient *c, const char *verb, const char *body)
{
	HttpRequest req;
	char	   *url;
	int			attempt = 0;
	bool		refreshed = false;
	TimestampTz not_before = 0;
	int			blen = strlen(c->opts.base_url);

	url = psprintf("%.*s/v1/%s:%s",
				   (blen > 0 && c->opts.base_url[blen - 1] == '/') ? blen - 1 : blen,
				   c->opts.base_url, c->opts.subscription, verb);
	if (c->token == NULL)
		c->token = c->token_source(c->token_arg, false);
	for (;;)
	{
		HttpRequest *r;
		JsonNode   *doc;
		char	   *perr = NULL;
		GmailErrorAnswer ans;
		long		status;
		double		retry_after;

		memset(&req, 0, sizeof(req));
		req.url = url;
		req.post_fields = body;
		req.post_json = true;
		req.bearer_token = c->token;
		req.not_before = not_before;
		http_submit(c->http, &req);
		r = http_wait_any(c->http);
		if (r != &req)
			elog(ERROR, "Pub/Sub request was lost");

		if (r->transport_failed)
		{
			if (r->too_large)
				remote_failure(RF_PROTOCOL,
							   errmsg("Pub/Sub %s answer exceeds gmail_ingest.max_response_mb", verb),
							   errdetail("The answer was longer than %d MB.", c->opts.max_response_mb));
			if (r->permanent)
				remote_failure(RF_NETWORK,
							   errmsg("Pub/Sub %s of %s failed", verb, c->opts.subscription),
							   errdetail_internal("%s", r->error));
			not_before = retry_time(c, &attempt, -1, RF_NETWORK, verb,
									psprintf("%s%s", r->error, r->timed_out ? " (timed out)" : ""));
			http_request_reset(r);
			continue;
		}
		status = r->status;
		retry_after = r->retry_after_secs;
		doc = r->body ? json_parse_members(r->body, (int) r->body_len, &pubsub_read_spec, &perr) : NULL;
		http_request_reset(r);

		if (status == 200)
		{
			if (doc != NULL && doc->kind == JK_OBJECT)
				return doc;
			not_before = retry_time(c, &attempt, -1, RF_PROTOCOL, verb,
									psprintf("Pub/Sub's answer to %s could not be read%s%s.", verb,
											 perr ? ": " : "", perr ? gmail_safe_text(perr) : ""));
			continue;
		}
		gmail_error_read(doc, status, retry_after, &ans);
		if (status == 401 && !refreshed)
		{
			/* the token expired or was revoked: once more with a fresh one */
			refreshed = true;
			c->token = c->token_source(c->token_arg, true);
			continue;
		}
		if (status == 429 || status >= 500)
		{
			not_before = retry_time(c, &attempt, ans.hint_ms,
									status == 429 ? RF_RATE_LIMIT : RF_HTTP, verb, describe(&ans));
			continue;
		}
		if (status == 401)
			remote_failure(RF_AUTH,
						   errmsg("Pub/Sub %s refused a fresh access token (HTTP 401)", verb),
						   errdetail("%s", describe(&ans)));
		if (status == 403)
			remote_failure(RF_PERMISSION,
						   errmsg("Pub/Sub %s of %s was refused (HTTP 403)", verb, c->opts.subscription),
						   errdetail("%s", describe(&ans)),
						   errhint("The service account named by gmail_ingest.pubsub_service_account needs the "
								   "Pub/Sub Subscriber role on the subscription."));
		remote_failure(RF_HTTP,
					   errmsg("Pub/Sub %s of %s answered HTTP %ld", verb, c->opts.subscription, status),
					   errdetail("%s", describe(&ans)),
					   status == 404
					   ? errhint("Check gmail_ingest.pubsub_subscription: the subscription must exist, "
								 "as projects/PROJECT/subscriptions/NAME.")
					   : 0);
	}
}

int
pubsub_pull(PubsubClient *c, int max_messages, PubsubMessage **messages)
{
	JsonNode   *doc;
	JsonNode   *items;
	int			n;
	int			i;
	int			kept = 0;
	PubsubMessage *out;

	Assert(max_messages >= 1 && max_messages <= PUBSUB_MAX_MESSAGES);
	doc = pubsub_post(c, "pull", psprintf("{\"maxMessages\":%d}", max_messages));
	items = json_get(doc, "receivedMessages");
	n = json_len(items);
	out = palloc0(sizeof(PubsubMessage) * (n + 1));
	for (i = 0; i < n; i++)
	{
		JsonNode   *item = json_at(items, i);
		JsonNode   *msg = json_get(item, "message");
		const char *ack_id = json_get_str(item, "ackId");
		const char *id = json_get_str(msg, "messageId");

		/*
		 * Without a usable ackId a message cannot be acknowledged: it comes
		 * back after its deadline and Pub/Sub's dead-lettering, if set up,
		 * takes it.  Nothing else can be done with it here.
		 */
		if (ack_id == NULL || ack_id[0] == '\0' || strlen(ack_id) > PUBSUB_MAX_ACK_ID_BYTES)
		{
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("Pub/Sub pull of %s returned a message without a usable ackId",
							c->opts.subscription)));
			continue;
		}
		out[kept].ack_id = pstrdup(ack_id);
		out[kept].message_id = id ? gmail_safe_text(id) : pstrdup("");
		out[kept].data = json_get_str(msg, "data") ? pstrdup(json_get_str(msg, "data")) : NULL;
		kept++;
	}
	*messages = out;
	return kept;
}

void
pubsub_acknowledge(PubsubClient *c, char *const *ack_ids, int n)
{
	int			start;

	for (start = 0; start < n; start += PUBSUB_MAX_MESSAGES)
	{
		StringInfoData b;
		int			i;

		initStringInfo(&b);
		appendStringInfoString(&b, "{\"ackIds\":[");
		for (i = start; i < n && i < start + PUBSUB_MAX_MESSAGES; i++)
		{
			if (i > start)
				appendStringInfoChar(&b, ',');
			escape_json(&b, ack_ids[i]);
		}
		appendStringInfoString(&b, "]}");
		(void) pubsub_post(c, "acknowledge", b.data);
		pfree(b.data);
	}
}

bool
pubsub_gmail_notification(const char *data, char **email, int64 *history_id, const char **why)
{
	unsigned char *bytes;
	size_t		len;
	char	   *text;
	char	   *perr = NULL;
	JsonNode   *doc;
	const char *addr;
	JsonNode   *hid;

	if (data == NULL || data[0] == '\0')
	{
		*why = "The message has no data";
		return false;
	}
	if (strlen(data) > 64 * 1024 || !gmail_base64url_decode(data, strlen(data), &bytes, &len))
	{
		*why = "Its data is not base64";
		return false;
	}
	text = palloc(len + 1);
	memcpy(text, bytes, len);
	text[len] = '\0';
	doc = (len > 0 && memchr(text, '\0', len) == NULL) ? json_parse_text(text, (int) len, &perr) : NULL;
	if (doc == NULL || doc->kind != JK_OBJECT)
	{
		*why = "Its data is not a JSON object";
		return false;
	}
	addr = json_get_str(doc, "emailAddress");
	hid = json_get(doc, "historyId");
	if (addr == NULL || strchr(addr, '@') == NULL || strlen(addr) > 320)
	{
		*why = "emailAddress is missing or not an address";
		return false;
	}
	if (hid == NULL || (hid->kind != JK_NUMBER && hid->kind != JK_STRING) ||
		!json_get_int64(doc, "historyId", history_id) || *history_id <= 0)
	{
		*why = "historyId is missing or not a positive 64-bit integer";
		return false;
	}
	*email = pstrdup(addr);
	return true;
}
