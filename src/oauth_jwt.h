/*-------------------------------------------------------------------------
 * oauth_jwt.h
 *	  Access tokens of a service account with domain-wide delegation: the
 *	  JWT bearer grant (RFC 7523), RS256-signed with OpenSSL.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_OAUTH_JWT_H
#define GMAIL_INGEST_OAUTH_JWT_H

#include "oauth.h"

/* The one scope a mailbox sync needs (and check_service_account asks for). */
#define OAUTH_GMAIL_SCOPE "https://www.googleapis.com/auth/gmail.readonly"

/*
 * iat is set this far in the past: a server clock a little ahead of
 * Google's must not make the assertion "issued in the future".  exp stays
 * iat + 3600, the longest Google accepts.
 */
#define OAUTH_JWT_CLOCK_SKEW_S 60
#define OAUTH_JWT_LIFETIME_S 3600

typedef struct OAuthJwtOptions
{
	const char *token_url;		/* also the assertion's aud */
	int			max_retries;
	const char *client_email;	/* iss */
	const char *client_id;		/* named in errors: the Admin console wants it */
	const char *key_id;			/* the header's kid */
	const char *private_key_pem;
	const char *subject;		/* sub: the mailbox impersonated; NULL: the
								 * account itself (Pub/Sub) */
	const char *scope;
} OAuthJwtOptions;

/*
 * A token for o->subject.  Raises remote failures like oauth_refresh, and
 * RF_DELEGATION on unauthorized_client (delegation not granted for the
 * scope, or a subject outside Workspace), RF_REVOKED on invalid_grant
 * (unknown user, bad signature or key, clock skew).  No text of it ever
 * holds the key or the assertion.
 */
extern OAuthToken oauth_jwt_token(HttpClient *http, const OAuthJwtOptions *o, int *retries);

/*
 * Why the PEM cannot sign RS256 assertions (not a private key OpenSSL
 * reads, encrypted, not RSA), or NULL when it can.  Never raises, never
 * quotes the key.
 */
extern const char *oauth_jwt_key_problem(const char *pem);

#endif
