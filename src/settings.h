/*-------------------------------------------------------------------------
 * settings.h
 *	  The gmail_ingest.* configuration parameters.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_SETTINGS_H
#define GMAIL_INGEST_SETTINGS_H

#include "utils/guc.h"

#include "gmail_api.h"
#include "http.h"

extern char *gi_api_base_url;
extern char *gi_oauth_token_url;
extern char *gi_client_id;
extern char *gi_client_secret;
extern char *gi_ca_file;
extern int	gi_max_concurrency;
/* gmail_ingest.quota_model */
enum
{
	QUOTA_MODEL_2026,
	QUOTA_MODEL_LEGACY
};

extern int	gi_quota_model;
extern int	gi_quota_units_per_minute;	/* -1 = the model's */
extern int	gi_project_quota_units_per_minute;
extern char *gi_quota_costs;
extern bool gi_store_raw;
extern bool gi_raise_on_failure;
extern int	gi_request_timeout_ms;
extern int	gi_connect_timeout_ms;
extern int	gi_max_retries;
extern int	gi_max_response_mb;
extern bool gi_accept_gzip;
extern int	gi_fleet_batch_size;

/* The unit costs: the quota model's, with quota_costs' values over them. */
extern GmailQuotaCosts gi_costs(void);

/* The per-mailbox limit in force: quota_units_per_minute or the model's. */
extern int	gi_quota_limit(void);

/*
 * GUC check hooks shared by every file that defines settings: a URL tokens
 * may be sent to (https, or http to a loopback host), and a secret that
 * must not be stored where every role can read it.
 */
extern bool settings_check_url(char **newval, void **extra, GucSource source);
extern bool settings_check_secret(char **newval, void **extra, GucSource source);

/*
 * An HTTP client with the settings' timeouts, response limit and CA file:
 * every service the extension calls (Gmail, OAuth, Pub/Sub, the object
 * store) is reached through one, so a setting means the same for all.
 * "gzip" (Gmail's clients) asks for compressed answers when
 * gmail_ingest.accept_gzip is on: Accept-Encoding, and the word Google
 * needs in the User-Agent before it compresses.
 */
extern HttpClient *settings_http_client(MemoryContext owner, int concurrency,
										int concurrency_other, bool gzip);

extern void settings_define(void);

#endif
