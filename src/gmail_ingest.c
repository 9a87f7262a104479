/*-------------------------------------------------------------------------
 * gmail_ingest.c
 *	  Module entry: _PG_init, the SQL-callable gmail_sync() and
 *	  _backfill_step(), and the run record around each sync.
 *
 * gmail_sync runs in the caller's transaction.  The data work happens in a
 * subtransaction so that a failure on Gmail's side can be recorded (the
 * run's row says failed, the data it wrote is rolled back) instead of
 * aborting the caller; anything else (bugs, cancels, timeouts) propagates.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "gmail_api.h"
#include "http.h"
#include "oauth.h"
#include "oauth_jwt.h"
#include "push.h"
#include "remote_error.h"
#include "retry_policy.h"
#include "service_account.h"
#include "settings.h"
#include "settings_s3.h"
#include "store.h"
#include "sync.h"
#include "gmail_ingest.h"

PG_MODULE_MAGIC;

/* Advisory lock space of gmail_ingest (locktag_field4), shown in pg_locks. */
#define SYNC_LOCK_SPACE 0x474D

PGDLLEXPORT void _PG_init(void);

/*
 * Loaded only through shared_preload_libraries: until the library is loaded
 * in a backend, gmail_ingest.client_secret from the configuration is an
 * unprotected placeholder that any role can SHOW, and a placeholder any
 * role SETs would be applied.  Preloading defines the settings before any
 * session exists.  GMime and libcurl are initialised lazily in backends.
 */
void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("gmail_ingest can only be loaded via shared_preload_libraries"),
				 errdetail("Loaded later, its superuser-only settings (the OAuth client secret, the API URL) "
						   "are visible to and settable by every role until the load."),
				 errhint("Add gmail_ingest to shared_preload_libraries in postgresql.conf and restart.")));
	push_settings_define();
	settings_define();
	/* the project's quota budget, shared by all backends */
	gmail_project_budget_install();
}

/* Refresh a minute before expiry, as Google advises. */
#define TOKEN_MARGIN_MS 60000

static const char *
token_source(void *arg, bool force)
{
	SyncState  *s = (SyncState *) arg;
	OAuthOptions o;
	OAuthToken	t;

	if (!force && s->mb.access_token != NULL &&
		s->mb.access_expires_at > TimestampTzPlusMilliseconds(GetCurrentTimestamp(), TOKEN_MARGIN_MS))
		return s->mb.access_token;
	if (s->mb.service_account_id != 0)	/* delegated: the JWT bearer grant */
		t = service_account_token(s->token_http, s->mb.service_account_id, s->mb.email,
								  OAUTH_GMAIL_SCOPE, &s->token_retries);
	else
	{
		o.token_url = gi_oauth_token_url;
		o.client_id = gi_client_id;
		o.client_secret = gi_client_secret;
		o.max_retries = gi_max_retries;
		t = oauth_refresh(s->token_http, &o, s->mb.refresh_token, &s->token_retries);
	}
	store_save_access_token(s->mb.id, t.access_token, t.expires_at);
	s->mb.access_token = t.access_token;
	s->mb.access_expires_at = t.expires_at;
	return t.access_token;
}

bool
sync_lock_try(int64 mailbox_id)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (mailbox_id >> 32),
						 (uint32) mailbox_id, SYNC_LOCK_SPACE);
	return LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
}

bool
sync_lock_held(int64 mailbox_id)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (mailbox_id >> 32),
						 (uint32) mailbox_id, SYNC_LOCK_SPACE);
	return LockHeldByMe(&tag, ExclusiveLock);
}

void
sync_lock_release(int64 mailbox_id)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (mailbox_id >> 32),
						 (uint32) mailbox_id, SYNC_LOCK_SPACE);
	LockRelease(&tag, ExclusiveLock, false);
}

static void
lock_mailbox(int64 mailbox_id)
{
	if (!sync_lock_try(mailbox_id))
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("mailbox " INT64_FORMAT " is already being synced", mailbox_id),
				 errdetail("Another session holds the mailbox's sync lock until its transaction ends."),
				 errhint("Only one sync per mailbox runs at a time; try again when it has finished.")));
}

