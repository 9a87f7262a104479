/*-------------------------------------------------------------------------
 * http.c
 *	  The HTTP layer: concurrent transfers on one libcurl multi handle per
 *	  client, waited for interruptibly from inside a backend.
 *
 * This file owns every libcurl object the extension creates: the multi
 * handle (and with it the connection cache), a share for TLS sessions, a
 * pool of reusable easy handles, their header lists and their malloc'd
 * response buffers.  All of them hang off an HttpClient whose memory
 * context carries a reset callback, so an ERROR anywhere -- a cancel in
 * the middle of a transfer included -- releases them when that context
 * goes away.  Nothing here knows about Gmail, retries or SQL.
 *
 * Rules kept throughout, because breaking them corrupts or hangs a
 * backend:
 *	- curl callbacks never ereport, palloc or CHECK_FOR_INTERRUPTS: a longjmp
 *	  out of libcurl's frames leaves it in an undefined state.  They set
 *	  flags and return an abort code; the waiting loop reports.
 *	- every wait is at most 100 ms and followed by CHECK_FOR_INTERRUPTS, so
 *	  statement_timeout and pg_cancel_backend surface with PostgreSQL's own
 *	  message.
 *	- a libcurl object is recorded in the client before anything that can
 *	  raise an ERROR is done to it, so the reset callback always sees it.
 *
 * Compressed answers: a client created with accept_gzip asks for gzip
 * (Gmail's, unless gmail_ingest.accept_gzip is off) but tells curl not to
 * decode it; the whole compressed body is buffered and
 * inflated in one libdeflate call when the transfer is done, straight into
 * the body handed to the caller.  zlib streaming inside curl was a fifth of
 * a sync's CPU; one whole-buffer call is several times cheaper and saves a
 * copy.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <time.h>

#include <curl/curl.h>
#include <libdeflate.h>

#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "http.h"

/*
 * 7.85 brought CURLOPT_PROTOCOLS_STR, 7.87 CURLOPT_QUICK_EXIT; without the
 * latter a cancel during a slow DNS lookup would block on the resolver
 * thread.
 */
#if LIBCURL_VERSION_NUM < 0x075700
#error "gmail_ingest needs libcurl 7.87.0 or later"
#endif
#define HTTP_MIN_CURL_VERSION	0x075700

/* Longest single wait, so interrupts are seen within this many ms. */
#define HTTP_WAIT_SLICE_MS		100

/*
 * A connection that delivers nothing for this long is dead even when the
 * total request timeout is generous or off; Gmail streams steadily.
 */
#define HTTP_LOW_SPEED_TIME_S	30L

/* Initial response buffer; doubled as needed up to the size cap. */
#define HTTP_INITIAL_BUFFER		16384

/* Largest Retry-After value we bother to parse. */
#define HTTP_RETRY_AFTER_MAX	128

/*
 * One transfer slot.  The easy handle survives from request to request so
 * its TLS state and the multi handle's connection cache are reused.  Fields
 * below "callback state" are written by curl callbacks and must stay plain
 * C (no PostgreSQL calls that could throw).
 */
typedef struct HttpSlot
{
	CURL	   *easy;			/* NULL until first used */
	bool		in_multi;		/* added to the multi handle */
	HttpRequest *req;			/* request in flight, or NULL when free */
	struct curl_slist *headers; /* may hold a bearer token: zeroed on free */

	/* callback state */
	char	   *buf;			/* malloc'd response body */
	size_t		len;
	size_t		cap;
	size_t		limit;			/* max_response_bytes */
	bool		too_large;
	bool		out_of_memory;
	bool		gzip;			/* Content-Encoding: gzip, inflated by us */
	bool		bad_encoding;	/* an encoding we did not ask for */
	int64		expect_len;		/* Content-Length, -1 if none: sizes buf */
	double		retry_after;
	char		errbuf[CURL_ERROR_SIZE];
} HttpSlot;

/*
 * A submitted request waiting for a slot.  The caller's strings are copied
 * here so the caller may free them at once; they are handed to curl (which
 * copies them again) when the transfer starts.
 */
typedef struct HttpQueued
{
	struct HttpQueued *next;
	HttpRequest *req;
	TimestampTz not_before;
	char	   *url;
	char	   *post_fields;
	bool		post_json;
	char	   *bearer_token;
	char	   *aws_sigv4;
	char	   *aws_credentials;
	char	   *header_lines;
} HttpQueued;

struct HttpClient
{
	MemoryContext cxt;			/* owner: everything of ours is allocated here */
	MemoryContextCallback reset_cb;
	bool		released;		/* curl objects already freed */

	CURLM	   *multi;
	CURLSH	   *share;

	int			nslots;
	HttpSlot   *slots;
	int			nrunning;
	int			max_main;		/* in flight at once: admitted requests */
	int			max_other;		/* and no_admission ones (0: they share) */
	int			nrunning_other;

	HttpQueued *queue_head;		/* FIFO of requests not yet started */
	HttpQueued **queue_tailp;
	int			nqueued;

	long		connect_timeout_ms;
	long		request_timeout_ms;
	size_t		max_response_bytes;
	char	   *ca_file;		/* NULL = system CAs */
	char	   *user_agent;		/* NULL = none */
	bool		accept_gzip;

	HttpAdmit	admit;			/* NULL = start whenever a slot is free */
	void	   *admit_arg;
};

static bool curl_initialized = false;

/* Process-wide, made on first use; a few tens of KB, kept for reuse. */
static struct libdeflate_decompressor *gz_inflater = NULL;

