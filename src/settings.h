/*-------------------------------------------------------------------------
 * settings.h
 *	  The gmail_ingest.* configuration parameters.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_SETTINGS_H
#define GMAIL_INGEST_SETTINGS_H

#include "gmail_api.h"

extern char *gi_api_base_url;
extern char *gi_oauth_token_url;
extern char *gi_client_id;
extern char *gi_client_secret;
extern char *gi_ca_file;
extern int	gi_max_concurrency;
extern int	gi_quota_units_per_minute;
extern char *gi_quota_costs;
extern bool gi_store_raw;
extern bool gi_raise_on_failure;
extern int	gi_request_timeout_ms;
extern int	gi_connect_timeout_ms;
extern int	gi_max_retries;
extern int	gi_max_response_mb;
extern int	gi_fleet_batch_size;

/* The unit costs parsed from quota_costs. */
extern const GmailQuotaCosts *gi_costs(void);

extern void settings_define(void);

#endif