/*
 * The arguments gmail_sync and _backfill_step share: mailbox_id, days and
 * a third (force_full or batch_size) that no NULL may stand for.
 */
static void
check_arguments(FunctionCallInfo fcinfo, const char *fname)
{
	int32		days;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s arguments must not be null", fname)));
	days = PG_GETARG_INT32(1);
	if (days < 1 || days > 3650)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("days must be between 1 and 3650, got %d", days)));
}

static void
check_mailbox_ready(const MailboxInfo *mb)
{
	if (!mb->has_credentials)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("mailbox " INT64_FORMAT " has no credentials", mb->id),
				 errhint("Register its refresh token with gmail_ingest.add_mailbox(), or a service "
						 "account for it with gmail_ingest.add_delegated_mailbox().")));
	if (mb->service_account_id != 0)
		return;					/* a service account signs: no OAuth client */
	if (gi_client_id == NULL || gi_client_id[0] == '\0' ||
		gi_client_secret == NULL || gi_client_secret[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("gmail_ingest.client_id and gmail_ingest.client_secret must be set"),
				 errhint("A superuser sets them with ALTER SYSTEM (or in postgresql.conf) and reloads.")));
	if (store_secret_in_role_settings())
		ereport(WARNING,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("gmail_ingest.client_secret is stored in pg_db_role_setting, which every role can read"),
				 errdetail("It was set with ALTER DATABASE or ALTER ROLE ... SET."),
				 errhint("Set it with ALTER SYSTEM instead, remove it with ALTER DATABASE/ROLE ... RESET "
						 "gmail_ingest.client_secret, and rotate the secret in the Google Cloud console.")));
}

static GmailClient *
make_gmail(SyncState *s)
{
	GmailOptions o;

	memset(&o, 0, sizeof(o));
	o.api_base_url = gi_api_base_url;
	o.max_retries = gi_max_retries;
	o.quota_units_per_minute = gi_quota_limit();
	o.project_units_per_minute = gi_project_quota_units_per_minute;
	o.costs = gi_costs();
	o.max_response_mb = gi_max_response_mb;
	return gmail_client_create(s->api_http, &o, token_source, s);
}

static void
copy_stats(SyncState *s)
{
	const GmailStats *g = gmail_stats(s->gmail);

	s->counters.http_requests = g->http_requests;
	s->counters.quota_units = g->quota_units;
	s->counters.retries = g->retries + s->token_retries + s->object_retries;
	s->counters.bytes_downloaded = g->bytes_downloaded;
}

/*
 * The state of a new run of the mailbox, locked and checked, with its
 * sync_runs row and sync.started event written.
 */
static SyncState *
begin_run(int64 mailbox_id, int32 days, bool force_full, int32 backfill_batch)
{
	SyncState  *s = palloc0(sizeof(SyncState));

	s->days = days;
	s->force_full = backfill_batch > 0 || force_full;
	s->backfill_batch = backfill_batch;
	s->store_raw = gi_store_raw;
	s->max_concurrency = gi_max_concurrency;
	s->use_s3 = gi_blob_store == BLOB_STORE_S3;
	if (s->use_s3)
		settings_s3_config(&s->s3, gi_max_retries);

	if (!store_load_mailbox(mailbox_id, &s->mb))
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("mailbox " INT64_FORMAT " does not exist", mailbox_id)));
	if (!store_mailbox_is_local(mailbox_id))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("mailbox " INT64_FORMAT " is stored on another node of the Citus cluster", mailbox_id),
				 errdetail("A sync runs on the node holding the mailbox, where its sync lock is."),
				 errhint("Call it as SELECT gmail_ingest.gmail_sync(%s, ...) outside a transaction block, so Citus runs it there.",
						 psprintf(INT64_FORMAT, mailbox_id))));
	lock_mailbox(mailbox_id);
	check_mailbox_ready(&s->mb);
	store_repair_sequences();

	s->mode = (s->mb.has_history && !s->force_full) ? "incremental" : "full";
	s->run_id = store_start_run(mailbox_id, s->mode, s->days, s->mb.has_history, s->mb.history_id);
	store_ledger(s->run_id, mailbox_id, "sync.started", 0, NULL,
				 psprintf("{\"mode\":\"%s\",\"window_days\":%d}", s->mode, s->days));
	return s;
}

