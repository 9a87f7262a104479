/*-------------------------------------------------------------------------
 * store_batch.c
 *	  The writes of new messages, a batch at a time: blobs, messages,
 *	  attachments and their ledger events, one statement per table for a
 *	  batch of completed messages (INSERT ... SELECT unnest(arrays)).
 *
 * One SPI execution per row of every table cost more than the rows
 * themselves (executor start-up and shutdown, parameter copies); a batch
 * pays it once per table.  The statements are the per-row upserts they
 * replace, row for row: ON CONFLICT (natural key) DO UPDATE ... WHERE the
 * row differs, RETURNING (xmax = 0) to tell an insert from an update, so
 * what is stored, counted and logged is the same.  This is the only place
 * that writes blobs (database mode) and attachments.
 *
 * The arrays are unnested in a select list, not in FROM: there the set
 * function's rows are first materialised in a tuplestore, a copy (zeroed,
 * then filled) of every blob and body of the batch; in a select list they
 * stream (ProjectSet), the arrays, all of one length, read side by side.
 *
 * A batch is written when it holds BATCH_MESSAGES messages or BATCH_BYTES
 * of content, when a message already in it comes again (one statement
 * cannot upsert a row twice), and at the end of every fetch loop, so
 * before the run (or a backfill step) commits.  Its memory is reset after
 * each write: a sync's memory does not grow with the mailbox.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "storage/bufmgr.h"
#include "utils/timestamp.h"

#include "store.h"
#include "store_spi.h"

#define BATCH_MESSAGES	64
#define BATCH_BYTES		((Size) 2 * 1024 * 1024)

/* mail_messages' columns after mailbox_id, in the statement's order */
enum
{
	MC_PMID, MC_THREAD, MC_PTID, MC_HIST, MC_IDATE, MC_LABELS, MC_SUBJECT, MC_FROM, MC_TO,
	MC_CC, MC_BCC, MC_REPLY_TO, MC_FROM_EMAIL, MC_TO_EMAILS, MC_CC_EMAILS, MC_BCC_EMAILS,
	MC_REPLY_TO_EMAILS, MC_ADDRESSES, MC_SENT_AT, MC_MSGID, MC_IN_REPLY_TO, MC_REFERENCES,
	MC_SNIPPET, MC_BODY_TEXT, MC_BODY_HTML, MC_SIZE, MC_HEADERS, MC_RAW_SHA, MC_PARSE_ERROR,
	MC_COUNT
};

/* element type of each message column's array; arrays travel as their text */
static const Oid msg_col_types[MC_COUNT] = {
	TEXTOID, INT8OID, TEXTOID, INT8OID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID
};

enum
{
	AC_MESSAGE, AC_PART, AC_FILENAME, AC_DERIVED, AC_MIME, AC_SIZE, AC_CID, AC_INLINE, AC_SHA,
	AC_PATH, AC_COUNT
};

static const Oid att_col_types[AC_COUNT] = {
	INT8OID, TEXTOID, TEXTOID, BOOLOID, TEXTOID, INT8OID, TEXTOID, BOOLOID, TEXTOID, TEXTOID
};

typedef struct BatchMessage
{
	Datum		v[MC_COUNT];
	bool		isnull[MC_COUNT];
	char	   *provider_id;
	char	   *thread_json;	/* the ledger's "thread" */
	char	   *labels_json;	/* the ledger's "labels" */
	int			first_att;
	int			natts;
	int64		id;
	StoreAction action;
} BatchMessage;

typedef struct BatchAttachment
{
	Datum		v[AC_COUNT];
	bool		isnull[AC_COUNT];
	int			message;		/* index into the batch's messages */
	char	   *part_json;
	char	   *sha256;
	int64		size;
	int64		id;
	StoreAction action;
} BatchAttachment;

typedef struct BatchBlob
{
	char	   *sha256;
	Datum		data;			/* bytea */
	int64		size;
} BatchBlob;

typedef struct BatchKey
{
	char		key[GMAIL_ID_SIZE];
	int			index;
} BatchKey;

typedef struct BlobKey
{
	char		key[65];
} BlobKey;

struct StoreBatch
{
	int64		run_id;
	int64		mailbox_id;
	RunCounters *counters;
	MemoryContext cxt;			/* everything below; reset after each write */
	BatchMessage *msgs;
	int			nmsgs;
	BatchAttachment *atts;
	int			natts;
	int			atts_cap;
	BatchBlob  *blobs;
	int			nblobs;
	int			blobs_cap;
	Size		bytes;
	HTAB	   *msg_keys;		/* provider_message_id -> index */
	HTAB	   *blob_keys;		/* sha256 of the blobs in the batch */
};

