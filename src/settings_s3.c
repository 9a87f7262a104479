/*-------------------------------------------------------------------------
 * settings_s3.c
 *	  Defines and checks the object-store settings of SPEC 7d.
 *
 * Every one is superuser-only: whoever points s3_endpoint elsewhere gets
 * the mail's bytes and a request signed with the access key.  The secret
 * key is hidden like client_secret and refused where every role could read
 * it back (pg_db_role_setting, pg_proc).  Plain http:// is accepted for
 * loopback hosts only, by the same rule as the Gmail API's URL.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"

#include "http.h"
#include "settings.h"
#include "settings_s3.h"

int			gi_blob_store = BLOB_STORE_DATABASE;
char	   *gi_s3_endpoint = NULL;
char	   *gi_s3_region = NULL;
char	   *gi_s3_bucket = NULL;
char	   *gi_s3_access_key_id = NULL;
char	   *gi_s3_secret_access_key = NULL;
bool		gi_s3_path_style = true;
char	   *gi_s3_prefix = NULL;

static const struct config_enum_entry blob_store_options[] = {
	{"database", BLOB_STORE_DATABASE, false},
	{"s3", BLOB_STORE_S3, false},
	{NULL, 0, false}
};

static bool
check_endpoint(char **newval, void **extra, GucSource source)
{
	const char *problem;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;			/* unset; a sync in s3 mode says so */
	problem = http_url_problem(*newval);
	if (problem != NULL)
	{
		GUC_check_errdetail("%s", problem);
		return false;
	}
	/* a path is allowed: Supabase's endpoint is https://<ref>.supabase.co/storage/v1/s3 */
	if (strpbrk(*newval, "?#%") != NULL)
	{
		GUC_check_errdetail("The endpoint is a scheme, host, port and optional path, without a query; "
							"the bucket goes in gmail_ingest.s3_bucket, a key prefix in gmail_ingest.s3_prefix.");
		return false;
	}
	return true;
}

/*
 * A bucket name S3 could hold (3-63 of a-z 0-9 . -; R2 and MinIO follow
 * the same rule); empty means unset.  An interactive SET to empty while
 * the store is s3 is refused; the configuration file's order is free.
 */
static bool
check_bucket(char **newval, void **extra, GucSource source)
{
	const char *v = *newval;
	size_t		n = v ? strlen(v) : 0;

	if (n == 0)
	{
		if (source >= PGC_S_INTERACTIVE && gi_blob_store == BLOB_STORE_S3)
		{
			GUC_check_errdetail("gmail_ingest.blob_store is 's3', which needs a bucket.");
			return false;
		}
		return true;
	}
	if (n < 3 || n > 63 || strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789.-") != n)
	{
		GUC_check_errdetail("A bucket name is 3 to 63 lower-case letters, digits, dots and hyphens.");
		return false;
	}
	return true;
}

static bool
check_blob_store(int *newval, void **extra, GucSource source)
{
	if (*newval == BLOB_STORE_S3 && source >= PGC_S_INTERACTIVE &&
		(gi_s3_bucket == NULL || gi_s3_bucket[0] == '\0'))
	{
		GUC_check_errdetail("gmail_ingest.s3_bucket is empty.");
		GUC_check_errhint("Set gmail_ingest.s3_endpoint, s3_region, s3_bucket and the access key first.");
		return false;
	}
	return true;
}

static bool
check_prefix(char **newval, void **extra, GucSource source)
{
	const char *v = *newval;

	if (v == NULL || v[0] == '\0')
		return true;
	if (v[0] == '/' || strstr(v, "//") != NULL || v[strlen(v) - 1] != '/' || strlen(v) > 200)
	{
		GUC_check_errdetail("A key prefix is empty or like \"mail/\": no leading slash, no empty segment, "
							"a trailing slash, at most 200 bytes.");
		return false;
	}
	return true;
}

void
settings_s3_define(void)
{
	DefineCustomEnumVariable("gmail_ingest.blob_store",
							 "Where attachment and raw-message bytes are kept: database or s3.",
							 "database: the blobs table; s3: an S3-compatible object store "
							 "(the database keeps rows and hashes).",
							 &gi_blob_store, BLOB_STORE_DATABASE, blob_store_options,
							 PGC_SUSET, 0, check_blob_store, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.s3_endpoint",
							   "URL of the S3-compatible object store: scheme, host, port and optional path.",
							   "http:// is accepted for loopback hosts only.",
							   &gi_s3_endpoint, "",
							   PGC_SUSET, 0, check_endpoint, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.s3_region",
							   "Region the object store's signatures are scoped to.",
							   "R2 uses auto; Supabase Storage its project's region.",
							   &gi_s3_region, "us-east-1",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.s3_bucket",
							   "Bucket holding the objects.",
							   NULL, &gi_s3_bucket, "",
							   PGC_SUSET, 0, check_bucket, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.s3_access_key_id",
							   "Access key id for the object store.",
							   NULL, &gi_s3_access_key_id, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.s3_secret_access_key",
							   "Secret access key for the object store.",
							   "Hidden from non-superusers.",
							   &gi_s3_secret_access_key, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   settings_check_secret, NULL, NULL);
	DefineCustomBoolVariable("gmail_ingest.s3_path_style",
							 "Address the bucket as endpoint/bucket/key (on) or bucket.host/key (off).",
							 "Supabase Storage and MinIO need path style; AWS S3 and R2 take both.",
							 &gi_s3_path_style, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.s3_prefix",
							   "Prefix of every object key, e.g. mail/ (empty: none).",
							   NULL, &gi_s3_prefix, "",
							   PGC_SUSET, 0, check_prefix, NULL, NULL);
}

void
settings_s3_config(S3Config *cfg, int max_retries)
{
	const char *missing = NULL;

	if (gi_s3_endpoint == NULL || gi_s3_endpoint[0] == '\0')
		missing = "gmail_ingest.s3_endpoint";
	else if (gi_s3_bucket == NULL || gi_s3_bucket[0] == '\0')
		missing = "gmail_ingest.s3_bucket";
	else if (gi_s3_region == NULL || gi_s3_region[0] == '\0')
		missing = "gmail_ingest.s3_region";
	else if (gi_s3_access_key_id == NULL || gi_s3_access_key_id[0] == '\0')
		missing = "gmail_ingest.s3_access_key_id";
	else if (gi_s3_secret_access_key == NULL || gi_s3_secret_access_key[0] == '\0')
		missing = "gmail_ingest.s3_secret_access_key";
	if (missing)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s must be set to use the object store", missing),
				 errhint("A superuser sets it with ALTER SYSTEM (or in postgresql.conf) and reloads.")));
	memset(cfg, 0, sizeof(*cfg));
	cfg->endpoint = pstrdup(gi_s3_endpoint);
	cfg->region = pstrdup(gi_s3_region);
	cfg->bucket = pstrdup(gi_s3_bucket);
	cfg->access_key_id = pstrdup(gi_s3_access_key_id);
	cfg->secret_access_key = pstrdup(gi_s3_secret_access_key);
	cfg->path_style = gi_s3_path_style;
	cfg->prefix = pstrdup(gi_s3_prefix ? gi_s3_prefix : "");
	cfg->max_retries = max_retries;
}
