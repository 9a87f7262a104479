/*-------------------------------------------------------------------------
 * store_service_account.h
 *	  Reading a service account and its private key (SPEC 7a), through SPI.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_STORE_SERVICE_ACCOUNT_H
#define GMAIL_INGEST_STORE_SERVICE_ACCOUNT_H

typedef struct ServiceAccountInfo
{
	int64		id;
	char	   *client_email;
	char	   *client_id;
	char	   *private_key_id;
	char	   *private_key;	/* PEM: a secret, kept out of every message */
} ServiceAccountInfo;

/* false when there is no such service account (or it has no key). */
extern bool store_load_service_account(int64 id, ServiceAccountInfo *out);

#endif