static void
batch_begin(StoreBatch *b)
{
	HASHCTL		ctl;

	MemoryContextReset(b->cxt);
	b->msgs = MemoryContextAlloc(b->cxt, sizeof(BatchMessage) * BATCH_MESSAGES);
	b->nmsgs = 0;
	b->atts = NULL;
	b->natts = b->atts_cap = 0;
	b->blobs = NULL;
	b->nblobs = b->blobs_cap = 0;
	b->bytes = 0;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = GMAIL_ID_SIZE;
	ctl.entrysize = sizeof(BatchKey);
	ctl.hcxt = b->cxt;
	b->msg_keys = hash_create("batch messages", BATCH_MESSAGES, &ctl,
							  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	ctl.keysize = 65;
	ctl.entrysize = sizeof(BlobKey);
	b->blob_keys = hash_create("batch blobs", BATCH_MESSAGES, &ctl,
							   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

StoreBatch *
store_batch_create(MemoryContext parent, int64 run_id, int64 mailbox_id, RunCounters *counters)
{
	StoreBatch *b = MemoryContextAllocZero(parent, sizeof(StoreBatch));

	b->run_id = run_id;
	b->mailbox_id = mailbox_id;
	b->counters = counters;
	b->cxt = AllocSetContextCreate(parent, "gmail_sync batch", ALLOCSET_DEFAULT_SIZES);
	batch_begin(b);
	return b;
}

bool
store_batch_full(const StoreBatch *b)
{
	return b->nmsgs >= BATCH_MESSAGES || b->bytes >= BATCH_BYTES;
}

bool
store_batch_has_message(const StoreBatch *b, const char *provider_message_id)
{
	return hash_search(b->msg_keys, provider_message_id, HASH_FIND, NULL) != NULL;
}

/* ------------------------------------------------------------- adding */

static Datum
text_or_null(const char *s, bool *isnull)
{
	*isnull = (s == NULL);
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

/* A text[] value's literal, to travel inside a text[] column of literals. */
static Datum
array_literal(char **items, int n)
{
	Datum		arr = text_array(items, n);

	return CStringGetTextDatum(OidOutputFunctionCall(F_ARRAY_OUT, arr));
}

static char *
json_string(const char *s)
{
	StringInfoData buf;

	initStringInfo(&buf);
	escape_json(&buf, s);
	return buf.data;
}

char *
store_labels_json(char **labels, int n)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		escape_json(&buf, labels[i]);
	}
	appendStringInfoChar(&buf, ']');
	return buf.data;
}

void
store_batch_add_blob(StoreBatch *b, const char *sha256_hex, const unsigned char *data, size_t len)
{
	MemoryContext old;
	BlobKey    *k;
	bool		found;
	bytea	   *copy;

	if (len > MaxAllocSize - VARHDRSZ)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("content of %zu bytes is too large to store", len)));
	k = hash_search(b->blob_keys, sha256_hex, HASH_ENTER, &found);
	if (found)
		return;					/* the same content, once */
	old = MemoryContextSwitchTo(b->cxt);
	if (b->nblobs == b->blobs_cap)
	{
		b->blobs_cap = b->blobs_cap ? b->blobs_cap * 2 : 64;
		b->blobs = b->blobs ? repalloc(b->blobs, sizeof(BatchBlob) * b->blobs_cap)
			: palloc(sizeof(BatchBlob) * b->blobs_cap);
	}
	copy = palloc(len + VARHDRSZ);
	SET_VARSIZE(copy, len + VARHDRSZ);
	if (len > 0)
		memcpy(VARDATA(copy), data, len);
	b->blobs[b->nblobs].sha256 = k->key;
	b->blobs[b->nblobs].data = PointerGetDatum(copy);
	b->blobs[b->nblobs].size = (int64) len;
	b->nblobs++;
	b->bytes += len;
	MemoryContextSwitchTo(old);
}

