/*-------------------------------------------------------------------------
 * mime_charset.c
 *	  Text in a declared (or sniffed) charset -> clean UTF-8: charset labels
 *	  and their aliases, iconv with U+FFFD for undecodable input, our own
 *	  windows-1252 table, the <meta charset> of HTML bodies, and the iconv
 *	  converters kept open for the life of the process.
 *-------------------------------------------------------------------------
 */
#include "mime_internal.h"

#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * glibc loads a gconv module at iconv_open() and may unload it again at the
 * last iconv_close(); GMime 3.2 opens and closes a converter for every
 * encoded word, so every Japanese or Cyrillic subject would cost a dlopen().
 * So each charset we meet (in an encoded word or a text body) gets one
 * converter that stays open for the life of the process, which keeps its
 * module loaded: at most MP_MAX_PINNED of them, some 35 kB each.  Not
 * thread-safe, like the rest of this file's callers (one backend, one
 * thread).
 */
#define MP_MAX_PINNED		32
static iconv_t volatile pinned_cd[MP_MAX_PINNED];
static char pinned_name[MP_MAX_PINNED][48];
static int	n_pinned = 0;

static void
pin_charset(const char *name)
{
	static const char *const builtin[] = {
		"utf-8", "utf8", "us-ascii", "ascii", "ansi_x3.4-1968", "iso-8859-1",
		"iso8859-1", "iso_8859-1", "latin1", "utf-16", "utf-16le", "utf-16be",
		"utf-32", "ucs-2", "ucs-4"
	};
	size_t		i;
	iconv_t		cd;

	if (name == NULL || *name == '\0' || n_pinned >= MP_MAX_PINNED ||
		strlen(name) >= sizeof(pinned_name[0]))
		return;
	for (i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
		if (g_ascii_strcasecmp(name, builtin[i]) == 0)
			return;
	for (i = 0; i < (size_t) n_pinned; i++)
		if (g_ascii_strcasecmp(name, pinned_name[i]) == 0)
			return;
	cd = iconv_open("UTF-8", name);
	if (cd == (iconv_t) -1)
		return;
	pinned_cd[n_pinned] = cd;
	strcpy(pinned_name[n_pinned], name);
	n_pinned++;
}

/* Pin the converter GMime will use for an encoded word's charset. */
void
mp_pin_word_charset(const char *cs, size_t len)
{
	char		name[48];
	size_t		i;

	for (i = 0; i < len && cs[i] != '*'; i++)
	{
		if (i + 1 >= sizeof(name) ||
			!(g_ascii_isalnum(cs[i]) || cs[i] == '-' || cs[i] == '_' ||
			  cs[i] == '.' || cs[i] == ':' || cs[i] == '+'))
			return;
		name[i] = cs[i];
	}
	name[i] = '\0';
	pin_charset(g_mime_charset_iconv_name(name));
}

/* windows-1252 0x80..0x9F; undefined bytes map to the C1 controls (WHATWG) */
static const unsigned short cp1252_high[32] = {
	0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
	0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D, 0x017D, 0x008F,
	0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
	0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178
};

/* windows-1252 -> clean UTF-8 (total: every byte maps).  Frees nothing. */
static char *
cp1252_to_utf8(parse_ctx *ctx, const unsigned char *s, size_t len)
{
	size_t		n = 0;
	size_t		i;
	char	   *out;
	unsigned char *o;

	for (i = 0; i < len; i++)
	{
		unsigned int cp = s[i];

		if (cp >= 0x80 && cp < 0xA0)
			cp = cp1252_high[cp - 0x80];
		n += (cp == 0) ? 3 : (cp < 0x80) ? 1 : (cp < 0x800) ? 2 : 3;
	}
	out = malloc(n + 1);
	if (out == NULL)
	{
		ctx->oom = true;
		return NULL;
	}
	o = (unsigned char *) out;
	for (i = 0; i < len; i++)
	{
		unsigned int cp = s[i];

		if (cp >= 0x80 && cp < 0xA0)
			cp = cp1252_high[cp - 0x80];
		if (cp == 0)
			cp = 0xFFFD;
		if (cp < 0x80)
			*o++ = (unsigned char) cp;
		else if (cp < 0x800)
		{
			*o++ = (unsigned char) (0xC0 | (cp >> 6));
			*o++ = (unsigned char) (0x80 | (cp & 0x3F));
		}
		else
		{
			*o++ = (unsigned char) (0xE0 | (cp >> 12));
			*o++ = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
			*o++ = (unsigned char) (0x80 | (cp & 0x3F));
		}
	}
	*o = '\0';
	return out;
}

typedef enum
{
	CS_AUTO,					/* UTF-8 if it is valid, else windows-1252 */
	CS_UTF8,					/* UTF-8, invalid bytes -> U+FFFD */
	CS_CP1252,					/* our own table */
	CS_ICONV					/* iconv with the name in buf */
} cs_kind;

static const struct
{
	const char *alias;
	cs_kind		kind;
	const char *iconv;
}			cs_aliases[] =
{
	/* UTF-8 */
	{"utf-8", CS_UTF8, NULL},
	{"utf8", CS_UTF8, NULL},
	{"unicode-1-1-utf-8", CS_UTF8, NULL},
	{"x-unicode20utf8", CS_UTF8, NULL},
	/* "no idea": ASCII labels are routinely wrong; try UTF-8 first */
	{"us-ascii", CS_AUTO, NULL},
	{"ascii", CS_AUTO, NULL},
	{"ansi_x3.4-1968", CS_AUTO, NULL},
	{"iso646-us", CS_AUTO, NULL},
	{"us", CS_AUTO, NULL},
	{"unknown", CS_AUTO, NULL},
	{"x-unknown", CS_AUTO, NULL},
	{"unknown-8bit", CS_AUTO, NULL},
	{"x-user-defined", CS_AUTO, NULL},
	{"default", CS_AUTO, NULL},
	{"none", CS_AUTO, NULL},
	/* Latin-1 labels decode as windows-1252 (as browsers and readers do) */
	{"iso-8859-1", CS_CP1252, NULL},
	{"iso8859-1", CS_CP1252, NULL},
	{"iso_8859-1", CS_CP1252, NULL},
	{"iso_8859-1:1987", CS_CP1252, NULL},
	{"iso8859_1", CS_CP1252, NULL},
	{"latin1", CS_CP1252, NULL},
	{"latin-1", CS_CP1252, NULL},
	{"l1", CS_CP1252, NULL},
	{"cp819", CS_CP1252, NULL},
	{"ibm819", CS_CP1252, NULL},
	{"iso-ir-100", CS_CP1252, NULL},
	{"csisolatin1", CS_CP1252, NULL},
	{"windows-1252", CS_CP1252, NULL},
	{"cp1252", CS_CP1252, NULL},
	{"x-cp1252", CS_CP1252, NULL},
	/* supersets that are what senders actually mean */
	{"gb2312", CS_ICONV, "GB18030"},
	{"gb_2312-80", CS_ICONV, "GB18030"},
	{"gb2312-80", CS_ICONV, "GB18030"},
	{"gb-2312", CS_ICONV, "GB18030"},
	{"csgb2312", CS_ICONV, "GB18030"},
	{"euc-cn", CS_ICONV, "GB18030"},
	{"x-euc-cn", CS_ICONV, "GB18030"},
	{"gbk", CS_ICONV, "GB18030"},
	{"x-gbk", CS_ICONV, "GB18030"},
	{"cp936", CS_ICONV, "GB18030"},
	{"ms936", CS_ICONV, "GB18030"},
	{"windows-936", CS_ICONV, "GB18030"},
	{"chinese", CS_ICONV, "GB18030"},
	{"shift_jis", CS_ICONV, "CP932"},
	{"shift-jis", CS_ICONV, "CP932"},
	{"sjis", CS_ICONV, "CP932"},
	{"x-sjis", CS_ICONV, "CP932"},
	{"ms_kanji", CS_ICONV, "CP932"},
	{"csshiftjis", CS_ICONV, "CP932"},
	{"windows-31j", CS_ICONV, "CP932"},
	{"cp932", CS_ICONV, "CP932"},
	{"ms932", CS_ICONV, "CP932"},
	{"euc-kr", CS_ICONV, "CP949"},
	{"cseuckr", CS_ICONV, "CP949"},
	{"ks_c_5601-1987", CS_ICONV, "CP949"},
	{"ks_c_5601-1989", CS_ICONV, "CP949"},
	{"ks_c_5601", CS_ICONV, "CP949"},
	{"ksc5601", CS_ICONV, "CP949"},
	{"ksc_5601", CS_ICONV, "CP949"},
	{"ksc-5601", CS_ICONV, "CP949"},
	{"5601", CS_ICONV, "CP949"},
	{"korean", CS_ICONV, "CP949"},
	{"iso-ir-149", CS_ICONV, "CP949"},
	{"windows-949", CS_ICONV, "CP949"},
	{"cp949", CS_ICONV, "CP949"},
	{"uhc", CS_ICONV, "CP949"},
	{"big5", CS_ICONV, "BIG5-HKSCS"},
	{"big-5", CS_ICONV, "BIG5-HKSCS"},
	{"cn-big5", CS_ICONV, "BIG5-HKSCS"},
	{"csbig5", CS_ICONV, "BIG5-HKSCS"},
	{"x-x-big5", CS_ICONV, "BIG5-HKSCS"},
	{"x-big5", CS_ICONV, "BIG5-HKSCS"},
	{"big5-hkscs", CS_ICONV, "BIG5-HKSCS"},
	{"iso-8859-9", CS_ICONV, "CP1254"},
	{"iso8859-9", CS_ICONV, "CP1254"},
	{"iso_8859-9", CS_ICONV, "CP1254"},
	{"latin5", CS_ICONV, "CP1254"},
	{"tis-620", CS_ICONV, "CP874"},
	{"iso-8859-11", CS_ICONV, "CP874"},
	{"dos-874", CS_ICONV, "CP874"},
	{"iso-2022-jp", CS_ICONV, "ISO-2022-JP-3"},
	{"csiso2022jp", CS_ICONV, "ISO-2022-JP-3"},
	{"iso-8859-8-i", CS_ICONV, "ISO-8859-8"},
	{"iso-8859-8-e", CS_ICONV, "ISO-8859-8"},
	{"iso-8859-6-i", CS_ICONV, "ISO-8859-6"},
	{"iso-8859-6-e", CS_ICONV, "ISO-8859-6"},
	{"x-mac-roman", CS_ICONV, "MACINTOSH"},
	{"macintosh", CS_ICONV, "MACINTOSH"},
	{"mac", CS_ICONV, "MACINTOSH"},
};

/*
 * Resolve a charset label.  For CS_ICONV the iconv name is written to buf.
 * Labels with characters outside [A-Za-z0-9._:+-] (or too long) are not
 * handed to iconv_open at all.
 */
static cs_kind
charset_resolve(const char *label, char *buf, size_t bufsz)
{
	char		name[48];
	size_t		n = 0;
	size_t		i;
	const char *p;

	if (label == NULL)
		return CS_AUTO;
	p = label;
	while (*p == ' ' || *p == '\t' || *p == '"' || *p == '\'')
		p++;
	for (; *p && *p != '"' && *p != '\'' && *p != ' ' && *p != '\t'; p++)
	{
		char		c = *p;

		if (n + 1 >= sizeof(name))
			return CS_AUTO;
		if (c >= 'A' && c <= 'Z')
			c = (char) (c - 'A' + 'a');
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			  c == '-' || c == '_' || c == '.' || c == ':' || c == '+'))
			return CS_AUTO;
		name[n++] = c;
	}
	name[n] = '\0';
	if (n == 0)
		return CS_AUTO;

	for (i = 0; i < sizeof(cs_aliases) / sizeof(cs_aliases[0]); i++)
	{
		if (strcmp(name, cs_aliases[i].alias) == 0)
		{
			if (cs_aliases[i].kind == CS_ICONV)
				snprintf(buf, bufsz, "%s", cs_aliases[i].iconv);
			return cs_aliases[i].kind;
		}
	}
	/* "windows-125x" and friends are known to glibc under these names too */
	snprintf(buf, bufsz, "%s", name);
	return CS_ICONV;
}

