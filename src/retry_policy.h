/*-------------------------------------------------------------------------
 * retry_policy.h
 *	  How long to wait before retrying a request Google may answer later.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_RETRY_POLICY_H
#define GMAIL_INGEST_RETRY_POLICY_H

/*
 * Truncated exponential backoff with jitter, as Gmail's guides ask: the
 * first retry at least 1 s after the error, doubling, at most 32 s; a
 * server hint (Retry-After, "Retry after <time>") in ms wins when longer.
 */
extern long retry_wait_ms(int attempt, long hint_ms);

#endif
