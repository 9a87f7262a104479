/*-------------------------------------------------------------------------
 * retry_policy.c
 *	  Backoff shared by the Gmail API client and the OAuth token exchange.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/pg_prng.h"

#include "retry_policy.h"

#define MAX_BACKOFF_MS 32000

long
retry_wait_ms(int attempt, long hint_ms)
{
	long		base = 1000L << Min(Max(attempt, 1) - 1, 6);
	long		wait = Min(base + (long) (pg_prng_double(&pg_global_prng_state) * 1000), MAX_BACKOFF_MS);

	return hint_ms > wait ? hint_ms : wait;
}
