/*-------------------------------------------------------------------------
 * remote_error.c
 *	  The one source of the remote-failure SQLSTATEs, and the pending
 *	  failure that gmail_sync's catch reads.
 *
 * Every remote failure raises through remote_failure(kind, ...), which takes
 * its SQLSTATE from the table below, so code, README and tests agree on one
 * mapping.  The classes are chosen not to collide with errors PostgreSQL
 * raises itself for other reasons: a caller catching insufficient_privilege
 * must not mistake Gmail's missing scope for a missing GRANT, hence 28000
 * for every refusal of the grant, not 42501.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "remote_error.h"

static const struct
{
	int			sqlstate;
	const char *name;
}			remote_failure_table[RF__COUNT] =
{
	[RF_NONE] = {ERRCODE_INTERNAL_ERROR, "none"},
	[RF_NETWORK] = {ERRCODE_CONNECTION_FAILURE, "network"},	/* 08006 */
	[RF_HTTP] = {ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "http"},	/* 38000 */
	[RF_PROTOCOL] = {ERRCODE_PROTOCOL_VIOLATION, "protocol"},	/* 08P01 */
	[RF_RATE_LIMIT] = {ERRCODE_CONFIGURATION_LIMIT_EXCEEDED, "rate_limit"},	/* 53400 */
	[RF_AUTH] = {ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION, "auth"},	/* 28000 */
	[RF_PERMISSION] = {ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION, "permission"},	/* 28000 */
	[RF_REVOKED] = {ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION, "revoked"},	/* 28000 */
	[RF_CONFIG] = {ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION, "config"},	/* 28000 */
	[RF_DELEGATION] = {ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION, "delegation_denied"},	/* 28000 */
};

/*
 * Set just before the ERROR is raised and read in gmail_sync's catch; a
 * backend runs one sync at a time, so process-wide state suffices.
 */
static RemoteFailure pending_kind = RF_NONE;
static TimestampTz pending_retry_after = 0;

int
remote_failure_sqlstate(RemoteFailure kind)
{
	if (kind <= RF_NONE || kind >= RF__COUNT)
		return ERRCODE_INTERNAL_ERROR;
	return remote_failure_table[kind].sqlstate;
}

const char *
remote_failure_name(RemoteFailure kind)
{
	if (kind <= RF_NONE || kind >= RF__COUNT)
		return "none";
	return remote_failure_table[kind].name;
}

void
remote_failure_mark(RemoteFailure kind)
{
	pending_kind = kind;
}

void
remote_failure_set_retry_after(TimestampTz when)
{
	pending_retry_after = when;
}

void
remote_failure_clear(void)
{
	pending_kind = RF_NONE;
	pending_retry_after = 0;
}

RemoteFailure
remote_failure_take(TimestampTz *retry_after)
{
	RemoteFailure kind = pending_kind;

	if (retry_after)
		*retry_after = kind != RF_NONE ? pending_retry_after : 0;
	remote_failure_clear();
	return kind;
}
