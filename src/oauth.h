/*-------------------------------------------------------------------------
 * oauth.h
 *	  Access tokens from Google's OAuth 2.0 token endpoint: the refresh
 *	  grant here, the service accounts' JWT bearer grant in oauth_jwt.h.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_OAUTH_H
#define GMAIL_INGEST_OAUTH_H

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "http.h"

/* Longest access token accepted; Google's are a few hundred bytes. */
#define OAUTH_MAX_TOKEN_BYTES 8192

/* Where and as whom to ask; the entry layer fills it from the settings. */
typedef struct OAuthOptions
{
	const char *token_url;
	const char *client_id;
	const char *client_secret;
	int			max_retries;	/* retries of a transient failure */
} OAuthOptions;

typedef struct OAuthToken
{
	char	   *access_token;	/* palloc'd */
	TimestampTz expires_at;
} OAuthToken;

/*
 * Exchange a refresh token for an access token, retrying transient failures
 * as Gmail calls are (counted in *retries).  Raises a remote failure
 * (RF_REVOKED on invalid_grant, RF_CONFIG on invalid_client, RF_PROTOCOL on
 * an unreadable answer or a token out of bounds, RF_RATE_LIMIT on a 429,
 * RF_NETWORK or RF_HTTP otherwise) whose text never contains a secret.
 */
extern OAuthToken oauth_refresh(HttpClient *http, const OAuthOptions *opts,
								const char *refresh_token, int *retries);

/*
 * A grant's own reading of an error answer from the token endpoint
 * (err is Google's "error" code, never NULL; desc its "error_description",
 * NULL when absent): raise a remote failure for the refusals the
 * grant knows, return for the rest (which are then retried or reported as
 * HTTP errors).
 */
typedef void (*OAuthRefused) (void *arg, long status, const char *err, const char *desc);

/*
 * POST the form to the token endpoint and read the token from the answer,
 * with the retry policy and the bounds of every grant.  The form is the
 * caller's, which wipes it.
 */
extern OAuthToken oauth_exchange(HttpClient *http, const char *token_url, int max_retries,
								 const char *form, OAuthRefused refused, void *arg,
								 int *retries);

/* name=value, percent-encoded, appended to a form. */
extern void oauth_append_field(StringInfo buf, const char *name, const char *value);

/* A printable, bounded copy of a server-supplied string, for an error text. */
extern char *oauth_safe_text(const char *s);

#endif
