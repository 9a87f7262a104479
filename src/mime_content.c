/*-------------------------------------------------------------------------
 * mime_content.c
 *	  The content of a part, read once from the substreams GMime keeps into
 *	  the caller's buffer: transfer decoding (base64, quoted-printable,
 *	  uuencode), and the exact bytes of a multipart cut at MP_MAX_DEPTH.
 *-------------------------------------------------------------------------
 */
#include "mime_internal.h"

#include <stdlib.h>
#include <string.h>

/* Read chunk for transfer decoding. */
#define MP_CHUNK			32768

/* No content: a malloc'd buffer of length 0 (room for one byte); NULL on OOM. */
static unsigned char *
empty_content(parse_ctx *ctx)
{
	unsigned char *empty = malloc(1);

	if (empty == NULL)
		ctx->oom = true;
	return empty;
}

static bool
grow(parse_ctx *ctx, unsigned char **buf, size_t *cap, size_t need)
{
	size_t		ncap;
	unsigned char *n;

	if (need <= *cap)
		return true;
	ncap = *cap ? *cap : 4096;
	while (ncap < need)
		ncap *= 2;
	n = realloc(*buf, ncap);
	if (n == NULL)
	{
		ctx->oom = true;
		return false;
	}
	*buf = n;
	*cap = ncap;
	return true;
}


/*
 * Read a stream to its end into a malloc'd buffer (always with room for one
 * more byte).  When enc is base64 or quoted-printable, decode on the way.
 */
static unsigned char *
read_stream(parse_ctx *ctx, GMimeStream *stream, GMimeContentEncoding enc,
			size_t *lenp)
{
	gint64		slen;
	size_t		cap;
	size_t		len = 0;
	unsigned char *buf;
	bool		decode = (enc == GMIME_CONTENT_ENCODING_BASE64 ||
						  enc == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE);
	GMimeEncoding state;

	*lenp = 0;
	g_mime_stream_reset(stream);
	slen = g_mime_stream_length(stream);
	/* decoded size <= encoded size for base64 and quoted-printable */
	cap = (slen > 0 && (guint64) slen < MP_MAX_INPUT) ? (size_t) slen + 8 : 4096;
	buf = malloc(cap);
	if (buf == NULL)
	{
		ctx->oom = true;
		return NULL;
	}

	if (!decode)
	{
		for (;;)
		{
			ssize_t		n;

			if (!grow(ctx, &buf, &cap, len + 2))
				goto oom;
			n = g_mime_stream_read(stream, (char *) buf + len, cap - len - 1);
			if (n < 0)
				ctx->errors |= PE_UNREADABLE;
			if (n <= 0)
				break;
			len += (size_t) n;
		}
	}
	else
	{
		char		chunk[MP_CHUNK];
		b64_state	b64 = {0, 0, false};

		g_mime_encoding_init_decode(&state, enc);
		for (;;)
		{
			ssize_t		n = g_mime_stream_read(stream, chunk, sizeof(chunk));

			if (n < 0)
				ctx->errors |= PE_UNREADABLE;
			if (n <= 0)
				break;
			/* both decoders write at most n + 3 bytes */
			if (!grow(ctx, &buf, &cap, len + (size_t) n + 4))
				goto oom;
			if (enc == GMIME_CONTENT_ENCODING_BASE64)
				len += mp_b64_step(&b64, (const unsigned char *) chunk, (size_t) n, buf + len);
			else
				len += g_mime_encoding_step(&state, chunk, (size_t) n, (char *) buf + len);
		}
		if (!grow(ctx, &buf, &cap, len + 8))
			goto oom;
		if (enc == GMIME_CONTENT_ENCODING_BASE64)
		{
			len += mp_b64_finish(&b64, buf + len);
			if (b64.bad)
				ctx->errors |= PE_BAD_BASE64;
		}
		else
			len += g_mime_encoding_flush(&state, "", 0, (char *) buf + len);
	}
	g_mime_stream_reset(stream);

	/* give back a large over-allocation (base64 decodes to 3/4) */
	if (cap - len > 65536)
	{
		unsigned char *n = realloc(buf, len + 1);

		if (n != NULL)
			buf = n;
	}
	*lenp = len;
	return buf;

oom:
	free(buf);
	g_mime_stream_reset(stream);
	return NULL;
}

/*
 * True if what follows "--boundary" on a line makes it a delimiter line: an
 * optional "--", then only blanks up to the line end (RFC 2046 5.1.1), so
 * that boundary "b6" does not match "--b64".
 */
static bool
delimiter_rest(const unsigned char *p, const unsigned char *end)
{
	if (end - p >= 2 && p[0] == '-' && p[1] == '-')
		p += 2;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
		p++;
	return p == end || *p == '\n';
}

/*
 * The exact bytes of a multipart cut at MP_MAX_DEPTH, headers included:
 * from its first header up to the delimiter line of the multipart around it
 * (boundary; its line break belongs to the delimiter), else to the end of
 * the input.  malloc'd with room for one more byte; NULL only on OOM.
 */