int
store_batch_add_message(StoreBatch *b, const MessageRow *r, const char *provider_thread_id)
{
	MemoryContext old;
	BatchMessage *m;
	BatchKey   *k;
	bool		found;

	if (store_batch_has_message(b, r->provider_message_id) || b->nmsgs >= BATCH_MESSAGES)
		store_batch_flush(b);
	old = MemoryContextSwitchTo(b->cxt);
	m = &b->msgs[b->nmsgs];
	memset(m, 0, sizeof(*m));
	m->provider_id = pstrdup(r->provider_message_id);
	m->thread_json = json_string(provider_thread_id);
	m->labels_json = store_labels_json(r->labels, r->label_count);
	m->first_att = b->natts;
	m->v[MC_PMID] = CStringGetTextDatum(r->provider_message_id);
	m->v[MC_THREAD] = Int64GetDatum(r->thread_id);
	m->v[MC_PTID] = CStringGetTextDatum(r->provider_thread_id);
	m->v[MC_HIST] = Int64GetDatum(r->history_id);
	m->v[MC_IDATE] = TimestampTzGetDatum(r->internal_date);
	m->v[MC_LABELS] = array_literal(r->labels, r->label_count);
	m->v[MC_SUBJECT] = text_or_null(r->subject, &m->isnull[MC_SUBJECT]);
	m->v[MC_FROM] = text_or_null(r->from_address, &m->isnull[MC_FROM]);
	m->v[MC_TO] = text_or_null(r->to_addresses, &m->isnull[MC_TO]);
	m->v[MC_CC] = text_or_null(r->cc_addresses, &m->isnull[MC_CC]);
	m->v[MC_BCC] = text_or_null(r->bcc_addresses, &m->isnull[MC_BCC]);
	m->v[MC_REPLY_TO] = text_or_null(r->reply_to, &m->isnull[MC_REPLY_TO]);
	m->v[MC_FROM_EMAIL] = text_or_null(r->from_email, &m->isnull[MC_FROM_EMAIL]);
	m->v[MC_TO_EMAILS] = array_literal(r->to_emails, r->to_count);
	m->v[MC_CC_EMAILS] = array_literal(r->cc_emails, r->cc_count);
	m->v[MC_BCC_EMAILS] = array_literal(r->bcc_emails, r->bcc_count);
	m->v[MC_REPLY_TO_EMAILS] = array_literal(r->reply_to_emails, r->reply_to_count);
	m->v[MC_ADDRESSES] = text_or_null(r->addresses_json, &m->isnull[MC_ADDRESSES]);
	m->v[MC_SENT_AT] = TimestampTzGetDatum(r->sent_at);
	m->isnull[MC_SENT_AT] = !r->has_sent_at;
	m->v[MC_MSGID] = text_or_null(r->rfc822_message_id, &m->isnull[MC_MSGID]);
	m->v[MC_IN_REPLY_TO] = text_or_null(r->in_reply_to, &m->isnull[MC_IN_REPLY_TO]);
	m->v[MC_REFERENCES] = text_or_null(r->references, &m->isnull[MC_REFERENCES]);
	m->v[MC_SNIPPET] = text_or_null(r->snippet, &m->isnull[MC_SNIPPET]);
	m->v[MC_BODY_TEXT] = text_or_null(r->body_text, &m->isnull[MC_BODY_TEXT]);
	m->v[MC_BODY_HTML] = text_or_null(r->body_html, &m->isnull[MC_BODY_HTML]);
	m->v[MC_SIZE] = Int32GetDatum(r->size_estimate);
	m->v[MC_HEADERS] = text_or_null(r->headers_json, &m->isnull[MC_HEADERS]);
	m->v[MC_RAW_SHA] = text_or_null(r->raw_sha256, &m->isnull[MC_RAW_SHA]);
	m->v[MC_PARSE_ERROR] = text_or_null(r->parse_error, &m->isnull[MC_PARSE_ERROR]);
	k = hash_search(b->msg_keys, r->provider_message_id, HASH_ENTER, &found);
	k->index = b->nmsgs;
	b->bytes += (r->body_text ? strlen(r->body_text) : 0) + (r->body_html ? strlen(r->body_html) : 0);
	MemoryContextSwitchTo(old);
	return b->nmsgs++;
}

