/*-------------------------------------------------------------------------
 * mime_utf8.c
 *	  The MIME parser's UTF-8 guarantee: the validity check, and the copies
 *	  that replace ill-formed sequences and NUL bytes by U+FFFD, through
 *	  which every string of the record passes.
 *-------------------------------------------------------------------------
 */
#include "mime_internal.h"
#include "utf8_text.h"

#include <stdlib.h>
#include <string.h>

/*
 * The checks and the U+FFFD repair rule are utf8_text.c's, shared with
 * the text that comes from Gmail's JSON: one rule for every string stored.
 */
bool
mp_utf8_is_clean(const unsigned char *s, size_t len)
{
	return utf8_text_valid((const char *) s, len);
}

/* malloc'd clean UTF-8 copy of s[0..len); NULL only on OOM. */
char *
mp_utf8_dup_len(parse_ctx *ctx, const char *s, size_t len)
{
	size_t		n;
	char	   *out;

	if (s == NULL)
		len = 0;
	n = utf8_text_repaired_len(s, len);
	out = malloc(n + 1);
	if (out == NULL)
	{
		ctx->oom = true;
		return NULL;
	}
	utf8_text_repair_into(s, len, out);
	out[n] = '\0';
	return out;
}

/* Clean UTF-8 copy of a C string; NULL stays NULL. */
char *
mp_utf8_dup(parse_ctx *ctx, const char *s)
{
	if (s == NULL)
		return NULL;
	return mp_utf8_dup_len(ctx, s, strlen(s));
}

/*
 * Turn a malloc'd buffer of len bytes (with room for at least one more byte)
 * into a clean NUL-terminated UTF-8 string, reusing the buffer when it is
 * already clean.  Frees buf.  NULL on OOM.
 */
char *
mp_utf8_finish(parse_ctx *ctx, unsigned char *buf, size_t len)
{
	char	   *out;

	if (mp_utf8_is_clean(buf, len))
	{
		buf[len] = '\0';
		return (char *) buf;
	}
	out = mp_utf8_dup_len(ctx, (const char *) buf, len);
	free(buf);
	return out;
}
