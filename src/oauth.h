/*-------------------------------------------------------------------------
 * oauth.h
 *	  Access tokens from Google's OAuth 2.0 token endpoint (refresh grant).
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_OAUTH_H
#define GMAIL_INGEST_OAUTH_H

#include "datatype/timestamp.h"
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

#endif
