/*-------------------------------------------------------------------------
 * s3_client.c
 *	  Object-store requests: URLs, SigV4 through libcurl, S3's answers.
 *
 * Signing is libcurl's (CURLOPT_AWS_SIGV4 with "aws:amz:<region>:s3"), not
 * ours.  What it signs must be canonical, so this file
 *	- percent-encodes each key byte outside A-Z a-z 0-9 - . _ ~ as %XX with
 *	  upper-case hex and keeps '/', which is SigV4's canonical URI for S3
 *	  (libcurl 7.88 signs the path exactly as given);
 *	- writes ListObjectsV2's query already sorted and encoded;
 *	- sends x-amz-content-sha256 on every request: libcurl 7.88 neither adds
 *	  it nor hashes a PUT body, and S3 refuses a SigV4 request without it.
 * Retries follow the Gmail rules (retry_policy.h): 5xx, 429, SlowDown and
 * transport failures, with truncated exponential backoff and Retry-After.
 * Answers no retry cures raise a remote failure naming S3's error code,
 * the operation and the key; the credentials never appear in a message.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "lib/stringinfo.h"
#include "utils/timestamp.h"

#include "remote_error.h"
#include "retry_policy.h"
#include "s3_client.h"

/* SHA-256 of no bytes: the payload hash of every request without a body. */
#define S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* Longest S3 error code we copy into a message. */
#define S3_CODE_MAX 64

static const char *const op_names[] = {"PUT", "HEAD", "GET", "DELETE", "LIST"};

void
s3_encode_key(StringInfo buf, const char *key)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p;

	for (p = (const unsigned char *) key; *p; p++)
	{
		unsigned char ch = *p;

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
			(ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' ||
			ch == '~' || ch == '/')
			appendStringInfoChar(buf, (char) ch);
		else
		{
			appendStringInfoChar(buf, '%');
			appendStringInfoChar(buf, hex[ch >> 4]);
			appendStringInfoChar(buf, hex[ch & 15]);
		}
	}
}

/* The bucket's base URL: path-style endpoint/bucket, or bucket.host. */
static void
append_bucket_url(StringInfo buf, const S3Config *cfg)
{
	const char *endpoint = cfg->endpoint;
	size_t		n = strlen(endpoint);

	while (n > 0 && endpoint[n - 1] == '/')
		n--;
	if (cfg->path_style)
	{
		appendBinaryStringInfo(buf, endpoint, n);
		appendStringInfoChar(buf, '/');
		s3_encode_key(buf, cfg->bucket);
	}
	else
	{
		const char *sep = strstr(endpoint, "://");
		size_t		scheme = sep ? (size_t) (sep - endpoint) + 3 : 0;

		appendBinaryStringInfo(buf, endpoint, scheme);
		appendStringInfoString(buf, cfg->bucket);
		appendStringInfoChar(buf, '.');
		appendBinaryStringInfo(buf, endpoint + scheme, n - scheme);
	}
}

void
s3_submit(HttpClient *http, const S3Config *cfg, S3Request *r)
{
	StringInfoData url;
	const char *payload_hash = S3_EMPTY_SHA256;

	initStringInfo(&url);
	append_bucket_url(&url, cfg);
	if (r->op == S3_LIST)
	{
		char	   *full_prefix = psprintf("%s%s", cfg->prefix ? cfg->prefix : "",
										   r->list_prefix ? r->list_prefix : "");

		/* parameters in SigV4's canonical (sorted) order */
		appendStringInfoChar(&url, '?');
		if (r->list_token)
		{
			appendStringInfoString(&url, "continuation-token=");
			http_percent_encode(&url, r->list_token);
			appendStringInfoChar(&url, '&');
		}
		appendStringInfoString(&url, "list-type=2&prefix=");
		http_percent_encode(&url, full_prefix);
		pfree(full_prefix);
	}
	else
	{
		appendStringInfoChar(&url, '/');
		if (cfg->prefix)
			s3_encode_key(&url, cfg->prefix);
		s3_encode_key(&url, r->key);
	}

	memset(&r->http, 0, sizeof(HttpRequest));
	r->http.url = url.data;
	r->http.opaque = NULL;		/* not a Gmail call (see gmail_next) */
	r->http.no_admission = true;	/* costs no Gmail quota */
	r->http.aws_sigv4 = psprintf("aws:amz:%s:s3", cfg->region);
	r->http.aws_credentials = psprintf("%s:%s", cfg->access_key_id, cfg->secret_access_key);
	switch (r->op)
	{
		case S3_PUT:
			r->http.method = "PUT";
			r->http.upload = r->body;
			r->http.upload_len = r->len;
			payload_hash = r->sha256;
			break;
		case S3_HEAD:
			r->http.method = "HEAD";
			break;
		case S3_DELETE:
			r->http.method = "DELETE";
			break;
		case S3_GET:
		case S3_LIST:
			break;
	}
	r->http.header_lines = psprintf("x-amz-content-sha256: %s%s", payload_hash,
									r->op == S3_PUT ? "\nContent-Type: application/octet-stream" : "");
	r->attempt = 0;
	http_submit(http, &r->http);

	/* http_submit copied them; the secret goes at once */
	explicit_bzero((char *) r->http.aws_credentials, strlen(r->http.aws_credentials));
	pfree((char *) r->http.aws_credentials);
	r->http.aws_credentials = NULL;
}