/*
 * iconv conversion to UTF-8 with U+FFFD for undecodable input.  unit is the
 * input code unit size skipped on an invalid sequence (2 for UTF-16/UCS-2,
 * 4 for UTF-32/UCS-4, 1 otherwise).  Returns a malloc'd buffer with *outlen
 * bytes and room for a terminator, or NULL on OOM.
 */
static unsigned char *
iconv_to_utf8(parse_ctx *ctx, iconv_t cd, const unsigned char *in, size_t len,
			  size_t unit, size_t *outlen)
{
	size_t		cap = len + len / 2 + 64;
	unsigned char *out = malloc(cap);
	char	   *inp = (char *) in;
	size_t		inleft = len;
	char	   *outp;
	size_t		outleft;
	bool		flushing = false;

	if (out == NULL)
	{
		ctx->oom = true;
		return NULL;
	}
	outp = (char *) out;
	outleft = cap - 1;			/* keep room for a terminator */

	for (;;)
	{
		size_t		rc;

		if (outleft < 8)
			errno = E2BIG;		/* always keep room for a U+FFFD */
		else
		{
			if (!flushing)
				rc = iconv(cd, &inp, &inleft, &outp, &outleft);
			else
				rc = iconv(cd, NULL, NULL, &outp, &outleft);
			if (rc != (size_t) -1)
			{
				if (flushing || inleft == 0)
				{
					if (flushing)
						break;
					flushing = true;	/* emit any shift-state reset */
				}
				continue;
			}
		}
		/*
		 * iconv may stop at an invalid sequence with less than the room of a
		 * U+FFFD left: grow first, then come back to the replacement.
		 */
		if (errno == E2BIG || outleft < 8)
		{
			size_t		used = (size_t) ((unsigned char *) outp - out);
			int			saved = errno;
			unsigned char *n2 = realloc(out, cap * 2);

			if (n2 == NULL)
			{
				free(out);
				ctx->oom = true;
				return NULL;
			}
			out = n2;
			cap *= 2;
			outp = (char *) out + used;
			outleft = cap - used - 1;
			if (saved == E2BIG)
				continue;
			errno = saved;
		}
		if (flushing)
			break;
		/* EILSEQ, or EINVAL (truncated at the end): U+FFFD, then skip */
		memcpy(outp, "\xEF\xBF\xBD", 3);
		outp += 3;
		outleft -= 3;
		if (errno == EILSEQ && inleft > unit)
		{
			inp += unit;
			inleft -= unit;
		}
		else
		{
			inp += inleft;
			inleft = 0;
		}
		if (inleft == 0)
			flushing = true;
	}
	*outlen = (size_t) ((unsigned char *) outp - out);
	return out;
}

