/*-------------------------------------------------------------------------
 * retry_policy.c
 *	  Backoff shared by the Gmail API client and the OAuth token exchange,
 *	  and the server's retry hints they both honour.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "common/pg_prng.h"
#include "utils/timestamp.h"

#include "retry_policy.h"

#define MAX_BACKOFF_MS 32000

long
retry_wait_ms(int attempt, long hint_ms)
{
	long		base = 1000L << Min(Max(attempt, 1) - 1, 6);
	long		wait = Min(base + (long) (pg_prng_double(&pg_global_prng_state) * 1000), MAX_BACKOFF_MS);

	return hint_ms > wait ? hint_ms : wait;
}

long
retry_hint_from_text(const char *text)
{
	const char *p = text ? strstr(text, "Retry after ") : NULL;
	struct tm	tm;
	int			y,
				mo,
				d,
				h,
				mi;
	double		sec;
	time_t		when;
	TimestampTz at;
	int64		delta_ms;

	if (p == NULL)
		return -1;
	if (sscanf(p + 12, "%d-%d-%dT%d:%d:%lf", &y, &mo, &d, &h, &mi, &sec) != 6)
		return -1;
	/* Out of any sane range: not a hint we can act on. */
	if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 ||
		h < 0 || h > 23 || mi < 0 || mi > 59 || !(sec >= 0 && sec < 61))
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = (int) sec;
	when = timegm(&tm);
	/* Against the current time to the microsecond: time() would add up to 1 s. */
	at = time_t_to_timestamptz((pg_time_t) when) + (int64) ((sec - (int) sec) * USECS_PER_SEC);
	delta_ms = (at - GetCurrentTimestamp()) / 1000;
	if (delta_ms < 0)
		return 0;
	/* At most a year, as the Retry-After header is clamped. */
	return (long) Min(delta_ms, INT64CONST(86400) * 365 * 1000);
}

long
retry_hint_ms(double retry_after_secs, const char *text)
{
	long		hint_ms = -1;
	long		from_text = retry_hint_from_text(text);

	if (retry_after_secs >= 0)
		hint_ms = (long) (retry_after_secs * 1000);
	return from_text > hint_ms ? from_text : hint_ms;
}

char *
retry_time_text(TimestampTz when)
{
	pg_time_t	t = timestamptz_to_time_t(when);
	time_t		tt = (time_t) t;
	struct tm	tm;
	char		buf[64];

	if (gmtime_r(&tt, &tm) == NULL ||
		strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		return pstrdup("unknown");
	return pstrdup(buf);
}