static void http_ensure_curl(void);
static void http_release(HttpClient *client);
static void http_reset_callback(void *arg);
static void http_easy_failed(CURLcode rc, const char *what) pg_attribute_noreturn();
static void http_multi_failed(CURLMcode rc, const char *what) pg_attribute_noreturn();
static void http_free_queued(HttpQueued *q);
static void http_free_headers(HttpSlot *slot);
static long http_start_eligible(HttpClient *client);
static void http_start(HttpClient *client, HttpQueued *q);
static HttpRequest *http_collect_one(HttpClient *client);
static HttpRequest *http_finish(HttpClient *client, HttpSlot *slot, CURLcode result);
static void http_describe_failure(HttpSlot *slot, CURLcode result, HttpRequest *req);
static void http_append_header_lines(HttpSlot *slot, const char *lines);
static size_t http_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata);
static size_t http_header_cb(char *buffer, size_t size, size_t nitems, void *userdata);
static bool http_host_is_loopback(const char *host);
static ssize_t http_header_value(const char *line, size_t n, const char *name,
								 char *value, size_t valuesize);
static CURLcode http_take_body(HttpClient *client, HttpSlot *slot, HttpRequest *req);

/*
 * Every libcurl return code goes through one of these.  The option or
 * function name is kept for errdetail so a failure on a distribution's
 * libcurl says which feature is missing.
 */
#define HTTP_EASY_CHECK(call, what) \
	do { \
		CURLcode	rc_ = (call); \
		if (rc_ != CURLE_OK) \
			http_easy_failed(rc_, (what)); \
	} while (0)

#define HTTP_SETOPT(easy, opt, val) \
	HTTP_EASY_CHECK(curl_easy_setopt((easy), (opt), (val)), #opt)

#define HTTP_MULTI_CHECK(call, what) \
	do { \
		CURLMcode	rc_ = (call); \
		if (rc_ != CURLM_OK) \
			http_multi_failed(rc_, (what)); \
	} while (0)

static void
http_easy_failed(CURLcode rc, const char *what)
{
	ereport(ERROR,
			(errcode(rc == CURLE_OUT_OF_MEMORY ? ERRCODE_OUT_OF_MEMORY :
					 ERRCODE_SYSTEM_ERROR),
			 errmsg("could not set up an HTTP transfer"),
			 errdetail_internal("libcurl %s failed: %s",
								what, curl_easy_strerror(rc))));
}

static void
http_multi_failed(CURLMcode rc, const char *what)
{
	ereport(ERROR,
			(errcode(rc == CURLM_OUT_OF_MEMORY ? ERRCODE_OUT_OF_MEMORY :
					 ERRCODE_SYSTEM_ERROR),
			 errmsg("could not drive HTTP transfers"),
			 errdetail_internal("libcurl %s failed: %s",
								what, curl_multi_strerror(rc))));
}

/*
 * Lazily, in the backend that needs it: curl_global_init is not
 * thread-safe and sets up OpenSSL, which the postmaster has no business
 * doing on behalf of every child.
 */
static void
http_ensure_curl(void)
{
	curl_version_info_data *info;
	CURLcode	rc;

	if (curl_initialized)
		return;

	info = curl_version_info(CURLVERSION_NOW);
	if (info->version_num < HTTP_MIN_CURL_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("libcurl %s is too old", info->version),
				 errhint("gmail_ingest needs libcurl 7.87.0 or later.")));

	/*
	 * With CURLOPT_NOSIGNAL a synchronous resolver cannot time out and would
	 * block the backend beyond the reach of cancel.
	 */
	if (!(info->features & CURL_VERSION_ASYNCHDNS))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("libcurl was built without an asynchronous resolver"),
				 errhint("Use a libcurl built with the threaded resolver or c-ares.")));

	rc = curl_global_init(CURL_GLOBAL_DEFAULT);
	if (rc != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libcurl"),
				 errdetail_internal("%s", curl_easy_strerror(rc))));

	curl_initialized = true;
}

