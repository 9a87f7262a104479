/*-------------------------------------------------------------------------
 * s3_client.h
 *	  Requests to an S3-compatible object store (AWS S3, Supabase Storage,
 *	  Cloudflare R2, MinIO) on the HTTP layer's libcurl multi handle.
 *
 * libcurl signs every request itself (CURLOPT_AWS_SIGV4); this file builds
 * what it signs: the URL with the key percent-encoded the canonical way,
 * the x-amz-content-sha256 header (libcurl 7.88 hashes only POSTFIELDS it
 * was handed for POST, so the body's hash is given), and it reads S3's XML
 * answers.  Like http.c it knows nothing of Gmail or SQL; it raises remote
 * failures (remote_error.h) for answers no retry cures.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_S3_CLIENT_H
#define GMAIL_INGEST_S3_CLIENT_H

#include "http.h"

typedef struct S3Config
{
	const char *endpoint;		/* https://host[:port][/path], no query */
	const char *region;
	const char *bucket;
	const char *access_key_id;
	const char *secret_access_key;
	bool		path_style;		/* endpoint/bucket/key, else bucket.host/key */
	const char *prefix;			/* prepended to every key, e.g. "mail/" */
	int			max_retries;
} S3Config;

typedef enum S3Op
{
	S3_PUT,
	S3_HEAD,
	S3_GET,
	S3_DELETE,
	S3_LIST
} S3Op;

typedef enum S3Outcome
{
	S3_OK,
	S3_NOT_FOUND,				/* HEAD/GET of a key the store does not hold */
	S3_RETRY					/* resubmitted (after a backoff) */
} S3Outcome;

/* One object-store request; http must stay the first member. */
typedef struct S3Request
{
	HttpRequest http;
	S3Op		op;
	char	   *key;			/* without the prefix */
	const unsigned char *body;	/* PUT: must outlive the request */
	size_t		len;
	char		sha256[65];		/* PUT: the body's SHA-256, lowercase hex */
	char	   *list_prefix;	/* LIST: without the configured prefix */
	char	   *list_token;		/* LIST: continuation token or NULL */
	int			attempt;
	int			retries;		/* retries spent so far */
	void	   *opaque;			/* caller's */
} S3Request;

/* Fill in the HTTP request of r (palloc'd strings) and submit it. */
extern void s3_submit(HttpClient *http, const S3Config *cfg, S3Request *r);

/*
 * What a completed request means: S3_OK, S3_NOT_FOUND, or S3_RETRY after
 * it was resubmitted with a backoff; raises a remote failure naming S3's
 * error code, the operation and the key (never a credential) otherwise.
 */
extern S3Outcome s3_judge(HttpClient *http, const S3Config *cfg, S3Request *r);

/* Submit r and wait for its final outcome on a client of its own. */
extern S3Outcome s3_run(HttpClient *http, const S3Config *cfg, S3Request *r);

/* Append key percent-encoded as SigV4 wants a path: '/' kept, %XX upper case. */
extern void s3_encode_key(StringInfo buf, const char *key);

/* One page of ListObjectsV2. */
typedef struct S3ListPage
{
	int			count;
	char	  **keys;			/* without the configured prefix */
	int64	   *sizes;
	double	   *ages_secs;		/* now - LastModified */
	char	   *next_token;		/* NULL when this was the last page */
} S3ListPage;

extern void s3_parse_list(const S3Config *cfg, const char *xml, S3ListPage *page);

#endif
