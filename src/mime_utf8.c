/*-------------------------------------------------------------------------
 * mime_utf8.c
 *	  The MIME parser's UTF-8 guarantee: the validity check, and the copies
 *	  that replace ill-formed sequences and NUL bytes by U+FFFD, through
 *	  which every string of the record passes.
 *-------------------------------------------------------------------------
 */
#include "mime_internal.h"

#include <stdlib.h>
#include <string.h>

/*
 * Length of the well-formed UTF-8 sequence at s (n bytes available), or 0
 * when it is ill-formed; then *bad is the length of its maximal subpart
 * (Unicode 3.9, "U+FFFD substitution of maximal subparts"), at least 1.
 */
static size_t
utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
	unsigned char c = s[0];
	size_t		need;
	unsigned char lo = 0x80,
				hi = 0xBF;
	size_t		i;

	if (c < 0x80)
		return 1;
	if (c < 0xC2 || c > 0xF4)
	{
		*bad = 1;
		return 0;
	}
	if (c < 0xE0)
		need = 1;
	else if (c < 0xF0)
	{
		need = 2;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	}
	else
	{
		need = 3;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	}
	for (i = 1; i <= need; i++)
	{
		if (i >= n || s[i] < lo || s[i] > hi)
		{
			*bad = i;
			return 0;
		}
		lo = 0x80;
		hi = 0xBF;
	}
	return need + 1;
}

/* True if s[0..len) is valid UTF-8 without NUL bytes. */
bool
mp_utf8_is_clean(const unsigned char *s, size_t len)
{
	size_t		i = 0;
	size_t		bad;

	while (i < len)
	{
		size_t		k;

		if (s[i] >= 0x01 && s[i] < 0x80)
		{
			i++;
			continue;
		}
		if (s[i] == 0)
			return false;
		k = utf8_seq(s + i, len - i, &bad);
		if (k == 0)
			return false;
		i += k;
	}
	return true;
}

/*
 * Copy s[0..len) to out (if not NULL), replacing ill-formed sequences and NUL
 * bytes by U+FFFD.  Returns the output length (no terminator written).
 */
static size_t
utf8_clean_into(const unsigned char *s, size_t len, unsigned char *out)
{
	size_t		i = 0;
	size_t		o = 0;

	while (i < len)
	{
		size_t		k;
		size_t		bad = 1;

		if (s[i] >= 0x01 && s[i] < 0x80)
		{
			if (out)
				out[o] = s[i];
			o++;
			i++;
			continue;
		}
		k = (s[i] == 0) ? 0 : utf8_seq(s + i, len - i, &bad);
		if (k > 0)
		{
			if (out)
				memcpy(out + o, s + i, k);
			o += k;
			i += k;
		}
		else
		{
			if (out)
			{
				out[o] = 0xEF;
				out[o + 1] = 0xBF;
				out[o + 2] = 0xBD;
			}
			o += 3;
			i += bad;
		}
	}
	return o;
}

/* malloc'd clean UTF-8 copy of s[0..len); NULL only on OOM. */
char *
mp_utf8_dup_len(parse_ctx *ctx, const char *s, size_t len)
{
	size_t		n;
	char	   *out;

	if (s == NULL)
		len = 0;
	n = utf8_clean_into((const unsigned char *) s, len, NULL);
	out = malloc(n + 1);
	if (out == NULL)
	{
		ctx->oom = true;
		return NULL;
	}
	utf8_clean_into((const unsigned char *) s, len, (unsigned char *) out);
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
