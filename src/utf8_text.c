/*-------------------------------------------------------------------------
 * utf8_text.c
 *	  UTF-8 validity, repair (U+FFFD) and clipping of network text.
 *-------------------------------------------------------------------------
 */
#include "utf8_text.h"

#include <string.h>

/*
 * Length of the well-formed sequence at s (n bytes available), or 0 when it
 * is ill-formed; then *bad is the length of its maximal subpart, at least 1.
 * Surrogates (ED A0..BF) and code points above U+10FFFF are ill-formed, as
 * PostgreSQL's own verifier says.
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

bool
utf8_text_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *) str;
	size_t		i = 0;
	size_t		bad;

	while (i < len)
	{
		size_t		k;

		/* The common case, ASCII, a byte at a time without a call. */
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

size_t
utf8_text_repair_into(const char *str, size_t len, char *out)
{
	const unsigned char *s = (const unsigned char *) str;
	size_t		i = 0;
	size_t		o = 0;

	while (i < len)
	{
		size_t		k;
		size_t		bad = 1;

		if (s[i] >= 0x01 && s[i] < 0x80)
		{
			if (out)
				out[o] = (char) s[i];
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
				memcpy(out + o, "\xEF\xBF\xBD", 3);
			o += 3;
			i += bad;
		}
	}
	return o;
}

size_t
utf8_text_clip(const char *str, size_t len, size_t limit)
{
	const unsigned char *s = (const unsigned char *) str;
	size_t		n;

	if (len <= limit)
		return len;
	/* Back off continuation bytes: the cut falls before a lead byte. */
	n = limit;
	while (n > 0 && (s[n] & 0xC0) == 0x80)
		n--;
	return n;
}
