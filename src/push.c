/*-------------------------------------------------------------------------
 * push.c
 *	  Push (SPEC 7c): watch_mailbox / unwatch_mailbox (Gmail users.watch
 *	  and users.stop), the two steps of the run_push listener (_push_pull:
 *	  pull the Pub/Sub subscription and make each notified mailbox due;
 *	  _push_ack: acknowledge what the caller committed), the watch renewal
 *	  of a fleet turn, and the gmail_ingest.pubsub_* settings.
 *
 * At-least-once, in this order: a notification is acknowledged only after
 * the transaction that made its mailbox due has committed (the procedure
 * commits between the two steps), so a listener killed in between loses
 * nothing: Pub/Sub redelivers, and a redelivered notification is stale or
 * makes the mailbox due once more, harmlessly.  A notification only makes
 * a mailbox due; the sync lists history from the mailbox's stored history
 * id, never from the notification's (Gmail is already there).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "gmail_api.h"
#include "gmail_ingest.h"
#include "http.h"
#include "oauth.h"
#include "pubsub.h"
#include "push.h"
#include "remote_error.h"
#include "service_account.h"
#include "settings.h"
#include "store.h"

#define PUBSUB_SCOPE "https://www.googleapis.com/auth/pubsub"

/* Gmail asks for a renewal at least every 7 days; we renew when 6 remain. */
#define RENEW_SQL_WHEN "m.watch_expires_at < pg_catalog.now() + interval '6 days'"

/* A failed renewal is tried again after this long, not on every turn. */
#define RENEW_RETRY_SQL "interval '1 hour'"

/* Refresh the Pub/Sub token a minute before it expires. */
#define TOKEN_MARGIN_MS 60000

static char *gi_pubsub_subscription = NULL;
static char *gi_pubsub_base_url = NULL;
static char *gi_pubsub_service_account = NULL;
static int	gi_pubsub_max_messages = 100;

PGDLLEXPORT Datum gmail_watch_mailbox(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum gmail_unwatch_mailbox(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum gmail_push_pull(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum gmail_push_ack(PG_FUNCTION_ARGS);

/* ---- settings ---- */

static bool
check_subscription(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;			/* push off */
	if (!pubsub_name_valid(*newval, "subscriptions"))
	{
		GUC_check_errdetail("A subscription is named projects/PROJECT/subscriptions/NAME.");
		return false;
	}
	return true;
}

void
push_settings_define(void)
{
	DefineCustomStringVariable("gmail_ingest.pubsub_subscription",
							   "Cloud Pub/Sub pull subscription of Gmail's notifications (projects/P/subscriptions/S); empty = push off.",
							   NULL, &gi_pubsub_subscription, "",
							   PGC_SUSET, 0, check_subscription, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.pubsub_base_url",
							   "Base URL of the Cloud Pub/Sub REST API.",
							   "Superuser-only: the service account's token is sent there. http:// only for loopback hosts.",
							   &gi_pubsub_base_url, "https://pubsub.googleapis.com",
							   PGC_SUSET, 0, settings_check_url, NULL, NULL);
	DefineCustomStringVariable("gmail_ingest.pubsub_service_account",
							   "client_email of the registered service account run_push pulls the subscription as.",
							   "It needs the Pub/Sub Subscriber role on the subscription.",
							   &gi_pubsub_service_account, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("gmail_ingest.pubsub_max_messages",
							"Notifications run_push asks for in one pull.",
							NULL, &gi_pubsub_max_messages, 100, 1, PUBSUB_MAX_MESSAGES,
							PGC_SUSET, 0, NULL, NULL, NULL);
}

/* ---- helpers ---- */

static void
spi_check(int rc, int expected, const char *what)
{
	if (rc != expected)
		elog(ERROR, "%s failed: %s", what, SPI_result_code_string(rc));
}

static void
require_mailbox_id(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("mailbox_id must not be null")));
}

/* users.watch on the mailbox's behalf; the expiration, in epoch ms. */
static int64
call_watch(int64 mailbox_id, const char *topic, int64 *units)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "gmail_ingest watch",
											  ALLOCSET_DEFAULT_SIZES);
	GmailCall	call;
	int64		expiration;

	memset(&call, 0, sizeof(call));
	call.method = topic ? GM_WATCH : GM_STOP;
	call.topic = topic;
	mailbox_gmail_call(mailbox_id, &call, cxt, units);
	expiration = call.expiration_ms;
	MemoryContextDelete(cxt);
	return expiration;
}

