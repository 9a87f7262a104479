/*-------------------------------------------------------------------------
 * settings.c
 *	  Defines and validates the gmail_ingest.* configuration parameters.
 *
 * Anything that decides where a token is sent, or which certificates are
 * trusted, is superuser-only: whoever sets the API base URL receives the
 * mailbox's bearer token.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"

#include "http.h"
#include "settings.h"
#include "settings_s3.h"

char	   *gi_api_base_url = NULL;
char	   *gi_oauth_token_url = NULL;
char	   *gi_client_id = NULL;
char	   *gi_client_secret = NULL;
char	   *gi_ca_file = NULL;
int			gi_max_concurrency = 8;
int			gi_quota_units_per_minute = 6000;
char	   *gi_quota_costs = NULL;
bool		gi_store_raw = true;
bool		gi_raise_on_failure = false;
int			gi_request_timeout_ms = 60000;
int			gi_connect_timeout_ms = 10000;
int			gi_max_retries = 5;
int			gi_max_response_mb = 64;
int			gi_fleet_batch_size = 100;

#define DEFAULT_COSTS "profile=1,messages.list=5,messages.get=5,threads.list=10,threads.get=10,history.list=2,attachments.get=5"

static GmailQuotaCosts parsed_costs = {1, 5, 5, 10, 10, 2, 5};

static bool
check_url(char **newval, void **extra, GucSource source)
{
	const char *problem;

	if (*newval == NULL || (*newval)[0] == '\0')
	{
		GUC_check_errdetail("The URL must not be empty.");
		return false;
	}
	problem = http_url_problem(*newval);
	if (problem != NULL)
	{
		GUC_check_errdetail("%s", problem);
		return false;
	}
	return true;
}

/*
 * ALTER DATABASE ... SET, ALTER ROLE ... SET and a function's SET clause
 * store the value in pg_db_role_setting or pg_proc, catalogs every role can
 * read; PostgreSQL validates such values with source PGC_S_TEST.  A secret
 * is accepted only from the configuration file (ALTER SYSTEM included) or
 * a superuser's SET.  Values stored that way before this check existed
 * still apply; gmail_sync warns about them.
 */
static bool
check_secret(char **newval, void **extra, GucSource source)
{
	if (source == PGC_S_TEST && *newval != NULL && (*newval)[0] != '\0')
	{
		GUC_check_errmsg("a secret cannot be stored with ALTER DATABASE, ALTER ROLE or a function's SET clause");
		GUC_check_errdetail("Those settings are kept in catalogs that every role can read.");
		GUC_check_errhint("Use ALTER SYSTEM (or postgresql.conf) and pg_reload_conf().");
		return false;
	}
	return true;
}

/* Parse "name=units,..." into *out; false with a detail on bad input. */
static bool
parse_costs(const char *text, GmailQuotaCosts *out)
{
	char	   *copy = pstrdup(text);
	char	   *save = NULL;
	char	   *item;
	bool		ok = true;

	*out = parsed_costs;
	for (item = strtok_r(copy, ",", &save); item && ok; item = strtok_r(NULL, ",", &save))
	{
		char	   *eq = strchr(item, '=');
		char	   *end;
		long		v;
		int		   *slot = NULL;

		while (*item == ' ')
			item++;
		if (eq == NULL)
		{
			GUC_check_errdetail("Expected name=units, got \"%s\".", item);
			ok = false;
			break;
		}
		*eq = '\0';
		v = strtol(eq + 1, &end, 10);
		if (end == eq + 1 || *end != '\0' || v < 0 || v > 1000)
		{
			GUC_check_errdetail("Units for \"%s\" must be an integer between 0 and 1000.", item);
			ok = false;
			break;
		}
		if (strcmp(item, "profile") == 0)
			slot = &out->profile;
		else if (strcmp(item, "messages.list") == 0)
			slot = &out->messages_list;
		else if (strcmp(item, "messages.get") == 0)
			slot = &out->messages_get;
		else if (strcmp(item, "threads.list") == 0)
			slot = &out->threads_list;
		else if (strcmp(item, "threads.get") == 0)
			slot = &out->threads_get;
		else if (strcmp(item, "history.list") == 0)
			slot = &out->history_list;
		else if (strcmp(item, "attachments.get") == 0)
			slot = &out->attachments_get;
		else
		{
			GUC_check_errdetail("Unknown method \"%s\".", item);
			ok = false;
			break;
		}
		*slot = (int) v;
	}
	pfree(copy);
	return ok;
}

