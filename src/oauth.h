/*-------------------------------------------------------------------------
 * oauth.h
 *	  Access tokens from Google's OAuth 2.0 token endpoint (refresh grant).
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_OAUTH_H
#define GMAIL_INGEST_OAUTH_H

#include "datatype/timestamp.h"
#include "http.h"

typedef struct OAuthToken
{
	char	   *access_token;	/* palloc'd */
	TimestampTz expires_at;
} OAuthToken;

/*
 * Exchange a refresh token for an access token, retrying transient failures
 * as Gmail calls are (counted in *retries).  Raises a remote failure
 * (RF_REVOKED on invalid_grant, RF_CONFIG on invalid_client, RF_NETWORK or
 * RF_HTTP otherwise) whose text never contains a secret.
 */
extern OAuthToken oauth_refresh(HttpClient *http, const char *refresh_token, int *retries);

#endif
