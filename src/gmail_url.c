/*-------------------------------------------------------------------------
 * gmail_url.c
 *	  The request URL of each Gmail method.
 *
 * Lists ask for Gmail's largest page, to spend the fewest calls, and with
 * fields= for only the members the sync reads, to keep each page small.
 * Every value from elsewhere (ids, page tokens, the query) is
 * percent-encoded, so an id or token of the server's choosing cannot add a
 * parameter or change the path.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/json.h"

#include "gmail_api_int.h"

/* "&name=value", the value percent-encoded; nothing when value is NULL. */
static void
append_param(StringInfo u, const char *name, const char *value)
{
	if (value == NULL)
		return;
	appendStringInfo(u, "&%s=", name);
	http_percent_encode(u, value);
}

char *
gmail_url(const char *base, const GmailCall *call)
{
	StringInfoData u;
	int			blen = strlen(base);

	initStringInfo(&u);
	appendBinaryStringInfo(&u, base, (blen > 0 && base[blen - 1] == '/') ? blen - 1 : blen);
	appendStringInfoString(&u, "/gmail/v1/users/me/");
	switch (call->method)
	{
		case GM_PROFILE:
			appendStringInfoString(&u, "profile");
			break;
		case GM_MESSAGES_LIST:
		case GM_THREADS_LIST:
			appendStringInfo(&u, "%s?maxResults=%d&fields=",
							 call->method == GM_MESSAGES_LIST ? "messages" : "threads",
							 GMAIL_LIST_PAGE_SIZE);
			http_percent_encode(&u, call->method == GM_MESSAGES_LIST
								? "messages(id,threadId),nextPageToken,resultSizeEstimate"
								: "threads(id,historyId,snippet),nextPageToken");
			append_param(&u, "q", call->query);
			append_param(&u, "pageToken", call->page_token);
			break;
		case GM_MESSAGE_RAW:
		case GM_MESSAGE_MINIMAL:
			appendStringInfoString(&u, "messages/");
			http_percent_encode(&u, call->id);
			appendStringInfoString(&u, call->method == GM_MESSAGE_RAW ? "?format=raw" : "?format=minimal");
			break;
		case GM_THREAD_MINIMAL:
			appendStringInfoString(&u, "threads/");
			http_percent_encode(&u, call->id);
			appendStringInfoString(&u, "?format=minimal");
			break;
		case GM_HISTORY_LIST:
			appendStringInfo(&u, "history?maxResults=%d&startHistoryId=" INT64_FORMAT,
							 GMAIL_LIST_PAGE_SIZE, call->start_history_id);
			append_param(&u, "pageToken", call->page_token);
			break;
		case GM_WATCH:
			appendStringInfoString(&u, "watch");
			break;
		case GM_STOP:
			appendStringInfoString(&u, "stop");
			break;
		default:
			elog(ERROR, "unknown Gmail method %d", (int) call->method);
	}
	return u.data;
}

/*
 * users.watch names the topic and no labelIds, so every change of the
 * mailbox is published; users.stop posts an empty object.
 */
char *
gmail_body(const GmailCall *call)
{
	StringInfoData b;

	if (call->method == GM_STOP)
		return pstrdup("{}");
	if (call->method != GM_WATCH)
		return NULL;
	initStringInfo(&b);
	appendStringInfoString(&b, "{\"topicName\":");
	escape_json(&b, call->topic);
	appendStringInfoChar(&b, '}');
	return b.data;
}