void
store_batch_add_attachment(StoreBatch *b, int message, const AttachmentRow *r)
{
	MemoryContext old = MemoryContextSwitchTo(b->cxt);
	BatchAttachment *a;

	Assert(message == b->nmsgs - 1);
	if (b->natts == b->atts_cap)
	{
		b->atts_cap = b->atts_cap ? b->atts_cap * 2 : 64;
		b->atts = b->atts ? repalloc(b->atts, sizeof(BatchAttachment) * b->atts_cap)
			: palloc(sizeof(BatchAttachment) * b->atts_cap);
	}
	a = &b->atts[b->natts++];
	memset(a, 0, sizeof(*a));
	a->message = message;
	a->part_json = json_string(r->part_id);
	a->sha256 = pstrdup(r->sha256_hex);
	a->size = r->size_bytes;
	/* AC_MESSAGE is the message's row id, known once the messages are written */
	a->v[AC_PART] = CStringGetTextDatum(r->part_id);
	a->v[AC_FILENAME] = CStringGetTextDatum(r->filename);
	a->v[AC_DERIVED] = BoolGetDatum(r->filename_derived);
	a->v[AC_MIME] = CStringGetTextDatum(r->mime_type);
	a->v[AC_SIZE] = Int64GetDatum(r->size_bytes);
	a->v[AC_CID] = text_or_null(r->content_id, &a->isnull[AC_CID]);
	a->v[AC_INLINE] = BoolGetDatum(r->is_inline);
	a->v[AC_SHA] = CStringGetTextDatum(r->sha256_hex);
	a->v[AC_PATH] = CStringGetTextDatum(r->storage_path);
	b->msgs[message].natts++;
	MemoryContextSwitchTo(old);
}

/* ------------------------------------------------------------ writing */

/* A one-dimensional array of n values of type typid taken every stride bytes. */
static Datum
column_array(const Datum *first_v, const bool *first_null, Size stride, int n, Oid typid)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			i;

	for (i = 0; i < n; i++)
	{
		d[i] = *(const Datum *) ((const char *) first_v + i * stride);
		nulls[i] = *(const bool *) ((const char *) first_null + i * stride);
	}
	get_typlenbyvalalign(typid, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(d, nulls, 1, dims, lbs, typid, typlen, typbyval,
											  typalign));
}

static Oid
array_type_of(Oid typid)
{
	switch (typid)
	{
		case TEXTOID:
			return TEXTARRAYOID;
		case INT8OID:
			return INT8ARRAYOID;
		case INT4OID:
			return INT4ARRAYOID;
		case BOOLOID:
			return BOOLARRAYOID;
		case TIMESTAMPTZOID:
			return TIMESTAMPTZARRAYOID;
		default:
			return BYTEAARRAYOID;
	}
}

