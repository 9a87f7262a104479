/*-------------------------------------------------------------------------
 * gmail_api.h
 *	  Gmail REST endpoints -> plain C structs, with retries, the client-side
 *	  quota budget and token refresh on 401.
 *
 * Calls are asynchronous: gmail_submit() queues one, gmail_next() returns
 * the next finished one, so the caller can do database work on one answer
 * while others are still on the wire.  A call that cannot succeed raises a
 * remote failure (remote_error.h); a message or thread that vanished comes
 * back with not_found set, and an expired history id with history_expired.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_GMAIL_API_H
#define GMAIL_INGEST_GMAIL_API_H

#include "datatype/timestamp.h"
#include "http.h"

/* Items per list page: we ask for Gmail's maximum. */
#define GMAIL_LIST_PAGE_SIZE 500

/*
 * Longest nextPageToken accepted (Gmail's are about 20 bytes); a longer one
 * is an unreadable answer, not something to send back in a URL.
 */
#define GMAIL_MAX_TOKEN_BYTES 8192

typedef enum GmailMethod
{
	GM_PROFILE,
	GM_MESSAGES_LIST,
	GM_THREADS_LIST,
	GM_MESSAGE_RAW,
	GM_MESSAGE_MINIMAL,
	GM_THREAD_MINIMAL,
	GM_HISTORY_LIST,
	GM_WATCH,					/* users.watch: push notifications (SPEC 7c) */
	GM_STOP,					/* users.stop: ends them */
	GM__COUNT
} GmailMethod;

/* A message as messages.get (raw or minimal) or a list/history item gives it. */
typedef struct GmailMessage
{
	char	   *id;
	char	   *thread_id;
	char	  **label_ids;
	int			label_count;
	bool		has_labels;		/* labelIds was present (possibly empty) */
	int64		history_id;
	int64		internal_date_ms;
	int			size_estimate;
	char	   *snippet;
	unsigned char *raw;			/* decoded RFC 822 bytes (raw format only) */
	size_t		raw_len;
} GmailMessage;

typedef struct GmailThreadItem
{
	char	   *id;
	int64		history_id;
	char	   *snippet;
} GmailThreadItem;

typedef enum HistoryChange
{
	HC_ADDED,
	HC_DELETED,
	HC_LABELS_ADDED,
	HC_LABELS_REMOVED
} HistoryChange;

typedef struct GmailHistoryEvent
{
	HistoryChange change;
	int64		record_id;
	GmailMessage message;		/* id, thread_id, labels as Gmail sent them */
	char	  **changed_labels;	/* for label changes */
	int			changed_label_count;
} GmailHistoryEvent;

typedef struct GmailCall
{
	/* ---- set by the caller ---- */
	GmailMethod method;
	const char *id;				/* message or thread id for gets */
	const char *page_token;		/* for lists */
	const char *query;			/* q= for lists */
	int64		start_history_id;	/* history.list */
	const char *topic;			/* users.watch: projects/P/topics/T */
	void	   *opaque;

	/* ---- results, allocated in result_cxt ---- */
	MemoryContext result_cxt;
	bool		not_found;		/* 404 on a get: vanished */
	bool		history_expired;	/* 404 on history.list */
	char	   *next_page_token;
	int64		result_size_estimate;	/* messages.list: Gmail's estimate of the listing, 0 if none */
	int64		history_id;		/* profile / history.list / thread */
	char	   *email;			/* profile */
	GmailMessage message;		/* message gets */
	GmailMessage *messages;		/* messages.list items, thread messages */
	int			message_count;
	GmailThreadItem *threads;	/* threads.list items */
	int			thread_count;
	GmailHistoryEvent *events;	/* history.list */
	int			event_count;
	int64		expiration_ms;	/* users.watch: epoch ms */

	/* ---- private ---- */
	HttpRequest http;
	int			attempt;
	int			token_generation;
	bool		refreshed;		/* already retried once after a 401 */
	unsigned char *predecoded_raw;	/* raw decoded before the JSON parse */
	size_t		predecoded_len;
	char	   *url;
	char	   *body;			/* JSON body of a POST (watch, stop) */
} GmailCall;

typedef struct GmailStats
{
	int64		http_requests;
	int64		quota_units;
	int64		retries;
	int64		bytes_downloaded;
	int64		requests_by_method[GM__COUNT];
} GmailStats;

/*
 * Supplies the bearer token.  force = true asks for a fresh one after a 401;
 * the callback may raise a remote failure.
 */
typedef const char *(*GmailTokenSource) (void *arg, bool force);

/* Quota units the client-side budget charges per Gmail method. */
typedef struct GmailQuotaCosts
{
	int			profile;
	int			messages_list;
	int			messages_get;
	int			threads_list;
	int			threads_get;
	int			history_list;
	int			attachments_get;
	int			watch;			/* push (users.watch, users.stop): not sent yet */
	int			stop;
} GmailQuotaCosts;

/*
 * What a client works with, filled by the entry layer from the settings
 * (this layer reads none): copied at creation, so one sync sees one set.
 */
typedef struct GmailOptions
{
	const char *api_base_url;	/* e.g. https://gmail.googleapis.com */
	int			max_retries;	/* retries of a retryable failure */
	int			quota_units_per_minute;	/* client-side budget; 0 = none */
	int			project_units_per_minute;	/* the cluster's shared budget; 0 = none */
	GmailQuotaCosts costs;
	int			max_response_mb;	/* the HttpOptions cap, for error texts */
} GmailOptions;

typedef struct GmailClient GmailClient;

extern GmailClient *gmail_client_create(HttpClient *http, const GmailOptions *opts,
										GmailTokenSource token_source, void *token_arg);
extern void gmail_submit(GmailClient *client, GmailCall *call);
extern GmailCall *gmail_next(GmailClient *client);
extern int	gmail_pending(GmailClient *client);
extern const GmailStats *gmail_stats(GmailClient *client);

/* Run one call to completion (for lists and the profile). */
extern void gmail_run(GmailClient *client, GmailCall *call);

/* Release a finished call's results so the struct can be reused. */
extern void gmail_call_release(GmailCall *call);

/*
 * The call is over for good (no retry will resend it): its result and the
 * URL and body built when it was submitted are freed.  Every call a sync
 * makes must end here, or those (about 1 KB a call, in the client's
 * long-lived context) pile up with the mailbox.
 */
extern void gmail_call_done(GmailCall *call);

extern const char *gmail_method_name(GmailMethod m);

/*
 * gmail_project_budget.c: the project's quota, one budget in shared memory
 * for every backend.  _PG_init installs it (preload only); usage is what
 * project_quota_usage() reports: units booked in the last 60 s.
 */
extern void gmail_project_budget_install(void);
extern int64 gmail_project_budget_units_last_minute(void);

/* base64url (padded or not, '-' '_' or '+' '/') -> bytes; false if invalid. */
extern bool gmail_base64url_decode(const char *in, size_t len, unsigned char **out,
								   size_t *out_len);

/*
 * Requests of another client on the same HTTP client (the object store's
 * uploads during a sync): a completed request whose opaque is NULL is not
 * a Gmail call and goes to fn, from gmail_next, outside any curl callback.
 */
typedef void (*GmailForeignDone) (void *arg, HttpRequest *req);
extern void gmail_set_foreign(GmailClient *client, GmailForeignDone fn, void *arg);

#endif