static TimestampTz
epoch_ms_to_timestamptz(int64 ms)
{
	return (TimestampTz) ((ms - (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000) * 1000);
}

/* Store a watch (topic NULL: none) and clear any renewal failure. */
static void
store_watch(int64 mailbox_id, const char *topic, TimestampTz expires)
{
	Oid			types[3] = {INT8OID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[3];
	char		nulls[3] = {' ', topic ? ' ' : 'n', topic ? ' ' : 'n'};

	values[0] = Int64GetDatum(mailbox_id);
	values[1] = topic ? CStringGetTextDatum(topic) : (Datum) 0;
	values[2] = TimestampTzGetDatum(expires);
	spi_check(SPI_execute_with_args("UPDATE gmail_ingest.mailboxes m"
									"   SET watch_topic = $2, watch_expires_at = $3,"
									"       watch_attempted_at = pg_catalog.now(), watch_error = NULL"
									" WHERE m.id = $1",
									3, types, values, nulls, false, 0),
			  SPI_OK_UPDATE, "storing the mailbox's watch");
}

/* ---- watch_mailbox, unwatch_mailbox ---- */

PG_FUNCTION_INFO_V1(gmail_watch_mailbox);

/*
 * users.watch with the topic and no label filter (every change is
 * published); stores the topic and the expiration and returns it.  A
 * refusal (no such topic, no publish grant for Gmail's push account) is
 * an ERROR here: the caller is setting push up and must fix it.
 */
Datum
gmail_watch_mailbox(PG_FUNCTION_ARGS)
{
	int64		mailbox_id;
	char	   *topic;
	int64		units;
	int64		expiration_ms;
	TimestampTz expires;

	require_mailbox_id(fcinfo);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("topic must not be null")));
	mailbox_id = PG_GETARG_INT64(0);
	topic = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!pubsub_name_valid(topic, "topics"))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("topic must be named projects/PROJECT/topics/NAME"),
				 errdetail("Each part is 1 to 255 letters, digits or - . _ ~ %% +.")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	store_check_schema_version();
	expiration_ms = call_watch(mailbox_id, topic, &units);
	expires = epoch_ms_to_timestamptz(expiration_ms);
	store_watch(mailbox_id, topic, expires);
	SPI_finish();
	PG_RETURN_TIMESTAMPTZ(expires);
}

PG_FUNCTION_INFO_V1(gmail_unwatch_mailbox);

/* users.stop; the mailbox is synced by polling alone from then on. */
Datum
gmail_unwatch_mailbox(PG_FUNCTION_ARGS)
{
	int64		mailbox_id;
	int64		units;

	require_mailbox_id(fcinfo);
	mailbox_id = PG_GETARG_INT64(0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	store_check_schema_version();
	(void) call_watch(mailbox_id, NULL, &units);
	store_watch(mailbox_id, NULL, 0);
	SPI_finish();
	PG_RETURN_VOID();
}

/* ---- the fleet turn's part ---- */

/*
 * Renew the watch in a subtransaction; on a failure (any error but a
 * cancel) the mailbox's watch_error says what failed and a WARNING is
 * raised: the turn's sync is not undone by it.
 */
static void
renew_watch(int64 mailbox_id, const char *topic, int64 run_id)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	int64		units = 0;
	int64		expiration_ms = 0;
	ErrorData  *edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		expiration_ms = call_watch(mailbox_id, topic, &units);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		(void) remote_failure_take(NULL);
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED || edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
			ReThrowError(edata);
	}
	PG_END_TRY();

	if (edata == NULL)
	{
		Oid			types[3] = {INT8OID, INT8OID, INT8OID};
		Datum		values[3];

		store_watch(mailbox_id, topic, epoch_ms_to_timestamptz(expiration_ms));
		/* the renewal's units belong to the turn that spent them */
		values[0] = Int64GetDatum(run_id);
		values[1] = Int64GetDatum(units);
		values[2] = Int64GetDatum(mailbox_id);
		/* the mailbox routes the update to its shard on Citus */
		spi_check(SPI_execute_with_args("UPDATE gmail_ingest.sync_runs r"
										"   SET quota_units = r.quota_units + $2, http_requests = r.http_requests + 1"
										" WHERE r.id = $1 AND r.mailbox_id = $3",
										3, types, values, NULL, false, 0),
				  SPI_OK_UPDATE, "counting the watch renewal");
	}
	else
	{
		Oid			types[2] = {INT8OID, TEXTOID};
		Datum		values[2];
		char	   *error = edata->detail ? psprintf("%s: %s", edata->message, edata->detail)
			: pstrdup(edata->message);

		values[0] = Int64GetDatum(mailbox_id);
		values[1] = CStringGetTextDatum(error);
		spi_check(SPI_execute_with_args("UPDATE gmail_ingest.mailboxes m"
										"   SET watch_error = $2, watch_attempted_at = pg_catalog.now()"
										" WHERE m.id = $1",
										2, types, values, NULL, false, 0),
				  SPI_OK_UPDATE, "recording the failed watch renewal");
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("renewing the watch of mailbox " INT64_FORMAT " failed: %s", mailbox_id,
						edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
				 edata->hint
				 ? errhint("%s  The fleet tries again in an hour; until the watch is renewed, "
						   "polling alone keeps the mailbox fresh.", edata->hint)
				 : errhint("The fleet tries again in an hour; until the watch is renewed, "
						   "polling alone keeps the mailbox fresh.")));
	}
}

