/*-------------------------------------------------------------------------
 * blob_admin.c
 *	  SQL entry points for bytes in the object store (SPEC 7d):
 *	  _verify_objects (verify's object checks), _migrate_blobs_batch (one
 *	  committed batch of migrate_blobs) and gc_objects.
 *
 * Each makes an HTTP client of its own (retries, backoff and waits through
 * s3_client.c, interruptible).  verify asks for max_concurrency objects at
 * once; migrate_blobs and gc_objects go one request at a time.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "http.h"
#include "settings.h"
#include "settings_s3.h"
#include "sha256_hex.h"
#include "store.h"

/* gc_objects leaves younger objects alone: a running sync's uploads. */
#define GC_MIN_AGE_SECS 3600.0

PGDLLEXPORT Datum gmail_verify_objects(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum gmail_migrate_blobs_batch(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum gmail_gc_objects(PG_FUNCTION_ARGS);

static void
put_row(ReturnSetInfo *rsinfo, const char *a, const char *b, int nbool, bool okv)
{
	Datum		v[3];
	bool		n[3] = {false, false, false};

	if (nbool)
	{
		v[0] = CStringGetTextDatum(a);
		v[1] = BoolGetDatum(okv);
		v[2] = CStringGetTextDatum(b);
	}
	else
	{
		v[0] = CStringGetTextDatum(a);
		v[1] = CStringGetTextDatum(b);
	}
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
}

/*
 * What a finished HEAD (GET when deep) of an object says: NULL when it
 * holds len bytes (that hash to sha), else the problem.  Frees the answer.
 */
static const char *
object_problem(S3Request *r, S3Outcome outcome, const char *sha, int64 len, bool deep)
{
	const char *problem = NULL;
	char		got[65];

	if (outcome == S3_NOT_FOUND)
		problem = "missing";
	else if (deep)
	{
		if (r->http.body_len != (size_t) len ||
			!sha256_hex(r->http.body, r->http.body_len, got) || strcmp(got, sha) != 0)
			problem = "bytes do not hash to its sha256";
	}
	else if (r->http.content_length != len)
		problem = "wrong size";
	http_request_reset(&r->http);
	return problem;
}

/* Does the object at key hold len bytes (and, deep, hash to sha)? */
static const char *
check_object(HttpClient *http, const S3Config *cfg, const char *key, const char *sha,
			 int64 len, bool deep)
{
	S3Request	r;
	S3Outcome	outcome;

	memset(&r, 0, sizeof(r));
	r.op = deep ? S3_GET : S3_HEAD;
	r.key = (char *) key;
	outcome = s3_run(http, cfg, &r);
	return object_problem(&r, outcome, sha, len, deep);
}

PG_FUNCTION_INFO_V1(gmail_verify_objects);

/* _verify_objects(mailbox_id, deep): one row per problem key, then a summary. */
Datum
gmail_verify_objects(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		mailbox_id = PG_GETARG_INT64(0);
	bool		deep = PG_GETARG_BOOL(1);
	S3Config	cfg;
	HttpClient *http;
	StoredObject *objs;
	int			n;
	int			missing = 0,
				wrong = 0;
	int			window;
	S3Request  *reqs;
	int			next = 0,
				inflight = 0;

	InitMaterializedSRF(fcinfo, 0);
	settings_s3_config(&cfg, gi_max_retries);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	objs = store_objects_of_mailbox(mailbox_id, &n);

	/* max_concurrency objects asked for at once, like a sync's uploads */
	window = Max(1, gi_max_concurrency);
	reqs = palloc0(sizeof(S3Request) * window);
	http = settings_http_client(CurrentMemoryContext, window, 0, false);
	while (next < n || inflight > 0)
	{
		S3Request  *r;
		S3Outcome	outcome;
		StoredObject *o;
		const char *problem;

		for (int j = 0; j < window && next < n; j++)
		{
			if (reqs[j].opaque != NULL)
				continue;
			memset(&reqs[j], 0, sizeof(S3Request));
			reqs[j].op = deep ? S3_GET : S3_HEAD;
			reqs[j].key = objs[next].key;
			reqs[j].opaque = &objs[next];
			s3_submit(http, &cfg, &reqs[j]);
			next++;
			inflight++;
		}
		r = (S3Request *) http_wait_any(http);
		if (r == NULL)
			elog(ERROR, "object store request was lost");
		outcome = s3_judge(http, &cfg, r);
		if (outcome == S3_RETRY)
			continue;
		o = (StoredObject *) r->opaque;
		problem = object_problem(r, outcome, o->sha256, o->size_bytes, deep);
		r->opaque = NULL;
		inflight--;
		if (problem == NULL)
			continue;
		if (strcmp(problem, "missing") == 0)
			missing++;
		else
			wrong++;
		put_row(rsinfo, strcmp(problem, "missing") == 0 ? "object missing" : "object damaged",
				psprintf("%s: %s", o->key, problem), 1, false);
	}
	http_client_destroy(http);
	SPI_finish();
	put_row(rsinfo, "objects present",
			psprintf("%d of %d objects missing from the store", missing, n), 1, missing == 0);
	put_row(rsinfo, deep ? "object hashes match" : "object sizes match",
			psprintf("%d objects whose %s differs", wrong, deep ? "bytes" : "size"), 1, wrong == 0);
	return (Datum) 0;
}

/* Upload sha's bytes to every key that should hold them, verified; true if all did. */
static int
migrate_to_store(HttpClient *http, const S3Config *cfg, int64 mailbox_id, const char *sha)
{
	bytea	   *data;
	int			nrefs;
	BlobRef    *refs = store_blob_refs(mailbox_id, sha, &nrefs, &data);

	if (data == NULL)
		return 0;
	for (int i = 0; i < nrefs; i++)
	{
		S3Request	r;
		size_t		len = VARSIZE_ANY_EXHDR(data);

		if (store_record_object(refs[i].mailbox_id, refs[i].key, sha, len))
		{
			memset(&r, 0, sizeof(r));
			r.op = S3_PUT;
			r.key = refs[i].key;
			r.body = (const unsigned char *) VARDATA_ANY(data);
			r.len = len;
			strlcpy(r.sha256, sha, sizeof(r.sha256));
			(void) s3_run(http, cfg, &r);
			http_request_reset(&r.http);
		}
		/* the database copy goes only once the store is seen to hold it */
		if (check_object(http, cfg, refs[i].key, sha, (int64) len, false) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("object \"%s\" is not as uploaded", refs[i].key),
					 errdetail("The database copy of blob %s is kept.", sha)));
		if (refs[i].attachment_id != 0)
			store_set_storage_path(refs[i].mailbox_id, refs[i].attachment_id, refs[i].key);
	}
	store_blob_drop_bytes(mailbox_id, sha);
	return 1;
}

static int
migrate_to_database(HttpClient *http, const S3Config *cfg, int64 mailbox_id, const char *sha,
					const char *key, int64 size)
{
	S3Request	r;
	char		got[65];

	memset(&r, 0, sizeof(r));
	r.op = S3_GET;
	r.key = (char *) key;
	if (s3_run(http, cfg, &r) == S3_NOT_FOUND)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("object \"%s\" is missing from the store", key),
				 errdetail("Blob %s has no bytes in the database either.", sha)));
	if (r.http.body_len != (size_t) size || !sha256_hex(r.http.body, r.http.body_len, got) ||
		strcmp(got, sha) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("object \"%s\" does not hash to its sha256 %s", key, sha)));
	store_blob_restore_bytes(mailbox_id, sha, (const unsigned char *) r.http.body, r.http.body_len);
	http_request_reset(&r.http);
	return 1;
}

