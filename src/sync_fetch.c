/*-------------------------------------------------------------------------
 * sync_fetch.c
 *	  The fetch pipeline: keeps calls in flight, and stores what each answer
 *	  brings (a new message with its blobs and attachments, a stored
 *	  message's labels, a deletion), with the run's counters and ledger.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "message_row.h"
#include "mime_parse.h"
#include "sync_internal.h"

char *
action_detail(StoreAction a, const char *extra_key, const char *extra_json)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"action\":\"%s\"", store_action_name(a));
	if (extra_key)
		appendStringInfo(&buf, ",\"%s\":%s", extra_key, extra_json);
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

static bool
has_label(const GmailMessage *m, const char *label)
{
	int			i;

	for (i = 0; i < m->label_count; i++)
		if (strcmp(m->label_ids[i], label) == 0)
			return true;
	return false;
}

void
report_progress(SyncState *s, bool force)
{
	TimestampTz now = GetCurrentTimestamp();

	if (!force && s->done % PROGRESS_EVERY_MESSAGES != 0 &&
		!TimestampDifferenceExceeds(s->last_progress, now, PROGRESS_EVERY_MS))
		return;
	s->last_progress = now;
	ereport(NOTICE,
			(errmsg(INT64_FORMAT " of " INT64_FORMAT " messages done", s->done,
					Max(s->todo, s->todo_hint))));
}

/* ------------------------------------------------------------------ */

StoreBatch *
sync_batch(SyncState *s)
{
	if (s->batch == NULL)
		s->batch = store_batch_create(MemoryContextGetParent(s->item_cxt), s->run_id, s->mb.id,
									  &s->counters);
	return s->batch;
}

static void
store_attachments(SyncState *s, int message, const mp_message *mp)
{
	size_t		i;

	for (i = 0; i < mp->attachment_count; i++)
	{
		const mp_attachment *a = &mp->attachments[i];
		AttachmentRow row;

		memset(&row, 0, sizeof(row));
		row.mailbox_id = s->mb.id;
		row.part_id = a->part_id;
		row.filename = a->filename ? a->filename : "";
		row.filename_derived = a->filename_derived;
		row.mime_type = a->mime_type ? a->mime_type : "application/octet-stream";
		row.size_bytes = (int64) a->size;
		row.content_id = a->content_id;
		row.is_inline = a->is_inline;
		row.sha256_hex = a->sha256_hex;
		/* in s3 mode the key, whose filename part is made portable */
		row.storage_path = s->use_s3
			? store_attachment_key(s->mb.org_id, s->mb.id, a->sha256_hex, row.filename)
			: psprintf("%s/" INT64_FORMAT "/%s/%s", s->mb.org_id, s->mb.id,
					   a->sha256_hex, row.filename);
		sync_keep_bytes(s, a->sha256_hex, a->data, a->size, row.storage_path);
		store_batch_add_attachment(s->batch, message, &row);
	}
}

/*
 * A new message's raw bytes: blob, parse, row, attachments, ledger, all
 * into the run's batch (written when full and at the end of the fetch loop).
 */
static void
ingest_raw_message(SyncState *s, const FetchItem *item, GmailMessage *gm)
{
	char	   *raw_sha = NULL;
	mp_message	mp;
	volatile bool parsed = false;
	StoreBatch *batch = sync_batch(s);

	if (has_label(gm, "DRAFT"))
		return;					/* drafts are not ingested */

	/* one statement upserts a row once: a message listed twice waits its turn */
	if (store_batch_has_message(batch, gm->id) || store_batch_full(batch))
		store_batch_flush(batch);

	raw_sha = sha256_hex_of(gm->raw, gm->raw_len);
	if (s->store_raw)
	{
		sync_keep_bytes(s, raw_sha, gm->raw, gm->raw_len,
						s->use_s3 ? store_raw_key(s->mb.org_id, s->mb.id, raw_sha) : NULL);
	}

	memset(&mp, 0, sizeof(mp));
	PG_TRY();
	{
		MessageRow	row;
		int			k;

		if (!mp_parse(gm->raw, gm->raw_len, &mp))
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory while parsing message %s", gm->id)));
		parsed = true;
		if (mp.parse_error)
			s->counters.messages_parse_errors++;

		build_message_row(&row, s->mb.id, item->thread_id, gm, &mp,
						  s->store_raw ? raw_sha : NULL);
		k = store_batch_add_message(batch, &row, gm->thread_id);
		store_attachments(s, k, &mp);
	}
	PG_FINALLY();
	{
		if (parsed)
			mp_message_free(&mp);
	}
	PG_END_TRY();
}

/* A stored message's row is about to be written: a pending insert of it goes first. */
static void
flush_if_pending(SyncState *s, const char *provider_message_id)
{
	if (s->batch && store_batch_has_message(s->batch, provider_message_id))
		store_batch_flush(s->batch);
}