void
push_after_turn(int64 mailbox_id, int64 run_id)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1];
	Oid			now_types[2] = {INT8OID, TIMESTAMPTZOID};
	Datum		now_values[2];
	bool		isnull;
	bool		renew;
	char	   *topic = NULL;

	values[0] = Int64GetDatum(mailbox_id);

	/*
	 * A notification newer than the history id this turn reached came in
	 * while it ran (its change happened after the sync read the profile):
	 * due again at once.  Duplicates of older notifications never match.
	 */
	/* the time is a parameter: Citus refuses clock_timestamp() in an UPDATE */
	now_values[0] = values[0];
	now_values[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	spi_check(SPI_execute_with_args("UPDATE gmail_ingest.mailboxes m SET next_sync_at = $2"
									" WHERE m.id = $1 AND m.push_history_id > m.history_id"
									"   AND m.next_sync_at > $2",
									2, now_types, now_values, NULL, false, 0),
			  SPI_OK_UPDATE, "reading the mailbox's notifications");

	spi_check(SPI_execute_with_args("SELECT m.watch_topic FROM gmail_ingest.mailboxes m"
									" WHERE m.id = $1 AND m.watch_topic IS NOT NULL AND " RENEW_SQL_WHEN
									"   AND (m.watch_error IS NULL OR m.watch_attempted_at IS NULL"
									"        OR m.watch_attempted_at < pg_catalog.now() - " RENEW_RETRY_SQL ")",
									1, types, values, NULL, false, 1),
			  SPI_OK_SELECT, "reading the mailbox's watch");
	renew = SPI_processed == 1;
	if (renew)
		topic = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	if (renew)
		renew_watch(mailbox_id, topic, run_id);
}

/* ---- the listener's steps ---- */

/* The Pub/Sub token, kept across calls of this backend until it nears expiry. */
static char *pubsub_token_text = NULL;
static TimestampTz pubsub_token_expires = 0;
static char *pubsub_token_account = NULL;

typedef struct ListenerState
{
	HttpClient *token_http;
	int			token_retries;
} ListenerState;

static void
forget_token(void)
{
	if (pubsub_token_text)
	{
		explicit_bzero(pubsub_token_text, strlen(pubsub_token_text));
		pfree(pubsub_token_text);
	}
	if (pubsub_token_account)
		pfree(pubsub_token_account);
	pubsub_token_text = NULL;
	pubsub_token_account = NULL;
	pubsub_token_expires = 0;
}