HttpClient *
http_client_create(MemoryContext owner, const HttpOptions *opts)
{
	HttpClient *client;
	int			nslots;
	size_t		limit;

	http_ensure_curl();

	nslots = opts->max_concurrency;
	if (nslots < 1)
		nslots = 1;
	nslots += Max(opts->max_concurrency_other, 0);

	/* The body is copied into one palloc chunk, NUL included. */
	limit = opts->max_response_bytes;
	if (limit == 0 || limit > MaxAllocSize - 1)
		limit = MaxAllocSize - 1;

	client = MemoryContextAllocZero(owner, sizeof(HttpClient));
	client->cxt = owner;
	client->slots = MemoryContextAllocZero(owner, sizeof(HttpSlot) * nslots);
	client->nslots = nslots;
	client->max_other = Max(opts->max_concurrency_other, 0);
	client->max_main = nslots - client->max_other;
	client->queue_tailp = &client->queue_head;
	client->connect_timeout_ms = Max(opts->connect_timeout_ms, 0);
	client->request_timeout_ms = Max(opts->request_timeout_ms, 0);
	client->max_response_bytes = limit;
	if (opts->ca_file && opts->ca_file[0] != '\0')
		client->ca_file = MemoryContextStrdup(owner, opts->ca_file);
	if (opts->user_agent && opts->user_agent[0] != '\0')
		client->user_agent = MemoryContextStrdup(owner, opts->user_agent);
	client->accept_gzip = opts->accept_gzip;

	/* Armed before the first curl object exists, so none can escape it. */
	client->reset_cb.func = http_reset_callback;
	client->reset_cb.arg = client;
	MemoryContextRegisterResetCallback(owner, &client->reset_cb);

	client->multi = curl_multi_init();
	if (client->multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Could not create a libcurl multi handle.")));

	/*
	 * The connection cache lives in the multi handle; sizing it to the
	 * concurrency keeps every slot's connection alive between requests.
	 */
	HTTP_MULTI_CHECK(curl_multi_setopt(client->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
									   (long) nslots),
					 "CURLMOPT_MAX_HOST_CONNECTIONS");
	HTTP_MULTI_CHECK(curl_multi_setopt(client->multi, CURLMOPT_MAXCONNECTS,
									   (long) nslots),
					 "CURLMOPT_MAXCONNECTS");

	/*
	 * libcurl 7.88 keeps TLS session tickets per easy handle; sharing them
	 * lets a slot that must reconnect resume a session another slot made.
	 */
	client->share = curl_share_init();
	if (client->share == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Could not create a libcurl share handle.")));
	{
		CURLSHcode	src = curl_share_setopt(client->share, CURLSHOPT_SHARE,
											CURL_LOCK_DATA_SSL_SESSION);

		if (src != CURLSHE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("could not set up an HTTP transfer"),
					 errdetail_internal("libcurl CURLSHOPT_SHARE failed: %s",
										curl_share_strerror(src))));
	}

	return client;
}

/*
 * Free every libcurl object and malloc'd buffer of the client.  Runs from
 * the reset callback, possibly during error recovery, so it must not throw:
 * return codes are ignored on purpose because nothing better can be done
 * with them here.  Never touches an HttpRequest: the caller's memory may
 * already be gone.  Safe to call twice.
 */
static void
http_release(HttpClient *client)
{
	int			i;
	HttpQueued *q;

	if (client->released)
		return;
	client->released = true;

	/* curl's documented order: detach, clean the easies, then the multi */
	for (i = 0; i < client->nslots; i++)
	{
		HttpSlot   *slot = &client->slots[i];

		if (slot->easy != NULL)
		{
			if (slot->in_multi && client->multi != NULL)
				(void) curl_multi_remove_handle(client->multi, slot->easy);
			slot->in_multi = false;
			curl_easy_cleanup(slot->easy);
			slot->easy = NULL;
		}
		http_free_headers(slot);
		free(slot->buf);
		slot->buf = NULL;
		slot->len = slot->cap = 0;
		slot->req = NULL;
	}
	client->nrunning = 0;
	client->nrunning_other = 0;

	if (client->multi != NULL)
	{
		/* closes the cached connections, hence the sockets */
		(void) curl_multi_cleanup(client->multi);
		client->multi = NULL;
	}
	/* last: cached TLS connections were made with its session cache */
	if (client->share != NULL)
	{
		(void) curl_share_cleanup(client->share);
		client->share = NULL;
	}

	/* Queued copies live in the client's context; scrub the tokens now. */
	q = client->queue_head;
	while (q != NULL)
	{
		HttpQueued *next = q->next;

		http_free_queued(q);
		q = next;
	}
	client->queue_head = NULL;
	client->queue_tailp = &client->queue_head;
	client->nqueued = 0;
}

static void
http_reset_callback(void *arg)
{
	http_release((HttpClient *) arg);
}

/*
 * PostgreSQL 15 cannot unregister a reset callback, so the client struct
 * stays allocated (a few hundred bytes) as a tombstone until its context
 * goes, and the callback then finds nothing left to do.
 */
void
http_client_destroy(HttpClient *client)
{
	if (client == NULL)
		return;
	http_release(client);
}

void
http_submit(HttpClient *client, HttpRequest *req)
{
	HttpQueued *q;

	if (client->released)
		elog(ERROR, "HTTP client used after it was destroyed");
	if (req->url == NULL)
		elog(ERROR, "HTTP request without a URL");

	/*
	 * Outputs are cleared so a resubmitted request never shows a previous
	 * attempt's result; a previous body is the caller's (see
	 * http_request_reset), so it is dropped, not freed.
	 */
	req->status = 0;
	req->body = NULL;
	req->body_len = 0;
	req->transport_failed = false;
	req->timed_out = false;
	req->too_large = false;
	req->permanent = false;
	req->error[0] = '\0';
	req->retry_after_secs = -1;
	req->bytes_downloaded = 0;
	req->content_length = -1;

	q = MemoryContextAllocZero(client->cxt, sizeof(HttpQueued));
	q->req = req;
	q->not_before = req->not_before;
	q->url = MemoryContextStrdup(client->cxt, req->url);
	if (req->post_fields)
		q->post_fields = MemoryContextStrdup(client->cxt, req->post_fields);
	q->post_json = req->post_json;
	if (req->bearer_token)
		q->bearer_token = MemoryContextStrdup(client->cxt, req->bearer_token);
	if (req->aws_sigv4)
		q->aws_sigv4 = MemoryContextStrdup(client->cxt, req->aws_sigv4);
	if (req->aws_credentials)
		q->aws_credentials = MemoryContextStrdup(client->cxt, req->aws_credentials);
	if (req->header_lines)
		q->header_lines = MemoryContextStrdup(client->cxt, req->header_lines);

	*client->queue_tailp = q;
	client->queue_tailp = &q->next;
	client->nqueued++;
	req->priv = q;
}

void
http_set_admission(HttpClient *client, HttpAdmit admit, void *arg)
{
	client->admit = admit;
	client->admit_arg = arg;
}

int
http_pending(HttpClient *client)
{
	return client->nqueued + client->nrunning;
}

void
http_request_reset(HttpRequest *req)
{
	if (req->body != NULL)
		pfree(req->body);
	req->status = 0;
	req->body = NULL;
	req->body_len = 0;
	req->transport_failed = false;
	req->timed_out = false;
	req->too_large = false;
	req->permanent = false;
	req->error[0] = '\0';
	req->retry_after_secs = -1;
	req->bytes_downloaded = 0;
	req->content_length = -1;
	req->priv = NULL;
}

static void
http_free_queued(HttpQueued *q)
{
	if (q->bearer_token)
	{
		explicit_bzero(q->bearer_token, strlen(q->bearer_token));
		pfree(q->bearer_token);
	}
	if (q->post_fields)
	{
		/* token requests carry refresh tokens and client secrets here */
		explicit_bzero(q->post_fields, strlen(q->post_fields));
		pfree(q->post_fields);
	}
	if (q->aws_credentials)
	{
		/* the object store's secret key */
		explicit_bzero(q->aws_credentials, strlen(q->aws_credentials));
		pfree(q->aws_credentials);
	}
	if (q->aws_sigv4)
		pfree(q->aws_sigv4);
	if (q->header_lines)
		pfree(q->header_lines);
	pfree(q->url);
	pfree(q);
}

static void
http_free_headers(HttpSlot *slot)
{
	struct curl_slist *h;

	for (h = slot->headers; h != NULL; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(slot->headers);
	slot->headers = NULL;
}

/*
 * Start queued requests, oldest first, while slots are free; a request
 * whose time has not come is passed over, not waited for.  Returns the ms
 * until the earliest passed-over request may start when a slot is free to
 * take it, else -1.
 */
static long
http_start_eligible(HttpClient *client)
{
	HttpQueued **link = &client->queue_head;
	TimestampTz now = 0;
	long		earliest = -1;

	while (*link != NULL && client->nrunning < client->nslots)
	{
		HttpQueued *q = *link;

		/* each class of request within its own number of slots */
		if (client->max_other > 0 &&
			(q->req->no_admission
			 ? client->nrunning_other >= client->max_other
			 : client->nrunning - client->nrunning_other >= client->max_main))
		{
			link = &q->next;
			continue;
		}

		if (q->not_before != 0)
		{
			if (now == 0)
				now = GetCurrentTimestamp();
			if (q->not_before > now)
			{
				long		ms = TimestampDifferenceMilliseconds(now, q->not_before);

				if (earliest < 0 || ms < earliest)
					earliest = ms;
				link = &q->next;
				continue;
			}
		}

		if (client->admit != NULL && !q->req->no_admission)
		{
			long		wait = client->admit(client->admit_arg, q->req);

			if (wait > 0)
			{
				if (earliest < 0 || wait < earliest)
					earliest = wait;
				link = &q->next;
				continue;
			}
		}

		*link = q->next;
		if (client->queue_tailp == &q->next)
			client->queue_tailp = link;
		client->nqueued--;
		http_start(client, q);
	}

	return client->nrunning < client->nslots ? earliest : -1;
}

static void
http_start(HttpClient *client, HttpQueued *q)
{
	HttpSlot   *slot = NULL;
	CURL	   *easy;
	int			i;

	for (i = 0; i < client->nslots; i++)
	{
		if (client->slots[i].req == NULL)
		{
			slot = &client->slots[i];
			break;
		}
	}
	if (slot == NULL)
		elog(ERROR, "no free HTTP transfer slot");

	if (slot->easy == NULL)
	{
		slot->easy = curl_easy_init();
		if (slot->easy == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory"),
					 errdetail("Could not create a libcurl easy handle.")));
	}
	else
	{
		/*
		 * Forget the previous request's options (a GET must not inherit a
		 * POST body); connections and TLS sessions survive a reset.
		 */
		curl_easy_reset(slot->easy);
	}
	easy = slot->easy;

	http_free_headers(slot);
	free(slot->buf);
	slot->buf = NULL;
	slot->len = slot->cap = 0;
	slot->limit = client->max_response_bytes;
	slot->too_large = false;
	slot->out_of_memory = false;
	slot->gzip = false;
	slot->bad_encoding = false;
	slot->expect_len = -1;
	slot->retry_after = -1;
	slot->errbuf[0] = '\0';

	HTTP_SETOPT(easy, CURLOPT_URL, q->url);
	/* statement_timeout is SIGALRM; curl must leave signals alone */
	HTTP_SETOPT(easy, CURLOPT_NOSIGNAL, 1L);
	/* a cancel must not wait for a stuck DNS lookup to be joined */
	HTTP_SETOPT(easy, CURLOPT_QUICK_EXIT, 1L);
	HTTP_SETOPT(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	/*
	 * A redirect would carry the bearer token to wherever it points.  curl
	 * refuses an empty redirect protocol list, so MAXREDIRS 0 is the second
	 * lock and https the narrowest list it accepts.
	 */
	HTTP_SETOPT(easy, CURLOPT_FOLLOWLOCATION, 0L);
	HTTP_SETOPT(easy, CURLOPT_MAXREDIRS, 0L);
	HTTP_SETOPT(easy, CURLOPT_REDIR_PROTOCOLS_STR, "https");
	HTTP_SETOPT(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	HTTP_SETOPT(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	if (client->ca_file)
		HTTP_SETOPT(easy, CURLOPT_CAINFO, client->ca_file);
	HTTP_SETOPT(easy, CURLOPT_SHARE, client->share);
	HTTP_SETOPT(easy, CURLOPT_CONNECTTIMEOUT_MS, client->connect_timeout_ms);
	HTTP_SETOPT(easy, CURLOPT_TIMEOUT_MS, client->request_timeout_ms);
	HTTP_SETOPT(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
	HTTP_SETOPT(easy, CURLOPT_LOW_SPEED_TIME, HTTP_LOW_SPEED_TIME_S);
	HTTP_SETOPT(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	/*
	 * Ask for gzip but receive it as sent: http_finish inflates the whole
	 * body at once (see the file header).
	 */
	if (client->accept_gzip)
		HTTP_SETOPT(easy, CURLOPT_ACCEPT_ENCODING, "gzip");
	HTTP_SETOPT(easy, CURLOPT_HTTP_CONTENT_DECODING, 0L);
	if (client->user_agent)
		HTTP_SETOPT(easy, CURLOPT_USERAGENT, client->user_agent);
	HTTP_SETOPT(easy, CURLOPT_ERRORBUFFER, slot->errbuf);
	HTTP_SETOPT(easy, CURLOPT_WRITEFUNCTION, http_write_cb);
	HTTP_SETOPT(easy, CURLOPT_WRITEDATA, (void *) slot);
	HTTP_SETOPT(easy, CURLOPT_HEADERFUNCTION, http_header_cb);
	HTTP_SETOPT(easy, CURLOPT_HEADERDATA, (void *) slot);

	if (q->bearer_token)
	{
		char	   *line = psprintf("Authorization: Bearer %s", q->bearer_token);
		struct curl_slist *h = curl_slist_append(slot->headers, line);

		explicit_bzero(line, strlen(line));
		pfree(line);
		if (h == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
		slot->headers = h;
	}
	if (q->header_lines)
		http_append_header_lines(slot, q->header_lines);
	if (q->aws_sigv4)
	{
		/* curl signs the request itself (SigV4) with these credentials */
		HTTP_SETOPT(easy, CURLOPT_AWS_SIGV4, q->aws_sigv4);
		if (q->aws_credentials)
			HTTP_SETOPT(easy, CURLOPT_USERPWD, q->aws_credentials);
	}
	if (q->req->method != NULL && strcmp(q->req->method, "PUT") == 0)
	{
		/*
		 * The body goes as POSTFIELDS under a PUT verb: curl then sends it
		 * from our buffer without a read callback.  No "Expect:" header to
		 * turn off 100-continue: libcurl 7.88 would sign that empty header
		 * and the store, which never receives it, would refuse the
		 * signature.
		 */
		HTTP_SETOPT(easy, CURLOPT_CUSTOMREQUEST, "PUT");
		HTTP_SETOPT(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) q->req->upload_len);
		HTTP_SETOPT(easy, CURLOPT_POSTFIELDS,
					q->req->upload ? (const char *) q->req->upload : "");
	}
	else if (q->req->method != NULL && strcmp(q->req->method, "HEAD") == 0)
		HTTP_SETOPT(easy, CURLOPT_NOBODY, 1L);
	else if (q->req->method != NULL && strcmp(q->req->method, "DELETE") == 0)
	{
		HTTP_SETOPT(easy, CURLOPT_HTTPGET, 1L);
		HTTP_SETOPT(easy, CURLOPT_CUSTOMREQUEST, "DELETE");
	}
	else if (q->post_fields)
	{
		struct curl_slist *h;

		h = curl_slist_append(slot->headers,
							  q->post_json ? "Content-Type: application/json"
							  : "Content-Type: application/x-www-form-urlencoded");
		if (h == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
		slot->headers = h;
		/* copied by curl, so our copy can be scrubbed right away */
		HTTP_SETOPT(easy, CURLOPT_COPYPOSTFIELDS, q->post_fields);
	}
	else
		HTTP_SETOPT(easy, CURLOPT_HTTPGET, 1L);
	if (slot->headers)
		HTTP_SETOPT(easy, CURLOPT_HTTPHEADER, slot->headers);

	HTTP_MULTI_CHECK(curl_multi_add_handle(client->multi, easy),
					 "curl_multi_add_handle");
	slot->in_multi = true;
	slot->req = q->req;
	q->req->priv = slot;
	client->nrunning++;
	if (client->max_other > 0 && q->req->no_admission)
		client->nrunning_other++;

	http_free_queued(q);
}

HttpRequest *
http_wait_any(HttpClient *client)
{
	if (client->released)
		return NULL;

	for (;;)
	{
		long		delay_ms;
		long		timeout_ms;
		long		curl_ms;
		int			still_running;
		HttpRequest *done;

		CHECK_FOR_INTERRUPTS();

		delay_ms = http_start_eligible(client);

		if (client->nrunning == 0)
		{
			if (client->queue_head == NULL)
				return NULL;

			/*
			 * Only backoff sleeps remain.  On the latch, so a cancel or
			 * statement_timeout (both set it) ends the sleep at once.
			 */
			Assert(delay_ms > 0);
			timeout_ms = Min(Max(delay_ms, 1), HTTP_WAIT_SLICE_MS);
			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 timeout_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			continue;
		}

		HTTP_MULTI_CHECK(curl_multi_perform(client->multi, &still_running),
						 "curl_multi_perform");
		done = http_collect_one(client);
		if (done != NULL)
			return done;

		timeout_ms = HTTP_WAIT_SLICE_MS;
		if (delay_ms >= 0 && delay_ms < timeout_ms)
			timeout_ms = delay_ms;
		HTTP_MULTI_CHECK(curl_multi_timeout(client->multi, &curl_ms),
						 "curl_multi_timeout");
		if (curl_ms >= 0 && curl_ms < timeout_ms)
			timeout_ms = curl_ms;

		if (timeout_ms > 0)
		{
			CURLMcode	mc;

			/*
			 * curl_multi_poll does not watch our latch, hence the short
			 * slices; a signal usually cuts the poll short anyway (EINTR).
			 */
			pgstat_report_wait_start(PG_WAIT_EXTENSION);
			mc = curl_multi_poll(client->multi, NULL, 0, (int) timeout_ms, NULL);
			pgstat_report_wait_end();
			HTTP_MULTI_CHECK(mc, "curl_multi_poll");
		}

		/* what WL_EXIT_ON_PM_DEATH would do for a latch wait */
		if (!PostmasterIsAlive())
			ereport(FATAL,
					(errcode(ERRCODE_ADMIN_SHUTDOWN),
					 errmsg("terminating connection due to unexpected postmaster exit")));
	}
}

/* Add each line of lines (separated by '\n') to the slot's header list. */
static void
http_append_header_lines(HttpSlot *slot, const char *lines)
{
	const char *p = lines;

	while (*p)
	{
		const char *nl = strchr(p, '\n');
		size_t		n = nl ? (size_t) (nl - p) : strlen(p);

		if (n > 0)
		{
			char	   *line = pnstrdup(p, n);
			struct curl_slist *h = curl_slist_append(slot->headers, line);

			pfree(line);
			if (h == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_OUT_OF_MEMORY),
						 errmsg("out of memory")));
			slot->headers = h;
		}
		p += n;
		if (*p == '\n')
			p++;
	}
}

/*
 * Finish the first completed transfer curl reports.  Further completions
 * stay in curl's message queue for the next call.
 */
static HttpRequest *
http_collect_one(HttpClient *client)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(client->multi, &left)) != NULL)
	{
		int			i;

		if (msg->msg != CURLMSG_DONE)
			continue;
		for (i = 0; i < client->nslots; i++)
		{
			HttpSlot   *slot = &client->slots[i];

			if (slot->easy == msg->easy_handle && slot->req != NULL)
				return http_finish(client, slot, msg->data.result);
		}
		elog(ERROR, "libcurl reported a transfer this client does not own");
	}
	return NULL;
}

static HttpRequest *
http_finish(HttpClient *client, HttpSlot *slot, CURLcode result)
{
	HttpRequest *req = slot->req;
	long		status = 0;
	curl_off_t	downloaded = 0;
	curl_off_t	length = -1;

	HTTP_EASY_CHECK(curl_easy_getinfo(slot->easy, CURLINFO_RESPONSE_CODE, &status),
					"CURLINFO_RESPONSE_CODE");
	HTTP_EASY_CHECK(curl_easy_getinfo(slot->easy, CURLINFO_SIZE_DOWNLOAD_T, &downloaded),
					"CURLINFO_SIZE_DOWNLOAD_T");
	HTTP_EASY_CHECK(curl_easy_getinfo(slot->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length),
					"CURLINFO_CONTENT_LENGTH_DOWNLOAD_T");

	/* the connection goes back to the multi handle's cache */
	HTTP_MULTI_CHECK(curl_multi_remove_handle(client->multi, slot->easy),
					 "curl_multi_remove_handle");
	slot->in_multi = false;

	req->body = NULL;
	req->body_len = 0;
	if (result == CURLE_OK)
		result = http_take_body(client, slot, req);

	req->status = status;
	/* body bytes as received, before content decoding; headers excluded */
	req->bytes_downloaded = downloaded > 0 ? (size_t) downloaded : 0;
	req->retry_after_secs = slot->retry_after;
	req->content_length = length >= 0 ? (int64) length : -1;
	req->too_large = slot->too_large;
	req->transport_failed = (result != CURLE_OK);
	req->timed_out = (result == CURLE_OPERATION_TIMEDOUT);
	req->error[0] = '\0';

	if (result != CURLE_OK)
	{
		http_describe_failure(slot, result, req);
		switch (result)
		{
			case CURLE_PEER_FAILED_VERIFICATION:
			case CURLE_SSL_CACERT_BADFILE:
			case CURLE_SSL_CERTPROBLEM:
			case CURLE_SSL_ISSUER_ERROR:
			case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
			case CURLE_UNSUPPORTED_PROTOCOL:
			case CURLE_URL_MALFORMAT:
				req->permanent = true;
				break;
			default:
				break;
		}
	}

	free(slot->buf);
	slot->buf = NULL;
	slot->len = slot->cap = 0;
	http_free_headers(slot);
	slot->req = NULL;
	client->nrunning--;
	if (client->max_other > 0 && req->no_admission)
		client->nrunning_other--;
	req->priv = NULL;

	return req;
}

/*
 * Hand a complete transfer's body to req->body (a string, "" when empty),
 * inflating a gzip body in one call.  Returns CURLE_OK, or the code curl's
 * own decoder would have given: CURLE_WRITE_ERROR with too_large when the
 * inflated size passes the limit, CURLE_BAD_CONTENT_ENCODING when the body
 * is not one valid gzip member or came in an encoding we did not ask for.
 */
static CURLcode
http_take_body(HttpClient *client, HttpSlot *slot, HttpRequest *req)
{
	const unsigned char *gz = (const unsigned char *) slot->buf;
	size_t		isize;
	enum libdeflate_result dr;

	if (slot->bad_encoding)
	{
		snprintf(slot->errbuf, sizeof(slot->errbuf),
				 "the response came in a Content-Encoding other than gzip");
		return CURLE_BAD_CONTENT_ENCODING;
	}
	if (!slot->gzip || slot->len == 0)
	{
		req->body = MemoryContextAlloc(client->cxt, slot->len + 1);
		if (slot->len > 0)
			memcpy(req->body, slot->buf, slot->len);
		req->body[slot->len] = '\0';
		req->body_len = slot->len;
		return CURLE_OK;
	}

	/*
	 * A gzip member ends in ISIZE, the inflated length mod 2^32 (little
	 * endian); the limit (at most MaxAllocSize) is below 2^32, so a body
	 * within it is exactly ISIZE long, and libdeflate, asked for exactly
	 * that many bytes, refuses a member that inflates to any other length.
	 */
	if (slot->len < 18)
	{
		snprintf(slot->errbuf, sizeof(slot->errbuf),
				 "the gzip body is shorter than a gzip header and trailer");
		return CURLE_BAD_CONTENT_ENCODING;
	}
	isize = (size_t) gz[slot->len - 4] | ((size_t) gz[slot->len - 3] << 8) |
		((size_t) gz[slot->len - 2] << 16) | ((size_t) gz[slot->len - 1] << 24);
	if (isize > slot->limit)
	{
		slot->too_large = true;
		return CURLE_WRITE_ERROR;
	}
	if (gz_inflater == NULL)
	{
		gz_inflater = libdeflate_alloc_decompressor();
		if (gz_inflater == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory"),
					 errdetail("Could not create a gzip decompressor.")));
	}
	req->body = MemoryContextAlloc(client->cxt, isize + 1);
	dr = libdeflate_gzip_decompress(gz_inflater, gz, slot->len,
									req->body, isize, NULL);
	if (dr != LIBDEFLATE_SUCCESS)
	{
		pfree(req->body);
		req->body = NULL;
		snprintf(slot->errbuf, sizeof(slot->errbuf),
				 "the gzip body does not inflate (%s)",
				 dr == LIBDEFLATE_BAD_DATA ? "corrupt data" :
				 "its length does not match its trailer");
		return CURLE_BAD_CONTENT_ENCODING;
	}
	req->body[isize] = '\0';
	req->body_len = isize;
	return CURLE_OK;
}

/*
 * A message safe to log: curl's own text and the phase of the transfer,
 * never a header (the bearer token) and never the URL.
 */
static void
http_describe_failure(HttpSlot *slot, CURLcode result, HttpRequest *req)
{
	const char *phase = NULL;
	size_t		n;

	if (slot->too_large)
	{
		snprintf(req->error, sizeof(req->error),
				 "response body exceeds the limit of %zu bytes", slot->limit);
		return;
	}
	if (slot->out_of_memory)
	{
		snprintf(req->error, sizeof(req->error),
				 "out of memory while receiving the response body");
		return;
	}

	if (result == CURLE_OPERATION_TIMEDOUT)
	{
		curl_off_t	t_dns = 0,
					t_connect = 0,
					t_pretransfer = 0,
					t_start = 0;

		/* informational only: a getinfo failure just leaves a phase out */
		(void) curl_easy_getinfo(slot->easy, CURLINFO_NAMELOOKUP_TIME_T, &t_dns);
		(void) curl_easy_getinfo(slot->easy, CURLINFO_CONNECT_TIME_T, &t_connect);
		(void) curl_easy_getinfo(slot->easy, CURLINFO_PRETRANSFER_TIME_T, &t_pretransfer);
		(void) curl_easy_getinfo(slot->easy, CURLINFO_STARTTRANSFER_TIME_T, &t_start);
		if (t_start > 0)
			phase = "while receiving the response";
		else if (t_pretransfer > 0)
			phase = "while waiting for the response";
		else if (t_connect > 0)
			phase = "during the TLS handshake";
		else if (t_dns > 0)
			phase = "while connecting";
		else
			phase = "while resolving the host name";
	}

	/* curl's errbuf sometimes ends in a newline */
	n = strlen(slot->errbuf);
	while (n > 0 && (slot->errbuf[n - 1] == '\n' || slot->errbuf[n - 1] == '\r'))
		slot->errbuf[--n] = '\0';

	snprintf(req->error, sizeof(req->error), "%s%s%s%s%s",
			 curl_easy_strerror(result),
			 phase ? " " : "", phase ? phase : "",
			 n > 0 ? ": " : "", slot->errbuf);
}

/*
 * curl callbacks: plain C only (see the file header).  The size cap is
 * checked before growing, so a huge body costs at most the cap in memory.
 */
static size_t
http_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	HttpSlot   *slot = (HttpSlot *) userdata;
	size_t		n = size * nmemb;

	if (n == 0)
		return 0;
	if (n > slot->limit || slot->len > slot->limit - n)
	{
		slot->too_large = true;
		return 0;				/* anything but n aborts with CURLE_WRITE_ERROR */
	}
	if (slot->len + n + 1 > slot->cap)
	{
		size_t		newcap = slot->cap ? slot->cap : HTTP_INITIAL_BUFFER;
		char	   *newbuf;

		/* the first chunk: room for the whole announced body at once */
		if (slot->cap == 0 && slot->expect_len > 0 &&
			(uint64) slot->expect_len < (uint64) slot->limit)
			newcap = Max(newcap, (size_t) slot->expect_len + 1);
		while (newcap < slot->len + n + 1)
			newcap *= 2;
		if (newcap > slot->limit + 1)
			newcap = slot->limit + 1;
		newbuf = realloc(slot->buf, newcap);
		if (newbuf == NULL)
		{
			slot->out_of_memory = true;
			return 0;
		}
		slot->buf = newbuf;
		slot->cap = newcap;
	}
	memcpy(slot->buf + slot->len, ptr, n);
	slot->len += n;
	return n;
}

