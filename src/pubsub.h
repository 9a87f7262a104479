/*-------------------------------------------------------------------------
 * pubsub.h
 *	  Cloud Pub/Sub pull subscriptions over REST (:pull, :acknowledge), and
 *	  the Gmail notification a message carries.
 *
 * The push listener (push.c) uses this to fetch Gmail's change
 * notifications itself over HTTPS: no public endpoint is needed.  Calls
 * are retried like Gmail's (retry_policy.h: 429, 5xx, connection errors,
 * honouring Retry-After); a 401 gets one fresh token; anything else raises
 * a remote failure whose text never holds the token.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_PUBSUB_H
#define GMAIL_INGEST_PUBSUB_H

#include "http.h"

/* Pub/Sub's own cap on maxMessages of one pull. */
#define PUBSUB_MAX_MESSAGES 1000

/* Longest ackId accepted (Google's are a few hundred bytes). */
#define PUBSUB_MAX_ACK_ID_BYTES 4096

typedef struct PubsubOptions
{
	const char *base_url;		/* e.g. https://pubsub.googleapis.com */
	const char *subscription;	/* projects/P/subscriptions/S, checked */
	int			max_retries;
	int			max_response_mb;	/* the HttpOptions cap, for error texts */
} PubsubOptions;

/* One received message; strings palloc'd in the caller's context. */
typedef struct PubsubMessage
{
	char	   *ack_id;
	char	   *message_id;		/* for log lines; "" when absent */
	char	   *data;			/* base64 text as received; NULL when absent */
} PubsubMessage;

/* Supplies the bearer token; force = true after a 401. */
typedef const char *(*PubsubTokenSource) (void *arg, bool force);

typedef struct PubsubClient PubsubClient;

extern PubsubClient *pubsub_client_create(HttpClient *http, const PubsubOptions *opts,
										  PubsubTokenSource token_source, void *token_arg);

/* Pull up to max_messages (1..PUBSUB_MAX_MESSAGES); returns how many. */
extern int	pubsub_pull(PubsubClient *client, int max_messages, PubsubMessage **messages);

/* Acknowledge n ack ids (any number: sent in requests of at most 1000). */
extern void pubsub_acknowledge(PubsubClient *client, char *const *ack_ids, int n);

/* Retries made so far by this client. */
extern int	pubsub_retries(PubsubClient *client);

/* Whether a name is projects/P/subscriptions/S (or topics/T) in Pub/Sub's alphabet. */
extern bool pubsub_name_valid(const char *name, const char *kind);

/*
 * A Gmail notification's data: base64 of the JSON object
 * {"emailAddress": "...", "historyId": N}.  False, with *why, when it is
 * not one; the email is palloc'd.
 */
extern bool pubsub_gmail_notification(const char *data, char **email, int64 *history_id,
									  const char **why);

#endif