/* A token of the service account named by gmail_ingest.pubsub_service_account. */
static OAuthToken
fetch_pubsub_token(ListenerState *st)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	bool		isnull;
	int64		id;

	values[0] = CStringGetTextDatum(gi_pubsub_service_account);
	spi_check(SPI_execute_with_args("SELECT a.id FROM gmail_ingest.service_accounts a"
									" WHERE pg_catalog.lower(a.client_email) = pg_catalog.lower($1)"
									" ORDER BY a.id LIMIT 2",
									1, types, values, NULL, true, 2),
			  SPI_OK_SELECT, "reading the Pub/Sub service account");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(SPI_processed == 0 ? ERRCODE_UNDEFINED_OBJECT : ERRCODE_AMBIGUOUS_PARAMETER),
				 errmsg(SPI_processed == 0
						? "gmail_ingest.pubsub_service_account names no registered service account"
						: "gmail_ingest.pubsub_service_account names a service account of several organisations"),
				 errdetail("It is \"%s\".", gi_pubsub_service_account),
				 errhint("Register its JSON key with gmail_ingest.add_service_account (once), "
						 "and give it the Pub/Sub Subscriber role on the subscription.")));
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	/* its own token, not a delegated one: no subject */
	return service_account_token(st->token_http, id, NULL, PUBSUB_SCOPE, &st->token_retries);
}

static const char *
pubsub_token(void *arg, bool force)
{
	ListenerState *st = (ListenerState *) arg;
	OAuthToken	t;

	if (!force && pubsub_token_text != NULL &&
		strcmp(pubsub_token_account, gi_pubsub_service_account) == 0 &&
		pubsub_token_expires > TimestampTzPlusMilliseconds(GetCurrentTimestamp(), TOKEN_MARGIN_MS))
		return pubsub_token_text;
	forget_token();
	t = fetch_pubsub_token(st);
	pubsub_token_text = MemoryContextStrdup(TopMemoryContext, t.access_token);
	pubsub_token_account = MemoryContextStrdup(TopMemoryContext, gi_pubsub_service_account);
	pubsub_token_expires = t.expires_at;
	explicit_bzero(t.access_token, strlen(t.access_token));
	return pubsub_token_text;
}

static PubsubClient *
make_pubsub(MemoryContext cxt, ListenerState *st)
{
	PubsubOptions o;

	if (gi_pubsub_subscription == NULL || gi_pubsub_subscription[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("gmail_ingest.pubsub_subscription is not set"),
				 errhint("A superuser sets it to the pull subscription of the Gmail topic, "
						 "projects/PROJECT/subscriptions/NAME, with ALTER SYSTEM and reloads.")));
	if (gi_pubsub_service_account == NULL || gi_pubsub_service_account[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("gmail_ingest.pubsub_service_account is not set"),
				 errhint("Set it to the client_email of a service account registered with "
						 "gmail_ingest.add_service_account that may pull the subscription.")));
	memset(&o, 0, sizeof(o));
	o.base_url = gi_pubsub_base_url;
	o.subscription = gi_pubsub_subscription;
	o.max_retries = gi_max_retries;
	o.max_response_mb = gi_max_response_mb;
	st->token_http = settings_http_client(cxt, 1, 0, false);
	return pubsub_client_create(settings_http_client(cxt, 1, 0, false), &o, pubsub_token, st);
}

/* How a pulled batch was classified; one row of push_batches. */
typedef struct BatchCounts
{
	int			received;
	int			due;			/* newer than the mailbox's history id */
	int			stale;			/* already synced past it */
	int			unknown;		/* no mailbox has the address */
	int			malformed;		/* not a Gmail notification */
} BatchCounts;

/*
 * Make due every mailbox a notification is newer for, in one statement
 * (coalesced per address: the newest id counts), and count the rest.
 * A backing-off, parked or paused mailbox stays so: only next_sync_at
 * moves, and the claim still checks the rest.  The row lock of a mailbox a
 * worker is finishing is waited for, and the condition read again after.
 */
