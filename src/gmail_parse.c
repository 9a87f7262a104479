/*-------------------------------------------------------------------------
 * gmail_parse.c
 *	  Gmail's answers -> the plain C structs of gmail_api.h: messages,
 *	  thread items, history events, page tokens; and base64url.
 *
 * Gmail leaves out what it has nothing for, so an absent member is an
 * empty list or an unset field, never an error.  A member that is present
 * but wrong (a number out of range, an id that is not valid UTF-8, a page
 * token too long to send back) makes the whole answer unreadable: the
 * client retries it and then fails with RF_PROTOCOL, rather than store a
 * value that would break a row or a later request.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"

#include "gmail_api_int.h"

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
	"details", "emailAddress", "error", "errors", "expiration", "history", "historyId", "id",
	"internalDate", "labelIds", "labelsAdded", "labelsRemoved", "message",
	"messages", "messagesAdded", "messagesDeleted", "nextPageToken", "raw",
	"reason", "resultSizeEstimate", "sizeEstimate", "snippet", "threadId", "threads", NULL
};
static const char *const gmail_exact_names[] = {
	"id", "threadId", "nextPageToken", NULL
};
static const JsonReadSpec gmail_read_spec = {gmail_read_names, gmail_exact_names};

JsonNode *
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

bool
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
			/* only an estimate, for progress: one out of range is ignored */
			if (!json_get_int64(doc, "resultSizeEstimate", &call->result_size_estimate) ||
				call->result_size_estimate < 0 || call->result_size_estimate > PG_INT32_MAX)
				call->result_size_estimate = 0;
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
		case GM_WATCH:
			/* epoch ms, before year 10000 so a timestamptz holds it */
			ok = get_history_id(doc, "historyId", &call->history_id, why) &&
				get_number(doc, "expiration", 1, INTERNAL_DATE_MAX_MS, &call->expiration_ms, why,
						   "expiration is not a time in epoch milliseconds");
			break;
		default:
			ok = false;
			break;
	}
	return ok && *why == NULL;
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

		/*
		 * Digits are 0..63 and the other classes 64 and 65, so bit 6 of
		 * the four OR'd together says whether all four are digits: one
		 * branch per quantum.
		 */
		while (bits == 0 && end - p >= 4)
		{
			uint32		v;

			a = b64_table[p[0]];
			b = b64_table[p[1]];
			c = b64_table[p[2]];
			d = b64_table[p[3]];
			if ((a | b | c | d) & 64)
				break;
			v = ((uint32) a << 18) | ((uint32) b << 12) | ((uint32) c << 6) | d;
			buf[o] = (unsigned char) (v >> 16);
			buf[o + 1] = (unsigned char) (v >> 8);
			buf[o + 2] = (unsigned char) v;
			o += 3;
			p += 4;
		}
		if (p >= end)
			break;
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