/* Blobs not stored yet (known content is not handed to the executor again). */
static void
write_blobs(StoreBatch *b)
{
	static SPIPlanPtr probe = NULL;
	static SPIPlanPtr plan = NULL;
	static const Oid probe_types[] = {TEXTARRAYOID, INT8OID};
	static const Oid types[] = {TEXTARRAYOID, INT8ARRAYOID, BYTEAARRAYOID, INT8OID};
	char	  **shas;
	Datum	   *data;
	int64	   *sizes;
	int			n = 0;
	int			i;
	Datum		v[4];
	HTAB	   *known;
	HASHCTL		ctl;

	if (b->nblobs == 0)
		return;
	shas = palloc(sizeof(char *) * b->nblobs);
	for (i = 0; i < b->nblobs; i++)
		shas[i] = b->blobs[i].sha256;
	/*
	 * One index probe per content: with "= ANY ($1)" and no statistics (a
	 * first sync in a new installation) the planner scanned the mailbox's
	 * blobs for every batch, a cost growing with the mailbox.
	 */
	plan_once(&probe,
			  "SELECT b.sha256 FROM unnest($1::text[]) AS u(sha) "
			  "  CROSS JOIN LATERAL (SELECT x.sha256 FROM " SCHEMA "blobs x "
			  "                       WHERE x.mailbox_id = $2 AND x.sha256 = u.sha AND x.data IS NOT NULL "
			  "                       LIMIT 1) b",
			  2, probe_types);
	v[0] = text_array(shas, b->nblobs);
	v[1] = Int64GetDatum(b->mailbox_id);
	run_plan(probe, v, NULL, SPI_OK_SELECT);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = 65;
	ctl.entrysize = sizeof(BlobKey);
	ctl.hcxt = CurrentMemoryContext;
	known = hash_create("known blobs", Max(SPI_processed, 16), &ctl,
						HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (i = 0; i < (int) SPI_processed; i++)
		hash_search(known, col_text(i, 1), HASH_ENTER, NULL);
	SPI_freetuptable(SPI_tuptable);

	data = palloc(sizeof(Datum) * b->nblobs);
	sizes = palloc(sizeof(int64) * b->nblobs);
	for (i = 0; i < b->nblobs; i++)
	{
		if (hash_search(known, b->blobs[i].sha256, HASH_FIND, NULL))
			continue;
		shas[n] = b->blobs[i].sha256;
		data[n] = b->blobs[i].data;
		sizes[n] = b->blobs[i].size;
		n++;
	}
	hash_destroy(known);
	if (n > 0)
	{
		int			dims[1] = {n};
		int			lbs[1] = {1};

		plan_once(&plan,
				  "INSERT INTO " SCHEMA "blobs AS b (sha256, size_bytes, data, mailbox_id) "
				  "SELECT unnest($1::text[]), unnest($2::int8[]), unnest($3::bytea[]), $4 "
				  "ON CONFLICT (mailbox_id, sha256) DO UPDATE SET size_bytes = EXCLUDED.size_bytes, "
				  "  data = coalesce(b.data, EXCLUDED.data) "
				  " WHERE b.size_bytes IS DISTINCT FROM EXCLUDED.size_bytes OR b.data IS NULL "
				  "RETURNING (b.xmax = 0)",
				  4, types);
		v[0] = text_array(shas, n);
		v[3] = Int64GetDatum(b->mailbox_id);
		v[1] = int8_array_nullable(sizes, NULL, n);
		v[2] = PointerGetDatum(construct_md_array(data, NULL, 1, dims, lbs, BYTEAOID, -1, false,
												  TYPALIGN_INT));
		run_plan(plan, v, NULL, SPI_OK_INSERT_RETURNING);
		b->counters->blobs_inserted += SPI_processed;
		SPI_freetuptable(SPI_tuptable);
		pfree(DatumGetPointer(v[2]));
	}
	pfree(shas);
	pfree(data);
	pfree(sizes);
}

static void
write_messages(StoreBatch *b)
{
	static SPIPlanPtr plan = NULL;
	static Oid	types[MC_COUNT + 1];
	Datum		v[MC_COUNT + 1];
	uint64		i;
	int			k;
	char	  **missing;
	int			nmissing = 0;

	if (b->nmsgs == 0)
		return;
	if (plan == NULL)
	{
		types[0] = INT8OID;
		for (k = 0; k < MC_COUNT; k++)
			types[k + 1] = array_type_of(msg_col_types[k]);
	}
	plan_once(&plan,
			  "INSERT INTO " SCHEMA "mail_messages AS m (mailbox_id, provider_message_id, thread_id, "
			  "  provider_thread_id, history_id, internal_date, label_ids, subject, from_address, "
			  "  to_addresses, cc_addresses, bcc_addresses, reply_to, from_email, to_emails, cc_emails, "
			  "  bcc_emails, reply_to_emails, addresses, sent_at, rfc822_message_id, in_reply_to, "
			  "  \"references\", snippet, body_text, body_html, size_estimate, headers, raw_sha256, "
			  "  parse_error) "
			  "SELECT $1, u.pmid, u.tid, u.ptid, u.hist, u.idate, u.labels::text[], u.subject, u.f, "
			  "  u.t, u.c, u.b, u.r, u.fe, u.te::text[], u.ce::text[], u.be::text[], u.re::text[], "
			  "  u.addresses::jsonb, u.sent, u.msgid, u.irt, u.refs, u.snippet, u.btext, u.bhtml, "
			  "  u.size, u.headers::jsonb, u.raw, u.perr "
			  "  FROM (SELECT unnest($2) AS pmid, unnest($3) AS tid, unnest($4) AS ptid, "
			  "               unnest($5) AS hist, unnest($6) AS idate, unnest($7) AS labels, "
			  "               unnest($8) AS subject, unnest($9) AS f, unnest($10) AS t, "
			  "               unnest($11) AS c, unnest($12) AS b, unnest($13) AS r, "
			  "               unnest($14) AS fe, unnest($15) AS te, unnest($16) AS ce, "
			  "               unnest($17) AS be, unnest($18) AS re, unnest($19) AS addresses, "
			  "               unnest($20) AS sent, unnest($21) AS msgid, unnest($22) AS irt, "
			  "               unnest($23) AS refs, unnest($24) AS snippet, unnest($25) AS btext, "
			  "               unnest($26) AS bhtml, unnest($27) AS size, unnest($28) AS headers, "
			  "               unnest($29) AS raw, unnest($30) AS perr) AS u "
			  "ON CONFLICT (mailbox_id, provider_message_id) DO UPDATE SET "
			  "  thread_id = EXCLUDED.thread_id, provider_thread_id = EXCLUDED.provider_thread_id, "
			  "  label_ids = EXCLUDED.label_ids, subject = EXCLUDED.subject, "
			  "  from_address = EXCLUDED.from_address, to_addresses = EXCLUDED.to_addresses, "
			  "  cc_addresses = EXCLUDED.cc_addresses, bcc_addresses = EXCLUDED.bcc_addresses, "
			  "  reply_to = EXCLUDED.reply_to, from_email = EXCLUDED.from_email, "
			  "  to_emails = EXCLUDED.to_emails, cc_emails = EXCLUDED.cc_emails, "
			  "  bcc_emails = EXCLUDED.bcc_emails, reply_to_emails = EXCLUDED.reply_to_emails, "
			  "  addresses = EXCLUDED.addresses, sent_at = EXCLUDED.sent_at, "
			  "  rfc822_message_id = EXCLUDED.rfc822_message_id, in_reply_to = EXCLUDED.in_reply_to, "
			  "  \"references\" = EXCLUDED.\"references\", snippet = EXCLUDED.snippet, "
			  "  body_text = EXCLUDED.body_text, body_html = EXCLUDED.body_html, "
			  "  size_estimate = EXCLUDED.size_estimate, headers = EXCLUDED.headers, "
			  "  raw_sha256 = EXCLUDED.raw_sha256, parse_error = EXCLUDED.parse_error, "
			  "  history_id = EXCLUDED.history_id, internal_date = EXCLUDED.internal_date, "
			  "  deleted_at = NULL, updated_at = EXCLUDED.updated_at "
			  "WHERE (m.thread_id, m.label_ids, m.subject, m.from_address, m.to_addresses, m.cc_addresses, "
			  "       m.bcc_addresses, m.reply_to, m.from_email, m.to_emails, m.cc_emails, m.bcc_emails, "
			  "       m.reply_to_emails, m.addresses, m.sent_at, m.rfc822_message_id, m.in_reply_to, "
			  "       m.\"references\", m.body_text, m.body_html, m.headers, m.raw_sha256, m.parse_error, "
			  "       m.internal_date, m.deleted_at) "
			  "  IS DISTINCT FROM "
			  "      (EXCLUDED.thread_id, EXCLUDED.label_ids, EXCLUDED.subject, EXCLUDED.from_address, "
			  "       EXCLUDED.to_addresses, EXCLUDED.cc_addresses, EXCLUDED.bcc_addresses, "
			  "       EXCLUDED.reply_to, EXCLUDED.from_email, EXCLUDED.to_emails, EXCLUDED.cc_emails, "
			  "       EXCLUDED.bcc_emails, EXCLUDED.reply_to_emails, EXCLUDED.addresses, EXCLUDED.sent_at, "
			  "       EXCLUDED.rfc822_message_id, EXCLUDED.in_reply_to, EXCLUDED.\"references\", "
			  "       EXCLUDED.body_text, EXCLUDED.body_html, EXCLUDED.headers, EXCLUDED.raw_sha256, "
			  "       EXCLUDED.parse_error, EXCLUDED.internal_date, NULL::timestamptz) "
			  "RETURNING m.provider_message_id, m.id, (m.xmax = 0)",
			  MC_COUNT + 1, types);
	v[0] = Int64GetDatum(b->mailbox_id);
	for (k = 0; k < MC_COUNT; k++)
		v[k + 1] = column_array(&b->msgs[0].v[k], &b->msgs[0].isnull[k], sizeof(BatchMessage),
								b->nmsgs, msg_col_types[k]);
	run_plan(plan, v, NULL, SPI_OK_INSERT_RETURNING);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		BatchKey   *key = hash_search(b->msg_keys, col_text(i, 1), HASH_FIND, NULL);

		if (key == NULL)
			elog(ERROR, "a batch wrote a message it did not hold");
		b->msgs[key->index].id = DatumGetInt64(col_datum(i, 2, &isnull));
		b->msgs[key->index].action = DatumGetBool(col_datum(i, 3, &isnull)) ? SA_INSERTED : SA_UPDATED;
	}
	SPI_freetuptable(SPI_tuptable);

	/* Identical rows wrote nothing: their ids, for their attachments. */
	missing = palloc(sizeof(char *) * b->nmsgs);
	for (k = 0; k < b->nmsgs; k++)
		if (b->msgs[k].action == SA_UNCHANGED)
			missing[nmissing++] = b->msgs[k].provider_id;
	if (nmissing > 0)
	{
		HTAB	   *h = store_message_states(b->mailbox_id, missing, nmissing);

		for (k = 0; k < b->nmsgs; k++)
			if (b->msgs[k].action == SA_UNCHANGED)
			{
				MessageState *st = hash_search(h, b->msgs[k].provider_id, HASH_FIND, NULL);

				b->msgs[k].id = st ? st->id : 0;
			}
		hash_destroy(h);
	}
	pfree(missing);
	for (k = 0; k < b->nmsgs; k++)
	{
		if (b->msgs[k].action == SA_INSERTED)
			b->counters->messages_inserted++;
		else if (b->msgs[k].action == SA_UPDATED)
			b->counters->messages_updated++;
		else
			b->counters->messages_unchanged++;
	}
}

