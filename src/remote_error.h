/*-------------------------------------------------------------------------
 * remote_error.h
 *	  Errors caused by Gmail, Google OAuth or the network, as opposed to
 *	  bugs, bad input or cancels.
 *
 * gmail_sync records a remote failure in the run's row (unless
 * raise_on_failure is on) and re-throws everything else; the kind is set
 * just before the ERROR is raised so the catch can tell them apart.  Each
 * kind has exactly one SQLSTATE, from the table in remote_error.c, which
 * the README's failure table repeats: callers name the kind only.
 *
 * Only PostgreSQL's own headers are used here, so http, oauth and the Gmail
 * client can include this without reaching up into the sync layers.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_REMOTE_ERROR_H
#define GMAIL_INGEST_REMOTE_ERROR_H

#include "datatype/timestamp.h"

typedef enum RemoteFailure
{
	RF_NONE = 0,
	RF_NETWORK,					/* transport failed after retries */
	RF_HTTP,					/* an HTTP error answer */
	RF_PROTOCOL,				/* unreadable answer: invalid JSON, a field
								 * missing or out of range, too large, paging
								 * that never ends */
	RF_RATE_LIMIT,				/* still rate-limited after retries */
	RF_AUTH,					/* a token refused, or of another account */
	RF_PERMISSION,				/* 403 insufficientPermissions and the like */
	RF_REVOKED,					/* invalid_grant: mailbox needs re-consent */
	RF_CONFIG,					/* invalid_client: the OAuth client is wrong */
	RF_DELEGATION,				/* unauthorized_client on the JWT bearer grant:
								 * domain-wide delegation not granted */
	RF__COUNT
} RemoteFailure;

/* The SQLSTATE (as made by MAKE_SQLSTATE) and a short name of each kind. */
extern int	remote_failure_sqlstate(RemoteFailure kind);
extern const char *remote_failure_name(RemoteFailure kind);

/* Mark the ERROR about to be raised as a remote failure of this kind. */
extern void remote_failure_mark(RemoteFailure kind);

/*
 * The time the server said to retry after, when the failure is that its
 * hint was too far away (or the retries ran out while it gave one); kept
 * with the pending failure so the run's record can carry it.
 */
extern void remote_failure_set_retry_after(TimestampTz when);

/* Forget any pending failure (a sync starts). */
extern void remote_failure_clear(void);

/*
 * The pending failure's kind (RF_NONE when the ERROR was not a remote
 * failure) and its retry time (0 when none), then forget both.
 */
extern RemoteFailure remote_failure_take(TimestampTz *retry_after);

/* Raise an ERROR marked as a remote failure of the given kind. */
#define remote_failure(kind, ...) \
	do { \
		remote_failure_mark(kind); \
		ereport(ERROR, (errcode(remote_failure_sqlstate(kind)), __VA_ARGS__)); \
	} while (0)

#endif
