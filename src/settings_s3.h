/*-------------------------------------------------------------------------
 * settings_s3.h
 *	  The object-store settings (gmail_ingest.blob_store, gmail_ingest.s3_*).
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_SETTINGS_S3_H
#define GMAIL_INGEST_SETTINGS_S3_H

#include "s3_client.h"

typedef enum BlobStore
{
	BLOB_STORE_DATABASE,
	BLOB_STORE_S3
} BlobStore;

extern int	gi_blob_store;
extern char *gi_s3_endpoint;
extern char *gi_s3_region;
extern char *gi_s3_bucket;
extern char *gi_s3_access_key_id;
extern char *gi_s3_secret_access_key;
extern bool gi_s3_path_style;
extern char *gi_s3_prefix;

extern void settings_s3_define(void);

/*
 * The settings as an S3Config (pointing at the GUC strings: valid until
 * the next configuration reload, so copy before a long wait); raises a
 * clear error when one the store needs is empty.
 */
extern void settings_s3_config(S3Config *cfg, int max_retries);

#endif