static bool
check_costs(char **newval, void **extra, GucSource source)
{
	GmailQuotaCosts tmp;
	GmailQuotaCosts *keep;

	if (*newval == NULL)
		return true;
	if (!parse_costs(*newval, &tmp))
		return false;
	keep = malloc(sizeof(GmailQuotaCosts));	/* GUC "extra" is released with free() */
	if (keep == NULL)
		return false;
	*keep = tmp;
	*extra = keep;
	return true;
}

static void
assign_costs(const char *newval, void *extra)
{
	if (extra != NULL)
		parsed_costs = *(GmailQuotaCosts *) extra;
}

const GmailQuotaCosts *
gi_costs(void)
{
	return &parsed_costs;
}

void
settings_define(void)
{
	DefineCustomStringVariable("gmail_ingest.api_base_url",
							   "Base URL of the Gmail REST API.",
							   "Bearer tokens are sent there, so only superusers may change it; "
							   "http:// is accepted for loopback hosts only.",
							   &gi_api_base_url, "https://gmail.googleapis.com",
							   PGC_SUSET, 0, check_url, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.oauth_token_url",
							   "URL of Google's OAuth 2.0 token endpoint.",
							   "Refresh tokens and the client secret are sent there; superuser-only.",
							   &gi_oauth_token_url, "https://oauth2.googleapis.com/token",
							   PGC_SUSET, 0, check_url, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.client_id",
							   "OAuth client id used to refresh access tokens.",
							   NULL, &gi_client_id, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.client_secret",
							   "OAuth client secret used to refresh access tokens.",
							   "Hidden from non-superusers.",
							   &gi_client_secret, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   check_secret, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.ca_file",
							   "File of CA certificates trusted for TLS; empty means the system's.",
							   "TLS verification is always on.",
							   &gi_ca_file, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("gmail_ingest.max_concurrency",
							"Gmail requests in flight at once within one sync.",
							"Gmail refuses more than about 10 concurrent requests per user.",
							&gi_max_concurrency, 8, 1, 32,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("gmail_ingest.quota_units_per_minute",
							"Client-side Gmail quota budget per mailbox, in units per minute; 0 = off.",
							NULL, &gi_quota_units_per_minute, 6000, 0, 10000000,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.quota_costs",
							   "Quota units charged per Gmail method, as name=units pairs.",
							   NULL, &gi_quota_costs, DEFAULT_COSTS,
							   PGC_USERSET, 0, check_costs, assign_costs, NULL);
	DefineCustomBoolVariable("gmail_ingest.store_raw",
							 "Keep each message's exact RFC 822 bytes in gmail_ingest.blobs.",
							 NULL, &gi_store_raw, true,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("gmail_ingest.raise_on_failure",
							 "Raise an ERROR when a sync fails on Gmail's side instead of recording it.",
							 NULL, &gi_raise_on_failure, false,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("gmail_ingest.request_timeout_ms",
							"Time limit of one HTTP request, in milliseconds.",
							NULL, &gi_request_timeout_ms, 60000, 100, 3600000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("gmail_ingest.connect_timeout_ms",
							"Time limit to establish a connection, in milliseconds.",
							NULL, &gi_connect_timeout_ms, 10000, 100, 600000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("gmail_ingest.max_retries",
							"Retries of a request that failed with a retryable error.",
							NULL, &gi_max_retries, 5, 0, 20,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("gmail_ingest.max_response_mb",
							"Largest HTTP response accepted, in megabytes.",
							"Gmail messages are at most 25 MB before base64 encoding.",
							&gi_max_response_mb, 64, 1, 512,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("gmail_ingest.fleet_batch_size",
							"Messages a fleet worker's turn fetches from a mailbox's full sync before it yields.",
							"A large first sync is time-sliced: one batch per turn, committed, then other due mailboxes.",
							&gi_fleet_batch_size, 100, 1, 100000,
							PGC_USERSET, 0, NULL, NULL, NULL);

	settings_s3_define();	/* object storage (SPEC 7d) */

	MarkGUCPrefixReserved("gmail_ingest");
}