static void
mark_due(Datum emails, Datum hids, BatchCounts *c)
{
	Oid			types[3] = {TEXTARRAYOID, INT8ARRAYOID, TIMESTAMPTZOID};
	Datum		values[3] = {emails, hids, TimestampTzGetDatum(GetCurrentTimestamp())};
	bool		isnull;

	/*
	 * The time is a parameter: Citus refuses clock_timestamp() in an
	 * UPDATE.  Unlike a fleet turn's, this write keeps Citus's default
	 * (an exclusive lock on the reference table's shard, not commuting):
	 * it may meet a turn's write of the same mailbox from another node,
	 * and the two would take the row's locks on the nodes in opposite
	 * orders.  Waiting for the turns that wrote first to commit avoids that
	 * distributed deadlock.
	 */
	spi_check(SPI_execute_with_args(
									"WITH n AS (SELECT pg_catalog.lower(u.e) AS email, u.h AS hid"
									"             FROM unnest($1::text[], $2::bigint[]) AS u(e, h)),"
									"c AS (SELECT n.email, n.hid,"
									"        EXISTS (SELECT 1 FROM gmail_ingest.mailboxes m"
									"                 WHERE pg_catalog.lower(m.provider_email) = n.email) AS known,"
									"        EXISTS (SELECT 1 FROM gmail_ingest.mailboxes m"
									"                 WHERE pg_catalog.lower(m.provider_email) = n.email"
									"                   AND (m.history_id IS NULL OR m.history_id < n.hid)) AS newer"
									"        FROM n),"
									"u AS (UPDATE gmail_ingest.mailboxes m"
									"         SET push_history_id = GREATEST(m.push_history_id, x.hid),"
									"             next_sync_at = LEAST(m.next_sync_at, $3)"
									"        FROM (SELECT c.email, max(c.hid) AS hid FROM c WHERE c.newer GROUP BY c.email"
									"               ORDER BY c.email) x"
									"       WHERE pg_catalog.lower(m.provider_email) = x.email"
									"         AND (m.history_id IS NULL OR m.history_id < x.hid)"
									"      RETURNING m.id)"
									"SELECT count(*) FILTER (WHERE c.newer)::int4,"
									"       count(*) FILTER (WHERE c.known AND NOT c.newer)::int4,"
									"       count(*) FILTER (WHERE NOT c.known)::int4,"
									"       (SELECT count(*) FROM u)::int4 FROM c",
									3, types, values, NULL, false, 0),
			  SPI_OK_SELECT, "making notified mailboxes due");
	c->due = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	c->stale = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	c->unknown = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	SPI_freetuptable(SPI_tuptable);
}

static int64
record_batch(const BatchCounts *c)
{
	Oid			types[5] = {INT4OID, INT4OID, INT4OID, INT4OID, INT4OID};
	Datum		values[5];
	bool		isnull;
	int64		id;

	values[0] = Int32GetDatum(c->received);
	values[1] = Int32GetDatum(c->due);
	values[2] = Int32GetDatum(c->stale);
	values[3] = Int32GetDatum(c->unknown);
	values[4] = Int32GetDatum(c->malformed);
	spi_check(SPI_execute_with_args("INSERT INTO gmail_ingest.push_batches"
									" (pulled_at, received, due, stale, unknown_address, malformed)"
									" VALUES (pg_catalog.clock_timestamp(), $1, $2, $3, $4, $5) RETURNING id",
									5, types, values, NULL, false, 0),
			  SPI_OK_INSERT_RETURNING, "recording the pulled notifications");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	/* a day is kept: fleet_status reads the last hour */
	spi_check(SPI_execute("DELETE FROM gmail_ingest.push_batches b"
						  " WHERE b.pulled_at < pg_catalog.now() - interval '1 day'",
						  false, 0),
			  SPI_OK_DELETE, "forgetting old notification counts");
	return id;
}

PG_FUNCTION_INFO_V1(gmail_push_pull);

/*
 * One pull: every notification classified (due, stale, unknown address,
 * malformed: a WARNING once, then acknowledged like the rest), the due
 * ones marked, the batch counted in push_batches.  Returns the batch's id
 * and every ack id, to acknowledge with _push_ack once this transaction
 * has committed.  An empty pull returns (NULL, '{}').
 */
