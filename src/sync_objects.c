/*-------------------------------------------------------------------------
 * sync_objects.c
 *	  Where a sync puts the bytes of a raw message or an attachment: the
 *	  blobs table, or (blob_store = s3) an object uploaded in the sync's own
 *	  libcurl multi pipeline beside the Gmail fetches.
 *
 * Exactly once: a key is recorded in the objects table before its upload
 * is queued, in the run's subtransaction.  A key already recorded (by an
 * earlier run or earlier in this one) is neither uploaded nor looked at
 * (no PUT, no HEAD).  Uploads share the Gmail calls' transfer slots
 * (max_concurrency) but not their quota budget, and are all complete
 * before the fetch loop ends, so before the transaction that records them
 * can commit; a failed upload fails the run, which rolls its rows back.
 * An upload the run completed before it failed or was cancelled is an
 * orphan no row refers to: gc_objects removes it.
 * Each upload holds a copy of its bytes until it completes; past
 * UPLOAD_BACKLOG_BYTES of them the fetch loop stops submitting Gmail calls.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"

#include "sync_internal.h"

/*
 * Upload bytes held in memory before the fetch loop stops asking Gmail for
 * more: each upload's bytes are a copy that lives until it completes.
 */
#define UPLOAD_BACKLOG_BYTES ((int64) 64 * 1024 * 1024)

bool
sync_uploads_backlogged(const SyncState *s)
{
	return s->upload_bytes >= UPLOAD_BACKLOG_BYTES;
}

/* A completed upload (called from gmail_next): retried, failed or done. */
static void
upload_done(void *arg, HttpRequest *req)
{
	SyncState  *s = (SyncState *) arg;
	S3Request  *r = (S3Request *) req;

	if (s3_judge(s->api_http, &s->s3, r) == S3_RETRY)
	{
		s->object_retries++;
		return;
	}
	/* S3_OK (a PUT is never "not found"); failures raised in s3_judge */
	s->upload_bytes -= (int64) r->len;
	if (r->http.body)
		pfree(r->http.body);
	pfree((void *) r->http.url);
	pfree((void *) r->http.aws_sigv4);
	pfree((void *) r->http.header_lines);
	pfree((void *) r->body);
	pfree(r->key);
	pfree(r);
}

void
sync_keep_bytes(SyncState *s, const char *sha256_hex, const unsigned char *data,
				size_t len, const char *key)
{
	MemoryContext old;
	S3Request  *r;
	unsigned char *copy;

	if (!s->use_s3)
	{
		/* written with the message's batch, which counts blobs_inserted */
		store_batch_add_blob(sync_batch(s), sha256_hex, data, len);
		return;
	}

	if (store_put_blob_ref(s->mb.id, sha256_hex, len))
		s->counters.blobs_inserted++;
	if (!store_record_object(s->mb.id, key, sha256_hex, len))
		return;					/* recorded: uploaded by the run that recorded it */

	if (s->upload_cxt == NULL)
	{
		s->upload_cxt = AllocSetContextCreate(MemoryContextGetParent(s->item_cxt),
											  "gmail_sync uploads", ALLOCSET_DEFAULT_SIZES);
		gmail_set_foreign(s->gmail, upload_done, s);
	}

	/* the caller's bytes die with the message; the upload may outlive it */
	old = MemoryContextSwitchTo(s->upload_cxt);
	copy = palloc(Max(len, 1));
	if (len > 0)
		memcpy(copy, data, len);
	r = palloc0(sizeof(S3Request));
	r->op = S3_PUT;
	r->key = pstrdup(key);
	r->body = copy;
	r->len = len;
	strlcpy(r->sha256, sha256_hex, sizeof(r->sha256));
	s3_submit(s->api_http, &s->s3, r);
	s->upload_bytes += (int64) len;
	MemoryContextSwitchTo(old);
}