/*
 * Case-insensitive search for "<meta ... charset=NAME" in the first bytes of
 * an HTML body; writes NAME to buf.
 */
static bool
sniff_html_charset(const unsigned char *s, size_t len, char *buf, size_t bufsz)
{
	size_t		lim = len < 4096 ? len : 4096;
	size_t		i;

	for (i = 0; i + 5 < lim; i++)
	{
		size_t		j;

		if (s[i] != '<' || g_ascii_strncasecmp((const char *) s + i + 1, "meta", 4) != 0)
			continue;
		for (j = i + 5; j + 7 < lim && s[j] != '>'; j++)
		{
			size_t		k;
			size_t		n = 0;

			if (g_ascii_strncasecmp((const char *) s + j, "charset", 7) != 0)
				continue;
			k = j + 7;
			while (k < lim && (s[k] == ' ' || s[k] == '\t'))
				k++;
			if (k >= lim || s[k] != '=')
				continue;
			k++;
			while (k < lim && (s[k] == ' ' || s[k] == '\t' || s[k] == '"' || s[k] == '\''))
				k++;
			while (k < lim && n + 1 < bufsz &&
				   (g_ascii_isalnum(s[k]) || s[k] == '-' || s[k] == '_' ||
					s[k] == '.' || s[k] == ':'))
				buf[n++] = (char) s[k++];
			buf[n] = '\0';
			if (n > 0)
				return true;
		}
	}
	return false;
}

