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
int			gi_quota_model = QUOTA_MODEL_2026;
int			gi_quota_units_per_minute = -1;
int			gi_project_quota_units_per_minute = 1200000;
char	   *gi_quota_costs = NULL;
bool		gi_store_raw = true;
bool		gi_raise_on_failure = false;
int			gi_request_timeout_ms = 60000;
int			gi_connect_timeout_ms = 10000;
int			gi_max_retries = 5;
int			gi_max_response_mb = 64;
bool		gi_accept_gzip = true;
int			gi_fleet_batch_size = 100;

/*
 * Gmail's two quota models (GMAIL_FACTS.md, "Quota and rate limits").
 * Projects that used the Gmail API before May 2026 keep the published
 * table and 15,000 units a minute per user; projects created since are
 * allowed 6,000 and charged more per read.  A limit and a table belong
 * together: the 2026 limit with the old costs undercounts four-fold.
 * Order: profile, messages.list, messages.get, threads.list, threads.get,
 * history.list, attachments.get, watch, stop.
 */
static const GmailQuotaCosts model_costs[] = {
	[QUOTA_MODEL_2026] = {1, 5, 20, 10, 40, 2, 20, 100, 50},
	[QUOTA_MODEL_LEGACY] = {1, 5, 5, 10, 10, 2, 5, 100, 50},
};
static const int model_units_per_minute[] = {
	[QUOTA_MODEL_2026] = 6000,
	[QUOTA_MODEL_LEGACY] = 15000,
};

static const struct config_enum_entry quota_model_options[] = {
	{"2026", QUOTA_MODEL_2026, false},
	{"legacy", QUOTA_MODEL_LEGACY, false},
	{NULL, 0, false}
};

/* quota_costs as parsed: -1 = the model's cost for that method. */
static GmailQuotaCosts cost_overrides = {-1, -1, -1, -1, -1, -1, -1, -1, -1};

bool
settings_check_url(char **newval, void **extra, GucSource source)
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
bool
settings_check_secret(char **newval, void **extra, GucSource source)
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

/*
 * Parse "name=units,..." into *out, -1 for the methods it does not name;
 * false with a detail on bad input.
 */
static bool
parse_costs(const char *text, GmailQuotaCosts *out)
{
	char	   *copy = pstrdup(text);
	char	   *save = NULL;
	char	   *item;
	bool		ok = true;
	static const GmailQuotaCosts none = {-1, -1, -1, -1, -1, -1, -1, -1, -1};

	*out = none;
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
		else if (strcmp(item, "attachments.get") == 0 ||
				 strcmp(item, "messages.attachments.get") == 0)
			slot = &out->attachments_get;
		else if (strcmp(item, "watch") == 0)
			slot = &out->watch;
		else if (strcmp(item, "stop") == 0)
			slot = &out->stop;
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
		cost_overrides = *(GmailQuotaCosts *) extra;
}

/* The model's table with quota_costs' values put over it. */
GmailQuotaCosts
gi_costs(void)
{
	GmailQuotaCosts c = model_costs[gi_quota_model];
	const GmailQuotaCosts *o = &cost_overrides;

#define OVERRIDE(f) if (o->f >= 0) c.f = o->f
	OVERRIDE(profile);
	OVERRIDE(messages_list);
	OVERRIDE(messages_get);
	OVERRIDE(threads_list);
	OVERRIDE(threads_get);
	OVERRIDE(history_list);
	OVERRIDE(attachments_get);
	OVERRIDE(watch);
	OVERRIDE(stop);
#undef OVERRIDE
	return c;
}

/* quota_units_per_minute, or the model's limit when it is -1. */
int
gi_quota_limit(void)
{
	return gi_quota_units_per_minute >= 0 ? gi_quota_units_per_minute
		: model_units_per_minute[gi_quota_model];
}

HttpClient *
settings_http_client(MemoryContext owner, int concurrency, int concurrency_other, bool gzip)
{
	HttpOptions o;

	memset(&o, 0, sizeof(o));
	o.max_concurrency = concurrency;
	o.max_concurrency_other = concurrency_other;
	o.connect_timeout_ms = gi_connect_timeout_ms;
	o.request_timeout_ms = gi_request_timeout_ms;
	o.max_response_bytes = (size_t) gi_max_response_mb * 1024 * 1024;
	o.ca_file = gi_ca_file;
	/* Gmail compresses only for a client that says "gzip" in both headers */
	o.accept_gzip = gzip && gi_accept_gzip;
	o.user_agent = o.accept_gzip ? "gmail_ingest/" EXTVERSION " (gzip)" : "gmail_ingest/" EXTVERSION;
	return http_client_create(owner, &o);
}

void
settings_define(void)
{
	DefineCustomStringVariable("gmail_ingest.api_base_url",
							   "Base URL of the Gmail REST API.",
							   "Bearer tokens are sent there, so only superusers may change it; "
							   "http:// is accepted for loopback hosts only.",
							   &gi_api_base_url, "https://gmail.googleapis.com",
							   PGC_SUSET, 0, settings_check_url, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.oauth_token_url",
							   "URL of Google's OAuth 2.0 token endpoint.",
							   "Refresh tokens and the client secret are sent there; superuser-only.",
							   &gi_oauth_token_url, "https://oauth2.googleapis.com/token",
							   PGC_SUSET, 0, settings_check_url, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.client_id",
							   "OAuth client id used to refresh access tokens.",
							   NULL, &gi_client_id, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.client_secret",
							   "OAuth client secret used to refresh access tokens.",
							   "Hidden from non-superusers.",
							   &gi_client_secret, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   settings_check_secret, NULL, NULL);
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
	DefineCustomEnumVariable("gmail_ingest.quota_model",
							 "Gmail quota model: the per-user limit and the method costs by default.",
							 "2026: 6,000 units/min per user, messages.get 20, threads.get 40 "
							 "(projects new since May 2026); legacy: 15,000 units/min, the table published before.",
							 &gi_quota_model, QUOTA_MODEL_2026, quota_model_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("gmail_ingest.quota_units_per_minute",
							"Client-side Gmail quota budget per mailbox, in units per minute; 0 = off.",
							"-1 = the quota model's limit.",
							&gi_quota_units_per_minute, -1, -1, 10000000,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.quota_costs",
							   "Quota units charged per Gmail method, as name=units pairs.",
							   "Methods not named cost what the quota model says.",
							   &gi_quota_costs, "",
							   PGC_USERSET, 0, check_costs, assign_costs, NULL);
	DefineCustomIntVariable("gmail_ingest.project_quota_units_per_minute",
							"Gmail quota of the whole Cloud project, shared by every backend, in units per minute; 0 = off.",
							"Gmail's per-project limit is 1,200,000.",
							&gi_project_quota_units_per_minute, 1200000, 0, 100000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
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
	DefineCustomBoolVariable("gmail_ingest.accept_gzip",
							 "Ask Gmail for gzip-compressed answers.",
							 "Fewer bytes on the wire (a third for attachment-heavy mail, more for text) "
							 "for the CPU of inflating them, about 0.17 ms per 35 KB message.",
							 &gi_accept_gzip, true,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("gmail_ingest.fleet_batch_size",
							"Messages a fleet worker's turn fetches from a mailbox's full sync before it yields.",
							"A large first sync is time-sliced: one batch per turn, committed, then other due mailboxes.",
							&gi_fleet_batch_size, 100, 1, 100000,
							PGC_USERSET, 0, NULL, NULL, NULL);

	settings_s3_define();	/* object storage (SPEC 7d) */

	MarkGUCPrefixReserved("gmail_ingest");
}