/* S3's <Code> in an error answer, as a safe short word, or NULL. */
static char *
error_code(const HttpRequest *req)
{
	const char *start;
	const char *end;
	size_t		n;
	char	   *code;

	if (req->body == NULL)
		return NULL;
	start = strstr(req->body, "<Code>");
	if (start == NULL)
		return NULL;
	start += 6;
	end = strstr(start, "</Code>");
	if (end == NULL)
		return NULL;
	n = Min((size_t) (end - start), S3_CODE_MAX);
	code = pnstrdup(start, n);
	for (char *p = code; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
			*p = '?';
	return code;
}

static void
resubmit(HttpClient *http, const S3Config *cfg, S3Request *r, long hint_ms)
{
	long		wait = retry_wait_ms(r->attempt, hint_ms);
	char	   *credentials;

	r->attempt++;
	r->retries++;
	if (r->http.body)
		pfree(r->http.body);
	r->http.body = NULL;
	r->http.not_before = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait);
	/* the credentials were scrubbed after the first submission */
	credentials = psprintf("%s:%s", cfg->access_key_id, cfg->secret_access_key);
	r->http.aws_credentials = credentials;
	http_submit(http, &r->http);
	explicit_bzero(credentials, strlen(credentials));
	pfree(credentials);
	r->http.aws_credentials = NULL;
}

S3Outcome
s3_judge(HttpClient *http, const S3Config *cfg, S3Request *r)
{
	HttpRequest *req = &r->http;
	const char *op = op_names[r->op];
	const char *what = r->op == S3_LIST ? (r->list_prefix ? r->list_prefix : "") : r->key;
	char	   *code;
	long		status = req->status;
	RemoteFailure kind;

	if (req->transport_failed)
	{
		if (!req->permanent && !req->too_large && r->attempt < cfg->max_retries)
		{
			resubmit(http, cfg, r, -1);
			return S3_RETRY;
		}
		remote_failure(RF_NETWORK,
					   errmsg("object store %s of \"%s\" failed", op, what),
					   errdetail_internal("%s", req->error));
	}
	if (status >= 200 && status < 300)
		return S3_OK;

	code = error_code(req);
	if (status == 404 && (r->op == S3_HEAD || r->op == S3_DELETE ||
						  (code && strcmp(code, "NoSuchKey") == 0)))
		return r->op == S3_DELETE ? S3_OK : S3_NOT_FOUND;

	if (status >= 500 || status == 429 ||
		(code && (strcmp(code, "SlowDown") == 0 || strcmp(code, "RequestTimeout") == 0 ||
				  strcmp(code, "InternalError") == 0)))
	{
		if (r->attempt < cfg->max_retries)
		{
			resubmit(http, cfg, r, retry_hint_ms(req->retry_after_secs, NULL));
			return S3_RETRY;
		}
		kind = (status == 503 || status == 429 || (code && strcmp(code, "SlowDown") == 0))
			? RF_RATE_LIMIT : RF_HTTP;
		remote_failure(kind,
					   errmsg("object store %s of \"%s\" failed after %d retries", op, what, r->attempt),
					   errdetail("The store answered HTTP %ld %s.", status, code ? code : "(no error code)"));
	}

	/* Refusals no retry cures: the configuration or the bucket is wrong. */
	if (code && (strcmp(code, "AccessDenied") == 0 || strcmp(code, "AllAccessDisabled") == 0))
		kind = RF_PERMISSION;
	else if (code && (strcmp(code, "SignatureDoesNotMatch") == 0 ||
					  strcmp(code, "InvalidAccessKeyId") == 0 ||
					  strcmp(code, "NoSuchBucket") == 0 ||
					  strcmp(code, "AuthorizationHeaderMalformed") == 0 ||
					  strcmp(code, "RequestTimeTooSkewed") == 0))
		kind = RF_CONFIG;
	else if (status == 401 || status == 403)
		kind = RF_PERMISSION;
	else
		kind = RF_HTTP;
	remote_failure(kind,
				   errmsg("object store refused %s of \"%s\"", op, what),
				   errdetail("The store answered HTTP %ld %s.", status,
							 code ? code : (r->op == S3_HEAD ? "(a HEAD answer carries no error code)"
											: "(no error code)")),
				   kind == RF_CONFIG
				   ? errhint("Check gmail_ingest.s3_endpoint, s3_region, s3_bucket and the access key.")
				   : 0);
	pg_unreachable();
}