static void
write_attachments(StoreBatch *b)
{
	static SPIPlanPtr plan = NULL;
	static Oid	types[AC_COUNT + 1];
	Datum		v[AC_COUNT + 1];
	uint64		i;
	int			k;

	if (b->natts == 0)
		return;
	if (plan == NULL)
	{
		types[0] = INT8OID;
		for (k = 0; k < AC_COUNT; k++)
			types[k + 1] = array_type_of(att_col_types[k]);
	}
	plan_once(&plan,
			  "INSERT INTO " SCHEMA "mail_attachments AS a (mailbox_id, message_id, part_id, filename, "
			  "  filename_derived, mime_type, size_bytes, content_id, is_inline, sha256, storage_path) "
			  "SELECT $1, u.* FROM unnest($2, $3, $4, $5, $6, $7, $8, $9, $10, $11) AS u "
			  "ON CONFLICT (mailbox_id, message_id, part_id) DO UPDATE SET "
			  "  filename = EXCLUDED.filename, filename_derived = EXCLUDED.filename_derived, "
			  "  mime_type = EXCLUDED.mime_type, size_bytes = EXCLUDED.size_bytes, "
			  "  content_id = EXCLUDED.content_id, is_inline = EXCLUDED.is_inline, "
			  "  sha256 = EXCLUDED.sha256, storage_path = EXCLUDED.storage_path, updated_at = EXCLUDED.updated_at "
			  "WHERE (a.filename, a.filename_derived, a.mime_type, a.size_bytes, a.content_id, "
			  "       a.is_inline, a.sha256, a.storage_path) IS DISTINCT FROM "
			  "      (EXCLUDED.filename, EXCLUDED.filename_derived, EXCLUDED.mime_type, "
			  "       EXCLUDED.size_bytes, EXCLUDED.content_id, EXCLUDED.is_inline, EXCLUDED.sha256, "
			  "       EXCLUDED.storage_path) "
			  "RETURNING a.message_id, a.part_id, a.id, (a.xmax = 0)",
			  AC_COUNT + 1, types);
	for (k = 0; k < b->natts; k++)
		b->atts[k].v[AC_MESSAGE] = Int64GetDatum(b->msgs[b->atts[k].message].id);
	v[0] = Int64GetDatum(b->mailbox_id);
	for (k = 0; k < AC_COUNT; k++)
		v[k + 1] = column_array(&b->atts[0].v[k], &b->atts[0].isnull[k], sizeof(BatchAttachment),
								b->natts, att_col_types[k]);
	run_plan(plan, v, NULL, SPI_OK_INSERT_RETURNING);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		msg_id = DatumGetInt64(col_datum(i, 1, &isnull));
		char	   *part = col_text(i, 2);

		/* a message's attachments are few: find the row by a short scan */
		for (k = 0; k < b->natts; k++)
		{
			BatchAttachment *a = &b->atts[k];

			if (b->msgs[a->message].id == msg_id &&
				strcmp(TextDatumGetCString(a->v[AC_PART]), part) == 0)
			{
				a->id = DatumGetInt64(col_datum(i, 3, &isnull));
				a->action = DatumGetBool(col_datum(i, 4, &isnull)) ? SA_INSERTED : SA_UPDATED;
				break;
			}
		}
	}
	SPI_freetuptable(SPI_tuptable);
	for (k = 0; k < b->natts; k++)
	{
		if (b->atts[k].action == SA_INSERTED)
			b->counters->attachments_inserted++;
		else if (b->atts[k].action == SA_UPDATED)
			b->counters->attachments_updated++;
		else
			b->counters->attachments_unchanged++;
	}
}

