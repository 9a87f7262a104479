/*-------------------------------------------------------------------------
 * service_account.h
 *	  SQL entry points of service accounts (SPEC 7a), and the token of a
 *	  delegated mailbox that gmail_sync's token source asks for.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_SERVICE_ACCOUNT_H
#define GMAIL_INGEST_SERVICE_ACCOUNT_H

#include "http.h"
#include "oauth.h"

/*
 * A token of service account service_account_id for subject and scope,
 * with the settings' token URL and retries.  SPI must be connected.
 */
extern OAuthToken service_account_token(HttpClient *http, int64 service_account_id,
										const char *subject, const char *scope,
										int *retries);

#endif