S3Outcome
s3_run(HttpClient *http, const S3Config *cfg, S3Request *r)
{
	S3Outcome	out;

	s3_submit(http, cfg, r);
	do
	{
		HttpRequest *done = http_wait_any(http);

		if (done != &r->http)
			elog(ERROR, "object store request was lost");
		out = s3_judge(http, cfg, r);
	} while (out == S3_RETRY);
	return out;
}

/* ---------------------------------------------------- ListObjectsV2 */

/* XML text between <tag> and </tag> from *pos, unescaped; NULL if none. */
static char *
xml_take(const char **pos, const char *end, const char *tag)
{
	char	   *open = psprintf("<%s>", tag);
	char	   *close = psprintf("</%s>", tag);
	const char *s = strstr(*pos, open);
	const char *e;
	StringInfoData out;

	if (s == NULL || s >= end)
		return NULL;
	s += strlen(open);
	e = strstr(s, close);
	if (e == NULL || e > end)
		return NULL;
	*pos = e + strlen(close);
	initStringInfo(&out);
	while (s < e)
	{
		if (*s == '&')
		{
			static const struct
			{
				const char *ent;
				char		ch;
			}			ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
			bool		done = false;

			for (int i = 0; i < lengthof(ents); i++)
			{
				size_t		n = strlen(ents[i].ent);

				if (strncmp(s, ents[i].ent, n) == 0)
				{
					appendStringInfoChar(&out, ents[i].ch);
					s += n;
					done = true;
					break;
				}
			}
			if (!done && s[1] == '#')
			{
				char	   *stop;
				long		cp = (s[2] == 'x' || s[2] == 'X') ? strtol(s + 3, &stop, 16) : strtol(s + 2, &stop, 10);

				if (*stop == ';' && cp > 0 && cp < 0x80)
				{
					appendStringInfoChar(&out, (char) cp);
					s = stop + 1;
					done = true;
				}
			}
			if (!done)
				appendStringInfoChar(&out, *s++);
		}
		else
			appendStringInfoChar(&out, *s++);
	}
	return out.data;
}

/* Seconds since an S3 timestamp (2026-11-30T18:55:16.000Z); 0 if unreadable. */
static double
age_of(const char *ts)
{
	struct tm	tm;
	time_t		when;

	memset(&tm, 0, sizeof(tm));
	if (ts == NULL || sscanf(ts, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
							 &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	when = timegm(&tm);
	return difftime(time(NULL), when);
}

void
s3_parse_list(const S3Config *cfg, const char *xml, S3ListPage *page)
{
	const char *pos = xml;
	const char *end = xml + strlen(xml);
	size_t		plen = cfg->prefix ? strlen(cfg->prefix) : 0;
	int			cap = 64;
	char	   *truncated;
	const char *tp = xml;

	memset(page, 0, sizeof(*page));
	page->keys = palloc(sizeof(char *) * cap);
	page->sizes = palloc(sizeof(int64) * cap);
	page->ages_secs = palloc(sizeof(double) * cap);
	for (;;)
	{
		const char *c = strstr(pos, "<Contents>");
		const char *ce;
		const char *p;
		char	   *key;
		char	   *size;

		if (c == NULL)
			break;
		ce = strstr(c, "</Contents>");
		if (ce == NULL)
			break;
		p = c;
		key = xml_take(&p, ce, "Key");
		p = c;
		size = xml_take(&p, ce, "Size");
		p = c;
		if (key != NULL && strlen(key) >= plen && strncmp(key, cfg->prefix ? cfg->prefix : "", plen) == 0)
		{
			if (page->count == cap)
			{
				cap *= 2;
				page->keys = repalloc(page->keys, sizeof(char *) * cap);
				page->sizes = repalloc(page->sizes, sizeof(int64) * cap);
				page->ages_secs = repalloc(page->ages_secs, sizeof(double) * cap);
			}
			page->keys[page->count] = pstrdup(key + plen);
			page->sizes[page->count] = size ? strtoll(size, NULL, 10) : -1;
			page->ages_secs[page->count] = age_of(xml_take(&p, ce, "LastModified"));
			page->count++;
		}
		pos = ce + strlen("</Contents>");
	}
	truncated = xml_take(&tp, end, "IsTruncated");
	if (truncated && strcmp(truncated, "true") == 0)
	{
		tp = xml;
		page->next_token = xml_take(&tp, end, "NextContinuationToken");
	}
	(void) end;
}