static unsigned char *
subtree_bytes(parse_ctx *ctx, GMimeObject *obj, const char *boundary, size_t *lenp)
{
	GMimeHeaderList *hl = g_mime_object_get_header_list(obj);
	gint64		off = -1;
	size_t		start,
				end,
				pos;
	unsigned char *out;

	*lenp = 0;
	if (hl != NULL && g_mime_header_list_get_count(hl) > 0)
		off = g_mime_header_get_offset(g_mime_header_list_get_header_at(hl, 0));
	if (off < 0 || (guint64) off >= ctx->raw_len)
		return empty_content(ctx);
	start = (size_t) off;
	end = ctx->raw_len;
	if (boundary != NULL && *boundary != '\0')
	{
		size_t		blen = strlen(boundary);

		for (pos = start; pos < ctx->raw_len;)
		{
			const unsigned char *nl;

			if (ctx->raw_len - pos >= blen + 2 && ctx->raw[pos] == '-' &&
				ctx->raw[pos + 1] == '-' && memcmp(ctx->raw + pos + 2, boundary, blen) == 0 &&
				delimiter_rest(ctx->raw + pos + 2 + blen, ctx->raw + ctx->raw_len))
			{
				end = pos;
				if (end > start && ctx->raw[end - 1] == '\n')
					end--;
				if (end > start && ctx->raw[end - 1] == '\r')
					end--;
				break;
			}
			nl = memchr(ctx->raw + pos, '\n', ctx->raw_len - pos);
			if (nl == NULL)
				break;
			pos = (size_t) (nl - ctx->raw) + 1;
		}
	}
	out = malloc(end - start + 1);
	if (out == NULL)
	{
		ctx->oom = true;
		return NULL;
	}
	memcpy(out, ctx->raw + start, end - start);
	*lenp = end - start;
	return out;
}

/*
 * The transfer-decoded content of a leaf part (exact bytes, no charset
 * conversion), malloc'd with room for one more byte; for a multipart, the
 * bytes of the subtree cut at MP_MAX_DEPTH.  NULL only on OOM.
 */
unsigned char *
mp_part_content(parse_ctx *ctx, GMimeObject *obj, size_t *lenp)
{
	*lenp = 0;

	if (GMIME_IS_PART(obj))
	{
		GMimeDataWrapper *w = g_mime_part_get_content((GMimePart *) obj);
		GMimeStream *s = w ? g_mime_data_wrapper_get_stream(w) : NULL;
		GMimeContentEncoding enc;
		unsigned char *res;

		if (s == NULL)
			return empty_content(ctx);
		enc = g_mime_data_wrapper_get_encoding(w);
		if (s->super_stream != NULL && s->bound_start >= 0 &&
			s->bound_end > s->bound_start && (guint64) s->bound_end < ctx->raw_len &&
			ctx->raw[s->bound_end] == '\n' && ctx->raw[s->bound_end - 1] == '\r')
		{
			/*
			 * The CRLF before a boundary belongs to the boundary, but GMime
			 * 3.2.13 drops its CR only when the boundary line itself ends in
			 * CRLF: a part before a boundary line that ends the input (or
			 * ends in LF alone) kept a stray CR.  The content is a substream
			 * of our buffer, so it is read without that CR.
			 */
			s = g_mime_stream_substream(s, s->bound_start, s->bound_end - 1);
		}
		else
			g_object_ref(s);
		g_mime_stream_reset(s);
		if (enc == GMIME_CONTENT_ENCODING_UUENCODE)
		{
			/* uuencode needs the begin/end line handling of the filter */
			GMimeStream *fs = g_mime_stream_filter_new(s);
			GMimeFilter *f = g_mime_filter_basic_new(enc, FALSE);

			g_mime_stream_filter_add(GMIME_STREAM_FILTER(fs), f);
			g_object_unref(f);
			res = read_stream(ctx, fs, GMIME_CONTENT_ENCODING_DEFAULT, lenp);
			g_object_unref(fs);
		}
		else
			res = read_stream(ctx, s, enc, lenp);
		g_mime_stream_reset(s);
		g_object_unref(s);
		return res;
	}
	if (GMIME_IS_MULTIPART(obj))
		return subtree_bytes(ctx, obj, ctx->cut_boundary, lenp);
	if (GMIME_IS_MESSAGE_PART(obj))
	{
		/*
		 * Only if the type registration in mp_init() was undone somehow:
		 * serialise the parsed message (GMime preserves raw headers and
		 * content, so this is close to the original bytes).
		 */
		GMimeMessage *m = g_mime_message_part_get_message((GMimeMessagePart *) obj);
		GMimeStream *ms;
		unsigned char *res;

		if (m == NULL)
			return empty_content(ctx);
		ms = g_mime_stream_mem_new();
		g_mime_object_write_to_stream((GMimeObject *) m, NULL, ms);
		res = read_stream(ctx, ms, GMIME_CONTENT_ENCODING_DEFAULT, lenp);
		g_object_unref(ms);
		return res;
	}
	return empty_content(ctx);
}
