/*-------------------------------------------------------------------------
 * utf8_text.h
 *	  UTF-8 checks and repair for text that comes from the network.
 *
 * PostgreSQL's JSON lexer copies raw bytes without checking their
 * encoding, and a text column holding invalid UTF-8 makes a pg_dump that
 * cannot be restored.  Every string from Gmail or Google OAuth goes through
 * here before it reaches a text column, a WARNING or an error.  The repair
 * rule is the MIME parser's: each maximal ill-formed subpart (Unicode 3.9)
 * and each NUL byte becomes U+FFFD.
 *
 * No PostgreSQL header: plain C over byte buffers.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_UTF8_TEXT_H
#define GMAIL_INGEST_UTF8_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* True if s[0..len) is well-formed UTF-8 without NUL bytes. */
extern bool utf8_text_valid(const char *s, size_t len);

/*
 * Writes the repair of s[0..len) to out, which has room for
 * utf8_text_repaired_len(s, len) bytes; returns the bytes written (no
 * terminator).  out may be NULL to measure.
 */
extern size_t utf8_text_repair_into(const char *s, size_t len, char *out);

#define utf8_text_repaired_len(s, len) utf8_text_repair_into((s), (len), NULL)

/*
 * The longest prefix of valid UTF-8 s[0..len) that is at most limit bytes
 * and ends on a character boundary.
 */
extern size_t utf8_text_clip(const char *s, size_t len, size_t limit);

#endif