/* A stored message's current labels (format=minimal). */
void
refresh_labels(SyncState *s, const FetchItem *item, GmailMessage *gm)
{
	int			n = gm->label_count;
	int64		id = 0;
	StoreAction act;

	sort_labels(gm->label_ids, &n);
	flush_if_pending(s, item->id);
	act = store_update_labels(s->mb.id, item->id, item->thread_id, item->provider_thread_id,
							  item->internal_date, gm->label_ids, n, gm->history_id, &id);
	if (act == SA_UNCHANGED)
		s->counters.messages_unchanged++;
	else
	{
		s->counters.messages_updated++;
		store_ledger(s->run_id, s->mb.id, "message.ingested", id, item->id,
					 action_detail(SA_UPDATED, "labels", store_labels_json(gm->label_ids, n)));
	}
}

void
mark_deleted(SyncState *s, const FetchItem *item)
{
	int64		id = 0;

	flush_if_pending(s, item->id);
	if (store_mark_deleted(s->mb.id, item->id, item->thread_id, item->provider_thread_id,
						   item->internal_date, &id) != SA_UNCHANGED)
	{
		s->counters.messages_deleted++;
		store_ledger(s->run_id, s->mb.id, "message.deleted", id, item->id, NULL);
	}
}

FetchItem
item_for_ref(const StoredMessageRef *ref)
{
	FetchItem	it;

	memset(&it, 0, sizeof(it));
	it.id = ref->provider_id;
	it.stored = true;
	it.thread_id = ref->thread_id;
	it.provider_thread_id = ref->provider_thread_id;
	it.internal_date = ref->internal_date;
	return it;
}

/* A thread's current messages: labels of those stored, deletions of the rest. */
static void
process_thread(SyncState *s, const FetchItem *item, GmailCall *call)
{
	int			i,
				k;

	for (i = 0; i < item->nrefs; i++)
	{
		FetchItem	it = item_for_ref(&item->refs[i]);
		GmailMessage *found = NULL;

		for (k = 0; !call->not_found && k < call->message_count; k++)
			if (strcmp(call->messages[k].id, it.id) == 0)
			{
				found = &call->messages[k];
				break;
			}
		if (found)
			refresh_labels(s, &it, found);
		else
			mark_deleted(s, &it);
	}
}

static void
process_fetched(SyncState *s, const FetchItem *item, GmailCall *call)
{
	if (item->whole_thread)
	{
		process_thread(s, item, call);
		return;
	}
	if (call->not_found)
	{
		/* Gone between listing and fetching: a stored one was deleted. */
		if (item->stored)
			mark_deleted(s, item);
		else
			s->counters.messages_vanished++;
		return;
	}
	if (item->stored)
		refresh_labels(s, item, &call->message);
	else
		ingest_raw_message(s, item, &call->message);
}

/*
 * Fetch every item, keeping up to twice max_concurrency calls queued so a
 * transfer slot never waits for the database, and process each answer in
 * a memory context reset afterwards.
 */
void
fetch_and_store(SyncState *s, FetchItem *items, int n)
{
	int			window = Max(1, s->max_concurrency * 2);
	GmailCall  *calls = palloc0(sizeof(GmailCall) * window);
	int		   *free_slots = palloc(sizeof(int) * window);
	int			nfree = window;
	int			next = 0;
	int			i;

	for (i = 0; i < window; i++)
		free_slots[i] = window - 1 - i;
	s->todo += n;
	while (next < n || gmail_pending(s->gmail) > 0)
	{
		GmailCall  *done;

		/* a store slower than Gmail holds the fetches back, not memory */
		while (next < n && nfree > 0 && !sync_uploads_backlogged(s))
		{
			GmailCall  *c = &calls[free_slots[--nfree]];

			memset(c, 0, sizeof(*c));
			c->method = items[next].whole_thread ? GM_THREAD_MINIMAL
				: items[next].stored ? GM_MESSAGE_MINIMAL : GM_MESSAGE_RAW;
			c->id = items[next].id;
			c->opaque = &items[next];
			gmail_submit(s->gmail, c);
			next++;
		}
		done = gmail_next(s->gmail);
		if (done == NULL)
		{
			if (next < n)
				continue;		/* only uploads were pending; fetch on */
			break;
		}
		{
			MemoryContext old = MemoryContextSwitchTo(s->item_cxt);

			process_fetched(s, (FetchItem *) done->opaque, done);
			MemoryContextSwitchTo(old);
			MemoryContextReset(s->item_cxt);
		}
		gmail_call_done(done);
		free_slots[nfree++] = (int) (done - calls);
		s->done++;
		report_progress(s, false);
	}
	/* what follows (the threads' rows, a commit) reads what the batch holds */
	if (s->batch)
		store_batch_flush(s->batch);
	pfree(calls);
	pfree(free_slots);
}

/* ------------------------------------------------------------------ */