/*
 * When the header line (n bytes, not NUL-terminated) is the one named by
 * name (lower case, colon included), copy its trimmed value into value, cut
 * to fit, and return the value's full length; else return -1.
 */
static ssize_t
http_header_value(const char *line, size_t n, const char *name,
				  char *value, size_t valuesize)
{
	size_t		namelen = strlen(name);
	const char *p;
	const char *end;
	size_t		len;

	if (n <= namelen || pg_strncasecmp(line, name, namelen) != 0)
		return -1;
	p = line + namelen;
	end = line + n;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	while (end > p && (end[-1] == '\r' || end[-1] == '\n' ||
					   end[-1] == ' ' || end[-1] == '\t'))
		end--;
	len = end - p;
	memcpy(value, p, Min(len, valuesize - 1));
	value[Min(len, valuesize - 1)] = '\0';
	return (ssize_t) len;
}

static size_t
http_header_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	HttpSlot   *slot = (HttpSlot *) userdata;
	size_t		n = size * nitems;
	char		value[HTTP_RETRY_AFTER_MAX];
	ssize_t		vlen;

	/* each response (a 100 Continue, then the real one) starts afresh */
	if (n >= 5 && memcmp(buffer, "HTTP/", 5) == 0)
	{
		slot->retry_after = -1;
		slot->gzip = false;
		slot->bad_encoding = false;
		slot->expect_len = -1;
		return n;
	}
	if ((vlen = http_header_value(buffer, n, "content-encoding:", value, sizeof(value))) >= 0)
	{
		/* we asked for gzip only; "identity" is the same as none */
		if (pg_strcasecmp(value, "gzip") == 0 || pg_strcasecmp(value, "x-gzip") == 0)
			slot->gzip = true;
		else if (vlen > 0 && pg_strcasecmp(value, "identity") != 0)
			slot->bad_encoding = true;
		return n;
	}
	if ((vlen = http_header_value(buffer, n, "content-length:", value, sizeof(value))) >= 0)
	{
		if (vlen > 0 && vlen <= 12 && strspn(value, "0123456789") == (size_t) vlen)
			slot->expect_len = strtoll(value, NULL, 10);
		return n;
	}
	vlen = http_header_value(buffer, n, "retry-after:", value, sizeof(value));
	if (vlen <= 0 || (size_t) vlen >= sizeof(value))
		return n;

	if (strspn(value, "0123456789") == (size_t) vlen)
	{
		/* delta-seconds; absurd values are clamped, not trusted */
		double		secs = strtod(value, NULL);

		slot->retry_after = Min(secs, 86400.0 * 365);
	}
	else
	{
		/* HTTP-date */
		time_t		when = curl_getdate(value, NULL);

		if (when != (time_t) -1)
		{
			double		secs = difftime(when, time(NULL));

			slot->retry_after = secs > 0 ? secs : 0;
		}
	}
	return n;
}