Datum
gmail_push_pull(PG_FUNCTION_ARGS)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext cxt;
	TupleDesc	tupdesc;
	ListenerState st;
	PubsubClient *client;
	PubsubMessage *msgs;
	int			n;
	int			i;
	int			good = 0;
	Datum	   *ack_datums;
	Datum	   *email_datums;
	Datum	   *hid_datums;
	BatchCounts counts;
	int64		batch_id = 0;
	Datum		result[2];
	bool		nulls[2] = {false, false};
	HeapTuple	tuple;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "_push_pull must return a record");
	tupdesc = BlessTupleDesc(tupdesc);

	cxt = AllocSetContextCreate(caller, "gmail_ingest push", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	memset(&st, 0, sizeof(st));
	memset(&counts, 0, sizeof(counts));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	store_check_schema_version();
	client = make_pubsub(cxt, &st);
	n = pubsub_pull(client, gi_pubsub_max_messages, &msgs);

	ack_datums = palloc(sizeof(Datum) * (n + 1));
	email_datums = palloc(sizeof(Datum) * (n + 1));
	hid_datums = palloc(sizeof(Datum) * (n + 1));
	for (i = 0; i < n; i++)
	{
		char	   *email;
		int64		hid;
		const char *why = NULL;

		ack_datums[i] = CStringGetTextDatum(msgs[i].ack_id);
		if (pubsub_gmail_notification(msgs[i].data, &email, &hid, &why))
		{
			email_datums[good] = CStringGetTextDatum(email);
			hid_datums[good] = Int64GetDatum(hid);
			good++;
		}
		else
		{
			/* acknowledged all the same: it would only come back, as bad */
			counts.malformed++;
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("ignoring Pub/Sub message \"%s\" of %s: not a Gmail notification",
							msgs[i].message_id, gi_pubsub_subscription),
					 errdetail("%s.", why)));
		}
	}
	counts.received = n;
	if (good > 0)
		mark_due(PointerGetDatum(construct_array(email_datums, good, TEXTOID, -1, false, TYPALIGN_INT)),
				 PointerGetDatum(construct_array(hid_datums, good, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)),
				 &counts);
	if (n > 0)
		batch_id = record_batch(&counts);
	SPI_finish();

	MemoryContextSwitchTo(caller);
	nulls[0] = n == 0;
	result[0] = Int64GetDatum(batch_id);
	result[1] = PointerGetDatum(construct_array(ack_datums, n, TEXTOID, -1, false, TYPALIGN_INT));
	tuple = heap_form_tuple(tupdesc, result, nulls);
	/* the array copied the ack ids: the libcurl handles can go now */
	MemoryContextDelete(cxt);
	PG_RETURN_DATUM(HeapTupleGetDatum(tuple));
}

PG_FUNCTION_INFO_V1(gmail_push_ack);

/*
 * Acknowledge a committed batch's notifications and count them in its
 * push_batches row; returns how many.  Called after the COMMIT of the
 * transaction that made their mailboxes due, never before.
 */
Datum
gmail_push_ack(PG_FUNCTION_ARGS)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			n;
	int			i;
	char	  **ack_ids;
	ListenerState st;
	PubsubClient *client;
	MemoryContext cxt;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("ack_ids must not be null")));
	arr = PG_GETARG_ARRAYTYPE_P(1);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &elem_nulls, &n);
	if (n == 0)
		PG_RETURN_INT32(0);
	ack_ids = palloc(sizeof(char *) * n);
	for (i = 0; i < n; i++)
	{
		if (elem_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("ack_ids must not contain nulls")));
		ack_ids[i] = TextDatumGetCString(elems[i]);
	}

	cxt = AllocSetContextCreate(CurrentMemoryContext, "gmail_ingest push ack", ALLOCSET_DEFAULT_SIZES);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	memset(&st, 0, sizeof(st));
	client = make_pubsub(cxt, &st);
	pubsub_acknowledge(client, ack_ids, n);
	if (!PG_ARGISNULL(0))
	{
		Oid			types[2] = {INT8OID, INT4OID};
		Datum		values[2];

		values[0] = PG_GETARG_DATUM(0);
		values[1] = Int32GetDatum(n);
		spi_check(SPI_execute_with_args("UPDATE gmail_ingest.push_batches b"
										"   SET acknowledged = b.acknowledged + $2, acked_at = pg_catalog.now()"
										" WHERE b.id = $1",
										2, types, values, NULL, false, 0),
				  SPI_OK_UPDATE, "counting the acknowledged notifications");
	}
	SPI_finish();
	MemoryContextDelete(cxt);
	PG_RETURN_INT32(n);
}
