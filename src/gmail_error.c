/*-------------------------------------------------------------------------
 * gmail_error.c
 *	  What a Gmail error answer means: vanished, expired, refresh the token,
 *	  retry, or which remote failure; and the texts that say so.
 *
 * Errors are classified by Gmail's error.errors[].reason, not by status
 * alone: a 403 may be a rate limit (retry) or a permission problem (never
 * retry).  Everything quoted from an answer goes through gmail_safe_text,
 * since it ends up in sync_runs.error and in the server log.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "gmail_api_int.h"
#include "retry_policy.h"
#include "utf8_text.h"

char *
gmail_safe_text(const char *s)
{
	size_t		len = s ? strnlen(s, 1200) : 0;
	char	   *t = palloc(utf8_text_repaired_len(s, len) + 1);
	size_t		n = utf8_text_repair_into(s, len, t);
	size_t		i;

	n = utf8_text_clip(t, n, 300);
	t[n] = '\0';
	for (i = 0; i < n; i++)
		if ((unsigned char) t[i] < 32 || t[i] == 127)
			t[i] = ' ';
	return t;
}

/* The first reason member of a list of error items, or NULL. */
static const char *
first_reason_in(JsonNode *items)
{
	int			i;

	for (i = 0; i < json_len(items); i++)
	{
		const char *r = json_get_str(json_at(items, i), "reason");

		if (r)
			return r;
	}
	return NULL;
}

void
gmail_error_read(JsonNode *doc, long status, double retry_after_secs, GmailErrorAnswer *ans)
{
	JsonNode   *err = json_get(doc, "error");
	const char *reason = first_reason_in(json_get(err, "errors"));
	const char *message = json_get_str(err, "message");

	/* The v2 error format carries the reason in details[].reason. */
	if (reason == NULL)
		reason = first_reason_in(json_get(err, "details"));
	ans->status = status;
	ans->reason = reason ? gmail_safe_text(reason) : NULL;
	ans->message = message ? gmail_safe_text(message) : "(no message)";
	ans->hint_ms = retry_hint_ms(retry_after_secs, ans->message);
}

static bool
reason_is(const char *reason, const char *what)
{
	return reason != NULL && strcmp(reason, what) == 0;
}

GmailErrorAction
gmail_error_classify(GmailMethod m, const GmailErrorAnswer *ans, RemoteFailure *kind)
{
	long		status = ans->status;

	*kind = RF_HTTP;
	if (status == 404 && (m == GM_MESSAGE_RAW || m == GM_MESSAGE_MINIMAL || m == GM_THREAD_MINIMAL))
		return GE_NOT_FOUND;
	if (status == 404 && m == GM_HISTORY_LIST)
		return GE_HISTORY_EXPIRED;
	if (status == 401)
	{
		*kind = RF_AUTH;
		return GE_REFRESH;
	}
	if (status == 429 || status >= 500 ||
		(status == 403 && (reason_is(ans->reason, "userRateLimitExceeded") ||
						   reason_is(ans->reason, "rateLimitExceeded") ||
						   reason_is(ans->reason, "quotaExceeded") ||
						   reason_is(ans->reason, "backendError"))))
	{
		*kind = (status == 429 || status == 403) ? RF_RATE_LIMIT : RF_HTTP;
		return GE_RETRY;
	}
	if (status == 403)
		*kind = RF_PERMISSION;
	return GE_FAIL;
}

char *
gmail_error_describe(const GmailErrorAnswer *ans)
{
	return psprintf("Gmail answered HTTP %ld%s%s: %s", ans->status,
					ans->reason ? ", reason " : "", ans->reason ? ans->reason : "", ans->message);
}

void
gmail_error_raise(GmailMethod m, const GmailErrorAnswer *ans, RemoteFailure kind)
{
	const char *reason = ans->reason;

	/*
	 * users.watch fails for reasons of the Cloud project, not the mailbox:
	 * say what to fix there.  Gmail's push account must be allowed to
	 * publish to the topic, which must be in the OAuth client's project.
	 */
	if (m == GM_WATCH && (ans->status == 400 || ans->status == 403 || ans->status == 404))
		remote_failure(ans->status == 403 ? RF_PERMISSION : RF_HTTP,
					   errmsg("Gmail users.watch refused the topic (HTTP %ld%s%s)", ans->status,
							  reason ? ", " : "", reason ? reason : ""),
					   errdetail("Gmail said: %s", ans->message),
					   ans->status == 403
					   ? errhint("Grant the Pub/Sub Publisher role on the topic to "
								 "gmail-api-push@system.gserviceaccount.com (an organisation policy "
								 "restricting domains may block that grant).")
					   : errhint("The topic must exist, be named projects/PROJECT/topics/TOPIC and "
								 "belong to the Cloud project of the OAuth client or service account."));
	if (kind == RF_AUTH)
		remote_failure(RF_AUTH,
					   errmsg("Gmail %s refused a freshly refreshed access token (HTTP 401)",
							  gmail_method_name(m)),
					   errdetail("Gmail said: %s", ans->message));
	if (kind == RF_PERMISSION)
		remote_failure(RF_PERMISSION,
					   errmsg("Gmail %s was refused (HTTP 403%s%s)", gmail_method_name(m),
							  reason ? ", " : "", reason ? reason : ""),
					   errdetail("Gmail said: %s", ans->message),
					   errhint("The token needs the https://www.googleapis.com/auth/gmail.readonly scope, "
							   "without gmail.metadata."));
	remote_failure(kind,
				   errmsg("Gmail %s answered HTTP %ld%s%s", gmail_method_name(m), ans->status,
						  reason ? ", reason " : "", reason ? reason : ""),
				   errdetail("Gmail said: %s", ans->message));
}