void
http_percent_encode(StringInfo buf, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++)
	{
		unsigned char ch = (unsigned char) *s;

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
			(ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' || ch == '~')
			appendStringInfoChar(buf, (char) ch);
		else
		{
			appendStringInfoChar(buf, '%');
			appendStringInfoChar(buf, hex[ch >> 4]);
			appendStringInfoChar(buf, hex[ch & 15]);
		}
	}
}

/*
 * Plain http is accepted only where nothing crosses a network: the mock
 * Gmail the tests run on loopback.
 */
const char *
http_url_problem(const char *url)
{
	static const char not_url[] = "not a valid URL";
	static const char not_allowed[] =
		"only https URLs are allowed, or http to a loopback host";
	CURLU	   *h;
	char	   *scheme = NULL;
	char	   *host = NULL;
	const char *problem;

	if (url == NULL || url[0] == '\0')
		return not_url;

	h = curl_url();
	if (h == NULL)
		return "could not parse URL: out of memory";

	/* parse unknown schemes too, so "ftp://" is refused as a scheme */
	if (curl_url_set(h, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
		curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
		curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
		host == NULL || host[0] == '\0')
		problem = not_url;
	else if (pg_strcasecmp(scheme, "https") == 0)
		problem = NULL;
	else if (pg_strcasecmp(scheme, "http") == 0 && http_host_is_loopback(host))
		problem = NULL;
	else
		problem = not_allowed;

	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(h);
	return problem;
}

static bool
http_host_is_loopback(const char *host)
{
	size_t		len = strlen(host);

	if (pg_strcasecmp(host, "localhost") == 0)
		return true;

	if (len > 2 && host[0] == '[' && host[len - 1] == ']')
	{
		char		addr[INET6_ADDRSTRLEN + 1];
		struct in6_addr a6;

		if (len - 2 >= sizeof(addr))
			return false;
		memcpy(addr, host + 1, len - 2);
		addr[len - 2] = '\0';
		return inet_pton(AF_INET6, addr, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
	}
	else
	{
		struct in_addr a4;

		/* inet_pton wants a full dotted quad; curl normalizes "127.1" */
		return inet_pton(AF_INET, host, &a4) == 1 &&
			(ntohl(a4.s_addr) >> 24) == 127;
	}
}