/*
 * A remote failure in the run's row and ledger, then raised again
 * (raise_on_failure) or reported as a WARNING.
 */
static void
record_failure(SyncState *s, ErrorData *failure, RemoteFailure kind, TimestampTz retry_after,
			   bool may_raise)
{
	int64		mailbox_id = s->mb.id;
	char	   *error = failure->detail
		? psprintf("%s: %s", failure->message, failure->detail)
		: pstrdup(failure->message);

	if (kind == RF_REVOKED)
		store_set_auth_state(mailbox_id, "reauthorize");
	else if (kind == RF_DELEGATION)
		store_set_auth_state(mailbox_id, "delegation_denied");
	store_finish_run(mailbox_id, s->run_id, s->mode, "failed", error,
					 false, 0, NULL, &s->counters);
	/* retry_after: when the server said to try again, for a scheduler's backoff */
	store_ledger(s->run_id, mailbox_id, "sync.failed", 0, NULL,
				 retry_after != 0
				 ? psprintf("{\"sqlstate\":\"%s\",\"kind\":\"%s\",\"retry_after\":\"%s\"}",
							unpack_sql_state(failure->sqlerrcode), remote_failure_name(kind),
							retry_time_text(retry_after))
				 : psprintf("{\"sqlstate\":\"%s\",\"kind\":\"%s\"}",
							unpack_sql_state(failure->sqlerrcode), remote_failure_name(kind)));
	if (may_raise && gi_raise_on_failure)
		ReThrowError(failure);
	ereport(WARNING,
			(errcode(failure->sqlerrcode),
			 errmsg("gmail_sync of mailbox " INT64_FORMAT " failed: %s", mailbox_id,
					failure->message),
			 failure->detail ? errdetail_internal("%s", failure->detail) : 0,
			 failure->hint ? errhint("%s", failure->hint) : 0));
}

static void
record_success(SyncState *s)
{
	store_finish_run(s->mb.id, s->run_id, s->mode, "succeeded", NULL,
					 s->has_new_history, s->new_history_id,
					 s->fell_back ? "history_expired" : NULL, &s->counters);
	store_ledger(s->run_id, s->mb.id, "sync.completed", 0, NULL,
				 psprintf("{\"mode\":\"%s\",\"fallback\":%s,\"messages_inserted\":" INT64_FORMAT
						  ",\"quota_units\":" INT64_FORMAT "}",
						  s->mode, s->fell_back ? "\"history_expired\"" : "null",
						  s->counters.messages_inserted, s->counters.quota_units));
}

/*
 * Every message raised while a run is under way, from any layer, says
 * which mailbox and run it is about (in the server log always; in psql
 * as its SHOW_CONTEXT setting says).
 */
static void
sync_error_context(void *arg)
{
	const SyncState *s = (const SyncState *) arg;

	errcontext("syncing mailbox " INT64_FORMAT ", run " INT64_FORMAT, s->mb.id, s->run_id);
}

/*
 * One sync, or one backfill step when backfill_batch > 0, in the caller's
 * transaction, with SPI connected by the caller; *out says how it ended.
 * A failure on Gmail's side is recorded (and raised only when may_raise
 * and gmail_ingest.raise_on_failure); anything else propagates.  The
 * arguments were checked by the callers.
 */
