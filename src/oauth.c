/*-------------------------------------------------------------------------
 * oauth.c
 *	  The token endpoint exchange every grant shares (retries, bounds on the
 *	  answer, errors) and the refresh-token grant on top of it
 *	  (gmail_ingest.oauth_token_url, passed in as OAuthOptions).  The JWT
 *	  bearer grant of service accounts is in oauth_jwt.c.
 *
 * Secrets (refresh token, client secret, access token) go into the request
 * body or come out of the response and nowhere else: errors quote only
 * Google's error code and description.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/timestamp.h"

#include "json_tree.h"
#include "oauth.h"
#include "remote_error.h"
#include "retry_policy.h"

void
oauth_append_field(StringInfo buf, const char *name, const char *value)
{
	if (buf->len > 0)
		appendStringInfoChar(buf, '&');
	appendStringInfoString(buf, name);
	appendStringInfoChar(buf, '=');
	http_percent_encode(buf, value);
}

/* Printable, bounded copy of a server-supplied string for an error text. */
char *
oauth_safe_text(const char *s)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (; s && *s && buf.len < 200; s++)
		appendStringInfoChar(&buf, (*s >= 32 && *s < 127) ? *s : '?');
	/* Google's descriptions end with a period; the message adds its own. */
	while (buf.len > 0 && buf.data[buf.len - 1] == '.')
		buf.data[--buf.len] = '\0';
	return buf.data;
}

/*
 * Bounds on what a token answer may hold.  A bearer token goes into an
 * HTTP header on every request and into mailbox_credentials: Google's are
 * a few hundred bytes of RFC 6750 b64token characters.  A longer one (a
 * 10 MB token ran the backend out of memory) or one with other characters
 * (CR LF would add headers of the server's choosing) is an unreadable
 * answer, never cached.  expires_in is an hour in practice; a day bounds it
 * so a hostile value cannot make an expiry PostgreSQL cannot print.
 */
#define OAUTH_MAX_EXPIRES_IN_S	86400

/* Why a 200 answer's token cannot be used, or NULL when it can. */
static const char *
token_problem(JsonNode *doc, int64 *expires_in)
{
	const char *tok = json_get_str(doc, "access_token");
	JsonNode   *exp = json_get(doc, "expires_in");
	size_t		len;
	size_t		i;

	if (tok == NULL)
		return "HTTP 200 without an access token";
	len = strlen(tok);
	if (len == 0)
		return "The access token is empty";
	if (len > OAUTH_MAX_TOKEN_BYTES)
		return "The access token is longer than " CppAsString2(OAUTH_MAX_TOKEN_BYTES) " bytes";
	/* b64token: ALPHA DIGIT - . _ ~ + / then trailing '=' (RFC 6750 2.1) */
	for (i = 0; i < len && (isalnum((unsigned char) tok[i]) || strchr("-._~+/", tok[i])); i++)
		;
	while (i < len && tok[i] == '=')
		i++;
	if (i < len)
		return "The access token holds characters a bearer token cannot";
	if (exp != NULL && exp->kind != JK_NULL &&
		(!json_get_int64(doc, "expires_in", expires_in) ||
		 *expires_in < 1 || *expires_in > OAUTH_MAX_EXPIRES_IN_S))
		return "expires_in is not between 1 and " CppAsString2(OAUTH_MAX_EXPIRES_IN_S) " seconds";
	return NULL;
}

/* The refresh grant's refusals: the mailbox's grant, or the OAuth client. */
static void
refresh_refused(void *arg, long status, const char *err, const char *desc)
{
	if (strcmp(err, "invalid_grant") == 0)
		remote_failure(RF_REVOKED,
					   errmsg("Google refused the mailbox's refresh token (invalid_grant)"),
					   errdetail("The token endpoint answered HTTP %ld: %s.", status,
								 oauth_safe_text(desc)),
					   errhint("The mailbox must be authorized again; then call gmail_ingest.add_mailbox with the new refresh token."));
	if (strcmp(err, "invalid_client") == 0 || strcmp(err, "unauthorized_client") == 0)
		remote_failure(RF_CONFIG,
					   errmsg("Google refused the OAuth client (%s)", err),
					   errdetail("The token endpoint answered HTTP %ld: %s.", status,
								 oauth_safe_text(desc)),
					   errhint("Check gmail_ingest.client_id and gmail_ingest.client_secret."));
}

OAuthToken
oauth_refresh(HttpClient *http, const OAuthOptions *opts, const char *refresh_token,
			  int *retries)
{
	StringInfoData form;
	OAuthToken	result;

	initStringInfo(&form);
	oauth_append_field(&form, "client_id", opts->client_id);
	oauth_append_field(&form, "client_secret", opts->client_secret);
	oauth_append_field(&form, "refresh_token", refresh_token);
	oauth_append_field(&form, "grant_type", "refresh_token");
	result = oauth_exchange(http, opts->token_url, opts->max_retries, form.data,
							refresh_refused, NULL, retries);
	/* The form holds the secrets: wipe it before it goes back to the allocator. */
	explicit_bzero(form.data, form.len);
	pfree(form.data);
	return result;
}

