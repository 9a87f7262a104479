/*-------------------------------------------------------------------------
 * service_account.c
 *	  SQL entry points of service accounts with domain-wide delegation
 *	  (SPEC 7a): the key check add_service_account relies on
 *	  (_private_key_problem) and check_service_account, plus the token of
 *	  a delegated mailbox for gmail_sync's token source.
 *
 * Registration itself (JSON shape, upserts, dropping cached tokens) is
 * SQL in the install script; what needs OpenSSL or the network is here.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/tuplestore.h"

#include "http.h"
#include "oauth_jwt.h"
#include "remote_error.h"
#include "service_account.h"
#include "settings.h"
#include "store_service_account.h"

/* The scopes a mailbox sync needs: check_service_account asks for each. */
static const char *const needed_scopes[] = {OAUTH_GMAIL_SCOPE};

OAuthToken
service_account_token(HttpClient *http, int64 service_account_id, const char *subject,
					  const char *scope, int *retries)
{
	ServiceAccountInfo sa;
	OAuthJwtOptions o;

	if (!store_load_service_account(service_account_id, &sa))
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("service account " INT64_FORMAT " does not exist", service_account_id),
				 errhint("Register it with gmail_ingest.add_service_account_file.")));
	memset(&o, 0, sizeof(o));
	o.token_url = gi_oauth_token_url;
	o.max_retries = gi_max_retries;
	o.client_email = sa.client_email;
	o.client_id = sa.client_id;
	o.key_id = sa.private_key_id;
	o.private_key_pem = sa.private_key;
	o.subject = subject;
	o.scope = scope;
	return oauth_jwt_token(http, &o, retries);
}

/* Exported: the build hides every other symbol (see the Makefile). */
PGDLLEXPORT Datum gmail_private_key_problem(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum gmail_check_service_account(PG_FUNCTION_ARGS);

PG_FUNCTION_INFO_V1(gmail_private_key_problem);

/*
 * _private_key_problem(pem text) RETURNS text: NULL when the PEM is an
 * unencrypted RSA private key, else why not (never quoting it).
 */
Datum
gmail_private_key_problem(PG_FUNCTION_ARGS)
{
	char	   *pem = text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *why = oauth_jwt_key_problem(pem);

	explicit_bzero(pem, strlen(pem));
	pfree(pem);
	if (why == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(why));
}

/*
 * Ask for one token; NULL when one was issued, else what the failure said
 * (message, detail and hint: what the administrator must grant).  Only
 * remote failures are caught, in a subtransaction as gmail_sync does;
 * cancels and bugs go on up.
 */
static char *
try_scope(HttpClient *http, int64 sa_id, const char *subject, const char *scope)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	   *volatile problem = NULL;

	remote_failure_clear();
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		(void) service_account_token(http, sa_id, subject, scope, NULL);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (remote_failure_take(NULL) == RF_NONE ||
			edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
			ReThrowError(edata);
		problem = psprintf("%s.%s%s%s%s", edata->message,
						   edata->detail ? " " : "", edata->detail ? edata->detail : "",
						   edata->hint ? " " : "", edata->hint ? edata->hint : "");
	}
	PG_END_TRY();
	return problem;
}

PG_FUNCTION_INFO_V1(gmail_check_service_account);

/*
 * check_service_account(service_account_id, provider_email): one row per
 * scope a sync needs, with whether Google issues the token and, if not,
 * what to fix.  Nothing is stored: the tokens are thrown away.
 */
Datum
gmail_check_service_account(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext caller_cxt;
	MemoryContext cxt;
	HttpClient *http;
	int64		sa_id;
	char	   *subject;
	int			i;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("check_service_account arguments must not be null")));
	sa_id = PG_GETARG_INT64(0);
	subject = text_to_cstring(PG_GETARG_TEXT_PP(1));
	InitMaterializedSRF(fcinfo, 0);
	caller_cxt = CurrentMemoryContext;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	cxt = AllocSetContextCreate(CurTransactionContext, "check_service_account", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	http = settings_http_client(cxt, 1, 0, false);
	for (i = 0; i < lengthof(needed_scopes); i++)
	{
		char	   *problem = try_scope(http, sa_id, subject, needed_scopes[i]);
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = CStringGetTextDatum(needed_scopes[i]);
		values[1] = BoolGetDatum(problem == NULL);
		values[2] = CStringGetTextDatum(problem ? problem
										: psprintf("Google issued a token for %s: domain-wide delegation of this scope works.",
												   subject));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	http_client_destroy(http);
	MemoryContextSwitchTo(caller_cxt);
	SPI_finish();
	MemoryContextDelete(cxt);
	return (Datum) 0;
}
