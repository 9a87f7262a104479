/*-------------------------------------------------------------------------
 * sha256_hex.h
 *	  Lower-case hex SHA-256 of a buffer (OpenSSL one-shot EVP_Digest).
 *
 * No PostgreSQL header: usable from the standalone MIME parser and tests.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_SHA256_HEX_H
#define GMAIL_INGEST_SHA256_HEX_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Writes 64 lower-case hex digits and a NUL into out.  data may be NULL when
 * len is 0 (the digest of the empty string).  Returns false only if OpenSSL
 * failed (out is then set to the empty string).
 */
extern bool sha256_hex(const void *data, size_t len, char out[65]);

#endif
