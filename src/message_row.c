/*-------------------------------------------------------------------------
 * message_row.c
 *	  Gmail envelope + parsed MIME record -> MessageRow (palloc'd).
 *
 * Addresses are kept twice: the decoded header text for display, and
 * lower-cased addr-specs in arrays for indexed look-ups; the parsed
 * name/address pairs go to the addresses jsonb column.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "catalog/pg_collation.h"
#include "utils/formatting.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "message_row.h"
#include "sha256_hex.h"

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

void
sort_labels(char **labels, int *count)
{
	int			i,
				k = 0;

	if (*count <= 1)
		return;
	qsort(labels, *count, sizeof(char *), cmp_str);
	for (i = 0; i < *count; i++)
		if (k == 0 || strcmp(labels[k - 1], labels[i]) != 0)
			labels[k++] = labels[i];
	*count = k;
}

char *
sha256_hex_of(const unsigned char *data, size_t len)
{
	char	   *hex = palloc(65);

	if (!sha256_hex(data, len, hex))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute SHA-256")));
	return hex;
}

/* Lower-cased as SQL's lower() would, so WHERE from_email = lower($1) matches. */
static char *
lower_copy(const char *s)
{
	return str_tolower(s, strlen(s), DEFAULT_COLLATION_OID);
}

static char **
email_array(const mp_address_list *l, int *count)
{
	char	  **out = palloc(sizeof(char *) * (l->count + 1));
	size_t		i;
	int			k = 0;

	for (i = 0; i < l->count; i++)
		if (l->items[i].address && l->items[i].address[0])
			out[k++] = lower_copy(l->items[i].address);
	*count = k;
	return out;
}

static void
append_address_list(StringInfo buf, const char *key, const mp_address_list *l)
{
	size_t		i;

	appendStringInfoChar(buf, '"');
	appendStringInfoString(buf, key);
	appendStringInfoString(buf, "\":[");
	for (i = 0; i < l->count; i++)
	{
		if (i > 0)
			appendStringInfoChar(buf, ',');
		appendStringInfoString(buf, "{\"name\":");
		if (l->items[i].name)
			escape_json(buf, l->items[i].name);
		else
			appendStringInfoString(buf, "null");
		appendStringInfoString(buf, ",\"address\":");
		if (l->items[i].address)
			escape_json(buf, l->items[i].address);
		else
			appendStringInfoString(buf, "null");
		appendStringInfoChar(buf, '}');
	}
	appendStringInfoChar(buf, ']');
}

static char *
headers_json(const mp_message *mp)
{
	StringInfoData buf;
	size_t		i;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (i = 0; i < mp->header_count; i++)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		appendStringInfoString(&buf, "{\"name\":");
		escape_json(&buf, mp->headers[i].name ? mp->headers[i].name : "");
		appendStringInfoString(&buf, ",\"value\":");
		escape_json(&buf, mp->headers[i].value ? mp->headers[i].value : "");
		appendStringInfoChar(&buf, '}');
	}
	appendStringInfoChar(&buf, ']');
	return buf.data;
}

static const char *
pcopy(const char *s)
{
	return s ? pstrdup(s) : NULL;
}

void
build_message_row(MessageRow *row, int64 mailbox_id, int64 thread_id, const GmailMessage *gm,
				  const mp_message *mp, const char *raw_sha256)
{
	StringInfoData addr;
	int			nlabels = gm->label_count;

	memset(row, 0, sizeof(*row));
	row->mailbox_id = mailbox_id;
	row->provider_message_id = gm->id;
	row->thread_id = thread_id;
	row->provider_thread_id = gm->thread_id;
	row->history_id = gm->history_id;
	row->internal_date = (TimestampTz) ((gm->internal_date_ms -
										 ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000))
										* 1000);
	row->labels = palloc(sizeof(char *) * (nlabels + 1));
	memcpy(row->labels, gm->label_ids, sizeof(char *) * nlabels);
	sort_labels(row->labels, &nlabels);
	row->label_count = nlabels;
	row->snippet = gm->snippet;
	row->size_estimate = gm->size_estimate;
	row->raw_sha256 = raw_sha256;

	row->subject = pcopy(mp->subject);
	row->from_address = pcopy(mp->from.display);
	row->to_addresses = pcopy(mp->to.display);
	row->cc_addresses = pcopy(mp->cc.display);
	row->bcc_addresses = pcopy(mp->bcc.display);
	row->reply_to = pcopy(mp->reply_to.display);
	{
		int			nfrom;
		char	  **from = email_array(&mp->from, &nfrom);

		row->from_email = nfrom > 0 ? from[0] : NULL;
	}
	row->to_emails = email_array(&mp->to, &row->to_count);
	row->cc_emails = email_array(&mp->cc, &row->cc_count);
	row->bcc_emails = email_array(&mp->bcc, &row->bcc_count);
	row->reply_to_emails = email_array(&mp->reply_to, &row->reply_to_count);

	initStringInfo(&addr);
	appendStringInfoChar(&addr, '{');
	append_address_list(&addr, "from", &mp->from);
	appendStringInfoChar(&addr, ',');
	append_address_list(&addr, "to", &mp->to);
	appendStringInfoChar(&addr, ',');
	append_address_list(&addr, "cc", &mp->cc);
	appendStringInfoChar(&addr, ',');
	append_address_list(&addr, "bcc", &mp->bcc);
	appendStringInfoChar(&addr, ',');
	append_address_list(&addr, "reply_to", &mp->reply_to);
	appendStringInfoChar(&addr, '}');
	row->addresses_json = addr.data;

	row->has_sent_at = mp->has_date;
	if (mp->has_date)
		row->sent_at = time_t_to_timestamptz((pg_time_t) mp->date_epoch);
	row->rfc822_message_id = pcopy(mp->message_id);
	row->in_reply_to = pcopy(mp->in_reply_to);
	row->references = pcopy(mp->references);
	row->body_text = pcopy(mp->body_text);
	row->body_html = pcopy(mp->body_html);
	row->headers_json = headers_json(mp);
	row->parse_error = pcopy(mp->parse_error);
}