OAuthToken
oauth_exchange(HttpClient *http, const char *token_url, int max_retries, const char *form,
			   OAuthRefused refused, void *arg, int *retries)
{
	HttpRequest req;
	OAuthToken	result = {NULL, 0};
	int			attempt;
	long		wait = 0;

	for (attempt = 0;; attempt++)
	{
		JsonNode   *doc = NULL;
		char	   *perr = NULL;
		const char *problem = NULL;
		const char *err;
		const char *desc;
		int64		expires_in = 3600;
		long		hint_ms = -1;
		bool		retryable;

		memset(&req, 0, sizeof(req));
		req.url = token_url;
		req.post_fields = form;
		if (wait > 0)
			req.not_before = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait);
		http_submit(http, &req);
		while (http_wait_any(http) != &req)
			;

		if (req.body != NULL)
			doc = json_parse_text(req.body, (int) req.body_len, &perr);

		if (!req.transport_failed && req.status == 200 && doc != NULL)
		{
			problem = token_problem(doc, &expires_in);
			if (problem == NULL)
			{
				result.access_token = pstrdup(json_get_str(doc, "access_token"));
				result.expires_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																expires_in * 1000);
				break;
			}
		}

		err = doc ? json_get_str(doc, "error") : NULL;
		desc = doc ? json_get_str(doc, "error_description") : NULL;
		/* The grant's own refusals (terminal, never retried) raise here. */
		if (err != NULL && refused != NULL && !req.transport_failed && req.status != 200)
			refused(arg, req.status, err, desc);

		/* The same policy as Gmail calls: transient trouble is retried, with backoff. */
		retryable = (req.transport_failed && !req.permanent && !req.too_large) ||
			req.status == 429 || req.status >= 500 ||
			(!req.transport_failed && req.status == 200);	/* an unreadable 200 */
		/* Hints come with error answers; an unreadable 200 is retried on backoff alone. */
		if (!req.transport_failed && req.status != 200)
			hint_ms = retry_hint_ms(req.retry_after_secs, desc);

		/*
		 * A retry hint beyond what a sync waits for: fail now, keeping the
		 * time, rather than hold the transaction open until then (as for
		 * Gmail calls).
		 */
		if (retryable && hint_ms > RETRY_HINT_MAX_MS)
		{
			TimestampTz at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), hint_ms);

			remote_failure_set_retry_after(at);
			remote_failure(req.status == 429 ? RF_RATE_LIMIT : RF_HTTP,
						   errmsg("the OAuth token endpoint asked to retry after %s", retry_time_text(at)),
						   err ? errdetail("It answered HTTP %ld, error \"%s\": %s.", req.status, oauth_safe_text(err),
										   oauth_safe_text(desc))
						   : errdetail("It answered HTTP %ld.", req.status),
						   errhint("A sync waits at most %ld s for a retry rather than hold its transaction open; "
								   "run it again after that time.", RETRY_HINT_MAX_MS / 1000));
		}
		if (retryable && attempt < max_retries)
		{
			wait = retry_wait_ms(attempt + 1, hint_ms);
			if (retries)
				(*retries)++;
			http_request_reset(&req);
			continue;
		}
		if (hint_ms > 0)
			remote_failure_set_retry_after(TimestampTzPlusMilliseconds(GetCurrentTimestamp(), hint_ms));
		if (req.transport_failed && req.too_large)
			remote_failure(RF_PROTOCOL,
						   errmsg("the OAuth token endpoint's answer could not be read"),
						   errdetail("The answer exceeds gmail_ingest.max_response_mb."));
		if (req.transport_failed)
			remote_failure(RF_NETWORK,
						   errmsg("could not reach the OAuth token endpoint"),
						   errdetail_internal("%s", req.error));
		if (req.status == 200)
			remote_failure(RF_PROTOCOL,
						   errmsg("the OAuth token endpoint's answer could not be read"),
						   problem ? errdetail("%s.", problem)
						   : errdetail("HTTP 200 without an access token%s%s.", perr ? ": " : "",
									   perr ? oauth_safe_text(perr) : ""));
		remote_failure(req.status == 429 ? RF_RATE_LIMIT : RF_HTTP,
					   errmsg("the OAuth token endpoint answered HTTP %ld", req.status),
					   err ? errdetail("Error \"%s\": %s.", oauth_safe_text(err), oauth_safe_text(desc))
					   : errdetail("The answer was not a token response."));
	}
	http_request_reset(&req);
	return result;
}
