/*-------------------------------------------------------------------------
 * http.h
 *	  Concurrent HTTP transfers on a libcurl multi handle, driven from a
 *	  backend so that cancels and statement_timeout are honoured.
 *
 * This layer knows nothing of Gmail: it moves bytes, reports what the
 * server or the network said, and leaves classification and retries to the
 * caller.  Requests may carry a "not before" time so a caller's backoff
 * sleeps happen inside the same interruptible wait as other transfers.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_HTTP_H
#define GMAIL_INGEST_HTTP_H

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"

typedef struct HttpClient HttpClient;

typedef struct HttpRequest
{
	/* ---- set by the caller before http_submit() ---- */
	const char *url;			/* absolute URL; copied by http_submit */
	const char *post_fields;	/* form body for POST, or NULL for GET; copied */
	bool		post_json;		/* post_fields is JSON, not a form */
	const char *bearer_token;	/* sent as Authorization header, or NULL; copied */
	TimestampTz not_before;		/* 0 = start at once; else start no earlier */
	void	   *opaque;			/* caller's cookie, untouched */
	const char *method;			/* NULL = GET (POST with post_fields); else
								 * "PUT", "HEAD" or "DELETE"; not copied */
	const unsigned char *upload;	/* PUT body; NOT copied: it must stay
									 * valid until the request completes */
	size_t		upload_len;
	const char *aws_sigv4;		/* CURLOPT_AWS_SIGV4 provider, or NULL; copied */
	const char *aws_credentials;	/* "key id:secret" for SigV4; copied, and
									 * scrubbed when no longer needed */
	const char *header_lines;	/* extra request headers, one per line; copied */
	bool		no_admission;	/* not subject to the client's admission
								 * control (a call that is not Gmail's) */

	/* ---- filled in when the request completes ---- */
	long		status;			/* HTTP status, 0 when no response */
	char	   *body;			/* response body, NUL-terminated, palloc'd
								 * in the client's context; NULL if none */
	size_t		body_len;
	bool		transport_failed;	/* no complete HTTP response */
	bool		timed_out;		/* transport failure was a timeout */
	bool		too_large;		/* body exceeded the size cap */
	bool		permanent;		/* a transport failure retrying cannot cure:
								 * certificate, protocol or URL problems */
	char		error[256];		/* curl's text for a transport failure */
	double		retry_after_secs;	/* Retry-After header, or -1 */
	size_t		bytes_downloaded;	/* wire bytes (compressed) */
	int64		content_length;	/* the answer's Content-Length, -1 if none
								 * (what a HEAD request is for) */

	/* ---- private to http.c ---- */
	void	   *priv;
} HttpRequest;

/* Limits and timeouts a client is created with. */
typedef struct HttpOptions
{
	int			max_concurrency;	/* transfers in flight at once */
	int			max_concurrency_other;	/* more, for no_admission requests only
										 * (another service's, e.g. the object
										 * store's during a sync): they never
										 * take a slot from the others */
	int			connect_timeout_ms;
	int			request_timeout_ms;
	size_t		max_response_bytes;
	const char *ca_file;		/* NULL or "" = system CAs */
	const char *user_agent;
	bool		accept_gzip;	/* send Accept-Encoding: gzip (bodies are
								 * inflated in http.c) */
} HttpOptions;

/*
 * Create a client whose libcurl objects live until "owner" is reset or
 * deleted (a memory-context reset callback frees them, so an ERROR anywhere
 * frees them too).  http_client_destroy() frees them earlier.
 */
extern HttpClient *http_client_create(MemoryContext owner, const HttpOptions *opts);
extern void http_client_destroy(HttpClient *client);

/*
 * Queue a request.  It starts when a transfer slot is free and its
 * not_before time has come.  The HttpRequest itself must stay valid until
 * http_wait_any() returns it.
 */
extern void http_submit(HttpClient *client, HttpRequest *req);

/*
 * Wait until some queued request completes and return it; NULL when nothing
 * is queued or in flight.  Waits in slices of at most 100 ms with
 * CHECK_FOR_INTERRUPTS() between them and a wait event reported, so a
 * cancel or timeout takes effect promptly with PostgreSQL's own message.
 */
extern HttpRequest *http_wait_any(HttpClient *client);

/*
 * Admission control, asked just before a queued request would start (never
 * from a libcurl callback): return 0 to let it start now (the callee books
 * whatever it counts), or the milliseconds to wait before asking again.
 */
typedef long (*HttpAdmit) (void *arg, HttpRequest *req);
extern void http_set_admission(HttpClient *client, HttpAdmit admit, void *arg);

/* Number of requests queued or in flight. */
extern int	http_pending(HttpClient *client);

/* Release the response body of a completed request. */
extern void http_request_reset(HttpRequest *req);

/*
 * Reject URLs that are not https, or http to a loopback host.  Returns
 * NULL when acceptable, else a static message for errdetail.
 */
extern const char *http_url_problem(const char *url);

/*
 * Append s percent-encoded: every byte but RFC 3986's unreserved characters
 * (ALPHA DIGIT - . _ ~) as %XX.  Right for a URL's path segment or query
 * value and for an application/x-www-form-urlencoded value alike.
 */
extern void http_percent_encode(StringInfo buf, const char *s);

#endif