/*
 * Decoded bytes of a text part -> clean UTF-8.  Takes ownership of data
 * (malloc'd, with room for one more byte).  NULL only on OOM.
 */
char *
mp_text_to_utf8(parse_ctx *ctx, unsigned char *data, size_t len,
			 const char *charset, bool is_html)
{
	char		name[64];
	char		sniffed[48];
	cs_kind		kind;

	if ((charset == NULL || *charset == '\0') && is_html &&
		sniff_html_charset(data, len, sniffed, sizeof(sniffed)))
		charset = sniffed;

	kind = charset_resolve(charset, name, sizeof(name));
	if (kind == CS_ICONV)
	{
		iconv_t		cd;

		pin_charset(name);
		cd = iconv_open("UTF-8", name);

		if (cd == (iconv_t) -1 && g_ascii_strncasecmp(name, "x-", 2) == 0)
			cd = iconv_open("UTF-8", name + 2);
		if (cd != (iconv_t) -1)
		{
			size_t		unit = 1;
			size_t		olen = 0;
			unsigned char *conv;

			if (g_ascii_strncasecmp(name, "utf-16", 6) == 0 ||
				g_ascii_strncasecmp(name, "utf16", 5) == 0 ||
				g_ascii_strncasecmp(name, "ucs-2", 5) == 0 ||
				g_ascii_strncasecmp(name, "ucs2", 4) == 0)
				unit = 2;
			else if (g_ascii_strncasecmp(name, "utf-32", 6) == 0 ||
					 g_ascii_strncasecmp(name, "utf32", 5) == 0 ||
					 g_ascii_strncasecmp(name, "ucs-4", 5) == 0 ||
					 g_ascii_strncasecmp(name, "ucs4", 4) == 0)
				unit = 4;
			conv = iconv_to_utf8(ctx, cd, data, len, unit, &olen);
			iconv_close(cd);
			free(data);
			if (conv == NULL)
				return NULL;
			return mp_utf8_finish(ctx, conv, olen);
		}
		kind = CS_AUTO;			/* unknown to iconv */
	}

	if (kind == CS_UTF8 || (kind == CS_AUTO && mp_utf8_is_clean(data, len)))
		return mp_utf8_finish(ctx, data, len);

	{
		/* CS_CP1252, or CS_AUTO with bytes that are not UTF-8 */
		char	   *out = cp1252_to_utf8(ctx, data, len);

		free(data);
		return out;
	}
}