/* The batch's events, in the order the per-row writes logged them. */
static void
write_ledger(StoreBatch *b)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, INT8OID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID};
	int			cap = b->nmsgs + b->natts;
	char	  **events = palloc(sizeof(char *) * Max(cap, 1));
	int64	   *entities = palloc(sizeof(int64) * Max(cap, 1));
	bool	   *no_entity = palloc(sizeof(bool) * Max(cap, 1));
	char	  **providers = palloc(sizeof(char *) * Max(cap, 1));
	char	  **details = palloc(sizeof(char *) * Max(cap, 1));
	int			n = 0;
	int			k,
				j;
	Datum		v[6];

	for (k = 0; k < b->nmsgs; k++)
	{
		BatchMessage *m = &b->msgs[k];

		if (m->action != SA_UNCHANGED)
		{
			events[n] = "message.ingested";
			entities[n] = m->id;
			no_entity[n] = m->id <= 0;
			providers[n] = m->provider_id;
			details[n] = psprintf("{\"action\":\"%s\",\"thread\":%s,\"labels\":%s}",
								  store_action_name(m->action), m->thread_json, m->labels_json);
			n++;
		}
		for (j = m->first_att; j < m->first_att + m->natts; j++)
		{
			BatchAttachment *a = &b->atts[j];

			if (a->action == SA_UNCHANGED)
				continue;
			events[n] = "attachment.saved";
			entities[n] = a->id;
			no_entity[n] = a->id <= 0;
			providers[n] = NULL;
			details[n] = psprintf("{\"action\":\"%s\",\"part_id\":%s,\"sha256\":\"%s\",\"size_bytes\":"
								  INT64_FORMAT "}",
								  store_action_name(a->action), a->part_json, a->sha256, a->size);
			n++;
		}
	}
	if (n > 0)
	{
		plan_once(&plan,
				  "INSERT INTO " SCHEMA "ledger (sync_run_id, mailbox_id, event, entity_id, provider_id, detail) "
				  "SELECT $1, $2, u.ev, u.eid, u.pid, u.det::jsonb "
				  "  FROM unnest($3::text[], $4::int8[], $5::text[], $6::text[]) WITH ORDINALITY "
				  "       AS u(ev, eid, pid, det, ord) "
				  " ORDER BY u.ord",
				  6, types);
		v[0] = Int64GetDatum(b->run_id);
		v[1] = Int64GetDatum(b->mailbox_id);
		v[2] = text_array(events, n);
		v[3] = int8_array_nullable(entities, no_entity, n);
		v[4] = text_array(providers, n);
		v[5] = text_array(details, n);
		run_plan(plan, v, NULL, SPI_OK_INSERT);
	}
	pfree(events);
	pfree(entities);
	pfree(no_entity);
	pfree(providers);
	pfree(details);
}

