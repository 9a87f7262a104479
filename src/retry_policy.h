/*-------------------------------------------------------------------------
 * retry_policy.h
 *	  How long to wait before retrying a request Google may answer later.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_RETRY_POLICY_H
#define GMAIL_INGEST_RETRY_POLICY_H

#include "datatype/timestamp.h"

/*
 * The longest server hint a sync waits for.  A sync holds its transaction,
 * snapshot and the mailbox's sync lock while it waits, so a hint beyond
 * this (a spent daily quota says "Retry after" hours ahead) fails the run
 * at once and records the time instead.  Gmail's per-minute quota never
 * asks for more than a minute; 5 s more absorb the skew between Google's
 * clock and ours.
 */
#define RETRY_HINT_MAX_MS 65000L

/*
 * Truncated exponential backoff with jitter, as Gmail's guides ask: the
 * first retry at least 1 s after the error, doubling, at most 32 s; a
 * server hint (Retry-After, "Retry after <time>") in ms wins when longer.
 */
extern long retry_wait_ms(int attempt, long hint_ms);

/*
 * Gmail's "Retry after 2026-11-28T12:57:51.196Z" inside an error message:
 * the ms from now (0 when past), or -1 when the text holds none.
 */
extern long retry_hint_from_text(const char *text);

/*
 * The server's hint in ms, or -1 when it gave none: the later of a
 * Retry-After header (retry_after_secs, -1 when absent) and a "Retry after
 * <time>" inside the error's text (NULL when none).
 */
extern long retry_hint_ms(double retry_after_secs, const char *text);

/* A retry time as an ISO 8601 UTC text, e.g. 2026-11-28T12:57:51Z (palloc'd). */
extern char *retry_time_text(TimestampTz when);

#endif