void
sync_mailbox(int64 mailbox_id, int32 days, bool force_full, int32 backfill_batch,
			 bool may_raise, SyncOutcome *out)
{
	SyncState  *s;
	ErrorContextCallback errcallback;
	MemoryContext caller_cxt = CurrentMemoryContext;
	MemoryContext sync_cxt;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile failure = NULL;
	volatile RemoteFailure failure_kind = RF_NONE;
	volatile TimestampTz retry_after = 0;

	store_check_schema_version();

	/*
	 * Everything the sync allocates lives here; deleting it (or the abort of
	 * the transaction) frees the libcurl handles through their callbacks.
	 */
	sync_cxt = AllocSetContextCreate(CurTransactionContext, "gmail_sync", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(sync_cxt);
	s = begin_run(mailbox_id, days, force_full, backfill_batch);
	errcallback.callback = sync_error_context;
	errcallback.arg = s;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	/* object-store uploads get slots of their own: Gmail's limit is Gmail's */
	s->api_http = settings_http_client(sync_cxt, gi_max_concurrency, s->use_s3 ? gi_max_concurrency : 0, true);
	s->token_http = settings_http_client(sync_cxt, 1, 0, true);
	s->gmail = make_gmail(s);
	s->item_cxt = AllocSetContextCreate(sync_cxt, "gmail_sync item", ALLOCSET_DEFAULT_SIZES);

	remote_failure_clear();
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(sync_cxt);
	PG_TRY();
	{
		sync_execute(s);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(sync_cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		RemoteFailure kind;
		TimestampTz retry_at;

		MemoryContextSwitchTo(sync_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(sync_cxt);
		CurrentResourceOwner = owner;

		/* Only Gmail-side failures are recorded; cancels and bugs go on up. */
		kind = remote_failure_take(&retry_at);
		if (kind == RF_NONE ||
			edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
			ReThrowError(edata);
		failure_kind = kind;
		retry_after = retry_at;
		failure = edata;
	}
	PG_END_TRY();

	copy_stats(s);
	memset(out, 0, sizeof(*out));
	out->run_id = s->run_id;
	if (failure != NULL)
	{
		out->failed = true;
		out->kind = failure_kind;
		out->retry_after = retry_after;
		record_failure(s, failure, failure_kind, retry_after, may_raise);
	}
	else
	{
		/* A backfill step completes the sync only when it moved history_id. */
		out->complete = backfill_batch == 0 || s->has_new_history;
		record_success(s);
	}

	/* Free the libcurl handles now rather than at transaction end. */
	http_client_destroy(s->api_http);
	http_client_destroy(s->token_http);

	error_context_stack = errcallback.previous;
	MemoryContextSwitchTo(caller_cxt);
	MemoryContextDelete(sync_cxt);
}

void
mailbox_gmail_call(int64 mailbox_id, GmailCall *call, MemoryContext cxt, int64 *quota_units)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	SyncState  *s = palloc0(sizeof(SyncState));

	if (!store_load_mailbox(mailbox_id, &s->mb))
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("mailbox " INT64_FORMAT " does not exist", mailbox_id)));
	check_mailbox_ready(&s->mb);
	s->api_http = settings_http_client(cxt, 1, 0, true);
	s->token_http = settings_http_client(cxt, 1, 0, true);
	s->gmail = make_gmail(s);
	gmail_run(s->gmail, call);
	*quota_units = gmail_stats(s->gmail)->quota_units;
	MemoryContextSwitchTo(old);
}

/* A sync or backfill step for SQL: its sync_runs row. */
static Datum
run_sync(int64 mailbox_id, int32 days, bool force_full, int32 backfill_batch)
{
	SyncOutcome out;
	Datum		result;
	int			guc_nest = store_mailbox_writes_commute();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	sync_mailbox(mailbox_id, days, force_full, backfill_batch, true, &out);
	result = store_run_row(mailbox_id, out.run_id);
	SPI_finish();
	store_mailbox_writes_done(guc_nest);
	PG_RETURN_DATUM(result);
}

/* Exported: the build hides every other symbol (see the Makefile). */
PGDLLEXPORT Datum gmail_sync(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum gmail_backfill_step(PG_FUNCTION_ARGS);

PG_FUNCTION_INFO_V1(gmail_sync);

Datum
gmail_sync(PG_FUNCTION_ARGS)
{
	check_arguments(fcinfo, "gmail_sync");
	return run_sync(PG_GETARG_INT64(0), PG_GETARG_INT32(1), PG_GETARG_BOOL(2), 0);
}

PG_FUNCTION_INFO_V1(gmail_backfill_step);

Datum
gmail_backfill_step(PG_FUNCTION_ARGS)
{
	int32		batch;

	/* A NULL batch must not turn the step into a plain gmail_sync. */
	check_arguments(fcinfo, "gmail_ingest._backfill_step");
	batch = PG_GETARG_INT32(2);
	if (batch < 1 || batch > 100000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be between 1 and 100000, got %d", batch)));
	return run_sync(PG_GETARG_INT64(0), PG_GETARG_INT32(1), true, batch);
}