PG_FUNCTION_INFO_V1(gmail_migrate_blobs_batch);

/* _migrate_blobs_batch(target, batch_size): blobs moved (0 = done). */
Datum
gmail_migrate_blobs_batch(PG_FUNCTION_ARGS)
{
	char	   *target = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int32		batch = PG_GETARG_INT32(1);
	S3Config	cfg;
	HttpClient *http;
	int			moved = 0;

	if (strcmp(target, "s3") != 0 && strcmp(target, "database") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target must be 's3' or 'database', got \"%s\"", target)));
	if (batch < 1 || batch > 100000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be between 1 and 100000, got %d", batch)));
	settings_s3_config(&cfg, gi_max_retries);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	http = settings_http_client(CurrentMemoryContext, 1, 0, false);
	if (strcmp(target, "s3") == 0)
	{
		int64	   *mailbox_ids;
		char	  **shas;
		int			n = store_blobs_with_bytes(batch, &mailbox_ids, &shas);

		for (int i = 0; i < n; i++)
		{
			CHECK_FOR_INTERRUPTS();
			moved += migrate_to_store(http, &cfg, mailbox_ids[i], shas[i]);
		}
	}
	else
	{
		int64	   *mailbox_ids;
		char	  **shas;
		char	  **keys;
		int64	   *sizes;
		int			n = store_blobs_in_objects(batch, &mailbox_ids, &shas, &keys, &sizes);

		for (int i = 0; i < n; i++)
		{
			CHECK_FOR_INTERRUPTS();
			moved += migrate_to_database(http, &cfg, mailbox_ids[i], shas[i], keys[i], sizes[i]);
		}
	}
	http_client_destroy(http);
	SPI_finish();
	PG_RETURN_INT32(moved);
}

PG_FUNCTION_INFO_V1(gmail_gc_objects);

/*
 * gc_objects(dry_run): every object under the prefix that no row refers
 * to, with what was (or would be) done to it.  ListObjectsV2, paged.
 */
Datum
gmail_gc_objects(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		dry_run = PG_ARGISNULL(0) ? true : PG_GETARG_BOOL(0);
	S3Config	cfg;
	HttpClient *http;
	char	   *token = NULL;

	InitMaterializedSRF(fcinfo, 0);
	settings_s3_config(&cfg, gi_max_retries);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	http = settings_http_client(CurrentMemoryContext, 1, 0, false);
	do
	{
		S3Request	r;
		S3ListPage	page;

		memset(&r, 0, sizeof(r));
		r.op = S3_LIST;
		r.list_prefix = "";
		r.list_token = token;
		(void) s3_run(http, &cfg, &r);
		s3_parse_list(&cfg, r.http.body, &page);
		http_request_reset(&r.http);
		for (int i = 0; i < page.count; i++)
		{
			const char *action;

			CHECK_FOR_INTERRUPTS();
			if (store_object_referenced(page.keys[i]))
				continue;
			if (page.ages_secs[i] < GC_MIN_AGE_SECS)
				action = "kept: younger than an hour";
			else if (dry_run)
				action = "would delete";
			else
			{
				S3Request	d;

				memset(&d, 0, sizeof(d));
				d.op = S3_DELETE;
				d.key = page.keys[i];
				(void) s3_run(http, &cfg, &d);
				http_request_reset(&d.http);
				action = "deleted";
			}
			put_row(rsinfo, page.keys[i], action, 0, false);
		}
		token = page.next_token;
	} while (token != NULL);
	http_client_destroy(http);
	SPI_finish();
	return (Datum) 0;
}