/*
 * The foreign-key checks of every attachment row look up its message by
 * (mailbox_id, id).  Their plans are made once per backend, from the
 * estimates of the moment: against a mail_messages never analysed and
 * nearly empty (a first sync in a new installation) every index starting
 * with mailbox_id looks as good as the primary key, and the plan kept
 * could scan all of the mailbox's messages for each check, a cost growing
 * with the mailbox (issue 15: quadratic in a first sync).  So each time
 * the table has doubled in size since this backend last looked, its plans
 * are invalidated and remade from the new size, where the primary key
 * wins: a few replans, however large the sync.
 */
static void
replan_as_tables_grow(void)
{
	static BlockNumber seen = 0;
	static Oid	seen_relid = InvalidOid;
	Oid			relid;
	Relation	rel;
	BlockNumber nblocks;

	/* looked up each time: the extension may have been dropped and made again */
	relid = get_relname_relid("mail_messages", get_namespace_oid("gmail_ingest", true));
	if (!OidIsValid(relid))
		return;
	if (relid != seen_relid)
	{
		seen_relid = relid;
		seen = 0;
	}
	rel = table_open(relid, AccessShareLock);
	nblocks = RelationGetNumberOfBlocks(rel);
	table_close(rel, AccessShareLock);
	if (nblocks >= 8 && nblocks >= 2 * seen)
	{
		CacheInvalidateRelcacheByRelid(relid);
		seen = nblocks;
	}
}

void
store_batch_flush(StoreBatch *b)
{
	MemoryContext old;

	if (b->nmsgs == 0 && b->nblobs == 0)
		return;
	CHECK_FOR_INTERRUPTS();
	old = MemoryContextSwitchTo(b->cxt);
	/* blobs first: messages and attachments reference them */
	write_blobs(b);
	write_messages(b);
	write_attachments(b);
	write_ledger(b);
	replan_as_tables_grow();
	MemoryContextSwitchTo(old);
	batch_begin(b);
}
