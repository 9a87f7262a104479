/*-------------------------------------------------------------------------
 * remote_error.h
 *	  Errors caused by Gmail, Google OAuth or the network, as opposed to
 *	  bugs, bad input or cancels.
 *
 * gmail_sync records a remote failure in the run's row (unless
 * raise_on_failure is on) and re-throws everything else; the kind is set
 * just before the ERROR is raised so the catch can tell them apart.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_REMOTE_ERROR_H
#define GMAIL_INGEST_REMOTE_ERROR_H

typedef enum RemoteFailure
{
	RF_NONE = 0,
	RF_NETWORK,					/* transport failed after retries: 08006 */
	RF_HTTP,					/* Gmail answered an error: 38000 */
	RF_PROTOCOL,				/* unreadable answer after retries: 08P01 */
	RF_RATE_LIMIT,				/* still rate-limited after retries: 53400 */
	RF_AUTH,					/* token refused, or no permission: 28000 */
	RF_REVOKED,					/* invalid_grant: mailbox needs re-consent: 28000 */
	RF_CONFIG					/* invalid_client: 28000 */
} RemoteFailure;

extern RemoteFailure gi_pending_remote_failure;

/* Raise an ERROR marked as a remote failure of the given kind. */
#define remote_failure(kind, sqlstate, ...) \
	do { \
		gi_pending_remote_failure = (kind); \
		ereport(ERROR, (errcode(sqlstate), __VA_ARGS__)); \
	} while (0)

#endif
